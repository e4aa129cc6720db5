/* service.h - the service kit: a microservice's HTTP server with routes, health, metrics
 * and a graceful drain. The manual for a service author; docs/kit.md has the design. */
#ifndef KEEL_KIT_SERVICE_H
#define KEEL_KIT_SERVICE_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "client/client.h"
#include "kit/registration.h"
#include "proto/router.h"
#include "proto/trace.h"
#include "runtime/http_server.h"
#include "runtime/loop.h"
#include "tx/idem.h"

#include <jansson.h>

#include <stdbool.h>

/*
 * Writing a service:
 *
 *   keel_service_t svc;
 *   keel_service_config_t cfg = keel_service_config_default("orders");
 *   cfg.listen = "127.0.0.1:8080";
 *   keel_service_init(&svc, &loop, &cfg, &msg);
 *   keel_service_route(&svc, "GET", "/orders/:id", get_order, app, &msg);
 *   keel_service_start(&svc, &msg);       // listens; ready from now on
 *   keel_loop_run(&loop);                  // until SIGTERM/SIGINT and the drain end
 *
 * A handler gets a keel_service_req_t: the HTTP request, the route's parameters, and
 * answers with keel_http_respond*() (now, or later from a callback: async is fine).
 *
 * Built in, always:
 *   GET /health/live   200 while the process runs
 *   GET /health/ready  200 once started and until the drain starts (and while the service
 *                      says it is ready: keel_service_set_ready), else 503
 *   GET /metrics       Prometheus text: per route, requests by status class and a latency
 *                      histogram (the golden signals: traffic, errors, latency), in-flight
 *                      requests (saturation)
 * On SIGTERM or SIGINT (keel_loop_handle_signals): ready turns 503, the service's
 * on_drain runs (deregister here: callers stop picking this instance), new connections
 * are refused, requests in flight finish within drain_timeout_ms, then the loop stops.
 */

#define KEEL_SERVICE_NAME_BYTES_MAX 64u

typedef struct keel_service keel_service_t;

#define KEEL_SERVICE_REQUEST_ID_BYTES_MAX 128u
#define KEEL_SERVICE_REQUEST_ID_HEADER "X-Request-Id"

/* Whether v[0..n) may be kept as a request id (the rule above). */
bool keel_service_request_id_ok(const char *v, size_t n);

typedef struct keel_service_req {
    keel_http_req_t *http; /* answer with keel_http_respond*(req->http, ...) */
    keel_service_t *svc;
    keel_route_match_t route; /* params: route.params[0..route.n) */
    /* This request's span: a child of the caller's `traceparent`, or a new trace. Its trace
     * id is on every log line the handler writes (and keel_call_from() makes outbound calls
     * its children). An async continuation calls keel_service_req_enter() first. */
    keel_trace_ctx_t trace;
    char trace_id[KEEL_LOG_TRACE_ID_BYTES + 1];
    /* The caller's X-Request-Id when it is 1..KEEL_SERVICE_REQUEST_ID_BYTES_MAX bytes of
     * letters, digits and -_.:@+=/ (anything else is replaced), else a new one (32 hex digits).
     * It is on every log line the handler writes ("request_id"), echoed on the answer and sent
     * on the handler's outbound calls (keel_call_from). */
    char request_id[KEEL_SERVICE_REQUEST_ID_BYTES_MAX + 1];
} keel_service_req_t;

typedef void (*keel_service_handler_fn)(keel_service_req_t *req, void *data);

