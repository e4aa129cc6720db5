/* payment - the shop's payment service: a SQLite ledger with an outbox, charge and refund
 * idempotent per order, and a fake card processor that declines, dawdles or fails on demand.
 *
 *   keel-shop-payment --keel host:port,... --db FILE [--listen host:port] [--registry ...]
 *                     [--id ID] [--slow-ms 2000] [--stream shop.payments]
 *                     (also PAYMENT_* and a YAML file: kit/config)
 *
 *   POST /charges                {"order", "customer", "amount_cents", "card"}
 *        201 charged | 200 the same charge again | 402 declined (recorded: again 402)
 *        410 the order was refunded or voided | 422 another amount or customer for the order
 *        502 the processor failed (nothing recorded: retry) | 400 bad input
 *        card: "ok" (default), "decline", "slow" (answers after --slow-ms), "fail"
 *   POST /charges/:order/refund  200 {"status": refunded | voided | declined}: always
 *        succeeds, so a saga's compensation can always finish; a refund of an order never
 *        charged voids it, and a charge arriving later is refused (410: gone)
 *   GET  /charges/:order         200 the row, or 404
 *   GET  /ledger                 200 {"charged_cents", "refunded_cents", "net_cents", counts}
 *
 * The order id is the idempotency key of the money: charges.order_id is the primary key,
 * and every change of a row, its ledger entry and its event (to the keel stream via the
 * outbox, tx/outbox.h) are one SQLite transaction. That is the whole idempotency of
 * POST /charges: a repeat of an order's charge (the saga's retry, whatever Idempotency-Key
 * it carries) is answered from its row; a concurrent repeat is settled by record()'s
 * compare on the row (a real card processor would be given the order id as its idempotency
 * key, as their APIs take one). No idempotency record is kept in keel server: it cost two
 * keel writes per charge and said nothing the row does not. Several instances share
 * one database file (the service's database, as a shared PostgreSQL would be); SQLite's
 * lock serializes their transactions (docs/shop.md says what that costs).
 */
#include "base/log.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/clock.h"
#include "runtime/sqlite.h"
#include "tx/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define AMOUNT_MAX 100000000000LL /* a billion in currency units, in cents */
#define BODY_BYTES_MAX 4096

typedef struct app {
    keel_loop_t *loop;
    keel_db_t db;
    keel_outbox_relay_t relay;
    const char *stream;
    int64_t slow_ms;
    keel_counter_t *m_charged, *m_declined, *m_failed, *m_refunded, *m_voided;
    keel_histogram_t *m_begin, *m_commit; /* waiting for the write lock; COMMIT (the fsync) */
} app_t;

