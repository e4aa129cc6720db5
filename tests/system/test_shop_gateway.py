"""test_shop_gateway.py - the shop's gateway (apps/shop/gateway.yaml, the file `make demo` runs,
with its ports swapped for free ones) in front of a 3-node keel cluster and two instances each of
inventory, payment, order and shipment: an order placed through the gateway, then read back whole
from GET /orders/{id}/full (the order, its payment, its stock reservation and its shipment from
four services at once), and the partial answer once every payment instance, then every shipment
instance, is dead."""
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from conftest import REPO, binary
from shopmanifest import core_services
from test_server_cli import free_base_port, up_dir  # noqa: F401
from test_shop import free_layout, free_ports, used_ports  # noqa: F401

SECRET = b"keel-shop-demo-hs256-secret-change-me"  # apps/shop/gateway.yaml's demo key


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub):
    now = int(time.time())
    h = {"alg": "HS256", "typ": "JWT", "kid": "demo"}
    c = {"iss": "keel-shop", "aud": "shop-api", "sub": sub, "exp": now + 600}
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(c).encode())
    return signing + "." + b64(hmac.new(SECRET, signing.encode(), hashlib.sha256).digest())


def manifest(tmp_path, base, port, gw):
    with open(os.path.join(REPO, "apps", "shop", "gateway.yaml")) as f:
        text = f.read()
    # the listener and admin addresses are ${SHOP_HOST:-127.0.0.1}:8000 and :8001
    for old, new in (("${SHOP_HOST:-127.0.0.1}:8000", f"127.0.0.1:{gw}"),
                     ("${SHOP_HOST:-127.0.0.1}:8001", f"127.0.0.1:{gw + 1}")):
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
                        ",".join(f"127.0.0.1:{base + i}" for i in range(3)))
    (tmp_path / "gateway.yaml").write_text(text)
    m = tmp_path / "shop.yaml"
    m.write_text(core_services(base, port) + f"""  - name: shipment
    run: [keel-shop-shipment, --keel, "{{keel}}", --registry, "{{keel}}",
          --db, "{{dir}}/shipment.db", --listen, "127.0.0.1:{{port}}", --id, "shipment-{{i}}",
          --pack-ms, "60000", --ship-ms, "60000"]
    instances: 2
    port: {port + 30}
  - name: gateway
    run: [keel, proxy, --config, "{{here}}/gateway.yaml"]
    port: {gw}
    ready: /healthz
""")
    return str(m)


