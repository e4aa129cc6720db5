"""keel proxy's HTTP/1.1 upgrades (docs/proxy.md, "Upgrades"): on a route with `upgrades`, a GET
with `Connection: upgrade` and a listed `Upgrade` goes upstream with both fields; a 101 turns the
two connections into a byte tunnel (backpressure, half-close, idle timeout); any other answer is
an ordinary response. A route without `upgrades` drops Upgrade and answers a 101 with 502."""
import json
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from proxyfake import TIMEOUT_S, start_proxy

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


class TunnelUpstream:
    """A raw upstream, a thread per connection, its behaviour chosen by the request path:
    /echo       101, then echoes every byte; a FIN from the proxy is answered with a FIN
    /collect    101, reads until the FIN, then sends b"got N" and closes
    /close      101, sends b"bye" and closes
    /greet      101 and b"hi" in one write (one TLS record), then as /echo
    /flood      101, then sends bytes without end (never reads)
    /other      101 switching to another protocol (h2c) than asked
    /keep       200 with keep-alive, then the next request on the same connection
    /status/N   an ordinary answer with status N
    Every request head is kept (`heads`). tls: a server context, to speak TLS (a TLS cluster):
    each accepted connection does the handshake first, and an end is a close_notify then a
    FIN."""

    def __init__(self, tls=None):
        self.tls = tls
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.heads = []
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        for c in [self.sock] + self.conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _fin(self, c):
        """The end of what this side sends: a FIN, after a close_notify on TLS (not waiting for
        the peer's)."""
        if self.tls is not None:
            c.setblocking(False)
            try:
                c.unwrap()  # sends close_notify; the peer's is not here yet
            except (ssl.SSLWantReadError, ssl.SSLError, OSError):
                pass
            c.setblocking(True)
        c.shutdown(socket.SHUT_WR)

    def _serve(self, c):
        c.settimeout(TIMEOUT_S * 3)
        try:
            if self.tls is not None:
                # a FIN without a close_notify first is an error here, not an end
                c = self.tls.wrap_socket(c, server_side=True, suppress_ragged_eofs=False)
                self.conns.append(c)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head.decode("latin-1"))
                path = head.split(b" ")[1].decode()
                if not path.endswith("/keep"):
                    break
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            rest = buf
            if path.startswith("/status/") or path.startswith("/ws/status/"):
                st = path.rsplit("/", 1)[1]
                c.sendall(b"HTTP/1.1 %s X\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
                          % st.encode())
                time.sleep(0.5)
                return
            if path.endswith("/other"):
                c.sendall(SWITCH.replace(b"Upgrade: websocket", b"Upgrade: h2c"))
                return
            c.sendall(SWITCH + (b"hi" if path.endswith("/greet") else b""))
            if path.endswith("/close"):
                c.sendall(b"bye")
                self._fin(c)
                time.sleep(0.5)
                return
            if path.endswith("/flood"):
                while True:  # until the proxy closes the connection
                    c.sendall(b"f" * 65536)
            if path.endswith("/collect"):
                got = len(rest)
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
                c.sendall(b"got %d" % got)
                self._fin(c)
                time.sleep(0.5)
                return
            if rest:
                c.sendall(rest)
            while True:  # /echo
                chunk = c.recv(65536)
                if not chunk:
                    self._fin(c)
                    time.sleep(0.5)
                    return
                c.sendall(chunk)
        except OSError:
            return
        finally:
            c.close()


def config(up, idle_ms=None):
    idle = f"\n    upgrade_idle_timeout_ms: {idle_ms}" if idle_ms else ""
    return f"""
access_log: true
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    hosts: [{up.addr}]
routes:
  - name: ws
    match: {{prefix: /ws/}}
    cluster: app
    upgrades: [WebSocket]{idle}
  - name: plain
    match: {{prefix: /}}
    cluster: app
"""


