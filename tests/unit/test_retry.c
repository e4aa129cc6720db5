/* test_retry.c - backoff bounds, deadlines, retry-on classes and the retry budget. */
#include "core/retry.h"
#include "ktest.h"

static void init(keel_retry_t *p, const keel_retry_config_t *c)
{
    keel_errmsg_t m;
    if (keel_retry_init(p, c, &m))
        KT_FAIL("init: %s", m.text);
}

static keel_ms_t ceiling(keel_ms_t base, keel_ms_t cap, uint32_t n)
{
    keel_ms_t c = base;
    for (uint32_t i = 0; i < n; i++)
        c = c * 2 > cap ? cap : c * 2;
    return c < cap ? c : cap;
}

static void full_jitter_stays_within_zero_and_capped_exponential(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.backoff_base_ms = 10;
    c.backoff_cap_ms = 5000;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        for (uint32_t n = 0; n < 16; n++) {
            keel_ms_t top = ceiling(10, 5000, n);
            double sum = 0;
            keel_ms_t lo = top, hi = 0;
            for (int i = 0; i < 200; i++) {
                keel_ms_t d = keel_retry_backoff_ms(&c, n, &r);
                KT_CHECK(d >= 0 && d <= top);
                sum += (double)d;
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
            }
            /* really jittered over the whole range, not pinned to one end */
            KT_NEAR(sum / 200, top / 2.0, top * 0.15 + 1);
            KT_CHECK(lo <= top / 10 && hi >= top - top / 10);
        }
    }
}

