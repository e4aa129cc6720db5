"""test_proxy_jwt.py - keel proxy's JWT edge against a fake upstream, with tokens signed here.

Tokens are HS256 (hmac from the standard library; RS256 and ES256 verification is covered by
tests/unit/test_jwt.c). Each refusal reason gets its 401 and WWW-Authenticate reason, chosen
claims reach the upstream as headers, a client cannot spoof those headers (not even on a route
where the token is optional and absent), a claim-keyed rate limit answers 429 per subject, and
a rotated JWKS file is read again on SIGHUP.
"""

import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from conftest import binary, wait_until
from proxyfake import request, start_proxy

SECRET = b"system-test-hs256-secret-0123456789"
ISSUER = "https://auth.shop"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks(secret=SECRET, kid="k1"):
    return json.dumps({"keys": [{"kty": "oct", "kid": kid, "k": b64(secret)}]})


def token(claims=None, header=None, secret=SECRET, now=None):
    now = int(time.time()) if now is None else now
    c = {"iss": ISSUER, "aud": "orders", "sub": "alice", "exp": now + 300}
    c.update(claims or {})
    c = {k: v for k, v in c.items() if v is not None}
    h = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    h.update(header or {})
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(c).encode())
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


def config(up, jwks_path):
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
    issuer: {ISSUER}
    audiences: [orders, users]
    jwks_file: {jwks_path}
    clock_skew_s: 5
    claims_to_headers:
      - {{claim: sub, header: x-user-id}}
      - {{claim: tier, header: x-tier}}
      - {{claim: realm.team, header: x-team}}
routes:
  - name: limited
    match: {{prefix: /limited}}
    jwt: shop
    rate_limit: {{key: "claim:sub", requests_per_s: 1, burst: 3}}
    cluster: app
  - name: open
    match: {{prefix: /open}}
    jwt: {{provider: shop, required: false}}
    cluster: app
  - name: secure
    match: {{prefix: /}}
    jwt: shop
    cluster: app
