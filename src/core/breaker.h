/* breaker.h - circuit breaker: CLOSED / OPEN / HALF_OPEN over a count or time window. */
#ifndef KEEL_CORE_BREAKER_H
#define KEEL_CORE_BREAKER_H

#include "base/err.h"
#include "base/ktime.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * A circuit breaker stops sending calls to a dependency that is failing, so the
 * caller fails fast instead of queueing behind timeouts, and the dependency gets
 * room to recover. The policy follows resilience4j's CircuitBreaker
 * (resilience4j.readme.io/docs/circuitbreaker):
 *
 *                 failure rate >= threshold (over >= calls_min calls)
 *                 or slow-call rate >= threshold
 *                 or consecutive failures >= consecutive_failures_max
 *      +--------+ ------------------------------------------> +------+
 *      | CLOSED |                                              | OPEN |
 *      +--------+ <--+                                         +------+
 *          ^         | probes_max probes succeeded                 |  ^
 *          |         | and slow rate < threshold                   |  |
 *          |    +-----------+   open_ms elapsed (next allow())     |  |
 *          |    | HALF_OPEN | <------------------------------------+  |
 *          |    +-----------+ -----------------------------------------+
 *          |                  any probe failure, or all probes done and
 *          |                  slow-call rate >= threshold
 *          |
 *   keel_breaker_force(): FORCED_OPEN (rejects everything) and DISABLED
 *   (admits everything, records nothing) are operator modes; forcing NORMAL
 *   returns to a fresh CLOSED.
 *
 * Knobs (defaults from keel_breaker_config_default(), resilience4j's defaults
 * where it has one):
 *   window_kind             COUNT: the last window_calls calls; TIME: the calls of
 *                           the last window_ms, kept in window_buckets buckets.
 *   window_calls            100 calls (COUNT window size).
 *   window_ms               60000 ms (TIME window size), window_buckets 60.
 *   calls_min               100 calls: rates are not judged on fewer calls.
 *   failure_rate_pct        50 %: trips when failures*100 >= pct*calls (so exactly
 *                           at the threshold trips, as in resilience4j).
 *   consecutive_failures_max 0 (off): trips on this many failures in a row.
 *   slow_call_rate_pct      0 (off; resilience4j: 100): trips when slow*100 >= pct*calls.
 *   slow_call_ms            60000 ms: a call at least this long is slow.
 *   open_ms                 60000 ms spent OPEN before probing.
 *   probes_max              10 calls admitted in HALF_OPEN (in flight or done).
 *
 * Usage: `p = keel_breaker_allow(b, now_ms)`; if p < 0 the call is rejected
 * (KEEL_EREJECTED). Otherwise make the call and report it with
 * `keel_breaker_record(b, now_ms, p, outcome, duration_ms)`. The permit p names
 * the breaker epoch the call was admitted in: results of calls admitted before
 * the last state change are stale and are not counted, so a slow success
 * from the CLOSED era cannot close a breaker that is probing (each HALF_OPEN
 * period starts with fresh probe slots). A caller that drops a call without an
 * outcome reports KEEL_BREAKER_IGNORED, which frees its probe slot.
 *
 * Time moves only through now_ms (monotonic, non-decreasing). Memory: one
 * byte per COUNT-window slot or 12 bytes per TIME bucket, allocated at init.
 */

typedef enum keel_breaker_state {
    KEEL_BREAKER_CLOSED,
    KEEL_BREAKER_OPEN,
    KEEL_BREAKER_HALF_OPEN,
    KEEL_BREAKER_FORCED_OPEN,
    KEEL_BREAKER_DISABLED,
} keel_breaker_state_t;

typedef enum keel_breaker_window_kind {
    KEEL_BREAKER_WINDOW_COUNT,
    KEEL_BREAKER_WINDOW_TIME,
} keel_breaker_window_kind_t;

typedef enum keel_breaker_outcome {
    KEEL_BREAKER_SUCCESS,
    KEEL_BREAKER_FAILURE,
    KEEL_BREAKER_IGNORED, /* neither: frees a probe slot, counts nothing */
} keel_breaker_outcome_t;

