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

    def __init__(self) -> None:
        self._entries: list[tuple[int, int, int]] = []
        self._body: bytes | None = b""

    def record(self, user: int, score: int, order: int) -> bool:
        """
        Record C{score} for C{user}, reached at C{order}; return whether the
        list changed.
        """
        entries = self._entries
        if len(entries) >= LIST_LENGTH and -score >= entries[-1][0]:
            return False  # not above the last entry, which got there first
        for index, (negative, _, holder) in enumerate(entries):
            if holder == user:
                if -negative >= score:
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

    def record(self, level: int, user: int, score: int) -> bool:
        """
        Record C{user}'s C{score} on C{level}; return whether its list changed.
        """
        board = self._boards.get(level)
        if board is None:
            board = self._boards[level] = Board()
        return board.record(user, score, next(self._order))

    def body(self, level: int) -> bytes:
        """
        The high-score list body of C{level}, empty for a level with no scores.
        """
        board = self._boards.get(level)
        return b"" if board is None else board.body()
