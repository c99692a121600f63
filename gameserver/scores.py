"""
The scores domain: logins, score posts and high-score lists.
"""

from collections.abc import Callable, Collection
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, Union

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from gameserver.leaderboard import Leaderboards
from gameserver.sessions import SessionStore, StoredSessions

T = TypeVar("T")
# A Pending's result before it has one (None may be a result).
_UNSET = object()

# A backend answers at once when it can (memory), or later: with a Pending
# (the durable store's commit) or a Deferred (a Redis round trip).  The web
# layer handles all three, so the in-memory path never pays for a Deferred
# and the durable one pays for the lighter Pending.
Outcome: TypeAlias = Union[T, "Pending[T]", "Deferred[T]"]

# Seconds a client should wait before trying again when a store that answers
# later (Redis, the durable store) failed: sent as Retry-After with its 503.
RETRY_AFTER = b"1"


class Pending(Generic[T]):
    """
    A result a store gives later, to exactly one consumer: the web layer
    calls L{then} once, and the store calls L{fire} or L{fail} once, in
    either order.

    What a L{Deferred} does for one callback pair, without its chain: the
    durable store answers every write through one, and creating, consuming
    and firing one takes about 0.4 microseconds against 1.8-2.2 for a
    Deferred (C{timeit}; C{bench/durable_request_cost.py} measures the
    store's whole cost per request).  A callback that raises is logged, as
    an unhandled error in a Deferred would be, so that one bad answer cannot
    stop the store's loop over a batch.
    """

    __slots__ = ("_done", "_failed", "_result")
    log = Logger()

    def __init__(self) -> None:
        self._done: Callable[[T], object] | None = None
        self._failed: Callable[[Failure], object] | None = None
        self._result: T | Failure | object = _UNSET

    def then(
        self, done: Callable[[T], object], failed: Callable[[Failure], object]
    ) -> None:
        """
        Call C{done} with the value, or C{failed} with a L{Failure}, once
        there is one (now, if there is one already).
        """
        if self._done is not None:
            raise RuntimeError("a Pending has one consumer")
        self._done = done
        self._failed = failed
        result = self._result
        if result is not _UNSET:
            self._deliver(failed if isinstance(result, Failure) else done, result)

    def fire(self, value: T) -> None:
        """
        Give the value.
        """
        if self._result is not _UNSET:
            raise RuntimeError("a Pending gets one result")
        self._result = value
        done = self._done
        if done is not None:
            self._deliver(done, value)

    def fail(self, error: BaseException) -> None:
        """
        Give a failure instead of a value.
        """
        if self._result is not _UNSET:
            raise RuntimeError("a Pending gets one result")
        failure = self._result = Failure(error)
        failed = self._failed
        if failed is not None:
            self._deliver(failed, failure)

    def _deliver(self, callback: Callable[[Any], object], result: object) -> None:
        try:
            callback(result)
        except Exception:
            self.log.failure("a store's result was not handled")


class StoreError(Exception):
    """
    A shared store (Redis) cannot answer now; it logs the outage itself, so
    the web layer answers 503 without a traceback per request.
    """


class ScoresBackend(Protocol):
    """
    What the web layer needs from a scores store, whatever keeps the state.
    """

    def login(self, user: int) -> Outcome[bytes]:
        """
        Return a new session key for C{user}.
        """

    def post_score(self, key: bytes, level: int, score: int) -> Outcome[bool]:
        """
        Record C{score} on C{level} for the user of C{key}; return L{False}
        (recording nothing) if the key is not live.
        """

    def high_score_list(self, level: int) -> Outcome[bytes]:
        """
        Return the high-score list body of C{level}.
        """

    def healthy(self) -> bool:
        """
        Whether the store can take writes now (for C{/healthz}).
        """

    def stop(self) -> "Deferred[None] | None":
        """
        Release timers and connections; the backend is not used any more.
        A store that must finish work first (commit what is in flight)
        returns a L{Deferred} that fires when it has.
        """


class CapacityError(Exception):
    """
    The store holds as many sessions or levels as it may: a new one is
    refused (the web layer answers C{503}); existing ones keep working.
    """


def log_store_failure(log: Logger, reason: Failure, **fields: Any) -> None:
    """
    Log why a store's L{Deferred} failed: an outage (L{StoreError}) at debug
    level, since the store logs it once rather than once per request;
    anything else as a failure, with its traceback.
    """
    if reason.check(StoreError):
        log.debug("store unavailable: {why}", why=reason.getErrorMessage(), **fields)
    else:
        log.failure("store failed", failure=reason, **fields)


class Capacity:
    """
    The bounds of a store's state: C{max_sessions} live stored sessions
    (signed ones cost no memory) and C{max_levels} levels holding scores; 0
    is no bound.  At a bound, a login of a user without a live key, or a
    score on a level without a list, is refused; everything else goes on.

    A store whose writes take effect later (the durable one) passes the
    users and levels its writes in flight will add, so that the bound holds
    once they land.
    """

    def __init__(self, max_sessions: int = 0, max_levels: int = 0) -> None:
        self.max_sessions = max_sessions
        self.max_levels = max_levels

    def refuses_login(
        self, sessions: SessionStore, user: int, coming: Collection[int] = ()
    ) -> "Deferred[Any] | None":
        """
        A failed L{Deferred} if a login of C{user} would pass the bound.
        """
        if (
            self.max_sessions
            and isinstance(sessions, StoredSessions)
            and len(sessions) + len(coming) >= self.max_sessions
            and not sessions.has_session(user)
            and user not in coming
        ):
            return fail(CapacityError(f"{self.max_sessions} live sessions"))
        return None

    def refuses_level(
        self, boards: Leaderboards, level: int, coming: Collection[int] = ()
    ) -> "Deferred[Any] | None":
        """
        A failed L{Deferred} if a score on C{level} would pass the bound.
        """
        if (
            self.max_levels
            and len(boards) + len(coming) >= self.max_levels
            and level not in boards
            and level not in coming
        ):
            return fail(CapacityError(f"{self.max_levels} levels"))
        return None


class MemoryScores:
    """
    Sessions and leaderboards held in this process, answering synchronously,
    within the bounds of a L{Capacity}.
    """

    def __init__(
        self,
        sessions: SessionStore,
        boards: Leaderboards,
        max_sessions: int = 0,
        max_levels: int = 0,
    ) -> None:
        self.sessions = sessions
        self.boards = boards
        self.capacity = Capacity(max_sessions, max_levels)

    def login(self, user: int) -> "bytes | Deferred[bytes]":
        refused = self.capacity.refuses_login(self.sessions, user)
        if refused is not None:
            return refused
        return self.sessions.issue(user)

    def post_score(self, key: bytes, level: int, score: int) -> "bool | Deferred[bool]":
        user = self.sessions.user_for(key)
        if user is None:
            return False
        refused = self.capacity.refuses_level(self.boards, level)
        if refused is not None:
            return refused
        self.boards.record(level, user, score)
        return True

    def high_score_list(self, level: int) -> bytes:
        return self.boards.body(level)

    def healthy(self) -> bool:
        return True

    def stop(self) -> None:
        self.sessions.stop()
