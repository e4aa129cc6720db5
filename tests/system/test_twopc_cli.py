"""test_twopc_cli.py - `keel 2pc list|show` (src/cli/twopc_cmd.c, src/tx/twopc_view.c) against
two-phase commit decision logs in a real 3-node keel cluster: ones keel-twopc wrote by running
transfers, and hand-written ones left in the states a dead coordinator leaves behind."""

import re
import struct
import subprocess

from conftest import binary, crc32c
from keelcluster import make_cluster  # noqa: F401 (fixture)

BEGIN, COMMIT, ABORT, END = 1, 2, 3, 4
COUNT = 20


def record(rtype, seq, time_ms, data=b""):
    """core/twopc.h's encoding: u32 crc32c of the rest | u8 version 1 | u8 type | u16 0 |
    u32 seq | i64 time_ms | u32 data length | data."""
    rest = struct.pack("<BBHIqI", 1, rtype, 0, seq, time_ms, len(data)) + data
    return struct.pack("<I", crc32c(rest)) + rest


def begin_data(names, payload):
    out = bytes([len(names)])
    for n in names:
        out += bytes([len(n)]) + n.encode()
    return out + payload


def keel_2pc(addrs, *args):
    r = subprocess.run([binary("keel"), "2pc", *args, "--addr", addrs], capture_output=True,
                       timeout=30)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def listed(out):
    return {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^(\S+) (\S+) participants=(\S+)$", out, re.M)}


def test_keel_2pc_list_and_show_read_the_decision_logs(make_cluster, procs, tmp_path):
    """keel-twopc runs 20 transfers. `keel 2pc list` then gives each its outcome (the one
    keel-twopc printed) and both banks, with the totals line; `--state committed` keeps exactly
    the committed ones; `show` of one prints begin (participants, input), commit and end in
    order. Logs written here by hand stand for a coordinator that died after BEGIN (preparing)
    and after ABORT (aborting, with its reason), and one record is garbage: list names it
    damaged and show exits 1 after the good records. An unknown id exits 1, a malformed id or
    state 2."""
    cluster = make_cluster(3)
    addrs = ",".join(f"127.0.0.1:{nd.client_port}" for nd in cluster.nodes)
    d = tmp_path / "banks"
    d.mkdir()
    tool = [binary("keel-twopc"), "--addr", addrs, "--dir", str(d)]
    assert subprocess.run(tool + ["setup", "--accounts", "4", "--balance", "100"],
                          capture_output=True, timeout=60).returncode == 0
    run = subprocess.run(tool + ["run", "--prefix", "v", "--count", str(COUNT), "--seed", "7"],
                         capture_output=True, timeout=120)
    out = run.stdout.decode()
    assert run.returncode == 0, out[-2000:] + run.stderr.decode()[-2000:]
    ends = dict(re.findall(r"^end (v-\d+) (committed|aborted)$", out, re.M))
    assert len(ends) == COUNT, out[-2000:]

    code, out, err = keel_2pc(addrs, "list")
    assert code == 0, err
    got = listed(out)
    assert {k: v for k, v in got.items() if k.startswith("v-")} == {
        tx: (st, "bank-a,bank-b") for tx, st in ends.items()}, out
    n_comm = sum(1 for st in ends.values() if st == "committed")
    want = f"total {COUNT}:" + "".join(f" {st} {n}" for st, n in [
        ("committed", n_comm), ("aborted", COUNT - n_comm)] if n)
    assert out.splitlines()[-1] == want, out

    code, out, err = keel_2pc(addrs, "list", "--state", "committed")
    assert code == 0, err
    assert sorted(listed(out)) == sorted(tx for tx, st in ends.items() if st == "committed"), out
    assert out.splitlines()[-1] == f"total {n_comm}: committed {n_comm}", out

    tx = sorted(tx for tx, st in ends.items() if st == "committed")[0]
    code, out, err = keel_2pc(addrs, "show", tx)
    assert code == 0, err
    lines = out.splitlines()
    assert re.match(r'^1 \d+ begin participants=bank-a,bank-b input="[^"]+"$', lines[0]), out
    assert re.match(r"^2 \d+ commit$", lines[1]), out
    assert re.match(r"^3 \d+ end$", lines[2]), out
    assert lines[3:] == ["state committed"], out

    # what a coordinator that died leaves: BEGIN only; BEGIN and ABORT; and a damaged record
    w = cluster.wait_leader().client()
    names = ["bank-a", "bank-b", "shop"]
    w.xadd("2pc:p-1:log", {"r": record(BEGIN, 1, 1000, begin_data(names, b"x\x01"))}, id="0-1")
    w.xadd("2pc:p-2:log", {"r": record(BEGIN, 1, 1000, begin_data(names, b"y"))}, id="0-1")
    w.xadd("2pc:p-2:log", {"r": record(ABORT, 2, 1500, b"bank-b voted no")}, id="0-2")
    w.xadd("2pc:p-3:log", {"r": record(BEGIN, 1, 1000, begin_data(names, b"z"))}, id="0-1")
    w.xadd("2pc:p-3:log", {"r": b"not a record"}, id="0-2")

    code, out, err = keel_2pc(addrs, "list", "--state", "preparing")
    assert code == 0, err
    assert out.splitlines() == ["p-1 preparing participants=bank-a,bank-b,shop",
                                "total 1: preparing 1"], out
    code, out, err = keel_2pc(addrs, "list", "--state", "aborting")
    assert out.splitlines() == ["p-2 aborting participants=bank-a,bank-b,shop",
                                "total 1: aborting 1"], out
    code, out, err = keel_2pc(addrs, "list")
    assert code == 0, err
    assert re.search(r'^p-3 damaged "entry 1: 2pc record of 12 bytes: out of range"$', out,
                     re.M), out
    counts = "".join(f" {st} {n}" for st, n in [("preparing", 1), ("aborting", 1),
                                                 ("committed", n_comm),
                                                 ("aborted", COUNT - n_comm), ("damaged", 1)]
                     if n)
    assert out.splitlines()[-1] == f"total {COUNT + 3}:{counts}", out

    code, out, err = keel_2pc(addrs, "show", "p-1")
    assert code == 0, err
    assert out.splitlines() == ['1 1000 begin participants=bank-a,bank-b,shop input="x\\x01"',
                                "state preparing"], out
    code, out, err = keel_2pc(addrs, "show", "p-2")
    assert out.splitlines()[1:] == ['2 1500 abort "bank-b voted no"', "state aborting"], out
    code, out, err = keel_2pc(addrs, "show", "p-3")
    assert code == 1 and "entry 1 is damaged" in err, (code, out, err)
    assert out.splitlines()[0].startswith("1 1000 begin "), out
    assert out.splitlines()[1].startswith("entry 1: damaged: "), out

    code, out, err = keel_2pc(addrs, "show", "v-999")
    assert code == 1 and "no 2pc transaction v-999" in err, (code, out, err)
    code, out, err = keel_2pc(addrs, "show", "bad id!")
    assert code == 2 and "bad 2pc id" in err, (code, out, err)
    code, out, err = keel_2pc(addrs, "list", "--state", "prepared")
    assert code == 2 and "--state 'prepared'" in err, (code, out, err)
