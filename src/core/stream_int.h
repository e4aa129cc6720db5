/* stream_int.h - what stream.c (entries in blocks), stream_group.c (consumer groups, their
   consumers and pending lists, idempotent producers) and stream_snap.c (snapshots) share: the
   structs and the keel__stream_* functions. Not for other files. */
#ifndef KEEL_CORE_STREAM_INT_H
#define KEEL_CORE_STREAM_INT_H

#include "core/stream.h"

/* A block of entries (stream.c has its format). */
typedef struct sblock sblock_t;

struct keel_stream_consumer {
    uint64_t seen_ms;
    uint64_t pending;
    uint64_t priority_reads;
    size_t name_len;
    uint8_t name[];
};

struct keel_stream_group {
    keel_stream_id_t last_id;
    int64_t entries_read;
    uint64_t max_deliveries; /* dead letters: 0 off */
    uint8_t *dlq;            /* the dead-letter stream's key (owned), dlq_len bytes */
    size_t dlq_len;
    keel_stream_pending_t *pel; /* pel[pel_head .. pel_head + pel_len), sorted by id */
    size_t pel_head, pel_len, pel_cap;
    keel_stream_consumer_t **cons; /* sorted by name */
    size_t ncons, ccap;
    size_t name_len;
    uint8_t name[];
};

typedef struct producer {
    uint64_t seq;
    keel_stream_id_t id;
    uint8_t len;
    uint8_t pid[KEEL_STREAM_PRODUCER_ID_BYTES_MAX];
} producer_t;

struct keel_stream {
    sblock_t **blocks; /* blocks[head .. len), sorted by id */
    size_t head, len, cap;
    uint64_t length, entries_added;
    keel_stream_id_t last_id, max_deleted;
    keel_stream_group_t **groups; /* sorted by name */
    size_t ngroups, gcap;
    producer_t *producers; /* sorted by pid */
    size_t nproducers, pcap;
    uint64_t max_age_ms; /* retention by age: 0 off */
    size_t bytes;
};

/* stream.c: the first (last = 0) or last (last = 1) live entry's id; 0-0 if none. */
keel_stream_id_t keel__stream_edge_id(const keel_stream_t *s, int last);
/* stream_group.c: frees a group (its consumers, PEL and dead-letter key); the index where
   a consumer's or a producer's name is, or goes (*found says which). */
void keel__stream_group_free(keel_stream_group_t *g);
size_t keel__stream_cons_index(const keel_stream_group_t *g, const uint8_t *name, size_t len,
                               int *found);
size_t keel__stream_producer_index(const keel_stream_t *s, const uint8_t *pid, size_t n,
                                   int *found);

#endif
