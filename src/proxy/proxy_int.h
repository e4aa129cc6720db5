/* proxy_int.h - keel proxy's runtime types, shared by proxy.c (setup, reload, stop),
 * proxy_cluster.c (clusters, health checks), proxy_admin.c (the admin listener) and the data path
 * (proxy_conn.c and its files, proxy_conn_int.h). Not a public header. */
#ifndef KEEL_PROXY_PROXY_INT_H
#define KEEL_PROXY_PROXY_INT_H

#include "base/buf.h"
#include "base/list.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "core/balance.h"
#include "core/breaker.h"
#include "core/outlier.h"
#include "core/ratelimit.h"
#include "core/retry.h"
#include "core/rollout.h"
#include "kit/discovery.h"
#include "proxy/aggregate.h"
#include "proxy/auth.h"
#include "proxy/config.h"
#include "proxy/cors.h"
#include "proto/trace.h"
#include "proxy/h1.h"
#include "proxy/route.h"
#include "proxy/proxy.h"
#include "proxy/proxy_tls.h"
#include "runtime/http_client.h"
#include "runtime/http_server.h"
#include "runtime/loop.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Bytes read from a socket per read callback (libuv asks for a buffer of this size). */
#define KEEL_PROXY_READ_BYTES 65536u
/* Beyond the head limit, the unparsed input one client connection may hold (pipelined bytes). */
#define KEEL_PROXY_PIPELINE_BYTES_MAX 65536u
/* A client connection waiting for its next request keeps at most this much buffer memory; more
 * (the read buffer, a large response's staging) is released, so idle keep-alive connections
 * cost little (nginx frees its buffers between requests too). */
#define KEEL_PROXY_IDLE_BUFFER_BYTES_MAX 4096u
/* The housekeeping tick: idle pooled connections, outlier ticks, breaker gauges. */
#define KEEL_PROXY_SWEEP_MS 100
/* The access log keeps this much of a request's method and target (longer ones are cut). */
#define KEEL_PROXY_LOG_METHOD_BYTES 16
#define KEEL_PROXY_LOG_TARGET_BYTES 256
/* A service cluster holds at most this many hosts (registry instances beyond it are left out,
 * logged); a host that left keeps its slot until its connections and requests are done. */
#define KEEL_PROXY_SERVICE_HOSTS_MAX KEEL_PROXY_HOSTS_MAX
/* Registry weights above this are cut to it for ring hashing (ring points are reserved per unit
 * of weight: endpoints * 160 * this). */
#define KEEL_PROXY_SERVICE_RING_WEIGHT_MAX 8u
/* "host:port" of a registry instance. */
#define KEEL_PROXY_HOST_ADDR_BYTES_MAX (KEEL_DISCOVERY_ADDR_BYTES_MAX + 8)
/* A retry re-picks at most this many times to avoid the hosts already tried. */
#define KEEL_PROXY_REPICKS_MAX 3
/* A cluster's failed TLS handshakes are logged at most once per this interval (each counts). */
#define KEEL_PROXY_TLS_WARN_INTERVAL_MS 1000
/* Retry-After and RateLimit-Reset are whole seconds, at least this many. */
#define KEEL_PROXY_RETRY_AFTER_S_MIN 1
/* A worker's failed span exports are logged at most once per this interval (each counts). */
#define KEEL_PROXY_TRACE_WARN_INTERVAL_MS 10000
/* A span's http.path tag keeps at most this much of the path (the target as kept for the
 * access log, KEEL_PROXY_LOG_TARGET_BYTES with its NUL, less the query). */
#define KEEL_PROXY_TRACE_PATH_BYTES KEEL_PROXY_LOG_TARGET_BYTES

/* A remote_jwks document, as the fetch's body limit: what a jwks_file may hold. */
#define KEEL_PROXY_REMOTE_JWKS_BYTES_MAX KEEL_JWKS_BYTES_MAX

typedef struct keel__pgen keel__pgen_t;
typedef struct keel__pjwks keel__pjwks_t;
typedef struct keel__pcluster keel__pcluster_t;
typedef struct keel__phost keel__phost_t;
typedef struct keel__uconn keel__uconn_t;
typedef struct keel__dconn keel__dconn_t;
typedef struct keel__pworker keel__pworker_t;

