/* keel-saga - sagas stored in a keel cluster: list them, show one's log, or run a demo
 * orchestrator (src/tx/saga.c) whose three steps are small idempotent services kept in
 * keel server itself.
 *
 *   keel-saga --addr host:port[,host:port...] list [--state S] [--choreo STREAM]
 *   keel-saga --addr ... show ID
 *   keel-saga --addr ... demo [--count N] [--concurrency C] [--prefix P] [--fail-every K]
 *                             [--step-delay-ms D] [--lock-ttl-ms T] [--scan-ms S]
 *                             [--no-renew] [--http host:port,host:port,host:port]
 *                             [--compensate-limit-ms L] [--fail-charge-every K2] [--from F]
 *
 * list: one line per saga log, "ID STATE records=N", from each log's last record; --state
 *       keeps one state; --choreo STREAM lists the choreographed sagas on STREAM instead
 *       (those a deadline watcher holds: running or needs_attention). The code is `keel saga
 *       list`'s (tx/saga_view.h, tx/choreo_view.h).
 * show: the log's records, one a line: "seq time_ms type step data".
 * demo: runs sagas P-1..P-N of type "demo" (steps reserve, charge, ship), C at a time;
 *       every K-th saga's ship step is refused (a business failure), so it is compensated;
 *       every K2-th saga's charge step instead (K2 wins where both divide). The first saga
 *       started is P-F (then on, wrapping round): two demos on one prefix can start at
 *       different ends. D delays each step: the demo's own services answer after it, and
 *       with --http the kit call is made after it.
 *       A saga whose log exists is continued (a restart resumes the same run), one whose
 *       lock another owner holds is tried again after a while. It also adopts orphaned
 *       sagas like any orchestrator. Prints "end ID STATE" per saga and a summary; exits 0
 *       when all N ended. With --http the steps are kit calls (keel_saga_http_step) to
 *       three services, one per step, such as keel-example-ledger; otherwise:
 * The demo's services: step k's action with key K sets idem:K to "done" and appends the
 * saga id to demo:P:applied:<step>, in one KEEL.TXN that requires idem:K to be absent, so a
 * key is applied at most once; a repeat answers from idem:K. The compensation sets idem:K to
 * "undone" and appends to demo:P:undone:<step> if the action had applied, or leaves the
 * tombstone "undone" if it never arrived (a late action is then refused). */
#include "base/err.h"
#include "base/log.h"
#include "client/blocking.h"
#include "core/saga.h"
#include "kit/call.h"
#include "runtime/clock.h"
#include "runtime/logsink.h"
#include "tx/choreo_view.h"
#include "tx/saga.h"
#include "tx/saga_view.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAGAS_MAX 100000L

static const char *seeds[KEEL_CLIENT_SEEDS_MAX];
static size_t seeds_n;

static int parse_addrs(char *s)
{
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (seeds_n == KEEL_CLIENT_SEEDS_MAX)
            return -1;
        seeds[seeds_n++] = tok;
    }
    return seeds_n > 0 ? 0 : -1;
}

/* ---- list and show (tx/saga_view.h) ----------------------------------------------------- */

/* list [--state S] [--choreo STREAM]: `keel saga list`'s views (tx/saga_view.h,
 * tx/choreo_view.h); 2 for bad arguments. */
static int cmd_list(int argc, char **argv)
{
    const char *choreo = NULL;
    int state = -1;
    for (int i = 0; i < argc; i += 2) {
        keel_saga_state_t st;
        if (i + 1 >= argc)
            return 2;
        if (strcmp(argv[i], "--choreo") == 0 && choreo == NULL)
            choreo = argv[i + 1];
        else if (strcmp(argv[i], "--state") == 0 && state < 0 &&
                 keel_saga_state_parse(argv[i + 1], &st) == 0)
            state = (int)st;
        else
            return 2;
    }
    keel_errmsg_t msg = {{0}};
    int rc = choreo ? keel_choreo_view_list(seeds, seeds_n, choreo, state, stdout, &msg)
                    : keel_saga_view_list(seeds, seeds_n, state, stdout, &msg);
    if (rc != 0)
        fprintf(stderr, "keel-saga: %s\n", msg.text);
    return rc == 0 ? 0 : rc == KEEL_EINVAL ? 2 : 1;
}

