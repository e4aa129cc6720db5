"""test_proxy_example.py - the example config in docs/proxy.md, run as written and exercised route
by route.

The example is taken from the document byte for byte; only its ports change (every
127.0.0.1:PORT becomes a free port, listeners get 0), because a test cannot own 8080. Fake
upstreams stand where the example's hosts are.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import time
import urllib.request
from collections import Counter

from conftest import REPO
from proxyfake import FakeUpstream, request, start_proxy


def example_text():
    with open(os.path.join(REPO, "docs", "proxy.md")) as f:
        doc = f.read()
    m = re.search(r"```yaml\n(# keel-proxy-example\n.*?)```", doc, re.S)
    assert m, "docs/proxy.md lost its example"
    return m.group(1)


def hs256(claims, secret=b"keel-example-hs256-secret-change-me"):
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    signing = b64(b'{"alg":"HS256","kid":"example"}') + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


def test_the_documented_example_proxies_every_route(procs, tmp_path):
    text = example_text()
    ups = {}
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(9\d\d\d)\b", text))):
        if port == "9901":
            continue
        ups[port] = FakeUpstream(f"host{port}")
    try:
        def swap(m):
            port = m.group(1)
            if port in ups:
                return ups[port].addr
            return "127.0.0.1:0"  # the listener and the admin listener

        cfg = re.sub(r"127\.0\.0\.1:(\d+)", swap, text)
        _, port, admin = start_proxy(procs, tmp_path, cfg)

        st, _, body = request(port, "GET", "/healthz")
        assert (st, body) == (200, b"ok\n")

        st, h, _ = request(port, "GET", "/v0/orders")
        assert st == 308 and h["location"] == ["/api/"]

        st, _, body = request(port, "GET", "/api/orders/1", {"x-canary": "true"})
        assert st == 200 and json.loads(body)["upstream"] == "host9003"

        # the 90/10 split between orders_v1 (9001, 9002) and orders_v2 (9003)
        seen = Counter()
        for _ in range(300):
            st, _, body = request(port, "GET", "/api/orders")
            assert st == 200
            seen[json.loads(body)["upstream"]] += 1
        v2 = seen["host9003"] / 300
        assert 0.03 < v2 < 0.2, seen
        assert seen["host9001"] > 0 and seen["host9002"] > 0, seen  # p2c uses both v1 hosts

        st, h, body = request(port, "GET", "/api/users/42", {"x-user-id": "u1", "x-debug": "1"})
        info = json.loads(body)
        got = {k.lower(): v for k, v in info["headers"]}
        assert st == 200 and got["x-gateway"] == "keel" and "x-debug" not in got
        assert "server" not in h
        # hash_on header: the same user always lands on the same host
        owners = {json.loads(request(port, "GET", "/api/users/7", {"x-user-id": "same"})[2])["upstream"] for _ in range(10)}
        assert len(owners) == 1

        # the account route wants a token of the example's provider (its HS256 key is inline)
        st, h, _ = request(port, "GET", "/api/account")
        assert st == 401 and h["www-authenticate"] == ['Bearer realm="keel"']
        claims = {"iss": "https://auth.shop.example", "aud": "shop-api", "sub": "u7",
                  "exp": int(time.time()) + 60}
        st, _, body = request(port, "GET", "/api/account", {"Authorization": "Bearer " + hs256(claims),
                                                           "x-user-id": "spoofed"})
        got = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert st == 200 and got["x-user-id"] == "u7"

        st, _, body = request(port, "GET", "/api/catalog/x")
        assert st == 200 and json.loads(body)["target"] == "/catalog/x"

        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5) as r:
            names = [c["name"] for c in json.loads(r.read())["clusters"]]
        assert names == ["orders_v1", "orders_v2", "users"]
    finally:
        for u in ups.values():
            u.close()
