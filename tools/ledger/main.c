/* keel-ledger - bank accounts on the event store (tx/evstore) and an account-balances read
 * model kept by a projection (tx/projection): the tool the projection kill test drives.
 *
 * --server takes one address or several, comma-separated (a cluster's nodes).
 *
 * keel-ledger append --server host:port [--accounts N] [--events N] [--poison-every K]
 *         [--inflight N] [--rate events/s] [--hints N] [--seed S] [--prefix acct]
 *     appends N Deposited/Withdrawn events (amounts 1..100) to accounts <prefix>-0..,
 *     each at the version it last saw (a conflict: the named version, then again), with
 *     one type "Poison" event every K; prints "appended N conflicts C one-trip H" (H:
 *     appends that skipped the version read) and exits 0.
 * keel-ledger project --server host:port --db PATH [--name balances] [--batch N]
 *         [--apply-delay-us U] [--rebuild] [--metrics-file F] [--category acct]
 *         [--listen host:port]
 *     runs the projection of es:$ce-<category> into the table
 *     balances(account, balance, events, last_version) until SIGTERM; prints
 *     "projecting" once started, and the metrics into F every 200 ms. With --listen it
 *     is also a kit service: GET /balances/:account (the read side), /metrics (the
 *     projection's lag among them), /health/ready.
 * keel-ledger load --server host:port --account A [--snapshot-every N]
 *     folds one account from the event store (from its snapshot) and prints
 *     "version V balance B".
 */
#include "base/err.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "client/client.h"
#include "kit/service.h"
#include "runtime/logsink.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"
#include "tx/evstore.h"
#include "tx/projection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACCOUNTS_MAX 1000
#define EVENTS_MAX 10000000L

typedef struct opts {
    const char *server, *db, *name, *metrics_file, *account, *prefix, *category, *listen;
    long accounts, events, poison_every, inflight, batch, delay_us, snapshot_every, rate, hints;
    uint64_t seed;
    int rebuild;
} opts_t;

/* --server a,b,c into seeds (pointers into buf, which must outlive them). */
static size_t split_seeds(const char *list, char *buf, size_t cap, const char **seeds)
{
    snprintf(buf, cap, "%s", list);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < KEEL_CLIENT_SEEDS_MAX;
         t = strtok_r(NULL, ",", &save))
        seeds[n++] = t;
    return n;
}

/* ---- append ------------------------------------------------------------------------------- */

typedef struct appender appender_t;
typedef struct slot { /* one account's append in flight: the callback's context */
    appender_t *a;
    int acct;
} slot_t;

struct appender {
    keel_loop_t loop;
    keel_client_t cl;
    keel_es_t es;
    keel_rand_t rand;
    keel_timer_t pace; /* with --rate: releases appends as time passes */
    keel_ms_t t0_ms;
    opts_t *o;
    long started, done, conflicts, failed;
    uint64_t version[ACCOUNTS_MAX];
    bool busy[ACCOUNTS_MAX];
    slot_t slot[ACCOUNTS_MAX];
    char data[ACCOUNTS_MAX][32];
};

static void next_append(appender_t *a);

static void finish(appender_t *a)
{
    if (a->o->rate > 0)
        keel_timer_close(&a->pace, NULL);
    keel_client_close(&a->cl, NULL);
}

static void on_appended(keel_es_t *es, void *ctx, int err, uint64_t version, const char *msg)
{
    (void)es;
    slot_t *slot = ctx;
    appender_t *a = slot->a;
    int acct = slot->acct;
    a->busy[acct] = false;
    if (err == 0) {
        a->done++;
        a->version[acct] = version;
    } else if (err == KEEL_ECONFLICT) {
        a->conflicts++;
        a->version[acct] = version;
        a->started--; /* that event goes again */
    } else {
        fprintf(stderr, "keel-ledger: append: %s %s\n", keel_err_name(err), msg);
        a->failed++;
        a->started--;
        if (a->failed > 10000) /* a lost node costs a few; this is no cluster at all */
            return finish(a);
    }
    next_append(a);
}

