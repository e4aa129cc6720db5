"""commands_doc.py - docs/commands.md, generated from keel's command table and checked against Redis.

Every command keel has comes from one table (core/kv's data commands plus the server's
connection commands); COMMAND INFO and COMMAND DOCS show that table. This script asks a
running keel server for it, asks a real redis-server 7.0 for its own, and writes one page:
each keel command with its arity, flags, key positions and summary, whether Redis 7.0 has
it with the same arity and key positions, and a pointer to the stated difference where
docs/kv.md's "Differences from Redis" names the command; then the Redis 7.0 commands keel
does not have. The page is never edited by hand: tests/system/test_commands_doc.py fails
when it no longer matches the table, and this script rewrites it:

    /usr/bin/python3 tests/system/commands_doc.py [--keel build/keel] [--out docs/commands.md]
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIFFS_DOC = os.path.join(ROOT, "docs", "kv.md")

# Families in the order the page lists them: Redis's ACL categories, first match wins.
FAMILIES = [
    ("string", "Strings"),
    ("bitmap", "Bitmaps"),
    ("hash", "Hashes"),
    ("list", "Lists"),
    ("set", "Sets"),
    ("sortedset", "Sorted sets"),
    ("stream", "Streams"),
    ("hyperloglog", "HyperLogLog"),
    ("geo", "Geo"),
    ("pubsub", "Pub/sub"),
    ("transaction", "Transactions"),
    ("scripting", "Scripting"),
    ("connection", "Connection"),
    ("keyspace", "Keyspace"),
]
OTHER = "Server and introspection"
KEEL_ONLY = "keel's own commands"


def _command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Conn:
    """A minimal RESP2 client returning replies as Python values (bytes, int, list, None)."""

    def __init__(self, port, timeout_s=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buf = b""
        self.pos = 0

    def close(self):
        self.sock.close()

    def _line(self):
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line, self.pos = self.buf[self.pos : end], end + 2
                return line
            self._fill()

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def _value(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        n = int(rest)
        if kind == b"$":
            if n < 0:
                return None
            while len(self.buf) < self.pos + n + 2:
                self._fill()
            v, self.pos = self.buf[self.pos : self.pos + n], self.pos + n + 2
            return v
        if kind == b"*":
            return None if n < 0 else [self._value() for _ in range(n)]
        raise ValueError(f"not RESP2: {line[:80]!r}")

    def call(self, *args):
        self.sock.sendall(_command(*args))
        v = self._value()
        self.buf, self.pos = self.buf[self.pos :], 0
        return v


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def collect(port, docs=True):
    """{NAME: {arity, flags, keys, categories, summary}} from COMMAND (and COMMAND DOCS)."""
    c = _Conn(port)
    try:
        table = {}
        for row in c.call("COMMAND"):
            name = _s(row[0]).upper()
            cats = list(row[6]) if len(row) > 6 else []
            if len(row) > 9 and row[9]:  # a container (OBJECT, XINFO): its subcommands' too
                cats += sorted({c for sub in row[9] for c in sub[6]})
            table[name] = {
                "arity": row[1],
                "flags": sorted(_s(f) for f in row[2]),
                "keys": (row[3], row[4], row[5]),
                "categories": [_s(x).lstrip("@") for x in cats],
                "summary": "",
            }
        if docs:
            d = c.call("COMMAND", "DOCS")
            for i in range(0, len(d), 2):
                name, fields = _s(d[i]).upper(), d[i + 1]
                for j in range(0, len(fields), 2):
                    if _s(fields[j]) == "summary" and name in table:
                        table[name]["summary"] = _s(fields[j + 1])
        return table
    finally:
        c.close()


def stated_differences(path=DIFFS_DOC):
    """Command names bolded at the start of a bullet in docs/kv.md's "Differences from Redis"."""
    names, inside = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                inside = line.strip().lower().startswith("### differences from redis")
                continue
            m = re.match(r"- \*\*([^*]+)\*\*", line) if inside else None
            if m:
                for word in re.findall(r"[A-Z][A-Z0-9.|_-]+", m.group(1)):
                    names.add(word.split("|")[0])
    return names


