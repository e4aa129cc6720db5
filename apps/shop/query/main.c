/* query - the shop's read side (CQRS): the order events projected into SQLite read models.
 *
 *   keel-shop-query --keel host:port,... --db FILE [--listen host:port] [--registry ...]
 *                   [--id ID]                    (also QUERY_* and a YAML file: kit/config)
 *
 *   GET /customers/:id/orders   {"customer", "orders": [{"order", "status", "amount_cents"}]}
 *                               (the newest 100)
 *   GET /products/:id/sales     {"product", "units", "orders"}: confirmed orders only
 *   GET /lag                    {"lag_events", "checkpoint", "applied", "dead"}
 *
 * One projection, "shop-orders", reads the order category stream (es:$ce-order: every
 * event of every order, tx/evstore.h) through its consumer group, and each batch changes
 * the read model and its checkpoint in one SQLite transaction (tx/projection.h): a crash
 * never applies an event twice or skips one. Eventually consistent: how far behind it is
 * is GET /lag and keel_projection_lag_events in /metrics. One instance per database (the
 * projection's rule); a second would need its own --db and projection name.
 */
#include "base/log.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/sqlite.h"
#include "tx/projection.h"
#include "../consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BYTES_MAX SHOP_ID_BYTES_MAX

typedef struct app {
    keel_db_t db;
    keel_projection_t proj;
    keel_client_t ctl; /* GET /lag's XINFO: never behind the projection's blocked read */
} app_t;

/* ---- the read model ------------------------------------------------------------------- */

static int rm_init(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(
        db,
        "CREATE TABLE IF NOT EXISTS q_orders ("
        " order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, status TEXT NOT NULL,"
        " amount INTEGER NOT NULL, items TEXT NOT NULL, version INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS q_orders_customer ON q_orders (customer);"
        "CREATE TABLE IF NOT EXISTS q_sales ("
        " product TEXT PRIMARY KEY, units INTEGER NOT NULL, orders INTEGER NOT NULL);",
        msg);
}

static int rm_reset(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(db, "DROP TABLE IF EXISTS q_orders; DROP TABLE IF EXISTS q_sales;", msg);
}

static int step(keel_db_t *db, sqlite3_stmt *st, const char *what, keel_errmsg_t *msg)
{
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE || src == SQLITE_ROW ? 0 : keel_db_error(db, src, what, msg);
}

static int placed(keel_db_t *db, const char *order, const keel_projection_event_t *e,
                  keel_errmsg_t *msg)
{
    json_t *j = json_loadb((const char *)e->ev.data, e->ev.data_len, 0, NULL);
    const char *customer = json_string_value(json_object_get(j, "customer"));
    json_t *items = json_object_get(j, "items");
    json_int_t amount = json_integer_value(json_object_get(j, "amount_cents"));
    char *items_text = json_is_array(items) ? json_dumps(items, JSON_COMPACT) : NULL;
    int rc = 0;
    if (customer == NULL || items_text == NULL) {
        rc = keel_errf(msg, KEEL_EINVAL, "placed: no customer or items");
    } else {
        sqlite3_stmt *st;
        rc = keel_db_prepare(
            db,
            "INSERT INTO q_orders (order_id, customer, status, amount, items, version)"
            " VALUES (?1, ?2, 'placed', ?3, ?4, ?5) ON CONFLICT (order_id) DO NOTHING",
            &st, msg);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, customer, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, amount);
            sqlite3_bind_text(st, 4, items_text, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, (sqlite3_int64)e->ev.version);
            rc = step(db, st, "insert order", msg);
        }
    }
    free(items_text);
    json_decref(j);
    return rc;
}

