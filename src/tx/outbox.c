/* outbox.c - the outbox table, the settling of a published batch, and the relay. */
#include "tx/outbox.h"

#include "base/log.h"
#include "core/retry.h"
#include "runtime/clock.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * One row per event. id is AUTOINCREMENT, not a plain rowid: SQLite may hand out a deleted
 * largest rowid again, and a reused id would be "behind" in keel's producer table, that is
 * taken for already published and never appended. sent_unix_ms is NULL until the row is
 * settled (published, recognised as a duplicate, or dead); the partial index keeps the
 * relay's scan of unsent rows proportional to them, not to the table.
 */
static const char schema[] = "CREATE TABLE IF NOT EXISTS keel_outbox ("
                             " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             " stream TEXT NOT NULL,"
                             " payload BLOB NOT NULL,"
                             " created_unix_ms INTEGER NOT NULL,"
                             " sent_unix_ms INTEGER,"
                             " stream_id TEXT,"
                             " error TEXT);"
                             "CREATE INDEX IF NOT EXISTS keel_outbox_unsent ON keel_outbox(id)"
                             " WHERE sent_unix_ms IS NULL;";

int keel_outbox_init(keel_db_t *db, keel_errmsg_t *msg)
{
    return keel_db_exec(db, schema, msg);
}

int keel_outbox_add(keel_db_t *db, const char *stream, const void *payload, size_t payload_bytes,
                    int64_t *id_out, keel_errmsg_t *msg)
{
    size_t stream_bytes = strlen(stream);
    if (stream_bytes == 0 || stream_bytes > KEEL_OUTBOX_STREAM_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "outbox: a stream name of 1 to %u bytes",
                         KEEL_OUTBOX_STREAM_BYTES_MAX);
    if (payload_bytes > KEEL_OUTBOX_PAYLOAD_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "outbox: a payload is at most %u bytes",
                         KEEL_OUTBOX_PAYLOAD_BYTES_MAX);
    if (sqlite3_get_autocommit(keel_db_handle(db)))
        return keel_errf(msg, KEEL_EINVAL, "outbox: add inside the business transaction");
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "INSERT INTO keel_outbox (stream, payload, created_unix_ms)"
                             " VALUES (?1, ?2, ?3)",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, stream, (int)stream_bytes, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, payload_bytes ? payload : "", (int)payload_bytes, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, keel_clock_unix_ms());
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return keel_db_error(db, src, "outbox: insert", msg);
    if (id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(keel_db_handle(db));
    return 0;
}

int keel_outbox_pending(keel_db_t *db, int64_t *rows, int64_t *oldest_unix_ms, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "SELECT COUNT(*), COALESCE(MIN(created_unix_ms), 0) FROM keel_outbox"
                             " WHERE sent_unix_ms IS NULL",
                             &st, msg);
    if (rc != 0)
        return rc;
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        *rows = sqlite3_column_int64(st, 0);
        *oldest_unix_ms = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return src == SQLITE_ROW ? 0 : keel_db_error(db, src, "outbox: count", msg);
}

int keel_outbox_prune(keel_db_t *db, int64_t before_unix_ms, int64_t *deleted, keel_errmsg_t *msg)
{
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "DELETE FROM keel_outbox WHERE sent_unix_ms IS NOT NULL"
                             " AND sent_unix_ms < ?1",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, before_unix_ms);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return keel_db_error(db, src, "outbox: prune", msg);
    if (deleted != NULL)
        *deleted = sqlite3_changes(keel_db_handle(db));
    return 0;
}

/* ---- batches ------------------------------------------------------------------------ */

static void batch_clear(keel_outbox_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->rows[i].stream);
        free(b->rows[i].payload);
    }
    b->n = 0;
}

void keel_outbox_batch_free(keel_outbox_batch_t *b)
{
    batch_clear(b);
    free(b->rows);
    b->rows = NULL;
    b->cap = 0;
}

