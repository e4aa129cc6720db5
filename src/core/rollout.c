/* rollout.c - a canary's weight steps and automatic rollback, judged over a window of slots. */
#include "core/rollout.h"

#include <assert.h>
#include <string.h>

void keel_rollout_config_default(keel_rollout_config_t *cfg)
{
    static const uint32_t steps[] = {1, 5, 25, 50, 100};
    memset(cfg, 0, sizeof(*cfg));
    memcpy(cfg->steps_pct, steps, sizeof(steps));
    cfg->steps_count = sizeof(steps) / sizeof(steps[0]);
    cfg->step_ms = 60000;
    cfg->window_ms = 30000;
    cfg->min_requests = 20;
    cfg->max_error_pct = 5;
    cfg->max_p99_ms = 0;
}

int keel_rollout_config_validate(const keel_rollout_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->steps_count == 0 || cfg->steps_count > KEEL_ROLLOUT_STEPS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "steps: 1..%u entries", KEEL_ROLLOUT_STEPS_MAX);
    for (uint32_t i = 0; i < cfg->steps_count; i++) {
        if (cfg->steps_pct[i] < 1 || cfg->steps_pct[i] > 100)
            return keel_errf(msg, KEEL_EINVAL, "steps: %u is out of range 1..100",
                             cfg->steps_pct[i]);
        if (i > 0 && cfg->steps_pct[i] <= cfg->steps_pct[i - 1])
            return keel_errf(msg, KEEL_EINVAL, "steps: must increase (%u after %u)",
                             cfg->steps_pct[i], cfg->steps_pct[i - 1]);
    }
    if (cfg->step_ms < KEEL_ROLLOUT_STEP_MS_MIN || cfg->step_ms > KEEL_ROLLOUT_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "step_ms: out of range %u..%u", KEEL_ROLLOUT_STEP_MS_MIN,
                         KEEL_ROLLOUT_MS_MAX);
    if (cfg->window_ms < KEEL_ROLLOUT_WINDOW_MS_MIN || cfg->window_ms > KEEL_ROLLOUT_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "window_ms: out of range %u..%u",
                         KEEL_ROLLOUT_WINDOW_MS_MIN, KEEL_ROLLOUT_MS_MAX);
    if (cfg->min_requests < 1 || cfg->min_requests > KEEL_ROLLOUT_MIN_REQUESTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "min_requests: out of range 1..%u",
                         KEEL_ROLLOUT_MIN_REQUESTS_MAX);
    if (cfg->max_error_pct > 100)
        return keel_errf(msg, KEEL_EINVAL, "max_error_percent: out of range 0..100");
    if (cfg->max_p99_ms < 0 || cfg->max_p99_ms > KEEL_ROLLOUT_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "max_p99_ms: out of range 0..%u", KEEL_ROLLOUT_MS_MAX);
    return 0;
}

int keel_rollout_init(keel_rollout_t *r, const keel_rollout_config_t *cfg, keel_ms_t now_ms,
                      keel_errmsg_t *msg)
{
    int rc = keel_rollout_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    r->slot_ms = cfg->window_ms / KEEL_ROLLOUT_SLOTS;
    r->phase = KEEL_ROLLOUT_RUNNING;
    r->step_started_ms = now_ms;
    return 0;
}

static uint64_t epoch_of(const keel_rollout_t *r, keel_ms_t now_ms)
{
    assert(r->slot_ms > 0);
    return now_ms > 0 ? (uint64_t)(now_ms / r->slot_ms) : 0;
}

void keel_rollout_observe(keel_rollout_t *r, keel_ms_t now_ms, keel_ms_t latency_ms, bool failed)
{
    if (r->phase != KEEL_ROLLOUT_RUNNING)
        return;
    uint64_t e = epoch_of(r, now_ms);
    keel_rollout_slot_t *s = &r->slots[e % KEEL_ROLLOUT_SLOTS];
    if (s->epoch != e)
        *s = (keel_rollout_slot_t){.epoch = e};
    s->requests++;
    s->errors += failed ? 1 : 0;
    s->slow += r->cfg.max_p99_ms > 0 && latency_ms > r->cfg.max_p99_ms ? 1 : 0;
}

