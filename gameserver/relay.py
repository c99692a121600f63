"""
Two-player matchmaking and data relay: the domain of the relay protocol.

This module knows nothing of HTTP; L{gameserver.relay_wire} turns request
bodies into the requests below and replies into bytes, and
L{gameserver.relay_resource} serves them at C{/relay}.
"""

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from sys import getsizeof
from typing import Final, assert_never

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gameserver.expiry import CountedDeadlineQueue, DeadlineQueue
from gameserver.keys import RANDOM_KEY_LENGTH, random_key

LONG_WAIT_KEY: Final = "bibbybabbis"
NOTHING: Final = "*"
SEPARATOR: Final = "|"


class Symbol(enum.IntEnum):
    """
    The request kinds, as numbered on the wire.
    """

    REGISTER = 0
    UNREGISTER = 1
    REQUEST_PAIR = 2
    MAP_INIT = 3
    MAP_READY = 4
    GAME_QUIT = 5
    GAME_UPDATE = 6


class Code(enum.IntEnum):
    """
    The success codes, the middle field of a C{0/<code>/<payload>} reply.
    """

    REGISTERED = 0
    UNREGISTERED = 1
    LOOKING = 2
    PAIRED_SERVER = 3
    PAIRED_CLIENT = 4
    INIT_SERVER = 5
    INIT_CLIENT = 6
    PARTNER_LOADING = 7
    START_PLAY = 8
    GAME_DATA = 9
    NO_DATA = 10
    RESEND = 11


@dataclass(frozen=True, slots=True)
class Reply:
    """
    A reply C{<status>/<code>/<payload>}: status 0 is success, anything else
    one of the L{Errors}.
    """

    status: int
    code: str
    payload: str

    @property
    def ok(self) -> bool:
        """
        Whether this is a success reply.
        """
        return self.status == 0

    @classmethod
    def success(cls, code: Code, payload: str = NOTHING) -> "Reply":
        """
        The success reply C{0/<code>/<payload>}.
        """
        return cls(0, str(int(code)), payload)


class Errors:
    """
    The error replies, exactly as the spec's error table writes them.
    """

    BAD_LENGTH: Final = Reply(1, NOTHING, NOTHING)
    NOT_UTF8: Final = Reply(2, NOTHING, NOTHING)
    BAD_SYMBOL: Final = Reply(4, "0", NOTHING)
    BAD_PLAYER: Final = Reply(4, "1", NOTHING)
    BAD_COUNTER: Final = Reply(4, "2", NOTHING)
    BAD_REGISTER_KEY: Final = Reply(4, "3", NOTHING)
    UNKNOWN_PAIRING_KEY: Final = Reply(5, NOTHING, NOTHING)
    PARTNER_DROPPED: Final = Reply(9, "2", NOTHING)
    OUT_OF_ORDER: Final = Reply(10, NOTHING, NOTHING)
    POOL_FULL: Final = Reply(11, NOTHING, NOTHING)
    NO_ROOM_FOR_GAME: Final = Reply(12, NOTHING, NOTHING)
    UNKNOWN_GAME_KEY: Final = Reply(13, NOTHING, NOTHING)
    PARTNER_LEFT: Final = Reply(15, NOTHING, NOTHING)
    NAMED_PARTNER_DROPPED: Final = Reply(17, NOTHING, NOTHING)
    COUNTER_BEHIND: Final = Reply(18, NOTHING, NOTHING)
    COUNTER_AHEAD: Final = Reply(19, NOTHING, NOTHING)
    TOO_LONG: Final = Reply(20, NOTHING, NOTHING)
    # Not in the spec: the relay holds as much game data as max_data allows;
    # nothing was applied, and the same request may be sent again (HTTP 503).
    BUSY: Final = Reply(22, NOTHING, NOTHING)

    @staticmethod
    def cache_full(last_data: str) -> Reply:
        """
        C{21/*/<data>}: the resend cache is full; the last reply's data as it
        was.
        """
        return Reply(21, NOTHING, last_data)


