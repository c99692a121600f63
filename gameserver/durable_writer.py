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

It exits on end of file on stdin: the server closed it (a clean stop) or
died.  A batch whose transaction had begun when the server died is
finished; lines after it are not committed, so that a restarted server,
which waits for that transaction when it loads, never misses a later one.

Only the standard library is imported: the process starts on the server's
first write, and every millisecond of start-up delays that write.
"""

import contextlib
import os
import select
import signal
import sqlite3
import sys
import time

# Most writes in one transaction: bounds the latency a huge backlog adds to
# the requests at its end, and the memory of one batch.
MAX_BATCH = 4096
# Bytes taken from the pipe in one read (more than a pipe holds).
READ_SIZE = 1 << 20

# A batch goes in as one JSON array per table, so that a whole batch costs a
# handful of statements.  Rows apply in array (arrival) order, which the
# ORDER BY makes explicit.
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
    Commit C{lines} in one transaction; return L{False} (committing nothing)
    if the process C{parent} is no longer this process's parent.
    """
    scores = [line[1:] for line in lines if line[:1] == b"S"]
    sessions = [line[1:] for line in lines if line[:1] == b"L"]
    if len(scores) + len(sessions) != len(lines):
        raise ValueError("a line of unknown kind")
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Checked holding the write lock: a restarted server's load waits
        # for this transaction, or this one sees that the server died.
        if os.getppid() != parent:
            connection.execute("ROLLBACK")
            return False
        if scores:
            connection.execute(UPSERT_SCORES, (_json_rows(scores),))
        if sessions:
            connection.execute(REPLACE_SESSIONS, (_json_rows(sessions),))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return True


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _say(line: bytes) -> None:
    view = memoryview(line)
    while view:
        view = view[os.write(1, view) :]


def run(path: str, parent: int) -> None:
    """
    Commit batches from stdin until end of file (or the parent's death).
    """
    connection: sqlite3.Connection | None = None
    rest = b""
    eof = False
    try:
        while not eof:
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
                    if connection is None:
                        connection = connect(path)
                    if not write_batch(connection, batch, parent):
                        return
                except Exception as e:
                    # After a full disk or an I/O error, trust nothing of
                    # this connection: start afresh with the next batch.
                    if connection is not None:
                        with contextlib.suppress(sqlite3.Error):
                            connection.close()
                        connection = None
                    message = _reason(e).encode("utf-8", "replace")
                    _say(b"E %d %s\n" % (len(batch), message))
                else:
                    # The count, and how long the transaction took.
                    elapsed = time.perf_counter() - started
                    _say(b"%d %.6f\n" % (len(batch), elapsed))
    except BrokenPipeError:
        pass  # the server is gone: nobody to acknowledge to
    finally:
        if connection is not None:
            connection.close()


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