def call(gw, method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{gw}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_the_aggregated_order_view_and_its_partial_answer(up_dir, tmp_path):
    base, port = free_layout(3, 30)
    gw = free_ports(2, avoid=used_ports(base, 3, port, 30))
    man = manifest(tmp_path, base, port, gw)
    r = subprocess.run([binary("keel"), "up", "--manifest", man, "--dir", up_dir, "--detach"],
                       capture_output=True, timeout=180)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    try:
        auth = {"Authorization": "Bearer " + token("c1")}
        # wait until the gateway's service clusters have their instances (registry discovery)
        deadline = time.monotonic() + 30
        while True:
            st, _ = call(gw, "POST", "/products/p1/restock", {"qty": 10})
            if st == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert st == 200
        st, placed = call(gw, "POST", "/orders", {"customer": "c1", "items": [{"product": "p1", "qty": 2}],
                                                  "amount_cents": 1250, "card": "ok"},
                          {**auth, "Idempotency-Key": "agg-1"})
        assert st == 201, placed
        oid = placed["order"]
        # the shipment comes from the order's "confirmed" event, a moment after the answer
        deadline = time.monotonic() + 30
        while True:
            st, full = call(gw, "GET", f"/orders/{oid}/full", headers=auth)
            if st != 200 or full["shipment"] is None or full["shipment"]["status"] != "none":
                break
            assert time.monotonic() < deadline, full
            time.sleep(0.1)
        assert st == 200, full
        assert list(full) == ["order", "payment", "reservation", "shipment", "partial", "errors"]
        assert full["partial"] is False and full["errors"] == []
        assert full["shipment"]["order"] == oid and full["shipment"]["status"] == "pending", full
        # and on its own route, with the same JWT rules
        st, ship = call(gw, "GET", f"/shipments/{oid}", headers=auth)
        assert st == 200 and ship == full["shipment"], ship
        assert call(gw, "GET", f"/shipments/{oid}")[0] == 401
        assert full["order"]["order"] == oid and full["order"]["status"] == "confirmed"
        assert full["payment"]["order"] == oid and full["payment"]["amount_cents"] == 1250
        assert full["reservation"]["status"] == "confirmed"
        assert full["reservation"]["items"] == [{"product": "p1", "qty": 2}]
        # the gateway's JWT rules hold on the aggregate too
        st, _ = call(gw, "GET", f"/orders/{oid}/full")
        assert st == 401
        # the Idempotency-Key: the same order again is the same answer (from its events, no
        # step runs again); the key used for another order is refused; a rejected order stays
        # rejected when asked again
        body = {"customer": "c1", "items": [{"product": "p1", "qty": 2}],
                "amount_cents": 1250, "card": "ok"}
        st, again = call(gw, "POST", "/orders", dict(reversed(list(body.items()))),
                         {**auth, "Idempotency-Key": "agg-1"})
        assert (st, again) == (201, {"order": oid, "status": "confirmed"}), again
        st, other = call(gw, "POST", "/orders", {**body, "amount_cents": 999},
                         {**auth, "Idempotency-Key": "agg-1"})
        assert st == 422, other
        for _ in range(2):
            st, declined = call(gw, "POST", "/orders", {**body, "card": "decline"},
                                {**auth, "Idempotency-Key": "agg-2"})
            assert st == 409 and declined["status"] == "rejected", declined
        st, full = call(gw, "GET", f"/orders/{oid}/full", headers=auth)
        assert full["payment"]["status"] == "charged" and full["reservation"]["status"] == "confirmed"

        # an order that does not exist: the required part's 404
        st, nf = call(gw, "GET", "/orders/no-such-order/full", headers=auth)
        assert st == 404 and nf["order"] is None

        # every payment instance dies: the view is still answered, without the payment
        with open(os.path.join(up_dir, "services.json")) as f:
            victims = [s["pid"] for s in json.load(f) if s["service"] == "payment"]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        t0 = time.monotonic()
        st, part = call(gw, "GET", f"/orders/{oid}/full", headers=auth)
        assert st == 200, part
        assert time.monotonic() - t0 < 2.5  # bounded by the payment part's timeout (1 s)
        assert part["partial"] is True and part["payment"] is None
        assert part["order"]["status"] == "confirmed" and part["reservation"]["status"] == "confirmed"
        assert [e["part"] for e in part["errors"]] == ["payment"]
        assert part["errors"][0]["error"] in ("connect-failed", "no-healthy-upstream", "upstream-reset")
        assert part["shipment"]["status"] == "pending"

        # every shipment instance dies too: the order is still answered, without both
        with open(os.path.join(up_dir, "services.json")) as f:
            victims = [s["pid"] for s in json.load(f) if s["service"] == "shipment"]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        t0 = time.monotonic()
        st, part = call(gw, "GET", f"/orders/{oid}/full", headers=auth)
        assert st == 200, part
        assert time.monotonic() - t0 < 2.5  # the parts run at once, each within 1 s
        assert part["partial"] is True and part["payment"] is None and part["shipment"] is None
        assert part["order"]["status"] == "confirmed"
        assert part["reservation"]["status"] == "confirmed"
        assert [e["part"] for e in part["errors"]] == ["payment", "shipment"]
    finally:
        subprocess.run([binary("keel"), "down", "--dir", up_dir], capture_output=True, timeout=60)
