/* test_breaker.c - every circuit-breaker transition, driven by an injected clock. */
#include "base/rand.h"
#include "core/breaker.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

/* Transitions are appended here as "FROM>TO@ms " so a test compares a readable trace. */
static char trace[1024];

static void on_transition(void *data, keel_breaker_state_t from, keel_breaker_state_t to,
                          keel_ms_t now_ms)
{
    (void)data;
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof(trace) - n, "%s>%s@%lld ", keel_breaker_state_name(from),
             keel_breaker_state_name(to), (long long)now_ms);
}

static void count_config(keel_breaker_config_t *c, uint32_t window, uint32_t min, uint32_t pct)
{
    keel_breaker_config_default(c);
    c->window_calls = window;
    c->calls_min = min;
    c->failure_rate_pct = pct;
    c->open_ms = 1000;
    c->probes_max = 3;
    c->on_transition = on_transition;
    trace[0] = 0;
}

static void init(keel_breaker_t *b, const keel_breaker_config_t *c)
{
    keel_errmsg_t m;
    int err = keel_breaker_init(b, c, &m);
    if (err)
        KT_FAIL("init: %s", m.text);
}

/* One whole call: allow, then record. Returns the allow result. */
static int call(keel_breaker_t *b, keel_ms_t now_ms, keel_breaker_outcome_t o, keel_ms_t dur_ms)
{
    int p = keel_breaker_allow(b, now_ms);
    if (p >= 0)
        keel_breaker_record(b, now_ms, p, o, dur_ms);
    return p;
}

static void calls(keel_breaker_t *b, keel_ms_t now_ms, int n, keel_breaker_outcome_t o)
{
    for (int i = 0; i < n; i++)
        KT_CHECK(call(b, now_ms, o, 1) >= 0);
}

static void opens_when_failure_rate_reaches_threshold_exactly(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    init(&b, &c);
    calls(&b, 0, 5, KEEL_BREAKER_SUCCESS);
    calls(&b, 0, 4, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED); /* 9 calls < calls_min */
    calls(&b, 7, 1, KEEL_BREAKER_FAILURE);                  /* 5/10 = 50% exactly */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_STR(trace, "CLOSED>OPEN@7 ");
    KT_EQ_INT(keel_breaker_next_deadline_ms(&b), 1007);
    keel_breaker_free(&b);
}

static void stays_closed_one_failure_below_threshold(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    init(&b, &c);
    calls(&b, 0, 6, KEEL_BREAKER_SUCCESS);
    calls(&b, 0, 4, KEEL_BREAKER_FAILURE); /* 40% */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    KT_EQ_STR(trace, "");
    keel_breaker_free(&b);
}

static void does_not_judge_fewer_than_calls_min(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 20, 10, 50);
    init(&b, &c);
    calls(&b, 0, 9, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 0, 1, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    keel_breaker_free(&b);
}

static void count_window_forgets_calls_older_than_its_size(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    init(&b, &c);
    calls(&b, 0, 4, KEEL_BREAKER_FAILURE);
    calls(&b, 0, 6, KEEL_BREAKER_SUCCESS); /* window F F F F S S S S S S: 40% */
    calls(&b, 0, 4, KEEL_BREAKER_SUCCESS); /* the four failures rolled out */
    keel_breaker_stats_t s;
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.window_calls, 10);
    KT_EQ_INT(s.window_failures, 0);
    calls(&b, 0, 4, KEEL_BREAKER_FAILURE); /* 4/10 */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 0, 1, KEEL_BREAKER_FAILURE); /* 5/10: a success rolled out, a failure came in */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    keel_breaker_free(&b);
}

static void time_window_rolls_over_bucket_by_bucket(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    c.window_kind = KEEL_BREAKER_WINDOW_TIME;
    c.window_ms = 10000;
    c.window_buckets = 10; /* 1 s buckets */
    init(&b, &c);
    calls(&b, 500, 4, KEEL_BREAKER_FAILURE);  /* bucket [0, 1000) */
    calls(&b, 5000, 5, KEEL_BREAKER_SUCCESS); /* bucket [5000, 6000) */
    keel_breaker_stats_t s;
    calls(&b, 9999, 1, KEEL_BREAKER_SUCCESS); /* still inside [0, 10000): 4/10 */
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.window_calls, 10);
    KT_EQ_INT(s.window_failures, 4);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 10000, 1, KEEL_BREAKER_FAILURE); /* bucket 0 expired: 1 failure of 7 calls */
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.window_calls, 7);
    KT_EQ_INT(s.window_failures, 1);
    calls(&b, 10001, 3, KEEL_BREAKER_FAILURE); /* 4 of 10 */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 10002, 1, KEEL_BREAKER_FAILURE); /* 5 of 11 < 50% */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 10003, 1, KEEL_BREAKER_FAILURE); /* 6 of 12 = 50% */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_STR(trace, "CLOSED>OPEN@10003 ");
    keel_breaker_free(&b);
}

