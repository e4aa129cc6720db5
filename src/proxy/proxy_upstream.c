/* proxy_upstream.c - keel proxy's data path toward the upstream: upstream connections, the
 * request body going up and the response streaming back (attempts and retries:
 * proxy_attempt.c). */
#include "proxy/proxy_conn_int.h"

#include "base/log.h"
#include "runtime/clock.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- request body ------------------------------------------------------------------------ */

void keel__d_pump_req_body(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    keel__uconn_t *u = x->u;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
    if (d->state == KEEL__D_TUNNEL) { /* the upstream took some bytes (keel__u_on_drained) */
        keel__tunnel_pump(d);
        return;
    }
    if (x->req_done || u == NULL || !u->connected) {
        keel__d_update_reading(d);
        return;
    }
again:
    while (!x->req_done && keel_buf_unread(&d->in) > 0 &&
           keel__conn_pending(&u->tcp, &u->out) < lim->buffer_bytes_max) {
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
            keel__x_local(d, 400, "bad-chunk", NULL, NULL, NULL, 0);
            return;
        }
        if (ev == KEEL_H1_CK_BODY && len > 0) {
            x->req_bytes += len;
            if (lim->body_bytes_max > 0 && x->req_bytes > lim->body_bytes_max) {
                x->req_done = true;
                keel__x_local(d, 413, NULL, NULL, NULL, NULL, 0);
                return;
            }
            size_t before = keel_buf_unread(&u->out);
            keel__append_chunk_size(&u->out, len);
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
    int err = keel__conn_flush((uv_stream_t *)&u->tcp, &u->out);
    if (err != 0) {
        if (!keel__x_resend_stale(d, u, err))
            keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
        return;
    }
    /* written at once (no write callback will come) with input left that reading, paused at
     * KEEL_PROXY_READ_BYTES, will not bring back: move more now */
    if (!x->req_done && keel_buf_unread(&d->in) > 0 &&
        keel__conn_pending(&u->tcp, &u->out) < lim->buffer_bytes_max)
        goto again;
    x->req_sent = x->req_done;
    keel__d_update_reading(d);
}

/* ---- upstream connections ---------------------------------------------------------------- */

static void u_on_connect(uv_connect_t *req, int status);
static int u_tls_start(keel__uconn_t *u);
static void u_tls_failed(keel__uconn_t *u, const char *why);

keel__uconn_t *keel__u_new(keel_proxy_t *p, keel__phost_t *host)
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
        keel__u_close(u);
        return NULL;
    }
    return u;
}

static void u_handle_closed(uv_handle_t *h)
{
    keel__uconn_t *u = h->data;
    keel_proxy_t *p = u->p;
    keel__pcluster_t *cl = u->host->cl;
    keel_buf_free(&u->in);
    keel_buf_free(&u->out);
    keel__tls_free(u->tls);
    free(u);
    keel__cluster_unref(cl);
    keel__proxy_handle_closed(p);
}

void keel__u_close(keel__uconn_t *u)
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
    keel__conn_alloc_into(&u->in, buf);
}

