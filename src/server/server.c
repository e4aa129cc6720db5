/* server.c - keel server process: RESP front end, admin HTTP, and the node they share. */
#include "server/server.h"

#include "server/pubsub.h"

#include "base/hash.h"
#include "base/log.h"
#include "base/map.h"
#include "base/metrics.h"
#include "base/num.h"
#include "runtime/clock.h"
#include "runtime/http_server.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SERVER_VERSION "0.1.0"
#define CLIENT_NAME_BYTES_MAX 128
#define CMD_STATS_MAX 64

typedef struct cmd_stats {
    keel_counter_t *calls, *errors;
} cmd_stats_t;

typedef struct watcher watcher_t;

typedef struct server {
    keel_server_config_t cfg;
    keel_loop_t loop;
    keel_metrics_t *metrics;
    keel_node_t *node;
    keel_resp_server_t resp;
    keel_http_server_t http;
    int resp_inited, http_inited;
    keel_pubsub_t *pubsub;
    watcher_t *watchers; /* connections in KEEL.WATCH mode */
    keel_counter_t *m_watch_lagged;
    keel_map_t cmd_stats; /* lower-case command name -> cmd_stats_t */
    cmd_stats_t stats_store[CMD_STATS_MAX];
    size_t stats_n;
    keel_ms_t started_ms;
    /* scratch for handlers */
    const uint8_t **argv;
    size_t *lens;
    size_t argv_cap;
    keel_buf_t buf;
    struct pending_reply *pr_pool; /* pending replies without a copy, kept for reuse */
    size_t pr_pool_len;
} server_t;

typedef struct pending_reply pending_reply_t;

/*
 * Per-connection state. Redis runs a connection's commands in order, and clients rely
 * on it inside a pipeline (SET then GET must see the SET). Writes go through the Raft
 * log and reads through ReadIndex, so two commands of different kinds could otherwise
 * finish out of order. Commands of the same kind run together (consecutive writes are
 * ordered by the log, consecutive reads change nothing); a command of the other kind
 * waits, held here, until the running ones are done.
 */
typedef struct client_state {
    int stale_reads;
    char name[CLIENT_NAME_BYTES_MAX];
    int closed;      /* the connection is gone; freed when nothing is in flight */
    int kind_write;  /* kind of the commands in flight */
    size_t inflight; /* commands submitted to the node, not yet answered */
    int releasing;
    pending_reply_t *held_head, *held_tail;
    int in_multi, multi_dirty; /* MULTI ... EXEC */
    pending_reply_t *queued_head, *queued_tail;
    size_t nqueued;
    struct watched **watch; /* WATCHed keys with the versions seen */
    size_t nwatch;
    watcher_t *stream; /* KEEL.WATCH: the connection is in push mode */
    int stream_ended;  /* it was, and is closing (lagged): still no other commands */
} client_state_t;

static server_t *srv_of(keel_resp_client_t *c)
{
    return keel_resp_server_data(keel_resp_client_server(c));
}

static client_state_t *state_of(keel_resp_client_t *c)
{
    client_state_t *st = keel_resp_client_data(c);
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        keel_resp_client_set_data(c, st);
    }
    return st;
}

static void drop_held(client_state_t *cs);
static void multi_reset(client_state_t *cs);
static void watch_clear(client_state_t *cs);
static int watch_add(server_t *s, client_state_t *cs, const uint8_t *const *keys,
                     const size_t *lens, size_t n);
static int queue_in_multi(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc);

/* What a submitted command is: its kind decides the connection's ordering runs. */
enum { RUN_READ = 0, RUN_WRITE = 1, RUN_WATCH = 2 /* a read that records WATCH versions */ };
static int submit_command(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                          int run, cmd_stats_t *st);
static void stream_end(server_t *s, client_state_t *cs);

static void on_client_closed(keel_resp_client_t *c)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs == NULL)
        return;
    cs->closed = 1;
    stream_end(srv_of(c), cs);
    keel_pubsub_drop(srv_of(c)->pubsub, c);
    drop_held(cs);
    multi_reset(cs);
    watch_clear(cs);
    if (cs->inflight == 0)
        free(cs);
}

