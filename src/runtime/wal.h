/* wal.h - write-ahead log: segmented, CRC32C-framed records, preallocated, group commit. */
#ifndef KEEL_RUNTIME_WAL_H
#define KEEL_RUNTIME_WAL_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * On disk: DIR/wal-<seq, 16 hex>.log, seq = 1, 2, 3... with no gaps (segments
 * released by compaction leave the lowest seq > 1). Each segment is
 * preallocated to `segment_bytes` (zeros), starts with a 32-byte header and
 * then holds records:
 *
 *   segment header: "KEELWAL1" | u32 version | u32 reserved | u64 seq | u32 pad | u32 crc32c(0..28)
 *   record:         u32 body_bytes | u32 crc32c(body) | body = u8 type, payload
 *                   then zero padding to a multiple of 8 bytes
 *
 * (little-endian). A record's position is its LSN: (seq << 32) | offset, so
 * LSNs grow with the log and segments are at most 4 GiB.
 *
 * Durability: append() only buffers. submit() hands everything appended so
 * far to the syncing side as one group and numbers it (its "gen", 1, 2, 3...);
 * the syncing side writes every group handed over so far with pwrite and makes
 * them durable with one fdatasync (group commit), in order, and publishes the
 * newest durable gen; durable() reads it. Only then may the caller acknowledge
 * the records of those groups. Two ways to run the syncing side:
 *   - a sync thread (keel_wal_syncer_start): syncs back to back, starting the
 *     next one at once if more was handed over meanwhile, and calls notify()
 *     after each (from the sync thread: it must only wake the owner, e.g.
 *     uv_async_send, which coalesces);
 *   - on the caller's thread: wait() runs the sync inline (no thread started).
 * sync() = submit() + wait(), blocking, for tests and tools.
 *
 * Who touches what while a sync thread runs (the rule the old one-sync-in-
 * flight flag kept): the owner thread appends to its own pending group and
 * takes the lock only in submit/durable/wait/stats/release_before; the sync
 * thread alone uses the segment file descriptors and creates segments. The
 * sync thread only ever writes the segment it last wrote or newer ones, so the
 * owner may delete segments older than the one the sync thread last reported
 * (release_before reads that under the lock). close() and syncer_stop() join
 * the thread (waiting for a sync in flight to end) before anything is freed.
 * A failed write or fdatasync stops the syncing side for good: durable() and
 * submit() then return KEEL_EIO and the caller must stop, as fsync errors
 * cannot be retried safely (the kernel may have dropped the dirty pages).
 *
 * Recovery (keel_wal_open) reads every record of every segment and checks its
 * CRC. The first bad record (bad CRC, impossible length, or running past the
 * end) is handled by where it lies:
 *   - in the last segment, with no valid record after it: a torn tail from a
 *     write that was never acknowledged; truncated (zeroed) with a warning;
 *   - anywhere else: corruption; open fails with KEEL_ECORRUPT and a message
 *     naming the file and offset. Nothing is skipped silently.
 * Limitation: a bit flip inside the very last acknowledged record looks like a
 * torn tail and is truncated; Raft peers hold a copy (docs/wal.md).
 */
#define KEEL_WAL_SEGMENT_BYTES_DEFAULT (64u * 1024u * 1024u)
#define KEEL_WAL_SEGMENT_BYTES_MIN (64u * 1024u)
/* A record is also bounded by segment_bytes; this is Redis's proto-max-bulk-len and 1 MiB */
#define KEEL_WAL_RECORD_BYTES_MAX (513u * 1024u * 1024u)
#define KEEL_WAL_HEADER_BYTES 32u
#define KEEL_WAL_RECORD_HEADER_BYTES 8u
/*
 * Zero-ahead: fallocate leaves unwritten extents, and every fdatasync that writes into
 * one also converts it, which rewrites the inode synchronously: two device writes per
 * sync instead of one (measured here: 0.28 vs 0.19 ms per fdatasync of 60 KB alone,
 * and 2.0 vs 1.0 block requests per sync). So the syncing side writes zeros this far
 * past the data it writes, a window at a time, and starts their writeback at once
 * (sync_file_range): the conversion then happens off the sync path, once per window.
 */
#define KEEL_WAL_ZERO_AHEAD_BYTES_DEFAULT (1024u * 1024u)

typedef struct keel_wal_config {
    size_t segment_bytes;    /* preallocated size of each segment */
    size_t record_bytes_max; /* largest body accepted (type byte + payload) */
    int preallocate;         /* 1: fallocate each new segment to segment_bytes */
    size_t zero_ahead_bytes; /* with preallocate: zeros written this far past the data */
    int sync_enabled;        /* 0 only for benchmarks that say so: no fdatasync */
} keel_wal_config_t;

