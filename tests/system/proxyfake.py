"""proxyfake.py - fake upstreams and a keel proxy starter for the proxy's system tests.

FakeUpstream is a small HTTP/1.1 server on a thread per connection whose behaviour is chosen
by the request path, so one upstream can be well-behaved and hostile in turn:

  any other path    200, JSON of the method, target, headers and body length and hash received
  /status/N         answer with status N (and a short body)
  /reset            read the request, then close with a TCP reset
  /hang             read the request, never answer (until the test ends)
  /slow/MS          answer 200 after MS milliseconds
  /garbage          answer bytes that are not HTTP
  /midbody          promise 1000 bytes, send 10, close
  /close-delimited  3000 bytes of body delimited by closing the connection
  /bigheaders       a response head of ~100 KiB
  /big/N            N bytes of body (Content-Length), written as fast as the peer reads
  /chunked/N        N bytes of body, chunked in 1000-byte chunks
  /health           200, or 503 while `healthy` is False
When `die_after_body` is set, every request but /health is read whole and the connection is
then closed without an answer (an instance that dies mid-request). When `fail_status` is set, every path but /health answers it (only the next `fail_next`
requests when that is set). When `stale_after` is N > 0, a connection answers N requests with
keep-alive and then reads the next one whole and closes without an answer and without having
said `Connection: close` (with a TCP reset when `stale_reset` is set): an idle keep-alive
connection the upstream closed just as the proxy sent on it (`dropped` counts those requests).
Every request is counted (`count`, `paths`), every connection too (`connections`).
"""

import json
import os
import re
import socket
import struct
import threading
import time

from conftest import binary

