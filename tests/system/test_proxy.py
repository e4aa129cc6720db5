"""test_proxy.py - keel proxy against fake upstreams that behave and misbehave, and hostile clients.

Each failure mode gets its documented status (docs/proxy.md, "What happens to a request"), and
after each one a well-behaved request through the same proxy still works. Every socket has a
timeout and every wait is bounded.
"""

import json
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import binary, wait_until, free_port
from proxyfake import (
    FakeUpstream,
    closed_by_peer,
    connect,
    read_response,
    request,
    start_proxy,
)


def config(up, extra_clusters="", extra_routes="", limits=""):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
limits:
  header_timeout_ms: 500
  uri_bytes_max: 1024
  header_count_max: 30
  header_bytes_max: 8192
  body_bytes_max: 100000
{limits}
clusters:
  - name: app
    hosts: [{up.addr}]
    connect_timeout_ms: 500
{extra_clusters}
routes:
  - name: direct
    match: {{exact: /direct}}
    direct_response: {{status: 201, body: "made here", content_type: text/plain}}
  - name: moved
    match: {{prefix: /old/}}
    redirect: {{status: 301, location: /new/}}
  - name: timeouts
    match: {{prefix: /hang}}
    cluster: app
    timeout_ms: 400
{extra_routes}
  - name: rewrite
    match: {{prefix: /rw/}}
    rewrite_prefix: /echo/
    request_headers_add: [{{name: x-added, value: yes}}]
    request_headers_remove: [x-drop]
    response_headers_add: [{{name: x-resp, value: added}}]
    response_headers_remove: [server]
    cluster: app
  - name: app
    match: {{prefix: /}}
    cluster: app
