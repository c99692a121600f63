"""
CORS for browser games: C{--cors-origin ORIGIN}, repeatable.

A request whose C{Origin} is allowed gets C{Access-Control-Allow-Origin}
(and C{Vary: Origin}) on its response; a preflight C{OPTIONS} request with
C{Access-Control-Request-Method} is answered C{204} by the channel itself,
naming the methods and headers the API uses.  Requests from other origins
are served as before, without the headers, so the browser keeps their
answers from the page.
"""

from collections.abc import Iterable
from typing import Protocol

ALLOW_METHODS = b"GET, POST, HEAD, OPTIONS"
ALLOW_HEADERS = b"Content-Type"
MAX_AGE = b"600"


class _Request(Protocol):
    method: bytes

    def getHeader(self, name: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...


def check_origin(origin: str) -> str:
    """
    Validate one C{--cors-origin}: C{*} or C{scheme://host[:port]}, without a
    path; raise L{ValueError} otherwise.
    """
    if origin == "*":
        return origin
    scheme, sep, rest = origin.partition("://")
    if (
        not sep
        or scheme not in ("http", "https")
        or not rest
        or "/" in rest
        or any(c.isspace() for c in origin)
    ):
        raise ValueError(
            f"--cors-origin {origin!r} must be '*' or scheme://host[:port], "
            "e.g. https://game.example.com"
        )
    return origin


class CorsPolicy:
    """
    The origins allowed to read the API's answers from a browser.
    """

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(o.encode("ascii") for o in origins)
        self.any = b"*" in self.origins

    def allowed(self, origin: bytes | None) -> bytes | None:
        """
        The C{Access-Control-Allow-Origin} value for C{origin}, or L{None}.
        """
        if origin is None:
            return None
        if self.any:
            return b"*"
        return origin if origin in self.origins else None

    def apply(self, request: _Request) -> None:
        """
        Add the CORS headers to C{request}'s response if its origin is allowed.
        """
        allow = self.allowed(request.getHeader(b"origin"))
        if allow is not None:
            request.setHeader(b"access-control-allow-origin", allow)
            if not self.any:
                request.setHeader(b"vary", b"Origin")

    def preflight(self, request: _Request) -> bool:
        """
        Answer C{request} if it is a preflight (C{OPTIONS} with
        C{Access-Control-Request-Method}) and return L{True}; the caller
        then finishes it with an empty body.
        """
        if (
            request.method != b"OPTIONS"
            or request.getHeader(b"access-control-request-method") is None
        ):
            return False
        request.setResponseCode(204)
        self.apply(request)
        request.setHeader(b"access-control-allow-methods", ALLOW_METHODS)
        request.setHeader(b"access-control-allow-headers", ALLOW_HEADERS)
        request.setHeader(b"access-control-max-age", MAX_AGE)
        return True
