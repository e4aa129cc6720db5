#!/usr/bin/env bash
# bench/proxy_tls.sh - what TLS costs keel proxy, and that plaintext listeners did not pay for it.
#
# One backend (keel-testhttpd, GET /hello) and keel proxy in front of it with two listeners: a
# plaintext one and a TLS one (an ECDSA P-256 certificate the openssl command makes here). wrk
# with 64 keep-alive connections on each, and on the TLS listener once more with
# `Connection: close` (a full handshake per request: handshakes/s). With KEEL_BASE=<an older
# keel binary> the plaintext listener of that binary is measured too, in the same rounds, so a
# change to the data path can be compared with what it replaced on the same machine state.
# BENCH_ROUNDS rounds alternate the runs; the medians of each are printed: requests/s (with the
# p99 of that round) and the proxy's CPU time per request (user + system, from /proc: steadier
# than requests/s when other work shares the machine). The proxy runs pinned to CPU 0, the backend and wrk to
# CPU 1.
#
#   bench/proxy_tls.sh                                  # BENCH_SECONDS=5 BENCH_ROUNDS=3
#   KEEL_BASE=/tmp/keel-before bench/proxy_tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
SECONDS_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
BASE=${KEEL_BASE:-}
plib_init proxy_tls.sh wrk taskset openssl curl
need_keel keel keel-testhttpd
start_testhttpd up 1
UP=127.0.0.1:${PORT[up]}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/key.pem" \
  -out "$TMP/cert.pem" -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null

start_proxy() { # binary name yaml; its pid in $TMP/name.pid
  KEEL="$1" KEEL_LOG_LEVEL=error start_keel "$2" 0 "$3"
  echo "${PID[$2]}" >"$TMP/$2.pid"
}
cat >"$TMP/new.yaml" <<CONF
workers: 1
listeners:
  - {name: plain, address: 127.0.0.1:0}
  - {name: tls, address: 127.0.0.1:0, tls: {cert_file: $TMP/cert.pem, key_file: $TMP/key.pem}}
clusters: [{name: up, hosts: [$UP]}]
routes: [{name: all, match: {prefix: /}, cluster: up}]
CONF
start_proxy "$BUILD/keel" new "$TMP/new.yaml"
PLAIN=$(sed -n 's/.*listening 0 on port \([0-9]*\).*/\1/p' "$TMP/new.out")
TLS=$(sed -n 's/.*listening 1 on port \([0-9]*\).*/\1/p' "$TMP/new.out")
BASEPORT=
if [ -n "$BASE" ]; then
  cat >"$TMP/base.yaml" <<CONF
workers: 1
listeners: [{name: plain, address: 127.0.0.1:0}]
clusters: [{name: up, hosts: [$UP]}]
routes: [{name: all, match: {prefix: /}, cluster: up}]
CONF
  start_proxy "$BASE" base "$TMP/base.yaml"
  BASEPORT=$(sed -n 's/.*listening 0 on port \([0-9]*\).*/\1/p' "$TMP/base.out")
fi
check() { # url
  code=$(curl -sk -o /dev/null -w '%{http_code}' "$1")
  [ "$code" = 200 ] || { echo "bench/proxy_tls.sh: $1 answered $code"; exit 1; }
}
check "http://127.0.0.1:$PLAIN/hello"
check "https://127.0.0.1:$TLS/hello"
[ -z "$BASEPORT" ] || check "http://127.0.0.1:$BASEPORT/hello"

HZ=$(getconf CLK_TCK)
run() { # name pidfile url [header]
  local pid t0 t1
  pid=$(cat "$2")
  t0=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_RUN}s" --latency ${4:+-H "$4"} "$3" >"$TMP/wrk.out"
  t1=$(cpu_ticks "$pid")
  awk -v n="$1" -v ticks=$((t1 - t0)) -v hz="$HZ" '
    /requests in/ {reqs=$1} /Requests\/sec/ {r=$2} /^ +99%/ {p=$2}
    END {printf "%s %s %s %.1f\n", n, r, p, (reqs > 0 ? ticks * 1e6 / hz / reqs : 0)}' "$TMP/wrk.out"
}
NAMES="plain tls tls-handshake"
[ -z "$BASEPORT" ] || NAMES="plain-before $NAMES"
for _ in $(seq "$ROUNDS"); do
  [ -z "$BASEPORT" ] || run plain-before "$TMP/base.pid" "http://127.0.0.1:$BASEPORT/hello"
  run plain "$TMP/new.pid" "http://127.0.0.1:$PLAIN/hello"
  run tls "$TMP/new.pid" "https://127.0.0.1:$TLS/hello"
  run tls-handshake "$TMP/new.pid" "https://127.0.0.1:$TLS/hello" "Connection: close"
done >"$TMP/rounds"
echo "run            requests/s   p99 (that round)   proxy CPU us/request   (medians of $ROUNDS)"
for n in $NAMES; do
  cpu=$(grep "^$n " "$TMP/rounds" | sort -k4 -n | awk -v k="$ROUNDS" 'NR == int((k + 1) / 2) {print $4}')
  grep "^$n " "$TMP/rounds" | sort -k2 -n | awk -v k="$ROUNDS" -v cpu="$cpu" \
    'NR == int((k + 1) / 2) {printf "%-14s %-12s %-18s %s\n", $1, $2, $3, cpu}'
done
echo "all rounds (name requests/s p99 us/request):"
cat "$TMP/rounds"
