/* test_twopc.c - the two-phase commit cores: records, traces, and a simulated coordinator and
 * three participants crashed at every step boundary and at random, by seed. */
#include "base/rand.h"
#include "core/twopc.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[3] = {"bank-a", "bank-b", "audit"};

static keel_twopc_config_t cfg_test(void)
{
    keel_twopc_config_t c = keel_twopc_config_default();
    c.prepare_timeout_ms = 200;
    c.resend_base_ms = 5;
    c.resend_cap_ms = 40;
    c.in_doubt_ms = 600;
    c.inquire_base_ms = 20;
    c.inquire_cap_ms = 100;
    return c;
}

static void coord_init(keel_twopc_coord_t *c, const char *id)
{
    keel_twopc_config_t cfg = cfg_test();
    keel_errmsg_t m;
    if (keel_twopc_coord_init(c, &cfg, id, NAMES, 3, 1, &m) != 0)
        KT_FAIL("init: %s", m.text);
}

static void trace(char *tr, size_t cap, const keel_twopc_coord_update_t *u)
{
    size_t n = strlen(tr);
    switch (u->action) {
    case KEEL_TWOPC_ACT_LOG:
        snprintf(tr + n, cap - n, "log:%s ", keel_twopc_rec_type_name(u->rec_type));
        break;
    case KEEL_TWOPC_ACT_SEND:
        snprintf(tr + n, cap - n, "%s->%x ", keel_twopc_msg_name(u->msg), u->to_mask);
        break;
    case KEEL_TWOPC_ACT_FINISH:
        snprintf(tr + n, cap - n, "finish:%s", keel_twopc_state_name(u->state));
        break;
    default:
        break;
    }
}

/* Answers every send at once: votes from `votes` ('y', 'n', '-' no answer); acks always. */
static void run_votes(const char *votes, char *tr, size_t cap)
{
    keel_twopc_coord_t c;
    coord_init(&c, "t1");
    keel_twopc_coord_update_t u;
    keel_ms_t now = 1000;
    tr[0] = '\0';
    KT_EQ_INT(keel_twopc_coord_begin(&c, now, "x", 1, &u), 0);
    for (int g = 0; g < 50 && u.action != KEEL_TWOPC_ACT_FINISH; g++) {
        trace(tr, cap, &u);
        keel_twopc_coord_update_t sent = u;
        if (u.action == KEEL_TWOPC_ACT_LOG) {
            keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_LOGGED, .now_ms = ++now};
            KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
            continue;
        }
        if (u.action == KEEL_TWOPC_ACT_NONE) {
            now = keel_twopc_coord_next_deadline_ms(&c);
            keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_TICK, .now_ms = now};
            KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
            continue;
        }
        keel_twopc_coord_update_t last = {.action = KEEL_TWOPC_ACT_NONE};
        for (uint32_t i = 0; i < 3; i++) {
            if (!(sent.to_mask & (1u << i)))
                continue;
            keel_twopc_coord_ev_t ev = {.now_ms = ++now,
                                        .participant = i,
                                        .msg = sent.msg,
                                        .attempt = sent.attempt[i],
                                        .type = KEEL_TWOPC_EV_ACK};
            if (sent.msg == KEEL_TWOPC_MSG_PREPARE) {
                if (votes[i] == '-')
                    continue;
                ev.type = votes[i] == 'y' ? KEEL_TWOPC_EV_VOTE_YES : KEEL_TWOPC_EV_VOTE_NO;
            }
            keel_twopc_coord_update_t v;
            KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &v), 0);
            if (v.action != KEEL_TWOPC_ACT_NONE)
                last = v;
        }
        u = last;
    }
    trace(tr, cap, &u);
}

static void all_yes_votes_log_commit_before_telling_anyone(void)
{
    char tr[512];
    run_votes("yyy", tr, sizeof(tr));
    KT_EQ_STR(tr, "log:begin prepare->7 log:commit commit->7 log:end finish:committed");
}

static void a_no_vote_logs_abort_and_tells_only_those_that_may_be_prepared(void)
{
    char tr[512];
    run_votes("yny", tr, sizeof(tr));
    KT_EQ_STR(tr, "log:begin prepare->7 log:abort abort->5 log:end finish:aborted");
}

static void a_vote_missing_at_the_prepare_deadline_is_an_abort(void)
{
    char tr[512];
    run_votes("yy-", tr, sizeof(tr));
    KT_EQ_STR(tr, "log:begin prepare->7 log:abort abort->7 log:end finish:aborted");
}

