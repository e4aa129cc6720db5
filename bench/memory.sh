#!/usr/bin/env bash
# bench/memory.sh - memory per key of each type (issue 19: "within 1.5x of Redis's"), keel
# server (one node) against Debian's redis-server, both fresh for every type.
# MEM_KEYS keys (default 1,000,000) of each type in MEM_TYPES (default all six):
#   string    SET s:<7 digits> <13-byte value>
#   hash      HSET h:<7 digits> with 5 fields f1..f5 of 8-byte values (listpack in Redis)
#   list      RPUSH l:<7 digits> of 5 ten-byte elements (listpack / quicklist in Redis)
#   setstr    SADD t:<7 digits> of 5 ten-byte members (listpack in Redis 7.2, hashtable in 7.0)
#   setint    SADD i:<7 digits> of 5 integers (intset in Redis)
#   zset      ZADD z:<7 digits> of 5 ten-byte members with integer scores (listpack in Redis)
# The same RESP stream (generated once per type) goes through `redis-cli --pipe` to both.
# Measured: INFO memory used_memory before and after the load, divided by MEM_KEYS. Redis's
# is its allocator's count (jemalloc, size classes included); keel's is glibc's mallinfo2
# (bytes handed out, chunk headers and rounding included), which holds everything on the
# heap: the keys, their objects, the key table, the KEEL.WATCH change history (bounded by
# --history-changes-max) and the Raft log's entry index (about 32 bytes per write until a
# snapshot compacts it); not the Raft log's entry bytes, which live in their own mappings
# (runtime/blockmem.h). No snapshot is taken during the load (--snapshot-entries is the
# load's entry count plus a margin): the "snaps" column says whether one was (0 expected).
# Then the "after snap" figure: junk writes (LPUSH of MEM_JUNK_BYTES on a string key: logged,
# refused at apply with WRONGTYPE, so they change no state and leave nothing in the KEEL.WATCH
# history; 1,500 a batch, at most 40 batches) until the entry count and log size call for a
# snapshot, DEL of the junk key, the wait for the snapshot to be taken and compacted into the
# log, and used_memory again, less the
# snapshot image the Raft log then holds for lagging followers (keel_snapshot_disk_bytes:
# one copy of the state, which a node keeps until its next snapshot; Redis keeps none).
# That is keel's steady state after a snapshot: no entry index, no per-write share.
# "failed": the node took no snapshot (keel_snapshot_disk_bytes 0); see bench/RESULTS.md.
# keel_state_bytes (keel's own count of the data, no allocator overhead) and both RSS
# deltas are printed beside it for reference.
# Extra keel server flags: MEM_KEEL_FLAGS (e.g. "--history-changes-max 1"); another keel
# binary: KEEL=/path/to/keel (the figures before a change).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL=${KEEL:-"$PWD/$BUILD/keel"}
N=${MEM_KEYS:-1000000}
TYPES=${MEM_TYPES:-"string hash list setstr setint zset"}
JUNK=${MEM_JUNK_BYTES:-16384}
KPORT=${MEM_KEEL_PORT:-27301}
RPORT=${MEM_REDIS_PORT:-28301}
tmp=$(keel_scratch bench-memory)
rpid=
cleanup() {
  "$KEEL" down --dir "$tmp/keel" >/dev/null 2>&1
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

info() { # port, field
  redis-cli -p "$1" INFO memory | tr -d '\r' | awk -F: -v f="$2" '$1==f {print $2}'
}
# the RESP stream of N keys of one type, to stdout
gen() {
  /usr/bin/python3 - "$1" "$N" <<'PY'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*a):
    b = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        b.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(b)
buf = []
for i in range(n):
    if kind == "string":
        c = cmd("SET", "s:%07d" % i, "value:%07d" % i)
    elif kind == "hash":
        c = cmd("HSET", "h:%07d" % i, *[x for k in range(1, 6) for x in ("f%d" % k, "v%07d" % (i + k))])
    elif kind == "list":
        c = cmd("RPUSH", "l:%07d" % i, *["e%d%08d" % (k, i) for k in range(5)])
    elif kind == "setstr":
        c = cmd("SADD", "t:%07d" % i, *["m%d%08d" % (k, i) for k in range(5)])
    elif kind == "setint":
        c = cmd("SADD", "i:%07d" % i, *[i * 8 + k for k in range(5)])
    elif kind == "zset":
        c = cmd("ZADD", "z:%07d" % i, *[x for k in range(5) for x in (k + 1, "m%d%08d" % (k, i))])
    else:
        sys.exit("unknown type " + kind)
    buf.append(c)
    if len(buf) == 10000:
        out.write(b"".join(buf)); buf = []
out.write(b"".join(buf))
PY
}
load() { # port, file
  timeout 600 redis-cli -p "$1" --pipe < "$2" > "$tmp/pipe.out" 2>&1 || { cat "$tmp/pipe.out"; return 1; }
  grep -q "errors: 0," "$tmp/pipe.out" || { cat "$tmp/pipe.out"; return 1; }
  [ "$(redis-cli -p "$1" DBSIZE)" = "$N" ] || { echo "DBSIZE is not $N"; return 1; }
}
# junk writes until keel reports a snapshot (at most 40 batches of 1,500): 0, or 1 if none came
snapshot() {
  local batch="$tmp/junk.resp" i
  /usr/bin/python3 -c "
import sys
v = b'j' * $JUNK
c = b'*3\r\n\$5\r\nLPUSH\r\n\$9\r\nkeel:junk\r\n\$%d\r\n%s\r\n' % (len(v), v)
sys.stdout.buffer.write(b'*3\r\n\$3\r\nSET\r\n\$9\r\nkeel:junk\r\n\$1\r\nx\r\n' + c * 1500)" > "$batch"
  for i in $(seq 40); do # at most 40 x 1,500 junk writes
    [ "$(snapidx)" != 0 ] && break
    redis-cli -p "$KPORT" --pipe < "$batch" > /dev/null 2>&1
  done
  redis-cli -p "$KPORT" DEL keel:junk > /dev/null
  for i in $(seq 600); do # the child writes it, the loop loads it back and compacts
    [ "$(snapidx)" != 0 ] && { sleep 1; return 0; }
    sleep 0.1
  done
  return 1
}
snapidx() { redis-cli -p "$KPORT" INFO persistence | tr -d '\r' |
  awk -F: '$1=="keel_snapshot_index" {print $2}'; }
per() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }'; }
ratio() { awk -v a="$1" -v b="$2" \
  'BEGIN { if (b > 0 && a ~ /^[0-9.]+$/) printf "%.2fx", a / b; else print "n/a" }'; }

echo "== memory per key after $N keys of each type: bytes/key (INFO memory deltas)"
echo "   keel: $KEEL server, one node; redis: $(redis-server --version | awk '{print $3, $5}'), --save ''"
printf '  %-7s %10s %10s %8s   %12s %10s %10s %6s %10s %8s\n' type keel redis ratio keel_state \
  keel_rss redis_rss snaps keel_after ratio
printf '  %-7s %10s %10s %8s   %12s %10s %10s %6s %10s %8s\n' "" used_mem used_mem keel/redis \
  bytes "" "" "" "snap" keel/redis
rc=0
for t in $TYPES; do
  gen "$t" > "$tmp/$t.resp" || exit 1
  # shellcheck disable=SC2086
  "$KEEL" up --nodes 1 --dir "$tmp/keel" --base-port "$KPORT" --detach -- \
    --snapshot-log-bytes-min 1 --snapshot-entries $((N + 1000)) ${MEM_KEEL_FLAGS:-} \
    >/dev/null || exit 1
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    --daemonize no > "$tmp/redis.log" 2>&1 &
  rpid=$!
  sleep 0.5
  k0=$(info "$KPORT" used_memory); ks0=$(info "$KPORT" keel_state_bytes)
  kr0=$(info "$KPORT" used_memory_rss)
  r0=$(info "$RPORT" used_memory); rr0=$(info "$RPORT" used_memory_rss)
  if load "$KPORT" "$tmp/$t.resp" && load "$RPORT" "$tmp/$t.resp"; then
    k1=$(info "$KPORT" used_memory); ks1=$(info "$KPORT" keel_state_bytes)
    kr1=$(info "$KPORT" used_memory_rss)
    r1=$(info "$RPORT" used_memory); rr1=$(info "$RPORT" used_memory_rss)
    snaps=$(snapidx | awk '{print ($1 > 0 ? "yes" : 0)}')
    after=n/a
    if snapshot; then
      k2=$(info "$KPORT" used_memory)
      held=$(redis-cli -p "$KPORT" INFO persistence | tr -d '\r' |
        awk -F: '$1=="keel_snapshot_disk_bytes" {print $2}')
      # no snapshot file: the attempt failed (the node then waits --snapshot-entries more)
      [ "${held:-0}" -gt 0 ] && after=$(per "$k0" "$((k2 - held))") || after=failed
    fi
    printf '  %-7s %10s %10s %8s   %12s %10s %10s %6s %10s %8s\n' "$t" "$(per "$k0" "$k1")" \
      "$(per "$r0" "$r1")" "$(ratio "$(per "$k0" "$k1")" "$(per "$r0" "$r1")")" \
      "$(per "$ks0" "$ks1")" "$(per "$kr0" "$kr1")" "$(per "$rr0" "$rr1")" "$snaps" "$after" \
      "$(ratio "$after" "$(per "$r0" "$r1")")"
  else
    echo "  $t: load failed"; rc=1
  fi
  "$KEEL" down --dir "$tmp/keel" >/dev/null 2>&1
  rm -rf "$tmp/keel" "$tmp/$t.resp"
  kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; rpid=
done
echo "  (target: keel/redis <= 1.5x for every type)"
exit $rc
