/* test_lincheck.c - linearizability checker: hand-written histories, brute-force oracle, scale. */
#include "base/err.h"
#include "base/rand.h"
#include "core/lincheck.h"
#include "ktest.h"

#include <stdlib.h>
#include <time.h>

/* ---- building histories by hand ------------------------------------------------------------ */

static keel_lc_op_t op_at(uint64_t proc, keel_lc_fn_t fn, int64_t t0, int64_t t1)
{
    keel_lc_op_t o = {.process = proc, .key = 1, .fn = fn, .outcome = KEEL_LC_OK};
    o.invoke_ts = t0;
    o.complete_ts = t1;
    return o;
}

static keel_lc_op_t wr(uint64_t proc, int64_t v, int64_t t0, int64_t t1)
{
    keel_lc_op_t o = op_at(proc, KEEL_LC_WRITE, t0, t1);
    o.arg = v;
    return o;
}

static keel_lc_op_t rd(uint64_t proc, int64_t v, int64_t t0, int64_t t1)
{
    keel_lc_op_t o = op_at(proc, KEEL_LC_READ, t0, t1);
    o.result = v;
    return o;
}

static keel_lc_op_t cas(uint64_t proc, int64_t expect, int64_t nv, int swapped, int64_t t0,
                        int64_t t1)
{
    keel_lc_op_t o = op_at(proc, KEEL_LC_CAS, t0, t1);
    o.expect = expect;
    o.arg = nv;
    o.result = swapped;
    return o;
}

static keel_lc_op_t unknown(keel_lc_op_t o)
{
    o.outcome = KEEL_LC_UNKNOWN;
    o.complete_ts = 0; /* ignored */
    return o;
}

static keel_lc_op_t failed(keel_lc_op_t o)
{
    o.outcome = KEEL_LC_FAIL;
    return o;
}

static int verdict_of(const keel_lc_op_t *ops, size_t n)
{
    keel_lc_result_t r;
    int rc = keel_lincheck(ops, n, NULL, &r);
    if (rc < 0)
        return rc;
    return r.verdict;
}

#define N_(a) (sizeof(a) / sizeof((a)[0]))

/* ---- hand-written histories ------------------------------------------------------------ */

static void sequential_writes_and_reads_are_linearizable(void)
{
    keel_lc_op_t h[] = {rd(1, 0, 0, 5),     wr(1, 10, 10, 20), rd(2, 10, 30, 40),
                        wr(2, 11, 50, 60),  rd(1, 11, 70, 80), cas(1, 11, 12, 1, 90, 95),
                        rd(2, 12, 100, 110)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
}

static void empty_history_is_linearizable(void)
{
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(NULL, 0, NULL, &r), 0);
    KT_EQ_INT(r.verdict, 1);
}

static void read_concurrent_with_a_write_may_see_old_or_new_value(void)
{
    keel_lc_op_t a[] = {wr(1, 1, 0, 10), wr(1, 2, 20, 60), rd(2, 1, 30, 40)};
    keel_lc_op_t b[] = {wr(1, 1, 0, 10), wr(1, 2, 20, 60), rd(2, 2, 30, 40)};
    KT_EQ_INT(verdict_of(a, N_(a)), 1);
    KT_EQ_INT(verdict_of(b, N_(b)), 1);
}

static void touching_operations_count_as_concurrent(void)
{
    /* the read completes at 20, exactly when the write is invoked */
    keel_lc_op_t h[] = {wr(1, 5, 20, 30), rd(2, 5, 10, 20)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
}

static void stale_read_after_a_newer_read_is_rejected(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), wr(1, 2, 20, 30), rd(2, 2, 40, 45), rd(3, 1, 50, 55)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
}

static void stale_read_reports_the_minimal_window(void)
{
    /* w1 | w2 | r(1): the window is just w2 and the read, from w2's invocation */
    keel_lc_op_t h[] = {rd(3, 0, 0, 1), wr(1, 1, 2, 10), wr(1, 2, 20, 30), rd(2, 1, 40, 50),
                        rd(2, 2, 60, 70)};
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(h, N_(h), NULL, &r), 0);
    KT_EQ_INT(r.verdict, 0);
    KT_EQ_U64(r.key, 1);
    KT_EQ_INT(r.window_minimal, 1);
    KT_EQ_INT(r.window_start_ts, 20);
    KT_EQ_INT(r.window_end_ts, 50);
    KT_EQ_INT(r.window_len, 2);
    KT_EQ_INT(r.window_ops[0], 2);
    KT_EQ_INT(r.window_ops[1], 3);
    KT_EQ_INT(r.stuck_op, 3);
    KT_CHECK(strstr(r.explain, "not linearizable") != NULL);
}

