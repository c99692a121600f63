"""
The stress client's simulated players: state machines that say what to send
next and react to each reply.  They know nothing of sockets or time.
"""

from enum import Enum, IntEnum
from random import Random
from typing import Protocol

from gameserver.stress_http import Target


class Kind(IntEnum):
    """
    The request kinds the report breaks figures down by.
    """

    LOGIN = 0
    SCORE = 1
    LIST = 2
    RELAY_REGISTER = 3
    RELAY_PAIR = 4
    RELAY_INIT = 5
    RELAY_READY = 6
    RELAY_UPDATE = 7
    RELAY_QUIT = 8

    @property
    def label(self) -> str:
        """The report's name for this kind: C{relay-update}, C{login}..."""
        return self.name.lower().replace("_", "-")

    @property
    def relay(self) -> bool:
        """Whether this is a relay request."""
        return self >= Kind.RELAY_REGISTER


class Verdict(Enum):
    """
    What a reply means for the report.
    """

    OK = "ok"
    ERROR = "error"
    # 15/*/* after the partner's quit: how a relay game normally ends for the
    # side that did not quit first, so no error.
    GAME_OVER = "game over"


class Player(Protocol):
    """
    A simulated player: one request at a time.
    """

    due: float

    def next_request(self) -> tuple[Kind, bytes]:
        """The kind and bytes of the next request."""

    def handle(self, status: int, body: bytes) -> Verdict:
        """React to the reply to the last request."""

    def failed(self) -> None:
        """The last request got no reply (timeout, connection lost)."""


class Mix:
    """
    The scores mix: the share of logins, score posts and list reads.
    """

    def __init__(self, login: float = 10, score: float = 50, read: float = 40):
        total = login + score + read
        if min(login, score, read) < 0 or total <= 0:
            raise ValueError("mix shares must be non-negative, not all zero")
        self.login = login / total
        self.score = (login + score) / total
        self.shares = (login, score, read)


class ScoresPlayer:
    """
    A scores player: logs in, posts scores and reads lists, in the given mix
    over levels C{0} to C{levels - 1}.

    It posts only with a key: a post drawn before the first login is a login.
    A C{401} forgets the key (it expired or was revoked), so the player logs
    in again.
    """

    __slots__ = ("_kind", "_levels", "_mix", "_rng", "_target", "due", "key", "user")

    def __init__(
        self, user: int, target: Target, rng: Random, levels: int, mix: Mix
    ) -> None:
        self.user = user
        self.key: bytes | None = None
        self.due = 0.0
        self._target = target
        self._rng = rng
        self._levels = levels
        self._mix = mix
        self._kind = Kind.LOGIN

    def next_request(self) -> tuple[Kind, bytes]:
        draw = self._rng.random()
        mix = self._mix
        if draw < mix.login or (draw < mix.score and self.key is None):
            self._kind = Kind.LOGIN
            return Kind.LOGIN, self._target.get(b"/%d/login" % self.user)
        # random() is several times cheaper than randrange().
        random = self._rng.random
        level = int(random() * self._levels)
        if draw < mix.score:
            assert self.key is not None
            self._kind = Kind.SCORE
            path = b"/%d/score?sessionkey=%s" % (level, self.key)
            score = b"%d" % int(random() * 1_000_000)
            return Kind.SCORE, self._target.post(path, score)
        self._kind = Kind.LIST
        return Kind.LIST, self._target.get(b"/%d/highscorelist" % level)

    def handle(self, status: int, body: bytes) -> Verdict:
        if status == 200:
            if self._kind is Kind.LOGIN:
                self.key = body
            return Verdict.OK
        if status == 401:
            self.key = None
        return Verdict.ERROR

    def failed(self) -> None:
        pass


class RelayState(Enum):
    """
    Where a relay player is in its cycle.
    """

    REGISTER = "register"
    PAIR = "pair"
    INIT = "init"
    READY = "ready"
    PLAY = "play"


class RelayGames:
    """
    Relay counts shared by all relay players, for the report.
    """

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.partner_quit = 0


# The data of GAME_QUIT, recognised by the partner; updates send u<counter>.
QUIT_DATA = b"quit"


