/* test_db_group.c - runtime/db_group.c: writes of one loop turn share one transaction, a
 * later write sees an earlier one of its batch, a failing write undoes only itself, a failed
 * COMMIT answers every write with its error and applies none, writes queued during a commit
 * go in the next batch, a batch waits for another connection's write lock (in short steps),
 * and close cancels what has not started. */
#include "base/err.h"
#include "ktest.h"
#include "runtime/clock.h"
#include "runtime/db_group.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define WRITES_MAX 64

typedef struct w {
    keel_db_write_t w;
    int id;     /* the row it writes */
    int mode;   /* 0 insert if absent; 1 insert twice (fails); 2 orphan child; 3 sleep 100 ms */
    bool found; /* set by apply: the row was there already */
    int err;    /* from done */
    int done;   /* times done ran */
    int batch;  /* the group's batch count when done ran */
    char why[KEEL_ERRMSG_BYTES_MAX];
} w_t;

static keel_db_group_t group;
static int answered;

static int exec1(keel_db_t *db, const char *fmt, int id, keel_errmsg_t *msg)
{
    char sql[128];
    snprintf(sql, sizeof(sql), fmt, id);
    return keel_db_exec(db, sql, msg);
}

static int apply(keel_db_t *db, void *data, keel_errmsg_t *msg)
{
    w_t *w = data;
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, "SELECT 1 FROM t WHERE id = ?1", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int(st, 1, w->id);
    w->found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (w->mode == 3) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (w->mode == 2)
        return exec1(db, "INSERT INTO child VALUES(%d, 999999)", w->id, msg);
    if (w->found)
        return 0;
    rc = exec1(db, "INSERT INTO t VALUES(%d)", w->id, msg);
    if (rc == 0 && w->mode == 1)
        rc = exec1(db, "INSERT INTO t VALUES(%d)", w->id, msg);
    return rc;
}

static void done(keel_db_write_t *kw, int err, const char *why)
{
    w_t *w = kw->data;
    w->err = err;
    w->done++;
    w->batch = (int)keel_db_group_stats(&group)->batches;
    snprintf(w->why, sizeof(w->why), "%s", why);
    answered++;
}

static void submit(w_t *w, int id, int mode)
{
    memset(w, 0, sizeof(*w));
    w->w.apply = apply;
    w->w.done = done;
    w->w.data = w;
    w->id = id;
    w->mode = mode;
    KT_EQ_INT(keel_db_group_submit(&group, &w->w), 0);
}

static int closed_n;
static void closed(keel_db_group_t *g)
{
    (void)g;
    closed_n++;
}

static long long rows(const char *path, const char *table)
{
    keel_db_t db;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(&db, path, &msg), 0);
    char sql[64];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(&db, sql, &st, NULL), 0);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    keel_db_close(&db);
    return n;
}

/* Runs the loop until `want` writes are answered (bounded: 10 s). */
static void run_until(keel_loop_t *loop, int want)
{
    keel_ms_t end = keel_clock_now_ms() + 10000;
    while (answered < want && keel_clock_now_ms() < end)
        uv_run(&loop->uv, UV_RUN_ONCE);
    KT_EQ_INT(answered, want);
}

static void start(keel_loop_t *loop, char *dir, size_t dir_cap, char *path, size_t path_cap)
{
    kt__tmpdir(dir, dir_cap, "dbgroup");
    snprintf(path, path_cap, "%s/g.db", dir);
    keel_db_t db;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(&db, path, &msg), 0);
    KT_EQ_INT(keel_db_exec(&db,
                           "CREATE TABLE t(id INTEGER PRIMARY KEY);"
                           "CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER"
                           " REFERENCES t(id) DEFERRABLE INITIALLY DEFERRED);",
                           &msg),
              0);
    keel_db_close(&db);
    KT_EQ_INT(keel_loop_init(loop), 0);
    keel_db_group_config_t cfg = keel_db_group_config_default();
    cfg.path = path;
    KT_EQ_INT(keel_db_group_init(&group, loop, &cfg, &msg), 0);
    answered = 0;
    closed_n = 0;
}

