/* saga.c - the saga orchestrator's driver: drives core/saga instances with a fenced log in
   keel server (runs, their timers and requests, the lock, steps, the end). */
#include "tx/saga_int.h"

#include "base/log.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void arm(keel__saga_run_t *r, timer_why_t why, keel_ms_t after_ms);
static void close_saga(keel__saga_run_t *r);
static void renew_during_call(keel__saga_run_t *r);
static keel_ms_t step_wait(const keel__saga_run_t *r, keel_ms_t until_deadline);

/* ---- bookkeeping -------------------------------------------------------------------- */

void keel__saga_count_state(keel__saga_run_t *r, keel_saga_state_t st)
{
    keel_sagas_t *o = r->o;
    assert(o->by_state[r->counted] > 0);
    o->by_state[r->counted]--;
    o->by_state[st]++;
    r->counted = st;
}

/* Everything that must end before close's callback: the client, the scan timer, a scan in
 * flight, and every run not yet freed. */
void keel__saga_unref(keel_sagas_t *o)
{
    assert(o->handles > 0);
    if (--o->handles > 0 || !o->closing)
        return;
    keel_map_free(&o->scan_seen, NULL);
    keel_map_free(&o->scan_prev, NULL);
    if (o->closed)
        o->closed(o);
}

/* Runs and scans still using the client; once none is left after close, it closes too, so
 * the requests that end a saga (its marker's DEL, the UNLOCK) are not cut off. */
void keel__saga_work_done(keel_sagas_t *o)
{
    assert(o->work > 0);
    if (--o->work == 0 && o->closing && !o->client_closing) {
        o->client_closing = true;
        keel_client_close(&o->cl, keel__saga_client_closed);
        keel_client_lanes_close(&o->lanes, keel__saga_lanes_closed);
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
    free(r->pre);
    free(r);
    keel__saga_work_done(o);
    keel__saga_unref(o);
}

static void timer_closed(keel_timer_t *t)
{
    keel__saga_run_t *r = KEEL_LIST_ENTRY(t, keel__saga_run_t, timer);
    r->timer_open = false;
    run_free_maybe(r);
}

/* Ends the run's life: no callback, no more requests; memory goes once replies are in. */
void keel__saga_run_drop(keel__saga_run_t *r)
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
        keel__saga_act(r);
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
            renew_during_call(r);
            keel_ms_t left = keel_saga_next_deadline_ms(&r->s) - now;
            arm(r, T_STEP, step_wait(r, left > 0 ? left : 1));
            return;
        }
        r->call->run = NULL; /* its late answer is dropped */
        r->call = NULL;
        r->u = u;
        keel__saga_act(r);
    }
}

static void arm(keel__saga_run_t *r, timer_why_t why, keel_ms_t after_ms)
{
    r->why = why;
    keel_timer_start(&r->timer, after_ms > 0 ? after_ms : 0, 0, timer_fired, r);
}

/* Tries fn again after a capped exponential backoff (keel server unreachable, a timeout). */
void keel__saga_retry_later(keel__saga_run_t *r, void (*fn)(keel__saga_run_t *r))
{
    keel_ms_t c = RETRY_CAP_MS;
    if (r->retries < 10 && (RETRY_BASE_MS << r->retries) < RETRY_CAP_MS)
        c = RETRY_BASE_MS << r->retries;
    r->retries++;
    r->retry = fn;
    arm(r, T_RETRY, c / 2 + (keel_ms_t)keel_rand_below(&r->o->rand, (uint64_t)c / 2 + 1));
}

/* Sends a command for this run; the reply goes to fn with the run as ctx. */
int keel__saga_cmd(keel__saga_run_t *r, size_t argc, const char *const *argv, const size_t *lens,
                   keel_client_reply_fn fn, void (*again)(keel__saga_run_t *r))
{
    int rc = keel_client_command(r->cl, argc, argv, lens, fn, r);
    if (rc == 0)
        r->refs++;
    else if (again)
        keel__saga_retry_later(r, again);
    return rc;
}

/* A reply arrived for r: false if r is dead (the reply is dropped). */
bool keel__saga_reply_live(keel__saga_run_t *r)
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

