/* saga_log.c - the saga orchestrator's log: the open marker, loading and replaying a
   saga's log, fenced writes of its records. */
#include "tx/saga_int.h"

#include "base/log.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the log ------------------------------------------------------------------------- */

const keel_saga_type_t *keel__saga_type_named(const keel_sagas_t *o, const uint8_t *name,
                                              size_t len, uint32_t *index)
{
    for (uint32_t i = 0; i < o->types_n; i++)
        if (strlen(o->types[i]->def.name) == len && memcmp(o->types[i]->def.name, name, len) == 0) {
            *index = i;
            return o->types[i];
        }
    return NULL;
}

/* The record bytes of one XRANGE entry ([id, [field, value, ...]]), or NULL. */
const keel_resp_value_t *keel__saga_entry_record(const keel_resp_value_t *e)
{
    if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 || e->elems[1].type != KEEL_RESP_ARRAY)
        return NULL;
    const keel_resp_value_t *f = &e->elems[1];
    for (size_t i = 0; i + 1 < f->elems_len; i += 2)
        if (f->elems[i].type == KEEL_RESP_BULK && f->elems[i].str.len == 1 &&
            f->elems[i].str.ptr[0] == 'r' && f->elems[i + 1].type == KEEL_RESP_BULK)
            return &f->elems[i + 1];
    return NULL;
}

static void on_mark(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v);
static void verify(keel__saga_run_t *r, keel_client_reply_fn fn);

static void mark(keel__saga_run_t *r)
{
    const char *argv[] = {"KEEL.FENCED", r->lock, r->token_str,     "HSET",
                          OPEN_KEY,      r->id,   r->type->def.name};
    r->phase = P_MARK;
    keel__saga_cmd(r, 7, argv, NULL, on_mark, mark);
}

static void on_mark(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (status == 0 && keel_resp_error_contains(v, "FENCED")) {
        keel__saga_relock(r);
        return;
    }
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        keel__saga_retry_later(r, mark);
        return;
    }
    r->retries = 0;
    r->phase = P_ACT;
    int rc = keel_saga_begin(&r->s, unix_ms(), r->input, r->input_len, &r->u);
    assert(rc == 0);
    keel__saga_act(r);
}

/* A saga started here: the core begins at once, and its lock, its `started` record and its
 * open marker go in one entry (write_start). */
void keel__saga_begin_fresh(keel__saga_run_t *r)
{
    keel_errmsg_t msg = {{0}};
    if (keel_saga_init(&r->s, &r->type->def, r->id, keel_rand_u64(&r->o->rand), &msg) != 0) {
        keel__saga_relock(r); /* out of memory: the path that locks and reads first retries */
        return;
    }
    r->s_init = true;
    r->fresh = true;
    r->locked_unix_ms = unix_ms();
    r->phase = P_ACT;
    int rc = keel_saga_begin(&r->s, unix_ms(), r->input, r->input_len, &r->u);
    assert(rc == 0);
    keel__saga_act(r);
}

/* An adopted saga's type, named by its started record (the log's first entry); NULL if the
 * log is empty or the type is not registered here. */
static const keel_saga_type_t *type_of_log(keel__saga_run_t *r, const keel_resp_value_t *v)
{
    if (v->elems_len == 0)
        return NULL;
    const keel_resp_value_t *b = keel__saga_entry_record(&v->elems[0]);
    keel_saga_rec_t rec;
    if (b == NULL || keel_saga_rec_decode(b->str.ptr, b->str.len, &rec, NULL) != 0 ||
        rec.type != KEEL_SAGA_REC_STARTED || rec.data_len < 1u + rec.data[0])
        return NULL;
    return keel__saga_type_named(r->o, rec.data + 1, rec.data[0], &r->type_i);
}

/* A fresh instance with every stored record replayed. 0, or the error (msg says why). */
static int replay_log(keel__saga_run_t *r, const keel_resp_value_t *v, keel_errmsg_t *msg)
{
    if (r->s_init)
        keel_saga_free(&r->s);
    r->s_init = false;
    int rc = keel_saga_init(&r->s, &r->type->def, r->id, keel_rand_u64(&r->o->rand), msg);
    if (rc != 0)
        return rc;
    r->s_init = true;
    for (size_t i = 0; i < v->elems_len && rc == 0; i++) {
        const keel_resp_value_t *b = keel__saga_entry_record(&v->elems[i]);
        rc = b ? keel_saga_replay(&r->s, b->str.ptr, b->str.len, msg)
               : keel_errf(msg, KEEL_ECORRUPT, "log entry %zu has no record", i);
    }
    return rc;
}

