"""
Requests per second of the mixed scores workload: gameserver against aiohttp.

Starts gameserver (C{twistd -n gameserver}) and the minimal aiohttp
implementation of the same API in C{bench/aiohttp_scores.py} (and, with
C{--database}, gameserver on a fresh SQLite database; with
C{--twisted-baseline}, a bare twisted.web site answering every request with a
fixed body), each on a free port of 127.0.0.1, and drives them with wrk and
C{bench/scores_mix.lua} (10% logins, 50% score posts, 40% list reads over 1000
levels), alternating runs.  Prints one line per run (with the server side's
CPU per request, its processes and their children such as the durable
writer, and the share of the machine's CPU the hypervisor stole meanwhile),
the median of each, and the ratio of gameserver to aiohttp.

    python bench/scores_mix.py [--duration 10] [--rounds 3] [--connections 32]

With C{--redis}, also gameserver with C{--redis} on a fresh private
C{redis-server} per run (no persistence): one instance, and two instances
each driven by its own wrk process with half the connections (their
requests/s added, their latencies the worse of the two), and the ratios of
each to the in-memory gameserver of the same run.

Needs C{wrk} on the PATH (Debian: apt-get install wrk) and aiohttp
(pip install aiohttp); C{--redis} needs C{redis-server} (apt-get install
redis-server).
"""

import argparse
import atexit
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULT = re.compile(r"RESULT (.*)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The ports a contender listens on, and the processes serving them.
Served = tuple[list[int], list[int]]

BASELINE = """
import sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

class Fixed(Resource):
    isLeaf = True
    def render(self, request):
        return b"4711=1500,131=1220"

class QuietSite(Site):
    def log(self, request):
        pass

reactor.listenTCP(int(sys.argv[1]), QuietSite(Fixed()), interface="127.0.0.1")
reactor.run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def server(argv: list[str], port: int) -> Iterator[int]:
    """
    Run C{argv} until the block ends; yield its process id once C{port}
    accepts connections.
    """
    env = {**os.environ, "PYTHONPATH": ROOT}
    process = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(port)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def gameserver(port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "gameserver",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def durable_gameserver(port: int) -> list[str]:
    # A fresh database per run, so every run starts from the same state;
    # removed when the benchmark exits (its servers are stopped by then).
    directory = tempfile.mkdtemp(prefix="gameserver-bench-")
    atexit.register(shutil.rmtree, directory, True)
    return [*gameserver(port), "--database", os.path.join(directory, "game.db")]


def bare_twisted_web(port: int) -> list[str]:
    return [sys.executable, "-c", BASELINE, str(port)]


def aiohttp(port: int) -> list[str]:
    return [sys.executable, os.path.join(HERE, "aiohttp_scores.py"), str(port)]


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """
    A fresh C{redis-server} without persistence until the block ends; yield
    its URL and process id.
    """
    port = free_port()
    directory = tempfile.mkdtemp(prefix="gameserver-bench-redis-")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", directory]
    with server(argv, port) as pid:
        yield f"redis://127.0.0.1:{port}/0", pid


def tree_cpu(pids: list[int]) -> float:
    """
    CPU seconds (user and system) used so far by the processes C{pids} and
    their live descendants (the durable store's writer process); 0 where
    C{/proc} is missing.
    """
    total = 0.0
    todo = list(pids)
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except OSError:
            continue  # gone, or no /proc
    return total


def machine_times() -> tuple[float, float]:
    """
    All CPU time the kernel has counted so far, and the part of it stolen by
    the hypervisor for other guests (seconds; zeros without C{/proc/stat}).
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]) / CLOCK_TICKS, steal / CLOCK_TICKS


@contextmanager
def served(make: Callable[[int], list[str]]) -> Iterator[Served]:
    """
    One server of C{make} until the block ends; yield its port and process.
    """
    port = free_port()
    with server(make(port), port) as pid:
        yield [port], [pid]


def on_redis(instances: int) -> Callable[[], AbstractContextManager[Served]]:
    """
    C{instances} gameservers on one fresh Redis, each run.
    """

    @contextmanager
    def serve() -> Iterator[Served]:
        with redis_server() as (url, redis_pid), ExitStack() as stack:
            ports, pids = [], [redis_pid]
            for _ in range(instances):
                port = free_port()
                pid = stack.enter_context(
                    server([*gameserver(port), "--redis", url], port)
                )
                ports.append(port)
                pids.append(pid)
            yield ports, pids

    return serve


