"""test_stream_nemesis.py - producers and a consumer group keep the streams properties through
kills, pauses and network partitions, and the checker of those properties can fail.

A run (tests/system/stream_nemesis.py) puts a 3-node cluster on a cuttable network, runs plain
and idempotent producers and four consumers of one group (XREADGROUP, XACK, KEEL.XNACK,
XAUTOCLAIM, dead letters after MAX_DELIVERIES) while the seeded nemesis of nemesis.py faults
it, heals, drains the group, reads the final state on every node, and checks the history
(tests/system/stream_check.py, the properties listed there). The mode, seed and faults are
printed and recorded as junit properties. KEEL_SEED=N repeats a schedule; KEEL_SLOW=1 runs the
long version (several seeds, 60 s of faults each, both modes); `python3
tests/system/stream_nemesis.py --seeds 1..20` is the soak.
"""

import json
import os
import random

import pytest

import stream_check
import stream_nemesis
from conftest import binary
from test_nemesis import require


def seed_from_env():
    if "KEEL_SEED" in os.environ:
        return int(os.environ["KEEL_SEED"])
    return random.randrange(1 << 30)


def report(res, request, record_testsuite_property):
    name = request.node.name
    record_testsuite_property(f"{name} nemesis_mode", res["mode"])
    record_testsuite_property(f"{name} nemesis_seed", res["seed"])
    record_testsuite_property(f"{name} nemesis_faults", " | ".join(res["faults"]))
    print(f"\nstreams nemesis mode {res['mode']}, seed {res['seed']} "
          f"(KEEL_SEED={res['seed']} repeats the schedule)")  # fmt: skip
    print("\n".join(res["faults"]))
    print(f"history: {json.dumps(res['summary'], sort_keys=True)}")
    print(f"drained {res['drained']}, nodes agree {res['agree']}, "
          f"{len(res['violations'])} violations")  # fmt: skip


def check(res):
    seed, s = res["seed"], res["summary"]
    assert not res["violations"], (
        f"seed {seed} ({res['mode']}): {len(res['violations'])} violations:\n"
        + "\n".join(res["violations"][:30]) + f"\nhistory kept at {res['history']}")  # fmt: skip
    assert not res["unexpected"], f"seed {seed}: unexpected replies {res['unexpected'][:5]}"
    assert res["agree"], f"seed {seed}: the nodes' final stream, dead letters or PEL differ"
    assert res["drained"], f"seed {seed}: the group was not drained in time: {s}"
    faults = [f for f in res["faults"] if not f.endswith("heal all")]
    assert len(faults) >= 2, f"seed {seed}: too few faults ran: {res['faults']}"
    # the run exercised what the properties are about
    assert s.get("xadd ok", 0) >= 100, s
    assert s.get("ack ok 1", 0) >= 50 and s.get("nack ok 1", 0) >= 10, s
    assert s.get("deliver claim", 0) >= 1 and s.get("dead letters", 0) >= 1, s


def run(tmp_path, mode, seed, **kw):
    kw.setdefault("extra", ("--snapshot-entries", "500", "--snapshot-log-bytes-min", "0"))
    return stream_nemesis.run(binary("keel"), str(tmp_path), mode, seed, **kw)


@pytest.mark.parametrize("mode", ["netns", "relay"])
def test_streams_keep_their_promises_through_kills_pauses_and_partitions(
    tmp_path, mode, request, record_testsuite_property
):
    require(mode)
    res = run(tmp_path, mode, seed_from_env(), duration_s=12.0)
    report(res, request, record_testsuite_property)
    check(res)


# -- the checker bites: doctored histories ------------------------------------------------------


def base_history():
    """A small history every property holds in: two appends (one by an idempotent producer,
    retried after a lost reply), one entry acked, one NACKed until it was dead-lettered."""
    h = stream_nemesis.History()
    h.add(f="xadd", proc="p0", payload="p0-1", pid=None, seq=1, type="ok", id="10-0", t0=0, t1=1)
    h.add(f="xadd", proc="p1", payload="p1-1", pid="p1", seq=1, type="info", id=None, t0=1, t1=2)
    h.add(f="xadd", proc="p1", payload="p1-1", pid="p1", seq=1, type="ok", id="11-0", t0=3, t1=4)
    h.add(f="deliver", proc="c0", via="read", id="10-0", payload="p0-1", t0=5, t1=6)
    h.add(f="count", proc="c0", id="10-0", count=1, t0=6, t1=7)
    h.add(f="ack", proc="c0", id="10-0", type="ok", n=1, t0=7, t1=8)
    for k in range(3):  # delivered 3 times, each NACKed; the last NACK dead-letters it
        t = 10 + 10 * k
        h.add(f="deliver", proc="c1", via="read" if k != 1 else "claim", id="11-0",
              payload="p1-1", t0=t, t1=t + 1)  # fmt: skip
        h.add(f="nack", proc="c1", id="11-0", type="ok", n=1, t0=t + 2, t1=t + 3)
    h.add(f="final", key="s", group="g", max_deliveries=3,
          stream=[["10-0", "p0-1"], ["11-0", "p1-1"]],
          stream_fields=[["10-0", {"p": "p0-1"}], ["11-0", {"p": "p1-1"}]],
          dlq=[["40-0", {"p": "p1-1", "keel-stream": "s", "keel-group": "g", "keel-id": "11-0",
                         "keel-deliveries": "3", "keel-error": "x"}]],
          pel=[], last_delivered="11-0")  # fmt: skip
    return h