"""


@pytest.fixture
def gw(procs, tmp_path, up):
    path = tmp_path / "jwks.json"
    path.write_text(jwks())
    p, port, admin = start_proxy(procs, tmp_path, config(up, path))
    return p, port, admin, path


def fields(body):
    """The upstream's view of the request's fields: lower-case name -> list of values."""
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def bearer(t):
    return {"Authorization": "Bearer " + t}


def refused(port, target, headers):
    st, h, _ = request(port, "GET", target, headers)
    assert st == 401, st
    return h["www-authenticate"][0]


def test_a_valid_token_passes_and_its_claims_reach_the_upstream(gw, up):
    _, port, _, _ = gw
    st, _, body = request(port, "GET", "/echo", bearer(token({"tier": "gold", "aud": ["x", "users"]})))
    assert st == 200
    f = fields(body)
    assert f["x-user-id"] == ["alice"] and f["x-tier"] == ["gold"]
    assert "authorization" not in f  # forward defaults to false, as in Envoy


def test_a_nested_claim_reaches_the_upstream_and_can_be_spoofed_by_no_one(gw, up):
    # claims_to_headers names realm.team: the member team of the object claim realm (Envoy's
    # nested claims); a claim that is an object, or a missing part, sends nothing
    _, port, _, _ = gw
    st, _, body = request(port, "GET", "/echo",
                          {**bearer(token({"realm": {"team": "ops", "n": 1}})), "x-team": "root"})
    assert st == 200
    assert fields(body)["x-team"] == ["ops"]
    for claims in ({"realm": {"other": 1}}, {"realm": "ops"}, {"realm": {"team": {"x": 1}}}):
        st, _, body = request(port, "GET", "/echo", {**bearer(token(claims)), "x-team": "root"})
        assert st == 200
        assert "x-team" not in fields(body), claims


def test_each_bad_token_is_refused_with_its_reason(gw, up):
    _, port, admin, _ = gw
    now = int(time.time())
    alg_none = b64(b'{"alg":"none"}') + "." + b64(json.dumps({"sub": "x", "exp": now + 60}).encode()) + "."
    cases = [
        (alg_none, "alg none is not accepted (HS256, RS256, ES256)"),
        (token({"exp": now - 60}), "the token expired"),
        (token({"nbf": now + 600}), "the token is not valid yet"),
        (token({"aud": "billing"}), "wrong audience"),
        (token({"iss": "https://evil"}), "wrong issuer"),
        (token(secret=b"not-the-key"), "bad signature"),
        ("abc.def", "not a compact JWS (three parts)"),
        ("!!!.e30.sig", "the header is not base64url JSON"),
    ]
    for t, why in cases:
        www = refused(port, "/echo", bearer(t))
        assert www == f'Bearer error="invalid_token", error_description="{why}"', (t, www)
    assert up.count == 0
    assert refused(port, "/echo", {}) == 'Bearer realm="keel"'  # no token: no error code
    assert refused(port, "/echo", {"Authorization": "Basic dTpw"}) == 'Bearer realm="keel"'
    with __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        m = r.read().decode()
    assert 'keel_proxy_jwt_refused_total{route="secure"} 10' in m


def test_a_reason_never_echoes_the_clients_bytes_raw(gw, up):
    _, port, _, _ = gw
    www = refused(port, "/echo", bearer(token(header={"kid": 'k9"\\, x="1'})))
    assert www.startswith('Bearer error="invalid_token", error_description="no HS256 key with kid k9')
    desc = www.split('error_description="', 1)[1]
    assert desc.count('"') == 1 and "\\" not in desc  # only the closing quote
    # the longest reason (cut at 95 bytes) still makes one whole field
    st, h, _ = request(port, "GET", "/echo", bearer(token(header={"kid": "k" * 120})))
    www = h["www-authenticate"][0]
    assert st == 401 and www.endswith('"') and len(h["x-keel-reason"]) == 1, h


def test_claim_headers_cannot_be_spoofed_even_without_a_token(gw, up):
    _, port, _, _ = gw
    spoof = {"X-User-Id": "admin", "x-tier": "platinum"}
    st, _, body = request(port, "GET", "/open/a", spoof)  # optional route, no token
    assert st == 200
    f = fields(body)
    assert "x-user-id" not in f and "x-tier" not in f
    st, _, body = request(port, "GET", "/open/b", {**spoof, **bearer(token())})
    f = fields(body)
    assert f["x-user-id"] == ["alice"] and "x-tier" not in f  # the token has no tier claim
    # an optional route still refuses a bad token (Envoy's allow_missing)
    assert "expired" in refused(port, "/open/c", bearer(token({"exp": int(time.time()) - 60})))


def test_a_claim_keyed_rate_limit_counts_each_subject_apart(gw, up):
    _, port, _, _ = gw
    alice, bob = bearer(token({"sub": "alice"})), bearer(token({"sub": "bob"}))
    got = [request(port, "GET", "/limited", alice)[0] for _ in range(5)]
    assert got[:3] == [200, 200, 200] and 429 in got[3:], got
    st, h, _ = request(port, "GET", "/limited", alice)
    assert st == 429 and int(h["retry-after"][0]) >= 1
    assert request(port, "GET", "/limited", bob)[0] == 200  # bob has his own bucket
    assert request(port, "GET", "/limited", {})[0] == 401  # and no token is no pass


def test_a_rotated_jwks_file_is_read_again_on_sighup(gw, up):
    p, port, _, path = gw
    new = b"rotated-secret-0123456789abcdef-xyz"
    assert request(port, "GET", "/echo", bearer(token(secret=new)))[0] == 401
    path.write_text(jwks(new, "k1"))
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: request(port, "GET", "/echo", bearer(token(secret=new)))[0] == 200,
                      timeout_s=3)
    assert request(port, "GET", "/echo", bearer(token()))[0] == 401  # the old key is gone
    path.write_text("{not json")
    p.signal(1)
    assert wait_until(lambda: "reload refused" in p.output(), timeout_s=3)
    assert request(port, "GET", "/echo", bearer(token(secret=new)))[0] == 200  # old keys serve


def test_check_names_the_line_of_each_jwt_error(tmp_path, up):
    path = tmp_path / "bad.yaml"
    text = config(up, tmp_path / "missing.json").replace("clock_skew_s: 5", "clock_skew_s: 99999")
    text = text.replace("    jwt: {provider: shop, required: false}", "    jwt: {provider: nobody}")
    path.write_text(text)
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    lines = text.split("\n")
    skew = next(i for i, l in enumerate(lines) if "clock_skew_s" in l) + 1
    nobody = next(i for i, l in enumerate(lines) if "nobody" in l) + 1
    assert f"{path}:{skew}: clock_skew_s: 99999 is out of range" in r.stderr, r.stderr
    assert f"{path}:{nobody}: jwt: no jwt_providers entry named 'nobody'" in r.stderr
    # a config that parses but whose JWKS file cannot be read: its line too
    text = config(up, tmp_path / "missing.json")
    path.write_text(text)
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    line = next(i for i, l in enumerate(text.split("\n")) if "jwks_file" in l) + 1
    assert r.returncode == 1 and f"{path}:{line}: jwt provider 'shop': cannot read" in r.stderr


def test_the_default_places_are_authorization_and_access_token(gw, up):
    """Envoy's default places: `Authorization: Bearer`, then the query parameter access_token;
    a token in both, or two access_tokens, is refused (an upstream could read the other)."""
    _, port, _, _ = gw
    t = token()
    st, _, body = request(port, "GET", f"/echo?x=1&access_token={t}&y=2")
    assert st == 200 and fields(body)["x-user-id"] == ["alice"]
    assert 'error_description="a token in more than one place"' in refused(
        port, f"/echo?access_token={t}", bearer(t)
    )
    assert 'error_description="several access_token parameters"' in refused(
        port, f"/echo?access_token={t}&access_token={t}", {}
    )
    assert "error=" in refused(port, "/echo?access_token=abc.def.ghi", {})
    assert refused(port, "/echo?access_token=", {}) == 'Bearer realm="keel"'  # no token: missing


def places_config(up, jwks_path, forward):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
jwt_providers:
  - name: shop
    issuer: {ISSUER}
    audiences: [orders]
    jwks_file: {jwks_path}
    forward: {"true" if forward else "false"}
    from_headers:
      - {{name: X-Jwt-Assertion}}
      - {{name: x-auth, value_prefix: "Token "}}
    from_params: [jwt]
    claims_to_headers:
      - {{claim: sub, header: x-user-id}}
routes:
  - match: {{prefix: /}}
    jwt: shop
    cluster: app
"""