def family(name, redis_row):
    if redis_row is None:
        return KEEL_ONLY
    cats = redis_row["categories"]
    for cat, title in FAMILIES:
        if cat in cats:
            return title
    return OTHER


def _keys(k):
    first, last, step = k
    if first == 0:
        return "-"
    return f"{first} {last} {step}"


def _cell(text):
    return text.replace("|", "\\|")


def render(keel, redis, differences):
    """The whole page, as a string."""
    groups = {}
    for name, row in keel.items():
        groups.setdefault(family(name, redis.get(name)), []).append(name)
    order = [t for _, t in FAMILIES] + [OTHER, KEEL_ONLY]
    same = sum(
        1
        for n, r in keel.items()
        if n in redis and r["arity"] == redis[n]["arity"] and r["keys"] == redis[n]["keys"]
    )
    shared = sum(1 for n in keel if n in redis)
    out = [
        "# keel's commands",
        "",
        "Generated by `tests/system/commands_doc.py` from keel's command table (COMMAND and",
        "COMMAND DOCS of a running keel server) and redis-server 7.0's COMMAND; do not edit by",
        "hand. `tests/system/test_commands_doc.py` fails when this page no longer matches the",
        "table; `/usr/bin/python3 tests/system/commands_doc.py --keel build/keel` rewrites it.",
        "",
        f"keel has {len(keel)} commands: {shared} that Redis 7.0 has ({same} of them with the same",
        f"arity and key positions) and {len(keel) - shared} of its own. Where a reply differs from",
        "Redis's by design, docs/kv.md's \"Differences from Redis\" says how (the differential",
        "test, tests/system/test_redis_diff.py, compares everything else byte for byte); the",
        "last column points there.",
        "",
        "Columns: arity as COMMAND gives it (n: exactly n words with the name; -n: at least n),",
        "flags, key positions (first last step), and the Redis 7.0 comparison.",
    ]
    for title in order:
        names = sorted(groups.get(title, []))
        if not names:
            continue
        out += ["", f"## {title}", "", "| Command | Arity | Flags | Keys | What it does | Redis 7.0 |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for n in names:
            r, rr = keel[n], redis.get(n)
            if rr is None:
                cmp = "keel only"
            else:
                notes = []
                if rr["arity"] != r["arity"]:
                    notes.append(f"arity {rr['arity']} there")
                if rr["keys"] != r["keys"]:
                    notes.append(f"keys {_keys(rr['keys'])} there")
                cmp = "same" if not notes else "; ".join(notes)
                if n in differences:
                    cmp += " (differences: docs/kv.md)"
            out.append(
                f"| `{n}` | {r['arity']} | {' '.join(r['flags'])} | {_keys(r['keys'])} | "
                f"{_cell(r['summary'])} | {cmp} |"
            )
    missing = {}
    for n, rr in redis.items():
        if n not in keel:
            missing.setdefault(family(n, rr), []).append(n)
    out += ["", "## Redis 7.0 commands keel does not have", ""]
    if not missing:
        out.append("None.")
    for title in order:
        names = sorted(missing.get(title, []))
        if names:
            out.append(f"- **{title}** ({len(names)}): " + ", ".join(f"`{x}`" for x in names))
    return "\n".join(out) + "\n"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keel", default=os.path.join(ROOT, "build", "keel"))
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "commands.md"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="keel-cmddoc-")
    procs = []
    try:
        kp, hp, pp, rp = (_free_port() for _ in range(4))
        procs.append(subprocess.Popen(
            [a.keel, "server", "--name", "n1", "--data-dir", os.path.join(tmp, "k"),
             "--listen-client", f"127.0.0.1:{kp}", "--listen-http", f"127.0.0.1:{hp}",
             "--initial-cluster", f"n1=127.0.0.1:{pp}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        procs.append(subprocess.Popen(
            [a.redis_server, "--port", str(rp), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        _wait_port(kp, procs[0])
        _wait_port(rp, procs[1])
        page = render(collect(kp), collect(rp, docs=False), stated_differences())
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote {a.out}")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
