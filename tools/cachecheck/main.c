/* keel-cachecheck - runs several instances of the kit's two-level cache (src/kit/cache.c) in
 * one process against a keel cluster, over a source of truth that changes under them, and
 * checks what the cache promises.
 *
 *   keel-cachecheck --seeds host:port,... [--instances N] [--keys K] [--duration-ms D]
 *                   [--writes-per-s W] [--gets-per-s G] [--load-ms L] [--grace-ms S]
 *                   [--seed X]
 *
 * 1. Waits until every instance's invalidation feed is subscribed.
 * 2. One loader per key: 200 gets of a cold key at once on instance 0 cost one load and
 *    all answer the same value; the same burst on instance 1 is answered from L2 (no load),
 *    and a second burst there from L1.
 * 3. For D ms: G gets/s and W writes/s over K keys, on random instances. A write bumps the
 *    key's version in the source, then invalidates (or sets) it through one instance. The
 *    loader reads the source at once and answers L ms later (so loads race with writes).
 *    Checked for every get, by the version in the value it returns:
 *      - read your writes: a get on the instance that made a change, started after the
 *        change was done, sees that version or a newer one;
 *      - bounded staleness: any get started more than S ms after a change was done sees
 *        that version or a newer one (S covers the broadcast's travel).
 *    After the load, every instance must have received every invalidation (N x sent).
 * Prints the figures and "violations 0" on success; exits 1 on any violation.
 */
#include "base/err.h"
#include "base/vec.h"
#include "kit/cache.h"
#include "runtime/clock.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INSTANCES_MAX 64
#define KEYS_MAX 100000
#define BURST 200

typedef struct keyst {
    uint64_t version;   /* the source of truth */
    keel_ms_t *done_at; /* done_at[v]: when the change to version v was done (0: not yet) */
    size_t cap;
    int *done_by; /* the instance that made it */
    size_t by_cap;
} keyst_t;

typedef struct run run_t;

typedef struct inst {
    run_t *r;
    int idx;
    keel_cache_t cache;
} inst_t;

typedef struct getctx {
    run_t *r;
    int inst, key;
    keel_ms_t started;
} getctx_t;

typedef struct loadctx {
    keel_timer_t t;
    keel_cache_load_t *ld;
    char val[64];
} loadctx_t;

struct run {
    keel_loop_t loop;
    inst_t inst[INSTANCES_MAX];
    int n, keys;
    keyst_t *k;
    keel_ms_t duration_ms, load_ms, grace_ms, t0, end_at;
    double writes_per_s, gets_per_s;
    keel_rand_t rand;
    keel_timer_t tick;
    int phase, burst_round;
    bool in_burst;
    long loads_before;
    double get_credit, write_credit;
    keel_ms_t settle_until;
    /* figures */
    long gets, answered, l1_immediate, errors, ryw_violations, stale_violations, writes,
        writes_done, write_errors, loads, max_stale_versions;
    keel_ms_t max_stale_ms;
    long burst_answered, burst_values_differ;
    char burst_value[64];
    int closed;
};

static void key_name(int k, char *out, size_t cap)
{
    snprintf(out, cap, "k%d", k);
}

static uint64_t version_of(const uint8_t *v, size_t n)
{
    /* values are "k<key>:<version>" */
    const uint8_t *colon = memchr(v, ':', n);
    uint64_t x = 0;
    for (const uint8_t *p = colon ? colon + 1 : v + n; p < v + n; p++)
        x = x * 10 + (uint64_t)(*p - '0');
    return x;
}

/* ---- the loader: reads the source now, answers load_ms later ---------------------------- */

static void load_fire(keel_timer_t *t, void *data);

static void load_timer_closed(keel_timer_t *t)
{
    free(t); /* t is the loadctx's first member */
}

static void load_fire(keel_timer_t *t, void *data)
{
    loadctx_t *l = data;
    keel_cache_load_done(l->ld, 0, l->val, strlen(l->val));
    keel_timer_close(t, load_timer_closed);
}

