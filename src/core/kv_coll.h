/* kv_coll.h - the table behind a hash or a set value (fields with optional values), ordered
   by a seeded hash so that scans, random picks and snapshots depend on its contents only. */
#ifndef KEEL_CORE_KV_COLL_H
#define KEEL_CORE_KV_COLL_H

#include "core/kv_cmd_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A hash's fields (with values) or a set's members (values empty) in one chained table.
 * The bucket of an item is the TOP bits of its hash and every chain is sorted by (hash,
 * length, bytes), so walking the buckets in order visits the items in hash order. Three
 * things follow, each needed by a replicated state machine:
 *   - a scan cursor is simply the next hash value to visit, valid across any resize (HSCAN
 *     and SSCAN return every item present for the whole iteration, and none twice);
 *   - a random pick ("the first item at or after hash r, wrapping") depends on the contents
 *     and r only, never on the table's size or on a resize that failed for want of memory on
 *     one replica, so SPOP removes the same member on every node;
 *   - a snapshot writes the items in hash order, so a copy or a restored replica holds the
 *     same table.
 * The hash seed is the object's own (set when the key is created, from the entry, and kept in
 * the snapshot), so a client cannot aim at one fixed function with colliding fields.
 *
 * Limits: a field or value is at most the keyspace's value_bytes_max (checked by the
 * commands); a value holds at most KEEL__KC_ITEMS_MAX items.
 */
#define KEEL__KC_ITEMS_MAX ((size_t)1 << 26) /* 67,108,864 items per hash or set */
#define ERR_KC_FULL "ERR keel: a hash or set holds at most 67108864 elements (KEEL__KC_ITEMS_MAX)"

/* The most picks of HRANDFIELD / SRANDMEMBER with a negative count (Redis has no bound). */
#define KEEL__KC_RAND_COUNT_MAX ((uint64_t)1 << 20)
#define ERR_KC_RAND_COUNT "ERR keel: a negative count asks for at most 1048576 picks"

/* Redis 7.0's defaults for the compact encodings OBJECT ENCODING reports. */
#define KEEL__KC_HASH_LISTPACK_ENTRIES 128u
#define KEEL__KC_HASH_LISTPACK_VALUE_BYTES 64u
#define KEEL__KC_SET_INTSET_ENTRIES 512u

/*
 * Two layouts, invisible to the commands (the order, cursors and picks are the hash order's
 * in both, so replicas that differ in layout still agree):
 *   - packed, while a table has at most KEEL__KC_PACKED_ITEMS_MAX items of at most
 *     KEEL__KC_PACKED_ITEM_BYTES_MAX bytes each: ONE allocation, a 12-byte header (the seed,
 *     then the block's used bytes, its room and the count in one 32-bit word) and the items
 *     back to back in hash order right after it, their hashes computed again when needed (a
 *     few short fields: cheaper than keeping them). A small hash or set, the common case, is
 *     one malloc chunk (five 10-byte fields with values: 12 + 60 bytes, an 80-byte chunk),
 *     where a separate header and block took two (48 + 80, issue 19);
 *   - big ("chained"): the same header followed by a keel__kc_big_t, and 2^bits chained
 *     buckets, each item in its own node that keeps its hash.
 * A packed table goes big once it would outgrow the bounds, never back (as Redis's listpack).
 * Adding can need memory in either layout, so every change that adds first calls
 * keel__kc_reserve with its new items (before anything changed: it may fail), and then
 * keel__kc_put never fails.
 *
 * A packed table grows and shrinks by realloc, so the table's ADDRESS can change: in
 * keel__kc_reserve and keel__kc_trim (nowhere else), which take the table's pointer by
 * reference. A caller whose table sits in a key entry stores the new address back
 * (keel__kv_set_obj) before anything else reads the entry; keel__kc_touch does it for its
 * trim. Pointers to items are invalid after either.
 */
