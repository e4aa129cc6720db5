/* test_tcp.c - address parsing, jittered backoff, and a connector that reconnects. */
#include "runtime/tcp.h"
#include "ktest.h"

#include <stdlib.h>

static void parses_addresses_and_rejects_bad_ones(void)
{
    struct sockaddr_storage ss;
    KT_EQ_INT(keel_tcp_parse_addr("127.0.0.1:8080", &ss, NULL), 0);
    KT_EQ_INT(ss.ss_family, AF_INET);
    KT_EQ_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    KT_EQ_INT(keel_tcp_parse_addr("[::1]:9", &ss, NULL), 0);
    KT_EQ_INT(ss.ss_family, AF_INET6);
    KT_EQ_INT(keel_tcp_parse_addr("localhost:1", &ss, NULL), 0);
    KT_EQ_INT(keel_tcp_parse_addr(":0", &ss, NULL), 0);
    keel_errmsg_t m;
    KT_EQ_INT(keel_tcp_parse_addr("127.0.0.1", &ss, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "port") != NULL);
    KT_EQ_INT(keel_tcp_parse_addr("127.0.0.1:99999", &ss, NULL), KEEL_EINVAL);
    KT_EQ_INT(keel_tcp_parse_addr("127.0.0.1:8x", &ss, NULL), KEEL_EINVAL);
    KT_EQ_INT(keel_tcp_parse_addr("example.com:80", &ss, NULL), KEEL_EINVAL);
}

static void backoff_grows_to_its_ceiling_with_jitter_in_the_upper_half(void)
{
    keel_backoff_config_t cfg = {.base_ms = 100, .max_ms = 3000};
    keel_rand_t r;
    uint64_t seed = 12345;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        keel_ms_t cap = 100LL << (attempt < 6 ? attempt : 6);
        if (cap > 3000)
            cap = 3000;
        keel_ms_t lo = INT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            keel_ms_t d = keel_backoff_delay_ms(&cfg, attempt, &r);
            KT_CHECK(d >= cap / 2 && d <= cap);
            lo = keel_ms_min(lo, d);
            hi = keel_ms_max(hi, d);
        }
        /* jitter really spreads over the range */
        KT_CHECK(lo < cap / 2 + cap / 10);
        KT_CHECK(hi > cap - cap / 10);
    }
    /* same seed, same delays */
    keel_rand_t a, b;
    keel_rand_seed(&a, 7);
    keel_rand_seed(&b, 7);
    for (unsigned i = 0; i < 100; i++)
        KT_EQ_INT(keel_backoff_delay_ms(&cfg, i % 8, &a), keel_backoff_delay_ms(&cfg, i % 8, &b));
}

/* ---- connector ---------------------------------------------------------------------------- */

typedef struct ctx {
    keel_loop_t loop;
    keel_connector_t conn;
    uv_tcp_t listener;
    bool listening;
    char addr[64];
    int connected, failed, closed, accepted;
    int last_err;
    keel_ms_t delays[64];
} ctx_t;

static void on_accept(uv_stream_t *l, int status)
{
    ctx_t *c = l->data;
    uv_tcp_t *t = malloc(sizeof(*t));
    uv_tcp_init(&c->loop.uv, t);
    uv_accept(l, (uv_stream_t *)t);
    c->accepted++;
    uv_close((uv_handle_t *)t, (uv_close_cb)free); /* drop it: the connector must notice */
}

static void start_listening(ctx_t *c)
{
    KT_EQ_INT(keel_tcp_listen(&c->loop, &c->listener, c->addr, 16, on_accept, NULL), 0);
    c->listener.data = c;
    c->listening = true;
}

static void on_eof(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    free(b->base);
    if (n < 0) {
        keel_connector_t *k = s->data;
        uv_read_stop(s);
        keel_connector_lost(k);
    }
}

static void alloc_cb(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    *b = uv_buf_init(malloc(64), 64);
}

static void on_connected(keel_connector_t *k, void *data)
{
    ctx_t *c = data;
    c->connected++;
    uv_read_start(keel_connector_stream(k), alloc_cb, on_eof);
}

static void on_failed(keel_connector_t *k, int err, keel_ms_t delay_ms, void *data)
{
    ctx_t *c = data;
    c->last_err = err;
    if (c->failed < 64)
        c->delays[c->failed] = delay_ms;
    c->failed++;
    if (c->failed == 3 && !c->listening)
        start_listening(c);
}

static void on_closed(keel_connector_t *k)
{
    ((ctx_t *)k->data)->closed++;
}

static void connector_retries_until_the_server_appears_and_reconnects_after_loss(void)
{
    ctx_t c;
    memset(&c, 0, sizeof(c));
    KT_EQ_INT(keel_loop_init(&c.loop), 0);
    /* find a free port, then leave it unbound */
    uv_tcp_t probe;
    KT_EQ_INT(keel_tcp_listen(&c.loop, &probe, "127.0.0.1:0", 1, on_accept, NULL), 0);
    snprintf(c.addr, sizeof(c.addr), "127.0.0.1:%d", keel_tcp_local_port(&probe));
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&c.loop.uv, UV_RUN_NOWAIT);

    keel_connector_config_t cfg = keel_connector_config_default();
    cfg.backoff.base_ms = 4;
    cfg.backoff.max_ms = 32;
    cfg.seed = 99;
    keel_connector_callbacks_t cb = {.connected = on_connected, .failed = on_failed};
    KT_EQ_INT(keel_connector_init(&c.conn, &c.loop, c.addr, &cfg, &cb, &c, NULL), 0);
    KT_EQ_INT(keel_connector_start(&c.conn), 0);
    /* 3 refused attempts, then the listener appears; it drops each connection it accepts,
     * so the connector keeps reconnecting. */
    for (int i = 0; i < 10000 && c.connected < 3; i++)
        uv_run(&c.loop.uv, UV_RUN_ONCE);
    KT_CHECK(c.failed >= 3);
    KT_EQ_INT(c.delays[0] >= 2 && c.delays[0] <= 4, 1);
    KT_EQ_INT(c.delays[1] >= 4 && c.delays[1] <= 8, 1);
    KT_EQ_INT(c.delays[2] >= 8 && c.delays[2] <= 16, 1);
    KT_CHECK(c.connected >= 3);
    KT_EQ_U64(c.conn.connects, (uint64_t)c.connected);
    keel_connector_close(&c.conn, on_closed);
    uv_close((uv_handle_t *)&c.listener, NULL);
    keel_loop_run(&c.loop);
    KT_EQ_INT(c.closed, 1);
    KT_EQ_INT(keel_loop_close(&c.loop), 0);
}

static void connector_config_is_validated(void)
{
    keel_connector_config_t cfg = keel_connector_config_default();
    KT_EQ_INT(keel_connector_config_validate(&cfg, NULL), 0);
    cfg.connect_timeout_ms = 0;
    KT_EQ_INT(keel_connector_config_validate(&cfg, NULL), KEEL_EINVAL);
    cfg = keel_connector_config_default();
    cfg.backoff.max_ms = 1;
    KT_EQ_INT(keel_connector_config_validate(&cfg, NULL), KEEL_EINVAL);
}

int main(void)
{
    KT_RUN(parses_addresses_and_rejects_bad_ones);
    KT_RUN(backoff_grows_to_its_ceiling_with_jitter_in_the_upper_half);
    KT_RUN(connector_retries_until_the_server_appears_and_reconnects_after_loss);
    KT_RUN(connector_config_is_validated);
    return kt_done();
}
