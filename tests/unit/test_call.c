/* test_call.c - the kit's outbound calls against real HTTP servers on one loop: retries move
 * to a healthy instance, a breaker takes a failing one out, POST is not retried after it may
 * have been seen, the deadline bounds a call, the trace and the time left travel, no instance
 * is an error. */
#include "base/log.h"
#include "kit/call.h"
#include "kit/service.h"
#include "ktest.h"
#include "runtime/http_server.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELD_MAX 64

typedef struct server {
    keel_http_server_t http;
    const char *name;
    int status; /* what it answers; 0: never answers (holds) */
    int seen;
    char addr[64];
} server_t;

static keel_http_req_t *held[HELD_MAX];
static int held_n;

static void handle(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    s->seen++;
    if (s->status == 0) {
        if (held_n < HELD_MAX)
            held[held_n++] = req;
        return;
    }
    char body[256];
    size_t tn = 0, dn = 0;
    const char *tp = keel_http_msg_header(req->msg, "traceparent", &tn);
    const char *dl = keel_http_msg_header(req->msg, KEEL_CALL_TIMEOUT_HEADER, &dn);
    size_t rn = 0; /* the request id, after the timeout's digits (atol stops at '|') */
    const char *rid = keel_http_msg_header(req->msg, "x-request-id", &rn);
    int n = snprintf(body, sizeof(body), "%s %.*s %.*s|rid=%.*s", s->name, (int)tn, tp ? tp : "",
                     (int)dn, dl ? dl : "", (int)rn, rid ? rid : "");
    keel_http_respond_body(req, s->status, "text/plain", body, (size_t)n);
}

typedef struct env {
    keel_loop_t loop;
    server_t srv[3];
    int srv_n;
    keel_caller_t caller;
    int calls_done, caller_closed;
} env_t;

static void serve(env_t *e, const char *name, int status)
{
    server_t *s = &e->srv[e->srv_n++];
    s->name = name;
    s->status = status;
    keel_http_route_t routes[] = {{KEEL_HTTP_ANY_METHOD, "/", handle, s}};
    keel_http_server_config_t cfg = keel_http_server_config_default();
    cfg.drain_timeout_ms = 100;
    KT_EQ_INT(keel_http_server_init(&s->http, &e->loop, &cfg, routes, 1, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&s->http, "127.0.0.1:0", NULL), 0);
    snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", keel_http_server_port(&s->http));
}

static void caller_closed(keel_caller_t *c, void *data)
{
    (void)c;
    ((env_t *)data)->caller_closed++;
}

static void env_finish(env_t *e)
{
    keel_caller_close(&e->caller, caller_closed, e);
    for (int i = 0; i < held_n; i++)
        keel_http_respond_body(held[i], 200, "text/plain", "late", 4);
    held_n = 0;
    for (int i = 0; i < e->srv_n; i++)
        keel_http_server_shutdown(&e->srv[i].http, NULL, NULL);
    keel_loop_run(&e->loop);
    KT_EQ_INT(e->caller_closed, 1);
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
}

typedef struct result {
    env_t *e;
    int err, status, done;
    char body[256];
} result_t;

static void on_call(int err, const keel_http_msg_t *resp, void *data)
{
    result_t *r = data;
    r->done++;
    r->err = err;
    if (resp != NULL) {
        r->status = resp->status;
        size_t n = resp->body_len < sizeof(r->body) - 1 ? resp->body_len : sizeof(r->body) - 1;
        memcpy(r->body, resp->body, n);
        r->body[n] = '\0';
    }
    r->e->calls_done++;
}

static void run_until(env_t *e, int calls)
{
    while (e->calls_done < calls)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
}

static void start(env_t *e)
{
    memset(e, 0, sizeof(*e));
    held_n = 0;
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
}

static void caller(env_t *e, const char *endpoints, keel_caller_config_t *cfg)
{
    keel_caller_config_t def = keel_caller_config_default("callee");
    if (cfg == NULL)
        cfg = &def;
    cfg->endpoints = endpoints;
    keel_errmsg_t msg;
    int rc = keel_caller_init(&e->caller, &e->loop, cfg, NULL, &msg);
    if (rc != 0)
        KT_FAIL("caller init: %s", msg.text);
}

