/* conn.c - a client connection: the rules before each command, data commands in order. */
#include "server/server_int.h"

#include "base/log.h"
#include "proto/resp.h"
#include "runtime/clock.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

server_t *keel__srv_of(keel_resp_client_t *c)
{
    return keel_resp_server_data(keel_resp_client_server(c));
}

client_state_t *keel__srv_state(keel_resp_client_t *c)
{
    client_state_t *st = keel_resp_client_data(c);
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        keel_resp_client_set_data(c, st);
    }
    return st;
}

static void drop_held(client_state_t *cs);

void keel__srv_client_closed(keel_resp_client_t *c)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs == NULL)
        return;
    cs->closed = 1;
    keel__srv_pause_closed(cs);
    keel__srv_feed_end(keel__srv_of(c), cs);
    keel__srv_tracking_closed(keel__srv_of(c), cs);
    keel_pubsub_drop(keel__srv_of(c)->pubsub, c);
    drop_held(cs);
    keel__srv_multi_reset(cs);
    keel__srv_watch_clear(cs);
    if (cs->inflight == 0)
        free(cs);
}

int keel__srv_arg_is(const keel_resp_arg_t *a, const char *s)
{
    size_t n = strlen(s);
    if (a->len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower(a->ptr[i]) != s[i])
            return 0;
    return 1;
}

int keel__srv_error(keel_resp_client_t *c, const char *err)
{
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_resp_write_error(out, err) : KEEL_ENOMEM;
}

int keel__srv_simple(keel_resp_client_t *c, const char *text)
{
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_resp_write_simple(out, text) : KEEL_ENOMEM;
}

int keel__srv_oom(keel_resp_client_t *c)
{
    return keel__srv_error(c, KEEL_SRV_ERR_OOM);
}

/* ---- data commands: through the node ------------------------------------------- */

int keel__srv_ensure_argv(server_t *s, size_t argc)
{
    if (argc <= s->argv_cap)
        return 0;
    const uint8_t **na = realloc(s->argv, argc * sizeof(*na));
    if (na == NULL)
        return KEEL_ENOMEM;
    s->argv = na;
    size_t *nl = realloc(s->lens, argc * sizeof(*nl));
    if (nl == NULL)
        return KEEL_ENOMEM;
    s->lens = nl;
    s->argv_cap = argc;
    return 0;
}

/* The error for a request the node could not answer with the command's own reply. */
const char *keel__srv_outcome_error(int status, int log_read)
{
    if (log_read && status == KEEL_ECONNRESET) /* a read: nothing to be unsure of */
        return "TRYAGAIN keel: the leader changed before it answered the read; retry";
    switch (status) {
    case KEEL_ETIMEDOUT:
        return "TIMEOUT keel: no answer within the request timeout; a write may or may not "
               "have been applied";
    case KEEL_ECONNRESET:
        return "UNKNOWN keel: the leader changed before it answered; the write may or may not "
               "have been applied";
    case KEEL_ENOTLEADER:
    case KEEL_ECONFLICT:
        return "TRYAGAIN keel: the leader changed before it ran the command, which was not "
               "applied; retry";
    case KEEL_ECANCELED:
        return "ERR keel: server shutting down";
    case KEEL_ETOOBIG: /* the command as a whole is larger than one Raft entry */
        return "ERR string exceeds maximum allowed size";
    case KEEL_EFULL:
        return "ERR keel: too many requests pending on this node";
    case KEEL_ENOTMEMBER:
        return "ERR keel: this node is not a member of the cluster (removed, or not yet added)";
    case KEEL_EREJECTED:
        return "ERR keel: the leader refused the proposal";
    default:
        return NULL; /* another refusal of the Raft core: named by write_outcome */
    }
}

static void release_held(client_state_t *cs);

/* Pending replies kept for reuse: one per submitted command otherwise costs a calloc. */
#define PR_POOL_MAX 4096u
/* A pooled reply keeps its SLOWLOG arguments' memory up to this much. */
#define SLOW_ARGS_KEEP_BYTES 512u

