/* test_http_client.c - the HTTP server and pooled client against each other on one loop. */
#include "runtime/http_client.h"
#include "runtime/http_server.h"
#include "runtime/tcp.h"
#include "ktest.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- a server with a few routes ------------------------------------------------------------ */

static keel_http_req_t *held; /* request an async handler keeps */

static void hello(keel_http_req_t *req, void *data)
{
    keel_http_respond_body(req, 200, "text/plain", "hello", 5);
}

static void echo(keel_http_req_t *req, void *data)
{
    keel_http_respond(req, 201, NULL, 0, req->msg->body, req->msg->body_len);
}

static void hold(keel_http_req_t *req, void *data)
{
    held = req;
}

typedef struct env {
    keel_loop_t loop;
    keel_http_server_t srv;
    keel_http_client_t cli;
    char addr[64];
    int server_done, client_done;
} env_t;

static void server_done(keel_http_server_t *srv, void *data)
{
    ((env_t *)data)->server_done++;
}

static void client_done(keel_http_client_t *cli, void *data)
{
    ((env_t *)data)->client_done++;
}

static void env_init(env_t *e, const keel_http_client_config_t *ccfg)
{
    static const keel_http_route_t routes[] = {
        {HTTP_GET, "/hello", hello, NULL},
        {HTTP_POST, "/echo", echo, NULL},
        {HTTP_GET, "/hold", hold, NULL},
    };
    memset(e, 0, sizeof(*e));
    held = NULL;
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
    keel_http_server_config_t cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_init(&e->srv, &e->loop, &cfg, routes, 3, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&e->srv, "127.0.0.1:0", NULL), 0);
    snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", keel_http_server_port(&e->srv));
    keel_http_client_config_t def = keel_http_client_config_default();
    KT_EQ_INT(keel_http_client_init(&e->cli, &e->loop, ccfg ? ccfg : &def, NULL), 0);
}

/* Shuts both down, runs the loop dry and checks no handle leaked. */
static void env_close(env_t *e)
{
    keel_http_client_close(&e->cli, client_done, e);
    keel_http_server_shutdown(&e->srv, server_done, e);
    keel_loop_run(&e->loop);
    KT_EQ_INT(e->server_done, 1);
    KT_EQ_INT(e->client_done, 1);
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
}

typedef struct result {
    int calls;
    int err;
    int status;
    char body[256];
    int order[16];
    int order_count;
} result_t;

static void on_result(int err, const keel_http_msg_t *resp, void *data)
{
    result_t *r = data;
    r->calls++;
    r->err = err;
    if (err == 0) {
        r->status = resp->status;
        snprintf(r->body, sizeof(r->body), "%.*s", (int)resp->body_len, (const char *)resp->body);
    }
}

static void run_until(keel_loop_t *l, const int *flag, int want)
{
    for (int i = 0; i < 100000 && *flag < want; i++)
        uv_run(&l->uv, UV_RUN_ONCE);
}

static keel_http_client_request_t get(const char *addr, const char *target)
{
    keel_http_client_request_t r = {
        .method = HTTP_GET, .host_port = addr, .target = target, .timeout_ms = 2000};
    return r;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void client_gets_a_response_and_reuses_the_connection(void)
{
    env_t e;
    env_init(&e, NULL);
    for (int i = 0; i < 10; i++) {
        result_t r = {0};
        keel_http_client_request_t req = get(e.addr, "/hello");
        KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
        run_until(&e.loop, &r.calls, 1);
        KT_EQ_INT(r.calls, 1);
        KT_EQ_INT(r.err, 0);
        KT_EQ_INT(r.status, 200);
        KT_EQ_STR(r.body, "hello");
    }
    KT_EQ_U64(e.cli.stats.connects, 1);
    KT_EQ_U64(e.cli.stats.reuses, 9);
    KT_EQ_INT(keel_http_client_conns(&e.cli, e.addr), 1);
    env_close(&e);
}

static void client_posts_a_body_and_gets_404_for_unknown_paths(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    keel_http_client_request_t req = {.method = HTTP_POST,
                                      .host_port = e.addr,
                                      .target = "/echo",
                                      .body = "payload",
                                      .body_len = 7,
                                      .timeout_ms = 2000};
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.status, 201);
    KT_EQ_STR(r.body, "payload");
    result_t r2 = {0};
    req = get(e.addr, "/missing");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r2, NULL), 0);
    run_until(&e.loop, &r2.calls, 1);
    KT_EQ_INT(r2.status, 404);
    KT_CHECK(strstr(r2.body, "\"code\":404") != NULL);
    env_close(&e);
}

