"""
The twistd plugin's options and service: C{twistd -n gameserver --port 8080}.
"""

from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger, globalLogPublisher
from twisted.python import usage
from zope.interface import implementer

from gameserver import __version__
from gameserver.channel import (
    HEADER_TIMEOUT,
    MAX_BODY,
    MAX_CLIENT_CONNECTIONS,
    MAX_CONNECTIONS,
    GameHTTPFactory,
)
from gameserver.cors import CorsPolicy, check_origin
from gameserver.durable import DatabaseError, DurableScores, open_database
from gameserver.health import Health
from gameserver.leaderboard import Leaderboards
from gameserver.metrics import ErrorCounter, Metrics, metrics_site
from gameserver.ratelimit import (
    DEFAULT_EXEMPT,
    DEFAULT_RATE_LIMITS,
    ClientLimits,
    parse_limits,
    parse_networks,
)
from gameserver.relay import Relay, RelayConfig
from gameserver.relay_resource import DEFAULT_MAX_NAME, RelayResource
from gameserver.scores import Capacity, MemoryScores, ScoresBackend
from gameserver.sessions import (
    DEFAULT_TTL,
    MIN_SECRET_BYTES,
    SessionStore,
    SignedSessions,
    StoredSessions,
)
from gameserver.shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    GameService,
    install_signal_handlers,
)
from gameserver.web import GameRoot

ENVIRONMENT_PREFIX = "GAMESERVER_"
SESSION_MODES = ("stored", "signed")


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


_positive.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a positive whole number")
    return number


_positive_int.coerceDoc = "A positive whole number."  # type: ignore[attr-defined]