static int batch_push(keel_outbox_batch_t *b, sqlite3_stmt *st)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        keel_outbox_row_t *t = realloc(b->rows, cap * sizeof(*t));
        if (t == NULL)
            return KEEL_ENOMEM;
        b->rows = t;
        b->cap = cap;
    }
    keel_outbox_row_t *r = &b->rows[b->n];
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(st, 0);
    size_t slen = (size_t)sqlite3_column_bytes(st, 1);
    const unsigned char *s = sqlite3_column_text(st, 1);
    size_t plen = (size_t)sqlite3_column_bytes(st, 2);
    const void *p = sqlite3_column_blob(st, 2);
    r->created_unix_ms = sqlite3_column_int64(st, 3);
    r->stream = malloc(slen + 1);
    r->payload = malloc(plen ? plen : 1);
    if (r->stream == NULL || r->payload == NULL || s == NULL) {
        free(r->stream);
        free(r->payload);
        return KEEL_ENOMEM;
    }
    memcpy(r->stream, s, slen);
    r->stream[slen] = '\0';
    if (plen)
        memcpy(r->payload, p, plen);
    r->payload_bytes = plen;
    b->n++;
    return 0;
}

int keel_outbox_read(keel_db_t *db, size_t rows_max, keel_outbox_batch_t *b, keel_errmsg_t *msg)
{
    batch_clear(b);
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db,
                             "SELECT id, stream, payload, created_unix_ms FROM keel_outbox"
                             " WHERE sent_unix_ms IS NULL ORDER BY id LIMIT ?1",
                             &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)rows_max);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW)
        if ((rc = batch_push(b, st)) != 0)
            break;
    sqlite3_finalize(st);
    if (rc != 0) {
        batch_clear(b);
        return keel_errf(msg, rc, "outbox: out of memory reading a batch");
    }
    if (src != SQLITE_DONE) {
        batch_clear(b);
        return keel_db_error(db, src, "outbox: read", msg);
    }
    return 0;
}

static bool is_duplicate(const keel_outbox_result_t *res)
{
    /* keel's answer to an older sequence of a known producer (kv_stream.c) */
    static const char behind[] = "ERR keel: producer sequence ";
    return res->error && res->len >= sizeof(behind) - 1 &&
           memcmp(res->text, behind, sizeof(behind) - 1) == 0;
}

static void copy_text(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * Why a refused row next to an appended later row of its stream is dead: the later row's
 * sequence is now the producer's last, so this row would be answered "behind" forever and
 * taken for published. Marking it dead (with the refusal) is the honest record; leaving it
 * would lose it silently. A refused row with nothing of its stream appended after it keeps
 * its place and is tried again: the stream stays in order behind it.
 */
size_t keel_outbox_settle(keel_outbox_batch_t *b, const keel_outbox_result_t *results)
{
    assert(b->n == 0 || results != NULL);
    for (size_t i = 0; i < b->n; i++) {
        keel_outbox_row_t *r = &b->rows[i];
        const keel_outbox_result_t *res = &results[i];
        r->stream_id[0] = r->error[0] = '\0';
        if (!res->error) {
            r->outcome = KEEL_OUTBOX_PUBLISHED;
            copy_text(r->stream_id, sizeof(r->stream_id), res->text, res->len);
        } else if (is_duplicate(res)) {
            r->outcome = KEEL_OUTBOX_DUPLICATE;
        } else {
            r->outcome = KEEL_OUTBOX_RETRY;
            copy_text(r->error, sizeof(r->error), res->text, res->len);
        }
    }
    size_t retry = 0;
    for (size_t i = 0; i < b->n; i++) {
        keel_outbox_row_t *r = &b->rows[i];
        if (r->outcome != KEEL_OUTBOX_RETRY)
            continue;
        for (size_t j = i + 1; j < b->n; j++)
            if (b->rows[j].outcome != KEEL_OUTBOX_RETRY && b->rows[j].outcome != KEEL_OUTBOX_DEAD &&
                strcmp(b->rows[j].stream, r->stream) == 0) {
                r->outcome = KEEL_OUTBOX_DEAD;
                break;
            }
        retry += r->outcome == KEEL_OUTBOX_RETRY;
    }
    return retry;
}

int keel_outbox_mark(keel_db_t *db, const keel_outbox_batch_t *b, int64_t now_unix_ms,
                     keel_errmsg_t *msg)
{
    assert(now_unix_ms > 0);
    int rc = keel_db_begin(db, msg);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st;
    rc = keel_db_prepare(db,
                         "UPDATE keel_outbox SET sent_unix_ms = ?1, stream_id = ?2, error = ?3"
                         " WHERE id = ?4 AND sent_unix_ms IS NULL",
                         &st, msg);
    if (rc != 0)
        goto err_after_begin;
    for (size_t i = 0; i < b->n; i++) {
        const keel_outbox_row_t *r = &b->rows[i];
        if (r->outcome == KEEL_OUTBOX_RETRY)
            continue;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, now_unix_ms);
        if (r->stream_id[0])
            sqlite3_bind_text(st, 2, r->stream_id, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 2);
        if (r->outcome == KEEL_OUTBOX_DEAD)
            sqlite3_bind_text(st, 3, r->error, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 3);
        sqlite3_bind_int64(st, 4, r->id);
        int src = sqlite3_step(st);
        if (src != SQLITE_DONE) {
            rc = keel_db_error(db, src, "outbox: mark", msg);
            sqlite3_finalize(st);
            goto err_after_begin;
        }
    }
    sqlite3_finalize(st);
    return keel_db_commit(db, msg);
err_after_begin:
    keel_db_rollback(db);
    return rc;
}