/* ---- the ledger ------------------------------------------------------------------------ */

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS charges ("
    " order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount INTEGER NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('charged','declined','refunded','voided')),"
    " updated_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL,"
    " kind TEXT NOT NULL CHECK (kind IN ('charge','refund')), amount INTEGER NOT NULL,"
    " at_ms INTEGER NOT NULL);";

typedef struct charge {
    bool found;
    char customer[ID_BYTES_MAX + 1], status[16];
    int64_t amount;
} charge_t;

static int charge_get(app_t *a, const char *order, charge_t *c, keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    sqlite3_stmt *st;
    int rc = keel_db_prepare(
        &a->db, "SELECT customer, amount, status FROM charges WHERE order_id = ?1", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        c->found = true;
        snprintf(c->customer, sizeof(c->customer), "%s", (const char *)sqlite3_column_text(st, 0));
        c->amount = sqlite3_column_int64(st, 1);
        snprintf(c->status, sizeof(c->status), "%s", (const char *)sqlite3_column_text(st, 2));
        src = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : keel_db_error(&a->db, src, "read charge", msg);
}

static int run(app_t *a, const char *sql, const char *t1, const char *t2, int64_t i1,
               const char *t3, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(&a->db, sql, &st, msg);
    if (rc != 0)
        return rc;
    if (t1)
        sqlite3_bind_text(st, 1, t1, -1, SQLITE_STATIC);
    if (t2)
        sqlite3_bind_text(st, 2, t2, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, i1);
    if (t3)
        sqlite3_bind_text(st, 4, t3, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)keel_clock_unix_ms());
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : keel_db_error(&a->db, src, "write", msg);
}

/* The row's new state, its ledger entry (kind NULL: none) and its event: one transaction.
 * If the row changed since `seen` (another instance got there first), nothing is written
 * and *raced is set: the caller reads again. */
static int record(app_t *a, const char *order, const char *customer, int64_t amount,
                  const char *status, const char *kind, const charge_t *seen, bool *raced,
                  keel_errmsg_t *msg)
{
    *raced = false;
    keel_us_t t0 = keel_clock_now_us();
    int rc = keel_db_begin(&a->db, msg);
    if (a->m_begin)
        keel_histogram_observe(a->m_begin, (double)(keel_clock_now_us() - t0) / 1e6);
    if (rc != 0)
        return rc;
    charge_t now;
    rc = charge_get(a, order, &now, msg);
    if (rc == 0 && (now.found != seen->found || strcmp(now.status, seen->status) != 0)) {
        *raced = true;
        keel_db_rollback(&a->db);
        return 0;
    }
    if (rc == 0)
        rc = run(a,
                 "INSERT INTO charges (order_id, customer, amount, status, updated_ms)"
                 " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (order_id) DO UPDATE SET"
                 " status = excluded.status, updated_ms = excluded.updated_ms",
                 order, customer, amount, status, msg);
    if (rc == 0 && kind != NULL)
        rc = run(a, "INSERT INTO ledger (order_id, kind, amount, at_ms) VALUES (?1, ?2, ?3, ?5)",
                 order, kind, amount, NULL, msg);
    char *event = NULL;
    if (rc == 0) {
        json_t *e = json_pack("{s:s, s:s, s:s, s:I, s:I}", "type", status, "order", order,
                              "customer", customer, "amount_cents", (json_int_t)amount, "at_ms",
                              (json_int_t)keel_clock_unix_ms());
        event = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        rc = event ? keel_outbox_add(&a->db, a->stream, event, strlen(event), NULL, msg)
                   : KEEL_ENOMEM;
    }
    free(event);
    /* No keel_outbox_relay_kick: the relay's poll (every 20 ms) publishes what the charges
     * of those 20 ms wrote in one MULTI/EXEC entry; kicked after each commit, it published
     * about one row per entry (an entry per charge at 300 charges/s). */
    if (rc == 0) {
        t0 = keel_clock_now_us();
        rc = keel_db_commit(&a->db, msg);
        if (a->m_commit)
            keel_histogram_observe(a->m_commit, (double)(keel_clock_now_us() - t0) / 1e6);
    } else
        keel_db_rollback(&a->db);
    return rc;
}

/* ---- handlers -------------------------------------------------------------------------- */

static void respond(keel_service_req_t *r, int status, const char *order, const char *st,
                    int64_t amount)
{
    json_t *o = json_pack("{s:s, s:s, s:I}", "order", order, "status", st, "amount_cents",
                          (json_int_t)amount);
    keel_service_respond_json(r, status, o);
    json_decref(o);
}

typedef struct slow {
    keel_timer_t t;
    keel_service_req_t *req;
    app_t *a;
    char order[ID_BYTES_MAX + 1], customer[ID_BYTES_MAX + 1];
    int64_t amount;
} slow_t;

static void charge_now(app_t *a, keel_service_req_t *r, const char *order, const char *customer,
                       int64_t amount, bool decline);

static void slow_closed(keel_timer_t *t)
{
    free(t); /* first member */
}

static void slow_fire(keel_timer_t *t, void *data)
{
    slow_t *s = data;
    keel_service_req_enter(s->req);
    charge_now(s->a, s->req, s->order, s->customer, s->amount, false);
    keel_timer_close(t, slow_closed);
}

/* The processor said yes (or no): record it, unless the row says otherwise. */
static void charge_now(app_t *a, keel_service_req_t *r, const char *order, const char *customer,
                       int64_t amount, bool decline)
{
    keel_errmsg_t msg = {{0}};
    for (int attempt = 0; attempt < 3; attempt++) {
        charge_t c;
        if (charge_get(a, order, &c, &msg) != 0)
            break;
        if (c.found) { /* it happened meanwhile: the recorded answer stands */
            bool closed = strcmp(c.status, "refunded") == 0 || strcmp(c.status, "voided") == 0;
            if (!closed && (c.amount != amount || strcmp(c.customer, customer) != 0)) {
                keel_http_respond_error(r->http, 422,
                                        "this order was charged with another amount or customer");
                return;
            }
            int st = closed ? 410 : strcmp(c.status, "charged") == 0 ? 200 : 402;
            respond(r, st, order, c.status, c.amount);
            return;
        }
        bool raced;
        int rc = record(a, order, customer, amount, decline ? "declined" : "charged",
                        decline ? NULL : "charge", &c, &raced, &msg);
        if (rc != 0)
            break;
        if (raced)
            continue;
        keel_counter_inc(decline ? a->m_declined : a->m_charged);
        respond(r, decline ? 402 : 201, order, decline ? "declined" : "charged", amount);
        return;
    }
    keel_log_warn("payment: ledger write failed", KF_STR("order", order),
                  KF_STR("error", msg.text));
    keel_http_respond_error(r->http, 503, "the ledger could not be written; retry");
}

static void h_charge(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_http_msg_t *m = r->http->msg;
    if (m->body_len > BODY_BYTES_MAX) {
        keel_http_respond_error(r->http, 413, "a body is at most 4 KiB");
        return;
    }
    json_t *j = json_loadb((const char *)m->body, m->body_len, 0, NULL);
    const char *order = json_string_value(json_object_get(j, "order"));
    const char *customer = json_string_value(json_object_get(j, "customer"));
    const char *card = json_string_value(json_object_get(j, "card"));
    json_t *amt = json_object_get(j, "amount_cents");
    int64_t amount = json_is_integer(amt) ? json_integer_value(amt) : -1;
    if (!json_is_object(j) || !shop_id_ok(order, order ? strlen(order) : 0) ||
        !shop_id_ok(customer, customer ? strlen(customer) : 0) || amount < 1 ||
        amount > AMOUNT_MAX ||
        (card && strcmp(card, "ok") && strcmp(card, "decline") && strcmp(card, "slow") &&
         strcmp(card, "fail"))) {
        json_decref(j);
        keel_http_respond_error(r->http, 400,
                                "a JSON object: order, customer (ids of [A-Za-z0-9._-]), "
                                "amount_cents (1..1e11), card (ok, decline, slow, fail)");
        return;
    }
    char o[ID_BYTES_MAX + 1], cu[ID_BYTES_MAX + 1], cd[16];
    snprintf(o, sizeof(o), "%s", order);
    snprintf(cu, sizeof(cu), "%s", customer);
    snprintf(cd, sizeof(cd), "%s", card ? card : "ok");
    json_decref(j);
    /* a known order answers from its row, whatever the card says now */
    charge_t c;
    keel_errmsg_t msg = {{0}};
    if (charge_get(a, o, &c, &msg) != 0) {
        keel_http_respond_error(r->http, 503, "the ledger could not be read");
        return;
    }
    if (c.found) {
        charge_now(a, r, o, cu, amount, false);
        return;
    }
    if (strcmp(cd, "fail") == 0) { /* the processor is down: nothing happened */
        keel_counter_inc(a->m_failed);
        keel_http_respond_error(r->http, 502, "card processor unavailable; nothing was charged");
        return;
    }
    if (strcmp(cd, "slow") == 0 && a->slow_ms > 0) {
        slow_t *s = calloc(1, sizeof(*s));
        if (s == NULL || keel_timer_init(a->loop, &s->t) != 0) {
            free(s);
            keel_http_respond_error(r->http, 503, "out of memory");
            return;
        }
        s->req = r;
        s->a = a;
        s->amount = amount;
        snprintf(s->order, sizeof(s->order), "%s", o);
        snprintf(s->customer, sizeof(s->customer), "%s", cu);
        keel_timer_start(&s->t, (keel_ms_t)a->slow_ms, 0, slow_fire, s);
        return;
    }
    charge_now(a, r, o, cu, amount, strcmp(cd, "decline") == 0);
}

static const keel_route_param_t *param(const keel_service_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->route.n; i++)
        if (r->route.params[i].name_len == strlen(name) &&
            memcmp(r->route.params[i].name, name, r->route.params[i].name_len) == 0)
            return &r->route.params[i];
    return NULL;
}

