"""stream_check.py - checks a streams nemesis history (stream_nemesis.py) against the issue's
properties, as keel-lincheck checks a KV history. `python3 stream_check.py HISTORY.jsonl`
prints the violations and exits 1 if there are any, 0 if none.

A history is one JSON object per line; every operation carries the process that ran it
("proc") and its invocation and completion times ("t0", "t1", seconds on one monotonic clock:
every client is a thread of one process). An operation whose reply was lost is "info" (it may
or may not have taken effect), one that surely did nothing is "fail".

- {"f": "xadd", "payload", "pid", "seq", "type": ok|fail|info, "id"}: an append; pid/seq for
  an idempotent producer (KEEL.PRODUCER), whose retries after an unknown outcome reuse them.
- {"f": "deliver", "via": read|claim, "id", "payload"}: an entry a consumer received, from
  XREADGROUP '>' (read) or XAUTOCLAIM (claim). Only deliveries whose reply arrived are here;
  one whose reply was lost still counted on the server (the entry is pending, delivery count
  raised), so the checks below never assume every delivery was seen.
- {"f": "count", "id", "count"}: the entry's delivery count, read (XPENDING) after a delivery.
- {"f": "ack"|"nack", "id", "type", "n"}: XACK / KEEL.XNACK of one id; n is the reply (1: it
  was pending and is now acknowledged / returned or dead-lettered; 0: it was not pending).
- {"f": "claim-dead", "id"}: an id in XAUTOCLAIM's third array: it left the PEL for the
  dead-letter stream (nothing is XDELed in this workload).
- {"f": "final", ...}: the state read at the end on a healed cluster: the whole stream
  ([id, payload]), the dead-letter stream ([id, fields]), the PEL ([id, consumer, count]), the
  group's last delivered id, and the configuration (key, group, max_deliveries).

The properties (issue 15, "Proof"), each as a necessary condition a correct server meets
whatever the interleaving; "A before B" means A completed before B was invoked, so every
linearization orders them so:

1. every XADD acknowledged to a producer is in the stream with its payload; nothing is in the
   stream that no producer sent (an append answered "fail" included), and no payload twice
   (an idempotent producer's retry did not append again; plain producers never retry);
   acknowledged XADDs that ran one before the other have increasing ids (an idempotent
   retry runs from its first attempt: it may be answered with that attempt's id).
2. every entry of the stream reached the group: it was delivered (seen by a consumer), is
   still pending, or is in the dead-letter stream; and the group's last delivered id is the
   stream's last id.
3. an XACK that acknowledged an entry (reply 1) is final: nothing delivers, returns or
   acknowledges it afterwards, and it is neither pending nor dead-lettered at the end (a
   claim cannot take it either: claims take only pending entries, and this workload uses no
   XCLAIM FORCE or XGROUP SETID).
4. '>' redelivers an entry only after a KEEL.XNACK returned it: between any delivery of it
   (by '>' or by a claim) and a later '>' delivery there is a NACK (acknowledged or of
   unknown outcome) that may have come in between. Claims need no NACK: they are the
   explicit redelivery.
5. dead letters are exactly the entries that reached the limit: each dead-letter entry names
   this stream and group, an entry of the stream (its fields copied), once, with a delivery
   count of exactly max_deliveries; no entry was delivered more than max_deliveries times;
   one NACKed (reply 1) after its max_deliveries-th delivery, or listed as gone by
   XAUTOCLAIM, is in the dead-letter stream; pending counts are at most the limit.
6. a delivery count read after a delivery is at least the number of deliveries seen before
   that read began, and at most the limit.
"""

import bisect
import json
import sys


def parse_id(s):
    ms, _, seq = s.partition("-")
    return (int(ms), int(seq or 0))


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check(ops):
    """The violations (strings) of the properties above in history `ops`; [] if none."""
    finals = [o for o in ops if o["f"] == "final"]
    if len(finals) != 1:
        return [f"history has {len(finals)} final states, expected 1"]
    fin = finals[0]
    out = []
    by = {}
    for o in ops:
        by.setdefault(o["f"], []).append(o)
    xadds, delivs = by.get("xadd", []), by.get("deliver", [])
    acks, nacks = by.get("ack", []), by.get("nack", [])
    out += _appends(xadds, fin)
    out += _reached_group(delivs, fin)
    out += _acks_final(acks, nacks, delivs, fin)
    out += _redeliveries(delivs, nacks)
    out += _dead_letters(delivs, nacks, by.get("claim-dead", []), acks, fin)
    out += _counts(by.get("count", []), delivs, fin)
    return out


