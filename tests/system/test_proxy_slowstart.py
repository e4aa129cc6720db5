"""test_proxy_slowstart.py - slow start: a host back from failing its health checks ramps up.

Two fake upstreams behind round robin with `slow_start`. b fails its health checks, is taken out,
then passes again; from the first request after that its share rises over window_ms from about
min_weight_pct of its fair half (round robin gives it f / (1 + f)) to the half. The bounds are
wide (the machine may be loaded): early b must get well under its half, late about its half.
"""

import http.client
import json
import threading
import time

from conftest import wait_until
from proxyfake import FakeUpstream, start_proxy
from test_proxy import clusters, config

WINDOW_MS = 3000
CLIENTS = 4  # keep-alive connections sending requests back to back
RUN_S = WINDOW_MS / 1000 + 1.5  # the window and a second and a half of full share


def send_for(port, until, seen, lock):
    """Requests on one keep-alive connection until `until`: (monotonic time, upstream) each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while time.monotonic() < until:
            conn.request("GET", "/ss/x")
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, (r.status, body[:200])
            with lock:
                seen.append((time.monotonic(), json.loads(body)["upstream"]))
    finally:
        conn.close()


def b_share(seen, t0, lo_s, hi_s):
    """b's share of the answers between lo_s and hi_s after t0, and how many there were."""
    part = [who for t, who in seen if t0 + lo_s <= t < t0 + hi_s]
    return (part.count("b") / len(part) if part else 0.0), len(part)


def test_a_host_back_from_failing_health_checks_ramps_up_to_its_share(procs, tmp_path):
    a, b = FakeUpstream("a"), FakeUpstream("b")
    try:
        clusters_yaml = f"""
  - name: ss
    hosts: [{a.addr}, {b.addr}]
    health_check: {{path: /health, interval_ms: 100, timeout_ms: 80, healthy_threshold: 1, unhealthy_threshold: 1}}
    slow_start: {{window_ms: {WINDOW_MS}, min_weight_pct: 10}}
"""
        routes_yaml = """
  - name: ss
    match: {prefix: /ss/}
    cluster: ss
"""
        _, port, admin = start_proxy(procs, tmp_path, config(a, clusters_yaml, routes_yaml))

        def b_host():
            return {h["address"]: h for h in clusters(admin)["ss"]["hosts"]}[b.addr]

        b.healthy = False
        assert wait_until(lambda: not b_host()["healthy"], timeout_s=5)
        b.healthy = True
        assert wait_until(lambda: b_host()["healthy"], timeout_s=5)
        # back and waiting for its first pick: its ramp starts at the minimum
        assert b_host()["slow_start_pct"] == 10

        seen, lock = [], threading.Lock()
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=send_for, args=(port, t0 + RUN_S, seen, lock))
            for _ in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        time.sleep(WINDOW_MS / 2000)
        mid = b_host()["slow_start_pct"]
        for t in threads:
            t.join(timeout=RUN_S + 20)
        assert not any(t.is_alive() for t in threads)

        early, n_early = b_share(seen, t0, 0, 0.8)  # f from 0.1 to ~0.27: b's share <= ~0.21
        late, n_late = b_share(seen, t0, WINDOW_MS / 1000 + 0.3, RUN_S)  # full: 0.5
        buckets = [b_share(seen, t0, s / 2, s / 2 + 0.5) for s in range(int(RUN_S * 2))]
        print("b's share per 0.5 s:", " ".join(f"{sh:.2f}/{n}" for sh, n in buckets))
        assert n_early >= 40 and n_late >= 40, (n_early, n_late)
        assert early < 0.32, early
        assert 0.4 < late < 0.6, late
        assert late - early > 0.2, (early, late)
        assert 20 <= mid <= 80, mid  # the admin view follows the ramp (50 at half the window)
        assert b_host()["slow_start_pct"] == 100
    finally:
        a.close()
        b.close()
