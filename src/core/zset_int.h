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

struct keel_zset {
    keel_zset_node_t *header; /* header_levels levels, no member: grown (keel_zset_reserve)
                                 to the highest node's level, so a small set does not pay
                                 for 32; NULL while the set is packed */
    keel_zset_node_t *tail;
    uint64_t length;
    /* small fields together: the struct is 56 bytes, one 64-byte malloc chunk (a million
       small sets pay for every byte) */
    uint8_t level; /* levels in use, 1..KEEL_ZSET_LEVEL_MAX */
    uint8_t header_levels;
    uint8_t listpack;
    uint32_t nbuckets;          /* 0 or a power of two */
    keel_zset_node_t **buckets; /* NULL while nbuckets is 0 */
    size_t node_bytes;          /* the linked nodes' allocations; the block's while packed */
    uint8_t *pk;                /* the packed block (zset_pack.c), NULL unless packed */
};

/* zset_pack.c: the bytes a listpack-encoded set counts (packed or not: the same figure, so
   that unpacking for a command and packing after it move no memory account), and the
   snapshot body's members read from the block. */
size_t keel__zset_listpack_bytes(const keel_zset_t *z);
int keel__zset_pk_encode(const keel_zset_t *z, keel_zset_sink_fn sink, void *data);
/* The bucket count a snapshot carries for a listpack-encoded set: a function of its length
   (the packed form has no table). */
uint64_t keel__zset_canonical_buckets(uint64_t length);

#endif
