/* test_balance_slow.c - balancer slow start: the ramp, its minimum, a returning endpoint starting
 * over, a zero window, and every key-less policy holding back a new endpoint. */
#include "core/balance.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

enum { WINDOW_MS = 1000, PICKS = 100000 };

static void init_slow(keel_balance_t *b, const keel_balance_policy_t *policy, int64_t window_ms,
                      uint32_t min_pct)
{
    keel_balance_config_t c;
    keel_balance_config_default(&c);
    c.policy = policy;
    c.endpoints_max = 8;
    c.slow_start.window_ms = window_ms;
    c.slow_start.min_pct = min_pct;
    keel_errmsg_t m;
    if (keel_balance_init(b, &c, &m))
        KT_FAIL("init: %s", m.text);
}

static void set(keel_balance_t *b, uint32_t n)
{
    keel_balance_spec_t s[] = {{'a', 1, 0}, {'b', 1, 0}, {'c', 1, 0}};
    KT_CHECK(n <= 3);
    KT_EQ_INT(keel_balance_set_endpoints(b, s, n, NULL), 0);
}

/* Share of picks (PICKS of them, all at now_ms) that go to endpoint idx. */
static double share_at(keel_balance_t *b, uint32_t idx, int64_t now_ms)
{
    long hit = 0;
    for (int i = 0; i < PICKS; i++) {
        uint32_t got = UINT32_MAX;
        KT_EQ_INT(keel_balance_pick(b, 0, now_ms, &got), 0);
        hit += got == idx;
    }
    return (double)hit / PICKS;
}

/* A balancer with a (ramped up) and b just added: b's ramp starts at the next pick. */
static void a_then_b(keel_balance_t *b, const keel_balance_policy_t *policy, uint32_t min_pct)
{
    init_slow(b, policy, WINDOW_MS, min_pct);
    set(b, 1); /* the first endpoint: nobody beside it, so no ramp */
    KT_EQ_INT(b->ramp_n, 0);
    set(b, 2);
    KT_EQ_INT(b->ramp_n, 1);
    KT_EQ_INT(b->ep[1].ramp, KEEL_BALANCE_RAMP_PENDING);
}

static void the_ramp_is_linear_from_the_minimum_to_full(void)
{
    keel_balance_slow_start_t ss = {.window_ms = 10000, .min_pct = 10, .aggression = 1000};
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 0), 100);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, -5), 100);  /* another worker's older clock */
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 500), 100); /* 5% is under the minimum */
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 2500), 250);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 5000), 500);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 9990), 999);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 10000), 1000);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 1 << 30), 1000);
    ss.min_pct = 0;
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 0), 0);
    ss.min_pct = 40;
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 2500), 400);
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 6000), 600);
    ss.min_pct = 0;
    ss.aggression = 2000; /* square root: faster early (Envoy's aggression 2.0) */
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 2500), 500);
    ss.aggression = 500; /* square: slower early */
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 5000), 250);
    ss.window_ms = 0; /* off */
    KT_EQ_INT(keel_balance_slow_start_permille(&ss, 0), 1000);
}

/*
 * Round robin, a and b: b takes part in a pick with probability f, and when it sits out, a takes
 * it and the cursor stays on b; so b's share is f / (1 + f), as if its weight were f.
 */
static void a_new_endpoint_ramps_up_to_its_fair_share(void)
{
    keel_balance_t b;
    a_then_b(&b, &keel_balance_round_robin, 10);
    const int64_t t0 = 5000;
    double s0 = share_at(&b, 1, t0); /* starts b's ramp: f = 0.1 */
    KT_EQ_INT(b.ep[1].ramp, KEEL_BALANCE_RAMP_ON);
    KT_EQ_INT(b.ep[1].ramp_since_ms, t0);
    double s_half = share_at(&b, 1, t0 + WINDOW_MS / 2); /* f = 0.5 */
    double s_90 = share_at(&b, 1, t0 + WINDOW_MS * 9 / 10);
    KT_EQ_INT(keel_balance_ramp_permille(&b, 1, t0 + WINDOW_MS / 2), 500);
    KT_EQ_INT(b.ramp_n, 1);
    double s_end = share_at(&b, 1, t0 + WINDOW_MS);
    fprintf(stderr,
            "     round_robin, b's share at 0%%, 50%%, 90%%, 100%% of the window: "
            "%.3f %.3f %.3f %.3f\n",
            s0, s_half, s_90, s_end);
    KT_NEAR(s0, 0.1 / 1.1, 0.01);
    KT_NEAR(s_half, 0.5 / 1.5, 0.01);
    KT_NEAR(s_90, 0.9 / 1.9, 0.01);
    KT_NEAR(s_end, 0.5, 0.0001);
    KT_EQ_INT(b.ramp_n, 0); /* done: picks cost nothing more */
    KT_EQ_INT(b.ep[1].ramp, KEEL_BALANCE_RAMP_NONE);
    KT_EQ_INT(keel_balance_ramp_permille(&b, 1, t0), 1000);
    keel_balance_free(&b);
}