def _appends(xadds, fin):
    out = []
    stream = {i: p for i, p in fin["stream"]}
    seen = {}
    for i, p in fin["stream"]:
        if p in seen:
            out.append(f"payload {p} appended twice: {seen[p]} and {i}")
        seen[p] = i
    sent = {o["payload"] for o in xadds if o["type"] != "fail"}
    failed = {o["payload"] for o in xadds if o["type"] == "fail"} - sent
    for i, p in fin["stream"]:
        if p in failed:
            out.append(f"entry {i} ({p}) is in the stream, but its XADD surely failed")
        elif p not in sent:
            out.append(f"entry {i} ({p}) is in the stream, but no producer sent it")
    oks = [o for o in xadds if o["type"] == "ok"]
    for o in oks:
        if o["id"] not in stream:
            out.append(f"acknowledged XADD {o['payload']} -> {o['id']} is not in the stream")
        elif stream[o["id"]] != o["payload"]:
            out.append(f"acknowledged XADD {o['payload']} -> {o['id']}, but {o['id']} holds "
                       f"{stream[o['id']]}")  # fmt: skip
    # real-time order: sweep invocations in order, keeping the largest id among the appends
    # that completed before. An idempotent producer's retry is answered with the id of the
    # attempt that appended, which may be its first: its invocation is the first attempt's.
    first = {}
    for o in xadds:
        if o.get("pid"):
            k = (o["pid"], o["seq"])
            first[k] = min(first.get(k, o["t0"]), o["t0"])
    start = {id(o): first[(o["pid"], o["seq"])] if o.get("pid") else o["t0"] for o in oks}
    by_end = sorted(oks, key=lambda o: o["t1"])
    ends = [o["t1"] for o in by_end]
    best, best_op, k = None, None, 0
    for o in sorted(oks, key=lambda o: start[id(o)]):
        while k < len(by_end) and ends[k] < start[id(o)]:
            if best is None or parse_id(by_end[k]["id"]) > best:
                best, best_op = parse_id(by_end[k]["id"]), by_end[k]
            k += 1
        if best is not None and parse_id(o["id"]) <= best:
            out.append(f"XADD {o['payload']} -> {o['id']} began after XADD {best_op['payload']} "
                       f"-> {best_op['id']} was acknowledged, but has a smaller id")  # fmt: skip
    return out


def _reached_group(delivs, fin):
    out = []
    stream = {i: p for i, p in fin["stream"]}
    seen = {o["id"] for o in delivs}
    pending = {i for i, _c, _n in fin["pel"]}
    dead = {f.get("keel-id") for _i, f in fin["dlq"]}
    for o in delivs:
        if o["id"] not in stream:
            out.append(f"{o['proc']} was delivered {o['id']}, which is not in the stream")
        elif stream[o["id"]] != o["payload"]:
            out.append(f"{o['proc']} was delivered {o['id']} as {o['payload']}, the stream "
                       f"holds {stream[o['id']]}")  # fmt: skip
    for i, p in fin["stream"]:
        if i not in seen and i not in pending and i not in dead:
            out.append(f"entry {i} ({p}) never reached the group: not delivered, not pending, "
                       "not dead-lettered")  # fmt: skip
    if fin["stream"]:
        last = max(parse_id(i) for i, _p in fin["stream"])
        if parse_id(fin["last_delivered"]) < last:
            out.append(f"the group's last delivered id {fin['last_delivered']} is behind the "
                       f"stream's last entry")  # fmt: skip
    return out


def _ids(ops):
    m = {}
    for o in ops:
        m.setdefault(o["id"], []).append(o)
    return m


def _acks_final(acks, nacks, delivs, fin):
    out = []
    d_by, n_by = _ids(delivs), _ids(nacks)
    pending = {i for i, _c, _n in fin["pel"]}
    dead = {f.get("keel-id") for _i, f in fin["dlq"]}
    done = {}
    for a in acks:
        if a["type"] != "ok" or a["n"] != 1:
            continue
        i = a["id"]
        if i in done:
            out.append(f"{i} acknowledged twice (XACK answered 1 to {done[i]['proc']} and to "
                       f"{a['proc']})")  # fmt: skip
        done[i] = a
        for d in d_by.get(i, []):
            if d["t0"] > a["t1"]:
                out.append(f"{i} was delivered to {d['proc']} ({d['via']}) after {a['proc']}'s "
                           "XACK acknowledged it")  # fmt: skip
        for n in n_by.get(i, []):
            if n["t0"] > a["t1"] and n["type"] == "ok" and n["n"] == 1:
                out.append(f"{i} was NACKed by {n['proc']} (reply 1) after {a['proc']}'s XACK "
                           "acknowledged it")  # fmt: skip
        if i in pending:
            out.append(f"{i} is pending at the end, but {a['proc']}'s XACK acknowledged it")
        if i in dead:
            out.append(f"{i} is in the dead-letter stream, but {a['proc']}'s XACK acknowledged "
                       "it")  # fmt: skip
    return out


def _redeliveries(delivs, nacks):
    out = []
    n_by = _ids(n for n in nacks if n["type"] == "info" or (n["type"] == "ok" and n["n"] == 1))
    for i, ds in _ids(delivs).items():
        ns = n_by.get(i, [])
        for d2 in ds:
            if d2["via"] != "read":
                continue
            for d1 in ds:
                if d1 is d2 or d1["t1"] >= d2["t0"]:
                    continue
                if not any(n["t1"] > d1["t0"] and n["t0"] < d2["t1"] for n in ns):
                    out.append(f"{i} delivered by '>' to {d2['proc']} after its delivery to "
                               f"{d1['proc']} ({d1['via']}) with no NACK in between")  # fmt: skip
                    break
    return out