TIMEOUT_S = 10.0


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def read_body(conn, headers, rest):
    """Reads a Content-Length or chunked body; returns (body, rest)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += conn.recv(65536)
            line, rest = rest.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-chunk")
                rest += chunk
            if size == 0:
                # no trailers from our clients: the CRLF after the last chunk
                return body, rest[2:]
            body += rest[:size]
            rest = rest[size + 2 :]
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return rest[:n], rest[n:]


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers, raw = {}, []
    for line in lines[1:]:
        k, v = line.split(":", 1)
        raw.append((k, v.strip()))
        headers.setdefault(k.strip().lower(), v.strip())
    return method, target, headers, raw


class FakeUpstream:
    def __init__(self, name="up"):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.count = 0
        self.paths = []
        self.connections = 0
        self.fail_status = None
        self.fail_next = 0  # with fail_status: only this many requests fail, then all succeed
        self.healthy = True
        self.die_after_body = False
        self.stale_after = 0
        self.stale_reset = False
        self.dropped = 0
        self.bodies = []  # the body of every request, in order
        self.bytes_sent = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _send(self, conn, data):
        conn.sendall(data)
        with self.lock:
            self.bytes_sent += len(data)

    def _serve(self, conn):
        conn.settimeout(TIMEOUT_S * 6)
        buf = b""
        answered = 0
        try:
            while not self.stopping.is_set():
                head, rest = read_head(conn, buf)
                if head is None:
                    return
                method, target, headers, raw = parse_head(head)
                body, buf = read_body(conn, headers, rest)
                path = target.split("?", 1)[0]
                with self.lock:
                    self.count += 1
                    self.paths.append(path)
                    self.bodies.append(body)
                if self.stale_after > 0 and answered >= self.stale_after and path != "/health":
                    with self.lock:
                        self.dropped += 1
                    if self.stale_reset:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if not self._answer(conn, method, target, path, headers, raw, body):
                    return
                answered += 1
        except (OSError, ValueError, ConnectionError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, conn, method, target, path, headers, raw, body):
        """Answers one request; False when the connection is done."""
        if path == "/health":
            status = 200 if self.healthy else 503
            self._send(conn, f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nhc".encode())
            return True
        if self.die_after_body:
            return False
        with self.lock:
            status = self.fail_status
            if status is not None and self.fail_next > 0:
                self.fail_next -= 1
                if self.fail_next == 0:
                    self.fail_status = None  # this is the last failure
        if status is not None:
            b = b"failing"
            self._send(conn, f"HTTP/1.1 {status} Failing\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
            return True
        special = re.match(
            r"/(status|reset|hang|slow|garbage|midbody|bigheaders|big|chunked|close-delimited)(/|$)", path)
        if not special:
            info = {
                "upstream": self.name,
                "method": method,
                "target": target,
                "headers": raw,
                "body_len": len(body),
                "body_sha": __import__("hashlib").sha256(body).hexdigest(),
            }
            b = json.dumps(info).encode()
            self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: fake\r\n"
                       + f"Content-Length: {len(b)}\r\n\r\n".encode() + b)
            return True
        m = re.fullmatch(r"/status/(\d+)", path)
        if m:
            b = b"status body"
            self._send(conn, f"HTTP/1.1 {m.group(1)} Status\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
            return True
        if path == "/reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if path == "/hang":
            self.stopping.wait(TIMEOUT_S * 6)
            return False
        m = re.fullmatch(r"/slow/(\d+)", path)
        if m:
            time.sleep(int(m.group(1)) / 1000.0)
            self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            return True
        if path == "/close-delimited":  # HTTP/1.0 style: the body ends when the connection does
            self._send(conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 3000)
            return False
        if path == "/garbage":
            self._send(conn, b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            return False
        if path == "/midbody":
            self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            time.sleep(0.1)
            return False
        if path == "/bigheaders":
            self._send(conn, b"HTTP/1.1 200 OK\r\n" + b"".join(
                f"X-Big-{i}: {'v' * 1000}\r\n".encode() for i in range(100)) + b"Content-Length: 0\r\n\r\n")
            return True
        m = re.fullmatch(r"/big/(\d+)", path)
        if m:
            n = int(m.group(1))
            self._send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n".encode())
            if method == "HEAD":  # the length of what a GET would get, and no body
                return True
            block = bytes(range(256)) * 256
            left = n
            while left > 0:
                part = block[: min(left, len(block))]
                self._send(conn, part)
                left -= len(part)
            return True
        m = re.fullmatch(r"/chunked/(\d+)", path)
        if m:
            n = int(m.group(1))
            out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
            data = bytes(i % 251 for i in range(n))
            for i in range(0, n, 1000):
                part = data[i : i + 1000]
                out.append(b"%x\r\n" % len(part) + part + b"\r\n")
            out.append(b"0\r\n\r\n")
            self._send(conn, b"".join(out))
            return True
        self._send(conn, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
        return True


# The proxy tests run with `workers: 1` unless KEEL_PROXY_WORKERS says otherwise
# (KEEL_PROXY_WORKERS=2 runs them with two event-loop threads); a config that names its own
# `workers` keeps it.
PROXY_WORKERS = int(os.environ.get("KEEL_PROXY_WORKERS", "1"))


def with_workers(yaml_text, workers=None):
    """The config with a top-level `workers:` line, unless it has one."""
    if re.search(r"^workers:", yaml_text, re.M):
        return yaml_text
    return "workers: %d\n" % (workers or PROXY_WORKERS) + yaml_text


def start_proxy(procs, tmp_path, yaml_text, name="proxy.yaml"):
    """Writes the config and starts keel proxy; returns (proc, port, admin_port or None)."""
    yaml_text = with_workers(yaml_text)
    path = tmp_path / name
    path.write_text(yaml_text)
    p = procs.start([binary("keel"), "proxy", "--config", str(path)])
    port = int(p.read_line(r"listening 0 on port (\d+)").group(1))
    admin = None
    if "admin:" in yaml_text:
        admin = int(p.read_line(r"admin on port (\d+)").group(1))
    return p, port, admin


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    s.settimeout(TIMEOUT_S)
    return s


def read_response(s, buf=b"", head_request=False):
    """Reads one response (Content-Length, chunked or until close): (status, headers, body, rest).
    headers maps lower-case names to lists of values."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {buf[:200]!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    if head_request or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", rest
    if headers.get("transfer-encoding", [""])[0].lower() == "chunked":
        body, rest = read_body(s, {"transfer-encoding": "chunked"}, rest)
        return status, headers, body, rest
    if "content-length" in headers:
        body, rest = read_body(s, {"content-length": headers["content-length"][0]}, rest)
        return status, headers, body, rest
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return status, headers, rest, b""
        rest += chunk


def request(port, method, target, headers=None, body=b"", host="test"):
    """One request on a fresh connection: (status, headers, body)."""
    s = connect(port)
    try:
        hdrs = {"Host": host, "Connection": "close"}
        hdrs.update(headers or {})
        if body:
            hdrs["Content-Length"] = str(len(body))
        req = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        s.sendall(req.encode() + b"\r\n" + body)
        st, h, b, _ = read_response(s, head_request=(method == "HEAD"))
        return st, h, b
    finally:
        s.close()


def closed_by_peer(s, timeout_s=TIMEOUT_S):
    """True when the peer closes (EOF or reset) within timeout_s; data read meanwhile is dropped."""
    s.settimeout(timeout_s)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