static void lost_write_is_rejected(void)
{
    /* an acknowledged write that a later read does not see */
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), rd(2, 1, 15, 18), wr(1, 2, 20, 30), rd(2, 1, 40, 50)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
    keel_lc_op_t g[] = {wr(1, 1, 0, 10), rd(2, 0, 20, 30)};
    KT_EQ_INT(verdict_of(g, N_(g)), 0);
}

static void read_of_an_unwritten_value_is_rejected(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), rd(2, 7, 20, 30)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
    /* alone, from the start: the window starts at the beginning (initial value 0) */
    keel_lc_op_t g[] = {rd(2, 7, 0, 10), wr(1, 7, 20, 30)};
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(g, N_(g), NULL, &r), 0);
    KT_EQ_INT(r.verdict, 0);
    KT_EQ_INT(r.window_start_ts, INT64_MIN);
    KT_EQ_INT(r.window_end_ts, 10);
    KT_EQ_INT(r.window_len, 1);
    KT_EQ_INT(r.window_ops[0], 0);
}

static void two_concurrent_cas_from_the_same_value_cannot_both_succeed(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), cas(2, 1, 2, 1, 20, 40), cas(3, 1, 3, 1, 25, 45)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
    keel_lc_op_t g[] = {wr(1, 1, 0, 10), cas(2, 1, 2, 1, 20, 40), cas(3, 1, 3, 0, 25, 45),
                        rd(1, 2, 50, 60)};
    KT_EQ_INT(verdict_of(g, N_(g)), 1);
}

static void failed_compare_is_a_read_constraint(void)
{
    /* the register surely held 1, so "current != 1" is impossible */
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), cas(2, 1, 5, 0, 20, 30)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
    keel_lc_op_t g[] = {wr(1, 1, 0, 10), cas(2, 1, 5, 0, 5, 30)}; /* overlaps the write */
    KT_EQ_INT(verdict_of(g, N_(g)), 1);
}

static void unknown_write_that_a_later_read_sees_is_accepted(void)
{
    keel_lc_op_t h[] = {unknown(wr(1, 1, 0, 0)), rd(2, 1, 100, 110)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
    /* it may also take effect after a later acknowledged write */
    keel_lc_op_t g[] = {unknown(wr(1, 1, 0, 0)), wr(2, 2, 10, 20), rd(3, 2, 25, 28),
                        rd(2, 1, 30, 40)};
    KT_EQ_INT(verdict_of(g, N_(g)), 1);
}

static void unknown_write_never_seen_is_accepted(void)
{
    keel_lc_op_t h[] = {unknown(wr(1, 1, 0, 0)), rd(2, 0, 100, 110), wr(2, 3, 120, 130),
                        rd(2, 3, 140, 150)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
}

static void unknown_write_once_seen_cannot_be_undone(void)
{
    keel_lc_op_t h[] = {unknown(wr(1, 1, 0, 0)), rd(2, 1, 10, 20), rd(2, 0, 30, 40)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
}

static void unknown_write_cannot_take_effect_before_its_invocation(void)
{
    keel_lc_op_t h[] = {rd(2, 1, 0, 10), unknown(wr(1, 1, 20, 0))};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
}

static void failed_write_never_takes_effect(void)
{
    keel_lc_op_t h[] = {failed(wr(1, 1, 0, 10)), rd(2, 1, 20, 30)};
    KT_EQ_INT(verdict_of(h, N_(h)), 0);
    keel_lc_op_t g[] = {failed(wr(1, 1, 0, 10)), rd(2, 0, 20, 30), failed(rd(3, 9, 20, 30))};
    KT_EQ_INT(verdict_of(g, N_(g)), 1);
}

static void unknown_cas_swaps_only_from_its_expected_value(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), unknown(cas(2, 1, 5, 0, 20, 0)), rd(3, 5, 30, 40)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
    keel_lc_op_t g[] = {wr(1, 2, 0, 10), unknown(cas(2, 1, 5, 0, 20, 0)), rd(3, 5, 30, 40)};
    KT_EQ_INT(verdict_of(g, N_(g)), 0);
}

static void unknown_write_can_satisfy_a_failed_compare(void)
{
    /* the cas saw "current != 1" although 1 was written: only the unknown write explains it */
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), unknown(wr(2, 9, 5, 0)), cas(3, 1, 4, 0, 20, 30)};
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
    keel_lc_op_t g[] = {wr(1, 1, 0, 10), cas(3, 1, 4, 0, 20, 30)};
    KT_EQ_INT(verdict_of(g, N_(g)), 0);
}

