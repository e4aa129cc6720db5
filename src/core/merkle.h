/* merkle.h - a Merkle tree over key-hash ranges, for anti-entropy between replicas. */
#ifndef KEEL_CORE_MERKLE_H
#define KEEL_CORE_MERKLE_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The key-hash space is cut into 2^depth equal ranges (leaf i holds the keys
 * whose 64-bit hash has top `depth` bits equal to i). A leaf's hash is the sum
 * (mod 2^64) of item hashes, one per key, item = H(key, digest of the key's
 * causal state): a sum, so that a replica updates it in O(depth) when one key
 * changes, without re-reading its range (Merkle, 1987; Dynamo, SOSP 2007
 * section 4.7; Cassandra builds the same trees per token range). Inner nodes
 * hash their two children. Two replicas whose trees differ exchange only the
 * leaves under differing inner nodes, then the keys of those ranges.
 *
 * Layout: node[1] is the root, node[i]'s children are node[2i], node[2i+1];
 * leaves are node[2^depth .. 2^(depth+1)). Memory: 2^(depth+1) * 8 bytes
 * (16 KiB at depth 10, 1 MiB at KEEL_MERKLE_DEPTH_MAX).
 */
#define KEEL_MERKLE_DEPTH_MAX 16u

typedef struct keel_merkle {
    uint32_t depth;
    uint64_t *node; /* 2^(depth+1) entries, owned; node[0] unused */
} keel_merkle_t;

/* KEEL_EINVAL past the depth limit, KEEL_ENOMEM. An empty tree: no keys. */
int keel_merkle_init(keel_merkle_t *t, uint32_t depth);
void keel_merkle_free(keel_merkle_t *t);
uint32_t keel_merkle_leaf_of(const keel_merkle_t *t, uint64_t key_hash);
/* First and last key hash of leaf i's range. */
void keel_merkle_leaf_range(const keel_merkle_t *t, uint32_t leaf, uint64_t *lo, uint64_t *hi);
/* The item of a key whose state has this digest; 0 stands for "no key". */
uint64_t keel_merkle_item(const void *key, size_t len, uint64_t digest);
/* A key's item changed from old_item to new_item (either may be 0: insert, delete). */
void keel_merkle_update(keel_merkle_t *t, uint64_t key_hash, uint64_t old_item, uint64_t new_item);
uint64_t keel_merkle_root(const keel_merkle_t *t);
/*
 * The leaves whose hashes differ between a and b (same depth), in order,
 * visiting only subtrees whose roots differ; up to leaves_max of them are
 * written, and the count of all differing leaves is returned. *compared (may
 * be NULL) gets the number of nodes compared.
 */
uint32_t keel_merkle_diff(const keel_merkle_t *a, const keel_merkle_t *b, uint32_t *leaves,
                          uint32_t leaves_max, uint32_t *compared);

#endif
