#!/usr/bin/env bash
# bench/proxy_features.sh - keel proxy and HAProxy with their features on, next to themselves
# with them off (issue 13: features on at >= 0.9x of keel with them off).
#
# One backend (nginx, one worker, "hello": 5 bytes) behind four proxies, each one worker/thread
# pinned to CPU 0 (the backend, keel's trace collector and wrk share CPU 1):
#   keel      a route to a one-host cluster with a keep-alive pool, nothing else;
#   keel+f    the same with a retry policy (3 attempts on connect-failure, reset, 502-504, under
#             the default retry budget), a circuit breaker, outlier detection, active health
#             checks every second, a rate limit per client address set far above the load
#             (10,000,000/s), JWT HS256 verification (issuer checked, exp required) and tracing
#             at 1% sampling exported as Zipkin JSON to a keel-testhttpd collector;
#   haproxy   HAProxy 2.6, `mode http`, `http-reuse always` (as in bench/proxy.sh);
#   haproxy+f the same configured as closely as HAProxy allows: `retries 3` with `retry-on
#             conn-failure empty-response 502 503 504`, a stick table counting each source's
#             http_req_rate(1s) with a deny above 10,000,000, the bearer token checked by the
#             jwt_header_query (alg HS256), jwt_payload_query (iss, exp against `date`) and
#             jwt_verify converters, the Authorization field removed, `option httpchk` every
#             second and `observe layer7 error-limit 5 on-error mark-down` (its nearest to a
#             breaker and outlier detection). HAProxy has no tracing here: its OpenTracing
#             filter needs a tracer plugin, and none that exports is installed.
# Every request carries the same `Authorization: Bearer` token (one token: keel caches verified
# tokens per provider, HAProxy verifies the HMAC of every request, see docs/proxy.md "JWT"); so
# two more runs, keel+f* and haproxy+f*, send each request with the next of 4,096 distinct
# tokens (bench/lua/tokens.lua), which keel's cache (256 entries) cannot hold.
# wrk -t1 with 64 connections, BENCH_ROUNDS rounds alternating the six runs; the median round of
# each by requests/s, its p99, and the median of its rounds' proxy CPU per request (user+system
# from /proc/PID/stat over the run); then the on/off ratios within each round (keel and keel+f
# run back to back, so the load of the moment moves them alike), their median and range.
#
#   bench/proxy_features.sh                 # BENCH_SECONDS=5 BENCH_ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
SECONDS_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
plib_init proxy_features.sh wrk taskset curl python3 "$NGINX" "$HAPROXY"
need_keel keel keel-testhttpd

start_nginx_backend backend "$OTHER_CPU"
BACK=${PORT[backend]}
start_testhttpd collector "$OTHER_CPU"
TOKEN=$(hs256_token "$TMP" bench)
hs256_tokens "$TMP" bench "${BENCH_TOKENS:-4096}"
SECRET=$(cat "$TMP/secret")
AUTH="Authorization: Bearer $TOKEN"

cat >"$TMP/keel.yaml" <<CONF
workers: 1
listeners: [{address: 127.0.0.1:0}]
clusters:
  - {name: backend, hosts: [127.0.0.1:$BACK], pool: {idle_max: 128}}
routes:
  - {name: all, match: {prefix: /}, cluster: backend}
CONF
cat >"$TMP/keelf.yaml" <<CONF
workers: 1
listeners: [{address: 127.0.0.1:0}]
admin: {address: 127.0.0.1:0}
clusters:
  - name: backend
    hosts: [127.0.0.1:$BACK]
    pool: {idle_max: 128}
    circuit_breaker: {failure_rate_pct: 50, calls_min: 100}
    outlier_detection: {consecutive_5xx: 5}
    health_check: {path: /hello, interval_ms: 1000, timeout_ms: 500}
jwt_providers:
  - {name: bench, issuer: bench, jwks_file: $TMP/jwks.json}
tracing: {zipkin: "http://127.0.0.1:${PORT[collector]}/echo", service_name: bench, batch_max: 100, flush_ms: 1000, sample_percent: 1}
routes:
  - name: all
    match: {prefix: /}
    cluster: backend
    jwt: bench
    retry: {attempts_max: 3, retry_on: [connect-failure, reset, gateway-error]}
    rate_limit: {key: source_address, requests_per_s: 10000000, burst: 10000000}
CONF
start_keel keel "$PROXY_CPU" "$TMP/keel.yaml"
start_keel keelf "$PROXY_CPU" "$TMP/keelf.yaml"

PORT[haproxy]=$(free_port)
{
  haproxy_global 1
  cat <<CONF
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend be
backend be
    server s1 127.0.0.1:$BACK
CONF
} >"$TMP/haproxy.cfg"
PORT[haproxyf]=$(free_port)
{
  haproxy_global 1
  cat <<CONF
frontend fe
    bind 127.0.0.1:${PORT[haproxyf]}
    stick-table type ip size 100k expire 10s store http_req_rate(1s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 10000000 }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_header_query('\$.alg') -m str HS256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str bench }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.exp','int'),sub(txn.now) -m int gt 0 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify("HS256","$SECRET") -m int 1 }
    http-request del-header Authorization
    default_backend be
backend be
    retries 3
    retry-on conn-failure empty-response 502 503 504
    option httpchk GET /hello
    server s1 127.0.0.1:$BACK check inter 1s observe layer7 error-limit 5 on-error mark-down
