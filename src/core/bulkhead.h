/* bulkhead.h - concurrency limit with a bounded FIFO wait queue, and per-upstream connection-pool
 * limits. */
#ifndef KEEL_CORE_BULKHEAD_H
#define KEEL_CORE_BULKHEAD_H

#include "base/err.h"
#include "base/ktime.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Bulkhead (resilience4j SemaphoreBulkhead, maxConcurrentCalls and
 * maxWaitDuration): at most concurrent_max calls run at once; up to queue_max
 * more wait in FIFO order for at most wait_max_ms each; anything beyond is
 * rejected at once with KEEL_EFULL, so one slow dependency cannot take every
 * worker of the caller.
 *
 *   acquire ──slot free and nobody waiting──> RUNNING ──release──> (slot free)
 *      │
 *      ├─queue has room──> WAITING ──poll: slot free before deadline──> RUNNING
 *      │                      │  └──poll: deadline reached──> TIMED_OUT
 *      │                      └──cancel──> (gone)
 *      └─queue full──> KEEL_EFULL
 *
 * The core never calls back: after acquire/release/cancel, and when the time
 * keel_bulkhead_next_deadline_ms() names arrives, the driver calls
 * keel_bulkhead_poll() until it returns 0; each event admits or times out one
 * waiter by ticket. A waiter times out when now_ms >= enqueue time +
 * wait_max_ms (checked before admission, so the wait never exceeds the bound).
 *
 * Defaults: concurrent_max 25 (resilience4j), queue_max 100, wait_max_ms 500.
 * Memory: queue_max entries of 24 bytes, allocated at init.
 *
 * Connection pool limits (Istio DestinationRule connectionPool, i.e. Envoy
 * cluster circuit breakers): connections_max connections to one upstream
 * (tcp.maxConnections), pending_max requests waiting for a connection
 * (http.http1MaxPendingRequests; beyond it: overflow, KEEL_EFULL), and
 * requests_per_connection_max requests before a connection is retired
 * (http.maxRequestsPerConnection; 0 = unlimited). One request at a time per
 * connection (HTTP/1.1). The pool is an accountant: each call returns the
 * effects (dispatch on connection c, open connection c, close connection c,
 * fail one pending request) for the driver to carry out, in that order.
 * Defaults: connections_max 1024, pending_max 1024 (Envoy's defaults),
 * requests_per_connection_max 0.
 */

typedef struct keel_bulkhead_config {
    uint32_t concurrent_max;
    uint32_t queue_max;
    keel_ms_t wait_max_ms;
} keel_bulkhead_config_t;

typedef struct keel__bulkhead_waiter {
    uint64_t ticket;
    keel_ms_t deadline_ms;
    bool canceled;
} keel__bulkhead_waiter_t;

typedef struct keel_bulkhead {
    keel_bulkhead_config_t cfg;
    uint32_t active;
    keel__bulkhead_waiter_t *queue; /* ring of queue_max */
    uint32_t head, len, live;       /* live: waiters not canceled */
    uint64_t next_ticket;
    uint64_t admitted, rejected, timed_out;
} keel_bulkhead_t;

typedef enum keel_bulkhead_event_kind {
    KEEL_BULKHEAD_ADMITTED,
    KEEL_BULKHEAD_TIMED_OUT,
} keel_bulkhead_event_kind_t;

typedef struct keel_bulkhead_event {
    keel_bulkhead_event_kind_t kind;
    uint64_t ticket;
} keel_bulkhead_event_t;

#define KEEL_BULKHEAD_CONCURRENT_MAX 1000000u
#define KEEL_BULKHEAD_QUEUE_MAX 1000000u

void keel_bulkhead_config_default(keel_bulkhead_config_t *cfg);
int keel_bulkhead_config_validate(const keel_bulkhead_config_t *cfg, keel_errmsg_t *msg);
int keel_bulkhead_init(keel_bulkhead_t *b, const keel_bulkhead_config_t *cfg, keel_errmsg_t *msg);
void keel_bulkhead_free(keel_bulkhead_t *b);

/* 0: run now; KEEL_EAGAIN: queued, wait for the ticket's event; KEEL_EFULL: rejected. */
int keel_bulkhead_acquire(keel_bulkhead_t *b, keel_ms_t now_ms, uint64_t *ticket);
/* A running call finished. */
void keel_bulkhead_release(keel_bulkhead_t *b);
/* A waiter gave up; 0 or KEEL_ENOTFOUND. */
int keel_bulkhead_cancel(keel_bulkhead_t *b, uint64_t ticket);
/* 1 and *ev filled if a waiter was admitted or timed out, else 0. */
int keel_bulkhead_poll(keel_bulkhead_t *b, keel_ms_t now_ms, keel_bulkhead_event_t *ev);
/* Deadline of the oldest waiter, or KEEL_MS_NEVER. */
keel_ms_t keel_bulkhead_next_deadline_ms(const keel_bulkhead_t *b);

/* ---- connection pool -------------------------------------------------------- */

typedef struct keel_connpool_config {
    uint32_t connections_max;
    uint32_t pending_max;
    uint32_t requests_per_connection_max; /* 0: unlimited */
} keel_connpool_config_t;

typedef enum keel__conn_state {
    KEEL__CONN_FREE,
    KEEL__CONN_CONNECTING,
    KEEL__CONN_IDLE,
    KEEL__CONN_BUSY,
} keel__conn_state_t;

typedef struct keel__conn {
    keel__conn_state_t state;
    uint32_t served;
} keel__conn_t;

/* Effects of one pool call; -1 means none. Carry out in field order. */
typedef struct keel_connpool_effects {
    int32_t dispatch_on;  /* send the request (or the oldest pending one) on this connection */
    int32_t open;         /* start connecting this connection slot */
    int32_t close;        /* close this connection */
    int32_t fail_pending; /* 1: fail the oldest pending request */
} keel_connpool_effects_t;

typedef struct keel_connpool {
    keel_connpool_config_t cfg;
    keel__conn_t *conns;
    uint32_t open_n, connecting_n, idle_n; /* open_n counts every non-free slot */
    uint32_t pending;
    uint64_t overflows, retired;
} keel_connpool_t;

#define KEEL_CONNPOOL_CONNECTIONS_MAX 65536u

void keel_connpool_config_default(keel_connpool_config_t *cfg);
int keel_connpool_config_validate(const keel_connpool_config_t *cfg, keel_errmsg_t *msg);
int keel_connpool_init(keel_connpool_t *p, const keel_connpool_config_t *cfg, keel_errmsg_t *msg);
void keel_connpool_free(keel_connpool_t *p);

/* A new request: 0 with effects (dispatch now, or it is pending), or KEEL_EFULL (overflow). */
int keel_connpool_request(keel_connpool_t *p, keel_connpool_effects_t *fx);
/* Connection c finished connecting. */
void keel_connpool_connected(keel_connpool_t *p, int32_t c, keel_connpool_effects_t *fx);
/* Connection c could not be established. */
void keel_connpool_connect_failed(keel_connpool_t *p, int32_t c, keel_connpool_effects_t *fx);
/* The request on c ended; reusable is false if the connection must not be reused. */
void keel_connpool_done(keel_connpool_t *p, int32_t c, bool reusable, keel_connpool_effects_t *fx);
/* The peer closed idle connection c. */
void keel_connpool_closed(keel_connpool_t *p, int32_t c);
/* A pending request gave up before it got a connection. */
void keel_connpool_cancel_pending(keel_connpool_t *p);

#endif