static void time_window_empties_after_a_long_idle_gap(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 5, 50);
    c.window_kind = KEEL_BREAKER_WINDOW_TIME;
    c.window_ms = 3000;
    c.window_buckets = 3;
    init(&b, &c);
    calls(&b, 100, 4, KEEL_BREAKER_FAILURE);
    calls(&b, 1000000, 1, KEEL_BREAKER_FAILURE); /* old failures gone: 1 call < calls_min */
    keel_breaker_stats_t s;
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.window_calls, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    keel_breaker_free(&b);
}

static void opens_on_consecutive_failures_before_calls_min(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 100, 100, 50);
    c.consecutive_failures_max = 3;
    init(&b, &c);
    calls(&b, 0, 2, KEEL_BREAKER_FAILURE);
    calls(&b, 0, 1, KEEL_BREAKER_SUCCESS); /* resets the run */
    calls(&b, 0, 2, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 42, 1, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_STR(trace, "CLOSED>OPEN@42 ");
    keel_breaker_free(&b);
}

static void opens_when_slow_call_rate_reaches_threshold(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    c.slow_call_rate_pct = 30;
    c.slow_call_ms = 200;
    init(&b, &c);
    for (int i = 0; i < 7; i++)
        call(&b, 0, KEEL_BREAKER_SUCCESS, 199); /* fast: 199 < 200 */
    call(&b, 0, KEEL_BREAKER_SUCCESS, 200);
    call(&b, 0, KEEL_BREAKER_SUCCESS, 5000);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED); /* 9 calls */
    call(&b, 0, KEEL_BREAKER_SUCCESS, 250);                 /* 3/10 slow = 30% */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    keel_breaker_free(&b);
}

static void open_rejects_until_open_ms_then_admits_a_probe(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50);
    init(&b, &c);
    calls(&b, 100, 4, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_INT(keel_breaker_allow(&b, 100), KEEL_EREJECTED);
    KT_EQ_INT(keel_breaker_allow(&b, 1099), KEEL_EREJECTED);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_CHECK(keel_breaker_allow(&b, 1100) >= 0);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_HALF_OPEN);
    KT_EQ_STR(trace, "CLOSED>OPEN@100 OPEN>HALF_OPEN@1100 ");
    keel_breaker_stats_t s;
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.calls_rejected, 2);
    keel_breaker_free(&b);
}

static void trip(keel_breaker_t *b, keel_ms_t now_ms)
{
    while (keel_breaker_state(b) == KEEL_BREAKER_CLOSED)
        calls(b, now_ms, 1, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(b), KEEL_BREAKER_OPEN);
}

static void half_open_admits_at_most_probes_max_concurrent_probes(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50); /* probes_max 3 */
    init(&b, &c);
    trip(&b, 0);
    int p1 = keel_breaker_allow(&b, 1000);
    int p2 = keel_breaker_allow(&b, 1000);
    int p3 = keel_breaker_allow(&b, 1001);
    KT_CHECK(p1 >= 0 && p2 >= 0 && p3 >= 0);
    KT_EQ_INT(keel_breaker_allow(&b, 1002), KEEL_EREJECTED);    /* all 3 in flight */
    keel_breaker_record(&b, 1003, p2, KEEL_BREAKER_IGNORED, 0); /* frees a slot */
    int p4 = keel_breaker_allow(&b, 1004);
    KT_CHECK(p4 >= 0);
    KT_EQ_INT(keel_breaker_allow(&b, 1004), KEEL_EREJECTED);
    keel_breaker_record(&b, 1005, p1, KEEL_BREAKER_SUCCESS, 1);
    /* a completed probe does not free its slot: probes_max bounds probes per period */
    KT_EQ_INT(keel_breaker_allow(&b, 1005), KEEL_EREJECTED);
    keel_breaker_record(&b, 1006, p3, KEEL_BREAKER_SUCCESS, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_HALF_OPEN);
    keel_breaker_record(&b, 1007, p4, KEEL_BREAKER_SUCCESS, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    KT_EQ_STR(trace, "CLOSED>OPEN@0 OPEN>HALF_OPEN@1000 HALF_OPEN>CLOSED@1007 ");
    keel_breaker_free(&b);
}

