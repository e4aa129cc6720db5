/* shopload.h - keel-shopload's run, orders and limits, shared by the files that make it up. */
#ifndef KEEL_TOOLS_SHOPLOAD_SHOPLOAD_H
#define KEEL_TOOLS_SHOPLOAD_SHOPLOAD_H

/*
 * keel-shopload is split by job, one file each (main.c says what it does):
 *   main.c    options, the run's phases (one tick each millisecond), the exit status
 *   load.c    HTTP requests, the gateway's tokens, one order from its start to its outcome
 *   check.c   after the load: the orders whose outcome the client did not see, each
 *             product's stock, the payment ledger, the read side
 *   ship.c    the shipment check: the run's orders against the shipments listed
 *   report.c  progress every second, the live page's state, the report at the end
 */
#include "base/lat.h"
#include "base/rand.h"
#include "runtime/clock.h"
#include "runtime/http_client.h"

#include "live.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TARGETS_MAX 16
#define CUSTOMERS 1000
#define CLIENT_RETRY_MS 200   /* a client's wait before sending a failed request again */
#define CONVERGE_MS_MAX 30000 /* the read side must catch up within this after the checks */
#define TOKEN_BYTES 320
#define CHECK_TRIES_ORDER 20
#define PRODUCTS_MAX 100000
#define INFLIGHT_MAX 50000
#define SECONDS_MAX 3600
#define KEPT_MAX 4000000   /* final orders remembered for the shipment check */
#define SHIP_PAGE "1000"   /* shipments per GET /shipments page */
#define SHIP_ASK_TRIES 20  /* a failed page or lag ask is tried again (other instance) */
#define SHIPS_MAX 20000000 /* shipments listed at most (the service may hold other runs') */

typedef struct run run_t;

enum outcome { CONFIRMED, RELEASED, REJECTED, FAILED, LATE, OUTCOMES };

typedef struct order {
    run_t *r;
    uint64_t id;
    keel_ns_t intended_ns; /* when it should have started */
    int items_n, step, retry_reserve, abandon, target;
    bool fine_card; /* paid with a card the fake processor answers at once (92%) */
    int product[3], qty[3];
    char body[512];
    /* the shop scenario */
    int64_t amount;
    int first_status; /* of a request sent twice with its key: the second must agree */
    char order_id[40], key[48];
    int customer;
    keel_ms_t next_try_ms;
    int retries;            /* client retries so far (their backoff doubles) */
    bool asking, asked_get; /* resolving: the ask in flight is GET /orders/:id */
    bool polling;           /* answered 202 (pending): its state is asked until the deadline */
} order_t;

/* An order of the run with its final outcome, for the shipment check. */
typedef struct kept {
    char id[40];
    bool confirmed;
} kept_t;

/* A shipment as GET /shipments lists it. */
typedef struct ship {
    char id[40];
    char status[12];
} ship_t;

struct run {
    keel_loop_t loop;
    keel_http_client_t http;
    keel_timer_t tick;
    char targets[TARGETS_MAX][64];
    int targets_n;
    double rate;
    int duration_s, products, deadline_ms;
    int64_t stock;
    keel_rand_t rand;
    uint64_t run_id;
    keel_ns_t t0_ns;
    uint64_t scheduled, started, inflight, finished;
    uint64_t outcomes[OUTCOMES], outcome_sec[OUTCOMES];
    int64_t *confirmed_units; /* per product */
    keel_lat_t all, sec;
    keel_lat_t fine; /* orders paid with a fine card: no slow or failing processor */
    int phase, restocked, second;
    const char *json_path;
    json_t *seconds;
    int checked, violations;
    char why[256];
    order_t **uncertain; /* outcome unknown to us: asked for at the end */
    size_t uncertain_n, uncertain_cap, resolved;
    /* the shop scenario: orders through the order service (or the gateway) */
    bool shop;
    char orders[TARGETS_MAX][64], payment[64];
    int orders_n;
    int64_t confirmed_amount, net_before;
    int ledger_asks;
    char (*tokens)[TOKEN_BYTES]; /* "Bearer <JWT>" per customer, with --jwt-secret */
    order_t **retrying;          /* waiting to be sent again (client retries) */
    size_t retrying_n;
    uint64_t client_retries;
    /* the read side (--query): converged, then equal to the write side */
    char query[64];
    keel_ms_t converge_from_ms, converged_ms;
    bool lag_asking;
    int sales_checked;
    /* the shipments (--shipments): caught up, then one per confirmed order and no other */
    char shipments[TARGETS_MAX][64];
    int shipments_n;
    kept_t *kept;                         /* every order of the run that ended, with its id */
    size_t kept_n, kept_cap, kept_orders; /* kept_orders: distinct, once compared */
    uint64_t kept_without_id, kept_dropped;
    ship_t *ships;
    size_t ships_n, ships_cap;
    char ship_after[40];
    bool ship_asking;
    int ship_tries;
    keel_ms_t ship_from_ms, ship_converged_ms;
    uint64_t ship_status[4]; /* the run's shipments: pending, packed, shipped, cancelled */
    uint64_t ship_others;    /* listed shipments of orders not of this run */
    bool ship_checked;
    /* the live page and the HTML report (live.c) */
    live_t *live;
    const char *html_path;
};

/* The run's phases, in order (main.c's tick). */
enum { RESTOCK, LOAD, DRAIN, RESOLVE, CHECK, CONVERGE, READ_SIDE, SHIP_CONVERGE, SHIP_LIST, DONE };

/* A product being checked (its stock, then the read side's sales of it). */
typedef struct check {
    run_t *r;
    int product, tries;
} check_t;

/* load.c */
int request_to(run_t *r, const char *host, int method, const char *path, const char *body,
               const char *key, const char *auth, keel_http_client_cb cb, void *data);
int request(run_t *r, int target, int method, const char *path, const char *body,
            keel_http_client_cb cb, void *data);
int sign_token(const char *secret, int c, int64_t exp, char *out, size_t cap);
const char *token(run_t *r, int customer);
void take_order_id(order_t *o, const keel_http_msg_t *resp, char *out, size_t cap);
int order_answer(int err, const keel_http_msg_t *resp);
void order_start(run_t *r, keel_ns_t intended);
void retry_due(run_t *r);

/* check.c */
void shop_resolve_due(run_t *r);
void resolve_ask(order_t *o);
void on_ledger(int err, const keel_http_msg_t *resp, void *data);
void check_ask(check_t *c);
void on_lag(int err, const keel_http_msg_t *resp, void *data);

/* ship.c */
void keep(run_t *r, const char *order_id, const char *key, bool confirmed);
bool ship_begin(run_t *r);
void ship_ask(run_t *r);

/* report.c */
double secs_since(const run_t *r);
void progress(run_t *r);
json_t *live_state(void *data);
void report(run_t *r);

/* check.c: counts a broken invariant; the first one's text is kept in r->why (the later ones
 * often follow from it: an order without a final answer also leaves the stock and the read
 * side unaccountable). */
__attribute__((format(printf, 2, 3))) void violation(run_t *r, const char *fmt, ...);

#endif
