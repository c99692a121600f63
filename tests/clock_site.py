"""
The real site (channel and resource tree) on a L{Clock}, driven through
L{StringTransport}s: deterministic tests of limits and timeouts.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gameserver.channel import GameHTTPFactory, HTTPChannel
from gameserver.server_tap import Options, StateService, make_site
from tests.support import split_responses

Response = tuple[int, dict[bytes, bytes], bytes]
REMOTE = "203.0.113.7"


class ClockSite:
    """
    A gameserver site built from command-line options, on a L{Clock}.
    """

    def __init__(self, *argv: str) -> None:
        options = Options()
        options.parseOptions(list(argv))
        self.clock = Clock()
        self.site: GameHTTPFactory
        self.state: StateService
        self.site, self.state = make_site(options, self.clock)

    def connect(self, peer: str = REMOTE) -> tuple[HTTPChannel, StringTransport]:
        """
        A new connection from C{peer}.
        """
        transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        return channel, transport

    def exchange(self, *requests: bytes, peer: str = REMOTE) -> list[Response]:
        """
        Send C{requests} on one new connection from C{peer}; return the
        responses.
        """
        channel, transport = self.connect(peer)
        for request in requests:
            channel.dataReceived(request)
        channel.connectionLost()
        return split_responses(transport.value())

    def get(self, path: bytes, peer: str = REMOTE, headers: bytes = b"") -> Response:
        """
        C{GET path} from C{peer}.
        """
        [response] = self.exchange(
            b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, headers), peer=peer
        )
        return response

    def post(
        self, path: bytes, body: bytes, peer: str = REMOTE, headers: bytes = b""
    ) -> Response:
        """
        C{POST path} with C{body} from C{peer}.
        """
        [response] = self.exchange(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path, len(body), headers, body),
            peer=peer,
        )
        return response

    def stop(self) -> None:
        """
        Stop the state's timers.
        """
        self.state.stopService()