keel_rollout_window_t keel_rollout_window(const keel_rollout_t *r, keel_ms_t now_ms)
{
    keel_rollout_window_t w = {0, 0, 0};
    uint64_t e = epoch_of(r, now_ms);
    for (uint32_t i = 0; i < KEEL_ROLLOUT_SLOTS; i++) {
        const keel_rollout_slot_t *s = &r->slots[i];
        if (s->epoch > e || s->epoch + KEEL_ROLLOUT_SLOTS <= e)
            continue; /* older than the window (or ahead of a clock that went back) */
        w.requests += s->requests;
        w.errors += s->errors;
        w.slow += s->slow;
    }
    return w;
}

bool keel_rollout_p99_over(uint64_t n, uint64_t slow)
{
    if (n == 0)
        return false;
    uint64_t rank = (99 * n + 99) / 100; /* ceil(0.99 n), 1-based */
    return slow >= n - rank + 1;
}

uint32_t keel_rollout_weight_pct(const keel_rollout_t *r)
{
    switch (r->phase) {
    case KEEL_ROLLOUT_RUNNING:
        return r->cfg.steps_pct[r->step];
    case KEEL_ROLLOUT_DONE:
        return 100;
    case KEEL_ROLLOUT_ROLLED_BACK:
        return 0;
    }
    return 0;
}

keel_ms_t keel_rollout_next_deadline_ms(const keel_rollout_t *r, keel_ms_t now_ms)
{
    if (r->phase != KEEL_ROLLOUT_RUNNING)
        return KEEL_MS_NEVER;
    keel_ms_t step_due = r->step_started_ms + r->cfg.step_ms;
    /* the window changes when a slot falls out of it, at the next slot boundary */
    keel_ms_t slot_end = (keel_ms_t)(epoch_of(r, now_ms) + 1) * r->slot_ms;
    return step_due > now_ms && step_due < slot_end ? step_due : slot_end;
}

/* The rollback rule, on a window with enough requests. */
static keel_rollout_why_t judge(const keel_rollout_t *r, const keel_rollout_window_t *w)
{
    if (w->requests < r->cfg.min_requests)
        return KEEL_ROLLOUT_WHY_NONE;
    if (w->errors * 100 > (uint64_t)r->cfg.max_error_pct * w->requests)
        return KEEL_ROLLOUT_WHY_ERRORS;
    if (r->cfg.max_p99_ms > 0 && keel_rollout_p99_over(w->requests, w->slow))
        return KEEL_ROLLOUT_WHY_LATENCY;
    return KEEL_ROLLOUT_WHY_NONE;
}

void keel_rollout_tick(keel_rollout_t *r, keel_ms_t now_ms, keel_rollout_update_t *u)
{
    memset(u, 0, sizeof(*u));
    u->action = KEEL_ROLLOUT_HOLD;
    u->from_pct = keel_rollout_weight_pct(r);
    if (r->phase == KEEL_ROLLOUT_RUNNING) {
        u->window = keel_rollout_window(r, now_ms);
        keel_rollout_why_t why = judge(r, &u->window);
        if (why != KEEL_ROLLOUT_WHY_NONE) {
            r->phase = KEEL_ROLLOUT_ROLLED_BACK;
            r->why = why;
            u->action = KEEL_ROLLOUT_ROLL_BACK;
            u->why = why;
        } else if (now_ms - r->step_started_ms >= r->cfg.step_ms &&
                   u->window.requests >= r->cfg.min_requests) {
            if (r->step + 1 == r->cfg.steps_count) {
                r->phase = KEEL_ROLLOUT_DONE;
                u->action = KEEL_ROLLOUT_COMPLETE;
            } else {
                r->step++;
                r->steps_total++;
                r->step_started_ms = now_ms;
                memset(r->slots, 0, sizeof(r->slots)); /* the next step is judged on its own */
                u->action = KEEL_ROLLOUT_STEP_UP;
            }
        }
    }
    u->weight_pct = keel_rollout_weight_pct(r);
    u->next_deadline_ms = keel_rollout_next_deadline_ms(r, now_ms);
}

const char *keel_rollout_phase_name(keel_rollout_phase_t phase)
{
    static const char *const names[] = {"running", "done", "rolled_back"};
    return (unsigned)phase < 3 ? names[phase] : "?";
}

const char *keel_rollout_action_name(keel_rollout_action_t action)
{
    static const char *const names[] = {"hold", "step", "done", "rollback"};
    return (unsigned)action < 4 ? names[action] : "?";
}

const char *keel_rollout_why_name(keel_rollout_why_t why)
{
    static const char *const names[] = {"none", "errors", "latency"};
    return (unsigned)why < 3 ? names[why] : "?";
}