static void next_append(appender_t *a)
{
    opts_t *o = a->o;
    long allowed = o->events;
    if (o->rate > 0) {
        keel_ms_t ms = keel_loop_now_ms(&a->loop) - a->t0_ms;
        allowed = (long)((ms * (keel_ms_t)o->rate) / 1000) + 1;
        allowed = allowed < o->events ? allowed : o->events;
    }
    while (a->started < allowed && keel_es_pending(&a->es) < (uint32_t)o->inflight) {
        int acct = (int)keel_rand_below(&a->rand, (uint64_t)o->accounts);
        if (a->busy[acct]) {
            int free_one = -1;
            for (int i = 0; i < o->accounts && free_one < 0; i++)
                free_one = a->busy[i] ? -1 : i;
            if (free_one < 0)
                return;
            acct = free_one;
        }
        char agg[64];
        snprintf(agg, sizeof(agg), "%s-%d", o->prefix, acct);
        long n = a->started + 1;
        const char *type = (o->poison_every > 0 && n % o->poison_every == 0) ? "Poison"
                           : keel_rand_below(&a->rand, 3) == 0               ? "Withdrawn"
                                                                             : "Deposited";
        snprintf(a->data[acct], sizeof(a->data[acct]), "%d",
                 1 + (int)keel_rand_below(&a->rand, 100));
        char meta[48];
        snprintf(meta, sizeof(meta), "corr=%ld", n);
        keel_es_event_t ev = {.type = type,
                              .type_len = strlen(type),
                              .data = (const uint8_t *)a->data[acct],
                              .data_len = strlen(a->data[acct]),
                              .meta = (const uint8_t *)meta,
                              .meta_len = strlen(meta)};
        a->busy[acct] = true;
        a->started++;
        if (keel_es_append(&a->es, agg, a->version[acct], &ev, 1, on_appended, &a->slot[acct]) !=
            0) {
            fprintf(stderr, "keel-ledger: could not queue an append\n");
            a->busy[acct] = false;
            a->started--;
            return;
        }
    }
    if (a->done == o->events && keel_es_pending(&a->es) == 0)
        finish(a);
}

static void on_pace(keel_timer_t *t, void *data)
{
    (void)t;
    next_append(data);
}

static int run_append(opts_t *o)
{
    static appender_t a;
    a.o = o;
    keel_rand_seed(&a.rand, o->seed);
    for (int i = 0; i < ACCOUNTS_MAX; i++)
        a.slot[i] = (slot_t){&a, i};
    keel_errmsg_t msg = {{0}};
    keel_client_config_t cfg = keel_client_config_default();
    char seeds_buf[1024];
    cfg.seeds_n = split_seeds(o->server, seeds_buf, sizeof(seeds_buf), cfg.seeds);
    if (keel_loop_init(&a.loop) != 0 || keel_client_init(&a.cl, &a.loop, &cfg, &msg) != 0) {
        fprintf(stderr, "keel-ledger: %s\n", msg.text);
        return 1;
    }
    keel_es_config_t ecfg = keel_es_config_default();
    ecfg.hints_max = (uint32_t)o->hints;
    if (keel_es_init(&a.es, &a.cl, &ecfg) != 0)
        return 1;
    /* start each account at its current version (a second run goes on where one stopped) */
    for (long i = 0; i < o->accounts; i++)
        a.version[i] = KEEL_ES_ANY;
    a.t0_ms = keel_loop_now_ms(&a.loop);
    if (o->rate > 0) {
        keel_timer_init(&a.loop, &a.pace);
        keel_timer_start(&a.pace, 10, 10, on_pace, &a);
    }
    next_append(&a);
    keel_loop_run(&a.loop);
    keel_loop_close(&a.loop);
    keel_es_free(&a.es);
    printf("appended %ld conflicts %ld one-trip %llu\n", a.done, a.conflicts,
           (unsigned long long)a.es.stats.appends_hinted);
    fflush(stdout);
    return a.done == o->events ? 0 : 1;
}

/* ---- project ------------------------------------------------------------------------------ */

typedef struct projector {
    keel_loop_t loop;
    keel_db_t db;
    keel_projection_t p;
    keel_metrics_t *metrics; /* the service's with --listen, else our own */
    keel_service_t svc;
    bool serving;
    keel_timer_t tick;
    opts_t *o;
} projector_t;

static int balances_init(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(db,
                        "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY,"
                        " balance INTEGER NOT NULL, events INTEGER NOT NULL,"
                        " last_version INTEGER NOT NULL)",
                        msg);
}

static int balances_reset(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(db, "DROP TABLE IF EXISTS balances", msg);
}

static int64_t last_version_of(keel_db_t *db, const keel_projection_event_t *ev)
{
    sqlite3_stmt *st;
    if (keel_db_prepare(db, "SELECT last_version FROM balances WHERE account = ?", &st, NULL) != 0)
        return -1;
    sqlite3_bind_text(st, 1, ev->agg, (int)ev->agg_len, SQLITE_TRANSIENT);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return v;
}

/* Deposited +amount, Withdrawn -amount; anything else fails (dead-lettered). An account's
 * events must come in version order: an old version here would be a double apply. */