/* SLOWLOG: a command timed from its handler to its reply (slowlog.c says why). */
static void slowlog_done(pending_reply_t *pr)
{
    server_t *s = pr->srv;
    keel_us_t d = keel_clock_now_us() - pr->slow_start_us;
    if (!keel__srv_slowlog_slow(s, d))
        return;
    keel_resp_client_t *c = pr->cs->closed ? NULL : pr->client;
    if (keel_buf_unread(&pr->slow_args) > 0) {
        keel__srv_slowlog_push(s, c, keel_buf_rptr(&pr->slow_args), keel_buf_unread(&pr->slow_args),
                               d);
        return;
    }
    keel_buf_reset(&s->slowlog_scratch);
    if (!pr->pooled &&
        keel__srv_slowlog_args_of(&s->slowlog_scratch, pr->argc, pr->argv, pr->lens) == 0)
        keel__srv_slowlog_push(s, c, keel_buf_rptr(&s->slowlog_scratch),
                               keel_buf_unread(&s->slowlog_scratch), d);
}

void keel__srv_pending_free(pending_reply_t *pr)
{
    server_t *s = pr->srv;
    if (!pr->pooled || s->pr_pool_len >= PR_POOL_MAX) {
        keel_buf_free(&pr->slow_args);
        free(pr);
        return;
    }
    if (pr->slow_args.cap > SLOW_ARGS_KEEP_BYTES)
        keel_buf_free(&pr->slow_args);
    pr->next = s->pr_pool;
    s->pr_pool = pr;
    s->pr_pool_len++;
}

void keel__srv_pending_answer(pending_reply_t *pr, int status, const uint8_t *resp, size_t len)
{
    client_state_t *cs = pr->cs;
    assert(cs->inflight > 0 && pr->slot != NULL);
    keel_buf_t *out = keel_resp_deferred_out(pr->slot);
    int rc;
    if (status == 0 && pr->watch && !cs->closed) {
        /* The read ran at or after the leader's read index: versions seen now are at
         * least as new as any write acknowledged before the WATCH arrived. */
        if (len > 0 && resp[0] == '-')
            rc = keel_buf_append(out, resp, len);
        else if (keel__srv_watch_add(pr->srv, cs, pr->argv + 1, pr->lens + 1, pr->argc - 1) != 0)
            rc = keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
        else
            rc = keel_resp_write_simple(out, "OK");
    } else if (status == 0 && pr->conf) {
        rc = keel__srv_conf_reply(out, resp, len);
    } else if (status == 0 && pr->exec_queued != NULL) {
        rc = keel__srv_exec_finish(pr, out, resp, len);
    } else if (status == 0)
        rc = keel__srv_reply(pr->resp3, (keel_resp3_shape_t)pr->shape, out, resp, len);
    else if (keel__srv_outcome_error(status, pr->log_read) != NULL)
        rc = keel_resp_write_error(out, keel__srv_outcome_error(status, pr->log_read));
    else
        rc = keel_resp_write_errorf(out, "ERR keel: request refused: %s", keel_strerror(status));
    if (status == 0 && pr->is_write && pr->srv->node != NULL) /* WAIT's index (wait.c) */
        cs->last_write_index = keel_node_applied(pr->srv->node);
    if (pr->stats && (status != 0 || (len > 0 && resp[0] == '-')))
        keel_counter_inc(pr->stats->errors);
    if (pr->slow_start_us != 0)
        slowlog_done(pr);
    keel_resp_deferred_done(pr->slot, rc);
    keel__srv_queued_free(pr->exec_queued);
    keel__srv_pending_free(pr);
    cs->inflight--;
    if (cs->inflight > 0 || cs->releasing)
        return;
    if (cs->closed)
        free(cs);
    else
        release_held(cs);
}

static void on_node_done(void *ctx, int status, const uint8_t *resp, size_t len)
{
    keel__srv_pending_answer(ctx, status, resp, len);
}

/* KEEL.READS stale: this node's state now, with no ReadIndex round (the server owns it). */
static int read_stale(server_t *s, size_t argc, const uint8_t *const *argv, const size_t *lens,
                      keel_buf_t *out)
{
    return keel_kv_read_at(&s->kv.kv, keel_node_read_now_ms(s->node), (int)argc, argv, lens, out);
}

