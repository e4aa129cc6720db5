#!/usr/bin/env bash
# bench/proxy.sh - keel proxy vs nginx and HAProxy as reverse proxies in front of one backend.
#
# The backend is nginx (one worker) answering "hello" (5 bytes). In front of it, in turn:
# keel proxy, nginx (proxy_pass to an upstream with a keepalive pool, HTTP/1.1 upstream) and
# HAProxy (mode http, one thread, http-reuse always); each with one worker/thread, keep-alive
# on both sides. The proxy runs pinned to CPU 0; the backend and wrk share CPU 1 (a 2-core
# machine has no third core). wrk runs with 64 connections and with 1, BENCH_ROUNDS rounds
# alternating the proxies so background load hits them alike; the table shows the median
# round of each (by requests/s) and the ratios. The 1-connection run also loads the backend
# directly, so the latency a proxy adds to p50 is shown. "keel+pol" is keel proxy with its
# policies on (retries and their budget, a breaker, outlier detection, a rate limit set far above
# the load, health checks), compared with keel with them off. Bounded: each run lasts
# BENCH_SECONDS.
#
# Then, at 64 connections, each proxy with two workers ("keel x2": `workers: 2`; "nginx x2":
# worker_processes 2; "haproxy x2": nbthread 2), unpinned: with 2 cores they share both with the
# backend and wrk, so these rows say how the proxies scale out on a machine that has no spare
# core, not what a 2-core proxy box would do.
#
#   bench/proxy.sh                         # BENCH_SECONDS=10 BENCH_ROUNDS=3
#   BENCH_SECONDS=5 BENCH_ROUNDS=1 bench/proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KEEL_BUILD:-${BUILD:-build}}
SECONDS_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
PROXY_CPU=${BENCH_SERVER_CPU:-0}
OTHER_CPU=${BENCH_CLIENT_CPU:-1}
KEEL="$BUILD/keel"
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}

for tool in wrk taskset curl python3 "$NGINX" "$HAPROXY"; do
  command -v "$tool" >/dev/null || { echo "bench/proxy.sh: '$tool' not installed (make deps)"; exit 1; }
done
[ -x "$KEEL" ] || { echo "bench/proxy.sh: $KEEL not built"; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/hello")" = 200 ] && return 0
    sleep 0.05
  done
  echo "bench/proxy.sh: nothing answers 200 on port $1"; exit 1
}

# nginx_conf DIR PORT HTTP SERVER [WORKERS]: an nginx config in DIR listening on PORT with the
# http-level lines HTTP and the server block SERVER; WORKERS > 1 runs a master with that many
# worker processes.
nginx_conf() {
  mkdir -p "$1"
  local workers=${5:-1} master=off
  [ "$workers" -gt 1 ] && master=on
  cat >"$1/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
master_process $master;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    $3
    server {
        listen 127.0.0.1:$2;
        $4
    }
}
CONF
}

# CPU time (user+system, clock ticks) a process (all its threads) and its child processes (nginx's
# workers) have used so far.
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# Runs wrk with $2 connections against $1 while measuring process $3; prints
# "rps p50_us p99_us cpu_us_per_request".
load() {
  local url=$1 conns=$2 pid=$3 out="$TMP/wrk.$RANDOM" before after
  before=$(cpu_ticks "$pid")
  taskset -c "$OTHER_CPU" wrk -t1 -c"$conns" -d"${SECONDS_RUN}s" --latency "$url" >"$out"
  after=$(cpu_ticks "$pid")
  echo "cpu_ticks $((after - before)) $(getconf CLK_TCK)" >>"$out"
  cat "$out" >&2
  python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", text)
if bad:
    print("bench/proxy.sh: errors reported by wrk: " + bad.group(0), file=sys.stderr)
    sys.exit(1)
total = int(re.search(r"(\d+) requests in", text).group(1))
ticks, hz = map(int, re.search(r"cpu_ticks (\d+) (\d+)", text).groups())
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {ticks * 1e6 / hz / max(total, 1):.2f}")
PY
}