CONF
} >"$TMP/haproxyf.cfg"
"$HAPROXY" -c -q -f "$TMP/haproxyf.cfg" || plib_die "HAProxy refused $TMP/haproxyf.cfg"
start_haproxy haproxy "$PROXY_CPU" "$TMP/haproxy.cfg"
start_haproxy haproxyf "$PROXY_CPU" "$TMP/haproxyf.cfg"

NAMES="keel keelf haproxy haproxyf"
for n in $NAMES; do wait_http "${PORT[$n]}" /hello "$AUTH"; done
# The features are on: no token, or a token with a wrong signature, is refused by both.
for n in keelf haproxyf; do
  for h in "X-No-Token: 1" "Authorization: Bearer ${TOKEN%?}A"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "$h" "http://127.0.0.1:${PORT[$n]}/hello")
    [ "$code" = 401 ] || plib_die "$n answered $code to '$h' (401 expected)"
  done
done

# keel+f* and haproxy+f*: the same two proxies, each request with the next of BENCH_TOKENS
# (4,096) distinct tokens (bench/lua/tokens.lua), more than keel's cache holds (256).
for round in $(seq "$ROUNDS"); do
  for n in $NAMES keelt haproxyt; do
    echo "== round $round: $n" >&2
    case $n in
      keelt | haproxyt)
        p=${n%t}f
        BENCH_TOKENS_FILE="$TMP/tokens" wrk_load "$TMP/wrk" "http://127.0.0.1:${PORT[$p]}/hello" \
          "$CONNS" "$SECONDS_RUN" "${PID[$p]}" -s bench/lua/tokens.lua
        ;;
      *) wrk_load "$TMP/wrk" "http://127.0.0.1:${PORT[$n]}/hello" "$CONNS" "$SECONDS_RUN" "${PID[$n]}" -H "$AUTH" ;;
    esac
    echo "$n $(wrk_figures "$TMP/wrk")" >>"$TMP/rounds"
  done
done
sleep 1.5 # keel's last partial batch of spans (flush_ms)
SPANS=$(curl -s "http://127.0.0.1:${ADMIN[keelf]}/metrics" |
  awk '/^keel_proxy_tracing_spans_exported_total/ {s += $2} END {print s + 0}')

echo
machine_note
echo "wrk -t1 -c$CONNS -d${SECONDS_RUN}s --latency, $ROUNDS rounds alternating; proxies on CPU $PROXY_CPU, backend nginx, collector and wrk on CPU $OTHER_CPU"
python3 - "$TMP/rounds" "$SPANS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append([float(x) for x in f[1:]])
def med(rs, i):
    return sorted(rs, key=lambda r: r[i])[(len(rs) - 1) // 2]
label = {"keel": "keel", "keelf": "keel+f", "haproxy": "haproxy", "haproxyf": "haproxy+f",
         "keelt": "keel+f*", "haproxyt": "haproxy+f*"}
m = {}
print(f"  {'proxy':10} {'requests/s':>11} {'p99 (us)':>9} {'CPU us/req':>11} {'failed':>7}"
      "   (median round by requests/s, its p99; CPU: median of the rounds)")
for n in ("keel", "keelf", "haproxy", "haproxyf", "keelt", "haproxyt"):
    r = med(rows[n], 0)
    cpu = med(rows[n], 3)[3]
    m[n] = (r[0], r[2], cpu)
    failed = sum(int(x[5]) for x in rows[n])
    print(f"  {label[n]:10} {r[0]:11.0f} {r[2]:9.0f} {cpu:11.2f} {failed:7d}")
def ratio(a, b):
    return (f"requests/s x{m[a][0] / m[b][0]:.2f}, p99 x{m[a][1] / m[b][1]:.2f},"
            f" CPU per request x{m[a][2] / m[b][2]:.2f}")
print(f"  keel features on / off: {ratio('keelf', 'keel')}  (target >= 0.9x requests/s)")
print(f"  haproxy features on / off: {ratio('haproxyf', 'haproxy')}")
print(f"  keel+f / haproxy+f: {ratio('keelf', 'haproxyf')}")
# Each round runs keel and keel+f back to back (and the HAProxys): the ratio within a round is
# less moved by the load of the moment than the ratio of the medians.
def paired(a, b, i):
    rs = sorted(x[i] / y[i] for x, y in zip(rows[a], rows[b]))
    return f"median x{rs[(len(rs) - 1) // 2]:.2f} (x{rs[0]:.2f}-x{rs[-1]:.2f})"
for a, b in (("keelf", "keel"), ("haproxyf", "haproxy"), ("keelt", "keel"), ("haproxyt", "haproxy")):
    print(f"  {label[a]} / {label[b]} within each round: requests/s {paired(a, b, 0)},"
          f" CPU per request {paired(a, b, 3)}")
print("  *: a new token on each request (4,096 in turn: keel's cache of 256 verified tokens misses)")
print(f"  spans keel+f exported (1% sampling): {sys.argv[2]}")
print("  all rounds (requests/s / p99 us / CPU us per request): " + "; ".join(
    f"{label[n]} " + ", ".join(f"{r[0]:.0f}/{r[2]:.0f}/{r[3]:.1f}" for r in rows[n]) for n in rows))
PY
