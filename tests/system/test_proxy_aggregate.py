"""test_proxy_aggregate.py - keel proxy's aggregate routes (docs/proxy.md, "Aggregation"), with
fake upstreams (proxyfake.py): parts called at once, JSON merged under their names, partial
answers when a part fails or times out, required parts, bad parameters, cancellation."""

import json
import time

import pytest

from conftest import free_port
from proxyfake import FakeUpstream, closed_by_peer, connect, request, start_proxy

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def ups():
    u = {n: FakeUpstream(n) for n in ("order", "payment", "inventory")}
    yield u
    for x in u.values():
        x.close()


def config(ups, dead_port):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: order
    hosts: [127.0.0.1:{dead_port}, {ups['order'].addr}]   # one dead instance: refused, tried on the other
    balance: round_robin
  - name: payment
    hosts: [{ups['payment'].addr}]
  - name: inventory
    hosts: [{ups['inventory'].addr}]
routes:
  - name: full
    match: {{template: "/orders/{{id}}/full", methods: [GET]}}
    timeout_ms: 3000
    aggregate:
      forward_headers: [authorization]
      parts:
        - {{name: order, cluster: order, path: "/orders/{{id}}", required: true, timeout_ms: 2000}}
        - {{name: payment, cluster: payment, path: "/charges/{{id}}", timeout_ms: 2000}}
        - {{name: reservation, cluster: inventory, path: "/reservations/{{id}}", timeout_ms: 2000}}
  - name: slow
    match: {{template: "/slow/{{id}}"}}
    aggregate:
      parts:
        - {{name: order, cluster: order, path: "/orders/{{id}}", required: true}}
        - {{name: payment, cluster: payment, path: "/slow/3000", timeout_ms: 300}}
  - name: required
    match: {{template: "/req/{{what}}"}}
    aggregate:
      parts:
        - {{name: order, cluster: order, path: "/{{what}}", required: true, timeout_ms: 400}}
        - {{name: payment, cluster: payment, path: "/charges/1"}}
  - name: byheader
    match: {{exact: /mine}}
    aggregate:
      parts:
        - {{name: order, cluster: order, path: "/customers/{{header:x-customer-id}}", required: true}}
