"""
The hardening limits of the real C{twistd -n gameserver} on 127.0.0.1: rate
limits with a tiny limit, and --max-connections.
"""

import socket
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.blocking_server import BlockingServer
from tests.support import (
    LOCALHOST,
    ServerProcess,
    _Collector,
    plugin_args,
    raw_exchange,
    split_responses,
)

LOGIN = b"GET /1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
LIST = b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"


class RealServerTestCase(TestCase):
    async def start(self, *options: str) -> ServerProcess:
        server = ServerProcess(plugin_args(*options))
        await server.start()

        async def stop() -> None:
            self.assertEqual(await server.stop(), 0)
            self.assertNotIn("Traceback", server.output)

        self.addCleanup(stop)
        return server

    async def request(self, server: ServerProcess, raw: bytes) -> Any:
        [response] = split_responses(await raw_exchange(server.port, [raw]))
        return response


class RateLimitTests(RealServerTestCase):
    """
    --rate-limit against the real server.
    """

    async def test_login_limit(self) -> None:
        """With a burst of 2 logins a minute, the third login gets 429 with
        Retry-After, and other routes are still served."""
        server = await self.start(
            "--rate-limit", "login=1/m:burst=2", "--rate-limit-exempt", "none"
        )
        codes = [(await self.request(server, LOGIN))[0] for _ in range(3)]
        self.assertEqual(codes, [200, 200, 429])
        code, headers, _ = await self.request(server, LOGIN)
        self.assertEqual((code, headers[b"retry-after"]), (429, b"60"))
        code, _, _ = await self.request(
            server, LIST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        self.assertEqual(code, 200)

    async def test_loopback_exempt(self) -> None:
        """By default loopback clients are not limited."""
        server = await self.start("--rate-limit", "login=1/m:burst=1")
        codes = {(await self.request(server, LOGIN))[0] for _ in range(5)}
        self.assertEqual(codes, {200})


class MaxConnectionsTests(RealServerTestCase):
    """
    --max-connections against the real server.
    """

    async def test_refused_past_cap(self) -> None:
        """With 3 connections open, a fourth gets 503 and is closed; once one
        closes, a new connection is served."""
        server = await self.start("--max-connections", "3")
        held = []
        for _ in range(3):
            collector = _Collector()
            endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, server.port)
            await connectProtocol(endpoint, collector)
            transport: Any = collector.transport
            transport.write(LIST)
            while b"\r\n\r\n" not in collector.data:
                await deferLater(reactor, 0.02, lambda: None)
            held.append(collector)
        raw = await raw_exchange(server.port, [], timeout=5)
        [(code, headers, _)] = split_responses(raw)
        self.assertEqual((code, headers[b"connection"]), (503, b"close"))
        self.assertEqual(headers[b"retry-after"], b"1")
        first: Any = held[0].transport
        first.loseConnection()
        await held[0].closed
        for _ in range(50):
            raw = await raw_exchange(server.port, [LOGIN], timeout=5)
            if split_responses(raw)[0][0] == 200:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(split_responses(raw)[0][0], 200)
        for collector in held[1:]:
            transport = collector.transport
            transport.loseConnection()
            await collector.closed


class NonReadingClientTests(TestCase):
    """
    A client that pipelines requests without reading the answers.
    """

    def test_memory_bounded(self) -> None:
        """The server stops reading a client that does not read: its memory stays
        flat while the client pushes for 3 s, and every request it took is
        answered once the client reads."""
        server = BlockingServer()
        self.addCleanup(server.close)
        request = b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"
        before = server.rss()
        with socket.create_connection((LOCALHOST, server.port)) as s:
            s.setblocking(False)
            pending = memoryview(request * 1000)
            sent = 0
            started = time.monotonic()
            while time.monotonic() - started < 3:
                try:
                    n = s.send(pending)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                sent += n
                pending = pending[n:] or memoryview(request * 1000)
            grown = server.rss() - before
            # Read every answer while finishing the last request.
            s.setblocking(True)
            s.settimeout(30)
            chunks: list[bytes] = []

            def read() -> None:
                while data := s.recv(1 << 20):
                    chunks.append(data)

            reader = threading.Thread(target=read)
            reader.start()
            s.sendall(pending[: len(pending) % len(request)])
            s.sendall(b"GET /1/highscorelist HTTP/1.1\r\nConnection: close\r\n\r\n")
            reader.join(60)
            received = b"".join(chunks)
        self.assertLess(grown, 20 * 2**20)
        answered = received.count(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(answered, -(-sent // len(request)) + 1)
