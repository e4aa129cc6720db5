/* proxy_conn.c - keel proxy's data path: client connections, writing, local responses and
 * completing an exchange (starting one: proxy_request.c; aggregate routes: proxy_agg.c;
 * attempts and retries: proxy_attempt.c; upstream connections and streaming: proxy_upstream.c). */
#include "proxy/proxy_conn_int.h"

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
 * replayed once its bytes went upstream. A retry avoids every host the request
 * already tried while another is available (Envoy's previous_hosts predicate).
 * A request that met a stale pooled connection (closed or reset before any
 * answer byte) goes once more on a new connection to the same host, as the same
 * attempt, when a retry after a reset could send it (keel__x_resend_stale).
 *
 * Hedges (docs/proxy.md, "Hedged requests"): a route's hedge.delay_ms after
 * the first try started without a response head, a second attempt goes to
 * another host (keel__x_hedge). The exchange then holds two attempts: its own
 * (x->u, x->host, ...) and the other (x->h_u, x->h_host, ...). Every event
 * on an upstream connection knows its attempt by the connection: the first
 * head from either wins (the two are swapped if it came from the other, and
 * the other is closed); a failure of the other just ends it; a failure of the
 * exchange's own promotes the other. Everything else on the data path sees
 * only the exchange's attempt, as before.
 */

static void d_process(keel__dconn_t *d);
static void d_finish(keel__dconn_t *d);

/* ---- writing ----------------------------------------------------------------------------- */

typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} wreq_t;

static void d_on_drained(keel__dconn_t *d);

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = KEEL_LIST_ENTRY(req, wreq_t, req);
    void *conn = req->handle->data;
    free(w);
    if (status < 0) {
        /* the read side sees the error and closing happens there, except in a tunnel, whose
         * side may no longer be read (a FIN came, or backpressure): the write ends it */
        keel__dconn_t *d = *(int *)conn == KEEL__CONN_DOWN ? conn : ((keel__uconn_t *)conn)->d;
        if (status != UV_ECANCELED && d != NULL && !d->closing && d->state == KEEL__D_TUNNEL)
            keel__d_close(d);
        return;
    }
    if (*(int *)conn == KEEL__CONN_DOWN)
        d_on_drained(conn);
    else
        keel__u_on_drained(conn);
}

/* Writes buf's unread bytes as they are: uv_try_write, the rest copied into one uv_write. 0 or a
 * libuv error. */
int keel__conn_write(uv_stream_t *s, keel_buf_t *out)
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

static keel__tls_t *conn_tls(void *conn)
{
    return *(int *)conn == KEEL__CONN_DOWN ? ((keel__dconn_t *)conn)->tls
                                           : ((keel__uconn_t *)conn)->tls;
}

/* Sends out's unread bytes (through TLS on a TLS connection). 0 or a libuv error. */
int keel__conn_flush(uv_stream_t *s, keel_buf_t *out)
{
    keel__tls_t *t = conn_tls(s->data);
    if (t == NULL)
        return keel__conn_write(s, out);
    if (keel__tls_encrypt(t, out) != 0)
        return UV_EPROTO;
    return keel__conn_write(s, &t->wout);
}

void keel__conn_alloc_tls(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    void *conn = h->data;
    keel_proxy_t *p =
        *(int *)conn == KEEL__CONN_DOWN ? ((keel__dconn_t *)conn)->p : ((keel__uconn_t *)conn)->p;
    if (p->tls_rbuf == NULL)
        p->tls_rbuf = malloc(KEEL_PROXY_READ_BYTES);
    /* out of memory: an empty buffer, which libuv reports as UV_ENOBUFS (an error) */
    *buf = uv_buf_init((char *)p->tls_rbuf, p->tls_rbuf ? KEEL_PROXY_READ_BYTES : 0);
}

size_t keel__conn_pending(uv_tcp_t *t, const keel_buf_t *out)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)t) + keel_buf_unread(out);
}

void keel__conn_alloc_into(keel_buf_t *in, uv_buf_t *buf)
{
    if (keel_buf_reserve(in, KEEL_PROXY_READ_BYTES) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: treated as an error */
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(in), (unsigned)(in->cap - in->len));
}

