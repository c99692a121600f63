"""
Deadlines for things that live a fixed time, kept without a timer each.
"""

import math
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

T = TypeVar("T")


class _Doubles:
    """
    A FIFO of floats kept as C doubles in fixed-size chunks: 8 bytes an entry,
    where a deque of floats costs 40 (a pointer and a float object).
    """

    __slots__ = ("_chunks", "_head", "_length")

    _CHUNK = 1024

    def __init__(self) -> None:
        self._chunks: deque[array[float]] = deque()
        self._head = 0  # index of the first entry in the first chunk
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[float]:
        chunks = iter(self._chunks)
        first = next(chunks, None)
        if first is not None:
            yield from first[self._head :]
            for chunk in chunks:
                yield from chunk

    def first(self) -> float:
        return self._chunks[0][self._head]

    def append(self, value: float) -> None:
        chunks = self._chunks
        if not chunks or len(chunks[-1]) == self._CHUNK:
            chunks.append(array("d"))
        chunks[-1].append(value)
        self._length += 1

    def popleft(self) -> float:
        chunk = self._chunks[0]
        value = chunk[self._head]
        self._head += 1
        self._length -= 1
        if self._head == len(chunk):
            # Dropped even if not full: the next append starts a new chunk.
            self._chunks.popleft()
            self._head = 0
        return value

    def clear(self) -> None:
        self._chunks.clear()
        self._head = 0
        self._length = 0


class DeadlineQueue(Generic[T]):
    """
    Items that fall due a fixed C{ttl} after they are pushed, in push order,
    under a single reactor timer.

    Every item gets the same lifetime, so push order is deadline order and a
    FIFO does the work of a heap: a push is O(1) and nothing is ever scanned.
    An entry costs 16 bytes: a pointer to its item and its deadline as a C
    double.

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
        # Parallel FIFOs: no tuple, and no float object, per entry.
        self._items: deque[T] = deque()
        self._deadlines = _Doubles()
        # The first entry's deadline (infinity when empty): the common "nothing
        # is due" answer of expire_due costs one comparison.
        self._first = math.inf
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
        if not self._items:
            self._first = deadline
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
        now = self._clock.seconds()
        if self._first > now:
            return
        deadlines = self._deadlines
        items = self._items
        while deadlines and deadlines.first() <= now:
            if not self._pop_due(items.popleft(), deadlines.popleft()) and self._stale:
                self._stale -= 1
        self._first = deadlines.first() if deadlines else math.inf

    def stop(self) -> None:
        """
        Cancel the timer; the queue is not used any more.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pop_due(self, item: T, deadline: float) -> bool:
        return self._expire(item, deadline)

    def _fire(self) -> None:
        self._timer = None
        self.expire_due()
        if self._deadlines:
            delay = self._deadlines.first() - self._clock.seconds()
            self._timer = self._clock.callLater(
                max(delay, self._resolution), self._fire
            )

    def _live_entries(self) -> list[tuple[T, float]]:
        return [
            (item, deadline)
            for item, deadline in zip(self._items, self._deadlines, strict=True)
            if self._is_live(item, deadline)
        ]

    def _compact(self) -> None:
        # In place: expire_due may be iterating these very FIFOs when an
        # expiry callback withdraws another entry.
        live = self._live_entries()
        self._items.clear()
        self._deadlines.clear()
        for item, deadline in live:
            self._items.append(item)
            self._deadlines.append(deadline)
        self._first = live[0][1] if live else math.inf
        self._stale = 0


class Counted(Protocol):
    """
    An item of a L{CountedDeadlineQueue}: it carries the number of its
    entries in the queue.
    """

    queue_entries: int


C = TypeVar("C", bound=Counted)


class CountedDeadlineQueue(DeadlineQueue[C]):
    """
    A L{DeadlineQueue} whose items need not remember their deadline.

    Each item counts its own entries (C{queue_entries}, a small int that
    costs nothing, where a remembered deadline costs a 32-byte float).  Only
    an item's newest entry can be live, and its older entries come first, so
    an entry that falls due while its item has a newer one is stale.  C{expire}
    is called for an item's last entry only, and says whether the item was
    still live; C{is_live(item, deadline)} says whether the item is live at
    all.
    """

    def push(self, item: C, deadline: float | None = None) -> float:
        item.queue_entries += 1
        return super().push(item, deadline)

    def _pop_due(self, item: C, deadline: float) -> bool:
        item.queue_entries -= 1
        if item.queue_entries:
            return False
        return self._expire(item, deadline)

    def _live_entries(self) -> list[tuple[C, float]]:
        # Keep each live item's newest entry only, and recount.
        entries = list(zip(self._items, self._deadlines, strict=True))
        for item, _ in entries:
            item.queue_entries = 0
        live: list[tuple[C, float]] = []
        for item, deadline in reversed(entries):
            if not item.queue_entries and self._is_live(item, deadline):
                item.queue_entries = 1
                live.append((item, deadline))
        live.reverse()
        return live