static void retries_move_to_a_healthy_instance_and_a_breaker_opens(void)
{
    env_t e;
    start(&e);
    serve(&e, "good", 200);
    serve(&e, "bad", 503);
    char eps[160];
    snprintf(eps, sizeof(eps), "%s,%s", e.srv[0].addr, e.srv[1].addr);
    keel_caller_config_t cfg = keel_caller_config_default("callee");
    cfg.policy = "round_robin";
    cfg.retry.backoff_base_ms = 1;
    cfg.retry.backoff_cap_ms = 2;
    cfg.retry.budget_pct = 0; /* this test counts retries exactly */
    caller(&e, eps, &cfg);
    enum { CALLS = 40 };
    result_t r[CALLS];
    for (int i = 0; i < CALLS; i++) {
        r[i] = (result_t){.e = &e};
        keel_call_t c = {.method = HTTP_GET, .target = "/x"};
        KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r[i]), 0);
        KT_EQ_INT(r[i].done, 0); /* never called back from inside the call */
        run_until(&e, i + 1);
    }
    for (int i = 0; i < CALLS; i++) {
        KT_EQ_INT(r[i].done, 1);
        KT_EQ_INT(r[i].err, 0);
        KT_EQ_INT(r[i].status, 200);
        KT_CHECK(strncmp(r[i].body, "good ", 5) == 0);
    }
    /* 5 failures in a row open the bad instance's breaker: it saw 5 calls, then none */
    KT_EQ_INT(e.srv[1].seen, 5);
    uint32_t open;
    KT_EQ_INT(keel_caller_instances(&e.caller, &open), 2);
    KT_EQ_INT(open, 1);
    KT_CHECK(e.caller.stats.breaker_rejections >= 1);
    KT_EQ_U64(e.caller.stats.retries, 5);
    env_finish(&e);
}

static void post_is_not_retried_once_it_may_have_been_seen(void)
{
    env_t e;
    start(&e);
    serve(&e, "bad", 503);
    serve(&e, "good", 200);
    char eps[160];
    snprintf(eps, sizeof(eps), "%s,%s", e.srv[0].addr, e.srv[1].addr);
    keel_caller_config_t cfg = keel_caller_config_default("callee");
    cfg.policy = "round_robin";
    caller(&e, eps, &cfg);
    /* round robin: of two POSTs, one goes to "bad" first and gets its 503 back unretried */
    result_t r[4];
    keel_call_t c = {.method = HTTP_POST, .target = "/orders", .body = "{}", .body_len = 2};
    for (int i = 0; i < 2; i++) {
        r[i] = (result_t){.e = &e};
        KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r[i]), 0);
        run_until(&e, i + 1);
    }
    KT_EQ_INT(r[0].status + r[1].status, 503 + 200);
    KT_EQ_INT(e.srv[0].seen, 1);
    KT_EQ_INT(e.srv[1].seen, 1);
    /* the same POST said idempotent (it carries a key) is retried on the good instance */
    c.idempotent = true;
    for (int i = 2; i < 4; i++) {
        r[i] = (result_t){.e = &e};
        KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r[i]), 0);
        run_until(&e, i + 1);
        KT_EQ_INT(r[i].err, 0);
        KT_EQ_INT(r[i].status, 200);
    }
    KT_EQ_INT(e.srv[0].seen, 3); /* round robin: each idempotent POST tried "bad" first */
    KT_EQ_INT(e.srv[1].seen, 3);
    env_finish(&e);
}

