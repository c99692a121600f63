"""
A lean HTTP/1.1 server channel that feeds the twisted.web resource tree.

twisted.web's own channel and request objects cost most of a request's time
here; this channel parses with C{httptools} (llhttp, the parser of Node.js)
and hands each request to the same L{IResource} tree as a light L{Request}
that carries only what resources use.
"""

import socket
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from email.utils import formatdate
from io import BytesIO
from time import perf_counter
from typing import IO, Any
from urllib.parse import unquote_to_bytes

import httptools
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.http import RESPONSES, combinedLogFormatter, datetimeToLogString
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

from gameserver.cors import CorsPolicy
from gameserver.direct_write import write_through
from gameserver.metrics import Metrics
from gameserver.ratelimit import ClientLimits, client_key, retry_after

SERVER = b"gameserver"

# Defaults of the limits a client can push against.
MAX_BODY = 64 * 1024
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
MAX_URL_BYTES = 8 * 1024
IDLE_TIMEOUT = 60.0
# Seconds a request's headers (and then its body) may take to arrive.
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 10_000
# Open connections of one client address (IPv6: one /64).
MAX_CLIENT_CONNECTIONS = 256
# Parsed requests waiting behind a slow one before reading pauses.
MAX_PIPELINE = 32
# How long a refused connection may go on sending before it is cut: long
# enough for the client to read the error instead of a reset.
LINGER_SECONDS = 2.0

_CANONICAL: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    """
    C{content-type} -> C{Content-Type}, cached: response header names as
    clients are used to seeing them.
    """
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = b"-".join(part.capitalize() for part in name.split(b"-"))
        if len(_CANONICAL) < 1024:
            _CANONICAL[name] = canonical
    return canonical


_STATUS_LINES: dict[tuple[bytes, int], bytes] = {}


def _status_line(version: bytes, code: int) -> bytes:
    """
    C{HTTP/1.1 200 OK\r\n}, cached per version and code.
    """
    line = _STATUS_LINES.get((version, code))
    if line is None:
        reason = RESPONSES.get(code, b"Unknown")
        line = b"%s %d %s\r\n" % (version, code, reason)
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[version, code] = line
    return line


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