static bool order_param(keel_service_req_t *r, char *out)
{
    return shop_order_param(r, param(r, "order"), out);
}

static void h_refund(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char order[ID_BYTES_MAX + 1];
    if (!order_param(r, order))
        return;
    keel_errmsg_t msg = {{0}};
    for (int attempt = 0; attempt < 3; attempt++) {
        charge_t c;
        if (charge_get(a, order, &c, &msg) != 0)
            break;
        if (c.found && strcmp(c.status, "charged") != 0) { /* nothing (more) to give back */
            respond(r, 200, order, c.status, c.amount);
            return;
        }
        bool charged = c.found, raced;
        int rc =
            record(a, order, charged ? c.customer : "-", charged ? c.amount : 0,
                   charged ? "refunded" : "voided", charged ? "refund" : NULL, &c, &raced, &msg);
        if (rc != 0)
            break;
        if (raced)
            continue;
        keel_counter_inc(charged ? a->m_refunded : a->m_voided);
        respond(r, 200, order, charged ? "refunded" : "voided", charged ? c.amount : 0);
        return;
    }
    keel_http_respond_error(r->http, 503, "the ledger could not be written; retry");
}

static void h_show(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char order[ID_BYTES_MAX + 1];
    if (!order_param(r, order))
        return;
    charge_t c;
    keel_errmsg_t msg = {{0}};
    if (charge_get(a, order, &c, &msg) != 0) {
        keel_http_respond_error(r->http, 503, "the ledger could not be read");
        return;
    }
    if (!c.found) {
        keel_http_respond_error(r->http, 404, "no charge for this order");
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "order", order, "customer", c.customer, "status",
                          c.status, "amount_cents", (json_int_t)c.amount);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void h_ledger(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    sqlite3_stmt *st;
    if (keel_db_prepare(
            &a->db,
            "SELECT (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'charge'),"
            " (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = 'refund'),"
            " (SELECT COUNT(*) FROM charges WHERE status = 'charged'),"
            " (SELECT COUNT(*) FROM charges WHERE status = 'refunded'),"
            " (SELECT COUNT(*) FROM charges WHERE status = 'declined'),"
            " (SELECT COUNT(*) FROM charges WHERE status = 'voided')",
            &st, NULL) != 0 ||
        sqlite3_step(st) != SQLITE_ROW) {
        keel_http_respond_error(r->http, 503, "the ledger could not be read");
        return;
    }
    int64_t in = sqlite3_column_int64(st, 0), out = sqlite3_column_int64(st, 1);
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "charged_cents", (json_int_t)in,
                          "refunded_cents", (json_int_t)out, "net_cents", (json_int_t)(in - out),
                          "charged", (json_int_t)sqlite3_column_int64(st, 2), "refunded",
                          (json_int_t)sqlite3_column_int64(st, 3), "declined",
                          (json_int_t)sqlite3_column_int64(st, 4), "voided",
                          (json_int_t)sqlite3_column_int64(st, 5));
    sqlite3_finalize(st);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

/* ---- main ---------------------------------------------------------------------------------- */

static void relay_closed(keel_outbox_relay_t *r)
{
    (void)r;
}

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    keel_outbox_relay_close(&a->relay, relay_closed); /* unsent rows go at the next start */
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8110", *keel = "127.0.0.1:7001", *registry = NULL, *id = NULL;
    const char *db = NULL, *stream = "shop.payments";
    int64_t slow_ms = 2000;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0, "keel server host:port,... (the events' stream)"},
        {"db", KEEL_OPT_STR, &db, 0, 0, "the ledger's SQLite file (shared by the instances)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service payment there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id (default payment-<host>-<port>)"},
        {"slow-ms", KEEL_OPT_INT, &slow_ms, 0, 600000, "how long card \"slow\" takes"},
        {"stream", KEEL_OPT_STR, &stream, 0, 0, "the keel stream of payment events"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-payment", "PAYMENT", opts,
                                sizeof(opts) / sizeof(opts[0]), argc, argv);
    if (exit_code >= 0)
        return exit_code;
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    if (db == NULL) {
        fprintf(stderr, "keel-shop-payment: --db FILE is required\n");
        return 2;
    }
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    static app_t app;
    app.loop = &loop;
    app.stream = stream;
    app.slow_ms = slow_ms;
    if (keel_db_open(&app.db, db, &msg) != 0 || keel_outbox_init(&app.db, &msg) != 0 ||
        keel_db_exec(&app.db, SCHEMA, &msg) != 0) {
        fprintf(stderr, "keel-shop-payment: %s\n", msg.text);
        return 1;
    }
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default("payment");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = &app;
    rc = keel_service_init(&svc, &loop, &cfg, &msg);
    if (rc == 0) {
        const char *help = "Payments by outcome.";
        app.m_charged =
            keel_metrics_counter(svc.metrics, "shop_payments_total", help, "outcome=\"charged\"");
        app.m_declined =
            keel_metrics_counter(svc.metrics, "shop_payments_total", help, "outcome=\"declined\"");
        app.m_failed = keel_metrics_counter(svc.metrics, "shop_payments_total", help,
                                            "outcome=\"processor_failed\"");
        app.m_refunded =
            keel_metrics_counter(svc.metrics, "shop_payments_total", help, "outcome=\"refunded\"");
        app.m_voided =
            keel_metrics_counter(svc.metrics, "shop_payments_total", help, "outcome=\"voided\"");
        const char *h2 = "The ledger's transactions: BEGIN IMMEDIATE (the write lock), COMMIT.";
        app.m_begin = keel_metrics_histogram(svc.metrics, "shop_payment_db_seconds", h2,
                                             "op=\"begin\"", NULL, 0);
        app.m_commit = keel_metrics_histogram(svc.metrics, "shop_payment_db_seconds", h2,
                                              "op=\"commit\"", NULL, 0);
    }
    keel_outbox_relay_config_t rcfg = keel_outbox_relay_config_default();
    rcfg.db = &app.db;
    rcfg.servers = keel;
    rcfg.producer = "shop-payment"; /* one per database file: the instances share one */
    rcfg.metrics = svc.metrics;
    rcfg.metrics_labels = "service=\"payment\"";
    if (rc == 0)
        rc = keel_outbox_relay_init(&app.relay, &loop, &rcfg, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "POST", "/charges", h_charge, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "POST", "/charges/:order/refund", h_refund, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/charges/:order", h_show, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/ledger", h_ledger, &app, &msg);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-payment: %s\n", msg.text);
        return 1;
    }
    keel_outbox_relay_start(&app.relay);
    printf("payment: listening on port %d\n", keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_db_close(&app.db);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
