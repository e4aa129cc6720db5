/* test_balance.c - balancer sequences, distributions, P2C under a slow endpoint, ring and maglev
 * remapping. */
#include "core/balance.h"
#include "ktest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void init(keel_balance_t *b, const keel_balance_policy_t *policy, uint32_t endpoints_max)
{
    keel_balance_config_t c;
    keel_balance_config_default(&c);
    c.policy = policy;
    c.endpoints_max = endpoints_max;
    keel_errmsg_t m;
    if (keel_balance_init(b, &c, &m))
        KT_FAIL("init: %s", m.text);
}

static uint64_t node_id(int set, int i)
{
    char name[64];
    int n = snprintf(name, sizeof(name), "10.%d.%d.%d:8080", set, i / 250, i % 250 + 1);
    return keel_balance_hash(name, (size_t)n);
}

static void set_nodes(keel_balance_t *b, int set, const int *which, uint32_t n)
{
    keel_balance_spec_t specs[2048];
    KT_CHECK(n <= 2048);
    for (uint32_t i = 0; i < n; i++)
        specs[i] =
            (keel_balance_spec_t){.id = node_id(set, which ? which[i] : (int)i), .weight = 1};
    keel_errmsg_t m;
    int err = keel_balance_set_endpoints(b, specs, n, &m);
    if (err)
        KT_FAIL("set_endpoints: %s", m.text);
}

static uint32_t pick(keel_balance_t *b, uint64_t key)
{
    uint32_t idx = UINT32_MAX;
    KT_EQ_INT(keel_balance_pick(b, key, 0, &idx), 0);
    return idx;
}

static void smooth_wrr_gives_nginx_sequence_for_5_1_1(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_weighted_rr, 8);
    keel_balance_spec_t s[] = {{'a', 5, 0}, {'b', 1, 0}, {'c', 1, 0}};
    KT_EQ_INT(keel_balance_set_endpoints(&b, s, 3, NULL), 0);
    char got[15] = {0};
    for (int i = 0; i < 14; i++)
        got[i] = (char)b.ep[pick(&b, 0)].id;
    KT_EQ_STR(got, "aabacaaaabacaa");
    keel_balance_free(&b);
}

static void weighted_rr_matches_weights_over_a_million_picks(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_weighted_rr, 8);
    const uint32_t w[] = {7, 5, 3, 2, 1, 1};
    keel_balance_spec_t s[6];
    for (int i = 0; i < 6; i++)
        s[i] = (keel_balance_spec_t){.id = (uint64_t)i + 100, .weight = w[i]};
    KT_EQ_INT(keel_balance_set_endpoints(&b, s, 6, NULL), 0);
    long count[6] = {0};
    const int picks = 1000000;
    for (int i = 0; i < picks; i++)
        count[pick(&b, 0)]++;
    for (int i = 0; i < 6; i++) {
        double want = picks * (double)w[i] / 19.0;
        KT_NEAR(count[i], want, want * 0.01);
    }
    keel_balance_free(&b);
}

static void random_and_p2c_spread_evenly_over_a_million_picks(void)
{
    const keel_balance_policy_t *pol[] = {&keel_balance_random, &keel_balance_p2c,
                                          &keel_balance_round_robin};
    for (int p = 0; p < 3; p++) {
        keel_balance_t b;
        init(&b, pol[p], 16);
        set_nodes(&b, 0, NULL, 10);
        long count[10] = {0};
        for (int i = 0; i < 1000000; i++)
            count[pick(&b, 0)]++; /* nothing in flight: P2C ties, so it is random too */
        for (int i = 0; i < 10; i++)
            KT_NEAR(count[i], 100000, 1000);
        keel_balance_free(&b);
    }
}

/*
 * 10 endpoints, one of them 10x slower (50 ms vs 5 ms per request), 2
 * requests per ms for 20 simulated seconds; a request holds its endpoint for
 * the service time. Round robin sends the slow one 10% regardless; P2C and
 * least-conn see its in-flight count pile up and send it less.
 */