"""


@pytest.fixture
def proxy(procs, tmp_path, up):
    p, port, admin = start_proxy(procs, tmp_path, config(up))
    return port, admin


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels):
    m = re.search(r"^" + re.escape(name) + r"\{" + re.escape(labels) + r"\} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def clusters(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5) as r:
        return {c["name"]: c for c in json.loads(r.read())["clusters"]}


def still_works(port):
    st, _, body = request(port, "GET", "/echo/ok")
    assert st == 200 and json.loads(body)["upstream"]


# ---- forwarding ---------------------------------------------------------------------------


def test_forwards_requests_over_keepalive_on_both_sides(proxy, up):
    port, _ = proxy
    s = connect(port)
    buf = b""
    for i in range(5):
        s.sendall(f"GET /echo/{i}?q=1 HTTP/1.1\r\nHost: example\r\n\r\n".encode())
        st, h, body, buf = read_response(s, buf)
        assert st == 200
        info = json.loads(body)
        assert info["target"] == f"/echo/{i}?q=1"
        assert h["via"] == ["1.1 keel"]
    s.close()
    assert up.count == 5
    assert up.connections == 1  # the pooled upstream connection served all five


def test_sets_forwarding_headers_and_drops_hop_by_hop_ones(proxy, up):
    port, _ = proxy
    st, h, body = request(
        port,
        "GET",
        "/echo",
        {
            "X-Forwarded-For": "10.0.0.1",
            "Connection": "close, X-Secret",
            "X-Secret": "hop",
            "Keep-Alive": "timeout=5",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "Upgrade": "websocket",
            "X-End": "kept",
            "X-Keel-Timeout-Ms": "999999",
        },
    )
    assert st == 200
    got = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert 14000 < int(got["x-keel-timeout-ms"]) <= 15000  # the route's 15 s, not the client's
    assert got["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["via"] == "1.1 keel"
    assert got["host"] == "test"
    assert got["x-end"] == "kept"
    for hop in ("x-secret", "keep-alive", "proxy-connection", "te", "upgrade", "connection"):
        assert hop not in got, hop


def test_passes_x_request_id_through_and_adds_one_when_absent(proxy, up):
    port, _ = proxy

    def sent_upstream(headers):
        st, _, body = request(port, "GET", "/echo", headers)
        assert st == 200
        return [v for k, v in json.loads(body)["headers"] if k.lower() == "x-request-id"]

    assert sent_upstream({"X-Request-Id": "client-id-42"}) == ["client-id-42"]
    a, b = sent_upstream({}), sent_upstream({})
    assert len(a) == 1 and re.fullmatch(r"[0-9a-f]{32}", a[0]), a
    assert len(b) == 1 and b != a  # a new one per request


def test_streams_chunked_bodies_both_ways(proxy, up):
    port, _ = proxy
    s = connect(port)
    data = bytes(range(256)) * 100
    chunks = b"".join(b"%x\r\n" % len(data[i : i + 1000]) + data[i : i + 1000] + b"\r\n" for i in range(0, 25600, 1000))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks[:5000])
    time.sleep(0.05)
    s.sendall(chunks[5000:] + b"0\r\n\r\n")
    st, h, body, buf = read_response(s)
    assert st == 200
    info = json.loads(body)
    assert info["body_len"] == 25600
    assert info["body_sha"] == __import__("hashlib").sha256(data).hexdigest()
    # a chunked response comes back chunked to an HTTP/1.1 client
    s.sendall(b"GET /chunked/50000 HTTP/1.1\r\nHost: t\r\n\r\n")
    st, h, body, buf = read_response(s, buf)
    assert st == 200 and h["transfer-encoding"] == ["chunked"]
    assert body == bytes(i % 251 for i in range(50000))
    s.close()


def test_answers_expect_100_continue(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    st, _, _, buf = read_response(s)
    assert st == 100
    s.sendall(b"hello")
    st, _, body, _ = read_response(s, buf)
    assert st == 200 and json.loads(body)["body_len"] == 5
    s.close()


def test_large_body_arrives_intact(proxy, up):
    port, _ = proxy
    st, h, body = request(port, "GET", "/big/8000000")
    assert st == 200 and len(body) == 8000000
    assert body == (bytes(range(256)) * 256 * 123)[:8000000]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_slow_client_does_not_make_the_proxy_buffer_the_body(procs, tmp_path, up):
    p, port, _ = start_proxy(procs, tmp_path, config(up))
    base = rss_kib(p.p.pid)
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big/67108864 HTTP/1.1\r\nHost: t\r\n\r\n")
    got = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # a slow reader: 64 KiB every 50 ms
        got += len(s.recv(65536))
        time.sleep(0.05)
    grown = rss_kib(p.p.pid) - base
    # the upstream is held back too: it cannot have written the whole 64 MiB
    assert up.bytes_sent < 16 * 1024 * 1024, up.bytes_sent
    assert grown < 8 * 1024, f"proxy RSS grew by {grown} KiB while streaming to a slow client"
    assert got < 8 * 1024 * 1024
    s.close()
    still_works(port)


# ---- the proxy's own answers ----------------------------------------------------------------


def test_direct_response_redirect_and_no_route(procs, tmp_path, up):
    cfg = config(up).replace("  - name: app\n    match: {prefix: /}\n    cluster: app\n", "")
    _, port, _ = start_proxy(procs, tmp_path, cfg)
    st, h, body = request(port, "GET", "/direct")
    assert (st, body, h["content-type"]) == (201, b"made here", ["text/plain"])
    st, h, _ = request(port, "GET", "/old/x")
    assert st == 301 and h["location"] == ["/new/"]
    st, h, body = request(port, "GET", "/nowhere")
    assert st == 404 and json.loads(body)["error"]["code"] == 404
    assert up.count == 0


def test_rewrites_prefix_and_edits_headers(proxy, up):
    port, _ = proxy
    st, h, body = request(port, "GET", "/rw/a/b?x=1", {"X-Drop": "1"})
    assert st == 200
    info = json.loads(body)
    assert info["target"] == "/echo/a/b?x=1"
    got = {k.lower(): v for k, v in info["headers"]}
    assert got["x-added"] == "yes" and "x-drop" not in got
    assert h["x-resp"] == ["added"] and "server" not in h


# ---- upstream failures ----------------------------------------------------------------------


def test_upstream_failures_get_their_status_and_others_are_unaffected(proxy, up):
    port, _ = proxy
    cases = [
        ("/reset", 502),
        ("/garbage", 502),
        ("/bigheaders", 502),
        ("/hang", 504),
        ("/status/503", 503),  # an upstream's own answer passes through
    ]
    for path, want in cases:
        st, _, _ = request(port, "GET", path)
        assert st == want, path
        still_works(port)


def test_upstream_refusing_connections_gets_503(procs, tmp_path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()  # nothing listens there now

    class Dead:
        pass

    d = Dead()
    d.addr = addr
    _, port, _ = start_proxy(procs, tmp_path, config(d))
    st, h, body = request(port, "GET", "/echo")
    assert st == 503 and h["x-keel-reason"] == ["connect-failed"]
    st, _, body = request(port, "GET", "/direct")
    assert st == 201


def test_upstream_closing_mid_body_closes_the_client_connection(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"GET /midbody HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    head, body = got.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1000" in head
    assert len(body) == 10  # the client sees a short body and a closed connection: incomplete
    s.close()
    still_works(port)


def test_upstream_timeout_is_504(proxy, up):
    port, _ = proxy
    t0 = time.monotonic()
    st, h, _ = request(port, "GET", "/hang")
    assert st == 504 and h["x-keel-reason"] == ["upstream-timeout"]
    assert 0.3 < time.monotonic() - t0 < 3.0


# ---- hostile clients -------------------------------------------------------------------------


SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
]


@pytest.mark.parametrize("raw", SMUGGLING, ids=["cl+te", "dup-cl", "obs-fold", "bad-chunk", "space-colon", "two-hosts"])
def test_request_smuggling_shapes_get_400_and_close(proxy, up, raw):
    port, _ = proxy
    before = up.count
    s = connect(port)
    s.sendall(raw)
    st, h, _, _ = read_response(s)
    assert st == 400
    assert h["connection"] == ["close"]
    assert closed_by_peer(s)
    s.close()
    # a request that could have been smuggled never reached the upstream
    assert up.count == before
    still_works(port)


def test_limits_get_414_431_413(proxy, up):
    port, _ = proxy
    st, h, _ = request(port, "GET", "/" + "a" * 2000)
    assert st == 414
    st, h, _ = request(port, "GET", "/echo", {f"X-H{i}": "v" for i in range(40)})
    assert st == 431
    st, h, _ = request(port, "GET", "/echo", {"X-Big": "v" * 9000})
    assert st == 431
    st, h, _ = request(port, "POST", "/echo", body=b"x" * 100001)
    assert st == 413
    # a chunked body is cut when it passes the limit
    s = connect(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(30):
            s.sendall(b"2710\r\n" + b"y" * 10000 + b"\r\n")
    except OSError:
        pass
    st, _, _, _ = read_response(s)
    assert st == 413
    s.close()
    still_works(port)


def test_slowloris_gets_408(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
    t0 = time.monotonic()
    for _ in range(3):
        time.sleep(0.2)
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    st, h, _, _ = read_response(s)
    assert st == 408
    assert time.monotonic() - t0 < 2.0
    assert closed_by_peer(s)
    still_works(port)


# ---- policies ---------------------------------------------------------------------------------


def test_breaker_opens_and_closes_again(procs, tmp_path, up):
    clusters_yaml = f"""
  - name: fragile
    hosts: [{up.addr}]
    circuit_breaker: {{consecutive_failures: 3, open_ms: 500, probes: 1, calls_min: 100}}
"""
    routes_yaml = """
  - name: fragile
    match: {prefix: /fragile}
    cluster: fragile
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
    up.fail_status = 500
    for _ in range(3):
        assert request(port, "GET", "/fragile")[0] == 500
    seen = up.count
    st, h, _ = request(port, "GET", "/fragile")
    assert st == 503 and h["x-keel-reason"] == ["circuit-open"]
    assert up.count == seen  # rejected without touching the upstream
    assert clusters(admin)["fragile"]["breaker"] == "open"
    assert metric(metrics(admin), "keel_proxy_breaker_state", 'cluster="fragile"') == 1
    up.fail_status = None
    time.sleep(0.6)
    st, _, _ = request(port, "GET", "/fragile")  # the half-open probe succeeds
    assert st == 200
    assert clusters(admin)["fragile"]["breaker"] == "closed"
    assert request(port, "GET", "/fragile")[0] == 200
    m = metrics(admin)
    assert metric(m, "keel_proxy_breaker_state", 'cluster="fragile"') == 0
    assert metric(m, "keel_proxy_breaker_rejected_total", 'cluster="fragile"') == 1


