/* test_client.c - the RESP client against a fake server that drops, delays and redirects. */
#include "client/blocking.h"
#include "client/client.h"
#include "ktest.h"

#include "proto/resp.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <pthread.h>
#include <stdlib.h>

/*
 * The fake understands a few commands, answered in order per connection:
 *   PING -> +PONG            ECHO x -> $x           DELAY ms -> +OK after ms (input waits)
 *   DROP -> closes the link  MAYBE -> -UNKNOWN ...  WRITE -> +OK, or -TRYAGAIN while
 *   tryagain_left > 0, or -MOVED 0 <redirect_to> when set
 *   KEEL.WATCH p [FROM r] -> "watching" p r, then pushes "watch" r+1, r+2 and, with
 *   drop_after_pushes, closes the link
 *   KEEL.CLUSTER MEMBERS -> one member, the leader, at leader_at (when set; counted)
 */
#define FAKE_CONNS_MAX 16

typedef struct fake fake_t;
typedef struct fake_conn {
    fake_t *f;
    uv_tcp_t tcp;
    keel_buf_t in;
    keel_resp_parser_t parser;
    keel_timer_t delay;
    bool open, delayed;
} fake_conn_t;

struct fake {
    keel_loop_t *loop;
    uv_tcp_t listener;
    char addr[64];
    fake_conn_t conns[FAKE_CONNS_MAX];
    int accepted, writes, maybes, tryagain_left, drop_after_pushes;
    int64_t watch_from; /* FROM of the last KEEL.WATCH, -1 without */
    char redirect_to[64];
    char leader_at[64];
    int members_asked;
};

static void fake_send(fake_conn_t *c, const char *s, size_t n);
static void fake_process(fake_conn_t *c);

static void fake_conn_closed(uv_handle_t *h)
{
    fake_conn_t *c = h->data;
    keel_buf_free(&c->in);
    keel_resp_parser_free(&c->parser);
}

static void fake_drop(fake_conn_t *c)
{
    if (!c->open)
        return;
    c->open = false;
    keel_timer_close(&c->delay, NULL);
    uv_close((uv_handle_t *)&c->tcp, fake_conn_closed);
}

typedef struct wr {
    uv_write_t req;
    char data[];
} wr_t;

static void fake_written(uv_write_t *req, int status)
{
    free(req);
}

static void fake_send(fake_conn_t *c, const char *s, size_t n)
{
    wr_t *w = malloc(sizeof(*w) + n);
    memcpy(w->data, s, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, fake_written) != 0)
        free(w);
}

static void fake_sendf(fake_conn_t *c, const char *s)
{
    fake_send(c, s, strlen(s));
}

static void delay_done(keel_timer_t *t, void *data)
{
    fake_conn_t *c = data;
    c->delayed = false;
    fake_sendf(c, "+OK\r\n");
    fake_process(c);
}

static bool is(const keel_resp_arg_t *a, const char *s)
{
    return a->len == strlen(s) && memcmp(a->ptr, s, a->len) == 0;
}

static void fake_watch(fake_conn_t *c, const keel_resp_cmd_t *cmd)
{
    int64_t r = cmd->argc == 4 ? atoll((const char *)cmd->argv[3].ptr) : 10;
    c->f->watch_from = cmd->argc == 4 ? r : -1;
    char out[256];
    snprintf(out, sizeof(out), "*3\r\n$8\r\nwatching\r\n$1\r\np\r\n:%lld\r\n", (long long)r);
    fake_sendf(c, out);
    for (int64_t i = 1; i <= 2; i++) {
        snprintf(out, sizeof(out),
                 "*3\r\n$5\r\nwatch\r\n:%lld\r\n*1\r\n*3\r\n$3\r\nput\r\n$2\r\npk\r\n$1\r\nv\r\n",
                 (long long)(r + i));
        fake_sendf(c, out);
    }
    if (c->f->drop_after_pushes)
        fake_drop(c);
}