static int balances_apply(void *data, keel_db_t *db, const keel_projection_event_t *ev,
                          keel_errmsg_t *msg)
{
    projector_t *pr = data;
    if (pr->o->delay_us > 0)
        usleep((useconds_t)pr->o->delay_us);
    int sign = 0;
    if (ev->ev.type_len == 9 && memcmp(ev->ev.type, "Deposited", 9) == 0)
        sign = 1;
    else if (ev->ev.type_len == 9 && memcmp(ev->ev.type, "Withdrawn", 9) == 0)
        sign = -1;
    else
        return keel_errf(msg, KEEL_EINVAL, "unknown event type %.*s", (int)ev->ev.type_len,
                         ev->ev.type);
    int64_t last = last_version_of(db, ev);
    if (last < 0)
        return keel_errf(msg, KEEL_EIO, "reading balances failed");
    if ((int64_t)ev->ev.version <= last)
        return keel_errf(msg, KEEL_EINVAL, "version %llu of %.*s after %lld: applied twice?",
                         (unsigned long long)ev->ev.version, (int)ev->agg_len, ev->agg,
                         (long long)last);
    char amount[24];
    snprintf(amount, sizeof(amount), "%.*s", (int)(ev->ev.data_len < 20 ? ev->ev.data_len : 20),
             (const char *)ev->ev.data);
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "INSERT INTO balances VALUES (?1, ?2, 1, ?3) ON CONFLICT(account)"
                             " DO UPDATE SET balance = balance + ?2, events = events + 1,"
                             " last_version = ?3",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, ev->agg, (int)ev->agg_len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, sign * atoll(amount));
    sqlite3_bind_int64(st, 3, (int64_t)ev->ev.version);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "balances", msg);
}

static void write_metrics(keel_timer_t *t, void *data)
{
    (void)t;
    projector_t *pr = data;
    if (pr->o->metrics_file == NULL)
        return;
    keel_buf_t out;
    keel_buf_init(&out, 0);
    char ck[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    keel_stream_id_format(ck, keel_projection_checkpoint(&pr->p));
    if (keel_metrics_render(pr->metrics, &out) == 0 &&
        keel_buf_printf(&out, "# checkpoint %s\n", ck) == 0) {
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", pr->o->metrics_file);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fwrite(keel_buf_rptr(&out), 1, keel_buf_unread(&out), f);
            fclose(f);
            rename(tmp, pr->o->metrics_file);
        }
    }
    keel_buf_free(&out);
}