static int arg_is(const keel_resp_arg_t *a, const char *s)
{
    size_t n = strlen(s);
    if (a->len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (tolower(a->ptr[i]) != s[i])
            return 0;
    return 1;
}

static int reply(keel_resp_client_t *c, const char *resp)
{
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_buf_append_str(out, resp) : KEEL_ENOMEM;
}

static int reply_bulk(keel_buf_t *out, const void *p, size_t n)
{
    int rc = keel_buf_printf(out, "$%zu\r\n", n);
    if (rc == 0)
        rc = keel_buf_append(out, p, n);
    return rc == 0 ? keel_buf_append(out, "\r\n", 2) : rc;
}

/* ---- data commands: through the node ------------------------------------------- */

static cmd_stats_t *stats_for(server_t *s, const keel_resp_arg_t *name)
{
    char low[32];
    if (name->len >= sizeof(low))
        return NULL;
    for (size_t i = 0; i < name->len; i++)
        low[i] = (char)tolower(name->ptr[i]);
    void **v = keel_map_get(&s->cmd_stats, low, name->len);
    return v ? *v : NULL;
}

static int ensure_argv(server_t *s, size_t argc)
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

struct pending_reply {
    pending_reply_t *next; /* in the client's held queue */
    server_t *srv;
    client_state_t *cs;
    keel_resp_deferred_t *slot;
    cmd_stats_t *stats;
    int is_write;
    int watch;  /* WATCH: on success record the keys' versions, reply +OK */
    int pooled; /* no argv copy: goes back to srv->pr_pool */
    size_t argc;
    const uint8_t **argv; /* the server's scratch, or (held) a copy after this struct */
    size_t *lens;
};

static const char *outcome_error(int status)
{
    switch (status) {
    case KEEL_ETIMEDOUT:
        return "-TIMEOUT keel: no answer within the request timeout; a write may or may not "
               "have been applied\r\n";
    case KEEL_ECONNRESET:
        return "-UNKNOWN keel: the leader changed before it answered; the write may or may not "
               "have been applied\r\n";
    case KEEL_ENOTLEADER:
        return "-TRYAGAIN keel: no leader is known; retry\r\n";
    case KEEL_ECANCELED:
        return "-ERR keel: server shutting down\r\n";
    case KEEL_EFULL:
        return "-ERR keel: too many requests pending on this node\r\n";
    default:
        return "-ERR keel: internal error\r\n";
    }
}

static void release_held(client_state_t *cs);

/* Pending replies kept for reuse: one per submitted command otherwise costs a calloc. */
#define PR_POOL_MAX 4096u

static void pending_free(pending_reply_t *pr)
{
    server_t *s = pr->srv;
    if (!pr->pooled || s->pr_pool_len >= PR_POOL_MAX) {
        free(pr);
        return;
    }
    pr->next = s->pr_pool;
    s->pr_pool = pr;
    s->pr_pool_len++;
}

static void on_node_done(void *ctx, int status, const uint8_t *resp, size_t len)
{
    pending_reply_t *pr = ctx;
    client_state_t *cs = pr->cs;
    keel_buf_t *out = keel_resp_deferred_out(pr->slot);
    int rc;
    if (status == 0 && pr->watch && !cs->closed) {
        /* The read ran at or after the leader's read index: versions seen now are at
         * least as new as any write acknowledged before the WATCH arrived. */
        if (len > 0 && resp[0] == '-')
            rc = keel_buf_append(out, resp, len);
        else if (watch_add(pr->srv, cs, pr->argv + 1, pr->lens + 1, pr->argc - 1) != 0)
            rc = keel_buf_append_str(out, "-ERR out of memory\r\n");
        else
            rc = keel_buf_append_str(out, "+OK\r\n");
    } else if (status == 0)
        rc = keel_buf_append(out, resp, len);
    else
        rc = keel_buf_append_str(out, outcome_error(status));
    if (pr->stats && (status != 0 || (len > 0 && resp[0] == '-')))
        keel_counter_inc(pr->stats->errors);
    keel_resp_deferred_done(pr->slot, rc);
    pending_free(pr);
    cs->inflight--;
    if (cs->inflight > 0 || cs->releasing)
        return;
    if (cs->closed)
        free(cs);
    else
        release_held(cs);
}

/* Submits a command to the node (or, for stale reads, answers it from local state). */
static void submit(pending_reply_t *pr)
{
    client_state_t *cs = pr->cs;
    keel_node_t *node = pr->srv->node;
    cs->inflight++;
    cs->kind_write = pr->is_write;
    int argc = (int)pr->argc, rc;
    if (node == NULL)
        rc = KEEL_ECANCELED;
    else if (pr->is_write)
        rc = keel_node_write(node, argc, pr->argv, pr->lens, on_node_done, pr);
    else
        rc = keel_node_read(node, argc, pr->argv, pr->lens, cs->stale_reads, on_node_done, pr);
    if (rc != 0)
        on_node_done(pr, rc, NULL, 0);
}

/* Nothing in flight: start the next run of same-kind commands from the held queue. */
static void release_held(client_state_t *cs)
{
    cs->releasing = 1;
    while (cs->inflight == 0 && cs->held_head != NULL) {
        int kind = cs->held_head->is_write;
        while (cs->held_head != NULL && cs->held_head->is_write == kind) {
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
        pending_free(pr);
    }
    cs->held_tail = NULL;
}

/* A copy of argv that outlives the handler, after the pending_reply in one block. */
static pending_reply_t *new_pending(server_t *s, size_t argc, int copy)
{
    size_t bytes = sizeof(pending_reply_t);
    if (!copy && s->pr_pool != NULL) {
        pending_reply_t *pr = s->pr_pool;
        s->pr_pool = pr->next;
        s->pr_pool_len--;
        *pr = (pending_reply_t){
            .srv = s, .pooled = 1, .argc = argc, .argv = s->argv, .lens = s->lens};
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

/* ---- transactions: MULTI / EXEC / DISCARD / WATCH / UNWATCH ------------------------ */

/*
 * Redis semantics on one Raft entry. Commands after MULTI are checked as they arrive
 * (arity, syntax: a bad one is answered with its error and makes EXEC answer
 * -EXECABORT) and queued with "+QUEUED". WATCH records each key's version as this node
 * sees it. EXEC proposes a single KEEL.TXN entry carrying the watched versions and the
 * queued commands: the state machine checks the versions and runs the commands in the
 * same apply, so the transaction is all or nothing and EXEC answers *-1 when a watched
 * key changed. A version read on a lagging follower can only be older than the truth,
 * which can make EXEC abort when nothing changed after WATCH, never commit when
 * something did. Connection commands (PING, INFO, ...) are not queued: they run at once.
 */
#define MULTI_COMMANDS_MAX 10000
#define WATCH_KEYS_MAX 1024

typedef struct watched {
    uint64_t version;
    size_t len;
    uint8_t key[];
} watched_t;

static void multi_reset(client_state_t *cs)
{
    while (cs->queued_head) {
        pending_reply_t *q = cs->queued_head;
        cs->queued_head = q->next;
        free(q);
    }
    cs->queued_tail = NULL;
    cs->nqueued = 0;
    cs->in_multi = cs->multi_dirty = 0;
}

static int watch_add(server_t *s, client_state_t *cs, const uint8_t *const *keys,
                     const size_t *lens, size_t n)
{
    watched_t **nw = realloc(cs->watch, (cs->nwatch + n) * sizeof(*nw));
    if (nw == NULL)
        return KEEL_ENOMEM;
    cs->watch = nw;
    for (size_t i = 0; i < n; i++) {
        watched_t *w = malloc(sizeof(*w) + lens[i]);
        if (w == NULL)
            return KEEL_ENOMEM;
        w->version = keel_node_key_version(s->node, keys[i], lens[i]);
        w->len = lens[i];
        memcpy(w->key, keys[i], lens[i]);
        cs->watch[cs->nwatch++] = w;
    }
    return 0;
}

static void watch_clear(client_state_t *cs)
{
    for (size_t i = 0; i < cs->nwatch; i++)
        free(cs->watch[i]);
    free(cs->watch);
    cs->watch = NULL;
    cs->nwatch = 0;
}

static int queue_in_multi(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc)
{
    if (cs->nqueued >= MULTI_COMMANDS_MAX) {
        cs->multi_dirty = 1;
        return reply(c, "-ERR keel: too many commands in one transaction\r\n");
    }
    pending_reply_t *q = new_pending(s, argc, 1);
    if (q == NULL) {
        cs->multi_dirty = 1;
        return reply(c, "-ERR out of memory\r\n");
    }
    if (cs->queued_tail)
        cs->queued_tail->next = q;
    else
        cs->queued_head = q;
    cs->queued_tail = q;
    cs->nqueued++;
    return reply(c, "+QUEUED\r\n");
}

static int cmd_multi(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = state_of(c);
    if (cs == NULL)
        return reply(c, "-ERR out of memory\r\n");
    if (cs->in_multi)
        return reply(c, "-ERR MULTI calls can not be nested\r\n");
    cs->in_multi = 1;
    return reply(c, "+OK\r\n");
}

static int cmd_discard(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = state_of(c);
    if (cs == NULL || !cs->in_multi)
        return reply(c, "-ERR DISCARD without MULTI\r\n");
    multi_reset(cs);
    watch_clear(cs);
    return reply(c, "+OK\r\n");
}

static int cmd_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    client_state_t *cs = state_of(c);
    if (cs == NULL)
        return reply(c, "-ERR out of memory\r\n");
    if (cs->in_multi)
        return reply(c, "-ERR WATCH inside MULTI is not allowed\r\n");
    if (cs->nwatch + argc - 1 > WATCH_KEYS_MAX)
        return reply(c, "-ERR keel: too many watched keys\r\n");
    if (ensure_argv(s, argc) != 0)
        return reply(c, "-ERR out of memory\r\n");
    s->argv[0] = (const uint8_t *)"EXISTS";
    s->lens[0] = 6;
    for (size_t i = 1; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    /* KEEL.READS stale: this node's versions, at once. Otherwise the versions are read
     * after a ReadIndex round, in the connection's order, and the connection's later
     * commands wait for it: a follower that has not yet applied the client's own
     * acknowledged write would otherwise hand EXEC an old version, and EXEC would abort
     * although nothing else changed the key. */
    if (cs->stale_reads || s->node == NULL) {
        if (watch_add(s, cs, s->argv + 1, s->lens + 1, argc - 1) != 0)
            return reply(c, "-ERR out of memory\r\n");
        return reply(c, "+OK\r\n");
    }
    return submit_command(c, s, cs, argc, RUN_WATCH, NULL);
}

static int cmd_unwatch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = state_of(c);
    if (cs != NULL)
        watch_clear(cs);
    return reply(c, "+OK\r\n");
}

/* KEEL.TXN nwatch key ver ... ncmds argc args ... into s->argv, numbers in s->buf. */
static int build_txn(server_t *s, client_state_t *cs, size_t *argc_out)
{
    size_t n = 3 + 2 * cs->nwatch;
    for (pending_reply_t *q = cs->queued_head; q; q = q->next)
        n += 1 + q->argc;
    int rc = ensure_argv(s, n);
    keel_buf_reset(&s->buf);
    if (rc == 0) /* room for every number up front: the pointers into it must not move */
        rc = keel_buf_reserve(&s->buf, 24 * (3 + cs->nwatch + cs->nqueued));
    if (rc != 0)
        return rc;
    size_t k = 0;
#define PUT_STR(p, l) (s->argv[k] = (const uint8_t *)(p), s->lens[k++] = (l))
#define PUT_NUM(v)                                                                                 \
    do {                                                                                           \
        size_t at_ = s->buf.len;                                                                   \
        keel_buf_append_u64_dec(&s->buf, (uint64_t)(v));                                           \
        PUT_STR(s->buf.data + at_, s->buf.len - at_);                                              \
    } while (0)
    PUT_STR("KEEL.TXN", 8);
    PUT_NUM(cs->nwatch);
    for (size_t i = 0; i < cs->nwatch; i++) {
        PUT_STR(cs->watch[i]->key, cs->watch[i]->len);
        PUT_NUM(cs->watch[i]->version);
    }
    PUT_NUM(cs->nqueued);
    for (pending_reply_t *q = cs->queued_head; q; q = q->next) {
        PUT_NUM(q->argc);
        for (size_t i = 0; i < q->argc; i++)
            PUT_STR(q->argv[i], q->lens[i]);
    }
#undef PUT_NUM
#undef PUT_STR
    *argc_out = k;
    return 0;
}

static int cmd_exec(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    client_state_t *cs = state_of(c);
    if (cs == NULL || !cs->in_multi)
        return reply(c, "-ERR EXEC without MULTI\r\n");
    int rc;
    if (cs->multi_dirty) {
        rc = reply(c, "-EXECABORT Transaction discarded because of previous errors.\r\n");
    } else {
        size_t n;
        rc = build_txn(s, cs, &n);
        rc = rc == 0 ? submit_command(c, s, cs, n, RUN_WRITE, NULL)
                     : reply(c, "-ERR out of memory\r\n");
    }
    multi_reset(cs); /* the node copied the entry; the queued copies can go */
    watch_clear(cs);
    return rc;
}

static int cmd_data(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* A data command refused by the RESP layer for its argument count: a call and an error. */
static void on_arity_error(keel_resp_client_t *c, const keel_resp_command_t *cmd)
{
    if (cmd->handler != cmd_data)
        return;
    keel_resp_arg_t name = {.ptr = (const uint8_t *)cmd->name, .len = strlen(cmd->name)};
    cmd_stats_t *st = stats_for(srv_of(c), &name);
    if (st) {
        keel_counter_inc(st->calls);
        keel_counter_inc(st->errors);
    }
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->in_multi)
        cs->multi_dirty = 1; /* as Redis: EXEC answers -EXECABORT */
}

static int cmd_data(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    cmd_stats_t *st = stats_for(s, &argv[0]);
    if (st)
        keel_counter_inc(st->calls);
    if (ensure_argv(s, argc) != 0)
        return reply(c, "-ERR out of memory\r\n");
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
    if (keel_kv_check((int)argc, s->argv, s->lens, &s->buf) != 0) {
        if (st)
            keel_counter_inc(st->errors);
        client_state_t *bad = keel_resp_client_data(c);
        if (bad != NULL && bad->in_multi)
            bad->multi_dirty = 1; /* EXEC will answer -EXECABORT */
        keel_buf_t *out = keel_resp_client_out(c);
        return out ? keel_buf_append(out, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf))
                   : KEEL_ENOMEM;
    }
    unsigned flags = keel_kv_command_flags(argv[0].ptr, argv[0].len);
    client_state_t *cs = state_of(c);
    if (cs == NULL)
        return reply(c, "-ERR out of memory\r\n");
    keel_buf_t *out = NULL;
    if (keel_pubsub_count(s->pubsub, c) > 0 && (out = keel_resp_client_out(c)) == NULL)
        return KEEL_ENOMEM;
    if (out != NULL) /* RESP2 subscribed mode */
        return keel_buf_printf(out,
                               "-ERR Can't execute '%.*s': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / "
                               "PING / QUIT are allowed in this context\r\n",
                               (int)(argv[0].len > 32 ? 32 : argv[0].len),
                               (const char *)argv[0].ptr);
    if (cs->in_multi)
        return queue_in_multi(c, s, cs, argc);
    return submit_command(c, s, cs, argc, (flags & KEEL_KV_WRITE) ? RUN_WRITE : RUN_READ, st);
}

/*
 * Sends the command in s->argv/s->lens to the node, keeping the connection's order
 * (see client_state): now if it can run alongside what is in flight, else held.
 */
static int submit_command(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                          int run, cmd_stats_t *st)
{
    int is_write = run == RUN_WRITE, watch = run == RUN_WATCH;
    int idle = cs->inflight == 0 && cs->held_head == NULL;
    if (run == RUN_READ && cs->stale_reads && idle && s->node) {
        keel_buf_t *out = keel_resp_client_out(c);
        return out ? keel_node_read_local(s->node, (int)argc, s->argv, s->lens, out) : KEEL_ENOMEM;
    }
    int go_now = cs->held_head == NULL && (cs->inflight == 0 || cs->kind_write == is_write);
    /* WATCH needs its keys when the read completes: always a copy */
    pending_reply_t *pr = new_pending(s, argc, !go_now || watch);
    keel_resp_deferred_t *slot = NULL;
    if (pr != NULL)
        slot = watch ? keel_resp_client_defer_barrier(c) : keel_resp_client_defer(c);
    if (slot == NULL) {
        if (pr != NULL)
            pending_free(pr);
        return reply(c, "-ERR out of memory\r\n");
    }
    pr->slot = slot;
    pr->stats = st;
    pr->cs = cs;
    pr->is_write = is_write;
    pr->watch = watch;
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

/* ---- pub/sub ------------------------------------------------------------------------- */

/*
 * Redis pub/sub: a client that subscribes enters subscribed mode (only the subscribe
 * commands, PING and QUIT until it unsubscribes from everything). PUBLISH delivers to
 * this node's subscribers and broadcasts the message to every peer, which deliver to
 * theirs, as the Redis Cluster bus does: at most once, in no order across publishers, not
 * through the log. The reply counts the receivers on this node.
 */
static void push_message(void *data, void *sub, const uint8_t *pat, size_t pat_len,
                         const uint8_t *ch, size_t ch_len, const uint8_t *msg, size_t msg_len)
{
    keel_resp_client_t *c = sub;
    keel_resp_deferred_t *d = keel_resp_client_defer(c); /* a push: a slot done at once */
    if (d == NULL)
        return;
    keel_buf_t *b = keel_resp_deferred_out(d);
    int rc = pat ? keel_buf_append_str(b, "*4\r\n$8\r\npmessage\r\n") : 0;
    if (rc == 0 && pat)
        rc = reply_bulk(b, pat, pat_len);
    if (rc == 0 && !pat)
        rc = keel_buf_append_str(b, "*3\r\n$7\r\nmessage\r\n");
    if (rc == 0)
        rc = reply_bulk(b, ch, ch_len);
    if (rc == 0)
        rc = reply_bulk(b, msg, msg_len);
    keel_resp_deferred_done(d, rc);
}

static void on_peer_publish(void *data, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                            size_t msg_len)
{
    server_t *s = data;
    keel_pubsub_publish(s->pubsub, ch, ch_len, msg, msg_len, push_message, s);
}

static int cmd_publish(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    size_t n = keel_pubsub_publish(s->pubsub, argv[1].ptr, argv[1].len, argv[2].ptr, argv[2].len,
                                   push_message, s);
    if (s->node)
        keel_node_publish(s->node, argv[1].ptr, argv[1].len, argv[2].ptr, argv[2].len);
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_buf_printf(out, ":%zu\r\n", n) : KEEL_ENOMEM;
}

static int sub_reply(keel_resp_client_t *c, const char *kind, const uint8_t *name, size_t len,
                     size_t count)
{
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    int rc = keel_buf_printf(out, "*3\r\n$%zu\r\n%s\r\n", strlen(kind), kind);
    if (rc == 0)
        rc = name ? reply_bulk(out, name, len) : keel_buf_append_str(out, "$-1\r\n");
    return rc == 0 ? keel_buf_printf(out, ":%zu\r\n", count) : rc;
}

static int subscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int pat)
{
    server_t *s = srv_of(c);
    if (state_of(c) == NULL)
        return reply(c, "-ERR out of memory\r\n");
    for (size_t i = 1; i < argc; i++) {
        int rc = keel_pubsub_subscribe(s->pubsub, c, argv[i].ptr, argv[i].len, pat);
        if (rc < 0)
            return reply(c, rc == KEEL_EFULL ? "-ERR keel: too many subscriptions\r\n"
                                             : "-ERR out of memory\r\n");
        rc = sub_reply(c, pat ? "psubscribe" : "subscribe", argv[i].ptr, argv[i].len,
                       keel_pubsub_count(s->pubsub, c));
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int unsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int pat)
{
    server_t *s = srv_of(c);
    const char *kind = pat ? "punsubscribe" : "unsubscribe";
    int rc = 0;
    if (argc == 1) { /* from everything of this kind */
        const uint8_t *name;
        size_t len, any = 0;
        while (rc == 0 && keel_pubsub_nth(s->pubsub, c, pat, 0, &name, &len) == 0) {
            /* reply first: name is freed by the unsubscribe */
            rc = sub_reply(c, kind, name, len, keel_pubsub_count(s->pubsub, c) - 1);
            keel_pubsub_unsubscribe(s->pubsub, c, name, len, pat);
            any++;
        }
        return any || rc ? rc : sub_reply(c, kind, NULL, 0, keel_pubsub_count(s->pubsub, c));
    }
    for (size_t i = 1; rc == 0 && i < argc; i++) {
        keel_pubsub_unsubscribe(s->pubsub, c, argv[i].ptr, argv[i].len, pat);
        rc = sub_reply(c, kind, argv[i].ptr, argv[i].len, keel_pubsub_count(s->pubsub, c));
    }
    return rc;
}

static int cmd_subscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return subscribe(c, argc, argv, 0);
}

static int cmd_psubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return subscribe(c, argc, argv, 1);
}

static int cmd_unsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return unsubscribe(c, argc, argv, 0);
}

