"""
Start-up time of the durable store: a database with a million live sessions
and a hundred thousand levels, each with a full top-15 list, opened and
loaded as C{twistd gameserver --database PATH} does.

    python bench/durable_startup.py [--sessions 1000000] [--levels 100000]
        [--path /tmp/gameserver-startup.db] [--keep]

Prints the time to build the file (not part of start-up), to open and
validate it (C{open_database}: schema, a synced write, C{PRAGMA
quick_check}), and to load it (C{DurableScores.load}), with the file size
and the growth of the process's resident set.
"""

import argparse
import os
import resource
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet.task import Clock  # noqa: E402

from gameserver import keys  # noqa: E402
from gameserver.durable import (  # noqa: E402
    DurableScores,
    open_database,
)
from gameserver.leaderboard import LIST_LENGTH  # noqa: E402
from gameserver.sessions import StoredSessions  # noqa: E402


def resident_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: str, sessions: int, levels: int, ttl: float, now: float) -> None:
    """
    Fill a fresh database at C{path} through the real schema.
    """
    open_database(path).close()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO sessions (user, key, deadline) VALUES (?, ?, ?)",
        (
            (user, keys.random_key(), now + ttl * (1 + (user + 1) / sessions) / 2)
            for user in range(sessions)
        ),
    )
    connection.executemany(
        "INSERT INTO scores (level, user, score, seq) VALUES (?, ?, ?, ?)",
        (
            (level, user, 1000 + (level * 7919 + user * 104729) % 1000000, seq)
            for seq, (level, user) in enumerate(
                (level, user) for level in range(levels) for user in range(LIST_LENGTH)
            )
        ),
    )
    connection.execute("COMMIT")
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=100_000)
    parser.add_argument("--path", default="/tmp/gameserver-startup.db")
    parser.add_argument("--keep", action="store_true", help="keep the file")
    args = parser.parse_args()
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(args.path + suffix):
            os.remove(args.path + suffix)

    ttl = 600.0
    now = time.time()
    started = time.perf_counter()
    build(args.path, args.sessions, args.levels, ttl, now)
    built = time.perf_counter()
    size = os.path.getsize(args.path) / 2**20
    print(
        f"built {args.sessions} sessions and {args.levels} levels "
        f"x {LIST_LENGTH} entries in {built - started:.1f} s ({size:.0f} MiB)"
    )

    before = resident_mib()
    started = time.perf_counter()
    database = open_database(args.path)
    opened = time.perf_counter()
    clock = Clock()
    clock.advance(time.time())
    scores = DurableScores.load(database, clock, "stored", ttl)
    loaded = time.perf_counter()
    assert isinstance(scores.sessions, StoredSessions)
    print(f"open_database (validate, quick_check): {opened - started:.2f} s")
    print(f"DurableScores.load: {loaded - opened:.2f} s")
    print(
        f"start-up total: {loaded - started:.2f} s; "
        f"{len(scores.boards)} levels, {len(scores.sessions)} live sessions; "
        f"resident set +{resident_mib() - before:.0f} MiB"
    )
    database.close()
    if not args.keep:
        for suffix in ("", "-wal", "-shm", ".lock"):
            if os.path.exists(args.path + suffix):
                os.remove(args.path + suffix)


if __name__ == "__main__":
    main()
