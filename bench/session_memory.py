"""
Resident memory per live session, for each session mode.

Creates N live sessions (distinct users) in a fresh process per mode and
prints the growth of the process's resident set size per session, next to
the baseline of the same process before any session existed.

    python bench/session_memory.py [--sessions 1000000]
"""

import argparse
import gc
import subprocess
import sys

CHILD = """
import gc, sys
from twisted.internet.task import Clock
from gameserver.sessions import StoredSessions, SignedSessions

def rss() -> int:
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

mode, count = sys.argv[1], int(sys.argv[2])
clock = Clock()
store = StoredSessions(clock) if mode == "stored" else SignedSessions(clock, b"s" * 32)
gc.collect()
before = rss()
keys = []
for user in range(count):
    key = store.issue(user)
    if mode == "signed":
        keys.append(key)  # clients hold signed keys; the server does not
gc.collect()
after = rss()
held = len(store) if mode == "stored" else 0
print(before, after, held)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    args = parser.parse_args()
    gc.collect()
    for mode in ("stored", "signed"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(args.sessions)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        before, after, held = (int(x) for x in out.split())
        per = (after - before) / args.sessions
        note = (
            f"{held} live sessions held by the server"
            if mode == "stored"
            else "server holds nothing; growth is the benchmark's own list of keys"
        )
        print(
            f"{mode:7} baseline RSS {before / 2**20:7.1f} MiB, "
            f"after {args.sessions} logins {after / 2**20:7.1f} MiB: "
            f"{per:6.1f} bytes per session ({note})"
        )


if __name__ == "__main__":
    main()
