"""
Floods against the real server: resident memory before and after, per item,
and against the documented bound.

Starts C{twistd -n gameserver} on a free port of 127.0.0.1 for each case,
sends the flood over a few persistent connections with pipelined requests,
and reads the server's resident set size (C{/proc/PID/status}) and its state
gauges (C{--metrics-port}) before and after.

- C{logins}: N logins of distinct users (default a million), then 10% more
  past C{--max-sessions} (default 1,000,000): those get 503.
- C{levels}: 15 users post to each of 100,000 levels (full lists), then to
  10% more levels past C{--max-levels} (default 100,000): those get 503.
- C{relay}: N relay registrations with distinct names (12 characters, and
  again with names of C{--relay-max-name} characters, the worst case); past
  C{--relay-max-players} (50,000) they get C{11/*/*}.
- C{buckets}: N relay status requests, each from a distinct client named in
  C{X-Forwarded-For} by a trusted proxy: the rate-limit table stays under
  its 100,000 clients per kind.

    python bench/flood.py [--count 1000000] [--levels 100000]
        [--cases logins,levels,relay,buckets]
"""

import argparse
import asyncio
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

from scores_mix import free_port, gameserver, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONNECTIONS = 8
BATCH = 100


class Server:
    """
    A gameserver process with its metrics port.
    """

    def __init__(self, *options: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        argv = [
            *gameserver(self.port),
            "--metrics-port",
            f"tcp:{self.metrics_port}:interface=127.0.0.1",
            *options,
        ]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, "PYTHONPATH": ROOT},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.port, timeout=20)

    def rss(self) -> int:
        """
        The server's resident set size in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
        assert match is not None
        return int(match.group(1)) * 1024

    def gauge(self, name: str) -> float:
        """
        The value of metric C{gameserver_<name>}.
        """
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        match = re.search(rf"^gameserver_{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def _worker(port: int, requests: Iterator[bytes], codes: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = b""
    while True:
        batch = [r for _, r in zip(range(BATCH), requests, strict=False)]
        if not batch:
            break
        writer.write(b"".join(batch))
        pending = len(batch)
        while pending:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
                continue
            head = buffer[:head_end]
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            end = head_end + 4 + length
            while len(buffer) < end:
                buffer += await reader.read(1 << 16)
            codes[int(head[9:12])] += 1
            buffer = buffer[end:]
            pending -= 1
    writer.close()


def flood(port: int, requests: Iterator[bytes]) -> tuple[Counter[int], float]:
    """
    Send every request of C{requests}; return the status counts and seconds.
    """
    codes: Counter[int] = Counter()

    async def run() -> None:
        await asyncio.gather(
            *(_worker(port, requests, codes) for _ in range(CONNECTIONS))
        )

    started = time.monotonic()
    asyncio.run(run())
    return codes, time.monotonic() - started


def warm(server: Server, request: bytes) -> None:
    # Imports, caches and the first buffers are the baseline, not the flood.
    flood(server.port, iter([request] * 2000))


def report(
    label: str,
    before: int,
    after: int,
    items: float,
    codes: Counter[int],
    seconds: float,
) -> float:
    per = (after - before) / items if items else float("nan")
    total = sum(codes.values())
    print(
        f"  {label}: {total} requests in {seconds:.1f} s "
        f"({total / seconds:,.0f}/s), status {dict(sorted(codes.items()))}\n"
        f"    RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB: "
        f"+{(after - before) / 2**20:.1f} MiB, {per:.0f} bytes per item held "
        f"({items:.0f} held)",
        flush=True,
    )
    return per


def case_logins(count: int) -> None:
    print("logins: distinct users, stored sessions (default --max-sessions 1000000)")
    server = Server()
    try:
        warm(server, b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n")
        before = server.rss()
        requests = (
            b"GET /%d/login HTTP/1.1\r\nHost: x\r\n\r\n" % u for u in range(count)
        )
        codes, seconds = flood(server.port, requests)
        after = server.rss()
        live = server.gauge("sessions_live")
        per = report(f"{count} logins", before, after, live, codes, seconds)
        extra = count // 10
        requests = (
            b"GET /%d/login HTTP/1.1\r\nHost: x\r\n\r\n" % u
            for u in range(count, count + extra)
        )
        codes, seconds = flood(server.port, requests)
        final = server.rss()
        live = server.gauge("sessions_live")
        report(f"{extra} more logins past the cap", after, final, live, codes, seconds)
        print_bound("--max-sessions", 1_000_000, per)
    finally:
        server.stop()


def print_bound(what: str, count: int, per: float) -> None:
    """
    The memory C{count} items of C{per} bytes hold over the baseline.
    """
    print(
        f"    bound: {what} x {per:.0f} bytes = "
        f"{count * per / 2**20:.0f} MiB over the baseline",
        flush=True,
    )


def login(port: int, user: int) -> bytes:
    """
    A session key for C{user}.
    """
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /%d/login HTTP/1.1\r\nConnection: close\r\n\r\n" % user)
        response = b""
        while data := s.recv(4096):
            response += data
    return response.split(b"\r\n\r\n", 1)[1]


def case_levels(levels: int) -> None:
    print(
        "levels: 15 users post to every one of LEVELS levels (full lists), then to "
        "10% more levels past --max-levels (default 100000)"
    )
    server = Server()
    try:
        warm(server, b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n")
        keys = [login(server.port, user) for user in range(15)]
        before = server.rss()

        def posts(first: int, last: int) -> Iterator[bytes]:
            for level in range(first, last):
                for user, key in enumerate(keys):
                    body = b"%d" % (1000 + user)
                    yield (
                        b"POST /%d/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (level, key, len(body), body)
                    )

        codes, seconds = flood(server.port, posts(0, levels))
        after = server.rss()
        held = server.gauge("levels")
        per = report(f"{levels} full levels", before, after, held, codes, seconds)
        codes, seconds = flood(server.port, posts(levels, levels + levels // 10))
        final = server.rss()
        report(
            "10% more levels past the cap",
            after,
            final,
            server.gauge("levels"),
            codes,
            seconds,
        )
        print_bound("--max-levels", 100_000, per)
    finally:
        server.stop()


def case_relay(count: int, name_size: int) -> None:
    print(
        f"relay: registrations with distinct {name_size}-character names "
        "(default --relay-max-players 50000)"
    )
    server = Server()
    try:
        warm(server, b"GET /relay HTTP/1.1\r\nHost: x\r\n\r\n")
        before = server.rss()
        peak = 0.0

        def requests() -> Iterator[bytes]:
            for i in range(count):
                name = (b"p%d-" % i).ljust(name_size, b"x")
                body = b"0,%s,*,*,*" % name
                yield (
                    b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )

        codes, seconds = flood(server.port, requests())
        after = server.rss()
        peak = server.gauge("relay_players")
        per = report(f"{count} registrations", before, after, peak, codes, seconds)
        print_bound("--relay-max-players", 50_000, per)
    finally:
        server.stop()


def case_buckets(count: int) -> None:
    print(
        "buckets: relay requests from distinct forwarded clients "
        "(--trust-proxy 127.0.0.1; the table holds at most 100000 clients per kind)"
    )
    server = Server("--trust-proxy", "127.0.0.1", "--rate-limit-exempt", "none")
    try:
        warm(server, b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n")
        before = server.rss()

        def requests() -> Iterator[bytes]:
            for i in range(count):
                address = b"10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
                yield (
                    b"GET /relay HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n\r\n"
                    % address
                )

        codes, seconds = flood(server.port, requests())
        after = server.rss()
        held = server.gauge("rate_limit_clients")
        per = report(
            f"{count} requests, distinct clients", before, after, held, codes, seconds
        )
        print_bound("3 kinds x 100000 clients", 3 * 100_000, per)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=100_000)
    parser.add_argument("--cases", default="logins,levels,relay,buckets")
    args = parser.parse_args()

    def relay() -> None:
        case_relay(args.count, 12)
        case_relay(args.count, 256)

    cases: dict[str, Callable[[], None]] = {
        "logins": lambda: case_logins(args.count),
        "relay": relay,
        "buckets": lambda: case_buckets(args.count),
        "levels": lambda: case_levels(args.levels),
    }
    for name in args.cases.split(","):
        cases[name]()


if __name__ == "__main__":
    main()
