/* lblock.c - the blocking pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP; BZPOPMIN, BZPOPMAX,
   BZMPOP): a connection waits for elements on any node, and what it is given was removed by a
   committed entry. */
#include "server/server_int.h"

#include "base/bytes.h"
#include "runtime/clock.h"
#include "base/log.h"
#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A blocked pop waits on the node that took it, leader or follower: a record in
 * s->lq (in order of arrival) and a reply slot that holds back the connection's later
 * commands, as Redis blocks a client. Nothing of Raft is held while it waits.
 *
 * Serving. Each time this node applies entries, the waiting pops are looked at in order of
 * arrival: a pop whose source key holds elements that earlier pops on this node have not
 * claimed proposes its served form (core's keel_kv_bpop_served: the same pop of that one
 * key, which answers nil instead of waiting) as a write, wrapped as KEEL.BPOP <token> ...,
 * and claims the elements it will take, so that one push wakes one waiter, not all. The
 * client is answered with the committed result only: the element was removed by an entry
 * in the log before anyone sees it. A nil result (a client on another node, or a plain
 * LPOP, took the elements first) puts the pop back to waiting, in its place.
 *
 * Outcomes. A write whose outcome is unknown (the leader changed or went silent after the
 * pop was sent) must neither be answered as nothing (its element would be lost) nor
 * retried (it would take a second one). The token settles it: this node applies every
 * committed entry, and its state machine wrapper (lb_apply) watches for its own tokens, so
 * an applied pop is seen here whatever became of its reply. After an unknown outcome the
 * node proposes a fence, KEEL.BPOP <token> alone, which does nothing; whichever of the two
 * this node applies first decides: the pop (answer its result) or the fence (the pop was
 * never committed and never will be: an entry of an older term cannot commit after an entry
 * of a newer one, and a leader appends one forwarder's entries in order; the pop waits
 * again). A snapshot installed meanwhile hides entries from the watch: such a pop answers
 * the UNKNOWN error, as any write whose outcome is unknown.
 *
 * A client that leaves while waiting is dropped before anything is proposed for it. One
 * that leaves while its pop is in the log has its elements pushed back where they came
 * from (BLPOP, BRPOP, BLMPOP; a sorted set's members with their scores; a BLMOVE's element
 * stays in its destination).
 *
 * Timeouts are swept every LBLOCK_TICK_MS (answer *-1, as Redis 7.0 for every list pop); a
 * pop whose write is in the log is answered when its outcome is known, never by a timeout.
 */
#define LBLOCK_TICK_MS 5u
/* Blocked pops per node; past it a blocking pop answers as it would inside MULTI. */
#define LBLOCKED_MAX 100000u
/* Bytes of a token: "<node id>.<start ms>.<sequence>". */
#define LB_TOKEN_BYTES 64u
#define LB_ARGV_MAX (2u + KEEL_KV_BPOP_SERVED_ARGC_MAX)

enum { LB_WAIT, LB_POP, LB_FENCE, LB_DONE };

struct lblocked {
    keel_list_t link; /* s->lq.list, in order of arrival */
    server_t *srv;
    keel_resp_deferred_t *slot;
    keel_kv_bpop_t bp;
    int state;
    int writes;    /* proposals whose on_written has not come yet */
    int fence_due; /* LB_FENCE: a fence is to be (re)proposed */
    int seen;      /* LB_POP / LB_FENCE: 1 the pop was applied here (got), 2 the fence first */
    int snap_gap;  /* a snapshot was installed while the pop was in the log */
    int answered;  /* the slot is done */
    int resp3;     /* the connection said HELLO 3: the answer is rendered with shape */
    keel_resp3_shape_t shape;
    uint64_t deadline_ms;
    uint64_t claim_n; /* LB_POP: elements claimed at argv[claim_key] */
    size_t claim_key;
    char token[LB_TOKEN_BYTES];
    size_t token_len;
    keel_buf_t got; /* the result of the pop as this node applied it */
    size_t argc;
    const uint8_t **argv; /* an owned copy (after this struct) */
    size_t *lens;
};

static const uint8_t NIL_ARRAY[] = "*-1\r\n";
static const uint8_t KBPOP[] = "KEEL.BPOP";

static int is_nil(const uint8_t *p, size_t n)
{
    return n == 5 && (memcmp(p, "*-1\r\n", 5) == 0 || memcmp(p, "$-1\r\n", 5) == 0);
}