/* Appends "<hex>\r\n", a chunk-size line (no printf on the data path). */
void keel__append_chunk_size(keel_buf_t *o, size_t n)
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
int keel__append_length(keel_buf_t *o, uint64_t n)
{
    int rc = keel_buf_append(o, "Content-Length: ", 16);
    rc |= keel_buf_append_u64_dec(o, n);
    rc |= keel_buf_append(o, "\r\n", 2);
    return rc;
}

/* ---- exchange bookkeeping ---------------------------------------------------------------- */

int keel__status_class(int status)
{
    int c = status / 100;
    return c >= 1 && c <= 5 ? c : 0;
}

/* The current attempt's verdict: its span, breaker and outlier detector records, and status
 * class. ok < 0: the attempt was abandoned (no verdict). Called with the cluster's lock. */
static void attempt_verdict(keel__dconn_t *d, int ok, int status, bool local_failure)
{
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    keel_ms_t took_ms = now_ms(d->p) - x->try_start_ms;
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
    if (status > 0)
        keel_counter_inc(cl->m_class[keel__status_class(status)]);
}

/* Ends the current attempt: its verdict (unless keel__x_judge_attempt gave it), then the
 * balancer's and the host's in-flight counts. ok < 0: the attempt was abandoned (no verdict). */
void keel__x_end_attempt(keel__dconn_t *d, int ok, int status, bool local_failure)
{
    keel__xch_t *x = &d->x;
    if (x->host == NULL)
        return;
    if (x->traced && !x->judged)
        keel__x_record_client_span(d, ok, status);
    keel__pcluster_t *cl = x->cl;
    keel__cl_lock(cl); /* shared with the other workers */
    if (!x->judged)
        attempt_verdict(d, ok, status, local_failure);
    if (x->balance_started) {
        keel_balance_done(&cl->lb, x->host->idx);
        x->balance_started = false;
    }
    x->host->active--;
    keel__cl_unlock(cl);
    x->host = NULL;
    x->judged = false;
}

void keel__x_judge_attempt(keel__dconn_t *d, int ok, int status)
{
    keel__xch_t *x = &d->x;
    assert(x->host != NULL && !x->judged);
    if (x->traced)
        keel__x_record_client_span(d, ok, status);
    keel__cl_lock(x->cl);
    attempt_verdict(d, ok, status, false);
    keel__cl_unlock(x->cl);
    x->judged = true;
}

#define SWAP(type, a, b)                                                                           \
    do {                                                                                           \
        type t_ = (a);                                                                             \
        (a) = (b);                                                                                 \
        (b) = t_;                                                                                  \
    } while (0)

void keel__x_swap_tries(keel__xch_t *x)
{
    SWAP(keel__uconn_t *, x->u, x->h_u);
    SWAP(keel__phost_t *, x->host, x->h_host);
    SWAP(int, x->permit, x->h_permit);
    SWAP(bool, x->balance_started, x->h_balance_started);
    SWAP(keel_ms_t, x->try_start_ms, x->h_try_start_ms);
    SWAP(keel_ms_t, x->try_deadline_ms, x->h_try_deadline_ms);
    SWAP(keel_ms_t, x->connect_deadline_ms, x->h_connect_deadline_ms);
    SWAP(keel_trace_ctx_t, x->trace, x->h_trace);
    SWAP(keel_us_t, x->try_start_us, x->h_try_start_us);
    SWAP(const char *, x->try_error, x->h_try_error);
    SWAP(bool, x->is_hedge, x->h_is_hedge);
}

void keel__x_end_other(keel__dconn_t *d, int ok, int status, bool local_failure)
{
    keel__xch_t *x = &d->x;
    if (x->h_host == NULL)
        return;
    if (x->h_u != NULL) { /* no response head came from it: its connection cannot be reused */
        keel__uconn_t *u = x->h_u;
        x->h_u = NULL;
        u->d = NULL;
        keel__u_close(u);
    }
    keel__x_swap_tries(x);
    keel__x_end_attempt(d, ok, status, local_failure);
    keel__x_swap_tries(x); /* the exchange's attempt back in place; the other slot is empty */
    x->h_is_hedge = false;
    x->h_try_error = NULL;
}

