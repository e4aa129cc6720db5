/* saga.c - the saga orchestrator: drives core/saga instances with a fenced log in keel server. */
#include "tx/saga.h"

#include "base/log.h"
#include "kit/call.h"
#include "runtime/clock.h"

#include <assert.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES_MAX (KEEL_SAGA_ID_BYTES_MAX + 16u)
#define RETRY_BASE_MS 50
#define RETRY_CAP_MS 1000
#define SCAN_COUNT "200"
#define OPEN_PREFIX "saga:open:"

typedef enum phase {
    P_LOCK,   /* KEEL.LOCK sent */
    P_LOAD,   /* XRANGE of the log sent */
    P_MARK,   /* the saga:open marker being written (a new saga) */
    P_ACT,    /* carrying out u.action */
    P_RENEW,  /* KEEL.TXN UNLOCK+LOCK sent */
    P_VERIFY, /* a repeated record being compared with the stored one */
    P_DEAD,   /* ended; freed once nothing refers to it */
} phase_t;

typedef enum timer_why { T_NONE, T_WAIT, T_RETRY, T_STEP } timer_why_t;

struct keel__saga_run {
    keel_list_t link;
    keel_sagas_t *o;
    const keel_saga_type_t *type;
    uint32_t type_i;
    keel_saga_t s;
    bool s_init;
    keel_saga_update_t u;
    char id[KEEL_SAGA_ID_BYTES_MAX + 1];
    char lock[KEY_BYTES_MAX], log_key[KEY_BYTES_MAX], open_key[KEY_BYTES_MAX];
    char token_str[24];
    uint64_t token;
    keel_ms_t locked_unix_ms;
    phase_t phase;
    bool starting; /* started here: begin if the log is empty */
    /* A start's KEEL.LOCK whose outcome was not seen (a timeout, -UNKNOWN across a leader
     * change): the lock may be ours under a token we never learnt, so "held" is not proof of
     * another owner until the lock's TTL has run out once. */
    bool lock_unknown, lock_waited;
    uint8_t *input;
    size_t input_len;
    keel_sagas_end_fn end;
    void *end_data;
    int refs; /* client requests in flight */
    keel_timer_t timer;
    bool timer_open;
    timer_why_t why;
    void (*retry)(keel__saga_run_t *r);
    uint32_t retries;
    keel_saga_call_t *call; /* the attempt in flight */
    uint32_t gen;
    keel_ns_t act_ns; /* when the action or write in flight started */
    keel_ns_t began_ns;
    keel_saga_state_t counted; /* the state this run is counted under in by_state */
    /* an outcome reported from inside the step function, handled once it returns */
    bool invoking, have_sync, sync_undo;
    keel_saga_outcome_t sync_out;
    uint32_t sync_step;
    uint8_t *sync_data;
    size_t sync_len;
};

static void act(keel__saga_run_t *r);
static void load(keel__saga_run_t *r);
static void relock(keel__saga_run_t *r);
static void run_end(keel__saga_run_t *r, int err);
static void arm(keel__saga_run_t *r, timer_why_t why, keel_ms_t after_ms);

/* ---- bookkeeping -------------------------------------------------------------------- */

static keel_ms_t unix_ms(void)
{
    return keel_clock_unix_ms();
}

static void count_state(keel__saga_run_t *r, keel_saga_state_t st)
{
    keel_sagas_t *o = r->o;
    assert(o->by_state[r->counted] > 0);
    o->by_state[r->counted]--;
    o->by_state[st]++;
    r->counted = st;
}

/* Everything that must end before close's callback: the client, the scan timer, a scan in
 * flight, and every run not yet freed. */
static void unref(keel_sagas_t *o)
{
    assert(o->handles > 0);
    if (--o->handles == 0 && o->closing && o->closed)
        o->closed(o);
}

static void client_closed(keel_client_t *cl);

/* Runs and scans still using the client; once none is left after close, it closes too, so
 * the requests that end a saga (its marker's DEL, the UNLOCK) are not cut off. */
static void work_done(keel_sagas_t *o)
{
    assert(o->work > 0);
    if (--o->work == 0 && o->closing && !o->client_closing) {
        o->client_closing = true;
        keel_client_close(&o->cl, client_closed);
    }
}

static void run_free_maybe(keel__saga_run_t *r)
{
    if (r->phase != P_DEAD || r->refs > 0 || r->timer_open)
        return;
    keel_sagas_t *o = r->o;
    if (r->s_init)
        keel_saga_free(&r->s);
    free(r->input);
    free(r->sync_data);
    free(r);
    work_done(o);
    unref(o);
}

static void timer_closed(keel_timer_t *t)
{
    keel__saga_run_t *r = KEEL_LIST_ENTRY(t, keel__saga_run_t, timer);
    r->timer_open = false;
    run_free_maybe(r);
}

/* Ends the run's life: no callback, no more requests; memory goes once replies are in. */
static void run_drop(keel__saga_run_t *r)
{
    if (r->phase == P_DEAD)
        return;
    keel_sagas_t *o = r->o;
    if (r->call) {
        r->call->run = NULL; /* its late answer is dropped */
        r->call = NULL;
    }
    o->by_state[r->counted]--;
    keel_list_remove(&r->link);
    o->runs_n--;
    r->phase = P_DEAD;
    keel_timer_close(&r->timer, timer_closed);
}

