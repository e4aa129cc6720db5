/* notes - an example service on the keel service kit: a small HTTP API of notes kept in
 * memory. The template the shop's services start from (docs/kit.md).
 *
 *   keel-example-notes [--listen host:port] [--registry host:port,...] [--ttl ms] [--id id]
 *                      [--idem host:port,...] [--idem-ttl ms]
 *                      [--config notes.yaml] [--print-config] [--help]
 * Each setting also comes from the environment (NOTES_LISTEN, NOTES_REGISTRY, NOTES_TTL,
 * NOTES_ID, NOTES_IDEM, NOTES_IDEM_TTL) or a YAML file (listen: ..., ttl: ...): a flag beats
 * the environment, which beats the file, which beats the default (kit/config.h).
 *
 *   PUT    /notes/:id     the body becomes note id          204
 *   GET    /notes/:id     {"id": ..., "text": ...}          200, or 404
 *   DELETE /notes/:id                                       204, or 404
 *   GET    /notes         {"count": n}
 *   POST   /notes         a new note from the body, id n1, n2, ...  201 {"id": ...} + Location
 *                          (a body of "!fail" answers 503 and creates nothing)
 *   GET    /slow/:ms      answers after ms milliseconds (an async handler: the drain test)
 *   POST   /slow/:ms      the same
 * With --idem host:port,... (keel server) POST /notes and POST /slow/:ms honour an
 * Idempotency-Key header (tx/idem.h), keys kept --idem-ttl ms (default 24 h).
 *   plus the kit's /health/live, /health/ready and /metrics.
 * With --registry it registers in keel server's registry as service "notes" (TTL --ttl ms,
 * default 5000), heartbeats, and deregisters first thing on SIGTERM. SIGTERM: ready turns
 * 503, it deregisters, the listener closes, requests in flight finish, then it exits 0.
 */
#include "base/log.h"
#include "base/map.h"
#include "base/num.h"
#include "kit/config.h"
#include "kit/service.h"
#include "runtime/logsink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTES_MAX 100000u
#define NOTE_BYTES_MAX (64u * 1024u)
#define SLOW_MS_MAX 60000

typedef struct app {
    keel_map_t notes; /* id -> json string (owned) */
    keel_loop_t *loop;
    uint64_t created; /* POST /notes: the last id given */
} app_t;

static const keel_route_param_t *param(const keel_service_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->route.n; i++)
        if (r->route.params[i].name_len == strlen(name) &&
            memcmp(r->route.params[i].name, name, r->route.params[i].name_len) == 0)
            return &r->route.params[i];
    return NULL;
}

static void put_note(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_route_param_t *id = param(r, "id");
    const keel_http_msg_t *m = r->http->msg;
    if (m->body_len > NOTE_BYTES_MAX) {
        keel_http_respond_error(r->http, 413, "a note is at most 64 KiB");
        return;
    }
    char *text = malloc(m->body_len + 1);
    if (text == NULL) {
        keel_http_respond_error(r->http, 503, "out of memory");
        return;
    }
    memcpy(text, m->body, m->body_len);
    text[m->body_len] = '\0';
    void *old = NULL;
    int rc = keel_map_put(&a->notes, id->value, id->value_len, text, &old);
    if (rc < 0) {
        free(text);
        keel_http_respond_error(r->http, 507, "too many notes");
        return;
    }
    free(old);
    /* the kit puts the request's trace id and X-Request-Id on this line */
    keel_log_debug("notes: note written", KF_INT("bytes", (int64_t)m->body_len));
    keel_http_respond(r->http, 204, NULL, 0, NULL, 0);
}

static void create_note(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_http_msg_t *m = r->http->msg;
    if (m->body_len == 5 && memcmp(m->body, "!fail", 5) == 0) {
        keel_http_respond_error(r->http, 503, "asked to fail");
        return;
    }
    if (m->body_len > NOTE_BYTES_MAX) {
        keel_http_respond_error(r->http, 413, "a note is at most 64 KiB");
        return;
    }
    char id[32], location[48], body[64];
    snprintf(id, sizeof(id), "n%llu", (unsigned long long)++a->created);
    char *text = malloc(m->body_len + 1);
    void *old = NULL;
    if (text == NULL) {
        keel_http_respond_error(r->http, 503, "out of memory");
        return;
    }
    memcpy(text, m->body, m->body_len);
    text[m->body_len] = '\0';
    if (keel_map_put(&a->notes, id, strlen(id), text, &old) < 0) {
        free(text);
        keel_http_respond_error(r->http, 507, "too many notes");
        return;
    }
    free(old);
    snprintf(location, sizeof(location), "/notes/%s", id);
    int n = snprintf(body, sizeof(body), "{\"id\":\"%s\"}", id);
    keel_http_header_t h[2] = {
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16},
        {.name = "Location", .name_len = 8, .value = location, .value_len = strlen(location)}};
    keel_http_respond(r->http, 201, h, 2, body, (size_t)n);
}

