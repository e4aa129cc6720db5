"""lincheck_history.py - record operation histories for keel-lincheck (docs/lincheck.md).

A system test that drives a server with concurrent clients records each
operation's invocation and completion here, then asks keel-lincheck whether the
server behaved like one register per key:

    h = History()
    with h.op(process=3, f="write", key="k1", value="v7") as o:
        client.set("k1", "v7")          # raises -> recorded as "info" (unknown)
        o.ok()
    with h.op(process=4, f="read", key="k1") as o:
        o.ok(client.get("k1"))          # the value read (None = absent)
    with h.op(process=5, f="cas", key="k1", value=["v7", "v8"]) as o:
        o.ok(result=swapped)            # or o.fail() if it surely did not happen
    verdict = h.check(build_dir)        # {"verdict": "linearizable", ...}

An operation left open when its block raises is recorded as "info": it may or
may not have taken effect (a timeout, a lost connection). Use o.fail() only
when the operation surely did not take effect (e.g. the server refused it
before doing anything). Times are time.monotonic_ns() taken under one lock, so
the file is in time order and safe to fill from many threads.

simulate() makes histories of a real linearizable register (and corrupt()
breaks one), for testing the checker itself.
"""

import json
import os
import random
import subprocess
import threading
import time


class Op:
    """One open operation; complete it with ok(), fail() or info() exactly once."""

    def __init__(self, history, process, f, key, value):
        self.h, self.process, self.f, self.key, self.value = history, process, f, key, value
        self.done = False

    def _complete(self, type_, value, result=None):
        assert not self.done, "operation completed twice"
        self.done = True
        extra = {} if result is None else {"result": bool(result)}
        self.h._event(self.process, type_, self.f, self.key, value, **extra)

    def ok(self, value=None, result=None):
        """Completed: for a read, value is what was read; for a cas, result says if it swapped."""
        if self.f == "cas" and result is None:
            raise ValueError("a cas completion needs result=True or False")
        self._complete("ok", value if self.f == "read" else self.value, result)

    def fail(self):
        """Surely did not take effect."""
        self._complete("fail", self.value)

    def info(self):
        """May or may not have taken effect."""
        self._complete("info", self.value)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self.info()
        return False


class History:
    """A thread-safe recorder of invoke/complete events in time order."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def _event(self, process, type_, f, key, value, **extra):
        with self.lock:
            e = {"process": process, "type": type_, "f": f, "key": key, "value": value}
            e.update(extra)
            e["time"] = time.monotonic_ns()
            self.events.append(e)

    def op(self, process, f, key, value=None):
        """Records the invocation now; returns the Op to complete (a context manager)."""
        if f not in ("read", "write", "cas"):
            raise ValueError(f"f must be read, write or cas, not {f!r}")
        self._event(process, "invoke", f, key, value)
        return Op(self, process, f, key, value)

    def write(self, path):
        write_events(path, self.events)

    def check(self, build_dir, path=None, extra_args=()):
        """Writes the history and runs keel-lincheck --json on it; returns its JSON result
        with "exit" (0 linearizable, 1 not, 2 bad input or gave up) added."""
        path = path or os.path.join(build_dir, f"history-{os.getpid()}-{id(self)}.jsonl")
        self.write(path)
        return run_lincheck(build_dir, path, extra_args)


def write_events(path, events):
    with open(path, "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


def run_lincheck(build_dir, path, extra_args=(), timeout_s=300):
    r = subprocess.run(
        [os.path.join(build_dir, "keel-lincheck"), "--json", *extra_args, path],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    out = json.loads(r.stdout) if r.stdout.strip() else {"verdict": "error", "stderr": r.stderr}
    out["exit"] = r.returncode
    return out


def simulate(n, keys=10, clients=16, seed=1, info_rate=0.01):
    """Events of n operations by `clients` sequential clients on a linearizable register
    per key: each op takes effect at a random instant inside its interval. A fraction
    info_rate ends as "info" (half of those took effect). Values are unique strings."""
    rnd = random.Random(seed)
    clock = [0] * clients
    ops = []
    last = {}
    for i in range(n):
        c, k = rnd.randrange(clients), f"k{rnd.randrange(keys)}"
        t0 = clock[c] + rnd.randint(1, 50)  # after this client's previous completion
        t1 = t0 + rnd.randint(1, 300) * (20 if rnd.random() < 0.02 else 1)
        clock[c] = t1
        f = rnd.choice(["read", "read", "write", "cas"])
        value = f"v{i}"
        if f == "cas":
            value = [last.get(k), value]
        if f != "read":
            last[k] = f"v{i}"
        info = rnd.random() < info_rate
        applies = not info or rnd.random() < 0.5
        ops.append(
            {"c": c, "k": k, "f": f, "value": value, "t0": t0, "t1": t1, "info": info,
             "applies": applies, "at": rnd.randint(t0, t1)}
        )
    reg = {}
    for _, o in sorted(enumerate(ops), key=lambda io: (io[1]["at"], io[0])):
        if not o["applies"]:
            continue
        cur = reg.get(o["k"])
        if o["f"] == "read":
            o["read"] = cur
        elif o["f"] == "write":
            reg[o["k"]] = o["value"]
        else:
            o["result"] = cur == o["value"][0]
            if o["result"]:
                reg[o["k"]] = o["value"][1]
    events = []
    for o in ops:
        inv = {"process": o["c"], "type": "invoke", "f": o["f"], "key": o["k"],
               "value": None if o["f"] == "read" else o["value"], "time": o["t0"]}
        done = dict(inv, time=o["t1"], type="info" if o["info"] else "ok")
        if not o["info"] and o["f"] == "read":
            done["value"] = o["read"]
        if not o["info"] and o["f"] == "cas":
            done["result"] = o["result"]
        events += [inv, done]
    events.sort(key=lambda e: (e["time"], e["type"] != "invoke"))
    return events


def corrupt(events):
    """Makes one ok read in the second half return a value overwritten before it began.
    Returns (events, index of the changed completion event) or (events, None)."""
    start = {}
    spans = []  # (key, value written, invoke time, completion time) of ok writes
    for e in events:
        if e["type"] == "invoke":
            start[e["process"]] = e
        elif e["type"] == "ok" and e["f"] == "write":
            spans.append((e["key"], e["value"], start[e["process"]]["time"], e["time"]))
    reads = [i for i, e in enumerate(events) if e["type"] == "ok" and e["f"] == "read"]
    for i in reads[len(reads) // 2:][: 1000]:
        e = events[i]
        t_inv = None
        for j in range(i, -1, -1):
            if events[j]["type"] == "invoke" and events[j]["process"] == e["process"]:
                t_inv = events[j]["time"]
                break
        ws = [w for w in spans if w[0] == e["key"] and w[3] < t_inv and w[1] != e["value"]]
        for w in ws:
            if any(x[0] == e["key"] and x[2] > w[3] and x[3] < t_inv for x in spans):
                events[i] = dict(e, value=w[1])
                return events, i
    return events, None