static void a_failed_send_is_retried_after_a_backoff_and_stale_answers_are_ignored(void)
{
    keel_twopc_coord_t c;
    coord_init(&c, "t2");
    keel_twopc_coord_update_t u;
    KT_EQ_INT(keel_twopc_coord_begin(&c, 0, NULL, 0, &u), 0);
    keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_LOGGED, .now_ms = 10};
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_ACT_SEND);
    KT_EQ_INT(keel_twopc_coord_next_deadline_ms(&c), 210); /* the prepare deadline */
    ev = (keel_twopc_coord_ev_t){.type = KEEL_TWOPC_EV_SEND_FAILED,
                                 .now_ms = 11,
                                 .participant = 1,
                                 .msg = KEEL_TWOPC_MSG_PREPARE,
                                 .attempt = 1};
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_ACT_NONE);
    keel_ms_t retry = keel_twopc_coord_next_deadline_ms(&c);
    KT_CHECK(retry >= 11 + 2 && retry <= 11 + 5);
    ev = (keel_twopc_coord_ev_t){.type = KEEL_TWOPC_EV_TICK, .now_ms = retry};
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_ACT_SEND);
    KT_EQ_INT(u.to_mask, 2);
    KT_EQ_INT(u.attempt[1], 2);
    /* the first attempt's late yes is stale: still waiting on attempt 2 */
    ev = (keel_twopc_coord_ev_t){.type = KEEL_TWOPC_EV_VOTE_YES,
                                 .now_ms = 20,
                                 .participant = 1,
                                 .msg = KEEL_TWOPC_MSG_PREPARE,
                                 .attempt = 1};
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
    KT_EQ_INT(c.p[1].vote, KEEL_TWOPC_VOTE_NONE);
    ev.participant = 7;
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), KEEL_EINVAL);
    ev = (keel_twopc_coord_ev_t){.type = KEEL_TWOPC_EV_LOGGED, .now_ms = 20};
    KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), KEEL_EINVAL); /* no log pending */
}

/* Logs the first `n` records of a transaction whose votes all say yes. */
static size_t collect(uint8_t recs[3][KEEL_TWOPC_RECORD_BYTES_MAX], size_t lens[3], bool commit)
{
    keel_twopc_coord_t c;
    coord_init(&c, "t3");
    keel_twopc_coord_update_t u;
    size_t n = 0;
    KT_EQ_INT(keel_twopc_coord_begin(&c, 5, "in", 2, &u), 0);
    for (int g = 0; g < 20 && u.action != KEEL_TWOPC_ACT_FINISH; g++) {
        if (u.action == KEEL_TWOPC_ACT_LOG) {
            memcpy(recs[n], u.record, u.record_len);
            lens[n++] = u.record_len;
            keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_LOGGED, .now_ms = 6 + g};
            KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &u), 0);
        } else {
            keel_twopc_coord_update_t s = u, v;
            for (uint32_t i = 0; i < 3; i++) {
                keel_twopc_coord_ev_t ev = {
                    .now_ms = 6 + g, .participant = i, .msg = s.msg, .attempt = s.attempt[i]};
                ev.type = s.msg != KEEL_TWOPC_MSG_PREPARE ? KEEL_TWOPC_EV_ACK
                          : commit || i != 2              ? KEEL_TWOPC_EV_VOTE_YES
                                                          : KEEL_TWOPC_EV_VOTE_NO;
                KT_EQ_INT(keel_twopc_coord_step(&c, &ev, &v), 0);
                if (v.action != KEEL_TWOPC_ACT_NONE)
                    u = v;
            }
        }
    }
    return n;
}

static void replaying_the_log_rebuilds_the_state_and_resumes_each_state_right(void)
{
    uint8_t recs[3][KEEL_TWOPC_RECORD_BYTES_MAX];
    size_t lens[3];
    KT_EQ_INT(collect(recs, lens, true), 3);
    const char *want[4] = {"", "log:abort ", "commit->7 ", "finish:committed"};
    for (size_t k = 0; k <= 3; k++) {
        keel_twopc_coord_t c;
        keel_twopc_config_t cfg = cfg_test();
        KT_EQ_INT(keel_twopc_coord_init_recover(&c, &cfg, "t3", 9, NULL), 0);
        for (size_t i = 0; i < k; i++)
            KT_EQ_INT(keel_twopc_coord_replay(&c, recs[i], lens[i], NULL), 0);
        keel_twopc_coord_update_t u;
        int rc = keel_twopc_coord_resume(&c, 100, &u);
        if (k == 0) {
            KT_EQ_INT(rc, KEEL_ENOTFOUND);
            continue;
        }
        KT_EQ_INT(rc, 0);
        char tr[128] = "";
        trace(tr, sizeof(tr), &u);
        KT_EQ_STR(tr, want[k]);
        KT_EQ_INT(c.n, 3);
        KT_EQ_STR(c.names[2], "audit");
        KT_EQ_INT(c.input_len, 2);
    }
    /* an abort decision: its reason is kept */
    KT_EQ_INT(collect(recs, lens, false), 3);
    keel_twopc_coord_t c;
    coord_init(&c, "t3");
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], lens[0], NULL), 0);
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[1], lens[1], NULL), 0);
    KT_EQ_STR(c.reason, "audit voted no");
    char d[256];
    keel_twopc_coord_describe(&c, d, sizeof(d));
    KT_CHECK(strstr(d, "aborting seq=2") != NULL);
}