static void keys_are_checked_independently(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), rd(2, 1, 20, 30), wr(1, 1, 0, 10), rd(2, 2, 20, 30)};
    h[2].key = h[3].key = 42; /* key 42: reads 2, never written */
    h[0].key = h[1].key = 7;  /* key 7: fine */
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(h, N_(h), NULL, &r), 0);
    KT_EQ_INT(r.verdict, 0);
    KT_EQ_U64(r.key, 42);
    KT_EQ_U64(r.keys, 2);
    /* the same value on another key does not help */
    h[3].result = 1;
    KT_EQ_INT(verdict_of(h, N_(h)), 1);
}

static void bad_input_is_refused_with_an_explanation(void)
{
    keel_lc_op_t h[] = {wr(1, 1, 0, 10), rd(2, 1, 30, 20)};
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(h, N_(h), NULL, &r), KEEL_EINVAL);
    KT_EQ_INT(r.verdict, KEEL_EINVAL);
    KT_CHECK(strstr(r.explain, "op 1") != NULL);
    keel_lc_op_t g[] = {cas(1, 0, 1, 2, 0, 10)};
    KT_EQ_INT(keel_lincheck(g, N_(g), NULL, &r), KEEL_EINVAL);
    keel_lc_op_t f[] = {wr(1, INT64_MIN, 0, 10)};
    KT_EQ_INT(keel_lincheck(f, N_(f), NULL, &r), KEEL_EINVAL);
}

static void search_gives_up_at_its_limit(void)
{
    /* 12 concurrent writes, each read by a concurrent read, and a read of a
     * value nobody wrote: proving that takes every subset of the writes,
     * about 2^12 configurations */
    keel_lc_op_t h[25];
    for (int i = 0; i < 12; i++) {
        h[2 * i] = wr((uint64_t)i, i + 1, 0, 100);
        h[2 * i + 1] = rd((uint64_t)(20 + i), i + 1, 0, 100);
    }
    h[24] = rd(99, 77, 0, 100);
    keel_lc_limits_t lim;
    keel_lc_limits_default(&lim);
    lim.states_max = 1000;
    keel_lc_result_t r;
    KT_EQ_INT(keel_lincheck(h, N_(h), &lim, &r), 0);
    KT_EQ_INT(r.verdict, KEEL_ETOOBIG);
    KT_CHECK(strstr(r.explain, "gave up") != NULL);
    lim.states_max = 1000 * 1000;
    KT_EQ_INT(keel_lincheck(h, N_(h), &lim, &r), 0);
    KT_EQ_INT(r.verdict, 0);
    /* without the impossible read it is linearizable */
    KT_EQ_INT(keel_lincheck(h, 24, &lim, &r), 0);
    KT_EQ_INT(r.verdict, 1);
    /* a failure on another key beats a give-up */
    keel_lc_op_t g[27];
    memcpy(g, h, sizeof(h));
    g[25] = wr(1, 1, 0, 10);
    g[26] = rd(2, 2, 20, 30);
    g[25].key = g[26].key = 2;
    lim.states_max = 1000;
    KT_EQ_INT(keel_lincheck(g, N_(g), &lim, &r), 0);
    KT_EQ_INT(r.verdict, 0);
    KT_EQ_U64(r.key, 2);
    /* too many ops on one key is a give-up too */
    keel_lc_limits_default(&lim);
    lim.ops_per_key_max = 24;
    KT_EQ_INT(keel_lincheck(h, N_(h), &lim, &r), 0);
    KT_EQ_INT(r.verdict, KEEL_ETOOBIG);
    KT_EQ_INT(keel_lincheck(h, 24, &lim, &r), 0);
    KT_EQ_INT(r.verdict, 1);
}

