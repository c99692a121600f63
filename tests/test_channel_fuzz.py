"""
Random and mutated HTTP requests through the real channel and resource tree:
no 5xx, no logged error, and a valid request is still answered afterwards.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from gameserver.server_tap import Options, make_site

VALID = b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"

METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"get", b"X"])
SEGMENTS = st.one_of(
    st.sampled_from(
        [b"login", b"score", b"highscorelist", b"relay", b"1", b"007", b""]
    ),
    st.binary(max_size=8),
)
TARGETS = st.builds(
    lambda parts, query: b"/" + b"/".join(parts) + query,
    st.lists(SEGMENTS, max_size=4),
    st.sampled_from([b"", b"?sessionkey=abc", b"?sessionkey=%zz&&", b"?="]),
)
HEADERS = st.lists(
    st.sampled_from(
        [
            b"Host: x",
            b"Content-Length: 4",
            b"Content-Length: -1",
            b"Content-Length: 99999999999999999999",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Expect: 100-continue",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Content-Type: application/x-www-form-urlencoded",
            b"Bad Header",
            b": empty name",
        ]
    ),
    max_size=5,
)
BODIES = st.one_of(
    st.sampled_from([b"", b"1500", b"4\r\n1500\r\n0\r\n\r\n", b"0,alice,*,*,*"]),
    st.binary(max_size=64),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """
    A request-shaped byte string, sometimes mutated at random.
    """
    method = draw(METHODS)
    target = draw(TARGETS)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b""]))
    headers = b"".join(h + b"\r\n" for h in draw(HEADERS))
    raw = b"%s %s %s\r\n%s\r\n%s" % (method, target, version, headers, draw(BODIES))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(raw)))
        raw = raw[:position] + draw(st.binary(max_size=6)) + raw[position + 1 :]
    return raw


class ChannelFuzzTests(TestCase):
    """
    Whatever a client sends, the server answers it without a 5xx.
    """

    @settings(max_examples=400, deadline=None)
    @given(st.lists(requests(), min_size=1, max_size=3), st.integers(1, 16))
    def test_no_server_error(self, batch: list[bytes], cut: int) -> None:
        """Random requests, cut into random packets, never get a 5xx, never log
        an error, and leave a fresh connection serving."""
        options = Options()
        options.parseOptions([])
        clock = Clock()
        site, state = make_site(options, clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        data = b"".join(batch)
        for start in range(0, len(data), cut):
            channel.dataReceived(data[start : start + cut])
        self.assertNotRegex(transport.value(), rb"HTTP/1\.[01] 5\d\d ")
        channel.connectionLost()

        fresh = site.buildProtocol(None)
        fresh_transport = StringTransport()
        fresh.makeConnection(fresh_transport)
        fresh.dataReceived(VALID)
        self.assertTrue(fresh_transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        fresh.connectionLost()
        clock.advance(3600)
        state.stopService()
