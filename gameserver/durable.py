"""
The durable scores store: sessions and high-score lists in an embedded SQLite
database (C{--database PATH}), served from memory, written by one thread.

    reactor thread                         writer thread
    --------------                         -------------
    login / score post --> queue ------->  take everything queued (a batch)
                                           BEGIN; write the batch; COMMIT (fsync)
    apply to memory, answer  <-----------  callFromThread(batch, error)

Reads (high-score lists, session lookups) never touch the disk.
"""

import errno
import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, Literal, TypeAlias

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gameserver.leaderboard import LIST_LENGTH, Leaderboards
from gameserver.sessions import SignedSessions, StoredSessions

# "GSDB": marks a SQLite file as a gameserver database.
APPLICATION_ID = 0x47534442
# The schema this release writes; PRAGMA user_version holds the file's.
SCHEMA_VERSION = 1
# Most writes in one transaction: bounds the latency a huge backlog adds to
# the requests at its end, and the memory of one batch.
MAX_BATCH = 4096

# How long the writer waits for more writes before a commit, when the last
# batch showed writes arriving together; a lone write commits at once.
GROUP_WINDOW = 0.0005

SessionsMode: TypeAlias = Literal["stored", "signed"]


class DatabaseError(Exception):
    """
    The database cannot be used; the message is one line for the operator.
    """


def _create_v1(connection: sqlite3.Connection) -> None:
    # scores: the entries of each level's top list, with the global sequence
    # number that orders ties.  Rows that fall off a list stay until the next
    # start prunes them: a few per level, and no extra statement per batch.
    # sessions: stored mode only, one row per user: a login replaces the
    # user's previous key, which is what revokes it.
    # Statement by statement: executescript would commit the migration's
    # transaction half way.
    connection.execute(
        """
        CREATE TABLE scores (
            level INTEGER NOT NULL,
            user INTEGER NOT NULL,
            score INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (level, user)
        ) WITHOUT ROWID
        """
    )
    connection.execute(
        """
        CREATE TABLE sessions (
            user INTEGER PRIMARY KEY,
            key BLOB NOT NULL,
            deadline REAL NOT NULL
        )
        """
    )


# MIGRATIONS[n] turns a schema of version n into version n + 1, inside the
# transaction that also sets user_version; version 0 is an empty file.  A later
# release appends its step here and raises SCHEMA_VERSION.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1}


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit mode: transactions are the explicit BEGIN/COMMIT below.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class Database:
    """
    A validated gameserver database file, open for loading, and the lock
    that keeps a second server off it.

    Made by L{open_database}.  The connection it holds is only for loading:
    L{DurableScores.load} closes it, and the writer thread opens its own once
    the reactor runs (after twistd may have forked, which an open SQLite
    connection must not cross).
    """

    def __init__(self, path: str, connection: sqlite3.Connection, lock: int) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = connection
        self._lock = lock

    def connect(self) -> sqlite3.Connection:
        """
        A new connection for writing: WAL, and a sync on every commit.
        """
        connection = _connect(self.path)
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL in WAL mode: every COMMIT syncs the log, so a commit that
        # returned survives a crash or a power cut.
        connection.execute("PRAGMA synchronous = FULL")
        return connection

    def close(self) -> None:
        """
        Close the loading connection and release the lock.
        """
        self.close_loader()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def close_loader(self) -> None:
        """
        Close the loading connection, keeping the lock.
        """
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def open_database(path: str) -> Database:
    """
    Open (creating it if missing) and validate the database at C{path}, and
    migrate its schema to this release's.

    Everything that would make the server lose data later is found here: a
    directory that cannot hold the file and its log, a file that is not a
    SQLite database or is damaged, one written by a newer release, one another
    server is using, a disk too full to take a commit.

    @raise DatabaseError: with a one-line message naming C{path}.
    """
    what = f"--database {path!r}"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DatabaseError(f"cannot open {what}: no directory {directory!r}")
    # WAL mode needs the -wal and -shm files next to the database.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"cannot open {what}: the directory {directory!r} is not writable"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseError(
            f"cannot open {what}: the file is not readable and writable"
        )
    try:
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DatabaseError(f"cannot open {what}: {_reason(e)}") from e
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(lock)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise DatabaseError(
                f"cannot open {what}: another gameserver is using it"
            ) from e
        raise DatabaseError(f"cannot open {what}: {_reason(e)}") from e
    connection: sqlite3.Connection | None = None
    try:
        connection = _connect(path)
        _validate(connection, what)
        return Database(path, connection, lock)
    except sqlite3.Error as e:
        if connection is not None:
            connection.close()
        os.close(lock)
        raise DatabaseError(f"cannot use {what}: {_reason(e)}") from e
    except DatabaseError:
        if connection is not None:
            connection.close()
        os.close(lock)
        raise


