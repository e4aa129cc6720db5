/* apstore.h - a node's durable replica store for the AP keyspace: merged states on a WAL. */
#ifndef KEEL_RUNTIME_APSTORE_H
#define KEEL_RUNTIME_APSTORE_H

#include "base/err.h"
#include "core/apval.h"
#include "core/merkle.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Each key's state lives in memory (a map) and every change is one WAL record
 * (runtime/wal.h: CRC32C per record, torn tails truncated, corruption refused):
 *
 *   record type 1:  u16 key_len | key | the merged state (core/apval.h encoding)
 *
 * merge() folds a state into the key's, appends the result and fdatasyncs it
 * before returning: only then may the replica acknowledge it, so only then
 * does it count toward a request's W. Replay on open loads the newest snapshot
 * (see "Compaction" below) and merges every record logged since, in log order;
 * since merge is idempotent and each record holds the whole merged state, the
 * last record of a key alone would do, and a record replayed twice changes
 * nothing.
 *
 * The store also holds its incarnation (record type 2: u64), made once when the store
 * is created, from the wall clock (ms): a node that lost its data directory comes back with a
 * new one, so the actor ids it writes with (keel server: member id and incarnation)
 * never repeat a dot its earlier life issued (docs/ap.md, "Why dots are safe").
 *
 * The store keeps a Merkle tree (core/merkle.h) over all its keys, updated on
 * every change, and tells an observer (keel server keeps a tree per peer) each key's
 * Merkle item as it changes.
 *
 * Hints (sloppy quorum, docs/ap.md): a fallback that stores a write meant for a home
 * that did not answer holds a hint (home, key) until the home acknowledged the key:
 *
 *   record type 3:  u64 home | u16 key_len | key      hint held
 *   record type 4:  u64 home | u16 key_len | key      hint handed off
 *
 * merge_hinted() logs the state and the hint and fdatasyncs both before returning, so
 * the fallback acknowledges only a write it will hand on even across a crash. Each hint
 * has a version in memory, renewed by every hinted write of its key, so the home's
 * acknowledgement of an older version does not drop a newer one. A handed-off record
 * is not synced on its own (lost in a crash, the hint is handed off again: harmless).
 */
#define KEEL_APSTORE_HINTS_MAX (1u << 20)
/* Hints queued by keel_apstore_hint_add (moves on a ring change, retargeted hints) stop at half
 * the budget, so writes that need a stand-in keep room while a large move drains. */
#define KEEL_APSTORE_MOVE_HINTS_MAX (KEEL_APSTORE_HINTS_MAX / 2)
/*
 * Group commit is the caller's: the _lazy merges log without an fdatasync, keel_apstore_sync()
 * makes all of them durable at once (keel server: one per loop turn for a replica's writes, one
 * per tick for handed-off keys).
 */
#define KEEL_APSTORE_KEY_BYTES_MAX 1024u
#define KEEL_APSTORE_KEYS_MAX (1u << 24)
#define KEEL_APSTORE_MERKLE_DEPTH 10u

typedef struct keel_apstore keel_apstore_t;
typedef struct keel_apstore_job keel_apstore_job_t;

/* Opens (creating) the store in dir and replays it. KEEL_ECORRUPT / KEEL_EIO: msg says where. */
int keel_apstore_open(keel_apstore_t **out, const char *dir, keel_errmsg_t *msg);
void keel_apstore_close(keel_apstore_t *s);
/*
 * key's state = merge(its state, v), durable when this returns 0. Errors change
 * nothing: KEEL_ETOOBIG (key), KEEL_ECONFLICT (another kind), KEEL_EFULL, KEEL_EIO.
 * *changed (may be NULL) says whether the state changed (if not, nothing is written).
 */
int keel_apstore_merge(keel_apstore_t *s, const void *key, size_t key_len, const keel_apval_t *v,
                       int *changed, keel_errmsg_t *msg);
/*
 * merge() without the fdatasync: the state is logged and in force at once (reads see it), and
 * durable only after the next keel_apstore_sync() or synced merge. For states whose sender
 * keeps its own durable copy until acknowledged (hinted handoff): acknowledge after the sync,
 * so one fdatasync covers a batch (group commit).
 */
int keel_apstore_merge_lazy(keel_apstore_t *s, const void *key, size_t key_len,
                            const keel_apval_t *v, int *changed, keel_errmsg_t *msg);
