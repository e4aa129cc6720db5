/* ledger - an example saga step service on the kit: an action and its compensation that honour
 * the Idempotency-Key contract of core/saga.h, with a journal to check them by (docs/tx.md).
 *
 *   keel-example-ledger [--listen host:port] [--name NAME] [--flaky-pct P] [--seed S]
 *                       [--undo-fails]
 *
 *   POST /do      Idempotency-Key: K   the first K applies (journal "applied"), 200 "ok-NAME";
 *                                      a body "fail=NAME" is refused instead, 422; a repeat
 *                                      of K gets the first answer again; K after its undo
 *                                      is refused, 409 (the tombstone)
 *   POST /undo    Idempotency-Key: U   U is "<saga>:<step>:undo": undoes "<saga>:<step>:do"
 *                                      if it applied (journal "undone"), else leaves a
 *                                      tombstone; always 200, repeats included
 *   GET  /journal                      {"applied": [...], "undone": [...]} (the do keys)
 *   plus the kit's /health/live, /health/ready and /metrics.
 * --flaky-pct P answers 503 to P% of /do and /undo requests, half of them before and half
 * after doing the work (a reply lost after the effect): the saga's retries must cope.
 * --undo-fails answers every /undo 500 without doing anything: a compensation that cannot
 * succeed, which the saga must end as needs_attention.
 * State is in memory: the service lives for its test. */
#include "base/map.h"
#include "base/num.h"
#include "base/rand.h"
#include "kit/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS_MAX 1000000u
#define KEY_BYTES_MAX 256u

enum { K_APPLIED = 1, K_REFUSED, K_UNDONE_AFTER_APPLY, K_TOMBSTONE };

typedef struct app {
    keel_map_t keys; /* do key -> K_* (an intptr) */
    const char *name;
    json_t *applied, *undone;
    uint32_t flaky_pct;
    bool undo_fails;
    keel_rand_t rand;
} app_t;

static bool header(const keel_service_req_t *r, const char *name, char *out, size_t cap)
{
    const keel_http_msg_t *m = r->http->msg;
    for (size_t i = 0; i < m->headers_count; i++)
        if (strcasecmp(m->headers[i].name, name) == 0 && m->headers[i].value_len > 0 &&
            m->headers[i].value_len < cap) {
            memcpy(out, m->headers[i].value, m->headers[i].value_len + 1);
            return true;
        }
    return false;
}

static int state_of(app_t *a, const char *key)
{
    void **v = keel_map_get(&a->keys, key, strlen(key));
    return v ? (int)(intptr_t)*v : 0;
}

static int set_state(app_t *a, const char *key, int st)
{
    return keel_map_put(&a->keys, key, strlen(key), (void *)(intptr_t)st, NULL) < 0 ? -1 : 0;
}

/* 0: go on; 1: answer 503 before the work; 2: after it. */
static int flake(app_t *a)
{
    if (a->flaky_pct == 0 || keel_rand_below(&a->rand, 100) >= a->flaky_pct)
        return 0;
    return 1 + (int)keel_rand_below(&a->rand, 2);
}

static void answer(keel_service_req_t *r, int status, const char *text)
{
    keel_http_respond_body(r->http, status, "text/plain", text, strlen(text));
}

static void do_step(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char key[KEY_BYTES_MAX], ok[64], fail[64];
    if (!header(r, "Idempotency-Key", key, sizeof(key))) {
        keel_http_respond_error(r->http, 400, "Idempotency-Key required");
        return;
    }
    int f = flake(a);
    if (f == 1) {
        keel_http_respond_error(r->http, 503, "flaky (before)");
        return;
    }
    snprintf(ok, sizeof(ok), "ok-%s", a->name);
    snprintf(fail, sizeof(fail), "fail=%s", a->name);
    const keel_http_msg_t *m = r->http->msg;
    int st = state_of(a, key);
    if (st == 0) {
        bool refuse = m->body_len == strlen(fail) && memcmp(m->body, fail, m->body_len) == 0;
        st = refuse ? K_REFUSED : K_APPLIED;
        if (set_state(a, key, st) != 0) {
            keel_http_respond_error(r->http, 507, "too many keys");
            return;
        }
        if (st == K_APPLIED)
            json_array_append_new(a->applied, json_string(key));
    }
    if (f == 2) {
        keel_http_respond_error(r->http, 503, "flaky (after)");
        return;
    }
    if (st == K_APPLIED || st == K_UNDONE_AFTER_APPLY)
        answer(r, 200, ok); /* the first answer, also after its undo */
    else if (st == K_REFUSED)
        keel_http_respond_error(r->http, 422, "refused");
    else
        keel_http_respond_error(r->http, 409, "cancelled by its compensation");
}

