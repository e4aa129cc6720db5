"""test_proxy_registry.py - keel proxy's `service:` clusters, fed by keel server's registry.

A one-node keel cluster is the registry; keel-example-notes instances register themselves in it
as service "notes" (TTL 2 s). The proxy routes to "notes" by name: a SIGKILLed instance leaves
the cluster once the registry drops it (no reload), an instance started later joins it, every
instance deregistering (SIGTERM) empties it (503 with a reason), and a registry outage keeps
the last list serving. Each instance holds a note naming itself, so a response says who served.
"""

import http.client
import json
import os
import signal
import threading
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


def start_notes(procs, reg, name, zone=None):
    port = free_port()
    env = dict(os.environ, KEEL_ZONE=zone) if zone else None
    p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                     "--registry", reg, "--ttl", "2000", "--id", name], env=env)
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


def start_notes_proxy(procs, tmp_path, reg, balance, retry_extra="", zone=None):
    """The proxy in front of service "notes" from the registry, retrying connect failures and
    resets on another instance: (proc, port, admin port)."""
    return start_proxy(procs, tmp_path, f"""
listeners: [{{name: main, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
registry: {reg}
{f"zone: {zone}" if zone else ""}
clusters:
  - name: notes
    service: notes
    balance: {balance}
    outlier_detection: {{consecutive_local: 3, base_ejection_ms: 30000}}
routes:
  - name: notes
    match: {{prefix: /notes}}
    cluster: notes
    retry: {{attempts_max: 3, retry_on: [connect-failure, reset]{retry_extra}}}
""")


def test_traffic_follows_the_registry_without_a_reload(make_cluster, procs, tmp_path):
    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    a, a_port = start_notes(procs, reg, "notes-a")
    b, b_port = start_notes(procs, reg, "notes-b")
    p, port, admin = start_notes_proxy(procs, tmp_path, reg, "round_robin")
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


def test_instances_come_and_go_under_load_without_a_failed_request(make_cluster, procs, tmp_path):
    """Issue 14's discovery test under load: eight client threads on keep-alive connections
    send GETs through the proxy without pause while one instance is SIGTERMed (deregisters
    first, then drains), one is SIGKILLed (the proxy retries its connect failures and resets
    on the others until the registry drops it) and a new one starts. Every request must
    succeed, and the new instance serves only after it registered (ready)."""

    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    insts = {n: start_notes(procs, reg, n) for n in ("notes-a", "notes-b", "notes-c")}
    # every client's request may fail at once at the kill: the default retry budget (3 retries
    # in flight) would refuse some of their retries, by design; this test is about discovery
    p, port, admin = start_notes_proxy(procs, tmp_path, reg, "p2c", ", budget_min: 16")
    assert wait_until(lambda: set(served(port, 20)) == {"notes-a", "notes-b", "notes-c"}, 5)

    stop = threading.Event()
    results = []  # (monotonic time, status, who), appended by the threads
    lock = threading.Lock()

    def client():
        c = None
        mine = []
        while not stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/notes/who")
                r = c.getresponse()
                body = r.read()
                name = (json.loads(body)["text"] if r.status == 200 else
                        (r.getheader("x-keel-reason"), body[:80]))
                mine.append((time.monotonic(), r.status, name))
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as e:
                mine.append((time.monotonic(), 0, repr(e)))
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        a = insts["notes-a"][0]
        a.signal(signal.SIGTERM)  # deregisters, then drains its open requests
        term_at = time.monotonic()
        time.sleep(1.5)
        b = insts["notes-b"][0]
        b.may_exit = True
        b.kill()  # no deregistration: the registry drops it after its 2 s TTL
        kill_at = time.monotonic()
        time.sleep(1.0)
        started_d = time.monotonic()
        insts["notes-d"] = start_notes(procs, reg, "notes-d")  # registers once listening
        noted_d = time.monotonic()  # its note "who" is written only now
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert a.wait(10) == 0
    total = len(results)
    # notes-d registers as soon as it listens and the test writes its note after: in between
    # it answers 404 for the note (served, by an instance without the note yet)
    early_d = [r for r in results if r[1] == 404 and started_d <= r[0] <= noted_d + 0.5]
    failed = [r for r in results if r[1] != 200 and r not in early_d]
    by = {}
    for _, st, name in results:
        key = name if st == 200 else st
        by[key] = by.get(key, 0) + 1
    rate = total / (time.monotonic() - t0)
    print(f"{total} requests ({rate:.0f}/s) through the proxy, served by {by} "
          f"({len(early_d)} of them 404 by notes-d before its note was written); "
          f"SIGTERM at {term_at - t0:.1f} s, SIGKILL at {kill_at - t0:.1f} s")
    failed = [(round(t - t0, 3), st, why) for t, st, why in failed]
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        budget = [m for m in r.read().decode().splitlines() if "budget_exhausted" in m]
    assert not failed, f"{len(failed)} of {total} failed, first {failed[:5]}; {budget}"
    assert total > 500, total
    assert by.get("notes-d", 0) > 0, by  # the new instance took traffic
    first_d = min([t for t, _, name in results if name == "notes-d"] + [r[0] for r in early_d])
    assert first_d >= started_d  # not before it was started
    last_a = max(t for t, _, name in results if name == "notes-a")
    assert last_a < term_at + 2.0, last_a - term_at  # drained and gone within its drain time
    assert set(served(port, 20)) == {"notes-c", "notes-d"}