static void the_minimum_holds_early_in_the_window(void)
{
    keel_balance_t b;
    a_then_b(&b, &keel_balance_random, 40);
    double s0 = share_at(&b, 1, 0);
    double s_30 = share_at(&b, 1, WINDOW_MS * 3 / 10); /* 30% < 40%: still the minimum */
    double s_60 = share_at(&b, 1, WINDOW_MS * 6 / 10);
    /* random: b is drawn half the time it takes part, so its share is f / 2 */
    KT_NEAR(s0, 0.20, 0.01);
    KT_NEAR(s_30, 0.20, 0.01);
    KT_NEAR(s_60, 0.30, 0.01);
    keel_balance_free(&b);
}

static void an_endpoint_that_comes_back_starts_its_ramp_again(void)
{
    keel_balance_t b;
    a_then_b(&b, &keel_balance_round_robin, 10);
    share_at(&b, 1, 0);
    KT_NEAR(share_at(&b, 1, WINDOW_MS), 0.5, 0.0001);
    KT_EQ_INT(b.ramp_n, 0);
    keel_balance_set_state(&b, 1, false, false); /* fails its health checks */
    KT_EQ_INT(b.ramp_n, 0);
    KT_EQ_INT(share_at(&b, 1, 2 * WINDOW_MS), 0);
    keel_balance_set_state(&b, 1, true, false); /* healthy again */
    KT_EQ_INT(b.ep[1].ramp, KEEL_BALANCE_RAMP_PENDING);
    KT_NEAR(share_at(&b, 1, 3 * WINDOW_MS), 0.1 / 1.1, 0.01);
    KT_EQ_INT(b.ep[1].ramp_since_ms, 3 * WINDOW_MS); /* its first pick back, not its return */
    keel_balance_set_state(&b, 1, true, true);       /* ejected mid-ramp: the ramp is dropped */
    KT_EQ_INT(b.ramp_n, 0);
    keel_balance_set_state(&b, 1, true, false); /* back from ejection: from the start */
    KT_NEAR(share_at(&b, 1, 4 * WINDOW_MS + WINDOW_MS / 2), 0.1 / 1.1, 0.01);
    KT_NEAR(share_at(&b, 1, 5 * WINDOW_MS), 0.5 / 1.5, 0.01);
    /* kept across an endpoint update, and a new id ramps while the kept one goes on */
    set(&b, 3);
    KT_EQ_INT(b.ramp_n, 2);
    KT_EQ_INT(b.ep[1].ramp_since_ms, 4 * WINDOW_MS + WINDOW_MS / 2);
    KT_EQ_INT(b.ep[2].ramp, KEEL_BALANCE_RAMP_PENDING);
    keel_balance_free(&b);
}

static void a_zero_window_is_off(void)
{
    keel_balance_t b;
    init_slow(&b, &keel_balance_round_robin, 0, 10);
    set(&b, 1);
    set(&b, 2);
    KT_EQ_INT(b.ramp_n, 0);
    KT_EQ_INT(b.ep[1].ramp, KEEL_BALANCE_RAMP_NONE);
    KT_CHECK(b.avail_pick == NULL);
    KT_NEAR(share_at(&b, 1, 0), 0.5, 0.0001);
    keel_balance_set_state(&b, 1, false, false);
    keel_balance_set_state(&b, 1, true, false);
    KT_EQ_INT(b.ramp_n, 0);
    KT_NEAR(share_at(&b, 1, 0), 0.5, 0.0001);
    keel_balance_free(&b);
}