static void count(keel_counter_t *c)
{
    if (c)
        keel_counter_inc(c);
}

static void lb_free(lblocked_t *b)
{
    keel__waitq_remove(&b->srv->lq, &b->link);
    keel_buf_free(&b->got);
    free(b);
}

/* Sets the state, keeping s->lb_watched (pops whose token this node looks for) right. */
static void lb_state(lblocked_t *b, int state)
{
    server_t *s = b->srv;
    int was = b->state == LB_POP || b->state == LB_FENCE;
    int is = state == LB_POP || state == LB_FENCE;
    s->lb_watched = s->lb_watched - (size_t)was + (size_t)is;
    b->state = state;
}

/* Answers the client (once) and ends the pop; the record goes when no write is pending. */
static void lb_answer(lblocked_t *b, const uint8_t *p, size_t n)
{
    if (!b->answered) {
        int rc = 0;
        if (p && !keel_resp_deferred_orphaned(b->slot))
            rc = keel__srv_reply(b->resp3, b->shape, keel_resp_deferred_out(b->slot), p, n);
        keel_resp_deferred_done(b->slot, rc);
        b->answered = 1;
    }
    lb_state(b, LB_DONE);
    if (b->writes == 0)
        lb_free(b);
}

static void lb_answer_error(lblocked_t *b, const char *text)
{
    if (text[0] == 'U')
        count(b->srv->m_lb_unknown);
    keel_buf_t *out = &b->srv->buf;
    keel_buf_reset(out);
    keel_resp_write_error(out, text);
    lb_answer(b, keel_buf_rptr(out), keel_buf_unread(out));
}

static void lb_wait_again(lblocked_t *b)
{
    lb_state(b, LB_WAIT);
    b->seen = 0;
    b->snap_gap = 0;
    b->fence_due = 0;
    b->claim_n = 0;
    keel_buf_reset(&b->got);
    b->srv->lb_pass_due = 1;
}

/* ---- a departed client's elements go back -------------------------------------------- */

/* The bulk strings of a served pop's reply, in order (the key first): 0, or -1 when it is
 * not the expected shape. */
static int bulks(const uint8_t *p, size_t n, const uint8_t **v, size_t *vl, size_t cap, size_t *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        uint8_t t = p[i];
        size_t e = i;
        while (e + 1 < n && !(p[e] == '\r' && p[e + 1] == '\n'))
            e++;
        if (e + 1 >= n)
            return -1;
        int64_t num;
        if (keel_parse_i64(p + i + 1, e - i - 1, &num) != 0)
            return -1;
        i = e + 2;
        if (t == '*')
            continue;
        if (t != '$' || num < 0 || (uint64_t)num > n - i || n - i - (size_t)num < 2 || k == cap)
            return -1;
        v[k] = p + i;
        vl[k++] = (size_t)num;
        i += (size_t)num + 2;
    }
    *out = k;
    return 0;
}

static void give_back_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    (void)reply;
    (void)len;
    if (status != 0)
        keel_log_warn("blocking pop: could not give back the elements of a departed client",
                      KF_STR("error", keel_strerror(status)));
    (void)ctx;
}

/* LPUSH (RPUSH) key en ... e1 puts e1..en back where a left (right) pop took them; a sorted
 * set's members go back with their scores: ZADD key s1 m1 ... (the reply: key m1 s1 ...). */
