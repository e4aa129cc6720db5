/* rollout.h - progressive delivery of a canary: its weight steps up on a schedule and rolls
 * back by itself when its error rate or p99 latency over a window passes a threshold. */
#ifndef KEEL_CORE_ROLLOUT_H
#define KEEL_CORE_ROLLOUT_H

#include "base/err.h"
#include "base/ktime.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * The model is Argo Rollouts' canary steps (setWeight steps, each held for a pause) judged the
 * way Flagger judges a canary (request success rate and duration over an interval, a minimum of
 * traffic before any verdict). One rollout watches one canary:
 *
 *   steps_pct        the canary's weight at each step, strictly increasing, each 1..100
 *   step_ms          how long a step lasts at least before the next
 *   window_ms        the canary's recent past that is judged (below)
 *   min_requests     no verdict, and no step up, on fewer requests in the window
 *   max_error_pct    roll back when errors * 100 > max_error_pct * requests
 *   max_p99_ms       roll back when the window's p99 latency > max_p99_ms (0: no latency rule)
 *
 *           step_ms passed, >= min_requests,            last step held step_ms, healthy
 *           healthy: next step                          (weight 100)
 *   RUNNING ──────────────────────────> RUNNING ... ───────────────────────────> DONE
 *      │  (weight steps_pct[step])
 *      │  >= min_requests in the window and the error rate or p99 over its threshold
 *      └───────────────────────────────────────────────────────────────────────> ROLLED_BACK
 *                                                                                (weight 0)
 * DONE and ROLLED_BACK are final: only a new rollout (a reload of a changed one, a restart)
 * leaves them. A step up also empties the window, so every step is judged on requests served
 * at its own weight: the canary must serve min_requests at the new weight before it can move
 * on again (or be rolled back).
 *
 * The window is KEEL_ROLLOUT_SLOTS slots of window_ms / KEEL_ROLLOUT_SLOTS each, by time of
 * observation: at time t it holds the current slot and the SLOTS - 1 before it, so it spans
 * between window_ms - slot and window_ms of the past. Each slot counts requests, errors and
 * slow requests (latency > max_p99_ms). The p99 verdict needs no latency histogram and is
 * exact: with n requests the p99 is the value of rank ceil(99 n / 100) (nearest rank), and it
 * exceeds max_p99_ms exactly when at least n - ceil(99 n / 100) + 1 requests were slow.
 *
 * Driving (sans I/O: every call takes the time): keel_rollout_observe() for each finished
 * request that went to the canary; keel_rollout_tick() at keel_rollout_next_deadline_ms() and
 * whenever observations came in (a periodic tick no longer than a slot does both). The tick's
 * update says what changed; the driver then applies weight_pct to its routing and logs and
 * counts a step, a completion or a rollback. Memory: the struct, nothing allocated.
 */

#define KEEL_ROLLOUT_STEPS_MAX 16u                            /* steps_pct entries */
#define KEEL_ROLLOUT_SLOTS 10u                                /* the window's slots */
#define KEEL_ROLLOUT_WINDOW_MS_MIN (KEEL_ROLLOUT_SLOTS * 10u) /* slots of at least 10 ms */
#define KEEL_ROLLOUT_STEP_MS_MIN 100u
#define KEEL_ROLLOUT_MS_MAX 86400000u /* step_ms, window_ms and max_p99_ms: a day */
#define KEEL_ROLLOUT_MIN_REQUESTS_MAX 1000000u

typedef struct keel_rollout_config {
    uint32_t steps_pct[KEEL_ROLLOUT_STEPS_MAX];
    uint32_t steps_count;
    keel_ms_t step_ms;
    keel_ms_t window_ms;
    uint32_t min_requests;
    uint32_t max_error_pct;
    keel_ms_t max_p99_ms; /* 0: latency is not judged */
} keel_rollout_config_t;

typedef enum keel_rollout_phase {
    KEEL_ROLLOUT_RUNNING,
    KEEL_ROLLOUT_DONE,        /* promoted: weight 100 */
    KEEL_ROLLOUT_ROLLED_BACK, /* weight 0 */
} keel_rollout_phase_t;

