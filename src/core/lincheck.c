/* lincheck.c - Wing-Gong-Lowe linearizability search with memoization, one register per key:
   validation, keys, the failing window and its report (preparing a key: lincheck_prep.c;
   the search: lincheck_search.c). */
#include "core/lincheck_int.h"

#include "base/err.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How a check runs (docs/lincheck.md has the long form):
 *
 * 1. Validate, then group the operations by key (linearizability is
 *    compositional, so each key is checked alone).
 * 2. For one key, "prepare" a sub-history (lincheck_prep.c): drop FAIL ops
 *    and UNKNOWN reads, classify the rest (pkind, lincheck_int.h), simplify
 *    values nobody observes (simplify_unobserved(), drop_wild_only()) and
 *    turn values into ids.
 * 3. Sort invocation and completion events by time (invocation first on a
 *    tie: touching operations are concurrent) into a doubly linked list and
 *    run the WGL search (lincheck_search.c): repeatedly take the first
 *    pending invocation that the register model accepts, "lift" it out of
 *    the list, and backtrack when a completion event is reached (that
 *    operation can no longer be placed). UNKNOWN operations have no
 *    completion event, so they can be placed at any point after their
 *    invocation or never; the search ends successfully once every definite
 *    operation is placed.
 * 4. Memoization: a configuration is (set of placed ops, register value).
 *    Every placed op was invoked before the first completion event T still
 *    in the list, so the set is exactly "all ops invoked before T minus the
 *    invocations still in the list before T". That gives an exact key of
 *    size O(concurrency) instead of an O(n) bitset (Porcupine stores the
 *    bitset): (value, position of T, ids of the pending invocations).
 * 5. Exact reductions keep busy keys tractable: forced reads
 *    (find_forced()), lost values (value_lost()), interchangeable UNKNOWN
 *    ops (find_twins()). tests/unit/test_lincheck.c checks each against a
 *    brute-force oracle.
 * 6. If a key fails, shrink a failing time window (find_window()).
 */

const char *keel_lc_fn_name(keel_lc_fn_t fn)
{
    switch (fn) {
    case KEEL_LC_READ:
        return "read";
    case KEEL_LC_WRITE:
        return "write";
    case KEEL_LC_CAS:
        return "cas";
    }
    return "?";
}

const char *keel_lc_outcome_name(keel_lc_outcome_t outcome)
{
    switch (outcome) {
    case KEEL_LC_OK:
        return "ok";
    case KEEL_LC_FAIL:
        return "fail";
    case KEEL_LC_UNKNOWN:
        return "unknown";
    }
    return "?";
}

void keel_lc_limits_default(keel_lc_limits_t *lim)
{
    lim->steps_max = 50 * 1000 * 1000;
    lim->states_max = 2 * 1000 * 1000;
    lim->ops_per_key_max = 10 * 1000 * 1000;
}

/* ---- one key -------------------------------------------------------------------------------- */

typedef struct keyctx {
    const keel_lc_op_t *ops;
    const uint32_t *idx; /* this key's ops, in input order */
    size_t m;
    search_t *s;
    int64_t *scratch;
    keel_lc_result_t *out;
    uint64_t budget; /* search steps left for shrinking the failing window */
    int cut_short;   /* a window check hit a limit or the budget */
} keyctx_t;

static int run_counted(keyctx_t *k, int64_t init, int *lin)
{
    int rc = keel__lc_search_run(k->s, init, lin);
    k->out->steps += k->s->steps;
    k->out->states += k->s->states;
    return rc;
}

/*
 * Checks the key's ops inside [lo, hi]; *lin = 1/0, or a negative KEEL_E*.
 * From a cut (lo > INT64_MIN) the register starts as WILD, "some value".
 */
static int check_window(keyctx_t *k, int64_t lo, int64_t hi, int *lin)
{
    keel__lc_prepare(k->s, k->ops, k->idx, k->m, lo, hi, k->scratch);
    return run_counted(k, lo == INT64_MIN ? k->s->zero_id : k->s->nvals, lin);
}

