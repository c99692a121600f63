"""
Tests for L{gameserver.web}: every status code and body of the scores API,
through C{treq.testing.StubTreq}.
"""

import re
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from gameserver.channel import GameHTTPFactory
from gameserver.leaderboard import Leaderboards
from gameserver.redis_scores import RedisScores
from gameserver.scores import CapacityError, MemoryScores, Pending
from gameserver.sessions import SignedSessions, StoredSessions
from gameserver.web import GameRoot
from tests.redis_support import SKIP_REASON, connected, started_redis

BASE = "http://gameserver.test"
KEY = re.compile(rb"[A-Za-z0-9]{16,}")
INVALID_IDS = [
    "-5",
    "+5",
    "1.5",
    "1e3",
    "1_000",
    "%D9%A3",  # ARABIC-INDIC DIGIT THREE
    "%205",
    "5%20",
    "2147483648",
    "99999999999999999999",
    "abc",
    "0x10",
]
INVALID_SCORES = [
    b"-5",
    b"+5",
    b"1.5",
    b"1e3",
    b"1_000",
    "\u0663".encode(),
    b"",
    b"2147483648",
    b"abc",
    b"5 5",
    b"\xa05",
    b"1500\x00",
]


class Harness:
    """
    A scores API over a Clock, reachable through StubTreq.
    """

    def __init__(self, signed: bool = False) -> None:
        self.clock = Clock()
        sessions = (
            SignedSessions(self.clock, b"s" * 32)
            if signed
            else StoredSessions(self.clock)
        )
        self.scores = MemoryScores(sessions, Leaderboards())
        # StubTreq builds its methods at run time; mypy cannot see them.
        self.treq: Any = StubTreq(GameRoot(self.scores, relay=_Echo()))

    async def request(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, Any, bytes]:
        response = await self.settle(self.treq.request(method, BASE + path, data=body))
        return response.code, response.headers, await self.settle(response.content())

    async def settle(self, pending: "Deferred[Any]") -> Any:
        """
        The result of C{pending}; a store that answers later (Redis) needs
        StubTreq flushed once it has, which the memory store never does.
        """
        outcome: list[Any] = []
        pending.addBoth(outcome.append)
        while not outcome:
            self.treq.flush()
            await deferLater(reactor, 0.001, lambda: None)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    async def login(self, user: int) -> bytes:
        code, _, key = await self.request("GET", f"/{user}/login")
        assert code == 200, code
        return key

    async def post(self, level: Any, key: bytes | str, score: bytes) -> int:
        if isinstance(key, bytes):
            key = key.decode()
        code, _, _ = await self.request(
            "POST", f"/{level}/score?sessionkey={key}", score
        )
        return code

    async def list(self, level: Any) -> bytes:
        code, _, body = await self.request("GET", f"/{level}/highscorelist")
        assert code == 200, code
        return body