class _HTTPDate:
    """
    The last lines of every response head, C{Date} and C{Server}, formatted
    once a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            date = formatdate(now, usegmt=True).encode("ascii")
            self._value = b"Date: %s\r\nServer: %s\r\n\r\n" % (date, SERVER)
        return self._value


http_date = _HTTPDate()


class Request:
    """
    One HTTP request and its response: the part of
    L{twisted.web.server.Request} that gameserver's resources (and
    L{twisted.web.pages}) use.

    The response body is collected until L{finish} and sent in one write with
    a C{Content-Length}, so no response is ever chunked.
    """

    __slots__ = (
        "_args",
        "_body",
        "_finished_deferreds",
        "_headers",
        "_lost",
        "_response_headers",
        "channel",
        "clientproto",
        "code",
        "code_message",
        "content",
        "finished",
        "keep_alive",
        "method",
        "path",
        "postpath",
        "prepath",
        "query",
        "refused",
        "route",
        "sentLength",
        "started",
        "uri",
    )

    def __init__(self, channel: "HTTPChannel") -> None:
        self.channel = channel
        self.method = b"GET"
        self.uri = b""
        self.path = b""
        self.query = b""
        self.clientproto = b"HTTP/1.1"
        self.prepath: list[bytes] = []
        self.postpath: list[bytes] = []
        self.content: IO[bytes] = BytesIO()
        self.code = 200
        self.code_message: bytes | None = None
        self.keep_alive = True
        self.finished = False
        # Answered by the channel itself (a limit or a parse error), in order,
        # without reaching the resource tree.
        self.refused = False
        self.sentLength = 0
        # For the metrics: the route it was served by, and when its first
        # byte arrived.
        self.route = "other"
        self.started = 0.0
        self._args: dict[bytes, list[bytes]] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._response_headers: dict[bytes, tuple[bytes, bytes]] = {}
        self._body: list[bytes] = []
        self._finished_deferreds: list[Deferred[None]] | None = None
        self._lost = False

    # -- what the request says --

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        """
        The query string's arguments (never the body's).
        """
        if self._args is None:
            self._args = _parse_query(self.query)
        return self._args

    @property
    def requestHeaders(self) -> Headers:
        """
        The request headers as a L{Headers}; built on first use.
        """
        headers = Headers()
        for name, value in self._headers:
            headers.addRawHeader(name, value)
        return headers

    def getHeader(self, name: bytes | str) -> bytes | None:
        """
        The last value of request header C{name}, or L{None}.
        """
        wanted = _bytes(name).lower()
        for header, value in reversed(self._headers):
            if header == wanted:
                return value
        return None

    def getClientAddress(self) -> IAddress:
        """
        The address of the client's end of the connection.
        """
        address: IAddress = self.channel.transport.getPeer()  # type: ignore[union-attr]
        return address

    def isSecure(self) -> bool:
        """
        Whether the connection uses TLS.
        """
        return self.channel.secure

    # -- the response --

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.code_message = message

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        raw = _bytes(name)
        self._response_headers[raw.lower()] = (raw, _bytes(value))

    def responseHeader(self, name: bytes) -> bytes | None:
        """
        The value of response header C{name} set so far, or L{None}.
        """
        entry = self._response_headers.get(name.lower())
        return None if entry is None else entry[1]

    def write(self, data: bytes) -> None:
        if not self.finished:
            self._body.append(data)

    def finish(self) -> None:
        """
        Send the response; nothing more can be written.
        """
        if self.finished:
            return
        self.finished = True
        if not self._lost:
            self.channel.respond(self)
        deferreds, self._finished_deferreds = self._finished_deferreds, None
        for d in deferreds or ():
            d.callback(None)

    def notifyFinish(self) -> "Deferred[None]":
        """
        A L{Deferred} that fires when the response is sent, or fails if the
        connection is lost first.
        """
        d: Deferred[None] = Deferred()
        if self._lost:
            d.errback(Failure(ConnectionError("connection lost")))
        elif self.finished:
            d.callback(None)
        else:
            if self._finished_deferreds is None:
                self._finished_deferreds = []
            self._finished_deferreds.append(d)
        return d

    def is_lost(self) -> bool:
        """
        Whether the client went away before the response was sent: what
        L{notifyFinish} tells, without a L{Deferred} per request.
        """
        return self._lost

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away before the response was sent.
        """
        self._lost = True
        deferreds, self._finished_deferreds = self._finished_deferreds, None
        for d in deferreds or ():
            d.errback(reason)


