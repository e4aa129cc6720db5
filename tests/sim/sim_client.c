/* sim_client.c - the simulated clients: real commands through the request path, and the
   history that keel-lincheck judges. */
#include "sim_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- clients ------------------------------------------------------------------------ */

uint64_t sim__node_applied(const node_t *nd)
{
    return nd->sm.ops->applied_index(nd->sm.data);
}

static void complete(world_t *w, int ci, keel_lc_outcome_t outcome, int64_t result)
{
    client_t *c = &w->cl[ci];
    keel_lc_op_t *op = &w->hist[c->op];
    op->outcome = outcome;
    op->result = result;
    op->complete_ts = ++w->ts;
    c->busy = 0;
    c->next_ms = w->now_ms + (keel_ms_t)keel_rand_below(&w->rnd, 20);
    w->res->ops_ok += outcome == KEEL_LC_OK;
    if (outcome != KEEL_LC_OK) /* an error or no answer: the client tries another node */
        c->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    if (outcome == KEEL_LC_UNKNOWN) {
        /* The op may or may not have happened (Jepsen's :info): the process is retired and a
           fresh one continues. */
        w->res->ops_unknown++;
        c->process = w->next_process++;
    }
    if (outcome == KEEL_LC_OK && op->fn != KEEL_LC_READ && w->now_ms > w->fault_end_ms &&
        w->live_index == 0) {
        /* acknowledged after the heal: its entry is at or below every applied index seen */
        for (int i = 0; i < w->n; i++)
            if (w->nodes[i].r && sim__node_applied(&w->nodes[i]) > w->live_index)
                w->live_index = sim__node_applied(&w->nodes[i]);
    }
}

/* A reply (RESP from the KV state machine, maybe relayed by the leader) as lincheck's
   outcome. An error reply means the command changed nothing (refused, or not a member). */
static keel_lc_outcome_t parse_reply(world_t *w, cmd_kind_t cmd, const uint8_t *p, size_t len,
                                     int64_t *result)
{
    keel_resp_config_t cfg = keel_resp_config_default();
    keel_resp_value_t *v;
    size_t used;
    keel_errmsg_t em = {{0}};
    *result = 0;
    if (keel_resp_parse_reply(&cfg, p, len, &v, &used, &em) != 0 || used != len) {
        sim__fail(w, "a client cannot parse its reply (%zu bytes): %s", len, em.text);
        return KEEL_LC_UNKNOWN;
    }
    keel_lc_outcome_t out = KEEL_LC_OK;
    int ok;
    if (v->type == KEEL_RESP_ERROR) {
        out = KEEL_LC_FAIL;
        ok = 1;
    } else if (cmd == CMD_GET) {
        ok = v->type == KEEL_RESP_NIL ||
             (v->type == KEEL_RESP_BULK && keel_parse_i64(v->str.ptr, v->str.len, result) == 0);
    } else if (cmd == CMD_SETNX) {
        ok = v->type == KEEL_RESP_NIL || v->type == KEEL_RESP_SIMPLE;
        *result = v->type == KEEL_RESP_SIMPLE;
    } else {
        ok = v->type == (cmd == CMD_SET ? KEEL_RESP_SIMPLE : KEEL_RESP_INT);
    }
    if (!ok)
        sim__fail(w, "a client got an unexpected reply of type %d to command %d", (int)v->type,
                  (int)cmd);
    keel_resp_value_free(v);
    return out;
}

static void client_issue(world_t *w, int ci);

