/* maglev.h - Maglev consistent hashing lookup table (Eisenbud et al., NSDI 2016, section 3.4). */
#ifndef KEEL_CORE_MAGLEV_H
#define KEEL_CORE_MAGLEV_H

#include "base/err.h"

#include <stdint.h>

/*
 * A table of M slots (M prime) filled so that every node gets M/N slots, give
 * or take one, and a node's slots change little when another node joins or
 * leaves. Node i walks its own permutation of the slots,
 *     slot_j = (offset_i + j * skip_i) mod M,
 *     offset_i = h1(id) mod M,  skip_i = h2(id) mod (M - 1) + 1,
 * and the nodes take turns claiming their next unclaimed slot until the table
 * is full (the paper's Pseudocode 1). M prime makes every permutation visit
 * all slots. Lookup is table[key mod M]: O(1), one memory access.
 *
 * The paper recommends M much larger than N (M >= 100 N keeps the imbalance
 * under about 1%); the default 65537 suits up to ~650 nodes, 655373 more. A
 * build costs about M ln M steps and touches only memory allocated at init.
 * Nodes are identified by 64-bit ids (stable across updates) and by their
 * index 0..n-1 in the current build; include[i] = 0 leaves node i out (an
 * unhealthy or ejected endpoint), which is the same as removing it.
 */

#define KEEL_MAGLEV_TABLE_SIZE_DEFAULT 65537u
#define KEEL_MAGLEV_TABLE_SIZE_MAX 16777213u /* prime */
#define KEEL_MAGLEV_NONE UINT32_MAX

typedef struct keel_maglev {
    uint32_t *table; /* M node indexes */
    uint32_t table_size;
    uint32_t nodes_max;
    uint32_t nodes_n;               /* nodes included in the last build */
    uint64_t *offset, *skip, *next; /* per node, scratch for builds (next: next candidate slot) */
} keel_maglev_t;

/* table_size must be prime and > nodes_max; KEEL_EINVAL or KEEL_ENOMEM. */
int keel_maglev_init(keel_maglev_t *m, uint32_t table_size, uint32_t nodes_max);
void keel_maglev_free(keel_maglev_t *m);
/* Rebuilds for nodes 0..n-1 (n <= nodes_max); include may be NULL (all in). */
void keel_maglev_build(keel_maglev_t *m, const uint64_t *ids, const uint8_t *include, uint32_t n);
/* Node index for key_hash, or KEEL_MAGLEV_NONE if no node was included. */
static inline uint32_t keel_maglev_lookup(const keel_maglev_t *m, uint64_t key_hash)
{
    return m->nodes_n ? m->table[key_hash % m->table_size] : KEEL_MAGLEV_NONE;
}
int keel_maglev_is_prime(uint32_t n);

#endif
