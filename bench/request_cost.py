"""
Microseconds per request through the real channel and resource tree, in
process: a rate-limited client against an exempt (loopback) one.

Feeds the scores mix of C{bench/scores_mix.lua} (10% logins, 50% score posts,
40% list reads over 1000 levels) through one L{HTTPChannel} on a
L{StringTransport}, with no socket and no reactor, so what is measured is the
server's own work per request; prints the best of several rounds for a
loopback client (exempt from rate limits, as in C{bench/scores_mix.py}) and
for a remote client whose every request takes a token (limits set so high
that none is refused), alternating.

    python bench/request_cost.py [--requests 20000] [--rounds 7]
"""

import argparse
import random
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gameserver.channel import GameHTTPFactory, HTTPChannel
from gameserver.server_tap import Options, make_site

HIGH = "login=1e9/s,score=1e9/s,relay=1e9/s"


def site() -> GameHTTPFactory:
    options = Options()
    options.parseOptions(["--rate-limit", HIGH])  # type: ignore[no-untyped-call]
    factory, _ = make_site(options, Clock())
    return factory


def connect(factory: GameHTTPFactory, peer: str) -> tuple[HTTPChannel, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    channel = factory.buildProtocol(None)
    channel.makeConnection(transport)  # type: ignore[no-untyped-call]
    return channel, transport


def mix(key: bytes, count: int) -> list[bytes]:
    rng = random.Random(1)
    requests = []
    for _ in range(count):
        r = rng.random()
        if r < 0.1:
            user = rng.randrange(2, 100_000)
            requests.append(b"GET /%d/login HTTP/1.1\r\nHost: x\r\n\r\n" % user)
        elif r < 0.6:
            requests.append(
                b"POST /%d/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 4\r\n\r\n%d"
                % (rng.randrange(1000), key, rng.randrange(1000, 9999))
            )
        else:
            level = rng.randrange(1000)
            requests.append(
                b"GET /%d/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n" % level
            )
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    factory = site()
    channel, transport = connect(factory, "127.0.0.1")
    channel.dataReceived(b"GET /1/login HTTP/1.1\r\nHost: x\r\n\r\n")
    key = transport.value().rsplit(b"\r\n\r\n", 1)[1]
    requests = mix(key, args.requests)
    best = {"loopback (exempt)": 1e9, "remote (limited)": 1e9}
    peers = {"loopback (exempt)": "127.0.0.1", "remote (limited)": "203.0.113.7"}
    for _ in range(args.rounds):
        for name, peer in peers.items():
            channel, transport = connect(factory, peer)
            started = time.perf_counter()
            for request in requests:
                channel.dataReceived(request)
                transport.clear()
            best[name] = min(best[name], time.perf_counter() - started)
            assert b" 429 " not in transport.value()
    for name, seconds in best.items():
        print(f"{name:18} {seconds / len(requests) * 1e6:6.2f} us per request")
    extra = best["remote (limited)"] - best["loopback (exempt)"]
    print(f"rate limiting adds {extra / len(requests) * 1e6:.2f} us per request")


if __name__ == "__main__":
    main()
