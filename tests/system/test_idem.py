"""test_idem.py - idempotency keys (src/tx/idem.c) through the kit's example service over
HTTP, keys kept in a real keel server: a repeat gets the stored answer and the handler runs
once; the same key with another request 422; a repeat while the first runs 409; keys
expire; a 5xx is not stored; the store outlives the service; no store, no run."""

import http.client
import re
import signal
import threading
import time

from conftest import binary, free_port, wait_port
from keelcluster import make_cluster  # noqa: F401 (fixture)


def start_notes(procs, node, *extra):
    port = free_port()
    p = procs.start([binary("keel-example-notes"), "--listen", f"127.0.0.1:{port}",
                     "--idem", f"127.0.0.1:{node.client_port}", *extra])
    p.read_line(r"listening on port \d+")
    wait_port(port)
    return p, port


def call(port, method, path, body=None, key=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Idempotency-Key": key} if key is not None else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def notes_count(port):
    return int(re.search(rb'"count":(\d+)', call(port, "GET", "/notes")[2]).group(1))


def idem_metric(port, outcome):
    text = call(port, "GET", "/metrics")[2].decode()
    m = re.search(r'keel_idem_requests_total\{service="notes",outcome="%s"\} (\d+)' % outcome,
                  text)
    return int(m.group(1))


def test_a_repeat_gets_the_stored_answer_and_the_handler_runs_once(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    _, port = start_notes(procs, node)
    first = call(port, "POST", "/notes", b"buy milk", key="k-1")
    assert first[0] == 201 and first[2] == b'{"id":"n1"}', first
    assert first[1]["location"] == "/notes/n1" and "idempotent-replayed" not in first[1]
    again = call(port, "POST", "/notes", b"buy milk", key="k-1")
    assert again[0] == 201 and again[2] == first[2], again
    assert again[1]["location"] == "/notes/n1" and again[1]["content-type"] == "application/json"
    assert again[1]["idempotent-replayed"] == "true"
    assert notes_count(port) == 1  # the handler ran once
    # the same key with another body, path or method: 422, nothing runs
    assert call(port, "POST", "/notes", b"buy eggs", key="k-1")[0] == 422
    assert call(port, "POST", "/slow/1", b"buy milk", key="k-1")[0] == 422
    assert notes_count(port) == 1
    # another key is another request; no key: no idempotency at all
    assert call(port, "POST", "/notes", b"buy milk", key="k-2")[2] == b'{"id":"n2"}'
    assert call(port, "POST", "/notes", b"buy milk")[2] == b'{"id":"n3"}'
    assert call(port, "POST", "/notes", b"buy milk")[2] == b'{"id":"n4"}'
    # a key that is no key: 400
    assert call(port, "POST", "/notes", b"x", key="k" * 256)[0] == 400
    assert notes_count(port) == 4
    # a 5xx is not stored: the retry runs the handler again
    assert call(port, "POST", "/notes", b"!fail", key="k-3")[0] == 503
    failed_again = call(port, "POST", "/notes", b"!fail", key="k-3")
    assert failed_again[0] == 503 and "idempotent-replayed" not in failed_again[1]
    assert idem_metric(port, "run") == 4 and idem_metric(port, "replay") == 1
    assert idem_metric(port, "mismatch") == 2 and idem_metric(port, "bad_key") == 1
    # the record in keel server: the fingerprint, status, kept headers, body; a TTL
    c = node.client()
    rec = c.get("idem:notes:k-1")
    assert rec.startswith(b"D ") and rec.endswith(b'\n\n{"id":"n1"}'), rec
    assert b"Location: /notes/n1\n" in rec
    assert 0 < c.pttl("idem:notes:k-1") <= 24 * 3600 * 1000


def test_a_repeat_while_the_first_runs_gets_409_then_the_answer(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    _, port = start_notes(procs, node)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(
        "first", call(port, "POST", "/slow/1200", b"", key="slow-1")))
    t.start()
    time.sleep(0.3)
    busy = call(port, "POST", "/slow/1200", b"", key="slow-1")
    assert busy[0] == 409 and busy[1]["retry-after"] == "1", busy
    # many at once, all refused while the first runs
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        call(port, "POST", "/slow/1200", b"", key="slow-1")[0])) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results == [409] * 8, results
    t.join(10)
    assert got["first"][0] == 200 and got["first"][2] == b"slow done\n"
    done = call(port, "POST", "/slow/1200", b"", key="slow-1")
    assert done[0] == 200 and done[2] == b"slow done\n"
    assert done[1]["idempotent-replayed"] == "true"
    assert idem_metric(port, "run") == 1 and idem_metric(port, "in_progress") == 9


