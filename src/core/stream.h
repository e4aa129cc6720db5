/* stream.h - an append-only stream of entries with consumer groups (Redis Streams' data): pure. */
#ifndef KEEL_CORE_STREAM_H
#define KEEL_CORE_STREAM_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The data of one stream key (docs/streams.md). Entries are ordered by id (ms-seq, two
 * u64s, as Redis's streamID) and stored in blocks: one allocation per block holding up to
 * KEEL_STREAM_BLOCK_ENTRIES_MAX entries or about KEEL_STREAM_BLOCK_BYTES_MAX bytes, each
 * entry encoded as varints relative to the block's first id, with the field names of the
 * block's first entry shared by every later entry that has the same names (Redis's
 * listpack "master entry" idea, t_stream.c). A deleted entry is flagged in place; a block
 * whose entries are all deleted is freed. The blocks are a sorted array (binary search by
 * id); trimming from the head advances an offset, so it costs no memmove per block.
 *
 * Consumer groups live beside the entries: a group's last delivered id, its entries-read
 * counter, its consumers (sorted by name) and its pending entries list (PEL, sorted by
 * id), each pending entry with its owner, delivery count and last delivery time. Times
 * are replicated time (the applying entry's stamp), never a clock read here.
 *
 * Nothing here knows RESP or keys: the commands are in kv_stream*.c.
 */

#define KEEL_STREAM_BLOCK_ENTRIES_MAX 100u    /* Redis stream-node-max-entries */
#define KEEL_STREAM_BLOCK_BYTES_MAX 4096u     /* Redis stream-node-max-bytes */
#define KEEL_STREAM_FIELDS_MAX (512u * 1024u) /* field-value pairs of one entry */
/* "18446744073709551615-18446744073709551615" */
#define KEEL_STREAM_ID_TEXT_BYTES_MAX 41u
/* Redis: an id argument longer than this is invalid (streamGenericParseIDOrReply). */
#define KEEL_STREAM_ID_ARG_BYTES_MAX 127u
/* entries_read when unknown (Redis SCG_INVALID_ENTRIES_READ). */
#define KEEL_STREAM_ENTRIES_READ_UNKNOWN (-1)

typedef struct keel_stream_id {
    uint64_t ms, seq;
} keel_stream_id_t;

static inline int keel_stream_id_cmp(keel_stream_id_t a, keel_stream_id_t b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

/* id + 1 / id - 1: 0, or KEEL_ERANGE at the end of the id space (id unchanged). */
int keel_stream_id_incr(keel_stream_id_t *id);
int keel_stream_id_decr(keel_stream_id_t *id);

/*
 * Parses an id argument as Redis does: "ms-seq", or "ms" (seq = missing_seq); "-" and "+"
 * (the smallest and largest ids) unless `strict`; "ms-*" when seq_star is non-NULL (then
 * *seq_star = 1 and seq 0). 0, or KEEL_EINVAL.
 */
int keel_stream_id_parse(const uint8_t *p, size_t n, uint64_t missing_seq, int strict,
                         int *seq_star, keel_stream_id_t *out);
/* "ms-seq" into out (KEEL_STREAM_ID_TEXT_BYTES_MAX + 1 bytes); returns the length. */
size_t keel_stream_id_format(char *out, keel_stream_id_t id);

typedef struct keel_stream keel_stream_t;
typedef struct keel_stream_group keel_stream_group_t;
typedef struct keel_stream_consumer keel_stream_consumer_t;

/* A new empty stream, or NULL. */
keel_stream_t *keel_stream_new(void);
void keel_stream_free(keel_stream_t *s);

/* ---- entries ---------------------------------------------------------------- */

typedef struct keel_stream_info {
    uint64_t length;                 /* live entries */
    uint64_t entries_added;          /* every entry ever added */
    keel_stream_id_t last_id;        /* the last id generated (0-0: none) */
    keel_stream_id_t max_deleted_id; /* the largest id deleted by XDEL (0-0: none) */
    keel_stream_id_t first_id;       /* the first live entry's id (0-0: empty) */
    size_t blocks;                   /* storage blocks */
    size_t groups;                   /* consumer groups */
    size_t bytes;                    /* memory used (blocks, groups, PELs) */
} keel_stream_info_t;
void keel_stream_get_info(const keel_stream_t *s, keel_stream_info_t *out);

/* The last live entry's id (0-0 if none). */
keel_stream_id_t keel_stream_last_live_id(const keel_stream_t *s);

/*
 * Appends an entry with id (> the last id, asserted) and nfields pairs (f, v alternating:
 * 2 x nfields pointers and lengths). 0 or KEEL_ENOMEM (nothing changed).
 */
int keel_stream_append(keel_stream_t *s, keel_stream_id_t id, size_t nfields,
                       const uint8_t *const *fv, const size_t *lens);
/* Sets the last id (XSETID-like; used by snapshot load), >= the last entry's id. */
void keel_stream_set_meta(keel_stream_t *s, keel_stream_id_t last_id,
                          keel_stream_id_t max_deleted_id, uint64_t entries_added);

/* Deletes the live entry id: 1 if it was there, else 0. */
int keel_stream_delete(keel_stream_t *s, keel_stream_id_t id);
/* 1 if a live entry has this id. */
int keel_stream_exists(const keel_stream_t *s, keel_stream_id_t id);

#define KEEL_STREAM_TRIM_MAXLEN 1
#define KEEL_STREAM_TRIM_MINID 2
typedef struct keel_stream_trim {
    int strategy;           /* KEEL_STREAM_TRIM_MAXLEN or _MINID */
    int approx;             /* '~': whole blocks only */
    uint64_t maxlen;        /* MAXLEN */
    keel_stream_id_t minid; /* MINID */
    uint64_t limit;         /* '~' only: entries removed at most (whole blocks); 0: none */
} keel_stream_trim_t;
/* Redis streamTrim: returns the number of entries removed. */
uint64_t keel_stream_trim(keel_stream_t *s, const keel_stream_trim_t *t);

/* One entry as the iterator gives it; its fields are read with keel_stream_field_next. */
typedef struct keel_stream_entry {
    keel_stream_id_t id;
    size_t nfields;
    const uint8_t *fields; /* encoded pairs (internal) */
    const uint8_t *master; /* the block's shared names, or NULL (internal) */
} keel_stream_entry_t;

/* Reads the next field-value pair of e (call nfields times, in order). */
typedef struct keel_stream_field_cursor {
    const uint8_t *p, *m;
} keel_stream_field_cursor_t;
void keel_stream_fields_begin(const keel_stream_entry_t *e, keel_stream_field_cursor_t *c);
void keel_stream_field_next(keel_stream_field_cursor_t *c, const uint8_t **f, size_t *flen,
                            const uint8_t **v, size_t *vlen);

/*
 * Live entries with start <= id <= end, forward (rev 0) or backward (rev 1). The iterator
 * is valid until the stream changes.
 */
typedef struct keel_stream_iter {
    const keel_stream_t *s;
    keel_stream_id_t start, end;
    int rev, done;
    size_t blk; /* block index (absolute) */
    size_t off; /* forward: byte offset of the next entry in the block */
    size_t k;   /* backward: entries of the block left to visit */
    uint32_t offs[KEEL_STREAM_BLOCK_ENTRIES_MAX]; /* backward: entry offsets of the block */
} keel_stream_iter_t;
void keel_stream_iter_init(keel_stream_iter_t *it, const keel_stream_t *s, keel_stream_id_t start,
                           keel_stream_id_t end, int rev);
/* 1 and *e, or 0 at the end. */
int keel_stream_iter_next(keel_stream_iter_t *it, keel_stream_entry_t *e);
/* The live entry id, or 0. */
int keel_stream_get(const keel_stream_t *s, keel_stream_id_t id, keel_stream_entry_t *e);

/* ---- consumer groups -------------------------------------------------------- */

typedef struct keel_stream_pending {
    keel_stream_id_t id;
    keel_stream_consumer_t *owner;
    uint64_t delivery_ms;
    uint64_t delivery_count;
    uint64_t due_ms; /* KEEL.XNACK: returned to the group, '>' redelivers it from then; 0: not */
} keel_stream_pending_t;

/* Groups are kept sorted by name (the order XINFO GROUPS answers in, as Redis's rax). */
size_t keel_stream_groups_count(const keel_stream_t *s);
keel_stream_group_t *keel_stream_group_at(const keel_stream_t *s, size_t i);
keel_stream_group_t *keel_stream_group_find(const keel_stream_t *s, const uint8_t *name,
                                            size_t len);
/* 0, KEEL_EEXISTS (a group of that name), KEEL_ENOMEM. */
int keel_stream_group_create(keel_stream_t *s, const uint8_t *name, size_t len,
                             keel_stream_id_t last_id, int64_t entries_read,
                             keel_stream_group_t **out);
void keel_stream_group_destroy(keel_stream_t *s, keel_stream_group_t *g);

const uint8_t *keel_stream_group_name(const keel_stream_group_t *g, size_t *len);
keel_stream_id_t keel_stream_group_last_id(const keel_stream_group_t *g);
int64_t keel_stream_group_entries_read(const keel_stream_group_t *g);
void keel_stream_group_set_last(keel_stream_group_t *g, keel_stream_id_t id, int64_t entries_read);
/*
 * Dead letters (keel): an entry whose delivery count has reached max_deliveries when it is
 * NACKed or claimed again moves to the stream named dlq (0: off). 0 or KEEL_ENOMEM.
 */
int keel_stream_group_set_deadletter(keel_stream_t *s, keel_stream_group_t *g,
                                     uint64_t max_deliveries, const uint8_t *dlq, size_t len);
uint64_t keel_stream_group_max_deliveries(const keel_stream_group_t *g);
const uint8_t *keel_stream_group_deadletter(const keel_stream_group_t *g, size_t *len);
/* Redis's lag (XINFO GROUPS): 1 and *lag when it can be known, else 0 (nil). */
int keel_stream_group_lag(const keel_stream_t *s, const keel_stream_group_t *g, int64_t *lag);
/* The group moves past a delivered id (Redis streamReplyWithRange's entries_read rule). */
void keel_stream_group_delivered(const keel_stream_t *s, keel_stream_group_t *g,
                                 keel_stream_id_t id);
/* Redis streamEstimateDistanceFromFirstEverEntry (KEEL_STREAM_ENTRIES_READ_UNKNOWN if not). */
int64_t keel_stream_estimate_read(const keel_stream_t *s, keel_stream_id_t id);

/* Consumers, sorted by name. */
size_t keel_stream_consumers_count(const keel_stream_group_t *g);
keel_stream_consumer_t *keel_stream_consumer_at(const keel_stream_group_t *g, size_t i);
keel_stream_consumer_t *keel_stream_consumer_find(const keel_stream_group_t *g, const uint8_t *name,
                                                  size_t len);
/* Creates it (seen at now_ms) or returns the existing one (*created 0); NULL: ENOMEM. */
keel_stream_consumer_t *keel_stream_consumer_get(keel_stream_t *s, keel_stream_group_t *g,
                                                 const uint8_t *name, size_t len, uint64_t now_ms,
                                                 int *created);
/* Deletes it and its pending entries; returns how many it had pending. */
uint64_t keel_stream_consumer_delete(keel_stream_t *s, keel_stream_group_t *g,
                                     keel_stream_consumer_t *c);
const uint8_t *keel_stream_consumer_name(const keel_stream_consumer_t *c, size_t *len);
uint64_t keel_stream_consumer_pending(const keel_stream_consumer_t *c);
uint64_t keel_stream_consumer_seen_ms(const keel_stream_consumer_t *c);
/* KEEL.PRIORITY reads this consumer made (the starvation guard's turn counter). */
uint64_t keel_stream_consumer_priority_reads(const keel_stream_consumer_t *c);
void keel_stream_consumer_priority_read(keel_stream_consumer_t *c);
void keel_stream_consumer_seen(keel_stream_consumer_t *c, uint64_t now_ms);

/* The PEL, sorted by id: count, the entry at i, the first index with id >= from. */
size_t keel_stream_pel_count(const keel_stream_group_t *g);
keel_stream_pending_t *keel_stream_pel_at(const keel_stream_group_t *g, size_t i);
size_t keel_stream_pel_seek(const keel_stream_group_t *g, keel_stream_id_t from);
/* The pending entry id, or NULL. */
keel_stream_pending_t *keel_stream_pel_find(const keel_stream_group_t *g, keel_stream_id_t id);
/*
 * Adds (or, if pending, reassigns) id to consumer c, delivered at now_ms, count 1 (Redis:
 * a redelivery by '>' after SETID restarts the count). 0 or KEEL_ENOMEM.
 */
int keel_stream_pel_deliver(keel_stream_t *s, keel_stream_group_t *g, keel_stream_consumer_t *c,
                            keel_stream_id_t id, uint64_t now_ms);
/* A pending entry with no owner yet (XCLAIM FORCE): 0 or KEEL_ENOMEM; *out. */
int keel_stream_pel_add(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id,
                        keel_stream_pending_t **out);
/* Moves p to consumer c (p stays valid). */
void keel_stream_pel_assign(keel_stream_pending_t *p, keel_stream_consumer_t *c);
/* Removes id from the PEL: 1 if it was pending. */
int keel_stream_pel_remove(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id);

/* ---- idempotent producers (keel, beyond Redis) -------------------------------------- */

/*
 * XADD ... KEEL.PRODUCER pid seq: each stream remembers, per producer id, the sequence
 * number and id of its last append, so a retried append (same pid, same seq) after a lost
 * reply is answered with the first one's id instead of appending twice (Kafka's idempotent
 * producer, with a window of one append per producer). At most KEEL_STREAM_PRODUCERS_MAX
 * producers per stream: a new one evicts the producer whose last append is the oldest.
 */
#define KEEL_STREAM_PRODUCERS_MAX 1024u
#define KEEL_STREAM_PRODUCER_ID_BYTES_MAX 64u
/* The last append of producer pid: 1 with *seq and *id, or 0 if it is not remembered. */
int keel_stream_producer_get(const keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t *seq,
                             keel_stream_id_t *id);
/* Remembers pid's append (n <= KEEL_STREAM_PRODUCER_ID_BYTES_MAX): 0 or KEEL_ENOMEM. */
int keel_stream_producer_set(keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t seq,
                             keel_stream_id_t id);
size_t keel_stream_producers_count(const keel_stream_t *s);

/* ---- retention by age (keel) ---------------------------------------------------------- */

/* Entries older than max_age_ms (by their id's ms) are trimmed by the leader's sweeps. 0: off. */
uint64_t keel_stream_max_age(const keel_stream_t *s);
void keel_stream_set_max_age(keel_stream_t *s, uint64_t max_age_ms);
/* When the oldest entry reaches its age (first id ms + max age), or 0 (off, or empty). */
uint64_t keel_stream_retention_deadline(const keel_stream_t *s);

/* ---- snapshots ------------------------------------------------------------------- */

/*
 * A stream's snapshot body, little-endian:
 *   u64 last ms | u64 last seq | u64 max-deleted ms | u64 seq | u64 entries_added |
 *   u64 length | length x (u64 ms | u64 seq | u32 nfields | nfields x (u32 len | field |
 *   u32 len | value)) | u32 groups | groups x (u32 name_len | name | u64 last ms | u64 seq |
 *   i64 entries_read | u64 max_deliveries | u32 len | dead-letter key |
 *   u32 consumers | consumers x (u32 len | name | u64 seen_ms | u64 priority_reads) |
 *   u64 pending | pending x (u64 ms | u64 seq | u32 consumer index | u64 delivery_ms |
 *   u64 delivery_count | u64 due_ms)) | u32 producers | producers x (u32 len | pid | u64 seq |
 *   u64 ms | u64 seq of its last id), sorted by pid | u64 max_age_ms
 * Entries are re-encoded (not the blocks' bytes), so the block layout may change freely.
 */
typedef int (*keel_stream_sink_fn)(void *data, const uint8_t *p, size_t n);
/* Writes the body through sink (its non-zero return stops the walk and is returned). */
int keel_stream_encode(const keel_stream_t *s, keel_stream_sink_fn sink, void *data);
/* Rebuilds a stream from a body, checking every length, order and reference: 0 and *out,
 * KEEL_EPROTO (malformed), KEEL_ENOMEM. */
int keel_stream_decode(const uint8_t *p, size_t len, keel_stream_t **out);

#endif