static void u_on_eof(keel__uconn_t *u, int err);
static void u_process(keel__uconn_t *u);
static void u_on_read_tls(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void u_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__uconn_t *u = s->data;
    if (nread == 0 || u->closing)
        return;
    if (u->d == NULL) { /* idle in the pool: the server closed it, or sent bytes unasked */
        keel__u_close(u);
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

void keel__u_update_reading(keel__uconn_t *u)
{
    if (u->closing)
        return;
    bool want = true;
    if (u->d != NULL && u->d->state == KEEL__D_TUNNEL) {
        want = keel__tunnel_reads_upstream(u);
    } else if (u->d != NULL) {
        keel__dconn_t *d = u->d;
        want = !d->x.resp_done &&
               keel__conn_pending(&d->tcp, &d->out) < d->p->gen->cfg->limits.buffer_bytes_max &&
               keel_buf_unread(&u->in) < KEEL_PROXY_READ_BYTES;
    }
    if (want && !u->reading)
        uv_read_start((uv_stream_t *)&u->tcp, u->tls ? keel__conn_alloc_tls : u_alloc,
                      u->tls ? u_on_read_tls : u_on_read);
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
        keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-failed");
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    if (u->host->cl->cfg->tls.enabled) { /* connected once the handshake is done */
        if (u_tls_start(u) != 0)
            u_tls_failed(u, "cannot start the TLS handshake");
        return;
    }
    u->connected = true;
    keel__u_send(u);
    keel__d_arm(d);
}

/* ---- TLS toward the upstream ------------------------------------------------------------- */

/* The handshake failed (or the connection ended during it): counted per cluster, and retried
 * as a connect failure (the request was not sent). */
static void u_tls_failed(keel__uconn_t *u, const char *why)
{
    keel__pcluster_t *cl = u->host->cl;
    keel_counter_inc(cl->m_tls_failures);
    keel__cl_lock(cl); /* its session is no use either */
    keel__host_forget_session(u->host);
    keel__cl_unlock(cl);
    keel_ms_t now = now_ms(u->p), last = __atomic_load_n(&cl->tls_warned_ms, __ATOMIC_RELAXED);
    if (last == 0 || now - last >= KEEL_PROXY_TLS_WARN_INTERVAL_MS) {
        __atomic_store_n(&cl->tls_warned_ms, now, __ATOMIC_RELAXED);
        char reason[KEEL_PROXY_TLS_WHY_BYTES_MAX];
        if (why == NULL)
            keel__tls_why(u->tls, reason, sizeof(reason));
        keel_log_warn("proxy: TLS handshake with an upstream failed",
                      KF_STR("cluster", cl->cfg->name), KF_STR("upstream", u->host->address),
                      KF_STR("reason", why ? why : reason));
    }
    keel__x_retry_or_fail(u->d, u, KEEL_RETRY_FAIL_CONNECT, 0, 503, "upstream-tls-failed");
}

/* A session the host gave: kept for the next new connection to it, over every worker. */
static void u_tls_session(void *arg, SSL_SESSION *s)
{
    keel__uconn_t *u = arg;
    SSL_CTX *ctx = SSL_get_SSL_CTX(u->tls->ssl);

    keel__pcluster_t *cl = u->host->cl;
    SSL_SESSION_up_ref(s);
    SSL_CTX_up_ref(ctx);
    keel__cl_lock(cl);
    keel__host_forget_session(u->host);
    u->host->tls_session = s;
    u->host->tls_session_ctx = ctx;
    keel__cl_unlock(cl);
}

/* The ClientHello, from the cluster's context in force, offering the host's last session when
 * it came from that context. */
static int u_tls_start(keel__uconn_t *u)
{
    keel__pcluster_t *cl = u->host->cl;
    keel__cl_lock(cl); /* a reload may put another context in place */
    SSL_CTX *ctx = cl->tls_ctx;
    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    SSL_SESSION *sess = u->host->tls_session;
    if (sess != NULL && u->host->tls_session_ctx == ctx)
        SSL_SESSION_up_ref(sess);
    else
        sess = NULL;
    keel__cl_unlock(cl);

    char ip[64] = "";
    const struct sockaddr_storage *a = &u->host->addr;
    if (a->ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)a, ip, sizeof(ip));
    else if (a->ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)a, ip, sizeof(ip));
    u->tls = ctx ? keel__tls_client(ctx, cl->cfg->tls.server_name, ip[0] ? ip : NULL, sess,
                                    u_tls_session, u)
                 : NULL;
    SSL_SESSION_free(sess); /* the connection holds its own references */
    SSL_CTX_free(ctx);
    if (u->tls == NULL || keel__conn_write((uv_stream_t *)&u->tcp, &u->tls->wout) != 0)
        return -1;
    keel__u_update_reading(u);
    return 0;
}

