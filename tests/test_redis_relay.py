"""
Tests for L{gameserver.redis_relay} against a real, private C{redis-server}:
the same replies as the in-memory relay for random request sequences, the
timeouts as Redis key expiry (short ones, bounded in time), an empty
keyspace once players and games are gone, and several relays (instances)
sharing one Redis.
"""

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from gameserver.redis_connection import RedisReplyError, RedisUnavailable
from gameserver.redis_relay import RedisRelay, RelayCounts, parse_reply
from gameserver.redis_relay_lua import relay_scripts
from gameserver.relay import (
    Errors,
    GameStep,
    PairingStep,
    Register,
    Relay,
    RelayConfig,
    Reply,
    Request,
    Symbol,
)
from gameserver.relay_wire import format_reply
from tests.redis_relay_support import redis_relay
from tests.redis_support import SKIP_REASON, RedisServer, started_redis

NAMES = ("a", "b", "c")
DATA = ("", "x", "a,b", "p|q", "0123456789", "\u00e9\u00e9")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def text(reply: Reply) -> str:
    return format_reply(reply).decode("utf-8")


class RedisHarness:
    """
    A L{RedisRelay} with one method per request kind answering the reply's
    body text, like C{tests.relay_support.RelayHarness} but asynchronous.
    """

    def __init__(self, relay: RedisRelay) -> None:
        self.relay = relay

    async def send(self, request: Request) -> str:
        return text(await self.relay.handle(request))

    async def key(self, name: str, wanted: str | None = None, **kw: Any) -> str:
        reply = await self.send(Register(name, wanted, **kw))
        assert reply.startswith("0/0/"), reply
        return reply[4:]

    async def step(self, symbol: Symbol, key: str) -> str:
        return await self.send(PairingStep(symbol, key))

    async def game(self, relay_b: RedisRelay | None = None) -> tuple[Any, Any]:
        """
        A started game of alice (seat 1) and bob (seat 0); bob's requests go
        to C{relay_b} when given (another instance).
        """
        other = self if relay_b is None else RedisHarness(relay_b)
        alice, bob = await self.key("alice"), await other.key("bob")
        assert await other.step(Symbol.REQUEST_PAIR, bob) == "0/3/alice"
        assert await self.step(Symbol.REQUEST_PAIR, alice) == "0/4/bob"
        assert await self.step(Symbol.MAP_INIT, alice) == "0/6/"
        assert await other.step(Symbol.MAP_INIT, bob) == "0/5/"
        assert await self.step(Symbol.MAP_READY, alice) == "0/7/*"
        start_b = await other.step(Symbol.MAP_READY, bob)
        start_a = await self.step(Symbol.MAP_READY, alice)
        a_key, a_seat = start_a[4:].split("|")
        b_key, b_seat = start_b[4:].split("|")
        return (a_key, int(a_seat)), (b_key, int(b_seat))

    async def update(
        self, side: tuple[str, int], counter: int, data: str = "", quit: bool = False
    ) -> str:
        return await self.send(GameStep(side[0], side[1], counter, data, quit))


@dataclass
class TwinClient:
    """
    One client driving both relays: its keys in each (memory, Redis) and
    where it thinks it is.
    """

    phase: str = "none"
    key: tuple[str, str] | None = None
    game: tuple[str, str] | None = None
    seat: int = 0
    counter: int = 0
    old_keys: list[tuple[str, str]] = field(default_factory=list)


# The request a well-behaved client sends in each phase.
NEXT_SYMBOL = {
    "waiting": Symbol.REQUEST_PAIR,
    "paired": Symbol.MAP_INIT,
    "loading": Symbol.MAP_READY,
    "ready": Symbol.MAP_READY,
}
# The phase a success reply's code puts a client in.
PHASE_OF = {"0": "waiting", "3": "paired", "4": "paired", "5": "loading"}
PHASE_OF |= {"6": "loading", "7": "ready", "2": "waiting"}


