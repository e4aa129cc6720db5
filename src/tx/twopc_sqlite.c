/* tx/twopc_sqlite.c - two-phase commit's SQLite participant (tx/twopc.h). */
#include "tx/twopc_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the SQLite participant ------------------------------------------------------------- */

static int sq_fault(keel_twopc_sqlite_t *s, keel_errmsg_t *msg)
{
    sleep_ms(s->delay_ms);
    if (s->down || now_ms() < s->down_until_ms)
        return keel_errf(msg, KEEL_EAGAIN, "participant %s is down", s->name);
    return 0;
}

/* The durable state of id inside an open local transaction (or outside one). */
static int sq_state(keel_twopc_sqlite_t *s, const char *id, keel_twopc_state_t *st,
                    keel_errmsg_t *msg)
{
    sqlite3_stmt *q;
    int rc = keel_db_prepare(&s->db, "SELECT state FROM twopc_tx WHERE id = ?1", &q, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    *st = KEEL_TWOPC_NEW;
    if (step == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(q, 0);
        *st = strcmp(v, "prepared") == 0    ? KEEL_TWOPC_PREPARED
              : strcmp(v, "committed") == 0 ? KEEL_TWOPC_COMMITTED
                                            : KEEL_TWOPC_ABORTED;
        step = SQLITE_DONE;
    }
    rc = step == SQLITE_DONE ? 0 : keel_db_error(&s->db, step, "2pc state", msg);
    sqlite3_finalize(q);
    return rc;
}

static int sq_write(keel_twopc_sqlite_t *s, const char *sql, const char *id, const uint8_t *in,
                    size_t len, keel_errmsg_t *msg)
{
    sqlite3_stmt *q;
    int rc = keel_db_prepare(&s->db, sql, &q, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now_ms());
    if (in)
        sqlite3_bind_blob(q, 3, in, (int)len, SQLITE_STATIC);
    int step = sqlite3_step(q);
    rc = step == SQLITE_DONE ? 0 : keel_db_error(&s->db, step, "2pc record", msg);
    sqlite3_finalize(q);
    return rc;
}

static int sq_prepare(void *data, const char *id, const uint8_t *input, size_t len, bool *yes,
                      keel_errmsg_t *msg)
{
    keel_twopc_sqlite_t *s = data;
    int rc = sq_fault(s, msg);
    if (rc != 0 || (rc = keel_db_begin(&s->db, msg)) != 0)
        return rc;
    keel_twopc_state_t st;
    rc = sq_state(s, id, &st, msg);
    if (rc == 0 && st != KEEL_TWOPC_NEW) { /* a repeat */
        keel_db_rollback(&s->db);
        *yes = st != KEEL_TWOPC_ABORTED;
        return 0;
    }
    if (rc == 0)
        rc = s->ops->prepare(&s->db, id, input, len, s->data, msg);
    if (rc == 0)
        rc = sq_write(s,
                      "INSERT INTO twopc_tx (id, state, prepared_ms, input) "
                      "VALUES (?1, 'prepared', ?2, ?3)",
                      id, input ? input : (const uint8_t *)"", len, msg);
    if (rc == 0) {
        rc = keel_db_commit(&s->db, msg);
        *yes = rc == 0;
        return rc;
    }
    keel_db_rollback(&s->db);
    if (rc != KEEL_EREJECTED)
        return rc;
    /* the business said no: a tombstone, so a repeat says no again */
    if ((rc = keel_db_begin(&s->db, msg)) != 0)
        return rc;
    rc = sq_write(s, "INSERT INTO twopc_tx (id, state, resolved_ms) VALUES (?1, 'aborted', ?2)", id,
                  NULL, 0, msg);
    if (rc == 0)
        rc = keel_db_commit(&s->db, msg);
    else
        keel_db_rollback(&s->db);
    *yes = false;
    return rc;
}

static int sq_resolve(keel_twopc_sqlite_t *s, const char *id, bool commit, keel_errmsg_t *msg)
{
    int rc = sq_fault(s, msg);
    if (rc != 0 || (rc = keel_db_begin(&s->db, msg)) != 0)
        return rc;
    keel_twopc_state_t st;
    rc = sq_state(s, id, &st, msg);
    if (rc == 0 && st == KEEL_TWOPC_PREPARED) {
        rc = commit ? s->ops->commit(&s->db, id, s->data, msg)
                    : s->ops->abort(&s->db, id, s->data, msg);
        if (rc == 0)
            rc = sq_write(s,
                          commit ? "UPDATE twopc_tx SET state = 'committed', resolved_ms = ?2 "
                                   "WHERE id = ?1"
                                 : "UPDATE twopc_tx SET state = 'aborted', resolved_ms = ?2 "
                                   "WHERE id = ?1",
                          id, NULL, 0, msg);
    } else if (rc == 0 && st == KEEL_TWOPC_NEW && !commit) {
        rc = sq_write(s, "INSERT INTO twopc_tx (id, state, resolved_ms) VALUES (?1, 'aborted', ?2)",
                      id, NULL, 0, msg);
    } else if (rc == 0 && st != (commit ? KEEL_TWOPC_COMMITTED : KEEL_TWOPC_ABORTED)) {
        rc = keel_errf(msg, KEEL_EPROTO, "2pc %s at %s: %s while %s", id, s->name,
                       commit ? "commit" : "abort", keel_twopc_state_name(st));
    }
    if (rc == 0)
        return keel_db_commit(&s->db, msg);
    keel_db_rollback(&s->db);
    return rc;
}

static int sq_commit(void *data, const char *id, keel_errmsg_t *msg)
{
    return sq_resolve(data, id, true, msg);
}

static int sq_abort(void *data, const char *id, keel_errmsg_t *msg)
{
    return sq_resolve(data, id, false, msg);
}

static int sq_state_op(void *data, const char *id, keel_twopc_state_t *st, keel_errmsg_t *msg)
{
    keel_twopc_sqlite_t *s = data;
    /* part of the same call as the action that follows: down fails it, no extra delay */
    if (s->down || now_ms() < s->down_until_ms)
        return keel_errf(msg, KEEL_EAGAIN, "participant %s is down", s->name);
    return sq_state(s, id, st, msg);
}

static const keel_twopc_participant_ops_t SQ_OPS = {
    .prepare = sq_prepare, .commit = sq_commit, .abort = sq_abort, .state = sq_state_op};

int keel_twopc_sqlite_open(keel_twopc_sqlite_t *s, const char *path, const char *name,
                           const keel_twopc_sqlite_ops_t *ops, void *data, keel_errmsg_t *msg)
{
    memset(s, 0, sizeof(*s));
    if (!keel_twopc_id_valid(name, KEEL_TWOPC_NAME_BYTES_MAX) || ops == NULL || !ops->prepare ||
        !ops->commit || !ops->abort)
        return keel_errf(msg, KEEL_EINVAL, "2pc sqlite participant: a valid name and three ops");
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->ops = ops;
    s->data = data;
    int rc = keel_db_open(&s->db, path, msg);
    if (rc != 0)
        return rc;
    rc = keel_db_exec(&s->db,
                      "CREATE TABLE IF NOT EXISTS twopc_tx (id TEXT PRIMARY KEY, state TEXT NOT "
                      "NULL CHECK (state IN ('prepared', 'committed', 'aborted')), input BLOB, "
                      "prepared_ms INTEGER, resolved_ms INTEGER)",
                      msg);
    if (rc != 0)
        keel_db_close(&s->db);
    return rc;
}

void keel_twopc_sqlite_close(keel_twopc_sqlite_t *s)
{
    keel_db_close(&s->db);
}

keel_twopc_participant_t keel_twopc_sqlite_participant(keel_twopc_sqlite_t *s)
{
    return (keel_twopc_participant_t){.name = s->name, .ops = &SQ_OPS, .data = s};
}

/* Prepared transactions whose prepare is at or before before_ms (Unix). */
static int in_doubt_before(keel_twopc_sqlite_t *s, char (*ids)[KEEL_TWOPC_ID_BYTES_MAX + 1],
                           size_t max, size_t *n, keel_ms_t before_ms, keel_errmsg_t *msg)
{
    sqlite3_stmt *q;
    *n = 0;
    int rc = keel_db_prepare(
        &s->db, "SELECT id FROM twopc_tx WHERE state = 'prepared' AND prepared_ms <= ?1", &q, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(q, 1, before_ms);
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (*n < max)
            snprintf(ids[*n], KEEL_TWOPC_ID_BYTES_MAX + 1, "%s",
                     (const char *)sqlite3_column_text(q, 0));
        (*n)++;
    }
    rc = step == SQLITE_DONE ? 0 : keel_db_error(&s->db, step, "2pc in doubt", msg);
    sqlite3_finalize(q);
    return rc;
}

int keel_twopc_sqlite_in_doubt(keel_twopc_sqlite_t *s, char (*ids)[KEEL_TWOPC_ID_BYTES_MAX + 1],
                               size_t max, size_t *n, keel_errmsg_t *msg)
{
    return in_doubt_before(s, ids, max, n, KEEL_MS_NEVER, msg);
}
static int resolve_each(keel_twopc_sqlite_t *s, keel_twopcs_t *t,
                        char (*ids)[KEEL_TWOPC_ID_BYTES_MAX + 1], size_t n, uint32_t *resolved,
                        keel_errmsg_t *msg)
{
    int rc;
    keel_twopc_participant_t p = keel_twopc_sqlite_participant(s);
    for (size_t i = 0; i < n; i++) {
        keel_twopc_part_t m;
        keel_twopc_part_init(&m, &t->cfg.tx, (uint64_t)i);
        keel_twopc_part_restore(&m, KEEL_TWOPC_PREPARED, 0);
        keel_twopc_part_update_t u;
        keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_TICK, .now_ms = KEEL_MS_NEVER - 1};
        keel_twopc_part_step(&m, &ev, &u);
        assert(u.action == KEEL_TWOPC_PACT_INQUIRE);
        bool commit = false;
        rc = keel_twopcs_inquire(t, ids[i], &commit, msg);
        if (rc != 0)
            return rc;
        ev = (keel_twopc_part_ev_t){
            .type = KEEL_TWOPC_PEV_INQUIRED, .now_ms = now_ms(), .commit = commit};
        rc = keel_twopc_part_step(&m, &ev, &u);
        if (rc != 0)
            return keel_errf(msg, rc, "2pc %s: inquiry answer refused", ids[i]);
        keel_errmsg_t why = {{0}};
        if (keel__twopc_part_drive(&p, &m, &u, ids[i], NULL, 0, &why) == 0)
            return keel_errf(msg, KEEL_EIO, "2pc %s: resolving at %s failed: %s", ids[i], s->name,
                             why.text);
        (*resolved)++;
    }
    return 0;
}

int keel_twopc_sqlite_recover(keel_twopc_sqlite_t *s, keel_twopcs_t *t, keel_ms_t min_age_ms,
                              uint32_t *resolved, keel_errmsg_t *msg)
{
    enum { BATCH = 256 };
    char(*ids)[KEEL_TWOPC_ID_BYTES_MAX + 1] = malloc(BATCH * sizeof(*ids));
    size_t n;
    *resolved = 0;
    if (ids == NULL)
        return KEEL_ENOMEM;
    int rc = in_doubt_before(s, ids, BATCH, &n, now_ms() - min_age_ms, msg);
    if (rc == 0)
        rc = resolve_each(s, t, ids, n < BATCH ? n : BATCH, resolved, msg);
    free(ids);
    return rc;
}