static double slow_endpoint_share(const keel_balance_policy_t *policy)
{
    enum { N = 10, WHEEL = 64 };
    static uint32_t done_at[WHEEL][N];
    memset(done_at, 0, sizeof(done_at));
    keel_balance_t b;
    init(&b, policy, N);
    set_nodes(&b, 1, NULL, N);
    long total = 0, slow = 0;
    for (int t = 0; t < 20000; t++) {
        for (int e = 0; e < N; e++) {
            while (done_at[t % WHEEL][e] > 0) {
                keel_balance_done(&b, (uint32_t)e);
                done_at[t % WHEEL][e]--;
            }
        }
        for (int k = 0; k < 2; k++) {
            uint32_t i = pick(&b, 0);
            keel_balance_start(&b, i);
            done_at[(t + (i == 0 ? 50 : 5)) % WHEEL][i]++;
            total++;
            slow += i == 0;
        }
    }
    keel_balance_free(&b);
    return (double)slow / (double)total;
}

static void p2c_sends_less_to_a_slow_endpoint_than_round_robin(void)
{
    double rr = slow_endpoint_share(&keel_balance_round_robin);
    double p2c = slow_endpoint_share(&keel_balance_p2c);
    double lc = slow_endpoint_share(&keel_balance_least_conn);
    fprintf(stderr, "     slow endpoint share: rr %.4f p2c %.4f least_conn %.4f\n", rr, p2c, lc);
    KT_NEAR(rr, 0.10, 0.001);
    KT_CHECK(p2c < rr * 0.7);
    KT_CHECK(lc < rr * 0.7);
}

static void every_policy_skips_unavailable_and_reports_empty(void)
{
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++) {
        keel_balance_t b;
        init(&b, *p, 8);
        uint32_t idx;
        KT_EQ_INT(keel_balance_pick(&b, 1, 0, &idx), KEEL_EEMPTY); /* no endpoints at all */
        set_nodes(&b, 2, NULL, 5);
        keel_balance_set_state(&b, 1, false, false); /* unhealthy */
        keel_balance_set_state(&b, 3, true, true);   /* ejected */
        for (uint64_t k = 0; k < 5000; k++) {
            uint32_t i = pick(&b, keel_mix64(k));
            if (i == 1 || i == 3)
                KT_FAIL("%s picked unavailable endpoint %u", (*p)->name, i);
        }
        for (uint32_t i = 0; i < 5; i++)
            keel_balance_set_state(&b, i, i % 2 == 0, i % 2 == 0);
        KT_EQ_INT(keel_balance_pick(&b, 1, 0, &idx), KEEL_EEMPTY);
        keel_balance_set_state(&b, 4, true, false);
        KT_EQ_INT(pick(&b, 12345), 4);
        keel_balance_free(&b);
    }
}

/* A retry away from the endpoint that just failed, even when the policy prefers it: p2c or
 * least_conn between an idle failing endpoint and a busy good one keeps choosing the idle one
 * (found under load in test_proxy_registry.py: three attempts on a killed instance, 503); keyed
 * policies keep the key's endpoint. */
static void a_retry_goes_to_another_endpoint_unless_the_policy_is_keyed(void)
{
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++) {
        keel_balance_t b;
        init(&b, *p, 8);
        set_nodes(&b, 3, NULL, 2);
        for (int i = 0; i < 7; i++)
            keel_balance_start(&b, 0); /* endpoint 0 busy, endpoint 1 idle */
        bool keyed = (*p)->keyed;
        for (uint64_t k = 0; k < 200; k++) {
            uint32_t first = pick(&b, keel_mix64(k)), idx = UINT32_MAX;
            KT_EQ_INT(keel_balance_pick_other(&b, keel_mix64(k), 0, first + 1, 3, &idx), 0);
            if (keyed)
                KT_EQ_INT(idx, first);
            else if (idx == first)
                KT_FAIL("%s: the retry went back to endpoint %u", (*p)->name, idx);
            KT_EQ_INT(keel_balance_pick_other(&b, keel_mix64(k), 0, 0, 3, &idx), 0); /* none */
        }
        keel_balance_set_state(&b, 0, false, false); /* the only other one is out */
        uint32_t idx;
        KT_EQ_INT(keel_balance_pick_other(&b, 9, 0, 2, 3, &idx), 0);
        KT_EQ_INT(idx, 1);
        keel_balance_free(&b);
    }
}

