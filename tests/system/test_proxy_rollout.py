"""test_proxy_rollout.py - progressive rollout: a canary's weight steps up, or rolls back by itself.

Two fake upstreams, v1 (stable) and v2 (the canary), behind one weighted route with a rollout.
Shares are measured per step exactly: the sender reads the weight in force from /rollouts before
and after each batch of requests and keeps a batch only when both reads agree. A v2 that starts
answering 500 is rolled back to 0% (the error rule), a slow one too (the p99 rule); both are
counted in /metrics and logged. A reload that leaves the rollout as it was keeps its state; one
that changes it starts it again. `--check` names the line of each bad rollout setting.
"""

import http.client
import json
import math
import subprocess
import threading
import time
import urllib.request

from conftest import binary, wait_until
from proxyfake import FakeUpstream, start_proxy, with_workers
from test_proxy import metric, metrics

BATCH = 20  # requests between two reads of the weight


class Canary(FakeUpstream):
    """A fake upstream that can be told to wait delay_s before each answer."""

    def __init__(self, name):
        super().__init__(name)
        self.delay_s = 0.0

    def _answer(self, conn, method, target, path, headers, raw, body):
        if self.delay_s and path != "/health":
            time.sleep(self.delay_s)
        return super()._answer(conn, method, target, path, headers, raw, body)


def config(v1, v2, rollout, extra_routes=""):
    return f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: v1
    hosts: [{v1.addr}]
  - name: v2
    hosts: [{v2.addr}]
routes:
  - name: orders
    match: {{prefix: /orders}}
    weighted_clusters:
      - {{cluster: v1, weight: 1}}
      - {{cluster: v2, weight: 1}}
    rollout: {rollout}
{extra_routes}
"""


def rollouts(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/rollouts", timeout=5) as r:
        return {o["route"]: o for o in json.loads(r.read())["rollouts"]}


def send(conn, n):
    """n requests on one keep-alive connection: the upstream names that answered."""
    who = []
    for _ in range(n):
        conn.request("GET", "/orders/1")
        r = conn.getresponse()
        body = r.read()
        who.append(json.loads(body)["upstream"] if r.status == 200 else r.status)
    return who


def log_events(proc):
    """The rollout lines of the proxy's log, as dicts."""
    out = []
    for line in proc.output().splitlines():
        if '"msg":"rollout"' in line:
            out.append(json.loads(line))
    return out


def test_the_canary_share_grows_step_by_step_until_done(procs, tmp_path):
    v1, v2 = FakeUpstream("v1"), FakeUpstream("v2")
    try:
        rollout = ("{canary: v2, steps: [10, 50, 90], step_ms: 1500, window_ms: 1000, "
                   "min_requests: 10, max_error_percent: 5, max_p99_ms: 1000}")
        p, port, admin = start_proxy(procs, tmp_path, config(v1, v2, rollout))
        assert rollouts(admin)["orders"]["weight_pct"] == 10
        seen = {}  # weight in force -> upstream names
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            before = rollouts(admin)["orders"]
            who = send(conn, BATCH)
            after = rollouts(admin)["orders"]
            if before["weight_pct"] == after["weight_pct"] and before["state"] == after["state"]:
                seen.setdefault(after["weight_pct"], []).extend(who)
            if after["state"] == "done" and len(seen.get(100, [])) >= 200:
                break
        conn.close()
        assert sorted(seen) == [10, 50, 90, 100], sorted(seen)
        for w in (10, 50, 90):
            who = seen[w]
            share = who.count("v2") / len(who)
            assert who.count("v1") + who.count("v2") == len(who), who  # every answer a 200
            # a few thousand requests a step on an idle machine; within 4.5 standard deviations
            # of the binomial share (about 0.04 at 50% over 3000)
            assert len(who) >= 300, (w, len(who))
            want = w / 100
            assert abs(share - want) <= 4.5 * math.sqrt(want * (1 - want) / len(who)) + 0.005, (
                w, share, len(who))
        assert seen[100] == ["v2"] * len(seen[100])  # done: everything goes to the canary
        ro = rollouts(admin)["orders"]
        assert ro["state"] == "done" and ro["weight_pct"] == 100 and ro["steps_taken"] == 2
        m = metrics(admin)
        assert metric(m, "keel_proxy_rollout_weight_percent", 'route="orders"') == 100
        assert metric(m, "keel_proxy_rollout_steps_total", 'route="orders"') == 2
        assert metric(m, "keel_proxy_rollout_state", 'route="orders"') == 1
        assert metric(m, "keel_proxy_rollout_rollbacks_total", 'route="orders",reason="errors"') == 0
        events = [(e["event"], e["weight_pct"]) for e in log_events(p)]
        assert events == [("start", 10), ("step", 50), ("step", 90), ("done", 100)], events
        for e in log_events(p)[1:]:  # each step's window met min_requests
            assert e["requests"] >= 10 and e["errors"] == 0 and e["route"] == "orders"
    finally:
        v1.close()
        v2.close()


