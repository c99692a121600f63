"""
Tests for L{gameserver.durable}: the SQLite store behind C{--database}.

The writer process runs for real, under the real reactor (trial runs it);
tests hold it still with SIGSTOP to choose what goes into one batch.
Session lifetimes run on a L{Clock}.
"""

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import provider

from gameserver import durable, durable_writer
from gameserver.durable import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Database,
    DatabaseError,
    DurableScores,
    SessionsMode,
    WriterError,
    open_database,
)
from gameserver.scores import Capacity, CapacityError, Pending
from gameserver.sessions import StoredSessions

T = TypeVar("T")
SECRET = b"a secret of more than sixteen bytes"
START = 1_000_000.0


def deferred(outcome: T | Pending[T] | Deferred[T]) -> Deferred[T]:
    """
    The outcome, which must come later (a Pending or a Deferred), as a
    Deferred.
    """
    if isinstance(outcome, Pending):
        later: Deferred[T] = Deferred()
        outcome.then(later.callback, later.errback)
        return later
    assert isinstance(outcome, Deferred)
    return outcome


class StoreTestCase(TestCase):
    """
    Opens stores on a database file in the test's temporary directory.
    """

    timeout = 30

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.clock = Clock()
        self.clock.advance(START)

    def open(
        self,
        mode: SessionsMode = "stored",
        ttl: float = 600.0,
        capacity: Capacity | None = None,
    ) -> DurableScores:
        store = DurableScores.load(
            open_database(self.path), self.clock, mode, ttl, SECRET, reactor, capacity
        )
        self.addCleanup(store.stop)
        return store

    async def login(self, store: DurableScores, user: int) -> bytes:
        outcome = store.login(user)
        return outcome if isinstance(outcome, bytes) else await deferred(outcome)

    async def post(
        self, store: DurableScores, key: bytes, level: int, score: int
    ) -> bool:
        outcome = store.post_score(key, level, score)
        return outcome if isinstance(outcome, bool) else await deferred(outcome)

    def rows(self, query: str) -> list[Any]:
        """
        C{query}'s rows once the journal is folded into the tables, as the
        next start would see them.
        """
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            durable_writer.fold(connection)
            return connection.execute(query).fetchall()
        finally:
            connection.close()

    def raw(self, query: str) -> list[Any]:
        """
        C{query}'s rows as the file holds them, journal unfolded.
        """
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(query).fetchall()
        finally:
            connection.close()

    def execute(self, *statements: str) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            for statement in statements:
                connection.execute(statement)
        finally:
            connection.close()

    def pause(self, store: DurableScores) -> int:
        """
        Stop the (running) writer process with SIGSTOP, once it waits for
        its next batch: everything written until L{resume} is one batch.
        """
        pid = store.writer.pid
        assert pid is not None, "no writer process yet"
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(self.resume, pid)
        deadline = time.monotonic() + 10
        while state(pid) != "T":
            assert time.monotonic() < deadline, "the writer did not stop"
            time.sleep(0.001)
        return pid

    def resume(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def count_flushes(self, store: DurableScores) -> list[int]:
        """
        From now on, the number of lines each flush of C{store}'s writer
        hands over, in order.
        """
        flushes: list[int] = []
        flush = store.writer.flush

        def counted() -> None:
            flushes.append(len(store.writer._lines))
            flush()

        self.patch(store.writer, "flush", counted)
        return flushes

    async def turn(self) -> None:
        """
        Let the reactor run a little: a flush at the end of a turn goes out.
        """
        await deferLater(reactor, 0.02, lambda: None)


def state(pid: int) -> str:
    """
    The state letter of process C{pid}: R, S, T (stopped), Z (zombie), or
    X for a process that is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return "X"


async def exited(pid: int, timeout: float = 10.0) -> bool:
    """
    Whether process C{pid} ends (or is a zombie) within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(pid) in ("X", "Z"):
            return True
        await deferLater(reactor, 0.01, lambda: None)
    return False


class WriteTests(StoreTestCase):
    """
    Logins and score posts are committed before they are answered.
    """

    async def test_login_is_on_disk_when_answered(self) -> None:
        """A stored-mode login answers with a key only once its row is on disk."""
        store = self.open()
        outcome = store.login(7)
        self.assertIsInstance(outcome, Pending)
        key = await self.login(store, 7)
        self.assertEqual(
            self.rows("SELECT user, key, deadline FROM sessions"),
            [(7, key, START + 600)],
        )
        self.assertIs(await self.post(store, key, 1, 100), True)

    async def test_score_is_on_disk_when_answered(self) -> None:
        """A score post that changes a list answers after its row is on disk."""
        store = self.open()
        key = await self.login(store, 7)
        self.assertIs(await self.post(store, key, 3, 1500), True)
        self.assertEqual(
            self.rows("SELECT level, user, score FROM scores"), [(3, 7, 1500)]
        )
        self.assertEqual(store.high_score_list(3), b"7=1500")

    async def test_unknown_key_refused_without_write(self) -> None:
        """A post with an unknown key is refused at once and writes nothing."""
        store = self.open()
        self.assertIs(store.post_score(b"nosuchkey", 1, 5), False)
        self.assertEqual(store.writer.commits, 0)

    async def test_post_that_changes_nothing_answers_at_once(self) -> None:
        """A score not above the user's entry, or a full list's last, skips the disk."""
        store = self.open()
        keys = [await self.login(store, user) for user in range(16)]
        for user, key in enumerate(keys[:15]):
            await self.post(store, key, 1, 100 + user)
        commits = store.writer.commits
        self.assertIs(store.post_score(keys[3], 1, 50), True)
        self.assertIs(store.post_score(keys[3], 1, 103), True)
        self.assertIs(store.post_score(keys[15], 1, 100), True)
        self.assertEqual(store.writer.commits, commits)
        self.assertNotIn(b"15=", store.high_score_list(1))

    async def test_not_visible_before_commit(self) -> None:
        """A post shows in its list once acknowledged, not before its commit."""
        store = self.open()
        key = await self.login(store, 7)
        pid = self.pause(store)
        outcome = store.post_score(key, 2, 900)
        await self.turn()
        self.assertEqual(store.high_score_list(2), b"")
        self.resume(pid)
        self.assertIs(await deferred(outcome), True)
        self.assertEqual(store.high_score_list(2), b"7=900")

    async def test_new_key_live_only_after_commit(self) -> None:
        """A new login revokes the old key only when the new one is committed."""
        store = self.open()
        old = await self.login(store, 7)
        pid = self.pause(store)
        outcome = store.login(7)
        await self.turn()
        self.assertEqual(store.sessions.user_for(old), 7)
        self.resume(pid)
        new = await deferred(outcome)
        self.assertIsNone(store.sessions.user_for(old))
        self.assertEqual(store.sessions.user_for(new), 7)

    async def test_start_prunes_what_fell_off(self) -> None:
        """Rows that fell off a top list are deleted at the next start."""
        store = self.open()
        for user in range(20):
            key = await self.login(store, user)
            await self.post(store, key, 4, 1000 + user)
        await store.stop()
        reloaded = self.open()
        self.assertEqual(
            self.rows("SELECT user FROM scores WHERE level = 4 ORDER BY score DESC"),
            [(user,) for user in range(19, 4, -1)],
        )
        self.assertEqual(
            reloaded.high_score_list(4),
            b",".join(b"%d=%d" % (u, 1000 + u) for u in range(19, 4, -1)),
        )


class CapacityTests(StoreTestCase):
    """
    --max-sessions and --max-levels hold for the durable store, counting the
    writes still in flight.
    """

    async def test_session_cap(self) -> None:
        """At the cap a new user's login fails; a user with a key logs in again."""
        store = self.open(capacity=Capacity(max_sessions=2))
        await self.login(store, 1)
        await self.login(store, 2)
        refused = deferred(store.login(3))
        self.assertIsInstance(self.failureResultOf(refused).value, CapacityError)
        self.assertTrue(await self.login(store, 1))
        self.assertEqual(len(self.rows("SELECT * FROM sessions")), 2)

    async def test_session_cap_counts_writes_in_flight(self) -> None:
        """Logins still being committed count toward the cap."""
        store = self.open(capacity=Capacity(max_sessions=3))
        await self.login(store, 1)
        pid = self.pause(store)
        coming = [deferred(store.login(user)) for user in (2, 3, 2)]
        refused = deferred(store.login(4))
        self.assertIsInstance(self.failureResultOf(refused).value, CapacityError)
        self.resume(pid)
        for outcome in coming:
            await outcome
        self.assertEqual(store._users_coming, {})
        assert isinstance(store.sessions, StoredSessions)
        self.assertEqual(len(store.sessions), 3)

    async def test_level_cap_counts_writes_in_flight(self) -> None:
        """Scores on new levels still being committed count toward the level cap."""
        store = self.open(capacity=Capacity(max_levels=2))
        key = await self.login(store, 1)
        self.assertIs(await self.post(store, key, 10, 5), True)
        pid = self.pause(store)
        coming = deferred(store.post_score(key, 11, 5))
        refused = deferred(store.post_score(key, 12, 5))
        self.assertIsInstance(self.failureResultOf(refused).value, CapacityError)
        again = deferred(store.post_score(key, 11, 6))
        self.resume(pid)
        self.assertIs(await coming, True)
        self.assertIs(await again, True)
        self.assertEqual(store._levels_coming, {})
        self.assertEqual(len(store.boards), 2)
        self.assertIs(await self.post(store, key, 10, 9), True)


class BatchingTests(StoreTestCase):
    """
    The writes of one reactor turn go out in one pipe write, those made
    while a batch is in flight wait for its acknowledgement, and the writer
    process commits everything waiting for it as one batch.
    """

    async def test_one_pipe_write_per_turn(self) -> None:
        """However many writes a turn makes, they are flushed once, at its end."""
        store = self.open()
        keys = [await self.login(store, user) for user in range(20)]
        flushes = self.count_flushes(store)
        outcomes = [
            deferred(store.post_score(key, 1, 10 + n)) for n, key in enumerate(keys)
        ]
        self.assertEqual(flushes, [])
        for outcome in outcomes:
            self.assertIs(await outcome, True)
        self.assertEqual(flushes, [20])

    async def test_one_batch_in_flight(self) -> None:
        """Writes made during a commit wait for its acknowledgement, then go as one."""
        store = self.open()
        await self.login(store, 1)
        commits = store.writer.commits
        pid = self.pause(store)
        first = [deferred(store.login(user)) for user in range(10, 15)]
        await self.turn()  # flushed: nothing was in flight
        flushes = self.count_flushes(store)
        later: list[Deferred[Any]] = []
        for turn in range(3):
            later += [deferred(store.login(100 * turn + n)) for n in range(20, 24)]
            await self.turn()
        self.assertEqual(flushes, [])
        self.resume(pid)
        for outcome in first + later:
            await outcome
        self.assertEqual(flushes, [12])
        self.assertEqual(store.writer.commits, commits + 2)

    async def test_waiting_writes_one_commit(self) -> None:
        """Writes that reach the process while it is busy commit together."""
        store = self.open()
        keys = [await self.login(store, user) for user in range(50)]
        commits = store.writer.commits
        pid = self.pause(store)
        outcomes: list[Deferred[Any]] = [
            deferred(store.login(user)) for user in range(50, 100)
        ]
        await self.turn()  # flushed: in the pipe
        outcomes += [
            deferred(store.post_score(key, level, 500))
            for level, key in enumerate(keys)
        ]
        store.writer.flush()
        self.resume(pid)
        for outcome in outcomes:
            await outcome
        self.assertEqual(store.writer.commits, commits + 1)
        self.assertEqual(store.writer.largest, 100)
        self.assertEqual(len(self.rows("SELECT * FROM sessions")), 100)
        self.assertEqual(len(self.rows("SELECT * FROM scores")), 50)

    async def test_acknowledgements_in_commit_order(self) -> None:
        """Answers fire in the order the writes were made, across batches."""
        store = self.open()
        key = await self.login(store, 1)
        answered: list[int] = []
        pending: list[Deferred[Any]] = []
        pid = self.pause(store)
        for number in range(60):
            outcome: Deferred[Any] = deferred(
                store.login(100 + number)
                if number % 3
                else store.post_score(key, number, 10)
            )

            def note(_: object, n: int = number) -> None:
                answered.append(n)

            outcome.addCallback(note)
            pending.append(outcome)
            if number == 20:
                store.writer.flush()
                self.resume(pid)
            elif number % 7 == 0:
                await self.turn()
        for outcome in pending:
            await outcome
        self.assertEqual(answered, list(range(60)))
        self.assertGreater(store.writer.commits, 2)

    async def test_same_user_twice_in_one_batch(self) -> None:
        """Two logins of a user in one batch leave the second key, here and on disk."""
        store = self.open()
        await self.login(store, 99)
        pid = self.pause(store)
        first, second = store.login(5), store.login(5)
        self.resume(pid)
        key1, key2 = await deferred(first), await deferred(second)
        self.assertIsNone(store.sessions.user_for(key1))
        self.assertEqual(store.sessions.user_for(key2), 5)
        self.assertEqual(
            self.rows("SELECT key FROM sessions WHERE user = 5"), [(key2,)]
        )

    async def test_raising_answer_spares_the_batch(self) -> None:
        """A consumer that raises on one answer is logged; the batch's others go out."""
        store = self.open()
        await self.login(store, 99)
        pid = self.pause(store)
        outcomes = [store.login(user) for user in (1, 2, 3)]
        self.resume(pid)
        broken = outcomes[1]
        assert isinstance(broken, Pending)

        def bug(result: object) -> None:
            raise ValueError("a bug in the consumer")

        broken.then(bug, bug)
        first, third = await deferred(outcomes[0]), await deferred(outcomes[2])
        self.assertEqual(store.sessions.user_for(first), 1)
        self.assertEqual(store.sessions.user_for(third), 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class RecoveryTests(StoreTestCase):
    """
    A store loaded from the file has the lists and live sessions it had.
    """

    async def test_lists_survive_restart(self) -> None:
        """Every level's list body is the same after stop and reload."""
        store = self.open()
        for user in range(40):
            key = await self.login(store, user)
            for level in range(5):
                await self.post(store, key, level, (user * 37 + level * 11) % 23)
        bodies = [store.high_score_list(level) for level in range(5)]
        await store.stop()
        reloaded = self.open()
        self.assertEqual([reloaded.high_score_list(lv) for lv in range(5)], bodies)

    async def test_tie_order_survives_restart(self) -> None:
        """Equal scores keep first-come order after a restart; later ones follow."""
        store = self.open()
        for user in (30, 10, 20):
            await self.post(store, await self.login(store, user), 1, 500)
        await store.stop()
        reloaded = self.open()
        self.assertEqual(reloaded.high_score_list(1), b"30=500,10=500,20=500")
        await self.post(reloaded, await self.login(reloaded, 5), 1, 500)
        self.assertEqual(reloaded.high_score_list(1), b"30=500,10=500,20=500,5=500")

    async def test_sessions_keep_remaining_lifetime(self) -> None:
        """A live session is restored with its remaining lifetime, not a fresh one."""
        store = self.open(ttl=100)
        key = await self.login(store, 7)
        await store.stop()
        self.clock.advance(60)
        reloaded = self.open(ttl=100)
        self.assertEqual(reloaded.sessions.user_for(key), 7)
        self.clock.advance(39.9)
        self.assertEqual(reloaded.sessions.user_for(key), 7)
        self.clock.advance(0.1)
        self.assertIsNone(reloaded.sessions.user_for(key))

    async def test_expired_sessions_dropped(self) -> None:
        """Sessions expired while the server was down are not loaded and are deleted."""
        store = self.open(ttl=100)
        expired = await self.login(store, 1)
        self.clock.advance(50)
        live = await self.login(store, 2)
        await store.stop()
        self.clock.advance(60)
        reloaded = self.open(ttl=100)
        self.assertIsNone(reloaded.sessions.user_for(expired))
        self.assertEqual(reloaded.sessions.user_for(live), 2)
        self.assertEqual(len(reloaded.sessions), 1)  # type: ignore[arg-type]
        self.assertEqual(self.rows("SELECT user FROM sessions"), [(2,)])

    async def test_shorter_ttl_caps_restored_sessions(self) -> None:
        """Restarting with a shorter --session-ttl caps the lifetime of stored keys."""
        store = self.open(ttl=600)
        key = await self.login(store, 7)
        await store.stop()
        reloaded = self.open(ttl=10)
        self.clock.advance(10)
        self.assertIsNone(reloaded.sessions.user_for(key))

    async def test_revoked_key_stays_revoked(self) -> None:
        """After a restart only the user's latest key works."""
        store = self.open()
        old = await self.login(store, 7)
        new = await self.login(store, 7)
        await store.stop()
        reloaded = self.open()
        self.assertIsNone(reloaded.sessions.user_for(old))
        self.assertEqual(reloaded.sessions.user_for(new), 7)

    async def test_signed_mode_stores_no_sessions(self) -> None:
        """Signed mode answers logins at once, stores no session, and keeps scores."""
        store = self.open(mode="signed")
        key = store.login(7)
        assert isinstance(key, bytes)
        self.assertIs(await self.post(store, key, 1, 42), True)
        self.assertEqual(self.rows("SELECT * FROM sessions"), [])
        await store.stop()
        reloaded = self.open(mode="signed")
        self.assertEqual(reloaded.high_score_list(1), b"7=42")
        self.assertIs(await self.post(reloaded, key, 1, 43), True)

    async def test_stop_commits_queued_writes(self) -> None:
        """stop() answers and commits what is queued, then ends the process."""
        store = self.open()
        key = await self.login(store, 1)
        pid = self.pause(store)
        outcomes = [store.post_score(key, level, 9) for level in range(10)]
        stopped = store.stop()
        refused = store.login(2)
        assert isinstance(refused, Deferred)
        self.assertEqual(store.writer._lines, [])  # flushed at once
        self.resume(pid)
        await stopped
        for outcome in outcomes:
            self.assertIs(await deferred(outcome), True)
        with self.assertRaises(DatabaseError):
            await refused
        self.assertEqual(len(self.rows("SELECT * FROM scores")), 10)
        self.assertTrue(await exited(pid))
        self.assertIsNone(store.writer.pid)
        open_database(self.path).close()  # the lock is released

    async def test_stop_without_writes(self) -> None:
        """A store that never wrote stops at once, without a writer process."""
        store = self.open()
        await store.stop()
        self.assertEqual(store.writer.spawned, 0)


class FailureTests(StoreTestCase):
    """
    A commit that fails, or a writer process that dies, answers 503 (a
    failed Deferred) and changes no memory; later writes work again.
    """

    FULL = "database or disk is full"

    def refuse(self, table: str, when: str = "true") -> None:
        """
        Make every insert into C{table} (C{when} holds) fail as a full disk.
        """
        self.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            f"WHEN {when} BEGIN SELECT RAISE(ABORT, '{self.FULL}'); END"
        )

    async def test_commit_fails(self) -> None:
        """A failed commit fails all of its batch; memory stays; later writes work."""
        store = self.open()
        key = await self.login(store, 7)
        self.assertIs(await self.post(store, key, 9999, 10), True)
        self.refuse("journal")
        pid = self.pause(store)
        outcomes: list[Deferred[Any]] = [
            deferred(store.post_score(key, level, 10)) for level in range(500)
        ]
        outcomes.append(deferred(store.login(8)))
        self.resume(pid)
        for outcome in outcomes:
            with self.assertRaises(WriterError) as raised:
                await outcome
            self.assertIn("full", str(raised.exception))
        self.assertEqual(store.high_score_list(3), b"")
        self.assertEqual(store.high_score_list(9999), b"7=10")
        self.assertEqual(len(store.sessions), 1)  # type: ignore[arg-type]
        self.assertEqual(self.rows("SELECT level FROM scores"), [(9999,)])
        self.assertEqual(self.rows("SELECT user FROM sessions"), [(7,)])
        # The process starts a new connection; the disk has room again.
        self.execute("DROP TRIGGER refuse_journal")
        self.assertIs(await self.post(store, key, 3, 10), True)
        self.assertEqual(store.high_score_list(3), b"7=10")
        self.assertEqual(store.writer.spawned, 1)

    async def test_failed_login_stays_out(self) -> None:
        """A login whose commit fails never makes its key live, and stop still works."""
        store = self.open()
        self.refuse("journal")
        outcome = deferred(store.login(7))
        failures: list[Any] = []
        outcome.addErrback(failures.append)
        await store.stop()
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(store.sessions), 0)  # type: ignore[arg-type]
        self.assertEqual(self.rows("SELECT * FROM sessions"), [])

    async def test_writer_crash(self) -> None:
        """A writer killed mid-batch fails its writes; a new one serves later writes."""
        store = self.open()
        key = await self.login(store, 7)
        pid = self.pause(store)
        outcomes: list[Deferred[Any]] = [
            deferred(store.post_score(key, level, 5)) for level in range(5)
        ]
        outcomes.append(deferred(store.login(8)))
        store.writer.flush()
        os.kill(pid, signal.SIGKILL)
        for outcome in outcomes:
            with self.assertRaises(WriterError):
                await outcome
        self.assertEqual(store.high_score_list(1), b"")
        self.assertEqual(len(store.sessions), 1)  # type: ignore[arg-type]
        self.assertIs(await self.post(store, key, 1, 6), True)
        self.assertEqual(store.high_score_list(1), b"7=6")
        self.assertEqual(store.writer.spawned, 2)
        self.assertNotEqual(store.writer.pid, pid)
        self.assertEqual(self.rows("SELECT level, score FROM scores"), [(1, 6)])
        self.flushLoggedErrors()

    async def test_writes_held_during_a_lost_batch(self) -> None:
        """Writes held behind a batch a dead writer lost go to a new writer at once."""
        store = self.open()
        key = await self.login(store, 7)
        pid = self.pause(store)
        lost = deferred(store.post_score(key, 1, 5))
        await self.turn()  # in flight
        held = deferred(store.post_score(key, 2, 5))
        await self.turn()
        self.assertEqual(len(store.writer._lines), 1)
        os.kill(pid, signal.SIGKILL)
        with self.assertRaises(WriterError):
            await lost
        self.assertIs(await held, True)  # no other write needed to send it
        self.assertEqual(store.writer.spawned, 2)
        self.assertEqual(self.rows("SELECT level, score FROM scores"), [(2, 5)])
        self.flushLoggedErrors()

    async def test_writer_cannot_start(self) -> None:
        """A writer process that cannot start fails the write and the health check."""
        store = self.open()
        self.patch(sys, "executable", "/nonexistent/python")
        self.assertTrue(store.healthy())
        with self.assertRaises(WriterError):
            await deferred(store.login(7))
        self.assertFalse(store.healthy())
        self.assertEqual(len(store.sessions), 0)  # type: ignore[arg-type]

    async def test_writer_ends_on_end_of_file(self) -> None:
        """The writer process exits when its stdin closes, as when the server dies."""
        store = self.open()
        await self.login(store, 7)
        pid = store.writer.pid
        assert pid is not None and store.writer._process is not None
        store.writer._process.closeStdin()
        self.assertTrue(await exited(pid))
        key = await self.login(store, 7)  # a new process
        self.assertEqual(store.sessions.user_for(key), 7)
        self.assertEqual(store.writer.spawned, 2)