class _Echo(Resource):
    """
    A stand-in relay that answers with the method it got.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"relay " + bytes(request.method)


class ScoresTestCase(TestCase):
    """
    Contract tests of the scores API over the store that L{harness} builds:
    in memory here, Redis in the C{Redis*} subclasses below.
    """

    def harness(self, signed: bool = False) -> Harness:
        return Harness(signed)


class LoginTests(ScoresTestCase):
    """
    C{GET /<userid>/login}.
    """

    async def test_login(self) -> None:
        """Login answers 200 with a text/plain key of letters and digits."""
        h = self.harness()
        code, headers, body = await h.request("GET", "/4711/login")
        self.assertEqual(code, 200)
        self.assertTrue(KEY.fullmatch(body), body)
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
        )

    async def test_login_leading_zeros(self) -> None:
        """A user id with leading zeros is the same user: 007 is 7."""
        h = self.harness()
        key = await h.login("007")  # type: ignore[arg-type]
        self.assertEqual(await h.post(1, key, b"10"), 200)
        self.assertEqual(await h.list(1), b"7=10")

    async def test_login_new_key_each_time(self) -> None:
        """Logging in again issues a new key."""
        h = self.harness()
        self.assertNotEqual(await h.login(1), await h.login(1))

    async def test_login_invalid_user(self) -> None:
        """A malformed user id answers 400."""
        h = self.harness()
        for user in INVALID_IDS:
            code, _, _ = await h.request("GET", f"/{user}/login")
            self.assertEqual(code, 400, user)

    async def test_login_empty_user(self) -> None:
        """An empty user id segment answers 400."""
        h = self.harness()
        code, _, _ = await h.request("GET", "//login")
        self.assertEqual(code, 400)

    async def test_login_maximum_user(self) -> None:
        """User 2147483647 can log in."""
        h = self.harness()
        await h.login(2**31 - 1)


class ScoreTests(ScoresTestCase):
    """
    C{POST /<levelid>/score?sessionkey=<key>}.
    """

    async def test_post(self) -> None:
        """A score with a live key answers 200 with an empty body and is listed."""
        h = self.harness()
        key = await h.login(4711)
        code, _, body = await h.request(
            "POST", f"/2/score?sessionkey={key.decode()}", b"1500"
        )
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(await h.list(2), b"4711=1500")

    async def test_post_surrounding_whitespace(self) -> None:
        """A score body may carry a trailing newline or CRLF and spaces."""
        h = self.harness()
        key = await h.login(1)
        self.assertEqual(await h.post(1, key, b"10\n"), 200)
        self.assertEqual(await h.post(1, key, b" 20\r\n"), 200)
        self.assertEqual(await h.post(1, key, b"\t30 "), 200)
        self.assertEqual(await h.list(1), b"1=30")

    async def test_post_missing_key(self) -> None:
        """A post without a session key answers 401 and records nothing."""
        h = self.harness()
        code, _, _ = await h.request("POST", "/2/score", b"1500")
        self.assertEqual(code, 401)
        code, _, _ = await h.request("POST", "/2/score?sessionkey=", b"1500")
        self.assertEqual(code, 401)
        self.assertEqual(await h.list(2), b"")

    async def test_post_unknown_key(self) -> None:
        """A forged key answers 401 and records nothing."""
        h = self.harness()
        await h.login(1)
        for key in ("UICSNDK", "A" * 22, "%00", "x" * 5000):
            self.assertEqual(await h.post(2, key, b"1500"), 401)
        self.assertEqual(await h.list(2), b"")

    async def test_post_expired_key(self) -> None:
        """A key older than 600 s answers 401 and records nothing."""
        h = self.harness()
        key = await h.login(1)
        h.clock.advance(599.9)
        self.assertEqual(await h.post(2, key, b"10"), 200)
        h.clock.advance(0.1)
        self.assertEqual(await h.post(2, key, b"20"), 401)
        self.assertEqual(await h.list(2), b"1=10")

    async def test_post_revoked_key(self) -> None:
        """In stored mode a re-login revokes the old key: 401."""
        h = self.harness()
        old = await h.login(1)
        new = await h.login(1)
        self.assertEqual(await h.post(2, old, b"10"), 401)
        self.assertEqual(await h.post(2, new, b"10"), 200)

    async def test_post_signed_keys(self) -> None:
        """In signed mode both keys of a user stay valid; a forged one is 401."""
        h = self.harness(signed=True)
        old = await h.login(1)
        new = await h.login(1)
        self.assertEqual(await h.post(2, old, b"10"), 200)
        self.assertEqual(await h.post(2, new, b"20"), 200)
        forged = (b"1" if new[:1] != b"1" else b"2") + new[1:]
        self.assertEqual(await h.post(2, forged, b"30"), 401)
        self.assertEqual(await h.list(2), b"1=20")

    async def test_post_invalid_score(self) -> None:
        """An invalid score answers 400 and records nothing."""
        h = self.harness()
        key = await h.login(1)
        for score in INVALID_SCORES:
            self.assertEqual(await h.post(2, key, score), 400, score)
        self.assertEqual(await h.list(2), b"")

    async def test_post_invalid_level(self) -> None:
        """An invalid level answers 400 and records nothing."""
        h = self.harness()
        key = await h.login(1)
        for level in INVALID_IDS:
            self.assertEqual(await h.post(level, key, b"10"), 400, level)

    async def test_post_too_large(self) -> None:
        """A body over 1 KiB answers 413, records nothing, and serving goes on."""
        h = self.harness()
        key = await h.login(1)
        self.assertEqual(await h.post(2, key, b"0" * 1021 + b"1500"), 413)
        self.assertEqual(await h.post(2, key, b"0" * 1022 + b"15"), 200)
        self.assertEqual(await h.list(2), b"1=15")

    async def test_checks_input_before_key(self) -> None:
        """A bad score with a bad key is 400: input is checked before the key."""
        h = self.harness()
        self.assertEqual(await h.post(2, "nope", b"x"), 400)

    async def test_best_score_kept(self) -> None:
        """A lower later score changes nothing."""
        h = self.harness()
        key = await h.login(1)
        await h.post(2, key, b"100")
        await h.post(2, key, b"50")
        self.assertEqual(await h.list(2), b"1=100")

    async def test_form_content_type_body(self) -> None:
        """A body sent as a form (curl -d) is still read as the score."""
        h = self.harness()
        key = await h.login(1)
        response = await h.settle(
            h.treq.post(
                f"{BASE}/2/score?sessionkey={key.decode()}",
                data=b"77",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(await h.list(2), b"1=77")


class HighScoreListTests(ScoresTestCase):
    """
    C{GET /<levelid>/highscorelist}.
    """

    async def test_seed_example(self) -> None:
        """The seed's example session reads 4711=1500,131=1220."""
        h = self.harness()
        await h.post(2, await h.login(4711), b"1500")
        await h.post(2, await h.login(131), b"1220")
        code, headers, body = await h.request("GET", "/2/highscorelist")
        self.assertEqual((code, body), (200, b"4711=1500,131=1220"))
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
        )

    async def test_empty(self) -> None:
        """A level with no scores answers 200 with an empty body."""
        h = self.harness()
        code, _, body = await h.request("GET", "/99/highscorelist")
        self.assertEqual((code, body), (200, b""))

    async def test_fifteen_entries_ties_first(self) -> None:
        """At most 15 entries, and ties go to whoever reached the score first."""
        h = self.harness()
        for user in range(20):
            await h.post(3, await h.login(user), b"%d" % (100 if user % 2 else user))
        entries = (await h.list(3)).split(b",")
        self.assertEqual(len(entries), 15)
        self.assertEqual(entries[:3], [b"1=100", b"3=100", b"5=100"])

    async def test_invalid_level(self) -> None:
        """A malformed level id answers 400, not 404."""
        h = self.harness()
        for level in INVALID_IDS:
            code, _, _ = await h.request("GET", f"/{level}/highscorelist")
            self.assertEqual(code, 400, level)


