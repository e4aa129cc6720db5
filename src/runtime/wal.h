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
 * Durability: append() only buffers. sync() (blocking) or sync_start() +
 * sync_finish() (the write and fdatasync run on another thread while the
 * caller goes on; see runtime users) make every record appended before the
 * call durable; only then may the caller acknowledge them. Records appended
 * while a sync is in flight form the next group: one fdatasync covers all
 * appends of a loop turn (group commit).
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
#define KEEL_WAL_RECORD_BYTES_MAX (16u * 1024u * 1024u)
#define KEEL_WAL_HEADER_BYTES 32u
#define KEEL_WAL_RECORD_HEADER_BYTES 8u

typedef struct keel_wal_config {
    size_t segment_bytes;    /* preallocated size of each segment */
    size_t record_bytes_max; /* largest body accepted (type byte + payload) */
    int preallocate;         /* 1: fallocate each new segment to segment_bytes */
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
/* The LSN the next appended record would get if it fits the current segment. */
uint64_t keel_wal_next_lsn(const keel_wal_t *w);
/* Bytes appended but not yet handed to a sync. */
size_t keel_wal_pending_bytes(const keel_wal_t *w);

/* Blocking: writes and fdatasyncs everything appended so far. */
int keel_wal_sync(keel_wal_t *w, keel_errmsg_t *msg);

/*
 * Split sync for event loops. sync_start() takes the pending group (returns
 * KEEL_EBUSY if a sync is already in flight, 0 with nothing to do if the group
 * is empty: *started = 0). sync_run() does the write + fdatasync and may run
 * on any one thread; it touches only the group and the file descriptors, which
 * the WAL does not use until sync_finish(). sync_finish() runs back on the
 * owner thread and returns the sync's result; on success every record appended
 * before sync_start() is durable. After a failed sync the WAL refuses further
 * syncs (KEEL_EIO): the caller must stop, as fsync errors cannot be retried
 * safely (the kernel may have dropped the dirty pages).
 */
int keel_wal_sync_start(keel_wal_t *w, int *started);
void keel_wal_sync_run(keel_wal_t *w);
int keel_wal_sync_finish(keel_wal_t *w, keel_errmsg_t *msg);

/* Deletes whole segments all of whose records lie before lsn (after a snapshot). */
int keel_wal_release_before(keel_wal_t *w, uint64_t lsn, keel_errmsg_t *msg);

void keel_wal_get_stats(const keel_wal_t *w, keel_wal_stats_t *out);
/* Total bytes of segment files on disk. */
uint64_t keel_wal_disk_bytes(const keel_wal_t *w);

#endif