def wrk(
    port: int, duration: int, connections: int, process: int = 0
) -> "subprocess.Popen[str]":
    """
    Start wrk with the mixed workload against C{port}; C{process} tells
    several wrk processes' users apart.
    """
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            os.path.join(HERE, "scores_mix.lua"),
            f"http://127.0.0.1:{port}",
            "--",
            str(process),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def drive(ports: list[int], duration: int, connections: int) -> dict[str, float]:
    """
    Drive every port with its own wrk process at once (the connections shared
    out); their requests and errors added, their latencies the worst.
    """
    share = max(1, connections // len(ports))
    processes = [wrk(port, duration, share, i) for i, port in enumerate(ports)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=duration + 60)
        if process.returncode != 0:
            raise RuntimeError(f"wrk exited with {process.returncode}:\n{out}")
        match = RESULT.search(out)
        if match is None:
            raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
        results.append(
            {k: float(v) for k, v in (f.split("=") for f in match.group(1).split())}
        )
    total = {k: sum(r[k] for r in results) for k in ("rps", "non200", "errors")}
    for k in ("p50_ms", "p99_ms"):
        total[k] = max(r[k] for r in results)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--database",
        action="store_true",
        help="also run gameserver with --database (a fresh SQLite file per run)",
    )
    parser.add_argument(
        "--twisted-baseline",
        action="store_true",
        help="also run a bare twisted.web site returning a fixed body",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also run gameserver with --redis: one and two instances on one Redis",
    )
    parser.add_argument(
        "--no-aiohttp", action="store_true", help="leave the aiohttp server out"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    if args.redis and shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")

    contenders: dict[str, Callable[[], AbstractContextManager[Served]]] = {
        "gameserver": lambda: served(gameserver)
    }
    if not args.no_aiohttp:
        contenders["aiohttp"] = lambda: served(aiohttp)
    if args.database:
        contenders["durable"] = lambda: served(durable_gameserver)
    if args.twisted_baseline:
        contenders["twisted.web"] = lambda: served(bare_twisted_web)
    if args.redis:
        contenders["redis x1"] = on_redis(1)
        contenders["redis x2"] = on_redis(2)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name, serve in contenders.items():
            with serve() as (ports, pids):
                before = tree_cpu(pids)
                total, stolen = machine_times()
                r = drive(ports, args.duration, args.connections)
                used = tree_cpu(pids) - before
                total2, stolen2 = machine_times()
            # A shared host's other guests take CPU from this one: runs with
            # much of it stolen are not comparable.
            r["steal"] = (stolen2 - stolen) / max(total2 - total, 1e-9)
            # wrk's count over its whole run: CPU per request of the server
            # side (with the durable writer, or Redis), noise-free of how
            # the machine shared its cores out.
            r["cpu_us"] = used / max(1.0, r["rps"] * args.duration) * 1e6
            results[name].append(r)
            print(
                f"round {round_ + 1} {name:11} {r['rps']:9.0f} req/s  "
                f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                f"non-200 {r['non200']:.0f}  socket errors {r['errors']:.0f}  "
                f"server CPU {r['cpu_us']:.1f} us/request  steal {r['steal']:.0%}",
                flush=True,
            )
    print("median of the rounds:")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r["rps"] for r in runs)
        print(
            f"  {name:11} {medians[name]:9.0f} req/s  "
            f"p50 {statistics.median(r['p50_ms'] for r in runs):.2f} ms  "
            f"p99 {statistics.median(r['p99_ms'] for r in runs):.2f} ms  "
            f"non-200 {sum(r['non200'] for r in runs):.0f}  "
            f"server CPU {statistics.median(r['cpu_us'] for r in runs):.1f} us/request"
        )
    if "aiohttp" in medians:
        ratio = medians["gameserver"] / medians["aiohttp"]
        print(f"ratio gameserver / aiohttp: {ratio:.2f}")
    for name in ("redis x1", "redis x2"):
        if name in medians:
            ratio = medians[name] / medians["gameserver"]
            print(f"ratio {name} / in-memory gameserver: {ratio:.2f}")
    if "durable" in medians:
        ratio = medians["durable"] / medians["gameserver"]
        # Each round's pair ran back to back: their ratios show how much of
        # the spread is the machine (the durable store also waits on fsync).
        rounds = " ".join(
            f"{d['rps'] / g['rps']:.2f}"
            for d, g in zip(results["durable"], results["gameserver"], strict=True)
        )
        print(
            f"ratio durable (--database) / in-memory gameserver: {ratio:.2f} "
            f"(round by round: {rounds})"
        )


if __name__ == "__main__":
    main()
