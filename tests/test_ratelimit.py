"""
Per-client rate limits: the token buckets on a Clock, their bounded table,
the option syntax, and 429 through the real channel.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gameserver.ratelimit import (
    DEFAULT_RATE_LIMITS,
    ClientLimits,
    Limit,
    RateLimiter,
    client_key,
    format_limits,
    parse_limits,
    parse_networks,
    retry_after,
)
from tests.clock_site import REMOTE, ClockSite


class RateLimiterTests(TestCase):
    """
    One kind's token buckets.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, Limit(rate=2.0, burst=4), max_clients=3)
        self.addCleanup(self.limiter.stop)

    def test_burst_then_refused(self) -> None:
        """A client gets its burst at once, then waits for the next token."""
        self.assertEqual([self.limiter.take("a") for _ in range(4)], [0.0] * 4)
        self.assertAlmostEqual(self.limiter.take("a"), 0.5)

    def test_refill(self) -> None:
        """Tokens come back at the rate, never beyond the burst."""
        for _ in range(4):
            self.limiter.take("a")
        self.clock.advance(0.5)
        self.assertEqual(self.limiter.take("a"), 0.0)
        self.assertGreater(self.limiter.take("a"), 0.0)
        self.clock.advance(100)
        self.assertEqual([self.limiter.take("a") for _ in range(4)], [0.0] * 4)
        self.assertGreater(self.limiter.take("a"), 0.0)

    def test_clients_apart(self) -> None:
        """One client's spent bucket does not limit another."""
        for _ in range(5):
            self.limiter.take("a")
        self.assertEqual(self.limiter.take("b"), 0.0)

    def test_refused_takes_nothing(self) -> None:
        """Refused requests do not push the wait further out."""
        for _ in range(4):
            self.limiter.take("a")
        waits = [self.limiter.take("a") for _ in range(10)]
        self.assertEqual(waits, [waits[0]] * 10)

    def test_idle_buckets_dropped(self) -> None:
        """A bucket idle long enough to be full again is dropped by the timer."""
        self.limiter.take("a")
        self.limiter.take("b")
        self.assertEqual(len(self.limiter), 2)
        self.clock.advance(2.0)  # burst / rate: both full again
        self.assertEqual(len(self.limiter), 0)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_busy_bucket_kept(self) -> None:
        """A bucket still refilling when its time comes is looked at again later."""
        for _ in range(4):
            self.limiter.take("a")
        self.clock.advance(1.5)
        self.limiter.take("a")
        self.clock.advance(0.5)  # first look: 2 tokens of 4
        self.assertEqual(len(self.limiter), 1)
        self.assertAlmostEqual(self.limiter.take("a"), 0.0)
        self.clock.advance(4.0)
        self.assertEqual(len(self.limiter), 0)

    def test_table_bounded(self) -> None:
        """Past max_clients, new clients share one overflow bucket and the table
        stops growing."""
        for client in ("a", "b", "c"):
            self.limiter.take(client)
        waits = [self.limiter.take(f"new{i}") for i in range(10)]
        self.assertEqual(waits[:4], [0.0] * 4)
        self.assertTrue(all(w > 0 for w in waits[4:]))
        self.assertEqual(len(self.limiter), 4)
        self.clock.advance(10)
        self.assertEqual(len(self.limiter), 0)
        self.assertEqual(self.limiter.take("d"), 0.0)

    def test_million_clients_bounded(self) -> None:
        """However many addresses pass, the table holds at most max_clients plus
        the overflow bucket."""
        limiter = RateLimiter(self.clock, Limit(rate=1.0, burst=1), max_clients=1000)
        self.addCleanup(limiter.stop)
        for i in range(20_000):
            limiter.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
            if i % 1000 == 0:
                self.clock.advance(0.1)
            self.assertLessEqual(len(limiter), 1001)
        self.clock.advance(5)
        self.assertEqual(len(limiter), 0)