/* Every key-less policy holds the new endpoint well under its fair half at the window's start. */
static void every_key_less_policy_holds_a_new_endpoint_back(void)
{
    const keel_balance_policy_t *pol[] = {&keel_balance_round_robin, &keel_balance_weighted_rr,
                                          &keel_balance_least_conn, &keel_balance_p2c,
                                          &keel_balance_random};
    for (size_t p = 0; p < sizeof(pol) / sizeof(pol[0]); p++) {
        keel_balance_t b;
        a_then_b(&b, pol[p], 10);
        double s0 = share_at(&b, 1, 0), s_end = share_at(&b, 1, WINDOW_MS);
        fprintf(stderr, "     %-11s b's share at the start %.3f, after the window %.3f\n",
                pol[p]->name, s0, s_end);
        KT_CHECK(s0 > 0.03 && s0 < 0.1);
        KT_NEAR(s_end, 0.5, 0.01);
        keel_balance_free(&b);
    }
}

/* Only ramping endpoints available: whoever the draw keeps, or all of them; a pick never fails. */
static void ramping_endpoints_alone_still_answer(void)
{
    keel_balance_t b;
    init_slow(&b, &keel_balance_round_robin, WINDOW_MS, 0);
    set(&b, 1);
    set(&b, 3); /* b and c ramp */
    KT_EQ_INT(b.ramp_n, 2);
    keel_balance_set_state(&b, 0, false, false);
    /* both at f = 0: every draw leaves them out, so neither is */
    KT_NEAR(share_at(&b, 1, 0), 0.5, 0.0001);
    keel_balance_set_state(&b, 2, false, false);
    KT_NEAR(share_at(&b, 1, 10), 1.0, 0.0001);
    for (uint32_t i = 0; i < b.n; i++)
        KT_CHECK(!b.ep[i].resting);
    keel_balance_free(&b);
}

/* Nobody could take the share a ramp spares: the first endpoints, and the first back after all
 * were out, take their full share at once. */
static void an_endpoint_with_nobody_beside_it_does_not_ramp(void)
{
    keel_balance_t b;
    init_slow(&b, &keel_balance_round_robin, WINDOW_MS, 10);
    set(&b, 2);
    KT_EQ_INT(b.ramp_n, 0);
    KT_NEAR(share_at(&b, 1, 0), 0.5, 0.0001);
    keel_balance_set_state(&b, 0, false, false);
    keel_balance_set_state(&b, 1, false, true);
    keel_balance_set_state(&b, 1, true, false); /* the first one back */
    KT_EQ_INT(b.ramp_n, 0);
    keel_balance_set_state(&b, 0, true, false); /* the second ramps */
    KT_EQ_INT(b.ramp_n, 1);
    KT_NEAR(share_at(&b, 0, 100), 0.1 / 1.1, 0.01);
    keel_balance_free(&b);
}

static void keyed_policies_and_bad_settings_are_refused(void)
{
    const keel_balance_policy_t *keyed[] = {&keel_balance_hash_mod, &keel_balance_ring,
                                            &keel_balance_maglev};
    keel_balance_config_t c;
    keel_errmsg_t m;
    for (size_t p = 0; p < 3; p++) {
        keel_balance_config_default(&c);
        c.policy = keyed[p];
        KT_EQ_INT(keel_balance_config_validate(&c, &m), 0); /* off: fine */
        c.slow_start.window_ms = 1000;
        KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
        KT_CHECK(strstr(m.text, "picks by key") != NULL);
    }
    keel_balance_config_default(&c);
    c.slow_start.window_ms = KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS + 1;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
    c.slow_start.window_ms = -1;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
    c.slow_start.window_ms = 1000;
    c.slow_start.min_pct = 101;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
    c.slow_start.min_pct = 100;
    c.slow_start.aggression = KEEL_BALANCE_SLOW_START_AGGRESSION_MIN - 1;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), KEEL_EINVAL);
    c.slow_start.aggression = KEEL_BALANCE_SLOW_START_AGGRESSION_MAX;
    KT_EQ_INT(keel_balance_config_validate(&c, &m), 0);
}

int main(void)
{
    KT_RUN(the_ramp_is_linear_from_the_minimum_to_full);
    KT_RUN(a_new_endpoint_ramps_up_to_its_fair_share);
    KT_RUN(the_minimum_holds_early_in_the_window);
    KT_RUN(an_endpoint_that_comes_back_starts_its_ramp_again);
    KT_RUN(a_zero_window_is_off);
    KT_RUN(every_key_less_policy_holds_a_new_endpoint_back);
    KT_RUN(ramping_endpoints_alone_still_answer);
    KT_RUN(an_endpoint_with_nobody_beside_it_does_not_ramp);
    KT_RUN(keyed_policies_and_bad_settings_are_refused);
    return 0;
}
