"""
Resident memory per live session (each session mode) and per waiting relay
player.

Creates N live sessions (distinct users), or registers N relay players (named
like "player123456", waiting in the pool), in a fresh process per case and
prints the growth of the process's resident set size per item, next to the
baseline of the same process before any existed.

    python bench/session_memory.py [--sessions 1000000] [--relay-players 1000000]
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
if mode == "relay":
    from gameserver.relay import Relay, RelayConfig
    from gameserver.relay_wire import parse_request

    relay = Relay(clock, RelayConfig(max_players=count + 1))
    gc.collect()
    before = rss()
    for i in range(count):
        relay.handle(parse_request(b"0,player%d,*,*,*" % i))
    gc.collect()
    print(before, rss(), relay.waiting)
    raise SystemExit
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


# Issue 4's bound for a live stored session and for a waiting relay player.
GOAL = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--relay-players", type=int, default=1_000_000)
    args = parser.parse_args()
    gc.collect()
    for mode in ("stored", "signed", "relay"):
        count = args.relay_players if mode == "relay" else args.sessions
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(count)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        before, after, held = (int(x) for x in out.split())
        per = (after - before) / count
        if mode == "relay":
            what, note = "registrations", f"{held} relay players waiting for a partner"
        elif mode == "stored":
            what, note = "logins", f"{held} live sessions held by the server"
        else:
            what = "logins"
            note = "server holds nothing; growth is the benchmark's own list of keys"
        print(
            f"{mode:7} baseline RSS {before / 2**20:7.1f} MiB, "
            f"after {count} {what} {after / 2**20:7.1f} MiB: "
            f"{per:6.1f} bytes each ({note})"
            + (
                f"; goal <= {GOAL} bytes: {'met' if per <= GOAL else 'NOT met'}"
                if mode != "signed"
                else ""
            )
        )


if __name__ == "__main__":
    main()
