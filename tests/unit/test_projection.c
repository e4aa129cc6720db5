/* test_projection.c - projections against a real keel server: each event applied once with
 * its checkpoint, dead letters, restarts that trust the checkpoint over the group, rebuilds,
 * the lag metric. */
#define _GNU_SOURCE
#include "test_tx_util.h"
#include "tx/projection.h"

#include <stdlib.h>

static tx_server_t srv;
static int flaky_left;

/* ---- the read model: per aggregate, a total and an event count --------------------------- */

static int sums_init(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(db,
                        "CREATE TABLE IF NOT EXISTS sums (agg TEXT PRIMARY KEY, total INTEGER,"
                        " n INTEGER)",
                        msg);
}

static int sums_reset(void *data, keel_db_t *db, keel_errmsg_t *msg)
{
    (void)data;
    return keel_db_exec(db, "DROP TABLE IF EXISTS sums", msg);
}

static int sums_apply(void *data, keel_db_t *db, const keel_projection_event_t *ev,
                      keel_errmsg_t *msg)
{
    int *applied = data;
    if (ev->ev.type_len == 5 && memcmp(ev->ev.type, "Flaky", 5) == 0 && flaky_left > 0) {
        flaky_left--; /* a disk that fails for a while: the batch is retried, not dead */
        return keel_errf(msg, KEEL_EIO, "disk trouble");
    }
    if (ev->ev.type_len == 6 && memcmp(ev->ev.type, "Poison", 6) == 0) {
        /* a partial change first: the savepoint must take it back */
        keel_db_exec(db, "INSERT OR REPLACE INTO sums VALUES ('poisoned', 1, 1)", NULL);
        return keel_errf(msg, KEEL_EINVAL, "poison event");
    }
    char amount[32];
    snprintf(amount, sizeof(amount), "%.*s", (int)ev->ev.data_len, (const char *)ev->ev.data);
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "INSERT INTO sums VALUES (?1, ?2, 1) ON CONFLICT(agg) DO UPDATE"
                             " SET total = total + ?2, n = n + 1",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, ev->agg, (int)ev->agg_len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, atoll(amount));
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    (*applied)++;
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "sums", msg);
}

typedef struct env {
    keel_loop_t loop;
    keel_db_t db;
    char dir[256];
    keel_projection_t p;
    keel_metrics_t *metrics;
    int applied, closed;
    keel_projection_handler_t h;
} env_t;

static void env_init(env_t *e)
{
    memset(e, 0, sizeof(*e));
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
    KT_TMPDIR(e->dir, "proj");
    char path[300];
    snprintf(path, sizeof(path), "%s/read.db", e->dir);
    KT_EQ_INT(keel_db_open(&e->db, path, NULL), 0);
    e->metrics = keel_metrics_new();
    e->h = (keel_projection_handler_t){
        .init = sums_init, .reset = sums_reset, .apply = sums_apply, .data = &e->applied};
}

static keel_ms_t start_linger_ms; /* cfg.linger_ms of the next start */

static void start(env_t *e, const char *name, const char *stream, uint32_t batch)
{
    keel_projection_config_t cfg = keel_projection_config_default();
    cfg.linger_ms = start_linger_ms;
    cfg.name = name;
    cfg.stream = stream;
    cfg.seeds[0] = srv.addr;
    cfg.seeds_n = 1;
    cfg.batch_events_max = batch;
    cfg.block_ms = 100;
    cfg.lag_every_ms = 50;
    cfg.metrics = e->metrics;
    keel_errmsg_t msg = {{0}};
    int rc = keel_projection_start(&e->p, &e->loop, &cfg, &e->db, &e->h, &msg);
    if (rc != 0)
        KT_FAIL("start: %s %s", keel_err_name(rc), msg.text);
    e->closed = 0;
}

static void on_closed(keel_projection_t *p, void *data)
{
    (void)p;
    *(int *)data = 1;
}

static void stop(env_t *e)
{
    keel_projection_stop(&e->p, on_closed, &e->closed);
    tx_run_until(&e->loop, &e->closed, 5000);
}

static void env_free(env_t *e)
{
    keel_db_close(&e->db);
    keel_metrics_free(e->metrics);
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
    KT_RMRF(e->dir);
}

