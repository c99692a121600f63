"""
Test helpers for operations: any process with its output, polled for a
pattern with a bound, and the metrics port of a running server.
"""

import os
import re
import signal
from collections.abc import Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from tests.support import ROOT, ServerProcess, exit_code

METRICS_LISTENING = re.compile(r"gameserver metrics listening on .*port=(\d+)")


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(exit_code(reason))


class Spawned:
    """
    A child process whose output (stdout and stderr) is collected.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        environment = dict(os.environ if env is None else env)
        environment["PYTHONPATH"] = ROOT
        self._protocol = _Output()
        self._process = reactor.spawnProcess(
            self._protocol, argv[0], list(argv), env=environment, path=ROOT
        )

    @property
    def output(self) -> str:
        return self._protocol.output.decode("utf-8", "replace")

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """
        Wait until the output matches C{pattern}; fail after C{timeout} s.
        """
        for _ in range(int(timeout / 0.05)):
            match = re.search(pattern, self.output)
            if match:
                return match
            if self._protocol.ended.called:
                break
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"no {pattern!r} in output:\n{self.output}")

    def signal(self, name: str) -> None:
        if not self._protocol.ended.called:
            self._process.signalProcess(name)

    async def ended(self) -> int | None:
        return await self._protocol.ended

    async def stop(self) -> int | None:
        self.signal("TERM")
        return await self._protocol.ended


async def wait_for_output(
    server: ServerProcess, pattern: re.Pattern[str], timeout: float = 10.0
) -> re.Match[str]:
    """
    Wait until C{server}'s output matches C{pattern}; fail after C{timeout} s.
    """
    for _ in range(int(timeout / 0.05)):
        match = pattern.search(server.output)
        if match:
            return match
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"no {pattern.pattern!r} in output:\n{server.output}")


async def metrics_port(server: ServerProcess) -> int:
    """
    The port the server's metrics endpoint listens on.
    """
    return int((await wait_for_output(server, METRICS_LISTENING)).group(1))


def send_signal(server: ServerProcess, sig: signal.Signals) -> None:
    """
    Send C{sig} to C{server}.
    """
    server._process.signalProcess(sig.name.removeprefix("SIG"))
