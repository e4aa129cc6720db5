"""test_proxy_stale.py - a request sent on an idle pooled upstream connection that the upstream
had closed is sent again on a new connection (docs/proxy.md, "What happens to a request", 5).

The upstreams answer the first request on each connection with keep-alive and close the
connection (FIN, or a reset) when the next request arrives on it, without an answer and without
ever saying `Connection: close`: the race between an upstream's idle timeout and the proxy's
reuse of the connection, made to happen on every reuse. One keep-alive client connection
carries the requests, so they stay on one worker and its pool (pools are per worker).
"""

import json
import re
import urllib.request

import pytest

from proxyfake import FakeUpstream, connect, read_response, start_proxy


def config(a, b, guards=True):
    # a breaker that opens, and an outlier detector that ejects, on the first failure: a stale
    # connection re-sent must be neither
    guards_yaml = """
    circuit_breaker: {consecutive_failures: 1, open_ms: 30000, calls_min: 100}
    outlier_detection: {consecutive_local: 1, consecutive_5xx: 1, consecutive_gateway: 1, interval_ms: 50, base_ejection_ms: 30000, max_ejection_pct: 50}
""" if guards else ""
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: pair
    hosts: [{a.addr}, {b.addr}]
    balance: round_robin
    connect_timeout_ms: 500{guards_yaml}
routes:
  - name: retried
    match: {{prefix: /retried}}
    cluster: pair
    retry: {{attempts_max: 3, retry_on: [connect-failure, reset, gateway-error], backoff_base_ms: 1, backoff_cap_ms: 5}}
  - name: plain
    match: {{prefix: /}}
    cluster: pair
