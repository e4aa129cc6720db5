/* tx/twopc.c - two-phase commit's blocking coordinator over keel server, and participant
 * calls through core/twopc's participant machine (tx/twopc.h). */
#include "tx/twopc_int.h"

#include "client/args.h"
#include "client/blocking.h"
#include "runtime/clock.h"
#include "tx/retain.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- one keel command at a time, on the private loop --------------------------------- */

typedef struct req {
    bool done;
    int status;
    keel_client_reply_t reply;
} req_t;

/* The open transactions' index: a hash of id -> 1, set before BEGIN, deleted after END. */
#define OPEN_KEY "2pc:open"
/* The ended transactions by end time, while a retention is set: keel_twopcs_sweep(). */
#define ENDED_KEY "2pc:ended"

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    (void)cl;
    req_t *r = ctx;
    r->status = status == 0 ? keel_client_reply_copy(v, &r->reply) : status;
    r->done = true;
}

/* 0 with *out (owned; may be an error reply), or the transport's error. */
static int cmd(keel_twopcs_t *t, size_t argc, const char *const *argv, const size_t *lens,
               keel_client_reply_t *out)
{
    req_t r = {0};
    memset(out, 0, sizeof(*out));
    int rc = keel_client_command_timeout(&t->cl, argc, argv, lens, t->cfg.request_timeout_ms,
                                         on_reply, &r);
    if (rc != 0)
        return rc;
    while (!r.done)
        uv_run(&t->loop.uv, UV_RUN_ONCE);
    if (r.status == 0)
        *out = r.reply;
    return r.status;
}

const keel_resp_value_t *keel__twopc_entry_record(const keel_resp_value_t *e, uint32_t *seq)
{
    if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 || e->elems[1].type != KEEL_RESP_ARRAY)
        return NULL;
    char id[32];
    size_t n = e->elems[0].str.len < sizeof(id) - 1 ? e->elems[0].str.len : sizeof(id) - 1;
    memcpy(id, e->elems[0].str.ptr, n);
    id[n] = '\0';
    unsigned ms = 0, s = 0;
    if (sscanf(id, "%u-%u", &ms, &s) != 2 || ms != 0)
        return NULL;
    *seq = s;
    const keel_resp_value_t *f = &e->elems[1];
    for (size_t i = 0; i + 1 < f->elems_len; i += 2)
        if (f->elems[i].str.len == 1 && f->elems[i].str.ptr[0] == 'r')
            return &f->elems[i + 1];
    return NULL;
}

/* ---- setup ----------------------------------------------------------------------------- */

keel_twopcs_config_t keel_twopcs_config_default(void)
{
    return (keel_twopcs_config_t){.tx = keel_twopc_config_default(),
                                  .lock_ttl_ms = 10000,
                                  .request_timeout_ms = 3000,
                                  .give_up_ms = 30000,
                                  .seed = 1};
}

/* One event: the stats field, and its counter when there are metrics. */
static void count(uint64_t *stat, keel_counter_t *c)
{
    (*stat)++;
    if (c)
        keel_counter_inc(c);
}

static void observe_since(keel_histogram_t *h, keel_ns_t t0)
{
    if (h && t0 != 0)
        keel_histogram_observe(h, (double)(keel_clock_now_ns() - t0) / 1e9);
}

static void register_metrics(keel_twopcs_t *t)
{
    keel_metrics_t *m = t->cfg.metrics;
    if (m == NULL)
        return;
    keel_twopcs_metrics_t *k = &t->m;
    k->runs = keel_metrics_counter(m, "keel_twopc_runs_total",
                                   "Two-phase commit transactions run by this coordinator.", "");
    static const char tx_help[] = "Transactions this coordinator finished, by outcome.";
    k->committed =
        keel_metrics_counter(m, "keel_twopc_transactions_total", tx_help, "outcome=\"committed\"");
    k->aborted =
        keel_metrics_counter(m, "keel_twopc_transactions_total", tx_help, "outcome=\"aborted\"");
    k->recovered = keel_metrics_counter(
        m, "keel_twopc_recovered_total",
        "Open transactions whose coordinator died, finished here by recovery.", "");
    k->fenced = keel_metrics_counter(m, "keel_twopc_fenced_total",
                                     "Log writes refused because another owner took over.", "");
    k->slot_lost = keel_metrics_counter(
        m, "keel_twopc_decision_slot_lost_total",
        "Decision writes that found the slot taken (a participant's abort proposal won).", "");
    k->sends_failed = keel_metrics_counter(m, "keel_twopc_participant_sends_failed_total",
                                           "Messages to participants that failed (retried).", "");
    k->inquiries =
        keel_metrics_counter(m, "keel_twopc_inquiries_total",
                             "Participants in doubt that asked the log for the decision.", "");
    k->proposals = keel_metrics_counter(
        m, "keel_twopc_abort_proposals_total",
        "Inquiries that found no decision and whose abort proposal won the slot.", "");
    k->log_write = keel_metrics_histogram(m, "keel_twopc_log_write_seconds",
                                          "Fenced 2PC log writes to keel server.", "", NULL, 0);
    k->prepare = keel_metrics_histogram(
        m, "keel_twopc_prepare_seconds",
        "From BEGIN durable to the decision durable (collecting the votes).", "", NULL, 0);
    k->decision = keel_metrics_histogram(
        m, "keel_twopc_decision_seconds",
        "From the decision durable to END durable (delivering it to the participants).", "", NULL,
        0);
}

