/* order - the shop's order service: takes an order, runs the order saga (reserve stock,
 * charge the card, confirm the reservation; compensations in reverse), and keeps each
 * order's history as events in the event store.
 *
 *   keel-shop-order --keel host:port,... [--listen host:port] [--registry host:port,...]
 *                   [--id ID] [--answer-within-ms 3000] [--step-retry-ms 2500]
 *                   (also ORDER_* and a YAML file)
 *
 *   POST /orders      {"customer", "items": [{"product", "qty"}, ...], "amount_cents",
 *                      "card": ok|decline|slow|fail}
 *        201 {"order", "status": "confirmed"}  every step done
 *        409 {"order", "status": "rejected"}   a step refused (no stock, card declined, the
 *                                              reservation expired): what was done is undone
 *        202 {"order", "status": "pending"}    not finished within --answer-within-ms; the
 *                                              saga goes on (here or, if this instance dies,
 *                                              on another) and GET /orders/:id tells
 *        400 bad input; 422 an Idempotency-Key used before for another order
 *        503 overloaded: --max-inflight orders are in flight here (nothing written: retry)
 *        With an Idempotency-Key, a repeat is the same order: its final answer once it has
 *        ended, else it joins the saga (202 pending if the saga runs elsewhere).
 *   GET  /orders/:id  {"order", "status": placed|confirmed|rejected|attention, ...}
 *
 * The order id is derived from the customer and the Idempotency-Key (a retry after a lost
 * answer is the same order, even if the first answer was never stored), or random without a
 * key. The saga's steps call inventory and payment by name (kit calls through the registry)
 * with the saga's keys; both services are idempotent per order. Events, in aggregate
 * "order-<id>": placed (before the saga starts), confirmed / rejected / attention (when it
 * ends, on whichever instance ends it). docs/shop.md has the design.
 */
#include "base/hash.h"
#include "base/log.h"
#include "client/lanes.h"
#include "kit/call.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/clock.h"
#include "tx/evstore.h"
#include "tx/saga.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define BODY_BYTES_MAX 8192
#define ITEMS_MAX 32
#define ORDER_KEEL_LANES 8

typedef struct app {
    keel_loop_t *loop;
    /* the event store's connections (client/lanes.h): an append reads its stream's version,
     * then commits, and on one shared connection every read waited for the commit before
     * it; an aggregate always goes to the same lane, so its own appends keep their order */
    keel_client_lanes_t keel;
    keel_es_t es[ORDER_KEEL_LANES];
    keel_sagas_t sagas;
    keel_saga_type_t order;
    keel_caller_t inventory, payment;
    keel_caller_t inventory_undo, payment_undo; /* compensations: breakers of their own */
    keel_service_t svc;
    int64_t answer_within_ms;
    /* Orders taken here and not ended (POST received, saga running): past inflight_max a
     * POST is refused at once with 503, before anything is written (admission control). */
    int64_t inflight, inflight_max;
    keel_counter_t *m_shed;
    keel_rand_t rand;
    keel_counter_t *m_confirmed, *m_rejected, *m_attention, *m_pending;
    keel_histogram_t *m_placed; /* POST received -> its `placed` event appended */
} app_t;

/* The event store (and lane) of an aggregate. */
static keel_es_t *es_of(app_t *a, const char *agg)
{
    return &a->es[keel_client_lanes_index(&a->keel, agg, strlen(agg))]; /* es[i] is on lane i */
}

/* ---- the saga's steps ------------------------------------------------------------------ */

/* The saga input: {"order", "customer", "items", "amount_cents", "card"}. */
typedef struct step_ctx {
    keel_saga_call_t *call;
    int ok[4]; /* statuses meaning OK (0-terminated) */
    int business[6];
} step_ctx_t;

static json_t *input_of(const keel_saga_call_t *call)
{
    return json_loadb((const char *)call->input, call->input_len, 0, NULL);
}

