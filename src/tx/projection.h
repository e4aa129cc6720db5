/* projection.h - a CQRS projection: a catch-up subscription (a consumer group on a keel
 * stream) feeding a read model in SQLite, with its checkpoint in the same transaction. */
#ifndef KEEL_TX_PROJECTION_H
#define KEEL_TX_PROJECTION_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "client/blocking.h"
#include "client/client.h"
#include "core/stream.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"
#include "tx/evstore.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT (docs/tx.md, "Projections (CQRS)", has the why)
 *
 * A projection reads one stream (usually an event store category, "es:$ce-account")
 * through the consumer group named after it and applies each event to a read model in
 * a local SQLite database (runtime/sqlite.h), through the handler's functions. The order
 * of effects for each batch (at most batch_events_max events, one XREADGROUP ... BLOCK):
 *
 *   1. BEGIN; for each event after the checkpoint: SAVEPOINT; handler->apply; on success
 *      RELEASE, on failure ROLLBACK TO it and record the event as dead (id, error) in
 *      keel_projection_dead; then the checkpoint (the last id of the batch) and the
 *      applied count in keel_projection; COMMIT (fsync'd: synchronous=FULL).
 *   2. Only then: XACK the applied ids, KEEL.XNACK the dead ones (the group's
 *      KEEL.XDEADLETTER, MAXDELIVERIES 1, moves each to the dead-letter stream with its
 *      error at once), read the group's lag, and the next read, in one pipeline. Each
 *      batch is first checked to start at the stream's first entry after the checkpoint
 *      (a dead predecessor's read can move the group past entries; projection.c).
 *
 * So the read model and the checkpoint change together or not at all. On start (and
 * after any error, after retry_ms) the group is created or moved to the checkpoint
 * (XGROUP CREATE / SETID <checkpoint>): `>` then delivers exactly the events after it,
 * whatever the group had delivered before a crash. Entries at or before the checkpoint
 * that are still pending (a crash between COMMIT and XACK) are acknowledged, or
 * dead-lettered if keel_projection_dead lists them, never applied again. A failing event
 * costs one dead letter; the projection never stops on it.
 *
 * keel_projection_rebuild(): at the next batch boundary, in one transaction, the
 * handler's reset drops the read model, its init creates it again, the checkpoint goes
 * back to 0-0 and the dead list is cleared; the group is moved to 0 and everything is
 * applied again.
 *
 * One running instance per projection name: the group's position is set from the
 * instance's checkpoint, so two instances would fight over it.
 *
 * Lifecycle: start -> (runs on the loop) -> stop(cb); the struct may be freed in cb.
 * Metrics (with `projection="<name>"`): keel_projection_lag_events (entries of the stream
 * not yet applied, from XINFO GROUPS after each batch and every lag_every_ms),
 * keel_projection_events_applied_total, keel_projection_dead_letters_total,
 * keel_projection_rebuilds_total, keel_projection_restarts_total.
 */
#define KEEL_PROJECTION_NAME_BYTES_MAX 64u
#define KEEL_PROJECTION_KEY_BYTES_MAX 256u
#define KEEL_PROJECTION_BATCH_EVENTS_MAX 1024u
#define KEEL_PROJECTION_ERROR_BYTES_MAX 200u /* a dead letter's error text */

/* One event as a projection sees it. Strings are borrowed for the apply call. */
typedef struct keel_projection_event {
    keel_stream_id_t id; /* its id in the projected stream */
    const char *agg;     /* the event store fields (empty when the entry lacks them) */
    size_t agg_len;
    keel_es_event_t ev; /* type, data, meta, version */
} keel_projection_event_t;

/* The read model. Each function runs inside a transaction the projection owns; it must
 * not BEGIN/COMMIT itself. A non-zero return (any KEEL_E*) with words in msg: from apply,
 * the event is dead-lettered; from init/reset, the projection retries later. */
typedef struct keel_projection_handler {
    int (*init)(void *data, keel_db_t *db, keel_errmsg_t *msg);  /* CREATE TABLE IF NOT EXISTS */
    int (*reset)(void *data, keel_db_t *db, keel_errmsg_t *msg); /* DROP the read model */
    int (*apply)(void *data, keel_db_t *db, const keel_projection_event_t *ev, keel_errmsg_t *msg);
    void *data;
} keel_projection_handler_t;

typedef struct keel_projection_config {
    const char *name;   /* [A-Za-z0-9_.-]+: the checkpoint's row and the group's name */
    const char *stream; /* the stream key ("es:$ce-account") */
    const char *seeds[KEEL_CLIENT_SEEDS_MAX];
    size_t seeds_n;
    const char *consumer;      /* default "projector" */
    const char *dead_letter;   /* default "<stream>:dlq" */
    uint32_t batch_events_max; /* COUNT per read; default 256 */
    keel_ms_t block_ms;        /* BLOCK per read; default 1000 */
    keel_ms_t retry_ms;        /* after a failure, before starting again; default 200 */
    keel_ms_t lag_every_ms;    /* lag read while idle; default 1000 */
    /* After a batch shorter than batch_events_max, the next read waits this long, so that a
     * read and its XACK (two keel writes) carry what arrived meanwhile; default 0 (read at
     * once, the lowest lag: about one event per read under a steady trickle). */
    keel_ms_t linger_ms;
    keel_metrics_t *metrics; /* may be NULL */
} keel_projection_config_t;

typedef struct keel_projection_stats {
    uint64_t applied, dead, batches, restarts, rebuilds;
    uint64_t gaps;      /* batches that did not start right after the checkpoint (restarted) */
    int64_t lag_events; /* -1 until known */
} keel_projection_stats_t;

typedef struct keel_projection keel_projection_t;
typedef void (*keel_projection_closed_fn)(keel_projection_t *p, void *data);

struct keel_projection {
    keel_loop_t *loop;
    keel_projection_config_t cfg;
    char name[KEEL_PROJECTION_NAME_BYTES_MAX + 1];
    char stream[KEEL_PROJECTION_KEY_BYTES_MAX + 1];
    char consumer[KEEL_PROJECTION_NAME_BYTES_MAX + 1];
    char dead_letter[KEEL_PROJECTION_KEY_BYTES_MAX + 8];
    keel_db_t *db; /* borrowed */
    keel_projection_handler_t h;
    keel_client_t cl;
    keel_timer_t timer;
    keel_stream_id_t checkpoint; /* as committed */
    keel_projection_stats_t stats;
    int state;            /* internal */
    uint32_t waiting;     /* replies outstanding */
    int batch_err;        /* a failed reply in the current step */
    char last_error[128]; /* the server's error reply, for the log */
    bool rebuild_due, stopping, timer_open, client_open;
    bool batch_short, lingering; /* linger_ms: the last batch was short; the timer is its wait */
    keel_ms_t lag_at_ms;
    keel_stream_id_t first_after; /* the stream's first entry after the checkpoint, */
    bool first_known;             /* when there was one */
    keel_client_reply_t held;     /* a batch held while that is asked */
    void *acks;                   /* the batch's ids to acknowledge and to dead-letter (internal) */
    keel_projection_closed_fn closed;
    void *closed_data;
    keel_gauge_t *m_lag;
    keel_counter_t *m_applied, *m_dead, *m_rebuilds, *m_restarts;
};

keel_projection_config_t keel_projection_config_default(void);

/* Creates the projection's tables and the read model (handler->init) if missing, reads
 * the checkpoint and starts reading. db and the handler's data are borrowed until the
 * close callback. 0, or KEEL_EINVAL (config) / an SQLite failure / KEEL_ENOMEM, with
 * words in msg; then nothing is left running. */
int keel_projection_start(keel_projection_t *p, keel_loop_t *loop,
                          const keel_projection_config_t *cfg, keel_db_t *db,
                          const keel_projection_handler_t *h, keel_errmsg_t *msg);

/* Asks for a rebuild from zero at the next batch boundary. */
void keel_projection_rebuild(keel_projection_t *p);

/* The checkpoint as committed (0-0 before the first event). */
static inline keel_stream_id_t keel_projection_checkpoint(const keel_projection_t *p)
{
    return p->checkpoint;
}
static inline const keel_projection_stats_t *keel_projection_stats(const keel_projection_t *p)
{
    return &p->stats;
}

/* Stops reading (a batch being applied is not: SQLite calls are synchronous) and closes
 * the connection; cb (may be NULL) runs when the struct may be freed. */
void keel_projection_stop(keel_projection_t *p, keel_projection_closed_fn cb, void *data);

/* Reads the checkpoint of projection `name` from db (0-0 when none). For tools and tests. */
int keel_projection_read_checkpoint(keel_db_t *db, const char *name, keel_stream_id_t *out,
                                    uint64_t *applied, keel_errmsg_t *msg);

#endif