int keel_twopcs_init(keel_twopcs_t *t, const keel_twopcs_config_t *cfg, keel_errmsg_t *msg)
{
    memset(t, 0, sizeof(*t));
    int rc = keel_twopc_config_validate(&cfg->tx, msg);
    if (rc != 0)
        return rc;
    if (cfg->seeds_n == 0 || cfg->seeds_n > KEEL_CLIENT_SEEDS_MAX || cfg->lock_ttl_ms <= 0 ||
        cfg->request_timeout_ms <= 0 || cfg->give_up_ms <= 0 || cfg->decision_give_up_ms < 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "2pc: seeds, lock_ttl_ms, request_timeout_ms and "
                         "give_up_ms must be set and positive");
    t->cfg = *cfg;
    register_metrics(t);
    keel_rand_seed(&t->rand, cfg->seed);
    rc = keel_loop_init(&t->loop);
    if (rc != 0)
        return keel_errf(msg, rc, "2pc: event loop: %s", keel_strerror(rc));
    keel_client_config_t cc = keel_client_config_default();
    for (size_t i = 0; i < cfg->seeds_n; i++)
        cc.seeds[i] = cfg->seeds[i];
    cc.seeds_n = cfg->seeds_n;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.retry_tryagain = true;
    rc = keel_client_init(&t->cl, &t->loop, &cc, msg);
    if (rc != 0)
        keel_loop_close(&t->loop);
    return rc;
}

static void client_closed(keel_client_t *cl)
{
    (void)cl;
}

void keel_twopcs_close(keel_twopcs_t *t)
{
    keel_client_close(&t->cl, client_closed);
    for (int i = 0; i < 1000 && uv_loop_alive(&t->loop.uv); i++)
        uv_run(&t->loop.uv, UV_RUN_NOWAIT);
    keel_loop_close(&t->loop);
}

int keel_twopcs_add(keel_twopcs_t *t, keel_twopc_participant_t p)
{
    if (!keel_twopc_id_valid(p.name, KEEL_TWOPC_NAME_BYTES_MAX) || p.ops == NULL ||
        (p.ops->message == NULL &&
         (!p.ops->prepare || !p.ops->commit || !p.ops->abort || !p.ops->state)))
        return KEEL_EINVAL;
    for (uint32_t i = 0; i < t->parts_n; i++)
        if (strcmp(t->parts[i].name, p.name) == 0)
            return KEEL_EEXISTS;
    if (t->parts_n == KEEL_TWOPCS_PARTICIPANTS_MAX)
        return KEEL_EFULL;
    t->parts[t->parts_n++] = p;
    return 0;
}

static keel_twopc_participant_t *part_named(keel_twopcs_t *t, const char *name)
{
    for (uint32_t i = 0; i < t->parts_n; i++)
        if (strcmp(t->parts[i].name, name) == 0)
            return &t->parts[i];
    return NULL;
}

/* ---- a participant, through its state machine ----------------------------------------- */

/* Carries out the machine's local actions until it replies or has nothing more to do. The
 * reply (0 when the call failed: the coordinator counts a failed send). */
keel_twopc_reply_t keel__twopc_part_drive(keel_twopc_participant_t *p, keel_twopc_part_t *m,
                                          keel_twopc_part_update_t *u, const char *id,
                                          const uint8_t *input, size_t len, keel_errmsg_t *msg)
{
    for (int guard = 0; guard < 8; guard++) {
        keel_twopc_part_ev_t ev = {.now_ms = now_ms(), .type = KEEL_TWOPC_PEV_DONE};
        int rc = 0;
        switch (u->action) {
        case KEEL_TWOPC_PACT_REPLY:
            return u->reply == KEEL_TWOPC_REPLY_BUSY ? 0 : u->reply;
        case KEEL_TWOPC_PACT_NONE:
        case KEEL_TWOPC_PACT_INQUIRE:
            return KEEL_TWOPC_REPLY_ACK;
        case KEEL_TWOPC_PACT_PREPARE: {
            bool yes = false;
            rc = p->ops->prepare(p->data, id, input, len, &yes, msg);
            ev.type = yes ? KEEL_TWOPC_PEV_PREPARED : KEEL_TWOPC_PEV_REFUSED;
            break;
        }
        case KEEL_TWOPC_PACT_COMMIT:
            rc = p->ops->commit(p->data, id, msg);
            break;
        case KEEL_TWOPC_PACT_ABORT:
        case KEEL_TWOPC_PACT_TOMBSTONE:
            rc = p->ops->abort(p->data, id, msg);
            break;
        }
        if (rc != 0)
            return 0;
        rc = keel_twopc_part_step(m, &ev, u);
        assert(rc == 0);
    }
    return 0;
}

