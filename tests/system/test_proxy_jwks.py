"""test_proxy_jwks.py - keel proxy's remote_jwks against a fake JWKS server (a cluster's host).

The server's document, status and liveness are set by each test; tokens are HS256, signed here
(test_proxy_jwt.py's helpers). Two workers, so every check also shows that both see the keys one
fetch brought: a token signed by the served key passes; before the first fetch succeeds a token
is refused (401); a rotated key takes over after cache_duration_ms and the old one is then
refused; a server that fails, serves garbage or is gone leaves the keys in force, counted by
keel_proxy_jwks_fetches_total; a reload keeps them until its own fetch, and a SIGHUP with the
file unchanged fetches them again.
"""

import json
import re
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import binary, wait_until
from proxyfake import request, start_proxy
from test_proxy_jwt import ISSUER, bearer, jwks, token

NEW_SECRET = b"rotated-remote-secret-0123456789abcdef"


class JwksServer:
    """Serves `body` with `status` on any GET; `fetches` counts them. stop() closes the socket
    (connections are then refused)."""

    def __init__(self, body):
        self.body = body
        self.status = 200
        self.fetches = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                srv.fetches += 1
                data = srv.body.encode()
                self.send_response(srv.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.up = True

    def stop(self):
        if self.up:
            self.up = False
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def keys_server():
    s = JwksServer(jwks())
    yield s
    s.stop()


def config(up, port, extra=""):
    return f"""
workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
  - name: auth
    hosts: [127.0.0.1:{port}]
jwt_providers:
  - name: shop
    issuer: {ISSUER}
    audiences: [orders]
    remote_jwks:
      cluster: auth
      path: /.well-known/jwks.json
      timeout_ms: 500
      cache_duration_ms: 1000
      retry_backoff_base_ms: 100
      retry_backoff_cap_ms: 200
routes:
  - name: secure
    match: {{prefix: /}}
    jwt: shop
    cluster: app
{extra}"""


def metric(admin, result):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^keel_proxy_jwks_fetches_total\{provider="shop",result="' + result
                  + r'"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def status(port, t, n=4):
    """The statuses of n requests with token t, each on its own connection (so both workers
    answer some of them)."""
    return {request(port, "GET", "/echo", bearer(t))[0] for _ in range(n)}


def test_a_token_signed_by_the_fetched_key_passes(procs, tmp_path, up, keys_server):
    p, port, admin = start_proxy(procs, tmp_path, config(up, keys_server.port))
    assert wait_until(lambda: status(port, token()) == {200}, timeout_s=5)
    assert keys_server.fetches >= 1 and metric(admin, "ok") >= 1
    assert status(port, token(secret=NEW_SECRET)) == {401}


def test_before_the_first_fetch_succeeds_a_token_is_refused(procs, tmp_path, up, keys_server):
    keys_server.status = 503
    p, port, admin = start_proxy(procs, tmp_path, config(up, keys_server.port))
    assert wait_until(lambda: metric(admin, "failed") >= 2, timeout_s=5)  # retried, with backoff
    st, h, _ = request(port, "GET", "/echo", bearer(token()))
    assert st == 401 and h["x-keel-reason"] == ["jwt-invalid"]
    assert 'error_description="no keys: the JWKS is not fetched yet"' in h["www-authenticate"][0]
    st, h, _ = request(port, "GET", "/echo")
    assert st == 401 and h["x-keel-reason"] == ["jwt-missing"]  # no token: still missing
    assert "remote_jwks fetch failed" in p.output()
    keys_server.status = 200
    assert wait_until(lambda: status(port, token()) == {200}, timeout_s=5)


def test_a_rotated_key_takes_over_after_cache_duration(procs, tmp_path, up, keys_server):
    p, port, admin = start_proxy(procs, tmp_path, config(up, keys_server.port))
    assert wait_until(lambda: status(port, token()) == {200}, timeout_s=5)
    keys_server.body = jwks(NEW_SECRET, "k1")  # the next fetch (within 1 s) brings it
    assert wait_until(lambda: status(port, token(secret=NEW_SECRET)) == {200}, timeout_s=5)
    assert status(port, token()) == {401}  # the old key is gone, cached tokens with it
    assert metric(admin, "ok") >= 2


def test_a_failing_or_gone_jwks_server_leaves_the_keys_in_force(procs, tmp_path, up,
                                                                 keys_server):
    p, port, admin = start_proxy(procs, tmp_path, config(up, keys_server.port))
    assert wait_until(lambda: status(port, token()) == {200}, timeout_s=5)
    keys_server.body = "{not a jwks"
    assert wait_until(lambda: metric(admin, "invalid") >= 2, timeout_s=5)
    assert status(port, token()) == {200}
    keys_server.body = json.dumps({"keys": [{"kty": "oct"}]})  # JSON, but a key without k
    before = metric(admin, "invalid")
    assert wait_until(lambda: metric(admin, "invalid") > before, timeout_s=5)
    assert status(port, token()) == {200}
    keys_server.stop()
    failed = metric(admin, "failed")
    assert wait_until(lambda: metric(admin, "failed") >= failed + 2, timeout_s=5)
    assert status(port, token()) == {200}
    # a reload (a changed file) keeps the keys of an unchanged remote_jwks until it fetches
    (tmp_path / "proxy.yaml").write_text(config(up, keys_server.port, "# reloaded\n"))
    p.signal(1)
    p.may_exit = False
    assert wait_until(lambda: metric_reloads(admin) >= 1, timeout_s=5)
    assert status(port, token()) == {200}


def test_a_sighup_with_the_file_unchanged_fetches_the_keys_again(procs, tmp_path, up,
                                                                 keys_server):
    text = config(up, keys_server.port).replace("cache_duration_ms: 1000",
                                                "cache_duration_ms: 600000")
    p, port, admin = start_proxy(procs, tmp_path, text)
    assert wait_until(lambda: status(port, token()) == {200}, timeout_s=5)
    keys_server.body = jwks(NEW_SECRET, "k1")  # the cache would keep the old key 10 minutes
    fetches = keys_server.fetches
    p.signal(1)  # rotating keys is "rotate them at the server, send SIGHUP"
    p.may_exit = False
    assert wait_until(lambda: metric_reloads(admin) >= 1, timeout_s=5)
    assert wait_until(lambda: status(port, token(secret=NEW_SECRET)) == {200}, timeout_s=5)
    assert keys_server.fetches > fetches
    assert status(port, token()) == {401}


def metric_reloads(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        m = re.search(r'^keel_proxy_reloads_total\{result="ok"\} (\S+)$', r.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0


def test_check_names_the_line_of_each_remote_jwks_error(tmp_path, up):
    path = tmp_path / "bad.yaml"
    text = config(up, 9).replace("cluster: auth\n", "cluster: nope\n")
    text = text.replace("cache_duration_ms: 1000", "cache_duration_ms: 10")
    path.write_text(text)
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    lines = text.split("\n")
    rj = next(i for i, l in enumerate(lines) if "cluster: nope" in l) + 1
    cache = next(i for i, l in enumerate(lines) if "cache_duration_ms" in l) + 1
    assert f"{path}:{rj}: jwt provider 'shop': remote_jwks: no cluster named 'nope'" in r.stderr
    assert f"{path}:{cache}: cache_duration_ms: 10 is out of range" in r.stderr, r.stderr
    path.write_text(config(up, 9))  # a good one: --check fetches nothing
    r = subprocess.run([binary("keel"), "proxy", "--check", str(path)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