#define KEEL__KC_PACKED_ITEMS_MAX 16u
#define KEEL__KC_PACKED_ITEM_BYTES_MAX 128u /* field and value bytes of one item */
/* A packed block's bytes: items of at most 2 + KEEL__KC_PACKED_ITEM_BYTES_MAX bytes; its
   used bytes and room fit the header's 12-bit fields. */
#define KEEL__KC_PACKED_BYTES_MAX                                                                  \
    (KEEL__KC_PACKED_ITEMS_MAX * (2u + KEEL__KC_PACKED_ITEM_BYTES_MAX))
_Static_assert(KEEL__KC_PACKED_BYTES_MAX < (1u << 12), "a packed block outgrows its header");
_Static_assert(KEEL__KC_PACKED_ITEMS_MAX < (1u << 5), "a packed count outgrows its header");

/*
 * An item, read through keel__kc_f / _fl / _val / _vl. A packed item is two length bytes and
 * its bytes: [field length][value length][field][value] (each length at most
 * KEEL__KC_PACKED_ITEM_BYTES_MAX, so never 0xFF). A big table's item is the byte 0xFF and a
 * pad byte at the end of its node's header, the node's u32 lengths just before them. The
 * field starts two bytes after the item's address in both.
 */
typedef struct keel__kc_item keel__kc_item_t;
#define KEEL__KC_ITEM_BIG 0xFFu

static inline const uint8_t *keel__kc_f(const keel__kc_item_t *it)
{
    return (const uint8_t *)it + 2;
}

static inline size_t keel__kc_len(const keel__kc_item_t *it, int value)
{
    const uint8_t *p = (const uint8_t *)it;
    if (p[0] != KEEL__KC_ITEM_BIG)
        return p[value];
    uint32_t n;
    memcpy(&n, p - 8 + 4 * value, sizeof(n));
    return n;
}

static inline size_t keel__kc_fl(const keel__kc_item_t *it)
{
    return keel__kc_len(it, 0);
}

static inline size_t keel__kc_vl(const keel__kc_item_t *it)
{
    return keel__kc_len(it, 1);
}

/*
 * The header of both layouts. Only its first KEEL__KC_HEADER_BYTES bytes are allocated for a
 * packed table with little room (sizeof is 16 with the padding): never copy it whole.
 */
typedef struct keel__kc {
    uint64_t seed;          /* hash seed */
    uint32_t used : 12;     /* packed: bytes of items in items[] */
    uint32_t cap : 12;      /* packed: items[]'s room (>= used; == used between commands) */
    uint32_t pcount : 5;    /* packed: items (keel__kc_count for either layout) */
    uint32_t hashtable : 1; /* OBJECT ENCODING's sticky "hashtable" (Redis never converts
                               back) */
    uint32_t chained : 1;   /* big: a keel__kc_big_t follows at sizeof(keel__kc_t) */
    uint8_t items[];        /* packed: the items */
} keel__kc_t;
#define KEEL__KC_HEADER_BYTES offsetof(keel__kc_t, items)
_Static_assert(offsetof(keel__kc_t, items) == 12, "the packed header grew");

/*
 * A big table's own fields, after its header. A resize moves the chains a few buckets per
 * put or delete (as Redis's dict rehashes), never all at once: doubling a table of 16 million
 * items at once stalled its node for about 0.6 s. While it moves, `ob` is the old bucket
 * array of 2^obits buckets, of which the first `moved` are empty (moved to `b`): an item whose
 * hash's top obits bits are below `moved` is in b, any other in ob. Both arrays cover a range
 * of hashes each, the new one below, so walking in hash order is still walking buckets.
 */
typedef struct keel__kc_big {
    void *b;      /* the buckets */
    size_t bytes; /* the object's memory: header, this, buckets (both while moving), nodes */
    uint32_t count;
    uint8_t bits;   /* 2^bits buckets, bucket = hash >> (64 - bits), bits >= 2 */
    uint8_t obits;  /* while moving: the old array's */
    void *ob;       /* while moving: the old buckets; NULL otherwise */
    uint64_t moved; /* while moving: old buckets moved (all below it are empty) */
} keel__kc_big_t;

