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

#include <http_parser.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TARGETS_MAX 16
#define CHECK_TRIES_ORDER 20
#define PRODUCTS_MAX 100000
#define INFLIGHT_MAX 50000
#define SECONDS_MAX 3600

typedef struct run run_t;

enum outcome { CONFIRMED, RELEASED, NO_STOCK, FAILED, LATE, OUTCOMES };
static const char *const outcome_names[OUTCOMES] = {"confirmed", "released", "no stock", "failed",
                                                    "late"};

typedef struct order {
    run_t *r;
    uint64_t id;
    keel_ns_t intended_ns; /* when it should have started */
    int items_n, step, retry_reserve, abandon, target;
    int product[3], qty[3];
    char body[256];
} order_t;

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
};

/* ---- HTTP --------------------------------------------------------------------------------- */

static int request(run_t *r, int target, int method, const char *path, const char *body,
                   keel_http_client_cb cb, void *data)
{
    keel_http_header_t h = {
        .name = "Content-Type", .value = "application/json", .name_len = 12, .value_len = 16};
    keel_http_client_request_t req = {.method = method,
                                      .host_port = r->targets[target],
                                      .target = path,
                                      .headers = body ? &h : NULL,
                                      .headers_count = body ? 1 : 0,
                                      .body = body,
                                      .body_len = body ? strlen(body) : 0,
                                      .timeout_ms = r->deadline_ms};
    return keel_http_client_request(&r->http, &req, cb, data, NULL);
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
    if (out == CONFIRMED)
        for (int i = 0; i < o->items_n; i++)
            r->confirmed_units[o->product[i]] += o->qty[i];
    keel_lat_record(&r->all, us);
    keel_lat_record(&r->sec, us);
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
            order_end(o, NO_STOCK);
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

static void order_step(order_t *o)
{
    run_t *r = o->r;
    char path[96];
    int rc;
    if (o->step <= 1) {
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
        len += (size_t)snprintf(o->body + len, sizeof(o->body) - len,
                                "%s{\"product\":\"r%" PRIx64 "p%d\",\"qty\":%d}", i ? "," : "",
                                r->run_id, o->product[i], o->qty[i]);
    }
    snprintf(o->body + len, sizeof(o->body) - len, "]}");
    r->inflight++;
    r->started++;
    order_step(o);
}

/* ---- the run --------------------------------------------------------------------------------- */

enum { RESTOCK, LOAD, DRAIN, RESOLVE, CHECK, DONE };

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
    int64_t want = r->stock - r->confirmed_units[c->product];
    if ((j == NULL || resp->status != 200) && ++c->tries < CHECK_TRIES) {
        json_decref(j);
        check_ask(c); /* not an answer yet: ask again */
        return;
    }
    if (j == NULL || resp->status != 200) {
        r->violations++;
        snprintf(r->why, sizeof(r->why), "product %d: no answer to GET /products", c->product);
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
           "  no-stock %5" PRIu64 "  failed %4" PRIu64 "  late %4" PRIu64
           "  p50 %7.2f ms  p99 %7.2f ms  in flight %" PRIu64 "\n",
           r->second, done, r->outcome_sec[CONFIRMED], r->outcome_sec[RELEASED],
           r->outcome_sec[NO_STOCK], r->outcome_sec[FAILED], r->outcome_sec[LATE],
           (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0,
           (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0, r->inflight);
    fflush(stdout);
    if (r->seconds)
        json_array_append_new(
            r->seconds,
            json_pack("{s:i, s:I, s:I, s:I, s:f, s:f}", "t", r->second, "orders", (json_int_t)done,
                      "confirmed", (json_int_t)r->outcome_sec[CONFIRMED], "failed",
                      (json_int_t)(r->outcome_sec[FAILED] + r->outcome_sec[LATE]), "p50_ms",
                      (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0, "p99_ms",
                      (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0));
    memset(r->outcome_sec, 0, sizeof(r->outcome_sec));
    keel_lat_reset(&r->sec);
}

static void tick(keel_timer_t *t, void *data)
{
    run_t *r = data;
    (void)t;
    switch (r->phase) {
    case RESTOCK:
        if (r->restocked < r->products)
            return;
        if (r->violations) {
            r->phase = DONE;
            break;
        }
        r->phase = LOAD;
        r->t0_ns = keel_clock_now_ns();
        printf("restocked %d products to %" PRId64 " units; %.0f orders/s for %d s\n", r->products,
               r->stock, r->rate, r->duration_s);
        return;
    case LOAD: {
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
        if (r->inflight > 0 && secs_since(r) < r->duration_s + r->deadline_ms / 1000.0 + 5)
            return;
        progress(r);
        r->phase = RESOLVE;
        for (size_t i = 0; i < r->uncertain_n; i++) {
            r->uncertain[i]->step = 100; /* counts the asks from here */
            resolve_ask(r->uncertain[i]);
        }
        return;
    case RESOLVE:
        if (r->resolved < r->uncertain_n)
            return;
        r->phase = CHECK;
        for (int p = 0; p < r->products; p++) {
            check_t *c = malloc(sizeof(*c));
            *c = (check_t){r, p, 0};
            check_ask(c);
        }
        return;
    case CHECK:
        if (r->checked < r->products)
            return;
        r->phase = DONE;
        break;
    default:
        return;
    }
    keel_timer_close(&r->tick, NULL);
    keel_http_client_close(&r->http, NULL, NULL);
}

static void report(run_t *r)
{
    uint64_t answered = r->outcomes[CONFIRMED] + r->outcomes[RELEASED] + r->outcomes[NO_STOCK];
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
    printf("outcomes unknown to the client, asked afterwards: %zu\n", r->uncertain_n);
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
    const char *targets = NULL;
    uint64_t seed = 1;
    r.rate = 200;
    r.duration_s = 10;
    r.products = 100;
    r.stock = 1000;
    r.deadline_ms = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: keel-shopload --inventory host:port[,...] [--rate orders/s] "
                   "[--duration s]\n       [--products N] [--stock S] [--deadline-ms D] "
                   "[--seed X] [--json FILE]\n(tools/shopload/main.c says what it does)\n");
            return 0;
        }
        i++;
        if (strcmp(a, "--inventory") == 0 && v)
            targets = v;
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
        else {
            fprintf(stderr, "keel-shopload: unknown option or missing value '%s'\n", a);
            return 2;
        }
    }
    if (targets == NULL) {
        fprintf(stderr, "keel-shopload: --inventory host:port[,...] is required\n");
        return 2;
    }
    char list[1024];
    snprintf(list, sizeof(list), "%s", targets);
    for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;)
        if (*tok && r.targets_n < TARGETS_MAX)
            snprintf(r.targets[r.targets_n++], sizeof(r.targets[0]), "%s", tok);
    keel_rand_seed(&r.rand, seed);
    r.run_id = (uint64_t)keel_clock_unix_ms();
    r.confirmed_units = calloc((size_t)r.products, sizeof(int64_t));
    r.seconds = json_array();
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
    keel_timer_init(&r.loop, &r.tick);
    keel_timer_start(&r.tick, 1, 1, tick, &r);
    keel_loop_run(&r.loop);
    keel_loop_close(&r.loop);
    report(&r);
    json_decref(r.seconds);
    free(r.confirmed_units);
    for (size_t i = 0; i < r.uncertain_n; i++)
        free(r.uncertain[i]);
    free(r.uncertain);
    uint64_t answered = r.outcomes[CONFIRMED] + r.outcomes[RELEASED] + r.outcomes[NO_STOCK];
    return r.violations == 0 && answered > 0 ? 0 : 1;
}
