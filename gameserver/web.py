"""
The resource tree of the scores API: parse, call the domain, map to HTTP.

    GET  /<userid>/login                      -> session key
    POST /<levelid>/score?sessionkey=<key>    -> record a score (body: score)
    GET  /<levelid>/highscorelist             -> "user=score,..." best first
    *    /relay, POST /                       -> the relay, when one is given
    GET  /healthz                             -> 200 ok, or 503 (health check)
"""

from collections.abc import Callable
from time import perf_counter
from typing import IO, Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from gameserver import uint31
from gameserver.metrics import Histogram
from gameserver.scores import (
    RETRY_AFTER,
    CapacityError,
    Outcome,
    Pending,
    ScoresBackend,
    log_store_failure,
)

T = TypeVar("T")

MAX_SCORE_BODY = 1024

_PLAIN = b"text/plain; charset=utf-8"

# A rendered response body, or NOT_DONE_YET when it follows later.
Rendered = bytes | int


class Request(Protocol):
    """
    What the resources use of a request: served by gameserver's own
    L{gameserver.channel.Request} and by L{twisted.web.server.Request}.
    """

    method: bytes
    path: bytes
    prepath: list[bytes] | None
    postpath: list[bytes] | None
    content: IO[bytes] | None

    @property
    def args(self) -> dict[bytes, list[bytes]]: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> "Deferred[None]": ...


def error(request: Request, code: int, brief: str, detail: str) -> Rendered:
    """
    Answer C{request} with an error page.
    """
    page = pages.errorPage(code, brief, detail)
    return cast(Rendered, page.render(cast(Any, request)))


class Finishing(Protocol):
    """
    A request whose response may follow later.
    """

    def notifyFinish(self) -> "Deferred[None]": ...


def lost_test(request: Finishing) -> Callable[[], object]:
    """
    A test of whether C{request}'s client went away before its response was
    sent.

    gameserver's own channel answers from a flag (see
    L{gameserver.channel.Request.is_lost}); a L{twisted.web.server.Request}
    (C{StubTreq} in tests) through L{Request.notifyFinish}.
    """
    test: Callable[[], object] | None = getattr(request, "is_lost", None)
    if test is not None:
        return test
    lost: list[Failure] = []
    request.notifyFinish().addErrback(lost.append)
    return lost.__len__


def _id(request: Request) -> bytes:
    """
    The id segment of C{/<id>/<call>}: the last segment routed so far.
    """
    return (request.prepath or [b""])[-1]


def _bad_number(request: Request, what: str) -> Rendered:
    return error(
        request,
        400,
        "Bad Request",
        f"The {what} must be a decimal number from 0 to {uint31.MAX}.",
    )


