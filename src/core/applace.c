/* applace.c - preference lists on the consistent-hash ring (see applace.h). */
#include "core/applace.h"

#include "base/hash.h"

#include <assert.h>

int keel_applace_init(keel_applace_t *p, uint32_t nodes_max, uint32_t vnodes)
{
    if (nodes_max == 0 || nodes_max > KEEL_APPLACE_NODES_MAX || vnodes == 0 || vnodes > 4096)
        return KEEL_EINVAL;
    p->nodes_n = 0;
    p->vnodes = vnodes;
    return keel_hashring_init(&p->ring, nodes_max * vnodes);
}

void keel_applace_free(keel_applace_t *p)
{
    keel_hashring_free(&p->ring);
}

int keel_applace_build(keel_applace_t *p, const uint64_t *ids, uint32_t n)
{
    int rc = keel_hashring_build(&p->ring, ids, NULL, n, p->vnodes);
    if (rc == 0)
        p->nodes_n = n;
    return rc;
}

uint64_t keel_applace_key_hash(const void *key, size_t len)
{
    return keel_hash64(key, len, 0x61706b6579ull);
}

uint32_t keel_applace_prefs(const keel_applace_t *p, uint64_t key_hash, uint32_t *out,
                            uint32_t out_max)
{
    assert(out_max <= KEEL_APPLACE_NODES_MAX);
    if (p->nodes_n == 0 || out_max == 0)
        return 0;
    uint64_t seen = 0; /* bit i: node i is on the list (nodes_n <= 64) */
    uint32_t k = 0, want = out_max < p->nodes_n ? out_max : p->nodes_n;
    uint32_t pos = keel_hashring_find(&p->ring, key_hash);
    for (uint32_t steps = 0; steps < p->ring.points_n && k < want; steps++) {
        uint32_t node = p->ring.points[pos].node;
        if (!(seen & ((uint64_t)1 << node))) {
            seen |= (uint64_t)1 << node;
            out[k++] = node;
        }
        pos = pos + 1 == p->ring.points_n ? 0 : pos + 1;
    }
    return k;
}
