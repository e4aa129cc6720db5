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
#include "../shop.h"
#include "runtime/clock.h"
#include "runtime/sqlite.h"
#include "tx/inbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM "es:$ce-order"
#define GROUP "shipments"
#define INBOX "shipment" /* the inbox's consumer name: this effect */
#define BATCH_ENTRIES_MAX 100
#define BATCH "100"
#define ENTRY_ID_BYTES_MAX 47 /* "<ms>-<seq>": two 20-digit numbers and a dash */
#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define LIST_LIMIT_MAX 1000
#define READ_BLOCK_MS "1000"
#define READ_TIMEOUT_MS 5000
#define RETRY_MS 500          /* after a failed read or batch */
#define CLAIM_EVERY_MS 1000   /* XAUTOCLAIM of idle entries */
#define PRUNE_EVERY_MS 600000 /* inbox ids older than INBOX_KEEP_MS are deleted */
#define INBOX_KEEP_MS 86400000
#define TICK_MS_MAX 1000

typedef struct app {
    keel_loop_t *loop;
    keel_db_t db;
    keel_client_t cl;  /* the consumer: reads, acknowledgements, claims */
    keel_client_t ctl; /* the group's setup and /lag (never behind a blocked read) */
    char consumer[96];
    int64_t pack_ms, ship_ms, claim_idle_ms;
    keel_timer_t again, tick;
    bool stopping, own; /* own: read this consumer's pending entries (id 0), not new ones */
    bool claiming;
    char claim_cursor[ENTRY_ID_BYTES_MAX + 1];
    int64_t claim_at_ms, prune_at_ms;
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

static void read_more(app_t *a);

static const keel_resp_value_t *field(const keel_resp_value_t *fields, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; fields->type == KEEL_RESP_ARRAY && i + 1 < fields->elems_len; i += 2) {
        const keel_resp_value_t *k = &fields->elems[i];
        if (k->type == KEEL_RESP_BULK && k->str.len == n && memcmp(k->str.ptr, name, n) == 0)
            return &fields->elems[i + 1];
    }
    return NULL;
}

static bool bulk_is(const keel_resp_value_t *v, const char *s)
{
    return v && v->type == KEEL_RESP_BULK && v->str.len == strlen(s) &&
           memcmp(v->str.ptr, s, v->str.len) == 0;
}

/* One entry's effect, inside the batch's transaction. An entry that is not an order's
 * outcome, or not an order's at all, has none (and is acknowledged with the rest). */
