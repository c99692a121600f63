"""
Integration tests: the real twistd plugin (and gameserver.tac) on 127.0.0.1,
spoken to with treq over TCP.
"""

import os
import sys
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.redis_support import SKIP_REASON, started_redis
from tests.support import ANY_PORT, ROOT, ServerProcess, plugin_args

# gameserver handles SIGTERM itself: a graceful shutdown, then exit status 0.
CLEAN_EXIT = (0,)


class IntegrationTestCase(TestCase):
    """
    Starts real gameserver processes and talks to them with treq.
    """

    timeout = 60

    def setUp(self) -> None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def start(
        self, args: list[str], env: dict[str, str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(args, env)
        await server.start()
        self.addCleanup(server.stop)
        return server

    async def get(self, server: ServerProcess, path: str) -> tuple[int, bytes]:
        response = await self.http.get(server.url + path)
        return response.code, await response.content()

    async def post(
        self, server: ServerProcess, path: str, body: bytes
    ) -> tuple[int, bytes]:
        response = await self.http.post(server.url + path, data=body)
        return response.code, await response.content()

    async def seed_session(self, server: ServerProcess) -> None:
        """
        The seed's example: 4711 posts 1500 to level 2, 131 posts 1220.
        """
        code, key = await self.get(server, "/4711/login")
        self.assertEqual(code, 200)
        self.assertEqual(
            await self.post(server, f"/2/score?sessionkey={key.decode()}", b"1500"),
            (200, b""),
        )
        code, key = await self.get(server, "/131/login")
        self.assertEqual(
            await self.post(server, f"/2/score?sessionkey={key.decode()}", b"1220\n"),
            (200, b""),
        )
        self.assertEqual(
            await self.get(server, "/2/highscorelist"), (200, b"4711=1500,131=1220")
        )


class PluginTests(IntegrationTestCase):
    """
    C{twistd -n gameserver} serves the scores API.
    """

    def args(self, *options: str) -> list[str]:
        """
        The server's command line: the in-memory store here.
        """
        return plugin_args(*options)

    async def test_seed_example(self) -> None:
        """The seed's example session works against the real plugin."""
        server = await self.start(self.args())
        await self.seed_session(server)

    async def test_errors(self) -> None:
        """The real server answers 400, 401, 404 and 405 as the contract says."""
        server = await self.start(self.args())
        self.assertEqual((await self.get(server, "/abc/login"))[0], 400)
        self.assertEqual(
            (await self.post(server, "/2/score?sessionkey=nope", b"1"))[0], 401
        )
        self.assertEqual((await self.get(server, "/nope"))[0], 404)
        self.assertEqual((await self.post(server, "/2/highscorelist", b""))[0], 405)

    async def test_session_ttl_option(self) -> None:
        """--session-ttl shortens the lifetime of keys."""
        server = await self.start(self.args("--session-ttl", "0.5"))
        _, key = await self.get(server, "/1/login")
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.7, lambda: None)
        code, _ = await self.post(server, f"/2/score?sessionkey={key.decode()}", b"5")
        self.assertEqual(code, 401)

    async def test_signed_keys_survive_restart(self) -> None:
        """With --sessions=signed a key issued before a restart still works."""
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("integration-test-secret-0123456789\n")
        args = self.args(
            "--sessions", "signed", "--secret-file", os.path.abspath(secret)
        )
        first = await self.start(args)
        _, key = await self.get(first, "/7/login")
        self.assertIn(await first.stop(), CLEAN_EXIT)
        second = await self.start(args)
        code, _ = await self.post(second, f"/3/score?sessionkey={key.decode()}", b"9")
        self.assertEqual(code, 200)
        self.assertEqual(await self.get(second, "/3/highscorelist"), (200, b"7=9"))

    async def test_access_log(self) -> None:
        """--access-log writes one combined-format line per request."""
        log = os.path.abspath(self.mktemp())
        server = await self.start(self.args("--access-log", log))
        await self.get(server, "/1/highscorelist")
        await server.stop()
        with open(log) as f:
            self.assertIn('"GET /1/highscorelist HTTP/1.1" 200', f.read())

    async def test_sigterm_shuts_down(self) -> None:
        """SIGTERM shuts the server down cleanly with exit status 0."""
        server = await self.start(self.args())
        self.assertEqual(await server.stop(), 0)
        self.assertIn("Server Shut Down.", server.output)

    async def test_usage_error(self) -> None:
        """A bad option exits non-zero with a clear message and no traceback."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "gameserver",
                "--sessions",
                "signed",
            ],
            env={**os.environ, "PYTHONPATH": ROOT},
            path=ROOT,
        )
        self.assertNotEqual(code, 0)
        text = (out + err).decode()
        self.assertIn("--sessions=signed needs --secret-file", text)
        self.assertNotIn("Traceback", text)

    async def test_help_lists_options(self) -> None:
        """twistd gameserver --help lists every option."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "gameserver",
                "--help",
            ],
            env={**os.environ, "PYTHONPATH": ROOT},
            path=ROOT,
        )
        self.assertEqual(code, 0, err)
        for option in (
            "--port",
            "--session-ttl",
            "--sessions",
            "--secret-file",
            "--access-log",
            "--metrics-port",
            "--shutdown-timeout",
            "--cors-origin",
        ):
            self.assertIn(option.encode(), out)


class RedisPluginTests(PluginTests):
    """
    The same, with the state in a private C{redis-server} (C{--redis}).
    """

    skip = SKIP_REASON

    def setUp(self) -> None:
        super().setUp()
        self.redis = started_redis(self)

    def args(self, *options: str) -> list[str]:
        return plugin_args("--redis", self.redis.url, *options)


class TacTests(IntegrationTestCase):
    """
    C{twistd -ny gameserver.tac} runs the same service from the environment.
    """

    async def test_tac(self) -> None:
        """The tac file serves the scores API on GAMESERVER_PORT."""
        env: dict[str, Any] = {**os.environ, "GAMESERVER_PORT": ANY_PORT}
        server = await self.start(
            ["-ny", os.path.join(ROOT, "gameserver.tac"), "--pidfile="], env
        )
        await self.seed_session(server)

    async def test_tac_bad_environment(self) -> None:
        """A bad variable stops the tac with a clear message."""
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-ny",
                "gameserver.tac",
                "--pidfile=",
            ],
            env={**os.environ, "PYTHONPATH": ROOT, "GAMESERVER_SESSIONS": "nope"},
            path=ROOT,
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"--sessions must be one of", out + err)