/* One message to a local participant p about transaction id, through its machine. */
keel_twopc_reply_t keel__twopc_part_message(const keel_twopc_config_t *cfg, uint64_t seed,
                                            keel_twopc_participant_t *p, const char *id,
                                            keel_twopc_msg_t msgk, const uint8_t *input, size_t len,
                                            int *err)
{
    keel_errmsg_t msg = {{0}};
    keel_twopc_state_t st;
    *err = 0;
    if (p->ops->state(p->data, id, &st, &msg) != 0)
        return 0;
    keel_twopc_part_t m;
    keel_twopc_part_init(&m, cfg, seed);
    keel_twopc_part_restore(&m, st, now_ms());
    keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_REQUEST, .now_ms = now_ms(), .msg = msgk};
    keel_twopc_part_update_t u;
    int rc = keel_twopc_part_step(&m, &ev, &u);
    if (rc != 0) {
        fprintf(stderr, "2pc %s: %s refused %s in state %s: %s\n", id, p->name,
                keel_twopc_msg_name(msgk), keel_twopc_state_name(st), keel_strerror(rc));
        *err = rc;
        return 0;
    }
    return keel__twopc_part_drive(p, &m, &u, id, input, len, &msg);
}

static keel_twopc_reply_t part_call(keel_twopcs_t *t, keel_twopc_participant_t *p, const char *id,
                                    keel_twopc_msg_t msgk, const uint8_t *input, size_t len)
{
    if (p->ops->message)
        return p->ops->message(p->data, id, msgk, input, len);
    int err;
    return keel__twopc_part_message(&t->cfg.tx, keel_rand_u64(&t->rand), p, id, msgk, input, len,
                                    &err);
}

/* ---- the coordinator ------------------------------------------------------------------- */

typedef struct run {
    keel_twopcs_t *t;
    const char *id;
    char lock[96], log_key[96], token_str[24];
    keel_ms_t locked_ms;
    keel_twopc_coord_t c;
    keel_twopc_coord_update_t u;
    const char *const *names; /* a new transaction's, or NULL (adopting) */
    uint32_t n;
    const void *input;
    size_t input_len;
    keel_ns_t begun_ns, decided_ns; /* when this run logged BEGIN / the decision (0: it did not) */
} run_t;

/* A command retried with backoff while its transport fails, up to give_up_ms. */
static int cmd_retry(run_t *r, size_t argc, const char *const *argv, const size_t *lens,
                     keel_client_reply_t *out)
{
    keel_ms_t end = now_ms() + r->t->cfg.give_up_ms;
    for (uint32_t k = 0;; k++) {
        int rc = cmd(r->t, argc, argv, lens, out);
        if (rc == 0 &&
            !(out->v->type == KEEL_RESP_ERROR && (keel_resp_error_contains(out->v, "TIMEOUT") ||
                                                  keel_resp_error_contains(out->v, "UNKNOWN") ||
                                                  keel_resp_error_contains(out->v, "TRYAGAIN") ||
                                                  keel_resp_error_contains(out->v, "LOADING"))))
            return 0;
        if (rc == 0)
            keel_client_reply_free(out);
        if (now_ms() >= end)
            return KEEL_ETIMEDOUT;
        sleep_ms(k < 5 ? 20L << k : 500);
    }
}

/* KEEL.LOCK: 0 (ours), KEEL_EBUSY (held), KEEL_ETIMEDOUT. */
static int take_lock(run_t *r)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->t->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.LOCK", r->lock, ttl};
    keel_client_reply_t rep;
    r->locked_ms = now_ms();
    int rc = cmd_retry(r, 3, argv, NULL, &rep);
    if (rc != 0)
        return rc;
    rc = rep.v->type == KEEL_RESP_INT ? 0 : KEEL_EBUSY;
    if (rc == 0)
        snprintf(r->token_str, sizeof(r->token_str), "%" PRId64, rep.v->integer);
    keel_client_reply_free(&rep);
    return rc;
}

/* Renews the lock once a third of its TTL passed: 0, 1 (renewed after a lapse: reload),
 * KEEL_ECANCELED (another owner has it), KEEL_ETIMEDOUT. */