static void give_back(lblocked_t *b, const uint8_t *p, size_t n)
{
    server_t *s = b->srv;
    if (b->bp.kind == KEEL_KV_BPOP_MOVE || s->node == NULL)
        return;
    int zset = keel_kv_bpop_is_zset(&b->bp);
    size_t cap = 2 + (zset ? 2 : 1) * (size_t)b->bp.count;
    const uint8_t **v = malloc(cap * sizeof(*v));
    size_t *vl = malloc(cap * sizeof(*vl));
    size_t k = 0;
    if (v && vl && bulks(p, n, v, vl, cap, &k) == 0 && k >= 2 && (!zset || k % 2 == 1)) {
        for (size_t i = 1, j = k - 1; !zset && i < j; i++, j--) {
            /* reverse the elements: argv = PUSH key en .. e1 */
            const uint8_t *tv = v[i];
            size_t tl = vl[i];
            v[i] = v[j];
            vl[i] = vl[j];
            v[j] = tv;
            vl[j] = tl;
        }
        for (size_t i = 1; zset && i + 1 < k; i += 2) {
            /* member score -> score member */
            const uint8_t *tv = v[i];
            size_t tl = vl[i];
            v[i] = v[i + 1];
            vl[i] = vl[i + 1];
            v[i + 1] = tv;
            vl[i + 1] = tl;
        }
        /* shift right by one for the command's name */
        const uint8_t **av = malloc((k + 1) * sizeof(*av));
        size_t *al = malloc((k + 1) * sizeof(*al));
        if (av && al) {
            av[0] = (const uint8_t *)(zset ? "ZADD" : b->bp.left ? "LPUSH" : "RPUSH");
            al[0] = zset ? 4 : 5;
            memcpy(av + 1, v, k * sizeof(*av));
            memcpy(al + 1, vl, k * sizeof(*al));
            count(s->m_lb_given_back);
            int rc = keel_node_write(s->node, (int)(k + 1), av, al, give_back_done, NULL);
            if (rc != 0)
                give_back_done(NULL, rc, NULL, 0);
        }
        free(av);
        free(al);
    }
    free(v);
    free(vl);
}

/* The committed result of the pop: answer it, or wait again if it was nil. */
static void lb_result(lblocked_t *b, const uint8_t *p, size_t n)
{
    server_t *s = b->srv;
    if (is_nil(p, n)) {
        count(s->m_lb_lost_race);
        if (b->deadline_ms != 0 && keel_node_read_now_ms(s->node) >= b->deadline_ms)
            lb_answer(b, NIL_ARRAY, sizeof(NIL_ARRAY) - 1);
        else
            lb_wait_again(b);
        return;
    }
    if (keel_resp_deferred_orphaned(b->slot) && n > 0 && p[0] == '*')
        give_back(b, p, n);
    else if (n > 0 && p[0] != '-')
        count(s->m_lb_served);
    lb_answer(b, p, n);
}

/* ---- proposals --------------------------------------------------------------------------- */

static void on_fence_written(void *ctx, int status, const uint8_t *resp, size_t len);

static void submit_fence(lblocked_t *b)
{
    server_t *s = b->srv;
    const uint8_t *argv[2] = {KBPOP, (const uint8_t *)b->token};
    size_t lens[2] = {sizeof(KBPOP) - 1, b->token_len};
    b->fence_due = 0;
    count(s->m_lb_fences);
    b->writes += 2; /* as submit_pop */
    int rc = keel_node_write(s->node, 2, argv, lens, on_fence_written, b);
    if (rc != 0) {
        b->writes--;
        b->fence_due = 1; /* the tick tries again */
    }
    if (--b->writes == 0 && b->state == LB_DONE)
        lb_free(b);
}

static void on_fence_written(void *ctx, int status, const uint8_t *resp, size_t len)
{
    (void)resp;
    (void)len;
    lblocked_t *b = ctx;
    server_t *s = b->srv;
    b->writes--;
    if (b->state == LB_DONE) {
        if (b->writes == 0)
            lb_free(b);
        return;
    }
    if (s->lq.closing) {
        lb_answer(b, NULL, 0);
        return;
    }
    if (b->state != LB_FENCE)
        return; /* settled already (the pop or the fence was applied): maybe waiting again */
    if (status == 0 && b->snap_gap && b->seen == 0)
        lb_answer_error(b, "UNKNOWN keel: the leader changed before it answered; the pop may "
                           "or may not have been applied");
    else if (status != 0 && b->seen == 0)
        b->fence_due = 1;
    /* status 0: this node applies the fence (or the pop before it) soon: on_applied decides */
}

static void on_pop_written(void *ctx, int status, const uint8_t *resp, size_t len)
{
    lblocked_t *b = ctx;
    server_t *s = b->srv;
    b->writes--;
    if (b->state == LB_DONE) {
        if (b->writes == 0)
            lb_free(b);
        return;
    }
    if (s->lq.closing) {
        lb_answer(b, NULL, 0);
        return;
    }
    s->lb_pass_due = 1; /* its claim is released either way */
    if (status == 0) {
        lb_result(b, resp, len);
    } else if (b->seen == 1) {
        lb_result(b, keel_buf_rptr(&b->got), keel_buf_unread(&b->got));
    } else if (status == KEEL_ENOTLEADER || status == KEEL_ECONFLICT || status == KEEL_EFULL) {
        lb_wait_again(b); /* not applied: served again when its turn comes */
    } else if (status == KEEL_ECANCELED) {
        lb_answer_error(b, "ERR keel: server shutting down");
    } else if (b->snap_gap) {
        lb_answer_error(b, "UNKNOWN keel: the leader changed before it answered; the pop may "
                           "or may not have been applied");
    } else {
        lb_state(b, LB_FENCE);
        submit_fence(b);
    }
}

