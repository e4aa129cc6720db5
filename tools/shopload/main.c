/* keel-shopload - the shop's load generator: open loop at a fixed arrival rate, latency taken
 * from each order's intended start (coordinated omission corrected, as wrk2 does), progress
 * every second, invariants checked at the end.
 *
 *   keel-shopload --inventory host:port[,host:port...] [--rate orders/s] [--duration s]
 *                 [--products N] [--stock S] [--deadline-ms D] [--seed X] [--json FILE]
 *
 * Scenario "inventory" (what exists of the shop so far, docs/shop.md): each arrival is an
 * order of 1 to 3 random products (1 or 2 units each) reserved on a random instance; a
 * reserved order is confirmed (90%) or released (10%, an abandoned cart); 5% of orders send
 * their reserve twice (a client retry with the same order id). An order is "answered" when it
 * got a definitive answer (confirmed, released, or refused for lack of stock) within its
 * deadline, counted from its intended start: a slow system cannot slow the arrivals down and
 * hide its latency. Before the load, the run's own products (r<run id>p<i>) get S units each.
 *
 * Scenario "shop" (with --orders and --payment; with --jwt-secret each request carries an
 * HS256 token of its customer, as the gateway apps/shop/gateway.yaml wants): each arrival is POST
 * /orders (through the order service, or the gateway) with an Idempotency-Key, 1 to 3 products, an
 * amount, and a card: 92% fine, 5% declined, 2% slow, 1% a failing processor; 5% are sent twice
 * with the same key and must get the same answer and order id. 201 confirmed and 409 rejected are
 * definitive; 202 (pending) and failures are asked again at the end (GET /orders/:id, or the
 * same POST) until final. Then: each product's stock == S - the units of the confirmed
 * orders, nothing is left reserved, and the payment ledger moved by exactly the confirmed
 * orders' amounts (declined, failed and compensated orders cost nothing). With --query (the
 * read side), its lag must reach 0 within 30 s and its sales per product must then equal
 * the confirmed orders' units. With --shipments (the shipment service's instances), its
 * consumer group must catch up (lag and pending 0) within 30 s, and then every confirmed
 * order of the run must have exactly one shipment (not cancelled) and no other order of the
 * run any.
 *
 * At the end, the orders whose outcome the client did not see (a timeout, a broken
 * connection: the service may have acted anyway) are asked for (GET /reservations/:order);
 * then, for every product: stock == S - (units of every order that is confirmed), and
 * 0 <= available <= stock. Nothing is sold twice or out of thin air. Exit 1 if an
 * invariant broke or no order was answered; 0 otherwise (the figures say the rest).
 */
#include "base/lat.h"
#include "base/rand.h"
#include "runtime/clock.h"
#include "runtime/http_client.h"

#include "live.h"

#include <http_parser.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARGETS_MAX 16
#define CUSTOMERS 1000
#define CLIENT_RETRY_MS 200
#define CONVERGE_MS_MAX                                                                            \
    30000 /* the read side must catch up within this after the checks */ /* a client's wait before \
                                                                            sending a failed       \
                                                                            request again */
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
static const char *const outcome_names[OUTCOMES] = {"confirmed", "released", "rejected", "failed",
                                                    "late"};

typedef struct order {
    run_t *r;
    uint64_t id;
    keel_ns_t intended_ns; /* when it should have started */
    int items_n, step, retry_reserve, abandon, target;
    int product[3], qty[3];
    char body[512];
    /* the shop scenario */
    int64_t amount;
    int first_status; /* of a request sent twice with its key: the second must agree */
    char order_id[40], key[48];
    int customer;
    keel_ms_t next_try_ms;
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

/* ---- HTTP --------------------------------------------------------------------------------- */

/* One request; body, key (Idempotency-Key) and auth (Authorization) may be NULL. */
static int request_to(run_t *r, const char *host, int method, const char *path, const char *body,
                      const char *key, const char *auth, keel_http_client_cb cb, void *data)
{
    keel_http_header_t h[3];
    size_t n = 0;
    if (body)
        h[n++] = (keel_http_header_t){
            .name = "Content-Type", .value = "application/json", .name_len = 12, .value_len = 16};
    if (key)
        h[n++] = (keel_http_header_t){
            .name = "Idempotency-Key", .value = key, .name_len = 15, .value_len = strlen(key)};
    if (auth)
        h[n++] = (keel_http_header_t){
            .name = "Authorization", .value = auth, .name_len = 13, .value_len = strlen(auth)};
    keel_http_client_request_t req = {.method = method,
                                      .host_port = host,
                                      .target = path,
                                      .headers = n ? h : NULL,
                                      .headers_count = n,
                                      .body = body,
                                      .body_len = body ? strlen(body) : 0,
                                      .timeout_ms = r->deadline_ms};
    return keel_http_client_request(&r->http, &req, cb, data, NULL);
}

/* ---- tokens: HS256 JWTs, as the shop's gateway wants them ---------------------------------- */

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = tab[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
    return o;
}

/* "Bearer <header.claims.signature>" for customer c: iss keel-shop, aud shop-api, sub c<c>. */
static int sign_token(const char *secret, int c, int64_t exp, char *out, size_t cap)
{
    char claims[160], part[2][256], signing[600];
    snprintf(claims, sizeof(claims),
             "{\"iss\":\"keel-shop\",\"aud\":\"shop-api\",\"sub\":\"c%d\",\"exp\":%" PRId64 "}", c,
             exp);
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"demo\"}";
    b64url((const uint8_t *)header, strlen(header), part[0]);
    b64url((const uint8_t *)claims, strlen(claims), part[1]);
    int n = snprintf(signing, sizeof(signing), "%s.%s", part[0], part[1]);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)signing, (size_t)n, mac,
             &mac_len) == NULL)
        return -1;
    char sig[64];
    b64url(mac, mac_len, sig);
    n = snprintf(out, cap, "Bearer %s.%s", signing, sig);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static const char *token(run_t *r, int customer)
{
    return r->tokens ? r->tokens[customer] : NULL;
}