static void the_deadline_bounds_a_call_and_travels_with_the_trace(void)
{
    env_t e;
    start(&e);
    serve(&e, "hold", 0);
    keel_caller_config_t cfg = keel_caller_config_default("callee");
    cfg.retry.per_try_timeout_ms = 0;
    caller(&e, e.srv[0].addr, &cfg);
    result_t r = {.e = &e};
    keel_ms_t t0 = keel_loop_now_ms(&e.loop);
    keel_call_t c = {.method = HTTP_GET, .target = "/slow", .deadline_ms = t0 + 150};
    KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r), 0);
    run_until(&e, 1);
    uv_update_time(&e.loop.uv);
    keel_ms_t took = keel_loop_now_ms(&e.loop) - t0;
    KT_EQ_INT(r.err, KEEL_ETIMEDOUT);
    KT_CHECK(took >= 140 && took < 1000);
    env_finish(&e);

    /* a callee sees a child of the caller's trace and the time left */
    start(&e);
    serve(&e, "good", 200);
    caller(&e, e.srv[0].addr, NULL);
    keel_trace_ctx_t parent;
    keel_rand_t rnd;
    keel_rand_seed(&rnd, 7);
    keel_trace_new_root(&rnd, 1, &parent);
    char trace_hex[33];
    keel_trace_id_hex(&parent, trace_hex);
    result_t r2 = {.e = &e};
    keel_call_t c2 = {.method = HTTP_GET,
                      .target = "/t",
                      .has_trace = true,
                      .trace = parent,
                      .deadline_ms = keel_loop_now_ms(&e.loop) + 3000};
    KT_EQ_INT(keel_caller_call(&e.caller, &c2, on_call, &r2), 0);
    run_until(&e, 1);
    KT_EQ_INT(r2.status, 200);
    char want[64];
    snprintf(want, sizeof(want), "good 00-%s-", trace_hex);
    KT_CHECK(strncmp(r2.body, want, strlen(want)) == 0);
    long left = atol(strrchr(r2.body, ' ') + 1);
    KT_CHECK(left > 2500 && left <= 3000);
    env_finish(&e);
}

/* A service in the middle: its handler logs a line and calls "good" with keel_call_from. */
typedef struct middle {
    keel_service_t svc;
    keel_caller_t to_good;
    keel_service_req_t *req;
    char log[2048];
    size_t log_len;
} middle_t;

static void log_sink(void *data, const char *line, size_t len)
{
    middle_t *m = data;
    if (m->log_len + len < sizeof(m->log)) {
        memcpy(m->log + m->log_len, line, len);
        m->log_len += len;
        m->log[m->log_len] = '\0';
    }
}

static int64_t log_clock(void *data)
{
    (void)data;
    return 0;
}

static void middle_got(int err, const keel_http_msg_t *resp, void *data)
{
    middle_t *m = data;
    keel_service_req_enter(m->req); /* an async continuation */
    keel_log_info("good answered", KF_INT("err", err));
    if (resp == NULL)
        keel_http_respond_error(m->req->http, 502, "good failed");
    else
        keel_http_respond_body(m->req->http, 200, "text/plain", resp->body, resp->body_len);
}

static void middle_handle(keel_service_req_t *req, void *data)
{
    middle_t *m = data;
    m->req = req;
    keel_log_info("handling");
    keel_call_t c = keel_call_from(req, HTTP_GET, "/from-middle");
    KT_EQ_INT(keel_caller_call(&m->to_good, &c, middle_got, m), 0);
}

static void middle_caller_closed(keel_caller_t *c, void *data)
{
    (void)c;
    (void)data;
}

