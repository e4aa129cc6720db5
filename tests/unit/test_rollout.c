/* test_rollout.c - a canary rollout's steps, completion and rollbacks, driven by an injected
 * clock. */
#include "base/rand.h"
#include "core/rollout.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every tick that acts is appended here as "ACTION FROM>TO@ms " (with the reason of a
 * rollback), so a scenario compares one readable trace. */
static char trace[2048];

static void config(keel_rollout_config_t *c, const uint32_t *steps, uint32_t n)
{
    memset(c, 0, sizeof(*c));
    for (uint32_t i = 0; i < n; i++)
        c->steps_pct[i] = steps[i];
    c->steps_count = n;
    c->step_ms = 1000;
    c->window_ms = 1000;
    c->min_requests = 10;
    c->max_error_pct = 5;
    c->max_p99_ms = 500;
    trace[0] = 0;
}

static void init(keel_rollout_t *r, const keel_rollout_config_t *c, keel_ms_t now_ms)
{
    keel_errmsg_t m;
    if (keel_rollout_init(r, c, now_ms, &m) != 0)
        KT_FAIL("init: %s", m.text);
}

static keel_rollout_action_t tick(keel_rollout_t *r, keel_ms_t now_ms)
{
    keel_rollout_update_t u;
    keel_rollout_tick(r, now_ms, &u);
    KT_EQ_INT(u.weight_pct, keel_rollout_weight_pct(r));
    if (u.action != KEEL_ROLLOUT_HOLD) {
        size_t n = strlen(trace);
        snprintf(trace + n, sizeof(trace) - n, "%s %u>%u@%lld%s%s ",
                 keel_rollout_action_name(u.action), u.from_pct, u.weight_pct, (long long)now_ms,
                 u.why != KEEL_ROLLOUT_WHY_NONE ? " " : "",
                 u.why != KEEL_ROLLOUT_WHY_NONE ? keel_rollout_why_name(u.why) : "");
    }
    return u.action;
}

/* n requests at now_ms, taking latency_ms each, failed or not. */
static void observe(keel_rollout_t *r, keel_ms_t now_ms, int n, keel_ms_t latency_ms, bool failed)
{
    for (int i = 0; i < n; i++)
        keel_rollout_observe(r, now_ms, latency_ms, failed);
}

static const uint32_t steps5[] = {1, 5, 25, 50, 100};

static void starts_at_the_first_step(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    KT_EQ_INT(keel_rollout_weight_pct(&r), 1);
    KT_EQ_INT(r.phase, KEEL_ROLLOUT_RUNNING);
    KT_EQ_INT(tick(&r, 0), KEEL_ROLLOUT_HOLD);
}

static void steps_up_on_schedule_and_not_before(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 500, 20, 10, false);
    KT_EQ_INT(tick(&r, 999), KEEL_ROLLOUT_HOLD); /* step_ms not yet passed */
    KT_EQ_INT(keel_rollout_weight_pct(&r), 1);
    KT_EQ_INT(tick(&r, 1000), KEEL_ROLLOUT_STEP_UP);
    KT_EQ_INT(keel_rollout_weight_pct(&r), 5);
    /* the next step is timed from this one */
    observe(&r, 1500, 20, 10, false);
    KT_EQ_INT(tick(&r, 1999), KEEL_ROLLOUT_HOLD);
    KT_EQ_INT(tick(&r, 2000), KEEL_ROLLOUT_STEP_UP);
    KT_EQ_STR(trace, "step 1>5@1000 step 5>25@2000 ");
    KT_EQ_U64(r.steps_total, 2);
}

static void does_not_step_before_min_requests(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 900, 9, 10, false);
    KT_EQ_INT(tick(&r, 1000), KEEL_ROLLOUT_HOLD); /* 9 < min_requests: waits for traffic */
    KT_EQ_INT(tick(&r, 1500), KEEL_ROLLOUT_HOLD);
    observe(&r, 1600, 1, 10, false);
    KT_EQ_INT(tick(&r, 1600), KEEL_ROLLOUT_STEP_UP); /* the tenth request arrives */
    KT_EQ_STR(trace, "step 1>5@1600 ");
}

