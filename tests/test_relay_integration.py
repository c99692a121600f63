"""
Integration tests of the relay: complete games over real HTTP against the real
twistd plugin on 127.0.0.1, as the seed turn server's clients play them.
"""

import random
from collections.abc import Coroutine, Sequence
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.redis_support import SKIP_REASON, started_redis
from tests.support import ServerProcess, plugin_args

POLL = 0.02
MAX_POLLS = 500


async def together(coroutines: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """
    Run coroutines concurrently and return their results in order.
    """
    return await gatherResults(
        [Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True
    )


class RelayClient:
    """
    One player speaking the relay protocol as the seed's clients do; given
    several URLs (instances), it sends each request to a random one.
    """

    def __init__(
        self, http: Any, url: str | Sequence[str], name: str, wanted: str = "*"
    ) -> None:
        self.http = http
        self.urls = [url] if isinstance(url, str) else list(url)
        self._pick = random.Random(name)
        self.name = name
        self.wanted = wanted
        self.key = ""
        self.partner = ""
        self.seat = ""
        self.counter = 0
        self.received: list[str] = []

    async def send(self, body: str) -> tuple[int, str]:
        url = self._pick.choice(self.urls)
        response = await self.http.post(url, data=body.encode())
        return response.code, (await response.content()).decode()

    async def register(self) -> None:
        code, reply = await self.send(f"0,{self.name},*,{self.wanted},*")
        assert code == 200 and reply.startswith("0/0/"), (code, reply)
        self.key = reply[4:]

    async def pair(self, polls: int = MAX_POLLS) -> bool:
        """
        Ask for a partner until there is one; return whether there was.
        """
        for _ in range(polls):
            code, reply = await self.send(f"2,*,{self.key},*,*")
            assert code == 200, (code, reply)
            if reply.startswith(("0/3/", "0/4/")):
                self.partner = reply[4:]
                return True
            assert reply == "0/2/*", reply
            await deferLater(reactor, POLL, lambda: None)
        return False

    async def start(self) -> None:
        code, reply = await self.send(f"3,*,{self.key},*,*")
        assert reply in ("0/5/", "0/6/"), (code, reply)
        for _ in range(MAX_POLLS):
            code, reply = await self.send(f"4,*,{self.key},*,*")
            assert code == 200, (code, reply)
            if reply.startswith("0/8/"):
                self.key, self.seat = reply[4:].split("|")
                return
            assert reply == "0/7/*", reply
            await deferLater(reactor, POLL, lambda: None)
        raise AssertionError(f"{self.name} never started")

    def _take(self, reply: str) -> None:
        data = reply.split("/", 2)[2]
        if data != "*":
            self.received.extend(data.split("|"))

    async def update(self, data: str, symbol: int = 6, lose: bool = False) -> str:
        """
        Send one update; with C{lose}, drop the reply and send it again.
        """
        body = f"{symbol},{data},{self.key},{self.seat},{self.counter}"
        code, reply = await self.send(body)
        if lose and code == 200:
            lost = reply
            code, reply = await self.send(body)
            # The repeat answers the lost reply's data plus anything new; a
            # lost "nothing" with nothing new is answered as it was.
            lost_data = lost.split("/", 2)[2]
            if lost_data == "*" and reply == lost:
                pass
            else:
                assert code == 200 and reply.startswith("0/11/"), (lost, reply)
                if lost_data != "*":
                    assert reply[5:].startswith(lost_data), (lost, reply)
        if code == 200:
            assert reply.startswith(("0/9/", "0/10/", "0/11/")), reply
            self._take(reply)
            self.counter += 1
        return reply


class RelayGamesTests(TestCase):
    """
    Complete games over HTTP, several at once.
    """

    timeout = 60

    def setUp(self) -> None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 32
        self.addCleanup(pool.closeCachedConnections)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    def assert_all_gone(self) -> None:
        """
        Check that a shared store (Redis) holds nothing once every game has
        ended; the in-memory relay's state ends with its process.
        """

    async def serve(self) -> None:
        """
        Start the server; C{self.url} is its relay, C{self.urls} every
        instance's relay (one here).
        """
        self.server = await self.start_server()
        self.url = self.server.url + "/relay"
        self.urls = [self.url]

    async def start_server(self, *options: str) -> ServerProcess:
        server = ServerProcess(plugin_args(*options))
        await server.start()
        self.addCleanup(server.stop)
        return server

    async def play(
        self, a: RelayClient, b: RelayClient, rounds: int, rng: random.Random
    ) -> None:
        """
        Both sides exchange C{rounds} updates (data with commas), then A quits.
        """

        async def side(me: RelayClient) -> None:
            for i in range(rounds):
                await me.update(f"{me.name},move,{i}", lose=rng.random() < 0.2)
                await deferLater(reactor, rng.random() * POLL, lambda: None)

        await together([side(a), side(b)])
        await a.update(f"{a.name},bye", symbol=5)
        # B collects whatever is still queued, then learns that A left.
        for _ in range(MAX_POLLS):
            reply = await b.update(f"{b.name},after")
            if reply == "15/*/*":
                break
        else:
            raise AssertionError("B never learned that A left")

    def check_delivery(
        self, me: RelayClient, partner: RelayClient, rounds: int
    ) -> None:
        moves = [f"{partner.name},move,{i}" for i in range(rounds)]
        got = [d for d in me.received if ",move," in d]
        self.assertEqual(got, moves, f"{me.name} got {me.received}")

    async def test_full_games_at_once(self) -> None:
        """Eight players pair at random and play four games at once; every move
        arrives once, in order, at the right partner, even when replies are lost."""
        await self.serve()
        rng = random.Random(4711)
        players = [RelayClient(self.http, self.urls, f"p{i}") for i in range(8)]
        await together([p.register() for p in players])
        self.assertEqual(await together([p.pair() for p in players]), [True] * 8)
        by_name = {p.name: p for p in players}
        for p in players:
            self.assertEqual(by_name[p.partner].partner, p.name)
        await together([p.start() for p in players])
        games = {tuple(sorted((p.name, p.partner))) for p in players}
        self.assertEqual(len(games), 4)
        rounds = 12
        await together(
            [self.play(by_name[a], by_name[b], rounds, rng) for a, b in games]
        )
        for a, b in games:
            self.check_delivery(by_name[a], by_name[b], rounds)
            self.check_delivery(by_name[b], by_name[a], rounds)
            self.assertIn(f"{a},bye", by_name[b].received)
        self.assert_all_gone()

    async def test_named_pairing(self) -> None:
        """Two players who name each other are paired with each other only."""
        await self.serve()
        alice = RelayClient(self.http, self.urls, "alice", wanted="bob")
        carol = RelayClient(self.http, self.urls, "carol")
        bob = RelayClient(self.http, self.urls, "bob", wanted="alice")
        for p in (alice, carol, bob):
            await p.register()
        self.assertEqual(await together([alice.pair(), bob.pair()]), [True] * 2)
        self.assertEqual((alice.partner, bob.partner), ("bob", "alice"))
        code, reply = await carol.send(f"2,*,{carol.key},*,*")
        self.assertEqual((code, reply), (200, "0/2/*"))

    async def test_root_post_is_relay(self) -> None:
        """A client configured with the bare server address is served at /."""
        await self.serve()
        client = RelayClient(self.http, self.server.url + "/", "root")
        await client.register()
        self.assertTrue(client.key.isalnum() and len(client.key) >= 16)

    async def test_get_relay_timing(self) -> None:
        """GET /relay answers the seconds the last relay POST took."""
        await self.serve()
        client = RelayClient(self.http, self.urls, "timer")
        await client.register()
        response = await self.http.get(self.url)
        self.assertEqual(response.code, 200)
        self.assertGreaterEqual(float((await response.content()).decode()), 0.0)

    async def test_seed_stress_client(self) -> None:
        """Players that behave like the seed's stress client (register, pair,
        init, ready, update; count up on 0/9/ and 0/10/; register again on any
        error) all reach their games and play without errors."""
        await self.serve()
        rng = random.Random(131)
        updates = {"ok": 0, "errors": 0}

        async def seed_player(name: str) -> None:
            client = RelayClient(self.http, self.urls, name)
            while updates["ok"] < 400:
                await client.register()
                if not await client.pair(polls=50):
                    continue  # nobody free: register again, as the seed does
                await client.start()
                client.counter = 0
                for i in range(rng.randrange(5, 15)):
                    reply = await client.update(f"{name}:{i}")
                    if reply.startswith(("0/9/", "0/10/")):
                        updates["ok"] += 1
                    else:
                        updates["errors"] += 1
                        break  # any error: register again
                    await deferLater(reactor, 0.2 * rng.random(), lambda: None)
                else:
                    await client.update(f"{name}:bye", symbol=5)

        await together([seed_player(f"s{i}") for i in range(10)])
        self.assertGreaterEqual(updates["ok"], 400)
        # Only a partner's quit interrupts a game ("15/*/*"), never a server fault.
        self.assertLessEqual(updates["errors"], updates["ok"] // 5 + 10)


class RedisRelayGamesTests(RelayGamesTests):
    """
    The same games with the relay in Redis (C{--redis}), one instance.
    """

    skip = SKIP_REASON
    instances = 1

    async def serve(self) -> None:
        redis = started_redis(self)
        servers = [
            await self.start_server("--redis", redis.url) for _ in range(self.instances)
        ]
        self.server = servers[0]
        self.url = self.server.url + "/relay"
        self.urls = [server.url + "/relay" for server in servers]
        for url in self.urls:
            await self.wait_for_redis(url)
        self.redis = redis

    async def wait_for_redis(self, url: str) -> None:
        """
        Wait until the instance at C{url} reaches Redis (its connection is
        made in the background): until a relay request gets 400, not 503.
        """
        for _ in range(MAX_POLLS):
            response = await self.http.post(url, data=b"1,*,nokey,*,*")
            await response.content()
            if response.code == 400:
                return
            await deferLater(reactor, POLL, lambda: None)
        raise AssertionError(f"{url} never reached Redis")

    def assert_all_gone(self) -> None:
        self.assertEqual(self.redis.keys(), [])


class MultiInstanceRelayGamesTests(RedisRelayGamesTests):
    """
    The same games with three instances on one Redis, each request of each
    player sent to a random instance.
    """

    instances = 3
