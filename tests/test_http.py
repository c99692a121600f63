"""
HTTP behaviour of the real site on 127.0.0.1: keep-alive, pipelining, chunked
bodies, C{Expect: 100-continue}, HTTP/1.0, body limits, the access log.
"""

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web import pages

from gameserver import channel
from gameserver.channel import MAX_BODY, GameHTTPFactory
from gameserver.server_tap import Options, make_site
from tests.support import ANY_PORT, raw_exchange, split_responses


class SiteTestCase(TestCase):
    """
    Serves a fresh gameserver site on a free port of 127.0.0.1.
    """

    async def serve(self, *argv: str) -> int:
        options = Options()
        options.parseOptions(list(argv))
        site, state = make_site(options, reactor)
        self.site: GameHTTPFactory = site
        port = await serverFromString(reactor, ANY_PORT).listen(site)
        self.addCleanup(state.stopService)
        self.addCleanup(port.stopListening)
        self.port: int = int(port.getHost().port)
        return self.port

    async def exchange(
        self, *chunks: bytes, pause: float = 0.0
    ) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return split_responses(await raw_exchange(self.port, chunks, pause))

    async def login(self, user: int) -> bytes:
        [(code, _, key)] = await self.exchange(
            b"GET /%d/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % user
        )
        self.assertEqual(code, 200)
        return key


def post(level: int, key: bytes, body: bytes, close: bool = False) -> bytes:
    return (
        b"POST /%d/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: %d\r\n%s\r\n%s"
        % (level, key, len(body), b"Connection: close\r\n" if close else b"", body)
    )


