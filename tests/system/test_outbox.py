"""test_outbox.py - the transactional outbox's relay (src/tx/outbox.c) through keel-outbox,
killed again and again while a writer commits business rows with their outbox rows: between
publish and mark, between mark and the next batch, and at random moments from outside. In
the end the stream holds every outbox row exactly once, in order."""

import random
import re
import signal
import sqlite3
import time

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)

SEED = int(time.time())


def run_relay_once(procs, exe, args, rng):
    """Starts one relay, lets it die by its own crash hooks or kills it after a random
    while; returns its stdout."""
    r = procs.start([exe, "relay", *args])
    r.may_exit = True
    r.read_line(r"relay running", timeout_s=10)
    deadline = time.monotonic() + rng.uniform(0.02, 0.5)
    while r.alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if r.alive():
        r.p.send_signal(signal.SIGKILL)
    r.p.wait(timeout=10)
    out = r.p.stdout.read().decode()
    r.kill()
    return out


def stream_entries(node, key):
    c = node.client()
    out, start = [], "-"
    while True:
        got = c.xrange(key, min=start, max="+", count=1000)
        if start != "-":
            got = got[1:]
        if not got:
            return out
        out += got
        start = got[-1][0]


def test_a_relay_killed_again_and_again_publishes_every_row_once_in_order(
        make_cluster, procs, tmp_path):
    rng = random.Random(SEED)
    node = make_cluster(1).nodes[0]
    exe = binary("keel-outbox")
    db = str(tmp_path / "orders.db")
    rows = 3000
    writer = procs.start([exe, "write", "--db", db, "--stream", "orders.events", "--count",
                          str(rows), "--rate", "600"])
    writer.may_exit = True
    seen = {"publish": 0, "mark": 0, "outside": 0, "duplicates": 0}
    runs = 0
    while writer.alive() or runs < 8:
        runs += 1
        args = ["--db", db, "--servers", f"127.0.0.1:{node.client_port}", "--producer",
                "orders-1", "--batch", str(rng.choice([1, 7, 50, 200])), "--seed", str(SEED + runs),
                "--crash-after-publish", "12", "--crash-after-mark", "8"]
        out = run_relay_once(procs, exe, args, rng)
        crashed = False
        for line in out.splitlines():
            if line.startswith("crash after publish"):
                seen["publish"] += 1
                crashed = True
            elif line.startswith("crash after mark"):
                seen["mark"] += 1
                crashed = True
            elif line.startswith("duplicates "):
                seen["duplicates"] += int(line.split()[1])
        if not crashed:
            seen["outside"] += 1
    assert writer.wait(30) == 0, writer.output()
    # a last relay, left alone, drains what is left
    last = procs.start([exe, "relay", "--db", db, "--servers", f"127.0.0.1:{node.client_port}",
                        "--producer", "orders-1", "--until-idle"])
    last.may_exit = True
    assert last.wait(60) == 0, last.output()

    entries = stream_entries(node, "orders.events")
    got = [(f[b"id"].decode(), f[b"data"].decode()) for _, f in entries]
    want = [(f"orders-1/{n}", f"order {n}") for n in range(1, rows + 1)]
    assert len(got) == rows, f"seed {SEED}: {len(got)} entries for {rows} rows, {seen}"
    assert got == want, f"seed {SEED}: not every row once in order, {seen}"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == rows
        assert c.execute("SELECT COUNT(*) FROM keel_outbox WHERE sent_unix_ms IS NULL"
                         " OR error IS NOT NULL").fetchone()[0] == 0
    # the kill points were all reached, and re-sent rows were recognised, not appended
    assert seen["publish"] > 0 and seen["mark"] > 0 and seen["outside"] > 0, (SEED, seen)
    assert seen["duplicates"] > 0, (SEED, seen)
    print(f"seed {SEED}: {runs} relay runs, {seen}")


def test_a_consumer_killed_between_commit_and_ack_applies_every_event_once(
        make_cluster, procs, tmp_path):
    """At-least-once delivery (a consumer group member SIGKILLed after its effect committed
    and before its XACK gets the entry again) becomes an exactly-once effect with the inbox."""
    node = make_cluster(1).nodes[0]
    exe = binary("keel-outbox")
    servers = f"127.0.0.1:{node.client_port}"
    src, dst = str(tmp_path / "orders.db"), str(tmp_path / "billing.db")
    rows = 1000
    w = procs.start([exe, "write", "--db", src, "--stream", "orders.events", "--count", str(rows)])
    w.may_exit = True
    assert w.wait(60) == 0, w.output()
    relay = procs.start([exe, "relay", "--db", src, "--servers", servers, "--producer",
                         "orders-1", "--until-idle"])
    relay.may_exit = True
    assert relay.wait(60) == 0, relay.output()
    crashes = skipped = 0
    for attempt in range(300):
        c = procs.start([exe, "consume", "--db", dst, "--servers", servers, "--stream",
                         "orders.events", "--group", "billing", "--consumer", "billing-1",
                         "--until", str(rows), "--crash-after-commit", "2",
                         "--seed", str(SEED + attempt)])
        c.may_exit = True
        rc = c.p.wait(timeout=60)
        out = c.p.stdout.read().decode()
        c.kill()
        crashes += out.count("crash after commit")
        skipped += out.count("skipped ")
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, (rc, c.output())
    else:
        raise AssertionError(f"seed {SEED}: the consumer never finished")
    with sqlite3.connect(dst) as db:
        applied = [r[0] for r in db.execute("SELECT data FROM applied ORDER BY rowid")]
    assert sorted(applied) == sorted(f"order {n}" for n in range(1, rows + 1)), (
        f"seed {SEED}: {len(applied)} effects for {rows} events")
    # the crashes happened, and what each left applied but unacknowledged (at least the
    # entry it died after, and those before it in its batch) came back and was skipped
    assert crashes > 0 and skipped >= crashes, (SEED, crashes, skipped)
    print(f"seed {SEED}: {crashes} consumer crashes, {skipped} redelivered entries skipped")
    assert node.client().xpending("orders.events", "billing")["pending"] == 0