class DifferentialTests(TestCase):
    """
    Random request sequences get the same replies from the Redis relay as
    from the in-memory one.
    """

    timeout = 120
    skip = SKIP_REASON

    CONFIG = {
        "max_players": 8,
        "max_games": 2,
        "max_cache": 12,
        "max_queue": 16,
        "max_pair_scan": 1,
        "max_shunned": 2,
    }

    def request(
        self, rng: random.Random, client: TwinClient, clients: list[TwinClient]
    ) -> tuple[Request, Request]:
        """
        The next request of C{client} (mostly what the protocol asks for,
        sometimes not), as sent to each relay.
        """
        wayward = rng.random() < 0.1
        if client.phase == "game" and not (wayward and rng.random() < 0.5):
            assert client.game is not None
            counter = client.counter
            if wayward or rng.random() < 0.1:
                counter = max(0, counter + rng.choice([-2, -1, -1, 1, 2]))
            seat = client.seat if rng.random() < 0.97 else 1 - client.seat
            data = rng.choice(DATA)
            quit = rng.random() < 0.04
            mem, red = client.game
            return (
                GameStep(mem, seat, counter, data, quit),
                GameStep(red, seat, counter, data, quit),
            )
        if client.key is None or (wayward and rng.random() < 0.2):
            name = rng.choice(NAMES)
            wanted = rng.choice([None, None, None, *NAMES])
            request = Register(name, wanted, rng.random() < 0.2)
            return request, request
        symbol = NEXT_SYMBOL.get(client.phase, Symbol.MAP_READY)
        key = client.key
        if wayward:
            symbol = rng.choice(list(Symbol)[1:])
            others = [k for c in clients for k in c.old_keys]
            if rng.random() < 0.3:
                # Someone's old or current key: the relays must agree on it.
                key = rng.choice(others)
        return PairingStep(symbol, key[0]), PairingStep(symbol, key[1])

    async def test_same_replies_as_memory(self) -> None:
        """Thirty sequences of 150 random requests from five clients get the
        same replies from both relays, and the same counts after each."""
        redis = started_redis(self)
        relay = await redis_relay(self, redis, **self.CONFIG)
        seen: set[str] = set()
        for seed in range(30):
            redis.command("FLUSHALL")
            memory = Relay(Clock(), RelayConfig(**self.CONFIG))
            await self.play(seed, memory, relay, seen)
        # The sequences reach every reply the relay can give without a clock.
        expected = {f"0/{code}" for code in range(12)} | {
            "5/*", "9/2", "10/*", "11/*", "12/*", "13/*", "15/*", "17/*",
            "18/*", "19/*", "21/*",
        }  # fmt: skip
        self.assertEqual(expected - seen, set())

    async def play(
        self, seed: int, memory: Relay, relay: RedisRelay, seen: set[str]
    ) -> None:
        rng = random.Random(seed)
        clients = [TwinClient() for _ in range(5)]
        for step in range(150):
            client = rng.choice(clients)
            mem_request, red_request = self.request(rng, client, clients)
            mem_reply = text(memory.handle(mem_request))
            red_reply = text(await relay.handle(red_request))
            seen.add("/".join(mem_reply.split("/")[:2]))
            mem_text, red_text = mem_reply, red_reply
            if mem_reply.startswith(("0/0/", "0/8/")):
                # Keys differ: compare the rest, and remember both.
                mem_key, _, mem_rest = mem_reply[4:].partition("|")
                red_key, _, red_rest = red_reply[4:].partition("|")
                mem_text, red_text = mem_reply[:4] + mem_rest, red_reply[:4] + red_rest
                if mem_reply.startswith("0/0/"):
                    client.key = (mem_key, red_key)
                    client.old_keys.append(client.key)
                    client.game = None
                elif client.game is None or client.game[0] != mem_key:
                    client.game = (mem_key, red_key)
                    client.seat = int(mem_rest)
                    client.counter = 0
            self.assertEqual(
                red_text, mem_text, f"seed {seed} step {step}: {mem_request}"
            )
            self.follow(client, mem_request, mem_reply)
        counts = await relay.refresh_counts()
        self.assertEqual(
            counts,
            RelayCounts(memory.players, memory.waiting, memory.games),
            f"seed {seed}",
        )

    @staticmethod
    def follow(client: TwinClient, request: Request, reply: str) -> None:
        """
        Update what C{client} thinks after C{reply}.
        """
        status, code, _ = reply.split("/", 2)
        if isinstance(request, Register):
            if status == "0":
                client.phase = "waiting"
            return
        if isinstance(request, GameStep):
            if status == "0":
                client.counter = request.counter + 1
                if request.quit:
                    client.phase, client.key, client.game = "none", None, None
            elif reply in ("13/*/*", "15/*/*"):
                client.phase, client.key, client.game = "none", None, None
            return
        if status == "0":
            if code == "8":
                client.phase = "game"
            elif code == "1":
                client.phase, client.key, client.game = "none", None, None
            elif code in PHASE_OF and client.phase != "game":
                client.phase = PHASE_OF[code]
        elif reply == "9/2/*":
            client.phase = "waiting"
        elif (
            isinstance(request, PairingStep) and request.key != (client.key or ("",))[0]
        ):
            pass  # someone else's key
        else:
            client.phase, client.key, client.game = "none", None, None