static void malformed_or_out_of_order_records_are_refused(void)
{
    uint8_t recs[3][KEEL_TWOPC_RECORD_BYTES_MAX];
    size_t lens[3];
    collect(recs, lens, true);
    for (size_t i = 0; i < lens[0] * 8; i++) {
        uint8_t b[KEEL_TWOPC_RECORD_BYTES_MAX];
        memcpy(b, recs[0], lens[0]);
        b[i / 8] ^= (uint8_t)(1u << (i % 8));
        keel_twopc_coord_t c;
        coord_init(&c, "t3");
        KT_EQ_INT(keel_twopc_coord_replay(&c, b, lens[0], NULL), KEEL_ECORRUPT);
        KT_EQ_INT(c.state, KEEL_TWOPC_NEW);
    }
    for (size_t n = 0; n < lens[0]; n++) {
        keel_twopc_coord_t c;
        coord_init(&c, "t3");
        KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], n, NULL), KEEL_ECORRUPT);
    }
    keel_twopc_coord_t c;
    coord_init(&c, "t3");
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[1], lens[1], &m), KEEL_EPROTO); /* gap */
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], lens[0], NULL), 0);
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], lens[0], NULL), KEEL_EPROTO); /* repeat */
    /* a BEGIN naming other participants than the instance's */
    keel_twopc_config_t cfg = cfg_test();
    const char *other[3] = {"bank-a", "bank-x", "audit"};
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "t3", other, 3, 1, NULL), 0);
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], lens[0], NULL), KEEL_EPROTO);
    /* a participant's abort proposal decodes as the decision */
    uint8_t ab[KEEL_TWOPC_RECORD_BYTES_MAX];
    int n = keel_twopc_abort_record(7, "in doubt", ab, sizeof(ab));
    KT_CHECK(n > 0);
    coord_init(&c, "t3");
    KT_EQ_INT(keel_twopc_coord_replay(&c, recs[0], lens[0], NULL), 0);
    KT_EQ_INT(keel_twopc_coord_replay(&c, ab, (size_t)n, NULL), 0);
    KT_EQ_INT(c.state, KEEL_TWOPC_ABORTING);
}

static void configuration_names_and_ids_are_checked(void)
{
    keel_twopc_coord_t c;
    keel_twopc_config_t cfg = cfg_test();
    const char *dup[2] = {"a", "a"}, *bad[1] = {"a b"};
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "ok", dup, 2, 1, NULL), KEEL_EINVAL);
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "ok", bad, 1, 1, NULL), KEEL_EINVAL);
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "ok", NAMES, 0, 1, NULL), KEEL_EINVAL);
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "bad id", NAMES, 3, 1, NULL), KEEL_EINVAL);
    cfg.resend_cap_ms = 1;
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "ok", NAMES, 3, 1, NULL), KEEL_EINVAL);
    cfg = cfg_test();
    KT_EQ_INT(keel_twopc_coord_init(&c, &cfg, "ok", NAMES, 3, 1, NULL), 0);
    keel_twopc_coord_update_t u;
    static uint8_t big[KEEL_TWOPC_INPUT_BYTES_MAX + 1];
    KT_EQ_INT(keel_twopc_coord_begin(&c, 0, big, sizeof(big), &u), KEEL_ETOOBIG);
    KT_EQ_INT(keel_twopc_coord_begin(&c, 0, big, sizeof(big) - 1, &u), 0);
    KT_EQ_INT(keel_twopc_coord_begin(&c, 0, NULL, 0, &u), KEEL_EINVAL);
}

static void a_participant_keeps_its_promise_and_answers_repeats_with_the_first_answer(void)
{
    keel_twopc_config_t cfg = cfg_test();
    keel_twopc_part_t p;
    keel_twopc_part_init(&p, &cfg, 1);
    keel_twopc_part_update_t u;
    keel_twopc_part_ev_t req = {
        .type = KEEL_TWOPC_PEV_REQUEST, .now_ms = 1, .msg = KEEL_TWOPC_MSG_PREPARE};
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_PACT_PREPARE);
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0); /* while preparing */
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_BUSY);
    keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_PREPARED, .now_ms = 2};
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), 0);
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_YES);
    KT_EQ_INT(keel_twopc_part_next_deadline_ms(&p), 602);
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0);
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_YES);
    /* in doubt: it inquires; an unreachable log is retried after a backoff */
    ev = (keel_twopc_part_ev_t){.type = KEEL_TWOPC_PEV_TICK, .now_ms = 602};
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_PACT_INQUIRE);
    ev = (keel_twopc_part_ev_t){.type = KEEL_TWOPC_PEV_INQUIRY_FAILED, .now_ms = 603};
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), 0);
    KT_CHECK(keel_twopc_part_next_deadline_ms(&p) > 603);
    /* the coordinator's commit arrives */
    req.msg = KEEL_TWOPC_MSG_COMMIT;
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_PACT_COMMIT);
    ev = (keel_twopc_part_ev_t){.type = KEEL_TWOPC_PEV_DONE, .now_ms = 604};
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), 0);
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_ACK);
    KT_EQ_INT(p.state, KEEL_TWOPC_COMMITTED);
    req.msg = KEEL_TWOPC_MSG_ABORT; /* contradicts what it did: refused loudly */
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), KEEL_EPROTO);
    KT_EQ_INT(p.state, KEEL_TWOPC_COMMITTED);
    KT_EQ_INT(keel_twopc_part_next_deadline_ms(&p), KEEL_MS_NEVER);
}

