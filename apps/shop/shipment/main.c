/* shipment - the shop's shipments: a consumer group on the order events that creates one
 * shipment per confirmed order and advances it, pending -> packed -> shipped, on a timer.
 *
 *   keel-shop-shipment --keel host:port,... --db FILE [--listen host:port] [--registry ...]
 *                      [--id ID] [--pack-ms 5000] [--ship-ms 5000] [--claim-idle-ms 10000]
 *                      (also SHIPMENT_* and a YAML file: kit/config)
 *
 *   GET /shipments/:order  200 {"order", "status": pending|packed|shipped|cancelled,
 *                          "created_ms", "packed_ms", "shipped_ms", "cancelled_ms"} (the
 *                          times it has), or 200 {"order", "status": "none"}: no shipment
 *                          (the order is not confirmed, or this service has not seen it yet)
 *   GET /shipments?after=ORDER&limit=N   {"shipments": [{"order", "status"}], "next"}: every
 *                          shipment in order-id order, N (1..1000, default 1000) at a time;
 *                          "next" is the after= of the next page, null at the end
 *   GET /stats             {"pending", "packed", "shipped", "cancelled", "total"} from the
 *                          table, and this instance's "created", "repeated", "redelivered"
 *   GET /lag               {"lag_events", "pending"}: the group's entries not yet delivered,
 *                          and delivered but not yet acknowledged (both 0: caught up)
 *
 * Every instance is a consumer of group "shipments" on the order category stream
 * (es:$ce-order, every event of every order), so the instances share the work. An order's
 * "confirmed" event creates its shipment (pending); "rejected" cancels one that is not yet
 * shipped (the saga cannot produce that today: docs/shop.md says why). Each batch of entries
 * is applied in one SQLite transaction with each entry's id claimed in the tx inbox
 * (tx/inbox.h), and acknowledged (XACK) only after the COMMIT: an entry delivered again (its
 * XACK lost, its consumer dead) finds its id and changes nothing, and a "confirmed" appended
 * twice (the order service retries an append whose answer was lost) meets the shipment's
 * primary key, the order id: one shipment per order, whatever the stream holds.
 *
 * An instance starts by reading its own pending entries (XREADGROUP ... 0: what a previous
 * life under the same --id left unacknowledged), and goes back to them after any failed
 * read or batch; the entries a consumer that never returns left are claimed by whichever
 * instance looks first once they are --claim-idle-ms idle (XAUTOCLAIM, every second).
 *
 * The status advances by time: a shipment pending for --pack-ms is packed, one packed for
 * --ship-ms is shipped, by a tick on every instance (two UPDATEs in one transaction: each
 * shipment moves at most one step per tick, and the instances' ticks serialize on SQLite's
 * lock, so running twice is harmless). The instances share one database file, as payment's
 * do (docs/shop.md).
 */
#include "base/log.h"
#include "client/client.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../consumer.h"
#include "../shop.h"
#include "runtime/clock.h"
#include "runtime/sqlite.h"
#include "tx/inbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP "shipments"
#define INBOX "shipment" /* the inbox's consumer name: this effect */
#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define LIST_LIMIT_MAX 1000
#define RETRY_MS 500          /* after a failed read or batch */
#define CLAIM_EVERY_MS 1000   /* XAUTOCLAIM of idle entries */
#define PRUNE_EVERY_MS 600000 /* inbox ids older than INBOX_KEEP_MS are deleted */
#define INBOX_KEEP_MS 86400000
#define TICK_MS_MAX 1000

