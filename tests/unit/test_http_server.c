/* test_http_server.c - route matching and server-made answers, driven by keel's own client. */
#include "runtime/http_client.h"
#include "runtime/http_server.h"
#include "ktest.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void named(keel_http_req_t *req, void *data)
{
    const char *name = data;
    char body[128];
    int n = snprintf(body, sizeof(body), "%s %.*s", name, (int)req->msg->path_len, req->msg->path);
    keel_http_respond_body(req, 200, "text/plain", body, (size_t)n);
}

typedef struct answer {
    int calls, err, status;
    char body[1024];
} answer_t;

static void on_answer(int err, const keel_http_msg_t *resp, void *data)
{
    answer_t *a = data;
    a->calls++;
    a->err = err;
    if (err == 0) {
        a->status = resp->status;
        snprintf(a->body, sizeof(a->body), "%.*s", (int)resp->body_len, (const char *)resp->body);
    }
}

typedef struct env {
    keel_loop_t loop;
    keel_http_server_t srv;
    keel_http_client_t cli;
    char addr[64];
} env_t;

static void env_init(env_t *e)
{
    static const keel_http_route_t routes[] = {
        {HTTP_GET, "/echo", named, "echo-get"},
        {HTTP_POST, "/echo", named, "echo-post"},
        {KEEL_HTTP_ANY_METHOD, "/api/", named, "api"},
        {HTTP_GET, "/", named, "root"},
    };
    memset(e, 0, sizeof(*e));
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
    keel_http_server_config_t cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_init(&e->srv, &e->loop, &cfg, routes, 4, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&e->srv, "127.0.0.1:0", NULL), 0);
    snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", keel_http_server_port(&e->srv));
    keel_http_client_config_t ccfg = keel_http_client_config_default();
    KT_EQ_INT(keel_http_client_init(&e->cli, &e->loop, &ccfg, NULL), 0);
}

static void env_close(env_t *e)
{
    keel_http_client_close(&e->cli, NULL, NULL);
    keel_http_server_shutdown(&e->srv, NULL, NULL);
    keel_loop_run(&e->loop);
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
}

static answer_t ask(env_t *e, int method, const char *target)
{
    answer_t a = {0};
    keel_http_client_request_t r = {
        .method = method, .host_port = e->addr, .target = target, .timeout_ms = 2000};
    KT_EQ_INT(keel_http_client_request(&e->cli, &r, on_answer, &a, NULL), 0);
    for (int i = 0; i < 10000 && a.calls == 0; i++)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(a.calls, 1);
    KT_EQ_INT(a.err, 0);
    return a;
}

static void routes_match_by_method_and_path_prefix_in_table_order(void)
{
    env_t e;
    env_init(&e);
    struct {
        int method;
        const char *target;
        int status;
        const char *body;
    } cases[] = {
        {HTTP_GET, "/echo", 200, "echo-get /echo"},
        {HTTP_GET, "/echo?x=1", 200, "echo-get /echo"},
        {HTTP_GET, "/echo/deeper", 200, "echo-get /echo/deeper"},
        {HTTP_POST, "/echo", 200, "echo-post /echo"},
        {HTTP_GET, "/echoes", 200, "root /echoes"}, /* not under /echo: falls to "/" */
        {HTTP_DELETE, "/api/v1/x", 200, "api /api/v1/x"},
        {HTTP_GET, "/api", 200, "root /api"}, /* "/api/" needs the slash */
        {HTTP_PUT, "/echo", 405, NULL},
        {HTTP_DELETE, "/nothing", 405, NULL}, /* "/" matches the path, GET only */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        answer_t a = ask(&e, cases[i].method, cases[i].target);
        if (a.status != cases[i].status)
            KT_FAIL("case %zu %s: status %d, want %d", i, cases[i].target, a.status,
                    cases[i].status);
        if (cases[i].body)
            KT_EQ_STR(a.body, cases[i].body);
    }
    /* HEAD uses the GET route and gets no body */
    answer_t h = ask(&e, HTTP_HEAD, "/echo");
    KT_EQ_INT(h.status, 200);
    KT_EQ_STR(h.body, "");
    KT_EQ_U64(e.srv.stats.requests, 10);
    KT_EQ_U64(e.srv.stats.responses_by_class[4], 2);
    env_close(&e);
}

/* An error message with quotes, a newline and more than the body holds. */
static void quoted(keel_http_req_t *req, void *data)
{
    (void)data;
    char msg[700];
    memset(msg, 'x', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    memcpy(msg, "say \"no\"\n", 9);
    keel_http_respond_error(req, 400, msg);
}

static void with_no_route_for_a_path_the_answer_is_404_json(void)
{
    static const keel_http_route_t routes[] = {{HTTP_GET, "/only", named, "only"},
                                               {HTTP_GET, "/quoted", quoted, NULL}};
    env_t e;
    memset(&e, 0, sizeof(e));
    KT_EQ_INT(keel_loop_init(&e.loop), 0);
    keel_http_server_config_t cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_init(&e.srv, &e.loop, &cfg, routes, 2, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&e.srv, "127.0.0.1:0", NULL), 0);
    snprintf(e.addr, sizeof(e.addr), "127.0.0.1:%d", keel_http_server_port(&e.srv));
    keel_http_client_config_t ccfg = keel_http_client_config_default();
    KT_EQ_INT(keel_http_client_init(&e.cli, &e.loop, &ccfg, NULL), 0);
    answer_t a = ask(&e, HTTP_GET, "/other");
    KT_EQ_INT(a.status, 404);
    KT_EQ_STR(a.body, "{\"error\":{\"code\":404,\"message\":\"not found\"}}");
    /* a message is escaped and cut, never breaking the JSON */
    a = ask(&e, HTTP_GET, "/quoted");
    KT_EQ_INT(a.status, 400);
    json_t *j = json_loads(a.body, 0, NULL);
    KT_CHECK(j != NULL);
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    KT_CHECK(m != NULL && strncmp(m, "say \"no\"\nxxx", 12) == 0 && strlen(m) < 700);
    json_decref(j);
    env_close(&e);
}