static int cmd_show(const char *id)
{
    keel_errmsg_t msg = {{0}};
    int rc = keel_saga_view_show(seeds, seeds_n, id, stdout, &msg);
    if (rc != 0)
        fprintf(stderr, "keel-saga: %s\n", msg.text);
    return rc == 0 ? 0 : rc == KEEL_EINVAL ? 2 : 1;
}

/* ---- the demo ---------------------------------------------------------------------------- */

typedef struct demo {
    keel_loop_t loop;
    keel_sagas_t sagas;
    keel_client_t svc; /* the services' own connection */
    keel_saga_type_t type;
    keel_timer_t tick;
    const char *prefix;
    long count, concurrency, fail_every, fail_charge_every, started, ended, inflight;
    long next; /* next saga number to start */
    keel_ms_t step_delay_ms;
    long ends[KEEL_SAGA__STATES];
    uint8_t *pending; /* per saga: 0 not started, 1 running, 2 ended, 3 retry later */
    keel_ms_t *t0_ms, *lat_ms;
    long lat_n;
    keel_ms_t begin_ms;
    bool http;
    keel_caller_t callers[3];
    keel_saga_http_t steps[3];
    int callers_open;
} demo_t;

/* One service operation in progress: GETV, then a KEEL.TXN, repeated on a conflict. */
typedef struct svc_op {
    demo_t *d;
    keel_saga_call_t *call;
    keel_timer_t delay;
    char do_key[KEEL_SAGA_KEY_BYTES_MAX + 8];
    int version;
    keel_saga_outcome_t txn_out; /* the answer once the KEEL.TXN applies */
} svc_op_t;

static void op_start(svc_op_t *op);

static void op_closed(keel_timer_t *t)
{
    free(KEEL_LIST_ENTRY(t, svc_op_t, delay));
}

static void op_end(svc_op_t *op, keel_saga_outcome_t out, const char *result)
{
    keel_saga_call_done(op->call, out, result, strlen(result));
    keel_timer_close(&op->delay, op_closed);
}

static const char *step_name(const svc_op_t *op)
{
    return op->d->type.def.steps[op->call->step].name;
}

static void on_txn(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    svc_op_t *op = ctx;
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        op_end(op, KEEL_SAGA_TRANSIENT, "keel server unavailable");
        return;
    }
    if (v->type == KEEL_RESP_NIL_ARRAY) { /* the key changed meanwhile: look again */
        op_start(op);
        return;
    }
    op_end(op, op->txn_out, op->txn_out == KEEL_SAGA_OK ? "ok" : "refused");
}

static void txn(svc_op_t *op, const char *value, const char *journal)
{
    char ver[24], jkey[200], line[KEEL_SAGA_ID_BYTES_MAX + 2];
    snprintf(ver, sizeof(ver), "%d", op->version);
    snprintf(jkey, sizeof(jkey), "demo:%s:%s:%s", op->d->prefix, journal ? journal : "",
             step_name(op));
    snprintf(line, sizeof(line), "%s\n", op->call->saga_id);
    const char *argv[] = {"KEEL.TXN", "1",   op->do_key, ver,   journal ? "2" : "1",
                          "3",        "SET", op->do_key, value, "3",
                          "APPEND",   jkey,  line};
    size_t argc = journal ? 13 : 9;
    if (keel_client_command(&op->d->svc, argc, argv, NULL, on_txn, op) != 0)
        op_end(op, KEEL_SAGA_TRANSIENT, "busy");
}

static bool input_fails(const svc_op_t *op)
{
    char want[32];
    snprintf(want, sizeof(want), "fail=%s", step_name(op));
    return op->call->input_len == strlen(want) && memcmp(op->call->input, want, strlen(want)) == 0;
}

static void on_getv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    svc_op_t *op = ctx;
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        op_end(op, KEEL_SAGA_TRANSIENT, "keel server unavailable");
        return;
    }
    const char *state = NULL;
    size_t state_len = 0;
    op->version = 0;
    if (v->type == KEEL_RESP_ARRAY && v->elems_len == 2) {
        state = (const char *)v->elems[0].str.ptr;
        state_len = v->elems[0].str.len;
        op->version = (int)v->elems[1].integer;
    }
