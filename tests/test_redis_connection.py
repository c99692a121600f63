"""
Tests for L{gameserver.redis_connection}: C{--redis} URLs, and a connection
to a private C{redis-server} that goes away and comes back.
"""

import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gameserver.redis_connection import (
    RedisReplyError,
    RedisSettings,
    RedisUnavailable,
    Script,
)
from tests.redis_support import (
    SKIP_REASON,
    RedisServer,
    connected,
    started,
    started_redis,
    wait_until,
)
from tests.support import LOCALHOST
from tests.test_tls import self_signed

ECHO = Script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, false, true}")


class SettingsTests(TestCase):
    """
    L{RedisSettings.from_url}.
    """

    def test_tcp(self) -> None:
        """redis://host:port/db gives host, port and database."""
        self.assertEqual(
            RedisSettings.from_url("redis://example.com:7000/3"),
            RedisSettings(host="example.com", port=7000, db=3),
        )

    def test_defaults(self) -> None:
        """redis://host alone means port 6379, database 0, no TLS, no password."""
        self.assertEqual(
            RedisSettings.from_url("redis://10.0.0.1"), RedisSettings(host="10.0.0.1")
        )

    def test_password_and_user(self) -> None:
        """A password (and ACL user) in the URL are read, percent-decoded."""
        settings = RedisSettings.from_url("redis://game:p%40ss@h:1/0")
        self.assertEqual((settings.username, settings.password), ("game", "p@ss"))
        settings = RedisSettings.from_url("redis://:secret@h")
        self.assertEqual((settings.username, settings.password), (None, "secret"))

    def test_tls(self) -> None:
        """rediss:// turns TLS on."""
        self.assertTrue(RedisSettings.from_url("rediss://h:6380/0").tls)

    def test_unix(self) -> None:
        """unix:///path?db=N is a socket path and a database."""
        self.assertEqual(
            RedisSettings.from_url("unix:///run/redis/redis.sock?db=2"),
            RedisSettings(path="/run/redis/redis.sock", db=2),
        )

    def test_password_file(self) -> None:
        """--redis-password-file supplies the password, without whitespace."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  from-file\n")
        settings = RedisSettings.from_url("redis://h", path)
        self.assertEqual(settings.password, "from-file")

    def test_bad_urls(self) -> None:
        """Other schemes, bad ports or databases, and two passwords are refused."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        for url, password_file in (
            ("http://h", None),
            ("h:6379", None),
            ("redis://h:port/0", None),
            ("redis://h/db", None),
            ("redis://h/-1", None),
            ("redis:///0", None),
            ("unix://", None),
            ("redis://:a@h", path),
            ("redis://h", "/nonexistent/password"),
        ):
            with self.assertRaises(ValueError, msg=url):
                RedisSettings.from_url(url, password_file)

    def test_describe_hides_password(self) -> None:
        """The address for logs leaves the password out."""
        text = RedisSettings.from_url("redis://:secret@h:1/2").describe()
        self.assertEqual(text, "redis://h:1/2")