static bool in(const int *set, size_t n, int v)
{
    for (size_t i = 0; i < n && set[i]; i++)
        if (set[i] == v)
            return true;
    return false;
}

static void on_step_reply(int err, const keel_http_msg_t *resp, void *data)
{
    step_ctx_t *s = data;
    keel_saga_outcome_t out = KEEL_SAGA_TRANSIENT;
    if (err == 0 && in(s->ok, 4, resp->status))
        out = KEEL_SAGA_OK;
    else if (err == 0 && in(s->business, 6, resp->status))
        out = KEEL_SAGA_BUSINESS;
    keel_saga_call_done(s->call, out, NULL, 0);
    free(s);
}

/* One HTTP call for a step: method path [body], with the saga's key. */
static void step_call(keel_caller_t *c, keel_saga_call_t *call, int method, const char *path,
                      const char *body, const int *ok, const int *business)
{
    step_ctx_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        keel_saga_call_done(call, KEEL_SAGA_TRANSIENT, NULL, 0);
        return;
    }
    s->call = call;
    memcpy(s->ok, ok, sizeof(s->ok));
    memcpy(s->business, business, sizeof(s->business));
    keel_http_header_t h[2] = {
        {.name = "Idempotency-Key",
         .name_len = 15,
         .value = call->key,
         .value_len = strlen(call->key)},
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16}};
    keel_call_t kc = {.method = method,
                      .target = path,
                      .headers = h,
                      .headers_count = body ? 2 : 1,
                      .body = body,
                      .body_len = body ? strlen(body) : 0,
                      .deadline_ms = keel_loop_now_ms(call->loop) + call->timeout_ms,
                      .idempotent = true}; /* every step carries its key */
    if (keel_caller_call(c, &kc, on_step_reply, s) != 0) {
        free(s);
        keel_saga_call_done(call, KEEL_SAGA_TRANSIENT, NULL, 0);
    }
}

static void step_reserve(keel_saga_call_t *call, void *data)
{
    app_t *a = data;
    json_t *j = input_of(call);
    json_t *body = json_pack("{s:O}", "items", json_object_get(j, "items"));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, path[128];
    snprintf(path, sizeof(path), "/reservations/%s", call->saga_id);
    static const int ok[4] = {200, 201}, business[6] = {400, 409, 422};
    if (text == NULL)
        keel_saga_call_done(call, KEEL_SAGA_BUSINESS, NULL, 0); /* a bad input cannot pass */
    else
        step_call(&a->inventory, call, HTTP_PUT, path, text, ok, business);
    free(text);
    json_decref(body);
    json_decref(j);
}

static void undo_reserve(keel_saga_call_t *call, void *data)
{
    app_t *a = data;
    char path[128];
    snprintf(path, sizeof(path), "/reservations/%s", call->saga_id);
    static const int ok[4] = {204}, business[6] = {0};
    step_call(&a->inventory_undo, call, HTTP_DELETE, path, NULL, ok, business);
}

static void step_charge(keel_saga_call_t *call, void *data)
{
    app_t *a = data;
    json_t *j = input_of(call);
    json_t *body = json_pack(
        "{s:s, s:O, s:O, s:O}", "order", call->saga_id, "customer", json_object_get(j, "customer"),
        "amount_cents", json_object_get(j, "amount_cents"), "card", json_object_get(j, "card"));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    /* 409 is not a refusal: an Idempotency-Key whose first request still runs (transient) */
    /* 502 is the processor's "unavailable, nothing was charged": certainly not applied, so
     * a refusal the saga compensates at once, not an unknown outcome to ride out */
    static const int ok[4] = {200, 201}, business[6] = {400, 402, 410, 422, 502};
    if (text == NULL)
        keel_saga_call_done(call, KEEL_SAGA_BUSINESS, NULL, 0);
    else
        step_call(&a->payment, call, HTTP_POST, "/charges", text, ok, business);
    free(text);
    json_decref(body);
    json_decref(j);
}