/* ---- the relay ---------------------------------------------------------------------- */

keel_outbox_relay_config_t keel_outbox_relay_config_default(void)
{
    return (keel_outbox_relay_config_t){
        .batch_rows_max = 100,
        .poll_ms = 20,
        .backoff_base_ms = 50,
        .backoff_cap_ms = 2000,
        .request_timeout_ms = 5000,
        .sent_keep_ms = 3600 * 1000,
        .seed = 1,
    };
}

static int config_check(const keel_outbox_relay_config_t *c, keel_errmsg_t *msg)
{
    if (c->db == NULL || c->servers == NULL || c->producer == NULL)
        return keel_errf(msg, KEEL_EINVAL, "outbox relay: db, servers and producer are needed");
    size_t pn = strlen(c->producer);
    if (pn == 0 || pn >= KEEL_OUTBOX_PRODUCER_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "outbox relay: a producer of 1 to %u bytes",
                         KEEL_OUTBOX_PRODUCER_BYTES_MAX - 1);
    if (c->batch_rows_max == 0 || c->batch_rows_max > KEEL_OUTBOX_BATCH_ROWS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "outbox relay: batch_rows_max 1 to %u",
                         KEEL_OUTBOX_BATCH_ROWS_MAX);
    if (c->poll_ms <= 0 || c->backoff_base_ms <= 0 || c->backoff_cap_ms < c->backoff_base_ms ||
        c->request_timeout_ms <= 0 || c->sent_keep_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "outbox relay: bad times");
    return 0;
}

static void metrics_register(keel_outbox_relay_t *r)
{
    keel_metrics_t *m = r->cfg.metrics;
    const char *l = r->cfg.metrics_labels;
    if (m == NULL)
        return;
    r->m_pending = keel_metrics_gauge(m, "keel_outbox_pending", "Outbox rows not yet sent.", l);
    r->m_lag_ms = keel_metrics_gauge(m, "keel_outbox_lag_ms",
                                     "Age of the oldest unsent outbox row, ms (relay lag).", l);
    r->m_published = keel_metrics_counter(m, "keel_outbox_published_total",
                                          "Outbox rows appended to their stream.", l);
    r->m_duplicates = keel_metrics_counter(
        m, "keel_outbox_duplicates_total",
        "Outbox rows sent again and recognised as already appended (not appended twice).", l);
    r->m_dead = keel_metrics_counter(m, "keel_outbox_dead_total",
                                     "Outbox rows the server refused, marked dead.", l);
    r->m_errors = keel_metrics_counter(m, "keel_outbox_errors_total",
                                       "Relay batches that failed and were retried.", l);
}

