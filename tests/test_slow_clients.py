"""
Slow-loris clients against the real server: 1000 connections sending their
request headers a byte every 2 seconds are cut at --header-timeout, while
ordinary clients keep being answered.
"""

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import (
    LOCALHOST,
    ServerProcess,
    plugin_args,
    raw_exchange,
    split_responses,
)

SLOW_CLIENTS = 1000
HEADER_TIMEOUT = 4.0
BYTE_EVERY = 2.0
PARTIAL = b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
VALID = b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class _Slow(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.sent = 0
        self.closed_at: float | None = None

    def drip(self) -> None:
        if self.closed_at is None and self.sent < len(PARTIAL):
            transport: Any = self.transport
            transport.write(PARTIAL[self.sent : self.sent + 1])
            self.sent += 1

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed_at = time.monotonic()


class SlowClientTests(TestCase):
    """
    Slow clients cannot starve the server.
    """

    timeout = 90

    async def test_slow_loris(self) -> None:
        """1000 connections dripping header bytes are cut with 408 at the header
        timeout, and valid requests made meanwhile are all answered."""
        server = ServerProcess(
            plugin_args(
                "--header-timeout", f"{HEADER_TIMEOUT:g}", "--max-connections", "5000"
            )
        )
        await server.start()
        self.addCleanup(server.stop)
        endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, server.port)
        slow = [_Slow() for _ in range(SLOW_CLIENTS)]
        for start in range(0, SLOW_CLIENTS, 40):
            await gatherResults(
                [connectProtocol(endpoint, p) for p in slow[start : start + 40]]
            )
        started = time.monotonic()

        def drip_all() -> None:
            for p in slow:
                p.drip()

        dripping = LoopingCall(drip_all)
        dripping.clock = reactor
        dripping.start(BYTE_EVERY, now=True)

        def stop_dripping() -> None:
            if dripping.running:
                dripping.stop()

        self.addCleanup(stop_dripping)

        answered = []
        while time.monotonic() - started < HEADER_TIMEOUT + 4:
            [(code, _, _)] = split_responses(await raw_exchange(server.port, [VALID]))
            answered.append(code)
            await deferLater(reactor, 0.1, lambda: None)
        while (
            any(p.closed_at is None for p in slow)
            and time.monotonic() - started < HEADER_TIMEOUT + 20
        ):
            await deferLater(reactor, 0.2, lambda: None)
        stop_dripping()

        self.assertGreater(len(answered), 10)
        self.assertEqual(set(answered), {200})
        still_open = [p for p in slow if p.closed_at is None]
        self.assertEqual(len(still_open), 0)
        for p in slow:
            self.assertTrue(p.data.startswith(b"HTTP/1.1 408 "), p.data[:40])
            assert p.closed_at is not None
            # Cut at the timeout, not before it.
            self.assertGreaterEqual(p.closed_at - started, HEADER_TIMEOUT - 0.5)
            # Still dripping when cut: the timeout, not the request's end, cut it.
            self.assertLess(p.sent, len(PARTIAL))
        self.assertNotIn("Traceback", server.output)
