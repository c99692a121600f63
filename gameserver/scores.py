"""
The scores domain: logins, score posts and high-score lists.
"""

from typing import Protocol, TypeAlias, TypeVar, Union

from twisted.internet.defer import Deferred

from gameserver.leaderboard import Leaderboards
from gameserver.sessions import SessionStore

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


class MemoryScores:
    """
    Sessions and leaderboards held in this process, answering synchronously.
    """

    def __init__(self, sessions: SessionStore, boards: Leaderboards) -> None:
        self.sessions = sessions
        self.boards = boards

    def login(self, user: int) -> bytes:
        return self.sessions.issue(user)

    def post_score(self, key: bytes, level: int, score: int) -> bool:
        user = self.sessions.user_for(key)
        if user is None:
            return False
        self.boards.record(level, user, score)
        return True

    def high_score_list(self, level: int) -> bytes:
        return self.boards.body(level)

    def healthy(self) -> bool:
        return True

    def stop(self) -> None:
        self.sessions.stop()