/* Makes everything logged durable (one fdatasync; none if nothing is pending). KEEL_EIO. */
int keel_apstore_sync(keel_apstore_t *s, keel_errmsg_t *msg);
/* The key's state, or NULL; valid until the next merge of that key. */
const keel_apval_t *keel_apstore_get(const keel_apstore_t *s, const void *key, size_t key_len);
size_t keel_apstore_count(const keel_apstore_t *s);
const keel_merkle_t *keel_apstore_tree(const keel_apstore_t *s);
/* Records replayed at open, fdatasyncs done since. */
uint64_t keel_apstore_replayed(const keel_apstore_t *s);
uint64_t keel_apstore_syncs(const keel_apstore_t *s);
/* Calls fn for every key (order unspecified; do not merge into s meanwhile). */
void keel_apstore_each(const keel_apstore_t *s,
                       void (*fn)(void *arg, const uint8_t *key, size_t len, const keel_apval_t *v),
                       void *arg);
/* The store's incarnation (> 0), made when the directory was first used. */
uint64_t keel_apstore_incarnation(const keel_apstore_t *s);
/*
 * A new incarnation, above every earlier one (the wall clock in ms, or the last one + 2 if the
 * clock is behind it), logged (record type 2 again: replay keeps the last) and synced before it
 * is in force, with everything logged before it; it empties the set of dropped keys. keel server
 * takes one before it writes a key it dropped holding its old actor's dots: the old actor never
 * issues another (docs/ap.md, "Dropping the copies ..."). On failure (KEEL_ENOMEM for
 * the empty set included, taken first) the old one stays, and so does the set.
 */
int keel_apstore_renew_incarnation(keel_apstore_t *s, keel_errmsg_t *msg);

/* fn(arg, key, len, old_item, new_item) after each change of a key's state (not at replay). */
typedef void (*keel_apstore_observer_fn)(void *arg, const uint8_t *key, size_t len,
                                         uint64_t old_item, uint64_t new_item);
void keel_apstore_observe(keel_apstore_t *s, keel_apstore_observer_fn fn, void *arg);
/* The Merkle item of a key in state v (core/merkle.h keel_merkle_item of its digest). */
uint64_t keel_apstore_item(const void *key, size_t key_len, const keel_apval_t *v);

/*
 * merge() plus a hint for member home (!= 0), all durable when this returns 0 (one
 * fdatasync). KEEL_EFULL past KEEL_APSTORE_HINTS_MAX hints; errors change nothing.
 */
int keel_apstore_merge_hinted(keel_apstore_t *s, const void *key, size_t key_len,
                              const keel_apval_t *v, uint64_t home, int *changed,
                              keel_errmsg_t *msg);
/* merge_hinted() without the fdatasync (as merge_lazy): the state and the hint are in force at
 * once and durable after the next keel_apstore_sync() or synced merge; acknowledge after it. */
int keel_apstore_merge_hinted_lazy(keel_apstore_t *s, const void *key, size_t key_len,
                                   const keel_apval_t *v, uint64_t home, int *changed,
                                   keel_errmsg_t *msg);
/* The version of the hint (home, key), 0 if none. */
uint64_t keel_apstore_hint(const keel_apstore_t *s, uint64_t home, const void *key, size_t key_len);
/* Drops the hint if its version is still `version`: 1 if dropped, 0 if not, or KEEL_EIO. */
int keel_apstore_hint_done(keel_apstore_t *s, uint64_t home, const void *key, size_t key_len,
                           uint64_t version);
size_t keel_apstore_hints(const keel_apstore_t *s);
/*
 * Calls fn for up to max hints starting at *pos (start with 0), and leaves *pos where to go
 * on (0 after the last one: the next call starts over). Do not change hints meanwhile.
 */
void keel_apstore_hints_each(const keel_apstore_t *s, size_t *pos, size_t max,
                             void (*fn)(void *arg, uint64_t home, const uint8_t *key, size_t len,
                                        uint64_t version),
                             void *arg);

/*
 * Moving keys on a ring change (keel server ap_move.c). The ring a node last moved keys for
 * is recorded so that a restart resumes an unfinished move:
 *
 *   record type 5:  u8 n | n x u64 member id     the ring moved for (ids sorted)
 *
 * A move queues each key for a new home as a hint (record type 3, delivered and dropped by
 * hinted handoff like any other), appended without a sync of its own: recording the ring
 * syncs them all, and a crash before that scans again (a hint added twice is one hint).
 */