typedef enum keel_rollout_action {
    KEEL_ROLLOUT_HOLD,      /* nothing changed */
    KEEL_ROLLOUT_STEP_UP,   /* to the next step */
    KEEL_ROLLOUT_COMPLETE,  /* the last step held: DONE */
    KEEL_ROLLOUT_ROLL_BACK, /* ROLLED_BACK */
} keel_rollout_action_t;

typedef enum keel_rollout_why {
    KEEL_ROLLOUT_WHY_NONE,
    KEEL_ROLLOUT_WHY_ERRORS,  /* the error rate passed max_error_pct */
    KEEL_ROLLOUT_WHY_LATENCY, /* the p99 passed max_p99_ms */
} keel_rollout_why_t;

/* What the window holds. */
typedef struct keel_rollout_window {
    uint64_t requests, errors, slow;
} keel_rollout_window_t;

typedef struct keel_rollout_slot {
    uint64_t epoch; /* now_ms / slot_ms of its observations; a slot of another epoch is empty */
    uint32_t requests, errors, slow;
} keel_rollout_slot_t;

typedef struct keel_rollout {
    keel_rollout_config_t cfg;
    keel_ms_t slot_ms;
    keel_rollout_phase_t phase;
    uint32_t step; /* index into steps_pct while RUNNING */
    keel_ms_t step_started_ms;
    keel_rollout_why_t why; /* of a rollback */
    keel_rollout_slot_t slots[KEEL_ROLLOUT_SLOTS];
    uint64_t steps_total; /* step ups so far */
} keel_rollout_t;

/* The effects of one tick, in the order the driver carries them out: apply weight_pct to the
 * routing, then log and count the action (from_pct, window and why say why it was taken). */
typedef struct keel_rollout_update {
    keel_rollout_action_t action;
    uint32_t weight_pct; /* the canary's weight now */
    uint32_t from_pct;   /* its weight before the tick */
    keel_rollout_why_t why;
    keel_rollout_window_t window; /* the window the verdict was taken on */
    keel_ms_t next_deadline_ms;   /* tick again by then (KEEL_MS_NEVER once final) */
} keel_rollout_update_t;

/* Steps 1, 5, 25, 50, 100; step_ms 60000, window_ms 30000, min_requests 20, max_error_pct 5, no
 * latency rule. (keel proxy asks for the steps explicitly and takes the rest from here.) */
void keel_rollout_config_default(keel_rollout_config_t *cfg);
/* 0 or KEEL_EINVAL naming the field. */
int keel_rollout_config_validate(const keel_rollout_config_t *cfg, keel_errmsg_t *msg);
/* Starts at the first step at now_ms. 0 or KEEL_EINVAL (validation). */
int keel_rollout_init(keel_rollout_t *r, const keel_rollout_config_t *cfg, keel_ms_t now_ms,
                      keel_errmsg_t *msg);

/* A finished request that went to the canary: its latency, and whether it failed (a 5xx
 * answer, the proxy's own included). Ignored once the rollout is final. */
void keel_rollout_observe(keel_rollout_t *r, keel_ms_t now_ms, keel_ms_t latency_ms, bool failed);
/* Judges the window and the schedule at now_ms; fills *u. */
void keel_rollout_tick(keel_rollout_t *r, keel_ms_t now_ms, keel_rollout_update_t *u);

/* The canary's weight in percent: the step's while RUNNING, 100 when DONE, 0 when ROLLED_BACK. */
uint32_t keel_rollout_weight_pct(const keel_rollout_t *r);
/* The window's counts at now_ms. */
keel_rollout_window_t keel_rollout_window(const keel_rollout_t *r, keel_ms_t now_ms);
/* Whether n latencies with slow of them over a threshold have a p99 (nearest rank) over it. */
bool keel_rollout_p99_over(uint64_t n, uint64_t slow);
keel_ms_t keel_rollout_next_deadline_ms(const keel_rollout_t *r, keel_ms_t now_ms);

/* "running", "done", "rolled_back"; "hold", "step", "done", "rollback"; "none", "errors",
 * "latency". */
const char *keel_rollout_phase_name(keel_rollout_phase_t phase);
const char *keel_rollout_action_name(keel_rollout_action_t action);
const char *keel_rollout_why_name(keel_rollout_why_t why);

#endif