static void loader(keel_cache_t *c, keel_cache_load_t *ld, const char *key, void *data)
{
    inst_t *in = data;
    run_t *r = in->r;
    (void)c;
    r->loads++;
    int k = atoi(key + 1);
    if (key[0] != 'k' || k < 0 || k > r->keys) { /* k<keys>: the cold burst key */
        keel_cache_load_done(ld, KEEL_ENOTFOUND, NULL, 0);
        return;
    }
    loadctx_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        keel_cache_load_done(ld, KEEL_ENOMEM, NULL, 0);
        return;
    }
    l->ld = ld;
    snprintf(l->val, sizeof(l->val), "k%d:%" PRIu64, k, r->k[k].version);
    if (r->load_ms == 0 || keel_timer_init(&r->loop, &l->t) != 0) {
        keel_cache_load_done(ld, 0, l->val, strlen(l->val));
        free(l);
        return;
    }
    keel_timer_start(&l->t, r->load_ms, 0, load_fire, l);
}

/* ---- checks ----------------------------------------------------------------------------- */

static void check(run_t *r, const getctx_t *g, uint64_t seen)
{
    keyst_t *ks = &r->k[g->key];
    /* the newest version whose change was done before the get started: by its instance
     * (read your writes) and by anyone more than grace ago (bounded staleness) */
    for (uint64_t v = ks->version; v > seen; v--) {
        if (v >= ks->cap || ks->done_at[v] == 0 || ks->done_at[v] > g->started)
            continue;
        if (ks->done_by[v] == g->inst) {
            r->ryw_violations++;
            if (r->ryw_violations <= 5)
                fprintf(stderr,
                        "read-your-writes: instance %d key k%d saw v%" PRIu64
                        " after its own change to v%" PRIu64 "\n",
                        g->inst, g->key, seen, v);
            return;
        }
        keel_ms_t age = g->started - ks->done_at[v];
        if (age > r->max_stale_ms)
            r->max_stale_ms = age;
        if ((long)(v - seen) > r->max_stale_versions)
            r->max_stale_versions = (long)(v - seen);
        if (age > r->grace_ms) {
            r->stale_violations++;
            if (r->stale_violations <= 5)
                fprintf(stderr,
                        "stale: instance %d key k%d saw v%" PRIu64 ", v%" PRIu64
                        " was done %" PRIu64 " ms before the get\n",
                        g->inst, g->key, seen, v, (uint64_t)age);
            return;
        }
    }
}

static void on_get(keel_cache_t *c, void *ctx, int status, const uint8_t *val, size_t len)
{
    getctx_t *g = ctx;
    run_t *r = g->r;
    (void)c;
    r->answered++;
    if (status != 0) {
        r->errors++;
        if (r->errors <= 5)
            fprintf(stderr, "get k%d on %d: %s\n", g->key, g->inst, keel_strerror(status));
    } else if (r->in_burst) {
        if (r->burst_value[0] == '\0')
            snprintf(r->burst_value, sizeof(r->burst_value), "%.*s", (int)len, (const char *)val);
        else if (strlen(r->burst_value) != len || memcmp(r->burst_value, val, len) != 0)
            r->burst_values_differ++;
        r->burst_answered++;
    } else {
        check(r, g, version_of(val, len));
    }
    free(g);
}

static int get(run_t *r, int inst, int key)
{
    char name[24];
    key_name(key, name, sizeof(name));
    getctx_t *g = malloc(sizeof(*g));
    if (g == NULL)
        return KEEL_ENOMEM;
    *g = (getctx_t){r, inst, key, keel_clock_now_ms()};
    const uint8_t *v;
    size_t n;
    r->gets++;
    int rc = keel_cache_get(&r->inst[inst].cache, name, &v, &n, on_get, g);
    if (rc == 1) {
        r->l1_immediate++;
        on_get(&r->inst[inst].cache, g, 0, v, n);
        return 0;
    }
    if (rc < 0) {
        r->errors++;
        r->answered++;
        free(g);
    }
    return rc;
}

/* ---- writes ----------------------------------------------------------------------------- */

typedef struct writectx {
    run_t *r;
    int inst, key;
    uint64_t version;
} writectx_t;

