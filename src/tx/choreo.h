/* choreo.h - choreographed sagas on keel streams: a participant reacts to the saga's events
 * with its consumer group, applies each once (inbox) and emits the next event (outbox). */
#ifndef KEEL_TX_CHOREO_H
#define KEEL_TX_CHOREO_H

#include "base/buf.h"
#include "base/err.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "client/client.h"
#include "core/choreo.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"
#include "tx/outbox.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT (docs/tx.md, "Sagas, choreographed", has the design and the proof)
 *
 * A saga is the chain of events on one stream. Whoever starts it emits the first event in
 * its own transaction:
 *
 *     keel_db_begin(&db, &msg);
 *     ... INSERT INTO orders ... ;
 *     keel_choreo_emit(&db, "orders.saga", "order.created", "o-42", body, len, &msg);
 *     keel_db_commit(&db, &msg);
 *
 * Each participant declares its rules (core/choreo.h) and pairs rule i with handler i:
 *
 *     cfg.def.name = "stock";
 *     cfg.def.rules[0] = (keel_choreo_rule_t){"order.created", KEEL_CHOREO_ACTION,
 *                                             "stock.reserved", "stock.failed", 0};
 *     cfg.def.rules[1] = (keel_choreo_rule_t){"payment.failed", KEEL_CHOREO_COMPENSATION,
 *                                             "stock.released", NULL, 0};
 *     cfg.handlers[0] = reserve; cfg.handlers[1] = release; cfg.def.rules_n = 2;
 *
 * A handler runs inside the participant's SQLite transaction and does only local work:
 * 0 applies it (what it appends to `out` becomes the emitted event's data; nothing appended
 * forwards the incoming event's data), KEEL_EREJECTED refuses it (an action only: its writes
 * are rolled back and emit_fail goes out), anything else is transient (rolled back, retried
 * after a backoff; an action gives up after def.attempts_max and counts as refused).
 *
 * Per event, in ONE transaction: the inbox claim of the message id (tx/inbox.h), the
 * handler's writes, and the emitted event as an outbox row (tx/outbox.h). Then XACK. So:
 *   - a redelivered event (crash or lost XACK after the commit) finds its id and is only
 *     acknowledged: applied once;
 *   - the emitted event exists exactly when the effect does, and the participant's own
 *     relay publishes it exactly once (keel's idempotent producer).
 *
 * Delivery: the participant is `consumer` in group def.name on `stream`. At start it reads
 * its own pending entries (those a crash left unacknowledged), then new ones (XREADGROUP
 * BLOCK). Every claim_interval_ms it takes over entries that other consumers of its group
 * left pending longer than claim_idle_ms (XAUTOCLAIM): a dead instance's events are
 * finished by another. Events of types without a rule are acknowledged and ignored.
 *
 * Giving up (core/choreo.h, retry_for_ms): an event still failing retry_for_ms after its first
 * failed attempt (measured by this process) leaves the participant's way in ONE keel entry
 * (KEEL.TXN): the saga is recorded in the hash `<stream>:attention` (field: saga id, value:
 * "<participant> <event type> <entry id> <error>"), and the entry moves to the dead-letter
 * stream `<stream>:dlq` through keel's own dead letters (KEEL.XDEADLETTER ... MAXDELIVERIES 1,
 * KEEL.XNACK ... ERROR, KEEL.XDEADLETTER ... OFF: the policy exists only inside that entry),
 * with its fields, keel-error, keel-deliveries and the rest. The participant goes on with its
 * later events. Nothing of the event is applied or claimed in the inbox: a person who fixes
 * the cause can XADD it again (its `id` field unchanged) and it applies once.
 *
 * Metrics (cfg.metrics): keel_choreo_events_total{participant,outcome="applied"|"refused"|
 * "compensated"|"duplicate"|"ignored"|"malformed"|"dead_lettered"},
 * keel_choreo_retries_total{participant},
 * keel_choreo_claimed_total{participant}, and the relay's keel_outbox_* metrics with
 * choreo="<name>".
 *
 * Lifecycle (libuv's rule): init -> start -> close(cb); free only in the close callback.
 */
#define KEEL_CHOREO_BATCH_ENTRIES_MAX 256u
/* The keys beside the saga's stream (its name, then the suffix). */
#define KEEL_CHOREO_DLQ_SUFFIX ":dlq"             /* dead-lettered events */
#define KEEL_CHOREO_ATTENTION_SUFFIX ":attention" /* saga id -> why it needs attention */
#define KEEL_CHOREO_DEADLINES_SUFFIX ":deadlines" /* running sagas by deadline (choreo_watch.h) */
#define KEEL_CHOREO_KEY_BYTES_MAX (KEEL_OUTBOX_STREAM_BYTES_MAX + 16u)

typedef struct keel_choreo keel_choreo_t;

/* Runs inside the participant's open transaction on db. out is empty and bounded by
 * KEEL_CHOREO_DATA_BYTES_MAX. */
typedef int (*keel_choreo_fn)(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out,
                              void *data, keel_errmsg_t *msg);
/* A test hook: an event's transaction committed (its effect and emitted event are durable),
 * its XACK not yet sent. A crash here is "applied, not acknowledged". */
typedef void (*keel_choreo_hook_fn)(keel_choreo_t *c, const char *entry_id,
                                    const keel_choreo_event_t *ev, void *data);

typedef struct keel_choreo_config {
    keel_db_t *db;        /* borrowed, must outlive the participant: its own database */
    const char *servers;  /* keel server client addresses, "host:port,host:port" */
    const char *stream;   /* the saga's events; at most KEEL_OUTBOX_STREAM_BYTES_MAX */
    const char *consumer; /* this instance in the group; reuse it after a restart */
    const char *producer; /* the outbox producer, unique to db; NULL: def.name */
    keel_choreo_def_t def;
    keel_choreo_fn handlers[KEEL_CHOREO_RULES_MAX]; /* handlers[i] runs def.rules[i] */
    void *handler_data;
    uint32_t batch_entries_max;   /* per read; default 64 */
    keel_ms_t block_ms;           /* XREADGROUP BLOCK; default 200 */
    keel_ms_t claim_idle_ms;      /* XAUTOCLAIM min-idle; default 5000 */
    keel_ms_t claim_interval_ms;  /* default 1000 */
    keel_ms_t request_timeout_ms; /* beyond block_ms; default 5000 */
    keel_ms_t relay_poll_ms;      /* the outbox relay's poll; default 20 */
    uint64_t seed;
    keel_metrics_t *metrics; /* may be NULL */
    keel_choreo_hook_fn on_committed;
    void *hook_data;
} keel_choreo_config_t;

typedef struct keel_choreo_stats {
    uint64_t applied, refused, compensated, duplicates, ignored, malformed, retries, claimed;
    uint64_t dead_lettered, request_errors;
} keel_choreo_stats_t;

typedef enum keel_choreo__phase {
    KEEL_CHOREO__GROUP = 0, /* XGROUP CREATE ... MKSTREAM */
    KEEL_CHOREO__HISTORY,   /* our own pending entries, from 0 */
    KEEL_CHOREO__LIVE,      /* new entries, BLOCK */
} keel_choreo__phase_t;

struct keel_choreo {
    keel_choreo_config_t cfg;
    char stream[KEEL_OUTBOX_STREAM_BYTES_MAX + 1];
    char dlq[KEEL_CHOREO_KEY_BYTES_MAX + 1], attention[KEEL_CHOREO_KEY_BYTES_MAX + 1];
    char consumer[KEEL_CHOREO_NAME_BYTES_MAX * 2 + 1];
    char seeds_text[512];
    keel_loop_t *loop;
    keel_client_t client;
    keel_outbox_relay_t relay;
    keel_timer_t wait, claim;
    keel_rand_t rand;
    keel_buf_t out;
    keel_choreo__phase_t phase;
    char claim_cursor[48];
    bool claim_due, inflight, waiting, started, closing;
    bool backoff_after_ack; /* the batch being acknowledged stopped at an entry to retry */
    char relay_labels[KEEL_CHOREO_NAME_BYTES_MAX + 16];
    char fail_id[48]; /* the entry whose handler failed transiently, how often, since when */
    uint32_t fail_attempts;
    keel_ms_t fail_since_ms, fail_until_ms;     /* the loop clock at its first failure; + limit */
    char dead_why[KEEL_ERRMSG_BYTES_MAX + 160]; /* the attention record of the entry to move */
    char dead_saga[KEEL_CHOREO_SAGA_BYTES_MAX + 1];
    keel_choreo_stats_t stats;
    int handles_open;
    void (*closed)(keel_choreo_t *c);
    keel_counter_t *m_events[7], *m_retries, *m_claimed;
};

keel_choreo_config_t keel_choreo_config_default(void);
/* Validates cfg (def included), creates the inbox and outbox tables in cfg->db. */
int keel_choreo_init(keel_choreo_t *c, keel_loop_t *loop, const keel_choreo_config_t *cfg,
                     keel_errmsg_t *msg);
void keel_choreo_start(keel_choreo_t *c);
const keel_choreo_stats_t *keel_choreo_stats(const keel_choreo_t *c);
/* Publishes the outbox now instead of at the relay's next poll: call after committing a
 * transaction that used keel_choreo_emit() on this participant's db. */
void keel_choreo_kick(keel_choreo_t *c);
/* Stops; an event being read is left pending and is read again by the next start. */
void keel_choreo_close(keel_choreo_t *c, void (*closed)(keel_choreo_t *c));

/* Adds an event to the outbox of db inside the caller's open transaction (KEEL_EINVAL
 * without one, or for a bad type or saga id, or data over the limit). Starts a saga, or
 * emits one from a handler that must emit more than its rule's event. */
int keel_choreo_emit(keel_db_t *db, const char *stream, const char *type, const char *saga,
                     const void *data, size_t data_len, keel_errmsg_t *msg);

#endif