typedef struct app {
    keel_loop_t *loop;
    keel_db_t db;
    shop_consumer_t consumer; /* group GROUP on the order events, a connection for /lag */
    int64_t pack_ms, ship_ms;
    keel_timer_t tick;
    bool stopping;
    int64_t prune_at_ms;
    uint64_t created, repeated, redelivered, cancelled, skipped;
    keel_counter_t *m_created, *m_repeated, *m_redelivered, *m_cancelled, *m_packed, *m_shipped;
} app_t;

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS shipments ("
    " order_id TEXT PRIMARY KEY,"
    " status TEXT NOT NULL CHECK (status IN ('pending','packed','shipped','cancelled')),"
    " created_ms INTEGER NOT NULL, packed_ms INTEGER, shipped_ms INTEGER, cancelled_ms INTEGER,"
    " entry TEXT NOT NULL);" /* the stream entry that created it */
    "CREATE INDEX IF NOT EXISTS shipments_status ON shipments (status);";

static int run_sql(app_t *a, const char *sql, const char *t1, const char *t2, int64_t i1,
                   int *changes, keel_errmsg_t *msg)
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
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (changes)
        *changes = sqlite3_changes(keel_db_handle(&a->db));
    return src == SQLITE_DONE ? 0 : keel_db_error(&a->db, src, "write", msg);
}

/* ---- the consumer ----------------------------------------------------------------------- */

/* One entry's effect, inside the batch's transaction. An entry that is not an order's
 * outcome, or not an order's at all, has none (and is acknowledged with the rest). */
static int apply_entry(app_t *a, const char *id, const keel_resp_value_t *fields,
                       keel_errmsg_t *msg)
{
    const keel_resp_value_t *type = shop_field(fields, "type"), *agg = shop_field(fields, "agg");
    bool confirmed = shop_bulk_is(type, "confirmed"), rejected = shop_bulk_is(type, "rejected");
    if (!confirmed && !rejected)
        return 0;
    if (agg == NULL || agg->type != KEEL_RESP_BULK || agg->str.len <= 6 ||
        memcmp(agg->str.ptr, "order-", 6) != 0 ||
        !shop_id_ok((const char *)agg->str.ptr + 6, agg->str.len - 6)) {
        a->skipped++;
        keel_log_warn("shipment: an outcome event without an order id", KF_STR("entry", id));
        return 0;
    }
    char order[ID_BYTES_MAX + 1];
    snprintf(order, sizeof(order), "%.*s", (int)(agg->str.len - 6), (const char *)agg->str.ptr + 6);
    int rc = keel_inbox_claim(&a->db, INBOX, id, strlen(id), msg);
    if (rc == KEEL_EEXISTS) { /* delivered before and committed: its effect is in */
        a->redelivered++;
        keel_counter_inc(a->m_redelivered);
        return 0;
    }
    if (rc != 0)
        return rc;
    int changed = 0;
    int64_t now = keel_clock_unix_ms();
    if (confirmed) {
        rc = run_sql(a,
                     "INSERT INTO shipments (order_id, status, created_ms, entry)"
                     " VALUES (?1, 'pending', ?3, ?2) ON CONFLICT (order_id) DO NOTHING",
                     order, id, now, &changed, msg);
        if (rc == 0 && changed) {
            a->created++;
            keel_counter_inc(a->m_created);
        } else if (rc == 0) { /* the order's outcome appended twice: still one shipment */
            a->repeated++;
            keel_counter_inc(a->m_repeated);
        }
        return rc;
    }
    rc = run_sql(a,
                 "UPDATE shipments SET status = 'cancelled', cancelled_ms = ?3"
                 " WHERE order_id = ?1 AND status IN ('pending', 'packed')",
                 order, NULL, now, &changed, msg);
    if (rc == 0 && changed) {
        a->cancelled++;
        keel_counter_inc(a->m_cancelled);
        keel_log_warn("shipment: cancelled (the order was rejected after it was confirmed)",
                      KF_STR("order", order));
    }
    return rc;
}

/* A batch of entries: applied in one transaction, acknowledged by the consumer after the
 * COMMIT. 0, or the failure (nothing applied, nothing acknowledged: read again from this
 * consumer's own pending entries). A deleted entry (no fields) has nothing to apply. */
