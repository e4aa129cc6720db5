#!/usr/bin/env bash
# bench/streams.sh - streams (issue 15): XADD throughput of keel (3 nodes, 1 node) against
# redis-server with appendfsync always, and memory per 100-byte entry after STREAM_ENTRIES
# (default 1,000,000) XADDs against Redis (INFO memory on both). Same load shape for each:
# redis-benchmark XADD s * f <100 bytes>, all on 127.0.0.1.
# End to end (keel-streambench, tools/streambench): 4 producers to a consumer group of 4
# consumers that XACK every batch, closed loop (messages/s delivered and acknowledged) and
# open loop at E2E_RATE (default 10,000/s; p99 from XADD to delivery), keel 3 nodes (a fresh
# cluster), Redis with appendfsync always and NATS JetStream (3 nodes, R3, its own Go client,
# bench/natsbench; skipped if nats-server or Go is missing); E2E_SECONDS (default 10) each.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/scratch.sh"
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$PWD/$BUILD/keel"
N_ADD=${BENCH_N_XADD:-100000}     # unpipelined XADDs per run
N_PIPE=${BENCH_N_XADD_PIPE:-500000} # pipelined XADDs per run
N_MEM=${STREAM_ENTRIES:-1000000}
E2E_SECONDS=${E2E_SECONDS:-10}
E2E_RATE=${E2E_RATE:-10000}
SB="$PWD/$BUILD/keel-streambench"
tmp=$(keel_scratch bench-streams)
pids=()
cleanup() {
  "$KEEL" down --dir "$tmp/keel3" >/dev/null 2>&1
  "$KEEL" down --dir "$tmp/keel3e" >/dev/null 2>&1
  "$KEEL" down --dir "$tmp/keel1" >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
VAL=$(head -c 100 /dev/zero | tr '\0' 'x')

record() { printf '  %-58s %10s req/s  p99 %8s ms\n' "$1" "$2" "$3"; }
rb() { # port, extra args...: "rps p99"
  local port=$1; shift
  timeout 300 redis-benchmark -p "$port" --csv "$@" XADD bench:s '*' f "$VAL" 2>/dev/null |
    awk -F'","' 'NR==2 {print $2, $7}'
}
start_redis() { # port, log, flags...
  local port=$1 log=$2; shift 2
  redis-server --port "$port" --bind 127.0.0.1 --save '' "$@" --dir "$tmp" --daemonize no \
    > "$tmp/$log" 2>&1 &
  pids+=($!)
  sleep 0.5
}
info() { # port, field
  redis-cli -p "$1" INFO memory | tr -d '\r' | awk -F: -v f="$2" '$1==f {print $2}'
}
# N_MEM XADDs of 100-byte values through pipelines of 1000 (ids from the server's clock)
load() {
  /usr/bin/python3 - "$1" "$N_MEM" <<'PY'
import sys, redis
port, n = int(sys.argv[1]), int(sys.argv[2])
c = redis.Redis(port=port)
v = b"x" * 100
done = 0
while done < n:
    p = c.pipeline(transaction=False)
    for _ in range(min(1000, n - done)):
        p.xadd("mem:s", {"f": v})
    p.execute()
    done += min(1000, n - done)
assert c.xlen("mem:s") == n
PY
}
per_entry() { awk -v a="$1" -v b="$2" -v n="$N_MEM" 'BEGIN { printf "%.1f", (b - a) / n }'; }

echo "== keel server: 3 nodes (keel up)"
"$KEEL" up --nodes 3 --dir "$tmp/keel3" --base-port 26101 --detach >/dev/null || exit 1
read -r k_add k_add99 <<< "$(rb 26101 -c 64 -n "$N_ADD")"
record "keel 3 nodes: XADD, 64 conns, no pipelining" "$k_add" "$k_add99"
read -r k_pipe k_pipe99 <<< "$(rb 26101 -c 50 -P 16 -n "$N_PIPE")"
record "keel 3 nodes: XADD -P 16 -c 50" "$k_pipe" "$k_pipe99"
e2e() { # label, addr, extra args...: one keel-streambench run, its summary lines
  local label=$1 addr=$2; shift 2
  echo "  -- $label"
  timeout 300 "$SB" --addr "$addr" --duration "$E2E_SECONDS" "$@" --json "$tmp/e2e.json" |
    sed 's/^/     /'
}
e2e_fig() { # field of the last run's JSON
  /usr/bin/python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))[sys.argv[2]])" \
    "$tmp/e2e.json" "$1"
}
"$KEEL" down --dir "$tmp/keel3" >/dev/null