def test_a_relay_keeps_every_row_once_in_order_through_leader_kills(make_cluster, procs, tmp_path):
    """One relay, never killed, on a 3-node cluster whose leader is SIGKILLed twice while rows
    are written: batches that failed or whose outcome was unknown are sent again and
    recognised, so the stream still holds every row once, in order, on every node."""
    cluster = make_cluster(3)
    exe = binary("keel-outbox")
    servers = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    db = str(tmp_path / "orders.db")
    rows = 2000
    writer = procs.start([exe, "write", "--db", db, "--stream", "orders.events", "--count",
                          str(rows), "--rate", "400"])
    writer.may_exit = True
    relay = procs.start([exe, "relay", "--db", db, "--servers", servers, "--producer", "orders-1",
                         "--batch", "20"])
    relay.read_line(r"relay running")
    for _ in range(2):
        time.sleep(1.2)
        leader = cluster.wait_leader()
        leader.kill()
        cluster.wait_leader()
        time.sleep(0.5)
        leader.start()
    assert writer.wait(30) == 0, writer.output()
    leader = cluster.wait_leader()
    want = [(f"orders-1/{n}", f"order {n}") for n in range(1, rows + 1)]

    deadline = time.monotonic() + 30
    while leader.client().xlen("orders.events") < rows and time.monotonic() < deadline:
        time.sleep(0.2)
    relay.signal(signal.SIGTERM)
    assert relay.wait(10) == 0
    out = relay.p.stdout.read().decode()
    cluster.wait_applied(cluster.nodes, leader.status()["commit_index"])
    for nd in cluster.nodes:
        got = [(f[b"id"].decode(), f[b"data"].decode()) for _, f in stream_entries(nd, "orders.events")]
        assert got == want, f"{nd.name}: {len(got)} entries for {rows} rows; relay: {out}"
    m = re.search(r"published (\d+) duplicates (\d+) dead (\d+) errors (\d+)", out)
    assert m and int(m.group(3)) == 0 and int(m.group(4)) > 0, out  # the kills were felt
    # the relay's metrics agree: nothing pending, the errors counted
    metric = dict(re.findall(r'^(keel_outbox_\w+)\{[^}]*\} (\d+)$', out, re.M))
    assert metric["keel_outbox_pending"] == "0" and metric["keel_outbox_lag_ms"] == "0", out
    assert metric["keel_outbox_published_total"] == m.group(1), out
    assert metric["keel_outbox_errors_total"] == m.group(4), out
    print(f"through 2 leader kills: {out.strip()}")


def test_the_orders_example_publishes_each_order_once_whatever_the_retries(
        make_cluster, procs, tmp_path):
    """apps/examples/orders: an order and its event in one transaction, the relay in the
    same process, POST /orders with Idempotency-Key. Every POST is sent twice; a SIGKILL and
    a restart come in between: one order and one event per key, in order."""
    import http.client
    import json

    from conftest import free_port, wait_port

    node = make_cluster(1).nodes[0]
    db = str(tmp_path / "orders.db")

    def start():
        port = free_port()
        p = procs.start([binary("keel-example-orders"), "--listen", f"127.0.0.1:{port}",
                         "--db", db, "--servers", f"127.0.0.1:{node.client_port}"])
        p.read_line(r"listening on port")
        wait_port(port)
        return p, port

    def post(port, item, key):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/orders", body=item.encode(), headers={"Idempotency-Key": key})
        r = c.getresponse()
        out = (r.status, r.getheader("Idempotent-Replayed"), json.loads(r.read()))
        c.close()
        return out

    svc, port = start()
    for i in range(1, 41):
        first = post(port, f"item {i}", f"o-{i}")
        again = post(port, f"item {i}", f"o-{i}")
        assert first == (201, None, {"id": i}) and again == (201, "true", {"id": i}), (first, again)
    c = node.client()
    wait_until_len = time.monotonic() + 10
    while c.xlen("orders.events") < 40 and time.monotonic() < wait_until_len:
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    assert 'keel_outbox_published_total{service="orders"} 40' in metrics, metrics
    assert 'keel_idem_requests_total{service="orders",outcome="replay"} 40' in metrics
    # killed and started again: the keys are in keel server, the orders in the file
    svc.may_exit = True
    svc.kill()
    svc, port = start()
    assert post(port, "item 7", "o-7") == (201, "true", {"id": 7})
    assert post(port, "item 41", "o-41") == (201, None, {"id": 41})
    deadline = time.monotonic() + 10
    while c.xlen("orders.events") < 41 and time.monotonic() < deadline:
        time.sleep(0.05)
    events = [(f[b"id"].decode(), json.loads(f[b"data"])) for _, f in
              stream_entries(node, "orders.events")]
    assert events == [(f"orders-1/{i}", {"order": i, "item": f"item {i}"})
                      for i in range(1, 42)], events
    svc.signal(signal.SIGTERM)
    assert svc.wait(15) == 0
