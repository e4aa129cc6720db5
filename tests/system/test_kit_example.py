"""test_kit_example.py - the service kit through its example service (apps/examples/notes):
routes with parameters, 404 and 405 with Allow, health, per-route metrics, and the SIGTERM
drain that lets a request in flight finish before the process exits."""

import http.client
import json
import re
import signal
import threading
import time

from conftest import binary, free_port, wait_port  # noqa: F401
from keelcluster import make_cluster  # noqa: F401 (fixture)


def start(procs):
    port = free_port()
    p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}"])
    p.read_line(r"listening on port \d+")
    wait_port(port)
    return p, port


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body)
    r = c.getresponse()
    out = (r.status, dict(r.getheaders()), r.read())
    c.close()
    return out


def test_routes_health_and_metrics(procs):
    _, port = start(procs)
    assert call(port, "PUT", "/notes/a1", b"buy milk")[0] == 204
    status, headers, body = call(port, "GET", "/notes/a1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body == b'{"id":"a1","text":"buy milk"}'
    assert call(port, "GET", "/notes")[2] == b'{"count":1}'
    assert call(port, "GET", "/notes/nope")[0] == 404
    assert call(port, "DELETE", "/notes/a1")[0] == 204
    assert call(port, "DELETE", "/notes/a1")[0] == 404
    status, headers, _ = call(port, "POST", "/notes/a1")
    assert status == 405 and headers["Allow"] == "PUT, GET, DELETE"
    assert call(port, "GET", "/nope/at/all")[0] == 404
    assert call(port, "GET", "/notes/a1/")[0] == 404  # no trailing-slash leniency
    assert call(port, "GET", "/slow/abc")[0] == 400
    assert call(port, "GET", "/health/live")[0] == 200
    assert call(port, "GET", "/health/ready")[0] == 200
    metrics = call(port, "GET", "/metrics")[2].decode()

    def count(method, route, code):
        m = re.search(
            r'keel_service_requests_total\{service="notes",method="%s",route="%s",code="%s"\} (\d+)'
            % (method, re.escape(route), code), metrics)
        return int(m.group(1)) if m else None

    assert count("PUT", "/notes/:id", "2xx") == 1
    assert count("GET", "/notes/:id", "2xx") == 1 and count("GET", "/notes/:id", "4xx") == 1
    assert count("DELETE", "/notes/:id", "2xx") == 1 and count("DELETE", "/notes/:id", "4xx") == 1
    assert count("GET", "/slow/:ms", "4xx") == 1
    assert 'keel_service_request_seconds_count{service="notes",method="GET",route="/notes/:id"} 2' in metrics
    assert "keel_service_requests_in_flight" in metrics


def test_sigterm_lets_the_request_in_flight_finish_then_exits(procs):
    p, port = start(procs)
    got = {}

    def slow():
        got["slow"] = call(port, "GET", "/slow/1500")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)  # the slow request is in flight
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    time.sleep(0.2)
    try:  # draining: no new connection is taken
        call(port, "GET", "/health/live")
        refused = False
    except OSError:
        refused = True
    t.join(10)
    assert got["slow"][0] == 200 and got["slow"][2] == b"slow done\n"
    assert p.wait(10) == 0
    assert refused, "a connection made during the drain was served"
    assert time.monotonic() - t0 >= 1.0  # it waited for the request, not killed it


def instances(node, passing=False):
    """The ids of service notes's instances in the registry (KEEL.REG INSTANCES)."""
    args = ["KEEL.REG", "INSTANCES", "notes"] + (["PASSING"] if passing else [])
    reply = node.client().execute_command(*args)
    return sorted(inst[1].decode() for inst in reply[1])


def test_the_service_registers_heartbeats_and_deregisters_before_it_stops(make_cluster, procs):
    from conftest import wait_until

    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    ports = [free_port(), free_port()]
    a = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{ports[0]}",
                     "--registry", reg, "--ttl", "2000", "--id", "notes-a"])
    b = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{ports[1]}",
                     "--registry", reg, "--ttl", "2000", "--id", "notes-b"])
    for p in (a, b):
        p.read_line(r"listening on port")
    wait_until(lambda: instances(node, passing=True) == ["notes-a", "notes-b"], 5)
    time.sleep(3)  # past the TTL: the heartbeats keep both
    assert instances(node, passing=True) == ["notes-a", "notes-b"]
    # SIGTERM: deregistered while it still answers (the drain waits for a request in flight)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("r", call(ports[1], "GET", "/slow/1500")))
    t.start()
    time.sleep(0.3)
    b.signal(signal.SIGTERM)
    wait_until(lambda: instances(node) == ["notes-a"], 1.0)
    assert b.alive(), "deregistration comes before the process ends"
    t.join(10)
    assert done["r"][0] == 200 and b.wait(10) == 0
    # SIGKILL: no deregistration; gone from PASSING answers within 2x the TTL
    a.may_exit = True
    a.kill()
    t0 = time.monotonic()
    wait_until(lambda: instances(node, passing=True) == [], 4.5)
    assert time.monotonic() - t0 <= 4.5


