/* fake.c - test_tx_saga's fake keel server: the real KV state machine behind a RESP listener
 * that can lose replies (fake.h). */
#include "fake.h"

#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fake's own checks: ktest.h's state is per file, so a failure here aborts the test. */
#define FAKE_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fake keel: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void conn_closed(uv_handle_t *h)
{
    fconn_t *c = h->data;
    keel_buf_free(&c->in);
    keel_resp_parser_free(&c->parser);
}

static void conn_drop(fconn_t *c)
{
    if (!c->open)
        return;
    c->open = false;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

typedef struct wr {
    uv_write_t req;
    char data[];
} wr_t;

static void written(uv_write_t *req, int status)
{
    free(req);
}

static void conn_send(fconn_t *c, const void *p, size_t n)
{
    wr_t *w = malloc(sizeof(*w) + n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, written) != 0)
        free(w);
}

static bool arg_is(const keel_resp_arg_t *a, const char *s)
{
    return a->len == strlen(s) && strncasecmp((const char *)a->ptr, s, a->len) == 0;
}

static void conn_process(fconn_t *c);

static void hold_fire(keel_timer_t *t, void *data)
{
    fconn_t *c = data;
    c->paused = false;
    if (c->open)
        conn_send(c, c->held, c->held_len);
    free(c->held);
    c->held = NULL;
    conn_process(c);
}

/* Runs one command on the state; false if the connection was dropped. */
static bool execute(fconn_t *c, const keel_resp_cmd_t *cmd)
{
    fake_t *f = c->f;
    const uint8_t *argv[512]; /* the retention sweep's page: 2 x 200 ids and the TXN's own */
    size_t lens[512];
    FAKE_CHECK(cmd->argc <= 512);
    for (size_t i = 0; i < cmd->argc; i++) {
        argv[i] = cmd->argv[i].ptr;
        lens[i] = cmd->argv[i].len;
    }
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    int argc = (int)cmd->argc;
    uint64_t now = (uint64_t)keel_clock_unix_ms();
    unsigned flags = keel_kv_command_flags(argv[0], lens[0]);
    bool xadd = false; /* a fenced XADD, alone or in a transaction fenced or run by LOCKRUN */
    bool wraps =
        argc > 4 && (arg_is(&cmd->argv[0], "KEEL.FENCED") || arg_is(&cmd->argv[0], "KEEL.LOCKRUN"));
    for (int i = 3; wraps && i < argc; i++)
        xadd = xadd || arg_is(&cmd->argv[i], "XADD");
    if (keel_kv_check(argc, argv, lens, &reply) != 0) {
        /* the error reply is in `reply` */
    } else if (flags & KEEL_KV_WRITE) {
        keel_buf_t entry;
        keel_buf_init(&entry, 0);
        FAKE_CHECK((keel_kv_entry_encode(&entry, now, argc, argv, lens)) == 0);
        FAKE_CHECK((keel_kv_apply(&f->kv, ++f->index, keel_buf_rptr(&entry),
                                  keel_buf_unread(&entry), &reply)) == 0);
        keel_buf_free(&entry);
    } else {
        FAKE_CHECK((keel_kv_read_at(&f->kv, now, argc, argv, lens, &reply)) == 0);
    }
    if (xadd && keel_buf_unread(&reply) > 0 && keel_buf_rptr(&reply)[0] == '-' &&
        memcmp(keel_buf_rptr(&reply), "-FENCED", 7) == 0)
        f->fenced_refusals++;
    if (xadd && ++f->xadds == f->lose_xadd) {
        keel_buf_free(&reply);
        conn_drop(c); /* applied, and the reply is lost */
        return false;
    }
    bool lock =
        argc >= 1 && (arg_is(&cmd->argv[0], "KEEL.LOCK") || arg_is(&cmd->argv[0], "KEEL.LOCKRUN"));
    if (lock && ++f->locks == f->unknown_lock) {
        static const char unknown[] = "-UNKNOWN the write may or may not have been applied\r\n";
        conn_send(c, unknown, sizeof(unknown) - 1);
    } else if (argc >= 1 && arg_is(&cmd->argv[0], "KEEL.TXN") && ++f->all_txns == f->unknown_txn) {
        static const char unknown[] = "-UNKNOWN the write may or may not have been applied\r\n";
        conn_send(c, unknown, sizeof(unknown) - 1);
    } else if (f->txn_hold_ms > 0 && argc >= 1 && arg_is(&cmd->argv[0], "KEEL.TXN") &&
               (++f->txns == f->txn_hold_nth || f->txn_hold_nth == 0)) {
        c->held_len = keel_buf_unread(&reply);
        c->held = malloc(c->held_len);
        memcpy(c->held, keel_buf_rptr(&reply), c->held_len);
        if (!c->hold_init) {
            keel_timer_init(f->loop, &c->hold);
            c->hold_init = true;
        }
        c->paused = true;
        keel_timer_start(&c->hold, f->txn_hold_ms, 0, hold_fire, c);
    } else if (xadd && f->xadds == f->unknown_xadd) {
        static const char unknown[] = "-UNKNOWN the write may or may not have been applied\r\n";
        conn_send(c, unknown, sizeof(unknown) - 1);
    } else {
        conn_send(c, keel_buf_rptr(&reply), keel_buf_unread(&reply));
    }
    keel_buf_free(&reply);
    return true;
}

