"""
Random and mutated HTTP requests against the real server process over
127.0.0.1: never a 5xx, never a traceback in its output, and a valid request
is answered after every batch.

The example count comes from C{GAMESERVER_FUZZ_EXAMPLES} (default 200, for
CI); a release run uses many more, see README.
"""

import os
import re
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from tests.blocking_server import BlockingServer
from tests.support import split_responses

EXAMPLES = int(os.environ.get("GAMESERVER_FUZZ_EXAMPLES", "200"))
VALID = b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
SERVER_ERROR = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] 5\d\d ")

METHODS = st.one_of(
    st.sampled_from(
        [
            b"GET",
            b"POST",
            b"HEAD",
            b"PUT",
            b"DELETE",
            b"OPTIONS",
            b"PATCH",
            b"CONNECT",
            b"TRACE",
            b"get",
            b"PRI",
            b"G ET",
        ]
    ),
    st.binary(min_size=1, max_size=8),
)
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            b"login",
            b"score",
            b"highscorelist",
            b"relay",
            b"healthz",
            b"1",
            b"007",
            b"2147483647",
            b"2147483648",
            b"-1",
            b"%31",
            b"%00",
            b"%zz",
            b"..",
            b"",
            "\u0661".encode(),
            b"\xff\xfe",
            b"1e3",
            b"+1",
        ]
    ),
    st.binary(max_size=12),
    st.text(max_size=6).map(lambda t: t.encode("utf-8")),
)
QUERIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"?sessionkey=abc",
            b"?sessionkey=%zz&&",
            b"?=",
            b"?sessionkey=",
            b"?sessionkey=" + b"A" * 22,
            b"?sessionkey=" + b"A" * 43,
            b"?sessionkey=a&sessionkey=b",
            b"?" + b"x=y&" * 200,
            b"#frag",
        ]
    ),
    st.binary(max_size=16).map(lambda b: b"?" + b),
)
TARGETS = st.one_of(
    st.builds(
        lambda parts, query: b"/" + b"/".join(parts) + query,
        st.lists(SEGMENTS, max_size=5),
        QUERIES,
    ),
    st.sampled_from(
        [
            b"*",
            b"http://x/1/login",
            b"https://h:1/2/highscorelist",
            b"ftp://x/",
            b"//1/login",
            b"",
            b"/" * 9000,
        ]
    ),
)
HEADER_LINES = st.one_of(
    st.sampled_from(
        [
            b"Host: x",
            b"Host:",
            b"Content-Length: 4",
            b"Content-Length: 0",
            b"Content-Length: -1",
            b"Content-Length: 1.5",
            b"Content-Length: 4, 4",
            b"Content-Length: 99999999999999999999",
            b"Content-Length: 70000",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding: identity",
            b"Content-Encoding: gzip",
            b"Content-Type: text/plain; charset=utf-16",
            b"Content-Type: application/x-www-form-urlencoded",
            b"Expect: 100-continue",
            b"Expect: 200-ok",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Connection: upgrade",
            b"Upgrade: websocket",
            b"Origin: https://evil.example",
            b"Access-Control-Request-Method: POST",
            b"X-Forwarded-For: 198.51.100.1",
            b"X-Forwarded-For: 1.2.3.4, nonsense",
            b"X-Forwarded-For: ::1, 2001:db8::1",
            b"X-Forwarded-For: \xff",
            b"Bad Header",
            b": empty name",
            b" leading: space",
            b"X: \x00\x01",
            b"X-Long: " + b"a" * 9000,
        ]
    ),
    st.builds(
        lambda name, value: name + b": " + value,
        st.binary(min_size=1, max_size=10),
        st.binary(max_size=20),
    ),
)
BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"1500",
            b" 1500\n",
            b"4\r\n1500\r\n0\r\n\r\n",
            b"zz\r\n\r\n",
            b"0,alice,*,*,*",
            b"0,alice,bibbybabbis,bob,*",
            b"2,*,nokey,*,*",
            b"6,data,nokey,0,0",
            b"6,x,k,2,0",
            b"\xff\xfe\x00",
            "é,ü".encode("latin-1"),
            b"1" * 2000,
        ]
    ),
    st.binary(max_size=200),
)
EOLS = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """
    A request-shaped byte string, sometimes mutated.
    """
    eol = draw(st.sampled_from([b"\r\n"] * 4 + [b"\n", b"\r"]))
    line = b"%s %s %s" % (
        draw(METHODS),
        draw(TARGETS),
        draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1x", b""])),
    )
    headers = b"".join(h + eol for h in draw(st.lists(HEADER_LINES, max_size=6)))
    body = draw(BODIES)
    if draw(st.booleans()) and b"Content-Length" not in headers:
        headers += b"Content-Length: %d%s" % (len(body), eol)
    raw = line + eol + headers + eol + body
    for _ in range(draw(st.integers(0, 3))):
        raw = draw(mutation(raw))
    return raw


def mutation(raw: bytes) -> st.SearchStrategy[bytes]:
    """
    One random edit of C{raw}: flip, insert, delete, duplicate or truncate.
    """
    size = len(raw)
    at = st.integers(0, size)
    return st.one_of(
        st.builds(
            lambda i, b: raw[:i] + b + raw[i + 1 :],
            at,
            st.binary(min_size=1, max_size=4),
        ),
        st.builds(
            lambda i, b: raw[:i] + b + raw[i:], at, st.binary(min_size=1, max_size=8)
        ),
        st.builds(lambda i, n: raw[:i] + raw[i + n :], at, st.integers(1, 8)),
        st.builds(
            lambda i, n: raw[:i] + raw[i : i + n] * 2 + raw[i + n :],
            at,
            st.integers(1, 16),
        ),
        st.builds(lambda i: raw[:i], at),
    )


def packets(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} cut at C{cuts}.
    """
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in pairwise(points)]


class RealServerFuzzTests(TestCase):
    """
    Whatever a client sends the real server, it answers without a 5xx.
    """

    def setUp(self) -> None:
        # Rate limits on, and X-Forwarded-For read, so those paths are fuzzed
        # too; limits high enough that valid requests are never refused.
        self.server = BlockingServer(
            "--header-timeout",
            "2",
            "--rate-limit-exempt",
            "none",
            "--trust-proxy",
            "127.0.0.1",
            "--rate-limit",
            "login=10000/s,score=10000/s,relay=10000/s",
        )
        self.batches = 0

    def check_output(self) -> None:
        output = self.server.output
        for marker in ("Traceback", "Unhandled", "rendering", "failed"):
            self.assertNotIn(marker, output)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(requests(), min_size=1, max_size=4),
        st.lists(st.integers(0, 10_000), max_size=6),
    )
    def test_no_server_error(self, batch: list[bytes], cuts: list[int]) -> None:
        """Random and mutated requests, pipelined and cut into packets, get no
        5xx, and a valid request is answered afterwards."""
        self.batches += 1
        answer = self.server.exchange(packets(b"".join(batch), cuts))
        self.assertIsNone(SERVER_ERROR.search(answer), answer[:400])
        [(code, _, _)] = split_responses(self.server.exchange([VALID]))
        self.assertEqual(code, 200)

    def tearDown(self) -> None:
        try:
            self.assertEqual(self.server.stop(), 0)
            self.check_output()
        finally:
            self.server.close()
