/* proxy_agg.c - keel proxy's data path for aggregate routes: the parts' calls, all at once,
 * and the merged answer. */
#include "proxy/proxy_conn_int.h"

#include "proxy/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- aggregate routes -------------------------------------------------------------------- */

/*
 * An aggregate route answers from the proxy itself: each part is a GET through the proxy's
 * HTTP client (p->agg_client, keep-alive pools per host) to a host its cluster's balancer
 * picks, all at once, each with its own deadline; a part whose connection is refused is tried
 * once more on another host. When the last part is done, aggregate.c merges the bodies and the
 * answer goes out as a local response. A client that goes away cancels the calls in flight.
 */

static void agg_part_done(int err, const keel_http_msg_t *resp, void *data);

static void agg_free(keel__agg_t *a)
{
    for (uint32_t i = 0; i < KEEL_PROXY_AGG_PARTS_MAX; i++)
        free(a->parts[i].body);
    keel_buf_free(&a->text);
    free(a);
}

/* From x_release: cancels the calls in flight (their callbacks run now and only count). */
void keel__agg_release(keel__dconn_t *d)
{
    keel__agg_t *a = d->x.agg;
    if (a == NULL)
        return;
    d->x.agg = NULL;
    a->releasing = true;
    for (uint32_t i = 0; i < a->cfg->parts_count; i++)
        if (a->parts[i].inflight && d->p->agg_on)
            keel_http_client_cancel(&d->p->agg_client, a->parts[i].call_id);
    agg_free(a);
}

/* Adds a field for every part (names and values copied into a->text, NUL-terminated). */
static void agg_add_header(keel__agg_t *a, const char *name, size_t nlen, const char *value,
                           size_t vlen)
{
    if (a->headers_count >= KEEL_PROXY_AGG_HEADERS_MAX)
        return;
    keel_http_header_t *hd = &a->headers[a->headers_count];
    size_t at = keel_buf_unread(&a->text);
    if (keel_buf_append(&a->text, name, nlen) != 0 || keel_buf_append(&a->text, "", 1) != 0 ||
        keel_buf_append(&a->text, value, vlen) != 0 || keel_buf_append(&a->text, "", 1) != 0)
        return;
    hd->name_off = (uint32_t)at;
    hd->name_len = nlen;
    hd->value_off = (uint32_t)(at + nlen + 1);
    hd->value_len = vlen;
    a->headers_count++;
}

/* Builds the aggregate's state while the request head is at hand: each part's path from the
 * route's template parameters and the request's fields, and the fields sent to every part.
 * 0, or the status to answer (400 when a required part's path cannot be filled). */
int keel__agg_prepare(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                      const keel_proxy_req_view_t *view, const keel_proxy_jwt_provider_t *pv,
                      const keel_jwt_t *jwt)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_route_t *r = x->route->cfg;
    const keel_proxy_aggregate_t *cfg = r->aggregate;
    keel__agg_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return 503;
    x->agg = a;
    a->d = d;
    a->cfg = cfg;
    keel_buf_init(&a->text, KEEL_H1_HEAD_BYTES_CEILING + 4096);
    keel_proxy_param_t params[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
    int n = r->path_kind == KEEL_PROXY_PATH_TEMPLATE
                ? keel_proxy_template_match(r->path, view->path, view->path_len, params)
                : 0;
    keel_ms_t route_deadline = r->timeout_ms > 0 ? x->start_ms + r->timeout_ms : KEEL_MS_NEVER;
    for (uint32_t i = 0; i < cfg->parts_count; i++) {
        keel__agg_part_t *pt = &a->parts[i];
        pt->agg = a;
        pt->cl = x->gen->clusters[cfg->parts[i].cluster];
        pt->deadline_ms = keel_ms_min(x->start_ms + cfg->parts[i].timeout_ms, route_deadline);
        int rc = keel_proxy_fill_path(cfg->parts[i].path, params, n > 0 ? (uint32_t)n : 0, view,
                                      pt->path, sizeof(pt->path));
        if (rc != 0) {
            if (cfg->parts[i].required)
                return 400;
            pt->res.outcome = KEEL_PROXY_PART_BAD_PATH;
        }
    }
    for (uint32_t i = 0; i < cfg->forward_count; i++) {
        const char *nm = cfg->forward_headers[i];
        bool claim = false; /* a claim header comes from the token only (anti-spoofing) */
        for (uint32_t k = 0; pv != NULL && k < pv->claims_to_headers_count; k++)
            claim = claim || strcmp(pv->claims_to_headers[k].header, nm) == 0;
        int f = claim ? -1 : keel_h1_find(base, h, nm);
        if (f >= 0)
            agg_add_header(a, base + h->fields[f].name.off, h->fields[f].name.len,
                           base + h->fields[f].value.off, h->fields[f].value.len);
    }
    for (uint32_t i = 0; pv != NULL && jwt->claims != NULL && i < pv->claims_to_headers_count;
         i++) {
        char v[KEEL_PROXY_VALUE_BYTES_MAX];
        if (keel_jwt_claim_text(jwt, pv->claims_to_headers[i].claim, v, sizeof(v)) != 0)
            continue;
        bool clean = true;
        for (const char *q = v; *q && clean; q++)
            clean = (unsigned char)*q >= 0x20 && *q != 0x7f;
        if (clean)
            agg_add_header(a, pv->claims_to_headers[i].header,
                           strlen(pv->claims_to_headers[i].header), v, strlen(v));
    }
    char tp[KEEL_TRACE_B3_BYTES_MAX];
    keel_trace_format_traceparent(&x->trace, tp);
    agg_add_header(a, "traceparent", 11, tp, strlen(tp));
    if (x->b3) {
        keel_trace_format_b3_single(&x->trace, tp);
        agg_add_header(a, "b3", 2, tp, strlen(tp));
    }
    int xf = keel_h1_find(base, h, "x-forwarded-for");
    char xff[KEEL_PROXY_VALUE_BYTES_MAX];
    int xl = xf >= 0 ? snprintf(xff, sizeof(xff), "%.*s, %s", (int)h->fields[xf].value.len,
                                base + h->fields[xf].value.off, d->peer)
                     : snprintf(xff, sizeof(xff), "%s", d->peer);
    if (xl > 0 && (size_t)xl < sizeof(xff))
        agg_add_header(a, "X-Forwarded-For", 15, xff, (size_t)xl);
    agg_add_header(a, "Accept", 6, "application/json", 16);
    for (size_t i = 0; i < a->headers_count; i++) { /* the text is complete: pointers now */
        a->headers[i].name = (const char *)a->text.data + a->text.rpos + a->headers[i].name_off;
        a->headers[i].value = (const char *)a->text.data + a->text.rpos + a->headers[i].value_off;
    }
    return 0;
}