#define N_FIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* One JSON line per answered request (docs/proxy.md, "Access log"). */
static void access_log(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    char trace_id[2 * KEEL_TRACE_ID_BYTES + 1] = "-";
    if (x->cl != NULL) /* forwarded: the trace the upstream saw */
        keel_trace_id_hex(&x->trace, trace_id);
    if (keel_log_get_level() > KEEL_LOG_INFO)
        return;
    keel_log_field_t f[] = {
        KF_STR("trace_id", trace_id),
        KF_STR("client", d->peer),
        KF_STR("method", x->method),
        KF_STR("target", x->target),
        KF_STR("route", x->route ? x->route->cfg->name : "-"),
        KF_STR("cluster", x->cl ? x->cl->cfg->name : "-"),
        KF_STR("upstream", x->upstream ? x->upstream : "-"),
        KF_INT("status", x->status),
        KF_INT("bytes", x->resp_bytes),
        KF_INT("attempts", x->attempts),
        KF_INT("duration_ms", now_ms(d->p) - x->start_ms),
        KF_INT("bytes_up", x->tun_up_bytes), /* a tunnel's: what the client sent through it */
    };
    keel__log(KEEL_LOG_INFO, "access", f, N_FIELDS(f) - (x->tunnel ? 0 : 1));
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
        keel__u_close(u);
    }
    keel__x_end_attempt(d, -1, 0, false);
    keel__x_end_other(d, -1, 0, false);
    if (x->retrying || x->counted) {
        keel__cl_lock(x->cl);
        x->cl->active_retries -= x->retrying ? 1 : 0;
        x->cl->active_requests -= x->counted ? 1 : 0;
        keel__cl_unlock(x->cl);
        x->retrying = x->counted = false;
    }
    keel__tunnel_release(d);
    if (x->status > 0 && d->p->gen->cfg->access_log)
        access_log(d);
    if (x->traced)
        keel__x_record_server_span(d);
    if (x->route != NULL && x->status > 0) {
        keel_counter_inc(x->route->m_class[keel__status_class(x->status)]);
        if (!x->tunnel) /* a tunnel's life is no response time */
            keel_histogram_observe(x->route->m_duration,
                                   (double)(now_ms(d->p) - x->start_ms) / 1000.0);
    }
    if (x->canary && x->status > 0) { /* the route histogram's duration; a tunnel's: to its 101 */
        keel_ms_t end = x->tunnel ? x->tun_start_ms : now_ms(d->p);
        keel__rollout_observe(x->route, now_ms(d->p), end - x->start_ms, x->status);
    }
    keel_proxy_replay_release(&x->replay);
    keel__agg_release(d); /* before the generation goes: its clusters are the parts' */
    keel__pgen_t *gen = x->gen;
    keel_buf_t head = x->up_head;
    keel_buf_reset(&head);
    memset(x, 0, sizeof(*x));
    x->up_head = head;
    x->permit = x->h_permit = -1;
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
    keel__tls_free(d->tls);
    keel_proxy_t *p = d->p;
    free(d);
    keel__proxy_handle_closed(p);
}

static void d_timer_closed(keel_timer_t *t)
{
    keel__dconn_t *d = KEEL_LIST_ENTRY(t, keel__dconn_t, timer);
    uv_close((uv_handle_t *)&d->tcp, d_handle_closed);
}

void keel__d_close(keel__dconn_t *d)
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
        keel__d_arm(d); /* linger: read and drop until EOF or the linger timer */
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
    if (keel__conn_pending(&d->tcp, &d->out) == 0)
        d_on_drained(d);
    keel__d_update_reading(d);
    keel__d_arm(d);
}

static void d_on_drained(keel__dconn_t *d)
{
    if (d->closing)
        return;
    if (d->state == KEEL__D_CLOSING) {
        d->active_ms = now_ms(d->p); /* the client is reading: progress */
        if (keel__conn_pending(&d->tcp, &d->out) == 0 && !d->shut) {
            d->shut = true;
            if (d->tls != NULL) { /* close_notify goes before the FIN (RFC 8446 §6.1) */
                keel__tls_close_notify(d->tls);
                keel__conn_write((uv_stream_t *)&d->tcp, &d->tls->wout);
            }
            uv_shutdown_t *req = malloc(sizeof(*req));
            if (req == NULL || uv_shutdown(req, (uv_stream_t *)&d->tcp, on_shutdown) != 0) {
                free(req);
                keel__d_close(d);
                return;
            }
            req->data = d;
            d->active_ms = now_ms(d->p);
        }
        return;
    }
    /* the client took some response bytes: move more */
    if (d->state == KEEL__D_TUNNEL)
        keel__tunnel_pump(d);
    else if (d->x.u != NULL)
        keel__u_pump_resp_body(d->x.u);
}