static void on_head(int err, const keel_http_msg_t *resp, void *data)
{
    result_t *r = data;
    r->calls++;
    r->err = err;
    if (err == 0) {
        r->status = resp->status;
        r->order[0] = (int)resp->body_len;
        r->order[1] = (int)resp->content_length;
    }
}

static void head_answers_have_no_body_and_keep_the_connection(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    keel_http_client_request_t req = get(e.addr, "/hello");
    req.method = HTTP_HEAD;
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_head, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_INT(r.status, 200);
    KT_EQ_INT(r.order[0], 0);
    KT_EQ_INT(r.order[1], 5);
    result_t r2 = {0};
    req.method = HTTP_GET;
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r2, NULL), 0);
    run_until(&e.loop, &r2.calls, 1);
    KT_EQ_STR(r2.body, "hello");
    KT_EQ_U64(e.cli.stats.connects, 1);
    env_close(&e);
}

static void on_ordered(int err, const keel_http_msg_t *resp, void *data)
{
    result_t *r = data;
    r->calls++;
    r->err |= err;
    r->order[r->order_count++] = atoi((const char *)resp->body);
}

static void queued_requests_complete_in_order_on_one_connection(void)
{
    keel_http_client_config_t cfg = keel_http_client_config_default();
    cfg.conns_per_host_max = 1;
    cfg.idle_per_host_max = 1;
    env_t e;
    env_init(&e, &cfg);
    result_t r = {0};
    char bodies[8][4];
    for (int i = 0; i < 8; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "%d", i);
        keel_http_client_request_t req = {.method = HTTP_POST,
                                          .host_port = e.addr,
                                          .target = "/echo",
                                          .body = bodies[i],
                                          .body_len = strlen(bodies[i]),
                                          .timeout_ms = 2000};
        KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_ordered, &r, NULL), 0);
    }
    run_until(&e.loop, &r.calls, 8);
    KT_EQ_INT(r.calls, 8);
    KT_EQ_INT(r.err, 0);
    for (int i = 0; i < 8; i++)
        KT_EQ_INT(r.order[i], i);
    KT_EQ_U64(e.cli.stats.connects, 1);
    env_close(&e);
}

static void on_count(int err, const keel_http_msg_t *resp, void *data)
{
    result_t *r = data;
    r->calls++;
    if (err != 0 || resp->status != 200 || resp->body_len != 5)
        r->err = err ? err : -1;
}

static void many_concurrent_requests_share_a_bounded_pool(void)
{
    keel_http_client_config_t cfg = keel_http_client_config_default();
    cfg.conns_per_host_max = 8;
    cfg.idle_per_host_max = 4;
    env_t e;
    env_init(&e, &cfg);
    result_t r = {0};
    keel_http_client_request_t req = get(e.addr, "/hello");
    for (int i = 0; i < 1000; i++)
        KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_count, &r, NULL), 0);
    KT_EQ_INT(keel_http_client_conns(&e.cli, e.addr), 8);
    run_until(&e.loop, &r.calls, 1000);
    KT_EQ_INT(r.calls, 1000);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(e.cli.stats.connects, 8);
    /* once idle, only idle_per_host_max connections stay open */
    for (int i = 0; i < 100; i++)
        uv_run(&e.loop.uv, UV_RUN_NOWAIT);
    KT_EQ_INT(keel_http_client_conns(&e.cli, e.addr), 4);
    /* the queue is bounded */
    cfg.queue_per_host_max = 2;
    e.cli.cfg.queue_per_host_max = 2;
    result_t r2 = {0};
    int accepted = 0, busy = 0;
    for (int i = 0; i < 20; i++) {
        int rc = keel_http_client_request(&e.cli, &req, on_count, &r2, NULL);
        accepted += rc == 0;
        busy += rc == KEEL_EBUSY;
    }
    KT_EQ_INT(accepted, 8 + 2);
    KT_EQ_INT(busy, 10);
    run_until(&e.loop, &r2.calls, accepted);
    KT_EQ_INT(r2.err, 0);
    env_close(&e);
}