class WriterProcessTests(StoreTestCase):
    """
    The writer process's side of the pipe protocol.
    """

    def run_writer(self, lines: bytes) -> list[bytes]:
        open_database(self.path).close()
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(durable.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH", "")) if p
        )
        done = subprocess.run(
            [sys.executable, "-m", "gameserver.durable_writer", self.path],
            input=lines,
            capture_output=True,
            env=env,
            timeout=20,
            check=True,
        )
        return done.stdout.splitlines()

    def test_batch_and_acknowledgement(self) -> None:
        """Lines are committed and acknowledged by count and commit time; end of
        file ends it."""
        acks = self.run_writer(
            b'S1,2,30,4\nL2,"key2",1000.5\nS1,3,20,5\nS1,2,10,6\nL2,"key3",1001.5\n'
        )
        counts = [int(ack.split()[0]) for ack in acks]
        self.assertEqual(sum(counts), 5)
        self.assertTrue(all(float(ack.split()[1]) >= 0 for ack in acks), acks)
        self.assertEqual(
            self.rows("SELECT level, user, score, seq FROM scores ORDER BY user"),
            [(1, 2, 30, 4), (1, 3, 20, 5)],
        )
        self.assertEqual(
            self.rows("SELECT user, key, deadline FROM sessions"),
            [(2, b"key3", 1001.5)],
        )
        self.assertEqual(self.raw("SELECT * FROM journal"), [])  # folded at the end

    def test_bad_line_fails_its_batch(self) -> None:
        """A line the writer cannot use fails its batch, reported as E count why."""
        acks = self.run_writer(b"S1,2,30,4\nX what\n")
        self.assertEqual(len(acks), 1)
        self.assertTrue(acks[0].startswith(b"E 2 "), acks)
        self.assertEqual(self.rows("SELECT * FROM scores"), [])
        self.assertEqual(self.raw("SELECT * FROM journal"), [])

    def writer(self, fold_lines: int, idle: float) -> "subprocess.Popen[bytes]":
        """
        A writer process on the test's database, folding at C{fold_lines}
        lines and after C{idle} quiet seconds.
        """
        open_database(self.path).close()
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(durable.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH", "")) if p
        )
        code = (
            "import sys; from gameserver import durable_writer as w; "
            f"w.FOLD_LINES = {fold_lines}; w.IDLE_FOLD = {idle}; "
            "sys.argv[1:] = [sys.argv.pop()]; w.main()"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", code, self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(process.wait, 20)
        self.addCleanup(process.stdin.close)  # type: ignore[union-attr]
        return process

    def send(self, process: "subprocess.Popen[bytes]", lines: bytes) -> bytes:
        """
        Hand C{lines} to C{process} as one batch and read its acknowledgement.
        """
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(lines)
        process.stdin.flush()
        return process.stdout.readline()

    def journal_empties(self, timeout: float = 10.0) -> bool:
        """
        Whether the journal becomes empty within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while self.raw("SELECT count(*) FROM journal") != [(0,)]:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def test_fold_once_journal_full(self) -> None:
        """The writer folds after the acknowledgement that brings the journal to
        FOLD_LINES lines, not before."""
        process = self.writer(fold_lines=4, idle=600)
        self.assertTrue(self.send(process, b"S1,2,30,4\nS1,3,20,5\n").startswith(b"2 "))
        self.assertTrue(self.send(process, b'L2,"key2",1000.5\n').startswith(b"1 "))
        self.assertEqual(len(self.raw("SELECT * FROM journal")), 2)
        self.assertEqual(self.raw("SELECT * FROM scores"), [])
        self.assertTrue(self.send(process, b"S1,2,40,6\n").startswith(b"1 "))
        self.assertTrue(self.journal_empties())
        self.assertEqual(
            self.raw("SELECT level, user, score, seq FROM scores ORDER BY user"),
            [(1, 2, 40, 6), (1, 3, 20, 5)],
        )
        self.assertEqual(self.raw("SELECT user, key FROM sessions"), [(2, b"key2")])

    def test_fold_when_idle(self) -> None:
        """A writer with nothing on its stdin folds what the journal holds."""
        process = self.writer(fold_lines=1000, idle=0.05)
        self.assertTrue(self.send(process, b"S1,2,30,4\n").startswith(b"1 "))
        self.assertTrue(self.journal_empties())
        self.assertEqual(self.raw("SELECT score FROM scores"), [(30,)])

    def test_orphan_commits_nothing(self) -> None:
        """Once its parent is gone, the writer commits nothing more."""
        open_database(self.path).close()
        connection = durable_writer.connect(self.path)
        try:
            gone = os.getppid() + 1_000_000  # not our parent
            lines = [b"S1,2,30,4"]
            self.assertFalse(durable_writer.write_batch(connection, lines, gone))
            self.assertFalse(connection.in_transaction)
            self.assertTrue(durable_writer.write_batch(connection, lines, os.getppid()))
        finally:
            connection.close()
        self.assertEqual(self.rows("SELECT level FROM scores"), [(1,)])


def journal_lines(rng: "random.Random", seq: list[int]) -> list[bytes]:
    """
    A random batch of writer lines over few levels, users and scores, so
    that ties and repeated users are frequent; C{seq} counts on.
    """
    lines = []
    for _ in range(rng.randrange(1, 12)):
        if rng.random() < 0.3:
            key = "".join(rng.choice("abcXYZ019") for _ in range(rng.randrange(1, 6)))
            deadline = rng.choice([1000.5, 2000.25, 3e9])
            lines.append(b'L%d,"%s",%r' % (rng.randrange(4), key.encode(), deadline))
        else:
            seq[0] += 1
            lines.append(
                b"S%d,%d,%d,%d"
                % (rng.randrange(3), rng.randrange(4), rng.randrange(5), seq[0])
            )
    return lines


class JournalTests(StoreTestCase):
    """
    Batches are committed as journal rows, and a fold applies them to the
    tables as the direct upserts of earlier releases did.
    """

    def setUp(self) -> None:
        super().setUp()
        open_database(self.path).close()
        self.connection = durable_writer.connect(self.path)
        self.addCleanup(self.connection.close)

    def write(self, *lines: bytes) -> None:
        self.assertTrue(
            durable_writer.write_batch(self.connection, list(lines), os.getppid())
        )

    def tables(self, connection: sqlite3.Connection) -> list[Any]:
        return [
            connection.execute(
                "SELECT level, user, score, seq FROM scores ORDER BY level, user"
            ).fetchall(),
            connection.execute(
                "SELECT user, key, deadline FROM sessions ORDER BY user"
            ).fetchall(),
        ]

    def test_batch_is_one_journal_row(self) -> None:
        """Each batch is one journal row of its lines, and the tables are untouched."""
        self.write(b"S1,2,30,4", b'L2,"key2",1000.5')
        self.write(b"S1,3,20,5")
        self.assertEqual(
            self.raw("SELECT id, lines FROM journal"),
            [(1, b'S1,2,30,4\nL2,"key2",1000.5'), (2, b"S1,3,20,5")],
        )
        self.assertEqual(self.raw("SELECT * FROM scores"), [])
        self.assertEqual(self.raw("SELECT * FROM sessions"), [])

    def test_bad_lines_refused_before_the_journal(self) -> None:
        """A line of unknown kind or form fails its batch before anything is written."""
        for bad in (
            b"X1,2",
            b"",
            b"S1,2,3",
            b"S1,2,3,x",
            b"S01,2,3,4",  # not a JSON number
            b"S1,2,3,4,",
            b'L1,"a b",5',
            b"L1,k,5",
            b'L1,"k",5.',
        ):
            with self.assertRaises(ValueError):
                durable_writer.write_batch(
                    self.connection, [b"S1,2,30,4", bad], os.getppid()
                )
            self.assertFalse(self.connection.in_transaction)
        self.assertEqual(self.raw("SELECT * FROM journal"), [])

    def test_fold_applies_in_order(self) -> None:
        """A fold applies rows in id order and lines in order: the higher score
        wins, a tie keeps the first, the last login wins."""
        self.write(b"S1,2,30,4", b'L2,"a",1000.5', b"S1,2,30,5")
        self.write(b'L2,"b",1001.5', b"S1,2,20,6", b"S1,3,30,7")
        self.write(b"S1,2,31,8", b'L3,"c",1002.5', b'L2,"d",1003.5')
        self.assertEqual(durable_writer.fold(self.connection, os.getppid()), 9)
        self.assertEqual(
            self.tables(self.connection),
            [
                [(1, 2, 31, 8), (1, 3, 30, 7)],
                [(2, b"d", 1003.5), (3, b"c", 1002.5)],
            ],
        )
        self.assertEqual(self.raw("SELECT * FROM journal"), [])
        self.assertEqual(durable_writer.fold(self.connection), 0)

    def test_fold_matches_direct_upserts(self) -> None:
        """On random batches, journal and folds at random points leave the tables
        that direct per-batch upserts and a model of them leave."""
        for seed in range(30):
            rng = random.Random(seed)
            seq = [0]
            batches = [journal_lines(rng, seq) for _ in range(rng.randrange(1, 25))]
            direct = sqlite3.connect(":memory:", isolation_level=None)
            durable._create_v1(direct)
            scores: dict[tuple[int, int], tuple[int, int]] = {}
            sessions: dict[int, tuple[bytes, float]] = {}
            self.execute("DELETE FROM scores", "DELETE FROM sessions")
            for batch in batches:
                # What write_batch did before the journal.
                direct.execute("BEGIN IMMEDIATE")
                durable_writer.apply(direct, batch)
                direct.execute("COMMIT")
                for line in batch:
                    if line[:1] == b"S":
                        level, user, score, number = map(int, line[1:].split(b","))
                        old = scores.get((level, user))
                        if old is None or score > old[0]:
                            scores[level, user] = (score, number)
                    else:
                        user_text, key, deadline = line[1:].split(b",")
                        sessions[int(user_text)] = (key.strip(b'"'), float(deadline))
                self.write(*batch)
                if rng.random() < 0.3:
                    limit = rng.choice([None, 1, 5, 20])
                    durable_writer.fold(self.connection, os.getppid(), limit)
            durable_writer.fold(self.connection, os.getppid())
            model = [
                [(lv, u, sc, sq) for (lv, u), (sc, sq) in sorted(scores.items())],
                [(u, k, d) for u, (k, d) in sorted(sessions.items())],
            ]
            self.assertEqual(self.tables(direct), model, f"seed {seed}")
            self.assertEqual(self.tables(self.connection), model, f"seed {seed}")
            direct.close()

    def test_fold_limit(self) -> None:
        """A fold with a limit takes the oldest rows until it holds that many lines."""
        self.write(b"S1,1,1,1", b"S1,2,1,2")
        self.write(b"S1,3,1,3")
        self.write(b"S1,4,1,4")
        self.assertEqual(durable_writer.fold(self.connection, None, 3), 3)
        self.assertEqual(self.raw("SELECT id FROM journal"), [(3,)])
        self.assertEqual(self.raw("SELECT user FROM scores"), [(1,), (2,), (3,)])
        self.assertEqual(durable_writer.fold(self.connection, None, 1), 1)
        self.assertEqual(self.raw("SELECT * FROM journal"), [])

    def test_failed_fold_applies_nothing(self) -> None:
        """A fold whose commit fails leaves the tables and the journal as they were."""
        self.write(b"S1,2,30,4", b'L2,"a",1000.5')
        self.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON sessions "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        with self.assertRaises(sqlite3.Error):
            durable_writer.fold(self.connection, os.getppid())
        self.assertFalse(self.connection.in_transaction)
        self.assertEqual(self.raw("SELECT * FROM scores"), [])  # rolled back
        self.assertEqual(self.raw("SELECT * FROM sessions"), [])
        self.assertEqual(len(self.raw("SELECT * FROM journal")), 1)
        self.execute("DROP TRIGGER refuse")
        self.assertEqual(durable_writer.fold(self.connection, os.getppid()), 2)
        self.assertEqual(self.raw("SELECT score FROM scores"), [(30,)])

    def test_failed_commit_leaves_nothing_to_fold(self) -> None:
        """A batch whose commit failed leaves no journal row, so no fold applies it."""
        self.write(b"S1,2,30,4")
        self.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        with self.assertRaises(sqlite3.Error):
            self.write(b"S1,2,50,5", b'L2,"a",1000.5')
        self.assertFalse(self.connection.in_transaction)
        self.execute("DROP TRIGGER refuse")
        self.write(b"S1,3,20,6")
        self.assertEqual(durable_writer.fold(self.connection, os.getppid()), 2)
        self.assertEqual(
            self.tables(self.connection), [[(1, 2, 30, 4), (1, 3, 20, 6)], []]
        )

    def test_orphan_folds_nothing(self) -> None:
        """Once its parent is gone, the writer's fold applies nothing."""
        self.write(b"S1,2,30,4")
        gone = os.getppid() + 1_000_000  # not our parent
        self.assertIsNone(durable_writer.fold(self.connection, gone))
        self.assertFalse(self.connection.in_transaction)
        self.assertEqual(self.raw("SELECT * FROM scores"), [])
        self.assertEqual(len(self.raw("SELECT * FROM journal")), 1)

    def test_new_writer_counts_journal(self) -> None:
        """A writer process that finds rows left in the journal counts their lines."""
        self.write(b"S1,2,30,4", b"S1,3,30,5")
        self.write(b'L2,"a",1000.5')
        journal = durable_writer._Journal(self.path, os.getppid())
        self.addCleanup(journal.close)
        journal.open()
        self.assertEqual(journal.lines, 3)

    def test_load_folds_journal(self) -> None:
        """Loading folds a journal a crash left, then loads the tables."""
        self.write(b"S1,2,30,4", b'L2,"key2",2000000.5')
        self.write(b"S1,3,40,5", b"S1,2,35,6")
        self.connection.close()
        store = self.open()
        self.assertEqual(store.high_score_list(1), b"3=40,2=35")
        self.assertEqual(store.sessions.user_for(b"key2"), 2)
        self.assertEqual(self.raw("SELECT * FROM journal"), [])
        self.assertEqual(len(self.raw("SELECT * FROM scores")), 2)
        post = store.post_score(b"key2", 1, 36)
        self.assertIsInstance(post, Pending)  # seq goes on after the journal's
        self.assertEqual(store._next_seq, 8)

    def test_load_refuses_altered_journal(self) -> None:
        """A journal line the writer would never have let in stops the load."""
        self.execute("INSERT INTO journal (lines) VALUES (X'5831')")  # X1
        self.connection.close()
        with self.assertRaises(DatabaseError) as raised:
            self.open()
        self.assertIn("unknown kind", str(raised.exception))
        self.assertEqual(len(self.raw("SELECT * FROM journal")), 1)


class StopTests(StoreTestCase):
    """
    The writer process folds the journal when idle and when stopped.
    """

    async def test_clean_stop_empties_journal(self) -> None:
        """After a clean stop the journal is empty and the tables hold every write."""
        store = self.open()
        keys = [await self.login(store, user) for user in range(30)]
        for user, key in enumerate(keys):
            await self.post(store, key, user % 3, user)
        await store.stop()
        self.assertEqual(self.raw("SELECT * FROM journal"), [])
        self.assertEqual(len(self.raw("SELECT * FROM sessions")), 30)
        self.assertEqual(len(self.raw("SELECT * FROM scores")), 30)

    async def test_idle_writer_folds(self) -> None:
        """A running store's writer folds its journal soon after writes stop."""
        store = self.open()
        await self.login(store, 7)
        deadline = time.monotonic() + 10
        while self.raw("SELECT count(*) FROM journal") != [(0,)]:
            self.assertLess(time.monotonic(), deadline, "the journal was not folded")
            await self.turn()
        self.assertEqual(self.raw("SELECT user FROM sessions"), [(7,)])

    async def test_failed_fold_is_logged_and_writes_go_on(self) -> None:
        """A fold that fails is logged, writes are still answered, and the stop's
        fold takes everything once it can."""
        store = self.open()
        await self.login(store, 1)
        lines: list[str] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            lines.append(str(event.get("line", "")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON sessions "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        key = await self.login(store, 7)
        deadline = time.monotonic() + 10
        while not any("fold failed" in line for line in lines):
            self.assertLess(time.monotonic(), deadline, "no failed fold logged")
            await self.turn()
        self.assertIn("disk is full", lines[-1])
        self.assertEqual(store.sessions.user_for(key), 7)
        self.assertEqual(store.sessions.user_for(await self.login(store, 8)), 8)
        self.execute("DROP TRIGGER refuse")
        await store.stop()
        self.assertEqual(self.raw("SELECT * FROM journal"), [])
        self.assertEqual(
            self.raw("SELECT user FROM sessions ORDER BY user"), [(1,), (7,), (8,)]
        )


class OpenTests(StoreTestCase):
    """
    open_database refuses, with one line, what it cannot use safely.
    """

    def assertRefused(self, fragment: str) -> None:
        with self.assertRaises(DatabaseError) as raised:
            open_database(self.path)
        message = str(raised.exception)
        self.assertIn(fragment, message)
        self.assertNotIn("\n", message)

    def write(self, content: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(content)

    def test_new_file_gets_schema(self) -> None:
        """A new file gets the current schema version and the application id."""
        open_database(self.path).close()
        self.assertEqual(self.rows("PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertEqual(self.rows("PRAGMA application_id"), [(APPLICATION_ID,)])
        self.assertEqual(self.rows("PRAGMA journal_mode"), [("wal",)])

    def test_not_a_database(self) -> None:
        """A file that is not SQLite is refused."""
        self.write(b"this is not a database at all" * 200)
        self.assertRefused("file is not a database")

    def test_foreign_database(self) -> None:
        """Some other program's SQLite database is refused."""
        connection = sqlite3.connect(self.path)
        connection.execute("CREATE TABLE t (x)")
        connection.close()
        self.assertRefused("not a gameserver one")

    def test_newer_schema(self) -> None:
        """A file from a newer release is refused, not downgraded."""
        open_database(self.path).close()
        connection = sqlite3.connect(self.path)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.close()
        self.assertRefused(f"schema version {SCHEMA_VERSION + 1}")

    def test_damaged_file(self) -> None:
        """A file with damaged pages is refused at open or load, never half-loaded."""
        database = open_database(self.path)
        connection = sqlite3.connect(self.path)
        connection.executemany(
            "INSERT INTO scores VALUES (?, ?, ?, ?)",
            ((level, 1, 5, level) for level in range(5000)),
        )
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
        database.close()
        with open(self.path, "r+b") as f:
            f.seek(4096 * 3)
            f.write(b"\xa5" * 4096 * 2)

        def start() -> None:
            DurableScores.load(
                open_database(self.path), self.clock, "stored", 600, None, reactor
            ).writer.stop()

        error = self.assertRaises(DatabaseError, start)
        self.assertNotIn("\n", str(error))
        self.assertIn(self.path, str(error))

    def test_in_use(self) -> None:
        """A database another server holds is refused."""
        database = open_database(self.path)
        self.addCleanup(database.close)
        self.assertRefused("another gameserver is using it")

    def test_missing_directory(self) -> None:
        """A path in a directory that does not exist is refused."""
        self.path = os.path.join(self.path, "nowhere", "game.db")
        self.assertRefused("no directory")

    def skipIfRoot(self) -> None:
        if os.geteuid() == 0:
            self.skipTest("root ignores file permissions")

    def test_read_only_directory(self) -> None:
        """A directory where the log files cannot be created is refused."""
        self.skipIfRoot()
        directory = os.path.dirname(self.path)
        os.chmod(directory, 0o555)
        self.addCleanup(os.chmod, directory, 0o755)
        self.assertRefused("not writable")

    def test_unreadable_file(self) -> None:
        """A file the server may not read and write is refused."""
        self.skipIfRoot()
        open_database(self.path).close()
        os.chmod(self.path, 0o200)
        self.assertRefused("not readable")


class SchemaTests(StoreTestCase):
    """
    The schema version lets a later release migrate old files.
    """

    def test_migration_hook(self) -> None:
        """A file of an older version is migrated step by step, keeping its data."""
        open_database(self.path).close()
        connection = sqlite3.connect(self.path)
        connection.execute("INSERT INTO scores VALUES (1, 2, 3, 4)")
        connection.commit()
        connection.close()
        ran: list[int] = []

        def to_v2(connection: sqlite3.Connection) -> None:
            ran.append(1)
            connection.execute("ALTER TABLE scores ADD COLUMN note TEXT")

        migrations: dict[int, Callable[[sqlite3.Connection], None]] = {
            **durable.MIGRATIONS,
            SCHEMA_VERSION: to_v2,
        }
        self.patch(durable, "MIGRATIONS", migrations)
        self.patch(durable, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        open_database(self.path).close()
        open_database(self.path).close()
        self.assertEqual(ran, [1])
        self.assertEqual(self.rows("PRAGMA user_version"), [(SCHEMA_VERSION + 1,)])
        self.assertEqual(
            self.rows("SELECT level, user, score, seq FROM scores"), [(1, 2, 3, 4)]
        )

    def test_v1_file_migrates(self) -> None:
        """A file of the previous release (version 1) gains the journal and keeps
        its data."""
        restore = self.patch(durable, "SCHEMA_VERSION", 1)
        open_database(self.path).close()
        restore.restore()
        self.assertEqual(self.raw("PRAGMA user_version"), [(1,)])
        self.execute(
            "INSERT INTO scores VALUES (1, 2, 3, 4)",
            "INSERT INTO sessions VALUES (2, X'6b32', 2000000.5)",  # key k2
        )
        journal = "SELECT * FROM sqlite_schema WHERE name = 'journal'"
        self.assertEqual(self.raw(journal), [])
        store = self.open()
        self.assertEqual(self.raw("PRAGMA user_version"), [(2,)])
        self.assertEqual(self.raw("SELECT * FROM journal"), [])
        self.assertEqual(store.high_score_list(1), b"2=3")
        self.assertEqual(store.sessions.user_for(b"k2"), 2)

    def test_database_object(self) -> None:
        """open_database returns a Database whose loading connection load closes."""
        database = open_database(self.path)
        self.assertIsInstance(database, Database)
        store = DurableScores.load(database, self.clock, "stored", 600, None, reactor)
        self.addCleanup(store.stop)
        self.assertIsNone(database.connection)
        self.assertIsInstance(store.sessions, StoredSessions)
