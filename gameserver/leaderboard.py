"""
High-score lists: the best score of each user on each level, top entries only.
"""

from bisect import insort
from itertools import count

LIST_LENGTH = 15


class Board:
    """
    The top L{LIST_LENGTH} of one level, and its rendered list body.

    Entries are C{(-score, order, user)}, so sorting puts the highest score
    first and, among equal scores, whoever reached it first.  Only the top
    entries are kept: a user's best score only grows and nobody is ever
    removed, so an entry that has fallen off the list can never come back
    without its user posting a higher score.  The body is rendered on the
    first read after a change and served from cache until the next change.
    """

    __slots__ = ("_body", "_entries")

    def __init__(self, entries: list[tuple[int, int, int]] | None = None) -> None:
        """
        @param entries: C{(-score, order, user)} of distinct users, sorted, at
            most L{LIST_LENGTH}: a list loaded from disk.
        """
        self._entries: list[tuple[int, int, int]] = entries or []
        self._body: bytes | None = None if entries else b""

    def would_change(self, user: int, score: int) -> bool:
        """
        Whether recording C{score} for C{user} would change the list.
        """
        entries = self._entries
        if len(entries) >= LIST_LENGTH and -score >= entries[-1][0]:
            return False  # not above the last entry, which got there first
        for negative, _, holder in entries:
            if holder == user:
                return score > -negative
        return True

    def record(self, user: int, score: int, order: int) -> bool:
        """
        Record C{score} for C{user}, reached at C{order}; return whether the
        list changed.
        """
        # would_change and the removal of the user's old entry in one pass.
        entries = self._entries
        if len(entries) >= LIST_LENGTH and -score >= entries[-1][0]:
            return False
        for index, (negative, _, holder) in enumerate(entries):
            if holder == user:
                if score <= -negative:
                    return False
                del entries[index]
                break
        insort(entries, (-score, order, user))
        del entries[LIST_LENGTH:]
        self._body = None
        return True

    def body(self) -> bytes:
        """
        The list as the wire contract writes it: C{user=score} joined by commas.
        """
        body = self._body
        if body is None:
            body = self._body = b",".join(
                b"%d=%d" % (user, -negative) for negative, _, user in self._entries
            )
        return body

    def entries(self) -> list[tuple[int, int]]:
        """
        The C{(user, score)} pairs, best first.
        """
        return [(user, -negative) for negative, _, user in self._entries]


class Leaderboards:
    """
    Every level's L{Board}; a level exists once somebody posts a score to it.
    """

    def __init__(self) -> None:
        self._boards: dict[int, Board] = {}
        # One order across all levels: cheaper than a clock and never ties.
        self._order = count()

    def __len__(self) -> int:
        """
        The number of levels with at least one score.
        """
        return len(self._boards)

    def __contains__(self, level: int) -> bool:
        """
        Whether C{level} has a list (somebody posted a score to it).
        """
        return level in self._boards

    def record(
        self, level: int, user: int, score: int, order: int | None = None
    ) -> bool:
        """
        Record C{user}'s C{score} on C{level}; return whether its list changed.

        @param order: where the score falls among equal ones; by default after
            every score recorded so far.  A durable store passes the sequence
            it stored, so ties come out the same after a restart.
        """
        board = self._boards.get(level)
        if board is None:
            board = self._boards[level] = Board()
        return board.record(user, score, next(self._order) if order is None else order)

    def would_change(self, level: int, user: int, score: int) -> bool:
        """
        Whether recording C{user}'s C{score} on C{level} would change its list.
        """
        board = self._boards.get(level)
        return board is None or board.would_change(user, score)

    def load(self, level: int, entries: list[tuple[int, int, int]]) -> None:
        """
        Set C{level}'s list to C{entries} (see L{Board}): for start-up.
        """
        self._boards[level] = Board(entries)

    def body(self, level: int) -> bytes:
        """
        The high-score list body of C{level}, empty for a level with no scores.
        """
        board = self._boards.get(level)
        return b"" if board is None else board.body()