/* ---- a brute-force oracle on small random histories ------------------------------------ */

/* An op for the oracle; opt: may be placed as a no-op (it straddles a window's left cut). */
typedef struct bop {
    keel_lc_op_t o;
    int opt;
} bop_t;

/*
 * Tries every order: the next op may be any unplaced op not preceded in real
 * time by an unplaced definite op; UNKNOWN ops may also never be placed, and
 * optional ops may be placed without their effect.
 */
static int brute(const bop_t *h, size_t n, unsigned placed, int64_t st)
{
    int definite_left = 0;
    for (size_t i = 0; i < n; i++)
        if (!(placed >> i & 1) && h[i].o.outcome == KEEL_LC_OK)
            definite_left = 1;
    if (!definite_left)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (placed >> i & 1)
            continue;
        int blocked = 0;
        for (size_t j = 0; j < n && !blocked; j++)
            blocked = !(placed >> j & 1) && h[j].o.outcome == KEEL_LC_OK &&
                      h[j].o.complete_ts < h[i].o.invoke_ts;
        if (blocked)
            continue;
        const keel_lc_op_t *o = &h[i].o;
        int64_t ns = st;
        if (o->fn == KEEL_LC_READ)
            ns = o->result == st ? st : INT64_MIN;
        else if (o->fn == KEEL_LC_WRITE)
            ns = o->arg;
        else if (o->outcome == KEEL_LC_UNKNOWN)
            ns = st == o->expect ? o->arg : st;
        else if (o->result == 1)
            ns = st == o->expect ? o->arg : INT64_MIN;
        else
            ns = st != o->expect ? st : INT64_MIN;
        if (ns != INT64_MIN && brute(h, n, placed | 1u << i, ns))
            return 1;
        if (h[i].opt && brute(h, n, placed | 1u << i, st))
            return 1;
    }
    return 0;
}

static int brute_from(const bop_t *h, size_t n, int64_t init)
{
    bop_t g[16];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i].o.outcome != KEEL_LC_FAIL &&
            !(h[i].o.outcome == KEEL_LC_UNKNOWN && h[i].o.fn == KEEL_LC_READ))
            g[m++] = h[i];
    return brute(g, m, 0, init);
}

static int brute_check(const keel_lc_op_t *h, size_t n)
{
    bop_t g[16];
    for (size_t i = 0; i < n; i++)
        g[i] = (bop_t){h[i], 0};
    return brute_from(g, n, 0);
}

/*
 * The sub-history of the time window [lo, hi], rebuilt independently of the
 * checker: ops invoked after hi or completed before lo go; ops still running
 * at hi may or may not have taken effect (reads and failed compares then say
 * nothing); ops that straddle lo took effect before lo or inside the window.
 */
static size_t window_history(const keel_lc_op_t *h, size_t n, int64_t lo, int64_t hi, bop_t *w)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        keel_lc_op_t o = h[i];
        if (o.outcome == KEEL_LC_FAIL || o.invoke_ts > hi)
            continue;
        if (o.outcome == KEEL_LC_OK && o.complete_ts < lo)
            continue;
        int opt = 0;
        if (o.outcome == KEEL_LC_OK && o.complete_ts > hi) {
            int effect_free = o.fn == KEEL_LC_READ || (o.fn == KEEL_LC_CAS && o.result == 0);
            o.outcome = effect_free ? KEEL_LC_FAIL : KEEL_LC_UNKNOWN;
        } else if (o.outcome == KEEL_LC_OK && o.invoke_ts < lo) {
            opt = 1;
        }
        w[m++] = (bop_t){o, opt};
    }
    return m;
}

/* Does the window have a linearization (from 0 at the start, else from some value)? */
static int window_passes(const keel_lc_op_t *h, size_t n, int64_t lo, int64_t hi)
{
    bop_t w[16];
    size_t m = window_history(h, n, lo, hi, w);
    if (lo == INT64_MIN)
        return brute_from(w, m, 0);
    /* every value random_op() uses, and 99 for any other */
    static const int64_t inits[] = {0, 1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 17, 99};
    for (size_t i = 0; i < N_(inits); i++)
        if (brute_from(w, m, inits[i]))
            return 1;
    return 0;
}