def test_a_key_expires_after_its_ttl(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    _, port = start_notes(procs, node, "--idem-ttl", "1000")
    assert call(port, "POST", "/notes", b"a", key="e-1")[2] == b'{"id":"n1"}'
    time.sleep(0.3)
    assert call(port, "POST", "/notes", b"a", key="e-1")[1].get("idempotent-replayed") == "true"
    time.sleep(1.2)  # past the TTL: the key is free again, the request runs
    again = call(port, "POST", "/notes", b"a", key="e-1")
    assert again[2] == b'{"id":"n2"}' and "idempotent-replayed" not in again[1], again
    assert notes_count(port) == 2


def test_stored_answers_outlive_the_service_and_no_store_means_no_run(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    svc, port = start_notes(procs, node)
    assert call(port, "POST", "/notes", b"a", key="r-1")[2] == b'{"id":"n1"}'
    svc.may_exit = True
    svc.kill()  # SIGKILL: its memory is gone, the stored answer is in keel server
    _, port = start_notes(procs, node)
    replay = call(port, "POST", "/notes", b"a", key="r-1")
    assert replay[2] == b'{"id":"n1"}' and replay[1]["idempotent-replayed"] == "true"
    assert notes_count(port) == 0
    # keel server down: no guarantee can be given, so the handler does not run
    node.kill()
    down = call(port, "POST", "/notes", b"b", key="r-2")
    assert down[0] == 503, down
    assert notes_count(port) == 0
    assert idem_metric(port, "unavailable") == 1


def test_a_claim_that_lands_after_its_request_gave_up_is_withdrawn(make_cluster, procs):
    """keel server stalls (SIGSTOP) longer than the claim's request timeout (2 s): the request
    gets 503, but its claim is still in the server's queue and lands when it resumes. Nobody
    will run the handler for it; left alone, every retry would meet 409 until lock_ms (60 s
    here). The late claim is withdrawn (it is still this claim: its nonce), so a retry soon
    after the server resumes runs, once."""
    node = make_cluster(1).nodes[0]
    _, port = start_notes(procs, node)
    assert call(port, "POST", "/notes", b"warm", key="k-warm")[0] == 201
    node.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        stalled = call(port, "POST", "/notes", b"late", key="k-late")
        assert stalled[0] == 503 and 1.5 < time.monotonic() - t0 < 3.5, stalled
        time.sleep(1.0)
    finally:
        node.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    while True:
        st, _, body = call(port, "POST", "/notes", b"late", key="k-late")
        if st != 409 or time.monotonic() - resumed > 10:
            break
        time.sleep(0.1)
    assert st == 201, (st, body)
    assert time.monotonic() - resumed < 3, "the late claim held the key"
    assert call(port, "POST", "/notes", b"late", key="k-late")[2] == body  # a replay now
    assert notes_count(port) == 2  # warm and late, each once
    text = call(port, "GET", "/metrics")[2].decode()
    assert re.search(r'keel_idem_claims_late_total\{service="notes"\} 1\b', text), text
    assert re.search(r'keel_idem_claims_withdrawn_total\{service="notes"\} 1\b', text), text
