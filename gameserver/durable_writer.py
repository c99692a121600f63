"""
The writer process of the durable store: C{python -m gameserver.durable_writer
PATH}, spawned by L{gameserver.durable.DurableScores}.

It reads writes from stdin, one line each, and commits them in batches:

    S<level>,<user>,<score>,<seq>       a score entering a level's top list
    L<user>,"<key>",<deadline>          a stored-mode login (the user's key)

Each batch is everything available on stdin when the previous commit
finished (group commit: one sync for all of it), at most L{MAX_BATCH} lines,
in one transaction.  After each batch it writes one line to stdout:

    <count> <seconds>                   the next count lines are committed;
                                        the transaction took that long
    E <count> <message>                 the next count lines failed; nothing
                                        of them is in the file

A batch is committed as one row of the C{journal} table (its lines, as they
came): one row appended per commit writes a page or two to the log, where
updating C{scores} and C{sessions} in place would touch a B-tree page per
write.  L{fold} applies journal rows to those tables and deletes them, in
one transaction: after an acknowledgement once the journal holds
L{FOLD_LINES} lines, when stdin has been quiet for L{IDLE_FOLD} seconds, and
at end of file; the server's loader folds what a crash left.

It exits on end of file on stdin: the server closed it (a clean stop, after
which everything is folded and the journal is empty) or died.  A batch (or
fold) whose transaction had begun when the server died is finished; lines
after it are not committed, so that a restarted server, which waits for that
transaction when it loads, never misses a later one.

Only the standard library is imported: the process starts on the server's
first write, and every millisecond of start-up delays that write.
"""

import contextlib
import os
import re
import select
import signal
import sqlite3
import sys
import time
from collections.abc import Callable

# Most writes in one transaction: bounds the latency a huge backlog adds to
# the requests at its end, and the memory of one batch.
MAX_BATCH = 4096
# Bytes taken from the pipe in one read (more than a pipe holds).
READ_SIZE = 1 << 20
# Fold once the journal holds this many lines: a fold of 1024 lines takes
# about 4 ms, paid by the batch that waits behind it, once every 75 or so
# commits.  Larger folds save nothing measurable per write (see
# docs/durable.md) and pause longer.
FOLD_LINES = 1024
# Fold what the journal holds once stdin has been quiet this long (seconds).
IDLE_FOLD = 0.2
# After a failed fold (disk full, I/O error), wait this long (seconds)
# before the next attempt: the journal keeps every write meanwhile.
FOLD_RETRY = 5.0

# What the server sends, and all the journal may hold: a line the fold
# could not apply never gets in, so a fold (and a restart) cannot be stuck
# on it.  N is a number as JSON spells it (no leading zeros).
_LINE = rb'(?:SN,N,N,N|LN,"[0-9A-Za-z]*",N(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)'.replace(
    b"N", rb"(?:0|[1-9][0-9]*)"
)
_LINES = re.compile(_LINE + rb"(?:\n" + _LINE + rb")*")

# A fold goes in as one JSON array per table, so that it costs a handful of
# statements however many lines it holds.  Rows apply in array (arrival)
# order, which the ORDER BY makes explicit: a later login of a user replaces
# the earlier one, and a score replaces a user's entry only if it is higher
# (on a tie the entry that was there first stays).
UPSERT_SCORES = """
    INSERT INTO scores (level, user, score, seq)
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3
    FROM json_each(?) WHERE true ORDER BY key
    ON CONFLICT (level, user) DO UPDATE SET score = excluded.score,
    seq = excluded.seq WHERE excluded.score > scores.score
"""
REPLACE_SESSIONS = """
    INSERT OR REPLACE INTO sessions (user, key, deadline)
    SELECT value ->> 0, CAST(value ->> 1 AS BLOB), value ->> 2
    FROM json_each(?) ORDER BY key
"""
# The lines the journal holds: a row holds one more line than newlines.
COUNT_LINES = """
    SELECT coalesce(sum(length(lines) - length(replace(lines, X'0A', X''))
    + 1), 0) FROM journal
"""