def _validate(connection: sqlite3.Connection, what: str) -> None:
    # Reading the header finds a file that is not a database at all.
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if application_id != APPLICATION_ID and (tables or version):
        raise DatabaseError(f"{what} is a SQLite database but not a gameserver one")
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"{what} has schema version {version}, newer than this release's "
            f"{SCHEMA_VERSION}: use a newer gameserver"
        )
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise DatabaseError(f"cannot use {what}: WAL mode refused ({mode})")
    # One write at start, synced: proves the file, its log and the disk
    # take a commit now rather than at the first login.
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("BEGIN IMMEDIATE")
    try:
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](connection)
            version += 1
        connection.execute(f"PRAGMA user_version = {version}")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise DatabaseError(f"{what} is damaged: {'; '.join(problems)}")


@dataclass(slots=True)
class _Login:
    user: int
    key: bytes
    deadline: float
    deferred: "Deferred[bytes]" = field(default_factory=Deferred)


@dataclass(slots=True)
class _Score:
    level: int
    user: int
    score: int
    seq: int
    deferred: "Deferred[bool]" = field(default_factory=Deferred)


_Write: TypeAlias = _Login | _Score
_STOP = object()

# A batch goes in as one JSON array per table, so that a whole batch costs a
# handful of statements: every statement hands the GIL back and forth, and
# with a busy reactor thread each hand-back can wait a switch interval.
# Rows apply in array (arrival) order, which the ORDER BY makes explicit.
_UPSERT_SCORES = """
    INSERT INTO scores (level, user, score, seq)
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3
    FROM json_each(?) WHERE true ORDER BY key
    ON CONFLICT (level, user) DO UPDATE SET score = excluded.score,
    seq = excluded.seq WHERE excluded.score > scores.score
"""
_REPLACE_SESSIONS = """
    INSERT OR REPLACE INTO sessions (user, key, deadline)
    SELECT value ->> 0, CAST(value ->> 1 AS BLOB), value ->> 2
    FROM json_each(?) ORDER BY key
"""


class _Writer:
    """
    The one thread that writes: takes everything queued as one batch, commits
    it (group commit: one sync for all the writes that arrived while the
    previous sync ran), and reports each batch back to the reactor thread in
    commit order.
    """

    log = Logger()

    def __init__(
        self,
        database: Database,
        reactor: IReactorFromThreads,
        done: Callable[[list[_Write], BaseException | None], None],
    ) -> None:
        self._database = database
        self._reactor = reactor
        self._done = done
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred[None] = Deferred()
        # Statistics, written by the thread: commits, the writes they held,
        # and the largest batch.
        self.commits = 0
        self.committed = 0
        self.largest = 0

    def put(self, write: _Write) -> None:
        if self._thread is None:
            # Started on the first write, not before: twistd may fork
            # between loading and running, and threads do not survive that.
            self._thread = threading.Thread(
                target=self._run, name="gameserver-db-writer", daemon=True
            )
            self._thread.start()
        self._queue.put(write)

    def stop(self) -> "Deferred[None]":
        """
        Commit what is queued, close the connection; fires on the reactor
        thread once the thread is done.
        """
        if self._thread is None:
            self._stopped.callback(None)
        else:
            self._queue.put(_STOP)
        return self._stopped

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        stopping = False
        previous = 0
        while not stopping:
            batch: list[_Write] = []
            item = self._queue.get()
            if previous > 1:
                # Writes are arriving together: let more join this batch.
                # A sync costs the same for one write or a hundred, and on
                # a busy server its CPU is what the reactor thread misses.
                time.sleep(GROUP_WINDOW)
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            previous = len(batch)
            if not batch:
                continue
            error: BaseException | None = None
            try:
                if connection is None:
                    connection = self._database.connect()
                self._write(connection, batch)
            except Exception as e:
                error = e
                if connection is not None:
                    # After a full disk or an I/O error, trust nothing of
                    # this connection: roll back and start afresh.
                    try:
                        if connection.in_transaction:
                            connection.execute("ROLLBACK")
                        connection.close()
                    except sqlite3.Error:
                        pass
                    connection = None
            self._reactor.callFromThread(self._done, batch, error)
        if connection is not None:
            connection.close()
        # Two hops through the reactor's thread queue: the answers of the
        # last batch are written in the first, and a whole reactor iteration
        # (which sends them) passes before the second, after which twistd
        # may tear the connections down.
        self._reactor.callFromThread(
            self._reactor.callFromThread, self._stopped.callback, None
        )

    def _write(self, connection: sqlite3.Connection, batch: list[_Write]) -> None:
        # Scores and sessions are separate tables, and within each the rows
        # apply in arrival order: the result is that of the writes one by one.
        scores = [
            (w.level, w.user, w.score, w.seq) for w in batch if isinstance(w, _Score)
        ]
        sessions = [
            (w.user, w.key.decode("ascii"), w.deadline)
            for w in batch
            if isinstance(w, _Login)
        ]
        connection.execute("BEGIN IMMEDIATE")
        if scores:
            connection.execute(_UPSERT_SCORES, (json.dumps(scores),))
        if sessions:
            connection.execute(_REPLACE_SESSIONS, (json.dumps(sessions),))
        connection.execute("COMMIT")
        self.commits += 1
        self.committed += len(batch)
        self.largest = max(self.largest, len(batch))