/* XADD stream * agg A version V type T data D meta M; returns the id. */
static keel_stream_id_t add(const char *stream, const char *agg, const char *type, int amount)
{
    char data[32];
    snprintf(data, sizeof(data), "%d", amount);
    const char *argv[] = {"XADD", stream, "*",    "agg", agg,    "version", "1",
                          "type", type,   "data", data,  "meta", ""};
    keel_client_reply_t r = tx_call(&srv, 13, argv);
    keel_stream_id_t id;
    KT_CHECK(r.v->type == KEEL_RESP_BULK);
    KT_EQ_INT(keel_stream_id_parse(r.v->str.ptr, r.v->str.len, 0, 1, NULL, &id), 0);
    keel_client_reply_free(&r);
    return id;
}

static int checkpoint_reached(env_t *e, keel_stream_id_t id)
{
    return keel_stream_id_cmp(keel_projection_checkpoint(&e->p), id) >= 0;
}

static void run_to(env_t *e, keel_stream_id_t id)
{
    uv_update_time(&e->loop.uv);
    keel_ms_t end = keel_loop_now_ms(&e->loop) + 10000;
    while (!checkpoint_reached(e, id)) {
        uv_run(&e->loop.uv, UV_RUN_ONCE);
        if (keel_loop_now_ms(&e->loop) > end)
            KT_FAIL("checkpoint not reached");
    }
}

/* Lets the loop run for ms (acknowledgements after the last commit). */
static void run_for(env_t *e, keel_ms_t ms)
{
    uv_update_time(&e->loop.uv);
    keel_ms_t end = keel_loop_now_ms(&e->loop) + ms;
    while (keel_loop_now_ms(&e->loop) < end)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
}

static int64_t sql_int(env_t *e, const char *sql)
{
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(&e->db, sql, &st, NULL), 0);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static int64_t pending_count(const char *stream, const char *group)
{
    const char *argv[] = {"XPENDING", stream, group};
    keel_client_reply_t r = tx_call(&srv, 3, argv);
    int64_t n = r.v->type == KEEL_RESP_ARRAY ? r.v->elems[0].integer : -1;
    keel_client_reply_free(&r);
    return n;
}

