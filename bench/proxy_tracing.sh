#!/usr/bin/env bash
# bench/proxy_tracing.sh - what tracing costs keel proxy: one backend (keel-testhttpd,
# GET /hello), a collector (a second keel-testhttpd: its POST /echo answers 200 to each batch)
# and three keel proxies in front of the backend, each with `workers: 1`: tracing off, tracing
# at 1% sampling, tracing at 100% (every request: a server and a client span, batches of 100).
# Clients send no trace context, so the proxy starts every trace and sample_percent decides.
# wrk with 64 connections on each proxy, BENCH_ROUNDS rounds alternating them; the median round
# of each (by requests/s) is printed with the median of the proxy's CPU microseconds per request (from /proc: user + system
# of the proxy during the run, 10 ms ticks) and the spans it exported. The proxies run pinned to
# CPU 0, the backend, the collector and wrk to CPU 1. The collector echoes each batch back (its
# POST /echo), so the proxy also reads every batch once more: a little more than a Zipkin
# server's empty 202 would cost it. KEEL_BASE=<another keel binary> adds a fourth proxy, that
# binary with no tracing section (a build from before tracing existed: is "off" unchanged?).
#
#   bench/proxy_tracing.sh                  # BENCH_SECONDS=5 BENCH_ROUNDS=3
#   KEEL_BASE=/path/to/old/keel bench/proxy_tracing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
SECONDS_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
plib_init proxy_tracing.sh wrk taskset python3 curl
need_keel keel keel-testhttpd
start_testhttpd up 1
start_testhttpd collector 1
UP=127.0.0.1:${PORT[up]}
COLL=127.0.0.1:${PORT[collector]}

start_proxy() { # name tracing-section [binary]
  cat >"$TMP/$1.yaml" <<CONF
workers: 1
listeners: [{address: 127.0.0.1:0}]
admin: {address: 127.0.0.1:0}
clusters: [{name: up, hosts: [$UP]}]
routes:
  - {name: hello, match: {prefix: /hello}, cluster: up}
$2
CONF
  KEEL="${3:-$BUILD/keel}" KEEL_LOG_LEVEL=error start_keel "$1" 0 "$TMP/$1.yaml"
  wait_http "${PORT[$1]}"
}
TR="tracing: {zipkin: \"http://$COLL/echo\", service_name: bench, batch_max: 100, flush_ms: 1000"
NAMES="off p1 p100"
start_proxy off ""
start_proxy p1 "$TR, sample_percent: 1}"
start_proxy p100 "$TR, sample_percent: 100}"
if [ -n "${KEEL_BASE:-}" ]; then
  start_proxy base "" "$KEEL_BASE"
  NAMES="base $NAMES"
fi

exported() {
  curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" |
    awk '/^keel_proxy_tracing_spans_exported_total / {print $2} END {}' | head -1
}
run() { # name
  local t0 t1 out
  t0=$(cpu_ticks "${PID[$1]}")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECONDS_RUN}s" --latency "http://127.0.0.1:${PORT[$1]}/hello")
  t1=$(cpu_ticks "${PID[$1]}")
  echo "$out" | awk -v n="$1" -v ticks="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" '
    /Requests\/sec/ {r=$2} /requests in/ {total=$1} /^ +99%/ {p=$2}
    END {printf "%s %s %s %.2f\n", n, r, p, ticks / hz / total * 1e6}'
}
for _ in $(seq "$ROUNDS"); do
  for n in $NAMES; do run "$n"; done
done >"$TMP/rounds"
sleep 1.5 # the last partial batches (flush_ms)
echo "tracing      requests/s (median of $ROUNDS)  p99 (that round)  CPU us/req (median)  spans exported"
for n in $NAMES; do
  cpu=$(grep "^$n " "$TMP/rounds" | sort -k4 -g | awk -v k="$ROUNDS" 'NR == int((k + 1) / 2) {print $4}')
  grep "^$n " "$TMP/rounds" | sort -k2 -g | awk -v k="$ROUNDS" -v e="$(exported "$n")" -v c="$cpu" \
    'NR == int((k + 1) / 2) {printf "%-12s %-29s %-17s %-20s %s\n", $1, $2, $3, c, e}'
done
echo "every round (name req/s p99 CPU-us/req):"
cat "$TMP/rounds"
