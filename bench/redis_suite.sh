#!/usr/bin/env bash
# bench/redis_suite.sh - redis-benchmark's default suite (issue 19) against keel 1 node, keel
# 3 nodes and Redis with appendfsync always (fsync before the reply: the same durability as
# keel's), in one run, unpipelined and pipelined (-P 16). Prints requests/s per test and the
# ratios keel/Redis (targets: 1 node >= 1x, 3 nodes >= 0.5x). Bounded: a fixed request count
# per test (BENCH_N, default 50000; pipelined runs BENCH_NP, default 200000), each command
# under a timeout.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
N=${BENCH_N:-50000}
NP=${BENCH_NP:-200000}
TESTS=${BENCH_TESTS:-set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset}
tmp=$(keel_scratch bench-redis-suite)
rpid=
cleanup() {
  "$KEEL" down --dir "$tmp/keel1" >/dev/null 2>&1
  "$KEEL" down --dir "$tmp/keel3" >/dev/null 2>&1
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# redis-benchmark --csv: "test","rps","avg","min","p50","p95","p99","max"; one line per test,
# written as "<side>.<mode> TEST rps p99" to $tmp/results
suite() { # side, port
  local side=$1 port=$2 mode pipe n
  for mode in p1 p16; do
    if [ "$mode" = p1 ]; then pipe=1; n=$N; else pipe=16; n=$NP; fi
    timeout 600 redis-benchmark -p "$port" -c 50 -P "$pipe" -n "$n" -d 100 -r 100000 \
      -t "$TESTS" --csv 2>/dev/null |
      awk -F'","' -v who="$side.$mode" 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $7);
        split($1, w, " "); print who, w[1], $2, $7 }' >> "$tmp/results"
  done
}

echo "== Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2): appendonly yes, appendfsync always"
redis-server --port 28101 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
  --dir "$tmp" --daemonize no > "$tmp/redis.log" 2>&1 &
rpid=$!
sleep 0.5
suite redis 28101
kill "$rpid"; wait "$rpid" 2>/dev/null; rpid=

echo "== keel server: 1 node (keel up --nodes 1)"
"$KEEL" up --nodes 1 --dir "$tmp/keel1" --base-port 27101 --detach >/dev/null || exit 1
suite keel1 27101
"$KEEL" down --dir "$tmp/keel1" >/dev/null

echo "== keel server: 3 nodes (keel up --nodes 3), against the leader"
"$KEEL" up --nodes 3 --dir "$tmp/keel3" --base-port 26101 --detach >/dev/null || exit 1
suite keel3 26101
"$KEEL" down --dir "$tmp/keel3" >/dev/null

echo
awk '
  { rps[$1 " " $2] = $3; p99[$1 " " $2] = $4; if (!($2 in seen)) { seen[$2] = 1; order[n++] = $2 } }
  function ratio(a, b) { return (b > 0 && a != "") ? sprintf("%.2fx", a / b) : "n/a" }
  END {
    for (m = 0; m < 2; m++) {
      mode = m ? "p16" : "p1"
      printf "-- %s (%s)\n", m ? "pipelined, -P 16 -c 50" : "unpipelined, -c 50", "requests/s, p99 ms"
      printf "  %-12s %18s %18s %8s %18s %8s\n", "test", "redis always", "keel 1 node", "ratio", "keel 3 nodes", "ratio"
      for (i = 0; i < n; i++) {
        t = order[i]; r = rps["redis." mode " " t]; a = rps["keel1." mode " " t]; b = rps["keel3." mode " " t]
        printf "  %-12s %11.0f %6s %11.0f %6s %8s %11.0f %6s %8s\n", t, r, p99["redis." mode " " t],
          a, p99["keel1." mode " " t], ratio(a, r), b, p99["keel3." mode " " t], ratio(b, r)
      }
    }
  }' "$tmp/results"
echo "  targets: keel 1 node >= 1x Redis always on every test; 3 nodes >= 0.5x"
