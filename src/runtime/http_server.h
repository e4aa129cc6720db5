/* http_server.h - HTTP/1.1 server on libuv: route table, keep-alive, pipelining, timeouts, drain.
 */
#ifndef KEEL_RUNTIME_HTTP_SERVER_H
#define KEEL_RUNTIME_HTTP_SERVER_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/list.h"
#include "proto/http.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/*
 * Model (after h2o's handler table and nginx's connection handling):
 *
 * - Routes are data: {method, path_prefix, handler, data}, matched in table
 *   order. A prefix "/api/" matches everything under it; a prefix without a
 *   trailing '/' matches that exact path or anything below it ("/echo",
 *   "/echo/x", not "/echoes"). HEAD matches GET routes (the body is dropped).
 *   No path match: 404; path matched but not the method: 405.
 * - One request per connection is handed to a handler at a time. Pipelined
 *   requests wait parsed-later in the connection's input buffer, so responses
 *   leave in request order; responses produced while one read is processed are
 *   written together (uv_try_write first, then one uv_write).
 * - A handler answers with keel_http_respond*() now or later (async, e.g. a
 *   proxy). The request stays valid until answered, even if the client has
 *   gone (keel_http_req_gone() tells); answering a gone request frees it.
 * - Timeouts per connection: read_timeout_ms from a request's first byte to
 *   its last (408 then close: slowloris), idle_timeout_ms between keep-alive
 *   requests, write_timeout_ms for output the client does not read. Checked by
 *   one sweep timer per server (resolution ~1/4 of the smallest timeout), not a
 *   timer per request.
 * - Errors from the parser get their status (400/413/414/431/501) with
 *   "Connection: close"; the server then half-closes and discards input for
 *   linger_ms so the client reads the answer instead of a reset.
 * - keel_http_server_shutdown(): stop accepting, close idle connections,
 *   let in-flight requests finish (their responses say Connection: close), and
 *   force-close whatever is left after drain_timeout_ms.
 */

typedef struct keel_http_server keel_http_server_t;
typedef struct keel_http_conn keel_http_conn_t;

typedef struct keel_http_req {
    const keel_http_msg_t *msg; /* method, url, path, query, headers, body */
    keel_http_server_t *server;
    void *route_data; /* the matching route's data */
    keel_http_conn_t *conn;
} keel_http_req_t;

typedef void (*keel_http_handler_fn)(keel_http_req_t *req, void *data);

#define KEEL_HTTP_ANY_METHOD (-1)

typedef struct keel_http_route {
    int method; /* enum http_method, or KEEL_HTTP_ANY_METHOD */
    const char *path_prefix;
    keel_http_handler_fn handler;
    void *data;
} keel_http_route_t;

typedef struct keel_http_server_config {
    keel_http_limits_t limits;
    keel_ms_t read_timeout_ms;  /* default 10000 */
    keel_ms_t idle_timeout_ms;  /* default 60000 */
    keel_ms_t write_timeout_ms; /* default 10000 */
    keel_ms_t drain_timeout_ms; /* default 10000 */
    keel_ms_t linger_ms;        /* default 1000 */
    size_t connections_max;     /* default 10000; over it new connections are closed */
    size_t input_bytes_max;     /* unparsed (pipelined) input held per connection, default 64 KiB */
    size_t output_bytes_max;    /* unsent output per connection before parsing pauses, 1 MiB */
    int backlog;                /* listen(2) backlog, default 511 */
    /* Optional: register keel_http_server_* counters, a connections gauge and a request
     * duration histogram (first byte to response written into the buffer) in this registry,
     * each series with these preformatted labels (e.g. "server=\"admin\""; NULL for none).
     * The connections gauge reads the server struct: render only while it is alive. */
    struct keel_metrics *metrics;
    const char *metrics_labels;
} keel_http_server_config_t;

keel_http_server_config_t keel_http_server_config_default(void);
int keel_http_server_config_validate(const keel_http_server_config_t *cfg, keel_errmsg_t *msg);

typedef struct keel_http_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_rejected;  /* over connections_max or during drain */
    uint64_t requests;              /* dispatched to a handler or answered 404/405 */
    uint64_t responses_by_class[6]; /* [1]=1xx ... [5]=5xx, server-generated errors included */
    uint64_t parse_errors;
    uint64_t timeouts; /* read, idle (not counted: normal), write */
} keel_http_server_stats_t;

typedef struct keel__http_server_metrics {
    struct keel_counter *accepted, *rejected, *requests, *parse_errors, *timeouts;
    struct keel_counter *responses[6];
    struct keel_histogram *duration;
} keel__http_server_metrics_t;