static void equal_jitter_stays_in_the_upper_half_and_none_is_exact(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.backoff_base_ms = 10;
    c.backoff_cap_ms = 1000;
    keel_rand_t r;
    keel_rand_seed(&r, 3);
    c.jitter = KEEL_RETRY_JITTER_EQUAL;
    for (uint32_t n = 0; n < 12; n++) {
        keel_ms_t top = ceiling(10, 1000, n);
        for (int i = 0; i < 1000; i++) {
            keel_ms_t d = keel_retry_backoff_ms(&c, n, &r);
            KT_CHECK(d >= top / 2 && d <= top);
        }
    }
    c.jitter = KEEL_RETRY_JITTER_NONE;
    const keel_ms_t want[] = {10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
    for (uint32_t n = 0; n < 10; n++)
        KT_EQ_INT(keel_retry_backoff_ms(&c, n, &r), want[n]);
    KT_EQ_INT(keel_retry_backoff_ms(&c, 99, &r), 1000); /* no overflow for huge n */
}

static const keel_retry_outcome_t reset_get = {KEEL_RETRY_FAIL_RESET, 0, true};

static void never_starts_an_attempt_at_or_past_the_deadline(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.attempts_max = 50;
    c.backoff_base_ms = 5;
    c.backoff_cap_ms = 400;
    c.per_try_timeout_ms = 150;
    c.budget_pct = 0;
    keel_retry_t p;
    init(&p, &c);
    for (uint64_t seed = 1; seed <= 500; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel_retry_call_t call;
        keel_ms_t now = (keel_ms_t)keel_rand_below(&r, 100000);
        keel_ms_t deadline = now + 1 + (keel_ms_t)keel_rand_below(&r, 3000);
        keel_ms_t timeout = keel_retry_begin(&p, &call, now, deadline);
        int gave_up = 0;
        while (!gave_up) {
            KT_CHECK(timeout > 0 && timeout <= 150 && now + timeout <= deadline);
            now += (keel_ms_t)keel_rand_range(&r, 1, timeout); /* the try fails in time */
            keel_retry_decision_t d;
            keel_retry_next(&p, &call, now, &reset_get, &r, &d);
            if (d.verdict != KEEL_RETRY_RETRY) {
                KT_EQ_INT(d.verdict, KEEL_RETRY_GIVE_UP);
                KT_CHECK(d.reason == KEEL_RETRY_REASON_DEADLINE ||
                         d.reason == KEEL_RETRY_REASON_ATTEMPTS);
                gave_up = 1;
            } else {
                KT_CHECK(d.start_ms >= now && d.start_ms < deadline);
                now = d.start_ms;
                timeout = d.try_timeout_ms;
            }
        }
    }
    keel_retry_call_t late;
    KT_EQ_INT(keel_retry_begin(&p, &late, 100, 100), KEEL_ETIMEDOUT);
}

static void retries_only_the_configured_classes(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    const keel_retry_outcome_t ok = {KEEL_RETRY_FAIL_NONE, 200, true};
    const keel_retry_outcome_t s500 = {KEEL_RETRY_FAIL_NONE, 500, true};
    const keel_retry_outcome_t s503 = {KEEL_RETRY_FAIL_NONE, 503, true};
    const keel_retry_outcome_t s504 = {KEEL_RETRY_FAIL_NONE, 504, true};
    const keel_retry_outcome_t conn = {KEEL_RETRY_FAIL_CONNECT, 0, true};
    const keel_retry_outcome_t tmo = {KEEL_RETRY_FAIL_TIMEOUT, 0, true};
    c.retry_on = KEEL_RETRY_ON_503;
    KT_CHECK(!keel_retry_is_retryable(&c, &ok));
    KT_CHECK(!keel_retry_is_retryable(&c, &s500));
    KT_CHECK(keel_retry_is_retryable(&c, &s503));
    KT_CHECK(!keel_retry_is_retryable(&c, &s504));
    KT_CHECK(!keel_retry_is_retryable(&c, &conn));
    c.retry_on = KEEL_RETRY_ON_GATEWAY_ERROR;
    KT_CHECK(!keel_retry_is_retryable(&c, &s500));
    KT_CHECK(keel_retry_is_retryable(&c, &s504));
    c.retry_on = KEEL_RETRY_ON_5XX;
    KT_CHECK(keel_retry_is_retryable(&c, &s500));
    KT_CHECK(!keel_retry_is_retryable(&c, &tmo));
    c.retry_on = KEEL_RETRY_ON_CONNECT_FAILURE | KEEL_RETRY_ON_TIMEOUT;
    KT_CHECK(keel_retry_is_retryable(&c, &conn));
    KT_CHECK(keel_retry_is_retryable(&c, &tmo));
    KT_CHECK(!keel_retry_is_retryable(&c, &reset_get));
}

static void non_idempotent_requests_retry_only_after_connect_failure(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.retry_on |= KEEL_RETRY_ON_5XX;
    keel_retry_t p;
    init(&p, &c);
    keel_rand_t r;
    keel_rand_seed(&r, 1);
    keel_retry_call_t call;
    keel_retry_decision_t d;
    const keel_retry_outcome_t post_reset = {KEEL_RETRY_FAIL_RESET, 0, false};
    const keel_retry_outcome_t post_500 = {KEEL_RETRY_FAIL_NONE, 500, false};
    const keel_retry_outcome_t post_conn = {KEEL_RETRY_FAIL_CONNECT, 0, false};
    keel_retry_begin(&p, &call, 0, KEEL_MS_NEVER);
    keel_retry_next(&p, &call, 10, &post_reset, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_GIVE_UP);
    KT_EQ_INT(d.reason, KEEL_RETRY_REASON_NOT_IDEMPOTENT);
    keel_retry_next(&p, &call, 10, &post_500, &r, &d);
    KT_EQ_INT(d.reason, KEEL_RETRY_REASON_NOT_IDEMPOTENT);
    keel_retry_next(&p, &call, 10, &post_conn, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_RETRY);
    KT_EQ_INT(d.attempt, 2);
    KT_EQ_INT(d.try_timeout_ms, KEEL_MS_NEVER); /* no per-try limit, no deadline */
}

static void stops_after_attempts_max(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.attempts_max = 3;
    c.budget_pct = 0;
    keel_retry_t p;
    init(&p, &c);
    keel_rand_t r;
    keel_rand_seed(&r, 1);
    keel_retry_call_t call;
    keel_retry_decision_t d;
    keel_retry_begin(&p, &call, 0, KEEL_MS_NEVER);
    keel_retry_next(&p, &call, 1, &reset_get, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_RETRY);
    keel_retry_next(&p, &call, 2, &reset_get, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_RETRY);
    KT_EQ_INT(d.attempt, 3);
    keel_retry_next(&p, &call, 3, &reset_get, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_GIVE_UP);
    KT_EQ_INT(d.reason, KEEL_RETRY_REASON_ATTEMPTS);
    const keel_retry_outcome_t ok = {KEEL_RETRY_FAIL_NONE, 200, true};
    keel_retry_next(&p, &call, 3, &ok, &r, &d);
    KT_EQ_INT(d.verdict, KEEL_RETRY_DONE);
}

/*
 * 60 s of a total outage at 200 requests/s; every attempt fails with a
 * retryable reset and attempts_max 3 would allow 2 retries per request (200%
 * extra load). The budget is 20% plus a floor of 2 retries/s (1% of this load).
 */
static void budget_caps_retries_at_its_fraction_under_sustained_failure(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.attempts_max = 3;
    c.budget_pct = 20;
    c.budget_retries_min_per_s = 2;
    c.budget_window_ms = 10000;
    keel_retry_t p;
    init(&p, &c);
    keel_rand_t r;
    keel_rand_seed(&r, 11);
    uint64_t requests = 0, retries = 0;
    for (keel_ms_t now = 0; now < 60000; now += 5) { /* one new request per 5 ms */
        keel_retry_call_t call;
        keel_retry_begin(&p, &call, now, now + 10000);
        requests++;
        for (;;) {
            keel_retry_decision_t d;
            keel_retry_next(&p, &call, now, &reset_get, &r, &d);
            if (d.verdict != KEEL_RETRY_RETRY)
                break;
            retries++;
        }
    }
    double frac = (double)retries / (double)requests;
    fprintf(stderr, "     retries per request under outage: %.4f (budget 0.20 + floor 0.01)\n",
            frac);
    KT_CHECK(frac <= 0.20 + 0.01 + 0.005);
    KT_CHECK(frac >= 0.19);
    KT_EQ_U64(p.retries_total, retries);
    KT_CHECK(p.budget_denied > 0);
}

static void budget_floor_lets_a_quiet_client_retry(void)
{
    keel_retry_config_t c;
    keel_retry_config_default(&c);
    c.budget_pct = 20;
    c.budget_retries_min_per_s = 1; /* 10 retries per 10 s window */
    keel_retry_t p;
    init(&p, &c);
    keel_rand_t r;
    keel_rand_seed(&r, 2);
    int retried = 0;
    for (int i = 0; i < 10; i++) { /* one request every 5 s: 20% of it is nothing */
        keel_retry_call_t call;
        keel_retry_decision_t d;
        keel_retry_begin(&p, &call, i * 5000, KEEL_MS_NEVER);
        keel_retry_next(&p, &call, i * 5000 + 1, &reset_get, &r, &d);
        retried += d.verdict == KEEL_RETRY_RETRY;
    }
    KT_EQ_INT(retried, 10);
}

int main(void)
{
    KT_RUN(full_jitter_stays_within_zero_and_capped_exponential);
    KT_RUN(equal_jitter_stays_in_the_upper_half_and_none_is_exact);
    KT_RUN(never_starts_an_attempt_at_or_past_the_deadline);
    KT_RUN(retries_only_the_configured_classes);
    KT_RUN(non_idempotent_requests_retry_only_after_connect_failure);
    KT_RUN(stops_after_attempts_max);
    KT_RUN(budget_caps_retries_at_its_fraction_under_sustained_failure);
    KT_RUN(budget_floor_lets_a_quiet_client_retry);
    return kt_done();
}
