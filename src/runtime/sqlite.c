/* sqlite.c - see sqlite.h. */
#include "runtime/sqlite.h"

#include <assert.h>
#include <string.h>
#include <time.h>

int keel_db_error(keel_db_t *db, int rc, const char *what, keel_errmsg_t *msg)
{
    int err;
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        err = KEEL_EBUSY;
        break;
    case SQLITE_CONSTRAINT:
        err = KEEL_EEXISTS;
        break;
    case SQLITE_FULL:
        err = KEEL_EFULL;
        break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        err = KEEL_ECORRUPT;
        break;
    case SQLITE_NOMEM:
        err = KEEL_ENOMEM;
        break;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        err = KEEL_EIO;
        break;
    default:
        err = KEEL_EINVAL;
        break;
    }
    const char *why = db != NULL && db->h != NULL ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc);
    return keel_errf(msg, err, "%s: %s", what, why);
}

int keel_db_open(keel_db_t *db, const char *path, keel_errmsg_t *msg)
{
    *db = (keel_db_t){0};
    if (strlen(path) >= KEEL_DB_PATH_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "database path longer than %d bytes", KEEL_DB_PATH_MAX);
    int rc = sqlite3_open_v2(
        path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int err = keel_db_error(db, rc, path, msg);
        keel_db_close(db);
        return err;
    }
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, KEEL_DB_BUSY_MS);
    /* Turning a new file into WAL needs its exclusive lock, and SQLite answers BUSY at once,
       without the busy handler, when another connection holds a lock that waiting could
       deadlock with: a second process opening the file while the first is still creating
       it (a service and its relay starting together). So the open waits here instead, in
       steps of 10 ms, for at most KEEL_DB_BUSY_MS, as any other statement would. */
    int err;
    for (int waited_ms = 0;; waited_ms += 10) {
        err = keel_db_exec(db,
                           "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                           " PRAGMA foreign_keys=ON;",
                           msg);
        if (err != KEEL_EBUSY || waited_ms >= KEEL_DB_BUSY_MS)
            break;
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL);
    }
    if (err != 0)
        keel_db_close(db);
    return err;
}

static int busy_step(void *data, int tries)
{
    keel_db_t *db = data;
    if ((uint64_t)tries * db->busy_step_us >= (uint64_t)KEEL_DB_BUSY_MS * 1000u)
        return 0; /* SQLITE_BUSY: KEEL_EBUSY to the caller */
    struct timespec ts = {0, (long)db->busy_step_us * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

void keel_db_busy_steps(keel_db_t *db, uint32_t step_us)
{
    assert(step_us >= 1 && step_us <= 100000);
    db->busy_step_us = step_us;
    sqlite3_busy_handler(db->h, busy_step, db);
}

void keel_db_close(keel_db_t *db)
{
    if (db->h != NULL)
        sqlite3_close_v2(db->h);
    *db = (keel_db_t){0};
}

int keel_db_exec(keel_db_t *db, const char *sql, keel_errmsg_t *msg)
{
    char *why = NULL;
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, &why);
    if (rc == SQLITE_OK)
        return 0;
    int err = keel_db_error(db, rc, "sql", NULL);
    keel_errf(msg, err, "%.40s: %s", sql, why != NULL ? why : sqlite3_errstr(rc));
    sqlite3_free(why);
    return err;
}

int keel_db_begin(keel_db_t *db, keel_errmsg_t *msg)
{
    if (db->depth > 0)
        return keel_errf(msg, KEEL_EINVAL, "a transaction is already open");
    int err = keel_db_exec(db, "BEGIN IMMEDIATE", msg);
    if (err == 0)
        db->depth = 1;
    return err;
}

int keel_db_commit(keel_db_t *db, keel_errmsg_t *msg)
{
    if (db->depth == 0)
        return keel_errf(msg, KEEL_EINVAL, "no transaction is open");
    int err = keel_db_exec(db, "COMMIT", msg);
    if (err != 0) {
        keel_db_rollback(db); /* a failed COMMIT (disk full) leaves nothing half done */
        return err;
    }
    db->depth = 0;
    return 0;
}

void keel_db_rollback(keel_db_t *db)
{
    if (db->depth == 0)
        return;
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    db->depth = 0;
}

int keel_db_prepare(keel_db_t *db, const char *sql, sqlite3_stmt **out, keel_errmsg_t *msg)
{
    int rc = sqlite3_prepare_v2(db->h, sql, -1, out, NULL);
    if (rc == SQLITE_OK)
        return 0;
    *out = NULL;
    int err = keel_db_error(db, rc, "prepare", NULL);
    return keel_errf(msg, err, "%.40s: %s", sql, sqlite3_errmsg(db->h));
}
