#!/usr/bin/python3
"""ap_move.py - how many keys the AP keyspace moves when a member joins or leaves (docs/ap.md,
"Moving keys when the membership changes"), on one keel server cluster: 3 nodes, then n4 joins
(3->4), n5 joins (4->5), n5 is removed (5->4).

K keys are written at W=ALL first. For each change, under a writer (one connection, W=QUORUM,
fresh keys through the members in turn), printed: over the keys there before the change (the
K and every earlier writer's), the share of their copies (3 per key) whose home is new
(KEEL.AP.WHERE before and after: what had to move; 1/nodes expected); the move hints the nodes
queued (keel_ap_move_keys_total) per moved copy (the writer's keys written on the old ring
during the change move too, so a little over the senders per key); the time from the change
until every walk is done and every hint delivered (metrics); the fdatasyncs of the members'
AP stores meanwhile (keel_ap_store_fdatasyncs: the writer's and the move's); the keys the
joined node holds against the keys it is a home of; and the writes during the change
(acknowledged, failed, p50/p99/max ms; the first row: the same writer for 5 s, no change).

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_move.py [K] (default 3000). Starts its
own cluster on 127.0.0.1 in a temporary directory; every wait is bounded (WAIT_S).
"""

import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
from keelcluster import Cluster  # noqa: E402
from ap_repair import metric, until  # noqa: E402  (bench/: the same helpers)


def members(node):
    got = node.client(socket_timeout=5).execute_command("KEEL.CLUSTER", "MEMBERS")
    return {m[0].decode(): m[3].decode() for m in got}


def homes_of(node, keys):
    p = node.client(socket_timeout=30).pipeline(transaction=False)
    for k in keys:
        p.execute_command("KEEL.AP.WHERE", k)
    return {k: {h.decode() for h in r[0]} for k, r in zip(keys, p.execute())}


class Writer(threading.Thread):
    def __init__(self, nodes, prefix):
        super().__init__(daemon=True)
        self.nodes, self.prefix = nodes, prefix
        self.acked, self.failed, self.lat = [], 0, []
        self.halt = threading.Event()

    def run(self):
        cs = [nd.client(socket_timeout=5) for nd in self.nodes]
        i = 0
        while not self.halt.is_set() and i < 1000000:
            k = f"{self.prefix}{i}"
            t0 = time.monotonic()
            try:
                if cs[i % len(cs)].execute_command("KEEL.AP.PUT", k, "w", "W", "QUORUM") >= 2:
                    self.lat.append((time.monotonic() - t0) * 1000)
                    self.acked.append(k)
            except Exception:
                self.failed += 1
            i += 1


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))] if xs else float("nan")


