"""
A relay on a fake clock, driven in the spec's own words, for the relay tests.
"""

from dataclasses import dataclass
from typing import Any

from twisted.internet.task import Clock

from gameserver.relay import (
    GameStep,
    PairingStep,
    Register,
    Relay,
    RelayConfig,
    Reply,
    Symbol,
)
from gameserver.relay_wire import format_reply


def text(reply: Reply) -> str:
    """
    A reply as its body text, e.g. C{0/9/abc}.
    """
    return format_reply(reply).decode("utf-8")


@dataclass
class Side:
    """
    One side of a started game, as its client knows it.
    """

    key: str
    seat: int
    counter: int = 0


class RelayHarness:
    """
    A L{Relay} over a L{Clock}, with one method per request kind that returns
    the reply's body text.
    """

    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.relay = Relay(self.clock, RelayConfig(**config))

    def register(
        self, name: str, wanted: str | None = None, long_wait: bool = False
    ) -> str:
        return text(self.relay.handle(Register(name, wanted, long_wait)))

    def key(self, name: str, wanted: str | None = None, long_wait: bool = False) -> str:
        """
        Register and return the pairing key.
        """
        reply = self.register(name, wanted, long_wait)
        assert reply.startswith("0/0/"), reply
        return reply[len("0/0/") :]

    def step(self, symbol: Symbol, key: str) -> str:
        return text(self.relay.handle(PairingStep(symbol, key)))

    def unregister(self, key: str) -> str:
        return self.step(Symbol.UNREGISTER, key)

    def pair(self, key: str) -> str:
        return self.step(Symbol.REQUEST_PAIR, key)

    def init(self, key: str) -> str:
        return self.step(Symbol.MAP_INIT, key)

    def ready(self, key: str) -> str:
        return self.step(Symbol.MAP_READY, key)

    def start(self, key: str) -> Side:
        """
        Send MAP_READY and read the game side from its C{0/8/} reply.
        """
        reply = self.ready(key)
        assert reply.startswith("0/8/"), reply
        game_key, seat = reply[len("0/8/") :].split("|")
        return Side(game_key, int(seat))

    def update(
        self, side: Side, data: str = "", counter: int | None = None, quit: bool = False
    ) -> str:
        """
        Send an update (or a quit) at C{counter}, by default the side's next
        one; a success reply moves the side's counter on.
        """
        at = side.counter if counter is None else counter
        reply = text(self.relay.handle(GameStep(side.key, side.seat, at, data, quit)))
        if counter is None and reply.startswith("0/"):
            side.counter += 1
        return reply

    def paired(self, a: str = "alice", b: str = "bob") -> tuple[str, str]:
        """
        Register C{a} and C{b} and pair them, C{b} asking (server side).
        """
        ka, kb = self.key(a), self.key(b)
        assert self.pair(kb) == f"0/3/{a}"
        assert self.pair(ka) == f"0/4/{b}"
        return ka, kb

    def loading(self, a: str = "alice", b: str = "bob") -> tuple[str, str]:
        ka, kb = self.paired(a, b)
        assert self.init(ka) == "0/6/"
        assert self.init(kb) == "0/5/"
        return ka, kb

    def game(self, a: str = "alice", b: str = "bob") -> tuple[Side, Side]:
        """
        A started game of C{a} and C{b}: C{a} is ready first, so it is seat 1.
        """
        ka, kb = self.loading(a, b)
        assert self.ready(ka) == "0/7/*"
        side_b = self.start(kb)
        return self.start(ka), side_b
