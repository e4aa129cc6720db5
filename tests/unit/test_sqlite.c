/* test_sqlite.c - runtime/sqlite.c: durable pragmas, transactions, error mapping, and a
 * corrupt file reported as KEEL_ECORRUPT, never read as data. */
#include "base/err.h"
#include "ktest.h"
#include "runtime/sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long long count(keel_db_t *db)
{
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(db, "SELECT count(*) FROM t", &st, NULL), 0);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void transactions_commit_or_leave_nothing(void)
{
    char dir[256], path[300];
    KT_TMPDIR(dir, "sqlite");
    snprintf(path, sizeof(path), "%s/a.db", dir);
    keel_db_t db;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_db_open(&db, path, &msg), 0);
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(&db, "PRAGMA journal_mode", &st, NULL), 0);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    KT_EQ_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    KT_EQ_INT(keel_db_exec(&db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", &msg), 0);

    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    KT_CHECK(keel_db_in_tx(&db));
    KT_EQ_INT(keel_db_begin(&db, &msg), KEEL_EINVAL); /* no nesting */
    KT_EQ_INT(keel_db_exec(&db, "INSERT INTO t VALUES(1,'a'); INSERT INTO t VALUES(2,'b')", &msg),
              0);
    KT_EQ_INT(keel_db_commit(&db, &msg), 0);
    KT_EQ_INT(count(&db), 2);

    KT_EQ_INT(keel_db_begin(&db, &msg), 0);
    KT_EQ_INT(keel_db_exec(&db, "INSERT INTO t VALUES(3,'c')", &msg), 0);
    KT_EQ_INT(keel_db_exec(&db, "INSERT INTO t VALUES(1,'dup')", &msg), KEEL_EEXISTS);
    KT_CHECK(strstr(msg.text, "UNIQUE") != NULL);
    keel_db_rollback(&db);
    KT_CHECK(!keel_db_in_tx(&db));
    KT_EQ_INT(count(&db), 2);
    KT_EQ_INT(keel_db_commit(&db, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_db_exec(&db, "SELEC nothing", &msg), KEEL_EINVAL);
    keel_db_close(&db);

    /* reopened: what was committed is there */
    KT_EQ_INT(keel_db_open(&db, path, &msg), 0);
    KT_EQ_INT(count(&db), 2);
    keel_db_close(&db);
    KT_RMRF(dir);
}

static void a_corrupt_file_is_reported(void)
{
    char dir[256], path[300];
    KT_TMPDIR(dir, "sqlite");
    snprintf(path, sizeof(path), "%s/bad.db", dir);
    FILE *f = fopen(path, "wb");
    KT_CHECK(f != NULL);
    char junk[8192];
    memset(junk, 0x5a, sizeof(junk));
    fwrite(junk, 1, sizeof(junk), f);
    fclose(f);
    keel_db_t db;
    keel_errmsg_t msg;
    int rc = keel_db_open(&db, path, &msg);
    KT_EQ_INT(rc, KEEL_ECORRUPT);
    KT_CHECK(db.h == NULL);
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(transactions_commit_or_leave_nothing);
    KT_RUN(a_corrupt_file_is_reported);
    return kt_done();
}
