"""
Per-client token buckets: how many logins, score posts and relay requests
one client address may make, and how fast.

Each kind of request has its own L{RateLimiter}: a rate (tokens a second) and
a burst (the bucket's size).  A request takes a token; with none left it is
refused and told when the next token comes.  Memory is bounded twice: a
bucket that has been idle long enough to be full again is the same as no
bucket, so it is dropped (one L{DeadlineQueue} timer per limiter, nothing
scanned per request); and the table holds at most C{max_clients} buckets,
past which new addresses share one overflow bucket.
"""

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gameserver.expiry import DeadlineQueue

#: The kinds of request that are limited, by the route they are served under.
KINDS = ("login", "score", "relay")

DEFAULT_RATE_LIMITS = "login=5/s:burst=20, score=20/s:burst=60, relay=50/s:burst=200"
DEFAULT_EXEMPT = "127.0.0.0/8,::1"
DEFAULT_MAX_CLIENTS = 100_000
# The key every address shares once the table is full.
_OVERFLOW = "overflow"


@dataclass(frozen=True, slots=True)
class Limit:
    """
    C{rate} tokens a second into a bucket of C{burst} tokens.
    """

    rate: float
    burst: int


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class RateLimiter:
    """
    Token buckets for one kind of request, one bucket per client key.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        limit: Limit,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.limit = limit
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._full_warned = False
        # An idle bucket is full again after burst / rate seconds; one entry
        # per bucket, looked at again only then.
        self._refill = limit.burst / limit.rate
        self._queue: DeadlineQueue[str] = DeadlineQueue(
            clock, self._refill, self._expire, self._is_live
        )

    def __len__(self) -> int:
        """
        The number of buckets held.
        """
        return len(self._buckets)

    def take(self, key: str) -> float:
        """
        Take a token from C{key}'s bucket: 0 if there was one, otherwise the
        seconds until there will be (nothing is taken then).
        """
        now = self._clock.seconds()
        bucket = self._buckets.get(key)
        limit = self.limit
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                return self._take_overflow(key)
            self._buckets[key] = _Bucket(limit.burst - 1.0, now)
            self._queue.push(key)
            return 0.0
        tokens = bucket.tokens + (now - bucket.last) * limit.rate
        if tokens > limit.burst:
            tokens = limit.burst
        bucket.last = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / limit.rate

    def stop(self) -> None:
        """
        Stop the expiry timer.
        """
        self._queue.stop()

    def _take_overflow(self, key: str) -> float:
        if not self._full_warned:
            self._full_warned = True
            self.log.warn(
                "rate limit table full ({clients} clients): new clients share "
                "one bucket",
                clients=self.max_clients,
            )
        if key == _OVERFLOW:  # pragma: no cover - keys are addresses
            return 0.0
        if _OVERFLOW not in self._buckets:
            # Room is made for the shared bucket itself: one past the cap.
            now = self._clock.seconds()
            self._buckets[_OVERFLOW] = _Bucket(float(self.limit.burst), now)
            self._queue.push(_OVERFLOW)
        return self.take(_OVERFLOW)

    def _expire(self, key: str, deadline: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:  # pragma: no cover - one entry per bucket
            return True
        now = self._clock.seconds()
        if bucket.tokens + (now - bucket.last) * self.limit.rate >= self.limit.burst:
            del self._buckets[key]
            if len(self._buckets) < self.max_clients:
                self._full_warned = False
        else:
            # Still in use: look again one refill time from now (the FIFO
            # stays in deadline order, and a bucket outlives its last use by
            # at most twice the refill time).
            self._queue.push(key)
        return True

    def _is_live(self, key: str, deadline: float) -> bool:  # pragma: no cover
        # Entries are never withdrawn, so the queue never compacts.
        return key in self._buckets


def retry_after(seconds: float) -> bytes:
    """
    The C{Retry-After} value for a wait of C{seconds}: whole seconds, at least 1.
    """
    return b"%d" % max(1, math.ceil(seconds))


def parse_limits(text: str) -> dict[str, Limit | None]:
    """
    Parse C{login=5/s:burst=20,score=20/s,relay=off}: each kind's limit, or
    L{None} for C{off}; kinds not named keep their default.  A rate may be
    per second (C{/s}) or per minute (C{/m}); the burst defaults to the
    rate per second rounded up (at least 1).

    @raise ValueError: with a message for the user.
    """
    if text.strip().lower() == "off":
        return {kind: None for kind in KINDS}
    limits = dict(_parse(DEFAULT_RATE_LIMITS))
    limits.update(_parse(text))
    return limits


def _parse(text: str) -> Iterable[tuple[str, Limit | None]]:
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kind, sep, spec = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise ValueError(
                f"{item!r}: expected KIND=RATE/s[:burst=N] or KIND=off, "
                f"KIND one of {', '.join(KINDS)}"
            )
        yield kind, _parse_limit(kind, spec.strip())


def _parse_limit(kind: str, spec: str) -> Limit | None:
    if spec.lower() == "off":
        return None
    rate_text, _, rest = spec.partition(":")
    number, slash, unit = rate_text.partition("/")
    per = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}.get(unit.strip().lower())
    try:
        rate = float(number) / per if slash and per else math.nan
    except ValueError:
        rate = math.nan
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"{kind}: rate {rate_text!r} is not like 5/s or 100/m")
    burst = max(1, math.ceil(rate))
    if rest:
        name, _, value = rest.partition("=")
        if name.strip() != "burst" or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"{kind}: {rest!r} is not like burst=20")
        burst = int(value)
    return Limit(rate, burst)


def format_limits(limits: Mapping[str, Limit | None]) -> str:
    """
    The limits as C{--rate-limit} would take them (for logs).
    """
    parts = []
    for kind in KINDS:
        limit = limits.get(kind)
        parts.append(
            f"{kind}=off"
            if limit is None
            else f"{kind}={limit.rate:g}/s:burst={limit.burst}"
        )
    return ",".join(parts)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """
    Parse C{127.0.0.0/8,::1} (addresses or networks, comma-separated; C{none}
    for none).

    @raise ValueError: with a message for the user.
    """
    if text.strip().lower() in ("", "none"):
        return ()
    networks = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as e:
                raise ValueError(f"{item!r} is not an address or network") from e
    return tuple(networks)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """
    Whether C{host} (an IP address as text) is in one of C{networks}.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address in network for network in networks)


