"""test_saga.py - durable sagas (src/tx/saga.c) against a real keel cluster: the orchestrator
(keel-saga demo) is SIGKILLed while sagas run, a new one resumes them from their logs in keel
server, and every saga ends done or compensated with no step applied twice."""

import re
import signal
import subprocess

from conftest import binary
from keelcluster import make_cluster  # noqa: F401 (fixture)

COUNT = 200
FAIL_EVERY = 4
STEPS = ["reserve", "charge", "ship"]


def demo_args(addrs, prefix, *extra):
    return [binary("keel-saga"), "--addr", addrs, "demo", "--prefix", prefix,
            "--count", str(COUNT), "--concurrency", "20", "--fail-every", str(FAIL_EVERY),
            "--step-delay-ms", "30", "--lock-ttl-ms", "1000", "--scan-ms", "300", *extra]


def saga_states(addrs):
    """{id: state} from `keel-saga list`."""
    out = subprocess.run([binary("keel-saga"), "--addr", addrs, "list"], capture_output=True,
                         timeout=30, check=True).stdout.decode()
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) (\S+) records=\d+$", out, re.M)}


def journal(r, prefix, kind, step):
    raw = r.get(f"demo:{prefix}:{kind}:{step}") or b""
    return [x for x in raw.decode().split("\n") if x]


def check_invariant(r, addrs, prefix):
    """Every saga final as expected; each step's effect applied at most once, and left in
    place exactly for the sagas that are done; no unfinished-saga marker left."""
    states = {k: v for k, v in saga_states(addrs).items() if k.startswith(prefix + "-")}
    assert len(states) == COUNT, states
    for i in range(1, COUNT + 1):
        want = "compensated" if i % FAIL_EVERY == 0 else "done"
        assert states[f"{prefix}-{i}"] == want, (i, states[f"{prefix}-{i}"])
    for step in STEPS:
        applied, undone = journal(r, prefix, "applied", step), journal(r, prefix, "undone", step)
        assert len(applied) == len(set(applied)), f"{step} applied twice"
        assert len(undone) == len(set(undone)), f"{step} undone twice"
        assert set(undone) <= set(applied), f"{step}: an undo without its action"
        left = set(applied) - set(undone)
        done = {s for s, st in states.items() if st == "done"}
        assert left == done, f"{step}: effects left {sorted(left - done)} missing {sorted(done - left)}"
    markers = [k for k in r.hkeys("saga:open") if k.startswith(f"{prefix}-".encode())]
    assert markers == [], markers


def test_sagas_survive_their_orchestrator_being_killed_mid_run(make_cluster, procs):
    """200 three-step sagas, every fourth refused at its last step (so compensated), 20 at a
    time with 30 ms per step; the orchestrator is SIGKILLed after 40 have ended, while about
    20 are between steps. A second orchestrator started with the same arguments continues
    each saga from its log (those whose dead owner's lock has not lapsed yet are adopted by
    its scan or retried): all 200 end as expected, no step is applied twice, no compensation
    runs twice, and no unfinished-saga marker is left."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()
    first = procs.start(demo_args(addrs, "k"))
    for _ in range(40):
        first.read_line(r"^end k-\d+ ", timeout_s=30)
    first.signal(signal.SIGKILL)
    first.wait(10)
    states = saga_states(addrs)
    midway = [s for s, st in states.items() if st in ("running", "compensating")]
    assert midway, f"the kill fell between sagas: {states}"

    second = procs.start(demo_args(addrs, "k"))
    second.may_exit = True
    rc = second.wait(90)
    out = second.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + second.output()[-3000:]
    assert re.search(rf"summary done {COUNT - COUNT // FAIL_EVERY} compensated "
                     rf"{COUNT // FAIL_EVERY} needs_attention 0", out), out[-2000:]
    check_invariant(r, addrs, "k")


def test_sagas_survive_the_keel_leader_being_killed_under_them(make_cluster, procs):
    """The same run while the keel leader is SIGKILLed (and restarted) under it: log writes
    whose outcome was lost (-UNKNOWN, -TIMEOUT, a broken connection) are sent again with
    the same entry id, so a record is never written twice nor skipped; every saga still ends
    as expected with every effect applied at most once."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    run = procs.start(demo_args(addrs, "n"))
    run.may_exit = True
    for _ in range(30):
        run.read_line(r"^end n-\d+ ", timeout_s=30)
    leader = cluster.wait_leader()
    leader.kill()
    cluster.wait_leader(among=[nd for nd in cluster.nodes if nd is not leader])
    leader.start()
    rc = run.wait(90)
    out = run.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + run.output()[-3000:]
    r = next(nd for nd in cluster.nodes if nd is not leader).client()
    check_invariant(r, addrs, "n")


