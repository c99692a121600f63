"""
The stress client's HTTP/1.1 transport: a lean pipelining client protocol and
a fixed pool of persistent connections.

C{treq} and L{twisted.web.client.Agent} cost tens of microseconds and several
Deferreds per request, which would make the client the bottleneck.  Here a
request is bytes built by the caller, a response is parsed by C{httptools}
(C, llhttp), and each connection keeps a FIFO of the requests it pipelined.
"""

import socket
from collections import deque
from collections.abc import Callable
from functools import partial
from time import perf_counter
from typing import Any, Protocol
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime
from twisted.python.failure import Failure

# Failure reasons, the keys of the report's socket error counts.
TIMEOUT = "timeout"
CLOSED = "connection closed by server"
LOST = "connection lost"
BAD_RESPONSE = "bad response"
NO_CONNECTION = "no connection"


class Exchange:
    """
    One request: who sent it, what kind it is, its bytes, and when it was
    issued (by the player) and written (to a connection).
    """

    __slots__ = ("data", "issued", "kind", "player", "queued", "written")

    def __init__(self, player: Any, kind: int, data: bytes, issued: float) -> None:
        self.player = player
        self.kind = kind
        self.data = data
        self.issued = issued
        self.written = issued
        # Whether it waited in the pool's backlog for room on a connection.
        self.queued = False


class ExchangeSink(Protocol):
    """
    Where finished exchanges go.
    """

    def completed(
        self, exchange: Exchange, status: int, body: bytes, now: float
    ) -> None:
        """A complete response arrived at C{now} (a perf_counter time)."""

    def failed(self, exchange: Exchange, reason: str, now: float) -> None:
        """The exchange will get no response, for C{reason}."""