#define IS(s) (state_len == strlen(s) && memcmp(state, s, state_len) == 0)
    op->txn_out = KEEL_SAGA_OK;
    if (!op->call->undo) {
        if (state == NULL && input_fails(op)) {
            op->txn_out = KEEL_SAGA_BUSINESS;
            txn(op, "rejected", NULL);
        } else if (state == NULL)
            txn(op, "done", "applied");
        else if (IS("done"))
            op_end(op, KEEL_SAGA_OK, "ok"); /* a repeat: the first answer */
        else
            op_end(op, KEEL_SAGA_BUSINESS, IS("rejected") ? "refused" : "cancelled");
        return;
    }
    if (state == NULL)
        txn(op, "undone", NULL); /* never arrived: a tombstone refuses it later */
    else if (IS("done"))
        txn(op, "undone", "undone");
    else
        op_end(op, KEEL_SAGA_OK, "ok"); /* undone already, or it never applied */
#undef IS
}

static void op_start(svc_op_t *op)
{
    const char *argv[] = {"KEEL.GETV", op->do_key};
    if (keel_client_command(&op->d->svc, 2, argv, NULL, on_getv, op) != 0)
        op_end(op, KEEL_SAGA_TRANSIENT, "busy");
}

static void op_delayed(keel_timer_t *t, void *data)
{
    op_start(data);
}

static void demo_step(keel_saga_call_t *call, void *data)
{
    demo_t *d = data;
    svc_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        keel_saga_call_done(call, KEEL_SAGA_TRANSIENT, NULL, 0);
        return;
    }
    op->d = d;
    op->call = call;
    /* the compensation works on the action's key: "<id>:<step>:undo" -> "...:do" */
    snprintf(op->do_key, sizeof(op->do_key), "idem:%s", call->key);
    size_t n = strlen(op->do_key);
    if (call->undo && n > 4 && strcmp(op->do_key + n - 4, "undo") == 0)
        memcpy(op->do_key + n - 4, "do", 3);
    keel_timer_init(&d->loop, &op->delay);
    keel_timer_start(&op->delay, d->step_delay_ms, 0, op_delayed, op);
}

/* --http with --step-delay-ms: the kit call is made after the delay (a slower service). */
typedef struct http_delay {
    keel_saga_call_t *call;
    keel_saga_http_t *step;
    keel_timer_t delay;
} http_delay_t;

static void http_delay_closed(keel_timer_t *t)
{
    free(KEEL_LIST_ENTRY(t, http_delay_t, delay));
}

static void http_delayed(keel_timer_t *t, void *data)
{
    http_delay_t *h = data;
    if (h->call->undo)
        keel_saga_http_undo(h->call, h->step);
    else
        keel_saga_http_step(h->call, h->step);
    keel_timer_close(&h->delay, http_delay_closed);
}

static void demo_http_step(keel_saga_call_t *call, void *data)
{
    demo_t *d = data;
    keel_saga_http_t *step = &d->steps[call->step];
    http_delay_t *h = d->step_delay_ms > 0 ? calloc(1, sizeof(*h)) : NULL;
    if (h == NULL) {
        if (call->undo)
            keel_saga_http_undo(call, step);
        else
            keel_saga_http_step(call, step);
        return;
    }
    h->call = call;
    h->step = step;
    keel_timer_init(&d->loop, &h->delay);
    keel_timer_start(&h->delay, d->step_delay_ms, 0, http_delayed, h);
}

static void demo_fill(demo_t *d);

static long saga_index(const demo_t *d, const char *id)
{
    size_t p = strlen(d->prefix);
    if (strncmp(id, d->prefix, p) != 0 || id[p] != '-')
        return -1;
    long i = strtol(id + p + 1, NULL, 10);
    return i >= 1 && i <= d->count ? i - 1 : -1;
}

static void caller_closed(keel_caller_t *c, void *data)
{
    demo_t *d = data;
    d->callers_open--;
}

