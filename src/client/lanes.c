/* lanes.c - several keel clients to one cluster (lanes.h). */
#include "client/lanes.h"

#include "base/hash.h"

#include <stdlib.h>

static void lane_closed(keel_client_t *cl);

int keel_client_lanes_init(keel_client_lanes_t *l, keel_loop_t *loop,
                           const keel_client_config_t *cfg, uint32_t n, keel_errmsg_t *msg)
{
    *l = (keel_client_lanes_t){0};
    if (n == 0 || n > KEEL_CLIENT_LANES_MAX || cfg->on_event || cfg->on_push)
        return keel_errf(msg, KEEL_EINVAL, "client lanes: 1..%u lanes, without on_event or on_push",
                         KEEL_CLIENT_LANES_MAX);
    if ((l->c = calloc(n, sizeof(*l->c))) == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "client lanes: out of memory");
    keel_client_config_t c = *cfg;
    c.data = l; /* keel_client_close's callback finds the lanes through it */
    for (uint32_t i = 0; i < n; i++) {
        c.seed = cfg->seed + i; /* each its own backoff jitter */
        int rc = keel_client_init(&l->c[i], loop, &c, msg);
        if (rc != 0) { /* the ones made are closed; the array goes with the last */
            l->open = i;
            if (i == 0) {
                free(l->c);
                l->c = NULL;
            }
            for (uint32_t k = 0; k < i; k++)
                keel_client_close(&l->c[k], lane_closed);
            return rc;
        }
        l->n++;
    }
    l->open = n;
    return 0;
}

uint32_t keel_client_lanes_index(const keel_client_lanes_t *l, const void *key, size_t len)
{
    return (uint32_t)(keel_hash64(key, len, 0) % l->n);
}

keel_client_t *keel_client_lanes_next(keel_client_lanes_t *l)
{
    keel_client_t *c = &l->c[l->next];
    l->next = (l->next + 1) % l->n;
    return c;
}

static void lane_closed(keel_client_t *cl)
{
    keel_client_lanes_t *l = cl->cfg.data;
    if (--l->open > 0)
        return;
    free(l->c);
    l->c = NULL;
    if (l->closed)
        l->closed(l);
}

void keel_client_lanes_close(keel_client_lanes_t *l, void (*closed)(keel_client_lanes_t *l))
{
    l->closed = closed;
    uint32_t n = l->n;
    for (uint32_t i = 0; i < n; i++)
        keel_client_close(&l->c[i], lane_closed);
}