/* The reported window fails, and so does no window that is one event shorter. */
static void check_window_is_minimal(const keel_lc_op_t *h, size_t n, const keel_lc_result_t *r)
{
    int64_t lo = r->window_start_ts, hi = r->window_end_ts;
    KT_CHECK(!window_passes(h, n, lo, hi));
    int64_t next_lo = INT64_MAX, prev_hi = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        if (h[i].outcome == KEEL_LC_FAIL)
            continue;
        int64_t ev[2] = {h[i].invoke_ts, h[i].complete_ts};
        for (int j = 0; j < (h[i].outcome == KEEL_LC_OK ? 2 : 1); j++)
            if (ev[j] > lo && ev[j] <= hi && ev[j] < next_lo)
                next_lo = ev[j];
        if (h[i].outcome == KEEL_LC_OK && h[i].complete_ts < hi && h[i].complete_ts > prev_hi)
            prev_hi = h[i].complete_ts;
    }
    if (next_lo != INT64_MAX)
        KT_CHECK(window_passes(h, n, next_lo, hi));
    if (prev_hi != INT64_MIN)
        KT_CHECK(window_passes(h, n, lo, prev_hi));
}

/*
 * Values 0..2. "wide" histories also write values nobody reads (10 + p) and
 * expect 3, which nobody writes, and have more UNKNOWN ops: that exercises
 * the DEAD, twin and WILD-only reductions.
 */
static void random_op(keel_rand_t *r, keel_lc_op_t *o, uint64_t p, int wide)
{
    int64_t t0 = keel_rand_range(r, 0, 40);
    int64_t t1 = t0 + keel_rand_range(r, 0, 15);
    int64_t v = keel_rand_range(r, 0, 2);
    int64_t nv = wide && keel_rand_chance(r, 0.5) ? 10 + (int64_t)p : keel_rand_range(r, 1, 2);
    int64_t ev = wide && keel_rand_chance(r, 0.3) ? 3 : v;
    switch (keel_rand_below(r, 3)) {
    case 0:
        *o = rd(p, v, t0, t1);
        break;
    case 1:
        *o = wr(p, nv, t0, t1);
        break;
    default:
        *o = cas(p, ev, wide ? nv : keel_rand_range(r, 0, 2), (int)keel_rand_below(r, 2), t0, t1);
    }
    uint64_t k = keel_rand_below(r, 10);
    if (k < (wide ? 3u : 1u))
        o->outcome = KEEL_LC_UNKNOWN;
    else if (k == 9)
        o->outcome = KEEL_LC_FAIL;
}

static void agrees_with_brute_force(uint64_t seed, int iters, int wide)
{
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    int lin = 0, nonlin = 0;
    for (int iter = 0; iter < iters; iter++) {
        keel_lc_op_t h[8];
        size_t n = 1 + keel_rand_below(&r, 8);
        for (size_t i = 0; i < n; i++)
            random_op(&r, &h[i], i, wide);
        int want = brute_check(h, n);
        keel_lc_result_t res;
        KT_EQ_INT(keel_lincheck(h, n, NULL, &res), 0);
        if (res.verdict != want)
            KT_FAIL("iteration %d: checker says %d, brute force %d", iter, res.verdict, want);
        if (want) {
            lin++;
            continue;
        }
        nonlin++;
        /* the reported window fails and is minimal */
        KT_CHECK(res.window_minimal && res.window_len >= 1 && res.window_len <= n);
        check_window_is_minimal(h, n, &res);
        KT_CHECK(res.stuck_op < n && h[res.stuck_op].complete_ts == res.window_end_ts);
    }
    fprintf(stderr, "     %d linearizable, %d not\n", lin, nonlin);
    KT_CHECK(lin > iters / 8 && nonlin > iters / 8);
}

static void agrees_with_brute_force_on_small_random_histories(void)
{
    agrees_with_brute_force(20261122, 4000, 0);
}

static void agrees_with_brute_force_with_unread_values_and_unknown_ops(void)
{
    agrees_with_brute_force(777, 4000, 1);
}

/* ---- a large generated history --------------------------------------------------------- */

