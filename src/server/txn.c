/* txn.c - MULTI / EXEC / DISCARD / WATCH / UNWATCH: Redis transactions as one Raft entry. */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * Redis semantics on one Raft entry. Commands after MULTI are checked as they arrive as
 * Redis 7.0 checks them (an unknown command or a wrong number of arguments is answered
 * with its error and makes EXEC answer -EXECABORT; a syntax error is not judged here: it
 * is that command's reply inside EXEC, and the others run) and queued with "+QUEUED". WATCH records
 * each key's version as this node sees it. EXEC proposes a single KEEL.TXN entry
 * carrying the watched versions and the queued data commands: the state machine checks
 * the versions and runs the commands in the same apply, so the transaction is all or
 * nothing and EXEC answers *-1 when a watched key changed. A version read on a lagging
 * follower can only be older than the truth, which can make EXEC abort when nothing
 * changed after WATCH, never commit when something did.
 *
 * Connection commands (PING, ECHO, INFO, CLIENT, PUBLISH, SUBSCRIBE, ...) are queued
 * too, as in Redis, and run inside EXEC once the entry has committed, in their place
 * among the data commands' replies (keel__srv_exec_finish); when a watched key changed
 * none of them runs. Only the rows flagged NOQUEUE (MULTI, EXEC, DISCARD, WATCH, QUIT)
 * run at once, and NOMULTI rows (KEEL.WATCH, KEEL.CLUSTER) are refused.
 */
#define MULTI_COMMANDS_MAX 10000
#define WATCH_KEYS_MAX 1024

typedef struct watched {
    uint64_t version;
    size_t len;
    uint8_t key[];
} watched_t;

void keel__srv_queued_free(pending_reply_t *q)
{
    while (q != NULL) {
        pending_reply_t *next = q->next;
        free(q);
        q = next;
    }
}

void keel__srv_multi_reset(client_state_t *cs)
{
    keel__srv_queued_free(cs->queued_head);
    cs->queued_head = NULL;
    cs->queued_tail = NULL;
    cs->nqueued = 0;
    cs->in_multi = cs->multi_dirty = 0;
}

int keel__srv_watch_add(server_t *s, client_state_t *cs, const uint8_t *const *keys,
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
        w->version =
            keel_kv_version_at(&s->kv.kv, keel_node_read_now_ms(s->node), keys[i], lens[i]);
        w->len = lens[i];
        memcpy(w->key, keys[i], lens[i]);
        cs->watch[cs->nwatch++] = w;
    }
    return 0;
}

void keel__srv_watch_clear(client_state_t *cs)
{
    for (size_t i = 0; i < cs->nwatch; i++)
        free(cs->watch[i]);
    free(cs->watch);
    cs->watch = NULL;
    cs->nwatch = 0;
}

static int is_data(const pending_reply_t *q)
{
    return keel__srv_is_data_row(q->row);
}

/* Queues the command in s->argv (a copy) with its row; answers +QUEUED. */
int keel__srv_multi_queue(keel_resp_client_t *c, server_t *s, client_state_t *cs,
                          const keel_resp_command_t *row, size_t argc)
{
    if (cs->nqueued >= MULTI_COMMANDS_MAX) {
        cs->multi_dirty = 1;
        return keel__srv_error(c, "ERR keel: too many commands in one transaction");
    }
    pending_reply_t *q = keel__srv_pending_new(s, argc, 1);
    if (q == NULL) {
        cs->multi_dirty = 1;
        return keel__srv_oom(c);
    }
    q->row = row;
    if (cs->queued_tail)
        cs->queued_tail->next = q;
    else
        cs->queued_head = q;
    cs->queued_tail = q;
    cs->nqueued++;
    return keel__srv_simple(c, "QUEUED");
}

int keel__srv_cmd_multi(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    if (cs->in_multi)
        return keel__srv_error(c, "ERR MULTI calls can not be nested");
    cs->in_multi = 1;
    return keel__srv_simple(c, "OK");
}

int keel__srv_cmd_discard(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL || !cs->in_multi)
        return keel__srv_error(c, "ERR DISCARD without MULTI");
    keel__srv_multi_reset(cs);
    keel__srv_watch_clear(cs);
    return keel__srv_simple(c, "OK");
}

int keel__srv_cmd_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    if (cs->in_multi)
        return keel__srv_error(c, "ERR WATCH inside MULTI is not allowed");
    if (cs->nwatch + argc - 1 > WATCH_KEYS_MAX)
        return keel__srv_error(c, "ERR keel: too many watched keys");
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
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
        if (keel__srv_watch_add(s, cs, s->argv + 1, s->lens + 1, argc - 1) != 0)
            return keel__srv_oom(c);
        return keel__srv_simple(c, "OK");
    }
    return keel__srv_submit(c, s, cs, argc, RUN_WATCH, NULL);
}

int keel__srv_cmd_unwatch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *cs = keel__srv_state(c);
    if (cs != NULL)
        keel__srv_watch_clear(cs);
    return keel__srv_simple(c, "OK");
}