static void undo_charge(keel_saga_call_t *call, void *data)
{
    app_t *a = data;
    char path[128];
    snprintf(path, sizeof(path), "/charges/%s/refund", call->saga_id);
    static const int ok[4] = {200}, business[6] = {0};
    step_call(&a->payment_undo, call, HTTP_POST, path, NULL, ok, business);
}

static void step_confirm(keel_saga_call_t *call, void *data)
{
    app_t *a = data;
    char path[128];
    snprintf(path, sizeof(path), "/reservations/%s/confirm", call->saga_id);
    static const int ok[4] = {200}, business[6] = {409, 410};
    step_call(&a->inventory, call, HTTP_POST, path, NULL, ok, business);
}

/* ---- order events ---------------------------------------------------------------------- */

/* The order's outcome event (version 2, after "placed") goes in the saga's end entry: an
 * order is "placed" exactly while its saga runs, and no crash can leave an ended saga's
 * order "placed" (until 6 Dec it was a separate append after the end, retried for a minute
 * and lost with the process). The saga starts only once "placed" is stored as version 1
 * (h_post, on_placed), and writes its end once, so version 2 is this event's alone. */
static int outcome_cmds(keel_args_t *a, const char *id, keel_saga_state_t state, void *data,
                        size_t *cmds)
{
    (void)data;
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
    snprintf(agg, sizeof(agg), "order-%s", id);
    const char *type = state == KEEL_SAGA_DONE          ? "confirmed"
                       : state == KEEL_SAGA_COMPENSATED ? "rejected"
                                                        : "attention";
    keel_es_event_t ev = {.type = type, .type_len = strlen(type)};
    return keel_es_append_cmds(a, agg, 1, &ev, 1, cmds);
}

/* Every saga this instance ends (started here or adopted from a dead one). */
static void on_any_end(keel_sagas_t *o, const char *id, int err, keel_saga_state_t state,
                       void *data)
{
    app_t *a = data;
    (void)o;
    (void)id;
    if (err != 0)
        return; /* not ended here: its owner records it */
    keel_counter_inc(state == KEEL_SAGA_DONE          ? a->m_confirmed
                     : state == KEEL_SAGA_COMPENSATED ? a->m_rejected
                                                      : a->m_attention);
}

/* ---- POST /orders ---------------------------------------------------------------------- */

typedef struct req_ctx {
    app_t *a;
    keel_service_req_t *req; /* NULL once answered */
    char id[ID_BYTES_MAX + 1];
    char *input;
    keel_us_t t0_us; /* when the POST was taken */
    keel_timer_t timer;
    bool timer_on, ended;
} req_ctx_t;

static void answer(req_ctx_t *r, int status, const char *state)
{
    if (r->req == NULL)
        return;
    keel_service_req_enter(r->req);
    json_t *o = json_pack("{s:s, s:s}", "order", r->id, "status", state);
    keel_service_respond_json(r->req, status, o);
    json_decref(o);
    r->req = NULL;
}

static void req_free(req_ctx_t *r)
{
    r->a->inflight--;
    free(r->input);
    free(r);
}

static void req_timer_closed(keel_timer_t *t)
{
    req_free(KEEL_LIST_ENTRY(t, req_ctx_t, timer));
}

/* Ends a request's context once its saga ended and its timer is closed. */
static void req_done(req_ctx_t *r)
{
    if (r->timer_on) {
        r->timer_on = false;
        keel_timer_close(&r->timer, req_timer_closed);
    } else {
        req_free(r);
    }
}

static void on_saga_end(keel_sagas_t *o, const char *id, int err, keel_saga_state_t state,
                        void *data)
{
    req_ctx_t *r = data;
    (void)o;
    (void)id;
    if (err != 0)
        answer(r, 202, "pending"); /* another instance owns it, or this one is closing */
    else if (state == KEEL_SAGA_DONE)
        answer(r, 201, "confirmed");
    else if (state == KEEL_SAGA_COMPENSATED)
        answer(r, 409, "rejected");
    else
        answer(r, 500, "attention");
    r->ended = true;
    req_done(r);
}