/* Submits a command to the node (or, for stale reads, answers it from local state). */
static void submit(pending_reply_t *pr)
{
    client_state_t *cs = pr->cs;
    keel_node_t *node = pr->srv->node;
    /* the connection's order: only commands of the kind in flight run together */
    assert(cs->inflight == 0 || cs->kind_write == pr->is_write);
    assert(!cs->closed);
    cs->inflight++;
    cs->kind_write = pr->is_write;
    if (pr->staged != NULL) {
        keel__srv_staged_start(pr->staged); /* owned there from now on */
        return;
    }
    int argc = (int)pr->argc, rc;
    keel_node_conf_change_t chg;
    if (node == NULL)
        rc = KEEL_ECANCELED;
    else if (pr->conf)
        rc = keel__srv_conf_parse(pr->argc, pr->argv, pr->lens, &chg) == 0
                 ? keel_node_change(node, &chg, on_node_done, pr)
                 : KEEL_EINVAL; /* parsed when it arrived: never */
    else if (pr->is_write)
        rc = keel_node_write(node, argc, pr->argv, pr->lens, on_node_done, pr);
    else if (!cs->stale_reads)
        rc = keel_node_read(node, argc, pr->argv, pr->lens, on_node_done, pr);
    else { /* KEEL.READS stale, held behind a write: answered at its turn, from here */
        server_t *s = pr->srv;
        keel_buf_reset(&s->stale);
        rc = read_stale(s, pr->argc, pr->argv, pr->lens, &s->stale);
        on_node_done(pr, rc, keel_buf_rptr(&s->stale), keel_buf_unread(&s->stale));
        return;
    }
    if (rc != 0)
        on_node_done(pr, rc, NULL, 0);
}

/* Nothing in flight: start the next run of same-kind commands from the held queue. */
static void release_held(client_state_t *cs)
{
    assert(!cs->releasing && (cs->held_head == NULL) == (cs->held_tail == NULL));
    cs->releasing = 1;
    while (cs->inflight == 0 && cs->held_head != NULL && !cs->staging) {
        int kind = cs->held_head->is_write;
        while (cs->held_head != NULL && cs->held_head->is_write == kind && !cs->staging) {
            pending_reply_t *pr = cs->held_head;
            cs->held_head = pr->next;
            if (cs->held_head == NULL)
                cs->held_tail = NULL;
            submit(pr);
        }
    }
    cs->releasing = 0;
    if (cs->inflight == 0 && cs->closed)
        free(cs);
}

static void drop_held(client_state_t *cs)
{
    while (cs->held_head) {
        pending_reply_t *pr = cs->held_head;
        cs->held_head = pr->next;
        keel_resp_deferred_done(pr->slot, 0); /* an orphan: nothing is written */
        keel__srv_queued_free(pr->exec_queued);
        if (pr->staged != NULL)
            keel__srv_staged_drop(pr->staged);
        keel__srv_pending_free(pr);
    }
    cs->held_tail = NULL;
}

/* A copy of argv that outlives the handler, after the pending_reply in one block. */
pending_reply_t *keel__srv_pending_new(server_t *s, size_t argc, int copy)
{
    size_t bytes = sizeof(pending_reply_t);
    if (!copy && s->pr_pool != NULL) {
        pending_reply_t *pr = s->pr_pool;
        s->pr_pool = pr->next;
        s->pr_pool_len--;
        keel_buf_t kept = pr->slow_args;
        keel_buf_reset(&kept);
        *pr = (pending_reply_t){.srv = s,
                                .pooled = 1,
                                .argc = argc,
                                .argv = s->argv,
                                .lens = s->lens,
                                .slow_args = kept};
        return pr;
    }
    if (copy) {
        bytes += argc * (sizeof(uint8_t *) + sizeof(size_t));
        for (size_t i = 0; i < argc; i++)
            bytes += s->lens[i];
    }
    pending_reply_t *pr = calloc(1, bytes);
    if (pr == NULL)
        return NULL;
    pr->srv = s;
    pr->argc = argc;
    keel_buf_init(&pr->slow_args, 0);
    if (!copy) {
        pr->pooled = 1;
        pr->argv = s->argv;
        pr->lens = s->lens;
        return pr;
    }
    pr->argv = (const uint8_t **)(pr + 1);
    pr->lens = (size_t *)(pr->argv + argc);
    uint8_t *data = (uint8_t *)(pr->lens + argc);
    for (size_t i = 0; i < argc; i++) {
        memcpy(data, s->argv[i], s->lens[i]);
        pr->argv[i] = data;
        pr->lens[i] = s->lens[i];
        data += s->lens[i];
    }
    return pr;
}

