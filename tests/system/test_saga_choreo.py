"""test_saga_choreo.py - choreographed sagas (src/tx/choreo.c) on a real 3-node keel cluster:
three participant processes (keel-example-choreo: order, stock, payment) run an
order -> reserve -> charge chain through one stream, with the charge refused for every fifth
order (so stock releases and order cancels, in that order), one participant killing itself
between commit and XACK again and again, and another SIGKILLed mid-batch and replaced by a
new instance that takes its pending entries over (XAUTOCLAIM). Every saga must end, every
effect must be in the participants' ledgers exactly once, and every event in the stream
exactly once. Then the ways of giving up: a compensation that never applies is dead-lettered
after its retry_for_ms and its saga marked needs_attention while the participant goes on, and
sagas whose participant is down past the deadline are marked by the deadline watcher, even one
restarted after the deadline."""

import re
import sqlite3
import signal
import subprocess
import time

import redis

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)

ORDERS = 150
FAIL_EVERY = 5
STREAM = "choreo:orders"
OK_CHAIN = ["order.created", "stock.reserved", "payment.charged", "order.confirmed"]
FAIL_CHAIN = ["order.created", "stock.reserved", "payment.failed", "stock.released",
              "order.cancelled"]


def participant(procs, addrs, tmp_path, role, *extra):
    p = procs.start([binary("keel-example-choreo"), "--role", role, "--db",
                     str(tmp_path / f"{role}.db"), "--servers", addrs, "--stream", STREAM,
                     "--claim-idle-ms", "1000", "--claim-interval-ms", "300", *extra])
    p.read_line(rf"^ready {role}$", timeout_s=30)
    return p