static int apply_batch(shop_consumer_t *c, shop_entry_t *entries, size_t n, void *data)
{
    app_t *a = data;
    keel_errmsg_t msg = {{0}};
    (void)c;
    int rc = keel_db_begin(&a->db, &msg);
    for (size_t e = 0; rc == 0 && e < n; e++)
        if (entries[e].fields != NULL)
            rc = apply_entry(a, entries[e].id, entries[e].fields, &msg);
    if (rc == 0)
        rc = keel_db_commit(&a->db, &msg);
    else if (keel_db_in_tx(&a->db))
        keel_db_rollback(&a->db);
    if (rc != 0)
        keel_log_warn("shipment: a batch was not applied; read again", KF_STR("error", msg.text));
    return rc;
}

/* ---- the status, by time ---------------------------------------------------------------- */

/* One step: sql with ?1 = now, ?2 = how long the previous status must have lasted. */
static int move(app_t *a, const char *sql, int64_t now, int64_t after_ms, int *changes,
                keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(&a->db, sql, &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, after_ms);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    *changes = sqlite3_changes(keel_db_handle(&a->db));
    return src == SQLITE_DONE ? 0 : keel_db_error(&a->db, src, "advance", msg);
}

static void advance(app_t *a)
{
    keel_errmsg_t msg = {{0}};
    int64_t now = keel_clock_unix_ms();
    int shipped = 0, packed = 0;
    int rc = keel_db_begin(&a->db, &msg);
    /* shipped first: a shipment packed by this same tick waits for the next one */
    if (rc == 0)
        rc = move(a,
                  "UPDATE shipments SET status = 'shipped', shipped_ms = ?1"
                  " WHERE status = 'packed' AND packed_ms <= ?1 - ?2",
                  now, a->ship_ms, &shipped, &msg);
    if (rc == 0)
        rc = move(a,
                  "UPDATE shipments SET status = 'packed', packed_ms = ?1"
                  " WHERE status = 'pending' AND created_ms <= ?1 - ?2",
                  now, a->pack_ms, &packed, &msg);
    if (rc == 0)
        rc = keel_db_commit(&a->db, &msg);
    else if (keel_db_in_tx(&a->db))
        keel_db_rollback(&a->db);
    if (rc != 0) {
        keel_log_warn("shipment: statuses not advanced", KF_STR("error", msg.text));
        return;
    }
    keel_counter_add(a->m_shipped, (uint64_t)shipped);
    keel_counter_add(a->m_packed, (uint64_t)packed);
}

static void tick_fire(keel_timer_t *t, void *data)
{
    app_t *a = data;
    (void)t;
    if (a->stopping)
        return;
    advance(a);
    int64_t now = keel_clock_unix_ms();
    if (now >= a->prune_at_ms) {
        a->prune_at_ms = now + PRUNE_EVERY_MS;
        keel_errmsg_t msg = {{0}};
        if (keel_inbox_prune(&a->db, now - INBOX_KEEP_MS, NULL, &msg) != 0)
            keel_log_warn("shipment: inbox not pruned", KF_STR("error", msg.text));
    }
}

/* ---- handlers -------------------------------------------------------------------------- */

static void h_show(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char order[ID_BYTES_MAX + 1];
    if (!shop_order_param(r, &r->route.params[0], order))
        return;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db,
                        "SELECT status, created_ms, packed_ms, shipped_ms, cancelled_ms"
                        " FROM shipments WHERE order_id = ?1",
                        &st, NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
        return;
    }
    sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    json_t *o = json_pack("{s:s}", "order", order);
    if (src == SQLITE_ROW) {
        static const char *const times[] = {"created_ms", "packed_ms", "shipped_ms",
                                            "cancelled_ms"};
        json_object_set_new(o, "status", json_string((const char *)sqlite3_column_text(st, 0)));
        for (int i = 0; i < 4; i++)
            if (sqlite3_column_type(st, 1 + i) != SQLITE_NULL)
                json_object_set_new(o, times[i],
                                    json_integer((json_int_t)sqlite3_column_int64(st, 1 + i)));
    } else {
        json_object_set_new(o, "status", json_string("none"));
    }
    sqlite3_finalize(st);
    if (src == SQLITE_ROW || src == SQLITE_DONE)
        keel_service_respond_json(r, 200, o);
    else
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
    json_decref(o);
}