class HTTPChannel(Protocol):
    """
    HTTP/1.0 and 1.1 on one connection: persistent connections, pipelined
    requests answered in order, C{Content-Length} and chunked bodies,
    C{Expect: 100-continue}, C{HEAD}.

    Limits, each answered before the request reaches a resource: a malformed
    request (including one with both C{Content-Length} and
    C{Transfer-Encoding}) gets C{400}, a request target over C{max_url}
    bytes C{414}, more than C{max_headers} headers or C{max_header_bytes} of
    them C{431}, a body over C{max_body} C{413} (as soon as it is announced or
    reached, and without C{100 Continue}); after any of these the connection
    closes.  A connection idle for C{idle_timeout} seconds is closed; one
    whose request headers are not complete C{header_timeout} seconds after
    the request's first byte (or whose body is not complete that long after
    the headers) gets C{408} and is closed, however often bytes trickle in.

    Past C{max_connections} open connections a new one gets C{503} at once
    and is closed.  With C{limits}, logins, score posts and relay requests
    over their client's rate get C{429} with C{Retry-After}.
    """

    log = Logger()
    factory: "GameHTTPFactory"
    secure = False

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._request: Request | None = None
        self._url = b""
        self._header_bytes = 0
        self._body_bytes = 0
        self._length: bytes | None = None
        self._expect: bytes | None = None
        self._queue: deque[Request] = deque()
        self._current: Request | None = None
        self._processing = False
        self._broken = False
        self._closing = False
        self._paused = False
        self._last_activity = 0.0
        # The transport's write buffer is full: neither read nor answer.
        self._write_paused = False
        self._write_paused_at = 0.0
        self._producing = False
        self._idle_timer: IDelayedCall | None = None
        # When the part of a request being read (headers, then body) began;
        # None between requests.
        self._reading_since: float | None = None
        # The rate-limit key of the client: None when exempt or unlimited;
        # _via_proxy when a trusted proxy names the client per request.
        self._client: str | None = None
        self._via_proxy = False
        # The key this connection is counted under per client, if it is.
        self._counted: str | None = None
        self._linger: IDelayedCall | None = None
        self._socket: socket.socket | None = None
        # Shutting down: answer what has arrived, then close.
        self._draining = False

    # -- connection --

    def connectionMade(self) -> None:
        self.secure = _is_tls(self.transport)
        # Only a plain TCP or UNIX connection may be written to directly; a
        # TLS transport forwards attribute lookups to the TCP connection below
        # it, whose socket must never see plaintext.
        transport = self.transport
        if isinstance(transport, tcp.Connection) and not self.secure:
            self._socket = transport.socket
        # Responses are written whole; Nagle would hold back each pipelined
        # response until the client acknowledged the one before it.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with suppress(OSError):  # not TCP (a UNIX socket): nothing to delay
                set_no_delay(True)
        factory = self.factory
        if factory.limits is not None:
            self._classify_client(factory.limits)
        full = len(factory.channels) >= factory.max_connections
        if full or (
            self._client is not None
            and not self._via_proxy
            and not factory.count_client(self._client)
        ):
            factory.refused_connection(self._client if not full else None)
            self._closing = True
            self._send(_TOO_MANY_CONNECTIONS)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self._client is not None and not self._via_proxy:
            self._counted = self._client
        clock = factory.clock
        self._last_activity = clock.seconds()
        self._idle_timer = clock.callLater(self._timer_delay(), self._check_idle)
        factory.channels.add(self)
        # As the transport's producer, the channel hears when the client
        # stops reading its responses (the write buffer passes 64 KiB), and
        # stops reading and answering requests until it drains: a client that
        # pipelines without reading cannot make the server buffer without end.
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._producing = True
        if self.factory.draining:
            self.drain()

    def drain(self) -> None:
        """
        Shutting down: close now if no request is under way, otherwise answer
        what has arrived (the last response saying C{Connection: close}) and
        close then.
        """
        self._draining = True
        if self._current is None and not self._queue and self._request is None:
            self._closing = True
            self._lose()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.channel_lost(self)
        if self._counted is not None:
            self.factory.uncount_client(self._counted)
            self._counted = None
        for timer in (self._idle_timer, self._linger):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle_timer = self._linger = None
        waiting = [self._current, *self._queue] if self._current else list(self._queue)
        self._queue.clear()
        for request in waiting:
            if request is not None and not request.finished:
                request.connectionLost(reason)

    def _classify_client(self, limits: ClientLimits) -> None:
        """
        Find, once per connection, whose rate limits its requests count
        against.
        """
        host = getattr(self.transport.getPeer(), "host", None)  # type: ignore[union-attr]
        if not isinstance(host, str):
            return  # a UNIX socket: whoever can reach it is local
        if limits.is_trusted_proxy(host):
            self._via_proxy = True
            self._client = client_key(host)
        elif not limits.is_exempt(host):
            self._client = client_key(host)

    def _timer_delay(self) -> float:
        # The timer runs at least once per header timeout, so that a request
        # begun just after it ran is cut no later than one timeout late.
        factory = self.factory
        return min(factory.idle_timeout, factory.header_timeout)

    def _check_idle(self) -> None:
        # One timer per connection, re-armed lazily: dataReceived and the
        # parser only note the time, so a busy connection never touches the
        # reactor's heap.
        factory = self.factory
        clock = factory.clock
        now = clock.seconds()
        reading_since = self._reading_since
        if (
            reading_since is not None
            and not self._broken
            and not (self._paused or self._write_paused)
            and now - reading_since >= factory.header_timeout
        ):
            self._idle_timer = None
            self.log.debug("request read timeout", peer=self.transport.getPeer())  # type: ignore[union-attr]
            self._refuse(408, b"Request not received in time.")
            return
        idle = now - self._last_activity
        timeout = factory.idle_timeout
        if self._write_paused and now - self._write_paused_at >= timeout:
            # It has read none of its responses for a whole idle timeout.
            self._idle_timer = None
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if idle >= timeout and self._current is None and not self._queue:
            self._idle_timer = None
            self._lose()
            return
        delay = min(timeout - idle, factory.header_timeout)
        if reading_since is not None:
            delay = min(delay, reading_since + factory.header_timeout - now)
        floor = min(1.0, factory.header_timeout)
        self._idle_timer = clock.callLater(max(delay, floor), self._check_idle)

    def dataReceived(self, data: bytes) -> None:
        self._last_activity = self.factory.clock.seconds()
        if self._broken or self._closing:
            return  # refusing or closing: what else arrives is discarded
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"Protocol upgrades are not supported.")
        except httptools.HttpParserError:
            if not self._closing:
                self._refuse(400, b"Malformed HTTP request.")

    # -- parser callbacks --

    def on_message_begin(self) -> None:
        self._request = request = Request(self)
        request.started = perf_counter()
        self._reading_since = self._last_activity
        self._url = b""
        self._header_bytes = 0
        self._body_bytes = 0
        self._length = None
        self._expect = None

    def on_url(self, url: bytes) -> None:
        if self._broken:
            return
        self._url += url
        if len(self._url) > self.factory.max_url:
            self._refuse(414, b"Request target too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._request
        if self._broken or request is None:
            return
        headers = request._headers
        lower = name.lower()
        headers.append((lower, value))
        # The two headers the channel itself acts on, noted as they pass.
        if lower == b"content-length":
            self._length = value
        elif lower == b"expect":
            self._expect = value
        self._header_bytes += len(name) + len(value) + 4
        if (
            len(headers) > self.factory.max_headers
            or self._header_bytes > self.factory.max_header_bytes
        ):
            self._refuse(431, b"Too many or too large request headers.")

    def on_headers_complete(self) -> None:
        request = self._request
        if self._broken or request is None:
            return
        self._reading_since = self._last_activity
        parser = self._parser
        request.method = parser.get_method()
        version = parser.get_http_version()
        request.clientproto = b"HTTP/1.0" if version == "1.0" else b"HTTP/1.1"
        request.keep_alive = parser.should_keep_alive()
        if not _set_target(request, self._url):
            self._refuse(400, b"Malformed request target.")
            return
        length = self._length
        if length is not None and int(length) > self.factory.max_body:
            self._refuse(413, b"Request body too large.")
            return
        if (
            self._expect is not None
            and version == "1.1"
            and self._current is None
            and not self._queue
            and self._expect.lower() == b"100-continue"
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        request = self._request
        if self._broken or request is None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.factory.max_body:
            self._refuse(413, b"Request body too large.")
            return
        request.content.write(body)

    def on_message_complete(self) -> None:
        request = self._request
        if self._broken or request is None:
            return
        self._request = None
        self._reading_since = None
        request.content.seek(0)
        self._queue.append(request)
        if not request.keep_alive:
            # Nothing after a closing request is read.
            self._closing = True
        if len(self._queue) > MAX_PIPELINE and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._process()

    # -- answering --

    def _process(self) -> None:
        if self._processing:
            return  # a request finished inside render; the loop below goes on
        self._processing = True
        try:
            while self._current is None and self._queue and not self._write_paused:
                request = self._current = self._queue.popleft()
                if request.refused:
                    request.finish()
                else:
                    self._render(request)
        finally:
            self._processing = False
        if self._paused and not self._queue:
            self._paused = False
            if not self._write_paused:
                self._resume_reading()

    # -- the transport's producer: its write buffer filled or drained --

    def pauseProducing(self) -> None:
        if not self._write_paused:
            self._write_paused = True
            self._write_paused_at = self.factory.clock.seconds()
            if not self._paused:
                self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if self._write_paused:
            self._write_paused = False
            if not self._paused and not self._closing:
                self._resume_reading()
            self._process()

    def _resume_reading(self) -> None:
        # The server chose the pause: a request half read when it began gets
        # a whole read timeout from now, not a 408 for the server's wait.
        if self._reading_since is not None:
            self._reading_since = self.factory.clock.seconds()
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        pass  # the connection is going: connectionLost cleans up

    def _lose(self) -> None:
        """
        Close once what is written has been sent, or cut the connection if
        the client does not take it within L{LINGER_SECONDS}.
        """
        self._unregister()
        transport: Any = self.transport
        transport.loseConnection()
        if self._linger is None and getattr(transport, "connected", False):
            self._linger = self.factory.clock.callLater(
                LINGER_SECONDS, transport.abortConnection
            )

    def _unregister(self) -> None:
        # A transport with a producer registered never finishes closing.
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def _render(self, request: Request) -> None:
        cors = self.factory.cors
        if cors is not None:
            if cors.preflight(request):
                request.finish()
                return
            cors.apply(request)
        try:
            resource = getChildForRequest(self.factory.resource, request)
            request.route = route = getattr(resource, "metrics_route", "other")
            if self._client is not None and self._over_limit(request, route):
                return
            body = resource.render(request)
        except UnsupportedMethod as e:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(e.allowedMethods))
            body = b"Method not allowed.\n"
        except Exception:
            self.log.failure("rendering {path} failed", path=request.path)
            request._response_headers.clear()
            request._body.clear()
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain")
            if cors is not None:
                cors.apply(request)
            body = b"Internal server error.\n"
        if body is NOT_DONE_YET:
            return
        request.write(body)
        request.finish()

    def _over_limit(self, request: Request, route: str) -> bool:
        """
        Take a token for C{request} from its client's bucket for C{route};
        if there is none, answer C{429} and return L{True}.
        """
        limits = self.factory.limits
        assert limits is not None
        limiter = limits.limiters.get(route)
        if limiter is None:
            return False
        client = self._client
        if self._via_proxy:
            forwarded = limits.forwarded_client(request.getHeader(b"x-forwarded-for"))
            if forwarded is not None:
                if limits.is_exempt(forwarded):
                    return False
                client = client_key(forwarded)
        assert client is not None
        wait = limiter.take(client)
        if not wait:
            return False
        self.factory.rate_limited(route)
        request.setResponseCode(429)
        request.setHeader(b"retry-after", retry_after(wait))
        request.setHeader(b"cache-control", b"no-store")
        request.write(b"Too many requests; retry later.\n")
        request.finish()
        return True

    def respond(self, request: Request) -> None:
        """
        Write C{request}'s response, then go on with the next request.
        """
        parts = request._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if request.code_message is None:
            head = [_status_line(request.clientproto, request.code)]
        else:
            head = [
                b"%s %d %s\r\n"
                % (request.clientproto, request.code, request.code_message)
            ]
        headers = request._response_headers
        for name, value in headers.values():
            head.append(_canonical(name) + b": " + value + b"\r\n")
        if request.code == 204:
            pass  # No Content: neither a length nor a type
        else:
            if b"content-length" not in headers:
                head.append(b"Content-Length: %d\r\n" % len(body))
            if b"content-type" not in headers:
                head.append(b"Content-Type: text/plain; charset=utf-8\r\n")
        keep_alive = request.keep_alive and not self._broken
        if self._draining and keep_alive and not self._queue and self._request is None:
            keep_alive = False
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.clientproto == b"HTTP/1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(http_date())
        if request.method != b"HEAD":
            head.append(body)
            request.sentLength = len(body)
        self._send(b"".join(head))
        factory = self.factory
        metrics = factory.metrics
        if metrics is not None:
            metrics.observe(
                request.route, request.code, perf_counter() - request.started
            )
        if factory.access_log is not None:
            factory.log_access(request)
        if request is self._current:
            self._current = None
        if not keep_alive:
            self._close()
            return
        self._process()

    def _send(self, data: bytes) -> None:
        """
        Write C{data}, straight to the socket of a plain TCP or UNIX
        connection when nothing is queued before it (see L{write_through}).
        """
        transport: Any = self.transport
        if self._socket is None:
            transport.write(data)
        else:
            write_through(transport, self._socket.send, data, transport.write)

    def _refuse(self, code: int, message: bytes) -> None:
        """
        Answer C{code} after the requests before this one, then close.
        """
        if self._broken:
            return
        self._broken = True
        request = self._request or Request(self)
        self._request = None
        request.keep_alive = False
        request.refused = True
        request.setResponseCode(code)
        request._body = [message, b"\n"]
        self._queue.append(request)
        self._process()

    def _close(self) -> None:
        self._closing = True
        self._unregister()
        transport: Any = self.transport
        if self._broken and hasattr(transport, "loseWriteConnection"):
            # The client may still be sending what we refused: half-close so
            # it reads our answer rather than a reset, and cut it later.
            transport.loseWriteConnection()
            self._linger = self.factory.clock.callLater(
                LINGER_SECONDS, transport.abortConnection
            )
        else:
            transport.loseConnection()


_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 29\r\n\r\n"
    b"Too many connections; retry.\n"
)