typedef struct keel_service_config {
    const char *name;   /* the service's name (metrics label, registry name) */
    const char *listen; /* host:port, port 0 for any */
    keel_ms_t drain_timeout_ms;
    keel_http_server_config_t http; /* limits and timeouts */
    /* Called once the drain starts (before new connections are refused); may be NULL. */
    void (*on_drain)(keel_service_t *svc, void *data);
    /* Called once the drain is over (every request answered, or drain_timeout_ms passed):
     * close what the handlers used (clients, timers) so that the loop can end. May be NULL;
     * it gets on_drain_data too. */
    void (*on_stopped)(keel_service_t *svc, void *data);
    void *on_drain_data;
    /* Registration in keel server's registry (docs/registry.md); registry NULL: none.
     * The instance is registered once listening, kept alive by a heartbeat every ttl_ms / 3
     * (registered again if the registry forgot it), and deregistered first thing in the
     * drain, before the listener closes: callers stop picking it while it still answers. */
    const char *registry;         /* "host:port,host:port": keel server client addresses */
    const char *instance_id;      /* default "<name>-<host>-<port>" */
    const char *advertise;        /* the address callers use; default the listen host */
    keel_ms_t ttl_ms;             /* default 5000 */
    const char *zone;             /* registered as meta zone; default $KEEL_ZONE, NULL none */
    keel_ms_t deregister_wait_ms; /* the drain waits this long for DEREGISTER; default 2000 */
    /* Idempotency keys (tx/idem.h has the semantics): with idem.servers set, routes added
     * with keel_service_route_idem() honour an Idempotency-Key header, keys kept in keel
     * server under idem.prefix (default "idem:<name>:"), for idem.ttl_ms. */
    keel_idem_config_t idem;
} keel_service_config_t;

#define KEEL_SERVICE_REGISTRY_SEEDS_MAX KEEL_CLIENT_SEEDS_MAX
#define KEEL_SERVICE_ID_BYTES_MAX 160u

/* One route's metrics. */
typedef struct keel_service_route {
    keel_service_handler_fn fn;
    void *data;
    keel_counter_t *by_class[6]; /* [2] 2xx ... [5] 5xx */
    keel_histogram_t *latency;
    bool idempotent; /* honours Idempotency-Key (keel_service_route_idem) */
} keel_service_route_t;

struct keel_service {
    keel_service_config_t cfg;
    char name[KEEL_SERVICE_NAME_BYTES_MAX];
    keel_loop_t *loop;
    keel_http_server_t http;
    keel_router_t router;
    keel_service_route_t *routes; /* by router position */
    size_t routes_n, routes_cap;
    keel_metrics_t *metrics;
    keel_gauge_t *inflight;
    keel_rand_t rand; /* span ids */
    bool started, draining, app_ready, stopped, in_handler;
    /* registration (kit/registration.h) */
    keel_registration_t *reg; /* NULL without a registry */
    bool shutdown_started;
    char instance_id[KEEL_SERVICE_ID_BYTES_MAX];
    char advertise[64];
    /* idempotency keys: NULL without cfg.idem.servers */
    keel_idem_t *idem;
    char idem_prefix[KEEL_IDEM_PREFIX_BYTES_MAX];
};

keel_service_config_t keel_service_config_default(const char *name);
int keel_service_init(keel_service_t *s, keel_loop_t *loop, const keel_service_config_t *cfg,
                      keel_errmsg_t *msg);
/* A route: method ("GET", ..., or "*"), pattern (proto/router.h). Before start. */
int keel_service_route(keel_service_t *s, const char *method, const char *pattern,
                       keel_service_handler_fn fn, void *data, keel_errmsg_t *msg);
/* The same, for a route whose requests may carry an Idempotency-Key: a repeat with the same
 * key and request gets the first answer without running fn again; the same key with another
 * request 422; while the first still runs 409 (tx/idem.h). Needs cfg.idem.servers. GET and
 * HEAD requests are never claimed. */
int keel_service_route_idem(keel_service_t *s, const char *method, const char *pattern,
                            keel_service_handler_fn fn, void *data, keel_errmsg_t *msg);
/* Listens, registers the drain on the loop's shutdown hooks and turns ready. */
int keel_service_start(keel_service_t *s, keel_errmsg_t *msg);
int keel_service_port(keel_service_t *s);
/* The service's own readiness (e.g. false while a dependency is down). Default true. */
void keel_service_set_ready(keel_service_t *s, bool ready);
/* Starts the drain now (what SIGTERM does). */
void keel_service_drain(keel_service_t *s);
/* After the loop ended. */
void keel_service_free(keel_service_t *s);

/* Whether the registry has acknowledged this instance's registration (and it has not been
 * deregistered since). */
bool keel_service_registered(const keel_service_t *s);

/* Puts req's trace id on this thread's log lines again (for a handler's async
 * continuation; the kit clears it when the handler returns and when req is answered). */
void keel_service_req_enter(const keel_service_req_t *req);

/* Answers req with a JSON body (application/json); the json is not consumed. */
int keel_service_respond_json(keel_service_req_t *req, int status, const json_t *json);

#endif
