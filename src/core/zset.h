/* zset.h - a sorted set (members with scores, ordered by score then bytes): pure data. */
#ifndef KEEL_CORE_ZSET_H
#define KEEL_CORE_ZSET_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The data of one sorted-set key (docs/kv.md, "Sorted sets"). Members are byte strings,
 * each with a double score that is never NaN; they are ordered by (score, bytes), the
 * bytes compared as memcmp and then by length (Redis's sdscmp). Two indexes share one
 * node per member:
 *
 *  - a skiplist with spans (Pugh 1990; the span of a link counts the nodes it skips, as in
 *    Redis's t_zset.c), for O(log n) rank, by-rank, and score or lex range lookups;
 *  - a chained hash table from member to node, for O(1) ZSCORE and updates, scanned with
 *    a reverse-binary cursor (ZSCAN) so that a member present for a whole scan is seen.
 *
 * A node's level is drawn from a hash of its member, not from a random source: the shape
 * of the skiplist is a function of the set alone. Lex range lookups on a set whose scores
 * differ follow the skiplist's shape (Redis documents that case as unspecified), so every
 * replica, and a replica restored from a snapshot, must have the same shape: they do.
 *
 * Allocation failures never leave a half change: keel_zset_reserve makes room in the hash
 * table first, nodes are allocated unlinked, and linking never allocates. Removing and
 * re-scoring never allocate.
 *
 * The set also records the encoding Redis 7.0 would hold it in (listpack while small,
 * skiplist once it grew past zset-max-listpack-entries / -value, and never back except
 * when a store command writes a fresh set): some of Redis's replies depend on it (ZSCAN's
 * order and score text, -0 kept or not, OBJECT ENCODING), and keel answers as Redis would.
 */

#define KEEL_ZSET_LEVEL_MAX 32u
/* Redis zset-max-listpack-entries and zset-max-listpack-value (bytes), 7.0 defaults. */
#define KEEL_ZSET_LISTPACK_ENTRIES_MAX 128u
#define KEEL_ZSET_LISTPACK_VALUE_BYTES_MAX 64u
/* Members of one sorted set (keel's bound; Redis's is memory). */
#define KEEL_ZSET_MEMBERS_MAX (64u * 1024u * 1024u)
/* Bytes of one member (also bounded by the keyspace's value_bytes_max). */
#define KEEL_ZSET_MEMBER_BYTES_MAX (512u * 1024u * 1024u)

typedef struct keel_zset keel_zset_t;
typedef struct keel_zset_node keel_zset_node_t;

struct keel_zset_node {
    double score;
    keel_zset_node_t *backward; /* the previous node, NULL for the first */
    keel_zset_node_t *hnext;    /* hash chain */
    uint64_t hash;
    uint32_t len; /* member bytes, after the levels */
    uint32_t level;
    struct {
        keel_zset_node_t *forward;
        uint64_t span; /* nodes this link moves over (1 to the next node) */
    } lv[];
};

static inline const uint8_t *keel_zset_member(const keel_zset_node_t *n)
{
    return (const uint8_t *)&n->lv[n->level];
}

/* A new empty set (listpack-encoded, as Redis creates small sets), or NULL. */
keel_zset_t *keel_zset_new(void);
void keel_zset_free(keel_zset_t *z);
uint64_t keel_zset_len(const keel_zset_t *z);
/* Memory held: the set, its nodes with their members, its hash buckets; for a
   listpack-encoded set, the set and its packed block (what it holds at rest). */
size_t keel_zset_bytes(const keel_zset_t *z);

/* Redis's encoding: 1 listpack, 0 skiplist. */
int keel_zset_is_listpack(const keel_zset_t *z);
/* Moves to the skiplist encoding (as Redis converts); never back. */
void keel_zset_set_skiplist(keel_zset_t *z);
/* Moves to the listpack encoding (a store command's small result): -0 scores become 0, as
   Redis's listpack stores them. */
void keel_zset_to_listpack(keel_zset_t *z);
/* Before adding a member of len bytes: what Redis does to the encoding (converts). */
void keel_zset_note_add(keel_zset_t *z, size_t len);

/*
 * The packed form (zset_pack.c): a listpack-encoded set rests as one block of its entries
 * in order; every function here but free, len, bytes, is_listpack, is_packed and encode
 * needs the node form. keel_zset_unpack turns *z into it (a new pointer; the packed block
 * freed): 0 or KEEL_ENOMEM (nothing changed). keel_zset_pack returns the packed form of a
 * listpack-encoded set of at most KEEL_ZSET_PACK_MEMBERS_MAX members (z freed), or z itself
 * (a skiplist-encoded or larger set, a packed one, or a failed allocation: best effort). Neither
 * changes keel_zset_bytes, nor anything a command answers. keel_zset_decode returns a
 * listpack-encoded set packed.
 */
int keel_zset_is_packed(const keel_zset_t *z);
/* A listpack-encoded set rests packed only while it has at most this many members: every
   command on a packed set unpacks it and packs it back (O(n) allocations), which made a
   ZSCORE on a set of 128 packed members 10x slower than on a skiplist (65k against 700k/s,
   redis-benchmark -P 16, bench/RESULTS.md). Memory is where small sets are many. */
#define KEEL_ZSET_PACK_MEMBERS_MAX 16u
int keel_zset_unpack(keel_zset_t **z);
keel_zset_t *keel_zset_pack(keel_zset_t *z);

/* Order of (score, member). */
int keel_zset_cmp(double sa, const uint8_t *a, size_t an, double sb, const uint8_t *b, size_t bn);
int keel_zset_lex_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn);