def upgrade(port, path, extra=b"", headers=b"", tls=None):
    """Sends an upgrade request (and extra bytes right after its head); returns the socket, the
    response head as text and the bytes after it. tls: a client context (a TLS listener)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    if tls is not None:
        # a FIN without a close_notify first is an error here, not an end
        s = tls.wrap_socket(s, server_hostname="localhost", suppress_ragged_eofs=False)
    return upgrade_on(s, path, extra, headers)


def upgrade_on(s, path, extra=b"", headers=b""):
    """upgrade() on a connection already made (s: anything with sendall and recv)."""
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade"
              b"\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              + headers + b"\r\n" + extra)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response head: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return s, head.decode("latin-1"), rest


def recv_exactly(s, n, rest=b""):
    buf = rest
    while len(buf) < n:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


def recv_until(s, marker, rest=b""):
    """Reads until marker ends what came (a small answer: its head and body may come apart)."""
    buf = rest
    while not buf.endswith(marker):
        chunk = s.recv(65536)
        assert chunk, f"closed before {marker!r}: {buf!r}"
        buf += chunk
    return buf


def recv_until_closed(s, rest=b""):
    buf = rest
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    m = re.search("^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for(cond, timeout_s=5.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_a_101_comes_through_with_its_upgrade_fields_and_bytes_echo_both_ways(procs, tmp_path):
    up = TunnelUpstream()
    try:
        proc, port, admin = start_proxy(procs, tmp_path, config(up))
        s, head, rest = upgrade(port, "/ws/echo")
        lines = head.split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), head
        low = head.lower()
        assert "\r\nupgrade: websocket" in low and "\r\nconnection: upgrade" in low, head
        assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in low, head
        sent = up.heads[0].lower()
        assert "\r\nupgrade: websocket" in sent and "\r\nconnection: upgrade" in sent, sent
        assert "keep-alive" not in sent  # the other hop-by-hop fields are still dropped
        for msg in (b"hello", b"x" * 100000, b"again"):
            s.sendall(msg)
            assert recv_exactly(s, len(msg), rest) == msg
            rest = b""
        m = metrics(admin)
        assert metric(m, "keel_proxy_upgrades_total", '{route="ws",outcome="switched"}') == 1
        assert metric(m, "keel_proxy_upgrade_tunnels_active") == 1
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
        logs = [json.loads(l) for l in proc.output().splitlines() if '"msg":"access"' in l]
        assert [(l["status"], l["bytes"], l["bytes_up"]) for l in logs] == [(101, 100010, 100010)]
    finally:
        up.close()


def test_a_large_transfer_to_a_slow_reader_keeps_the_proxys_memory_bounded(procs, tmp_path):
    up = TunnelUpstream()
    try:
        proc, port, _ = start_proxy(procs, tmp_path, config(up))
        s, head, rest = upgrade(port, "/ws/echo")
        assert head.startswith("HTTP/1.1 101"), head
        pid = proc.p.pid
        before = rss_kib(pid)
        total = 8 << 20
        payload = bytes(range(256)) * (total // 256)
        writer = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        writer.start()
        got = bytearray(rest)
        peak = before
        while len(got) < total:
            time.sleep(0.002)  # a slow reader: the echo backs up through the tunnel
            chunk = s.recv(16384)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
            if len(got) % (256 << 10) < 16384:
                peak = max(peak, rss_kib(pid))
        writer.join(TIMEOUT_S)
        assert bytes(got) == payload
        peak = max(peak, rss_kib(pid))
        assert peak - before < 4096, f"VmRSS grew {peak - before} KiB for an 8 MiB echo"
        s.close()
    finally:
        up.close()


def test_a_client_half_close_reaches_the_upstream_and_its_answer_still_comes(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up))
        s, head, rest = upgrade(port, "/ws/collect")
        assert head.startswith("HTTP/1.1 101"), head
        s.sendall(b"a" * 70000)
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s, rest) == b"got 70000"
        s.close()
    finally:
        up.close()


def test_the_upstream_closing_ends_the_clients_connection(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up))
        s, head, rest = upgrade(port, "/ws/close")
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_until_closed(s, rest) == b"bye"
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
    finally:
        up.close()


def test_bytes_sent_right_after_the_request_head_go_through_the_tunnel(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up))
        s, head, rest = upgrade(port, "/ws/echo", extra=b"early bytes")
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_exactly(s, 11, rest) == b"early bytes"
        s.close()
    finally:
        up.close()


def test_an_idle_tunnel_is_closed_after_the_routes_idle_timeout(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up, idle_ms=300))
        s, head, rest = upgrade(port, "/ws/echo")
        assert head.startswith("HTTP/1.1 101"), head
        t0 = time.monotonic()
        assert recv_until_closed(s, rest) == b""
        assert 0.2 < time.monotonic() - t0 < 3.0
    finally:
        up.close()


def test_a_route_without_upgrades_drops_upgrade_and_answers_a_101_with_502(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up))
        s, head, _ = upgrade(port, "/echo")
        assert head.startswith("HTTP/1.1 502"), head
        assert "upgrade" not in up.heads[0].lower().split("\r\n", 1)[1], up.heads[0]
        s.close()
    finally:
        up.close()


def test_a_101_to_another_protocol_than_asked_is_a_502(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up))
        s, head, _ = upgrade(port, "/ws/other")
        assert head.startswith("HTTP/1.1 502"), head
        s.close()
        m = metrics(admin)
        assert metric(m, "keel_proxy_upgrades_total", '{route="ws",outcome="failed"}') == 1
    finally:
        up.close()


def test_an_answer_other_than_101_is_proxied_as_an_ordinary_response(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up))
        for st in (200, 400):
            s, head, rest = upgrade(port, f"/ws/status/{st}")
            assert head.startswith(f"HTTP/1.1 {st}"), head
            assert "upgrade" not in head.lower(), head
            assert recv_exactly(s, 2, rest) == b"no"
            s.close()
        m = metrics(admin)
        assert metric(m, "keel_proxy_upgrades_total", '{route="ws",outcome="refused"}') == 2
        assert metric(m, "keel_proxy_upgrade_tunnels_active") == 0
    finally:
        up.close()


def test_an_upgrade_request_with_a_body_is_refused(procs, tmp_path):
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up))
        s, head, _ = upgrade(port, "/ws/echo", extra=b"abc", headers=b"Content-Length: 3\r\n")
        assert head.startswith("HTTP/1.1 400"), head
        assert up.heads == []
        s.close()
        s, head, _ = upgrade(port, "/ws/echo", headers=b"Content-Length: 0\r\n")
        assert head.startswith("HTTP/1.1 101"), head
        s.close()
    finally:
        up.close()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_pki(d):
    """A test CA (ca.pem) and a certificate it signs for localhost and 127.0.0.1 (srv.pem,
    srv.key) in d."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2", "-subj", "/CN=t ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr", "-subj", "/CN=localhost")
    (d / "srv.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
            "-CAcreateserial", "-out", f"{d}/srv.pem", "-days", "2", "-extfile", f"{d}/srv.ext")