static inline keel__kc_big_t *keel__kc_big(const keel__kc_t *t)
{
    return (keel__kc_big_t *)(uintptr_t)((const uint8_t *)t + sizeof(keel__kc_t));
}

/* The number of items. */
static inline size_t keel__kc_count(const keel__kc_t *t)
{
    return t->chained ? keel__kc_big(t)->count : t->pcount;
}

/* The object's memory: its allocations' requested sizes. */
static inline size_t keel__kc_bytes(const keel__kc_t *t)
{
    if (t->chained)
        return keel__kc_big(t)->bytes;
    size_t n = KEEL__KC_HEADER_BYTES + t->cap;
    return n < sizeof(keel__kc_t) ? sizeof(keel__kc_t) : n;
}

static inline const uint8_t *keel__kc_val(const keel__kc_item_t *it)
{
    return keel__kc_f(it) + keel__kc_fl(it);
}

/* A new empty (packed) table; NULL on ENOMEM. */
keel__kc_t *keel__kc_new(uint64_t seed);
void keel__kc_free(keel__kc_t *t);
uint64_t keel__kc_hash(const keel__kc_t *t, const uint8_t *f, size_t n);
/* A new unlinked item of t (its hash set); NULL on ENOMEM. Freed by keel__kc_item_free
   unless linked (keel__kc_put). */
keel__kc_item_t *keel__kc_item_new(const keel__kc_t *t, const uint8_t *f, size_t fl,
                                   const uint8_t *v, size_t vl);
void keel__kc_item_free(keel__kc_item_t *it);
/*
 * Room for the unlinked items[0..n) (NULLs skipped) to be put: the block grown, or the table
 * made big. 0 or KEEL_ENOMEM (*t unchanged). *t may MOVE (see above). Its memory (bytes) may
 * change: take a "before" for accounting first.
 */
int keel__kc_reserve(keel__kc_t **t, keel__kc_item_t *const *items, size_t n);
/* Gives back a packed table's unused room (after a command's changes); *t may move. Never
   fails. */
void keel__kc_trim(keel__kc_t **t);
/*
 * A packed table of seed holding the n (<= KEEL__KC_PACKED_ITEMS_MAX) distinct fields m[i] of
 * l[i] (<= KEEL__KC_PACKED_ITEM_BYTES_MAX) bytes each, values empty, built at once (a set's
 * inline form unpacked, kv_set_inline.c): the same table n puts would make. NULL on ENOMEM.
 */
keel__kc_t *keel__kc_packed_of(uint64_t seed, const uint8_t *const *m, const size_t *l, size_t n);
keel__kc_item_t *keel__kc_find(const keel__kc_t *t, const uint8_t *f, size_t n);
/*
 * Links it (owned from here on; room reserved by keel__kc_reserve), replacing (and freeing)
 * an item with the same field. Returns 1 when the field is new, 0 when it replaced one.
 * Never fails (a big table that cannot grow keeps longer chains). Pointers to a packed
 * table's items are invalid after a put.
 */
int keel__kc_put(keel__kc_t *t, keel__kc_item_t *it);
/* Removes and frees field f: 1 if it was there, else 0. In a packed table the items after
   it move (pointers to them are invalid); those before it stay. */
int keel__kc_del(keel__kc_t *t, const uint8_t *f, size_t n);
/* The first item at or after hash r (wrapping); NULL when empty. */
const keel__kc_item_t *keel__kc_pick(const keel__kc_t *t, uint64_t r);
/* The first item, and the item after it in hash order (NULL at the end). */
const keel__kc_item_t *keel__kc_first(const keel__kc_t *t);
const keel__kc_item_t *keel__kc_next(const keel__kc_t *t, const keel__kc_item_t *it);
/*
 * One scan step from cursor (a hash value; 0 starts): calls fn on at least `count` items
 * (every item of the last hash visited) and returns the next cursor, 0 when done.
 */
uint64_t keel__kc_scan(const keel__kc_t *t, uint64_t cursor, size_t count,
                       void (*fn)(void *data, const keel__kc_item_t *it), void *data);