/*
 * Window [lo, hi] fails: 1, passes: 0, unknown: 2 (a limit or the shrinking
 * budget stopped the search; sets cut_short), or a negative KEEL_E*.
 */
static int window_fails(keyctx_t *k, int64_t lo, int64_t hi)
{
    if (k->budget == 0) {
        k->cut_short = 1;
        return 2;
    }
    const keel_lc_limits_t *lim = k->s->lim;
    keel_lc_limits_t probe = *lim;
    probe.steps_max = k->budget < lim->steps_max ? k->budget : lim->steps_max;
    k->s->lim = &probe;
    int lin, rc = check_window(k, lo, hi, &lin);
    k->s->lim = lim;
    k->budget -= k->s->steps < k->budget ? k->s->steps : k->budget;
    if (rc == KEEL_ETOOBIG) {
        k->cut_short = 1;
        return 2;
    }
    return rc < 0 ? rc : !lin;
}

/* Distinct sorted event times in [from, hi] (completions only, or invocations too). */
static size_t event_times(const keyctx_t *k, int64_t from, int64_t hi, int completions_only,
                          int64_t *t)
{
    size_t nt = 0;
    for (size_t j = 0; j < k->m; j++) {
        const keel_lc_op_t *o = &k->ops[k->idx[j]];
        if (o->outcome == KEEL_LC_FAIL)
            continue;
        if (!completions_only && o->invoke_ts >= from && o->invoke_ts <= hi)
            t[nt++] = o->invoke_ts;
        if (o->outcome == KEEL_LC_OK && o->complete_ts >= from && o->complete_ts <= hi)
            t[nt++] = o->complete_ts;
    }
    return keel__lc_uniq_i64(t, nt);
}

/*
 * The latest cut lo in (floor, hi] such that [lo, hi] fails, or floor itself
 * (*found = 1 either way), or *found = 0 if not even [floor, hi] fails.
 * floor_fails: [floor, hi] is already known to fail. Small windows are the
 * cheap ones, so it gallops back from hi (1, 2, 4, ... events) and then
 * bisects between the last passing and the first failing cut. A check that
 * ends unknown stops it at the latest cut known to fail.
 */
static int latest_failing_lo(keyctx_t *k, int64_t floor, int floor_fails, int64_t hi, int64_t *lo,
                             int *found)
{
    int64_t *t = k->scratch + k->m; /* scratch holds 3 * m values */
    size_t nt = event_times(k, floor == INT64_MIN ? INT64_MIN : floor + 1, hi, 0, t);
    size_t pass = nt, step = 1; /* cuts at index >= pass are known to pass */
    long fail = -1;             /* largest index known to fail; -1: floor */
    int f = 0;
    while (fail < 0 && pass > 0 && f != 2) {
        size_t j = pass > step ? pass - step : 0;
        if ((f = window_fails(k, t[j], hi)) < 0)
            return f;
        if (f == 1)
            fail = (long)j;
        else if (f == 0)
            pass = j;
        step *= 2;
    }
    if (fail < 0 && !floor_fails && (f = window_fails(k, floor, hi)) != 1) {
        *found = 0;
        return f < 0 ? f : 0;
    }
    while ((size_t)(fail + 1) < pass && f != 2) {
        size_t mid = (size_t)(fail + 1) + (pass - (size_t)(fail + 1)) / 2;
        if ((f = window_fails(k, t[mid], hi)) < 0)
            return f;
        if (f == 1)
            fail = (long)mid;
        else if (f == 0)
            pass = mid;
    }
    *found = 1;
    *lo = fail < 0 ? floor : t[fail];
    return 0;
}

/* The earliest completion time c in [lo, hi] such that [lo, c] fails ([lo, hi] does). */
static int earliest_failing_hi(keyctx_t *k, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t *t = k->scratch + k->m;
    size_t nt = event_times(k, lo, hi, 1, t);
    size_t a = 0, b = nt; /* answer in t[a..b); b == nt: hi itself */
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        int f = window_fails(k, lo, t[mid]);
        if (f < 0)
            return f;
        if (f == 2)
            break;
        if (f)
            b = mid;
        else
            a = mid + 1;
    }
    *out = b < nt ? t[b] : hi;
    return 0;
}