static int renew(run_t *r)
{
    if (now_ms() - r->locked_ms < r->t->cfg.lock_ttl_ms / 3)
        return 0;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, r->t->cfg.lock_ttl_ms);
    const char *argv[] = {"KEEL.TXN",  "0",     "2", "3", "KEEL.UNLOCK", r->lock, r->token_str, "3",
                          "KEEL.LOCK", r->lock, ttl};
    keel_client_reply_t rep;
    r->locked_ms = now_ms();
    int rc = cmd_retry(r, sizeof(argv) / sizeof(argv[0]), argv, NULL, &rep);
    if (rc != 0)
        return rc;
    if (rep.v->type != KEEL_RESP_ARRAY || rep.v->elems_len != 2 ||
        rep.v->elems[1].type != KEEL_RESP_INT) {
        keel_client_reply_free(&rep);
        return KEEL_ECANCELED;
    }
    snprintf(r->token_str, sizeof(r->token_str), "%" PRId64, rep.v->elems[1].integer);
    /* UNLOCK said 0: the lease had lapsed, so another owner may have moved the transaction
     * on while nobody held it: reload before acting */
    bool kept = rep.v->elems[0].type == KEEL_RESP_INT && rep.v->elems[0].integer == 1;
    keel_client_reply_free(&rep);
    return kept ? 0 : 1;
}

/* Reads the log into a fresh instance and asks it what is next. KEEL_ENOTFOUND: empty. */
static int load(run_t *r, keel_errmsg_t *msg)
{
    keel_twopcs_t *t = r->t;
    int rc = r->names ? keel_twopc_coord_init(&r->c, &t->cfg.tx, r->id, r->names, r->n,
                                              keel_rand_u64(&t->rand), msg)
                      : keel_twopc_coord_init_recover(&r->c, &t->cfg.tx, r->id,
                                                      keel_rand_u64(&t->rand), msg);
    if (rc != 0)
        return rc;
    const char *argv[] = {"XRANGE", r->log_key, "-", "+"};
    keel_client_reply_t rep;
    rc = cmd_retry(r, 4, argv, NULL, &rep);
    if (rc != 0)
        return keel_errf(msg, rc, "2pc %s: reading the log: %s", r->id, keel_strerror(rc));
    if (rep.v->type != KEEL_RESP_ARRAY) {
        keel_client_reply_free(&rep);
        return keel_errf(msg, KEEL_EPROTO, "2pc %s: XRANGE did not answer an array", r->id);
    }
    for (size_t i = 0; i < rep.v->elems_len && rc == 0; i++) {
        uint32_t seq = 0;
        const keel_resp_value_t *b = keel__twopc_entry_record(&rep.v->elems[i], &seq);
        rc = b == NULL ? keel_errf(msg, KEEL_ECORRUPT, "2pc %s: log entry %zu malformed", r->id, i)
                       : keel_twopc_coord_replay(&r->c, b->str.ptr, b->str.len, msg);
    }
    size_t entries = rep.v->elems_len;
    keel_client_reply_free(&rep);
    if (rc != 0)
        return rc == KEEL_EPROTO ? KEEL_ECORRUPT : rc;
    for (uint32_t i = 0; i < r->c.n; i++)
        if (part_named(t, r->c.names[i]) == NULL)
            return keel_errf(msg, KEEL_ENOTFOUND, "2pc %s: participant %s is not known here", r->id,
                             r->c.names[i]);
    if (entries == 0 && r->names == NULL)
        return KEEL_ENOTFOUND;
    if (entries == 0) {
        const char *set[] = {"KEEL.FENCED", r->lock, r->token_str, "HSET", OPEN_KEY, r->id, "1"};
        rc = cmd_retry(r, 7, set, NULL, &rep);
        if (rc != 0)
            return rc;
        bool fenced = keel_resp_error_contains(rep.v, "FENCED");
        keel_client_reply_free(&rep);
        if (fenced)
            return KEEL_ECANCELED;
        return keel_twopc_coord_begin(&r->c, now_ms(), r->input, r->input_len, &r->u);
    }
    return keel_twopc_coord_resume(&r->c, now_ms(), &r->u);
}

/* Writes the pending record. 0 logged, 1 reload (slot taken, or fenced and re-locked),
 * or an error. */