int keel_outbox_relay_init(keel_outbox_relay_t *r, keel_loop_t *loop,
                           const keel_outbox_relay_config_t *cfg, keel_errmsg_t *msg)
{
    memset(r, 0, sizeof(*r));
    int rc = config_check(cfg, msg);
    if (rc != 0)
        return rc;
    r->cfg = *cfg;
    r->loop = loop;
    snprintf(r->producer, sizeof(r->producer), "%s", cfg->producer);
    r->cfg.producer = r->producer;
    keel_rand_seed(&r->rand, cfg->seed);
    keel_client_config_t cc = keel_client_config_default();
    snprintf(r->seeds_text, sizeof(r->seeds_text), "%s", cfg->servers);
    for (char *p = r->seeds_text, *tok; (tok = strsep(&p, ",")) != NULL;) {
        if (*tok == '\0')
            continue;
        if (cc.seeds_n == KEEL_CLIENT_SEEDS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "outbox relay: more than %u servers",
                             KEEL_CLIENT_SEEDS_MAX);
        cc.seeds[cc.seeds_n++] = tok;
    }
    if (cc.seeds_n == 0)
        return keel_errf(msg, KEEL_EINVAL, "outbox relay: no server address");
    /* MULTI state lives on the connection: a loss must fail what was queued behind it, and
       a -TRYAGAIN'd EXEC must not be resent alone */
    cc.session_bound = true;
    cc.retry_tryagain = false;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.seed = cfg->seed;
    if (cc.requests_max < cfg->batch_rows_max + 2) {
        cc.requests_max = cfg->batch_rows_max + 2;
        cc.inflight_max = cc.requests_max;
    }
    if ((rc = keel_client_init(&r->client, loop, &cc, msg)) != 0)
        return rc; /* nothing is left open */
    if ((rc = keel_timer_init(loop, &r->timer)) != 0) {
        keel_client_close(&r->client, NULL);
        return keel_errf(msg, rc, "outbox relay: timer");
    }
    r->handles_open = 2;
    metrics_register(r);
    return 0;
}

static void step(keel_timer_t *t, void *data);

static void arm(keel_outbox_relay_t *r, keel_ms_t after_ms)
{
    if (!r->closing)
        keel_timer_start(&r->timer, after_ms, 0, step, r);
}

static void failed(keel_outbox_relay_t *r, const char *what, const char *why)
{
    r->stats.errors++;
    if (r->m_errors)
        keel_counter_inc(r->m_errors);
    if (r->failures == 0) /* one line per outage, not one per retry */
        keel_log_warn("outbox relay: batch failed", KF_STR("what", what), KF_STR("why", why));
    keel_retry_config_t bc = {.backoff_base_ms = r->cfg.backoff_base_ms,
                              .backoff_cap_ms = r->cfg.backoff_cap_ms,
                              .jitter = KEEL_RETRY_JITTER_FULL};
    keel_ms_t wait = keel_retry_backoff_ms(&bc, r->failures < 30 ? r->failures : 30, &r->rand);
    r->failures++;
    arm(r, wait > 0 ? wait : 1);
}

/* At most once a second: the count walks the unsent rows' index, which a large backlog
   would make costly on every batch. */
static void update_gauges(keel_outbox_relay_t *r, bool force)
{
    keel_ms_t now_ms = keel_loop_now_ms(r->loop);
    if (r->m_pending == NULL || (!force && r->gauged_at_ms != 0 && now_ms - r->gauged_at_ms < 1000))
        return;
    r->gauged_at_ms = now_ms;
    int64_t rows = 0, oldest = 0;
    if (keel_outbox_pending(r->cfg.db, &rows, &oldest, NULL) != 0)
        return;
    keel_gauge_set(r->m_pending, rows);
    int64_t now = keel_clock_unix_ms();
    keel_gauge_set(r->m_lag_ms, rows > 0 && now > oldest ? now - oldest : 0);
}

