/* main.c - keel-microbench: ns per operation of the resilience and balancing cores. */
#include "base/rand.h"
#include "core/balance.h"
#include "core/breaker.h"
#include "core/bulkhead.h"
#include "core/hashring.h"
#include "core/kv_coll.h"
#include "core/maglev.h"
#include "core/outlier.h"
#include "core/ratelimit.h"
#include "core/retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Each benchmark runs its loop in batches until a time budget is spent (0.15 s,
 * or 0.02 s with --quick) or ops_max operations are done, then prints
 *     name  ns/op  ops
 * The clock is read once per batch, not per operation. Results feed
 * bench/RESULTS.md; single-threaded, so on a shared machine run it when idle.
 */

static double budget_s = 0.15;
static uint64_t ops_max = 20000000;
static volatile uint64_t sink;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef uint64_t (*bench_fn)(void *ctx, uint64_t start, uint64_t n);

static void run(const char *name, bench_fn fn, void *ctx)
{
    uint64_t done = 0, batch = 1, acc = 0;
    double t0 = now_s(), t = t0;
    while (t - t0 < budget_s && done < ops_max) {
        acc += fn(ctx, done, batch);
        done += batch;
        t = now_s();
        if (batch < 1000000 && t - t0 < budget_s / 20)
            batch *= 2; /* 1, 2, 4, ...: slow operations are not overshot by a big first batch */
    }
    sink += acc;
    printf("%-28s %9.1f %12llu\n", name, (t - t0) * 1e9 / (double)done, (unsigned long long)done);
    fflush(stdout);
}

/* ---- breaker ---- */

static uint64_t b_breaker(void *ctx, uint64_t start, uint64_t n)
{
    keel_breaker_t *b = ctx;
    uint64_t acc = 0;
    for (uint64_t i = start; i < start + n; i++) {
        keel_ms_t now = (keel_ms_t)(i >> 10);
        int p = keel_breaker_allow(b, now);
        if (p >= 0)
            keel_breaker_record(b, now, p,
                                (i & 15) == 0 ? KEEL_BREAKER_FAILURE : KEEL_BREAKER_SUCCESS,
                                (keel_ms_t)(i & 63));
        acc += (uint64_t)p;
    }
    return acc;
}

/* ---- rate limiters ---- */

static uint64_t b_tokenbucket(void *ctx, uint64_t start, uint64_t n)
{
    keel_tokenbucket_t *tb = ctx;
    uint64_t acc = 0;
    for (uint64_t i = start; i < start + n; i++)
        acc += keel_tokenbucket_take(tb, (keel_ms_t)(i >> 6), 1, NULL) == 0;
    return acc;
}

static uint64_t b_slidingwindow(void *ctx, uint64_t start, uint64_t n)
{
    keel_slidingwindow_t *sw = ctx;
    uint64_t acc = 0;
    keel_ms_t after;
    for (uint64_t i = start; i < start + n; i++)
        acc += keel_slidingwindow_take(sw, (keel_ms_t)(i >> 6), 1, &after) == 0;
    return acc;
}

static uint64_t b_keyed(void *ctx, uint64_t start, uint64_t n)
{
    keel_ratelimit_keyed_t *kl = ctx;
    uint64_t acc = 0;
    char key[16];
    for (uint64_t i = start; i < start + n; i++) {
        uint64_t k = keel_mix64(i) % 1000; /* 1000 clients */
        memcpy(key, "client-", 7);
        memcpy(key + 7, &k, 8);
        acc += keel_ratelimit_keyed_take(kl, (keel_ms_t)(i >> 6), key, 15, 1, NULL) == 0;
    }
    return acc;
}

/* ---- retry, bulkhead, outlier ---- */