def _dead_letters(delivs, nacks, claim_dead, acks, fin):
    out = []
    limit, key, group = fin["max_deliveries"], fin["key"], fin["group"]
    stream = {i: p for i, p in fin["stream"]}
    fields = {i: f for i, f in fin.get("stream_fields", [])}
    d_by = _ids(delivs)
    pending = {i: n for i, _c, n in fin["pel"]}
    dead = {}
    for did, f in fin["dlq"]:
        i = f.get("keel-id")
        if f.get("keel-stream") != key or f.get("keel-group") != group:
            out.append(f"dead letter {did} names {f.get('keel-stream')}/{f.get('keel-group')}")
        if i not in stream:
            out.append(f"dead letter {did} is of {i}, which is not in the stream")
            continue
        if i in dead:
            out.append(f"{i} dead-lettered twice ({dead[i][0]} and {did})")
        dead[i] = (did, f)
        if f.get("p") != stream[i] or (i in fields and any(f.get(k) != v for k, v in
                                                           fields[i].items())):  # fmt: skip
            out.append(f"dead letter {did} does not carry {i}'s fields")
        n = int(f.get("keel-deliveries", -1))
        if n != limit:
            out.append(f"{i} dead-lettered after {n} deliveries, the limit is {limit}")
        if i in pending:
            out.append(f"{i} is dead-lettered and still pending")
    for i, ds in d_by.items():
        if len(ds) > limit:
            out.append(f"{i} was delivered {len(ds)} times, more than the limit {limit}")
        if i in pending and len(ds) > pending[i]:
            out.append(f"{i} was delivered {len(ds)} times, its pending count is {pending[i]}")
    for i, n in pending.items():
        if n > limit:
            out.append(f"{i} is pending with {n} deliveries, more than the limit {limit}")
    for nk in nacks:
        ds = sorted(d["t1"] for d in d_by.get(nk["id"], []))
        if nk["type"] == "ok" and nk["n"] == 1 and len(ds) >= limit and nk["t0"] > ds[limit - 1]:
            if nk["id"] not in dead:
                out.append(f"{nk['id']} was NACKed by {nk['proc']} after its {limit}th "
                           "delivery, but is not in the dead-letter stream")  # fmt: skip
    for c in claim_dead:
        if c["id"] not in dead:
            out.append(f"XAUTOCLAIM by {c['proc']} said {c['id']} left for the dead letters, "
                       "but it is not there")  # fmt: skip
    return out


def _counts(counts, delivs, fin):
    out = []
    limit = fin["max_deliveries"]
    ends = {i: sorted(d["t1"] for d in ds) for i, ds in _ids(delivs).items()}
    for c in counts:
        before = bisect.bisect_left(ends.get(c["id"], []), c["t0"])
        if c["count"] < before:
            out.append(f"{c['id']}'s delivery count read by {c['proc']} is {c['count']}, but "
                       f"{before} deliveries were seen before")  # fmt: skip
        if c["count"] > limit:
            out.append(f"{c['id']}'s delivery count {c['count']} is over the limit {limit}")
    return out


def summary(ops):
    """Counts for the report: what the history exercised."""
    s = {}
    for o in ops:
        f = o["f"]
        if f in ("xadd", "ack", "nack"):
            k = f"{f} {o['type']}" + (f" {o['n']}" if f != "xadd" and o["type"] == "ok" else "")
        elif f == "deliver":
            k = f"deliver {o['via']}"
        else:
            k = f
        s[k] = s.get(k, 0) + 1
    retried = {}
    for o in ops:
        if o["f"] == "xadd" and o.get("pid"):
            retried.setdefault((o["pid"], o["seq"]), []).append(o["type"])
    s["idempotent retries then ok"] = sum(
        1 for ts in retried.values() if len(ts) > 1 and ts[-1] == "ok" and "info" in ts)
    fin = [o for o in ops if o["f"] == "final"]
    if fin:
        s["stream entries"] = len(fin[0]["stream"])
        s["dead letters"] = len(fin[0]["dlq"])
        s["pending at the end"] = len(fin[0]["pel"])
    ids = {}
    for o in ops:
        if o["f"] == "deliver":
            ids[o["id"]] = ids.get(o["id"], 0) + 1
    s["entries delivered more than once"] = sum(1 for n in ids.values() if n > 1)
    return s


def main(argv):
    if len(argv) != 2:
        print("usage: stream_check.py HISTORY.jsonl", file=sys.stderr)
        return 2
    ops = load(argv[1])
    bad = check(ops)
    print(json.dumps(summary(ops), sort_keys=True))
    for b in bad[:100]:
        print(b)
    print(f"{len(bad)} violations" if bad else "ok: every property holds")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