def change(cl, keys, label, act, members_want, senders, newcomer):
    live = [nd for nd in cl.nodes if nd.alive()]
    before = homes_of(live[0], keys)
    sent0 = sum(metric(nd, "keel_ap_move_keys_total") for nd in live)
    syncs0 = {nd.name: metric(nd, "keel_ap_store_fdatasyncs") for nd in live}
    rings0 = {nd.name: metric(nd, "keel_ap_move_rings_total") for nd in senders}
    w = Writer([nd for nd in live if nd.name in members_want], label)
    w.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    act()
    live = [nd for nd in cl.nodes if nd.alive() and nd.name in members_want]
    until(lambda: set(members(live[0])) == members_want, f"{label}: members")
    t1 = until(
        lambda: all(metric(nd, "keel_ap_move_rings_total") > rings0[nd.name] for nd in senders)
        and all(metric(nd, "keel_ap_move_pending") == 0 for nd in live)
        and sum(metric(nd, "keel_ap_hints_pending") for nd in live) == 0,
        f"{label}: moved",
    )
    w.halt.set()
    w.join(timeout=30)
    n_keys = len(keys)
    after = homes_of(live[0], keys)
    gained = sum(len(after[k] - before[k]) for k in keys)
    sent = sum(metric(nd, "keel_ap_move_keys_total") for nd in live) - sent0
    syncs = sum(metric(nd, "keel_ap_store_fdatasyncs") - syncs0.get(nd.name, 0) for nd in live)
    share = gained / (3 * len(keys))
    held = ""
    if newcomer:
        mine = sum(newcomer.name in h for h in homes_of(live[0], keys + w.acked).values())
        held = f"{metric(newcomer, 'keel_ap_keys'):.0f} held / {mine} homed | "
    else:
        held = "- | "
    keys.extend(w.acked)  # the next change moves these too
    n_exp = len(members_want) if "join" in label else len(members_want) + 1
    print(f"| {label} | {n_keys} | {gained} ({share:.3f}) | 1/{n_exp} = {1 / n_exp:.3f} | "
          f"{sent:.0f} ({sent / max(gained, 1):.2f}) | {t1 - t0:.2f} s | {syncs:.0f} | {held}"
          f"{len(w.acked)} acked, {w.failed} failed, p50 {pct(w.lat, 0.5):.1f} p99 "
          f"{pct(w.lat, 0.99):.1f} max {max(w.lat or [0]):.1f} ms |", flush=True)


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    exe = os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel")
    with tempfile.TemporaryDirectory() as d:
        cl = Cluster(exe, d, 3, ["--wal-segment-bytes", "17m"])
        cl.start()
        cl.wait_leader()
        try:
            for nd in cl.nodes:  # every node reaches the homes of these keys (all pairs)
                c = nd.client()
                for i in range(20):
                    until(lambda c=c, i=i: c.execute_command("KEEL.AP.GET", f"warm{i}", "R",
                                                             "ALL")[0] == 3, "peers connected")
            keys = [f"k{i}" for i in range(k)]
            cs = [nd.client(socket_timeout=60) for nd in cl.nodes]
            for j in range(0, k, 16):  # small pipelines: each write waits for 3 fdatasyncs
                p = cs[j // 16 % 3].pipeline(transaction=False)
                for key in keys[j:j + 16]:
                    p.execute_command("KEEL.AP.PUT", key, "x" * 100, "W", "ALL")
                assert all(r == 3 for r in p.execute())
            print("| change | keys | copies whose home is new (share) | expected | move hints "
                  "sent (per moved copy) | until moved | fdatasyncs (all nodes) | joined node | "
                  "writes during |")
            print("|---|---|---|---|---|---|---|---|---|")
            n1, n2, n3 = cl.nodes
            w = Writer(cl.nodes, "base")  # the same writer with no change: the baseline
            w.start()
            time.sleep(5.0)
            w.halt.set()
            w.join(timeout=30)
            keys.extend(w.acked)
            print(f"| no change (5 s) | {k} | - | - | - | - | - | - | {len(w.acked)} acked, "
                  f"{w.failed} failed, p50 {pct(w.lat, 0.5):.1f} p99 {pct(w.lat, 0.99):.1f} max "
                  f"{max(w.lat or [0]):.1f} ms |", flush=True)
            n4 = cl.new_node("n4", join=f"127.0.0.1:{n2.client_port}")
            change(cl, keys, "join 3->4", n4.start, {"n1", "n2", "n3", "n4"}, [n1, n2, n3], n4)
            n5 = cl.new_node("n5", join=f"127.0.0.1:{n3.client_port}")
            change(cl, keys, "join 4->5", n5.start, {"n1", "n2", "n3", "n4", "n5"},
                   [n1, n2, n3, n4], n5)

            def leave():
                for _ in range(20):  # a leader change may leave an attempt's outcome unknown
                    if "n5" not in members(n1):
                        break
                    try:
                        n1.client(socket_timeout=10).execute_command("KEEL.CLUSTER", "REMOVE",
                                                                     "n5")
                    except Exception as e:
                        print(f"REMOVE n5: {e}", flush=True)
                        time.sleep(1.0)
                until(lambda: "n5" not in members(n1), "n5 gone")
                n5.kill()

            change(cl, keys, "leave 5->4", leave, {"n1", "n2", "n3", "n4"}, [n1, n2, n3, n4],
                   None)
        finally:
            cl.kill_all()


if __name__ == "__main__":
    main()