/* Answers one command; false when the connection stops reading (DELAY, DROP). */
static bool fake_answer(fake_conn_t *c, const keel_resp_cmd_t *cmd)
{
    fake_t *f = c->f;
    const keel_resp_arg_t *a = cmd->argv;
    char out[256];
    if (is(&a[0], "PING")) {
        fake_sendf(c, "+PONG\r\n");
    } else if (is(&a[0], "ECHO") && cmd->argc == 2) {
        snprintf(out, sizeof(out), "$%zu\r\n%.*s\r\n", a[1].len, (int)a[1].len,
                 (const char *)a[1].ptr);
        fake_sendf(c, out);
    } else if (is(&a[0], "DELAY")) {
        c->delayed = true;
        keel_timer_start(&c->delay, atoi((const char *)a[1].ptr), 0, delay_done, c);
        return false;
    } else if (is(&a[0], "DROP")) {
        fake_drop(c);
        return false;
    } else if (is(&a[0], "MAYBE")) {
        f->maybes++;
        fake_sendf(c,
                   "-UNKNOWN the leader changed; the write may or may not have been applied\r\n");
    } else if (is(&a[0], "WRITE") && f->redirect_to[0]) {
        snprintf(out, sizeof(out), "-MOVED 0 %s\r\n", f->redirect_to);
        fake_sendf(c, out);
    } else if (is(&a[0], "WRITE") && f->tryagain_left > 0) {
        f->tryagain_left--;
        fake_sendf(c, "-TRYAGAIN keel: no leader is known; retry\r\n");
    } else if (is(&a[0], "WRITE")) {
        f->writes++;
        fake_sendf(c, "+OK\r\n");
    } else if (is(&a[0], "KEEL.WATCH")) {
        fake_watch(c, cmd);
    } else if (is(&a[0], "KEEL.CLUSTER") && f->leader_at[0]) {
        f->members_asked++;
        snprintf(out, sizeof(out),
                 "*1\r\n*6\r\n$2\r\nn1\r\n:1\r\n$1\r\np\r\n$5\r\nvoter\r\n:1\r\n$%zu\r\n%s\r\n",
                 strlen(f->leader_at), f->leader_at);
        fake_sendf(c, out);
    } else {
        fake_sendf(c, "-ERR unknown\r\n");
    }
    return c->open;
}

static void fake_process(fake_conn_t *c)
{
    while (c->open && !c->delayed) {
        keel_resp_cmd_t cmd;
        size_t used;
        int rc = keel_resp_parse_request(&c->parser, keel_buf_rptr(&c->in), keel_buf_unread(&c->in),
                                         &cmd, &used, NULL);
        keel_buf_consume(&c->in, used);
        if (rc != 0)
            return;
        char copy[64] = "";
        if (cmd.argc == 2) /* DELAY's argument is read with atoi: NUL-terminate it */
            snprintf(copy, sizeof(copy), "%.*s", (int)cmd.argv[1].len,
                     (const char *)cmd.argv[1].ptr);
        keel_resp_arg_t args[4] = {0};
        for (size_t i = 0; i < cmd.argc && i < 4; i++)
            args[i] = cmd.argv[i];
        if (cmd.argc == 2)
            args[1].ptr = (const uint8_t *)copy;
        keel_resp_cmd_t c2 = {cmd.argc < 4 ? cmd.argc : 4, args};
        if (!fake_answer(c, &c2))
            return;
    }
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    fake_conn_t *c = h->data;
    keel_buf_reserve(&c->in, 4096);
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fake_conn_t *c = s->data;
    if (n < 0) {
        fake_drop(c);
        return;
    }
    keel_buf_commit(&c->in, (size_t)n);
    fake_process(c);
}