/* Ends the bookkeeping of a part's call: balancer, host, outlier detector, metrics. */
static void agg_part_end(keel__agg_part_t *pt, keel_proxy_t *p, bool local_failure, int status,
                         bool record)
{
    keel__phost_t *host = pt->host;
    if (host == NULL)
        return;
    keel__pcluster_t *cl = pt->cl;
    keel__cl_lock(cl);
    keel_ms_t now = keel__shared_now(&cl->now_max_ms, now_ms(p));
    keel_balance_done(&cl->lb, host->idx);
    host->active--;
    if (record && cl->cfg->outlier_enabled) {
        if (local_failure)
            keel_outlier_record_local(&cl->outlier, host->idx, now, false);
        else
            keel_outlier_record_status(&cl->outlier, host->idx, now, status);
    }
    keel__cl_unlock(cl);
    if (status > 0)
        keel_counter_inc(cl->m_class[keel__status_class(status)]);
    pt->host = NULL;
}

/* Starts the part's call on a host of its cluster (another than the one that refused, when
 * there is one). 0, KEEL_ETIMEDOUT (no time left), KEEL_ENOTFOUND (no available host), or the
 * client's error. */
static int agg_part_send(keel__agg_part_t *pt)
{
    keel__agg_t *a = pt->agg;
    keel_proxy_t *p = a->d->p;
    keel__pcluster_t *cl = pt->cl;
    keel_ms_t now = now_ms(p);
    if (now >= pt->deadline_ms)
        return KEEL_ETIMEDOUT;
    uint32_t idx;
    keel__cl_lock(cl);
    keel_ms_t snow = keel__shared_now(&cl->now_max_ms, now);
    int picked =
        keel_balance_pick_other(&cl->lb, 0, snow, pt->failed_host_1, KEEL_PROXY_REPICKS_MAX, &idx);
    if (picked == 0) { /* counted before the call: the slot cannot be reused meanwhile */
        keel_balance_start(&cl->lb, idx);
        cl->hosts[idx].active++;
    }
    keel__cl_unlock(cl);
    if (picked != 0)
        return KEEL_ENOTFOUND;
    keel__phost_t *host = &cl->hosts[idx];
    keel_http_header_t hs[KEEL_PROXY_AGG_HEADERS_MAX + 1];
    memcpy(hs, a->headers, a->headers_count * sizeof(hs[0]));
    char left[24]; /* the time this call has left (as X-Keel-Timeout-Ms on forwarded calls) */
    int ll = snprintf(left, sizeof(left), "%lld", (long long)(pt->deadline_ms - now));
    hs[a->headers_count] = (keel_http_header_t){
        .name = "X-Keel-Timeout-Ms", .name_len = 17, .value = left, .value_len = (size_t)ll};
    keel_http_client_request_t rq = {.method = HTTP_GET,
                                     .host_port = host->address,
                                     .target = pt->path,
                                     .headers = hs,
                                     .headers_count = a->headers_count + 1,
                                     .timeout_ms = pt->deadline_ms - now};
    int rc = keel_http_client_request(&p->agg_client, &rq, agg_part_done, pt, &pt->call_id);
    if (rc != 0) {
        keel__cl_lock(cl);
        keel_balance_done(&cl->lb, idx);
        host->active--;
        keel__cl_unlock(cl);
        return rc;
    }
    pt->host = host;
    pt->inflight = true;
    pt->attempts++;
    keel_counter_inc(cl->m_attempts);
    return 0;
}

