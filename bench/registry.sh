#!/usr/bin/env bash
# bench/registry.sh - the service registry (docs/registry.md) on a 3-node cluster:
# registrations/s (KEEL.REG over RESP, Consul-shaped HTTP) and the time for one change to
# reach REG_WATCHERS (default 1000; REG_WATCHERS_BIG, default 10000, too) blocked watchers,
# on the leader and on a follower, and how long a stopped 2 s TTL instance stays in ?passing;
# then the same workload on a 3-member etcd (a lease grant
# and a put per registration; watch streams on a prefix) as the anchor, with the ratios.
# Each part is bounded in time (bench/registry.py). REG_ETCD=0 skips etcd.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KEEL="$BUILD/keel"
N=${REG_COUNT:-20000}
W=${REG_WATCHERS:-1000}
WBIG=${REG_WATCHERS_BIG:-10000}
. scripts/scratch.sh
tmp=$(keel_scratch registry)
pids=()
cleanup() {
  [ -f "$tmp/k3/cluster.json" ] && "$KEEL" down --dir "$tmp/k3" >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
base=${REG_BASE_PORT:-24301}
"$KEEL" up --nodes 3 --dir "$tmp/k3" --base-port $base --detach >/dev/null || exit 1
sleep 1
li=$("$KEEL" status --dir "$tmp/k3" | awk '$3 == "leader" {print $1}' | head -1 | sed 's/^n//')
[ -n "$li" ] || { echo "no leader"; exit 1; }
lc=$((base + li - 1)); lh=$((base + 200 + li - 1))
fi=1; [ "$li" = 1 ] && fi=2
fh=$((base + 200 + fi - 1)); fc=$((base + fi - 1))
rc=0
out=$tmp/out.txt
py() { /usr/bin/python3 bench/registry.py "$@" | tee -a "$out" | sed 's/^/  /'; return "${PIPESTATUS[0]}"; }
echo "-- registrations ($N over RESP, $((N / 10)) over HTTP), sent to the leader"
py regs "$lc" "$lh" "$N" || rc=1
for w in "$W" "$WBIG"; do
  [ "$w" -gt 0 ] || continue
  echo "-- one change to $w blocked watchers on the leader"
  py fanout "$lh" "$lh" "$w" || rc=1
  echo "-- one change (written on the leader) to $w blocked watchers on a follower"
  py fanout "$fh" "$lh" "$w" || rc=1
done
if [ "$W" -gt 0 ]; then
  echo "-- one change (written on the leader) to $W KEEL.REG FEED connections on a follower"
  py feeds "$fc" "$lc" "$W" || rc=1
fi
echo "-- dead-instance removal: TTL 2 s, heartbeats stop, ?passing read on a follower"
py removal "$lh" "$fh" 3 || rc=1
"$KEEL" down --dir "$tmp/k3" >/dev/null 2>&1
[ "${REG_ETCD:-1}" = 1 ] && command -v etcd >/dev/null || exit $rc

echo "-- the anchor: etcd $(etcd --version | head -1 | awk '{print $3}'), 3 members, fsync on"
cluster="e1=http://127.0.0.1:25580,e2=http://127.0.0.1:25582,e3=http://127.0.0.1:25584"
for i in 1 2 3; do
  cp=$((25577 + 2 * i)); pp=$((25578 + 2 * i))
  etcd --name "e$i" --data-dir "$tmp/etcd$i" --listen-client-urls "http://127.0.0.1:$cp" \
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "$cluster" \
    --initial-cluster-state new --log-level error > "$tmp/etcd$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:25579/health >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
# the leader's client port: the member whose status says it leads
el=25579
for cp in 25579 25581 25583; do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$cp" endpoint status 2>/dev/null | grep -q ", true," && el=$cp
done
ef=25579; [ "$el" = 25579 ] && ef=25581
py etcd_regs "$el" "$((N / 10))" || rc=1
for w in "$W" "$WBIG"; do
  [ "$w" -gt 0 ] || continue
  echo "-- etcd: one put to $w watchers on the leader"
  py etcd_fanout "$el" "$el" "$w" || rc=1
  echo "-- etcd: one put (on the leader) to $w watchers on a follower"
  py etcd_fanout "$ef" "$el" "$w" || rc=1
done
echo "-- ratios (keel / etcd)"
awk '/registrations\/s/ && /PUT \/v1/ {k=$(NF-1)} /registrations\/s/ && /^etcd/ {e=$(NF-1)}
     END {gsub(",","",k); gsub(",","",e); if (k && e) printf "  registrations/s over HTTP: %.2fx\n", k / e}' "$out"
exit $rc