"""


@pytest.fixture
def proxy(procs, tmp_path, ups):
    _, port, admin = start_proxy(procs, tmp_path, config(ups, free_port()))
    return port


def get(port, target, headers=None):
    st, h, body = request(port, "GET", target, headers)
    return st, h, json.loads(body) if body else None


def test_merges_the_parts_under_their_names(proxy, ups):
    for _ in range(4):  # round robin: every other request meets the dead order instance first
        st, h, j = get(proxy, "/orders/42/full",
                       {"Authorization": "Bearer t0k", "X-Private": "no", "traceparent": TRACEPARENT})
        assert st == 200, j
        assert h["content-type"] == ["application/json"]
        assert list(j) == ["order", "payment", "reservation", "partial", "errors"]
        assert j["partial"] is False and j["errors"] == []
        assert j["order"]["target"] == "/orders/42" and j["order"]["method"] == "GET"
        assert j["payment"]["target"] == "/charges/42"
        assert j["reservation"]["target"] == "/reservations/42"
        for part in ("order", "payment", "reservation"):
            hdrs = {k.lower(): v for k, v in j[part]["headers"]}  # the fake's [name, value] pairs
            assert hdrs["authorization"] == "Bearer t0k"  # listed in forward_headers
            assert "x-private" not in hdrs  # not listed
            assert hdrs["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")  # same trace
            assert "x-keel-timeout-ms" in hdrs and "127.0.0.1" in hdrs["x-forwarded-for"]
    assert ups["order"].count == 4 and ups["payment"].count == 4 and ups["inventory"].count == 4


def test_a_part_that_fails_is_null_and_the_answer_partial(proxy, ups):
    ups["payment"].close()  # gone (its accept thread may take one more connection and drop it)
    st, _, j = get(proxy, "/orders/7/full")
    assert st == 200  # the required part answered
    assert j["partial"] is True and j["payment"] is None
    assert j["order"]["target"] == "/orders/7" and j["reservation"]["target"] == "/reservations/7"
    assert len(j["errors"]) == 1 and j["errors"][0]["part"] == "payment"
    assert j["errors"][0]["error"] in ("connect-failed", "upstream-reset")
    ups["inventory"].fail_status = 404
    st, _, j = get(proxy, "/orders/7/full")
    assert st == 200 and j["reservation"] is None
    assert {"part": "reservation", "error": "status", "status": 404} in j["errors"]


def test_a_part_that_times_out_is_null_and_does_not_hold_the_answer(proxy, ups):
    t0 = time.monotonic()
    st, _, j = get(proxy, "/slow/9")
    elapsed = time.monotonic() - t0
    assert st == 200 and j["partial"] is True
    assert j["payment"] is None and j["errors"] == [{"part": "payment", "error": "timeout", "status": 0}]
    assert j["order"]["target"] == "/orders/9"
    assert elapsed < 2.0  # the part's 300 ms, not the upstream's 3 s (generous for a loaded machine)


def test_a_required_part_that_fails_fails_the_request(proxy, ups):
    st, _, j = get(proxy, "/req/hang")  # the required part times out: 504
    assert st == 504 and j["order"] is None and j["payment"]["target"] == "/charges/1"
    st, _, j = get(proxy, "/req/garbage")  # not HTTP: 502
    assert st == 502 and j["errors"][0]["error"] == "upstream-bad-response"
    st, _, j = get(proxy, "/req/status")  # 404 from the fake: stays 404 (the order does not exist)
    assert st == 404 and j["errors"] == [{"part": "order", "error": "status", "status": 404}]
    ups["order"].fail_status = 503
    st, _, j = get(proxy, "/orders/1/full")
    assert st == 502 and j["errors"][0] == {"part": "order", "error": "status", "status": 503}


def test_parameters_from_headers_and_bad_values(proxy, ups):
    st, _, j = get(proxy, "/mine", {"X-Customer-Id": "c-17"})
    assert st == 200 and j["order"]["target"] == "/customers/c-17"
    for bad in ("../admin", "a?b=1", "x/y", "a&b"):
        st, h, j = get(proxy, "/mine", {"X-Customer-Id": bad})
        assert st == 400 and h["x-keel-reason"] == ["bad-parameter"]
    st, h, _ = get(proxy, "/mine")
    assert st == 400
    assert ups["order"].paths == ["/customers/c-17"]  # nothing bad went upstream
    st, h, _ = request(proxy, "POST", "/mine", {"X-Customer-Id": "c"}, b"{}")
    assert st == 400 and h["x-keel-reason"] == ["aggregate-takes-no-body"]


def test_a_client_that_leaves_cancels_its_parts(proxy, ups):
    s = connect(proxy)
    s.sendall(b"GET /req/hang HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    s.close()  # the parts are cancelled; the proxy goes on serving
    time.sleep(0.5)
    st, _, j = get(proxy, "/orders/5/full")
    assert st == 200 and j["partial"] is False
    # keep-alive: two aggregate answers on one connection
    s = connect(proxy)
    s.sendall(b"GET /orders/1/full HTTP/1.1\r\nHost: t\r\n\r\nGET /orders/2/full HTTP/1.1\r\nHost: t\r\n\r\n")
    from proxyfake import read_response
    st1, _, b1, rest = read_response(s)
    st2, _, b2, _ = read_response(s, rest)
    assert (st1, st2) == (200, 200)
    assert json.loads(b1)["order"]["target"] == "/orders/1" and json.loads(b2)["order"]["target"] == "/orders/2"
    s.close()


def test_check_names_the_line_of_a_bad_part(tmp_path):
    from conftest import binary
    import subprocess
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("listeners: [{address: 127.0.0.1:0}]\n"
                   "clusters: [{name: a, hosts: [127.0.0.1:1]}]\n"
                   "routes:\n"
                   "  - match: {template: \"/o/{id}\"}\n"
                   "    aggregate:\n"
                   "      parts:\n"
                   "        - {name: x, cluster: a, path: \"/x/{nope}\"}\n")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{cfg}:7:" in r.stdout + r.stderr and "{nope}" in r.stdout + r.stderr
