/* choreo - an order saga as a choreography (tx/choreo.h): three participants, one process
 * each, that never call one another; they react to the saga's events on one keel stream.
 *
 *   keel-example-choreo --role order|stock|payment --db FILE --servers host:port,...
 *                       [--stream S] [--consumer NAME] [--orders N] [--prefix P]
 *                       [--rate R] [--fail-every K] [--crash-pct P] [--work-ms D] [--seed N]
 *                       [--claim-idle-ms T] [--claim-interval-ms T] [--retry-for-ms T]
 *                       [--release-fails N]
 *   keel-example-choreo --role watch --servers host:port,... --deadline-ms T [--stream S]
 *
 * The chain (docs/tx.md, "Sagas, choreographed"):
 *
 *   order    creates orders P-1..P-N              emits order.created
 *            (all at start, or R a second with --rate R)
 *   stock    on order.created   reserve           emits stock.reserved | stock.failed
 *   payment  on stock.reserved  charge            emits payment.charged | payment.failed
 *   order    on payment.charged confirm           emits order.confirmed
 *   stock    on payment.failed  release (undo)    emits stock.released
 *   order    on stock.released  cancel (undo)     emits order.cancelled
 *   order    on stock.failed    cancel (undo)     emits order.cancelled
 *
 * --fail-every K: payment refuses every order whose number is a multiple of K (a business
 * failure at the last step), so the compensations run: release, then cancel.
 *
 * Each participant keeps a ledger in its own SQLite file: ledger(seq, saga, effect,
 * at_unix_ms) with no uniqueness constraint, one row per effect applied (create, reserve,
 * charge, confirm, release, cancel), so an effect applied twice would show as two rows.
 * The order participant also keeps orders(id, state): pending, confirmed or cancelled.
 *
 * --crash-pct P: after an event's transaction committed and before its XACK, SIGKILL the
 * process with P% odds (it prints "crash after commit ENTRY" first): its restart must find
 * the event pending and apply it no second time. --work-ms D sleeps D ms in each handler
 * (the loop is blocked: a wider window for an outside SIGKILL).
 * --retry-for-ms T: how long a failing event is retried before it is dead-lettered and its saga
 * marked needs_attention (the def's retry_for_ms). --release-fails N: stock's release of order
 * N fails every time (a compensation that can never apply).
 *
 * --role watch runs the deadline watcher (tx/choreo_watch.h): a saga that has not reached
 * order.confirmed or order.cancelled --deadline-ms after order.created needs attention.
 *
 * Prints "ready" once it runs; stops on SIGTERM. */
#include "base/err.h"
#include "base/num.h"
#include "base/rand.h"
#include "runtime/clock.h"
#include "runtime/logsink.h"
#include "tx/choreo.h"
#include "tx/choreo_watch.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ORDERS_MAX 1000000

typedef struct app {
    keel_loop_t loop;
    keel_db_t db;
    keel_choreo_t choreo;
    keel_choreo_watch_t watch;
    keel_rand_t rand;
    const char *role, *prefix, *stream;
    int64_t orders, fail_every, crash_pct, work_ms, rate, next_order, release_fails;
    keel_timer_t tick;
} app_t;