static void timer_fired(keel_timer_t *t, void *data)
{
    keel__saga_run_t *r = data;
    timer_why_t why = r->why;
    r->why = T_NONE;
    if (why == T_WAIT) {
        keel_saga_event_t ev = {.type = KEEL_SAGA_EV_TICK, .now_ms = unix_ms()};
        int rc = keel_saga_step(&r->s, &ev, &r->u);
        assert(rc == 0);
        act(r);
    } else if (why == T_RETRY) {
        r->retry(r);
    } else if (why == T_STEP && r->call) {
        /* the call's deadline, judged by the core: a timeout, or (a timer a little early)
         * not yet */
        keel_ms_t now = unix_ms();
        keel_saga_event_t ev = {.type = KEEL_SAGA_EV_TICK, .now_ms = now};
        keel_saga_update_t u;
        int rc = keel_saga_step(&r->s, &ev, &u);
        assert(rc == 0);
        if (u.action == KEEL_SAGA_ACT_NONE) {
            keel_ms_t left = keel_saga_next_deadline_ms(&r->s) - now;
            arm(r, T_STEP, left > 0 ? left : 1);
            return;
        }
        r->call->run = NULL; /* its late answer is dropped */
        r->call = NULL;
        r->u = u;
        act(r);
    }
}

static void arm(keel__saga_run_t *r, timer_why_t why, keel_ms_t after_ms)
{
    r->why = why;
    keel_timer_start(&r->timer, after_ms > 0 ? after_ms : 0, 0, timer_fired, r);
}

/* Tries fn again after a capped exponential backoff (keel server unreachable, a timeout). */
static void retry_later(keel__saga_run_t *r, void (*fn)(keel__saga_run_t *r))
{
    keel_ms_t c = RETRY_CAP_MS;
    if (r->retries < 10 && (RETRY_BASE_MS << r->retries) < RETRY_CAP_MS)
        c = RETRY_BASE_MS << r->retries;
    r->retries++;
    r->retry = fn;
    arm(r, T_RETRY, c / 2 + (keel_ms_t)keel_rand_below(&r->o->rand, (uint64_t)c / 2 + 1));
}

/* Sends a command for this run; the reply goes to fn with the run as ctx. */
static int cmd(keel__saga_run_t *r, size_t argc, const char *const *argv, const size_t *lens,
               keel_client_reply_fn fn, void (*again)(keel__saga_run_t *r))
{
    int rc = keel_client_command(&r->o->cl, argc, argv, lens, fn, r);
    if (rc == 0)
        r->refs++;
    else if (again)
        retry_later(r, again);
    return rc;
}

/* A reply arrived for r: false if r is dead (the reply is dropped). */
static bool reply_live(keel__saga_run_t *r)
{
    assert(r->refs > 0);
    r->refs--;
    if (r->phase == P_DEAD) {
        run_free_maybe(r);
        return false;
    }
    return true;
}

/* ---- ownership ---------------------------------------------------------------------- */

static void on_lock(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        if (r->starting && !r->s_init)
            r->lock_unknown = true;
        if (r->starting || r->s_init)
            retry_later(r, relock);
        else
            run_drop(r); /* an adoption: the next scan tries again */
        return;
    }
    if (v->type != KEEL_RESP_INT) { /* held by another owner */
        if (r->s_init) {
            r->o->stats.lost++;
            run_end(r, KEEL_ECANCELED); /* we had it, lost it, and someone else has it */
        } else if (r->starting && r->lock_unknown && !r->lock_waited) {
            /* maybe our own lost lock: ask again once it must have lapsed (a start that
             * ended EBUSY here left a placed order with no saga and nobody to adopt it) */
            r->lock_waited = true;
            r->retry = relock;
            arm(r, T_RETRY, r->o->cfg.lock_ttl_ms + 100);
        } else if (r->starting) {
            run_end(r, KEEL_EBUSY);
        } else {
            run_drop(r); /* an adoption whose owner is alive */
        }
        return;
    }
    r->token = (uint64_t)v->integer;
    snprintf(r->token_str, sizeof(r->token_str), "%" PRIu64, r->token);
    r->retries = 0;
    load(r);
}

/* Takes the lock (a start, an adoption, or after a fenced write: then with a new token). */
static void relock(keel__saga_run_t *r)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.LOCK", r->lock, ttl};
    r->phase = P_LOCK;
    r->locked_unix_ms = unix_ms();
    cmd(r, 3, argv, NULL, on_lock, relock);
}

static void on_renew(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    r->phase = P_ACT;
    if (status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2) {
        /* outcome unknown: go on with the old token; a fenced write relocks */
        act(r);
        return;
    }
    r->o->stats.renewals++;
    const keel_resp_value_t *unlocked = &v->elems[0], *locked = &v->elems[1];
    if (locked->type != KEEL_RESP_INT) { /* someone else holds it now */
        r->o->stats.lost++;
        run_end(r, KEEL_ECANCELED);
        return;
    }
    r->token = (uint64_t)locked->integer;
    snprintf(r->token_str, sizeof(r->token_str), "%" PRIu64, r->token);
    if (unlocked->type == KEEL_RESP_INT && unlocked->integer == 1) {
        act(r); /* held without a gap: memory is current */
        return;
    }
    load(r); /* the lock had lapsed: another owner may have moved the saga on */
}

