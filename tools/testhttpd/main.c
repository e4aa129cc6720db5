/* main.c - keel-testhttpd: a small HTTP server on keel's runtime for system tests and benchmarks.
 */
#include "base/err.h"
#include "base/list.h"
#include "base/log.h"
#include "base/metrics.h"
#include "runtime/http_server.h"
#include "runtime/logsink.h"
#include "runtime/loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Routes: GET /health, GET /hello, POST /echo, GET /slow?ms=N (answered from a
 * timer, N <= 60000), GET /metrics (the server's metrics, Prometheus text).
 * SIGTERM/SIGINT drain in-flight requests and exit 0. Prints
 * "listening on HOST:PORT" on stdout once ready (port 0 picks a free one).
 */

#define SLOW_MS_MAX 60000

static void health(keel_http_req_t *req, void *data)
{
    static const char body[] = "{\"status\":\"ok\"}";
    keel_http_respond_body(req, 200, "application/json", body, sizeof(body) - 1);
}

static void hello(keel_http_req_t *req, void *data)
{
    keel_http_respond_body(req, 200, "text/plain", "hello", 5);
}

static void echo(keel_http_req_t *req, void *data)
{
    size_t ct_len = 0;
    const char *ct = keel_http_msg_header(req->msg, "content-type", &ct_len);
    keel_http_header_t h = {.name = "Content-Type",
                            .name_len = 12,
                            .value = ct ? ct : "application/octet-stream",
                            .value_len = ct ? ct_len : 24};
    keel_http_respond(req, 200, &h, 1, req->msg->body, req->msg->body_len);
}

/* Pending /slow replies, so a forced drain can release them and the loop can end. */
typedef struct slow {
    keel_timer_t timer;
    keel_http_req_t *req;
    long ms;
    keel_list_t link; /* slow_pending */
} slow_t;

static keel_list_t slow_pending = KEEL_LIST_INIT(slow_pending);

static void slow_closed(keel_timer_t *t)
{
    free(t);
}

static void slow_fire(keel_timer_t *t, void *data)
{
    slow_t *s = data;
    keel_list_remove(&s->link);
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"slept_ms\":%ld}", s->ms);
    keel_http_respond_body(s->req, 200, "application/json", body, (size_t)n);
    keel_timer_close(&s->timer, slow_closed);
}

static void slow(keel_http_req_t *req, void *data)
{
    keel_loop_t *loop = data;
    long ms = 100;
    const char *q = req->msg->query;
    const char *p = strstr(q, "ms=");
    if (p != NULL && (p == q || p[-1] == '&'))
        ms = strtol(p + 3, NULL, 10);
    if (ms < 0 || ms > SLOW_MS_MAX) {
        keel_http_respond_error(req, 400, "ms must be in [0, 60000]");
        return;
    }
    slow_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        keel_http_respond_error(req, 503, "out of memory");
        return;
    }
    s->req = req;
    s->ms = ms;
    keel_list_init(&s->link);
    keel_list_insert_head(&slow_pending, &s->link);
    keel_timer_init(loop, &s->timer);
    keel_timer_start(&s->timer, ms, 0, slow_fire, s);
}

static void metrics(keel_http_req_t *req, void *data)
{
    keel_metrics_t *reg = data;
    keel_buf_t out;
    keel_buf_init(&out, 0);
    if (keel_metrics_render(reg, &out) != 0)
        keel_http_respond_error(req, 500, "cannot render metrics");
    else
        keel_http_respond_body(req, 200, "text/plain; version=0.0.4", keel_buf_rptr(&out),
                               keel_buf_unread(&out));
    keel_buf_free(&out);
}

static void usage(void)
{
    fprintf(stderr, "usage: keel-testhttpd [--listen HOST:PORT] [--read-timeout-ms N]\n"
                    "       [--idle-timeout-ms N] [--write-timeout-ms N] [--drain-timeout-ms N]\n"
                    "       [--body-bytes-max N]"
                    "       [--headers-bytes-max N] [--connections-max N]\n");
}

