"""test_shop_payment.py - the payment service alone (a 1-node keel for its outbox, two
instances on one ledger file): every answer of POST /charges and of a refund, and their
repeats, from the row; concurrent repeats of one charge on both instances charge it once while
the instances' group commits put many charges in one transaction (runtime/db_group.h); one
event on the keel stream per change of a row."""
import concurrent.futures
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

from conftest import binary
from test_server_cli import free_base_port, up_dir  # noqa: F401
from test_shop import free_layout, free_ports, used_ports  # noqa: F401

SLOW_MS = 300


def up(up_dir, tmp_path):
    base, port = free_layout(1, 2)
    m = tmp_path / "pay.yaml"
    m.write_text(f"""
cluster:
  nodes: 1
  base_port: {base}
services:
  - name: payment
    run: [keel-shop-payment, --keel, "{{keel}}", --db, "{{dir}}/payment.db",
          --listen, "127.0.0.1:{{port}}", --id, "payment-{{i}}", --slow-ms, "{SLOW_MS}"]
    instances: 2
    port: {port}
""")
    r = subprocess.run([binary("keel"), "up", "--manifest", str(m), "--dir", up_dir, "--detach"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    return base, port


def call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode()


def charge(port, order, amount=500, customer="c1", card="ok"):
    return call(port, "POST", "/charges",
                {"order": order, "customer": customer, "amount_cents": amount, "card": card})


def down(up_dir):
    subprocess.run([binary("keel"), "down", "--dir", up_dir], capture_output=True, timeout=60)


def stream_len(base):
    r = subprocess.run(["redis-cli", "-p", str(base), "XLEN", "shop.payments"],
                       capture_output=True, timeout=10)
    return int(r.stdout.decode().strip() or 0)


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^" + name + r"(\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(m.group(2)) if m else 0.0


def test_each_answer_and_its_repeat_come_from_the_row(up_dir, tmp_path):
    base, p = up(up_dir, tmp_path)
    q = p + 1  # the other instance, same ledger
    try:
        assert charge(p, "o1")[0] == 201
        assert charge(q, "o1") == (200, {"order": "o1", "status": "charged", "amount_cents": 500})
        assert charge(p, "o1", amount=501)[0] == 422
        assert charge(q, "o1", customer="c2")[0] == 422
        assert charge(p, "o2", card="decline")[0] == 402
        assert charge(q, "o2")[0] == 402  # recorded: the card does not matter any more
        assert charge(p, "o3", card="fail")[0] == 502  # nothing recorded
        assert charge(q, "o3")[0] == 201
        t0 = time.monotonic()
        assert charge(p, "o4", card="slow")[0] == 201
        assert time.monotonic() - t0 >= SLOW_MS / 1000
        assert call(q, "POST", "/charges/o1/refund") == (
            200, {"order": "o1", "status": "refunded", "amount_cents": 500})
        assert call(p, "POST", "/charges/o1/refund")[1]["status"] == "refunded"
        assert charge(q, "o1")[0] == 410
        assert call(p, "POST", "/charges/o5/refund")[1]["status"] == "voided"
        assert charge(q, "o5")[0] == 410
        assert call(p, "POST", "/charges/o2/refund")[1]["status"] == "declined"
        assert call(q, "GET", "/charges/o3")[1]["status"] == "charged"
        assert call(q, "GET", "/charges/nope")[0] == 404
        assert charge(p, "bad id!")[0] == 400
        st, led = call(p, "GET", "/ledger")
        assert st == 200
        assert led["charged_cents"] == 1500 and led["refunded_cents"] == 500
        assert (led["charged"], led["refunded"], led["declined"], led["voided"]) == (2, 1, 1, 1)
        # one event per change of a row: o1 charged and refunded, o2 declined, o3, o4
        # charged, o5 voided
        deadline = time.monotonic() + 10
        while stream_len(base) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream_len(base) == 6
    finally:
        down(up_dir)


def test_concurrent_repeats_charge_once_and_share_commits(up_dir, tmp_path):
    base, p = up(up_dir, tmp_path)
    orders = [f"k{i}" for i in range(300)]
    # each order twice, at once, one request on each instance (and, for a third of them, a
    # third request on the first instance: two of one order in the same instance's batch)
    jobs = [(p + (j % 2), o) for o in orders for j in range(2)]
    jobs += [(p, o) for o in orders[::3]]
    try:
        with concurrent.futures.ThreadPoolExecutor(48) as ex:
            got = list(ex.map(lambda j: (j[1], charge(j[0], j[1], amount=100)[0]), jobs))
        by = {}
        for o, st in got:
            by.setdefault(o, []).append(st)
        for o in orders:
            assert by[o].count(201) == 1, (o, by[o])
            assert all(s in (200, 201) for s in by[o]), (o, by[o])
        st, led = call(p, "GET", "/ledger")
        assert led["charged"] == 300 and led["charged_cents"] == 300 * 100
        writes = sum(metric(x, "keel_db_group_wait_seconds_count") for x in (p, p + 1))
        batches = sum(metric(x, "keel_db_group_batch_writes_count") for x in (p, p + 1))
        largest = max(metric(x, "keel_db_group_batch_writes_sum") for x in (p, p + 1))
        assert writes >= 300 and 0 < batches < writes, (writes, batches, largest)
        deadline = time.monotonic() + 10
        while stream_len(base) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream_len(base) == 300
    finally:
        down(up_dir)
