/* proxy_conn.c - keel proxy's data path: client and upstream connections, streaming, retries. */
#include "proxy/proxy_int.h"

#include "base/log.h"
#include "proxy/auth.h"
#include "proxy/route.h"
#include "runtime/clock.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * One client connection carries one exchange at a time (HTTP/1.1 has no
 * multiplexing; pipelined requests wait, unparsed, in the input buffer).
 *
 *   HEAD ──whole head, routed──> BUSY ──response complete, keep-alive──> HEAD
 *     │                           │
 *     └── bad head, limit, ───────┴──> CLOSING (output drains, then close)
 *         timeout
 *
 * Streaming and backpressure: body bytes move from one side's input buffer
 * into the other side's output buffer and are written at once (uv_try_write,
 * then one uv_write for the rest). A side stops reading while the other
 * side's unsent bytes (its output buffer plus libuv's write queue) exceed
 * limits.buffer_bytes_max, and resumes from the write callback, so a slow
 * reader holds the proxy to about buffer_bytes_max + one read
 * (KEEL_PROXY_READ_BYTES) per direction, whatever the body's size (h2o's
 * "pull when it can send" rule).
 *
 * Framing: bodies are decoded (Content-Length counted, chunked decoded by
 * h1.c) and re-framed on the way out, so the two hops can never disagree
 * about where a message ends (RFC 9112 §11.2).
 *
 * Attempts: each attempt takes a breaker permit, picks a host through the
 * balancer and uses a pooled connection or opens one. A failure before any
 * response byte reached the client (connect failure, reset, timeout, or a
 * status in the route's retry_on) goes to core/retry for the verdict
 * (attempts, idempotency, deadline, backoff with full jitter) and then to the
 * route's retry budget (route.h). The request body is copied as it goes
 * upstream into the request's replay buffer while it fits in
 * limits.retry_buffer_bytes; a retry sends the head and that copy again, then
 * goes on streaming from the client. A body that outgrew the buffer is not
 * replayed once its bytes went upstream. A retry avoids the host that failed
 * when another is available (Envoy's previous_hosts predicate).
 */

static keel_ms_t now_ms(keel_proxy_t *p)
{
    return keel_loop_now_ms(p->loop);
}

static void d_process(keel__dconn_t *d);
static bool cl_admit(keel__pcluster_t *cl);
static void d_update_reading(keel__dconn_t *d);
static void d_close(keel__dconn_t *d);
static void d_finish(keel__dconn_t *d);
static void d_arm(keel__dconn_t *d);
static void d_pump_req_body(keel__dconn_t *d);
static void u_close(keel__uconn_t *u);
static void u_update_reading(keel__uconn_t *u);
static void u_pump_resp_body(keel__uconn_t *u);
static void x_attempt(keel__dconn_t *d);
static void x_complete(keel__dconn_t *d);
static void agg_release(keel__dconn_t *d);
static void x_local(keel__dconn_t *d, int status, const char *reason, const char *extra_headers,
                    const char *content_type, const char *body, size_t body_len);

/* ---- writing ----------------------------------------------------------------------------- */

typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} wreq_t;

static void d_on_drained(keel__dconn_t *d);
static void u_on_drained(keel__uconn_t *u);

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = KEEL_LIST_ENTRY(req, wreq_t, req);
    void *conn = req->handle->data;
    free(w);
    if (status < 0)
        return; /* the read side sees the error; closing happens there */
    if (*(int *)conn == KEEL__CONN_DOWN)
        d_on_drained(conn);
    else
        u_on_drained(conn);
}

/* Sends out's unread bytes: uv_try_write, the rest copied into one uv_write. 0 or a libuv
 * error. */
static int flush(uv_stream_t *s, keel_buf_t *out)
{
    size_t n = keel_buf_unread(out);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)keel_buf_rptr(out), (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w == UV_EAGAIN || w == UV_ENOSYS)
        w = 0;
    if (w < 0)
        return w;
    keel_buf_consume(out, (size_t)w);
    n -= (size_t)w;
    if (n == 0)
        return 0;
    wreq_t *r = malloc(sizeof(*r) + n);
    if (r == NULL)
        return UV_ENOMEM;
    memcpy(r->data, keel_buf_rptr(out), n);
    r->buf = uv_buf_init(r->data, (unsigned)n);
    keel_buf_consume(out, n);
    int rc = uv_write(&r->req, s, &r->buf, 1, on_written);
    if (rc < 0)
        free(r);
    return rc;
}

static size_t pending(uv_tcp_t *t, const keel_buf_t *out)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)t) + keel_buf_unread(out);
}

static void alloc_into(keel_buf_t *in, uv_buf_t *buf)
{
    if (keel_buf_reserve(in, KEEL_PROXY_READ_BYTES) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: treated as an error */
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(in), (unsigned)(in->cap - in->len));
}

/* Appends "<hex>\r\n", a chunk-size line (no printf on the data path). */
static void append_chunk_size(keel_buf_t *o, size_t n)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    tmp[--i] = '\n';
    tmp[--i] = '\r';
    do {
        tmp[--i] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n > 0);
    keel_buf_append(o, tmp + i, sizeof(tmp) - (size_t)i);
}

/* Appends "Content-Length: n\r\n". */
static int append_length(keel_buf_t *o, uint64_t n)
{
    int rc = keel_buf_append(o, "Content-Length: ", 16);
    rc |= keel_buf_append_u64_dec(o, n);
    rc |= keel_buf_append(o, "\r\n", 2);
    return rc;
}

/* ---- exchange bookkeeping ---------------------------------------------------------------- */

static int status_class(int status)
{
    int c = status / 100;
    return c >= 1 && c <= 5 ? c : 0;
}

/* Ends the current attempt: breaker, outlier detector, balancer and host counts. ok < 0: the
 * attempt was abandoned (no verdict). */
static void x_end_attempt(keel__dconn_t *d, int ok, int status, bool local_failure)
{
    keel__xch_t *x = &d->x;
    if (x->host == NULL)
        return;
    keel__pcluster_t *cl = x->cl;
    keel_ms_t took_ms = now_ms(d->p) - x->try_start_ms;
    keel__cl_lock(cl); /* shared with the other workers */
    keel_ms_t now = keel__shared_now(&cl->now_max_ms, now_ms(d->p));
    if (x->permit >= 0) {
        keel_breaker_outcome_t o = ok < 0    ? KEEL_BREAKER_IGNORED
                                   : ok == 0 ? KEEL_BREAKER_FAILURE
                                             : KEEL_BREAKER_SUCCESS;
        keel_breaker_record(&cl->breaker, now, x->permit, o, took_ms);
        x->permit = -1;
    }
    if (cl->cfg->outlier_enabled && ok >= 0) {
        if (local_failure)
            keel_outlier_record_local(&cl->outlier, x->host->idx, now, false);
        else
            keel_outlier_record_status(&cl->outlier, x->host->idx, now, status);
    }
    if (x->balance_started) {
        keel_balance_done(&cl->lb, x->host->idx);
        x->balance_started = false;
    }
    x->host->active--;
    keel__cl_unlock(cl);
    if (status > 0)
        keel_counter_inc(cl->m_class[status_class(status)]);
    if (ok == 0)
        x->failed_host_1 = x->host->idx + 1;
    x->host = NULL;
}

/* One JSON line per answered request (docs/proxy.md, "Access log"). */
static void access_log(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    char trace_id[2 * KEEL_TRACE_ID_BYTES + 1] = "-";
    if (x->cl != NULL) /* forwarded: the trace the upstream saw */
        keel_trace_id_hex(&x->trace, trace_id);
    keel_log_info("access", KF_STR("trace_id", trace_id), KF_STR("client", d->peer),
                  KF_STR("method", x->method), KF_STR("target", x->target),
                  KF_STR("route", x->route ? x->route->cfg->name : "-"),
                  KF_STR("cluster", x->cl ? x->cl->cfg->name : "-"),
                  KF_STR("upstream", x->upstream ? x->upstream : "-"), KF_INT("status", x->status),
                  KF_INT("bytes", x->resp_bytes), KF_INT("attempts", x->attempts),
                  KF_INT("duration_ms", now_ms(d->p) - x->start_ms));
}

/* Releases everything the exchange holds (the upstream connection is closed if still
 * attached) and resets it for the next request. */
static void x_release(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    if (x->u != NULL) {
        keel__uconn_t *u = x->u;
        x->u = NULL;
        u->d = NULL;
        u_close(u);
    }
    x_end_attempt(d, -1, 0, false);
    if (x->retrying || x->counted) {
        keel__cl_lock(x->cl);
        x->cl->active_retries -= x->retrying ? 1 : 0;
        x->cl->active_requests -= x->counted ? 1 : 0;
        keel__cl_unlock(x->cl);
        x->retrying = x->counted = false;
    }
    if (x->status > 0 && d->p->gen->cfg->access_log)
        access_log(d);
    if (x->route != NULL && x->status > 0) {
        keel_counter_inc(x->route->m_class[status_class(x->status)]);
        keel_histogram_observe(x->route->m_duration, (double)(now_ms(d->p) - x->start_ms) / 1000.0);
    }
    keel_proxy_replay_release(&x->replay);
    agg_release(d); /* before the generation goes: its clusters are the parts' */
    keel__pgen_t *gen = x->gen;
    keel_buf_t head = x->up_head;
    keel_buf_reset(&head);
    memset(x, 0, sizeof(*x));
    x->up_head = head;
    x->permit = -1;
    if (gen != NULL)
        keel__gen_unref(gen); /* last: the route and cluster above belong to it */
}