static void fake_accept(uv_stream_t *srv, int status)
{
    fake_t *f = srv->data;
    fake_conn_t *c = &f->conns[f->accepted++];
    KT_CHECK(f->accepted <= FAKE_CONNS_MAX);
    memset(c, 0, sizeof(*c));
    c->f = f;
    keel_buf_init(&c->in, 0);
    keel_resp_parser_init(&c->parser, NULL);
    keel_timer_init(f->loop, &c->delay);
    uv_tcp_init(&f->loop->uv, &c->tcp);
    c->tcp.data = c;
    c->open = true;
    uv_accept(srv, (uv_stream_t *)&c->tcp);
    uv_read_start((uv_stream_t *)&c->tcp, fake_alloc, fake_read);
}

static void fake_start(fake_t *f, keel_loop_t *loop)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->watch_from = -2;
    KT_EQ_INT(keel_tcp_listen(loop, &f->listener, "127.0.0.1:0", 16, fake_accept, NULL), 0);
    f->listener.data = f;
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", keel_tcp_local_port(&f->listener));
}

static void fake_stop(fake_t *f)
{
    for (int i = 0; i < f->accepted; i++)
        fake_drop(&f->conns[i]);
    uv_close((uv_handle_t *)&f->listener, NULL);
}

/* An address where nothing listens: a port bound and closed again. */
static void dead_addr(keel_loop_t *loop, char *out, size_t cap)
{
    uv_tcp_t t;
    KT_EQ_INT(keel_tcp_listen(loop, &t, "127.0.0.1:0", 1, fake_accept, NULL), 0);
    snprintf(out, cap, "127.0.0.1:%d", keel_tcp_local_port(&t));
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop->uv, UV_RUN_NOWAIT);
}

/* ---- the test's side ------------------------------------------------------------------------ */

#define GOT_MAX 256

typedef struct env {
    keel_loop_t loop;
    fake_t a, b;
    keel_client_t cl;
    int statuses[GOT_MAX];
    char replies[GOT_MAX][32];
    int got;
    bool closed;
    int pushes;
    int64_t push_revs[GOT_MAX];
} env_t;

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    env_t *e = ctx;
    KT_CHECK(e->got < GOT_MAX);
    e->statuses[e->got] = status;
    e->replies[e->got][0] = '\0';
    if (status == 0)
        snprintf(e->replies[e->got], 32, "%.*s", (int)v->str.len, (const char *)v->str.ptr);
    e->got++;
}

static void on_closed(keel_client_t *cl)
{
    env_t *e = (env_t *)((char *)cl - offsetof(env_t, cl));
    e->closed = true;
}

static keel_client_config_t config(env_t *e, const char *s0, const char *s1)
{
    keel_client_config_t cfg = keel_client_config_default();
    cfg.seeds[0] = s0;
    cfg.seeds[1] = s1;
    cfg.seeds_n = s1 ? 2 : 1;
    cfg.backoff.backoff_base_ms = 5;
    cfg.backoff.backoff_cap_ms = 20;
    cfg.data = e;
    return cfg;
}

static env_t *env_new(void)
{
    env_t *e = calloc(1, sizeof(*e));
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
    fake_start(&e->a, &e->loop);
    fake_start(&e->b, &e->loop);
    return e;
}

/* Runs the loop until `got` callbacks have come (or 5 s have passed). */
static void run_until(env_t *e, int got)
{
    keel_ms_t start = keel_loop_now_ms(&e->loop);
    while (e->got < got && keel_loop_now_ms(&e->loop) - start < 5000)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(e->got, got);
}

static void env_free(env_t *e)
{
    if (!e->closed)
        keel_client_close(&e->cl, on_closed);
    fake_stop(&e->a);
    fake_stop(&e->b);
    uv_run(&e->loop.uv, UV_RUN_DEFAULT);
    KT_CHECK(e->closed);
    KT_EQ_INT(keel_loop_close(&e->loop), 0); /* no handle left open */
    free(e);
}

