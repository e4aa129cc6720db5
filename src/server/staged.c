/* staged.c - a large SET sent through the log in pieces, so that no node spends one loop turn
   on the whole value (core/kv_staged.c has the entries and why). */
#include "server/server_int.h"

#include "base/hash.h"
#include "base/num.h"
#include "runtime/clock.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A SET whose value is at least KEEL_SRV_STAGED_MIN_BYTES, outside MULTI, becomes
 * KEEL.STAGE entries of one piece each (KEEL_KV_STAGE_PIECE_BYTES), at most STAGED_WINDOW
 * of them in the log at once, then KEEL.STAGE.SET with the SET's options; the client's
 * reply is that entry's. Nothing is visible until that entry applies, so the SET stays one
 * atomic write: a reader sees the old value or the whole new one.
 *
 * No copy: the handler takes the client's input buffer (keel_resp_client_take_input), the
 * pieces are encoded straight from it, and it is freed when the SET is answered.
 *
 * Order: while a staged SET is in flight, the connection's later commands wait (conn.c's
 * held queue), so that a later write cannot reach the log before its KEEL.STAGE.SET.
 *
 * Failures. A piece whose outcome is unknown or that met a leader change is sent again
 * (a piece is idempotent: the same bytes at the same place), up to STAGED_RETRIES times
 * for the whole SET; so is the final entry when it was surely not applied (TRYAGAIN). Past
 * that, an error reply from a piece, the client's departure or the node's refusal, the SET
 * gives up: it proposes KEEL.STAGE.DROP (best effort; the state machine drops leftovers
 * after KEEL_KV_STAGE_IDLE_MS anyway) and answers the error.
 */
#define STAGED_WINDOW 4u
#define STAGED_RETRIES 16

typedef struct staged_set staged_set_t;

typedef struct piece {
    staged_set_t *ss;
    uint32_t i;
} piece_t;

struct staged_set {
    server_t *s;
    pending_reply_t *pr; /* the client's reply, answered by the final entry */
    keel_buf_t in;       /* the SET's bytes: the client's input buffer, taken */
    size_t argc;
    const uint8_t **argv; /* the SET's arguments, pointing into `in` */
    size_t *lens;
    char id[KEEL_DEC_BYTES_MAX], total[KEEL_DEC_BYTES_MAX];
    size_t id_len, total_len;
    uint32_t pieces, next, applied, inflight;
    uint32_t *resend; /* pieces to send again (a stack) */
    uint32_t resend_n;
    piece_t *ctx; /* one per piece: its done callback's context */
    int retries;
    int pumping, repump; /* pump is running: a done callback called from inside it (the node
                            may answer a write before keel_node_write returns) asks again */
    int final_sent;
    int failed; /* giving up: the status to answer (or 0 with `err` holding the reply) */
    int fail_status;
    keel_buf_t err; /* an error reply a piece got, answered as it is */
};

static const uint8_t STAGE[] = "KEEL.STAGE";
static const uint8_t STAGE_SET[] = "KEEL.STAGE.SET";
static const uint8_t STAGE_DROP[] = "KEEL.STAGE.DROP";
static const char ERR_PIECES[] = "-ERR keel: the large value's pieces could not be written (the "
                                 "leader changed or did not answer); not applied, retry\r\n";

int keel__srv_staged_wanted(const server_t *s, const keel_resp_command_t *row, size_t argc,
                            const size_t *lens)
{
    return s->node != NULL && argc >= 3 && lens[2] >= KEEL_SRV_STAGED_MIN_BYTES &&
           strcmp(row->name, "set") == 0;
}

static void staged_free(staged_set_t *ss)
{
    keel_buf_free(&ss->in);
    keel_buf_free(&ss->err);
    free(ss->argv);
    free(ss->lens);
    free(ss->resend);
    free(ss->ctx);
    free(ss);
}

void keel__srv_staged_drop(staged_set_t *ss)
{
    assert(ss->inflight == 0 && !ss->final_sent);
    staged_free(ss);
}

void keel__srv_staged_abandon(keel_resp_client_t *c, staged_set_t *ss)
{
    assert(ss->pr == NULL);
    keel_resp_client_untake_input(c, &ss->in); /* the arguments stay valid for the handler's
                                                  caller (SLOWLOG reads them after it) */
    staged_free(ss);
}

static void drop_done(void *ctx, int status, const uint8_t *resp, size_t len)
{
    (void)ctx, (void)status, (void)resp, (void)len; /* best effort: leftovers are swept */
}