@dataclass(frozen=True, slots=True)
class Register:
    """
    REGISTER: enter the pairing pool as C{name}, wanting partner C{wanted}
    (L{None} for anyone); C{long_wait} for the long-wait register key.
    """

    name: str
    wanted: str | None = None
    long_wait: bool = False


@dataclass(frozen=True, slots=True)
class PairingStep:
    """
    UNREGISTER, REQUEST_PAIR, MAP_INIT or MAP_READY with a pairing key.
    """

    symbol: Symbol
    key: str


@dataclass(frozen=True, slots=True)
class GameStep:
    """
    GAME_UPDATE (or GAME_QUIT when C{quit}) with a game key, the player's
    seat (0 or 1) and its state counter.
    """

    key: str
    seat: int
    counter: int
    data: str
    quit: bool = False


Request = Register | PairingStep | GameStep


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """
    Timeouts (seconds) and capacity bounds (counts and bytes) of a L{Relay}.

    @ivar max_cache: bytes of the resend cache of one player (the data of
        its last reply, joined by C{|}).
    @ivar max_queue: bytes of data pending for one player, joined by C{|}.
    @ivar max_data: bytes of memory all players' pending data and resend
        caches may hold together (each piece counted by L{held_size}); an
        update that would pass it gets L{Errors.BUSY}, with nothing applied.
    @ivar max_pair_scan: waiting players a random REQUEST_PAIR may skip
        because one of the two shuns the other, before it answers "still
        looking" instead; keeps a request O(1) whatever the pool holds.
    @ivar max_shunned: partner names a player remembers as "never again";
        the oldest is forgotten first.
    """

    pairing_timeout: float = 25.0
    long_wait_timeout: float = 180.0
    game_timeout: float = 30.0
    max_players: int = 50_000
    max_games: int = 25_000
    max_cache: int = 131_072
    max_queue: int = 131_072
    max_data: int = 268_435_456
    max_pair_scan: int = 256
    max_shunned: int = 64

    def __post_init__(self) -> None:
        for name in ("pairing_timeout", "long_wait_timeout", "game_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("max_players", "max_games", "max_cache", "max_queue", "max_data"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_pair_scan", "max_shunned"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


class Phase(enum.Enum):
    """
    Where a registered player is in the pairing handshake.
    """

    WAITING = "waiting"  # in the pool (or the named index), no partner
    PAIRED = "paired"  # has a partner, has not sent MAP_INIT
    LOADING = "loading"  # sent MAP_INIT
    READY = "ready"  # sent MAP_READY, partner still loading
    PLAYING = "playing"  # the game started; MAP_READY repeats the start reply


class _Match:
    """
    What a player has once it was first paired: most players in a big pool
    never get one, so a waiting player does not pay for these.
    """

    __slots__ = ("partner", "seat", "shunned")

    def __init__(self) -> None:
        self.partner: _Player | None = None
        self.seat: _Seat | None = None
        # Names never to be paired with again, oldest first.
        self.shunned: dict[str, None] | None = None


# Bits of _Player.flags: a small int, so setting one allocates nothing.
_GONE = 1
_LONG_WAIT = 2
_SERVER_SIDE = 4


class _Player:
    """
    A registered player, known by its pairing key until its first game
    update (or until it is dropped).

    Kept small, since the pool may hold tens of thousands: eight slots (96
    bytes), the pairing key as an int (48 bytes where its 22-letter text
    takes 80), no deadline of its own (see L{CountedDeadlineQueue}),
    and the fields of a paired player in a L{_Match} made on first use.
    """

    __slots__ = (
        "flags",
        "key",
        "line_entries",
        "match",
        "name",
        "phase",
        "queue_entries",
        "wanted",
    )

    def __init__(self, key: int, name: str, wanted: str | None, long_wait: bool):
        self.key = key
        self.name = name
        self.wanted = wanted
        self.flags = _LONG_WAIT if long_wait else 0
        self.phase = Phase.WAITING
        self.match: _Match | None = None
        # Entries of this player in its deadline queue, and in the random
        # pool's line (see _Line).
        self.queue_entries = 0
        self.line_entries = 0

    def _matched(self) -> _Match:
        match = self.match
        if match is None:
            match = self.match = _Match()
        return match

    @property
    def partner(self) -> "_Player | None":
        return None if self.match is None else self.match.partner

    @partner.setter
    def partner(self, partner: "_Player | None") -> None:
        if partner is not None or self.match is not None:
            self._matched().partner = partner

    @property
    def seat(self) -> "_Seat | None":
        return None if self.match is None else self.match.seat

    @seat.setter
    def seat(self, seat: "_Seat | None") -> None:
        if seat is not None or self.match is not None:
            self._matched().seat = seat

    @property
    def shunned(self) -> dict[str, None] | None:
        return None if self.match is None else self.match.shunned

    def shun_list(self) -> dict[str, None]:
        match = self._matched()
        if match.shunned is None:
            match.shunned = {}
        return match.shunned

    def _flag(self, bit: int, on: bool) -> None:
        self.flags = self.flags | bit if on else self.flags & ~bit

    @property
    def gone(self) -> bool:
        return bool(self.flags & _GONE)

    @gone.setter
    def gone(self, gone: bool) -> None:
        self._flag(_GONE, gone)

    @property
    def long_wait(self) -> bool:
        return bool(self.flags & _LONG_WAIT)

    @property
    def server_side(self) -> bool:
        return bool(self.flags & _SERVER_SIDE)

    @server_side.setter
    def server_side(self, server_side: bool) -> None:
        self._flag(_SERVER_SIDE, server_side)


class _Seat:
    """
    One side of a game, known by its own game key.

    C{inbox} holds the partner's pieces not yet delivered; C{cache} the
    pieces of the last reply, for a repeated counter.  Sizes (C{_bytes}) are
    UTF-8 bytes of the pieces joined by C{|}, as the per-player limits count
    them; C{_held} is the memory the pieces hold (L{held_size}), as the
    table's total counts it against C{max_data}.
    """

    __slots__ = (
        "cache",
        "cache_bytes",
        "cache_held",
        "counter",
        "deadline",
        "inbox",
        "inbox_bytes",
        "inbox_held",
        "index",
        "key",
        "left",
        "name",
        "partner",
        "player",
    )

    def __init__(self, key: str, index: int, player: "_Player") -> None:
        self.key = key
        self.index = index
        self.name = player.name
        self.player: _Player | None = player
        self.partner: _Seat = self
        self.counter = -1
        self.inbox: list[str] = []
        self.inbox_bytes = 0
        self.inbox_held = 0
        self.cache: list[str] = []
        self.cache_bytes = 0
        self.cache_held = 0
        self.left = False
        self.deadline: float | None = None


def _in_line(player: _Player) -> bool:
    """
    Whether C{player} waits for a random partner.
    """
    # The flag itself, not the property: this runs for every pool entry seen.
    return (
        player.phase is Phase.WAITING
        and player.wanted is None
        and not player.flags & _GONE
    )


class _Line:
    """
    The random-pairing players waiting for a partner, longest-waiting first.

    A deque of players with lazy removal: 8 bytes an entry, where an
    C{OrderedDict} costs about 90.  A player who leaves the line (paired,
    dropped) keeps its entry until the entry reaches the front or the line
    is compacted; a player who comes back is appended again.  An entry is
    live if its player waits in the line and it is the player's newest
    entry: C{line_entries} counts a player's entries, and the older ones come
    first.  Compaction, when stale entries outnumber live ones, keeps memory
    proportional to who is waiting.
    """

    def __init__(self) -> None:
        self._entries: deque[_Player] = deque()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def join(self, player: _Player) -> None:
        """
        Put C{player} at the back of the line.
        """
        player.line_entries += 1
        self._entries.append(player)
        self._live += 1

    def leave(self) -> None:
        """
        Note that one player has left the line (its state says so).
        """
        self._live -= 1
        entries = self._entries
        while entries and not self._is_live_head(entries[0]):
            entries.popleft().line_entries -= 1
        if len(entries) > 2 * self._live + 1024:
            self._compact()

    def __iter__(self) -> Iterator[_Player]:
        seen: dict[int, int] | None = None
        for player in self._entries:
            if not _in_line(player):
                continue
            if player.line_entries > 1:
                # Only its newest entry counts; the older ones come first.
                seen = {} if seen is None else seen
                count = seen[id(player)] = seen.get(id(player), 0) + 1
                if count < player.line_entries:
                    continue
            yield player

    @staticmethod
    def _is_live_head(player: _Player) -> bool:
        # The first entry is a player's oldest: live only if it is its only.
        return _in_line(player) and player.line_entries == 1

    def _compact(self) -> None:
        entries = self._entries
        for player in entries:
            player.line_entries = 0
        kept: list[_Player] = []
        for player in reversed(entries):
            if _in_line(player) and not player.line_entries:
                player.line_entries = 1
                kept.append(player)
        kept.reverse()
        entries.clear()
        entries.extend(kept)


def _shuns(player: _Player, other: _Player) -> bool:
    """
    Whether C{player} refuses to be paired with C{other} again.
    """
    return player.shunned is not None and other.name in player.shunned


# A queued piece's slot in its list: one pointer.
_SLOT_BYTES: Final = 8


def held_size(piece: str) -> int:
    """
    The memory a queued piece of game data holds: its string (header and
    text, as C{sys.getsizeof} counts it) and its list slot.

    Counted as memory rather than UTF-8 bytes, so that many tiny pieces, or
    text Python stores at four bytes a character, cannot hold more memory
    than the budget says.
    """
    return getsizeof(piece) + _SLOT_BYTES


def _joined_size(a_items: int, a_bytes: int, b_items: int, b_bytes: int) -> int:
    """
    The size of two lists of pieces, each joined by "|", joined by "|".
    """
    return a_bytes + b_bytes + (1 if a_items and b_items else 0)


class Relay:
    """
    Two-player matchmaking and a data relay between the two, over requests
    that each get one reply.

    A player registers under a name and gets a pairing key.  It then asks for
    a partner until it has one: either anyone (the longest-waiting other
    player who also wants anyone and was never paired with it before) or the
    one player it named, who must have named it back.  The asker is the
    "server" side, the player it found the "client" side.  Both announce
    MAP_INIT, then MAP_READY until both are ready; the game then starts and
    each side gets its own game key and seat (0 or 1).

    In the game each side sends updates with a state counter that goes up by
    one per reply it received.  Every update queues its data for the partner
    and returns what the partner queued since; a repeated counter (a lost
    reply) returns the lost reply again plus anything new, and queues
    nothing.  A GAME_QUIT is an update whose data is the player's last; the
    partner gets everything still queued, then C{15/*/*}.

    Everything idle expires: a pairing player after C{pairing_timeout} (or
    C{long_wait_timeout} with the long-wait register key), a game side after
    C{game_timeout}.  Expiry runs on three L{DeadlineQueue}s, one per
    lifetime, and is brought up to date at the start of every request, so it
    is exact without scanning anything.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, config: RelayConfig | None = None):
        self.config = config if config is not None else RelayConfig()
        self._clock = clock
        self._players: dict[int, _Player] = {}
        # Random-pairing players waiting, longest-waiting first.
        self._pool = _Line()
        # Named-pairing players waiting, by (own name, wanted name).
        self._named: dict[tuple[str, str], OrderedDict[int, _Player]] = {}
        c = self.config
        self._pairing_deadlines: CountedDeadlineQueue[_Player] = CountedDeadlineQueue(
            clock, c.pairing_timeout, self._expire_player, self._player_is_live
        )
        self._long_wait_deadlines: CountedDeadlineQueue[_Player] = CountedDeadlineQueue(
            clock, c.long_wait_timeout, self._expire_player, self._player_is_live
        )
        self._table = _GameTable(clock, c, self._retire)
        #: Seconds the last relay request took; set by whoever serves it.
        self.last_request_seconds = 0.0

    @property
    def players(self) -> int:
        """
        Registered players, waiting or in the handshake.
        """
        self.expire_due()
        return len(self._players)

    @property
    def waiting(self) -> int:
        """
        Players waiting for a partner.
        """
        self.expire_due()
        return len(self._pool) + sum(len(b) for b in self._named.values())

    @property
    def games(self) -> int:
        """
        Games with at least one side still in them.
        """
        self.expire_due()
        return self._table.count

    @property
    def data_bytes(self) -> int:
        """
        Memory held by game data: every side's pending data and resend cache
        (see L{held_size}); at most C{config.max_data}.
        """
        self.expire_due()
        return self._table.held

    def handle(self, request: Request) -> Reply:
        """
        Apply one request and return its reply.
        """
        self.expire_due()
        match request:
            case Register():
                return self._register(request)
            case PairingStep():
                return self._pairing_step(request)
            case GameStep():
                return self._table.step(request)
            case _:
                assert_never(request)

    def expire_due(self) -> None:
        """
        Expire every player and game side whose time has come.
        """
        self._pairing_deadlines.expire_due()
        self._long_wait_deadlines.expire_due()
        self._table.expire_due()

    def stop(self) -> None:
        """
        Cancel the expiry timers; the relay is not used any more.
        """
        self._pairing_deadlines.stop()
        self._long_wait_deadlines.stop()
        self._table.stop()

    # -- registering and pairing --

    def _register(self, request: Register) -> Reply:
        if len(self._players) >= self.config.max_players:
            return Errors.POOL_FULL
        key = _new_pairing_key(self._players)
        player = _Player(key, request.name, request.wanted, request.long_wait)
        self._players[key] = player
        self._enqueue(player)
        self._touch(player)
        return Reply.success(Code.REGISTERED, _pairing_key_text(key))

    def _pairing_step(self, request: PairingStep) -> Reply:
        key = _pairing_key_number(request.key)
        player = None if key is None else self._players.get(key)
        if player is None:
            return Errors.UNKNOWN_PAIRING_KEY
        if request.symbol is Symbol.UNREGISTER:
            self._drop(player, leave_game=True)
            return Reply.success(Code.UNREGISTERED)
        partner = player.partner
        if partner is not None and partner.gone and player.phase is not Phase.PLAYING:
            return self._partner_dropped(player, partner)
        self._touch(player)
        if request.symbol is Symbol.REQUEST_PAIR:
            return self._request_pair(player)
        if request.symbol is Symbol.MAP_INIT:
            return self._map_init(player)
        if request.symbol is Symbol.MAP_READY:
            return self._map_ready(player)
        return self._out_of_order(player)

    def _request_pair(self, player: _Player) -> Reply:
        if player.phase is Phase.WAITING:
            found = self._find_partner(player)
            if found is None:
                return Reply.success(Code.LOOKING)
            self._pair(player, found)
        if player.phase is Phase.PAIRED:
            # Again for a side whose pairing reply was lost.
            assert player.partner is not None
            code = Code.PAIRED_SERVER if player.server_side else Code.PAIRED_CLIENT
            return Reply.success(code, player.partner.name)
        return self._out_of_order(player)

    def _map_init(self, player: _Player) -> Reply:
        # Accepted again while loading, for a side whose reply was lost.
        if player.phase not in (Phase.PAIRED, Phase.LOADING):
            return self._out_of_order(player)
        player.phase = Phase.LOADING
        return Reply.success(
            Code.INIT_SERVER if player.server_side else Code.INIT_CLIENT, ""
        )

    def _map_ready(self, player: _Player) -> Reply:
        if player.phase is Phase.PLAYING:
            assert player.seat is not None
            if not player.seat.left:
                self._table.touch(player.seat)
            return _start_reply(player.seat)
        if player.phase is Phase.READY:
            return Reply.success(Code.PARTNER_LOADING)
        if player.phase is not Phase.LOADING:
            return self._out_of_order(player)
        assert player.partner is not None
        if player.partner.phase is Phase.READY:
            return self._start_game(player, player.partner)
        player.phase = Phase.READY
        return Reply.success(Code.PARTNER_LOADING)

    def _find_partner(self, player: _Player) -> _Player | None:
        if player.wanted is not None:
            bucket = self._named.get((player.wanted, player.name))
            for candidate in bucket.values() if bucket else ():
                if candidate is not player:
                    return candidate
            return None
        # Only players shunning or shunned are skipped; the scan is capped so
        # that a pool full of them cannot make one request walk all of it.
        skipped = 0
        for candidate in self._pool:
            if candidate is player:
                continue
            if _shuns(player, candidate) or _shuns(candidate, player):
                skipped += 1
                if skipped > self.config.max_pair_scan:
                    return None
                continue
            return candidate
        return None

    def _pair(self, asker: _Player, found: _Player) -> None:
        for player, partner in ((asker, found), (found, asker)):
            player.phase = Phase.PAIRED
            player.partner = partner
        # Only now, so that the line can drop both entries at once.
        self._unqueue(asker)
        self._unqueue(found)
        asker.server_side = True
        found.server_side = False
        self._log.debug(
            "paired {server} with {client}", server=asker.name, client=found.name
        )

    def _partner_dropped(self, player: _Player, partner: _Player) -> Reply:
        player.partner = None
        player.server_side = False
        if player.wanted is not None:
            self._drop(player, leave_game=False)
            return Errors.NAMED_PARTNER_DROPPED
        player.phase = Phase.WAITING
        self._shun(player, partner.name)
        # Back at the end of the pool: a new wait begins.
        self._enqueue(player)
        self._touch(player)
        return Errors.PARTNER_DROPPED

    def _shun(self, player: _Player, name: str) -> None:
        shunned = player.shun_list()
        shunned.pop(name, None)
        shunned[name] = None
        while len(shunned) > self.config.max_shunned:
            del shunned[next(iter(shunned))]

    def _out_of_order(self, player: _Player) -> Reply:
        self._drop(player, leave_game=True)
        return Errors.OUT_OF_ORDER

    def _enqueue(self, player: _Player) -> None:
        if player.wanted is None:
            self._pool.join(player)
        else:
            wish = (player.name, player.wanted)
            self._named.setdefault(wish, OrderedDict())[player.key] = player

    def _unqueue(self, player: _Player) -> None:
        if player.wanted is None:
            self._pool.leave()
        else:
            wish = (player.name, player.wanted)
            bucket = self._named[wish]
            del bucket[player.key]
            if not bucket:
                del self._named[wish]

    def _drop(self, player: _Player, leave_game: bool) -> None:
        """
        Forget a player's pairing key; its partner notices on its next
        request.  With C{leave_game}, its game side leaves the game too.
        """
        if player.flags & _GONE:
            return
        player.flags |= _GONE
        del self._players[player.key]
        self._untouch(player)
        if player.phase is Phase.WAITING:
            self._unqueue(player)
        seat = player.seat
        if seat is not None:
            player.seat = None
            seat.player = None
            if leave_game:
                self._table.leave(seat)

    def _retire(self, player: _Player) -> None:
        self._drop(player, leave_game=False)

    def _touch(self, player: _Player) -> None:
        queue = self._player_deadlines(player)
        if player.queue_entries:
            queue.withdraw()
        queue.push(player)

    def _untouch(self, player: _Player) -> None:
        if player.queue_entries:
            self._player_deadlines(player).withdraw()

    def _player_deadlines(self, player: _Player) -> CountedDeadlineQueue[_Player]:
        if player.long_wait:
            return self._long_wait_deadlines
        return self._pairing_deadlines

    def _expire_player(self, player: _Player, deadline: float) -> bool:
        # Called for the player's newest entry only.
        if not self._player_is_live(player, deadline):
            return False
        self._log.debug("player {name} timed out", name=player.name)
        self._drop(player, leave_game=False)
        return True

    @staticmethod
    def _player_is_live(player: _Player, deadline: float) -> bool:
        return not player.gone

    def _start_game(self, player: _Player, partner: _Player) -> Reply:
        if self._table.count >= self.config.max_games:
            # The partner learns of it as a dropped partner.
            self._drop(player, leave_game=False)
            return Errors.NO_ROOM_FOR_GAME
        seat = self._table.start(player, partner)
        self._log.debug("game of {a} and {b} started", a=player.name, b=partner.name)
        return _start_reply(seat)


class _GameTable:
    """
    The games in progress, each of two L{_Seat}s known by their game keys.

    A side's update queues its data for the partner and takes what the
    partner queued for it; a repeated counter resends the last reply's data
    plus anything new.  A side that quits, times out or lets too much pile up
    leaves; its partner still gets what was queued for it, then C{15/*/*}.
    The game ends when both sides have left.  C{retire} is called with a
    side's player when its pairing key is no longer needed.

    C{held} is the memory all sides' pieces hold, kept up to date wherever a
    queue or cache changes, so that checking it against C{max_data} is one
    comparison.  An update that would pass it is refused before anything
    changes; a repeated counter only moves pieces from queue to cache, so it
    is never refused for it.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        config: RelayConfig,
        retire: Callable[[_Player], None],
    ) -> None:
        self._config = config
        self._retire = retire
        # Game sides still in their game, by game key.
        self._seats: dict[str, _Seat] = {}
        self.count = 0
        # Memory held by every side's queue and cache (held_size of each piece).
        self.held = 0
        self._deadlines: DeadlineQueue[_Seat] = DeadlineQueue(
            clock, config.game_timeout, self._expire, self._is_live
        )

    def expire_due(self) -> None:
        self._deadlines.expire_due()

    def stop(self) -> None:
        self._deadlines.stop()

    def start(self, player: _Player, partner: _Player) -> _Seat:
        """
        Start the game of two ready players; return C{player}'s seat, 0.
        """
        # The side whose MAP_READY starts the game is seat 0.
        seat0 = _Seat(_new_key(self._seats), 0, player)
        self._seats[seat0.key] = seat0
        seat1 = _Seat(_new_key(self._seats), 1, partner)
        self._seats[seat1.key] = seat1
        seat0.partner, seat1.partner = seat1, seat0
        for side, seat in ((player, seat0), (partner, seat1)):
            side.phase = Phase.PLAYING
            side.seat = seat
            self.touch(seat)
        self.count += 1
        return seat0

    def step(self, request: GameStep) -> Reply:
        """
        Apply a GAME_UPDATE or GAME_QUIT.
        """
        seat = self._seats.get(request.key)
        # A key with the wrong seat is another player's key: never its data.
        if seat is None or seat.index != request.seat:
            return Errors.UNKNOWN_GAME_KEY
        if seat.player is not None:
            # An update proves the start reply arrived: the pairing key retires.
            self._retire(seat.player)
        if request.counter < seat.counter:
            self.touch(seat)
            return Errors.COUNTER_BEHIND
        if request.counter > seat.counter + 1:
            self.touch(seat)
            return Errors.COUNTER_AHEAD
        if request.counter == seat.counter:
            self.touch(seat)
            return self._resend(seat)
        return self._update(seat, request)

    def _update(self, seat: _Seat, request: GameStep) -> Reply:
        partner = seat.partner
        if not partner.left:
            piece = request.data
            size = len(piece.encode("utf-8"))
            total = _joined_size(len(partner.inbox), partner.inbox_bytes, 1, size)
            if total > self._config.max_queue:
                # A partner that lets this much pile up is not reading: it
                # counts as timed out, and gets what is queued no more.
                self._log.debug("player {name} lags too far", name=partner.name)
                self.leave(partner)
            else:
                held = held_size(piece)
                # The update frees this side's cache (quitting, all it holds).
                freed = seat.cache_held + (seat.inbox_held if request.quit else 0)
                if self.held + held - freed > self._config.max_data:
                    # Nothing changed: the same request may come again.  Not
                    # even the deadline, so that games stuck holding data
                    # time out and free it.
                    return Errors.BUSY
                partner.inbox.append(piece)
                partner.inbox_bytes = total
                partner.inbox_held += held
                self.held += held
        if partner.left and not seat.inbox:
            self.leave(seat)
            return Errors.PARTNER_LEFT
        pieces = seat.inbox
        self.held -= seat.cache_held
        seat.cache, seat.cache_bytes = pieces, seat.inbox_bytes
        seat.cache_held = seat.inbox_held
        seat.inbox, seat.inbox_bytes, seat.inbox_held = [], 0, 0
        seat.counter = request.counter
        if request.quit:
            self.leave(seat)
        else:
            self.touch(seat)
        if pieces:
            return Reply.success(Code.GAME_DATA, SEPARATOR.join(pieces))
        return Reply.success(Code.NO_DATA)

    def _resend(self, seat: _Seat) -> Reply:
        size = _joined_size(
            len(seat.cache), seat.cache_bytes, len(seat.inbox), seat.inbox_bytes
        )
        if size > self._config.max_cache:
            # The new data stays queued for the next counter.
            last = SEPARATOR.join(seat.cache) if seat.cache else NOTHING
            return Errors.cache_full(last)
        # Pieces only move from queue to cache: the table's total stays.
        seat.cache.extend(seat.inbox)
        seat.cache_bytes = size
        seat.cache_held += seat.inbox_held
        seat.inbox, seat.inbox_bytes, seat.inbox_held = [], 0, 0
        if not seat.cache:
            # The lost reply was "no data", and there is still none.
            return Reply.success(Code.NO_DATA)
        return Reply.success(Code.RESEND, SEPARATOR.join(seat.cache))

    def leave(self, seat: _Seat) -> None:
        """
        Take a side out of its game; its partner still gets what is queued
        for it, then C{15/*/*}.  The game ends when both sides have left.
        """
        if seat.left:
            return
        seat.left = True
        del self._seats[seat.key]
        if seat.deadline is not None:
            self._deadlines.withdraw()
            seat.deadline = None
        self.held -= seat.inbox_held + seat.cache_held
        seat.inbox, seat.inbox_bytes, seat.inbox_held = [], 0, 0
        seat.cache, seat.cache_bytes, seat.cache_held = [], 0, 0
        if seat.partner.left:
            self.count -= 1
            self._log.debug(
                "game of {a} and {b} ended", a=seat.name, b=seat.partner.name
            )
            for side in (seat, seat.partner):
                if side.player is not None:
                    self._retire(side.player)

    def touch(self, seat: _Seat) -> None:
        if seat.deadline is not None:
            self._deadlines.withdraw()
        seat.deadline = self._deadlines.push(seat)

    def _expire(self, seat: _Seat, deadline: float) -> bool:
        if not self._is_live(seat, deadline):
            return False
        seat.deadline = None
        self._log.debug("player {name} timed out in a game", name=seat.name)
        self.leave(seat)
        return True

    @staticmethod
    def _is_live(seat: _Seat, deadline: float) -> bool:
        return seat.deadline == deadline


def _start_reply(seat: _Seat) -> Reply:
    return Reply.success(Code.START_PLAY, f"{seat.key}{SEPARATOR}{seat.index}")


def _new_pairing_key(taken: Container[int]) -> int:
    # 128 random bits never collide in practice; the loop makes sure.
    while True:
        key = int.from_bytes(random_key(), "big")
        if key not in taken:
            return key


# A pairing key is held as the int whose big-endian bytes are its ASCII text:
# 48 bytes where the text takes 80, and converted both ways in C.


def _pairing_key_text(key: int) -> str:
    return key.to_bytes(RANDOM_KEY_LENGTH, "big").decode("ascii")


def _pairing_key_number(text: str) -> int | None:
    # Fixed length, so that each number has exactly one spelling.
    if len(text) != RANDOM_KEY_LENGTH or not text.isascii():
        return None
    return int.from_bytes(text.encode("ascii"), "big")


def _new_key(taken: Container[str]) -> str:
    # 128 random bits never collide in practice; the loop makes sure.
    while True:
        key = random_key().decode("ascii")
        if key not in taken:
            return key
