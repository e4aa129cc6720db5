/* balance.c - endpoint set bookkeeping shared by every policy, and dispatch through its table. */
#include "core/balance.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void keel_balance_config_default(keel_balance_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->policy = &keel_balance_round_robin;
    cfg->endpoints_max = 1024;
    cfg->ring_vnodes = 160;
    cfg->ring_weight_max = 1;
    cfg->maglev_table_size = KEEL_MAGLEV_TABLE_SIZE_DEFAULT;
    cfg->seed = 1;
    cfg->slow_start.window_ms = 0;
    cfg->slow_start.min_pct = 10;
    cfg->slow_start.aggression = 1000;
}

int keel_balance_config_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    const keel_balance_policy_t *p = cfg->policy;
    if (!p || !p->name || !p->pick)
        return keel_errf(msg, KEEL_EINVAL, "policy must be a table with a name and a pick");
    if (cfg->endpoints_max == 0 || cfg->endpoints_max > KEEL_BALANCE_ENDPOINTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "endpoints_max must be in 1..%u",
                         KEEL_BALANCE_ENDPOINTS_MAX);
    const keel_balance_slow_start_t *ss = &cfg->slow_start;
    if (ss->window_ms < 0 || ss->window_ms > KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS)
        return keel_errf(msg, KEEL_EINVAL, "slow_start.window_ms must be in 0..%d",
                         KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS);
    if (ss->window_ms > 0) {
        if (p->keyed)
            return keel_errf(msg, KEEL_EINVAL, "policy %s picks by key: no slow start", p->name);
        if (ss->min_pct > 100)
            return keel_errf(msg, KEEL_EINVAL, "slow_start.min_pct must be in 0..100");
        if (ss->aggression < KEEL_BALANCE_SLOW_START_AGGRESSION_MIN ||
            ss->aggression > KEEL_BALANCE_SLOW_START_AGGRESSION_MAX)
            return keel_errf(msg, KEEL_EINVAL, "slow_start.aggression must be in %u..%u",
                             KEEL_BALANCE_SLOW_START_AGGRESSION_MIN,
                             KEEL_BALANCE_SLOW_START_AGGRESSION_MAX);
    }
    return p->validate ? p->validate(cfg, msg) : 0;
}

int keel_balance_init(keel_balance_t *b, const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_balance_config_validate(cfg, msg);
    if (err)
        return err;
    memset(b, 0, sizeof(*b));
    b->cfg = *cfg;
    b->policy = cfg->policy;
    uint32_t max = cfg->endpoints_max;
    keel_rand_seed(&b->rand, cfg->seed);
    b->ep = calloc(max, sizeof(*b->ep));
    b->scratch = calloc(max, sizeof(*b->scratch));
    b->avail = calloc(max, sizeof(*b->avail));
    if (cfg->slow_start.window_ms > 0)
        b->avail_pick = calloc(max, sizeof(*b->avail_pick));
    if (!b->ep || !b->scratch || !b->avail || (cfg->slow_start.window_ms > 0 && !b->avail_pick)) {
        err = keel_errf(msg, KEEL_ENOMEM, "balancer for %u endpoints", max);
        goto err_after_arrays;
    }
    if (b->policy->init) {
        err = b->policy->init(cfg, &b->data, msg);
        if (err)
            goto err_after_arrays;
    }
    return 0;
err_after_arrays:
    free(b->ep);
    free(b->scratch);
    free(b->avail);
    free(b->avail_pick);
    memset(b, 0, sizeof(*b));
    return err;
}

void keel_balance_free(keel_balance_t *b)
{
    if (b->policy && b->policy->free)
        b->policy->free(b->data);
    free(b->ep);
    free(b->scratch);
    free(b->avail);
    free(b->avail_pick);
    memset(b, 0, sizeof(*b));
}

static bool slow_start_on(const keel_balance_t *b)
{
    return b->cfg.slow_start.window_ms > 0;
}

/* An endpoint that has just become available waits for the next pick's clock to start ramping;
 * not when no other endpoint is available to take the share it is spared. */
