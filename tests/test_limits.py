"""
Bounds on what a client can make the server hold: connections, the
header/body read timeout, header count, body size, sessions, levels and
relay data.
Driven through the real channel on a Clock.
"""

from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import provider

from gameserver.channel import MAX_BODY, MAX_HEADERS
from gameserver.leaderboard import Leaderboards
from gameserver.relay import held_size
from gameserver.scores import CapacityError, MemoryScores
from gameserver.sessions import SignedSessions, StoredSessions
from tests.clock_site import ClockSite
from tests.support import split_responses

LIST = b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"


class SiteCase(TestCase):
    def site(self, *argv: str) -> ClockSite:
        site = ClockSite(*argv)
        self.addCleanup(site.stop)
        return site


class ReadTimeoutTests(SiteCase):
    """
    Slow clients are cut at --header-timeout, however often they send a byte.
    """

    def test_slow_headers_cut(self) -> None:
        """Headers trickling in a byte a second get 408 at the timeout."""
        site = self.site("--header-timeout", "5")
        channel, transport = site.connect()
        for byte in b"GET /1/highscorelist HTTP/1.1\r\nHost:":
            channel.dataReceived(bytes([byte]))
            site.clock.advance(1)
            if transport.value():
                break
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertLessEqual(site.clock.seconds(), 7)
        self.assertTrue(transport.disconnecting)

    def test_slow_body_cut(self) -> None:
        """A body trickling in after complete headers is cut the same way."""
        site = self.site("--header-timeout", "3")
        channel, transport = site.connect()
        channel.dataReceived(
            b"POST /1/score?sessionkey=x HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 50\r\n\r\n"
        )
        for _ in range(10):
            channel.dataReceived(b"1")
            site.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_idle_keep_alive_not_cut(self) -> None:
        """Between requests only the idle timeout applies, not the read timeout."""
        site = self.site("--header-timeout", "2")
        channel, transport = site.connect()
        channel.dataReceived(LIST)
        site.clock.advance(30)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(LIST)
        self.assertEqual([r[0] for r in split_responses(transport.value())], [200, 200])
        site.clock.advance(61)
        self.assertTrue(transport.disconnecting)

    def test_prompt_requests_unaffected(self) -> None:
        """Many requests on one connection, each sent at once, are never cut."""
        site = self.site("--header-timeout", "1")
        channel, transport = site.connect()
        for _ in range(20):
            channel.dataReceived(LIST)
            site.clock.advance(0.9)
        self.assertEqual(len(split_responses(transport.value())), 20)
        self.assertFalse(transport.disconnecting)


class ConnectionLimitTests(SiteCase):
    """
    --max-connections.
    """

    def test_503_past_the_cap(self) -> None:
        """Past the cap a new connection gets 503 and is closed; existing ones
        keep working, and a slot freed is reused."""
        site = self.site("--max-connections", "2")
        first = site.connect()
        second = site.connect()
        channel, transport = site.connect()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        [(code, headers, _)] = split_responses(transport.value())
        self.assertEqual((code, headers[b"connection"]), (503, b"close"))
        self.assertTrue(transport.disconnecting)
        channel.dataReceived(LIST)  # ignored
        self.assertEqual(len(split_responses(transport.value())), 1)
        channel.connectionLost()
        self.assertEqual(len(site.site.channels), 2)
        first[0].dataReceived(LIST)
        self.assertTrue(first[1].value().startswith(b"HTTP/1.1 200 "))
        second[0].connectionLost()
        _, transport = site.connect()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(site.site.connections_refused, 1)