static void client_reports_connection_refused(void)
{
    env_t e;
    env_init(&e, NULL);
    /* A port that was just free: bind, read it, close. */
    uv_tcp_t probe;
    KT_EQ_INT(keel_tcp_listen(&e.loop, &probe, "127.0.0.1:0", 1, NULL, NULL), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", keel_tcp_local_port(&probe));
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&e.loop.uv, UV_RUN_NOWAIT);
    result_t r = {0};
    keel_http_client_request_t req = get(addr, "/");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.err, KEEL_ECONNREFUSED);
    req = get("not-an-address:80", "/");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), KEEL_EINVAL);
    env_close(&e);
}

static void client_times_out_and_a_late_answer_is_dropped(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    keel_http_client_request_t req = get(e.addr, "/hold");
    req.timeout_ms = 100;
    uint64_t t0 = uv_now(&e.loop.uv);
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    uint64_t waited = uv_now(&e.loop.uv) - t0;
    KT_EQ_INT(r.err, KEEL_ETIMEDOUT);
    KT_CHECK(waited >= 100 && waited < 3000);
    /* the client closed its connection; the server notices */
    KT_CHECK(held != NULL);
    for (int i = 0; i < 1000 && !keel_http_req_gone(held); i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    KT_CHECK(keel_http_req_gone(held));
    int rc = keel_http_respond_body(held, 200, "text/plain", "late", 4);
    KT_CHECK(rc == 0 || rc == KEEL_ECLOSED);
    env_close(&e);
}

static int gone_calls;

static void on_gone(keel_http_req_t *req, void *data)
{
    gone_calls++;
    KT_CHECK(data == &gone_calls);
    keel_http_respond(req, 200, NULL, 0, NULL, 0); /* frees it */
}

static void cancel_ends_a_request_and_the_server_hears_the_client_go(void)
{
    env_t e;
    env_init(&e, NULL);
    gone_calls = 0;
    result_t r = {0};
    uint64_t id = 0;
    keel_http_client_request_t req = get(e.addr, "/hold");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, &id), 0);
    KT_CHECK(id != 0);
    for (int i = 0; i < 1000 && held == NULL; i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    KT_CHECK(held != NULL);
    keel_http_req_on_gone(held, on_gone, &gone_calls);
    KT_EQ_INT(keel_http_client_cancel(&e.cli, id), 0);
    KT_EQ_INT(r.calls, 1); /* synchronously */
    KT_EQ_INT(r.err, KEEL_ECANCELED);
    KT_EQ_INT(keel_http_client_cancel(&e.cli, id), KEEL_ENOTFOUND);
    for (int i = 0; i < 1000 && gone_calls == 0; i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(gone_calls, 1);
    /* a queued request is cancelled without touching any connection */
    keel_http_client_config_t one = keel_http_client_config_default();
    one.conns_per_host_max = 1;
    one.idle_per_host_max = 1;
    e.cli.cfg = one;
    held = NULL;
    result_t a = {0}, b = {0};
    uint64_t ida, idb;
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &a, &ida), 0);
    keel_http_client_request_t hello_req = get(e.addr, "/hello");
    KT_EQ_INT(keel_http_client_request(&e.cli, &hello_req, on_result, &b, &idb), 0);
    KT_EQ_INT(keel_http_client_cancel(&e.cli, idb), 0);
    KT_EQ_INT(b.err, KEEL_ECANCELED);
    for (int i = 0; i < 1000 && held == NULL; i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(keel_http_respond_body(held, 200, "text/plain", "held", 4), 0);
    run_until(&e.loop, &a.calls, 1);
    KT_EQ_STR(a.body, "held");
    env_close(&e);
}

static void shutdown_drains_an_in_flight_request(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    keel_http_client_request_t req = get(e.addr, "/hold");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    for (int i = 0; i < 1000 && held == NULL; i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    KT_CHECK(held != NULL);
    keel_http_server_shutdown(&e.srv, server_done, &e);
    uv_run(&e.loop.uv, UV_RUN_NOWAIT);
    KT_EQ_INT(e.server_done, 0); /* still draining */
    KT_EQ_INT(keel_http_respond_body(held, 200, "text/plain", "drained", 7), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_STR(r.body, "drained");
    run_until(&e.loop, &e.server_done, 1);
    KT_EQ_INT(e.server_done, 1);
    /* a new request is refused now */
    result_t r2 = {0};
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r2, NULL), 0);
    run_until(&e.loop, &r2.calls, 1);
    KT_EQ_INT(r2.err, KEEL_ECONNREFUSED);
    keel_http_client_close(&e.cli, client_done, &e);
    keel_loop_run(&e.loop);
    KT_EQ_INT(e.client_done, 1);
    KT_EQ_INT(keel_loop_close(&e.loop), 0);
}

