"""
Test helper: a private C{redis-server} on a free port of 127.0.0.1, with no
persistence, that a test can stop and start again on the same port (for the
fault tests).

    redis = RedisServer()
    redis.start()                 # blocks until it answers PING
    self.addCleanup(redis.stop)
    redis.url                     # "redis://127.0.0.1:PORT/0"
    redis.command("DBSIZE")       # 0: a tiny synchronous client for checks
    redis.stop(); redis.start()   # down, then up again on the same port

    redis = started_redis(test)   # the same, cleaned up after test
    connection = await connected(test, redis.url)   # a live RedisConnection

C{REDIS_SERVER} is the path of C{redis-server}, or L{None} when it is not
installed; C{SKIP_REASON} is then a reason to give to C{skip}.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from gameserver.redis_connection import RedisConnection, RedisSettings
from tests.support import LOCALHOST, free_port

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = (
    None
    if REDIS_SERVER
    else "redis-server is not installed (apt-get install redis-server)"
)


class RedisError(Exception):
    """
    An error reply from Redis to L{RedisServer.command}.
    """


def _encode(args: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2]
    if kind == b"*":
        size = int(rest)
        if size < 0:
            return None
        return [_read_reply(stream) for _ in range(size)]
    raise ValueError(f"unexpected reply {line!r}")


class RedisServer:
    """
    A C{redis-server} child process on C{port} of 127.0.0.1.
    """

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """
        @param tls: the paths of a certificate and its key: then it also
            listens with TLS on C{tls_port} (C{--redis rediss://...}).
        """
        self.port = free_port() if port is None else port
        self.password = password
        self.tls = tls
        self.tls_port = free_port() if tls else 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="gameserver-redis-")

    @property
    def url(self) -> str:
        """
        The C{--redis} URL of database 0 (with the password if there is one).
        """
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOCALHOST}:{self.port}/0"

    @property
    def socket_path(self) -> str:
        """
        The unix socket it also listens on (C{unix://} URLs).
        """
        return os.path.join(self._dir, "redis.sock")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """
        Start the server and wait until it answers C{PING}.
        """
        if REDIS_SERVER is None:
            raise RuntimeError(SKIP_REASON)
        if self.running:
            return
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        argv += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.tls:
            cert, key = self.tls
            argv += ["--tls-port", str(self.tls_port), "--tls-auth-clients", "no"]
            argv += ["--tls-cert-file", cert, "--tls-key-file", key]
            argv += ["--tls-ca-cert-file", cert]
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING") == b"PONG":
                    return
            except (OSError, RedisError):
                pass
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode} "
                    f"(port {self.port} taken?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def stop(self) -> None:
        """
        Stop the server (if it runs) and wait for it to exit; its data is
        gone (no persistence).
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def cleanup(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def command(self, *args: Any) -> Any:
        """
        Send one command and return its reply (bytes, int, list or None),
        blocking; raise L{RedisError} on an error reply.
        """
        with socket.create_connection((LOCALHOST, self.port), timeout=5) as s:
            stream = s.makefile("rb")
            if self.password:
                s.sendall(_encode(("AUTH", self.password)))
                _read_reply(stream)
            s.sendall(_encode(args))
            return _read_reply(stream)

    def keys(self) -> list[bytes]:
        """
        Every key in database 0, sorted.
        """
        return sorted(self.command("KEYS", "*"))


def started(test: Any, url: str, timeout: float = 2.0) -> RedisConnection:
    """
    A L{RedisConnection} to C{url} on the real reactor, started (connected or
    not yet) and stopped after C{test}.
    """
    connection = RedisConnection(RedisSettings.from_url(url), reactor, timeout)
    connection.start()
    test.addCleanup(connection.stop)
    return connection


async def connected(
    test: Any, url: str, timeout: float = 2.0, wait: float = 10.0
) -> RedisConnection:
    """
    A started L{RedisConnection} to C{url} on the real reactor, once it is
    connected; stopped after C{test}.
    """
    connection = started(test, url, timeout)
    await wait_until(connection.connected, wait)
    return connection


async def wait_until(condition: Callable[[], bool], wait: float = 10.0) -> None:
    """
    Poll C{condition} every 10 ms until it holds; fail after C{wait} seconds.
    """
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} did not hold within {wait} s")
        await deferLater(reactor, 0.01, lambda: None)


def started_redis(test: Any, password: str | None = None) -> RedisServer:
    """
    Start a L{RedisServer} for C{test} (a C{TestCase}), cleaned up after it.
    """
    server = RedisServer(password=password)
    server.start()
    test.addCleanup(server.cleanup)
    return server
