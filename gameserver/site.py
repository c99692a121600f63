"""
The HTTP factory: a L{twisted.web.server.Site} with bounded request bodies and
an access log that costs nothing when it is off.
"""

from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

# The largest body any resource accepts (a relay request is at most 16 KiB),
# with room to spare; resources enforce their own, smaller limits.
MAX_BODY = 64 * 1024

_TOO_LARGE = b"Request body too large\n"
_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE)
)

# How long a refused connection may keep sending the rest of its body before
# it is cut: long enough for the client to read the 413 instead of a reset.
LINGER_SECONDS = 2.0


class BoundedRequest(Request):
    """
    A request whose body may not exceed the site's C{maxBody}.

    A larger body, announced by C{Content-Length} or reached while reading a
    chunked one, is refused with C{413} before it is stored: the response is
    written at once, the connection half-closed, and what the client still
    sends is discarded until it hangs up or L{LINGER_SECONDS} pass.  Nothing is
    rendered for a refused request.
    """

    _refused = False
    _received = 0
    _linger: IDelayedCall | None = None

    @property
    def _site(self) -> "GameSite":
        channel: Any = self.channel
        site: GameSite = channel.site
        return site

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._site.maxBody:
            self.content = BytesIO()
            self._refuse()
        else:
            super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._site.maxBody:
            self._refuse()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _refuse(self) -> None:
        self._refused = True
        # Keep the channel from inviting the body with "100 Continue".
        self.requestHeaders.removeHeader(b"expect")
        transport: Any = self.channel.transport
        transport.write(_TOO_LARGE_RESPONSE)
        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
            self._linger = self._site.reactor.callLater(
                LINGER_SECONDS, transport.abortConnection
            )
        else:  # pragma: no cover - every stream transport we listen on has it
            transport.loseConnection()


class GameSite(Site):
    """
    The site serving gameserver's resource tree.

    The stock access log formats a line for every request even when it goes
    nowhere useful; here it is written only when C{access_log} names a file.
    """

    requestFactory = BoundedRequest
    displayTracebacks = False
    maxBody = MAX_BODY

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        access_log: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource,
            logPath=access_log,
            timeout=timeout,
            reactor=reactor,
            parsePOSTFormSubmission=False,
        )

    def startFactory(self) -> None:
        if self.logPath:
            super().startFactory()

    def log(self, request: Any) -> None:
        if self.logPath:
            super().log(request)
