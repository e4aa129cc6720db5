/* retry.h - retry policy: capped exponential backoff with jitter, deadlines, retry-on, budget. */
#ifndef KEEL_CORE_RETRY_H
#define KEEL_CORE_RETRY_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Decides whether a failed attempt is tried again, when, and with what
 * per-try timeout. Three things make retries safe rather than harmful:
 *
 * 1. Backoff with jitter (Marc Brooker, "Exponential Backoff And Jitter", AWS
 *    Architecture Blog, 2015). The ceiling for retry n (n = 0 for the first
 *    retry) is c(n) = min(backoff_cap_ms, backoff_base_ms * 2^n); the delay is
 *      NONE   c(n)
 *      FULL   uniform in [0, c(n)]                 (the article's recommendation)
 *      EQUAL  c(n)/2 + uniform in [0, c(n)/2]
 * 2. Deadlines. A call has an overall deadline; no attempt is ever scheduled to
 *    start at or after it, and each attempt's timeout is
 *    min(per_try_timeout_ms, deadline - start), so the last try cannot
 *    overrun (Envoy's per_try_timeout inside the route timeout).
 * 3. A retry budget shared by all calls of one policy object (Finagle's
 *    RetryBudget, Envoy's retry_budget): over the last budget_window_ms,
 *    retries <= budget_floor + budget_pct% of first attempts, where the floor is
 *    budget_retries_min_per_s * window in seconds, so a low-traffic client can
 *    still retry. Under a sustained outage this caps the extra load at budget_pct%
 *    instead of multiplying it by attempts_max.
 *
 * Retry-on classes (bit mask, in the spirit of Envoy's x-envoy-retry-on):
 *   CONNECT_FAILURE  the connection was never made: the request was not sent.
 *   RESET            the connection broke after the request may have been sent.
 *   TIMEOUT          the per-try timeout fired.
 *   STATUS_5XX       any 500..599 response.
 *   GATEWAY_ERROR    502, 503, 504 only.
 *   STATUS_503       503 only (the server said "try elsewhere/later").
 * With idempotent_only set, a request whose method is not idempotent (RFC 9110
 * §9.2.2: POST, PATCH) is retried only after CONNECT_FAILURE, because only
 * then is it certain the server never saw it.
 *
 * Knobs and defaults (keel_retry_config_default): attempts_max 3 (first try
 * included), backoff_base_ms 25, backoff_cap_ms 1000, jitter FULL,
 * per_try_timeout_ms 0 (none: only the deadline), retry_on CONNECT_FAILURE|
 * RESET|GATEWAY_ERROR, idempotent_only true, budget_pct 20,
 * budget_retries_min_per_s 10, budget_window_ms 10000 (in 10 buckets).
 *
 *   attempt n fails ──not in retry_on──────────────────────────────> DONE
 *        │          ──n == attempts_max / not idempotent / start >= deadline
 *        │            / budget spent──────────────────────────────────> GIVE_UP(reason)
 *        └──otherwise──> RETRY(start_ms = now + backoff(n-1), try_timeout_ms) ──> attempt n+1
 *
 * Per call:   keel_retry_begin(p, &call, now_ms, deadline_ms)  -> first try timeout
 *             ... attempt fails with outcome o ...
 *             keel_retry_next(p, &call, now_ms, &o, rand, &d)  -> d.verdict
 *   RETRY:    wait until d.start_ms, run the attempt with timeout d.try_timeout_ms
 *   GIVE_UP:  d.reason says why (attempts, deadline, budget, not retryable)
 * The policy object never reads a clock; randomness comes from the caller's PRNG.
 */

enum {
    KEEL_RETRY_ON_CONNECT_FAILURE = 1u << 0,
    KEEL_RETRY_ON_RESET = 1u << 1,
    KEEL_RETRY_ON_TIMEOUT = 1u << 2,
    KEEL_RETRY_ON_5XX = 1u << 3,
    KEEL_RETRY_ON_GATEWAY_ERROR = 1u << 4,
    KEEL_RETRY_ON_503 = 1u << 5,
};

typedef enum keel_retry_jitter {
    KEEL_RETRY_JITTER_NONE,
    KEEL_RETRY_JITTER_FULL,
    KEEL_RETRY_JITTER_EQUAL,
} keel_retry_jitter_t;

typedef enum keel_retry_failure {
    KEEL_RETRY_FAIL_NONE, /* a response came back: look at http_status */
    KEEL_RETRY_FAIL_CONNECT,
    KEEL_RETRY_FAIL_RESET,
    KEEL_RETRY_FAIL_TIMEOUT,
} keel_retry_failure_t;

/* What happened to one attempt. */
typedef struct keel_retry_outcome {
    keel_retry_failure_t failure;
    int http_status; /* when failure == NONE; 0 if not HTTP */
    bool idempotent; /* the request's method is idempotent (GET, PUT, DELETE, ...) */
} keel_retry_outcome_t;

typedef enum keel_retry_verdict {
    KEEL_RETRY_DONE,    /* the outcome was a success or a non-retryable answer */
    KEEL_RETRY_RETRY,   /* try again at start_ms */
    KEEL_RETRY_GIVE_UP, /* retryable, but a limit forbids it (reason) */
} keel_retry_verdict_t;

typedef enum keel_retry_reason {
    KEEL_RETRY_REASON_NONE,
    KEEL_RETRY_REASON_ATTEMPTS, /* attempts_max reached */
    KEEL_RETRY_REASON_DEADLINE, /* the next attempt would start at or after the deadline */
    KEEL_RETRY_REASON_BUDGET,   /* the retry budget is spent */
    KEEL_RETRY_REASON_NOT_IDEMPOTENT,
} keel_retry_reason_t;

typedef struct keel_retry_decision {
    keel_retry_verdict_t verdict;
    keel_retry_reason_t reason;
    keel_ms_t start_ms;       /* RETRY: when to start the next attempt */
    keel_ms_t try_timeout_ms; /* RETRY: that attempt's timeout (> 0) */
    uint32_t attempt;         /* RETRY: number of the next attempt (2 for the first retry) */
} keel_retry_decision_t;

#define KEEL_RETRY_ATTEMPTS_MAX 100u
#define KEEL_RETRY_BUDGET_BUCKETS 10u
#define KEEL_RETRY_BACKOFF_MS_MAX 86400000LL /* keeps base * 2^n far from overflow */

typedef struct keel_retry_config {
    uint32_t attempts_max;
    keel_ms_t backoff_base_ms;
    keel_ms_t backoff_cap_ms;
    keel_retry_jitter_t jitter;
    keel_ms_t per_try_timeout_ms; /* 0: no per-try limit, only the deadline */
    uint32_t retry_on;            /* KEEL_RETRY_ON_* bits */
    bool idempotent_only;
    uint32_t budget_pct;               /* 0 disables the budget */
    uint32_t budget_retries_min_per_s; /* the floor */
    keel_ms_t budget_window_ms;        /* multiple of KEEL_RETRY_BUDGET_BUCKETS */
} keel_retry_config_t;

/* The policy, shared by every call to one upstream (it holds the budget). */
typedef struct keel_retry {
    keel_retry_config_t cfg;
    int64_t head_slot;
    uint32_t requests[KEEL_RETRY_BUDGET_BUCKETS];
    uint32_t retries[KEEL_RETRY_BUDGET_BUCKETS];
    uint64_t requests_total, retries_total, budget_denied;
} keel_retry_t;

/* One logical call (caller-owned, no allocation). */
typedef struct keel_retry_call {
    uint32_t attempt; /* attempts started so far */
    keel_ms_t deadline_ms;
} keel_retry_call_t;

void keel_retry_config_default(keel_retry_config_t *cfg);
int keel_retry_config_validate(const keel_retry_config_t *cfg, keel_errmsg_t *msg);
int keel_retry_init(keel_retry_t *p, const keel_retry_config_t *cfg, keel_errmsg_t *msg);

/* Delay before retry n (n = 0 first retry): within [0, min(cap, base * 2^n)]. */
keel_ms_t keel_retry_backoff_ms(const keel_retry_config_t *cfg, uint32_t n, keel_rand_t *rand);

/*
 * Starts a call whose overall deadline is deadline_ms (KEEL_MS_NEVER for none);
 * counts it as a request for the budget and returns the first attempt's
 * timeout, or KEEL_ETIMEDOUT if the deadline has already passed.
 */
keel_ms_t keel_retry_begin(keel_retry_t *p, keel_retry_call_t *call, keel_ms_t now_ms,
                           keel_ms_t deadline_ms);

/* Judges the outcome of the latest attempt (ended at now_ms) and fills *d. */
void keel_retry_next(keel_retry_t *p, keel_retry_call_t *call, keel_ms_t now_ms,
                     const keel_retry_outcome_t *o, keel_rand_t *rand, keel_retry_decision_t *d);

/* Whether the policy's retry_on classes (ignoring limits) cover this outcome. */
bool keel_retry_is_retryable(const keel_retry_config_t *cfg, const keel_retry_outcome_t *o);

#endif