/* ---- client connections ------------------------------------------------------------------ */

static void d_handle_closed(uv_handle_t *h)
{
    keel__dconn_t *d = h->data;
    keel_buf_free(&d->in);
    keel_buf_free(&d->out);
    keel_buf_free(&d->x.up_head);
    keel_proxy_replay_release(&d->x.replay);
    keel_proxy_t *p = d->p;
    free(d);
    keel__proxy_handle_closed(p);
}

static void d_timer_closed(keel_timer_t *t)
{
    keel__dconn_t *d = KEEL_LIST_ENTRY(t, keel__dconn_t, timer);
    uv_close((uv_handle_t *)&d->tcp, d_handle_closed);
}

static void d_close(keel__dconn_t *d)
{
    if (d->closing)
        return;
    d->closing = true;
    d->state = KEEL__D_CLOSING;
    x_release(d);
    keel_list_remove(&d->link);
    d->p->dconns_count--;
    __atomic_sub_fetch(&d->p->main->conns_all, 1, __ATOMIC_RELAXED);
    keel_gauge_add(d->p->m_conns_open, -1);
    uv_read_stop((uv_stream_t *)&d->tcp);
    keel_timer_close(&d->timer, d_timer_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    keel__dconn_t *d = req->data;
    free(req);
    (void)status;
    if (!d->closing)
        d_arm(d); /* linger: read and drop until EOF or the linger timer */
}

/* Stop taking requests: once the output is written, half-close and linger briefly, reading
 * and dropping input, so the client reads our last response instead of a reset. */
static void d_finish(keel__dconn_t *d)
{
    if (d->state == KEEL__D_CLOSING)
        return;
    x_release(d);
    d->state = KEEL__D_CLOSING;
    d->head_start_ms = 0;
    d->active_ms = now_ms(d->p);
    keel_buf_reset(&d->in);
    if (pending(&d->tcp, &d->out) == 0)
        d_on_drained(d);
    d_update_reading(d);
    d_arm(d);
}

static void d_on_drained(keel__dconn_t *d)
{
    if (d->closing)
        return;
    if (d->state == KEEL__D_CLOSING) {
        d->active_ms = now_ms(d->p); /* the client is reading: progress */
        if (pending(&d->tcp, &d->out) == 0 && !d->shut) {
            d->shut = true;
            uv_shutdown_t *req = malloc(sizeof(*req));
            if (req == NULL || uv_shutdown(req, (uv_stream_t *)&d->tcp, on_shutdown) != 0) {
                free(req);
                d_close(d);
                return;
            }
            req->data = d;
            d->active_ms = now_ms(d->p);
        }
        return;
    }
    /* the client took some response bytes: move more */
    if (d->x.u != NULL)
        u_pump_resp_body(d->x.u);
}

static keel_ms_t d_deadline(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    const keel_proxy_limits_t *lim = &p->gen->cfg->limits;
    keel__xch_t *x = &d->x;
    keel_ms_t t = KEEL_MS_NEVER;
    switch (d->state) {
    case KEEL__D_CLOSING: /* writing the last response, then lingering */
        if (pending(&d->tcp, &d->out) > 0)
            return d->active_ms + lim->client_idle_timeout_ms;
        return d->active_ms + 1000;
    case KEEL__D_HEAD:
        if (d->head_start_ms > 0)
            return d->head_start_ms + lim->header_timeout_ms;
        return d->active_ms + lim->client_idle_timeout_ms;
    case KEEL__D_BUSY:
        if (x->agg != NULL)
            return KEEL_MS_NEVER; /* each part has its deadline (the HTTP client's) */
        if (x->retry_at_ms > 0)
            t = keel_ms_min(t, x->retry_at_ms);
        if (!x->resp_head && x->retry_at_ms == 0) {
            t = keel_ms_min(t, x->call.deadline_ms);
            t = keel_ms_min(t, x->try_deadline_ms);
            if (x->u != NULL && !x->u->connected)
                t = keel_ms_min(t, x->connect_deadline_ms);
        }
        if (!x->req_done || x->resp_head)
            t = keel_ms_min(t, d->active_ms + keel_ms_max(lim->client_idle_timeout_ms,
                                                          lim->upstream_idle_timeout_ms));
        return t;
    }
    return t;
}

static void d_on_timer(keel_timer_t *t, void *data);

static void d_arm(keel__dconn_t *d)
{
    if (d->closing)
        return;
    keel_ms_t at = d_deadline(d);
    if (at == KEEL_MS_NEVER)
        return;
    if (uv_is_active((uv_handle_t *)&d->timer.uv) && d->timer_at_ms <= at)
        return; /* fires earlier; d_on_timer re-arms */
    keel_ms_t now = now_ms(d->p);
    d->timer_at_ms = at;
    keel_timer_start(&d->timer, at > now ? at - now : 0, 0, d_on_timer, d);
}

static void x_timeout(keel__dconn_t *d, bool connect);

static void d_on_timer(keel_timer_t *t, void *data)
{
    keel__dconn_t *d = data;
    keel_proxy_t *p = d->p;
    const keel_proxy_limits_t *lim = &p->gen->cfg->limits;
    keel__xch_t *x = &d->x;
    keel_ms_t now = now_ms(p);
    switch (d->state) {
    case KEEL__D_CLOSING:
        if (now >= d_deadline(d)) {
            d_close(d);
            return;
        }
        break;
    case KEEL__D_HEAD:
        if (d->head_start_ms > 0 && now >= d->head_start_ms + lim->header_timeout_ms) {
            x_local(d, 408, NULL, NULL, NULL, NULL, 0);
            return;
        }
        if (d->head_start_ms == 0 && now >= d->active_ms + lim->client_idle_timeout_ms) {
            d_close(d);
            return;
        }
        break;
    case KEEL__D_BUSY:
        if (x->agg != NULL)
            break;
        if (x->retry_at_ms > 0 && now >= x->retry_at_ms) {
            x->retry_at_ms = 0;
            x_attempt(d);
            return;
        }
        if (!x->resp_head && x->retry_at_ms == 0) {
            bool connecting = x->u != NULL && !x->u->connected;
            if (now >= x->call.deadline_ms || now >= x->try_deadline_ms ||
                (connecting && now >= x->connect_deadline_ms)) {
                x_timeout(d, connecting);
                return;
            }
        }
        if ((!x->req_done || x->resp_head) &&
            now >= d->active_ms +
                       keel_ms_max(lim->client_idle_timeout_ms, lim->upstream_idle_timeout_ms)) {
            if (!x->resp_head)
                x_local(d, 408, NULL, NULL, NULL, NULL, 0);
            else
                d_close(d); /* a stalled stream: nothing sensible to send */
            return;
        }
        break;
    }
    d_arm(d);
}

static void d_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    keel__dconn_t *d = h->data;
    alloc_into(&d->in, buf);
}

static void d_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__dconn_t *d = s->data;
    if (nread == 0 || d->closing)
        return;
    if (nread < 0) {
        d->eof = true;
        if (d->state == KEEL__D_BUSY && d->x.resp_head && d->x.req_done && nread == UV_EOF) {
            /* a half-closed client still gets its response; stop reading */
            d_update_reading(d);
            return;
        }
        d_close(d);
        return;
    }
    d->active_ms = now_ms(d->p);
    if (d->state == KEEL__D_CLOSING)
        return; /* lingering: input is dropped */
    keel_buf_commit(&d->in, (size_t)nread);
    d_process(d);
}

static void d_update_reading(keel__dconn_t *d)
{
    if (d->closing || d->eof)
        return;
    keel__xch_t *x = &d->x;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
    bool want = true;
    if (d->state == KEEL__D_BUSY) {
        if (!x->req_done)
            want = x->u != NULL && x->u->connected &&
                   pending(&x->u->tcp, &x->u->out) < lim->buffer_bytes_max &&
                   keel_buf_unread(&d->in) < KEEL_PROXY_READ_BYTES;
        else
            want = keel_buf_unread(&d->in) < KEEL_PROXY_PIPELINE_BYTES_MAX;
    }
    if (want && !d->reading)
        uv_read_start((uv_stream_t *)&d->tcp, d_alloc, d_on_read);
    else if (!want && d->reading)
        uv_read_stop((uv_stream_t *)&d->tcp);
    d->reading = want;
}

static void x_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h);

/* Parses and routes what the input holds, one request at a time. */
static void d_process(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    assert(!d->processing);
    d->processing = true;
    while (!d->closing && d->state == KEEL__D_HEAD) {
        const char *base = (const char *)keel_buf_rptr(&d->in);
        size_t n = keel_buf_unread(&d->in);
        if (n == 0)
            break;
        if (d->head_start_ms == 0) {
            d->head_start_ms = now_ms(p);
            d_arm(d);
        }
        size_t end = keel_h1_head_end(base, n, &d->scan);
        if (end == 0) {
            int st = keel_h1_request_overflow(base, n, &p->gen->req_lim);
            if (st != 0) {
                keel_counter_inc(p->m_bad_requests);
                x_local(d, st, NULL, NULL, NULL, NULL, 0);
            }
            break;
        }
        keel_h1_head_t *h = &p->req_head;
        int st = keel_h1_parse_request(base, end, &p->gen->req_lim, h);
        d->scan = 0;
        d->head_start_ms = 0;
        if (st != 0) {
            keel_counter_inc(p->m_bad_requests);
            x_local(d, st, NULL, NULL, NULL, NULL, 0);
            break;
        }
        d->state = KEEL__D_BUSY;
        x_begin(d, base, h); /* consumes the head from d->in */
    }
    d->processing = false;
    if (!d->closing && d->state == KEEL__D_BUSY)
        d_pump_req_body(d);
    d_update_reading(d);
}