static void get_note(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_route_param_t *id = param(r, "id");
    void **v = keel_map_get(&a->notes, id->value, id->value_len);
    if (v == NULL) {
        keel_http_respond_error(r->http, 404, "no such note");
        return;
    }
    json_t *o = json_pack("{s:s%, s:s}", "id", id->value, id->value_len, "text", (char *)*v);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void delete_note(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_route_param_t *id = param(r, "id");
    void *old = NULL;
    if (keel_map_del(&a->notes, id->value, id->value_len, &old) != 0) {
        keel_http_respond_error(r->http, 404, "no such note");
        return;
    }
    free(old);
    keel_http_respond(r->http, 204, NULL, 0, NULL, 0);
}

static void count_notes(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    json_t *o = json_pack("{s:I}", "count", (json_int_t)a->notes.count);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

typedef struct slow {
    keel_timer_t t;
    keel_service_req_t *req;
} slow_t;

static void slow_closed(keel_timer_t *t)
{
    free(t);
}

static void slow_fire(keel_timer_t *t, void *data)
{
    slow_t *s = data;
    keel_http_respond_body(s->req->http, 200, "text/plain", "slow done\n", 10);
    keel_timer_close(&s->t, slow_closed);
}

static void slow(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_route_param_t *p = param(r, "ms");
    int64_t ms;
    if (keel_parse_i64((const uint8_t *)p->value, p->value_len, &ms) != 0 || ms < 0 ||
        ms > SLOW_MS_MAX) {
        keel_http_respond_error(r->http, 400, "ms: 0 to 60000");
        return;
    }
    slow_t *s = calloc(1, sizeof(*s));
    if (s == NULL || keel_timer_init(a->loop, &s->t) != 0) {
        free(s);
        keel_http_respond_error(r->http, 503, "out of memory");
        return;
    }
    s->req = r;
    keel_timer_start(&s->t, (keel_ms_t)ms, 0, slow_fire, s);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080", *registry = NULL, *id = NULL, *idem = NULL;
    const char *log_level = "info";
    int64_t ttl = 5000, idem_ttl = 24 * 3600 * 1000;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0,
         "keel server host:port,... to register in as service notes"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id (default notes-<host>-<port>)"},
        {"ttl", KEEL_OPT_INT, &ttl, 100, 600000, "registration TTL in ms"},
        {"idem", KEEL_OPT_STR, &idem, 0, 0,
         "keel server host:port,... storing Idempotency-Key answers (POST routes)"},
        {"idem-ttl", KEEL_OPT_INT, &idem_ttl, 1, 30LL * 24 * 3600 * 1000,
         "how long a stored answer is kept, ms"},
        {"log-level", KEEL_OPT_STR, &log_level, 0, 0,
         "debug, info, warn, error or off (debug: a line per note written)"},
    };
    keel_config_t conf;
    keel_errmsg_t cmsg = {{0}};
    int crc = keel_config_load(&conf, "keel-example-notes", "NOTES", opts,
                               sizeof(opts) / sizeof(opts[0]), argc, argv, NULL, &cmsg);
    if (crc != 0) {
        if (crc < 0)
            fprintf(stderr, "keel-example-notes: %s\n", cmsg.text);
        return crc < 0 ? 2 : 0;
    }
    if (keel_logsink_init_stderr(log_level) != 0) {
        fprintf(stderr, "keel-example-notes: bad --log-level %s\n", log_level);
        return 2;
    }
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    app_t app = {.loop = &loop};
    if (keel_map_init(&app.notes, 64, NOTES_MAX, 7) != 0)
        return 1;
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default("notes");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.ttl_ms = (keel_ms_t)ttl;
    cfg.idem.servers = idem;
    cfg.idem.ttl_ms = (keel_ms_t)idem_ttl;
    keel_errmsg_t msg = {{0}};
    int rc = keel_service_init(&svc, &loop, &cfg, &msg);
    const struct {
        const char *method, *pattern;
        keel_service_handler_fn fn;
        bool idempotent; /* with --idem */
    } routes[] = {{"PUT", "/notes/:id", put_note, false},
                  {"GET", "/notes/:id", get_note, false},
                  {"DELETE", "/notes/:id", delete_note, false},
                  {"GET", "/notes", count_notes, false},
                  {"POST", "/notes", create_note, true},
                  {"GET", "/slow/:ms", slow, false},
                  {"POST", "/slow/:ms", slow, true}};
    for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
        rc = routes[i].idempotent && idem != NULL
                 ? keel_service_route_idem(&svc, routes[i].method, routes[i].pattern, routes[i].fn,
                                           &app, &msg)
                 : keel_service_route(&svc, routes[i].method, routes[i].pattern, routes[i].fn, &app,
                                      &msg);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "notes: %s\n", msg.text);
        return 1;
    }
    printf("notes: listening on port %d\n", keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_map_free(&app.notes, free);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