/* ---- a scripted raw server for malformed answers and stale connections --------------------- */

typedef struct raw {
    uv_tcp_t listener;
    keel_loop_t *loop;
    int mode; /* 0 garbage, 1 close mid-body, 2 answer once then close on the next */
    int accepted;
    int requests;
} raw_t;

typedef struct raw_conn {
    uv_tcp_t tcp;
    raw_t *raw;
    int seen;
    char buf[4096];
} raw_conn_t;

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    raw_conn_t *c = (raw_conn_t *)h;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void raw_write(raw_conn_t *c, const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    KT_CHECK(uv_try_write((uv_stream_t *)&c->tcp, &b, 1) == (int)b.len);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    raw_conn_t *c = (raw_conn_t *)s;
    if (n <= 0) {
        if (n < 0 && !uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, (uv_close_cb)free);
        return;
    }
    c->raw->requests++;
    c->seen++;
    int mode = c->raw->mode;
    if (mode == 0)
        raw_write(c, "HTTP/1.1 abc nonsense\r\n\r\n");
    else if (mode == 1)
        raw_write(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
    else if (c->seen == 1) {
        raw_write(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return;
    }
    uv_close((uv_handle_t *)s, (uv_close_cb)free);
}

static void raw_accept(uv_stream_t *l, int status)
{
    raw_t *raw = l->data;
    raw_conn_t *c = calloc(1, sizeof(*c));
    c->raw = raw;
    uv_tcp_init(&raw->loop->uv, &c->tcp);
    KT_EQ_INT(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    raw->accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, raw_alloc, raw_read);
}

static void raw_start(raw_t *raw, keel_loop_t *l, int mode, char *addr, size_t addr_max)
{
    memset(raw, 0, sizeof(*raw));
    raw->loop = l;
    raw->mode = mode;
    KT_EQ_INT(keel_tcp_listen(l, &raw->listener, "127.0.0.1:0", 16, raw_accept, NULL), 0);
    raw->listener.data = raw;
    snprintf(addr, addr_max, "127.0.0.1:%d", keel_tcp_local_port(&raw->listener));
}

static void client_reports_malformed_and_truncated_responses(void)
{
    env_t e;
    env_init(&e, NULL);
    raw_t raw;
    char addr[64];
    raw_start(&raw, &e.loop, 0, addr, sizeof(addr));
    result_t r = {0};
    keel_http_client_request_t req = get(addr, "/");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.err, KEEL_EPROTO);
    raw.mode = 1;
    result_t r2 = {0};
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r2, NULL), 0);
    run_until(&e.loop, &r2.calls, 1);
    KT_EQ_INT(r2.err, KEEL_ECONNRESET);
    uv_close((uv_handle_t *)&raw.listener, NULL);
    env_close(&e);
}

static void stale_pooled_connection_is_retried_once_for_get(void)
{
    env_t e;
    env_init(&e, NULL);
    raw_t raw;
    char addr[64];
    raw_start(&raw, &e.loop, 2, addr, sizeof(addr));
    keel_http_client_request_t req = get(addr, "/");
    result_t r = {0};
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_STR(r.body, "ok");
    /* The second GET goes to the pooled connection, which the server drops without a byte. */
    result_t r2 = {0};
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r2, NULL), 0);
    run_until(&e.loop, &r2.calls, 1);
    KT_EQ_INT(r2.err, 0);
    KT_EQ_STR(r2.body, "ok");
    KT_EQ_U64(e.cli.stats.retries, 1);
    KT_EQ_INT(raw.accepted, 2);
    /* POST is not idempotent: the same situation is reported, not retried. */
    keel_http_client_request_t post = {.method = HTTP_POST,
                                       .host_port = addr,
                                       .target = "/",
                                       .body = "x",
                                       .body_len = 1,
                                       .timeout_ms = 2000};
    result_t r3 = {0};
    KT_EQ_INT(keel_http_client_request(&e.cli, &post, on_result, &r3, NULL), 0);
    run_until(&e.loop, &r3.calls, 1);
    KT_EQ_INT(r3.err, KEEL_ECONNRESET);
    KT_EQ_U64(e.cli.stats.retries, 1);
    uv_close((uv_handle_t *)&raw.listener, NULL);
    env_close(&e);
}