/* A request's answer from the node's request path (exactly once per accepted request). */
static void sreq_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    sreq_t *t = ctx;
    world_t *w = t->w;
    int ci = t->client;
    client_t *c = &w->cl[ci];
    size_t op = t->op;
    free(t);
    if (w->ending || !c->busy || c->op != op)
        return; /* the client gave up on it already */
    if (status == KEEL_ENOTMEMBER || status == KEEL_EREJECTED || status == KEEL_ENOTLEADER ||
        status == KEEL_ECONFLICT) {
        complete(w, ci, KEEL_LC_FAIL, 0); /* refused: nothing was proposed */
        return;
    }
    if (status != 0) {
        if (status != KEEL_ETIMEDOUT && status != KEEL_ECONNRESET && status != KEEL_ECANCELED)
            sim__fail(w, "a request was answered %s", keel_err_name(status));
        complete(w, ci, KEEL_LC_UNKNOWN, 0);
        return;
    }
    int64_t result;
    keel_lc_outcome_t o = parse_reply(w, c->cmd, reply, len, &result);
    complete(w, ci, o, result);
    /* Sometimes the next command goes at once, from inside the answer, as a pipelining
       connection's would: the request path must take it mid-pass (in_ready). */
    if (w->issue_depth == 0 && keel_rand_chance(&w->rnd, 0.25)) {
        w->issue_depth++;
        client_issue(w, ci);
        w->issue_depth--;
    }
}

/* --stale-reads: a read served from the node's local state, asking nobody. */
static void read_stale(world_t *w, int ci, node_t *nd, int argc, const uint8_t *const *argv,
                       const size_t *lens)
{
    keel_buf_t enc;
    keel_buf_init(&enc, 0);
    uint64_t now = keel_reqs_read_now_ms(&nd->reqs);
    keel_buf_reset(&nd->reply);
    int rc = nd->sm.ops->encode(nd->sm.data, now, argc, argv, lens, &enc);
    if (rc == 0)
        rc = nd->sm.ops->read(nd->sm.data, now, keel_buf_rptr(&enc), keel_buf_unread(&enc),
                              &nd->reply);
    keel_buf_free(&enc);
    if (rc != 0) {
        sim__fail(w, "a local read failed: %s", keel_err_name(rc));
        return;
    }
    int64_t result;
    keel_lc_outcome_t o =
        parse_reply(w, CMD_GET, keel_buf_rptr(&nd->reply), keel_buf_unread(&nd->reply), &result);
    complete(w, ci, o, result);
}

/*
 * A client sends GET / SET / SET NX / DEL on one of three keys to a node (any node:
 * followers forward writes and ask the leader for read indexes), through the node's
 * request path, as a client connection does (server/conn.c calls keel_node_write/read).
 */
static void client_issue(world_t *w, int ci)
{
    client_t *c = &w->cl[ci];
    GROW(w->hist, w->hist_n, w->hist_cap);
    keel_lc_op_t *op = &w->hist[w->hist_n];
    memset(op, 0, sizeof(*op));
    uint64_t pick = keel_rand_below(&w->rnd, 20);
    c->cmd = pick < 8 ? CMD_GET : pick < 15 ? CMD_SET : pick < 18 ? CMD_SETNX : CMD_DEL;
    static const keel_lc_fn_t fn[] = {KEEL_LC_READ, KEEL_LC_WRITE, KEEL_LC_CAS, KEEL_LC_WRITE};
    op->fn = fn[c->cmd];
    op->key = 1 + keel_rand_below(&w->rnd, KEYS);
    op->process = c->process;
    op->outcome = KEEL_LC_UNKNOWN;
    if (c->cmd == CMD_SET || c->cmd == CMD_SETNX)
        op->arg = ++w->next_value; /* DEL writes "absent" (0); SET NX expects it */
    op->invoke_ts = ++w->ts;
    c->op = w->hist_n++;
    c->busy = 1;
    c->delivered = 0;
    c->deadline_ms = w->now_ms + CLIENT_TIMEOUT_MS;
    w->res->ops++;
    if (keel_rand_chance(&w->rnd, 0.3))
        c->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    node_t *nd = &w->nodes[c->target];
    if (!sim__node_live(w, nd))
        return; /* never arrives; the client will time out */
    c->delivered = 1;
    static const char *name[] = {"GET", "SET", "SET", "DEL"};
    char key[8], val[24];
    const uint8_t *argv[4] = {(const uint8_t *)name[c->cmd], (const uint8_t *)key,
                              (const uint8_t *)val, (const uint8_t *)"NX"};
    size_t lens[4] = {3, sim__key_name(key, op->key),
                      (size_t)snprintf(val, sizeof(val), "%" PRId64, op->arg), 2};
    int argc = c->cmd == CMD_SET ? 3 : c->cmd == CMD_SETNX ? 4 : 2;
    if (c->cmd == CMD_GET && w->o.stale_reads) {
        read_stale(w, ci, nd, argc, argv, lens);
        return;
    }
    /* A quarter of the reads go through the log, as the server sends a read that follows a
       write of the same connection (server/conn.c): answered when its entry applies. */
    int log_read = c->cmd == CMD_GET && keel_rand_chance(&w->rnd, 0.25);
    sreq_t *t = sim__xrealloc(NULL, sizeof(*t));
    *t = (sreq_t){w, ci, c->op};
    int rc =
        keel_reqs_submit(&nd->reqs, c->cmd == CMD_GET && !log_read ? KEEL_REQ_READ : KEEL_REQ_WRITE,
                         argc, argv, lens, sreq_done, t);
    if (rc != 0) { /* refused at the door (full, stopping): definitely not executed */
        free(t);
        complete(w, ci, KEEL_LC_FAIL, 0);
    }
    /* op may be stale here: the answer can come (and the next op start) before this returns */
}

