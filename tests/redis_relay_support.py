"""
Test helpers for the Redis relay: a L{RedisRelay} on a private
C{redis-server}, connected and ready.
"""

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from gameserver.redis_connection import RedisConnection, RedisSettings
from gameserver.redis_relay import RedisRelay
from gameserver.relay import RelayConfig
from tests.redis_support import RedisServer, started_redis


async def connected(test: Any, redis: RedisServer) -> RedisConnection:
    """
    A L{RedisConnection} to C{redis}, once it is up; closed after C{test}.
    """
    connection = RedisConnection(RedisSettings.from_url(redis.url), reactor)
    connection.start()
    test.addCleanup(connection.stop)
    for _ in range(500):
        if connection.connected():
            return connection
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("could not connect to the test's redis-server")


async def redis_relay(
    test: Any, redis: RedisServer | None = None, **config: Any
) -> RedisRelay:
    """
    A L{RedisRelay} with C{config} on C{redis} (by default a fresh
    C{redis-server} for C{test}).
    """
    server = started_redis(test) if redis is None else redis
    return RedisRelay(await connected(test, server), RelayConfig(**config))