static int cmd(env_t *e, const char *a0, const char *a1)
{
    const char *argv[] = {a0, a1};
    return keel_client_command(&e->cl, a1 ? 2 : 1, argv, NULL, on_reply, e);
}

static void pipelined_replies_arrive_in_order(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    char words[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(words[i], sizeof(words[i]), "w%d", i);
        KT_EQ_INT(cmd(e, "ECHO", words[i]), 0);
    }
    KT_EQ_INT(keel_client_pending(&e->cl), 100);
    run_until(e, 100);
    for (int i = 0; i < 100; i++) {
        KT_EQ_INT(e->statuses[i], 0);
        KT_EQ_STR(e->replies[i], words[i]);
    }
    KT_EQ_INT(e->a.accepted, 1);
    env_free(e);
}

static void a_full_queue_refuses_more_requests(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    cfg.requests_max = cfg.inflight_max = 2;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), KEEL_EFULL);
    run_until(e, 2);
    KT_EQ_INT(cmd(e, "PING", NULL), 0); /* slots come back */
    run_until(e, 3);
    env_free(e);
}

static void a_deadline_fires_and_the_late_reply_is_dropped(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    const char *argv[] = {"DELAY", "300"};
    keel_ms_t t0 = keel_loop_now_ms(&e->loop);
    KT_EQ_INT(keel_client_command_timeout(&e->cl, 2, argv, NULL, 50, on_reply, e), 0);
    KT_EQ_INT(cmd(e, "ECHO", "after"), 0); /* answered after the delayed one */
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], KEEL_ETIMEDOUT);
    keel_ms_t waited = keel_loop_now_ms(&e->loop) - t0;
    KT_CHECK(waited >= 45 && waited < 250);
    run_until(e, 2);
    KT_EQ_INT(e->statuses[1], 0);
    KT_EQ_STR(e->replies[1], "after"); /* not the +OK meant for DELAY */
    KT_EQ_INT(keel_client_stats(&e->cl)->timeouts, 1);
    env_free(e);
}

static void a_request_waiting_for_a_connection_times_out(void)
{
    env_t *e = env_new();
    char dead[64];
    dead_addr(&e->loop, dead, sizeof(dead));
    keel_client_config_t cfg = config(e, dead, NULL);
    cfg.request_timeout_ms = 80;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], KEEL_ETIMEDOUT);
    KT_CHECK(keel_client_stats(&e->cl)->connect_failures >= 2); /* it kept trying */
    env_free(e);
}

static void reconnects_with_backoff_to_the_next_seed(void)
{
    env_t *e = env_new();
    char dead[64];
    dead_addr(&e->loop, dead, sizeof(dead));
    keel_client_config_t cfg = config(e, dead, e->b.addr);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], 0);
    KT_EQ_STR(e->replies[0], "PONG");
    KT_EQ_INT(keel_client_stats(&e->cl)->connect_failures, 1);
    KT_EQ_STR(keel_client_addr(&e->cl), e->b.addr);
    env_free(e);
}

static void a_dropped_link_fails_what_was_written_and_reconnects(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, e->b.addr);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "ECHO", "x"), 0);
    run_until(e, 1);
    KT_EQ_INT(cmd(e, "DROP", NULL), 0);
    KT_EQ_INT(cmd(e, "ECHO", "y"), 0);
    run_until(e, 3);
    KT_EQ_INT(e->statuses[1], KEEL_ECONNRESET); /* unknown outcome: not resent */
    KT_EQ_INT(e->statuses[2], KEEL_ECONNRESET);
    KT_EQ_INT(cmd(e, "ECHO", "z"), 0); /* waits for the next node */
    run_until(e, 4);
    KT_EQ_INT(e->statuses[3], 0);
    KT_EQ_STR(e->replies[3], "z");
    KT_EQ_STR(keel_client_addr(&e->cl), e->b.addr);
    KT_EQ_INT(keel_client_stats(&e->cl)->losses, 1);
    env_free(e);
}