/*
 * The earliest completion time t such that the history up to t (from the
 * start) fails, by bisection, as far as the budget allows (these searches
 * must exhaust every configuration up to t, which is costly on keys with many
 * concurrent ops). Returns in *hi the earliest t known to fail (INT64_MAX:
 * the whole key).
 */
static int earliest_failing_prefix(keyctx_t *k, int64_t *hi)
{
    int64_t *t = k->scratch + k->m;
    size_t nt = event_times(k, INT64_MIN, INT64_MAX, 1, t);
    size_t a = 0, b = nt;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        int f = window_fails(k, INT64_MIN, t[mid]);
        if (f < 0)
            return f;
        if (f == 2)
            break;
        if (f)
            b = mid;
        else
            a = mid + 1;
    }
    *hi = b < nt ? t[b] : INT64_MAX;
    return 0;
}

/*
 * Shrinks the failing window of a key known to fail, to one that fails while
 * no time window strictly inside it does. Failure is monotone (if [lo, hi]
 * has a linearization, so does every window inside it: cut the linearization
 * at the two times; keel__lc_prepare() is exact), so each end is found by bisection:
 *   1. hi = the earliest end of a failing prefix of the history, as far as
 *      half the budget allows (else a later end known to fail);
 *   2. lo = the latest cut with [lo, hi] failing (small windows first);
 *   3. hi = the earliest completion with [lo, hi] failing (when step 1 ran
 *      to the end, hi stays);
 *   4. lo = the latest cut with [lo, hi] failing, again.
 * Then [lo, hi] fails, [next cut after lo, hi] passes (step 4) and [lo,
 * previous completion before hi] passes (it lies inside a window that passed
 * in step 3). The budget is max(SHRINK_STEPS_MIN, 4 x the full search) steps
 * in all; *minimal = 0 if it or a limit cut steps 2-4 short; the window
 * reported then is still one that was seen to fail.
 */
#define SHRINK_STEPS_MIN (20 * 1000 * 1000)

static int find_window(keyctx_t *k, uint64_t full_steps, int64_t *lo_out, int64_t *hi_out,
                       int *minimal)
{
    int64_t lo = INT64_MIN, hi;
    int found, rc;
    uint64_t budget = 4 * full_steps > SHRINK_STEPS_MIN ? 4 * full_steps : SHRINK_STEPS_MIN;
    k->budget = budget / 2;
    if ((rc = earliest_failing_prefix(k, &hi)) < 0)
        return rc;
    k->budget += budget - budget / 2;
    k->cut_short = 0;
    if ((rc = latest_failing_lo(k, INT64_MIN, 1, hi, &lo, &found)) < 0)
        return rc;
    if ((rc = earliest_failing_hi(k, lo, hi, &hi)) < 0)
        return rc;
    if ((rc = latest_failing_lo(k, lo, 1, hi, &lo, &found)) < 0)
        return rc;
    *lo_out = lo;
    *hi_out = hi;
    *minimal = !k->cut_short;
    return 0;
}

/* ---- the whole history ---------------------------------------------------------------------- */

static int validate(const keel_lc_op_t *ops, size_t n, keel_lc_result_t *out)
{
    for (size_t i = 0; i < n; i++) {
        const keel_lc_op_t *o = &ops[i];
        const char *why = NULL;
        if ((unsigned)o->fn > KEEL_LC_CAS || (unsigned)o->outcome > KEEL_LC_UNKNOWN)
            why = "fn or outcome out of range";
        else if (o->outcome != KEEL_LC_UNKNOWN && o->complete_ts < o->invoke_ts)
            why = "completes before it is invoked";
        else if ((o->fn != KEEL_LC_READ && o->arg == DEAD) ||
                 (o->fn == KEEL_LC_CAS && o->expect == DEAD) ||
                 (o->fn == KEEL_LC_READ && o->result == DEAD))
            why = "uses the reserved value INT64_MIN";
        else if (o->fn == KEEL_LC_CAS && o->outcome == KEEL_LC_OK && o->result != 0 &&
                 o->result != 1)
            why = "is a cas whose result is neither 0 nor 1";
        if (why != NULL) {
            snprintf(out->explain, sizeof(out->explain), "bad input: op %zu %s", i, why);
            return KEEL_EINVAL;
        }
    }
    return 0;
}