static void closed_all(keel_sagas_t *o)
{
    demo_t *d = KEEL_LIST_ENTRY(o, demo_t, sagas);
    keel_client_close(&d->svc, NULL);
    for (int i = 0; i < 3 && d->http; i++)
        keel_caller_close(&d->callers[i], caller_closed, d);
}

static int cmp_ms(const void *a, const void *b)
{
    keel_ms_t x = *(const keel_ms_t *)a, y = *(const keel_ms_t *)b;
    return x < y ? -1 : x > y;
}

static void summary(demo_t *d)
{
    keel_ms_t took = keel_clock_now_ms() - d->begin_ms;
    qsort(d->lat_ms, (size_t)d->lat_n, sizeof(keel_ms_t), cmp_ms);
    keel_ms_t p50 = d->lat_n ? d->lat_ms[d->lat_n / 2] : 0;
    keel_ms_t p99 =
        d->lat_n
            ? d->lat_ms[(d->lat_n * 99) / 100 < d->lat_n ? (d->lat_n * 99) / 100 : d->lat_n - 1]
            : 0;
    const keel_sagas_stats_t *s = &d->sagas.stats;
    printf(
        "summary done %ld compensated %ld needs_attention %ld in %" PRId64
        " ms (%.1f/s); latency p50 %" PRId64 " ms p99 %" PRId64 " ms over %ld; log writes %" PRIu64
        " (mean %.2f ms, retried %" PRIu64 "), fenced %" PRIu64 ", adopted %" PRIu64
        ", renewals %" PRIu64 "\n",
        d->ends[KEEL_SAGA_DONE], d->ends[KEEL_SAGA_COMPENSATED], d->ends[KEEL_SAGA_NEEDS_ATTENTION],
        took, took > 0 ? (double)d->ended * 1000.0 / (double)took : 0.0, p50, p99, d->lat_n,
        s->log_writes, s->log_writes ? (double)s->log_write_ns / (double)s->log_writes / 1e6 : 0.0,
        s->log_write_retries, s->fenced, s->adopted, s->renewals);
    fflush(stdout);
}

static void on_end(keel_sagas_t *o, const char *id, int err, keel_saga_state_t st, void *data)
{
    demo_t *d = data;
    long i = saga_index(d, id);
    if (i < 0 || d->pending[i] == 2)
        return; /* not ours, or counted already */
    if (d->pending[i] == 1)
        d->inflight--;
    if (err != 0) { /* owned elsewhere for now (a dead owner's lock): later */
        d->pending[i] = 3;
        return;
    }
    d->pending[i] = 2;
    d->ended++;
    d->ends[st]++;
    if (d->t0_ms[i] > 0)
        d->lat_ms[d->lat_n++] = keel_clock_now_ms() - d->t0_ms[i];
    printf("end %s %s\n", id, keel_saga_state_name(st));
    fflush(stdout);
    if (d->ended == d->count) {
        summary(d);
        keel_timer_close(&d->tick, NULL);
        keel_sagas_close(&d->sagas, closed_all);
        return;
    }
    demo_fill(d);
}

/* Starts sagas until `concurrency` run; ones refused for now are retried by the tick. */
static void demo_fill(demo_t *d)
{
    for (long k = 0; k < d->count && d->inflight < d->concurrency; k++) {
        long i = (d->next + k) % d->count;
        if (d->pending[i] != 0)
            continue;
        char id[KEEL_SAGA_ID_BYTES_MAX + 1], input[32] = "";
        snprintf(id, sizeof(id), "%s-%ld", d->prefix, i + 1);
        if (d->fail_charge_every > 0 && (i + 1) % d->fail_charge_every == 0)
            snprintf(input, sizeof(input), "fail=charge");
        else if (d->fail_every > 0 && (i + 1) % d->fail_every == 0)
            snprintf(input, sizeof(input), "fail=ship");
        int rc = keel_sagas_start(&d->sagas, "demo", id, input, strlen(input), NULL, NULL);
        if (rc == KEEL_EEXISTS) { /* a start of it runs here already: it will end here */
            d->pending[i] = 1;
            d->inflight++;
            continue;
        }
        if (rc != 0)
            break;
        if (d->t0_ms[i] == 0)
            d->t0_ms[i] = keel_clock_now_ms();
        d->pending[i] = 1;
        d->inflight++;
        d->next = i + 1;
    }
}