def test_discovery_follows_changes_and_keeps_the_last_list_through_a_registry_outage(
        make_cluster, procs):
    node = make_cluster(1).nodes[0]
    c = node.client()
    c.execute_command("KEEL.REG", "REGISTER", "shop", "s1", "10.0.0.1", "8001")
    d = procs.start([binary("keel-discover"), "--registry", f"127.0.0.1:{node.client_port}", "shop"])
    assert d.read_line(r"^index \d+: (.*)$").group(1) == "s1@10.0.0.1:8001"
    c.execute_command("KEEL.REG", "REGISTER", "shop", "s2", "10.0.0.2", "8002")
    assert d.read_line(r"^index \d+: (.*)$").group(1) == "s1@10.0.0.1:8001 s2@10.0.0.2:8002"
    c.execute_command("KEEL.REG", "DEREGISTER", "s1")
    assert d.read_line(r"^index \d+: (.*)$").group(1) == "s2@10.0.0.2:8002"
    # the registry goes away and comes back: the list is kept meanwhile, so the next line
    # is the next real change (an emptied list would have printed "index N: -" first)
    node.kill()
    time.sleep(1.5)
    node.start()
    c = node.client()
    c.execute_command("KEEL.REG", "REGISTER", "shop", "s3", "10.0.0.3", "8003")
    line = d.read_line(r"^index \d+: (.*)$", timeout_s=15).group(1)
    assert line == "s2@10.0.0.2:8002 s3@10.0.0.3:8003", line
    c.execute_command("KEEL.REG", "DEREGISTER", "s2")
    c.execute_command("KEEL.REG", "DEREGISTER", "s3")
    assert d.read_line(r"^index \d+: (.*)$").group(1) in ("s3@10.0.0.3:8003", "-")


def test_calls_by_name_survive_a_killed_instance(make_cluster, procs):
    """keel-call calls service notes by name (registry discovery, p2c, a breaker per
    instance, retries inside the deadline) while one of its two instances is SIGKILLed
    (no deregistration: it stays in the registry until its TTL lapses): every call is
    answered, the survivor takes the traffic."""
    from conftest import wait_until

    node = make_cluster(1).nodes[0]
    reg = f"127.0.0.1:{node.client_port}"
    ports = [free_port(), free_port()]
    inst = []
    for i, port in enumerate(ports):
        p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                         "--registry", reg, "--ttl", "3000", "--id", f"notes-{i}"])
        p.read_line(r"listening on port")
        inst.append(p)
    wait_until(lambda: instances(node, passing=True) == ["notes-0", "notes-1"], 5)
    caller = procs.start([binary("keel-call"), "--registry", reg, "notes", "GET", "/notes",
                          "--count", "400", "--rate", "200", "--timeout", "2000"])
    caller.may_exit = True
    time.sleep(0.8)
    inst[1].may_exit = True
    inst[1].kill()
    rc = caller.wait(20)
    out = caller.p.stdout.read().decode()
    assert rc == 0, out + caller.output()
    assert "status 200: 400" in out and "ok 400 failed 0" in out, out
    _, _, metrics = call(ports[0], "GET", "/metrics")
    served = sum(int(float(m)) for m in re.findall(
        rb'keel_service_requests_total\{[^}]*route="/notes",code="2xx"\} (\S+)', metrics))
    assert 200 <= served < 400, served  # the survivor took its half and then the rest


def test_settings_from_file_environment_and_flags(procs, tmp_path):
    """kit/config: a flag beats the environment, which beats the file, which beats the
    default; a bad value is one line naming its source, exit 2, before anything starts."""
    import os
    import subprocess

    port = free_port()
    conf = tmp_path / "notes.yaml"
    conf.write_text(f"listen: 127.0.0.1:{port}\nttl: 900\nid: from-file\n")
    env = dict(os.environ, NOTES_CONFIG=str(conf), NOTES_TTL="1200")
    out = subprocess.run([binary("keel-example-notes"), "--id", "from-flag", "--print-config"],
                         env=env, capture_output=True, timeout=10)
    assert out.returncode == 0, out
    text = out.stdout.decode()
    assert f"listen = 127.0.0.1:{port}  (file {conf})" in text, text
    assert "ttl = 1200  (environment)" in text, text
    assert "id = from-flag  (flag)" in text, text
    p = procs.start([binary("keel-example-notes")], env=env)
    p.read_line(r"listening on port")
    assert call(port, "GET", "/notes")[0] == 200
    bad = subprocess.run([binary("keel-example-notes")], env=dict(env, NOTES_TTL="soon"),
                         capture_output=True, timeout=10)
    assert bad.returncode == 2
    assert bad.stderr.decode().strip() == (
        "keel-example-notes: environment NOTES_TTL 'soon': expected an integer in 100..600000")


def test_x_request_id_is_kept_or_made_echoed_logged_and_sent_on_calls(procs):
    """The kit keeps a caller's X-Request-Id (safe characters, at most 128 bytes), makes one
    when it is absent or unsafe, echoes it on the answer and puts it on the handler's log
    lines; keel-call (the kit's outbound calls) sends the one it is given."""
    port = free_port()
    p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                     "--log-level", "debug"])
    p.read_line(r"listening on port \d+")
    wait_port(port)

    def rid(headers):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("PUT", "/notes/a", body=b"x", headers=headers)
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 204
        return r.getheader("X-Request-Id")

    assert rid({"X-Request-Id": "order-7f3a:retry.2"}) == "order-7f3a:retry.2"
    made = rid({})
    assert re.fullmatch(r"[0-9a-f]{32}", made) and rid({}) != made
    for unsafe in ["has space", "quote\"", "x" * 129, ""]:
        got = rid({"X-Request-Id": unsafe})
        assert re.fullmatch(r"[0-9a-f]{32}", got), (unsafe, got)
    caller = procs.start([binary("keel-call"), "--endpoints", f"127.0.0.1:{port}", "notes",
                          "PUT", "/notes/b", "--request-id", "from-keel-call-1"])
    caller.may_exit = True
    assert caller.wait(20) == 0, caller.output()

    def logged():
        lines = [json.loads(line) for line in p.output().splitlines()
                 if line.startswith("{") and "note written" in line]
        return {line.get("request_id") for line in lines}

    from conftest import wait_until
    assert wait_until(lambda: {"order-7f3a:retry.2", made, "from-keel-call-1"} <= logged(), 5), \
        logged()
