/* test_ratelimit.c - admitted rate, exact burst, exact retry-after, bounded keyed memory. */
#include "base/rand.h"
#include "core/ratelimit.h"
#include "ktest.h"

static void tb_init(keel_tokenbucket_t *tb, uint64_t tokens, keel_ms_t period_ms, uint64_t burst,
                    keel_ms_t now_ms)
{
    keel_tokenbucket_config_t c = {tokens, period_ms, burst};
    keel_errmsg_t m;
    if (keel_tokenbucket_init(tb, &c, now_ms, &m))
        KT_FAIL("init: %s", m.text);
}

/*
 * 60 simulated seconds of offered load well above the limit. The bucket
 * admits burst + 60 s * rate at most; the admitted rate must be within 1% of
 * the configured one (for offered loads that are not a multiple of the rate).
 */
static void token_bucket_admits_the_configured_rate_over_60_s(void)
{
    static const struct {
        uint64_t tokens;
        keel_ms_t period_ms;
        uint64_t burst;
        keel_ms_t gap_us; /* time between offered requests */
    } cases[] = {
        {100, 1000, 20, 1000}, /* 100/s offered 1000/s */
        {250, 1000, 50, 3000}, /* 250/s offered 333/s */
        {7, 100, 7, 700},      /* 70/s offered ~1429/s */
        {1000, 1000, 1, 500},  /* 1000/s offered 2000/s, no burst */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        keel_tokenbucket_t tb;
        tb_init(&tb, cases[i].tokens, cases[i].period_ms, cases[i].burst, 0);
        uint64_t admitted = 0;
        for (keel_us_t t_us = 0; t_us < 60 * 1000000LL; t_us += cases[i].gap_us)
            admitted += keel_tokenbucket_take(&tb, t_us / 1000, 1, NULL) == 0;
        double rate = (double)cases[i].tokens * 1000.0 / (double)cases[i].period_ms;
        double got = (double)admitted / 60.0;
        KT_NEAR(got, rate, rate * 0.01);
        /* and never more than burst + elapsed * rate */
        KT_CHECK(admitted <= cases[i].burst + (uint64_t)(rate * 60.0));
    }
}

static void token_bucket_honours_the_burst_exactly(void)
{
    keel_tokenbucket_t tb;
    tb_init(&tb, 10, 1000, 25, 0);
    for (int round = 0; round < 3; round++) {
        keel_ms_t now = 100000 * (round + 1); /* idle long enough to refill completely */
        KT_EQ_U64(keel_tokenbucket_available(&tb, now), 25);
        for (int i = 0; i < 25; i++)
            KT_EQ_INT(keel_tokenbucket_take(&tb, now, 1, NULL), 0);
        keel_ms_t after = 0;
        KT_EQ_INT(keel_tokenbucket_take(&tb, now, 1, &after), KEEL_EREJECTED);
        KT_EQ_INT(after, 100); /* one token per 100 ms */
    }
    KT_EQ_INT(keel_tokenbucket_take(&tb, 1000000, 26, NULL), KEEL_ETOOBIG);
}

static void token_bucket_retry_after_is_the_earliest_passing_time(void)
{
    keel_rand_t r;
    uint64_t seed = 99;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    keel_tokenbucket_t tb;
    tb_init(&tb, 3, 1000, 10, 0); /* 3 tokens/s: 333.3 ms per token, not an integer */
    keel_ms_t now = 0;
    for (int i = 0; i < 2000; i++) {
        now += (keel_ms_t)keel_rand_below(&r, 300);
        uint64_t cost = 1 + keel_rand_below(&r, 4);
        keel_ms_t after = -1;
        int rc = keel_tokenbucket_take(&tb, now, cost, &after);
        if (rc == 0)
            continue;
        KT_EQ_INT(rc, KEEL_EREJECTED);
        KT_CHECK(after > 0);
        keel_tokenbucket_t early = tb, exact = tb;
        KT_EQ_INT(keel_tokenbucket_take(&early, now + after - 1, cost, NULL), KEEL_EREJECTED);
        KT_EQ_INT(keel_tokenbucket_take(&exact, now + after, cost, NULL), 0);
    }
}

static void sliding_window_admits_the_configured_rate_over_60_s(void)
{
    keel_slidingwindow_config_t c = {200, 1000};
    keel_slidingwindow_t sw;
    keel_errmsg_t m;
    KT_EQ_INT(keel_slidingwindow_init(&sw, &c, &m), 0);
    uint64_t admitted = 0;
    for (keel_us_t t_us = 0; t_us < 60 * 1000000LL; t_us += 700) /* ~1429/s offered */
        admitted += keel_slidingwindow_take(&sw, t_us / 1000, 1, NULL) == 0;
    KT_NEAR((double)admitted / 60.0, 200.0, 2.0);
}

static void sliding_window_retry_after_is_the_earliest_passing_time(void)
{
    keel_rand_t r;
    uint64_t seed = 5;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    keel_slidingwindow_config_t c = {50, 1000};
    keel_slidingwindow_t sw;
    keel_errmsg_t m;
    KT_EQ_INT(keel_slidingwindow_init(&sw, &c, &m), 0);
    keel_ms_t now = 0;
    int rejected = 0;
    for (int i = 0; i < 5000; i++) {
        now += (keel_ms_t)keel_rand_below(&r, 40);
        uint64_t cost = 1 + keel_rand_below(&r, 3);
        keel_ms_t after = -1;
        if (keel_slidingwindow_take(&sw, now, cost, &after) == 0)
            continue;
        rejected++;
        keel_slidingwindow_t early = sw, exact = sw;
        KT_EQ_INT(keel_slidingwindow_take(&early, now + after - 1, cost, NULL), KEEL_EREJECTED);
        KT_EQ_INT(keel_slidingwindow_take(&exact, now + after, cost, NULL), 0);
    }
    KT_CHECK(rejected > 100);
}