# ---- backend and proxies ------------------------------------------------------
BACK_PORT=$(free_port)
nginx_conf "$TMP/backend" "$BACK_PORT" "" "location / { return 200 'hello'; }"
taskset -c "$OTHER_CPU" "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" &
DIRECT_PID=$!
PIDS+=($!)

NGINX_PORT=$(free_port)
nginx_conf "$TMP/nginx" "$NGINX_PORT" \
  "upstream backend { server 127.0.0.1:$BACK_PORT; keepalive 128; keepalive_requests 1000000; }" \
  "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($!)

NGINX2_PORT=$(free_port)
nginx_conf "$TMP/nginx2" "$NGINX2_PORT" \
  "upstream backend { server 127.0.0.1:$BACK_PORT; keepalive 128; keepalive_requests 1000000; }" \
  "location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" 2
"$NGINX" -p "$TMP/nginx2" -c "$TMP/nginx2/nginx.conf" &
NGINX2_PID=$!
PIDS+=($!)

# haproxy_conf FILE PORT THREADS
haproxy_conf() {
  cat >"$1" <<CONF
global
    nbthread $3
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server s1 127.0.0.1:$BACK_PORT
CONF
}
HAPROXY_PORT=$(free_port)
haproxy_conf "$TMP/haproxy.cfg" "$HAPROXY_PORT" 1
taskset -c "$PROXY_CPU" "$HAPROXY" -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=($!)
HAPROXY2_PORT=$(free_port)
haproxy_conf "$TMP/haproxy2.cfg" "$HAPROXY2_PORT" 2
"$HAPROXY" -f "$TMP/haproxy2.cfg" -db >"$TMP/haproxy2.log" 2>&1 &
HAPROXY2_PID=$!
PIDS+=($!)

KEEL_PORT=$(free_port)
cat >"$TMP/keel.yaml" <<CONF
workers: 1
listeners:
  - address: 127.0.0.1:$KEEL_PORT
clusters:
  - name: backend
    hosts: [127.0.0.1:$BACK_PORT]
    pool: {idle_max: 128}
routes:
  - match: {prefix: /}
    cluster: backend
CONF
taskset -c "$PROXY_CPU" "$KEEL" proxy --config "$TMP/keel.yaml" --log-level warn >"$TMP/keel.out" 2>&1 &
KEEL_PID=$!
PIDS+=($!)

# The same with the policies on: retries with the budget, a breaker, outlier detection, a rate
# limit set far above the load, health checks; trace context is always propagated.
FEAT_PORT=$(free_port)
cat >"$TMP/feat.yaml" <<CONF
workers: 1
listeners:
  - address: 127.0.0.1:$FEAT_PORT
clusters:
  - name: backend
    hosts: [127.0.0.1:$BACK_PORT]
    pool: {idle_max: 128}
    circuit_breaker: {failure_rate_pct: 50, calls_min: 100}
    outlier_detection: {consecutive_5xx: 5}
    health_check: {path: /hello, interval_ms: 1000, timeout_ms: 500}
routes:
  - match: {prefix: /}
    cluster: backend
    retry: {attempts_max: 3, retry_on: [connect-failure, reset, gateway-error]}
    rate_limit: {key: source_address, requests_per_s: 10000000, burst: 10000000}
CONF
taskset -c "$PROXY_CPU" "$KEEL" proxy --config "$TMP/feat.yaml" --log-level warn >"$TMP/feat.out" 2>&1 &
FEAT_PID=$!
PIDS+=($!)

KEEL2_PORT=$(free_port)
sed -e "s/^workers: 1/workers: 2/" -e "s/:$KEEL_PORT\$/:$KEEL2_PORT/" "$TMP/keel.yaml" >"$TMP/keel2.yaml"
"$KEEL" proxy --config "$TMP/keel2.yaml" --log-level warn >"$TMP/keel2.out" 2>&1 &
KEEL2_PID=$!
PIDS+=($!)

for port in "$BACK_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$KEEL_PORT" "$FEAT_PORT" "$KEEL2_PORT" \
  "$NGINX2_PORT" "$HAPROXY2_PORT"; do
  wait_port "$port"
done
echo "== backend nginx :$BACK_PORT; proxies: keel :$KEEL_PORT, nginx :$NGINX_PORT, haproxy :$HAPROXY_PORT" >&2

