"""
C{gameserver-stress}: simulated scores and relay players against a running
gameserver, with a report of throughput, latency percentiles and errors.

One process drives thousands of players over a small fixed pool of
persistent, pipelining HTTP/1.1 connections (L{gameserver.stress_http}).
Players are state machines (L{gameserver.stress_players}) on a timer wheel
that one L{LoopingCall} turns every few milliseconds: a player sends its next
request at its rate, and never before the reply to the previous one, so a
server that falls behind shows as an achieved rate below the offered one.
"""

import argparse
import json
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random, SystemRandom
from time import perf_counter
from typing import Any, Generic, TextIO, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater, react

from gameserver.stress_http import ConnectionPool, Exchange, Target
from gameserver.stress_players import (
    Kind,
    Mix,
    Player,
    RelayGames,
    RelayPlayer,
    ScoresPlayer,
    Verdict,
)
from gameserver.stress_stats import (
    Report,
    Statistics,
    build_report,
    format_report,
    load_pyplot,
    plot,
)

T = TypeVar("T")

# The timer wheel's slot: players send up to this late (and never early).
TICK = 0.002
# How often timeouts are checked and the progress bar redrawn.
HOUSEKEEPING = 0.25
# The longest the run waits for answers still in flight at its end.
DRAIN = 5.0
MAX_USER = 2**31 - 1


class TimerWheel(Generic[T]):
    """
    Items due at given times, in slots of C{tick} seconds: adding and taking
    out are O(1), and one periodic call serves every player instead of a
    reactor timer per request.
    """

    def __init__(self, tick: float, origin: float) -> None:
        self._tick = tick
        self._origin = origin
        self._slots: dict[int, list[T]] = {}
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, item: T, due: float) -> None:
        """Make C{item} due at C{due} (or at the next turn, if that is past)."""
        slot = int((due - self._origin) / self._tick)
        if slot < self._next:
            slot = self._next
        items = self._slots.get(slot)
        if items is None:
            self._slots[slot] = [item]
        else:
            items.append(item)
        self._count += 1

    def pop_due(self, now: float) -> list[T]:
        """Take out the items of every slot that ended by C{now}, oldest first."""
        end = int((now - self._origin) / self._tick)
        due: list[T] = []
        slots = self._slots
        for slot in range(self._next, end):
            items = slots.pop(slot, None)
            if items:
                due.extend(items)
        if end > self._next:
            self._next = end
        self._count -= len(due)
        return due


@dataclass
class StressOptions:
    """
    What to run; the command line's options.
    """

    url: str = "http://127.0.0.1:8080"
    scores_players: int = 100
    relay_players: int = 100
    rate: float = 5.0
    duration: float = 10.0
    connections: int = 8
    pipeline: int = 64
    levels: int = 1000
    mix: str = "10,50,40"
    relay_updates: int = 20
    timeout: float = 10.0
    seed: int | None = None
    progress: bool = False
    json: str | None = None
    plot: str | None = None
    fail_on_errors: bool = False


class ConnectError(Exception):
    """
    No connection to the server could be opened.
    """


