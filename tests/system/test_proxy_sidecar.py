"""test_proxy_sidecar.py - keel proxy in sidecar mode beside an app that never heard of keel.

A 3-node keel cluster is the registry. The app is a plain Python HTTP server (its /health
answers 200, or 500 once told to fail). A keel proxy with a `sidecar:` section sits beside it:
an inbound listener routes to the app, an outbound listener routes to `service:` clusters. The
sidecar registers the app, checks it, reports its status through the TTL check, and
deregisters it on SIGTERM; a gateway proxy with a `service:` cluster reaches the app through
the sidecar's inbound listener.
"""

import http.client
import json
import re
import signal
import time

from conftest import binary, free_port, wait_until
from keelcluster import make_cluster  # noqa: F401 (fixture)
from proxyfake import start_proxy

APP = r'''
import http.server, json, sys
state = {"healthy": True}

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            return self.answer(200 if state["healthy"] else 500, {"healthy": state["healthy"]})
        self.answer(200, {"app": "plain", "path": self.path,
                          "via": ", ".join(self.headers.get_all("Via") or []),
                          "request_id": self.headers.get("X-Request-Id", "")})
    def do_PUT(self):
        n = int(self.headers.get("Content-Length", "0"))
        state["healthy"] = self.rfile.read(n) == b"healthy"
        self.answer(200, {"healthy": state["healthy"]})

srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("app listening", flush=True)
srv.serve_forever()
'''

TTL_MS = 2000


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def health(node, service, query=""):
    st, _, body = call(node.http_port, "GET", f"/v1/health/service/{service}{query}")
    assert st == 200, body
    return json.loads(body)


def instance(nodes, service):
    """The service's instances by id, asked of any node that answers."""
    for nd in nodes:
        try:
            return {e["Service"]["ID"]: e for e in health(nd, service)}
        except OSError:
            continue
    raise AssertionError("no node answered")


def status_of(nodes, service, iid):
    e = instance(nodes, service).get(iid)
    return e["Checks"][0]["Status"] if e else None