static int64_t xlen(const char *key)
{
    const char *argv[] = {"XLEN", key};
    keel_client_reply_t r = tx_call(&srv, 2, argv);
    int64_t n = r.v->integer;
    keel_client_reply_free(&r);
    return n;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void every_event_is_applied_once_and_the_checkpoint_commits_with_it(void)
{
    env_t e;
    env_init(&e);
    keel_stream_id_t last = {0, 0};
    for (int i = 1; i <= 30; i++)
        last = add("pt:a", i % 2 ? "acct-1" : "acct-2", "Deposited", i);
    start(&e, "sums", "pt:a", 7); /* batches of 7: several batches, one partial */
    run_to(&e, last);
    for (int i = 31; i <= 40; i++) /* and events appended while it runs */
        last = add("pt:a", "acct-3", "Deposited", 100);
    run_to(&e, last);
    run_for(&e, 150);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-1'"), 225); /* 1+3+..+29 */
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-2'"), 240); /* 2+4+..+30 */
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-3'"), 1000);
    KT_EQ_INT(sql_int(&e, "SELECT sum(n) FROM sums"), 40);
    KT_EQ_INT(sql_int(&e, "SELECT applied FROM keel_projection WHERE name = 'sums'"), 40);
    KT_EQ_INT(e.applied, 40);
    KT_EQ_INT(pending_count("pt:a", "sums"), 0);
    KT_EQ_U64(keel_projection_stats(&e.p)->applied, 40);
    stop(&e);
    env_free(&e);
}

/* A trickle: an event every 5 ms, appended from a timer on the projection's own loop. */
typedef struct trickle {
    const char *stream;
    int added, done;
    keel_stream_id_t last;
} trickle_t;

static void trickle_fire(keel_timer_t *t, void *data)
{
    trickle_t *tr = data;
    tr->last = add(tr->stream, "acct-9", "Deposited", ++tr->added);
    if (tr->added == 20) {
        keel_timer_stop(t);
        tr->done = 1;
    }
}

/* Read at once, a trickle costs about one batch per event (a read, a commit and an XACK
 * each); with linger_ms 50, a few batches carry it all. */
static void a_linger_gathers_a_trickle_into_few_batches(void)
{
    for (int linger = 0; linger < 2; linger++) {
        env_t e;
        env_init(&e);
        trickle_t tr = {.stream = linger ? "pt:l1" : "pt:l0"};
        start_linger_ms = linger ? 50 : 0;
        start(&e, "trickle", tr.stream, 100);
        start_linger_ms = 0;
        run_for(&e, 20);
        keel_timer_t t;
        KT_EQ_INT(keel_timer_init(&e.loop, &t), 0);
        keel_timer_start(&t, 5, 5, trickle_fire, &tr);
        tx_run_until(&e.loop, &tr.done, 10000);
        keel_timer_close(&t, NULL);
        run_to(&e, tr.last);
        run_for(&e, 100);
        KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-9'"), 210);
        KT_EQ_INT(e.applied, 20);
        KT_EQ_INT(pending_count(tr.stream, "trickle"), 0);
        uint64_t batches = keel_projection_stats(&e.p)->batches;
        if (linger)
            KT_CHECK(batches >= 2 && batches <= 6);
        else
            KT_CHECK(batches >= 8);
        stop(&e);
        env_free(&e);
    }
}

static void a_failing_event_is_dead_lettered_with_its_error_and_the_projection_goes_on(void)
{
    env_t e;
    env_init(&e);
    add("pt:b", "acct-1", "Deposited", 5);
    add("pt:b", "acct-1", "Poison", 1000);
    keel_stream_id_t last = add("pt:b", "acct-1", "Deposited", 7);
    start(&e, "sums", "pt:b", 100);
    run_to(&e, last);
    run_for(&e, 150);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-1'"), 12);
    KT_EQ_INT(sql_int(&e, "SELECT count(*) FROM sums WHERE agg = 'poisoned'"), 0);
    KT_EQ_INT(sql_int(&e, "SELECT count(*) FROM keel_projection_dead"), 1);
    KT_EQ_INT(xlen("pt:b:dlq"), 1);
    KT_EQ_INT(pending_count("pt:b", "sums"), 0);
    const char *argv[] = {"XRANGE", "pt:b:dlq", "-", "+"};
    keel_client_reply_t r = tx_call(&srv, 4, argv);
    KT_EQ_INT((int)r.v->elems_len, 1);
    const keel_resp_value_t *f = &r.v->elems[0].elems[1];
    int saw_error = 0;
    for (size_t i = 0; i + 1 < f->elems_len; i += 2)
        if (f->elems[i].str.len == 10 && memcmp(f->elems[i].str.ptr, "keel-error", 10) == 0)
            saw_error = f->elems[i + 1].str.len > 0 &&
                        memmem(f->elems[i + 1].str.ptr, f->elems[i + 1].str.len, "poison", 6);
    KT_CHECK(saw_error);
    keel_client_reply_free(&r);
    KT_EQ_U64(keel_projection_stats(&e.p)->dead, 1);
    stop(&e);
    env_free(&e);
}

/* A crash between COMMIT and XACK leaves committed entries pending; a group moved back
 * (or recreated) would deliver them again. The checkpoint decides: nothing is applied
 * twice, the pending entries are acknowledged. */
static void a_restart_trusts_the_checkpoint_over_the_group(void)
{
    env_t e;
    env_init(&e);
    keel_stream_id_t last = {0, 0};
    for (int i = 1; i <= 20; i++)
        last = add("pt:c", "acct-1", "Deposited", 1);
    start(&e, "sums", "pt:c", 8);
    run_to(&e, last);
    run_for(&e, 150);
    stop(&e);
    KT_EQ_INT(e.applied, 20);
    /* as if the acknowledgements were lost: everything delivered again and pending */
    const char *setid[] = {"XGROUP", "SETID", "pt:c", "sums", "0"};
    keel_client_reply_t r = tx_call(&srv, 5, setid);
    keel_client_reply_free(&r);
    const char *rd[] = {"XREADGROUP", "GROUP",   "sums", "other", "COUNT",
                        "100",        "STREAMS", "pt:c", ">"};
    r = tx_call(&srv, 9, rd);
    keel_client_reply_free(&r);
    KT_EQ_INT(pending_count("pt:c", "sums"), 20);
    for (int i = 21; i <= 25; i++)
        last = add("pt:c", "acct-1", "Deposited", 1);
    start(&e, "sums", "pt:c", 8);
    run_to(&e, last);
    run_for(&e, 200);
    KT_EQ_INT(e.applied, 25);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-1'"), 25);
    KT_EQ_INT(pending_count("pt:c", "sums"), 0);
    stop(&e);
    env_free(&e);
}

static void a_rebuild_drops_the_read_model_and_applies_everything_again(void)
{
    env_t e;
    env_init(&e);
    keel_stream_id_t last = {0, 0};
    for (int i = 1; i <= 12; i++)
        last = add("pt:d", "acct-9", i == 6 ? "Poison" : "Deposited", 2);
    start(&e, "sums", "pt:d", 5);
    run_to(&e, last);
    run_for(&e, 150);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums"), 22);
    keel_db_exec(&e.db, "UPDATE sums SET total = -1", NULL); /* a damaged read model */
    keel_projection_rebuild(&e.p);
    uv_update_time(&e.loop.uv);
    keel_ms_t end = keel_loop_now_ms(&e.loop) + 10000;
    while (keel_projection_stats(&e.p)->rebuilds == 0 || !checkpoint_reached(&e, last)) {
        uv_run(&e.loop.uv, UV_RUN_ONCE);
        if (keel_loop_now_ms(&e.loop) > end)
            KT_FAIL("rebuild did not finish");
    }
    run_for(&e, 150);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums"), 22);
    KT_EQ_INT(sql_int(&e, "SELECT n FROM sums"), 11);
    KT_EQ_INT(sql_int(&e, "SELECT applied FROM keel_projection"), 11);
    KT_EQ_INT(sql_int(&e, "SELECT count(*) FROM keel_projection_dead"), 1);
    KT_EQ_INT(xlen("pt:d:dlq"), 2); /* dead-lettered again by the rebuild */
    KT_EQ_INT(pending_count("pt:d", "sums"), 0);
    stop(&e);
    env_free(&e);
}

static void the_lag_is_in_the_metrics_and_falls_to_zero(void)
{
    env_t e;
    env_init(&e);
    keel_stream_id_t last = {0, 0};
    for (int i = 1; i <= 60; i++)
        last = add("pt:e", "acct-1", "Deposited", 1);
    start(&e, "lagged", "pt:e", 10);
    int64_t lag_max = -1;
    uv_update_time(&e.loop.uv);
    keel_ms_t end = keel_loop_now_ms(&e.loop) + 10000;
    while (!checkpoint_reached(&e, last) || keel_projection_stats(&e.p)->lag_events != 0) {
        uv_run(&e.loop.uv, UV_RUN_ONCE);
        int64_t lag = keel_projection_stats(&e.p)->lag_events;
        lag_max = lag > lag_max ? lag : lag_max;
        if (keel_loop_now_ms(&e.loop) > end)
            KT_FAIL("lag did not fall to 0 (%lld)", (long long)lag);
    }
    fprintf(stderr, "     largest lag seen: %lld\n", (long long)lag_max);
    KT_CHECK(lag_max >= 10 && lag_max <= 60);
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_metrics_render(e.metrics, &out), 0);
    keel_buf_append(&out, "", 1);
    const char *text = (const char *)keel_buf_rptr(&out);
    KT_CHECK(strstr(text, "keel_projection_lag_events{projection=\"lagged\"} 0\n") != NULL);
    KT_CHECK(strstr(text, "keel_projection_events_applied_total{projection=\"lagged\"} 60\n") !=
             NULL);
    keel_buf_free(&out);
    stop(&e);
    env_free(&e);
}

