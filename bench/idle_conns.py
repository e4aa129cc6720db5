"""bench/idle_conns.py - holds N idle keep-alive connections to a proxy, for bench/proxy_memory.sh.

    python3 bench/idle_conns.py PORT N PATH

Reads commands on stdin, one a line, and answers each on stdout when done:
  connect  opens N connections to 127.0.0.1:PORT (one at a time)      -> "connected K"
  request  sends one GET PATH on each and reads its whole answer     -> "requested K"
           (one connection at a time, so the proxy needs one upstream connection)
Stdin's end closes every connection and exits. Bounded: each step gives up after 60 s, each
answer must be whole within 5 s, and an answer over 64 KiB is refused.
"""
import socket
import sys
import time

STEP_S_MAX = 60.0
ANSWER_S_MAX = 5.0
ANSWER_BYTES_MAX = 65536


def read_answer(s):
    """Reads one HTTP/1.1 answer with a Content-Length; returns its status code."""
    data = b""
    s.settimeout(ANSWER_S_MAX)
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk or len(data) > ANSWER_BYTES_MAX:
            raise OSError("connection closed or answer too long")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length > ANSWER_BYTES_MAX:
        raise OSError("answer too long")
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed mid-body")
        body += chunk
    return int(head.split(b" ", 2)[1])


def main():
    port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    conns = []
    for line in sys.stdin:
        cmd = line.strip()
        deadline = time.monotonic() + STEP_S_MAX
        if cmd == "connect":
            while len(conns) < count and time.monotonic() < deadline:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            print(f"connected {len(conns)}", flush=True)
        elif cmd == "request":
            req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
            ok = 0
            for s in conns:
                if time.monotonic() > deadline:
                    break
                s.sendall(req)
                ok += read_answer(s) == 200
            print(f"requested {ok}", flush=True)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