def test_a_paused_orchestrator_is_fenced_out_when_it_wakes(make_cluster, procs):
    """An orchestrator is SIGSTOPped with about 20 sagas in flight (it does not renew its
    locks, so nothing warns it on waking); its locks lapse and a second orchestrator takes
    the sagas over and ends all 200. Then the first wakes up and carries on where it was:
    every log write it tries is refused by KEEL.FENCED (its summary counts them), it
    re-locks, finds the sagas ended, and reports their real final states. The invariant
    holds: whatever the paused owner re-sent to the services was answered from their
    idempotency keys."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    r = cluster.nodes[0].client()
    paused = procs.start(demo_args(addrs, "z", "--no-renew"))
    paused.may_exit = True
    for _ in range(40):
        paused.read_line(r"^end z-\d+ ", timeout_s=30)
    paused.p.send_signal(signal.SIGSTOP)
    try:
        other = procs.start(demo_args(addrs, "z", "--no-renew"))
        other.may_exit = True
        rc = other.wait(90)
        out = other.p.stdout.read().decode()
        assert rc == 0, out[-3000:] + other.output()[-3000:]
    finally:
        paused.p.send_signal(signal.SIGCONT)
    rc = paused.wait(60)
    out = paused.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + paused.output()[-3000:]
    m = re.search(r"fenced (\d+)", out)
    assert m and int(m.group(1)) > 0, out[-2000:]
    check_invariant(r, addrs, "z")


def test_sagas_of_kit_calls_to_flaky_services_survive_a_killed_orchestrator(make_cluster, procs):
    """The steps are kit calls (keel_saga_http_step: POST with Idempotency-Key) to three
    keel-example-ledger services, one per step, which answer 503 to 20% of requests, half of
    them after doing the work. The orchestrator is SIGKILLed mid-run and started again. Every
    saga ends done or compensated (every fourth is refused by the ship service); each
    service's journal shows every key applied at most once and undone at most once, and the
    effects left in place are exactly those of the done sagas."""
    import json
    import urllib.request

    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    ports = {}
    for i, step in enumerate(STEPS):
        p = procs.start([binary("keel-example-ledger"), "--listen", "127.0.0.1:0", "--name", step,
                         "--flaky-pct", "20", "--seed", str(i + 1)])
        ports[step] = int(p.read_line(r"listening on port (\d+)").group(1))
    http = ",".join(f"127.0.0.1:{ports[s]}" for s in STEPS)
    args = demo_args(addrs, "h", "--http", http)
    first = procs.start(args)
    for _ in range(40):
        first.read_line(r"^end h-\d+ ", timeout_s=30)
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = procs.start(args)
    second.may_exit = True
    rc = second.wait(90)
    out = second.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + second.output()[-3000:]
    states = {k: v for k, v in saga_states(addrs).items() if k.startswith("h-")}
    assert len(states) == COUNT and set(states.values()) <= {"done", "compensated"}, states
    for i in range(FAIL_EVERY, COUNT + 1, FAIL_EVERY):
        assert states[f"h-{i}"] == "compensated"
    for step in STEPS:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[step]}/journal", timeout=5) as f:
            j = json.load(f)
        applied, undone = j["applied"], j["undone"]
        assert len(applied) == len(set(applied)), f"{step} applied twice"
        assert len(undone) == len(set(undone)), f"{step} undone twice"
        assert set(undone) <= set(applied)
        left = set(applied) - set(undone)
        done = {f"{s}:{step}:do" for s, st in states.items() if st == "done"}
        assert left == done, f"{step}: left {sorted(left - done)[:5]} missing {sorted(done - left)[:5]}"


def test_a_compensation_that_cannot_succeed_ends_as_needs_attention_and_is_listed(
        make_cluster, procs):
    """The charge service's compensation always fails (500). Every fourth saga is refused at
    its ship step; its compensation of charge is retried with backoff until the saga's
    compensation limit (1 s), then the saga ends needs_attention: listed by keel-saga list,
    its log (keel-saga show) ending with a needs_attention record naming the charge step and
    the last failure. The compensation stops there, so reserve is left applied too, for
    a human to see; nothing is compensated or dropped silently."""
    import json
    import urllib.request

    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    ports = {}
    for step in STEPS:
        extra = ["--undo-fails"] if step == "charge" else []
        p = procs.start([binary("keel-example-ledger"), "--listen", "127.0.0.1:0", "--name", step,
                         *extra])
        ports[step] = int(p.read_line(r"listening on port (\d+)").group(1))
    http = ",".join(f"127.0.0.1:{ports[s]}" for s in STEPS)
    count = 40
    run = procs.start([binary("keel-saga"), "--addr", addrs, "demo", "--prefix", "w",
                       "--count", str(count), "--concurrency", "20", "--fail-every",
                       str(FAIL_EVERY), "--http", http, "--compensate-limit-ms", "1000"])
    run.may_exit = True
    rc = run.wait(60)
    out = run.p.stdout.read().decode()
    assert rc == 0, out[-3000:] + run.output()[-3000:]
    # The refused sagas end needs_attention. So may others: the failing compensations open
    # the kit caller's breaker on the charge instance (one caller serves its action and its
    # compensation), after which charge's actions are rejected too, give up, and their own
    # compensation cannot succeed either. Every saga is done or needs attention.
    states = {k: v for k, v in saga_states(addrs).items() if k.startswith("w-")}
    assert len(states) == count and set(states.values()) <= {"done", "needs_attention"}, states
    for i in range(FAIL_EVERY, count + 1, FAIL_EVERY):
        assert states[f"w-{i}"] == "needs_attention", (i, states)
    stuck = sum(st == "needs_attention" for st in states.values())
    assert f"needs_attention {stuck} in" in out, out[-2000:]
    shown = subprocess.run([binary("keel-saga"), "--addr", addrs, "show", "w-4"],
                           capture_output=True, timeout=30).stdout.decode()
    assert re.search(r"step_failed 2 business", shown), shown
    # the last failure's text: the service's 500, or the caller's once its breaker opened
    assert re.search(r"needs_attention 1 \"(.*cannot succeed|no candidate|rejected)", shown), shown
    assert shown.rstrip().endswith("state needs_attention"), shown
    for step in STEPS:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[step]}/journal", timeout=5) as f:
            j = json.load(f)
        assert j["undone"] == [], (step, j["undone"])
        assert len(j["applied"]) == len(set(j["applied"]))