static void a_service_logs_and_calls_with_its_callers_trace(void)
{
    env_t e;
    start(&e);
    serve(&e, "good", 200);
    middle_t *m = calloc(1, sizeof(*m));
    keel_errmsg_t msg;
    keel_service_config_t sc = keel_service_config_default("middle");
    sc.drain_timeout_ms = 100;
    KT_EQ_INT(keel_service_init(&m->svc, &e.loop, &sc, &msg), 0);
    KT_EQ_INT(keel_service_route(&m->svc, "GET", "/m", middle_handle, m, &msg), 0);
    KT_EQ_INT(keel_service_start(&m->svc, &msg), 0);
    keel_caller_config_t gc = keel_caller_config_default("good");
    gc.endpoints = e.srv[0].addr;
    KT_EQ_INT(keel_caller_init(&m->to_good, &e.loop, &gc, NULL, &msg), 0);
    char maddr[64];
    snprintf(maddr, sizeof(maddr), "127.0.0.1:%d", keel_service_port(&m->svc));
    caller(&e, maddr, NULL);
    keel_log_configure(KEEL_LOG_INFO, log_sink, log_clock, m);

    keel_trace_ctx_t parent;
    keel_rand_t rnd;
    keel_rand_seed(&rnd, 11);
    keel_trace_new_root(&rnd, 1, &parent);
    char trace_hex[33];
    keel_trace_id_hex(&parent, trace_hex);
    result_t r = {.e = &e};
    keel_call_t c = {.method = HTTP_GET,
                     .target = "/m",
                     .has_trace = true,
                     .trace = parent,
                     .request_id = "rid-outer-1"};
    KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r), 0);
    run_until(&e, 1);
    keel_log_configure(KEEL_LOG_INFO, NULL, NULL, NULL);
    KT_EQ_INT(r.status, 200);
    /* good saw the same trace, through the middle's own span */
    char want[64];
    snprintf(want, sizeof(want), "good 00-%s-", trace_hex);
    KT_CHECK(strncmp(r.body, want, strlen(want)) == 0);
    /* both of the handler's lines, the synchronous and the async one, carry it */
    char field[64];
    snprintf(field, sizeof(field), "\"trace_id\":\"%s\"", trace_hex);
    const char *l1 = strstr(m->log, "\"handling\"");
    const char *l2 = strstr(m->log, "\"good answered\"");
    KT_CHECK(l1 != NULL && l2 != NULL);
    const char *f1 = strstr(m->log, field);
    KT_CHECK(f1 != NULL && f1 < l2 && strstr(f1 + 1, field) != NULL);
    /* the caller's X-Request-Id: kept by the middle, on both lines, and sent on to good */
    KT_CHECK(strstr(r.body, "|rid=rid-outer-1") != NULL);
    const char *q1 = strstr(m->log, "\"request_id\":\"rid-outer-1\"");
    KT_CHECK(q1 != NULL && q1 < l2 && strstr(q1 + 1, "\"request_id\":\"rid-outer-1\"") != NULL);

    keel_caller_close(&m->to_good, middle_caller_closed, NULL);
    keel_service_drain(&m->svc);
    env_finish(&e);
    keel_service_free(&m->svc);
    free(m);
}

static void no_instance_is_an_error(void)
{
    env_t e;
    start(&e);
    keel_caller_config_t cfg = keel_caller_config_default("nobody");
    cfg.retry.backoff_base_ms = 1;
    caller(&e, "", &cfg);
    result_t r = {.e = &e};
    keel_call_t c = {.method = HTTP_GET, .target = "/"};
    KT_EQ_INT(keel_caller_call(&e.caller, &c, on_call, &r), 0);
    run_until(&e, 1);
    KT_EQ_INT(r.err, KEEL_EEMPTY);
    KT_EQ_INT(keel_caller_call(&e.caller, &(keel_call_t){.target = "no-slash"}, on_call, &r),
              KEEL_EINVAL);
    env_finish(&e);

    /* bad configuration */
    start(&e);
    keel_caller_config_t bad = keel_caller_config_default("x");
    bad.endpoints = "localhost";
    keel_errmsg_t msg;
    KT_EQ_INT(keel_caller_init(&e.caller, &e.loop, &bad, NULL, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "host:port") != NULL);
    bad.endpoints = NULL;
    KT_EQ_INT(keel_caller_init(&e.caller, &e.loop, &bad, NULL, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_loop_close(&e.loop), 0);
}

int main(void)
{
    KT_RUN(retries_move_to_a_healthy_instance_and_a_breaker_opens);
    KT_RUN(post_is_not_retried_once_it_may_have_been_seen);
    KT_RUN(the_deadline_bounds_a_call_and_travels_with_the_trace);
    KT_RUN(a_service_logs_and_calls_with_its_callers_trace);
    KT_RUN(no_instance_is_an_error);
    return kt_done();
}
