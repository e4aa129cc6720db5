"""test_lincheck_cli.py - keel-lincheck on small JSON-lines histories: verdicts, exit codes, output."""

import json
import os
import random
import subprocess

import pytest

from conftest import binary


def ev(process, type_, f, key, value=None, time=None, **extra):
    """One history event as a dict (time omitted when None)."""
    e = {"process": process, "type": type_, "f": f, "key": key, "value": value}
    if time is not None:
        e["time"] = time
    e.update(extra)
    return e


def op(process, f, key, value, t0, t1, result_value=None, type_="ok", **extra):
    """An invocation and its completion. For reads, result_value is what was read."""
    done_value = result_value if f == "read" else value
    return [
        ev(process, "invoke", f, key, value, t0),
        ev(process, type_, f, key, done_value, t1, **extra),
    ]


def write_history(tmp_path, events, name="history.jsonl"):
    path = tmp_path / name
    with open(path, "w") as f:
        for e in events:
            f.write((e if isinstance(e, str) else json.dumps(e)) + "\n")
    return str(path)


def run(args, stdin=None):
    return subprocess.run(
        [binary("keel-lincheck")] + args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def check(tmp_path, events, *flags):
    return run(list(flags) + [write_history(tmp_path, events)])


def test_sequential_history_is_linearizable(tmp_path):
    h = (
        op(1, "write", "k1", "a", 0, 10)
        + op(2, "read", "k1", None, 20, 30, result_value="a")
        + op(1, "cas", "k1", ["a", "b"], 40, 50, result=True)
        + op(2, "read", "k1", None, 60, 70, result_value="b")
        + op(3, "read", "k2", None, 0, 5, result_value=None)
    )
    r = check(tmp_path, h)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("linearizable: 5 operations on 2 keys")


def test_stale_read_is_rejected_with_its_window(tmp_path):
    h = (
        op(1, "write", "k1", "v1", 0, 10)
        + op(1, "write", "k1", "v2", 20, 30)
        + op(2, "read", "k1", None, 40, 50, result_value="v1")
    )
    r = check(tmp_path, h)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'NOT linearizable: key "k1"' in r.stdout
    lines = r.stdout.splitlines()
    # the window is the second write (line 3) and the read (line 5), the read marked
    assert any("lines 3-4" in l and 'write "v2"' in l for l in lines)
    assert any("lines 5-6" in l and 'read -> "v1"' in l and "cannot be placed" in l for l in lines)
    assert not any("lines 1-2" in l for l in lines)


def test_json_output_names_the_window_by_file_line(tmp_path):
    h = (
        op(1, "write", "k1", "v1", 0, 10)
        + op(1, "write", "k1", "v2", 20, 30)
        + op(2, "read", "k1", None, 40, 50, result_value="v1")
    )
    r = check(tmp_path, h, "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["verdict"] == "not_linearizable"
    assert out["key"] == "k1"
    w = out["window"]
    assert w["minimal"] is True
    assert (w["start_time"], w["end_time"]) == (20, 50)
    assert [o["line"] for o in w["ops"]] == [3, 5]
    assert w["ops"][1]["stuck"] is True and w["ops"][1]["value"] == "v1"


def test_lost_write_is_rejected(tmp_path):
    h = op(1, "write", "k", 5, 0, 10) + op(2, "read", "k", None, 20, 30, result_value=None)
    assert check(tmp_path, h).returncode == 1


def test_read_of_unwritten_value_is_rejected(tmp_path):
    h = op(1, "write", "k", "x", 0, 10) + op(2, "read", "k", None, 20, 30, result_value="y")
    assert check(tmp_path, h).returncode == 1


def test_two_cas_from_the_same_value_cannot_both_succeed(tmp_path):
    base = op(1, "write", "k", "a", 0, 10)
    both = (
        base
        + op(2, "cas", "k", ["a", "b"], 20, 40, result=True)
        + op(3, "cas", "k", ["a", "c"], 25, 45, result=True)
    )
    assert check(tmp_path, both).returncode == 1
    one = (
        base
        + op(2, "cas", "k", ["a", "b"], 20, 40, result=True)
        + op(3, "cas", "k", ["a", "c"], 25, 45, result=False)
    )
    assert check(tmp_path, one).returncode == 0


def test_failed_compare_is_a_read_constraint(tmp_path):
    h = op(1, "write", "k", "a", 0, 10) + op(2, "cas", "k", ["a", "b"], 20, 30, result=False)
    assert check(tmp_path, h).returncode == 1


def test_info_write_may_or_may_not_have_happened(tmp_path):
    seen = op(1, "write", "k", "u", 0, 10, type_="info") + op(
        2, "read", "k", None, 20, 30, result_value="u"
    )
    assert check(tmp_path, seen).returncode == 0
    unseen = op(1, "write", "k", "u", 0, 10, type_="info") + op(
        2, "read", "k", None, 20, 30, result_value=None
    )
    assert check(tmp_path, unseen).returncode == 0
    undone = seen + op(2, "read", "k", None, 40, 50, result_value=None)
    assert check(tmp_path, undone).returncode == 1


def test_failed_write_never_happened(tmp_path):
    h = op(1, "write", "k", "f", 0, 10, type_="fail") + op(
        2, "read", "k", None, 20, 30, result_value="f"
    )
    assert check(tmp_path, h).returncode == 1


def test_invocation_without_completion_counts_as_info(tmp_path):
    h = [ev(1, "invoke", "write", "k", "p", 0)] + op(2, "read", "k", None, 20, 30, result_value="p")
    assert check(tmp_path, h).returncode == 0


def test_line_order_is_time_when_no_time_fields(tmp_path):
    h = [
        ev(1, "invoke", "write", "k", "a"),
        ev(1, "ok", "write", "k", "a"),
        ev(2, "invoke", "read", "k"),
        ev(2, "ok", "read", "k", None),
    ]
    assert check(tmp_path, h).returncode == 1
    h[3]["value"] = "a"
    assert check(tmp_path, h).returncode == 0


def test_integer_and_string_values_are_distinct(tmp_path):
    h = op(1, "write", "k", 7, 0, 10) + op(2, "read", "k", None, 20, 30, result_value="7")
    assert check(tmp_path, h).returncode == 1
    h[-1]["value"] = 7
    assert check(tmp_path, h).returncode == 0


def test_reads_history_from_stdin(tmp_path):
    h = op(1, "write", "k", "a", 0, 10) + op(2, "read", "k", None, 20, 30, result_value="a")
    r = run(["-"], stdin="".join(json.dumps(e) + "\n" for e in h))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "events,why",
    [
        (["{not json"], "bad JSON"),
        ([ev(1, "ok", "write", "k", "a", 1)], "no pending invocation"),
        ([ev(1, "invoke", "write", "k", "a", 1), ev(1, "invoke", "write", "k", "b", 2)], "pending"),
        ([ev(1, "invoke", "delete", "k", "a", 1)], '"f" must be'),
        ([ev(1, "invoke", "cas", "k", "a", 1)], "[expected, new]"),
        ([ev(1, "invoke", "write", "k", "a", 5), ev(1, "ok", "write", "k", "a", 4)], "before"),
        ([ev(1, "invoke", "write", "k", "a", 1), ev(1, "ok", "write", "k", "a")], '"time"'),
        ([ev(1, "invoke", "write", "k", "a", 1), ev(1, "ok", "read", "k", "a", 2)], "match"),
    ],
)
def test_bad_input_exits_2_naming_the_line(tmp_path, events, why):
    r = check(tmp_path, events)
    assert r.returncode == 2
    assert why in r.stderr, r.stderr
    assert "history.jsonl:" in r.stderr


def test_usage_errors_exit_2(tmp_path):
    assert run([]).returncode == 2
    assert run(["--steps-max", "x", "f"]).returncode == 2
    assert run([str(tmp_path / "missing.jsonl")]).returncode == 2
    assert run(["--help"]).returncode == 0


def test_gives_up_at_its_limit_with_exit_2(tmp_path):
    # 12 concurrent writes, each read concurrently, and a read of a value nobody wrote
    h = []
    for i in range(12):
        h += [ev(i, "invoke", "write", "k", f"w{i}", 0), ev(100 + i, "invoke", "read", "k", None, 0)]
    h += [ev(99, "invoke", "read", "k", None, 0)]
    for i in range(12):
        h += [ev(i, "ok", "write", "k", f"w{i}", 100), ev(100 + i, "ok", "read", "k", f"w{i}", 100)]
    h += [ev(99, "ok", "read", "k", "nobody", 100)]
    r = check(tmp_path, h, "--states-max", "1000")
    assert r.returncode == 2
    assert r.stdout.startswith('gave up on key "k"')
    assert check(tmp_path, h).returncode == 1


def test_generated_history_passes_and_its_corrupted_copy_fails(tmp_path):
    from lincheck_history import corrupt, run_lincheck, simulate, write_events

    build = os.path.dirname(binary("keel-lincheck"))
    events = simulate(20000, keys=10, clients=16, seed=7)
    path = str(tmp_path / "gen.jsonl")
    write_events(path, events)
    out = run_lincheck(build, path)
    assert out["exit"] == 0, out
    assert out["verdict"] == "linearizable" and out["ops"] == 20000 and out["keys"] == 10

    events, i = corrupt(events)
    assert i is not None
    write_events(path, events)
    out = run_lincheck(build, path)
    assert out["exit"] == 1, out
    assert out["key"] == events[i]["key"]
    assert i + 1 in [o.get("completion_line") for o in out["window"]["ops"]]


def test_history_recorder_with_threads_checks_a_locked_dict(tmp_path):
    import threading

    from lincheck_history import History

    h, store, lock = History(), {}, threading.Lock()

    def client(p):
        rnd = random.Random(p)
        for i in range(300):
            key = f"k{rnd.randrange(3)}"
            f = rnd.choice(["read", "write", "cas"])
            if f == "read":
                with h.op(p, "read", key) as o:
                    with lock:
                        v = store.get(key)
                    o.ok(v)
            elif f == "write":
                with h.op(p, "write", key, f"{p}-{i}") as o:
                    with lock:
                        store[key] = f"{p}-{i}"
                    o.ok()
            else:
                with lock:
                    seen = store.get(key)
                with h.op(p, "cas", key, [seen, f"{p}-{i}"]) as o:
                    with lock:
                        swapped = store.get(key) == seen
                        if swapped:
                            store[key] = f"{p}-{i}"
                    o.ok(result=swapped)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = h.check(os.path.dirname(binary("keel-lincheck")), path=str(tmp_path / "rec.jsonl"))
    assert out["exit"] == 0, out
    assert out["ops"] == 6 * 300


def test_random_event_soup_never_crashes(tmp_path):
    """Random, often invalid, sequences of events: always a verdict or a clean exit 2."""
    rnd = random.Random(2026)
    fs = ["read", "write", "cas", "delete", None]
    types = ["invoke", "ok", "fail", "info", "bogus", None]
    values = [None, "a", "b", 1, 2, ["a", "b"], [None, "a"], [1], {"x": 1}, 1.5, True]
    verdicts = set()
    for n in range(150):
        lines = []
        if n % 2:  # well-formed pairs with random values and outcomes
            for i in range(rnd.randrange(1, 12)):
                f = rnd.choice(["read", "write", "cas"])
                v = rnd.choice([None, "a", "b"]) if f != "cas" else [rnd.choice([None, "a"]), "b"]
                t = 10 * i + rnd.randrange(0, 15)
                kind = rnd.choice(["ok", "ok", "ok", "fail", "info"])
                done = ev(i, kind, f, "k", v if f != "read" else rnd.choice([None, "a", "b"]), t + 5)
                if f == "cas":
                    done["result"] = rnd.random() < 0.5
                lines += [json.dumps(ev(i, "invoke", f, "k", v, t)), json.dumps(done)]
            lines.sort(key=lambda l: json.loads(l)["time"])
        for _ in range(0 if n % 2 else rnd.randrange(1, 30)):
            if rnd.random() < 0.03:
                lines.append(rnd.choice(["", "{", "[]", "null", '{"process":}', "\x00"]))
                continue
            e = {"process": rnd.choice([0, 1, 2, "p", None]), "type": rnd.choice(types),
                 "f": rnd.choice(fs), "key": rnd.choice(["k", 1, None, ["k"]]),
                 "value": rnd.choice(values), "time": rnd.randrange(0, 50)}
            if rnd.random() < 0.3:
                e["result"] = rnd.choice([True, False, 1, None])
            for field in list(e):
                if rnd.random() < 0.05:
                    del e[field]
            lines.append(json.dumps(e))
        path = tmp_path / f"soup{n}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        r = run([str(path)])
        assert r.returncode in (0, 1, 2), (r.returncode, r.stderr, lines)
        verdicts.add(r.returncode)
        if r.returncode == 2:
            assert r.stderr.startswith("keel-lincheck: ") or r.stdout.startswith("gave up")
    assert verdicts == {0, 1, 2}  # the soup reaches the checker, not only the parser
