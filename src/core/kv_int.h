/* kv_int.h - internals shared by kv.c (table, entries), the command files (kv_cmd_int.h) and
 * kv_snap.c. */
#ifndef KEEL_CORE_KV_INT_H
#define KEEL_CORE_KV_INT_H

#include "base/bytes.h"
#include "base/list.h"
#include "core/kv.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

typedef struct keel__kv_xrec keel__kv_xrec_t;

/*
 * One allocation per key: header, key bytes, then value bytes with room for
 * val_cap (SET of a same-size value rewrites in place; APPEND grows by half
 * again, so repeated appends are amortized O(1) per byte). The header is kept
 * small (45 bytes: a million keys pay for every byte of it): what few keys have,
 * a deadline or a lease, lives in its own record behind one pointer, and the
 * key's hash is computed again when the table needs it (a rehash) instead of
 * being kept.
 */
struct keel__kv_entry {
    keel__kv_entry_t *next; /* bucket chain */
    uint64_t version;
    uint64_t create_revision;
    keel__kv_xrec_t *x; /* deadline and lease, NULL when it has neither; owned */
    uint32_t key_len;
    uint32_t val_len;
    uint32_t val_cap;
    uint8_t type;   /* KEEL__KV_TYPE_*: a string's value is its bytes; any other type's
                       value is one pointer to its object (keel__kv_obj), owned */
    uint8_t data[]; /* key_len bytes, then val_cap bytes */
};

/*
 * What few entries have, outside the entry (the entry's `x`; freed when it holds neither):
 *   - a deadline: expire_ms (absolute, the entry time base; 0 none) and its place in the
 *     deadline index (kv->heap);
 *   - on a key, its lease (lease_id) and its link in that lease's list of keys (so that
 *     revoking the lease finds them); on a lease's own entry in kv->leases, `head`: link is
 *     the head of that list (there from the grant until the lease ends).
 * `e` is the entry that owns the record, fixed whenever the entry moves (realloc).
 * Adding a deadline to an entry with no record takes one reserved by keel__kv_heap_reserve;
 * attaching a lease takes one the caller made before changing anything: neither fails.
 */
struct keel__kv_xrec {
    keel_list_t link;
    keel__kv_entry_t *e;
    uint64_t lease_id;  /* 0: none */
    uint64_t expire_ms; /* 0: none */
    uint32_t heap_pos;  /* index in kv->heap while expire_ms != 0 */
    uint8_t head;       /* a lease entry's list head */
};

/* A new unlinked record (nothing in it), or NULL on ENOMEM. */
keel__kv_xrec_t *keel__kv_xrec_new(void);
/* Frees e's record once it holds nothing (kv_leases.c). */
void keel__kv_x_release(keel__kv_entry_t *e);
/* Gives a new lease entry l its (empty) list head: 0 or KEEL_ENOMEM (l untouched). */
int keel__kv_lease_head(keel__kv_entry_t *l);
/* The lease a key is attached to, 0 for none. */
static inline uint64_t keel__kv_lease_id(const keel__kv_entry_t *e)
{
    return e->x ? e->x->lease_id : 0;
}
/* An entry's deadline, 0 for none. */
static inline uint64_t keel__kv_expire(const keel__kv_entry_t *e)
{
    return e->x ? e->x->expire_ms : 0;
}

/* An entry's bytes before its key: the type byte is not followed by sizeof's padding. */
#define KEEL__KV_ENTRY_HEADER_BYTES offsetof(keel__kv_entry_t, data)
_Static_assert(KEEL__KV_ENTRY_HEADER_BYTES == 45, "the key entry's header grew");

/*
 * The typed keyspace. A key holds one type; the string is the entry's own bytes, every
 * other type (streams, hashes and sets now; lists and sorted sets next, issue 19) is an object
 * behind one pointer in the value area, created by the type's commands and described by a
 * row of keel__kv_types: its TYPE name, how to free it, its memory, and its snapshot
 * section. The key table, expiry, leases, DEL, EXISTS, SCAN, WATCH versions and the change
 * history are the same for every type.
 */
