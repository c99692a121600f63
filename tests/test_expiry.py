"""
Tests for L{gameserver.expiry}: the deadline queues and their FIFO of doubles.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gameserver.expiry import CountedDeadlineQueue, DeadlineQueue, _Doubles


class Owner:
    """
    A queue owner that knows which items are live.
    """

    def __init__(self, clock: Clock, ttl: float = 10.0) -> None:
        self.live: dict[str, float] = {}
        self.expired: list[str] = []
        self.queue: DeadlineQueue[str] = DeadlineQueue(
            clock, ttl, self.expire, self.is_live
        )

    def add(self, item: str) -> None:
        if item in self.live:
            self.queue.withdraw()
        self.live[item] = self.queue.push(item)

    def drop(self, item: str) -> None:
        del self.live[item]
        self.queue.withdraw()

    def expire(self, item: str, deadline: float) -> bool:
        if self.live.get(item) != deadline:
            return False
        del self.live[item]
        self.expired.append(item)
        return True

    def is_live(self, item: str, deadline: float) -> bool:
        return self.live.get(item) == deadline


class DeadlineQueueTests(TestCase):
    """
    Items expire on the clock, in order, with one timer.
    """

    def test_expires_at_deadline(self) -> None:
        """An item is expired by the timer exactly at its deadline, not before."""
        clock = Clock()
        owner = Owner(clock)
        owner.add("a")
        clock.advance(9.9)
        self.assertEqual(owner.expired, [])
        clock.advance(0.1)
        self.assertEqual(owner.expired, ["a"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_timer(self) -> None:
        """Many items share a single pending timer."""
        clock = Clock()
        owner = Owner(clock)
        for i in range(100):
            owner.add(str(i))
            clock.advance(0.01)
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_expire_due_is_exact(self) -> None:
        """expire_due expires what is due even before the coalesced timer runs."""
        clock = Clock()
        owner = Owner(clock)
        owner.add("a")
        clock.advance(0.3)
        owner.add("b")
        clock.advance(9.7)
        self.assertEqual(owner.expired, ["a"])
        clock.advance(0.3)
        self.assertEqual(owner.expired, ["a"])  # timer coalesced to 1 s
        owner.queue.expire_due()
        self.assertEqual(owner.expired, ["a", "b"])

    def test_refreshed_item_lives_on(self) -> None:
        """An item pushed again keeps living until its new deadline."""
        clock = Clock()
        owner = Owner(clock)
        owner.add("a")
        clock.advance(5)
        owner.add("a")
        clock.advance(5)
        self.assertEqual(owner.expired, [])
        clock.advance(5)
        self.assertEqual(owner.expired, ["a"])

    def test_dropped_item_is_skipped(self) -> None:
        """An item dropped early is not expired later."""
        clock = Clock()
        owner = Owner(clock)
        owner.add("a")
        owner.drop("a")
        clock.advance(20)
        self.assertEqual(owner.expired, [])
        self.assertEqual(len(owner.queue), 0)

    def test_compaction_bounds_memory(self) -> None:
        """Refreshing one item many times keeps the queue near its live size."""
        clock = Clock()
        owner = Owner(clock, ttl=1000)
        for _ in range(10_000):
            owner.add("a")
            clock.advance(0.001)
        self.assertLessEqual(len(owner.queue), 1026)
        clock.advance(1000)
        self.assertEqual(owner.expired, ["a"])
        self.assertEqual(len(owner.queue), 0)

    def test_stop_cancels_timer(self) -> None:
        """stop cancels the pending timer."""
        clock = Clock()
        owner = Owner(clock)
        owner.add("a")
        owner.queue.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class DoublesTests(TestCase):
    """
    The FIFO of doubles keeps order across its chunks.
    """

    def test_fifo_across_chunks(self) -> None:
        """Values come out in the order they went in, across several chunks."""
        fifo = _Doubles()
        count = 3 * _Doubles._CHUNK + 5
        for i in range(count):
            fifo.append(i / 2)
        self.assertEqual(len(fifo), count)
        self.assertEqual(
            [fifo.popleft() for _ in range(_Doubles._CHUNK + 1)][-1], 512.0
        )
        self.assertEqual(fifo.first(), (_Doubles._CHUNK + 1) / 2)
        self.assertEqual(list(fifo), [i / 2 for i in range(_Doubles._CHUNK + 1, count)])
        while fifo:
            fifo.popleft()
        self.assertEqual(list(fifo), [])

    def test_interleaved(self) -> None:
        """Appends after the last chunk was emptied start afresh and stay in order."""
        fifo = _Doubles()
        fifo.append(1.0)
        self.assertEqual(fifo.popleft(), 1.0)
        fifo.append(2.0)
        fifo.append(3.0)
        self.assertEqual((fifo.popleft(), fifo.first(), len(fifo)), (2.0, 3.0, 1))
        fifo.clear()
        self.assertEqual((len(fifo), list(fifo)), (0, []))


class Counter:
    """
    An item of a counted queue.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue_entries = 0
        self.gone = False


