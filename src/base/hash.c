/* hash.c - seeded 64-bit byte hash. */
#include "base/hash.h"

#include "base/rand.h"

#include <string.h>

#define K1 0x9e3779b97f4a7c15ULL
#define K2 0xc2b2ae3d27d4eb4fULL

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t mix_word(uint64_t w)
{
    w *= K2;
    w = rotl(w, 31);
    return w * K1;
}

uint64_t keel_hash64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ ((uint64_t)n * K1);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h ^= mix_word(w);
        h = rotl(h, 27) * 5 + 0x52dce729;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h ^= mix_word(w ^ ((uint64_t)n << 56));
    }
    return keel_mix64(h);
}