static int write_log(run_t *r)
{
    keel_twopcs_t *t = r->t;
    char id[24];
    snprintf(id, sizeof(id), "0-%" PRIu32, r->u.seq);
    const char *argv[] = {"KEEL.FENCED", r->lock, r->token_str, "XADD",
                          r->log_key,    id,      "r",          (const char *)r->u.record};
    size_t lens[8];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    lens[7] = r->u.record_len;
    keel_ns_t t0 = keel_clock_now_ns();
    keel_client_reply_t rep;
    int rc = cmd_retry(r, 8, argv, lens, &rep);
    if (rc != 0)
        return rc;
    if (rep.v->type == KEEL_RESP_BULK) {
        keel_client_reply_free(&rep);
        count(&t->stats.log_writes, NULL);
        t->stats.log_write_ns += (uint64_t)(keel_clock_now_ns() - t0);
        observe_since(t->m.log_write, t0);
        return 0;
    }
    bool fenced = keel_resp_error_contains(rep.v, "FENCED"),
         taken = keel_resp_error_contains(rep.v, "equal or smaller");
    keel_client_reply_free(&rep);
    if (fenced) {
        count(&t->stats.fenced, t->m.fenced);
        rc = take_lock(r);
        return rc == KEEL_EBUSY ? KEEL_ECANCELED : rc == 0 ? 1 : rc;
    }
    if (!taken)
        return KEEL_EPROTO;
    /* that id is in the log: our own earlier write whose reply was lost, or the slot went to
     * another writer (a participant's abort) */
    const char *get[] = {"XRANGE", r->log_key, id, id};
    rc = cmd_retry(r, 4, get, NULL, &rep);
    if (rc != 0)
        return rc;
    uint32_t seq = 0;
    const keel_resp_value_t *b = rep.v->type == KEEL_RESP_ARRAY && rep.v->elems_len == 1
                                     ? keel__twopc_entry_record(&rep.v->elems[0], &seq)
                                     : NULL;
    bool same =
        b && b->str.len == r->u.record_len && memcmp(b->str.ptr, r->u.record, r->u.record_len) == 0;
    keel_client_reply_free(&rep);
    if (same) { /* our own write had landed */
        count(&t->stats.log_writes, NULL);
        t->stats.log_write_ns += (uint64_t)(keel_clock_now_ns() - t0);
        observe_since(t->m.log_write, t0);
        return 0;
    }
    count(&t->stats.slot_lost, t->m.slot_lost);
    return 1;
}

static void unlock(run_t *r)
{
    keel_client_reply_t rep;
    const char *un[] = {"KEEL.UNLOCK", r->lock, r->token_str};
    if (cmd(r->t, 3, un, NULL, &rep) == 0)
        keel_client_reply_free(&rep);
}

/* Over: the open mark goes (fenced; with a retention, the transaction indexed as ended in
 * the same entry when it has a log), then the lock. */
static void finish(run_t *r, bool logged)
{
    keel_client_reply_t rep;
    if (logged && r->t->cfg.log_retention_ms > 0) {
        char now[24];
        snprintf(now, sizeof(now), "%" PRId64, keel_clock_unix_ms());
        const char *txn[] = {"KEEL.FENCED", r->lock, r->token_str, "KEEL.TXN", "0",
                             "2",           "3",     "HDEL",       OPEN_KEY,   r->id,
                             "4",           "ZADD",  ENDED_KEY,    now,        r->id};
        if (cmd_retry(r, 15, txn, NULL, &rep) == 0)
            keel_client_reply_free(&rep);
    } else {
        const char *del[] = {"KEEL.FENCED", r->lock, r->token_str, "HDEL", OPEN_KEY, r->id};
        if (cmd_retry(r, 6, del, NULL, &rep) == 0)
            keel_client_reply_free(&rep);
    }
    unlock(r);
}

/* Sends u's message to each participant in its mask, feeding each answer back. */
static void sends(run_t *r, keel_ms_t *failing_since)
{
    keel_twopc_coord_update_t sent = r->u, next = {.action = KEEL_TWOPC_ACT_NONE};
    size_t len = 0;
    const uint8_t *input = r->c.input;
    len = r->c.input_len;
    bool failed = false;
    for (uint32_t i = 0; i < r->c.n; i++) {
        if (!(sent.to_mask & (1u << i)))
            continue;
        keel_twopc_reply_t rep =
            part_call(r->t, part_named(r->t, r->c.names[i]), r->id, sent.msg, input, len);
        keel_twopc_coord_ev_t ev = {
            .now_ms = now_ms(), .participant = i, .msg = sent.msg, .attempt = sent.attempt[i]};
        ev.type = rep == KEEL_TWOPC_REPLY_YES   ? KEEL_TWOPC_EV_VOTE_YES
                  : rep == KEEL_TWOPC_REPLY_NO  ? KEEL_TWOPC_EV_VOTE_NO
                  : rep == KEEL_TWOPC_REPLY_ACK ? KEEL_TWOPC_EV_ACK
                                                : KEEL_TWOPC_EV_SEND_FAILED;
        if (ev.type == KEEL_TWOPC_EV_SEND_FAILED) {
            count(&r->t->stats.sends_failed, r->t->m.sends_failed);
            failed = true;
        }
        keel_twopc_coord_update_t u;
        int rc = keel_twopc_coord_step(&r->c, &ev, &u);
        assert(rc == 0);
        (void)rc;
        if (u.action != KEEL_TWOPC_ACT_NONE)
            next = u;
        if (next.action == KEEL_TWOPC_ACT_LOG)
            break; /* decided (a no): the others learn it from the decision */
    }
    if (!failed)
        *failing_since = 0;
    else if (*failing_since == 0)
        *failing_since = now_ms();
    r->u = next;
}