/* --streams: a stream command's answer; any answer is fine but a failure of the path. */
static void stream_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    world_t *w = ctx;
    if (w->ending)
        return;
    w->stream_inflight--;
    if (status == 0) {
        w->res->stream_ok += len > 0 && reply[0] != '-';
        return;
    }
    if (status != KEEL_ETIMEDOUT && status != KEEL_ECONNRESET && status != KEEL_ECANCELED &&
        status != KEEL_ENOTMEMBER && status != KEEL_EREJECTED && status != KEEL_ENOTLEADER &&
        status != KEEL_ECONFLICT)
        sim__fail(w, "a stream request was answered %s", keel_err_name(status));
}

/*
 * --streams: every 5..25 ms a stream command goes to a random node: appends with explicit
 * increasing ids (so later commands can name them), group reads by four consumers, acks,
 * NACKs with short delays (some reach the dead-letter limit of 3), claims of idle entries,
 * exact trims and retention settings; and, three times in ten, one of issue 19's strings and
 * keyspace writes (SETRANGE, INCRBYFLOAT, SETBIT, BITOP, COPY and RENAME of the stream, GETEX,
 * MSETNX, GETDEL, SETEX, RENAMENX, BITFIELD, a large SET's KEEL.STAGE entries), a hash or set write
 * (HSET .. SPOP, SMOVE, the STOREs, COPY and RENAME of them) or a list write (pushes, pops, LMOVE,
 * LINSERT, LREM, LSET, LTRIM, LMPOP, a served KEEL.BPOP and a fence, SORT ... STORE); two in ten, a
 * sorted-set write. Their answers are not checked (no model); the state they make is, through the
 * state hash every node must agree on at every index, snapshots and restarts included.
 */
