"""test_shop_shipment.py - the shipment service (apps/shop/shipment) in the shop: `keel up` with a
3-node cluster, two instances each of inventory, payment and order, and two shipment instances
(a consumer group on the order events, one SQLite file). keel-shopload drives orders through the
saga while one shipment instance is SIGKILLed and stays dead; at the end its --shipments check
wants the group caught up, exactly one shipment per confirmed order and none for the others.
Then: the statuses advance pending -> packed -> shipped on the configured timer, a "rejected"
outcome cancels a shipment not yet shipped (and not one already shipped), a redelivered or
repeated event creates nothing, and bad requests get 400."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import redis
from shopmanifest import core_services

from conftest import binary
from test_server_cli import free_base_port, up_dir  # noqa: F401
from test_shop import free_layout, free_ports, used_ports  # noqa: F401

PACK_MS, SHIP_MS = 1000, 1500


def manifest(tmp_path, base, port):
    m = tmp_path / "shop.yaml"
    m.write_text(core_services(base, port, payment_args=', --slow-ms, "500"') + f"""  - name: shipment
    run: [keel-shop-shipment, --keel, "{{keel}}", --registry, "{{keel}}",
          --db, "{{dir}}/shipment.db", --listen, "127.0.0.1:{{port}}", --id, "shipment-{{i}}",
          --pack-ms, "{PACK_MS}", --ship-ms, "{SHIP_MS}", --claim-idle-ms, "2000"]
    instances: 2
    port: {port + 30}
