/* breaker.c - circuit breaker state machine (resilience4j semantics, sans-I/O). */
#include "core/breaker.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_USED 0x80u
#define SLOT_FAILURE 0x01u
#define SLOT_SLOW 0x02u

void keel_breaker_config_default(keel_breaker_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->window_kind = KEEL_BREAKER_WINDOW_COUNT;
    cfg->window_calls = 100;
    cfg->window_ms = 60000;
    cfg->window_buckets = 60;
    cfg->calls_min = 100;
    cfg->failure_rate_pct = 50;
    cfg->consecutive_failures_max = 0;
    cfg->slow_call_rate_pct = 0;
    cfg->slow_call_ms = 60000;
    cfg->open_ms = 60000;
    cfg->probes_max = 10;
}

int keel_breaker_config_validate(const keel_breaker_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->window_kind == KEEL_BREAKER_WINDOW_COUNT) {
        if (cfg->window_calls == 0 || cfg->window_calls > KEEL_BREAKER_WINDOW_CALLS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "window_calls must be in 1..%u",
                             KEEL_BREAKER_WINDOW_CALLS_MAX);
        if (cfg->calls_min > cfg->window_calls)
            return keel_errf(msg, KEEL_EINVAL, "calls_min (%u) exceeds window_calls (%u)",
                             cfg->calls_min, cfg->window_calls);
    } else if (cfg->window_kind == KEEL_BREAKER_WINDOW_TIME) {
        if (cfg->window_buckets == 0 || cfg->window_buckets > KEEL_BREAKER_WINDOW_BUCKETS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "window_buckets must be in 1..%u",
                             KEEL_BREAKER_WINDOW_BUCKETS_MAX);
        if (cfg->window_ms <= 0 || cfg->window_ms % cfg->window_buckets != 0)
            return keel_errf(msg, KEEL_EINVAL,
                             "window_ms must be positive and a multiple of window_buckets");
    } else {
        return keel_errf(msg, KEEL_EINVAL, "unknown window_kind %d", (int)cfg->window_kind);
    }
    if (cfg->calls_min == 0)
        return keel_errf(msg, KEEL_EINVAL, "calls_min must be at least 1");
    if (cfg->failure_rate_pct > 100 || cfg->slow_call_rate_pct > 100)
        return keel_errf(msg, KEEL_EINVAL, "rate thresholds are percentages (0..100)");
    if (cfg->open_ms <= 0 || cfg->slow_call_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "open_ms and slow_call_ms must be positive");
    if (cfg->probes_max == 0)
        return keel_errf(msg, KEEL_EINVAL, "probes_max must be at least 1");
    return 0;
}

static void window_reset(keel_breaker_t *b)
{
    if (b->ring)
        memset(b->ring, 0, b->cfg.window_calls);
    if (b->buckets)
        memset(b->buckets, 0, sizeof(*b->buckets) * b->cfg.window_buckets);
    b->ring_next = 0;
    b->head_slot = -1;
    b->calls = b->failures = b->slow = 0;
    b->consecutive_failures = 0;
}

int keel_breaker_init(keel_breaker_t *b, const keel_breaker_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_breaker_config_validate(cfg, msg);
    if (err)
        return err;
    memset(b, 0, sizeof(*b));
    b->cfg = *cfg;
    if (cfg->window_kind == KEEL_BREAKER_WINDOW_COUNT) {
        b->ring = calloc(cfg->window_calls, 1);
        if (!b->ring)
            return keel_errf(msg, KEEL_ENOMEM, "breaker window of %u calls", cfg->window_calls);
    } else {
        b->buckets = calloc(cfg->window_buckets, sizeof(*b->buckets));
        if (!b->buckets)
            return keel_errf(msg, KEEL_ENOMEM, "breaker window of %u buckets", cfg->window_buckets);
        b->bucket_ms = cfg->window_ms / cfg->window_buckets;
    }
    b->state = KEEL_BREAKER_CLOSED;
    window_reset(b);
    return 0;
}

