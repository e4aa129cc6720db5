#!/usr/bin/env bash
# bench/syncab.sh - one A/B run for WAL sync work: start NODES keel servers, load the leader with
# redis-benchmark, print SET/s, p50/p99, CPU us per request of all keel processes, fsyncs per
# request, the leader's mean fdatasync and commit latency, and (PERF=1) per-request counts
# from `perf stat -p` (block requests, syscalls, futex calls, context switches).
# usage: bench/syncab.sh BIN NODES PORTBASE "REDIS-BENCHMARK ARGS (with -n N)" [server flags...]
# Ports: PORTBASE+i (clients), +100+i (peers), +200+i (HTTP). Alternate binaries back to back.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
BIN=$1; NODES=$2; PB=$3; LOAD=$4; shift 4
D=$(keel_scratch syncab)
cl=""
for i in $(seq 1 "$NODES"); do cl="$cl${cl:+,}n$i=127.0.0.1:$((PB + 100 + i))"; done
pids=()
for i in $(seq 1 "$NODES"); do
  "$BIN" server --name "n$i" --data-dir "$D/n$i" --listen-client "127.0.0.1:$((PB + i))" \
    --listen-http "127.0.0.1:$((PB + 200 + i))" --initial-cluster "$cl" --log-level warn "$@" \
    > "$D/n$i.log" 2>&1 &
  pids+=($!)
done
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
leader=""
for _ in $(seq 1 100); do
  for i in $(seq 1 "$NODES"); do
    r=$(redis-cli -p $((PB + i)) info raft 2>/dev/null | tr -d '\r' | awk -F: '/^role:/{print $2}')
    [ "$r" = leader ] && leader=$i
  done
  [ -n "$leader" ] && break
  sleep 0.2
done
[ -z "$leader" ] && { echo "no leader"; exit 1; }
sleep 0.5
N=$(echo "$LOAD" | sed -n 's/.*-n \([0-9]*\).*/\1/p')
metric_count() { # fdatasyncs: the sync thread's histogram, or the older fsync one
  curl -s "127.0.0.1:$1/metrics" | awk '/^keel_wal_fdatasync_seconds_count/{d=$2}
    /^keel_wal_fsync_seconds_count/{f=$2} END{print (d != "" ? d : f) + 0}'
}
fs() { local s=0; for i in $(seq 1 "$NODES"); do s=$((s + $(metric_count $((PB + 200 + i))))); done; echo $s; }
cpu() { local s=0; for p in "${pids[@]}"; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $s; }
load0=$(cut -d' ' -f1 /proc/loadavg)
f0=$(fs); c0=$(cpu)
if [ -n "${PERF:-}" ]; then
  perf stat -x, -o "$D/perf.txt" -e "${PERFEV:-block:block_rq_issue,raw_syscalls:sys_enter,syscalls:sys_enter_futex,context-switches}" \
    -p "$(IFS=,; echo "${pids[*]}")" & ppid=$!
  sleep 0.3
fi
out=$(timeout 120 redis-benchmark -p $((PB + leader)) -d 100 -r 1000000 --csv $LOAD 2>/dev/null |
  awk -F'","' 'NR==2{print $2, $5, $7}')
c1=$(cpu); f1=$(fs)
pf=""
if [ -n "${PERF:-}" ]; then
  kill -INT $ppid; wait $ppid 2>/dev/null
  pf=$(awk -F, -v n="$N" '$3!=""{printf "%s/op %.3f  ", $3, $1/n}' "$D/perf.txt")
fi
lm=$(curl -s "127.0.0.1:$((PB + 200 + leader))/metrics")
mean_ms() { echo "$lm" | awk -v k="$1" '$1==k"_sum"{s=$2} $1==k"_count"{c=$2}
  END{if (c > 0) printf "%.2f", s/c*1000; else printf "-"}'; }
read -r rps p50 p99 <<< "$out"
awk -v r="$rps" -v p50="$p50" -v p99="$p99" -v c=$((c1 - c0)) -v t="$(getconf CLK_TCK)" -v n="$N" \
  -v f=$((f1 - f0)) -v l="$load0" -v pf="$pf" -v fd="$(mean_ms keel_wal_fdatasync_seconds)" \
  -v cm="$(mean_ms keel_write_commit_seconds)" \
  'BEGIN{printf "rps %s p50 %s p99 %s | cpu %.1f us/op | fsyncs/op %.4f | leader fdatasync %s ms commit %s ms | load %s | %s\n", r, p50, p99, c/t/n*1e6, f/n, fd, cm, l, pf}'
