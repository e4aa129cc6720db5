/* http_client.h - HTTP/1.1 client on libuv: per host:port keep-alive pools, deadlines, clear
 * errors. */
#ifndef KEEL_RUNTIME_HTTP_CLIENT_H
#define KEEL_RUNTIME_HTTP_CLIENT_H

#include "base/err.h"
#include "base/ktime.h"
#include "proto/http.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/*
 * One pool per "host:port" (numeric address, or localhost). A request takes
 * the most recently used idle connection of its pool, else opens a new one
 * while the pool has fewer than conns_per_host_max, else waits in the pool's
 * FIFO queue (at most queue_per_host_max, then KEEL_EBUSY). After a response
 * that allows keep-alive the connection returns to the idle list if it holds
 * fewer than idle_per_host_max, else it is closed; idle connections are closed
 * after idle_timeout_ms, or as soon as the server closes them.
 *
 * Each request has one deadline (timeout_ms) covering queueing, connecting,
 * writing and reading. The callback runs exactly once with:
 *   0                  resp is the parsed response (valid during the callback)
 *   KEEL_ECONNREFUSED  nothing listens there
 *   KEEL_ETIMEDOUT     the deadline passed (the connection is closed)
 *   KEEL_ECONNRESET    the connection broke or closed before a whole response
 *   KEEL_EPROTO        the response was malformed
 *   KEEL_ETOOBIG       the response broke a limit (headers or body size)
 *   KEEL_ECANCELED     the client was closed first
 * A request that fails on a reused connection before any response byte
 * arrived (the server closed it while idle) is retried once on a fresh
 * connection when its method is idempotent (RFC 9110 §9.2.2).
 */
typedef struct keel_http_client_config {
    keel_http_limits_t limits; /* for responses */
    size_t conns_per_host_max; /* default 64 */
    size_t idle_per_host_max;  /* default 16 */
    size_t queue_per_host_max; /* default 1024 */
    size_t hosts_max;          /* default 256 pools */
    keel_ms_t idle_timeout_ms; /* default 30000 */
} keel_http_client_config_t;

keel_http_client_config_t keel_http_client_config_default(void);
int keel_http_client_config_validate(const keel_http_client_config_t *cfg, keel_errmsg_t *msg);

typedef struct keel_http_client_request {
    int method;            /* enum http_method */
    const char *host_port; /* "127.0.0.1:8080"; also sent as Host */
    const char *target;    /* "/path?query" */
    const keel_http_header_t *headers;
    size_t headers_count;
    const void *body; /* copied */
    size_t body_len;
    keel_ms_t timeout_ms; /* > 0 */
} keel_http_client_request_t;

typedef void (*keel_http_client_cb)(int err, const keel_http_msg_t *resp, void *data);

typedef struct keel_http_client_stats {
    uint64_t requests;
    uint64_t connects; /* connections opened */
    uint64_t reuses;   /* requests sent on a pooled connection */
    uint64_t retries;  /* stale pooled connection retried */
    uint64_t failures; /* callbacks with err != 0 */
} keel_http_client_stats_t;

typedef struct keel__http_pool keel__http_pool_t;
typedef struct keel__http_call keel__http_call_t;

typedef struct keel_http_client {
    keel_loop_t *loop;
    keel_http_client_config_t cfg;
    keel__http_pool_t *pools; /* linked list, at most hosts_max */
    size_t pools_count;
    keel__http_call_t *calls; /* every call object, in use or free */
    keel__http_call_t *free_calls;
    keel_timer_t sweep;
    int handles_open;
    bool closing;
    uint64_t next_call_id;
    void (*done)(struct keel_http_client *cli, void *data);
    void *done_data;
    keel_http_client_stats_t stats;
} keel_http_client_t;

int keel_http_client_init(keel_http_client_t *cli, keel_loop_t *loop,
                          const keel_http_client_config_t *cfg, keel_errmsg_t *msg);
/* 0: cb will run exactly once, later, from the loop (or from keel_http_client_cancel()), and
 * *call_id (if non-NULL) names the request for cancel. Negative: cb will not run
 * (KEEL_EINVAL bad address, KEEL_EBUSY queue full, KEEL_ENOMEM, KEEL_ECLOSED after close). */
int keel_http_client_request(keel_http_client_t *cli, const keel_http_client_request_t *req,
                             keel_http_client_cb cb, void *data, uint64_t *call_id);
/* Ends a request now: its callback runs before this returns, with KEEL_ECANCELED; a connection
 * it was using is closed. KEEL_ENOTFOUND if it already finished (ids are never reused). */
int keel_http_client_cancel(keel_http_client_t *cli, uint64_t call_id);
/* Fails pending requests with KEEL_ECANCELED, closes every connection; done (may be NULL) runs
 * once all handles are closed and memory is freed. */
void keel_http_client_close(keel_http_client_t *cli,
                            void (*done)(keel_http_client_t *cli, void *data), void *data);
/* Connections open (busy or idle) to host_port; 0 when no pool exists. */
size_t keel_http_client_conns(const keel_http_client_t *cli, const char *host_port);

#endif
