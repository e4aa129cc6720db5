/* db_group.c - see db_group.h. */
#include "runtime/db_group.h"

#include "runtime/clock.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

keel_db_group_config_t keel_db_group_config_default(void)
{
    return (keel_db_group_config_t){
        .batch_writes_max = 256, .queue_writes_max = 65536, .busy_step_us = 500};
}

static void register_metrics(keel_db_group_t *g)
{
    keel_metrics_t *m = g->cfg.metrics;
    const char *l = g->cfg.metrics_labels ? g->cfg.metrics_labels : "";
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
    g->m_commit =
        keel_metrics_histogram(m, "keel_db_group_commit_seconds",
                               "A batch of writes from BEGIN to COMMIT (its fsync).", l, NULL, 0);
    g->m_batch = keel_metrics_histogram(m, "keel_db_group_batch_writes",
                                        "Writes per transaction (group commit).", l, sizes,
                                        sizeof(sizes) / sizeof(sizes[0]));
    g->m_wait =
        keel_metrics_histogram(m, "keel_db_group_wait_seconds",
                               "A write from submit to done (durable or failed).", l, NULL, 0);
    g->m_failed = keel_metrics_counter(m, "keel_db_group_failed_batches_total",
                                       "Batches whose BEGIN or COMMIT failed (none applied).", l);
}

int keel_db_group_init(keel_db_group_t *g, keel_loop_t *loop, const keel_db_group_config_t *cfg,
                       keel_errmsg_t *msg)
{
    memset(g, 0, sizeof(*g));
    if (cfg->path == NULL || cfg->batch_writes_max == 0 ||
        cfg->batch_writes_max > KEEL_DB_GROUP_BATCH_WRITES_LIMIT || cfg->queue_writes_max == 0 ||
        cfg->queue_writes_max > KEEL_DB_GROUP_QUEUE_WRITES_LIMIT || cfg->busy_step_us == 0 ||
        cfg->busy_step_us > 100000)
        return keel_errf(msg, KEEL_EINVAL,
                         "db group: a path, batch_writes_max in 1..%u, queue_writes_max in "
                         "1..%u, busy_step_us in 1..100000",
                         KEEL_DB_GROUP_BATCH_WRITES_LIMIT, KEEL_DB_GROUP_QUEUE_WRITES_LIMIT);
    if (!sqlite3_threadsafe()) /* the connection moves between the pool's threads */
        return keel_errf(msg, KEEL_EUNSUPPORTED, "db group: SQLite built without threads");
    g->cfg = *cfg;
    g->loop = loop;
    int rc = keel_db_open(&g->db, cfg->path, msg);
    if (rc != 0)
        return rc;
    keel_db_busy_steps(&g->db, cfg->busy_step_us); /* the worker's time, not the loop's */
    /* libuv's check and idle inits only link the handle into the loop: they cannot fail */
    int urc = uv_check_init(&loop->uv, &g->check) | uv_idle_init(&loop->uv, &g->idle);
    assert(urc == 0);
    (void)urc;
    g->handles_open = 2;
    if (cfg->metrics)
        register_metrics(g);
    return 0;
}

/* ---- the worker ---------------------------------------------------------------------- */

static int step(keel_db_group_t *g, const char *sql, keel_errmsg_t *msg)
{
    return keel_db_exec(&g->db, sql, msg);
}

/* One write in its savepoint. Returns non-zero when the transaction itself is gone or
 * broken (the batch fails); the write's own failure is in w->err. */
static int apply_one(keel_db_group_t *g, keel_db_write_t *w)
{
    int rc = step(g, "SAVEPOINT w", &g->batch_msg);
    if (rc != 0)
        return rc;
    w->err = w->apply(&g->db, w->data, &w->msg);
    if (w->err != 0 && w->msg.text[0] == '\0')
        keel_errf(&w->msg, w->err, "%s", keel_strerror(w->err));
    if (sqlite3_get_autocommit(keel_db_handle(&g->db))) { /* SQLite rolled it all back */
        keel_errf(&g->batch_msg, w->err ? w->err : KEEL_EIO, "the transaction was rolled back: %s",
                  w->msg.text[0] ? w->msg.text : "by SQLite");
        return w->err ? w->err : KEEL_EIO;
    }
    if (w->err != 0 && (rc = step(g, "ROLLBACK TO w", &g->batch_msg)) != 0)
        return rc;
    return step(g, "RELEASE w", &g->batch_msg);
}

static void work_cb(uv_work_t *req)
{
    keel_db_group_t *g = req->data;
    keel_us_t t0 = keel_clock_now_us();
    g->batch_err = keel_db_begin(&g->db, &g->batch_msg);
    for (keel_db_write_t *w = g->batch; w != NULL && g->batch_err == 0; w = w->next)
        g->batch_err = apply_one(g, w);
    if (g->batch_err == 0)
        g->batch_err = keel_db_commit(&g->db, &g->batch_msg); /* rolls back if it fails */
    else
        keel_db_rollback(&g->db);
    g->batch_us = keel_clock_now_us() - t0;
}

/* ---- the loop ------------------------------------------------------------------------- */

static void launch(keel_db_group_t *g);

static void idle_cb(uv_idle_t *h)
{
    (void)h; /* only there to keep the poll from blocking until check_cb has run */
}

static void disarm(keel_db_group_t *g)
{
    uv_check_stop(&g->check);
    uv_idle_stop(&g->idle);
    g->check_on = false;
}