static int cmd_punsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return unsubscribe(c, argc, argv, 1);
}

/* ---- KEEL.WATCH: change streams ------------------------------------------------------ */

/*
 * KEEL.WATCH prefix [FROM revision] puts the connection in push mode (only PING and QUIT
 * are accepted after it, as in Redis's subscribed mode) and streams every change to a key
 * under the prefix from this node's change history (core/kv "change history"), in revision
 * order, as this node applies the log: any node serves watches, a follower as it applies.
 *
 * Replies and pushes (RESP2, readable with any client's read_response):
 *   *3 "watching" prefix :R          R: the stream starts after revision R (FROM, or the
 *                                    revision this node has applied when no FROM)
 *   *3 "watch" :rev *n (*3 "put" key value | *3 "del" key nil) x n
 *                                    one push per revision: all of its changes under the
 *                                    prefix, so a push is never split across a reconnect
 *   -COMPACTED ...                   FROM r and changes after r are no longer all retained
 *                                    here; names the oldest available revision
 *   -LAGGED ... FROM R               sent before closing a watcher whose position left the
 *                                    history while it was not reading; R is the last
 *                                    revision it received whole
 *
 * The position "after R" means after every change of revision R: resuming with FROM R
 * (the last push's revision) gives every later revision exactly once.
 *
 * Back-pressure. A watcher is a cursor (the revision it has been sent up to), not a copy
 * of the changes: each pass appends revisions to its output until the output holds
 * WATCH_OUTPUT_BYTES_HIGH, and continues when the socket drains (client_drained) or the
 * node applies more (on_applied). A slow reader costs nothing beyond the shared history;
 * once the history no longer reaches back to its position it is told where it stopped
 * and closed, which is how it learns to resume (elsewhere, or after a resynchronization).
 */