/* The lock is held by another (a KEEL.LOCK or KEEL.LOCKRUN answered nil). */
void keel__saga_lock_refused(keel__saga_run_t *r)
{
    if (r->owned) {
        r->o->stats.lost++;
        keel__saga_run_end(r, KEEL_ECANCELED); /* we had it, lost it, and someone else has it */
    } else if (r->starting && r->lock_unknown && !r->lock_waited) {
        /* maybe our own lost lock: ask again once it must have lapsed (a start that
         * ended EBUSY here left a placed order with no saga and nobody to adopt it) */
        r->lock_waited = true;
        r->retry = keel__saga_relock;
        arm(r, T_RETRY, r->o->cfg.lock_ttl_ms + 100);
    } else if (r->starting) {
        keel__saga_run_end(r, KEEL_EBUSY);
    } else {
        keel__saga_run_drop(r); /* an adoption whose owner is alive */
    }
}

/* The lock is ours under token. */
void keel__saga_locked(keel__saga_run_t *r, int64_t token)
{
    r->token = (uint64_t)token;
    snprintf(r->token_str, sizeof(r->token_str), "%" PRIu64, r->token);
    r->owned = true;
    r->retries = 0;
    r->lock_unknown = r->lock_waited = false;
}

static void on_lock(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    if (status != 0 || v->type == KEEL_RESP_ERROR) {
        if (r->starting && !r->owned)
            r->lock_unknown = true;
        if (r->starting || r->owned)
            keel__saga_retry_later(r, keel__saga_relock);
        else
            keel__saga_run_drop(r); /* an adoption: the next scan tries again */
        return;
    }
    if (v->type != KEEL_RESP_INT) {
        keel__saga_lock_refused(r);
        return;
    }
    keel__saga_locked(r, v->integer);
    keel__saga_load(r);
}

/*
 * A renewal found the lock held under another token. After a renewal of unknown outcome that
 * token may be our own, never learnt: wait out one TTL (the call in flight, if any, is
 * dropped; the step runs again under its key after the reload) and take the lock again.
 * Otherwise another owner has the saga.
 */
static void held_by_another(keel__saga_run_t *r)
{
    if (r->lock_unknown && !r->lock_waited) {
        r->lock_waited = true;
        if (r->call) {
            r->call->run = NULL; /* its late answer is dropped */
            r->call = NULL;
        }
        r->retry = keel__saga_relock;
        arm(r, T_RETRY, r->o->cfg.lock_ttl_ms + 100);
        return;
    }
    r->o->stats.lost++;
    keel__saga_run_end(r, KEEL_ECANCELED);
}

/* A renewal answered with the new token: learnt, and the next action needs no renewal. */
static void renewed(keel__saga_run_t *r, const keel_resp_value_t *locked)
{
    r->o->stats.renewals++;
    r->token = (uint64_t)locked->integer;
    snprintf(r->token_str, sizeof(r->token_str), "%" PRIu64, r->token);
    r->lock_unknown = r->lock_waited = false;
    r->just_renewed = true;
}

/* Takes the lock (a start, an adoption, or after a fenced write: then with a new token). */
void keel__saga_relock(keel__saga_run_t *r)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.LOCK", r->lock, ttl};
    r->phase = P_LOCK;
    r->locked_unix_ms = unix_ms();
    keel__saga_cmd(r, 3, argv, NULL, on_lock, keel__saga_relock);
}

static void on_renew(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    r->phase = P_ACT;
    if (status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2) {
        /* outcome unknown: go on with the old token; a fenced write relocks */
        r->lock_unknown = true;
        keel__saga_act(r);
        return;
    }
    const keel_resp_value_t *unlocked = &v->elems[0], *locked = &v->elems[1];
    if (locked->type != KEEL_RESP_INT) { /* someone else holds it now (or our unknown token) */
        held_by_another(r);
        return;
    }
    renewed(r, locked);
    if (unlocked->type == KEEL_RESP_INT && unlocked->integer == 1) {
        keel__saga_act(r); /* held without a gap: memory is current */
        return;
    }
    keel__saga_load(r); /* the lock had lapsed: another owner may have moved the saga on */
}

/* Renews the lock in one entry (KEEL.LOCK cannot extend a held lock): UNLOCK with our token
 * and LOCK again. If ours, nobody can come between; if it had lapsed, we reload. */