/* An answer filter: the handler answers "inner"; the filter holds that, and a timer later
   answers 201 "outer:inner" for real. */
typedef struct filtered {
    keel_timer_t t;
    keel_http_req_t *req;
    char held[64];
    int filter_calls, answered_calls, answered_status;
} filtered_t;

static void filtered_fire(keel_timer_t *t, void *data)
{
    filtered_t *f = data;
    char body[96];
    int n = snprintf(body, sizeof(body), "outer:%s", f->held);
    keel_http_respond_body(f->req, 201, "text/plain", body, (size_t)n);
}

static int filter(keel_http_req_t *req, int status, const keel_http_header_t *headers,
                  size_t headers_count, const void *body, size_t body_len, void *data)
{
    filtered_t *f = data;
    f->filter_calls++;
    KT_EQ_INT(status, 200);
    KT_EQ_INT(headers_count, 1);
    snprintf(f->held, sizeof(f->held), "%.*s", (int)body_len, (const char *)body);
    f->req = req;
    keel_timer_start(&f->t, 5, 0, filtered_fire, f); /* answered later: async is fine */
    return 0;
}

static void on_answered(keel_http_req_t *req, int status, void *data)
{
    filtered_t *f = data;
    f->answered_calls++;
    f->answered_status = status;
}

static void filtered_handler(keel_http_req_t *req, void *data)
{
    keel_http_req_on_answer(req, on_answered, data);
    keel_http_req_on_respond(req, filter, data);
    keel_http_respond_body(req, 200, "text/plain", "inner", 5);
}

static void an_answer_filter_takes_the_answer_and_answers_for_it_later(void)
{
    filtered_t f = {0};
    const keel_http_route_t routes[] = {{HTTP_POST, "/f", filtered_handler, &f}};
    env_t e;
    memset(&e, 0, sizeof(e));
    KT_EQ_INT(keel_loop_init(&e.loop), 0);
    KT_EQ_INT(keel_timer_init(&e.loop, &f.t), 0);
    keel_http_server_config_t cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_init(&e.srv, &e.loop, &cfg, routes, 1, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&e.srv, "127.0.0.1:0", NULL), 0);
    snprintf(e.addr, sizeof(e.addr), "127.0.0.1:%d", keel_http_server_port(&e.srv));
    keel_http_client_config_t ccfg = keel_http_client_config_default();
    KT_EQ_INT(keel_http_client_init(&e.cli, &e.loop, &ccfg, NULL), 0);
    answer_t a = ask(&e, HTTP_POST, "/f");
    KT_EQ_INT(a.status, 201);
    KT_EQ_STR(a.body, "outer:inner");
    KT_EQ_INT(f.filter_calls, 1);
    /* the answer hook sees the answer that left, once */
    KT_EQ_INT(f.answered_calls, 1);
    KT_EQ_INT(f.answered_status, 201);
    /* and again for the next request on the same connection */
    a = ask(&e, HTTP_POST, "/f");
    KT_EQ_INT(f.filter_calls, 2);
    KT_EQ_INT(f.answered_calls, 2);
    keel_timer_close(&f.t, NULL);
    env_close(&e);
}

static void config_is_validated(void)
{
    keel_http_server_config_t cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_config_validate(&cfg, NULL), 0);
    keel_errmsg_t m;
    cfg.read_timeout_ms = 0;
    KT_EQ_INT(keel_http_server_config_validate(&cfg, &m), KEEL_EINVAL);
    cfg = keel_http_server_config_default();
    cfg.limits.headers_count_max = 0;
    KT_EQ_INT(keel_http_server_config_validate(&cfg, &m), KEEL_EINVAL);
    cfg = keel_http_server_config_default();
    cfg.input_bytes_max = 10;
    KT_EQ_INT(keel_http_server_config_validate(&cfg, &m), KEEL_EINVAL);
    /* a server that never listened shuts down cleanly */
    keel_loop_t l;
    KT_EQ_INT(keel_loop_init(&l), 0);
    keel_http_server_t srv;
    cfg = keel_http_server_config_default();
    KT_EQ_INT(keel_http_server_init(&srv, &l, &cfg, NULL, 0, NULL), 0);
    KT_EQ_INT(keel_http_server_listen(&srv, "256.0.0.1:80", &m), KEEL_EINVAL);
    keel_http_server_shutdown(&srv, NULL, NULL);
    keel_loop_run(&l);
    KT_EQ_INT(keel_loop_close(&l), 0);
}

int main(void)
{
    KT_RUN(routes_match_by_method_and_path_prefix_in_table_order);
    KT_RUN(with_no_route_for_a_path_the_answer_is_404_json);
    KT_RUN(an_answer_filter_takes_the_answer_and_answers_for_it_later);
    KT_RUN(config_is_validated);
    return kt_done();
}
