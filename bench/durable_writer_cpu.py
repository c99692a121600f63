"""
CPU of the durable writer per write: batches committed as journal rows and
folded every FOLD_LINES lines (this release), against the same batches
upserted straight into the tables (the previous release's writer, the
baseline), in one process on a fresh database each run.

    python bench/durable_writer_cpu.py [--writes 42000] [--batch 14]
        [--fold 1024,2048,4096] [--rounds 2]

Prints, per variant, the writer's user and system CPU per write (getrusage,
folds included), the wall time per commit, and the folds' count, median and
longest pause (what the batch waiting behind a fold is delayed by).  Runs
alternate between the variants, one round after another.  Single process,
no server: the figures are the writer's own cost, with a real sync per
commit.
"""

import argparse
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from gameserver import durable_writer  # noqa: E402
from gameserver.durable import open_database  # noqa: E402


def batches(writes: int, size: int) -> list[list[bytes]]:
    """
    The scores mix's writes: 30% logins of new users, 70% scores over
    1000 levels.
    """
    rng = random.Random(1)
    seq = user = 0
    out = []
    for _ in range(writes // size):
        batch = []
        for _ in range(size):
            if rng.random() < 0.3:
                user += 1
                key = "".join(rng.choice("abcdefghXYZ0123") for _ in range(22))
                batch.append(b'L%d,"%s",%r' % (user, key.encode(), time.time() + 600))
            else:
                seq += 1
                batch.append(
                    b"S%d,%d,%d,%d"
                    % (
                        rng.randrange(1000),
                        rng.randrange(1, user + 2),
                        rng.randrange(10**6),
                        seq,
                    )
                )
        out.append(batch)
    return out


def upsert(connection: sqlite3.Connection, batch: list[bytes], parent: int) -> None:
    # The previous release's write_batch: the same statements, per batch.
    connection.execute("BEGIN IMMEDIATE")
    if os.getppid() != parent:
        raise SystemExit("parent gone")
    durable_writer.apply(connection, batch)
    connection.execute("COMMIT")


def prefill(path: str, sessions: int, levels: int) -> None:
    """
    Sessions of users beyond the workload's, and full lists on its levels:
    the tables of a server that has run a while.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO sessions VALUES (?, ?, ?)",
        ((10**9 + n, b"k" * 22, time.time() + 600) for n in range(sessions)),
    )
    connection.executemany(
        "INSERT INTO scores VALUES (?, ?, ?, ?)",
        (
            (level, 10**9 + n, 10**6 + n, -1 - level * 15 - n)
            for level in range(levels)
            for n in range(15)
        ),
    )
    connection.execute("COMMIT")
    connection.close()


def run(
    work: list[list[bytes]], fold_lines: int | None, sessions: int
) -> dict[str, float]:
    """
    Commit C{work} on a fresh database (holding C{sessions} other sessions
    and full lists): journal rows folded every C{fold_lines} lines, or
    direct upserts if L{None}.
    """
    directory = tempfile.mkdtemp(prefix="writer-cpu-")
    try:
        path = os.path.join(directory, "game.db")
        open_database(path).close()
        if sessions:
            prefill(path, sessions, 1000)
        connection = durable_writer.connect(path)
        parent = os.getppid()
        folds: list[float] = []
        lines = 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        for batch in work:
            if fold_lines is None:
                upsert(connection, batch, parent)
                continue
            durable_writer.write_batch(connection, batch, parent)
            lines += len(batch)
            if lines >= fold_lines:
                begun = time.perf_counter()
                durable_writer.fold(connection, parent)
                folds.append(time.perf_counter() - begun)
                lines = 0
        if fold_lines is not None:
            durable_writer.fold(connection, parent)  # as at a clean stop
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        connection.close()
    finally:
        shutil.rmtree(directory)
    writes = sum(map(len, work))
    return {
        "user": (after.ru_utime - before.ru_utime) / writes * 1e6,
        "sys": (after.ru_stime - before.ru_stime) / writes * 1e6,
        "commit": wall / len(work) * 1e3,
        "folds": len(folds),
        "median": statistics.median(folds) * 1e3 if folds else 0.0,
        "longest": max(folds, default=0.0) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=42000)
    parser.add_argument("--batch", type=int, default=14)
    parser.add_argument("--fold", default="1024,2048,4096")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="prefill this many sessions (and full lists on the 1000 levels)",
    )
    args = parser.parse_args()
    work = batches(args.writes, args.batch)
    variants: list[int | None] = [None] + [int(n) for n in args.fold.split(",")]
    results: dict[int | None, list[dict[str, float]]] = {v: [] for v in variants}

    def name(fold_lines: int | None) -> str:
        return "upsert (baseline)" if fold_lines is None else f"journal {fold_lines}"

    def show(label: str, fold_lines: int | None, r: dict[str, float]) -> None:
        print(
            f"{label} {name(fold_lines):18}: {r['user']:4.1f} us user "
            f"+ {r['sys']:4.1f} us sys per write, "
            f"{r['commit']:.3f} ms per commit; "
            f"{r['folds']:.0f} folds, median {r['median']:.1f} ms, "
            f"longest {r['longest']:.1f} ms",
            flush=True,
        )

    for number in range(args.rounds):
        for fold_lines in variants:
            r = run(work, fold_lines, args.sessions)
            results[fold_lines].append(r)
            show(f"round {number + 1}", fold_lines, r)
    for fold_lines in variants:
        runs = results[fold_lines]
        show(
            "median ",
            fold_lines,
            {k: statistics.median(r[k] for r in runs) for k in runs[0]},
        )


if __name__ == "__main__":
    main()
