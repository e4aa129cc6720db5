/* test_bulkhead.c - concurrency cap, FIFO wait queue with max wait, connection-pool limits. */
#include "base/rand.h"
#include "core/bulkhead.h"
#include "ktest.h"

static void init(keel_bulkhead_t *b, uint32_t conc, uint32_t queue, keel_ms_t wait_ms)
{
    keel_bulkhead_config_t c = {conc, queue, wait_ms};
    keel_errmsg_t m;
    if (keel_bulkhead_init(b, &c, &m))
        KT_FAIL("init: %s", m.text);
}

static void admits_up_to_concurrent_max_then_queues_then_rejects(void)
{
    keel_bulkhead_t b;
    init(&b, 2, 2, 100);
    uint64_t t[6];
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t[0]), 0);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t[1]), 0);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t[2]), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 1, &t[3]), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 1, &t[4]), KEEL_EFULL);
    KT_EQ_INT(b.rejected, 1);
    keel_bulkhead_event_t ev;
    KT_EQ_INT(keel_bulkhead_poll(&b, 5, &ev), 0); /* no slot free yet */
    keel_bulkhead_release(&b);
    /* a newcomer does not jump the queue even though a slot is free */
    KT_EQ_INT(keel_bulkhead_acquire(&b, 5, &t[5]), KEEL_EFULL);
    KT_EQ_INT(keel_bulkhead_poll(&b, 5, &ev), 1);
    KT_EQ_INT(ev.kind, KEEL_BULKHEAD_ADMITTED);
    KT_EQ_U64(ev.ticket, t[2]); /* FIFO */
    KT_EQ_INT(keel_bulkhead_poll(&b, 5, &ev), 0);
    keel_bulkhead_release(&b);
    KT_EQ_INT(keel_bulkhead_poll(&b, 6, &ev), 1);
    KT_EQ_U64(ev.ticket, t[3]);
    KT_EQ_INT(b.active, 2);
    keel_bulkhead_free(&b);
}

static void waiters_time_out_exactly_at_wait_max(void)
{
    keel_bulkhead_t b;
    init(&b, 1, 4, 100);
    uint64_t run, w1, w2;
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &run), 0);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 10, &w1), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 30, &w2), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_next_deadline_ms(&b), 110);
    keel_bulkhead_event_t ev;
    KT_EQ_INT(keel_bulkhead_poll(&b, 109, &ev), 0);
    KT_EQ_INT(keel_bulkhead_poll(&b, 110, &ev), 1);
    KT_EQ_INT(ev.kind, KEEL_BULKHEAD_TIMED_OUT);
    KT_EQ_U64(ev.ticket, w1);
    KT_EQ_INT(keel_bulkhead_next_deadline_ms(&b), 130);
    keel_bulkhead_release(&b); /* a slot frees at 129: w2 gets it just in time */
    KT_EQ_INT(keel_bulkhead_poll(&b, 129, &ev), 1);
    KT_EQ_INT(ev.kind, KEEL_BULKHEAD_ADMITTED);
    KT_EQ_U64(ev.ticket, w2);
    KT_EQ_INT(keel_bulkhead_next_deadline_ms(&b), KEEL_MS_NEVER);
    KT_EQ_INT(b.timed_out, 1);
    keel_bulkhead_free(&b);
}

static void canceled_waiters_leave_no_trace(void)
{
    keel_bulkhead_t b;
    init(&b, 1, 2, 100);
    uint64_t run, w1, w2, w3;
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &run), 0);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &w1), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &w2), KEEL_EAGAIN);
    KT_EQ_INT(keel_bulkhead_cancel(&b, w1), 0);
    KT_EQ_INT(keel_bulkhead_cancel(&b, w1), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 1, &w3), KEEL_EAGAIN); /* room again */
    keel_bulkhead_release(&b);
    keel_bulkhead_event_t ev;
    KT_EQ_INT(keel_bulkhead_poll(&b, 2, &ev), 1);
    KT_EQ_U64(ev.ticket, w2);
    keel_bulkhead_free(&b);
}

static void zero_queue_rejects_immediately_when_busy(void)
{
    keel_bulkhead_t b;
    init(&b, 3, 0, 0);
    uint64_t t;
    for (int i = 0; i < 3; i++)
        KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t), 0);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t), KEEL_EFULL);
    keel_bulkhead_release(&b);
    KT_EQ_INT(keel_bulkhead_acquire(&b, 0, &t), 0);
    keel_bulkhead_free(&b);
}

/* Randomized: never more than concurrent_max running, never a wait beyond wait_max_ms. */
static void never_exceeds_its_limits_under_random_load(void)
{
    uint64_t seed = 2024;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    keel_bulkhead_t b;
    init(&b, 4, 8, 50);
    static keel_ms_t enq[100000];
    int running = 0;
    for (keel_ms_t now = 0; now < 20000; now++) {
        if (running > 0 && keel_rand_chance(&r, 0.3)) {
            keel_bulkhead_release(&b);
            running--;
        }
        if (keel_rand_chance(&r, 0.5)) {
            uint64_t t;
            int rc = keel_bulkhead_acquire(&b, now, &t);
            KT_CHECK(t < 100000);
            running += rc == 0;
            if (rc == KEEL_EAGAIN)
                enq[t] = now;
        }
        keel_bulkhead_event_t ev;
        while (keel_bulkhead_poll(&b, now, &ev)) {
            KT_CHECK(now - enq[ev.ticket] <= 50);
            if (ev.kind == KEEL_BULKHEAD_ADMITTED) {
                KT_CHECK(now - enq[ev.ticket] < 50);
                running++;
            }
        }
        KT_CHECK(running <= 4 && (uint32_t)running == b.active);
        KT_CHECK(b.len <= 8);
    }
    KT_CHECK(b.rejected > 0 && b.timed_out > 0);
    keel_bulkhead_free(&b);
}

