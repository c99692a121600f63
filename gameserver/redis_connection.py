"""
C{--redis URL}: one pooled, self-reconnecting Redis connection per process,
with a bounded time per call.

API (for the Redis scores store and the Redis relay)::

    from gameserver.redis_connection import (
        RedisConnection, RedisSettings, RedisUnavailable, Script, RETRY_AFTER,
    )

    settings = RedisSettings.from_url("redis://:secret@127.0.0.1:6379/0")
    connection = RedisConnection(settings, reactor, timeout=2.0)
    connection.start()              # connects in the background; never blocks

    BUMP = Script('''
        local n = redis.call('INCR', KEYS[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        return n
    ''')                            # module level: source + SHA1; sent with
                                    # EVAL once per connection, then EVALSHA
    d = connection.run(BUMP, keys=["{lvl:42}:n"], args=[30000])
    # -> Deferred[Any]: EVALSHA, falling back to EVAL on NOSCRIPT (after a
    #    Redis restart or failover the script cache is empty)

    d = connection.command("GET", "{lvl:42}:n")   # any single command

    connection.healthy()            # bool, for /healthz: connected and the
                                    # last call (or 1 s ping) answered in time
    await connection.stop()         # Deferred[None]: closes the pool

Replies are raw RESP values: C{bytes} for bulk strings (never decoded, no
number conversion), C{str} for status replies (C{"OK"}, C{"PONG"}), C{int}
for integers (a Lua C{true} is 1), C{list} for arrays, L{None} for nil (and a
Lua C{false}).  Keys and arguments may be C{bytes}, C{str} or C{int}.

Every call fails with L{RedisUnavailable} (a L{gameserver.scores.StoreError})
when:
  - no connection to Redis is up right now: at once, nothing is queued
    (but for calls made in the first C{timeout} seconds after L{start},
    before the first connection is up: those wait for it, within the
    timeout);
  - no answer came within C{timeout} seconds (C{--redis-timeout}; checked
    every 0.1 s by one timer): the pool's connections are then dropped and
    made again in the background;
  - Redis answered with an error (a script error, OOM, READONLY during a
    failover...): L{RedisReplyError}, a subclass, with Redis's message.
Callers answer a failed call with HTTP 503 and C{Retry-After: RETRY_AFTER}
(C{gameserver.web} does so for failed Deferreds of the scores backend).
Calls in flight at once are pipelined over the pool's connections (taken in
turn); there is no thread.  Reconnection backs off from 0.1 s to at most 2 s.

Cluster: a Lua script must name every key it touches in C{keys}, and all of
them must share one hash tag (C{{...}}), so that each call touches one slot.
"""

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gameserver.scores import RETRY_AFTER, StoreError

# What a call fails with when Redis cannot be reached or the connection
# breaks: answered as an outage (503).  Anything else is a bug.
_OUTAGES = (
    txredisapi.RedisError,
    ConnectionClosed,
    ConnectError,
    ConnectTimeout,
    CancelledError,
)

__all__ = [
    "RETRY_AFTER",
    "RedisConnection",
    "RedisReplyError",
    "RedisSettings",
    "RedisUnavailable",
    "Script",
]

DEFAULT_TIMEOUT = 2.0
DEFAULT_PORT = 6379
POOL_SIZE = 4
# Seconds between looks for calls past their timeout (at most).
SWEEP_INTERVAL = 0.1
# How often an idle connection is pinged, so that /healthz tells the truth.
PING_INTERVAL = 1.0

Key = bytes | str
Arg = bytes | str | int


class RedisUnavailable(StoreError):  # noqa: N818 - the name says what to answer
    """
    Redis did not answer a call in time, or is not connected: answer 503.
    """


class RedisReplyError(RedisUnavailable):
    """
    Redis answered a call with an error reply.
    """