def with_tls_listener(text, d):
    return text.replace(
        "    address: 127.0.0.1:0\nadmin:",
        f"    address: 127.0.0.1:0\n    tls: {{cert_file: {d}/srv.pem, key_file: {d}/srv.key}}"
        "\nadmin:", 1)


def with_tls_cluster(text, up, d):
    return text.replace(
        f"    hosts: [{up.addr}]\n",
        f"    hosts: [{up.addr}]\n    tls: {{ca_file: {d}/ca.pem, server_name: localhost}}\n", 1)


def tls_upstream(d):
    """A TunnelUpstream speaking TLS with d's certificate (a TLS cluster's host)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{d}/srv.pem", f"{d}/srv.key")
    return TunnelUpstream(tls=strict_eof(ctx))


def strict_eof(ctx):
    """A FIN without a close_notify before it is then an error (SSLEOFError), not an end: what
    checks that the proxy sends close_notify (Python sets OP_IGNORE_UNEXPECTED_EOF itself)."""
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def tls_echo(s, payload):
    """Sends payload on a TLS socket while reading its echo, in one thread (an SSLSocket may not
    be read and written from two threads at once): the echo's bytes."""
    s.setblocking(False)
    sent, got = 0, bytearray()
    while len(got) < len(payload):
        want_write = sent < len(payload)
        r, w, _ = select.select([s], [s] if want_write else [], [], TIMEOUT_S)
        assert r or w, f"stalled after {sent} bytes sent, {len(got)} echoed"
        if w:
            try:
                sent += s.send(payload[sent:sent + 65536])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            assert chunk, f"closed after {len(got)} bytes echoed"
            got += chunk
    s.settimeout(TIMEOUT_S)
    return bytes(got)


