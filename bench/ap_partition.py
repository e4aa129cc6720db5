#!/usr/bin/python3
"""ap_partition.py - time for the AP keyspace to converge after a partition with writes on both
sides (issue 18's benchmark; docs/ap.md "Measured").

A 3-node keel server cluster on nemesis.py's relay network (peer links through a relay in this
process, clients straight to the nodes). Node n1 is cut off from its peers for PART_S seconds
(default 30). Meanwhile two writers, one on each side, write at RATE per second each: on n1
(the minority) keys of their own at W=ONE, on n2 (the majority) keys of their own at W=QUORUM,
both to a shared set of keys (concurrent writes: siblings), and both increment shared PN
counters. Then the partition heals, and every POLL_S each node is asked for every key at R=ONE
(its own copy: no read repair; the three at once) until all three answer the same for every
key; printed: the writes each side had acknowledged, when the nodes agreed (after the start
of the last poll that saw them differ, by the end of the first that saw them agree), and whether
each counter equals the increments acknowledged on both sides.

Usage: KEEL_BUILD=build-dev /usr/bin/python3 bench/ap_partition.py [PART_S] [RATE] [runs]
(defaults 30 20 1). Every wait is bounded (WAIT_S).
"""

import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import nemesis  # noqa: E402

WAIT_S = 120.0
POLL_S = 0.1
SHARED = 50  # keys written on both sides
COUNTERS = 10


def canon(reply):
    """A node's R=ONE answer without the reply count and the context: the values, sorted."""
    if reply is None:
        return None
    return tuple(sorted(bytes(x) if isinstance(x, bytes) else str(x).encode() for x in reply[2:]))


def writer(c, side, level, rate, stop, acked, incs):
    i = 0
    period = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        i += 1
        keys = [f"{side}-{i}", f"both-{i % SHARED}"]
        for k in keys:
            try:
                c.execute_command("KEEL.AP.PUT", k, f"{side}:{i}", "W", level)
                acked.append(k)
            except Exception:
                pass
        ck = f"ctr-{i % COUNTERS}"
        try:
            c.execute_command("KEEL.AP.INCR", ck, 1, "W", level)
            incs[ck] = incs.get(ck, 0) + 1
        except Exception:
            pass
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def answers(c, keys):
    p = c.pipeline(transaction=False)
    for k in keys:
        p.execute_command("KEEL.AP.GET", k, "R", "ONE")
    return [canon(r) for r in p.execute(raise_on_error=False)]


def run(exe, d, part_s, rate):
    net = nemesis.make_net("relay", 3)
    cl = None
    try:
        net.setup()
        cl = nemesis.make_cluster(exe, d, net)
        cl.start()
        cl.wait_leader()
        cs = [nd.client(socket_timeout=5) for nd in cl.nodes]
        net.isolate(0)
        stop = threading.Event()
        acked = [[], []]
        incs = [{}, {}]
        ts = [threading.Thread(target=writer, daemon=True,
                               args=(cs[0], "min", "ONE", rate, stop, acked[0], incs[0])),
              threading.Thread(target=writer, daemon=True,
                               args=(cs[1], "maj", "QUORUM", rate, stop, acked[1], incs[1]))]
        for t in ts:
            t.start()
        time.sleep(part_s)
        stop.set()
        for t in ts:
            t.join(timeout=10)
        keys = sorted(set(acked[0]) | set(acked[1]) | {f"ctr-{j}" for j in range(COUNTERS)})
        net.heal()
        healed = time.monotonic()
        deadline = healed + WAIT_S
        polls, since = 0, 0.0  # the nodes still differed when a poll began at `since`
        while True:
            polls += 1
            began = time.monotonic() - healed
            got = [None] * 3

            def ask(i):
                got[i] = answers(cs[i], keys)

            askers = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
            for t in askers:
                t.start()
            for t in askers:
                t.join(timeout=WAIT_S)
            if got[0] is not None and got[0] == got[1] == got[2]:
                agreed = time.monotonic() - healed
                break
            since = began
            if time.monotonic() > deadline:
                raise TimeoutError(f"not converged {WAIT_S} s after the heal")
            time.sleep(POLL_S)
        ctr_ok = True
        for j in range(COUNTERS):
            k = f"ctr-{j}"
            want = incs[0].get(k, 0) + incs[1].get(k, 0)
            have = int(got[0][keys.index(k)][0])
            ctr_ok = ctr_ok and have == want  # writers see every reply: no unknown outcomes
        lost = [k for k, a in zip(keys, got[0]) if a is None and not k.startswith("ctr-")]
        print(f"partition {part_s:.0f} s: minority (n1, W=ONE) acknowledged {len(acked[0])} "
              f"writes and {sum(incs[0].values())} increments, majority (W=QUORUM) "
              f"{len(acked[1])} and {sum(incs[1].values())}; the three nodes agreed on all "
              f"{len(keys)} keys between {since:.2f} and {agreed:.2f} s after the heal ({polls} "
              f"polls of every key on every node); counters equal "
              f"the acknowledged increments: {'yes' if ctr_ok else 'NO'}; keys missing: "
              f"{len(lost)}")  # fmt: skip
        return ctr_ok and not lost
    finally:
        if cl is not None:
            cl.teardown()
        net.teardown()


def main():
    part_s = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    exe = os.path.join(os.environ.get("KEEL_BUILD", "build"), "keel")
    ok = True
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="keel-ap-partition-")
        try:
            ok = run(os.path.abspath(exe), d, part_s, rate) and ok
        finally:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