static void account(keel_outbox_relay_t *r)
{
    for (size_t i = 0; i < r->batch.n; i++) {
        const keel_outbox_row_t *row = &r->batch.rows[i];
        switch (row->outcome) {
        case KEEL_OUTBOX_PUBLISHED:
            r->stats.published++;
            if (r->m_published)
                keel_counter_inc(r->m_published);
            break;
        case KEEL_OUTBOX_DUPLICATE:
            r->stats.duplicates++;
            if (r->m_duplicates)
                keel_counter_inc(r->m_duplicates);
            break;
        case KEEL_OUTBOX_DEAD:
            r->stats.dead++;
            if (r->m_dead)
                keel_counter_inc(r->m_dead);
            keel_log_error("outbox relay: row refused by the server, marked dead",
                           KF_INT("id", row->id), KF_STR("stream", row->stream),
                           KF_STR("error", row->error));
            break;
        case KEEL_OUTBOX_RETRY:
            break;
        }
    }
}

static void on_exec(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_outbox_relay_t *r = ctx;
    (void)cl;
    assert(r->inflight && r->batch.n > 0);
    r->inflight = false;
    if (r->closing)
        return;
    if (status != 0) {
        failed(r, "send", keel_strerror(status));
        return;
    }
    if (reply->type != KEEL_RESP_ARRAY || reply->elems_len != r->batch.n) {
        char why[128] = "not an array of one reply per row";
        if (reply->type == KEEL_RESP_ERROR)
            copy_text(why, sizeof(why), (const char *)reply->str.ptr, reply->str.len);
        failed(r, "exec", why);
        return;
    }
    keel_outbox_result_t *res = calloc(r->batch.n, sizeof(*res));
    if (res == NULL) {
        failed(r, "settle", "out of memory");
        return;
    }
    for (size_t i = 0; i < r->batch.n; i++) {
        const keel_resp_value_t *e = &reply->elems[i];
        res[i].error = e->type != KEEL_RESP_BULK;
        res[i].text = (const char *)e->str.ptr;
        res[i].len = e->type == KEEL_RESP_BULK || e->type == KEEL_RESP_ERROR ? e->str.len : 0;
    }
    size_t retry = keel_outbox_settle(&r->batch, res);
    free(res);
    r->stats.batches++;
    if (r->cfg.on_published)
        r->cfg.on_published(r, &r->batch, r->cfg.hook_data);
    keel_errmsg_t msg = {{0}};
    int rc = keel_outbox_mark(r->cfg.db, &r->batch, keel_clock_unix_ms(), &msg);
    if (rc != 0) { /* the rows go again and are recognised: counted as duplicates then */
        failed(r, "mark", msg.text);
        return;
    }
    account(r);
    if (r->cfg.on_marked)
        r->cfg.on_marked(r, &r->batch, r->cfg.hook_data);
    if (retry > 0) {
        const keel_outbox_row_t *first = NULL;
        for (size_t i = 0; i < r->batch.n && first == NULL; i++)
            if (r->batch.rows[i].outcome == KEEL_OUTBOX_RETRY)
                first = &r->batch.rows[i];
        failed(r, "xadd", first->error);
        return;
    }
    r->failures = 0;
    arm(r, 0);
}

static void ignore_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    /* MULTI's +OK and each +QUEUED: EXEC's answer says everything (a refused queueing
       makes it -EXECABORT) */
    (void)cl, (void)ctx, (void)status, (void)reply;
}

/* MULTI, one XADD per row, EXEC: 0, or a KEEL_E* from queueing (nothing useful was sent:
   an unfinished MULTI is dropped with the connection by the caller's backoff path). */
