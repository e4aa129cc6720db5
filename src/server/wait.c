/* wait.c - WAIT numreplicas timeout, answered from Raft: how many others hold the last write. */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <stdlib.h>

/*
 * Redis's WAIT counts the replicas that acknowledged the connection's writes. In keel a
 * write is answered once it is committed (a majority of voters stored it) and applied here;
 * WAIT counts the other members (voters and learners, not this node) that hold the
 * connection's last write:
 *
 * - on the leader exactly, from Raft's match indexes;
 * - on a follower, from what commit proves: the write's majority, less one for this node
 *   (a lower bound: the follower cannot see the others' logs).
 *
 * The index waited for is the one this node had applied when the write was answered (the
 * write's own index or later), so the count may be low, never high. A connection that has
 * written nothing waits for index 0: every member. Like Redis, WAIT with a count not yet
 * reached blocks until it is or until the timeout (0: no timeout), checked as the node
 * applies and every WAIT_TICK_MS; inside MULTI it answers at once.
 */
#define WAIT_TICK_MS 10u
#define WAITERS_MAX 100000u /* blocked WAITs per node; past it WAIT answers at once */

struct waiter {
    keel_list_t link; /* s->waiters */
    keel_resp_deferred_t *slot;
    uint64_t index;
    int64_t want;
    uint64_t deadline_ms; /* 0: none */
};

static int64_t holders(server_t *s, uint64_t index)
{
    const keel_memberdir_t *d = keel_node_members(s->node);
    uint64_t self = keel_node_config(s->node)->id;
    int64_t n = 0;
    if (keel_node_is_leader(s->node)) {
        for (size_t i = 0; i < d->n; i++)
            if (d->m[i].id != self && keel_node_match(s->node, d->m[i].id) >= index)
                n++;
        return n;
    }
    size_t voters = 0;
    for (size_t i = 0; i < d->n; i++)
        voters += d->m[i].voter;
    return keel_node_applied(s->node) >= index && voters > 0 ? (int64_t)(voters / 2) : 0;
}

static void finish(server_t *s, waiter_t *w)
{
    int rc = 0;
    if (!keel_resp_deferred_orphaned(w->slot))
        rc = keel_resp_write_int(keel_resp_deferred_out(w->slot), holders(s, w->index));
    keel_resp_deferred_done(w->slot, rc);
    keel__waitq_remove(&s->wq, &w->link);
    free(w);
}

static void check(server_t *s, int tick)
{
    uint64_t now = s->node ? keel_node_read_now_ms(s->node) : 0;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->wq.list)
    {
        waiter_t *w = KEEL_LIST_ENTRY(it, waiter_t, link);
        if (s->node == NULL || keel_resp_deferred_orphaned(w->slot) ||
            holders(s, w->index) >= w->want || (tick && w->deadline_ms && now >= w->deadline_ms))
            finish(s, w);
    }
}

static void on_tick(server_t *s)
{
    check(s, 1);
}

void keel__srv_wait_on_applied(server_t *s)
{
    if (s->wq.n > 0)
        check(s, 0);
}

int keel__srv_cmd_wait(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    (void)argc;
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (cs == NULL || out == NULL)
        return KEEL_ENOMEM;
    int64_t want, timeout;
    if (keel_parse_i64(argv[1].ptr, argv[1].len, &want) != 0 ||
        keel_parse_i64(argv[2].ptr, argv[2].len, &timeout) != 0)
        return keel_resp_write_error(out, "ERR value is not an integer or out of range");
    if (timeout < 0)
        return keel_resp_write_error(out, "ERR timeout is negative");
    if (s->node == NULL)
        return keel_resp_write_int(out, 0);
    int64_t have = holders(s, cs->last_write_index);
    /* run by EXEC (its output set): at once, as Redis does inside MULTI */
    int in_exec = keel_resp_client_out_set(c) != NULL;
    if (have >= want || in_exec || s->wq.n >= WAITERS_MAX || !s->wq.timer_inited)
        return keel_resp_write_int(out, have);
    waiter_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return keel__srv_oom(c);
    w->slot = keel_resp_client_defer_barrier(c);
    if (w->slot == NULL) {
        free(w);
        return keel__srv_oom(c);
    }
    keel_list_init(&w->link);
    w->index = cs->last_write_index;
    w->want = want;
    w->deadline_ms = timeout == 0 ? 0 : keel_node_read_now_ms(s->node) + (uint64_t)timeout;
    keel__waitq_add(&s->wq, &w->link, 0);
    return 0;
}

int keel__srv_wait_init(server_t *s)
{
    return keel__waitq_init(s, &s->wq, WAIT_TICK_MS, on_tick);
}

void keel__srv_wait_close(server_t *s)
{
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->wq.list)
    {
        waiter_t *w = KEEL_LIST_ENTRY(it, waiter_t, link);
        keel_resp_deferred_done(w->slot, 0);
        keel__waitq_remove(&s->wq, &w->link);
        free(w);
    }
    keel__waitq_close(&s->wq);
}
