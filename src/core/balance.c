/* balance.c - endpoint set bookkeeping and the eight pick policies. */
#include "core/balance.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void keel_balance_config_default(keel_balance_config_t *cfg)
{
    cfg->policy = KEEL_BALANCE_ROUND_ROBIN;
    cfg->endpoints_max = 1024;
    cfg->ring_vnodes = 160;
    cfg->ring_weight_max = 1;
    cfg->maglev_table_size = KEEL_MAGLEV_TABLE_SIZE_DEFAULT;
    cfg->seed = 1;
}

int keel_balance_config_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->policy > KEEL_BALANCE_MAGLEV)
        return keel_errf(msg, KEEL_EINVAL, "unknown policy %d", (int)cfg->policy);
    if (cfg->endpoints_max == 0 || cfg->endpoints_max > KEEL_BALANCE_ENDPOINTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "endpoints_max must be in 1..%u",
                         KEEL_BALANCE_ENDPOINTS_MAX);
    if (cfg->policy == KEEL_BALANCE_RING) {
        uint64_t points = (uint64_t)cfg->endpoints_max * cfg->ring_vnodes * cfg->ring_weight_max;
        if (cfg->ring_vnodes == 0 || cfg->ring_weight_max == 0 || points > (1u << 26))
            return keel_errf(msg, KEEL_EINVAL,
                             "ring_vnodes and ring_weight_max must be >= 1 and "
                             "endpoints_max * ring_vnodes * ring_weight_max <= 2^26");
    }
    if (cfg->policy == KEEL_BALANCE_MAGLEV && (!keel_maglev_is_prime(cfg->maglev_table_size) ||
                                               cfg->maglev_table_size <= cfg->endpoints_max ||
                                               cfg->maglev_table_size > KEEL_MAGLEV_TABLE_SIZE_MAX))
        return keel_errf(msg, KEEL_EINVAL,
                         "maglev_table_size must be a prime > endpoints_max and <= %u",
                         KEEL_MAGLEV_TABLE_SIZE_MAX);
    return 0;
}

int keel_balance_init(keel_balance_t *b, const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_balance_config_validate(cfg, msg);
    if (err)
        return err;
    memset(b, 0, sizeof(*b));
    b->cfg = *cfg;
    uint32_t max = cfg->endpoints_max;
    keel_rand_seed(&b->rand, cfg->seed);
    b->ep = calloc(max, sizeof(*b->ep));
    b->scratch = calloc(max, sizeof(*b->scratch));
    b->avail = calloc(max, sizeof(*b->avail));
    b->ids = calloc(max, sizeof(*b->ids));
    b->weights = calloc(max, sizeof(*b->weights));
    b->include = calloc(max, sizeof(*b->include));
    if (!b->ep || !b->scratch || !b->avail || !b->ids || !b->weights || !b->include)
        goto err_nomem;
    if (cfg->policy == KEEL_BALANCE_RING &&
        keel_hashring_init(&b->ring, max * cfg->ring_vnodes * cfg->ring_weight_max) != 0)
        goto err_nomem;
    if (cfg->policy == KEEL_BALANCE_MAGLEV &&
        keel_maglev_init(&b->maglev, cfg->maglev_table_size, max) != 0)
        goto err_nomem;
    return 0;
err_nomem:
    keel_balance_free(b);
    return keel_errf(msg, KEEL_ENOMEM, "balancer for %u endpoints", max);
}

void keel_balance_free(keel_balance_t *b)
{
    free(b->ep);
    free(b->scratch);
    free(b->avail);
    free(b->ids);
    free(b->weights);
    free(b->include);
    if (b->ring.points)
        keel_hashring_free(&b->ring);
    if (b->maglev.table)
        keel_maglev_free(&b->maglev);
    memset(b, 0, sizeof(*b));
}

/* Recomputes the available list and, for MAGLEV, the table. */
static void refresh(keel_balance_t *b)
{
    b->avail_n = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        b->include[i] = keel_balance_available(b, i);
        if (b->include[i])
            b->avail[b->avail_n++] = i;
    }
    if (b->cfg.policy == KEEL_BALANCE_MAGLEV) {
        for (uint32_t i = 0; i < b->n; i++)
            b->ids[i] = b->ep[i].id;
        keel_maglev_build(&b->maglev, b->ids, b->include, b->n);
    }
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
    uint32_t wmax =
        b->cfg.policy == KEEL_BALANCE_RING ? b->cfg.ring_weight_max : KEEL_BALANCE_WEIGHT_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (specs[i].weight == 0 || specs[i].weight > wmax)
            return keel_errf(msg, KEEL_EINVAL, "endpoint %u: weight %u not in 1..%u", i,
                             specs[i].weight, wmax);
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
    if (err)
        return err;
    if (b->cfg.policy == KEEL_BALANCE_RING) {
        for (uint32_t i = 0; i < n; i++) {
            b->ids[i] = specs[i].id;
            b->weights[i] = specs[i].weight;
        }
        err = keel_hashring_build(&b->ring, b->ids, b->weights, n, b->cfg.ring_vnodes);
        assert(err == 0); /* points_max covers endpoints_max * vnodes * weight_max */
    }
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
    if (b->cursor >= n)
        b->cursor = 0;
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

