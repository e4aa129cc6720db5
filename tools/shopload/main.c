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

#include "shopload.h"

#include <http_parser.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the run -----------------------------------------------------------------------------------
 */

static void on_restock(int err, const keel_http_msg_t *resp, void *data)
{
    run_t *r = data;
    if (err != 0 || resp->status != 200) {
        violation(r, "restock failed: %s", err ? keel_strerror(err) : "not 200");
    }
    r->restocked++;
}

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