static bool renew_if_due(keel__saga_run_t *r)
{
    keel_ms_t age = unix_ms() - r->locked_unix_ms;
    bool just = r->just_renewed;
    r->just_renewed = false;
    if (!r->o->cfg.renew_lock || !r->owned || age < r->o->cfg.lock_ttl_ms / 3 || just)
        return false; /* not owned yet: a start's KEEL.LOCKRUN takes the lock */
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.TXN",  "0",     "2", "3", "KEEL.UNLOCK", r->lock, r->token_str, "3",
                          "KEEL.LOCK", r->lock, ttl};
    r->phase = P_RENEW;
    r->locked_unix_ms = unix_ms();
    if (keel__saga_cmd(r, sizeof(argv) / sizeof(argv[0]), argv, NULL, on_renew, NULL) != 0) {
        r->phase = P_ACT; /* could not even queue it: go on, a fenced write relocks */
        return false;
    }
    return true;
}

/* When the lock is next due for renewal, from now (the step timer wakes for it too). */
static keel_ms_t step_wait(const keel__saga_run_t *r, keel_ms_t until_deadline)
{
    if (!r->o->cfg.renew_lock)
        return until_deadline;
    if (r->renewing) /* its answer decides what comes next: no wake for a due time passed */
        return until_deadline < r->o->cfg.lock_ttl_ms / 3 ? until_deadline
                                                          : r->o->cfg.lock_ttl_ms / 3;
    keel_ms_t due = r->locked_unix_ms + r->o->cfg.lock_ttl_ms / 3 - unix_ms();
    due = due > 1 ? due : 1;
    return due < until_deadline ? due : until_deadline;
}

static void on_renew_during_call(keel_client_t *cl, void *ctx, int status,
                                 const keel_resp_value_t *v)
{
    keel__saga_run_t *r = ctx;
    if (!keel__saga_reply_live(r))
        return;
    r->renewing = false;
    if (status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == 2) {
        const keel_resp_value_t *unlocked = &v->elems[0], *locked = &v->elems[1];
        if (locked->type != KEEL_RESP_INT) { /* another owner took it while the step ran */
            held_by_another(r);
            return;
        }
        renewed(r, locked);
        r->just_renewed = r->act_after_renew; /* the action waiting for it goes ahead */
        if (!(unlocked->type == KEEL_RESP_INT && unlocked->integer == 1))
            r->relock_lapsed = true; /* held again, but not without a gap */
    } else { /* outcome unknown: the old token may still hold; a fenced write relocks */
        r->lock_unknown = true;
    }
    if (r->act_after_renew) {
        r->act_after_renew = false;
        keel__saga_act(r);
    }
}

/*
 * A step still in flight once a third of the TTL has passed: the lock is renewed beside it
 * (found in regions: a reserve slowed by contention outlived the order service's 2 s lock,
 * another instance adopted the saga mid-step, and the two fought over it). The driver
 * holds its next command until the reply, so nothing is sent under a token being replaced.
 */
static void renew_during_call(keel__saga_run_t *r)
{
    keel_ms_t now = unix_ms();
    if (!r->o->cfg.renew_lock || !r->owned || r->renewing || r->call == NULL ||
        now - r->locked_unix_ms < r->o->cfg.lock_ttl_ms / 3)
        return;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->o->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.TXN",  "0",     "2", "3", "KEEL.UNLOCK", r->lock, r->token_str, "3",
                          "KEEL.LOCK", r->lock, ttl};
    keel_ms_t before = r->locked_unix_ms;
    r->locked_unix_ms = now;
    if (keel__saga_cmd(r, sizeof(argv) / sizeof(argv[0]), argv, NULL, on_renew_during_call, NULL) !=
        0) {
        /* not sent (the client's queue is full): due again RETRY_BASE_MS from now, not at
         * once (the step timer would wake every millisecond) */
        keel_ms_t retry_at = now - r->o->cfg.lock_ttl_ms / 3 + RETRY_BASE_MS;
        r->locked_unix_ms = retry_at > before ? retry_at : before;
        return;
    }
    r->renewing = true;
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
    keel__saga_act(r);
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
        keel__saga_retry_later(r, keel__saga_act);
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
    arm(r, T_STEP, step_wait(r, r->u.timeout_ms));
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