class Action(Resource):
    """
    The leaf that answers one call; the id in the path is C{prepath[-1]}.

    Subclasses implement L{answer}.  Methods other than C{allowed} get C{405}
    with an C{Allow} header; C{HEAD} is answered as C{GET} without the body.
    """

    isLeaf = True
    allowed: tuple[bytes, ...] = ()
    #: The route its requests are counted under in the metrics.
    metrics_route = "other"
    log = Logger()

    def __init__(
        self, scores: ScoresBackend, store_latency: Histogram | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.scores = scores
        self.store_latency = store_latency
        head = (b"HEAD",) if b"GET" in self.allowed else ()
        self._allow = b", ".join(self.allowed + head)

    def render(self, request: Request) -> Rendered:
        method = request.method
        if method == b"HEAD" and b"GET" in self.allowed:
            body = self.answer(request)
            if isinstance(body, bytes):
                request.setHeader(b"content-length", b"%d" % len(body))
                return b""
            return body
        if method not in self.allowed:
            request.setHeader(b"allow", self._allow)
            return error(
                request,
                405,
                "Method Not Allowed",
                f"Use {self._allow.decode()} here.",
            )
        return self.answer(request)

    def answer(self, request: Request) -> Rendered:
        """
        Render the response to an allowed method.
        """
        raise NotImplementedError

    def respond(
        self,
        request: Request,
        outcome: Outcome[T],
        render: Callable[[Request, T], Rendered],
    ) -> Rendered:
        """
        Render C{outcome} with C{render} now, or once its L{Pending} or
        L{Deferred} fires; a failed outcome (the store is unusable) becomes
        C{503}.
        """
        if not isinstance(outcome, (Pending, Deferred)):
            return render(request, outcome)

        lost = lost_test(request)
        histogram = self.store_latency
        started = perf_counter() if histogram is not None else 0.0

        def done(value: T) -> None:
            if histogram is not None:
                histogram.observe(perf_counter() - started)
            if lost():
                return  # the client hung up while the store worked
            body = render(request, value)
            if body is not NOT_DONE_YET:
                assert isinstance(body, bytes)
                request.write(body)
                request.finish()

        def failed(reason: Failure) -> None:
            if reason.check(CapacityError):
                # A bound the operator set, not a failure: nothing logged.
                if not lost():
                    request.setHeader(b"retry-after", b"60")
                    error(
                        request,
                        503,
                        "Service Unavailable",
                        f"The server holds {reason.value}, its limit; try again later.",
                    )
                return
            log_store_failure(self.log, reason, path=request.path)
            if not lost():
                request.setHeader(b"retry-after", RETRY_AFTER)
                error(request, 503, "Service Unavailable", "Try again later.")

        if isinstance(outcome, Pending):
            outcome.then(done, failed)
        else:
            outcome.addCallbacks(done, failed)
        return NOT_DONE_YET


def _key(request: Request, key: bytes) -> Rendered:
    request.setHeader(b"content-type", _PLAIN)
    request.setHeader(b"cache-control", b"no-store")
    return key


def _recorded(request: Request, recorded: bool) -> Rendered:
    if not recorded:
        return error(
            request,
            401,
            "Unauthorized",
            "The session key is missing, unknown or expired; log in again.",
        )
    request.setHeader(b"content-type", _PLAIN)
    return b""


def _list(request: Request, body: bytes) -> Rendered:
    request.setHeader(b"content-type", _PLAIN)
    return body


class Login(Action):
    """
    C{GET /<userid>/login}: a new session key.
    """

    allowed = (b"GET",)
    metrics_route = "login"

    def answer(self, request: Request) -> Rendered:
        user = uint31.parse(_id(request))
        if user is None:
            return _bad_number(request, "user id")
        return self.respond(request, self.scores.login(user), _key)


class ScorePost(Action):
    """
    C{POST /<levelid>/score?sessionkey=<key>} with the score as the body.

    Input is checked before the key, so a request with a bad level or score
    costs no store lookup: C{413}, then C{400}, then C{401}.
    """

    allowed = (b"POST",)
    metrics_route = "score"

    def answer(self, request: Request) -> Rendered:
        content = request.content
        body = b""
        if content is not None:
            content.seek(0)
            body = content.read(MAX_SCORE_BODY + 1)
        if len(body) > MAX_SCORE_BODY:
            return error(
                request,
                413,
                "Content Too Large",
                f"A score body is at most {MAX_SCORE_BODY} bytes.",
            )
        level = uint31.parse(_id(request))
        if level is None:
            return _bad_number(request, "level id")
        score = uint31.parse(body.strip())
        if score is None:
            return _bad_number(request, "score")
        keys = request.args.get(b"sessionkey")
        if not keys:
            return _recorded(request, False)
        return self.respond(
            request, self.scores.post_score(keys[0], level, score), _recorded
        )


class HighScoreList(Action):
    """
    C{GET /<levelid>/highscorelist}: the level's best scores, best first.
    """

    allowed = (b"GET",)
    metrics_route = "highscorelist"

    def answer(self, request: Request) -> Rendered:
        level = uint31.parse(_id(request))
        if level is None:
            return _bad_number(request, "level id")
        return self.respond(request, self.scores.high_score_list(level), _list)


class _RootPost(Resource):
    """
    C{POST /}: the relay, for clients configured with the bare server address.
    """

    isLeaf = True
    metrics_route = "relay"

    def __init__(self, relay: IResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._relay = relay

    def render(self, request: Request) -> Rendered:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return error(request, 405, "Method Not Allowed", "Use POST here.")
        return cast(Rendered, self._relay.render(request))


class GameRoot(Resource):
    """
    The root: routes C{/<id>/<call>} to the shared L{Action} leaves, so no
    resource is built per request, C{/relay} to the relay and C{/healthz} to
    the health check.  C{store_latency}, if given, collects the seconds
    requests wait for a store that answers later.
    """

    def __init__(
        self,
        scores: ScoresBackend,
        relay: IResource | None = None,
        health: IResource | None = None,
        store_latency: Histogram | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._actions: dict[bytes, Action] = {
            b"login": Login(scores, store_latency),
            b"score": ScorePost(scores, store_latency),
            b"highscorelist": HighScoreList(scores, store_latency),
        }
        self._relay = relay
        self._health = health
        self._root_post = None if relay is None else _RootPost(relay)

    def getChild(self, path: bytes, request: Request) -> IResource:
        postpath = request.postpath or []
        if len(postpath) == 1:
            action = self._actions.get(postpath[0])
            if action is not None:
                return action
        elif not postpath and self._relay is not None:
            if path == b"relay":
                return self._relay
            if path == b"" and self._root_post is not None:
                return self._root_post
        if not postpath and path == b"healthz" and self._health is not None:
            return self._health
        return pages.notFound()

    def render(self, request: Request) -> Rendered:
        return cast(Rendered, pages.notFound().render(request))
