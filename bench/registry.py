#!/usr/bin/env python3
"""bench/registry.py - the service registry's figures on a running cluster (bench/registry.sh).

  registry.py regs   RESP_PORT HTTP_PORT N       registrations/s: KEEL.REG REGISTER over RESP
                                                 (pipelined, 8 connections) and Consul-shaped
                                                 PUT /v1/agent/service/register over HTTP
                                                 (16 keep-alive connections)
  registry.py fanout WATCH_HTTP WRITE_HTTP W     W blocked GET /v1/health/service/fan?index=N on
                                                 WATCH_HTTP; one registration through
                                                 WRITE_HTTP; the time until the first and the
                                                 last watcher has its answer
  registry.py feeds FEED_RESP WRITE_RESP W        W KEEL.REG FEED connections (one service) on
                                                 FEED_RESP; one registration through
                                                 WRITE_RESP; the time until the first and
                                                 the last feed has its regchange push
  registry.py removal WRITE_HTTP READ_HTTP RUNS  a 2 s TTL instance stops heartbeating: the
                                                 time until ?passing on READ_HTTP drops it
  registry.py etcd_regs   ETCD_PORT N          the anchor: lease grant + put per registration
                                                 on etcd's JSON gateway, 16 connections
  registry.py etcd_fanout WATCH WRITE W          W watch streams (/v3/watch) on a prefix; one
                                                 put; the time until each has the event
Every wait is bounded (DEADLINE_S); a run that cannot finish says so and exits 1.
"""

import base64
import http.client
import json
import re
import selectors
import socket
import sys
import threading
import time

import redis

DEADLINE_S = 120


def put(conn, path, body):
    conn.request("PUT", path, body=json.dumps(body))
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("X-Keel-Index")


