/* keel-call - calls a service by name through the kit's outbound caller (src/kit/call.c):
 * discovery from keel server's registry (or a static list), a balancer, a breaker per
 * instance, retries with backoff inside a deadline. A tool to watch those policies work.
 *
 *   keel-call (--registry host:port,... | --endpoints host:port,...) SERVICE METHOD PATH
 *             [--count N] [--rate calls/s] [--timeout ms]
 *
 * Sends N calls (default 1) at a fixed rate (default 100/s), then prints one line per
 * outcome, "status 200: 97" or "error timed out: 3", and a last line "ok N failed M".
 * Exits 0 when every call got a 2xx..4xx answer. */
#include "base/err.h"
#include "kit/call.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALLS_MAX 10000000L
#define OUTCOMES_MAX 64

typedef struct run {
    keel_loop_t loop;
    keel_caller_t caller;
    keel_timer_t tick;
    const char *path;
    const char *request_id; /* sent as X-Request-Id; NULL: none */
    int method;
    long count, sent, done, ok;
    keel_ms_t timeout_ms, every_ms, t0;
    struct {
        int code; /* an HTTP status, or a negative KEEL_E* */
        long n;
    } outcomes[OUTCOMES_MAX];
    int outcomes_n;
} run_t;

static void count_outcome(run_t *r, int code)
{
    for (int i = 0; i < r->outcomes_n; i++)
        if (r->outcomes[i].code == code) {
            r->outcomes[i].n++;
            return;
        }
    if (r->outcomes_n < OUTCOMES_MAX)
        r->outcomes[r->outcomes_n++] = (typeof(r->outcomes[0])){code, 1};
}

static void closed(keel_caller_t *c, void *data)
{
    (void)c;
    (void)data;
}

static void on_call(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    r->done++;
    if (err == 0 && resp->status < 500)
        r->ok++;
    count_outcome(r, err != 0 ? err : resp->status);
    if (r->done == r->count) {
        keel_timer_close(&r->tick, NULL);
        keel_caller_close(&r->caller, closed, r);
    }
}

static void send_due(keel_timer_t *t, void *data)
{
    (void)t;
    run_t *r = data;
    keel_ms_t now = keel_loop_now_ms(&r->loop);
    if (r->sent == 0) { /* with a registry, wait (up to 2 s) for its first answer */
        if (keel_caller_instances(&r->caller, NULL) == 0 && now - r->t0 < 2000)
            return;
        r->t0 = now;
    }
    long due = r->every_ms > 0 ? (long)((now - r->t0) / r->every_ms) + 1 : r->count;
    while (r->sent < r->count && r->sent < due) {
        keel_call_t c = {.method = r->method,
                         .target = r->path,
                         .deadline_ms = now + r->timeout_ms,
                         .request_id = r->request_id};
        r->sent++;
        int rc = keel_caller_call(&r->caller, &c, on_call, r);
        if (rc != 0)
            on_call(rc, NULL, r);
    }
    if (r->sent == r->count)
        keel_timer_stop(&r->tick);
}

static int method_of(const char *s)
{
    static const struct {
        const char *name;
        int m;
    } ms[] = {{"GET", HTTP_GET},   {"PUT", HTTP_PUT},       {"POST", HTTP_POST},
              {"HEAD", HTTP_HEAD}, {"DELETE", HTTP_DELETE}, {"PATCH", HTTP_PATCH}};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
        if (strcmp(s, ms[i].name) == 0)
            return ms[i].m;
    return -1;
}

int main(int argc, char **argv)
{
    static run_t r;
    const char *registry = NULL, *endpoints = NULL, *pos[3] = {0};
    int npos = 0;
    long rate = 100, timeout = 2000;
    r.count = 1;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--registry") == 0 && v)
            registry = argv[++i];
        else if (strcmp(a, "--endpoints") == 0 && v)
            endpoints = argv[++i];
        else if (strcmp(a, "--count") == 0 && v)
            r.count = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--rate") == 0 && v)
            rate = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--request-id") == 0 && v)
            r.request_id = argv[++i];
        else if (strcmp(a, "--timeout") == 0 && v)
            timeout = strtol(argv[++i], NULL, 10);
        else if (a[0] != '-' && npos < 3)
            pos[npos++] = a;
        else
            bad = true;
    }
    r.method = npos == 3 ? method_of(pos[1]) : -1;
    if (bad || npos != 3 || (registry == NULL) == (endpoints == NULL) || r.method < 0 ||
        pos[2][0] != '/' || r.count < 1 || r.count > CALLS_MAX || rate < 1 || rate > 1000000 ||
        timeout < 1 || timeout > KEEL_CALLER_TIMEOUT_MS_MAX) {
        fprintf(stderr,
                "usage: keel-call (--registry host:port,... | --endpoints "
                "host:port,...) SERVICE METHOD /path [--count 1..%ld] [--rate "
                "calls/s] [--timeout ms] [--request-id ID]\n",
                CALLS_MAX);
        return 2;
    }
    r.path = pos[2];
    r.timeout_ms = timeout;
    r.every_ms = rate >= 1000 ? 0 : 1000 / rate;
    keel_errmsg_t msg = {{0}};
    if (keel_loop_init(&r.loop) != 0)
        return 1;
    keel_caller_config_t cfg = keel_caller_config_default(pos[0]);
    cfg.registry = registry;
    cfg.endpoints = endpoints;
    if (keel_caller_init(&r.caller, &r.loop, &cfg, NULL, &msg) != 0) {
        fprintf(stderr, "keel-call: %s\n", msg.text);
        return 1;
    }
    keel_timer_init(&r.loop, &r.tick);
    r.t0 = keel_loop_now_ms(&r.loop);
    keel_timer_start(&r.tick, 0, r.every_ms > 0 ? r.every_ms : 1, send_due, &r);
    keel_loop_run(&r.loop);
    keel_loop_close(&r.loop);
    for (int i = 0; i < r.outcomes_n; i++) {
        if (r.outcomes[i].code >= 0)
            printf("status %d: %ld\n", r.outcomes[i].code, r.outcomes[i].n);
        else
            printf("error %s: %ld\n", keel_strerror(r.outcomes[i].code), r.outcomes[i].n);
    }
    printf("ok %ld failed %ld\n", r.ok, r.done - r.ok);
    return r.ok == r.count ? 0 : 1;
}