def _set_target(request: Request, url: bytes) -> bool:
    """
    Fill in C{uri}, C{path}, C{query}, C{prepath} and C{postpath} from the
    request target; return L{False} if it is neither origin- nor
    absolute-form.
    """
    if not url.startswith(b"/"):
        # absolute-form (RFC 9112 3.2.2): drop the scheme and authority.
        scheme, sep, rest = url.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            return False
        slash = rest.find(b"/")
        url = rest[slash:] if slash >= 0 else b"/"
    request.uri = url
    path, _, query = url.partition(b"?")
    request.path = path
    request.query = query
    segments = path[1:].split(b"/")
    if b"%" in path:
        segments = [unquote_to_bytes(s) for s in segments]
    request.postpath = segments
    return True


def _parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """
    C{parse_qs(query, keep_blank_values=True)}, without its cost for the
    plain C{name=value} pairs clients send.
    """
    args: dict[bytes, list[bytes]] = {}
    if not query:
        return args
    for pair in query.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        if b"%" in pair or b"+" in pair:
            name = unquote_to_bytes(name.replace(b"+", b" "))
            value = unquote_to_bytes(value.replace(b"+", b" "))
        args.setdefault(name, []).append(value)
    return args


def _is_tls(transport: object) -> bool:
    from twisted.internet.interfaces import ISSLTransport

    return ISSLTransport.providedBy(transport)


