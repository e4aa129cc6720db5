/* rconn.c - one RESP client connection of the CLI's load generators, moving between nodes. */
#include "cli/rconn.h"

#include <stdio.h>
#include <string.h>

static void on_failed(keel_connector_t *cc, int err, keel_ms_t delay_ms, void *data);
static void on_connected(keel_connector_t *cc, void *data);

static int connect_node(keel_rconn_t *rc)
{
    keel_connector_config_t cfg = keel_connector_config_default();
    cfg.backoff.base_ms = 50;
    cfg.backoff.max_ms = 500;
    cfg.seed = rc->seed;
    keel_connector_callbacks_t cb = {on_connected, on_failed};
    keel_errmsg_t m;
    if (keel_connector_init(&rc->cc, rc->loop, rc->addrs[rc->node], &cfg, &cb, rc, &m) != 0) {
        fprintf(stderr, "keel bench kv: %s\n", m.text);
        return -1;
    }
    keel_connector_start(&rc->cc);
    return 0;
}

int keel_rconn_open(keel_rconn_t *rc, keel_loop_t *loop,
                    const char (*addrs)[KEEL_RCONN_ADDR_BYTES_MAX], size_t n_addrs, int node,
                    uint64_t seed, size_t read_bytes, const keel_rconn_ops_t *ops, void *data)
{
    memset(rc, 0, sizeof(*rc));
    rc->loop = loop;
    rc->addrs = addrs;
    rc->n_addrs = n_addrs;
    rc->node = node;
    rc->seed = seed;
    rc->read_bytes = read_bytes;
    rc->ops = ops;
    rc->data = data;
    keel_buf_init(&rc->out, 0);
    keel_buf_init(&rc->in, 0);
    keel_buf_init(&rc->wbuf, 0);
    keel_timer_init(loop, &rc->pause);
    return connect_node(rc);
}

int keel_rconn_connected(const keel_rconn_t *rc)
{
    return rc->connected;
}

static void on_write(uv_write_t *req, int status)
{
    keel_rconn_t *rc = req->data;
    rc->writing = 0;
    keel_buf_reset(&rc->wbuf);
    if (status == 0)
        keel_rconn_flush(rc);
}

void keel_rconn_flush(keel_rconn_t *rc)
{
    if (!rc->connected || rc->writing || keel_buf_unread(&rc->out) == 0)
        return;
    keel_buf_t t = rc->wbuf;
    rc->wbuf = rc->out;
    rc->out = t;
    uv_buf_t ub =
        uv_buf_init((char *)keel_buf_rptr(&rc->wbuf), (unsigned)keel_buf_unread(&rc->wbuf));
    rc->wreq.data = rc;
    if (uv_write(&rc->wreq, keel_connector_stream(&rc->cc), &ub, 1, on_write) == 0)
        rc->writing = 1;
}

static void reopen_now(keel_timer_t *t, void *data)
{
    keel_rconn_t *rc = data;
    if (rc->closed)
        return;
    rc->node = (rc->node + 1) % (int)rc->n_addrs;
    if (connect_node(rc) == 0)
        rc->switching = 0;
}

static void on_switch_closed(keel_connector_t *cc)
{
    keel_rconn_t *rc = cc->data;
    if (!rc->closed)
        keel_timer_start(&rc->pause, KEEL_RCONN_SWITCH_PAUSE_MS, 0, reopen_now, rc);
}

static void switch_node(keel_rconn_t *rc)
{
    if (rc->switching || rc->closed)
        return;
    rc->switching = 1;
    rc->connected = 0;
    keel_connector_close(&rc->cc, on_switch_closed);
}

void keel_rconn_fail(keel_rconn_t *rc)
{
    int was_connected = rc->connected;
    rc->ops->lost(rc);
    if (was_connected)
        switch_node(rc);
}

static void on_failed(keel_connector_t *cc, int err, keel_ms_t delay_ms, void *data)
{
    switch_node(data);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel_rconn_t *rc = ((keel_connector_t *)s->data)->data;
    if (nread < 0) {
        keel_rconn_fail(rc);
        return;
    }
    keel_buf_commit(&rc->in, (size_t)nread);
    while (rc->connected && !rc->closed) {
        keel_resp_value_t *v;
        size_t used;
        int rc2 = keel_resp_parse_reply(NULL, keel_buf_rptr(&rc->in), keel_buf_unread(&rc->in), &v,
                                        &used, NULL);
        if (rc2 == KEEL_EAGAIN)
            break;
        int bad = rc->ops->reply(rc, rc2 == 0 ? v : NULL) != 0;
        bad = bad || rc2 != 0;
        if (rc2 == 0)
            keel_resp_value_free(v);
        if (bad) { /* garbage, or a reply nobody asked for */
            keel_rconn_fail(rc);
            return;
        }
        keel_buf_consume(&rc->in, used);
    }
    if (rc->ops->drained && !rc->closed)
        rc->ops->drained(rc);
    keel_rconn_flush(rc);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    keel_rconn_t *rc = ((keel_connector_t *)h->data)->data;
    if (keel_buf_reserve(&rc->in, rc->read_bytes) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&rc->in), (unsigned)(rc->in.cap - rc->in.len));
}

static void on_connected(keel_connector_t *cc, void *data)
{
    keel_rconn_t *rc = data;
    rc->connected = 1;
    rc->writing = 0;
    keel_buf_reset(&rc->in);
    keel_buf_reset(&rc->out);
    keel_buf_reset(&rc->wbuf);
    uv_read_start(keel_connector_stream(cc), on_alloc, on_read);
    rc->ops->up(rc);
    keel_rconn_flush(rc);
}

static void closed_noop(keel_connector_t *cc) {}

void keel_rconn_close(keel_rconn_t *rc)
{
    if (rc->closed)
        return;
    rc->closed = 1;
    rc->connected = 0;
    if (!rc->switching)
        keel_connector_close(&rc->cc, closed_noop);
    keel_timer_close(&rc->pause, NULL);
}

void keel_rconn_free(keel_rconn_t *rc)
{
    keel_buf_free(&rc->out);
    keel_buf_free(&rc->in);
    keel_buf_free(&rc->wbuf);
}