static void agg_answer(keel__dconn_t *d)
{
    keel__agg_t *a = d->x.agg;
    keel_proxy_part_result_t res[KEEL_PROXY_AGG_PARTS_MAX];
    for (uint32_t i = 0; i < a->cfg->parts_count; i++)
        res[i] = a->parts[i].res;
    char *body = NULL;
    size_t len = 0;
    int st = keel_proxy_agg_merge(a->cfg, res, &body, &len);
    if (st == 0) {
        keel__x_local(d, 503, "out-of-memory", NULL, NULL, NULL, 0);
        return;
    }
    keel__x_local(d, st, NULL, NULL, "application/json", body, len); /* releases a */
    free(body);
}

/* A part is done (answered, failed, or never sent); the last one answers the client. */
static void agg_part_finished(keel__agg_t *a)
{
    if (--a->pending == 0)
        agg_answer(a->d);
}

static void agg_part_failed_to_send(keel__agg_part_t *pt, int rc)
{
    pt->res.outcome = rc == KEEL_ETIMEDOUT   ? KEEL_PROXY_PART_TIMEOUT
                      : rc == KEEL_ENOTFOUND ? KEEL_PROXY_PART_NO_HOST
                      : rc == KEEL_EBUSY     ? KEEL_PROXY_PART_CONNECT
                                             : KEEL_PROXY_PART_BAD_RESPONSE;
}

static void agg_part_done(int err, const keel_http_msg_t *resp, void *data)
{
    keel__agg_part_t *pt = data;
    keel__agg_t *a = pt->agg;
    keel_proxy_t *p = a->d->p;
    keel__pcluster_t *cl = pt->cl;
    uint32_t host_idx = pt->host != NULL ? pt->host->idx : 0;
    pt->inflight = false;
    agg_part_end(pt, p, err != 0, err == 0 ? resp->status : 0, err != KEEL_ECANCELED);
    if (a->releasing)
        return; /* keel__agg_release frees it */
    keel_proxy_part_result_t *r = &pt->res;
    if (err == 0) {
        r->outcome = KEEL_PROXY_PART_OK;
        r->status = resp->status;
        r->body_len = resp->body_len;
        /* a body over the part's limit is not copied: the merge sees its length and refuses */
        if (resp->status >= 200 && resp->status <= 299 &&
            resp->body_len <= a->cfg->part_bytes_max && resp->body_len > 0) {
            pt->body = malloc(resp->body_len);
            if (pt->body == NULL)
                r->outcome = KEEL_PROXY_PART_BAD_RESPONSE;
            else
                memcpy(pt->body, resp->body, resp->body_len);
            r->body = pt->body;
        }
    } else if (err == KEEL_ECONNREFUSED) {
        keel_counter_inc(cl->m_connect_errors);
        r->outcome = KEEL_PROXY_PART_CONNECT;
        if (pt->attempts < KEEL_PROXY_AGG_ATTEMPTS_MAX && !p->stopping) {
            keel_counter_inc(cl->m_retries);
            pt->failed_host_1 = host_idx + 1;
            int rc = agg_part_send(pt);
            if (rc == 0)
                return;
            if (rc != KEEL_ENOTFOUND)
                agg_part_failed_to_send(pt, rc);
        }
    } else if (err == KEEL_ETIMEDOUT) {
        keel_counter_inc(cl->m_timeouts);
        r->outcome = KEEL_PROXY_PART_TIMEOUT;
    } else if (err == KEEL_ECONNRESET || err == KEEL_ECANCELED) {
        keel_counter_inc(cl->m_resets);
        r->outcome = KEEL_PROXY_PART_RESET;
    } else {
        keel_counter_inc(cl->m_bad_responses);
        r->outcome = KEEL_PROXY_PART_BAD_RESPONSE;
    }
    agg_part_finished(a); /* last: it may answer, and the answer frees a */
}

void keel__agg_start(keel__dconn_t *d)
{
    keel__agg_t *a = d->x.agg;
    a->pending = a->cfg->parts_count + 1; /* + 1: no answer before every part has started */
    for (uint32_t i = 0; i < a->cfg->parts_count; i++) {
        keel__agg_part_t *pt = &a->parts[i];
        if (pt->res.outcome == KEEL_PROXY_PART_BAD_PATH) {
            a->pending--;
            continue;
        }
        int rc = agg_part_send(pt);
        if (rc != 0) {
            agg_part_failed_to_send(pt, rc);
            a->pending--;
        }
    }
    agg_part_finished(a);
}