/* Renews the lock in one entry (KEEL.LOCK cannot extend a held lock): UNLOCK with our token
 * and LOCK again. If ours, nobody can come between; if it had lapsed, we reload. */
static bool renew_if_due(keel__saga_run_t *r)
{
    keel_ms_t age = unix_ms() - r->locked_unix_ms;
    if (!r->o->cfg.renew_lock || age < r->o->cfg.lock_ttl_ms / 3)
        return false;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.TXN",  "0",     "2", "3", "KEEL.UNLOCK", r->lock, r->token_str, "3",
                          "KEEL.LOCK", r->lock, ttl};
    r->phase = P_RENEW;
    r->locked_unix_ms = unix_ms();
    if (cmd(r, sizeof(argv) / sizeof(argv[0]), argv, NULL, on_renew, NULL) != 0) {
        r->phase = P_ACT; /* could not even queue it: go on, a fenced write relocks */
        return false;
    }
    return true;
}

/* ---- the log ------------------------------------------------------------------------- */

static const keel_saga_type_t *type_named(const keel_sagas_t *o, const uint8_t *name, size_t len,
                                          uint32_t *index)
{
    for (uint32_t i = 0; i < o->types_n; i++)
        if (strlen(o->types[i]->def.name) == len && memcmp(o->types[i]->def.name, name, len) == 0) {
            *index = i;
            return o->types[i];
        }
    return NULL;
}

/* The record bytes of one XRANGE entry ([id, [field, value, ...]]), or NULL. */
static const keel_resp_value_t *entry_record(const keel_resp_value_t *e)
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

static void close_saga(keel__saga_run_t *r);
static void close_quietly(keel__saga_run_t *r);

static void on_mark(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v);

static void mark(keel__saga_run_t *r)
{
    const char *argv[] = {"KEEL.FENCED", r->lock,     r->token_str,
                          "SET",         r->open_key, r->type->def.name};
    r->phase = P_MARK;
    cmd(r, 6, argv, NULL, on_mark, mark);
}

static void on_mark(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    if (status == 0 && keel_resp_error_contains(v, "FENCED")) {
        relock(r);
        return;
    }
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        retry_later(r, mark);
        return;
    }
    r->retries = 0;
    r->phase = P_ACT;
    int rc = keel_saga_begin(&r->s, unix_ms(), r->input, r->input_len, &r->u);
    assert(rc == 0);
    r->o->stats.started++;
    act(r);
}

/* An adopted saga's type, named by its started record (the log's first entry); NULL if the
 * log is empty or the type is not registered here. */
static const keel_saga_type_t *type_of_log(keel__saga_run_t *r, const keel_resp_value_t *v)
{
    if (v->elems_len == 0)
        return NULL;
    const keel_resp_value_t *b = entry_record(&v->elems[0]);
    keel_saga_rec_t rec;
    if (b == NULL || keel_saga_rec_decode(b->str.ptr, b->str.len, &rec, NULL) != 0 ||
        rec.type != KEEL_SAGA_REC_STARTED || rec.data_len < 1u + rec.data[0])
        return NULL;
    return type_named(r->o, rec.data + 1, rec.data[0], &r->type_i);
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
        const keel_resp_value_t *b = entry_record(&v->elems[i]);
        rc = b ? keel_saga_replay(&r->s, b->str.ptr, b->str.len, msg)
               : keel_errf(msg, KEEL_ECORRUPT, "log entry %zu has no record", i);
    }
    return rc;
}