class ClientConnectionLimitTests(SiteCase):
    """
    --max-client-connections.
    """

    def test_per_client_cap(self) -> None:
        """Past the cap one address gets 503 while others connect; a closed
        connection frees its slot."""
        site = self.site("--max-client-connections", "2")
        warnings: list[str] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("log_level") == LogLevel.warn:
                warnings.append(str(event["log_format"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        first, _ = site.connect()
        site.connect()
        _, refused = site.connect()
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 503 "))
        self.assertEqual(
            warnings, ["client {client} holds {limit} connections: refusing more"]
        )
        _, other = site.connect(peer="198.51.100.20")
        self.assertEqual(other.value(), b"")
        first.connectionLost()
        _, again = site.connect()
        self.assertEqual(again.value(), b"")
        self.assertEqual(site.site.connections_refused, 1)

    def test_exempt_and_proxies_not_counted(self) -> None:
        """Loopback (exempt) and trusted proxies are not counted."""
        site = self.site("--max-client-connections", "1", "--trust-proxy", "10.0.0.1")
        for peer in ("127.0.0.1", "10.0.0.1"):
            for _ in range(3):
                _, transport = site.connect(peer=peer)
                self.assertEqual(transport.value(), b"")

    def test_ipv6_by_prefix(self) -> None:
        """IPv6 clients of one /64 share the count."""
        from twisted.internet.address import IPv6Address
        from twisted.internet.testing import StringTransport

        site = self.site("--max-client-connections", "1")
        values = []
        for host in ("2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"):
            transport = StringTransport(peerAddress=IPv6Address("TCP", host, 1))
            site.site.buildProtocol(None).makeConnection(transport)
            values.append(transport.value()[:12])
        self.assertEqual(values, [b"", b"HTTP/1.1 503", b""])

    def test_counts_released(self) -> None:
        """Every closed connection is uncounted: the table empties."""
        site = self.site("--max-client-connections", "5")
        channels = [site.connect()[0] for _ in range(5)]
        for channel in channels:
            channel.connectionLost()
        self.assertEqual(site.site._client_connections, {})


class RequestLimitTests(SiteCase):
    """
    Header count and body size, confirmed at their defaults.
    """

    def test_header_count(self) -> None:
        """MAX_HEADERS headers pass; one more gets 431."""
        site = self.site()
        headers = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS - 1))
        self.assertEqual(site.get(b"/1/highscorelist", headers=headers)[0], 200)
        [(code, _, _)] = site.exchange(
            b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n"
            + headers
            + b"X-last: y\r\n\r\n"
        )
        self.assertEqual(code, 431)

    def test_body_limit(self) -> None:
        """A body over the site limit gets 413 as soon as it is announced."""
        site = self.site()
        [(code, _, _)] = site.exchange(
            b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (MAX_BODY + 1)
        )
        self.assertEqual(code, 413)


class CapacityTests(SiteCase):
    """
    --max-sessions and --max-levels for the in-memory store.
    """

    def login(self, site: ClockSite, user: int) -> tuple[int, bytes]:
        code, _, body = site.get(b"/%d/login" % user)
        return code, body

    def test_max_sessions(self) -> None:
        """At the cap a new user's login gets 503 with Retry-After; a user with a
        live key may log in again; expiry frees room."""
        site = self.site("--max-sessions", "2", "--session-ttl", "100")
        self.assertEqual(self.login(site, 1)[0], 200)
        self.assertEqual(self.login(site, 2)[0], 200)
        code, headers, _ = site.get(b"/3/login")
        self.assertEqual((code, headers[b"retry-after"]), (503, b"60"))
        code, key = self.login(site, 2)
        self.assertEqual(code, 200)
        self.assertEqual(site.post(b"/5/score?sessionkey=" + key, b"10")[0], 200)
        site.clock.advance(100)
        self.assertEqual(self.login(site, 3)[0], 200)

    def test_max_levels(self) -> None:
        """At the cap a score on a new level gets 503; known levels take scores
        and every list is still readable."""
        site = self.site("--max-levels", "2")
        _, key = self.login(site, 1)
        post = b"/%d/score?sessionkey=" + key
        self.assertEqual(site.post(post % 1, b"5")[0], 200)
        self.assertEqual(site.post(post % 2, b"5")[0], 200)
        self.assertEqual(site.post(post % 3, b"5")[0], 503)
        self.assertEqual(site.post(post % 1, b"9")[0], 200)
        self.assertEqual(site.get(b"/1/highscorelist")[2], b"1=9")
        self.assertEqual(site.get(b"/3/highscorelist")[:3:2], (200, b""))

    def test_no_bound(self) -> None:
        """0 means no bound."""
        scores = MemoryScores(StoredSessions(ClockSite().clock), Leaderboards())
        self.addCleanup(scores.stop)
        for user in range(100):
            self.assertIsInstance(scores.login(user), bytes)

    def test_signed_unbounded(self) -> None:
        """Signed sessions hold no memory, so --max-sessions does not refuse them."""
        clock = ClockSite().clock
        scores = MemoryScores(SignedSessions(clock, b"s" * 32), Leaderboards(), 1, 1)
        self.assertIsInstance(scores.login(1), bytes)
        self.assertIsInstance(scores.login(2), bytes)

    def test_capacity_error(self) -> None:
        """The domain answers a failed Deferred with CapacityError at a cap."""
        clock = ClockSite().clock
        scores = MemoryScores(StoredSessions(clock), Leaderboards(), max_sessions=1)
        self.addCleanup(scores.stop)
        scores.login(1)
        self.failureResultOf(scores.login(2), CapacityError)


class RelayNameTests(SiteCase):
    """
    --relay-max-name bounds what a registered relay player holds.
    """

    def test_long_name_refused(self) -> None:
        """A name or wanted name over the limit gets 413 with 20/*/*; one at the
        limit registers."""
        site = self.site("--relay-max-name", "8")
        self.assertEqual(site.post(b"/relay", b"0,abcdefgh,*,*,*")[0], 200)
        self.assertEqual(
            site.post(b"/relay", b"0,abcdefghi,*,*,*")[:3:2], (413, b"20/*/*")
        )
        self.assertEqual(
            site.post(b"/relay", b"0,a,*,abcdefghi,*")[:3:2], (413, b"20/*/*")
        )


class RelayDataTests(SiteCase):
    """
    --relay-max-data bounds the memory all relay game data holds.
    """

    def test_update_past_budget_503(self) -> None:
        """Past the budget a game update gets 503 with Retry-After and 22/*/*."""
        site = self.site("--relay-max-data", str(held_size("abcd")))

        def relay(body: bytes) -> bytes:
            status, _, reply = site.post(b"/relay", body)
            assert status == 200, (status, reply)
            return reply

        alice = relay(b"0,alice,*,*,*")[4:]
        bob = relay(b"0,bob,*,*,*")[4:]
        for step in (b"2,*," + bob, b"3,*," + bob, b"3,*," + alice, b"4,*," + alice):
            relay(step + b",*,*")
        key, seat = relay(b"4,*," + bob + b",*,*")[4:].split(b"|")
        self.assertEqual(relay(b"6,abcd,%s,%s,0" % (key, seat)), b"0/10/*")
        status, headers, body = site.post(b"/relay", b"6,e,%s,%s,1" % (key, seat))
        self.assertEqual((status, body), (503, b"22/*/*"))
        self.assertEqual(headers[b"retry-after"], b"1")


class BackpressureTests(SiteCase):
    """
    A client that does not read its responses stops being read and answered.
    """

    def test_paused_while_write_buffer_full(self) -> None:
        """While the transport's write buffer is full, nothing is read or answered;
        once it drains, every request is answered in order."""
        site = self.site()
        channel, transport = site.connect()
        self.assertIs(transport.producer, channel)
        channel.pauseProducing()  # what the transport does past 64 KiB
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(LIST * 3)
        self.assertEqual(transport.value(), b"")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual([r[0] for r in split_responses(transport.value())], [200] * 3)

    def test_no_read_timeout_while_the_server_waits(self) -> None:
        """A request half read when the server paused reading gets no 408 for
        the pause, and a whole read timeout once reading resumes."""
        site = self.site()
        channel, transport = site.connect()
        channel.dataReceived(LIST[:20])
        channel.pauseProducing()
        site.clock.advance(15)  # past --header-timeout (10 s)
        self.assertEqual(transport.value(), b"")
        channel.resumeProducing()
        site.clock.advance(9)
        channel.dataReceived(LIST[20:])
        self.assertEqual([r[0] for r in split_responses(transport.value())], [200])

    def test_stalled_reader_cut(self) -> None:
        """A client that reads none of its responses for the idle timeout is cut,
        even with requests still queued."""
        site = self.site()
        channel, transport = site.connect()
        channel.pauseProducing()
        channel.dataReceived(LIST * 2)
        site.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        site.clock.advance(2)
        self.assertTrue(transport.disconnected)

    def test_idle_close_lingers_then_cuts(self) -> None:
        """An idle connection whose last responses are not taken is cut shortly
        after it is closed."""
        site = self.site()
        _, transport = site.connect()
        site.clock.advance(60)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        site.clock.advance(2)
        self.assertTrue(transport.disconnected)

    def test_close_unregisters(self) -> None:
        """Closing the connection unregisters the channel, so the close completes."""
        site = self.site()
        channel, transport = site.connect()
        channel.dataReceived(
            LIST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)