#define WATCH_OUTPUT_BYTES_HIGH (1024u * 1024u)
/* ... or half the client output limit, if that is lower, so pushes never hit the limit. */
static size_t watch_output_high(const server_t *s)
{
    size_t half = s->cfg.resp.reply_bytes_max / 2;
    return half < WATCH_OUTPUT_BYTES_HIGH ? half : WATCH_OUTPUT_BYTES_HIGH;
}
#define WATCH_PREFIX_BYTES_MAX 4096u

struct watcher {
    watcher_t *next, *prev; /* server->watchers */
    keel_resp_client_t *client;
    uint64_t after; /* every change up to this revision has been pushed (or skipped) */
    size_t prefix_len;
    uint8_t prefix[];
};

static void stream_end(server_t *s, client_state_t *cs)
{
    watcher_t *w = cs->stream;
    if (w == NULL)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
    cs->stream = NULL;
}

static int stream_match(const watcher_t *w, const keel_kv_change_t *ch)
{
    return ch->key_len >= w->prefix_len && memcmp(ch->key, w->prefix, w->prefix_len) == 0;
}

/* Appends the push for the changes of one revision at [from, to) that match. */
static int push_revision(keel_buf_t *b, const keel_kv_t *kv, const watcher_t *w, size_t from,
                         size_t to, size_t n, uint64_t rev)
{
    int rc =
        keel_buf_printf(b, "*3\r\n$5\r\nwatch\r\n:%llu\r\n*%zu\r\n", (unsigned long long)rev, n);
    for (size_t i = from; rc == 0 && i < to; i++) {
        keel_kv_change_t ch;
        keel_kv_history_at(kv, i, &ch);
        if (!stream_match(w, &ch))
            continue;
        rc = keel_buf_append_str(b, ch.op == KEEL_KV_CHANGE_PUT ? "*3\r\n$3\r\nput\r\n"
                                                                : "*3\r\n$3\r\ndel\r\n");
        if (rc == 0)
            rc = reply_bulk(b, ch.key, ch.key_len);
        if (rc == 0)
            rc = ch.value ? reply_bulk(b, ch.value, ch.value_len)
                          : keel_buf_append_str(b, "$-1\r\n");
    }
    return rc;
}

/* The watcher's position left the history: say where it stopped, then close. */
static void stream_lagged(server_t *s, client_state_t *cs, const keel_kv_t *kv)
{
    watcher_t *w = cs->stream;
    keel_resp_client_t *c = w->client;
    unsigned long long after = (unsigned long long)w->after;
    unsigned long long oldest = (unsigned long long)keel_kv_history_oldest(kv);
    stream_end(s, cs);
    cs->stream_ended = 1;
    if (s->m_watch_lagged)
        keel_counter_inc(s->m_watch_lagged);
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    if (d == NULL)
        return;
    int rc = keel_buf_printf(keel_resp_deferred_out(d),
                             "-LAGGED watcher fell behind this node's change history (oldest "
                             "available revision %llu); resume with FROM %llu\r\n",
                             oldest, after);
    keel_resp_client_close_after_reply(c);
    keel_resp_deferred_done(d, rc);
}

/*
 * Pushes what the watcher has not been sent, whole revisions at a time, until its output
 * holds WATCH_OUTPUT_BYTES_HIGH. The client may be closed (and cs freed) by the last call
 * into resp_server here; nothing is touched after it.
 */