static void keyed_limiter_keeps_one_bucket_per_key(void)
{
    keel_ratelimit_keyed_config_t c;
    keel_ratelimit_keyed_config_default(&c);
    c.bucket = (keel_tokenbucket_config_t){1, 1000, 3};
    c.keys_max = 64;
    keel_ratelimit_keyed_t kl;
    keel_errmsg_t m;
    KT_EQ_INT(keel_ratelimit_keyed_init(&kl, &c, &m), 0);
    for (int i = 0; i < 3; i++) {
        KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), 0);
        KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "bob", 3, 1, NULL), 0);
    }
    keel_ms_t after = 0;
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, &after), KEEL_EREJECTED);
    KT_EQ_INT(after, 1000);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "carol", 5, 1, NULL), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 1000, "alice", 5, 1, NULL), 0);
    char longkey[KEEL_RATELIMIT_KEY_BYTES_MAX + 1] = {0};
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, longkey, sizeof(longkey), 1, NULL), KEEL_ETOOBIG);
    KT_EQ_INT(kl.keys, 3);
    keel_ratelimit_keyed_free(&kl);
}

/* A refund gives back what a take got (a request another limit refused), never past the
 * burst, and touches no other key; an unknown key is ignored. */
static void keyed_refund_gives_back_up_to_the_burst(void)
{
    keel_ratelimit_keyed_config_t c;
    keel_ratelimit_keyed_config_default(&c);
    c.bucket = (keel_tokenbucket_config_t){1, 1000, 2};
    c.keys_max = 64;
    keel_ratelimit_keyed_t kl;
    keel_errmsg_t m;
    KT_EQ_INT(keel_ratelimit_keyed_init(&kl, &c, &m), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), KEEL_EREJECTED);
    keel_ratelimit_keyed_refund(&kl, "alice", 5, 1);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), KEEL_EREJECTED);
    /* past the burst: capped at 2 */
    for (int i = 0; i < 5; i++)
        keel_ratelimit_keyed_refund(&kl, "alice", 5, 1);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 2, NULL), 0);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 0, "alice", 5, 1, NULL), KEEL_EREJECTED);
    keel_ratelimit_keyed_refund(&kl, "nobody", 6, 1);
    KT_EQ_INT(kl.keys, 1);
    keel_ratelimit_keyed_free(&kl);
}

/*
 * 8 ways and one set: the table holds 8 keys. A 9th key finds every key
 * active and is refused (KEEL_EFULL) rather than handing someone a fresh
 * bucket; once keys have been idle for the refill time they are evicted.
 */
static void keyed_limiter_evicts_only_idle_keys_and_stays_bounded(void)
{
    keel_ratelimit_keyed_config_t c;
    keel_ratelimit_keyed_config_default(&c);
    c.bucket = (keel_tokenbucket_config_t){10, 1000, 5}; /* refill time 500 ms */
    c.keys_max = 8;
    keel_ratelimit_keyed_t kl;
    keel_errmsg_t m;
    KT_EQ_INT(keel_ratelimit_keyed_init(&kl, &c, &m), 0);
    KT_EQ_INT(kl.cfg.idle_ms, 500);
    char key[16];
    for (int i = 0; i < 8; i++) {
        int n = snprintf(key, sizeof(key), "client-%d", i);
        KT_EQ_INT(keel_ratelimit_keyed_take(&kl, i, key, (size_t)n, 5, NULL), 0);
    }
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 100, "newcomer", 8, 1, NULL), KEEL_EFULL);
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 499, "newcomer", 8, 1, NULL), KEEL_EFULL);
    /* client-0 drained its bucket at t=0; at t=500 it is idle for 500 ms: the LRU victim */
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 500, "newcomer", 8, 1, NULL), 0);
    KT_EQ_U64(kl.evictions, 1);
    KT_EQ_INT(kl.keys, 8);
    /* client-1 is still there with its drained bucket (took 5 at t=1) */
    keel_ms_t after = 0;
    KT_EQ_INT(keel_ratelimit_keyed_take(&kl, 500, "client-1", 8, 5, &after), KEEL_EREJECTED);
    KT_EQ_INT(after, 1); /* 499 ms refilled 4.99 tokens */
    /* many distinct keys over time never grow the table */
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        keel_ratelimit_keyed_take(&kl, 1000 + (keel_ms_t)i * 100, key, (size_t)n, 1, NULL);
        KT_CHECK(kl.keys <= 8);
    }
    KT_CHECK(kl.evictions > 1000);
    keel_ratelimit_keyed_free(&kl);
}

int main(void)
{
    KT_RUN(token_bucket_admits_the_configured_rate_over_60_s);
    KT_RUN(token_bucket_honours_the_burst_exactly);
    KT_RUN(token_bucket_retry_after_is_the_earliest_passing_time);
    KT_RUN(sliding_window_admits_the_configured_rate_over_60_s);
    KT_RUN(sliding_window_retry_after_is_the_earliest_passing_time);
    KT_RUN(keyed_limiter_keeps_one_bucket_per_key);
    KT_RUN(keyed_refund_gives_back_up_to_the_burst);
    KT_RUN(keyed_limiter_evicts_only_idle_keys_and_stays_bounded);
    return kt_done();
}
