/* test_sqlite.c - runtime/sqlite.c: durable pragmas, transactions, error mapping, and a
 * corrupt file reported as KEEL_ECORRUPT, never read as data. */
#include "base/err.h"
#include "ktest.h"
#include "runtime/sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Processes that open one new file at once (a service and its relay starting together):
 * the first turns it into WAL while the others wait for it, none fails with BUSY. */
static void processes_creating_one_file_at_once_all_open_it(void)
{
    char dir[256], path[300];
    KT_TMPDIR(dir, "sqlite");
    for (int round = 0; round < 20; round++) {
        snprintf(path, sizeof(path), "%s/race%d.db", dir, round);
        int gate[2];
        KT_EQ_INT(pipe(gate), 0);
        enum { N = 6 };
        pid_t kids[N];
        for (int i = 0; i < N; i++) {
            kids[i] = fork();
            if (kids[i] == 0) {
                char c;
                close(gate[1]);
                if (read(gate[0], &c, 1) != 0) /* EOF: all go at once, then a step apart */
                    _exit(3);
                struct timespec step = {0, i * 300 * 1000};
                nanosleep(&step, NULL);
                keel_db_t db;
                keel_errmsg_t msg;
                if (keel_db_open(&db, path, &msg) != 0) {
                    fprintf(stderr, "open: %s\n", msg.text);
                    _exit(1);
                }
                int rc = keel_db_exec(&db, "CREATE TABLE IF NOT EXISTS t(v INTEGER)", &msg);
                for (int k = 0; k < 5 && rc == 0; k++) { /* a writer's first transactions */
                    rc = keel_db_begin(&db, &msg);
                    if (rc == 0)
                        rc = keel_db_exec(&db, "INSERT INTO t VALUES (1)", &msg);
                    if (rc == 0)
                        rc = keel_db_commit(&db, &msg);
                }
                if (rc != 0)
                    fprintf(stderr, "write: %s\n", msg.text);
                keel_db_close(&db);
                _exit(rc == 0 ? 0 : 2);
            }
        }
        close(gate[0]);
        close(gate[1]);
        for (int i = 0; i < N; i++) {
            int status = 0;
            KT_EQ_INT(waitpid(kids[i], &status, 0), kids[i]);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                KT_FAIL("round %d: process %d: status %d", round, i, status);
        }
        keel_db_t db;
        keel_errmsg_t msg;
        KT_EQ_INT(keel_db_open(&db, path, &msg), 0);
        KT_EQ_INT(count(&db), N * 5);
        keel_db_close(&db);
    }
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(transactions_commit_or_leave_nothing);
    KT_RUN(a_corrupt_file_is_reported);
    KT_RUN(processes_creating_one_file_at_once_all_open_it);
    return kt_done();
}