class RoutingTests(TestCase):
    """
    Unknown paths, wrong methods and HEAD.
    """

    async def test_unknown_paths(self) -> None:
        """Unknown paths answer 404."""
        h = Harness()
        for path in (
            "/1",
            "/1/",
            "/1/unknown",
            "/1/login/x",
            "/1/2/login",
            "/abc/unknown",
            "/relay/x",
        ):
            code, _, _ = await h.request("GET", path)
            self.assertEqual(code, 404, path)

    async def test_wrong_method(self) -> None:
        """A known path with the wrong method answers 405 with an Allow header."""
        h = Harness()
        for method, path, allow in (
            ("POST", "/1/login", "GET, HEAD"),
            ("DELETE", "/1/login", "GET, HEAD"),
            ("GET", "/1/score", "POST"),
            ("PUT", "/1/score", "POST"),
            ("POST", "/1/highscorelist", "GET, HEAD"),
        ):
            code, headers, _ = await h.request(method, path)
            self.assertEqual(code, 405, (method, path))
            self.assertEqual(headers.getRawHeaders("allow"), [allow])

    async def test_head(self) -> None:
        """HEAD on a GET path answers its headers and Content-Length, no body."""
        h = Harness()
        await h.post(2, await h.login(4711), b"1500")
        code, headers, body = await h.request("HEAD", "/2/highscorelist")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers.getRawHeaders("content-length"), ["9"])

    async def test_relay_routes(self) -> None:
        """/relay and POST / go to the relay; other methods on / are 405."""
        h = Harness()
        code, _, body = await h.request("POST", "/relay", b"x")
        self.assertEqual((code, body), (200, b"relay POST"))
        code, _, body = await h.request("POST", "/", b"x")
        self.assertEqual((code, body), (200, b"relay POST"))
        code, headers, _ = await h.request("GET", "/")
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders("allow"), ["POST"])

    async def test_no_relay(self) -> None:
        """Without a relay, /relay and / answer 404."""
        h = Harness()
        h.treq = StubTreq(GameRoot(h.scores))
        for method, path in (("POST", "/relay"), ("POST", "/"), ("GET", "/")):
            code, _, _ = await h.request(method, path)
            self.assertEqual(code, 404)

    @settings(max_examples=300, deadline=None)
    @given(
        method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]),
        segments=st.lists(
            st.one_of(
                st.sampled_from(
                    ["login", "score", "highscorelist", "relay", "1", "007"]
                ),
                st.text(max_size=12),
            ),
            max_size=4,
        ),
        query=st.text(max_size=30),
        body=st.binary(max_size=1500),
    )
    def test_never_500(
        self, method: str, segments: list[str], query: str, body: bytes
    ) -> None:
        """No method, path, query or body produces a 5xx."""
        from urllib.parse import quote

        h = Harness()
        path = "/" + "/".join(quote(s, safe="") for s in segments)
        url = BASE + path + "?" + quote(query, safe="=&")
        codes: list[int] = []
        h.treq.request(method, url, data=body).addCallback(
            lambda r: codes.append(r.code)
        )
        h.treq.flush()
        self.assertEqual(len(codes), 1)
        self.assertLess(codes[0], 500)


