#!/usr/bin/env bash
# bench/proxy_reload.sh - requests failed during ten reloads in a row under a wrk load: keel
# proxy (SIGHUP), nginx (`nginx -s reload`) and HAProxy (master-worker, `reload` on its master
# CLI), issue 13 (target 0 for keel).
#
# One backend (nginx, one worker, "hello"). Each proxy in turn, one worker/thread pinned to CPU 0
# (nginx with a master process, HAProxy with -W: a reload needs them), under `wrk -t1 -c64`
# (keep-alive connections; wrk on CPU 1 with the backend) for 1 s, then BENCH_RELOADS (10)
# reloads BENCH_RELOAD_GAP_S (0.5 s) apart, then 2 s more. Every reload is a real change of the
# upstream side, not the same text again: the pool size of the one cluster/upstream is changed
# (keel `pool.idle_max`, nginx `keepalive`, HAProxy `pool-max-conn` on the server), so keel
# builds a new cluster (new pools) and nginx and HAProxy start new worker processes. The proxies:
#   keel      a route to a one-host cluster with a keep-alive pool;
#   keel+f    the same with retries, a breaker, outlier detection, health checks, a rate limit
#             set high and JWT HS256 (every request carries a token; the JWKS file is read again
#             at each reload, and the cache of verified tokens starts empty);
#   nginx     proxy_pass to an upstream with a keepalive pool, `-s reload`;
#   haproxy   `mode http`, `http-reuse always`, master-worker (-W -S), `reload` on the master CLI.
# Failed = wrk's non-2xx/3xx answers + its socket errors (connect, read, write, timeout). The
# reloads that took effect are counted too: keel's keel_proxy_reloads_total{result="ok"}, nginx's
# SIGHUP log lines, the reloads in HAProxy's `show proc`. BENCH_ROUNDS rounds (1) alternate them.
#
#   bench/proxy_reload.sh                   # BENCH_RELOADS=10 BENCH_RELOAD_GAP_S=0.5 BENCH_ROUNDS=1
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
RELOADS=${BENCH_RELOADS:-10}
GAP_S=${BENCH_RELOAD_GAP_S:-0.5}
ROUNDS=${BENCH_ROUNDS:-1}
CONNS=${BENCH_CONNECTIONS:-64}
plib_init proxy_reload.sh wrk taskset curl python3 "$NGINX" "$HAPROXY"
need_keel keel
SECONDS_RUN=$(python3 -c "import math; print(math.ceil(1 + $RELOADS * $GAP_S + 2))")

start_nginx_backend backend "$OTHER_CPU"
BACK=${PORT[backend]}
TOKEN=$(hs256_token "$TMP" bench)
AUTH="Authorization: Bearer $TOKEN"

# keel_conf FILE POOL [FEATURES]: the config with pool.idle_max POOL; FEATURES=f adds the
# policies and JWT.
keel_conf() {
  local extra="" route_extra=""
  if [ "${3:-}" = f ]; then
    extra="    circuit_breaker: {failure_rate_pct: 50, calls_min: 100}
    outlier_detection: {consecutive_5xx: 5}
    health_check: {path: /hello, interval_ms: 1000, timeout_ms: 500}
jwt_providers:
  - {name: bench, issuer: bench, jwks_file: $TMP/jwks.json}"
    route_extra="    jwt: bench
    retry: {attempts_max: 3, retry_on: [connect-failure, reset, gateway-error]}
    rate_limit: {key: source_address, requests_per_s: 10000000, burst: 10000000}"
  fi
  cat >"$1.new" <<CONF
workers: 1
listeners: [{address: 127.0.0.1:0}]
admin: {address: 127.0.0.1:0}
clusters:
  - name: backend
    hosts: [127.0.0.1:$BACK]
    pool: {idle_max: $2}
$extra
routes:
  - name: all
    match: {prefix: /}
    cluster: backend
$route_extra
CONF
  mv "$1.new" "$1"
}
haproxy_cfg() { # FILE PORT POOL
  {
    haproxy_global 1
    cat <<CONF
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server s1 127.0.0.1:$BACK pool-max-conn $3
CONF
  } >"$1.new"
  mv "$1.new" "$1"
}