static void stream_pump(server_t *s, client_state_t *cs)
{
    watcher_t *w = cs->stream;
    const keel_kv_t *kv = s->node ? keel_node_kv(s->node) : NULL;
    size_t pos, len = kv ? keel_kv_history_len(kv) : 0;
    if (kv == NULL)
        return;
    if (keel_kv_history_seek(kv, w->after, &pos) != 0) {
        stream_lagged(s, cs, kv);
        return;
    }
    size_t held = keel_resp_client_output_bytes(w->client);
    size_t high = watch_output_high(s);
    if (pos == len || held >= high)
        return;
    keel_resp_deferred_t *d = keel_resp_client_defer(w->client); /* a push: done at once */
    if (d == NULL)
        return; /* out of memory: the next pass tries again */
    keel_buf_t *b = keel_resp_deferred_out(d);
    int rc = 0;
    while (rc == 0 && pos < len && held + keel_buf_unread(b) < high) {
        keel_kv_change_t ch;
        keel_kv_history_at(kv, pos, &ch);
        size_t end = pos, n = 0;
        for (; end < len; end++) {
            keel_kv_change_t x;
            keel_kv_history_at(kv, end, &x);
            if (x.revision != ch.revision)
                break;
            n += stream_match(w, &x);
        }
        if (n > 0)
            rc = push_revision(b, kv, w, pos, end, n, ch.revision);
        w->after = ch.revision;
        pos = end;
    }
    keel_resp_deferred_done(d, rc); /* an error (output limit) closes the client */
}

static void on_applied(void *data)
{
    server_t *s = data;
    for (watcher_t *w = s->watchers, *next; w != NULL; w = next) {
        next = w->next; /* w may end (lagged, or its client closed) */
        stream_pump(s, keel_resp_client_data(w->client));
    }
}

static void on_client_drained(keel_resp_client_t *c)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->stream != NULL)
        stream_pump(srv_of(c), cs);
}

/* Push mode: only PING and QUIT (and the connection can be closed). */
static int before_command(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                          const keel_resp_arg_t *argv)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs == NULL || (cs->stream == NULL && !cs->stream_ended))
        return 0;
    if (strcasecmp(cmd->name, "PING") == 0 || strcasecmp(cmd->name, "QUIT") == 0)
        return 0;
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    int rc = keel_buf_printf(out,
                             "-ERR Can't execute '%.*s': only PING / QUIT are allowed while "
                             "watching (KEEL.WATCH)\r\n",
                             (int)(argv[0].len > 32 ? 32 : argv[0].len), (const char *)argv[0].ptr);
    return rc == 0 ? 1 : rc;
}

/* KEEL.WATCH prefix [FROM revision] */
static int cmd_keel_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    client_state_t *cs = state_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (cs == NULL || out == NULL)
        return KEEL_ENOMEM;
    int64_t from = -1;
    if (argc != 2 && (argc != 4 || !arg_is(&argv[2], "from")))
        return reply(c, "-ERR syntax error: KEEL.WATCH prefix [FROM revision]\r\n");
    if (argc == 4 && (keel_parse_i64(argv[3].ptr, argv[3].len, &from) != 0 || from < 0))
        return reply(c, "-ERR value is not an integer or out of range\r\n");
    if (cs->in_multi)
        return reply(c, "-ERR KEEL.WATCH inside MULTI is not allowed\r\n");
    if (keel_pubsub_count(s->pubsub, c) > 0)
        return reply(c, "-ERR KEEL.WATCH is not allowed in subscribed mode\r\n");
    if (argv[1].len > WATCH_PREFIX_BYTES_MAX)
        return reply(c, "-ERR keel: watch prefix too long\r\n");
    if (s->node == NULL)
        return reply(c, "-ERR keel: server shutting down\r\n");
    const keel_kv_t *kv = keel_node_kv(s->node);
    uint64_t after = from >= 0 ? (uint64_t)from : keel_kv_revision(kv);
    size_t pos;
    if (keel_kv_history_seek(kv, after, &pos) != 0)
        return keel_buf_printf(out,
                               "-COMPACTED oldest available revision %llu on this node; changes "
                               "after %llu are no longer all retained\r\n",
                               (unsigned long long)keel_kv_history_oldest(kv),
                               (unsigned long long)after);
    watcher_t *w = calloc(1, sizeof(*w) + argv[1].len);
    if (w == NULL)
        return reply(c, "-ERR out of memory\r\n");
    w->client = c;
    w->after = after;
    w->prefix_len = argv[1].len;
    memcpy(w->prefix, argv[1].ptr, argv[1].len);
    int rc = keel_buf_append_str(out, "*3\r\n$8\r\nwatching\r\n");
    if (rc == 0)
        rc = reply_bulk(out, argv[1].ptr, argv[1].len);
    if (rc == 0)
        rc = keel_buf_printf(out, ":%llu\r\n", (unsigned long long)after);
    if (rc != 0) {
        free(w);
        return rc;
    }
    w->next = s->watchers;
    if (s->watchers)
        s->watchers->prev = w;
    s->watchers = w;
    cs->stream = w;
    stream_pump(s, cs);
    return 0;
}

/* ---- connection commands ----------------------------------------------------------- */

static int cmd_select(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    if (argv[1].len == 1 && argv[1].ptr[0] == '0')
        return reply(c, "+OK\r\n");
    return reply(c, "-ERR DB index is out of range\r\n");
}

static int cmd_client(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *st = state_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (st == NULL || out == NULL)
        return KEEL_ENOMEM;
    if (arg_is(&argv[1], "setname") && argc == 3) {
        if (argv[2].len >= CLIENT_NAME_BYTES_MAX || memchr(argv[2].ptr, ' ', argv[2].len))
            return reply(c, "-ERR Client names cannot contain spaces, newlines or special "
                            "characters.\r\n");
        memcpy(st->name, argv[2].ptr, argv[2].len);
        st->name[argv[2].len] = '\0';
        return reply(c, "+OK\r\n");
    }
    if (arg_is(&argv[1], "getname") && argc == 2)
        return st->name[0] ? reply_bulk(out, st->name, strlen(st->name)) : reply(c, "$-1\r\n");
    if (arg_is(&argv[1], "id") && argc == 2)
        return keel_buf_printf(out, ":%llu\r\n", (unsigned long long)keel_resp_client_id(c));
    if (arg_is(&argv[1], "setinfo") && argc == 4)
        return reply(c, "+OK\r\n");
    return keel_buf_printf(out,
                           "-ERR unknown subcommand or wrong number of arguments for "
                           "'%.*s'\r\n",
                           (int)(argv[1].len > 64 ? 64 : argv[1].len), (const char *)argv[1].ptr);
}

static int cmd_keel_reads(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *st = state_of(c);
    if (st == NULL)
        return KEEL_ENOMEM;
    if (arg_is(&argv[1], "stale"))
        st->stale_reads = 1;
    else if (arg_is(&argv[1], "linearizable"))
        st->stale_reads = 0;
    else
        return reply(c, "-ERR KEEL.READS takes 'stale' or 'linearizable'\r\n");
    return reply(c, "+OK\r\n");
}

static void info_raft(server_t *s, keel_buf_t *b)
{
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    const keel_memberdir_t *d = keel_node_members(s->node);
    keel_buf_printf(b,
                    "# Raft\r\nrole:%s\r\nterm:%llu\r\nleader:%s\r\ncommit_index:%llu\r\n"
                    "applied_index:%llu\r\nlast_index:%llu\r\nrevision:%llu\r\n"
                    "leader_changes:%llu\r\nmembers:",
                    keel_raft_role_name(st.role), (unsigned long long)st.term,
                    st.has_leader ? keel_node_member_name(s->node, st.leader) : "",
                    (unsigned long long)st.commit, (unsigned long long)st.applied,
                    (unsigned long long)st.last_index, (unsigned long long)st.revision,
                    (unsigned long long)st.leader_changes);
    for (size_t i = 0; i < d->n; i++)
        keel_buf_printf(b, "%s%s=%s", i ? "," : "", d->m[i].name, d->m[i].peer_addr);
    keel_buf_append_str(b, "\r\n");
}

