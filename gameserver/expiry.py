"""
Deadlines for things that live a fixed time, kept without a timer each.
"""

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

T = TypeVar("T")


class DeadlineQueue(Generic[T]):
    """
    Items that fall due a fixed C{ttl} after they are pushed, in push order,
    under a single reactor timer.

    Every item gets the same lifetime, so push order is deadline order and a
    FIFO does the work of a heap: a push is O(1) and nothing is ever scanned.

    The owner keeps the truth about each item.  An entry becomes stale when the
    owner drops the item early or pushes it again with a later deadline; the
    owner says so with L{withdraw}, and stale entries are skipped when they
    fall due.  When stale entries outnumber live ones the queue compacts
    itself, so its memory stays proportional to what is live.

    Callers that need exact expiry call L{expire_due} before they look an item
    up; the timer only reclaims memory while nobody asks, so it may run up to
    C{resolution} seconds late and is coalesced to at most one call per
    C{resolution}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        ttl: float,
        expire: Callable[[T, float], bool],
        is_live: Callable[[T, float], bool],
        resolution: float = 1.0,
    ) -> None:
        """
        @param expire: called with an item and the deadline of its entry when
            that entry falls due; returns whether the entry was live (and is
            now expired) rather than stale.
        @param is_live: whether an entry is still the current one for its
            item; used only when compacting.
        """
        self._clock = clock
        self.ttl = ttl
        self._expire = expire
        self._is_live = is_live
        self._resolution = resolution
        # Two parallel deques: a float per entry is far smaller than a tuple.
        self._items: deque[T] = deque()
        self._deadlines: deque[float] = deque()
        self._stale = 0
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """
        The number of entries held, stale ones included.
        """
        return len(self._items)

    def push(self, item: T, deadline: float | None = None) -> float:
        """
        Add C{item} with a deadline C{ttl} from now, and return that deadline.

        An explicit C{deadline} (a session restored from disk keeps its
        remaining lifetime) must not be earlier than any pushed before it,
        so that the FIFO stays in deadline order.
        """
        if deadline is None:
            deadline = self._clock.seconds() + self.ttl
        self._items.append(item)
        self._deadlines.append(deadline)
        if self._timer is None:
            delay = max(deadline - self._clock.seconds(), 0.0)
            self._timer = self._clock.callLater(delay, self._fire)
        return deadline

    def withdraw(self) -> None:
        """
        Note that one entry pushed earlier is now stale.
        """
        self._stale += 1
        if self._stale > len(self._items) - self._stale + 1024:
            self._compact()

    def expire_due(self) -> None:
        """
        Expire every entry whose deadline has come.
        """
        deadlines = self._deadlines
        if not deadlines or deadlines[0] > self._clock.seconds():
            return
        now = self._clock.seconds()
        items = self._items
        while deadlines and deadlines[0] <= now:
            if not self._expire(items.popleft(), deadlines.popleft()) and self._stale:
                self._stale -= 1

    def stop(self) -> None:
        """
        Cancel the timer; the queue is not used any more.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self.expire_due()
        if self._deadlines:
            delay = self._deadlines[0] - self._clock.seconds()
            self._timer = self._clock.callLater(
                max(delay, self._resolution), self._fire
            )

    def _compact(self) -> None:
        # In place: expire_due may be iterating these very deques when an
        # expiry callback withdraws another entry.
        live = [
            (item, deadline)
            for item, deadline in zip(self._items, self._deadlines, strict=True)
            if self._is_live(item, deadline)
        ]
        self._items.clear()
        self._deadlines.clear()
        for item, deadline in live:
            self._items.append(item)
            self._deadlines.append(deadline)
        self._stale = 0
