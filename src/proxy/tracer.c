/* tracer.c - keel proxy's span export (docs/proxy.md, "Tracing"): each worker queues its
 * finished spans as Zipkin v2 JSON objects and POSTs them in batches to the collector. */
#include "proxy/proxy_int.h"

#include "base/log.h"

#include <stdlib.h>
#include <string.h>

/*
 * Per worker, on its own loop, so nothing here takes a lock: a ring of encoded spans (each a
 * malloc'd JSON object), at most tracing.queue_max of them (more are dropped and counted), and
 * at most one POST in flight. A batch (up to batch_max spans) goes when batch_max are waiting
 * and no POST is in flight, or on the housekeeping tick once flush_ms passed since the last
 * one. A failed POST drops its batch (counted): the collector is not retried, so a dead one
 * costs one POST per flush_ms and the queue's memory, never the request path.
 */

/* The ring grows by doubling up to the queue_max in force (a reload may change it). */
#define KEEL__TRACER_RING_MIN 64u

static void tracer_flush(keel_proxy_t *p);

static void drop_all(keel_proxy_t *p, keel_counter_t *why)
{
    keel__tracer_t *t = &p->tracer;
    if (t->q_len == 0)
        return;
    for (uint32_t i = 0; i < t->q_len; i++)
        free(t->q[(t->q_head + i) % t->q_cap].json);
    keel_counter_add(why, t->q_len);
    t->q_head = t->q_len = 0;
}

int keel__tracer_ensure(keel_proxy_t *p, const keel_proxy_config_t *cfg, keel_errmsg_t *msg)
{
    keel__tracer_t *t = &p->tracer;
    if (!cfg->tracing.enabled || t->cli_on)
        return 0;
    keel_http_client_config_t hc = keel_http_client_config_default();
    hc.conns_per_host_max = 1; /* one POST in flight per worker */
    hc.idle_per_host_max = 1;
    int rc = keel_http_client_init(&t->cli, p->loop, &hc, msg);
    if (rc != 0)
        return rc;
    keel_buf_init(&t->body, 0);
    keel_buf_init(&t->scratch, 0);
    t->cli_on = true;
    t->last_flush_ms = keel_loop_now_ms(p->loop);
    p->handles_open++;
    return 0;
}

static bool ring_room(keel__tracer_t *t, uint32_t queue_max)
{
    if (t->q_len >= queue_max)
        return false;
    if (t->q_len < t->q_cap)
        return true;
    uint32_t cap = t->q_cap == 0 ? KEEL__TRACER_RING_MIN : 2 * t->q_cap;
    if (cap > queue_max)
        cap = queue_max;
    struct keel__tspan *q = malloc((size_t)cap * sizeof(*q));
    if (q == NULL)
        return false;
    for (uint32_t i = 0; i < t->q_len; i++) /* unrolled into the new ring from its start */
        q[i] = t->q[(t->q_head + i) % t->q_cap];
    free(t->q);
    t->q = q;
    t->q_cap = cap;
    t->q_head = 0;
    return true;
}

void keel__tracer_record(keel_proxy_t *p, const keel_span_t *s)
{
    keel__tracer_t *t = &p->tracer;
    const keel_proxy_tracing_t *tc = &p->gen->cfg->tracing;
    keel_counter_inc(p->m_tr_recorded);
    if (!t->cli_on || !tc->enabled) { /* a reload turned tracing off since the request began */
        keel_counter_inc(p->m_tr_dropped_off);
        return;
    }
    if (!ring_room(t, tc->queue_max)) {
        keel_counter_inc(p->m_tr_dropped_full);
        return;
    }
    keel_buf_reset(&t->scratch);
    char *json = NULL;
    size_t n = 0;
    if (keel_span_to_zipkin_json(s, &t->scratch) == 0 &&
        (json = malloc((n = keel_buf_unread(&t->scratch)))) != NULL)
        memcpy(json, keel_buf_rptr(&t->scratch), n);
    if (json == NULL) {
        keel_counter_inc(p->m_tr_dropped_full);
        return;
    }
    t->q[(t->q_head + t->q_len) % t->q_cap] = (struct keel__tspan){json, (uint32_t)n};
    t->q_len++;
    if (t->q_len >= tc->batch_max)
        tracer_flush(p);
}