static int cmd_info(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    keel_buf_t *b = &s->buf;
    keel_buf_reset(b);
    int all = argc == 1 || arg_is(&argv[1], "all") || arg_is(&argv[1], "everything") ||
              arg_is(&argv[1], "default");
    for (size_t i = 1; i < argc || (all && i == 1); i++) {
        const keel_resp_arg_t *sec = i < argc ? &argv[i] : NULL;
        int again = 0; /* a section named twice is shown once, as Redis does */
        for (size_t j = 1; sec && j < i; j++)
            again |= argv[j].len == sec->len &&
                     strncasecmp((const char *)argv[j].ptr, (const char *)sec->ptr, sec->len) == 0;
        if (again)
            continue;
        if (all || arg_is(sec, "server"))
            keel_buf_printf(b,
                            "# Server\r\nredis_version:7.0.0\r\nkeel_version:%s\r\n"
                            "redis_mode:keel-raft\r\nprocess_id:%d\r\nnode_name:%s\r\n"
                            "tcp_port:%d\r\nuptime_in_seconds:%lld\r\n\r\n",
                            SERVER_VERSION, (int)getpid(), s->cfg.name,
                            keel_resp_server_port(&s->resp),
                            (long long)((keel_clock_now_ms() - s->started_ms) / 1000));
        if (all || arg_is(sec, "clients"))
            keel_buf_printf(b, "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\n\r\n",
                            s->resp.clients_len, s->cfg.resp.clients_max);
        if (all || arg_is(sec, "stats"))
            keel_buf_printf(b,
                            "# Stats\r\ntotal_connections_received:%llu\r\n"
                            "total_commands_processed:%llu\r\nrejected_connections:%llu\r\n"
                            "protocol_errors:%llu\r\n\r\n",
                            (unsigned long long)s->resp.connections_total,
                            (unsigned long long)s->resp.commands_total,
                            (unsigned long long)s->resp.rejected_total,
                            (unsigned long long)s->resp.protocol_errors_total);
        if (all || arg_is(sec, "raft")) {
            info_raft(s, b);
            keel_buf_append_str(b, "\r\n");
        }
        if (all)
            break;
    }
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    size_t n = keel_buf_unread(b);
    if (n >= 2) /* drop the final blank line, as Redis does */
        n -= 2;
    return reply_bulk(out, keel_buf_rptr(b), n);
}

static int command_entry(keel_buf_t *out, const char *name, int arity, unsigned flags)
{
    int rc = keel_buf_printf(out, "*6\r\n$%zu\r\n%s\r\n:%d\r\n", strlen(name), name, arity);
    if (rc == 0)
        rc = keel_buf_append_str(out, (flags & KEEL_KV_WRITE)  ? "*1\r\n+write\r\n"
                                      : (flags & KEEL_KV_READ) ? "*1\r\n+readonly\r\n"
                                                               : "*0\r\n");
    int keyed = flags != 0 && strcmp(name, "dbsize") != 0 && strcmp(name, "scan") != 0;
    if (rc == 0)
        rc = keel_buf_printf(out, ":%d\r\n:%d\r\n:%d\r\n", keyed, keyed ? (arity < 0 ? -1 : 1) : 0,
                             keyed);
    return rc;
}

static int cmd_command(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    size_t n = s->resp.cmds_len;
    if (argc == 2 && arg_is(&argv[1], "count"))
        return keel_buf_printf(out, ":%zu\r\n", n);
    if (argc >= 2 && arg_is(&argv[1], "docs"))
        return reply(c, "*0\r\n"); /* no documentation strings; redis-cli copes */
    if (argc > 1)
        return reply(c, "-ERR unknown subcommand for 'COMMAND'. Try COMMAND COUNT.\r\n");
    int rc = keel_buf_printf(out, "*%zu\r\n", n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const keel_resp_command_t *cmd = &s->resp.cmds[i];
        char low[KEEL_RESP_CMD_NAME_BYTES_MAX];
        size_t k = 0;
        for (; cmd->name[k] && k + 1 < sizeof(low); k++)
            low[k] = (char)tolower((unsigned char)cmd->name[k]);
        low[k] = '\0';
        unsigned f = keel_kv_command_flags((const uint8_t *)low, k);
        rc = command_entry(out, low, cmd->arity, f);
    }
    return rc;
}

/*
 * KEEL.CLUSTER (docs/membership.md):
 *   MEMBERS                     one array per member of the configuration in force on
 *                               this node: name, id, peer address, "voter" or "learner",
 *                               1 for the current leader, client address ("" if unknown)
 *   ADD name peer_addr client_addr   add a learner; the leader promotes it to voter once
 *                               it has caught up. Answers its id once the change commits.
 *   JOIN name peer_addr client_addr  ADD for `keel server --join`: asking again with the
 *                               same name and peer address is not an error; answers
 *                               [id, cluster id, [member...]]
 *   REMOVE name                 remove a voter or learner (the leader hands leadership
 *                               over first if it is the one removed)
 *   TRANSFER name               hand leadership to that member; must reach the leader
 *   UPDATE name client_addr     set a member's client address (each node publishes its
 *                               own this way on its own; the bootstrap directory has none)
 * ADD, JOIN, REMOVE and UPDATE go through the log like writes: any node takes them (a
 * follower forwards to the leader), one change at a time (a second waits for the first).
 */
static int members_reply(server_t *s, keel_buf_t *out, uint64_t leader)
{
    const keel_memberdir_t *d = keel_node_members(s->node);
    int rc = keel_buf_printf(out, "*%zu\r\n", d->n);
    for (size_t i = 0; rc == 0 && i < d->n; i++) {
        const keel_node_member_t *m = &d->m[i];
        rc = keel_buf_printf(out, "*6\r\n");
        if (rc == 0)
            rc = reply_bulk(out, m->name, strlen(m->name));
        if (rc == 0)
            rc = keel_buf_printf(out, ":%llu\r\n", (unsigned long long)m->id);
        if (rc == 0)
            rc = reply_bulk(out, m->peer_addr, strlen(m->peer_addr));
        if (rc == 0)
            rc = keel_buf_printf(out, "%s:%d\r\n",
                                 m->voter ? "$5\r\nvoter\r\n" : "$7\r\nlearner\r\n",
                                 leader == m->id);
        if (rc == 0)
            rc = reply_bulk(out, m->client_addr, strlen(m->client_addr));
    }
    return rc;
}

static int cluster_change(keel_resp_client_t *c, server_t *s, size_t argc,
                          const keel_resp_arg_t *argv)
{
    if (ensure_argv(s, argc) != 0)
        return reply(c, "-ERR out of memory\r\n");
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    client_state_t *cs = state_of(c);
    if (cs == NULL)
        return reply(c, "-ERR out of memory\r\n");
    if (cs->in_multi)
        return reply(c, "-ERR keel: KEEL.CLUSTER is not allowed inside MULTI\r\n");
    return submit_command(c, s, cs, argc, 1, NULL);
}

static int cmd_cluster(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = srv_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    if (argc == 2 && arg_is(&argv[1], "members"))
        return members_reply(s, out, st.leader);
    if ((argc == 5 && (arg_is(&argv[1], "add") || arg_is(&argv[1], "join"))) ||
        (argc == 3 && arg_is(&argv[1], "remove")) || (argc == 4 && arg_is(&argv[1], "update")))
        return cluster_change(c, s, argc, argv);
    if (argc == 3 && arg_is(&argv[1], "transfer")) {
        const keel_memberdir_t *d = keel_node_members(s->node);
        uint64_t to = 0;
        for (size_t i = 0; i < d->n; i++)
            if (strlen(d->m[i].name) == argv[2].len &&
                memcmp(d->m[i].name, argv[2].ptr, argv[2].len) == 0)
                to = d->m[i].id;
        if (to == 0)
            return reply(c, "-ERR keel: no such member\r\n");
        if (to == st.leader)
            return reply(c, "+OK\r\n"); /* already leads */
        int rc = keel_node_transfer(s->node, to);
        if (rc == KEEL_ENOTLEADER)
            return keel_buf_printf(out, "-ERR keel: not the leader; send it to %s\r\n",
                                   st.has_leader ? keel_node_member_name(s->node, st.leader)
                                                 : "the leader (none known yet)");
        if (rc != 0)
            return keel_buf_printf(out, "-ERR keel: transfer refused: %s\r\n", keel_strerror(rc));
        return reply(c, "+OK\r\n");
    }
    return reply(c, "-ERR keel: KEEL.CLUSTER MEMBERS | ADD name peer_addr client_addr | "
                    "REMOVE name | TRANSFER name | UPDATE name client_addr\r\n");
}