/* A read of a dead predecessor (in the log, or still blocked on the server, when it died)
 * delivers entries to nobody and moves the group past them. Here one entry appends five
 * events and hands the first two to a "zombie" consumer: the projection's next batch starts
 * after a gap, which it must notice (the stream's first entry after its checkpoint is not
 * the batch's first), and apply the two once the group is moved back. */
static void a_gap_left_by_a_dead_readers_delivery_is_found_and_filled(void)
{
    env_t e;
    env_init(&e);
    keel_stream_id_t last = add("pt:f", "acct-1", "Deposited", 1);
    start(&e, "sums", "pt:f", 100);
    run_to(&e, last);
    run_for(&e, 150); /* the projection is now blocked in XREADGROUP */
    const char *argv[] = {
        "KEEL.TXN",  "0",      "6",         "9",    "XADD",      "pt:f", "*",          "agg",
        "acct-1",    "type",   "Deposited", "data", "10",        "9",    "XADD",       "pt:f",
        "*",         "agg",    "acct-1",    "type", "Deposited", "data", "100",        "9",
        "XADD",      "pt:f",   "*",         "agg",  "acct-1",    "type", "Deposited",  "data",
        "1000",      "9",      "XADD",      "pt:f", "*",         "agg",  "acct-1",     "type",
        "Deposited", "data",   "10000",     "9",    "XADD",      "pt:f", "*",          "agg",
        "acct-1",    "type",   "Deposited", "data", "100000",    "9",    "XREADGROUP", "GROUP",
        "sums",      "zombie", "COUNT",     "2",    "STREAMS",   "pt:f", ">"};
    keel_client_reply_t r = tx_call(&srv, sizeof(argv) / sizeof(argv[0]), argv);
    KT_CHECK(r.v->type == KEEL_RESP_ARRAY && r.v->elems_len == 6);
    KT_EQ_INT(keel_stream_id_parse(r.v->elems[4].str.ptr, r.v->elems[4].str.len, 0, 1, NULL, &last),
              0);
    keel_client_reply_free(&r);
    run_to(&e, last);
    run_for(&e, 150);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-1'"), 111111);
    KT_EQ_INT(sql_int(&e, "SELECT n FROM sums WHERE agg = 'acct-1'"), 6);
    KT_CHECK(keel_projection_stats(&e.p)->gaps >= 1);
    KT_EQ_INT(pending_count("pt:f", "sums"), 0);
    stop(&e);
    env_free(&e);
}