/*
 * Simulates a real linearizable register store: `clients` processes each run
 * one operation at a time on a random key, with random think times and
 * latencies (a long tail); each operation takes effect at a random instant
 * inside its interval, and results come from applying the operations in
 * that order. 1% of operations time out (UNKNOWN; half of them did take
 * effect) and 1% of writes fail cleanly (FAIL, no effect). Values are unique.
 */
typedef struct gen_ev {
    int64_t at; /* linearization instant */
    size_t op;
    int applies;
} gen_ev_t;

static int gen_ev_cmp(const void *pa, const void *pb)
{
    const gen_ev_t *a = pa, *b = pb;
    if (a->at != b->at)
        return a->at < b->at ? -1 : 1;
    return a->op < b->op ? -1 : (a->op > b->op);
}

static void generate(keel_rand_t *r, keel_lc_op_t *ops, size_t n, size_t keys, size_t clients)
{
    gen_ev_t *ev = calloc(n, sizeof(*ev));
    int64_t *clock = calloc(clients, sizeof(int64_t));
    int64_t *prev_gen = calloc(keys, sizeof(int64_t));
    int64_t *reg = calloc(keys, sizeof(int64_t));
    int64_t *last_gen = calloc(keys, sizeof(int64_t));
    KT_CHECK(ev && clock && prev_gen && reg && last_gen);
    int64_t next_value = 1;
    for (size_t i = 0; i < n; i++) {
        size_t c = keel_rand_below(r, clients), k = keel_rand_below(r, keys);
        keel_lc_op_t *o = &ops[i];
        memset(o, 0, sizeof(*o));
        o->process = c;
        o->key = k;
        o->invoke_ts = clock[c] + keel_rand_range(r, 0, 50);
        int64_t lat = keel_rand_range(r, 1, 300);
        if (keel_rand_chance(r, 0.02))
            lat *= 20;
        o->complete_ts = o->invoke_ts + lat;
        clock[c] = o->complete_ts;
        uint64_t f = keel_rand_below(r, 10);
        o->fn = f < 5 ? KEEL_LC_READ : f < 8 ? KEEL_LC_WRITE : KEEL_LC_CAS;
        o->arg = next_value++;
        /* cas expects the newest value issued on the key, sometimes the one before */
        o->expect = keel_rand_chance(r, 0.7) ? last_gen[k] : prev_gen[k];
        if (o->fn != KEEL_LC_READ) {
            prev_gen[k] = last_gen[k];
            last_gen[k] = o->arg;
        }
        ev[i] = (gen_ev_t){keel_rand_range(r, o->invoke_ts, o->complete_ts), i, 1};
        if (keel_rand_chance(r, 0.01)) {
            o->outcome = KEEL_LC_UNKNOWN;
            ev[i].applies = keel_rand_chance(r, 0.5);
        } else if (o->fn == KEEL_LC_WRITE && keel_rand_chance(r, 0.01)) {
            o->outcome = KEEL_LC_FAIL;
            ev[i].applies = 0;
        }
    }
    qsort(ev, n, sizeof(*ev), gen_ev_cmp);
    for (size_t j = 0; j < n; j++) {
        keel_lc_op_t *o = &ops[ev[j].op];
        int64_t *v = &reg[o->key];
        if (!ev[j].applies)
            continue;
        if (o->fn == KEEL_LC_READ)
            o->result = *v;
        else if (o->fn == KEEL_LC_WRITE)
            *v = o->arg;
        else if (*v == o->expect) {
            o->result = 1;
            *v = o->arg;
        }
    }
    free(ev);
    free(clock);
    free(prev_gen);
    free(reg);
    free(last_gen);
}