typedef struct keyidx {
    uint64_t key;
    uint32_t idx;
} keyidx_t;

static int keyidx_cmp(const void *pa, const void *pb)
{
    const keyidx_t *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int pop_call_cmp(const void *pa, const void *pb)
{
    const pop_t *a = pa, *b = pb;
    if (a->call != b->call)
        return a->call < b->call ? -1 : 1;
    return a->orig < b->orig ? -1 : (a->orig > b->orig);
}

static void describe_failure(keyctx_t *k, uint64_t key, int64_t lo, int64_t hi)
{
    keel_lc_result_t *out = k->out;
    char from[48];
    if (lo == INT64_MIN)
        snprintf(from, sizeof(from), "the start (initial value 0)");
    else
        snprintf(from, sizeof(from), "%" PRId64 " (any initial value)", lo);
    int len = snprintf(out->explain, sizeof(out->explain),
                       "key %" PRIu64 ": not linearizable: the %zu operations in the time window "
                       "from %s to %" PRId64 " have no order a single register allows%s",
                       key, out->window_len, from, hi,
                       out->window_minimal ? "" : " (window not fully shrunk: a limit was hit)");
    if (out->stuck_op != SIZE_MAX && len > 0 && (size_t)len < sizeof(out->explain)) {
        const keel_lc_op_t *o = &k->ops[out->stuck_op];
        snprintf(out->explain + len, sizeof(out->explain) - (size_t)len,
                 "; op %zu (process %" PRIu64
                 ", %s) cannot be placed before it completes at %" PRId64,
                 out->stuck_op, o->process, keel_lc_fn_name(o->fn), o->complete_ts);
    }
}

/* The key fails: shrink the window, list its ops, say which op got stuck. */
static int report_failure(keyctx_t *k, uint64_t key)
{
    keel_lc_result_t *out = k->out;
    search_t *s = k->s;
    out->verdict = 0;
    out->key = key;
    out->stuck_op = s->stuck_pop == UINT32_MAX ? SIZE_MAX : s->pops[s->stuck_pop].orig;
    int64_t lo, hi;
    int minimal, lin;
    int rc = find_window(k, s->steps, &lo, &hi, &minimal);
    if (rc < 0)
        return rc;
    if (minimal) { /* small: search it again for the op it gets stuck on */
        rc = check_window(k, lo, hi, &lin);
        if (rc < 0 && rc != KEEL_ETOOBIG)
            return rc;
        if (rc == 0 && !lin && s->stuck_pop != UINT32_MAX)
            out->stuck_op = s->pops[s->stuck_pop].orig;
    } else {
        keel__lc_prepare(s, k->ops, k->idx, k->m, lo, hi, k->scratch);
        int inside = 0; /* name the full search's stuck op only if it is in the window */
        for (uint32_t i = 0; i < s->npops; i++)
            inside |= s->pops[i].orig == out->stuck_op;
        if (!inside)
            out->stuck_op = SIZE_MAX;
    }
    /* When the window is minimal, [lo, just before hi] had a linearization:
     * an op completing at hi is the one that broke it. */
    int stuck_ends_at_hi = out->stuck_op != SIZE_MAX && k->ops[out->stuck_op].complete_ts == hi &&
                           k->ops[out->stuck_op].outcome == KEEL_LC_OK;
    for (uint32_t i = 0; i < s->npops && minimal && !stuck_ends_at_hi; i++)
        if (s->pops[i].ret == hi) {
            out->stuck_op = s->pops[i].orig;
            stuck_ends_at_hi = 1;
        }
    qsort(s->pops, s->npops, sizeof(pop_t), pop_call_cmp);
    out->window_len = s->npops;
    for (uint32_t i = 0; i < s->npops && i < KEEL_LC_WINDOW_OPS_MAX; i++)
        out->window_ops[i] = s->pops[i].orig;
    out->window_start_ts = lo;
    out->window_end_ts = hi;
    out->window_minimal = minimal;
    describe_failure(k, key, lo, hi);
    return 0;
}

/* Checks every key until one fails; remembers the first key that hit a limit. */
static int check_keys(const keel_lc_op_t *ops, const keyidx_t *kv, uint32_t *idx, size_t n,
                      search_t *s, keel_lc_result_t *out)
{
    int64_t *scratch = NULL;
    int rc = 0, gave_up = 0;
    for (size_t a = 0, b; a < n; a = b) {
        for (b = a; b < n && kv[b].key == kv[a].key; b++)
            idx[b - a] = kv[b].idx;
        size_t m = b - a;
        out->keys++;
        if (m > s->lim->ops_per_key_max || m > OPS_PER_KEY_HARD_MAX) {
            if (!gave_up++)
                out->key = kv[a].key;
            continue;
        }
        free(scratch);
        scratch = malloc(3 * m * sizeof(int64_t));
        if (scratch == NULL || keel__lc_search_reserve(s, m) < 0) {
            rc = KEEL_ENOMEM;
            break;
        }
        keyctx_t k = {ops, idx, m, s, scratch, out, 0, 0};
        int lin;
        rc = check_window(&k, INT64_MIN, INT64_MAX, &lin);
        out->ops_checked += s->npops;
        if (rc == KEEL_ETOOBIG) {
            if (!gave_up++)
                out->key = kv[a].key;
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        if (!lin) {
            rc = report_failure(&k, kv[a].key);
            break;
        }
    }
    free(scratch);
    if (rc == 0 && out->verdict != 0 && gave_up) {
        out->verdict = KEEL_ETOOBIG;
        snprintf(out->explain, sizeof(out->explain),
                 "gave up: %d key(s) hit a limit (first: key %" PRIu64 "; steps_max %" PRIu64
                 ", states_max %" PRIu64 ", ops_per_key_max %zu); no key was found "
                 "non-linearizable",
                 gave_up, out->key, s->lim->steps_max, s->lim->states_max, s->lim->ops_per_key_max);
    }
    return rc;
}

int keel_lincheck(const keel_lc_op_t *ops, size_t n, const keel_lc_limits_t *lim,
                  keel_lc_result_t *out)
{
    keel_lc_limits_t dflt;
    if (lim == NULL) {
        keel_lc_limits_default(&dflt);
        lim = &dflt;
    }
    memset(out, 0, sizeof(*out));
    out->stuck_op = SIZE_MAX;
    out->verdict = 1;
    int rc = validate(ops, n, out);
    if (rc == 0 && n >= UINT32_MAX)
        rc = KEEL_ETOOBIG;
    if (rc < 0)
        goto done;
    keyidx_t *kv = malloc((n ? n : 1) * sizeof(*kv));
    uint32_t *idx = malloc((n ? n : 1) * sizeof(*idx));
    if (kv == NULL || idx == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_alloc;
    }
    for (size_t i = 0; i < n; i++)
        kv[i] = (keyidx_t){ops[i].key, (uint32_t)i};
    qsort(kv, n, sizeof(*kv), keyidx_cmp);
    search_t s = {.lim = lim};
    rc = check_keys(ops, kv, idx, n, &s, out);
    keel__lc_search_free(&s);
    if (rc == 0 && out->verdict == 1)
        snprintf(out->explain, sizeof(out->explain),
                 "linearizable: %" PRIu64 " operations on %" PRIu64 " keys", out->ops_checked,
                 out->keys);
err_after_alloc:
    free(kv);
    free(idx);
done:
    if (rc < 0) {
        out->verdict = rc;
        if (out->explain[0] == '\0')
            snprintf(out->explain, sizeof(out->explain), "error: %s", keel_strerror(rc));
    }
    return rc;
}