void sim__streams_step(world_t *w)
{
    if (!w->o.streams || w->now_ms < w->stream_next_ms || w->stream_inflight >= 2)
        return;
    w->stream_next_ms = w->now_ms + 5 + (keel_ms_t)keel_rand_below(&w->rnd, 20);
    node_t *nd = &w->nodes[keel_rand_below(&w->rnd, (uint64_t)w->n)];
    if (!sim__node_live(w, nd))
        return;
    char id[32], who[8], num[24];
    uint64_t pick = keel_rand_below(&w->rnd, 10);
    uint64_t some = 1 + keel_rand_below(&w->rnd, w->stream_id + 1);
    snprintf(who, sizeof(who), "c%d", (int)keel_rand_below(&w->rnd, 4));
    snprintf(num, sizeof(num), "%d", (int)keel_rand_below(&w->rnd, 50));
    const char *cmd[12] = {NULL};
    static const char *const strings[][10] = {
        /* issue 19's strings and keyspace writes beside the streams, on keys x0..x2 and a
           copy of the stream: their state is in every node's hash too */
        {"SETRANGE", "x0", "3", "abc", NULL},
        {"INCRBYFLOAT", "x1", "1.25", NULL},
        {"SETBIT", "x2", "13", "1", NULL},
        {"BITOP", "XOR", "x2", "x2", "x0", NULL},
        {"COPY", "s", "s2", "REPLACE", NULL},
        {"RENAME", "s2", "s3", NULL},
        {"COPY", "x0", "x1", "REPLACE", NULL},
        {"GETEX", "x0", "PXAT", "99999999999999", NULL},
        {"MSETNX", "x0", "m", "x3", "n", NULL},
        {"GETDEL", "x1", NULL},
        {"SETEX", "x1", "100000", "v", NULL},
        {"RENAMENX", "x3", "x0", NULL},
        {"BITFIELD", "x2", "OVERFLOW", "SAT", "INCRBY", "i5", "#3", "7", NULL},
        /* a large SET's pieces and its SET (kv_staged.c; one piece here): sets left staged
           are in snapshots, a piece may come twice, a SET may find its pieces dropped */
        {"KEEL.STAGE", "41", "x0", "5", "0", "hello", NULL},
        {"KEEL.STAGE.SET", "x0", "41", "GET", NULL},
        {"KEEL.STAGE", "42", "h0", "3", "0", "abc", NULL},
        {"KEEL.STAGE.SET", "h0", "42", "KEEPTTL", NULL},
        {"KEEL.STAGE.DROP", "42", NULL},
        /* hashes and sets (h0..h2, t0..t3): SPOP's choice must be every node's */
        {"HSET", "h0", "a", "1", "b", "2", NULL},
        {"HINCRBY", "h0", "c", "3", NULL},
        {"HINCRBYFLOAT", "h0", "a", "0.5", NULL},
        {"HDEL", "h0", "a", "c", NULL},
        {"HSETNX", "h1", "z", "9", NULL},
        {"HMSET", "h1", "a-field-longer-than-sixty-four-bytes-makes-the-hash-a-hashtable-x", "v",
         NULL},
        {"SADD", "t0", "1", "2", "3", "x", "y", "z", NULL},
        {"SADD", "t1", "2", "3", "4", "5", "6", NULL},
        {"SREM", "t0", "1", "x", NULL},
        {"SPOP", "t0", NULL},
        {"SPOP", "t1", "2", NULL},
        {"SMOVE", "t1", "t0", "4", NULL},
        {"SINTERSTORE", "t2", "t0", "t1", NULL},
        {"SUNIONSTORE", "t2", "t0", "t1", "x0", NULL},
        {"SDIFFSTORE", "t3", "t0", "t1", NULL},
        {"COPY", "h0", "h2", "REPLACE", NULL},
        {"RENAME", "t2", "h2", NULL},
        {"PEXPIREAT", "t0", "99999999999999", NULL},
        /* lists (kv_list.c): pushes, pops, moves, edits inside, and the blocking pops'
           served form (what a node proposes for a blocked client) */
        {"RPUSH", "l0", "a", "b", "c", NULL},
        {"LPUSH", "l1", "x", "y", NULL},
        {"LPOP", "l0", NULL},
        {"RPOP", "l1", "2", NULL},
        {"LMOVE", "l0", "l1", "LEFT", "RIGHT", NULL},
        {"RPOPLPUSH", "l1", "l0", NULL},
        {"LINSERT", "l1", "BEFORE", "x", "ins", NULL},
        {"LREM", "l0", "-1", "b", NULL},
        {"LSET", "l1", "0", "set", NULL},
        {"LTRIM", "l0", "0", "8", NULL},
        {"LMPOP", "2", "l0", "l1", "RIGHT", "COUNT", "2", NULL},
        {"KEEL.BPOP", "sim.1", "BLPOP", "l1", "l0", "0", NULL},
        {"KEEL.BPOP", "sim.2", "BLMPOP", "0", "1", "l0", "LEFT", "COUNT", "3", NULL},
        {"KEEL.BPOP", "sim.3", NULL},
        /* SORT ... STORE (kv_sort.c): a list made from a list, a set or a hash's values */
        {"SORT", "l1", "ALPHA", "DESC", "STORE", "l2", NULL},
        {"SORT", "t1", "LIMIT", "1", "3", "STORE", "l0", NULL},
        {"SORT", "t0", "BY", "nosort", "GET", "h*->a", "STORE", "l2", NULL},
    };
    static const char *const zsets[][10] = {
        /* sorted sets (issue 19) on keys z0..z2: adds, increments, conditional updates,
           removals by member, score and rank, pops (the blocking ones served as KEEL.BPOP),
           stores from unions and ranges */
        {"ZADD", "z0", "1", "a", "2", "b", "-0", "c", NULL},
        {"ZINCRBY", "z0", "1.5", "c", NULL},
        {"ZADD", "z0", "GT", "CH", "5", "a", "0.5", "d", NULL},
        {"ZREM", "z0", "b", "d", NULL},
        {"ZPOPMIN", "z0", NULL},
        {"ZUNIONSTORE", "z1", "2", "z0", "z1", "WEIGHTS", "2", "1", NULL},
        {"ZRANGESTORE", "z2", "z1", "0", "3", NULL},
        {"ZREMRANGEBYSCORE", "z1", "-inf", "(3", NULL},
        {"ZMPOP", "2", "z2", "z0", "MAX", "COUNT", "2", NULL},
        {"ZADD", "z1", "0", "m1", "0", "m2", "0", "m3", NULL},
        {"ZREMRANGEBYLEX", "z1", "[m1", "(m3", NULL},
        {"ZINTERSTORE", "z2", "2", "z0", "z1", "AGGREGATE", "MAX", NULL},
        /* the blocking pops' served form (what a node proposes for a blocked client) */
        {"KEEL.BPOP", "sim.4", "BZPOPMIN", "z2", "z0", "0", NULL},
        {"KEEL.BPOP", "sim.5", "BZMPOP", "0", "1", "z1", "MAX", "COUNT", "2", NULL},
    };
    if (w->res->stream_cmds > 0 && keel_rand_chance(&w->rnd, 0.2)) {
        const char *const *c = zsets[keel_rand_below(&w->rnd, sizeof(zsets) / sizeof(zsets[0]))];
        for (int i = 0; c[i]; i++)
            cmd[i] = c[i];
    } else if (w->res->stream_cmds > 0 && keel_rand_chance(&w->rnd, 0.4)) {
        const char *const *c =
            strings[keel_rand_below(&w->rnd, sizeof(strings) / sizeof(strings[0]))];
        for (int i = 0; c[i]; i++)
            cmd[i] = c[i];
    } else if (w->res->stream_cmds == 0 || pick == 9) {
        const char *c[] = {"XGROUP", "CREATE", "s", "g", "0", "MKSTREAM", NULL};
        memcpy(cmd, c, sizeof(c));
    } else if (pick == 8 && keel_rand_chance(&w->rnd, 0.3)) {
        /* the setting is replicated state; the simulator proposes no housekeeping (no
           expiry sweeps either), so the leader's retention sweeps are tested elsewhere */
        const char *c[] = {"KEEL.XRETAIN", "s", "MAXAGE",
                           keel_rand_chance(&w->rnd, 0.5) ? "3000" : "8000", NULL};
        memcpy(cmd, c, sizeof(c));
    } else if (pick == 8) {
        const char *c[] = {"KEEL.XDEADLETTER", "s",    "g", "MAXDELIVERIES", "3",
                           "STREAM",           "dead", NULL};
        memcpy(cmd, c, sizeof(c));
    } else if (pick < 3) {
        snprintf(id, sizeof(id), "%" PRIu64 "-1", some = ++w->stream_id);
        const char *c[] = {"XADD", "s", id, "f", id, NULL};
        memcpy(cmd, c, sizeof(c));
    } else if (pick < 5) {
        const char *c[] = {"XREADGROUP", "GROUP",   "g", who, "COUNT",
                           "2",          "STREAMS", "s", ">", NULL};
        memcpy(cmd, c, sizeof(c));
    } else {
        snprintf(id, sizeof(id), "%" PRIu64 "-1", some);
        const char *acks[][12] = {
            {"XACK", "s", "g", id, NULL},
            {"KEEL.XNACK", "s", "g", id, "DELAY", num, "ERROR", "sim", NULL},
            {"XAUTOCLAIM", "s", "g", who, num, "0", "COUNT", "3", NULL},
        };
        if (pick == 7 && keel_rand_chance(&w->rnd, 0.5)) {
            /* exact trims keep the streams (and so the snapshots the simulator sends in
               chunks of 40..200 bytes) small */
            const char *c[] = {
                "XTRIM", keel_rand_chance(&w->rnd, 0.5) ? "s" : "dead", "MAXLEN", "=", "30", NULL};
            memcpy(cmd, c, sizeof(c));
        } else {
            memcpy(cmd, acks[pick - 5], sizeof(acks[0]));
        }
    }
    const uint8_t *argv[12];
    size_t lens[12];
    int argc = 0;
    for (; cmd[argc]; argc++) {
        argv[argc] = (const uint8_t *)cmd[argc];
        lens[argc] = strlen(cmd[argc]);
    }
    w->res->stream_cmds++;
    w->stream_inflight++;
    if (keel_reqs_submit(&nd->reqs, KEEL_REQ_WRITE, argc, argv, lens, stream_done, w) != 0)
        w->stream_inflight--; /* refused at the door: no answer will come */
}