void keel_breaker_free(keel_breaker_t *b)
{
    free(b->ring);
    free(b->buckets);
    b->ring = NULL;
    b->buckets = NULL;
}

static void transition(keel_breaker_t *b, keel_breaker_state_t to, keel_ms_t now_ms)
{
    keel_breaker_state_t from = b->state;
    assert(from != to);
    b->state = to;
    b->epoch = (b->epoch + 1) & 0x7fffffffu;
    b->stats.transitions++;
    if (to == KEEL_BREAKER_OPEN)
        b->open_until_ms = now_ms + b->cfg.open_ms;
    if (to == KEEL_BREAKER_HALF_OPEN)
        b->probes_admitted = b->probes_done = b->probes_slow = 0;
    if (to == KEEL_BREAKER_CLOSED || to == KEEL_BREAKER_OPEN)
        window_reset(b);
    if (b->cfg.on_transition)
        b->cfg.on_transition(b->cfg.on_transition_data, from, to, now_ms);
}

/* TIME window: clears the buckets that fell out of the window since head_slot. */
static keel__breaker_bucket_t *time_bucket(keel_breaker_t *b, keel_ms_t now_ms)
{
    uint32_t nb = b->cfg.window_buckets;
    int64_t slot = now_ms / b->bucket_ms;
    if (slot > b->head_slot) {
        int64_t steps = slot - b->head_slot;
        if (steps > nb)
            steps = nb;
        for (int64_t k = 1; k <= steps; k++) {
            keel__breaker_bucket_t *old = &b->buckets[(uint64_t)(slot - steps + k) % nb];
            b->calls -= old->calls;
            b->failures -= old->failures;
            b->slow -= old->slow;
            memset(old, 0, sizeof(*old));
        }
        b->head_slot = slot;
    }
    return &b->buckets[(uint64_t)b->head_slot % nb];
}

static void window_add(keel_breaker_t *b, keel_ms_t now_ms, bool failure, bool slow)
{
    if (b->ring) {
        uint8_t *s = &b->ring[b->ring_next];
        if (*s & SLOT_USED) {
            b->calls--;
            b->failures -= (*s & SLOT_FAILURE) != 0;
            b->slow -= (*s & SLOT_SLOW) != 0;
        }
        *s = (uint8_t)(SLOT_USED | (failure ? SLOT_FAILURE : 0) | (slow ? SLOT_SLOW : 0));
        b->ring_next = (b->ring_next + 1) % b->cfg.window_calls;
    } else {
        keel__breaker_bucket_t *k = time_bucket(b, now_ms);
        k->calls++;
        k->failures += failure;
        k->slow += slow;
    }
    b->calls++;
    b->failures += failure;
    b->slow += slow;
    assert(b->failures <= b->calls && b->slow <= b->calls);
}

static bool rate_reached(uint32_t count, uint32_t calls, uint32_t pct)
{
    return pct > 0 && (uint64_t)count * 100 >= (uint64_t)pct * calls;
}

static void record_closed(keel_breaker_t *b, keel_ms_t now_ms, bool failure, bool slow)
{
    window_add(b, now_ms, failure, slow);
    b->consecutive_failures = failure ? b->consecutive_failures + 1 : 0;
    bool trip = b->cfg.consecutive_failures_max > 0 &&
                b->consecutive_failures >= b->cfg.consecutive_failures_max;
    if (b->calls >= b->cfg.calls_min) {
        trip = trip || rate_reached(b->failures, b->calls, b->cfg.failure_rate_pct);
        trip = trip || rate_reached(b->slow, b->calls, b->cfg.slow_call_rate_pct);
    }
    if (trip)
        transition(b, KEEL_BREAKER_OPEN, now_ms);
}

static void record_half_open(keel_breaker_t *b, keel_ms_t now_ms, bool failure, bool slow)
{
    assert(b->probes_done < b->probes_admitted);
    if (failure) {
        transition(b, KEEL_BREAKER_OPEN, now_ms);
        return;
    }
    b->probes_done++;
    b->probes_slow += slow;
    if (b->probes_done < b->cfg.probes_max)
        return;
    if (rate_reached(b->probes_slow, b->probes_done, b->cfg.slow_call_rate_pct))
        transition(b, KEEL_BREAKER_OPEN, now_ms);
    else
        transition(b, KEEL_BREAKER_CLOSED, now_ms);
}