static void on_posted(int err, const keel_http_msg_t *resp, void *data)
{
    keel_proxy_t *p = data;
    keel__tracer_t *t = &p->tracer;
    uint32_t n = t->inflight_n;
    t->inflight = false;
    t->inflight_n = 0;
    if (err == 0 && resp->status >= 200 && resp->status < 300) {
        keel_counter_add(p->m_tr_exported, n);
    } else {
        keel_counter_inc(p->m_tr_failures);
        keel_counter_add(p->m_tr_dropped_failed, n);
        keel_ms_t now = keel_loop_now_ms(p->loop);
        if (now - t->warned_ms >= KEEL_PROXY_TRACE_WARN_INTERVAL_MS) {
            t->warned_ms = now;
            keel_log_warn("proxy: span export failed, batch dropped", KF_INT("worker", p->wid),
                          KF_INT("spans", n), KF_INT("status", err == 0 ? resp->status : 0),
                          KF_STR("error", err == 0 ? "status" : keel_strerror(err)));
        }
    }
    /* a backlog of whole batches goes on at once; a partial one waits for the tick */
    if (!p->stopping && p->gen != NULL && t->q_len >= p->gen->cfg->tracing.batch_max)
        tracer_flush(p);
}

/* POSTs up to batch_max queued spans as one JSON array, unless a POST is in flight. */
static void tracer_flush(keel_proxy_t *p)
{
    keel__tracer_t *t = &p->tracer;
    const keel_proxy_tracing_t *tc = &p->gen->cfg->tracing;
    if (t->inflight || t->q_len == 0 || !t->cli_on || p->stopping)
        return;
    t->last_flush_ms = keel_loop_now_ms(p->loop);
    uint32_t n = t->q_len < tc->batch_max ? t->q_len : tc->batch_max;
    keel_buf_t *b = &t->body;
    keel_buf_reset(b);
    int rc = keel_buf_append(b, "[", 1);
    for (uint32_t i = 0; i < n; i++) {
        struct keel__tspan *e = &t->q[(t->q_head + i) % t->q_cap];
        if (i > 0)
            rc |= keel_buf_append(b, ",", 1);
        rc |= keel_buf_append(b, e->json, e->len);
        free(e->json);
    }
    rc |= keel_buf_append(b, "]", 1);
    t->q_head = (t->q_head + n) % t->q_cap;
    t->q_len -= n;
    if (t->q_len == 0)
        t->q_head = 0;
    static const keel_http_header_t ct = {"Content-Type", 12, "application/json", 16, 0, 0};
    keel_http_client_request_t rq = {.method = HTTP_POST,
                                     .host_port = tc->zipkin_address,
                                     .target = tc->zipkin_path,
                                     .headers = &ct,
                                     .headers_count = 1,
                                     .body = keel_buf_rptr(b),
                                     .body_len = keel_buf_unread(b),
                                     .timeout_ms = tc->timeout_ms};
    t->inflight = true;
    t->inflight_n = n;
    if (rc != 0 || keel_http_client_request(&t->cli, &rq, on_posted, p, NULL) != 0) {
        t->inflight = false;
        t->inflight_n = 0;
        keel_counter_inc(p->m_tr_failures);
        keel_counter_add(p->m_tr_dropped_failed, n);
    }
}

void keel__tracer_tick(keel_proxy_t *p, keel_ms_t now)
{
    keel__tracer_t *t = &p->tracer;
    if (t->q_len == 0)
        return;
    if (!p->gen->cfg->tracing.enabled) { /* a reload turned tracing off: nowhere to send them */
        drop_all(p, p->m_tr_dropped_off);
        return;
    }
    if (now - t->last_flush_ms >= p->gen->cfg->tracing.flush_ms)
        tracer_flush(p);
}

static void tracer_closed(keel_http_client_t *cli, void *data)
{
    (void)cli;
    keel__proxy_handle_closed(data);
}

void keel__tracer_close(keel_proxy_t *p)
{
    keel__tracer_t *t = &p->tracer;
    drop_all(p, p->m_tr_dropped_off); /* spans not yet sent when the proxy stops */
    free(t->q);
    t->q = NULL;
    t->q_cap = 0;
    if (t->cli_on) {
        t->cli_on = false;
        keel_buf_free(&t->body);
        keel_buf_free(&t->scratch);
        keel_http_client_close(&t->cli, tracer_closed, p);
    }
}