static void u_on_read_tls(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__uconn_t *u = s->data;
    if (nread < 0 && !u->tls->done && u->d != NULL && !u->closing) {
        u_tls_failed(u, "the upstream closed the connection during the handshake");
        return;
    }
    if (nread <= 0 || u->closing) {
        u_on_read(s, nread, buf);
        return;
    }
    bool was_done = u->tls->done;
    size_t before = keel_buf_unread(&u->in);
    int rc = keel__tls_feed(u->tls, (const uint8_t *)buf->base, (size_t)nread, &u->in);
    if (keel__conn_write(s, &u->tls->wout) != 0 && rc == KEEL__TLS_OK)
        rc = KEEL__TLS_ERR;
    if (u->d == NULL) { /* idle in the pool: a session ticket is fine, anything else ends it */
        if (rc != KEEL__TLS_OK || keel_buf_unread(&u->in) > before)
            keel__u_close(u);
        return;
    }
    if (!was_done && rc != KEEL__TLS_OK) {
        u_tls_failed(u, rc == KEEL__TLS_EOF ? "close_notify during the handshake" : NULL);
        return;
    }
    if (rc == KEEL__TLS_ERR) { /* a bad record: as a reset */
        u_on_eof(u, UV_EPROTO);
        return;
    }
    if (!was_done && u->tls->done) {
        if (SSL_session_reused(u->tls->ssl))
            keel_counter_inc(u->host->cl->m_tls_resumed);
        u->connected = true;
        keel__dconn_t *d = u->d;
        keel__u_send(u);
        if (u->closing || u->d == NULL)
            return;
        keel__d_arm(d);
    }
    if (u->connected && keel_buf_unread(&u->in) > before) { /* as u_on_read */
        u->d->active_ms = now_ms(u->p);
        u_process(u);
    }
    if (rc == KEEL__TLS_EOF && !u->closing) { /* close_notify, after the bytes before it */
        if (u->d == NULL)
            keel__u_close(u);
        else
            u_on_eof(u, UV_EOF);
    }
}

void keel__u_send(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    u->requests++;
    u->answering = false;
    keel_buf_reset(&u->in);
    u->scan = 0;
    keel_buf_append(&u->out, keel_buf_rptr(&x->up_head), keel_buf_unread(&x->up_head));
    char tp[KEEL_TRACE_B3_BYTES_MAX];
    const keel_trace_ctx_t *tr = u == x->h_u ? &x->h_trace : &x->trace; /* this attempt's */
    keel_trace_format_traceparent(tr, tp);
    keel_buf_append(&u->out, "traceparent: ", 13);
    keel_buf_append(&u->out, tp, KEEL_TRACEPARENT_LEN);
    keel_buf_append(&u->out, "\r\n", 2);
    if (x->b3) {
        keel_trace_format_b3_single(tr, tp);
        keel_buf_append(&u->out, "b3: ", 4);
        keel_buf_append_str(&u->out, tp);
        keel_buf_append(&u->out, "\r\n", 2);
    }
    /* the time this attempt has left, so the service can give up when we will (Envoy's
     * x-envoy-expected-rq-timeout-ms); absent when the route has no timeout */
    keel_ms_t until =
        keel_ms_min(x->call.deadline_ms, u == x->h_u ? x->h_try_deadline_ms : x->try_deadline_ms);
    if (until < KEEL_MS_NEVER / 2) {
        keel_ms_t now = now_ms(d->p);
        keel_buf_append_str(&u->out, "X-Keel-Timeout-Ms: ");
        keel_buf_append_u64_dec(&u->out, (uint64_t)(until > now ? until - now : 1));
        keel_buf_append(&u->out, "\r\n", 2);
    }
    keel_buf_append(&u->out, "\r\n", 2);
    /* a retry: the body bytes the failed attempt sent, again (the rest still streams from the
     * client); keel__x_try_again allowed it only if they are all kept */
    if (x->replay.sent)
        keel_buf_append(&u->out, keel_buf_rptr(&x->replay.buf), keel_buf_unread(&x->replay.buf));
    if (x->expect_continue && !x->replay.sent) {
        /* we want the body now: say so to the client ourselves (RFC 9110 §10.1.1) */
        keel_buf_append_str(&d->out, "HTTP/1.1 100 Continue\r\n\r\n");
        x->expect_continue = false;
        if (keel__conn_flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
            keel__d_close(d);
            return;
        }
    }
    if (x->req_done)
        x->req_sent = true;
    int err = keel__conn_flush((uv_stream_t *)&u->tcp, &u->out);
    if (err != 0) { /* a pooled connection the upstream closed: EPIPE or ECONNRESET */
        if (!keel__x_resend_stale(d, u, err))
            keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
        return;
    }
    keel__u_update_reading(u);
    keel__d_pump_req_body(d);
}