static void tryagain_is_resent_until_answered(void)
{
    env_t *e = env_new();
    e->a.tryagain_left = 3;
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "WRITE", NULL), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], 0);
    KT_EQ_STR(e->replies[0], "OK");
    KT_EQ_INT(keel_client_stats(&e->cl)->tryagain_resends, 3);
    KT_EQ_INT(e->a.writes, 1);
    env_free(e);
}

static void tryagain_stops_at_the_deadline(void)
{
    env_t *e = env_new();
    e->a.tryagain_left = 1000000;
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    cfg.request_timeout_ms = 100;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "WRITE", NULL), 0);
    run_until(e, 1);
    /* either the last -TRYAGAIN (no resend could start before the deadline) or the deadline */
    KT_CHECK(e->statuses[0] == KEEL_ETIMEDOUT ||
             (e->statuses[0] == 0 && strncmp(e->replies[0], "TRYAGAIN", 8) == 0));
    env_free(e);
}

static void a_redirect_moves_the_client_to_the_named_node(void)
{
    env_t *e = env_new();
    snprintf(e->a.redirect_to, sizeof(e->a.redirect_to), "%s", e->b.addr);
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "ECHO", "first"), 0);
    KT_EQ_INT(cmd(e, "WRITE", NULL), 0);
    KT_EQ_INT(cmd(e, "ECHO", "third"), 0);
    run_until(e, 3);
    KT_EQ_STR(e->replies[0], "first");
    KT_EQ_INT(e->statuses[1], 0);
    KT_EQ_INT(e->statuses[2], 0);
    KT_EQ_INT(e->b.writes, 1);
    KT_EQ_INT(e->a.writes, 0);
    KT_EQ_STR(keel_client_addr(&e->cl), e->b.addr);
    KT_EQ_INT(keel_client_stats(&e->cl)->redirects, 1);
    KT_EQ_INT(keel_client_stats(&e->cl)->losses, 0);
    env_free(e);
}

/* follow_leader_ms: a client on a node that is not the leader (a follower forwards, so no
 * redirect ever comes) asks who leads while commands flow and moves there, after the replies
 * in flight; none is lost or repeated. */
static void a_client_moves_to_the_leader_it_is_told_of(void)
{
    env_t *e = env_new();
    snprintf(e->a.leader_at, sizeof(e->a.leader_at), "%s", e->b.addr);
    snprintf(e->b.leader_at, sizeof(e->b.leader_at), "%s", e->b.addr);
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    cfg.follow_leader_ms = 50;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "WRITE", NULL), 0); /* the first command brings the first check */
    KT_EQ_INT(cmd(e, "ECHO", "second"), 0);
    run_until(e, 2);
    KT_EQ_INT(e->statuses[0], 0);
    KT_EQ_STR(e->replies[1], "second");
    for (int i = 0; i < 20 && strcmp(keel_client_addr(&e->cl), e->b.addr) != 0; i++) {
        keel_ms_t t0 = keel_loop_now_ms(&e->loop);
        while (keel_loop_now_ms(&e->loop) - t0 < 60)
            uv_run(&e->loop.uv, UV_RUN_ONCE);
        KT_EQ_INT(cmd(e, "WRITE", NULL), 0);
        run_until(e, 3 + i);
    }
    KT_EQ_STR(keel_client_addr(&e->cl), e->b.addr);
    KT_EQ_INT(keel_client_stats(&e->cl)->leader_moves, 1);
    KT_CHECK(e->a.members_asked >= 1);
    int writes = e->a.writes + e->b.writes;
    KT_EQ_INT(writes, e->got - 1); /* every WRITE applied once: got counts the ECHO too */
    KT_EQ_INT(keel_client_stats(&e->cl)->losses, 0);
    env_free(e);
}

static void an_unknown_outcome_is_handed_back_not_resent(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "MAYBE", NULL), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], 0);
    KT_CHECK(strncmp(e->replies[0], "UNKNOWN", 7) == 0);
    KT_EQ_INT(e->a.maybes, 1);
    env_free(e);
}

