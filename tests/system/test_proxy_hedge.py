"""keel proxy's hedged requests (docs/proxy.md, "Hedged requests"): when the first try has no
response head after the route's hedge delay, a second try goes to another host and the first head
wins; the other attempt is cancelled. Only idempotent requests (or ones with an Idempotency-Key)
are hedged, the retry budget bounds hedges, and exactly one response reaches the client."""
import random
import re
import socket
import threading
import time
import urllib.request

import pytest

from proxyfake import FakeUpstream, connect, read_response, request, start_proxy


class DelayedUpstream(FakeUpstream):
    """A FakeUpstream that waits delay_s (or a uniform draw in delay_s, a (lo, hi) pair) before
    each answer but /health."""

    def __init__(self, name, delay_s):
        super().__init__(name)
        self.delay_s = delay_s

    def _answer(self, conn, method, target, path, headers, raw, body):
        if path != "/health":
            d = self.delay_s
            time.sleep(random.uniform(*d) if isinstance(d, tuple) else d)
        return super()._answer(conn, method, target, path, headers, raw, body)


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, cluster="app"):
    m = re.search(r"^" + re.escape(name) + r'\{cluster="' + cluster + r'"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def hedge_metrics(admin):
    t = metrics(admin)
    return {k: metric(t, "keel_proxy_" + k + "_total")
            for k in ("hedges", "hedge_won", "hedge_cancelled", "hedge_budget_exhausted",
                      "upstream_retries", "upstream_requests")}


def config(hosts, workers=1, budget="", hedge="{delay_ms: 50}", attempts=2):
    return f"""
workers: {workers}
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{", ".join(h.addr for h in hosts)}]
routes:
  - name: app
    match: {{prefix: /}}
    cluster: app
    retry: {{attempts_max: {attempts}{budget}}}
    hedge: {hedge}
"""


def timed(port, method, target, headers=None, body=b""):
    t0 = time.monotonic()
    st, h, b = request(port, method, target, headers=headers, body=body)
    return st, b, time.monotonic() - t0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_get_is_answered_by_the_fast_host_after_the_delay(procs, tmp_path, workers):
    slow, fast = DelayedUpstream("slow", 0.5), DelayedUpstream("fast", 0.0)
    try:
        _, port, admin = start_proxy(procs, tmp_path, config([slow, fast], workers))
        n = 16
        lat = []
        for i in range(n):
            st, body, took = timed(port, "GET", f"/item/{i}")
            assert st == 200 and b'"upstream": "fast"' in body, body
            lat.append(took)
        # round_robin sends every other first try to the slow host: those are hedged after 50 ms
        # and answered by the fast one, never after the slow host's 500 ms
        assert max(lat) < 0.35, lat
        assert sum(1 for t in lat if t >= 0.045) >= n // 2 - 2, lat  # those waited for the delay
        m = hedge_metrics(admin)
        assert m["hedges"] >= n // 2 - 2, m
        assert m["hedge_won"] == m["hedges"] and m["hedge_cancelled"] == m["hedges"], m
        assert m["hedge_budget_exhausted"] == 0 and m["upstream_retries"] == 0, m
        assert m["upstream_requests"] == n + m["hedges"], m
        time.sleep(0.6)  # the slow host answered its requests late: discarded
        assert slow.count >= n // 2 - 2, slow.count
    finally:
        slow.close()
        fast.close()


def test_the_late_answer_never_reaches_the_client_on_a_keepalive_connection(procs, tmp_path):
    slow, fast = DelayedUpstream("slow", 0.3), DelayedUpstream("fast", 0.0)
    try:
        _, port, admin = start_proxy(procs, tmp_path, config([slow, fast]))
        s = connect(port)
        rest = b""
        for i in range(8):
            s.sendall(f"GET /ka/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            st, _, body, rest = read_response(s, rest)
            assert st == 200 and f'"target": "/ka/{i}"'.encode() in body, body
        # the slow host's answers come 300 ms after their request: nothing more may arrive
        s.settimeout(0.6)
        try:
            extra = rest + s.recv(65536)
        except socket.timeout:
            extra = rest
        assert extra == b"", extra
        s.close()
        assert hedge_metrics(admin)["hedges"] >= 3
    finally:
        slow.close()
        fast.close()


def test_a_post_without_an_idempotency_key_is_never_hedged(procs, tmp_path):
    slow, fast = DelayedUpstream("slow", 0.5), DelayedUpstream("fast", 0.0)
    try:
        _, port, admin = start_proxy(procs, tmp_path, config([slow, fast]))
        body = b"x" * 1000
        res = [timed(port, "POST", "/orders", body=body) for _ in range(4)]
        assert all(st == 200 for st, _, _ in res), res
        # the POSTs whose try went to the slow host waited for it
        slow_ones = [took for _, b, took in res if b'"upstream": "slow"' in b]
        assert len(slow_ones) == 2 and min(slow_ones) >= 0.45, res
        assert hedge_metrics(admin)["hedges"] == 0
        # with an Idempotency-Key the POST is hedged, its body sent again from the retry buffer
        res = [timed(port, "POST", "/orders", headers={"Idempotency-Key": f"k{i}"}, body=body)
               for i in range(4)]
        assert all(st == 200 and b'"upstream": "fast"' in b and b'"body_len": 1000' in b
                   for st, b, _ in res), res
        assert max(took for _, _, took in res) < 0.35, res
        assert hedge_metrics(admin)["hedges"] >= 1
    finally:
        slow.close()
        fast.close()


def test_the_retry_budget_stops_hedges(procs, tmp_path):
    # both hosts slow: every request would hedge; the budget lets one hedge be in flight
    a, b = DelayedUpstream("a", 0.4), DelayedUpstream("b", 0.4)
    try:
        _, port, admin = start_proxy(
            procs, tmp_path, config([a, b], budget=", budget_percent: 1, budget_min: 1"))
        out = []
        threads = [threading.Thread(target=lambda i=i: out.append(timed(port, "GET", f"/b/{i}")))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [st for st, _, _ in out] == [200] * 4, out
        m = hedge_metrics(admin)
        assert m["hedges"] == 1 and m["hedge_budget_exhausted"] == 3, m
    finally:
        a.close()
        b.close()


def test_no_hedge_to_the_same_host_and_none_past_attempts_max(procs, tmp_path):
    one = DelayedUpstream("one", 0.15)
    try:
        _, port, admin = start_proxy(procs, tmp_path, config([one]))
        st, _, took = timed(port, "GET", "/only")
        assert st == 200 and took >= 0.14
        assert hedge_metrics(admin)["hedges"] == 0 and one.count == 1
    finally:
        one.close()


def test_both_answering_gives_the_client_exactly_one_response(procs, tmp_path):
    # both hosts answer within 40..80 ms and the hedge goes at 50 ms: the two race
    a, b = DelayedUpstream("a", (0.04, 0.08)), DelayedUpstream("b", (0.04, 0.08))
    try:
        p, port, admin = start_proxy(procs, tmp_path, config([a, b], hedge="{delay_ms: 50}"))
        s = connect(port)
        rest = b""
        n = 30
        for i in range(n):
            s.sendall(f"GET /race/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            st, _, body, rest = read_response(s, rest)
            assert st == 200 and f'"target": "/race/{i}"'.encode() in body, body
        s.settimeout(0.3)
        try:
            extra = rest + s.recv(65536)
        except socket.timeout:
            extra = rest
        assert extra == b"", extra
        s.close()
        m = hedge_metrics(admin)
        assert m["hedges"] > 0 and m["hedge_cancelled"] == m["hedges"], m
        assert n <= a.count + b.count <= n + m["hedges"], (a.count, b.count, m)
        p.signal(15)  # every cancelled attempt's connection freed: clean under ASan too
        assert p.wait(5) == 0, p.output()[-2000:]
        assert "Sanitizer" not in p.output() and "runtime error" not in p.output()
    finally:
        a.close()
        b.close()


def test_a_retryable_answer_from_one_attempt_leaves_the_other_to_answer(procs, tmp_path):
    # a answers 503 (gateway-error, in retry_on) after 100 ms, b answers 200 after 300 ms: with
    # both in flight, the 503 ends a's attempt and b's answer is the response, with no retry
    a, b = DelayedUpstream("a", 0.1), DelayedUpstream("b", 0.3)
    a.fail_status = 503
    try:
        _, port, admin = start_proxy(procs, tmp_path, config([a, b]))
        for i in range(2):
            st, body, took = timed(port, "GET", f"/r/{i}")
            assert st == 200 and b'"upstream": "b"' in body, body
            assert 0.28 <= took < 0.5, took
        m = hedge_metrics(admin)
        assert m["hedges"] == 2 and m["upstream_retries"] == 0, m
        # nothing was cancelled: the 503 ended its own attempt. A request whose first try went to
        # a was answered by its hedge (won); one whose first try went to b, by that first try
        # (the hedges' picks take turns in the round robin too, so which it is varies)
        assert m["hedge_cancelled"] == 0 and m["hedge_won"] >= 1, m
        assert a.count == 2 and b.count == 2
    finally:
        a.close()
        b.close()


def test_the_route_deadline_ends_both_attempts(procs, tmp_path):
    a, b = DelayedUpstream("a", 0.6), DelayedUpstream("b", 0.6)
    try:
        _, port, admin = start_proxy(
            procs, tmp_path, config([a, b]).replace("    cluster: app\n",
                                                    "    cluster: app\n    timeout_ms: 200\n"))
        st, _, took = timed(port, "GET", "/late")
        assert st == 504 and 0.19 <= took < 0.4, (st, took)
        assert hedge_metrics(admin)["hedges"] == 1
        st, _, _ = timed(port, "GET", "/late")  # the proxy goes on serving
        assert st == 504
    finally:
        a.close()
        b.close()


def test_with_tracing_each_attempt_is_a_client_span_and_the_loser_is_canceled(procs, tmp_path):
    from test_proxy_tracing import Collector, upstream_traceparent

    slow, fast = DelayedUpstream("slow", 0.5), DelayedUpstream("fast", 0.0)
    col = Collector()
    try:
        cfg = config([slow, fast]).replace(
            "clusters:", f"""tracing:
  zipkin: "http://127.0.0.1:{col.port}/api/v2/spans"
  service_name: gateway
  flush_ms: 100
clusters:""")
        _, port, admin = start_proxy(procs, tmp_path, cfg)
        seen = {}
        for i in range(2):  # round_robin (the hedges take turns too): one or both hedged
            trace = "%032x" % (0xabc0 + i)
            st, _, body = request(port, "GET", f"/t/{i}", {"traceparent": f"00-{trace}-{'1' * 16}-01"})
            assert st == 200 and b'"upstream": "fast"' in body
            seen[trace] = upstream_traceparent(body)[0].split("-")[2]  # the span id fast saw
        time.sleep(0.8)  # the batches (flush_ms 100), and the slow host's late answer
        spans = col.spans()
        hedged = [t for t in seen if sum(1 for s in spans if s["traceId"] == t
                                         and s["kind"] == "CLIENT") == 2]
        assert len(hedged) >= 1 and len(hedged) == hedge_metrics(admin)["hedges"], spans
        for t in hedged:
            server = [s for s in spans if s["traceId"] == t and s["kind"] == "SERVER"][0]
            clients = {s["tags"]["upstream_address"]: s for s in spans
                       if s["traceId"] == t and s["kind"] == "CLIENT"}
            first, hedge = clients[slow.addr], clients[fast.addr]
            assert first["parentId"] == server["id"] and hedge["parentId"] == server["id"]
            assert first["id"] != hedge["id"] and hedge["id"] == seen[t]
            assert first["tags"].get("error") == "canceled", first
            assert "error" not in hedge["tags"] and hedge["tags"]["http.status_code"] == "200"
    finally:
        col.close()
        slow.close()
        fast.close()


def test_a_first_try_past_its_per_try_timeout_leaves_the_hedge_to_answer(procs, tmp_path):
    # per_try_timeout 300 ms, hedge at 100 ms: a first try on the slow host (1 s) times out at
    # 300 ms while the hedge (sent at 100 ms, its own deadline at 400 ms) answers at about 360 ms
    slow, medium = DelayedUpstream("slow", 1.0), DelayedUpstream("medium", 0.26)
    try:
        cfg = config([slow, medium], hedge="{delay_ms: 100}").replace(
            "    cluster: app\n", "    cluster: app\n    per_try_timeout_ms: 300\n")
        _, port, admin = start_proxy(procs, tmp_path, cfg)
        for i in range(2):
            st, body, took = timed(port, "GET", f"/p/{i}")
            assert st == 200 and b'"upstream": "medium"' in body, (st, body)
            assert took < 0.39, took
        m = hedge_metrics(admin)
        timeouts = metric(metrics(admin), "keel_proxy_upstream_timeouts_total")
        # each request's first try went to the slow host (timed out, its hedge answered) or to
        # the medium one (it answered; the hedge to the slow host was cancelled)
        assert m["hedges"] == 2 and m["upstream_retries"] == 0, m
        assert timeouts >= 1 and timeouts + m["hedge_cancelled"] == 2, (timeouts, m)
        assert m["hedge_won"] == timeouts, m
    finally:
        slow.close()
        medium.close()
