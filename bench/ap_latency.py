#!/usr/bin/python3
"""ap_latency.py - the cost of each consistency choice on one 3-node keel server cluster:
KEEL.AP.PUT (a new key each, so no siblings pile up) / GET at W/R = ONE, QUORUM and ALL against the Raft keyspace's SET / GET (a
linearizable write through the log; a ReadIndex read), one client, one request at a time,
p50 and p99 in microseconds.

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_latency.py [requests per row]
Starts its own cluster on 127.0.0.1 in a temporary directory and stops it at the end;
every row is bounded to 30 s.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster  # noqa: E402

ROW_S_MAX = 30.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def row(name, fn, n):
    lat = []
    end = time.monotonic() + ROW_S_MAX
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        lat.append((time.perf_counter_ns() - t) / 1000)
        if time.monotonic() > end:
            break
    print(f"| {name} | {len(lat)} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} |", flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    exe = os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel")
    with tempfile.TemporaryDirectory() as d:
        cl = Cluster(exe, d, 3, ["--wal-segment-bytes", "17m"])
        try:
            cl.start()
            cl.wait_leader()
            c = cl.nodes[1].client()  # a follower: any node coordinates AP requests
            deadline = time.monotonic() + 10
            while True:
                try:
                    if c.execute_command("KEEL.AP.PUT", "warm", "x", "W", "ALL") == 3:
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
            v = "x" * 100
            print("| request (100-byte values, node n2) | requests | p50 us | p99 us |")
            print("|---|---|---|---|")
            for lvl in ("ONE", "QUORUM", "ALL"):
                row(f"KEEL.AP.PUT W={lvl}", lambda i: c.execute_command(
                    "KEEL.AP.PUT", f"{lvl}{i}", v, "W", lvl), n)
            for lvl in ("ONE", "QUORUM", "ALL"):
                row(f"KEEL.AP.GET R={lvl}", lambda i: c.execute_command(
                    "KEEL.AP.GET", f"ONE{i}", "R", lvl), n)
            row("SET (Raft, forwarded to the leader)", lambda i: c.set(f"r{i % 100}", v), n)
            row("GET (Raft, ReadIndex)", lambda i: c.get(f"r{i % 100}"), n)
        finally:
            cl.kill_all()


if __name__ == "__main__":
    main()