/*
 * Workers (docs/proxy.md, "Workers"). keel_proxy_t is one worker: an event loop with its own
 * listening sockets (SO_REUSEPORT on the same addresses), client connections, upstream
 * connection pools, aggregate client and parse scratch. Worker 0 runs on the caller's loop and
 * also owns what exists once: the generations (it builds them and tells the others), the
 * metrics registry, the admin listener, health checks and registry queries.
 *
 * What the workers share -- a generation's clusters and routes -- is guarded by one mutex per
 * cluster (its balancer, breaker, outlier detector, host health and counts, the retry budget's
 * counters) and one per route (its rate limiter and retry policy). The pure cores under
 * src/core are not thread-safe and stay so: every call into them on a shared object is made
 * with its mutex held, in short sections that never call back into the loop. Fields written
 * only by worker 0 and read elsewhere (a host's `gone`, a cluster's `retired`, a host's
 * `conns`) use atomics. Reference counts of generations and clusters are atomic.
 */

enum { KEEL__CONN_DOWN = 1, KEEL__CONN_UP = 2 };

struct keel__phost {
    keel__pcluster_t *cl;
    uint32_t idx; /* in the cluster, the balancer and the outlier detector */
    const char *address;
    uint32_t weight;
    uint32_t priority; /* 1: a registry instance of another zone than the proxy's (balance.h) */
    /* service clusters: the instance left the registry's passing list; the slot stays in the
     * balancer as unavailable (so indexes never move) until it is reused for a new instance,
     * once nothing refers to it (no connection, request or health check) */
    bool gone;
    char address_buf[KEEL_PROXY_HOST_ADDR_BYTES_MAX]; /* address, for registry instances */
    struct sockaddr_storage addr;
    struct keel__ppool *pools; /* one per worker: its idle connections to this host */
    uint32_t conns;            /* open, busy or idle, over every worker (atomic) */
    uint32_t active;           /* requests in flight (cluster mutex) */
    bool healthy;
    uint32_t hc_ok_run, hc_fail_run;
    bool hc_inflight;
    uint64_t ejections;
    /* a tls cluster: the last session this host gave, offered by the next new connection to it
     * (resumption), and the context it came from (a reference: a session is offered only to
     * connections of that context); guarded by the cluster's mutex */
    SSL_SESSION *tls_session;
    SSL_CTX *tls_session_ctx;
};

/*
 * A cluster lives on its own (refcounted): a reload whose new config has a cluster with the same
 * name and the same settings shares this object, so its pools, breaker, outlier detector,
 * health state and balancer carry over. References: each generation that lists it, each
 * upstream connection, each health check in flight and the health-check timer.
 */
/* A worker's idle pooled connections to one host. */
typedef struct keel__ppool {
    keel_list_t idle; /* keel__uconn_t.link, most recent first */
    uint32_t idle_count;
} keel__ppool_t;