void keel__proxy_on_connection(uv_stream_t *server, int status)
{
    keel__plistener_t *l = server->data;
    keel_proxy_t *p = l->p;
    if (status < 0 || p->stopping)
        return;
    keel__dconn_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return;
    d->kind = KEEL__CONN_DOWN;
    d->p = p;
    d->listener_1 = (uint32_t)(l - p->listeners) + 1;
    keel_list_init(&d->link);
    uv_tcp_init(&p->loop->uv, &d->tcp);
    d->tcp.data = d;
    p->handles_open++;
    keel_timer_init(p->loop, &d->timer);
    /* connections_max holds over every worker */
    uint32_t all = __atomic_add_fetch(&p->main->conns_all, 1, __ATOMIC_RELAXED);
    if (uv_accept(server, (uv_stream_t *)&d->tcp) != 0 ||
        all > p->gen->cfg->limits.connections_max) {
        __atomic_sub_fetch(&p->main->conns_all, 1, __ATOMIC_RELAXED);
        d->closing = true;
        keel_timer_close(&d->timer, d_timer_closed);
        return;
    }
    /* sized for the largest head any config may allow: a reload may raise the limit */
    keel_buf_init(&d->in, KEEL_H1_HEAD_BYTES_CEILING + KEEL_PROXY_PIPELINE_BYTES_MAX +
                              2 * KEEL_PROXY_READ_BYTES);
    keel_buf_init(&d->out, 0);
    keel_buf_init(&d->x.up_head, KEEL_H1_HEAD_BYTES_CEILING + 4096);
    d->x.permit = -1;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(d->peer, sizeof(d->peer), "unknown");
    if (uv_tcp_getpeername(&d->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, d->peer, sizeof(d->peer));
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, d->peer, sizeof(d->peer));
    }
    uv_tcp_nodelay(&d->tcp, 1);
    keel_list_insert_head(&p->dconns, &d->link);
    p->dconns_count++;
    keel_counter_inc(p->m_conns_total);
    keel_counter_inc(p->m_worker_conns);
    keel_gauge_add(p->m_conns_open, 1);
    d->state = KEEL__D_HEAD;
    d->active_ms = now_ms(p);
    d_update_reading(d);
    d_arm(d);
}

/* ---- local responses --------------------------------------------------------------------- */

/* Statuses after which the connection is closed: the request's end is unknown or hostile. */
static bool closes_connection(int status)
{
    return status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
           status == 501;
}

/* Answers the client from the proxy itself: an error (JSON body) or a configured response. */
static void x_local(keel__dconn_t *d, int status, const char *reason, const char *extra_headers,
                    const char *content_type, const char *body, size_t body_len)
{
    keel__xch_t *x = &d->x;
    if (d->closing)
        return;
    if (x->resp_head) { /* a response is already on its way: it cannot be replaced */
        d_close(d);
        return;
    }
    if (x->u != NULL) { /* the upstream exchange is abandoned: its connection cannot be reused */
        keel__uconn_t *u = x->u;
        x->u = NULL;
        u->d = NULL;
        u_close(u);
    }
    char err[256];
    if (body == NULL) {
        const char *m = reason ? reason : keel_http_status_text(status);
        body_len = (size_t)snprintf(err, sizeof(err),
                                    "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", status, m);
        body = err;
        content_type = "application/json";
    }
    bool keep = d->state == KEEL__D_BUSY && x->client_keepalive && x->req_done &&
                !closes_connection(status) && !d->p->stopping;
    keel_buf_t *o = &d->out;
    keel_buf_printf(o, "HTTP/1.1 %d %s\r\n", status, keel_http_status_text(status));
    if (content_type != NULL)
        keel_buf_printf(o, "Content-Type: %s\r\n", content_type);
    keel_buf_printf(o, "Content-Length: %zu\r\n", body_len);
    if (reason != NULL)
        keel_buf_printf(o, "X-Keel-Reason: %s\r\n", reason);
    if (extra_headers != NULL)
        keel_buf_append_str(o, extra_headers);
    if (!keep)
        keel_buf_append_str(o, "Connection: close\r\n");
    keel_buf_append_str(o, "\r\n");
    if (x->method_kind != 1) {
        keel_buf_append(o, body, body_len);
        x->resp_bytes = body_len;
    }
    x->status = status;
    x->resp_head = true;
    x->resp_done = true;
    x->resp_close_out = !keep;
    if (flush((uv_stream_t *)&d->tcp, o) != 0) {
        d_close(d);
        return;
    }
    x_complete(d);
}

/* ---- starting an exchange ---------------------------------------------------------------- */

static bool method_is(const char *base, keel_h1_span_t m, const char *name)
{
    return strlen(name) == m.len && memcmp(base + m.off, name, m.len) == 0;
}

static int method_kind(const char *base, keel_h1_span_t m)
{
    static const char *const idem[] = {"GET", "PUT", "DELETE", "OPTIONS", "TRACE"};
    if (method_is(base, m, "HEAD"))
        return 1;
    for (size_t i = 0; i < sizeof(idem) / sizeof(idem[0]); i++)
        if (method_is(base, m, idem[i]))
            return 2;
    return 0;
}

static bool edit_lists(const keel_proxy_header_edit_t *e, uint32_t n, const char *base,
                       keel_h1_span_t name)
{
    for (uint32_t i = 0; i < n; i++)
        if (keel_h1_span_is(base, name, e[i].name))
            return true;
    return false;
}

static const char *const trace_fields[] = {"traceparent", "b3",           "x-b3-traceid",
                                           "x-b3-spanid", "x-b3-sampled", "x-b3-parentspanid",
                                           "x-b3-flags"};

static bool is_trace_field(const char *base, keel_h1_span_t nm)
{
    for (size_t i = 0; i < sizeof(trace_fields) / sizeof(trace_fields[0]); i++)
        if (keel_h1_span_is(base, nm, trace_fields[i]))
            return true;
    return false;
}

static keel_trace_str_t field_str(const char *base, const keel_h1_head_t *h, const char *name)
{
    int i = keel_h1_find(base, h, name);
    if (i < 0)
        return (keel_trace_str_t){NULL, 0};
    return (keel_trace_str_t){base + h->fields[i].value.off, h->fields[i].value.len};
}

/* The client's trace context (traceparent, else B3 single, else B3 multi) continued by a child
 * span for the upstream call; a new root trace (not sampled: no spans are recorded yet) when
 * the client sent none or an invalid one. */
static void trace_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h)
{
    keel__xch_t *x = &d->x;
    keel_trace_ctx_t in;
    keel_trace_str_t tp = field_str(base, h, "traceparent");
    keel_trace_str_t b3 = field_str(base, h, "b3");
    keel_trace_b3_t multi = {field_str(base, h, "x-b3-traceid"), field_str(base, h, "x-b3-spanid"),
                             field_str(base, h, "x-b3-parentspanid"),
                             field_str(base, h, "x-b3-sampled"), field_str(base, h, "x-b3-flags")};
    x->b3 = false;
    int rc = KEEL_EPROTO;
    if (tp.ptr != NULL)
        rc = keel_trace_parse_traceparent(tp.ptr, tp.len, &in);
    if (rc != 0 && b3.ptr != NULL && (rc = keel_trace_parse_b3_single(b3.ptr, b3.len, &in)) == 0)
        x->b3 = true;
    if (rc != 0 && multi.trace_id.ptr != NULL && (rc = keel_trace_parse_b3_multi(&multi, &in)) == 0)
        x->b3 = true;
    if (rc == 0)
        keel_trace_child(&in, &d->p->rand, &x->trace);
    else
        keel_trace_new_root(&d->p->rand, 0, &x->trace);
}

/* Whether a client's field must not reach the upstream because of the route's JWT provider: a
 * name claims_to_headers writes (anti-spoofing: removed even when no token came, on a route
 * where the token is optional), and Authorization unless the provider forwards it. */
static bool jwt_drops(const keel_proxy_jwt_provider_t *pv, const char *base, keel_h1_span_t nm)
{
    if (pv == NULL)
        return false;
    if (!pv->forward && keel_h1_span_is(base, nm, "authorization"))
        return true;
    for (uint32_t i = 0; i < pv->claims_to_headers_count; i++)
        if (keel_h1_span_is(base, nm, pv->claims_to_headers[i].header))
            return true;
    return false;
}

/* The verified token's chosen claims as fields; a claim that is absent, not a string, integer
 * or boolean, too long, or holding a control character is not sent (it could split the head). */
static int append_claims(keel_buf_t *o, const keel_proxy_jwt_provider_t *pv, const keel_jwt_t *t)
{
    int rc = 0;
    for (uint32_t i = 0; t != NULL && t->claims != NULL && i < pv->claims_to_headers_count; i++) {
        char v[KEEL_PROXY_VALUE_BYTES_MAX];
        if (keel_jwt_claim_text(t, pv->claims_to_headers[i].claim, v, sizeof(v)) != 0)
            continue;
        bool clean = true;
        for (const char *q = v; *q && clean; q++)
            clean = (unsigned char)*q >= 0x20 && *q != 0x7f;
        if (clean)
            rc |= keel_buf_printf(o, "%s: %s\r\n", pv->claims_to_headers[i].header, v);
    }
    return rc;
}

