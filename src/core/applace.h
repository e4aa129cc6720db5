/* applace.h - where a key of the AP keyspace lives: its N home nodes and the fallbacks after them.
 */
#ifndef KEEL_CORE_APPLACE_H
#define KEEL_CORE_APPLACE_H

#include "core/hashring.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The preference list of a key (Dynamo, SOSP 2007, section 4.3): walk the
 * consistent-hash ring (hashring.h, virtual nodes) clockwise from the key's
 * hash and collect distinct nodes. The first N are the key's homes; the ones
 * after are its fallbacks, in order, for a sloppy quorum (a write whose home
 * is unreachable goes to the next fallback with a hint naming the home).
 * Because the ring's points depend only on node ids, adding or removing a node
 * changes a key's list only by inserting or deleting that node: about N/nodes
 * of the keys see their home set change, 1/nodes their first home.
 */
#define KEEL_APPLACE_NODES_MAX 64u
#define KEEL_APPLACE_VNODES_DEFAULT 128u

typedef struct keel_applace {
    keel_hashring_t ring;
    uint32_t nodes_n;
    uint32_t vnodes;
} keel_applace_t;

/* Room for nodes_max nodes (<= KEEL_APPLACE_NODES_MAX) of vnodes points each. */
int keel_applace_init(keel_applace_t *p, uint32_t nodes_max, uint32_t vnodes);
void keel_applace_free(keel_applace_t *p);
/* Places nodes 0..n-1 by their stable ids; KEEL_ETOOBIG past nodes_max. */
int keel_applace_build(keel_applace_t *p, const uint64_t *ids, uint32_t n);
uint64_t keel_applace_key_hash(const void *key, size_t len);
/*
 * The key's preference list: up to out_max distinct node indexes (homes
 * first), the count written. out_max <= KEEL_APPLACE_NODES_MAX.
 */
uint32_t keel_applace_prefs(const keel_applace_t *p, uint64_t key_hash, uint32_t *out,
                            uint32_t out_max);

#endif