""")
    return str(m)


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def xadd(base, *fields):
    """XADD to the order category stream on whichever node leads (followers refuse writes)."""
    last = None
    for _ in range(50):
        for i in range(3):
            try:
                c = redis.Redis(host="127.0.0.1", port=base + i, socket_timeout=5)
                return c.execute_command("XADD", "es:$ce-order", "*", *fields)
            except (redis.exceptions.ResponseError, redis.exceptions.ConnectionError) as e:
                last = e
        time.sleep(0.2)
    raise AssertionError(f"no node took the XADD: {last}")


def wait_status(port, order, want, within_s=30):
    deadline, got = time.monotonic() + within_s, None
    while time.monotonic() < deadline:
        st, got = get(port, f"/shipments/{order}")
        if st == 200 and got["status"] == want:
            return got
        time.sleep(0.1)
    raise AssertionError(f"shipment {order}: wanted {want}, last {got}")


def test_one_shipment_per_confirmed_order_with_an_instance_killed(up_dir, tmp_path):
    base, port = free_layout(3, 40)
    man = manifest(tmp_path, base, port)
    r = subprocess.run([binary("keel"), "up", "--manifest", man, "--dir", up_dir, "--detach"],
                       capture_output=True, timeout=180)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    ship0, ship1 = port + 30, port + 31
    try:
        p = subprocess.Popen(
            [binary("keel-shopload"), "--inventory", f"127.0.0.1:{port},127.0.0.1:{port + 1}",
             "--orders", f"127.0.0.1:{port + 20},127.0.0.1:{port + 21}",
             "--payment", f"127.0.0.1:{port + 10}",
             "--shipments", f"127.0.0.1:{ship0},127.0.0.1:{ship1}",
             "--products", "20", "--stock", "60", "--deadline-ms", "5000",
             "--rate", "50", "--duration", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(4)  # orders confirmed and shipments created by both instances by now
        with open(os.path.join(up_dir, "services.json")) as f:
            victim = next(s["pid"] for s in json.load(f)
                          if s["service"] == "shipment" and s["instance"] == 0)
        os.kill(victim, signal.SIGKILL)  # and it stays dead: shipment-1 takes over its work
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
        assert "invariants: held" in out, out
        m = re.search(r"shipments: caught up \d+ ms after the checks above; of the run's "
                      r"(\d+) ended orders: (\d+) pending, (\d+) packed, (\d+) shipped, "
                      r"(\d+) cancelled", out)
        assert m, out
        assert "one per confirmed order and none for the others: checked" in out, out
        confirmed = int(re.search(r"confirmed\s+(\d+)", out.split("orders:")[1])[1])
        rejected = int(re.search(r"rejected\s+(\d+)", out.split("orders:")[1])[1])
        assert confirmed > 100 and rejected > 0, out  # declined cards, sold-out products
        assert sum(int(m[i]) for i in (2, 3, 4)) == confirmed and m[5] == "0", out

        # the survivor holds every shipment; given time, all of them ship
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st, stats = get(ship1, "/stats")
            if st == 200 and stats["shipped"] == confirmed:
                break
            time.sleep(0.2)
        assert stats["shipped"] == confirmed and stats["total"] == confirmed, stats
        assert stats["pending"] == 0 and stats["packed"] == 0, stats
        st, lag = get(ship1, "/lag")
        assert st == 200 and lag == {"lag_events": 0, "pending": 0}, lag

        # the list, page by page, is every shipment once
        seen, after = [], ""
        while True:
            st, page = get(ship1, f"/shipments?after={after}&limit=37")
            assert st == 200, page
            seen += [s["order"] for s in page["shipments"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert len(seen) == confirmed and seen == sorted(set(seen)), seen[:5]

        # the status advanced on the timer: packed at least PACK_MS after its creation, shipped
        # at least SHIP_MS after packing
        st, one = get(ship1, f"/shipments/{seen[0]}")
        assert st == 200 and one["status"] == "shipped", one
        assert one["packed_ms"] - one["created_ms"] >= PACK_MS, one
        assert one["shipped_ms"] - one["packed_ms"] >= SHIP_MS, one

        # a "confirmed" repeated for a shipped order (the order service retrying a lost append)
        # and a "rejected" for it: still one shipment, still shipped (too late to cancel)
        xadd(base, "agg", f"order-{seen[0]}", "version", "9", "type", "confirmed", "data", "",
             "meta", "")
        xadd(base, "agg", f"order-{seen[0]}", "version", "10", "type", "rejected", "data", "",
             "meta", "")
        # a confirmed order, then rejected before it is packed: cancelled, and it stays so
        xadd(base, "agg", "order-zz-cancel", "version", "2", "type", "confirmed", "data", "",
             "meta", "")
        xadd(base, "agg", "order-zz-cancel", "version", "3", "type", "rejected", "data", "",
             "meta", "")
        got = wait_status(ship1, "zz-cancel", "cancelled")
        assert "packed_ms" not in got and got["cancelled_ms"] >= got["created_ms"], got
        wait_status(ship1, "zz-cancel", "cancelled")  # still, after the next ticks
        time.sleep((PACK_MS + SHIP_MS) / 1000 + 0.5)
        assert get(ship1, "/shipments/zz-cancel")[1]["status"] == "cancelled"
        st, again = get(ship1, f"/shipments/{seen[0]}")
        assert again == one, (one, again)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st, stats2 = get(ship1, "/stats")
            if get(ship1, "/lag")[1] == {"lag_events": 0, "pending": 0}:
                break
            time.sleep(0.1)
        st, stats2 = get(ship1, "/stats")
        assert stats2["total"] == confirmed + 1 and stats2["cancelled"] == 1, stats2
        assert stats2["repeated"] == stats["repeated"] + 1, (stats, stats2)

        # the killed instance comes back under its name: it reads what it left pending (taken
        # over by now), applies nothing twice, and serves the same table
        r = subprocess.run([binary("keel"), "up", "--manifest", man, "--dir", up_dir, "--detach"],
                           capture_output=True, timeout=180)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        st, back = get(ship0, "/stats")
        assert st == 200 and back["total"] == confirmed + 1 and back["created"] == 0, back

        # an order without a shipment, and bad requests
        assert get(ship1, "/shipments/no-such-order") == (200, {"order": "no-such-order",
                                                                "status": "none"})
        assert get(ship1, "/shipments/" + "x" * 65)[0] == 400
        assert get(ship1, "/shipments/a%20b")[0] == 400
        assert get(ship1, "/shipments?limit=0")[0] == 400
        assert get(ship1, "/shipments?limit=1001")[0] == 400
        assert get(ship1, "/shipments?after=a/b")[0] in (400, 404)
        assert get(ship1, "/shipments?sort=desc")[0] == 400
    finally:
        subprocess.run([binary("keel"), "down", "--dir", up_dir], capture_output=True, timeout=60)
