"""
Several real gameserver processes on one private C{redis-server}: every
request goes to a random instance and the scores contract holds; Redis
stopped under load gives C{503} with C{Retry-After}, and service resumes by
itself when it is back.
"""

import os
import random
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.redis_support import SKIP_REASON, RedisServer, started_redis, wait_until
from tests.support import ServerProcess, plugin_args

INSTANCES = 3


class Cluster:
    """
    C{INSTANCES} gameserver processes sharing one Redis, and an HTTP client
    that sends each request to a random one of them.
    """

    def __init__(self, test: TestCase, redis: RedisServer, seed: int = 0) -> None:
        self.test = test
        self.redis = redis
        self.servers: list[ServerProcess] = []
        self.random = random.Random(seed)
        pool = HTTPConnectionPool(reactor, persistent=True)
        test.addCleanup(pool.closeCachedConnections)
        self.http: Any = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def start(self, *options: str, count: int = INSTANCES) -> None:
        """
        Start C{count} instances with C{--redis} and C{options}.
        """
        args = plugin_args("--redis", self.redis.url, *options)
        servers = [ServerProcess(args) for _ in range(count)]
        for server in servers:
            self.test.addCleanup(server.stop)
        await DeferredList(
            [ensureDeferred(s.start()) for s in servers], fireOnOneErrback=True
        )
        self.servers = servers

    def url(self) -> str:
        """
        The base URL of a random instance.
        """
        return self.random.choice(self.servers).url

    async def get(self, path: str) -> tuple[int, Any, bytes]:
        response = await self.http.get(self.url() + path)
        return response.code, response.headers, await response.content()

    async def post(self, path: str, body: bytes) -> tuple[int, Any, bytes]:
        response = await self.http.post(self.url() + path, data=body)
        return response.code, response.headers, await response.content()

    async def login(self, user: int) -> str:
        code, _, key = await self.get(f"/{user}/login")
        assert code == 200, code
        return key.decode()

    async def score(self, level: int, key: str, score: int | bytes) -> int:
        body = score if isinstance(score, bytes) else b"%d" % score
        code, _, _ = await self.post(f"/{level}/score?sessionkey={key}", body)
        return code

    async def list(self, level: int) -> bytes:
        code, _, body = await self.get(f"/{level}/highscorelist")
        assert code == 200, code
        return body