static void work(app_t *a)
{
    if (a->work_ms > 0) {
        struct timespec ts = {a->work_ms / 1000, (a->work_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int ledger(keel_db_t *db, const char *saga, const char *effect, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(
        db, "INSERT INTO ledger (saga, effect, at_unix_ms) VALUES (?1, ?2, ?3)", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, saga, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, effect, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, keel_clock_unix_ms());
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "ledger", msg);
}

/* Sets an order's state from `from` to `to`; KEEL_ECONFLICT when it was not in `from`. */
static int order_move(keel_db_t *db, const char *saga, const char *from, const char *to,
                      keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc =
        keel_db_prepare(db, "UPDATE orders SET state = ?1 WHERE id = ?2 AND state = ?3", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, to, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, saga, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, from, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return keel_db_error(db, src, "orders", msg);
    if (sqlite3_changes(keel_db_handle(db)) != 1)
        return keel_errf(msg, KEEL_ECONFLICT, "order %s is not %s", saga, from);
    return 0;
}

/* ---- handlers: each runs inside the participant's transaction ---------------------------- */

static int on_reserve(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                      keel_errmsg_t *msg)
{
    work(data);
    return ledger(db, ev->saga, "reserve", msg);
}

static int on_release(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                      keel_errmsg_t *msg)
{
    app_t *a = data;
    work(a);
    int64_t n = 0;
    if (a->release_fails > 0 && keel_parse_i64(ev->data, ev->data_len, &n) == 0 &&
        n == a->release_fails)
        return keel_errf(msg, KEEL_EIO, "release of %s: the warehouse refuses it, always",
                         ev->saga);
    return ledger(db, ev->saga, "release", msg);
}

static int on_charge(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                     keel_errmsg_t *msg)
{
    app_t *a = data;
    work(a);
    int64_t n = 0;
    if (keel_parse_i64(ev->data, ev->data_len, &n) != 0)
        return keel_errf(msg, KEEL_EREJECTED, "order %s: no order number", ev->saga);
    if (a->fail_every > 0 && n % a->fail_every == 0)
        return keel_errf(msg, KEEL_EREJECTED, "order %s: card declined", ev->saga);
    return ledger(db, ev->saga, "charge", msg);
}

static int on_confirm(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                      keel_errmsg_t *msg)
{
    work(data);
    int rc = order_move(db, ev->saga, "pending", "confirmed", msg);
    return rc != 0 ? rc : ledger(db, ev->saga, "confirm", msg);
}

static int on_cancel(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                     keel_errmsg_t *msg)
{
    work(data);
    int rc = order_move(db, ev->saga, "pending", "cancelled", msg);
    return rc != 0 ? rc : ledger(db, ev->saga, "cancel", msg);
}

static void define(app_t *a, keel_choreo_config_t *cfg)
{
    keel_choreo_def_t *d = &cfg->def;
    d->name = a->role;
    if (strcmp(a->role, "stock") == 0) {
        d->rules[0] = (keel_choreo_rule_t){"order.created", KEEL_CHOREO_ACTION, "stock.reserved",
                                           "stock.failed", 0};
        d->rules[1] = (keel_choreo_rule_t){"payment.failed", KEEL_CHOREO_COMPENSATION,
                                           "stock.released", NULL, 0};
        cfg->handlers[0] = on_reserve;
        cfg->handlers[1] = on_release;
        d->rules_n = 2;
    } else if (strcmp(a->role, "payment") == 0) {
        d->rules[0] = (keel_choreo_rule_t){"stock.reserved", KEEL_CHOREO_ACTION, "payment.charged",
                                           "payment.failed", 0};
        cfg->handlers[0] = on_charge;
        d->rules_n = 1;
    } else {
        d->rules[0] = (keel_choreo_rule_t){"payment.charged", KEEL_CHOREO_ACTION, "order.confirmed",
                                           "order.confirm_failed", 0};
        d->rules[1] = (keel_choreo_rule_t){"stock.released", KEEL_CHOREO_COMPENSATION,
                                           "order.cancelled", NULL, 0};
        d->rules[2] = (keel_choreo_rule_t){"stock.failed", KEEL_CHOREO_COMPENSATION,
                                           "order.cancelled", NULL, 0};
        cfg->handlers[0] = on_confirm;
        cfg->handlers[1] = on_cancel;
        cfg->handlers[2] = on_cancel;
        d->rules_n = 3;
    }
}

/* The order service starts a saga: the order row and its first event in one transaction,
 * once (a restart finds the row and emits nothing again). */
static int create_order(app_t *a, int64_t i, keel_errmsg_t *msg)
{
    char saga[KEEL_CHOREO_SAGA_BYTES_MAX + 1], num[24];
    snprintf(saga, sizeof(saga), "%s-%lld", a->prefix, (long long)i);
    snprintf(num, sizeof(num), "%lld", (long long)i);
    sqlite3_stmt *st;
    int rc = keel_db_begin(&a->db, msg);
    if (rc == 0)
        rc = keel_db_prepare(
            &a->db, "INSERT OR IGNORE INTO orders (id, state) VALUES (?1, 'pending')", &st, msg);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, saga, -1, SQLITE_STATIC);
        int src = sqlite3_step(st);
        sqlite3_finalize(st);
        if (src != SQLITE_DONE)
            rc = keel_db_error(&a->db, src, "orders", msg);
    }
    if (rc == 0 && sqlite3_changes(keel_db_handle(&a->db)) == 1) {
        rc = ledger(&a->db, saga, "create", msg);
        if (rc == 0)
            rc = keel_choreo_emit(&a->db, a->stream, "order.created", saga, num, strlen(num), msg);
    }
    if (rc == 0)
        rc = keel_db_commit(&a->db, msg);
    if (rc != 0 && keel_db_in_tx(&a->db))
        keel_db_rollback(&a->db);
    return rc;
}

/* --rate R: one order every 1000/R ms, on the loop, as a service would take requests. */
static void order_tick(keel_timer_t *t, void *data)
{
    app_t *a = data;
    keel_errmsg_t msg = {{0}};
    if (a->next_order > a->orders) {
        keel_timer_stop(t);
        return;
    }
    if (create_order(a, a->next_order, &msg) != 0) {
        fprintf(stderr, "keel-example-choreo: order %lld: %s\n", (long long)a->next_order,
                msg.text);
        return; /* tried again at the next tick */
    }
    a->next_order++;
    keel_choreo_kick(&a->choreo);
}

static void on_committed(keel_choreo_t *c, const char *entry_id, const keel_choreo_event_t *ev,
                         void *data)
{
    app_t *a = data;
    if (a->crash_pct > 0 && (int64_t)keel_rand_below(&a->rand, 100) < a->crash_pct) {
        printf("crash after commit %s %s %s\n", entry_id, ev->type, ev->saga);
        fflush(stdout);
        raise(SIGKILL);
    }
}

static void closed(keel_choreo_t *c)
{
    (void)c;
}

static void watch_closed(keel_choreo_watch_t *w)
{
    (void)w;
}

static void on_shutdown(void *data)
{
    app_t *a = data;
    if (strcmp(a->role, "watch") == 0) {
        const keel_choreo_watch_stats_t *w = keel_choreo_watch_stats(&a->watch);
        printf("stats watch events %llu ends %llu missed %llu\n", (unsigned long long)w->events,
               (unsigned long long)w->ends, (unsigned long long)w->missed);
        fflush(stdout);
        keel_choreo_watch_close(&a->watch, watch_closed);
        return;
    }
    const keel_choreo_stats_t *s = keel_choreo_stats(&a->choreo);
    printf("stats applied %llu refused %llu compensated %llu duplicates %llu claimed %llu "
           "dead_lettered %llu\n",
           (unsigned long long)s->applied, (unsigned long long)s->refused,
           (unsigned long long)s->compensated, (unsigned long long)s->duplicates,
           (unsigned long long)s->claimed, (unsigned long long)s->dead_lettered);
    fflush(stdout);
    keel_timer_close(&a->tick, NULL);
    keel_choreo_close(&a->choreo, closed);
}

static int usage(void)
{
    fprintf(stderr, "usage: keel-example-choreo --role order|stock|payment --db FILE --servers "
                    "host:port,... [--stream S] [--consumer NAME] [--orders N] [--prefix P] "
                    "[--rate R] [--fail-every K] [--crash-pct P] [--work-ms D] [--seed N] "
                    "[--claim-idle-ms T] [--claim-interval-ms T] [--retry-for-ms T] "
                    "[--release-fails N]\n"
                    "       keel-example-choreo --role watch --servers host:port,... "
                    "--deadline-ms T [--stream S]\n");
    return 2;
}

/* --role watch: the deadline watcher alone, no database. */
static int run_watch(app_t *a, const char *servers, int64_t deadline_ms)
{
    if (servers == NULL || deadline_ms <= 0)
        return usage();
    keel_choreo_watch_config_t wc = keel_choreo_watch_config_default();
    wc.servers = servers;
    wc.stream = a->stream;
    wc.ends[0] = "order.confirmed";
    wc.ends[1] = "order.cancelled";
    wc.ends_n = 2;
    wc.saga_deadline_ms = deadline_ms;
    wc.check_interval_ms = deadline_ms / 4 > 0 && deadline_ms / 4 < 500 ? deadline_ms / 4 : 500;
    keel_errmsg_t msg = {{0}};
    if (keel_loop_init(&a->loop) != 0 || keel_loop_handle_signals(&a->loop) != 0)
        return 1;
    if (keel_choreo_watch_init(&a->watch, &a->loop, &wc, &msg) != 0) {
        fprintf(stderr, "keel-example-choreo: %s\n", msg.text);
        return 1;
    }
    keel_loop_on_shutdown(&a->loop, on_shutdown, a);
    keel_choreo_watch_start(&a->watch);
    printf("ready watch\n");
    keel_loop_run(&a->loop);
    keel_loop_close(&a->loop);
    return 0;
}

static int num_opt(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    return keel_parse_i64((const uint8_t *)v, strlen(v), out) == 0 && *out >= lo && *out <= hi ? 0
                                                                                               : -1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    keel_logsink_init_stderr(NULL);
    app_t a;
    memset(&a, 0, sizeof(a));
    a.prefix = "o";
    a.stream = "choreo:orders";
    keel_choreo_config_t cfg = keel_choreo_config_default();
    const char *path = NULL;
    int64_t seed = 1, idle_ms = cfg.claim_idle_ms, interval_ms = cfg.claim_interval_ms;
    int64_t retry_for_ms = cfg.def.retry_for_ms, deadline_ms = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        if (strcmp(k, "--role") == 0)
            a.role = v;
        else if (strcmp(k, "--db") == 0)
            path = v;
        else if (strcmp(k, "--servers") == 0)
            cfg.servers = v;
        else if (strcmp(k, "--stream") == 0)
            a.stream = v;
        else if (strcmp(k, "--consumer") == 0)
            cfg.consumer = v;
        else if (strcmp(k, "--prefix") == 0)
            a.prefix = v;
        else if (strcmp(k, "--orders") == 0 && num_opt(v, 0, ORDERS_MAX, &a.orders) == 0)
            ;
        else if (strcmp(k, "--fail-every") == 0 && num_opt(v, 0, ORDERS_MAX, &a.fail_every) == 0)
            ;
        else if (strcmp(k, "--crash-pct") == 0 && num_opt(v, 0, 100, &a.crash_pct) == 0)
            ;
        else if (strcmp(k, "--rate") == 0 && num_opt(v, 0, 1000, &a.rate) == 0)
            ;
        else if (strcmp(k, "--work-ms") == 0 && num_opt(v, 0, 10000, &a.work_ms) == 0)
            ;
        else if (strcmp(k, "--seed") == 0 && num_opt(v, 0, INT64_MAX, &seed) == 0)
            ;
        else if (strcmp(k, "--claim-idle-ms") == 0 && num_opt(v, 1, 3600000, &idle_ms) == 0)
            ;
        else if (strcmp(k, "--claim-interval-ms") == 0 && num_opt(v, 1, 3600000, &interval_ms) == 0)
            ;
        else if (strcmp(k, "--retry-for-ms") == 0 &&
                 num_opt(v, 1, KEEL_CHOREO_RETRY_FOR_MS_MAX, &retry_for_ms) == 0)
            ;
        else if (strcmp(k, "--release-fails") == 0 &&
                 num_opt(v, 0, ORDERS_MAX, &a.release_fails) == 0)
            ;
        else if (strcmp(k, "--deadline-ms") == 0 && num_opt(v, 1, 86400000, &deadline_ms) == 0)
            ;
        else
            return usage();
    }
    if (a.role != NULL && strcmp(a.role, "watch") == 0)
        return run_watch(&a, cfg.servers, deadline_ms);
    if (a.role == NULL || path == NULL || cfg.servers == NULL ||
        (strcmp(a.role, "order") != 0 && strcmp(a.role, "stock") != 0 &&
         strcmp(a.role, "payment") != 0))
        return usage();
    if (cfg.consumer == NULL)
        cfg.consumer = a.role;
    keel_rand_seed(&a.rand, (uint64_t)seed);
    keel_errmsg_t msg = {{0}};
    if (keel_loop_init(&a.loop) != 0 || keel_loop_handle_signals(&a.loop) != 0)
        return 1;
    int rc = keel_db_open(&a.db, path, &msg);
    if (rc == 0)
        rc = keel_db_exec(&a.db,
                          "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY "
                          "AUTOINCREMENT, saga TEXT NOT NULL, effect TEXT NOT NULL, at_unix_ms "
                          "INTEGER NOT NULL);"
                          "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, state TEXT "
                          "NOT NULL)",
                          &msg);
    cfg.db = &a.db;
    cfg.stream = a.stream;
    cfg.handler_data = &a;
    cfg.claim_idle_ms = idle_ms;
    cfg.claim_interval_ms = interval_ms;
    cfg.def.retry_for_ms = retry_for_ms;
    cfg.seed = (uint64_t)seed;
    cfg.on_committed = on_committed;
    cfg.hook_data = &a;
    define(&a, &cfg);
    if (rc == 0)
        rc = keel_choreo_init(&a.choreo, &a.loop, &cfg, &msg);
    bool order = strcmp(a.role, "order") == 0;
    for (int64_t i = 1; rc == 0 && order && a.rate == 0 && i <= a.orders; i++)
        rc = create_order(&a, i, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-example-choreo: %s\n", msg.text);
        return 1;
    }
    keel_loop_on_shutdown(&a.loop, on_shutdown, &a);
    keel_choreo_start(&a.choreo);
    keel_timer_init(&a.loop, &a.tick);
    a.next_order = 1;
    if (order && a.rate > 0)
        keel_timer_start(&a.tick, 1, (keel_ms_t)(1000 / a.rate > 0 ? 1000 / a.rate : 1), order_tick,
                         &a);
    printf("ready %s\n", a.role);
    keel_loop_run(&a.loop);
    keel_loop_close(&a.loop);
    keel_db_close(&a.db);
    return 0;
}
