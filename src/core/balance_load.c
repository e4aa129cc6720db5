/* balance_load.c - key-less policies: round robin, smooth weighted RR, least-conn, P2C, random. */
#include "core/balance.h"

#include <stdlib.h>

/*
 * Round robin and least-conn keep a rotating cursor. It is reset when an
 * endpoint update leaves it past the new end, so a sequence after an update
 * starts from the first endpoint rather than from cursor mod n.
 */
typedef struct cursor {
    uint32_t next;
} cursor_t;

static int cursor_init(const keel_balance_config_t *cfg, void **data, keel_errmsg_t *msg)
{
    cursor_t *c = calloc(1, sizeof(*c));
    if (!c)
        return keel_errf(msg, KEEL_ENOMEM, "%s cursor", cfg->policy->name);
    *data = c;
    return 0;
}

static void cursor_free(void *data)
{
    free(data);
}

static int cursor_set_endpoints(void *data, const keel_balance_t *b,
                                const keel_balance_spec_t *specs, uint32_t n, keel_errmsg_t *msg)
{
    (void)b, (void)specs, (void)msg;
    cursor_t *c = data;
    if (c->next >= n)
        c->next = 0;
    return 0;
}

/* The cursor's position mod m, then one step on (wrapping at m). */
static uint32_t cursor_take(cursor_t *c, uint32_t m)
{
    uint32_t at = c->next++ % m;
    if (c->next >= m)
        c->next = 0;
    return at;
}

static uint32_t pick_rr(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)ctx;
    cursor_t *c = data;
    for (;;) { /* terminates: avail_n > 0 */
        uint32_t i = cursor_take(c, b->n);
        if (keel_balance_available(b, i))
            return i;
    }
}

const keel_balance_policy_t keel_balance_round_robin = {
    .name = "round_robin",
    .init = cursor_init,
    .free = cursor_free,
    .set_endpoints = cursor_set_endpoints,
    .pick = pick_rr,
};

/* nginx ngx_http_upstream_get_peer(): smooth weighted round robin; policy_word is current. */
static uint32_t pick_wrr(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)data, (void)ctx;
    int64_t total = 0;
    uint32_t best = UINT32_MAX;
    for (uint32_t k = 0; k < b->avail_n; k++) {
        keel_balance_endpoint_t *e = &b->ep[b->avail[k]];
        e->policy_word += e->weight;
        total += e->weight;
        if (best == UINT32_MAX || e->policy_word > b->ep[best].policy_word)
            best = b->avail[k];
    }
    b->ep[best].policy_word -= total;
    return best;
}

const keel_balance_policy_t keel_balance_weighted_rr = {
    .name = "weighted_rr",
    .pick = pick_wrr,
};

static uint32_t pick_least_conn(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)ctx;
    cursor_t *c = data;
    /* not cursor_take(): avail_n changes from pick to pick while an endpoint ramps up (slow
     * start), and wrapping at a count of 1 would send every rotation back to the first */
    uint32_t start = c->next++ % b->avail_n;
    uint32_t best = b->avail[start];
    for (uint32_t k = 1; k < b->avail_n; k++) {
        uint32_t i = b->avail[(start + k) % b->avail_n];
        if (keel_balance_lighter(&b->ep[i], &b->ep[best]))
            best = i;
    }
    return best;
}

const keel_balance_policy_t keel_balance_least_conn = {
    .name = "least_conn",
    .init = cursor_init,
    .free = cursor_free,
    .set_endpoints = cursor_set_endpoints,
    .pick = pick_least_conn,
};

static uint32_t pick_p2c(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)data;
    if (b->avail_n == 1)
        return b->avail[0];
    uint32_t x = (uint32_t)keel_rand_below(ctx->rand, b->avail_n);
    uint32_t y = (uint32_t)keel_rand_below(ctx->rand, b->avail_n - 1);
    y += y >= x; /* distinct from x, still uniform */
    uint32_t i = b->avail[x], j = b->avail[y];
    return keel_balance_lighter(&b->ep[j], &b->ep[i]) ? j : i;
}

const keel_balance_policy_t keel_balance_p2c = {
    .name = "p2c",
    .pick = pick_p2c,
};

static uint32_t pick_random(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx)
{
    (void)data;
    return b->avail[keel_rand_below(ctx->rand, b->avail_n)];
}

const keel_balance_policy_t keel_balance_random = {
    .name = "random",
    .pick = pick_random,
};
