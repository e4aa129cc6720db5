/* snapfile.h - state-machine snapshot files: CRC'd, fsync'd, renamed atomically. */
#ifndef KEEL_RUNTIME_SNAPFILE_H
#define KEEL_RUNTIME_SNAPFILE_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * DIR/snap-<index, 16 hex>-<term, 16 hex>.snap:
 *   header (48 bytes): "KEELSNP1" | u32 version | u32 reserved | u64 index | u64 term
 *                      | u64 data_bytes | u32 crc32c(data) | u32 crc32c(header bytes 0..44)
 *   data
 * (little-endian). Writing goes to a ".tmp" name, is fsync'd, renamed into
 * place, and the directory fsync'd: a snapshot file either exists whole or not
 * at all. Loading tries the newest first; one that fails its CRC or is short
 * is reported (with its name) and the next older one is tried, so a corrupt
 * snapshot costs a longer log replay, never wrong state.
 */
#define KEEL_SNAP_HEADER_BYTES 48u
#define KEEL_SNAP_DATA_BYTES_MAX (4ull * 1024 * 1024 * 1024) /* 4 GiB */

typedef struct keel_snapw keel_snapw_t;

/* Starts a snapshot at (index, term); data is streamed with write() then commit(). */
int keel_snapw_open(keel_snapw_t **out, const char *dir, uint64_t index, uint64_t term,
                    keel_errmsg_t *msg);
int keel_snapw_write(keel_snapw_t *w, const void *data, size_t n, keel_errmsg_t *msg);
/* Durable and visible on success; the writer is freed either way. */
int keel_snapw_commit(keel_snapw_t *w, keel_errmsg_t *msg);
void keel_snapw_abort(keel_snapw_t *w);

/* Writes a whole snapshot from memory (open + write + commit). */
int keel_snap_write(const char *dir, uint64_t index, uint64_t term, const void *data, size_t n,
                    keel_errmsg_t *msg);

typedef struct keel_snap {
    uint64_t index, term;
    uint8_t *data; /* owned; free with keel_snap_free */
    size_t data_bytes;
    int skipped_corrupt; /* newer snapshots that failed verification */
} keel_snap_t;

/*
 * Loads the newest valid snapshot. Returns 0 with snap->data set, or
 * KEEL_ENOTFOUND when there is none (valid); stale .tmp files are removed.
 */
int keel_snap_load_latest(const char *dir, keel_snap_t *snap, keel_errmsg_t *msg);
/* Loads and verifies the snapshot (index, term) only: no fallback, no .tmp cleanup, so
   it may run on another thread while the owner writes snapshots. */
int keel_snap_load(const char *dir, uint64_t index, uint64_t term, keel_snap_t *snap,
                   keel_errmsg_t *msg);
void keel_snap_free(keel_snap_t *snap);
/* Removes all but the keep newest snapshots. */
int keel_snap_prune(const char *dir, int keep, keel_errmsg_t *msg);
/* Removes the snapshots whose index is below index (the caller keeps index and newer ones). */
int keel_snap_prune_below(const char *dir, uint64_t index, keel_errmsg_t *msg);
/* Removes the .tmp file a writer of snapshot (index, term) left (a snapshot child that was
   killed: only its own error paths remove it). Absent is fine. */
void keel_snap_remove_tmp(const char *dir, uint64_t index, uint64_t term);
/* Bytes of snapshot files in dir. */
uint64_t keel_snap_disk_bytes(const char *dir);

#endif