def start_app(procs, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(APP)
    port = free_port()
    p = procs.start(["/usr/bin/python3", str(script), str(port)])
    p.read_line(r"app listening")
    return p, port


HTTP_CHECK = "{path: /health, interval_ms: 200, timeout_ms: 150, healthy_threshold: 2, " \
    "unhealthy_threshold: 2}"
TCP_CHECK = "{tcp: true, interval_ms: 200, timeout_ms: 150}"


def sidecar_yaml(reg, app_port, drain_ms=1500, check=HTTP_CHECK):
    return f"""
listeners:
  - {{name: inbound, address: 127.0.0.1:0}}
  - {{name: outbound, address: 127.0.0.1:0}}
admin: {{address: 127.0.0.1:0}}
registry: {reg}
sidecar:
  service: plainapp
  id: plainapp-1
  app: 127.0.0.1:{app_port}
  inbound: inbound
  tags: [v1, blue]
  meta: {{zone: a}}
  weight: 3
  version: "1.0.2"
  ttl_ms: {TTL_MS}
  drain_ms: {drain_ms}
  health_check: {check}
clusters:
  - name: local_app
    hosts: [127.0.0.1:{app_port}]
  - name: plainapp
    service: plainapp
routes:
  - name: inbound
    match: {{listener: inbound}}
    cluster: local_app
  - name: outbound
    match: {{listener: outbound, prefix: /plainapp/}}
    rewrite_prefix: /
    cluster: plainapp
"""


def start_sidecar(procs, tmp_path, reg, app_port, name="sidecar.yaml", check=HTTP_CHECK):
    path = tmp_path / name
    path.write_text(sidecar_yaml(reg, app_port, check=check))
    p = procs.start([binary("keel"), "proxy", "--config", str(path)])
    inbound = int(p.read_line(r"listening 0 on port (\d+)").group(1))
    outbound = int(p.read_line(r"listening 1 on port (\d+)").group(1))
    admin = int(p.read_line(r"admin on port (\d+)").group(1))
    return p, inbound, outbound, admin


def test_a_sidecar_registers_checks_and_deregisters_a_plain_app(make_cluster, procs, tmp_path):
    cl = make_cluster(3)
    cl.wait_leader()
    nodes = cl.nodes
    reg = ",".join(f"127.0.0.1:{nd.client_port}" for nd in nodes)
    app, app_port = start_app(procs, tmp_path)
    sc, inbound, outbound, admin = start_sidecar(procs, tmp_path, reg, app_port)

    # registered as passing, with the inbound listener's address and the section's fields
    assert wait_until(lambda: status_of(nodes, "plainapp", "plainapp-1") == "passing", 10)
    svc = instance(nodes, "plainapp")["plainapp-1"]["Service"]
    assert svc["Address"] == "127.0.0.1" and svc["Port"] == inbound
    assert svc["Tags"] == ["v1", "blue"] and svc["Meta"] == {"zone": "a"}
    assert svc["Weights"]["Passing"] == 3 and svc["Version"] == "1.0.2"
    st, _, m = call(admin, "GET", "/metrics")
    assert re.search(rb'keel_proxy_sidecar_app_healthy\{service="plainapp"\} 1', m), m
    assert re.search(rb'keel_service_registry_failures_total\{service="plainapp"\} 0', m), m
    assert wait_until(lambda: "HTTP GET" in instance(nodes, "plainapp")["plainapp-1"]["Checks"][0]
                      ["Output"], 3)

    # a gateway with a service: cluster reaches the app through the sidecar's inbound listener
    gw, gw_port, _ = start_proxy(procs, tmp_path, f"""
listeners: [{{name: main, address: 127.0.0.1:0}}]
registry: {reg}
clusters:
  - {{name: plainapp, service: plainapp}}
routes:
  - {{name: all, match: {{prefix: /}}, cluster: plainapp}}
""", name="gateway.yaml")
    assert wait_until(lambda: call(gw_port, "GET", "/hello")[0] == 200, 10)
    st, _, body = call(gw_port, "GET", "/hello")
    out = json.loads(body)
    assert out["app"] == "plain" and out["path"] == "/hello"
    assert out["via"].count("keel") == 2, out  # the gateway's hop and the sidecar's
    # the app's own calls go out through the outbound listener to a service: cluster
    assert wait_until(lambda: call(outbound, "GET", "/plainapp/x")[0] == 200, 10)
    assert json.loads(call(outbound, "GET", "/plainapp/x")[2])["path"] == "/x"
    # the inbound listener does not serve the outbound routes, nor the other way round
    assert call(inbound, "GET", "/plainapp/x")[2] != call(outbound, "GET", "/plainapp/x")[2]

    # the app fails its check: critical (not passing) within the thresholds
    assert call(app_port, "PUT", "/state", b"failing")[0] == 200
    t0 = time.monotonic()
    assert wait_until(lambda: status_of(nodes, "plainapp", "plainapp-1") == "critical", 5)
    took = time.monotonic() - t0
    print(f"\napp failing -> registry critical in {took:.2f} s (2 x 200 ms checks)")
    assert health(nodes[0], "plainapp", "?passing") == []
    assert "500" in instance(nodes, "plainapp")["plainapp-1"]["Checks"][0]["Output"]
    assert wait_until(lambda: call(gw_port, "GET", "/hello")[0] == 503, 5)
    # still critical after more than a TTL: the sidecar keeps reporting, the instance stays
    time.sleep(TTL_MS / 1000 * 1.5)
    assert status_of(nodes, "plainapp", "plainapp-1") == "critical"

    # it recovers: passing again, and the gateway reaches it again
    assert call(app_port, "PUT", "/state", b"healthy")[0] == 200
    assert wait_until(lambda: status_of(nodes, "plainapp", "plainapp-1") == "passing", 5)
    assert wait_until(lambda: call(gw_port, "GET", "/hello")[0] == 200, 5)

    # SIGTERM: deregistered at once, while the sidecar still serves (it drains, then closes)
    sc.may_exit = True
    sc.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert wait_until(lambda: "plainapp-1" not in instance(nodes, "plainapp"), 2)
    gone = time.monotonic() - t0
    print(f"SIGTERM -> deregistered in {gone:.2f} s")
    assert call(inbound, "GET", "/still")[0] == 200  # drain_ms: still accepting
    assert sc.wait(10) == 0, sc.output()[-3000:]  # a clean exit (and no leak under ASan)

    # SIGKILL: no deregistration; the instance leaves within 2 x TTL. This sidecar checks the
    # app with a TCP connect: the app's failing /health does not matter to it
    assert call(app_port, "PUT", "/state", b"failing")[0] == 200
    sc2, inbound2, _, _ = start_sidecar(procs, tmp_path, reg, app_port, name="sidecar2.yaml",
                                        check=TCP_CHECK)
    assert wait_until(lambda: status_of(nodes, "plainapp", "plainapp-1") == "passing", 10)
    assert instance(nodes, "plainapp")["plainapp-1"]["Service"]["Port"] == inbound2
    assert wait_until(lambda: "TCP connect" in instance(nodes, "plainapp")["plainapp-1"]
                      ["Checks"][0]["Output"], 3)
    sc2.may_exit = True
    sc2.signal(signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_until(lambda: "plainapp-1" not in instance(nodes, "plainapp"), 8)
    left = time.monotonic() - t0
    print(f"SIGKILL -> left the registry in {left:.2f} s (TTL {TTL_MS / 1000:.0f} s)")
    assert left <= 2 * TTL_MS / 1000, left


def test_a_sidecar_section_is_checked(procs, tmp_path):
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("""
listeners: [{name: in, address: 127.0.0.1:0}]
sidecar:
  app: nothost
  inbound: nope
  health_check: {path: /h, tcp: true}
clusters: [{name: a, hosts: [127.0.0.1:1]}]
routes: [{match: {listener: other}, cluster: a}]
""")
    r = subprocess.run([binary("keel"), "proxy", "--check", str(bad)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    for text in ["'service' is required", "app: 'nothost' is not host:port",
                 "give one of 'path'", "no listener named 'nope'", "no listener named 'other'",
                 "'registry' is required"]:
        assert text in r.stderr, (text, r.stderr)