/* after=ORDER&limit=N from the query string; false (answered 400) on anything else. */
static bool list_params(keel_service_req_t *r, char *after, int64_t *limit)
{
    const keel_http_msg_t *m = r->http->msg;
    const char *q = m->query, *end = m->query + m->query_len;
    after[0] = '\0';
    *limit = LIST_LIMIT_MAX;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end, *eq = memchr(q, '=', (size_t)(stop - q));
        size_t vn = eq ? (size_t)(stop - eq - 1) : 0;
        const char *v = eq ? eq + 1 : NULL;
        if (eq && (size_t)(eq - q) == 5 && memcmp(q, "after", 5) == 0 &&
            (vn == 0 || shop_id_ok(v, vn))) {
            memcpy(after, v, vn);
            after[vn] = '\0';
        } else if (eq && (size_t)(eq - q) == 5 && memcmp(q, "limit", 5) == 0 && vn > 0 && vn < 6 &&
                   strspn(v, "0123456789") >= vn) {
            *limit = strtoll(v, NULL, 10);
            if (*limit < 1 || *limit > LIST_LIMIT_MAX)
                goto bad;
        } else if (stop != q) {
            goto bad;
        }
        q = stop + 1;
    }
    return true;
bad:
    keel_http_respond_error(r->http, 400,
                            "query: after=ORDER (an order id) and limit=N (1..1000), nothing else");
    return false;
}

static void h_list(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char after[ID_BYTES_MAX + 1];
    int64_t limit;
    if (!list_params(r, after, &limit))
        return;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db,
                        "SELECT order_id, status FROM shipments WHERE order_id > ?1"
                        " ORDER BY order_id LIMIT ?2",
                        &st, NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
        return;
    }
    sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit);
    json_t *list = json_array();
    int src;
    const char *last = NULL;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *s = json_pack("{s:s, s:s}", "order", sqlite3_column_text(st, 0), "status",
                              sqlite3_column_text(st, 1));
        json_array_append_new(list, s);
        last = json_string_value(json_object_get(s, "order"));
    }
    sqlite3_finalize(st);
    if (src != SQLITE_DONE) {
        json_decref(list);
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
        return;
    }
    json_t *o = json_pack("{s:o, s:o}", "shipments", list, "next",
                          (int64_t)json_array_size(list) == limit && last ? json_string(last)
                                                                          : json_null());
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void h_stats(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db, "SELECT status, COUNT(*) FROM shipments GROUP BY status", &st,
                        NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
        return;
    }
    json_t *o =
        json_pack("{s:i, s:i, s:i, s:i}", "pending", 0, "packed", 0, "shipped", 0, "cancelled", 0);
    json_int_t total = 0;
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        json_int_t n = (json_int_t)sqlite3_column_int64(st, 1);
        json_object_set_new(o, (const char *)sqlite3_column_text(st, 0), json_integer(n));
        total += n;
    }
    sqlite3_finalize(st);
    json_object_set_new(o, "total", json_integer(total));
    json_object_set_new(o, "created", json_integer((json_int_t)a->created));
    json_object_set_new(o, "repeated", json_integer((json_int_t)a->repeated));
    json_object_set_new(o, "redelivered", json_integer((json_int_t)a->redelivered));
    if (src == SQLITE_DONE)
        keel_service_respond_json(r, 200, o);
    else
        keel_http_respond_error(r->http, 503, "the shipments could not be read");
    json_decref(o);
}

