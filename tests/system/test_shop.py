"""test_shop.py - the shop end to end: `keel up --manifest` with a 3-node cluster, two
instances each of inventory, payment and order, and the query service (the read side); keel-shopload drives orders through the
order saga at a fixed rate and checks, at the end, every order's final state against the
stock and the payment ledger (tools/shopload/main.c). One run is calm, one SIGKILLs an
order instance mid-run: its sagas are adopted by the other instance and finish."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import binary
from test_server_cli import free_base_port, pid_alive, port_free, up_dir  # noqa: F401


def free_ports(n):
    import random
    rnd = random.Random()
    for _ in range(200):
        p = rnd.randrange(30000, 60000)
        if all(port_free(p + i) for i in range(n)):
            return p
    pytest.skip("no free port range")


def shop_manifest(tmp_path, base, svc_port):
    m = tmp_path / "shop.yaml"
    m.write_text(f"""
cluster:
  nodes: 3
  base_port: {base}
services:
  - name: inventory
    run: [keel-shop-inventory, --keel, "{{keel}}", --registry, "{{keel}}",
          --listen, "127.0.0.1:{{port}}", --id, "inventory-{{i}}"]
    instances: 2
    port: {svc_port}
  - name: payment
    run: [keel-shop-payment, --keel, "{{keel}}", --registry, "{{keel}}",
          --db, "{{dir}}/payment.db", --listen, "127.0.0.1:{{port}}", --id, "payment-{{i}}",
          --slow-ms, "500"]
    instances: 2
    port: {svc_port + 10}
  - name: order
    run: [keel-shop-order, --keel, "{{keel}}", --registry, "{{keel}}",
          --listen, "127.0.0.1:{{port}}", --id, "order-{{i}}"]
    instances: 2
    port: {svc_port + 20}
  - name: query
    run: [keel-shop-query, --keel, "{{keel}}", --db, "{{dir}}/query.db",
          --listen, "127.0.0.1:{{port}}"]
    port: {svc_port + 30}
  - name: notification
    run: [keel-shop-notification, --keel, "{{keel}}", --listen, "127.0.0.1:{{port}}",
          --id, "notification-{{i}}", --fail-pct, "10", --max-deliveries, "20"]
    instances: 2
    port: {svc_port + 40}
""")
    return str(m)


def up(up_dir, tmp_path):
    base, port = free_base_port(3), free_ports(30)
    man = shop_manifest(tmp_path, base, port)
    r = subprocess.run([binary("keel"), "up", "--manifest", man, "--dir", up_dir, "--detach"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    return port


def load(port, *extra):
    return subprocess.Popen(
        [binary("keel-shopload"), "--inventory", f"127.0.0.1:{port},127.0.0.1:{port + 1}",
         "--orders", f"127.0.0.1:{port + 20},127.0.0.1:{port + 21}",
         "--payment", f"127.0.0.1:{port + 10}", "--query", f"127.0.0.1:{port + 30}",
         "--products", "20", "--stock", "60",
         "--deadline-ms", "5000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def down(up_dir):
    subprocess.run([binary("keel"), "down", "--dir", up_dir], capture_output=True, timeout=60)


def test_orders_through_the_saga_keep_stock_and_money_consistent(up_dir, tmp_path):
    port = up(up_dir, tmp_path)
    try:
        p = load(port, "--rate", "80", "--duration", "4")
        out = p.communicate(timeout=180)[0].decode()
        assert p.returncode == 0, out
        assert "invariants: held" in out, out
        confirmed = int(re.search(r"confirmed\s+(\d+)", out.split("orders:")[1])[1])
        rejected = int(re.search(r"rejected\s+(\d+)", out.split("orders:")[1])[1])
        assert confirmed > 100 and rejected > 0, out  # declined cards and sold-out products
        assert "sales per product equal the confirmed orders' units: checked" in out, out
        # every order that ended is notified once (a tenth of the sends fail and are retried)
        import urllib.request
        scheduled = int(re.search(r"orders: (\d+) scheduled", out)[1])  # every one ends once
        want, deadline, got = scheduled, time.monotonic() + 40, None
        while time.monotonic() < deadline:
            stats = [json.loads(urllib.request.urlopen(
                f"http://127.0.0.1:{port + 40 + i}/stats", timeout=5).read()) for i in (0, 1)]
            got = sum(st["sent"] for st in stats)
            if got >= want:
                break
            time.sleep(0.2)
        assert got == want, (got, want, stats)
        assert sum(st["retried"] for st in stats) > 0, stats
    finally:
        down(up_dir)


def test_an_order_instance_killed_mid_run_loses_no_order(up_dir, tmp_path):
    port = up(up_dir, tmp_path)
    try:
        p = load(port, "--rate", "60", "--duration", "6")
        time.sleep(2.5)
        with open(os.path.join(up_dir, "services.json")) as f:
            victim = next(s["pid"] for s in json.load(f)
                          if s["service"] == "order" and s["instance"] == 0)
        os.kill(victim, signal.SIGKILL)
        out = p.communicate(timeout=240)[0].decode()
        assert p.returncode == 0, out
        assert "invariants: held" in out, out  # every order ended, stock and money agree
    finally:
        down(up_dir)