static void stop(keel_loop_t *loop, char *dir)
{
    keel_db_group_close(&group, closed);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    KT_EQ_INT(closed_n, 1);
    KT_EQ_INT(keel_loop_close(loop), 0);
    KT_RMRF(dir);
}

static void writes_of_one_turn_share_one_transaction_and_a_later_one_sees_an_earlier(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static w_t ws[12];
    for (int i = 0; i < 10; i++)
        submit(&ws[i], i, 0);
    submit(&ws[10], 3, 0);  /* the same row as ws[3], in the same batch */
    KT_EQ_INT(answered, 0); /* never from inside submit */
    run_until(&loop, 11);
    KT_EQ_U64(keel_db_group_stats(&group)->batches, 1);
    KT_EQ_U64(keel_db_group_stats(&group)->largest_batch, 11);
    for (int i = 0; i < 11; i++) {
        KT_EQ_INT(ws[i].err, 0);
        KT_EQ_INT(ws[i].done, 1);
    }
    KT_CHECK(!ws[3].found);
    KT_CHECK(ws[10].found); /* the duplicate inside the batch saw the first's row */
    KT_EQ_INT(rows(path, "t"), 10);
    stop(&loop, dir);
}

static void a_failing_write_undoes_only_itself(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static w_t ws[3];
    submit(&ws[0], 1, 0);
    submit(&ws[1], 2, 1); /* inserts row 2, then fails on its own duplicate */
    submit(&ws[2], 3, 0);
    run_until(&loop, 3);
    KT_EQ_U64(keel_db_group_stats(&group)->batches, 1);
    KT_EQ_INT(ws[0].err, 0);
    KT_EQ_INT(ws[1].err, KEEL_EEXISTS);
    KT_CHECK(strstr(ws[1].why, "UNIQUE") != NULL);
    KT_EQ_INT(ws[2].err, 0);
    KT_EQ_INT(rows(path, "t"), 2); /* 1 and 3: row 2's first insert was undone with it */
    stop(&loop, dir);
}

static void a_failed_commit_answers_every_write_and_applies_none(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static w_t ws[3];
    submit(&ws[0], 1, 0);
    submit(&ws[1], 2, 2); /* a child without a parent: the deferred foreign key fails COMMIT */
    submit(&ws[2], 3, 0);
    run_until(&loop, 3);
    for (int i = 0; i < 3; i++) {
        KT_EQ_INT(ws[i].err, KEEL_EEXISTS); /* SQLITE_CONSTRAINT, for every write */
        KT_CHECK(strstr(ws[i].why, "FOREIGN KEY") != NULL);
    }
    KT_EQ_U64(keel_db_group_stats(&group)->failed_batches, 1);
    KT_EQ_INT(rows(path, "t"), 0);
    KT_EQ_INT(rows(path, "child"), 0);
    /* and the group goes on */
    static w_t again;
    submit(&again, 1, 0);
    run_until(&loop, 4);
    KT_EQ_INT(again.err, 0);
    KT_EQ_INT(rows(path, "t"), 1);
    stop(&loop, dir);
}

typedef struct later {
    keel_timer_t t;
    w_t ws[5];
} later_t;

static void submit_later(keel_timer_t *t, void *data)
{
    later_t *l = data;
    (void)t;
    KT_EQ_INT(answered, 0); /* the first batch is still in its 100 ms apply */
    for (int i = 0; i < 5; i++)
        submit(&l->ws[i], 10 + i, 0);
}