/* Goes on from a replayed log: begin a new saga, resume one in progress, or close. */
static void go_on(keel__saga_run_t *r)
{
    keel_sagas_t *o = r->o;
    keel__saga_count_state(r, r->s.state);
    if (r->s.state == KEEL_SAGA_NEW) {
        if (r->starting)
            mark(r);
        else
            keel__saga_close_quietly(r);
        return;
    }
    if (!r->starting && keel_saga_state_final(r->s.state)) {
        keel__saga_close_quietly(
            r); /* ended, its marker not yet gone (or the scan raced the end) */
        return;
    }
    if (!r->starting) {
        o->stats.adopted++;
        if (o->m_adopted)
            keel_counter_inc(o->m_adopted);
        keel_log_info("saga adopted", KF_STR("saga", r->id),
                      KF_STR("state", keel_saga_state_name(r->s.state)));
    }
    r->phase = P_ACT;
    int rc = keel_saga_resume(&r->s, unix_ms(), &r->u);
    assert(rc == 0);
    keel__saga_act(r);
}

/* The stored log is in: keep memory if nobody wrote since, else replay it; then go on. */
static void on_load(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (status != 0 || v->type != KEEL_RESP_ARRAY) {
        keel__saga_retry_later(r, keel__saga_load);
        return;
    }
    r->retries = 0;
    if (r->s_init && r->s.state != KEEL_SAGA_NEW && v->elems_len == r->s.seq) {
        /* Our lock had lapsed and we hold it again: nobody wrote meanwhile (a foreign
         * record would make the log longer than what we applied, as records are only
         * appended), so memory is still the log. Keep it, with the action pending: a
         * step's answer is not thrown away, or a step longer than the TTL would never end. */
        r->phase = P_ACT;
        keel__saga_act(r);
        return;
    }
    if (r->starting && r->s_init && r->s.state == KEEL_SAGA_NEW &&
        r->u.action == KEEL_SAGA_ACT_LOG && r->u.rec_type == KEEL_SAGA_REC_STARTED &&
        v->elems_len >= 1) { /* a start whose answer was lost: is the first record ours? */
        const keel_resp_value_t *b = keel__saga_entry_record(&v->elems[0]);
        if (b && b->str.len == r->u.record_len && memcmp(b->str.ptr, r->u.record, b->str.len) == 0)
            r->o->stats.started++;
    }
    if (r->type == NULL) { /* adopted: the started record names the type */
        r->type = type_of_log(r, v);
        if (r->type == NULL && v->elems_len == 0) {
            keel__saga_close_quietly(r); /* its starter died before starting it */
            return;
        }
        if (r->type == NULL) {
            keel_log_warn("saga of an unknown type left alone", KF_STR("saga", r->id));
            keel__saga_run_drop(r);
            return;
        }
    }
    keel_errmsg_t msg = {{0}};
    int rc = replay_log(r, v, &msg);
    if (rc == KEEL_ENOMEM) {
        keel__saga_retry_later(r, keel__saga_load);
        return;
    }
    if (rc != 0) {
        r->o->stats.corrupt++;
        keel_log_error("saga log refused", KF_STR("saga", r->id), KF_STR("why", msg.text));
        keel__saga_run_end(r, KEEL_ECORRUPT);
        return;
    }
    go_on(r);
}

void keel__saga_load(keel__saga_run_t *r)
{
    const char *argv[] = {"XRANGE", r->log_key, "-", "+"};
    r->phase = P_LOAD;
    r->fresh = false;
    free(r->pre); /* what the log says replaces memory */
    r->pre = NULL;
    keel__saga_cmd(r, 4, argv, NULL, on_load, keel__saga_load);
}

