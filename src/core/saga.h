/* saga.h - durable orchestrated sagas: a definition as data, one saga's state machine driven by
 * events, and the log records that make it durable (sans-I/O). */
#ifndef KEEL_CORE_SAGA_H
#define KEEL_CORE_SAGA_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A saga (Garcia-Molina & Salem, "Sagas", SIGMOD 1987) is a sequence of steps, each a local
 * transaction in some service, and for each step a compensation that semantically undoes
 * it. Either every step completes, or the compensations of the steps that may have taken
 * effect run, newest first. This core is the orchestrator's brain for ONE saga instance:
 * it never calls a service, writes a log or reads a clock; it says what to do next and
 * learns what happened through events that carry now_ms.
 *
 * Durability is a write-ahead log of records (below). The rule that makes crashes safe:
 * **no effect starts before the record that announces it is durable**, and every effect is
 * made idempotent by a key derived from the saga id and the step, so an orchestrator that
 * resumes from the log and repeats the last effect applies it at most once:
 *     action        "<saga_id>:<step name>:do"
 *     compensation  "<saga_id>:<step name>:undo"
 * A service must (1) answer a repeated key with the first answer and not apply it again,
 * and (2) accept an undo for a key it never applied (a no-op that leaves a tombstone, so a
 * late action with that key is refused instead of applied after its compensation).
 * The record that announces step n's action is the one before it: `started` announces step
 * 0 and step n-1's `step_done` announces step n, so a step costs one log write, not two (a
 * `begun` record of its own, written before this rule, is still read, and changes nothing).
 * What a `begun` record would add is only the knowledge that the call may have been made;
 * the log cannot know it either way (a crash can fall between the record and the call), so
 * a resumed owner calls the step again with the same key, as it always did.
 *
 * The instance (durable state: what the log says; volatile: attempts and waits):
 *
 *     NEW --started--> RUNNING(step n) --done n--> ... --all done--> DONE
 *                        |  business failure of step n (it did not apply)
 *                        |  or transient failures past attempts_max or retry_for_ms
 *                        |  (it may have applied)
 *                        v
 *                   COMPENSATING(undo k, k-1, ..., 0) --all undone--> COMPENSATED
 *                        |  an undo still failing compensate_limit_ms after compensation
 *                        v  began (the time is in the log, so a resume does not reset it)
 *                   NEEDS_ATTENTION (final; listed and counted, never dropped)
 *
 * Steps compensated: every completed step, plus the failed step itself when it gave up
 * after transient failures (a timeout may hide an applied action), newest first, skipping
 * steps declared without a compensation.
 *
 * Driving it (the order of effects, which the driver must keep):
 *   keel_saga_init(s, def, id, seed)                 -- fresh, or then:
 *   keel_saga_replay(s, rec, len) for each record    -- rebuilds the durable state exactly
 *   keel_saga_begin(s, now_ms, input, len, &u)        -- a new saga: u asks for LOG(started)
 *   keel_saga_resume(s, now_ms, &u)                   -- a replayed saga: its next action
 *   loop: carry out u.action, then keel_saga_step(s, &event, &u):
 *     LOG      append u.record (sequence u.seq) to the saga's log, durably, fenced by the
 *              owner's token; then step EV_LOGGED. Nothing else may happen in between: the
 *              core has not applied the record yet, and applies it only on EV_LOGGED.
 *     DO       call step u.step's action with key u.key; then step EV_DO_OK (result
 *              bytes), EV_DO_FAILED (business: certainly not applied) or EV_DO_TRANSIENT
 *              (lost connection, 5xx: maybe applied). With no outcome by u.deadline_ms
 *              (now + the step's timeout_ms), step EV_TICK: the core calls it a timeout,
 *              a transient failure, and the call's late outcome must be dropped.
 *     UNDO     call step u.step's compensation with key u.key; then EV_UNDO_OK or
 *              EV_UNDO_FAILED (every compensation failure is retried, within the limit);
 *              EV_TICK at u.deadline_ms as for DO.
 *     WAIT     step EV_TICK once now_ms >= u.wake_ms (backoff before a retry).
 *     FINISH   the saga is over in u.state; nothing more to do.
 *     NONE     (after a TICK before a deadline) nothing new: the action in flight goes on.
 * keel_saga_next_deadline_ms() says when to tick next (a WAIT's end, a call's deadline).
 * One effect at a time: a saga's steps are sequential, so u holds one action.
 *
 * Limits: KEEL_SAGA_STEPS_MAX steps, ids and step names of the lengths below, input and
 * each result up to the definition's bytes limits (checked; longer is KEEL_ETOOBIG).
 * Memory: one arena allocated at init from the definition's limits; nothing after.
 */

#define KEEL_SAGA_STEPS_MAX 16u
#define KEEL_SAGA_ID_BYTES_MAX 64u      /* [A-Za-z0-9_.-]+ */
#define KEEL_SAGA_NAME_BYTES_MAX 32u    /* saga and step names, [A-Za-z0-9_.-]+ */
#define KEEL_SAGA_DATA_BYTES_MAX 65536u /* ceiling for input_bytes_max, result_bytes_max */
#define KEEL_SAGA_REASON_BYTES_MAX 256u /* a failure's text kept in the log */
#define KEEL_SAGA_ATTEMPTS_MAX 100u     /* ceiling for a step's attempts_max */
#define KEEL_SAGA_KEY_BYTES_MAX (KEEL_SAGA_ID_BYTES_MAX + KEEL_SAGA_NAME_BYTES_MAX + 8u)
#define KEEL_SAGA_RECORD_HEADER_BYTES 24u /* crc, version, type, step, seq, time, length */
#define KEEL_SAGA_RECORD_VERSION 1u

typedef enum keel_saga_state {
    KEEL_SAGA_NEW,             /* nothing durable yet */
    KEEL_SAGA_RUNNING,         /* started; steps [0, done_n) done; step done_n begun */
    KEEL_SAGA_COMPENSATING,    /* a step failed; undoing */
    KEEL_SAGA_DONE,            /* final: every step done */
    KEEL_SAGA_COMPENSATED,     /* final: every step that may have applied was undone */
    KEEL_SAGA_NEEDS_ATTENTION, /* final: a compensation kept failing past the time limit */
    KEEL_SAGA__STATES
} keel_saga_state_t;

/* One step of a definition. The action and compensation themselves live with the driver
 * (src/tx/saga.h): this core only sequences them. */
typedef struct keel_saga_step_def {
    const char *name;          /* part of the idempotency keys */
    keel_ms_t timeout_ms;      /* one attempt of the action or compensation */
    uint32_t attempts_max;     /* action attempts on transient failures, first included */
    keel_ms_t retry_for_ms;    /* and no retry starting later than this after the step's first
                                  attempt by this owner (0: attempts_max alone bounds them) */
    keel_ms_t backoff_base_ms; /* action retries: capped exponential backoff, equal jitter */
    keel_ms_t backoff_cap_ms;
    bool no_compensation; /* nothing to undo (a read, a notification, the pivot step) */
} keel_saga_step_def_t;

typedef struct keel_saga_def {
    const char *name;
    keel_saga_step_def_t steps[KEEL_SAGA_STEPS_MAX];
    uint32_t steps_n;
    size_t input_bytes_max;         /* the saga's input, kept in its started record */
    size_t result_bytes_max;        /* each step's result, kept in its done record */
    keel_ms_t compensate_limit_ms;  /* from compensation start to NEEDS_ATTENTION */
    keel_ms_t undo_backoff_base_ms; /* compensation retries (no attempt limit, a time limit) */
    keel_ms_t undo_backoff_cap_ms;
} keel_saga_def_t;

/* Defaults: each step 5 s per attempt, 3 attempts (no time bound: retry_for_ms 0), backoff
 * 100 ms .. 2 s; input and results
 * 1 KiB; compensation retried with backoff 100 ms .. 5 s for up to 5 minutes. */
void keel_saga_def_default(keel_saga_def_t *def, const char *name);
/* Adds a step with the default policy; returns its index, or KEEL_EFULL. */
int keel_saga_def_step(keel_saga_def_t *def, const char *name);
int keel_saga_def_validate(const keel_saga_def_t *def, keel_errmsg_t *msg);
/* Whether s is a valid saga id (also used for names: [A-Za-z0-9_.-], 1..max bytes). */
bool keel_saga_id_valid(const char *s, size_t bytes_max);

/* ---- log records -------------------------------------------------------------------- */

typedef enum keel_saga_rec_type {
    KEEL_SAGA_REC_STARTED = 1, /* data: u8 name length, saga name, input; step 0 begun */
    KEEL_SAGA_REC_BEGUN,       /* step: its action is about to be called. No longer written
                                  (started and step_done announce the next step); accepted
                                  in logs written before, where it changes nothing */
    KEEL_SAGA_REC_STEP_DONE,   /* step, data: its result; the next step, if any, begun */
    KEEL_SAGA_REC_STEP_FAILED, /* step, data: u8 kind (KEEL_SAGA_FAIL_*), reason; starts
                                  compensation at the record's time */
    KEEL_SAGA_REC_UNDONE,      /* step: its compensation succeeded */
    KEEL_SAGA_REC_DONE,
    KEEL_SAGA_REC_COMPENSATED,
    KEEL_SAGA_REC_ATTENTION, /* step whose compensation gave up, data: reason */
    KEEL_SAGA__REC_TYPES
} keel_saga_rec_type_t;

enum {
    KEEL_SAGA_FAIL_BUSINESS = 1, /* the service refused: the step did not apply */
    KEEL_SAGA_FAIL_GAVE_UP = 2,  /* transient failures used every attempt: maybe applied */
};

/*
 * Encoding, little-endian:
 *   u32 crc32c of everything after it | u8 version (1) | u8 type | u16 step | u32 seq |
 *   i64 time_ms | u32 data length | data
 * seq numbers a saga's records 1, 2, 3, ... (the log's order; replay refuses a gap or a
 * repeat). The decoder checks the CRC, version, type, step range and that the length is
 * exactly the record's: a malformed record is KEEL_ECORRUPT and is never applied.
 */
typedef struct keel_saga_rec {
    keel_saga_rec_type_t type;
    uint32_t step;
    uint32_t seq;
    keel_ms_t time_ms;
    const uint8_t *data; /* borrowed from the encoded bytes */
    size_t data_len;
} keel_saga_rec_t;

/* Bytes needed to encode r (header + data). */
size_t keel_saga_rec_size(const keel_saga_rec_t *r);
/* Encodes r into out (cap bytes); returns the length, or KEEL_ETOOBIG. */
int keel_saga_rec_encode(const keel_saga_rec_t *r, uint8_t *out, size_t cap);
/* Decodes; 0, or KEEL_ECORRUPT with msg saying what is wrong. r->data points into in. */
int keel_saga_rec_decode(const uint8_t *in, size_t len, keel_saga_rec_t *r, keel_errmsg_t *msg);
const char *keel_saga_rec_type_name(keel_saga_rec_type_t t);
/* The state a log whose last record is of type `last` is in (listings read only that). */
keel_saga_state_t keel_saga_state_after(keel_saga_rec_type_t last);

/* ---- the instance ------------------------------------------------------------------- */

typedef enum keel_saga_event_type {
    KEEL_SAGA_EV_LOGGED = 1,   /* the record asked for is durable */
    KEEL_SAGA_EV_DO_OK,        /* data: the step's result */
    KEEL_SAGA_EV_DO_FAILED,    /* business failure; data: reason */
    KEEL_SAGA_EV_DO_TRANSIENT, /* data: reason */
    KEEL_SAGA_EV_UNDO_OK,
    KEEL_SAGA_EV_UNDO_FAILED, /* data: reason */
    KEEL_SAGA_EV_TICK,        /* time passed: a WAIT is over, or a call's deadline */
} keel_saga_event_type_t;

typedef struct keel_saga_event {
    keel_saga_event_type_t type;
    keel_ms_t now_ms;
    uint32_t step; /* DO_* and UNDO_*: the step the outcome is for (checked) */
    const uint8_t *data;
    size_t data_len;
} keel_saga_event_t;

typedef enum keel_saga_action {
    KEEL_SAGA_ACT_NONE,
    KEEL_SAGA_ACT_LOG,
    KEEL_SAGA_ACT_DO,
    KEEL_SAGA_ACT_UNDO,
    KEEL_SAGA_ACT_WAIT,
    KEEL_SAGA_ACT_FINISH,
} keel_saga_action_t;

typedef struct keel_saga_update {
    keel_saga_action_t action;
    keel_saga_state_t state;               /* the durable state, as of the records applied so far */
    uint32_t step;                         /* DO, UNDO, LOG (the record's step) */
    uint32_t attempt;                      /* DO, UNDO: 1 for the first attempt by this owner */
    keel_ms_t timeout_ms;                  /* DO, UNDO */
    keel_ms_t deadline_ms;                 /* DO, UNDO: now + timeout_ms; a TICK then times out */
    keel_ms_t wake_ms;                     /* WAIT */
    char key[KEEL_SAGA_KEY_BYTES_MAX + 1]; /* DO, UNDO: the idempotency key */
    const uint8_t *record;                 /* LOG: encoded, valid until the next call */
    size_t record_len;
    uint32_t seq;                  /* LOG */
    keel_saga_rec_type_t rec_type; /* LOG */
} keel_saga_update_t;

typedef struct keel_saga {
    const keel_saga_def_t *def; /* borrowed; outlives the saga */
    char id[KEEL_SAGA_ID_BYTES_MAX + 1];
    keel_rand_t rand;
    /* durable: exactly what the applied records say */
    keel_saga_state_t state;
    uint32_t seq;    /* records applied */
    uint32_t done_n; /* steps done, in order */
    uint32_t failed_step;
    uint8_t fail_kind; /* KEEL_SAGA_FAIL_* */
    uint32_t undone;   /* bit k: step k's compensation done */
    keel_ms_t started_ms, compensate_from_ms, finished_ms;
    uint8_t *arena; /* input_bytes_max for the input, then result_bytes_max per step */
    size_t input_len;
    size_t result_len[KEEL_SAGA_STEPS_MAX];
    char reason[KEEL_SAGA_REASON_BYTES_MAX + 1]; /* last failure's text */
    /* volatile: this owner's progress */
    keel_saga_action_t pending; /* what the driver is doing for us */
    uint32_t pending_step;
    uint32_t attempt;
    keel_ms_t first_try_ms; /* the pending step's first attempt by this owner */
    keel_saga_rec_t want;   /* LOG pending: the record, applied on EV_LOGGED */
    uint8_t *rec_buf;       /* its encoding */
    size_t rec_cap;
    keel_ms_t wake_ms;
    keel_ms_t deadline_ms;         /* the call in flight's */
    keel_saga_action_t after_wait; /* DO or UNDO */
} keel_saga_t;

/* Allocates the arena; the id must be valid. 0, KEEL_EINVAL (msg), KEEL_ENOMEM. */
int keel_saga_init(keel_saga_t *s, const keel_saga_def_t *def, const char *id, uint64_t seed,
                   keel_errmsg_t *msg);
void keel_saga_free(keel_saga_t *s);

/* Applies one record of the saga's log, in order. 0; KEEL_ECORRUPT (malformed),
 * KEEL_EPROTO (well formed but out of order, a gap, or not legal in the state reached:
 * msg says which); on failure nothing changed. */
int keel_saga_replay(keel_saga_t *s, const uint8_t *rec, size_t len, keel_errmsg_t *msg);

/* A new saga (state NEW): asks to log its started record. KEEL_ETOOBIG if input is over
 * input_bytes_max, KEEL_EINVAL if the saga is not NEW. */
int keel_saga_begin(keel_saga_t *s, keel_ms_t now_ms, const void *input, size_t input_len,
                    keel_saga_update_t *u);
/* The next action of a replayed saga (a new owner). KEEL_ENOTFOUND if nothing was logged. */
int keel_saga_resume(keel_saga_t *s, keel_ms_t now_ms, keel_saga_update_t *u);
/* One event; fills the next action. KEEL_EINVAL (nothing changes) when the event is not
 * the outcome of the action pending (a late reply for an earlier attempt, a wrong step). */
int keel_saga_step(keel_saga_t *s, const keel_saga_event_t *ev, keel_saga_update_t *u);

/* When the driver should step EV_TICK next: a WAIT's end, a call's deadline, or
 * KEEL_MS_NEVER (a log write is pending, or nothing). */
keel_ms_t keel_saga_next_deadline_ms(const keel_saga_t *s);
/* The result of step i once done (NULL before); the saga's input. Borrowed. */
const uint8_t *keel_saga_result(const keel_saga_t *s, uint32_t i, size_t *len);
const uint8_t *keel_saga_input(const keel_saga_t *s, size_t *len);
const char *keel_saga_state_name(keel_saga_state_t st);
bool keel_saga_state_final(keel_saga_state_t st);
/* Writes the durable state as one line of text (tests compare a live saga with a replayed
 * one; tools print it). Returns the length that the whole line needs. */
size_t keel_saga_describe(const keel_saga_t *s, char *out, size_t cap);

#endif
