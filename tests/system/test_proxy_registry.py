"""test_proxy_registry.py - keel proxy's `service:` clusters, fed by keel server's registry.

A one-node keel cluster is the registry; keel-example-notes instances register themselves in it
as service "notes" (TTL 2 s). The proxy routes to "notes" by name: a SIGKILLed instance leaves
the cluster once the registry drops it (no reload), an instance started later joins it, every
instance deregistering (SIGTERM) empties it (503 with a reason), and a registry outage keeps
the last list serving. Each instance holds a note naming itself, so a response says who served.
"""

import http.client
import json
import signal
import time
import urllib.request

from conftest import binary, free_port, wait_until
from keelcluster import make_cluster  # noqa: F401 (fixture)
from proxyfake import request, start_proxy


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body)
    r = c.getresponse()
    out = (r.status, dict(r.getheaders()), r.read())
    c.close()
    return out


def start_notes(procs, reg, name):
    port = free_port()
    p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                     "--registry", reg, "--ttl", "2000", "--id", name])
    p.read_line(r"listening on port")
    assert call(port, "PUT", "/notes/who", name.encode())[0] == 204
    return p, port


def who(port):
    """Which instance served one request through the proxy (None for a failure)."""
    st, h, body = request(port, "GET", "/notes/who")
    if st != 200:
        return None, st, h
    return json.loads(body)["text"], st, h


def served(port, n=30):
    return [who(port)[0] for _ in range(n)]


def clusters(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5) as r:
        return {c["name"]: c for c in json.loads(r.read())["clusters"]}


def test_traffic_follows_the_registry_without_a_reload(make_cluster, procs, tmp_path):
    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    a, a_port = start_notes(procs, reg, "notes-a")
    b, b_port = start_notes(procs, reg, "notes-b")
    p, port, admin = start_proxy(procs, tmp_path, f"""
listeners: [{{name: main, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
registry: {reg}
clusters:
  - name: notes
    service: notes
    balance: round_robin
    outlier_detection: {{consecutive_local: 3, base_ejection_ms: 30000}}
routes:
  - name: notes
    match: {{prefix: /notes}}
    cluster: notes
    retry: {{attempts_max: 3, retry_on: [connect-failure, reset]}}
""")
    assert wait_until(lambda: set(served(port, 10)) == {"notes-a", "notes-b"}, 5)
    assert clusters(admin)["notes"]["service"] == "notes"

    # SIGKILL: no deregistration; the registry drops it within 2x its TTL and the proxy follows
    b.may_exit = True
    t0 = time.monotonic()
    b.kill()
    failed = []
    while time.monotonic() - t0 < 8:
        got = served(port, 10)
        failed += [g for g in got if g is None]
        if len(clusters(admin)["notes"]["hosts"]) == 1:
            break
        time.sleep(0.05)
    gone_s = time.monotonic() - t0
    hosts = clusters(admin)["notes"]["hosts"]
    assert [h["address"] for h in hosts] == [f"127.0.0.1:{a_port}"], hosts
    assert not failed, f"{len(failed)} requests failed while the killed instance was listed"
    assert set(served(port)) == {"notes-a"}
    # the host that stayed kept its pool: its keep-alive connections were not closed
    assert hosts[0]["idle_connections"] >= 1, hosts
    print(f"killed instance left the proxy's cluster after {gone_s:.2f} s (TTL 2 s)")

    # a new instance joins without a reload; the one that stayed kept its state (its host
    # entry, with the connections and ejection count it had)
    c, c_port = start_notes(procs, reg, "notes-c")
    t0 = time.monotonic()
    assert wait_until(lambda: "notes-c" in served(port, 10), 5)
    print(f"new instance took traffic {time.monotonic() - t0:.2f} s after it registered")
    assert set(served(port)) == {"notes-a", "notes-c"}
    assert "reload" not in p.output()

    # every instance deregisters (SIGTERM): the registry answers an empty list and the
    # cluster empties: 503 with a reason, not a connect error to a stale address
    for inst in (a, c):
        inst.signal(signal.SIGTERM)
    for inst in (a, c):
        assert inst.wait(10) == 0
    assert wait_until(lambda: who(port)[1] == 503, 5)
    _, st, h = who(port)
    assert st == 503 and h["x-keel-reason"] == ["no-registered-instance"]

    # the registry goes away: the last list keeps serving
    d, d_port = start_notes(procs, reg, "notes-d")
    assert wait_until(lambda: who(port)[0] == "notes-d", 5)
    node.kill()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        assert set(served(port, 5)) == {"notes-d"}
        time.sleep(0.1)
    assert wait_until(lambda: "registry unreachable" in p.output(), 3)
    d.may_exit = True