/* Goes on from a replayed log: begin a new saga, resume one in progress, or close. */
static void go_on(keel__saga_run_t *r)
{
    keel_sagas_t *o = r->o;
    count_state(r, r->s.state);
    if (r->s.state == KEEL_SAGA_NEW) {
        if (r->starting)
            mark(r);
        else
            close_quietly(r);
        return;
    }
    if (!r->starting && keel_saga_state_final(r->s.state)) {
        close_quietly(r); /* ended, its marker not yet gone (or the scan raced the end) */
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
    act(r);
}

/* The stored log is in: keep memory if nobody wrote since, else replay it; then go on. */
static void on_load(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    if (status != 0 || v->type != KEEL_RESP_ARRAY) {
        retry_later(r, load);
        return;
    }
    r->retries = 0;
    if (r->s_init && r->s.state != KEEL_SAGA_NEW && v->elems_len == r->s.seq) {
        /* Our lock had lapsed and we hold it again: nobody wrote meanwhile (a foreign
         * record would make the log longer than what we applied, as records are only
         * appended), so memory is still the log. Keep it, with the action pending: a
         * step's answer is not thrown away, or a step longer than the TTL would never end. */
        r->phase = P_ACT;
        act(r);
        return;
    }
    if (r->type == NULL) { /* adopted: the started record names the type */
        r->type = type_of_log(r, v);
        if (r->type == NULL && v->elems_len == 0) {
            close_quietly(r); /* its starter died before starting it */
            return;
        }
        if (r->type == NULL) {
            keel_log_warn("saga of an unknown type left alone", KF_STR("saga", r->id));
            run_drop(r);
            return;
        }
    }
    keel_errmsg_t msg = {{0}};
    int rc = replay_log(r, v, &msg);
    if (rc == KEEL_ENOMEM) {
        retry_later(r, load);
        return;
    }
    if (rc != 0) {
        r->o->stats.corrupt++;
        keel_log_error("saga log refused", KF_STR("saga", r->id), KF_STR("why", msg.text));
        run_end(r, KEEL_ECORRUPT);
        return;
    }
    go_on(r);
}

static void load(keel__saga_run_t *r)
{
    const char *argv[] = {"XRANGE", r->log_key, "-", "+"};
    r->phase = P_LOAD;
    cmd(r, 4, argv, NULL, on_load, load);
}

static void logged(keel__saga_run_t *r)
{
    keel_sagas_t *o = r->o;
    keel_ns_t took_ns = keel_clock_now_ns() - r->act_ns;
    o->stats.log_write_ns += (uint64_t)took_ns;
    if (o->m_log_write)
        keel_histogram_observe(o->m_log_write, (double)took_ns / KEEL_NS_PER_S);
    o->stats.log_writes++;
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
    count_state(r, r->s.state);
    act(r);
}

static void on_verify(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    const keel_resp_value_t *b = NULL;
    if (status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == 1)
        b = entry_record(&v->elems[0]);
    if (b && b->str.len == r->u.record_len && memcmp(b->str.ptr, r->u.record, b->str.len) == 0) {
        logged(r); /* our earlier write had landed */
        return;
    }
    if (status != 0) {
        r->phase = P_ACT;
        retry_later(r, act);
        return;
    }
    load(r); /* another record holds that place: what the log says wins */
}

static void on_log(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!reply_live(r))
        return;
    if (status == 0 && v->type == KEEL_RESP_BULK) {
        logged(r);
        return;
    }
    if (status == 0 && keel_resp_error_contains(v, "FENCED")) {
        r->o->stats.fenced++;
        if (r->o->m_fenced)
            keel_counter_inc(r->o->m_fenced);
        relock(r);
        return;
    }
    if (status == 0 &&
        keel_resp_error_contains(v, "equal or smaller")) { /* a repeat of a landed write? */
        char id[24];
        snprintf(id, sizeof(id), "0-%" PRIu32, r->u.seq);
        const char *argv[] = {"XRANGE", r->log_key, id, id};
        r->phase = P_VERIFY;
        cmd(r, 4, argv, NULL, on_verify, act);
        return;
    }
    /* -TIMEOUT, -UNKNOWN, a broken connection: the outcome is unknown; the same write
     * again is safe (same entry id) */
    r->o->stats.log_write_retries++;
    retry_later(r, act);
}

static void write_log(keel__saga_run_t *r)
{
    char id[24];
    snprintf(id, sizeof(id), "0-%" PRIu32, r->u.seq);
    const char *argv[] = {"KEEL.FENCED", r->lock, r->token_str, "XADD",
                          r->log_key,    id,      "r",          (const char *)r->u.record};
    size_t lens[8];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    lens[7] = r->u.record_len;
    r->act_ns = keel_clock_now_ns();
    cmd(r, 8, argv, lens, on_log, act);
}

/* ---- steps --------------------------------------------------------------------------- */

static void step_outcome(keel__saga_run_t *r, keel_saga_call_t *c, keel_saga_outcome_t out,
                         const uint8_t *data, size_t len)
{
    keel_sagas_t *o = r->o;
    keel_histogram_t *h = o->m_step[r->type_i][c->step];
    if (h && !c->undo)
        keel_histogram_observe(h, (double)(keel_clock_now_ns() - r->act_ns) / KEEL_NS_PER_S);
    keel_saga_event_t ev = {.now_ms = unix_ms(), .step = c->step, .data = data, .data_len = len};
    if (c->undo)
        ev.type = out == KEEL_SAGA_OK ? KEEL_SAGA_EV_UNDO_OK : KEEL_SAGA_EV_UNDO_FAILED;
    else
        ev.type = out == KEEL_SAGA_OK         ? KEEL_SAGA_EV_DO_OK
                  : out == KEEL_SAGA_BUSINESS ? KEEL_SAGA_EV_DO_FAILED
                                              : KEEL_SAGA_EV_DO_TRANSIENT;
    int rc = keel_saga_step(&r->s, &ev, &r->u);
    assert(rc == 0);
    act(r);
}

void keel_saga_call_done(keel_saga_call_t *c, keel_saga_outcome_t out, const void *result,
                         size_t len)
{
    keel__saga_run_t *r = c->run;
    if (r == NULL || r->call != c || r->gen != c->gen) { /* given up on: drop the answer */
        free(c);
        return;
    }
    r->call = NULL;
    if (r->why == T_STEP) {
        keel_timer_stop(&r->timer);
        r->why = T_NONE;
    }
    if (r->invoking) { /* answered inside the step function: handled once it returns */
        free(r->sync_data);
        r->sync_data = len ? malloc(len) : NULL;
        if (len && r->sync_data == NULL) {
            out = KEEL_SAGA_TRANSIENT; /* cannot keep the result: try again */
            len = 0;
        } else if (len) {
            memcpy(r->sync_data, result, len);
        }
        r->have_sync = true;
        r->sync_out = out;
        r->sync_step = c->step;
        r->sync_undo = c->undo;
        r->sync_len = len;
        free(c);
        return;
    }
    keel_saga_call_t copy = *c;
    free(c);
    step_outcome(r, &copy, out, result, len);
}