/* An outcome: the order's status; a first "confirmed" adds its items to the sales. */
static int outcome(keel_db_t *db, const char *order, const char *status,
                   const keel_projection_event_t *e, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc =
        keel_db_prepare(db, "SELECT status, items FROM q_orders WHERE order_id = ?1", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return keel_errf(msg, KEEL_ENOTFOUND, "%s before the order was placed", status);
    }
    bool was_confirmed = strcmp((const char *)sqlite3_column_text(st, 0), "confirmed") == 0;
    json_t *items = json_loads((const char *)sqlite3_column_text(st, 1), 0, NULL);
    sqlite3_finalize(st);
    if (strcmp(status, "confirmed") == 0 && !was_confirmed) { /* a repeated fact counts once */
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            const char *product = json_string_value(json_object_get(it, "product"));
            json_int_t qty = json_integer_value(json_object_get(it, "qty"));
            if (product == NULL)
                continue;
            if ((rc = keel_db_prepare(
                     db,
                     "INSERT INTO q_sales (product, units, orders) VALUES (?1, ?2, 1)"
                     " ON CONFLICT (product) DO UPDATE SET units = units + ?2,"
                     " orders = orders + 1",
                     &st, msg)) != 0)
                break;
            sqlite3_bind_text(st, 1, product, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, qty);
            if ((rc = step(db, st, "add sales", msg)) != 0)
                break;
        }
    }
    json_decref(items);
    if (rc == 0 && (rc = keel_db_prepare(db,
                                         "UPDATE q_orders SET status = ?2, version = ?3"
                                         " WHERE order_id = ?1",
                                         &st, msg)) == 0) {
        sqlite3_bind_text(st, 1, order, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)e->ev.version);
        rc = step(db, st, "update order", msg);
    }
    return rc;
}

static int rm_apply(void *data, keel_db_t *db, const keel_projection_event_t *e, keel_errmsg_t *msg)
{
    (void)data;
    char order[ID_BYTES_MAX + 1], type[32];
    /* the aggregate is "order-<id>" */
    if (e->agg_len <= 6 || e->agg_len - 6 > ID_BYTES_MAX || memcmp(e->agg, "order-", 6) != 0)
        return keel_errf(msg, KEEL_EINVAL, "not an order event");
    snprintf(order, sizeof(order), "%.*s", (int)(e->agg_len - 6), e->agg + 6);
    snprintf(type, sizeof(type), "%.*s", (int)e->ev.type_len, e->ev.type);
    if (strcmp(type, "placed") == 0)
        return placed(db, order, e, msg);
    if (strcmp(type, "confirmed") == 0 || strcmp(type, "rejected") == 0 ||
        strcmp(type, "attention") == 0)
        return outcome(db, order, type, e, msg);
    return keel_errf(msg, KEEL_EINVAL, "unknown event type %s", type);
}

/* ---- handlers -------------------------------------------------------------------------- */

static bool id_param(keel_service_req_t *r, char *out)
{
    const keel_route_param_t *p = &r->route.params[0];
    if (p->value_len == 0 || p->value_len > ID_BYTES_MAX) {
        keel_http_respond_error(r->http, 400, "ids are 1 to 64 bytes");
        return false;
    }
    memcpy(out, p->value, p->value_len);
    out[p->value_len] = '\0';
    return true;
}

