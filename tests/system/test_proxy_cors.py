"""test_proxy_cors.py - keel proxy's per-route CORS policy against a fake upstream.

A preflight is answered by the proxy (204 with the Access-Control-Allow-* fields, or 403 when
its origin, method or a header is not allowed) and never reaches the upstream, not even on a
route that requires a JWT (a browser sends no credentials with a preflight). Other requests go
upstream; an allowed Origin gets Access-Control-Allow-Origin (and -Credentials, -Expose-Headers)
on the answer, another origin gets none of them. Every answer on a CORS route varies on Origin.
An origin pattern (https://*.shop.example) allows the origins it matches, and the answer
names the request's own origin. A preflight asking Access-Control-Request-Private-Network: true
gets Access-Control-Allow-Private-Network: true only on a route with allow_private_network; on
another it is answered without it (as Envoy does), its reason said. Outcomes are counted in
keel_proxy_cors_total.
"""

import json
import urllib.request

import pytest

from proxyfake import connect, read_response, request, start_proxy, with_workers

SHOP = "https://shop.example"
SUBS = "https://*.shop.example"  # an origin pattern: any subdomain of shop.example over https


def config(up):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
jwt_providers:
  - name: shop
    jwks: '{{"keys": [{{"kty": "oct", "kid": "k1", "k": "Y29ycy1zeXN0ZW0tdGVzdC1oczI1Ni1zZWNyZXQtMDEyMzQ1Njc4OQ"}}]}}'
routes:
  - name: api
    match: {{prefix: /api/, methods: [GET, PUT]}}
    cluster: app
    cors:
      allow_origins: ["{SHOP}"]
      allow_methods: [GET, PUT]
      allow_headers: [authorization, content-type, idempotency-key]
      expose_headers: [x-request-id]
      max_age_s: 600
      allow_credentials: true
  - name: public
    match: {{prefix: /public/}}
    cluster: app
    cors: {{allow_origins: ["*"], allow_methods: [GET, DELETE]}}
  - name: secure
    match: {{prefix: /secure/}}
    jwt: shop
    cluster: app
    cors: {{allow_origins: ["{SHOP}"], allow_headers: [authorization]}}
  - name: sub
    match: {{prefix: /sub/}}
    cluster: app
    cors: {{allow_origins: ["{SUBS}"], allow_methods: ["*"], allow_credentials: true}}
  - name: lan
    match: {{prefix: /lan/}}
    cluster: app
    cors: {{allow_origins: ["{SHOP}"], allow_methods: [PUT], allow_private_network: true}}
  - name: plain
    match: {{prefix: /}}
    cluster: app