def connect(path: str) -> sqlite3.Connection:
    """
    A connection for writing: autocommit mode (transactions are explicit),
    WAL, and a sync on every commit.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 10000")
    connection.execute("PRAGMA journal_mode = WAL")
    # FULL in WAL mode: every COMMIT syncs the log, so a commit that
    # returned survives a crash or a power cut.
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def _json_rows(rows: list[bytes]) -> str:
    # Each line is the inside of a JSON array already.
    return (b"[[" + b"],[".join(rows) + b"]]").decode("ascii")


def write_batch(
    connection: sqlite3.Connection, lines: list[bytes], parent: int
) -> bool:
    """
    Commit C{lines} as one journal row in one transaction; return L{False}
    (committing nothing) if the process C{parent} is no longer this
    process's parent.

    @raise ValueError: a line is not a well-formed score or login; nothing
        is committed.
    """
    data = b"\n".join(lines)
    if _LINES.fullmatch(data) is None:
        raise ValueError("a line of unknown kind or form")

    def append() -> int:
        connection.execute("INSERT INTO journal (lines) VALUES (?)", (data,))
        return len(lines)

    return _as_child_of(parent, connection, append) is not None


def _as_child_of(
    parent: int | None, connection: sqlite3.Connection, work: Callable[[], int]
) -> int | None:
    """
    Run C{work} in one C{BEGIN IMMEDIATE} transaction and commit; return
    L{None}, running nothing, if C{parent} is given and is no longer this
    process's parent.  Anything raised rolls the transaction back.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Checked holding the write lock: a restarted server's load waits
        # for this transaction, or this one sees that the server died (and
        # writes nothing more: the restarted server's loader folds the rest).
        if parent is not None and os.getppid() != parent:
            connection.execute("ROLLBACK")
            return None
        result = work()
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


def apply(connection: sqlite3.Connection, lines: list[bytes]) -> None:
    """
    Apply C{lines} to the C{scores} and C{sessions} tables, in order, inside
    the caller's transaction.

    @raise ValueError: a line of unknown kind; the caller rolls back.
    """
    scores = [line[1:] for line in lines if line[:1] == b"S"]
    sessions = [line[1:] for line in lines if line[:1] == b"L"]
    if len(scores) + len(sessions) != len(lines):
        raise ValueError("a journal line of unknown kind")
    # The two tables are independent: only the order within each matters.
    if scores:
        connection.execute(UPSERT_SCORES, (_json_rows(scores),))
    if sessions:
        connection.execute(REPLACE_SESSIONS, (_json_rows(sessions),))


def fold(
    connection: sqlite3.Connection,
    parent: int | None = None,
    limit: int | None = None,
) -> int | None:
    """
    Apply the journal's rows, oldest first, to the tables and delete them,
    in one transaction: all of them, or the oldest ones up to the first
    that brings the count of lines to C{limit}.  Return how many lines were
    applied (0: the journal was empty), or L{None}, applying nothing, if
    C{parent} is given and is no longer this process's parent.
    """

    def apply_oldest() -> int:
        rows: list[bytes] = []
        count = 0
        last = 0
        cursor = connection.execute("SELECT id, lines FROM journal ORDER BY id")
        for key, data in cursor:
            last = key
            rows.append(data)
            count += data.count(b"\n") + 1
            if limit is not None and count >= limit:
                break
        cursor.close()
        if rows:
            apply(connection, b"\n".join(rows).split(b"\n"))
            connection.execute("DELETE FROM journal WHERE id <= ?", (last,))
        return count

    return _as_child_of(parent, connection, apply_oldest)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _say(line: bytes) -> None:
    view = memoryview(line)
    while view:
        view = view[os.write(1, view) :]