/* A retry avoids every endpoint the request tried, not only the last: with three endpoints, two
 * idle ones tried and failed and the third busy, the third attempt goes to the third (a
 * load-aware policy prefers the idle ones; avoiding only the last failed sent it back to the
 * first). Once every endpoint was tried, only the last is avoided; a level whose endpoints were
 * all tried is left for another. Keyed policies keep the key's endpoint. */
static void a_retry_avoids_every_endpoint_tried(void)
{
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++) {
        keel_balance_t b;
        init(&b, *p, 8);
        set_nodes(&b, 3, NULL, 3);
        for (int i = 0; i < 7; i++)
            keel_balance_start(&b, 2); /* endpoint 2 busy, 0 and 1 idle */
        bool keyed = (*p)->keyed;
        for (uint64_t k = 0; k < 200; k++) {
            uint64_t key = keel_mix64(k);
            uint32_t first = pick(&b, key), idx = UINT32_MAX;
            uint32_t tried[2] = {0 + 1, 1 + 1}; /* 0 then 1 failed */
            KT_EQ_INT(keel_balance_pick_avoiding(&b, key, 0, tried, 2, 3, &idx), 0);
            if (keyed)
                KT_EQ_INT(idx, first);
            else if (idx != 2)
                KT_FAIL("%s: the third attempt went to tried endpoint %u", (*p)->name, idx);
            uint32_t all[3] = {2 + 1, 0 + 1, 1 + 1}; /* every one tried, 1 last */
            KT_EQ_INT(keel_balance_pick_avoiding(&b, key, 0, all, 3, 3, &idx), 0);
            if (keyed)
                KT_EQ_INT(idx, first);
            else if (idx == 1)
                KT_FAIL("%s: every endpoint tried, the retry went back to the last", (*p)->name);
            KT_EQ_INT(keel_balance_pick_avoiding(&b, key, 0, tried, 0, 3, &idx), 0); /* none */
        }
        keel_balance_set_state(&b, 2, false, false); /* the untried one is out */
        uint32_t idx = UINT32_MAX, tried[2] = {0 + 1, 1 + 1};
        KT_EQ_INT(keel_balance_pick_avoiding(&b, 9, 0, tried, 2, 3, &idx), 0);
        if (!keyed)
            KT_EQ_INT(idx, 0); /* only 1, the last, is avoided */
        keel_balance_free(&b);
        if (keyed)
            continue;
        init(&b, *p, 8); /* a and b in level 0, tried; c in level 1 */
        keel_balance_spec_t s[] = {{'a', 1, 0}, {'b', 1, 0}, {'c', 1, 1}};
        KT_EQ_INT(keel_balance_set_endpoints(&b, s, 3, NULL), 0);
        KT_EQ_INT(keel_balance_pick_avoiding(&b, 0, 0, tried, 2, 3, &idx), 0);
        KT_EQ_INT(b.ep[idx].id, 'c');
        keel_balance_free(&b);
    }
}

