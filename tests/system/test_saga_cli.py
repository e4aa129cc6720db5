"""test_saga_cli.py - `keel saga list|show` (src/cli/saga_cmd.c, src/tx/saga_view.c) against
orchestrated sagas running in a real keel cluster (keel-saga demo, src/tx/saga.c)."""

import re
import subprocess

from conftest import binary, wait_until
from keelcluster import make_cluster  # noqa: F401 (fixture)

COUNT = 12
FAIL_EVERY = 4  # saga i with i % 4 == 0 is refused at its last step, so compensated


def keel_saga(addrs, *args):
    r = subprocess.run([binary("keel"), "saga", *args, "--addr", addrs], capture_output=True,
                       timeout=30)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def listed(out):
    return {m.group(1): (m.group(2), int(m.group(3)))
            for m in re.finditer(r"^(\S+) (\S+) records=(\d+)$", out, re.M)}


def test_keel_saga_list_and_show_follow_orchestrated_sagas_while_they_run_and_after(
        make_cluster, procs):
    """Twelve three-step sagas with 400 ms per step, three at a time. While they run, `keel saga
    list --state running` names running sagas only, and `keel saga show` of one prints its
    records in order (started first) and `state running`. After the run, `list` gives every
    saga its final state with the totals line, `--state compensated` keeps exactly the refused
    ones, `show` of a compensated saga prints the business failure of step 2 and the
    compensations newest first, and an unknown or malformed id is refused."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    run = procs.start([binary("keel-saga"), "--addr", addrs, "demo", "--prefix", "q",
                       "--count", str(COUNT), "--concurrency", "3", "--fail-every",
                       str(FAIL_EVERY), "--step-delay-ms", "400"])
    run.may_exit = True
    run.read_line(r"^demo running", timeout_s=30)

    running = {}

    def some_running():
        code, out, err = keel_saga(addrs, "list", "--state", "running")
        assert code == 0, err
        running.clear()
        running.update(listed(out))
        return len(running) > 0

    assert wait_until(some_running, timeout_s=20, step_s=0.1), "no saga seen running"
    assert all(st == "running" for st, _ in running.values()), running
    sid = sorted(running)[0]
    code, out, err = keel_saga(addrs, "show", sid)
    assert code == 0, err
    lines = out.splitlines()
    assert re.match(r"^1 \d+ started 0 ", lines[0]), out
    seqs = [int(x.split()[0]) for x in lines[:-1]]
    assert seqs == list(range(1, len(seqs) + 1)), out
    # the saga may have moved on between list and show; it cannot be final with 3 steps of 400 ms
    assert lines[-1] in ("state running", "state compensating"), out

    assert run.wait(120) == 0, run.output()[-3000:]

    code, out, err = keel_saga(addrs, "list")
    assert code == 0, err
    sagas = {k: v for k, v in listed(out).items() if k.startswith("q-")}
    assert len(sagas) == COUNT, out
    for i in range(1, COUNT + 1):
        st, records = sagas[f"q-{i}"]
        if i % FAIL_EVERY == 0:
            assert (st, records) == ("compensated", 7), (i, st, records)
        else:
            assert (st, records) == ("done", 5), (i, st, records)
    n_comp = COUNT // FAIL_EVERY
    assert re.search(rf"^total {COUNT}: done {COUNT - n_comp} compensated {n_comp}$", out,
                     re.M), out

    code, out, err = keel_saga(addrs, "list", "--state", "compensated")
    assert code == 0, err
    assert sorted(listed(out)) == sorted(f"q-{i}" for i in range(FAIL_EVERY, COUNT + 1,
                                                                FAIL_EVERY)), out
    assert out.splitlines()[-1] == f"total {n_comp}: compensated {n_comp}", out

    code, out, err = keel_saga(addrs, "show", f"q-{FAIL_EVERY}")
    assert code == 0, err
    types = [(x.split()[2], x.split()[3]) for x in out.splitlines()[:-1]]
    assert types == [("started", "0"), ("step_done", "0"), ("step_done", "1"),
                     ("step_failed", "2"), ("undone", "1"), ("undone", "0"),
                     ("compensated", "0")], out
    assert re.search(r"^4 \d+ step_failed 2 business \"", out, re.M), out
    assert out.splitlines()[-1] == "state compensated", out

    code, out, err = keel_saga(addrs, "show", "q-999")
    assert code == 1 and "no saga q-999" in err, (code, out, err)
    code, out, err = keel_saga(addrs, "show", "bad id!")
    assert code == 2 and "bad saga id" in err, (code, out, err)
    code, out, err = keel_saga(addrs, "list", "--state", "sleeping")
    assert code == 2 and "--state 'sleeping'" in err, (code, out, err)
