/* inbox.c - the inbox table: one row per (consumer, message id) processed. */
#include "tx/inbox.h"

#include "runtime/clock.h"

#include <string.h>

/* WITHOUT ROWID: the primary key is the only index and the lookup the claim makes. */
static const char schema[] = "CREATE TABLE IF NOT EXISTS keel_inbox ("
                             " consumer TEXT NOT NULL,"
                             " msg_id BLOB NOT NULL,"
                             " at_unix_ms INTEGER NOT NULL,"
                             " PRIMARY KEY (consumer, msg_id)) WITHOUT ROWID;"
                             "CREATE INDEX IF NOT EXISTS keel_inbox_at ON keel_inbox(at_unix_ms);";

int keel_inbox_init(keel_db_t *db, keel_errmsg_t *msg)
{
    return keel_db_exec(db, schema, msg);
}

int keel_inbox_claim(keel_db_t *db, const char *consumer, const void *id, size_t id_bytes,
                     keel_errmsg_t *msg)
{
    size_t cn = strlen(consumer);
    if (cn == 0 || cn > KEEL_INBOX_CONSUMER_BYTES_MAX || id_bytes == 0 ||
        id_bytes > KEEL_INBOX_ID_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "inbox: a consumer of 1 to %u bytes, an id of 1 to %u",
                         KEEL_INBOX_CONSUMER_BYTES_MAX, KEEL_INBOX_ID_BYTES_MAX);
    if (sqlite3_get_autocommit(keel_db_handle(db)))
        return keel_errf(msg, KEEL_EINVAL, "inbox: claim inside the effect's transaction");
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "INSERT OR IGNORE INTO keel_inbox (consumer, msg_id, at_unix_ms)"
                             " VALUES (?1, ?2, ?3)",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, consumer, (int)cn, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, (int)id_bytes, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, keel_clock_unix_ms());
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return keel_db_error(db, src, "inbox: claim", msg);
    return sqlite3_changes(keel_db_handle(db)) == 1 ? 0 : KEEL_EEXISTS;
}

int keel_inbox_process(keel_db_t *db, const char *consumer, const void *id, size_t id_bytes,
                       keel_inbox_effect_fn effect, void *data, keel_errmsg_t *msg)
{
    int rc = keel_db_begin(db, msg);
    if (rc != 0)
        return rc;
    rc = keel_inbox_claim(db, consumer, id, id_bytes, msg);
    if (rc == KEEL_EEXISTS) {
        keel_db_rollback(db); /* nothing was written */
        return KEEL_EEXISTS;
    }
    if (rc == 0)
        rc = effect(db, data, msg);
    if (rc == 0)
        rc = keel_db_commit(db, msg); /* a failed commit rolls back itself */
    else
        keel_db_rollback(db);
    return rc;
}

int keel_inbox_prune(keel_db_t *db, int64_t before_unix_ms, int64_t *deleted, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, "DELETE FROM keel_inbox WHERE at_unix_ms < ?1", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, before_unix_ms);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return keel_db_error(db, src, "inbox: prune", msg);
    if (deleted != NULL)
        *deleted = sqlite3_changes(keel_db_handle(db));
    return 0;
}
