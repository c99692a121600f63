"""
A real gameserver process driven with blocking sockets, for tests that
generate requests synchronously (hypothesis) instead of on the reactor.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from tests.support import LOCALHOST, ROOT, plugin_args

_LISTENING = re.compile(r"gameserver listening on .*port=(\d+)")


class BlockingServer:
    """
    C{twistd -n gameserver} on a free port of 127.0.0.1, its output in a
    temporary file.
    """

    def __init__(self, *options: str) -> None:
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            "w+b", prefix="gameserver-", suffix=".log"
        )
        env = {**os.environ, "PYTHONPATH": ROOT}
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            *plugin_args(*options),
        ]
        self._process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        self.port = self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.output)
            if match:
                return int(match.group(1))
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not listen:\n{self.output}")

    @property
    def output(self) -> str:
        """
        Everything the server wrote so far.
        """
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def rss(self) -> int:
        """
        The server's resident set size in bytes.
        """
        with open(f"/proc/{self._process.pid}/status") as f:
            match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
        assert match is not None
        return int(match.group(1)) * 1024

    def exchange(self, chunks: Sequence[bytes], timeout: float = 10.0) -> bytes:
        """
        Send C{chunks} on a new connection, half-close it, and return all
        that arrives until the server closes.
        """
        with socket.create_connection((LOCALHOST, self.port), timeout=timeout) as s:
            try:
                for chunk in chunks:
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server refused and closed first: read its answer
            received = []
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    received.append(data)
            except ConnectionResetError:
                pass
            return b"".join(received)

    def stop(self) -> int:
        """
        SIGTERM the server and return its exit status.
        """
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def close(self) -> None:
        """
        Stop the server and remove its output file.
        """
        self.stop()
        self._log.close()
