/* client.h - the RESP client on the event loop: pipelining, seed list, leader following, feeds. */
#ifndef KEEL_CLIENT_CLIENT_H
#define KEEL_CLIENT_CLIENT_H

#include "base/buf.h"
#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"
#include "core/retry.h"
#include "proto/resp.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT
 *
 * A keel_client_t keeps one TCP connection to one node of a seed list and sends it
 * commands, many at a time (pipelining): each keel_client_command() queues one command
 * with a callback; queued commands are written together once per loop iteration, and
 * replies come back in order, one callback each.
 *
 *     keel_client_config_t cfg = keel_client_config_default();
 *     cfg.seeds[0] = "127.0.0.1:7001"; cfg.seeds[1] = "127.0.0.1:7002"; cfg.seeds_n = 2;
 *     keel_client_init(&cl, &loop, &cfg, &msg);
 *     const char *argv[] = {"SET", "k", "v"};
 *     keel_client_command(&cl, 3, argv, NULL, on_reply, ctx);   // lens NULL: strlen
 *     ...
 *     static void on_reply(keel_client_t *cl, void *ctx, int status,
 *                          const keel_resp_value_t *reply) { ... }
 *     keel_client_close(&cl, on_closed);   // on_closed: the memory may now be freed
 *
 * Outcome of a request (the callback's status; it runs exactly once per request):
 *   0                 the server answered; `reply` is its answer (possibly an error reply,
 *                     e.g. -TIMEOUT or -UNKNOWN: the server itself does not know whether a
 *                     write was applied). `reply` is borrowed: copy what you keep.
 *   KEEL_ETIMEDOUT    the request's deadline passed first. If it had been written, its
 *                     outcome is unknown; a late reply is read and dropped.
 *   KEEL_ECONNRESET   the connection broke after the request was written (unknown
 *                     outcome), or, with `session_bound`, before it was written.
 *   KEEL_ECANCELED    keel_client_close() ran first.
 * reply is NULL whenever status != 0.
 *
 * Moving between nodes. The first connection goes to seeds[first_seed]. When a connect
 * fails or a connection breaks, the client waits a backoff delay (core/retry: capped
 * exponential with jitter, from `reconnect`) and tries the next seed, round robin,
 * forever until closed. Requests not yet written wait for the next connection (unless
 * `session_bound`) and keep their deadlines.
 *
 * Following the leader. Only requests that certainly were not applied are sent again:
 *   -TRYAGAIN ...            (keel: no leader known; nothing was proposed) is resent to the
 *                            same connection after a backoff, until the request's deadline
 *                            (for ever if it has none), when `retry_tryagain` is set;
 *   -MOVED <slot> <host:port> / -REDIRECT <host:port> ...
 *                            (a node naming the one to ask) moves the connection there once
 *                            the replies in flight are in, and resends the request, at most
 *                            KEEL_CLIENT_REDIRECTS_MAX times per request.
 * Anything else, notably -TIMEOUT, -UNKNOWN and a broken connection, is handed to the
 * caller: those writes may have been applied, and resending would apply them twice.
 * keel server forwards writes from followers itself, so redirects are rare with it.
 *
 * Feeds. A client whose config has `on_push` set is a feed: every reply is a push for
 * on_push; keel_client_subscribe() and keel_client_watch() set the command that (re)starts
 * the stream on every connection, and keel_client_command() is refused (KEEL_EINVAL)
 * because a subscribed RESP2 connection answers nothing else. keel_client_watch() resumes
 * a KEEL.WATCH stream on the next node with FROM the last revision delivered, so every
 * revision is delivered exactly once (docs/server.md, KEEL.WATCH).
 *
 * Lifecycle (libuv's rule): init -> commands -> close(cb); the struct may be freed or
 * reused only in the close callback. Callbacks may call command() and close().
 * One loop, one thread: nothing here is thread-safe. The blocking wrapper for tools and
 * tests is client/blocking.h.
 */
#define KEEL_CLIENT_SEEDS_MAX 16
#define KEEL_CLIENT_ADDR_BYTES_MAX 64
#define KEEL_CLIENT_REQUESTS_LIMIT 65536u    /* ceiling for requests_max */
#define KEEL_CLIENT_REDIRECTS_MAX 5u         /* per request */
#define KEEL_CLIENT_FEED_ARGS_MAX 64u        /* words in a feed's (re)start command */
#define KEEL_CLIENT_READ_BYTES_DEFAULT 65536 /* room asked for per read */

typedef struct keel_client keel_client_t;

/* One request's outcome (see above). */
typedef void (*keel_client_reply_fn)(keel_client_t *cl, void *ctx, int status,
                                     const keel_resp_value_t *reply);
/* Feeds: one push (a reply with no request waiting for it). */
typedef void (*keel_client_push_fn)(keel_client_t *cl, const keel_resp_value_t *push, void *data);

enum keel_client_event {
    KEEL_CLIENT_UP,          /* connected to keel_client_addr(); err 0 */
    KEEL_CLIENT_CONNECT_ERR, /* an attempt failed with err; the next seed follows */
    KEEL_CLIENT_LOST,        /* an established connection broke (err says how) */
};
typedef void (*keel_client_event_fn)(keel_client_t *cl, int event, int err, void *data);

typedef struct keel_client_config {
    const char *seeds[KEEL_CLIENT_SEEDS_MAX]; /* "host:port", copied at init */
    size_t seeds_n;
    size_t first_seed;            /* index of the first seed to try (spreads clients) */
    keel_ms_t connect_timeout_ms; /* per attempt; default 3000 */
    keel_ms_t request_timeout_ms; /* default deadline of a request; 0: none. default 10000 */
    /* Delays between connection attempts and -TRYAGAIN resends: backoff_base_ms,
     * backoff_cap_ms and jitter are used (defaults 50 ms .. 2000 ms, EQUAL jitter). */
    keel_retry_config_t backoff;
    uint32_t requests_max;    /* queued + in flight; past it command() says KEEL_EFULL */
    uint32_t inflight_max;    /* written and not yet answered, <= requests_max */
    size_t request_bytes_max; /* one encoded command */
    size_t reply_bytes_max;   /* one reply (the input buffer's cap); larger breaks the link */
    size_t read_bytes;        /* free room asked for per read */
    bool retry_tryagain;      /* resend after -TRYAGAIN; default true */
    bool session_bound;       /* a loss fails queued requests too (WATCH/MULTI state) */
    /* Every this often, while commands flow, ask the node who leads (KEEL.CLUSTER MEMBERS)
     * and move to the leader if it is another node, once the replies in flight are in: keel
     * server forwards a follower's writes, so a client left on a follower after a failover
     * never hears a redirect and pays the extra hop for ever (three times the latency between
     * regions, and every read waits behind the forwarded writes). 0: never. Default 1000;
     * never for feeds and session_bound clients. A move to an address that cannot be reached
     * pauses the checks for KEEL_CLIENT_FOLLOW_PAUSE_MS. */
    keel_ms_t follow_leader_ms;
    uint64_t seed;                 /* backoff jitter */
    keel_client_event_fn on_event; /* may be NULL */
    keel_client_push_fn on_push;   /* non-NULL: the client is a feed */
    void *data;                    /* for on_event and on_push */
} keel_client_config_t;

#define KEEL_CLIENT_FOLLOW_PAUSE_MS 30000

typedef struct keel_client_stats {
    uint64_t connects, connect_failures, losses;
    uint64_t replies, timeouts, tryagain_resends, redirects;
    uint64_t leader_moves; /* moves to the leader found by follow_leader_ms */
} keel_client_stats_t;

/* A request slot (internal; the array is allocated at init from requests_max). */
typedef struct keel_client__req {
    keel_client_reply_fn fn;
    void *ctx;
    keel_ms_t deadline_ms; /* KEEL_MS_NEVER for none */
    keel_ms_t resend_ms;   /* held after -TRYAGAIN until then */
    uint32_t tryagains, redirects;
    int32_t next;
    uint8_t where;
    bool expired; /* its callback ran already (timed out while in flight) */
    keel_buf_t cmd;
} keel_client__req_t;

typedef struct keel_client__queue {
    int32_t head, tail;
    uint32_t n;
} keel_client__queue_t;

struct keel_client {
    keel_loop_t *loop;
    keel_client_config_t cfg;
    char seeds[KEEL_CLIENT_SEEDS_MAX][KEEL_CLIENT_ADDR_BYTES_MAX];
    char addr[KEEL_CLIENT_ADDR_BYTES_MAX];    /* the node in use or being tried */
    char move_to[KEEL_CLIENT_ADDR_BYTES_MAX]; /* a redirect's target, "" if none */
    size_t seed_at;                           /* index of the seed in use */
    keel_rand_t rand;
    keel_client_stats_t stats;
    keel_client__req_t *reqs;
    keel_client__queue_t free, unsent, inflight, held;
    keel_buf_t in, wbuf;
    /* feeds: the command that (re)starts the stream on each connection */
    keel_buf_t feed_cmd;
    keel_buf_t watch_prefix; /* keel_client_watch: FROM is added per connection */
    int64_t watch_rev;
    bool watching, feed_due;
    /* handles */
    keel_connector_t cc;
    keel_timer_t wake, retry;
    uv_prepare_t flush;
    uv_write_t wreq;
    unsigned failures; /* consecutive failed attempts, for the backoff */
    int handles_open;
    bool cc_open, cc_closing, connected, writing, closing, flush_on, moving, redirected;
    keel_ms_t wake_at_ms;     /* when the wake timer fires, KEEL_MS_NEVER if stopped */
    keel_ms_t follow_next_ms; /* follow_leader_ms: the next check is due then */
    bool follow_asking;       /* a check is in flight */
    void (*closed)(keel_client_t *cl);
};

keel_client_config_t keel_client_config_default(void);
int keel_client_config_validate(const keel_client_config_t *cfg, keel_errmsg_t *msg);
/* Splits "host:port,host:port" (text is cut in place and must live until init) into
 * cfg->seeds; empty items are skipped. KEEL_EINVAL, worded with `who`, if there is none or
 * more than KEEL_CLIENT_SEEDS_MAX. */
int keel_client_config_seeds(keel_client_config_t *cfg, char *text, const char *who,
                             keel_errmsg_t *msg);

/* Starts connecting. On failure nothing is left open. */
int keel_client_init(keel_client_t *cl, keel_loop_t *loop, const keel_client_config_t *cfg,
                     keel_errmsg_t *msg);

/*
 * Queues argv[0..argc) (lens NULL: NUL-terminated strings) with the default deadline.
 * 0, or KEEL_EFULL (requests_max), KEEL_ETOOBIG (request_bytes_max), KEEL_ECLOSED,
 * KEEL_EINVAL (a feed); on failure fn is not called.
 */
int keel_client_command(keel_client_t *cl, size_t argc, const char *const *argv, const size_t *lens,
                        keel_client_reply_fn fn, void *ctx);
/* The same with this request's own timeout (ms from now; 0: none). */
int keel_client_command_timeout(keel_client_t *cl, size_t argc, const char *const *argv,
                                const size_t *lens, keel_ms_t timeout_ms, keel_client_reply_fn fn,
                                void *ctx);

/* Feeds (config.on_push set): SUBSCRIBE channels..., re-sent on every connection. */
int keel_client_subscribe(keel_client_t *cl, size_t argc, const char *const *channels);

/*
 * KEEL.WATCH prefix on a feed, starting after revision from (-1: the node's current one).
 * Pushes reach on_push unchanged ("watching" confirmations, "watch" revisions, error
 * replies such as -COMPACTED and -LAGGED). An error reply moves the feed to the next
 * seed, resuming after keel_client_watch_revision().
 */
int keel_client_watch(keel_client_t *cl, const char *prefix, int64_t from);
/* The last revision the watch stands after (-1 before the first "watching"). */
int64_t keel_client_watch_revision(const keel_client_t *cl);

/* Drops the connection and moves to the next seed (requests as on a loss). */
void keel_client_move(keel_client_t *cl);

bool keel_client_connected(const keel_client_t *cl);
/* The address in use (or being tried). */
const char *keel_client_addr(const keel_client_t *cl);
/* Requests queued or in flight. */
uint32_t keel_client_pending(const keel_client_t *cl);
const keel_client_stats_t *keel_client_stats(const keel_client_t *cl);

/* Fails every request with KEEL_ECANCELED (now), then closes the handles; closed (may be
 * NULL) runs when the memory may be freed. */
void keel_client_close(keel_client_t *cl, void (*closed)(keel_client_t *cl));

#endif