class GameHTTPFactory(Factory[HTTPChannel]):
    """
    Builds an L{HTTPChannel} per connection, serving C{resource}.

    The access log is written only when C{access_log} names a file; when it
    is off nothing is formatted.  C{metrics}, if given, counts every response
    by route and status with its latency; C{cors}, if given, adds the CORS
    headers and answers preflight requests.

    It knows its open connections, so that L{drain} can let them finish
    their requests when the server shuts down.
    """

    log = Logger()

    def __init__(
        self,
        resource: IResource,
        clock: IReactorTime,
        access_log: str | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        max_body: int = MAX_BODY,
        metrics: Metrics | None = None,
        cors: CorsPolicy | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        limits: ClientLimits | None = None,
        max_client_connections: int = MAX_CLIENT_CONNECTIONS,
    ) -> None:
        self.resource = resource
        self.clock = clock
        self.access_log = access_log
        self.metrics = metrics
        self.cors = cors
        self.channels: set[HTTPChannel] = set()
        self.draining = False
        self._drained: Deferred[None] | None = None
        self._close_log_when_drained = False
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.limits = limits
        # Open connections per client key (exempt clients and trusted proxies
        # are not counted); 0 is no bound.  At most one entry per connection.
        self.max_client_connections = max_client_connections
        self._client_connections: dict[str, int] = {}
        # Counted for the metrics: connections refused at the cap, and
        # requests refused by a rate limit, by route.
        self.connections_refused = 0
        self.requests_limited: dict[str, int] = {}
        self._cap_warned_at = -1e9
        self.max_body = max_body
        self.max_headers = MAX_HEADERS
        self.max_header_bytes = MAX_HEADER_BYTES
        self.max_url = MAX_URL_BYTES
        self._log_file: IO[str] | None = None
        self._opener: Callable[[str], IO[str]] = lambda path: open(  # noqa: SIM115
            path, "a", buffering=1, encoding="utf-8"
        )

    def buildProtocol(self, addr: IAddress | None) -> HTTPChannel:
        channel = HTTPChannel()
        channel.factory = self
        return channel

    def startFactory(self) -> None:
        if self.access_log is not None:
            self._log_file = self._opener(self.access_log)

    def stopFactory(self) -> None:
        # The listening port stopped; requests still under way on open
        # connections are logged before the file closes.
        if self.channels:
            self._close_log_when_drained = True
        else:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def reopen_log(self) -> None:
        """
        Close and reopen the access log file (after logrotate moved it).
        """
        if self._log_file is not None and self.access_log is not None:
            self._log_file.close()
            self._log_file = self._opener(self.access_log)
            self.log.info("reopened access log {path}", path=self.access_log)

    def refused_connection(self, client: str | None = None) -> None:
        """
        A new connection was refused: at C{max_connections}, or (with
        C{client}) at that client's C{max_client_connections}; warn at most
        once a minute.
        """
        self.connections_refused += 1
        now = self.clock.seconds()
        if now - self._cap_warned_at >= 60:
            self._cap_warned_at = now
            if client is None:
                self.log.warn(
                    "{connections} connections open: refusing new ones",
                    connections=len(self.channels),
                )
            else:
                self.log.warn(
                    "client {client} holds {limit} connections: refusing more",
                    client=client,
                    limit=self.max_client_connections,
                )

    def count_client(self, client: str) -> bool:
        """
        Count a new connection of C{client}; L{False} (not counted) if it
        already has C{max_client_connections}.
        """
        count = self._client_connections.get(client, 0)
        if self.max_client_connections and count >= self.max_client_connections:
            return False
        self._client_connections[client] = count + 1
        return True

    def uncount_client(self, client: str) -> None:
        """
        A connection of C{client} closed.
        """
        count = self._client_connections[client] - 1
        if count:
            self._client_connections[client] = count
        else:
            del self._client_connections[client]

    def rate_limited(self, route: str) -> None:
        """
        A request on C{route} was refused by its rate limit.
        """
        self.requests_limited[route] = self.requests_limited.get(route, 0) + 1

    def channel_lost(self, channel: HTTPChannel) -> None:
        """
        C{channel}'s connection closed.
        """
        self.channels.discard(channel)
        if not self.channels:
            if self._close_log_when_drained:
                self._close_log_when_drained = False
                self._close_log()
            self._fire_drained()

    def drain(self, timeout: float) -> "Deferred[None]":
        """
        Let every open connection finish the requests it has received, then
        close; fire once all are closed or, after C{timeout} seconds, cut
        the rest.  Stop listening first: new connections are closed at once.
        """
        self.draining = True
        for channel in list(self.channels):
            channel.drain()
        if not self.channels:
            return succeed(None)
        busy = len(self.channels)
        self.log.info(
            "waiting up to {timeout}s for {connections} open connections",
            timeout=timeout,
            connections=busy,
        )
        drained: Deferred[None] = Deferred()
        self._drained = drained
        timer = self.clock.callLater(timeout, self._cut)

        def cancel_timer(result: None) -> None:
            if timer.active():
                timer.cancel()

        return drained.addCallback(cancel_timer)

    def _cut(self) -> None:
        self.log.warn(
            "cutting {connections} connections still busy at the shutdown timeout",
            connections=len(self.channels),
        )
        for channel in list(self.channels):
            transport: Any = channel.transport
            transport.abortConnection()
        self._fire_drained()

    def _fire_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    def log_access(self, request: Request) -> None:
        """
        Append C{request} to the access log in the combined format.
        """
        if self._log_file is not None:
            timestamp = datetimeToLogString(self.clock.seconds())
            self._log_file.write(combinedLogFormatter(timestamp, request) + "\n")