static int request(run_t *r, int target, int method, const char *path, const char *body,
                   keel_http_client_cb cb, void *data)
{
    return request_to(r, r->targets[target], method, path, body, NULL, NULL, cb, data);
}

/* ---- one order ------------------------------------------------------------------------------ */

static void order_step(order_t *o);

static void order_end(order_t *o, enum outcome out)
{
    run_t *r = o->r;
    keel_ns_t now = keel_clock_now_ns();
    uint64_t us = (uint64_t)(now - o->intended_ns) / 1000;
    if (out != FAILED && us > (uint64_t)r->deadline_ms * 1000)
        out = LATE; /* a definitive answer, but after its deadline: not available */
    r->outcomes[out]++;
    r->outcome_sec[out]++;
    if (out == CONFIRMED) {
        for (int i = 0; i < o->items_n; i++)
            r->confirmed_units[o->product[i]] += o->qty[i];
        r->confirmed_amount += o->amount;
    }
    keel_lat_record(&r->all, us);
    keel_lat_record(&r->sec, us);
    if (r->live)
        live_order(r->live, (double)(o->intended_ns - r->t0_ns) / 1e9,
                   out != FAILED && out != LATE);
    r->inflight--;
    r->finished++;
    if (out == FAILED || out == LATE) { /* it may have happened anyway: ask at the end */
        if (r->uncertain_n == r->uncertain_cap) {
            size_t cap = r->uncertain_cap ? 2 * r->uncertain_cap : 1024;
            order_t **m = realloc(r->uncertain, cap * sizeof(*m));
            if (m == NULL) {
                free(o);
                return;
            }
            r->uncertain = m;
            r->uncertain_cap = cap;
        }
        r->uncertain[r->uncertain_n++] = o;
        return;
    }
    free(o);
}

/* An order's id from an order service answer ({"order": ...}), into o->order_id. */
static void take_order_id(order_t *o, const keel_http_msg_t *resp, char *out, size_t cap)
{
    json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "order"));
    snprintf(out, cap, "%s", id ? id : "");
    json_decref(j);
    (void)o;
}