static int parse_args(int argc, char **argv, const char **listen, keel_http_server_config_t *cfg)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            usage();
            return -1;
        }
        const char *v = argv[++i];
        long long n = strtoll(v, NULL, 10);
        if (strcmp(a, "--listen") == 0)
            *listen = v;
        else if (strcmp(a, "--read-timeout-ms") == 0)
            cfg->read_timeout_ms = n;
        else if (strcmp(a, "--idle-timeout-ms") == 0)
            cfg->idle_timeout_ms = n;
        else if (strcmp(a, "--write-timeout-ms") == 0)
            cfg->write_timeout_ms = n;
        else if (strcmp(a, "--drain-timeout-ms") == 0)
            cfg->drain_timeout_ms = n;
        else if (strcmp(a, "--body-bytes-max") == 0)
            cfg->limits.body_bytes_max = (size_t)n;
        else if (strcmp(a, "--headers-bytes-max") == 0)
            cfg->limits.headers_bytes_max = (size_t)n;
        else if (strcmp(a, "--connections-max") == 0)
            cfg->connections_max = (size_t)n;
        else {
            usage();
            return -1;
        }
    }
    return 0;
}

static void on_stopped(keel_http_server_t *srv, void *data)
{
    /* Requests the drain timeout cut off: their clients are gone; answering frees them. */
    keel_list_t *it;
    while ((it = keel_list_first(&slow_pending)) != NULL) {
        slow_t *s = KEEL_LIST_ENTRY(it, slow_t, link);
        keel_list_remove(&s->link);
        keel_http_respond_error(s->req, 503, "shutting down");
        keel_timer_close(&s->timer, slow_closed);
    }
    keel_log_info("drained, exiting");
}

static void on_signal(void *data)
{
    keel_log_info("shutdown requested");
    keel_http_server_shutdown(data, on_stopped, NULL);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080";
    keel_http_server_config_t cfg = keel_http_server_config_default();
    if (parse_args(argc, argv, &listen, &cfg) != 0)
        return 2;
    keel_logsink_init_stderr(NULL);
    keel_loop_t loop;
    keel_http_server_t srv;
    keel_errmsg_t msg;
    keel_metrics_t *reg = keel_metrics_new();
    if (reg == NULL)
        return 1;
    cfg.metrics = reg;
    const keel_http_route_t routes[] = {
        {HTTP_GET, "/health", health, NULL},  {HTTP_GET, "/hello", hello, NULL},
        {HTTP_POST, "/echo", echo, NULL},     {HTTP_GET, "/slow", slow, &loop},
        {HTTP_GET, "/metrics", metrics, reg},
    };
    if (keel_loop_init(&loop) != 0)
        return 1;
    int rc =
        keel_http_server_init(&srv, &loop, &cfg, routes, sizeof(routes) / sizeof(routes[0]), &msg);
    if (rc == 0)
        rc = keel_http_server_listen(&srv, listen, &msg);
    if (rc != 0) {
        keel_log_error("cannot start", KF_STR("reason", msg.text),
                       KF_STR("error", keel_strerror(rc)));
        return 1;
    }
    keel_loop_handle_signals(&loop);
    keel_loop_on_shutdown(&loop, on_signal, &srv);
    char host[128];
    snprintf(host, sizeof(host), "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0;
    keel_log_info("listening", KF_STR("host", host), KF_INT("port", keel_http_server_port(&srv)));
    printf("listening on %s:%d\n", host, keel_http_server_port(&srv));
    fflush(stdout);
    keel_loop_run(&loop);
    rc = keel_loop_close(&loop);
    if (rc != 0)
        keel_log_error("loop closed with handles open");
    keel_metrics_free(reg);
    return rc == 0 ? 0 : 1;
}