/* ---- the pipelining connection (sim_int.h) --------------------------------------- */

static void pipe_check(world_t *w)
{
    pipe_client_t *p = &w->pipe;
    p->busy = 0;
    p->next_ms = w->now_ms + (keel_ms_t)keel_rand_below(&w->rnd, 100);
    w->res->pipes++;
    for (int k = 0; k < PIPE_OPS; k++)
        if (p->unsure[k]) {
            /* a write of this round may still land: the next round takes a fresh key */
            p->key++;
            break;
        }
    /* GET 1 sees SET 1 and not SET 2; GET 2 sees SET 2. */
    if (p->ok[1] && p->got[1] == p->v[2])
        sim__fail(w, "pipeline order: a GET saw the SET sent after it (value %" PRId64 ")",
                  p->got[1]);
    else if (p->ok[1] && p->ok[0] && p->got[1] != p->v[0])
        sim__fail(w, "pipeline order: a GET after SET %" PRId64 " (acknowledged) saw %" PRId64,
                  p->v[0], p->got[1]);
    else if (p->ok[3] && p->ok[2] && p->got[3] != p->v[2])
        sim__fail(w, "pipeline order: a GET after SET %" PRId64 " (acknowledged) saw %" PRId64,
                  p->v[2], p->got[3]);
}