static void endpoint_updates_keep_inflight_counts_and_flags(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_least_conn, 8);
    keel_balance_spec_t s1[] = {{11, 1, 0}, {22, 1, 0}, {33, 1, 0}};
    KT_EQ_INT(keel_balance_set_endpoints(&b, s1, 3, NULL), 0);
    for (int i = 0; i < 5; i++)
        keel_balance_start(&b, 1); /* 22 is busy */
    keel_balance_start(&b, 2);
    keel_balance_set_state(&b, 0, true, true); /* 11 ejected */
    keel_balance_spec_t s2[] = {{33, 1, 0}, {22, 2, 0}, {11, 1, 0}, {44, 1, 0}};
    KT_EQ_INT(keel_balance_set_endpoints(&b, s2, 4, NULL), 0);
    KT_EQ_INT(b.ep[1].inflight, 5);
    KT_EQ_INT(b.ep[1].weight, 2);
    KT_EQ_INT(b.ep[0].inflight, 1);
    KT_CHECK(b.ep[2].ejected);
    KT_EQ_INT(b.ep[3].inflight, 0);
    KT_CHECK(b.ep[3].healthy && !b.ep[3].ejected);
    KT_EQ_INT(pick(&b, 0), 3); /* 44: idle; 11 ejected; 22 and 33 busy */
    keel_balance_spec_t dup[] = {{1, 1, 0}, {1, 1, 0}};
    keel_errmsg_t m;
    KT_EQ_INT(keel_balance_set_endpoints(&b, dup, 2, &m), KEEL_EINVAL);
    KT_EQ_INT(b.n, 4); /* old set kept */
    keel_balance_spec_t zero[] = {{1, 0, 0}};
    KT_EQ_INT(keel_balance_set_endpoints(&b, zero, 1, &m), KEEL_EINVAL);
    keel_balance_free(&b);
}

static void hash_keeps_keys_of_healthy_endpoints_in_place(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_hash_mod, 16);
    set_nodes(&b, 3, NULL, 8);
    static uint32_t before[20000];
    for (uint64_t k = 0; k < 20000; k++)
        before[k] = pick(&b, keel_mix64(k));
    keel_balance_set_state(&b, 5, false, false);
    for (uint64_t k = 0; k < 20000; k++) {
        uint32_t now = pick(&b, keel_mix64(k));
        KT_CHECK(before[k] == 5 ? now != 5 : now == before[k]);
    }
    keel_balance_free(&b);
}

/* Fraction of keys whose endpoint id changed between two lookups of the same keys. */
enum { KEYS = 100000 };
static uint64_t owner_before[KEYS];

static void record_owners(keel_balance_t *b)
{
    for (uint64_t k = 0; k < KEYS; k++)
        owner_before[k] = b->ep[pick(b, keel_mix64(k + 7))].id;
}

static double moved_fraction(keel_balance_t *b, uint64_t joined, uint64_t left, long *wrong)
{
    long moved = 0;
    *wrong = 0;
    for (uint64_t k = 0; k < KEYS; k++) {
        uint64_t now = b->ep[pick(b, keel_mix64(k + 7))].id;
        if (now != owner_before[k]) {
            moved++;
            /* a key may move only to the node that joined or off the node that left */
            *wrong += !(now == joined || owner_before[k] == left);
        }
    }
    return (double)moved / KEYS;
}

static void ring_remaps_about_one_nth_on_join_and_leave(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_ring, 16);
    for (int set = 0; set < 5; set++) {
        set_nodes(&b, set, NULL, 10);
        record_owners(&b);
        set_nodes(&b, set, NULL, 11); /* node 10 joins */
        long wrong;
        double join = moved_fraction(&b, node_id(set, 10), 0, &wrong);
        KT_EQ_INT(wrong, 0);
        set_nodes(&b, set, NULL, 10);
        record_owners(&b);
        const int without3[] = {0, 1, 2, 4, 5, 6, 7, 8, 9};
        set_nodes(&b, set, without3, 9); /* node 3 leaves */
        double leave = moved_fraction(&b, 0, node_id(set, 3), &wrong);
        KT_EQ_INT(wrong, 0);
        fprintf(stderr, "     ring N=10 set %d: join moved %.4f, leave moved %.4f\n", set, join,
                leave);
        KT_CHECK(join >= 0.07 && join <= 0.13);
        KT_CHECK(leave >= 0.07 && leave <= 0.13);
    }
    keel_balance_free(&b);
}

/* Relative deviation of each node's key count from fair, for n nodes. */
static void key_spread(keel_balance_t *b, uint32_t n, double *sd, double *worst)
{
    static long count[64];
    memset(count, 0, sizeof(count));
    for (uint64_t k = 0; k < KEYS; k++)
        count[pick(b, keel_mix64(k + 99))]++;
    double ss = 0;
    *worst = 0;
    for (uint32_t i = 0; i < n; i++) {
        double d = (double)count[i] * n / KEYS - 1.0;
        ss += d * d;
        *worst = fabs(d) > *worst ? fabs(d) : *worst;
    }
    *sd = sqrt(ss / n);
}