static keel_ms_t d_deadline(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    const keel_proxy_limits_t *lim = &p->gen->cfg->limits;
    keel__xch_t *x = &d->x;
    keel_ms_t t = KEEL_MS_NEVER;
    switch (d->state) {
    case KEEL__D_CLOSING: /* writing the last response, then lingering */
        if (keel__conn_pending(&d->tcp, &d->out) > 0)
            return d->active_ms + lim->client_idle_timeout_ms;
        return d->active_ms + 1000;
    case KEEL__D_TUNNEL: /* no byte either way for the route's idle timeout */
        return d->active_ms + x->route->cfg->upgrade_idle_timeout_ms;
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
            if (x->hedge_at_ms > 0)
                t = keel_ms_min(t, x->hedge_at_ms);
            if (x->h_host != NULL) /* the other attempt's own deadlines */
                t = keel_ms_min(t, x->h_u != NULL && !x->h_u->connected
                                       ? keel_ms_min(x->h_try_deadline_ms, x->h_connect_deadline_ms)
                                       : x->h_try_deadline_ms);
        }
        if (!x->req_done || x->resp_head)
            t = keel_ms_min(t, d->active_ms + keel_ms_max(lim->client_idle_timeout_ms,
                                                          lim->upstream_idle_timeout_ms));
        return t;
    }
    return t;
}

static void d_on_timer(keel_timer_t *t, void *data);

/* A TLS listener's handshake failed: counted per listener, logged at debug (a port scanner or a
 * plaintext client must not flood the log). */
static void d_tls_failed(keel__dconn_t *d, const char *why)
{
    keel_counter_t *m = d->p->gen->m_tls_failed[d->listener_1 - 1];
    if (m != NULL)
        keel_counter_inc(m);
    char reason[KEEL_PROXY_TLS_WHY_BYTES_MAX];
    if (why == NULL)
        keel__tls_why(d->tls, reason, sizeof(reason));
    keel_log_debug("proxy: TLS handshake failed", KF_STR("client", d->peer),
                   KF_STR("reason", why ? why : reason));
}

void keel__d_arm(keel__dconn_t *d)
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
            keel__d_close(d);
            return;
        }
        break;
    case KEEL__D_TUNNEL:
        if (now >= d_deadline(d)) {
            keel__d_close(d);
            return;
        }
        break;
    case KEEL__D_HEAD:
        if (d->head_start_ms > 0 && now >= d->head_start_ms + lim->header_timeout_ms) {
            if (d->tls != NULL && !d->tls->done) { /* the handshake did not finish in time */
                d_tls_failed(d, "the handshake took longer than limits.header_timeout_ms");
                keel__d_close(d);
                return;
            }
            keel__x_local(d, 408, NULL, NULL, NULL, NULL, 0);
            return;
        }
        if (d->head_start_ms == 0 && now >= d->active_ms + lim->client_idle_timeout_ms) {
            keel__d_close(d);
            return;
        }
        break;
    case KEEL__D_BUSY:
        if (x->agg != NULL)
            break;
        if (x->retry_at_ms > 0 && now >= x->retry_at_ms) {
            x->retry_at_ms = 0;
            keel__x_attempt(d);
            return;
        }
        if (!x->resp_head && x->retry_at_ms == 0 && x->h_host != NULL) {
            bool connecting = x->h_u != NULL && !x->h_u->connected;
            if (now >= x->h_try_deadline_ms || (connecting && now >= x->h_connect_deadline_ms)) {
                /* the other attempt timed out: it ends, this one goes on */
                keel_counter_inc(x->cl->m_timeouts);
                x->h_try_error = connecting ? "connect-timeout" : "upstream-timeout";
                keel__x_end_other(d, 0, 0, true);
            }
        }
        if (!x->resp_head && x->retry_at_ms == 0 && x->hedge_at_ms > 0 && now >= x->hedge_at_ms) {
            keel__x_hedge(d); /* never ends the exchange: a hedge that cannot go is dropped */
            if (d->closing || d->state != KEEL__D_BUSY)
                return;
        }
        if (!x->resp_head && x->retry_at_ms == 0) {
            bool connecting = x->u != NULL && !x->u->connected;
            if (now >= x->call.deadline_ms || now >= x->try_deadline_ms ||
                (connecting && now >= x->connect_deadline_ms)) {
                keel__x_timeout(d, connecting);
                return;
            }
        }
        if ((!x->req_done || x->resp_head) &&
            now >= d->active_ms +
                       keel_ms_max(lim->client_idle_timeout_ms, lim->upstream_idle_timeout_ms)) {
            if (!x->resp_head)
                keel__x_local(d, 408, NULL, NULL, NULL, NULL, 0);
            else
                keel__d_close(d); /* a stalled stream: nothing sensible to send */
            return;
        }
        break;
    }
    keel__d_arm(d);
}