static void requests_older_than_the_window_do_not_count(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    c.step_ms = 5000;
    init(&r, &c, 0);
    observe(&r, 100, 50, 10, false);
    /* slots of 100 ms: the request at 100 (slot 1) is in the window up to slot 10, 1099 ms */
    KT_EQ_U64(keel_rollout_window(&r, 1099).requests, 50);
    KT_EQ_U64(keel_rollout_window(&r, 1100).requests, 0);
    KT_EQ_INT(tick(&r, 5000), KEEL_ROLLOUT_HOLD); /* nothing recent: no step */
    observe(&r, 5000, 10, 10, false);
    KT_EQ_INT(tick(&r, 5000), KEEL_ROLLOUT_STEP_UP);
}

static void rolls_back_when_the_error_rate_passes_the_threshold(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 100, 19, 10, false);
    observe(&r, 100, 1, 10, true); /* 1 of 20: 5%, at the threshold, not over it */
    KT_EQ_INT(tick(&r, 200), KEEL_ROLLOUT_HOLD);
    observe(&r, 300, 1, 10, true); /* 2 of 21: 9.5% */
    KT_EQ_INT(tick(&r, 300), KEEL_ROLLOUT_ROLL_BACK);
    KT_EQ_INT(keel_rollout_weight_pct(&r), 0);
    KT_EQ_INT(r.phase, KEEL_ROLLOUT_ROLLED_BACK);
    KT_EQ_INT(r.why, KEEL_ROLLOUT_WHY_ERRORS);
    KT_EQ_STR(trace, "rollback 1>0@300 errors ");
}

static void judges_nothing_below_min_requests(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 100, 9, 900, true); /* every one failed and slow, but only 9 */
    KT_EQ_INT(tick(&r, 200), KEEL_ROLLOUT_HOLD);
    observe(&r, 300, 1, 900, true);
    KT_EQ_INT(tick(&r, 300), KEEL_ROLLOUT_ROLL_BACK);
    KT_EQ_INT(r.why, KEEL_ROLLOUT_WHY_ERRORS); /* errors are judged before latency */
}

static void rolls_back_when_the_p99_passes_the_threshold(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    /* 100 requests: the p99 is the 99th smallest; one slow request leaves it at 10 ms */
    observe(&r, 100, 99, 10, false);
    observe(&r, 100, 1, 501, false);
    KT_EQ_INT(tick(&r, 100), KEEL_ROLLOUT_HOLD);
    keel_rollout_observe(&r, 100, 500, false); /* at the threshold is not over it */
    KT_EQ_INT(tick(&r, 100), KEEL_ROLLOUT_HOLD);
    keel_rollout_observe(&r, 100, 501, false); /* 2 slow of 102: the p99 (rank 101) is slow */
    KT_EQ_INT(tick(&r, 100), KEEL_ROLLOUT_ROLL_BACK);
    KT_EQ_STR(trace, "rollback 1>0@100 latency ");
}

static void latency_is_not_judged_without_max_p99(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    c.max_p99_ms = 0;
    init(&r, &c, 0);
    observe(&r, 100, 20, 60000, false);
    KT_EQ_INT(tick(&r, 1000), KEEL_ROLLOUT_STEP_UP);
    KT_EQ_U64(keel_rollout_window(&r, 1000).slow, 0);
}

static void rollback_is_sticky(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 100, 10, 10, true);
    KT_EQ_INT(tick(&r, 100), KEEL_ROLLOUT_ROLL_BACK);
    /* healthy traffic and time do not bring it back; observations are ignored */
    for (keel_ms_t t = 200; t < 20000; t += 100) {
        observe(&r, t, 20, 10, false);
        KT_EQ_INT(tick(&r, t), KEEL_ROLLOUT_HOLD);
        KT_EQ_INT(keel_rollout_weight_pct(&r), 0);
    }
    KT_EQ_U64(keel_rollout_window(&r, 20000).requests, 0);
    keel_rollout_update_t u;
    keel_rollout_tick(&r, 20000, &u);
    KT_EQ_INT(u.next_deadline_ms, KEEL_MS_NEVER);
    KT_EQ_STR(trace, "rollback 1>0@100 errors ");
}