/*
 * With k random points per node a node's share has a relative standard
 * deviation of about sqrt((1 - 1/N) / k): 7.5% for k = 160, N = 10. So at 160
 * virtual nodes the typical node is within 10% of fair, but across ten nodes
 * the worst one often is not (we measured 90 of 100 random 10-node sets with
 * a node outside +-10%). The test pins both facts: standard deviation under
 * 10% at 160 points, every node within +-10% at 1600 points.
 */
static void ring_spreads_keys_near_fair_with_virtual_nodes(void)
{
    double sd_sum = 0;
    for (int set = 0; set < 10; set++) {
        keel_balance_t b;
        init(&b, &keel_balance_ring, 16);
        set_nodes(&b, 10 + set, NULL, 10);
        double sd, worst;
        key_spread(&b, 10, &sd, &worst);
        KT_CHECK(sd < 0.13);
        KT_CHECK(worst < 0.30);
        sd_sum += sd;
        keel_balance_free(&b);
    }
    fprintf(stderr, "     ring 160 vnodes: mean relative sd %.4f\n", sd_sum / 10);
    KT_CHECK(sd_sum / 10 < 0.10);
    for (int set = 0; set < 10; set++) {
        keel_balance_config_t c;
        keel_balance_config_default(&c);
        c.policy = &keel_balance_ring;
        c.endpoints_max = 16;
        c.ring_vnodes = 1600;
        keel_balance_t b;
        KT_EQ_INT(keel_balance_init(&b, &c, NULL), 0);
        set_nodes(&b, 10 + set, NULL, 10);
        double sd, worst;
        key_spread(&b, 10, &sd, &worst);
        KT_CHECK(worst < 0.10);
        keel_balance_free(&b);
    }
}

static void maglev_remaps_little_beyond_ideal_on_one_removal(void)
{
    const uint32_t sizes[] = {10, 50};
    for (int s = 0; s < 2; s++) {
        uint32_t n = sizes[s];
        keel_balance_t b;
        init(&b, &keel_balance_maglev, 64);
        set_nodes(&b, 20 + s, NULL, n);
        /* the table is balanced: slot counts differ by at most one */
        const keel_maglev_t *mg = keel_balance_maglev_of(&b);
        uint32_t slots[64] = {0};
        for (uint32_t i = 0; i < mg->table_size; i++)
            slots[mg->table[i]]++;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (uint32_t i = 0; i < n; i++) {
            lo = slots[i] < lo ? slots[i] : lo;
            hi = slots[i] > hi ? slots[i] : hi;
        }
        KT_CHECK(hi - lo <= 1);
        record_owners(&b);
        int without[64], k = 0;
        for (uint32_t i = 0; i < n; i++)
            if (i != 4)
                without[k++] = (int)i;
        set_nodes(&b, 20 + s, without, n - 1);
        long wrong;
        double moved = moved_fraction(&b, 0, node_id(20 + s, 4), &wrong);
        double ideal = 1.0 / n;
        fprintf(stderr, "     maglev N=%u: removal moved %.4f (ideal %.4f), %ld keys not on it\n",
                n, moved, ideal, wrong);
        KT_CHECK(moved >= ideal * 0.9);
        KT_CHECK(moved <= ideal + 0.03);
        /* taking an endpoint out by health has the same effect as removing it */
        set_nodes(&b, 20 + s, NULL, n);
        keel_balance_set_state(&b, 4, false, false);
        double moved_health = moved_fraction(&b, 0, node_id(20 + s, 4), &wrong);
        KT_NEAR(moved_health, moved, 1e-9);
        keel_balance_free(&b);
    }
}

