/* load.c - keel-shopload's load: requests, tokens, one order from its start to its outcome. */
#include "shopload.h"

#include <http_parser.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- HTTP --------------------------------------------------------------------------------- */

/* One request; body, key (Idempotency-Key) and auth (Authorization) may be NULL. */
int request_to(run_t *r, const char *host, int method, const char *path, const char *body,
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
int sign_token(const char *secret, int c, int64_t exp, char *out, size_t cap)
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

const char *token(run_t *r, int customer)
{
    return r->tokens ? r->tokens[customer] : NULL;
}

int request(run_t *r, int target, int method, const char *path, const char *body,
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
    if (o->fine_card)
        keel_lat_record(&r->fine, us);
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
void take_order_id(order_t *o, const keel_http_msg_t *resp, char *out, size_t cap)
{
    json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "order"));
    snprintf(out, cap, "%s", id ? id : "");
    json_decref(j);
    (void)o;
}

/*
 * An order service answer as 201 (confirmed), 409 (rejected), 202 (pending) or 0 (anything
 * else), judged by the body's status and not by the code alone: a 409 also comes from the
 * idempotency layer while the key's first request still runs, and that one is not final.
 */
int order_answer(int err, const keel_http_msg_t *resp)
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
            violation(r, "idempotency: key %s answered %d (%s), then %d (%s)", o->key,
                      o->first_status, o->order_id, st, again);
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
        /* what a client with an Idempotency-Key does on a 5xx or a broken connection: the
         * same request again, while its deadline allows, after a backoff that doubles from
         * CLIENT_RETRY_MS to 8x it, jittered (a fixed 200 ms made every shed order of an
         * overloaded shop come back up to 25 times: 54,000 retries in a 60 s run) */
        keel_ms_t wait = CLIENT_RETRY_MS << (o->retries < 3 ? o->retries : 3);
        wait = wait / 2 + (keel_ms_t)keel_rand_below(&r->rand, (uint64_t)wait / 2 + 1);
        if (st == 0 && age + wait < (keel_ms_t)r->deadline_ms && r->retrying_n < INFLIGHT_MAX) {
            o->retries++;
            o->next_try_ms = now + wait;
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
void retry_due(run_t *r)
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

void order_start(run_t *r, keel_ns_t intended)
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
        o->fine_card = c < 92;
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