const uint8_t *keel_saga_call_result(const keel_saga_call_t *c, uint32_t i, size_t *len)
{
    if (c->run == NULL)
        return NULL;
    return keel_saga_result(&c->run->s, i, len);
}

static void invoke(keel__saga_run_t *r)
{
    const keel_saga_type_t *t = r->type;
    bool undo = r->u.action == KEEL_SAGA_ACT_UNDO;
    keel_saga_fn fn = undo ? t->fns[r->u.step].compensation : t->fns[r->u.step].action;
    size_t in_len = 0;
    const uint8_t *in = keel_saga_input(&r->s, &in_len);
    keel_saga_call_t *c = malloc(sizeof(*c) + in_len);
    if (c == NULL) {
        retry_later(r, act);
        return;
    }
    memset(c, 0, sizeof(*c));
    memcpy(c->key_buf, r->u.key, sizeof(c->key_buf));
    memcpy(c->id_buf, r->id, sizeof(c->id_buf));
    c->saga_id = c->id_buf;
    c->key = c->key_buf;
    c->step = r->u.step;
    c->attempt = r->u.attempt;
    c->undo = undo;
    keel_counter_t *retried = r->o->m_retry[r->type_i][c->step];
    if (!undo && c->attempt > 1 && retried)
        keel_counter_inc(retried);
    c->timeout_ms = r->u.timeout_ms;
    c->input = (const uint8_t *)(c + 1);
    if (in_len)
        memcpy(c + 1, in, in_len);
    c->input_len = in_len;
    c->loop = r->o->loop;
    c->run = r;
    c->gen = ++r->gen;
    r->call = c;
    r->act_ns = keel_clock_now_ns();
    arm(r, T_STEP, r->u.timeout_ms);
    r->invoking = true;
    fn(c, t->fns[r->u.step].data);
    r->invoking = false;
    if (r->have_sync) {
        r->have_sync = false;
        keel_saga_call_t k = {.step = r->sync_step, .undo = r->sync_undo};
        step_outcome(r, &k, r->sync_out, r->sync_data, r->sync_len);
    }
}

/* ---- carrying out the core's update ---------------------------------------------------- */

static void act(keel__saga_run_t *r)
{
    if (r->phase == P_DEAD)
        return;
    r->phase = P_ACT;
    switch (r->u.action) {
    case KEEL_SAGA_ACT_LOG:
        if (!renew_if_due(r))
            write_log(r);
        return;
    case KEEL_SAGA_ACT_DO:
    case KEEL_SAGA_ACT_UNDO:
        if (!renew_if_due(r))
            invoke(r);
        return;
    case KEEL_SAGA_ACT_WAIT:
        arm(r, T_WAIT, r->u.wake_ms - unix_ms());
        return;
    case KEEL_SAGA_ACT_FINISH:
        close_saga(r);
        return;
    default:
        assert(0);
    }
}

static void on_closed_req(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    reply_live(r);
}

/* The saga is final (or never started): drop the open marker, release the lock, end. The
 * marker and the unlock are best effort: a marker left behind is found by the next scan,
 * whose replay sees a final log and comes back here. */
static void close_quietly(keel__saga_run_t *r)
{
    const char *del[] = {"KEEL.FENCED", r->lock, r->token_str, "DEL", r->open_key};
    const char *unlock[] = {"KEEL.UNLOCK", r->lock, r->token_str};
    cmd(r, 5, del, NULL, on_closed_req, NULL);
    cmd(r, 3, unlock, NULL, on_closed_req, NULL);
    run_drop(r);
}

static void close_saga(keel__saga_run_t *r)
{
    const char *del[] = {"KEEL.FENCED", r->lock, r->token_str, "DEL", r->open_key};
    const char *unlock[] = {"KEEL.UNLOCK", r->lock, r->token_str};
    cmd(r, 5, del, NULL, on_closed_req, NULL);
    cmd(r, 3, unlock, NULL, on_closed_req, NULL);
    run_end(r, 0);
}

static void run_end(keel__saga_run_t *r, int err)
{
    keel_sagas_t *o = r->o;
    keel_saga_state_t st = r->s_init ? r->s.state : KEEL_SAGA_NEW;
    if (err == 0 && keel_saga_state_final(st)) {
        o->stats.finished[st]++;
        if (o->m_finished[st])
            keel_counter_inc(o->m_finished[st]);
        if (r->type && o->m_saga[r->type_i])
            keel_histogram_observe(o->m_saga[r->type_i],
                                   (double)(keel_clock_now_ns() - r->began_ns) / KEEL_NS_PER_S);
        keel_log_info("saga ended", KF_STR("saga", r->id),
                      KF_STR("state", keel_saga_state_name(st)));
    }
    keel_sagas_end_fn end = r->end;
    void *end_data = r->end_data;
    char id[sizeof(r->id)];
    memcpy(id, r->id, sizeof(id));
    bool report = err != 0 || keel_saga_state_final(st);
    bool starting = r->starting;
    run_drop(r);
    if (end && (report || starting))
        end(o, id, err, st, end_data);
    if (o->cfg.on_end && report && !o->closing)
        o->cfg.on_end(o, id, err, st, o->cfg.on_end_data);
}

