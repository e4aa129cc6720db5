/* projection.c - a consumer group feeding an SQLite read model; the checkpoint commits with
 * the read model's change, acknowledgements follow the commit. */
#include "tx/projection.h"

#include "base/log.h"
#include "base/num.h"
#include "client/blocking.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_SETUP = 1, ST_SETTLE, ST_READ, ST_ACK, ST_WAIT, ST_STOPPED };

#define SETTLE_PAGE 100u        /* pending entries looked at per XPENDING */
#define SETTLE_ROUNDS_MAX 1000u /* pages per (re)start */

/* The batch's outcome, kept until its acknowledgements are answered. */
typedef struct dead_row {
    keel_stream_id_t id;
    char error[KEEL_PROJECTION_ERROR_BYTES_MAX + 1];
} dead_row_t;

typedef struct acks {
    keel_stream_id_t *ok; /* acknowledge: applied, skipped, or at/before the checkpoint */
    size_t ok_n;
    dead_row_t *dead; /* dead-letter */
    size_t dead_n;
    bool settle_more;       /* the settle page was full: look again */
    uint32_t settle_rounds; /* pages settled since the last setup */
} acks_t;

static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS keel_projection ("
    " name TEXT PRIMARY KEY, last_id TEXT NOT NULL, applied INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS keel_projection_dead ("
    " name TEXT NOT NULL, id TEXT NOT NULL, error TEXT NOT NULL, PRIMARY KEY (name, id));";

static void on_setup(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void on_settle(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void on_ack(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void setup(keel_projection_t *p);
static void read_next(keel_projection_t *p);

static void on_timer(keel_timer_t *t, void *data)
{
    (void)t;
    keel_projection_t *p = data;
    bool linger = p->lingering;
    p->lingering = false;
    if (p->stopping)
        return;
    if (linger)
        read_next(p);
    else
        setup(p);
}

/* The projection's one timer (a restart's wait, or a linger), made at its first use: a
 * failed start leaves no handle. */
static void timer_start(keel_projection_t *p, keel_ms_t after_ms, bool linger)
{
    if (!p->timer_open) {
        int rc = keel_timer_init(p->loop, &p->timer);
        assert(rc == 0); /* uv_timer_init fails only on bad arguments */
        (void)rc;
        p->timer_open = true;
    }
    p->lingering = linger;
    keel_timer_start(&p->timer, after_ms, 0, on_timer, p);
}

keel_projection_config_t keel_projection_config_default(void)
{
    return (keel_projection_config_t){.consumer = "projector",
                                      .batch_events_max = 256,
                                      .block_ms = 1000,
                                      .retry_ms = 200,
                                      .lag_every_ms = 1000};
}

/* ---- sending ------------------------------------------------------------------------------ */

static int send_cmd(keel_projection_t *p, size_t argc, const char *const *argv,
                    keel_client_reply_fn fn)
{
    /* a BLOCKed read is answered after block_ms at the latest; the rest at once */
    keel_ms_t timeout_ms = p->cfg.block_ms + 10000;
    int rc = keel_client_command_timeout(&p->cl, argc, argv, NULL, timeout_ms, fn, p);
    if (rc == 0)
        p->waiting++;
    else
        p->batch_err = rc;
    return rc;
}

static void restart_later(keel_projection_t *p, const char *why, int err)
{
    if (p->stopping)
        return;
    keel_log_warn("projection restarts", KF_STR("projection", p->name), KF_STR("why", why),
                  KF_STR("err", keel_err_name(err)), KF_STR("reply", p->last_error));
    p->last_error[0] = 0;
    p->stats.restarts++;
    if (p->m_restarts)
        keel_counter_inc(p->m_restarts);
    p->state = ST_WAIT;
    timer_start(p, p->cfg.retry_ms, false);
}

static bool is_error(const keel_resp_value_t *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->type == KEEL_RESP_ERROR && r->str.len >= n && memcmp(r->str.ptr, prefix, n) == 0;
}

/* A step's replies: counts them down; the last one decides. Returns true when the step
 * is complete and went well. */
static bool step_reply(keel_projection_t *p, int status, const keel_resp_value_t *r,
                       const char *ok_error)
{
    assert(p->waiting > 0);
    p->waiting--;
    if (status != 0)
        p->batch_err = status;
    else if (r->type == KEEL_RESP_ERROR && !(ok_error && is_error(r, ok_error))) {
        p->batch_err = KEEL_EIO;
        snprintf(p->last_error, sizeof(p->last_error), "%.*s",
                 (int)(r->str.len < 120 ? r->str.len : 120), (const char *)r->str.ptr);
    }
    if (p->waiting > 0)
        return false;
    int err = p->batch_err;
    p->batch_err = 0;
    if (err != 0) {
        if (err != KEEL_ECANCELED)
            restart_later(p, "a command failed", err);
        return false;
    }
    return !p->stopping;
}

/* ---- SQLite ------------------------------------------------------------------------------- */

static int sql_step(keel_db_t *db, const char *sql, const char *a, const char *b, const char *c,
                    int64_t n, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, sql, &st, msg);
    if (rc != 0)
        return rc;
    const char *s[3] = {a, b, c};
    int at = 1;
    for (int i = 0; i < 3; i++)
        if (s[i])
            sqlite3_bind_text(st, at++, s[i], -1, SQLITE_TRANSIENT);
    if (n >= 0)
        sqlite3_bind_int64(st, at, n);
    int src = sqlite3_step(st);
    rc = src == SQLITE_DONE || src == SQLITE_ROW ? 0 : keel_db_error(db, src, sql, msg);
    sqlite3_finalize(st);
    return rc;
}

int keel_projection_read_checkpoint(keel_db_t *db, const char *name, keel_stream_id_t *out,
                                    uint64_t *applied, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    *out = (keel_stream_id_t){0, 0};
    if (applied)
        *applied = 0;
    int rc = keel_db_prepare(db, "SELECT last_id, applied FROM keel_projection WHERE name = ?", &st,
                             msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (t == NULL || keel_stream_id_parse(t, n, 0, 1, NULL, out) != 0)
            rc = keel_errf(msg, KEEL_ECORRUPT, "checkpoint of %s is not a stream id", name);
        if (applied)
            *applied = (uint64_t)sqlite3_column_int64(st, 1);
    } else if (src != SQLITE_DONE) {
        rc = keel_db_error(db, src, "reading the checkpoint", msg);
    }
    sqlite3_finalize(st);
    return rc;
}

/* The dead letter recorded for id, if any: 1 with its error in out, 0 if none. */
static int dead_lookup(keel_projection_t *p, keel_stream_id_t id, char *out, size_t cap)
{
    char idt[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    keel_stream_id_format(idt, id);
    sqlite3_stmt *st;
    if (keel_db_prepare(p->db, "SELECT error FROM keel_projection_dead WHERE name = ? AND id = ?",
                        &st, NULL) != 0)
        return 0;
    sqlite3_bind_text(st, 1, p->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, idt, -1, SQLITE_TRANSIENT);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return found;
}

/* Creates the tables, the read model and the checkpoint row; with `rebuild`, drops the
 * read model first and sets the checkpoint back to 0-0. One transaction. */
static int prepare_db(keel_projection_t *p, bool rebuild, keel_errmsg_t *msg)
{
    int rc = keel_db_begin(p->db, msg);
    if (rc != 0)
        return rc;
    rc = keel_db_exec(p->db, SCHEMA, msg);
    if (rc == 0 && rebuild && p->h.reset)
        rc = p->h.reset(p->h.data, p->db, msg);
    if (rc == 0 && p->h.init)
        rc = p->h.init(p->h.data, p->db, msg);
    if (rc == 0 && rebuild)
        rc = sql_step(p->db, "DELETE FROM keel_projection_dead WHERE name = ?", p->name, NULL, NULL,
                      -1, msg);
    if (rc == 0)
        rc = sql_step(p->db,
                      rebuild ? "INSERT OR REPLACE INTO keel_projection VALUES (?, '0-0', 0)"
                              : "INSERT OR IGNORE INTO keel_projection VALUES (?, '0-0', 0)",
                      p->name, NULL, NULL, -1, msg);
    if (rc == 0)
        rc = keel_db_commit(p->db, msg);
    if (rc != 0) {
        keel_db_rollback(p->db);
        return rc;
    }
    return keel_projection_read_checkpoint(p->db, p->name, &p->checkpoint, NULL, msg);
}

/* ---- start: the group at the checkpoint, leftovers settled --------------------------------- */

static void setup(keel_projection_t *p)
{
    keel_errmsg_t msg = {{0}};
    p->batch_short = false;
    if (p->rebuild_due) {
        int rc = prepare_db(p, true, &msg);
        if (rc != 0) {
            keel_log_error("projection rebuild failed", KF_STR("projection", p->name),
                           KF_STR("msg", msg.text));
            return restart_later(p, "rebuild", rc);
        }
        p->rebuild_due = false;
        p->stats.rebuilds++;
        if (p->m_rebuilds)
            keel_counter_inc(p->m_rebuilds);
    }
    char ck[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    keel_stream_id_format(ck, p->checkpoint);
    p->state = ST_SETUP;
    p->batch_err = 0;
    ((acks_t *)p->acks)->settle_rounds = 0;
    const char *create[] = {"XGROUP", "CREATE", p->stream, p->name, ck, "MKSTREAM"};
    const char *setid[] = {"XGROUP", "SETID", p->stream, p->name, ck};
    const char *dl[] = {"KEEL.XDEADLETTER", p->stream,     p->name, "MAXDELIVERIES", "1",
                        "STREAM",           p->dead_letter};
    if (send_cmd(p, 6, create, on_setup) != 0 || send_cmd(p, 5, setid, on_setup) != 0 ||
        send_cmd(p, 7, dl, on_setup) != 0) {
        if (p->waiting == 0)
            restart_later(p, "could not send", p->batch_err);
    }
}

static void settle(keel_projection_t *p)
{
    char ck[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1], count[16];
    if (p->checkpoint.ms == 0 && p->checkpoint.seq == 0)
        return read_next(p);
    keel_stream_id_format(ck, p->checkpoint);
    snprintf(count, sizeof(count), "%u", SETTLE_PAGE);
    p->state = ST_SETTLE;
    const char *argv[] = {"XPENDING", p->stream, p->name, "-", ck, count};
    if (send_cmd(p, 6, argv, on_settle) != 0)
        restart_later(p, "could not send", p->batch_err);
}

static void on_setup(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    if (step_reply(p, status, r, "BUSYGROUP"))
        settle(p);
}

static void send_acks(keel_projection_t *p);

/* XPENDING's page of entries at or before the checkpoint: all were committed, so each is
 * acknowledged, or dead-lettered if the dead list has it. */
static void on_settle(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    if (!step_reply(p, status, r, NULL))
        return;
    acks_t *a = p->acks;
    a->ok_n = a->dead_n = 0;
    if (r->type != KEEL_RESP_ARRAY)
        return restart_later(p, "unexpected XPENDING reply", KEEL_EPROTO);
    for (size_t i = 0; i < r->elems_len && i < SETTLE_PAGE; i++) {
        const keel_resp_value_t *e = &r->elems[i];
        keel_stream_id_t id;
        if (e->type != KEEL_RESP_ARRAY || e->elems_len < 1 ||
            keel_stream_id_parse(e->elems[0].str.ptr, e->elems[0].str.len, 0, 1, NULL, &id) != 0)
            return restart_later(p, "unexpected XPENDING entry", KEEL_EPROTO);
        dead_row_t *d = &a->dead[a->dead_n];
        if (dead_lookup(p, id, d->error, sizeof(d->error))) {
            d->id = id;
            a->dead_n++;
        } else {
            a->ok[a->ok_n++] = id;
        }
    }
    /* Bounded: an entry that neither XACK nor KEEL.XNACK can take out of the PEL (a
     * dead-letter key of another type) must not loop here; `>` does not need it gone. */
    a->settle_more = r->elems_len >= SETTLE_PAGE && ++a->settle_rounds < SETTLE_ROUNDS_MAX;
    if (a->ok_n + a->dead_n == 0)
        return read_next(p);
    send_acks(p);
}

/* ---- reading and applying ----------------------------------------------------------------- */

/*
 * The group's position can pass the checkpoint without this process: a read of a killed
 * predecessor that was in the log, or still blocked on the server, when it died delivers
 * entries to nobody once it applies (the server drops a blocked read of a closed
 * connection at its next 5 ms tick, not at once). `>` would then start after them. So each
 * batch is checked against the stream itself: its first entry after the checkpoint must be
 * the stream's first entry after the checkpoint (XRANGE (ckpt + COUNT 1, sent just before
 * the read, or after it when the stream had nothing then). A gap moves the group back to
 * the checkpoint (setup), which delivers the skipped entries again.
 */
static void take_first(keel_projection_t *p, int status, const keel_resp_value_t *r)
{
    p->first_known = false;
    if (status == 0 && r->type == KEEL_RESP_ARRAY && r->elems_len == 1 &&
        r->elems[0].type == KEEL_RESP_ARRAY && r->elems[0].elems_len == 2)
        p->first_known =
            keel_stream_id_parse(r->elems[0].elems[0].str.ptr, r->elems[0].elems[0].str.len, 0, 1,
                                 NULL, &p->first_after) == 0;
}

static void on_first(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    take_first(p, status, r);
    step_reply(p, status, r, NULL); /* the read's reply comes next and decides */
}

static int send_first(keel_projection_t *p, keel_client_reply_fn fn)
{
    char from[KEEL_STREAM_ID_TEXT_BYTES_MAX + 2] = "(";
    keel_stream_id_format(from + 1, p->checkpoint);
    const char *argv[] = {"XRANGE", p->stream, from, "+", "COUNT", "1"};
    return send_cmd(p, 6, argv, fn);
}

/* XRANGE for the gap check, then the read, last in its pipeline (a command behind a
 * BLOCKed read that is answered at once waits for the server's 5 ms blocked-read tick). */
static int send_read(keel_projection_t *p)
{
    char count[16], block[24];
    snprintf(count, sizeof(count), "%u", p->cfg.batch_events_max);
    snprintf(block, sizeof(block), "%llu", (unsigned long long)p->cfg.block_ms);
    const char *argv[] = {"XREADGROUP", "GROUP", p->name,   p->consumer, "COUNT", count,
                          "BLOCK",      block,   "STREAMS", p->stream,   ">"};
    p->state = ST_READ;
    int rc = send_first(p, on_first);
    return rc != 0 ? rc : send_cmd(p, 11, argv, on_read);
}

static void read_next(keel_projection_t *p)
{
    if (p->stopping)
        return;
    if (p->rebuild_due)
        return setup(p);
    if (send_read(p) != 0 && p->waiting == 0)
        restart_later(p, "could not send", p->batch_err);
}

static const keel_resp_value_t *field(const keel_resp_value_t *f, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < f->elems_len; i += 2)
        if (f->elems[i].str.len == n && memcmp(f->elems[i].str.ptr, name, n) == 0)
            return &f->elems[i + 1];
    return NULL;
}

static bool transient(int rc)
{
    return rc == KEEL_EIO || rc == KEEL_EBUSY || rc == KEEL_EFULL || rc == KEEL_ENOMEM ||
           rc == KEEL_ECORRUPT;
}

/* Applies one entry inside the batch's transaction. 0 (applied or dead-lettered), or a
 * failure that aborts the batch. */
static int apply_one(keel_projection_t *p, keel_stream_id_t id, const keel_resp_value_t *fields)
{
    acks_t *a = p->acks;
    keel_projection_event_t ev = {.id = id, .agg = ""};
    const keel_resp_value_t *v;
    if ((v = field(fields, "agg")) != NULL)
        ev.agg = (const char *)v->str.ptr, ev.agg_len = v->str.len;
    if ((v = field(fields, "type")) != NULL)
        ev.ev.type = (const char *)v->str.ptr, ev.ev.type_len = v->str.len;
    if ((v = field(fields, "data")) != NULL)
        ev.ev.data = v->str.ptr, ev.ev.data_len = v->str.len;
    if ((v = field(fields, "meta")) != NULL)
        ev.ev.meta = v->str.ptr, ev.ev.meta_len = v->str.len;
    int64_t version = 0;
    if ((v = field(fields, "version")) != NULL)
        keel_parse_i64(v->str.ptr, v->str.len, &version);
    ev.ev.version = version > 0 ? (uint64_t)version : 0;
    if (ev.ev.type == NULL)
        ev.ev.type = "";
    keel_errmsg_t msg = {{0}};
    int rc = keel_db_exec(p->db, "SAVEPOINT keel_event", &msg);
    if (rc != 0)
        return rc;
    rc = p->h.apply(p->h.data, p->db, &ev, &msg);
    if (rc == 0) {
        a->ok[a->ok_n++] = id;
        return keel_db_exec(p->db, "RELEASE keel_event", &msg);
    }
    if (transient(rc)) {
        keel_log_warn("projection handler failed transiently", KF_STR("projection", p->name),
                      KF_STR("msg", msg.text));
        return rc;
    }
    int rrc = keel_db_exec(p->db, "ROLLBACK TO keel_event; RELEASE keel_event", NULL);
    if (rrc != 0)
        return rrc;
    dead_row_t *d = &a->dead[a->dead_n++];
    d->id = id;
    snprintf(d->error, sizeof(d->error), "%s: %.150s", keel_err_name(rc), msg.text);
    char idt[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    keel_stream_id_format(idt, id);
    return sql_step(p->db, "INSERT OR REPLACE INTO keel_projection_dead VALUES (?, ?, ?)", p->name,
                    idt, d->error, -1, NULL);
}

/* The batch in one transaction with the new checkpoint. 0, or a failure (rolled back). */
static int apply_batch(keel_projection_t *p, const keel_resp_value_t *entries,
                       keel_stream_id_t *last, int64_t *applied_out)
{
    acks_t *a = p->acks;
    *last = p->checkpoint;
    int64_t applied = 0;
    int rc = keel_db_begin(p->db, NULL);
    for (size_t i = 0; i < entries->elems_len && rc == 0; i++) {
        const keel_resp_value_t *e = &entries->elems[i];
        keel_stream_id_t id;
        if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 ||
            keel_stream_id_parse(e->elems[0].str.ptr, e->elems[0].str.len, 0, 1, NULL, &id) != 0) {
            rc = KEEL_EPROTO;
            break;
        }
        if (keel_stream_id_cmp(id, *last) <= 0 || e->elems[1].type != KEEL_RESP_ARRAY) {
            a->ok[a->ok_n++] = id; /* applied before, or deleted from the stream */
            continue;
        }
        size_t dead_before = a->dead_n;
        rc = apply_one(p, id, &e->elems[1]);
        applied += rc == 0 && a->dead_n == dead_before;
        *last = id;
    }
    char ck[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    keel_stream_id_format(ck, *last);
    if (rc == 0)
        rc = sql_step(p->db,
                      "UPDATE keel_projection SET last_id = ?1, applied = applied + ?3"
                      " WHERE name = ?2",
                      ck, p->name, NULL, applied, NULL);
    *applied_out = applied;
    return rc;
}

/* The batch's first entry after the checkpoint (false if none). */
static bool batch_first(const keel_projection_t *p, const keel_resp_value_t *entries,
                        keel_stream_id_t *out)
{
    for (size_t i = 0; i < entries->elems_len; i++) {
        const keel_resp_value_t *e = &entries->elems[i];
        if (e->type == KEEL_RESP_ARRAY && e->elems_len == 2 &&
            keel_stream_id_parse(e->elems[0].str.ptr, e->elems[0].str.len, 0, 1, NULL, out) == 0 &&
            keel_stream_id_cmp(*out, p->checkpoint) > 0)
            return true;
    }
    return false;
}

static void apply_and_ack(keel_projection_t *p, const keel_resp_value_t *entries);

static void on_gap(keel_projection_t *p)
{
    p->stats.gaps++;
    restart_later(p, "entries after the checkpoint were delivered elsewhere", KEEL_ECONFLICT);
}

/* The batch was held while the stream's first entry after the checkpoint was asked. */
static void on_verify(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    keel_client_reply_t held = p->held;
    p->held = (keel_client_reply_t){0};
    keel_stream_id_t first;
    take_first(p, status, r);
    if (step_reply(p, status, r, NULL)) {
        const keel_resp_value_t *entries = &held.v->elems[0].elems[1];
        if (batch_first(p, entries, &first) && p->first_known &&
            keel_stream_id_cmp(first, p->first_after) == 0)
            apply_and_ack(p, entries);
        else
            on_gap(p);
    }
    keel_client_reply_free(&held);
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    if (!step_reply(p, status, r, NULL))
        return;
    if (p->rebuild_due)
        return setup(p); /* the entries read are delivered again after the rebuild */
    if (r->type == KEEL_RESP_NIL_ARRAY || r->type == KEEL_RESP_NIL) {
        keel_ms_t now = keel_loop_now_ms(p->loop);
        if (now - p->lag_at_ms < p->cfg.lag_every_ms)
            return read_next(p);
        acks_t *a = p->acks;
        a->ok_n = a->dead_n = 0;
        a->settle_more = false;
        return send_acks(p); /* nothing to acknowledge: reads the lag */
    }
    if (r->type != KEEL_RESP_ARRAY || r->elems_len != 1 || r->elems[0].elems_len != 2 ||
        r->elems[0].elems[1].type != KEEL_RESP_ARRAY)
        return restart_later(p, "unexpected XREADGROUP reply", KEEL_EPROTO);
    const keel_resp_value_t *entries = &r->elems[0].elems[1];
    keel_stream_id_t first;
    if (!batch_first(p, entries, &first) || p->first_known)
        return p->first_known && keel_stream_id_cmp(first, p->first_after) != 0
                   ? on_gap(p)
                   : apply_and_ack(p, entries);
    /* nothing followed the checkpoint when the read was sent: ask again now */
    int rc = keel_client_reply_copy(r, &p->held);
    if (rc == 0)
        rc = send_first(p, on_verify);
    if (rc != 0) {
        keel_client_reply_free(&p->held);
        p->held = (keel_client_reply_t){0};
        restart_later(p, "could not verify the batch", rc);
    }
}

static void apply_and_ack(keel_projection_t *p, const keel_resp_value_t *entries)
{
    acks_t *a = p->acks;
    a->ok_n = a->dead_n = 0;
    a->settle_more = false;
    keel_stream_id_t last;
    int64_t applied = 0;
    int rc = apply_batch(p, entries, &last, &applied);
    keel_errmsg_t msg = {{0}};
    if (rc == 0)
        rc = keel_db_commit(p->db, &msg);
    if (rc != 0) {
        keel_db_rollback(p->db);
        return restart_later(p, "the batch's transaction failed", rc);
    }
    size_t dead = a->dead_n;
    p->checkpoint = last;
    p->stats.batches++;
    p->stats.dead += dead;
    if (p->m_dead)
        keel_counter_add(p->m_dead, dead);
    p->stats.applied += (uint64_t)applied;
    if (p->m_applied)
        keel_counter_add(p->m_applied, (uint64_t)applied);
    p->batch_short = p->cfg.linger_ms > 0 && entries->elems_len < p->cfg.batch_events_max;
    send_acks(p);
}

/* ---- acknowledging, dead-lettering, the lag ------------------------------------------------ */

static void send_acks(keel_projection_t *p)
{
    acks_t *a = p->acks;
    p->state = ST_ACK;
    if (a->ok_n > 0) {
        static const size_t head = 3;
        const char **argv = malloc((head + a->ok_n) * sizeof(*argv));
        char(*ids)[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1] = malloc(a->ok_n * sizeof(*ids));
        if (argv && ids) {
            argv[0] = "XACK", argv[1] = p->stream, argv[2] = p->name;
            for (size_t i = 0; i < a->ok_n; i++) {
                keel_stream_id_format(ids[i], a->ok[i]);
                argv[head + i] = ids[i];
            }
            send_cmd(p, head + a->ok_n, argv, on_ack);
        } else {
            p->batch_err = KEEL_ENOMEM;
        }
        free(argv);
        free(ids);
    }
    for (size_t i = 0; i < a->dead_n; i++) {
        char id[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
        keel_stream_id_format(id, a->dead[i].id);
        const char *argv[] = {"KEEL.XNACK", p->stream, p->name, id, "ERROR", a->dead[i].error};
        send_cmd(p, 6, argv, on_ack);
    }
    const char *info[] = {"XINFO", "GROUPS", p->stream};
    send_cmd(p, 3, info, on_ack);
    /* The next read goes in the same pipeline (one round trip instead of two). If an
     * acknowledgement fails, the read's reply sees the error and the projection restarts
     * from its checkpoint; what the read delivered is delivered again then. */
    if (p->batch_err == 0 && !a->settle_more && !p->rebuild_due && !p->stopping && !p->batch_short)
        send_read(p);
    if (p->waiting == 0)
        restart_later(p, "could not send", p->batch_err);
}

/* XINFO GROUPS: our group's lag (entries not yet delivered), when the server knows it. */
static void take_lag(keel_projection_t *p, const keel_resp_value_t *r)
{
    if (r->type != KEEL_RESP_ARRAY)
        return;
    for (size_t i = 0; i < r->elems_len; i++) {
        const keel_resp_value_t *g = &r->elems[i], *name, *lag, *pending;
        if (g->type != KEEL_RESP_ARRAY || (name = field(g, "name")) == NULL ||
            name->str.len != strlen(p->name) || memcmp(name->str.ptr, p->name, name->str.len))
            continue;
        lag = field(g, "lag");
        pending = field(g, "pending");
        if (lag && lag->type == KEEL_RESP_INT) {
            p->stats.lag_events =
                lag->integer + (pending && pending->type == KEEL_RESP_INT ? pending->integer : 0);
            if (p->m_lag)
                keel_gauge_set(p->m_lag, p->stats.lag_events);
        }
        p->lag_at_ms = keel_loop_now_ms(p->loop);
    }
}

static void on_ack(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    keel_projection_t *p = ctx;
    if (status == 0 && r->type == KEEL_RESP_ARRAY)
        take_lag(p, r); /* XINFO's (XACK and KEEL.XNACK answer integers) */
    if (!step_reply(p, status, r, NULL))
        return; /* not the last reply: a read followed, and its reply decides */
    acks_t *a = p->acks;
    if (a->settle_more) {
        a->settle_more = false;
        return settle(p);
    }
    if (p->batch_short) { /* linger_ms: let the next batch gather */
        p->batch_short = false;
        p->state = ST_WAIT;
        return timer_start(p, p->cfg.linger_ms, true);
    }
    read_next(p);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > KEEL_PROJECTION_NAME_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-'))
            return false;
    return true;
}

static int validate(const keel_projection_config_t *c, const keel_projection_handler_t *h,
                    keel_errmsg_t *msg)
{
    if (!name_ok(c->name) || !name_ok(c->consumer))
        return keel_errf(msg, KEEL_EINVAL, "projection and consumer names: [A-Za-z0-9_.-]{1,64}");
    if (c->stream == NULL || c->stream[0] == 0 || strlen(c->stream) > KEEL_PROJECTION_KEY_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "stream: 1..%u bytes", KEEL_PROJECTION_KEY_BYTES_MAX);
    if (c->dead_letter && strlen(c->dead_letter) > KEEL_PROJECTION_KEY_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "dead_letter: at most %u bytes",
                         KEEL_PROJECTION_KEY_BYTES_MAX);
    if (c->batch_events_max < 1 || c->batch_events_max > KEEL_PROJECTION_BATCH_EVENTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "batch_events_max: 1..%u",
                         KEEL_PROJECTION_BATCH_EVENTS_MAX);
    if (c->block_ms < 1 || c->seeds_n < 1 || h == NULL || h->apply == NULL)
        return keel_errf(msg, KEEL_EINVAL, "block_ms, seeds and handler->apply are required");
    return 0;
}

static void register_metrics(keel_projection_t *p)
{
    keel_metrics_t *m = p->cfg.metrics;
    if (m == NULL)
        return;
    char labels[KEEL_PROJECTION_NAME_BYTES_MAX + 24];
    snprintf(labels, sizeof(labels), "projection=\"%s\"", p->name);
    p->m_lag = keel_metrics_gauge(m, "keel_projection_lag_events",
                                  "Entries of the projected stream not yet applied.", labels);
    keel_gauge_set(p->m_lag, -1);
    p->m_applied = keel_metrics_counter(m, "keel_projection_events_applied_total",
                                        "Events applied to the read model.", labels);
    p->m_dead = keel_metrics_counter(m, "keel_projection_dead_letters_total",
                                     "Events the handler failed on, dead-lettered.", labels);
    p->m_rebuilds = keel_metrics_counter(m, "keel_projection_rebuilds_total",
                                         "Rebuilds of the read model from zero.", labels);
    p->m_restarts = keel_metrics_counter(m, "keel_projection_restarts_total",
                                         "Restarts from the checkpoint after a failure.", labels);
}

int keel_projection_start(keel_projection_t *p, keel_loop_t *loop,
                          const keel_projection_config_t *cfg, keel_db_t *db,
                          const keel_projection_handler_t *h, keel_errmsg_t *msg)
{
    int rc = validate(cfg, h, msg);
    if (rc != 0)
        return rc;
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->cfg = *cfg;
    p->db = db;
    p->h = *h;
    p->stats.lag_events = -1;
    snprintf(p->name, sizeof(p->name), "%s", cfg->name);
    snprintf(p->stream, sizeof(p->stream), "%s", cfg->stream);
    snprintf(p->consumer, sizeof(p->consumer), "%s", cfg->consumer);
    if (cfg->dead_letter)
        snprintf(p->dead_letter, sizeof(p->dead_letter), "%s", cfg->dead_letter);
    else
        snprintf(p->dead_letter, sizeof(p->dead_letter), "%s:dlq", cfg->stream);
    acks_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return KEEL_ENOMEM;
    a->ok = calloc(cfg->batch_events_max + SETTLE_PAGE, sizeof(*a->ok));
    a->dead = calloc(cfg->batch_events_max + SETTLE_PAGE, sizeof(*a->dead));
    p->acks = a;
    if (a->ok == NULL || a->dead == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_acks;
    }
    if ((rc = prepare_db(p, false, msg)) != 0)
        goto err_after_acks;
    keel_client_config_t ccfg = keel_client_config_default();
    memcpy(ccfg.seeds, cfg->seeds, sizeof(ccfg.seeds));
    ccfg.seeds_n = cfg->seeds_n;
    ccfg.session_bound = true; /* a BLOCKed read must not move to another connection */
    if ((rc = keel_client_init(&p->cl, loop, &ccfg, msg)) != 0)
        goto err_after_acks; /* the client leaves nothing open when it fails */
    p->client_open = true;
    register_metrics(p);
    setup(p);
    return 0;

err_after_acks:
    free(a->ok);
    free(a->dead);
    free(a);
    p->acks = NULL;
    return rc;
}

void keel_projection_rebuild(keel_projection_t *p)
{
    p->rebuild_due = true; /* taken at the next batch boundary or (re)start */
}

static void maybe_closed(keel_projection_t *p)
{
    if (p->client_open || p->timer_open)
        return;
    acks_t *a = p->acks;
    free(a->ok);
    free(a->dead);
    free(a);
    p->acks = NULL;
    p->state = ST_STOPPED;
    if (p->closed)
        p->closed(p, p->closed_data);
}

static void client_closed(keel_client_t *cl)
{
    keel_projection_t *p = (keel_projection_t *)((char *)cl - offsetof(keel_projection_t, cl));
    p->client_open = false;
    maybe_closed(p);
}

static void timer_closed(keel_timer_t *t)
{
    keel_projection_t *p = (keel_projection_t *)((char *)t - offsetof(keel_projection_t, timer));
    p->timer_open = false;
    maybe_closed(p);
}

void keel_projection_stop(keel_projection_t *p, keel_projection_closed_fn cb, void *data)
{
    assert(!p->stopping);
    p->stopping = true;
    p->closed = cb;
    p->closed_data = data;
    if (p->timer_open)
        keel_timer_close(&p->timer, timer_closed);
    keel_client_close(&p->cl, client_closed);
}