static int send_batch(keel_outbox_relay_t *r)
{
    const char *multi[] = {"MULTI"};
    int rc = keel_client_command(&r->client, 1, multi, NULL, ignore_reply, r);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < r->batch.n; i++) {
        const keel_outbox_row_t *row = &r->batch.rows[i];
        char seq[24], mid[KEEL_OUTBOX_PRODUCER_BYTES_MAX + 24];
        snprintf(seq, sizeof(seq), "%lld", (long long)row->id);
        snprintf(mid, sizeof(mid), "%s/%lld", r->producer, (long long)row->id);
        const char *argv[] = {
            "XADD", row->stream, "KEEL.PRODUCER",           r->producer, seq, "*", "id",
            mid,    "data",      (const char *)row->payload};
        size_t lens[] = {4, strlen(row->stream), 13, strlen(r->producer), strlen(seq), 1,
                         2, strlen(mid),         4,  row->payload_bytes};
        if ((rc = keel_client_command(&r->client, 10, argv, lens, ignore_reply, r)) != 0) {
            const char *discard[] = {"DISCARD"};
            keel_client_command(&r->client, 1, discard, NULL, ignore_reply, r);
            return rc;
        }
    }
    const char *exec[] = {"EXEC"};
    if ((rc = keel_client_command(&r->client, 1, exec, NULL, on_exec, r)) != 0) {
        const char *discard[] = {"DISCARD"};
        keel_client_command(&r->client, 1, discard, NULL, ignore_reply, r);
    }
    return rc;
}

static void maybe_prune(keel_outbox_relay_t *r)
{
    keel_ms_t now = keel_loop_now_ms(r->loop);
    if (r->cfg.sent_keep_ms == 0 || now - r->pruned_at_ms < 1000)
        return;
    r->pruned_at_ms = now;
    keel_errmsg_t msg = {{0}};
    if (keel_outbox_prune(r->cfg.db, keel_clock_unix_ms() - r->cfg.sent_keep_ms, NULL, &msg) != 0)
        keel_log_warn("outbox relay: prune failed", KF_STR("why", msg.text));
}

static void step(keel_timer_t *t, void *data)
{
    keel_outbox_relay_t *r = data;
    (void)t;
    if (r->inflight || r->closing)
        return;
    update_gauges(r, false);
    keel_errmsg_t msg = {{0}};
    int rc = keel_outbox_read(r->cfg.db, r->cfg.batch_rows_max, &r->batch, &msg);
    if (rc != 0) {
        failed(r, "read", msg.text);
        return;
    }
    if (r->batch.n == 0) {
        if (!r->idle) /* caught up: say so now, not up to a second later */
            update_gauges(r, true);
        r->idle = true;
        maybe_prune(r);
        arm(r, r->cfg.poll_ms);
        return;
    }
    r->idle = false;
    assert(r->batch.n <= r->cfg.batch_rows_max);
    if ((rc = send_batch(r)) != 0) {
        failed(r, "queue", keel_strerror(rc));
        return;
    }
    r->inflight = true;
}

void keel_outbox_relay_start(keel_outbox_relay_t *r)
{
    assert(!r->started);
    r->started = true;
    arm(r, 0);
}

void keel_outbox_relay_kick(keel_outbox_relay_t *r)
{
    if (r->started && !r->inflight && !r->closing && r->failures == 0)
        arm(r, 0);
}

bool keel_outbox_relay_idle(const keel_outbox_relay_t *r)
{
    return r->idle && !r->inflight;
}

const keel_outbox_relay_stats_t *keel_outbox_relay_stats(const keel_outbox_relay_t *r)
{
    return &r->stats;
}

static void handle_closed(keel_outbox_relay_t *r)
{
    if (--r->handles_open > 0)
        return;
    keel_outbox_batch_free(&r->batch);
    if (r->closed)
        r->closed(r);
}

static void timer_closed(keel_timer_t *t)
{
    handle_closed((keel_outbox_relay_t *)((char *)t - offsetof(keel_outbox_relay_t, timer)));
}

static void client_closed(keel_client_t *cl)
{
    handle_closed((keel_outbox_relay_t *)((char *)cl - offsetof(keel_outbox_relay_t, client)));
}

void keel_outbox_relay_close(keel_outbox_relay_t *r, void (*closed)(keel_outbox_relay_t *r))
{
    assert(!r->closing);
    r->closing = true;
    r->closed = closed;
    keel_timer_close(&r->timer, timer_closed);
    keel_client_close(&r->client, client_closed);
}
