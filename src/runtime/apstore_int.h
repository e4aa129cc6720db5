/* apstore_int.h - what apstore.c (the store, its log and replay) and apstore_snap.c (its
   compaction: the snapshot, written in one go or by a thread) share. Not for other files. */
#ifndef KEEL_RUNTIME_APSTORE_INT_H
#define KEEL_RUNTIME_APSTORE_INT_H

#include "runtime/apstore.h"

#include "base/map.h"
#include "runtime/wal.h"

#include <stddef.h>
#include <stdint.h>

#define REC_STATE 1
#define REC_INCARNATION 2
#define REC_HINT 3
#define REC_HINT_DONE 4
#define REC_MOVED_RING 5
#define REC_FORGET 6
#define REC_DROPPED_OWN 7 /* u64 hash of a key forgotten while it held this node's dots */
#define MAP_SEED_DROPPED 0x6470
#define DROPPED_ALL_MARK 0x2a /* REC_DROPPED_OWN's payload for "every key" (one byte) */
#define HINT_KEY_BYTES_MAX (8 + KEEL_APSTORE_KEY_BYTES_MAX)
/* A snapshot record: u8 type | u32 payload bytes | payload (apstore.h, "Compaction"). */
#define SNAP_REC_HEAD_BYTES 5u
#define SNAP_REC_BYTES(n) (SNAP_REC_HEAD_BYTES + (uint64_t)(n))
/* The snapshot is encoded into a buffer written out at this size: memory bounded, few writes. */
#define SNAP_WRITE_BYTES (1u << 20)
#define MAP_SEED_KEYS 0x6170
#define MAP_SEED_HINTS 0x6869

typedef struct entry {
    keel_apval_t v;
    uint64_t item;      /* Merkle item of the current state */
    uint32_t hints;     /* hints held for this key (any home): it may not be forgotten */
    uint32_t rec_bytes; /* its state record in a snapshot (as last logged): live_bytes' part */
} entry_t;

struct keel_apstore {
    keel_wal_t *wal;
    keel_map_t map; /* key -> entry_t * */
    keel_merkle_t tree;
    uint64_t replayed, syncs;
    uint64_t bad_lsn; /* replay: the record that did not decode, + 1 */
    uint64_t incarnation;
    keel_map_t hints; /* u64 home | key -> uint64_t * (the hint's version) */
    uint64_t hint_seq;
    uint64_t ring[KEEL_APSTORE_RING_IDS_MAX]; /* the ring moved for (REC_MOVED_RING) */
    uint32_t ring_n;
    keel_apstore_observer_fn observe;
    void *observe_arg;
    char *dir;
    uint64_t snap_lsn;   /* the snapshot in use covers the log before this LSN (0: none) */
    uint64_t log_bytes;  /* what a restart reads: that snapshot and the log records since */
    uint64_t live_bytes; /* snapshot records of the keys' states and of the hints, now */
    uint64_t compactions;
    keel_apstore_job_t *job; /* a compaction whose file a thread is writing, or NULL */
    keel_map_t dropped; /* hashes (8 bytes) of keys forgotten holding this incarnation's dots */
    int dropped_all;    /* every key counts as dropped (the set could not take one): REC_DROPPED_OWN
                           with the one byte DROPPED_ALL_MARK */
    uint64_t compact_log_bytes_min;
    uint32_t compact_ratio_pct;
};

/* Appends a record to the log, counting its bytes in log_bytes (apstore.c). */
int keel__aps_log_append(keel_apstore_t *s, uint8_t type, const void *p, size_t n);
/* The log's sticky failure, or 0 (apstore.c). */
int keel__aps_failed(keel_apstore_t *s, keel_errmsg_t *msg);
/* Waits for a compaction's thread and frees the job (apstore_snap.c). */
void keel__aps_job_join_free(keel_apstore_job_t *j);

#endif
