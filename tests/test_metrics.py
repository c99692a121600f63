"""
Prometheus metrics: the counters in L{gameserver.metrics}, and the real
server's C{--metrics-port} scraped after a scripted session.
"""

import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from gameserver.metrics import LATENCY_BOUNDS, GameCollector, Histogram, Metrics
from gameserver.server_tap import Options
from tests.ops_support import metrics_port
from tests.support import ServerProcess, plugin_args
from tests.test_integration import IntegrationTestCase

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """
    Every sample of a Prometheus text exposition, by name and sorted labels.
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


class MetricsUnitTests(TestCase):
    """
    L{Metrics} counts in plain numbers; L{GameCollector} exports them.
    """

    def test_histogram_buckets(self) -> None:
        """Observations land in the first bucket whose bound holds them."""
        histogram = Histogram()
        for seconds in (0.0001, 0.0005, 0.003, 100.0):
            histogram.observe(seconds)
        cumulative = dict(histogram.cumulative())
        self.assertEqual(cumulative[repr(LATENCY_BOUNDS[0])], 2)
        self.assertEqual(cumulative["0.005"], 3)
        self.assertEqual(cumulative[repr(LATENCY_BOUNDS[-1])], 3)
        self.assertEqual(cumulative["+Inf"], 4)
        self.assertAlmostEqual(histogram.sum, 100.0036)

    def test_collector(self) -> None:
        """The collector exports requests by route and status, latency and gauges."""
        metrics = Metrics()
        metrics.observe("login", 200, 0.001)
        metrics.observe("login", 200, 0.002)
        metrics.observe("score", 401, 0.5)
        metrics.add_gauge("levels", "Levels.", lambda: 7)
        metrics.add_gauge("absent", "Left out.", lambda: None)
        families = {f.name: f for f in GameCollector(metrics).collect()}
        requests = {
            (s.labels["route"], s.labels["status"]): s.value
            for s in families["gameserver_http_requests"].samples
            if s.name.endswith("_total")
        }
        self.assertEqual(requests, {("login", "200"): 2, ("score", "401"): 1})
        counts = {
            s.labels["route"]: s.value
            for s in families["gameserver_http_request_duration_seconds"].samples
            if s.name.endswith("_count")
        }
        self.assertEqual(counts["login"], 2)
        self.assertEqual(counts["relay"], 0)
        self.assertEqual(families["gameserver_levels"].samples[0].value, 7)
        self.assertNotIn("gameserver_absent", families)

    def test_off_by_default(self) -> None:
        """Without --metrics-port there are no metrics and nothing counts."""
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["metrics-port"])

    def test_never_the_public_port(self) -> None:
        """--metrics-port may not be the public --port."""
        from twisted.python.usage import UsageError

        options = Options()
        with self.assertRaises(UsageError):
            options.parseOptions(["--port", "9100", "--metrics-port", "9100"])


class ScrapeTests(IntegrationTestCase):
    """
    The real server's metrics endpoint after a scripted session.
    """

    async def scrape(self, server: ServerProcess) -> Samples:
        port = await metrics_port(server)
        response = await self.http.get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 200)
        self.assertIn("text/plain", response.headers.getRawHeaders("content-type")[0])
        return parse_samples((await response.content()).decode())

    async def test_session_moves_counters(self) -> None:
        """A scripted session moves every request counter by its exact amount."""
        server = await self.start(
            plugin_args("--metrics-port", "tcp:0:interface=127.0.0.1")
        )
        before = await self.scrape(server)
        keys: list[str] = []
        for user in (1, 2):
            code, body = await self.get(server, f"/{user}/login")
            self.assertEqual(code, 200)
            keys.append(body.decode())
        for session, score in zip(keys, (b"10", b"20"), strict=True):
            self.assertEqual(
                (await self.post(server, f"/2/score?sessionkey={session}", score))[0],
                200,
            )
        self.assertEqual(
            (await self.post(server, "/2/score?sessionkey=x", b"5"))[0], 401
        )
        self.assertEqual(
            (await self.post(server, f"/2/score?sessionkey={keys[0]}", b"x"))[0], 400
        )
        for _ in range(3):
            self.assertEqual((await self.get(server, "/2/highscorelist"))[0], 200)
        self.assertEqual((await self.get(server, "/no/such/path"))[0], 404)
        self.assertEqual((await self.get(server, "/healthz"))[0], 200)
        code, reply = await self.post(server, "/relay", b"0,alice,*,*,*")
        self.assertEqual(code, 200)
        player = reply.decode().split("/")[2]
        await self.post(server, "/relay", f"2,*,{player},*,*".encode())
        after = await self.scrape(server)

        name = "gameserver_http_requests_total"
        expected = {
            ("login", "200"): 2,
            ("score", "200"): 2,
            ("score", "401"): 1,
            ("score", "400"): 1,
            ("highscorelist", "200"): 3,
            ("other", "404"): 1,
            ("healthz", "200"): 1,
            ("relay", "200"): 2,
        }
        for (route, status), count in expected.items():
            self.assertEqual(
                delta(before, after, name, route=route, status=status),
                count,
                (route, status),
            )
        moved = {
            labels
            for (metric, labels), value in after.items()
            if metric == name and value != before.get((metric, labels), 0.0)
        }
        self.assertEqual(len(moved), len(expected))
        per_route = {"login": 2, "score": 4, "highscorelist": 3, "relay": 2}
        for route, count in per_route.items():
            self.assertEqual(
                delta(
                    before,
                    after,
                    "gameserver_http_request_duration_seconds_count",
                    route=route,
                ),
                count,
            )
            self.assertEqual(
                delta(
                    before,
                    after,
                    "gameserver_http_request_duration_seconds_bucket",
                    route=route,
                    le="+Inf",
                ),
                count,
            )
        self.assertEqual(after["gameserver_sessions_live", ()], 2)
        self.assertEqual(after["gameserver_levels", ()], 1)
        self.assertEqual(after["gameserver_relay_players", ()], 1)
        self.assertEqual(after["gameserver_relay_waiting_players", ()], 1)
        self.assertEqual(after["gameserver_relay_games", ()], 0)
        self.assertEqual(after["gameserver_relay_data_bytes", ()], 0)
        self.assertEqual(after["gameserver_errors_total", ()], 0)
        self.assertIn(("process_cpu_seconds_total", ()), after)

    async def test_store_batches(self) -> None:
        """With --database, committed writes and their batches are counted."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        server = await self.start(
            plugin_args(
                "--metrics-port",
                "tcp:0:interface=127.0.0.1",
                "--database",
                os.path.join(path, "game.db"),
            )
        )
        before = await self.scrape(server)
        for user in (1, 2):
            _, key = await self.get(server, f"/{user}/login")
            await self.post(server, f"/3/score?sessionkey={key.decode()}", b"%d" % user)
        after = await self.scrape(server)
        self.assertEqual(delta(before, after, "gameserver_store_writes_total"), 4)
        batches = delta(before, after, "gameserver_store_write_batches_total")
        self.assertTrue(1 <= batches <= 4, batches)
        self.assertEqual(
            delta(before, after, "gameserver_store_batch_commit_seconds_count"),
            batches,
        )
        self.assertEqual(
            delta(before, after, "gameserver_store_write_duration_seconds_count"), 4
        )

    async def test_not_on_public_port(self) -> None:
        """The public port has no /metrics."""
        server = await self.start(
            plugin_args("--metrics-port", "tcp:0:interface=127.0.0.1")
        )
        self.assertEqual((await self.get(server, "/metrics"))[0], 404)
