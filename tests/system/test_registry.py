"""test_registry.py - keel server's service registry: the Consul-shaped HTTP API on the admin
listener, blocking queries, KEEL.REG over RESP, TTL expiry, and a leader kill."""

import http.client
import json
import re
import threading
import time

import redis

from keelcluster import http_get, make_cluster  # noqa: F401 (fixture)


def req(port, method, path, body=None, timeout_s=15.0):
    """One request; returns (status, body bytes, headers dict with lower-case names)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        c.request(method, path, body=data)
        r = c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


def register(port, name, iid, ttl="10s", tags=(), meta=None, status="passing", **extra):
    body = {
        "Name": name,
        "ID": iid,
        "Address": "10.1.0.7",
        "Port": 8080,
        "Tags": list(tags),
        "Meta": meta or {},
        "Check": {"TTL": ttl, "Status": status},
    }
    body.update(extra)
    code, out, hdr = req(port, "PUT", "/v1/agent/service/register", body)
    assert code == 200, out
    return int(hdr["x-keel-index"])


def health(port, name, query=""):
    code, out, hdr = req(port, "GET", f"/v1/health/service/{name}{query}")
    assert code == 200, out
    return json.loads(out), int(hdr["x-keel-index"])


def ids(entries):
    return sorted(e["Service"]["ID"] for e in entries)


def metric(port, name):
    _, body, _ = http_get(port, "/metrics")
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_the_http_api_speaks_consuls_shapes(make_cluster):
    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    ix1 = register(p, "orders", "orders-1", tags=["v1", "blue"], meta={"zone": "a"},
                   Weights={"Passing": 10, "Warning": 1}, Version="1.4.2")
    ix2 = register(p, "orders", "orders-2", tags=["v2"], status="critical")
    assert ix2 > ix1
    entries, ix = health(p, "orders")
    assert ix == ix2 and ids(entries) == ["orders-1", "orders-2"]
    e = next(e for e in entries if e["Service"]["ID"] == "orders-1")
    svc = e["Service"]
    assert svc["Service"] == "orders" and svc["Address"] == "10.1.0.7" and svc["Port"] == 8080
    assert svc["Tags"] == ["v1", "blue"] and svc["Meta"] == {"zone": "a"}
    assert svc["Weights"] == {"Passing": 10, "Warning": 1} and svc["Version"] == "1.4.2"
    assert svc["CreateIndex"] == ix1 and svc["ModifyIndex"] == ix1
    check = e["Checks"][0]
    assert check["CheckID"] == "service:orders-1" and check["Status"] == "passing"
    assert check["ServiceName"] == "orders" and check["Type"] == "ttl"
    assert e["Node"]["Node"] == cl.nodes[0].name
    # ?passing leaves the critical one out; ?tag= keeps the tagged one
    assert ids(health(p, "orders", "?passing")[0]) == ["orders-1"]
    assert ids(health(p, "orders", "?tag=v2")[0]) == ["orders-2"]
    assert ids(health(p, "orders", "?passing&tag=v2")[0]) == []
    assert health(p, "nothing")[0] == []
    # the catalog: every service with its tags, once each, sorted
    code, out, hdr = req(p, "GET", "/v1/catalog/services")
    assert code == 200 and json.loads(out) == {"orders": ["blue", "v1", "v2"]}
    assert int(hdr["x-keel-index"]) == ix2
    # checks: pass / warn / fail with a note, by Consul's check id or the instance id
    code, out, _ = req(p, "PUT", "/v1/agent/check/pass/service:orders-2?note=all%20good")
    assert code == 200, out
    e = next(e for e in health(p, "orders", "?passing")[0] if e["Service"]["ID"] == "orders-2")
    assert e["Checks"][0]["Output"] == "all good" and e["Checks"][0]["Flips"] == 1
    code, _, _ = req(p, "PUT", "/v1/agent/check/warn/orders-2?note=slow")
    assert code == 200
    assert ids(health(p, "orders", "?passing")[0]) == ["orders-1"]
    code, out, _ = req(p, "PUT", "/v1/agent/check/fail/service:nope")
    assert code == 404, out
    # deregister: 200, then 404 for an id that is gone
    code, _, _ = req(p, "PUT", "/v1/agent/service/deregister/orders-2")
    assert code == 200
    code, out, _ = req(p, "PUT", "/v1/agent/service/deregister/orders-2")
    assert code == 404 and b"Unknown service ID" in out
    assert ids(health(p, "orders")[0]) == ["orders-1"]


def test_bad_registrations_get_a_clear_error(make_cluster):
    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    for body, want in [
        (b"{not json", "not JSON"),
        ({"ID": "x"}, "Name is required"),
        ({"Name": "a", "Port": 70000}, "Port"),
        ({"Name": "a", "Check": {"TTL": "soon"}}, "TTL"),
        ({"Name": "a", "Check": {"TTL": "1s", "Status": "sick"}}, "status"),
        ({"Name": "a", "Tags": [1]}, "Tags"),
    ]:
        code, out, hdr = req(p, "PUT", "/v1/agent/service/register", body)
        assert code == 400, (body, out)
        assert hdr["content-type"].startswith("application/json")
        assert want in json.loads(out)["error"]["message"], out
    # a limit is 429 and names the limit
    code, out, _ = req(p, "PUT", "/v1/agent/service/register",
                        {"Name": "a", "Tags": [f"t{i}" for i in range(65)]})
    assert code == 429 and b"tags_max" in out, out
    # nothing was registered by any of them
    code, out, _ = req(p, "GET", "/v1/catalog/services")
    assert json.loads(out) == {}


def test_a_blocking_query_returns_early_on_a_change(make_cluster):
    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    register(p, "pay", "pay-1")
    _, ix = health(p, "pay")

    def change():
        time.sleep(0.5)
        register(p, "pay", "pay-2")

    t = threading.Thread(target=change)
    t.start()
    t0 = time.monotonic()
    entries, ix2 = health(p, "pay", f"?index={ix}&wait=10s")
    took = time.monotonic() - t0
    t.join()
    assert ix2 > ix and ids(entries) == ["pay-1", "pay-2"]
    assert 0.3 < took < 3.0, took
    # an index that already moved answers at once
    t0 = time.monotonic()
    _, ix3 = health(p, "pay", f"?index={ix}&wait=10s")
    assert ix3 == ix2 and time.monotonic() - t0 < 1.0


def test_a_blocking_query_returns_after_the_wait_with_the_same_index(make_cluster):
    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    register(p, "pay", "pay-1")
    _, ix = health(p, "pay")
    # a change to another service does not wake it
    t = threading.Timer(0.3, lambda: register(p, "other", "o-1"))
    t.start()
    t0 = time.monotonic()
    entries, ix2 = health(p, "pay", f"?index={ix}&wait=1500ms")
    took = time.monotonic() - t0
    t.join()
    assert ix2 == ix and ids(entries) == ["pay-1"]
    assert 1.4 < took < 3.0, took
    # the catalog blocks on the registry's index the same way
    code, _, hdr = req(p, "GET", "/v1/catalog/services")
    cix = int(hdr["x-keel-index"])
    t0 = time.monotonic()
    code, _, hdr = req(p, "GET", f"/v1/catalog/services?index={cix}&wait=1s")
    assert code == 200 and int(hdr["x-keel-index"]) == cix
    assert 0.9 < time.monotonic() - t0 < 3.0


def test_many_watchers_of_a_service_share_one_wake_up(make_cluster):
    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    register(p, "cart", "cart-1")
    _, ix = health(p, "cart")
    n = 60
    results = [None] * n

    def watch(i):
        results[i] = health(p, "cart", f"?index={ix}&wait=20s" + ("&passing" if i % 2 else ""))

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while metric(p, "keel_registry_blocked_queries") < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(p, "keel_registry_blocked_queries") == n
    wakeups = metric(p, "keel_registry_wakeups_total")
    t0 = time.monotonic()
    register(p, "cart", "cart-2")
    for t in threads:
        t.join(timeout=20)
    took = time.monotonic() - t0
    assert all(r is not None and r[1] > ix and ids(r[0]) == ["cart-1", "cart-2"] for r in results)
    assert metric(p, "keel_registry_wakeups_total") - wakeups == 1  # one list, woken once
    assert metric(p, "keel_registry_woken_total") >= n
    assert metric(p, "keel_registry_blocked_queries") == 0
    print(f"\n{n} blocked watchers answered {took * 1000:.0f} ms after the change was sent")


def test_a_killed_instance_leaves_passing_within_twice_its_ttl(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    follower = cl.followers(leader)[0]
    register(leader.http_port, "web", "web-1", ttl="2s")
    register(leader.http_port, "web", "web-2", ttl="2s")
    # both heartbeat for a while; then web-2 "is killed": no more heartbeats
    last = None
    for _ in range(6):
        for iid in ("web-1", "web-2"):
            code, _, _ = req(follower.http_port, "PUT", f"/v1/agent/check/pass/service:{iid}")
            assert code == 200
        last = time.monotonic()
        time.sleep(0.5)
    gone_after = None
    while time.monotonic() - last < 6:
        code, web1, _ = req(leader.http_port, "PUT", "/v1/agent/check/pass/web-1")
        assert code == 200
        entries, _ = health(follower.http_port, "web", "?passing")
        if ids(entries) == ["web-1"]:
            gone_after = time.monotonic() - last
            break
        time.sleep(0.1)
    assert gone_after is not None, "web-2 never left ?passing"
    assert gone_after <= 4.0, gone_after
    print(f"\nkilled instance (TTL 2 s) left ?passing {gone_after:.2f} s after its last heartbeat")
    # and the sweep removed it from the state: the service index moved on every node
    time.sleep(0.5)
    for nd in cl.nodes:
        entries, _ = health(nd.http_port, "web", "?stale")
        assert ids(entries) == ["web-1"], nd.name


def test_keel_reg_over_resp_on_any_node_with_stale_reads(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0].client()
    ix = f.execute_command("KEEL.REG", "REGISTER", "db", "db-1", "10.0.0.9", "5432", "TTL",
                           "30000", "TAGS", "1", "primary", "META", "1", "role", "rw",
                           "FAILURES_BEFORE_CRITICAL", "2")
    assert ix > 0
    assert f.execute_command("KEEL.REG", "FAIL", "db-1", "timeout") == b"passing"  # damped
    assert f.execute_command("KEEL.REG", "FAIL", "db-1", "timeout") == b"critical"
    got = f.execute_command("KEEL.REG", "GET", "db-1")
    inst = dict(zip(got[::2], got[1::2]))
    assert inst[b"status"] == b"critical" and inst[b"flips"] == 1 and inst[b"output"] == b"timeout"
    assert inst[b"tags"] == [b"primary"] and inst[b"meta"] == [b"role", b"rw"]
    sindex, insts = f.execute_command("KEEL.REG", "INSTANCES", "db")
    assert len(insts) == 1 and sindex > ix
    assert f.execute_command("KEEL.REG", "INSTANCES", "db", "PASSING")[1] == []
    assert f.execute_command("KEEL.REG", "SERVICES")[1] == [[b"db", 1, [b"primary"]]]
    # stale reads answer from the node's own state
    other = cl.followers(leader)[1].client()
    assert other.execute_command("KEEL.READS", "stale") == b"OK"
    deadline = time.monotonic() + 5
    while other.execute_command("KEEL.REG", "GET", "db-1") is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert other.execute_command("KEEL.REG", "HEARTBEAT", "db-1") == b"OK"
    try:
        f.execute_command("KEEL.REG", "HEARTBEAT", "nope")
        raise AssertionError("a heartbeat for an unknown id was accepted")
    except redis.ResponseError as e:
        assert str(e).startswith("NOTFOUND registry: no such instance")
    try:
        f.execute_command("KEEL.REG", "EXPLODE")
        raise AssertionError("an unknown subcommand was accepted")
    except redis.ResponseError as e:
        assert "unknown KEEL.REG subcommand" in str(e)
    assert f.execute_command("KEEL.REG", "DEREGISTER", "db-1") == 1
    assert f.execute_command("KEEL.REG", "GET", "db-1") is None


def test_registrations_survive_a_leader_kill_and_expired_ones_stay_gone(make_cluster):
    cl = make_cluster(3, "--snapshot-entries", "20", "--snapshot-log-bytes-min", "0")
    leader = cl.wait_leader()
    lp = leader.http_port
    for i in range(10):
        register(lp, "orders", f"keep-{i}", ttl="30s", tags=[f"t{i}"])
    for i in range(3):
        register(lp, "orders", f"short-{i}", ttl="1s")
    # the short ones lapse and are swept before the kill
    deadline = time.monotonic() + 10
    while len(health(lp, "orders", "?stale")[0]) != 10:
        assert time.monotonic() < deadline, "short-lived instances were never swept"
        time.sleep(0.1)
    for i in range(0, 10, 3):
        req(lp, "PUT", f"/v1/agent/check/warn/keep-{i}?note=n{i}")
    before, ix = health(lp, "orders")
    # one more lapses across the failover: registered now, never heartbeated
    register(lp, "orders", "dies-in-failover", ttl="1500ms")
    leader.kill()
    new = cl.wait_leader(among=cl.followers(leader))
    assert new is not leader
    time.sleep(2.0)  # past dies-in-failover's TTL, by the new leader's clock
    for nd in cl.followers(leader):
        after, ix2 = health(nd.http_port, "orders")
        assert ix2 >= ix
        assert ids(after) == ids(before), nd.name  # none lost, none resurrected
        st = {e["Service"]["ID"]: e["Checks"][0] for e in after}
        assert st["keep-3"]["Status"] == "warning" and st["keep-3"]["Output"] == "n3"
    # the old leader comes back (from its snapshot and log) and agrees
    leader.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            after, _ = health(leader.http_port, "orders")
            if ids(after) == ids(before):
                break
        except (AssertionError, OSError):
            pass
        assert time.monotonic() < deadline, "the restarted node never caught up"
        time.sleep(0.1)
    # and a registration through it lands everywhere
    register(leader.http_port, "orders", "late", ttl="30s")
    for nd in cl.nodes:
        assert "late" in ids(health(nd.http_port, "orders")[0])


def test_blocked_queries_are_answered_when_the_server_stops(make_cluster):
    cl = make_cluster(1)
    nd = cl.nodes[0]
    register(nd.http_port, "pay", "pay-1")
    _, ix = health(nd.http_port, "pay")
    results = []

    def watch():
        results.append(req(nd.http_port, "GET", f"/v1/health/service/pay?index={ix}&wait=60s"))

    threads = [threading.Thread(target=watch) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while metric(nd.http_port, "keel_registry_blocked_queries") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    nd.expect_exit = True
    assert nd.stop() == 0
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - t0 < 5.0  # not the 60 s wait, nor the drain timeout
    assert len(results) == 5 and all(code == 200 for code, _, _ in results)
    assert all(int(h["x-keel-index"]) == ix for _, _, h in results)


def test_a_watcher_that_hangs_up_leaves_its_wait_list(make_cluster):
    import socket

    cl = make_cluster(1)
    p = cl.nodes[0].http_port
    register(p, "pay", "pay-1")
    _, ix = health(p, "pay")
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", p))
        s.sendall(f"GET /v1/health/service/pay?index={ix}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n"
                  .encode())
        socks.append(s)
    deadline = time.monotonic() + 10
    while metric(p, "keel_registry_blocked_queries") < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for s in socks[:2]:
        s.close()
    deadline = time.monotonic() + 5
    while metric(p, "keel_registry_blocked_queries") != 1:
        assert time.monotonic() < deadline, "closed watchers stayed blocked"
        time.sleep(0.05)
    # the one left is still woken by a change
    register(p, "pay", "pay-2")
    socks[2].settimeout(5)
    got = b""
    while b"pay-2" not in got:
        chunk = socks[2].recv(65536)
        assert chunk, got
        got += chunk
    socks[2].close()


def test_keel_reg_wait_blocks_over_resp_until_the_service_changes(make_cluster):
    cl = make_cluster(3)
    leader = cl.wait_leader()
    f = cl.followers(leader)[0].client()
    w = leader.client()
    ix = f.execute_command("KEEL.REG", "REGISTER", "q", "q-1", "h", "1")
    sindex = f.execute_command("KEEL.REG", "INDEX", "q")
    # an index that already moved answers at once, as INSTANCES would
    t0 = time.monotonic()
    got = f.execute_command("KEEL.REG", "WAIT", "q", sindex - 1, 10000)
    assert got[0] == sindex and len(got[1]) == 1 and time.monotonic() - t0 < 1.0
    # the wait ends with the same index
    t0 = time.monotonic()
    got = f.execute_command("KEEL.REG", "WAIT", "q", sindex, 800)
    took = time.monotonic() - t0
    assert got[0] == sindex and 0.7 < took < 3.0, took
    # a change through another node wakes it early; its filters apply
    t = threading.Timer(0.4, lambda: w.execute_command("KEEL.REG", "REGISTER", "q", "q-2", "h",
                                                       "2", "STATUS", "critical"))
    t.start()
    t0 = time.monotonic()
    got = f.execute_command("KEEL.REG", "WAIT", "q", sindex, 10000, "PASSING")
    took = time.monotonic() - t0
    t.join()
    assert got[0] > sindex and 0.2 < took < 3.0, took
    assert [dict(zip(i[::2], i[1::2]))[b"id"] for i in got[1]] == [b"q-1"]
    # a pipeline waits behind it (the reply slot is a barrier), in order
    p = f.pipeline(transaction=False)
    p.execute_command("KEEL.REG", "WAIT", "q", got[0], 300)
    p.execute_command("KEEL.REG", "INDEX", "q")
    r = p.execute()
    assert r[0][0] == got[0] and r[1] == got[0]
    try:
        f.execute_command("KEEL.REG", "WAIT", "q", "x", 10)
        raise AssertionError("a malformed WAIT was accepted")
    except redis.ResponseError as e:
        assert "KEEL.REG WAIT service index timeout_ms" in str(e)
    assert ix > 0
