"""test_cli_usage.py - the keel command's --help, and `keel server` refusing bad values by name."""

import os
import signal
import subprocess
import time

import pytest

from conftest import binary, wait_until


def run(args, cwd=None, timeout_s=10):
    r = subprocess.run([binary("keel"), *args], capture_output=True, timeout=timeout_s, cwd=cwd)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["help"],
        ["server", "--help"],
        ["up", "--help"],
        ["down", "--help"],
        ["status", "--help"],
        ["version", "--help"],
        ["saga", "--help"],
        ["2pc", "--help"],
    ],
)
def test_every_command_answers_help_with_usage_on_stdout_and_status_0(args):
    code, out, err = run(args)
    assert code == 0, out + err
    assert out.startswith("usage: keel"), out
    assert err == "", err


def test_server_help_gives_every_options_value_and_default():
    code, out, _ = run(["server", "--help"])
    assert code == 0
    assert "--name NAME" in out and "--data-dir DIR" in out and "--tick-ms MS" in out
    assert "default: keel-data/n1" in out, out
    assert "an integer in 1..60000; default 50" in out, out
    options = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    assert len(options) > 20, out
    blocks = out.split("\n  --")[1:]
    for b in blocks:  # each option: "--name VALUE", its help, then its default
        assert len(b.splitlines()[0].split()) == 2, b
        assert "default" in b, b


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tick-ms", "abc"], "--tick-ms 'abc': expected an integer in 1..60000"),
        (["--tick-ms", "0"], "--tick-ms '0': expected an integer in 1..60000"),
        (["--tick-ms=-5"], "--tick-ms '-5': expected an integer in 1..60000"),
        (["--log-level", "loud"], "--log-level 'loud': expected one of debug, info, warn, error"),
        (["--lease-reads", "7"], "--lease-reads '7': expected an integer in 0..1"),
        (["--value-bytes-max", "10"], "--value-bytes-max '10': expected a size in 20..512m"),
        (["--wal-segment-bytes", "1k"], "--wal-segment-bytes '1k': expected a size in 64k.."),
        (["--clients-max", "0"], "--clients-max '0': expected an integer in 1..1000000"),
        (["--listen-client", "nowhere"], "--listen-client 'nowhere': expected HOST:PORT"),
        (["--listen-http", "127.0.0.1:70000"], "--listen-http '127.0.0.1:70000': expected HOST:PORT"),
        (["--name", "a=b"], "--name 'a=b': expected 1 to 63 letters"),
        (["--name"], "--name needs a value (NAME)"),
    ],
)
def test_a_bad_value_names_the_flag_the_value_and_what_is_allowed_before_anything_starts(
    tmp_path, args, message
):
    code, out, err = run(["server", *args], cwd=tmp_path)
    assert code == 2, err
    assert err.splitlines() == [f"keel server: {message}"] or (
        len(err.splitlines()) == 1 and err.startswith(f"keel server: {message}")
    ), err
    assert os.listdir(tmp_path) == [], "a refused start wrote to disk"


def test_a_bad_value_in_a_config_file_names_the_file_line_and_key(tmp_path):
    cfg = tmp_path / "n1.yaml"
    cfg.write_text("name: n1\n# a comment\ntick-ms: abc\n")
    code, _, err = run(["server", "--config", str(cfg)], cwd=tmp_path)
    assert code == 2
    assert err == f"keel server: {cfg}:3: tick-ms 'abc': expected an integer in 1..60000\n", err
    cfg.write_text("log-level: loud\n")
    code, _, err = run(["server", "--config", str(cfg)], cwd=tmp_path)
    assert code == 2 and f"{cfg}:1: log-level 'loud': expected one of" in err, err
    assert sorted(os.listdir(tmp_path)) == ["n1.yaml"]


def test_a_server_without_data_dir_logs_the_default_directory_it_writes(tmp_path):
    """No --data-dir: keel-data/n1 under the current directory, said at start."""
    log = tmp_path / "server.log"
    work = tmp_path / "work"
    work.mkdir()
    with open(log, "wb") as f:
        p = subprocess.Popen(
            [binary("keel"), "server", "--listen-client", "127.0.0.1:0",
             "--listen-http", "127.0.0.1:0", "--initial-cluster", "n1=127.0.0.1:0"],
            stdout=f, stderr=f, stdin=subprocess.DEVNULL, cwd=work, start_new_session=True,
        )  # fmt: skip
    try:
        assert wait_until(lambda: b"keel server ready" in log.read_bytes(), timeout_s=10), (
            log.read_text()
        )
        first = log.read_text().splitlines()[0]
        assert '"msg":"data directory"' in first, first
        assert f'"path":"{work}/keel-data/n1"' in first, first
        assert "default (no --data-dir)" in first, first
        assert os.path.isdir(work / "keel-data" / "n1" / "wal")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