static void on_write(keel_cache_t *c, void *ctx, int status)
{
    writectx_t *w = ctx;
    run_t *r = w->r;
    (void)c;
    r->writes_done++;
    if (status != 0) {
        r->write_errors++;
    } else {
        keyst_t *ks = &r->k[w->key];
        ks->done_at[w->version] = keel_clock_now_ms();
        ks->done_by[w->version] = w->inst;
    }
    free(w);
}

static void write_one(run_t *r)
{
    int key = (int)keel_rand_below(&r->rand, (uint64_t)r->keys);
    int inst = (int)keel_rand_below(&r->rand, (uint64_t)r->n);
    keyst_t *ks = &r->k[key];
    uint64_t v = ks->version + 1;
    if (keel_vec_grow(&ks->done_at, &ks->cap, v + 1, sizeof(*ks->done_at), 16) != 0 ||
        keel_vec_grow(&ks->done_by, &ks->by_cap, v + 1, sizeof(*ks->done_by), 16) != 0)
        return;
    ks->done_at[v] = 0;
    ks->version = v; /* the source of truth changes first, then the cache */
    writectx_t *w = malloc(sizeof(*w));
    if (w == NULL)
        return;
    *w = (writectx_t){r, inst, key, v};
    char name[24];
    key_name(key, name, sizeof(name));
    r->writes++;
    int rc = keel_cache_invalidate(&r->inst[inst].cache, name, on_write, w);
    if (rc != 0) {
        r->write_errors++;
        r->writes_done++;
        free(w);
    }
}

/* ---- phases ----------------------------------------------------------------------------- */

enum { WAIT_LIVE, BURST_RUN, LOAD, SETTLE };

static uint64_t stat_sum(run_t *r, size_t off)
{
    uint64_t n = 0;
    for (int i = 0; i < r->n; i++)
        n += *(const uint64_t *)(const void *)((const char *)keel_cache_stats(&r->inst[i].cache) +
                                               off);
    return n;
}
#define SUM(r, field) stat_sum(r, offsetof(keel_cache_stats_t, field))

static void cache_closed(keel_cache_t *c)
{
    inst_t *in = KEEL_LIST_ENTRY(c, inst_t, cache);
    in->r->closed++;
}

static void timer_closed(keel_timer_t *t)
{
    (void)t;
}

static void stop_all(run_t *r)
{
    keel_timer_close(&r->tick, timer_closed);
    for (int i = 0; i < r->n; i++)
        keel_cache_close(&r->inst[i].cache, cache_closed);
}

static void burst_start(run_t *r)
{
    static const int on[] = {0, 1, 1};
    r->in_burst = true;
    r->burst_answered = 0;
    r->answered = r->gets = 0;
    r->loads_before = r->loads;
    int inst = r->n > 1 ? on[r->burst_round] : 0;
    for (int i = 0; i < BURST; i++)
        get(r, inst, r->keys); /* "k<keys>": a key outside the load's range, cold */
}

/* A burst is in: 0 to go on, -1 when it broke a promise. */
static int burst_end(run_t *r)
{
    static const char *what[] = {"a cold key on instance 0", "the same key on instance 1",
                                 "again on instance 1"};
    static const long want_loads[] = {1, 0, 0};
    long loads = r->loads - r->loads_before;
    printf("burst of %d gets of %s: %ld load(s), %ld answered, %ld from L1 at once, "
           "%ld different values\n",
           BURST, what[r->burst_round], loads, r->burst_answered, r->l1_immediate,
           r->burst_values_differ);
    r->in_burst = false;
    if (loads != want_loads[r->burst_round] || r->burst_answered != BURST ||
        r->burst_values_differ != 0 ||
        (r->burst_round == 2 && r->n > 1 && r->l1_immediate < BURST)) {
        printf("burst: expected %ld load(s), %d equal answers%s\n", want_loads[r->burst_round],
               BURST, r->burst_round == 2 ? ", all from L1" : "");
        return -1;
    }
    r->l1_immediate = 0;
    return 0;
}

