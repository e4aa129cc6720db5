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
 * outbox, tx/outbox.h) happen in one SQLite transaction. That is the whole idempotency of
 * POST /charges: a repeat of an order's charge (the saga's retry, whatever Idempotency-Key
 * it carries) is answered from its row; a concurrent repeat is settled by reading the row
 * inside the write transaction (a real card processor would be given the order id as its
 * idempotency key, as their APIs take one). No idempotency record is kept in keel server:
 * it cost two keel writes per charge and said nothing the row does not.
 *
 * Group commit (runtime/db_group.h): the handlers only queue their write; the charges and
 * refunds of one loop turn, and those arriving while a commit is in flight, are applied in
 * one transaction on a worker thread (each in a savepoint, reading its row first, so a repeat
 * of an order later in the same batch sees the earlier one's row) and share one fsync; each
 * is answered after that COMMIT returns, never before. A failed batch (BEGIN, COMMIT, or
 * SQLite rolling it back) applies nothing and answers every request in it 503, as a failed
 * commit did when each request had its own. The loop's connection only reads (known orders,
 * GET) and runs the outbox relay. Several instances share one database file (the service's
 * database, as a shared PostgreSQL would be); SQLite's lock serializes their batches
 * (docs/shop.md says what that costs).
 */
#include "base/log.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/clock.h"
#include "runtime/db_group.h"
#include "runtime/sqlite.h"
#include "tx/outbox.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define AMOUNT_MAX 100000000000LL /* a billion in currency units, in cents */
#define BODY_BYTES_MAX 4096

typedef struct app {
    keel_loop_t *loop;
    keel_db_t db;           /* the loop's connection: reads, and the outbox relay */
    keel_db_group_t writer; /* every change of the ledger: group commit (runtime/db_group.h) */
    keel_outbox_relay_t relay;
    const char *stream;
    int64_t slow_ms;
    keel_counter_t *m_charged, *m_declined, *m_failed, *m_refunded, *m_voided;
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

static int charge_get(keel_db_t *db, const char *order, charge_t *c, keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, "SELECT customer, amount, status FROM charges WHERE order_id = ?1",
                             &st, msg);
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
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "read charge", msg);
}

static int run(keel_db_t *db, const char *sql, const char *t1, const char *t2, int64_t i1,
               const char *t3, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, sql, &st, msg);
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
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "write", msg);
}

/* The row's new state, its ledger entry (kind NULL: none) and its event (the outbox), inside
 * the caller's transaction. No keel_outbox_relay_kick: the relay's poll (every 20 ms)
 * publishes what the charges of those 20 ms wrote in one MULTI/EXEC entry; kicked after each
 * commit, it published about one row per entry. */
static int put(keel_db_t *db, const char *stream, const char *order, const char *customer,
               int64_t amount, const char *status, const char *kind, keel_errmsg_t *msg)
{
    int rc = run(db,
                 "INSERT INTO charges (order_id, customer, amount, status, updated_ms)"
                 " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (order_id) DO UPDATE SET"
                 " status = excluded.status, updated_ms = excluded.updated_ms",
                 order, customer, amount, status, msg);
    if (rc == 0 && kind != NULL)
        rc = run(db, "INSERT INTO ledger (order_id, kind, amount, at_ms) VALUES (?1, ?2, ?3, ?5)",
                 order, kind, amount, NULL, msg);
    if (rc != 0)
        return rc;
    json_t *e =
        json_pack("{s:s, s:s, s:s, s:I, s:I}", "type", status, "order", order, "customer", customer,
                  "amount_cents", (json_int_t)amount, "at_ms", (json_int_t)keel_clock_unix_ms());
    char *event = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    rc = event ? keel_outbox_add(db, stream, event, strlen(event), NULL, msg) : KEEL_ENOMEM;
    free(event);
    return rc;
}

/* ---- writes: one per request, applied in a shared transaction --------------------------- */

/* What a request is answered, decided inside the transaction (so a repeat of an order in the
 * same batch sees the row the first one wrote) and sent only once the commit is durable. */
typedef struct answer {
    int status;
    char state[16];
    int64_t amount;
    const char *error;     /* a static text: answered as an error with this status */
    keel_counter_t *count; /* counted once durable; NULL: nothing new happened */
} answer_t;

typedef struct op {
    keel_db_write_t w;
    app_t *a;
    keel_service_req_t *req;
    bool refund, decline;
    char order[ID_BYTES_MAX + 1], customer[ID_BYTES_MAX + 1];
    int64_t amount;
    answer_t ans;
} op_t;