def final(h):
    return [o for o in h.ops if o["f"] == "final"][0]


def test_the_stream_checker_accepts_a_correct_history(tmp_path):
    h = base_history()
    assert stream_check.check(h.ops) == []
    path = str(tmp_path / "ok.jsonl")
    h.write(path)
    assert stream_check.main(["stream_check.py", path]) == 0


def test_the_stream_checker_rejects_a_lost_acknowledged_xadd(tmp_path):
    h = base_history()
    fin = final(h)
    fin["stream"] = [e for e in fin["stream"] if e[0] != "10-0"]
    bad = stream_check.check(h.ops)
    assert any("acknowledged XADD p0-1 -> 10-0 is not in the stream" in b for b in bad), bad
    path = str(tmp_path / "lost.jsonl")
    h.write(path)
    assert stream_check.main(["stream_check.py", path]) == 1


def test_the_stream_checker_rejects_a_redelivery_after_an_xack():
    h = base_history()
    h.add(f="deliver", proc="c2", via="claim", id="10-0", payload="p0-1", t0=50, t1=51)
    bad = stream_check.check(h.ops)
    assert any("10-0 was delivered to c2 (claim) after c0's XACK" in b for b in bad), bad


def test_the_stream_checker_rejects_a_redelivery_by_read_without_a_nack():
    """What keel did before a claim cleared a NACKed entry's due time: NACK, claim, then '>'
    delivered it to another consumer with no NACK after the claim."""
    h = base_history()
    final(h)["dlq"] = []
    final(h)["pel"] = [["11-0", "c3", 3]]
    ops = [o for o in h.ops if not (o["f"] == "nack" and o["t0"] in (22, 32))]
    ops = [o for o in ops if not (o["f"] == "deliver" and o["t0"] == 30)]
    ops.insert(-1, {"f": "deliver", "proc": "c3", "via": "read", "id": "11-0",
                    "payload": "p1-1", "t0": 30, "t1": 31})  # fmt: skip
    nack_after_claim = {"f": "nack", "proc": "c1", "id": "11-0", "type": "ok", "n": 1,
                        "t0": 22, "t1": 23}  # fmt: skip
    assert stream_check.check(ops[:-1] + [nack_after_claim, ops[-1]]) == []  # legal
    bad = stream_check.check(ops)
    assert any("11-0 delivered by '>' to c3 after its delivery to c1 (claim) with no NACK"
               in b for b in bad), bad  # fmt: skip


def test_the_stream_checker_rejects_wrong_dead_letters_and_duplicate_appends():
    h = base_history()
    final(h)["dlq"][0][1]["keel-deliveries"] = "2"
    bad = stream_check.check(h.ops)
    assert any("dead-lettered after 2 deliveries, the limit is 3" in b for b in bad), bad
    h = base_history()
    final(h)["dlq"] = []
    final(h)["pel"] = [["11-0", "c1", 3]]
    bad = stream_check.check(h.ops)
    assert any("11-0 was NACKed by c1 after its 3th delivery" in b for b in bad), bad
    h = base_history()
    final(h)["stream"].append(["12-0", "p1-1"])  # the idempotent retry appended again
    bad = stream_check.check(h.ops)
    assert any("payload p1-1 appended twice" in b for b in bad), bad
    h = base_history()
    h.ops.insert(0, {"f": "xadd", "proc": "p0", "payload": "p0-0", "pid": None, "seq": 0,
                     "type": "ok", "id": "10-5", "t0": -2, "t1": -1})  # fmt: skip
    final(h)["stream"].insert(0, ["10-5", "p0-0"])
    bad = stream_check.check(h.ops)
    assert any("has a smaller id" in b for b in bad), bad


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KEEL_SLOW") != "1", reason="slow: set KEEL_SLOW=1")
@pytest.mark.parametrize("mode", ["netns", "relay"])
def test_long_stream_histories_through_faults_keep_the_promises(
    tmp_path, mode, request, record_testsuite_property
):
    require(mode)
    seeds = int(os.environ.get("KEEL_NEMESIS_SEEDS", "2"))
    first = seed_from_env()
    for k in range(seeds):
        res = run(tmp_path / f"s{k}", mode, first + k, duration_s=60.0)
        report(res, request, record_testsuite_property)
        check(res)