# a fresh cluster: the runs above leave 600,000 entries whose snapshots would land here
echo "== end to end, keel 3 nodes: 4 producers -> group of 4 consumers, XACK per batch"
"$KEEL" up --nodes 3 --dir "$tmp/keel3e" --base-port 26401 --detach >/dev/null || exit 1
K3E=127.0.0.1:26401,127.0.0.1:26402,127.0.0.1:26403
e2e "open loop, $E2E_RATE XADD/s" "$K3E" --rate "$E2E_RATE" --pipeline 64
k_e2e_r99=$(e2e_fig e2e_p99_ms); k_e2e_r50=$(e2e_fig e2e_p50_ms)
e2e "closed loop, 16 XADDs in flight per producer" "$K3E" --pipeline 16 --stream bench:e2e2
k_e2e=$(e2e_fig e2e_msgs_per_s); k_e2e99=$(e2e_fig e2e_p99_ms)
"$KEEL" down --dir "$tmp/keel3e" >/dev/null

echo "== keel server: 1 node"
"$KEEL" up --nodes 1 --dir "$tmp/keel1" --base-port 27101 --detach >/dev/null || exit 1
read -r k1_pipe k1_pipe99 <<< "$(rb 27101 -c 50 -P 16 -n "$N_PIPE")"
record "keel 1 node: XADD -P 16 -c 50" "$k1_pipe" "$k1_pipe99"
ks0=$(info 27101 keel_state_bytes); kr0=$(info 27101 used_memory_rss)
load 27101 || exit 1
ks1=$(info 27101 keel_state_bytes); kr1=$(info 27101 used_memory_rss)
"$KEEL" down --dir "$tmp/keel1" >/dev/null

echo "== Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2): appendonly yes, appendfsync always"
start_redis 28101 redis.log --appendonly yes --appendfsync always
read -r r_pipe r_pipe99 <<< "$(rb 28101 -c 50 -P 16 -n "$N_PIPE")"
record "redis, fsync always: XADD -P 16 -c 50" "$r_pipe" "$r_pipe99"
read -r r_add r_add99 <<< "$(rb 28101 -c 64 -n "$N_ADD")"
record "redis, fsync always: XADD, 64 conns, no pipelining" "$r_add" "$r_add99"
echo "== end to end, Redis fsync always: the same load"
e2e "open loop, $E2E_RATE XADD/s" 127.0.0.1:28101 --rate "$E2E_RATE" --pipeline 64
r_e2e_r99=$(e2e_fig e2e_p99_ms); r_e2e_r50=$(e2e_fig e2e_p50_ms)
e2e "closed loop, 16 XADDs in flight per producer" 127.0.0.1:28101 --pipeline 16 --stream bench:e2e2
r_e2e=$(e2e_fig e2e_msgs_per_s); r_e2e99=$(e2e_fig e2e_p99_ms)
redis-cli -p 28101 DEL bench:e2e bench:e2e2 >/dev/null
rm0=$(info 28101 used_memory); rr0=$(info 28101 used_memory_rss)
load 28101 || exit 1
rm1=$(info 28101 used_memory); rr1=$(info 28101 used_memory_rss)