static void conn_process(fconn_t *c)
{
    while (c->open && !c->paused) {
        keel_resp_cmd_t cmd;
        size_t used = 0;
        int rc = keel_resp_parse_request(&c->parser, keel_buf_rptr(&c->in), keel_buf_unread(&c->in),
                                         &cmd, &used, NULL);
        if (rc != 0) {
            keel_buf_consume(&c->in, used);
            return;
        }
        bool go_on = execute(c, &cmd);
        if (!go_on)
            return;
        keel_buf_consume(&c->in, used);
    }
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    fconn_t *c = h->data;
    keel_buf_reserve(&c->in, 65536);
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fconn_t *c = s->data;
    if (n < 0) {
        conn_drop(c);
        return;
    }
    keel_buf_commit(&c->in, (size_t)n);
    conn_process(c);
}

static void on_accept(uv_stream_t *srv, int status)
{
    fake_t *f = srv->data;
    FAKE_CHECK(f->accepted < CONNS_MAX);
    fconn_t *c = &f->conns[f->accepted++];
    memset(c, 0, sizeof(*c));
    c->f = f;
    keel_buf_init(&c->in, 0);
    keel_resp_parser_init(&c->parser, NULL);
    uv_tcp_init(&f->loop->uv, &c->tcp);
    c->tcp.data = c;
    c->open = true;
    uv_accept(srv, (uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

void fake_start(fake_t *f, keel_loop_t *loop)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    keel_kv_config_t kc = keel_kv_config_default();
    FAKE_CHECK((keel_kv_init(&f->kv, &kc)) == 0);
    FAKE_CHECK((keel_tcp_listen(loop, &f->listener, "127.0.0.1:0", 16, on_accept, NULL)) == 0);
    f->listener.data = f;
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", keel_tcp_local_port(&f->listener));
}

void fake_stop(fake_t *f)
{
    for (int i = 0; i < f->accepted; i++) {
        if (f->conns[i].hold_init) {
            keel_timer_close(&f->conns[i].hold, NULL);
            f->conns[i].hold_init = false;
        }
        conn_drop(&f->conns[i]);
    }
    uv_close((uv_handle_t *)&f->listener, NULL);
}

/* A read on the fake's state, for checks: the reply's integer, or -1. */
long long fake_int(fake_t *f, int argc, const char *const *args)
{
    const uint8_t *argv[8];
    size_t lens[8];
    for (int i = 0; i < argc; i++) {
        argv[i] = (const uint8_t *)args[i];
        lens[i] = strlen(args[i]);
    }
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    FAKE_CHECK(
        (keel_kv_read_at(&f->kv, (uint64_t)keel_clock_unix_ms(), argc, argv, lens, &reply)) == 0);
    long long v = -1;
    if (keel_buf_unread(&reply) > 1 && keel_buf_rptr(&reply)[0] == ':')
        v = atoll((const char *)keel_buf_rptr(&reply) + 1);
    keel_buf_free(&reply);
    return v;
}

/* Applies one command to the fake's state, as a committed entry. */
void fake_apply(fake_t *f, int argc, const char *const *args, const size_t *arg_lens)
{
    const uint8_t *argv[8];
    size_t lens[8];
    for (int i = 0; i < argc; i++) {
        argv[i] = (const uint8_t *)args[i];
        lens[i] = arg_lens ? arg_lens[i] : strlen(args[i]);
    }
    keel_buf_t e, r;
    keel_buf_init(&e, 0);
    keel_buf_init(&r, 0);
    FAKE_CHECK(
        (keel_kv_entry_encode(&e, (uint64_t)keel_clock_unix_ms(), (size_t)argc, argv, lens)) == 0);
    FAKE_CHECK((keel_kv_apply(&f->kv, ++f->index, keel_buf_rptr(&e), keel_buf_unread(&e), &r)) ==
               0);
    keel_buf_free(&e);
    keel_buf_free(&r);
}
