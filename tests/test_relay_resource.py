"""
Tests for L{gameserver.relay_resource}: every status code and body of the relay
over HTTP, through C{treq.testing.StubTreq}, for the in-memory relay and (the
C{Redis*} subclasses) the relay in Redis.
"""

import re
from io import BytesIO
from typing import Any, NoReturn

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from gameserver.redis_relay import RedisRelay
from gameserver.relay import Relay, RelayConfig, held_size
from gameserver.relay_resource import RelayBackend, RelayResource
from tests.redis_relay_support import redis_relay
from tests.redis_support import SKIP_REASON, started_redis

URL = "http://gameserver.test/relay"


def dummy_post(body: bytes | None, **headers: bytes) -> Any:
    """
    A bare POST request for the resource, with only the given headers.
    """
    request: Any = DummyRequest([b""])
    request.method = b"POST"
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
    request.content = None if body is None else BytesIO(body)
    return request


class WebHarness:
    """
    A relay resource reachable through StubTreq.
    """

    def __init__(self, relay: RelayBackend, max_body: int = 16384) -> None:
        self.relay: Any = relay
        self.resource = RelayResource(relay, max_body=max_body)
        self.treq: Any = StubTreq(self.resource)

    async def settled(self, d: "Deferred[Any]") -> Any:
        """
        C{d}'s result; a relay that answers later (Redis) needs StubTreq's
        in-memory connections flushed until it has.
        """
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        while not outcome:
            await deferLater(reactor, 0.001, self.treq.flush)
        return await succeed(None).addCallback(lambda _: outcome[0])

    async def request(
        self, method: str, body: bytes | None = None, **kwargs: Any
    ) -> tuple[int, Any, bytes]:
        response = await self.settled(
            self.treq.request(method, URL, data=body, **kwargs)
        )
        return response.code, response.headers, await self.settled(response.content())

    async def players(self) -> int:
        """
        The relay's count of registered players.
        """
        if isinstance(self.relay, RedisRelay):
            return (await self.relay.refresh_counts()).players
        players: int = self.relay.players
        return players

    async def post(self, body: bytes) -> tuple[int, bytes]:
        code, _, content = await self.request("POST", body)
        return code, content

    async def key(self, name: bytes) -> bytes:
        code, body = await self.post(b"0," + name + b",*,*,*")
        assert code == 200, (code, body)
        return body[len(b"0/0/") :]


class InMemory:
    """
    Tests mixed with this serve the in-memory relay.
    """

    async def harness(self, max_body: int = 16384, **config: Any) -> WebHarness:
        return WebHarness(Relay(Clock(), RelayConfig(**config)), max_body)


class InRedis:
    """
    Tests mixed with this serve the relay in a private C{redis-server}.
    """

    skip = SKIP_REASON
    timeout = 30

    async def harness(self, max_body: int = 16384, **config: Any) -> WebHarness:
        redis = getattr(self, "redis", None)
        if redis is None:
            redis = self.redis = started_redis(self)
        return WebHarness(await redis_relay(self, redis, **config), max_body)