class BioTlsClient:
    """A TLS client over memory BIOs, for a half-close: an SSLSocket's unwrap() reads right after
    sending its close_notify and fails on the application data the peer may still send."""

    def __init__(self, ctx, port):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.inc, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
        self._flush()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def _feed(self):
        data = self.raw.recv(65536)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[self.obj.write(view):]
            self._flush()

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                return b""

    def half_close(self):
        """A close_notify, then a FIN; reading goes on."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:  # the peer's close_notify is not here yet: nothing read
            pass
        self._flush()
        self.raw.shutdown(socket.SHUT_WR)

    def close(self):
        self.raw.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_a_tunnel_works_on_a_tls_listener(procs, tmp_path):
    d = tmp_path
    make_pki(d)
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, with_tls_listener(config(up), d))
        ctx = strict_eof(ssl.create_default_context(cafile=f"{d}/ca.pem"))
        s, head, rest = upgrade(port, "/ws/echo", extra=b"early", tls=ctx)
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_exactly(s, 5, rest) == b"early"
        msg = b"y" * 300000
        s.sendall(msg)
        assert recv_exactly(s, len(msg)) == msg
        s.close()
        s, head, rest = upgrade(port, "/ws/close", tls=ctx)
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_until_closed(s, rest) == b"bye"
        s.close()
    finally:
        up.close()


def test_a_tunnels_life_is_not_judged_as_a_canarys_latency(procs, tmp_path):
    """A rollout judges the latency keel_proxy_request_duration_seconds measures, which leaves
    tunnels out: tunnels to the canary that stay open longer than max_p99_ms must not roll it
    back (their answer, the 101, came at once)."""
    up = TunnelUpstream()
    try:
        text = config(up).replace(
            "clusters:\n  - name: app\n    hosts: [%s]" % up.addr,
            "clusters:\n  - name: app\n    hosts: [%s]\n  - name: canary\n    hosts: [%s]"
            % (up.addr, up.addr), 1).replace(
            "    cluster: app\n    upgrades: [WebSocket]",
            "    weighted_clusters:\n      - {cluster: app, weight: 1}\n"
            "      - {cluster: canary, weight: 1}\n"
            "    rollout: {canary: canary, steps: [100], step_ms: 600000, window_ms: 10000, "
            "min_requests: 3, max_error_percent: 5, max_p99_ms: 100}\n"
            "    upgrades: [WebSocket]", 1)
        _, port, admin = start_proxy(procs, tmp_path, text)
        socks = []
        for _ in range(4):
            s, head, _ = upgrade(port, "/ws/echo")
            assert head.startswith("HTTP/1.1 101"), head
            socks.append(s)
        time.sleep(0.3)  # each tunnel lives well past max_p99_ms
        for s in socks:
            s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
        time.sleep(0.3)  # a few housekeeping ticks judge the window
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/rollouts", timeout=5) as r:
            ro = {o["route"]: o for o in json.loads(r.read())["rollouts"]}["ws"]
        assert ro["state"] == "running", ro
        m = metrics(admin)
        assert metric(m, "keel_proxy_rollout_rollbacks_total", '{route="ws",reason="latency"}') == 0
    finally:
        up.close()


def test_a_client_reset_that_only_a_write_sees_ends_the_tunnel(procs, tmp_path):
    """A half-closed client is no longer read, so its reset shows only as a failed write toward
    it: that ends the tunnel too (not the idle timeout, while the upstream still sends)."""
    up = TunnelUpstream()
    try:
        _, port, admin = start_proxy(procs, tmp_path, config(up, idle_ms=60000))
        s, head, _ = upgrade(port, "/ws/flood")
        assert head.startswith("HTTP/1.1 101"), head
        s.shutdown(socket.SHUT_WR)  # the proxy stops reading the client
        time.sleep(0.5)  # the flood backs up: writes toward the client are queued in the proxy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0,
                        timeout_s=3.0)
    finally:
        up.close()


def test_an_upgrade_takes_a_new_upstream_connection_not_an_idle_pooled_one(procs, tmp_path):
    # The tunnel never goes back to the pool, and an idle connection the upstream closes just
    # as it is taken would fail the handshake (an upgrade is retried only after a connect
    # failure): so an upgrade leaves the pool alone.
    up = TunnelUpstream()
    try:
        _, port, _ = start_proxy(procs, tmp_path, config(up))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as c:
            c.sendall(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
            recv_until(c, b"ok")
        assert wait_for(lambda: len(up.conns) == 1)
        s, head, rest = upgrade(port, "/ws/echo")
        assert head.startswith("HTTP/1.1 101"), head
        assert len(up.conns) == 2, "the upgrade went on the pooled connection"
        s.sendall(b"ping")
        assert recv_exactly(s, 4, rest) == b"ping"
        s.close()
        # the pooled connection is still there for ordinary requests
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as c:
            c.sendall(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
            recv_until(c, b"ok")
        assert len(up.conns) == 2
    finally:
        up.close()


def test_a_tunnel_stays_in_flight_for_least_conn_balancing(procs, tmp_path):
    # Envoy counts an upgraded stream as an active request until it ends: a host holding a
    # tunnel is busier than an idle one, and least_conn (and p2c) must see it.
    a, b = TunnelUpstream(), TunnelUpstream()
    try:
        yaml_text = f"""
