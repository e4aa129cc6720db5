/* raftlog.h - the Raft log and hard state kept durable in the write-ahead log. */
#ifndef KEEL_SERVER_RAFTLOG_H
#define KEEL_SERVER_RAFTLOG_H

#include "core/raft/raft.h"
#include "runtime/wal.h"

/*
 * WAL record types:
 *   ENTRY      u64 term | u64 index | u32 type | u32 reserved (0) | data
 *   HARDSTATE  u64 term | u64 vote | u64 commit
 * An ENTRY whose index is at or below the last one replayed replaces the log
 * from that index on (a follower's conflict truncation, thesis §3.5), so the
 * WAL never needs rewriting in place. An ENTRY that would leave a gap is
 * corruption.
 *
 * With snapshots, replay starts from the snapshot the node loaded (index
 * `snap_index`): entries at or below it are skipped, and the first entry kept
 * must be snap_index + 1. A snapshot installed from the leader replaces the
 * whole log, so it carries `lsn_floor`, the WAL position when it was taken:
 * ENTRY records before that position belong to the discarded log and are
 * skipped (HARDSTATE records are history and always replayed). Segments whose
 * entries are all covered by a durable snapshot are released (deleted).
 *
 * Group commit: append() buffers into the WAL's pending group; submit() hands
 * it to the WAL's syncing side (runtime/wal.h: a sync thread, or wait() on the
 * caller's thread) and returns its gen; durable() returns the newest durable
 * gen and the last (index, term) of the entries made durable since the last
 * call, for keel_raft_persisted(); index 0 if those groups held no entries
 * (hard state only).
 */
typedef struct keel_raftlog keel_raftlog_t;

enum { KEEL_RAFTLOG_REC_ENTRY = 1, KEEL_RAFTLOG_REC_HARDSTATE = 2 };

/*
 * Opens DIR and replays it into *restore (entries owned by the raftlog until
 * keel_raftlog_drop_restore or close). KEEL_ECORRUPT with a message on a bad log.
 */
int keel_raftlog_open(keel_raftlog_t **out, const char *dir, const keel_wal_config_t *cfg,
                      uint64_t snap_index, uint64_t lsn_floor, keel_raft_restore_t *restore,
                      keel_errmsg_t *msg);
/* Frees the replayed entries once the Raft core has copied them. */
void keel_raftlog_drop_restore(keel_raftlog_t *rl);
void keel_raftlog_close(keel_raftlog_t *rl);

/* Buffers a ready's writes: hard state (may be NULL) then entries. */
int keel_raftlog_append(keel_raftlog_t *rl, const keel_raft_hard_state_t *hs,
                        const keel_raft_entry_t *entries, size_t n);
int keel_raftlog_has_pending(const keel_raftlog_t *rl);

/* See keel_wal_submit: *gen is 0 if nothing was pending. */
int keel_raftlog_submit(keel_raftlog_t *rl, uint64_t *gen);
/* *gen: newest durable group; *index, *term: last entry made durable since the last call. */
int keel_raftlog_durable(keel_raftlog_t *rl, uint64_t *gen, uint64_t *index, uint64_t *term,
                         keel_errmsg_t *msg);
/* Blocking append + sync, for tests and tools. */
int keel_raftlog_sync(keel_raftlog_t *rl, uint64_t *index, uint64_t *term, keel_errmsg_t *msg);

keel_wal_t *keel_raftlog_wal(keel_raftlog_t *rl);
/* The position the next record will take (an installed snapshot's lsn_floor). */
uint64_t keel_raftlog_next_lsn(const keel_raftlog_t *rl);
/* Deletes segments all of whose entries are at or below snap_index (durable snapshot). */
int keel_raftlog_release(keel_raftlog_t *rl, uint64_t snap_index, keel_errmsg_t *msg);

#endif
