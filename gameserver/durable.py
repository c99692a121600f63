"""
The durable scores store: sessions and high-score lists in an embedded SQLite
database (C{--database PATH}), served from memory, written by one process.

    reactor (server process)               writer process (durable_writer)
    ------------------------               -------------------------------
    login / score post: one line,
    queued with its Pending answer
    end of the reactor turn: one  ---->    stdin: take everything there (a batch)
    pipe write of the turn's lines         BEGIN; write the batch; COMMIT (fsync)
    apply to memory, answer, in   <----    stdout: "<count>" or "E <count> <why>"
    order (FIFO of pending writes)

Reads (high-score lists, session lookups) never touch the disk.
"""

import errno
import fcntl
import os
import sqlite3
import sys
from collections import deque
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any, Literal, TypeAlias

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gameserver import durable_writer
from gameserver.direct_write import write_through
from gameserver.leaderboard import LIST_LENGTH, Leaderboards
from gameserver.scores import Capacity, Pending
from gameserver.sessions import SignedSessions, StoredSessions

# "GSDB": marks a SQLite file as a gameserver database.
APPLICATION_ID = 0x47534442
# The schema this release writes; PRAGMA user_version holds the file's.
SCHEMA_VERSION = 2
# Journal lines the loader folds per transaction: bounds its memory when a
# long journal was left behind (folds that failed for a long time).
LOAD_FOLD_LINES = 65536
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


def _create_v2(connection: sqlite3.Connection) -> None:
    # journal: one row per committed batch of the writer process, its lines
    # as the server sent them (see gameserver.durable_writer), until a fold
    # applies it to scores and sessions and deletes it.  Appending a row
    # writes far fewer pages per commit than updating the tables in place.
    connection.execute(
        "CREATE TABLE journal (id INTEGER PRIMARY KEY, lines BLOB NOT NULL)"
    )