static void an_abort_before_the_prepare_leaves_a_tombstone_that_refuses_it(void)
{
    keel_twopc_config_t cfg = cfg_test();
    keel_twopc_part_t p;
    keel_twopc_part_init(&p, &cfg, 1);
    keel_twopc_part_update_t u;
    keel_twopc_part_ev_t req = {
        .type = KEEL_TWOPC_PEV_REQUEST, .now_ms = 1, .msg = KEEL_TWOPC_MSG_ABORT};
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0);
    KT_EQ_INT(u.action, KEEL_TWOPC_PACT_TOMBSTONE);
    keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_DONE, .now_ms = 2};
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), 0);
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_ACK);
    req.msg = KEEL_TWOPC_MSG_PREPARE;
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), 0);
    KT_EQ_INT(u.reply, KEEL_TWOPC_REPLY_NO);
    req.msg = KEEL_TWOPC_MSG_COMMIT;
    KT_EQ_INT(keel_twopc_part_step(&p, &req, &u), KEEL_EPROTO);
    ev.type = KEEL_TWOPC_PEV_PREPARED; /* no local action pending */
    KT_EQ_INT(keel_twopc_part_step(&p, &ev, &u), KEEL_EINVAL);
}

/* ---- the explorer --------------------------------------------------------------------
 *
 * One transaction, a coordinator and three participants in one simulated world. The store
 * is keel server's stream as tx/twopc uses it: three slots (seq 1..3), each written once
 * (a second write of a slot is refused, unless it repeats the same bytes: a retried write
 * whose reply was lost), and coordinator writes fenced by the owner's token. Messages sit
 * in a queue, delivered in random order or lost (a lost request or reply is a failed send
 * for the coordinator: its call timed out). Local actions of participants (prepare,
 * resolve, tombstone) are separate steps, so a crash falls before or after them. The
 * coordinator crashes and restarts (a new owner, a new token: the old one may go on as a
 * paused zombie whose writes are refused); a participant crashes and restarts from its
 * durable state. Every transition is a boundary; the systematic test crashes each process
 * at each boundary; the random runs crash any of them many times.
 * Invariants, checked after every transition: no participant committed while another
 * aborted after preparing; a commit only after the log's decision slot says commit, an
 * abort of a prepared participant only after it says abort; the decision commit only when
 * every participant is prepared (or committed). At the end, once faults stop (and even when
 * the coordinator never comes back): every participant resolved, none in doubt.
 */
#define NP 3
#define QMAX 256
#define ZMAX 2

typedef enum { Q_REQ, Q_REP } qkind_t;
typedef struct qmsg {
    qkind_t kind;
    uint32_t part;
    keel_twopc_msg_t msg;
    uint32_t attempt;
    uint64_t token; /* the coordinator incarnation it belongs to */
    keel_twopc_reply_t reply;
} qmsg_t;

typedef struct coord_proc {
    keel_twopc_coord_t c;
    keel_twopc_coord_update_t u; /* the pending LOG, if u.action == LOG */
    uint64_t token;
    bool live, log_pending;
} coord_proc_t;

typedef struct part_proc {
    keel_twopc_part_t p;
    keel_twopc_state_t durable;
    keel_twopc_part_action_t next_action; /* local action or INQUIRE to carry out */
    bool req_from_live;                   /* the pending request's reply goes to this token */
    qmsg_t req;
    bool has_req;
    bool reject; /* its business says no */
    int prepared_ever;
} part_proc_t;

typedef struct world {
    uint64_t seed;
    keel_rand_t r;
    keel_ms_t now;
    uint8_t slot[3][KEEL_TWOPC_RECORD_BYTES_MAX];
    size_t slot_len[3];
    uint64_t holder, next_token;
    coord_proc_t co;
    coord_proc_t zombies[ZMAX];
    part_proc_t pp[NP];
    qmsg_t q[QMAX];
    int qn;
    double p_fault, p_crash;
    int crashes_left;
    long crash_at;            /* systematic: crash `crash_who` at this boundary */
    int crash_who;            /* 0 coordinator, 1.. participant, 10+: coordinator paused (zombie) */
    bool coord_gone_for_good; /* a crashed coordinator never comes back */
    bool bug_tell_before_log; /* the explorer's own test */
    bool faults_off;
    long boundary;
    bool violated;
    char why[160];
    /* results */
    long coord_crashes, part_crashes, zombie_refused, proposals_won, slot_lost, inquiries;
} world_t;

static void violation(world_t *w, const char *what)
{
    if (!w->violated) {
        w->violated = true;
        snprintf(w->why, sizeof(w->why), "%s", what);
    }
}

static int slot_decision(const world_t *w) /* 0 none, 1 commit, 2 abort */
{
    if (w->slot_len[1] == 0)
        return 0;
    return w->slot[1][5] == KEEL_TWOPC_REC_COMMIT ? 1 : 2;
}

static void check(world_t *w)
{
    int committed = 0, aborted_prepared = 0;
    for (int i = 0; i < NP; i++) {
        part_proc_t *p = &w->pp[i];
        if (p->durable == KEEL_TWOPC_COMMITTED) {
            committed++;
            if (slot_decision(w) != 1)
                violation(w, "a participant committed without a commit in the log");
        }
        if (p->durable == KEEL_TWOPC_ABORTED && p->prepared_ever) {
            aborted_prepared++;
            if (slot_decision(w) != 2)
                violation(w, "a prepared participant aborted without an abort in the log");
        }
        if (slot_decision(w) == 1 && p->durable != KEEL_TWOPC_PREPARED &&
            p->durable != KEEL_TWOPC_COMMITTED)
            violation(w, "commit decided while a participant was not prepared");
    }
    if (committed && aborted_prepared)
        violation(w, "mixed outcome: one participant committed, another aborted");
    for (int i = 0; i < NP; i++)
        if (committed && w->pp[i].durable == KEEL_TWOPC_ABORTED)
            violation(w, "mixed outcome: committed beside a tombstone or a no");
}

