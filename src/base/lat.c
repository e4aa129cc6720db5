/* lat.c - log-linear latency histogram (lat.h). */
#include "base/lat.h"

#include <string.h>

#define TOP ((UINT64_C(1) << (KEEL_LAT_MSB_MAX + 1)) - 1)

static size_t index_of(uint64_t v)
{
    if (v < KEEL_LAT_SUB)
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
    unsigned shift = msb - 6u;
    size_t sub = (size_t)((v >> shift) & (KEEL_LAT_SUB - 1));
    return KEEL_LAT_SUB + (size_t)shift * KEEL_LAT_SUB + sub;
}

/* The largest value that falls in bucket i. */
static uint64_t upper_of(size_t i)
{
    if (i < KEEL_LAT_SUB)
        return i;
    size_t shift = (i - KEEL_LAT_SUB) / KEEL_LAT_SUB, sub = (i - KEEL_LAT_SUB) % KEEL_LAT_SUB;
    return (((uint64_t)(KEEL_LAT_SUB + sub) + 1) << shift) - 1;
}

void keel_lat_reset(keel_lat_t *h)
{
    memset(h, 0, sizeof(*h));
}

void keel_lat_record(keel_lat_t *h, uint64_t v)
{
    if (v > TOP)
        v = TOP;
    h->counts[index_of(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
}

uint64_t keel_lat_percentile(const keel_lat_t *h, double p)
{
    if (h->n == 0)
        return 0;
    if (p <= 0)
        return h->min;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.999999999);
    if (want == 0)
        want = 1;
    if (want > h->n)
        want = h->n;
    uint64_t seen = 0;
    for (size_t i = 0; i < KEEL_LAT_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t u = upper_of(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

void keel_lat_merge(keel_lat_t *dst, const keel_lat_t *src)
{
    if (src->n == 0)
        return;
    for (size_t i = 0; i < KEEL_LAT_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    if (dst->n == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
}

double keel_lat_mean(const keel_lat_t *h)
{
    return h->n ? (double)h->sum / (double)h->n : 0.0;
}