class RedisRelayTests(TestCase):
    """
    The Redis relay's own behaviour: errors, counts, several instances.
    """

    timeout = 60
    skip = SKIP_REASON

    async def test_two_instances_pair_and_play(self) -> None:
        """Players whose requests go to two relays on one Redis pair and play."""
        redis = started_redis(self)
        one = await redis_relay(self, redis)
        two = await redis_relay(self, redis)
        h = RedisHarness(one)
        alice, bob = await h.game(relay_b=two)
        other = RedisHarness(two)
        self.assertEqual(await h.update(alice, 0, "hi"), "0/10/*")
        self.assertEqual(await other.update(bob, 0, "yo"), "0/9/hi")
        self.assertEqual(await h.update(alice, 1, "bye", quit=True), "0/9/yo")
        self.assertEqual(await other.update(bob, 1), "0/9/bye")
        self.assertEqual(await other.update(bob, 2), "15/*/*")
        self.assertEqual(redis.keys(), [])

    async def test_racing_instances_pair_each_once(self) -> None:
        """Forty players asking for partners at once through three relays
        (instances) on one Redis end up in twenty pairs, each player's
        partner naming it back."""
        redis = started_redis(self)
        relays = [await redis_relay(self, redis) for _ in range(3)]
        names = [f"p{i}" for i in range(40)]
        keys = [await RedisHarness(relays[0]).key(name) for name in names]
        partners: dict[str, str] = {}

        async def ask(i: int) -> None:
            for attempt in range(200):
                h = RedisHarness(relays[(i + attempt) % 3])
                reply = await h.step(Symbol.REQUEST_PAIR, keys[i])
                if reply.startswith(("0/3/", "0/4/")):
                    partners[names[i]] = reply[4:]
                    return
                self.assertEqual(reply, "0/2/*")
            raise AssertionError(f"{names[i]} never paired")

        await gatherResults(
            [Deferred.fromCoroutine(ask(i)) for i in range(40)], consumeErrors=True
        )
        self.assertEqual(sorted(partners), sorted(names))
        for name, partner in partners.items():
            self.assertEqual(partners[partner], name)

    async def test_counts(self) -> None:
        """refresh_counts counts players, waiting players and games; the
        properties answer what the last refresh found."""
        relay = await redis_relay(self)
        self.assertIsNone(relay.players)
        h = RedisHarness(relay)
        await h.game()
        await h.key("carol")
        self.assertEqual(await relay.refresh_counts(), RelayCounts(3, 1, 1))
        self.assertEqual((relay.players, relay.waiting, relay.games), (3, 1, 1))

    async def test_keys_are_random_base62(self) -> None:
        """Pairing and game keys are 22 letters and digits, all distinct."""
        h = RedisHarness(await redis_relay(self))
        (a, _), (b, _) = await h.game()
        keys = [a, b] + [await h.key("p") for _ in range(5)]
        self.assertEqual(len(set(keys)), 7)
        for key in keys:
            self.assertTrue(key.isalnum() and key.isascii() and len(key) == 22, key)

    async def test_unreachable_fails(self) -> None:
        """With Redis gone, handle fails with RedisUnavailable (the resource's 503)."""
        redis = started_redis(self)
        relay = await redis_relay(self, redis)
        redis.stop()
        with self.assertRaises(RedisUnavailable):
            for _ in range(50):  # until the connection notices
                await relay.handle(Register("alice"))
                await sleep(0.02)

    async def test_script_error_fails(self) -> None:
        """A script Redis refuses (here a key of the wrong type) fails the
        request with RedisReplyError, which the resource answers 503."""
        redis = started_redis(self)
        relay = await redis_relay(self, redis)
        redis.command("SET", "{relay}:players", "not a sorted set")
        with self.assertRaises(RedisReplyError):
            await relay.handle(Register("alice"))

    def test_parse_reply(self) -> None:
        """A script's answer becomes the Reply the in-memory relay would give."""
        self.assertEqual(parse_reply(b"0/9/a/b|c"), Reply(0, "9", "a/b|c"))
        self.assertEqual(parse_reply(b"21/*/*"), Errors.cache_full("*"))
        self.assertEqual(parse_reply(b"4/0/*"), Errors.BAD_SYMBOL)

    async def test_one_slot(self) -> None:
        """Every key the relay leaves in Redis has the hash tag {relay}, so all
        are in one Redis Cluster slot."""
        redis = started_redis(self)
        h = RedisHarness(await redis_relay(self, redis, max_shunned=2))
        await h.game()
        await h.key("carol", "dave")
        await h.key("erin")
        keys = redis.keys()
        self.assertGreater(len(keys), 6)
        for key in keys:
            # Cluster hashes only what is between the first { and the next }.
            self.assertTrue(key.startswith(b"{relay}:"), key)