static void ramp_begin(keel_balance_t *b, keel_balance_endpoint_t *e)
{
    if (!slow_start_on(b) || b->avail_n == 0)
        return;
    if (e->ramp == KEEL_BALANCE_RAMP_NONE)
        b->ramp_n++;
    e->ramp = KEEL_BALANCE_RAMP_PENDING;
}

static void ramp_end(keel_balance_t *b, keel_balance_endpoint_t *e)
{
    if (e->ramp != KEEL_BALANCE_RAMP_NONE)
        b->ramp_n--;
    e->ramp = KEEL_BALANCE_RAMP_NONE;
}

uint32_t keel_balance_slow_start_permille(const keel_balance_slow_start_t *ss, int64_t elapsed_ms)
{
    if (ss->window_ms <= 0 || elapsed_ms >= ss->window_ms)
        return KEEL_BALANCE_PERMILLE;
    if (elapsed_ms < 0)
        elapsed_ms = 0;
    double x = (double)elapsed_ms / (double)ss->window_ms; /* [0, 1) */
    double f = ss->aggression == 1000 ? x : pow(x, 1000.0 / (double)ss->aggression);
    uint32_t pm = (uint32_t)(f * KEEL_BALANCE_PERMILLE);
    uint32_t floor_pm = ss->min_pct * (KEEL_BALANCE_PERMILLE / 100);
    return pm < floor_pm ? floor_pm : pm;
}

uint32_t keel_balance_ramp_permille(const keel_balance_t *b, uint32_t idx, int64_t now_ms)
{
    assert(idx < b->n);
    const keel_balance_endpoint_t *e = &b->ep[idx];
    if (e->ramp == KEEL_BALANCE_RAMP_NONE)
        return KEEL_BALANCE_PERMILLE;
    if (e->ramp == KEEL_BALANCE_RAMP_PENDING)
        return keel_balance_slow_start_permille(&b->cfg.slow_start, 0);
    return keel_balance_slow_start_permille(&b->cfg.slow_start, now_ms - e->ramp_since_ms);
}

/* Recomputes the available list, then lets the policy follow (maglev rebuilds its table). */
static void refresh(keel_balance_t *b)
{
    b->level = 0;
    bool any = false;
    for (uint32_t i = 0; i < b->n; i++)
        if (keel_balance_usable(b, i) && (!any || b->ep[i].priority < b->level)) {
            b->level = b->ep[i].priority;
            any = true;
        }
    b->avail_n = 0;
    for (uint32_t i = 0; i < b->n; i++)
        if (keel_balance_available(b, i))
            b->avail[b->avail_n++] = i;
    if (b->policy->refresh)
        b->policy->refresh(b->data, b);
}

static int find_in(const keel_balance_endpoint_t *ep, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ep[i].id == id)
            return (int)i;
    return KEEL_ENOTFOUND;
}

int keel_balance_find(const keel_balance_t *b, uint64_t id)
{
    return find_in(b->ep, b->n, id);
}

static int check_specs(const keel_balance_t *b, const keel_balance_spec_t *specs, uint32_t n,
                       keel_errmsg_t *msg)
{
    if (n > b->cfg.endpoints_max)
        return keel_errf(msg, KEEL_ETOOBIG, "%u endpoints, endpoints_max is %u", n,
                         b->cfg.endpoints_max);
    for (uint32_t i = 0; i < n; i++) {
        if (specs[i].weight == 0 || specs[i].weight > KEEL_BALANCE_WEIGHT_MAX)
            return keel_errf(msg, KEEL_EINVAL, "endpoint %u: weight %u not in 1..%u", i,
                             specs[i].weight, KEEL_BALANCE_WEIGHT_MAX);
        if (specs[i].priority > KEEL_BALANCE_PRIORITY_MAX)
            return keel_errf(msg, KEEL_EINVAL, "endpoint %u: priority %u not in 0..%u", i,
                             specs[i].priority, KEEL_BALANCE_PRIORITY_MAX);
        for (uint32_t j = 0; j < i; j++)
            if (specs[j].id == specs[i].id)
                return keel_errf(msg, KEEL_EINVAL, "endpoints %u and %u share id %llx", j, i,
                                 (unsigned long long)specs[i].id);
    }
    return 0;
}