/* A shop order's final outcome, remembered for the shipment check (--shipments). */
static void keep(run_t *r, const char *order_id, const char *key, bool confirmed)
{
    if (r->shipments_n == 0)
        return;
    if (order_id[0] == '\0') {
        r->kept_without_id++;
        r->violations++;
        snprintf(r->why, sizeof(r->why), "order key %s: a final answer without an order id", key);
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

/*
 * An order service answer as 201 (confirmed), 409 (rejected), 202 (pending) or 0 (anything
 * else), judged by the body's status and not by the code alone: a 409 also comes from the
 * idempotency layer while the key's first request still runs, and that one is not final.
 */
static int order_answer(int err, const keel_http_msg_t *resp)
{
    if (err != 0 || (resp->status != 201 && resp->status != 409 && resp->status != 202))
        return 0;
    json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    const char *st = json_string_value(json_object_get(j, "status"));
    int v = st == NULL                     ? 0
            : strcmp(st, "confirmed") == 0 ? 201
            : strcmp(st, "rejected") == 0  ? 409
            : strcmp(st, "pending") == 0   ? 202
                                           : 0;
    json_decref(j);
    return v == resp->status ? v : 0;
}

static void on_shop_reply(int err, const keel_http_msg_t *resp, void *data)
{
    order_t *o = data;
    run_t *r = o->r;
    int st = order_answer(err, resp);
    bool final = st == 201 || st == 409;
    if (o->step == 0 && final && o->retry_reserve) { /* a client retry with the same key */
        o->first_status = st;
        take_order_id(o, resp, o->order_id, sizeof(o->order_id));
        o->step = 1;
        order_step(o);
        return;
    }
    if (o->step == 1 && final) {
        char again[40];
        take_order_id(o, resp, again, sizeof(again));
        if (st != o->first_status || strcmp(again, o->order_id) != 0) {
            r->violations++;
            snprintf(r->why, sizeof(r->why), "idempotency: key %s answered %d (%s), then %d (%s)",
                     o->key, o->first_status, o->order_id, st, again);
        }
    }
    if (final) {
        if (o->order_id[0] == '\0')
            take_order_id(o, resp, o->order_id, sizeof(o->order_id));
        keep(r, o->order_id, o->key, st == 201);
        order_end(o, st == 201 ? CONFIRMED : REJECTED);
    } else {
        keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
        keel_ms_t age = (keel_ms_t)((keel_clock_now_ns() - o->intended_ns) / 1000000);
        if (st == 0 && age + CLIENT_RETRY_MS < (keel_ms_t)r->deadline_ms &&
            r->retrying_n < INFLIGHT_MAX) {
            /* what a client with an Idempotency-Key does on a 5xx or a broken connection:
             * the same request again, while its deadline allows */
            o->next_try_ms = now + CLIENT_RETRY_MS;
            r->client_retries++;
            r->retrying[r->retrying_n++] = o;
            return;
        }
        if (st == 202) /* its saga goes on: polled by its id at the end */
            take_order_id(o, resp, o->order_id, sizeof(o->order_id));
        if (st == 202 && o->order_id[0] && age + CLIENT_RETRY_MS < (keel_ms_t)r->deadline_ms &&
            r->retrying_n < INFLIGHT_MAX) {
            /* what a client of a 202 does: asks for the order's state until its deadline */
            o->polling = true;
            o->next_try_ms = now + CLIENT_RETRY_MS;
            r->retrying[r->retrying_n++] = o;
            return;
        }
        order_end(o, st == 202 ? LATE : FAILED); /* pending, or unknown: asked at the end */
    }
}

/* Client retries that are due. */
static void retry_due(run_t *r)
{
    keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    size_t k = 0;
    for (size_t i = 0; i < r->retrying_n; i++) {
        order_t *o = r->retrying[i];
        if (o->next_try_ms <= now)
            order_step(o);
        else
            r->retrying[k++] = o;
    }
    r->retrying_n = k;
}

static void on_reply(int err, const keel_http_msg_t *resp, void *data)
{
    order_t *o = data;
    int st = err ? 0 : resp->status;
    switch (o->step) {
    case 0: /* reserve */
    case 1: /* the retried reserve: the same answer, nothing held twice */
        if (st == 201 || st == 200) {
            o->step = o->retry_reserve && o->step == 0 ? 1 : 2;
            order_step(o);
        } else if (st == 409) {
            order_end(o, REJECTED);
        } else {
            order_end(o, FAILED);
        }
        return;
    case 2: /* confirm or release */
        if (st == 200 && !o->abandon)
            order_end(o, CONFIRMED);
        else if (st == 204 && o->abandon)
            order_end(o, RELEASED);
        else
            order_end(o, FAILED);
        return;
    }
}

/* GET /orders/:id of an order answered 202: final, or asked again while its deadline allows. */
static void on_shop_poll(int err, const keel_http_msg_t *resp, void *data)
{
    order_t *o = data;
    run_t *r = o->r;
    json_t *j = err || resp->status != 200
                    ? NULL
                    : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    const char *state = json_string_value(json_object_get(j, "status"));
    int st = state == NULL                     ? 0
             : strcmp(state, "confirmed") == 0 ? 201
             : strcmp(state, "rejected") == 0  ? 409
                                               : 202;
    json_decref(j);
    if (st == 201 || st == 409) {
        keep(r, o->order_id, o->key, st == 201);
        order_end(o, st == 201 ? CONFIRMED : REJECTED);
        return;
    }
    keel_ms_t now = (keel_ms_t)(keel_clock_now_ns() / 1000000);
    keel_ms_t age = (keel_ms_t)((keel_clock_now_ns() - o->intended_ns) / 1000000);
    if (age + CLIENT_RETRY_MS < (keel_ms_t)r->deadline_ms && r->retrying_n < INFLIGHT_MAX) {
        o->next_try_ms = now + CLIENT_RETRY_MS;
        r->retrying[r->retrying_n++] = o;
        return;
    }
    order_end(o, LATE); /* still pending at its deadline: asked again at the end */
}

static void order_step(order_t *o)
{
    run_t *r = o->r;
    char path[96];
    int rc;
    if (r->shop && o->polling) {
        snprintf(path, sizeof(path), "/orders/%s", o->order_id);
        rc = request_to(r, r->orders[o->target % r->orders_n], HTTP_GET, path, NULL, NULL,
                        token(r, o->customer), on_shop_poll, o);
    } else if (r->shop) {
        rc = request_to(r, r->orders[o->target % r->orders_n], HTTP_POST, "/orders", o->body,
                        o->key, token(r, o->customer), on_shop_reply, o);
    } else if (o->step <= 1) {
        snprintf(path, sizeof(path), "/reservations/r%" PRIx64 "-%" PRIu64, r->run_id, o->id);
        rc = request(r, o->target, HTTP_PUT, path, o->body, on_reply, o);
    } else if (o->abandon) {
        snprintf(path, sizeof(path), "/reservations/r%" PRIx64 "-%" PRIu64, r->run_id, o->id);
        rc = request(r, o->target, HTTP_DELETE, path, NULL, on_reply, o);
    } else {
        snprintf(path, sizeof(path), "/reservations/r%" PRIx64 "-%" PRIu64 "/confirm", r->run_id,
                 o->id);
        rc = request(r, o->target, HTTP_POST, path, NULL, on_reply, o);
    }
    if (rc != 0)
        order_end(o, FAILED);
}

static void order_start(run_t *r, keel_ns_t intended)
{
    r->scheduled++;
    if (r->inflight >= INFLIGHT_MAX) { /* the system is that far behind: counted, not sent */
        r->outcomes[FAILED]++;
        r->outcome_sec[FAILED]++;
        r->finished++;
        return;
    }
    order_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return;
    o->r = r;
    o->id = r->scheduled;
    o->intended_ns = intended;
    o->target = (int)keel_rand_below(&r->rand, (uint64_t)r->targets_n);
    o->items_n = 1 + (int)keel_rand_below(&r->rand, 3);
    o->retry_reserve = keel_rand_below(&r->rand, 100) < 5;
    o->abandon = keel_rand_below(&r->rand, 100) < 10;
    size_t len = (size_t)snprintf(o->body, sizeof(o->body), "{\"items\":[");
    for (int i = 0; i < o->items_n; i++) {
        o->product[i] = (int)keel_rand_below(&r->rand, (uint64_t)r->products);
        o->qty[i] = 1 + (int)keel_rand_below(&r->rand, 2);
        o->amount += 100 * o->qty[i];
        len += (size_t)snprintf(o->body + len, sizeof(o->body) - len,
                                "%s{\"product\":\"r%" PRIx64 "p%d\",\"qty\":%d}", i ? "," : "",
                                r->run_id, o->product[i], o->qty[i]);
    }
    if (r->shop) { /* cards: 92% fine, 5% declined, 2% slow, 1% a failing processor */
        uint64_t c = keel_rand_below(&r->rand, 100);
        const char *card = c < 92 ? "ok" : c < 97 ? "decline" : c < 99 ? "slow" : "fail";
        o->customer = (int)keel_rand_below(&r->rand, CUSTOMERS);
        snprintf(o->key, sizeof(o->key), "r%" PRIx64 "-%" PRIu64, r->run_id, o->id);
        snprintf(o->body + len, sizeof(o->body) - len,
                 "],\"customer\":\"c%" PRIu64 "\",\"amount_cents\":%" PRId64 ",\"card\":\"%s\"}",
                 (uint64_t)o->customer, o->amount, card);
    } else {
        snprintf(o->body + len, sizeof(o->body) - len, "]}");
    }
    r->inflight++;
    r->started++;
    order_step(o);
}

/* ---- the run --------------------------------------------------------------------------------- */

enum { RESTOCK, LOAD, DRAIN, RESOLVE, CHECK, CONVERGE, READ_SIDE, SHIP_CONVERGE, SHIP_LIST, DONE };

static void resolve_ask(order_t *o);

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
        r->violations++;
        snprintf(r->why, sizeof(r->why), "order %" PRIu64 ": no answer to GET /reservations",
                 o->id);
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
            r->violations++;
            snprintf(r->why, sizeof(r->why), "order %s: its saga needs attention", o->order_id);
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
        r->violations++;
        snprintf(r->why, sizeof(r->why), "order key %s: no final answer after 60 s (last %d)",
                 o->key, st);
        o->step = -1;
        r->resolved++;
        return;
    }
    o->next_try_ms = (keel_ms_t)(keel_clock_now_ns() / 1000000) + 250;
}