static void a_transient_failure_rolls_the_batch_back_and_retries_it_whole(void)
{
    env_t e;
    env_init(&e);
    add("pt:g", "acct-1", "Deposited", 1);
    add("pt:g", "acct-1", "Flaky", 10);
    keel_stream_id_t last = add("pt:g", "acct-1", "Deposited", 100);
    flaky_left = 3;
    start(&e, "sums", "pt:g", 100);
    run_to(&e, last);
    run_for(&e, 150);
    KT_EQ_INT(flaky_left, 0);
    KT_EQ_INT(sql_int(&e, "SELECT total FROM sums WHERE agg = 'acct-1'"), 111);
    KT_EQ_INT(sql_int(&e, "SELECT n FROM sums WHERE agg = 'acct-1'"), 3);
    KT_EQ_INT(sql_int(&e, "SELECT count(*) FROM keel_projection_dead"), 0);
    KT_EQ_U64(keel_projection_stats(&e.p)->restarts, 3);
    KT_EQ_INT(pending_count("pt:g", "sums"), 0);
    stop(&e);
    env_free(&e);
}

int main(void)
{
    if (tx_server_start(&srv) != 0) {
        printf("skipped: build/keel not built\n");
        return 0;
    }
    KT_RUN(every_event_is_applied_once_and_the_checkpoint_commits_with_it);
    KT_RUN(a_linger_gathers_a_trickle_into_few_batches);
    KT_RUN(a_failing_event_is_dead_lettered_with_its_error_and_the_projection_goes_on);
    KT_RUN(a_restart_trusts_the_checkpoint_over_the_group);
    KT_RUN(a_rebuild_drops_the_read_model_and_applies_everything_again);
    KT_RUN(the_lag_is_in_the_metrics_and_falls_to_zero);
    KT_RUN(a_gap_left_by_a_dead_readers_delivery_is_found_and_filled);
    KT_RUN(a_transient_failure_rolls_the_batch_back_and_retries_it_whole);
    tx_server_stop(&srv);
    return kt_done();
}
