#!/usr/bin/env bash
# bench/http.sh - keel-testhttpd vs nginx (one worker) on a small fixed body, loaded by wrk.
#
# Both servers answer "hello" (5 bytes) with keep-alive on 127.0.0.1. Both
# run pinned to CPU 0 (only one is loaded at a time) and wrk (1 thread, 50
# connections) to CPU 1, so server and load generator never share a core.
# BENCH_ROUNDS rounds alternate nginx and keel, so background load on a shared
# machine hits both alike; the table shows the median round of each, plus every
# round. It also reports the server's CPU time per request (user+system from
# /proc/PID/stat), which background load disturbs far less than requests/s.
# Bounded: each run lasts BENCH_SECONDS (default 10).
#
#   KEEL_BUILD=build bench/http.sh            # uses build/keel-testhttpd ($BUILD also works)
#   BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_CONNECTIONS=50 bench/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KEEL_BUILD:-${BUILD:-build}}
SECONDS_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-50}
ROUNDS=${BENCH_ROUNDS:-3}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
TESTHTTPD="$BUILD/keel-testhttpd"

for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "bench/http.sh: '$tool' not installed (make deps)"; exit 1; }
done
[ -x "$TESTHTTPD" ] || { echo "bench/http.sh: $TESTHTTPD not built"; exit 1; }

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
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.05
  done
  echo "bench/http.sh: nothing answers on port $1"; exit 1
}

# CPU time (user+system, clock ticks) a process has used so far.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# Runs wrk against $1 while measuring server pid $2; prints "rps p50_us p99_us cpu_us_per_req".
load() {
  local url=$1 pid=$2 out="$TMP/wrk.$RANDOM" before after
  before=$(cpu_ticks "$pid")
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" --latency "$url" >"$out"
  after=$(cpu_ticks "$pid")
  echo "cpu_ticks $((after - before)) $(getconf CLK_TCK)" >>"$out"
  cat "$out" >&2
  python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", text)
if errs:
    print("bench/http.sh: errors reported by wrk: " + errs.group(0), file=sys.stderr)
total = int(re.search(r"(\d+) requests in", text).group(1))
ticks, hz = map(int, re.search(r"cpu_ticks (\d+) (\d+)", text).groups())
cpu_us = ticks * 1e6 / hz / max(total, 1)
print(f"{rps:.0f} {p50:.0f} {p99:.0f} {cpu_us:.2f}")
PY
}

# ---- servers ----------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 'hello'; }
    }
}
CONF
taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
KEEL_PORT=$(free_port)
taskset -c "$SERVER_CPU" "$TESTHTTPD" --listen "127.0.0.1:$KEEL_PORT" >"$TMP/keel.out" 2>&1 &
KEEL_PID=$!
PIDS+=($KEEL_PID)
wait_port "$NGINX_PORT"
wait_port "$KEEL_PORT"
echo "== nginx $(nginx -v 2>&1 | sed 's/.*\///') on :$NGINX_PORT, keel-testhttpd on :$KEEL_PORT" >&2

: >"$TMP/nginx.rounds"
: >"$TMP/keel.rounds"
for round in $(seq "$ROUNDS"); do
  echo "== round $round: nginx" >&2
  load "http://127.0.0.1:$NGINX_PORT/hello" "$NGINX_PID" >>"$TMP/nginx.rounds"
  echo "== round $round: keel" >&2
  load "http://127.0.0.1:$KEEL_PORT/hello" "$KEEL_PID" >>"$TMP/keel.rounds"
done

echo
echo "wrk -t1 -c$CONNS -d${SECONDS_RUN}s --latency x $ROUNDS rounds (alternating), servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU"
python3 - "$TMP/nginx.rounds" "$TMP/keel.rounds" <<'PY'
import sys
def rows(path):
    return [tuple(float(x) for x in line.split()) for line in open(path) if line.strip()]
def median_round(rs):
    return sorted(rs, key=lambda r: r[0])[len(rs) // 2]
n_all, k_all = rows(sys.argv[1]), rows(sys.argv[2])
n, k = median_round(n_all), median_round(k_all)
print(f"{'server':8} {'requests/s':>12} {'p50 (us)':>10} {'p99 (us)':>10} {'server CPU us/req':>18}"
      "   (median round by requests/s)")
print(f"{'nginx':8} {n[0]:12.0f} {n[1]:10.0f} {n[2]:10.0f} {n[3]:18.2f}")
print(f"{'keel':8} {k[0]:12.0f} {k[1]:10.0f} {k[2]:10.0f} {k[3]:18.2f}")
print(f"keel/nginx: requests/s x{k[0]/n[0]:.2f}, p99 x{k[2]/n[2]:.2f}, CPU per request x{k[3]/n[3]:.2f}"
      " (p99 and CPU: lower is better)")
print("all rounds (requests/s, p99 us, CPU us/req):")
for i, (a, b) in enumerate(zip(n_all, k_all), 1):
    print(f"  round {i}: nginx {a[0]:.0f} / {a[2]:.0f} / {a[3]:.2f}   keel {b[0]:.0f} / {b[2]:.0f} / {b[3]:.2f}")
PY