static void shop_resolve_due(run_t *r)
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

static void on_ledger(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *net = json_object_get(j, "net_cents");
    if (!json_is_integer(net)) {
        r->violations++;
        snprintf(r->why, sizeof(r->why), "no answer from the payment ledger");
    } else if (r->phase == CHECK) {
        int64_t moved = json_integer_value(net) - r->net_before;
        if (moved != r->confirmed_amount) {
            r->violations++;
            snprintf(r->why, sizeof(r->why),
                     "payment ledger moved %" PRId64 " cents, the confirmed orders total %" PRId64,
                     moved, r->confirmed_amount);
        }
    } else {
        r->net_before = json_integer_value(net);
    }
    json_decref(j);
    r->ledger_asks++;
}

static void resolve_ask(order_t *o)
{
    run_t *r = o->r;
    char path[96];
    snprintf(path, sizeof(path), "/reservations/r%" PRIx64 "-%" PRIu64, r->run_id, o->id);
    if (request(r, (int)(o->step % r->targets_n), HTTP_GET, path, NULL, on_resolved, o) != 0) {
        r->violations++;
        r->resolved++;
    }
}

static void on_restock(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    if (err != 0 || resp->status != 200) {
        snprintf(r->why, sizeof(r->why), "restock failed: %s",
                 err ? keel_strerror(err) : "not 200");
        r->violations++;
    }
    r->restocked++;
}

typedef struct check {
    run_t *r;
    int product, tries;
} check_t;

#define CHECK_TRIES 20 /* a product's GET is asked again (the service may still be busy) */

static void check_ask(check_t *c);

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
        r->violations++;
        snprintf(r->why, sizeof(r->why), "product %d: no answer to GET /products", c->product);
    } else if (r->shop && reserved != 0) { /* every saga ended: none holds stock */
        r->violations++;
        snprintf(r->why, sizeof(r->why),
                 "product %d: %" PRId64 " units still reserved after every order ended", c->product,
                 reserved);
    } else if (stock != want || avail < 0 || avail > stock) {
        r->violations++;
        snprintf(r->why, sizeof(r->why),
                 "product %d: stock %" PRId64 " (want %" PRId64 " = %" PRId64 " - %" PRId64
                 " confirmed), available %" PRId64,
                 c->product, stock, want, r->stock, r->confirmed_units[c->product], avail);
    }
    json_decref(j);
    r->checked++;
    free(c);
}

static void check_ask(check_t *c)
{
    run_t *r = c->r;
    char path[48];
    snprintf(path, sizeof(path), "/products/r%" PRIx64 "p%d", r->run_id, c->product);
    if (request(r, (c->product + c->tries) % r->targets_n, HTTP_GET, path, NULL, on_product, c) !=
        0) {
        free(c);
        r->checked++;
        r->violations++;
        snprintf(r->why, sizeof(r->why), "could not ask for a product's stock");
    }
}