/* Answers the client and frees everything. */
static void finish(staged_set_t *ss, int status, const uint8_t *resp, size_t len)
{
    pending_reply_t *pr = ss->pr;
    pr->cs->staging = 0;
    keel__srv_pending_answer(pr, status, resp, len);
    staged_free(ss);
}

/* Proposes KEEL.STAGE.DROP: what the pieces staged goes now rather than when it falls idle (a
   no-op if nothing is staged under the id, or its SET applied after all). */
static void propose_drop(staged_set_t *ss)
{
    const uint8_t *argv[2] = {STAGE_DROP, (const uint8_t *)ss->id};
    size_t lens[2] = {sizeof(STAGE_DROP) - 1, ss->id_len};
    keel_node_write(ss->s->node, 2, argv, lens, drop_done, NULL);
}

static void give_up_now(staged_set_t *ss)
{
    assert(ss->inflight == 0);
    if (ss->next > 0 || ss->resend_n > 0) /* some piece may be in the log */
        propose_drop(ss);
    if (ss->fail_status != 0)
        finish(ss, ss->fail_status, NULL, 0);
    else
        finish(ss, 0, keel_buf_rptr(&ss->err), keel_buf_unread(&ss->err));
}

static void fail(staged_set_t *ss, int status, const uint8_t *resp, size_t len)
{
    if (ss->failed)
        return;
    ss->failed = 1;
    ss->fail_status = status;
    if (status == 0 && keel_buf_append(&ss->err, resp, len) != 0)
        ss->fail_status = KEEL_ENOMEM;
}

/* A failure worth sending again: the entry was not applied, or may have been. */
static int retryable(int status)
{
    return status == KEEL_ENOTLEADER || status == KEEL_ECONFLICT || status == KEEL_ECONNRESET ||
           status == KEEL_ETIMEDOUT || status == KEEL_EFULL;
}

static void pump(staged_set_t *ss);

static void piece_done(void *ctx, int status, const uint8_t *resp, size_t len)
{
    piece_t *p = ctx;
    staged_set_t *ss = p->ss;
    assert(ss->inflight > 0);
    ss->inflight--;
    if (status == 0 && len > 0 && resp[0] == '-')
        fail(ss, 0, resp, len);
    else if (status == 0)
        ss->applied++;
    else if (retryable(status) && ss->retries < STAGED_RETRIES) {
        ss->retries++;
        ss->resend[ss->resend_n++] = p->i;
    } else if (retryable(status)) /* the SET itself was never sent: surely not applied */
        fail(ss, 0, (const uint8_t *)ERR_PIECES, sizeof(ERR_PIECES) - 1);
    else
        fail(ss, status, NULL, 0);
    pump(ss);
}

static void final_done(void *ctx, int status, const uint8_t *resp, size_t len)
{
    staged_set_t *ss = ctx;
    ss->inflight--;
    if ((status == KEEL_ENOTLEADER || status == KEEL_ECONFLICT) && ss->retries < STAGED_RETRIES &&
        !ss->pr->cs->closed) {
        ss->retries++; /* surely not applied: send it again */
        ss->final_sent = 0;
        pump(ss);
        return;
    }
    if (status != 0) /* not applied, or unknown: the staged value goes either way */
        propose_drop(ss);
    finish(ss, status, resp, len);
}

static int send_piece(staged_set_t *ss, uint32_t i)
{
    char off[KEEL_DEC_BYTES_MAX];
    uint64_t at = (uint64_t)i * KEEL_KV_STAGE_PIECE_BYTES;
    size_t n =
        ss->lens[2] - at < KEEL_KV_STAGE_PIECE_BYTES ? ss->lens[2] - at : KEEL_KV_STAGE_PIECE_BYTES;
    const uint8_t *argv[6] = {STAGE,
                              (const uint8_t *)ss->id,
                              ss->argv[1],
                              (const uint8_t *)ss->total,
                              (const uint8_t *)off,
                              ss->argv[2] + at};
    size_t lens[6] = {sizeof(STAGE) - 1,     ss->id_len, ss->lens[1], ss->total_len,
                      keel_fmt_u64(off, at), n};
    ss->inflight++;
    int rc = keel_node_write(ss->s->node, 6, argv, lens, piece_done, &ss->ctx[i]);
    if (rc != 0) {
        ss->inflight--;
        fail(ss, rc, NULL, 0);
    }
    return rc;
}