void keel__saga_act(keel__saga_run_t *r)
{
    if (r->phase == P_DEAD)
        return;
    if (r->renewing) { /* a renewal beside the last step: its token first */
        r->act_after_renew = true;
        return;
    }
    if (r->relock_lapsed) { /* the lock lapsed during the step: the log is the truth */
        r->relock_lapsed = false;
        keel__saga_load(r);
        return;
    }
    r->phase = P_ACT;
    switch (r->u.action) {
    case KEEL_SAGA_ACT_LOG:
        if (!renew_if_due(r))
            keel__saga_write_log(r);
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
    keel__saga_reply_live(r);
}

/* The saga is final (or never started): drop the open marker, release the lock, end. The
 * marker and the unlock are best effort: a marker left behind is found by the next scan,
 * whose replay sees a final log and comes back here. */
void keel__saga_close_quietly(keel__saga_run_t *r)
{
    const char *del[] = {"KEEL.FENCED", r->lock, r->token_str, "HDEL", OPEN_KEY, r->id};
    const char *unlock[] = {"KEEL.UNLOCK", r->lock, r->token_str};
    keel__saga_cmd(r, 6, del, NULL, on_closed_req, NULL);
    keel__saga_cmd(r, 3, unlock, NULL, on_closed_req, NULL);
    keel__saga_run_drop(r);
}

static void close_saga(keel__saga_run_t *r)
{
    if (!r->closed) { /* a log replayed to its end: the marker and lock may still be there */
        const char *del[] = {"KEEL.FENCED", r->lock, r->token_str, "HDEL", OPEN_KEY, r->id};
        const char *unlock[] = {"KEEL.UNLOCK", r->lock, r->token_str};
        keel__saga_cmd(r, 6, del, NULL, on_closed_req, NULL);
        keel__saga_cmd(r, 3, unlock, NULL, on_closed_req, NULL);
    }
    keel__saga_run_end(r, 0);
}

void keel__saga_run_end(keel__saga_run_t *r, int err)
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
    keel__saga_run_drop(r);
    if (end && (report || starting))
        end(o, id, err, st, end_data);
    if (o->cfg.on_end && report && !o->closing)
        o->cfg.on_end(o, id, err, st, o->cfg.on_end_data);
}

/* ---- runs ------------------------------------------------------------------------------- */

keel__saga_run_t *keel__saga_run_find(keel_sagas_t *o, const char *id)
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

keel__saga_run_t *keel__saga_run_new(keel_sagas_t *o, const char *id)
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
    r->cl = &o->lanes.c[keel_client_lanes_index(&o->lanes, id, strlen(id))];
    snprintf(r->lock, sizeof(r->lock), "saga:%s", id);
    snprintf(r->log_key, sizeof(r->log_key), "saga:%s:log", id);
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
        type ? keel__saga_type_named(o, (const uint8_t *)type, strlen(type), &ti) : NULL;
    if (t == NULL || !keel__saga_id_ok(id))
        return KEEL_EINVAL;
    if (input_len > t->def.input_bytes_max)
        return KEEL_ETOOBIG;
    keel__saga_run_t *r = keel__saga_run_find(o, id);
    if (r != NULL) {
        /* The scan is adopting this id (its lock asked for, its log being read, or the saga
         * resumed): the start joins that run, so its end is reported (EBUSY if the owner is
         * alive, or the saga's end). Before 6 Dec this answered EEXISTS, and the adoption
         * could then end without a report (an owner alive, a log found final): a caller
         * told "this orchestrator runs it" never heard of the saga again (keel-saga demo
         * under the nemesis, tests/system/test_saga_nemesis.py). */
        if (r->starting || (r->type != NULL && r->type != t))
            return KEEL_EEXISTS;
        uint8_t *in = NULL;
        if (!r->s_init && (in = malloc(input_len ? input_len : 1)) == NULL)
            return KEEL_ENOMEM;
        if (in != NULL) {
            if (input_len)
                memcpy(in, input, input_len);
            free(r->input);
            r->input = in;
            r->input_len = input_len;
        }
        r->type = t;
        r->type_i = ti;
        r->starting = true;
        r->end = end;
        r->end_data = data;
        return 0;
    }
    if (o->runs_n >= o->cfg.runs_max)
        return KEEL_EFULL;
    r = keel__saga_run_new(o, id);
    if (r == NULL)
        return KEEL_ENOMEM;
    r->type = t;
    r->type_i = ti;
    r->starting = true;
    r->end = end;
    r->end_data = data;
    r->input = malloc(input_len ? input_len : 1);
    if (r->input == NULL) {
        keel__saga_run_drop(r);
        return KEEL_ENOMEM;
    }
    if (input_len)
        memcpy(r->input, input, input_len);
    r->input_len = input_len;
    keel__saga_begin_fresh(r); /* no lock, no read first: one KEEL.LOCKRUN (saga_log.c) */
    return 0;
}