typedef enum keel_breaker_mode {
    KEEL_BREAKER_MODE_NORMAL,
    KEEL_BREAKER_MODE_FORCED_OPEN,
    KEEL_BREAKER_MODE_DISABLED,
} keel_breaker_mode_t;

#define KEEL_BREAKER_WINDOW_CALLS_MAX 100000u
#define KEEL_BREAKER_WINDOW_BUCKETS_MAX 3600u

/* Called on every state change, after it happened. */
typedef void (*keel_breaker_transition_cb)(void *data, keel_breaker_state_t from,
                                           keel_breaker_state_t to, keel_ms_t now_ms);

typedef struct keel_breaker_config {
    keel_breaker_window_kind_t window_kind;
    uint32_t window_calls;
    keel_ms_t window_ms;
    uint32_t window_buckets;
    uint32_t calls_min;
    uint32_t failure_rate_pct;
    uint32_t consecutive_failures_max;
    uint32_t slow_call_rate_pct;
    keel_ms_t slow_call_ms;
    keel_ms_t open_ms;
    uint32_t probes_max;
    keel_breaker_transition_cb on_transition; /* may be NULL */
    void *on_transition_data;
} keel_breaker_config_t;

/* Counters for metrics; monotonically increasing except in_window_*. */
typedef struct keel_breaker_stats {
    uint64_t calls_permitted;
    uint64_t calls_rejected;
    uint64_t successes;
    uint64_t failures;
    uint64_t slow_calls;
    uint64_t stale_results;
    uint64_t transitions;
    uint32_t window_calls;    /* calls in the current window */
    uint32_t window_failures; /* failures in the current window */
    uint32_t window_slow;     /* slow calls in the current window */
} keel_breaker_stats_t;

typedef struct keel__breaker_bucket {
    uint32_t calls, failures, slow;
} keel__breaker_bucket_t;

typedef struct keel_breaker {
    keel_breaker_config_t cfg;
    keel_breaker_state_t state;
    uint32_t epoch; /* bumped on every state change; permits carry it */
    keel_ms_t open_until_ms;
    /* window */
    uint8_t *ring;                   /* COUNT: per call bit0 failure, bit1 slow, bit7 used */
    keel__breaker_bucket_t *buckets; /* TIME */
    uint32_t ring_next;
    keel_ms_t bucket_ms;
    int64_t head_slot;              /* TIME: now_ms / bucket_ms of the newest bucket */
    uint32_t calls, failures, slow; /* totals over the window */
    uint32_t consecutive_failures;
    /* half-open */
    uint32_t probes_admitted, probes_done, probes_slow;
    keel_breaker_stats_t stats;
} keel_breaker_t;

void keel_breaker_config_default(keel_breaker_config_t *cfg);
int keel_breaker_config_validate(const keel_breaker_config_t *cfg, keel_errmsg_t *msg);

/* Allocates the window; returns 0, KEEL_EINVAL (bad config, msg says why) or KEEL_ENOMEM. */
int keel_breaker_init(keel_breaker_t *b, const keel_breaker_config_t *cfg, keel_errmsg_t *msg);
void keel_breaker_free(keel_breaker_t *b);

/* A permit (>= 0) if the call may proceed, else KEEL_EREJECTED. */
int keel_breaker_allow(keel_breaker_t *b, keel_ms_t now_ms);
/* Reports the outcome of a call admitted with `permit`. */
void keel_breaker_record(keel_breaker_t *b, keel_ms_t now_ms, int permit,
                         keel_breaker_outcome_t outcome, keel_ms_t duration_ms);
/* Operator override; every mode change resets the window. */
void keel_breaker_force(keel_breaker_t *b, keel_breaker_mode_t mode, keel_ms_t now_ms);

/* State as of the last call (an OPEN breaker becomes HALF_OPEN on the next allow()). */
keel_breaker_state_t keel_breaker_state(const keel_breaker_t *b);
/* When the breaker next changes state on its own (end of OPEN), or KEEL_MS_NEVER. */
keel_ms_t keel_breaker_next_deadline_ms(const keel_breaker_t *b);
void keel_breaker_stats(const keel_breaker_t *b, keel_breaker_stats_t *out);
const char *keel_breaker_state_name(keel_breaker_state_t s);

#endif
