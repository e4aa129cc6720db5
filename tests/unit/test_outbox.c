/* test_outbox.c - tx/outbox.c: rows only inside the business transaction, read in id order,
 * a batch's answer settled by the rules that keep each stream in order, marks, pruning
 * that never lets an id come back. The relay against a real server: test_outbox.py. */
#include "base/err.h"
#include "ktest.h"
#include "runtime/sqlite.h"
#include "tx/outbox.h"

#include <stdio.h>
#include <string.h>

static void open_db(keel_db_t *db)
{
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(db, ":memory:", &msg), 0);
    KT_EQ_INT(keel_outbox_init(db, &msg), 0);
    KT_EQ_INT(keel_outbox_init(db, &msg), 0); /* again: IF NOT EXISTS */
    KT_EQ_INT(keel_db_exec(db, "CREATE TABLE orders (n INTEGER PRIMARY KEY)", &msg), 0);
}

static void add_order(keel_db_t *db, int n, const char *stream)
{
    keel_errmsg_t msg;
    char sql[64], payload[32];
    snprintf(sql, sizeof(sql), "INSERT INTO orders VALUES (%d)", n);
    snprintf(payload, sizeof(payload), "order %d", n);
    KT_EQ_INT(keel_db_begin(db, &msg), 0);
    KT_EQ_INT(keel_db_exec(db, sql, &msg), 0);
    KT_EQ_INT(keel_outbox_add(db, stream, payload, strlen(payload), NULL, &msg), 0);
    KT_EQ_INT(keel_db_commit(db, &msg), 0);
}

static void an_outbox_row_is_written_only_inside_the_business_transaction(void)
{
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db);
    KT_EQ_INT(keel_outbox_add(&db, "s", "x", 1, NULL, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    KT_EQ_INT(keel_db_exec(&db, "INSERT INTO orders VALUES (1)", &msg), 0);
    int64_t id = 0;
    KT_EQ_INT(keel_outbox_add(&db, "s", "x", 1, &id, &msg), 0);
    KT_EQ_INT(id, 1);
    KT_EQ_INT(keel_outbox_add(&db, "", "x", 1, NULL, &msg), KEEL_EINVAL);
    keel_db_rollback(&db); /* the business change goes, and its event with it */
    int64_t rows = -1, oldest = -1;
    KT_EQ_INT(keel_outbox_pending(&db, &rows, &oldest, &msg), 0);
    KT_EQ_INT(rows, 0);
    KT_EQ_INT(oldest, 0);
    add_order(&db, 2, "s");
    KT_EQ_INT(keel_outbox_pending(&db, &rows, &oldest, &msg), 0);
    KT_EQ_INT(rows, 1);
    KT_CHECK(oldest > 0);
    keel_db_close(&db);
}

static void unsent_rows_are_read_in_id_order_in_batches(void)
{
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db);
    for (int n = 1; n <= 7; n++)
        add_order(&db, n, n % 2 ? "odd" : "even");
    keel_outbox_batch_t b = {0};
    KT_EQ_INT(keel_outbox_read(&db, 5, &b, &msg), 0);
    KT_EQ_INT(b.n, 5);
    for (size_t i = 0; i < b.n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "order %zu", i + 1);
        KT_EQ_INT(b.rows[i].id, (int64_t)i + 1);
        KT_EQ_STR(b.rows[i].stream, (i + 1) % 2 ? "odd" : "even");
        KT_EQ_INT(b.rows[i].payload_bytes, strlen(want));
        KT_EQ_MEM(b.rows[i].payload, want, strlen(want));
    }
    keel_outbox_batch_free(&b);
    keel_db_close(&db);
}

static keel_outbox_result_t ok(const char *id)
{
    return (keel_outbox_result_t){false, id, strlen(id)};
}

static keel_outbox_result_t err(const char *text)
{
    return (keel_outbox_result_t){true, text, strlen(text)};
}

static const char behind[] = "ERR keel: producer sequence 3 is behind the last one, 9";
static const char too_big[] = "ERR keel: value larger than value_bytes_max";
static const char wrongtype[] = "WRONGTYPE Operation against a key holding the wrong kind of value";