@dataclass(frozen=True)
class RedisSettings:
    """
    Where Redis is and how to log in: parsed from a C{--redis} URL.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str | None = None  # a unix socket instead of host and port
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_certs: bytes | None = (
        None  # PEM trust roots for rediss:// instead of the system's
    )

    @classmethod
    def from_url(cls, url: str, password_file: str | None = None) -> "RedisSettings":
        """
        Parse C{redis://[[user]:password@]host[:port][/db]},
        C{rediss://...[?ssl_ca_certs=/path/ca.pem]} (TLS, verifying the
        server against the system's trust roots or those in that file) or C{unix://[[user]:password@]/path/redis.sock[?db=N]};
        the password may instead come from C{password_file}.

        @raise ValueError: for a URL that is not one of those, or a password
            given both ways, or a password file that cannot be read.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"--redis {url!r}: the scheme must be redis://, rediss:// or unix://"
            )
        query = parse_qs(parts.query, strict_parsing=False)
        try:
            db = int(query["db"][-1]) if "db" in query else 0
            if scheme != "unix" and parts.path.strip("/"):
                db = int(parts.path.strip("/"))
            port = parts.port
        except ValueError as e:
            raise ValueError(f"--redis {url!r}: {e}") from None
        if not 0 <= db < 1 << 16:
            raise ValueError(f"--redis {url!r}: bad database number {db}")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password_file is not None:
            if password is not None:
                raise ValueError(
                    "give the Redis password in --redis or --redis-password-file, "
                    "not both"
                )
            password = read_password(password_file)
        ca_certs = None
        if "ssl_ca_certs" in query:
            if scheme != "rediss":
                raise ValueError(f"--redis {url!r}: ssl_ca_certs needs rediss://")
            ca_certs = _read_pem(query["ssl_ca_certs"][-1])
        if scheme == "unix":
            if not parts.path:
                raise ValueError(f"--redis {url!r}: no socket path")
            return cls(
                path=unquote(parts.path), db=db, username=username, password=password
            )
        if not parts.hostname:
            raise ValueError(f"--redis {url!r}: no host")
        return cls(
            host=parts.hostname,
            port=port or DEFAULT_PORT,
            db=db,
            tls=scheme == "rediss",
            username=username,
            password=password,
            ca_certs=ca_certs,
        )

    def describe(self) -> str:
        """
        The address without the password, for logs.
        """
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

    def endpoint(self, reactor: Any, timeout: float) -> IStreamClientEndpoint:
        """
        The client endpoint to reach Redis.
        """
        if self.path is not None:
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        tcp = TCP4ClientEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.tls:
            roots = None
            if self.ca_certs is not None:
                roots = Certificate.loadPEM(self.ca_certs)
            return wrapClientTLS(optionsForClientTLS(self.host, roots), tcp)
        return tcp


def _read_pem(path: str) -> bytes:
    """
    The PEM certificate in C{path}, checked.

    @raise ValueError: if it cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as f:
            pem = f.read()
        Certificate.loadPEM(pem)
    except OSError as e:
        raise ValueError(f"cannot read ssl_ca_certs {path!r}: {e.strerror}") from None
    except Exception as e:
        raise ValueError(f"ssl_ca_certs {path!r} holds no certificate: {e}") from None
    return pem


def read_password(path: str) -> str:
    """
    The password held in C{path}, without surrounding whitespace.

    @raise ValueError: if it cannot be read or is empty.
    """
    try:
        with open(path, "rb") as f:
            password = f.read().strip()
    except OSError as e:
        raise ValueError(
            f"cannot read --redis-password-file {path!r}: {e.strerror}"
        ) from None
    if not password:
        raise ValueError(f"--redis-password-file {path!r} is empty")
    return password.decode("utf-8")


class Script:
    """
    A Lua script, sent once per connection and then called by its SHA1.
    """

    def __init__(self, source: str) -> None:
        self.source = source.encode("utf-8")
        self.sha = hashlib.sha1(self.source).hexdigest()


class _Protocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """
    txredisapi's protocol, with a bounded log-in: a failed or unanswered
    C{AUTH}, C{SELECT} or C{PING} (Redis restarting, a failover, a wrong password)
    drops this connection only, and the pool keeps trying with its backoff,
    where txredisapi would stop reconnecting for good.
    """

    _log = Logger()
    _waiting_for_connect: list["Deferred[Any]"]

    def connectionMade(self) -> None:
        Deferred.fromCoroutine(self._log_in())

    async def _log_in(self) -> None:
        factory = self.factory
        timer = factory.clock.callLater(
            factory.handshake_timeout, self.transport.abortConnection
        )
        try:
            if self.password is not None:
                _check(await self.auth(self.password, self.username))
            if self.dbid is not None:
                _check(await self.select(self.dbid))
            else:
                # Usable once Redis has answered (past TLS's handshake too).
                _check(await self.ping())
        except Exception as e:
            self._log.warn(
                "Redis {redis}: cannot log in ({error}); trying again",
                redis=factory.uuid,
                error=str(e),
            )
            self.transport.loseConnection()
            return
        finally:
            if timer.active():
                timer.cancel()
        self.connected = 1
        self._ready = True
        waiting: list[Deferred[Any]] = self._waiting_for_connect
        self._waiting_for_connect = []
        for d in waiting:
            d.callback(self)


def _check(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise reply


class RedisConnection:
    """
    A lazy, self-reconnecting pool of connections to one Redis server, whose
    every call answers or fails within C{timeout} seconds.
    """

    log = Logger()

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self._reactor: IReactorTime = reactor
        self._endpoint_reactor = reactor
        self._pool_size = pool_size
        self._factory: Any = None
        self._handler: Any = None
        self._answering = True
        self._was_up = False
        self._next = 0
        self._started_at = 0.0
        # Calls under way, in the order they were made: all share one
        # timeout, so their deadlines come in order and one timer expires
        # them (no timer per call).
        self._pending: deque[tuple[float, Deferred[Any]]] = deque()
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = reactor

    def start(self) -> None:
        """
        Start connecting (and reconnecting whenever a connection is lost).
        """
        settings = self.settings
        factory = txredisapi.RedisFactory(
            settings.describe(),
            settings.db or None,  # database 0 needs no SELECT
            self._pool_size,
            isLazy=True,
            handler=txredisapi.ConnectionHandler,
            charset=None,
            password=settings.password,
            replyTimeout=None,  # see _sweep
            convertNumbers=False,
            username=settings.username,
        )
        # Come back quickly after a Redis restart or failover.
        factory.initialDelay = 0.1
        factory.maxDelay = 2.0
        factory.noisy = False
        factory.protocol = _Protocol
        factory.clock = self._reactor
        factory.handshake_timeout = self.timeout
        # Fires (or fails) when the whole pool is connected: nobody waits.
        if factory.deferred is not None:
            factory.deferred.addErrback(lambda _: None)
        self._factory = factory
        self._handler = factory.handler
        factory.startConnecting(settings.endpoint(self._endpoint_reactor, self.timeout))
        self._started_at = self._reactor.seconds()
        self._pinger.start(PING_INTERVAL, now=False)
        self._sweeper.start(min(SWEEP_INTERVAL, self.timeout / 4), now=False)

    def connected(self) -> bool:
        """
        Whether at least one connection to Redis is up.
        """
        factory = self._factory
        up = factory is not None and any(c.connected for c in factory.pool)
        if up:
            self._was_up = True
        return up

    def healthy(self) -> bool:
        """
        Whether Redis is connected and answered the last call in time.
        """
        return self.connected() and self._answering

    def command(self, *args: Arg) -> "Deferred[Any]":
        """
        Send one command; its reply, or L{RedisUnavailable}.
        """
        connection = self._ready()
        if connection is None:
            return self._unavailable()
        return self._bounded(connection.execute_command, *args)

    def run(
        self, script: Script, keys: Sequence[Key] = (), args: Sequence[Arg] = ()
    ) -> "Deferred[Any]":
        """
        Run C{script} with C{keys} and C{args}; its reply, or
        L{RedisUnavailable}.
        """
        connection = self._ready()
        if connection is None:
            return self._unavailable()
        return self._bounded(_run_script, connection, script, list(keys), list(args))

    def stop(self) -> "Deferred[None]":
        """
        Stop reconnecting and close the connections.
        """
        for loop in (self._pinger, self._sweeper):
            if loop.running:
                loop.stop()
        factory, self._factory = self._factory, None
        if factory is None:
            return succeed(None)
        d: Deferred[None] = factory.disconnect()
        return d.addBoth(lambda _: None)

    def _ready(self) -> Any:
        """
        The connection to send a call on: a connected one of the pool, or
        the handler (which waits for the first connection) while that may
        still come; L{None} when Redis is unavailable.
        """
        connection = self._pick()
        if connection is None and self._starting():
            connection = self._handler
        return connection

    def _unavailable(self) -> "Deferred[Any]":
        self._note(False)
        return fail(RedisUnavailable(f"not connected to {self.settings.describe()}"))

    def _starting(self) -> bool:
        """
        Whether the first connection may still be on its way: calls wait for
        it then (bounded by the timeout) instead of failing at once.
        """
        if self._was_up or self._factory is None:
            return False
        if self._reactor.seconds() - self._started_at > self.timeout:
            # Redis was down at start: stop queueing calls in txredisapi.
            self._was_up = True
            return False
        return True

    def _pick(self) -> Any:
        """
        A connected protocol of the pool, in turn, or L{None}.
        """
        factory = self._factory
        if factory is None:
            return None
        pool = factory.pool
        for _ in range(len(pool)):
            self._next = (self._next + 1) % len(pool)
            connection = pool[self._next]
            if connection.connected:
                self._was_up = True
                return connection
        return None

    def _bounded(self, method: Any, *args: Any) -> "Deferred[Any]":
        """
        The outcome of C{method(*args)} (a txredisapi call), or
        L{RedisUnavailable} once C{timeout} seconds have passed.
        """
        result: Deferred[Any] = Deferred()

        def done(outcome: Any) -> None:
            if result.called:
                return  # too late: the caller has had its failure
            if isinstance(outcome, Failure):
                if not outcome.check(*_OUTAGES):
                    # A bug, not an outage: it keeps its type, so that the
                    # web layer logs its traceback (and still answers 503).
                    result.errback(outcome)
                    return
                self._note(not outcome.check(txredisapi.ConnectionError))
                if outcome.check(txredisapi.ResponseError):
                    result.errback(RedisReplyError(str(outcome.value)))
                else:
                    result.errback(RedisUnavailable(outcome.getErrorMessage()))
            else:
                self._note(True)
                result.callback(outcome)

        try:
            call = method(*args)
        except Exception:  # txredisapi raises when the connection just closed
            done(Failure())
            return result
        self._pending.append((self._reactor.seconds() + self.timeout, result))
        call.addBoth(done)
        return result

    def _sweep(self) -> None:
        """
        Fail the calls older than C{timeout}; if there were any, drop the
        connections, which a Redis that stopped answering leaves hanging, so
        that they are made again.
        """
        pending = self._pending
        now = self._reactor.seconds()
        expired = False
        while pending:
            deadline, result = pending[0]
            if not result.called:
                if deadline > now:
                    break
                if not expired:
                    expired = True
                    self._note(False)
                result.errback(
                    RedisUnavailable(f"Redis did not answer in {self.timeout:g} s")
                )
            pending.popleft()
        if expired and self._factory is not None:
            for connection in list(self._factory.pool):
                connection.transport.abortConnection()
                # Dead from now on for _pick (txredisapi's own mark), not
                # only once the reactor has closed it.
                connection.connected = 0

    def _note(self, answering: bool) -> None:
        """
        Remember whether Redis answers, logging each change once.
        """
        if answering != self._answering:
            self._answering = answering
            if answering:
                self.log.info(
                    "Redis {redis} answers again", redis=self.settings.describe()
                )
            else:
                self.log.warn(
                    "Redis {redis} does not answer", redis=self.settings.describe()
                )

    def _ping(self) -> None:
        if self.connected():
            self.command("PING").addErrback(lambda _: None)
        else:
            self._note(False)


def _run_script(
    connection: Any, script: Script, keys: list[Key], args: list[Arg]
) -> "Deferred[Any]":
    """
    EVALSHA with the script's precomputed hash once this connection has run
    it (txredisapi's C{eval} hashes the whole source on every call), EVAL
    again if Redis forgot it.
    """
    # Before the first connection, calls go through txredisapi's handler,
    # which answers every attribute with a method that waits for one: no
    # hashes to read there, and EVAL sends the script in any case.
    if isinstance(connection, txredisapi.ConnectionHandler) or (
        script.sha not in connection.script_hashes
    ):
        return connection.eval(script.source, keys, args)  # type: ignore[no-any-return]

    def forgotten(reason: Failure) -> Any:
        reason.trap(txredisapi.ScriptDoesNotExist)
        return connection.eval(script.source, keys, args)

    d: Deferred[Any] = connection.evalsha(script.sha, keys, args)
    return d.addErrback(forgotten)
