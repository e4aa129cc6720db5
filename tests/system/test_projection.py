"""test_projection.py - the event store and its projection as processes (tools/ledger):
a projection SIGKILLed again and again while events are appended ends with a read model
equal to the fold of every event (no double apply, no skip) and every poison event
dead-lettered exactly once; two appenders racing on the same accounts leave every
account's versions dense, each event there once."""

import json
import random
import signal
import sqlite3
import subprocess
import time
import urllib.request

from conftest import binary, free_port, wait_until  # noqa: F401
from keelcluster import make_cluster  # noqa: F401 (fixture)


def ledger(*args):
    return [binary("keel-ledger"), *args]


def fold(node, category="acct"):
    """The expected read model from the category stream itself: {account: (balance, events)},
    and the ids of the events a projection must dead-letter (type Poison)."""
    r = node.client()
    entries = r.xrange(f"es:$ce-{category}", "-", "+")
    model, poison = {}, set()
    for eid, f in entries:
        acct, typ, amount = f[b"agg"].decode(), f[b"type"], int(f[b"data"] or b"0")
        if typ == b"Poison":
            poison.add(eid.decode())
            continue
        bal, n = model.get(acct, (0, 0))
        model[acct] = (bal + (amount if typ == b"Deposited" else -amount), n + 1)
    last = entries[-1][0].decode() if entries else "0-0"
    return model, poison, last, len(entries)


def read_model(db):
    c = sqlite3.connect(db)
    try:
        rows = {a: (b, n) for a, b, n in c.execute("SELECT account, balance, events FROM balances")}
        ckpt, applied = c.execute("SELECT last_id, applied FROM keel_projection").fetchone()
        dead = {i for (i,) in c.execute("SELECT id FROM keel_projection_dead")}
    finally:
        c.close()
    return rows, ckpt, applied, dead


def checkpoint(db):
    try:
        c = sqlite3.connect(db)
        try:
            row = c.execute("SELECT last_id FROM keel_projection").fetchone()
        finally:
            c.close()
        return row[0] if row else "0-0"
    except sqlite3.Error:
        return "0-0"


def test_a_projection_killed_again_and_again_applies_every_event_exactly_once(
        make_cluster, procs, tmp_path):
    node = make_cluster(1).nodes[0]
    server = f"127.0.0.1:{node.client_port}"
    db = str(tmp_path / "read.db")
    rng = random.Random(16)
    appender = procs.start(ledger("append", "--server", server, "--accounts", "12",
                                  "--events", "4000", "--poison-every", "97", "--seed", "7",
                                  "--rate", "400"))
    appender.may_exit = True
    project = ["project", "--server", server, "--db", db, "--batch", "16",
               "--apply-delay-us", "300"]
    kills, t0 = 0, time.monotonic()
    # Kill the projection at random moments while events are appended (batches commit
    # every ~5 ms, so kills land before, during and after commits and acknowledgements).
    while appender.alive() or kills < 12:
        p = procs.start(ledger(*project))
        p.read_line(r"projecting", timeout_s=10)
        time.sleep(rng.uniform(0.05, 0.6))
        p.signal(signal.SIGKILL)
        p.wait(5)
        kills += 1
        assert time.monotonic() - t0 < 240, "appender did not finish"
    assert appender.wait(60) == 0, appender.output()
    m = appender.read_line(r"appended (\d+) conflicts (\d+)")
    assert int(m.group(1)) == 4000
    model, poison, last, total = fold(node)
    assert total == 4000 and len(poison) == 4000 // 97
    # one last run catches up, then stops cleanly
    p = procs.start(ledger(*project, "--metrics-file", str(tmp_path / "m.txt")))
    p.read_line(r"projecting", timeout_s=10)
    assert wait_until(lambda: checkpoint(db) == last, 120, 0.2), (checkpoint(db), last)
    metrics = tmp_path / "m.txt"
    assert wait_until(lambda: metrics.exists() and b"lag_events{projection=\"balances\"} 0\n"
                      in metrics.read_bytes(), 10, 0.1)
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    rows, ckpt, applied, dead = read_model(db)
    assert ckpt == last
    assert rows == model  # no double apply, no skip: the exact fold
    assert applied == total - len(poison)
    assert dead == poison
    r = node.client()
    dlq = r.xrange("es:$ce-acct:dlq", "-", "+")
    ids = [f[b"keel-id"].decode() for _, f in dlq]
    assert sorted(ids) == sorted(poison), "each poison event dead-lettered exactly once"
    assert all(b"unknown event type Poison" in f[b"keel-error"] for _, f in dlq)
    assert r.xpending("es:$ce-acct", "balances")["pending"] == 0
    gaps = sum("delivered elsewhere" in q.output() for q in procs.items)
    print(f"kills {kills}, events {total}, dead letters {len(dlq)}, runs that found a gap {gaps}")