static uint64_t b_retry(void *ctx, uint64_t start, uint64_t n)
{
    keel_retry_t *p = ctx;
    keel_rand_t r;
    keel_rand_seed(&r, start);
    uint64_t acc = 0;
    const keel_retry_outcome_t o = {KEEL_RETRY_FAIL_RESET, 0, true};
    for (uint64_t i = start; i < start + n; i++) {
        keel_retry_call_t call;
        keel_retry_decision_t d;
        keel_ms_t now = (keel_ms_t)(i >> 4);
        keel_retry_begin(p, &call, now, now + 1000);
        keel_retry_next(p, &call, now, &o, &r, &d);
        acc += (uint64_t)d.start_ms;
    }
    return acc;
}

static uint64_t b_bulkhead(void *ctx, uint64_t start, uint64_t n)
{
    keel_bulkhead_t *b = ctx;
    uint64_t acc = 0, t;
    for (uint64_t i = start; i < start + n; i++) {
        acc += keel_bulkhead_acquire(b, (keel_ms_t)i, &t) == 0;
        keel_bulkhead_release(b);
    }
    return acc;
}

static uint64_t b_outlier(void *ctx, uint64_t start, uint64_t n)
{
    keel_outlier_t *o = ctx;
    for (uint64_t i = start; i < start + n; i++)
        keel_outlier_record_status(o, (uint32_t)(i % o->n), 1, (i & 7) ? 200 : 503);
    return o->ep[0].sr_requests;
}

/* ---- balancers ---- */

static uint64_t b_pick(void *ctx, uint64_t start, uint64_t n)
{
    keel_balance_t *b = ctx;
    uint64_t acc = 0;
    uint32_t idx;
    for (uint64_t i = start; i < start + n; i++) {
        keel_balance_pick(b, i * 0x9e3779b97f4a7c15ull, 0, &idx);
        acc += idx;
    }
    return acc;
}

static uint64_t b_ring_find(void *ctx, uint64_t start, uint64_t n)
{
    const keel_hashring_t *r = ctx;
    uint64_t acc = 0;
    for (uint64_t i = start; i < start + n; i++)
        acc += r->points[keel_hashring_find(r, i * 0x9e3779b97f4a7c15ull)].node;
    return acc;
}

static uint64_t b_maglev_lookup(void *ctx, uint64_t start, uint64_t n)
{
    const keel_maglev_t *m = ctx;
    uint64_t acc = 0;
    for (uint64_t i = start; i < start + n; i++)
        acc += keel_maglev_lookup(m, i * 0x9e3779b97f4a7c15ull);
    return acc;
}

/* Build inputs for the ring and maglev rebuild benches, outside any balancer. */
typedef struct build_bench {
    keel_hashring_t ring;
    keel_maglev_t maglev;
    uint64_t *ids;
    uint32_t *weights;
    uint8_t *include;
    uint32_t n, vnodes;
} build_bench_t;

/* A whole table rebuild, as after an endpoint update or a health change. */
static uint64_t b_maglev_build(void *ctx, uint64_t start, uint64_t n)
{
    build_bench_t *bb = ctx;
    for (uint64_t i = start; i < start + n; i++)
        keel_maglev_build(&bb->maglev, bb->ids, bb->include, bb->n);
    return bb->maglev.table[start % bb->maglev.table_size];
}

static uint64_t b_ring_build(void *ctx, uint64_t start, uint64_t n)
{
    build_bench_t *bb = ctx;
    for (uint64_t i = start; i < start + n; i++)
        keel_hashring_build(&bb->ring, bb->ids, bb->weights, bb->n, bb->vnodes);
    return bb->ring.points[start % bb->ring.points_n].hash;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "keel-microbench: %s: %s\n", what, keel_strerror(err));
    exit(1);
}