/* Makes one read in the middle return a value that was surely overwritten before it began. */
static size_t corrupt_one_read(keel_lc_op_t *ops, size_t n)
{
    for (size_t i = n / 2; i < n; i++) {
        keel_lc_op_t *o = &ops[i];
        if (o->fn != KEEL_LC_READ || o->outcome != KEEL_LC_OK)
            continue;
        for (size_t j = 0; j < i; j++) {
            const keel_lc_op_t *w = &ops[j];
            if (w->key != o->key || w->fn != KEEL_LC_WRITE || w->outcome != KEEL_LC_OK ||
                w->arg == o->result || w->complete_ts >= o->invoke_ts)
                continue;
            for (size_t k = j + 1; k < i; k++) {
                const keel_lc_op_t *w2 = &ops[k];
                if (w2->key == o->key && w2->fn == KEEL_LC_WRITE && w2->outcome == KEEL_LC_OK &&
                    w2->invoke_ts > w->complete_ts && w2->complete_ts < o->invoke_ts) {
                    o->result = w->arg;
                    return i;
                }
            }
        }
    }
    return SIZE_MAX;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void checks_a_generated_history_over_fifty_keys_in_seconds(void)
{
    const size_t n = 100000, keys = 50, clients = 64; /* ~0.5 s under ASan -O0 too */
    uint64_t seed = 4242;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    keel_lc_op_t *ops = malloc(n * sizeof(*ops));
    KT_CHECK(ops != NULL);
    generate(&r, ops, n, keys, clients);
    keel_lc_result_t res;
    double t0 = now_s();
    KT_EQ_INT(keel_lincheck(ops, n, NULL, &res), 0);
    double t1 = now_s();
    if (res.verdict != 1)
        KT_FAIL("generated history rejected: %s", res.explain);
    KT_EQ_U64(res.keys, keys);
    fprintf(stderr,
            "     %zu ops, %zu keys: linearizable in %.3f s (%.0f ops/s, %" PRIu64
            " states, %" PRIu64 " steps)\n",
            n, keys, t1 - t0, (double)n / (t1 - t0), res.states, res.steps);
    KT_CHECK(t1 - t0 < 20.0);

    size_t bad = corrupt_one_read(ops, n);
    KT_CHECK(bad != SIZE_MAX);
    t0 = now_s();
    KT_EQ_INT(keel_lincheck(ops, n, NULL, &res), 0);
    t1 = now_s();
    if (res.verdict != 0)
        KT_FAIL("corrupted history not rejected (verdict %d): %s", res.verdict, res.explain);
    KT_EQ_U64(res.key, ops[bad].key);
    KT_EQ_INT(res.window_minimal, 1);
    int found = 0;
    for (size_t i = 0; i < res.window_len && i < KEEL_LC_WINDOW_OPS_MAX; i++)
        found |= res.window_ops[i] == bad;
    KT_CHECK(found);
    KT_EQ_U64(res.stuck_op, bad); /* the corrupted read is the op that breaks the history */
    fprintf(stderr, "     corrupted copy rejected in %.3f s, window of %zu ops: %s\n", t1 - t0,
            res.window_len, res.explain);
    KT_CHECK(t1 - t0 < 20.0);
    free(ops);
}

int main(void)
{
    KT_RUN(sequential_writes_and_reads_are_linearizable);
    KT_RUN(empty_history_is_linearizable);
    KT_RUN(read_concurrent_with_a_write_may_see_old_or_new_value);
    KT_RUN(touching_operations_count_as_concurrent);
    KT_RUN(stale_read_after_a_newer_read_is_rejected);
    KT_RUN(stale_read_reports_the_minimal_window);
    KT_RUN(lost_write_is_rejected);
    KT_RUN(read_of_an_unwritten_value_is_rejected);
    KT_RUN(two_concurrent_cas_from_the_same_value_cannot_both_succeed);
    KT_RUN(failed_compare_is_a_read_constraint);
    KT_RUN(unknown_write_that_a_later_read_sees_is_accepted);
    KT_RUN(unknown_write_never_seen_is_accepted);
    KT_RUN(unknown_write_once_seen_cannot_be_undone);
    KT_RUN(unknown_write_cannot_take_effect_before_its_invocation);
    KT_RUN(failed_write_never_takes_effect);
    KT_RUN(unknown_cas_swaps_only_from_its_expected_value);
    KT_RUN(unknown_write_can_satisfy_a_failed_compare);
    KT_RUN(keys_are_checked_independently);
    KT_RUN(bad_input_is_refused_with_an_explanation);
    KT_RUN(search_gives_up_at_its_limit);
    KT_RUN(agrees_with_brute_force_on_small_random_histories);
    KT_RUN(agrees_with_brute_force_with_unread_values_and_unknown_ops);
    KT_RUN(checks_a_generated_history_over_fifty_keys_in_seconds);
    return kt_done();
}
