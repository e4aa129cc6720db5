/* xblock.c - XREAD and XREADGROUP with BLOCK: a connection waits for entries, on any node. */
#include "server/server_int.h"

#include "base/log.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * A blocked read waits on the node that took it, leader or follower, with nothing of
 * Raft's held: it is a record in s->xq and a reply slot that stops the connection's
 * later commands (keel_resp_client_defer_barrier, as Redis blocks the client). Each time
 * this node applies entries (on_applied) every blocked read looks at the state again:
 *
 *   XREAD       is a read of this node's state: '$' ids were replaced by the streams' last
 *               ids when it arrived (core's keel_kv_xread_resolve), so asking again answers
 *               exactly the entries appended since; a non-nil answer is sent and the wait
 *               ends.
 *   XREADGROUP  changes the group (PEL, last delivered id): it is a write. It waits while
 *               keel_kv_xreadgroup_ready says applying it would answer nil, then goes through
 *               the log like any write (a follower forwards it); if another consumer took
 *               the entries first its answer is nil, and it waits again.
 *
 * A timer sweeps deadlines and connections that went away every XBLOCK_TICK_MS while any
 * read is blocked: a deadline answers nil (*-1) like Redis, precise to the tick. A read
 * blocked on a follower wakes when that follower applies the append: within milliseconds
 * of the leader's commit, with no extra round trip.
 */
#define XBLOCK_TICK_MS 5u
/* Blocked reads per node; past it BLOCK answers at once (as a non-blocking read). */
#define XBLOCKED_MAX 100000u

struct xblocked {
    keel_list_t link; /* s->xq.list */
    server_t *srv;
    keel_resp_deferred_t *slot;
    int group;            /* XREADGROUP */
    int inflight;         /* XREADGROUP: its write is in the log */
    int resp3;            /* the connection said HELLO 3 */
    uint64_t deadline_ms; /* 0: BLOCK 0, no deadline */
    keel_buf_t entry;     /* XREAD: the resolved read, as an entry */
    size_t argc;
    const uint8_t **argv; /* XREADGROUP: an owned copy (after this struct) */
    size_t *lens;
};

static const uint8_t NIL_ARRAY[] = "*-1\r\n";

static int is_nil_array(const uint8_t *p, size_t n)
{
    return n == sizeof(NIL_ARRAY) - 1 && memcmp(p, NIL_ARRAY, n) == 0;
}

static void xb_free(xblocked_t *b)
{
    keel__waitq_remove(&b->srv->xq, &b->link);
    keel_buf_free(&b->entry);
    free(b);
}

/* Answers the blocked read with bytes (already RESP) and ends it. */
static void xb_finish(xblocked_t *b, const uint8_t *p, size_t n)
{
    int rc = 0;
    if (!keel_resp_deferred_orphaned(b->slot))
        rc = keel__srv_reply(b->resp3, KEEL_RESP3_KEYED, keel_resp_deferred_out(b->slot), p, n);
    keel_resp_deferred_done(b->slot, rc);
    xb_free(b);
}

static void xb_submit(xblocked_t *b);

static void on_written(void *ctx, int status, const uint8_t *resp, size_t len)
{
    xblocked_t *b = ctx;
    server_t *s = b->srv;
    b->inflight = 0;
    if (s->xq.closing || keel_resp_deferred_orphaned(b->slot)) {
        keel_resp_deferred_done(b->slot, 0);
        xb_free(b);
        return;
    }
    if (status == 0 && is_nil_array(resp, len) &&
        (b->deadline_ms == 0 || keel_node_read_now_ms(s->node) < b->deadline_ms))
        return; /* another consumer was first: wait again */
    if (status == 0) {
        xb_finish(b, resp, len);
        return;
    }
    /* the texts conn.c gives a write the node could not answer */
    const char *text = keel__srv_outcome_error(status, 0);
    if (text == NULL)
        text = "ERR keel: request refused";
    int rc = keel_resp_write_error(keel_resp_deferred_out(b->slot), text);
    keel_resp_deferred_done(b->slot, rc);
    xb_free(b);
}

static void xb_submit(xblocked_t *b)
{
    server_t *s = b->srv;
    b->inflight = 1;
    int rc = keel_node_write(s->node, (int)b->argc, b->argv, b->lens, on_written, b);
    if (rc != 0)
        on_written(b, rc, NULL, 0);
}

/* Looks at the state again: 1 if the read was answered (or sent to the log) and b is gone
 * or in flight. A read whose client has left is dropped first: served, an XREADGROUP would
 * hand entries to a consumer nobody runs (they would wait in the PEL for a claim), and
 * applies come more often than the tick that sweeps departed clients (Redis unblocks a
 * client when it disconnects). */
static int xb_try(xblocked_t *b)
{
    server_t *s = b->srv;
    keel_kv_t *kv = &s->kv.kv;
    if (keel_resp_deferred_orphaned(b->slot)) {
        keel_resp_deferred_done(b->slot, 0);
        xb_free(b);
        return 1;
    }
    if (b->group) {
        if (!keel_kv_xreadgroup_ready(kv, keel_node_read_now_ms(s->node), (int)b->argc, b->argv,
                                      b->lens))
            return 0;
        xb_submit(b);
        return 1;
    }
    keel_buf_reset(&s->buf);
    int rc = keel_kv_read_entry(kv, keel_node_read_now_ms(s->node), keel_buf_rptr(&b->entry),
                                keel_buf_unread(&b->entry), &s->buf);
    if (rc == 0 && is_nil_array(keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf)))
        return 0;
    if (rc != 0) {
        keel_buf_reset(&s->buf);
        keel_resp_write_error(&s->buf, KEEL_SRV_ERR_OOM);
    }
    xb_finish(b, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf));
    return 1;
}

