/* merkle.c - Merkle tree over key-hash ranges (see merkle.h). */
#include "core/merkle.h"

#include "base/hash.h"

#include <assert.h>
#include <stdlib.h>

static uint64_t inner(uint64_t l, uint64_t r)
{
    uint64_t two[2] = {l, r};
    return keel_hash64(two, sizeof(two), 0x6d65726b6cull);
}

int keel_merkle_init(keel_merkle_t *t, uint32_t depth)
{
    if (depth > KEEL_MERKLE_DEPTH_MAX)
        return KEEL_EINVAL;
    size_t n = (size_t)2 << depth;
    t->node = calloc(n, sizeof(*t->node));
    if (!t->node)
        return KEEL_ENOMEM;
    t->depth = depth;
    for (size_t i = ((size_t)1 << depth) - 1; i >= 1; i--)
        t->node[i] = inner(t->node[2 * i], t->node[2 * i + 1]);
    return 0;
}

void keel_merkle_free(keel_merkle_t *t)
{
    free(t->node);
    t->node = NULL;
}

uint32_t keel_merkle_leaf_of(const keel_merkle_t *t, uint64_t key_hash)
{
    return t->depth ? (uint32_t)(key_hash >> (64 - t->depth)) : 0;
}

void keel_merkle_leaf_range(const keel_merkle_t *t, uint32_t leaf, uint64_t *lo, uint64_t *hi)
{
    if (t->depth == 0) {
        *lo = 0, *hi = UINT64_MAX;
        return;
    }
    *lo = (uint64_t)leaf << (64 - t->depth);
    *hi = *lo | (UINT64_MAX >> t->depth);
}

uint64_t keel_merkle_item(const void *key, size_t len, uint64_t digest)
{
    uint64_t h = keel_hash64(key, len, digest ^ 0x6974656dull);
    return h ? h : 1; /* 0 means "no key" */
}

void keel_merkle_update(keel_merkle_t *t, uint64_t key_hash, uint64_t old_item, uint64_t new_item)
{
    size_t i = ((size_t)1 << t->depth) + keel_merkle_leaf_of(t, key_hash);
    t->node[i] += new_item - old_item;
    for (i /= 2; i >= 1; i /= 2)
        t->node[i] = inner(t->node[2 * i], t->node[2 * i + 1]);
}

uint64_t keel_merkle_root(const keel_merkle_t *t)
{
    return t->node[1];
}

static void walk(const keel_merkle_t *a, const keel_merkle_t *b, size_t i, uint32_t *leaves,
                 uint32_t leaves_max, uint32_t *found, uint32_t *compared)
{
    (*compared)++;
    if (a->node[i] == b->node[i])
        return;
    size_t first_leaf = (size_t)1 << a->depth;
    if (i >= first_leaf) {
        if (*found < leaves_max)
            leaves[*found] = (uint32_t)(i - first_leaf);
        (*found)++;
        return;
    }
    walk(a, b, 2 * i, leaves, leaves_max, found, compared);
    walk(a, b, 2 * i + 1, leaves, leaves_max, found, compared);
}

uint32_t keel_merkle_diff(const keel_merkle_t *a, const keel_merkle_t *b, uint32_t *leaves,
                          uint32_t leaves_max, uint32_t *compared)
{
    assert(a->depth == b->depth);
    uint32_t found = 0, cmp = 0;
    walk(a, b, 1, leaves, leaves_max, &found, &cmp); /* recursion depth <= KEEL_MERKLE_DEPTH_MAX */
    if (compared)
        *compared = cmp;
    return found;
}