static void pool_init(keel_connpool_t *p, uint32_t conns, uint32_t pending, uint32_t per_conn)
{
    keel_connpool_config_t c = {conns, pending, per_conn};
    keel_errmsg_t m;
    if (keel_connpool_init(p, &c, &m))
        KT_FAIL("init: %s", m.text);
}

static void pool_opens_up_to_connections_max_and_overflows_past_pending_max(void)
{
    keel_connpool_t p;
    pool_init(&p, 2, 3, 0);
    keel_connpool_effects_t fx;
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0);
    KT_EQ_INT(fx.open, 0);
    KT_EQ_INT(fx.dispatch_on, -1);
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0);
    KT_EQ_INT(fx.open, 1);
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0); /* pending 3, no more connections */
    KT_EQ_INT(fx.open, -1);
    KT_EQ_INT(keel_connpool_request(&p, &fx), KEEL_EFULL);
    KT_EQ_U64(p.overflows, 1);
    keel_connpool_connected(&p, 0, &fx);
    KT_EQ_INT(fx.dispatch_on, 0);
    KT_EQ_INT(p.pending, 2);
    keel_connpool_connect_failed(&p, 1, &fx);
    KT_EQ_INT(fx.fail_pending, 1);
    KT_EQ_INT(p.pending, 1);
    keel_connpool_done(&p, 0, true, &fx); /* the waiting request takes connection 0 */
    KT_EQ_INT(fx.dispatch_on, 0);
    KT_EQ_INT(fx.close, -1);
    KT_EQ_INT(p.pending, 0);
    keel_connpool_done(&p, 0, true, &fx);
    KT_EQ_INT(fx.dispatch_on, -1);
    KT_EQ_INT(p.idle_n, 1);
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0); /* reuses the idle connection */
    KT_EQ_INT(fx.dispatch_on, 0);
    KT_EQ_INT(fx.open, -1);
    keel_connpool_free(&p);
}

static void pool_retires_a_connection_after_requests_per_connection_max(void)
{
    keel_connpool_t p;
    pool_init(&p, 1, 10, 3);
    keel_connpool_effects_t fx;
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0); /* request 1 */
    KT_EQ_INT(fx.open, 0);
    keel_connpool_connected(&p, 0, &fx);
    KT_EQ_INT(fx.dispatch_on, 0);
    for (int i = 2; i <= 3; i++) { /* requests 2 and 3 wait, then follow on connection 0 */
        KT_EQ_INT(keel_connpool_request(&p, &fx), 0);
        KT_EQ_INT(fx.dispatch_on, -1);
        KT_EQ_INT(p.pending, 1);
        keel_connpool_done(&p, 0, true, &fx);
        KT_EQ_INT(fx.dispatch_on, 0);
        KT_EQ_INT(fx.close, -1);
    }
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0); /* request 4 waits */
    keel_connpool_done(&p, 0, true, &fx);         /* request 3 done: 3 served, retire */
    KT_EQ_INT(fx.close, 0);
    KT_EQ_INT(fx.open, 0); /* and reconnect in the freed slot for request 4 */
    KT_EQ_INT(fx.dispatch_on, -1);
    KT_EQ_U64(p.retired, 1);
    keel_connpool_connected(&p, 0, &fx);
    KT_EQ_INT(fx.dispatch_on, 0);
    KT_EQ_INT(p.pending, 0);
    keel_connpool_done(&p, 0, true, &fx);
    KT_EQ_INT(fx.close, -1);
    KT_EQ_INT(p.idle_n, 1);
    /* a connection that broke is closed, not reused */
    KT_EQ_INT(keel_connpool_request(&p, &fx), 0);
    KT_EQ_INT(fx.dispatch_on, 0);
    keel_connpool_done(&p, 0, false, &fx);
    KT_EQ_INT(fx.close, 0);
    KT_EQ_INT(p.open_n, 0);
    KT_EQ_U64(p.retired, 1);
    keel_connpool_free(&p);
}

int main(void)
{
    KT_RUN(admits_up_to_concurrent_max_then_queues_then_rejects);
    KT_RUN(waiters_time_out_exactly_at_wait_max);
    KT_RUN(canceled_waiters_leave_no_trace);
    KT_RUN(zero_queue_rejects_immediately_when_busy);
    KT_RUN(never_exceeds_its_limits_under_random_load);
    KT_RUN(pool_opens_up_to_connections_max_and_overflows_past_pending_max);
    KT_RUN(pool_retires_a_connection_after_requests_per_connection_max);
    return kt_done();
}