def test_outlier_detection_ejects_a_failing_host_and_restores_it(procs, tmp_path, up):
    bad = FakeUpstream("bad")
    try:
        clusters_yaml = f"""
  - name: pair
    hosts: [{up.addr}, {bad.addr}]
    outlier_detection: {{consecutive_5xx: 2, interval_ms: 100, base_ejection_ms: 1500, max_ejection_pct: 50}}
"""
        routes_yaml = """
  - name: pair
    match: {prefix: /pair}
    cluster: pair
"""
        _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
        bad.fail_status = 500
        for _ in range(6):
            request(port, "GET", "/pair")
        hosts = {h["address"]: h for h in clusters(admin)["pair"]["hosts"]}
        assert hosts[bad.addr]["ejected"] and not hosts[up.addr]["ejected"]
        assert bad.count == 2
        for _ in range(6):  # while ejected, every request goes to the good host
            assert request(port, "GET", "/pair")[0] == 200
        assert bad.count == 2
        assert metric(metrics(admin), "keel_proxy_ejections_total", 'cluster="pair"') == 1
        bad.fail_status = None
        assert wait_until(
            lambda: not {h["address"]: h for h in clusters(admin)["pair"]["hosts"]}[bad.addr]["ejected"],
            timeout_s=5.0,
        )
        for _ in range(6):
            assert request(port, "GET", "/pair")[0] == 200
        assert bad.count > 2  # back in rotation
    finally:
        bad.close()


def test_outlier_detection_never_ejects_the_last_host(procs, tmp_path, up):
    clusters_yaml = f"""
  - name: single
    hosts: [{up.addr}]
    outlier_detection: {{consecutive_5xx: 2, base_ejection_ms: 5000, max_ejection_pct: 100}}
"""
    routes_yaml = """
  - name: single
    match: {prefix: /single}
    cluster: single
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
    up.fail_status = 500
    for _ in range(5):
        assert request(port, "GET", "/single")[0] == 500  # the upstream's answer, not our 503
    assert up.count == 5
    assert clusters(admin)["single"]["hosts"][0]["available"]


def storm(port, n, path):
    results = []

    def one():
        try:
            results.append(request(port, "GET", path)[0])
        except OSError as e:
            results.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    return results


def retry_routes(budget_pct):
    return f"""
  - name: retried
    match: {{prefix: /retried}}
    cluster: app
    retry: {{attempts_max: 5, retry_on: [gateway-error], backoff_base_ms: 50, backoff_cap_ms: 50, budget_percent: {budget_pct}, budget_min: 3}}
"""


def test_retries_recover_from_a_transient_failure(procs, tmp_path, up):
    _, port, admin = start_proxy(procs, tmp_path, config(up, "", retry_routes(20)))
    up.fail_status, up.fail_next = 503, 2
    st, _, _ = request(port, "GET", "/retried")
    assert st == 200
    assert up.count == 3  # two failures, then the third attempt succeeds
    assert metric(metrics(admin), "keel_proxy_upstream_retries_total", 'cluster="app"') >= 1


def test_retry_budget_stops_a_retry_storm(procs, tmp_path, up):
    n = 40
    # without a budget every request is tried attempts_max times
    p1, port, _ = start_proxy(procs, tmp_path, config(up, "", retry_routes(0)), "nobudget.yaml")
    up.fail_status = 503
    assert all(r == 503 for r in storm(port, n, "/retried"))
    unbounded = up.count
    assert unbounded == n * 5
    p1.signal(15)
    p1.wait(5)
    # with the default budget (20% of active requests, at least 3) retries stay bounded
    up.count = 0
    _, port, admin = start_proxy(procs, tmp_path, config(up, "", retry_routes(20)), "budget.yaml")
    assert all(r == 503 for r in storm(port, n, "/retried"))
    bounded = up.count
    m = metrics(admin)
    assert metric(m, "keel_proxy_retry_budget_exhausted_total", 'cluster="app"') > 0
    assert bounded < unbounded * 0.6, (bounded, unbounded)


def test_bulkhead_answers_503_with_a_reason_when_full(procs, tmp_path, up):
    clusters_yaml = f"""
  - name: narrow
    hosts: [{up.addr}]
    max_requests: 1
"""
    routes_yaml = """
  - name: narrow
    match: {prefix: /slow}
    cluster: narrow
"""
    _, port, _ = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
    first = []
    t = threading.Thread(target=lambda: first.append(request(port, "GET", "/slow/600")[0]))
    t.start()
    assert wait_until(lambda: up.count == 1, timeout_s=3)
    st, h, _ = request(port, "GET", "/slow/1")
    assert st == 503 and h["x-keel-reason"] == ["bulkhead-full"]
    t.join(5)
    assert first == [200]
    assert request(port, "GET", "/slow/1")[0] == 200


def test_rate_limit_answers_429_with_retry_after(procs, tmp_path, up):
    routes_yaml = """
  - name: limited
    match: {prefix: /limited}
    cluster: app
    rate_limit: {key: "header:x-api-key", requests_per_s: 1, burst: 3}
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, "", routes_yaml))
    codes = [request(port, "GET", "/limited", {"X-Api-Key": "k1"})[0] for _ in range(3)]
    assert codes == [200, 200, 200]
    st, h, body = request(port, "GET", "/limited", {"X-Api-Key": "k1"})
    assert st == 429
    assert int(h["retry-after"][0]) >= 1
    assert h["ratelimit-limit"] == ["3"] and h["ratelimit-remaining"] == ["0"]
    assert int(h["ratelimit-reset"][0]) >= 1
    # another key has its own bucket
    assert request(port, "GET", "/limited", {"X-Api-Key": "k2"})[0] == 200
    assert metric(metrics(admin), "keel_proxy_rate_limited_total", 'route="limited"') == 1