static const keel_resp_command_t connection_commands[] = {
    {"SELECT", 2, KEEL_RESP_CMD_FAST, cmd_select},
    {"CLIENT", -2, KEEL_RESP_CMD_FAST, cmd_client},
    {"INFO", -1, 0, cmd_info},
    {"COMMAND", -1, 0, cmd_command},
    {"KEEL.READS", 2, KEEL_RESP_CMD_FAST, cmd_keel_reads},
    {"MULTI", 1, KEEL_RESP_CMD_FAST, cmd_multi},
    {"EXEC", 1, KEEL_RESP_CMD_WRITE, cmd_exec},
    {"DISCARD", 1, KEEL_RESP_CMD_FAST, cmd_discard},
    {"WATCH", -2, KEEL_RESP_CMD_FAST, cmd_watch},
    {"UNWATCH", 1, KEEL_RESP_CMD_FAST, cmd_unwatch},
    {"SUBSCRIBE", -2, KEEL_RESP_CMD_FAST, cmd_subscribe},
    {"UNSUBSCRIBE", -1, KEEL_RESP_CMD_FAST, cmd_unsubscribe},
    {"PSUBSCRIBE", -2, KEEL_RESP_CMD_FAST, cmd_psubscribe},
    {"PUNSUBSCRIBE", -1, KEEL_RESP_CMD_FAST, cmd_punsubscribe},
    {"PUBLISH", 3, KEEL_RESP_CMD_FAST, cmd_publish},
    {"KEEL.CLUSTER", -2, KEEL_RESP_CMD_ADMIN, cmd_cluster},
    {"KEEL.WATCH", -2, KEEL_RESP_CMD_FAST, cmd_keel_watch},
};

#define N_CONN_CMDS (sizeof(connection_commands) / sizeof(connection_commands[0]))

/* The command table: connection commands plus every command core/kv knows. */
static int build_commands(server_t *s, keel_resp_command_t **out, size_t *n_out)
{
    size_t nkv = keel_kv_commands_count();
    keel_resp_command_t *t = calloc(N_CONN_CMDS + nkv, sizeof(*t));
    if (t == NULL)
        return KEEL_ENOMEM;
    memcpy(t, connection_commands, sizeof(connection_commands));
    size_t j = N_CONN_CMDS;
    for (size_t i = 0; i < nkv; i++) {
        keel_kv_command_info_t info;
        keel_kv_command_info(i, &info);
        /* KEEL.EXPIRE.SWEEP and KEEL.LEASE.SWEEP are housekeeping the leader proposes with
         * its own clock; a client choosing now_ms could expire keys early. */
        size_t nl = strlen(info.name);
        if (nl > 6 && strcmp(info.name + nl - 6, ".sweep") == 0)
            continue;
        keel_resp_command_t *c = &t[j++];
        c->name = info.name;
        c->arity = info.arity;
        c->flags = (info.flags & KEEL_KV_WRITE) ? KEEL_RESP_CMD_WRITE : KEEL_RESP_CMD_READONLY;
        c->handler = cmd_data;
        if (s->stats_n < CMD_STATS_MAX) {
            char labels[96], low[48];
            size_t k = 0;
            for (; info.name[k] && k + 1 < sizeof(low); k++)
                low[k] = (char)tolower((unsigned char)info.name[k]);
            low[k] = '\0';
            snprintf(labels, sizeof(labels), "cmd=\"%s\"", low);
            cmd_stats_t *st = &s->stats_store[s->stats_n++];
            st->calls = keel_metrics_counter(s->metrics, "keel_commands_total",
                                             "Data commands received, by command.", labels);
            st->errors = keel_metrics_counter(s->metrics, "keel_command_errors_total",
                                              "Data commands answered with an error.", labels);
            keel_map_put(&s->cmd_stats, low, k, st, NULL);
        }
    }
    *out = t;
    *n_out = j;
    return 0;
}

/* ---- admin HTTP --------------------------------------------------------------------- */

/*
 * Healthy: the node knows a leader and is not behind on applying what it knows to be
 * committed. "Behind" allows a small lag: a commit index often arrives in the same loop
 * turn as a health check and is applied at the end of that turn, so requiring
 * applied == commit would make a healthy follower under writes flap.
 */
#define HEALTH_APPLY_LAG_ENTRIES_MAX 1024

static int node_healthy(const keel_node_status_t *st)
{
    return st->has_leader && st->commit - st->applied <= HEALTH_APPLY_LAG_ENTRIES_MAX;
}

static void http_health(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    char body[256];
    int ok = node_healthy(&st);
    if (ok)
        snprintf(body, sizeof(body), "{\"status\":\"ok\",\"leader\":\"%s\",\"role\":\"%s\"}",
                 keel_node_member_name(s->node, st.leader), keel_raft_role_name(st.role));
    else
        snprintf(body, sizeof(body), "{\"status\":\"unavailable\",\"reason\":\"%s\"}",
                 !st.has_leader ? "no leader known" : "applying committed entries");
    keel_http_respond_body(req, ok ? 200 : 503, "application/json", body, strlen(body));
}

static void http_status(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    const keel_memberdir_t *d = keel_node_members(s->node);
    json_t *members = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(members,
                              json_pack("{s:s,s:I,s:s,s:s,s:s}", "name", d->m[i].name, "id",
                                        (json_int_t)d->m[i].id, "peer_addr", d->m[i].peer_addr,
                                        "client_addr", d->m[i].client_addr, "role",
                                        d->m[i].voter ? "voter" : "learner"));
    json_t *j = json_pack(
        "{s:s,s:I,s:s,s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "name", s->cfg.name,
        "id", (json_int_t)st.id, "role", keel_raft_role_name(st.role), "term", (json_int_t)st.term,
        "leader",
        st.has_leader ? json_string(keel_node_member_name(s->node, st.leader)) : json_null(),
        "commit_index", (json_int_t)st.commit, "applied_index", (json_int_t)st.applied,
        "last_index", (json_int_t)st.last_index, "revision", (json_int_t)st.revision, "keys",
        (json_int_t)st.keys, "leader_changes", (json_int_t)st.leader_changes, "wal_bytes",
        (json_int_t)st.wal_disk_bytes, "snapshot_index", (json_int_t)st.snapshot_index,
        "snapshot_bytes", (json_int_t)st.snapshot_disk_bytes, "requests_pending",
        (json_int_t)st.requests_pending, "members", members);
    if (j)
        json_object_set_new(j, "healthy", json_boolean(node_healthy(&st)));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        keel_http_respond_body(req, 200, "application/json", text, strlen(text));
    else
        keel_http_respond_error(req, 500, "cannot render status");
    free(text);
    json_decref(j);
}

static void http_metrics(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_buf_reset(&s->buf);
    if (keel_metrics_render(s->metrics, &s->buf) != 0) {
        keel_http_respond_error(req, 500, "cannot render metrics");
        return;
    }
    keel_http_respond_body(req, 200, "text/plain; version=0.0.4", keel_buf_rptr(&s->buf),
                           keel_buf_unread(&s->buf));
}

static double gauge_role(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.role;
}

static double gauge_term(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.term;
}

static double gauge_commit(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.commit;
}

static double gauge_clients(void *data)
{
    return (double)((server_t *)data)->resp.clients_len;
}