/* Proposes b's served pop of argv[key_i]: 0 (in the log), 1 (settled before returning: b
 * may be gone), or the node's refusal (b waits again). */
static int submit_pop(lblocked_t *b, size_t key_i, uint64_t claim)
{
    server_t *s = b->srv;
    const uint8_t *argv[LB_ARGV_MAX];
    size_t lens[LB_ARGV_MAX];
    char num[KEEL_DEC_BYTES_MAX];
    b->token_len = (size_t)snprintf(b->token, sizeof(b->token), "%llu.%llu.%llu.%llu",
                                    (unsigned long long)keel_node_config(s->node)->id,
                                    (unsigned long long)getpid(), (unsigned long long)s->lb_nonce,
                                    (unsigned long long)++s->lb_seq);
    argv[0] = KBPOP;
    lens[0] = sizeof(KBPOP) - 1;
    argv[1] = (const uint8_t *)b->token;
    lens[1] = b->token_len;
    size_t n =
        keel_kv_bpop_served(&b->bp, (int)b->argc, b->argv, b->lens, key_i, argv + 2, lens + 2, num);
    b->seen = 0;
    b->snap_gap = 0;
    keel_buf_reset(&b->got);
    b->claim_key = key_i;
    b->claim_n = claim;
    lb_state(b, LB_POP);
    b->writes += 2; /* one for the write, one held while it may answer before returning */
    int rc = keel_node_write(s->node, (int)(n + 2), argv, lens, on_pop_written, b);
    if (rc != 0) {
        b->writes--;
        lb_state(b, LB_WAIT);
        b->claim_n = 0;
    }
    if (--b->writes == 0 && b->state == LB_DONE) {
        lb_free(b);
        return 1; /* answered (and gone) already */
    }
    if (rc == 0 && b->state != LB_POP)
        return 1; /* its outcome came before the call returned */
    return rc;
}

/* ---- the pass: who is served ------------------------------------------------------------ */

struct lb_claim {
    const uint8_t *key;
    size_t len;
    uint64_t n;
};
typedef struct lb_claim claim_t;

static claim_t *claim_find(claim_t *cl, size_t n, const uint8_t *key, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (cl[i].len == len && memcmp(cl[i].key, key, len) == 0)
            return &cl[i];
    return NULL;
}

/* Adds a claim (best effort: without memory a pop is proposed unclaimed, which is only
 * less economical). */
static void claim_add(server_t *s, const uint8_t *key, size_t len, uint64_t n)
{
    claim_t *c = claim_find(s->lb_claims, s->lb_claims_n, key, len);
    if (c) {
        c->n += n;
        return;
    }
    if (s->lb_claims_n == s->lb_claims_cap) {
        size_t cap = s->lb_claims_cap ? s->lb_claims_cap * 2 : 16;
        claim_t *g = realloc(s->lb_claims, cap * sizeof(*g));
        if (g == NULL)
            return;
        s->lb_claims = g;
        s->lb_claims_cap = cap;
    }
    s->lb_claims[s->lb_claims_n++] = (claim_t){key, len, n};
}

