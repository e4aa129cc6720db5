#!/usr/bin/env bash
# bench/contend.sh - optimistic increments of hot counters under contention, end to end:
# `keel bench kv --workload cas|txn` against a 3-node keel server (keel up), and the txn
# workload (WATCH/GET + MULTI/SET/EXEC) against redis-server with appendfsync always as
# the anchor. Each run checks that the counters moved by exactly the acknowledged
# increments (give or take the indeterminate ones); a failed check fails the script.
# Columns: committed increments/s, commits tried/s, conflicts / tries, latency of a committed
# increment including its retries, age of the oldest increment still retrying at the end
# (a starved client), commits with an unknown outcome. "+backoff1ms": --backoff-ms 1.
# Bounded: every run lasts CONTEND_SECONDS (default 10) seconds plus its drain.
# Env: CONTEND_CLIENTS (default "16 64"), CONTEND_KEYS (default "1 10 1000").
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
SECS=${CONTEND_SECONDS:-10}
CLIENTS=${CONTEND_CLIENTS:-16 64}
KEYS=${CONTEND_KEYS:-1 10 1000}
tmp=$(keel_scratch bench-contend)
redis_pid=""
cleanup() {
  "$KEEL" down --dir "$tmp/keel3" >/dev/null 2>&1
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
rc=0

header() {
  printf '  %-26s %7s %5s %8s %10s %9s %8s %9s %9s %5s  %s\n' "system, workload" clients keys \
    "incr/s" "attempts/s" conflicts "p50 ms" "p99 ms" "oldest ms" indet check
}
run() { # label, workload, clients, keys, addr args...
  local label=$1 w=$2 n=$3 k=$4; shift 4
  local out="$tmp/run.out"
  timeout $((SECS + 60)) "$KEEL" bench kv --workload "$w" --connections "$n" --hot-keys "$k" \
    --duration "$SECS" --key-prefix "$label-$w-$n-$k:" --quiet "$@" > "$out" 2>&1
  local status=$?
  [ $status -ne 0 ] && rc=1
  awk -v label="$label, $w" -v n="$n" -v k="$k" -v status="$status" '
    /increments:/ {incr=$4; gsub(/[(]/,"",incr)}
    /attempts:/ {att=$3; gsub(/[(]/,"",att)}
    /conflicts:/ {conf=$3; gsub(/[(]/,"",conf)}
    /increment latency/ {p50=$7; p99=$9}
    /indeterminate:/ {ind=$2}
    /unfinished:/ {old=$12}
    /check:/ {chk=$NF}
    END {printf "  %-26s %7s %5s %8s %10s %9s %8s %9s %9s %5s  %s\n", label, n, k, incr, att, conf,
         p50, p99, old, ind, (status == 0 ? chk : "FAILED (exit " status ")")}' "$out"
  if [ $status -ne 0 ]; then sed 's/^/    | /' "$out"; fi
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "== keel server: 3 nodes (keel up), clients spread over the nodes; load $(load)"
"$KEEL" up --nodes 3 --dir "$tmp/keel3" --base-port 36001 --detach >/dev/null || exit 1
header
addrs=(--addr 127.0.0.1:36001 --addr 127.0.0.1:36002 --addr 127.0.0.1:36003)
for w in cas txn; do
  for n in $CLIENTS; do
    for k in $KEYS; do run keel3 "$w" "$n" "$k" "${addrs[@]}"; done
  done
  run keel3+backoff1ms "$w" 64 1 "${addrs[@]}" --backoff-ms 1
done
"$KEEL" down --dir "$tmp/keel3" >/dev/null

if command -v redis-server >/dev/null; then
  ver=$(redis-server --version | awk '{print $3}' | cut -d= -f2)
  echo "== Redis $ver: appendonly yes, appendfsync always; load $(load)"
  redis-server --port 36401 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir "$tmp" --daemonize no > "$tmp/redis.log" 2>&1 &
  redis_pid=$!
  sleep 0.5
  header
  for n in $CLIENTS; do
    for k in $KEYS; do run redis "txn" "$n" "$k" --addr 127.0.0.1:36401; done
  done
  run redis+backoff1ms txn 64 1 --addr 127.0.0.1:36401 --backoff-ms 1
fi
exit $rc