void keel_wal_config_default(keel_wal_config_t *cfg);
int keel_wal_config_validate(const keel_wal_config_t *cfg, keel_errmsg_t *msg);

/* Called for each valid record during open, in log order. Non-zero aborts the open. */
typedef int (*keel_wal_replay_fn)(void *data, uint8_t type, const uint8_t *payload, size_t len,
                                  uint64_t lsn);

typedef struct keel_wal_stats {
    uint64_t records_appended;
    uint64_t bytes_appended;
    uint64_t syncs; /* fdatasync calls that covered new data */
    uint64_t segments_cut;
    uint64_t torn_bytes_truncated; /* at the last open */
} keel_wal_stats_t;

typedef struct keel_wal keel_wal_t;

/*
 * Opens (creating DIR if needed) and replays every record through replay.
 * On KEEL_ECORRUPT / KEEL_EIO, msg says which file and offset.
 */
int keel_wal_open(keel_wal_t **out, const char *dir, const keel_wal_config_t *cfg,
                  keel_wal_replay_fn replay, void *replay_data, keel_errmsg_t *msg);
/* Syncs nothing; records not yet synced are lost, as in a crash. */
void keel_wal_close(keel_wal_t *w);

/* Buffers one record; *lsn_out (optional) gets its LSN. KEEL_ETOOBIG over the limit. */
int keel_wal_append(keel_wal_t *w, uint8_t type, const void *payload, size_t len,
                    uint64_t *lsn_out);
/* The same for a payload in two parts (head, then body), copied once into the record: a
   caller that frames a large body need not copy it into a buffer of its own first. */
int keel_wal_append2(keel_wal_t *w, uint8_t type, const void *head, size_t head_len,
                     const void *body, size_t body_len, uint64_t *lsn_out);
/* The LSN the next appended record would get if it fits the current segment. */
uint64_t keel_wal_next_lsn(const keel_wal_t *w);
/* Bytes appended but not yet handed to a sync. */
size_t keel_wal_pending_bytes(const keel_wal_t *w);

/* Blocking: writes and fdatasyncs everything appended so far. */
int keel_wal_sync(keel_wal_t *w, keel_errmsg_t *msg);

/*
 * Hands the pending group to the syncing side. *gen gets its number (the
 * previous gen plus one), or 0 if nothing was pending. KEEL_EIO after a failed
 * sync; KEEL_ENOMEM leaves the pending group as it was.
 */
int keel_wal_submit(keel_wal_t *w, uint64_t *gen);
/* Every group up to *gen is durable. KEEL_EIO (msg says why) once a sync has failed. */
int keel_wal_durable(keel_wal_t *w, uint64_t *gen, keel_errmsg_t *msg);
/* Blocks until group gen is durable; without a sync thread, syncs on this thread. */
int keel_wal_wait(keel_wal_t *w, uint64_t gen, keel_errmsg_t *msg);

/* Called by the sync thread after each sync (or failure); must not block. */
typedef void (*keel_wal_notify_fn)(void *data);
int keel_wal_syncer_start(keel_wal_t *w, keel_wal_notify_fn notify, void *data, keel_errmsg_t *msg);
/* Joins the sync thread (a sync in flight ends first); groups not yet taken stay unsynced. */
void keel_wal_syncer_stop(keel_wal_t *w);

/*
 * Durations of the write + fdatasync of recent syncs, in microseconds, oldest
 * first, measured on the syncing side; at most KEEL_WAL_SYNC_TIMES_MAX are kept
 * between two calls (older ones are dropped). Returns how many were copied.
 */
#define KEEL_WAL_SYNC_TIMES_MAX 64u
size_t keel_wal_take_sync_times(keel_wal_t *w, uint32_t *us, size_t cap);

/* Deletes whole segments all of whose records lie before lsn (after a snapshot): only segments
   whose seq is below lsn's (lsn >> 32), so the log from lsn on stays whole. While the sync
   thread runs, a janitor thread unlinks them (and syncs the directory) soon after, so the
   caller never waits for the file system; an error of its is returned by the next call. A
   crash before that leaves them on disk, oldest first, as a crash before the call would. */
int keel_wal_release_before(keel_wal_t *w, uint64_t lsn, keel_errmsg_t *msg);
/* The oldest segment not released: 1 until release_before released one (released ones are
   gone or about to be, by the janitor; disk_bytes counts from here). A log replayed from lsn is
   whole only if this is at most lsn >> 32 (1 for the whole log). */
uint64_t keel_wal_first_seq(const keel_wal_t *w);

void keel_wal_get_stats(keel_wal_t *w, keel_wal_stats_t *out);
/* Total bytes of segment files on disk. */
uint64_t keel_wal_disk_bytes(keel_wal_t *w);

#endif
