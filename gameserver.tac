# Run with: twistd -ny gameserver.tac
#
# The same service as `twistd -n gameserver`, configured from environment
# variables instead of the command line.  Each option --some-name is read from
# GAMESERVER_SOME_NAME; unset or empty variables keep the option's default
# (see `twistd gameserver --help`):
#
#   GAMESERVER_PORT          port number or endpoint description  [8080]
#   GAMESERVER_SESSION_TTL   seconds a session key lives          [600]
#   GAMESERVER_SESSIONS      stored | signed                      [stored]
#   GAMESERVER_SECRET_FILE   HMAC secret file for signed sessions
#   GAMESERVER_DATABASE      SQLite file for durable state        [off]
#   GAMESERVER_REDIS         Redis URL: shared state for many instances [off]
#   GAMESERVER_REDIS_PASSWORD_FILE  file holding the Redis password
#   GAMESERVER_REDIS_TIMEOUT seconds a request may wait for Redis [2]
#   GAMESERVER_ACCESS_LOG    combined-format access log file      [off]
#   GAMESERVER_RELAY_PAIRING_TIMEOUT    silent pairing player dropped after [25]
#   GAMESERVER_RELAY_LONG_WAIT_TIMEOUT  the same with the long-wait key     [180]
#   GAMESERVER_RELAY_GAME_TIMEOUT       silent game side dropped after      [30]
#   GAMESERVER_RELAY_MAX_PLAYERS        relay players at once               [50000]
#   GAMESERVER_RELAY_MAX_GAMES          relay games at once                 [25000]
#   GAMESERVER_RELAY_MAX_CACHE          resend cache / queue bytes          [131072]
#   GAMESERVER_RELAY_MAX_DATA           relay game data bytes, all players  [268435456]
#   GAMESERVER_RELAY_MAX_BODY           relay request body bytes            [16384]
#   GAMESERVER_RELAY_MAX_NAME           relay player name characters        [256]
#   GAMESERVER_METRICS_PORT   Prometheus metrics endpoint          [off]
#   GAMESERVER_SHUTDOWN_TIMEOUT  seconds requests may finish on SIGTERM [10]
#   GAMESERVER_CORS_ORIGIN    allowed browser origins, space- or comma-separated [none]
#   GAMESERVER_RATE_LIMIT     per-client limits, e.g. login=5/s:burst=20,relay=off
#                             [login=5/s:burst=20, score=20/s:burst=60, relay=50/s:burst=200]
#   GAMESERVER_RATE_LIMIT_EXEMPT  addresses/networks never limited [127.0.0.0/8,::1]
#   GAMESERVER_TRUST_PROXY    proxies whose X-Forwarded-For is believed [none]
#   GAMESERVER_MAX_CONNECTIONS  open connections; past it 503     [10000]
#   GAMESERVER_MAX_CLIENT_CONNECTIONS  connections of one client, 0: none [256]
#   GAMESERVER_HEADER_TIMEOUT   seconds for headers (and body)    [10]
#   GAMESERVER_MAX_SESSIONS     live stored sessions, 0: no bound [1000000]
#   GAMESERVER_MAX_LEVELS       levels with scores, 0: no bound   [100000]
#
# Example: GAMESERVER_PORT=tcp:8080:interface=127.0.0.1 twistd -ny gameserver.tac

import os
import sys

from twisted.application.service import Application
from twisted.python.usage import UsageError

from gameserver.server_tap import makeService, options_from_environment

try:
    options = options_from_environment(os.environ)
except UsageError as e:
    sys.exit(f"gameserver.tac: {e}")

application = Application("gameserver")
makeService(options).setServiceParent(application)
