/* service.c - the service kit's HTTP server: routes, health, metrics, graceful drain. */
#include "kit/service.h"

#include "base/buf.h"
#include "kit/discovery.h"
#include "runtime/clock.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVICE_ROUTES_MAX KEEL_ROUTER_ROUTES_MAX

keel_service_config_t keel_service_config_default(const char *name)
{
    return (keel_service_config_t){
        .name = name,
        .listen = "127.0.0.1:0",
        .drain_timeout_ms = 10000,
        .http = keel_http_server_config_default(),
        .ttl_ms = 5000,
        .deregister_wait_ms = 2000,
        .idem = keel_idem_config_default(),
        .zone = getenv(KEEL_ZONE_ENV),
    };
}

/* ---- registration (kit/registration.h) ----------------------------------------------- */

static void start_shutdown(keel_service_t *s);

static int reg_start(keel_service_t *s, keel_errmsg_t *msg)
{
    char labels[KEEL_METRICS_LABELS_BYTES_MAX];
    snprintf(labels, sizeof(labels), "service=\"%s\"", s->name);
    keel_registration_config_t rc = keel_registration_config_default();
    rc.registry = s->cfg.registry;
    rc.service = s->name;
    rc.instance_id = s->instance_id;
    rc.address = s->advertise;
    rc.port = keel_service_port(s);
    rc.ttl_ms = s->cfg.ttl_ms;
    const char *zone_meta[] = {KEEL_DISCOVERY_ZONE_META, s->cfg.zone};
    if (s->cfg.zone != NULL && s->cfg.zone[0] != '\0') {
        rc.meta = zone_meta;
        rc.meta_count = 1;
    }
    rc.metrics = s->metrics;
    rc.labels = labels;
    return keel_registration_start(&s->reg, s->loop, &rc, msg);
}

/* The registry's part is over. */
static void reg_close(keel_service_t *s)
{
    if (s->reg != NULL) {
        keel_registration_close(s->reg);
        s->reg = NULL;
    }
}

static void deregistered(keel_registration_t *r, void *data)
{
    start_shutdown(data); /* acknowledged, or no answer in time (the TTL will remove it) */
}

bool keel_service_registered(const keel_service_t *s)
{
    return s->reg != NULL && keel_registration_registered(s->reg);
}

/* A request on its way: answered now or later, its route's metrics taken when it is. */
typedef struct pending {
    keel_service_req_t req;
    keel_service_route_t *route;
    uint64_t start_ns;
} pending_t;

static void answered(keel_http_req_t *hr, int status, void *data)
{
    pending_t *p = data;
    keel_service_t *s = p->req.svc;
    int cls = status / 100;
    if (cls >= 1 && cls <= 5 && p->route->by_class[cls])
        keel_counter_inc(p->route->by_class[cls]);
    if (p->route->latency != NULL)
        keel_histogram_observe(p->route->latency,
                               (double)((uint64_t)keel_clock_now_ns() - p->start_ns) / 1e9);
    keel_gauge_add(s->inflight, -1);
    free(p);
    if (!s->in_handler) { /* an async answer: its continuation's lines were this request's */
        keel_log_set_trace_id(NULL);
        keel_log_set_request_id(NULL);
    }
}

