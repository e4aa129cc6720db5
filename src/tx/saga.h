/* tx/saga.h - durable orchestrated sagas on the loop: core/saga's state machine, its log in
 * keel server written under a fenced lock, resumption of sagas whose owner died, steps as
 * callbacks or kit calls with an Idempotency-Key. docs/tx.md has the design. */
#ifndef KEEL_TX_SAGA_H
#define KEEL_TX_SAGA_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/list.h"
#include "base/map.h"
#include "base/metrics.h"
#include "client/args.h"
#include "client/client.h"
#include "client/lanes.h"
#include "core/saga.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT
 *
 *     keel_saga_type_t order;                       // the definition: data + step functions
 *     keel_saga_def_default(&order.def, "order");
 *     keel_saga_type_step(&order, "reserve", reserve, unreserve, inv);   // local functions
 *     keel_saga_type_step(&order, "charge", keel_saga_http_step, keel_saga_http_undo, &pay);
 *     keel_sagas_config_t cfg = keel_sagas_config_default();
 *     cfg.seeds[0] = "127.0.0.1:7001"; cfg.seeds_n = 1;
 *     keel_sagas_init(&o, &loop, &cfg, &msg);        // starts scanning for orphaned sagas
 *     keel_sagas_register(&o, &order);
 *     keel_sagas_start(&o, "order", "o-42", input, len, on_end, ctx);
 *
 * A step function gets a keel_saga_call_t and must call keel_saga_call_done() exactly once,
 * now or later, with KEEL_SAGA_OK (and a result), KEEL_SAGA_BUSINESS (the service refused:
 * nothing applied) or KEEL_SAGA_TRANSIENT (maybe applied: retried with the same key). The
 * call's key is what the service must deduplicate on (core/saga.h states the contract).
 * A step that has not answered within its timeout counts as transient; its late answer is
 * dropped (its call object stays valid until keel_saga_call_done). A result longer than the
 * definition's result_bytes_max cannot be logged: the step then counts as failed after it
 * may have applied (so it is compensated too).
 *
 * Where the state lives (keel server, any node; docs/tx.md says why):
 *   saga:<id>:log     a stream; record n is entry 0-n with one field "r" (core/saga.h's
 *                     encoding). Written only as
 *                       KEEL.FENCED saga:<id> <token> XADD saga:<id>:log 0-<n> r <record>
 *                     so a write whose outcome was lost can be sent again (a repeat of
 *                     0-n is refused by the stream and checked to be the same record), and
 *                     a write from an owner whose lock was taken over is refused.
 *   lock saga:<id>    KEEL.LOCK with lock_ttl_ms: the owner. Renewed in one KEEL.TXN
 *                     (UNLOCK + LOCK) before an action once a third of the TTL has passed.
 *   saga:open         a hash, field <id> = the saga's type: the index of unfinished sagas
 *                     that the scan walks (HSCAN) every scan_interval_ms to adopt those
 *                     whose lock is free (their owner died or stalled). Set with the
 *                     started record, removed with the final one (one entry each). Until
 *                     6 Dec each was a key saga:open:<id> found by SCAN MATCH: a walk of
 *                     the whole keyspace every second, growing with every order kept.
 *   saga:ended        a sorted set, member <id> scored by its end's time: the finished
 *                     (done, compensated) sagas, written with the end only while
 *                     log_retention_ms is set; the retention sweep's index (saga_retain.c).
 * The ids "open" and "ended" are refused: their lock keys are these indexes.
 * Adopting, or learning that a write was fenced, always re-reads the log and replays it:
 * an owner never acts on memory that another owner may have overtaken.
 *
 * The end callback runs once per keel_sagas_start: 0 with the final state (DONE,
 * COMPENSATED, NEEDS_ATTENTION), or KEEL_EBUSY (another orchestrator owns that id),
 * KEEL_ECANCELED (this orchestrator lost ownership; the new owner finishes it, or closing),
 * KEEL_ECORRUPT (the stored log is damaged: the saga is left as it is, for a human).
 *
 * Metrics (cfg.metrics): keel_sagas{state="running"|"compensating"} held now,
 * keel_sagas_finished_total{state="done"|"compensated"|"needs_attention"},
 * keel_saga_step_seconds{saga,step} (each attempt of an action), keel_saga_log_write_seconds,
 * keel_saga_seconds{saga} (start to end, by this owner), keel_saga_adopted_total,
 * keel_saga_fenced_total.
 *
 * Lifecycle (libuv's rule): init -> start... -> close(cb); free in the callback. One loop.
 */
#define KEEL_SAGAS_TYPES_MAX 32u
#define KEEL_SAGAS_RUNS_LIMIT 65536u

typedef struct keel_sagas keel_sagas_t;
typedef struct keel_saga_call keel_saga_call_t;
typedef struct keel__saga_run keel__saga_run_t;

typedef enum keel_saga_outcome {
    KEEL_SAGA_OK,
    KEEL_SAGA_BUSINESS,
    KEEL_SAGA_TRANSIENT,
} keel_saga_outcome_t;

typedef void (*keel_saga_fn)(keel_saga_call_t *call, void *data);

/* One attempt of an action or a compensation. Fields are read-only for the step. */
struct keel_saga_call {
    const char *saga_id;
    const char *key; /* "<saga_id>:<step>:do" or ":undo" */
    uint32_t step, attempt;
    bool undo;
    keel_ms_t timeout_ms;
    const uint8_t *input; /* the saga's input (a copy owned by the call) */
    size_t input_len;
    keel_loop_t *loop;
    /* internal */
    keel__saga_run_t *run; /* NULL once the run gave up on this call */
    uint32_t gen;
    char key_buf[KEEL_SAGA_KEY_BYTES_MAX + 1];
    char id_buf[KEEL_SAGA_ID_BYTES_MAX + 1];
};

/* Reports the attempt's outcome (exactly once); result is copied. The call is freed. */
void keel_saga_call_done(keel_saga_call_t *call, keel_saga_outcome_t outcome, const void *result,
                         size_t result_len);
/* The result of an earlier step i (borrowed, valid during the step function), or NULL. */
const uint8_t *keel_saga_call_result(const keel_saga_call_t *call, uint32_t i, size_t *len);

/*
 * Commands for the end's entry (end_cmds, optional): called each time the end is written,
 * with the final state; adds whole commands to a, each after its argument count (KEEL.TXN's
 * layout; keel_es_append_cmds writes an event store's append so), and says how many in
 * *cmds. They apply in the one entry that logs the final record, removes the open marker and
 * unlocks: with the saga's end, all or none, once (a fenced retry of an end that landed is
 * refused whole). Their replies are not looked at, and the saga waits (retrying) while the
 * function fails. The order service puts its order's outcome event there: no crash can come
 * between a saga's end and its outcome's record.
 */
typedef int (*keel_saga_end_cmds_fn)(keel_args_t *a, const char *saga_id, keel_saga_state_t state,
                                     void *data, size_t *cmds);

typedef struct keel_saga_type {
    keel_saga_def_t def;
    struct {
        keel_saga_fn action, compensation; /* compensation NULL: def.no_compensation */
        void *data;
    } fns[KEEL_SAGA_STEPS_MAX];
    keel_saga_end_cmds_fn end_cmds; /* NULL: none */
    void *end_data;
} keel_saga_type_t;

/* Adds a step with the definition's default policy. Its index, or KEEL_EFULL. */
int keel_saga_type_step(keel_saga_type_t *t, const char *name, keel_saga_fn action,
                        keel_saga_fn compensation, void *data);

/*
 * A step that is a call through the kit (kit/call.h): POST path with the saga input as the
 * body and `Idempotency-Key: <key>`, `X-Keel-Saga: <id>`. data is a keel_saga_http_t.
 * Action: 2xx is OK (the body is the result); 4xx is a business failure except 408, 409
 * (the key's first request still in progress, as the IETF idempotency draft answers), 425
 * and 429; those and anything else (5xx, no instance, timeout, transport) are transient.
 * Compensation (keel_saga_http_undo, undo_path): 2xx is OK, anything else is retried. It
 * goes through undo_caller when set: a caller's breaker counts every call it makes, so
 * compensations failing through the action's caller can open the breaker on its actions.
 */
struct keel_caller;
typedef struct keel_saga_http {
    struct keel_caller *caller;
    const char *path, *undo_path;
    struct keel_caller *undo_caller; /* NULL: caller */
} keel_saga_http_t;
void keel_saga_http_step(keel_saga_call_t *call, void *data);
void keel_saga_http_undo(keel_saga_call_t *call, void *data);

typedef void (*keel_sagas_end_fn)(keel_sagas_t *o, const char *id, int err, keel_saga_state_t state,
                                  void *data);

typedef struct keel_sagas_config {
    const char *seeds[KEEL_CLIENT_SEEDS_MAX]; /* keel server client addresses */
    size_t seeds_n;
    keel_ms_t lock_ttl_ms;        /* ownership lease; default 10000 */
    keel_ms_t scan_interval_ms;   /* adopting orphaned sagas; default 1000; 0: never */
    keel_ms_t request_timeout_ms; /* each keel server request; default 5000 */
    /* A finished saga's log (done or compensated; never needs_attention) is deleted this long
     * after its end, by a sweep every min(retention / 4, 60 s) of the sagas its end indexed
     * in saga:ended (only while this is set); 0: kept for ever (the default). It must outlast every
     * way the same saga id can be started again (an idempotency key's life, say): a saga whose log
     * is gone starts afresh. */
    keel_ms_t log_retention_ms;
    bool renew_lock;   /* renew before acting once a third of the TTL passed; default true.
                          Off, a saga that outlives its TTL is re-locked after a fenced write
                          (the same safety, one refused write and a replay later) */
    uint32_t runs_max; /* sagas in progress at once; default 1024 */
    /* Connections the sagas' commands are spread over, a saga always on the same one
     * (client/lanes.h: on one connection an adoption's log read waited for every write
     * queued before it); 1..KEEL_CLIENT_LANES_MAX, default 4. The scan and the retention
     * sweep have a connection of their own. */
    uint32_t lanes;
    keel_metrics_t *metrics; /* may be NULL */
    uint64_t seed;
    /* Every saga this orchestrator ends (started here or adopted); may be NULL. */
    keel_sagas_end_fn on_end;
    void *on_end_data;
} keel_sagas_config_t;

typedef struct keel_sagas_stats {
    uint64_t started, adopted, finished[KEEL_SAGA__STATES], fenced, lost, corrupt;
    uint64_t log_writes, log_write_retries, renewals;
    uint64_t log_write_ns; /* summed over log_writes */
    uint64_t logs_deleted; /* finished logs deleted by the retention sweep */
} keel_sagas_stats_t;

struct keel_sagas {
    keel_loop_t *loop;
    keel_sagas_config_t cfg;
    keel_client_t cl;          /* the scan's and the retention sweep's */
    keel_client_lanes_t lanes; /* the runs' */
    const keel_saga_type_t *types[KEEL_SAGAS_TYPES_MAX];
    uint32_t types_n;
    keel_list_t runs; /* keel__saga_run_t, in progress */
    uint32_t runs_n;
    uint32_t by_state[KEEL_SAGA__STATES];
    keel_timer_t scan_timer;
    bool scanning, closing, client_closing;
    /* the retention sweep: the due part of the index of ended sagas, a page at a time */
    bool sweeping, sweep_more;
    keel_ms_t sweep_next_ms;
    uint32_t work; /* runs not yet freed and scans in flight: the client stays until 0 */
    char scan_cursor[24];
    /* The open sagas of other owners seen by this scan pass and by the one before: a saga
     * is asked for (KEEL.LOCK, a write) only once two passes saw it open, so the sagas that
     * end within a scan interval, nearly all, cost the scan no write. */
    keel_map_t scan_seen, scan_prev;
    int handles; /* open handles and runs not yet freed, while closing */
    void (*closed)(keel_sagas_t *o);
    keel_rand_t rand;
    keel_sagas_stats_t stats;
    keel_counter_t *m_finished[KEEL_SAGA__STATES], *m_adopted, *m_fenced, *m_deleted;
    keel_histogram_t *m_log_write;
    keel_histogram_t *m_step[KEEL_SAGAS_TYPES_MAX][KEEL_SAGA_STEPS_MAX];
    /* a step's retries (attempts after the first) and its failures, [0] refused by the
     * service, [1] given up after transient failures */
    keel_counter_t *m_retry[KEEL_SAGAS_TYPES_MAX][KEEL_SAGA_STEPS_MAX];
    keel_counter_t *m_fail[KEEL_SAGAS_TYPES_MAX][KEEL_SAGA_STEPS_MAX][2];
    keel_histogram_t *m_saga[KEEL_SAGAS_TYPES_MAX];
    struct keel__sagas_gauge {
        keel_sagas_t *o;
        keel_saga_state_t state;
    } gauges[2];
};

keel_sagas_config_t keel_sagas_config_default(void);
int keel_sagas_init(keel_sagas_t *o, keel_loop_t *loop, const keel_sagas_config_t *cfg,
                    keel_errmsg_t *msg);
/* t must outlive o. KEEL_EINVAL (bad definition, msg), KEEL_EEXISTS, KEEL_EFULL. */
int keel_sagas_register(keel_sagas_t *o, const keel_saga_type_t *t, keel_errmsg_t *msg);
/* Starts saga `id` of type `type` (or continues it, if its log exists). 0: end runs later,
 * exactly once; also when this orchestrator's scan is adopting that id, which the start
 * then joins (KEEL_EBUSY if another owner is alive after all). KEEL_EINVAL (unknown type,
 * bad id: not [A-Za-z0-9_.-]{1,64}, or "open" or "ended"), KEEL_ETOOBIG (input), KEEL_EFULL
 * (runs_max), KEEL_EEXISTS (a start of that id runs here already), KEEL_ECLOSED. */
int keel_sagas_start(keel_sagas_t *o, const char *type, const char *id, const void *input,
                     size_t input_len, keel_sagas_end_fn end, void *data);
/* Sagas in progress here. */
uint32_t keel_sagas_running(const keel_sagas_t *o);
/* Stops scanning, abandons the sagas in progress (their owners' locks lapse and another
 * orchestrator adopts them), closes the client; closed runs when o may be freed. */
void keel_sagas_close(keel_sagas_t *o, void (*closed)(keel_sagas_t *o));

#endif