#define KEEL_APSTORE_RING_IDS_MAX 64u
/* The ids of the ring last recorded (count written, 0 if none was ever recorded). */
uint32_t keel_apstore_moved_ring(const keel_apstore_t *s, uint64_t *ids, uint32_t ids_max);
/* Records the ring moved for, durably (fdatasync). KEEL_EINVAL past KEEL_APSTORE_RING_IDS_MAX. */
int keel_apstore_set_moved_ring(keel_apstore_t *s, const uint64_t *ids, uint32_t n,
                                keel_errmsg_t *msg);
/*
 * A hint for member home (!= 0) on key, which must be held here: logged, not synced (see
 * above). 1 if the hint is new, 0 if one was held (its version renewed); KEEL_EFULL once
 * KEEL_APSTORE_MOVE_HINTS_MAX hints are held, KEEL_ENOTFOUND if the key is not held,
 * KEEL_EINVAL.
 */
int keel_apstore_hint_add(keel_apstore_t *s, uint64_t home, const void *key, size_t key_len);
/*
 * Calls fn for up to max keys from *pos (start with 0) and leaves *pos where to go on; 1 once
 * every key was visited, else 0. fn may add hints, not merge. The walk is valid while
 * keel_apstore_layout() stays the same: a layout change (the key map grew) means start over.
 */
int keel_apstore_scan(const keel_apstore_t *s, size_t *pos, size_t max,
                      void (*fn)(void *arg, const uint8_t *key, size_t len), void *arg);
size_t keel_apstore_layout(const keel_apstore_t *s);

/*
 * Dropping the copy of a key this node is no longer a home of (keel server ap_clean.c decides
 * when: docs/ap.md, "Dropping the copies of keys a node is no longer a home of"):
 *
 *   record type 6:  u16 key_len | key | u64 item       forget the key if its Merkle item is
 *                                                       item
 *
 * The forget is conditional on the state being the one the caller proved the homes hold (its
 * Merkle item: a hash of the key and its state's digest, kept per key, so comparing costs
 * nothing) and on no hint naming the key; replay applies it under the same condition, in log
 * order, so a later state record of the key brings it back. Logged without an fdatasync of its
 * own: lost in a crash, the copy comes back and is dropped again later (harmless); the next
 * synced record makes it durable.
 */
/* Forgets key if its item is `item` and no hint names it: 1 if forgotten, 0 if not (absent,
 * changed, hinted); KEEL_EIO (and the store's sticky failure). */
int keel_apstore_forget(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item,
                        keel_errmsg_t *msg);
/*
 * forget() of a key whose state holds this node's own dots (keel server's drop walk): the key's
 * 64-bit hash is logged first (record type 7) and kept in a set until the next
 * keel_apstore_renew_incarnation(), which empties it (replay: an incarnation record empties it,
 * a snapshot lists it after the incarnation). keel server takes a new incarnation before it
 * issues a dot for a key in the set (keel_apstore_dropped_own), so the old actor's dots for it
 * are never issued again, and only then. A hash the set cannot take (full at
 * KEEL_APSTORE_DROPPED_MAX, or no memory) makes every key count as dropped until the next
 * incarnation (a one-byte record of type 7; kept by a snapshot): one renewal early at worst.
 */
#define KEEL_APSTORE_DROPPED_MAX ((size_t)1 << 22)
int keel_apstore_forget_own(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item,
                            keel_errmsg_t *msg);
/* 1 if a key of this hash was dropped holding this incarnation's dots (a collision: 1 too). */
int keel_apstore_dropped_own(const keel_apstore_t *s, const void *key, size_t key_len);
size_t keel_apstore_dropped_count(const keel_apstore_t *s);
/* The key's Merkle item (keel_apstore_item of its state), 0 if the key is not held. */
uint64_t keel_apstore_key_item(const keel_apstore_t *s, const void *key, size_t key_len);
/* Hints held for key (any home); 0 if none or the key is not held. */
size_t keel_apstore_key_hints(const keel_apstore_t *s, const void *key, size_t key_len);