def _mix(text: str) -> Mix:
    try:
        login, score, read = (float(x) for x in text.split(","))
        return Mix(login, score, read)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected LOGIN,SCORE,LIST shares such as 10,50,40, not {text!r}"
        ) from e


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of C{gameserver-stress}."""
    d = StressOptions()
    p = argparse.ArgumentParser(
        prog="gameserver-stress",
        description="Simulate scores and relay players against a running "
        "gameserver and report throughput, latency and errors.",
    )
    add = p.add_argument
    add(
        "--url",
        default=d.url,
        help="the server; the relay is URL/relay (default: %(default)s)",
    )
    add(
        "--scores-players",
        type=_count,
        default=d.scores_players,
        metavar="N",
        help="players that log in, post scores and read lists (default: %(default)s)",
    )
    add(
        "--relay-players",
        type=_count,
        default=d.relay_players,
        metavar="N",
        help="players that pair and play relay games (default: %(default)s)",
    )
    add(
        "--rate",
        type=_positive(float),
        default=d.rate,
        metavar="R",
        help="requests per second of each player (default: %(default)s)",
    )
    add(
        "--duration",
        type=_positive(float),
        default=d.duration,
        metavar="S",
        help="seconds of load (default: %(default)s)",
    )
    add(
        "--connections",
        type=_positive(int),
        default=d.connections,
        metavar="N",
        help="persistent connections shared by all players (default: %(default)s)",
    )
    add(
        "--pipeline",
        type=_positive(int),
        default=d.pipeline,
        metavar="N",
        help="most requests in flight on one connection (default: %(default)s)",
    )
    add(
        "--levels",
        type=_positive(int),
        default=d.levels,
        metavar="N",
        help="levels scores players pick from (default: %(default)s)",
    )
    add(
        "--mix",
        type=_mix,
        default=d.mix,
        metavar="L,S,R",
        help="shares of logins, score posts and list reads (default: %(default)s)",
    )
    add(
        "--relay-updates",
        type=_positive(int),
        default=d.relay_updates,
        metavar="N",
        help="game updates a relay player sends before it quits (default: %(default)s)",
    )
    add(
        "--timeout",
        type=_positive(float),
        default=d.timeout,
        metavar="S",
        help="seconds a reply may take before its connection is dropped "
        "(default: %(default)s)",
    )
    add("--seed", type=int, default=None, help="random seed (default: random)")
    add(
        "--progress",
        action="store_true",
        help="draw the progress bar even when stderr is not a terminal",
    )
    add("--json", metavar="FILE", help="also write the figures as JSON")
    add(
        "--plot",
        metavar="FILE",
        help="save latency histograms and throughput over time (needs matplotlib)",
    )
    add(
        "--fail-on-errors",
        action="store_true",
        help="exit with status 1 if there was any error",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> StressOptions:
    """The options of C{argv}; usage errors exit with status 2."""
    p = parser()
    namespace = p.parse_args(argv)
    if namespace.scores_players + namespace.relay_players == 0:
        p.error("no players: give --scores-players or --relay-players")
    values = vars(namespace)
    if isinstance(values["mix"], str):
        values["mix"] = _mix(values["mix"])
    mix: Mix = values.pop("mix")
    options = StressOptions(**values)
    options.mix = ",".join(f"{x:g}" for x in mix.shares)
    return options


class Progress:
    """
    A one-line progress bar redrawn with C{\\r}.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO, duration: float) -> None:
        self._stream = stream
        self._duration = duration
        self._last = (0.0, 0)

    def draw(self, elapsed: float, responses: int, errors: int) -> None:
        """Show C{elapsed} seconds, the recent rate and the error count."""
        then, before = self._last
        rate = (responses - before) / (elapsed - then) if elapsed > then else 0.0
        self._last = (elapsed, responses)
        done = int(self.WIDTH * min(1.0, elapsed / self._duration))
        bar = "#" * done + "-" * (self.WIDTH - done)
        self._stream.write(
            f"\r{elapsed:6.1f}/{self._duration:g} s [{bar}] "
            f"{rate:8.0f} req/s  {errors} errors "
        )
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar."""
        self._stream.write("\r" + " " * 79 + "\r")
        self._stream.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadRun:
    """
    One run: players, the connection pool, the wheel that paces them, and
    the statistics; the pool's L{ExchangeSink}.
    """

    def __init__(
        self, reactor: Any, options: StressOptions, progress: TextIO | None = None
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.options = options
        self.seed = (
            options.seed if options.seed is not None else SystemRandom().getrandbits(32)
        )
        self.target = Target(options.url)
        self._interval = 1.0 / options.rate
        self.games = RelayGames()
        self.players = self._players(Random(self.seed))
        self.pool = ConnectionPool(
            reactor, self.target, options.connections, options.pipeline, self
        )
        self.stats = Statistics(perf_counter())
        self._wheel: TimerWheel[Player] = TimerWheel(TICK, perf_counter())
        self._progress = (
            Progress(progress, options.duration) if progress is not None else None
        )
        self._running = False
        self._finished = False
        self.responses = 0
        self.errors = 0

    def _players(self, rng: Random) -> list[Player]:
        o = self.options
        mix = Mix(*(float(x) for x in o.mix.split(",")))
        first_user = rng.randrange(1, MAX_USER - o.scores_players)
        players: list[Player] = [
            ScoresPlayer(first_user + i, self.target, rng, o.levels, mix)
            for i in range(o.scores_players)
        ]
        nonce = rng.getrandbits(32)
        players += [
            RelayPlayer(
                f"stress-{nonce:08x}-{i}", self.target, o.relay_updates, self.games
            )
            for i in range(o.relay_players)
        ]
        rng.shuffle(players)
        return players

    async def run(self) -> Report:
        """Run the load for the configured duration and report on it."""
        o = self.options
        await self.pool.start()
        if not self.pool.connected:
            self.pool.stop()
            errors = ", ".join(self.pool.connect_errors) or "no connection"
            raise ConnectError(f"cannot connect to {o.url}: {errors}")
        rng = Random(self.seed ^ 0x5EED)
        cpu = _cpu_seconds()
        start = perf_counter()
        self.stats = Statistics(start)
        self._wheel = TimerWheel(TICK, start)
        # Spread the first requests over one interval, not all at once.
        for player in self.players:
            player.due = start + rng.random() * self._interval
            self._wheel.add(player, player.due)
        self._running = True
        ticker = LoopingCall(self._tick)
        ticker.clock = self._clock
        ticker.start(TICK)
        housekeeping = LoopingCall(self._housekeeping)
        housekeeping.clock = self._clock
        housekeeping.start(HOUSEKEEPING, now=False)
        try:
            await deferLater(self._clock, o.duration, lambda: None)
            self._running = False
            cpu = _cpu_seconds() - cpu
            ticker.stop()
            drain_until = perf_counter() + min(o.timeout, DRAIN)
            while self.pool.in_flight and perf_counter() < drain_until:
                await deferLater(self._clock, 0.01, lambda: None)
        finally:
            self._running = False
            if ticker.running:
                ticker.stop()
            housekeeping.stop()
        unfinished = self.pool.in_flight
        self._finished = True
        self.pool.stop()
        if self._progress is not None:
            self._progress.clear()
        for reason, count in self.pool.connect_errors.items():
            self.stats.socket_errors[reason] += count
            self.stats.other_errors += count
        return build_report(
            self.stats,
            url=o.url,
            seed=self.seed,
            duration=o.duration,
            scores_players=o.scores_players,
            relay_players=o.relay_players,
            rate=o.rate,
            connections=o.connections,
            unfinished=unfinished,
            games=(self.games.started, self.games.finished, self.games.partner_quit),
            cpu_seconds=cpu,
        )

    def _tick(self) -> None:
        if not self._running:
            return
        now = perf_counter()
        submit = self.pool.submit
        for player in self._wheel.pop_due(now):
            kind, data = player.next_request()
            submit(Exchange(player, kind, data, now))
        self.pool.flush()

    def _housekeeping(self) -> None:
        now = perf_counter()
        self.pool.expire(now, self.options.timeout)
        if self._progress is not None and self._running:
            self._progress.draw(now - self.stats.start, self.responses, self.errors)

    def _again(self, player: Player, now: float) -> None:
        # At the player's rate, but never before the reply: no catching up.
        if self._running:
            due = player.due + self._interval
            player.due = due if due > now else now
            self._wheel.add(player, player.due)

    # ExchangeSink
    def completed(
        self, exchange: Exchange, status: int, body: bytes, now: float
    ) -> None:
        if self._finished:
            return
        stats = self.stats
        kind = exchange.kind
        stats.record(kind, now - exchange.written, now)
        if exchange.queued:
            stats.wait(exchange.written - exchange.issued)
        self.responses += 1
        player: Player = exchange.player
        if player.handle(status, body) is Verdict.ERROR:
            self.errors += 1
            stats.error(Kind(kind), status, body, now)
        self._again(player, now)

    def failed(self, exchange: Exchange, reason: str, now: float) -> None:
        if self._finished:
            return
        self.errors += 1
        self.stats.socket_error(Kind(exchange.kind), reason, now)
        player: Player = exchange.player
        player.failed()
        self._again(player, now)


async def run(
    reactor: Any, options: StressOptions, progress: TextIO | None = None
) -> tuple[Report, Statistics]:
    """Run the load of C{options}; the report and the raw statistics."""
    load = LoadRun(reactor, options, progress)
    report = await load.run()
    return report, load.stats


async def _cli(reactor: Any, options: StressOptions) -> None:
    stream = sys.stderr if options.progress or sys.stderr.isatty() else None
    try:
        report, stats = await run(reactor, options, stream)
    except (ConnectError, ValueError) as e:
        print(f"gameserver-stress: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    sys.stdout.write(format_report(report))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report.as_json(), f, indent=2)
            f.write("\n")
    if options.plot:
        plot(report, stats, options.plot)
    if options.fail_on_errors and report.errors:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{gameserver-stress} console script."""
    options = parse_args(argv)
    try:
        Target(options.url)
    except ValueError as e:
        parser().error(str(e))
    if options.plot:
        try:
            load_pyplot()
        except ImportError as e:
            print(f"gameserver-stress: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    react(lambda reactor: Deferred.fromCoroutine(_cli(reactor, options)))


if __name__ == "__main__":
    main()
