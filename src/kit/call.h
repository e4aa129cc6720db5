/* call.h - outbound calls from a service to another service by name: discovery, a balancer,
 * a breaker per instance, retries with backoff and a budget, the deadline and trace context
 * carried from the incoming request. The policy cores are the ones keel proxy uses. */
#ifndef KEEL_KIT_CALL_H
#define KEEL_KIT_CALL_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "core/balance.h"
#include "core/breaker.h"
#include "core/retry.h"
#include "kit/discovery.h"
#include "kit/service.h"
#include "proto/trace.h"
#include "runtime/http_client.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>

/*
 *   keel_caller_t inv;
 *   keel_caller_config_t cc = keel_caller_config_default("inventory");
 *   cc.registry = "127.0.0.1:7001,127.0.0.1:7002";   // or cc.endpoints = "127.0.0.1:9001,..."
 *   keel_caller_init(&inv, &loop, &cc, svc.metrics, &msg);
 *   ...
 *   // in a handler: the deadline and the trace come from the request being served
 *   keel_call_t c = keel_call_from(req, HTTP_POST, "/reserve");
 *   c.body = json; c.body_len = n; c.idempotent = true;   // the body carries a key
 *   keel_caller_call(&inv, &c, on_reserved, ctx);
 *   static void on_reserved(int err, const keel_http_msg_t *resp, void *ctx) { ... }
 *
 * One call:
 *   1. Instances: the service's passing instances from the registry (kit/discovery.c, kept
 *      current by a blocking query, the last list kept through a registry outage), or a
 *      static list.
 *   2. Pick one with the balancer (default p2c: two random instances, the one with fewer
 *      calls in flight), skipping instances whose breaker is open; an open breaker's
 *      instance comes back when its open time is over (half open: a few probes).
 *   3. Send it with the http client (keep-alive pools per instance); the attempt's timeout
 *      is min(per_try_timeout, time left before the deadline). The request carries
 *      `traceparent` (a child span of the caller's) and `x-keel-timeout-ms` (the time left),
 *      so the callee's own calls stop at the same deadline (keel_call_from reads both).
 *   4. A failure (connect refused, reset, timeout, a 5xx) counts against that instance's
 *      breaker; the retry policy (core/retry.h) decides whether to try again and when
 *      (capped exponential backoff with full jitter, inside the deadline, within a retry
 *      budget shared by every call of this caller). A request whose method is not
 *      idempotent is retried only after a connect failure, unless the call says it is
 *      idempotent (an Idempotency-Key, a key in the body).
 * The callback runs exactly once, from the loop, never from keel_caller_call():
 *   0                  resp is the last attempt's response (any status; valid during the
 *                      callback only)
 *   KEEL_EEMPTY        the service has no instance (none registered, or none passing)
 *   KEEL_EREJECTED     every instance's breaker is open
 *   KEEL_ETIMEDOUT     the deadline passed
 *   KEEL_ECONNREFUSED, KEEL_ECONNRESET, KEEL_EPROTO, KEEL_ETOOBIG
 *                      the last attempt's transport error (attempts or budget spent)
 *   KEEL_EBUSY         more than calls_max calls in flight
 *   KEEL_ECANCELED     keel_caller_close() ran first
 */
#define KEEL_CALLER_ENDPOINTS_MAX KEEL_DISCOVERY_INSTANCES_MAX
#define KEEL_CALLER_HEADERS_MAX 32u        /* headers a call may add */
#define KEEL_CALLER_CALLS_MAX 65536u       /* calls in flight per caller */
#define KEEL_CALLER_TIMEOUT_MS_MAX 3600000 /* one hour */
#define KEEL_CALL_TIMEOUT_HEADER "x-keel-timeout-ms"