/* Serves the waiting pops that can be, in order of arrival. */
static void lb_pass(server_t *s)
{
    if (s->node == NULL)
        return;
    if (s->lb_in_pass) { /* a callback of a write this pass proposes: the tick runs it */
        s->lb_pass_due = 1;
        return;
    }
    s->lb_in_pass = 1;
    s->lb_pass_due = 0;
    keel_kv_t *kv = &s->kv.kv;
    uint64_t now = keel_node_read_now_ms(s->node);
    s->lb_claims_n = 0;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH(it, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if (b->state == LB_POP && b->seen == 0 && b->claim_n)
            claim_add(s, b->argv[b->claim_key], b->lens[b->claim_key], b->claim_n);
    }
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if (b->state != LB_WAIT)
            continue;
        if (keel_resp_deferred_orphaned(b->slot)) {
            lb_answer(b, NULL, 0);
            continue;
        }
        for (size_t j = 0; j < b->bp.nkeys; j++) {
            size_t ki = b->bp.first_key + j;
            int64_t have = keel_kv_bpop_avail(kv, now, &b->bp, b->argv[ki], b->lens[ki]);
            if (have <= 0)
                continue;
            claim_t *c = claim_find(s->lb_claims, s->lb_claims_n, b->argv[ki], b->lens[ki]);
            uint64_t free_n =
                (uint64_t)have - (c ? (c->n < (uint64_t)have ? c->n : (uint64_t)have) : 0);
            if (free_n == 0)
                continue;
            uint64_t take = b->bp.count < free_n ? b->bp.count : free_n;
            int rc = submit_pop(b, ki, take);
            if (rc == 0)
                claim_add(s, b->argv[ki], b->lens[ki], take);
            else if (rc < 0)
                s->lb_retry = 1;
            break;
        }
    }
    s->lb_in_pass = 0;
}

void keel__srv_lblock_on_applied(server_t *s)
{
    if (s->node == NULL || s->lq.n == 0)
        return;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if (b->state != LB_FENCE)
            continue;
        if (b->seen == 1)
            lb_result(b, keel_buf_rptr(&b->got), keel_buf_unread(&b->got));
        else if (b->seen == 2)
            lb_wait_again(b);
        else if (b->snap_gap)
            lb_answer_error(b, "UNKNOWN keel: the leader changed before it answered; the pop "
                               "may or may not have been applied");
    }
    lb_pass(s);
}

/* ---- the state machine wrapper: this node's own pops among the applied entries ---------- */

static keel_sm_ops_t lb_ops;

static server_t *server_of_sm(void *sm)
{
    return (server_t *)((char *)sm - offsetof(server_t, kv));
}

/* The token of a KEEL.BPOP entry and whether it is a fence: 0, or -1 for another entry. */
static int entry_token(const uint8_t *e, size_t len, const uint8_t **tok, size_t *tok_len,
                       int *fence)
{
    if (len < KEEL_KV_ENTRY_HEADER_BYTES + 4 || e[0] != KEEL_KV_ENTRY_VERSION)
        return -1;
    uint32_t argc = keel_get_u32(e + 9);
    size_t p = KEEL_KV_ENTRY_HEADER_BYTES;
    uint32_t n0 = keel_get_u32(e + p);
    if (argc < 2 || n0 != sizeof(KBPOP) - 1 || len - p - 4 < n0 + 4u ||
        memcmp(e + p + 4, KBPOP, n0) != 0)
        return -1;
    p += 4 + n0;
    uint32_t n1 = keel_get_u32(e + p);
    if (len - p - 4 < n1)
        return -1;
    *tok = e + p + 4;
    *tok_len = n1;
    *fence = argc == 2;
    return 0;
}

static void lb_seen(server_t *s, const uint8_t *entry, size_t len, const keel_buf_t *reply)
{
    const uint8_t *tok;
    size_t tl;
    int fence;
    if (entry_token(entry, len, &tok, &tl, &fence) != 0)
        return;
    keel_list_t *it;
    KEEL_LIST_FOREACH(it, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if ((b->state != LB_POP && b->state != LB_FENCE) || b->seen != 0 || b->token_len != tl ||
            memcmp(b->token, tok, tl) != 0)
            continue;
        if (fence) {
            b->seen = 2;
        } else {
            keel_buf_reset(&b->got);
            if (keel_buf_append(&b->got, keel_buf_rptr(reply), keel_buf_unread(reply)) == 0)
                b->seen = 1;
            /* without memory for the copy, the reply of the write itself decides */
        }
        return;
    }
}

static int lb_apply(void *sm, uint64_t index, const uint8_t *entry, size_t len, keel_buf_t *reply)
{
    int rc = keel_kv_sm_ops.apply(sm, index, entry, len, reply);
    server_t *s = server_of_sm(sm);
    if (rc == 0 && s->lb_watched > 0)
        lb_seen(s, entry, len, reply);
    return rc;
}