class RedisTimeoutTests(TestCase):
    """
    Timeouts are Redis key expiry: short configured timeouts, real time.
    """

    timeout = 60
    skip = SKIP_REASON

    async def harness(self, **config: Any) -> tuple[RedisHarness, RedisServer]:
        redis = started_redis(self)
        return RedisHarness(await redis_relay(self, redis, **config)), redis

    async def test_pairing_timeout(self) -> None:
        """A silent waiting player is dropped after pairing_timeout; a request
        before that keeps it."""
        h, redis = await self.harness(pairing_timeout=1.0)
        key = await h.key("alice")
        await sleep(0.3)
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, key), "0/2/*")
        await sleep(1.3)
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, key), "5/*/*")
        self.assertEqual(await h.relay.refresh_counts(), RelayCounts(0, 0, 0))
        self.assertEqual(redis.keys(), [])

    async def test_long_wait_timeout(self) -> None:
        """The long-wait key outlives pairing_timeout, up to long_wait_timeout."""
        h, redis = await self.harness(pairing_timeout=0.5, long_wait_timeout=1.5)
        key = await h.key("alice", long_wait=True)
        await sleep(0.9)
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, key), "0/2/*")
        await sleep(1.9)
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, key), "5/*/*")
        self.assertEqual(redis.keys(), [])

    async def test_partner_timeout_9_2_and_never_again(self) -> None:
        """A paired partner that times out gives 9/2/*: back in the pool, and
        never paired with that name again."""
        h, _ = await self.harness(pairing_timeout=1.0)
        alice, bob = await h.key("alice"), await h.key("bob")
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, bob), "0/3/alice")
        await sleep(0.6)
        self.assertEqual(await h.step(Symbol.MAP_INIT, bob), "0/5/")
        await sleep(0.6)
        self.assertEqual(await h.step(Symbol.MAP_READY, bob), "9/2/*")
        self.assertEqual(await h.step(Symbol.MAP_INIT, alice), "5/*/*")
        alice = await h.key("alice")
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, bob), "0/2/*")
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, alice), "0/2/*")

    async def test_silent_side_times_out_15(self) -> None:
        """A game side silent for game_timeout is gone: its partner gets what
        it had queued, then 15/*/*; then the game is gone and so are its keys."""
        h, redis = await self.harness(game_timeout=1.0, pairing_timeout=1.0)
        alice, bob = await h.game()
        self.assertEqual(await h.update(alice, 0, "last"), "0/10/*")
        for counter in range(5):
            await sleep(0.4)
            reply = await h.update(bob, counter, "", quit=False)
            if reply == "15/*/*":
                break
            self.assertIn(reply, ("0/9/last", "0/10/*"))
        self.assertEqual(reply, "15/*/*")
        self.assertEqual(await h.update(alice, 1), "13/*/*")
        self.assertEqual(await h.relay.refresh_counts(), RelayCounts(0, 0, 0))
        self.assertEqual(redis.keys(), [])

    async def test_game_timeout(self) -> None:
        """A game nobody talks in ends after game_timeout; both keys get 13."""
        h, _ = await self.harness(game_timeout=0.5, pairing_timeout=5.0)
        alice, bob = await h.game()
        self.assertEqual((await h.relay.refresh_counts()).games, 1)
        await sleep(0.9)
        self.assertEqual((await h.relay.refresh_counts()).games, 0)
        self.assertEqual(await h.update(alice, 0), "13/*/*")
        self.assertEqual(await h.update(bob, 0), "13/*/*")

    async def test_updates_keep_a_game(self) -> None:
        """Each update restarts its side's game timeout."""
        h, _ = await self.harness(game_timeout=1.0)
        alice, bob = await h.game()
        for counter in range(5):
            await sleep(0.3)
            self.assertTrue((await h.update(alice, counter)).startswith("0/"))
            self.assertTrue((await h.update(bob, counter)).startswith("0/"))

    async def test_nothing_left_behind(self) -> None:
        """After games end every way (quit, 15, unregister, out of order, no
        room, timeouts) and players leave or time out, Redis holds no key."""
        h, redis = await self.harness(
            pairing_timeout=0.5, long_wait_timeout=0.8, game_timeout=0.6, max_games=2
        )
        # A game both quit; a game ended by 15; one ended by unregister.
        a, b = await h.game()
        await h.update(a, 0, "x", quit=True)
        await h.update(b, 0, "y", quit=True)
        a, b = await h.game()
        await h.update(a, 0, "x", quit=True)
        await h.update(b, 0)
        self.assertEqual(await h.update(b, 1), "15/*/*")
        # A game left by a MAP_INIT out of order, and one that times out.
        c = await h.key("carol")
        d = await h.key("dave")
        await h.step(Symbol.REQUEST_PAIR, c)
        for k in (c, d):
            await h.step(Symbol.MAP_INIT, k)
            await h.step(Symbol.MAP_READY, k)
        await h.step(Symbol.MAP_READY, c)
        self.assertEqual(await h.step(Symbol.MAP_INIT, d), "10/*/*")
        await h.game()
        # A shunned name, and waiting players (random, named, long wait).
        x, y = await h.key("x"), await h.key("y")
        await h.step(Symbol.REQUEST_PAIR, x)
        await h.step(Symbol.UNREGISTER, y)
        self.assertEqual(await h.step(Symbol.REQUEST_PAIR, x), "9/2/*")
        await h.key("erin")
        await h.key("fred", "gina")
        await h.key("hal", long_wait=True)
        self.assertNotEqual(redis.keys(), [])
        await sleep(1.3)
        self.assertEqual(redis.keys(), [])


class ScriptTests(TestCase):
    """
    The scripts' shape.
    """

    def test_one_script_per_request_kind(self) -> None:
        """Each request kind has its own script (one atomic step each), with
        the prefix and the options written in: other options, other scripts."""
        scripts = relay_scripts("{relay}:", RelayConfig())
        self.assertEqual(
            sorted(scripts), ["counts", "game_step", "pairing", "register"]
        )
        self.assertEqual(len({s.sha for s in scripts.values()}), 4)
        for script in scripts.values():
            self.assertIn(b'local P = "{relay}:"', script.source)
            self.assertIn(b"local PAIR_MS = 25000\n", script.source)
        other = relay_scripts("{relay}:", RelayConfig(max_games=7))
        self.assertNotEqual(other["pairing"].sha, scripts["pairing"].sha)
        self.assertIn(b"local MAX_GAMES = 7\n", other["pairing"].source)