# NATS JetStream (Debian's nats-server, 3 nodes, R3 file storage) with its own Go client
# (bench/natsbench, built here offline from Debian's Go packages), the same load shape.
# JetStream acknowledges a publish before it fsyncs (sync_interval, 2 minutes by default).
n_e2e=n/a; n_e2e99=n/a; n_e2e_r50=n/a; n_e2e_r99=n/a
if command -v nats-server >/dev/null && command -v go >/dev/null &&
  [ -d /usr/share/gocode/src/github.com/nats-io/nats.go ]; then
  echo "== end to end, NATS JetStream $(nats-server --version | awk '{print $NF}'): 3 nodes, R3, file storage"
  (cd bench/natsbench && GOCACHE="$tmp/gocache" GO111MODULE=off GOPATH=/usr/share/gocode \
    go build -o "$tmp/natsbench" .) || exit 1
  routes="nats-route://127.0.0.1:29501, nats-route://127.0.0.1:29502, nats-route://127.0.0.1:29503"
  for i in 1 2 3; do
    printf 'server_name: n%s\nlisten: 127.0.0.1:2940%s\njetstream { store_dir: "%s" }\ncluster {\n  name: bench\n  listen: 127.0.0.1:2950%s\n  routes: [%s]\n}\n' \
      "$i" "$i" "$tmp/nats$i" "$i" "$routes" > "$tmp/nats$i.conf"
    nats-server -c "$tmp/nats$i.conf" > "$tmp/nats$i.log" 2>&1 &
    pids+=($!)
  done
  sleep 2
  NU=nats://127.0.0.1:29401,nats://127.0.0.1:29402,nats://127.0.0.1:29403
  nb() { # label, args...
    local label=$1; shift
    echo "  -- $label"
    timeout 300 "$tmp/natsbench" -url "$NU" -duration "$E2E_SECONDS" "$@" -json "$tmp/e2e.json" |
      sed 's/^/     /'
  }
  nb "open loop, $E2E_RATE publishes/s" -rate "$E2E_RATE" -pipeline 64
  n_e2e_r99=$(e2e_fig e2e_p99_ms); n_e2e_r50=$(e2e_fig e2e_p50_ms)
  nb "closed loop, 16 publishes in flight per producer" -pipeline 16 -stream BENCH2
  n_e2e=$(e2e_fig e2e_msgs_per_s); n_e2e99=$(e2e_fig e2e_p99_ms)
else
  echo "== NATS JetStream: not run (scripts/deps.sh --bench installs nats-server and Go)"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
echo
echo "== memory after $N_MEM XADDs of one 100-byte field (bytes per entry)"
echo "  keel keel_state_bytes (the stream object):  $(per_entry "$ks0" "$ks1")"
echo "  keel used_memory_rss (whole process; the Raft log in memory included): $(per_entry "$kr0" "$kr1")"
echo "  redis used_memory:                          $(per_entry "$rm0" "$rm1")"
echo "  redis used_memory_rss:                      $(per_entry "$rr0" "$rr1")"
echo
echo "== ratios"
echo "  keel 3 XADD -P16 vs redis fsync-always -P16:   $(ratio "$k_pipe" "$r_pipe")   (target >= 0.5x)"
echo "  keel 1 XADD -P16 vs redis fsync-always -P16:   $(ratio "$k1_pipe" "$r_pipe")   (target >= 1x)"
echo "  keel 3 XADD vs redis fsync-always, unpipelined: $(ratio "$k_add" "$r_add")"
echo "  end to end, closed loop (msgs/s delivered + acked): keel 3 $k_e2e (p99 $k_e2e99 ms), redis $r_e2e (p99 $r_e2e99 ms): $(ratio "$k_e2e" "$r_e2e")"
echo "  end to end at $E2E_RATE/s, XADD to delivery: keel 3 p50 $k_e2e_r50 p99 $k_e2e_r99 ms, redis p50 $r_e2e_r50 p99 $r_e2e_r99 ms"
echo "  NATS JetStream 3 nodes R3: closed loop $n_e2e msgs/s (p99 $n_e2e99 ms), at $E2E_RATE/s p50 $n_e2e_r50 p99 $n_e2e_r99 ms; keel 3 vs NATS, closed loop: $(ratio "$k_e2e" "$n_e2e")"
echo "  keel state bytes vs redis used_memory per entry: $(awk -v a="$(per_entry "$ks0" "$ks1")" -v b="$(per_entry "$rm0" "$rm1")" 'BEGIN {printf "%.2fx", a / b}')   (target <= 1.5x)"