/* The request head as it goes upstream: origin-form target (prefix rewritten), end-to-end
 * fields, X-Forwarded-For/-Proto, Via, the route's edits, the JWT's claims and our own framing.
 * pv is the route's JWT provider (NULL: none), jwt the verified token (NULL: none). */
static int build_up_head(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                         const char *path, size_t path_len, const char *query, size_t query_len,
                         const keel_proxy_jwt_provider_t *pv, const keel_jwt_t *jwt)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_route_t *r = x->route->cfg;
    keel_buf_t *o = &x->up_head;
    keel_buf_reset(o);
    int rc = keel_buf_append(o, base + h->method.off, h->method.len);
    rc |= keel_buf_append(o, " ", 1);
    if (r->rewrite_prefix != NULL) {
        size_t cut = strlen(r->path);
        rc |= keel_buf_append_str(o, r->rewrite_prefix);
        const char *rest = path + cut;
        size_t rest_len = path_len - cut;
        /* "/api/" -> "/" with "/api/x": "/x", never "//x" */
        size_t rp = strlen(r->rewrite_prefix);
        if (rp > 0 && r->rewrite_prefix[rp - 1] == '/' && rest_len > 0 && rest[0] == '/')
            rest++, rest_len--;
        rc |= keel_buf_append(o, rest, rest_len);
    } else {
        rc |= keel_buf_append(o, path, path_len);
    }
    if (query_len > 0 || (query > path && query[-1] == '?')) {
        rc |= keel_buf_append(o, "?", 1);
        rc |= keel_buf_append(o, query, query_len);
    }
    rc |= keel_buf_append_str(o, " HTTP/1.1\r\n");
    const char *xff = NULL;
    uint32_t xff_len = 0;
    bool had_length = false, had_request_id = false;
    for (uint32_t i = 0; i < h->fields_count; i++) {
        keel_h1_span_t nm = h->fields[i].name, v = h->fields[i].value;
        if (keel_h1_span_is(base, nm, "content-length"))
            had_length = true;
        if (keel_h1_span_is(base, nm, "x-request-id"))
            had_request_id = true;
        if (keel_h1_is_hop_by_hop(base, h, nm) || keel_h1_span_is(base, nm, "expect") ||
            keel_h1_span_is(base, nm, "x-forwarded-proto") ||
            keel_h1_span_is(base, nm, "x-keel-timeout-ms") || is_trace_field(base, nm) ||
            edit_lists(r->req_remove, r->req_remove_count, base, nm) || jwt_drops(pv, base, nm))
            continue;
        if (keel_h1_span_is(base, nm, "x-forwarded-for")) {
            if (xff == NULL) { /* the first one; RFC 7239 clients send one */
                xff = base + v.off;
                xff_len = v.len;
            }
            continue;
        }
        rc |= keel_buf_append(o, base + nm.off, nm.len);
        rc |= keel_buf_append(o, ": ", 2);
        rc |= keel_buf_append(o, base + v.off, v.len);
        rc |= keel_buf_append(o, "\r\n", 2);
    }
    if (h->host_field < 0) /* an HTTP/1.0 client: the first host, or the service's name */
        rc |= keel_buf_printf(o, "Host: %s\r\n",
                              x->cl->cfg->service ? x->cl->cfg->service : x->cl->hosts[0].address);
    if (xff != NULL)
        rc |= keel_buf_printf(o, "X-Forwarded-For: %.*s, %s\r\n", (int)xff_len, xff, d->peer);
    else {
        rc |= keel_buf_append(o, "X-Forwarded-For: ", 17);
        rc |= keel_buf_append_str(o, d->peer);
        rc |= keel_buf_append(o, "\r\n", 2);
    }
    rc |= keel_buf_append_str(o, "X-Forwarded-Proto: http\r\n");
    if (!had_request_id) /* Envoy's rule: a request id passes through, or one is made up */
        rc |= keel_buf_printf(o, "X-Request-Id: %016llx%016llx\r\n",
                              (unsigned long long)keel_rand_u64(&d->p->rand),
                              (unsigned long long)keel_rand_u64(&d->p->rand));
    char tp[KEEL_TRACE_B3_BYTES_MAX];
    keel_trace_format_traceparent(&x->trace, tp);
    rc |= keel_buf_append(o, "traceparent: ", 13);
    rc |= keel_buf_append_str(o, tp);
    rc |= keel_buf_append(o, "\r\n", 2);
    if (x->b3) {
        keel_trace_format_b3_single(&x->trace, tp);
        rc |= keel_buf_append(o, "b3: ", 4);
        rc |= keel_buf_append_str(o, tp);
        rc |= keel_buf_append(o, "\r\n", 2);
    }
    rc |= keel_buf_append_str(o, d->p->via_line);
    for (uint32_t i = 0; i < r->req_add_count; i++)
        rc |= keel_buf_printf(o, "%s: %s\r\n", r->req_add[i].name, r->req_add[i].value);
    if (pv != NULL)
        rc |= append_claims(o, pv, jwt);
    if (h->body == KEEL_H1_BODY_LENGTH)
        rc |= append_length(o, h->content_length);
    else if (h->body == KEEL_H1_BODY_CHUNKED)
        rc |= keel_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
    else if (had_length)
        rc |= keel_buf_append_str(o, "Content-Length: 0\r\n");
    /* the empty line is added per attempt, after X-Keel-Timeout-Ms (u_send) */
    return rc;
}

/* The rate limit key of the request: the client address or a header's value. */
static bool ratelimit_denied(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                             const keel_jwt_t *jwt, keel_ms_t *retry_after_ms)
{
    keel__proute_t *rt = d->x.route;
    const keel_proxy_ratelimit_t *c = &rt->cfg->ratelimit;
    const char *key = d->peer;
    size_t key_len = strlen(d->peer);
    char claim[KEEL_RATELIMIT_KEY_BYTES_MAX + 1];
    if (c->key == KEEL_PROXY_RL_CLAIM) {
        /* a verified token's claim (cut to the key ceiling); requests without a token (an
         * optional jwt) or without the claim share one bucket, as for a missing header */
        int crc = jwt && jwt->claims ? keel_jwt_claim_text(jwt, c->header, claim, sizeof(claim))
                                     : KEEL_ENOTFOUND;
        key = crc == 0 || crc == KEEL_ETOOBIG ? claim : "";
        key_len = strlen(key);
    } else if (c->key == KEEL_PROXY_RL_HEADER) {
        int i = keel_h1_find(base, h, c->header);
        if (i < 0) {
            key = "";
            key_len = 0; /* every request without the header shares one bucket */
        } else {
            key = base + h->fields[i].value.off;
            key_len = h->fields[i].value.len;
            if (key_len > KEEL_RATELIMIT_KEY_BYTES_MAX)
                key_len = KEEL_RATELIMIT_KEY_BYTES_MAX;
        }
    }
    pthread_mutex_lock(&rt->mu); /* one bucket per key over every worker */
    int rc = keel_ratelimit_keyed_take(&rt->rl, keel__shared_now(&rt->now_max_ms, now_ms(d->p)),
                                       key, key_len, 1, retry_after_ms);
    pthread_mutex_unlock(&rt->mu);
    if (rc == KEEL_EFULL) {
        *retry_after_ms = 1000; /* the key table is full of busy clients: shed */
        return true;
    }
    return rc == KEEL_EREJECTED;
}

static void x_local_429(keel__dconn_t *d, keel_ms_t retry_after_ms)
{
    const keel_proxy_ratelimit_t *c = &d->x.route->cfg->ratelimit;
    long long secs = (retry_after_ms + 999) / 1000;
    if (secs < KEEL_PROXY_RETRY_AFTER_S_MIN)
        secs = KEEL_PROXY_RETRY_AFTER_S_MIN;
    char hdrs[256];
    /* RateLimit-* after draft-ietf-httpapi-ratelimit-headers (limit, remaining, reset) */
    snprintf(hdrs, sizeof(hdrs),
             "Retry-After: %lld\r\nRateLimit-Limit: %llu\r\nRateLimit-Remaining: 0\r\n"
             "RateLimit-Reset: %lld\r\n",
             secs, (unsigned long long)c->burst, secs);
    keel_counter_inc(d->x.route->m_rate_limited);
    x_local(d, 429, "rate-limited", hdrs, NULL, NULL, 0);
}

/* The route's JWT requirement: KEEL_PROXY_AUTH_OK also when none is set or a missing token is
 * allowed (then jwt->claims stays NULL). */
static keel_proxy_auth_result_t x_authenticate(keel__dconn_t *d, const char *base,
                                               const keel_h1_head_t *h, keel_jwt_t *jwt, char *why)
{
    const keel_proxy_route_t *r = d->x.route->cfg;
    memset(jwt, 0, sizeof(*jwt));
    if (!r->jwt.enabled)
        return KEEL_PROXY_AUTH_OK;
    keel_proxy_auth_value_t authz[2];
    size_t n = 0;
    for (uint32_t i = 0; i < h->fields_count && n < 2; i++)
        if (keel_h1_span_is(base, h->fields[i].name, "authorization"))
            authz[n++] =
                (keel_proxy_auth_value_t){base + h->fields[i].value.off, h->fields[i].value.len};
    keel__pgen_t *gen = d->x.gen;
    keel_proxy_auth_result_t res = keel_proxy_auth_verify(
        &gen->cfg->jwt_providers[r->jwt.provider], &gen->keys.sets[r->jwt.provider],
        gen->keys.caches[r->jwt.provider], authz, n, keel_clock_unix_ms() / 1000, jwt, why);
    if (res == KEEL_PROXY_AUTH_MISSING && !r->jwt.required)
        return KEEL_PROXY_AUTH_OK;
    return res;
}