static void ring_lookup_walks_past_an_unavailable_owner(void)
{
    keel_balance_t b;
    init(&b, &keel_balance_ring, 16);
    set_nodes(&b, 30, NULL, 10);
    record_owners(&b);
    keel_balance_set_state(&b, 6, true, true);
    long wrong;
    double moved = moved_fraction(&b, 0, node_id(30, 6), &wrong);
    KT_EQ_INT(wrong, 0);
    KT_CHECK(moved > 0.05 && moved < 0.15);
    keel_balance_free(&b);
}

/* The prefix-indexed search agrees with a plain lower bound, at point hashes and around the wrap.
 */
static void ring_find_returns_the_first_point_clockwise(void)
{
    const uint32_t sizes[] = {1, 3, 10, 1000};
    for (int s = 0; s < 4; s++) {
        keel_hashring_t r;
        KT_EQ_INT(keel_hashring_init(&r, sizes[s] * 40), 0);
        uint64_t ids[1000];
        for (uint32_t i = 0; i < sizes[s]; i++)
            ids[i] = node_id(40, (int)i);
        KT_EQ_INT(keel_hashring_build(&r, ids, NULL, sizes[s], 40), 0);
        KT_EQ_INT(keel_hashring_build(&r, ids, NULL, sizes[s], 41), KEEL_ETOOBIG);
        KT_EQ_INT(r.points_n, sizes[s] * 40);
        uint64_t keys = sizes[s] >= 1000 ? 2000 : 20000; /* the reference search is linear */
        for (uint64_t k = 0; k < keys; k++) {
            uint64_t h = keel_mix64(k);
            if (k % 4 == 1)
                h = r.points[k % r.points_n].hash; /* exactly on a point */
            if (k % 4 == 2)
                h = r.points[k % r.points_n].hash + 1;
            if (k == 3)
                h = UINT64_MAX;
            if (k == 7)
                h = 0;
            uint32_t want = 0;
            while (want < r.points_n && r.points[want].hash < h)
                want++;
            if (want == r.points_n)
                want = 0;
            KT_EQ_INT(keel_hashring_find(&r, h), want);
        }
        keel_hashring_free(&r);
    }
}

/*
 * A policy written outside balance.c, as a proxy would: pick the available
 * endpoint with the fewest failures reported through keel_balance_report(),
 * ties to the lowest index. Its per-endpoint counts live in the data its init
 * allocates; the caller's policy_arg collects what the hooks saw.
 */
typedef struct hook_log {
    int inits, frees, starts, releases, results;
    int64_t last_now_ms;
} hook_log_t;

typedef struct fewest_failures {
    hook_log_t *log;
    uint32_t *failures; /* by endpoint id slot: id % endpoints_max */
    uint32_t endpoints_max;
} fewest_failures_t;

static int ff_init(const keel_balance_config_t *cfg, void **data, keel_errmsg_t *msg)
{
    fewest_failures_t *f = calloc(1, sizeof(*f));
    uint32_t *failures = calloc(cfg->endpoints_max, sizeof(*failures));
    if (!f || !failures) {
        free(f);
        free(failures);
        return keel_errf(msg, KEEL_ENOMEM, "fewest_failures");
    }
    *f = (fewest_failures_t){cfg->policy_arg, failures, cfg->endpoints_max};
    f->log->inits++;
    *data = f;
    return 0;
}

static void ff_free(void *data)
{
    fewest_failures_t *f = data;
    f->log->frees++;
    free(f->failures);
    free(f);
}

static uint32_t ff_pick(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    fewest_failures_t *f = data;
    f->log->last_now_ms = ctx->now_ms;
    uint32_t best = b->avail[0];
    for (uint32_t k = 1; k < b->avail_n; k++) {
        uint32_t i = b->avail[k];
        if (f->failures[b->ep[i].id % f->endpoints_max] <
            f->failures[b->ep[best].id % f->endpoints_max])
            best = i;
    }
    return best;
}

static void ff_start(void *data, const keel_balance_t *b, uint32_t idx)
{
    (void)b, (void)idx;
    ((fewest_failures_t *)data)->log->starts++;
}

