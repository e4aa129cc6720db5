/* check.c - keel-shopload's checks after the load: outcomes resolved, stock, ledger, read side. */
#include "shopload.h"

#include <http_parser.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void violation(run_t *r, const char *fmt, ...)
{
    if (r->violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof(r->why), fmt, ap);
        va_end(ap);
    }
}

/* ---- the orders whose outcome the client did not see
 * -------------------------------------------
 */

/* An order whose outcome we did not see: what the service says it became. */
static void on_resolved(int err, const keel_http_msg_t *resp, void *data)
{
    order_t *o = data;
    run_t *r = o->r;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    const char *st = json_string_value(json_object_get(j, "status"));
    if (st == NULL && ++o->step < 100 + CHECK_TRIES_ORDER) {
        json_decref(j);
        resolve_ask(o);
        return;
    }
    if (st == NULL) {
        violation(r, "order %" PRIu64 ": no answer to GET /reservations", o->id);
    } else if (strcmp(st, "confirmed") == 0) {
        for (int i = 0; i < o->items_n; i++)
            r->confirmed_units[o->product[i]] += o->qty[i];
    }
    json_decref(j);
    r->resolved++;
}

#define RESOLVE_TRIES_SHOP 240 /* an order asked again with its key, every 250 ms: 60 s */

/* Shop: an order of unknown or pending outcome, asked again with the same key (what a
 * client does): its saga's final answer, once it has one. */
static void on_shop_resolved(int err, const keel_http_msg_t *resp, void *data)
{
    order_t *o = data;
    run_t *r = o->r;
    int st = err ? 0 : resp->status;
    o->asking = false;
    if (o->asked_get) { /* GET /orders/:id: its state, as the order's events say */
        json_t *j =
            st == 200 ? json_loadb((const char *)resp->body, resp->body_len, 0, NULL) : NULL;
        const char *state = json_string_value(json_object_get(j, "status"));
        st = state == NULL                     ? (st == 404 ? -404 : 0)
             : strcmp(state, "confirmed") == 0 ? 201
             : strcmp(state, "rejected") == 0  ? 409
             : strcmp(state, "attention") == 0 ? -500
                                               : 202;
        json_decref(j);
        if (st == -404) /* never placed: the first request died before; send it again */
            o->order_id[0] = '\0';
        if (st == -500) {
            violation(r, "order %s: its saga needs attention", o->order_id);
            o->step = -1;
            r->resolved++;
            return;
        }
    } else {
        st = order_answer(err, resp);
        if (st == 202 || st == 201 || st == 409)
            take_order_id(o, resp, o->order_id, sizeof(o->order_id));
    }
    if (st == 201 || st == 409) {
        keep(r, o->order_id, o->key, st == 201);
        if (st == 201) {
            for (int i = 0; i < o->items_n; i++)
                r->confirmed_units[o->product[i]] += o->qty[i];
            r->confirmed_amount += o->amount;
        }
        o->step = -1;
        r->resolved++;
        return;
    }
    if (++o->step >= 100 + RESOLVE_TRIES_SHOP) {
        violation(r, "order key %s: no final answer after 60 s (last %d)", o->key, st);
        o->step = -1;
        r->resolved++;
        return;
    }
    o->next_try_ms = (keel_ms_t)(keel_clock_now_ns() / 1000000) + 250;
}

void shop_resolve_due(run_t *r)
{
    keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    for (size_t i = 0; i < r->uncertain_n; i++) {
        order_t *o = r->uncertain[i];
        if (o->step < 0 || o->asking || o->next_try_ms > now)
            continue;
        o->asking = true;
        o->asked_get = o->order_id[0] != '\0';
        char path[64];
        snprintf(path, sizeof(path), "/orders/%s", o->order_id);
        const char *auth = token(r, o->customer);
        if ((o->asked_get ? request_to(r, r->orders[o->step % r->orders_n], HTTP_GET, path, NULL,
                                       NULL, auth, on_shop_resolved, o)
                          : request_to(r, r->orders[o->step % r->orders_n], HTTP_POST, "/orders",
                                       o->body, o->key, auth, on_shop_resolved, o)) != 0) {
            o->asking = false;
            o->next_try_ms = now + 250;
        }
    }
}

