/* proxy_tunnel.c - keel proxy's data path for HTTP/1.1 upgrades (WebSocket): the request's
 * upgrade fields, the 101, and then the connection pair as a raw two-way byte tunnel. */
#include "proxy/proxy_conn_int.h"
#include "proxy/h1.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * An upgrade (RFC 9110 §7.8) is opted into per route (`upgrades: [websocket]`, Envoy's
 * upgrade_configs): a GET carrying `Connection: upgrade` and `Upgrade: <one listed protocol>`
 * goes upstream with those two fields (every other hop-by-hop field is still dropped). If the
 * upstream answers 101 with an Upgrade naming the same protocol, the client gets the 101 and the
 * exchange becomes a tunnel: bytes move from one side's input buffer into the other side's
 * output buffer as they come, undecoded, until both directions have ended.
 *
 * Backpressure, per direction: at most limits.buffer_bytes_max unsent bytes (the output buffer
 * plus libuv's write queue) are queued toward a side, and the other side is not read while they
 * are there or while KEEL_PROXY_READ_BYTES of its input wait; the write callback resumes it. So
 * a tunnel holds at most about buffer_bytes_max + 2 * KEEL_PROXY_READ_BYTES per direction,
 * whatever passes through it.
 *
 * Half-close: a FIN read from one side is passed on, once that side's bytes are all written,
 * as shutdown(SHUT_WR) toward the other (after a TLS close_notify on a TLS side); the other
 * direction goes on. The tunnel ends when both shutdowns completed, on a read or write error, a
 * reset, or when no byte moved either way for the route's upgrade_idle_timeout_ms; the
 * connections are then closed (the upstream one is never pooled).
 *
 * TLS on either side needs nothing here: reads arrive decrypted through the connections' read
 * callbacks and keel__conn_flush encrypts.
 */

/* ---- the request ------------------------------------------------------------------------- */

/* The protocol name of one `protocol-name ["/" protocol-version]` (RFC 9110 §7.8) in s[0..n):
 * its length, or 0 when s is not exactly one such protocol. */
static size_t protocol_name_len(const char *s, size_t n)
{
    size_t name = n, slashes = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/') {
            if (slashes++ > 0 || i == 0 || i + 1 == n)
                return 0;
            name = i;
            continue;
        }
        if (!keel_h1_is_tchar(c))
            return 0; /* not a tchar: a list, or junk */
    }
    return name;
}

static bool name_is(const char *s, size_t n, const char *lower)
{
    if (strlen(lower) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lower[i])
            return false;
    }
    return true;
}

const char *keel__upgrade_requested(const keel_proxy_route_t *r, const char *base,
                                    const keel_h1_head_t *h)
{
    if (r->upgrades_count == 0 || h->version_minor != 1 || h->method.len != 3 ||
        memcmp(base + h->method.off, "GET", 3) != 0)
        return NULL;
    bool conn_upgrade = false;
    for (uint32_t i = 0; i < h->conn_tokens_count; i++)
        conn_upgrade |= keel_h1_span_is(base, h->conn_tokens[i], "upgrade");
    int f = keel_h1_find(base, h, "upgrade");
    if (!conn_upgrade || f < 0)
        return NULL;
    keel_h1_span_t v = h->fields[f].value;
    size_t n = protocol_name_len(base + v.off, v.len);
    for (uint32_t k = 0; n > 0 && k < r->upgrades_count; k++)
        if (name_is(base + v.off, n, r->upgrades[k]))
            return r->upgrades[k];
    return NULL;
}

int keel__upgrade_append_fields(keel_buf_t *o, const char *base, const keel_h1_head_t *h)
{
    int f = keel_h1_find(base, h, "upgrade");
    assert(f >= 0); /* keel__upgrade_requested found it */
    keel_h1_span_t v = h->fields[f].value;
    int rc = keel_buf_append_str(o, "Connection: upgrade\r\nUpgrade: ");
    rc |= keel_buf_append(o, base + v.off, v.len);
    rc |= keel_buf_append(o, "\r\n", 2);
    return rc;
}

/* ---- the 101 ----------------------------------------------------------------------------- */

/* The 101 as it goes to the client: the upstream's end-to-end fields (Sec-WebSocket-Accept),
 * Via, the route's response edits, and the upgrade fields. */
