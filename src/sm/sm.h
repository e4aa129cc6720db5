/* sm.h - the state-machine interface between keel server's node engine and the data. */
#ifndef KEEL_SM_SM_H
#define KEEL_SM_SM_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The node engine (server/node.c) replicates opaque entries; a state machine gives them
 * meaning, like canonical/raft's raft_fsm and etcd's apply loop. The engine knows
 * nothing of keys, values or RESP: it asks the state machine to turn a client's command
 * into an entry, applies committed entries through it, asks it to answer reads at the
 * applied index, writes and loads its snapshots, and proposes the housekeeping it asks
 * for (expiry sweeps) with the leader's clock. Adding a data type means adding a module
 * behind this table (and a section of its snapshot), never editing the engine.
 *
 * Every function is pure (src/sm is sans-I/O like src/core): the time comes in as
 * arguments, never from a clock. `sm` is the module's data (keel_sm_t.data).
 *
 * Entries carry the proposing leader's wall-clock time (`stamp`), so that every replica
 * derives the same expiry decisions from the log alone.
 */
typedef int (*keel_sm_sink_fn)(void *data, const uint8_t *p, size_t len);

typedef struct keel_sm_ops {
    const char *name;
    /* A client's command (argv, borrowed) as an entry stamped with now_ms, into out. */
    int (*encode)(void *sm, uint64_t now_ms, int argc, const uint8_t *const *argv,
                  const size_t *lens, keel_buf_t *out);
    /* The leader stamps an entry with its own clock before proposing it (in place). */
    void (*stamp)(void *sm, uint8_t *entry, size_t len, uint64_t now_ms);
    /* Applies the committed entry at index; reply gets the client's answer (RESP). A
     * non-zero return means this replica cannot apply: the engine stops, loudly. */
    int (*apply)(void *sm, uint64_t index, const uint8_t *entry, size_t len, keel_buf_t *reply);
    /* A committed entry that is not the module's (a no-op, a configuration) at index. */
    void (*advance)(void *sm, uint64_t index);
    uint64_t (*applied_index)(const void *sm);
    /* A hint that the entry will be applied soon (stage 0: its bucket, 1: its record). */
    void (*prefetch)(void *sm, const uint8_t *entry, size_t len, int stage);
    /* Answers a read-only entry from the state now, judging expiry at now_ms. */
    int (*read)(void *sm, uint64_t now_ms, const uint8_t *entry, size_t len, keel_buf_t *reply);
    /* 1 if the entry only reads: the engine may answer it with `read` at its place in
     * the log instead of appending it (server/requests.c, reads ordered behind writes). */
    int (*is_read)(const void *sm, const uint8_t *entry, size_t len);
    /* The newest applied entry's stamp: reads never judge expiry earlier than this. */
    uint64_t (*time_ms)(const void *sm);
    /* Bytes of state, which a snapshot costs (decides when one is worth taking). */
    uint64_t (*state_bytes)(const void *sm);
    /* Streams a snapshot of the state (in a forked child: no allocation it cannot lose). */
    int (*snapshot_write)(const void *sm, keel_sm_sink_fn sink, void *sink_data);
    /* Replaces the whole state with a snapshot's; on failure the state is unchanged. */
    int (*snapshot_load)(void *sm, const uint8_t *p, size_t len, keel_errmsg_t *msg);
    /* Leader: the earliest wall-clock time housekeeping is due (UINT64_MAX: none). */
    uint64_t (*next_deadline_ms)(const void *sm);
    /* Leader, once now_ms has passed next_deadline_ms: the entry to propose (one bounded
     * sweep), or nothing (out left empty). */
    int (*housekeeping)(void *sm, uint64_t now_ms, keel_buf_t *out);
} keel_sm_ops_t;

typedef struct keel_sm {
    const keel_sm_ops_t *ops;
    void *data;
} keel_sm_t;

#endif