def test_a_failing_canary_is_rolled_back_to_zero_and_stays_there_until_changed(procs, tmp_path):
    v1, v2 = FakeUpstream("v1"), FakeUpstream("v2")
    try:
        rollout = ("{canary: v2, steps: [30, 60, 100], step_ms: 60000, window_ms: 1000, "
                   "min_requests: 10, max_error_percent: 10}")
        p, port, admin = start_proxy(procs, tmp_path, config(v1, v2, rollout))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        who = send(conn, 100)
        assert 10 <= who.count("v2") <= 55, who.count("v2")  # 30% of 100
        v2.fail_status = 500
        assert wait_until(lambda: send(conn, BATCH) and rollouts(admin)["orders"]["state"]
                          == "rolled_back", timeout_s=10)
        ro = rollouts(admin)["orders"]
        assert ro["weight_pct"] == 0 and ro["reason"] == "errors", ro
        time.sleep(0.2)  # requests in flight at the rollback have finished
        count = v2.count
        who = send(conn, 200)
        assert who == ["v1"] * 200  # nothing reaches the canary any more
        assert v2.count == count
        m = metrics(admin)
        assert metric(m, "keel_proxy_rollout_rollbacks_total", 'route="orders",reason="errors"') == 1
        assert metric(m, "keel_proxy_rollout_weight_percent", 'route="orders"') == 0
        assert metric(m, "keel_proxy_rollout_state", 'route="orders"') == 2
        back = [e for e in log_events(p) if e["event"] == "rollback"]
        assert len(back) == 1 and back[0]["level"] == "warn" and back[0]["reason"] == "errors"
        assert back[0]["from_pct"] == 30 and back[0]["weight_pct"] == 0
        assert back[0]["errors"] * 100 > 10 * back[0]["requests"] >= 100

        # a reload that leaves the rollout as it was keeps it rolled back ...
        v2.fail_status = None
        path = tmp_path / "proxy.yaml"
        extra = "  - name: ping\n    match: {exact: /ping}\n    direct_response: {status: 200}\n"
        path.write_text(with_workers(config(v1, v2, rollout, extra)))
        p.signal(1)
        p.may_exit = False
        assert wait_until(lambda: metric(metrics(admin), "keel_proxy_reloads_total",
                                         'result="ok"') == 1, timeout_s=5)
        assert rollouts(admin)["orders"]["state"] == "rolled_back"
        assert send(conn, 50) == ["v1"] * 50
        # ... and one that changes it starts it again at its first step
        path.write_text(with_workers(config(v1, v2, rollout.replace("[30, 60, 100]", "[40, 100]"),
                                            extra)))
        p.signal(1)
        p.may_exit = False
        assert wait_until(lambda: metric(metrics(admin), "keel_proxy_reloads_total",
                                         'result="ok"') == 2, timeout_s=5)
        ro = rollouts(admin)["orders"]
        assert ro["state"] == "running" and ro["weight_pct"] == 40 and ro["step"] == 1, ro
        who = send(conn, 100)
        assert 20 <= who.count("v2") <= 65, who.count("v2")
        conn.close()
        starts = [e for e in log_events(p) if e["event"] == "start"]
        assert [e["weight_pct"] for e in starts] == [30, 40]
        p.signal(15)  # three generations' rollouts freed: clean under ASan too
        assert p.wait(5) == 0, p.output()[-2000:]
        assert "Sanitizer" not in p.output() and "runtime error" not in p.output()
    finally:
        v1.close()
        v2.close()