/*
 * Compaction (docs/ap.md, "Compaction of the replica store's log"). The log would grow with every
 * change; keel_apstore_compact() writes the live state as a snapshot file beside the log
 * (runtime/snapfile.h: DIR/snap-<lsn>-0.snap, written to a .tmp name, fsync'd, renamed, the
 * directory fsync'd; CRC32C over the whole file), holding, as records of the same types and
 * encodings as the log's (each u8 type | u32 bytes | payload):
 *
 *   the incarnation (2), the ring moved for (5, if one was recorded), every key's state (1),
 *   then every hint (3), then every hash of the set of dropped keys (7: after the incarnation,
 *   whose record empties the set on replay)
 *
 * and named after the log position (LSN) it covers: a restart loads the newest snapshot that
 * verifies and replays only the log's records from that LSN on. Everything logged before that
 * LSN is synced first, so a torn tail after a crash lies past it. Once it is in place, the log
 * segments wholly before it and older snapshots are deleted. A crash before the rename leaves a
 * .tmp file, never loaded (removed at the next open); after it, the new snapshot and the log
 * from its LSN, with perhaps some of what it replaced still there. A snapshot that fails
 * verification at a restart is skipped for an older one only while the log that older one needs
 * is still whole (a crash came before the release); otherwise the open is refused
 * (KEEL_ECORRUPT, naming the file and the segments), rather than serve a state with keys
 * missing: as with a corrupt log record, the operator wipes the AP directory and the node comes
 * back as a new incarnation that its peers refill.
 *
 * keel_apstore_compact() does it all before it returns (the same job as below, waited for):
 * nothing changes in memory meanwhile, and it costs one pass over the state plus one fsync of a
 * file of about the live state's size (measured in docs/ap.md). keel_apstore_compact_start() does
 * the pass on the caller's thread (the records encoded into memory: the state as of the LSN,
 * whatever changes after) and leaves the file's write, fsync and rename to a thread of its own, so
 * the caller goes on merging meanwhile (records after the LSN go to the log as usual);
 * keel_apstore_compact_poll() then puts the snapshot in force and releases what it replaces. The
 * records go to the thread in chunks of 1 MiB, at most 4 waiting (then the caller waits for the
 * disk): bounded memory whatever the state's size. Hint versions start over from
 * the snapshot (as after any restart: a version matters only within one life).
 *
 * Due when the bytes a restart would read (the snapshot in use plus the log records since it)
 * pass ratio_pct percent of the bytes a snapshot of the live state would take, and at least
 * log_bytes_min.
 */
#define KEEL_APSTORE_COMPACT_LOG_BYTES_MIN_DEFAULT (16u * 1024u * 1024u)
#define KEEL_APSTORE_COMPACT_RATIO_PCT_DEFAULT 200u
#define KEEL_APSTORE_COMPACT_RATIO_PCT_MIN 110u /* below, every write could trigger one */
/* The limits above (the defaults until called); ratio_pct below the minimum is raised to it. */
void keel_apstore_set_compaction(keel_apstore_t *s, uint64_t log_bytes_min, uint32_t ratio_pct);
/* 1 if the log passed the limits. */
int keel_apstore_compact_due(const keel_apstore_t *s);
/*
 * Writes the snapshot and releases what it replaces. 0 also when nothing was logged since the
 * last one. KEEL_EIO (msg says which file): the store goes on with the log it had (nothing was
 * lost; the caller may retry later), unless the log's sticky failure (as merge) is returned.
 */
int keel_apstore_compact(keel_apstore_t *s, keel_errmsg_t *msg);
/*
 * The same with the file written by a thread. 1: started; 0: nothing logged since the last
 * snapshot; KEEL_EBUSY: one is under way; else the error (nothing started, the store goes on
 * with its log). Not due while one is under way; close() waits for its thread.
 */
int keel_apstore_compact_start(keel_apstore_t *s, keel_errmsg_t *msg);
/* On the store's thread: 1 once a started compaction's file is written (then *rc: 0, or the
 * write's error with the old snapshot and log still in force, or the release's), 0 while none
 * is under way or its file is still being written. */
int keel_apstore_compact_poll(keel_apstore_t *s, int *rc, keel_errmsg_t *msg);
int keel_apstore_compacting(const keel_apstore_t *s);
/* Bytes a restart reads (the snapshot in use and the log records since), bytes a snapshot of the
 * live state would take now (an estimate: each key's state as last logged), compactions done. */
uint64_t keel_apstore_log_bytes(const keel_apstore_t *s);
uint64_t keel_apstore_live_bytes(const keel_apstore_t *s);
uint64_t keel_apstore_compactions(const keel_apstore_t *s);
/* LSN the snapshot in use covers the log up to (0: none, the whole log is replayed). */
uint64_t keel_apstore_snapshot_lsn(const keel_apstore_t *s);

#endif
