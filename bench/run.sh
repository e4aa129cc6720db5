#!/usr/bin/env bash
# make bench: every benchmark, each against its anchor in the same run where one exists.
# Each part is bounded in time and prints its own table. Results are recorded by hand,
# with the machine and the command, in bench/RESULTS.md.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD 2>/dev/null)"
rc=0
section() { printf '\n==== %s ====\n' "$*"; }

if [ -x "$BUILD/keel-sysprobe" ]; then
  section "what the kernel charges on this machine (keel-sysprobe)"
  "$BUILD/keel-sysprobe" --dir "${TMPDIR:-/tmp}" || rc=1
fi
if [ -x "$BUILD/keel-microbench" ]; then
  section "pure cores: ns per operation (keel-microbench)"
  "$BUILD/keel-microbench" || rc=1
fi
if [ -x "$BUILD/keel-sim" ]; then
  section "raft core and simulator (keel-sim --bench)"
  "$BUILD/keel-sim" --bench 5000000 --batch 1000 || rc=1
fi
if [ -f bench/kv.sh ]; then
  section "keel server vs etcd and Redis"
  bash bench/kv.sh || rc=1
fi
if [ -f bench/redis_suite.sh ]; then
  section "redis-benchmark's suite: keel 1 and 3 nodes vs Redis appendfsync always"
  bash bench/redis_suite.sh || rc=1
fi
if [ -f bench/streams.sh ]; then
  section "streams: XADD vs Redis (appendfsync always), memory per entry vs Redis"
  bash bench/streams.sh || rc=1
fi
if [ -f bench/memory.sh ]; then
  section "memory per key of each type after MEM_KEYS (1,000,000) keys: keel 1 node vs Redis"
  BUILD="$BUILD" bash bench/memory.sh || rc=1
fi
if [ -f bench/mixed.sh ]; then
  section "a pipeline of SET/GET pairs vs the same pipeline of SETs (keel, one connection)"
  bash bench/mixed.sh || rc=1
fi
if [ -f bench/contend.sh ]; then
  section "hot counters under contention: KEEL.CAS and WATCH/MULTI/EXEC (keel vs Redis)"
  bash bench/contend.sh || rc=1
fi
if [ -f bench/registry.sh ]; then
  section "service registry: registrations/s, one change to 1,000 and 10,000 blocked watchers"
  bash bench/registry.sh || rc=1
fi
if [ -f bench/tx.py ]; then
  section "transactional outbox relay rows/s, idempotency key cost per request (1 and 3 nodes)"
  BUILD="$BUILD" python3 bench/tx.py || rc=1
fi
if [ -f bench/saga.sh ]; then
  section "three-step sagas/s and p50/p99 at 1-200 at once, steps in keel and as kit HTTP calls"
  BUILD="$BUILD" bash bench/saga.sh || rc=1
  section "two-phase commit against the saga: a transfer, bank-b healthy, slow and down"
  BUILD="$BUILD" bash bench/twopc.sh || rc=1
fi
if [ -f bench/http.sh ]; then
  section "HTTP server vs nginx (wrk)"
  bash bench/http.sh || rc=1
fi
if [ -f bench/proxy.sh ]; then
  section "keel proxy vs nginx and HAProxy as reverse proxies (wrk, 64 and 1 connections)"
  bash bench/proxy.sh || rc=1
fi
for part in "proxy_features.sh:keel proxy and HAProxy with features on vs off (retries, breaker, rate limit, JWT; keel tracing 1%)" \
  "proxy_memory.sh:proxy memory per idle connection and per cluster (keel, nginx, HAProxy)" \
  "proxy_reload.sh:requests failed during ten reloads under wrk (keel, nginx, HAProxy)"; do
  if [ -f "bench/${part%%:*}" ]; then
    section "${part#*:}"
    KEEL_BUILD="$BUILD" bash "bench/${part%%:*}" || rc=1
  fi
done
if [ -f bench/shop.sh ]; then
  section "the shop: CPU per order per process, keel entries and payment bytes per order"
  BUILD="$BUILD" bash bench/shop.sh || rc=1
fi
if [ -f bench/ap_latency.py ]; then
  section "AP keyspace: PUT/GET at ONE, QUORUM and ALL against Raft SET/GET on the same 3 nodes"
  KEEL_BUILD="$BUILD" /usr/bin/python3 bench/ap_latency.py || rc=1
  section "AP keyspace: hinted handoff and anti-entropy refill times (5 nodes)"
  KEEL_BUILD="$BUILD" /usr/bin/python3 bench/ap_repair.py || rc=1
  section "AP keyspace: PUT through a home and through a non-home (forwarded), keys held (5 nodes)"
  KEEL_BUILD="$BUILD" /usr/bin/python3 bench/ap_forward.py || rc=1
fi
if [ -f bench/ap_move.py ]; then
  section "AP keyspace: share of key copies moved on join 3->4, join 4->5, leave 5->4"
  KEEL_BUILD="$BUILD" /usr/bin/python3 bench/ap_move.py 3000 || rc=1
fi
if [ -f bench/ap_partition.py ]; then
  section "AP keyspace: convergence after a 30 s partition with writes on both sides"
  KEEL_BUILD="$BUILD" /usr/bin/python3 bench/ap_partition.py 30 20 3 || rc=1
fi
exit $rc
