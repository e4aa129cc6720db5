#!/usr/bin/env bash
# bench/proxy_memory.sh - memory per idle client connection and per configured cluster: keel
# proxy next to nginx and HAProxy (issue 13).
#
# One backend (nginx, one worker, "hello"). Each proxy runs alone, one process with one worker
# or thread (keel `workers: 1`, nginx `master_process off`, HAProxy `nbthread 1` in the
# foreground), pinned to CPU 0, so its resident memory (VmRSS of the process) is all of it.
#   Connections: after one warm-up request, bench/idle_conns.py opens BENCH_CONNS (5,000)
#   keep-alive connections to the proxy, then sends one GET on each, one at a time (so one
#   upstream connection serves them all), and keeps them open and idle. RSS is read before,
#   after the connects (1 s later: every connection accepted) and after the requests; the
#   deltas divided by the count are the bytes per idle connection, never used and after one
#   request.
#   Clusters: each proxy is started with a config of 1 cluster (one host, a keep-alive pool,
#   one route) and of BENCH_CLUSTERS (64, keel's limit) clusters with a route each; RSS after one
#   request on the first route; (RSS_64 - RSS_1) / 63 is the memory per configured cluster
#   (with its route: a cluster is configured to be routed to).
#
#   bench/proxy_memory.sh                   # BENCH_CONNS=5000 BENCH_CLUSTERS=64
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
CONNS=${BENCH_CONNS:-5000}
CLUSTERS=${BENCH_CLUSTERS:-64}
plib_init proxy_memory.sh taskset curl python3 "$NGINX" "$HAPROXY"
need_keel keel
[ "$(ulimit -n)" -gt $((CONNS + 100)) ] || plib_die "ulimit -n $(ulimit -n) is below $CONNS connections"

start_nginx_backend backend "$OTHER_CPU"
BACK=${PORT[backend]}

# keel_conf FILE N: N clusters, a route to each (/cK/), the last route (/) to c1.
keel_conf() {
  local k
  {
    echo "workers: 1"
    echo "listeners: [{address: 127.0.0.1:0}]"
    echo "clusters:"
    for k in $(seq "$2"); do echo "  - {name: c$k, hosts: [127.0.0.1:$BACK], pool: {idle_max: 128}}"; done
    echo "routes:"
    for k in $(seq 2 "$2"); do echo "  - {name: r$k, match: {prefix: /c$k/}, cluster: c$k}"; done
    echo "  - {name: r1, match: {prefix: /}, cluster: c1}"
  } >"$1"
}
# nginx_n_conf DIR PORT N: the same with N upstreams (keepalive 128 each) and N locations.
nginx_n_conf() {
  local k ups="" locs=""
  for k in $(seq "$3"); do
    ups+="upstream u$k { server 127.0.0.1:$BACK; keepalive 128; keepalive_requests 1000000; } "
    [ "$k" -gt 1 ] && locs+="location /c$k/ { proxy_pass http://u$k; proxy_http_version 1.1; proxy_set_header Connection \"\"; } "
  done
  locs+="location / { proxy_pass http://u1; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
  nginx_conf "$1" "$2" "$ups" "$locs"
}
# haproxy_n_conf FILE PORT N: the same with N backends chosen by path_beg.
haproxy_n_conf() {
  local k
  {
    haproxy_global 1 $((CONNS + 1000))
    echo "frontend fe"
    echo "    bind 127.0.0.1:$2"
    for k in $(seq 2 "$3"); do echo "    use_backend b$k if { path_beg /c$k/ }"; done
    echo "    default_backend b1"
    for k in $(seq "$3"); do printf 'backend b%s\n    server s1 127.0.0.1:%s\n' "$k" "$BACK"; done
  } >"$1"
}