static void completes_at_100_after_the_last_step_holds(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    for (keel_ms_t t = 0; t <= 6000; t += 100) {
        observe(&r, t, 2, 10, false);
        tick(&r, t);
    }
    KT_EQ_STR(trace,
              "step 1>5@1000 step 5>25@2000 step 25>50@3000 step 50>100@4000 done 100>100@5000 ");
    KT_EQ_INT(r.phase, KEEL_ROLLOUT_DONE);
    /* done is final too: failures no longer roll it back */
    observe(&r, 6100, 50, 10, true);
    KT_EQ_INT(tick(&r, 6100), KEEL_ROLLOUT_HOLD);
    KT_EQ_INT(keel_rollout_weight_pct(&r), 100);
}

static void a_last_step_below_100_completes_at_100(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    static const uint32_t steps[] = {10, 30};
    config(&c, steps, 2);
    init(&r, &c, 0);
    observe(&r, 500, 10, 10, false);
    tick(&r, 1000);
    observe(&r, 1500, 10, 10, false);
    tick(&r, 2000);
    KT_EQ_STR(trace, "step 10>30@1000 done 30>100@2000 ");
    KT_EQ_INT(keel_rollout_weight_pct(&r), 100);
}

static void a_step_up_empties_the_window(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 950, 100, 10, false);
    KT_EQ_INT(tick(&r, 1000), KEEL_ROLLOUT_STEP_UP);
    KT_EQ_U64(keel_rollout_window(&r, 1000).requests, 0);
    /* errors at the new weight are judged on the new weight's requests only: 1 in 10 is 10% */
    observe(&r, 1050, 9, 10, false);
    observe(&r, 1050, 1, 10, true);
    KT_EQ_INT(tick(&r, 1050), KEEL_ROLLOUT_ROLL_BACK);
    KT_EQ_STR(trace, "step 1>5@1000 rollback 5>0@1050 errors ");
}

static void a_rollback_wins_over_a_due_step(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    init(&r, &c, 0);
    observe(&r, 999, 10, 10, false);
    observe(&r, 999, 10, 10, true);
    KT_EQ_INT(tick(&r, 1000), KEEL_ROLLOUT_ROLL_BACK);
}

static void next_deadline_is_the_next_slot_or_the_step(void)
{
    keel_rollout_config_t c;
    keel_rollout_t r;
    config(&c, steps5, 5);
    c.window_ms = 10000; /* slots of 1000 ms */
    c.step_ms = 2500;
    init(&r, &c, 0);
    KT_EQ_INT(keel_rollout_next_deadline_ms(&r, 0), 1000);
    KT_EQ_INT(keel_rollout_next_deadline_ms(&r, 2100), 2500);
    KT_EQ_INT(keel_rollout_next_deadline_ms(&r, 2600), 3000);
}

static void config_validation_names_the_bad_field(void)
{
    keel_rollout_config_t c;
    keel_errmsg_t m;
    keel_rollout_config_default(&c);
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), 0);
    KT_EQ_INT(c.steps_count, 5);
    config(&c, steps5, 5);
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), 0);
    static const uint32_t down[] = {5, 5};
    config(&c, down, 2);
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "steps: must increase (5 after 5)") != NULL);
    static const uint32_t zero[] = {0, 5};
    config(&c, zero, 2);
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "steps: 0 is out of range") != NULL);
    config(&c, steps5, 0);
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    config(&c, steps5, 5);
    c.window_ms = KEEL_ROLLOUT_WINDOW_MS_MIN - 1;
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "window_ms") != NULL);
    config(&c, steps5, 5);
    c.step_ms = 99;
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "step_ms") != NULL);
    config(&c, steps5, 5);
    c.min_requests = 0;
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    config(&c, steps5, 5);
    c.max_error_pct = 101;
    KT_EQ_INT(keel_rollout_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "max_error_percent") != NULL);
}

static int cmp_ms(const void *a, const void *b)
{
    keel_ms_t x = *(const keel_ms_t *)a, y = *(const keel_ms_t *)b;
    return x < y ? -1 : x > y;
}