def test_several_rate_limits_on_a_route_must_all_pass_and_a_refusal_costs_none(procs, tmp_path, up):
    """Limits are taken in order; one that refuses gives back what the earlier ones took, and
    the 429 names the limit that refused in its RateLimit-Limit."""
    routes_yaml = """
  - name: limited
    match: {prefix: /limited}
    cluster: app
    rate_limit:
      - {key: source_address, requests_per_s: 1, burst: 4}
      - {key: "header:x-user", requests_per_s: 1, burst: 2}
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, "", routes_yaml))

    def get(user):
        return request(port, "GET", "/limited", {"X-User": user})

    start = time.monotonic()
    assert [get("a")[0] for _ in range(2)] == [200, 200]
    st, h, _ = get("a")  # the user's limit refuses; the source's token is given back
    assert st == 429 and h["ratelimit-limit"] == ["2"]
    assert [get("b")[0] for _ in range(2)] == [200, 200]  # the source's 3rd and 4th tokens
    st, h, _ = get("c")  # a user with tokens, but the source has none left
    if time.monotonic() - start < 0.9:  # else a refilled token may let it through
        assert st == 429 and h["ratelimit-limit"] == ["4"]
        assert metric(metrics(admin), "keel_proxy_rate_limited_total", 'route="limited"') == 2


def test_health_checks_take_a_host_out_and_back(procs, tmp_path, up):
    other = FakeUpstream("other")
    try:
        clusters_yaml = f"""
  - name: checked
    hosts: [{up.addr}, {other.addr}]
    health_check: {{path: /health, interval_ms: 100, timeout_ms: 80, healthy_threshold: 2, unhealthy_threshold: 2}}
"""
        routes_yaml = """
  - name: checked
    match: {prefix: /checked}
    cluster: checked
"""
        _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
        other.healthy = False

        def other_healthy():
            return {h["address"]: h for h in clusters(admin)["checked"]["hosts"]}[other.addr]["healthy"]

        assert wait_until(lambda: not other_healthy(), timeout_s=3)
        before = other.paths.count("/checked")
        for _ in range(6):
            assert request(port, "GET", "/checked")[0] == 200
        assert other.paths.count("/checked") == before
        other.healthy = True
        assert wait_until(other_healthy, timeout_s=3)
        for _ in range(6):
            request(port, "GET", "/checked")
        assert other.paths.count("/checked") > before
    finally:
        other.close()


def test_tcp_health_checks_follow_whether_a_host_accepts(procs, tmp_path, up):
    """A `tcp: true` check is a connect, closed at once: a port nobody listens on turns
    unhealthy, and healthy again once something listens there (no HTTP needed)."""
    port_b = free_port()
    clusters_yaml = f"""
  - name: tcpchecked
    hosts: [{up.addr}, 127.0.0.1:{port_b}]
    health_check: {{tcp: true, interval_ms: 100, timeout_ms: 80, healthy_threshold: 2, unhealthy_threshold: 2}}
"""
    routes_yaml = """
  - name: tcpchecked
    match: {prefix: /tcp}
    cluster: tcpchecked
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))

    def b_healthy():
        hosts = {h["address"]: h for h in clusters(admin)["tcpchecked"]["hosts"]}
        return hosts[f"127.0.0.1:{port_b}"]["healthy"]

    assert wait_until(lambda: not b_healthy(), timeout_s=3)
    for _ in range(6):  # every request goes to the host that accepts
        assert request(port, "GET", "/tcp")[0] == 200
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port_b))
    lsock.listen(64)
    try:
        assert wait_until(b_healthy, timeout_s=3)
    finally:
        lsock.close()


# ---- admin and the command line ---------------------------------------------------------------


def test_admin_serves_metrics_clusters_and_config(proxy, up):
    port, admin = proxy
    request(port, "GET", "/echo")
    request(port, "GET", "/status/404")
    m = metrics(admin)
    assert metric(m, "keel_proxy_requests_total", 'route="app"') == 2
    assert metric(m, "keel_proxy_responses_total", 'route="app",class="2xx"') == 1
    assert metric(m, "keel_proxy_responses_total", 'route="app",class="4xx"') == 1
    assert metric(m, "keel_proxy_upstream_requests_total", 'cluster="app"') == 2
    assert re.search(r'keel_proxy_request_duration_seconds_count\{route="app"\} 2', m)
    c = clusters(admin)["app"]
    assert c["hosts"][0]["address"] == up.addr and c["hosts"][0]["healthy"]
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config", timeout=5) as r:
        text = r.read().decode()
        assert "name: app" in text and re.fullmatch(r"[0-9a-f]{8}", r.headers["X-Keel-Config-Version"])


def test_check_names_the_line_of_each_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - address: nowhere\nroutes:\n  - match: {prefix: /}\n    cluster: ghost\n")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(bad)], capture_output=True, timeout=10)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"{bad}:2: " in err and "host:port" in err
    assert f"{bad}:5: " in err and "ghost" in err
    good = tmp_path / "good.yaml"
    good.write_text("listeners: [{address: 127.0.0.1:0}]\nroutes:\n  - {match: {prefix: /}, direct_response: {status: 200}}\n")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(good)], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([binary("keel"), "proxy", "--config", str(bad)], capture_output=True, timeout=10)
    assert r.returncode == 1 and b":5: " in r.stderr


def test_sigterm_closes_everything_and_exits_0(procs, tmp_path, up):
    p, port, admin = start_proxy(procs, tmp_path, config(up))
    idle = connect(port)  # a client connection with nothing in flight
    for _ in range(3):
        request(port, "GET", "/echo")  # leaves a pooled upstream connection
    hung = connect(port)
    hung.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")  # a request in flight
    assert wait_until(lambda: "/hang" in up.paths, timeout_s=3)
    p.signal(15)
    assert p.wait(5) == 0, p.output()[-2000:]
    assert "Sanitizer" not in p.output()
    assert closed_by_peer(idle, 2) and closed_by_peer(hung, 2)
    idle.close()
    hung.close()