# start_proxy KIND NAME N: keel, nginx or haproxy named NAME with N clusters; waits for a 200.
start_proxy() {
  case $1 in
    keel)
      keel_conf "$TMP/$2.yaml" "$3"
      start_keel "$2" "$PROXY_CPU" "$TMP/$2.yaml"
      ;;
    nginx)
      PORT[$2]=$(free_port)
      nginx_n_conf "$TMP/$2" "${PORT[$2]}" "$3"
      start_nginx "$2" "$PROXY_CPU" "$TMP/$2"
      ;;
    haproxy)
      PORT[$2]=$(free_port)
      haproxy_n_conf "$TMP/$2.cfg" "${PORT[$2]}" "$3"
      start_haproxy "$2" "$PROXY_CPU" "$TMP/$2.cfg"
      ;;
  esac
  wait_http "${PORT[$2]}"
}

stop_proxy() {
  kill "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
}

# measure_conns KIND: prints "KIND rss_before rss_connected rss_requested count_ok" (KiB).
measure_conns() {
  local name="$1-conns" r0 r1 r2 line ok
  start_proxy "$1" "$name" 1
  sleep 0.5
  r0=$(rss_kb "${PID[$name]}")
  coproc IDLE { exec taskset -c "$OTHER_CPU" python3 bench/idle_conns.py "${PORT[$name]}" "$CONNS" /hello; }
  PIDS+=("$IDLE_PID")
  local idle_pid=$IDLE_PID
  echo connect >&"${IDLE[1]}"
  read -r -t 70 line <&"${IDLE[0]}" || plib_die "$1: the connects did not finish"
  [ "$line" = "connected $CONNS" ] || plib_die "$1: $line of $CONNS"
  sleep 1
  r1=$(rss_kb "${PID[$name]}")
  echo request >&"${IDLE[1]}"
  read -r -t 70 line <&"${IDLE[0]}" || plib_die "$1: the requests did not finish"
  ok=${line#requested }
  sleep 0.5
  r2=$(rss_kb "${PID[$name]}")
  eval "exec ${IDLE[1]}>&-"
  wait "$idle_pid" 2>/dev/null || true
  stop_proxy "$name"
  echo "$1 $r0 $r1 $r2 $ok"
}

# measure_clusters KIND: prints "KIND rss_1 rss_N" (KiB).
measure_clusters() {
  local r1 rn
  start_proxy "$1" "$1-1" 1
  sleep 0.5
  r1=$(rss_kb "${PID[$1-1]}")
  stop_proxy "$1-1"
  start_proxy "$1" "$1-n" "$CLUSTERS"
  wait_http "${PORT[$1-n]}" "/c$CLUSTERS/x"
  sleep 0.5
  rn=$(rss_kb "${PID[$1-n]}")
  stop_proxy "$1-n"
  echo "$1 $r1 $rn"
}

for kind in keel nginx haproxy; do
  echo "== $kind: $CONNS idle connections" >&2
  measure_conns "$kind" >>"$TMP/conns"
  echo "== $kind: 1 and $CLUSTERS clusters" >&2
  measure_clusters "$kind" >>"$TMP/clusters"
done

echo
machine_note
echo "RSS (VmRSS) of one proxy process, one worker/thread, pinned to CPU $PROXY_CPU"
python3 - "$TMP/conns" "$TMP/clusters" "$CONNS" "$CLUSTERS" <<'PY'
import sys
conns, clusters, n, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(f"  {n} idle keep-alive connections:")
print(f"  {'proxy':8} {'RSS before':>11} {'connected':>10} {'1 request each':>15} {'answered 200':>13}"
      f" {'bytes/conn (connected)':>23} {'bytes/conn (after a request)':>29}")
for line in open(conns):
    name, r0, r1, r2, ok = line.split()
    r0, r1, r2 = int(r0), int(r1), int(r2)
    print(f"  {name:8} {r0:8} KiB {r1:6} KiB {r2:11} KiB {ok:>13} {(r1 - r0) * 1024 / n:23.0f}"
          f" {(r2 - r0) * 1024 / n:29.0f}")
print(f"  1 vs {k} clusters (a route each):")
print(f"  {'proxy':8} {'RSS, 1 cluster':>15} {f'RSS, {k} clusters':>17} {'KiB per cluster':>16}")
for line in open(clusters):
    name, r1, rn = line.split()
    r1, rn = int(r1), int(rn)
    print(f"  {name:8} {r1:11} KiB {rn:13} KiB {(rn - r1) / (k - 1):16.1f}")
PY