/* 401 with the RFC 6750 §3 challenge; why is already sanitized (auth.h). */
static void x_local_401(keel__dconn_t *d, keel_proxy_auth_result_t res, const char *why)
{
    char hdrs[128 + KEEL_PROXY_AUTH_WHY_BYTES_MAX]; /* the longest reason fits whole */
    if (res == KEEL_PROXY_AUTH_MISSING) /* no credentials: no error code (RFC 6750 §3.1) */
        snprintf(hdrs, sizeof(hdrs), "WWW-Authenticate: Bearer realm=\"keel\"\r\n");
    else
        snprintf(hdrs, sizeof(hdrs),
                 "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"%s\"\r\n",
                 why);
    keel_counter_inc(d->x.route->m_auth_refused);
    x_local(d, 401, res == KEEL_PROXY_AUTH_MISSING ? "jwt-missing" : "jwt-invalid", hdrs, NULL,
            NULL, 0);
}

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
static void agg_release(keel__dconn_t *d)
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
static int agg_prepare(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
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
        keel_counter_inc(cl->m_class[status_class(status)]);
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
    int picked = keel_balance_pick(&cl->lb, 0, snow, &idx);
    for (int k = 0; picked == 0 && pt->failed_host_1 == idx + 1 && cl->lb.avail_n > 1 &&
                    k < KEEL_PROXY_REPICKS_MAX;
         k++)
        picked = keel_balance_pick(&cl->lb, 0, snow, &idx);
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
        x_local(d, 503, "out-of-memory", NULL, NULL, NULL, 0);
        return;
    }
    x_local(d, st, NULL, NULL, "application/json", body, len); /* releases a */
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
        return; /* agg_release frees it */
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

static void agg_start(keel__dconn_t *d)
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

static void x_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h)
{
    keel_proxy_t *p = d->p;
    keel__xch_t *x = &d->x;
    keel__pgen_t *gen = p->gen;
    x->gen = gen;
    keel__gen_ref(gen); /* the exchange finishes on the config it started with */
    x->start_ms = now_ms(p);
    x->permit = -1;
    x->method_kind = method_kind(base, h->method);
    if (gen->cfg->access_log) {
        snprintf(x->method, sizeof(x->method), "%.*s", (int)h->method.len, base + h->method.off);
        snprintf(x->target, sizeof(x->target), "%.*s", (int)h->target.len, base + h->target.off);
    }
    x->client_keepalive = h->keep_alive && h->version_minor == 1 && !p->stopping;
    x->req_body = h->body;
    x->req_remaining = h->content_length;
    x->req_done = h->body == KEEL_H1_BODY_NONE;
    x->expect_continue = h->expect_continue && !x->req_done;
    keel_h1_chunked_init(&x->req_ck);
    const char *path, *query;
    size_t path_len, query_len;
    bool target_ok = keel_proxy_split_target(base + h->target.off, h->target.len, &path, &path_len,
                                             &query, &query_len);
    keel_proxy_header_view_t views[KEEL_H1_HEADERS_CEILING];
    for (uint32_t i = 0; i < h->fields_count; i++)
        views[i] =
            (keel_proxy_header_view_t){base + h->fields[i].name.off, h->fields[i].name.len,
                                       base + h->fields[i].value.off, h->fields[i].value.len};
    keel_proxy_req_view_t view = {
        base + h->method.off, h->method.len, NULL, 0, path, path_len, query, query_len, views,
        h->fields_count,      d->listener_1};
    if (h->host_field >= 0) {
        view.host = base + h->fields[h->host_field].value.off;
        view.host_len = h->fields[h->host_field].value.len;
    }
    uint64_t body_max = gen->cfg->limits.body_bytes_max;
    int route = target_ok ? keel_proxy_route_match(gen->cfg, &view) : -1;
    if (route >= 0) {
        x->route = &gen->routes[route];
        keel_counter_inc(x->route->m_requests);
    }
    int build = 0;
    keel_ms_t retry_after_ms = 0;
    const keel_proxy_route_t *r = x->route ? x->route->cfg : NULL;
    keel_jwt_t jwt = {0};
    char why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    keel_proxy_auth_result_t auth =
        r != NULL && target_ok ? x_authenticate(d, base, h, &jwt, why) : KEEL_PROXY_AUTH_OK;
    const keel_proxy_jwt_provider_t *pv =
        r != NULL && r->jwt.enabled ? &gen->cfg->jwt_providers[r->jwt.provider] : NULL;
    if (r != NULL && auth == KEEL_PROXY_AUTH_OK && r->action == KEEL_PROXY_ACTION_AGGREGATE) {
        trace_begin(d, base, h);
        x->agg_refused = agg_prepare(d, base, h, &view, pv, &jwt);
    }
    if (r != NULL && auth == KEEL_PROXY_AUTH_OK && r->action == KEEL_PROXY_ACTION_FORWARD) {
        x->cl =
            gen->clusters[r->clusters[keel_proxy_route_pick(r, keel_rand_u64(&p->rand))].cluster];
        trace_begin(d, base, h);
        build = build_up_head(d, base, h, path, path_len, query, query_len, pv, &jwt);
    }
    /* key for hash balancing, computed while the head is at hand */
    uint64_t key_hash = 0;
    if (x->cl != NULL && x->cl->cfg->hash_on == KEEL_PROXY_HASH_SOURCE)
        key_hash = keel_balance_hash(d->peer, strlen(d->peer));
    else if (x->cl != NULL && x->cl->cfg->hash_on == KEEL_PROXY_HASH_HEADER) {
        int i = keel_h1_find(base, h, x->cl->cfg->hash_header);
        if (i >= 0)
            key_hash = keel_balance_hash(base + h->fields[i].value.off, h->fields[i].value.len);
    }
    if (r != NULL && r->retry.idempotency_header != NULL) {
        int i = keel_h1_find(base, h, r->retry.idempotency_header);
        x->idem_key = i >= 0 && h->fields[i].value.len > 0;
    }
    bool limited = r != NULL && auth == KEEL_PROXY_AUTH_OK && x->route->rl_on &&
                   ratelimit_denied(d, base, h, &jwt, &retry_after_ms);
    keel_jwt_free(&jwt); /* its claims are in the upstream head and the rate-limit key by now */
    keel_buf_consume(&d->in, h->head_bytes); /* the head's bytes are no longer needed */

    if (!target_ok) {
        keel_counter_inc(p->m_bad_requests);
        x_local(d, 400, "bad-target", NULL, NULL, NULL, 0);
    } else if (h->body == KEEL_H1_BODY_LENGTH && body_max > 0 && h->content_length > body_max) {
        x_local(d, 413, NULL, NULL, NULL, NULL, 0);
    } else if (r == NULL) {
        keel_counter_inc(p->m_no_route);
        x_local(d, 404, "no-route", NULL, NULL, NULL, 0);
    } else if (auth != KEEL_PROXY_AUTH_OK) {
        x_local_401(d, auth, why);
    } else if (limited) {
        x_local_429(d, retry_after_ms);
    } else if (r->action == KEEL_PROXY_ACTION_DIRECT) {
        x_local(d, r->direct_status, NULL, NULL,
                r->direct_content_type ? r->direct_content_type : "text/plain",
                r->direct_body ? r->direct_body : "", r->direct_body ? strlen(r->direct_body) : 0);
    } else if (r->action == KEEL_PROXY_ACTION_REDIRECT) {
        char loc[KEEL_PROXY_VALUE_BYTES_MAX + 16];
        snprintf(loc, sizeof(loc), "Location: %s\r\n", r->redirect_location);
        x_local(d, r->redirect_status, NULL, loc, "text/plain", "", 0);
    } else if (r->action == KEEL_PROXY_ACTION_AGGREGATE) {
        if (h->body != KEEL_H1_BODY_NONE)
            x_local(d, 400, "aggregate-takes-no-body", NULL, NULL, NULL, 0);
        else if (x->agg_refused != 0)
            x_local(d, x->agg_refused, x->agg_refused == 400 ? "bad-parameter" : "out-of-memory",
                    NULL, NULL, NULL, 0);
        else
            agg_start(d);
    } else if (build != 0) {
        x_local(d, 431, NULL, NULL, NULL, NULL, 0);
    } else if (!cl_admit(x->cl)) {
        keel_counter_inc(x->cl->m_bulkhead_rejected);
        x_local(d, 503, "bulkhead-full", NULL, NULL, NULL, 0);
    } else {
        /* a body that may be retried is kept as it goes upstream, up to the limit */
        uint64_t keep = r->retry.attempts_max > 1 ? gen->cfg->limits.retry_buffer_bytes : 0;
        keel_proxy_replay_begin(&x->replay, keep,
                                h->body == KEEL_H1_BODY_LENGTH    ? h->content_length
                                : h->body == KEEL_H1_BODY_CHUNKED ? UINT64_MAX
                                                                  : 0);
        x->counted = true; /* by cl_admit */
        x->up_keepalive = true;
        keel_ms_t deadline = r->timeout_ms > 0 ? x->start_ms + r->timeout_ms : KEEL_MS_NEVER;
        pthread_mutex_lock(&x->route->mu); /* the policy keeps counters */
        keel_ms_t first = keel_retry_begin(&x->route->retry, &x->call, x->start_ms, deadline);
        pthread_mutex_unlock(&x->route->mu);
        x->try_deadline_ms =
            first > 0 && first < KEEL_MS_NEVER / 2 ? x->start_ms + first : KEEL_MS_NEVER;
        x->retry_at_ms = 0;
        x->key_hash = key_hash;
        x_attempt(d);
    }
}