/* ---- runs ------------------------------------------------------------------------------- */

static keel__saga_run_t *run_find(keel_sagas_t *o, const char *id)
{
    keel_list_t *it;
    KEEL_LIST_FOREACH(it, &o->runs)
    {
        keel__saga_run_t *r = KEEL_LIST_ENTRY(it, keel__saga_run_t, link);
        if (strcmp(r->id, id) == 0)
            return r;
    }
    return NULL;
}

static keel__saga_run_t *run_new(keel_sagas_t *o, const char *id)
{
    keel__saga_run_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    if (keel_timer_init(o->loop, &r->timer) != 0) {
        free(r);
        return NULL;
    }
    r->timer_open = true;
    r->o = o;
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->lock, sizeof(r->lock), "saga:%s", id);
    snprintf(r->log_key, sizeof(r->log_key), "saga:%s:log", id);
    snprintf(r->open_key, sizeof(r->open_key), OPEN_PREFIX "%s", id);
    r->began_ns = keel_clock_now_ns();
    r->counted = KEEL_SAGA_NEW;
    o->by_state[KEEL_SAGA_NEW]++;
    keel_list_init(&r->link);
    keel_list_insert_tail(&o->runs, &r->link);
    o->runs_n++;
    o->handles++;
    o->work++;
    return r;
}

int keel_sagas_start(keel_sagas_t *o, const char *type, const char *id, const void *input,
                     size_t input_len, keel_sagas_end_fn end, void *data)
{
    if (o->closing)
        return KEEL_ECLOSED;
    uint32_t ti = 0;
    const keel_saga_type_t *t =
        type ? type_named(o, (const uint8_t *)type, strlen(type), &ti) : NULL;
    if (t == NULL || !keel_saga_id_valid(id, KEEL_SAGA_ID_BYTES_MAX))
        return KEEL_EINVAL;
    if (input_len > t->def.input_bytes_max)
        return KEEL_ETOOBIG;
    if (o->runs_n >= o->cfg.runs_max)
        return KEEL_EFULL;
    if (run_find(o, id))
        return KEEL_EEXISTS;
    keel__saga_run_t *r = run_new(o, id);
    if (r == NULL)
        return KEEL_ENOMEM;
    r->type = t;
    r->type_i = ti;
    r->starting = true;
    r->end = end;
    r->end_data = data;
    r->input = malloc(input_len ? input_len : 1);
    if (r->input == NULL) {
        run_drop(r);
        return KEEL_ENOMEM;
    }
    if (input_len)
        memcpy(r->input, input, input_len);
    r->input_len = input_len;
    relock(r);
    return 0;
}

/* ---- adopting orphans: the scan ----------------------------------------------------------- */

static void scan_step(keel_sagas_t *o);

static void on_scan(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    unref(o); /* the reply is in; the scan's work unit is released at the end */
    if (o->closing || status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
        v->elems[0].type != KEEL_RESP_BULK || v->elems[1].type != KEEL_RESP_ARRAY ||
        v->elems[0].str.len >= sizeof(o->scan_cursor)) {
        o->scanning = false; /* the next interval starts over */
        work_done(o);
        return;
    }
    memcpy(o->scan_cursor, v->elems[0].str.ptr, v->elems[0].str.len);
    o->scan_cursor[v->elems[0].str.len] = '\0';
    const keel_resp_value_t *keys = &v->elems[1];
    for (size_t i = 0; i < keys->elems_len; i++) {
        const keel_resp_value_t *k = &keys->elems[i];
        size_t pre = strlen(OPEN_PREFIX);
        if (k->type != KEEL_RESP_BULK || k->str.len <= pre ||
            k->str.len - pre > KEEL_SAGA_ID_BYTES_MAX)
            continue;
        char id[KEEL_SAGA_ID_BYTES_MAX + 1];
        memcpy(id, k->str.ptr + pre, k->str.len - pre);
        id[k->str.len - pre] = '\0';
        if (!keel_saga_id_valid(id, KEEL_SAGA_ID_BYTES_MAX) || run_find(o, id) ||
            o->runs_n >= o->cfg.runs_max)
            continue;
        keel__saga_run_t *r = run_new(o, id);
        if (r)
            relock(r); /* nil if its owner is alive: dropped quietly */
    }
    if (strcmp(o->scan_cursor, "0") == 0)
        o->scanning = false;
    else
        scan_step(o);
    work_done(o);
}

static void scan_step(keel_sagas_t *o)
{
    const char *argv[] = {"SCAN", o->scan_cursor, "MATCH", OPEN_PREFIX "*", "COUNT", SCAN_COUNT};
    if (keel_client_command(&o->cl, 6, argv, NULL, on_scan, o) != 0)
        o->scanning = false;
    else {
        o->handles++;
        o->work++;
    }
}

static void scan_tick(keel_timer_t *t, void *data)
{
    keel_sagas_t *o = data;
    if (o->scanning || o->closing)
        return;
    o->scanning = true;
    snprintf(o->scan_cursor, sizeof(o->scan_cursor), "0");
    scan_step(o);
}