class AsyncBackendTests(TestCase):
    """
    The web layer serves backends that answer later, as durable stores will.
    """

    async def answered_once_fired(
        self, outcome: Any, fire: Callable[[bytes], object]
    ) -> None:
        """
        Check that a list read whose store answers with C{outcome} gets its
        response only once C{fire} gives the body.
        """

        class Later(MemoryScores):
            def high_score_list(self, level: int) -> Any:
                return outcome

        h = Harness()
        stub: Any = StubTreq(GameRoot(Later(h.scores.sessions, h.scores.boards)))
        responses: list[Any] = []
        stub.get(BASE + "/1/highscorelist").addCallback(responses.append)
        stub.flush()
        self.assertEqual(responses, [])
        fire(b"1=2")
        stub.flush()
        self.assertEqual(responses[0].code, 200)
        self.assertEqual(await responses[0].content(), b"1=2")

    async def test_deferred_outcome(self) -> None:
        """A Deferred outcome is answered when it fires."""
        later: Deferred[bytes] = Deferred()
        await self.answered_once_fired(later, later.callback)

    async def test_pending_outcome(self) -> None:
        """A Pending outcome (the durable store's) is answered when it fires."""
        later: Pending[bytes] = Pending()
        await self.answered_once_fired(later, later.fire)

    async def test_failed_pending_outcome(self) -> None:
        """A failed Pending answers 503, with Retry-After 60 at a capacity bound."""
        outcomes: dict[int, Pending[bytes]] = {}

        class Failing(MemoryScores):
            def login(self, user: int) -> Any:
                outcomes[user] = Pending()
                return outcomes[user]

        h = Harness()
        stub: Any = StubTreq(GameRoot(Failing(h.scores.sessions, h.scores.boards)))
        responses: dict[int, Any] = {}
        for user in (1, 2):

            def answered(response: Any, user: int = user) -> None:
                responses[user] = response

            stub.get(BASE + f"/{user}/login").addCallback(answered)
        stub.flush()
        outcomes[1].fail(OSError("disk on fire"))
        outcomes[2].fail(CapacityError("10 live sessions"))
        stub.flush()
        self.assertEqual([responses[u].code for u in (1, 2)], [503, 503])
        self.assertEqual(
            [responses[u].headers.getRawHeaders(b"retry-after") for u in (1, 2)],
            [[b"1"], [b"60"]],
        )
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    async def test_failed_outcome(self) -> None:
        """A failed outcome (an unusable store) answers 503."""

        class Broken(MemoryScores):
            def login(self, user: int) -> Any:
                return fail(OSError("disk on fire"))

        h = Harness()
        stub: Any = StubTreq(GameRoot(Broken(h.scores.sessions, h.scores.boards)))
        response = await stub.get(BASE + "/1/login")
        self.assertEqual(response.code, 503)
        self.flushLoggedErrors(OSError)

    def test_client_gone_before_answer(self) -> None:
        """A late answer to a client that hung up is dropped, by both requests."""
        pending: list[Deferred[bytes]] = []

        class Later(MemoryScores):
            def high_score_list(self, level: int) -> Any:
                pending.append(Deferred())
                return pending[-1]

        h = Harness()
        root = GameRoot(Later(h.scores.sessions, h.scores.boards))
        # gameserver's own channel, which tells through Request.is_lost.
        factory = GameHTTPFactory(root, Clock())
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        pending[0].callback(b"1=2")
        self.assertEqual(transport.value(), b"")
        # twisted.web's Request, which tells through notifyFinish.
        request: Any = DummyRequest([b"1", b"highscorelist"])
        request.prepath, request.postpath = [b"1"], [b"highscorelist"]
        self.assertEqual(root.getChild(b"1", request).render(request), NOT_DONE_YET)
        request.processingFailed(Failure(ConnectionDone()))
        pending[1].callback(b"1=2")
        self.assertEqual(request.written, [])
        self.assertEqual(request.finished, 0)