static void preq_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    preq_t *t = ctx;
    world_t *w = t->w;
    uint64_t round = t->round;
    int slot = t->slot;
    free(t);
    pipe_client_t *p = &w->pipe;
    if (w->ending || !p->busy || round != p->round)
        return; /* a round given up on */
    if (status == 0) {
        int64_t v;
        keel_lc_outcome_t o = parse_reply(w, slot % 2 ? CMD_GET : CMD_SET, reply, len, &v);
        p->ok[slot] = o == KEEL_LC_OK;
        p->got[slot] = v;
    } else if (status == KEEL_ETIMEDOUT || status == KEEL_ECONNRESET || status == KEEL_ECANCELED) {
        p->unsure[slot] = 1;
    } else if (status != KEEL_ENOTMEMBER && status != KEEL_EREJECTED && status != KEEL_ENOTLEADER &&
               status != KEEL_ECONFLICT) {
        sim__fail(w, "a pipelined request was answered %s", keel_err_name(status));
    }
    sim__event(w, "pipe round %" PRIu64 " op %d: %s%s %" PRId64, round, slot,
               status ? keel_err_name(status) : "ok", p->ok[slot] ? "" : " (not applied)",
               p->got[slot]);
    if (--p->left == 0 && !p->issuing)
        pipe_check(w);
}

