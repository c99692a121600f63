"""
The stress client: its HTTP protocol, statistics and report, player state
machines, and a short run against a real server.
"""

import json
import sys
from random import Random

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from gameserver.stress import StressOptions, TimerWheel, parse_args, run
from gameserver.stress_http import (
    BAD_RESPONSE,
    CLOSED,
    LOST,
    Exchange,
    HTTPClientProtocol,
    Target,
)
from gameserver.stress_players import (
    Kind,
    Mix,
    RelayGames,
    RelayPlayer,
    RelayState,
    ScoresPlayer,
    Verdict,
)
from gameserver.stress_stats import (
    Statistics,
    build_report,
    format_report,
    load_pyplot,
    percentile,
    relay_error_key,
)
from tests.support import ServerProcess, plugin_args

TARGET = Target("http://127.0.0.1:8080")


def response(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


class RecordingSink:
    """
    An L{ExchangeSink} that records what a protocol hands on.
    """

    def __init__(self) -> None:
        self.completed_list: list[tuple[Exchange, int, bytes]] = []
        self.failed_list: list[tuple[Exchange, str]] = []

    def completed(
        self, exchange: Exchange, status: int, body: bytes, now: float
    ) -> None:
        self.completed_list.append((exchange, status, body))

    def failed(self, exchange: Exchange, reason: str, now: float) -> None:
        self.failed_list.append((exchange, reason))


class HTTPClientProtocolTests(TestCase):
    """
    L{HTTPClientProtocol} pipelines requests and parses their responses.
    """

    def setUp(self) -> None:
        self.sink = RecordingSink()
        self.lost: list[HTTPClientProtocol] = []
        self.protocol = HTTPClientProtocol(self.sink, self.lost.append)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes = b"GET /1/login HTTP/1.1\r\n\r\n") -> Exchange:
        exchange = Exchange(None, Kind.LOGIN, data, 0.0)
        self.protocol.send(exchange)
        self.protocol.flush()
        return exchange

    def test_target_builds_requests(self) -> None:
        """Target spells GET and POST requests with Host and Content-Length."""
        target = Target("http://127.0.0.1:9000/game/")
        self.assertEqual(
            target.get(b"/1/login"),
            b"GET /game/1/login HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\n",
        )
        self.assertEqual(
            target.post(b"/relay", b"0,a,*,*,*"),
            b"POST /game/relay HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"
            b"Content-Length: 9\r\n\r\n0,a,*,*,*",
        )
        self.assertRaises(ValueError, Target, "https://127.0.0.1/")

    def test_writes_request(self) -> None:
        """A request's bytes are written as given and it is in flight."""
        exchange = self.send()
        self.assertEqual(self.transport.value(), exchange.data)
        self.assertEqual(list(self.protocol.in_flight), [exchange])

    def test_batches_writes(self) -> None:
        """Requests queued by send are written together by one flush."""
        rooms: list[HTTPClientProtocol] = []
        self.protocol.room = rooms.append
        first = Exchange(None, Kind.LIST, b"A", 0.0)
        second = Exchange(None, Kind.LIST, b"B", 0.0)
        self.assertTrue(self.protocol.send(first))
        self.assertFalse(self.protocol.send(second))
        self.assertEqual((self.transport.value(), self.protocol.depth), (b"", 2))
        self.protocol.flush()
        self.assertEqual(self.transport.value(), b"AB")
        self.assertGreater(first.written, 0.0)
        self.protocol.dataReceived(response(b"1"))
        self.assertEqual(rooms, [self.protocol])
        self.assertEqual(self.protocol.depth, 1)

    def test_response_split_across_packets(self) -> None:
        """A response fed one byte at a time completes once, whole."""
        exchange = self.send()
        for i, byte in enumerate(response(b"KEY123")):
            self.assertEqual(self.sink.completed_list, [], i)
            self.protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.sink.completed_list, [(exchange, 200, b"KEY123")])

    def test_keep_alive_pipelined(self) -> None:
        """Pipelined responses in one packet complete in order; the link stays."""
        first, second = self.send(), self.send()
        self.protocol.dataReceived(
            response(b"one") + response(b"", b"401 Unauthorized")
        )
        self.assertEqual(
            self.sink.completed_list, [(first, 200, b"one"), (second, 401, b"")]
        )
        self.assertFalse(self.transport.disconnecting)
        third = self.send()
        self.protocol.dataReceived(response(b"three"))
        self.assertEqual(self.sink.completed_list[-1], (third, 200, b"three"))

    def test_chunked(self) -> None:
        """A chunked body is joined."""
        exchange = self.send()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"3\r\n0/9\r\n4\r\n/u|q\r\n0\r\n\r\n"
        self.protocol.dataReceived(head + body[:5])
        self.protocol.dataReceived(body[5:])
        self.assertEqual(self.sink.completed_list, [(exchange, 200, b"0/9/u|q")])

    def test_connection_close(self) -> None:
        """Connection: close ends the connection; later requests fail as closed."""
        first, second = self.send(), self.send()
        self.protocol.dataReceived(response(b"x", extra=b"Connection: close\r\n"))
        self.assertEqual(self.sink.completed_list, [(first, 200, b"x")])
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sink.failed_list, [(second, CLOSED)])
        self.assertEqual(self.lost, [self.protocol])

    def test_connection_lost(self) -> None:
        """Requests in flight when the connection drops fail as lost."""
        exchange = self.send()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sink.failed_list, [(exchange, LOST)])
        self.assertEqual(len(self.protocol.in_flight), 0)

    def test_bad_response(self) -> None:
        """Garbage aborts the connection; the request fails as a bad response."""
        exchange = self.send()
        self.protocol.dataReceived(b"SPDY/9 what\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        [(failed, reason)] = self.sink.failed_list
        self.assertIs(failed, exchange)
        self.assertTrue(reason.startswith(BAD_RESPONSE), reason)

    def test_unsolicited_response(self) -> None:
        """A response with no request in flight aborts the connection."""
        self.protocol.dataReceived(response(b"?"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.sink.completed_list, [])


class StatisticsTests(TestCase):
    """
    Percentiles, error keys, the report and its table.
    """

    def test_percentile(self) -> None:
        """Nearest-rank percentiles of 1..100 are the ranks themselves."""
        values = [float(x) for x in range(1, 101)]
        self.assertEqual([percentile(values, p) for p in (50, 90, 99)], [50, 90, 99])
        self.assertEqual(percentile(values, 100), 100)
        self.assertEqual(percentile([7.0], 99), 7.0)
        self.assertEqual(percentile([], 50), 0.0)

    def test_relay_error_key(self) -> None:
        """Relay errors are keyed by status and body, with game data elided."""
        self.assertEqual(relay_error_key(400, b"13/*/*"), "400 13/*/*")
        self.assertEqual(relay_error_key(400, b"21/*/u1|u2"), "400 21/*/...")
        self.assertEqual(relay_error_key(404, b"<html>"), "404 '<html>'")

    def sample(self) -> Statistics:
        stats = Statistics(start=100.0)
        for i in range(1, 101):
            stats.record(Kind.SCORE, i / 1000, 100.0 + i / 100)
        stats.record(Kind.RELAY_UPDATE, 0.002, 100.5)
        stats.error(Kind.RELAY_UPDATE, 400, b"13/*/*", 100.5)
        stats.record(Kind.LOGIN, 0.5, 103.5)  # after the run's 2 s
        stats.socket_error(Kind.LOGIN, "timeout", 101.0)
        return stats

    def report_of(self, stats: Statistics) -> str:
        report = build_report(
            stats,
            url="http://127.0.0.1:1",
            seed=7,
            duration=2.0,
            scores_players=10,
            relay_players=2,
            rate=5.0,
            connections=1,
            unfinished=3,
            games=(4, 2, 1),
            cpu_seconds=0.5,
        )
        self.assertEqual(report.requests, 102)
        self.assertEqual(report.errors, 2)
        self.assertEqual(report.offered_rate, 60.0)
        self.assertEqual(report.achieved_rate, 50.5)
        score = report.kinds["score"]
        self.assertEqual((score.count, score.rate), (100, 50.0))
        self.assertEqual(
            (score.p50, score.p90, score.p99, score.max), (50, 90, 99, 100)
        )
        self.assertEqual(report.kinds["login"].rate, 0.0)
        self.assertEqual(report.relay_errors, {"400 13/*/*": 1})
        self.assertEqual(report.errors_by_status, {"400": 1})
        self.assertEqual(report.socket_errors, {"timeout": 1})
        self.assertEqual(report.cpu_percent, 25.0)
        json.dumps(report.as_json())
        return format_report(report)

    def test_report_table(self) -> None:
        """The table has a row per kind seen, a total, and the error lines."""
        table = self.report_of(self.sample())
        rows = {line.split()[0]: line.split() for line in table.splitlines() if line}
        self.assertEqual(
            rows["score"],
            ["score", "100", "50.0", "50.00", "90.00", "99.00", "100.00", "0"],
        )
        self.assertEqual(rows["relay-update"][-1], "1")
        self.assertEqual(rows["all"][1:3], ["102", "50.5"])
        self.assertNotIn("relay-quit", rows)
        self.assertIn("offered 60.0 req/s, achieved 50.5 req/s (84.2%)", table)
        self.assertIn("errors by status: 400: 1", table)
        self.assertIn("relay errors: 400 13/*/*: 1", table)
        self.assertIn("socket errors: timeout: 1", table)
        self.assertIn("relay games: 4 started, 2 finished (1 ended", table)
        self.assertIn("requests unanswered when the run ended: 3", table)
        self.assertIn("client CPU: 0.50 s (25% of one core)", table)

    def test_missing_matplotlib(self) -> None:
        """Without matplotlib, --plot's loader says how to install it."""
        saved = {k: v for k, v in sys.modules.items() if k.startswith("matplotlib")}
        for name in saved:
            del sys.modules[name]
        sys.modules["matplotlib"] = None  # type: ignore[assignment]
        try:
            error = self.assertRaises(ImportError, load_pyplot)
        finally:
            del sys.modules["matplotlib"]
            sys.modules.update(saved)
        self.assertIn("pip install matplotlib", str(error))

    def test_timer_wheel(self) -> None:
        """The wheel hands out items when their slot has ended, never early."""
        wheel: TimerWheel[str] = TimerWheel(0.01, 0.0)
        wheel.add("b", 0.025)
        wheel.add("a", 0.012)
        wheel.add("c", 0.025)
        self.assertEqual(wheel.pop_due(0.019), [])
        self.assertEqual(wheel.pop_due(0.02), ["a"])
        self.assertEqual(len(wheel), 2)
        wheel.add("late", 0.0)  # already past: the first slot not yet taken out
        self.assertEqual(wheel.pop_due(0.05), ["b", "c", "late"])
        self.assertEqual(len(wheel), 0)

    def test_options(self) -> None:
        """The command line's defaults and checks."""
        options = parse_args([])
        self.assertEqual(options, StressOptions())
        options = parse_args(["--relay-players", "0", "--mix", "1,1,0"])
        self.assertEqual((options.relay_players, options.mix), (0, "1,1,0"))
        for bad in (
            ["--scores-players", "0", "--relay-players", "0"],
            ["--rate", "0"],
            ["--mix", "1,2"],
        ):
            self.patch(sys, "stderr", open("/dev/null", "w"))  # noqa: SIM115
            self.assertRaises(SystemExit, parse_args, bad)
            sys.stderr.close()


class ScoresPlayerTests(TestCase):
    """
    L{ScoresPlayer} logs in, posts with its key and reads lists.
    """

    def test_logs_in_first(self) -> None:
        """With no key, a drawn post becomes a login; then posts use the key."""
        player = ScoresPlayer(42, TARGET, Random(1), 10, Mix(0, 100, 0))
        kind, data = player.next_request()
        self.assertEqual(kind, Kind.LOGIN)
        self.assertTrue(data.startswith(b"GET /42/login HTTP/1.1\r\n"))
        self.assertIs(player.handle(200, b"K3Y"), Verdict.OK)
        kind, data = player.next_request()
        self.assertEqual(kind, Kind.SCORE)
        self.assertRegex(data, rb"^POST /\d/score\?sessionkey=K3Y HTTP/1.1\r\n")
        self.assertIs(player.handle(401, b""), Verdict.ERROR)
        self.assertIsNone(player.key)
        self.assertEqual(player.next_request()[0], Kind.LOGIN)

    def test_mix(self) -> None:
        """The default mix is about 10% logins, 50% posts and 40% list reads."""
        player = ScoresPlayer(1, TARGET, Random(3), 1000, Mix())
        player.key = b"k"
        kinds = [player.next_request()[0] for _ in range(10000)]
        shares = [kinds.count(k) / 100 for k in (Kind.LOGIN, Kind.SCORE, Kind.LIST)]
        for share, expected in zip(shares, (10, 50, 40), strict=True):
            self.assertTrue(abs(share - expected) < 2, shares)


class RelayPlayerTests(TestCase):
    """
    L{RelayPlayer} walks the relay handshake and game as the seed's client.
    """

    def setUp(self) -> None:
        self.games = RelayGames()
        self.player = RelayPlayer("ann", TARGET, 2, self.games)

    def exchange(self, body: bytes, reply: bytes, status: int = 200) -> Verdict:
        _, data = self.player.next_request()
        self.assertEqual(data.rpartition(b"\r\n\r\n")[2], body)
        return self.player.handle(status, reply)

    def play_to_game(self) -> None:
        self.assertIs(self.exchange(b"0,ann,*,*,*", b"0/0/PK"), Verdict.OK)
        self.exchange(b"2,*,PK,*,*", b"0/2/*")
        self.exchange(b"2,*,PK,*,*", b"0/4/bob")
        self.exchange(b"3,*,PK,*,*", b"0/6/")
        self.exchange(b"4,*,PK,*,*", b"0/7/*")
        self.exchange(b"4,*,PK,*,*", b"0/8/GK|1")
        self.assertEqual(self.player.state, RelayState.PLAY)

    def test_full_cycle(self) -> None:
        """Register, pair, init, ready, two updates, quit, then register again."""
        self.play_to_game()
        self.assertIs(self.exchange(b"6,u0,GK,1,0", b"0/10/*"), Verdict.OK)
        self.exchange(b"6,u1,GK,1,1", b"0/9/u0|u1")
        self.assertEqual(self.player.counter, 2)
        self.assertIs(self.exchange(b"5,quit,GK,1,2", b"0/9/u2"), Verdict.OK)
        self.assertEqual(self.player.state, RelayState.REGISTER)
        self.assertEqual((self.games.started, self.games.finished), (1, 1))
        self.assertEqual(self.player.next_request()[0], Kind.RELAY_REGISTER)

    def test_error_registers_again(self) -> None:
        """Any error (here 13/*/*) sends the player back to register."""
        self.play_to_game()
        self.assertIs(self.exchange(b"6,u0,GK,1,0", b"13/*/*", 400), Verdict.ERROR)
        self.assertEqual(self.player.next_request()[0], Kind.RELAY_REGISTER)

    def test_socket_error_registers_again(self) -> None:
        """A request with no reply sends the player back to register."""
        self.play_to_game()
        self.player.failed()
        self.assertEqual(self.player.state, RelayState.REGISTER)

    def test_partner_dropped_before_game(self) -> None:
        """9/2/* puts the player back to asking for a partner, as the spec says."""
        self.exchange(b"0,ann,*,*,*", b"0/0/PK")
        self.exchange(b"2,*,PK,*,*", b"0/3/bob")
        self.assertIs(self.exchange(b"3,*,PK,*,*", b"9/2/*", 400), Verdict.ERROR)
        self.assertEqual(self.player.next_request()[0], Kind.RELAY_PAIR)

    def test_partner_quit(self) -> None:
        """After its partner's quit data, the player quits; 15/*/* ends the game."""
        self.play_to_game()
        self.exchange(b"6,u0,GK,1,0", b"0/9/u0|quit")
        self.assertIs(
            self.exchange(b"5,quit,GK,1,1", b"15/*/*", 400), Verdict.GAME_OVER
        )
        self.assertEqual(self.games.partner_quit, 1)
        self.assertEqual(self.player.state, RelayState.REGISTER)

    def test_partner_left_unannounced(self) -> None:
        """15/*/* with no quit data from the partner is an error."""
        self.play_to_game()
        self.assertIs(self.exchange(b"6,u0,GK,1,0", b"15/*/*", 400), Verdict.ERROR)

    def test_unexpected_reply(self) -> None:
        """A success code that does not fit the state is an error."""
        self.exchange(b"0,ann,*,*,*", b"0/0/PK")
        self.assertIs(self.exchange(b"2,*,PK,*,*", b"0/9/x"), Verdict.ERROR)
        self.assertEqual(self.player.state, RelayState.REGISTER)


class StressRunTests(TestCase):
    """
    The stress client against a real server on 127.0.0.1.
    """

    timeout = 60

    async def test_short_run(self) -> None:
        """A 2-s run makes requests, no scores errors, and a report."""
        server = ServerProcess(plugin_args())
        await server.start()
        self.addCleanup(server.stop)
        options = StressOptions(
            url=server.url,
            scores_players=5,
            relay_players=6,
            rate=10.0,
            duration=2.0,
            connections=2,
            relay_updates=4,
            seed=1,
        )
        report, _ = await run(reactor, options)
        self.assertGreater(report.requests, 100)
        for kind in ("login", "score", "list"):
            self.assertEqual(report.kinds[kind].errors, 0, kind)
        self.assertEqual(report.socket_errors, {})
        self.assertIn("relay-update", report.kinds)
        self.assertGreater(report.games_started, 0)
        self.assertIn("\nall ", format_report(report))
        self.assertGreater(report.achieved_rate, 0.5 * report.offered_rate)