def _bound(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 for no bound")
    return number


_bound.coerceDoc = "A whole number; 0 for no bound."  # type: ignore[attr-defined]

DEFAULT_MAX_SESSIONS = 1_000_000
DEFAULT_MAX_LEVELS = 100_000

DEFAULT_RELAY_MAX_BODY = 16384
# Seconds; gameserver.redis_connection.DEFAULT_TIMEOUT (not imported here, so
# that the in-memory server never loads the Redis client).
DEFAULT_REDIS_TIMEOUT = 2.0
_RELAY_DEFAULTS = RelayConfig()

# RelayConfig field, parser and help of each --relay-* option but the body limit.
_RELAY_OPTIONS: list[tuple[str, Any, str]] = [
    (
        "pairing_timeout",
        _positive,
        "Seconds a waiting or pairing relay player may stay silent before it "
        "is dropped.",
    ),
    (
        "long_wait_timeout",
        _positive,
        "The same for players registered with the long-wait key bibbybabbis.",
    ),
    (
        "game_timeout",
        _positive,
        "Seconds a side of a relay game may stay silent before it is dropped "
        "(its partner then gets 15/*/*).",
    ),
    (
        "max_players",
        _positive_int,
        "Most relay players registered at once; past it, registering gets 11/*/*.",
    ),
    (
        "max_games",
        _positive_int,
        "Most relay games at once; past it, starting a game gets 12/*/*.",
    ),
    (
        "max_cache",
        _positive_int,
        "Bytes of a player's relay resend cache (and of its queue of pending "
        "partner data).",
    ),
    (
        "max_data",
        _positive_int,
        "Bytes of memory the in-memory relay may hold for game data, all "
        "players' queues and resend caches together (each piece counts its "
        "string's size); an update past it gets 503 with Retry-After (22/*/*) "
        "and nothing applied. The default, 256 MiB, leaves room for a few KiB "
        "per player at --relay-max-games. Not used with --redis (bound Redis "
        "with its maxmemory).",
    ),
]


class Options(usage.Options):
    """
    Command-line options of C{twistd gameserver}.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve the gameserver scores API (login, score posts, high-score lists) "
        "and the two-player relay (/relay) over HTTP. Every option can also be "
        "given to gameserver.tac as an environment variable: --session-ttl is "
        "GAMESERVER_SESSION_TTL."
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
        *(
            [
                f"relay-{name.replace('_', '-')}",
                None,
                getattr(_RELAY_DEFAULTS, name),
                help_text,
                kind,
            ]
            for name, kind, help_text in _RELAY_OPTIONS
        ),
        [
            "relay-max-body",
            None,
            DEFAULT_RELAY_MAX_BODY,
            "Largest relay request body in bytes; larger ones get 413 (20/*/*).",
            _positive_int,
        ],
        [
            "relay-max-name",
            None,
            DEFAULT_MAX_NAME,
            "Longest relay player name (and wanted partner name) in characters; "
            "a longer one gets 413 (20/*/*) at registration.",
            _positive_int,
        ],
        [
            "database",
            None,
            None,
            "Keep high-score lists and stored sessions in this SQLite file "
            "(created if missing), so that restarts and crashes lose nothing "
            "acknowledged; off: in memory only. [default: none]",
        ],
        [
            "redis",
            None,
            None,
            "Keep sessions, high-score lists and the relay in Redis at this URL "
            "(redis://[:password@]host:port/db, rediss:// for TLS with an "
            "optional ?ssl_ca_certs=ca.pem, "
            "unix:///path/redis.sock?db=N), shared by every instance pointed "
            "at it; not with --database. [default: none]",
        ],
        [
            "redis-password-file",
            None,
            None,
            "File holding the Redis password (surrounding whitespace is "
            "ignored), instead of putting it in --redis. [default: none]",
        ],
        [
            "redis-timeout",
            None,
            DEFAULT_REDIS_TIMEOUT,
            "Seconds a request may wait for Redis; past it (or while Redis is "
            "unreachable) it gets 503 with Retry-After.",
            _positive,
        ],
        [
            "access-log",
            None,
            None,
            "Append an access log in the combined format to this file "
            "(off unless given; SIGHUP reopens it). [default: none]",
        ],
        [
            "metrics-port",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1; never on --port. [default: none]",
        ],
        [
            "max-connections",
            None,
            MAX_CONNECTIONS,
            "Most open HTTP connections; past it a new connection is answered "
            "503 at once and closed.",
            _positive_int,
        ],
        [
            "max-client-connections",
            None,
            MAX_CLIENT_CONNECTIONS,
            "Most open HTTP connections of one client address (IPv6: one /64; "
            "--rate-limit-exempt clients and --trust-proxy proxies are not "
            "counted); past it: 503, closed. 0: no bound.",
            _bound,
        ],
        [
            "header-timeout",
            None,
            HEADER_TIMEOUT,
            "Seconds a request's headers may take to arrive after its first "
            "byte (and its body after the headers); past it: 408, closed.",
            _positive,
        ],
        [
            "rate-limit",
            None,
            DEFAULT_RATE_LIMITS,
            "Per-client token buckets: KIND=RATE/s[:burst=N] or KIND=off, "
            "comma-separated, KIND login, score or relay (also RATE/m); kinds "
            "not named keep their default; 'off' turns all off. Over it: 429 "
            "with Retry-After.",
        ],
        [
            "rate-limit-exempt",
            None,
            DEFAULT_EXEMPT,
            "Client addresses or networks never rate-limited, comma-separated, "
            "or 'none'.",
        ],
        [
            "trust-proxy",
            None,
            None,
            "Addresses or networks of reverse proxies whose X-Forwarded-For "
            "names the client for rate limits, comma-separated. [default: none]",
        ],
        [
            "max-sessions",
            None,
            DEFAULT_MAX_SESSIONS,
            "Most live stored sessions (in memory or --database; Redis "
            "bounds its own memory); at it, a login of a user without a live "
            "key gets 503. 0: no bound.",
            _bound,
        ],
        [
            "max-levels",
            None,
            DEFAULT_MAX_LEVELS,
            "Most levels holding scores (in memory or --database; Redis "
            "bounds its own memory); at it, a score on a new level gets 503. "
            "0: no bound.",
            _bound,
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "On SIGTERM, seconds to let requests under way finish (after "
            "listening stopped) before their connections are cut.",
            _positive,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["cors-origin"] = []

    def opt_cors_origin(self, origin: str) -> None:
        """
        Let browser pages from ORIGIN (scheme://host[:port], or *) read the
        API's answers: adds the CORS headers and answers preflight OPTIONS
        requests. Repeatable. [default: none]
        """
        try:
            self["cors-origin"].append(check_origin(origin))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e

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
        self["redis-settings"] = None
        if self["redis"] is not None:
            if self["database"] is not None:
                raise usage.UsageError(
                    "--redis and --database exclude each other: choose where "
                    "the state lives"
                )
            from gameserver.redis_connection import RedisSettings

            try:
                self["redis-settings"] = RedisSettings.from_url(
                    self["redis"], self["redis-password-file"]
                )
            except ValueError as e:
                raise usage.UsageError(str(e)) from e
        elif self["redis-password-file"] is not None:
            raise usage.UsageError("--redis-password-file applies only with --redis")
        self["db"] = None
        if self["database"] is not None:
            try:
                self["db"] = open_database(self["database"])
            except DatabaseError as e:
                raise usage.UsageError(str(e)) from e
        if self["metrics-port"] is not None:
            self["metrics-port"] = endpoint_description(self["metrics-port"])
            _check_endpoint(self["metrics-port"], "--metrics-port")
            if self["metrics-port"] == self["port"] and not _any_port(self["port"]):
                raise usage.UsageError(
                    "--metrics-port must differ from --port: metrics are never "
                    "served on the public port"
                )
        try:
            self["limits"] = parse_limits(self["rate-limit"])
        except ValueError as e:
            raise usage.UsageError(f"--rate-limit: {e}") from e
        for option in ("rate-limit-exempt", "trust-proxy"):
            try:
                self[option.replace("-", "_")] = parse_networks(self[option] or "")
            except ValueError as e:
                raise usage.UsageError(f"--{option}: {e}") from e
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


def _any_port(description: str) -> bool:
    """
    Whether C{description} asks for any free port (port 0).
    """
    return ":0:" in description + ":" and description.split(":")[1] == "0"


def _check_endpoint(description: str, option: str = "--port") -> None:
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        hint = ""
        if description.startswith("systemd:"):
            hint = " (systemd passes sockets in LISTEN_FDS; is the socket unit active?)"
        raise usage.UsageError(f"invalid {option} {description!r}: {e}{hint}") from e


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
    # The one repeatable option: origins separated by spaces or commas.
    origins = environ.get(ENVIRONMENT_PREFIX + "CORS_ORIGIN", "")
    for origin in origins.replace(",", " ").split():
        argv.append(f"--cors-origin={origin}")
    options = Options()
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

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        reactor: Any,
        what: str = "gameserver",
    ) -> None:
        self._endpoint = endpoint
        self._reactor = reactor
        self._what = what

    def listen(self, factory: IProtocolFactory) -> "Deferred[IListeningPort]":
        def announce(port: IListeningPort) -> IListeningPort:
            address = port.getHost()
            self._reactor.callWhenRunning(
                self.log.info,
                "{what} listening on {address}",
                what=self._what,
                address=address,
                port=getattr(address, "port", None),
            )
            return port

        return self._endpoint.listen(factory).addCallback(announce)


class StateService(Service):
    """
    Owns the game state; stopping it stops the state's timers.
    """

    def __init__(
        self,
        scores: ScoresBackend,
        relay: Any,
        connection: Any = None,
        limits: ClientLimits | None = None,
    ) -> None:
        """
        @param connection: the L{gameserver.redis_connection.RedisConnection}
            that C{scores} and C{relay} share, with C{--redis}: connected
            when the service starts, closed after both stopped.
        @param limits: the per-client limits, whose timers stop with it.
        """
        self.scores = scores
        self.relay = relay
        self.connection = connection
        self.limits = limits

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.connection is not None:
            self.connection.start()

    def stopService(self) -> "Deferred[None] | None":
        # twistd waits for the Deferred of a durable store: it answers and
        # commits what is in flight before the process exits.
        super().stopService()  # type: ignore[no-untyped-call]
        self.relay.stop()
        if self.limits is not None:
            self.limits.stop()
        stopped = self.scores.stop()
        connection = self.connection
        if connection is None:
            return stopped
        if stopped is None:
            return connection.stop()  # type: ignore[no-any-return]
        return stopped.addCallback(lambda _: connection.stop())


class ErrorCounting(Service):
    """
    While running, counts logged errors into L{Metrics.errors}.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._observer = ErrorCounter(metrics)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        globalLogPublisher.addObserver(self._observer)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        globalLogPublisher.removeObserver(self._observer)


def make_sessions(config: Mapping[str, Any], clock: IReactorTime) -> SessionStore:
    """
    Build the session store that C{config} asks for.
    """
    ttl = float(config["session-ttl"])
    if config["sessions"] == "signed":
        return SignedSessions(clock, config["secret"], ttl)
    return StoredSessions(clock, ttl)


def relay_config(config: Mapping[str, Any]) -> RelayConfig:
    """
    The L{RelayConfig} of the C{--relay-*} options.
    """
    fields = {
        name: config[f"relay-{name.replace('_', '-')}"] for name, *_ in _RELAY_OPTIONS
    }
    return RelayConfig(**fields, max_queue=config["relay-max-cache"])


def make_site(
    config: Mapping[str, Any], reactor: Any
) -> tuple[GameHTTPFactory, StateService]:
    """
    Build the state, the service that owns it, and the HTTP factory serving it.
    """
    scores: ScoresBackend
    connection = None
    relay: Any
    if config.get("redis-settings") is not None:
        scores, relay, connection = _redis_state(config, reactor)
    elif config.get("db") is not None:
        scores = DurableScores.load(
            config["db"],
            reactor,
            config["sessions"],
            float(config["session-ttl"]),
            config["secret"],
            capacity=Capacity(
                config.get("max-sessions", 0), config.get("max-levels", 0)
            ),
        )
    else:
        scores = MemoryScores(
            make_sessions(config, reactor),
            Leaderboards(),
            max_sessions=config.get("max-sessions", 0),
            max_levels=config.get("max-levels", 0),
        )
    if connection is None:
        relay = Relay(reactor, relay_config(config))
    max_body = config["relay-max-body"]
    max_name = config.get("relay-max-name", DEFAULT_MAX_NAME)
    relay_resource = RelayResource(relay, max_body=max_body, max_name=max_name)
    relay_resource.metrics_route = "relay"  # type: ignore[attr-defined]
    metrics = Metrics() if config.get("metrics-port") else None
    health = Health(scores, lambda: site.draining)
    root = GameRoot(
        scores,
        relay_resource,
        health=health,
        store_latency=None if metrics is None else metrics.store_latency,
    )
    origins = config.get("cors-origin") or []
    limits = None
    if any(config.get("limits", {}).values()) or config.get("max-client-connections"):
        limits = ClientLimits(
            reactor,
            config["limits"],
            exempt=config["rate_limit_exempt"],
            trusted_proxies=config["trust_proxy"],
        )
    # Relay bodies a little over their limit still get the relay's own 413
    # (20/*/*); only far larger ones are cut at the connection.
    site = GameHTTPFactory(
        root,
        reactor,
        access_log=config["access-log"],
        max_body=max(MAX_BODY, 2 * max_body),
        metrics=metrics,
        cors=CorsPolicy(origins) if origins else None,
        header_timeout=float(config.get("header-timeout", HEADER_TIMEOUT)),
        max_connections=config.get("max-connections", MAX_CONNECTIONS),
        limits=limits,
        max_client_connections=config.get("max-client-connections", 0),
    )
    if metrics is not None:
        _add_state_metrics(metrics, scores, relay, site)
    return site, StateService(scores, relay, connection, limits)


def _redis_state(config: Mapping[str, Any], reactor: Any) -> tuple[Any, Any, Any]:
    """
    The scores store, the relay and their shared connection on C{--redis}.
    """
    from gameserver.redis_connection import RedisConnection
    from gameserver.redis_relay import RedisRelay
    from gameserver.redis_scores import RedisScores

    connection = RedisConnection(
        config["redis-settings"], reactor, float(config["redis-timeout"])
    )
    signed = None
    if config["sessions"] == "signed":
        signed = SignedSessions(reactor, config["secret"], float(config["session-ttl"]))
    scores = RedisScores(connection, float(config["session-ttl"]), signed)
    relay = RedisRelay(connection, relay_config(config))
    return scores, relay, connection


def _add_state_metrics(
    metrics: Metrics, scores: Any, relay: Any, site: GameHTTPFactory
) -> None:
    """
    Export the state's sizes as gauges and the durable store's commits as
    counters, read at scrape time.
    """
    sessions = getattr(scores, "sessions", None)
    if isinstance(sessions, StoredSessions):
        metrics.add_gauge(
            "sessions_live", "Live session keys (stored mode).", lambda: len(sessions)
        )
    boards = getattr(scores, "boards", None)
    if boards is not None:
        metrics.add_gauge("levels", "Levels with a high-score list.", boards.__len__)
    # The Redis relay counts the state all instances share, as last counted.
    metrics.add_gauge(
        "relay_players", "Registered relay players.", lambda: relay.players
    )
    metrics.add_gauge(
        "relay_waiting_players",
        "Relay players waiting for a partner.",
        lambda: relay.waiting,
    )
    metrics.add_gauge("relay_games", "Relay games in progress.", lambda: relay.games)
    if isinstance(relay, Relay):
        # Redis holds the Redis relay's data: its own memory reports it.
        metrics.add_gauge(
            "relay_data_bytes",
            "Memory held by relay game data (bounded by --relay-max-data).",
            lambda: relay.data_bytes,
        )
    metrics.add_gauge(
        "connections_open", "Open HTTP connections.", lambda: len(site.channels)
    )
    metrics.add_counter(
        "connections_refused",
        "Connections refused at --max-connections or --max-client-connections.",
        lambda: site.connections_refused,
    )
    limits = site.limits
    if limits is not None:
        limiters = list(limits.limiters.values())
        metrics.add_gauge(
            "rate_limit_clients",
            "Client buckets held by the rate limits (all kinds).",
            lambda: sum(len(limiter) for limiter in limiters),
        )
    metrics.add_counter(
        "rate_limited_requests",
        "Requests refused with 429 by a --rate-limit.",
        lambda: sum(site.requests_limited.values()),
    )
    writer = getattr(scores, "writer", None)
    if writer is not None:
        writer.on_batch = metrics.store_batch_latency.observe
        metrics.add_counter(
            "store_write_batches",
            "Transactions (group commits) of the durable store.",
            lambda: getattr(writer, "commits", None),
        )
        metrics.add_counter(
            "store_writes",
            "Writes committed by the durable store.",
            lambda: getattr(writer, "committed", None),
        )


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    Build the gameserver service from parsed L{Options}.
    """
    real_reactor = reactor is None
    if reactor is None:
        from twisted.internet import reactor
    site, state = make_site(config, reactor)
    endpoint = _AnnouncingEndpoint(serverFromString(reactor, config["port"]), reactor)
    listeners: list[IService] = [StreamServerEndpointService(endpoint, site)]
    metrics = site.metrics
    if metrics is not None:
        metrics_endpoint = _AnnouncingEndpoint(
            serverFromString(reactor, config["metrics-port"]),
            reactor,
            "gameserver metrics",
        )
        listeners.append(
            StreamServerEndpointService(metrics_endpoint, metrics_site(metrics))
        )
    top = GameService(
        site, state, listeners, float(config.get("shutdown-timeout", 10.0))
    )
    if metrics is not None:
        ErrorCounting(metrics).setServiceParent(top)  # type: ignore[no-untyped-call]
    if real_reactor:
        install_signal_handlers(reactor, site.reopen_log)
    return top
