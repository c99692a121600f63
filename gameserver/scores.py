"""
The scores domain: logins, score posts and high-score lists.
"""

from typing import Protocol, TypeAlias, TypeVar, Union

from twisted.internet.defer import Deferred, fail

from gameserver.leaderboard import Leaderboards
from gameserver.sessions import SessionStore, StoredSessions

T = TypeVar("T")

# A backend answers at once when it can (memory) or with a Deferred when it
# must wait (a durable store's commit, a Redis round trip).  The web layer
# handles both, so the in-memory path never pays for a Deferred.
Outcome: TypeAlias = Union[T, "Deferred[T]"]

# Seconds a client should wait before trying again when a store that answers
# later (Redis, the durable store) failed: sent as Retry-After with its 503.
RETRY_AFTER = b"1"


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


class MemoryScores:
    """
    Sessions and leaderboards held in this process, answering synchronously.

    C{max_sessions} bounds the live stored sessions (signed ones cost no
    memory) and C{max_levels} the levels holding scores; 0 is no bound.  At
    a bound, a login of a user without a live key, or a score on a level
    without a list, fails with L{CapacityError}; everything else goes on.
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
        self._stored = sessions if isinstance(sessions, StoredSessions) else None
        self.max_sessions = max_sessions
        self.max_levels = max_levels

    def login(self, user: int) -> "bytes | Deferred[bytes]":
        stored = self._stored
        if (
            self.max_sessions
            and stored is not None
            and len(stored) >= self.max_sessions
            and not stored.has_session(user)
        ):
            return fail(CapacityError(f"{self.max_sessions} live sessions"))
        return self.sessions.issue(user)

    def post_score(self, key: bytes, level: int, score: int) -> "bool | Deferred[bool]":
        user = self.sessions.user_for(key)
        if user is None:
            return False
        boards = self.boards
        if self.max_levels and len(boards) >= self.max_levels and level not in boards:
            return fail(CapacityError(f"{self.max_levels} levels"))
        boards.record(level, user, score)
        return True

    def high_score_list(self, level: int) -> bytes:
        return self.boards.body(level)

    def healthy(self) -> bool:
        return True

    def stop(self) -> None:
        self.sessions.stop()