static void close_cancels_pending_requests(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    keel_http_client_request_t req = get(e.addr, "/hold");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), 0);
    for (int i = 0; i < 1000 && held == NULL; i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    keel_http_client_close(&e.cli, client_done, &e);
    KT_EQ_INT(r.calls, 1);
    KT_EQ_INT(r.err, KEEL_ECANCELED);
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r, NULL), KEEL_ECLOSED);
    for (int i = 0; i < 1000 && !keel_http_req_gone(held); i++)
        uv_run(&e.loop.uv, UV_RUN_ONCE);
    keel_http_respond(held, 200, NULL, 0, NULL, 0);
    keel_http_server_shutdown(&e.srv, server_done, &e);
    keel_loop_run(&e.loop);
    KT_EQ_INT(e.client_done, 1);
    KT_EQ_INT(e.server_done, 1);
    KT_EQ_INT(keel_loop_close(&e.loop), 0);
}

/* Starts a GET to addr while the process can open no descriptor (RLIMIT_NOFILE at the lowest free
 * one), so the connection fails inside keel_http_client_request (socket(): EMFILE); returns the
 * request's result and how many callbacks had run by the time it returned. */
static int request_without_fds(env_t *e, result_t *r, uint64_t *id, int *calls_inside)
{
    struct rlimit old, low;
    KT_EQ_INT(getrlimit(RLIMIT_NOFILE, &old), 0);
    int fd = open("/dev/null", O_RDONLY);
    KT_CHECK(fd >= 0);
    close(fd);
    low = old;
    low.rlim_cur = (rlim_t)fd;
    KT_EQ_INT(setrlimit(RLIMIT_NOFILE, &low), 0);
    keel_http_client_request_t req = get(e->addr, "/hello");
    int rc = keel_http_client_request(&e->cli, &req, on_result, r, id);
    *calls_inside = r->calls;
    KT_EQ_INT(setrlimit(RLIMIT_NOFILE, &old), 0);
    return rc;
}

/* The header's promise: a request that returned 0 calls back later, from the loop, even when it
 * failed at once. A caller records the call after the request returns (keel proxy's aggregate
 * parts did, and a callback run inside the request freed what the caller then wrote to). */
static void a_failure_at_the_start_is_reported_from_the_loop(void)
{
    env_t e;
    env_init(&e, NULL);
    result_t r = {0};
    uint64_t id = 0;
    int inside = -1;
    KT_EQ_INT(request_without_fds(&e, &r, &id, &inside), 0);
    KT_EQ_INT(inside, 0);
    run_until(&e.loop, &r.calls, 1);
    KT_EQ_INT(r.calls, 1);
    KT_CHECK(r.err != 0);
    /* cancelled before the loop reports it: one callback, the cancel's */
    result_t r2 = {0};
    KT_EQ_INT(request_without_fds(&e, &r2, &id, &inside), 0);
    KT_EQ_INT(inside, 0);
    KT_EQ_INT(keel_http_client_cancel(&e.cli, id), 0);
    KT_EQ_INT(r2.calls, 1);
    KT_EQ_INT(r2.err, KEEL_ECANCELED);
    for (int i = 0; i < 10; i++)
        uv_run(&e.loop.uv, UV_RUN_NOWAIT);
    KT_EQ_INT(r2.calls, 1);
    /* descriptors back: the client works */
    result_t r3 = {0};
    keel_http_client_request_t req = get(e.addr, "/hello");
    KT_EQ_INT(keel_http_client_request(&e.cli, &req, on_result, &r3, NULL), 0);
    run_until(&e.loop, &r3.calls, 1);
    KT_EQ_INT(r3.err, 0);
    KT_EQ_INT(r3.status, 200);
    env_close(&e);
}

int main(void)
{
    KT_RUN(client_gets_a_response_and_reuses_the_connection);
    KT_RUN(client_posts_a_body_and_gets_404_for_unknown_paths);
    KT_RUN(head_answers_have_no_body_and_keep_the_connection);
    KT_RUN(queued_requests_complete_in_order_on_one_connection);
    KT_RUN(many_concurrent_requests_share_a_bounded_pool);
    KT_RUN(client_reports_connection_refused);
    KT_RUN(client_times_out_and_a_late_answer_is_dropped);
    KT_RUN(cancel_ends_a_request_and_the_server_hears_the_client_go);
    KT_RUN(shutdown_drains_an_in_flight_request);
    KT_RUN(client_reports_malformed_and_truncated_responses);
    KT_RUN(stale_pooled_connection_is_retried_once_for_get);
    KT_RUN(close_cancels_pending_requests);
    KT_RUN(a_failure_at_the_start_is_reported_from_the_loop);
    return kt_done();
}