#define KEEL__KV_TYPE_STRING 0
#define KEEL__KV_TYPE_STREAM 1
#define KEEL__KV_TYPE_HASH 2 /* kv_hash.c, kv_coll.c */
#define KEEL__KV_TYPE_SET 3  /* kv_set.c, kv_coll.c */
#define KEEL__KV_TYPE_LIST 4 /* kv_list.c */
#define KEEL__KV_TYPE_ZSET 5 /* kv_zset.c, zset.c */
#define KEEL__KV_TYPES 6
#define ERR_WRONGTYPE "WRONGTYPE Operation against a key holding the wrong kind of value"

typedef struct keel__kv_type {
    const char *name; /* TYPE's answer */
    void (*free)(void *obj);
    size_t (*bytes)(const void *obj); /* memory held by the object */
    /* The snapshot body of one object: the sink as keel_kv_sink_fn. */
    int (*snap_write)(const void *obj, keel_kv_sink_fn sink, void *data);
    /* Rebuilds an object from its body: 0 or KEEL_EPROTO / KEEL_ENOMEM, *obj owned. */
    int (*snap_load)(const uint8_t *p, size_t len, void **obj);
    /* OBJECT ENCODING's answer for the object as it is now (NULL: the TYPE name). */
    const char *(*encoding)(const void *obj);
} keel__kv_type_t;
extern const keel__kv_type_t keel__kv_type_stream;
extern const keel__kv_type_t keel__kv_type_hash;
extern const keel__kv_type_t keel__kv_type_set;
extern const keel__kv_type_t keel__kv_type_list;
extern const keel__kv_type_t keel__kv_type_zset;
/* The row of a type (NULL for strings, which are no object, and for a number no type has
   in this build). */
const keel__kv_type_t *keel__kv_type(int type);

/* Points the entry at another object of its type: one that replaces the old, freed by the
   caller (a sorted set changing form, zset_pack.c), or the same one moved by realloc (a
   packed hash or set growing or shrinking, kv_coll.c). */
static inline void keel__kv_set_obj(keel__kv_entry_t *e, void *o)
{
    assert(e->type != KEEL__KV_TYPE_STRING && e->val_len == sizeof(o));
    memcpy(e->data + e->key_len, &o, sizeof(o));
}

/* A set held in its entry's value area (kv_set_inline.c): an object's pointer takes exactly
   8 bytes there, an inline set at least 11. */
static inline int keel__kv_inline(const keel__kv_entry_t *e)
{
    return e->type == KEEL__KV_TYPE_SET && e->val_len != sizeof(void *);
}

static inline void *keel__kv_obj(const keel__kv_entry_t *e)
{
    void *o;
    assert(e->type != KEEL__KV_TYPE_STRING && e->val_len == sizeof(o));
    memcpy(&o, e->data + e->key_len, sizeof(o));
    return o;
}
/*
 * An entry built in place (kv_staged.c): a block of KEEL__KV_ENTRY_HEADER_BYTES + key_len +
 * val_cap bytes whose key is written, its value area filled by the caller; the header set
 * as keel__kv_entry_new sets it (val_len 0).
 */
keel__kv_entry_t *keel__kv_entry_init(void *block, size_t key_len, size_t val_cap);
/*
 * A SET may take such an entry instead of copying its value (kv->adopt, kv_staged.c): the
 * entry whose value area is `val`, taken (kv->adopt cleared), or NULL.
 */
keel__kv_entry_t *keel__kv_take_adopted(keel_kv_t *kv, const uint8_t *val);
/* Moves the live entry at *link into n (same key, kv_staged.c's block): its header, deadline
   and lease go along, an object it held is freed (it becomes an empty string), the old block
   is freed. */
void keel__kv_entry_move(keel_kv_t *kv, keel__kv_entry_t **link, keel__kv_entry_t *n);
/* Frees a typed entry's object (nothing for a string); returns the object's bytes. */
size_t keel__kv_obj_free(keel__kv_entry_t *e);
/* A new entry of a typed key holding obj (owned from here on); NULL on ENOMEM. */
keel__kv_entry_t *keel__kv_entry_new_obj(const void *key, size_t key_len, uint64_t h, int type,
                                         void *obj);

