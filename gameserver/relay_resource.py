"""
The relay served over HTTP: C{POST /relay} and C{GET /relay}.
"""

from time import perf_counter
from typing import IO, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gameserver.relay import Errors, Register, Reply, Request
from gameserver.relay_wire import format_reply, parse_request
from gameserver.scores import RETRY_AFTER, log_store_failure
from gameserver.web import lost_test

PLAIN_TEXT: Final = b"text/plain; charset=utf-8"
ALLOWED: Final = (b"GET", b"HEAD", b"POST")
# The server's default bound on the characters of a player name (and of a
# wanted partner's name): a player holds both while it is registered.
DEFAULT_MAX_NAME: Final = 256


class _Exchange(Protocol):
    """
    What the relay uses of a L{twisted.web.server.Request}, typed.
    """

    method: bytes
    content: IO[bytes] | None

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def getHeader(self, key: bytes) -> bytes | None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> "Deferred[None]": ...


class RelayBackend(Protocol):
    """
    What the resource needs of a relay: L{gameserver.relay.Relay} answers at
    once, L{gameserver.redis_relay.RedisRelay} with a L{Deferred}.
    """

    last_request_seconds: float

    def handle(self, request: Request) -> "Reply | Deferred[Reply]": ...


class _TooLong:
    """
    The marker for a body over the size limit.
    """


_TOO_LONG: Final = _TooLong()


class RelayResource(Resource):
    """
    The relay protocol over HTTP.

    C{POST} takes a request body C{<symbol>,<data>,<key>,<player>,<counter>}
    of at most C{max_body} bytes and answers C{200} with C{0/<code>/<payload>}
    on success, C{400} with an error body, or C{413} with C{20/*/*} for an
    over-long body or (if C{max_name} is given) a player name over
    C{max_name} characters.  C{GET}
    answers how many seconds the last C{POST} took, for the seed's stress
    client.  Every body is C{text/plain}; every other
    method gets C{405} with an C{Allow} header.

    A relay that holds as much game data as it may answers C{22/*/*}, sent
    with C{503} and C{Retry-After}: nothing was applied, and the same request
    may be sent again.

    A relay whose C{handle} answers a L{Deferred} is answered when it fires;
    a failed one (its store is unreachable) gets C{503} with C{Retry-After}.
    """

    isLeaf = True
    allowedMethods = ALLOWED
    _log = Logger()

    def __init__(
        self, relay: RelayBackend, max_body: int = 16384, max_name: int | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._relay = relay
        self._max_body = max_body
        self._max_name = max_name

    def render(self, request: _Exchange) -> bytes | int:
        """
        Answer C{405} in plain text for a method the relay does not serve.
        """
        request.setHeader(b"content-type", PLAIN_TEXT)
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in ALLOWED:
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"allow", b", ".join(ALLOWED))
            return b"method not allowed"
        body: bytes | int = super().render(request)  # type: ignore[no-untyped-call]
        return body

    def render_GET(self, request: _Exchange) -> bytes:
        """
        The seconds the last relay C{POST} took, as a decimal number.
        """
        return f"{self._relay.last_request_seconds:.9f}".encode("ascii")

    def render_HEAD(self, request: _Exchange) -> bytes:
        """
        The headers of C{GET}, without its body.
        """
        request.setHeader(b"content-length", b"%d" % len(self.render_GET(request)))
        return b""

    def render_POST(self, request: _Exchange) -> bytes | int:
        """
        Apply one relay request and answer its reply (now, or when the
        relay's L{Deferred} fires).
        """
        started = perf_counter()
        body = self._read_body(request)
        reply: Reply | Deferred[Reply]
        if body is _TOO_LONG:
            reply = Errors.TOO_LONG
        else:
            assert not isinstance(body, _TooLong)
            parsed = parse_request(body)
            if isinstance(parsed, Reply):
                reply = parsed
            elif (
                isinstance(parsed, Register)
                and self._max_name is not None
                and (
                    len(parsed.name) > self._max_name
                    or len(parsed.wanted or "") > self._max_name
                )
            ):
                reply = Errors.TOO_LONG
            else:
                try:
                    reply = self._relay.handle(parsed)
                except Exception:
                    # A bug must not leave the client guessing: it registers
                    # again, which is every client's way back.
                    self._log.failure("relay request failed")
                    reply = Errors.OUT_OF_ORDER
        if isinstance(reply, Deferred):
            return self._later(request, reply, started)
        return self._answer(request, reply, started)

    def _answer(self, request: _Exchange, reply: Reply, started: float) -> bytes:
        """
        The body of C{reply}, its status code set; the time taken noted.
        """
        if reply is Errors.TOO_LONG:
            request.setResponseCode(http.REQUEST_ENTITY_TOO_LARGE)
        elif reply is Errors.BUSY:
            # Nothing was applied: the client sends the same request again.
            request.setResponseCode(http.SERVICE_UNAVAILABLE)
            request.setHeader(b"retry-after", RETRY_AFTER)
        elif not reply.ok:
            request.setResponseCode(http.BAD_REQUEST)
        out = format_reply(reply)
        self._relay.last_request_seconds = perf_counter() - started
        return out

    def _later(
        self, request: _Exchange, reply: "Deferred[Reply]", started: float
    ) -> int:
        """
        Write the reply when it comes; C{503} if the relay's store failed.
        """
        lost = lost_test(request)

        def done(value: Reply) -> None:
            body = self._answer(request, value, started)
            if not lost():
                request.write(body)
                request.finish()

        def failed(reason: Failure) -> None:
            log_store_failure(self._log, reason, path=b"/relay")
            self._relay.last_request_seconds = perf_counter() - started
            if not lost():
                request.setResponseCode(http.SERVICE_UNAVAILABLE)
                request.setHeader(b"retry-after", RETRY_AFTER)
                request.write(b"relay unavailable, try again")
                request.finish()

        reply.addCallbacks(done, failed)
        return NOT_DONE_YET

    def _read_body(self, request: _Exchange) -> bytes | _TooLong | None:
        """
        The body; L{None} if the request gave no length (no C{Content-Length}
        and no chunked body), L{_TOO_LONG} past C{max_body}.
        """
        content = getattr(request, "content", None)
        length = request.getHeader(b"content-length")
        if content is None or (
            length is None and request.getHeader(b"transfer-encoding") is None
        ):
            return None
        if length is not None:
            if not length.strip().isdigit():
                return None
            if int(length) > self._max_body:
                return _TOO_LONG
        data: bytes = content.read(self._max_body + 1)
        if len(data) > self._max_body:
            return _TOO_LONG
        return data
