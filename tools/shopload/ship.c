/* ship.c - keel-shopload's shipment check: one shipment per confirmed order and no other. */
#include "shopload.h"

#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A shop order's final outcome, remembered for the shipment check (--shipments). */
void keep(run_t *r, const char *order_id, const char *key, bool confirmed)
{
    if (r->shipments_n == 0)
        return;
    if (order_id[0] == '\0') {
        r->kept_without_id++;
        violation(r, "order key %s: a final answer without an order id", key);
        return;
    }
    if (r->kept_n == r->kept_cap) {
        size_t cap = r->kept_cap ? 2 * r->kept_cap : 4096;
        kept_t *k = cap <= KEPT_MAX ? realloc(r->kept, cap * sizeof(*k)) : NULL;
        if (k == NULL) {
            r->kept_dropped++; /* the check says it did not see every order */
            return;
        }
        r->kept = k;
        r->kept_cap = cap;
    }
    kept_t *k = &r->kept[r->kept_n++];
    snprintf(k->id, sizeof(k->id), "%s", order_id);
    k->confirmed = confirmed;
}

/* ---- the shipments: caught up, then one per confirmed order and no other ----------------- */

bool ship_begin(run_t *r)
{
    if (r->shipments_n == 0)
        return false;
    r->phase = SHIP_CONVERGE;
    r->ship_from_ms = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    r->ship_tries = 0;
    return true;
}

static int by_id(const void *x, const void *y)
{
    return strcmp(x, y); /* kept_t and ship_t both start with their id */
}

static const char *const ship_states[4] = {"pending", "packed", "shipped", "cancelled"};

/* Every order of the run against the listed shipments, both sorted by order id. */
static void ship_compare(run_t *r)
{
    qsort(r->kept, r->kept_n, sizeof(*r->kept), by_id);
    qsort(r->ships, r->ships_n, sizeof(*r->ships), by_id);
    size_t j = 0;
    for (size_t i = 0; i < r->kept_n; i++) {
        const kept_t *k = &r->kept[i];
        if (i > 0 && strcmp(k->id, r->kept[i - 1].id) == 0) {
            /* a final answer after its deadline is asked again at the end: both are kept,
             * and they must agree; the order is checked once */
            if (k->confirmed != r->kept[i - 1].confirmed) {
                violation(r, "order %s: answered confirmed and rejected", k->id);
            }
            continue;
        }
        r->kept_orders++;
        for (; j < r->ships_n && strcmp(r->ships[j].id, k->id) < 0; j++)
            r->ship_others++;
        size_t n = 0;
        const char *status = "";
        for (; j < r->ships_n && strcmp(r->ships[j].id, k->id) == 0; j++, n++)
            status = r->ships[j].status;
        for (int s = 0; s < 4; s++)
            r->ship_status[s] += n > 0 && strcmp(status, ship_states[s]) == 0;
        if (k->confirmed && (n != 1 || strcmp(status, "cancelled") == 0)) {
            violation(r, "shipments: confirmed order %s has %zu shipments%s", k->id, n,
                      n == 1 ? " (cancelled)" : "");
        } else if (!k->confirmed && n != 0) {
            violation(r, "shipments: order %s was not confirmed and has a shipment (%s)", k->id,
                      status);
        }
    }
    r->ship_others += r->ships_n - j;
    r->ship_checked = r->kept_dropped == 0;
    if (r->kept_dropped) {
        violation(r, "shipments: %" PRIu64 " orders not remembered", r->kept_dropped);
    }
}

static void on_ship_lag(int err, const keel_http_msg_t *resp, void *data);
static void on_ship_page(int err, const keel_http_msg_t *resp, void *data);

void ship_ask(run_t *r)
{
    char path[128];
    const char *host = r->shipments[r->ship_tries % r->shipments_n];
    int rc;
    if (r->phase == SHIP_CONVERGE) {
        rc = request_to(r, host, HTTP_GET, "/lag", NULL, NULL, NULL, on_ship_lag, r);
    } else {
        snprintf(path, sizeof(path), "/shipments?after=%s&limit=" SHIP_PAGE, r->ship_after);
        rc = request_to(r, host, HTTP_GET, path, NULL, NULL, NULL, on_ship_page, r);
    }
    r->ship_asking = rc == 0;
}

static void ship_failed(run_t *r, const char *what)
{
    if (++r->ship_tries < SHIP_ASK_TRIES)
        return; /* asked again at the next tick, of the next instance */
    violation(r, "shipments: %s", what);
    r->phase = DONE;
}

/* GET /lag: the group's lag and pending entries; both 0 is caught up. */
static void on_ship_lag(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    r->ship_asking = false;
    json_t *j = err || resp->status != 200
                    ? NULL
                    : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *lag = json_object_get(j, "lag_events"), *pending = json_object_get(j, "pending");
    bool zero = json_is_integer(lag) && json_integer_value(lag) == 0 && json_is_integer(pending) &&
                json_integer_value(pending) == 0;
    json_decref(j);
    keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    if (j == NULL)
        r->ship_tries++; /* the next ask goes to the next instance */
    if (!zero && now - r->ship_from_ms < CONVERGE_MS_MAX)
        return; /* asked again at the next tick */
    if (!zero) {
        violation(r, "shipments: the consumers did not catch up within %d ms", CONVERGE_MS_MAX);
        r->phase = DONE;
        return;
    }
    r->ship_converged_ms = now - r->ship_from_ms;
    r->phase = SHIP_LIST;
    r->ship_tries = 0;
    r->ship_after[0] = '\0';
}

/* One page of GET /shipments: kept, then the next page, or the comparison. */
static void on_ship_page(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    r->ship_asking = false;
    json_t *j = err || resp->status != 200
                    ? NULL
                    : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *list = json_object_get(j, "shipments"), *next = json_object_get(j, "next");
    if (!json_is_array(list) || (!json_is_null(next) && !json_is_string(next))) {
        json_decref(j);
        ship_failed(r, "no answer to GET /shipments");
        return;
    }
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "order"));
        const char *st = json_string_value(json_object_get(s, "status"));
        if (id == NULL || st == NULL || strlen(id) >= sizeof(r->ships[0].id))
            continue;
        if (r->ships_n == r->ships_cap) {
            size_t cap = r->ships_cap ? 2 * r->ships_cap : 4096;
            ship_t *m = cap <= SHIPS_MAX ? realloc(r->ships, cap * sizeof(*m)) : NULL;
            if (m == NULL) {
                json_decref(j);
                r->ship_tries = SHIP_ASK_TRIES;
                ship_failed(r, "too many shipments to list");
                return;
            }
            r->ships = m;
            r->ships_cap = cap;
        }
        ship_t *x = &r->ships[r->ships_n++];
        snprintf(x->id, sizeof(x->id), "%s", id);
        snprintf(x->status, sizeof(x->status), "%s", st);
    }
    if (json_is_string(next)) {
        snprintf(r->ship_after, sizeof(r->ship_after), "%s", json_string_value(next));
        json_decref(j);
        return; /* the next page at the next tick */
    }
    json_decref(j);
    ship_compare(r);
    r->phase = DONE; /* the next tick ends the run */
}
