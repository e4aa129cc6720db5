/* saga_int.h - the inside of the saga orchestrator, shared by the files that make it up. */
#ifndef KEEL_TX_SAGA_INT_H
#define KEEL_TX_SAGA_INT_H

/*
 * The orchestrator is split by job, one file each:
 *   saga.c        the driver: a run's bookkeeping (timer, retries, requests), its lock
 *                 (take, renew), its steps, carrying out the core's update, its end;
 *                 starting a saga
 *   saga_log.c    the log in keel server: the open marker, load and replay, fenced writes
 *   saga_orch.c   setup, types, metrics, adopting orphans (the scan), close
 *   saga_http.c   steps through the kit (an HTTP call per step)
 *   saga_retain.c the retention sweep (the index of ended sagas)
 * Functions shared between them are keel__saga_*, declared at the end of this file.
 */
#include "tx/saga.h"

#include "runtime/clock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KEY_BYTES_MAX (KEEL_SAGA_ID_BYTES_MAX + 16u)
#define RETRY_BASE_MS 50
#define RETRY_CAP_MS 1000
/* The index of unfinished sagas: one hash, field = saga id, value = its type's name. The
 * adoption scan walks it (HSCAN), so its cost follows the open sagas, not the keyspace. */
#define OPEN_KEY "saga:open"
/* ended sagas (done or compensated) by end time, while a retention is set: saga_retain.c */
#define ENDED_KEY "saga:ended"

/* A saga id this library accepts: valid, and not one whose lock key (saga:<id>) is an index. */
static inline bool keel__saga_id_ok(const char *id)
{
    return keel_saga_id_valid(id, KEEL_SAGA_ID_BYTES_MAX) && strcmp(id, "open") != 0 &&
           strcmp(id, "ended") != 0;
}

typedef enum phase {
    P_LOCK,   /* KEEL.LOCK sent */
    P_LOAD,   /* XRANGE of the log sent */
    P_MARK,   /* its saga:open field being written (a new saga) */
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
    char lock[KEY_BYTES_MAX], log_key[KEY_BYTES_MAX];
    char token_str[24];
    uint64_t token;
    keel_ms_t locked_unix_ms;
    keel_client_t *cl; /* its lane: every command of the saga goes there, in order */
    phase_t phase;
    /* The lock renewed while an action is in flight (a step can outlast a third of the TTL):
     * until its reply, the driver sends nothing (act_after_renew: it had something to do);
     * relock_lapsed: the lock had lapsed meanwhile, so memory may be stale: reload. */
    bool renewing, act_after_renew, relock_lapsed;
    /* The lock was just renewed: the next action goes ahead without renewing again (a
     * renewal answered later than a third of the TTL would otherwise be due again at once,
     * and the saga would renew for ever without acting: found by review). */
    bool just_renewed;
    bool starting; /* started here: begin if the log is empty */
    /* A new saga's lock, its `started` record and its open marker go in one entry (a
     * KEEL.LOCKRUN of a transaction that runs only while the log does not exist: saga_log.c,
     * write_start); cleared once the log has been read (then the marker and the record go
     * one by one, under a lock taken alone, as before). */
    bool fresh;
    /* The final record's transaction also deleted the marker and released the lock. */
    bool closed;
    /* A lock token was obtained at least once (KEEL.LOCK or KEEL.LOCKRUN): from then on,
     * finding the lock held by another means the saga was lost to another owner. */
    bool owned;
    /* The last step's step_done record, written in the final record's entry (saga_log.c,
     * fold_last_step_done); NULL otherwise. */
    uint8_t *pre;
    size_t pre_len;
    uint32_t pre_seq;
    size_t end_extra; /* the type's end commands in the end's last write (their replies) */
    /* A start's KEEL.LOCK, or a renewal, whose outcome was not seen (a timeout, -UNKNOWN
     * across a leader change): the lock may be ours under a token we never learnt, so "held"
     * is not proof of another owner until the lock's TTL has run out once. */
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

static inline keel_ms_t unix_ms(void)
{
    return keel_clock_unix_ms();
}

/* saga.c */
void keel__saga_count_state(keel__saga_run_t *r, keel_saga_state_t st);
void keel__saga_unref(keel_sagas_t *o);
void keel__saga_work_done(keel_sagas_t *o);
void keel__saga_run_drop(keel__saga_run_t *r);
void keel__saga_retry_later(keel__saga_run_t *r, void (*fn)(keel__saga_run_t *r));
int keel__saga_cmd(keel__saga_run_t *r, size_t argc, const char *const *argv, const size_t *lens,
                   keel_client_reply_fn fn, void (*again)(keel__saga_run_t *r));
bool keel__saga_reply_live(keel__saga_run_t *r);
void keel__saga_relock(keel__saga_run_t *r);
void keel__saga_lock_refused(keel__saga_run_t *r);
void keel__saga_locked(keel__saga_run_t *r, int64_t token);
void keel__saga_act(keel__saga_run_t *r);
void keel__saga_close_quietly(keel__saga_run_t *r);
void keel__saga_run_end(keel__saga_run_t *r, int err);
keel__saga_run_t *keel__saga_run_find(keel_sagas_t *o, const char *id);
keel__saga_run_t *keel__saga_run_new(keel_sagas_t *o, const char *id);

/* saga_log.c */
const keel_saga_type_t *keel__saga_type_named(const keel_sagas_t *o, const uint8_t *name,
                                              size_t len, uint32_t *index);
void keel__saga_load(keel__saga_run_t *r);
void keel__saga_begin_fresh(keel__saga_run_t *r);
void keel__saga_write_log(keel__saga_run_t *r);

/* saga_orch.c */
void keel__saga_client_closed(keel_client_t *cl);
void keel__saga_lanes_closed(keel_client_lanes_t *l);
/* The record bytes of an XRANGE entry (field `r`), or NULL. */
const keel_resp_value_t *keel__saga_entry_record(const keel_resp_value_t *e);
/* saga_retain.c: deletes finished logs past cfg.log_retention_ms (called by the scan tick). */
void keel__saga_retain_tick(keel_sagas_t *o);

#endif