struct keel__pcluster {
    keel_proxy_t *p; /* worker 0 */
    uint64_t refs;   /* atomic */
    /* guards lb, breaker, outlier, the hosts' health, ejection and active counts, hosts_n,
     * live, active_requests and active_retries, now_max_ms */
    pthread_mutex_t mu;
    keel_ms_t now_max_ms; /* the latest loop time any worker showed the cores (kept monotonic) */
    keel__ppool_t *pools; /* hosts_cap * workers */
    bool retired;         /* in no current generation: no health checks, no pooling */
    keel_proxy_cluster_t own;        /* a deep copy of its config: it may outlive the file's */
    const keel_proxy_cluster_t *cfg; /* &own */
    uint32_t idx;
    keel__phost_t *hosts; /* hosts_cap slots, hosts_n of them in use (gone ones included) */
    uint32_t hosts_n, hosts_cap;
    keel_discovery_t *disc; /* service clusters: the registry's passing instances */
    bool disc_on;           /* until its close callback */
    uint32_t live;          /* hosts in use and not gone */
    keel_counter_t *m_registry_updates;
    keel_balance_t lb;
    keel_breaker_t breaker;
    keel_outlier_t outlier;
    uint64_t active_requests, active_retries;
    keel_timer_t hc_timer;
    bool hc_timer_on;
    /* metrics */
    keel_counter_t *m_hedges, *m_hedge_won, *m_hedge_cancelled, *m_hedge_budget;
    keel_counter_t *m_attempts, *m_retries, *m_budget_exhausted, *m_breaker_rejected,
        *m_bulkhead_rejected, *m_ejections, *m_connect_errors, *m_resets, *m_timeouts,
        *m_bad_responses;
    keel_counter_t *m_stale_retries; /* requests re-sent after a stale pooled connection */
    keel_counter_t *m_class[6];
    keel_gauge_t *m_conns;
    keel_gauge_t *g_breaker, *g_available, *g_active; /* read this cluster at render time */
    /* tls: the context new connections to its hosts are made from (a reload that keeps the
     * cluster puts the one it loaded in place, so a changed ca_file is read again); guarded by
     * mu. Connections hold their own reference. */
    SSL_CTX *tls_ctx;
    keel_counter_t *m_tls_failures, *m_tls_resumed;
    keel_ms_t tls_warned_ms; /* the last failure logged (atomic) */
};

/* Upgrade requests by outcome: the upstream switched (a tunnel), answered with another status
 * (proxied as a response), or the request got no upstream answer (an error, a local answer). */
typedef enum keel__upgrade_outcome {
    KEEL__UPGRADE_SWITCHED,
    KEEL__UPGRADE_REFUSED,
    KEEL__UPGRADE_FAILED,
} keel__upgrade_outcome_t;

#define KEEL__CORS_OUTCOMES 7
#define KEEL__CORS_ORIGIN_ALLOWED 5 /* m_cors slots after the preflight verdicts */
#define KEEL__CORS_ORIGIN_OTHER 6

/* A route's rate limiter: its buckets, one per key, shared by every worker and by the
 * generations whose route has the same name and rate_limit settings (a reload that leaves them
 * as they were keeps the buckets); freed with the last generation that holds it. */
typedef struct keel__prl {
    uint64_t refs;        /* atomic: one per generation's route */
    pthread_mutex_t mu;   /* guards rl and now_max_ms */
    keel_ms_t now_max_ms; /* as the cluster's */
    keel_ratelimit_keyed_t rl;
} keel__prl_t;

typedef struct keel__proute {
    const keel_proxy_route_t *cfg;
    pthread_mutex_t mu; /* guards retry (its counters) and the rollout */
    bool mu_on;
    keel_ms_t now_max_ms; /* as the cluster's */
    keel_retry_t retry;
    keel__prl_t *rl[KEEL_PROXY_ROUTE_RATE_LIMITS_MAX]; /* referenced; cfg->ratelimits_count */
    keel_counter_t *m_requests, *m_rate_limited, *m_auth_refused;
    /* keel_proxy_upgrades_total by keel__upgrade_outcome_t (a route with upgrades) */
    keel_counter_t *m_upgrades[3];
    /* keel_proxy_cors_total by outcome (a CORS route's): the five preflight verdicts
     * (keel_proxy_cors_verdict_t), then other requests whose Origin was allowed, and not */
    keel_counter_t *m_cors[KEEL__CORS_OUTCOMES];
    keel_counter_t *m_class[6];
    keel_histogram_t *m_duration;
    /* a route with a rollout (docs/proxy.md, "Progressive rollout"): the core, under mu (every
     * worker observes its canary's requests into it; worker 0's sweep ticks it), and the
     * canary's weight in percent that every worker's picks read (atomic; worker 0 writes it) */
    bool ro_on;
    keel_rollout_t ro;
    uint32_t ro_weight_pct;
    keel_gauge_t *g_ro_weight, *g_ro_state;
    keel_counter_t *m_ro_steps, *m_ro_rollbacks[3]; /* by keel_rollout_why_t (errors, latency) */
} keel__proute_t;