def rows(tmp_path, role, sql):
    db = sqlite3.connect(str(tmp_path / f"{role}.db"), timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def ledger(tmp_path, role):
    """[(saga, effect, at_unix_ms)] in the order applied."""
    return rows(tmp_path, role, "SELECT saga, effect, at_unix_ms FROM ledger ORDER BY seq")


def failed(i):
    return i % FAIL_EVERY == 0


def final_orders(tmp_path):
    return dict(rows(tmp_path, "order", "SELECT id, state FROM orders WHERE state != 'pending'"))


def wait_all_ended(r, tmp_path, tick, what):
    """Until every order is final, every event is in the stream and nothing is pending;
    tick() runs between looks (restarts, nemesis)."""
    want_events = sum(len(FAIL_CHAIN if failed(i) else OK_CHAIN) for i in range(1, ORDERS + 1))
    deadline = time.monotonic() + 120
    while True:
        try:
            n_final, n_events = len(final_orders(tmp_path)), r.xlen(STREAM)
            pending = [r.xpending(STREAM, g)["pending"] for g in ("order", "stock", "payment")]
        except redis.RedisError:  # a node being killed under us
            n_final, n_events, pending = -1, -1, [-1]
        if n_final == ORDERS and n_events >= want_events and not any(pending):
            return
        assert time.monotonic() < deadline, (
            f"not all ended: {n_final} orders final, {n_events} of {want_events} events, "
            f"pending {pending}; {what()}")
        tick()
        time.sleep(0.1)


def check_all_once(r, tmp_path):
    """Each order final as expected; each ledger holds each expected effect exactly once and
    nothing else; refused orders were released before cancelled; the stream holds each saga's
    chain once, in causal order."""
    states = final_orders(tmp_path)
    for i in range(1, ORDERS + 1):
        assert states[f"o-{i}"] == ("cancelled" if failed(i) else "confirmed"), i
    want = {"order": [], "stock": [], "payment": []}
    for i in range(1, ORDERS + 1):
        s = f"o-{i}"
        want["order"] += [(s, "create"), (s, "cancel" if failed(i) else "confirm")]
        want["stock"] += [(s, "reserve")] + ([(s, "release")] if failed(i) else [])
        want["payment"] += [] if failed(i) else [(s, "charge")]
    at = {}
    for role in want:
        got = [(s, e) for s, e, _ in ledger(tmp_path, role)]
        assert len(got) == len(set(got)), f"{role}: an effect applied twice"
        assert sorted(got) == sorted(want[role]), f"{role}: {sorted(set(want[role]) ^ set(got))}"
        at.update({(s, e): t for s, e, t in ledger(tmp_path, role)})
    for i in range(FAIL_EVERY, ORDERS + 1, FAIL_EVERY):
        s = f"o-{i}"
        assert at[(s, "reserve")] <= at[(s, "release")] <= at[(s, "cancel")], s
    chains = {}
    for _, fields in r.xrange(STREAM, "-", "+"):
        m = re.match(rb"^(\S+) (\S+)\n", fields[b"data"])
        chains.setdefault(m.group(2).decode(), []).append(m.group(1).decode())
    assert len(chains) == ORDERS
    for i in range(1, ORDERS + 1):
        assert chains[f"o-{i}"] == (FAIL_CHAIN if failed(i) else OK_CHAIN), (i, chains[f"o-{i}"])


def test_a_choreographed_saga_ends_once_through_refusals_crashes_and_a_takeover(
        make_cluster, procs, tmp_path):
    """150 orders through stock and payment, every fifth refused at the charge. stock SIGKILLs
    itself after 5% of its commits, before the XACK, and is restarted under the same consumer
    name each time (it reads its own pending entries first). payment, 15 ms per event, is
    SIGKILLed from outside mid-batch and replaced by an instance with another consumer name,
    which must take the dead one's pending entries over with XAUTOCLAIM. At the end: every
    order is confirmed or cancelled as expected; each ledger holds each effect once (create,
    reserve, charge and confirm for the good orders; reserve, release and cancel for the
    refused ones, with release before cancel: compensations in reverse); the stream holds
    each saga's events once each, in causal order; nothing is pending in any group."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()
    stock_runs = 1
    stock = participant(procs, addrs, tmp_path, "stock", "--crash-pct", "5", "--seed", "1")
    payment = participant(procs, addrs, tmp_path, "payment", "--fail-every", str(FAIL_EVERY),
                          "--work-ms", "15", "--consumer", "payment-1")
    order = participant(procs, addrs, tmp_path, "order", "--orders", str(ORDERS))

    def keep_stock_alive():
        nonlocal stock, stock_runs
        if not stock.alive():
            stock.may_exit = True
            stock_runs += 1
            stock = participant(procs, addrs, tmp_path, "stock", "--crash-pct", "5", "--seed",
                                str(stock_runs))

    # SIGKILL payment once it has charged some orders and while it is inside a batch
    deadline = time.monotonic() + 60
    while len(ledger(tmp_path, "payment")) < 30:
        assert time.monotonic() < deadline, "payment never got going"
        keep_stock_alive()
        time.sleep(0.02)
    payment.signal(signal.SIGKILL)
    payment.wait(10)
    pending_dead = r.xpending_range(STREAM, "payment", min="-", max="+", count=1000,
                                    consumername="payment-1")
    payment = participant(procs, addrs, tmp_path, "payment", "--fail-every", str(FAIL_EVERY),
                          "--work-ms", "15", "--consumer", "payment-2")

    wait_all_ended(r, tmp_path, keep_stock_alive, lambda: f"stock runs {stock_runs}")
    check_all_once(r, tmp_path)

    # the kills did happen where they matter
    assert stock_runs > 1, "stock never crashed between commit and XACK"
    assert pending_dead, "the SIGKILL of payment left nothing pending: nothing to take over"
    stats = {}
    for name, p in (("order", order), ("stock", stock), ("payment", payment)):
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.output()[-2000:]
        stats[name] = p.read_line(r"^stats applied (\d+) refused (\d+) compensated (\d+) "
                                  r"duplicates (\d+) claimed (\d+) dead_lettered 0$", timeout_s=5)
    print(f"stock runs {stock_runs}, payment-1 left {len(pending_dead)} pending; stats: " +
          "; ".join(f"{k} {v.group(0)}" for k, v in stats.items()))
    assert int(stats["payment"].group(5)) > 0, "payment-2 claimed nothing from payment-1"
    # the last stock run follows a crash after commit: it met that entry again and skipped it
    assert int(stats["stock"].group(4)) >= 1, stats["stock"].group(0)


def test_a_choreographed_saga_ends_once_while_the_keel_leader_is_killed_twice(
        make_cluster, procs, tmp_path):
    """The same 150 orders, no participant crashing, while the keel leader is SIGKILLed twice
    (and restarted) under the running chain. Reads, appends and acknowledgements whose answer
    was lost leave entries pending or appended without the sender knowing: a participant reads
    its own pending entries again after a failed read, the relay's producer sequence keeps a
    re-sent event from being appended twice, and the inbox skips what was applied. Every saga
    must still end, with each effect and each event exactly once."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    ps = {role: participant(procs, addrs, tmp_path, role, *extra) for role, extra in (
        ("stock", ["--work-ms", "3"]),
        ("payment", ["--fail-every", str(FAIL_EVERY), "--work-ms", "3"]),
        ("order", ["--orders", str(ORDERS)]))}
    kills = []
    for _ in range(2):
        time.sleep(0.4)
        leader = cluster.wait_leader()
        leader.kill()
        kills.append(len(ledger(tmp_path, "payment")))
        cluster.wait_leader(among=[nd for nd in cluster.nodes if nd is not leader])
        leader.start()
    r = cluster.nodes[0].client()
    wait_all_ended(r, tmp_path, lambda: None, lambda: f"kills at charges {kills}")
    check_all_once(r, tmp_path)
    assert kills[0] < ORDERS - ORDERS // FAIL_EVERY, f"the first kill came after the run: {kills}"
    for name, p in ps.items():
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.output()[-2000:]
        print(name, p.read_line(r"^stats .*$", timeout_s=5).group(0))
    print(f"leader kills at {kills} charges")