int keel_breaker_allow(keel_breaker_t *b, keel_ms_t now_ms)
{
    switch (b->state) {
    case KEEL_BREAKER_CLOSED:
    case KEEL_BREAKER_DISABLED:
        break;
    case KEEL_BREAKER_FORCED_OPEN:
        goto reject;
    case KEEL_BREAKER_OPEN:
        if (now_ms < b->open_until_ms)
            goto reject;
        transition(b, KEEL_BREAKER_HALF_OPEN, now_ms);
        /* fall through */
    case KEEL_BREAKER_HALF_OPEN:
        if (b->probes_admitted >= b->cfg.probes_max)
            goto reject;
        b->probes_admitted++;
        break;
    }
    b->stats.calls_permitted++;
    return (int)b->epoch;
reject:
    b->stats.calls_rejected++;
    return KEEL_EREJECTED;
}

void keel_breaker_record(keel_breaker_t *b, keel_ms_t now_ms, int permit,
                         keel_breaker_outcome_t outcome, keel_ms_t duration_ms)
{
    assert(permit >= 0);
    if ((uint32_t)permit != b->epoch) {
        b->stats.stale_results++;
        return;
    }
    if (outcome == KEEL_BREAKER_IGNORED) {
        if (b->state == KEEL_BREAKER_HALF_OPEN) {
            assert(b->probes_admitted > b->probes_done);
            b->probes_admitted--;
        }
        return;
    }
    bool failure = outcome == KEEL_BREAKER_FAILURE;
    bool slow = b->cfg.slow_call_rate_pct > 0 && duration_ms >= b->cfg.slow_call_ms;
    b->stats.failures += failure;
    b->stats.successes += !failure;
    b->stats.slow_calls += slow;
    if (b->state == KEEL_BREAKER_CLOSED)
        record_closed(b, now_ms, failure, slow);
    else if (b->state == KEEL_BREAKER_HALF_OPEN)
        record_half_open(b, now_ms, failure, slow);
    /* DISABLED records nothing; OPEN and FORCED_OPEN admit nothing, so no permit matches. */
}

void keel_breaker_force(keel_breaker_t *b, keel_breaker_mode_t mode, keel_ms_t now_ms)
{
    keel_breaker_state_t to = mode == KEEL_BREAKER_MODE_FORCED_OPEN ? KEEL_BREAKER_FORCED_OPEN
                              : mode == KEEL_BREAKER_MODE_DISABLED  ? KEEL_BREAKER_DISABLED
                                                                    : KEEL_BREAKER_CLOSED;
    if (b->state != to) {
        transition(b, to, now_ms);
    }
    window_reset(b);
}

keel_breaker_state_t keel_breaker_state(const keel_breaker_t *b)
{
    return b->state;
}

keel_ms_t keel_breaker_next_deadline_ms(const keel_breaker_t *b)
{
    return b->state == KEEL_BREAKER_OPEN ? b->open_until_ms : KEEL_MS_NEVER;
}

void keel_breaker_stats(const keel_breaker_t *b, keel_breaker_stats_t *out)
{
    *out = b->stats;
    out->window_calls = b->calls;
    out->window_failures = b->failures;
    out->window_slow = b->slow;
}

const char *keel_breaker_state_name(keel_breaker_state_t s)
{
    switch (s) {
    case KEEL_BREAKER_CLOSED:
        return "CLOSED";
    case KEEL_BREAKER_OPEN:
        return "OPEN";
    case KEEL_BREAKER_HALF_OPEN:
        return "HALF_OPEN";
    case KEEL_BREAKER_FORCED_OPEN:
        return "FORCED_OPEN";
    case KEEL_BREAKER_DISABLED:
        return "DISABLED";
    }
    return "?";
}