void keel__u_on_drained(keel__uconn_t *u)
{
    if (u->closing || u->d == NULL)
        return;
    keel__d_pump_req_body(u->d);
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
            keel__edit_lists(r->resp_remove, r->resp_remove_count, base, nm))
            continue;
        keel_buf_append(o, base + nm.off, nm.len);
        keel_buf_append(o, ": ", 2);
        keel_buf_append(o, base + v.off, v.len);
        keel_buf_append(o, "\r\n", 2);
    }
    keel_buf_append_str(o, d->p->via_line);
    for (uint32_t i = 0; i < r->resp_add_count; i++)
        keel_buf_printf(o, "%s: %s\r\n", r->resp_add[i].name, r->resp_add[i].value);
    if (x->cors)
        keel_proxy_cors_actual(r->cors, &x->cors_match, o);
    x->resp_body = h->body;
    x->resp_remaining = h->content_length;
    keel_h1_chunked_init(&x->resp_ck);
    if (h->body == KEEL_H1_BODY_LENGTH) {
        keel__append_length(o, h->content_length);
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
    u->answering = true; /* bytes came (plaintext): no stale re-send from here on */
    if (d->state == KEEL__D_TUNNEL) {
        keel__tunnel_pump(d);
        return;
    }
    while (!x->resp_head) {
        const char *base = (const char *)keel_buf_rptr(&u->in);
        size_t n = keel_buf_unread(&u->in);
        size_t end = keel_h1_head_end(base, n, &u->scan);
        if (end == 0) {
            if (n > x->gen->resp_lim.head_bytes_max) {
                keel_counter_inc(x->cl->m_bad_responses);
                x->up_keepalive = false;
                keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_NONE, 502, 502,
                                      "upstream-headers-too-large");
            }
            return;
        }
        keel_h1_head_t *h = &p->resp_head;
        int st = keel_h1_parse_response(base, end, &x->gen->resp_lim, x->method_kind == 1, h);
        u->scan = 0;
        /* a 101 opens a tunnel on an upgrade request that asked for its protocol */
        if (st == 0 && h->status == 101 && x->upgrade != NULL && keel__tunnel_open(u, base, h, end))
            return;
        if (st != 0 || h->status == 101) {
            keel_counter_inc(x->cl->m_bad_responses);
            keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_NONE, 502, 502, "upstream-bad-response");
            return;
        }
        if (h->status < 200) { /* 1xx: interim, dropped (we answered 100-continue ourselves) */
            keel_buf_consume(&u->in, end);
            continue;
        }
        const keel_proxy_retry_t *rt = &x->route->cfg->retry;
        if (x->h_host != NULL) { /* two attempts in flight: the first head decides */
            if (u == x->h_u)
                keel__x_swap_tries(x); /* u's attempt is now the exchange's */
            if (keel_proxy_replay_ok(&x->replay) &&
                keel_proxy_retry_on(rt, KEEL_RETRY_FAIL_NONE, h->status)) {
                /* an answer a retry would discard: this attempt ends, the other goes on */
                int status = h->status;
                keel__x_swap_tries(x);
                keel__x_end_other(d, status >= 500 ? 0 : 1, status, false);
                keel__d_arm(d);
                return;
            }
            keel_counter_inc(x->cl->m_hedge_cancelled); /* the other attempt lost */
            keel__x_end_other(d, -1, 0, false);
        }
        x->hedge_at_ms = 0;
        if (x->is_hedge)
            keel_counter_inc(x->cl->m_hedge_won);
        x->upstream = x->host != NULL ? x->host->address : x->upstream;
        if (rt->attempts_max > 1 && x->upgrade == NULL && keel_proxy_replay_ok(&x->replay) &&
            keel_proxy_retry_on(rt, KEEL_RETRY_FAIL_NONE, h->status)) {
            /* a retry discards this response and its connection */
            int status = h->status;
            x->u = NULL;
            u->d = NULL;
            keel__x_end_attempt(d, status >= 500 ? 0 : 1, status, false);
            if (keel__x_try_again(d, KEEL_RETRY_FAIL_NONE, status)) {
                keel__u_close(u);
                return;
            }
            x->u = u; /* no retry: this response is the answer after all */
            u->d = d;
        }
        x->upgrade_refused = x->upgrade != NULL; /* proxied as an ordinary response */
        send_resp_head(d, base, h);
        keel_buf_consume(&u->in, end);
    }
    keel__u_pump_resp_body(u);
}

