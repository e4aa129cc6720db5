/* balance_key.c - policies that follow the request's key: hash mod n, consistent ring, maglev. */
#include "core/balance.h"

#include <assert.h>
#include <stdlib.h>

/* nginx ip_hash: key mod n over all endpoints, rehashed past unavailable ones. */
static uint32_t pick_hash(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)data;
    uint64_t h = ctx->key_hash;
    for (uint32_t t = 0; t < KEEL_BALANCE_HASH_TRIES; t++) {
        uint32_t i = (uint32_t)(h % b->n);
        if (keel_balance_available(b, i))
            return i;
        h = keel_mix64(h);
    }
    return b->avail[h % b->avail_n];
}

const keel_balance_policy_t keel_balance_hash_mod = {
    .name = "hash",
    .keyed = true,
    .pick = pick_hash,
};

/* ---- ring --------------------------------------------------------------------- */

/* Bound on ring points (16 bytes each: 1 GiB). */
#define RING_POINTS_MAX (1u << 26)

typedef struct ring {
    keel_hashring_t ring;
    uint64_t *ids; /* scratch for builds, endpoints_max each */
    uint32_t *weights;
    uint32_t vnodes, weight_max;
} ring_t;

static int ring_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    uint64_t points = (uint64_t)cfg->endpoints_max * cfg->ring_vnodes * cfg->ring_weight_max;
    if (cfg->ring_vnodes == 0 || cfg->ring_weight_max == 0 || points > RING_POINTS_MAX)
        return keel_errf(msg, KEEL_EINVAL,
                         "ring_vnodes and ring_weight_max must be >= 1 and "
                         "endpoints_max * ring_vnodes * ring_weight_max <= 2^26");
    if (cfg->ring_weight_max > KEEL_BALANCE_WEIGHT_MAX)
        return keel_errf(msg, KEEL_EINVAL, "ring_weight_max must be <= %u",
                         KEEL_BALANCE_WEIGHT_MAX);
    return 0;
}

static void ring_free(void *data)
{
    ring_t *r = data;
    if (r->ring.points)
        keel_hashring_free(&r->ring);
    free(r->ids);
    free(r->weights);
    free(r);
}

static int ring_init(const keel_balance_config_t *cfg, void **data, keel_errmsg_t *msg)
{
    uint32_t max = cfg->endpoints_max;
    ring_t *r = calloc(1, sizeof(*r));
    if (!r)
        return keel_errf(msg, KEEL_ENOMEM, "ring for %u endpoints", max);
    r->vnodes = cfg->ring_vnodes;
    r->weight_max = cfg->ring_weight_max;
    r->ids = calloc(max, sizeof(*r->ids));
    r->weights = calloc(max, sizeof(*r->weights));
    if (!r->ids || !r->weights || keel_hashring_init(&r->ring, max * r->vnodes * r->weight_max)) {
        ring_free(r);
        return keel_errf(msg, KEEL_ENOMEM, "ring for %u endpoints", max);
    }
    *data = r;
    return 0;
}

static int ring_set_endpoints(void *data, const keel_balance_t *b, const keel_balance_spec_t *specs,
                              uint32_t n, keel_errmsg_t *msg)
{
    (void)b;
    ring_t *r = data;
    for (uint32_t i = 0; i < n; i++) {
        if (specs[i].weight > r->weight_max)
            return keel_errf(msg, KEEL_EINVAL, "endpoint %u: weight %u not in 1..%u", i,
                             specs[i].weight, r->weight_max);
        r->ids[i] = specs[i].id;
        r->weights[i] = specs[i].weight;
    }
    int err = keel_hashring_build(&r->ring, r->ids, r->weights, n, r->vnodes);
    assert(err == 0); /* points_max covers endpoints_max * vnodes * weight_max */
    return err;
}

/* An unavailable owner passes the key clockwise to the next available node. */
static uint32_t pick_ring(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    const keel_hashring_t *r = &((ring_t *)data)->ring;
    uint32_t pos = keel_hashring_find(r, ctx->key_hash);
    for (;;) { /* terminates: some node is available, and every node has points */
        uint32_t i = r->points[pos].node;
        if (keel_balance_available(b, i))
            return i;
        pos = pos + 1 == r->points_n ? 0 : pos + 1;
    }
}

const keel_balance_policy_t keel_balance_ring = {
    .name = "ring",
    .keyed = true,
    .validate = ring_validate,
    .init = ring_init,
    .free = ring_free,
    .set_endpoints = ring_set_endpoints,
    .pick = pick_ring,
};

const keel_hashring_t *keel_balance_ring_of(const keel_balance_t *b)
{
    return b->policy == &keel_balance_ring ? &((const ring_t *)b->data)->ring : NULL;
}

/* ---- maglev ------------------------------------------------------------------- */

typedef struct maglev {
    keel_maglev_t maglev;
    uint64_t *ids; /* scratch for builds, endpoints_max each */
    uint8_t *include;
} maglev_t;

static int maglev_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg)
{
    if (!keel_maglev_is_prime(cfg->maglev_table_size) ||
        cfg->maglev_table_size <= cfg->endpoints_max ||
        cfg->maglev_table_size > KEEL_MAGLEV_TABLE_SIZE_MAX)
        return keel_errf(msg, KEEL_EINVAL,
                         "maglev_table_size must be a prime > endpoints_max and <= %u",
                         KEEL_MAGLEV_TABLE_SIZE_MAX);
    return 0;
}

static void maglev_free(void *data)
{
    maglev_t *m = data;
    if (m->maglev.table)
        keel_maglev_free(&m->maglev);
    free(m->ids);
    free(m->include);
    free(m);
}

static int maglev_init(const keel_balance_config_t *cfg, void **data, keel_errmsg_t *msg)
{
    uint32_t max = cfg->endpoints_max;
    maglev_t *m = calloc(1, sizeof(*m));
    if (!m)
        return keel_errf(msg, KEEL_ENOMEM, "maglev for %u endpoints", max);
    m->ids = calloc(max, sizeof(*m->ids));
    m->include = calloc(max, sizeof(*m->include));
    if (!m->ids || !m->include || keel_maglev_init(&m->maglev, cfg->maglev_table_size, max)) {
        maglev_free(m);
        return keel_errf(msg, KEEL_ENOMEM, "maglev for %u endpoints", max);
    }
    *data = m;
    return 0;
}

/* Rebuilt over the available endpoints on every change, so lookups need no walk. */
static void maglev_refresh(void *data, const keel_balance_t *b)
{
    maglev_t *m = data;
    for (uint32_t i = 0; i < b->n; i++) {
        m->ids[i] = b->ep[i].id;
        m->include[i] = keel_balance_available(b, i);
    }
    keel_maglev_build(&m->maglev, m->ids, m->include, b->n);
}

static uint32_t pick_maglev(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)b;
    return keel_maglev_lookup(&((maglev_t *)data)->maglev, ctx->key_hash);
}

const keel_balance_policy_t keel_balance_maglev = {
    .name = "maglev",
    .keyed = true,
    .validate = maglev_validate,
    .init = maglev_init,
    .free = maglev_free,
    .refresh = maglev_refresh,
    .pick = pick_maglev,
};

const keel_maglev_t *keel_balance_maglev_of(const keel_balance_t *b)
{
    return b->policy == &keel_balance_maglev ? &((const maglev_t *)b->data)->maglev : NULL;
}
