"""
Operations: systemd units and socket activation, graceful shutdown on
SIGTERM, SIGHUP and the access log, JSON logs, C{/healthz} and CORS.
"""

import json
import os
import re
import shutil
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.usage import UsageError
from twisted.trial.unittest import SkipTest, TestCase

from gameserver.server_tap import Options, options_from_environment
from tests.ops_support import Spawned
from tests.support import (
    ANY_PORT,
    LOCALHOST,
    ROOT,
    ServerProcess,
    _Collector,
    free_port,
    plugin_args,
    split_responses,
)
from tests.test_http import SiteTestCase
from tests.test_integration import IntegrationTestCase

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
UNITS = os.path.join(ROOT, "misc")


def read_unit(name: str) -> str:
    with open(os.path.join(UNITS, name)) as f:
        return f.read()


class UnitFileTests(TestCase):
    """
    misc/gameserver.service and misc/gameserver.socket.
    """

    timeout = 60

    def test_service_runs_plugin_on_passed_socket(self) -> None:
        """The service runs twistd -n --pidfile= gameserver on systemd's socket."""
        service = read_unit("gameserver.service")
        [exec_start] = re.findall(r"^ExecStart=(.*)$", service, re.M)
        self.assertIn("twistd -n --pidfile= gameserver", exec_start)
        self.assertIn("--port systemd:domain=INET:index=0", exec_start)
        self.assertIn("--database /var/lib/gameserver/", exec_start)
        for setting in (
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "StateDirectory=gameserver",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "Requires=gameserver.socket",
        ):
            self.assertIn(setting + "\n", service)
        self.assertIn("ListenStream=8080\n", read_unit("gameserver.socket"))

    async def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verify finds nothing to complain about in the units."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest(
                "systemd-analyze is missing (Debian: apt-get install -y systemd)"
            )
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        # verify wants ExecStart's program to exist: point it at this twistd.
        twistd = shutil.which("twistd", path=os.path.dirname(sys.executable))
        if twistd is None:
            raise SkipTest(f"no twistd next to {sys.executable}")
        for name in ("gameserver.service", "gameserver.socket"):
            text = read_unit(name).replace("/opt/gameserver/bin/twistd", twistd)
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        out, err, code = await getProcessOutputAndValue(
            analyze,
            [
                "verify",
                os.path.join(directory, "gameserver.socket"),
                os.path.join(directory, "gameserver.service"),
            ],
            env=dict(os.environ),
        )
        text = (out + err).decode()
        self.assertEqual(code, 0, text)
        self.assertNotIn(directory, text)