static void half_open_reopens_on_any_probe_failure(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50);
    init(&b, &c);
    trip(&b, 0);
    int p1 = keel_breaker_allow(&b, 1000);
    int p2 = keel_breaker_allow(&b, 1000);
    int p3 = keel_breaker_allow(&b, 1000);
    keel_breaker_record(&b, 1001, p1, KEEL_BREAKER_SUCCESS, 1);
    keel_breaker_record(&b, 1002, p2, KEEL_BREAKER_FAILURE, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_INT(keel_breaker_next_deadline_ms(&b), 2002); /* a full open_ms again */
    /* the third probe finishes late: its permit is stale and changes nothing */
    keel_breaker_record(&b, 1003, p3, KEEL_BREAKER_SUCCESS, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    KT_EQ_INT(keel_breaker_allow(&b, 2001), KEEL_EREJECTED);
    KT_CHECK(keel_breaker_allow(&b, 2002) >= 0);
    KT_EQ_STR(trace, "CLOSED>OPEN@0 OPEN>HALF_OPEN@1000 HALF_OPEN>OPEN@1002 OPEN>HALF_OPEN@2002 ");
    keel_breaker_stats_t s;
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.stale_results, 1);
    keel_breaker_free(&b);
}

static void half_open_reopens_when_probes_are_slow(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50);
    c.slow_call_rate_pct = 50;
    c.slow_call_ms = 100;
    c.probes_max = 2;
    init(&b, &c);
    trip(&b, 0);
    KT_CHECK(call(&b, 1000, KEEL_BREAKER_SUCCESS, 10) >= 0);
    KT_CHECK(call(&b, 1000, KEEL_BREAKER_SUCCESS, 100) >= 0); /* slow: 1/2 = 50% */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    keel_breaker_free(&b);
}

static void results_admitted_before_a_transition_are_stale(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50);
    c.probes_max = 1;
    init(&b, &c);
    int old = keel_breaker_allow(&b, 0); /* admitted while CLOSED, still in flight */
    trip(&b, 0);
    int probe = keel_breaker_allow(&b, 1000);
    KT_CHECK(probe >= 0 && probe != old);
    keel_breaker_record(&b, 1001, old, KEEL_BREAKER_SUCCESS, 1); /* must not close it */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_HALF_OPEN);
    keel_breaker_record(&b, 1002, probe, KEEL_BREAKER_SUCCESS, 1);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    keel_breaker_free(&b);
}

static void recovers_with_a_fresh_window_after_closing(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 10, 10, 50);
    c.probes_max = 1;
    init(&b, &c);
    trip(&b, 0);
    calls(&b, 1000, 1, KEEL_BREAKER_SUCCESS);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    keel_breaker_stats_t s;
    keel_breaker_stats(&b, &s);
    KT_EQ_INT(s.window_calls, 0); /* the failures that tripped it are forgotten */
    calls(&b, 1001, 9, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    calls(&b, 1002, 1, KEEL_BREAKER_SUCCESS); /* 9/10 */
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_OPEN);
    keel_breaker_free(&b);
}

static void forced_open_rejects_and_disabled_admits_everything(void)
{
    keel_breaker_config_t c;
    keel_breaker_t b;
    count_config(&c, 4, 4, 50);
    init(&b, &c);
    keel_breaker_force(&b, KEEL_BREAKER_MODE_FORCED_OPEN, 5);
    KT_EQ_INT(keel_breaker_allow(&b, 1000000), KEEL_EREJECTED); /* never times out */
    KT_EQ_INT(keel_breaker_next_deadline_ms(&b), KEEL_MS_NEVER);
    keel_breaker_force(&b, KEEL_BREAKER_MODE_DISABLED, 6);
    calls(&b, 7, 100, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_DISABLED);
    keel_breaker_force(&b, KEEL_BREAKER_MODE_NORMAL, 8);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    KT_EQ_STR(trace, "CLOSED>FORCED_OPEN@5 FORCED_OPEN>DISABLED@6 DISABLED>CLOSED@8 ");
    calls(&b, 9, 3, KEEL_BREAKER_FAILURE);
    KT_EQ_INT(keel_breaker_state(&b), KEEL_BREAKER_CLOSED);
    keel_breaker_free(&b);
}

static void config_validation_names_the_bad_field(void)
{
    keel_breaker_config_t c;
    keel_errmsg_t m;
    keel_breaker_config_default(&c);
    KT_EQ_INT(keel_breaker_config_validate(&c, &m), 0);
    c.calls_min = 101;
    KT_EQ_INT(keel_breaker_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "calls_min") != NULL);
    keel_breaker_config_default(&c);
    c.window_kind = KEEL_BREAKER_WINDOW_TIME;
    c.window_ms = 1001;
    KT_EQ_INT(keel_breaker_config_validate(&c, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "window_ms") != NULL);
    keel_breaker_config_default(&c);
    c.failure_rate_pct = 101;
    KT_EQ_INT(keel_breaker_config_validate(&c, &m), KEEL_EINVAL);
}