static int respond_text(keel_http_req_t *hr, int status, const char *text)
{
    return keel_http_respond_body(hr, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* The built-in routes, before the service's own. 1 if answered. */
static int builtin(keel_service_t *s, keel_http_req_t *hr, const keel_http_msg_t *m)
{
    if (m->method != HTTP_GET && m->method != HTTP_HEAD)
        return 0;
    if (m->path_len == 12 && memcmp(m->path, "/health/live", 12) == 0) {
        respond_text(hr, 200, "live\n");
        return 1;
    }
    if (m->path_len == 13 && memcmp(m->path, "/health/ready", 13) == 0) {
        int ready = s->started && !s->draining && s->app_ready;
        respond_text(hr, ready ? 200 : 503,
                     ready         ? "ready\n"
                     : s->draining ? "draining\n"
                                   : "not ready\n");
        return 1;
    }
    if (m->path_len == 8 && memcmp(m->path, "/metrics", 8) == 0) {
        keel_buf_t b;
        keel_buf_init(&b, 0);
        if (keel_metrics_render(s->metrics, &b) != 0)
            keel_http_respond_error(hr, 500, "metrics too large");
        else
            keel_http_respond_body(hr, 200, "text/plain; version=0.0.4", keel_buf_rptr(&b),
                                   keel_buf_unread(&b));
        keel_buf_free(&b);
        return 1;
    }
    return 0;
}

bool keel_service_request_id_ok(const char *v, size_t n)
{
    if (n == 0 || n > KEEL_SERVICE_REQUEST_ID_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || strchr("-_.:@+=/", ch) != NULL;
        if (!ok || ch == 0)
            return false;
    }
    return true;
}

/* The caller's X-Request-Id if it is safe to keep (it goes into logs and other requests),
 * else a new one. */
static void take_request_id(keel_service_t *s, const keel_http_msg_t *m, char *out)
{
    size_t n;
    const char *v = keel_http_msg_header(m, KEEL_SERVICE_REQUEST_ID_HEADER, &n);
    if (v != NULL && keel_service_request_id_ok(v, n)) {
        memcpy(out, v, n);
        out[n] = 0;
        return;
    }
    snprintf(out, KEEL_SERVICE_REQUEST_ID_BYTES_MAX + 1, "%016llx%016llx",
             (unsigned long long)keel_rand_u64(&s->rand),
             (unsigned long long)keel_rand_u64(&s->rand));
}

/* Runs the route's handler with the request's trace id on the thread's log lines (now, or
 * once the idempotency store said to run it). */
static void run_route(void *data)
{
    pending_t *p = data;
    keel_service_t *s = p->req.svc;
    keel_log_set_trace_id(p->req.trace_id);
    keel_log_set_request_id(p->req.request_id);
    s->in_handler = true;
    p->route->fn(&p->req, p->route->data); /* p may be freed from here on */
    s->in_handler = false;
    keel_log_set_trace_id(NULL);
    keel_log_set_request_id(NULL);
}

static void dispatch(keel_http_req_t *hr, void *data)
{
    keel_service_t *s = data;
    const keel_http_msg_t *m = hr->msg;
    if (builtin(s, hr, m))
        return;
    const char *method = http_method_str((enum http_method)m->method);
    keel_route_match_t match;
    int rc = keel_router_match(&s->router, method, strlen(method), m->path, m->path_len, &match);
    if (rc == KEEL_ENOTFOUND) {
        keel_http_respond_error(hr, 404, "no such route");
        return;
    }
    if (rc == KEEL_EREJECTED) {
        keel_http_header_t allow = {
            .name = "Allow", .value = match.allow, .name_len = 5, .value_len = strlen(match.allow)};
        const char *body = "{\"error\":{\"code\":405,\"message\":\"method not allowed\"}}";
        keel_http_header_t h[2] = {
            allow,
            {.name = "Content-Type", .value = "application/json", .name_len = 12, .value_len = 16}};
        keel_http_respond(hr, 405, h, 2, body, strlen(body));
        return;
    }
    pending_t *p = malloc(sizeof(*p));
    if (p == NULL) {
        keel_http_respond_error(hr, 503, "out of memory");
        return;
    }
    p->req = (keel_service_req_t){.http = hr, .svc = s, .route = match};
    keel_trace_ctx_t parent;
    size_t tn;
    const char *tp = keel_http_msg_header(m, "traceparent", &tn);
    if (tp != NULL && keel_trace_parse_traceparent(tp, tn, &parent) == 0)
        keel_trace_child(&parent, &s->rand, &p->req.trace);
    else
        keel_trace_new_root(&s->rand, 0, &p->req.trace);
    keel_trace_id_hex(&p->req.trace, p->req.trace_id);
    take_request_id(s, m, p->req.request_id);
    keel_http_req_set_response_field(hr, KEEL_SERVICE_REQUEST_ID_HEADER, p->req.request_id);
    p->route = &s->routes[match.route];
    p->start_ns = (uint64_t)keel_clock_now_ns();
    keel_gauge_add(s->inflight, 1);
    keel_http_req_on_answer(hr, answered, p);
    size_t key_len;
    const char *key;
    if (p->route->idempotent && m->method != HTTP_GET && m->method != HTTP_HEAD &&
        (key = keel_http_msg_header(m, "Idempotency-Key", &key_len)) != NULL) {
        keel_idem_handle(s->idem, hr, key, key_len, run_route, p);
        return;
    }
    run_route(p);
}

void keel_service_req_enter(const keel_service_req_t *req)
{
    keel_log_set_trace_id(req->trace_id);
    keel_log_set_request_id(req->request_id);
}

static int idem_start(keel_service_t *s, keel_errmsg_t *msg)
{
    keel_idem_config_t ic = s->cfg.idem;
    if (ic.prefix == NULL) {
        snprintf(s->idem_prefix, sizeof(s->idem_prefix), "idem:%s:", s->name);
        ic.prefix = s->idem_prefix;
    }
    if ((s->idem = malloc(sizeof(*s->idem))) == NULL)
        return KEEL_ENOMEM;
    char labels[KEEL_METRICS_LABELS_BYTES_MAX];
    snprintf(labels, sizeof(labels), "service=\"%s\"", s->name);
    int rc = keel_idem_init(s->idem, s->loop, &ic, s->metrics, labels, msg);
    if (rc != 0) {
        free(s->idem);
        s->idem = NULL;
    }
    return rc;
}

static void idem_closed(keel_idem_t *idem)
{
    free(idem);
}

int keel_service_init(keel_service_t *s, keel_loop_t *loop, const keel_service_config_t *cfg,
                      keel_errmsg_t *msg)
{
    memset(s, 0, sizeof(*s));
    if (cfg->name == NULL || cfg->name[0] == '\0' ||
        strlen(cfg->name) >= KEEL_SERVICE_NAME_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "service: a name of 1 to %u bytes",
                         KEEL_SERVICE_NAME_BYTES_MAX - 1);
    for (const char *c = cfg->name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
            return keel_errf(msg, KEEL_EINVAL, "service: name %s: lower case, digits, - and _",
                             cfg->name);
    s->cfg = *cfg;
    strcpy(s->name, cfg->name);
    s->cfg.name = s->name;
    s->loop = loop;
    s->app_ready = true;
    keel_rand_seed(&s->rand, (uint64_t)keel_clock_unix_ms() ^ (uint64_t)getpid() << 40 ^
                                 (uint64_t)(uintptr_t)s);
    keel_router_init(&s->router);
    if ((s->metrics = keel_metrics_new()) == NULL)
        return KEEL_ENOMEM;
    char labels[KEEL_METRICS_LABELS_BYTES_MAX];
    snprintf(labels, sizeof(labels), "service=\"%s\"", s->name);
    s->inflight = keel_metrics_gauge(s->metrics, "keel_service_requests_in_flight",
                                     "Requests being handled (saturation).", labels);
    keel_http_server_config_t hc = cfg->http;
    hc.drain_timeout_ms = cfg->drain_timeout_ms;
    hc.metrics = s->metrics;
    hc.metrics_labels = NULL;
    const keel_http_route_t all = {KEEL_HTTP_ANY_METHOD, "/", dispatch, s};
    /* the idempotency store first: it lives in its own allocation, so undoing it (a close
       that ends later, on the loop) does not need s to outlive this call */
    int rc = cfg->idem.servers != NULL ? idem_start(s, msg) : 0;
    if (rc == 0 && (rc = keel_http_server_init(&s->http, loop, &hc, &all, 1, msg)) != 0 &&
        s->idem != NULL) {
        keel_idem_close(s->idem, idem_closed);
        s->idem = NULL;
    }
    if (rc != 0)
        keel_metrics_free(s->metrics);
    return rc;
}

int keel_service_route_idem(keel_service_t *s, const char *method, const char *pattern,
                            keel_service_handler_fn fn, void *data, keel_errmsg_t *msg)
{
    if (s->idem == NULL)
        return keel_errf(msg, KEEL_EINVAL,
                         "service: route %s: idempotency keys need cfg.idem.servers", pattern);
    int rc = keel_service_route(s, method, pattern, fn, data, msg);
    if (rc == 0)
        s->routes[s->routes_n - 1].idempotent = true;
    return rc;
}

int keel_service_route(keel_service_t *s, const char *method, const char *pattern,
                       keel_service_handler_fn fn, void *data, keel_errmsg_t *msg)
{
    if (s->started)
        return keel_errf(msg, KEEL_EINVAL, "service: routes are added before start");
    if (s->routes_n == s->routes_cap) {
        size_t cap = s->routes_cap ? s->routes_cap * 2 : 16;
        keel_service_route_t *t = realloc(s->routes, cap * sizeof(*t));
        if (t == NULL)
            return KEEL_ENOMEM;
        s->routes = t;
        s->routes_cap = cap;
    }
    int rc = keel_router_add(&s->router, method, pattern, NULL, msg);
    if (rc != 0)
        return rc;
    keel_service_route_t *r = &s->routes[s->routes_n++];
    memset(r, 0, sizeof(*r));
    r->fn = fn;
    r->data = data;
    /* labels fit KEEL_METRICS_LABELS_BYTES_MAX: a long pattern is shown as its route number */
    char labels[KEEL_METRICS_LABELS_BYTES_MAX], esc[96];
    if (keel_metrics_label_escape(esc, sizeof(esc), pattern) != 0)
        snprintf(esc, sizeof(esc), "route %zu", s->routes_n - 1);
    for (int c = 2; c <= 5; c++) {
        int n = snprintf(labels, sizeof(labels),
                         "service=\"%s\",method=\"%.15s\",route=\"%s\",code=\"%dxx\"", s->name,
                         method, esc, c);
        if (n < 0 || (size_t)n >= sizeof(labels))
            return keel_errf(msg, KEEL_ETOOBIG, "service: route %s: labels too long", pattern);
        r->by_class[c] =
            keel_metrics_counter(s->metrics, "keel_service_requests_total",
                                 "Requests answered, by route and status class.", labels);
    }
    snprintf(labels, sizeof(labels), "service=\"%s\",method=\"%.15s\",route=\"%s\"", s->name,
             method, esc);
    r->latency = keel_metrics_histogram(s->metrics, "keel_service_request_seconds",
                                        "Time from dispatch to answer, by route.", labels, NULL, 0);
    return 0;
}

static void drain_hook(void *data)
{
    keel_service_drain(data);
}

static void drained(keel_http_server_t *srv, void *data)
{
    keel_service_t *s = data;
    s->stopped = true;
    if (s->idem != NULL) { /* every request is answered: no claim is left waiting */
        keel_idem_close(s->idem, idem_closed);
        s->idem = NULL;
    }
    if (s->cfg.on_stopped != NULL)
        s->cfg.on_stopped(s, s->cfg.on_drain_data);
}

/* After deregistration (or without a registry): the listener closes, requests finish. */
static void start_shutdown(keel_service_t *s)
{
    if (s->shutdown_started)
        return;
    s->shutdown_started = true;
    reg_close(s);
    keel_http_server_shutdown(&s->http, drained, s);
}

void keel_service_drain(keel_service_t *s)
{
    if (s->draining)
        return;
    s->draining = true;
    if (s->cfg.on_drain != NULL)
        s->cfg.on_drain(s, s->cfg.on_drain_data);
    if (s->reg == NULL) {
        start_shutdown(s);
        return;
    }
    /* deregister first: callers stop picking this instance while it still answers */
    keel_registration_deregister(s->reg, s->cfg.deregister_wait_ms, deregistered, s);
}

int keel_service_start(keel_service_t *s, keel_errmsg_t *msg)
{
    int rc = keel_http_server_listen(&s->http, s->cfg.listen, msg);
    if (rc != 0)
        return rc;
    rc = keel_loop_on_shutdown(s->loop, drain_hook, s);
    if (rc != 0)
        return keel_errf(msg, rc, "service: no room for the drain hook");
    s->started = true;
    if (s->cfg.registry == NULL)
        return 0;
    /* who we are: the listen host (or --advertise), the bound port */
    if (s->cfg.advertise != NULL) {
        snprintf(s->advertise, sizeof(s->advertise), "%s", s->cfg.advertise);
    } else {
        const char *colon = strrchr(s->cfg.listen, ':');
        size_t n = colon ? (size_t)(colon - s->cfg.listen) : strlen(s->cfg.listen);
        snprintf(s->advertise, sizeof(s->advertise), "%.*s", (int)n, s->cfg.listen);
    }
    if (s->cfg.instance_id != NULL)
        snprintf(s->instance_id, sizeof(s->instance_id), "%s", s->cfg.instance_id);
    else
        snprintf(s->instance_id, sizeof(s->instance_id), "%s-%s-%d", s->name, s->advertise,
                 keel_service_port(s));
    return reg_start(s, msg);
}

int keel_service_port(keel_service_t *s)
{
    return keel_http_server_port(&s->http);
}

void keel_service_set_ready(keel_service_t *s, bool ready)
{
    s->app_ready = ready;
}

void keel_service_free(keel_service_t *s)
{
    keel_router_free(&s->router);
    free(s->routes);
    keel_metrics_free(s->metrics);
    s->routes = NULL;
    s->metrics = NULL;
}

int keel_service_respond_json(keel_service_req_t *req, int status, const json_t *json)
{
    char *text = json_dumps(json, JSON_COMPACT);
    if (text == NULL)
        return keel_http_respond_error(req->http, 500, "cannot encode the answer");
    int rc = keel_http_respond_body(req->http, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}