/*
 * A generation: one loaded config and everything built from it (clusters with their balancers,
 * breakers, outlier detectors, pools and health checks; routes with their retry policies and
 * rate limiters, the latter shared with the generation before when unchanged). A reload builds a
 * new generation and retires the old one: new requests use the new one, while exchanges that
 * started on the old one finish on it (they hold a reference, as do its upstream connections and
 * health-check timers); the old generation is freed when its last reference goes.
 */
struct keel__pgen {
    keel_proxy_t *p;
    keel_proxy_config_t *cfg;
    char *text; /* the YAML it was loaded from, for /config */
    uint64_t version;
    keel_h1_limits_t req_lim, resp_lim;
    keel__pcluster_t **clusters; /* cfg->clusters_count, each referenced */
    keel__proute_t *routes;
    /* the JWT providers' keys: read when this config was loaded, or, for a remote_jwks, put
     * in force by its fetcher (worker 0's, proxy_jwks.c; NULL for the others) */
    keel_proxy_keys_t keys;
    keel__pjwks_t *jwks[KEEL_PROXY_JWT_PROVIDERS_MAX];
    keel_proxy_tls_t tls; /* the TLS listeners' contexts (the clusters' went to the clusters) */
    keel_counter_t *m_tls_failed[KEEL_PROXY_LISTENERS_MAX]; /* handshakes failed, per listener */
    uint64_t refs; /* atomic: each worker's p->gen, each exchange */
    bool retired;
};

typedef struct keel__plistener {
    keel_proxy_t *p;
    uv_tcp_t tcp;
    bool open;
    int port;
} keel__plistener_t;

/* An upstream connection: in a host's idle list, or serving one exchange. */
struct keel__uconn {
    int kind;         /* KEEL__CONN_UP */
    keel__tls_t *tls; /* a TLS cluster's; connected once its handshake is done */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    keel_proxy_t *p; /* the worker whose loop it is on */
    keel__phost_t *host;
    keel_list_t link; /* host->idle while idle */
    keel__dconn_t *d; /* the exchange served, NULL when idle */
    keel_buf_t in, out;
    size_t scan;
    uint32_t requests; /* sent on it: more than one when reused from the pool */
    keel_ms_t idle_since_ms;
    bool connected, closing, reading, idle;
    bool answering; /* a byte of an answer to the request in flight came (its 1xx included) */
};

/* A client field (or one the proxy adds) sent to every part of an aggregate; offsets into
 * keel__agg_t.text until the parts are sent. */
#define KEEL_PROXY_AGG_HEADERS_MAX                                                                 \
    (KEEL_PROXY_AGG_FORWARD_MAX + KEEL_PROXY_JWT_CLAIM_HEADERS_MAX + 6)
/* A part whose connection was refused (a dead instance) is tried on another host this many
 * times in all, within its timeout. */
#define KEEL_PROXY_AGG_ATTEMPTS_MAX 2u

typedef struct keel__agg keel__agg_t;

typedef struct keel__agg_part {
    keel__agg_t *agg;
    keel__pcluster_t *cl;
    keel__phost_t *host; /* the host of the call in flight */
    uint64_t call_id;
    bool inflight;
    uint32_t attempts;
    uint32_t failed_host_1; /* 1 + the host whose connection was refused; 0: none */
    keel_ms_t deadline_ms;
    char path[KEEL_PROXY_AGG_PATH_BYTES_MAX];
    keel_proxy_part_result_t res;
    char *body; /* res.body: a copy of the upstream's body */
} keel__agg_part_t;

/* The state of one aggregate request (proxy_agg.c): its parts' calls through p->agg_client. */
struct keel__agg {
    keel__dconn_t *d;
    const keel_proxy_aggregate_t *cfg;
    uint32_t pending; /* parts not done */
    bool releasing;   /* the exchange is going away: callbacks only count down */
    keel_buf_t text;  /* the header names and values */
    keel_http_header_t headers[KEEL_PROXY_AGG_HEADERS_MAX];
    size_t headers_count;
    keel__agg_part_t parts[KEEL_PROXY_AGG_PARTS_MAX];
};

