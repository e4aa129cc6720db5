/* db_group.h - group commit for a service's SQLite writes: the writes asked for in one loop
 * turn, or while a commit is in flight, run in one transaction on a worker thread and share
 * one fsync; each is answered on the loop only after that commit is durable. */
#ifndef KEEL_RUNTIME_DB_GROUP_H
#define KEEL_RUNTIME_DB_GROUP_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Why: with synchronous=FULL every COMMIT waits for an fsync of the WAL (1-3 ms on this
 * machine's virtual disk, tens under load), and a service that commits each request on its
 * event loop blocks the loop for that long per request: at a few hundred requests a second
 * the loop spends most of its time waiting on the disk and every other request queues
 * behind it. Here the loop only queues writes; a worker thread (libuv's pool, one batch at a
 * time) runs each batch as
 *
 *     BEGIN IMMEDIATE
 *       SAVEPOINT w; apply(w1); RELEASE w      (ROLLBACK TO w first if apply failed)
 *       SAVEPOINT w; apply(w2); RELEASE w
 *       ...                                    (at most batch_writes_max)
 *     COMMIT                                   (one fsync for all of them)
 *
 * and the loop then calls each write's done(), in submission order. While a batch is in
 * flight new writes wait; the next batch takes all of them (up to batch_writes_max) as soon
 * as the first is answered, so the batch grows with the load and one fsync serves more
 * writes the busier the service is (group commit, as in PostgreSQL's commit_delay without
 * the delay: a batch starts at the end of the loop turn that queued its first write).
 *
 * The order of effects, for every write:
 *   1. apply() runs on the worker inside the batch's transaction; the writes before it in
 *      the batch are visible to it (a second write for the same key sees the first's rows:
 *      apply() reads before it writes, and that is how duplicates inside a batch are told).
 *   2. COMMIT returns: the batch is durable (WAL fsync'd).
 *   3. done(w, 0) runs on the loop: only now may the service answer its client.
 * If apply() fails, its own statements are undone (its savepoint) and done() gets its error;
 * the other writes of the batch are not affected. If BEGIN or COMMIT fails, or SQLite rolls
 * the whole transaction back on its own (disk full, I/O error), nothing of the batch is
 * applied and every write's done() gets that error: never an answer for a write that did
 * not reach the disk, and never a partial batch.
 *
 * Threads: apply() runs on a worker thread with the group's own connection (opened on
 * cfg.path; the loop's connection stays the loop's, for reads). It may use that connection,
 * its `data`, and anything immutable; it must not touch the loop, the service, or state the
 * loop changes. What it decides it keeps in its data for done() (the worker's writes are
 * visible to the loop when done() runs: libuv's work queue orders them). The group's
 * connection waits for the write lock held by another connection (a second instance on the
 * same file) in steps of busy_step_us (keel_db_busy_steps), for at most KEEL_DB_BUSY_MS, on the
 * worker.
 *
 * Lifecycle (libuv's rule): init -> submit... -> close(cb); free only in the close callback.
 * Writes queued but not started when close is called get done(KEEL_ECANCELED); a batch in
 * flight finishes (and is answered) first.
 *
 * Metrics (when cfg.metrics is set): keel_db_group_commit_seconds (BEGIN to COMMIT on the
 * worker, per batch), keel_db_group_batch_writes (writes per batch), keel_db_group_wait_seconds
 * (submit to done, per write), keel_db_group_failed_batches_total.
 */

#define KEEL_DB_GROUP_BATCH_WRITES_LIMIT 4096u
#define KEEL_DB_GROUP_QUEUE_WRITES_LIMIT 1000000u

typedef struct keel_db_write keel_db_write_t;

/* On the worker, inside the batch's transaction and a savepoint of this write's own. 0 keeps
 * what it wrote; anything else undoes it and is what done() gets (msg says why). */
typedef int (*keel_db_apply_fn)(keel_db_t *db, void *data, keel_errmsg_t *msg);
/* On the loop, once: err 0 when the write is applied and durable; else it was not applied
 * (its own apply's error, the batch's BEGIN/COMMIT error, or KEEL_ECANCELED at close), and
 * `why` says why. The write may be freed here. */
typedef void (*keel_db_done_fn)(keel_db_write_t *w, int err, const char *why);

/* Caller-owned (embed it in the request's context); fill apply, done and data, then submit.
 * The rest is the group's until done() runs. */
struct keel_db_write {
    keel_db_apply_fn apply;
    keel_db_done_fn done;
    void *data;
    /* the group's */
    keel_db_write_t *next;
    keel_us_t submitted_us;
    int err;
    keel_errmsg_t msg;
};

typedef struct keel_db_group_config {
    const char *path;           /* the database file; the group opens its own connection */
    uint32_t batch_writes_max;  /* writes per transaction; default 256 */
    uint32_t queue_writes_max;  /* queued and in flight; past it submit is KEEL_EBUSY; 65536 */
    uint32_t busy_step_us;      /* waiting for another connection's write lock; default 500 */
    keel_metrics_t *metrics;    /* may be NULL */
    const char *metrics_labels; /* preformatted, may be NULL */
} keel_db_group_config_t;

typedef struct keel_db_group_stats {
    uint64_t batches, writes, failed_batches, largest_batch;
} keel_db_group_stats_t;

typedef struct keel_db_group keel_db_group_t;
struct keel_db_group {
    keel_db_group_config_t cfg;
    keel_loop_t *loop;
    keel_db_t db;     /* the worker's connection */
    uv_check_t check; /* starts a batch at the end of the loop turn that queued its first write */
    uv_idle_t idle;   /* armed with check: the poll does not block before check runs */
    uv_work_t work;
    int handles_open;
    keel_db_write_t *head, *tail; /* queued, not started */
    uint32_t queued;
    keel_db_write_t *batch; /* in flight (a list through next) */
    uint32_t batch_n;
    int batch_err;
    keel_errmsg_t batch_msg;
    keel_us_t batch_us; /* BEGIN to COMMIT on the worker */
    bool inflight, check_on, closing;
    keel_db_group_stats_t stats;
    void (*closed)(keel_db_group_t *g);
    keel_histogram_t *m_commit, *m_batch, *m_wait;
    keel_counter_t *m_failed;
};

keel_db_group_config_t keel_db_group_config_default(void);
/* Opens the group's connection to cfg->path (keel_db_open's pragmas). */
int keel_db_group_init(keel_db_group_t *g, keel_loop_t *loop, const keel_db_group_config_t *cfg,
                       keel_errmsg_t *msg);
/* Queues w: 0, or KEEL_EBUSY (queue_writes_max reached) or KEEL_ECANCELED (closing), and then
 * done() is not called. done() never runs from inside submit. */
int keel_db_group_submit(keel_db_group_t *g, keel_db_write_t *w);
const keel_db_group_stats_t *keel_db_group_stats(const keel_db_group_t *g);
void keel_db_group_close(keel_db_group_t *g, void (*closed)(keel_db_group_t *g));

#endif