static int lb_snapshot_load(void *sm, const uint8_t *p, size_t len, keel_errmsg_t *msg)
{
    int rc = keel_kv_sm_ops.snapshot_load(sm, p, len, msg);
    server_t *s = server_of_sm(sm);
    if (rc == 0 && s->lb_watched > 0) {
        keel_list_t *it;
        KEEL_LIST_FOREACH(it, &s->lq.list)
        {
            lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
            if (b->state == LB_POP || b->state == LB_FENCE)
                b->snap_gap = 1;
        }
    }
    return rc;
}

keel_sm_t keel__srv_lblock_sm(server_t *s)
{
    lb_ops = keel_kv_sm_ops;
    lb_ops.apply = lb_apply;
    lb_ops.snapshot_load = lb_snapshot_load;
    return (keel_sm_t){&lb_ops, &s->kv};
}

/* ---- the tick: timeouts, fences, retries ------------------------------------------------ */

static void on_tick(server_t *s)
{
    uint64_t now = s->node ? keel_node_read_now_ms(s->node) : 0;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if (b->state == LB_FENCE && b->fence_due && s->node)
            submit_fence(b);
        if (b->state != LB_WAIT)
            continue;
        if (keel_resp_deferred_orphaned(b->slot))
            lb_answer(b, NULL, 0);
        else if (b->deadline_ms != 0 && now >= b->deadline_ms)
            lb_answer(b, NIL_ARRAY, sizeof(NIL_ARRAY) - 1);
    }
    if (s->lb_retry || s->lb_pass_due) {
        s->lb_retry = 0;
        lb_pass(s);
    }
}

/* ---- the command --------------------------------------------------------------------------- */

/*
 * A follower's state may lag behind writes already acknowledged (the same client's SET just
 * before its BLPOP, say): a source of another type would then go unseen and the pop would
 * wait instead of answering WRONGTYPE. So a pop that finds nothing on a follower looks
 * again after a ReadIndex round (keel_node_read: this node has then applied every write
 * acknowledged before the pop arrived): a source of another type before any source with
 * elements answers WRONGTYPE, as the command would have. The record is held while the read
 * is out (counted in writes).
 */
static void on_first_look(void *ctx, int status, const uint8_t *resp, size_t len)
{
    (void)resp;
    (void)len;
    lblocked_t *b = ctx;
    server_t *s = b->srv;
    b->writes--;
    if (b->state == LB_DONE) {
        if (b->writes == 0)
            lb_free(b);
        return;
    }
    if (s->lq.closing) {
        if (b->writes == 0)
            lb_answer(b, NULL, 0);
        return;
    }
    if (status != 0 || b->state != LB_WAIT)
        return; /* it keeps waiting (or is being served) */
    uint64_t now = keel_node_read_now_ms(s->node);
    for (size_t j = 0; j < b->bp.nkeys; j++) {
        size_t ki = b->bp.first_key + j;
        int64_t have = keel_kv_bpop_avail(&s->kv.kv, now, &b->bp, b->argv[ki], b->lens[ki]);
        if (have < 0) {
            lb_answer_error(b, "WRONGTYPE Operation against a key holding the wrong kind of "
                               "value");
            return;
        }
        if (have > 0)
            break;
    }
    s->lb_pass_due = 1;
}

static void first_look(lblocked_t *b)
{
    static const uint8_t exists[] = "EXISTS";
    const uint8_t *argv[2] = {exists, b->argv[b->bp.first_key]};
    size_t lens[2] = {sizeof(exists) - 1, b->lens[b->bp.first_key]};
    b->writes += 2; /* as submit_pop */
    if (keel_node_read(b->srv->node, 2, argv, lens, on_first_look, b) != 0)
        b->writes--; /* no look: it waits as it found things */
    if (--b->writes == 0 && b->state == LB_DONE)
        lb_free(b);
}

static lblocked_t *lb_new(server_t *s, size_t argc, const keel_kv_bpop_t *bp, uint64_t now)
{
    size_t bytes = sizeof(lblocked_t) + argc * (sizeof(uint8_t *) + sizeof(size_t));
    for (size_t i = 0; i < argc; i++)
        bytes += s->lens[i];
    lblocked_t *b = calloc(1, bytes);
    if (b == NULL)
        return NULL;
    b->srv = s;
    b->bp = *bp;
    b->state = LB_WAIT;
    b->deadline_ms = bp->timeout_ms == 0 ? 0 : now + (uint64_t)bp->timeout_ms;
    keel_buf_init(&b->got, 0);
    keel_list_init(&b->link);
    b->argc = argc;
    b->argv = (const uint8_t **)(b + 1);
    b->lens = (size_t *)(b->argv + argc);
    uint8_t *data = (uint8_t *)(b->lens + argc);
    for (size_t i = 0; i < argc; i++) {
        memcpy(data, s->argv[i], s->lens[i]);
        b->argv[i] = data;
        b->lens[i] = s->lens[i];
        data += s->lens[i];
    }
    return b;
}