static void report(run_t *r)
{
    double secs = (double)r->duration_ms / 1000.0;
    uint64_t l1 = SUM(r, l1_hits), l2 = SUM(r, l2_hits), miss = SUM(r, misses);
    uint64_t total = l1 + l2 + miss ? l1 + l2 + miss : 1;
    printf("load: %ld gets (%.0f/s), %ld answered, %ld errors; %ld writes, %ld write errors\n",
           r->gets, (double)r->gets / secs, r->answered, r->errors, r->writes, r->write_errors);
    printf("levels: l1 %.1f%%, l2 %.1f%%, source %.1f%%; loads %ld, waits %" PRIu64
           ", fills %" PRIu64 ", fills refused %" PRIu64 ", l2 errors %" PRIu64 "\n",
           100.0 * (double)l1 / (double)total, 100.0 * (double)l2 / (double)total,
           100.0 * (double)miss / (double)total, r->loads, SUM(r, waits), SUM(r, fills),
           SUM(r, fills_refused), SUM(r, l2_errors));
    printf("invalidations: sent %" PRIu64 ", received %" PRIu64 " (want %" PRIu64
           "), feed resets %" PRIu64 "\n",
           SUM(r, invalidations_sent), SUM(r, invalidations_received),
           SUM(r, invalidations_sent) * (uint64_t)r->n, SUM(r, feed_resets));
    printf("staleness: oldest answer %" PRIu64 " ms after a newer change was done (grace %" PRIu64
           " ms), at most %ld versions behind\n",
           (uint64_t)r->max_stale_ms, (uint64_t)r->grace_ms, r->max_stale_versions);
    printf("violations %ld (read your writes %ld, staleness %ld)\n",
           r->ryw_violations + r->stale_violations, r->ryw_violations, r->stale_violations);
}

static void tick(keel_timer_t *t, void *data)
{
    run_t *r = data;
    keel_ms_t now = keel_clock_now_ms();
    (void)t;
    switch (r->phase) {
    case WAIT_LIVE: {
        int live = 0;
        for (int i = 0; i < r->n; i++)
            live += keel_cache_live(&r->inst[i].cache);
        if (live == r->n) {
            printf("feeds: %d instances subscribed after %" PRIu64 " ms\n", r->n,
                   (uint64_t)(now - r->t0));
            r->phase = BURST_RUN;
            burst_start(r);
        } else if (now - r->t0 > 10000) {
            printf("feeds: only %d of %d subscribed after 10 s\n", live, r->n);
            r->errors++;
            stop_all(r);
        }
        return;
    }
    case BURST_RUN:
        if (r->burst_answered + r->errors < BURST)
            return;
        if (burst_end(r) != 0) {
            r->errors++;
            stop_all(r);
            return;
        }
        if (++r->burst_round < 3) {
            burst_start(r);
            return;
        }
        r->phase = LOAD;
        r->answered = r->gets = 0;
        r->t0 = now;
        r->end_at = now + r->duration_ms;
        return;
    case LOAD:
        if (now >= r->end_at) {
            r->phase = SETTLE;
            r->settle_until = now + 5000;
            return;
        }
        r->get_credit += r->gets_per_s / 100.0;
        r->write_credit += r->writes_per_s / 100.0;
        for (; r->get_credit >= 1.0; r->get_credit -= 1.0)
            if (r->gets - r->answered < 20000)
                get(r, (int)keel_rand_below(&r->rand, (uint64_t)r->n),
                    (int)keel_rand_below(&r->rand, (uint64_t)r->keys));
        for (; r->write_credit >= 1.0; r->write_credit -= 1.0)
            write_one(r);
        return;
    case SETTLE: {
        /* every instance hears every invalidation, unless its feed was lost meanwhile
         * (then L1 was cleared: what was missed cannot serve stale values) */
        bool resets = SUM(r, feed_resets) > 0;
        bool heard = SUM(r, invalidations_received) >= SUM(r, invalidations_sent) * (uint64_t)r->n;
        if ((r->answered < r->gets || r->writes_done < r->writes || (!heard && !resets)) &&
            now < r->settle_until)
            return;
        report(r);
        if ((!heard && !resets) || r->answered < r->gets || r->writes_done < r->writes)
            r->errors++;
        stop_all(r);
        return;
    }
    }
}