class RelayPlayer:
    """
    A relay player, as the seed's stress client plays: register, ask to be
    paired (with anyone), initialise, get ready, send C{updates} game
    updates, quit, and register again.

    The counter starts at 0 and goes up by one for each update reply
    (C{0/9/}, C{0/10/}, C{0/11/}).  Any error means registering again, except
    C{9/2/*}, after which the spec says to ask for a partner again (the player
    is still in the pool; registering anew would leave it there as a ghost
    that stalls whoever is paired with it).  Seeing its partner's quit data,
    the player quits too; the C{15/*/*} that answers is the normal end of a
    game, not an error.
    """

    __slots__ = (
        "_games",
        "_target",
        "counter",
        "due",
        "game",
        "key",
        "name",
        "partner_quit",
        "quitting",
        "seat",
        "state",
        "updates",
    )

    def __init__(
        self, name: str, target: Target, updates: int, games: RelayGames
    ) -> None:
        self.name = name.encode("utf-8")
        self.updates = updates
        self.due = 0.0
        self._target = target
        self._games = games
        self._restart()

    def _restart(self) -> None:
        self.state = RelayState.REGISTER
        self.key = b""
        self.game = b""
        self.seat = b""
        self.counter = 0
        self.partner_quit = False
        self.quitting = False

    def _post(self, body: bytes) -> bytes:
        return self._target.post(b"/relay", body)

    def next_request(self) -> tuple[Kind, bytes]:
        state = self.state
        if state is RelayState.PLAY:
            if self.counter >= self.updates or self.partner_quit:
                self.quitting = True
                return Kind.RELAY_QUIT, self._post(
                    b"5,%s,%s,%s,%d" % (QUIT_DATA, self.game, self.seat, self.counter)
                )
            return Kind.RELAY_UPDATE, self._post(
                b"6,u%d,%s,%s,%d" % (self.counter, self.game, self.seat, self.counter)
            )
        if state is RelayState.REGISTER:
            return Kind.RELAY_REGISTER, self._post(b"0,%s,*,*,*" % self.name)
        if state is RelayState.PAIR:
            return Kind.RELAY_PAIR, self._post(b"2,*,%s,*,*" % self.key)
        if state is RelayState.INIT:
            return Kind.RELAY_INIT, self._post(b"3,*,%s,*,*" % self.key)
        return Kind.RELAY_READY, self._post(b"4,*,%s,*,*" % self.key)

    def handle(self, status: int, body: bytes) -> Verdict:
        if status != 200:
            return self._error(body)
        state = self.state
        if state is RelayState.PLAY:
            if body.startswith((b"0/9/", b"0/11/")):
                if QUIT_DATA in body[body.index(b"/", 2) + 1 :].split(b"|"):
                    self.partner_quit = True
            elif not body.startswith(b"0/10/"):
                return self._unexpected()
            if self.quitting:
                self._games.finished += 1
                self._restart()
            else:
                self.counter += 1
            return Verdict.OK
        if state is RelayState.REGISTER:
            if not body.startswith(b"0/0/"):
                return self._unexpected()
            self.key = body[4:]
            self.state = RelayState.PAIR
        elif state is RelayState.PAIR:
            if body.startswith((b"0/3/", b"0/4/")):
                self.state = RelayState.INIT
            elif not body.startswith(b"0/2/"):
                return self._unexpected()
        elif state is RelayState.INIT:
            if not body.startswith((b"0/5/", b"0/6/")):
                return self._unexpected()
            self.state = RelayState.READY
        elif body.startswith(b"0/8/"):
            game, bar, seat = body[4:].rpartition(b"|")
            if not bar:
                return self._unexpected()
            self.game, self.seat = game, seat
            self.counter = 0
            self.state = RelayState.PLAY
            self._games.started += 1
        elif not body.startswith(b"0/7/"):
            return self._unexpected()
        return Verdict.OK

    def _error(self, body: bytes) -> Verdict:
        playing = self.state is RelayState.PLAY
        if playing and self.partner_quit and body.startswith(b"15/"):
            self._games.finished += 1
            self._games.partner_quit += 1
            self._restart()
            return Verdict.GAME_OVER
        if body.startswith(b"9/2/") and self.state in (
            RelayState.PAIR,
            RelayState.INIT,
            RelayState.READY,
        ):
            self.state = RelayState.PAIR
            return Verdict.ERROR
        self._restart()
        return Verdict.ERROR

    def _unexpected(self) -> Verdict:
        self._restart()
        return Verdict.ERROR

    def failed(self) -> None:
        self._restart()
