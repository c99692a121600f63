"""
Tests for L{gameserver.expiry.DeadlineQueue}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from gameserver.expiry import DeadlineQueue


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
