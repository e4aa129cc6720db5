/* http_client.c - HTTP/1.1 client on libuv: per host:port keep-alive pools, deadlines, clear
 * errors. */
#include "runtime/http_client.h"

#include "base/list.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK_BYTES (16u * 1024u)
#define HOST_PORT_BYTES_MAX 64
#define IDLE_BUF_BYTES_MAX (64u * 1024u)

typedef struct keel__http_conn keel__http_conn_t;

enum conn_state { C_CONNECTING, C_BUSY, C_IDLE };

struct keel__http_conn {
    uv_tcp_t tcp; /* first */
    keel__http_pool_t *pool;
    keel_list_t link;        /* pool->conns */
    keel__http_call_t *call; /* in progress, or NULL */
    uv_connect_t creq;
    uv_write_t wreq;
    keel_http_parser_t parser;
    keel_http_msg_t msg;
    keel_buf_t in;
    keel_ms_t idle_since_ms;
    int state;
    bool got_bytes; /* any response byte for the current call */
    bool reused;    /* the current call runs on a pooled connection */
    bool closing;
};

struct keel__http_pool {
    keel__http_pool_t *next;
    keel_http_client_t *cli;
    char host_port[HOST_PORT_BYTES_MAX];
    struct sockaddr_storage addr;
    keel_list_t conns; /* all connections of this pool (keel__http_conn_t.link), newest first */
    size_t conns_count, idle_count;
    keel_list_t queue; /* calls waiting for a connection (keel__http_call_t.qlink), FIFO */
    size_t queue_count;
};

struct keel__http_call {
    keel__http_call_t *all_next;  /* client's list of every call object */
    keel__http_call_t *free_next; /* free list */
    keel_list_t qlink;            /* pool->queue while queued */
    keel_http_client_t *cli;
    keel__http_pool_t *pool;
    keel__http_conn_t *conn;
    keel_timer_t timer; /* the deadline; inited once, closed at client close */
    keel_buf_t bytes;   /* the serialized request */
    keel_http_client_cb cb;
    void *data;
    int method;
    uint64_t id; /* unique per request, for cancel */
    bool active;
    bool retried;
    /* inside keel_http_client_request: a failure found there (no connection could be opened, a
     * pooled one failed to send) is reported from the loop, as the header promises; the caller
     * has not yet recorded the call it is about to get */
    bool starting;
    int deferred_err;
};

keel_http_client_config_t keel_http_client_config_default(void)
{
    keel_http_client_config_t cfg = {
        .limits = keel_http_limits_default(),
        .conns_per_host_max = 64,
        .idle_per_host_max = 16,
        .queue_per_host_max = 1024,
        .hosts_max = 256,
        .idle_timeout_ms = 30000,
    };
    cfg.limits.body_bytes_max = 16 * 1024 * 1024;
    return cfg;
}

int keel_http_client_config_validate(const keel_http_client_config_t *cfg, keel_errmsg_t *msg)
{
    int rc = keel_http_limits_validate(&cfg->limits, msg);
    if (rc != 0)
        return rc;
    if (cfg->conns_per_host_max < 1 || cfg->hosts_max < 1)
        return keel_errf(msg, KEEL_EINVAL, "conns_per_host_max and hosts_max must be >= 1");
    if (cfg->idle_per_host_max > cfg->conns_per_host_max)
        return keel_errf(msg, KEEL_EINVAL, "idle_per_host_max over conns_per_host_max");
    if (cfg->idle_timeout_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "idle_timeout_ms must be > 0");
    return 0;
}

static void on_sweep(keel_timer_t *t, void *data);

int keel_http_client_init(keel_http_client_t *cli, keel_loop_t *loop,
                          const keel_http_client_config_t *cfg, keel_errmsg_t *msg)
{
    memset(cli, 0, sizeof(*cli));
    int rc = keel_http_client_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    cli->loop = loop;
    cli->cfg = *cfg;
    keel_timer_init(loop, &cli->sweep);
    cli->handles_open = 1;
    keel_ms_t every_ms = keel_ms_max(10, keel_ms_min(1000, cfg->idle_timeout_ms / 4));
    keel_timer_start(&cli->sweep, every_ms, every_ms, on_sweep, cli);
    uv_unref((uv_handle_t *)&cli->sweep.uv); /* idle pools must not keep the loop alive */
    return 0;
}

