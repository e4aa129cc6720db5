/* bulkhead.c - concurrency limit with a FIFO wait queue; connection-pool accounting. */
#include "core/bulkhead.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void keel_bulkhead_config_default(keel_bulkhead_config_t *cfg)
{
    cfg->concurrent_max = 25;
    cfg->queue_max = 100;
    cfg->wait_max_ms = 500;
}

int keel_bulkhead_config_validate(const keel_bulkhead_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->concurrent_max == 0 || cfg->concurrent_max > KEEL_BULKHEAD_CONCURRENT_MAX)
        return keel_errf(msg, KEEL_EINVAL, "concurrent_max must be in 1..%u",
                         KEEL_BULKHEAD_CONCURRENT_MAX);
    if (cfg->queue_max > KEEL_BULKHEAD_QUEUE_MAX)
        return keel_errf(msg, KEEL_EINVAL, "queue_max must be <= %u", KEEL_BULKHEAD_QUEUE_MAX);
    if (cfg->wait_max_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "wait_max_ms must be >= 0");
    return 0;
}

int keel_bulkhead_init(keel_bulkhead_t *b, const keel_bulkhead_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_bulkhead_config_validate(cfg, msg);
    if (err)
        return err;
    memset(b, 0, sizeof(*b));
    b->cfg = *cfg;
    b->next_ticket = 1;
    if (cfg->queue_max > 0) {
        b->queue = calloc(cfg->queue_max, sizeof(*b->queue));
        if (!b->queue)
            return keel_errf(msg, KEEL_ENOMEM, "bulkhead queue of %u", cfg->queue_max);
    }
    return 0;
}

void keel_bulkhead_free(keel_bulkhead_t *b)
{
    free(b->queue);
    b->queue = NULL;
}

/* Drops canceled waiters from the head of the queue. */
static void skip_canceled(keel_bulkhead_t *b)
{
    while (b->len > 0 && b->queue[b->head].canceled) {
        b->head = (b->head + 1) % b->cfg.queue_max;
        b->len--;
    }
}

int keel_bulkhead_acquire(keel_bulkhead_t *b, keel_ms_t now_ms, uint64_t *ticket)
{
    *ticket = b->next_ticket++;
    if (b->live == 0 && b->active < b->cfg.concurrent_max) {
        b->active++;
        b->admitted++;
        return 0;
    }
    skip_canceled(b);
    if (b->len == b->cfg.queue_max || b->cfg.wait_max_ms == 0) {
        b->rejected++;
        return KEEL_EFULL;
    }
    keel__bulkhead_waiter_t *w = &b->queue[(b->head + b->len) % b->cfg.queue_max];
    w->ticket = *ticket;
    w->deadline_ms = now_ms + b->cfg.wait_max_ms;
    w->canceled = false;
    b->len++;
    b->live++;
    return KEEL_EAGAIN;
}

void keel_bulkhead_release(keel_bulkhead_t *b)
{
    assert(b->active > 0);
    b->active--;
}

int keel_bulkhead_cancel(keel_bulkhead_t *b, uint64_t ticket)
{
    for (uint32_t k = 0; k < b->len; k++) {
        keel__bulkhead_waiter_t *w = &b->queue[(b->head + k) % b->cfg.queue_max];
        if (w->ticket == ticket && !w->canceled) {
            w->canceled = true;
            b->live--;
            skip_canceled(b);
            return 0;
        }
    }
    return KEEL_ENOTFOUND;
}

int keel_bulkhead_poll(keel_bulkhead_t *b, keel_ms_t now_ms, keel_bulkhead_event_t *ev)
{
    skip_canceled(b);
    if (b->len == 0)
        return 0;
    keel__bulkhead_waiter_t *w = &b->queue[b->head];
    if (now_ms >= w->deadline_ms) {
        ev->kind = KEEL_BULKHEAD_TIMED_OUT;
        b->timed_out++;
    } else if (b->active < b->cfg.concurrent_max) {
        ev->kind = KEEL_BULKHEAD_ADMITTED;
        b->active++;
        b->admitted++;
    } else {
        return 0;
    }
    ev->ticket = w->ticket;
    b->head = (b->head + 1) % b->cfg.queue_max;
    b->len--;
    b->live--;
    return 1;
}

keel_ms_t keel_bulkhead_next_deadline_ms(const keel_bulkhead_t *b)
{
    /* deadlines grow along the queue (constant wait_max_ms), so the first live one is the min */
    for (uint32_t k = 0; k < b->len; k++) {
        const keel__bulkhead_waiter_t *w = &b->queue[(b->head + k) % b->cfg.queue_max];
        if (!w->canceled)
            return w->deadline_ms;
    }
    return KEEL_MS_NEVER;
}

/* ---- connection pool -------------------------------------------------------- */