static void on_deadline(keel_timer_t *t, void *data)
{
    req_ctx_t *r = data;
    (void)t;
    if (r->req != NULL)
        keel_counter_inc(r->a->m_pending);
    answer(r, 202, "pending"); /* the saga goes on; the context lives until it ends */
}

static void saga_go(req_ctx_t *r)
{
    app_t *a = r->a;
    int rc =
        keel_sagas_start(&a->sagas, "order", r->id, r->input, strlen(r->input), on_saga_end, r);
    if (rc == KEEL_EEXISTS) { /* this instance runs it already: the other request answers */
        answer(r, 202, "pending");
        req_done(r);
        return;
    }
    if (rc != 0) {
        if (r->req)
            keel_http_respond_error(r->req->http, 503, "the order saga could not start; retry");
        r->req = NULL;
        req_done(r);
        return;
    }
    if (keel_timer_init(a->loop, &r->timer) == 0) {
        r->timer_on = true;
        keel_timer_start(&r->timer, (keel_ms_t)a->answer_within_ms, 0, on_deadline, r);
    }
}

static void refuse(req_ctx_t *r, int status, const char *why)
{
    keel_service_req_enter(r->req);
    keel_http_respond_error(r->req->http, status, why);
    r->req = NULL;
    req_done(r);
}

static int fold_apply(void *data, keel_buf_t *state, const keel_es_event_t *ev);
static const keel_es_fold_t ORDER_FOLD;

/*
 * The order was placed before under this id: a retry with the same Idempotency-Key (here or
 * on another instance, the gateway's or the client's). The same order is answered from its
 * events when it has ended, or joins its saga; another order under the same key is refused
 * (422, as the IETF idempotency draft answers a key reused with another payload). This is
 * the service's whole idempotency: the order id derived from the key is the claim (the
 * `placed` event, expected version 0) and the order's events are the stored answer, so no
 * idempotency record is kept beside them (two keel writes per order less).
 */
static void on_existing(keel_es_t *es, void *ctx, int err, uint64_t version,
                        const keel_buf_t *state, const char *msg)
{
    req_ctx_t *r = ctx;
    (void)es;
    (void)msg;
    if (err != 0 || version == 0) {
        refuse(r, 503, "the order could not be read; retry");
        return;
    }
    const char *p = (const char *)keel_buf_rptr(state);
    size_t n = keel_buf_unread(state);
    const char *nl = memchr(p, '\n', n);
    json_t *was = nl ? json_loadb(nl + 1, n - (size_t)(nl + 1 - p), 0, NULL) : NULL;
    json_t *now = json_loads(r->input, 0, NULL);
    bool same = was != NULL && now != NULL && json_equal(was, now);
    json_decref(was);
    json_decref(now);
    if (!same) {
        refuse(r, 422, "this Idempotency-Key was used for another order");
        return;
    }
    size_t sl = nl ? (size_t)(nl - p) : n;
    const char *final = sl == 9 && memcmp(p, "confirmed", 9) == 0   ? "confirmed"
                        : sl == 8 && memcmp(p, "rejected", 8) == 0  ? "rejected"
                        : sl == 9 && memcmp(p, "attention", 9) == 0 ? "attention"
                                                                    : NULL;
    if (final) {
        answer(r, final[0] == 'c' ? 201 : final[0] == 'r' ? 409 : 500, final);
        req_done(r);
        return;
    }
    saga_go(r); /* placed: its saga runs here or elsewhere, or waits to be adopted: join it */
}