/* Sends the round's commands that are due: all at once, or each a while after the one
 * before it (a later command then meets the earlier one parked, forwarded, in a chain or
 * overwritten: found by review). A node down when its command is due never gets it. */
static void pipe_send_due(world_t *w)
{
    pipe_client_t *p = &w->pipe;
    node_t *nd = &w->nodes[p->target];
    char key[24];
    size_t key_len = (size_t)snprintf(key, sizeof(key), "pipe%" PRIu64, p->key);
    p->issuing = 1;
    while (p->sent < PIPE_OPS && w->now_ms >= p->op_at_ms) {
        int k = p->sent++;
        p->op_at_ms = w->now_ms + (p->spread ? (keel_ms_t)keel_rand_below(&w->rnd, 400) : 0);
        char val[24];
        const uint8_t *argv[3] = {(const uint8_t *)(k % 2 ? "GET" : "SET"), (const uint8_t *)key,
                                  (const uint8_t *)val};
        size_t lens[3] = {3, key_len, (size_t)snprintf(val, sizeof(val), "%" PRId64, p->v[k])};
        preq_t *t = sim__xrealloc(NULL, sizeof(*t));
        *t = (preq_t){w, p->round, k};
        /* every one a write: the GETs keep their place between the SETs */
        if (!sim__node_live(w, nd) || keel_reqs_submit(&nd->reqs, KEEL_REQ_WRITE, k % 2 ? 2 : 3,
                                                       argv, lens, preq_done, t) != 0) {
            free(t);
            p->left--;
        }
    }
    p->issuing = 0;
    if (p->left == 0 && p->busy)
        pipe_check(w);
}

static void pipe_issue(world_t *w)
{
    pipe_client_t *p = &w->pipe;
    p->next_ms = w->now_ms + 10;
    p->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    if (!sim__node_live(w, &w->nodes[p->target]))
        return;
    p->round++;
    p->busy = 1;
    p->left = PIPE_OPS;
    p->sent = 0;
    p->spread = keel_rand_chance(&w->rnd, 0.5);
    p->op_at_ms = w->now_ms;
    p->deadline_ms = w->now_ms + 4 * CLIENT_TIMEOUT_MS + PIPE_OPS * 400;
    for (int k = 0; k < PIPE_OPS; k++) {
        p->v[k] = k % 2 ? 0 : ++w->next_value;
        p->ok[k] = p->unsure[k] = 0;
        p->got[k] = 0;
    }
    sim__event(w, "pipe round %" PRIu64 " to n%d%s: SET %" PRId64 " GET SET %" PRId64 " GET",
               p->round, p->target + 1, p->spread ? " (spread)" : "", p->v[0], p->v[2]);
    pipe_send_due(w);
}

void sim__clients_step(world_t *w)
{
    pipe_client_t *p = &w->pipe;
    if (p->busy && w->now_ms >= p->deadline_ms)
        p->busy = 0; /* given up: late answers are ignored */
    if (p->busy && p->sent < PIPE_OPS)
        pipe_send_due(w);
    else if (!p->busy && w->now_ms >= p->next_ms && w->now_ms >= 300)
        pipe_issue(w);
    for (int ci = 0; ci < CLIENTS; ci++) {
        client_t *c = &w->cl[ci];
        if (c->busy && w->now_ms >= c->deadline_ms) {
            /* No answer: unknown, unless it never reached a node. */
            complete(w, ci, c->delivered ? KEEL_LC_UNKNOWN : KEEL_LC_FAIL, 0);
        }
        if (!c->busy && w->now_ms >= c->next_ms)
            client_issue(w, ci);
    }
}