void on_ledger(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *net = json_object_get(j, "net_cents");
    if (!json_is_integer(net)) {
        violation(r, "no answer from the payment ledger");
    } else if (r->phase == CHECK) {
        int64_t moved = json_integer_value(net) - r->net_before;
        if (moved != r->confirmed_amount) {
            violation(r,
                      "payment ledger moved %" PRId64 " cents, the confirmed orders total %" PRId64,
                      moved, r->confirmed_amount);
        }
    } else {
        r->net_before = json_integer_value(net);
    }
    json_decref(j);
    r->ledger_asks++;
}

void resolve_ask(order_t *o)
{
    run_t *r = o->r;
    char path[96];
    snprintf(path, sizeof(path), "/reservations/r%" PRIx64 "-%" PRIu64, r->run_id, o->id);
    if (request(r, (int)(o->step % r->targets_n), HTTP_GET, path, NULL, on_resolved, o) != 0) {
        r->violations++;
        r->resolved++;
    }
}

/* ---- each product's stock
 * ----------------------------------------------------------------------
 */

#define CHECK_TRIES 20 /* a product's GET is asked again (the service may still be busy) */

static void on_product(int err, const keel_http_msg_t *resp, void *data)
{
    check_t *c = data;
    run_t *r = c->r;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    int64_t stock = json_integer_value(json_object_get(j, "stock"));
    int64_t avail = json_integer_value(json_object_get(j, "available"));
    int64_t reserved = json_integer_value(json_object_get(j, "reserved"));
    int64_t want = r->stock - r->confirmed_units[c->product];
    if ((j == NULL || resp->status != 200) && ++c->tries < CHECK_TRIES) {
        json_decref(j);
        check_ask(c); /* not an answer yet: ask again */
        return;
    }
    if (j == NULL || resp->status != 200) {
        violation(r, "product %d: no answer to GET /products", c->product);
    } else if (r->shop && reserved != 0) { /* every saga ended: none holds stock */
        violation(r, "product %d: %" PRId64 " units still reserved after every order ended",
                  c->product, reserved);
    } else if (stock != want || avail < 0 || avail > stock) {
        violation(r,
                  "product %d: stock %" PRId64 " (want %" PRId64 " = %" PRId64 " - %" PRId64
                  " confirmed), available %" PRId64,
                  c->product, stock, want, r->stock, r->confirmed_units[c->product], avail);
    }
    json_decref(j);
    r->checked++;
    free(c);
}

void check_ask(check_t *c)
{
    run_t *r = c->r;
    char path[48];
    snprintf(path, sizeof(path), "/products/r%" PRIx64 "p%d", r->run_id, c->product);
    if (request(r, (c->product + c->tries) % r->targets_n, HTTP_GET, path, NULL, on_product, c) !=
        0) {
        free(c);
        r->checked++;
        violation(r, "could not ask for a product's stock");
    }
}

/* ---- the read side: converged, and equal to the write side ------------------------------- */

static void on_sales(int err, const keel_http_msg_t *resp, void *data)
{
    check_t *c = data;
    run_t *r = c->r;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *units = json_object_get(j, "units");
    if (!json_is_integer(units) || json_integer_value(units) != r->confirmed_units[c->product]) {
        violation(r,
                  "read side: product %d sold %" PRId64 " units per the query service, %" PRId64
                  " per the confirmed orders",
                  c->product, json_is_integer(units) ? (int64_t)json_integer_value(units) : -1,
                  r->confirmed_units[c->product]);
    }
    json_decref(j);
    r->sales_checked++;
    free(c);
}

void on_lag(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    r->lag_asking = false;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *lag = json_object_get(j, "lag_events");
    bool zero = json_is_integer(lag) && json_integer_value(lag) == 0;
    json_decref(j);
    keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    if (!zero && now - r->converge_from_ms < CONVERGE_MS_MAX)
        return; /* asked again at the next tick */
    if (!zero) {
        violation(r, "the read side did not catch up within %d ms", CONVERGE_MS_MAX);
        r->phase = DONE;
        return;
    }
    r->converged_ms = now - r->converge_from_ms;
    r->phase = READ_SIDE;
    for (int p = 0; p < r->products; p++) {
        check_t *c = malloc(sizeof(*c));
        char path[64];
        *c = (check_t){r, p, 0};
        snprintf(path, sizeof(path), "/products/r%" PRIx64 "p%d/sales", r->run_id, p);
        if (c == NULL ||
            request_to(r, r->query, HTTP_GET, path, NULL, NULL, NULL, on_sales, c) != 0) {
            free(c);
            r->sales_checked++;
            r->violations++;
        }
    }
}