static void on_placed(keel_es_t *es, void *ctx, int err, uint64_t version, const char *msg)
{
    req_ctx_t *r = ctx;
    (void)version;
    (void)msg;
    if (r->a->m_placed)
        keel_histogram_observe(r->a->m_placed, (double)(keel_clock_now_us() - r->t0_us) / 1e6);
    if (err == KEEL_ECONFLICT) {
        char agg[KEEL_ES_AGG_BYTES_MAX + 1];
        snprintf(agg, sizeof(agg), "order-%s", r->id);
        if (keel_es_load(es, agg, &ORDER_FOLD, on_existing, r) != 0)
            refuse(r, 503, "the order could not be read; retry");
        return;
    }
    if (err != 0) { /* the order may or may not be placed: retry */
        refuse(r, 503, "the order could not be stored; retry");
        return;
    }
    saga_go(r);
}

static void h_post(keel_service_req_t *req, void *data)
{
    app_t *a = data;
    const keel_http_msg_t *m = req->http->msg;
    if (m->body_len > BODY_BYTES_MAX) {
        keel_http_respond_error(req->http, 413, "a body is at most 8 KiB");
        return;
    }
    if (a->inflight >= a->inflight_max) {
        /* Past capacity, a queue only makes every order late: without this, the regions
         * demo at 1.5x its capacity answered nothing in time after 30 s (congestion
         * collapse). Refused here, an order costs nothing and is retried by its client. */
        keel_counter_inc(a->m_shed);
        keel_http_respond_error(req->http, 503,
                                "overloaded: too many orders in flight here; retry");
        return;
    }
    json_t *j = json_loadb((const char *)m->body, m->body_len, 0, NULL);
    const char *customer = json_string_value(json_object_get(j, "customer"));
    const char *card = json_string_value(json_object_get(j, "card"));
    json_t *items = json_object_get(j, "items"), *amt = json_object_get(j, "amount_cents");
    if (!json_is_object(j) || customer == NULL || !shop_id_ok(customer, strlen(customer)) ||
        !json_is_array(items) || json_array_size(items) == 0 ||
        json_array_size(items) > ITEMS_MAX || !json_is_integer(amt) ||
        json_integer_value(amt) < 1) {
        json_decref(j);
        keel_http_respond_error(req->http, 400,
                                "a JSON object: customer, items (1..32 of {product, qty}), "
                                "amount_cents (> 0), card");
        return;
    }
    req_ctx_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        json_decref(j);
        keel_http_respond_error(req->http, 503, "out of memory");
        return;
    }
    r->a = a;
    r->req = req;
    r->t0_us = keel_clock_now_us();
    a->inflight++;
    size_t kn;
    const char *key = keel_http_msg_header(m, "Idempotency-Key", &kn);
    uint64_t h = key ? keel_hash64(key, kn, keel_hash64(customer, strlen(customer), 7))
                     : keel_rand_u64(&a->rand);
    snprintf(r->id, sizeof(r->id), "o%016llx", (unsigned long long)h);
    json_t *input = json_pack("{s:s, s:s, s:O, s:O, s:s}", "order", r->id, "customer", customer,
                              "items", items, "amount_cents", amt, "card", card ? card : "ok");
    r->input = input ? json_dumps(input, JSON_COMPACT) : NULL;
    json_decref(input);
    json_decref(j);
    if (r->input == NULL) {
        req_free(r);
        keel_http_respond_error(req->http, 503, "out of memory");
        return;
    }
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
    snprintf(agg, sizeof(agg), "order-%s", r->id);
    keel_es_event_t ev = {.type = "placed",
                          .type_len = 6,
                          .data = (const uint8_t *)r->input,
                          .data_len = strlen(r->input)};
    if (keel_es_append(es_of(a, agg), agg, KEEL_ES_NO_STREAM, &ev, 1, on_placed, r) != 0) {
        req_free(r);
        keel_http_respond_error(req->http, 503, "the order could not be stored");
    }
}

/* ---- GET /orders/:id ------------------------------------------------------------------- */

