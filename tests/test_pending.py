"""
Tests for L{gameserver.scores.Pending}, the one-consumer result the durable
store answers writes with.
"""

from typing import Any

from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import provider

from gameserver.scores import Pending


class Consumer:
    """
    Records what a Pending delivers.
    """

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.failures: list[Failure] = []

    def take(self, pending: "Pending[Any]") -> None:
        pending.then(self.values.append, self.failures.append)


class PendingTests(TestCase):
    """
    A Pending delivers its one result to its one consumer, whichever comes
    first.
    """

    def test_value_after_consumer(self) -> None:
        """A value given after the consumer came is delivered then."""
        pending: Pending[bytes] = Pending()
        consumer = Consumer()
        consumer.take(pending)
        self.assertEqual(consumer.values, [])
        pending.fire(b"key")
        self.assertEqual(consumer.values, [b"key"])
        self.assertEqual(consumer.failures, [])

    def test_value_before_consumer(self) -> None:
        """A value given first (even False or None) waits for the consumer."""
        for value in (b"key", False, None):
            pending: Pending[object] = Pending()
            pending.fire(value)
            consumer = Consumer()
            consumer.take(pending)
            self.assertEqual(consumer.values, [value])
            self.assertEqual(consumer.failures, [])

    def test_failure_after_consumer(self) -> None:
        """A failure given after the consumer came reaches its failure callback."""
        pending: Pending[bytes] = Pending()
        consumer = Consumer()
        consumer.take(pending)
        pending.fail(OSError("disk full"))
        self.assertEqual(consumer.values, [])
        [failure] = consumer.failures
        self.assertIsInstance(failure.value, OSError)

    def test_failure_before_consumer(self) -> None:
        """A failure given before the consumer came is delivered when it comes."""
        pending: Pending[bytes] = Pending()
        pending.fail(OSError("disk full"))
        consumer = Consumer()
        consumer.take(pending)
        [failure] = consumer.failures
        self.assertIsInstance(failure.value, OSError)

    def test_one_result(self) -> None:
        """A second result is refused, whether the first was a value or not."""
        fired: Pending[int] = Pending()
        fired.fire(1)
        self.assertRaises(RuntimeError, fired.fire, 2)
        self.assertRaises(RuntimeError, fired.fail, OSError())
        failed: Pending[int] = Pending()
        failed.fail(OSError())
        self.assertRaises(RuntimeError, failed.fire, 2)

    def test_one_consumer(self) -> None:
        """A second consumer is refused, before the result and after it."""
        waiting: Pending[int] = Pending()
        Consumer().take(waiting)
        self.assertRaises(RuntimeError, Consumer().take, waiting)
        waiting.fire(1)
        self.assertRaises(RuntimeError, Consumer().take, waiting)
        given: Pending[int] = Pending()
        given.fire(1)
        Consumer().take(given)
        self.assertRaises(RuntimeError, Consumer().take, given)

    def test_raising_consumer_is_logged(self) -> None:
        """A consumer that raises is logged; whoever gave the result goes on."""
        events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        def broken(value: object) -> None:
            raise ValueError("a bug in the consumer")

        for give in ("fire", "fail"):
            pending: Pending[int] = Pending()
            pending.then(broken, broken)
            if give == "fire":
                pending.fire(1)
            else:
                pending.fail(OSError())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual(
            [e["log_format"] for e in events if "log_failure" in e],
            ["a store's result was not handled"] * 2,
        )