def test_a_listener_that_cannot_bind_fails_the_start(procs, tmp_path, up):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cfg = config(up).replace("address: 127.0.0.1:0\nadmin", f"address: 127.0.0.1:{taken.getsockname()[1]}\nadmin", 1)
    path = tmp_path / "taken.yaml"
    path.write_text(cfg)
    r = subprocess.run([binary("keel"), "proxy", "--config", str(path)], capture_output=True, timeout=10)
    taken.close()
    assert r.returncode == 1
    assert b"listener" in r.stderr and b"Sanitizer" not in r.stderr


def test_post_is_not_retried_after_it_may_have_been_seen(procs, tmp_path, up):
    _, port, _ = start_proxy(procs, tmp_path, config(up, "", retry_routes(20)))
    up.fail_status = 503
    st, h, _ = request(port, "POST", "/retried", body=b"pay once")
    assert st == 503, h
    assert up.count == 1  # a 503 means the upstream saw it: POST is not idempotent
    st, _, _ = request(port, "GET", "/retried")
    assert up.count == 1 + 5  # GET is: attempts_max tries


def test_per_try_timeout_retries_on_another_attempt(procs, tmp_path, up):
    routes_yaml = """
  - name: pertry
    match: {prefix: /slow}
    cluster: app
    timeout_ms: 3000
    per_try_timeout_ms: 200
    retry: {attempts_max: 3, retry_on: [timeout], backoff_base_ms: 1, backoff_cap_ms: 1}
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, "", routes_yaml))
    t0 = time.monotonic()
    st, h, _ = request(port, "GET", "/slow/1000")
    assert st == 504
    assert up.paths.count("/slow/1000") == 3
    assert 0.5 < time.monotonic() - t0 < 2.5  # three tries of 200 ms, not the 3 s deadline
    assert metric(metrics(admin), "keel_proxy_upstream_timeouts_total", 'cluster="app"') == 3


def test_pooled_connections_are_retired_after_max_requests(procs, tmp_path, up):
    clusters_yaml = f"""
  - name: short
    hosts: [{up.addr}]
    pool: {{requests_per_connection_max: 2, idle_max: 4}}
"""
    routes_yaml = """
  - name: short
    match: {prefix: /short}
    cluster: short
"""
    _, port, _ = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
    # one keep-alive client connection: it stays on one worker, and pools are per worker
    s = connect(port)
    rest = b""
    for _ in range(6):
        s.sendall(b"GET /short HTTP/1.1\r\nHost: test\r\n\r\n")
        st, _, _, rest = read_response(s, rest)
        assert st == 200
    s.close()
    assert up.connections == 3


def test_access_log_has_one_json_line_per_request(procs, tmp_path, up):
    p, port, _ = start_proxy(procs, tmp_path, "access_log: true\n" + config(up))
    request(port, "GET", "/echo/logged?x=1")
    request(port, "GET", "/direct")

    def lines():
        return [json.loads(l) for l in p.output().splitlines() if '"msg":"access"' in l]

    assert wait_until(lambda: len(lines()) == 2, timeout_s=3)
    a, b = lines()
    assert (a["method"], a["target"], a["route"], a["cluster"], a["status"]) == (
        "GET", "/echo/logged?x=1", "app", "app", 200)
    assert a["upstream"] == up.addr and a["attempts"] == 1 and a["bytes"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", a["trace_id"]) and b["trace_id"] == "-"
    assert (b["route"], b["status"], b["bytes"], b["upstream"]) == ("direct", 201, 9, "-")


def test_pipelined_requests_are_answered_in_order(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"".join(f"GET /echo/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(5))
              + b"GET /direct HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    for i in range(5):
        st, _, body, buf = read_response(s, buf)
        assert st == 200 and json.loads(body)["target"] == f"/echo/{i}"
    st, _, body, buf = read_response(s, buf)
    assert (st, body) == (201, b"made here")
    s.close()


def test_http10_client_gets_a_closed_connection_and_a_whole_body(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"GET /chunked/5000 HTTP/1.0\r\n\r\n")
    st, h, body, _ = read_response(s)  # no Content-Length, not chunked: read until close
    assert st == 200 and "transfer-encoding" not in h and h["connection"] == ["close"]
    assert body == bytes(i % 251 for i in range(5000))
    s.close()


def test_head_and_bodiless_statuses_keep_the_connection_in_step(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"HEAD /big/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
    st, h, body, buf = read_response(s, head_request=True)
    assert st == 200 and h["content-length"] == ["1000"] and body == b""
    s.sendall(b"GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\nGET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n")
    st, _, body, buf = read_response(s, buf)
    assert st == 204 and body == b""
    st, _, body, buf = read_response(s, buf)
    assert st == 304 and body == b""
    s.sendall(b"GET /echo/after HTTP/1.1\r\nHost: t\r\n\r\n")
    st, _, body, _ = read_response(s, buf)
    assert st == 200 and json.loads(body)["target"] == "/echo/after"
    s.close()


def test_a_close_delimited_response_reaches_an_http11_client_chunked(proxy, up):
    port, _ = proxy
    s = connect(port)
    s.sendall(b"GET /close-delimited HTTP/1.1\r\nHost: t\r\n\r\n")
    st, h, body, buf = read_response(s)
    assert st == 200 and h["transfer-encoding"] == ["chunked"] and body == b"z" * 3000
    s.sendall(b"GET /echo/next HTTP/1.1\r\nHost: t\r\n\r\n")  # still usable
    st, _, _, _ = read_response(s, buf)
    assert st == 200
    s.close()


def test_a_client_that_vanishes_mid_exchange_leaves_the_rest_alone(proxy, up):
    port, admin = proxy
    for path in ("/slow/300", "/big/30000000"):
        s = connect(port)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        time.sleep(0.1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, __import__("struct").pack("ii", 1, 0))
        s.close()  # a reset, mid-wait and mid-body
        still_works(port)
    assert wait_until(lambda: clusters(admin)["app"]["active_requests"] == 0, timeout_s=3)
    assert wait_until(lambda: re.search(r"^keel_proxy_connections_active 0$", metrics(admin), re.M), timeout_s=3)


# ---- reload --------------------------------------------------------------------------------


def reload_config(up, body, header_value="one"):
    # a health-checked cluster too, so reloads retire health checks in flight
    checked = f"""
  - name: checked
    hosts: [{up.addr}]
    health_check: {{path: /health, interval_ms: 20, timeout_ms: 20}}