static void demo_tick(keel_timer_t *t, void *data)
{
    demo_t *d = data;
    for (long i = 0; i < d->count; i++)
        if (d->pending[i] == 3)
            d->pending[i] = 0;
    demo_fill(d);
}

typedef struct demo_opts {
    keel_ms_t ttl_ms, scan_ms, compensate_limit_ms;
    bool renew;
    char *http; /* three endpoints, or NULL */
} demo_opts_t;

/* The demo's flags into d and opts; false on a bad flag or value. */
static bool demo_parse(demo_t *d, demo_opts_t *opts, int argc, char **argv)
{
    d->prefix = "demo";
    d->count = 100;
    d->concurrency = 10;
    *opts =
        (demo_opts_t){.ttl_ms = 3000, .scan_ms = 500, .compensate_limit_ms = 60000, .renew = true};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-renew") == 0) {
            opts->renew = false;
            continue;
        }
        if (v == NULL)
            return false;
        if (strcmp(a, "--count") == 0)
            d->count = strtol(v, NULL, 10);
        else if (strcmp(a, "--concurrency") == 0)
            d->concurrency = strtol(v, NULL, 10);
        else if (strcmp(a, "--prefix") == 0)
            d->prefix = v;
        else if (strcmp(a, "--fail-every") == 0)
            d->fail_every = strtol(v, NULL, 10);
        else if (strcmp(a, "--fail-charge-every") == 0)
            d->fail_charge_every = strtol(v, NULL, 10);
        else if (strcmp(a, "--from") == 0)
            d->next = strtol(v, NULL, 10) - 1;
        else if (strcmp(a, "--step-delay-ms") == 0)
            d->step_delay_ms = strtol(v, NULL, 10);
        else if (strcmp(a, "--lock-ttl-ms") == 0)
            opts->ttl_ms = strtol(v, NULL, 10);
        else if (strcmp(a, "--scan-ms") == 0)
            opts->scan_ms = strtol(v, NULL, 10);
        else if (strcmp(a, "--http") == 0)
            opts->http = argv[i + 1];
        else if (strcmp(a, "--compensate-limit-ms") == 0)
            opts->compensate_limit_ms = strtol(v, NULL, 10);
        else
            return false;
        i++;
    }
    return d->count >= 1 && d->count <= SAGAS_MAX && d->concurrency >= 1 && d->step_delay_ms >= 0 &&
           d->next >= 0 && d->next < d->count && keel_saga_id_valid(d->prefix, 32);
}

/* The saga type "demo": steps reserve, charge, ship, as local services in keel server or as
 * kit calls to the three endpoints in http. 0, 1 (an error said), or 2 (bad endpoints). */
static int demo_type(demo_t *d, const demo_opts_t *opts, keel_errmsg_t *msg)
{
    keel_saga_def_default(&d->type.def, "demo");
    static const char *const names[] = {"reserve", "charge", "ship"};
    char *eps[3] = {NULL, NULL, NULL}, *http = opts->http;
    if (http) {
        d->http = true;
        for (int i = 0; i < 3; i++)
            if ((eps[i] = strtok(i == 0 ? http : NULL, ",")) == NULL)
                return 2;
    }
    for (int i = 0; i < 3; i++) {
        if (d->http) {
            keel_caller_config_t kc = keel_caller_config_default(names[i]);
            kc.endpoints = eps[i];
            kc.seed = (uint64_t)keel_clock_now_ns() + (uint64_t)i;
            if (keel_caller_init(&d->callers[i], &d->loop, &kc, NULL, msg) != 0) {
                fprintf(stderr, "keel-saga: %s\n", msg->text);
                return 1;
            }
            d->callers_open++;
            /* one caller for the action and the compensation, on purpose: the system test
             * shows the breaker they share (docs/tx.md) */
            d->steps[i] = (keel_saga_http_t){&d->callers[i], "/do", "/undo", NULL};
            keel_saga_type_step(&d->type, names[i], demo_http_step, demo_http_step, d);
        } else {
            keel_saga_type_step(&d->type, names[i], demo_step, demo_step, d);
        }
        d->type.def.steps[i].timeout_ms = 2000 + d->step_delay_ms;
        d->type.def.steps[i].attempts_max = 5;
    }
    d->type.def.compensate_limit_ms = opts->compensate_limit_ms;
    return 0;
}