class TemplateUnitTests(TestCase):
    """
    misc/gameserver@.service: one of several instances sharing Redis.
    """

    timeout = 60

    def test_template_runs_instance_on_redis(self) -> None:
        """The template listens on its instance's port and reads Redis settings."""
        unit = read_unit("gameserver@.service")
        [exec_start] = re.findall(r"^ExecStart=(.*)$", unit, re.M)
        self.assertIn("--port tcp:%i:interface=127.0.0.1", exec_start)
        self.assertIn("--redis ${GAMESERVER_REDIS}", exec_start)
        self.assertIn(
            "--redis-password-file ${CREDENTIALS_DIRECTORY}/redis-password", exec_start
        )
        self.assertNotIn("--database", exec_start)
        self.assertIn("option httpchk GET /healthz", read_unit("haproxy.cfg"))

    async def test_systemd_analyze_verify_template(self) -> None:
        """systemd-analyze verify accepts an instance of the template."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest(
                "systemd-analyze is missing (Debian: apt-get install -y systemd)"
            )
        twistd = shutil.which("twistd", path=os.path.dirname(sys.executable))
        if twistd is None:
            raise SkipTest(f"no twistd next to {sys.executable}")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        text = read_unit("gameserver@.service").replace(
            "/opt/gameserver/bin/twistd", twistd
        )
        with open(os.path.join(directory, "gameserver@.service"), "w") as f:
            f.write(text)
        out, err, code = await getProcessOutputAndValue(
            analyze,
            ["verify", os.path.join(directory, "gameserver@8081.service")],
            env=dict(os.environ),
        )
        output = (out + err).decode()
        self.assertEqual(code, 0, output)
        self.assertNotIn(directory, output)


class SocketActivationTests(IntegrationTestCase):
    """
    C{--port systemd:domain=INET:index=0} under systemd-socket-activate.
    """

    async def test_serves_passed_socket(self) -> None:
        """The server started on the first connection serves the passed socket."""
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            raise SkipTest(
                "systemd-socket-activate is missing "
                "(Debian: apt-get install -y systemd)"
            )
        port = free_port()
        activator = Spawned(
            [
                activate,
                "-l",
                f"{LOCALHOST}:{port}",
                "-E",
                f"PYTHONPATH={ROOT}",
                # systemd always names the sockets it passes; Twisted wants
                # LISTEN_FDNAMES to match LISTEN_FDS.
                "--fdname=http",
                *TWISTD,
                "-n",
                "--pidfile=",
                "gameserver",
                "--port",
                "systemd:domain=INET:index=0",
            ]
        )
        self.addCleanup(activator.stop)
        await activator.wait_for(rf"Listening on {LOCALHOST}:{port}")
        # The socket exists before the server: this first request starts it
        # and waits in the backlog meanwhile.
        url = f"http://{LOCALHOST}:{port}"
        response = await self.http.get(url + "/4711/login")
        self.assertEqual(response.code, 200)
        key = (await response.content()).decode()
        response = await self.http.post(f"{url}/2/score?sessionkey={key}", data=b"15")
        self.assertEqual(response.code, 200)
        response = await self.http.get(url + "/2/highscorelist")
        self.assertEqual(await response.content(), b"4711=15")
        await activator.wait_for(r"gameserver listening on")
        self.assertEqual(await activator.stop(), 0)


async def connect(port: int) -> _Collector:
    collector = _Collector()
    await connectProtocol(TCP4ClientEndpoint(reactor, LOCALHOST, port), collector)
    return collector


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class GracefulShutdownTests(IntegrationTestCase):
    """
    SIGTERM: stop listening, finish requests under way, stop, exit 0.
    """

    async def test_slow_request_completes(self) -> None:
        """A request still arriving at SIGTERM is answered, then the process
        exits 0, and no new connection is accepted meanwhile."""
        server = await self.start(plugin_args())
        _, key = await self.get(server, "/7/login")
        client = await connect(server.port)
        transport: Any = client.transport
        transport.write(
            b"POST /2/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 4\r\n\r\n12" % key
        )
        await sleep(0.2)
        server._process.signalProcess("TERM")
        for _ in range(100):
            if "shutting down" in server.output:
                break
            await sleep(0.05)
        await sleep(0.2)
        with self.assertRaises(ConnectionRefusedError):
            await connect(server.port)
        transport.write(b"34")
        [(code, headers, _)] = split_responses(await client.closed)
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(await server.ended(), 0)
        self.assertIn("Server Shut Down.", server.output)

    async def test_shutdown_timeout(self) -> None:
        """A request that never completes is cut after --shutdown-timeout."""
        server = await self.start(plugin_args("--shutdown-timeout", "0.5"))
        client = await connect(server.port)
        transport: Any = client.transport
        transport.write(b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
        await sleep(0.2)
        idle = await connect(server.port)
        await sleep(0.1)
        server._process.signalProcess("TERM")
        self.assertEqual(await idle.closed, b"")
        self.assertEqual(await client.closed, b"")
        self.assertEqual(await server.ended(), 0)
        self.assertIn("cutting", server.output)

    async def test_sighup_reopens_access_log(self) -> None:
        """After logrotate moves the access log, SIGHUP starts a new one."""
        log = os.path.abspath(self.mktemp())
        server = await self.start(plugin_args("--access-log", log))
        await self.get(server, "/1/highscorelist")
        os.rename(log, log + ".1")
        server._process.signalProcess("HUP")
        for _ in range(100):
            if "reopened access log" in server.output:
                break
            await sleep(0.05)
        await self.get(server, "/2/highscorelist")
        self.assertEqual(await server.stop(), 0)
        with open(log + ".1") as f:
            self.assertIn("/1/highscorelist", f.read())
        with open(log) as f:
            text = f.read()
        self.assertIn("/2/highscorelist", text)
        self.assertNotIn("/1/highscorelist", text)


class JSONLogTests(IntegrationTestCase):
    """
    C{twistd --logger gameserver.logs.json_logger} writes JSON lines.
    """

    async def test_json_lines(self) -> None:
        """Every line is a JSON event; the listening event carries its port."""
        process = Spawned(
            [
                *TWISTD,
                "--logger",
                "gameserver.logs.json_logger",
                "-n",
                "--pidfile=",
                "gameserver",
                "--port",
                ANY_PORT,
            ]
        )
        self.addCleanup(process.stop)
        match = await process.wait_for(r'"port": (\d+)')
        server = ServerProcess([])
        server.port = int(match.group(1))
        self.assertEqual((await self.get(server, "/healthz"))[0], 200)
        self.assertEqual(await process.stop(), 0)
        events = [json.loads(line) for line in process.output.splitlines() if line]
        [listening] = [e for e in events if e.get("what") == "gameserver"]
        self.assertEqual(listening["log_format"], "{what} listening on {address}")
        self.assertEqual(
            listening["log_namespace"], "gameserver.server_tap._AnnouncingEndpoint"
        )
        self.assertEqual(listening["log_level"]["name"], "info")
        self.assertEqual(listening["port"], server.port)


class HealthTests(SiteTestCase):
    """
    C{GET /healthz} for load balancers.
    """

    async def test_ok(self) -> None:
        """A usable server answers 200 ok, and HEAD the headers only."""
        await self.serve()
        [(code, _, body)] = await self.exchange(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual((code, body), (200, b"ok\n"))
        [(code, headers, body)] = await self.exchange(
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual((code, headers[b"content-length"], body), (200, b"3", b""))

    async def test_shutting_down(self) -> None:
        """While the server shuts down, /healthz answers 503."""
        await self.serve()
        health: Any = self.site.resource._health  # type: ignore[attr-defined]
        self.assertIsNone(health.problem())
        self.site.draining = True
        self.assertEqual(health.problem(), b"shutting down")

    async def test_store_stopped(self) -> None:
        """A durable store that is stopping makes /healthz answer 503."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        await self.serve("--database", os.path.join(directory, "game.db"))
        health: Any = self.site.resource._health  # type: ignore[attr-defined]
        await health._scores.stop()
        [(code, _, body)] = await self.exchange(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual((code, body), (503, b"store unavailable\n"))


PREFLIGHT = (
    b"OPTIONS /2/score HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n"
    b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
)
LIST_FROM = b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n\r\n"


class CorsTests(SiteTestCase):
    """
    C{--cors-origin}: the headers and preflight answers browsers need.
    """

    async def test_allowed_origin(self) -> None:
        """A listed origin gets Access-Control-Allow-Origin and a preflight 204."""
        await self.serve(
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "http://b.example:3000",
        )
        responses = await self.exchange(
            LIST_FROM % b"https://a.example",
            LIST_FROM % b"http://b.example:3000",
            PREFLIGHT % b"https://a.example",
        )
        [(c1, h1, _), (_, h2, _), (c3, h3, body)] = responses
        self.assertEqual(
            (c1, h1[b"access-control-allow-origin"]), (200, b"https://a.example")
        )
        self.assertEqual(h1[b"vary"], b"Origin")
        self.assertEqual(h2[b"access-control-allow-origin"], b"http://b.example:3000")
        self.assertEqual(c3, 204)
        self.assertEqual(body, b"")
        self.assertNotIn(b"content-length", h3)
        self.assertEqual(h3[b"access-control-allow-origin"], b"https://a.example")
        self.assertIn(b"POST", h3[b"access-control-allow-methods"])
        self.assertEqual(h3[b"access-control-allow-headers"], b"Content-Type")

    async def test_other_origin(self) -> None:
        """An unlisted origin is served without CORS headers."""
        await self.serve("--cors-origin", "https://a.example")
        [(code, headers, _)] = await self.exchange(
            b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\n"
            b"Origin: https://evil.example\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual(code, 200)
        self.assertNotIn(b"access-control-allow-origin", headers)

    async def test_any_origin(self) -> None:
        """--cors-origin '*' allows every origin."""
        await self.serve("--cors-origin", "*")
        [(_, headers, _)] = await self.exchange(PREFLIGHT % b"https://x.example")
        self.assertEqual(headers[b"access-control-allow-origin"], b"*")

    async def test_off_by_default(self) -> None:
        """Without the option, OPTIONS gets 405 and no CORS header is added."""
        await self.serve()
        [(code, headers, _)] = await self.exchange(PREFLIGHT % b"https://a.example")
        self.assertEqual(code, 405)
        self.assertNotIn(b"access-control-allow-origin", headers)

    def test_bad_origin(self) -> None:
        """An origin with a path or another scheme is a usage error."""
        for origin in ("https://a.example/", "ftp://a.example", "a.example"):
            with self.assertRaises(UsageError):
                Options().parseOptions(["--cors-origin", origin])

    def test_environment(self) -> None:
        """GAMESERVER_CORS_ORIGIN lists origins separated by spaces or commas."""
        options = options_from_environment(
            {"GAMESERVER_CORS_ORIGIN": "https://a.example, http://b.example"}
        )
        self.assertEqual(
            options["cors-origin"], ["https://a.example", "http://b.example"]
        )