/* The store. token 0: a participant's unfenced proposal. 0 ok, 1 fenced, 2 slot taken. */
static int store_write(world_t *w, uint64_t token, uint32_t seq, const uint8_t *b, size_t n)
{
    if (token != 0 && token != w->holder)
        return 1;
    size_t k = seq - 1;
    if (w->slot_len[k]) {
        if (w->slot_len[k] == n && memcmp(w->slot[k], b, n) == 0)
            return 0; /* a repeat of a write whose reply was lost */
        return 2;
    }
    if (k > 0 && w->slot_len[k - 1] == 0)
        return 2; /* the stream: an id above a missing one is fine, but we never skip */
    memcpy(w->slot[k], b, n);
    w->slot_len[k] = n;
    return 0;
}

static bool fault(world_t *w)
{
    return !w->faults_off && keel_rand_chance(&w->r, w->p_fault);
}

static void enqueue(world_t *w, qmsg_t m)
{
    if (w->qn >= QMAX) /* a full network drops it: a lost message */
        return;
    w->q[w->qn++] = m;
}

static void coord_apply(world_t *w, coord_proc_t *co, const keel_twopc_coord_update_t *u)
{
    if (u->action == KEEL_TWOPC_ACT_LOG) {
        co->u = *u;
        co->log_pending = true;
    } else if (u->action == KEEL_TWOPC_ACT_SEND) {
        for (uint32_t i = 0; i < NP; i++)
            if (u->to_mask & (1u << i))
                enqueue(w, (qmsg_t){.kind = Q_REQ,
                                    .part = i,
                                    .msg = u->msg,
                                    .attempt = u->attempt[i],
                                    .token = co->token});
    }
}

/* A new owner: takes the lock (fencing the old one), reads the log, replays, resumes. */
static void coord_take_over(world_t *w)
{
    coord_proc_t *co = &w->co;
    keel_twopc_config_t cfg = cfg_test();
    KT_EQ_INT(keel_twopc_coord_init_recover(&co->c, &cfg, "tx", w->seed + w->next_token, NULL), 0);
    co->token = w->holder = ++w->next_token;
    co->live = true;
    co->log_pending = false;
    for (int k = 0; k < 3 && w->slot_len[k]; k++)
        if (keel_twopc_coord_replay(&co->c, w->slot[k], w->slot_len[k], NULL) != 0)
            violation(w, "the log does not replay");
    keel_twopc_coord_update_t u;
    if (keel_twopc_coord_resume(&co->c, w->now, &u) == 0)
        coord_apply(w, co, &u);
    else
        co->live = false; /* nothing logged: the transaction never began */
}

static void coord_step(world_t *w, coord_proc_t *co, const keel_twopc_coord_ev_t *ev)
{
    keel_twopc_coord_update_t u;
    if (keel_twopc_coord_step(&co->c, ev, &u) != 0)
        violation(w, "the coordinator refused an event");
    coord_apply(w, co, &u);
}

/* The coordinator carries out its pending log write. */
static void coord_log(world_t *w, coord_proc_t *co)
{
    if (fault(w)) { /* the request was lost, or applied and the reply lost: retried */
        if (keel_rand_chance(&w->r, 0.5))
            store_write(w, co->token, co->u.seq, co->u.record, co->u.record_len);
        return;
    }
    bool decision = co->u.rec_type == KEEL_TWOPC_REC_COMMIT;
    int rc = w->bug_tell_before_log && decision
                 ? 0
                 : store_write(w, co->token, co->u.seq, co->u.record, co->u.record_len);
    co->log_pending = false;
    if (rc == 1) { /* fenced: this owner stops */
        co->live = false;
        w->zombie_refused++;
        return;
    }
    if (rc == 2) { /* the decision slot was taken (a participant's abort): reload */
        w->slot_lost++;
        if (co == &w->co)
            coord_take_over(w);
        else
            co->live = false;
        return;
    }
    keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_LOGGED, .now_ms = w->now};
    coord_step(w, co, &ev);
}

static coord_proc_t *coord_of(world_t *w, uint64_t token)
{
    if (w->co.live && w->co.token == token)
        return &w->co;
    for (int z = 0; z < ZMAX; z++)
        if (w->zombies[z].live && w->zombies[z].token == token)
            return &w->zombies[z];
    return NULL;
}

static void part_apply(world_t *w, part_proc_t *pp, const keel_twopc_part_update_t *u)
{
    if (u->action == KEEL_TWOPC_PACT_REPLY) {
        if (pp->has_req) {
            qmsg_t m = pp->req;
            m.kind = Q_REP;
            m.reply = u->reply;
            enqueue(w, m);
        }
        pp->has_req = false;
    } else if (u->action != KEEL_TWOPC_PACT_NONE) {
        pp->next_action = u->action;
    }
}

static void part_step(world_t *w, part_proc_t *pp, const keel_twopc_part_ev_t *ev)
{
    keel_twopc_part_update_t u;
    int rc = keel_twopc_part_step(&pp->p, ev, &u);
    if (rc == KEEL_EPROTO)
        violation(w, "a participant was told a decision contradicting its state");
    else if (rc != 0)
        violation(w, "a participant refused an event");
    part_apply(w, pp, &u);
}