/* ---- main ---------------------------------------------------------------------------------- */

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    a->stopping = true;
    keel_timer_close(&a->tick, NULL);
    shop_consumer_stop(&a->consumer); /* entries read and not acknowledged stay pending */
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8150", *keel = "127.0.0.1:7001", *registry = NULL, *id = NULL;
    const char *db = NULL;
    int64_t pack_ms = 5000, ship_ms = 5000, claim_idle_ms = 10000;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0, "keel server host:port,... (the order events)"},
        {"db", KEEL_OPT_STR, &db, 0, 0, "the shipments' SQLite file (shared by the instances)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service shipment there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id and consumer name (default from the port)"},
        {"pack-ms", KEEL_OPT_INT, &pack_ms, 1, 86400000, "a shipment is packed this long after"},
        {"ship-ms", KEEL_OPT_INT, &ship_ms, 1, 86400000, "and shipped this long after packing"},
        {"claim-idle-ms", KEEL_OPT_INT, &claim_idle_ms, 100, 3600000,
         "entries a dead consumer left are taken over once idle this long"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-shipment", "SHIPMENT", opts,
                                sizeof(opts) / sizeof(opts[0]), argc, argv);
    if (exit_code >= 0)
        return exit_code;
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    if (db == NULL) {
        fprintf(stderr, "keel-shop-shipment: --db FILE is required\n");
        return 2;
    }
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    static app_t app;
    app.loop = &loop;
    app.pack_ms = pack_ms;
    app.ship_ms = ship_ms;
    shop_consumer_config_t cc =
        shop_consumer_config_default(GROUP, id ? id : listen, apply_batch, &app);
    cc.reread_own = true; /* a batch fails or is acknowledged whole: reread is harmless */
    cc.lag_client = true;
    cc.retry_ms = RETRY_MS;
    cc.claim_idle_ms = claim_idle_ms;
    cc.claim_every_ms = CLAIM_EVERY_MS;
    if (keel_db_open(&app.db, db, &msg) != 0 || keel_inbox_init(&app.db, &msg) != 0 ||
        keel_db_exec(&app.db, SCHEMA, &msg) != 0 ||
        shop_consumer_init(&app.consumer, &loop, keel, &cc, &msg) != 0) {
        fprintf(stderr, "keel-shop-shipment: %s\n", msg.text);
        return 1;
    }
    keel_service_t svc;
    rc = shop_service_init(&svc, &loop, "shipment", listen, registry, id, on_stopped, &app, &msg);
    if (rc == 0) {
        const char *help = "Shipments by what happened to them (on this instance).";
        keel_metrics_t *mx = svc.metrics;
        app.m_created = keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"created\"");
        app.m_repeated =
            keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"repeated\"");
        app.m_redelivered =
            keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"redelivered\"");
        app.m_cancelled =
            keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"cancelled\"");
        app.m_packed = keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"packed\"");
        app.m_shipped = keel_metrics_counter(mx, "shop_shipments_total", help, "event=\"shipped\"");
    }
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/shipments/:order", h_show, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/shipments", h_list, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/stats", h_stats, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/lag", shop_consumer_lag, &app.consumer, &msg);
    if (rc == 0)
        rc = keel_timer_init(&loop, &app.tick);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-shipment: %s\n", msg.text);
        return 1;
    }
    int64_t step_ms = (pack_ms < ship_ms ? pack_ms : ship_ms) / 4;
    step_ms = step_ms < 10 ? 10 : step_ms > TICK_MS_MAX ? TICK_MS_MAX : step_ms;
    keel_timer_start(&app.tick, (keel_ms_t)step_ms, (keel_ms_t)step_ms, tick_fire, &app);
    shop_consumer_start(&app.consumer); /* the group, from the stream's start, then reads */
    shop_service_run(&svc, &loop, "shipment");
    keel_db_close(&app.db);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
