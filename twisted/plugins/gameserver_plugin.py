"""
The twistd plugin: C{twistd -n gameserver --port 8080}.

Kept tiny and lazy: twistd imports every plugin module to list them, so the
real code in L{gameserver.server_tap} is only imported when it is used.
"""

from twisted.application.service import ServiceMaker

gameserver = ServiceMaker(
    "gameserver",
    "gameserver.server_tap",
    "Game back-end: logins, scores, high-score lists and a two-player relay.",
    "gameserver",
)