/* A participant carries out its local action (durably) or its inquiry. */
static void part_local(world_t *w, int i)
{
    part_proc_t *pp = &w->pp[i];
    keel_twopc_part_action_t a = pp->next_action;
    pp->next_action = KEEL_TWOPC_PACT_NONE;
    keel_twopc_part_ev_t ev = {.now_ms = w->now, .type = KEEL_TWOPC_PEV_DONE};
    switch (a) {
    case KEEL_TWOPC_PACT_PREPARE:
        if (pp->reject) {
            pp->durable = KEEL_TWOPC_ABORTED;
            ev.type = KEEL_TWOPC_PEV_REFUSED;
        } else {
            pp->durable = KEEL_TWOPC_PREPARED;
            pp->prepared_ever = 1;
            ev.type = KEEL_TWOPC_PEV_PREPARED;
        }
        break;
    case KEEL_TWOPC_PACT_TOMBSTONE:
    case KEEL_TWOPC_PACT_ABORT:
        pp->durable = KEEL_TWOPC_ABORTED;
        break;
    case KEEL_TWOPC_PACT_COMMIT:
        pp->durable = KEEL_TWOPC_COMMITTED;
        break;
    case KEEL_TWOPC_PACT_INQUIRE: {
        w->inquiries++;
        if (fault(w)) {
            ev.type = KEEL_TWOPC_PEV_INQUIRY_FAILED;
            break;
        }
        int d = slot_decision(w);
        if (d == 0) {
            if (w->slot_len[0] == 0)
                violation(w, "a prepared participant found no BEGIN in the log");
            uint8_t b[KEEL_TWOPC_RECORD_BYTES_MAX];
            int n = keel_twopc_abort_record(w->now, "participant in doubt", b, sizeof(b));
            if (store_write(w, 0, KEEL_TWOPC_SEQ_DECISION, b, (size_t)n) == 0)
                w->proposals_won++;
            d = slot_decision(w);
        }
        ev.type = KEEL_TWOPC_PEV_INQUIRED;
        ev.commit = d == 1;
        break;
    }
    default:
        return;
    }
    part_step(w, pp, &ev);
}

static void deliver(world_t *w, int k)
{
    qmsg_t m = w->q[k];
    w->q[k] = w->q[--w->qn];
    bool lost = fault(w);
    if (m.kind == Q_REQ) {
        part_proc_t *pp = &w->pp[m.part];
        if (lost || pp->has_req) { /* lost, or the participant is busy with another */
            if (!lost) {
                qmsg_t r = m;
                r.kind = Q_REP;
                r.reply = KEEL_TWOPC_REPLY_BUSY;
                enqueue(w, r);
                return;
            }
            m.kind = Q_REP;
            m.reply = 0; /* the caller's timeout */
            enqueue(w, m);
            return;
        }
        pp->req = m;
        pp->has_req = true;
        keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_REQUEST, .now_ms = w->now, .msg = m.msg};
        part_step(w, pp, &ev);
        return;
    }
    coord_proc_t *co = coord_of(w, m.token);
    if (co == NULL)
        return; /* its coordinator is gone */
    keel_twopc_coord_ev_t ev = {
        .now_ms = w->now, .participant = m.part, .msg = m.msg, .attempt = m.attempt};
    if (lost || m.reply == 0 || m.reply == KEEL_TWOPC_REPLY_BUSY)
        ev.type = KEEL_TWOPC_EV_SEND_FAILED;
    else if (m.reply == KEEL_TWOPC_REPLY_YES)
        ev.type = KEEL_TWOPC_EV_VOTE_YES;
    else if (m.reply == KEEL_TWOPC_REPLY_NO)
        ev.type = KEEL_TWOPC_EV_VOTE_NO;
    else
        ev.type = KEEL_TWOPC_EV_ACK;
    coord_step(w, co, &ev);
}

static void crash_coord(world_t *w, bool pause)
{
    if (!w->co.live)
        return;
    w->coord_crashes++;
    if (pause) {
        for (int z = 0; z < ZMAX; z++)
            if (!w->zombies[z].live) {
                w->zombies[z] = w->co;
                break;
            }
    }
    w->co.live = false;
    if (!w->coord_gone_for_good)
        coord_take_over(w);
}

static void crash_part(world_t *w, int i)
{
    part_proc_t *pp = &w->pp[i];
    w->part_crashes++;
    pp->next_action = KEEL_TWOPC_PACT_NONE;
    if (pp->has_req) { /* the request dies with it: the caller times out */
        qmsg_t m = pp->req;
        m.kind = Q_REP;
        m.reply = 0;
        enqueue(w, m);
    }
    pp->has_req = false;
    keel_twopc_config_t cfg = cfg_test();
    keel_twopc_part_init(&pp->p, &cfg, w->seed + (uint64_t)i);
    keel_twopc_part_restore(&pp->p, pp->durable, w->now);
}

static void crash_by(world_t *w, int who)
{
    if (who == 0 || who >= 10)
        crash_coord(w, who >= 10);
    else
        crash_part(w, who - 1);
}

