/* lincheck.h - linearizability checker for histories of per-key read/write/cas registers. */
#ifndef KEEL_CORE_LINCHECK_H
#define KEEL_CORE_LINCHECK_H

#include <stddef.h>
#include <stdint.h>

/*
 * Model: every key is an independent register whose initial value is 0
 * ("absent"). Operations are read, write and compare-and-set. A history is
 * checked key by key (linearizability is compositional: Herlihy & Wing 1990,
 * "P-compositionality" in Lowe 2017), each key with the Wing-Gong-Lowe
 * backtracking search (G. Lowe, "Testing for linearizability", CCPE 2017),
 * memoizing (set of linearized operations, register value) pairs as the
 * Porcupine checker does, so that each configuration is explored at most once.
 * Work per key is bounded by keel_lc_limits_t; past a bound the checker gives
 * up with a clear code rather than running forever. Pure: no I/O, no clock.
 * See docs/lincheck.md for the input format of the command-line tool and for
 * exactly what the "minimal failing window" is.
 */

typedef enum { KEEL_LC_READ, KEEL_LC_WRITE, KEEL_LC_CAS } keel_lc_fn_t;

/*
 * OK: completed and its result is known. FAIL: definitely did not take effect
 * (dropped). UNKNOWN: may or may not have taken effect, at any time after its
 * invocation (Jepsen's :info); complete_ts is ignored. An UNKNOWN read is
 * dropped (it constrains nothing).
 */
typedef enum { KEEL_LC_OK, KEEL_LC_FAIL, KEEL_LC_UNKNOWN } keel_lc_outcome_t;

/*
 * One operation: its invocation paired with its completion. Values are
 * interned to int64 by the caller; 0 means absent (nil). INT64_MIN is
 * reserved (the checker uses it internally) and rejected as a value.
 * A CAS with outcome OK and result 0 observed "current != expect": it is a
 * read constraint, not a no-op. Timestamps are in any unit; only their order
 * matters. Two operations whose end and start timestamps are equal are taken
 * as concurrent.
 */
typedef struct keel_lc_op {
    uint64_t process; /* client id, used only in explanations */
    uint64_t key;
    keel_lc_fn_t fn;
    keel_lc_outcome_t outcome;
    int64_t arg;         /* write: value written; cas: new value */
    int64_t expect;      /* cas: expected value */
    int64_t result;      /* read: value seen; cas: 1 swapped, 0 compare failed */
    int64_t invoke_ts;   /* when the client sent it */
    int64_t complete_ts; /* when the client saw the answer; >= invoke_ts; ignored if UNKNOWN */
} keel_lc_op_t;

/*
 * Bounds on the work for one key (each search: the whole key, and each of the
 * smaller searches that shrink the failing window). Memory of one search is
 * about states_max * (40 + 4 * concurrency) bytes.
 */
typedef struct keel_lc_limits {
    uint64_t steps_max;     /* search steps (attempts to linearize an operation) per search */
    uint64_t states_max;    /* memoized configurations per search */
    size_t ops_per_key_max; /* operations on one key; more is KEEL_ETOOBIG */
} keel_lc_limits_t;

/* How many op indices of the failing window keel_lc_result_t carries. */
#define KEEL_LC_WINDOW_OPS_MAX 64
#define KEEL_LC_EXPLAIN_BYTES_MAX 512

typedef struct keel_lc_result {
    /* 1 linearizable, 0 not linearizable, negative KEEL_E* if the checker gave
     * up (KEEL_ETOOBIG: a limit was reached on some key and no key failed). */
    int verdict;
    uint64_t key; /* the failing key (verdict 0) or the key that hit a limit */
    /* The failing window (verdict 0): a time window [window_start_ts,
     * window_end_ts] of `key` that is not linearizable on its own, and its
     * operations as indices into the caller's ops[], ordered by invocation
     * (if more than KEEL_LC_WINDOW_OPS_MAX, only the first ones are listed).
     * window_minimal is 1 when shrinking finished: no time window strictly
     * inside it fails; it usually also ends at the earliest point where the
     * history stopped being linearizable (docs/lincheck.md says exactly
     * when). 0 when a limit or the shrinking budget stopped it early; the
     * window still fails. */
    size_t window_ops[KEEL_LC_WINDOW_OPS_MAX];
    size_t window_len;       /* operations in the window (may exceed the list) */
    int64_t window_start_ts; /* INT64_MIN: from the start of the history */
    int64_t window_end_ts;
    int window_minimal;
    /* The operation that cannot be placed (an index into ops[]; SIZE_MAX if
     * none): when the window is minimal, an op whose completion at
     * window_end_ts left the window without a linearization (the one the
     * search got stuck on, if several complete then); otherwise where the
     * deepest search got stuck, if that op is in the window. */
    size_t stuck_op;
    /* Statistics, summed over all keys and searches. */
    uint64_t keys;
    uint64_t ops_checked; /* ops that took part (not FAIL, UNKNOWN reads, pruned UNKNOWN ops) */
    uint64_t steps;
    uint64_t states;
    char explain[KEEL_LC_EXPLAIN_BYTES_MAX]; /* one human sentence or two */
} keel_lc_result_t;

void keel_lc_limits_default(keel_lc_limits_t *lim);

/*
 * Checks whether ops[0..n) is linearizable. ops need not be sorted. lim may be
 * NULL (defaults). Returns 0 when a verdict (or a give-up) is in out->verdict,
 * or a negative KEEL_E* for bad input (KEEL_EINVAL: out-of-range enum, an OK or
 * FAIL op that completes before it is invoked, INT64_MIN as a value; the
 * explanation names the op) or KEEL_ENOMEM; then out->verdict holds the same
 * code. Deterministic: the same input gives the same result.
 */
int keel_lincheck(const keel_lc_op_t *ops, size_t n, const keel_lc_limits_t *lim,
                  keel_lc_result_t *out);

/* "read", "write", "cas"; "ok", "fail", "unknown". */
const char *keel_lc_fn_name(keel_lc_fn_t fn);
const char *keel_lc_outcome_name(keel_lc_outcome_t outcome);

#endif