class RedisScoresTestCase(ScoresTestCase):
    """
    The same contract tests over L{gameserver.redis_scores.RedisScores} on a
    private C{redis-server}.
    """

    skip = SKIP_REASON
    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        self.redis = started_redis(self)
        self.connection = await connected(self, self.redis.url)

    def harness(self, signed: bool = False, ttl: float = 600.0) -> Harness:
        h = Harness(signed)
        sessions = h.scores.sessions
        h.scores = RedisScores(  # type: ignore[assignment]
            self.connection,
            ttl,
            sessions if isinstance(sessions, SignedSessions) else None,
        )
        h.treq = StubTreq(GameRoot(h.scores, relay=_Echo()))
        return h


class RedisLoginTests(RedisScoresTestCase, LoginTests):
    """
    L{LoginTests} on Redis.
    """


class RedisScoreTests(RedisScoresTestCase, ScoreTests):
    """
    L{ScoreTests} on Redis.
    """

    async def test_post_expired_key(self) -> None:
        """A key older than the TTL answers 401 and records nothing (Redis expiry)."""
        h = self.harness(ttl=0.3)
        key = await h.login(1)
        self.assertEqual(await h.post(2, key, b"10"), 200)
        await deferLater(reactor, 0.4, lambda: None)
        self.assertEqual(await h.post(2, key, b"20"), 401)
        self.assertEqual(await h.list(2), b"1=10")
        self.assertEqual(self.redis.keys(), [b"gs:{lvl:2}"])


class RedisHighScoreListTests(RedisScoresTestCase, HighScoreListTests):
    """
    L{HighScoreListTests} on Redis.
    """
