"""test_shop.py - the shop end to end: `keel up --manifest` with a 3-node cluster, two
instances each of inventory, payment and order, the query service (the read side), two
notification and two shipment instances; keel-shopload drives orders through the order saga at
a fixed rate and checks, at the end, every order's final state against the stock, the payment
ledger and the shipments (one per confirmed order, none for the others; tools/shopload/main.c).
One run is calm, one SIGKILLs an
order instance mid-run: its sagas are adopted by the other instance and finish."""
import json
import os
import re
import signal
import subprocess
import time

import pytest
from shopmanifest import core_services

from conftest import binary
from test_server_cli import free_base_port, pid_alive, port_free, up_dir  # noqa: F401


def free_ports(n, avoid=()):
    import random
    rnd = random.Random()
    for _ in range(200):
        p = rnd.randrange(30000, 60000)
        if all(port_free(p + i) and p + i not in avoid for i in range(n)):
            return p
    pytest.skip("no free port range")


def used_ports(base, nodes, port=0, n=0):
    """The ports keel up gives `nodes` nodes at base, and the block port..port+n-1."""
    return {base + off + i for off in (0, 100, 200) for i in range(nodes)} | set(range(port, port + n))


def free_layout(nodes, n):
    """keel up's base for `nodes` nodes and a block of n service ports apart from every port
    that base gives the nodes (two random ranges chosen alone once overlapped: keel up then
    found inventory-0's port taken by a node of its own cluster)."""
    base = free_base_port(nodes)
    return base, free_ports(n, avoid=used_ports(base, nodes))


def shop_manifest(tmp_path, base, svc_port):
    m = tmp_path / "shop.yaml"
    m.write_text(core_services(base, svc_port, payment_args=', --slow-ms, "500"') + f"""  - name: query
    run: [keel-shop-query, --keel, "{{keel}}", --db, "{{dir}}/query.db",
          --listen, "127.0.0.1:{{port}}"]
    port: {svc_port + 30}
  - name: notification
    run: [keel-shop-notification, --keel, "{{keel}}", --listen, "127.0.0.1:{{port}}",
          --id, "notification-{{i}}", --fail-pct, "10", --max-deliveries, "20"]
    instances: 2
    port: {svc_port + 40}
  - name: shipment
    run: [keel-shop-shipment, --keel, "{{keel}}", --db, "{{dir}}/shipment.db",
          --listen, "127.0.0.1:{{port}}", --id, "shipment-{{i}}", --pack-ms, "1000",
          --ship-ms, "1000"]
    instances: 2
    port: {svc_port + 50}
""")
    return str(m)


def up(up_dir, tmp_path):
    base, port = free_layout(3, 60)
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
         "--shipments", f"127.0.0.1:{port + 50},127.0.0.1:{port + 51}",
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
        assert "one per confirmed order and none for the others: checked" in out, out
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


def chromium(tmp_path, url, shot):
    """Renders url in headless Chromium (Debian's): returns the DOM after its scripts ran and
    saves a screenshot at shot."""
    args = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000",
            "--virtual-time-budget=4000"]
    r = subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=90)
    assert r.returncode == 0 and os.path.getsize(shot) > 20000, r.stderr.decode()[-2000:]
    r = subprocess.run([*args, "--dump-dom", url], capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout.decode()


def plotted(dom):
    """The number of data points drawn in the page's line charts."""
    return sum(d.count("L") + 1 for d in re.findall(r'<path d="([^"]*)"[^>]*class="series"', dom))


def test_an_order_instance_killed_mid_run_loses_no_order(up_dir, tmp_path):
    """Also the live page (while the load runs) and the HTML report (after), rendered by
    headless Chromium with screenshots: the charts have points and the kill is marked."""
    import urllib.request
    port = up(up_dir, tmp_path)
    live = free_ports(1)
    events, html = tmp_path / "chaos.log", tmp_path / "report.html"
    try:
        p = load(port, "--rate", "60", "--duration", "8", "--live", f"127.0.0.1:{live}",
                 "--html", str(html), "--events", str(events),
                 "--metrics", f"127.0.0.1:{port + 20},127.0.0.1:{port + 21}")
        time.sleep(3)
        with open(os.path.join(up_dir, "services.json")) as f:
            victim = next(s["pid"] for s in json.load(f)
                          if s["service"] == "order" and s["instance"] == 0)
        os.kill(victim, signal.SIGKILL)
        events.write_text(f"{int(time.time() * 1000)} SIGKILL order-0\n")
        time.sleep(1)
        d = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{live}/live.json", timeout=5).read())
        assert d["phase"] == "load" and len(d["seconds"]) >= 2, d
        assert [e["what"] for e in d["events"]] == ["SIGKILL order-0"], d
        assert any("sagas" in s for s in d["seconds"]), d  # the order instances' /metrics
        dom = chromium(tmp_path, f"http://127.0.0.1:{live}/", tmp_path / "live.png")
        assert plotted(dom) >= 4 and 'class="kill"' in dom, dom[-3000:]
        out = p.communicate(timeout=240)[0].decode()
        assert p.returncode == 0, out
        assert "invariants: held" in out, out  # every order ended, stock and money agree
        assert "kill at t=" in out and "(SIGKILL order-0)" in out, out
        # the sagas the dead instance left were ended by the other, which appended their
        # outcomes: still one shipment per confirmed order
        assert "one per confirmed order and none for the others: checked" in out, out
        dom = chromium(tmp_path, f"file://{html}", tmp_path / "report.png")
        assert plotted(dom) >= 16 and 'class="kill"' in dom, dom[-3000:]
        assert "Shipments by status" in dom, dom[-3000:]
        assert re.search(r'<svg id="c-ship"[^>]*>.*?class="series"', dom, re.S), dom[-3000:]
        assert "invariants" in dom and ">held<" in dom, dom[-3000:]
    finally:
        down(up_dir)
