/* twopc.h - two-phase commit: the coordinator's and the participant's state machines and the
 * coordinator's decision log records (sans-I/O). */
#ifndef KEEL_CORE_TWOPC_H
#define KEEL_CORE_TWOPC_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Two-phase commit (Gray, "Notes on Data Base Operating Systems", 1978; the presumed-abort
 * variant of Mohan, Lindsay & Obermarck, "Transaction Management in the R* Distributed
 * Database Management System", TODS 1986). One transaction, up to
 * KEEL_TWOPC_PARTICIPANTS_MAX participants. These cores never send, write or read a clock:
 * they say what to do and learn what happened from events that carry now_ms.
 *
 * THE COORDINATOR (one instance per transaction). Its log has at most three records, each
 * at a fixed sequence number:
 *     seq 1  BEGIN     the participants' names and the transaction's input
 *     seq 2  COMMIT | ABORT   the decision: ONE slot, written once (see below)
 *     seq 3  END       every participant acknowledged the decision; nothing left to do
 *
 *     NEW --LOG begin--> PREPARING --all voted yes--> LOG commit --> COMMITTING --all acked-->
 *                            |                                                  LOG end: COMMITTED
 *                            | a no vote, or a vote missing at the prepare deadline
 *                            v
 *                        LOG abort --> ABORTING --all that may be prepared acked--> LOG end:
 * ABORTED
 *
 * The rules that make it atomic:
 *   1. no PREPARE is sent before BEGIN is durable (a participant that is prepared can always
 *      find the transaction in the log);
 *   2. the decision is durable BEFORE any participant is told it;
 *   3. the decision slot (seq 2) is written at most once: the log refuses a second record
 *      with that sequence number (keel's stream refuses an entry id that is not new), so a
 *      commit and an abort can race for it and exactly one wins;
 *   4. presumed abort: no decision logged means abort. A coordinator that resumes a
 *      transaction in PREPARING (its owner died holding the votes in memory) logs ABORT; a
 *      participant in doubt that finds no decision PROPOSES abort into the slot (rule 3
 *      makes that safe against a slow coordinator about to commit: one of the two fails,
 *      re-reads the slot and follows it). So no participant stays in doubt once the log
 *      is reachable, even if every coordinator instance is gone.
 *   5. the decision is delivered, with retries, until every participant that may be
 *      prepared acknowledged it (those that voted no have aborted already and are skipped).
 * A write refused because the slot was taken or the owner was fenced makes the driver
 * reload the log into a fresh instance and keel_twopc_coord_resume() it.
 *
 * Driving the coordinator (effects in this order):
 *   keel_twopc_coord_init(c, cfg, id, names, n, seed)
 *   keel_twopc_coord_replay(c, rec, len) for each record       -- a resumed transaction
 *   keel_twopc_coord_begin(c, now, input, len, &u) | keel_twopc_coord_resume(c, now, &u)
 *   loop: carry out u, then feed each outcome with keel_twopc_coord_step(c, &ev, &u):
 *     LOG     append u.record (seq u.seq) durably, fenced; then EV_LOGGED. Nothing else
 *             may be sent before it: a decision is applied only on EV_LOGGED.
 *     SEND    send u.msg (PREPARE, COMMIT or ABORT) to each participant i in u.to_mask,
 *             with u.attempt[i]; each answer is one event: EV_VOTE_YES, EV_VOTE_NO (to a
 *             PREPARE), EV_ACK (to a COMMIT or ABORT), EV_SEND_FAILED (no answer; the call
 *             failed or timed out: it is retried after a backoff). An answer whose attempt
 *             or message kind is not the one in flight is stale: accepted and ignored.
 *     FINISH  the transaction is over (u.state COMMITTED or ABORTED).
 *     NONE    nothing new; the sends in flight go on.
 *   EV_TICK at keel_twopc_coord_next_deadline_ms(): the prepare deadline (a missing vote
 *   is a no) and the end of a resend backoff.
 *
 * THE PARTICIPANT (one instance per transaction at a participant). Its durable state
 * (NONE, PREPARED, COMMITTED, ABORTED) lives in the participant's own store; prepared is
 * a promise: the business changes and a `prepared` mark are durable together, the locks
 * they need are held, and from then on only the decision may finish it. ABORTED is kept
 * for a transaction aborted before it prepared too (a tombstone), so a PREPARE arriving
 * after the ABORT is refused instead of leaving a participant prepared for nothing.
 *   keel_twopc_part_init(p, cfg, seed); keel_twopc_part_restore(p, state, since_ms)
 *   keel_twopc_part_step(p, &ev, &u) with EV_REQUEST (a message from the coordinator),
 *   the outcome of the local action asked for, EV_INQUIRED / EV_INQUIRY_FAILED, EV_TICK:
 *     PREPARE    run the local prepare (business rows + prepared mark, one durable local
 *                transaction); then EV_PREPARED, or EV_REFUSED (the business said no; an
 *                aborted tombstone was recorded durably instead)
 *     TOMBSTONE  record aborted durably (an ABORT for a transaction never prepared here);
 *                then EV_DONE
 *     COMMIT / ABORT  resolve the prepared transaction locally, durably; then EV_DONE
 *     INQUIRE    read the coordinator's decision slot, proposing abort when it is empty;
 *                then EV_INQUIRED (data: commit?) or EV_INQUIRY_FAILED (log unreachable)
 *     REPLY      answer the request: u.reply (YES, NO, ACK, BUSY). BUSY: a local action
 *                is in progress; the coordinator counts it as a failed send and retries.
 *   A prepared participant inquires in_doubt_ms after it prepared (or after a restart),
 *   then every inquiry backoff, until the decision is known. A COMMIT to a participant
 *   that aborted (or an ABORT to one that committed) is a broken protocol:
 *   KEEL_EPROTO, nothing changes, nothing is acknowledged.
 */

#define KEEL_TWOPC_PARTICIPANTS_MAX 16u
#define KEEL_TWOPC_ID_BYTES_MAX 64u      /* [A-Za-z0-9_.-]+ */
#define KEEL_TWOPC_NAME_BYTES_MAX 32u    /* participant names, same alphabet */
#define KEEL_TWOPC_INPUT_BYTES_MAX 1024u /* the transaction's input, kept in BEGIN */
#define KEEL_TWOPC_REASON_BYTES_MAX 128u /* why an ABORT, kept in its record */
#define KEEL_TWOPC_RECORD_HEADER_BYTES 24u
#define KEEL_TWOPC_RECORD_VERSION 1u
#define KEEL_TWOPC_RECORD_BYTES_MAX                                                                \
    (KEEL_TWOPC_RECORD_HEADER_BYTES + 1u +                                                         \
     KEEL_TWOPC_PARTICIPANTS_MAX * (1u + KEEL_TWOPC_NAME_BYTES_MAX) + KEEL_TWOPC_INPUT_BYTES_MAX)
#define KEEL_TWOPC_SEQ_BEGIN 1u
#define KEEL_TWOPC_SEQ_DECISION 2u
#define KEEL_TWOPC_SEQ_END 3u

typedef enum keel_twopc_state {
    KEEL_TWOPC_NEW,        /* coordinator: nothing durable */
    KEEL_TWOPC_PREPARING,  /* coordinator: BEGIN durable, collecting votes */
    KEEL_TWOPC_COMMITTING, /* coordinator: COMMIT durable, delivering it */
    KEEL_TWOPC_ABORTING,   /* coordinator: ABORT durable, delivering it */
    KEEL_TWOPC_COMMITTED,  /* final (coordinator: END after COMMIT; participant: committed) */
    KEEL_TWOPC_ABORTED,    /* final (coordinator: END after ABORT; participant: aborted) */
    KEEL_TWOPC_PREPARED,   /* participant: in doubt, bound by its promise */
    KEEL_TWOPC__STATES
} keel_twopc_state_t;

typedef enum keel_twopc_msg {
    KEEL_TWOPC_MSG_PREPARE = 1,
    KEEL_TWOPC_MSG_COMMIT,
    KEEL_TWOPC_MSG_ABORT,
} keel_twopc_msg_t;

typedef struct keel_twopc_config {
    keel_ms_t prepare_timeout_ms; /* BEGIN durable to the last vote; then abort. Default 5000 */
    keel_ms_t resend_base_ms;     /* a failed send is retried after capped exponential */
    keel_ms_t resend_cap_ms;      /*   backoff with equal jitter; defaults 50 .. 2000 */
    keel_ms_t in_doubt_ms;        /* participant: prepared to its first inquiry. Default
                                     15000: well past prepare_timeout_ms, so a live
                                     coordinator normally decides first */
    keel_ms_t inquire_base_ms;    /* participant: inquiry retries, defaults 200 .. 5000 */
    keel_ms_t inquire_cap_ms;
} keel_twopc_config_t;

keel_twopc_config_t keel_twopc_config_default(void);
int keel_twopc_config_validate(const keel_twopc_config_t *cfg, keel_errmsg_t *msg);
/* 1..bytes_max of [A-Za-z0-9_.-]. */
bool keel_twopc_id_valid(const char *s, size_t bytes_max);
const char *keel_twopc_state_name(keel_twopc_state_t st);
const char *keel_twopc_msg_name(keel_twopc_msg_t m);

/* ---- log records -------------------------------------------------------------------- */

typedef enum keel_twopc_rec_type {
    KEEL_TWOPC_REC_BEGIN = 1, /* data: u8 n, n x (u8 len, name), input */
    KEEL_TWOPC_REC_COMMIT,
    KEEL_TWOPC_REC_ABORT, /* data: reason text */
    KEEL_TWOPC_REC_END,
    KEEL_TWOPC__REC_TYPES
} keel_twopc_rec_type_t;

/*
 * Encoding, little-endian (the saga's layout):
 *   u32 crc32c of everything after it | u8 version | u8 type | u16 zero | u32 seq |
 *   i64 time_ms | u32 data length | data
 * A record's seq is fixed by its type (BEGIN 1, COMMIT/ABORT 2, END 3). The decoder
 * checks the CRC, version, type, seq and length: malformed is KEEL_ECORRUPT.
 */
typedef struct keel_twopc_rec {
    keel_twopc_rec_type_t type;
    uint32_t seq;
    keel_ms_t time_ms;
    const uint8_t *data; /* borrowed */
    size_t data_len;
} keel_twopc_rec_t;

int keel_twopc_rec_encode(const keel_twopc_rec_t *r, uint8_t *out, size_t cap);
int keel_twopc_rec_decode(const uint8_t *in, size_t len, keel_twopc_rec_t *r, keel_errmsg_t *msg);
const char *keel_twopc_rec_type_name(keel_twopc_rec_type_t t);
/* An ABORT record proposed by a participant in doubt (or anyone) for the decision slot. */
int keel_twopc_abort_record(keel_ms_t now_ms, const char *reason, uint8_t *out, size_t cap);

/* ---- the coordinator ---------------------------------------------------------------- */

typedef enum keel_twopc_coord_ev_type {
    KEEL_TWOPC_EV_LOGGED = 1,
    KEEL_TWOPC_EV_VOTE_YES,
    KEEL_TWOPC_EV_VOTE_NO,
    KEEL_TWOPC_EV_ACK,
    KEEL_TWOPC_EV_SEND_FAILED,
    KEEL_TWOPC_EV_TICK,
} keel_twopc_coord_ev_type_t;

typedef struct keel_twopc_coord_ev {
    keel_twopc_coord_ev_type_t type;
    keel_ms_t now_ms;
    uint32_t participant; /* answers: whose */
    keel_twopc_msg_t msg; /* answers: to which message */
    uint32_t attempt;     /* answers: to which attempt */
} keel_twopc_coord_ev_t;

typedef enum keel_twopc_action {
    KEEL_TWOPC_ACT_NONE,
    KEEL_TWOPC_ACT_LOG,
    KEEL_TWOPC_ACT_SEND,
    KEEL_TWOPC_ACT_FINISH,
} keel_twopc_action_t;

typedef struct keel_twopc_coord_update {
    keel_twopc_action_t action;
    keel_twopc_state_t state; /* durable state so far */
    /* LOG */
    const uint8_t *record; /* valid until the next call */
    size_t record_len;
    uint32_t seq;
    keel_twopc_rec_type_t rec_type;
    /* SEND */
    keel_twopc_msg_t msg;
    uint32_t to_mask;
    uint32_t attempt[KEEL_TWOPC_PARTICIPANTS_MAX];
} keel_twopc_coord_update_t;

typedef enum { KEEL_TWOPC_VOTE_NONE, KEEL_TWOPC_VOTE_YES, KEEL_TWOPC_VOTE_NO } keel_twopc_vote_t;

typedef struct keel_twopc_coord {
    keel_twopc_config_t cfg;
    char id[KEEL_TWOPC_ID_BYTES_MAX + 1];
    char names[KEEL_TWOPC_PARTICIPANTS_MAX][KEEL_TWOPC_NAME_BYTES_MAX + 1];
    uint32_t n;
    keel_rand_t rand;
    /* durable */
    keel_twopc_state_t state;
    uint32_t seq;
    keel_ms_t begun_ms, decided_ms;
    uint8_t input[KEEL_TWOPC_INPUT_BYTES_MAX];
    size_t input_len;
    char reason[KEEL_TWOPC_REASON_BYTES_MAX + 1];
    /* volatile */
    bool log_pending;
    keel_twopc_rec_type_t want;
    uint8_t rec_buf[KEEL_TWOPC_RECORD_BYTES_MAX];
    size_t rec_len;
    keel_ms_t prepare_deadline_ms;
    keel_twopc_msg_t phase_msg; /* what is being delivered now (0: nothing) */
    struct {
        keel_twopc_vote_t vote;
        bool acked, inflight;
        uint32_t attempt, failures;
        keel_ms_t retry_ms; /* not inflight, not done: send again at */
    } p[KEEL_TWOPC_PARTICIPANTS_MAX];
} keel_twopc_coord_t;

/* names: n participant names (copied), unique and valid. 0, or KEEL_EINVAL with msg. */
int keel_twopc_coord_init(keel_twopc_coord_t *c, const keel_twopc_config_t *cfg, const char *id,
                          const char *const *names, uint32_t n, uint64_t seed, keel_errmsg_t *msg);
/* An instance for a transaction known only by id (a recovering coordinator): its
 * participants come from the BEGIN record replayed first. */
int keel_twopc_coord_init_recover(keel_twopc_coord_t *c, const keel_twopc_config_t *cfg,
                                  const char *id, uint64_t seed, keel_errmsg_t *msg);
/* One record of the log in order. KEEL_ECORRUPT, or KEEL_EPROTO (out of order, or a BEGIN
 * whose participants differ from the init's); nothing changes on failure. */
int keel_twopc_coord_replay(keel_twopc_coord_t *c, const uint8_t *rec, size_t len,
                            keel_errmsg_t *msg);
/* NEW: asks to log BEGIN. KEEL_ETOOBIG (input), KEEL_EINVAL (not NEW). */
int keel_twopc_coord_begin(keel_twopc_coord_t *c, keel_ms_t now_ms, const void *input,
                           size_t input_len, keel_twopc_coord_update_t *u);
/* A replayed transaction's next action (presumed abort in PREPARING). KEEL_ENOTFOUND if
 * nothing was logged. */
int keel_twopc_coord_resume(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_coord_update_t *u);
/* KEEL_EINVAL (nothing changes) for an event that fits nothing pending (LOGGED with no log
 * pending, a participant out of range). */
int keel_twopc_coord_step(keel_twopc_coord_t *c, const keel_twopc_coord_ev_t *ev,
                          keel_twopc_coord_update_t *u);
keel_ms_t keel_twopc_coord_next_deadline_ms(const keel_twopc_coord_t *c);
bool keel_twopc_state_final(keel_twopc_state_t st);
/* The durable state as one line (tests compare a live instance with a replayed one). */
size_t keel_twopc_coord_describe(const keel_twopc_coord_t *c, char *out, size_t cap);

/* ---- the participant ---------------------------------------------------------------- */

typedef enum keel_twopc_part_ev_type {
    KEEL_TWOPC_PEV_REQUEST = 1, /* msg */
    KEEL_TWOPC_PEV_PREPARED,
    KEEL_TWOPC_PEV_REFUSED,
    KEEL_TWOPC_PEV_DONE,     /* TOMBSTONE, COMMIT or ABORT is durable */
    KEEL_TWOPC_PEV_INQUIRED, /* commit: the decision */
    KEEL_TWOPC_PEV_INQUIRY_FAILED,
    KEEL_TWOPC_PEV_TICK,
} keel_twopc_part_ev_type_t;

typedef struct keel_twopc_part_ev {
    keel_twopc_part_ev_type_t type;
    keel_ms_t now_ms;
    keel_twopc_msg_t msg; /* REQUEST */
    bool commit;          /* INQUIRED */
} keel_twopc_part_ev_t;

typedef enum keel_twopc_part_action {
    KEEL_TWOPC_PACT_NONE,
    KEEL_TWOPC_PACT_PREPARE,
    KEEL_TWOPC_PACT_TOMBSTONE,
    KEEL_TWOPC_PACT_COMMIT,
    KEEL_TWOPC_PACT_ABORT,
    KEEL_TWOPC_PACT_INQUIRE,
    KEEL_TWOPC_PACT_REPLY,
} keel_twopc_part_action_t;

typedef enum keel_twopc_reply {
    KEEL_TWOPC_REPLY_YES = 1,
    KEEL_TWOPC_REPLY_NO,
    KEEL_TWOPC_REPLY_ACK,
    KEEL_TWOPC_REPLY_BUSY,
} keel_twopc_reply_t;

typedef struct keel_twopc_part_update {
    keel_twopc_part_action_t action;
    keel_twopc_reply_t reply; /* REPLY */
    keel_twopc_state_t state;
} keel_twopc_part_update_t;

typedef struct keel_twopc_part {
    keel_twopc_config_t cfg;
    keel_rand_t rand;
    keel_twopc_state_t state;       /* durable: NEW (nothing here), PREPARED, COMMITTED, ABORTED */
    keel_twopc_part_action_t local; /* the local action in progress, or NONE */
    keel_twopc_msg_t request;       /* the request awaiting its reply, or 0 */
    bool inquiring;
    uint32_t inquiries;
    keel_ms_t inquire_ms; /* PREPARED: next inquiry */
} keel_twopc_part_t;

void keel_twopc_part_init(keel_twopc_part_t *p, const keel_twopc_config_t *cfg, uint64_t seed);
/* The durable state found in the store after a restart (NEW, PREPARED, COMMITTED or
 * ABORTED); a PREPARED one inquires at now_ms + in_doubt_ms. */
void keel_twopc_part_restore(keel_twopc_part_t *p, keel_twopc_state_t st, keel_ms_t now_ms);
/* KEEL_EINVAL for an outcome of nothing pending; KEEL_EPROTO for a decision contradicting
 * the durable state (nothing changes, nothing is acknowledged). */
int keel_twopc_part_step(keel_twopc_part_t *p, const keel_twopc_part_ev_t *ev,
                         keel_twopc_part_update_t *u);
keel_ms_t keel_twopc_part_next_deadline_ms(const keel_twopc_part_t *p);

#endif