static inline const uint8_t *keel__kv_key(const keel__kv_entry_t *e)
{
    return e->data;
}
static inline uint8_t *keel__kv_val(keel__kv_entry_t *e)
{
    return e->data + e->key_len;
}
static inline const uint8_t *keel__kv_cval(const keel__kv_entry_t *e)
{
    return e->data + e->key_len;
}

uint64_t keel__kv_hash(const keel_kv_t *kv, const void *key, size_t key_len);
/* Frees kv->reg, the registry (kv_registry.c). */
void keel__kv_reg_free(keel_kv_t *kv);
/* kv_staged.c: the staged values (freed; their snapshot section, kv_snap.c's tag 3). */
typedef struct keel__kv_staged keel__kv_staged_t;
void keel__kv_staged_free(keel_kv_t *kv);
/* When the first staged value falls idle (UINT64_MAX: none), and the drop of those idle at
   `now` (entry time): KEEL.EXPIRE.SWEEP's share, so that leftovers go without a new piece. */
uint64_t keel__kv_staged_next_deadline(const keel_kv_t *kv);
void keel__kv_staged_sweep(keel_kv_t *kv, uint64_t now);
uint64_t keel__kv_staged_snap_bytes(const keel_kv_t *kv);
int keel__kv_staged_snap_write(const keel_kv_t *kv, keel_kv_sink_fn sink, void *data);
int keel__kv_staged_snap_load(keel_kv_t *kv, const uint8_t *p, size_t len, keel_errmsg_t *msg);
/*
 * Finds key. Returns the entry or NULL; *link (if non-NULL) gets the pointer
 * that holds it (valid until the next insert, unlink, value resize or rehash
 * step).
 */
keel__kv_entry_t *keel__kv_find(const keel_kv_t *kv, const void *key, size_t key_len, uint64_t h,
                                keel__kv_entry_t ***link);
/* A new unlinked entry (version fields zero); NULL on ENOMEM. h, the key's hash, is not
   kept (the table computes it again when it rehashes). */
keel__kv_entry_t *keel__kv_entry_new(const void *key, size_t key_len, uint64_t h, const void *val,
                                     size_t val_len, size_t val_cap);
/* Links a new entry (its key must be absent). Never fails; may start a resize. */
void keel__kv_insert(keel_kv_t *kv, keel__kv_entry_t *e);
/* Unlinks the entry held by *link and frees it. */
void keel__kv_unlink(keel_kv_t *kv, keel__kv_entry_t **link);
/* Replaces the entry held by *link with e (same key); frees the old one. */
void keel__kv_replace(keel_kv_t *kv, keel__kv_entry_t **link, keel__kv_entry_t *e);
/*
 * Makes room for val_len value bytes in the entry held by *link (realloc;
 * *link is updated). `grow` asks for slack (APPEND). 0 or KEEL_ENOMEM (entry
 * untouched). The value bytes beyond the old length are uninitialized.
 */
int keel__kv_reserve_value(keel_kv_t *kv, keel__kv_entry_t **link, size_t val_len, int grow);
/* On an empty kv: sizes the table for n keys at once (snapshot load); best effort. */
void keel__kv_presize(keel_kv_t *kv, size_t n);
/* Moves up to n buckets of an ongoing rehash. */
void keel__kv_rehash_step(keel_kv_t *kv, size_t n);
/*
 * One step of Redis's reverse-binary cursor scan: calls fn on every entry of
 * the bucket(s) under the cursor and returns the next cursor (0: done).
 */
uint64_t keel__kv_scan(const keel_kv_t *kv, uint64_t cursor,
                       void (*fn)(void *data, const keel__kv_entry_t *e), void *data);
/* Visits every entry (snapshots); stops at fn's first non-zero return and returns it. */
int keel__kv_each(const keel_kv_t *kv, int (*fn)(void *data, const keel__kv_entry_t *e),
                  void *data);
/* Frees every entry (keeps the t[0] bucket array); the kv is then empty. */
void keel__kv_clear(keel_kv_t *kv);

/*
 * The deadline index: a binary min-heap of the entries that have a deadline,
 * ordered by (expire_ms, key bytes, key length). The order is total, so the
 * keys a bounded sweep removes do not depend on the heap's shape, which
 * differs between a node that built it entry by entry and one that loaded a
 * snapshot. Every entry with expire_ms != 0 is in it at heap_pos.
 */