static void send_final(staged_set_t *ss)
{
    /* KEEL.STAGE.SET key id [options]: the SET's arguments after the value */
    size_t argc = ss->argc;
    const uint8_t **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        fail(ss, KEEL_ENOMEM, NULL, 0);
        give_up_now(ss);
        return;
    }
    argv[0] = STAGE_SET;
    lens[0] = sizeof(STAGE_SET) - 1;
    argv[1] = ss->argv[1];
    lens[1] = ss->lens[1];
    argv[2] = (const uint8_t *)ss->id;
    lens[2] = ss->id_len;
    for (size_t i = 3; i < argc; i++) {
        argv[i] = ss->argv[i];
        lens[i] = ss->lens[i];
    }
    ss->final_sent = 1;
    ss->inflight++;
    int rc = keel_node_write(ss->s->node, (int)argc, argv, lens, final_done, ss);
    free(argv);
    free(lens);
    if (rc != 0) {
        ss->inflight--;
        propose_drop(ss);
        finish(ss, rc, NULL, 0);
    }
}

/* Sends what the window allows; the final entry once every piece is applied. Not
   re-entered: keel_node_write may call piece_done before it returns (a removed node, a
   refusal of the core), whose pump call only asks this one to look again; the SET is
   answered and freed only here, after the last use of ss. */
static void pump(staged_set_t *ss)
{
    if (ss->pumping) {
        ss->repump = 1;
        return;
    }
    ss->pumping = 1;
    do {
        ss->repump = 0;
        if (!ss->failed && ss->pr->cs->closed)
            fail(ss, KEEL_ECANCELED, NULL, 0);
        while (!ss->failed && ss->inflight < STAGED_WINDOW) {
            uint32_t i;
            if (ss->resend_n > 0)
                i = ss->resend[--ss->resend_n];
            else if (ss->next < ss->pieces)
                i = ss->next++;
            else
                break;
            if (send_piece(ss, i) != 0)
                break;
        }
    } while (ss->repump);
    ss->pumping = 0;
    if (ss->inflight > 0)
        return;
    if (ss->failed)
        give_up_now(ss);
    else if (ss->applied >= ss->pieces && !ss->final_sent)
        send_final(ss);
}

void keel__srv_staged_adopt(staged_set_t *ss, pending_reply_t *pr)
{
    pr->staged = ss;
    pr->argv = ss->argv;
    pr->lens = ss->lens;
    ss->pr = pr;
}

void keel__srv_staged_start(staged_set_t *ss)
{
    ss->pr->cs->staging = 1;
    pump(ss);
}

int keel__srv_staged_submit(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                            cmd_stats_t *st)
{
    staged_set_t *ss = calloc(1, sizeof(*ss));
    if (ss == NULL)
        return keel__srv_oom(c);
    ss->s = s;
    ss->argc = argc;
    ss->pieces =
        (uint32_t)((s->lens[2] + KEEL_KV_STAGE_PIECE_BYTES - 1) / KEEL_KV_STAGE_PIECE_BYTES);
    ss->argv = malloc(argc * sizeof(*ss->argv));
    ss->lens = malloc(argc * sizeof(*ss->lens));
    ss->resend = malloc(ss->pieces * sizeof(*ss->resend));
    ss->ctx = malloc(ss->pieces * sizeof(*ss->ctx));
    keel_buf_init(&ss->err, 0);
    if (ss->argv == NULL || ss->lens == NULL || ss->resend == NULL || ss->ctx == NULL ||
        keel_resp_client_take_input(c, &ss->in) != 0) {
        staged_free(ss);
        return keel__srv_oom(c);
    }
    /* the arguments point into the taken buffer, which stays where it is */
    memcpy(ss->argv, s->argv, argc * sizeof(*ss->argv));
    memcpy(ss->lens, s->lens, argc * sizeof(*ss->lens));
    for (uint32_t i = 0; i < ss->pieces; i++)
        ss->ctx[i] = (piece_t){ss, i};
    /* unique among the values staged at once (at most KEEL_KV_STAGES_MAX) */
    uint64_t seed[4] = {keel_node_config(s->node)->id, (uint64_t)getpid(), keel_clock_now_ms(),
                        ++s->staged_seq};
    ss->id_len = keel_fmt_u64(ss->id, keel_hash64(seed, sizeof(seed), 0) >> 1);
    ss->total_len = keel_fmt_u64(ss->total, ss->lens[2]);
    return keel__srv_submit_staged(c, s, cs, argc, st, ss); /* ss is theirs now */
}
