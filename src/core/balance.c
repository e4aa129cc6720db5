/* balance.c - endpoint set bookkeeping shared by every policy, and dispatch through its table. */
#include "core/balance.h"

#include <assert.h>
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
}

int keel_balance_config_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    const keel_balance_policy_t *p = cfg->policy;
    if (!p || !p->name || !p->pick)
        return keel_errf(msg, KEEL_EINVAL, "policy must be a table with a name and a pick");
    if (cfg->endpoints_max == 0 || cfg->endpoints_max > KEEL_BALANCE_ENDPOINTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "endpoints_max must be in 1..%u",
                         KEEL_BALANCE_ENDPOINTS_MAX);
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
    if (!b->ep || !b->scratch || !b->avail) {
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
    memset(b, 0, sizeof(*b));
}

/* Recomputes the available list, then lets the policy follow (maglev rebuilds its table). */
static void refresh(keel_balance_t *b)
{
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
        }
        e->id = specs[i].id;
        e->weight = specs[i].weight;
    }
    keel_balance_endpoint_t *t = b->ep;
    b->ep = b->scratch;
    b->scratch = t;
    b->n = n;
    refresh(b);
    return 0;
}

void keel_balance_set_state(keel_balance_t *b, uint32_t idx, bool healthy, bool ejected)
{
    assert(idx < b->n);
    bool before = keel_balance_available(b, idx);
    b->ep[idx].healthy = healthy;
    b->ep[idx].ejected = ejected;
    if (before != keel_balance_available(b, idx))
        refresh(b);
}

int keel_balance_pick(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t *idx)
{
    if (b->avail_n == 0)
        return KEEL_EEMPTY;
    keel_balance_ctx_t ctx = {.key_hash = key_hash, .now_ms = now_ms, .rand = &b->rand};
    uint32_t i = b->policy->pick(b->data, b, &ctx);
    assert(i < b->n && keel_balance_available(b, i)); /* a policy that breaks this is a bug */
    *idx = i;
    return 0;
}

int keel_balance_pick_other(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t avoid_1,
                            int repicks, uint32_t *idx)
{
    int rc = keel_balance_pick(b, key_hash, now_ms, idx);
    for (int k = 0; rc == 0 && avoid_1 == *idx + 1 && b->avail_n > 1 && k < repicks; k++)
        rc = keel_balance_pick(b, key_hash, now_ms, idx);
    const keel_balance_policy_t *p = b->policy;
    if (rc != 0 || avoid_1 != *idx + 1 || b->avail_n < 2 || p == &keel_balance_hash_mod ||
        p == &keel_balance_ring || p == &keel_balance_maglev)
        return rc;
    uint32_t best = b->n;
    for (uint32_t i = 0; i < b->n; i++)
        if (i + 1 != avoid_1 && keel_balance_available(b, i) &&
            (best == b->n || keel_balance_lighter(&b->ep[i], &b->ep[best])))
            best = i;
    if (best < b->n)
        *idx = best;
    return 0;
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