/* A worker's span export (tracer.c): encoded spans waiting, and the POST in flight. */
typedef struct keel__tracer {
    keel_http_client_t cli;
    bool cli_on;
    struct keel__tspan {
        char *json; /* one span's JSON object (malloc'd) */
        uint32_t len;
    } * q; /* ring of q_cap slots: q_len of them from q_head */
    uint32_t q_head, q_len, q_cap;
    bool inflight;
    uint32_t inflight_n; /* spans in the POST in flight */
    keel_ms_t last_flush_ms, warned_ms;
    keel_buf_t body;    /* the batch being built */
    keel_buf_t scratch; /* one span's JSON */
} keel__tracer_t;

typedef enum keel__dstate {
    KEEL__D_HEAD,    /* waiting for (the rest of) a request head */
    KEEL__D_BUSY,    /* an exchange is in progress */
    KEEL__D_CLOSING, /* closing after the output drains, or closed */
    KEEL__D_TUNNEL,  /* upgraded (101): bytes pass both ways until both sides end */
} keel__dstate_t;

/* One request and its response, embedded in the client connection (one at a time). */
typedef struct keel__xch {
    keel__pgen_t *gen; /* referenced while the exchange lives */
    keel__proute_t *route;
    keel__pcluster_t *cl;
    keel__phost_t *host;
    keel__uconn_t *u;
    int method_kind; /* 1 HEAD, 2 idempotent, 0 other */
    bool client_keepalive;
    bool expect_continue;
    keel_buf_t up_head; /* the request head as sent upstream (kept for retries) */
    /* request body */
    keel_h1_body_t req_body;
    uint64_t req_remaining; /* LENGTH */
    uint64_t req_bytes;
    keel_h1_chunked_t req_ck;
    bool req_done; /* the whole request body has been read from the client */
    bool req_sent; /* ... and queued toward the upstream */
    /* the body as sent upstream, kept (up to limits.retry_buffer_bytes) for a retry */
    keel_proxy_replay_t replay;
    bool idem_key; /* carries the route's idempotency header: retried as idempotent */
    /* 1 + the index of each host an attempt went to, once each, the latest last (a retry or a
     * hedge avoids them all while another host is available): at most one per attempt */
    uint32_t tried_1[KEEL_PROXY_ATTEMPTS_MAX];
    uint32_t tried_n;
    keel__agg_t *agg; /* an aggregate route's calls, else NULL */
    int agg_refused;  /* the aggregate could not start: the status to answer (400) */
    bool cors;        /* a CORS route's request other than a preflight: its answer gets
                         keel_proxy_cors_actual()'s fields for cors_match */
    keel_proxy_cors_match_t cors_match; /* with a pattern's echo: no allocation per request */
    /* response */
    bool resp_head; /* a response head went to the client */
    int status;
    keel_h1_body_t resp_body;
    uint64_t resp_remaining;
    keel_h1_chunked_t resp_ck;
    bool resp_chunk_out; /* we frame the response with chunked toward the client */
    bool resp_close_out; /* the client connection ends the response */
    bool resp_done;
    bool up_keepalive;
    /* attempts */
    keel_retry_call_t call;
    keel_ms_t start_ms, try_start_ms, try_deadline_ms, connect_deadline_ms, retry_at_ms;
    int permit;    /* breaker permit, or -1 */
    bool counted;  /* counted in cl->active_requests */
    bool retrying; /* counted in cl->active_retries */
    bool balance_started;
    bool
        judged; /* the attempt's verdict is given, its host still counted (keel__x_judge_attempt) */
    bool canary;             /* sent toward a rollout's canary: the rollout observes its outcome */
    uint64_t key_hash;       /* the balancer's affinity key (hash_on) */
    keel_trace_ctx_t trace;  /* the context sent upstream: with tracing, the current attempt's
                                client span (a child of server); without, a child of the
                                client's span */
    bool b3;                 /* the client spoke B3: the upstream gets B3 too */
    bool traced;             /* tracing is on and the trace sampled: spans are recorded */
    keel_trace_ctx_t server; /* the server span (traced) */
    keel_us_t start_us, try_start_us; /* wall clock: the request, the current attempt */
    const char *reason;               /* the proxy's own answer's X-Keel-Reason, or NULL */
    const char *try_error;            /* why the current attempt failed (its client span) */
    /* a hedge (docs/proxy.md, "Hedged requests"): the other attempt in flight beside the one
     * above (u, host, permit, balance_started, try_start_ms, try_deadline_ms,
     * connect_deadline_ms, trace, try_start_us, try_error, is_hedge), in the same fields with an
     * h_ prefix; h_host != NULL while there is one. The two are swapped (keel__x_swap_tries)
     * when the other one becomes the exchange's attempt: its head came first, or this one
     * failed. */
    keel__uconn_t *h_u;
    keel__phost_t *h_host;
    int h_permit;
    bool h_balance_started;
    keel_ms_t h_try_start_ms, h_try_deadline_ms, h_connect_deadline_ms;
    keel_trace_ctx_t h_trace;
    keel_us_t h_try_start_us;
    const char *h_try_error;
    bool is_hedge, h_is_hedge; /* the attempt is the hedge (for keel_proxy_hedge_won_total) */
    keel_ms_t hedge_at_ms;     /* when the first try goes unanswered long enough; 0: no hedge */
    /* an upgrade (docs/proxy.md, "Upgrades"; proxy_tunnel.c): the route's protocol the client
     * asked for (NULL: not an upgrade request); once the upstream answered 101, the exchange is
     * a tunnel until both directions end (tun_*: FIN read from the client / the upstream,
     * shutdown started toward the upstream / the client, shutdowns completed) */
    const char *upgrade;
    bool upgrade_refused; /* the upstream answered it with another status than 101 */
    bool tunnel;
    bool tun_down_eof, tun_up_eof, tun_up_shut, tun_down_shut;
    uint32_t tun_shut_done;
    uint64_t tun_up_bytes;  /* bytes the client sent through the tunnel */
    keel_ms_t tun_start_ms; /* when the 101 was queued to the client (a rollout's latency) */
    /* for the access log (filled only when it is on) */
    uint64_t resp_bytes; /* body bytes queued to the client (tunnel bytes after a 101) */
    uint32_t attempts;
    const char *upstream; /* address of the last host tried */
    char method[KEEL_PROXY_LOG_METHOD_BYTES];
    char target[KEEL_PROXY_LOG_TARGET_BYTES];
} keel__xch_t;