static void a_batch_is_settled_published_duplicate_dead_or_retried(void)
{
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db);
    /* rows 1..6: a a b a b c */
    const char *streams[] = {"a", "a", "b", "a", "b", "c"};
    for (int n = 1; n <= 6; n++)
        add_order(&db, n, streams[n - 1]);
    keel_outbox_batch_t b = {0};
    KT_EQ_INT(keel_outbox_read(&db, 100, &b, &msg), 0);
    KT_EQ_INT(b.n, 6);
    keel_outbox_result_t res[6] = {
        err(behind),    /* 1: appended by an earlier attempt */
        err(too_big),   /* 2: refused, and row 4 of stream a went in after it: dead */
        err(wrongtype), /* 3: refused, nothing of b after it went in: retried */
        ok("5-0"),      /* 4 */
        err(wrongtype), /* 5: refused too: still retried, in order behind 3 */
        ok("6-0"),      /* 6 */
    };
    KT_EQ_INT(keel_outbox_settle(&b, res), 2);
    KT_EQ_INT(b.rows[0].outcome, KEEL_OUTBOX_DUPLICATE);
    KT_EQ_INT(b.rows[1].outcome, KEEL_OUTBOX_DEAD);
    KT_EQ_STR(b.rows[1].error, too_big);
    KT_EQ_INT(b.rows[2].outcome, KEEL_OUTBOX_RETRY);
    KT_EQ_INT(b.rows[3].outcome, KEEL_OUTBOX_PUBLISHED);
    KT_EQ_STR(b.rows[3].stream_id, "5-0");
    KT_EQ_INT(b.rows[4].outcome, KEEL_OUTBOX_RETRY);
    KT_EQ_INT(b.rows[5].outcome, KEEL_OUTBOX_PUBLISHED);
    KT_EQ_INT(keel_outbox_mark(&db, &b, 1000, &msg), 0);
    /* only the retried rows are left, still in order */
    KT_EQ_INT(keel_outbox_read(&db, 100, &b, &msg), 0);
    KT_EQ_INT(b.n, 2);
    KT_EQ_INT(b.rows[0].id, 3);
    KT_EQ_INT(b.rows[1].id, 5);
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(&db, "SELECT error FROM keel_outbox WHERE id = 2", &st, &msg), 0);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    KT_EQ_STR((const char *)sqlite3_column_text(st, 0), too_big);
    sqlite3_finalize(st);
    keel_outbox_batch_free(&b);
    keel_db_close(&db);
}

static void a_refused_row_next_to_a_later_duplicate_is_dead_too(void)
{
    /* the batch [1 refused, 2 appended] was settled, then the relay died before marking:
       sent again, 1 is refused again and 2 answers "behind": 1 can never go in order */
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db);
    add_order(&db, 1, "a");
    add_order(&db, 2, "a");
    keel_outbox_batch_t b = {0};
    KT_EQ_INT(keel_outbox_read(&db, 100, &b, &msg), 0);
    keel_outbox_result_t res[2] = {err(too_big), err(behind)};
    KT_EQ_INT(keel_outbox_settle(&b, res), 0);
    KT_EQ_INT(b.rows[0].outcome, KEEL_OUTBOX_DEAD);
    KT_EQ_INT(b.rows[1].outcome, KEEL_OUTBOX_DUPLICATE);
    keel_outbox_batch_free(&b);
    keel_db_close(&db);
}

static void a_pruned_table_never_hands_out_an_old_id_again(void)
{
    /* a reused id would be "behind" in keel's producer table and never appended */
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db);
    add_order(&db, 1, "a");
    add_order(&db, 2, "a");
    keel_outbox_batch_t b = {0};
    KT_EQ_INT(keel_outbox_read(&db, 100, &b, &msg), 0);
    keel_outbox_result_t res[2] = {ok("1-0"), ok("1-1")};
    KT_EQ_INT(keel_outbox_settle(&b, res), 0);
    KT_EQ_INT(keel_outbox_mark(&db, &b, 1000, &msg), 0);
    int64_t deleted = 0;
    KT_EQ_INT(keel_outbox_prune(&db, 999, &deleted, &msg), 0);
    KT_EQ_INT(deleted, 0);
    KT_EQ_INT(keel_outbox_prune(&db, 1001, &deleted, &msg), 0);
    KT_EQ_INT(deleted, 2);
    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    int64_t id = 0;
    KT_EQ_INT(keel_outbox_add(&db, "a", "x", 1, &id, &msg), 0);
    KT_EQ_INT(keel_db_commit(&db, &msg), 0);
    KT_EQ_INT(id, 3);
    keel_outbox_batch_free(&b);
    keel_db_close(&db);
}

static void a_relay_config_is_checked(void)
{
    keel_loop_t loop;
    KT_EQ_INT(keel_loop_init(&loop), 0);
    keel_db_t db;
    open_db(&db);
    keel_outbox_relay_t r;
    keel_errmsg_t msg;
    keel_outbox_relay_config_t cfg = keel_outbox_relay_config_default();
    cfg.db = &db;
    cfg.servers = "127.0.0.1:1";
    KT_EQ_INT(keel_outbox_relay_init(&r, &loop, &cfg, &msg), KEEL_EINVAL); /* no producer */
    cfg.producer = "a-producer-name-that-is-far-too-long-for-keel-producer-ids";
    KT_EQ_INT(keel_outbox_relay_init(&r, &loop, &cfg, &msg), KEEL_EINVAL);
    cfg.producer = "orders-1";
    cfg.batch_rows_max = KEEL_OUTBOX_BATCH_ROWS_MAX + 1;
    KT_EQ_INT(keel_outbox_relay_init(&r, &loop, &cfg, &msg), KEEL_EINVAL);
    cfg.batch_rows_max = 10;
    KT_EQ_INT(keel_outbox_relay_init(&r, &loop, &cfg, &msg), 0);
    keel_outbox_relay_close(&r, NULL);
    keel_loop_run(&loop);
    KT_EQ_INT(keel_loop_close(&loop), 0);
    keel_db_close(&db);
}

int main(void)
{
    KT_RUN(an_outbox_row_is_written_only_inside_the_business_transaction);
    KT_RUN(unsent_rows_are_read_in_id_order_in_batches);
    KT_RUN(a_batch_is_settled_published_duplicate_dead_or_retried);
    KT_RUN(a_refused_row_next_to_a_later_duplicate_is_dead_too);
    KT_RUN(a_pruned_table_never_hands_out_an_old_id_again);
    KT_RUN(a_relay_config_is_checked);
    return kt_done();
}
