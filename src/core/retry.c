/* retry.c - retry decisions: backoff with jitter, deadlines, retry-on classes, retry budget. */
#include "core/retry.h"

#include <assert.h>
#include <string.h>

void keel_retry_config_default(keel_retry_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->attempts_max = 3;
    cfg->backoff_base_ms = 25;
    cfg->backoff_cap_ms = 1000;
    cfg->jitter = KEEL_RETRY_JITTER_FULL;
    cfg->per_try_timeout_ms = 0;
    cfg->retry_on =
        KEEL_RETRY_ON_CONNECT_FAILURE | KEEL_RETRY_ON_RESET | KEEL_RETRY_ON_GATEWAY_ERROR;
    cfg->idempotent_only = true;
    cfg->budget_pct = 20;
    cfg->budget_retries_min_per_s = 10;
    cfg->budget_window_ms = 10000;
}

int keel_retry_config_validate(const keel_retry_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->attempts_max == 0 || cfg->attempts_max > KEEL_RETRY_ATTEMPTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "attempts_max must be in 1..%u",
                         KEEL_RETRY_ATTEMPTS_MAX);
    if (cfg->backoff_base_ms < 0 || cfg->backoff_cap_ms < cfg->backoff_base_ms ||
        cfg->backoff_cap_ms > KEEL_RETRY_BACKOFF_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL,
                         "need 0 <= backoff_base_ms <= backoff_cap_ms <= %lld (a day)",
                         (long long)KEEL_RETRY_BACKOFF_MS_MAX);
    if (cfg->jitter > KEEL_RETRY_JITTER_EQUAL)
        return keel_errf(msg, KEEL_EINVAL, "unknown jitter %d", (int)cfg->jitter);
    if (cfg->per_try_timeout_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "per_try_timeout_ms must be >= 0");
    if (cfg->budget_pct > 1000)
        return keel_errf(msg, KEEL_EINVAL, "budget_pct must be in 0..1000");
    if (cfg->budget_pct > 0 &&
        (cfg->budget_window_ms <= 0 || cfg->budget_window_ms % KEEL_RETRY_BUDGET_BUCKETS != 0))
        return keel_errf(msg, KEEL_EINVAL, "budget_window_ms must be a positive multiple of %u",
                         KEEL_RETRY_BUDGET_BUCKETS);
    return 0;
}

int keel_retry_init(keel_retry_t *p, const keel_retry_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_retry_config_validate(cfg, msg);
    if (err)
        return err;
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    p->head_slot = -1;
    return 0;
}

keel_ms_t keel_retry_backoff_ms(const keel_retry_config_t *cfg, uint32_t n, keel_rand_t *rand)
{
    keel_ms_t ceil_ms = cfg->backoff_base_ms;
    for (uint32_t i = 0; i < n && ceil_ms < cfg->backoff_cap_ms; i++)
        ceil_ms *= 2;
    if (ceil_ms > cfg->backoff_cap_ms)
        ceil_ms = cfg->backoff_cap_ms;
    switch (cfg->jitter) {
    case KEEL_RETRY_JITTER_FULL:
        return keel_rand_range(rand, 0, ceil_ms);
    case KEEL_RETRY_JITTER_EQUAL:
        return ceil_ms / 2 + keel_rand_range(rand, 0, ceil_ms - ceil_ms / 2);
    case KEEL_RETRY_JITTER_NONE:
        break;
    }
    return ceil_ms;
}

/* Moves the budget window to now_ms, zeroing the buckets that fell out of it. */
static uint32_t budget_slot(keel_retry_t *p, keel_ms_t now_ms)
{
    keel_ms_t bucket_ms = p->cfg.budget_window_ms / KEEL_RETRY_BUDGET_BUCKETS;
    int64_t slot = now_ms / bucket_ms;
    if (slot > p->head_slot) {
        int64_t steps = slot - p->head_slot;
        if (steps > KEEL_RETRY_BUDGET_BUCKETS)
            steps = KEEL_RETRY_BUDGET_BUCKETS;
        for (int64_t k = 1; k <= steps; k++) {
            uint32_t i = (uint32_t)((uint64_t)(slot - steps + k) % KEEL_RETRY_BUDGET_BUCKETS);
            p->requests[i] = p->retries[i] = 0;
        }
        p->head_slot = slot;
    }
    return (uint32_t)((uint64_t)p->head_slot % KEEL_RETRY_BUDGET_BUCKETS);
}

