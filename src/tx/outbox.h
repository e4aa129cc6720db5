/* outbox.h - the transactional outbox: events written in the business transaction, then
 * published to keel streams, in order and once, by a relay on the event loop. */
#ifndef KEEL_TX_OUTBOX_H
#define KEEL_TX_OUTBOX_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "client/client.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT (docs/tx.md has the design and the proof)
 *
 * Writing: the service changes its rows and adds the event in ONE SQLite transaction, so
 * the event exists exactly when the change does:
 *
 *     keel_outbox_init(&db, &msg);                       // once: creates the table
 *     keel_db_begin(&db, &msg);
 *     ... INSERT INTO orders ... ;
 *     keel_outbox_add(&db, "orders.events", body, len, NULL, &msg);
 *     keel_db_commit(&db, &msg);
 *     keel_outbox_relay_kick(&relay);                     // optional: publish now
 *
 * Publishing: a keel_outbox_relay_t reads unsent rows in row id order, batch_rows_max at a
 * time, and sends each batch as one MULTI/EXEC (one Raft entry: all of it is appended or
 * none) of
 *
 *     XADD <stream> KEEL.PRODUCER <producer> <row id> * id <producer>/<row id> data <payload>
 *
 * then marks the rows sent in one local transaction. Dedupe is keel's idempotent producer
 * (docs/streams.md): each stream remembers the last sequence number (here: row id) of each
 * producer, so a row published again after a crash between publish and mark answers either
 * its first id (the same sequence) or "sequence S is behind the last one" (an older row):
 * both mean "already there" and the row is marked without a second append. Row ids come
 * from AUTOINCREMENT, so they only grow, even after sent rows are deleted.
 *
 * Guarantees: every committed row is appended to its stream exactly once, and the rows of
 * one stream appear in row id order, through any number of relay crashes, lost replies,
 * leader changes, or two relays on the same table. Conditions: `producer` is unique to this
 * table and stable across restarts; the stream is not deleted while rows are in flight
 * (deleting it forgets the producer table); fewer than 1,024 producers write to one stream
 * (keel evicts the oldest producer beyond that).
 *
 * A row the server refuses on its own (e.g. over value_bytes_max) while later rows of its
 * stream in the same batch were appended can no longer be appended in order: it is marked
 * dead (column `error`), counted and logged, never retried. A refusal with no later row of
 * that stream appended (the stream key holds another type, no room for a new key) stops the
 * relay at that row and retries it with backoff: order is kept, the lag metric grows.
 *
 * Metrics (when cfg.metrics is set): keel_outbox_pending (unsent rows), keel_outbox_lag_ms
 * (age of the oldest unsent row; both refreshed at most once a second),
 * keel_outbox_published_total, keel_outbox_duplicates_total
 * (re-published rows keel recognised), keel_outbox_dead_total, keel_outbox_errors_total
 * (batches that failed and were retried).
 *
 * Lifecycle (libuv's rule): init -> start -> close(cb); free only in the close callback.
 * The relay uses cfg.db on the loop's thread, between the service's own transactions; a
 * relay in another process on the same file is fine too (WAL, busy timeout).
 */

#define KEEL_OUTBOX_STREAM_BYTES_MAX 256u
#define KEEL_OUTBOX_PAYLOAD_BYTES_MAX (512u * 1024u) /* keel's value_bytes_max default */
#define KEEL_OUTBOX_PRODUCER_BYTES_MAX 48u           /* + "/<row id>" fits keel's 64-byte pid */
#define KEEL_OUTBOX_BATCH_ROWS_MAX 1000u

/* Creates the table (IF NOT EXISTS). Outside a transaction or inside one. */
int keel_outbox_init(keel_db_t *db, keel_errmsg_t *msg);

/* Adds one event for `stream` inside the caller's open transaction (KEEL_EINVAL without
 * one: an outbox row written alone would break the point of the outbox). id_out may be
 * NULL. The payload is copied. */
int keel_outbox_add(keel_db_t *db, const char *stream, const void *payload, size_t payload_bytes,
                    int64_t *id_out, keel_errmsg_t *msg);

/* Unsent rows and the creation time (Unix ms) of the oldest (0 when none). */
int keel_outbox_pending(keel_db_t *db, int64_t *rows, int64_t *oldest_unix_ms, keel_errmsg_t *msg);

/* Deletes sent rows marked before before_unix_ms; *deleted may be NULL. */
int keel_outbox_prune(keel_db_t *db, int64_t before_unix_ms, int64_t *deleted, keel_errmsg_t *msg);

/* ---- a batch and its outcome (the relay's pure part, exposed for tests) --------------- */

typedef enum keel_outbox_outcome {
    KEEL_OUTBOX_RETRY = 0, /* not settled: stays unsent, the relay backs off */
    KEEL_OUTBOX_PUBLISHED, /* appended now; stream_id says where */
    KEEL_OUTBOX_DUPLICATE, /* appended by an earlier attempt (keel's producer table said so) */
    KEEL_OUTBOX_DEAD,      /* refused, and a later row of its stream went in: never retried */
} keel_outbox_outcome_t;

typedef struct keel_outbox_row {
    int64_t id;
    int64_t created_unix_ms;
    char *stream; /* owned by the batch */
    uint8_t *payload;
    size_t payload_bytes;
    /* settled by keel_outbox_settle */
    keel_outbox_outcome_t outcome;
    char stream_id[48]; /* "ms-seq" for PUBLISHED and DUPLICATE (the first append's, when known) */
    char error[128];    /* the server's refusal, for DEAD and RETRY */
} keel_outbox_row_t;

typedef struct keel_outbox_batch {
    keel_outbox_row_t *rows;
    size_t n, cap;
} keel_outbox_batch_t;

void keel_outbox_batch_free(keel_outbox_batch_t *b);
/* Reads up to rows_max unsent rows in id order into b (emptied first). */
int keel_outbox_read(keel_db_t *db, size_t rows_max, keel_outbox_batch_t *b, keel_errmsg_t *msg);

/* The reply element for one XADD inside EXEC: a bulk id, or an error text. */
typedef struct keel_outbox_result {
    bool error;
    const char *text; /* not NUL-terminated */
    size_t len;
} keel_outbox_result_t;

/* Sets each row's outcome from its XADD's result (results[i] for rows[i]), following the
 * rules in the manual above. Pure. Returns how many rows are left to RETRY. */
size_t keel_outbox_settle(keel_outbox_batch_t *b, const keel_outbox_result_t *results);

/* Marks the settled rows (all but RETRY) in one transaction. */
int keel_outbox_mark(keel_db_t *db, const keel_outbox_batch_t *b, int64_t now_unix_ms,
                     keel_errmsg_t *msg);

/* ---- the relay ------------------------------------------------------------------------ */

typedef struct keel_outbox_relay keel_outbox_relay_t;
typedef void (*keel_outbox_hook_fn)(keel_outbox_relay_t *r, const keel_outbox_batch_t *b,
                                    void *data);

typedef struct keel_outbox_relay_config {
    keel_db_t *db;                /* borrowed; must outlive the relay */
    const char *servers;          /* keel server client addresses, "host:port,host:port" */
    const char *producer;         /* unique to this outbox table, stable across restarts */
    uint32_t batch_rows_max;      /* rows per MULTI/EXEC; default 100 */
    keel_ms_t poll_ms;            /* looks for new rows this often when idle; default 20 */
    keel_ms_t backoff_base_ms;    /* after a failed batch: capped exponential, full jitter */
    keel_ms_t backoff_cap_ms;     /* defaults 50 .. 2000 */
    keel_ms_t request_timeout_ms; /* one batch; default 5000 */
    keel_ms_t sent_keep_ms;       /* sent rows are deleted this long after; 0 keeps them */
    uint64_t seed;                /* jitter */
    keel_metrics_t *metrics;      /* may be NULL */
    const char *metrics_labels;   /* preformatted, may be NULL */
    /* Test hooks, may be NULL: after a batch's answer has been settled and before it is
     * marked (a crash here is "between publish and mark"), and after it is marked. */
    keel_outbox_hook_fn on_published, on_marked;
    void *hook_data;
} keel_outbox_relay_config_t;

typedef struct keel_outbox_relay_stats {
    uint64_t batches, published, duplicates, dead, errors;
} keel_outbox_relay_stats_t;

struct keel_outbox_relay {
    keel_outbox_relay_config_t cfg;
    char producer[KEEL_OUTBOX_PRODUCER_BYTES_MAX];
    char seeds_text[512];
    keel_loop_t *loop;
    keel_client_t client;
    keel_timer_t timer;
    keel_rand_t rand;
    keel_outbox_batch_t batch;
    keel_outbox_relay_stats_t stats;
    uint32_t failures; /* consecutive failed batches, for the backoff */
    keel_ms_t pruned_at_ms, gauged_at_ms;
    bool started, inflight, closing, idle;
    int handles_open;
    void (*closed)(keel_outbox_relay_t *r);
    keel_gauge_t *m_pending, *m_lag_ms;
    keel_counter_t *m_published, *m_duplicates, *m_dead, *m_errors;
};

keel_outbox_relay_config_t keel_outbox_relay_config_default(void);
int keel_outbox_relay_init(keel_outbox_relay_t *r, keel_loop_t *loop,
                           const keel_outbox_relay_config_t *cfg, keel_errmsg_t *msg);
/* Publishes from now on. */
void keel_outbox_relay_start(keel_outbox_relay_t *r);
/* Looks for rows now instead of at the next poll (call after a commit). */
void keel_outbox_relay_kick(keel_outbox_relay_t *r);
/* True when the last look found nothing unsent and no batch is in flight. */
bool keel_outbox_relay_idle(const keel_outbox_relay_t *r);
const keel_outbox_relay_stats_t *keel_outbox_relay_stats(const keel_outbox_relay_t *r);
/* Stops; a batch in flight is abandoned (its rows are re-sent and recognised next time). */
void keel_outbox_relay_close(keel_outbox_relay_t *r, void (*closed)(keel_outbox_relay_t *r));

#endif