class DurableScores:
    """
    A L{gameserver.scores.ScoresBackend} that loses nothing it acknowledged.

    State lives in memory as in L{gameserver.scores.MemoryScores} (per-level
    top lists, live session keys), and reads are answered from there at
    once.  A write that changes that state (a stored-mode login, a score
    that enters a level's top list) is queued to one writer thread, which
    commits everything queued since its last commit in one transaction and
    one sync (group commit), then hands the batch back to the reactor
    thread.  Only then is the batch applied to memory and answered, in
    commit order: a C{200} means the write is on disk, the next list read
    shows it, and a failed commit (full disk, I/O error) answers C{503} and
    leaves memory as it was, so memory never claims what the disk lacks.

    Writes that cannot change anything are answered at once without the
    disk: a score not above the user's entry or not above a full list's
    last entry.  That judgement uses the committed lists; writes still in
    flight can only raise those bars, so it holds once they land.

    The database holds the top list of every level (with the sequence that
    orders ties) and, in stored mode, one session row per user.  Signed mode
    stores nothing per session: its keys carry their own expiry and survive
    restarts through the shared secret.
    """

    log = Logger()

    def __init__(
        self,
        database: Database,
        clock: IReactorTime,
        sessions: StoredSessions | SignedSessions,
        boards: Leaderboards,
        next_seq: int,
        reactor: IReactorFromThreads | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor  # type: ignore[assignment]
        assert reactor is not None
        self.sessions = sessions
        self.boards = boards
        self._database = database
        self._clock = clock
        self._next_seq = next_seq
        self._stopping = False
        self.writer = _Writer(database, reactor, self._committed)

    @classmethod
    def load(
        cls,
        database: Database,
        clock: IReactorTime,
        sessions_mode: SessionsMode,
        ttl: float,
        secret: bytes | None = None,
        reactor: IReactorFromThreads | None = None,
    ) -> "DurableScores":
        """
        Build the store from the database: every level's top list, and in
        stored mode the sessions still live at C{clock.seconds()} with their
        remaining lifetime (never more than C{ttl}); expired rows are deleted.
        Closes the loading connection; the writer opens its own.

        @raise DatabaseError: the file cannot be read (damaged pages).
        """
        connection = database.connection
        if connection is None:
            raise ValueError("this database was loaded already")
        what = f"--database {database.path!r}"
        try:
            boards, next_seq = _load_boards(connection)
            sessions: StoredSessions | SignedSessions
            if sessions_mode == "signed":
                if secret is None:
                    raise ValueError("signed sessions need a secret")
                sessions = SignedSessions(clock, secret, ttl)
            else:
                sessions = _load_sessions(connection, clock, ttl)
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot read {what}: {_reason(e)}") from e
        finally:
            database.close_loader()
        cls.log.info(
            "loaded {levels} levels and {sessions} live sessions from {path}",
            levels=len(boards),
            sessions=len(sessions) if isinstance(sessions, StoredSessions) else 0,
            path=database.path,
        )
        return cls(database, clock, sessions, boards, next_seq, reactor)

    def login(self, user: int) -> "bytes | Deferred[bytes]":
        sessions = self.sessions
        if isinstance(sessions, SignedSessions):
            return sessions.issue(user)  # nothing to store
        if self._stopping:
            return fail(DatabaseError("the store is stopping"))
        key, deadline = sessions.prepare(user)
        write = _Login(user, key, deadline)
        self.writer.put(write)
        return write.deferred

    def post_score(self, key: bytes, level: int, score: int) -> "bool | Deferred[bool]":
        user = self.sessions.user_for(key)
        if user is None:
            return False
        if not self.boards.would_change(level, user, score):
            return True
        if self._stopping:
            return fail(DatabaseError("the store is stopping"))
        write = _Score(level, user, score, self._next_seq)
        self._next_seq += 1
        self.writer.put(write)
        return write.deferred

    def high_score_list(self, level: int) -> bytes:
        return self.boards.body(level)

    def stop(self) -> "Deferred[None]":
        """
        Refuse new writes, commit and answer the queued ones, close the
        database; fires once all of that is done.
        """
        if self._stopping:
            return succeed(None)
        self._stopping = True

        def release(result: None) -> None:
            # Only now: the last batch may still have admitted sessions.
            self.sessions.stop()
            self._database.close()
            writer = self.writer
            self.log.info(
                "closed {path}: {writes} writes in {commits} commits, "
                "largest batch {largest}",
                path=self._database.path,
                writes=writer.committed,
                commits=writer.commits,
                largest=writer.largest,
            )

        return self.writer.stop().addCallback(release)

    def _committed(self, batch: list[_Write], error: BaseException | None) -> None:
        if error is not None:
            self.log.error(
                "commit of {count} writes to {path} failed: {error}",
                count=len(batch),
                path=self._database.path,
                error=_reason(error),
            )
            failure = Failure(error)
            for write in batch:
                write.deferred.errback(failure)
            return
        # Apply the whole batch, then answer it: in commit order either way.
        sessions = self.sessions
        boards = self.boards
        for write in batch:
            if isinstance(write, _Score):
                boards.record(write.level, write.user, write.score, write.seq)
            else:
                assert isinstance(sessions, StoredSessions)
                sessions.admit(write.user, write.key, write.deadline)
        for write in batch:
            if isinstance(write, _Score):
                write.deferred.callback(True)
            else:
                write.deferred.callback(write.key)


def _load_boards(connection: sqlite3.Connection) -> tuple[Leaderboards, int]:
    boards = Leaderboards()
    fallen: list[tuple[int, int]] = []
    # Each level's rows best first, as Board keeps its entries.
    rows = connection.execute(
        "SELECT level, -score, seq, user FROM scores ORDER BY level, score DESC, seq"
    )
    load = boards.load
    for level, group in groupby(rows, itemgetter(0)):
        entries = [(negative, seq, user) for _, negative, seq, user in group]
        if len(entries) > LIST_LENGTH:
            fallen += [(level, user) for _, _, user in entries[LIST_LENGTH:]]
            del entries[LIST_LENGTH:]
        load(level, entries)
    (largest,) = connection.execute("SELECT max(seq) FROM scores").fetchone()
    if fallen:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "DELETE FROM scores WHERE level = ? AND user = ?", fallen
        )
        connection.execute("COMMIT")
    return boards, 0 if largest is None else largest + 1


def _load_sessions(
    connection: sqlite3.Connection, clock: IReactorTime, ttl: float
) -> StoredSessions:
    now = clock.seconds()
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("DELETE FROM sessions WHERE deadline <= ?", (now,))
    connection.execute("COMMIT")
    # A shorter --session-ttl than before caps what was stored, which also
    # keeps every restored deadline before those of new logins.
    rows = connection.execute(
        "SELECT user, key, min(deadline, ?) AS due FROM sessions ORDER BY due",
        (now + ttl,),
    ).fetchall()
    sessions = StoredSessions(clock, ttl)
    for user, key, deadline in rows:
        sessions.admit(user, key, deadline)
    return sessions
