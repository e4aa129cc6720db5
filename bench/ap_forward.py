#!/usr/bin/python3
"""ap_forward.py - what forwarding a write to a home costs, and what it saves, on a 5-node keel
server cluster (docs/ap.md, "Forwarding"). One client on n1, one request at a time, 100-byte
values, a fresh key per PUT: KEEL.AP.PUT at W=ONE and W=QUORUM to keys n1 is a home of (n1
coordinates) and to keys it is not (n1 hands the write to a home), p50 and p99 in
microseconds; then how many AP keys each node holds against how many it is a home of (a node
that coordinates writes of keys it is not a home of keeps those copies for good).

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_forward.py [requests per row]
Starts its own cluster on 127.0.0.1 in a temporary directory and stops it at the end; every
row is bounded to 30 s. Runs on a build without forwarding too (the non-home rows are then
coordinated by n1 itself).
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster, http_get  # noqa: E402

ROW_S_MAX = 30.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def metric(nd, name):
    _, body, _ = http_get(nd.http_port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[-1]))
    return 0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    exe = os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel")
    with tempfile.TemporaryDirectory() as d:
        cl = Cluster(exe, d, 5, ["--wal-segment-bytes", "17m"])
        try:
            cl.start()
            cl.wait_leader()
            c = cl.nodes[0].client()
            deadline = time.monotonic() + 20
            for i in range(20):  # every node reaches every other
                while True:
                    try:
                        if c.execute_command("KEEL.AP.GET", f"warm{i}", "R", "ALL")[0] == 3:
                            break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                    time.sleep(0.05)
            # fresh keys, sorted by whether n1 is one of their homes
            mine, other, homes_of = [], [], {}
            i = 0
            while len(mine) < 2 * n or len(other) < 2 * n:
                k = f"k{i}"
                i += 1
                homes = [h.decode() for h in c.execute_command("KEEL.AP.WHERE", k)[0]]
                homes_of[k] = homes
                (mine if "n1" in homes else other).append(k)
            v = "x" * 100
            used = []
            print("| request (100-byte values, client on n1) | requests | p50 us | p99 us |")
            print("|---|---|---|---|")
            for lvl in ("ONE", "QUORUM"):
                for label, keys in (("n1 a home", mine), ("n1 not a home", other)):
                    lat, end = [], time.monotonic() + ROW_S_MAX
                    for j in range(n):
                        k = keys.pop()
                        used.append(k)
                        t = time.perf_counter_ns()
                        c.execute_command("KEEL.AP.PUT", k, v, "W", lvl)
                        lat.append((time.perf_counter_ns() - t) / 1000)
                        if time.monotonic() > end:
                            break
                    print(f"| KEEL.AP.PUT W={lvl}, {label} | {len(lat)} | "
                          f"{pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} |", flush=True)
            time.sleep(3)  # W=ONE and QUORUM writes reach the third home meanwhile
            print()
            print("| node | AP keys held | keys it is a home of | writes forwarded |")
            print("|---|---|---|---|")
            for nd in cl.nodes:
                home = sum(1 for k in used if nd.name in homes_of[k])
                print(f"| {nd.name} | {metric(nd, 'keel_ap_keys')} | {home} | "
                      f"{metric(nd, 'keel_ap_writes_forwarded_total')} |", flush=True)
        finally:
            cl.kill_all()


if __name__ == "__main__":
    main()