listeners:
  - name: main
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
clusters:
  - name: app
    balance: least_conn
    hosts: [{a.addr}, {b.addr}]
routes:
  - name: ws
    match: {{prefix: /ws/}}
    cluster: app
    upgrades: [websocket]
  - name: plain
    match: {{prefix: /}}
    cluster: app
"""
        _, port, _ = start_proxy(procs, tmp_path, yaml_text)
        s, head, rest = upgrade(port, "/ws/echo")
        assert head.startswith("HTTP/1.1 101"), head
        busy, idle = (a, b) if len(a.heads) == 1 else (b, a)
        assert len(busy.heads) == 1 and len(idle.heads) == 0
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as c:
                c.sendall(b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
                recv_until(c, b"no")
        assert len(idle.heads) == 10 and len(busy.heads) == 1, (len(idle.heads), len(busy.heads))
        s.sendall(b"ping")
        assert recv_exactly(s, 4, rest) == b"ping"
        s.close()
    finally:
        a.close()
        b.close()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


@needs_openssl
def test_a_tunnel_toward_a_tls_cluster_passes_the_101_and_echoes_both_ways(procs, tmp_path):
    make_pki(tmp_path)
    up = tls_upstream(tmp_path)
    try:
        proc, port, admin = start_proxy(procs, tmp_path, with_tls_cluster(config(up), up, tmp_path))
        s, head, rest = upgrade(port, "/ws/echo", extra=b"early")
        assert head.startswith("HTTP/1.1 101"), head
        low = head.lower()
        assert "\r\nupgrade: websocket" in low and "\r\nconnection: upgrade" in low, head
        assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in low, head
        assert isinstance(up.conns[-1], ssl.SSLSocket)  # the upstream side spoke TLS
        sent = up.heads[0].lower()
        assert "\r\nupgrade: websocket" in sent and "\r\nconnection: upgrade" in sent, sent
        assert recv_exactly(s, 5, rest) == b"early"
        for msg in (b"hello", b"x" * 100000, b"again"):
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg
        m = metrics(admin)
        assert metric(m, "keel_proxy_upgrades_total", '{route="ws",outcome="switched"}') == 1
        assert metric(m, "keel_proxy_upgrade_tunnels_active") == 1
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
        logs = [json.loads(l) for l in proc.output().splitlines() if '"msg":"access"' in l]
        assert [(l["status"], l["bytes"], l["bytes_up"]) for l in logs] == [(101, 100015, 100015)]
        # the 101 and the first tunnel bytes in one TLS record: split where the head ends
        s, head, rest = upgrade(port, "/ws/greet")
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_exactly(s, 2, rest) == b"hi"
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        s.close()
    finally:
        up.close()


@needs_openssl
def test_a_large_transfer_through_a_tls_cluster_to_a_slow_reader_stays_bounded(procs, tmp_path):
    """8 MiB echoed through TLS toward the upstream: records split by partial writes and reads
    paused for backpressure must lose and reorder nothing, and memory stays bounded."""
    make_pki(tmp_path)
    up = tls_upstream(tmp_path)
    try:
        proc, port, _ = start_proxy(procs, tmp_path, with_tls_cluster(config(up), up, tmp_path))
        s, head, rest = upgrade(port, "/ws/echo")
        assert head.startswith("HTTP/1.1 101"), head
        pid = proc.p.pid
        before = rss_kib(pid)
        total = 8 << 20
        payload = bytes(range(251)) * (total // 251 + 1)
        payload = payload[:total]
        writer = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        writer.start()
        got = bytearray(rest)
        peak = before
        while len(got) < total:
            time.sleep(0.002)  # a slow reader: the echo backs up through the tunnel
            chunk = s.recv(16384)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
            if len(got) % (256 << 10) < 16384:
                peak = max(peak, rss_kib(pid))
        writer.join(TIMEOUT_S)
        assert bytes(got) == payload
        peak = max(peak, rss_kib(pid))
        assert peak - before < 4096, f"VmRSS grew {peak - before} KiB for an 8 MiB echo"
        s.shutdown(socket.SHUT_WR)  # the echo ends: its close_notify and FIN come back
        assert recv_until_closed(s) == b""
        s.close()
    finally:
        up.close()


@needs_openssl
def test_a_tls_upstream_closing_ends_the_clients_connection(procs, tmp_path):
    """The upstream sends bytes, a close_notify and a FIN: the client gets the bytes and a FIN,
    and the tunnel ends once the client closes too."""
    make_pki(tmp_path)
    up = tls_upstream(tmp_path)
    try:
        _, port, admin = start_proxy(procs, tmp_path, with_tls_cluster(config(up), up, tmp_path))
        s, head, rest = upgrade(port, "/ws/close")
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_until_closed(s, rest) == b"bye"
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
    finally:
        up.close()


@needs_openssl
def test_a_client_half_close_reaches_a_tls_upstream_and_its_answer_still_comes(procs, tmp_path):
    """The client's FIN goes to the upstream as a close_notify and a FIN; the upstream's answer
    after it (TLS 1.3 lets a side write after the peer's close_notify) still reaches the client."""
    make_pki(tmp_path)
    up = tls_upstream(tmp_path)
    try:
        _, port, admin = start_proxy(procs, tmp_path, with_tls_cluster(config(up), up, tmp_path))
        s, head, rest = upgrade(port, "/ws/collect")
        assert head.startswith("HTTP/1.1 101"), head
        s.sendall(b"a" * 70000)
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s, rest) == b"got 70000"
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
    finally:
        up.close()