static int cmd_demo(int argc, char **argv)
{
    static demo_t d;
    demo_opts_t opts;
    if (!demo_parse(&d, &opts, argc, argv))
        return 2;
    d.pending = calloc((size_t)d.count, 1);
    d.t0_ms = calloc((size_t)d.count, sizeof(keel_ms_t));
    d.lat_ms = calloc((size_t)d.count, sizeof(keel_ms_t));
    if (!d.pending || !d.t0_ms || !d.lat_ms)
        return 1;
    keel_errmsg_t msg = {{0}};
    keel_logsink_init_stderr(NULL);
    if (keel_loop_init(&d.loop) != 0)
        return 1;
    int rc = demo_type(&d, &opts, &msg);
    if (rc != 0)
        return rc;
    keel_client_config_t cc = keel_client_config_default();
    for (size_t i = 0; i < seeds_n; i++)
        cc.seeds[i] = seeds[i];
    cc.seeds_n = seeds_n;
    cc.request_timeout_ms = 2000;
    keel_sagas_config_t sc = keel_sagas_config_default();
    for (size_t i = 0; i < seeds_n; i++)
        sc.seeds[i] = seeds[i];
    sc.seeds_n = seeds_n;
    sc.lock_ttl_ms = opts.ttl_ms;
    sc.scan_interval_ms = opts.scan_ms;
    sc.renew_lock = opts.renew;
    sc.runs_max = (uint32_t)(d.concurrency * 2 + 64);
    sc.seed = (uint64_t)keel_clock_now_ns();
    sc.on_end = on_end;
    sc.on_end_data = &d;
    if (keel_client_init(&d.svc, &d.loop, &cc, &msg) != 0 ||
        keel_sagas_init(&d.sagas, &d.loop, &sc, &msg) != 0 ||
        keel_sagas_register(&d.sagas, &d.type, &msg) != 0) {
        fprintf(stderr, "keel-saga: %s\n", msg.text);
        return 1;
    }
    keel_timer_init(&d.loop, &d.tick);
    keel_timer_start(&d.tick, 200, 200, demo_tick, &d);
    d.begin_ms = keel_clock_now_ms();
    printf("demo running %ld sagas\n", d.count);
    fflush(stdout);
    demo_fill(&d);
    keel_loop_run(&d.loop);
    keel_loop_close(&d.loop);
    free(d.pending);
    free(d.t0_ms);
    free(d.lat_ms);
    return d.ended == d.count ? 0 : 1;
}

int main(int argc, char **argv)
{
    int i = 1;
    if (argc >= 3 && strcmp(argv[1], "--addr") == 0) {
        if (parse_addrs(argv[2]) != 0)
            goto usage;
        i = 3;
    }
    if (seeds_n == 0 || i >= argc)
        goto usage;
    if (strcmp(argv[i], "list") == 0) {
        int rc = cmd_list(argc - i - 1, argv + i + 1);
        if (rc != 2)
            return rc;
    }
    if (strcmp(argv[i], "show") == 0 && argc == i + 2)
        return cmd_show(argv[i + 1]);
    if (strcmp(argv[i], "demo") == 0) {
        int rc = cmd_demo(argc - i - 1, argv + i + 1);
        if (rc != 2)
            return rc;
    }
usage:
    fprintf(stderr, "usage: keel-saga --addr host:port[,host:port...] (list [--state S] "
                    "[--choreo STREAM] | show ID | demo "
                    "[--count N] [--concurrency C] [--prefix P] [--fail-every K] "
                    "[--step-delay-ms D] [--lock-ttl-ms T] [--scan-ms S] [--no-renew] "
                    "[--http host:port,host:port,host:port] [--compensate-limit-ms L] "
                    "[--fail-charge-every K2] [--from F])\n");
    return 2;
}