class PostTests(InMemory, TestCase):
    """
    C{POST /relay}: 200, 400 and 413.
    """

    async def test_success_200_text_plain(self) -> None:
        """A success reply is 200, text/plain, body 0/<code>/<payload>."""
        h = await self.harness()
        code, headers, body = await h.request("POST", b"0,alice,*,*,*")
        self.assertEqual(code, 200)
        self.assertTrue(re.fullmatch(rb"0/0/[A-Za-z0-9]{22}", body), body)
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
        )

    async def test_full_game_200(self) -> None:
        """A whole game through HTTP: every success reply is 200."""
        h = await self.harness()
        alice, bob = await h.key(b"alice"), await h.key(b"bob")
        self.assertEqual(await h.post(b"2,*," + bob + b",*,*"), (200, b"0/3/alice"))
        self.assertEqual(await h.post(b"2,*," + alice + b",*,*"), (200, b"0/4/bob"))
        self.assertEqual(await h.post(b"3,*," + bob + b",*,*"), (200, b"0/5/"))
        self.assertEqual(await h.post(b"3,*," + alice + b",*,*"), (200, b"0/6/"))
        self.assertEqual(await h.post(b"4,*," + alice + b",*,*"), (200, b"0/7/*"))
        _, start_bob = await h.post(b"4,*," + bob + b",*,*")
        _, start_alice = await h.post(b"4,*," + alice + b",*,*")
        game_bob = start_bob[4:].split(b"|")[0]
        game_alice = start_alice[4:].split(b"|")[0]
        self.assertTrue(start_bob.endswith(b"|0") and start_alice.endswith(b"|1"))
        self.assertEqual(
            await h.post(b"6,x,1|y," + game_bob + b",0,0"), (200, b"0/10/*")
        )
        self.assertEqual(
            await h.post(b"5,bye," + game_alice + b",1,0"), (200, b"0/9/x,1|y")
        )
        self.assertEqual(await h.post(b"6,z," + game_bob + b",0,1"), (200, b"0/9/bye"))
        self.assertEqual(await h.post(b"6,z," + game_bob + b",0,2"), (400, b"15/*/*"))

    async def test_errors_400(self) -> None:
        """Every protocol error is 400 with the spec's body."""
        h = await self.harness(max_players=1)
        key = await h.key(b"alice")
        cases = [
            (b"0,x,*", b"4/0/*"),
            (b"8,x,*,*,*", b"4/0/*"),
            (b"6,x,GK,2,0", b"4/1/*"),
            (b"6,x,GK,0,-1", b"4/2/*"),
            (b"0,x,15,*,*", b"4/3/*"),
            (b"0,\xff,*,*,*", b"2/*/*"),
            (b"2,*,nokey,*,*", b"5/*/*"),
            (b"0,bob,*,*,*", b"11/*/*"),
            (b"6,x,nokey,0,0", b"13/*/*"),
            (b"4,*," + key + b",*,*", b"10/*/*"),
        ]
        for request, expected in cases:
            self.assertEqual(await h.post(request), (400, expected), request)

    async def test_game_errors_400(self) -> None:
        """The game errors 18, 19 and 21 are 400 too."""
        h = await self.harness(max_cache=4)
        game = await self._game(h)
        (a, seat_a), (b, seat_b) = game
        self.assertEqual(await h.post(b"6,x,%s,%s,5" % (a, seat_a)), (400, b"19/*/*"))
        await h.post(b"6,abcd,%s,%s,0" % (a, seat_a))
        self.assertEqual(await h.post(b"6,,%s,%s,0" % (b, seat_b)), (200, b"0/9/abcd"))
        await h.post(b"6,efgh,%s,%s,1" % (a, seat_a))
        self.assertEqual(await h.post(b"6,,%s,%s,0" % (b, seat_b)), (400, b"21/*/abcd"))
        self.assertEqual(await h.post(b"6,x,%s,%s,0" % (a, seat_a)), (400, b"18/*/*"))

    async def test_partner_drop_errors_400(self) -> None:
        """9/2/* and 17/*/* are 400."""
        h = await self.harness()
        alice, bob = await h.key(b"alice"), await h.key(b"bob")
        await h.post(b"2,*," + bob + b",*,*")
        await h.post(b"1,*," + alice + b",*,*")
        self.assertEqual(await h.post(b"2,*," + bob + b",*,*"), (400, b"9/2/*"))
        _, body = await h.post(b"0,carol,*,dave,*")
        carol = body[4:]
        _, body = await h.post(b"0,dave,*,carol,*")
        dave = body[4:]
        await h.post(b"2,*," + carol + b",*,*")
        await h.post(b"1,*," + dave + b",*,*")
        self.assertEqual(await h.post(b"2,*," + carol + b",*,*"), (400, b"17/*/*"))

    async def test_no_room_for_game_12(self) -> None:
        """12/*/* is 400."""
        h = await self.harness(max_games=1)
        await self._game(h)
        alice, bob = await h.key(b"alice"), await h.key(b"bob")
        for body in (b"2,*," + bob, b"3,*," + bob, b"3,*," + alice, b"4,*," + alice):
            await h.post(body + b",*,*")
        self.assertEqual(await h.post(b"4,*," + bob + b",*,*"), (400, b"12/*/*"))

    async def test_over_max_body_413(self) -> None:
        """A body over max_body is 413 with 20/*/*; exactly max_body is fine."""
        h = await self.harness(max_body=32)
        body = b"0," + b"n" * 24 + b",*,*,*"
        self.assertEqual(len(body), 32)
        code, _ = await h.post(body)
        self.assertEqual(code, 200)
        self.assertEqual(await h.post(body + b"x"), (413, b"20/*/*"))

    async def test_over_default_max_body_413(self) -> None:
        """The default limit is 16384 bytes."""
        h = await self.harness()
        body = b"0," + b"n" * 16376 + b",*,*,*"
        self.assertEqual(len(body), 16384)
        self.assertEqual((await h.post(body))[0], 200)
        self.assertEqual(await h.post(body + b"x"), (413, b"20/*/*"))

    async def test_post_to_subpath(self) -> None:
        """The resource is a leaf: a client's path suffix does not matter."""
        h = await self.harness()
        response = await h.settled(h.treq.post(URL + "/anything", data=b"0,a,*,*,*"))
        self.assertEqual(response.code, 200)

    async def test_domain_failure_is_400_not_500(self) -> None:
        """A failure inside the relay is logged and answered 400 10/*/*."""
        h = await self.harness()

        def broken(request: object) -> NoReturn:
            raise RuntimeError("bug")

        h.relay.handle = broken
        self.assertEqual(await h.post(b"0,alice,*,*,*"), (400, b"10/*/*"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def _game(self, h: WebHarness) -> tuple[tuple[bytes, bytes], ...]:
        return await start_game(h)


async def start_game(h: WebHarness) -> tuple[tuple[bytes, bytes], ...]:
    """
    Start a game of C{p} and C{q}: each side's game key and seat.
    """
    alice, bob = await h.key(b"p"), await h.key(b"q")
    for body in (b"2,*," + bob, b"3,*," + bob, b"3,*," + alice, b"4,*," + alice):
        await h.post(body + b",*,*")
    _, start_bob = await h.post(b"4,*," + bob + b",*,*")
    _, start_alice = await h.post(b"4,*," + alice + b",*,*")
    a_key, a_seat = start_alice[4:].split(b"|")
    b_key, b_seat = start_bob[4:].split(b"|")
    return (a_key, a_seat), (b_key, b_seat)


class DataBudgetTests(InMemory, TestCase):
    """
    The in-memory relay's data budget over HTTP (the Redis relay has none).
    """

    async def test_over_budget_503_retry_after(self) -> None:
        """An update past max_data is 503 with Retry-After and 22/*/*; once
        there is room, the same request is 200."""
        h = await self.harness(max_data=held_size("abcd"))
        (a, seat_a), (b, seat_b) = await start_game(h)
        first = b"6,abcd,%s,%s,0" % (a, seat_a)
        self.assertEqual(await h.post(first), (200, b"0/10/*"))
        again = b"6,efgh,%s,%s,1" % (a, seat_a)
        code, headers, body = await h.request("POST", again)
        self.assertEqual((code, body), (503, b"22/*/*"))
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
        )
        # The partner's quit frees all it held: the same request is served.
        self.assertEqual(await h.post(b"5,,%s,%s,0" % (b, seat_b)), (200, b"0/9/abcd"))
        self.assertEqual(await h.post(again), (200, b"0/9/"))


class RenderTests(TestCase):
    """
    Rendering the in-memory relay: a plain body at once, never a Deferred.
    """

    async def test_missing_length_1(self) -> None:
        """A POST with no Content-Length and no chunked body is 1/*/*."""
        resource = RelayResource(Relay(Clock()))
        request = dummy_post(b"0,alice,*,*,*")
        self.assertEqual(resource.render(request), b"1/*/*")
        self.assertEqual(request.responseCode, 400)

    async def test_no_content_1(self) -> None:
        """A POST whose channel gave no body at all is 1/*/*."""
        resource = RelayResource(Relay(Clock()))
        request = dummy_post(None, content_length=b"13")
        self.assertEqual(resource.render(request), b"1/*/*")
        self.assertEqual(request.responseCode, 400)

    async def test_chunked_body_accepted(self) -> None:
        """A chunked body (no Content-Length) is read like any other."""
        resource = RelayResource(Relay(Clock()), max_body=16)
        request = dummy_post(b"0,alice,*,*,*", transfer_encoding=b"chunked")
        body = resource.render(request)
        # The in-memory relay answers at once: bytes, never NOT_DONE_YET.
        assert isinstance(body, bytes)
        self.assertTrue(body.startswith(b"0/0/"))
        request.content = BytesIO(b"0,alice-is-long,*,*,*")
        self.assertEqual(resource.render(request), b"20/*/*")
        self.assertEqual(request.responseCode, 413)

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=40))
    def test_never_500(self, body: bytes) -> None:
        """No body makes the relay answer anything but 200, 400 or 413."""
        h = WebHarness(Relay(Clock()))
        request = dummy_post(body, content_length=b"%d" % len(body))
        out = h.resource.render(request)
        self.assertIsInstance(out, bytes)
        self.assertIn(request.responseCode or 200, (200, 400))