static double secs_since(const run_t *r)
{
    return (double)(keel_clock_now_ns() - r->t0_ns) / 1e9;
}

static void progress(run_t *r)
{
    uint64_t done = 0;
    for (int k = 0; k < OUTCOMES; k++)
        done += r->outcome_sec[k];
    printf("t=%3ds  orders %6" PRIu64 "/s  confirmed %6" PRIu64 "  released %5" PRIu64
           "  rejected %5" PRIu64 "  failed %4" PRIu64 "  late %4" PRIu64
           "  p50 %7.2f ms  p99 %7.2f ms  in flight %" PRIu64 "\n",
           r->second, done, r->outcome_sec[CONFIRMED], r->outcome_sec[RELEASED],
           r->outcome_sec[REJECTED], r->outcome_sec[FAILED], r->outcome_sec[LATE],
           (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0,
           (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0, r->inflight);
    fflush(stdout);
    if (r->seconds) {
        json_t *sec =
            json_pack("{s:i, s:I, s:I, s:I, s:f, s:f}", "t", r->second, "orders", (json_int_t)done,
                      "confirmed", (json_int_t)r->outcome_sec[CONFIRMED], "failed",
                      (json_int_t)(r->outcome_sec[FAILED] + r->outcome_sec[LATE]), "p50_ms",
                      (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0, "p99_ms",
                      (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0);
        if (r->live && sec)
            live_second(r->live, sec);
        json_array_append_new(r->seconds, sec);
    }
    memset(r->outcome_sec, 0, sizeof(r->outcome_sec));
    keel_lat_reset(&r->sec);
}

static void on_lag(int err, const keel_http_msg_t *resp, void *data);
static bool ship_begin(run_t *r);
static void ship_ask(run_t *r);

static void tick(keel_timer_t *t, void *data)
{
    run_t *r = data;
    (void)t;
    switch (r->phase) {
    case RESTOCK:
        if (r->restocked < r->products || (r->shop && r->ledger_asks < 1))
            return;
        if (r->violations) {
            r->phase = DONE;
            break;
        }
        r->phase = LOAD;
        r->t0_ns = keel_clock_now_ns();
        if (r->live)
            live_start(r->live, (int64_t)keel_clock_unix_ms());
        printf("restocked %d products to %" PRId64 " units; %.0f orders/s for %d s\n", r->products,
               r->stock, r->rate, r->duration_s);
        return;
    case LOAD: {
        retry_due(r);
        double el = secs_since(r);
        uint64_t due = (uint64_t)(el * r->rate);
        uint64_t total = (uint64_t)(r->rate * r->duration_s);
        if (due > total)
            due = total;
        while (r->scheduled < due) {
            keel_ns_t intended = r->t0_ns + (keel_ns_t)((double)r->scheduled / r->rate * 1e9);
            order_start(r, intended);
        }
        if ((int)el > r->second) {
            r->second = (int)el;
            progress(r);
        }
        if (r->scheduled >= total)
            r->phase = DRAIN;
        return;
    }
    case DRAIN:
        retry_due(r);
        if (r->inflight > 0 && secs_since(r) < r->duration_s + r->deadline_ms / 1000.0 + 5)
            return;
        progress(r);
        r->phase = RESOLVE;
        for (size_t i = 0; i < r->uncertain_n; i++) {
            r->uncertain[i]->step = 100; /* counts the asks from here */
            r->uncertain[i]->next_try_ms = 0;
            if (!r->shop)
                resolve_ask(r->uncertain[i]);
        }
        return;
    case RESOLVE:
        if (r->shop)
            shop_resolve_due(r);
        if (r->resolved < r->uncertain_n)
            return;
        r->phase = CHECK;
        if (r->shop &&
            request_to(r, r->payment, HTTP_GET, "/ledger", NULL, NULL, NULL, on_ledger, r) != 0)
            r->ledger_asks++, r->violations++;
        for (int p = 0; p < r->products; p++) {
            check_t *c = malloc(sizeof(*c));
            *c = (check_t){r, p, 0};
            check_ask(c);
        }
        return;
    case CHECK:
        if (r->checked < r->products || (r->shop && r->ledger_asks < 2))
            return;
        if (r->query[0] == '\0') {
            if (ship_begin(r))
                return;
            r->phase = DONE;
            break;
        }
        r->phase = CONVERGE; /* the read side: wait for its lag to reach 0 */
        r->converge_from_ms = (keel_ms_t)(keel_clock_now_ns() / 1000000);
        return;
    case CONVERGE:
        if (!r->lag_asking) {
            r->lag_asking = true;
            if (request_to(r, r->query, HTTP_GET, "/lag", NULL, NULL, NULL, on_lag, r) != 0)
                r->lag_asking = false;
        }
        return;
    case READ_SIDE:
        if (r->sales_checked < r->products)
            return;
        if (ship_begin(r))
            return;
        r->phase = DONE;
        break;
    case SHIP_CONVERGE:
    case SHIP_LIST:
        if (!r->ship_asking)
            ship_ask(r);
        return;
    case DONE: /* a check ended the run from its callback */
        break;
    default:
        return;
    }
    keel_timer_close(&r->tick, NULL);
    keel_http_client_close(&r->http, NULL, NULL);
    if (r->live)
        live_stop(r->live);
}

/* The run as the live page shows it (live.h's state). */
static json_t *live_state(void *data)
{
    static const char *const phases[] = {"restocking", "load",      "draining",  "resolving",
                                         "checking",   "read side", "read side", "shipments",
                                         "shipments",  "done"};
    run_t *r = data;
    json_t *tot =
        json_pack("{s:I, s:I, s:I}", "finished", (json_int_t)r->finished, "inflight",
                  (json_int_t)r->inflight, "client_retries", (json_int_t)r->client_retries);
    for (int k = 0; k < OUTCOMES; k++)
        json_object_set_new(tot, outcome_names[k], json_integer((json_int_t)r->outcomes[k]));
    json_t *j = json_pack("{s:s, s:f, s:i, s:f, s:i, s:o}", "phase", phases[r->phase], "t",
                          r->phase >= LOAD ? secs_since(r) : 0.0, "duration", r->duration_s, "rate",
                          r->rate, "deadline_ms", r->deadline_ms, "totals", tot);
    if (r->phase == DONE) {
        char v[300];
        snprintf(v, sizeof(v), "%s%s%s", r->violations ? "BROKEN" : "held",
                 r->violations ? ": " : "", r->violations ? r->why : "");
        json_object_set_new(j, "verdict", json_string(v));
    }
    return j;
}

/* ---- the read side: converged, and equal to the write side ------------------------------- */

static void on_sales(int err, const keel_http_msg_t *resp, void *data)
{
    check_t *c = data;
    run_t *r = c->r;
    json_t *j = err ? NULL : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *units = json_object_get(j, "units");
    if (!json_is_integer(units) || json_integer_value(units) != r->confirmed_units[c->product]) {
        r->violations++;
        snprintf(r->why, sizeof(r->why),
                 "read side: product %d sold %" PRId64 " units per the query service, %" PRId64
                 " per the confirmed orders",
                 c->product, json_is_integer(units) ? (int64_t)json_integer_value(units) : -1,
                 r->confirmed_units[c->product]);
    }
    json_decref(j);
    r->sales_checked++;
    free(c);
}

static void on_lag(int err, const keel_http_msg_t *resp, void *data)
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
        r->violations++;
        snprintf(r->why, sizeof(r->why), "the read side did not catch up within %d ms",
                 CONVERGE_MS_MAX);
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

/* ---- the shipments: caught up, then one per confirmed order and no other ----------------- */

static bool ship_begin(run_t *r)
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
                r->violations++;
                snprintf(r->why, sizeof(r->why), "order %s: answered confirmed and rejected",
                         k->id);
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
            r->violations++;
            snprintf(r->why, sizeof(r->why), "shipments: confirmed order %s has %zu shipments%s",
                     k->id, n, n == 1 ? " (cancelled)" : "");
        } else if (!k->confirmed && n != 0) {
            r->violations++;
            snprintf(r->why, sizeof(r->why),
                     "shipments: order %s was not confirmed and has a shipment (%s)", k->id,
                     status);
        }
    }
    r->ship_others += r->ships_n - j;
    r->ship_checked = r->kept_dropped == 0;
    if (r->kept_dropped) {
        r->violations++;
        snprintf(r->why, sizeof(r->why), "shipments: %" PRIu64 " orders not remembered",
                 r->kept_dropped);
    }
}

static void on_ship_lag(int err, const keel_http_msg_t *resp, void *data);
static void on_ship_page(int err, const keel_http_msg_t *resp, void *data);

static void ship_ask(run_t *r)
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
    r->violations++;
    snprintf(r->why, sizeof(r->why), "shipments: %s", what);
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
        r->violations++;
        snprintf(r->why, sizeof(r->why), "shipments: the consumers did not catch up within %d ms",
                 CONVERGE_MS_MAX);
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

static void report(run_t *r)
{
    uint64_t answered = r->outcomes[CONFIRMED] + r->outcomes[RELEASED] + r->outcomes[REJECTED];
    uint64_t total = r->finished ? r->finished : 1;
    printf("\norders: %" PRIu64 " scheduled over %d s (%.0f/s asked)\n", r->scheduled,
           r->duration_s, r->rate);
    for (int k = 0; k < OUTCOMES; k++)
        printf("  %-10s %8" PRIu64 "  %6.2f%%\n", outcome_names[k], r->outcomes[k],
               100.0 * (double)r->outcomes[k] / (double)total);
    printf("answered within the deadline (%d ms): %.4f%%\n", r->deadline_ms,
           100.0 * (double)answered / (double)total);
    printf("latency from intended start (ms): p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
           (double)keel_lat_percentile(&r->all, 0.5) / 1000.0,
           (double)keel_lat_percentile(&r->all, 0.99) / 1000.0,
           (double)keel_lat_percentile(&r->all, 0.999) / 1000.0, (double)r->all.max / 1000.0);
    printf("throughput: %.0f answered orders/s\n", (double)answered / r->duration_s);
    printf("client retries (the same key after a 5xx or a broken connection): %" PRIu64 "\n",
           r->client_retries);
    printf("outcomes unknown to the client, asked afterwards: %zu\n", r->uncertain_n);
    if (r->query[0])
        printf("read side: caught up %" PRIu64 " ms after the write side was checked; sales per "
               "product equal the confirmed orders' units: %s\n",
               (uint64_t)r->converged_ms,
               r->sales_checked == r->products ? "checked" : "not checked");
    if (r->shipments_n)
        printf("shipments: caught up %" PRIu64 " ms after the checks above; of the run's %zu ended "
               "orders: %" PRIu64 " pending, %" PRIu64 " packed, %" PRIu64 " shipped, %" PRIu64
               " cancelled (%" PRIu64 " shipments of other orders); one per confirmed order and "
               "none for the others: %s\n",
               (uint64_t)r->ship_converged_ms, r->kept_orders, r->ship_status[0], r->ship_status[1],
               r->ship_status[2], r->ship_status[3], r->ship_others,
               r->ship_checked ? "checked" : "not checked");
    printf("invariants: %s%s%s\n", r->violations ? "BROKEN" : "held", r->violations ? ": " : "",
           r->violations ? r->why : "");
    if (r->json_path) {
        json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:b, s:o}", "scheduled",
                              (json_int_t)r->scheduled, "answered", (json_int_t)answered,
                              "availability", (double)answered / (double)total, "p50_ms",
                              (double)keel_lat_percentile(&r->all, 0.5) / 1000.0, "p99_ms",
                              (double)keel_lat_percentile(&r->all, 0.99) / 1000.0, "p999_ms",
                              (double)keel_lat_percentile(&r->all, 0.999) / 1000.0,
                              "invariants_held", r->violations == 0, "seconds", r->seconds);
        r->seconds = NULL;
        json_dump_file(j, r->json_path, JSON_INDENT(1));
        json_decref(j);
    }
}