/* ---- attempts ---------------------------------------------------------------------------- */

static void u_on_connect(uv_connect_t *req, int status);
static void u_send(keel__uconn_t *u);

static keel__uconn_t *u_new(keel_proxy_t *p, keel__phost_t *host)
{
    keel__uconn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->kind = KEEL__CONN_UP;
    u->p = p;
    u->host = host;
    keel_list_init(&u->link);
    keel_buf_init(&u->in, KEEL_H1_HEAD_BYTES_CEILING + KEEL_PROXY_READ_BYTES * 2);
    keel__cluster_ref(host->cl); /* until the connection is closed */
    keel_buf_init(&u->out, 0);
    uv_tcp_init(&p->loop->uv, &u->tcp);
    u->tcp.data = u;
    p->handles_open++;
    __atomic_add_fetch(&host->conns, 1, __ATOMIC_RELEASE);
    keel_gauge_add(host->cl->m_conns, 1);
    u->connect_req.data = u;
    if (uv_tcp_connect(&u->connect_req, &u->tcp, (const struct sockaddr *)&host->addr,
                       u_on_connect) != 0) {
        u_close(u);
        return NULL;
    }
    return u;
}

static void x_schedule_retry_or_fail(keel__dconn_t *d, keel_retry_failure_t failure, int status,
                                     int fail_status, const char *reason);

/* The breaker's permit and the balancer's pick for the exchange's next attempt, in one section
 * under the cluster's mutex (the host is counted before it is unlocked, so a registry update
 * cannot reuse its slot). 0 with *idx; KEEL_EREJECTED: the breaker is open; KEEL_EEMPTY: a
 * service cluster the registry left empty; KEEL_ENOTFOUND: no available host. */
static int attempt_pick(keel__dconn_t *d, uint32_t *idx)
{
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    keel__cl_lock(cl);
    keel_ms_t now = keel__shared_now(&cl->now_max_ms, now_ms(d->p));
    int rc = 0;
    if (cl->cfg->breaker_enabled) {
        x->permit = keel_breaker_allow(&cl->breaker, now);
        if (x->permit < 0)
            rc = KEEL_EREJECTED;
    }
    int picked = rc == 0 ? keel_balance_pick(&cl->lb, x->key_hash, now, idx) : 0;
    /* a retry goes to another host when there is one (Envoy's previous_hosts predicate, with
     * its few re-picks; a hash policy that maps the key to that host keeps it) */
    for (int k = 0; rc == 0 && picked == 0 && x->failed_host_1 == *idx + 1 && cl->lb.avail_n > 1 &&
                    k < KEEL_PROXY_REPICKS_MAX;
         k++)
        picked = keel_balance_pick(&cl->lb, x->key_hash, now, idx);
    if (rc == 0 && picked != 0) {
        if (x->permit >= 0)
            keel_breaker_record(&cl->breaker, now, x->permit, KEEL_BREAKER_IGNORED, 0);
        x->permit = -1;
        rc = cl->cfg->service != NULL && cl->live == 0 ? KEEL_EEMPTY : KEEL_ENOTFOUND;
    }
    if (rc == 0) {
        keel_balance_start(&cl->lb, *idx);
        cl->hosts[*idx].active++;
    }
    keel__cl_unlock(cl);
    return rc;
}

/* Counts a request in its cluster unless max_requests (the bulkhead) is reached, over every
 * worker. */
static bool cl_admit(keel__pcluster_t *cl)
{
    keel__cl_lock(cl);
    bool ok = cl->cfg->max_requests == 0 || cl->active_requests < cl->cfg->max_requests;
    if (ok)
        cl->active_requests++;
    keel__cl_unlock(cl);
    return ok;
}

static void x_attempt(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    keel_ms_t now = now_ms(p);
    uint32_t idx;
    int picked = attempt_pick(d, &idx);
    if (picked == KEEL_EREJECTED) {
        keel_counter_inc(cl->m_breaker_rejected);
        x_local(d, 503, "circuit-open", NULL, NULL, NULL, 0);
        return;
    }
    if (picked != 0) {
        /* a service cluster the registry left empty says so (no instance passes its checks) */
        x_local(d, 503, picked == KEEL_EEMPTY ? "no-registered-instance" : "no-healthy-upstream",
                NULL, NULL, NULL, 0);
        return;
    }
    keel__phost_t *host = &cl->hosts[idx];
    x->balance_started = true;
    x->host = host;
    x->try_start_ms = now;
    x->attempts++;
    x->upstream = host->address;
    keel_counter_inc(cl->m_attempts);
    keel__uconn_t *u = NULL;
    keel__ppool_t *pool = keel__pool(p, host); /* this worker's */
    keel_list_t *it = keel_list_first(&pool->idle);
    if (it != NULL) {
        u = KEEL_LIST_ENTRY(it, keel__uconn_t, link);
        keel_list_remove(&u->link);
        __atomic_sub_fetch(&pool->idle_count, 1, __ATOMIC_RELAXED);
        u->idle = false;
        u->d = d;
        x->u = u;
        u_send(u);
    } else {
        u = u_new(p, host);
        if (u == NULL) {
            x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-failed");
            return;
        }
        u->d = d;
        x->u = u;
        x->connect_deadline_ms = now + cl->cfg->connect_timeout_ms;
    }
    d_arm(d);
}

static void x_timeout(keel__dconn_t *d, bool connect)
{
    keel__xch_t *x = &d->x;
    keel_counter_inc(x->cl->m_timeouts);
    if (now_ms(d->p) >= x->call.deadline_ms) { /* the route's deadline: no more tries */
        x_end_attempt(d, 0, 0, true);
        x_local(d, 504, "upstream-timeout", NULL, NULL, NULL, 0);
        return;
    }
    if (connect)
        x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-timeout");
    else
        x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_TIMEOUT, 0, 504, "upstream-timeout");
}

/* Decides whether the failed attempt is tried again; true when a retry is scheduled. */
static bool x_try_again(keel__dconn_t *d, keel_retry_failure_t failure, int status)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_retry_t *rt = &x->route->cfg->retry;
    if (rt->attempts_max <= 1 || x->resp_head || d->p->stopping)
        return false;
    keel_proxy_retry_req_t rq = {x->method_kind != 0, x->idem_key, x->replay.sent,
                                 keel_proxy_replay_ok(&x->replay)};
    if (keel_proxy_retry_eligible(rt, &rq, failure, status) != KEEL_PROXY_RETRY_OK)
        return false;
    /* core/retry judges attempts, the deadline and the backoff; class and idempotency were
     * decided above (its policy is configured to accept every class we pass it) */
    keel_retry_outcome_t o = {failure, failure == KEEL_RETRY_FAIL_NONE ? 503 : 0, true};
    keel_retry_decision_t dec;
    keel_ms_t now = now_ms(d->p);
    pthread_mutex_lock(&x->route->mu);
    keel_retry_next(&x->route->retry, &x->call, now, &o, &d->p->rand, &dec);
    pthread_mutex_unlock(&x->route->mu);
    if (dec.verdict != KEEL_RETRY_RETRY)
        return false;
    /* retries in flight other than this request's own, over every worker */
    keel__cl_lock(x->cl);
    uint64_t others = x->cl->active_retries - (x->retrying ? 1 : 0);
    bool allowed = keel_proxy_retry_budget_allows(rt, x->cl->active_requests, others);
    if (allowed && !x->retrying)
        x->cl->active_retries++;
    keel__cl_unlock(x->cl);
    if (!allowed) {
        keel_counter_inc(x->cl->m_budget_exhausted);
        return false;
    }
    x->retrying = true;
    keel_counter_inc(x->cl->m_retries);
    x->retry_at_ms = dec.start_ms > now ? dec.start_ms : now;
    x->try_deadline_ms =
        dec.try_timeout_ms < KEEL_MS_NEVER / 2 ? dec.start_ms + dec.try_timeout_ms : KEEL_MS_NEVER;
    d_arm(d);
    return true;
}

/* The attempt failed before a response head reached the client. */
static void x_schedule_retry_or_fail(keel__dconn_t *d, keel_retry_failure_t failure, int status,
                                     int fail_status, const char *reason)
{
    keel__xch_t *x = &d->x;
    if (x->u != NULL) {
        keel__uconn_t *u = x->u;
        x->u = NULL;
        u->d = NULL;
        u_close(u);
    }
    x_end_attempt(d, 0, failure == KEEL_RETRY_FAIL_NONE ? status : 0,
                  failure != KEEL_RETRY_FAIL_NONE);
    if (x->resp_head) {
        d_close(d);
        return;
    }
    if (x_try_again(d, failure, status))
        return;
    x_local(d, fail_status, reason, NULL, NULL, NULL, 0);
}

/* ---- request body ------------------------------------------------------------------------ */