keel_conf "$TMP/keel.yaml" 128
start_keel keel "$PROXY_CPU" "$TMP/keel.yaml"
keel_conf "$TMP/keelf.yaml" 128 f
start_keel keelf "$PROXY_CPU" "$TMP/keelf.yaml"
PORT[nginx]=$(free_port)
nginx_proxy_conf "$TMP/nginx" "${PORT[nginx]}" "$BACK" 1 "# a master process: -s reload needs one"
start_nginx nginx "$PROXY_CPU" "$TMP/nginx"
PORT[haproxy]=$(free_port)
haproxy_cfg "$TMP/haproxy.cfg" "${PORT[haproxy]}" 128
start_haproxy haproxy "$PROXY_CPU" "$TMP/haproxy.cfg" -W -S "$TMP/master.sock"
NAMES="keel keelf nginx haproxy"
for n in $NAMES; do wait_http "${PORT[$n]}" /hello "$AUTH"; done

keel_reloads() { # name: keel_proxy_reloads_total{result="ok"}
  curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" |
    awk '/^keel_proxy_reloads_total\{result="ok"\}/ {print $2}'
}
master_cli() { # command: on HAProxy's master CLI
  python3 - "$TMP/master.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
s.shutdown(socket.SHUT_WR)  # as `socat stdio` does: the master answers, then closes
out = b""
try:
    while chunk := s.recv(65536):
        out += chunk
except socket.timeout:
    pass
sys.stdout.write(out.decode(errors="replace"))
PY
}
haproxy_reloads() { # the master's reload count in `show proc`
  master_cli "show proc" | awk '$2 == "master" {print $3}'
}

# reload NAME I: the I-th change of NAME's config and its reload.
reload() {
  case $1 in
    keel | keelf)
      keel_conf "$TMP/$1.yaml" $((128 + $2)) "${1#keel}"
      kill -HUP "${PID[$1]}"
      ;;
    nginx)
      sed -i "s/keepalive [0-9]*;/keepalive $((128 + $2));/" "$TMP/nginx/nginx.conf"
      "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -s reload 2>>"$TMP/nginx-reload.err"
      ;;
    haproxy)
      haproxy_cfg "$TMP/haproxy.cfg" "${PORT[haproxy]}" $((128 + $2))
      master_cli reload >/dev/null
      ;;
  esac
}
reloads_done() { # NAME: a counter that moves once per reload that took effect
  case $1 in
    keel | keelf) keel_reloads "$1" ;;
    nginx) grep -c 'SIGHUP' "$TMP/nginx/error.log" || true ;;
    haproxy) haproxy_reloads ;;
  esac
}

STEP=0
for round in $(seq "$ROUNDS"); do
  for n in $NAMES; do
    echo "== round $round: $n, $RELOADS reloads under wrk -c$CONNS for ${SECONDS_RUN}s" >&2
    before=$(reloads_done "$n")
    (
      sleep 1
      for i in $(seq "$RELOADS"); do
        reload "$n" $((STEP + i))
        sleep "$GAP_S"
      done
    ) &
    reloader=$!
    wrk_load "$TMP/wrk.$n.$round" "http://127.0.0.1:${PORT[$n]}/hello" "$CONNS" "$SECONDS_RUN" \
      "${PID[$n]}" -H "$AUTH"
    wait "$reloader"
    STEP=$((STEP + RELOADS))
    sleep 0.5
    after=$(reloads_done "$n")
    done_=$((after - before))
    echo "$n $done_ $(wrk_figures "$TMP/wrk.$n.$round") $(grep -Eo 'Non-2xx[^0-9]*[0-9]+|Socket errors: .*' "$TMP/wrk.$n.$round" | tr '\n' ' ')" >>"$TMP/rounds"
  done
done

echo
machine_note
echo "wrk -t1 -c$CONNS -d${SECONDS_RUN}s, $RELOADS reloads ${GAP_S}s apart from the 1st second; proxies on CPU $PROXY_CPU, backend nginx and wrk on CPU $OTHER_CPU"
printf '  %-8s %-6s %8s %11s %9s %7s  %s\n' proxy round reloads requests "req/s" failed "wrk's errors"
r=0
while read -r n done_ rps _p50 _p99 _cpu total failed rest; do
  r=$((r + 1))
  printf '  %-8s %-6s %8s %11s %9s %7s  %s\n' "${n/keelf/keel+f}" "$(((r - 1) / 4 + 1))" "$done_" "$total" "$rps" "$failed" "${rest:-none}"
done <"$TMP/rounds"
