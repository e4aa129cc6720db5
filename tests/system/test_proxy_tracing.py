"""test_proxy_tracing.py - keel proxy's spans (docs/proxy.md, "Tracing"): a small Zipkin collector
(http.server on 127.0.0.1) receives the proxy's batches; a fake upstream echoes the traceparent
it received. Checked: the Zipkin v2 shape of server and client spans, their ids against the
traceparent the upstream saw, sampling (the client's decision, sample_percent 0 and 100),
retries as one client span each, a dead collector counted while requests go on, and a full
queue counted as drops. Every wait is bounded.
"""
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, wait_until
from proxyfake import request, start_proxy

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Collector:
    """Zipkin's POST /api/v2/spans: keeps every batch; answers `status`; holds each POST while
    `hold` is clear."""

    def __init__(self, status=202):
        self.batches = []
        self.content_types = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                outer.hold.wait(20)
                with outer.lock:
                    outer.content_types.append(self.headers.get("Content-Type"))
                    outer.batches.append((self.path, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def spans(self):
        with self.lock:
            return [s for _, body in self.batches for s in json.loads(body)]

    def close(self):
        self.hold.set()
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def config(up, zipkin_port, tracing="", flush_ms=100):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
tracing:
  zipkin: "http://127.0.0.1:{zipkin_port}/api/v2/spans"
  service_name: gateway
  flush_ms: {flush_ms}
{tracing}
clusters:
  - name: app
    hosts: [{up.addr}]
    connect_timeout_ms: 500
routes:
  - name: direct
    match: {{exact: /direct}}
    direct_response: {{status: 200, body: "here"}}
  - name: retried
    match: {{prefix: /status/}}
    cluster: app
    retry: {{attempts_max: 3, retry_on: [5xx], backoff_base_ms: 1, backoff_cap_ms: 2}}
  - name: api
    match: {{prefix: /}}
    cluster: app
"""


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(admin, name, labels=None):
    text = metrics(admin)
    pat = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    m = re.search(r"^" + pat + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def upstream_traceparent(body):
    """The traceparent the fake upstream received (it echoes its request's fields)."""
    hdrs = {k.lower(): v for k, v in json.loads(body)["headers"]}
    return hdrs["traceparent"], hdrs


def by_kind(spans, kind):
    return [s for s in spans if s.get("kind") == kind]


def test_a_sampled_request_gives_a_server_and_a_client_span_in_zipkin_v2_shape(procs, tmp_path, up, collector):
    _, port, admin = start_proxy(procs, tmp_path, config(up, collector.port))
    st, _, body = request(port, "GET", "/orders/7?x=1", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert st == 200
    tp, _ = upstream_traceparent(body)
    m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", tp)
    assert m and m.group(1) == TRACE
    sent_span = m.group(2)
    assert wait_until(lambda: len(collector.spans()) >= 2, 5)
    spans = collector.spans()
    assert len(spans) == 2
    server, client = by_kind(spans, "SERVER")[0], by_kind(spans, "CLIENT")[0]
    for s in spans:
        assert s["traceId"] == TRACE
        assert re.fullmatch(r"[0-9a-f]{16}", s["id"])
        assert isinstance(s["timestamp"], int) and abs(s["timestamp"] / 1e6 - time.time()) < 60
        assert isinstance(s["duration"], int) and s["duration"] >= 1
        assert s["localEndpoint"] == {"serviceName": "gateway"}
    # the server span continues the client's; the client span is its child and is the span
    # whose id the upstream received as its parent
    assert server["parentId"] == PARENT
    assert client["parentId"] == server["id"]
    assert client["id"] == sent_span
    assert client["timestamp"] >= server["timestamp"]
    assert client["timestamp"] + client["duration"] <= server["timestamp"] + server["duration"]
    assert server["name"] == "GET api"
    assert server["tags"] == {"http.method": "GET", "http.path": "/orders/7", "route": "api",
                              "http.status_code": "200"}
    assert server["remoteEndpoint"] == {"ipv4": "127.0.0.1"}
    assert client["name"] == "GET app"
    assert client["tags"] == {"http.method": "GET", "upstream_cluster": "app",
                              "upstream_address": up.addr, "attempt": "1",
                              "http.status_code": "200"}
    assert client["remoteEndpoint"] == {"serviceName": "app", "ipv4": "127.0.0.1", "port": up.port}
    with collector.lock:
        assert collector.content_types == ["application/json"] * len(collector.batches)
        assert all(path == "/api/v2/spans" for path, _ in collector.batches)
    assert metric(admin, "keel_proxy_tracing_spans_recorded_total") == 2
    assert wait_until(lambda: metric(admin, "keel_proxy_tracing_spans_exported_total") == 2, 5)


def test_each_retry_is_a_client_span_and_a_5xx_is_an_error(procs, tmp_path, up, collector):
    _, port, admin = start_proxy(procs, tmp_path, config(up, collector.port))
    st, _, _ = request(port, "GET", "/status/503", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert st == 503
    assert wait_until(lambda: len(collector.spans()) >= 4, 5)
    spans = collector.spans()
    server = by_kind(spans, "SERVER")[0]
    clients = sorted(by_kind(spans, "CLIENT"), key=lambda s: int(s["tags"]["attempt"]))
    assert [c["tags"]["attempt"] for c in clients] == ["1", "2", "3"]
    assert len({c["id"] for c in clients}) == 3  # each try its own span id
    for c in clients:
        assert c["parentId"] == server["id"]
        assert c["tags"]["http.status_code"] == "503" and c["tags"]["error"] == "503"
    assert server["tags"]["http.status_code"] == "503" and server["tags"]["error"] == "503"
    # a proxy error names its reason; a direct response has no client span
    st, _, _ = request(port, "GET", "/direct", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert st == 200
    assert wait_until(lambda: len(collector.spans()) >= 5, 5)
    direct = [s for s in collector.spans() if s["name"] == "GET direct"]
    assert len(direct) == 1 and direct[0]["kind"] == "SERVER" and "error" not in direct[0]["tags"]


def test_a_dead_upstream_gives_a_client_span_with_the_failure(procs, tmp_path, up, collector):
    dead = free_port()
    _, port, _ = start_proxy(procs, tmp_path, config(up, collector.port).replace(
        f"hosts: [{up.addr}]", f"hosts: [127.0.0.1:{dead}]"))
    st, h, _ = request(port, "GET", "/x", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert st == 503
    assert wait_until(lambda: len(collector.spans()) >= 2, 5)
    spans = collector.spans()
    client, server = by_kind(spans, "CLIENT")[0], by_kind(spans, "SERVER")[0]
    assert client["tags"]["error"] == "connect-failed" and "http.status_code" not in client["tags"]
    assert client["remoteEndpoint"]["port"] == dead
    assert server["tags"]["error"] == h["x-keel-reason"][0] == "connect-failed"
    assert server["tags"]["keel.reason"] == "connect-failed"


def test_unsampled_requests_record_nothing_and_say_so_upstream(procs, tmp_path, up, collector):
    _, port, admin = start_proxy(procs, tmp_path, config(up, collector.port, "  sample_percent: 100"))
    st, _, body = request(port, "GET", "/a", {"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert st == 200
    tp, _ = upstream_traceparent(body)
    assert re.fullmatch(rf"00-{TRACE}-[0-9a-f]{{16}}-00", tp)  # the decision passes on
    st, _, body = request(port, "GET", "/a", {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT,
                                              "X-B3-Sampled": "0"})
    assert st == 200
    st, _, body = request(port, "GET", "/a", {"b3": "0"})
    assert st == 200
    assert upstream_traceparent(body)[0].endswith("-00")
    time.sleep(0.5)  # several flush intervals
    assert collector.spans() == []
    assert metric(admin, "keel_proxy_tracing_spans_recorded_total") == 0
    # B3 sampled: recorded, and B3 goes upstream with the client span's ids
    st, _, body = request(port, "GET", "/a", {"b3": f"{TRACE}-{PARENT}-1"})
    tp, hdrs = upstream_traceparent(body)
    assert wait_until(lambda: len(collector.spans()) >= 2, 5)
    client = by_kind(collector.spans(), "CLIENT")[0]
    server = by_kind(collector.spans(), "SERVER")[0]
    assert tp == f"00-{TRACE}-{client['id']}-01"
    assert hdrs["b3"] == f"{TRACE}-{client['id']}-1-{server['id']}"
    assert server["parentId"] == PARENT


def test_new_traces_follow_sample_percent(procs, tmp_path, up, collector):
    _, port, admin = start_proxy(procs, tmp_path, config(up, collector.port, "  sample_percent: 0"))
    for _ in range(20):
        st, _, body = request(port, "GET", "/a")
        assert st == 200 and upstream_traceparent(body)[0].endswith("-00")
    time.sleep(0.4)
    assert collector.spans() == [] and metric(admin, "keel_proxy_tracing_spans_recorded_total") == 0
    # a client's sampled trace is recorded whatever sample_percent says
    request(port, "GET", "/a", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert wait_until(lambda: len(collector.spans()) == 2, 5)

    c2 = Collector()
    try:
        _, port2, _ = start_proxy(procs, tmp_path, config(up, c2.port, "  sample_percent: 100"),
                                  name="p100.yaml")
        traces = set()
        for _ in range(20):
            st, _, body = request(port2, "GET", "/a")
            tp, _ = upstream_traceparent(body)
            assert tp.endswith("-01")  # a new trace, sampled: the upstream is told to record
            traces.add(tp.split("-")[1])
        assert wait_until(lambda: len(c2.spans()) == 40, 5)
        servers = by_kind(c2.spans(), "SERVER")
        assert {s["traceId"] for s in servers} == traces
        assert all("parentId" not in s for s in servers)  # each the root of its trace
    finally:
        c2.close()


def test_a_dead_collector_is_counted_and_requests_go_on(procs, tmp_path, up):
    dead = free_port()
    _, port, admin = start_proxy(procs, tmp_path, config(up, dead, "  batch_max: 4\n  timeout_ms: 500"))
    t0 = time.monotonic()
    for i in range(20):
        st, _, _ = request(port, "GET", f"/a/{i}", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert st == 200
    assert time.monotonic() - t0 < 5
    assert wait_until(lambda: metric(admin, "keel_proxy_tracing_export_failures_total") >= 1, 5)
    assert metric(admin, "keel_proxy_tracing_spans_recorded_total") == 40
    assert metric(admin, "keel_proxy_tracing_spans_exported_total") == 0
    # every span is accounted for: dropped with a failed batch, dropped for a full queue, or
    # still queued (sent on a later tick, failing too)
    assert wait_until(lambda: metric(admin, "keel_proxy_tracing_spans_dropped_total",
                                     'reason="export_failed"') == 40, 5)


def test_a_collector_that_errs_is_a_failure(procs, tmp_path, up):
    c = Collector(status=500)
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up, c.port))
        request(port, "GET", "/a", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert wait_until(lambda: metric(admin, "keel_proxy_tracing_export_failures_total") == 1, 5)
        assert metric(admin, "keel_proxy_tracing_spans_dropped_total", 'reason="export_failed"') == 2
        assert len(c.spans()) == 2  # it got them, and said no: not retried
        time.sleep(0.4)
        assert len(c.spans()) == 2
    finally:
        c.close()


def test_a_full_queue_drops_and_counts(procs, tmp_path, up, collector):
    collector.hold.clear()  # the first POST stays in flight
    # the queue is per worker: one worker, so the counts are exact
    _, port, admin = start_proxy(procs, tmp_path, "workers: 1\n" + config(
        up, collector.port, "  batch_max: 4\n  queue_max: 6\n  timeout_ms: 30000", flush_ms=60000))
    for i in range(10):  # 20 spans: 4 in the POST held, 6 queued, 10 dropped
        st, _, _ = request(port, "GET", f"/a/{i}", {"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert st == 200
    assert metric(admin, "keel_proxy_tracing_spans_recorded_total") == 20
    assert metric(admin, "keel_proxy_tracing_spans_dropped_total", 'reason="queue_full"') == 10
    collector.hold.set()  # then the queued whole batch goes at once; the last 2 wait for flush_ms
    assert wait_until(lambda: metric(admin, "keel_proxy_tracing_spans_exported_total") == 8, 5)
    assert len(collector.spans()) == 8
    assert metric(admin, "keel_proxy_tracing_export_failures_total") == 0


def test_check_names_the_line_of_a_bad_tracing_section(procs, tmp_path, up):
    from conftest import binary
    import subprocess
    path = tmp_path / "bad.yaml"
    path.write_text(config(up, 9411, "  sample_percent: 150\n  batch_max: 0").replace(
        '"http://127.0.0.1:9411/api/v2/spans"', "https://127.0.0.1:9411/"))
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert re.search(r"bad\.yaml:8: .*https collectors are not supported", out), out
    assert re.search(r"bad\.yaml:11: .*sample_percent: '150'", out), out
    assert re.search(r"bad\.yaml:12: .*batch_max: 0 is out of range", out), out


def test_a_reload_turns_tracing_on_and_off(procs, tmp_path, up, collector):
    traced = config(up, collector.port)
    plain = re.sub(r"tracing:\n(  .*\n)+", "", traced)
    assert "tracing" not in plain
    p, port, admin = start_proxy(procs, tmp_path, plain)
    sampled = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
    reloads = lambda: metric(admin, "keel_proxy_reloads_total", 'result="ok"')
    assert request(port, "GET", "/a", sampled)[0] == 200
    path = tmp_path / "proxy.yaml"  # as start_proxy wrote it (with its workers line)
    path.write_text(path.read_text().replace(plain, traced))
    p.signal(1)
    assert wait_until(lambda: reloads() == 1, 5)
    assert request(port, "GET", "/a", sampled)[0] == 200
    assert wait_until(lambda: len(collector.spans()) == 2, 5)  # the reload's request only
    path.write_text(path.read_text().replace(traced, plain))
    p.signal(1)
    assert wait_until(lambda: reloads() == 2, 5)
    assert request(port, "GET", "/a", sampled)[0] == 200
    time.sleep(0.4)
    assert len(collector.spans()) == 2
    assert metric(admin, "keel_proxy_tracing_spans_recorded_total") == 2