class CountedOwner:
    """
    A counted queue's owner: items know their entry count, not their deadline.
    """

    def __init__(self, clock: Clock, ttl: float = 10.0) -> None:
        self.expired: list[str] = []
        self.queue: CountedDeadlineQueue[Counter] = CountedDeadlineQueue(
            clock, ttl, self.expire, lambda item, deadline: not item.gone
        )

    def touch(self, item: Counter) -> None:
        if item.queue_entries:
            self.queue.withdraw()
        self.queue.push(item)

    def drop(self, item: Counter) -> None:
        item.gone = True
        if item.queue_entries:
            self.queue.withdraw()

    def expire(self, item: Counter, deadline: float) -> bool:
        if item.gone:
            return False
        item.gone = True
        self.expired.append(item.name)
        return True


class CountedDeadlineQueueTests(TestCase):
    """
    Only an item's newest entry expires it.
    """

    def test_touch_extends(self) -> None:
        """An item touched again expires a ttl after its last touch, once."""
        clock = Clock()
        owner = CountedOwner(clock)
        a = Counter("a")
        owner.touch(a)
        clock.advance(5)
        owner.touch(a)
        clock.advance(9.9)
        owner.queue.expire_due()
        self.assertEqual((owner.expired, a.queue_entries), ([], 1))
        clock.advance(0.1)
        owner.queue.expire_due()
        self.assertEqual(
            (owner.expired, a.queue_entries, len(owner.queue)), (["a"], 0, 0)
        )

    def test_dropped_not_expired(self) -> None:
        """A dropped item is not expired, and its entries all leave the queue."""
        clock = Clock()
        owner = CountedOwner(clock)
        a = Counter("a")
        owner.touch(a)
        owner.touch(a)
        owner.drop(a)
        clock.advance(20)
        self.assertEqual(
            (owner.expired, len(owner.queue), owner.queue._stale), ([], 0, 0)
        )

    def test_compaction_keeps_newest_and_recounts(self) -> None:
        """Compaction keeps each live item's newest entry only, and its count is one."""
        clock = Clock()
        owner = CountedOwner(clock, ttl=1000)
        a, b = Counter("a"), Counter("b")
        owner.touch(b)
        for _ in range(3000):
            owner.touch(a)
            clock.advance(0.01)
        self.assertLessEqual(len(owner.queue), 1026)
        clock.advance(30)
        owner.touch(b)
        owner.queue._compact()
        self.assertEqual(
            (len(owner.queue), a.queue_entries, b.queue_entries), (2, 1, 1)
        )
        clock.advance(969.99)
        owner.queue.expire_due()
        self.assertEqual(owner.expired, ["a"])
        clock.advance(1000)
        self.assertEqual(owner.expired, ["a", "b"])