/* Snapshot body: seed, flags, count, then (field, value) in hash order. */
int keel__kc_write(const keel__kc_t *t, int with_values, keel_kv_sink_fn sink, void *data);
int keel__kc_load(const uint8_t *p, size_t len, int with_values, keel__kc_t **out);

/* ---- the command side, shared by kv_hash.c and kv_set.c -------------------------- */

/* Key argv[i] as a hash or set (type): 0 and *t (NULL when absent), REPLIED (WRONGTYPE), or
   KEEL_ENOMEM (a set could not be unpacked, keel__ks_table). */
int keel__kc_read(const call_t *c, size_t i, int type, const keel__kc_t **t);
/* The same for a key's entry already looked up (NULL: absent). */
int keel__kc_of(const call_t *c, const keel__kv_entry_t *e, int type, const keel__kc_t **t);
/* The same for a write; *link and *dead as keel__kvc_wfind. */
int keel__kc_wlookup(const call_t *c, const uint8_t *key, size_t len, int type,
                     keel__kv_entry_t ***link, int *dead, keel__kc_t **t);
/* A new empty object for key (seeded from the entry) plus its unlinked entry: 0 or ENOMEM. */
int keel__kc_prepare(const call_t *c, const uint8_t *key, size_t len, int type,
                     keel__kv_entry_t **e);
/* Links a prepared entry in place of the dead one at *link (or new); memory counted. */
void keel__kc_link(const call_t *c, keel__kv_entry_t **link, int dead, keel__kv_entry_t *e);
/*
 * The value of key changed: memory accounting (bytes_before: its object's bytes before the
 * change), a new version at revision + 1, or the key's deletion when it is now empty. The
 * caller steps the revision once after all its keys.
 */
void keel__kc_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before);
/* A random 64-bit number of this command: from the entry (time, revision) for writes, from
   the read's time for reads, mixed with salt; the same on every replica. */
uint64_t keel__kc_random(const call_t *c, uint64_t salt);
/* Parses an optional COUNT n argument pair at i (SCAN's), MATCH pattern, for HSCAN/SSCAN. */
int keel__kc_scan_cmd(const call_t *c, int type);
int keel__kc_scan_syntax(const call_t *c);
/*
 * count distinct items chosen at random from seed (all of them, in hash order, when count >=
 * the size): 0 and *out (min(count, size) pointers, owned, freed with free()), or ENOMEM.
 */
int keel__kc_sample(const keel__kc_t *t, size_t count, uint64_t seed, const keel__kc_item_t ***out);
/* ---- a small set of integers inside its key's entry (kv_set_inline.c) ------------------ */

#define KEEL__KS_INLINE_MAX 16u         /* members */
#define KEEL__KS_INLINE_HEADER_BYTES 9u /* seed, width */
#define KEEL__KS_INLINE_BYTES_MAX (KEEL__KS_INLINE_HEADER_BYTES + 8u * KEEL__KS_INLINE_MAX)
_Static_assert(KEEL__KS_INLINE_MAX <= KEEL__KC_PACKED_ITEMS_MAX, "an inline set unpacks packed");
_Static_assert(KEEL__KS_INLINE_HEADER_BYTES + 2u > sizeof(void *), "inline and pointer collide");

/* Its members, and whether member m is one (canonical integers only can be). */
size_t keel__ks_inline_count(const keel__kv_entry_t *e);
int keel__ks_inline_has(const keel__kv_entry_t *e, const uint8_t *m, size_t n);
/* The inline form of table t into out (KEEL__KS_INLINE_BYTES_MAX bytes): its length, or 0
   when t is not a small set of integers. */
size_t keel__ks_inline_of(const keel__kc_t *t, uint8_t *out);
/* A new table (owned by the caller) holding inline set e's members; NULL on ENOMEM. */
keel__kc_t *keel__ks_inline_table(const keel__kv_entry_t *e);
/*
 * The table of set entry e for a command. An inline set's is built: one the command only
 * reads (write 0) is kept in c->ks (the entry untouched) while there is room, else the entry
 * holds it by pointer until keel__ks_after packs it back (a write's caller notes its key).
 * Valid until the command ends. 0 or KEEL_ENOMEM.
 */