int keel_balance_set_endpoints(keel_balance_t *b, const keel_balance_spec_t *specs, uint32_t n,
                               keel_errmsg_t *msg)
{
    int err = check_specs(b, specs, n, msg);
    if (!err && b->policy->set_endpoints)
        err = b->policy->set_endpoints(b->data, b, specs, n, msg);
    if (err)
        return err;
    for (uint32_t i = 0; i < n; i++) {
        keel_balance_endpoint_t *e = &b->scratch[i];
        int old = find_in(b->ep, b->n, specs[i].id);
        if (old >= 0) {
            *e = b->ep[old];
        } else {
            memset(e, 0, sizeof(*e));
            e->healthy = true;
            /* a first set (or one after every endpoint was out) has nobody to spare */
            e->ramp = slow_start_on(b) && b->avail_n > 0 ? KEEL_BALANCE_RAMP_PENDING
                                                         : KEEL_BALANCE_RAMP_NONE;
        }
        e->id = specs[i].id;
        e->weight = specs[i].weight;
        e->priority = specs[i].priority;
    }
    keel_balance_endpoint_t *t = b->ep;
    b->ep = b->scratch;
    b->scratch = t;
    b->n = n;
    b->ramp_n = 0;
    for (uint32_t i = 0; i < n; i++)
        b->ramp_n += b->ep[i].ramp != KEEL_BALANCE_RAMP_NONE;
    refresh(b);
    return 0;
}

void keel_balance_set_state(keel_balance_t *b, uint32_t idx, bool healthy, bool ejected)
{
    assert(idx < b->n);
    bool before = keel_balance_usable(b, idx);
    b->ep[idx].healthy = healthy;
    b->ep[idx].ejected = ejected;
    bool after = keel_balance_usable(b, idx);
    if (before == after)
        return;
    if (after)
        ramp_begin(b, &b->ep[idx]);
    else
        ramp_end(b, &b->ep[idx]);
    refresh(b);
}

/*
 * Slow start before a pick: starts pending ramps at now_ms, ends finished ones, and draws which
 * ramping endpoints sit this pick out. Their list (b->avail_pick) replaces b->avail for the pick;
 * returns how many take part (b->avail_n when none rests).
 */
static uint32_t ramp_draw(keel_balance_t *b, int64_t now_ms)
{
    uint32_t taking = 0, resting = 0;
    for (uint32_t k = 0; k < b->avail_n; k++) {
        uint32_t i = b->avail[k];
        keel_balance_endpoint_t *e = &b->ep[i];
        if (e->ramp == KEEL_BALANCE_RAMP_PENDING) {
            e->ramp = KEEL_BALANCE_RAMP_ON;
            e->ramp_since_ms = now_ms;
        }
        if (e->ramp == KEEL_BALANCE_RAMP_ON) {
            uint32_t pm = keel_balance_ramp_permille(b, i, now_ms);
            if (pm >= KEEL_BALANCE_PERMILLE)
                ramp_end(b, e);
            else if (keel_rand_below(&b->rand, KEEL_BALANCE_PERMILLE) >= pm)
                e->resting = true, resting++;
        }
        if (!e->resting)
            b->avail_pick[taking++] = i;
    }
    if (taking == 0) /* every available endpoint would sit out: none does */
        for (uint32_t k = 0; k < b->avail_n; k++)
            b->ep[b->avail[k]].resting = false;
    return resting == 0 || taking == 0 ? b->avail_n : taking;
}

int keel_balance_pick(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t *idx)
{
    if (b->avail_n == 0)
        return KEEL_EEMPTY;
    keel_balance_ctx_t ctx = {.key_hash = key_hash, .now_ms = now_ms, .rand = &b->rand};
    if (b->ramp_n == 0) {
        uint32_t i = b->policy->pick(b->data, b, &ctx);
        assert(i < b->n && keel_balance_available(b, i)); /* a policy that breaks this is a bug */
        *idx = i;
        return 0;
    }
    uint32_t taking = ramp_draw(b, now_ms);
    uint32_t *all = b->avail, all_n = b->avail_n;
    if (taking < all_n) {
        b->avail = b->avail_pick;
        b->avail_n = taking;
    }
    uint32_t i = b->policy->pick(b->data, b, &ctx);
    assert(i < b->n && keel_balance_available(b, i));
    b->avail = all;
    b->avail_n = all_n;
    for (uint32_t k = 0; k < all_n; k++)
        b->ep[all[k]].resting = false;
    *idx = i;
    return 0;
}