/* KEEL.TXN nwatch key ver ... ncmds argc args ... (the queued data commands) into s->argv,
 * numbers in s->buf. */
static int build_txn(server_t *s, client_state_t *cs, size_t *argc_out)
{
    size_t n = 3 + 2 * cs->nwatch, ndata = 0;
    for (pending_reply_t *q = cs->queued_head; q; q = q->next)
        if (is_data(q)) {
            n += 1 + q->argc;
            ndata++;
        }
    int rc = keel__srv_ensure_argv(s, n);
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
    PUT_NUM(ndata);
    for (pending_reply_t *q = cs->queued_head; q; q = q->next) {
        if (!is_data(q))
            continue;
        PUT_NUM(q->argc);
        for (size_t i = 0; i < q->argc; i++)
            PUT_STR(q->argv[i], q->lens[i]);
    }
#undef PUT_NUM
#undef PUT_STR
    *argc_out = k;
    return 0;
}

int keel__srv_cmd_exec(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL || !cs->in_multi)
        return keel__srv_error(c, "ERR EXEC without MULTI");
    int rc;
    if (cs->multi_dirty) {
        rc = keel__srv_error(c, "EXECABORT Transaction discarded because of previous errors.");
    } else {
        size_t n;
        pending_reply_t *queued = NULL; /* handed to the reply when some are not data */
        for (pending_reply_t *q = cs->queued_head; q && queued == NULL; q = q->next)
            if (!is_data(q) || cs->resp3) /* RESP3: each reply is rendered by its command */
                queued = cs->queued_head;
        rc = build_txn(s, cs, &n);
        if (rc == 0 && queued != NULL)
            cs->queued_head = cs->queued_tail = NULL; /* argv points into them until sent */
        rc = rc == 0 ? keel__srv_submit_exec(c, s, cs, n, queued) : keel__srv_oom(c);
    }
    keel__srv_multi_reset(cs); /* the node copied the entry; the queued copies can go */
    keel__srv_watch_clear(cs);
    return rc;
}

/* Runs one queued connection command with its reply going to out. */
static int run_queued(keel_resp_client_t *c, const pending_reply_t *q, keel_buf_t *out)
{
    keel_resp_arg_t *args = malloc(q->argc * sizeof(*args));
    if (args == NULL)
        return keel_resp_write_error(out, "ERR out of memory");
    for (size_t i = 0; i < q->argc; i++)
        args[i] = (keel_resp_arg_t){.ptr = q->argv[i], .len = q->lens[i]};
    keel_resp_client_set_out(c, out);
    int rc = keel__srv_run_row(c, q->row, q->argc, args);
    keel_resp_client_set_out(c, NULL);
    free(args);
    return rc;
}

/*
 * EXEC's entry committed with `resp` (the data commands' replies, *-1 or an error):
 * EXEC's reply holds every queued command's reply in order, the connection commands
 * run now in their places. Nothing runs if a watched key changed or the client left.
 */
int keel__srv_exec_finish(pending_reply_t *pr, keel_buf_t *out, const uint8_t *resp, size_t len)
{
    keel_resp_config_t cfg = keel_resp_config_default();
    keel_resp_value_t *v = NULL;
    size_t used;
    keel_errmsg_t m = {{0}};
    if (keel_resp_parse_reply(&cfg, resp, len, &v, &used, &m) != 0 || v->type != KEEL_RESP_ARRAY ||
        pr->cs->closed) {
        keel_resp_value_free(v);
        /* *-1, an error, or nobody to run for */
        return keel__srv_reply(pr->resp3, KEEL_RESP3_PLAIN, out, resp, len);
    }
    keel_buf_t one;
    keel_buf_init(&one, 0);
    size_t n = 0, k = 0;
    for (pending_reply_t *q = pr->exec_queued; q; q = q->next)
        n++;
    int rc = keel_resp_write_array_header(out, n);
    /* A queued command can close the connection (a PUBLISH to a channel it subscribed to
       in the same transaction, past its output limit): nothing more runs for it then. */
    for (pending_reply_t *q = pr->exec_queued; q && rc == 0 && !pr->cs->closed; q = q->next) {
        if (!is_data(q))
            rc = run_queued(pr->client, q, out);
        else if (k < v->elems_len && !pr->resp3)
            rc = keel_resp_write_value(out, &v->elems[k++]);
        else if (k < v->elems_len) { /* rendered as its own command's reply */
            keel_buf_reset(&one);
            rc = keel_resp_write_value(&one, &v->elems[k++]);
            if (rc == 0)
                rc = keel__srv_reply(1, keel__srv_resp3_shape(q->argc, q->argv, q->lens), out,
                                     keel_buf_rptr(&one), keel_buf_unread(&one));
        } else
            rc = keel_resp_write_error(out, "ERR keel: transaction reply too short");
    }
    assert(rc != 0 || pr->cs->closed || k == v->elems_len);
    keel_buf_free(&one);
    keel_resp_value_free(v);
    return rc;
}