/*
 * A naive reference breaker: the window is a plain list of calls, recounted
 * on every result. Random runs drive it and the real breaker with the same
 * calls and compare every answer, which checks the ring and bucket
 * bookkeeping across many roll-overs and configurations.
 */
typedef struct ref_call {
    keel_ms_t t_ms;
    int failure, slow;
} ref_call_t;

typedef struct ref {
    keel_breaker_config_t c;
    keel_breaker_state_t state;
    uint32_t epoch;
    keel_ms_t open_until_ms;
    ref_call_t calls[4096];
    int n, consecutive;
    uint32_t admitted, done, slow_probes;
} ref_t;

static void ref_to(ref_t *r, keel_breaker_state_t to, keel_ms_t now_ms)
{
    r->state = to;
    r->epoch++;
    if (to == KEEL_BREAKER_OPEN)
        r->open_until_ms = now_ms + r->c.open_ms;
    if (to != KEEL_BREAKER_HALF_OPEN)
        r->n = r->consecutive = 0;
    r->admitted = r->done = r->slow_probes = 0;
}

static int ref_allow(ref_t *r, keel_ms_t now_ms)
{
    if (r->state == KEEL_BREAKER_OPEN && now_ms >= r->open_until_ms)
        ref_to(r, KEEL_BREAKER_HALF_OPEN, now_ms);
    if (r->state == KEEL_BREAKER_OPEN)
        return KEEL_EREJECTED;
    if (r->state == KEEL_BREAKER_HALF_OPEN) {
        if (r->admitted >= r->c.probes_max)
            return KEEL_EREJECTED;
        r->admitted++;
    }
    return (int)r->epoch;
}

static void ref_closed(ref_t *r, keel_ms_t now_ms, int failure, int slow)
{
    r->calls[r->n++] = (ref_call_t){now_ms, failure, slow};
    int first = 0;
    if (r->c.window_kind == KEEL_BREAKER_WINDOW_COUNT) {
        first = r->n > (int)r->c.window_calls ? r->n - (int)r->c.window_calls : 0;
    } else {
        keel_ms_t bucket_ms = r->c.window_ms / r->c.window_buckets;
        while (r->calls[first].t_ms / bucket_ms <= now_ms / bucket_ms - r->c.window_buckets)
            first++;
    }
    memmove(r->calls, r->calls + first, sizeof(r->calls[0]) * (size_t)(r->n - first));
    r->n -= first;
    uint32_t f = 0, sl = 0, n = (uint32_t)r->n;
    for (int i = 0; i < r->n; i++) {
        f += r->calls[i].failure;
        sl += r->calls[i].slow;
    }
    r->consecutive = failure ? r->consecutive + 1 : 0;
    int trip =
        r->c.consecutive_failures_max && r->consecutive >= (int)r->c.consecutive_failures_max;
    if (n >= r->c.calls_min) {
        trip |= r->c.failure_rate_pct && f * 100 >= r->c.failure_rate_pct * n;
        trip |= r->c.slow_call_rate_pct && sl * 100 >= r->c.slow_call_rate_pct * n;
    }
    if (trip)
        ref_to(r, KEEL_BREAKER_OPEN, now_ms);
}

static void ref_record(ref_t *r, keel_ms_t now_ms, int permit, keel_breaker_outcome_t o,
                       keel_ms_t dur_ms)
{
    if ((uint32_t)permit != r->epoch)
        return;
    if (o == KEEL_BREAKER_IGNORED) {
        r->admitted -= r->state == KEEL_BREAKER_HALF_OPEN;
        return;
    }
    int failure = o == KEEL_BREAKER_FAILURE;
    int slow = r->c.slow_call_rate_pct > 0 && dur_ms >= r->c.slow_call_ms;
    if (r->state == KEEL_BREAKER_CLOSED) {
        ref_closed(r, now_ms, failure, slow);
    } else if (r->state == KEEL_BREAKER_HALF_OPEN) {
        if (failure) {
            ref_to(r, KEEL_BREAKER_OPEN, now_ms);
            return;
        }
        r->done++;
        r->slow_probes += slow;
        if (r->done == r->c.probes_max)
            ref_to(r,
                   r->c.slow_call_rate_pct &&
                           r->slow_probes * 100 >= r->c.slow_call_rate_pct * r->done
                       ? KEEL_BREAKER_OPEN
                       : KEEL_BREAKER_CLOSED,
                   now_ms);
    }
}