/* The state: "<status>\n<input JSON>". */
static int fold_apply(void *data, keel_buf_t *state, const keel_es_event_t *ev)
{
    (void)data;
    char head[16];
    snprintf(head, sizeof(head), "%.*s", (int)ev->type_len, ev->type);
    if (strcmp(head, "placed") == 0) {
        keel_buf_reset(state);
        keel_buf_append_str(state, "placed\n");
        return keel_buf_append(state, ev->data, ev->data_len);
    }
    /* an outcome replaces the status line, keeps the input */
    const uint8_t *p = keel_buf_rptr(state);
    size_t n = keel_buf_unread(state);
    const uint8_t *nl = memchr(p, '\n', n);
    size_t rest = nl ? n - (size_t)(nl + 1 - p) : 0;
    uint8_t *copy = malloc(rest + 1);
    if (copy == NULL)
        return KEEL_ENOMEM;
    if (rest)
        memcpy(copy, nl + 1, rest);
    keel_buf_reset(state);
    keel_buf_append_str(state, head);
    keel_buf_append_str(state, "\n");
    int rc = keel_buf_append(state, copy, rest);
    free(copy);
    return rc;
}

static const keel_es_fold_t ORDER_FOLD = {fold_apply, 1, NULL};

static void on_loaded(keel_es_t *es, void *ctx, int err, uint64_t version, const keel_buf_t *state,
                      const char *msg)
{
    keel_service_req_t *req = ctx;
    (void)es;
    (void)msg;
    keel_service_req_enter(req);
    if (err != 0) {
        keel_http_respond_error(req->http, 503, "the order could not be read");
        return;
    }
    if (version == 0) {
        keel_http_respond_error(req->http, 404, "no such order");
        return;
    }
    const char *p = (const char *)keel_buf_rptr(state);
    size_t n = keel_buf_unread(state);
    const char *nl = memchr(p, '\n', n);
    json_t *input = nl ? json_loadb(nl + 1, n - (size_t)(nl + 1 - p), 0, NULL) : NULL;
    json_t *o = json_object();
    if (input)
        json_object_update(o, input);
    json_object_set_new(o, "status", json_stringn(p, nl ? (size_t)(nl - p) : n));
    json_object_set_new(o, "version", json_integer((json_int_t)version));
    keel_service_respond_json(req, 200, o);
    json_decref(o);
    json_decref(input);
}

static void h_get(keel_service_req_t *req, void *data)
{
    app_t *a = data;
    const keel_route_param_t *p = &req->route.params[0];
    if (!shop_id_ok(p->value, p->value_len)) {
        keel_http_respond_error(req->http, 400, SHOP_ID_RULE);
        return;
    }
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
    snprintf(agg, sizeof(agg), "order-%.*s", (int)p->value_len, p->value);
    if (keel_es_load(es_of(a, agg), agg, &ORDER_FOLD, on_loaded, req) != 0)
        keel_http_respond_error(req->http, 503, "the order could not be read");
}

/* ---- main ---------------------------------------------------------------------------------- */

static void sagas_closed(keel_sagas_t *o)
{
    (void)o;
}

static void caller_closed(keel_caller_t *c, void *data)
{
    (void)c;
    (void)data;
}