struct keel__dconn {
    int kind;         /* KEEL__CONN_DOWN */
    keel__tls_t *tls; /* a TLS listener's */
    uv_tcp_t tcp;
    keel_proxy_t *p;
    keel_list_t link;
    keel_buf_t in, out;
    size_t scan;
    keel__dstate_t state;
    keel_ms_t head_start_ms; /* first byte of the head being read, 0 when none */
    keel_ms_t active_ms;     /* last progress on this connection */
    char peer[64];           /* client IP, for X-Forwarded-For and keys */
    uint32_t listener_1;     /* 1 + the index of the listener it came in on (route match) */
    bool reading, closing, eof;
    bool processing; /* inside d_process: x_complete must not re-enter it */
    bool shut;       /* our side is half-closed (uv_shutdown started) */
    keel_timer_t timer;
    keel_ms_t timer_at_ms;
    keel__xch_t x;
};

struct keel_proxy {
    keel_loop_t *loop;
    keel__pgen_t *gen; /* the generation new requests use on this worker (referenced) */
    uint32_t wid;      /* this worker's index; 0: the main one */
    uint32_t workers_n;
    keel_proxy_t *main;                               /* worker 0 */
    keel__pworker_t *workers[KEEL_PROXY_WORKERS_MAX]; /* worker 0: the threads of 1.. */
    keel_counter_t *m_worker_conns;                   /* connections this worker accepted */
    keel__plistener_t listeners[KEEL_PROXY_LISTENERS_MAX];
    uint32_t listeners_count;
    keel_list_t dconns;
    uint32_t dconns_count; /* this worker's */
    uint32_t conns_all;    /* worker 0: client connections of every worker (atomic) */
    keel_rand_t rand;
    keel_timer_t sweep;
    keel_metrics_t *metrics;
    keel_http_server_t admin;
    bool admin_on;
    int admin_port;
    keel_http_client_t hc; /* health checks */
    bool hc_on;
    keel_http_client_t agg_client; /* aggregate routes' calls to their parts */
    bool agg_on;
    keel_http_client_t jwks_cli; /* worker 0: remote_jwks fetches */
    bool jwks_on;
    bool stopping;
    int handles_open;
    void (*done)(keel_proxy_t *p, void *data);
    void *done_data;
    keel_counter_t *m_conns_total, *m_no_route, *m_bad_requests, *m_reloads_ok, *m_reloads_failed;
    keel_gauge_t *m_conns_open;
    keel_gauge_t *m_tunnels_open; /* keel_proxy_upgrade_tunnels_active (worker 0's, shared) */
    char via_line[KEEL_PROXY_NAME_BYTES_MAX + 16];
    /* Parse scratch (one loop thread): a request head is used only inside d_process and a
     * response head only inside u_process, and neither calls the other's parser. */
    keel_h1_head_t req_head, resp_head;
    /* Where TLS connections' ciphertext is read (KEEL_PROXY_READ_BYTES, allocated with the
     * first one): libuv calls the read callback right after the allocation, and the callback
     * feeds all of it to OpenSSL, so one buffer serves every connection of the loop. */
    uint8_t *tls_rbuf;
    keel__tracer_t tracer; /* this worker's span export */
    keel_counter_t *m_tr_recorded, *m_tr_exported, *m_tr_dropped_full, *m_tr_dropped_failed,
        *m_tr_dropped_off, *m_tr_failures; /* worker 0's, shared */
};

