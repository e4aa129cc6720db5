/* orders - an example service on the kit with the transactional outbox and idempotency keys
 * (docs/tx.md): an order and its event are one SQLite transaction, a relay in the same
 * process publishes the events to a keel stream, and a retried POST creates nothing twice.
 *
 *   keel-example-orders --db FILE --servers host:port,... [--listen host:port]
 *                       [--producer id] [--stream name]
 *
 *   POST /orders       body: the item. Honours Idempotency-Key. In one transaction: the order
 *                      row and an outbox row {"order":N,"item":...}; then 201 {"id":N} with
 *                      Location /orders/N. The relay is kicked at once.
 *   GET  /orders/:id   {"id":N,"item":...} or 404
 *   plus /health/live, /health/ready, and /metrics with the relay's keel_outbox_* and keel_idem_*
 * series.
 * --servers is keel server's client addresses: the idempotency keys and the stream (default
 * "orders.events"); --producer (default "orders-1") must be unique to the database file.
 */
#include "base/num.h"
#include "kit/service.h"
#include "runtime/sqlite.h"
#include "tx/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_BYTES_MAX 1024u

typedef struct app {
    keel_db_t db;
    keel_outbox_relay_t relay;
    const char *stream;
} app_t;

static int64_t param_id(const keel_service_req_t *r)
{
    int64_t id;
    const keel_route_param_t *p = &r->route.params[0];
    return keel_parse_i64((const uint8_t *)p->value, p->value_len, &id) == 0 ? id : -1;
}

/* The order and its event: both or neither. */
static int create(app_t *a, const char *item, size_t item_len, int64_t *id, keel_errmsg_t *msg)
{
    int rc = keel_db_begin(&a->db, msg);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st;
    rc = keel_db_prepare(&a->db, "INSERT INTO orders (item) VALUES (?1)", &st, msg);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, item, (int)item_len, SQLITE_STATIC);
        int src = sqlite3_step(st);
        sqlite3_finalize(st);
        rc = src == SQLITE_DONE ? 0 : keel_db_error(&a->db, src, "insert order", msg);
    }
    char *event = NULL;
    if (rc == 0) {
        *id = sqlite3_last_insert_rowid(keel_db_handle(&a->db));
        json_t *e = json_pack("{s:I, s:s%}", "order", (json_int_t)*id, "item", item, item_len);
        event = e ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
        rc = event ? keel_outbox_add(&a->db, a->stream, event, strlen(event), NULL, msg)
                   : keel_errf(msg, KEEL_EINVAL, "the item is not UTF-8 text");
    }
    free(event);
    if (rc == 0)
        rc = keel_db_commit(&a->db, msg);
    else
        keel_db_rollback(&a->db);
    return rc;
}

static void post_order(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    const keel_http_msg_t *m = r->http->msg;
    if (m->body_len == 0 || m->body_len > ITEM_BYTES_MAX) {
        keel_http_respond_error(r->http, 400, "an item of 1 to 1024 bytes");
        return;
    }
    int64_t id = 0;
    keel_errmsg_t msg = {{0}};
    int rc = create(a, (const char *)m->body, m->body_len, &id, &msg);
    if (rc == KEEL_EINVAL) {
        keel_http_respond_error(r->http, 400, msg.text);
        return;
    }
    if (rc != 0) {
        keel_http_respond_error(r->http, 503, "the order could not be stored");
        return;
    }
    keel_outbox_relay_kick(&a->relay); /* publish now rather than at the next poll */
    char body[64], location[48];
    int n = snprintf(body, sizeof(body), "{\"id\":%lld}", (long long)id);
    snprintf(location, sizeof(location), "/orders/%lld", (long long)id);
    keel_http_header_t h[2] = {
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16},
        {.name = "Location", .name_len = 8, .value = location, .value_len = strlen(location)}};
    keel_http_respond(r->http, 201, h, 2, body, (size_t)n);
}

static void get_order(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    sqlite3_stmt *st;
    if (keel_db_prepare(&a->db, "SELECT item FROM orders WHERE id = ?1", &st, NULL) != 0) {
        keel_http_respond_error(r->http, 503, "the orders cannot be read");
        return;
    }
    sqlite3_bind_int64(st, 1, param_id(r));
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        keel_http_respond_error(r->http, 404, "no such order");
        return;
    }
    json_t *o =
        json_pack("{s:I, s:s%}", "id", (json_int_t)param_id(r), "item",
                  (const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_finalize(st);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void relay_closed(keel_outbox_relay_t *r)
{
    (void)r;
}

static void on_drain(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    /* unpublished rows stay in the table: the next start publishes them */
    keel_outbox_relay_close(&a->relay, relay_closed);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8081", *path = NULL, *servers = NULL;
    const char *producer = "orders-1";
    app_t app = {.stream = "orders.events"};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--listen") == 0)
            listen = v;
        else if (strcmp(a, "--db") == 0)
            path = v;
        else if (strcmp(a, "--servers") == 0)
            servers = v;
        else if (strcmp(a, "--producer") == 0)
            producer = v;
        else if (strcmp(a, "--stream") == 0)
            app.stream = v;
        else
            path = NULL, argc = 0; /* unknown: usage */
    }
    if (path == NULL || servers == NULL || argc % 2 != 1) {
        fprintf(stderr, "usage: keel-example-orders --db FILE --servers host:port,... "
                        "[--listen host:port] [--producer id] [--stream name]\n");
        return 2;
    }
    keel_errmsg_t msg = {{0}};
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    if (keel_db_open(&app.db, path, &msg) != 0 || keel_outbox_init(&app.db, &msg) != 0 ||
        keel_db_exec(&app.db,
                     "CREATE TABLE IF NOT EXISTS orders ("
                     " id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL)",
                     &msg) != 0) {
        fprintf(stderr, "orders: %s\n", msg.text);
        return 1;
    }
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default("orders");
    cfg.listen = listen;
    cfg.idem.servers = servers;
    cfg.on_drain = on_drain;
    cfg.on_drain_data = &app;
    int rc = keel_service_init(&svc, &loop, &cfg, &msg);
    keel_outbox_relay_config_t rc_cfg = keel_outbox_relay_config_default();
    rc_cfg.db = &app.db;
    rc_cfg.servers = servers;
    rc_cfg.producer = producer;
    rc_cfg.metrics = svc.metrics; /* the relay's series on the service's /metrics */
    rc_cfg.metrics_labels = "service=\"orders\"";
    if (rc == 0)
        rc = keel_outbox_relay_init(&app.relay, &loop, &rc_cfg, &msg);
    if (rc == 0)
        rc = keel_service_route_idem(&svc, "POST", "/orders", post_order, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&svc, "GET", "/orders/:id", get_order, &app, &msg);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "orders: %s\n", msg.text);
        return 1;
    }
    keel_outbox_relay_start(&app.relay); /* rows a crash left unsent go first */
    printf("orders: listening on port %d\n", keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_db_close(&app.db);
    keel_loop_close(&loop);
    return 0;
}