static void d_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    keel__dconn_t *d = h->data;
    keel__conn_alloc_into(&d->in, buf);
}

static void d_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__dconn_t *d = s->data;
    if (nread == 0 || d->closing)
        return;
    if (nread < 0) {
        d->eof = true;
        if (d->state == KEEL__D_TUNNEL) {
            keel__tunnel_client_eof(d, (int)nread);
            return;
        }
        if (d->state == KEEL__D_BUSY && d->x.resp_head && d->x.req_done && nread == UV_EOF) {
            /* a half-closed client still gets its response; stop reading */
            keel__d_update_reading(d);
            return;
        }
        keel__d_close(d);
        return;
    }
    d->active_ms = now_ms(d->p);
    if (d->state == KEEL__D_CLOSING)
        return; /* lingering: input is dropped */
    keel_buf_commit(&d->in, (size_t)nread);
    d_process(d);
}

/* A TLS client's bytes: decrypted into d->in, then on as plaintext ones are. */
static void d_on_read_tls(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__dconn_t *d = s->data;
    if (nread <= 0 || d->closing) {
        d_on_read(s, nread, buf);
        return;
    }
    bool was_done = d->tls->done;
    size_t before = keel_buf_unread(&d->in);
    int rc = keel__tls_feed(d->tls, (const uint8_t *)buf->base, (size_t)nread, &d->in);
    /* handshake messages, tickets, or an alert before closing */
    if (keel__conn_write(s, &d->tls->wout) != 0 && rc == KEEL__TLS_OK)
        rc = KEEL__TLS_ERR;
    if (rc == KEEL__TLS_ERR) {
        if (!was_done)
            d_tls_failed(d, NULL);
        keel__d_close(d);
        return;
    }
    d->active_ms = now_ms(d->p);
    if (d->state == KEEL__D_CLOSING) { /* lingering: input is dropped */
        keel_buf_reset(&d->in);
    } else {
        if (!was_done && d->tls->done) {
            /* handshake done: until a request's first byte, the keep-alive idle rule applies */
            d->head_start_ms = 0;
            keel__d_arm(d);
        }
        if (keel_buf_unread(&d->in) > before)
            d_process(d);
    }
    if (rc == KEEL__TLS_EOF && !d->closing) /* close_notify, after the bytes before it */
        d_on_read(s, UV_EOF, buf);
}