static void keel_closed(keel_client_lanes_t *l)
{
    (void)l;
}

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    keel_sagas_close(&a->sagas, sagas_closed); /* sagas here are adopted by another instance */
    keel_caller_close(&a->inventory, caller_closed, NULL);
    keel_caller_close(&a->payment, caller_closed, NULL);
    keel_caller_close(&a->inventory_undo, caller_closed, NULL);
    keel_caller_close(&a->payment_undo, caller_closed, NULL);
    keel_client_lanes_close(&a->keel, keel_closed);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8120", *keel = "127.0.0.1:7001", *registry = NULL, *id = NULL;
    int64_t within = 3000, inflight_max = 256, lock_ms = 2000, step_retry_ms = 2500,
            retention_ms = 25LL * 3600 * 1000;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0,
         "keel server host:port,... (sagas, events, the registry to find inventory and payment)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service order there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id (default order-<host>-<port>)"},
        {"answer-within-ms", KEEL_OPT_INT, &within, 10, 600000,
         "answer 202 pending if the saga has not ended by then"},
        {"max-inflight", KEEL_OPT_INT, &inflight_max, 1, 1000000,
         "orders taken here and not ended; past it, POST /orders is 503 at once"},
        {"saga-retention-ms", KEEL_OPT_INT, &retention_ms, 0, 365LL * 24 * 3600 * 1000,
         "a finished order saga's log is deleted this long after it ended (0: kept); longer "
         "than the idempotency keys' 24 h, so a retry never finds its saga gone"},
        {"step-retry-ms", KEEL_OPT_INT, &step_retry_ms, 0, 600000,
         "a saga step with an unknown outcome is retried until this long after its first "
         "attempt (0: three attempts)"},
        {"saga-lock-ms", KEEL_OPT_INT, &lock_ms, 300, 600000,
         "a saga's ownership lease: a dead instance's sagas are adopted this long after (the "
         "library's default is 10 s; an order's client waits 5 s)"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-order", "ORDER", opts,
                                sizeof(opts) / sizeof(opts[0]), argc, argv);
    if (exit_code >= 0)
        return exit_code;
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    static app_t app;
    app.loop = &loop;
    app.answer_within_ms = within;
    app.inflight_max = inflight_max;
    keel_rand_seed(&app.rand, (uint64_t)keel_clock_unix_ms() ^ (uint64_t)getpid() << 32);
    char seeds[1024];
    snprintf(seeds, sizeof(seeds), "%s", keel);
    keel_client_config_t cc = keel_client_config_default();
    cc.requests_max = KEEL_CLIENT_REQUESTS_LIMIT;
    cc.inflight_max = KEEL_CLIENT_REQUESTS_LIMIT;
    if ((rc = keel_client_config_seeds(&cc, seeds, "--keel", &msg)) != 0 ||
        (rc = keel_client_lanes_init(&app.keel, &loop, &cc, ORDER_KEEL_LANES, &msg)) != 0) {
        fprintf(stderr, "keel-shop-order: %s\n", msg.text);
        return 2;
    }
    keel_es_config_t ec = keel_es_config_default();
    for (uint32_t i = 0; i < ORDER_KEEL_LANES; i++)
        keel_es_init(&app.es[i], &app.keel.c[i], &ec);

    keel_service_config_t cfg = keel_service_config_default("order");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = &app;
    rc = keel_service_init(&app.svc, &loop, &cfg, &msg);
    keel_metrics_t *mx = app.svc.metrics;
    if (rc == 0) {
        const char *help = "Orders by how their saga ended (on this instance).";
        app.m_confirmed =
            keel_metrics_counter(mx, "shop_orders_total", help, "outcome=\"confirmed\"");
        app.m_rejected =
            keel_metrics_counter(mx, "shop_orders_total", help, "outcome=\"rejected\"");
        app.m_attention =
            keel_metrics_counter(mx, "shop_orders_total", help, "outcome=\"attention\"");
        app.m_pending = keel_metrics_counter(mx, "shop_orders_answered_pending_total",
                                             "Orders answered 202 before their saga ended.", NULL);
        app.m_shed = keel_metrics_counter(
            mx, "shop_orders_shed_total",
            "Orders refused with 503 at once: --max-inflight orders were in flight here.", NULL);
        app.m_placed = keel_metrics_histogram(
            mx, "shop_order_placed_seconds",
            "From a POST /orders taken to its placed event appended (or refused).", NULL, NULL, 0);
    }
    /* the services the steps call, found in the registry */
    keel_caller_config_t ic = keel_caller_config_default("inventory");
    ic.registry = keel;
    keel_caller_config_t pc = keel_caller_config_default("payment");
    pc.registry = keel;
    /* one attempt may take as long as the step allows (a card processor can be slow): a
     * second attempt while the first still runs only meets its key's 409 */
    ic.retry.per_try_timeout_ms = 0;
    pc.retry.per_try_timeout_ms = 0;
    /* A failing card processor answers 502 for that card only: a breaker that opened after a
     * few such answers in a row would refuse every charge on a healthy instance. Open on a
     * failure rate over a window (and connect failures), not on a short run. */
    pc.breaker.consecutive_failures_max = 50;
    /* Compensations get callers of their own: a breaker the actions opened must not hold
     * back the undoing of what they did (found under load: sagas stuck compensating). */
    keel_caller_config_t iu = ic, pu = pc;
    if (rc == 0)
        rc = keel_caller_init(&app.inventory, &loop, &ic, mx, &msg);
    if (rc == 0)
        rc = keel_caller_init(&app.payment, &loop, &pc, mx, &msg);
    if (rc == 0)
        rc = keel_caller_init(&app.inventory_undo, &loop, &iu, NULL, &msg);
    if (rc == 0)
        rc = keel_caller_init(&app.payment_undo, &loop, &pu, NULL, &msg);
    /* the saga */
    keel_saga_def_default(&app.order.def, "order");
    keel_saga_type_step(&app.order, "reserve", step_reserve, undo_reserve, &app);
    keel_saga_type_step(&app.order, "charge", step_charge, undo_charge, &app);
    keel_saga_type_step(&app.order, "confirm", step_confirm, NULL, &app);
    app.order.end_cmds = outcome_cmds;
    /* A step whose outcome is unknown (a timeout, a 503 while keel elects a leader, an
     * instance restarting, its key's 409 in progress) is tried again for step-retry-ms, not a
     * count of attempts: three quick attempts used up in a one-second stall compensated
     * healthy orders (docs/shop.md, "Retries bounded by time"). */
    for (uint32_t i = 0; step_retry_ms > 0 && i < app.order.def.steps_n; i++) {
        app.order.def.steps[i].attempts_max = KEEL_SAGA_ATTEMPTS_MAX;
        app.order.def.steps[i].retry_for_ms = (keel_ms_t)step_retry_ms;
        app.order.def.steps[i].backoff_cap_ms = 500;
    }
    app.order.def.input_bytes_max = BODY_BYTES_MAX;
    keel_sagas_config_t sc = keel_sagas_config_default();
    char seeds2[1024];
    snprintf(seeds2, sizeof(seeds2), "%s", keel);
    keel_client_config_t tmp = keel_client_config_default();
    if (rc == 0)
        rc = keel_client_config_seeds(&tmp, seeds2, "--keel", &msg);
    for (size_t i = 0; i < tmp.seeds_n; i++)
        sc.seeds[sc.seeds_n++] = tmp.seeds[i];
    sc.metrics = mx;
    sc.lock_ttl_ms = (keel_ms_t)lock_ms;
    sc.scan_interval_ms = (keel_ms_t)(lock_ms / 4 < 1000 ? lock_ms / 4 : 1000);
    sc.on_end = on_any_end;
    sc.log_retention_ms = (keel_ms_t)retention_ms;
    sc.on_end_data = &app;
    sc.seed = keel_rand_u64(&app.rand);
    if (rc == 0)
        rc = keel_sagas_init(&app.sagas, &loop, &sc, &msg);
    if (rc == 0)
        rc = keel_sagas_register(&app.sagas, &app.order, &msg);
    if (rc == 0)
        rc = keel_service_route(&app.svc, "POST", "/orders", h_post, &app, &msg);
    if (rc == 0)
        rc = keel_service_route(&app.svc, "GET", "/orders/:id", h_get, &app, &msg);
    if (rc == 0)
        rc = keel_service_start(&app.svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-order: %s\n", msg.text);
        return 1;
    }
    printf("order: listening on port %d\n", keel_service_port(&app.svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&app.svc);
    for (uint32_t i = 0; i < ORDER_KEEL_LANES; i++)
        keel_es_free(&app.es[i]);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