/* ---- connections --------------------------------------------------------------------------- */

static void pump(keel__http_pool_t *pool);
static void finish(keel__http_call_t *call, int err, const keel_http_msg_t *resp);
static void maybe_done(keel_http_client_t *cli);

static void on_conn_closed(uv_handle_t *h)
{
    keel__http_conn_t *c = (keel__http_conn_t *)h;
    keel__http_pool_t *pool = c->pool;
    keel_http_client_t *cli = pool->cli;
    keel_list_remove(&c->link);
    pool->conns_count--;
    if (c->state == C_IDLE)
        pool->idle_count--;
    keel_http_msg_free(&c->msg);
    keel_buf_free(&c->in);
    free(c);
    cli->handles_open--;
    if (cli->closing)
        maybe_done(cli);
    else
        pump(pool);
}

static void conn_close(keel__http_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static bool idempotent(int method)
{
    return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_PUT ||
           method == HTTP_DELETE || method == HTTP_OPTIONS;
}

static void assign(keel__http_call_t *call, bool fresh_only);

/* The connection failed while carrying its call: retry once if that is safe, else report err. */
static void conn_fail(keel__http_conn_t *c, int err)
{
    keel__http_call_t *call = c->call;
    c->call = NULL;
    conn_close(c);
    if (call == NULL)
        return;
    call->conn = NULL;
    if (c->reused && !c->got_bytes && !call->retried && idempotent(call->method) &&
        !call->cli->closing) {
        call->retried = true;
        call->cli->stats.retries++;
        assign(call, true);
        return;
    }
    finish(call, err, NULL);
}

static void release(keel__http_conn_t *c, bool keep)
{
    keel__http_pool_t *pool = c->pool;
    c->call = NULL;
    if (!keep || pool->cli->closing || pool->idle_count >= pool->cli->cfg.idle_per_host_max) {
        conn_close(c);
        return;
    }
    c->state = C_IDLE;
    c->idle_since_ms = keel_loop_now_ms(pool->cli->loop);
    pool->idle_count++;
    pump(pool);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    keel__http_conn_t *c = (keel__http_conn_t *)h;
    if (keel_buf_reserve(&c->in, READ_CHUNK_BYTES) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

static int parse_error(const keel_http_parser_t *p)
{
    return p->error_code == KEEL_ETOOBIG ? KEEL_ETOOBIG : KEEL_EPROTO;
}

static void on_response(keel__http_conn_t *c)
{
    keel__http_call_t *call = c->call;
    bool keep = c->msg.keep_alive && keel_buf_unread(&c->in) == 0;
    call->conn = NULL;
    c->call = NULL;
    /* Pool first so the callback's next request can reuse this connection: c->msg stays intact
     * until the next response byte is parsed, which cannot happen before the callback returns,
     * and a closed connection's memory lives until its close callback. */
    release(c, keep);
    finish(call, 0, &c->msg);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel__http_conn_t *c = (keel__http_conn_t *)s;
    if (nread == 0 || c->closing)
        return;
    if (c->state != C_BUSY || c->call == NULL) { /* idle: the server closed or misbehaved */
        conn_close(c);
        return;
    }
    if (nread < 0) {
        int ev = nread == UV_EOF ? keel_http_parser_finish(&c->parser, &c->msg) : KEEL_HTTP_ERROR;
        if (ev == KEEL_HTTP_MESSAGE) {
            c->msg.keep_alive = false;
            on_response(c);
        } else {
            conn_fail(c, nread == UV_EOF ? KEEL_ECONNRESET : keel_uv_err((int)nread));
        }
        return;
    }
    c->got_bytes = true;
    keel_buf_commit(&c->in, (size_t)nread);
    size_t used = 0;
    int ev = keel_http_parser_feed(&c->parser, &c->msg, keel_buf_rptr(&c->in),
                                   keel_buf_unread(&c->in), &used);
    keel_buf_consume(&c->in, used);
    if (ev == KEEL_HTTP_ERROR) {
        int err = parse_error(&c->parser);
        c->got_bytes = true; /* never retry after a bad response */
        conn_fail(c, err);
    } else if (ev == KEEL_HTTP_MESSAGE) {
        on_response(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    keel__http_conn_t *c = req->data;
    if (status != 0 && !c->closing)
        conn_fail(c, keel_uv_err(status));
}

static void send_call(keel__http_conn_t *c, keel__http_call_t *call)
{
    c->call = call;
    call->conn = c;
    c->state = C_BUSY;
    c->got_bytes = false;
    keel_buf_reset(&c->in);
    keel_http_parser_init(&c->parser, KEEL_HTTP_RESPONSE, &call->cli->cfg.limits);
    keel_http_parser_expect_no_body(&c->parser, call->method == HTTP_HEAD);
    uv_buf_t b =
        uv_buf_init((char *)keel_buf_rptr(&call->bytes), (unsigned)keel_buf_unread(&call->bytes));
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)b.len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        conn_fail(c, keel_uv_err(n));
        return;
    }
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    }
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0)
        conn_fail(c, keel_uv_err(rc));
}

static void on_connect(uv_connect_t *req, int status)
{
    keel__http_conn_t *c = req->data;
    if (c->closing)
        return;
    if (status != 0) {
        c->reused = false;
        conn_fail(c, keel_uv_err(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_fail(c, KEEL_EIO);
        return;
    }
    keel__http_call_t *call = c->call;
    assert(call != NULL); /* a call that ends while connecting closes its connection */
    send_call(c, call);
}

static keel__http_conn_t *conn_open(keel__http_pool_t *pool)
{
    keel_http_client_t *cli = pool->cli;
    keel__http_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->pool = pool;
    keel_list_init(&c->link);
    uv_tcp_init(&cli->loop->uv, &c->tcp);
    keel_http_msg_init(&c->msg);
    keel_buf_init(&c->in, cli->cfg.limits.headers_bytes_max + cli->cfg.limits.body_bytes_max +
                              2 * READ_CHUNK_BYTES);
    c->state = C_CONNECTING;
    keel_list_insert_head(&pool->conns, &c->link);
    pool->conns_count++;
    cli->handles_open++;
    cli->stats.connects++;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&pool->addr, on_connect);
    if (rc != 0) {
        conn_close(c);
        return NULL;
    }
    return c;
}

/* ---- calls ------------------------------------------------------------------------------- */

static void queue_remove(keel__http_call_t *call)
{
    keel__http_pool_t *pool = call->pool;
    assert(keel_list_linked(&call->qlink) && pool->queue_count > 0);
    keel_list_remove(&call->qlink);
    pool->queue_count--;
}

static void on_deferred(keel_timer_t *t, void *data)
{
    keel__http_call_t *call = data;
    finish(call, call->deferred_err, NULL);
}

static void finish(keel__http_call_t *call, int err, const keel_http_msg_t *resp)
{
    keel_http_client_t *cli = call->cli;
    assert(call->active);
    if (call->starting) { /* the callback runs from the loop: the call stays active until then */
        assert(resp == NULL && call->conn == NULL && !keel_list_linked(&call->qlink));
        call->deferred_err = err;
        keel_timer_start(&call->timer, 0, 0, on_deferred, call);
        return;
    }
    keel_timer_stop(&call->timer);
    if (keel_list_linked(&call->qlink))
        queue_remove(call);
    call->active = false;
    call->conn = NULL;
    if (err != 0)
        cli->stats.failures++;
    keel_http_client_cb cb = call->cb;
    void *data = call->data;
    call->free_next = cli->free_calls;
    cli->free_calls = call;
    cb(err, resp, data);
}

static void on_deadline(keel_timer_t *t, void *data)
{
    keel__http_call_t *call = data;
    keel__http_conn_t *c = call->conn;
    if (c != NULL) {
        /* Closed even while connecting: a late response must not meet the next request, and a
         * host that does not answer SYNs must not collect half-open connections. */
        c->call = NULL;
        call->conn = NULL;
        conn_close(c);
    }
    finish(call, KEEL_ETIMEDOUT, NULL);
}

/* Picks a connection for call: pooled (unless fresh_only), new, or the queue. */
static void assign(keel__http_call_t *call, bool fresh_only)
{
    keel__http_pool_t *pool = call->pool;
    if (!fresh_only) {
        keel_list_t *it;
        KEEL_LIST_FOREACH(it, &pool->conns)
        {
            keel__http_conn_t *c = KEEL_LIST_ENTRY(it, keel__http_conn_t, link);
            if (c->state == C_IDLE && !c->closing) {
                pool->idle_count--;
                c->reused = true;
                pool->cli->stats.reuses++;
                send_call(c, call);
                return;
            }
        }
    }
    if (pool->conns_count < pool->cli->cfg.conns_per_host_max) {
        keel__http_conn_t *c = conn_open(pool);
        if (c == NULL) {
            finish(call, KEEL_ENOMEM, NULL);
            return;
        }
        c->reused = false;
        c->call = call;
        call->conn = c;
        return;
    }
    keel_list_insert_tail(&pool->queue, &call->qlink);
    pool->queue_count++;
}

/* Moves queued calls onto connections that became available. */
static void pump(keel__http_pool_t *pool)
{
    while (!keel_list_empty(&pool->queue) && !pool->cli->closing &&
           (pool->idle_count > 0 || pool->conns_count < pool->cli->cfg.conns_per_host_max)) {
        keel__http_call_t *call =
            KEEL_LIST_ENTRY(keel_list_first(&pool->queue), keel__http_call_t, qlink);
        queue_remove(call);
        assign(call, false);
    }
}

static keel__http_pool_t *pool_get(keel_http_client_t *cli, const char *host_port, int *err)
{
    for (keel__http_pool_t *p = cli->pools; p != NULL; p = p->next)
        if (strcmp(p->host_port, host_port) == 0)
            return p;
    if (strlen(host_port) >= HOST_PORT_BYTES_MAX) {
        *err = KEEL_EINVAL;
        return NULL;
    }
    if (cli->pools_count >= cli->cfg.hosts_max) {
        *err = KEEL_EFULL;
        return NULL;
    }
    keel__http_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        *err = KEEL_ENOMEM;
        return NULL;
    }
    *err = keel_tcp_parse_addr(host_port, &p->addr, NULL);
    if (*err != 0) {
        free(p);
        return NULL;
    }
    strcpy(p->host_port, host_port);
    p->cli = cli;
    keel_list_init(&p->conns);
    keel_list_init(&p->queue);
    p->next = cli->pools;
    cli->pools = p;
    cli->pools_count++;
    return p;
}

static keel__http_call_t *call_get(keel_http_client_t *cli)
{
    keel__http_call_t *call = cli->free_calls;
    if (call != NULL) {
        cli->free_calls = call->free_next;
        return call;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    keel_timer_init(cli->loop, &call->timer);
    keel_buf_init(&call->bytes, 0);
    keel_list_init(&call->qlink);
    call->cli = cli;
    call->all_next = cli->calls;
    cli->calls = call;
    cli->handles_open++;
    return call;
}

int keel_http_client_request(keel_http_client_t *cli, const keel_http_client_request_t *req,
                             keel_http_client_cb cb, void *data, uint64_t *call_id)
{
    assert(cb != NULL && req->timeout_ms > 0);
    if (cli->closing)
        return KEEL_ECLOSED;
    int err = 0;
    keel__http_pool_t *pool = pool_get(cli, req->host_port, &err);
    if (pool == NULL)
        return err;
    if (pool->queue_count >= cli->cfg.queue_per_host_max && pool->idle_count == 0 &&
        pool->conns_count >= cli->cfg.conns_per_host_max)
        return KEEL_EBUSY;
    keel__http_call_t *call = call_get(cli);
    if (call == NULL)
        return KEEL_ENOMEM;
    keel_buf_reset(&call->bytes);
    int rc = keel_http_write_request(&call->bytes, req->method, req->host_port, req->target,
                                     req->headers, req->headers_count, req->body, req->body_len, 0);
    if (rc != 0) {
        call->free_next = cli->free_calls;
        cli->free_calls = call;
        return rc;
    }
    call->pool = pool;
    call->conn = NULL;
    call->cb = cb;
    call->data = data;
    call->method = req->method;
    call->active = true;
    call->retried = false;
    assert(!keel_list_linked(&call->qlink));
    call->id = ++cli->next_call_id;
    if (call_id != NULL)
        *call_id = call->id;
    cli->stats.requests++;
    keel_timer_start(&call->timer, req->timeout_ms, 0, on_deadline, call);
    call->starting = true;
    assign(call, false);
    call->starting = false;
    return 0;
}

int keel_http_client_cancel(keel_http_client_t *cli, uint64_t call_id)
{
    for (keel__http_call_t *call = cli->calls; call != NULL; call = call->all_next) {
        if (!call->active || call->id != call_id)
            continue;
        keel__http_conn_t *c = call->conn;
        if (c != NULL) { /* mid-exchange: the connection cannot carry another request */
            c->call = NULL;
            call->conn = NULL;
            conn_close(c);
        }
        finish(call, KEEL_ECANCELED, NULL);
        return 0;
    }
    return KEEL_ENOTFOUND;
}

/* ---- idle sweep and close ---------------------------------------------------------------- */

static void on_sweep(keel_timer_t *t, void *data)
{
    keel_http_client_t *cli = data;
    keel_ms_t now = keel_loop_now_ms(cli->loop);
    for (keel__http_pool_t *p = cli->pools; p != NULL; p = p->next) {
        keel_list_t *it, *tmp;
        KEEL_LIST_FOREACH_SAFE(it, tmp, &p->conns)
        {
            keel__http_conn_t *c = KEEL_LIST_ENTRY(it, keel__http_conn_t, link);
            if (c->state != C_IDLE)
                continue;
            if (now - c->idle_since_ms >= cli->cfg.idle_timeout_ms) {
                conn_close(c);
                continue;
            }
            /* A pooled connection keeps a few KiB, not its largest response. */
            if (c->in.cap > IDLE_BUF_BYTES_MAX && keel_buf_unread(&c->in) == 0)
                keel_buf_free(&c->in);
            if (c->msg.body_buf.cap > IDLE_BUF_BYTES_MAX) {
                keel_buf_free(&c->msg.body_buf);
                c->msg.body = (const uint8_t *)"";
                c->msg.body_len = 0;
            }
        }
    }
}

size_t keel_http_client_conns(const keel_http_client_t *cli, const char *host_port)
{
    for (keel__http_pool_t *p = cli->pools; p != NULL; p = p->next)
        if (strcmp(p->host_port, host_port) == 0)
            return p->conns_count;
    return 0;
}

static void on_handle_closed(keel_timer_t *t)
{
    keel_http_client_t *cli = t->data;
    cli->handles_open--;
    maybe_done(cli);
}

static void maybe_done(keel_http_client_t *cli)
{
    if (cli->handles_open > 0)
        return;
    while (cli->pools) {
        keel__http_pool_t *p = cli->pools;
        cli->pools = p->next;
        free(p);
    }
    while (cli->calls) {
        keel__http_call_t *c = cli->calls;
        cli->calls = c->all_next;
        keel_buf_free(&c->bytes);
        free(c);
    }
    cli->free_calls = NULL;
    if (cli->done)
        cli->done(cli, cli->done_data);
}

void keel_http_client_close(keel_http_client_t *cli,
                            void (*done)(keel_http_client_t *cli, void *data), void *data)
{
    if (cli->closing)
        return;
    cli->closing = true;
    cli->done = done;
    cli->done_data = data;
    for (keel__http_call_t *call = cli->calls; call != NULL; call = call->all_next) {
        if (call->active) {
            if (call->conn)
                call->conn->call = NULL;
            finish(call, KEEL_ECANCELED, NULL);
        }
    }
    for (keel__http_pool_t *p = cli->pools; p != NULL; p = p->next) {
        keel_list_t *it, *tmp;
        KEEL_LIST_FOREACH_SAFE(it, tmp, &p->conns)
        conn_close(KEEL_LIST_ENTRY(it, keel__http_conn_t, link));
    }
    for (keel__http_call_t *call = cli->calls; call != NULL; call = call->all_next) {
        call->timer.data = cli;
        keel_timer_close(&call->timer, on_handle_closed);
    }
    cli->sweep.data = cli;
    keel_timer_close(&cli->sweep, on_handle_closed);
}