def test_a_zone_prefers_its_own_instances_and_fails_over_to_another(make_cluster, procs,
                                                                    tmp_path):
    """zone: the instances registered with the proxy's zone (KEEL_ZONE, registry meta zone) take
    every request while one of them is usable; the other zone's only when none is; traffic
    comes home when one returns."""
    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    a, a_port = start_notes(procs, reg, "notes-a", zone="east")
    b, b_port = start_notes(procs, reg, "notes-b", zone="east")
    c, c_port = start_notes(procs, reg, "notes-c", zone="west")
    p, port, admin = start_notes_proxy(procs, tmp_path, reg, "round_robin", zone="east")
    assert wait_until(lambda: len(clusters(admin)["notes"]["hosts"]) == 3, 5)
    assert set(served(port, 40)) == {"notes-a", "notes-b"}
    # both east instances killed: west takes over once outlier detection has ejected them
    # (three connect failures each: a request may fail while its retries still meet the dead
    # pair, since a retry avoids only the host it just tried), then for good once the
    # registry drops them
    for inst in (a, b):
        inst.may_exit = True
        inst.kill()
    got = served(port, 40)
    assert got.count(None) <= 3 and set(got[-20:]) == {"notes-c"}, got
    assert wait_until(lambda: len(clusters(admin)["notes"]["hosts"]) == 1, 8)
    assert set(served(port, 20)) == {"notes-c"}
    # an east instance comes back: traffic comes home
    d, d_port = start_notes(procs, reg, "notes-d", zone="east")
    assert wait_until(lambda: set(served(port, 10)) == {"notes-d"}, 8)


def test_the_last_instance_of_the_preferred_zone_is_ejected_while_another_zone_serves(
        make_cluster, procs, tmp_path):
    """review: the proxy's "never eject the last available host" guard counted only the hosts
    of the level taking traffic (avail_n), so the one instance of the proxy's zone was never
    ejected while the other zone had healthy instances: without a retry, every request went to
    the dead local instance and failed."""
    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"

    def start_long(name, zone):
        port = free_port()
        env = dict(os.environ, KEEL_ZONE=zone)
        p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                         "--registry", reg, "--ttl", "60000", "--id", name], env=env)
        p.read_line(r"listening on port")
        assert call(port, "PUT", "/notes/who", name.encode())[0] == 204
        return p, port

    a, _ = start_long("notes-a", "east")
    c, _ = start_long("notes-c", "west")
    p, port, admin = start_proxy(procs, tmp_path, f"""
listeners: [{{name: main, address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
registry: {reg}
zone: east
clusters:
  - name: notes
    service: notes
    balance: round_robin
    outlier_detection: {{consecutive_local: 3, base_ejection_ms: 30000}}
routes:
  - name: notes
    match: {{prefix: /notes}}
    cluster: notes
""")
    assert wait_until(lambda: len(clusters(admin)["notes"]["hosts"]) == 2, 5)
    assert set(served(port, 10)) == {"notes-a"}
    a.may_exit = True
    a.kill()  # SIGKILL: still registered (TTL 60 s)
    got = served(port, 20)
    assert got.count(None) <= 3 and set(got[-10:]) == {"notes-c"}, got