void keel__d_update_reading(keel__dconn_t *d)
{
    if (d->closing || d->eof)
        return;
    keel__xch_t *x = &d->x;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
    bool want = true;
    if (d->state == KEEL__D_TUNNEL) {
        want = keel__tunnel_reads_client(d);
    } else if (d->state == KEEL__D_BUSY) {
        if (!x->req_done)
            want = x->u != NULL && x->u->connected &&
                   keel__conn_pending(&x->u->tcp, &x->u->out) < lim->buffer_bytes_max &&
                   keel_buf_unread(&d->in) < KEEL_PROXY_READ_BYTES;
        else
            want = keel_buf_unread(&d->in) < KEEL_PROXY_PIPELINE_BYTES_MAX;
    }
    if (want && !d->reading)
        uv_read_start((uv_stream_t *)&d->tcp, d->tls ? keel__conn_alloc_tls : d_alloc,
                      d->tls ? d_on_read_tls : d_on_read);
    else if (!want && d->reading)
        uv_read_stop((uv_stream_t *)&d->tcp);
    d->reading = want;
}

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
            keel__d_arm(d);
        }
        size_t end = keel_h1_head_end(base, n, &d->scan);
        if (end == 0) {
            int st = keel_h1_request_overflow(base, n, &p->gen->req_lim);
            if (st != 0) {
                keel_counter_inc(p->m_bad_requests);
                keel__x_local(d, st, NULL, NULL, NULL, NULL, 0);
            }
            break;
        }
        keel_h1_head_t *h = &p->req_head;
        int st = keel_h1_parse_request(base, end, &p->gen->req_lim, h);
        d->scan = 0;
        d->head_start_ms = 0;
        if (st != 0) {
            keel_counter_inc(p->m_bad_requests);
            keel__x_local(d, st, NULL, NULL, NULL, NULL, 0);
            break;
        }
        d->state = KEEL__D_BUSY;
        keel__x_begin(d, base, h); /* consumes the head from d->in */
    }
    d->processing = false;
    if (!d->closing && d->state == KEEL__D_BUSY)
        keel__d_pump_req_body(d);
    else if (!d->closing && d->state == KEEL__D_TUNNEL)
        keel__tunnel_pump(d);
    keel__d_update_reading(d);
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
    SSL_CTX *tls_ctx = p->gen->tls.listeners[d->listener_1 - 1];
    if (uv_accept(server, (uv_stream_t *)&d->tcp) != 0 ||
        all > p->gen->cfg->limits.connections_max ||
        (tls_ctx != NULL && (d->tls = keel__tls_server(tls_ctx)) == NULL)) {
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
    d->x.permit = d->x.h_permit = -1;
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
    if (d->tls != NULL) /* the handshake and the first head share limits.header_timeout_ms */
        d->head_start_ms = d->active_ms;
    keel__d_update_reading(d);
    keel__d_arm(d);
}

/* ---- local responses --------------------------------------------------------------------- */

/* Statuses after which the connection is closed: the request's end is unknown or hostile. */
static bool closes_connection(int status)
{
    return status == 400 || status == 408 || status == 413 || status == 414 || status == 431 ||
           status == 501;
}

/* Answers the client from the proxy itself: an error (JSON body) or a configured response. */
void keel__x_local(keel__dconn_t *d, int status, const char *reason, const char *extra_headers,
                   const char *content_type, const char *body, size_t body_len)
{
    keel__xch_t *x = &d->x;
    if (d->closing)
        return;
    if (x->resp_head) { /* a response is already on its way: it cannot be replaced */
        keel__d_close(d);
        return;
    }
    if (x->u != NULL) { /* the upstream exchange is abandoned: its connection cannot be reused */
        keel__uconn_t *u = x->u;
        x->u = NULL;
        u->d = NULL;
        keel__u_close(u);
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
    if (status != 204) /* RFC 9110 §8.6: never in a 204, which has no content */
        keel_buf_printf(o, "Content-Length: %zu\r\n", body_len);
    if (reason != NULL)
        keel_buf_printf(o, "X-Keel-Reason: %s\r\n", reason);
    if (extra_headers != NULL)
        keel_buf_append_str(o, extra_headers);
    if (x->cors) /* the proxy's own answers on a CORS route are readable by allowed origins */
        keel_proxy_cors_actual(x->route->cfg->cors, &x->cors_match, o);
    if (!keep)
        keel_buf_append_str(o, "Connection: close\r\n");
    keel_buf_append_str(o, "\r\n");
    if (x->method_kind != 1 && status != 204) {
        keel_buf_append(o, body, body_len);
        x->resp_bytes = body_len;
    }
    x->status = status;
    x->reason = reason;
    x->resp_head = true;
    x->resp_done = true;
    x->resp_close_out = !keep;
    if (keel__conn_flush((uv_stream_t *)&d->tcp, o) != 0) {
        keel__d_close(d);
        return;
    }
    keel__x_complete(d);
}

/* ---- completing an exchange -------------------------------------------------------------- */

/* The response has been queued for the client in full. */
void keel__x_complete(keel__dconn_t *d)
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
            keel__u_update_reading(u);
        } else {
            keel__u_close(u);
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
    if (d->tls != NULL)
        keel__tls_trim(d->tls);
    keel__d_arm(d);
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
                keel__u_close(u);
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
            keel__u_close(KEEL_LIST_ENTRY(it, keel__uconn_t, link));
    }
}

void keel__proxy_close_all(keel_proxy_t *p)
{
    keel_list_t *it;
    while ((it = keel_list_first(&p->dconns)) != NULL)
        keel__d_close(KEEL_LIST_ENTRY(it, keel__dconn_t, link));
}