static bool in_set(const uint32_t *set_1, uint32_t n, uint32_t i)
{
    for (uint32_t k = 0; k < n; k++)
        if (set_1[k] == i + 1)
            return true;
    return false;
}

/* Endpoints outside the set: usable ones (any level), or available ones (the level in force). */
static uint32_t count_fresh(const keel_balance_t *b, const uint32_t *set_1, uint32_t n,
                            bool available)
{
    uint32_t fresh = 0;
    for (uint32_t i = 0; i < b->n; i++)
        if ((available ? keel_balance_available(b, i) : keel_balance_usable(b, i)) &&
            !in_set(set_1, n, i))
            fresh++;
    return fresh;
}

int keel_balance_pick_avoiding(keel_balance_t *b, uint64_t key_hash, int64_t now_ms,
                               const uint32_t *avoid_1, uint32_t avoid_n, int repicks,
                               uint32_t *idx)
{
    /* every usable endpoint was tried: avoid only the last one (the one that just failed) */
    if (avoid_n > 1 && count_fresh(b, avoid_1, avoid_n, false) == 0) {
        avoid_1 += avoid_n - 1;
        avoid_n = 1;
    }
    int rc = keel_balance_pick(b, key_hash, now_ms, idx);
    if (rc != 0 || !in_set(avoid_1, avoid_n, *idx))
        return rc;
    bool other = count_fresh(b, avoid_1, avoid_n, true) > 0;
    for (int k = 0; rc == 0 && in_set(avoid_1, avoid_n, *idx) && other && k < repicks; k++)
        rc = keel_balance_pick(b, key_hash, now_ms, idx);
    const keel_balance_policy_t *p = b->policy;
    if (rc != 0 || !in_set(avoid_1, avoid_n, *idx) || p->keyed)
        return rc;
    uint32_t best = b->n;
    for (uint32_t i = 0; i < b->n; i++)
        if (!in_set(avoid_1, avoid_n, i) && keel_balance_available(b, i) &&
            (best == b->n || keel_balance_lighter(&b->ep[i], &b->ep[best])))
            best = i;
    for (uint32_t i = 0; best == b->n && i < b->n; i++) /* its level all tried: another level */
        if (!in_set(avoid_1, avoid_n, i) && keel_balance_usable(b, i) &&
            (best == b->n || keel_balance_lighter(&b->ep[i], &b->ep[best])))
            best = i;
    if (best < b->n)
        *idx = best;
    return 0;
}

int keel_balance_pick_other(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t avoid_1,
                            int repicks, uint32_t *idx)
{
    return keel_balance_pick_avoiding(b, key_hash, now_ms, &avoid_1, avoid_1 != 0 ? 1 : 0, repicks,
                                      idx);
}

void keel_balance_start(keel_balance_t *b, uint32_t idx)
{
    assert(idx < b->n);
    b->ep[idx].inflight++;
    if (b->policy->on_start)
        b->policy->on_start(b->data, b, idx);
}

void keel_balance_done(keel_balance_t *b, uint32_t idx)
{
    assert(idx < b->n && b->ep[idx].inflight > 0);
    b->ep[idx].inflight--;
    if (b->policy->on_release)
        b->policy->on_release(b->data, b, idx);
}

void keel_balance_report(keel_balance_t *b, uint32_t idx, const keel_balance_result_t *r)
{
    assert(idx < b->n);
    if (b->policy->on_result)
        b->policy->on_result(b->data, b, idx, r);
}

uint64_t keel_balance_hash(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0x243f6a8885a308d3ull ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = keel_mix64(h ^ w);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    return keel_mix64(h ^ w ^ 0x8000000000000000ull);
}
