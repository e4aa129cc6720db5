/* hash.h - fast seeded 64-bit hash for hash tables, rings and sharding (not cryptographic). */
#ifndef KEEL_BASE_HASH_H
#define KEEL_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Reads 8 bytes at a time, mixes each word with a multiply/xor-shift and
 * finishes with splitmix64's avalanche. Deterministic across runs and
 * machines of the same endianness (keel targets little-endian), so it may
 * place keys on a ring that several processes must agree on.
 */
uint64_t keel_hash64(const void *data, size_t n, uint64_t seed);

#endif