"""


@pytest.fixture
def gw(procs, tmp_path, up):
    _, port, admin = start_proxy(procs, tmp_path, config(up))
    return port, admin


def preflight(port, target, origin, method, headers=None, private_network=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    if private_network is not None:
        h["Access-Control-Request-Private-Network"] = private_network
    return request(port, "OPTIONS", target, h)


def one(h, name):
    v = h.get(name, [])
    assert len(v) == 1, (name, h)
    return v[0]


def test_an_allowed_preflight_is_answered_by_the_proxy(gw, up):
    port, _ = gw
    st, h, body = preflight(port, "/api/orders", SHOP, "PUT", "Content-Type, idempotency-key")
    assert st == 204 and body == b"", (st, h)
    assert one(h, "access-control-allow-origin") == SHOP
    assert one(h, "access-control-allow-methods") == "GET, PUT"
    assert one(h, "access-control-allow-headers") == "content-type, idempotency-key"
    assert one(h, "access-control-max-age") == "600"
    assert one(h, "access-control-allow-credentials") == "true"
    assert one(h, "vary") == "Origin"
    assert "content-length" not in h  # RFC 9110: a 204 has none
    assert up.count == 0  # nothing went upstream


def test_a_wildcard_route_answers_star_without_credentials(gw, up):
    port, _ = gw
    st, h, _ = preflight(port, "/public/x", "https://anyone.example", "DELETE")
    assert st == 204
    assert one(h, "access-control-allow-origin") == "*"
    assert one(h, "access-control-allow-methods") == "GET, DELETE"
    assert "access-control-allow-credentials" not in h and "access-control-max-age" not in h
    st, h, body = request(port, "GET", "/public/x", {"Origin": "https://anyone.example"})
    assert st == 200 and one(h, "access-control-allow-origin") == "*"
    assert json.loads(body)["method"] == "GET"
    assert up.count == 1


@pytest.mark.parametrize(
    "target,origin,method,headers,reason",
    [
        ("/api/o", "https://evil.example", "PUT", None, "refused-origin"),
        ("/api/o", "https://SHOP.example", "GET", None, "refused-origin"),  # byte-for-byte
        ("/public/o", "https://a.example", "PATCH", None, "refused-method"),
        ("/api/o", SHOP, "PUT", "content-type, x-secret", "refused-headers"),
    ],
)
def test_a_refused_preflight_is_a_403_without_allow_fields(gw, up, target, origin, method, headers, reason):
    port, _ = gw
    st, h, _ = preflight(port, target, origin, method, headers)
    assert st == 403, (st, h)
    assert one(h, "x-keel-reason") == reason
    assert not [k for k in h if k.startswith("access-control-")], h
    assert one(h, "vary") == "Origin"
    assert up.count == 0


def test_a_preflight_asking_for_a_method_the_route_does_not_match_goes_to_the_next_route(gw, up):
    port, _ = gw
    # /api/ matches GET and PUT only: a preflight for DELETE stands for a DELETE, which the
    # catch-all route (no CORS) serves, so the OPTIONS goes upstream as an ordinary request
    st, h, body = preflight(port, "/api/o", SHOP, "DELETE")
    assert st == 200 and json.loads(body)["method"] == "OPTIONS"
    assert "access-control-allow-origin" not in h
    assert up.count == 1


def test_a_preflight_needs_no_token_on_a_jwt_route(gw, up):
    port, _ = gw
    st, h, _ = preflight(port, "/secure/x", SHOP, "GET", "authorization")
    assert st == 204 and one(h, "access-control-allow-headers") == "authorization"
    assert up.count == 0
    # the actual request still needs its token; its 401 is readable by the allowed origin
    st, h, _ = request(port, "GET", "/secure/x", {"Origin": SHOP})
    assert st == 401
    assert one(h, "access-control-allow-origin") == SHOP
    assert up.count == 0


def test_an_actual_request_gets_the_fields_only_for_an_allowed_origin(gw, up):
    port, _ = gw
    st, h, body = request(port, "GET", "/api/o", {"Origin": SHOP})
    assert st == 200
    assert one(h, "access-control-allow-origin") == SHOP
    assert one(h, "access-control-allow-credentials") == "true"
    assert one(h, "access-control-expose-headers") == "x-request-id"
    assert "Origin" in h["vary"]
    got = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert got["origin"] == SHOP  # the Origin goes upstream unchanged
    st, h, _ = request(port, "GET", "/api/o", {"Origin": "https://evil.example"})
    assert st == 200  # passed through: the browser keeps it from the page
    assert not [k for k in h if k.startswith("access-control-")], h
    assert "Origin" in h["vary"]
    st, h, _ = request(port, "GET", "/plain", {"Origin": SHOP})  # a route without CORS
    assert st == 200 and "access-control-allow-origin" not in h and "vary" not in h
    assert up.count == 3


def test_an_options_request_without_a_request_method_is_not_a_preflight(gw, up):
    port, _ = gw
    st, h, body = request(port, "OPTIONS", "/public/x", {"Origin": SHOP})
    assert st == 200 and json.loads(body)["method"] == "OPTIONS"
    assert one(h, "access-control-allow-origin") == "*"
    assert up.count == 1


def test_a_preflight_keeps_the_connection_for_the_next_request(gw, up):
    port, _ = gw
    s = connect(port)
    try:
        s.sendall(
            f"OPTIONS /api/o HTTP/1.1\r\nHost: t\r\nOrigin: {SHOP}\r\n"
            "Access-Control-Request-Method: PUT\r\n\r\n"
            f"PUT /api/o HTTP/1.1\r\nHost: t\r\nOrigin: {SHOP}\r\nContent-Length: 2\r\n\r\nhi".encode()
        )
        st, h, _, rest = read_response(s)
        assert st == 204 and "connection" not in h
        st, h, body, _ = read_response(s, rest)
        assert st == 200 and json.loads(body)["method"] == "PUT"
        assert one(h, "access-control-allow-origin") == SHOP
    finally:
        s.close()
    assert up.count == 1


def test_outcomes_are_counted_per_route(gw, up):
    port, admin = gw
    preflight(port, "/api/o", SHOP, "PUT")
    preflight(port, "/api/o", SHOP, "GET")
    preflight(port, "/api/o", "https://evil.example", "GET")
    preflight(port, "/api/o", SHOP, "GET", "x-nope")
    preflight(port, "/public/o", SHOP, "PATCH")
    request(port, "GET", "/api/o", {"Origin": SHOP})
    request(port, "GET", "/api/o", {"Origin": "https://evil.example"})
    request(port, "GET", "/api/o")  # no Origin: not counted
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        m = r.read().decode()
    for line in [
        'keel_proxy_cors_total{route="api",outcome="preflight"} 2',
        'keel_proxy_cors_total{route="api",outcome="refused-origin"} 1',
        'keel_proxy_cors_total{route="api",outcome="refused-headers"} 1',
        'keel_proxy_cors_total{route="api",outcome="refused-method"} 0',
        'keel_proxy_cors_total{route="public",outcome="refused-method"} 1',
        'keel_proxy_cors_total{route="api",outcome="allowed-origin"} 1',
        'keel_proxy_cors_total{route="api",outcome="other-origin"} 1',
    ]:
        assert line in m, (line, [x for x in m.splitlines() if "cors" in x])
    assert "keel_proxy_cors_total{route=\"plain\"" not in m


def test_check_refuses_a_wildcard_with_credentials_naming_the_line(tmp_path):
    import subprocess

    from conftest import binary

    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners: [{name: l, address: 127.0.0.1:0}]\n"
        "clusters: [{name: a, hosts: [127.0.0.1:9]}]\n"
        "routes:\n"
        "  - cluster: a\n"
        "    cors: {allow_origins: ['*'], allow_credentials: true, allow_methods: [get]}\n"
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert ":5:" in out or "line 5" in out, out
    assert "allow_credentials: true is refused" in out and "'get' is not an upper-case" in out, out


def test_a_subdomain_pattern_answers_the_requests_own_origin(gw, up):
    port, _ = gw
    eu = "https://eu.shop.example"
    st, h, body = preflight(port, "/sub/cart", eu, "PATCH", "content-type")
    assert st == 403 and one(h, "x-keel-reason") == "refused-headers"  # none listed
    st, h, body = preflight(port, "/sub/cart", eu, "PATCH")
    assert st == 204 and body == b"", (st, h)
    assert one(h, "access-control-allow-origin") == eu  # never the pattern, never "*"
    assert one(h, "access-control-allow-methods") == "PATCH"  # "*": the method asked
    assert one(h, "access-control-allow-credentials") == "true"
    assert one(h, "vary") == "Origin"
    assert up.count == 0
    deep = "https://Pay.EU.shop.example"  # deeper, and in capitals: echoed as sent
    st, h, body = request(port, "GET", "/sub/cart", {"Origin": deep})
    assert st == 200
    assert one(h, "access-control-allow-origin") == deep
    assert one(h, "access-control-allow-credentials") == "true"
    assert "Origin" in h["vary"]
    got = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert got["origin"] == deep
    assert up.count == 1


@pytest.mark.parametrize(
    "origin",
    [
        "https://shop.example",  # the domain itself: a pattern needs one more label
        "https://evilshop.example",
        "http://eu.shop.example",  # another scheme
        "https://eu.shop.example:8443",  # another port
        "https://eu.shop.example.evil.net",
        "https://eu.shop.example/x",  # not a serialized origin
    ],
)
def test_an_origin_the_pattern_does_not_match_gets_no_allow_fields(gw, up, origin):
    port, _ = gw
    st, h, _ = preflight(port, "/sub/cart", origin, "GET")
    assert st == 403 and one(h, "x-keel-reason") == "refused-origin", (st, h)
    assert not [k for k in h if k.startswith("access-control-")], h
    st, h, _ = request(port, "GET", "/sub/cart", {"Origin": origin})
    assert st == 200  # passed through: the browser keeps it from the page
    assert not [k for k in h if k.startswith("access-control-")], h
    assert "Origin" in h["vary"]
    assert up.count == 1


def test_an_echoed_origin_does_not_outlive_its_request(gw, up):
    port, _ = gw
    eu = "https://eu.shop.example"
    s = connect(port)
    try:
        s.sendall(
            f"GET /sub/a HTTP/1.1\r\nHost: t\r\nOrigin: {eu}\r\n\r\n"
            "GET /sub/b HTTP/1.1\r\nHost: t\r\n\r\n"
            "GET /sub/c HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n".encode()
        )
        st, h, _, rest = read_response(s)
        assert st == 200 and one(h, "access-control-allow-origin") == eu
        for _ in range(2):
            st, h, _, rest = read_response(s, rest)
            assert st == 200 and "access-control-allow-origin" not in h, h
    finally:
        s.close()
    assert up.count == 3


def test_check_names_a_bad_origin_pattern_with_its_line(tmp_path):
    import subprocess

    from conftest import binary

    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners: [{name: l, address: 127.0.0.1:0}]\n"
        "clusters: [{name: a, hosts: [127.0.0.1:9]}]\n"
        "routes:\n"
        "  - cluster: a\n"
        "    cors:\n"
        "      allow_origins:\n"
        "        - 'https://*.'\n"
        "        - '*.shop.example'\n"
        "        - 'https://eu.*.shop.example'\n"
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    for line, text in [
        (7, "has no host after '*.'"),
        (8, "has no scheme"),
        (9, "has a '*' not at the start of the host"),
    ]:
        assert any((f":{line}:" in l or f"line {line}" in l) and text in l for l in out.splitlines()), out


def test_a_private_network_preflight_is_granted_on_a_route_that_allows_it(gw, up):
    port, _ = gw
    for asked in ["true", "TRUE"]:
        st, h, body = preflight(port, "/lan/printer", SHOP, "PUT", private_network=asked)
        assert st == 204 and body == b"", (st, h)
        assert one(h, "access-control-allow-private-network") == "true"
        assert one(h, "access-control-allow-origin") == SHOP
        assert one(h, "access-control-allow-methods") == "PUT"
        assert "x-keel-reason" not in h
    for asked in [None, "false", "yes"]:  # not asked: no grant, as before
        st, h, _ = preflight(port, "/lan/printer", SHOP, "PUT", private_network=asked)
        assert st == 204 and "access-control-allow-private-network" not in h, (asked, h)
        assert one(h, "access-control-allow-origin") == SHOP and "x-keel-reason" not in h
    # a refused preflight stays refused, asked or not
    st, h, _ = preflight(port, "/lan/printer", "https://evil.example", "PUT", private_network="true")
    assert st == 403 and one(h, "x-keel-reason") == "refused-origin"
    assert not [k for k in h if k.startswith("access-control-")], h
    assert up.count == 0


def test_a_private_network_preflight_on_another_route_gets_no_grant(gw, up):
    port, admin = gw
    st, h, body = preflight(port, "/api/o", SHOP, "PUT", private_network="true")
    # as Envoy: answered, without Access-Control-Allow-Private-Network; the browser decides
    assert st == 204 and body == b"", (st, h)
    assert "access-control-allow-private-network" not in h, h
    assert one(h, "access-control-allow-origin") == SHOP
    assert one(h, "access-control-allow-methods") == "GET, PUT"
    assert one(h, "x-keel-reason") == "private-network-not-allowed"
    assert one(h, "vary") == "Origin"
    st, h, _ = preflight(port, "/api/o", SHOP, "PUT")  # not asked: as before
    assert st == 204 and "x-keel-reason" not in h
    preflight(port, "/lan/x", SHOP, "PUT", private_network="true")
    assert up.count == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        m = r.read().decode()
    for line in [
        'keel_proxy_cors_total{route="api",outcome="private-network-not-allowed"} 1',
        'keel_proxy_cors_total{route="api",outcome="preflight"} 1',
        'keel_proxy_cors_total{route="lan",outcome="preflight"} 1',
        'keel_proxy_cors_total{route="lan",outcome="private-network-not-allowed"} 0',
    ]:
        assert line in m, (line, [x for x in m.splitlines() if "cors" in x])


def test_check_refuses_a_non_boolean_allow_private_network_naming_the_line(tmp_path):
    import subprocess

    from conftest import binary

    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners: [{name: l, address: 127.0.0.1:0}]\n"
        "clusters: [{name: a, hosts: [127.0.0.1:9]}]\n"
        "routes:\n"
        "  - cluster: a\n"
        "    cors:\n"
        "      allow_origins: ['https://shop.example']\n"
        "      allow_private_network: sometimes\n"
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert any(
        (":7:" in l or "line 7" in l) and "allow_private_network: 'sometimes' is not true or false" in l
        for l in out.splitlines()
    ), out


# ---- a top-level `cors:`: the default of every route without its own (docs/proxy.md, "CORS") --


def defaults_config(up, default_origin=SHOP):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
cors:
  allow_origins: ["{default_origin}"]
  allow_methods: [GET, PUT]
  max_age_s: 60
routes:
  - name: own
    match: {{prefix: /own/}}
    cluster: app
    cors: {{allow_origins: ["https://other.example"], allow_methods: [DELETE]}}
  - name: optout
    match: {{prefix: /optout/}}
    cluster: app
    cors: off
  - name: inherits
    match: {{prefix: /}}
    cluster: app
"""