/* Ring and maglev rebuilds over the same endpoints, on their own structs as the policies use. */
static void bench_rebuilds(const keel_balance_spec_t *specs, const keel_balance_config_t *c)
{
    uint32_t n = c->endpoints_max;
    build_bench_t bb = {.n = n, .vnodes = c->ring_vnodes};
    bb.ids = calloc(n, sizeof(*bb.ids));
    bb.weights = calloc(n, sizeof(*bb.weights));
    bb.include = calloc(n, sizeof(*bb.include));
    if (!bb.ids || !bb.weights || !bb.include ||
        keel_hashring_init(&bb.ring, n * c->ring_vnodes * c->ring_weight_max) ||
        keel_maglev_init(&bb.maglev, c->maglev_table_size, n))
        die("rebuild bench", KEEL_ENOMEM);
    for (uint32_t i = 0; i < n; i++) {
        bb.ids[i] = specs[i].id;
        bb.weights[i] = specs[i].weight;
        bb.include[i] = 1;
    }
    char name[64];
    snprintf(name, sizeof(name), "ring_build_%u", n);
    run(name, b_ring_build, &bb);
    snprintf(name, sizeof(name), "maglev_build_%u_M%u", n, bb.maglev.table_size);
    run(name, b_maglev_build, &bb);
    keel_hashring_free(&bb.ring);
    keel_maglev_free(&bb.maglev);
    free(bb.ids);
    free(bb.weights);
    free(bb.include);
}

static void bench_balancers(uint32_t n)
{
    keel_balance_spec_t *specs = calloc(n, sizeof(*specs));
    if (!specs)
        die("calloc", KEEL_ENOMEM);
    for (uint32_t i = 0; i < n; i++)
        specs[i] = (keel_balance_spec_t){.id = keel_mix64(i + 1), .weight = 1 + i % 3};
    keel_balance_config_t c;
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++) {
        keel_balance_config_default(&c);
        c.policy = *p;
        c.endpoints_max = n;
        c.ring_weight_max = 3;
        c.maglev_table_size = n > 600 ? 655373 : 65537;
        keel_balance_t b;
        int err = keel_balance_init(&b, &c, NULL);
        if (!err)
            err = keel_balance_set_endpoints(&b, specs, n, NULL);
        if (err)
            die((*p)->name, err);
        for (uint32_t i = 0; i < n; i++) /* some load for least-conn and P2C to compare */
            for (uint32_t k = 0; k < i % 4; k++)
                keel_balance_start(&b, i);
        char name[64];
        snprintf(name, sizeof(name), "pick_%s_%u", (*p)->name, n);
        run(name, b_pick, &b);
        const keel_hashring_t *ring = keel_balance_ring_of(&b);
        if (ring) {
            snprintf(name, sizeof(name), "ring_find_%u_%upts", n, ring->points_n);
            run(name, b_ring_find, (void *)ring);
        }
        const keel_maglev_t *maglev = keel_balance_maglev_of(&b);
        if (maglev) {
            snprintf(name, sizeof(name), "maglev_lookup_%u", n);
            run(name, b_maglev_lookup, (void *)maglev);
        }
        keel_balance_free(&b);
    }
    bench_rebuilds(specs, &c);
    free(specs);
}

static void bench_breaker_and_limiters(void)
{
    int err;

    keel_breaker_config_t bc;
    keel_breaker_config_default(&bc);
    bc.failure_rate_pct = 90; /* 1 in 16 fails: stays CLOSED, the common path */
    keel_breaker_t br;
    if ((err = keel_breaker_init(&br, &bc, NULL)))
        die("breaker", err);
    run("breaker_allow_record_count", b_breaker, &br);
    keel_breaker_free(&br);
    bc.window_kind = KEEL_BREAKER_WINDOW_TIME;
    if ((err = keel_breaker_init(&br, &bc, NULL)))
        die("breaker", err);
    run("breaker_allow_record_time", b_breaker, &br);
    keel_breaker_free(&br);

    keel_tokenbucket_config_t tc = {1000, 1000, 100};
    keel_tokenbucket_t tb;
    if ((err = keel_tokenbucket_init(&tb, &tc, 0, NULL)))
        die("tokenbucket", err);
    run("tokenbucket_take", b_tokenbucket, &tb);
    keel_slidingwindow_config_t swc = {1000, 1000};
    keel_slidingwindow_t sw;
    if ((err = keel_slidingwindow_init(&sw, &swc, NULL)))
        die("slidingwindow", err);
    run("slidingwindow_take", b_slidingwindow, &sw);
    keel_ratelimit_keyed_config_t kc;
    keel_ratelimit_keyed_config_default(&kc);
    keel_ratelimit_keyed_t kl;
    if ((err = keel_ratelimit_keyed_init(&kl, &kc, NULL)))
        die("keyed", err);
    run("ratelimit_keyed_take_1000keys", b_keyed, &kl);
    keel_ratelimit_keyed_free(&kl);
}