"""


@pytest.fixture
def pair():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    yield a, b
    a.close()
    b.close()


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels='cluster="pair"'):
    m = re.search(r"^" + re.escape(name) + r"\{" + re.escape(labels) + r"\} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def cluster(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5) as r:
        return {c["name"]: c for c in json.loads(r.read())["clusters"]}["pair"]


class Client:
    """One keep-alive client connection."""

    def __init__(self, port):
        self.s = connect(port)
        self.rest = b""

    def send(self, method, target, headers=None, body=b""):
        hdrs = {"Host": "t"}
        hdrs.update(headers or {})
        if body:
            hdrs["Content-Length"] = str(len(body))
        req = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.s.sendall(req.encode() + b"\r\n" + body)
        st, h, b, self.rest = read_response(self.s, self.rest)
        return st, h, b

    def close(self):
        self.s.close()


def assert_no_failure_counted(admin):
    m = metrics(admin)
    assert metric(m, "keel_proxy_upstream_retries_total") == 0
    assert metric(m, "keel_proxy_retry_budget_exhausted_total") == 0
    assert metric(m, "keel_proxy_upstream_resets_total") == 0
    assert metric(m, "keel_proxy_ejections_total") == 0
    assert metric(m, "keel_proxy_breaker_rejected_total") == 0
    cl = cluster(admin)
    assert cl["breaker"] == "closed" and cl["active_retries"] == 0
    assert not any(h["ejected"] for h in cl["hosts"]), cl


@pytest.mark.parametrize("close", ["fin", "reset"])
def test_a_get_on_a_pooled_connection_the_upstream_closed_is_sent_again_on_a_new_one(
        procs, tmp_path, pair, close):
    a, b = pair
    for u in pair:
        u.stale_after, u.stale_reset = 1, close == "reset"
    _, port, admin = start_proxy(procs, tmp_path, config(a, b))
    c = Client(port)
    try:
        # round robin: the first two open a connection to each host, every later one meets its
        # host's pooled connection closed, on a route without retries and on one with them
        for i in range(8):
            st, _, body = c.send("GET", "/retried/x" if i % 4 >= 2 else f"/items/{i}")
            assert st == 200, (i, body)
    finally:
        c.close()
    assert a.dropped + b.dropped == 6
    assert a.connections + b.connections == 8  # each drop was followed by one new connection
    m = metrics(admin)
    assert metric(m, "keel_proxy_upstream_stale_retries_total") == 6
    assert metric(m, "keel_proxy_upstream_requests_total") == 8  # attempts: the same eight
    # not a retry, not a failure of the host
    assert_no_failure_counted(admin)


def test_a_request_whose_body_cannot_be_sent_again_gets_502(procs, tmp_path, pair):
    a, b = pair
    for u in pair:
        u.stale_after = 1
    _, port, admin = start_proxy(procs, tmp_path, config(a, b))
    c = Client(port)
    body = b"p" * 3000
    try:
        for i in range(2):  # a pooled connection to each host
            assert c.send("GET", f"/warm/{i}")[0] == 200
        # a route without retries keeps no copy of the body: a PUT whose body went up on the
        # stale connection cannot be sent again, and is answered 502 as before
        st, h, _ = c.send("PUT", "/items/1", body=body)
        assert st == 502 and h["x-keel-reason"] == ["upstream-reset"]
    finally:
        c.close()
    assert a.dropped + b.dropped == 1 and a.count + b.count == 3  # sent once
    m = metrics(admin)
    assert metric(m, "keel_proxy_upstream_stale_retries_total") == 0
    assert metric(m, "keel_proxy_upstream_resets_total") == 1  # the usual failure path


def test_a_post_is_sent_again_only_with_an_idempotency_key_and_a_kept_body(procs, tmp_path, pair):
    """On a route with retries the body is kept (limits.retry_buffer_bytes): a PUT and a POST
    with Idempotency-Key go again whole; a POST without one may have been acted on (the upstream
    read it before the connection closed), so it is not sent twice, as a retry would not be."""
    a, b = pair
    for u in pair:
        u.stale_after = 1
    _, port, admin = start_proxy(procs, tmp_path, config(a, b))
    c = Client(port)
    body = bytes(i % 251 for i in range(3000))
    sha = __import__("hashlib").sha256(body).hexdigest()
    try:
        for i in range(2):
            assert c.send("GET", f"/retried/warm/{i}")[0] == 200
        st, _, out = c.send("PUT", "/retried/items/1", body=body)
        assert st == 200 and json.loads(out)["body_sha"] == sha
        st, _, out = c.send("POST", "/retried/orders", {"Idempotency-Key": "k1"}, body)
        assert st == 200 and json.loads(out)["body_sha"] == sha
        dropped = a.dropped + b.dropped
        assert dropped == 2
        st, h, _ = c.send("POST", "/retried/orders", body=body)
        assert st == 502 and h["x-keel-reason"] == ["upstream-reset"]
    finally:
        c.close()
    assert a.dropped + b.dropped == 3
    sent = [x for x in a.bodies + b.bodies if x]
    assert len(sent) == 2 + 2 + 1 and all(x == body for x in sent)  # whole every time
    m = metrics(admin)
    assert metric(m, "keel_proxy_upstream_stale_retries_total") == 2
    assert metric(m, "keel_proxy_upstream_retries_total") == 0  # the POST: not retried either


def test_a_request_that_fails_on_a_new_connection_is_not_sent_again(procs, tmp_path, pair):
    a, b = pair
    _, port, admin = start_proxy(procs, tmp_path, config(a, b, guards=False))
    c = Client(port)
    try:
        for i in range(2):  # a pooled connection to each host
            assert c.send("GET", f"/warm/{i}")[0] == 200
        # upstreams that now die on every request: the request on each stale pooled connection
        # goes once more on a new connection, which fails too: 502 by the usual failure path
        a.die_after_body = b.die_after_body = True
        for i in range(2):
            st, h, _ = c.send("GET", f"/items/{i}")
            assert st == 502 and h["x-keel-reason"] == ["upstream-reset"]
        assert a.count + b.count == 2 + 2 * 2
        # no pooled connection is left: a request on a new connection that fails is not sent
        # again
        st, h, _ = c.send("GET", "/items/2")
        assert st == 502 and h["x-keel-reason"] == ["upstream-reset"]
    finally:
        c.close()
    assert a.count + b.count == 2 + 2 * 2 + 1
    m = metrics(admin)
    assert metric(m, "keel_proxy_upstream_stale_retries_total") == 2
    assert metric(m, "keel_proxy_upstream_resets_total") == 3
