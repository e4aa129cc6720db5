#!/usr/bin/env python3
"""bench/tx.py - the outbox relay's throughput and the cost of idempotency keys.

  BUILD=build python3 bench/tx.py [--rows 20000] [--requests 1000]

Starts its own keel servers (1 node, then 3 nodes) in a scratch directory:
  - outbox: keel-outbox write commits N business+outbox transactions (each fsync'd:
    synchronous=FULL), then keel-outbox relay --until-idle publishes them, batch 100 and
    1000: rows/s for each, and the stream length checked; then the lag from commit to
    append with a relay running beside a writer at 1,000 rows/s;
  - idempotency: keel-example-notes --idem, sequential POST /notes on one keep-alive
    connection, without a key, with a fresh key each (claim + store: two keel writes) and
    with one key repeated (a replay: one keel write); p50/p99 in ms.
"""

import argparse
import http.client
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import redis

BUILD = os.environ.get("BUILD", "build")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def start_cluster(base, n):
    ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
    ic = ",".join(f"n{i + 1}=127.0.0.1:{p[1]}" for i, p in enumerate(ports))
    procs = []
    run = tempfile.mkdtemp(dir=base)  # a fresh cluster: its own data directories
    for i, (cp, pp, hp) in enumerate(ports):
        d = os.path.join(run, f"n{i + 1}")
        procs.append(subprocess.Popen(
            [os.path.join(BUILD, "keel"), "server", "--name", f"n{i + 1}", "--data-dir", d,
             "--listen-client", f"127.0.0.1:{cp}", "--listen-http", f"127.0.0.1:{hp}",
             "--initial-cluster", ic], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for cp, _, _ in ports:
        wait_port(cp)
    seeds = ",".join(f"127.0.0.1:{cp}" for cp, _, _ in ports)
    c = redis.Redis(port=ports[0][0])
    deadline = time.monotonic() + 10
    while True:  # a leader: a write goes through
        try:
            c.set("bench:ready", "1")
            return procs, seeds, c
        except redis.RedisError:
            if time.monotonic() > deadline:
                stop(procs)
                raise
            time.sleep(0.1)


def stop(procs):
    for p in procs:
        p.kill()
        p.wait()


def outbox(base, nodes, rows):
    procs, seeds, c = start_cluster(base, nodes)
    exe = os.path.join(BUILD, "keel-outbox")
    try:
        for batch in (100, 1000):
            db = os.path.join(base, f"o-{nodes}-{batch}.db")
            stream = f"bench.{batch}"
            t0 = time.monotonic()
            subprocess.run([exe, "write", "--db", db, "--stream", stream, "--count", str(rows)],
                           check=True, stdout=subprocess.DEVNULL)
            tw = time.monotonic() - t0
            t0 = time.monotonic()
            subprocess.run([exe, "relay", "--db", db, "--servers", seeds, "--producer", "bench",
                            "--batch", str(batch), "--until-idle"], check=True,
                           stdout=subprocess.DEVNULL)
            tr = time.monotonic() - t0
            n = c.xlen(stream)
            assert n == rows, (n, rows)
            print(f"outbox  {nodes} node(s)  batch {batch:4d}: write {rows / tw:8.0f} tx/s"
                  f"   relay {rows / tr:8.0f} rows/s   ({rows} rows, stream length {n})")
        # lag: a relay running beside a writer at a steady rate; commit time (the row's
        # created_unix_ms) to append time (the entry id's ms, keel's clock: same machine)
        db = os.path.join(base, f"lag-{nodes}.db")
        rate, count = 1000, 5000
        relay = subprocess.Popen([exe, "relay", "--db", db, "--servers", seeds, "--producer",
                                  "lag"], stdout=subprocess.DEVNULL)
        subprocess.run([exe, "write", "--db", db, "--stream", "bench.lag", "--count", str(count),
                        "--rate", str(rate)], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while c.xlen("bench.lag") < count and time.monotonic() < deadline:
            time.sleep(0.1)
        relay.terminate()
        relay.wait()
        with sqlite3.connect(db) as d:
            created = dict(d.execute("SELECT id, created_unix_ms FROM keel_outbox"))
        lags = []
        for eid, f in c.xrange("bench.lag", count=count):
            row = int(f[b"id"].split(b"/")[1])
            lags.append(int(eid.split(b"-")[0]) - created[row])
        print(f"outbox  {nodes} node(s)  lag commit -> appended at {rate} rows/s (poll 20 ms):"
              f" p50 {statistics.median(lags):.0f} ms   p99 {pct(lags, 99):.0f} ms"
              f"   max {max(lags)} ms   ({len(lags)} rows)")
    finally:
        stop(procs)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def idem(base, nodes, requests):
    procs, seeds, _ = start_cluster(base, nodes)
    port = free_port()
    notes = subprocess.Popen([os.path.join(BUILD, "keel-example-notes"), "--listen",
                              f"127.0.0.1:{port}", "--idem", seeds],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "notes.log"), "ab"))
    try:
        wait_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for label, keyf in (("no key", lambda i: None), ("fresh key", lambda i: f"k{nodes}-{i}"),
                            ("same key (replay)", lambda i: f"r{nodes}")):
            lat = []
            for i in range(requests):
                key = keyf(i)
                h = {"Idempotency-Key": key} if key else {}
                t0 = time.perf_counter()
                conn.request("POST", "/notes", body=b"bench", headers=h)
                r = conn.getresponse()
                body = r.read()
                lat.append((time.perf_counter() - t0) * 1000)
                assert r.status == 201, (r.status, body, label, i)
            print(f"idem    {nodes} node(s)  {label:18s}: p50 {statistics.median(lat):6.2f} ms"
                  f"   p99 {pct(lat, 99):6.2f} ms   ({requests} sequential POSTs)")
        conn.close()
    finally:
        notes.kill()
        notes.wait()
        stop(procs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 3])
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="keel-bench-tx-")
    try:
        for nodes in a.nodes:
            outbox(base, nodes, a.rows)
            idem(base, nodes, a.requests)
    finally:
        if os.environ.get("KEEP"):
            print(base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
