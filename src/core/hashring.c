/* hashring.c - consistent hash ring: build by sorting virtual-node points, find by binary search.
 */
#include "core/hashring.h"
#include "base/rand.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int keel_hashring_init(keel_hashring_t *r, uint32_t points_max)
{
    memset(r, 0, sizeof(*r));
    if (points_max == 0)
        return KEEL_EINVAL;
    uint32_t bits = 0; /* about 4 points per prefix */
    while (bits < 24 && (4ull << bits) < points_max)
        bits++;
    r->points = calloc(points_max, sizeof(*r->points));
    r->index = calloc(((size_t)1 << bits) + 1, sizeof(*r->index));
    if (!r->points || !r->index) {
        keel_hashring_free(r);
        return KEEL_ENOMEM;
    }
    r->points_max = points_max;
    r->index_bits = bits;
    return 0;
}

void keel_hashring_free(keel_hashring_t *r)
{
    free(r->points);
    free(r->index);
    r->points = NULL;
    r->index = NULL;
    r->points_n = r->points_max = 0;
}

uint64_t keel_hashring_point_hash(uint64_t node_id, uint32_t i)
{
    /* two rounds of splitmix64 so that neighbouring ids and indexes land far apart */
    return keel_mix64(keel_mix64(node_id) ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull));
}

static int point_cmp(const void *a, const void *b)
{
    const keel_hashring_point_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

static uint64_t prefix_of(const keel_hashring_t *r, uint64_t h)
{
    return r->index_bits ? h >> (64 - r->index_bits) : 0;
}

/* index[p] = first position whose hash prefix is >= p; index[1 << bits] = points_n. */
static void build_index(keel_hashring_t *r)
{
    uint64_t prefixes = (uint64_t)1 << r->index_bits;
    uint32_t pos = 0;
    for (uint64_t p = 0; p < prefixes; p++) {
        while (pos < r->points_n && prefix_of(r, r->points[pos].hash) < p)
            pos++;
        r->index[p] = pos;
    }
    r->index[prefixes] = r->points_n;
}

int keel_hashring_build(keel_hashring_t *r, const uint64_t *ids, const uint32_t *weights,
                        uint32_t n, uint32_t vnodes)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += (uint64_t)vnodes * (weights ? weights[i] : 1);
    if (total > r->points_max)
        return KEEL_ETOOBIG;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pts = vnodes * (weights ? weights[i] : 1);
        for (uint32_t v = 0; v < pts; v++) {
            r->points[k].hash = keel_hashring_point_hash(ids[i], v);
            r->points[k].node = i;
            k++;
        }
    }
    assert(k == total);
    qsort(r->points, k, sizeof(*r->points), point_cmp);
    r->points_n = k;
    build_index(r);
    return 0;
}

uint32_t keel_hashring_find(const keel_hashring_t *r, uint64_t key_hash)
{
    assert(r->points_n > 0);
    uint64_t p = prefix_of(r, key_hash);
    /* points before index[p] have smaller prefixes; from index[p + 1] on, larger ones */
    uint32_t lo = r->index[p], hi = r->index[p + 1]; /* first point with hash >= key_hash */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < key_hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->points_n ? 0 : lo;
}