static void ff_release(void *data, const keel_balance_t *b, uint32_t idx)
{
    (void)b, (void)idx;
    ((fewest_failures_t *)data)->log->releases++;
}

static void ff_result(void *data, const keel_balance_t *b, uint32_t idx,
                      const keel_balance_result_t *r)
{
    fewest_failures_t *f = data;
    f->log->results++;
    f->failures[b->ep[idx].id % f->endpoints_max] += !r->ok;
}

static const keel_balance_policy_t fewest_failures = {
    .name = "fewest_failures",
    .init = ff_init,
    .free = ff_free,
    .pick = ff_pick,
    .on_start = ff_start,
    .on_release = ff_release,
    .on_result = ff_result,
};

static void a_policy_defined_outside_balance_c_plugs_in_through_its_table(void)
{
    hook_log_t log = {0};
    keel_balance_config_t c;
    keel_balance_config_default(&c);
    c.policy = &fewest_failures;
    c.policy_arg = &log;
    c.endpoints_max = 8;
    keel_balance_t b;
    KT_EQ_INT(keel_balance_init(&b, &c, NULL), 0);
    KT_EQ_INT(log.inits, 1);
    keel_balance_spec_t s[] = {{1, 1, 0}, {2, 1, 0}, {3, 1, 0}};
    KT_EQ_INT(keel_balance_set_endpoints(&b, s, 3, NULL), 0);
    uint32_t idx;
    KT_EQ_INT(keel_balance_pick(&b, 0, 1000, &idx), 0);
    KT_EQ_INT(idx, 0);
    KT_EQ_INT(log.last_now_ms, 1000);
    keel_balance_start(&b, idx);
    keel_balance_report(&b, idx, &(keel_balance_result_t){.ok = false, .latency_ms = 30});
    keel_balance_done(&b, idx);
    KT_EQ_INT(pick(&b, 0), 1); /* endpoint 0 failed once: the others come first */
    keel_balance_report(&b, 1, &(keel_balance_result_t){.ok = false});
    keel_balance_set_state(&b, 2, false, false); /* the core still filters availability */
    KT_EQ_INT(pick(&b, 0), 0);
    KT_EQ_INT(log.starts, 1);
    KT_EQ_INT(log.releases, 1);
    KT_EQ_INT(log.results, 2);
    KT_EQ_INT(b.ep[0].inflight, 0);
    keel_balance_free(&b);
    KT_EQ_INT(log.frees, 1);
}

static void policies_are_found_by_their_config_file_names(void)
{
    const keel_balance_policy_t *got = NULL;
    int n = 0;
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++, n++) {
        KT_EQ_INT(keel_balance_policy_find((*p)->name, NULL, 0, &got, NULL), 0);
        KT_CHECK(got == *p);
    }
    KT_EQ_INT(n, 8);
    KT_EQ_INT(keel_balance_policy_find("round_robin", NULL, 0, &got, NULL), 0);
    KT_CHECK(got == &keel_balance_round_robin);
    keel_errmsg_t m;
    got = NULL;
    KT_EQ_INT(keel_balance_policy_find("least_request", NULL, 0, &got, &m), KEEL_ENOTFOUND);
    KT_CHECK(got == NULL);
    KT_CHECK(strstr(m.text, "unknown balancer policy \"least_request\"") != NULL);
    KT_CHECK(strstr(m.text, "least_conn") && strstr(m.text, "maglev"));
    const keel_balance_policy_t *extra[] = {&fewest_failures};
    KT_EQ_INT(keel_balance_policy_find("fewest_failures", NULL, 0, &got, &m), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_balance_policy_find("fewest_failures", extra, 1, &got, NULL), 0);
    KT_CHECK(got == &fewest_failures);
    KT_EQ_INT(keel_balance_policy_find("nope", extra, 1, &got, &m), KEEL_ENOTFOUND);
    KT_CHECK(strstr(m.text, "fewest_failures, round_robin") != NULL);
    keel_balance_config_t c;
    keel_balance_config_default(&c);
    c.policy = NULL;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
}