/* Withdraws one retry from the budget if it allows one. */
static bool budget_take(keel_retry_t *p, keel_ms_t now_ms)
{
    if (p->cfg.budget_pct == 0)
        return true;
    uint32_t slot = budget_slot(p, now_ms);
    uint64_t requests = 0, retries = 0;
    for (uint32_t i = 0; i < KEEL_RETRY_BUDGET_BUCKETS; i++) {
        requests += p->requests[i];
        retries += p->retries[i];
    }
    uint64_t floor_x100 =
        (uint64_t)p->cfg.budget_retries_min_per_s * (uint64_t)p->cfg.budget_window_ms / 10;
    if ((retries + 1) * 100 > floor_x100 + (uint64_t)p->cfg.budget_pct * requests) {
        p->budget_denied++;
        return false;
    }
    p->retries[slot]++;
    p->retries_total++;
    return true;
}

static keel_ms_t try_timeout(const keel_retry_config_t *cfg, keel_ms_t start_ms,
                             keel_ms_t deadline_ms)
{
    keel_ms_t left_ms = deadline_ms == KEEL_MS_NEVER ? KEEL_MS_NEVER : deadline_ms - start_ms;
    if (cfg->per_try_timeout_ms > 0 && cfg->per_try_timeout_ms < left_ms)
        return cfg->per_try_timeout_ms;
    return left_ms;
}

keel_ms_t keel_retry_begin(keel_retry_t *p, keel_retry_call_t *call, keel_ms_t now_ms,
                           keel_ms_t deadline_ms)
{
    call->attempt = 1;
    call->deadline_ms = deadline_ms;
    if (now_ms >= deadline_ms)
        return KEEL_ETIMEDOUT;
    if (p->cfg.budget_pct > 0)
        p->requests[budget_slot(p, now_ms)]++;
    p->requests_total++;
    return try_timeout(&p->cfg, now_ms, deadline_ms);
}

bool keel_retry_is_retryable(const keel_retry_config_t *cfg, const keel_retry_outcome_t *o)
{
    uint32_t on = cfg->retry_on;
    switch (o->failure) {
    case KEEL_RETRY_FAIL_CONNECT:
        return (on & KEEL_RETRY_ON_CONNECT_FAILURE) != 0;
    case KEEL_RETRY_FAIL_RESET:
        return (on & KEEL_RETRY_ON_RESET) != 0;
    case KEEL_RETRY_FAIL_TIMEOUT:
        return (on & KEEL_RETRY_ON_TIMEOUT) != 0;
    case KEEL_RETRY_FAIL_NONE:
        break;
    }
    int s = o->http_status;
    if ((on & KEEL_RETRY_ON_5XX) && s >= 500 && s <= 599)
        return true;
    if ((on & KEEL_RETRY_ON_GATEWAY_ERROR) && (s == 502 || s == 503 || s == 504))
        return true;
    return (on & KEEL_RETRY_ON_503) && s == 503;
}

void keel_retry_next(keel_retry_t *p, keel_retry_call_t *call, keel_ms_t now_ms,
                     const keel_retry_outcome_t *o, keel_rand_t *rand, keel_retry_decision_t *d)
{
    assert(call->attempt >= 1);
    memset(d, 0, sizeof(*d));
    d->verdict = KEEL_RETRY_GIVE_UP;
    if (!keel_retry_is_retryable(&p->cfg, o)) {
        d->verdict = KEEL_RETRY_DONE;
        return;
    }
    if (call->attempt >= p->cfg.attempts_max) {
        d->reason = KEEL_RETRY_REASON_ATTEMPTS;
        return;
    }
    if (p->cfg.idempotent_only && !o->idempotent && o->failure != KEEL_RETRY_FAIL_CONNECT) {
        d->reason = KEEL_RETRY_REASON_NOT_IDEMPOTENT;
        return;
    }
    keel_ms_t start_ms = now_ms + keel_retry_backoff_ms(&p->cfg, call->attempt - 1, rand);
    if (start_ms >= call->deadline_ms) {
        d->reason = KEEL_RETRY_REASON_DEADLINE;
        return;
    }
    if (!budget_take(p, now_ms)) {
        d->reason = KEEL_RETRY_REASON_BUDGET;
        return;
    }
    call->attempt++;
    d->verdict = KEEL_RETRY_RETRY;
    d->start_ms = start_ms;
    d->try_timeout_ms = try_timeout(&p->cfg, start_ms, call->deadline_ms);
    d->attempt = call->attempt;
    assert(d->try_timeout_ms > 0);
}