/* The phase timings, after r->u's record is durable: only spans this run saw begin. */
static void phase_logged(run_t *r)
{
    keel_ns_t now = keel_clock_now_ns();
    switch (r->u.rec_type) {
    case KEEL_TWOPC_REC_BEGIN:
        r->begun_ns = now;
        break;
    case KEEL_TWOPC_REC_COMMIT:
    case KEEL_TWOPC_REC_ABORT:
        observe_since(r->t->m.prepare, r->begun_ns);
        r->decided_ns = now;
        break;
    case KEEL_TWOPC_REC_END:
        observe_since(r->t->m.decision, r->decided_ns);
        break;
    default:
        break;
    }
}

static int drive(run_t *r, keel_twopc_state_t *outcome, keel_errmsg_t *msg)
{
    keel_twopcs_t *t = r->t;
    keel_ms_t failing_since = 0;
    for (;;) {
        int rc = renew(r);
        if (rc == 1 && (rc = load(r, msg)) != 0)
            return rc;
        if (rc != 0)
            return keel_errf(msg, rc, "2pc %s: the lock: %s", r->id, keel_strerror(rc));
        switch (r->u.action) {
        case KEEL_TWOPC_ACT_LOG:
            rc = write_log(r);
            if (rc == 1) {
                rc = load(r, msg);
                if (rc != 0)
                    return rc;
                continue;
            }
            if (rc != 0)
                return keel_errf(msg, rc, "2pc %s: writing %s: %s", r->id,
                                 keel_twopc_rec_type_name(r->u.rec_type), keel_strerror(rc));
            phase_logged(r);
            {
                keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_LOGGED, .now_ms = now_ms()};
                rc = keel_twopc_coord_step(&r->c, &ev, &r->u);
                assert(rc == 0);
            }
            continue;
        case KEEL_TWOPC_ACT_SEND:
            sends(r, &failing_since);
            continue;
        case KEEL_TWOPC_ACT_FINISH:
            finish(r, true);
            *outcome = r->c.state;
            if (r->c.state == KEEL_TWOPC_COMMITTED)
                count(&t->stats.committed, t->m.committed);
            else
                count(&t->stats.aborted, t->m.aborted);
            return 0;
        case KEEL_TWOPC_ACT_NONE: {
            if (t->cfg.decision_give_up_ms > 0 && failing_since != 0 &&
                r->c.state != KEEL_TWOPC_PREPARING &&
                now_ms() - failing_since >= t->cfg.decision_give_up_ms)
                return keel_errf(msg, KEEL_ETIMEDOUT,
                                 "2pc %s: %s decided, a participant unreachable for %" PRId64
                                 " ms: left open for recovery",
                                 r->id, keel_twopc_state_name(r->c.state),
                                 t->cfg.decision_give_up_ms);
            keel_ms_t at = keel_twopc_coord_next_deadline_ms(&r->c);
            if (at == KEEL_MS_NEVER)
                return keel_errf(msg, KEEL_EPROTO, "2pc %s: stalled in %s", r->id,
                                 keel_twopc_state_name(r->c.state));
            keel_ms_t wait = at - now_ms();
            sleep_ms(wait > 1000 ? 1000 : wait);
            keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_TICK, .now_ms = now_ms()};
            rc = keel_twopc_coord_step(&r->c, &ev, &r->u);
            assert(rc == 0);
            continue;
        }
        }
    }
}

static int run_open(keel_twopcs_t *t, run_t *r, const char *id, keel_errmsg_t *msg)
{
    r->t = t;
    r->id = id;
    if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX) || strcmp(id, "open") == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "2pc id must be 1..%u of [A-Za-z0-9_.-], not \"open\" (the index's key)",
                         KEEL_TWOPC_ID_BYTES_MAX);
    snprintf(r->lock, sizeof(r->lock), "2pc:%s", id);
    snprintf(r->log_key, sizeof(r->log_key), "2pc:%s:log", id);
    int rc = take_lock(r);
    if (rc == KEEL_EBUSY)
        return keel_errf(msg, rc, "2pc %s: another coordinator holds it", id);
    if (rc != 0)
        return keel_errf(msg, rc, "2pc %s: locking: %s", id, keel_strerror(rc));
    return 0;
}