void keel_connpool_config_default(keel_connpool_config_t *cfg)
{
    cfg->connections_max = 1024;
    cfg->pending_max = 1024;
    cfg->requests_per_connection_max = 0;
}

int keel_connpool_config_validate(const keel_connpool_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->connections_max == 0 || cfg->connections_max > KEEL_CONNPOOL_CONNECTIONS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "connections_max must be in 1..%u",
                         KEEL_CONNPOOL_CONNECTIONS_MAX);
    return 0;
}

int keel_connpool_init(keel_connpool_t *p, const keel_connpool_config_t *cfg, keel_errmsg_t *msg)
{
    int err = keel_connpool_config_validate(cfg, msg);
    if (err)
        return err;
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    p->conns = calloc(cfg->connections_max, sizeof(*p->conns));
    if (!p->conns)
        return keel_errf(msg, KEEL_ENOMEM, "pool of %u connections", cfg->connections_max);
    return 0;
}

void keel_connpool_free(keel_connpool_t *p)
{
    free(p->conns);
    p->conns = NULL;
}

static void fx_clear(keel_connpool_effects_t *fx)
{
    fx->dispatch_on = fx->open = fx->close = -1;
    fx->fail_pending = 0;
}

static int32_t find_state(const keel_connpool_t *p, keel__conn_state_t s)
{
    for (uint32_t i = 0; i < p->cfg.connections_max; i++)
        if (p->conns[i].state == s)
            return (int32_t)i;
    return -1;
}

/* Opens a connection if pending requests outnumber connections on the way. */
static void maybe_open(keel_connpool_t *p, keel_connpool_effects_t *fx)
{
    if (p->pending <= p->connecting_n || p->open_n >= p->cfg.connections_max)
        return;
    int32_t c = find_state(p, KEEL__CONN_FREE);
    assert(c >= 0);
    p->conns[c].state = KEEL__CONN_CONNECTING;
    p->conns[c].served = 0;
    p->open_n++;
    p->connecting_n++;
    fx->open = c;
}

int keel_connpool_request(keel_connpool_t *p, keel_connpool_effects_t *fx)
{
    fx_clear(fx);
    if (p->idle_n > 0) {
        int32_t c = find_state(p, KEEL__CONN_IDLE);
        assert(c >= 0);
        p->conns[c].state = KEEL__CONN_BUSY;
        p->idle_n--;
        fx->dispatch_on = c;
        return 0;
    }
    if (p->pending >= p->cfg.pending_max) {
        p->overflows++;
        return KEEL_EFULL;
    }
    p->pending++;
    maybe_open(p, fx);
    return 0;
}

/* Connection c is usable: give it the oldest pending request or park it idle. */
static void hand_out(keel_connpool_t *p, int32_t c, keel_connpool_effects_t *fx)
{
    if (p->pending > 0) {
        p->pending--;
        p->conns[c].state = KEEL__CONN_BUSY;
        fx->dispatch_on = c;
    } else {
        p->conns[c].state = KEEL__CONN_IDLE;
        p->idle_n++;
    }
}

void keel_connpool_connected(keel_connpool_t *p, int32_t c, keel_connpool_effects_t *fx)
{
    fx_clear(fx);
    assert(p->conns[c].state == KEEL__CONN_CONNECTING);
    p->connecting_n--;
    hand_out(p, c, fx);
}

static void release_slot(keel_connpool_t *p, int32_t c)
{
    p->conns[c].state = KEEL__CONN_FREE;
    p->open_n--;
}

void keel_connpool_connect_failed(keel_connpool_t *p, int32_t c, keel_connpool_effects_t *fx)
{
    fx_clear(fx);
    assert(p->conns[c].state == KEEL__CONN_CONNECTING);
    p->connecting_n--;
    release_slot(p, c);
    /* the request this connection was opened for fails (Envoy: 503 connect failure) */
    if (p->pending > p->connecting_n) {
        p->pending--;
        fx->fail_pending = 1;
    }
}

void keel_connpool_done(keel_connpool_t *p, int32_t c, bool reusable, keel_connpool_effects_t *fx)
{
    fx_clear(fx);
    assert(p->conns[c].state == KEEL__CONN_BUSY);
    uint32_t served = ++p->conns[c].served;
    uint32_t limit = p->cfg.requests_per_connection_max;
    if (!reusable || (limit > 0 && served >= limit)) {
        release_slot(p, c);
        p->retired += reusable;
        fx->close = c;
        maybe_open(p, fx);
        return;
    }
    hand_out(p, c, fx);
}

void keel_connpool_closed(keel_connpool_t *p, int32_t c)
{
    assert(p->conns[c].state == KEEL__CONN_IDLE);
    p->idle_n--;
    release_slot(p, c);
}

void keel_connpool_cancel_pending(keel_connpool_t *p)
{
    assert(p->pending > 0);
    p->pending--;
}
