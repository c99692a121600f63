"""
C{GET /healthz} for load balancers: C{200 ok} while the server and its store
are usable, C{503} otherwise (the store stopping or failed, or the server
shutting down, so that a balancer drains it before it goes away).
"""

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource


def store_healthy(scores: Any) -> bool:
    """
    Whether the scores store C{scores} can take writes.

    A store may say so itself with a C{healthy()} method; the durable store
    is unusable once it is stopping or its writer thread has died; the
    in-memory store always is usable.
    """
    healthy = getattr(scores, "healthy", None)
    if callable(healthy):
        return bool(healthy())
    if getattr(scores, "_stopping", False):
        return False
    writer = getattr(scores, "writer", None)
    thread = getattr(writer, "_thread", None)
    # The writer thread starts on the first write; before that it is fine.
    return not (thread is not None and not thread.is_alive())


class Health(Resource):
    """
    C{GET}/C{HEAD /healthz}: C{200} with C{ok}, or C{503} with the reason.
    """

    isLeaf = True
    metrics_route = "healthz"

    def __init__(self, scores: Any, stopping: Callable[[], bool]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._scores = scores
        self._stopping = stopping

    def problem(self) -> bytes | None:
        """
        Why the server is not usable, or L{None} if it is.
        """
        if self._stopping():
            return b"shutting down"
        if not store_healthy(self._scores):
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