static int send_101(keel__dconn_t *d, const char *base, const keel_h1_head_t *h, keel_h1_span_t up)
{
    const keel_proxy_route_t *r = d->x.route->cfg;
    keel_buf_t *o = &d->out;
    int rc = keel_buf_append_str(o, "HTTP/1.1 101 Switching Protocols\r\n");
    for (uint32_t i = 0; i < h->fields_count; i++) {
        keel_h1_span_t nm = h->fields[i].name, v = h->fields[i].value;
        if (keel_h1_is_hop_by_hop(base, h, nm) ||
            keel__edit_lists(r->resp_remove, r->resp_remove_count, base, nm))
            continue;
        rc |= keel_buf_append(o, base + nm.off, nm.len);
        rc |= keel_buf_append(o, ": ", 2);
        rc |= keel_buf_append(o, base + v.off, v.len);
        rc |= keel_buf_append(o, "\r\n", 2);
    }
    rc |= keel_buf_append_str(o, d->p->via_line);
    for (uint32_t i = 0; i < r->resp_add_count; i++)
        rc |= keel_buf_printf(o, "%s: %s\r\n", r->resp_add[i].name, r->resp_add[i].value);
    rc |= keel_buf_append_str(o, "Connection: upgrade\r\nUpgrade: ");
    rc |= keel_buf_append(o, base + up.off, up.len);
    rc |= keel_buf_append_str(o, "\r\n\r\n");
    return rc;
}

bool keel__tunnel_open(keel__uconn_t *u, const char *base, const keel_h1_head_t *h, size_t end)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    assert(x->upgrade != NULL && x->u == u && x->h_host == NULL); /* no hedge for upgrades */
    int f = keel_h1_find(base, h, "upgrade");
    if (f < 0)
        return false;
    keel_h1_span_t up = h->fields[f].value;
    size_t n = protocol_name_len(base + up.off, up.len);
    if (n == 0 || !name_is(base + up.off, n, x->upgrade) || !x->req_done)
        return false; /* switched to something else than asked: not ours to pass on */
    x->hedge_at_ms = 0;
    x->upstream = x->host->address;
    /* the attempt succeeded; its host stays counted in flight while the tunnel lives (ended
       when the exchange is released) */
    keel__x_judge_attempt(d, 1, 101);
    if (send_101(d, base, h, up) != 0) {
        keel__d_close(d);
        return true;
    }
    keel_buf_consume(&u->in, end); /* what follows is the upstream's first tunnel bytes */
    x->resp_head = true;
    x->status = 101;
    x->tunnel = true;
    d->state = KEEL__D_TUNNEL;
    d->active_ms = x->tun_start_ms = now_ms(d->p);
    keel_counter_inc(x->route->m_upgrades[KEEL__UPGRADE_SWITCHED]);
    keel_gauge_add(d->p->m_tunnels_open, 1);
    /* the client's bytes after its request head (early data) are in d->in: they go up now */
    keel__tunnel_pump(d);
    if (!d->closing)
        keel__d_arm(d);
    return true;
}

/* ---- the tunnel -------------------------------------------------------------------------- */

/* Moves what fits of in toward `to` (its unsent bytes kept under cap). Returns the bytes moved,
 * or -1 when out of memory. */
static long move_bytes(keel_buf_t *in, uv_tcp_t *to, keel_buf_t *out, size_t cap)
{
    size_t pend = keel__conn_pending(to, out);
    size_t n = keel_buf_unread(in);
    if (n == 0 || pend >= cap)
        return 0;
    if (n > cap - pend)
        n = cap - pend;
    if (keel_buf_append(out, keel_buf_rptr(in), n) != 0)
        return -1;
    keel_buf_consume(in, n);
    return (long)n;
}

static void on_up_shut(uv_shutdown_t *req, int status)
{
    keel__uconn_t *u = req->data;
    free(req);
    if (status == UV_ECANCELED || u->closing || u->d == NULL)
        return;
    keel__dconn_t *d = u->d;
    if (status < 0 || ++d->x.tun_shut_done == 2)
        keel__d_close(d); /* both directions are done (or the shutdown failed) */
}

static void on_down_shut(uv_shutdown_t *req, int status)
{
    keel__dconn_t *d = req->data;
    free(req);
    if (status == UV_ECANCELED || d->closing)
        return;
    if (status < 0 || ++d->x.tun_shut_done == 2)
        keel__d_close(d);
}