static const char *arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "keel-cachecheck: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

static long num(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "keel-cachecheck: %s '%s': expected an integer in %ld..%ld\n", flag, v, lo,
                hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    static run_t r;
    const char *seeds = NULL;
    uint64_t seed = 1;
    r.n = 4;
    r.keys = 50;
    r.duration_ms = 5000;
    r.writes_per_s = 200;
    r.gets_per_s = 5000;
    r.load_ms = 2;
    r.grace_ms = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--seeds") == 0)
            seeds = arg(argc, argv, &i);
        else if (strcmp(a, "--instances") == 0)
            r.n = (int)num(a, arg(argc, argv, &i), 1, INSTANCES_MAX);
        else if (strcmp(a, "--keys") == 0)
            r.keys = (int)num(a, arg(argc, argv, &i), 1, KEYS_MAX);
        else if (strcmp(a, "--duration-ms") == 0)
            r.duration_ms = (keel_ms_t)num(a, arg(argc, argv, &i), 1, 3600000);
        else if (strcmp(a, "--writes-per-s") == 0)
            r.writes_per_s = (double)num(a, arg(argc, argv, &i), 0, 1000000);
        else if (strcmp(a, "--gets-per-s") == 0)
            r.gets_per_s = (double)num(a, arg(argc, argv, &i), 0, 10000000);
        else if (strcmp(a, "--load-ms") == 0)
            r.load_ms = (keel_ms_t)num(a, arg(argc, argv, &i), 0, 60000);
        else if (strcmp(a, "--grace-ms") == 0)
            r.grace_ms = (keel_ms_t)num(a, arg(argc, argv, &i), 0, 60000);
        else if (strcmp(a, "--seed") == 0)
            seed = (uint64_t)num(a, arg(argc, argv, &i), 0, 1L << 62);
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: keel-cachecheck --seeds host:port,... [--instances N] [--keys K]\n"
                   "       [--duration-ms D] [--writes-per-s W] [--gets-per-s G] [--load-ms L]\n"
                   "       [--grace-ms S] [--seed X]   (see tools/cachecheck/main.c)\n");
            return 0;
        } else {
            fprintf(stderr, "keel-cachecheck: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (seeds == NULL) {
        fprintf(stderr, "keel-cachecheck: --seeds is required\n");
        return 2;
    }
    keel_rand_seed(&r.rand, seed);
    /* the cold burst key is k<keys>: one more slot */
    if ((r.k = calloc((size_t)r.keys + 1, sizeof(*r.k))) == NULL || keel_loop_init(&r.loop) != 0)
        return 1;
    /* a name of its own: L2 keys of an earlier run are not this run's */
    char name[48];
    snprintf(name, sizeof(name), "check-%" PRIu64, (uint64_t)keel_clock_unix_ms());
    for (int i = 0; i < r.n; i++) {
        inst_t *in = &r.inst[i];
        in->r = &r;
        in->idx = i;
        keel_cache_config_t cfg = keel_cache_config_default(name, seeds);
        cfg.load = loader;
        cfg.data = in;
        cfg.seed = seed * 1000 + (uint64_t)i + 1;
        keel_errmsg_t msg;
        if (keel_cache_init(&in->cache, &r.loop, &cfg, &msg) != 0) {
            fprintf(stderr, "keel-cachecheck: %s\n", msg.text);
            return 1;
        }
    }
    keel_timer_init(&r.loop, &r.tick);
    r.t0 = keel_clock_now_ms();
    keel_timer_start(&r.tick, 10, 10, tick, &r);
    keel_loop_run(&r.loop);
    keel_loop_close(&r.loop);
    for (int i = 0; i <= r.keys; i++) {
        free(r.k[i].done_at);
        free(r.k[i].done_by);
    }
    free(r.k);
    long bad = r.errors + r.ryw_violations + r.stale_violations;
    return bad == 0 && r.closed == r.n ? 0 : 1;
}