static void check_cb(uv_check_t *h)
{
    keel_db_group_t *g = h->data;
    disarm(g);
    if (!g->inflight && g->head != NULL)
        launch(g);
}

static void arm(keel_db_group_t *g)
{
    if (g->check_on || g->closing)
        return;
    g->check.data = g;
    uv_check_start(&g->check, check_cb);
    uv_idle_start(&g->idle, idle_cb);
    g->check_on = true;
}

static void finish(keel_db_write_t *w, int err, const char *why, keel_histogram_t *m_wait)
{
    if (m_wait)
        keel_histogram_observe(m_wait, (double)(keel_clock_now_us() - w->submitted_us) / 1e6);
    w->done(w, err, why);
}

static void handle_closed(uv_handle_t *h)
{
    keel_db_group_t *g = h->data;
    if (--g->handles_open > 0)
        return;
    keel_db_close(&g->db);
    if (g->closed)
        g->closed(g);
}

static void close_handles(keel_db_group_t *g)
{
    g->check.data = g;
    g->idle.data = g;
    uv_close((uv_handle_t *)&g->check, handle_closed);
    uv_close((uv_handle_t *)&g->idle, handle_closed);
}

static void fail_queued(keel_db_group_t *g)
{
    while (g->head != NULL) {
        keel_db_write_t *w = g->head;
        g->head = w->next;
        g->queued--;
        finish(w, KEEL_ECANCELED, "the database's writer is closing", g->m_wait);
    }
    g->tail = NULL;
}

static void after_cb(uv_work_t *req, int status)
{
    keel_db_group_t *g = req->data;
    assert(g->inflight);
    if (status != 0 && g->batch_err == 0) /* canceled before it ran: nothing was applied */
        g->batch_err = keel_errf(&g->batch_msg, KEEL_ECANCELED, "the batch did not run");
    g->stats.batches++;
    g->stats.writes += g->batch_n;
    if (g->batch_n > g->stats.largest_batch)
        g->stats.largest_batch = g->batch_n;
    if (g->batch_err != 0) {
        g->stats.failed_batches++;
        if (g->m_failed)
            keel_counter_inc(g->m_failed);
    }
    if (g->m_commit) {
        keel_histogram_observe(g->m_commit, (double)g->batch_us / 1e6);
        keel_histogram_observe(g->m_batch, (double)g->batch_n);
    }
    keel_db_write_t *w = g->batch;
    int batch_err = g->batch_err;
    g->batch = NULL;
    g->batch_n = 0;
    g->inflight = false;
    /* done() may free its write, and may submit again: next is read first, and the queue
     * is only appended to meanwhile */
    while (w != NULL) {
        keel_db_write_t *next = w->next;
        if (batch_err != 0)
            finish(w, batch_err, g->batch_msg.text, g->m_wait);
        else
            finish(w, w->err, w->err ? w->msg.text : "", g->m_wait);
        w = next;
    }
    if (g->closing) {
        fail_queued(g);
        close_handles(g);
    } else if (g->head != NULL) {
        arm(g); /* what queued while this batch was in flight: at the end of this turn */
    }
}

static void launch(keel_db_group_t *g)
{
    assert(!g->inflight && g->head != NULL);
    keel_db_write_t *first = g->head, *last = first;
    uint32_t n = 1;
    while (n < g->cfg.batch_writes_max && last->next != NULL) {
        last = last->next;
        n++;
    }
    g->head = last->next;
    if (g->head == NULL)
        g->tail = NULL;
    last->next = NULL;
    g->queued -= n;
    g->batch = first;
    g->batch_n = n;
    g->batch_err = 0;
    g->batch_msg.text[0] = '\0';
    g->inflight = true;
    g->work.data = g;
    int rc = uv_queue_work(&g->loop->uv, &g->work, work_cb, after_cb);
    if (rc != 0) { /* libuv refuses only invalid arguments: answer the batch as failed */
        keel_errf(&g->batch_msg, keel_uv_err(rc), "queue work: %s", uv_strerror(rc));
        g->batch_err = keel_uv_err(rc);
        after_cb(&g->work, 0);
    } /* more than one batch's worth queued: after_cb arms the next */
}

int keel_db_group_submit(keel_db_group_t *g, keel_db_write_t *w)
{
    assert(w->apply != NULL && w->done != NULL);
    if (g->closing)
        return KEEL_ECANCELED;
    if (g->queued + g->batch_n >= g->cfg.queue_writes_max)
        return KEEL_EBUSY;
    w->next = NULL;
    w->err = 0;
    w->msg.text[0] = '\0';
    w->submitted_us = keel_clock_now_us();
    if (g->tail)
        g->tail->next = w;
    else
        g->head = w;
    g->tail = w;
    g->queued++;
    if (!g->inflight)
        arm(g);
    return 0;
}

const keel_db_group_stats_t *keel_db_group_stats(const keel_db_group_t *g)
{
    return &g->stats;
}

void keel_db_group_close(keel_db_group_t *g, void (*closed)(keel_db_group_t *g))
{
    assert(!g->closing);
    g->closing = true;
    g->closed = closed;
    if (g->check_on)
        disarm(g);
    if (g->inflight)
        return; /* after_cb answers the batch, then fails the queue and closes */
    fail_queued(g);
    close_handles(g);
}
