"""
Microseconds per request that the durable store adds in the server process,
in process: the in-memory store against the durable one, whose writer
process is simulated.

Both stores sit behind the real channel and resource tree (on
L{StringTransport}s, with no socket and no reactor), fed the mix of
C{bench/scores_mix.lua}: 10% logins of new users, 50% score posts with one
of their keys on 1000 levels, 40% list reads.  The durable store runs its
real writer protocol (L{gameserver.durable}'s lines, pipe writes and
acknowledgements), but the process it spawns is a stand-in that
acknowledges each batch at once, every C{--batch} requests (about what
C{bench/scores_mix.py} sees with 32 connections).  So the figure is the
server process's own work for durability, without SQLite, the sync, or a
second process competing for the machine.  Prints the best of several
rounds of each, alternating.

    python bench/durable_request_cost.py [--requests 30000] [--rounds 7]
        [--batch 30]
"""

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from gameserver.channel import GameHTTPFactory, HTTPChannel  # noqa: E402
from gameserver.durable import DurableScores, open_database  # noqa: E402
from gameserver.leaderboard import Leaderboards  # noqa: E402
from gameserver.scores import MemoryScores, ScoresBackend  # noqa: E402
from gameserver.sessions import StoredSessions  # noqa: E402
from gameserver.web import GameRoot  # noqa: E402

TTL = 600.0


class StandInWriter:
    """
    The process transport a writer gets: counts the lines handed over.
    """

    pid = 1

    def __init__(self, protocol: ProcessProtocol) -> None:
        self.protocol = protocol
        self.lines = 0

    def write(self, data: bytes) -> None:
        self.lines += data.count(b"\n")


class StandInReactor(Clock):
    """
    A clock whose spawnProcess starts a L{StandInWriter}.
    """

    writer: StandInWriter | None = None

    def spawnProcess(self, protocol: ProcessProtocol, *args: Any, **kw: Any) -> Any:
        self.writer = StandInWriter(protocol)
        return self.writer

    def commit(self) -> int:
        """
        End the reactor turn (the writer gets its batch) and acknowledge
        the batch; return its lines.
        """
        self.advance(0)
        writer = self.writer
        if writer is None or not writer.lines:
            return 0
        lines, writer.lines = writer.lines, 0
        writer.protocol.childDataReceived(1, b"%d 0.000300\n" % lines)
        self.advance(0)
        return lines


def stack(directory: str | None) -> tuple[GameHTTPFactory, StandInReactor]:
    """
    The site on the in-memory store, or on a durable one in C{directory}.
    """
    clock = StandInReactor()
    clock.advance(time.time())
    scores: ScoresBackend
    if directory is not None:
        database = open_database(os.path.join(directory, "game.db"))
        scores = DurableScores.load(database, clock, "stored", TTL, reactor=clock)
    else:
        scores = MemoryScores(StoredSessions(clock, TTL), Leaderboards())
    return GameHTTPFactory(GameRoot(scores), clock), clock


def connect(factory: GameHTTPFactory) -> tuple[HTTPChannel, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel = factory.buildProtocol(None)
    channel.makeConnection(transport)  # type: ignore[no-untyped-call]
    return channel, transport


def login(user: int) -> bytes:
    return b"GET /%d/login HTTP/1.1\r\nHost: x\r\n\r\n" % user


def mix(keys: list[bytes], count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    requests = []
    user = 1_000_000
    for _ in range(count):
        r = rng.random()
        if r < 0.1:
            user += 1
            requests.append(login(user))
        elif r < 0.6:
            score = b"%d" % rng.randrange(1_000_001)
            requests.append(
                b"POST /%d/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n%s"
                % (rng.randrange(1000), rng.choice(keys), len(score), score)
            )
        else:
            requests.append(
                b"GET /%d/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"
                % rng.randrange(1000)
            )
    return requests


def run(durable: bool, count: int, batch: int, seed: int) -> tuple[float, int, int]:
    """
    Seconds for C{count} requests, the lines written, and the commits.
    """
    with tempfile.TemporaryDirectory(prefix="gameserver-bench-") as directory:
        return _run(stack(directory if durable else None), count, batch, seed)


def _run(
    site: tuple[GameHTTPFactory, StandInReactor], count: int, batch: int, seed: int
) -> tuple[float, int, int]:
    factory, clock = site
    channel, transport = connect(factory)
    keys = []
    for user in range(1, 1001):
        channel.dataReceived(login(user))
        clock.commit()
        keys.append(transport.value().rsplit(b"\r\n\r\n", 1)[1])
        transport.clear()
    requests = mix(keys, count, seed)
    # Requests go round 32 connections, as from bench/scores_mix.py.
    channels = [connect(factory) for _ in range(32)]
    feeds: list[Callable[[bytes], None]] = [c.dataReceived for c, _ in channels]
    lines = commits = 0
    started = time.perf_counter()
    for n, request in enumerate(requests, 1):
        feeds[n & 31](request)
        if n % batch == 0:
            written = clock.commit()
            lines += written
            commits += written > 0
    written = clock.commit()
    elapsed = time.perf_counter() - started
    lines += written
    commits += written > 0
    answered = sum(t.value().count(b"HTTP/1.1 200 ") for _, t in channels)
    if answered != count:
        raise RuntimeError(f"{answered} of {count} requests answered 200")
    return elapsed, lines, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--batch", type=int, default=30, help="requests per simulated commit"
    )
    args = parser.parse_args()
    best = {"in-memory": 1e9, "durable": 1e9}
    writes = commits = 0
    for round_ in range(args.rounds):
        for name in best:
            elapsed, lines, batches = run(
                name == "durable", args.requests, args.batch, round_
            )
            best[name] = min(best[name], elapsed)
            if name == "durable":
                writes, commits = lines, batches
    for name, seconds in best.items():
        print(f"{name:9} {seconds / args.requests * 1e6:6.2f} us per request")
    extra = (best["durable"] - best["in-memory"]) / args.requests * 1e6
    print(
        f"the durable store adds {extra:.2f} us per request "
        f"({writes / args.requests:.2f} writes per request, "
        f"{writes / max(commits, 1):.1f} per commit)"
    )


if __name__ == "__main__":
    main()