static void writes_queued_during_a_commit_go_in_the_next_batch(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static w_t slow;
    static later_t l;
    submit(&slow, 1, 3);
    KT_EQ_INT(keel_timer_init(&loop, &l.t), 0);
    KT_EQ_INT(keel_timer_start(&l.t, 10, 0, submit_later, &l), 0);
    run_until(&loop, 6);
    KT_EQ_INT(slow.batch, 1);
    for (int i = 0; i < 5; i++) {
        KT_EQ_INT(l.ws[i].err, 0);
        KT_EQ_INT(l.ws[i].batch, 2);
    }
    KT_EQ_U64(keel_db_group_stats(&group)->batches, 2);
    KT_EQ_U64(keel_db_group_stats(&group)->largest_batch, 5);
    keel_timer_close(&l.t, NULL);
    stop(&loop, dir);
}

typedef struct holder {
    keel_timer_t t;
    keel_db_t db;
    keel_ms_t released_ms;
} holder_t;

static void release_lock(keel_timer_t *t, void *data)
{
    holder_t *h = data;
    (void)t;
    keel_errmsg_t msg;
    KT_EQ_INT(answered, 0); /* the batch is still waiting for the lock */
    KT_EQ_INT(keel_db_commit(&h->db, &msg), 0);
    h->released_ms = keel_clock_now_ms();
}

static void a_batch_waits_for_another_connections_write_lock(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static holder_t h;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(&h.db, path, &msg), 0);
    KT_EQ_INT(keel_db_begin(&h.db, &msg), 0); /* holds the write lock for 80 ms */
    KT_EQ_INT(keel_db_exec(&h.db, "INSERT INTO t VALUES(7)", &msg), 0);
    KT_EQ_INT(keel_timer_init(&loop, &h.t), 0);
    KT_EQ_INT(keel_timer_start(&h.t, 80, 0, release_lock, &h), 0);
    static w_t ws[2];
    submit(&ws[0], 7, 0); /* sees the other connection's row once it may write */
    submit(&ws[1], 8, 0);
    run_until(&loop, 2);
    KT_CHECK(h.released_ms > 0);
    KT_EQ_INT(ws[0].err, 0);
    KT_CHECK(ws[0].found);
    KT_EQ_INT(ws[1].err, 0);
    KT_EQ_INT(rows(path, "t"), 2);
    keel_timer_close(&h.t, NULL);
    keel_db_close(&h.db);
    stop(&loop, dir);
}

static void close_cancels_writes_not_started_and_finishes_the_one_in_flight(void)
{
    keel_loop_t loop;
    char dir[256], path[300];
    start(&loop, dir, sizeof(dir), path, sizeof(path));
    static w_t slow, queued, extra;
    submit(&slow, 1, 3);
    while (!group.inflight) /* the check at the end of the turn starts it */
        uv_run(&loop.uv, UV_RUN_NOWAIT);
    submit(&queued, 2, 0);
    keel_db_group_close(&group, closed);
    memset(&extra, 0, sizeof(extra));
    extra.w = (keel_db_write_t){.apply = apply, .done = done, .data = &extra};
    KT_EQ_INT(keel_db_group_submit(&group, &extra.w), KEEL_ECANCELED);
    uv_run(&loop.uv, UV_RUN_DEFAULT);
    KT_EQ_INT(closed_n, 1);
    KT_EQ_INT(slow.err, 0);
    KT_EQ_INT(queued.err, KEEL_ECANCELED);
    KT_EQ_INT(queued.done, 1);
    KT_EQ_INT(extra.done, 0);
    KT_EQ_INT(rows(path, "t"), 1);
    KT_EQ_INT(keel_loop_close(&loop), 0);
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(writes_of_one_turn_share_one_transaction_and_a_later_one_sees_an_earlier);
    KT_RUN(a_failing_write_undoes_only_itself);
    KT_RUN(a_failed_commit_answers_every_write_and_applies_none);
    KT_RUN(writes_queued_during_a_commit_go_in_the_next_batch);
    KT_RUN(a_batch_waits_for_another_connections_write_lock);
    KT_RUN(close_cancels_writes_not_started_and_finishes_the_one_in_flight);
    return kt_done();
}