/* ---- the orchestrator ------------------------------------------------------------------ */

int keel_saga_type_step(keel_saga_type_t *t, const char *name, keel_saga_fn action,
                        keel_saga_fn compensation, void *data)
{
    int i = keel_saga_def_step(&t->def, name);
    if (i < 0)
        return i;
    t->fns[i].action = action;
    t->fns[i].compensation = compensation;
    t->fns[i].data = data;
    t->def.steps[i].no_compensation = compensation == NULL;
    return i;
}

keel_sagas_config_t keel_sagas_config_default(void)
{
    keel_sagas_config_t c;
    memset(&c, 0, sizeof(c));
    c.lock_ttl_ms = 10000;
    c.scan_interval_ms = 1000;
    c.request_timeout_ms = 5000;
    c.runs_max = 1024;
    c.renew_lock = true;
    return c;
}

static double gauge_state(void *data)
{
    const struct keel__sagas_gauge *g = data;
    return (double)g->o->by_state[g->state];
}

static void register_metrics(keel_sagas_t *o)
{
    keel_metrics_t *m = o->cfg.metrics;
    if (m == NULL)
        return;
    o->gauges[0] = (struct keel__sagas_gauge){o, KEEL_SAGA_RUNNING};
    o->gauges[1] = (struct keel__sagas_gauge){o, KEEL_SAGA_COMPENSATING};
    keel_metrics_gauge_fn(m, "keel_sagas", "Sagas this orchestrator is driving, by state.",
                          "state=\"running\"", gauge_state, &o->gauges[0]);
    keel_metrics_gauge_fn(m, "keel_sagas", "Sagas this orchestrator is driving, by state.",
                          "state=\"compensating\"", gauge_state, &o->gauges[1]);
    static const keel_saga_state_t finals[] = {KEEL_SAGA_DONE, KEEL_SAGA_COMPENSATED,
                                               KEEL_SAGA_NEEDS_ATTENTION};
    for (size_t i = 0; i < 3; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "state=\"%s\"", keel_saga_state_name(finals[i]));
        o->m_finished[finals[i]] = keel_metrics_counter(
            m, "keel_sagas_finished_total", "Sagas ended here, by final state.", labels);
    }
    o->m_adopted = keel_metrics_counter(m, "keel_saga_adopted_total",
                                        "Sagas resumed from the log after their owner died.", "");
    o->m_fenced = keel_metrics_counter(m, "keel_saga_fenced_total",
                                       "Log writes refused because another owner took over.", "");
    o->m_log_write = keel_metrics_histogram(m, "keel_saga_log_write_seconds",
                                            "Fenced saga log writes to keel server.", "", NULL, 0);
}

int keel_sagas_init(keel_sagas_t *o, keel_loop_t *loop, const keel_sagas_config_t *cfg,
                    keel_errmsg_t *msg)
{
    memset(o, 0, sizeof(*o));
    if (cfg->seeds_n == 0 || cfg->lock_ttl_ms < 300 || cfg->runs_max == 0 ||
        cfg->runs_max > KEEL_SAGAS_RUNS_LIMIT || cfg->scan_interval_ms < 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "sagas need seeds, lock_ttl_ms >= 300, runs_max in 1..%u",
                         KEEL_SAGAS_RUNS_LIMIT);
    o->loop = loop;
    o->cfg = *cfg;
    keel_rand_seed(&o->rand, cfg->seed);
    keel_list_init(&o->runs);
    keel_client_config_t cc = keel_client_config_default();
    for (size_t i = 0; i < cfg->seeds_n && i < KEEL_CLIENT_SEEDS_MAX; i++)
        cc.seeds[i] = cfg->seeds[i];
    cc.seeds_n = cfg->seeds_n;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.seed = keel_mix64(cfg->seed);
    int rc = keel_client_init(&o->cl, loop, &cc, msg);
    if (rc != 0)
        return rc;
    rc = keel_timer_init(loop, &o->scan_timer);
    if (rc != 0) {
        keel_client_close(&o->cl, NULL);
        return keel_errf(msg, rc, "scan timer");
    }
    if (cfg->scan_interval_ms > 0)
        keel_timer_start(&o->scan_timer, cfg->scan_interval_ms / 4 + 1, cfg->scan_interval_ms,
                         scan_tick, o);
    o->handles = 2; /* the client and the scan timer */
    register_metrics(o);
    return 0;
}