/* ---- the rules before every command ---------------------------------------------- */

/* A command refused by a rule: its error, and inside MULTI, EXEC fails (Redis's
 * rejectCommand + flagTransaction). EXEC refused discards the transaction and says why
 * (Redis's execCommandAbort). `err` starts with "ERR ". */
static int refuse(keel_resp_client_t *c, const keel_resp_command_t *row, const char *err)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->in_multi)
        cs->multi_dirty = 1;
    cmd_stats_t *st = row->data;
    if (st)
        keel_counter_inc(st->errors);
    int rc;
    if (row->handler == keel__srv_cmd_exec) {
        if (cs != NULL) {
            keel__srv_multi_reset(cs);
            keel__srv_watch_clear(cs);
        }
        rc = keel_resp_client_errorf(c, "EXECABORT Transaction discarded because of: %s", err + 4);
    } else {
        rc = keel_resp_client_errorf(c, "%s", err);
    }
    return rc == 0 ? 1 : rc;
}

/*
 * Redis's processCommand, in its order, for every command that passed lookup and
 * arity (one rule each, decided by the row's flags, never by the command's name):
 *   0. while CLIENT PAUSE holds the command, it waits (pause.c), not consumed;
 *   1. a connection streaming KEEL.WATCH takes only PING and QUIT;
 *   2. RESP2 subscribed mode takes only the rows flagged SUBSCRIBED (the
 *      (P)(UN)SUBSCRIBEs, PING, QUIT);
 *   3. inside MULTI, a row flagged NOMULTI is refused (EXEC will fail), a row flagged
 *      NOQUEUE runs at once (MULTI, EXEC, DISCARD, WATCH, QUIT), a data command is
 *      checked and queued by its handler, and any other command is queued as it is and
 *      runs inside EXEC.
 * 0: run the handler; 1: answered here; KEEL_RESP_HOLD: paused; < 0: the client is closed.
 */
int keel__srv_before_command(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    if (keel__srv_pause_holds(c, cmd)) /* before anything: it runs again from here */
        return KEEL_RESP_HOLD;
    client_state_t *cs = keel_resp_client_data(c);
    cmd_stats_t *st = cmd->data;
    if (st)
        keel_counter_inc(st->calls);
    if (cs != NULL && cs->tracker != NULL)
        keel__srv_tracking_before(cs, cmd);
    char err[256];
    if (cs != NULL && (cs->feed != NULL || cs->feed_ended) && strcmp(cmd->name, "ping") != 0 &&
        strcmp(cmd->name, "quit") != 0) {
        snprintf(err, sizeof(err),
                 "ERR Can't execute '%s': only PING / QUIT are allowed while watching "
                 "(KEEL.WATCH, KEEL.REG FEED)",
                 cmd->name);
        return refuse(c, cmd, err);
    }
    /* RESP3 has push messages: a subscribed connection runs any command (as Redis 7) */
    if (!(cmd->flags & KEEL_RESP_CMD_SUBSCRIBED) && (cs == NULL || !cs->resp3) &&
        keel_pubsub_count(s->pubsub, c) > 0) {
        snprintf(err, sizeof(err),
                 "ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
                 "RESET are allowed in this context",
                 cmd->name);
        return refuse(c, cmd, err);
    }
    if (cs == NULL || !cs->in_multi || (cmd->flags & KEEL_RESP_CMD_NOQUEUE))
        return 0;
    if (cmd->flags & KEEL_RESP_CMD_NOMULTI)
        return refuse(c, cmd, "ERR Command not allowed inside a transaction");
    if (keel__srv_is_data_row(cmd))
        return 0; /* checked, then queued, by the handler */
    if (keel__srv_ensure_argv(s, argc) != 0)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    int rc = keel__srv_multi_queue(c, s, cs, cmd, argc);
    return rc == 0 ? 1 : rc;
}

