"""
The stress client's measurements and report: latencies and throughput per
request kind, error counts, the end-of-run table, JSON and plot.
"""

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from gameserver.stress_players import Kind

PERCENTILES = (50, 90, 99)


def percentile(ordered: Sequence[float], p: float) -> float:
    """
    The nearest-rank C{p}th percentile of ascending C{ordered} (0 if empty):
    the smallest value with at least C{p}% of the values at or below it.
    """
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def relay_error_key(status: int, body: bytes) -> str:
    """
    How a relay error is counted: the status and the body's first two fields
    (a payload other than C{*} is elided: C{21/*/<data>} carries game data).
    """
    parts = body.decode("utf-8", "replace").split("/", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return f"{status} {body[:40].decode('utf-8', 'replace')!r}"
    payload = "*" if parts[2] == "*" else "..."
    return f"{status} {parts[0]}/{parts[1]}/{payload}"


class Statistics:
    """
    What a run measured.  Latencies are kept whole (8 bytes a request, in an
    C{array}) so percentiles are exact; throughput is counted per second.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.latencies = [array("d") for _ in Kind]
        self.errors = [0] * len(Kind)
        self.timeline = [array("l") for _ in Kind]
        self.error_timeline = array("l")
        self.by_status: Counter[int] = Counter()
        self.relay_errors: Counter[str] = Counter()
        self.socket_errors: Counter[str] = Counter()
        self.waits = array("d")
        # Errors of no request: connections that could not be opened.
        self.other_errors = 0

    @staticmethod
    def _bump(line: "array[int]", second: int) -> None:
        if second >= len(line):
            line.extend([0] * (second + 1 - len(line)))
        line[second] += 1

    def record(self, kind: int, latency: float, now: float) -> None:
        """A response of C{kind} took C{latency} seconds, ending at C{now}."""
        self.latencies[kind].append(latency)
        second = int(now - self.start)
        line = self.timeline[kind]
        if second < len(line):
            line[second] += 1
        else:
            self._bump(line, second)

    def wait(self, seconds: float) -> None:
        """A request waited C{seconds} for room on a connection."""
        self.waits.append(seconds)

    def error(self, kind: Kind, status: int, body: bytes, now: float) -> None:
        """A reply that is an error."""
        self.errors[kind] += 1
        self.by_status[status] += 1
        if kind.relay:
            self.relay_errors[relay_error_key(status, body)] += 1
        self._bump(self.error_timeline, max(0, int(now - self.start)))

    def socket_error(self, kind: Kind, reason: str, now: float) -> None:
        """A request that got no reply."""
        self.errors[kind] += 1
        self.socket_errors[reason] += 1
        self._bump(self.error_timeline, max(0, int(now - self.start)))


@dataclass
class KindFigures:
    """
    One row of the table.
    """

    count: int
    rate: float
    errors: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(
        cls, latencies: Sequence[float], in_time: int, duration: float, errors: int
    ) -> "KindFigures":
        ordered = sorted(latencies)
        ms = [1000 * percentile(ordered, p) for p in PERCENTILES]
        return cls(
            count=len(ordered),
            rate=in_time / duration if duration > 0 else 0.0,
            errors=errors,
            p50=ms[0],
            p90=ms[1],
            p99=ms[2],
            max=1000 * ordered[-1] if ordered else 0.0,
        )


@dataclass
class Report:
    """
    The figures of a run, for the table and for C{--json}.
    """

    url: str
    seed: int
    duration: float
    scores_players: int
    relay_players: int
    rate: float
    connections: int
    requests: int
    errors: int
    offered_rate: float
    achieved_rate: float
    kinds: dict[str, KindFigures]
    total: KindFigures
    errors_by_status: dict[str, int]
    relay_errors: dict[str, int]
    socket_errors: dict[str, int]
    unfinished: int
    waited: int
    wait_p99: float
    games_started: int
    games_finished: int
    games_ended_by_partner_quit: int
    cpu_seconds: float
    cpu_percent: float
    timeline: dict[str, list[int]] = field(default_factory=dict)
    error_timeline: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""

        def row(figures: KindFigures) -> dict[str, Any]:
            return {
                "count": figures.count,
                "rps": round(figures.rate, 2),
                "errors": figures.errors,
                "latency_ms": {
                    "p50": round(figures.p50, 3),
                    "p90": round(figures.p90, 3),
                    "p99": round(figures.p99, 3),
                    "max": round(figures.max, 3),
                },
            }

        return {
            "url": self.url,
            "seed": self.seed,
            "duration_s": self.duration,
            "players": {"scores": self.scores_players, "relay": self.relay_players},
            "rate_per_player": self.rate,
            "connections": self.connections,
            "requests": self.requests,
            "errors": self.errors,
            "offered_rps": round(self.offered_rate, 2),
            "achieved_rps": round(self.achieved_rate, 2),
            "kinds": {name: row(f) for name, f in self.kinds.items()},
            "total": row(self.total),
            "errors_by_status": self.errors_by_status,
            "relay_errors": self.relay_errors,
            "socket_errors": self.socket_errors,
            "unfinished": self.unfinished,
            "backlog": {"waited": self.waited, "wait_p99_ms": round(self.wait_p99, 3)},
            "relay_games": {
                "started": self.games_started,
                "finished": self.games_finished,
                "ended_by_partner_quit": self.games_ended_by_partner_quit,
            },
            "client_cpu": {
                "seconds": round(self.cpu_seconds, 3),
                "percent_of_one_core": round(self.cpu_percent, 1),
            },
            "timeline_per_second": self.timeline,
            "errors_per_second": self.error_timeline,
        }


def build_report(
    stats: Statistics,
    *,
    url: str,
    seed: int,
    duration: float,
    scores_players: int,
    relay_players: int,
    rate: float,
    connections: int,
    unfinished: int,
    games: tuple[int, int, int],
    cpu_seconds: float,
) -> Report:
    """
    Sum up C{stats}: rates count the responses of the first C{duration}
    seconds; latencies and errors count every response.
    """
    whole = max(1, math.ceil(duration - 1e-9))
    kinds: dict[str, KindFigures] = {}
    timeline: dict[str, list[int]] = {}
    all_latencies: array[float] = array("d")
    in_time = 0
    for kind in Kind:
        latencies = stats.latencies[kind]
        if not latencies and not stats.errors[kind]:
            continue
        line = list(stats.timeline[kind][:whole])
        timeline[kind.label] = line
        kinds[kind.label] = KindFigures.of(
            latencies, sum(line), duration, stats.errors[kind]
        )
        in_time += sum(line)
        all_latencies.extend(latencies)
    errors = sum(stats.errors) + stats.other_errors
    waits = sorted(stats.waits)
    return Report(
        url=url,
        seed=seed,
        duration=duration,
        scores_players=scores_players,
        relay_players=relay_players,
        rate=rate,
        connections=connections,
        requests=len(all_latencies),
        errors=errors,
        offered_rate=(scores_players + relay_players) * rate,
        achieved_rate=in_time / duration if duration > 0 else 0.0,
        kinds=kinds,
        total=KindFigures.of(all_latencies, in_time, duration, errors),
        errors_by_status={str(k): v for k, v in sorted(stats.by_status.items())},
        relay_errors=dict(stats.relay_errors.most_common()),
        socket_errors=dict(stats.socket_errors.most_common()),
        unfinished=unfinished,
        waited=len(waits),
        wait_p99=1000 * percentile(waits, 99),
        games_started=games[0],
        games_finished=games[1],
        games_ended_by_partner_quit=games[2],
        cpu_seconds=cpu_seconds,
        cpu_percent=100 * cpu_seconds / duration if duration > 0 else 0.0,
        timeline=timeline,
        error_timeline=list(stats.error_timeline[:whole]),
    )


def format_report(report: Report) -> str:
    """The report as the text table printed at the end of a run."""
    r = report
    share = 100 * r.achieved_rate / r.offered_rate if r.offered_rate else 0.0
    lines = [
        f"gameserver-stress: {r.url}, {r.duration:g} s, seed {r.seed}",
        f"players: {r.scores_players} scores + {r.relay_players} relay at "
        f"{r.rate:g} req/s each, {r.connections} connections",
        f"offered {r.offered_rate:.1f} req/s, achieved {r.achieved_rate:.1f} req/s "
        f"({share:.1f}%); {r.requests} responses, {r.errors} errors",
        f"client CPU: {r.cpu_seconds:.2f} s ({r.cpu_percent:.0f}% of one core)",
        "",
        f"{'kind':<16}{'count':>9}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>8}",
    ]

    def row(name: str, f: KindFigures) -> str:
        return (
            f"{name:<16}{f.count:>9}{f.rate:>10.1f}{f.p50:>9.2f}{f.p90:>9.2f}"
            f"{f.p99:>9.2f}{f.max:>9.2f}{f.errors:>8}"
        )

    lines += [row(name, f) for name, f in r.kinds.items()]
    lines.append(row("all", r.total))
    lines.append("")

    def counts(title: str, items: dict[str, int]) -> str:
        shown = ", ".join(f"{k}: {v}" for k, v in items.items()) or "none"
        return f"{title}: {shown}"

    lines.append(counts("errors by status", r.errors_by_status))
    if r.relay_players or r.relay_errors:
        lines.append(counts("relay errors", r.relay_errors))
    lines.append(counts("socket errors", r.socket_errors))
    if r.relay_players:
        lines.append(
            f"relay games: {r.games_started} started, {r.games_finished} finished "
            f"({r.games_ended_by_partner_quit} ended by the partner's quit, "
            "15/*/* not counted as an error)"
        )
    if r.waited:
        lines.append(
            f"requests that waited for a free connection slot: {r.waited}, "
            f"p99 wait {r.wait_p99:.2f} ms"
        )
    if r.unfinished:
        lines.append(f"requests unanswered when the run ended: {r.unfinished}")
    return "\n".join(lines) + "\n"


def load_pyplot() -> Any:
    """
    C{matplotlib.pyplot} on the file-only Agg backend, or C{ImportError} with
    a message saying how to install it.
    """
    try:
        matplotlib = import_module("matplotlib")
    except ImportError as e:
        raise ImportError(
            "--plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'gameserver[plot]')"
        ) from e
    matplotlib.use("Agg")
    return import_module("matplotlib.pyplot")


def plot(report: Report, stats: Statistics, path: str) -> None:
    """
    Save throughput over time and a latency histogram per kind to C{path}.
    """
    plt = load_pyplot()
    labels = list(report.kinds)
    columns = 3
    rows = 1 + math.ceil(len(labels) / columns)
    figure = plt.figure(figsize=(4.2 * columns, 2.8 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, columns)
    top = figure.add_subplot(grid[0, :])
    totals = [0] * max((len(line) for line in report.timeline.values()), default=0)
    for line in report.timeline.values():
        for second, count in enumerate(line):
            totals[second] += count
    top.plot(totals, "k-", linewidth=2, label="all")
    for label, line in report.timeline.items():
        top.plot(line, linewidth=1, label=label)
    if any(report.error_timeline):
        top.plot(report.error_timeline, "k--", label="errors")
    top.set_xlabel("second")
    top.set_ylabel("responses/s")
    top.set_title(
        f"throughput: {report.achieved_rate:.0f} of {report.offered_rate:.0f} req/s"
    )
    top.legend(fontsize="small", ncol=2)
    ticker = import_module("matplotlib.ticker")
    by_label = {kind.label: stats.latencies[kind] for kind in Kind}
    for i, label in enumerate(labels):
        axes = figure.add_subplot(grid[1 + i // columns, i % columns])
        ms = [1000 * x for x in by_label[label]]
        if ms:
            low, high = max(min(ms), 1e-3), max(max(ms), 2e-3)
            bins = [low * (high / low) ** (j / 60) for j in range(61)]
            axes.hist(ms, bins=bins)
            axes.set_xscale("log")
            axes.xaxis.set_major_formatter(ticker.ScalarFormatter())
            axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        f = report.kinds[label]
        axes.set_title(f"{label}: p50 {f.p50:.1f}, p99 {f.p99:.1f} ms", fontsize=9)
        axes.set_xlabel("latency (ms)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