static inline keel__ppool_t *keel__pool(const keel_proxy_t *p, keel__phost_t *h)
{
    return &h->pools[p->wid];
}

static inline void keel__cl_lock(keel__pcluster_t *cl)
{
    pthread_mutex_lock(&cl->mu);
}

static inline void keel__cl_unlock(keel__pcluster_t *cl)
{
    pthread_mutex_unlock(&cl->mu);
}

/* The time to give a shared core, with its mutex held: workers' loops cache their own clocks,
 * a few ms apart; a core must never see time go back. */
static inline keel_ms_t keel__shared_now(keel_ms_t *max_ms, keel_ms_t now_ms)
{
    if (now_ms > *max_ms)
        *max_ms = now_ms;
    return *max_ms;
}

/* proxy_conn.c */
void keel__proxy_on_connection(uv_stream_t *server, int status);
/* This worker's pools: idle connections past their timeout, or to hosts that left. */
void keel__proxy_sweep_pool(keel_proxy_t *p, keel_ms_t now_ms);
void keel__proxy_close_all(keel_proxy_t *p);
/* Closes this worker's idle pooled connections to the cluster's hosts (gone_only: of hosts that
 * left). */
void keel__proxy_close_idle(keel_proxy_t *p, keel__pcluster_t *cl, bool gone_only);
/* proxy.c */
void keel__proxy_handle_closed(keel_proxy_t *p);
void keel__proxy_apply_state(keel__pcluster_t *cl, uint32_t idx);
void keel__gen_ref(keel__pgen_t *g);
void keel__gen_unref(keel__pgen_t *g);
void keel__cluster_ref(keel__pcluster_t *cl);
void keel__cluster_unref(keel__pcluster_t *cl);
/* The number of workers a config asks for: `workers`, or one per online core. */
uint32_t keel__proxy_workers_wanted(const keel_proxy_config_t *cfg);
/* Worker setup shared with worker.c: the aggregate client once a config has aggregate routes. */
int keel__proxy_ensure_agg_client(keel_proxy_t *p, const keel_proxy_config_t *cfg,
                                  keel_errmsg_t *msg);
/* Sets up worker w (zeroed) beside worker 0 on loop, on worker 0's thread: its sweep timer,
 * its aggregate client, a reference to worker 0's generation. On failure w is half set up:
 * shut it down (keel_proxy_shutdown) and run its loop. */
int keel__proxy_worker_init(keel_proxy_t *w, keel_proxy_t *main, keel_loop_t *loop, uint32_t wid,
                            keel_errmsg_t *msg);