static void logged(keel__saga_run_t *r)
{
    keel_sagas_t *o = r->o;
    keel_ns_t took_ns = keel_clock_now_ns() - r->act_ns;
    o->stats.log_write_ns += (uint64_t)took_ns;
    if (o->m_log_write)
        keel_histogram_observe(o->m_log_write, (double)took_ns / KEEL_NS_PER_S);
    o->stats.log_writes++;
    if (r->u.rec_type == KEEL_SAGA_REC_STARTED)
        o->stats.started++;
    r->retries = 0;
    r->phase = P_ACT;
    if (r->u.rec_type == KEEL_SAGA_REC_STEP_FAILED && r->s.want.data_len > 0) {
        keel_counter_t *failed =
            o->m_fail[r->type_i][r->u.step][r->s.want.data[0] == KEEL_SAGA_FAIL_GAVE_UP];
        if (failed)
            keel_counter_inc(failed);
    }
    keel_saga_event_t ev = {.type = KEEL_SAGA_EV_LOGGED, .now_ms = unix_ms()};
    int rc = keel_saga_step(&r->s, &ev, &r->u);
    assert(rc == 0);
    keel__saga_count_state(r, r->s.state);
    keel__saga_act(r);
}

static bool rec_final(keel_saga_rec_type_t t);

/*
 * Entry 0-<seq> read back after a write whose outcome is in doubt: our record there means our
 * earlier try landed. Otherwise what the log says wins: it is read again (under our lock), or,
 * for the end's transaction (which released the lock if it landed), the lock is taken first.
 */
static void on_verify(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    bool end = rec_final(r->u.rec_type);
    const keel_resp_value_t *b = NULL;
    if (status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == 1)
        b = keel__saga_entry_record(&v->elems[0]);
    if (b && b->str.len == r->u.record_len && memcmp(b->str.ptr, r->u.record, b->str.len) == 0) {
        r->closed = end; /* the end's transaction landed, marker, unlock and all */
        logged(r);
        return;
    }
    if (status != 0) {
        r->phase = P_ACT;
        keel__saga_retry_later(r, keel__saga_act);
        return;
    }
    if (end)
        keel__saga_relock(r);
    else
        keel__saga_load(r);
}

/* A log write refused by the fence: another owner took over, or the lock lapsed. */
static void count_fenced(keel__saga_run_t *r)
{
    r->o->stats.fenced++;
    if (r->o->m_fenced)
        keel_counter_inc(r->o->m_fenced);
}

static void on_log(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (status == 0 && v->type == KEEL_RESP_BULK) {
        logged(r);
        return;
    }
    if (status == 0 && keel_resp_error_contains(v, "FENCED")) {
        count_fenced(r);
        keel__saga_relock(r);
        return;
    }
    if (status == 0 &&
        keel_resp_error_contains(v, "equal or smaller")) { /* a repeat of a landed write? */
        verify(r, on_verify);
        return;
    }
    /* -TIMEOUT, -UNKNOWN, a broken connection: the outcome is unknown; the same write
     * again is safe (same entry id) */
    r->o->stats.log_write_retries++;
    keel__saga_retry_later(r, keel__saga_act);
}

static void log_id(const keel__saga_run_t *r, char id[24])
{
    snprintf(id, 24, "0-%" PRIu32, r->u.seq);
}

static void verify(keel__saga_run_t *r, keel_client_reply_fn fn)
{
    char id[24];
    log_id(r, id);
    const char *argv[] = {"XRANGE", r->log_key, id, id};
    r->phase = P_VERIFY;
    keel__saga_cmd(r, 4, argv, NULL, fn, keel__saga_act);
}

/* The transaction's reply, an array of n whose element i is a bulk string (XADD's id). */
static bool txn_added(int status, const keel_resp_value_t *v, size_t n, size_t i)
{
    return status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == n &&
           v->elems[i].type == KEEL_RESP_BULK;
}

static void on_log_start(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (status == 0 && v->type == KEEL_RESP_NIL) {
        /* another holder: an owner of this id, or our own earlier try whose answer was lost
         * (then we wait one TTL and take the lock alone: saga.c) */
        keel__saga_lock_refused(r);
        return;
    }
    if (status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
        v->elems[0].type != KEEL_RESP_INT) {
        r->lock_unknown = true; /* outcome unknown: maybe ours, under a token never learnt */
        r->o->stats.log_write_retries++;
        keel__saga_retry_later(r, keel__saga_act);
        return;
    }
    keel__saga_locked(r, v->elems[0].integer);
    const keel_resp_value_t *t = &v->elems[1];
    if (t->type == KEEL_RESP_ARRAY && t->elems_len == 2 && t->elems[1].type == KEEL_RESP_BULK) {
        logged(r);
        return;
    }
    if (t->type == KEEL_RESP_NIL_ARRAY) {
        /* the log exists: our own earlier try (its lock since lapsed), or a saga of this id
         * started before (then the log is read and replayed) */
        verify(r, on_verify);
        return;
    }
    keel__saga_load(r); /* the marker or the record refused: read the log, under the lock */
}

