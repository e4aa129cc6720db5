"""test_saga_nemesis.py - orchestrated sagas (src/tx/saga.c) whose steps are three kit services,
run by two orchestrators at once while the nemesis (nemesis.py) SIGKILLs and restarts keel
nodes, the leader among them, pauses them and cuts them off from each other (the relay:
leader isolated, splits, one-way cuts, flapping links, leadership transfers); one orchestrator is SIGKILLed too, and the
other adopts its sagas. After healing every saga is final as expected, each step's effect is
left exactly once for the done sagas and not at all for the compensated ones (the services'
journals), no marker or lock is left, and every log replays (docs/tx.md, "Proof: the
nemesis")."""

import json
import os
import random
import re
import signal
import struct
import subprocess
import threading
import time
import urllib.request

import nemesis
from conftest import binary, crc32c

STEPS = ["reserve", "charge", "ship"]
COUNT = 1200  # sagas, each run by whichever orchestrator gets its lock first
FAIL_SHIP_EVERY = 4  # input "fail=ship": refused at step 3, compensated
FAIL_CHARGE_EVERY = 7  # input "fail=charge": refused at step 2 (wins where both divide)
STEP_DELAY_MS = 25  # each kit call is made this long after the step begins
CONCURRENCY = 6  # per orchestrator
LOCK_TTL_MS = 3000
NEMESIS_S = 14.0  # faults for this long, then everything is healed
KILL_ORCH_AFTER_S = 3.0  # orchestrator A is SIGKILLed this long into the faults
RESTART_ORCH_AFTER_S = 2.0  # and a new one started this long after
FINAL_WAIT_S = 60.0
FLAKY_PCT = 10  # the reserve service answers 503 to this share (half after doing the work)
# kills, pauses and the partitions the relay can make (clients are never cut: an orchestrator
# keeps talking to an isolated old leader until it steps down)
FAULT_KINDS = ("kill-leader", "kill-follower", "pause-leader", "pause-follower", "isolate-leader",
               "isolate-kill", "split", "one-way", "flap", "transfer")

# core/saga.h's record types
STARTED, BEGUN, STEP_DONE, STEP_FAILED, UNDONE, DONE, COMPENSATED, ATTENTION = range(1, 9)


def seed_from_env():
    return int(os.environ["KEEL_SEED"]) if "KEEL_SEED" in os.environ else random.randrange(1 << 30)


def want_failure(i):
    """The step index at which saga i is refused by its service, or None."""
    if i % FAIL_CHARGE_EVERY == 0:
        return 1
    if i % FAIL_SHIP_EVERY == 0:
        return 2
    return None


def fault_schedule(seed):
    """nemesis.schedule's seeded faults of FAULT_KINDS, the first a leader kill, the second a
    pause and the third the leader cut off from its peers, so each run has all three."""
    sched = [f for f in nemesis.schedule(seed, 3, "relay") if f[0] in FAULT_KINDS]
    first = [next(f for f in sched if f[0] == "kill-leader")]
    first.append(next(f for f in sched if f[0].startswith("pause")))
    first.append(next(f for f in sched if f[0] == "isolate-leader"))
    for f in first:
        sched.remove(f)
    return first + sched


class Orchestrator:
    """A `keel-saga demo` process; a thread collects its stdout (end lines, the summary)."""

    def __init__(self, name, args, log_path):
        self.name, self.lines = name, []
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log,
                                  start_new_session=True)  # fmt: skip
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.ended_at = None

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
        self.ended_at = time.monotonic()

    def ends(self):
        return sum(1 for x in self.lines if x.startswith("end "))

    def summary(self):
        return next((x for x in self.lines if x.startswith("summary ")), "")

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)
        self.t.join(timeout=5)
        self.log.close()


def decode_record(b):
    """One log record (docs/tx.md, "Log records"): (type, step, seq, data); the CRC and the
    length are checked."""
    crc, version, typ, step, seq, _t, n = struct.unpack_from("<IBBHIqI", b)
    assert crc32c(b[4:]) == crc, "bad crc"
    assert version == 1 and len(b) == 24 + n, (version, len(b), n)
    return typ, step, seq, b[24:]


def expected_records(i, log):
    """The records saga i's log must hold: all three steps done, or the refusal its input
    asks for (the steps before it undone), or, where a step gave up after transient
    failures first, that step and the ones before it undone (it may have applied)."""
    failed = [(s, d[0]) for t, s, _, d in log if t == STEP_FAILED]
    want = want_failure(i)
    if not failed:
        assert want is None, (i, "a refused saga ended done")
        return [(STARTED, 0)] + [(STEP_DONE, k) for k in range(3)] + [(DONE, 0)]
    k, kind = failed[0]
    if kind == 1:  # business: only where the input asks for it
        assert k == want, (i, "refused at", k)
        undo_from = k - 1
    else:
        assert kind == 2 and (want is None or k <= want), (i, k, kind)
        undo_from = k
    return ([(STARTED, 0)] + [(STEP_DONE, j) for j in range(k)] + [(STEP_FAILED, k)] +
            [(UNDONE, j) for j in range(undo_from, -1, -1)] + [(COMPENSATED, 0)])  # fmt: skip