class OtherMethodTests(InMemory, TestCase):
    """
    C{GET /relay} and the methods the relay does not serve.
    """

    async def test_get_seconds_of_last_post(self) -> None:
        """GET answers the seconds the last POST took, a plain decimal number."""
        h = await self.harness()
        code, headers, body = await h.request("GET")
        self.assertEqual((code, body), (200, b"0.000000000"))
        await h.post(b"0,alice,*,*,*")
        code, headers, body = await h.request("GET")
        self.assertEqual(code, 200)
        self.assertTrue(re.fullmatch(rb"\d+\.\d{9}", body), body)
        self.assertGreater(float(body), 0.0)
        self.assertEqual(float(body), round(h.relay.last_request_seconds, 9))
        self.assertEqual(
            headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
        )

    async def test_get_after_error_post(self) -> None:
        """An erroneous POST is timed too."""
        h = await self.harness()
        await h.post(b"junk")
        self.assertGreater(h.relay.last_request_seconds, 0.0)

    async def test_head(self) -> None:
        """HEAD answers GET's headers, no body."""
        h = await self.harness()
        code, headers, body = await h.request("HEAD")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers.getRawHeaders("content-length"), ["11"])

    async def test_other_methods_405(self) -> None:
        """PUT, DELETE, PATCH and OPTIONS are 405 with an Allow header."""
        h = await self.harness()
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            code, headers, _ = await h.request(method, b"0,a,*,*,*")
            self.assertEqual(code, 405, method)
            self.assertEqual(headers.getRawHeaders("allow"), ["GET, HEAD, POST"])
            self.assertEqual(
                headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"]
            )
        self.assertEqual(await h.players(), 0)