def test_a_slow_canary_is_rolled_back_by_the_p99_rule(procs, tmp_path):
    v1, v2 = FakeUpstream("v1"), Canary("v2")
    try:
        rollout = ("{canary: v2, steps: [50, 100], step_ms: 60000, window_ms: 5000, "
                   "min_requests: 10, max_error_percent: 5, max_p99_ms: 150}")
        p, port, admin = start_proxy(procs, tmp_path, config(v1, v2, rollout))
        v2.delay_s = 0.25
        stop = time.monotonic() + 15

        def sender():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while time.monotonic() < stop and rollouts(admin)["orders"]["state"] == "running":
                send(conn, 5)
            conn.close()

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ro = rollouts(admin)["orders"]
        assert ro["state"] == "rolled_back" and ro["reason"] == "latency", ro
        m = metrics(admin)
        assert metric(m, "keel_proxy_rollout_rollbacks_total", 'route="orders",reason="latency"') == 1
        assert metric(m, "keel_proxy_rollout_rollbacks_total", 'route="orders",reason="errors"') == 0
        back = [e for e in log_events(p) if e["event"] == "rollback"]
        assert len(back) == 1 and back[0]["reason"] == "latency" and back[0]["errors"] == 0
        assert back[0]["slow"] >= 1 and back[0]["requests"] >= 10
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert send(conn, 20) == ["v1"] * 20
        conn.close()
    finally:
        v1.close()
        v2.close()


def test_check_refuses_bad_rollouts_naming_their_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listeners: [{address: 127.0.0.1:0}]\n"                                  # 1
        "clusters: [{name: v1, hosts: [127.0.0.1:1]}, {name: v2, hosts: [127.0.0.1:2]}]\n"
        "routes:\n"                                                              # 3
        "  - match: {prefix: /a}\n"                                              # 4
        "    weighted_clusters: [{cluster: v1}, {cluster: v2}]\n"                # 5
        "    rollout:\n"                                                         # 6
        "      canary: v9\n"                                                     # 7
        "      steps: [50, 25]\n"                                                # 8
        "      max_error_percent: 150\n"                                         # 9
        "  - match: {prefix: /b}\n"                                              # 10
        "    cluster: v1\n"                                                      # 11
        "    rollout: {canary: v1, steps: [10]}\n"                               # 12
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(bad)], capture_output=True,
                       timeout=10)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"{bad}:7: rollout: canary 'v9' is not one of the route's weighted_clusters" in err, err
    assert f"{bad}:8: steps: must increase (25 after 50)" in err, err
    assert f"{bad}:9: max_error_percent: 150 is out of range 0..100" in err, err
    assert f"{bad}:12: rollout: needs weighted_clusters" in err, err
    good = tmp_path / "good.yaml"
    good.write_text(
        "listeners: [{address: 127.0.0.1:0}]\n"
        "clusters: [{name: v1, hosts: [127.0.0.1:1]}, {name: v2, hosts: [127.0.0.1:2]}]\n"
        "routes:\n"
        "  - match: {prefix: /a}\n"
        "    weighted_clusters: [{cluster: v1}, {cluster: v2}]\n"
        "    rollout: {canary: v2, steps: [1, 5, 25, 50, 100], step_ms: 30000, window_ms: 10000,\n"
        "              min_requests: 50, max_error_percent: 5, max_p99_ms: 500}\n"
    )
    r = subprocess.run([binary("keel"), "proxy", "--check", str(good)], capture_output=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