def client_key(host: str) -> str:
    """
    The bucket key of a client address: an IPv4 address as it is, an IPv6
    address by its /64 (one subscriber usually holds a whole /64, so
    per-address buckets would be free to multiply).
    """
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


class ClientLimits:
    """
    Every kind's L{RateLimiter}, which clients are exempt, and which peers
    may name the client in C{X-Forwarded-For}; the effective settings are
    logged once, at start.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        limits: Mapping[str, Limit | None],
        exempt: tuple[Network, ...] = (),
        trusted_proxies: tuple[Network, ...] = (),
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.limiters: dict[str, RateLimiter] = {
            kind: RateLimiter(clock, limit, max_clients)
            for kind, limit in limits.items()
            if limit is not None
        }
        self.exempt = exempt
        self.trusted_proxies = trusted_proxies
        self.log.info(
            "rate limits {limits}; exempt {exempt}; trusted proxies {proxies}",
            limits=format_limits(limits),
            exempt=",".join(map(str, exempt)) or "none",
            proxies=",".join(map(str, trusted_proxies)) or "none",
        )

    def is_exempt(self, host: str) -> bool:
        """
        Whether requests from C{host} are never limited.
        """
        return in_networks(host, self.exempt)

    def is_trusted_proxy(self, host: str) -> bool:
        """
        Whether C{host} is a proxy whose C{X-Forwarded-For} is believed.
        """
        return bool(self.trusted_proxies) and in_networks(host, self.trusted_proxies)

    def forwarded_client(self, header: bytes | None) -> str | None:
        """
        The client named by a trusted proxy's C{X-Forwarded-For}: the last
        address that is not itself a trusted proxy (earlier entries are the
        client's own claims); L{None} if there is none.
        """
        if not header:
            return None
        try:
            hops = header.decode("ascii").split(",")
        except UnicodeDecodeError:
            return None
        for hop in reversed(hops):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None  # garbage: do not guess past it
            if not in_networks(hop, self.trusted_proxies):
                return hop
        return None

    def stop(self) -> None:
        """
        Stop every limiter's timer.
        """
        for limiter in self.limiters.values():
            limiter.stop()
