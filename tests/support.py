"""
Test helpers: a real gameserver process, raw HTTP over TCP, and StubTreq.
"""

import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCALHOST = "127.0.0.1"
ANY_PORT = f"tcp:0:interface={LOCALHOST}"
_LISTENING = re.compile(rb"gameserver listening on .*port=(\d+)")


def free_port() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


def exit_code(reason: Failure) -> int | None:
    """
    The exit code of an ended process, or minus the signal that ended it
    (gameserver handles SIGTERM itself and exits 0; plain twistd would
    re-raise it).
    """
    value: Any = reason.value
    code: int | None = value.exitCode
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        code = -value.signal
    return code


class _ServerProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called:
            match = _LISTENING.search(self.output)
            if match:
                self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(f"server exited before listening:\n{self.output.decode()}")
            )
        self.ended.callback(exit_code(reason))


class ServerProcess:
    """
    A real C{twistd} running gameserver on a free port of 127.0.0.1.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = env
        self.port = 0
        self._protocol = _ServerProtocol()

    @property
    def output(self) -> str:
        return self._protocol.output.decode("utf-8", "replace")

    @property
    def running(self) -> bool:
        """
        Whether the process has not ended.
        """
        return not self._protocol.ended.called

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        """
        Start the process and wait until it listens.
        """
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (ROOT, env.get("PYTHONPATH", "")) if p
        )
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            *self.args,
        ]
        self._process = reactor.spawnProcess(
            self._protocol, sys.executable, argv, env=env, path=ROOT
        )
        timer = reactor.callLater(timeout, self._protocol.listening.cancel)
        try:
            self.port = await self._protocol.listening
        finally:
            if timer.active():
                timer.cancel()

    async def stop(self) -> int | None:
        """
        Send SIGTERM and return the exit code (or minus the ending signal).
        """
        if not self._protocol.ended.called:
            self._process.signalProcess(signal.SIGTERM)
        return await self._protocol.ended

    async def ended(self) -> int | None:
        """
        Wait for the process to end by itself.
        """
        return await self._protocol.ended


def plugin_args(*options: str) -> list[str]:
    """
    Arguments for C{twistd -n gameserver} on a free port of 127.0.0.1.
    """
    return ["-n", "--pidfile=", "gameserver", "--port", ANY_PORT, *options]


class _Collector(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.data)


async def raw_exchange(
    port: int,
    chunks: Sequence[bytes],
    pause: float = 0.0,
    timeout: float = 10.0,
) -> bytes:
    """
    Send C{chunks} over one TCP connection (C{pause} seconds apart) and return
    everything received until the server closes it; raise L{TimeoutError} if
    the server has not closed it within C{timeout} seconds.
    """
    endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, port)
    collector = _Collector()
    await connectProtocol(endpoint, collector)
    assert collector.transport is not None
    transport: Any = collector.transport
    timed_out: list[bool] = []

    def give_up() -> None:
        timed_out.append(True)
        transport.abortConnection()

    timer = reactor.callLater(timeout, give_up)
    for chunk in chunks:
        transport.write(chunk)
        if pause:
            await deferLater(reactor, pause, lambda: None)
    try:
        data = await collector.closed
    finally:
        if timer.active():
            timer.cancel()
    if timed_out:
        raise TimeoutError(f"the server kept the connection open; got {data[:200]!r}")
    return data


def split_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """
    Split raw HTTP/1.1 responses (with C{Content-Length} or chunked) into
    C{(status, headers, body)}, leaving out C{100 Continue}.
    """
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body += data[:size]
                data = data[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, data = data[:length], data[length:]
        responses.append((status, headers, body))
    return responses