/* GET /balances/:account - the read side: {"account", "balance", "events", "version"}. */
static void get_balance(keel_service_req_t *r, void *data)
{
    projector_t *pr = data;
    const keel_route_param_t *acct = &r->route.params[0];
    sqlite3_stmt *st;
    if (keel_db_prepare(&pr->db,
                        "SELECT balance, events, last_version FROM balances WHERE account = ?", &st,
                        NULL) != 0) {
        keel_http_respond_error(r->http, 503, "read model not ready");
        return;
    }
    sqlite3_bind_text(st, 1, acct->value, (int)acct->value_len, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        keel_http_respond_error(r->http, 404, "no such account");
        return;
    }
    json_t *o = json_pack("{s:s%, s:I, s:I, s:I}", "account", acct->value, acct->value_len,
                          "balance", (json_int_t)sqlite3_column_int64(st, 0), "events",
                          (json_int_t)sqlite3_column_int64(st, 1), "version",
                          (json_int_t)sqlite3_column_int64(st, 2));
    sqlite3_finalize(st);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static int serve(projector_t *pr, keel_errmsg_t *msg)
{
    keel_service_config_t cfg = keel_service_config_default("ledger");
    cfg.listen = pr->o->listen;
    int rc = keel_service_init(&pr->svc, &pr->loop, &cfg, msg);
    if (rc == 0)
        rc = keel_service_route(&pr->svc, "GET", "/balances/:account", get_balance, pr, msg);
    if (rc == 0)
        rc = keel_service_start(&pr->svc, msg);
    if (rc == 0) {
        pr->serving = true;
        printf("listening on port %d\n", keel_service_port(&pr->svc));
    }
    return rc;
}

static void on_projection_closed(keel_projection_t *p, void *data)
{
    (void)p;
    (void)data;
}

static void stop_projector(void *data)
{
    projector_t *pr = data;
    write_metrics(&pr->tick, pr);
    keel_timer_close(&pr->tick, NULL);
    keel_projection_stop(&pr->p, on_projection_closed, pr);
}

static int run_project(opts_t *o)
{
    static projector_t pr;
    pr.o = o;
    keel_errmsg_t msg = {{0}};
    if (keel_loop_init(&pr.loop) != 0 || keel_loop_handle_signals(&pr.loop) != 0)
        return 1;
    if (keel_db_open(&pr.db, o->db, &msg) != 0) {
        fprintf(stderr, "keel-ledger: %s\n", msg.text);
        return 1;
    }
    if (o->listen && serve(&pr, &msg) != 0) {
        fprintf(stderr, "keel-ledger: %s\n", msg.text);
        return 1;
    }
    pr.metrics = pr.serving ? pr.svc.metrics : keel_metrics_new();
    char stream[KEEL_PROJECTION_KEY_BYTES_MAX];
    keel_es_category_key(stream, sizeof(stream), o->category);
    keel_projection_config_t cfg = keel_projection_config_default();
    cfg.name = o->name;
    cfg.stream = stream;
    char seeds_buf[1024];
    cfg.seeds_n = split_seeds(o->server, seeds_buf, sizeof(seeds_buf), cfg.seeds);
    cfg.batch_events_max = (uint32_t)o->batch;
    cfg.metrics = pr.metrics;
    cfg.block_ms = 500;
    keel_projection_handler_t h = {
        .init = balances_init, .reset = balances_reset, .apply = balances_apply, .data = &pr};
    if (keel_projection_start(&pr.p, &pr.loop, &cfg, &pr.db, &h, &msg) != 0) {
        fprintf(stderr, "keel-ledger: %s\n", msg.text);
        return 1;
    }
    if (o->rebuild)
        keel_projection_rebuild(&pr.p);
    keel_timer_init(&pr.loop, &pr.tick);
    keel_timer_start(&pr.tick, 0, 200, write_metrics, &pr);
    keel_loop_on_shutdown(&pr.loop, stop_projector, &pr);
    printf("projecting %s from %s\n", o->name, stream);
    fflush(stdout);
    keel_loop_run(&pr.loop);
    keel_loop_close(&pr.loop);
    const keel_projection_stats_t *s = keel_projection_stats(&pr.p);
    printf("applied %llu dead %llu restarts %llu gaps %llu\n", (unsigned long long)s->applied,
           (unsigned long long)s->dead, (unsigned long long)s->restarts,
           (unsigned long long)s->gaps);
    if (pr.serving)
        keel_service_free(&pr.svc);
    else
        keel_metrics_free(pr.metrics);
    keel_db_close(&pr.db);
    return 0;
}

/* ---- load --------------------------------------------------------------------------------- */

static int fold_balance(void *data, keel_buf_t *state, const keel_es_event_t *ev)
{
    (void)data;
    long long bal = 0;
    if (keel_buf_unread(state) > 0) {
        char t[32];
        snprintf(t, sizeof(t), "%.*s", (int)keel_buf_unread(state),
                 (const char *)keel_buf_rptr(state));
        bal = atoll(t);
    }
    char amount[24];
    snprintf(amount, sizeof(amount), "%.*s", (int)(ev->data_len < 20 ? ev->data_len : 20),
             (const char *)ev->data);
    if (ev->type_len == 9 && memcmp(ev->type, "Deposited", 9) == 0)
        bal += atoll(amount);
    else if (ev->type_len == 9 && memcmp(ev->type, "Withdrawn", 9) == 0)
        bal -= atoll(amount);
    keel_buf_reset(state);
    return keel_buf_printf(state, "%lld", bal);
}

static int load_rc = 1;

static void on_loaded(keel_es_t *es, void *ctx, int err, uint64_t version, const keel_buf_t *state,
                      const char *msg)
{
    (void)ctx;
    if (err != 0) {
        fprintf(stderr, "keel-ledger: load: %s %s\n", keel_err_name(err), msg);
    } else {
        printf("version %llu balance %.*s\n", (unsigned long long)version,
               keel_buf_unread(state) ? (int)keel_buf_unread(state) : 1,
               keel_buf_unread(state) ? (const char *)keel_buf_rptr(state) : "0");
        load_rc = 0;
    }
    (void)es;
}

static void load_check_done(keel_timer_t *t, void *data)
{
    keel_es_t *es = data;
    if (keel_es_pending(es) == 0) {
        keel_timer_close(t, NULL);
        keel_client_close(es->cl, NULL);
    }
}

static int run_load(opts_t *o)
{
    static keel_loop_t loop;
    static keel_client_t cl;
    static keel_es_t es;
    static keel_timer_t t;
    keel_errmsg_t msg = {{0}};
    keel_client_config_t cfg = keel_client_config_default();
    char seeds_buf[1024];
    cfg.seeds_n = split_seeds(o->server, seeds_buf, sizeof(seeds_buf), cfg.seeds);
    if (keel_loop_init(&loop) != 0 || keel_client_init(&cl, &loop, &cfg, &msg) != 0) {
        fprintf(stderr, "keel-ledger: %s\n", msg.text);
        return 1;
    }
    keel_es_config_t ecfg = keel_es_config_default();
    ecfg.snapshot_every_events = (uint32_t)o->snapshot_every;
    if (keel_es_init(&es, &cl, &ecfg) != 0)
        return 1;
    keel_es_fold_t fold = {.apply = fold_balance, .schema = 1};
    if (keel_es_load(&es, o->account, &fold, on_loaded, NULL) != 0) {
        fprintf(stderr, "keel-ledger: bad account name\n");
        return 1;
    }
    keel_timer_init(&loop, &t);
    keel_timer_start(&t, 5, 5, load_check_done, &es);
    keel_loop_run(&loop);
    keel_loop_close(&loop);
    keel_es_free(&es);
    return load_rc;
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: keel-ledger append --server host:port [--accounts N] [--events N]"
            " [--poison-every K] [--inflight N] [--rate events/s] [--hints N] [--seed S] [--prefix "
            "acct]\n"
            "       keel-ledger project --server host:port --db PATH [--name balances]"
            " [--batch N] [--apply-delay-us U] [--rebuild] [--metrics-file F]"
            " [--category acct] [--listen host:port]\n"
            "       keel-ledger load --server host:port --account A [--snapshot-every N]\n");
}