"""
    return config(up, checked, f"""
  - name: version
    match: {{exact: /version}}
    direct_response: {{status: 200, body: "{body}"}}
  - name: tagged
    match: {{prefix: /tagged}}
    request_headers_add: [{{name: x-config, value: {header_value}}}]
    cluster: app
""")


def config_version(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config", timeout=5) as r:
        return r.headers["X-Keel-Config-Version"]


def test_sighup_reloads_and_a_bad_file_is_refused(procs, tmp_path, up):
    p, port, admin = start_proxy(procs, tmp_path, reload_config(up, "v1"))
    path = tmp_path / "proxy.yaml"
    assert request(port, "GET", "/version")[2] == b"v1"
    v1 = config_version(admin)
    path.write_text(reload_config(up, "v2"))
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: request(port, "GET", "/version")[2] == b"v2", timeout_s=3)
    assert config_version(admin) != v1
    path.write_text(reload_config(up, "v3") + "  - name: broken\n    match: {regex: \"([\"}\n    cluster: app\n")
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: "reload refused" in p.output(), timeout_s=3)
    assert '"line":' in p.output() and "regex" in p.output()
    assert request(port, "GET", "/version")[2] == b"v2"  # the old config keeps serving
    path.write_text(reload_config(up, "v4").replace("address: 127.0.0.1:0\nadmin", "address: 127.0.0.1:1\nadmin", 1))
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: "restart is needed" in p.output(), timeout_s=3)
    assert request(port, "GET", "/version")[2] == b"v2"
    m = metrics(admin)
    assert metric(m, "keel_proxy_reloads_total", 'result="ok"') == 1
    assert metric(m, "keel_proxy_reloads_total", 'result="refused"') == 2


def test_ten_reloads_under_load_fail_no_request(procs, tmp_path, up):
    p, port, admin = start_proxy(procs, tmp_path, reload_config(up, "v0"))
    path = tmp_path / "proxy.yaml"
    stop = threading.Event()
    failures, done = [], [0]

    def keepalive_client():
        s, buf = connect(port), b""
        while not stop.is_set():
            try:
                s.sendall(b"GET /tagged/x HTTP/1.1\r\nHost: t\r\n\r\n")
                st, _, _, buf = read_response(s, buf)
                if st != 200:
                    failures.append(st)
                done[0] += 1
            except OSError as e:
                failures.append(repr(e))
                s, buf = connect(port), b""
        s.close()

    def slow_client():  # requests in flight while the config changes under them
        while not stop.is_set():
            try:
                st = request(port, "GET", "/slow/150")[0]
                if st != 200:
                    failures.append(st)
                done[0] += 1
            except OSError as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=keepalive_client) for _ in range(3)]
    threads += [threading.Thread(target=slow_client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 11):
            time.sleep(0.2)
            path.write_text(reload_config(up, f"v{i}", header_value=f"gen{i}"))
            p.signal(1)
            p.may_exit = False
            assert wait_until(lambda: request(port, "GET", "/version")[2] == f"v{i}".encode(), timeout_s=3)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert done[0] > 100
    assert metric(metrics(admin), "keel_proxy_reloads_total", 'result="ok"') == 10
    # requests now carry the last config's header
    st, _, body = request(port, "GET", "/tagged/last")
    assert dict((k.lower(), v) for k, v in json.loads(body)["headers"])["x-config"] == "gen10"
    p.signal(15)
    assert p.wait(5) == 0


def test_a_body_is_replayed_to_another_host_after_a_connect_failure(procs, tmp_path, up):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_addr = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()
    clusters_yaml = f"""
  - name: half
    hosts: [{dead_addr}, {up.addr}]
"""
    routes_yaml = """
  - name: half
    match: {prefix: /half}
    cluster: half
    retry: {attempts_max: 2, retry_on: [connect-failure], backoff_base_ms: 1, backoff_cap_ms: 1}
