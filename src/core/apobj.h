/* apobj.h - a key's sibling set in the AP keyspace: dotted values under one version vector. */
#ifndef KEEL_CORE_APOBJ_H
#define KEEL_CORE_APOBJ_H

#include "core/vclock.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The state a replica keeps for a key (a "dotted causal container", as in
 * Riak's DVV mode; Preguica, Baquero et al., "Dotted Version Vectors", 2012):
 * a version vector vv, the history this replica has seen, and the siblings,
 * each a value (or a tombstone) named by the dot of the write that made it.
 * Invariant: every sibling's dot is covered by vv, and every dot vv covers is
 * either a sibling here or was superseded by a write whose context covered it.
 *
 * The write rule (put): a write with context C removes exactly the siblings C
 * covers, joins C into vv, and adds its value under a new dot (actor,
 * vv[actor] + 1). Without a context (C empty) it removes nothing: it adds a
 * sibling. A delete is a put of a tombstone, so it too is causal: a delete
 * concurrent with a write leaves both, and the write is kept.
 *
 * The merge rule (what a replica does with another's state, on replication,
 * read repair, hinted handoff and anti-entropy alike): keep a sibling of
 * either side unless the other side's vv covers its dot and the other side no
 * longer has it (then a write that saw it has superseded it); vv is the join.
 * merge is commutative, associative and idempotent, so replicas converge
 * whatever the order of messages, duplicates included.
 *
 * Limits: values up to KEEL_AP_VALUE_BYTES_MAX; a write that would leave more
 * than KEEL_AP_SIBLINGS_WRITE_MAX siblings is refused (the client must read
 * and write back with the context), and a merge past KEEL_AP_SIBLINGS_MAX
 * (concurrent writes on both sides of a partition) fails with KEEL_EFULL,
 * leaving the state unchanged rather than dropping a sibling.
 *
 * Siblings are kept sorted by dot, so equal states have equal encodings and
 * equal digests (what the Merkle trees compare).
 */
#define KEEL_AP_VALUE_BYTES_MAX (1u << 20)
#define KEEL_AP_SIBLINGS_WRITE_MAX 16u
#define KEEL_AP_SIBLINGS_MAX 64u
#define KEEL_APOBJ_FORMAT 1u

typedef struct keel_apsib {
    keel_dot_t dot;
    uint8_t tomb; /* 1: a delete (len 0) */
    uint32_t len;
    uint8_t *data; /* owned, malloc'd (NULL when len is 0) */
} keel_apsib_t;

typedef struct keel_apobj {
    keel_vv_t vv;
    uint32_t n;
    keel_apsib_t *s; /* n siblings sorted by dot, owned */
} keel_apobj_t;

void keel_apobj_init(keel_apobj_t *o);
void keel_apobj_free(keel_apobj_t *o);
int keel_apobj_copy(keel_apobj_t *dst, const keel_apobj_t *src); /* dst initialized or freed */

/*
 * The write rule above. ctx may be NULL (no context). On success *dot (may be
 * NULL) names the new sibling. Errors leave o unchanged: KEEL_ETOOBIG (value),
 * KEEL_EFULL (siblings or actors over their limits), KEEL_ENOMEM.
 */
int keel_apobj_put(keel_apobj_t *o, const keel_vv_t *ctx, uint64_t actor, int tomb,
                   const void *data, uint32_t len, keel_dot_t *dot);
/* o = merge(o, other). KEEL_EFULL / KEEL_ENOMEM leave o unchanged. */
int keel_apobj_merge(keel_apobj_t *o, const keel_apobj_t *other);
/* Siblings that are values (not tombstones): 0 means the key reads as absent. */
uint32_t keel_apobj_live(const keel_apobj_t *o);
/* Index of the sibling with this dot, or -1. */
int keel_apobj_find(const keel_apobj_t *o, keel_dot_t dot);

/*
 * Encoding: u8 format (1), the vv (vclock.h), u16 count, then per sibling
 * u64 actor, u64 counter, u8 flags (bit 0: tombstone), u32 len, len bytes.
 * decode() is strict: dots strictly increasing and covered by vv, tombstones
 * empty, no unknown flags, every limit, no trailing bytes.
 */
int keel_apobj_encode(const keel_apobj_t *o, keel_buf_t *out);
int keel_apobj_decode(const void *data, size_t len, keel_apobj_t *o, keel_errmsg_t *msg);
/* Hash of the encoding: equal states, equal digests. */
uint64_t keel_apobj_digest(const keel_apobj_t *o);
/* Equal state (vv and siblings, bytes included). */
int keel_apobj_equal(const keel_apobj_t *a, const keel_apobj_t *b);

#endif