def regs(resp_port, http_port, n):
    conns = 8
    per = n // conns

    def resp_worker(k):
        c = redis.Redis(port=resp_port, socket_timeout=30)
        p = c.pipeline(transaction=False)
        for i in range(per):
            p.execute_command("KEEL.REG", "REGISTER", f"svc{i % 100}", f"r{k}-{i}",
                              "10.0.0.1", "8080", "TTL", "600000", "TAGS", "1", "v1")
        out = p.execute()
        assert all(isinstance(x, int) for x in out), out[:3]

    t0 = time.monotonic()
    ts = [threading.Thread(target=resp_worker, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S)
    took = time.monotonic() - t0
    print(f"KEEL.REG REGISTER over RESP, 8 connections, pipelined: {per * conns} in "
          f"{took:.2f} s = {per * conns / took:,.0f} registrations/s")

    hn = max(n // 10, 16)
    threads = 16
    hper = hn // threads
    errors = []

    def http_worker(k):
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        for i in range(hper):
            st, _ = put(c, "/v1/agent/service/register",
                        {"Name": f"h{i % 100}", "ID": f"h{k}-{i}", "Address": "10.0.0.2",
                         "Port": 80, "Tags": ["v1"], "Check": {"TTL": "10m", "Status": "passing"}})
            if st != 200:
                errors.append(st)
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=http_worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S)
    took = time.monotonic() - t0
    assert not errors, errors[:5]
    print(f"PUT /v1/agent/service/register, 16 keep-alive connections (a Python client): "
          f"{hper * threads} in {took:.2f} s = {hper * threads / took:,.0f} registrations/s")


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def arrivals(sel, socks, w, want, t0, deadline):
    """Waits (until deadline) for each of the w registered sockets to receive `want` (or to
    close); closes them all. (done, first, last): how many did, and the first's and the
    last's time after t0."""
    done, first, last = 0, None, None
    while done < w and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            data = key.fileobj.recv(65536)
            if want in data or not data:
                sel.unregister(key.fileobj)
                done += 1
                now = time.monotonic() - t0
                first = now if first is None else first
                last = now
    for s in socks:
        s.close()
    return done, first, last


def fanout(watch_port, write_port, w):
    run = f"{time.time_ns()}"  # each run changes the service anew
    c = http.client.HTTPConnection("127.0.0.1", write_port, timeout=30)
    put(c, "/v1/agent/service/register", {"Name": "fan", "ID": f"fan-0-{run}", "Port": 1})
    c.request("GET", "/v1/health/service/fan")  # linearizable: sees the registration
    r = c.getresponse()
    r.read()
    c.close()
    c = http.client.HTTPConnection("127.0.0.1", watch_port, timeout=30)
    c.request("GET", "/v1/health/service/fan")
    r = c.getresponse()
    r.read()
    ix = r.getheader("X-Keel-Index")
    c.close()
    sel = selectors.DefaultSelector()
    req = (f"GET /v1/health/service/fan?index={ix}&wait=5m HTTP/1.1\r\n"
           f"Host: x\r\n\r\n").encode()
    socks = []
    for _ in range(w):
        s = socket.create_connection(("127.0.0.1", watch_port))
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    deadline = time.monotonic() + DEADLINE_S
    while metric(watch_port, "keel_registry_blocked_queries") < w:
        if time.monotonic() > deadline:
            print(f"only {metric(watch_port, 'keel_registry_blocked_queries'):.0f} of {w} blocked")
            sys.exit(1)
        time.sleep(0.1)
    wakeups = metric(watch_port, "keel_registry_wakeups_total")
    c = http.client.HTTPConnection("127.0.0.1", write_port, timeout=30)
    t0 = time.monotonic()
    put(c, "/v1/agent/service/register", {"Name": "fan", "ID": f"fan-1-{run}", "Port": 1})
    acked = time.monotonic() - t0
    done, first, last = arrivals(sel, socks, w, f"fan-1-{run}".encode(), t0, deadline)
    if done < w:
        print(f"only {done} of {w} watchers answered")
        sys.exit(1)
    woke = metric(watch_port, "keel_registry_wakeups_total") - wakeups
    print(f"{w} blocked watchers: write acknowledged after {acked * 1000:.1f} ms; first answer "
          f"{first * 1000:.1f} ms, last {last * 1000:.1f} ms after the write was sent "
          f"({woke:.0f} wake-up of the wait list)")


def feeds(feed_port, write_port, w):
    run = f"{time.time_ns()}"
    sel = selectors.DefaultSelector()
    req = f"*3\r\n$8\r\nKEEL.REG\r\n$4\r\nFEED\r\n${len(run) + 4}\r\nfeed{run}\r\n".encode()
    socks = []
    for _ in range(w):
        s = socket.create_connection(("127.0.0.1", feed_port))
        s.sendall(req)
        socks.append(s)
    deadline = time.monotonic() + DEADLINE_S
    for s in socks:  # the reply and the (empty) state: "regstate" ends with *0
        s.settimeout(30)
        got = b""
        while not got.endswith(b"*0\r\n"):
            chunk = s.recv(65536)
            if not chunk or time.monotonic() > deadline:
                print("a feed did not start")
                sys.exit(1)
            got += chunk
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    c = redis.Redis(port=write_port, socket_timeout=30)
    t0 = time.monotonic()
    c.execute_command("KEEL.REG", "REGISTER", f"feed{run}", f"f-{run}", "10.0.0.1", 1)
    acked = time.monotonic() - t0
    done, first, last = arrivals(sel, socks, w, b"regchange", t0, deadline)
    if done < w:
        print(f"only {done} of {w} feeds pushed")
        sys.exit(1)
    print(f"{w} KEEL.REG FEED connections: write acknowledged after {acked * 1000:.1f} ms; first "
          f"push {first * 1000:.1f} ms, last {last * 1000:.1f} ms after the write was sent")


def removal(write_port, read_port, runs):
    """An instance with a 2 s TTL heartbeats, then stops (as a SIGKILLed one would): the time
    from its last heartbeat until ?passing on another node no longer lists it."""
    c = http.client.HTTPConnection("127.0.0.1", write_port, timeout=30)
    r = http.client.HTTPConnection("127.0.0.1", read_port, timeout=30)
    took = []
    for k in range(runs):
        iid = f"dead-{time.time_ns()}"
        st, _ = put(c, "/v1/agent/service/register",
                    {"Name": "dead", "ID": iid, "Port": 1,
                     "Check": {"TTL": "2s", "Status": "passing"}})
        assert st == 200, st
        for _ in range(3):
            time.sleep(0.3)
            st, _ = put(c, f"/v1/agent/check/pass/service:{iid}", {})
            assert st == 200, st
        last = time.monotonic()
        while time.monotonic() - last < 10:
            r.request("GET", "/v1/health/service/dead?passing")
            body = r.getresponse().read()
            if iid.encode() not in body:
                took.append(time.monotonic() - last)
                break
            time.sleep(0.02)
        else:
            print(f"{iid} still listed 10 s after its last heartbeat")
            sys.exit(1)
    took.sort()
    print(f"a stopped instance (TTL 2 s) left ?passing on a follower after "
          f"{', '.join(f'{t:.2f}' for t in took)} s ({runs} runs; bound 2x TTL = 4 s)")


# ---- the anchor: the same workload on etcd's leases (its JSON gateway) ----------------------

def b64(x):
    return base64.b64encode(x.encode()).decode()


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body))
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data[:200])
    return json.loads(data)