static void d_pump_req_body(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    keel__uconn_t *u = x->u;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
    if (x->req_done || u == NULL || !u->connected) {
        d_update_reading(d);
        return;
    }
    while (!x->req_done && keel_buf_unread(&d->in) > 0 &&
           pending(&u->tcp, &u->out) < lim->buffer_bytes_max) {
        const uint8_t *in = keel_buf_rptr(&d->in);
        size_t n = keel_buf_unread(&d->in);
        if (x->req_body == KEEL_H1_BODY_LENGTH) {
            size_t take = n < x->req_remaining ? n : (size_t)x->req_remaining;
            keel_buf_append(&u->out, in, take);
            keel_proxy_replay_add(&x->replay, in, take); /* kept for a retry while it fits */
            keel_buf_consume(&d->in, take);
            x->req_remaining -= take;
            x->req_bytes += take;
            x->req_done = x->req_remaining == 0;
            continue;
        }
        size_t used, off, len;
        int ev = keel_h1_chunked_feed(&x->req_ck, in, n, &used, &off, &len);
        if (ev == KEEL_H1_CK_BAD) {
            keel_counter_inc(d->p->m_bad_requests);
            x->req_done = true; /* the connection closes after the 400 */
            x_local(d, 400, "bad-chunk", NULL, NULL, NULL, 0);
            return;
        }
        if (ev == KEEL_H1_CK_BODY && len > 0) {
            x->req_bytes += len;
            if (lim->body_bytes_max > 0 && x->req_bytes > lim->body_bytes_max) {
                x->req_done = true;
                x_local(d, 413, NULL, NULL, NULL, NULL, 0);
                return;
            }
            size_t before = keel_buf_unread(&u->out);
            append_chunk_size(&u->out, len);
            keel_buf_append(&u->out, in + off, len);
            keel_buf_append(&u->out, "\r\n", 2);
            /* the chunk as framed upstream, kept for a retry while it fits */
            keel_proxy_replay_add(&x->replay, keel_buf_rptr(&u->out) + before,
                                  keel_buf_unread(&u->out) - before);
        }
        keel_buf_consume(&d->in, used);
        if (ev == KEEL_H1_CK_END) {
            keel_buf_append(&u->out, "0\r\n\r\n", 5);
            keel_proxy_replay_add(&x->replay, "0\r\n\r\n", 5);
            x->req_done = true;
        }
    }
    if (flush((uv_stream_t *)&u->tcp, &u->out) != 0) {
        x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
        return;
    }
    x->req_sent = x->req_done;
    d_update_reading(d);
}

/* ---- upstream connections ---------------------------------------------------------------- */

static void u_handle_closed(uv_handle_t *h)
{
    keel__uconn_t *u = h->data;
    keel_proxy_t *p = u->p;
    keel__pcluster_t *cl = u->host->cl;
    keel_buf_free(&u->in);
    keel_buf_free(&u->out);
    free(u);
    keel__cluster_unref(cl);
    keel__proxy_handle_closed(p);
}

static void u_close(keel__uconn_t *u)
{
    if (u->closing)
        return;
    assert(u->d == NULL);
    u->closing = true;
    if (u->idle) {
        keel_list_remove(&u->link);
        __atomic_sub_fetch(&keel__pool(u->p, u->host)->idle_count, 1, __ATOMIC_RELAXED);
        u->idle = false;
    }
    __atomic_sub_fetch(&u->host->conns, 1, __ATOMIC_RELEASE);
    keel_gauge_add(u->host->cl->m_conns, -1);
    uv_close((uv_handle_t *)&u->tcp, u_handle_closed);
}

static void u_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    keel__uconn_t *u = h->data;
    alloc_into(&u->in, buf);
}

static void u_on_eof(keel__uconn_t *u, int err);
static void u_process(keel__uconn_t *u);

static void u_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__uconn_t *u = s->data;
    if (nread == 0 || u->closing)
        return;
    if (u->d == NULL) { /* idle in the pool: the server closed it, or sent bytes unasked */
        u_close(u);
        return;
    }
    if (nread < 0) {
        u_on_eof(u, (int)nread);
        return;
    }
    keel_buf_commit(&u->in, (size_t)nread);
    u->d->active_ms = now_ms(u->p);
    u_process(u);
}

static void u_update_reading(keel__uconn_t *u)
{
    if (u->closing)
        return;
    bool want = true;
    if (u->d != NULL) {
        keel__dconn_t *d = u->d;
        want = !d->x.resp_done &&
               pending(&d->tcp, &d->out) < d->p->gen->cfg->limits.buffer_bytes_max &&
               keel_buf_unread(&u->in) < KEEL_PROXY_READ_BYTES;
    }
    if (want && !u->reading)
        uv_read_start((uv_stream_t *)&u->tcp, u_alloc, u_on_read);
    else if (!want && u->reading)
        uv_read_stop((uv_stream_t *)&u->tcp);
    u->reading = want;
}

static void u_on_connect(uv_connect_t *req, int status)
{
    keel__uconn_t *u = req->data;
    if (u->closing || status == UV_ECANCELED)
        return;
    keel__dconn_t *d = u->d;
    assert(d != NULL);
    if (status < 0) {
        keel_counter_inc(u->host->cl->m_connect_errors);
        x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-failed");
        return;
    }
    u->connected = true;
    uv_tcp_nodelay(&u->tcp, 1);
    u_send(u);
    d_arm(d);
}

static void u_send(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    u->requests++;
    keel_buf_reset(&u->in);
    u->scan = 0;
    keel_buf_append(&u->out, keel_buf_rptr(&x->up_head), keel_buf_unread(&x->up_head));
    /* the time this attempt has left, so the service can give up when we will (Envoy's
     * x-envoy-expected-rq-timeout-ms); absent when the route has no timeout */
    keel_ms_t until = keel_ms_min(x->call.deadline_ms, x->try_deadline_ms);
    if (until < KEEL_MS_NEVER / 2) {
        keel_ms_t now = now_ms(d->p);
        keel_buf_append_str(&u->out, "X-Keel-Timeout-Ms: ");
        keel_buf_append_u64_dec(&u->out, (uint64_t)(until > now ? until - now : 1));
        keel_buf_append(&u->out, "\r\n", 2);
    }
    keel_buf_append(&u->out, "\r\n", 2);
    /* a retry: the body bytes the failed attempt sent, again (the rest still streams from the
     * client); x_try_again allowed it only if they are all kept */
    if (x->replay.sent)
        keel_buf_append(&u->out, keel_buf_rptr(&x->replay.buf), keel_buf_unread(&x->replay.buf));
    if (x->expect_continue && !x->replay.sent) {
        /* we want the body now: say so to the client ourselves (RFC 9110 §10.1.1) */
        keel_buf_append_str(&d->out, "HTTP/1.1 100 Continue\r\n\r\n");
        x->expect_continue = false;
        if (flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
            d_close(d);
            return;
        }
    }
    if (x->req_done)
        x->req_sent = true;
    if (flush((uv_stream_t *)&u->tcp, &u->out) != 0) {
        x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
        return;
    }
    u_update_reading(u);
    d_pump_req_body(d);
}

static void u_on_drained(keel__uconn_t *u)
{
    if (u->closing || u->d == NULL)
        return;
    d_pump_req_body(u->d);
}

/* The response head as it goes to the client. */
static void send_resp_head(keel__dconn_t *d, const char *base, const keel_h1_head_t *h)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_route_t *r = x->route->cfg;
    keel_buf_t *o = &d->out;
    keel_buf_append(o, "HTTP/1.1 ", 9);
    keel_buf_append_u64_dec(o, (uint64_t)h->status);
    keel_buf_append(o, " ", 1);
    if (h->reason.len > 0)
        keel_buf_append(o, base + h->reason.off, h->reason.len);
    else
        keel_buf_append_str(o, keel_http_status_text(h->status));
    keel_buf_append(o, "\r\n", 2);
    for (uint32_t i = 0; i < h->fields_count; i++) {
        keel_h1_span_t nm = h->fields[i].name, v = h->fields[i].value;
        bool passthrough_length =
            h->body == KEEL_H1_BODY_NONE && keel_h1_span_is(base, nm, "content-length");
        if ((!passthrough_length && keel_h1_is_hop_by_hop(base, h, nm)) ||
            edit_lists(r->resp_remove, r->resp_remove_count, base, nm))
            continue;
        keel_buf_append(o, base + nm.off, nm.len);
        keel_buf_append(o, ": ", 2);
        keel_buf_append(o, base + v.off, v.len);
        keel_buf_append(o, "\r\n", 2);
    }
    keel_buf_append_str(o, d->p->via_line);
    for (uint32_t i = 0; i < r->resp_add_count; i++)
        keel_buf_printf(o, "%s: %s\r\n", r->resp_add[i].name, r->resp_add[i].value);
    x->resp_body = h->body;
    x->resp_remaining = h->content_length;
    keel_h1_chunked_init(&x->resp_ck);
    if (h->body == KEEL_H1_BODY_LENGTH) {
        append_length(o, h->content_length);
    } else if (h->body == KEEL_H1_BODY_CHUNKED || h->body == KEEL_H1_BODY_CLOSE) {
        if (x->client_keepalive) {
            keel_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
            x->resp_chunk_out = true;
        } else {
            x->resp_close_out = true;
        }
    } else if (x->method_kind != 1 && h->status >= 200 && h->status != 204 && h->status != 304 &&
               keel_h1_find(base, h, "content-length") < 0) {
        keel_buf_append_str(o, "Content-Length: 0\r\n");
    }
    if (!x->client_keepalive || !x->req_done || d->p->stopping)
        x->resp_close_out = true;
    if (x->resp_close_out)
        keel_buf_append_str(o, "Connection: close\r\n");
    keel_buf_append_str(o, "\r\n");
    x->resp_head = true;
    x->status = h->status;
    x->up_keepalive = h->keep_alive;
    x->resp_done = h->body == KEEL_H1_BODY_NONE;
}