class RedisPostTests(InRedis, PostTests):
    """
    C{POST /relay} with the relay in Redis: the same contract, and 503 with
    Retry-After when Redis cannot answer.
    """

    async def test_redis_down_503(self) -> None:
        """With Redis unreachable a relay POST gets 503 with Retry-After; once
        Redis is back the relay serves again by itself."""
        h = await self.harness()
        self.redis.stop()
        for _ in range(100):  # until the connection notices
            code, headers, _ = await h.request("POST", b"0,alice,*,*,*")
            if code == 503:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(code, 503)
        self.assertEqual(headers.getRawHeaders("retry-after"), ["1"])
        self.assertGreater(h.relay.last_request_seconds, 0.0)
        # Redis comes back (empty, scripts not loaded): the relay serves again.
        self.redis.start()
        for _ in range(300):
            code, _, body = await h.request("POST", b"0,alice,*,*,*")
            if code == 200:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(body.startswith(b"0/0/"), (code, body))

    async def test_render_not_done_yet(self) -> None:
        """A relay answering a Deferred renders NOT_DONE_YET, then the reply."""
        h = await self.harness()
        request = dummy_post(b"0,alice,*,*,*", content_length=b"13")
        self.assertEqual(h.resource.render(request), NOT_DONE_YET)
        await h.settled(request.notifyFinish())
        body: bytes = b"".join(request.written)
        self.assertTrue(body.startswith(b"0/0/"), body)


class RedisOtherMethodTests(InRedis, OtherMethodTests):
    """
    C{GET /relay} and other methods with the relay in Redis.
    """