static long num(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (v == NULL || *v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "keel-shopload: %s '%s': expected an integer in %ld..%ld\n", flag,
                v ? v : "", lo, hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    static run_t r;
    const char *targets = NULL, *orders = NULL, *payment = NULL, *secret = NULL;
    const char *metrics = NULL, *shipments = NULL;
    live_config_t lc = {0};
    uint64_t seed = 1;
    r.rate = 200;
    r.duration_s = 10;
    r.products = 100;
    r.stock = 1000;
    r.deadline_ms = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: keel-shopload --inventory host:port[,...] [--orders host:port[,...] "
                   "--payment host:port\n       [--jwt-secret S] [--query host:port] [--shipments "
                   "host:port[,...]]] [--rate "
                   "orders/s] [--duration s] "
                   "[--products N] "
                   "[--stock S] [--deadline-ms D]\n       [--seed X] [--json FILE] [--live "
                   "host:port] [--html FILE] [--events FILE]\n       [--metrics "
                   "host:port[,...]]\n"
                   "(tools/shopload/main.c says what it does)\n");
            return 0;
        }
        i++;
        if (strcmp(a, "--inventory") == 0 && v)
            targets = v;
        else if (strcmp(a, "--orders") == 0 && v)
            orders = v;
        else if (strcmp(a, "--payment") == 0 && v)
            payment = v;
        else if (strcmp(a, "--jwt-secret") == 0 && v)
            secret = v;
        else if (strcmp(a, "--query") == 0 && v)
            snprintf(r.query, sizeof(r.query), "%s", v);
        else if (strcmp(a, "--shipments") == 0 && v)
            shipments = v;
        else if (strcmp(a, "--rate") == 0)
            r.rate = (double)num(a, v, 1, 1000000);
        else if (strcmp(a, "--duration") == 0)
            r.duration_s = (int)num(a, v, 1, SECONDS_MAX);
        else if (strcmp(a, "--products") == 0)
            r.products = (int)num(a, v, 1, PRODUCTS_MAX);
        else if (strcmp(a, "--stock") == 0)
            r.stock = num(a, v, 1, 1000000000);
        else if (strcmp(a, "--deadline-ms") == 0)
            r.deadline_ms = (int)num(a, v, 1, 600000);
        else if (strcmp(a, "--seed") == 0)
            seed = (uint64_t)num(a, v, 0, 1L << 62);
        else if (strcmp(a, "--json") == 0 && v)
            r.json_path = v;
        else if (strcmp(a, "--live") == 0 && v)
            lc.listen = v;
        else if (strcmp(a, "--html") == 0 && v)
            r.html_path = v;
        else if (strcmp(a, "--events") == 0 && v)
            lc.events_path = v;
        else if (strcmp(a, "--metrics") == 0 && v)
            metrics = v;
        else {
            fprintf(stderr, "keel-shopload: unknown option or missing value '%s'\n", a);
            return 2;
        }
    }
    if (targets == NULL) {
        fprintf(stderr, "keel-shopload: --inventory host:port[,...] is required\n");
        return 2;
    }
    if ((orders == NULL) != (payment == NULL)) {
        fprintf(stderr, "keel-shopload: --orders and --payment go together\n");
        return 2;
    }
    char list[1024];
    snprintf(list, sizeof(list), "%s", targets);
    for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;)
        if (*tok && r.targets_n < TARGETS_MAX)
            snprintf(r.targets[r.targets_n++], sizeof(r.targets[0]), "%s", tok);
    if (orders != NULL) {
        r.shop = true;
        snprintf(list, sizeof(list), "%s", orders);
        for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;)
            if (*tok && r.orders_n < TARGETS_MAX)
                snprintf(r.orders[r.orders_n++], sizeof(r.orders[0]), "%s", tok);
        snprintf(r.payment, sizeof(r.payment), "%s", payment);
    }
    if (shipments != NULL && !r.shop) {
        fprintf(stderr, "keel-shopload: --shipments needs --orders and --payment\n");
        return 2;
    }
    if (shipments != NULL) {
        snprintf(list, sizeof(list), "%s", shipments);
        for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;)
            if (*tok && r.shipments_n < TARGETS_MAX)
                snprintf(r.shipments[r.shipments_n++], sizeof(r.shipments[0]), "%s", tok);
    }
    if (secret != NULL) { /* a token per customer, valid for the run and a margin */
        r.tokens = calloc(CUSTOMERS, sizeof(*r.tokens));
        int64_t exp = (int64_t)(keel_clock_unix_ms() / 1000) + r.duration_s + 3600;
        for (int c = 0; r.tokens && c < CUSTOMERS; c++)
            if (sign_token(secret, c, exp, r.tokens[c], sizeof(r.tokens[c])) != 0) {
                fprintf(stderr, "keel-shopload: cannot sign a token\n");
                return 1;
            }
    }
    keel_rand_seed(&r.rand, seed);
    r.run_id = (uint64_t)keel_clock_unix_ms();
    r.confirmed_units = calloc((size_t)r.products, sizeof(int64_t));
    r.seconds = json_array();
    r.retrying = calloc(INFLIGHT_MAX, sizeof(*r.retrying));
    keel_lat_reset(&r.all);
    keel_lat_reset(&r.sec);
    keel_errmsg_t msg = {{0}};
    keel_http_client_config_t hc = keel_http_client_config_default();
    hc.conns_per_host_max = 256;
    hc.idle_per_host_max = 256;
    hc.queue_per_host_max = INFLIGHT_MAX;
    if (keel_loop_init(&r.loop) != 0 || keel_http_client_init(&r.http, &r.loop, &hc, &msg) != 0) {
        fprintf(stderr, "keel-shopload: %s\n", msg.text);
        return 1;
    }
    /* the run's own products (r<run id>p<i>), each stocked with S units */
    for (int p = 0; p < r.products; p++) {
        char path[48], body[64];
        snprintf(path, sizeof(path), "/products/r%" PRIx64 "p%d/restock", r.run_id, p);
        snprintf(body, sizeof(body), "{\"qty\":%" PRId64 "}", r.stock);
        if (request(&r, p % r.targets_n, HTTP_POST, path, body, on_restock, &r) != 0)
            r.restocked++, r.violations++;
    }
    if (r.shop &&
        request_to(&r, r.payment, HTTP_GET, "/ledger", NULL, NULL, NULL, on_ledger, &r) != 0) {
        fprintf(stderr, "keel-shopload: cannot ask the payment ledger at %s\n", r.payment);
        return 1;
    }
    if (lc.listen || r.html_path) { /* the live page, the report */
        static char mlist[1024];
        snprintf(mlist, sizeof(mlist), "%s", metrics ? metrics : "");
        for (char *p = mlist, *tok; (tok = strsep(&p, ",")) != NULL;)
            if (*tok && lc.metrics_n < LIVE_METRICS_MAX)
                lc.metrics[lc.metrics_n++] = tok;
        lc.query = r.query[0] ? r.query : NULL;
        for (int i = 0; i < r.shipments_n; i++)
            lc.shipments[lc.shipments_n++] = r.shipments[i];
        lc.duration_s = r.duration_s;
        char err[256];
        r.live = live_new(&r.loop, &r.http, &lc, r.seconds, live_state, &r, err, sizeof(err));
        if (r.live == NULL) {
            fprintf(stderr, "keel-shopload: %s\n", err);
            return 1;
        }
        if (lc.listen)
            printf("live page: http://%s/\n", lc.listen);
    }
    keel_timer_init(&r.loop, &r.tick);
    keel_timer_start(&r.tick, 1, 1, tick, &r);
    keel_loop_run(&r.loop);
    keel_loop_close(&r.loop);
    report(&r);
    if (r.live) {
        json_t *rec = live_recovery(r.live);
        size_t i;
        json_t *k;
        json_array_foreach(rec, i, k)
        {
            json_t *after = json_object_get(k, "recovered_s");
            printf("kill at t=%.1fs (%s): %" PRId64 " orders started before the next kill missed "
                   "their deadline%s",
                   json_real_value(json_object_get(k, "t")),
                   json_string_value(json_object_get(k, "what")),
                   (int64_t)json_integer_value(json_object_get(k, "missed")),
                   json_is_real(after) ? ", the last starting " : "\n");
            if (json_is_real(after))
                printf("%.1f s after the kill\n", json_real_value(after));
        }
        json_decref(rec);
        if (r.html_path && live_write_html(r.live, r.html_path) != 0)
            fprintf(stderr, "keel-shopload: cannot write %s: %s\n", r.html_path, strerror(errno));
        else if (r.html_path)
            printf("report: %s\n", r.html_path);
        live_free(r.live);
    }
    json_decref(r.seconds);
    free(r.confirmed_units);
    free(r.tokens);
    free(r.retrying);
    for (size_t i = 0; i < r.uncertain_n; i++)
        free(r.uncertain[i]);
    free(r.uncertain);
    free(r.kept);
    free(r.ships);
    uint64_t answered = r.outcomes[CONFIRMED] + r.outcomes[RELEASED] + r.outcomes[REJECTED];
    return r.violations == 0 && answered > 0 ? 0 : 1;
}