/* proxy_cluster.c */
/* Forgets the TLS session a host gave (its slot is reused, or a handshake failed); with the
 * cluster's mutex held. */
void keel__host_forget_session(keel__phost_t *h);
/* "other", "1xx" .. "5xx": the class label of the m_class counters. */
extern const char *const keel__proxy_class_names[6];
/* key="value" into out[0..cap), the value escaped as a metrics label. */
void keel__proxy_labels_for(char *out, size_t cap, const char *key, const char *value);
/* Whether two cluster configs are the same in everything but their line in the file. */
bool keel__cluster_same(const keel_proxy_cluster_t *a, const keel_proxy_cluster_t *b);
/* A new cluster for config c, with one reference (the caller's generation's). */
int keel__cluster_new(keel_proxy_t *p, const keel_proxy_cluster_t *c, keel__pcluster_t **out,
                      keel_errmsg_t *msg);
/* Takes a cluster out of service: health checks stop, idle connections close, gauges stop
 * reading it; it is freed with its last reference. */
void keel__cluster_retire(keel__pcluster_t *cl);
/* proxy_rollout.c */
/* A route's rollout, if it has one: its metrics, and its state, kept from the generation in
 * force when the reload left the rollout as it was, else started at its first step. */
int keel__rollout_init(keel__pgen_t *gen, keel__proute_t *rt, keel_errmsg_t *msg);
/* Ticks every rollout of the generation in force (worker 0's sweep). */
void keel__rollout_sweep(keel_proxy_t *p, keel_ms_t now_ms);
/* A request sent toward the canary ended with status after latency_ms. */
void keel__rollout_observe(keel__proute_t *rt, keel_ms_t now_ms, keel_ms_t latency_ms, int status);
/* proxy_jwks.c (worker 0) */
/* Starts a fetcher for each remote_jwks provider of g (a first fetch at once); a provider the
 * generation in force has with the same name, cluster and path lends g its keys meanwhile. */
int keel__jwks_start(keel__pgen_t *g, keel_errmsg_t *msg);
/* Stops g's fetchers (a fetch in flight is cancelled); from gen_retire. */
void keel__jwks_stop(keel__pgen_t *g);
/* The fetches' HTTP client, once a config has a remote_jwks. */
int keel__jwks_ensure_client(keel_proxy_t *p, const keel_proxy_config_t *cfg, keel_errmsg_t *msg);
/* tracer.c */
/* The export client of a worker once a config has tracing. */
int keel__tracer_ensure(keel_proxy_t *p, const keel_proxy_config_t *cfg, keel_errmsg_t *msg);
/* Queues a finished span for export (dropped and counted when the queue is full); sends a
 * batch when batch_max are waiting. Never blocks. */
void keel__tracer_record(keel_proxy_t *p, const keel_span_t *s);
/* The housekeeping tick: a partial batch goes once flush_ms passed. */
void keel__tracer_tick(keel_proxy_t *p, keel_ms_t now);
/* At shutdown: drops what is queued (counted), closes the client. */
void keel__tracer_close(keel_proxy_t *p);
/* proxy_admin.c */
/* Starts the admin listener on the config's admin_address (worker 0). */
int keel__proxy_admin_start(keel_proxy_t *p, keel_errmsg_t *msg);
/* worker.c */
/* Binds worker 0's listeners (SO_REUSEPORT when there are several workers). */
int keel__workers_listen(keel_proxy_t *p, keel_errmsg_t *msg);
/* Starts workers 1..workers_n-1, each on its own thread with the generation p->gen. */
int keel__workers_start(keel_proxy_t *p, keel_errmsg_t *msg);
/* Hands the generation p->gen to every other worker (each takes a reference). */
void keel__workers_publish(keel_proxy_t *p);
/* Stops every other worker and joins its thread (their connections are closed). */
void keel__workers_stop(keel_proxy_t *p);
/* Swaps a worker to generation g (a reference taken for it), on its own loop. */
void keel__worker_adopt(keel_proxy_t *w, keel__pgen_t *g);

#endif