@needs_openssl
def test_a_tunnel_from_a_tls_listener_to_a_tls_cluster(procs, tmp_path):
    d = tmp_path
    make_pki(d)
    up = tls_upstream(d)
    try:
        text = with_tls_cluster(with_tls_listener(config(up), d), up, d)
        _, port, admin = start_proxy(procs, tmp_path, text)
        ctx = strict_eof(ssl.create_default_context(cafile=f"{d}/ca.pem"))
        s, head, rest = upgrade(port, "/ws/echo", extra=b"early", tls=ctx)
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_exactly(s, 5, rest) == b"early"
        msg = bytes(range(256)) * 8192  # 2 MiB, sent while its echo is read
        assert tls_echo(s, msg) == msg
        s.close()
        s, head, rest = upgrade(port, "/ws/close", tls=ctx)
        assert head.startswith("HTTP/1.1 101"), head
        assert recv_until_closed(s, rest) == b"bye"
        s.close()
        s = BioTlsClient(ctx, port)
        s, head, rest = upgrade_on(s, "/ws/collect")
        assert head.startswith("HTTP/1.1 101"), head
        s.sendall(b"b" * 50000)
        s.half_close()
        assert recv_until_closed(s, rest) == b"got 50000"
        s.close()
        assert wait_for(lambda: metric(metrics(admin), "keel_proxy_upgrade_tunnels_active") == 0)
    finally:
        up.close()