static void set_answer(answer_t *ans, int status, const char *state, int64_t amount,
                       keel_counter_t *count)
{
    ans->status = status;
    snprintf(ans->state, sizeof(ans->state), "%s", state);
    ans->amount = amount;
    ans->count = count;
}

/* A charge of an order that has a row: the recorded answer stands. */
static void answer_from_row(const charge_t *c, const char *customer, int64_t amount, answer_t *ans)
{
    bool closed = strcmp(c->status, "refunded") == 0 || strcmp(c->status, "voided") == 0;
    if (!closed && (c->amount != amount || strcmp(c->customer, customer) != 0)) {
        ans->status = 422;
        ans->error = "this order was charged with another amount or customer";
        return;
    }
    set_answer(ans,
               closed                              ? 410
               : strcmp(c->status, "charged") == 0 ? 200
                                                   : 402,
               c->status, c->amount, NULL);
}

/* On the writer's thread (db_group.h): the processor said yes (or no): record it, unless
 * the row says otherwise. */
static int apply_charge(keel_db_t *db, void *data, keel_errmsg_t *msg)
{
    op_t *o = data;
    charge_t c;
    int rc = charge_get(db, o->order, &c, msg);
    if (rc != 0)
        return rc;
    if (c.found) { /* it happened meanwhile, or earlier in this batch */
        answer_from_row(&c, o->customer, o->amount, &o->ans);
        return 0;
    }
    const char *st = o->decline ? "declined" : "charged";
    rc = put(db, o->a->stream, o->order, o->customer, o->amount, st, o->decline ? NULL : "charge",
             msg);
    if (rc == 0)
        set_answer(&o->ans, o->decline ? 402 : 201, st, o->amount,
                   o->decline ? o->a->m_declined : o->a->m_charged);
    return rc;
}

/* On the writer's thread: a refund of a charge, a void of an order never charged, or the
 * recorded answer of one already refunded, voided or declined. */
static int apply_refund(keel_db_t *db, void *data, keel_errmsg_t *msg)
{
    op_t *o = data;
    charge_t c;
    int rc = charge_get(db, o->order, &c, msg);
    if (rc != 0)
        return rc;
    if (c.found && strcmp(c.status, "charged") != 0) { /* nothing (more) to give back */
        set_answer(&o->ans, 200, c.status, c.amount, NULL);
        return 0;
    }
    bool charged = c.found;
    const char *st = charged ? "refunded" : "voided";
    rc = put(db, o->a->stream, o->order, charged ? c.customer : "-", charged ? c.amount : 0, st,
             charged ? "refund" : NULL, msg);
    if (rc == 0)
        set_answer(&o->ans, 200, st, charged ? c.amount : 0,
                   charged ? o->a->m_refunded : o->a->m_voided);
    return rc;
}

static void respond(keel_service_req_t *r, int status, const char *order, const char *st,
                    int64_t amount)
{
    json_t *o = json_pack("{s:s, s:s, s:I}", "order", order, "status", st, "amount_cents",
                          (json_int_t)amount);
    keel_service_respond_json(r, status, o);
    json_decref(o);
}

/* On the loop, once the batch is durable (or failed: nothing of it was applied). */
static void op_done(keel_db_write_t *w, int err, const char *why)
{
    op_t *o = w->data;
    keel_service_req_enter(o->req);
    if (err != 0) {
        keel_log_warn("payment: ledger write failed", KF_STR("order", o->order),
                      KF_STR("error", why));
        keel_http_respond_error(o->req->http, 503, "the ledger could not be written; retry");
    } else if (o->ans.error != NULL) {
        keel_http_respond_error(o->req->http, o->ans.status, o->ans.error);
    } else {
        if (o->ans.count)
            keel_counter_inc(o->ans.count);
        respond(o->req, o->ans.status, o->order, o->ans.state, o->ans.amount);
    }
    free(o);
}

static void op_submit(app_t *a, op_t *o)
{
    o->w = (keel_db_write_t){
        .apply = o->refund ? apply_refund : apply_charge, .done = op_done, .data = o};
    int rc = keel_db_group_submit(&a->writer, &o->w);
    if (rc != 0) {
        keel_http_respond_error(o->req->http, 503,
                                rc == KEEL_EBUSY ? "the ledger's write queue is full; retry"
                                                 : "the ledger is closing; retry");
        free(o);
    }
}