int main(int argc, char **argv)
{
    opts_t o = {.name = "balances",
                .prefix = "acct",
                .category = "acct",
                .accounts = 8,
                .events = 1000,
                .inflight = 8,
                .batch = 64,
                .snapshot_every = 50,
                .hints = 256,
                .seed = 1};
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *mode = argv[1];
    bool bad = false;
    for (int i = 2; i < argc && !bad; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--rebuild") == 0) {
            o.rebuild = 1;
            continue;
        }
        if (v == NULL) {
            bad = true;
            break;
        }
        i++;
        if (strcmp(a, "--server") == 0)
            o.server = v;
        else if (strcmp(a, "--db") == 0)
            o.db = v;
        else if (strcmp(a, "--name") == 0)
            o.name = v;
        else if (strcmp(a, "--listen") == 0)
            o.listen = v;
        else if (strcmp(a, "--metrics-file") == 0)
            o.metrics_file = v;
        else if (strcmp(a, "--account") == 0)
            o.account = v;
        else if (strcmp(a, "--prefix") == 0)
            o.prefix = v;
        else if (strcmp(a, "--category") == 0)
            o.category = v;
        else if (strcmp(a, "--accounts") == 0)
            o.accounts = strtol(v, NULL, 10);
        else if (strcmp(a, "--events") == 0)
            o.events = strtol(v, NULL, 10);
        else if (strcmp(a, "--poison-every") == 0)
            o.poison_every = strtol(v, NULL, 10);
        else if (strcmp(a, "--inflight") == 0)
            o.inflight = strtol(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            o.batch = strtol(v, NULL, 10);
        else if (strcmp(a, "--apply-delay-us") == 0)
            o.delay_us = strtol(v, NULL, 10);
        else if (strcmp(a, "--snapshot-every") == 0)
            o.snapshot_every = strtol(v, NULL, 10);
        else if (strcmp(a, "--hints") == 0)
            o.hints = strtol(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0)
            o.rate = strtol(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0)
            o.seed = strtoull(v, NULL, 10);
        else
            bad = true;
    }
    if (bad || o.server == NULL || o.accounts < 1 || o.accounts > ACCOUNTS_MAX || o.events < 1 ||
        o.events > EVENTS_MAX || o.inflight < 1 || o.inflight > ACCOUNTS_MAX || o.batch < 1 ||
        o.batch > (long)KEEL_PROJECTION_BATCH_EVENTS_MAX || o.delay_us < 0 ||
        o.delay_us > 1000000 || o.snapshot_every < 0 || o.rate < 0 || o.hints < 0 ||
        o.hints > (long)KEEL_ES_HINTS_LIMIT) {
        usage();
        return 2;
    }
    keel_logsink_init_stderr("warn");
    if (strcmp(mode, "append") == 0)
        return run_append(&o);
    if (strcmp(mode, "project") == 0 && o.db)
        return run_project(&o);
    if (strcmp(mode, "load") == 0 && o.account)
        return run_load(&o);
    usage();
    return 2;
}