/* Unknown, or the wrong number of arguments: counted, and inside MULTI EXEC fails. */
void keel__srv_command_refused(keel_resp_client_t *c, const keel_resp_command_t *cmd)
{
    cmd_stats_t *st = cmd ? cmd->data : NULL;
    if (st) {
        keel_counter_inc(st->calls);
        keel_counter_inc(st->errors);
    }
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->in_multi)
        cs->multi_dirty = 1; /* as Redis: EXEC answers -EXECABORT */
}

/* PING [message]; in RESP2 subscribed mode Redis answers *2 "pong" message-or-"". */
int keel__srv_cmd_ping(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    if (argc > 2)
        return keel_resp_write_error(out, "ERR wrong number of arguments for 'ping' command");
    if (keel_pubsub_count(keel__srv_of(c)->pubsub, c) > 0 && !keel__srv_resp3(c)) {
        int rc = keel_resp_write_array_header(out, 2);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, "pong");
        return rc == 0 ? keel_resp_write_bulk(out, argc == 2 ? argv[1].ptr : (const uint8_t *)"",
                                              argc == 2 ? argv[1].len : 0)
                       : rc;
    }
    return argc == 2 ? keel_resp_write_bulk(out, argv[1].ptr, argv[1].len)
                     : keel_resp_write_simple(out, "PONG");
}

/* ---- data commands ------------------------------------------------------------------ */

int keel__srv_cmd_data(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    const keel_resp_command_t *row = keel_resp_client_command(c);
    assert(row != NULL && keel__srv_is_data_row(row));
    cmd_stats_t *st = row->data;
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    /*
     * The check's error goes to a scratch buffer first: asking for the client's output
     * behind an open deferred reply (every pipelined command after the first) queues a
     * slot of its own, which a command that passes would leave empty.
     */
    keel_buf_reset(&s->buf);
    client_state_t *now = keel_resp_client_data(c);
    bool queued = now != NULL && now->in_multi; /* Redis checks less when queueing */
    if ((queued ? keel_kv_check_queued((int)argc, s->argv, s->lens, &s->buf)
                : keel_kv_check((int)argc, s->argv, s->lens, &s->buf)) != 0) {
        if (st)
            keel_counter_inc(st->errors);
        client_state_t *bad = keel_resp_client_data(c);
        if (bad != NULL && bad->in_multi)
            bad->multi_dirty = 1; /* EXEC will answer -EXECABORT */
        keel_buf_t *out = keel_resp_client_out(c);
        return out ? keel_buf_append(out, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf))
                   : KEEL_ENOMEM;
    }
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    if (cs->tracker && !(row->flags & KEEL_RESP_CMD_WRITE)) /* before the read: tracking.c */
        keel__srv_tracking_read(s, cs, row, argc, s->argv, s->lens);
    if (cs->in_multi)
        return keel__srv_multi_queue(c, s, cs, row, argc);
    /* Only a read of one key may go through the log behind a write (its reply is bounded by
       one value); a read of many keys (MGET, SCAN) waits for the write instead, so that a
       follower never asks the leader for a reply larger than a peer frame. */
    if (keel__srv_staged_wanted(s, row, argc, s->lens))
        return keel__srv_staged_submit(c, s, cs, argc, st);
    int one_key = row->first_key > 0 && row->first_key == row->last_key;
    return keel__srv_submit(c, s, cs, argc,
                            (row->flags & KEEL_RESP_CMD_WRITE) ? RUN_WRITE
                            : one_key                          ? RUN_READ
                                                               : RUN_READ_HELD,
                            st);
}

/*
 * Sends the command in s->argv/s->lens to the node, keeping the connection's order
 * (see client_state): now if it can run alongside what is in flight, else held.
 */
/* The connection's last command (held, else in flight) is a write. */
static int writes_ahead(const client_state_t *cs)
{
    return cs->held_tail ? cs->held_tail->is_write : cs->inflight > 0 && cs->kind_write;
}

