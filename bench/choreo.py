#!/usr/bin/env python3
"""bench/choreo.py - choreographed sagas (src/tx/choreo.c): keel-example-choreo's
order -> reserve -> charge chain on a fresh 3-node keel cluster, three participant processes.

  BUILD=build python3 bench/choreo.py [--orders 2000] [--rate-orders 500] [--rate 50]

  - paced: orders created at --rate per second on the order service's loop; per saga, the
    time from the order's commit to its confirm or cancel (both in the order service's
    ledger, one clock): p50/p99/max;
  - burst: --orders created at once at start; sagas ended per second (first create to last
    confirm or cancel).
Every fourth order is refused at the charge, so a quarter of the sagas run two compensations
(five events instead of four). Each run checks that every saga ended.
"""

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tx import start_cluster, stop  # noqa: E402 (the same cluster helper as bench/tx.py)

BUILD = os.environ.get("BUILD", "build")
FAIL_EVERY = 4


def run(base, addrs, tag, orders, rate):
    d = tempfile.mkdtemp(dir=base)
    stream = f"choreo:{tag}"
    exe = os.path.join(BUILD, "keel-example-choreo")
    ps = []
    for role, extra in (("stock", []), ("payment", ["--fail-every", str(FAIL_EVERY)]),
                        ("order", ["--orders", str(orders), "--rate", str(rate)])):
        ps.append(subprocess.Popen([exe, "--role", role, "--db", os.path.join(d, f"{role}.db"),
                                    "--servers", addrs, "--stream", stream, *extra],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    db = os.path.join(d, "order.db")
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                c = sqlite3.connect(db, timeout=10)
                n = c.execute("SELECT COUNT(*) FROM orders WHERE state != 'pending'").fetchone()[0]
                c.close()
            except sqlite3.OperationalError:
                n = 0
            if n == orders:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tag}: {n} of {orders} sagas ended")
            time.sleep(0.2)
        c = sqlite3.connect(db)
        rows = c.execute("SELECT saga, effect, at_unix_ms FROM ledger").fetchall()
        c.close()
    finally:
        for p in ps:
            p.terminate()
        for p in ps:
            p.wait(10)
    created = {s: t for s, e, t in rows if e == "create"}
    ended = {s: t for s, e, t in rows if e in ("confirm", "cancel")}
    lat = sorted(ended[s] - created[s] for s in created)
    return lat, min(created.values()), max(ended.values())


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--rate-orders", type=int, default=500)
    ap.add_argument("--rate", type=int, default=50)
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="keel-bench-choreo-")
    procs, addrs, _ = start_cluster(base, 3)
    try:
        lat, _, _ = run(base, addrs, "paced", a.rate_orders, a.rate)
        print(f"paced {a.rate}/s, {a.rate_orders} sagas: saga latency p50 {pct(lat, 50)} ms "
              f"p99 {pct(lat, 99)} ms max {lat[-1]} ms mean {statistics.mean(lat):.1f} ms")
        lat, t0, t1 = run(base, addrs, "burst", a.orders, 0)
        print(f"burst, {a.orders} sagas: {a.orders * 1000 / max(1, t1 - t0):.0f} sagas/s "
              f"({t1 - t0} ms from the first create to the last end); latency p50 "
              f"{pct(lat, 50)} ms p99 {pct(lat, 99)} ms (queueing included)")
    finally:
        stop(procs)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
