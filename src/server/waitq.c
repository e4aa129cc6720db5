/* waitq.c - a node's queue of waiting connections (blocked reads, blocking pops, WAITs) and
 * the timer that sweeps their deadlines while any waits. */
#include "server/server_int.h"

static void on_timer(keel_timer_t *t, void *data)
{
    (void)t;
    waitq_t *q = data;
    q->tick(q->srv);
    if (q->n == 0)
        keel_timer_stop(&q->timer);
}

int keel__waitq_init(server_t *s, waitq_t *q, unsigned tick_ms, void (*tick)(server_t *s))
{
    keel_list_init(&q->list);
    q->n = 0;
    q->srv = s;
    q->tick_ms = tick_ms;
    q->tick = tick;
    q->closing = 0;
    int rc = keel_timer_init(&s->loop, &q->timer);
    q->timer_inited = rc == 0;
    return rc;
}

void keel__waitq_add(waitq_t *q, keel_list_t *link, int at_tail)
{
    if (at_tail)
        keel_list_insert_tail(&q->list, link);
    else
        keel_list_insert_head(&q->list, link);
    if (q->n++ == 0 && q->timer_inited)
        keel_timer_start(&q->timer, q->tick_ms, q->tick_ms, on_timer, q);
}

void keel__waitq_remove(waitq_t *q, keel_list_t *link)
{
    keel_list_remove(link);
    q->n--;
}

void keel__waitq_close(waitq_t *q)
{
    if (q->timer_inited)
        keel_timer_close(&q->timer, NULL);
    q->timer_inited = 0;
}