@pytest.mark.parametrize("forward", [False, True])
def test_a_provider_reads_the_token_only_where_it_says(procs, tmp_path, up, forward):
    """from_headers (with and without a value_prefix) and from_params replace the default
    places: Authorization is then not read; the field a token came from is removed upstream
    unless forward is set; a token in two places is refused."""
    path = tmp_path / "jwks.json"
    path.write_text(jwks())
    _, port, _ = start_proxy(procs, tmp_path, places_config(up, path, forward))
    t = token()
    for target, headers in (
        ("/echo", {"X-Jwt-Assertion": t}),
        ("/echo", {"X-Auth": "Token " + t}),
        (f"/echo?jwt={t}", {}),
    ):
        st, _, body = request(port, "GET", target, headers)
        assert st == 200, (target, headers)
        f = fields(body)
        assert f["x-user-id"] == ["alice"]
        for name in headers:
            assert (name.lower() in f) == forward
    assert refused(port, "/echo", bearer(t)) == 'Bearer realm="keel"'  # not a place it reads
    assert refused(port, "/echo", {"X-Auth": "Bearer " + t}) == 'Bearer realm="keel"'  # no prefix
    assert 'error_description="a token in more than one place"' in refused(
        port, f"/echo?jwt={t}", {"X-Jwt-Assertion": t}
    )
    assert "error=" in refused(port, "/echo", {"X-Jwt-Assertion": t + "x"})


def test_check_names_the_line_of_each_token_place_error(tmp_path, up):
    path = tmp_path / "bad.yaml"
    text = places_config(up, tmp_path / "jwks.json", False)
    text = text.replace("{name: X-Jwt-Assertion}", "{value_prefix: x}")
    text = text.replace("from_params: [jwt]", "from_params: [jwt, 'a=b']")
    path.write_text(text)
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    lines = text.split("\n")
    noname = next(i for i, l in enumerate(lines) if "value_prefix: x" in l) + 1
    param = next(i for i, l in enumerate(lines) if "from_params" in l) + 1
    assert f"{path}:{noname}: from_headers: 'name' is required" in r.stderr, r.stderr
    assert f"{path}:{param}: from_params: 'a=b' is not a query parameter name" in r.stderr, r.stderr


def test_a_percent_encoded_token_in_a_query_parameter_is_decoded(procs, tmp_path, gw, up):
    """A query parameter's token is percent-decoded (RFC 3986 §2.1, as Envoy's from_params):
    a client whose URL library escapes '.' or '-' is served; a malformed escape is an invalid
    token; '+' stays '+' (not a space), so a token spelled with it is refused."""
    _, port, _, _ = gw
    t = token({"sub": "bob-1"})
    enc = "".join("%2E" if c == "." else "%2d" if c == "-" else c for c in t)
    assert "%" in enc
    st, _, body = request(port, "GET", f"/echo?x=1&access_token={enc}")
    assert st == 200 and fields(body)["x-user-id"] == ["bob-1"]
    for bad in (t + "%", t[:20] + "%zz" + t[20:], t + "%4"):
        assert 'error_description="a malformed percent-encoding in the token"' in refused(
            port, f"/echo?access_token={bad}", {}
        ), bad
    assert "error=" in refused(port, "/echo?access_token=" + t.replace(".", "+", 1), {})
    # the places a provider names (from_params) too
    path = tmp_path / "jwks2.json"
    path.write_text(jwks())
    _, port2, _ = start_proxy(procs, tmp_path, places_config(up, path, False), name="p2.yaml")
    st, _, body = request(port2, "GET", f"/echo?jwt={enc}")
    assert st == 200 and fields(body)["x-user-id"] == ["bob-1"]
    assert "malformed percent-encoding" in refused(port2, f"/echo?jwt={t}%G1", {})