int keel_twopcs_run(keel_twopcs_t *t, const char *id, const char *const *parts, uint32_t n,
                    const void *input, size_t input_len, keel_twopc_state_t *outcome,
                    keel_errmsg_t *msg)
{
    for (uint32_t i = 0; i < n; i++)
        if (part_named(t, parts[i]) == NULL)
            return keel_errf(msg, KEEL_EINVAL, "2pc: participant %s is not known", parts[i]);
    if (input_len > KEEL_TWOPC_INPUT_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "2pc input over %u bytes", KEEL_TWOPC_INPUT_BYTES_MAX);
    run_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    r->names = parts;
    r->n = n;
    r->input = input;
    r->input_len = input_len;
    count(&t->stats.runs, t->m.runs);
    int rc = run_open(t, r, id, msg);
    if (rc == 0)
        rc = load(r, msg);
    if (rc == 0) {
        rc = drive(r, outcome, msg);
        if (rc == KEEL_ETIMEDOUT) /* left open: any coordinator may adopt it at once */
            unlock(r);
    }
    free(r);
    return rc;
}

/* Adopts transaction id if its lock is free: 1 finished, 0 left alone, or an error. */
static int adopt(keel_twopcs_t *t, const char *id, keel_errmsg_t *msg)
{
    run_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    int rc = run_open(t, r, id, msg);
    if (rc == KEEL_EBUSY) {
        free(r);
        return 0;
    }
    if (rc == 0)
        rc = load(r, msg);
    if (rc == KEEL_ENOTFOUND && r->c.n == 0) { /* an open mark without a log: never began */
        finish(r, false);
        free(r);
        return 0;
    }
    keel_twopc_state_t st;
    if (rc == 0)
        rc = drive(r, &st, msg);
    if (rc == 0)
        count(&t->stats.recovered, t->m.recovered);
    else /* free the lock for another try (or a coordinator that knows the participants) */
        unlock(r);
    free(r);
    return rc == 0 ? 1 : rc == KEEL_ENOTFOUND ? 0 : rc;
}

int keel_twopcs_recover(keel_twopcs_t *t, uint32_t *finished, keel_errmsg_t *msg)
{
    *finished = 0;
    char cursor[32] = "0";
    for (int pages = 0; pages < 100000; pages++) {
        const char *argv[] = {"HSCAN", OPEN_KEY, cursor, "COUNT", "256"};
        keel_client_reply_t rep;
        int rc = cmd(t, 5, argv, NULL, &rep);
        if (rc != 0)
            return keel_errf(msg, rc, "2pc recover: HSCAN: %s", keel_strerror(rc));
        const keel_resp_value_t *v = rep.v;
        if (v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
            v->elems[1].type != KEEL_RESP_ARRAY) {
            keel_client_reply_free(&rep);
            return keel_errf(msg, KEEL_EPROTO, "2pc recover: HSCAN answered no array");
        }
        size_t cl = v->elems[0].str.len < sizeof(cursor) - 1 ? v->elems[0].str.len : 0;
        memcpy(cursor, v->elems[0].str.ptr, cl);
        cursor[cl] = '\0';
        /* field, value, field, value, ...: the fields are the open transactions' ids */
        for (size_t i = 0; i + 1 < v->elems[1].elems_len; i += 2) {
            const keel_resp_value_t *k = &v->elems[1].elems[i];
            char id[KEEL_TWOPC_ID_BYTES_MAX + 1];
            if (k->type != KEEL_RESP_BULK || k->str.len == 0 ||
                k->str.len > KEEL_TWOPC_ID_BYTES_MAX)
                continue;
            memcpy(id, k->str.ptr, k->str.len);
            id[k->str.len] = '\0';
            keel_errmsg_t m = {{0}};
            rc = adopt(t, id, &m);
            if (rc > 0)
                (*finished)++;
            else if (rc < 0)
                fprintf(stderr, "2pc recover %s: %s\n", id, m.text);
        }
        keel_client_reply_free(&rep);
        if (strcmp(cursor, "0") == 0)
            return 0;
    }
    return 0;
}

