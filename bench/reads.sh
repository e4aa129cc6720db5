#!/usr/bin/env bash
# bench/reads.sh - where a linearizable GET's CPU goes on a 3-node keel server: GET through
# the leader and through a follower, with CPU per GET and syscalls per GET on every node.
#
# usage: bench/reads.sh [KEEL_BINARY] [-- keel server flags, e.g. --lease-reads 1]
# env:   BASE_PORT (default 26501: clients P..P+2, peers P+100.., HTTP P+200..),
#        N (GETs per run, default 200000), FILL (SETs before, default 50000), TMPDIR,
#        TARGETS (default "leader follower")
#
# Starts three `keel server` processes on 127.0.0.1 (directly, so that server flags can be
# given), fills FILL keys with redis-benchmark, then runs `redis-benchmark -t get -c 64 -d 100
# -r 1000000 -n N` against the leader and against a follower. For each run it prints the
# rate and latency, each node's CPU (utime + stime from /proc/PID/stat) per GET, syscalls per
# GET (perf stat, if perf is there) and peer bytes sent per GET (from /metrics). Bounded:
# two runs of N requests; every process it started is stopped on exit.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
KEEL=${1:-$PWD/build/keel}
shift $(($# > 0 ? 1 : 0))
[ "${1:-}" = "--" ] && shift
BP=${BASE_PORT:-26501}
N=${N:-200000}
FILL=${FILL:-50000}
tmp=$(keel_scratch bench-reads)
pids=()
perfs=()
cleanup() {
  for p in "${perfs[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ic="n1=127.0.0.1:$((BP + 100)),n2=127.0.0.1:$((BP + 101)),n3=127.0.0.1:$((BP + 102))"
for i in 0 1 2; do
  "$KEEL" server --name "n$((i + 1))" --data-dir "$tmp/n$((i + 1))" \
    --listen-client "127.0.0.1:$((BP + i))" --listen-http "127.0.0.1:$((BP + 200 + i))" \
    --initial-cluster "$ic" --log-level warn "$@" 2> "$tmp/n$((i + 1)).log" &
  pids+=($!)
done

role() { redis-cli -p "$1" info raft 2>/dev/null | tr -d '\r' | awk -F: '/^role:/ {print $2}'; }
leader=""
for _ in $(seq 1 100); do
  for i in 0 1 2; do [ "$(role $((BP + i)))" = leader ] && leader=$((BP + i)); done
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader; logs in $tmp" >&2; cat "$tmp"/n*.log >&2; exit 1; }
follower=$BP
[ "$leader" = "$BP" ] && follower=$((BP + 1))
redis-benchmark -p "$leader" -d 100 -r 1000000 -t set -c 64 -n "$FILL" -q > /dev/null 2>&1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peer_bytes() {
  curl -s "127.0.0.1:$1/metrics" | awk '/^keel_peer_sent_bytes_total/ {s += $2} END {print s + 0}'
}
HZ=$(getconf CLK_TCK)
SYSCALLS=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait

for target in ${TARGETS:-leader follower}; do
  port=$leader
  [ "$target" = follower ] && port=$follower
  declare -A c0 b0
  for i in 0 1 2; do
    c0[$i]=$(cpu_ticks "${pids[$i]}")
    b0[$i]=$(peer_bytes $((BP + 200 + i)))
  done
  perfs=()
  if command -v perf > /dev/null; then
    for i in 0 1 2; do
      perf stat -x, -e "$SYSCALLS" -p "${pids[$i]}" -o "$tmp/perf.$i" 2> /dev/null &
      perfs+=($!)
    done
    sleep 0.3
  fi
  echo "== GET through the $target (port $port), flags: ${*:-none}, load $(cut -d' ' -f1 /proc/loadavg)"
  timeout 300 redis-benchmark -p "$port" -d 100 -r 1000000 -t get -c 64 -n "$N" --csv 2> /dev/null |
    awk -F'","' '/"GET"/ {printf "  %s GET/s, p50 %s ms, p99 %s ms\n", $2, $5, $7}'
  for p in "${perfs[@]}"; do kill -INT "$p" 2> /dev/null; done
  wait "${perfs[@]}" 2> /dev/null
  perfs=()
  total=0
  for i in 0 1 2; do
    r=$( [ $((BP + i)) = "$leader" ] && echo leader || echo follower)
    us=$(echo "($(cpu_ticks "${pids[$i]}") - ${c0[$i]}) * 1000000 / $HZ / $N" | bc -l)
    total=$(echo "$total + $us" | bc -l)
    bytes=$(echo "($(peer_bytes $((BP + 200 + i)))- ${b0[$i]}) / $N" | bc -l)
    sc=""
    [ -f "$tmp/perf.$i" ] && sc=$(awk -F, -v n="$N" '/sys_enter/ {split($3, a, ":");
      sub("sys_enter_", "", a[2]); sub("sys_enter", "all", a[2]); printf "%s %.2f ", a[2], $1 / n}' "$tmp/perf.$i")
    printf "  n%d %-8s CPU %5.1f us/GET  peer bytes out %5.1f/GET  syscalls/GET: %s\n" \
      $((i + 1)) "$r" "$us" "$bytes" "$sc"
  done
  printf "  all nodes: %.1f us of CPU per GET\n" "$total"
done