class Target:
    """
    Where requests go, and how to spell them: C{http://host[:port][/prefix]}.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"URL may not have a query or fragment: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/").encode("ascii")
        host = parts.netloc.rpartition("@")[2].encode("ascii")
        self._get = b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        self._post = b" HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: "

    def get(self, path: bytes) -> bytes:
        """The bytes of C{GET path}."""
        return b"GET " + self.prefix + path + self._get

    def post(self, path: bytes, body: bytes) -> bytes:
        """The bytes of C{POST path} with C{body}."""
        return (
            b"POST "
            + self.prefix
            + path
            + self._post
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )


class HTTPClientProtocol(protocol.Protocol):
    """
    A persistent HTTP/1.1 connection that pipelines requests.

    Requests are queued by L{send} and written together by L{flush}: one
    C{write} (and one system call) for all the requests of a timer tick.
    Responses arrive in request order (RFC 9112, 9.3.2), so each one completes
    the oldest exchange in flight.  Parser callbacks only collect responses;
    they are handed to the sink after C{feed_data} returns, so nothing the
    sink does can disturb the parser.  Then C{room} is told that requests
    have left.
    """

    def __init__(
        self,
        sink: ExchangeSink,
        lost: Callable[["HTTPClientProtocol"], None] | None = None,
        room: Callable[["HTTPClientProtocol"], None] | None = None,
    ) -> None:
        self.sink = sink
        self.lost = lost
        self.room = room
        self.in_flight: deque[Exchange] = deque()
        self.unflushed: list[Exchange] = []
        self.connected_ = False
        self._parser = HttpResponseParser(self)
        self._body: list[bytes] = []
        self._responses: list[tuple[int, bytes, bool]] = []
        self._abort_reason: str | None = None
        self._quickack: Callable[[], None] | None = None

    def connectionMade(self) -> None:
        self.connected_ = True
        # Small pipelined writes must not wait for Nagle and delayed ACKs.
        transport: Any = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        # A server without TCP_NODELAY holds each pipelined response after
        # the first until its predecessor is ACKed, and Linux delays that ACK
        # up to 40 ms: re-arming TCP_QUICKACK after each read ACKs at once,
        # as a client with one request per connection effectively does.
        quickack = getattr(socket, "TCP_QUICKACK", None)
        handle = getattr(transport, "getHandle", lambda: None)()
        if quickack is not None and isinstance(handle, socket.socket):
            self._quickack = partial(handle.setsockopt, socket.IPPROTO_TCP, quickack, 1)

    @property
    def depth(self) -> int:
        """Requests sent or queued that have no response yet."""
        return len(self.in_flight) + len(self.unflushed)

    def send(self, exchange: Exchange) -> bool:
        """
        Queue C{exchange} for the next L{flush}; whether it is the first
        queued since the last one.
        """
        self.unflushed.append(exchange)
        return len(self.unflushed) == 1

    def flush(self) -> None:
        """Write the queued requests."""
        out = self.unflushed
        if not out or not self.connected_:
            return
        assert self.transport is not None
        self.unflushed = []
        now = perf_counter()
        for exchange in out:
            exchange.written = now
        self.in_flight.extend(out)
        if len(out) == 1:
            self.transport.write(out[0].data)
        else:
            self.transport.write(b"".join([exchange.data for exchange in out]))

    def abort(self, reason: str) -> None:
        """Drop the connection; what is in flight fails with C{reason}."""
        if self._abort_reason is None:
            self._abort_reason = reason
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # httptools callbacks: on_header and the others are not defined, so the
    # parser does not call them.
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        body = b"".join(self._body) if self._body else b""
        self._body = []
        self._responses.append(
            (parser.get_status_code(), body, parser.should_keep_alive())
        )

    def dataReceived(self, data: bytes) -> None:
        if self._quickack is not None:
            try:
                self._quickack()
            except OSError:
                self._quickack = None
        try:
            self._parser.feed_data(data)
        except HttpParserError as e:
            self._responses.clear()
            self.abort(f"{BAD_RESPONSE}: {type(e).__name__}")
            return
        responses = self._responses
        if not responses:
            return
        now = perf_counter()
        in_flight = self.in_flight
        sink = self.sink
        keep_alive = True
        for status, body, keep_alive in responses:
            if not in_flight:
                responses.clear()
                self.abort(f"{BAD_RESPONSE}: unsolicited")
                return
            sink.completed(in_flight.popleft(), status, body, now)
            if not keep_alive:
                break
        responses.clear()
        if not keep_alive:
            self._abort_reason = CLOSED
            assert self.transport is not None
            self.transport.loseConnection()
        elif self.room is not None:
            self.room(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.connected_ = False
        why = self._abort_reason or LOST
        now = perf_counter()
        in_flight, self.in_flight = self.in_flight, deque()
        in_flight.extend(self.unflushed)
        self.unflushed = []
        for exchange in in_flight:
            self.sink.failed(exchange, why, now)
        if self.lost is not None:
            self.lost(self)


class ConnectionPool:
    """
    A fixed number of persistent connections to one server.

    Requests go round-robin to connections with fewer than C{depth} in
    flight, and are written at the next L{flush}; when no connection has
    room they wait in a FIFO backlog (marked C{queued}).  A lost connection
    is replaced after C{retry} seconds until L{stop}.
    """

    def __init__(
        self,
        reactor: Any,
        target: Target,
        size: int,
        depth: int,
        sink: ExchangeSink,
        retry: float = 0.25,
    ) -> None:
        self._reactor: IReactorCore = reactor
        self._clock: IReactorTime = reactor
        self._target = target
        self._size = size
        self._depth = depth
        self._sink = sink
        self._retry = retry
        self._ready: list[HTTPClientProtocol] = []
        self._next = 0
        self._backlog: deque[Exchange] = deque()
        self._dirty: list[HTTPClientProtocol] = []
        self._stopping = False
        self._retries: set[IDelayedCall] = set()
        self.connect_errors: dict[str, int] = {}
        self.connects = 0

    @property
    def connected(self) -> int:
        """How many connections are up."""
        return len(self._ready)

    @property
    def in_flight(self) -> int:
        """Requests written and not yet answered, plus the backlog."""
        return sum(c.depth for c in self._ready) + len(self._backlog)

    def start(self) -> "Deferred[None]":
        """
        Open every connection; fires once each first attempt has succeeded or
        failed.
        """
        attempts = [self._connect() for _ in range(self._size)]
        done: Deferred[None] = Deferred()
        pending = [len(attempts)]

        def one(_: object) -> None:
            pending[0] -= 1
            if pending[0] == 0:
                done.callback(None)

        for attempt in attempts:
            attempt.addBoth(one)
        return done

    def _connect(self) -> "Deferred[None]":
        endpoint = HostnameEndpoint(
            self._reactor, self._target.host, self._target.port, timeout=10
        )
        client = HTTPClientProtocol(self._sink, self._lost, self._room)
        attempt = connectProtocol(endpoint, client)

        def connected(_: object) -> None:
            self.connects += 1
            if self._stopping:
                client.abort(LOST)
                return
            self._ready.append(client)
            self._room(client)

        def refused(failure: Failure) -> None:
            name = failure.type.__name__ if failure.type else "error"
            key = f"connect failed: {name}"
            self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
            self._schedule_retry()

        done: Deferred[None] = attempt.addCallbacks(connected, refused)
        return done

    def _schedule_retry(self) -> None:
        if self._stopping:
            return
        call: IDelayedCall | None = None

        def retry() -> None:
            assert call is not None
            self._retries.discard(call)
            if not self._stopping:
                self._connect()

        call = self._clock.callLater(self._retry, retry)
        self._retries.add(call)

    def _lost(self, client: HTTPClientProtocol) -> None:
        if client in self._ready:
            self._ready.remove(client)
            self._schedule_retry()

    def submit(self, exchange: Exchange) -> None:
        """
        Give C{exchange} to a connection with room (written at the next
        L{flush}), or queue it until one has room.
        """
        ready = self._ready
        count = len(ready)
        if not self._backlog:
            start = self._next
            for i in range(count):
                client = ready[(start + i) % count]
                if client.depth < self._depth:
                    self._next = (start + i + 1) % count
                    if client.send(exchange):
                        self._dirty.append(client)
                    return
        exchange.queued = True
        self._backlog.append(exchange)

    def flush(self) -> None:
        """Write what L{submit} gave to connections."""
        for client in self._dirty:
            client.flush()
        self._dirty.clear()

    def _room(self, client: HTTPClientProtocol) -> None:
        # Answers left room on client: give it backlog, and write at once.
        backlog = self._backlog
        if not backlog or not client.connected_:
            return
        room = self._depth - client.depth
        while backlog and room > 0:
            client.send(backlog.popleft())
            room -= 1
        client.flush()

    def expire(self, now: float, timeout: float) -> None:
        """
        Abort connections whose oldest request has waited C{timeout} seconds,
        and fail backlog entries as old.
        """
        for client in list(self._ready):
            if client.in_flight and now - client.in_flight[0].written > timeout:
                client.abort(TIMEOUT)
        backlog = self._backlog
        while backlog and now - backlog[0].issued > timeout:
            reason = TIMEOUT if self._ready else NO_CONNECTION
            self._sink.failed(backlog.popleft(), reason, now)

    def stop(self) -> None:
        """Close every connection and stop reconnecting; drop the backlog."""
        self._stopping = True
        for call in self._retries:
            if call.active():
                call.cancel()
        self._retries.clear()
        self._backlog.clear()
        for client in list(self._ready):
            client.lost = None
            assert client.transport is not None
            client.transport.loseConnection()
        self._ready.clear()
