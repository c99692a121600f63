"""
C{GET /healthz} for load balancers: C{200 ok} while the server and its store
are usable, C{503} otherwise (the store stopping or failed, or the server
shutting down, so that a balancer drains it before it goes away).
"""

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource

from gameserver.scores import ScoresBackend


class Health(Resource):
    """
    C{GET}/C{HEAD /healthz}: C{200} with C{ok}, or C{503} with the reason.
    """

    isLeaf = True
    metrics_route = "healthz"

    def __init__(self, scores: ScoresBackend, stopping: Callable[[], bool]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._scores = scores
        self._stopping = stopping

    def problem(self) -> bytes | None:
        """
        Why the server is not usable, or L{None} if it is.
        """
        if self._stopping():
            return b"shutting down"
        if not self._scores.healthy():
            return b"store unavailable"
        return None

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"Use GET here.\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        problem = self.problem()
        if problem is None:
            body = b"ok\n"
        else:
            request.setResponseCode(503)
            body = problem + b"\n"
        if request.method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body