static void u_process(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    keel_proxy_t *p = d->p;
    while (!x->resp_head) {
        const char *base = (const char *)keel_buf_rptr(&u->in);
        size_t n = keel_buf_unread(&u->in);
        size_t end = keel_h1_head_end(base, n, &u->scan);
        if (end == 0) {
            if (n > x->gen->resp_lim.head_bytes_max) {
                keel_counter_inc(x->cl->m_bad_responses);
                x->up_keepalive = false;
                x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_NONE, 502, 502,
                                         "upstream-headers-too-large");
            }
            return;
        }
        keel_h1_head_t *h = &p->resp_head;
        int st = keel_h1_parse_response(base, end, &x->gen->resp_lim, x->method_kind == 1, h);
        u->scan = 0;
        if (st != 0 || h->status == 101) {
            keel_counter_inc(x->cl->m_bad_responses);
            x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_NONE, 502, 502, "upstream-bad-response");
            return;
        }
        if (h->status < 200) { /* 1xx: interim, dropped (we answered 100-continue ourselves) */
            keel_buf_consume(&u->in, end);
            continue;
        }
        const keel_proxy_retry_t *rt = &x->route->cfg->retry;
        if (rt->attempts_max > 1 && keel_proxy_replay_ok(&x->replay) &&
            keel_proxy_retry_on(rt, KEEL_RETRY_FAIL_NONE, h->status)) {
            /* a retry discards this response and its connection */
            int status = h->status;
            x->u = NULL;
            u->d = NULL;
            x_end_attempt(d, status >= 500 ? 0 : 1, status, false);
            if (x_try_again(d, KEEL_RETRY_FAIL_NONE, status)) {
                u_close(u);
                return;
            }
            x->u = u; /* no retry: this response is the answer after all */
            u->d = d;
        }
        send_resp_head(d, base, h);
        keel_buf_consume(&u->in, end);
    }
    u_pump_resp_body(u);
}

static void u_pump_resp_body(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    if (d == NULL)
        return;
    keel__xch_t *x = &d->x;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
    while (!x->resp_done && keel_buf_unread(&u->in) > 0 &&
           pending(&d->tcp, &d->out) < lim->buffer_bytes_max) {
        const uint8_t *in = keel_buf_rptr(&u->in);
        size_t n = keel_buf_unread(&u->in);
        size_t used = n, off = 0, len = n;
        int ev = KEEL_H1_CK_BODY;
        if (x->resp_body == KEEL_H1_BODY_LENGTH) {
            used = len = n < x->resp_remaining ? n : (size_t)x->resp_remaining;
            x->resp_remaining -= len;
            if (x->resp_remaining == 0)
                ev = KEEL_H1_CK_END;
        } else if (x->resp_body == KEEL_H1_BODY_CHUNKED) {
            ev = keel_h1_chunked_feed(&x->resp_ck, in, n, &used, &off, &len);
            if (ev == KEEL_H1_CK_BAD) { /* the response cannot be completed */
                keel_counter_inc(x->cl->m_bad_responses);
                d_close(d);
                return;
            }
            if (ev != KEEL_H1_CK_BODY)
                len = 0;
        }
        if (len > 0) {
            x->resp_bytes += len;
            if (x->resp_chunk_out)
                append_chunk_size(&d->out, len);
            keel_buf_append(&d->out, in + off, len);
            if (x->resp_chunk_out)
                keel_buf_append(&d->out, "\r\n", 2);
        }
        keel_buf_consume(&u->in, used);
        if (ev == KEEL_H1_CK_END) {
            if (x->resp_chunk_out)
                keel_buf_append(&d->out, "0\r\n\r\n", 5);
            x->resp_done = true;
        }
    }
    /* the outcome is recorded before the client can read the response's end: with several
     * workers, what the client does next (an admin query, a request on another worker) must
     * see the breaker and outlier state this response left */
    if (x->resp_done && x->host != NULL)
        x_end_attempt(d, x->status >= 500 ? 0 : 1, x->status, false);
    if (flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
        d_close(d);
        return;
    }
    if (x->resp_done) {
        x_complete(d);
        return;
    }
    u_update_reading(u);
}

static void u_on_eof(keel__uconn_t *u, int err)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    if (x->resp_head && x->resp_body == KEEL_H1_BODY_CLOSE && err == UV_EOF) {
        x->up_keepalive = false;
        if (x->resp_chunk_out)
            keel_buf_append(&d->out, "0\r\n\r\n", 5);
        x->resp_done = true;
        if (x->host != NULL) /* before the client can see the end, as above */
            x_end_attempt(d, 1, x->status, false);
        if (flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
            d_close(d);
            return;
        }
        x_complete(d);
        return;
    }
    if (x->resp_head) {
        /* closed mid-body: the client must not take a truncated body for a whole one */
        keel_counter_inc(x->cl->m_resets);
        if (x->host != NULL)
            x_end_attempt(d, 0, 0, true);
        d_close(d);
        return;
    }
    keel_counter_inc(x->cl->m_resets);
    x_schedule_retry_or_fail(d, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
}

/* ---- completing an exchange -------------------------------------------------------------- */

/* The response has been queued for the client in full. */
static void x_complete(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    keel_proxy_t *p = d->p;
    keel__uconn_t *u = x->u;
    if (u != NULL) {
        const keel_proxy_cluster_t *cc = x->cl->cfg;
        keel__ppool_t *pool = keel__pool(p, u->host); /* idle_max is per worker */
        bool reuse = x->up_keepalive && x->req_sent && keel_buf_unread(&u->in) == 0 &&
                     keel_buf_unread(&u->out) == 0 && !p->stopping &&
                     !__atomic_load_n(&u->host->cl->retired, __ATOMIC_ACQUIRE) &&
                     !__atomic_load_n(&u->host->gone, __ATOMIC_ACQUIRE) &&
                     (cc->requests_per_conn_max == 0 || u->requests < cc->requests_per_conn_max) &&
                     pool->idle_count < cc->idle_max;
        x->u = NULL;
        u->d = NULL;
        if (reuse) {
            u->idle = true;
            u->idle_since_ms = now_ms(p);
            keel_list_insert_head(&pool->idle, &u->link);
            __atomic_add_fetch(&pool->idle_count, 1, __ATOMIC_RELAXED);
            u_update_reading(u);
        } else {
            u_close(u);
        }
    }
    bool again =
        x->client_keepalive && x->req_done && !x->resp_close_out && !p->stopping && !d->eof;
    x_release(d);
    if (!again) {
        d_finish(d);
        return;
    }
    d->state = KEEL__D_HEAD;
    d->active_ms = now_ms(p);
    d->scan = 0;
    if (keel_buf_unread(&d->in) == 0 && d->in.cap > KEEL_PROXY_IDLE_BUFFER_BYTES_MAX)
        keel_buf_free(&d->in); /* keeps its limit; the next read allocates again */
    if (keel_buf_unread(&d->out) == 0 && d->out.cap > KEEL_PROXY_IDLE_BUFFER_BYTES_MAX)
        keel_buf_free(&d->out); /* unsent output lives in write requests, not here */
    d_arm(d);
    /* pipelined bytes: parse them now, unless we are inside d_process already (it loops) */
    if (!d->processing)
        d_process(d);
}

/* ---- housekeeping ------------------------------------------------------------------------ */

void keel__proxy_sweep_pool(keel_proxy_t *p, keel_ms_t now)
{
    keel__pgen_t *gen = p->gen; /* a retired cluster pools nothing */
    for (uint32_t c = 0; c < gen->cfg->clusters_count; c++) {
        keel__pcluster_t *cl = gen->clusters[c];
        if (p->wid != 0) /* hosts that left the registry (worker 0 closes its own at once) */
            keel__proxy_close_idle(p, cl, true);
        uint32_t n = __atomic_load_n(&cl->hosts_n, __ATOMIC_ACQUIRE);
        for (uint32_t i = 0; i < n; i++) {
            keel__ppool_t *pool = keel__pool(p, &cl->hosts[i]);
            keel_list_t *it;
            /* the oldest idle connections are at the tail */
            while ((it = keel_list_last(&pool->idle)) != NULL) {
                keel__uconn_t *u = KEEL_LIST_ENTRY(it, keel__uconn_t, link);
                if (now - u->idle_since_ms < cl->cfg->idle_timeout_ms)
                    break;
                u_close(u);
            }
        }
    }
}

void keel__proxy_close_idle(keel_proxy_t *p, keel__pcluster_t *cl, bool gone_only)
{
    keel_list_t *it;
    uint32_t n = cl->hosts != NULL ? __atomic_load_n(&cl->hosts_n, __ATOMIC_ACQUIRE) : 0;
    for (uint32_t i = 0; i < n; i++) {
        keel__phost_t *h = &cl->hosts[i];
        while ((!gone_only || __atomic_load_n(&h->gone, __ATOMIC_ACQUIRE)) &&
               (it = keel_list_first(&keel__pool(p, h)->idle)))
            u_close(KEEL_LIST_ENTRY(it, keel__uconn_t, link));
    }
}

void keel__proxy_close_all(keel_proxy_t *p)
{
    keel_list_t *it;
    while ((it = keel_list_first(&p->dconns)) != NULL)
        d_close(KEEL_LIST_ENTRY(it, keel__dconn_t, link));
}
