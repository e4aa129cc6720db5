/* test_inbox.c - tx/inbox.c: a redelivered message finds its id and has no second effect;
 * a failed or interrupted effect leaves no id behind, so the redelivery applies it; a
 * random at-least-once delivery with duplicates and crashes ends with each effect once. */
#include "base/err.h"
#include "base/rand.h"
#include "ktest.h"
#include "runtime/sqlite.h"
#include "tx/inbox.h"

#include <stdio.h>
#include <string.h>

static void open_db(keel_db_t *db, const char *path)
{
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(db, path, &msg), 0);
    KT_EQ_INT(keel_inbox_init(db, &msg), 0);
    KT_EQ_INT(keel_db_exec(db,
                           "CREATE TABLE IF NOT EXISTS balance (k TEXT PRIMARY KEY, v INTEGER);"
                           "INSERT OR IGNORE INTO balance VALUES ('total', 0)",
                           &msg),
              0);
}

static long long total(keel_db_t *db)
{
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(db, "SELECT v FROM balance WHERE k = 'total'", &st, NULL), 0);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

typedef struct effect {
    int amount;
    int fail; /* returned instead of applying */
} effect_t;

static int add_amount(keel_db_t *db, void *data, keel_errmsg_t *msg)
{
    effect_t *e = data;
    if (e->fail)
        return e->fail;
    char sql[96];
    snprintf(sql, sizeof(sql), "UPDATE balance SET v = v + %d WHERE k = 'total'", e->amount);
    return keel_db_exec(db, sql, msg);
}

static void a_redelivered_message_has_no_second_effect(void)
{
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db, ":memory:");
    effect_t e = {.amount = 5};
    KT_EQ_INT(keel_inbox_process(&db, "billing", "orders-1/1", 10, add_amount, &e, &msg), 0);
    KT_EQ_INT(keel_inbox_process(&db, "billing", "orders-1/1", 10, add_amount, &e, &msg),
              KEEL_EEXISTS);
    KT_EQ_INT(total(&db), 5);
    /* another consumer of the same message has its own effect, once */
    KT_EQ_INT(keel_inbox_process(&db, "audit", "orders-1/1", 10, add_amount, &e, &msg), 0);
    KT_EQ_INT(keel_inbox_process(&db, "audit", "orders-1/1", 10, add_amount, &e, &msg),
              KEEL_EEXISTS);
    KT_EQ_INT(total(&db), 10);
    /* a claim outside a transaction would record an id without its effect */
    KT_EQ_INT(keel_inbox_claim(&db, "billing", "x", 1, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    KT_EQ_INT(keel_inbox_claim(&db, "billing", "", 0, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_inbox_claim(&db, "billing", "orders-1/1", 10, &msg), KEEL_EEXISTS);
    KT_EQ_INT(keel_inbox_claim(&db, "billing", "orders-1/2", 10, &msg), 0);
    keel_db_rollback(&db);
    keel_db_close(&db);
}

static void a_failed_effect_leaves_no_id_so_the_redelivery_applies_it(void)
{
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db, ":memory:");
    effect_t e = {.amount = 7, .fail = KEEL_EIO};
    KT_EQ_INT(keel_inbox_process(&db, "billing", "m1", 2, add_amount, &e, &msg), KEEL_EIO);
    KT_CHECK(!keel_db_in_tx(&db));
    KT_EQ_INT(total(&db), 0);
    e.fail = 0;
    KT_EQ_INT(keel_inbox_process(&db, "billing", "m1", 2, add_amount, &e, &msg), 0);
    KT_EQ_INT(total(&db), 7);
    keel_db_close(&db);
}

static void a_crash_before_commit_leaves_neither_the_id_nor_the_effect(void)
{
    char dir[256], path[300];
    KT_TMPDIR(dir, "inbox");
    snprintf(path, sizeof(path), "%s/c.db", dir);
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db, path);
    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    KT_EQ_INT(keel_inbox_claim(&db, "billing", "m1", 2, &msg), 0);
    effect_t e = {.amount = 3};
    KT_EQ_INT(add_amount(&db, &e, &msg), 0);
    keel_db_close(&db); /* the process dies here: the transaction never committed */
    open_db(&db, path);
    KT_EQ_INT(total(&db), 0);
    KT_EQ_INT(keel_inbox_process(&db, "billing", "m1", 2, add_amount, &e, &msg), 0);
    KT_EQ_INT(total(&db), 3);
    keel_db_close(&db);
    KT_RMRF(dir);
}

/* at-least-once: every message is delivered until one delivery is acknowledged; a delivery
   may crash before the commit, or after it and before the XACK (then it comes again) */
static void random_redeliveries_and_crashes_end_with_each_effect_once(void)
{
    keel_rand_t rnd;
    uint64_t seed = 20261205;
    KT_SEED(seed);
    keel_rand_seed(&rnd, seed);
    keel_db_t db;
    keel_errmsg_t msg;
    open_db(&db, ":memory:");
    enum { MESSAGES = 2000 };
    long long want = 0, deliveries = 0, skipped = 0;
    for (int m = 1; m <= MESSAGES; m++) {
        char id[32];
        int n = snprintf(id, sizeof(id), "orders-1/%d", m);
        effect_t e = {.amount = m};
        want += m;
        for (;;) {
            deliveries++;
            bool crash_before_commit = keel_rand_below(&rnd, 5) == 0;
            bool lost_ack = keel_rand_below(&rnd, 4) == 0;
            e.fail = crash_before_commit ? KEEL_ECANCELED : 0;
            int rc = keel_inbox_process(&db, "billing", id, (size_t)n, add_amount, &e, &msg);
            if (rc == KEEL_EEXISTS)
                skipped++;
            else if (rc != 0)
                continue; /* not acknowledged: delivered again */
            if (!lost_ack)
                break;
        }
    }
    KT_EQ_INT(total(&db), want);
    KT_CHECK(deliveries > MESSAGES + 500 && skipped > 300);
    int64_t deleted = 0;
    KT_EQ_INT(keel_inbox_prune(&db, 0, &deleted, &msg), 0);
    KT_EQ_INT(deleted, 0);
    KT_EQ_INT(keel_inbox_prune(&db, INT64_MAX, &deleted, &msg), 0);
    KT_EQ_INT(deleted, MESSAGES);
    keel_db_close(&db);
}

int main(void)
{
    KT_RUN(a_redelivered_message_has_no_second_effect);
    KT_RUN(a_failed_effect_leaves_no_id_so_the_redelivery_applies_it);
    KT_RUN(a_crash_before_commit_leaves_neither_the_id_nor_the_effect);
    KT_RUN(random_redeliveries_and_crashes_end_with_each_effect_once);
    return kt_done();
}