static void close_cancels_every_pending_request(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    for (int i = 0; i < 5; i++)
        KT_EQ_INT(cmd(e, "PING", NULL), 0);
    keel_client_close(&e->cl, on_closed);
    KT_EQ_INT(e->got, 5);
    for (int i = 0; i < 5; i++)
        KT_EQ_INT(e->statuses[i], KEEL_ECANCELED);
    KT_EQ_INT(cmd(e, "PING", NULL), KEEL_ECLOSED);
    env_free(e);
}

static void on_push(keel_client_t *cl, const keel_resp_value_t *v, void *data)
{
    env_t *e = data;
    if (v->type == KEEL_RESP_ARRAY && v->elems_len == 3 && v->elems[1].type == KEEL_RESP_INT)
        e->push_revs[e->pushes++] = v->elems[1].integer;
}

static void a_watch_resumes_on_the_next_node_from_the_last_revision(void)
{
    env_t *e = env_new();
    e->a.drop_after_pushes = 1;
    keel_client_config_t cfg = config(e, e->a.addr, e->b.addr);
    cfg.on_push = on_push;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(keel_client_watch(&e->cl, "p", -1), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), KEEL_EINVAL); /* a feed takes no commands */
    keel_ms_t start = keel_loop_now_ms(&e->loop);
    while (e->pushes < 4 && keel_loop_now_ms(&e->loop) - start < 5000)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(e->pushes, 4);
    KT_EQ_INT(e->a.watch_from, -1);
    KT_EQ_INT(e->b.watch_from, 12); /* the last revision node a delivered */
    KT_EQ_INT(e->push_revs[0], 11);
    KT_EQ_INT(e->push_revs[1], 12);
    KT_EQ_INT(e->push_revs[2], 13);
    KT_EQ_INT(e->push_revs[3], 14);
    KT_EQ_INT(keel_client_watch_revision(&e->cl), 14);
    env_free(e);
}

static void a_reply_past_reply_bytes_max_breaks_only_that_link(void)
{
    env_t *e = env_new();
    keel_client_config_t cfg = config(e, e->a.addr, NULL);
    cfg.reply_bytes_max = 64;
    cfg.read_bytes = 32;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    KT_EQ_INT(cmd(e, "ECHO", big), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], KEEL_ECONNRESET);
    KT_EQ_INT(cmd(e, "ECHO", "small"), 0); /* the client goes on, on a new connection */
    run_until(e, 2);
    KT_EQ_INT(e->statuses[1], 0);
    KT_EQ_STR(e->replies[1], "small");
    KT_EQ_INT(keel_client_stats(&e->cl)->losses, 1);
    env_free(e);
}

static void a_session_bound_client_fails_queued_requests_on_a_failed_connect(void)
{
    env_t *e = env_new();
    char dead[64];
    dead_addr(&e->loop, dead, sizeof(dead));
    keel_client_config_t cfg = config(e, dead, NULL);
    cfg.session_bound = true;
    KT_EQ_INT(keel_client_init(&e->cl, &e->loop, &cfg, NULL), 0);
    KT_EQ_INT(cmd(e, "PING", NULL), 0);
    run_until(e, 1);
    KT_EQ_INT(e->statuses[0], KEEL_ECONNRESET); /* not kept for a later connection */
    env_free(e);
}

/* A fake on a loop of its own, in a thread, for the blocking call. */
typedef struct fake_thread {
    keel_loop_t loop;
    fake_t f;
    uv_async_t stop;
    pthread_t th;
} fake_thread_t;

static void on_stop(uv_async_t *a)
{
    fake_thread_t *t = a->data;
    fake_stop(&t->f);
    uv_close((uv_handle_t *)a, NULL);
}

