"""test_kit_example.py - the service kit through its example service (apps/examples/notes):
routes with parameters, 404 and 405 with Allow, health, per-route metrics, and the SIGTERM
drain that lets a request in flight finish before the process exits."""

import http.client
import re
import signal
import threading
import time

from conftest import binary, free_port, wait_port  # noqa: F401


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