for c in 64 1; do
  for name in keel feat nginx haproxy direct keel2 nginx2 haproxy2; do : >"$TMP/$name.$c"; done
  names="keel feat nginx haproxy"
  [ "$c" = 64 ] && names="$names keel2 nginx2 haproxy2"
  for round in $(seq "$ROUNDS"); do
    for name in $names; do
      port_var="${name^^}_PORT"
      pid_var="${name^^}_PID"
      echo "== c=$c round $round: $name" >&2
      load "http://127.0.0.1:${!port_var}/hello" "$c" "${!pid_var}" >>"$TMP/$name.$c"
    done
    if [ "$c" = 1 ]; then
      echo "== c=$c round $round: backend directly" >&2
      load "http://127.0.0.1:$BACK_PORT/hello" "$c" "$DIRECT_PID" >>"$TMP/direct.$c"
    fi
  done
done

echo
echo "wrk -t1 -d${SECONDS_RUN}s --latency, $ROUNDS rounds (alternating); proxies on CPU $PROXY_CPU, backend (nginx) and wrk on CPU $OTHER_CPU"
python3 - "$TMP" <<'PY'
import os, sys
tmp = sys.argv[1]
def rows(name, c):
    path = os.path.join(tmp, f"{name}.{c}")
    return [tuple(float(x) for x in l.split()) for l in open(path) if l.strip()]
def median(rs):
    return sorted(rs, key=lambda r: r[0])[len(rs) // 2]
for c in (64, 1):
    print(f"\n{c} connection{'s' if c > 1 else ''}:")
    print(f"  {'proxy':10} {'requests/s':>12} {'p50 (us)':>10} {'p99 (us)':>10} {'CPU us/req':>11}"
          "   (median round by requests/s; CPU: the proxy's, or the backend's without one)")
    med = {}
    names = ["keel", "feat", "nginx", "haproxy"] + (["direct"] if c == 1 else [])
    for n in names:
        rs = rows(n, c)
        med[n] = median(rs)
        label = {"direct": "no proxy", "feat": "keel+pol"}.get(n, n)
        print(f"  {label:10} {med[n][0]:12.0f} {med[n][1]:10.0f} {med[n][2]:10.0f} {med[n][3]:11.2f}")
    k = med["keel"]
    for other in ("nginx", "haproxy"):
        o = med[other]
        print(f"  keel/{other}: requests/s x{k[0]/o[0]:.2f}, p50 x{k[1]/o[1]:.2f}, p99 x{k[2]/o[2]:.2f},"
              f" CPU per request x{k[3]/o[3]:.2f}")
    f = med["feat"]
    print(f"  keel with policies on / off: requests/s x{f[0]/k[0]:.2f}, p99 x{f[2]/k[2]:.2f},"
          f" CPU per request x{f[3]/k[3]:.2f}")
    if c == 1:
        d = med["direct"]
        for n in ("keel", "nginx", "haproxy"):
            print(f"  {n} adds {med[n][1] - d[1]:.0f} us to the p50 of a direct request")
    if c == 64:
        print("  two workers each, unpinned (both cores shared with the backend and wrk):")
        for n in ("keel2", "nginx2", "haproxy2"):
            names.append(n)
            med[n] = median(rows(n, c))
            label = n[:-1] + " x2"
            print(f"  {label:10} {med[n][0]:12.0f} {med[n][1]:10.0f} {med[n][2]:10.0f} {med[n][3]:11.2f}")
        k2 = med["keel2"]
        for other in ("nginx2", "haproxy2"):
            o = med[other]
            print(f"  keel x2/{other[:-1]} x2: requests/s x{k2[0]/o[0]:.2f}, p99 x{k2[2]/o[2]:.2f},"
                  f" CPU per request x{k2[3]/o[3]:.2f}")
        print(f"  keel x2 / keel x1: requests/s x{k2[0]/k[0]:.2f}")
    print("  all rounds (requests/s / p99 us / CPU us per request): " + "; ".join(
        f"{n} " + ", ".join(f"{r[0]:.0f}/{r[2]:.0f}/{r[3]:.1f}" for r in rows(n, c)) for n in names))
PY
