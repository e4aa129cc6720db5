#!/usr/bin/python3
"""large_value.py - what one large value costs a 3-node keel server cluster (docs/server.md,
"Large values"): SETs of a value of S MiB through the leader while a few clients send small
SETs beside them.

Per size, printed:
- each big SET's time and answer (OK, or the error: UNKNOWN means the leader changed under it);
- the small SETs' p50 / p99 / max latency (ms) while the big SETs ran, and how many there were;
- per node, the longest a PING took (one PING every 5 ms on each node: the longest the node's
  loop was busy, to within 5 ms);
- the leader changes (the sum over the nodes of the changes each saw, keel_raft_leader_changes:
  3 per election on 3 nodes) and how far the term moved (0: no election).

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/large_value.py [sizes_mib] [sets] [clients]
(defaults 16,32,63 3 4). Starts its own cluster (with --value-bytes-max 63m
--wal-segment-bytes 66m) on 127.0.0.1 in a temporary directory, one per size; every wait is
bounded (WAIT_S). The big value is written from a separate process, so that building and
sending 63 MiB does not hold this one's interpreter lock while it times the PINGs.
"""

import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster  # noqa: E402

WAIT_S = 120.0  # the longest any one wait (a big SET, the cluster's start) may take
PAUSE_S = 1.5  # between two big SETs
MIB = 1 << 20
SMALL_BYTES = 100


def big_writer(port, size, sets, out):
    """In its own process: sets SETs of `size` bytes; puts (ms, answer) for each."""
    c = redis.Redis(port=port, socket_timeout=WAIT_S)
    for k in range(sets):
        v = bytes([65 + k]) * size
        t = time.monotonic()
        try:
            c.set(f"big{k}", v)
            r = "OK"
        except Exception as e:  # noqa: BLE001 (the answer is the measurement)
            r = str(e)[:60]
        out.put(((time.monotonic() - t) * 1000, r))
        del v
        time.sleep(PAUSE_S)
    out.put(None)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run_size(exe, d, size_mib, sets, clients):
    size = size_mib * MIB - 1024 if size_mib == 63 else size_mib * MIB
    cl = Cluster(exe, os.path.join(d, f"s{size_mib}"), 3,
                 ["--value-bytes-max", "63m", "--wal-segment-bytes", "66m"])
    cl.start()
    try:
        leader = cl.wait_leader(timeout_s=WAIT_S)
        ports = [nd.client_port for nd in cl.nodes]
        stop = threading.Event()
        worst = {nd.name: 0.0 for nd in cl.nodes}
        lats, errs = [], [0]

        def pinger(nd):
            c = redis.Redis(port=nd.client_port, socket_timeout=WAIT_S)
            while not stop.is_set():
                t = time.monotonic()
                c.ping()
                worst[nd.name] = max(worst[nd.name], time.monotonic() - t)
                time.sleep(0.005)

        def small(k):
            c = redis.Redis(port=leader.client_port, socket_timeout=WAIT_S)
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                try:
                    c.set(f"small{k}:{i % 1000}", b"x" * SMALL_BYTES)
                    lats.append(time.monotonic() - t)
                except Exception:  # noqa: BLE001 (counted)
                    errs[0] += 1
                    time.sleep(0.05)
                i += 1

        before = [nd.status() for nd in cl.nodes]
        ts = [threading.Thread(target=pinger, args=(nd,)) for nd in cl.nodes]
        ts += [threading.Thread(target=small, args=(k,)) for k in range(clients)]
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        w = ctx.Process(target=big_writer, args=(leader.client_port, size, sets, out))
        w.start()
        for t in ts:
            t.start()
        deadline = time.monotonic() + sets * (WAIT_S + PAUSE_S)
        results = []
        while time.monotonic() < deadline:
            try:
                r = out.get(timeout=1.0)
            except Exception:  # noqa: BLE001 (queue.Empty: keep waiting until the deadline)
                continue
            if r is None:
                break
            results.append(r)
        stop.set()
        for t in ts:
            t.join(timeout=WAIT_S)
        w.join(timeout=10)
        if w.is_alive():
            w.kill()
        after = [nd.status() for nd in cl.nodes]
        changes = sum(s["leader_changes"] for s in after) - sum(s["leader_changes"] for s in before)
        ms = [x * 1000 for x in lats]
        print(f"{size / MIB:.1f} MiB x {sets} on {len(ports)} nodes, {clients} small-SET clients:")
        for k, (t, r) in enumerate(results):
            print(f"  big SET {k}: {t:.0f} ms {r}")
        print(f"  small SETs: {len(ms)} ok, {errs[0]} failed; p50 {pct(ms, 50):.1f} ms, "
              f"p99 {pct(ms, 99):.1f} ms, max {max(ms, default=float('nan')):.0f} ms")
        print("  longest PING ms: " + ", ".join(
            f"{nd.name}{'(leader)' if nd is leader else ''} {worst[nd.name] * 1000:.0f}"
            for nd in cl.nodes))
        terms = max(s["term"] for s in after) - max(s["term"] for s in before)
        print(f"  leader changes: {changes} seen by the nodes, terms +{terms} (terms "
              f"{[s['term'] for s in before]} -> {[s['term'] for s in after]})", flush=True)
        return changes
    finally:
        cl.teardown()


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "16,32,63").split(",")]
    sets = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    exe = os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel")
    d = tempfile.mkdtemp(prefix="keel-bigval-")
    try:
        for s in sizes:
            if s > 63:
                sys.exit("sizes up to 63 MiB (a command must fit one 64 MiB peer frame)")
            run_size(exe, d, s, sets, clients)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