/* Priorities: only the best level with a usable endpoint takes traffic, for every policy; the
 * next level takes over when the last of the level before it is out, and gives traffic back
 * when one returns; a retry whose failing endpoint is alone in its level goes to another. */
static void only_the_best_usable_priority_takes_traffic_and_fails_over(void)
{
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++) {
        keel_balance_t b;
        init(&b, *p, 8);
        /* a, b local (0); c, d in another zone (1); e further (2) */
        keel_balance_spec_t s[] = {{'a', 1, 0}, {'b', 1, 0}, {'c', 1, 1}, {'d', 1, 1}, {'e', 1, 2}};
        KT_EQ_INT(keel_balance_set_endpoints(&b, s, 5, NULL), 0);
        KT_EQ_INT(b.level, 0);
        KT_EQ_INT(b.avail_n, 2);
        for (uint64_t k = 1; k <= 200; k++)
            KT_CHECK(b.ep[pick(&b, k * 7919)].priority == 0);
        keel_balance_set_state(&b, 0, true, true); /* a ejected: b alone */
        for (uint64_t k = 1; k <= 50; k++)
            KT_EQ_INT(b.ep[pick(&b, k * 7919)].id, 'b');
        if (!(*p)->keyed) { /* a retry away from b, alone in level 0, leaves the level */
            uint32_t idx = UINT32_MAX;
            KT_EQ_INT(keel_balance_pick_other(&b, 0, 0, 1 + 1, 3, &idx), 0);
            KT_CHECK(b.ep[idx].priority == 1);
        }
        keel_balance_set_state(&b, 1, false, false); /* b unhealthy: level 1 takes over */
        KT_EQ_INT(b.level, 1);
        for (uint64_t k = 1; k <= 200; k++)
            KT_CHECK(b.ep[pick(&b, k * 7919)].priority == 1);
        keel_balance_set_state(&b, 2, false, false);
        keel_balance_set_state(&b, 3, true, true);
        KT_EQ_INT(b.level, 2);
        KT_EQ_INT(b.ep[pick(&b, 5)].id, 'e');
        keel_balance_set_state(&b, 0, true, false); /* a is back: traffic comes home */
        KT_EQ_INT(b.level, 0);
        for (uint64_t k = 1; k <= 50; k++)
            KT_EQ_INT(b.ep[pick(&b, k * 7919)].id, 'a');
        keel_balance_spec_t bad[] = {{'a', 1, KEEL_BALANCE_PRIORITY_MAX + 1}};
        keel_errmsg_t m;
        KT_EQ_INT(keel_balance_set_endpoints(&b, bad, 1, &m), KEEL_EINVAL);
        keel_balance_free(&b);
    }
}

int main(void)
{
    KT_RUN(smooth_wrr_gives_nginx_sequence_for_5_1_1);
    KT_RUN(weighted_rr_matches_weights_over_a_million_picks);
    KT_RUN(random_and_p2c_spread_evenly_over_a_million_picks);
    KT_RUN(p2c_sends_less_to_a_slow_endpoint_than_round_robin);
    KT_RUN(every_policy_skips_unavailable_and_reports_empty);
    KT_RUN(a_retry_goes_to_another_endpoint_unless_the_policy_is_keyed);
    KT_RUN(a_retry_avoids_every_endpoint_tried);
    KT_RUN(endpoint_updates_keep_inflight_counts_and_flags);
    KT_RUN(hash_keeps_keys_of_healthy_endpoints_in_place);
    KT_RUN(ring_remaps_about_one_nth_on_join_and_leave);
    KT_RUN(ring_spreads_keys_near_fair_with_virtual_nodes);
    KT_RUN(maglev_remaps_little_beyond_ideal_on_one_removal);
    KT_RUN(ring_lookup_walks_past_an_unavailable_owner);
    KT_RUN(ring_find_returns_the_first_point_clockwise);
    KT_RUN(a_policy_defined_outside_balance_c_plugs_in_through_its_table);
    KT_RUN(policies_are_found_by_their_config_file_names);
    KT_RUN(only_the_best_usable_priority_takes_traffic_and_fails_over);
    return kt_done();
}
