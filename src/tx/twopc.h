/* tx/twopc.h - two-phase commit: core/twopc's coordinator with its decision log in keel server
 * (fenced like a saga's), participants as callbacks, a ready-made SQLite participant, and the
 * recovery of transactions whose coordinator died. docs/tx.md has the design. */
#ifndef KEEL_TX_TWOPC_H
#define KEEL_TX_TWOPC_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "client/client.h"
#include "core/twopc.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT
 *
 *     keel_twopc_sqlite_t a, b;                         // two participants' databases
 *     keel_twopc_sqlite_open(&a, "a.db", "bank-a", &bank_ops, &bank_a, &msg);
 *     keel_twopc_config_t tc = keel_twopc_config_default();
 *     keel_twopcs_config_t cfg = keel_twopcs_config_default();
 *     cfg.seeds[0] = "127.0.0.1:7001"; cfg.seeds_n = 1;
 *     keel_twopcs_init(&t, &cfg, &msg);
 *     keel_twopcs_add(&t, keel_twopc_sqlite_participant(&a));
 *     keel_twopcs_add(&t, keel_twopc_sqlite_participant(&b));
 *     const char *parts[] = {"bank-a", "bank-b"};
 *     keel_twopcs_run(&t, "tx-42", parts, 2, input, len, &outcome, &msg);  // blocks
 *     keel_twopcs_recover(&t, &n, &msg);           // finish transactions whose owner died
 *     keel_twopc_sqlite_recover(&a, &t, 0, &n, &msg); // a participant's in-doubt ones
 *
 * The coordinator is BLOCKING: keel_twopcs_run() drives one transaction to its end on a
 * private loop that keeps one keel connection (so a tool or a test thread can run
 * transactions back to back; a service on the loop would run them in a worker). It returns
 * 0 with the outcome (COMMITTED or ABORTED), or: KEEL_EBUSY (another coordinator holds the
 * transaction's lock), KEEL_ECANCELED (this coordinator was fenced: another owner finishes
 * it), KEEL_ETIMEDOUT (keel server unreachable for cfg.give_up_ms: the transaction stays
 * open and keel_twopcs_recover() or a participant's inquiry finishes it), KEEL_ECORRUPT.
 *
 * Where the state lives (keel server):
 *   2pc:<id>:log    a stream; record seq n is entry 0-n, field "r" (core/twopc.h's
 *                   encoding). The coordinator writes it only as
 *                     KEEL.FENCED 2pc:<id> <token> XADD 2pc:<id>:log 0-<n> r <record>
 *                   A participant in doubt writes the decision slot UNFENCED:
 *                     XADD 2pc:<id>:log 0-2 r <abort record>
 *                   The stream refuses an id that is not above its last, so the slot 0-2
 *                   takes one record, whoever wins; the loser re-reads it and follows it.
 *   lock 2pc:<id>   KEEL.LOCK with lock_ttl_ms: the coordinator owning the transaction,
 *                   renewed (KEEL.TXN of UNLOCK + LOCK) once a third of the TTL has passed.
 *   2pc:open        a hash: field <id> set before BEGIN, deleted after END, what
 *                   keel_twopcs_recover() walks (HSCAN: the open ones, not the keyspace).
 *   2pc:ended       a sorted set, member <id> scored by its end's time, added with the open
 *                   mark's deletion (one fenced entry) while cfg.log_retention_ms is set:
 *                   what keel_twopcs_sweep() deletes from. After END no participant is in
 *                   doubt, so a deleted log is never asked for a decision.
 * The id "open" is refused: its lock key would be the index.
 *
 * A participant is a table of callbacks, each idempotent by transaction id and each durable
 * before it returns (fsync): prepare (the business rows and a prepared mark in one local
 * transaction; *yes false when the business refuses, recording an aborted tombstone), commit,
 * abort (a tombstone for an unknown id) and state (what is durable for an id). A callback
 * that fails (KEEL_EAGAIN: the participant is down, KEEL_ETIMEDOUT, ...) is a failed send:
 * the coordinator retries it with backoff within the prepare timeout, and keeps delivering a
 * decision until it is acknowledged (2PC blocks: the prepared participant holds its locks
 * until then). Calls go through core/twopc's participant machine, so a decision that
 * contradicts the participant's durable state is refused (KEEL_EPROTO) and never applied.
 */
#define KEEL_TWOPCS_PARTICIPANTS_MAX 32u

typedef struct keel_twopc_participant_ops {
    int (*prepare)(void *data, const char *id, const uint8_t *input, size_t len, bool *yes,
                   keel_errmsg_t *msg);
    int (*commit)(void *data, const char *id, keel_errmsg_t *msg);
    int (*abort)(void *data, const char *id, keel_errmsg_t *msg);
    /* NEW (unknown), PREPARED, COMMITTED or ABORTED */
    int (*state)(void *data, const char *id, keel_twopc_state_t *st, keel_errmsg_t *msg);
    /* A participant elsewhere (over HTTP) sets only this: one message, answered by the
     * remote side's own participant machine; 0 when the call failed (a failed send). */
    keel_twopc_reply_t (*message)(void *data, const char *id, keel_twopc_msg_t m,
                                  const uint8_t *input, size_t len);
} keel_twopc_participant_ops_t;

typedef struct keel_twopc_participant {
    const char *name;
    const keel_twopc_participant_ops_t *ops;
    void *data;
} keel_twopc_participant_t;

typedef struct keel_twopcs_config {
    const char *seeds[KEEL_CLIENT_SEEDS_MAX];
    size_t seeds_n;
    keel_twopc_config_t tx;        /* the cores' timeouts */
    keel_ms_t lock_ttl_ms;         /* default 10000 */
    keel_ms_t request_timeout_ms;  /* each keel request; default 3000 */
    keel_ms_t give_up_ms;          /* keel unreachable this long: KEEL_ETIMEDOUT; 30000 */
    keel_ms_t decision_give_up_ms; /* delivering a decision to a participant that stays down:
                                      stop after this long, leaving the transaction open for
                                      recovery (KEEL_ETIMEDOUT); default 0: never */
    keel_ms_t log_retention_ms;    /* > 0: a transaction's end indexes it in 2pc:ended, and
                                      keel_twopcs_sweep() deletes its log this long after;
                                      default 0: logs kept for ever */
    uint64_t seed;
    keel_metrics_t *metrics; /* may be NULL: no metrics (keel_twopcs_stats_t still counts) */
} keel_twopcs_config_t;

/*
 * Metrics (cfg.metrics), registered by keel_twopcs_init; this process's coordinator only:
 *   keel_twopc_runs_total                       keel_twopcs_run() calls
 *   keel_twopc_transactions_total{outcome}      finished here: "committed" or "aborted"
 *                                               (recovered ones included)
 *   keel_twopc_recovered_total                  open transactions of a dead owner finished
 *                                               here by keel_twopcs_recover()
 *   keel_twopc_fenced_total                     log writes refused: another owner took over
 *   keel_twopc_decision_slot_lost_total         decision writes that found the slot taken
 *                                               (a participant's abort proposal won)
 *   keel_twopc_participant_sends_failed_total   messages to participants that failed
 *   keel_twopc_inquiries_total                  in-doubt participants asking for the decision
 *                                               (keel_twopcs_inquire, counted by the asker)
 *   keel_twopc_abort_proposals_total            inquiries whose abort proposal won the slot
 *   keel_twopc_log_write_seconds                fenced log writes to keel server
 *   keel_twopc_prepare_seconds                  BEGIN durable to the decision durable (the
 *                                               votes), for transactions begun by this run
 *   keel_twopc_decision_seconds                 decision durable to END durable (delivering
 *                                               it), where this run wrote the decision
 */
typedef struct keel_twopcs_metrics {
    keel_counter_t *runs, *committed, *aborted, *recovered, *fenced, *slot_lost;
    keel_counter_t *sends_failed, *inquiries, *proposals;
    keel_histogram_t *log_write, *prepare, *decision;
} keel_twopcs_metrics_t;

typedef struct keel_twopcs_stats {
    uint64_t runs, committed, aborted, recovered, fenced, slot_lost;
    uint64_t log_writes, log_write_ns, sends_failed, inquiries, proposals;
} keel_twopcs_stats_t;

typedef struct keel_twopcs {
    keel_twopcs_config_t cfg;
    keel_loop_t loop;
    keel_client_t cl;
    keel_twopc_participant_t parts[KEEL_TWOPCS_PARTICIPANTS_MAX];
    uint32_t parts_n;
    keel_rand_t rand;
    keel_twopcs_stats_t stats;
    keel_twopcs_metrics_t m; /* all NULL without cfg.metrics */
} keel_twopcs_t;

keel_twopcs_config_t keel_twopcs_config_default(void);
int keel_twopcs_init(keel_twopcs_t *t, const keel_twopcs_config_t *cfg, keel_errmsg_t *msg);
void keel_twopcs_close(keel_twopcs_t *t);
/* The participant named p.name is reached through p (copied; p.data must outlive t).
 * KEEL_EINVAL (bad name), KEEL_EEXISTS, KEEL_EFULL. */
int keel_twopcs_add(keel_twopcs_t *t, keel_twopc_participant_t p);
/* Runs (or, if its log exists, continues) transaction id over the named participants. */
int keel_twopcs_run(keel_twopcs_t *t, const char *id, const char *const *parts, uint32_t n,
                    const void *input, size_t input_len, keel_twopc_state_t *outcome,
                    keel_errmsg_t *msg);
/* Finishes every open transaction whose lock is free (its owner died); *finished counts
 * them. Transactions naming a participant not added here are left alone. */
int keel_twopcs_recover(keel_twopcs_t *t, uint32_t *finished, keel_errmsg_t *msg);
/* Deletes the logs of transactions that ended cfg.log_retention_ms ago or more (with their
 * 2pc:ended members), a page of KEEL_RETAIN_PAGE per entry; *deleted counts the logs. 0 (and
 * nothing done) without a retention. Any coordinator may run it, at any interval. */
int keel_twopcs_sweep(keel_twopcs_t *t, uint64_t *deleted, keel_errmsg_t *msg);
/* For a participant's transaction in doubt: reads the decision slot, proposing abort when
 * it is empty. 0 with *commit, or KEEL_ENOTFOUND (no BEGIN: not a transaction of this log),
 * KEEL_EAGAIN (the log is unreachable), KEEL_ECORRUPT. */
int keel_twopcs_inquire(keel_twopcs_t *t, const char *id, bool *commit, keel_errmsg_t *msg);

/* ---- participants over HTTP (the service kit) -------------------------------------- */

/*
 * The participant's side: keel_twopc_serve() adds POST <prefix>/prepare, <prefix>/commit and
 * <prefix>/abort to a kit service. The transaction id is the X-Keel-2pc-Id header, the input
 * the body. Each request goes through the participant machine to p's callbacks. The answer
 * is 200 with "yes", "no" or "ack"; 503 when the local action failed or another one is in
 * progress; 409 for a decision contradicting the durable state; 400 for a bad id.
 * The coordinator's side: a keel_twopc_http_t whose caller (kit/call.h) is initialized on
 * keel_twopcs_loop(t), the loop the blocking coordinator runs while it waits. Any answer but
 * a 200 with one of those words, or a failed call, is a failed send (retried).
 */
struct keel_service;
struct keel_service_req;
struct keel_caller;
typedef struct keel_twopc_route {
    struct keel_twopc_server *srv;
    keel_twopc_msg_t msg;
} keel_twopc_route_t;
typedef struct keel_twopc_server {
    keel_twopc_participant_t p;
    keel_twopc_config_t cfg;
    keel_rand_t rand;
    keel_twopc_route_t routes[3]; /* prepare, commit, abort */
} keel_twopc_server_t;
int keel_twopc_serve(keel_twopc_server_t *srv, struct keel_service *svc, const char *prefix,
                     keel_twopc_participant_t p, const keel_twopc_config_t *cfg,
                     keel_errmsg_t *msg);

typedef struct keel_twopc_http {
    struct keel_caller *caller; /* on keel_twopcs_loop(t) */
    keel_loop_t *loop;
    char prefix[64];
    keel_twopc_participant_ops_t ops;
} keel_twopc_http_t;
/* A participant named name reached at caller's service under prefix (h outlives t). */
keel_twopc_participant_t keel_twopc_http_participant(keel_twopc_http_t *h, const char *name,
                                                     struct keel_caller *caller, keel_loop_t *loop,
                                                     const char *prefix);
keel_loop_t *keel_twopcs_loop(keel_twopcs_t *t);

/* ---- the SQLite participant --------------------------------------------------------- */

/*
 * Keeps each transaction's state in the participant's own database, in the same local
 * transaction as its business rows:
 *   CREATE TABLE twopc_tx (id TEXT PRIMARY KEY, state TEXT NOT NULL  -- prepared|committed|aborted
 *                          , input BLOB, prepared_ms INTEGER, resolved_ms INTEGER)
 * The business is three callbacks run INSIDE that local transaction (BEGIN IMMEDIATE ..
 * COMMIT with synchronous=FULL, so the promise is on disk before the vote):
 *   prepare: write what the transaction needs held (a hold on funds, a reserved row) and
 *            return 0 to vote yes, KEEL_EREJECTED to vote no (the rows are rolled back and an
 *            aborted tombstone written instead), another error to fail the call;
 *   commit:  turn the held rows into the real change;
 *   abort:   release them.
 * The held rows are the locks a prepared participant keeps while in doubt: visible in its
 * tables, and listed by keel_twopc_sqlite_in_doubt().
 * down / delay_ms: fault injection for tests and the benchmark (every call fails with
 * KEEL_EAGAIN / sleeps first).
 */
typedef struct keel_twopc_sqlite_ops {
    int (*prepare)(keel_db_t *db, const char *id, const uint8_t *input, size_t len, void *data,
                   keel_errmsg_t *msg);
    int (*commit)(keel_db_t *db, const char *id, void *data, keel_errmsg_t *msg);
    int (*abort)(keel_db_t *db, const char *id, void *data, keel_errmsg_t *msg);
} keel_twopc_sqlite_ops_t;

typedef struct keel_twopc_sqlite {
    keel_db_t db;
    char name[KEEL_TWOPC_NAME_BYTES_MAX + 1];
    const keel_twopc_sqlite_ops_t *ops;
    void *data;
    bool down;
    keel_ms_t down_until_ms; /* down until this Unix time too */
    keel_ms_t delay_ms;
} keel_twopc_sqlite_t;

int keel_twopc_sqlite_open(keel_twopc_sqlite_t *s, const char *path, const char *name,
                           const keel_twopc_sqlite_ops_t *ops, void *data, keel_errmsg_t *msg);
void keel_twopc_sqlite_close(keel_twopc_sqlite_t *s);
keel_twopc_participant_t keel_twopc_sqlite_participant(keel_twopc_sqlite_t *s);
/* Ids of prepared (in-doubt) transactions, up to max; *n their count. */
int keel_twopc_sqlite_in_doubt(keel_twopc_sqlite_t *s, char (*ids)[KEEL_TWOPC_ID_BYTES_MAX + 1],
                               size_t max, size_t *n, keel_errmsg_t *msg);
/* Resolves the in-doubt transactions of s prepared at least min_age_ms ago by inquiring t's
 * log; *resolved counts them. An inquiry proposes abort where nothing is decided, so a live
 * coordinator still collecting votes would lose that transaction: a long-lived participant
 * calls this periodically with cfg.tx.in_doubt_ms (well past the prepare timeout); 0 is for
 * a process that knows the coordinator died with it (keel-twopc after a restart). */
int keel_twopc_sqlite_recover(keel_twopc_sqlite_t *s, keel_twopcs_t *t, keel_ms_t min_age_ms,
                              uint32_t *resolved, keel_errmsg_t *msg);

#endif
