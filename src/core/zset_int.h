/* zset_int.h - what zset.c (the skiplist and hash table) and zset_pack.c (the packed form)
   share: the set's struct. */
#ifndef KEEL_CORE_ZSET_INT_H
#define KEEL_CORE_ZSET_INT_H

#include "core/zset.h"

#define HASH_SEED 0x7a7365746b65656cull /* "zsetkeel" */
/* The smallest table: one bucket (a set of one member, the common small case, costs one
   pointer); it doubles to one bucket per member. */
#define BUCKETS_MIN 1u
#define ENCODE_HEADER_BYTES 17u /* encoding, count, buckets */

/*
 * A keel_zset_t is one of two allocations, told apart by their first byte:
 *   - struct keel_zset (0): the node form, skiplist and hash table;
 *   - keel__zpk_t (1): the packed form (zset_pack.c), its header and entries in one block,
 *     so that a small set costs one malloc chunk (five ten-byte members with small integer
 *     scores: 68 bytes, one 80-byte chunk, where the node form's struct alone takes 64).
 * Changing form changes the pointer: the set's owner (the key's entry) follows it.
 */
struct keel_zset {
    uint8_t packed; /* 0 */
    uint8_t level;  /* levels in use, 1..KEEL_ZSET_LEVEL_MAX */
    uint8_t header_levels;
    uint8_t listpack;
    uint32_t nbuckets;        /* 0 or a power of two */
    keel_zset_node_t *header; /* header_levels levels, no member: grown (keel_zset_reserve)
                                 to the highest node's level, so a small set does not pay
                                 for 32 */
    keel_zset_node_t *tail;
    uint64_t length;
    keel_zset_node_t **buckets; /* NULL while nbuckets is 0 */
    size_t node_bytes;          /* the linked nodes' allocations */
};
_Static_assert(sizeof(struct keel_zset) == 48, "a sorted set's header grew");

typedef struct keel__zpk {
    uint8_t packed; /* 1 */
    uint8_t pad;
    uint16_t length; /* members */
    uint32_t bytes;  /* of entries in data */
    uint8_t data[];  /* the entries (zset_pack.c) */
} keel__zpk_t;
_Static_assert(sizeof(keel__zpk_t) == 8, "the packed form's header grew");
#define KEEL__ZPK_MEMBERS_MAX KEEL_ZSET_PACK_MEMBERS_MAX

static inline int keel__zset_packed(const keel_zset_t *z)
{
    return *(const uint8_t *)z == 1;
}

/* zset_pack.c: the bytes a listpack-encoded set counts (packed or not: the same figure, so
   that unpacking for a command and packing after it move no memory account), and the
   snapshot body's members read from the block. */
size_t keel__zset_listpack_bytes(const keel_zset_t *z);
int keel__zset_pk_encode(const keel_zset_t *z, keel_zset_sink_fn sink, void *data);
/* The bucket count a snapshot carries for a listpack-encoded set: a function of its length
   (the packed form has no table). */
uint64_t keel__zset_canonical_buckets(uint64_t length);

#endif