def read_logs(c, prefix):
    """{saga number: [(type, step, seq, data)]} for every saga log of the prefix."""
    logs, cursor = {}, 0
    while True:
        cursor, keys = c.scan(cursor, match=f"saga:{prefix}-*:log", count=1000)
        for k in keys:
            i = int(k.decode().split(":")[1].split("-")[1])
            logs[i] = [decode_record(f[b"r"]) for _, f in c.xrange(k, "-", "+")]
        if int(cursor) == 0:
            return logs


def cli_lines(*args):
    out = subprocess.run(args, capture_output=True, timeout=60)
    assert out.returncode == 0, (args, out.stderr.decode()[-2000:])
    return out.stdout.decode().splitlines()


def test_sagas_of_kit_services_survive_the_nemesis_and_a_killed_orchestrator(tmp_path):
    seed = seed_from_env()
    print(f"\nsaga nemesis seed {seed} (KEEL_SEED={seed} repeats the fault schedule)")
    net = nemesis.make_net("relay", 3)
    cl, orchs, services = None, [], []
    try:
        net.setup()
        cl = nemesis.make_cluster(binary("keel"), str(tmp_path), net)
        cl.start()
        cl.wait_leader(timeout_s=nemesis.RECOVER_WAIT_S)
        addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cl.nodes)
        ports = {}
        for i, step in enumerate(STEPS):
            flaky = ["--flaky-pct", str(FLAKY_PCT)] if step == "reserve" else []
            p = subprocess.Popen([binary("keel-example-ledger"), "--listen", "127.0.0.1:0",
                                  "--name", step, "--seed", str(seed + i), *flaky],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
            services.append(p)
            m = None
            while m is None:
                line = p.stdout.readline()
                assert line, f"{step} did not start"
                m = re.search(rb"listening on port (\d+)", line)
            ports[step] = int(m.group(1))
        http = ",".join(f"127.0.0.1:{ports[s]}" for s in STEPS)

        def orchestrator(name, first):
            args = [binary("keel-saga"), "--addr", addrs, "demo", "--prefix", "g", "--count",
                    str(COUNT), "--concurrency", str(CONCURRENCY), "--from", str(first),
                    "--fail-every", str(FAIL_SHIP_EVERY), "--fail-charge-every",
                    str(FAIL_CHARGE_EVERY), "--step-delay-ms", str(STEP_DELAY_MS),
                    "--lock-ttl-ms", str(LOCK_TTL_MS), "--scan-ms", "300", "--http", http]
            o = Orchestrator(name, args, str(tmp_path / f"{name}.log"))
            orchs.append(o)
            return o

        # two orchestrators on the same sagas, starting at opposite ends
        a, b = orchestrator("A", 1), orchestrator("B", COUNT // 2 + 1)
        nem = nemesis.Nemesis(cl, net, seed)
        faults_done = threading.Event()
        under_load = []  # the faults that began while sagas ran

        def sagas_ended():
            ended = all(o.p.poll() is not None for o in orchs if o is not a)
            if not ended:
                under_load.append(len(nem.done))
            return ended

        def faults():
            try:
                nem.run(fault_schedule(seed), NEMESIS_S, stop=sagas_ended)
            finally:
                nem.heal_all()
                faults_done.set()

        t0 = time.monotonic()
        ft = threading.Thread(target=faults, daemon=True)
        ft.start()
        time.sleep(KILL_ORCH_AFTER_S)
        a_ends = a.ends()
        a.p.send_signal(signal.SIGKILL)
        a.p.wait(timeout=10)
        a_kill_t = time.monotonic() - t0
        time.sleep(RESTART_ORCH_AFTER_S)
        a2 = orchestrator("A2", 1)
        ft.join(timeout=NEMESIS_S + 3 * nemesis.RECOVER_WAIT_S)
        assert faults_done.is_set(), "the nemesis did not finish"
        healed_t = time.monotonic()
        for o in (b, a2):
            o.p.wait(timeout=FINAL_WAIT_S)
            o.t.join(timeout=10)
        final_t = max(o.ended_at for o in (b, a2))
        for o in (b, a2):
            assert o.p.returncode == 0, (o.name, o.lines[-5:], open(o.log.name).read()[-3000:])
        nem.check_crashes()
        assert not nem.crashed, "keel nodes crashed:\n" + "\n".join(nem.crashed)

        leader = cl.wait_leader(timeout_s=nemesis.RECOVER_WAIT_S)
        c = leader.client(socket_timeout=10)

        # no lock left: each saga's lock is free (taken here for 1 ms to see it)
        pipe = c.pipeline(transaction=False)
        for i in range(1, COUNT + 1):
            pipe.execute_command("KEEL.LOCK", f"saga:g-{i}", 1)
        held = [i + 1 for i, v in enumerate(pipe.execute()) if v is None]
        assert held == [], f"locks still held: {held[:20]}"

        # every saga final as its input says, its log exactly the records it must hold
        logs = read_logs(c, "g")
        missing = set(range(1, COUNT + 1)) - set(logs)
        assert not missing and len(logs) == COUNT, f"sagas without a log: {sorted(missing)[:20]}"
        states, gave_up = {}, 0
        for i, log in logs.items():
            got = [(t, s) for t, s, _, _ in log]
            assert [q for _, _, q, _ in log] == list(range(1, len(log) + 1)), (i, got)
            assert got == expected_records(i, log), (i, got)
            gave_up += any(t == STEP_FAILED and d[0] == 2 for t, _, _, d in log)
            states[i] = "done" if got[-1][0] == DONE else "compensated"

        # the CLIs agree with the logs: keel saga list and keel-saga list, line for line
        listed = [x for x in cli_lines(binary("keel-saga"), "--addr", addrs, "list")
                  if x.startswith("g-")]  # fmt: skip
        listed_cli = [x for x in cli_lines(binary("keel"), "saga", "list", "--addr", addrs)
                      if x.startswith("g-")]  # fmt: skip
        assert listed == listed_cli
        assert len(listed) == COUNT
        for line in listed:
            m = re.match(r"^g-(\d+) (\S+) records=(\d+)$", line)
            assert m, line
            i = int(m.group(1))
            assert (m.group(2), int(m.group(3))) == (states[i], len(logs[i])), (line, states[i])
        shown = sorted(random.Random(seed).sample(range(1, COUNT + 1), 20))
        for i in shown:
            out = cli_lines(binary("keel"), "saga", "show", f"g-{i}", "--addr", addrs)
            assert out[-1] == f"state {states[i]}", (i, out)
            assert [int(x.split()[0]) for x in out[:-1]] == list(range(1, len(logs[i]) + 1))

        # no saga left in the index of open sagas (the hash saga:open)
        markers = [k for k in c.hkeys("saga:open") if k.startswith(b"g-")]
        assert markers == [], markers

        # the services' journals: each effect applied at most once, undone at most once,
        # and left exactly for the done sagas (net zero for the compensated ones)
        done = {i for i, st in states.items() if st == "done"}
        for step in STEPS:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[step]}/journal", timeout=5) as f:
                j = json.load(f)
            applied, undone = j["applied"], j["undone"]
            assert len(applied) == len(set(applied)), f"{step} applied twice"
            assert len(undone) == len(set(undone)), f"{step} undone twice"
            assert set(undone) <= set(applied), f"{step}: an undo without its action"
            left = set(applied) - set(undone)
            want = {f"g-{i}:{step}:do" for i in done}
            assert left == want, \
                f"{step}: left {sorted(left - want)[:5]} missing {sorted(want - left)[:5]}"

        # the run exercised what it is about
        kills = [x for x in nem.done if "SIGKILL" in x]
        pauses = [x for x in nem.done if "SIGSTOP" in x]
        cuts = [x for x in nem.done if "isolate" in x or "split" in x or "one-way" in x or
                "flap" in x]  # fmt: skip
        assert any("kill-leader" in x for x in kills) and pauses and cuts, nem.done
        adopted = sum(int(re.search(r"adopted (\d+)", o.summary()).group(1)) for o in (b, a2))
        fenced = sum(int(re.search(r"fenced (\d+)", o.summary()).group(1)) for o in (b, a2))
        retried = sum(int(re.search(r"retried (\d+)", o.summary()).group(1)) for o in (b, a2))
        # the leader kill, the pause and the cut (the schedule's first three) began while
        # sagas ran
        assert len(under_load) >= 3, f"the sagas ended before the faults: {nem.done}"
        n_comp = sum(st == "compensated" for st in states.values())
        print("\n".join(nem.done))
        print(f"orchestrator A SIGKILLed at t={a_kill_t:.1f}s after {a_ends} ends, A2 started "
              f"{RESTART_ORCH_AFTER_S}s later")  # fmt: skip
        for o in (b, a2):
            print(f"{o.name}: {o.summary()}")
        print(f"saga nemesis: {COUNT} sagas ({len(done)} done, {n_comp} compensated, "
              f"{gave_up} of them after a step gave up, 0 needs_attention), "
              f"{len(kills)} keel kills, {len(pauses)} pauses, {len(cuts)} partitions "
              f"({len(under_load)} faults begun "
              f"under load), 1 orchestrator kill, "
              f"{adopted} adoptions, {fenced} fenced writes, {retried} log writes retried; "
              f"faults until t={healed_t - t0:.1f}s (healed), every saga final at "
              f"t={final_t - t0:.1f}s ({max(0.0, final_t - healed_t):.1f}s after healing)")
    finally:
        for o in orchs:
            o.stop()
        for p in services:
            p.kill()
            p.wait(timeout=10)
        crashed = cl.teardown() if cl is not None else []
        net.teardown()
        assert not crashed, [nd.name for nd in crashed]