def test_a_rebuild_gives_the_same_read_model(make_cluster, procs, tmp_path):
    node = make_cluster(1).nodes[0]
    server = f"127.0.0.1:{node.client_port}"
    db = str(tmp_path / "read.db")
    a = procs.start(ledger("append", "--server", server, "--accounts", "4", "--events", "500",
                           "--poison-every", "50"))
    a.may_exit = True
    assert a.wait(60) == 0, a.output()
    model, poison, last, total = fold(node)
    p = procs.start(ledger("project", "--server", server, "--db", db))
    p.read_line(r"projecting", timeout_s=10)
    assert wait_until(lambda: checkpoint(db) == last, 60, 0.1)
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    c = sqlite3.connect(db)
    c.execute("UPDATE balances SET balance = 0")  # a broken read model
    c.commit()
    c.close()
    port = free_port()
    p = procs.start(ledger("project", "--server", server, "--db", db, "--rebuild",
                           "--listen", f"127.0.0.1:{port}"))
    p.read_line(r"projecting", timeout_s=10)
    time.sleep(0.3)
    assert wait_until(lambda: checkpoint(db) == last, 60, 0.1)
    # the read side over HTTP, and the lag in /metrics
    for acct, (bal, n) in model.items():
        body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/balances/{acct}",
                                                 timeout=5).read())
        assert (body["balance"], body["events"]) == (bal, n)
    assert wait_until(lambda: 'keel_projection_lag_events{projection="balances"} 0\n' in
                      urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                             timeout=5).read().decode(), 5, 0.1)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b'keel_projection_rebuilds_total{projection="balances"} 1' in metrics
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    rows, ckpt, applied, dead = read_model(db)
    assert rows == model and applied == total - len(poison) and dead == poison


def test_two_appenders_racing_on_the_same_accounts_keep_versions_dense(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    server = f"127.0.0.1:{node.client_port}"
    args = ["append", "--server", server, "--accounts", "3", "--events", "600", "--inflight", "3"]
    a = procs.start(ledger(*args, "--seed", "1"))
    b = procs.start(ledger(*args, "--seed", "2"))
    a.may_exit = b.may_exit = True
    assert a.wait(120) == 0, a.output()
    assert b.wait(120) == 0, b.output()
    ma = a.read_line(r"appended (\d+) conflicts (\d+)")
    mb = b.read_line(r"appended (\d+) conflicts (\d+)")
    conflicts = int(ma.group(2)) + int(mb.group(2))
    r = node.client()
    total = 0
    for i in range(3):
        entries = r.xrange(f"es:acct-{i}", "-", "+")
        versions = [int(eid.split(b"-")[1]) for eid, _ in entries]
        assert versions == list(range(1, len(entries) + 1)), "versions are dense, each once"
        assert int(r.get(f"es:acct-{i}:ver")) == len(entries)
        total += len(entries)
        # the aggregate folds to the same version through the event store
        out = subprocess.run(ledger("load", "--server", server, "--account", f"acct-{i}"),
                             capture_output=True, timeout=10)
        assert out.returncode == 0
        assert out.stdout.decode().startswith(f"version {len(entries)} ")
    assert total == 1200  # every appended event is there once: none lost, none doubled
    assert r.xlen("es:$ce-acct") == 1200
    corrs = [f[b"meta"] for _, f in r.xrange("es:$ce-acct", "-", "+")]
    assert len(corrs) == 1200
    assert conflicts > 0, "the two appenders never raced"
    print(f"conflicts {conflicts}")


def test_the_projection_and_appends_go_on_through_a_keel_leader_kill(make_cluster, procs,
                                                                     tmp_path):
    """Three nodes; the appender and the projection know all of them. The leader is
    SIGKILLed while both run (the projection is SIGKILLed too, now and then): appends whose
    answer was lost are retried at the same expected version (a conflict if they went in),
    and the read model still ends as the exact fold of the category stream."""
    cl = make_cluster(3)
    servers = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cl.nodes)
    db = str(tmp_path / "read.db")
    appender = procs.start(ledger("append", "--server", servers, "--accounts", "6",
                                  "--events", "2000", "--poison-every", "101", "--rate", "500"))
    appender.may_exit = True
    project = ["project", "--server", servers, "--db", db, "--batch", "32"]
    p = procs.start(ledger(*project))
    p.read_line(r"projecting", timeout_s=10)
    time.sleep(1.0)
    leader = cl.wait_leader()
    leader.kill()
    time.sleep(0.7)
    p.signal(signal.SIGKILL)
    p.wait(5)
    p = procs.start(ledger(*project))
    p.read_line(r"projecting", timeout_s=10)
    time.sleep(0.5)
    leader.start()
    assert appender.wait(120) == 0, appender.output()
    cl.wait_leader()
    node = cl.nodes[0]
    model, poison, last, total = fold(node)
    assert total >= 2000  # an append whose answer was lost and that went in is there once more
    assert wait_until(lambda: checkpoint(db) == last, 60, 0.2), (checkpoint(db), last)
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    rows, ckpt, applied, dead = read_model(db)
    assert rows == model
    assert applied == total - len(poison) and dead == poison
    r = node.client()
    for i in range(6):  # every account's versions dense through the kill
        versions = [int(eid.split(b"-")[1]) for eid, _ in r.xrange(f"es:acct-{i}", "-", "+")]
        assert versions == list(range(1, len(versions) + 1))
    lost = appender.output().count("keel-ledger: append:")
    print(f"events {total}, poison {len(poison)}, appends that failed and were retried {lost}")