/*
 * The handler of the blocking pops. Inside MULTI (Redis: they do not block there), with an
 * argument error or a source of another type met before a list with elements (the
 * command's own error answers), or past LBLOCKED_MAX, they are ordinary data commands.
 */
int keel__srv_cmd_lblock(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    keel_kv_bpop_t bp;
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL || cs->in_multi || s->node == NULL || s->lq.n >= LBLOCKED_MAX ||
        !keel_kv_bpop_parse((int)argc, s->argv, s->lens, &bp))
        return keel__srv_cmd_data(c, argc, argv);
    uint64_t now = keel_node_read_now_ms(s->node);
    if (bp.timeout_ms > 0 && (uint64_t)bp.timeout_ms > (uint64_t)INT64_MAX - now)
        return keel__srv_cmd_data(c, argc, argv); /* "timeout is out of range" */
    int found = 0;
    for (size_t j = 0; j < bp.nkeys && !found; j++) {
        int64_t have = keel_kv_bpop_avail(&s->kv.kv, now, &bp, s->argv[bp.first_key + j],
                                          s->lens[bp.first_key + j]);
        if (have < 0)
            return keel__srv_cmd_data(c, argc, argv); /* WRONGTYPE */
        found = have > 0;
    }
    lblocked_t *b = lb_new(s, argc, &bp, now);
    if (b == NULL)
        return keel__srv_oom(c);
    b->resp3 = keel__srv_resp3(c);
    b->shape = keel__srv_resp3_shape(argc, s->argv, s->lens);
    b->slot = keel_resp_client_defer_barrier(c);
    if (b->slot == NULL) {
        keel_buf_free(&b->got);
        free(b);
        return keel__srv_oom(c);
    }
    keel__waitq_add(&s->lq, &b->link, 1);
    if (!found && !keel_node_is_leader(s->node))
        first_look(b);
    lb_pass(s); /* what is there now is served at once (after earlier waiters) */
    return 0;
}

static double gauge_blocked(void *data)
{
    return (double)((server_t *)data)->lq.n;
}

int keel__srv_lblock_init(server_t *s)
{
    if (s->metrics) {
        keel_metrics_gauge_fn(s->metrics, "keel_list_blocked_pops",
                              "Blocking pops waiting on this node, or in the log.", NULL,
                              gauge_blocked, s);
        s->m_lb_served = keel_metrics_counter(s->metrics, "keel_list_bpop_served_total",
                                              "Blocking pops answered with elements.", NULL);
        s->m_lb_lost_race = keel_metrics_counter(
            s->metrics, "keel_list_bpop_lost_race_total",
            "Served pops that found the elements taken first and waited again.", NULL);
        s->m_lb_fences =
            keel_metrics_counter(s->metrics, "keel_list_bpop_fences_total",
                                 "Fences proposed after a served pop's outcome was unknown.", NULL);
        s->m_lb_given_back = keel_metrics_counter(
            s->metrics, "keel_list_bpop_given_back_total",
            "Served pops whose client had left: their elements pushed back.", NULL);
        s->m_lb_unknown = keel_metrics_counter(
            s->metrics, "keel_list_bpop_unknown_total",
            "Served pops answered UNKNOWN (a snapshot hid their outcome).", NULL);
    }
    s->lb_nonce = keel_clock_now_ms();
    return keel__waitq_init(s, &s->lq, LBLOCK_TICK_MS, on_tick);
}

/* Shutdown: every waiting pop ends (its connection is closing); pops in the log end when
 * the node answers them. */
void keel__srv_lblock_close(server_t *s)
{
    s->lq.closing = 1;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->lq.list)
    {
        lblocked_t *b = KEEL_LIST_ENTRY(it, lblocked_t, link);
        if (b->writes == 0)
            lb_answer(b, NULL, 0);
    }
    keel__waitq_close(&s->lq);
    free(s->lb_claims);
    s->lb_claims = NULL;
    s->lb_claims_n = s->lb_claims_cap = 0;
}