def test_a_route_without_cors_answers_preflights_by_the_top_level_default(procs, tmp_path, up):
    _, port, admin = start_proxy(procs, tmp_path, defaults_config(up))
    st, h, body = preflight(port, "/inherited/x", SHOP, "PUT")
    assert st == 204 and body == b"", (st, h)
    assert one(h, "access-control-allow-origin") == SHOP
    assert one(h, "access-control-allow-methods") == "GET, PUT"
    assert one(h, "access-control-max-age") == "60"
    assert one(h, "vary") == "Origin"
    assert up.count == 0
    st, h, _ = preflight(port, "/inherited/x", "https://other.example", "PUT")
    assert st == 403 and one(h, "x-keel-reason") == "refused-origin"
    st, h, _ = request(port, "GET", "/inherited/x", {"Origin": SHOP})
    assert st == 200, (st, h, up.count)
    assert one(h, "access-control-allow-origin") == SHOP and "Origin" in h["vary"]
    assert up.count == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        m = r.read().decode()
    for line in [  # counted under the route's own name
        'keel_proxy_cors_total{route="inherits",outcome="preflight"} 1',
        'keel_proxy_cors_total{route="inherits",outcome="refused-origin"} 1',
        'keel_proxy_cors_total{route="inherits",outcome="allowed-origin"} 1',
    ]:
        assert line in m, (line, [x for x in m.splitlines() if "cors" in x])
    assert 'keel_proxy_cors_total{route="optout"' not in m


