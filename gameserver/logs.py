"""
JSON log lines for log shippers: C{twistd --logger gameserver.logs.json_logger}.

twistd calls the factory named by C{--logger} for its log observer; this one
writes every event as one JSON object per line (twisted.logger's own format,
with the structured fields of the event: C{log_namespace}, C{log_level},
C{log_format} and the named values, such as C{address} or C{path}) to
standard output, or to the file named by C{GAMESERVER_JSON_LOG} if set.
"""

import os
import sys
from typing import IO

from twisted.logger import FileLogObserver, jsonFileLogObserver

JSON_LOG_VARIABLE = "GAMESERVER_JSON_LOG"


def json_logger() -> FileLogObserver:
    """
    A log observer writing JSON lines (twisted.logger's C{eventAsJSON}, with
    no record separator) to standard output or C{$GAMESERVER_JSON_LOG}.
    """
    path = os.environ.get(JSON_LOG_VARIABLE)
    out: IO[str] = sys.stdout
    if path:
        out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    return jsonFileLogObserver(out, recordSeparator="")