"""
    _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
    body = bytes(range(256)) * 40
    for _ in range(4):  # round robin: some of these try the dead host first
        st, _, got = request(port, "POST", "/half/echo", body=body)
        assert st == 200
        info = json.loads(got)
        assert info["body_len"] == len(body)
        assert info["body_sha"] == __import__("hashlib").sha256(body).hexdigest()
    assert metric(metrics(admin), "keel_proxy_upstream_retries_total", 'cluster="half"') >= 1


def test_a_third_attempt_goes_to_the_host_not_tried_yet(procs, tmp_path, up):
    """Three hosts: one refuses connections, one closes every connection after reading the
    request. A retry avoids every host already tried (Envoy's previous_hosts), so a GET with
    attempts_max 3 always gets its answer from the third. Avoiding only the last host tried,
    a random pick could send the third attempt back to the first failed host."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_addr = "127.0.0.1:%d" % dead.getsockname()[1]
    dead.close()
    dying = FakeUpstream("dying")
    try:
        dying.die_after_body = True
        clusters_yaml = f"""
  - name: trio
    hosts: [{dead_addr}, {dying.addr}, {up.addr}]
    balance: random
"""
        routes_yaml = """
  - name: trio
    match: {prefix: /trio}
    cluster: trio
    retry: {attempts_max: 3, retry_on: [connect-failure, reset], backoff_base_ms: 1, backoff_cap_ms: 1}
"""
        _, port, admin = start_proxy(procs, tmp_path, config(up, clusters_yaml, routes_yaml))
        n = 60  # avoiding only the last host tried failed this in 3 runs out of 3
        for i in range(n):
            st, _, b = request(port, "GET", f"/trio/{i}")
            assert st == 200, (i, st, b)
            assert json.loads(b)["upstream"] == "app"
        assert up.count == n
        m = metrics(admin)
        attempts = metric(m, "keel_proxy_upstream_retries_total", 'cluster="trio"')
        assert dying.count >= 10 and attempts >= 20, (dying.count, attempts)
    finally:
        dying.close()


def test_proxy_help_and_bad_arguments(tmp_path):
    r = subprocess.run([binary("keel"), "proxy", "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0 and b"usage: keel proxy --config" in r.stdout
    r = subprocess.run([binary("keel"), "proxy"], capture_output=True, timeout=10)
    assert r.returncode == 2 and b"--config" in r.stderr
    r = subprocess.run([binary("keel"), "proxy", "--config", str(tmp_path / "missing.yaml")],
                       capture_output=True, timeout=10)
    assert r.returncode == 1 and b"cannot read" in r.stderr


def test_a_reload_keeps_the_state_of_unchanged_clusters(procs, tmp_path, up):
    def cfg(body, open_ms):
        return reload_config(up, body).replace(
            "  - name: checked\n",
            f"""  - name: fragile
    hosts: [{up.addr}]
    circuit_breaker: {{consecutive_failures: 2, open_ms: {open_ms}, calls_min: 100}}
  - name: checked\n""",
        ).replace("  - name: version\n", "  - name: fragile\n    match: {prefix: /fragile}\n    cluster: fragile\n  - name: version\n")

    p, port, admin = start_proxy(procs, tmp_path, cfg("v1", 60000))
    path = tmp_path / "proxy.yaml"
    s = connect(port)  # a keep-alive client: its upstream connection is pooled
    s.sendall(b"GET /echo/a HTTP/1.1\r\nHost: t\r\n\r\n")
    st, _, _, buf = read_response(s)
    up.fail_status = 500
    for _ in range(2):
        assert request(port, "GET", "/fragile")[0] == 500
    up.fail_status = None
    assert request(port, "GET", "/fragile")[0] == 503  # open
    path.write_text(cfg("v2", 60000))  # another route changes; the clusters do not
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: request(port, "GET", "/version")[2] == b"v2", timeout_s=3)
    st, h, _ = request(port, "GET", "/fragile")
    assert st == 503 and h["x-keel-reason"] == ["circuit-open"]  # the breaker's state carried over
    s.sendall(b"GET /echo/b HTTP/1.1\r\nHost: t\r\n\r\n")
    st, _, _, buf = read_response(s, buf)
    assert st == 200
    path.write_text(cfg("v3", 59000))  # the fragile cluster changes: a fresh breaker
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: request(port, "GET", "/version")[2] == b"v3", timeout_s=3)
    assert request(port, "GET", "/fragile")[0] == 200
    assert clusters(admin)["fragile"]["breaker"] == "closed"
    s.close()
    p.signal(15)
    assert p.wait(5) == 0


def test_a_reload_keeps_the_rate_limit_buckets_of_an_unchanged_route(procs, tmp_path, up):
    """A route whose name and rate_limit a reload leaves as they were keeps its buckets, so a
    reload lets no burst through; a reload that changes the limit starts with full buckets."""
    def cfg(body, burst):
        return config(up, "", f"""
  - name: version
    match: {{exact: /version}}
    direct_response: {{status: 200, body: "{body}"}}
  - name: limited
    match: {{prefix: /limited}}
    cluster: app
    rate_limit: {{key: "header:x-api-key", requests_per_s: 1, burst: {burst}}}
""")

    def reload(p, body, burst):
        path.write_text(cfg(body, burst))
        p.signal(1)
        p.may_exit = False
        assert wait_until(lambda: request(port, "GET", "/version")[2] == body.encode(), timeout_s=3)

    def limited():
        return request(port, "GET", "/limited", {"X-Api-Key": "k1"})

    p, port, admin = start_proxy(procs, tmp_path, cfg("v1", 5))
    path = tmp_path / "proxy.yaml"
    assert [limited()[0] for _ in range(5)] == [200] * 5
    exhausted = time.monotonic()
    assert limited()[0] == 429
    reload(p, "v2", 5)  # an unrelated change: the bucket stays empty
    codes = [limited()[0] for _ in range(3)]
    refilled = int(time.monotonic() - exhausted)  # 1 token a second since it was emptied
    assert refilled < 3, "too slow to tell a kept bucket from a refilled one"
    assert codes.count(200) <= refilled, codes  # a refilled bucket would pass all three
    reload(p, "v3", 4)  # the limit changed: a new bucket, full
    assert [limited()[0] for _ in range(4)] == [200] * 4
    st, h, _ = limited()
    assert st == 429 and h["ratelimit-limit"] == ["4"]
    assert metric(metrics(admin), "keel_proxy_reloads_total", 'result="ok"') == 2


def test_a_change_to_the_file_reloads_it_without_a_signal(procs, tmp_path, up):
    p, port, admin = start_proxy(procs, tmp_path, reload_config(up, "v1"))
    path = tmp_path / "proxy.yaml"
    tmp = tmp_path / "proxy.yaml.new"
    tmp.write_text(reload_config(up, "v2"))
    tmp.rename(path)  # as editors and config managers do
    assert wait_until(lambda: request(port, "GET", "/version")[2] == b"v2", timeout_s=3)
    path.write_text(reload_config(up, "v3"))  # and in place
    assert wait_until(lambda: request(port, "GET", "/version")[2] == b"v3", timeout_s=3)
    before = metric(metrics(admin), "keel_proxy_reloads_total", 'result="ok"')
    path.write_text(reload_config(up, "v3"))  # the same text again: nothing to do
    time.sleep(0.4)
    assert metric(metrics(admin), "keel_proxy_reloads_total", 'result="ok"') == before == 2


def test_trace_context_is_continued_or_started(proxy, up):
    port, _ = proxy
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    def sent(headers):
        st, _, body = request(port, "GET", "/echo", headers)
        assert st == 200
        return {k.lower(): v for k, v in json.loads(body)["headers"]}

    got = sent({"traceparent": f"00-{trace}-{span}-01", "tracestate": "k=v"})
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", got["traceparent"])
    assert m and m.group(1) == trace and m.group(2) != span  # same trace, the proxy's own span
    assert got["tracestate"] == "k=v" and "b3" not in got
    got = sent({})  # no context: a new trace, not sampled
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-00", got["traceparent"])
    assert m and m.group(1) != "0" * 32
    got = sent({"traceparent": "00-" + "0" * 32 + f"-{span}-01"})  # invalid: replaced
    assert not got["traceparent"].startswith("00-" + "0" * 32)
    got = sent({"b3": f"{trace}-{span}-1"})  # B3 in: B3 out as well
    assert got["traceparent"].startswith(f"00-{trace}-") and got["b3"].startswith(f"{trace}-")
    got = sent({"X-B3-TraceId": trace, "X-B3-SpanId": span, "X-B3-Sampled": "1"})
    assert got["traceparent"].startswith(f"00-{trace}-") and "x-b3-traceid" not in got


def test_idle_keepalive_connections_cost_little_memory(procs, tmp_path, up):
    p, port, _ = start_proxy(procs, tmp_path, config(up))
    with open(f"/proc/{p.p.pid}/maps") as f:
        maps = f.read()
        if "libasan" in maps or "libtsan" in maps:
            pytest.skip("a sanitizer's quarantine and shadow memory swamp the figure")
    for _ in range(3):  # warm up the pool and the allocator
        request(port, "GET", "/echo/warm")
    base = rss_kib(p.p.pid)
    n, socks = 300, []
    for i in range(n):  # each asks once and stays open, idle
        s = connect(port)
        s.sendall(b"GET /chunked/20000 HTTP/1.1\r\nHost: t\r\n\r\n")
        st, _, body, _ = read_response(s)
        assert st == 200 and len(body) == 20000
        socks.append(s)
    per_conn = (rss_kib(p.p.pid) - base) * 1024 / n
    for s in socks:
        s.close()
    # without releasing buffers between requests each would hold 64 KiB or more
    assert per_conn < 16 * 1024, f"{per_conn:.0f} bytes per idle connection"


# ---- request bodies replayed on retries --------------------------------------------------


def replay_config(dying, good, buffer_bytes=65536):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
limits:
  retry_buffer_bytes: {buffer_bytes}
clusters:
  - name: pair
    hosts: [{dying.addr}, {good.addr}]
    balance: round_robin
    connect_timeout_ms: 500
routes:
  - name: orders
    match: {{prefix: /orders}}
    cluster: pair
    retry: {{attempts_max: 3, retry_on: [connect-failure, reset], backoff_base_ms: 1, backoff_cap_ms: 5}}
"""


def chunked_post(port, target, headers, body, piece=700):
    s = connect(port)
    try:
        head = f"POST {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        out = head.encode()
        for i in range(0, len(body), piece):
            part = body[i : i + piece]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        s.sendall(out + b"0\r\n\r\n")
        st, h, b, _ = read_response(s)
        return st, h, b
    finally:
        s.close()


def test_a_post_with_an_idempotency_key_is_replayed_on_the_other_host(procs, tmp_path):
    """An instance that dies after reading the body: a POST with Idempotency-Key is sent again,
    body and all, to the other instance; one without the key gets 502 and is not resent."""
    dying, good = FakeUpstream("dying"), FakeUpstream("good")
    try:
        dying.die_after_body = True
        _, port, admin = start_proxy(procs, tmp_path, replay_config(dying, good))
        body = bytes(i % 253 for i in range(5000))
        sha = __import__("hashlib").sha256(body).hexdigest()
        for i in range(4):  # round robin: requests meet the dying instance first
            st, _, b = request(port, "POST", "/orders", {"Idempotency-Key": f"k{i}"}, body)
            assert st == 200, b
            info = json.loads(b)
            assert info["upstream"] == "good" and info["body_sha"] == sha
        # chunked bodies are kept as framed and replayed too
        for i in range(2):
            st, _, b = chunked_post(port, "/orders", {"Idempotency-Key": f"kc{i}"}, body)
            assert st == 200 and json.loads(b)["body_sha"] == sha
        assert dying.count >= 1 and all(x == body for x in dying.bodies)  # replayed whole
        assert good.count == 6 and all(x == body for x in good.bodies)
        retried = dying.count
        # without the key: the dying instance may have acted on it, so 502 and no second send
        seen_dying, seen_good = dying.count, good.count
        statuses = [request(port, "POST", "/orders", None, body)[0] for _ in range(4)]
        assert 502 in statuses and set(statuses) <= {200, 502}
        assert dying.count - seen_dying == statuses.count(502)
        assert good.count - seen_good == statuses.count(200)
        # idempotent methods as before: a PUT without a key is replayed
        seen_dying, seen_good = dying.count, good.count
        for _ in range(3):
            st, _, b = request(port, "PUT", "/orders/7", None, body)
            assert st == 200 and json.loads(b)["body_sha"] == sha
        assert good.count - seen_good == 3
        retried += dying.count - seen_dying
        m = metrics(admin)
        assert metric(m, "keel_proxy_upstream_retries_total", 'cluster="pair"') == retried
        assert metric(m, "keel_proxy_upstream_resets_total", 'cluster="pair"') == dying.count
    finally:
        dying.close()
        good.close()


def test_a_body_larger_than_the_retry_buffer_is_not_replayed(procs, tmp_path):
    dying, good = FakeUpstream("dying"), FakeUpstream("good")
    try:
        dying.die_after_body = True
        _, port, _ = start_proxy(procs, tmp_path, replay_config(dying, good, buffer_bytes=1024))
        small, big = b"s" * 1000, b"b" * 5000
        statuses = [request(port, "POST", "/orders", {"Idempotency-Key": f"b{i}"}, big)[0]
                    for i in range(4)]
        # the copy was dropped past 1024 bytes: a request that met the dying instance is lost
        assert 502 in statuses and set(statuses) <= {200, 502}
        assert dying.count == statuses.count(502) and good.count == statuses.count(200)
        seen_dying, seen_good = dying.count, good.count
        for i in range(4):  # a body within the buffer is replayed
            st, _, _ = request(port, "POST", "/orders", {"Idempotency-Key": f"s{i}"}, small)
            assert st == 200
        assert dying.count > seen_dying and good.count - seen_good == 4
        # chunked: copied until it passes the limit, then dropped
        statuses = [chunked_post(port, "/orders", {"Idempotency-Key": f"c{i}"}, big)[0]
                    for i in range(4)]
        assert 502 in statuses and set(statuses) <= {200, 502}
    finally:
        dying.close()
        good.close()