/* Time jumps to the earliest deadline; everyone ticks. */
static void tick_all(world_t *w)
{
    keel_ms_t next = KEEL_MS_NEVER;
    coord_proc_t *cs[1 + ZMAX] = {&w->co, &w->zombies[0], &w->zombies[1]};
    for (int k = 0; k < 1 + ZMAX; k++)
        if (cs[k]->live && !cs[k]->log_pending) {
            keel_ms_t d = keel_twopc_coord_next_deadline_ms(&cs[k]->c);
            if (d < next)
                next = d;
        }
    for (int i = 0; i < NP; i++) {
        keel_ms_t d = keel_twopc_part_next_deadline_ms(&w->pp[i].p);
        if (d < next)
            next = d;
    }
    if (next == KEEL_MS_NEVER)
        return;
    if (next > w->now)
        w->now = next;
    for (int k = 0; k < 1 + ZMAX; k++)
        if (cs[k]->live && !cs[k]->log_pending) {
            keel_twopc_coord_ev_t ev = {.type = KEEL_TWOPC_EV_TICK, .now_ms = w->now};
            coord_step(w, cs[k], &ev);
        }
    for (int i = 0; i < NP; i++) {
        keel_twopc_part_ev_t ev = {.type = KEEL_TWOPC_PEV_TICK, .now_ms = w->now};
        part_step(w, &w->pp[i], &ev);
    }
}

static bool settled(const world_t *w)
{
    for (int i = 0; i < NP; i++)
        if (!keel_twopc_state_final(w->pp[i].durable) && w->pp[i].durable != KEEL_TWOPC_NEW)
            return false;
    if (w->co.live && !keel_twopc_state_final(w->co.c.state))
        return false;
    for (int i = 0; i < NP; i++) /* NEW participants are fine only if the decision is abort */
        if (w->pp[i].durable == KEEL_TWOPC_NEW && slot_decision(w) == 1)
            return false;
    return w->qn == 0 || !w->co.live;
}

/* One transition, chosen at random among those enabled. Returns false when none is. */
static bool transition(world_t *w)
{
    w->now += (keel_ms_t)keel_rand_below(&w->r, 3);
    int choices[64], n = 0;
    coord_proc_t *cs[1 + ZMAX] = {&w->co, &w->zombies[0], &w->zombies[1]};
    for (int k = 0; k < 1 + ZMAX; k++)
        if (cs[k]->live && cs[k]->log_pending)
            choices[n++] = 100 + k;
    for (int i = 0; i < NP; i++)
        if (w->pp[i].next_action != KEEL_TWOPC_PACT_NONE)
            choices[n++] = 200 + i;
    if (w->qn > 0)
        choices[n++] = 300, choices[n++] = 300;
    if (n == 0) {
        keel_ms_t before = w->now;
        tick_all(w);
        return w->now != before || w->qn > 0;
    }
    if (keel_rand_chance(&w->r, 0.1)) {
        tick_all(w);
        return true;
    }
    int c = choices[keel_rand_below(&w->r, (uint64_t)n)];
    if (c >= 300)
        deliver(w, (int)keel_rand_below(&w->r, (uint64_t)w->qn));
    else if (c >= 200)
        part_local(w, c - 200);
    else
        coord_log(w, cs[c - 100]);
    return true;
}

static void world_init(world_t *w, uint64_t seed)
{
    memset(w, 0, sizeof(*w));
    w->seed = seed;
    keel_rand_seed(&w->r, seed);
    w->now = 1;
    w->crash_at = -1;
    keel_twopc_config_t cfg = cfg_test();
    for (int i = 0; i < NP; i++) {
        keel_twopc_part_init(&w->pp[i].p, &cfg, seed * 7 + (uint64_t)i);
        w->pp[i].durable = KEEL_TWOPC_NEW;
    }
}

/* Runs one transaction to its end; returns the decision (1 commit, 2 abort, 0 none). */
static int simulate(world_t *w)
{
    keel_twopc_config_t cfg = cfg_test();
    coord_proc_t *co = &w->co;
    KT_EQ_INT(keel_twopc_coord_init(&co->c, &cfg, "tx", NAMES, NP, w->seed, NULL), 0);
    co->token = w->holder = ++w->next_token;
    co->live = true;
    keel_twopc_coord_update_t u;
    KT_EQ_INT(keel_twopc_coord_begin(&co->c, w->now, "transfer 10", 11, &u), 0);
    coord_apply(w, co, &u);
    long t;
    for (t = 0; t < 20000; t++) {
        if (w->boundary == w->crash_at)
            crash_by(w, w->crash_who);
        if (!w->faults_off && w->crashes_left > 0 && keel_rand_chance(&w->r, w->p_crash)) {
            w->crashes_left--;
            crash_by(w,
                     (int)keel_rand_below(&w->r, 1 + NP) + (keel_rand_chance(&w->r, 0.3) ? 10 : 0));
        }
        if (t == 4000)
            w->faults_off = true; /* then everything must settle */
        bool moved = transition(w);
        w->boundary++;
        check(w);
        if (w->violated)
            break;
        if (!moved && settled(w))
            break;
    }
    if (!w->violated) {
        for (int i = 0; i < NP; i++)
            if (w->pp[i].durable == KEEL_TWOPC_PREPARED)
                violation(w, "a participant stayed in doubt");
        if (w->co.live && !keel_twopc_state_final(w->co.c.state))
            violation(w, "the coordinator never finished");
    }
    return slot_decision(w);
}