/* The arguments of the start's or the end's command: the saga's own and the end's commands
 * from its type (end_cmds). */
#define LOG_ARGS_MAX 1024u

/* Sends a's command and frees a; a retry rebuilds it (keel_client_command copies the
 * bytes). */
static void send_args(keel__saga_run_t *r, keel_args_t *a, keel_client_reply_fn fn)
{
    r->act_ns = keel_clock_now_ns();
    if (keel_args_resolve(a) == 0)
        keel__saga_cmd(r, a->n, a->ptrs, a->lens, fn, keel__saga_act);
    else
        keel__saga_retry_later(r, keel__saga_act);
    keel_args_free(a);
}

/*
 * KEEL.LOCKRUN saga:<id> <ttl> KEEL.TXN 1 <log> 0 2 | HSET saga:open <id> <type> |
 * XADD <log> 0-1 r <started>: the lock, the marker and the first record in one entry, instead
 * of the lock, a read of the log, the marker and the record. The watch (version 0: the log
 * does not exist) makes the transaction a no-op for a saga that exists already; the lock is
 * then ours, and the log is read.
 */
static void write_start(keel__saga_run_t *r)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    keel_args_t a;
    keel_args_init(&a, LOG_ARGS_MAX, 0);
    keel_args_strs(&a, 18,
                   (const char *[]){"KEEL.LOCKRUN", r->lock, ttl, "KEEL.TXN", "1", r->log_key, "0",
                                    "2", "4", "HSET", OPEN_KEY, r->id, r->type->def.name, "5",
                                    "XADD", r->log_key, "0-1", "r"});
    keel_args_add(&a, r->u.record, r->u.record_len);
    r->locked_unix_ms = unix_ms();
    send_args(r, &a, on_log_start);
}

static void on_log_end(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (txn_added(status, v, (r->pre ? 4 : 3) + r->end_extra, r->pre ? 1 : 0)) {
        if (r->pre)
            r->o->stats.log_writes++; /* the step_done that went with it */
        r->closed = true;
        logged(r);
        return;
    }
    if (status == 0 && (keel_resp_error_contains(v, "FENCED") || v->type == KEEL_RESP_ARRAY)) {
        /* fenced: an earlier try of ours that landed released the lock, or another owner
         * has it; an array whose XADD failed: the log holds another record there */
        if (v->type != KEEL_RESP_ARRAY)
            count_fenced(r);
        verify(r, on_verify);
        return;
    }
    r->o->stats.log_write_retries++; /* outcome unknown: the same transaction again */
    keel__saga_retry_later(r, keel__saga_act);
}

static keel_saga_state_t final_state(keel_saga_rec_type_t t)
{
    return t == KEEL_SAGA_REC_DONE          ? KEEL_SAGA_DONE
           : t == KEEL_SAGA_REC_COMPENSATED ? KEEL_SAGA_COMPENSATED
                                            : KEEL_SAGA_NEEDS_ATTENTION;
}

/*
 * The final record (done, compensated, needs attention), the open marker's deletion and the
 * unlock, in one entry: KEEL.FENCED lock token KEEL.TXN 0 <k> | XADD <log> 0-n r <record> |
 * HDEL saga:open <id> | KEEL.UNLOCK lock token | with a retention, ZADD saga:ended <now> <id>
 * (not for needs attention) | the type's end commands (end_cmds: the
 * outcome's event, say, which so applies exactly when the saga ends, and once); after a
 * success, the last step's step_done first (fold_last_step_done). k counts them all.
 */