# MIGRATIONS[n] turns a schema of version n into version n + 1, inside the
# transaction that also sets user_version; version 0 is an empty file.  A later
# release appends its step here and raises SCHEMA_VERSION.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _create_v2,
}


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
    L{DurableScores.load} closes it, and the writer process opens its own
    once the reactor runs (after twistd may have forked, which an open
    SQLite connection must not cross).  This process holds the lock; the
    writer process does not.
    """

    def __init__(self, path: str, connection: sqlite3.Connection, lock: int) -> None:
        self.path = path
        self.connection: sqlite3.Connection | None = connection
        self._lock = lock

    def connect(self) -> sqlite3.Connection:
        """
        A new connection for writing, as the writer process opens it: WAL,
        and a sync on every commit.
        """
        return durable_writer.connect(self.path)

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


# A write waiting for its commit: the Pending to fire, then what to apply to
# memory once it is committed.  Plain tuples: the reactor makes one per write.
#   (answer, level, user, score, seq)      a score
#   (answer, user, key, deadline)          a stored-mode login
_Write: TypeAlias = tuple[Any, ...]

# The package's parent directory: the writer process imports gameserver
# from there, however the server itself found it.
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WriterError(DatabaseError):
    """
    A batch was not committed: the commit failed, or the writer process
    ended before it acknowledged the batch.
    """


class _Writer(ProcessProtocol):
    """
    The reactor's end of the writer process (L{gameserver.durable_writer}).

    Each write is one line for the process and one entry in a FIFO of
    pending writes.  One batch is in flight at a time: lines that come while
    the process commits one wait for its acknowledgement, and then all go in
    one pipe write (and lines of a turn with nothing in flight at the end of
    that turn).  The process commits whatever it finds on its stdin as one
    batch (group commit) and acknowledges each batch with one line, which
    takes that many writes off the front of the FIFO, in order.  So there is
    one pipe write, one wake-up of the process and one sync per commit,
    however many turns the writes came in.

    The process is spawned by the first flush, so not before the reactor
    runs (twistd may fork before that, and a child process must be the
    daemon's), and again by the first flush after it ended.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: Any,
        done: Callable[[list[_Write], Exception | None], None],
    ) -> None:
        self._path = os.path.abspath(path)
        self._reactor = reactor
        self._done = done
        self._process: IProcessTransport | None = None
        # The process's stdin, a twisted.internet.process.ProcessWriter.
        self._pipe: object | None = None
        # Lines not yet written to the process: the tail of _pending.
        self._lines: list[bytes] = []
        self._flushing: IDelayedCall | None = None
        self._pending: deque[_Write] = deque()
        self._acks = b""
        self._errors = b""
        self._stopped: Deferred[None] | None = None
        self._closing = False
        # The last attempt to start the process failed.
        self.failed_to_start = False
        # Statistics: processes spawned, commits, the writes they held, and
        # the largest batch.
        self.spawned = 0
        self.commits = 0
        # Called with the seconds each committed transaction took (metrics).
        self.on_batch: Callable[[float], object] | None = None
        self.committed = 0
        self.largest = 0

    @property
    def pid(self) -> int | None:
        """
        The writer process's id, while it runs.
        """
        return None if self._process is None else self._process.pid

    def put(self, line: bytes, write: _Write) -> None:
        """
        Queue a write: C{line} for the process, C{write} (its answer and
        what to apply) for when it is committed.
        """
        lines = self._lines
        # While a batch is being committed, the lines wait for its
        # acknowledgement (outReceived hands them over); otherwise they go at
        # the end of this reactor turn.
        idle = len(self._pending) == len(lines)
        lines.append(line)
        self._pending.append(write)
        if idle and self._flushing is None:
            self._flushing = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Hand the queued lines to the process, spawning it if need be.
        """
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if not self._lines:
            return
        process = self._process
        if process is None:
            try:
                process = self._spawn()
            except Exception as e:
                self.failed_to_start = True
                self.log.error(
                    "cannot start the writer process for {path}: {error}",
                    path=self._path,
                    error=_reason(e),
                )
                self._lines = []
                self._fail(len(self._pending), WriterError(_reason(e)))
                return
        data = b"".join(self._lines)
        self._lines = []
        # Straight into the pipe when nothing is queued before it: the
        # transport's write costs four epoll registrations a turn (its pipe
        # writer watches for the child closing), more than the write itself.
        pipe: Any = self._pipe
        if pipe is None:
            process.write(data)
        else:
            write_through(
                pipe, lambda chunk: os.write(pipe.fd, chunk), data, process.write
            )

    def stop(self) -> "Deferred[None]":
        """
        Hand over what is queued, wait for its acknowledgements, then close
        the process's stdin and wait for it to exit.
        """
        if self._stopped is None:
            self._stopped = Deferred()
            self.flush()
            self._close_if_done()
        return self._stopped

    def _spawn(self) -> IProcessTransport:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_IMPORT_ROOT, env.get("PYTHONPATH", "")) if p
        )
        self._acks = self._errors = b""
        self._closing = False
        # The child gets only these three pipes: not the lock file, not the
        # listening sockets.
        process: IProcessTransport = self._reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-m", "gameserver.durable_writer", self._path],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        self._process = process
        self._pipe = getattr(process, "pipes", {}).get(0)
        self.failed_to_start = False
        self.spawned += 1
        self.log.info(
            "writer process {pid} started for {path}",
            pid=process.pid,
            path=self._path,
        )
        return process

    def _close_if_done(self) -> None:
        if self._stopped is None or self._pending:
            return
        if self._process is not None:
            if not self._closing:
                self._closing = True
                self._process.closeStdin()  # the process exits: processEnded
        elif not self._stopped.called:
            self._stopped.callback(None)

    def _fail(self, count: int, error: Exception) -> None:
        pending = self._pending
        batch = [pending.popleft() for _ in range(min(count, len(pending)))]
        if batch:
            self._done(batch, error)

    def outReceived(self, data: bytes) -> None:
        lines = (self._acks + data).split(b"\n")
        self._acks = lines.pop()
        pending = self._pending
        for line in lines:
            if line[:2] == b"E ":
                number, _, message = line[2:].partition(b" ")
                self._fail(int(number), WriterError(message.decode("utf-8", "replace")))
                continue
            number, _, seconds = line.partition(b" ")
            count = int(number)
            if seconds and self.on_batch is not None:
                self.on_batch(float(seconds))
            if count > len(pending):
                # Cannot happen; if it did, answers would go to the wrong
                # requests: fail everything and start a new process.
                self.log.error("writer process acknowledged unknown writes")
                assert self._process is not None
                self._process.signalProcess("KILL")
                return
            batch = [pending.popleft() for _ in range(count)]
            self.commits += 1
            self.committed += count
            if count > self.largest:
                self.largest = count
            self._done(batch, None)
        if self._lines and len(self._pending) == len(self._lines):
            # Nothing in flight any more: the next batch is what came in
            # meanwhile, in one pipe write and one commit.
            self.flush()
        self._close_if_done()

    def errReceived(self, data: bytes) -> None:
        lines = (self._errors + data).split(b"\n")
        self._errors = lines.pop()
        for line in lines:
            self.log.error(
                "writer process: {line}", line=line.decode("utf-8", "replace")
            )

    def processEnded(self, reason: Failure) -> None:
        self._process = self._pipe = None
        if self._errors:
            self.errReceived(b"\n")
        # Written to the process but not acknowledged: lost with it.  Lines
        # not written yet go to the next process.
        lost = len(self._pending) - len(self._lines)
        clean = self._stopped is not None and isinstance(reason.value, ProcessDone)
        if lost or not clean:
            self.log.error(
                "writer process for {path} ended ({reason}); "
                "{lost} writes in flight failed",
                path=self._path,
                reason=reason.getErrorMessage(),
                lost=lost,
            )
        if lost:
            self._fail(lost, WriterError(f"the writer process ended: {reason.value}"))
        if self._lines:
            # Held while the lost batch was in flight: a new process takes
            # them now, not at the next write, which may never come (and
            # when stopping, it is stopped in turn).
            self.flush()
        elif self._stopped is not None and not self._stopped.called:
            # One turn later: the last answers go out first.
            self._reactor.callLater(0, self._stopped.callback, None)


class DurableScores:
    """
    A L{gameserver.scores.ScoresBackend} that loses nothing it acknowledged.

    State lives in memory as in L{gameserver.scores.MemoryScores} (per-level
    top lists, live session keys), and reads are answered from there at
    once.  A write that changes that state (a stored-mode login, a score
    that enters a level's top list) goes as one line to a writer process
    (L{gameserver.durable_writer}), which commits everything that arrived
    since its last commit in one transaction and one sync (group commit)
    and acknowledges the batch.  Only then is the batch applied to memory
    and answered, in commit order: a C{200} means the write is on disk, the
    next list read shows it, and a failed commit (full disk, I/O error) or
    a writer process that dies answers C{503} and leaves memory as it was,
    so memory never claims what the disk lacks.  A process, not a thread:
    the reactor keeps its interpreter to itself, and the writer's work runs
    on another core.

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
        reactor: Any = None,
        capacity: Capacity | None = None,
    ) -> None:
        """
        @param reactor: provides L{IReactorProcess} and L{IReactorTime}, to
            run the writer process; the global reactor by default.
        @param capacity: bounds of the sessions and levels held; none by
            default.
        """
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.sessions = sessions
        self.boards = boards
        self._database = database
        self._clock = clock
        self._next_seq = next_seq
        self._stopping = False
        self.capacity = capacity if capacity is not None else Capacity()
        # New users and levels that writes in flight will add, with the
        # count of such writes: the capacity holds once they land.
        self._users_coming: dict[int, int] = {}
        self._levels_coming: dict[int, int] = {}
        self.writer = _Writer(database.path, reactor, self._committed)

    @classmethod
    def load(
        cls,
        database: Database,
        clock: IReactorTime,
        sessions_mode: SessionsMode,
        ttl: float,
        secret: bytes | None = None,
        reactor: Any = None,
        capacity: Capacity | None = None,
    ) -> "DurableScores":
        """
        Build the store from the database: every level's top list, and in
        stored mode the sessions still live at C{clock.seconds()} with their
        remaining lifetime (never more than C{ttl}); expired rows are deleted.
        Closes the loading connection: the writer process, started on the
        first write, opens its own.

        First it folds the journal rows a server that died (or a fold that
        failed) left behind into the tables, oldest first, as the writer
        process would have (L{gameserver.durable_writer.fold}): every write
        that was acknowledged is in a committed journal row or folded.

        A writer process left over from a server that was killed holds no
        lock of ours, and may still be committing its last batch (or a
        fold): the C{BEGIN IMMEDIATE} of L{open_database} waited for that
        transaction, and a later one of that process sees its parent gone
        and commits nothing (see L{gameserver.durable_writer}).  So nothing
        lands in the journal after the fold here, and nothing folds behind
        the tables read here.

        @raise DatabaseError: the file cannot be read (damaged pages).
        """
        connection = database.connection
        if connection is None:
            raise ValueError("this database was loaded already")
        what = f"--database {database.path!r}"
        try:
            folded = _load_journal(connection, what)
            if folded:
                cls.log.info(
                    "folded {lines} journal lines left in {path}",
                    lines=folded,
                    path=database.path,
                )
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
        return cls(database, clock, sessions, boards, next_seq, reactor, capacity)

    def login(self, user: int) -> "bytes | Pending[bytes] | Deferred[bytes]":
        sessions = self.sessions
        if isinstance(sessions, SignedSessions):
            return sessions.issue(user)  # nothing to store
        if self._stopping:
            return fail(DatabaseError("the store is stopping"))
        if self.capacity.max_sessions:
            coming = self._users_coming
            refused = self.capacity.refuses_login(sessions, user, coming)
            if refused is not None:
                return refused
            if not sessions.has_session(user):
                coming[user] = coming.get(user, 0) + 1
        key, deadline = sessions.prepare(user)
        answer: Pending[bytes] = Pending()
        self.writer.put(
            b'L%d,"%s",%r\n' % (user, key, deadline), (answer, user, key, deadline)
        )
        return answer

    def post_score(
        self, key: bytes, level: int, score: int
    ) -> "bool | Pending[bool] | Deferred[bool]":
        user = self.sessions.user_for(key)
        if user is None:
            return False
        boards = self.boards
        if not boards.would_change(level, user, score):
            return True
        if self._stopping:
            return fail(DatabaseError("the store is stopping"))
        if self.capacity.max_levels:
            coming = self._levels_coming
            refused = self.capacity.refuses_level(boards, level, coming)
            if refused is not None:
                return refused
            if level not in boards:
                coming[level] = coming.get(level, 0) + 1
        seq = self._next_seq
        self._next_seq = seq + 1
        answer: Pending[bool] = Pending()
        self.writer.put(
            b"S%d,%d,%d,%d\n" % (level, user, score, seq),
            (answer, level, user, score, seq),
        )
        return answer

    def high_score_list(self, level: int) -> bytes:
        return self.boards.body(level)

    def healthy(self) -> bool:
        """
        Whether the store takes writes: not stopping, and its writer process
        could be started (a writer that died is replaced on the next write).
        """
        return not self._stopping and not self.writer.failed_to_start

    def stop(self) -> "Deferred[None]":
        """
        Refuse new writes, commit and answer the queued ones, end the
        writer process, close the database; fires once all of that is done.
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
                "largest batch {largest}, {spawned} writer processes",
                path=self._database.path,
                writes=writer.committed,
                commits=writer.commits,
                largest=writer.largest,
                spawned=writer.spawned,
            )

        return self.writer.stop().addCallback(release)

    def _committed(self, batch: list[_Write], error: Exception | None) -> None:
        if self._users_coming or self._levels_coming:
            for write in batch:
                # Landed or failed, a write no longer adds a user or a level.
                if len(write) == 5:
                    _settle(self._levels_coming, write[1])
                else:
                    _settle(self._users_coming, write[1])
        if error is not None:
            self.log.error(
                "commit of {count} writes to {path} failed: {error}",
                count=len(batch),
                path=self._database.path,
                error=_reason(error),
            )
            for write in batch:
                write[0].fail(error)
            return
        # Apply the whole batch, then answer it: in commit order either way.
        record = self.boards.record
        sessions = self.sessions
        for write in batch:
            if len(write) == 5:
                _, level, user, score, seq = write
                record(level, user, score, seq)
            else:
                _, user, key, deadline = write
                assert isinstance(sessions, StoredSessions)
                sessions.admit(user, key, deadline)
        for write in batch:
            write[0].fire(True if len(write) == 5 else write[2])


def _settle(coming: dict[int, int], item: int) -> None:
    count = coming.get(item)
    if count is not None:
        if count > 1:
            coming[item] = count - 1
        else:
            del coming[item]


def _load_journal(connection: sqlite3.Connection, what: str) -> int:
    # Folded in bounded steps, each one transaction that applies its rows
    # and deletes them: a crash in between leaves the rest for next time.
    total = 0
    try:
        while folded := durable_writer.fold(connection, None, LOAD_FOLD_LINES):
            total += folded
    except ValueError as e:
        # The writer lets no such line in: the file was altered.
        raise DatabaseError(f"cannot read {what}: {_reason(e)}") from e
    return total


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