static void fail_run(const world_t *w)
{
    KT_FAIL("seed %llu (crash_at %ld who %d gone %d): %s", (unsigned long long)w->seed, w->crash_at,
            w->crash_who, w->coord_gone_for_good, w->why);
}

static void a_crash_of_any_process_at_every_boundary_keeps_the_outcome_atomic(void)
{
    long runs = 0, outcomes[3] = {0}, refused = 0, won = 0;
    for (int reject = -1; reject < NP; reject++)
        for (int gone = 0; gone < 2; gone++) {
            world_t w;
            world_init(&w, 1);
            if (reject >= 0)
                w.pp[reject].reject = true;
            simulate(&w);
            long boundaries = w.boundary;
            for (long b = 0; b < boundaries; b++)
                for (int who = 0; who <= NP + 1; who++) {
                    world_init(&w, 100 + (uint64_t)b);
                    if (reject >= 0)
                        w.pp[reject].reject = true;
                    w.crash_at = b;
                    w.crash_who = who == NP + 1 ? 10 : who;
                    w.coord_gone_for_good = gone;
                    KT_SEED(w.seed);
                    int d = simulate(&w);
                    if (w.violated)
                        fail_run(&w);
                    outcomes[d]++;
                    refused += w.zombie_refused;
                    won += w.proposals_won;
                    runs++;
                }
        }
    fprintf(stderr,
            "  systematic: %ld runs: committed %ld, aborted %ld, never begun %ld; zombie writes "
            "refused %ld, aborts proposed by participants in doubt %ld\n",
            runs, outcomes[1], outcomes[2], outcomes[0], refused, won);
    KT_CHECK(outcomes[1] > 0 && outcomes[2] > 0 && won > 0);
}

static void many_random_runs_with_crashes_pauses_and_lost_messages_stay_atomic(void)
{
    const uint64_t runs = 100000;
    long outcomes[3] = {0}, cc = 0, pc = 0, refused = 0, won = 0, lost = 0, inq = 0, steps = 0;
    for (uint64_t seed = 1; seed <= runs; seed++) {
        world_t w;
        world_init(&w, seed);
        KT_SEED(seed);
        keel_rand_t pick;
        keel_rand_seed(&pick, keel_mix64(seed));
        if (keel_rand_chance(&pick, 0.3))
            w.pp[keel_rand_below(&pick, NP)].reject = true;
        w.p_fault = keel_rand_double(&pick) * 0.4;
        w.p_crash = keel_rand_double(&pick) * 0.1;
        w.crashes_left = (int)keel_rand_below(&pick, 8);
        w.coord_gone_for_good = keel_rand_chance(&pick, 0.2);
        int d = simulate(&w);
        if (w.violated)
            fail_run(&w);
        outcomes[d]++;
        cc += w.coord_crashes;
        pc += w.part_crashes;
        refused += w.zombie_refused;
        won += w.proposals_won;
        lost += w.slot_lost;
        inq += w.inquiries;
        steps += w.boundary;
    }
    fprintf(stderr,
            "  random: %llu runs: committed %ld, aborted %ld, never begun %ld; coordinator "
            "crashes %ld, participant crashes %ld, zombie writes refused %ld, inquiries %ld, "
            "aborts proposed %ld, decision writes that lost the slot %ld; %ld transitions\n",
            (unsigned long long)runs, outcomes[1], outcomes[2], outcomes[0], cc, pc, refused, inq,
            won, lost, steps);
    KT_CHECK(outcomes[1] > 0 && outcomes[2] > 0 && cc > 0 && pc > 0 && refused > 0 && won > 0);
    KT_CHECK(lost > 0);
}

/* The explorer bites: a driver that tells the participants the decision before it is durable
 * (reports the COMMIT logged without writing it) must be caught. */
static void the_explorer_catches_a_decision_told_before_it_is_logged(void)
{
    bool caught = false;
    for (uint64_t seed = 1; seed <= 2000 && !caught; seed++) {
        world_t w;
        world_init(&w, seed);
        w.bug_tell_before_log = true;
        w.p_crash = 0.05;
        w.crashes_left = 3;
        simulate(&w);
        caught = w.violated;
    }
    KT_CHECK(caught);
}

int main(void)
{
    KT_RUN(all_yes_votes_log_commit_before_telling_anyone);
    KT_RUN(a_no_vote_logs_abort_and_tells_only_those_that_may_be_prepared);
    KT_RUN(a_vote_missing_at_the_prepare_deadline_is_an_abort);
    KT_RUN(a_failed_send_is_retried_after_a_backoff_and_stale_answers_are_ignored);
    KT_RUN(replaying_the_log_rebuilds_the_state_and_resumes_each_state_right);
    KT_RUN(malformed_or_out_of_order_records_are_refused);
    KT_RUN(configuration_names_and_ids_are_checked);
    KT_RUN(a_participant_keeps_its_promise_and_answers_repeats_with_the_first_answer);
    KT_RUN(an_abort_before_the_prepare_leaves_a_tombstone_that_refuses_it);
    KT_RUN(a_crash_of_any_process_at_every_boundary_keeps_the_outcome_atomic);
    KT_RUN(many_random_runs_with_crashes_pauses_and_lost_messages_stay_atomic);
    KT_RUN(the_explorer_catches_a_decision_told_before_it_is_logged);
    return kt_done();
}