static void undo_step(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char key[KEY_BYTES_MAX];
    size_t n;
    if (!header(r, "Idempotency-Key", key, sizeof(key)) || (n = strlen(key)) < 6 ||
        strcmp(key + n - 5, ":undo") != 0) {
        keel_http_respond_error(r->http, 400, "Idempotency-Key <saga>:<step>:undo required");
        return;
    }
    memcpy(key + n - 5, ":do", 4); /* the action's key */
    if (a->undo_fails) {
        keel_http_respond_error(r->http, 500, "this compensation cannot succeed");
        return;
    }
    int f = flake(a);
    if (f == 1) {
        keel_http_respond_error(r->http, 503, "flaky (before)");
        return;
    }
    int st = state_of(a, key);
    int rc = 0;
    if (st == K_APPLIED) {
        rc = set_state(a, key, K_UNDONE_AFTER_APPLY);
        json_array_append_new(a->undone, json_string(key));
    } else if (st == 0) {
        rc = set_state(a, key, K_TOMBSTONE);
    }
    if (rc != 0) {
        keel_http_respond_error(r->http, 507, "too many keys");
        return;
    }
    if (f == 2)
        keel_http_respond_error(r->http, 503, "flaky (after)");
    else
        answer(r, 200, "undone");
}

static void journal(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    json_t *o = json_pack("{s:O, s:O}", "applied", a->applied, "undone", a->undone);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    app_t app = {.name = "ledger"};
    int64_t v = 0;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--listen") == 0 && val) {
            listen = val;
        } else if (strcmp(argv[i], "--name") == 0 && val && strlen(val) < 32) {
            app.name = val;
        } else if (strcmp(argv[i], "--flaky-pct") == 0 && val &&
                   keel_parse_i64((const uint8_t *)val, strlen(val), &v) == 0 && v >= 0 &&
                   v <= 100) {
            app.flaky_pct = (uint32_t)v;
        } else if (strcmp(argv[i], "--undo-fails") == 0) {
            app.undo_fails = true;
            continue;
        } else if (strcmp(argv[i], "--seed") == 0 && val &&
                   keel_parse_i64((const uint8_t *)val, strlen(val), &v) == 0) {
            seed = (uint64_t)v;
        } else {
            fprintf(stderr, "usage: keel-example-ledger [--listen host:port] [--name NAME] "
                            "[--flaky-pct 0..100] [--seed S] [--undo-fails]\n");
            return 2;
        }
        i++;
    }
    keel_rand_seed(&app.rand, seed);
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    app.applied = json_array();
    app.undone = json_array();
    if (keel_map_init(&app.keys, 1024, KEYS_MAX, seed) != 0 || !app.applied || !app.undone)
        return 1;
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default(app.name);
    cfg.listen = listen;
    keel_errmsg_t msg = {{0}};
    int rc = keel_service_init(&svc, &loop, &cfg, &msg);
    const struct {
        const char *method, *pattern;
        keel_service_handler_fn fn;
    } routes[] = {
        {"POST", "/do", do_step}, {"POST", "/undo", undo_step}, {"GET", "/journal", journal}};
    for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
        rc =
            keel_service_route(&svc, routes[i].method, routes[i].pattern, routes[i].fn, &app, &msg);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "ledger: %s\n", msg.text);
        return 1;
    }
    printf("ledger %s: listening on port %d\n", app.name, keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_map_free(&app.keys, NULL);
    json_decref(app.applied);
    json_decref(app.undone);
    keel_loop_close(&loop);
    return 0;
}