class MultiInstanceTests(TestCase):
    """
    Three instances on one Redis serve one game.
    """

    skip = SKIP_REASON
    timeout = 120

    async def test_scores_contract(self) -> None:
        """Keys, posts and lists hold whichever instance serves each request."""
        cluster = Cluster(self, started_redis(self))
        await cluster.start("--session-ttl", "3")
        # The seed's example, each request on a random instance.
        await cluster.score(2, await cluster.login(4711), 1500)
        await cluster.score(2, await cluster.login(131), b"1220\n")
        for _ in range(INSTANCES * 2):
            self.assertEqual(await cluster.list(2), b"4711=1500,131=1220")
        # A key works everywhere, and only the best score counts.
        key = await cluster.login(7)
        for score in (10, 30, 20):
            self.assertEqual(await cluster.score(5, key, score), 200)
        self.assertEqual(await cluster.list(5), b"7=30")
        # A new login revokes the old key on every instance.
        new = await cluster.login(7)
        for _ in range(INSTANCES * 2):
            self.assertEqual(await cluster.score(5, key, 99), 401)
        self.assertEqual(await cluster.score(5, new, 40), 200)
        # Ties go to whoever reached the score first, across instances; 15 kept.
        for user in range(20):
            await cluster.score(
                3, await cluster.login(100 + user), 100 if user % 2 else user
            )
        entries = (await cluster.list(3)).split(b",")
        self.assertEqual(len(entries), 15)
        self.assertEqual(entries[:3], [b"101=100", b"103=100", b"105=100"])
        # Bad input and unknown keys, whatever the instance.
        self.assertEqual((await cluster.get("/abc/login"))[0], 400)
        self.assertEqual(await cluster.score(1, "x" * 27, 5), 401)
        self.assertEqual(await cluster.score(1, new, b"1.5"), 400)
        self.assertEqual(
            (await cluster.post("/1/score?sessionkey=" + new, b"1" * 2000))[0], 413
        )
        self.assertEqual(await cluster.list(99), b"")
        # Keys expire (--session-ttl 3) for all, and leave nothing behind.
        await deferLater(reactor, 3.2, lambda: None)
        self.assertEqual(await cluster.score(5, new, 50), 401)
        stored = cluster.redis.keys()
        self.assertEqual([k for k in stored if not k.startswith(b"gs:{lvl:")], [])

    async def test_signed_sessions(self) -> None:
        """Signed keys (one shared secret) work on every instance; lists are shared."""
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("multi-instance-secret-0123456789\n")
        cluster = Cluster(self, started_redis(self), seed=3)
        await cluster.start("--sessions", "signed", "--secret-file", secret)
        old, new = await cluster.login(4), await cluster.login(4)
        for _ in range(INSTANCES * 2):
            self.assertEqual(await cluster.score(6, old, 1), 200)
        self.assertEqual(await cluster.score(6, new, 2), 200)
        self.assertEqual(await cluster.score(6, "A" * len(new), 3), 401)
        self.assertEqual(await cluster.list(6), b"4=2")
        self.assertEqual(cluster.redis.keys(), [b"gs:{lvl:6}"])

    async def test_concurrent_posts(self) -> None:
        """Concurrent posts through all instances keep each user's best score."""
        cluster = Cluster(self, started_redis(self), seed=1)
        await cluster.start()
        rng = random.Random(2)
        users = list(range(30))
        keys = {user: await cluster.login(user) for user in users}
        posts = [(rng.choice(users), rng.randrange(1000)) for _ in range(300)]
        best: dict[int, int] = {}
        for user, score in posts:
            best[user] = max(best.get(user, -1), score)
        codes = await DeferredList(
            [
                ensureDeferred(cluster.score(8, keys[user], score))
                for user, score in posts
            ]
        )
        self.assertEqual({code for _, code in codes}, {200})
        listed = [entry.split(b"=") for entry in (await cluster.list(8)).split(b",")]
        scores = [(int(u), int(s)) for u, s in listed]
        expected = sorted(best.values(), reverse=True)[:15]
        self.assertEqual([s for _, s in scores], expected)
        for user, score in scores:
            self.assertEqual(best[user], score)


class FaultTests(TestCase):
    """
    Redis going away under load and coming back.
    """

    skip = SKIP_REASON
    timeout = 120

    async def test_redis_outage(self) -> None:
        """Redis down: 503 with Retry-After, no crash; back up: served again."""
        redis = started_redis(self)
        cluster = Cluster(self, redis)
        await cluster.start("--redis-timeout", "0.5", count=2)
        key = await cluster.login(1)
        self.assertEqual(await cluster.score(1, key, 10), 200)

        codes: list[int] = []
        retry_after: set[str] = set()
        stop = [False]

        async def load() -> None:
            for _ in range(5000):  # bounded; stopped by the flag long before
                if stop[0]:
                    return
                code, headers, _ = await cluster.get("/1/highscorelist")
                codes.append(code)
                if code == 503:
                    retry_after.update(headers.getRawHeaders("retry-after", []))
                    await deferLater(reactor, 0.01, lambda: None)

        loaders = [ensureDeferred(load()) for _ in range(4)]
        try:
            await wait_until(lambda: len(codes) > 20)
            redis.stop()
            await wait_until(lambda: codes.count(503) > 20)
            self.assertEqual((await cluster.get("/healthz"))[0], 503)
            self.assertEqual(await cluster.score(1, key, 20), 503)
            self.assertEqual((await cluster.get("/2/login"))[0], 503)
            redis.start()  # empty: no persistence in the tests
            seen = len(codes)
            await wait_until(lambda: codes[seen:].count(200) > 20, 20.0)
        finally:
            stop[0] = True
            await DeferredList(loaders)
        self.assertEqual(set(codes), {200, 503})
        self.assertEqual(retry_after, {"1"})
        for server in cluster.servers:  # each reconnects by itself, in time
            for _ in range(100):
                if (await cluster.http.get(server.url + "/healthz")).code == 200:
                    break
                await deferLater(reactor, 0.1, lambda: None)
            else:
                self.fail(f"{server.url} did not recover")
        key = await cluster.login(1)
        self.assertEqual(await cluster.score(1, key, 30), 200)
        self.assertEqual(await cluster.list(1), b"1=30")
        for server in cluster.servers:
            self.assertTrue(server.running)  # no crash
            self.assertNotIn("Traceback", server.output)
