/* rand.h - seedable deterministic PRNG (xoshiro256**), no global state. */
#ifndef KEEL_BASE_RAND_H
#define KEEL_BASE_RAND_H

#include <stdint.h>

/*
 * Every source of randomness in keel is one of these, owned by its user and
 * seeded explicitly, so a simulator run is reproduced from its seed. The
 * generator is xoshiro256** (Blackman & Vigna, 2018), seeded through
 * splitmix64 so that any 64-bit seed (0 included) gives a good state.
 * Not cryptographic.
 */
typedef struct keel_rand {
    uint64_t s[4];
} keel_rand_t;

void keel_rand_seed(keel_rand_t *r, uint64_t seed);
uint64_t keel_rand_u64(keel_rand_t *r);
/* Uniform in [0, bound); bound > 0. Unbiased (Lemire's multiply-and-reject). */
uint64_t keel_rand_below(keel_rand_t *r, uint64_t bound);
/* Uniform in [lo, hi] inclusive; lo <= hi. */
int64_t keel_rand_range(keel_rand_t *r, int64_t lo, int64_t hi);
/* Uniform double in [0, 1). */
double keel_rand_double(keel_rand_t *r);
/* True with probability p (0..1). */
int keel_rand_chance(keel_rand_t *r, double p);
/* splitmix64 step: a good 64-bit mixer, also used to derive child seeds. */
uint64_t keel_mix64(uint64_t x);

#endif
