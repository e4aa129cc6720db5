/* rand.c - xoshiro256** seeded by splitmix64. */
#include "base/rand.h"

#include <assert.h>

uint64_t keel_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void keel_rand_seed(keel_rand_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ULL;
        r->s[i] = keel_mix64(x);
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t keel_rand_u64(keel_rand_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t keel_rand_below(keel_rand_t *r, uint64_t bound)
{
    assert(bound > 0);
    unsigned __int128 m = (unsigned __int128)keel_rand_u64(r) * bound;
    uint64_t low = (uint64_t)m;
    if (low < bound) {
        uint64_t threshold = -bound % bound;
        while (low < threshold) {
            m = (unsigned __int128)keel_rand_u64(r) * bound;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

int64_t keel_rand_range(keel_rand_t *r, int64_t lo, int64_t hi)
{
    assert(lo <= hi);
    uint64_t span = (uint64_t)hi - (uint64_t)lo;
    if (span == UINT64_MAX)
        return (int64_t)keel_rand_u64(r);
    return (int64_t)((uint64_t)lo + keel_rand_below(r, span + 1));
}

double keel_rand_double(keel_rand_t *r)
{
    return (double)(keel_rand_u64(r) >> 11) * 0x1.0p-53;
}

int keel_rand_chance(keel_rand_t *r, double p)
{
    if (p <= 0.0)
        return 0;
    if (p >= 1.0)
        return 1;
    return keel_rand_double(r) < p;
}