int keel_sagas_register(keel_sagas_t *o, const keel_saga_type_t *t, keel_errmsg_t *msg)
{
    int rc = keel_saga_def_validate(&t->def, msg);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < t->def.steps_n; i++) {
        if (t->fns[i].action == NULL)
            return keel_errf(msg, KEEL_EINVAL, "step %s has no action", t->def.steps[i].name);
        if (t->fns[i].compensation == NULL && !t->def.steps[i].no_compensation)
            return keel_errf(msg, KEEL_EINVAL, "step %s has no compensation", t->def.steps[i].name);
    }
    uint32_t ti;
    if (type_named(o, (const uint8_t *)t->def.name, strlen(t->def.name), &ti))
        return keel_errf(msg, KEEL_EEXISTS, "saga type %s registered twice", t->def.name);
    if (o->types_n >= KEEL_SAGAS_TYPES_MAX)
        return keel_errf(msg, KEEL_EFULL, "more than %u saga types", KEEL_SAGAS_TYPES_MAX);
    ti = o->types_n++;
    o->types[ti] = t;
    if (o->cfg.metrics) {
        char labels[160];
        snprintf(labels, sizeof(labels), "saga=\"%s\"", t->def.name);
        o->m_saga[ti] =
            keel_metrics_histogram(o->cfg.metrics, "keel_saga_seconds",
                                   "Sagas from start (or adoption) to their end.", labels, NULL, 0);
        for (uint32_t i = 0; i < t->def.steps_n; i++) {
            snprintf(labels, sizeof(labels), "saga=\"%s\",step=\"%s\"", t->def.name,
                     t->def.steps[i].name);
            o->m_step[ti][i] = keel_metrics_histogram(
                o->cfg.metrics, "keel_saga_step_seconds",
                "Each attempt of a saga step's action, until its outcome.", labels, NULL, 0);
            o->m_retry[ti][i] = keel_metrics_counter(
                o->cfg.metrics, "keel_saga_step_retries_total",
                "Attempts of a saga step's action after its first (transient failures).", labels);
            static const char *const kinds[2] = {"refused", "gave_up"};
            for (int k = 0; k < 2; k++) {
                char fl[200];
                snprintf(fl, sizeof(fl), "%s,kind=\"%s\"", labels, kinds[k]);
                o->m_fail[ti][i][k] = keel_metrics_counter(
                    o->cfg.metrics, "keel_saga_step_failures_total",
                    "Saga steps that failed: refused by the service, or given up after "
                    "transient failures (attempts or time used up; maybe applied).",
                    fl);
            }
        }
    }
    return 0;
}

uint32_t keel_sagas_running(const keel_sagas_t *o)
{
    return o->runs_n;
}

static void client_closed(keel_client_t *cl)
{
    unref(KEEL_LIST_ENTRY(cl, keel_sagas_t, cl));
}

static void scan_timer_closed(keel_timer_t *t)
{
    unref(KEEL_LIST_ENTRY(t, keel_sagas_t, scan_timer));
}

void keel_sagas_close(keel_sagas_t *o, void (*closed)(keel_sagas_t *o))
{
    assert(!o->closing);
    o->closing = true;
    o->closed = closed;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &o->runs)
    {
        keel__saga_run_t *r = KEEL_LIST_ENTRY(it, keel__saga_run_t, link);
        keel_sagas_end_fn end = r->end;
        void *end_data = r->end_data;
        char id[sizeof(r->id)];
        memcpy(id, r->id, sizeof(id));
        bool starting = r->starting;
        run_drop(r);
        if (end && starting)
            end(o, id, KEEL_ECANCELED, KEEL_SAGA_NEW, end_data);
    }
    keel_timer_close(&o->scan_timer, scan_timer_closed);
    o->work++;
    work_done(o); /* closes the client now if nothing is in flight */
}

/* ---- steps through the kit ------------------------------------------------------------ */

static void http_done(int err, const keel_http_msg_t *resp, void *data)
{
    keel_saga_call_t *c = data;
    if (err != 0) {
        const char *why = keel_strerror(err);
        keel_saga_call_done(c, KEEL_SAGA_TRANSIENT, why, strlen(why));
        return;
    }
    int st = resp->status;
    keel_saga_outcome_t out = KEEL_SAGA_TRANSIENT;
    if (st >= 200 && st < 300)
        out = KEEL_SAGA_OK;
    else if (!c->undo && st >= 400 && st < 500 && st != 408 && st != 409 && st != 425 && st != 429)
        out = KEEL_SAGA_BUSINESS;
    keel_saga_call_done(c, out, resp->body, resp->body_len);
}

static void http_call(keel_saga_call_t *c, struct keel_caller *caller, const char *path)
{
    keel_http_header_t hdr[2] = {
        {.name = "Idempotency-Key", .name_len = 15, .value = c->key, .value_len = strlen(c->key)},
        {.name = "X-Keel-Saga",
         .name_len = 11,
         .value = c->saga_id,
         .value_len = strlen(c->saga_id)},
    };
    keel_call_t call = {.method = HTTP_POST,
                        .target = path,
                        .headers = hdr,
                        .headers_count = 2,
                        .body = c->input,
                        .body_len = c->input_len,
                        .deadline_ms = keel_loop_now_ms(c->loop) + c->timeout_ms,
                        .idempotent = true};
    int rc = keel_caller_call(caller, &call, http_done, c);
    if (rc != 0) {
        const char *why = keel_strerror(rc);
        keel_saga_call_done(c, KEEL_SAGA_TRANSIENT, why, strlen(why));
    }
}

void keel_saga_http_step(keel_saga_call_t *call, void *data)
{
    const keel_saga_http_t *h = data;
    http_call(call, h->caller, h->path);
}

void keel_saga_http_undo(keel_saga_call_t *call, void *data)
{
    const keel_saga_http_t *h = data;
    http_call(call, h->undo_caller ? h->undo_caller : h->caller, h->undo_path);
}