static void write_end(keel__saga_run_t *r)
{
    const keel_saga_type_t *t = r->type;
    char id[24], pre_id[24], count[24];
    log_id(r, id);
    snprintf(pre_id, sizeof(pre_id), "0-%" PRIu32, r->pre_seq);
    /* the end commands first, into their own buffer: the count goes before them */
    keel_args_t ext, a;
    keel_args_init(&ext, LOG_ARGS_MAX, 0);
    size_t extra = 0;
    if (t->end_cmds != NULL &&
        (t->end_cmds(&ext, r->id, final_state(r->u.rec_type), t->end_data, &extra) != 0 ||
         keel_args_resolve(&ext) != 0)) {
        keel_log_warn("saga: the end's commands could not be built; the end waits",
                      KF_STR("saga", r->id));
        keel_args_free(&ext);
        r->o->stats.log_write_retries++;
        keel__saga_retry_later(r, keel__saga_act);
        return;
    }
    /* indexed for the retention sweep (saga_retain.c) when it ended done or compensated */
    bool indexed = r->o->cfg.log_retention_ms > 0 && r->u.rec_type != KEEL_SAGA_REC_ATTENTION;
    r->end_extra = extra + indexed;
    snprintf(count, sizeof(count), "%zu", (r->pre ? 4 : 3) + r->end_extra);
    keel_args_init(&a, LOG_ARGS_MAX, 0);
    keel_args_strs(&a, 6,
                   (const char *[]){"KEEL.FENCED", r->lock, r->token_str, "KEEL.TXN", "0", count});
    if (r->pre) {
        keel_args_strs(&a, 5, (const char *[]){"5", "XADD", r->log_key, pre_id, "r"});
        keel_args_add(&a, r->pre, r->pre_len);
    }
    keel_args_strs(&a, 5, (const char *[]){"5", "XADD", r->log_key, id, "r"});
    keel_args_add(&a, r->u.record, r->u.record_len);
    keel_args_strs(
        &a, 8,
        (const char *[]){"3", "HDEL", OPEN_KEY, r->id, "3", "KEEL.UNLOCK", r->lock, r->token_str});
    if (indexed) {
        keel_args_strs(&a, 3, (const char *[]){"4", "ZADD", ENDED_KEY});
        keel_args_u64(&a, (uint64_t)unix_ms());
        keel_args_str(&a, r->id);
    }
    for (size_t i = 0; i < ext.n; i++)
        keel_args_add(&a, ext.ptrs[i], ext.lens[i]);
    keel_args_free(&ext);
    send_args(r, &a, on_log_end);
}

static bool rec_final(keel_saga_rec_type_t t)
{
    return t == KEEL_SAGA_REC_DONE || t == KEEL_SAGA_REC_COMPENSATED ||
           t == KEEL_SAGA_REC_ATTENTION;
}

/*
 * The last step's step_done announces only the saga's end: no effect may come between them,
 * so the two records go in the end's one entry. The core is told the step_done is logged
 * now, before it is (its contract is "no effect before the announcing record is durable",
 * and none comes: the next action is the final record's write). Every way this write can
 * fail keeps the same bytes (a retry) or throws the core's memory away (a relock replays
 * the log), so the core never acts on the record unless it is durable.
 */
static void fold_last_step_done(keel__saga_run_t *r)
{
    r->pre = malloc(r->u.record_len);
    if (r->pre == NULL)
        return; /* written alone */
    memcpy(r->pre, r->u.record, r->u.record_len);
    r->pre_len = r->u.record_len;
    r->pre_seq = r->u.seq;
    keel_saga_event_t ev = {.type = KEEL_SAGA_EV_LOGGED, .now_ms = unix_ms()};
    keel_saga_update_t u;
    int rc = keel_saga_step(&r->s, &ev, &u);
    assert(rc == 0 && u.action == KEEL_SAGA_ACT_LOG && u.rec_type == KEEL_SAGA_REC_DONE);
    (void)rc;
    r->u = u;
}

void keel__saga_write_log(keel__saga_run_t *r)
{
    if (r->u.rec_type == KEEL_SAGA_REC_STARTED && r->fresh) {
        write_start(r);
        return;
    }
    if (r->u.rec_type == KEEL_SAGA_REC_STEP_DONE && r->pre == NULL &&
        r->u.step + 1 == r->type->def.steps_n)
        fold_last_step_done(r);
    if (rec_final(r->u.rec_type)) {
        write_end(r);
        return;
    }
    char id[24];
    snprintf(id, sizeof(id), "0-%" PRIu32, r->u.seq);
    const char *argv[] = {"KEEL.FENCED", r->lock, r->token_str, "XADD",
                          r->log_key,    id,      "r",          (const char *)r->u.record};
    size_t lens[8];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    lens[7] = r->u.record_len;
    r->act_ns = keel_clock_now_ns();
    keel__saga_cmd(r, 8, argv, lens, on_log, keel__saga_act);
}