static void random_config(keel_rand_t *g, keel_breaker_config_t *c)
{
    keel_breaker_config_default(c);
    c->window_kind =
        keel_rand_chance(g, 0.5) ? KEEL_BREAKER_WINDOW_COUNT : KEEL_BREAKER_WINDOW_TIME;
    c->window_calls = (uint32_t)keel_rand_range(g, 1, 20);
    c->window_buckets = (uint32_t)keel_rand_range(g, 1, 6);
    c->window_ms = c->window_buckets * keel_rand_range(g, 20, 400);
    c->calls_min = (uint32_t)keel_rand_range(g, 1, (int64_t)c->window_calls);
    c->failure_rate_pct = (uint32_t)keel_rand_range(g, 0, 100);
    c->consecutive_failures_max = (uint32_t)keel_rand_range(g, 0, 6);
    c->slow_call_rate_pct = keel_rand_chance(g, 0.5) ? 0 : (uint32_t)keel_rand_range(g, 1, 100);
    c->slow_call_ms = keel_rand_range(g, 10, 200);
    c->open_ms = keel_rand_range(g, 1, 1000);
    c->probes_max = (uint32_t)keel_rand_range(g, 1, 5);
}

static void agrees_with_a_naive_reference_over_random_runs(void)
{
    uint64_t transitions = 0, half_opens = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        KT_SEED(seed);
        keel_rand_t g;
        keel_rand_seed(&g, seed);
        static ref_t r;
        memset(&r, 0, sizeof(r));
        random_config(&g, &r.c);
        r.state = KEEL_BREAKER_CLOSED;
        keel_breaker_t b;
        init(&b, &r.c);
        int inflight[16], n_inflight = 0;
        keel_ms_t now = 0;
        for (int step = 0; step < 3000; step++) {
            now += keel_rand_below(&g, 4) == 0 ? keel_rand_range(&g, 0, 300) : 0;
            if (n_inflight < 16 && keel_rand_chance(&g, 0.55)) {
                int p = keel_breaker_allow(&b, now);
                KT_EQ_INT(p, ref_allow(&r, now));
                if (p >= 0)
                    inflight[n_inflight++] = p;
            } else if (n_inflight > 0) {
                int k = (int)keel_rand_below(&g, (uint64_t)n_inflight);
                int p = inflight[k];
                inflight[k] = inflight[--n_inflight];
                keel_breaker_outcome_t o = (keel_breaker_outcome_t)keel_rand_below(&g, 3);
                keel_ms_t dur = keel_rand_range(&g, 0, 250);
                keel_breaker_record(&b, now, p, o, dur);
                ref_record(&r, now, p, o, dur);
            }
            KT_EQ_INT(keel_breaker_state(&b), r.state);
            keel_breaker_stats_t st;
            keel_breaker_stats(&b, &st);
            if (r.state == KEEL_BREAKER_CLOSED && r.c.window_kind == KEEL_BREAKER_WINDOW_COUNT)
                KT_EQ_INT(st.window_calls, r.n);
            half_opens += r.state == KEEL_BREAKER_HALF_OPEN;
        }
        transitions += b.stats.transitions;
        keel_breaker_free(&b);
    }
    kt__seed_set = 0;
    KT_CHECK(transitions > 10000 && half_opens > 10000); /* the runs do reach every state */
}

int main(void)
{
    KT_RUN(opens_when_failure_rate_reaches_threshold_exactly);
    KT_RUN(stays_closed_one_failure_below_threshold);
    KT_RUN(does_not_judge_fewer_than_calls_min);
    KT_RUN(count_window_forgets_calls_older_than_its_size);
    KT_RUN(time_window_rolls_over_bucket_by_bucket);
    KT_RUN(time_window_empties_after_a_long_idle_gap);
    KT_RUN(opens_on_consecutive_failures_before_calls_min);
    KT_RUN(opens_when_slow_call_rate_reaches_threshold);
    KT_RUN(open_rejects_until_open_ms_then_admits_a_probe);
    KT_RUN(half_open_admits_at_most_probes_max_concurrent_probes);
    KT_RUN(half_open_reopens_on_any_probe_failure);
    KT_RUN(half_open_reopens_when_probes_are_slow);
    KT_RUN(results_admitted_before_a_transition_are_stale);
    KT_RUN(recovers_with_a_fresh_window_after_closing);
    KT_RUN(forced_open_rejects_and_disabled_admits_everything);
    KT_RUN(config_validation_names_the_bad_field);
    KT_RUN(agrees_with_a_naive_reference_over_random_runs);
    return kt_done();
}