int keel__ks_table(const call_t *c, const keel__kv_entry_t *e, int write, keel__kc_t **t);
/* Key (argv's bytes, valid until the command ends) names a set the command unpacked, made,
   stored, copied or changed: keel__ks_after packs it if it is a small set of integers. */
void keel__ks_note(const call_t *c, const uint8_t *key, size_t len);
/* Packs the set entry at *link inline if it is small and of integers (it may move): 1 if it
   did. Never fails (without room it keeps its table). */
int keel__ks_pack(keel_kv_t *kv, keel__kv_entry_t **link);
/* After a command (c->ks set): frees the tables it read, packs the sets noted. */
void keel__ks_after(const call_t *c);

/* The type rows. */
extern const keel__kv_type_t keel__kv_type_hash;
extern const keel__kv_type_t keel__kv_type_set;
/* OBJECT ENCODING's answer for a hash or set. */
const char *keel__kc_encoding(int type, const keel__kc_t *t);

/* kv_hash.c: the table's rows */
int keel__kh_cmd_hset(const call_t *c);
int keel__kh_cmd_hmset(const call_t *c);
int keel__kh_cmd_hsetnx(const call_t *c);
int keel__kh_cmd_hget(const call_t *c);
int keel__kh_cmd_hmget(const call_t *c);
int keel__kh_cmd_hexists(const call_t *c);
int keel__kh_cmd_hstrlen(const call_t *c);
int keel__kh_cmd_hlen(const call_t *c);
int keel__kh_cmd_hgetall(const call_t *c);
int keel__kh_cmd_hkeys(const call_t *c);
int keel__kh_cmd_hvals(const call_t *c);
int keel__kh_cmd_hdel(const call_t *c);
int keel__kh_cmd_hincrby(const call_t *c);
int keel__kh_cmd_hincrbyfloat(const call_t *c);
int keel__kh_cmd_hrandfield(const call_t *c);
int keel__kh_cmd_hscan(const call_t *c);
int keel__kh_hset_syntax(const call_t *c);
int keel__kh_hincrby_syntax(const call_t *c);
int keel__kh_hincrbyfloat_syntax(const call_t *c);
int keel__kh_hrandfield_syntax(const call_t *c);
/* kv_set.c */
int keel__ks_cmd_sadd(const call_t *c);
int keel__ks_cmd_srem(const call_t *c);
int keel__ks_cmd_sismember(const call_t *c);
int keel__ks_cmd_smismember(const call_t *c);
int keel__ks_cmd_scard(const call_t *c);
int keel__ks_cmd_smembers(const call_t *c);
int keel__ks_cmd_srandmember(const call_t *c);
int keel__ks_cmd_sscan(const call_t *c);
int keel__ks_cmd_spop(const call_t *c);
int keel__ks_cmd_smove(const call_t *c);
int keel__ks_cmd_sinter(const call_t *c);
int keel__ks_cmd_sunion(const call_t *c);
int keel__ks_cmd_sdiff(const call_t *c);
int keel__ks_cmd_sinterstore(const call_t *c);
int keel__ks_cmd_sunionstore(const call_t *c);
int keel__ks_cmd_sdiffstore(const call_t *c);
int keel__ks_cmd_sintercard(const call_t *c);
int keel__ks_srandmember_syntax(const call_t *c);
int keel__ks_spop_syntax(const call_t *c);
int keel__ks_sintercard_syntax(const call_t *c);
/* Redis getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX) on argv[i]: 0 or REPLIED. */
int keel__kc_parse_count(const call_t *c, size_t i, int64_t *out);
/* HRANDFIELD / SRANDMEMBER's reply (argc 2: one field or nil; 3-4: count, WITHVALUES). */
int keel__kc_rand_reply(const call_t *c, int type, int values);

#endif
