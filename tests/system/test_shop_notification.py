"""test_shop_notification.py - the notification service (apps/shop/notification, reading through
apps/shop/consumer.c) against one keel node: a send that fails on every delivery goes to the
dead-letter stream after --max-deliveries deliveries, with its error, and nothing stays
pending; an event that is not an order's outcome is acknowledged with no send; after the order
stream is deleted under it, the group it creates again has the dead-letter policy too."""
import json
import urllib.request

from conftest import binary, free_port, wait_until
from keelcluster import make_cluster  # noqa: F401 (fixture)

STREAM, GROUP, DLQ = "es:$ce-order", "notifications", "shop.notifications.dlq"


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


def dead_letters(r):
    return r.xrange(DLQ, "-", "+") if r.exists(DLQ) else []


def group(r):
    """The group's XINFO GROUPS row as {name: value}, or None without the stream or group."""
    if not r.exists(STREAM):
        return None
    for g in r.execute_command("XINFO", "GROUPS", STREAM):
        row = dict(zip(g[::2], g[1::2])) if isinstance(g, list) else g
        row = {(k.decode() if isinstance(k, bytes) else k): v for k, v in row.items()}
        if row["name"] in (GROUP, GROUP.encode()):
            return row
    return None


def test_failed_sends_are_dead_lettered_also_after_the_group_is_created_again(make_cluster, procs):
    node = make_cluster(1).nodes[0]
    r = node.client()
    port = free_port()
    p = procs.start([binary("keel-shop-notification"), "--keel", f"127.0.0.1:{node.client_port}",
                     "--listen", f"127.0.0.1:{port}", "--id", "notification-0",
                     "--fail-pct", "100", "--max-deliveries", "2"])
    p.read_line(r"listening on port")
    assert wait_until(lambda: group(r) is not None, timeout_s=10), "no group"

    first = r.xadd(STREAM, {"agg": "order-a1", "type": "confirmed"})
    assert wait_until(lambda: len(dead_letters(r)) == 1, timeout_s=15), stats(port)
    f = dead_letters(r)[0][1]
    assert f[b"agg"] == b"order-a1" and f[b"keel-id"] == first, f
    assert f[b"keel-deliveries"] == b"2" and f[b"keel-error"] == b"mail provider failed", f
    # not an outcome: acknowledged, nothing sent or retried
    r.xadd(STREAM, {"agg": "order-a2", "type": "placed"})
    assert wait_until(lambda: group(r)["pending"] == 0 and stats(port)["skipped"] == 1,
                      timeout_s=10), (group(r), stats(port))
    assert stats(port) == {"sent": 0, "retried": 2, "skipped": 1}

    # the stream (and its group) deleted: the next read meets NOGROUP, and the consumer creates
    # the group again with its dead-letter policy
    r.delete(STREAM)
    second = r.xadd(STREAM, {"agg": "order-b1", "type": "rejected"})
    assert wait_until(lambda: len(dead_letters(r)) == 2, timeout_s=20), (group(r), stats(port))
    f = dead_letters(r)[1][1]
    assert f[b"agg"] == b"order-b1" and f[b"keel-id"] == second, f
    assert f[b"keel-deliveries"] == b"2", f
    assert wait_until(lambda: group(r)["pending"] == 0, timeout_s=10), group(r)
    assert stats(port)["retried"] == 4
    assert p.alive(), p.output()