void keel_balance_start(keel_balance_t *b, uint32_t idx)
{
    assert(idx < b->n);
    b->ep[idx].inflight++;
}

void keel_balance_done(keel_balance_t *b, uint32_t idx)
{
    assert(idx < b->n && b->ep[idx].inflight > 0);
    b->ep[idx].inflight--;
}

/* ---- policies ----------------------------------------------------------------- */

static uint32_t pick_rr(keel_balance_t *b)
{
    for (;;) { /* terminates: avail_n > 0 */
        uint32_t i = b->cursor++ % b->n;
        if (b->cursor >= b->n)
            b->cursor = 0;
        if (keel_balance_available(b, i))
            return i;
    }
}

/* nginx ngx_http_upstream_get_peer(): smooth weighted round robin. */
static uint32_t pick_wrr(keel_balance_t *b)
{
    int64_t total = 0;
    uint32_t best = UINT32_MAX;
    for (uint32_t k = 0; k < b->avail_n; k++) {
        keel_balance_endpoint_t *e = &b->ep[b->avail[k]];
        e->wrr_current += e->weight;
        total += e->weight;
        if (best == UINT32_MAX || e->wrr_current > b->ep[best].wrr_current)
            best = b->avail[k];
    }
    b->ep[best].wrr_current -= total;
    return best;
}

/* a carries less load per unit of weight than b: a.inflight/a.w < b.inflight/b.w */
static bool lighter(const keel_balance_endpoint_t *a, const keel_balance_endpoint_t *x)
{
    return (uint64_t)a->inflight * x->weight < (uint64_t)x->inflight * a->weight;
}

static uint32_t pick_least_conn(keel_balance_t *b)
{
    uint32_t start = b->cursor++ % b->avail_n;
    if (b->cursor >= b->avail_n)
        b->cursor = 0;
    uint32_t best = b->avail[start];
    for (uint32_t k = 1; k < b->avail_n; k++) {
        uint32_t i = b->avail[(start + k) % b->avail_n];
        if (lighter(&b->ep[i], &b->ep[best]))
            best = i;
    }
    return best;
}

static uint32_t pick_p2c(keel_balance_t *b)
{
    if (b->avail_n == 1)
        return b->avail[0];
    uint32_t x = (uint32_t)keel_rand_below(&b->rand, b->avail_n);
    uint32_t y = (uint32_t)keel_rand_below(&b->rand, b->avail_n - 1);
    y += y >= x; /* distinct from x, still uniform */
    uint32_t i = b->avail[x], j = b->avail[y];
    return lighter(&b->ep[j], &b->ep[i]) ? j : i;
}

static uint32_t pick_hash(keel_balance_t *b, uint64_t h)
{
    for (uint32_t t = 0; t < KEEL_BALANCE_HASH_TRIES; t++) {
        uint32_t i = (uint32_t)(h % b->n);
        if (keel_balance_available(b, i))
            return i;
        h = keel_mix64(h);
    }
    return b->avail[h % b->avail_n];
}

static uint32_t pick_ring(keel_balance_t *b, uint64_t h)
{
    const keel_hashring_t *r = &b->ring;
    uint32_t pos = keel_hashring_find(r, h);
    for (;;) { /* terminates: some node is available, and every node has points */
        uint32_t i = r->points[pos].node;
        if (keel_balance_available(b, i))
            return i;
        pos = pos + 1 == r->points_n ? 0 : pos + 1;
    }
}

int keel_balance_pick(keel_balance_t *b, uint64_t key_hash, uint32_t *idx)
{
    if (b->avail_n == 0)
        return KEEL_EEMPTY;
    uint32_t i = 0;
    switch (b->cfg.policy) {
    case KEEL_BALANCE_ROUND_ROBIN:
        i = pick_rr(b);
        break;
    case KEEL_BALANCE_WEIGHTED_RR:
        i = pick_wrr(b);
        break;
    case KEEL_BALANCE_LEAST_CONN:
        i = pick_least_conn(b);
        break;
    case KEEL_BALANCE_P2C:
        i = pick_p2c(b);
        break;
    case KEEL_BALANCE_RANDOM:
        i = b->avail[keel_rand_below(&b->rand, b->avail_n)];
        break;
    case KEEL_BALANCE_HASH:
        i = pick_hash(b, key_hash);
        break;
    case KEEL_BALANCE_RING:
        i = pick_ring(b, key_hash);
        break;
    case KEEL_BALANCE_MAGLEV:
        i = keel_maglev_lookup(&b->maglev, key_hash);
        break;
    }
    assert(i < b->n && keel_balance_available(b, i));
    *idx = i;
    return 0;
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

const char *keel_balance_policy_name(keel_balance_policy_t p)
{
    static const char *const names[] = {"round_robin", "weighted_rr", "least_conn", "p2c",
                                        "random",      "hash",        "ring",       "maglev"};
    return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}