# ---- giving up: a compensation that never applies, a saga past its deadline -------------------

FEW = 20
ATTENTION = STREAM + ":attention"


def saga_list(addrs, *args):
    """`keel saga list --choreo STREAM ...`: (exit status, lines). `keel-saga list --choreo`
    (the same code) must answer the same."""
    p = subprocess.run([binary("keel"), "saga", "list", "--choreo", STREAM, *args, "--addr", addrs],
                       capture_output=True, timeout=30)
    q = subprocess.run([binary("keel-saga"), "--addr", addrs, "list", "--choreo", STREAM, *args],
                       capture_output=True, timeout=30)
    assert (q.returncode, q.stdout) == (p.returncode, p.stdout), (q.stdout, q.stderr, p.stdout)
    return p.returncode, p.stdout.decode().splitlines()


def chains_of(r):
    """{saga: [(entry ms, event type), ...]} of the stream, in stream order."""
    chains = {}
    for eid, fields in r.xrange(STREAM, "-", "+"):
        m = re.match(rb"^(\S+) (\S+)\n", fields[b"data"])
        chains.setdefault(m.group(2).decode(), []).append(
            (int(eid.split(b"-")[0]), m.group(1).decode()))
    return chains


def test_a_compensation_that_never_applies_is_dead_lettered_and_its_saga_needs_attention(
        make_cluster, procs, tmp_path):
    """20 orders, every fifth refused at the charge; stock's release of order 5 fails every
    time. stock retries it for --retry-for-ms (1.5 s), then gives it up in one keel entry: the
    saga o-5 is recorded in choreo:orders:attention, the payment.failed event moves to
    choreo:orders:dlq with the error, and stock goes on: the releases of orders 10, 15 and 20,
    which came after it in the stream, are applied and those orders cancelled. o-5 stays
    pending (its release never applied, so it is never cancelled), nothing else is left."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()
    stock = participant(procs, addrs, tmp_path, "stock", "--release-fails", "5",
                        "--retry-for-ms", "1500")
    payment = participant(procs, addrs, tmp_path, "payment", "--fail-every", str(FAIL_EVERY))
    order = participant(procs, addrs, tmp_path, "order", "--orders", str(FEW))
    deadline = time.monotonic() + 60
    while True:
        states = final_orders(tmp_path)
        marked = r.hget(ATTENTION, "o-5")
        if len(states) == FEW - 1 and marked is not None:
            if not any(r.xpending(STREAM, g)["pending"] for g in ("order", "stock", "payment")):
                break
        assert time.monotonic() < deadline, f"{len(states)} final, o-5 marked {marked!r}"
        time.sleep(0.05)
    marked_at_ms = int(time.time() * 1000)
    for i in range(1, FEW + 1):
        want = None if i == 5 else "cancelled" if failed(i) else "confirmed"
        assert states.get(f"o-{i}") == want, (i, states.get(f"o-{i}"))
    assert marked.startswith(b"stock payment.failed "), marked
    assert b"the warehouse refuses it" in marked, marked
    assert r.hlen(ATTENTION) == 1
    rc, lines = saga_list(addrs, "--state", "needs_attention")
    assert rc == 0 and len(lines) == 2, lines
    assert lines[0].startswith('o-5 needs_attention "stock payment.failed '), lines
    assert lines[1] == "total 1: running 0 needs_attention 1", lines
    dead = r.xrange(STREAM + ":dlq", "-", "+")
    assert len(dead) == 1, dead
    fields = dead[0][1]
    assert fields[b"data"] == b"payment.failed o-5\n5", fields
    assert fields[b"keel-group"] == b"stock" and b"warehouse" in fields[b"keel-error"], fields
    # given up no sooner than 1.5 s after the event appeared (its first attempt came later),
    # and on time: the last wait before it is cut to the end of retry_for_ms
    chains = chains_of(r)
    failed_ms = dict((t, ms) for ms, t in chains["o-5"])["payment.failed"]
    dead_ms = int(dead[0][0].split(b"-")[0])
    assert 1500 <= dead_ms - failed_ms <= 1500 + 1500, (failed_ms, dead_ms)  # on time
    assert marked_at_ms - failed_ms < 1500 + 10000
    assert [t for _, t in chains["o-5"]] == FAIL_CHAIN[:3]  # no stock.released: it never applied
    releases = [s for s, e, _ in ledger(tmp_path, "stock") if e == "release"]
    assert sorted(releases) == ["o-10", "o-15", "o-20"], releases
    for p in (order, stock, payment):
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.output()[-2000:]
    line = stock.read_line(r"^stats .* dead_lettered (\d+)$", timeout_s=5)
    assert line.group(1) == "1", line.group(0)
    print(f"o-5 dead-lettered {dead_ms - failed_ms} ms after its payment.failed; "
          f"{line.group(0)}")


def test_a_saga_whose_participant_is_down_past_its_deadline_needs_attention(
        make_cluster, procs, tmp_path):
    """The deadline watcher (--deadline-ms 2000) with order and stock running and payment not
    started: the 10 sagas stop at stock.reserved. The watcher records their deadlines in keel
    server, is SIGKILLed before they pass, and a new watcher started after they passed marks
    all 10 needs_attention (state in keel, not in the process). None is marked before its
    deadline. Then payment starts: the sagas end late (confirmed, or cancelled for every
    fifth), their deadlines are gone, and the attention records stay for a person."""
    n = 10
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()

    def watcher():
        p = procs.start([binary("keel-example-choreo"), "--role", "watch", "--servers", addrs,
                         "--stream", STREAM, "--deadline-ms", "2000"])
        p.read_line(r"^ready watch$", timeout_s=30)
        return p

    watch = watcher()
    stock = participant(procs, addrs, tmp_path, "stock")
    order = participant(procs, addrs, tmp_path, "order", "--orders", str(n),
                        "--fail-every", "0")
    deadline = time.monotonic() + 30
    while r.zcard(STREAM + ":deadlines") < n:
        assert time.monotonic() < deadline, "the watcher never recorded the deadlines"
        time.sleep(0.02)
    started_ms = min(ms for c in chains_of(r).values() for ms, t in c if t == "order.created")
    assert r.hlen(ATTENTION) == 0
    rc, lines = saga_list(addrs)
    assert rc == 0 and lines[-1] == f"total {n}: running {n} needs_attention 0", lines
    assert sorted(ln.split()[0] for ln in lines[:-1]) == sorted(f"o-{i}" for i in range(1, n + 1))
    assert all(" running deadline_ms=" in ln for ln in lines[:-1]), lines
    watch.signal(signal.SIGKILL)
    watch.wait(10)
    time.sleep(max(0.0, (started_ms + 2500) / 1000 - time.time()))
    assert r.hlen(ATTENTION) == 0  # nobody watched: nothing marked yet
    watch = watcher()
    deadline = time.monotonic() + 20
    while r.hlen(ATTENTION) < n:
        assert time.monotonic() < deadline, f"{r.hlen(ATTENTION)} of {n} marked"
        time.sleep(0.05)
    marks = r.hgetall(ATTENTION)
    assert sorted(marks) == sorted(f"o-{i}".encode() for i in range(1, n + 1))
    chains = chains_of(r)
    for saga, why in marks.items():
        assert why.startswith(b"watch deadline "), why
        first_ms = chains[saga.decode()][0][0]
        assert int(why.split()[2]) == first_ms + 2000, (saga, why, first_ms)
        assert [t for _, t in chains[saga.decode()]] == OK_CHAIN[:2]
    assert r.zcard(STREAM + ":deadlines") == 0
    rc, lines = saga_list(addrs, "--state", "needs_attention")
    assert rc == 0 and lines[-1] == f"total {n}: running 0 needs_attention {n}", lines
    assert all(' needs_attention "watch deadline ' in ln for ln in lines[:-1]), lines
    assert saga_list(addrs, "--state", "compensating")[0] == 2  # not a choreography's state
    # payment comes back: the sagas end, late; the marks stay
    payment = participant(procs, addrs, tmp_path, "payment", "--fail-every", str(FAIL_EVERY))
    deadline = time.monotonic() + 30
    while len(final_orders(tmp_path)) < n or r.zcard(STREAM + ":deadlines") != 0:
        assert time.monotonic() < deadline, f"{len(final_orders(tmp_path))} of {n} ended"
        time.sleep(0.05)
    states = final_orders(tmp_path)
    for i in range(1, n + 1):
        assert states[f"o-{i}"] == ("cancelled" if failed(i) else "confirmed"), i
    time.sleep(0.6)  # a check after the ends: nothing new is marked
    assert r.hlen(ATTENTION) == n and r.zcard(STREAM + ":deadlines") == 0
    for p in (order, stock, payment, watch):
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.output()[-2000:]
    line = watch.read_line(r"^stats watch events (\d+) ends (\d+) missed (\d+)$", timeout_s=5)
    assert int(line.group(2)) == n and int(line.group(3)) == n, line.group(0)
    print(line.group(0))
