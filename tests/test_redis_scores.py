"""
Tests for L{gameserver.redis_scores}: the Lua list script against the
in-memory L{Board} it mirrors, keys and their expiry.  (The scores API's
contract tests run on Redis in L{tests.test_web}'s C{Redis*} classes.)
"""

import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gameserver import redis_scores
from gameserver.leaderboard import Board
from gameserver.redis_scores import RedisScores, new_session_key, user_of_key
from gameserver.uint31 import MAX
from tests.redis_support import SKIP_REASON, connected, started_redis


class KeyTests(TestCase):
    """
    Stored-mode keys carry their user.
    """

    def test_round_trip(self) -> None:
        """A new key names its user; keys are fresh and of letters and digits."""
        for user in (0, 1, 4711, MAX):
            key = new_session_key(user)
            self.assertEqual(len(key), redis_scores.REDIS_KEY_LENGTH)
            self.assertTrue(key.isalnum())
            self.assertEqual(user_of_key(key), user)
        self.assertNotEqual(new_session_key(1), new_session_key(1))

    def test_foreign_keys(self) -> None:
        """Keys of another length, alphabet or user range name nobody."""
        for key in (b"", b"A" * 22, b"A" * 26 + b"-", b"z" * 27, b"%00"):
            self.assertIsNone(user_of_key(key), key)


class RedisScoresTests(TestCase):
    """
    L{RedisScores} on a private C{redis-server}.
    """

    skip = SKIP_REASON
    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]
        self.redis = started_redis(self)
        self.connection = await connected(self, self.redis.url)
        self.scores = RedisScores(self.connection, 600.0)

    async def login(self, scores: RedisScores, user: int) -> bytes:
        key = scores.login(user)
        assert isinstance(key, Deferred)  # stored sessions live in Redis
        return await key

    async def test_lists_match_board(self) -> None:
        """Random posts give the same lists as the in-memory Board."""
        rng = random.Random(7)
        boards = {level: Board() for level in range(3)}
        for order in range(400):
            level = rng.randrange(3)
            user = rng.randrange(40)
            score = rng.choice([rng.randrange(50), rng.randrange(MAX + 1)])
            boards[level].record(user, score, order)
            await self.scores._record(level, user, score)
        for level, board in boards.items():
            self.assertEqual(await self.scores.high_score_list(level), board.body())

    async def test_one_key_per_user(self) -> None:
        """A login replaces the user's key: one Redis key, the old key revoked."""
        first = await self.login(self.scores, 5)
        second = await self.login(self.scores, 5)
        self.assertEqual(self.redis.keys(), [b"gs:{user:5}"])
        self.assertFalse(await self.scores.post_score(first, 1, 10))
        self.assertTrue(await self.scores.post_score(second, 1, 10))

    async def test_keys_expire(self) -> None:
        """Session keys carry the TTL and vanish with it; lists stay."""
        scores = RedisScores(self.connection, 0.2)
        key = await self.login(scores, 9)
        ttl = self.redis.command("PTTL", "gs:{user:9}")
        self.assertTrue(0 < ttl <= 200, ttl)
        await scores.post_score(key, 4, 1)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.redis.keys(), [b"gs:{lvl:4}"])

    async def test_healthy(self) -> None:
        """healthy() follows the connection."""
        self.assertTrue(self.scores.healthy())
        self.redis.stop()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(self.scores.healthy())