static op_t *op_new(app_t *a, keel_service_req_t *r, bool refund, const char *order)
{
    op_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        keel_http_respond_error(r->http, 503, "out of memory");
        return NULL;
    }
    o->a = a;
    o->req = r;
    o->refund = refund;
    snprintf(o->order, sizeof(o->order), "%s", order);
    return o;
}

/* ---- handlers -------------------------------------------------------------------------- */

typedef struct slow {
    keel_timer_t t;
    op_t *op;
} slow_t;

static void slow_closed(keel_timer_t *t)
{
    free(t); /* first member */
}

static void slow_fire(keel_timer_t *t, void *data)
{
    slow_t *s = data;
    op_submit(s->op->a, s->op);
    keel_timer_close(t, slow_closed);
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
    /* A known order answers from its row, whatever the card says now. For a fine or declined
     * card the write's apply reads the row first anyway (inside the transaction); a card that
     * fails or dawdles is looked up here first, on the loop's connection (a committed row is
     * final), so that a repeat is not refused or kept waiting by the processor. */
    bool fail = strcmp(cd, "fail") == 0, slow = strcmp(cd, "slow") == 0 && a->slow_ms > 0;
    if (fail || slow) {
        charge_t c;
        keel_errmsg_t msg = {{0}};
        if (charge_get(&a->db, o, &c, &msg) != 0) {
            keel_http_respond_error(r->http, 503, "the ledger could not be read");
            return;
        }
        if (c.found) {
            answer_t ans = {0};
            answer_from_row(&c, cu, amount, &ans);
            if (ans.error)
                keel_http_respond_error(r->http, ans.status, ans.error);
            else
                respond(r, ans.status, o, ans.state, ans.amount);
            return;
        }
    }
    if (fail) { /* the processor is down: nothing happened */
        keel_counter_inc(a->m_failed);
        keel_http_respond_error(r->http, 502, "card processor unavailable; nothing was charged");
        return;
    }
    op_t *op = op_new(a, r, false, o);
    if (op == NULL)
        return;
    snprintf(op->customer, sizeof(op->customer), "%s", cu);
    op->amount = amount;
    op->decline = strcmp(cd, "decline") == 0;
    if (slow) {
        slow_t *s = calloc(1, sizeof(*s));
        if (s == NULL || keel_timer_init(a->loop, &s->t) != 0) {
            free(s);
            free(op);
            keel_http_respond_error(r->http, 503, "out of memory");
            return;
        }
        s->op = op;
        keel_timer_start(&s->t, (keel_ms_t)a->slow_ms, 0, slow_fire, s);
        return;
    }
    op_submit(a, op);
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
    op_t *op = op_new(a, r, true, order);
    if (op != NULL)
        op_submit(a, op);
}

static void h_show(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char order[ID_BYTES_MAX + 1];
    if (!order_param(r, order))
        return;
    charge_t c;
    keel_errmsg_t msg = {{0}};
    if (charge_get(&a->db, order, &c, &msg) != 0) {
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

static void writer_closed(keel_db_group_t *g)
{
    (void)g;
}

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    keel_outbox_relay_close(&a->relay, relay_closed); /* unsent rows go at the next start */
    keel_db_group_close(&a->writer, writer_closed);   /* a batch in flight is answered first */
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
#ifdef __GLIBC__
    /* The writer's thread allocates in an arena of its own (statements, JSON), and glibc
     * gives an arena's free top back to the kernel (madvise) past M_TRIM_THRESHOLD: a TLB
     * shootdown across the cores per batch, 4% of this process's CPU in a profile at 300
     * orders/s. A fixed threshold of 32 MiB keeps the pages. */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
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
    keel_db_busy_steps(&app.db, 500); /* the relay's marks meet the writers' commits: on the loop */
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
    }
    keel_outbox_relay_config_t rcfg = keel_outbox_relay_config_default();
    rcfg.db = &app.db;
    rcfg.servers = keel;
    rcfg.producer = "shop-payment"; /* one per database file: the instances share one */
    rcfg.metrics = svc.metrics;
    rcfg.metrics_labels = "service=\"payment\"";
    keel_db_group_config_t gcfg = keel_db_group_config_default();
    gcfg.path = db;
    gcfg.metrics = svc.metrics;
    gcfg.metrics_labels = "db=\"ledger\"";
    if (rc == 0)
        rc = keel_db_group_init(&app.writer, &loop, &gcfg, &msg);
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
