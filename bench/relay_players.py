"""
How many relay players one server process holds: p99 latency per player count.

For each count N, starts gameserver on a free port of 127.0.0.1 and runs
C{gameserver-stress} with N relay players at 5 requests a second each for a
fixed time, then prints the achieved rate, p50/p99 latency, the worst request
kind's p99, errors, and the server's CPU use; last, the largest N whose p99
stayed under the bound with no errors.

    python bench/relay_players.py [--players 1000,2000,3000,4000] [--duration 10]

With C{--redis}, each count runs a second time with the relay in a fresh
private C{redis-server} (C{gameserver --redis}), and prints the ratio of its
rate and p99 to the in-memory run's.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from scores_mix import ROOT, free_port, gameserver, redis_server, server


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    players: int, duration: float, connections: int, redis: str | None = None
) -> dict[str, float]:
    port = free_port()
    report = os.path.join(tempfile.mkdtemp(prefix="gameserver-relay-"), "run.json")
    argv = gameserver(port) + ([] if redis is None else ["--redis", redis])
    with server(argv, port) as pid:
        if redis is not None:
            time.sleep(0.5)  # the Redis connection is made in the background
        before = cpu_seconds(pid)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gameserver.stress",
                "--url",
                f"http://127.0.0.1:{port}",
                "--scores-players",
                "0",
                "--relay-players",
                str(players),
                "--connections",
                str(connections),
                "--duration",
                str(duration),
                "--seed",
                "1",
                "--json",
                report,
            ],
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=duration + 120,
        )
        used = cpu_seconds(pid) - before
    with open(report) as f:
        figures = json.load(f)
    kinds = figures["kinds"]
    overall = figures["total"]["latency_ms"]
    worst = max(float(kind["latency_ms"]["p99"]) for kind in kinds.values())
    return {
        "achieved": float(figures["achieved_rps"]),
        "p50": float(overall["p50"]),
        "p99": float(overall["p99"]),
        "worst_kind_p99": worst,
        "errors": float(figures["errors"]),
        "server_cpu": used / duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", default="1000,2000,3000,4000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--p99-bound-ms", type=float, default=50.0)
    parser.add_argument(
        "--redis", action="store_true", help="also run with the relay in Redis"
    )
    args = parser.parse_args()
    best = {"memory": 0, "redis": 0}
    for players in (int(n) for n in args.players.split(",")):
        results = {"memory": run(players, args.duration, args.connections)}
        if args.redis:
            with redis_server() as (url, _):
                results["redis"] = run(players, args.duration, args.connections, url)
        for store, r in results.items():
            ratio = ""
            if store == "redis":
                memory = results["memory"]
                ratio = (
                    f"  (x{r['achieved'] / memory['achieved']:.2f} rate, "
                    f"x{r['p99'] / memory['p99']:.1f} p99 of memory)"
                )
            print(
                f"{store:6s} {players:6d} relay players at 5 req/s: "
                f"{r['achieved']:8.0f} req/s  "
                f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                f"(worst kind p99 {r['worst_kind_p99']:6.2f} ms)  "
                f"errors {r['errors']:.0f}  server CPU {100 * r['server_cpu']:.0f}%"
                + ratio,
                flush=True,
            )
            if r["p99"] < args.p99_bound_ms and not r["errors"]:
                best[store] = max(best[store], players)
    for store in results:
        print(
            f"{store}: largest count with p99 under {args.p99_bound_ms:g} ms "
            f"and no errors: {best[store]}"
        )


if __name__ == "__main__":
    main()