def etcd_regs(port, n):
    """A registration as etcd users write one: grant a lease, put the instance under it."""
    threads = 16
    per = n // threads
    errors = []

    def worker(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i in range(per):
                lease = post(c, "/v3/lease/grant", {"TTL": 600})["ID"]
                inst = {"Name": f"h{i % 100}", "ID": f"h{k}-{i}", "Address": "10.0.0.2",
                        "Port": 80, "Tags": ["v1"]}
                post(c, "/v3/kv/put", {"key": b64(f"/services/h{i % 100}/h{k}-{i}"),
                                       "value": b64(json.dumps(inst)), "lease": lease})
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE_S)
    took = time.monotonic() - t0
    assert not errors, errors[:3]
    print(f"etcd lease grant + put through its JSON gateway, 16 keep-alive connections (the "
          f"same Python client): {per * threads} in {took:.2f} s = "
          f"{per * threads / took:,.0f} registrations/s")


def etcd_fanout(watch_port, write_port, w):
    run = f"{time.time_ns()}"
    prefix = f"/services/fan{run}/"
    body = json.dumps({"create_request": {"key": b64(prefix),
                                          "range_end": b64(prefix[:-1] + "0")}})
    req = (f"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(w):
        s = socket.create_connection(("127.0.0.1", watch_port))
        s.sendall(req)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    deadline = time.monotonic() + DEADLINE_S
    created = 0
    while created < w:  # every watch confirmed before the change
        if time.monotonic() > deadline:
            print(f"only {created} of {w} etcd watches created")
            sys.exit(1)
        for key, _ in sel.select(timeout=1.0):
            if b"created" in key.fileobj.recv(65536):
                created += 1
    c = http.client.HTTPConnection("127.0.0.1", write_port, timeout=30)
    want = b64(prefix + "fan-1").encode()
    t0 = time.monotonic()
    post(c, "/v3/kv/put", {"key": b64(prefix + "fan-1"), "value": b64("{}")})
    acked = time.monotonic() - t0
    done, first, last = arrivals(sel, socks, w, want, t0, deadline)
    if done < w:
        print(f"only {done} of {w} etcd watchers saw the change")
        sys.exit(1)
    print(f"etcd: {w} watchers (HTTP gateway streams): put acknowledged after "
          f"{acked * 1000:.1f} ms; first event {first * 1000:.1f} ms, last {last * 1000:.1f} ms "
          f"after the put was sent")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "regs":
        regs(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "fanout":
        fanout(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "feeds":
        feeds(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "removal":
        removal(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 4 and sys.argv[1] == "etcd_regs":
        etcd_regs(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "etcd_fanout":
        etcd_fanout(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        print(__doc__)
        sys.exit(2)
