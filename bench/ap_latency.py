#!/usr/bin/python3
"""ap_latency.py - the cost of each consistency choice on one 3-node keel server cluster:
KEEL.AP.PUT (a new key each, so no siblings pile up) / GET at W/R = ONE, QUORUM and ALL against the Raft keyspace's SET / GET (a
linearizable write through the log; a ReadIndex read), one client, one request at a time,
p50 and p99 in microseconds. Then KEEL.AP.PUT at W=QUORUM from several clients at once (each
its own connection to n2, fresh keys): throughput, p50, p99, and the fdatasyncs of the three
AP stores per write (keel_ap_store_fdatasyncs: a replica's writes of one loop turn share one).

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_latency.py [requests per row] [clients]
Starts its own cluster on 127.0.0.1 in a temporary directory and stops it at the end;
every row is bounded to 30 s.
"""

import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster, http_get  # noqa: E402

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


def fdatasyncs(nodes):
    total = 0
    for nd in nodes:
        _, body, _ = http_get(nd.http_port, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith("keel_ap_store_fdatasyncs "):
                total += int(float(line.split()[-1]))
    return total


def concurrent(cl, lvl, n, clients, v):
    """n PUTs at W=lvl from `clients` connections to n2 at once, each bounded to ROW_S_MAX."""
    lat, lock = [], threading.Lock()
    end = time.monotonic() + ROW_S_MAX

    def work(t):
        c, mine = cl.nodes[1].client(), []
        for i in range(n // clients):
            t0 = time.perf_counter_ns()
            c.execute_command("KEEL.AP.PUT", f"c{lvl}{clients}-{t}-{i}", v, "W", lvl)
            mine.append((time.perf_counter_ns() - t0) / 1000)
            if time.monotonic() > end:
                break
        with lock:
            lat.extend(mine)

    time.sleep(0.1)  # the gauges are set every 20 ms tick
    syncs = fdatasyncs(cl.nodes)
    ts = [threading.Thread(target=work, args=(t,)) for t in range(clients)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    time.sleep(0.1)
    syncs = fdatasyncs(cl.nodes) - syncs
    print(
        f"| KEEL.AP.PUT W={lvl}, {clients} clients | {len(lat)} | {len(lat) / wall:.0f} | "
        f"{pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | {syncs / len(lat):.2f} |",
        flush=True,
    )


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 8
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
            print()
            print("| request (100-byte values, node n2) | requests | per s | p50 us | p99 us | "
                  "fdatasyncs per write (3 nodes) |")
            print("|---|---|---|---|---|---|")
            concurrent(cl, "QUORUM", n, 1, v)
            concurrent(cl, "QUORUM", n, clients, v)
        finally:
            cl.kill_all()


if __name__ == "__main__":
    main()
