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
#
# Its start/stop/config and wrk helpers are bench/proxy_lib.sh, shared with the other proxy benches.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
SECONDS_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
plib_init proxy.sh wrk taskset curl python3 "$NGINX" "$HAPROXY"
need_keel keel

# Runs wrk with $2 connections against $1 while measuring process $3; prints
# "rps p50_us p99_us cpu_us_per_request"; stops the script if wrk saw an error.
load() {
  local out="$TMP/wrk.$RANDOM" rps p50 p99 cpu bad
  wrk_load "$out" "$1" "$2" "$SECONDS_RUN" "$3"
  cat "$out" >&2
  read -r rps p50 p99 cpu _ bad < <(wrk_figures "$out")
  [ "$bad" = 0 ] || plib_die "errors reported by wrk: $(grep -E 'Non-2xx|Socket errors' "$out" | tr '\n' ' ')"
  echo "$rps $p50 $p99 $cpu"
}

# ---- backend and proxies ------------------------------------------------------
start_nginx_backend direct "$OTHER_CPU"
BACK_PORT=${PORT[direct]}

# proxy_start NAME CPU KIND [WORKERS]: nginx or haproxy as a reverse proxy to the backend.
proxy_start() {
  PORT[$1]=$(free_port)
  if [ "$3" = nginx ]; then
    nginx_proxy_conf "$TMP/$1" "${PORT[$1]}" "$BACK_PORT" "${4:-1}"
    start_nginx "$1" "$2" "$TMP/$1"
  else
    {
      haproxy_global "${4:-1}"
      printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\n' "${PORT[$1]}"
      printf 'backend be\n    server s1 127.0.0.1:%s\n' "$BACK_PORT"
    } >"$TMP/$1.cfg"
    start_haproxy "$1" "$2" "$TMP/$1.cfg"
  fi
}
proxy_start nginx "$PROXY_CPU" nginx
proxy_start nginx2 "" nginx 2
proxy_start haproxy "$PROXY_CPU" haproxy
proxy_start haproxy2 "" haproxy 2

cat >"$TMP/keel.yaml" <<CONF
workers: 1
listeners:
  - address: 127.0.0.1:0
clusters:
  - name: backend
    hosts: [127.0.0.1:$BACK_PORT]
    pool: {idle_max: 128}
routes:
  - match: {prefix: /}
    cluster: backend
CONF
start_keel keel "$PROXY_CPU" "$TMP/keel.yaml"

# The same with the policies on: retries with the budget, a breaker, outlier detection, a rate
# limit set far above the load, health checks; trace context is always propagated.
cat >"$TMP/feat.yaml" <<CONF
workers: 1
listeners:
  - address: 127.0.0.1:0
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
start_keel feat "$PROXY_CPU" "$TMP/feat.yaml"

sed -e "s/^workers: 1/workers: 2/" "$TMP/keel.yaml" >"$TMP/keel2.yaml"
start_keel keel2 "" "$TMP/keel2.yaml"

for name in nginx haproxy keel feat keel2 nginx2 haproxy2; do
  wait_http "${PORT[$name]}"
done
echo "== backend nginx :$BACK_PORT; proxies: keel :${PORT[keel]}, nginx :${PORT[nginx]}, haproxy :${PORT[haproxy]}" >&2

for c in 64 1; do
  for name in keel feat nginx haproxy direct keel2 nginx2 haproxy2; do : >"$TMP/$name.$c"; done
  names="keel feat nginx haproxy"
  [ "$c" = 64 ] && names="$names keel2 nginx2 haproxy2"
  for round in $(seq "$ROUNDS"); do
    for name in $names; do
      echo "== c=$c round $round: $name" >&2
      load "http://127.0.0.1:${PORT[$name]}/hello" "$c" "${PID[$name]}" >>"$TMP/$name.$c"
    done
    if [ "$c" = 1 ]; then
      echo "== c=$c round $round: backend directly" >&2
      load "http://127.0.0.1:$BACK_PORT/hello" "$c" "${PID[direct]}" >>"$TMP/direct.$c"
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
