/* choreo_watch.h - a deadline for each choreographed saga as a whole: a small watcher that
 * reads the saga's stream with its own consumer group, keeps the running sagas' deadlines in
 * keel server, and marks the overdue ones needs_attention. */
#ifndef KEEL_TX_CHOREO_WATCH_H
#define KEEL_TX_CHOREO_WATCH_H

#include "base/err.h"
#include "base/metrics.h"
#include "client/client.h"
#include "core/choreo.h"
#include "runtime/loop.h"
#include "tx/choreo.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * docs/tx.md, "A deadline for the whole saga", has the design and why it marks rather than
 * compensates. In short:
 *
 * - All its state is in keel server, beside the stream (tx/choreo.h names the keys):
 *   `<stream>:deadlines`, a sorted set of the running sagas scored by their deadline (Unix
 *   ms), and `<stream>:attention`, the hash the participants also write when they give an
 *   event up. Its place in the stream is its group's. A restart, or another instance under
 *   the same name, goes on from there: nothing is in memory between two keel requests.
 * - Every event of the stream, in stream order, one batch per KEEL.TXN (so a batch's changes
 *   and its XACK are one entry, applied together or not at all):
 *       an end type (cfg.ends):  ZREM <stream>:deadlines saga
 *       any other:               ZADD <stream>:deadlines NX <entry ms + saga_deadline_ms> saga
 *   NX keeps the first event's deadline: a saga's deadline counts from its first event.
 * - Every check_interval_ms: ZRANGEBYSCORE <stream>:deadlines -inf <now> LIMIT 0 n; the
 *   overdue sagas get, in one KEEL.TXN each batch, HSET <stream>:attention saga "watch
 *   deadline <ms> passed" and ZREM from the deadlines. Then ZCARD and HLEN for the gauges.
 * - One request at a time on one connection, so a check never races the watcher's own
 *   ZREM of an end: run ONE instance per stream (a second under another name would see the
 *   same sagas and could mark one that the first just saw end).
 *
 * The end types must be the chain's last events: an event after its saga's end starts a new
 * deadline for it. A saga marked needs_attention stays so (a person clears the field with
 * HDEL) even if it ends later; the stream shows how it ended.
 *
 * Metrics (cfg.metrics): keel_choreo_sagas{stream,state="running"|"needs_attention"} (the
 * counts in keel server, cluster-wide, read at each check) and
 * keel_choreo_deadlines_missed_total{stream}.
 *
 * Lifecycle (libuv's rule): init -> start -> close(cb); free only in the close callback.
 */
#define KEEL_CHOREO_WATCH_ENDS_MAX 16u
#define KEEL_CHOREO_WATCH_BATCH_MAX 256u /* events per read, overdue sagas per check */

typedef struct keel_choreo_watch_config {
    const char *servers;  /* keel server client addresses, "host:port,host:port" */
    const char *stream;   /* the saga's events; at most KEEL_OUTBOX_STREAM_BYTES_MAX */
    const char *name;     /* its consumer group; default "watch" */
    const char *consumer; /* this instance in the group; default name */
    const char *ends[KEEL_CHOREO_WATCH_ENDS_MAX]; /* the event types that end a saga */
    size_t ends_n;
    keel_ms_t saga_deadline_ms;   /* from a saga's first event to its end; required */
    keel_ms_t check_interval_ms;  /* default 500 */
    uint32_t batch_max;           /* default 64 */
    keel_ms_t block_ms;           /* XREADGROUP BLOCK; default 200 */
    keel_ms_t request_timeout_ms; /* beyond block_ms; default 5000 */
    keel_ms_t retry_ms;           /* after a failed request; default 200 */
    uint64_t seed;
    keel_metrics_t *metrics; /* may be NULL */
} keel_choreo_watch_config_t;

typedef struct keel_choreo_watch_stats {
    uint64_t events, ends, malformed, missed, request_errors;
    int64_t running, needs_attention; /* at the last check; -1 before it */
} keel_choreo_watch_stats_t;

typedef struct keel_choreo_watch {
    keel_choreo_watch_config_t cfg;
    char stream[KEEL_OUTBOX_STREAM_BYTES_MAX + 1];
    char deadlines[KEEL_CHOREO_KEY_BYTES_MAX + 1], attention[KEEL_CHOREO_KEY_BYTES_MAX + 1];
    char name[KEEL_CHOREO_NAME_BYTES_MAX + 1], consumer[KEEL_CHOREO_NAME_BYTES_MAX * 2 + 1];
    char seeds_text[512];
    keel_loop_t *loop;
    keel_client_t client;
    keel_timer_t wait, check;
    int phase;      /* 0 group, 1 own pending entries, 2 new ones */
    int check_step; /* 0 none due, 1 overdue sagas, 2 ZCARD, 3 HLEN */
    bool inflight, waiting, started, closing;
    uint32_t marking; /* sagas in the KEEL.TXN in flight: counted missed once it applied */
    keel_choreo_watch_stats_t stats;
    int handles_open;
    void (*closed)(struct keel_choreo_watch *w);
    keel_gauge_t *g_running, *g_attention;
    keel_counter_t *m_missed;
} keel_choreo_watch_t;

keel_choreo_watch_config_t keel_choreo_watch_config_default(void);
/* Validates cfg (names, end types, limits). 0 or KEEL_EINVAL (msg). */
int keel_choreo_watch_init(keel_choreo_watch_t *w, keel_loop_t *loop,
                           const keel_choreo_watch_config_t *cfg, keel_errmsg_t *msg);
void keel_choreo_watch_start(keel_choreo_watch_t *w);
const keel_choreo_watch_stats_t *keel_choreo_watch_stats(const keel_choreo_watch_t *w);
/* Stops; a batch being read is left pending and read again by the next start. */
void keel_choreo_watch_close(keel_choreo_watch_t *w, void (*closed)(keel_choreo_watch_t *w));

#endif