/* One end of an operation in the history, for writing it in time order. */
typedef struct hev {
    int64_t ts;
    size_t op;
    int done;
} hev_t;

/*
 * Time order, and at equal times: an operation's invocation before its own completion,
 * other completions before invocations (a process's next invocation may share the time
 * of its previous completion), then operation order, so the sort is total and stable.
 */
static int hev_cmp(const void *a, const void *b)
{
    const hev_t *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    if (x->op == y->op)
        return (int)x->done - (int)y->done;
    if (x->done != y->done)
        return x->done ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

/* A value as the history format spells it: 0 is "absent", written null. */
static void put_value(FILE *f, int64_t v)
{
    if (v == 0)
        fprintf(f, "null");
    else
        fprintf(f, "%" PRId64, v);
}

/* Jepsen-style JSON lines, one sim__event per line in time order (docs/lincheck.md). */
int sim__write_history(world_t *w, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    hev_t *ev = sim__xrealloc(NULL, 2 * w->hist_n * sizeof(*ev));
    for (size_t k = 0; k < w->hist_n; k++) {
        ev[2 * k] = (hev_t){w->hist[k].invoke_ts, k, 0};
        ev[2 * k + 1] = (hev_t){w->hist[k].complete_ts, k, 1};
    }
    qsort(ev, 2 * w->hist_n, sizeof(*ev), hev_cmp);
    static const char *type[] = {"ok", "sim__fail", "info"};
    for (size_t k = 0; k < 2 * w->hist_n; k++) {
        const keel_lc_op_t *op = &w->hist[ev[k].op];
        fprintf(f, "{\"process\":%" PRIu64 ",\"type\":\"%s\",\"f\":\"%s\",\"key\":%" PRIu64,
                op->process, ev[k].done ? type[op->outcome] : "invoke", keel_lc_fn_name(op->fn),
                op->key);
        if (op->fn == KEEL_LC_WRITE) {
            fprintf(f, ",\"value\":");
            put_value(f, op->arg);
        } else if (op->fn == KEEL_LC_CAS) {
            fprintf(f, ",\"value\":[");
            put_value(f, op->expect);
            fprintf(f, ",");
            put_value(f, op->arg);
            fprintf(f, "]");
            if (ev[k].done && op->outcome == KEEL_LC_OK)
                fprintf(f, ",\"result\":%s", op->result ? "true" : "false");
        } else if (ev[k].done && op->outcome == KEEL_LC_OK) {
            fprintf(f, ",\"value\":");
            put_value(f, op->result);
        }
        fprintf(f, ",\"time\":%" PRId64 "}\n", ev[k].ts);
    }
    free(ev);
    return fclose(f);
}

void sim__check_history(world_t *w)
{
    /* ops still in flight at the end are unknown */
    for (int ci = 0; ci < CLIENTS; ci++)
        if (w->cl[ci].busy) {
            w->hist[w->cl[ci].op].outcome = KEEL_LC_UNKNOWN;
            w->hist[w->cl[ci].op].complete_ts = ++w->ts;
        }
    keel_lc_result_t lr;
    int rc = keel_lincheck(w->hist, w->hist_n, NULL, &lr);
    if (rc != 0 || lr.verdict < 0)
        sim__fail(w, "lincheck could not decide: %s (%s)", keel_err_name(rc ? rc : lr.verdict),
                  lr.explain);
    else if (lr.verdict == 0)
        sim__fail(w, "linearizability: key %" PRIu64 ": %s", lr.key, lr.explain);
}
