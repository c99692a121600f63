"""
The twistd plugin's options and service: C{twistd -n gameserver --port 8080}.
"""

from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from gameserver import __version__
from gameserver.leaderboard import Leaderboards
from gameserver.scores import MemoryScores, ScoresBackend
from gameserver.sessions import (
    DEFAULT_TTL,
    MIN_SECRET_BYTES,
    SessionStore,
    SignedSessions,
    StoredSessions,
)
from gameserver.site import GameSite
from gameserver.web import GameRoot

ENVIRONMENT_PREFIX = "GAMESERVER_"
SESSION_MODES = ("stored", "signed")


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


_positive.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]


class Options(usage.Options):
    """
    Command-line options of C{twistd gameserver}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve the gameserver scores API (login, score posts, high-score lists) "
        "over HTTP. Every option can also be given to gameserver.tac as an "
        "environment variable: --session-ttl is GAMESERVER_SESSION_TTL."
    )

    optParameters: list[list[Any]] = [
        [
            "port",
            "p",
            "8080",
            "Where to listen: a port number (all interfaces) or a Twisted "
            "endpoint description, e.g. tcp:8080:interface=127.0.0.1, "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/gs.sock, "
            "systemd:domain=INET:index=0.",
        ],
        [
            "session-ttl",
            None,
            DEFAULT_TTL,
            "Seconds a session key stays valid after login; using it does not "
            "extend it.",
            _positive,
        ],
        [
            "sessions",
            None,
            "stored",
            "Session mode: 'stored' keeps keys in server state, one live key "
            "per user; 'signed' issues stateless HMAC keys (needs "
            "--secret-file).",
        ],
        [
            "secret-file",
            None,
            None,
            f"File holding the HMAC secret for --sessions=signed, at least "
            f"{MIN_SECRET_BYTES} bytes (surrounding whitespace is ignored). "
            "[default: none]",
        ],
        [
            "access-log",
            None,
            None,
            "Append an access log in the combined format to this file "
            "(off unless given). [default: none]",
        ],
    ]

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"gameserver {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        self["port"] = endpoint_description(self["port"])
        _check_endpoint(self["port"])
        if self["sessions"] not in SESSION_MODES:
            raise usage.UsageError(
                f"--sessions must be one of {', '.join(SESSION_MODES)}, "
                f"not {self['sessions']!r}"
            )
        self["secret"] = None
        if self["sessions"] == "signed":
            self["secret"] = _read_secret(self["secret-file"])
        elif self["secret-file"] is not None:
            raise usage.UsageError("--secret-file applies only to --sessions=signed")
        if self["access-log"] is not None:
            try:
                with open(self["access-log"], "a"):
                    pass
            except OSError as e:
                raise usage.UsageError(
                    f"cannot write --access-log {self['access-log']!r}: {e.strerror}"
                ) from e


def endpoint_description(port: str) -> str:
    """
    Turn a bare port number into a TCP endpoint description on all interfaces.
    """
    return f"tcp:{port}" if port.isdigit() else port


def _check_endpoint(description: str) -> None:
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        hint = ""
        if description.startswith("systemd:"):
            hint = " (systemd passes sockets in LISTEN_FDS; is the socket unit active?)"
        raise usage.UsageError(f"invalid --port {description!r}: {e}{hint}") from e


def _read_secret(path: str | None) -> bytes:
    if path is None:
        raise usage.UsageError("--sessions=signed needs --secret-file")
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise usage.UsageError(
            f"cannot read --secret-file {path!r}: {e.strerror}"
        ) from e
    if len(secret) < MIN_SECRET_BYTES:
        raise usage.UsageError(
            f"--secret-file {path!r} holds {len(secret)} bytes; "
            f"at least {MIN_SECRET_BYTES} are needed"
        )
    return secret


def options_from_environment(environ: Mapping[str, str]) -> Options:
    """
    Parse L{Options} from C{GAMESERVER_*} variables, for C{gameserver.tac}.
    """
    argv: list[str] = []
    for long, *_ in Options.optParameters:
        value = environ.get(ENVIRONMENT_PREFIX + long.upper().replace("-", "_"))
        if value:
            argv.append(f"--{long}={value}")
    options = Options()  # type: ignore[no-untyped-call]
    options.parseOptions(argv)  # type: ignore[no-untyped-call]
    return options


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """
    An endpoint that logs the address it listens on once the reactor runs, so
    that a caller who asked for port 0 learns the real one, and learns it only
    when the server is ready (twistd listens before the reactor starts).
    """

    log = Logger()

    def __init__(self, endpoint: IStreamServerEndpoint, reactor: Any) -> None:
        self._endpoint = endpoint
        self._reactor = reactor

    def listen(self, factory: IProtocolFactory) -> "Deferred[IListeningPort]":
        def announce(port: IListeningPort) -> IListeningPort:
            address = port.getHost()
            self._reactor.callWhenRunning(
                self.log.info,
                "gameserver listening on {address}",
                address=address,
                port=getattr(address, "port", None),
            )
            return port

        return self._endpoint.listen(factory).addCallback(announce)


class StateService(Service):
    """
    Owns the game state; stopping it stops the state's timers.
    """

    def __init__(self, scores: ScoresBackend) -> None:
        self.scores = scores

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.scores.stop()


def make_sessions(config: Mapping[str, Any], clock: IReactorTime) -> SessionStore:
    """
    Build the session store that C{config} asks for.
    """
    ttl = float(config["session-ttl"])
    if config["sessions"] == "signed":
        return SignedSessions(clock, config["secret"], ttl)
    return StoredSessions(clock, ttl)


def make_site(
    config: Mapping[str, Any], reactor: Any
) -> tuple[GameSite, ScoresBackend]:
    """
    Build the state and the HTTP site that serves it.
    """
    scores = MemoryScores(make_sessions(config, reactor), Leaderboards())
    site = GameSite(GameRoot(scores), reactor, access_log=config["access-log"])
    return site, scores


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    Build the gameserver service from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor
    site, scores = make_site(config, reactor)
    endpoint = _AnnouncingEndpoint(serverFromString(reactor, config["port"]), reactor)

    top = MultiService()
    for service in (StateService(scores), StreamServerEndpointService(endpoint, site)):
        service.setServiceParent(top)  # type: ignore[no-untyped-call]
    return top