LIST_CLOSE = b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class HTTPTests(SiteTestCase):
    """
    The contract's HTTP section, over TCP.
    """

    async def test_keep_alive(self) -> None:
        """Several requests are answered on one persistent HTTP/1.1 connection."""
        await self.serve()
        key = await self.login(1)
        responses = await self.exchange(
            post(2, key, b"10"), post(2, key, b"20"), LIST_CLOSE, pause=0.05
        )
        self.assertEqual([r[0] for r in responses], [200, 200, 200])
        self.assertEqual(responses[2][2], b"1=20")

    async def test_pipelining(self) -> None:
        """Pipelined requests sent in one packet are answered in order."""
        await self.serve()
        key = await self.login(4711)
        responses = await self.exchange(
            post(2, key, b"1500")
            + b"GET /2/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"GET /x/login HTTP/1.1\r\nHost: x\r\n\r\n"
            + LIST_CLOSE
        )
        self.assertEqual([r[0] for r in responses], [200, 200, 404, 400, 200])
        self.assertEqual(responses[1][2], b"4711=1500")

    async def test_chunked_body(self) -> None:
        """A chunked score body is accepted."""
        await self.serve()
        key = await self.login(1)
        responses = await self.exchange(
            b"POST /2/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n15\r\n2\r\n00\r\n0\r\n\r\n"
            % key
            + LIST_CLOSE
        )
        self.assertEqual([r[0] for r in responses], [200, 200])
        self.assertEqual(responses[1][2], b"1=1500")

    async def test_expect_continue(self) -> None:
        """Expect: 100-continue gets 100 Continue before the body is sent."""
        await self.serve()
        key = await self.login(1)
        raw = await raw_exchange(
            self.port,
            [
                b"POST /2/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 2\r\nExpect: 100-continue\r\n"
                b"Connection: close\r\n\r\n" % key,
                b"42",
            ],
            pause=0.2,
        )
        self.assertTrue(
            raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), raw
        )

    async def test_http10(self) -> None:
        """An HTTP/1.0 request is answered and the connection closed."""
        await self.serve()
        [(code, _, body)] = await self.exchange(
            b"GET /2/highscorelist HTTP/1.0\r\n\r\n"
        )
        self.assertEqual((code, body), (200, b""))

    async def test_head(self) -> None:
        """HEAD answers the GET headers with no body."""
        await self.serve()
        raw = await raw_exchange(
            self.port,
            [b"HEAD /2/highscorelist HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(raw.endswith(b"\r\n\r\n"), raw)

    async def test_score_body_over_1k(self) -> None:
        """A 2 KiB score body gets 413 and the connection keeps serving."""
        await self.serve()
        key = await self.login(1)
        responses = await self.exchange(
            post(2, key, b"1" * 2048), post(2, key, b"7"), LIST_CLOSE
        )
        self.assertEqual([r[0] for r in responses], [413, 200, 200])
        self.assertEqual(responses[2][2], b"1=7")

    async def test_huge_content_length(self) -> None:
        """A Content-Length over the site limit gets 413 at once, and the server
        goes on serving other connections."""
        await self.serve()
        key = await self.login(1)
        raw = await raw_exchange(
            self.port,
            [
                b"POST /2/score?sessionkey=%s HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 10000000000\r\n\r\n" % key + b"1" * 100_000
            ],
        )
        [(code, headers, _)] = split_responses(raw)
        self.assertEqual(code, 413)
        self.assertEqual(headers[b"connection"], b"close")
        [(code, _, body)] = await self.exchange(LIST_CLOSE)
        self.assertEqual((code, body), (200, b""))

    async def test_huge_expect_continue(self) -> None:
        """An oversized body announced with Expect: 100-continue is refused
        without inviting it."""
        await self.serve()
        raw = await raw_exchange(
            self.port,
            [
                b"POST /2/score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
            ],
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 413"), raw)
        self.assertNotIn(b"100 Continue", raw)

    async def test_huge_chunked_body(self) -> None:
        """A chunked body growing over the site limit gets 413."""
        await self.serve()
        chunk = b"%x\r\n%s\r\n" % (8192, b"1" * 8192)
        raw = await raw_exchange(
            self.port,
            [
                b"POST /2/score HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 10
            ],
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 413"), raw)

    async def test_malformed_request(self) -> None:
        """A malformed request line gets 400, never 500."""
        await self.serve()
        raw = await raw_exchange(self.port, [b"NONSENSE\r\n\r\n"])
        self.assertTrue(raw.startswith(b"HTTP/1.1 400"), raw)

    async def test_both_length_and_chunked(self) -> None:
        """A request with both Content-Length and Transfer-Encoding gets 400."""
        await self.serve()
        raw = await raw_exchange(
            self.port,
            [
                b"POST /2/score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n2\r\n15\r\n0\r\n\r\n"
            ],
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 400"), raw)


class AccessLogTests(SiteTestCase):
    """
    The access log is off by default and costs nothing then.
    """

    async def test_off_by_default(self) -> None:
        """Without --access-log nothing is formatted: the formatter is never called."""
        await self.serve()

        def explode(*args: object) -> str:
            raise AssertionError("formatted an access log line")

        self.patch(channel, "combinedLogFormatter", explode)
        [(code, _, _)] = await self.exchange(LIST_CLOSE)
        self.assertEqual(code, 200)
        self.assertIsNone(self.site._log_file)

    async def test_combined_format(self) -> None:
        """With --access-log each request is a combined-format line in the file."""
        path = self.mktemp()
        await self.serve("--access-log", path)
        await self.exchange(LIST_CLOSE)
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertRegex(
            lines[0],
            r'^"127\.0\.0\.1" - - \[.+\] '
            r'"GET /2/highscorelist HTTP/1\.1" 200 - "-" "-"$',
        )


class LimitTests(SiteTestCase):
    """
    The channel's limits and timeouts, answered before any resource runs.
    """

    async def test_long_target(self) -> None:
        """A request target over 8 KiB gets 414 and the connection closes."""
        await self.serve()
        raw = await raw_exchange(
            self.port, [b"GET /" + b"1" * 9000 + b"/login HTTP/1.1\r\nHost: x\r\n\r\n"]
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 414 "), raw[:40])
        self.assertIn(b"Connection: close", raw)

    async def test_too_many_headers(self) -> None:
        """More than 100 request headers get 431."""
        await self.serve()
        headers = b"".join(b"X-%d: y\r\n" % i for i in range(101))
        raw = await raw_exchange(
            self.port, [b"GET /1/highscorelist HTTP/1.1\r\n" + headers + b"\r\n"]
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 431 "), raw[:40])

    async def test_headers_too_large(self) -> None:
        """Request headers over 16 KiB in all get 431."""
        await self.serve()
        raw = await raw_exchange(
            self.port,
            [b"GET /1/highscorelist HTTP/1.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"],
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 431 "), raw[:40])

    async def test_malformed_header(self) -> None:
        """A header line without a colon gets 400."""
        await self.serve()
        raw = await raw_exchange(
            self.port, [b"GET /1/highscorelist HTTP/1.1\r\nNoColonHere\r\n\r\n"]
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:40])

    async def test_answers_before_refusal(self) -> None:
        """Requests pipelined before a malformed one are answered first, in order."""
        await self.serve()
        responses = await self.exchange(
            b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /x/login HTTP/1.1\r\nHost: x\r\n\r\n"
            b"BROKEN\r\n\r\n"
        )
        self.assertEqual([r[0] for r in responses], [200, 400, 400])
        self.assertEqual(responses[2][1][b"connection"], b"close")

    async def test_idle_timeout(self) -> None:
        """An idle connection is closed after the idle timeout."""
        await self.serve()
        self.site.idle_timeout = 0.3
        raw = await raw_exchange(
            self.port, [b"GET /1/highscorelist HTTP/1.1\r\nHost: x\r\n\r\n"], timeout=3
        )
        # The server answered, kept the connection open, then closed it idle.
        [(code, headers, _)] = split_responses(raw)
        self.assertEqual(code, 200)
        self.assertNotIn(b"connection", headers)

    async def test_absolute_form(self) -> None:
        """An absolute-form request target is served like its path."""
        await self.serve()
        [(code, _, body)] = await self.exchange(
            b"GET http://example.test/2/highscorelist HTTP/1.1\r\n"
            b"Host: example.test\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual((code, body), (200, b""))

    async def test_asterisk_form(self) -> None:
        """A request target that is not a path gets 400."""
        await self.serve()
        raw = await raw_exchange(self.port, [b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"])
        self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:40])

    async def test_http10_keep_alive(self) -> None:
        """HTTP/1.0 with Connection: keep-alive keeps the connection open."""
        await self.serve()
        responses = await self.exchange(
            b"GET /1/highscorelist HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /2/highscorelist HTTP/1.0\r\n\r\n"
        )
        self.assertEqual([r[0] for r in responses], [200, 200])
        self.assertEqual(responses[0][1][b"connection"], b"keep-alive")

    async def test_percent_encoded_path(self) -> None:
        """Percent-encoded digits in the path are decoded: /%32/ is level 2."""
        await self.serve()
        key = await self.login(1)
        responses = await self.exchange(
            post(2, key, b"5"), LIST_CLOSE.replace(b"/2/", b"/%32/")
        )
        self.assertEqual(responses[1][:1] + responses[1][2:], (200, b"1=5"))


class NoDelayTests(TestCase):
    """
    Responses are not held back by Nagle's algorithm.
    """

    def test_tcp_no_delay(self) -> None:
        """A new TCP connection gets TCP_NODELAY."""
        calls: list[bool] = []

        class Transport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                calls.append(enabled)

        factory = GameHTTPFactory(pages.notFound(), Clock())
        factory.buildProtocol(None).makeConnection(Transport())
        self.assertEqual(calls, [True])

    def test_unix_socket(self) -> None:
        """A transport that refuses the option (a UNIX socket) is served anyway."""

        class Transport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                raise OSError(95, "Operation not supported")

        factory = GameHTTPFactory(pages.notFound(), Clock())
        channel = factory.buildProtocol(None)
        channel.makeConnection(Transport())
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