void keel__u_pump_resp_body(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    if (d == NULL)
        return;
    keel__xch_t *x = &d->x;
    const keel_proxy_limits_t *lim = &d->p->gen->cfg->limits;
again:
    while (!x->resp_done && keel_buf_unread(&u->in) > 0 &&
           keel__conn_pending(&d->tcp, &d->out) < lim->buffer_bytes_max) {
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
                keel__d_close(d);
                return;
            }
            if (ev != KEEL_H1_CK_BODY)
                len = 0;
        }
        if (len > 0) {
            x->resp_bytes += len;
            if (x->resp_chunk_out)
                keel__append_chunk_size(&d->out, len);
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
        keel__x_end_attempt(d, x->status >= 500 ? 0 : 1, x->status, false);
    if (keel__conn_flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
        keel__d_close(d);
        return;
    }
    if (x->resp_done) {
        keel__x_complete(d);
        return;
    }
    /* as for the request body: written at once, input left, reading paused */
    if (keel_buf_unread(&u->in) > 0 && keel__conn_pending(&d->tcp, &d->out) < lim->buffer_bytes_max)
        goto again;
    keel__u_update_reading(u);
}

static void u_on_eof(keel__uconn_t *u, int err)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    if (d->state == KEEL__D_TUNNEL) {
        keel__tunnel_upstream_eof(u, err);
        return;
    }
    if (x->resp_head && x->resp_body == KEEL_H1_BODY_CLOSE && err == UV_EOF) {
        x->up_keepalive = false;
        if (x->resp_chunk_out)
            keel_buf_append(&d->out, "0\r\n\r\n", 5);
        x->resp_done = true;
        if (x->host != NULL) /* before the client can see the end, as above */
            keel__x_end_attempt(d, 1, x->status, false);
        if (keel__conn_flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
            keel__d_close(d);
            return;
        }
        keel__x_complete(d);
        return;
    }
    if (x->resp_head) {
        /* closed mid-body: the client must not take a truncated body for a whole one */
        keel_counter_inc(x->cl->m_resets);
        x->try_error = "upstream-reset-mid-body";
        if (x->host != NULL)
            keel__x_end_attempt(d, 0, 0, true);
        keel__d_close(d);
        return;
    }
    if (keel__x_resend_stale(d, u, err)) /* a pooled connection the upstream had closed */
        return;
    keel_counter_inc(x->cl->m_resets);
    keel__x_retry_or_fail(d, u, KEEL_RETRY_FAIL_RESET, 0, 502, "upstream-reset");
}