/* Room for n more heap slots, and n records for entries that have none yet: 0 or
   KEEL_ENOMEM (nothing changed but spare records, kept for the next reserve). */
int keel__kv_heap_reserve(keel_kv_t *kv, size_t n);
/*
 * Sets (ms != 0) or clears (ms == 0) e's deadline and fixes the heap. Adding
 * a deadline to an entry that had none needs a reserved slot and, when e has no
 * record, a reserved record (asserted).
 */
void keel__kv_set_expire(keel_kv_t *kv, keel__kv_entry_t *e, uint64_t ms);
/* The entry with the earliest deadline, or NULL. */
keel__kv_entry_t *keel__kv_heap_top(const keel_kv_t *kv);
/* A live entry: no deadline, or one after now_ms. */
static inline int keel__kv_live(const keel__kv_entry_t *e, uint64_t now_ms)
{
    return e->x == NULL || e->x->expire_ms == 0 || e->x->expire_ms > now_ms;
}

/* ---- leases and locks (sub-tables of kv, allocated on first use) ---------------- */

/* Lease entries: key = id as 8 big-endian bytes, value = ttl_ms (u64 LE). */
#define KEEL__KV_LEASE_KEY_BYTES 8u
#define KEEL__KV_LEASE_VALUE_BYTES 8u
/* Lock entries: key = name, value = the holder's fencing token (u64 LE). */
#define KEEL__KV_LOCK_VALUE_BYTES 8u

static inline void keel__kv_put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* The lease entry for id, or NULL (*link as keel__kv_find). */
keel__kv_entry_t *keel__kv_lease_find(const keel_kv_t *kv, uint64_t id, keel__kv_entry_t ***link);
/* A key that is live at now_ms: its own deadline and its lease's (if any) both after now_ms. */
int keel__kv_alive(const keel_kv_t *kv, const keel__kv_entry_t *e, uint64_t now_ms);
/*
 * Attaches key entry e to the lease entry l (detaching it from any other), with r, a record
 * from keel__kv_xrec_new taken before the command changed anything (owned from here on):
 * attaching never fails.
 */
void keel__kv_attach(keel__kv_entry_t *e, keel__kv_entry_t *l, uint64_t lease_id,
                     keel__kv_xrec_t *r);
/* Detaches e from its lease list, if any; on a lease entry, drops its list's head, which
   must be empty. The record goes when it then holds nothing (no deadline). */
void keel__kv_detach(keel__kv_entry_t *e);
/* The sub-table *sub, created (empty, kv's config) if absent: 0 or KEEL_ENOMEM. */
int keel__kv_sub(keel_kv_t *kv, keel_kv_t **sub);
/* Rebuilds the retention index (kv->retained) from the streams (after a snapshot load). */
void keel__xs_index_all(keel_kv_t *kv);
/* Frees every entry of kv and of its sub-tables (counters kept). */
void keel__kv_clear_all(keel_kv_t *kv);

/*
 * Executes one command (argc >= 1) as of now_ms (keys whose deadline is <=
 * now_ms are absent). `writable` NULL: reads only. See kv_cmd.c.
 */
int keel__kv_exec(keel_kv_t *writable, const keel_kv_t *kv, uint64_t now_ms, size_t argc,
                  const uint8_t *const *argv, const size_t *lens, keel_buf_t *reply);

/* ---- change history (kv_hist.c) ----------------------------------------------------- */

/* An empty history (on: record changes; off for sub-tables). */
void keel__kv_hist_init(keel_kv_t *kv, int on);
void keel__kv_hist_free(keel_kv_t *kv);
/* Drops every change; the history restarts after kv->revision (snapshot load). */
void keel__kv_hist_restart(keel_kv_t *kv);
/*
 * Records a change of key entry e at revision rev (the revision the current
 * command is making: kv->revision + 1): op KEEL_KV_CHANGE_PUT with e's value,
 * or KEEL_KV_CHANGE_DEL. Never fails: a change that cannot be held drops its
 * whole revision (the oldest revision moves past it). No-op when off.
 */
void keel__kv_hist_record(keel_kv_t *kv, uint64_t rev, int op, const keel__kv_entry_t *e);

#endif