/*
 * --table-growth N: N puts of distinct fields into one hash table (the table behind a hash or
 * a set, core/kv_coll.h), each timed alone: the mean, and the slowest with where it came. A
 * table that resized at once showed its doublings here (bench/RESULTS.md, "A hash of millions
 * of fields").
 */
static int table_growth(uint64_t n)
{
    keel__kc_t *t = keel__kc_new(12345);
    double worst = 0, total = 0;
    uint64_t worst_at = 0;
    char f[32];
    for (uint64_t i = 0; i < n && t != NULL; i++) {
        int fl = snprintf(f, sizeof(f), "element:%012llu", (unsigned long long)(i * 7919));
        keel__kc_item_t *it =
            keel__kc_item_new(t, (const uint8_t *)f, (size_t)fl, (const uint8_t *)"v", 1);
        double a = now_s();
        if (it == NULL || keel__kc_reserve(&t, &it, 1) != 0)
            die("table growth", KEEL_ENOMEM);
        keel__kc_put(t, it);
        double d = now_s() - a;
        total += d;
        if (d > worst) {
            worst = d;
            worst_at = i + 1;
        }
    }
    printf("table_growth puts %llu: mean %.0f ns, slowest %.3f ms (put %llu)\n",
           (unsigned long long)n, total * 1e9 / (double)n, worst * 1e3,
           (unsigned long long)worst_at);
    keel__kc_free(t);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            budget_s = 0.01;
            ops_max = 200000;
        } else if (strcmp(argv[i], "--table-growth") == 0 && i + 1 < argc) {
            return table_growth(strtoull(argv[i + 1], NULL, 10));
        } else {
            fprintf(stderr, "usage: keel-microbench [--quick | --table-growth N]\n");
            return 2;
        }
    }
    printf("%-28s %9s %12s\n", "name", "ns/op", "ops");
    bench_breaker_and_limiters();
    int err;
    keel_retry_config_t rc;
    keel_retry_config_default(&rc);
    keel_retry_t rp;
    if ((err = keel_retry_init(&rp, &rc, NULL)))
        die("retry", err);
    run("retry_begin_next", b_retry, &rp);

    keel_bulkhead_config_t hc;
    keel_bulkhead_config_default(&hc);
    keel_bulkhead_t bh;
    if ((err = keel_bulkhead_init(&bh, &hc, NULL)))
        die("bulkhead", err);
    run("bulkhead_acquire_release", b_bulkhead, &bh);
    keel_bulkhead_free(&bh);

    keel_outlier_config_t oc;
    keel_outlier_config_default(&oc);
    oc.consecutive_5xx = 0;
    keel_outlier_t ol;
    if ((err = keel_outlier_init(&ol, &oc, 100, 0, NULL)))
        die("outlier", err);
    uint64_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = (uint64_t)i + 1;
    keel_outlier_set_endpoints(&ol, ids, 100);
    run("outlier_record_status", b_outlier, &ol);
    keel_outlier_free(&ol);

    bench_balancers(10);
    bench_balancers(1000);
    return sink == 42 ? 1 : 0;
}