static void *fake_thread_main(void *arg)
{
    fake_thread_t *t = arg;
    uv_run(&t->loop.uv, UV_RUN_DEFAULT);
    return NULL;
}

static void the_blocking_call_returns_a_copy_of_the_reply(void)
{
    fake_thread_t *t = calloc(1, sizeof(*t));
    KT_EQ_INT(keel_loop_init(&t->loop), 0);
    fake_start(&t->f, &t->loop);
    uv_async_init(&t->loop.uv, &t->stop, on_stop);
    t->stop.data = t;
    KT_EQ_INT(pthread_create(&t->th, NULL, fake_thread_main, t), 0);
    const char *seeds[] = {t->f.addr};
    const char *argv[] = {"ECHO", "hello"};
    keel_client_reply_t r;
    keel_errmsg_t m;
    int rc = keel_client_call(seeds, 1, 2, argv, 2000, &r, &m);
    uv_async_send(&t->stop);
    pthread_join(t->th, NULL);
    KT_EQ_INT(keel_loop_close(&t->loop), 0);
    free(t);
    KT_EQ_INT(rc, 0);
    KT_EQ_INT(r.v->type, KEEL_RESP_BULK);
    KT_EQ_MEM(r.v->str.ptr, "hello", 5);
    keel_client_reply_free(&r);
}

static void the_blocking_call_returns_the_reply_or_refusal(void)
{
    env_t *e = env_new();
    char dead[64];
    dead_addr(&e->loop, dead, sizeof(dead));
    const char *seeds[] = {dead};
    const char *argv[] = {"PING"};
    keel_client_reply_t r;
    keel_errmsg_t m;
    KT_EQ_INT(keel_client_call(seeds, 1, 1, argv, 2000, &r, &m), KEEL_ECONNREFUSED);
    KT_CHECK(strstr(m.text, dead) != NULL);
    keel_resp_value_t *v;
    size_t used;
    const char *raw = "*2\r\n$1\r\na\r\n:7\r\n";
    KT_EQ_INT(keel_resp_parse_reply(NULL, (const uint8_t *)raw, strlen(raw), &v, &used, NULL), 0);
    KT_EQ_INT(keel_client_reply_copy(v, &r), 0);
    keel_resp_value_free(v);
    KT_EQ_INT(r.v->elems_len, 2);
    KT_EQ_INT(r.v->elems[1].integer, 7);
    keel_client_reply_free(&r);
    e->closed = true; /* no async client in this case */
    fake_stop(&e->a);
    fake_stop(&e->b);
    uv_run(&e->loop.uv, UV_RUN_DEFAULT);
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
    free(e);
}

int main(void)
{
    KT_RUN(pipelined_replies_arrive_in_order);
    KT_RUN(a_full_queue_refuses_more_requests);
    KT_RUN(a_deadline_fires_and_the_late_reply_is_dropped);
    KT_RUN(a_request_waiting_for_a_connection_times_out);
    KT_RUN(reconnects_with_backoff_to_the_next_seed);
    KT_RUN(a_dropped_link_fails_what_was_written_and_reconnects);
    KT_RUN(tryagain_is_resent_until_answered);
    KT_RUN(tryagain_stops_at_the_deadline);
    KT_RUN(a_redirect_moves_the_client_to_the_named_node);
    KT_RUN(a_client_moves_to_the_leader_it_is_told_of);
    KT_RUN(an_unknown_outcome_is_handed_back_not_resent);
    KT_RUN(close_cancels_every_pending_request);
    KT_RUN(a_watch_resumes_on_the_next_node_from_the_last_revision);
    KT_RUN(a_reply_past_reply_bytes_max_breaks_only_that_link);
    KT_RUN(a_session_bound_client_fails_queued_requests_on_a_failed_connect);
    KT_RUN(the_blocking_call_returns_the_reply_or_refusal);
    KT_RUN(the_blocking_call_returns_a_copy_of_the_reply);
    return kt_done();
}