struct keel_http_server {
    keel_loop_t *loop;
    keel_http_server_config_t cfg;
    keel_http_route_t *routes;
    size_t routes_count;
    uv_tcp_t listener;
    bool listening;
    keel_timer_t sweep, drain;
    keel_ms_t sweep_ms;
    keel_list_t conns; /* open connections (keel_http_conn_t.link), newest first */
    size_t conns_count;
    bool draining;
    int handles_open; /* listener + timers still to close during shutdown */
    void (*done)(keel_http_server_t *srv, void *data);
    void *done_data;
    char date_line[64];
    int64_t date_unix_s;
    keel_ms_t accept_error_logged_ms;
    keel_http_server_stats_t stats;
    keel__http_server_metrics_t m; /* all NULL without cfg.metrics */
};

/* Copies cfg and routes. On failure nothing needs freeing. */
int keel_http_server_init(keel_http_server_t *srv, keel_loop_t *loop,
                          const keel_http_server_config_t *cfg, const keel_http_route_t *routes,
                          size_t routes_count, keel_errmsg_t *msg);
int keel_http_server_listen(keel_http_server_t *srv, const char *host_port, keel_errmsg_t *msg);
/* The port listened on (after listen with port 0), or a negative KEEL_E*. */
int keel_http_server_port(keel_http_server_t *srv);
/* Graceful stop; done (may be NULL) runs when every handle is closed and the routes are freed:
 * srv may be freed then. Also valid on a server that never listened. Idempotent. */
void keel_http_server_shutdown(keel_http_server_t *srv,
                               void (*done)(keel_http_server_t *srv, void *data), void *data);
/* keel_loop_hook_fn-shaped: keel_loop_on_shutdown(loop, keel_http_server_shutdown_hook, srv). */
void keel_http_server_shutdown_hook(void *srv);

/* Answers req (exactly once). Body is copied. headers may be NULL. 0 or KEEL_ECLOSED when the
 * client had gone (the request is freed all the same), KEEL_ETOOBIG/KEEL_ENOMEM. */
int keel_http_respond(keel_http_req_t *req, int status, const keel_http_header_t *headers,
                      size_t headers_count, const void *body, size_t body_len);
/* Shorthand with a Content-Type. */
int keel_http_respond_body(keel_http_req_t *req, int status, const char *content_type,
                           const void *body, size_t body_len);
/* {"error":{"code":status,"message":...}} as application/json. */
int keel_http_respond_error(keel_http_req_t *req, int status, const char *message);
/* True when the client of a pending request has closed or half-closed its connection (like
 * nginx, a proxy may take this as an abort; an answer is still sent while the socket is open). */
bool keel_http_req_gone(const keel_http_req_t *req);
/* Calls fn(req, data) once if the client closes or half-closes its connection while req is
 * unanswered (what keel_http_req_gone() reports), so an
 * async handler can cancel its work (e.g. the upstream call of a proxy). req must still be
 * answered, in fn or later; that only frees it. Replaces an earlier hook; fn NULL clears it. */
void keel_http_req_on_gone(keel_http_req_t *req, void (*fn)(keel_http_req_t *req, void *data),
                           void *data);

/* Calls fn(req, status, data) once, as req is answered (with the status given, whether or
 * not the client is still there): per-route metrics of async handlers. Replaces an earlier
 * hook; fn NULL clears it. */
void keel_http_req_on_answer(keel_http_req_t *req,
                             void (*fn)(keel_http_req_t *req, int status, void *data), void *data);

/* A filter on req's answer (one per request): the next keel_http_respond*() on req hands
 * what it was given to fn instead of writing it, and returns fn's result. The filter is
 * cleared first, so fn answers with keel_http_respond(), now or later (async is fine: req
 * stays valid until answered). What fn gets is borrowed for the call. The kit's
 * idempotency keys store an answer before it leaves (tx/idem.h). fn NULL clears it. */
/* A field added to req's answer, whatever handler answers it (the kit's X-Request-Id echo).
 * name is borrowed until the answer (a literal); value is copied (at most
 * KEEL_HTTP_EXTRA_VALUE_BYTES_MAX bytes, else KEEL_ETOOBIG). One per request; a later call
 * replaces it. */
#define KEEL_HTTP_EXTRA_VALUE_BYTES_MAX 128u
int keel_http_req_set_response_field(keel_http_req_t *req, const char *name, const char *value);

typedef int (*keel_http_respond_fn)(keel_http_req_t *req, int status,
                                    const keel_http_header_t *headers, size_t headers_count,
                                    const void *body, size_t body_len, void *data);
void keel_http_req_on_respond(keel_http_req_t *req, keel_http_respond_fn fn, void *data);

#endif