class _Journal:
    """
    This process's connection, and when to fold the journal.
    """

    def __init__(self, path: str, parent: int) -> None:
        self.path = path
        self.parent = parent
        self.connection: sqlite3.Connection | None = None
        # Lines in the journal, as far as this process knows.
        self.lines = 0
        # No fold before this time (monotonic): one failed recently.
        self.retry = 0.0

    def open(self) -> sqlite3.Connection:
        connection = self.connection
        if connection is None:
            connection = self.connection = connect(self.path)
            # Usually 0 (the loader folded everything), but a writer of
            # this server that died may have left rows.
            self.lines = max(self.lines, connection.execute(COUNT_LINES).fetchone()[0])
        return connection

    def close(self) -> None:
        # After a full disk or an I/O error, trust nothing of this
        # connection: start afresh with the next batch.
        if self.connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self.connection.close()
            self.connection = None

    def write(self, batch: list[bytes]) -> bool:
        """
        Commit C{batch}; L{False} if the parent is gone.
        """
        if not write_batch(self.open(), batch, self.parent):
            return False
        self.lines += len(batch)
        return True

    def due(self) -> bool:
        """
        Whether the journal should be folded when the writer is idle.
        """
        return self.lines > 0 and time.monotonic() >= self.retry

    def fold(self) -> bool:
        """
        Fold the journal if it holds anything; L{False} if the parent is
        gone.  A failure is reported on stderr (the server logs it) and
        retried later: the rows stay in the journal.
        """
        if self.lines <= 0:
            return True
        try:
            if fold(self.open(), self.parent) is None:
                return False
        except Exception as e:
            self.close()
            self.retry = time.monotonic() + FOLD_RETRY
            # Retried later (or by the next start): the rows stay.
            _complain(b"fold failed, the journal keeps its rows: %s\n" % _text(e))
        else:
            self.lines = 0
        return True


def _text(error: BaseException) -> bytes:
    return _reason(error).encode("utf-8", "replace")


def _complain(line: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(2, line)


def _quiet(seconds: float) -> bool:
    """
    Whether stdin stays without data (or end of file) for C{seconds}.
    """
    return not select.select([0], [], [], seconds)[0]


def run(path: str, parent: int) -> None:
    """
    Commit batches from stdin until end of file (or the parent's death),
    folding the journal as it goes and at the end.
    """
    journal = _Journal(path, parent)
    rest = b""
    eof = False
    try:
        while not eof:
            if journal.due() and _quiet(IDLE_FOLD):
                # Nothing to commit: a good moment to fold.
                if not journal.fold():
                    return
                continue
            data = os.read(0, READ_SIZE)  # blocks for the first line
            if not data:
                break
            chunks = [rest, data]
            # Then whatever else is already there, without waiting.
            while select.select([0], [], [], 0)[0]:
                more = os.read(0, READ_SIZE)
                if not more:
                    eof = True
                    break
                chunks.append(more)
            data = b"".join(chunks)
            cut = data.rfind(b"\n") + 1
            # A partial last line waits for its end (or is dropped at end
            # of file: the server died writing it, nobody waits for it).
            rest = data[cut:]
            lines = data[:cut].split(b"\n")
            del lines[-1]
            for start in range(0, len(lines), MAX_BATCH):
                batch = lines[start : start + MAX_BATCH]
                started = time.perf_counter()
                try:
                    if not journal.write(batch):
                        return
                except Exception as e:
                    journal.close()
                    _say(b"E %d %s\n" % (len(batch), _text(e)))
                else:
                    # The count, and how long the transaction took.
                    elapsed = time.perf_counter() - started
                    _say(b"%d %.6f\n" % (len(batch), elapsed))
                # Only after the acknowledgement: the fold delays the next
                # batch, never this one.
                full = journal.lines >= FOLD_LINES
                if full and journal.due() and not journal.fold():
                    return
        # End of file: a clean stop leaves an empty journal (a server that
        # died leaves it to its successor's loader: the fold sees the
        # parent gone).
        journal.retry = 0.0
        journal.fold()
    except BrokenPipeError:
        pass  # the server is gone: nobody to acknowledge to
    finally:
        journal.close()


def main() -> None:
    # Stop on the server's word (end of file), not on a signal sent to its
    # whole process group or control group (Ctrl-C, systemd's SIGTERM): the
    # server still has batches to hand over then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gameserver.durable_writer PATH")
    run(sys.argv[1], os.getppid())


if __name__ == "__main__":
    main()