int keel_twopcs_sweep(keel_twopcs_t *t, uint64_t *deleted, keel_errmsg_t *msg)
{
    *deleted = 0;
    if (t->cfg.log_retention_ms <= 0)
        return 0;
    for (int pages = 0; pages < 100000; pages++) {
        keel_args_t a;
        keel_args_init(&a, 8, 0);
        keel_retain_due_args(&a, ENDED_KEY, keel_clock_unix_ms() - t->cfg.log_retention_ms);
        keel_client_reply_t rep;
        int rc = keel_args_resolve(&a) == 0 ? cmd(t, a.n, a.ptrs, a.lens, &rep) : KEEL_ENOMEM;
        keel_args_free(&a);
        if (rc != 0)
            return keel_errf(msg, rc, "2pc sweep: ZRANGEBYSCORE: %s", keel_strerror(rc));
        if (rep.v->type != KEEL_RESP_ARRAY) {
            keel_client_reply_free(&rep);
            return keel_errf(msg, KEEL_EPROTO, "2pc sweep: ZRANGEBYSCORE answered no array");
        }
        size_t got = rep.v->elems_len;
        keel_client_reply_t del = {0};
        if (got > 0) {
            keel_args_init(&a, 8 + 2 * got, 0);
            keel_retain_page_args(&a, ENDED_KEY, "2pc:", rep.v, sizeof(((run_t *)0)->log_key));
            rc = keel_args_resolve(&a) == 0 ? cmd(t, a.n, a.ptrs, a.lens, &del) : KEEL_ENOMEM;
            keel_args_free(&a);
        }
        keel_client_reply_free(&rep);
        if (rc != 0)
            return keel_errf(msg, rc, "2pc sweep: unlinking: %s", keel_strerror(rc));
        if (got > 0) {
            const keel_resp_value_t *v = del.v;
            bool ok = v->type == KEEL_RESP_ARRAY && v->elems_len == 2 &&
                      v->elems[0].type == KEEL_RESP_INT;
            if (ok && v->elems[0].integer > 0)
                *deleted += (uint64_t)v->elems[0].integer;
            keel_client_reply_free(&del);
            if (!ok)
                return keel_errf(msg, KEEL_EPROTO, "2pc sweep: the unlink answered no array");
        }
        if (got < KEEL_RETAIN_PAGE)
            return 0;
    }
    return 0;
}

int keel_twopcs_inquire(keel_twopcs_t *t, const char *id, bool *commit, keel_errmsg_t *msg)
{
    if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX) || strcmp(id, "open") == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "2pc id must be 1..%u of [A-Za-z0-9_.-], not \"open\" (the index's key)",
                         KEEL_TWOPC_ID_BYTES_MAX);
    count(&t->stats.inquiries, t->m.inquiries);
    char key[96];
    snprintf(key, sizeof(key), "2pc:%s:log", id);
    for (int round = 0; round < 4; round++) {
        const char *argv[] = {"XRANGE", key, "0-1", "0-2"};
        keel_client_reply_t rep;
        int rc = cmd(t, 4, argv, NULL, &rep);
        if (rc != 0)
            return keel_errf(msg, KEEL_EAGAIN, "2pc %s: log unreachable: %s", id,
                             keel_strerror(rc));
        if (rep.v->type != KEEL_RESP_ARRAY) {
            keel_client_reply_free(&rep);
            return keel_errf(msg, KEEL_EAGAIN, "2pc %s: reading the log failed", id);
        }
        bool begun = false;
        int decision = 0;
        for (size_t i = 0; i < rep.v->elems_len; i++) {
            uint32_t seq = 0;
            const keel_resp_value_t *b = keel__twopc_entry_record(&rep.v->elems[i], &seq);
            keel_twopc_rec_t rec;
            if (b == NULL || keel_twopc_rec_decode(b->str.ptr, b->str.len, &rec, msg) != 0) {
                keel_client_reply_free(&rep);
                return keel_errf(msg, KEEL_ECORRUPT, "2pc %s: a log record is damaged", id);
            }
            begun = begun || rec.type == KEEL_TWOPC_REC_BEGIN;
            if (rec.type == KEEL_TWOPC_REC_COMMIT)
                decision = 1;
            else if (rec.type == KEEL_TWOPC_REC_ABORT)
                decision = 2;
        }
        keel_client_reply_free(&rep);
        if (decision) {
            *commit = decision == 1;
            return 0;
        }
        if (!begun)
            return keel_errf(msg, KEEL_ENOTFOUND, "2pc %s: no BEGIN in the log", id);
        /* no decision: propose abort into the slot (presumed abort); whoever wins decides */
        uint8_t b[KEEL_TWOPC_RECORD_BYTES_MAX];
        int n = keel_twopc_abort_record(now_ms(), "a participant in doubt found no decision", b,
                                        sizeof(b));
        assert(n > 0);
        const char *add[] = {"XADD", key, "0-2", "r", (const char *)b};
        size_t lens[] = {4, strlen(key), 3, 1, (size_t)n};
        rc = cmd(t, 5, add, lens, &rep);
        if (rc != 0)
            return keel_errf(msg, KEEL_EAGAIN, "2pc %s: proposing abort: %s", id,
                             keel_strerror(rc));
        bool won = rep.v->type == KEEL_RESP_BULK;
        keel_client_reply_free(&rep);
        if (won) {
            count(&t->stats.proposals, t->m.proposals);
            *commit = false;
            return 0;
        }
        /* lost the race, or the outcome is unknown: read the slot again */
    }
    return keel_errf(msg, KEEL_EAGAIN, "2pc %s: the decision slot could not be read", id);
}