class SyntaxTests(TestCase):
    """
    The --rate-limit, --rate-limit-exempt and --trust-proxy values.
    """

    def test_default(self) -> None:
        """The default names all three kinds."""
        limits = parse_limits(DEFAULT_RATE_LIMITS)
        self.assertEqual(
            limits,
            {
                "login": Limit(5.0, 20),
                "score": Limit(20.0, 60),
                "relay": Limit(50.0, 200),
            },
        )
        self.assertEqual(format_limits(limits), DEFAULT_RATE_LIMITS.replace(" ", ""))

    def test_partial_keeps_defaults(self) -> None:
        """Kinds not named keep their default; per minute and off are understood."""
        limits = parse_limits("login=30/m,relay=off")
        self.assertEqual(limits["login"], Limit(0.5, 1))
        self.assertEqual(limits["score"], Limit(20.0, 60))
        self.assertIsNone(limits["relay"])

    def test_burst_default(self) -> None:
        """Without a burst, the burst is the rate per second rounded up."""
        self.assertEqual(parse_limits("score=2.5/s")["score"], Limit(2.5, 3))

    def test_all_off(self) -> None:
        """'off' turns every limit off."""
        self.assertEqual(set(parse_limits("off").values()), {None})

    def test_errors(self) -> None:
        """Malformed values are refused with a message."""
        for text in (
            "login",
            "logins=5/s",
            "login=5",
            "login=5/h",
            "login=0/s",
            "login=-1/s",
            "login=x/s",
            "login=inf/s",
            "login=5/s:burst=0",
            "login=5/s:burst=x",
            "login=5/s:size=3",
        ):
            self.assertRaises(ValueError, parse_limits, text)

    def test_networks(self) -> None:
        """Addresses and networks, or none."""
        self.assertEqual(parse_networks("none"), ())
        self.assertEqual(len(parse_networks("10.0.0.1, 192.168.0.0/16,::1")), 3)
        self.assertRaises(ValueError, parse_networks, "10.0.0.300")

    def test_retry_after(self) -> None:
        """Retry-After is whole seconds, at least 1."""
        self.assertEqual(retry_after(0.01), b"1")
        self.assertEqual(retry_after(2.1), b"3")

    def test_ipv6_by_prefix(self) -> None:
        """IPv6 clients are keyed by their /64; IPv4-mapped ones as IPv4."""
        self.assertEqual(client_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(
            client_key("2001:db8:1:2:bbbb::9"), client_key("2001:db8:1:2::1")
        )
        self.assertEqual(client_key("::ffff:198.51.100.1"), "198.51.100.1")
        self.assertEqual(client_key("198.51.100.1"), "198.51.100.1")

    def test_forwarded_client(self) -> None:
        """X-Forwarded-For is read from the right, past trusted proxies only."""
        limits = ClientLimits(Clock(), {}, trusted_proxies=parse_networks("10.0.0.0/8"))
        forwarded = limits.forwarded_client
        self.assertEqual(forwarded(b"198.51.100.1"), "198.51.100.1")
        self.assertEqual(forwarded(b"1.2.3.4, 198.51.100.1, 10.0.0.2"), "198.51.100.1")
        self.assertIsNone(forwarded(b"10.0.0.3"))
        self.assertIsNone(forwarded(b"nonsense, 10.0.0.3"))
        self.assertIsNone(forwarded(b""))
        self.assertIsNone(forwarded(None))
        self.assertIsNone(forwarded(b"\xff"))


LOGIN = b"/1/login"


class ChannelLimitTests(TestCase):
    """
    Rate limits as the channel applies them.
    """

    def site(self, *argv: str) -> ClockSite:
        site = ClockSite(*argv)
        self.addCleanup(site.stop)
        return site

    def test_login_429(self) -> None:
        """Past its burst a client gets 429 with Retry-After, and is served again
        once a token is back."""
        site = self.site("--rate-limit", "login=1/s:burst=2")
        self.assertEqual([site.get(LOGIN)[0] for _ in range(2)], [200, 200])
        code, headers, body = site.get(LOGIN)
        self.assertEqual(code, 429)
        self.assertEqual(headers[b"retry-after"], b"1")
        self.assertIn(b"Too many requests", body)
        self.assertEqual(site.get(LOGIN, peer="198.51.100.9")[0], 200)
        site.clock.advance(1)
        self.assertEqual(site.get(LOGIN)[0], 200)
        self.assertEqual(site.site.requests_limited, {"login": 1})

    def test_kinds_apart(self) -> None:
        """Each kind has its own bucket; unlimited routes are never refused."""
        site = self.site("--rate-limit", "login=1/m:burst=1,score=1/m:burst=1")
        self.assertEqual(site.get(LOGIN)[0], 200)
        self.assertEqual(site.get(LOGIN)[0], 429)
        self.assertEqual(site.post(b"/1/score?sessionkey=x", b"1")[0], 401)
        self.assertEqual(site.post(b"/1/score?sessionkey=x", b"1")[0], 429)
        for _ in range(5):
            self.assertEqual(site.get(b"/1/highscorelist")[0], 200)
        code, _, body = site.post(b"/relay", b"0,alice,*,*,*")
        self.assertEqual((code, body[:4]), (200, b"0/0/"))

    def test_relay_limited(self) -> None:
        """Relay requests at /relay and POST / share the relay limit."""
        site = self.site("--rate-limit", "relay=1/m:burst=2")
        self.assertEqual(site.post(b"/relay", b"0,a,*,*,*")[0], 200)
        self.assertEqual(site.post(b"/", b"0,b,*,*,*")[0], 200)
        code, headers, _ = site.post(b"/relay", b"0,c,*,*,*")
        self.assertEqual(code, 429)
        self.assertEqual(headers[b"retry-after"], b"60")
        self.assertEqual(site.post(b"/", b"0,c,*,*,*")[0], 429)

    def test_pipelined_keep_alive(self) -> None:
        """A 429 keeps the connection: pipelined requests after it are answered."""
        site = self.site("--rate-limit", "login=1/m:burst=1")
        request = b"GET /1/login HTTP/1.1\r\nHost: x\r\n\r\n"
        responses = site.exchange(
            request * 2 + b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual([r[0] for r in responses], [200, 429, 200])

    def test_loopback_exempt_by_default(self) -> None:
        """Loopback clients are not limited unless --rate-limit-exempt says so."""
        site = self.site("--rate-limit", "login=1/m:burst=1")
        self.assertEqual(
            {site.get(LOGIN, peer="127.0.0.1")[0] for _ in range(5)}, {200}
        )
        strict = self.site(
            "--rate-limit", "login=1/m:burst=1", "--rate-limit-exempt", "none"
        )
        codes = [strict.get(LOGIN, peer="127.0.0.1")[0] for _ in range(2)]
        self.assertEqual(codes, [200, 429])

    def test_off(self) -> None:
        """--rate-limit off builds no limiter at all."""
        site = self.site("--rate-limit", "off")
        assert site.site.limits is not None  # for --max-client-connections
        self.assertEqual(site.site.limits.limiters, {})
        self.assertEqual({site.get(LOGIN)[0] for _ in range(50)}, {200})

    def test_forwarded_for_ignored_without_trust(self) -> None:
        """X-Forwarded-For from an untrusted peer changes nothing."""
        site = self.site("--rate-limit", "login=1/m:burst=1")
        self.assertEqual(
            site.get(LOGIN, headers=b"X-Forwarded-For: 1.1.1.1\r\n")[0], 200
        )
        self.assertEqual(
            site.get(LOGIN, headers=b"X-Forwarded-For: 2.2.2.2\r\n")[0], 429
        )

    def test_trusted_proxy(self) -> None:
        """Behind a trusted proxy, each forwarded client has its own bucket, and
        a request without the header counts against the proxy."""
        site = self.site(
            "--rate-limit", "login=1/m:burst=1", "--trust-proxy", "10.0.0.0/8"
        )

        def login(forwarded: bytes) -> int:
            header = b"X-Forwarded-For: %s\r\n" % forwarded if forwarded else b""
            return site.get(LOGIN, peer="10.1.2.3", headers=header)[0]

        self.assertEqual(login(b"198.51.100.1"), 200)
        self.assertEqual(login(b"198.51.100.1"), 429)
        self.assertEqual(login(b"198.51.100.2"), 200)
        # A client cannot escape by prepending addresses of its own.
        self.assertEqual(login(b"9.9.9.9, 198.51.100.2"), 429)
        self.assertEqual(login(b""), 200)
        self.assertEqual(login(b""), 429)
        self.assertEqual(site.get(LOGIN, peer=REMOTE)[0], 200)

    def test_bad_option(self) -> None:
        """A malformed --rate-limit is a usage error."""
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, ClockSite, "--rate-limit", "login=fast")
        self.assertRaises(UsageError, ClockSite, "--trust-proxy", "proxy.example")
        self.assertRaises(UsageError, ClockSite, "--rate-limit-exempt", "x")