def test_a_route_with_cors_off_forwards_the_options_as_an_ordinary_request(procs, tmp_path, up):
    _, port, _ = start_proxy(procs, tmp_path, defaults_config(up))
    st, h, body = preflight(port, "/optout/x", SHOP, "PUT")
    assert st == 200 and json.loads(body)["method"] == "OPTIONS", (st, h)
    assert not [k for k in h if k.startswith("access-control-")], h
    assert "vary" not in h
    assert up.count == 1


def test_a_route_with_its_own_cors_replaces_the_default_whole(procs, tmp_path, up):
    _, port, _ = start_proxy(procs, tmp_path, defaults_config(up))
    st, h, _ = preflight(port, "/own/x", "https://other.example", "DELETE")
    assert st == 204, (st, h)
    assert one(h, "access-control-allow-origin") == "https://other.example"
    assert one(h, "access-control-allow-methods") == "DELETE"
    assert "access-control-max-age" not in h  # not merged from the default
    st, h, _ = preflight(port, "/own/x", SHOP, "DELETE")  # the default's origin is not merged in
    assert st == 403 and one(h, "x-keel-reason") == "refused-origin"
    assert up.count == 0


def test_a_reload_that_changes_the_default_applies_to_the_inheriting_routes(procs, tmp_path, up):
    from conftest import wait_until

    p, port, _ = start_proxy(procs, tmp_path, defaults_config(up))
    assert preflight(port, "/x", SHOP, "PUT")[0] == 204
    (tmp_path / "proxy.yaml").write_text(with_workers(defaults_config(up, "https://new.example")))
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: preflight(port, "/x", "https://new.example", "PUT")[0] == 204, timeout_s=3)
    assert preflight(port, "/x", SHOP, "PUT")[0] == 403


def test_check_names_the_line_of_an_error_in_the_top_level_cors(tmp_path):
    import subprocess

    from conftest import binary

    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners: [{name: l, address: 127.0.0.1:0}]\n"
        "clusters: [{name: a, hosts: [127.0.0.1:9]}]\n"
        "cors:\n"
        "  allow_origins: [https://shop.example/]\n"
        "routes:\n"
        "  - cluster: a\n"
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True, text=True, timeout=10)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert ":4:" in out or "line 4" in out, out
    assert "has a path" in out, out