static double gauge_watchers(void *data)
{
    size_t n = 0;
    for (const watcher_t *w = ((server_t *)data)->watchers; w != NULL; w = w->next)
        n++;
    return (double)n;
}

static void register_gauges(server_t *s)
{
    keel_metrics_gauge_fn(s->metrics, "keel_watchers", "Connections streaming KEEL.WATCH.", NULL,
                          gauge_watchers, s);
    s->m_watch_lagged =
        keel_metrics_counter(s->metrics, "keel_watch_lagged_total",
                             "Watchers closed because this node's change history no longer "
                             "reached back to their position.",
                             NULL);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_role",
                          "0 follower, 1 pre-candidate, 2 candidate, 3 leader.", NULL, gauge_role,
                          s);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_term", "Current Raft term.", NULL, gauge_term, s);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_commit_index", "Highest committed index.", NULL,
                          gauge_commit, s);
    keel_metrics_gauge_fn(s->metrics, "keel_connected_clients", "Open RESP connections.", NULL,
                          gauge_clients, s);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

void keel_server_config_default(keel_server_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->name, sizeof(cfg->name), "n1");
    snprintf(cfg->listen_client, sizeof(cfg->listen_client), "127.0.0.1:7001");
    snprintf(cfg->listen_http, sizeof(cfg->listen_http), "127.0.0.1:7201");
    keel_node_config_default(&cfg->node);
    snprintf(cfg->node.data_dir, sizeof(cfg->node.data_dir), "keel-data/n1");
    cfg->resp = keel_resp_server_config_default();
}

int keel_server_set_cluster(keel_server_config_t *cfg, const char *initial_cluster,
                            keel_errmsg_t *msg)
{
    keel_node_config_t *nc = &cfg->node;
    nc->members_n = 0;
    nc->id = 0;
    const char *p = initial_cluster;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq == NULL || eq == p || (size_t)(eq - p) >= KEEL_NODE_NAME_BYTES ||
            len - (size_t)(eq - p) - 1 >= KEEL_NODE_ADDR_BYTES || len - (size_t)(eq - p) < 2)
            return keel_errf(msg, KEEL_EINVAL,
                             "--initial-cluster: bad member '%.*s' "
                             "(want name=host:port)",
                             (int)len, p);
        if (nc->members_n == KEEL_RAFT_VOTERS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "--initial-cluster: more than %d members",
                             KEEL_RAFT_VOTERS_MAX);
        keel_node_member_t *m = &nc->members[nc->members_n++];
        m->id = nc->members_n;
        snprintf(m->name, sizeof(m->name), "%.*s", (int)(eq - p), p);
        snprintf(m->peer_addr, sizeof(m->peer_addr), "%.*s", (int)(len - (size_t)(eq - p) - 1),
                 eq + 1);
        for (size_t i = 0; i + 1 < nc->members_n; i++)
            if (strcmp(nc->members[i].name, m->name) == 0)
                return keel_errf(msg, KEEL_EINVAL, "--initial-cluster: '%s' named twice", m->name);
        if (strcmp(m->name, cfg->name) == 0) {
            nc->id = m->id;
            if (nc->listen_peer[0] == '\0') /* unless --listen-peer said otherwise */
                snprintf(nc->listen_peer, sizeof(nc->listen_peer), "%s", m->peer_addr);
        }
        p += len + (end ? 1 : 0);
    }
    if (nc->id == 0)
        return keel_errf(msg, KEEL_EINVAL, "--initial-cluster does not name this node ('%s')",
                         cfg->name);
    nc->cluster_id = keel_hash64(initial_cluster, strlen(initial_cluster), 0x6b65656c);
    nc->raft.seed = nc->cluster_id ^ (nc->id * 0x9e3779b97f4a7c15ULL);
    return 0;
}

static void on_shutdown(void *data)
{
    server_t *s = data;
    keel_log_info("shutting down", KF_STR("node", s->cfg.name));
    if (s->resp_inited)
        keel_resp_server_close(&s->resp, NULL);
    if (s->http_inited)
        keel_http_server_shutdown(&s->http, NULL, NULL);
    if (s->node)
        keel_node_stop(s->node, NULL, NULL);
    s->node = NULL;
}

static int start_front_ends(server_t *s, keel_errmsg_t *msg)
{
    keel_resp_command_t *cmds;
    size_t n;
    int rc = build_commands(s, &cmds, &n);
    if (rc != 0)
        return rc;
    s->cfg.resp.listen = s->cfg.listen_client;
    s->cfg.resp.client_closed = on_client_closed;
    s->cfg.resp.before_command = before_command;
    s->cfg.resp.client_drained = on_client_drained;
    s->cfg.resp.arity_error = on_arity_error;
    rc = keel_resp_server_init(&s->resp, &s->loop, &s->cfg.resp, cmds, n, s, msg);
    free(cmds);
    if (rc != 0)
        return rc;
    s->resp_inited = 1;
    rc = keel_resp_server_listen(&s->resp, msg);
    if (rc != 0)
        return rc;
    const keel_http_route_t routes[] = {
        {HTTP_GET, "/health", http_health, s},
        {HTTP_GET, "/status", http_status, s},
        {HTTP_GET, "/metrics", http_metrics, s},
    };
    keel_http_server_config_t hc = keel_http_server_config_default();
    hc.metrics = s->metrics; /* the admin server's own request metrics */
    rc = keel_http_server_init(&s->http, &s->loop, &hc, routes, 3, msg);
    if (rc != 0)
        return rc;
    s->http_inited = 1;
    return keel_http_server_listen(&s->http, s->cfg.listen_http, msg);
}

int keel_server_run(const keel_server_config_t *cfg, keel_errmsg_t *msg)
{
    server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KEEL_ENOMEM;
    s->cfg = *cfg;
    s->started_ms = keel_clock_now_ms();
    keel_buf_init(&s->buf, 0);
    s->metrics = keel_metrics_new();
    s->cfg.node.metrics = s->metrics;
    s->cfg.node.on_publish = on_peer_publish;
    s->cfg.node.on_publish_data = s;
    s->cfg.node.on_applied = on_applied;
    s->cfg.node.on_applied_data = s;
    if (s->cfg.node.client_addr[0] == '\0')
        snprintf(s->cfg.node.client_addr, sizeof(s->cfg.node.client_addr), "%s",
                 s->cfg.listen_client);
    s->pubsub = keel_pubsub_new();
    int rc = s->metrics && s->pubsub ? keel_map_init(&s->cmd_stats, 64, 0, 1) : KEEL_ENOMEM;
    if (rc == 0)
        rc = keel_loop_init(&s->loop);
    if (rc != 0)
        goto out;
    keel_loop_handle_signals(&s->loop);
    keel_loop_on_shutdown(&s->loop, on_shutdown, s);
    rc = keel_node_start(&s->node, &s->loop, &s->cfg.node, msg);
    if (rc == 0)
        rc = start_front_ends(s, msg);
    if (rc != 0) {
        keel_loop_shutdown(&s->loop);
        keel_loop_run(&s->loop);
        keel_loop_close(&s->loop);
        goto out;
    }
    register_gauges(s);
    keel_log_info("keel server ready", KF_STR("node", s->cfg.name),
                  KF_STR("client", s->cfg.listen_client), KF_STR("peer", s->cfg.node.listen_peer),
                  KF_STR("http", s->cfg.listen_http));
    rc = keel_loop_run(&s->loop);
    keel_loop_close(&s->loop);
out:
    keel_map_free(&s->cmd_stats, NULL);
    keel_metrics_free(s->metrics);
    keel_pubsub_free(s->pubsub);
    keel_buf_free(&s->buf);
    while (s->pr_pool != NULL) {
        pending_reply_t *pr = s->pr_pool;
        s->pr_pool = pr->next;
        free(pr);
    }
    free(s->argv);
    free(s->lens);
    free(s);
    return rc;
}