/* shutdown(SHUT_WR) toward one side once its bytes are written (libuv waits for the write
 * queue), after a TLS close_notify. 0 or a libuv error. */
static int shut(uv_tcp_t *t, keel__tls_t *tls, void *conn, uv_shutdown_cb cb)
{
    if (tls != NULL) {
        keel__tls_close_notify(tls);
        int rc = keel__conn_write((uv_stream_t *)t, &tls->wout);
        if (rc != 0)
            return rc;
    }
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req == NULL)
        return UV_ENOMEM;
    req->data = conn;
    int rc = uv_shutdown(req, (uv_stream_t *)t, cb);
    if (rc != 0)
        free(req);
    return rc;
}

void keel__tunnel_pump(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    keel__uconn_t *u = x->u;
    assert(d->state == KEEL__D_TUNNEL && u != NULL);
    size_t cap = x->gen->cfg->limits.buffer_bytes_max;
    bool moved = false;
    /* each round takes input that is already here (no read happens inside), so it ends */
    for (;;) {
        long up = move_bytes(&d->in, &u->tcp, &u->out, cap);
        long down = move_bytes(&u->in, &d->tcp, &d->out, cap);
        if (up < 0 || down < 0 || keel__conn_flush((uv_stream_t *)&u->tcp, &u->out) != 0 ||
            keel__conn_flush((uv_stream_t *)&d->tcp, &d->out) != 0) {
            keel__d_close(d);
            return;
        }
        x->tun_up_bytes += (uint64_t)up;
        x->resp_bytes += (uint64_t)down;
        if (up == 0 && down == 0)
            break;
        moved = true;
    }
    if (moved)
        d->active_ms = now_ms(d->p);
    int rc = 0;
    if (x->tun_down_eof && !x->tun_up_shut && keel_buf_unread(&d->in) == 0) {
        x->tun_up_shut = true; /* the client's FIN, passed on */
        rc = shut(&u->tcp, u->tls, u, on_up_shut);
    }
    if (rc == 0 && x->tun_up_eof && !x->tun_down_shut && keel_buf_unread(&u->in) == 0) {
        x->tun_down_shut = d->shut = true; /* the upstream's FIN, passed on */
        rc = shut(&d->tcp, d->tls, d, on_down_shut);
    }
    if (rc != 0) {
        keel__d_close(d);
        return;
    }
    keel__d_update_reading(d);
    keel__u_update_reading(u);
}

bool keel__tunnel_reads_client(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    return !x->tun_down_eof && x->u != NULL &&
           keel__conn_pending(&x->u->tcp, &x->u->out) < x->gen->cfg->limits.buffer_bytes_max &&
           keel_buf_unread(&d->in) < KEEL_PROXY_READ_BYTES;
}

bool keel__tunnel_reads_upstream(keel__uconn_t *u)
{
    keel__dconn_t *d = u->d;
    keel__xch_t *x = &d->x;
    return !x->tun_up_eof &&
           keel__conn_pending(&d->tcp, &d->out) < x->gen->cfg->limits.buffer_bytes_max &&
           keel_buf_unread(&u->in) < KEEL_PROXY_READ_BYTES;
}

void keel__tunnel_client_eof(keel__dconn_t *d, int err)
{
    if (err != UV_EOF) { /* a reset or an error ends both directions */
        keel__d_close(d);
        return;
    }
    d->x.tun_down_eof = true;
    keel__tunnel_pump(d);
}

void keel__tunnel_upstream_eof(keel__uconn_t *u, int err)
{
    keel__dconn_t *d = u->d;
    if (err != UV_EOF) {
        keel_counter_inc(d->x.cl->m_resets);
        keel__d_close(d);
        return;
    }
    d->x.tun_up_eof = true;
    keel__tunnel_pump(d);
}

void keel__tunnel_release(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    if (x->upgrade == NULL || x->route == NULL)
        return;
    if (x->tunnel)
        keel_gauge_add(d->p->m_tunnels_open, -1);
    else
        keel_counter_inc(x->route->m_upgrades[x->upgrade_refused ? KEEL__UPGRADE_REFUSED
                                                                 : KEEL__UPGRADE_FAILED]);
}