static int apply_entry(app_t *a, const char *id, const keel_resp_value_t *fields,
                       keel_errmsg_t *msg)
{
    const keel_resp_value_t *type = field(fields, "type"), *agg = field(fields, "agg");
    bool confirmed = bulk_is(type, "confirmed"), rejected = bulk_is(type, "rejected");
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

static void on_ignored(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    (void)ctx;
    (void)status;
    (void)r; /* XGROUP CREATE: BUSYGROUP when the group exists; any failure meets NOGROUP */
}

static void on_done(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    app_t *a = ctx;
    (void)cl;
    /* an XACK lost with its connection: the entries stay pending with this consumer, read
     * again from its own list (the inbox makes that harmless) */
    if (status != 0 || (r && r->type == KEEL_RESP_ERROR))
        a->own = true;
}

/* A batch of entries ([id, fields] each): applied in one transaction, then acknowledged.
 * 0, or the failure (nothing applied, nothing acknowledged: read again from this
 * consumer's own pending entries). */
static int apply_batch(app_t *a, const keel_resp_value_t *entries)
{
    char ids[BATCH_ENTRIES_MAX][ENTRY_ID_BYTES_MAX + 1];
    size_t n = 0;
    keel_errmsg_t msg = {{0}};
    if (entries->type != KEEL_RESP_ARRAY || entries->elems_len == 0)
        return 0;
    int rc = keel_db_begin(&a->db, &msg);
    for (size_t e = 0; rc == 0 && e < entries->elems_len && n < BATCH_ENTRIES_MAX; e++) {
        const keel_resp_value_t *entry = &entries->elems[e];
        if (entry->type != KEEL_RESP_ARRAY || entry->elems_len != 2 ||
            entry->elems[0].type != KEEL_RESP_BULK || entry->elems[0].str.len > ENTRY_ID_BYTES_MAX)
            continue;
        snprintf(ids[n], sizeof(ids[n]), "%.*s", (int)entry->elems[0].str.len,
                 (const char *)entry->elems[0].str.ptr);
        /* a deleted entry comes back as [id, nil]: nothing to apply, acknowledged */
        if (entry->elems[1].type == KEEL_RESP_ARRAY)
            rc = apply_entry(a, ids[n], &entry->elems[1], &msg);
        n++;
    }
    if (rc == 0)
        rc = keel_db_commit(&a->db, &msg);
    else if (keel_db_in_tx(&a->db))
        keel_db_rollback(&a->db);
    if (rc != 0) {
        keel_log_warn("shipment: a batch was not applied; read again", KF_STR("error", msg.text));
        return rc;
    }
    if (n == 0)
        return 0;
    const char *argv[3 + BATCH_ENTRIES_MAX] = {"XACK", STREAM, GROUP};
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = ids[i];
    keel_client_command(&a->cl, 3 + n, argv, NULL, on_done, a);
    return 0;
}

static void again_fire(keel_timer_t *t, void *data)
{
    (void)t;
    read_more(data);
}

static void retry_later(app_t *a)
{
    a->own = true;
    keel_timer_start(&a->again, RETRY_MS, 0, again_fire, a);
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    app_t *a = ctx;
    (void)cl;
    if (a->stopping)
        return;
    if (status != 0 || r->type == KEEL_RESP_ERROR) {
        /* no group (a fresh cluster lost it?), or keel unreachable: set up, read again */
        if (status == 0 && r->str.len >= 7 && memcmp(r->str.ptr, "NOGROUP", 7) == 0) {
            const char *argv[] = {"XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM"};
            keel_client_command(&a->ctl, 6, argv, NULL, on_ignored, NULL);
        }
        retry_later(a);
        return;
    }
    /* [[stream, [entries...]]], or a null array after BLOCK */
    size_t got = 0;
    for (size_t s = 0; r->type == KEEL_RESP_ARRAY && s < r->elems_len; s++) {
        const keel_resp_value_t *st = &r->elems[s];
        if (st->type != KEEL_RESP_ARRAY || st->elems_len != 2)
            continue;
        got += st->elems[1].type == KEEL_RESP_ARRAY ? st->elems[1].elems_len : 0;
        if (apply_batch(a, &st->elems[1]) != 0) {
            retry_later(a);
            return;
        }
    }
    if (a->own && got == 0)
        a->own = false; /* its own list is empty: new entries from now on */
    read_more(a);
}

static void read_more(app_t *a)
{
    if (a->stopping)
        return;
    const char *argv[] = {
        "XREADGROUP", "GROUP",       GROUP,     a->consumer, "COUNT",           BATCH,
        "BLOCK",      READ_BLOCK_MS, "STREAMS", STREAM,      a->own ? "0" : ">"};
    if (keel_client_command_timeout(&a->cl, 11, argv, NULL, READ_TIMEOUT_MS, on_read, a) != 0)
        retry_later(a);
}

/* XAUTOCLAIM's [next cursor, [entries...], [deleted ids...]]: entries idle for
 * --claim-idle-ms with any consumer (one that died) are now this one's: applied as read. */
static void on_claimed(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    app_t *a = ctx;
    (void)cl;
    a->claiming = false;
    if (a->stopping || status != 0 || r->type != KEEL_RESP_ARRAY || r->elems_len < 2)
        return;
    const keel_resp_value_t *next = &r->elems[0];
    if (next->type == KEEL_RESP_BULK && next->str.len <= ENTRY_ID_BYTES_MAX)
        snprintf(a->claim_cursor, sizeof(a->claim_cursor), "%.*s", (int)next->str.len,
                 (const char *)next->str.ptr);
    if (apply_batch(a, &r->elems[1]) != 0)
        a->own = true; /* they are this consumer's now: read from its own list */
}

static void claim(app_t *a)
{
    char idle[24];
    snprintf(idle, sizeof(idle), "%lld", (long long)a->claim_idle_ms);
    const char *argv[] = {"XAUTOCLAIM", STREAM,          GROUP,   a->consumer,
                          idle,         a->claim_cursor, "COUNT", BATCH};
    a->claiming =
        keel_client_command_timeout(&a->cl, 8, argv, NULL, READ_TIMEOUT_MS, on_claimed, a) == 0;
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
    if (!a->claiming && now >= a->claim_at_ms) {
        a->claim_at_ms = now + CLAIM_EVERY_MS;
        claim(a);
    }
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

/* XINFO GROUPS: this group's lag (entries not yet delivered) and pending count. */
static void on_info(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_service_req_t *req = ctx;
    (void)cl;
    keel_service_req_enter(req);
    for (size_t i = 0; status == 0 && r->type == KEEL_RESP_ARRAY && i < r->elems_len; i++) {
        const keel_resp_value_t *g = &r->elems[i];
        const keel_resp_value_t *lag = field(g, "lag"), *pending = field(g, "pending");
        if (!bulk_is(field(g, "name"), GROUP))
            continue;
        json_t *o = json_pack(
            "{s:o, s:o}", "lag_events",
            lag && lag->type == KEEL_RESP_INT ? json_integer(lag->integer) : json_null(), "pending",
            pending && pending->type == KEEL_RESP_INT ? json_integer(pending->integer)
                                                      : json_null());
        keel_service_respond_json(req, 200, o);
        json_decref(o);
        return;
    }
    keel_http_respond_error(req->http, 503, "the group's state could not be read");
}

static void h_lag(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const char *argv[] = {"XINFO", "GROUPS", STREAM};
    if (keel_client_command_timeout(&a->ctl, 3, argv, NULL, READ_TIMEOUT_MS, on_info, r) != 0)
        keel_http_respond_error(r->http, 503, "the group's state could not be read");
}

/* ---- main ---------------------------------------------------------------------------------- */

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    a->stopping = true;
    keel_timer_close(&a->again, NULL);
    keel_timer_close(&a->tick, NULL);
    keel_client_close(&a->cl, NULL); /* entries read and not acknowledged stay pending */
    keel_client_close(&a->ctl, NULL);
}

static int client_init(keel_client_t *cl, keel_loop_t *loop, const char *keel, keel_errmsg_t *msg)
{
    char seeds[1024];
    snprintf(seeds, sizeof(seeds), "%s", keel);
    keel_client_config_t cc = keel_client_config_default();
    cc.request_timeout_ms = 0; /* reads block; each request sets its own deadline */
    int rc = keel_client_config_seeds(&cc, seeds, "--keel", msg);
    return rc != 0 ? rc : keel_client_init(cl, loop, &cc, msg);
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
    app.claim_idle_ms = claim_idle_ms;
    app.own = true; /* first what a previous life under this name left pending */
    snprintf(app.claim_cursor, sizeof(app.claim_cursor), "0-0");
    snprintf(app.consumer, sizeof(app.consumer), "%s", id ? id : listen);
    if (keel_db_open(&app.db, db, &msg) != 0 || keel_inbox_init(&app.db, &msg) != 0 ||
        keel_db_exec(&app.db, SCHEMA, &msg) != 0 ||
        (rc = client_init(&app.cl, &loop, keel, &msg)) != 0 ||
        (rc = client_init(&app.ctl, &loop, keel, &msg)) != 0) {
        fprintf(stderr, "keel-shop-shipment: %s\n", msg.text);
        return 1;
    }
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default("shipment");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = &app;
    rc = keel_service_init(&svc, &loop, &cfg, &msg);
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
        rc = keel_service_route(&svc, "GET", "/lag", h_lag, &app, &msg);
    if (rc == 0 && (rc = keel_timer_init(&loop, &app.again)) == 0)
        rc = keel_timer_init(&loop, &app.tick);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-shipment: %s\n", msg.text);
        return 1;
    }
    /* the group, from the stream's start (idempotent: BUSYGROUP when it exists) */
    const char *create[] = {"XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM"};
    keel_client_command(&app.ctl, 6, create, NULL, on_ignored, NULL);
    int64_t step_ms = (pack_ms < ship_ms ? pack_ms : ship_ms) / 4;
    step_ms = step_ms < 10 ? 10 : step_ms > TICK_MS_MAX ? TICK_MS_MAX : step_ms;
    keel_timer_start(&app.tick, (keel_ms_t)step_ms, (keel_ms_t)step_ms, tick_fire, &app);
    read_more(&app);
    printf("shipment: listening on port %d\n", keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_db_close(&app.db);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