static void h_customer(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char id[ID_BYTES_MAX + 1];
    if (!id_param(r, id))
        return;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db,
                        "SELECT order_id, status, amount FROM q_orders WHERE customer = ?1"
                        " ORDER BY rowid DESC LIMIT 100",
                        &st, NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the read model is not ready");
        return;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    json_t *orders = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(orders,
                              json_pack("{s:s, s:s, s:I}", "order", sqlite3_column_text(st, 0),
                                        "status", sqlite3_column_text(st, 1), "amount_cents",
                                        (json_int_t)sqlite3_column_int64(st, 2)));
    sqlite3_finalize(st);
    json_t *o = json_pack("{s:s, s:o}", "customer", id, "orders", orders);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void h_sales(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    char id[ID_BYTES_MAX + 1];
    if (!id_param(r, id))
        return;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db, "SELECT units, orders FROM q_sales WHERE product = ?1", &st,
                        NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the read model is not ready");
        return;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int64_t units = 0, orders = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        units = sqlite3_column_int64(st, 0);
        orders = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    json_t *o = json_pack("{s:s, s:I, s:I}", "product", id, "units", (json_int_t)units, "orders",
                          (json_int_t)orders);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

/* The group's lag read now (XINFO GROUPS: entries not yet delivered, plus delivered and not
 * yet applied): the projection's own figure is from its last batch, and between batches
 * (linger_ms) events may have arrived, so "0" from it would not mean caught up. */
static void on_lag_info(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_service_req_t *req = ctx;
    const app_t *a = (const app_t *)(const void *)((const char *)cl - offsetof(app_t, ctl));
    keel_service_req_enter(req);
    const keel_resp_value_t *g = status == 0 ? shop_group_info(r, a->proj.name) : NULL;
    const keel_resp_value_t *lag = g ? shop_field(g, "lag") : NULL;
    const keel_resp_value_t *pending = g ? shop_field(g, "pending") : NULL;
    if (lag != NULL && lag->type == KEEL_RESP_INT && pending != NULL &&
        pending->type == KEEL_RESP_INT) {
        const keel_projection_stats_t *s = keel_projection_stats(&a->proj);
        keel_stream_id_t cp = keel_projection_checkpoint(&a->proj);
        char cps[48];
        snprintf(cps, sizeof(cps), "%llu-%llu", (unsigned long long)cp.ms,
                 (unsigned long long)cp.seq);
        json_t *o = json_pack("{s:I, s:s, s:I, s:I}", "lag_events",
                              (json_int_t)(lag->integer + pending->integer), "checkpoint", cps,
                              "applied", (json_int_t)s->applied, "dead", (json_int_t)s->dead);
        keel_service_respond_json(req, 200, o);
        json_decref(o);
        return;
    }
    keel_http_respond_error(req->http, 503, "the projection's lag could not be read");
}

static void h_lag(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const char *argv[] = {"XINFO", "GROUPS", SHOP_ORDER_EVENTS};
    if (keel_client_command_timeout(&a->ctl, 3, argv, NULL, 5000, on_lag_info, r) != 0)
        keel_http_respond_error(r->http, 503, "the projection's lag could not be read");
}

/* ---- main ---------------------------------------------------------------------------------- */

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    keel_projection_stop(&a->proj, NULL, NULL);
    keel_client_close(&a->ctl, NULL);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8130", *keel = "127.0.0.1:7001", *registry = NULL, *id = NULL;
    const char *db = NULL;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0, "keel server host:port,... (the order events)"},
        {"db", KEEL_OPT_STR, &db, 0, 0, "the read model's SQLite file (one instance each)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service query there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id (default query-<host>-<port>)"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-query", "QUERY", opts,
                                sizeof(opts) / sizeof(opts[0]), argc, argv);
    if (exit_code >= 0)
        return exit_code;
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    if (db == NULL) {
        fprintf(stderr, "keel-shop-query: --db FILE is required\n");
        return 2;
    }
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    static app_t app;
    if (keel_db_open(&app.db, db, &msg) != 0) {
        fprintf(stderr, "keel-shop-query: %s\n", msg.text);
        return 1;
    }
    keel_service_t svc;
    rc = shop_service_init(&svc, &loop, "query", listen, registry, id, on_stopped, &app, &msg);
    char seeds[1024];
    snprintf(seeds, sizeof(seeds), "%s", keel);
    keel_client_config_t tmp = keel_client_config_default();
    if (rc == 0)
        rc = keel_client_config_seeds(&tmp, seeds, "--keel", &msg);
    keel_projection_config_t pc = keel_projection_config_default();
    pc.name = "shop-orders";
    pc.stream = SHOP_ORDER_EVENTS;
    for (size_t i = 0; i < tmp.seeds_n; i++)
        pc.seeds[pc.seeds_n++] = tmp.seeds[i];
    pc.metrics = svc.metrics;
    pc.linger_ms = 20; /* a batch (one read, one SQLite commit, one XACK) per 20 ms at most */
    const keel_projection_handler_t h = {rm_init, rm_reset, rm_apply, &app};
    if (rc == 0)
        rc = keel_projection_start(&app.proj, &loop, &pc, &app.db, &h, &msg);
    if (rc == 0)
        rc = shop_client_init(&app.ctl, &loop, keel, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/customers/:id/orders", h_customer, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/products/:id/sales", h_sales, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/lag", h_lag, &app, &msg);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-query: %s\n", msg.text);
        return 1;
    }
    shop_service_run(&svc, &loop, "query");
    keel_db_close(&app.db);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
