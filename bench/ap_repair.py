#!/usr/bin/python3
"""ap_repair.py - how fast the AP keyspace repairs on a 5-node keel server cluster (docs/ap.md):

1. hinted handoff: one home of H keys is killed, the H keys are written at W=QUORUM through
   another of their homes (each gets a stand-in with a hint), the home is restarted; printed:
   the time from its restart (accepting clients) until the first hint and until every hint
   was handed off (acknowledged by the home: keel_ap_hints_delivered_total and
   keel_ap_hints_pending, no read), then every key is checked on it (R=ONE: its own copy);
2. anti-entropy: K keys are written at W=ALL, one node is killed, its AP data directory
   deleted, and it is restarted; printed: the time from its restart until it holds every
   one of the keys it is a home of again (its keel_ap_keys_repaired_total, no read touching
   them), and the keys per second.

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_repair.py [H] [K] [runs]
(defaults 200 2000 3). Starts its own clusters on 127.0.0.1 in a temporary directory; every
wait is bounded (WAIT_S).
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster, http_get  # noqa: E402

WAIT_S = 300.0


def metric(node, name):
    status, body, _ = http_get(node.http_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def until(fn, what):
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            if fn():
                return time.monotonic()
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def where(c, key):
    homes, fallbacks = c.execute_command("KEEL.AP.WHERE", key)
    return [h.decode() for h in homes], [f.decode() for f in fallbacks]


def start(d, name):
    cl = Cluster(os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel"),
                 os.path.join(d, name), 5, ["--wal-segment-bytes", "17m"])
    cl.start()
    cl.wait_leader()
    for nd in cl.nodes:  # every node reaches the homes of these keys (all pairs)
        c = nd.client()
        for i in range(20):
            until(lambda c=c, i=i: c.execute_command("KEEL.AP.GET", f"warm{i}", "R", "ALL")[0] == 3,
                  "peers connected")
    return cl


def handoff(d, run, h):
    cl = start(d, f"h{run}")
    try:
        c0 = cl.nodes[0].client()
        down = cl.nodes[2]
        keys = []  # keys with `down` among their homes, and a coordinator that is a home
        i = 0
        while len(keys) < h:
            k = f"h{i}"
            i += 1
            homes, _ = where(c0, k)
            if down.name in homes:
                keys.append((k, cl.node(next(x for x in homes if x != down.name))))
        down.kill()
        stored0 = sum(metric(nd, "keel_ap_hints_stored_total") for nd in cl.running())
        clients = {nd.name: nd.client() for nd in cl.nodes if nd is not down}
        for k, coord in keys:
            assert clients[coord.name].execute_command("KEEL.AP.PUT", k, "v", "W", "QUORUM") >= 2
        pending = sum(metric(nd, "keel_ap_hints_stored_total") for nd in cl.running()) - stored0
        before = sum(metric(nd, "keel_ap_hints_delivered_total") for nd in cl.running())
        down.start()
        t0 = time.monotonic()
        # metrics only: a read on the returned node would repair the key itself
        t_first = until(lambda: sum(metric(nd, "keel_ap_hints_delivered_total")
                                    for nd in cl.running()) > before, "first hint delivered")
        t_none = until(lambda: sum(metric(nd, "keel_ap_hints_pending") for nd in cl.running())
                       == 0, "no hint pending")
        delivered = sum(metric(nd, "keel_ap_hints_delivered_total") for nd in cl.nodes) - before
        back = down.client()
        for k, _ in keys:  # then every key is on the home (R=ONE: its own copy)
            assert back.execute_command("KEEL.AP.GET", k, "R", "ONE")[2:] == [b"v"], k
        print(f"| handoff run {run} | {len(keys)} keys, {pending:.0f} hints | first hint "
              f"handed off {t_first - t0:.2f} s | every hint {t_none - t0:.2f} s | "
              f"{delivered:.0f} delivered |", flush=True)
    finally:
        cl.kill_all()


def refill(d, run, k):
    cl = start(d, f"r{run}")
    try:
        cs = [nd.client() for nd in cl.nodes]
        v = "x" * 100
        for i in range(k):
            assert cs[i % 5].execute_command("KEEL.AP.PUT", f"k{i}", v, "W", "ALL") == 3
        lost = cl.nodes[3]
        mine = sum(1 for i in range(k) if lost.name in where(cs[0], f"k{i}")[0])
        lost.kill()
        shutil.rmtree(os.path.join(lost.data_dir, "ap"))
        lost.start()
        t0 = time.monotonic()
        t1 = until(lambda: metric(lost, "keel_ap_keys_repaired_total") >= mine, "refilled")
        ranges = metric(lost, "keel_ap_antientropy_ranges_differing_total")
        print(f"| refill run {run} | {k} keys, {mine} on the wiped node | {t1 - t0:.2f} s | "
              f"{mine / (t1 - t0):.0f} keys/s | {ranges:.0f} differing ranges seen by it |",
              flush=True)
    finally:
        cl.kill_all()


def main():
    h = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with tempfile.TemporaryDirectory() as d:
        for r in range(runs):
            handoff(d, r + 1, h)
        for r in range(runs):
            refill(d, r + 1, k)


if __name__ == "__main__":
    main()
