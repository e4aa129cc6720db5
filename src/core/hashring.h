/* hashring.h - consistent hash ring with virtual nodes (Karger et al. 1997; ketama-style). */
#ifndef KEEL_CORE_HASHRING_H
#define KEEL_CORE_HASHRING_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Every node owns vnodes * weight points on a 64-bit circle, at
 * keel_hashring_point_hash(node_id, i); a key belongs to the first point
 * clockwise from its hash. Because a node's points depend only on its id,
 * adding or removing one node moves only the keys on its own arcs: about 1/N
 * of them, and the points of every other node stay where they were.
 *
 * With k points per node the share of a node has a relative standard
 * deviation of about sqrt((1 - 1/N) / k): 7.5% for k = 160 and N = 10 (the
 * arcs follow a Dirichlet distribution). More points buy evenness at the cost
 * of memory (16 bytes a point) and build time (a sort).
 *
 * Lookup is a binary search, O(log(points)), narrowed first by a prefix
 * index: index[p] is the first point whose hash has top bits >= p, with
 * about 4 points per prefix, so the search touches one index word and a
 * handful of neighbouring points instead of ~18 scattered ones at 300k points.
 *
 * The ring holds positions only; the caller (balance.c) decides what to do
 * when the node at a position is unavailable (walk on clockwise).
 */

typedef struct keel_hashring_point {
    uint64_t hash;
    uint32_t node; /* index into the caller's node array */
} keel_hashring_point_t;

typedef struct keel_hashring {
    keel_hashring_point_t *points; /* sorted by hash, then node */
    uint32_t points_n;
    uint32_t points_max;
    uint32_t *index;     /* (1 << index_bits) + 1 entries */
    uint32_t index_bits; /* fixed at init from points_max */
} keel_hashring_t;

/* Allocates room for points_max points and their prefix index (the only allocations). */
int keel_hashring_init(keel_hashring_t *r, uint32_t points_max);
void keel_hashring_free(keel_hashring_t *r);

/*
 * Rebuilds the ring for nodes 0..n-1 with the given ids and weights (NULL:
 * all 1). KEEL_ETOOBIG if vnodes * sum(weights) > points_max (ring unchanged).
 */
int keel_hashring_build(keel_hashring_t *r, const uint64_t *ids, const uint32_t *weights,
                        uint32_t n, uint32_t vnodes);

/* Position (index into points) owning key_hash; the ring must not be empty. */
uint32_t keel_hashring_find(const keel_hashring_t *r, uint64_t key_hash);

/* Where virtual node i of a node with this id sits on the circle. */
uint64_t keel_hashring_point_hash(uint64_t node_id, uint32_t i);

#endif