void keel__srv_xblock_on_applied(server_t *s)
{
    if (s->node == NULL)
        return;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->xq.list)
    {
        xblocked_t *b = KEEL_LIST_ENTRY(it, xblocked_t, link);
        if (!b->inflight)
            xb_try(b);
    }
}

static void on_tick(server_t *s)
{
    uint64_t now = s->node ? keel_node_read_now_ms(s->node) : 0;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->xq.list)
    {
        xblocked_t *b = KEEL_LIST_ENTRY(it, xblocked_t, link);
        if (b->inflight)
            continue;
        if (keel_resp_deferred_orphaned(b->slot)) {
            keel_resp_deferred_done(b->slot, 0);
            xb_free(b);
        } else if (b->deadline_ms != 0 && now >= b->deadline_ms) {
            xb_finish(b, NIL_ARRAY, sizeof(NIL_ARRAY) - 1);
        } else if (b->group && s->node != NULL) {
            xb_try(b); /* an entry KEEL.XNACK returned may have come due with no apply */
        }
    }
}

/* A blocked read of the command in s->argv: XREADGROUP keeps a copy of it, XREAD its
 * resolved form (keel_kv_xread_resolve). 0 or KEEL_ENOMEM. */
static int xb_new(server_t *s, int group, int64_t ms, size_t argc, xblocked_t **out)
{
    size_t bytes = sizeof(xblocked_t);
    if (group) {
        bytes += argc * (sizeof(uint8_t *) + sizeof(size_t));
        for (size_t i = 0; i < argc; i++)
            bytes += s->lens[i];
    }
    xblocked_t *b = calloc(1, bytes);
    if (b == NULL)
        return KEEL_ENOMEM;
    b->srv = s;
    b->group = group;
    b->deadline_ms = ms == 0 ? 0 : keel_node_read_now_ms(s->node) + (uint64_t)ms;
    keel_buf_init(&b->entry, 0);
    keel_list_init(&b->link);
    if (group) {
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
    } else if (keel_kv_xread_resolve(&s->kv.kv, (int)argc, s->argv, s->lens, &b->entry) != 0) {
        keel_buf_free(&b->entry);
        free(b);
        return KEEL_ENOMEM;
    }
    *out = b;
    return 0;
}

/*
 * The handler of XREAD and XREADGROUP. Without BLOCK, inside MULTI (Redis: BLOCK there
 * does not block), or past XBLOCKED_MAX, they are ordinary data commands.
 */
int keel__srv_cmd_xblock(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    int64_t ms;
    int kind = keel_kv_block_ms((int)argc, s->argv, s->lens, &ms);
    client_state_t *cs = keel__srv_state(c);
    if (kind == 0 || cs == NULL || cs->in_multi || s->node == NULL || s->xq.n >= XBLOCKED_MAX)
        return keel__srv_cmd_data(c, argc, argv);
    xblocked_t *b;
    if (xb_new(s, kind == 2, ms, argc, &b) != 0)
        return keel__srv_oom(c);
    b->resp3 = cs->resp3;
    b->slot = keel_resp_client_defer_barrier(c);
    if (b->slot == NULL) {
        keel_buf_free(&b->entry);
        free(b);
        return keel__srv_oom(c);
    }
    keel__waitq_add(&s->xq, &b->link, 0);
    xb_try(b); /* what is there now is answered at once */
    return 0;
}

int keel__srv_xblock_init(server_t *s)
{
    return keel__waitq_init(s, &s->xq, XBLOCK_TICK_MS, on_tick);
}

/* Shutdown: every waiting read ends (its connection is closing); reads in the log end when
 * the node answers them. */
void keel__srv_xblock_close(server_t *s)
{
    s->xq.closing = 1;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->xq.list)
    {
        xblocked_t *b = KEEL_LIST_ENTRY(it, xblocked_t, link);
        if (!b->inflight) {
            keel_resp_deferred_done(b->slot, 0);
            xb_free(b);
        }
    }
    keel__waitq_close(&s->xq);
}
