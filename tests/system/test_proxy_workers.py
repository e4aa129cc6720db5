"""keel proxy with several workers (`workers: 2`): connections spread over both event loops, and
the state the workers share -- rate-limit buckets, circuit breakers -- is one state, not one per
worker (docs/proxy.md, "Workers")."""
import re
import signal
import subprocess
import time
import urllib.request

from conftest import binary
from proxyfake import FakeUpstream, connect, read_response, request, start_proxy


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels):
    m = re.search(r"^" + re.escape(name) + r"\{" + re.escape(labels) + r"\} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def worker_conns(admin):
    text = metrics(admin)
    return [metric(text, "keel_proxy_worker_connections_total", f'worker="{w}"') for w in (0, 1)]


def config(up, routes):
    return f"""
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
    circuit_breaker: {{consecutive_failures: 3, open_ms: 60000, probes: 1, calls_min: 100}}
routes:
  - name: ping
    match: {{exact: /ping}}
    direct_response: {{status: 200, body: "pong"}}
{routes}
  - name: app
    match: {{prefix: /}}
    cluster: app
"""


def keepalive_get(s, path, rest=b""):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    st, h, _, rest = read_response(s, rest)
    return st, h, rest


def conn_on_worker(port, admin, want=None, tries=64):
    """A keep-alive connection and the worker that accepted it (want: keep trying until that one).
    The worker is seen in the per-worker accept counters, after a request on the connection."""
    for _ in range(tries):
        before = worker_conns(admin)
        s = connect(port)
        st, _, _ = keepalive_get(s, "/ping")
        assert st == 200
        after = worker_conns(admin)
        w = [i for i in (0, 1) if after[i] > before[i]]
        assert len(w) == 1, (before, after)
        if want is None or w[0] == want:
            return s, w[0]
        s.close()
    raise AssertionError(f"no connection landed on worker {want} in {tries} tries")


def test_connections_are_spread_over_both_workers(procs, tmp_path):
    up = FakeUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up, ""))
        n = 40
        for i in range(n):
            st, _, body = request(port, "GET", f"/item/{i}")
            assert st == 200 and b'"upstream"' in body
        conns = worker_conns(admin)
        # SO_REUSEPORT hashes each connection's 4-tuple: all 40 on one worker is a 2^-39 chance
        assert sum(conns) == n and conns[0] > 0 and conns[1] > 0, conns
        assert metric(metrics(admin), "keel_proxy_requests_total", 'route="app"') == n
    finally:
        up.close()


def test_a_rate_limit_holds_over_all_workers_not_per_worker(procs, tmp_path):
    up = FakeUpstream()
    try:
        routes = """
  - name: limited
    match: {prefix: /limited}
    rate_limit: {key: source_address, requests_per_s: 1, burst: 10}
    cluster: app
"""
        _, port, admin = start_proxy(procs, tmp_path, config(up, routes))
        t0 = time.monotonic()
        statuses = [request(port, "GET", "/limited")[0] for _ in range(60)]
        elapsed = time.monotonic() - t0
        ok = statuses.count(200)
        conns = worker_conns(admin)
        assert conns[0] > 0 and conns[1] > 0, conns  # both workers took requests
        # one bucket: the burst plus one token a second. A bucket per worker would let through
        # about twice the burst.
        assert 10 <= ok <= 10 + int(elapsed) + 1, (ok, elapsed, conns)
        assert statuses.count(429) == 60 - ok
        assert metric(metrics(admin), "keel_proxy_rate_limited_total", 'route="limited"') == 60 - ok
    finally:
        up.close()


def test_a_breaker_opened_on_one_worker_rejects_on_the_other(procs, tmp_path):
    up = FakeUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up, ""))
        a, wa = conn_on_worker(port, admin)
        rest = b""
        for _ in range(3):  # three failures seen by worker wa only
            st, _, rest = keepalive_get(a, "/status/500", rest)
            assert st == 500
        st, h, rest = keepalive_get(a, "/x", rest)
        assert st == 503 and h["x-keel-reason"] == ["circuit-open"]
        b, wb = conn_on_worker(port, admin, want=1 - wa)
        st, h, _ = keepalive_get(b, "/x")  # the other worker never saw a failure
        assert st == 503 and h["x-keel-reason"] == ["circuit-open"]
        m = metrics(admin)
        assert metric(m, "keel_proxy_breaker_state", 'cluster="app"') == 1
        assert metric(m, "keel_proxy_breaker_rejected_total", 'cluster="app"') == 2
        a.close()
        b.close()
    finally:
        up.close()


def test_a_reload_reaches_every_worker(procs, tmp_path):
    up = FakeUpstream()
    try:
        p, port, admin = start_proxy(procs, tmp_path, config(up, ""))
        conns = {}
        for w in (0, 1):
            conns[w], _ = conn_on_worker(port, admin, want=w)
        path = tmp_path / "proxy.yaml"
        path.write_text(path.read_text().replace('body: "pong"', 'body: "pong2"'))
        p.p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while metric(metrics(admin), "keel_proxy_reloads_total", 'result="ok"') < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for w in (0, 1):  # keep-alive connections on each worker see the new config
            deadline = time.monotonic() + 5
            while True:
                conns[w].sendall(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
                st, _, body, _ = read_response(conns[w])
                if body == b"pong2":
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.05)
            conns[w].close()
        # SIGTERM stops every worker and joins its thread: a clean exit (under ASan: no leak)
        p.may_exit = True
        p.p.send_signal(signal.SIGTERM)
        assert p.p.wait(10) == 0, p.output()[-2000:]
    finally:
        up.close()


def test_check_refuses_a_worker_count_out_of_range_naming_its_line(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text("listeners: [{address: 127.0.0.1:0}]\nworkers: 65\n")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       timeout=10)
    assert r.returncode == 1 and b"proxy.yaml:2: workers: 65 is out of range 1..64" in r.stderr, r
    path.write_text("listeners: [{address: 127.0.0.1:0}]\nworkers: 64\n")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       timeout=10)
    assert r.returncode == 0, r