typedef struct keel_caller_config {
    const char *service;   /* the callee's name: the registry name and the metrics label */
    const char *registry;  /* keel server client addresses "h:p,h:p"; or NULL and: */
    const char *endpoints; /* a static list "host:port,host:port" */
    const char *tag;       /* registry: only instances with this tag; may be NULL */
    const char *policy;    /* balancer name (core/balance.h); default "p2c" */
    /* This caller's zone: registry instances of another zone (meta zone) take calls only
     * while none of this zone is usable (core/balance.h's priorities; a retry whose one
     * local instance failed goes to another zone). Default $KEEL_ZONE; NULL or "": none. */
    const char *zone;
    keel_breaker_config_t breaker; /* per instance; default: trips at 50% of 20 calls or 5
                                      failures in a row, open 5 s */
    keel_retry_config_t retry;     /* one budget per caller; default core/retry's, with a
                                      per-try timeout of 1 s */
    keel_ms_t timeout_ms;          /* a call's deadline when it carries none; default 5000 */
    keel_http_client_config_t http;
    uint64_t seed; /* the balancer's and the jitter's PRNG */
} keel_caller_config_t;

/* One call. Strings and buffers are copied by keel_caller_call(). */
typedef struct keel_call {
    int method;                        /* enum http_method */
    const char *target;                /* "/path?query" */
    const keel_http_header_t *headers; /* extra headers (name, value; lengths may be 0) */
    size_t headers_count;
    const void *body;
    size_t body_len;
    keel_ms_t deadline_ms;  /* on the loop's clock; 0: now + cfg.timeout_ms */
    bool has_trace;         /* trace: the caller's span (the call is its child) */
    keel_trace_ctx_t trace; /* without one, the call starts a new trace */
    bool idempotent;        /* safe to retry whatever the method */
    uint64_t key_hash;      /* affinity for ring/maglev/hash balancers; 0 none */
    /* sent as X-Request-Id (copied; at most KEEL_SERVICE_REQUEST_ID_BYTES_MAX bytes, else
     * not sent); NULL: none. keel_call_from sets the served request's. */
    const char *request_id;
} keel_call_t;

typedef void (*keel_call_cb)(int err, const keel_http_msg_t *resp, void *data);

typedef struct keel__caller_ep keel__caller_ep_t;
typedef struct keel__call keel__call_t;

typedef struct keel_caller_stats {
    uint64_t calls, attempts, retries, ok, failed, breaker_rejections, no_instance;
} keel_caller_stats_t;

typedef struct keel_caller {
    keel_caller_config_t cfg;
    char service[KEEL_DISCOVERY_ID_BYTES_MAX];
    keel_loop_t *loop;
    keel_http_client_t http;
    keel_balance_t bal;
    keel_retry_t retry;
    keel_rand_t rand;
    keel__caller_ep_t *ep; /* the current instances, in balancer order */
    uint32_t ep_n;
    keel_discovery_t *disc; /* NULL for a static list */
    keel__call_t *waiting;  /* calls waiting for their retry's start, earliest first */
    keel_timer_t timer;     /* fires for waiting's head */
    uint32_t inflight;
    int closing; /* handles still to close once closing */
    void (*closed)(struct keel_caller *c, void *data);
    void *closed_data;
    keel_caller_stats_t stats;
    keel_counter_t *m_calls_ok, *m_calls_failed, *m_retries, *m_rejected;
    keel_histogram_t *m_latency;
} keel_caller_t;

keel_caller_config_t keel_caller_config_default(const char *service);
/* metrics may be NULL. */
int keel_caller_init(keel_caller_t *c, keel_loop_t *loop, const keel_caller_config_t *cfg,
                     keel_metrics_t *metrics, keel_errmsg_t *msg);
/* 0: cb runs later, exactly once. Negative (KEEL_EINVAL, KEEL_ETOOBIG, KEEL_ENOMEM,
 * KEEL_ECLOSED): cb will not run. */
int keel_caller_call(keel_caller_t *c, const keel_call_t *call, keel_call_cb cb, void *data);
/* Fails calls in flight with KEEL_ECANCELED; closed (may be NULL) runs once every handle is
 * closed: then c may be freed. */
void keel_caller_close(keel_caller_t *c, void (*closed)(keel_caller_t *c, void *data), void *data);
/* Instances the caller currently knows, and how many have an open breaker. */
uint32_t keel_caller_instances(const keel_caller_t *c, uint32_t *open);

/* A call that carries the deadline (x-keel-timeout-ms), trace context (traceparent) and
 * request id (X-Request-Id) of the request being served; without them, now + the caller's timeout
 * and a new trace. */
keel_call_t keel_call_from(const keel_service_req_t *in, int method, const char *target);

#endif
