"""
Prometheus metrics, counted cheaply and exposed on their own port.

The hot path only adds to plain Python ints and lists (L{Metrics.observe}:
one dict update, one bisection, two list/dict updates per response); a
L{prometheus_client} collector turns them into metric families when the
endpoint is scraped.  Gauges (sessions, levels, relay players and games) are
read from the state at scrape time, so they cost nothing between scrapes.
"""

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource
from twisted.logger import ILogObserver, LogLevel
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

#: The routes requests are counted under; never raw paths.
ROUTES = ("login", "score", "highscorelist", "relay", "healthz", "other")

#: Upper bounds (seconds) of the latency histograms' buckets.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """
    Bucket counts (bounds L{LATENCY_BOUNDS}) and a sum, for one Prometheus
    histogram series.
    """

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        # One count per bound, plus one for what is above the last bound.
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """
        The buckets as C{prometheus_client} wants them: cumulative, C{+Inf}
        last.
        """
        total = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip(LATENCY_BOUNDS, self.buckets, strict=False):
            total += count
            out.append((repr(bound), total))
        out.append(("+Inf", total + self.buckets[-1]))
        return out


class Metrics:
    """
    The server's counters, in plain Python numbers.

    C{gauges} maps a gauge's name to its help text and a function reading
    its value at scrape time; one that returns L{None} is left out.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {route: Histogram() for route in ROUTES}
        self.store_latency = Histogram()
        self.store_batch_latency = Histogram()
        self.errors = 0
        self.gauges: dict[str, tuple[str, Callable[[], float | None]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float | None]]] = {}

    def observe(self, route: str, code: int, seconds: float) -> None:
        """
        Count one response of C{route} with status C{code} that took
        C{seconds} from its first byte.
        """
        key = (route, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.latency[route]
        histogram.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        histogram.sum += seconds

    def add_gauge(self, name: str, help_text: str, read: Callable[[], Any]) -> None:
        """
        Export C{read()} as the gauge C{gameserver_<name>}.
        """
        self.gauges[name] = (help_text, read)

    def add_counter(self, name: str, help_text: str, read: Callable[[], Any]) -> None:
        """
        Export C{read()} as the counter C{gameserver_<name>_total}.
        """
        self.counters[name] = (help_text, read)


@implementer(ILogObserver)
class ErrorCounter:
    """
    A log observer counting events at level error or above (failures logged
    with C{log.failure} included) into L{Metrics.errors}.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is LogLevel.error or level is LogLevel.critical:
            self._metrics.errors += 1


class GameCollector(Collector):
    """
    Turns L{Metrics} into Prometheus metric families at scrape time.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "gameserver_http_requests",
            "HTTP responses by route and status code.",
            labels=["route", "status"],
        )
        for (route, code), count in sorted(m.requests.items()):
            requests.add_metric([route, str(code)], count)
        yield requests
        latency = HistogramMetricFamily(
            "gameserver_http_request_duration_seconds",
            "Seconds from a request's first byte to its response, by route.",
            labels=["route"],
        )
        for route, histogram in m.latency.items():
            latency.add_metric([route], histogram.cumulative(), histogram.sum)
        yield latency
        store = HistogramMetricFamily(
            "gameserver_store_write_duration_seconds",
            "Seconds a request waited for the durable store to commit its write.",
        )
        store.add_metric([], m.store_latency.cumulative(), m.store_latency.sum)
        yield store
        batches = HistogramMetricFamily(
            "gameserver_store_batch_commit_seconds",
            "Seconds the durable store's writer took to commit one batch.",
        )
        batches.add_metric(
            [], m.store_batch_latency.cumulative(), m.store_batch_latency.sum
        )
        yield batches
        yield CounterMetricFamily(
            "gameserver_errors",
            "Events logged at level error or critical (failures included).",
            value=m.errors,
        )
        for name, (help_text, read) in m.counters.items():
            value = read()
            if value is not None:
                yield CounterMetricFamily(
                    f"gameserver_{name}", help_text, value=float(value)
                )
        for name, (help_text, read) in m.gauges.items():
            value = read()
            if value is not None:
                yield GaugeMetricFamily(
                    f"gameserver_{name}", help_text, value=float(value)
                )


class _QuietSite(Site):
    """
    A site that logs no access line per scrape.
    """

    def log(self, request: Request) -> None:
        pass


def metrics_site(metrics: Metrics) -> Site:
    """
    A small C{twisted.web} site answering C{GET /metrics} (and C{GET /}) in
    the Prometheus text format, from its own registry (no process-wide
    default collectors besides the process and platform ones).
    """
    from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=True)
    registry.register(GameCollector(metrics))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR):
        registry.register(collector)
    exposition = MetricsResource(registry=registry)  # type: ignore[no-untyped-call]
    root = Resource()
    root.putChild(b"metrics", exposition)
    root.putChild(b"", exposition)
    site = _QuietSite(root)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    site.noisy = False
    return site