/* The p99 rule agrees with sorting the latencies and reading the nearest-rank p99. */
static void p99_rule_agrees_with_a_sorted_reference(void)
{
    keel_rand_t rnd;
    uint64_t seed = 20261206;
    KT_SEED(seed);
    keel_rand_seed(&rnd, seed);
    keel_ms_t lat[1000];
    for (int run = 0; run < 2000; run++) {
        uint64_t n = 1 + keel_rand_u64(&rnd) % 1000;
        keel_ms_t limit = 1 + (keel_ms_t)(keel_rand_u64(&rnd) % 100);
        uint64_t slow = 0;
        for (uint64_t i = 0; i < n; i++) {
            lat[i] = (keel_ms_t)(keel_rand_u64(&rnd) % 104);
            slow += lat[i] > limit;
        }
        qsort(lat, n, sizeof(lat[0]), cmp_ms);
        uint64_t rank = (99 * n + 99) / 100; /* the smallest k with k >= 0.99 n */
        KT_CHECK(rank * 100 >= 99 * n && (rank - 1) * 100 < 99 * n);
        KT_EQ_INT(keel_rollout_p99_over(n, slow), lat[rank - 1] > limit);
    }
    kt__seed_set = 0;
}

/* The slots' window agrees with keeping every observation and counting those of the last
 * SLOTS slot epochs, over random runs with steps up (which empty it). */
static void window_agrees_with_a_naive_reference_over_random_runs(void)
{
    enum { OBS_MAX = 4000 };
    static keel_ms_t at[OBS_MAX];
    static bool bad[OBS_MAX];
    keel_rand_t rnd;
    uint64_t seed = 7;
    KT_SEED(seed);
    keel_rand_seed(&rnd, seed);
    for (int run = 0; run < 200; run++) {
        keel_rollout_config_t c;
        keel_rollout_t r;
        config(&c, steps5, 5);
        c.window_ms = 100 * (1 + (keel_ms_t)(keel_rand_u64(&rnd) % 20));
        c.step_ms = 100 + (keel_ms_t)(keel_rand_u64(&rnd) % 3000);
        c.min_requests = 1 + (uint32_t)(keel_rand_u64(&rnd) % 30);
        c.max_error_pct = 100; /* only steps: the window is what is compared */
        c.max_p99_ms = 0;
        init(&r, &c, 0);
        keel_ms_t slot = c.window_ms / KEEL_ROLLOUT_SLOTS, t = 0;
        int n = 0, from = 0; /* the observations in the window start at from */
        for (int i = 0; i < OBS_MAX; i++) {
            t += (keel_ms_t)(keel_rand_u64(&rnd) % (uint64_t)(2 * slot));
            if (keel_rand_u64(&rnd) % 3 != 0) { /* else the window is read between requests */
                at[n] = t;
                bad[n] = keel_rand_u64(&rnd) % 4 == 0;
                keel_rollout_observe(&r, t, 1, bad[n]);
                n++;
            }
            keel_rollout_window_t w = keel_rollout_window(&r, t);
            while (from < n && at[from] / slot + KEEL_ROLLOUT_SLOTS <= t / slot)
                from++; /* times only grow: what left the window stays out */
            uint64_t req = 0, err = 0;
            for (int k = from; k < n; k++) {
                req++;
                err += bad[k];
            }
            KT_EQ_U64(w.requests, req);
            KT_EQ_U64(w.errors, err);
            if (tick(&r, t) == KEEL_ROLLOUT_STEP_UP)
                from = n;
            trace[0] = 0;
            if (r.phase != KEEL_ROLLOUT_RUNNING)
                break;
        }
    }
    kt__seed_set = 0;
}

int main(void)
{
    KT_RUN(starts_at_the_first_step);
    KT_RUN(steps_up_on_schedule_and_not_before);
    KT_RUN(does_not_step_before_min_requests);
    KT_RUN(requests_older_than_the_window_do_not_count);
    KT_RUN(rolls_back_when_the_error_rate_passes_the_threshold);
    KT_RUN(judges_nothing_below_min_requests);
    KT_RUN(rolls_back_when_the_p99_passes_the_threshold);
    KT_RUN(latency_is_not_judged_without_max_p99);
    KT_RUN(rollback_is_sticky);
    KT_RUN(completes_at_100_after_the_last_step_holds);
    KT_RUN(a_last_step_below_100_completes_at_100);
    KT_RUN(a_step_up_empties_the_window);
    KT_RUN(a_rollback_wins_over_a_due_step);
    KT_RUN(next_deadline_is_the_next_slot_or_the_step);
    KT_RUN(config_validation_names_the_bad_field);
    KT_RUN(p99_rule_agrees_with_a_sorted_reference);
    KT_RUN(window_agrees_with_a_naive_reference_over_random_runs);
    return kt_done();
}