class ConnectionTests(TestCase):
    """
    L{RedisConnection} against a real C{redis-server}.
    """

    skip = SKIP_REASON
    timeout = 60

    async def test_command_and_script(self) -> None:
        """Commands and scripts answer raw values: bytes, str, ints, lists, None."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        self.assertEqual(await connection.command("SET", "k", b"\xff1"), "OK")
        self.assertEqual(await connection.command("GET", "k"), b"\xff1")
        self.assertIsNone(await connection.command("GET", "missing"))
        self.assertEqual(
            await connection.run(ECHO, ["k"], [b"a", 41]), [b"k", b"a", 42, None, 1]
        )
        self.assertTrue(connection.healthy())

    async def test_noscript_reloads(self) -> None:
        """After SCRIPT FLUSH (a restart, a failover) scripts are sent again."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        await connection.run(ECHO, ["k"], ["a", 1])
        redis.command("SCRIPT", "FLUSH")
        self.assertEqual((await connection.run(ECHO, ["k"], ["a", 1]))[2], 2)

    async def test_reply_error(self) -> None:
        """An error reply fails the call with RedisReplyError."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        with self.assertRaises(RedisReplyError):
            await connection.command("NOSUCHCOMMAND")

    async def test_password(self) -> None:
        """A password-protected Redis is reached with the URL's password."""
        redis = RedisServer(password="s3cret-pass")
        redis.start()
        self.addCleanup(redis.cleanup)
        connection = await connected(self, redis.url)
        self.assertEqual(await connection.command("PING"), "PONG")

    async def test_failed_log_in_retried(self) -> None:
        """A refused password does not stop reconnecting: fixed, it is used."""
        redis = RedisServer(password="right-password")
        redis.start()
        self.addCleanup(redis.cleanup)
        url = f"redis://:new-password@{LOCALHOST}:{redis.port}/0"
        connection = started(self, url, 0.5)
        with self.assertRaises(RedisUnavailable):
            await connection.command("PING")
        self.assertFalse(connection.connected())
        redis.command("CONFIG", "SET", "requirepass", "new-password")
        redis.password = "new-password"
        await wait_until(connection.connected)
        self.assertEqual(await connection.command("PING"), "PONG")
        self.flushLoggedErrors()

    async def test_unix_socket(self) -> None:
        """A unix:// URL reaches Redis over its socket, in the database asked for."""
        redis = started_redis(self)
        connection = await connected(self, f"unix://{redis.socket_path}?db=3")
        await connection.command("SET", "here", "1")
        self.assertEqual(redis.command("DBSIZE"), 0)
        in_db3 = "redis.call('SELECT', 3) return redis.call('GET', 'here')"
        self.assertEqual(redis.command("EVAL", in_db3, 0), b"1")

    def tls_redis(self) -> tuple[RedisServer, str]:
        """
        A started C{redis-server} taking TLS with a new self-signed
        certificate, and that certificate's file; stopped after the test.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key, cert, _ = self_signed(directory)
        redis = RedisServer(tls=(cert, key))
        redis.start()
        self.addCleanup(redis.cleanup)
        return redis, cert

    async def test_tls(self) -> None:
        """rediss:// with ssl_ca_certs talks TLS to a Redis with that certificate."""
        redis, cert = self.tls_redis()
        url = f"rediss://{LOCALHOST}:{redis.tls_port}/0?ssl_ca_certs={cert}"
        connection = await connected(self, url)
        self.assertEqual(await connection.command("SET", "over-tls", "1"), "OK")
        self.assertEqual(redis.command("GET", "over-tls"), b"1")

    async def test_tls_untrusted(self) -> None:
        """rediss:// refuses a Redis whose certificate it does not trust."""
        redis, _ = self.tls_redis()
        url = f"rediss://{LOCALHOST}:{redis.tls_port}/0"
        connection = started(self, url, 0.5)
        with self.assertRaises(RedisUnavailable):
            await connection.command("PING")
        self.assertFalse(connection.connected())

    async def test_never_connected(self) -> None:
        """With no Redis at start, a call waits for it at most the timeout."""
        redis = RedisServer()  # never started: nothing listens there
        connection = started(self, redis.url, 0.3)
        began = time.monotonic()
        with self.assertRaises(RedisUnavailable):
            await connection.command("PING")
        self.assertLess(time.monotonic() - began, 2.0)
        self.assertFalse(connection.healthy())

    async def test_waits_for_first_connection(self) -> None:
        """A call made while the first connection is being made waits for it."""
        redis = started_redis(self)
        connection = started(self, redis.url, 5.0)
        self.assertEqual(await connection.command("PING"), "PONG")

    async def test_script_waits_for_first_connection(self) -> None:
        """A script run while the first connection is being made waits for it."""
        redis = started_redis(self)
        connection = started(self, redis.url, 5.0)
        self.assertEqual(
            await connection.run(ECHO, ["k"], [b"a", 41]), [b"k", b"a", 42, None, 1]
        )

    async def test_bug_is_not_an_outage(self) -> None:
        """A failure that is not Redis's keeps its type and leaves Redis healthy."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        with self.assertRaises(ZeroDivisionError):
            await connection._bounded(lambda: 1 // 0)
        self.assertTrue(connection.healthy())

    async def test_reconnects(self) -> None:
        """With Redis gone calls fail at once; restarted, it is used again by itself."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        redis.stop()
        await wait_until(lambda: not connection.connected())
        started = time.monotonic()
        with self.assertRaises(RedisUnavailable):
            await connection.command("PING")
        self.assertLess(time.monotonic() - started, 1.0)  # at once, not 2 s
        self.assertFalse(connection.healthy())
        redis.start()
        await wait_until(connection.connected)
        self.assertEqual(await connection.command("PING"), "PONG")
        await wait_until(connection.healthy, 3.0)

    async def test_timeout(self) -> None:
        """A Redis that stops answering fails calls after the timeout, then recovers."""
        redis = started_redis(self)
        connection = await connected(self, redis.url, timeout=0.3)
        process = redis._process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with self.assertRaises(RedisUnavailable):
                await connection.run(ECHO, ["k"], ["a", 1])
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertFalse(connection.healthy())
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # Calls made while it hung (the 1 s ping) may still time out and drop
        # the connections once more; healthy() means that is over.
        await wait_until(connection.healthy)
        self.assertEqual((await connection.run(ECHO, ["k"], ["a", 1]))[2], 2)

    async def test_stop(self) -> None:
        """stop() closes the connections; later calls fail at once."""
        redis = started_redis(self)
        connection = await connected(self, redis.url)
        await connection.stop()
        await deferLater(reactor, 0.05, lambda: None)
        with self.assertRaises(RedisUnavailable):
            await connection.command("PING")
