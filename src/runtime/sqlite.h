/* sqlite.h - the local SQLite database a service keeps (outbox, inbox, read models, 2PC). */
#ifndef KEEL_RUNTIME_SQLITE_H
#define KEEL_RUNTIME_SQLITE_H

#include "base/err.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * One connection to one database file, opened the way keel's durability rule needs:
 *   journal_mode=WAL      readers never block the writer;
 *   synchronous=FULL      a COMMIT is on disk (fsync'd WAL) before it returns, so a
 *                         service may acknowledge what it committed;
 *   busy_timeout          KEEL_DB_BUSY_MS, for a second connection to the same file
 *                         (a relay beside its service); past it SQLITE_BUSY is KEEL_EBUSY;
 *   foreign_keys=ON.
 * The calls below map SQLite's result codes to KEEL_E* codes and put SQLite's own
 * message (with the statement's first bytes) in `msg`. For anything else, use the
 * sqlite3 API on keel_db_handle() directly: this is a convenience, not a wall.
 * A keel_db_t is used by one thread (the loop's); SQLite calls block that thread for the
 * length of a local transaction, which is what the services want (microseconds, plus an
 * fsync per commit: batch several changes into one transaction where the rate matters).
 */
#define KEEL_DB_BUSY_MS 5000
#define KEEL_DB_PATH_MAX 4096

typedef struct keel_db {
    sqlite3 *h;
    int depth;             /* 1 inside keel_db_begin() .. commit/rollback */
    uint32_t busy_step_us; /* keel_db_busy_steps(); 0: SQLite's own busy handler */
} keel_db_t;

/* Opens (creating) PATH; ":memory:" works for tests. */
int keel_db_open(keel_db_t *db, const char *path, keel_errmsg_t *msg);
void keel_db_close(keel_db_t *db);
static inline sqlite3 *keel_db_handle(keel_db_t *db)
{
    return db->h;
}

/* Waits for another connection's lock in steps of step_us (1..100000), for at most
 * KEEL_DB_BUSY_MS per statement, instead of SQLite's own busy handler, which sleeps 1, 2, 5,
 * 10, 15, 20, 25 ... ms: a connection that meets another one's commit (a millisecond or two)
 * would wait five to ten, on whatever thread runs it. db must stay where it is afterwards. */
void keel_db_busy_steps(keel_db_t *db, uint32_t step_us);

/* Runs one or more statements that return no rows (schema, pragmas, simple writes). */
int keel_db_exec(keel_db_t *db, const char *sql, keel_errmsg_t *msg);

/* BEGIN IMMEDIATE (takes the write lock now, so a later statement cannot fail with
 * BUSY halfway), COMMIT, ROLLBACK. Nesting is refused (KEEL_EINVAL). */
int keel_db_begin(keel_db_t *db, keel_errmsg_t *msg);
int keel_db_commit(keel_db_t *db, keel_errmsg_t *msg);
void keel_db_rollback(keel_db_t *db);
static inline bool keel_db_in_tx(const keel_db_t *db)
{
    return db->depth > 0;
}

/* Prepares SQL (the statement must be finalized by the caller). */
int keel_db_prepare(keel_db_t *db, const char *sql, sqlite3_stmt **out, keel_errmsg_t *msg);

/* Maps an SQLite result code: OK/ROW/DONE -> 0, BUSY/LOCKED -> KEEL_EBUSY,
 * CONSTRAINT -> KEEL_EEXISTS, FULL -> KEEL_EFULL, CORRUPT/NOTADB -> KEEL_ECORRUPT,
 * NOMEM -> KEEL_ENOMEM, IOERR/CANTOPEN -> KEEL_EIO, anything else KEEL_EINVAL; and on
 * failure writes "what: sqlite's message" into msg (msg may be NULL). */
int keel_db_error(keel_db_t *db, int rc, const char *what, keel_errmsg_t *msg);

#endif
