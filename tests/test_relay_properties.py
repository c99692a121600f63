"""
Property-based tests of L{gameserver.relay}: random sequences of requests from
several players, lost replies and clock advances, checked against invariants.
"""

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gameserver.relay import (
    GameStep,
    PairingStep,
    Phase,
    Register,
    Relay,
    RelayConfig,
    Request,
    Symbol,
    held_size,
)
from gameserver.relay_wire import format_reply

CLIENTS = 4
PAIRING_PHASES = (Phase.PAIRED, Phase.LOADING, Phase.READY)


@dataclass
class Client:
    """
    What one well-meaning client knows, learnt only from the replies it got.
    """

    name: str
    key: str | None = None
    phase: str = "none"
    game_key: str | None = None
    seat: int = 0
    counter: int = 0
    sequence: int = 0
    # The request to send again as it was: its reply was lost (it was
    # applied), or it got 22/*/* (nothing was applied).
    pending: GameStep | None = None
    applied: bool = False
    received: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.key = None
        self.phase = "none"
        self.game_key = None
        self.pending = None
        self.applied = False
        self.received = []


class RelayMachine(RuleBasedStateMachine):
    """
    Several clients registering, pairing, playing, quitting, repeating
    requests whose replies were lost, and sending requests out of order, while
    the clock runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.relay = Relay(self.clock)
        self.clients = [Client(f"c{i}") for i in range(CLIENTS)]
        # Pieces the relay accepted from each game side, by its game key.
        self.sent: dict[str, list[str]] = {}
        self.partner_key: dict[str, str] = {}
        self.quit: set[str] = set()

    @initialize(
        max_cache=st.sampled_from([131_072, 24]),
        max_queue=st.sampled_from([131_072, 40]),
        max_players=st.sampled_from([50_000, 6]),
        max_games=st.sampled_from([25_000, 1]),
        max_data=st.sampled_from([268_435_456, 250]),
    )
    def configure(
        self,
        max_cache: int,
        max_queue: int,
        max_players: int,
        max_games: int,
        max_data: int,
    ) -> None:
        self.relay = Relay(
            self.clock,
            RelayConfig(
                max_cache=max_cache,
                max_queue=max_queue,
                max_players=max_players,
                max_games=max_games,
                max_data=max_data,
            ),
        )

    # -- rules --

    @rule(
        i=st.integers(0, CLIENTS - 1),
        wanted=st.sampled_from([None, None, None, *range(CLIENTS)]),
        long_wait=st.booleans(),
        lose=st.booleans(),
    )
    def register(self, i: int, wanted: int | None, long_wait: bool, lose: bool) -> None:
        client = self.clients[i]
        if client.phase != "none":
            return
        name = None if wanted is None else f"c{wanted}"
        self._send(client, Register(client.name, name, long_wait), lose)

    @rule(moves=st.lists(st.integers(0, 15), min_size=CLIENTS, max_size=CLIENTS * 6))
    def everyone_acts(self, moves: list[int]) -> None:
        """
        Rounds of every client sending its natural next request: move 0 loses
        the reply, move 1 quits a game.
        """
        for n, move in enumerate(moves):
            client = self.clients[n % CLIENTS]
            lose = move == 0
            if client.phase == "none":
                self._send(client, Register(client.name), lose)
            elif client.phase == "playing":
                self._update(client, lose, quit=move == 1)
            else:
                self._pairing_step(client, lose)

    @rule(i=st.integers(0, CLIENTS - 1), lose=st.booleans(), quit=st.booleans())
    def act(self, i: int, lose: bool, quit: bool) -> None:
        """One client's natural next request."""
        client = self.clients[i]
        if client.phase == "playing":
            self._update(client, lose, quit)
        elif client.phase != "none":
            self._pairing_step(client, lose)

    @rule(
        i=st.integers(0, CLIENTS - 1),
        symbol=st.sampled_from(
            [Symbol.UNREGISTER, Symbol.REQUEST_PAIR, Symbol.MAP_INIT, Symbol.MAP_READY]
        ),
    )
    def pairing_request_any_time(self, i: int, symbol: Symbol) -> None:
        """A pairing request whatever the client's state: maybe out of order."""
        client = self.clients[i]
        if client.key is not None:
            self._send(client, PairingStep(symbol, client.key), lose=False)

    @rule(i=st.integers(0, CLIENTS - 1), offset=st.sampled_from([-2, 2, 5]))
    def wrong_counter(self, i: int, offset: int) -> None:
        client = self.clients[i]
        if client.game_key is None or client.counter + offset < 0:
            return
        step = GameStep(client.game_key, client.seat, client.counter + offset, "x")
        reply = self._handle(step)
        assert reply in ("18/*/*", "19/*/*", "13/*/*"), reply

    @rule(i=st.integers(0, CLIENTS - 1), j=st.integers(0, CLIENTS - 1))
    def someone_elses_key(self, i: int, j: int) -> None:
        """A game key with the other seat never gets anyone's data."""
        client, other = self.clients[i], self.clients[j]
        if other.game_key is None:
            return
        step = GameStep(other.game_key, 1 - other.seat, client.counter, "x")
        assert self._handle(step) == "13/*/*"

    @rule(
        seconds=st.sampled_from(
            [0.1, 1.0, 1.0, 5.0, 5.0, 24.9, 25.0, 29.9, 30.0, 180.0]
        )
    )
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants --

    @invariant()
    def pairing_state_is_consistent(self) -> None:
        """Every player is in exactly one place: pool, a pairing, or a game."""
        relay = self.relay
        waiting = 0
        line = list(relay._pool)
        assert len(line) == len(set(map(id, line))) == len(relay._pool)
        pooled = {player.key for player in line}
        for key, player in relay._players.items():
            assert player.key == key and not player.gone
            in_pool = key in pooled
            named = relay._named.get((player.name, player.wanted or ""))
            in_named = named is not None and key in named
            if player.phase is Phase.WAITING:
                waiting += 1
                assert in_pool != in_named and player.partner is None
                assert in_pool == (player.wanted is None)
            else:
                assert not in_pool and not in_named
            if player.phase in PAIRING_PHASES:
                partner = player.partner
                assert partner is not None and partner is not player
                if not partner.gone:
                    assert partner.partner is player
                    assert partner.phase in PAIRING_PHASES
                    assert partner.server_side != player.server_side
            if player.phase is Phase.PLAYING:
                assert player.seat is not None and player.seat.player is player
            else:
                assert player.seat is None
        assert waiting == len(relay._pool) + sum(len(b) for b in relay._named.values())

    @invariant()
    def game_state_is_consistent(self) -> None:
        """Seats pair up, games are counted right, and every queue is bounded."""
        relay = self.relay
        games = set()
        for key, seat in relay._table._seats.items():
            assert seat.key == key and not seat.left
            assert seat.partner.partner is seat and seat.partner.index != seat.index
            games.add(frozenset((seat.key, seat.partner.key)))
            assert seat.inbox_bytes == len("|".join(seat.inbox).encode())
            assert seat.cache_bytes == len("|".join(seat.cache).encode())
            assert seat.inbox_bytes <= relay.config.max_queue
            # A fresh reply is cached whole; only repeats are held to max_cache.
            limit = max(relay.config.max_cache, relay.config.max_queue)
            assert seat.cache_bytes <= limit
            if seat.player is not None:
                assert seat.player.seat is seat
        assert len(games) == relay._table.count <= relay.config.max_games
        held = 0
        for seat in relay._table._seats.values():
            assert seat.inbox_held == sum(map(held_size, seat.inbox))
            assert seat.cache_held == sum(map(held_size, seat.cache))
            held += seat.inbox_held + seat.cache_held
        assert relay._table.held == held <= relay.config.max_data
        assert len(relay._players) <= relay.config.max_players

    @invariant()
    def received_is_a_prefix_of_sent(self) -> None:
        """A player got exactly its partner's pieces, in order, none twice."""
        for client in self.clients:
            if client.game_key is None:
                continue
            sent = self.sent.get(self.partner_key[client.game_key], [])
            assert client.received == sent[: len(client.received)], (
                client.received,
                sent,
            )

    # -- helpers --

    def _pairing_step(self, client: Client, lose: bool) -> None:
        assert client.key is not None
        symbol = {
            "waiting": Symbol.REQUEST_PAIR,
            "paired": Symbol.MAP_INIT,
            "loading": Symbol.MAP_READY,
            "ready": Symbol.MAP_READY,
        }[client.phase]
        self._send(client, PairingStep(symbol, client.key), lose)

    def _handle(self, request: Request) -> str:
        return format_reply(self.relay.handle(request)).decode()

    def _update(self, client: Client, lose: bool, quit: bool) -> None:
        assert client.game_key is not None
        repeat = client.pending is not None and client.applied
        if client.pending is not None:
            step = client.pending
        else:
            client.sequence += 1
            # Commas in the data on purpose; no "|", so pieces can be told apart.
            piece = f"{client.name},{client.game_key[:6]},{client.sequence}"
            step = GameStep(client.game_key, client.seat, client.counter, piece, quit)
        reply = self._handle(step)
        if not repeat and reply.split("/")[:2] in (["0", "9"], ["0", "10"]):
            self.sent.setdefault(step.key, []).append(step.data)
            if step.quit:
                self.quit.add(step.key)
        if reply == "22/*/*":
            # Nothing applied: send the same request again later.
            client.pending, client.applied = step, repeat
            return
        if lose:
            client.pending, client.applied = step, True
            return
        client.pending = None
        self._learn(client, reply)

    def _send(self, client: Client, request: Request, lose: bool) -> None:
        reply = self._handle(request)
        if not lose:
            self._learn(client, reply)

    def _learn(self, client: Client, reply: str) -> None:
        """Update what the client knows from one reply, as a real client would."""
        status, code, payload = reply.split("/", 2)
        if status == "0" and code in ("9", "10", "11"):
            assert client.phase == "playing"
            if code != "10":
                client.received.extend(payload.split("|"))
            client.counter += 1
            return
        if status == "21":
            # The lost reply's data as it was; the new data stays queued.
            if payload != "*":
                client.received.extend(payload.split("|"))
            client.counter += 1
            return
        if status == "15":
            assert client.game_key is not None
            partner = self.partner_key[client.game_key]
            if partner in self.quit:
                # Everything sent before the partner's quit was delivered.
                assert client.received == self.sent.get(partner, [])
            client.reset()
            return
        if status != "0":
            if reply == "9/2/*":
                client.phase = "waiting"
            else:
                client.reset()
            return
        if code == "0":
            client.key = payload
            client.phase = "waiting"
        elif code == "1":
            client.reset()
        elif code in ("3", "4"):
            assert payload in {c.name for c in self.clients}
            client.phase = "paired"
        elif code in ("5", "6"):
            client.phase = "loading"
        elif code == "7":
            client.phase = "ready"
        elif code == "8":
            game_key, seat = payload.split("|")
            if client.game_key == game_key:
                return  # the start reply again
            client.phase = "playing"
            client.game_key, client.seat = game_key, int(seat)
            client.counter, client.pending, client.received = 0, None, []
            self.partner_key[game_key] = self.relay._table._seats[game_key].partner.key


RelayMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None
)


class RelayPropertyTests(TestCase):
    """
    The relay machine, run by hypothesis.
    """

    def test_random_request_sequences_keep_invariants(self) -> None:
        """Random requests, lost replies and time keep every relay invariant."""
        RelayMachine.TestCase("runTest").runTest()