static int submit_queued(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                         int run, cmd_stats_t *st, pending_reply_t *queued, staged_set_t *ss)
{
    /*
     * A linearizable read behind a write of the same connection is sent as a write whose
     * entry only reads, so that it keeps its place among the connection's writes: the
     * leader answers it just before the connection's next write applies, with no entry of
     * its own, or through the log if no write follows it in the same pass (requests.c,
     * "ordered reads"). A pipeline of writes and reads thus runs as one run of writes
     * instead of waiting for each read before the next write may go (one WAL sync and one
     * round trip per SET/GET pair). A read with no write ahead of it takes the ReadIndex
     * path.
     */
    if (run == RUN_READ && !cs->stale_reads && writes_ahead(cs))
        run = RUN_LOG_READ;
    if (run == RUN_READ_HELD)
        run = RUN_READ;
    int is_write = run == RUN_WRITE || run == RUN_CONF || run == RUN_LOG_READ;
    int watch = run == RUN_WATCH;
    int idle = cs->inflight == 0 && cs->held_head == NULL;
    if (run == RUN_READ && cs->stale_reads && idle && s->node) {
        keel_buf_t *out = keel_resp_client_out(c);
        if (out == NULL)
            return KEEL_ENOMEM;
        if (!cs->resp3)
            return read_stale(s, argc, s->argv, s->lens, out);
        keel_buf_reset(&s->stale);
        int rc = read_stale(s, argc, s->argv, s->lens, &s->stale);
        return rc != 0 ? rc
                       : keel__srv_reply(1, keel__srv_resp3_shape(argc, s->argv, s->lens), out,
                                         keel_buf_rptr(&s->stale), keel_buf_unread(&s->stale));
    }
    int go_now =
        cs->held_head == NULL && !cs->staging && (cs->inflight == 0 || cs->kind_write == is_write);
    /* WATCH needs its keys when the read completes: always a copy (a staged SET's point
       into its own buffer) */
    pending_reply_t *pr = keel__srv_pending_new(s, argc, (!go_now || watch) && ss == NULL);
    keel_resp_deferred_t *slot = NULL;
    if (pr != NULL)
        slot = watch ? keel_resp_client_defer_barrier(c) : keel_resp_client_defer(c);
    if (slot == NULL) {
        if (pr != NULL)
            keel__srv_pending_free(pr);
        keel__srv_queued_free(queued);
        if (ss != NULL)
            keel__srv_staged_abandon(c, ss);
        return keel__srv_oom(c);
    }
    pr->slot = slot;
    if (ss != NULL)
        keel__srv_staged_adopt(ss, pr);
    pr->stats = st;
    pr->cs = cs;
    pr->is_write = is_write;
    pr->watch = watch;
    pr->conf = run == RUN_CONF;
    pr->log_read = run == RUN_LOG_READ;
    pr->exec_queued = queued;
    pr->client = c;
    if (s->cmd_timing && queued == NULL && s->slowlog_slower_than_us >= 0) {
        /* SLOWLOG times it to its reply; without a copy, its arguments are kept now */
        s->cmd_deferred = 1;
        pr->slow_start_us = s->cmd_start_us != 0 ? s->cmd_start_us : 1;
        if (pr->pooled && keel__srv_slowlog_args_of(&pr->slow_args, argc, s->argv, s->lens) != 0) {
            keel_buf_reset(&pr->slow_args);
            pr->slow_start_us = 0;
        }
    } else if (s->cmd_timing) {
        s->cmd_deferred = 1; /* EXEC: not logged */
    }
    pr->resp3 = (uint8_t)cs->resp3;
    pr->shape =
        (uint8_t)(cs->resp3 && queued == NULL ? keel__srv_resp3_shape(argc, s->argv, s->lens)
                                              : KEEL_RESP3_PLAIN);
    if (go_now) {
        submit(pr);
    } else if (cs->held_tail) {
        cs->held_tail->next = pr;
        cs->held_tail = pr;
    } else {
        cs->held_head = cs->held_tail = pr;
    }
    return 0;
}

int keel__srv_submit(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc, int run,
                     cmd_stats_t *st)
{
    return submit_queued(c, s, cs, argc, run, st, NULL, NULL);
}

int keel__srv_submit_staged(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                            cmd_stats_t *st, staged_set_t *ss)
{
    return submit_queued(c, s, cs, argc, RUN_WRITE, st, NULL, ss);
}

/* EXEC: the KEEL.TXN entry in s->argv, with the queued commands when some are not data
 * (owned from here on; run by keel__srv_exec_finish when the entry commits). */
int keel__srv_submit_exec(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                          pending_reply_t *queued)
{
    return submit_queued(c, s, cs, argc, RUN_WRITE, NULL, queued, NULL);
}