keel_zset_node_t *keel_zset_find(const keel_zset_t *z, const uint8_t *m, size_t n);
/* Room for n more members whose nodes have at most `levels` levels (the header grows to
   it, the hash table to one bucket per member): 0 or KEEL_ENOMEM (nothing changed). */
int keel_zset_reserve(keel_zset_t *z, uint64_t n, uint32_t levels);
/* A new unlinked node, or NULL. score must not be NaN. */
keel_zset_node_t *keel_zset_node_new(const uint8_t *m, size_t n, double score);
void keel_zset_node_free(keel_zset_node_t *x);
/* Links x (its member absent; room reserved for it, its level included). Never fails. */
void keel_zset_insert(keel_zset_t *z, keel_zset_node_t *x);
/* Moves x to a new score (not NaN). Never fails. */
void keel_zset_rescore(keel_zset_t *z, keel_zset_node_t *x, double score);
/* Gives back the header's levels above the highest node's (after a command whose reserved
   nodes were not all linked); deletions do it themselves. Never fails. */
void keel_zset_trim(keel_zset_t *z);
/* Unlinks and frees x. */
void keel_zset_delete(keel_zset_t *z, keel_zset_node_t *x);

keel_zset_node_t *keel_zset_first(const keel_zset_t *z);
keel_zset_node_t *keel_zset_last(const keel_zset_t *z);
static inline keel_zset_node_t *keel_zset_next(const keel_zset_node_t *x)
{
    return x->lv[0].forward;
}
static inline keel_zset_node_t *keel_zset_prev(const keel_zset_node_t *x)
{
    return x->backward;
}
/* 0-based rank of a linked node, O(log n). */
uint64_t keel_zset_rank(const keel_zset_t *z, const keel_zset_node_t *x);
/* The node at 0-based rank r < len, O(log n). */
keel_zset_node_t *keel_zset_at(const keel_zset_t *z, uint64_t r);

/* A score range: min..max, each end exclusive or not. */
typedef struct keel_zset_range {
    double min, max;
    int minex, maxex;
} keel_zset_range_t;
int keel_zset_score_gte_min(double v, const keel_zset_range_t *r);
int keel_zset_score_lte_max(double v, const keel_zset_range_t *r);
/* The first / last node in the range, or NULL. */
keel_zset_node_t *keel_zset_first_in_range(const keel_zset_t *z, const keel_zset_range_t *r);
keel_zset_node_t *keel_zset_last_in_range(const keel_zset_t *z, const keel_zset_range_t *r);

/* A lex range: each end -inf/+inf (kind -1 / +1) or bytes, exclusive or not. */
typedef struct keel_zset_lex {
    const uint8_t *min, *max;
    size_t minlen, maxlen;
    int minkind, maxkind; /* 0: bytes; -1: "-" (below all); +1: "+" (above all) */
    int minex, maxex;
} keel_zset_lex_t;
int keel_zset_lex_gte_min(const uint8_t *m, size_t n, const keel_zset_lex_t *r);
int keel_zset_lex_lte_max(const uint8_t *m, size_t n, const keel_zset_lex_t *r);
/*
 * The first / last node of a lex range as Redis finds it: a scan in order while the set
 * is listpack-encoded (zzlFirstInLexRange), a skiplist descent after (zslFirstInLexRange);
 * the two agree whenever the scores are equal, the case Redis specifies.
 */
keel_zset_node_t *keel_zset_first_in_lex(const keel_zset_t *z, const keel_zset_lex_t *r);
keel_zset_node_t *keel_zset_last_in_lex(const keel_zset_t *z, const keel_zset_lex_t *r);
/* The skiplist descent to the first node >= min, without the range checks (where Redis's
   zslDeleteRangeByLex starts), or NULL. */
keel_zset_node_t *keel_zset_lex_seek(const keel_zset_t *z, const keel_zset_lex_t *r);

/*
 * One step of a reverse-binary cursor scan over the hash table: calls fn on each node of
 * the bucket under the cursor; returns the next cursor (0: done).
 */
uint64_t keel_zset_scan(const keel_zset_t *z, uint64_t cursor,
                        void (*fn)(void *data, const keel_zset_node_t *x), void *data);

/*
 * Snapshot body: u8 encoding (1 listpack), u64 count, u64 hash buckets, then each member
 * in order as u32 length, bytes, u64 score bits (little-endian). The bucket count travels
 * so that a restored set scans (ZSCAN) and counts its memory as the original does; a
 * listpack-encoded set (packed, no table) writes the power of two at or above its count, and
 * ignores the count it reads (snapshots before the packed form wrote its table's). The loader
 * checks every field (order strictly increasing, no NaN, lengths within the body and limits): 0,
 * KEEL_EPROTO or KEEL_ENOMEM; *out owned.
 */
typedef int (*keel_zset_sink_fn)(void *data, const uint8_t *p, size_t n);
int keel_zset_encode(const keel_zset_t *z, keel_zset_sink_fn sink, void *data);
int keel_zset_decode(const uint8_t *p, size_t len, keel_zset_t **out);

#endif
