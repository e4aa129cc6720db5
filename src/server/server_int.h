/* server_int.h - keel server's front end inside: the server, its connections, shared helpers. */
#ifndef KEEL_SERVER_SERVER_INT_H
#define KEEL_SERVER_SERVER_INT_H

#include "base/buf.h"
#include "base/list.h"
#include "base/metrics.h"
#include "runtime/http_server.h"
#include "runtime/resp_server.h"
#include "server/node.h"
#include "server/pubsub.h"
#include "server/server.h"
#include "sm/kv_sm.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The front end is split by job, one file each:
 *   server.c     the process: config, start, stop
 *   commands.c   the command table (one row per command: name, arity, flags, key
 *                positions, summary, handler, statistics) and the connection commands
 *                (SELECT, INFO, COMMAND, KEEL.READS, KEEL.CLUSTER)
 *   clientcmds.c CLIENT, HELLO, RESET, TIME and CONFIG
 *   slowlog.c    SLOWLOG, and the timing of every command around its handler and reply
 *   pause.c      CLIENT PAUSE / UNPAUSE: this node's clients held, all or their writes
 *   conn.c       a connection's state, the rules applied before every command
 *                (subscribed mode, MULTI queueing, feeds), data commands sent to the
 *                node in the connection's order, and their replies
 *   txn.c        MULTI / EXEC / DISCARD / WATCH / UNWATCH
 *   subscribe.c  SUBSCRIBE / PUBLISH and friends (the registry is pubsub.c)
 *   feed.c       KEEL.WATCH change feeds
 *   xblock.c     XREAD / XREADGROUP with BLOCK: waits for entries on any node
 *   lblock.c     BLPOP and the other blocking pops: wait on any node, served by the log
 *   admin.c      the admin HTTP listener (/health, /status, /metrics) and gauges
 */

#define SERVER_VERSION "0.1.0"
#define CLIENT_NAME_BYTES_MAX 128
#define KEEL_SRV_ERR_OOM "ERR out of memory"

/* A command row's statistics (keel_resp_command_t.data): Prometheus counters. */
typedef struct cmd_stats {
    keel_counter_t *calls, *errors;
    const char *name;                 /* the row's (INFO commandstats) */
    uint64_t calls_base, errors_base; /* at the last CONFIG RESETSTAT (INFO counts from it) */
    /* a connection command that answers at once: its own handler (the row's handler renders
     * its reply as RESP3 for a HELLO 3 connection, resp3.c) */
    keel_resp_handler_fn inner;
} cmd_stats_t;

typedef struct watcher watcher_t;
typedef struct xblocked xblocked_t;
typedef struct lblocked lblocked_t;
typedef struct server server_t;

/* Connections waiting on this node for something to happen (waitq.c): blocked stream reads,
 * blocking pops, WAITs. While any waits, a timer calls tick every tick_ms (deadlines,
 * departed clients); it stops once the queue is empty after a tick. */
typedef struct waitq {
    keel_list_t list;
    size_t n;
    keel_timer_t timer;
    int timer_inited;
    int closing; /* the server is stopping: writes that come back end their waiter */
    unsigned tick_ms;
    void (*tick)(server_t *s);
    server_t *srv;
} waitq_t;
typedef struct pending_reply pending_reply_t;
typedef struct reg_http reg_http_t;           /* registry_http.c */
typedef struct tracker tracker_t;             /* tracking.c: a connection's CLIENT TRACKING */
typedef struct tracking tracking_t;           /* tracking.c: this node's table, NULL until used */
typedef struct waiter waiter_t;               /* wait.c: a blocked WAIT */
typedef struct ap ap_t;                       /* ap_int.h */
typedef struct slowlog_entry slowlog_entry_t; /* slowlog.c */

struct server {
    keel_server_config_t cfg;
    keel_loop_t loop;
    keel_metrics_t *metrics;
    keel_node_t *node;
    keel_kv_sm_t kv; /* the data: the state machine the node applies to */
    int kv_inited;
    keel_resp_server_t resp;
    keel_http_server_t http;
    int resp_inited, http_inited;
    int ready; /* started: every listener open */
    keel_pubsub_t *pubsub;
    keel_list_t watchers; /* connections in KEEL.WATCH or KEEL.REG FEED mode (watcher_t.link) */
    size_t watchers_n;
    size_t regfeeds_n; /* of them, KEEL.REG FEED's (they count as registry watchers) */
    keel_counter_t *m_regfeed_lagged;
    keel_counter_t *m_watch_lagged;
    waitq_t xq; /* XREAD / XREADGROUP waiting with BLOCK (xblocked_t.link) */
    /* the blocking pops (lblock.c) */
    waitq_t lq;        /* BLPOP and friends waiting or in the log (lblocked_t.link), in order */
    size_t lb_watched; /* of them, pops whose token this node looks for in applied entries */
    int lb_pass_due, lb_retry, lb_in_pass;
    uint64_t lb_nonce, lb_seq; /* tokens: node id, pid, start ms, sequence */
    uint64_t staged_seq;       /* large SETs sent in pieces (staged.c) */
    keel_counter_t *m_lb_served, *m_lb_lost_race, *m_lb_fences, *m_lb_unknown, *m_lb_given_back;
    struct lb_claim *lb_claims;
    size_t lb_claims_n, lb_claims_cap;
    cmd_stats_t *stats; /* one per command row, owned */
    size_t stats_n;
    keel_ms_t started_ms;
    /* scratch for handlers */
    const uint8_t **argv;
    size_t *lens;
    size_t argv_cap;
    keel_buf_t buf;
    keel_buf_t stale;         /* a held KEEL.READS stale read's reply */
    pending_reply_t *pr_pool; /* pending replies without a copy, kept for reuse */
    size_t pr_pool_len;
    reg_http_t *reg_http; /* the registry's HTTP API and its blocked queries, owned */
    tracking_t *tracking; /* CLIENT TRACKING's table and cursor, owned */
    waitq_t wq;           /* blocked WAITs (wait.c) */
    ap_t *ap;             /* the AP keyspace (ap_int.h), owned */
    /* SLOWLOG (slowlog.c): this node's slow commands, newest first, and its settings */
    keel_list_t slowlog;
    size_t slowlog_len;
    uint64_t slowlog_next_id;
    int64_t slowlog_slower_than_us; /* slowlog-log-slower-than: < 0 logs nothing */
    uint64_t slowlog_len_max;       /* slowlog-max-len */
    keel_buf_t slowlog_scratch;
    /* the command being dispatched: when it started, whether it went to the node */
    keel_us_t cmd_start_us;
    int cmd_timing, cmd_deferred;
    /* CLIENT PAUSE (pause.c): the mode, its end, the held connections, first held first */
    int pause_type;
    keel_ms_t pause_end_ms;
    keel_list_t paused; /* client_state_t.pause_link */
    keel_timer_t pause_timer;
    int pause_timer_inited;
};

/*
 * Per-connection state. Redis runs a connection's commands in order, and clients rely
 * on it inside a pipeline (SET then GET must see the SET). Writes go through the Raft
 * log and reads through ReadIndex, so two commands of different kinds could otherwise
 * finish out of order. Commands of the same kind run together (consecutive writes are
 * ordered by the log, consecutive reads change nothing); a command of the other kind
 * waits, held here, until the running ones are done.
 */
typedef struct client_state {
    int stale_reads;
    int resp3;                 /* HELLO 3: replies rendered as RESP3 (resp3.c) */
    tracker_t *tracker;        /* CLIENT TRACKING on (tracking.c), owned */
    uint64_t last_write_index; /* applied here when its last write was answered (WAIT) */
    char name[CLIENT_NAME_BYTES_MAX];
    int closed;      /* the connection is gone; freed when nothing is in flight */
    int kind_write;  /* kind of the commands in flight */
    size_t inflight; /* commands submitted to the node, not yet answered */
    int releasing;
    int staging; /* a large SET is going through the log in pieces (staged.c): the
                    commands after it wait in the held queue */
    pending_reply_t *held_head, *held_tail;
    int in_multi, multi_dirty; /* MULTI ... EXEC */
    pending_reply_t *queued_head, *queued_tail;
    size_t nqueued;
    struct watched **watch; /* WATCHed keys with the versions seen */
    size_t nwatch;
    keel_resp_client_t *pause_client; /* held by CLIENT PAUSE (in s->paused), else NULL */
    keel_list_t pause_link;
    watcher_t *feed; /* KEEL.WATCH: the connection is in push mode */
    int feed_ended;  /* it was, and is closing (lagged): still no other commands */
} client_state_t;

/*
 * A command on its way: a data command sent to the node (its reply slot, its kind), or
 * a command queued inside MULTI (then `row` is its table row and slot is unused).
 */
struct pending_reply {
    pending_reply_t *next; /* in the client's held or queued list */
    server_t *srv;
    client_state_t *cs;
    keel_resp_deferred_t *slot;
    cmd_stats_t *stats;
    const keel_resp_command_t *row; /* queued in MULTI: the command's row */
    pending_reply_t *exec_queued;   /* EXEC: the queued commands, run when it commits */
    keel_resp_client_t *client;     /* EXEC with exec_queued: the connection (cs->closed
                                       says whether it is still there) */
    int is_write;
    int watch; /* WATCH: on success record the keys' versions, reply +OK */
    int conf;  /* KEEL.CLUSTER ADD/JOIN/REMOVE/UPDATE: argv parsed again when submitted */
    uint8_t resp3, shape;      /* the connection's protocol when it was sent, the reply's shape */
    int log_read;              /* a read sent through the log (RUN_LOG_READ) */
    int pooled;                /* no argv copy: goes back to srv->pr_pool */
    struct staged_set *staged; /* a large SET sent in pieces (staged.c): argv points into
                                  it, owned until submitted */
    size_t argc;
    const uint8_t **argv; /* the server's scratch, or (held) a copy after this struct */
    size_t *lens;
    /* SLOWLOG: when its handler started (0: not timed), and for a pending reply without a
       copy of argv, the arguments as SLOWLOG shows them (kept, with its memory, in the pool) */
    keel_us_t slow_start_us;
    keel_buf_t slow_args;
};

/* What a submitted command is: its kind decides the connection's ordering runs. */
enum {
    RUN_READ = 0,
    RUN_WRITE = 1,
    RUN_WATCH = 2,     /* a read that records WATCH versions */
    RUN_CONF = 3,      /* a membership change (KEEL.CLUSTER): a write, keel_node_change */
    RUN_LOG_READ = 4,  /* a read behind a write of the connection: an entry in the log */
    RUN_READ_HELD = 5, /* a read of many keys: waits behind a write, never through the log */
};

/* staged.c: a SET of a value this large goes through the log in pieces. */
#define KEEL_SRV_STAGED_MIN_BYTES (4u * 1024u * 1024u)
typedef struct staged_set staged_set_t;
int keel__srv_staged_wanted(const server_t *s, const keel_resp_command_t *row, size_t argc,
                            const size_t *lens);
/* The SET in s->argv (its value at least KEEL_SRV_STAGED_MIN_BYTES): takes the client's
   input buffer, queues the SET in the connection's order; 0 or the client's close. */
int keel__srv_staged_submit(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                            cmd_stats_t *st);
/* Ties the staged SET to its pending reply (whose argv then points into ss). */
void keel__srv_staged_adopt(staged_set_t *ss, pending_reply_t *pr);
/* conn.c's submit: sends the pieces (the connection's later commands wait). */
void keel__srv_staged_start(staged_set_t *ss);
/* A staged SET never submitted (its client left while it waited): freed. */
void keel__srv_staged_drop(staged_set_t *ss);
/* A staged SET whose handler could not queue it: the client's input given back, ss freed. */
void keel__srv_staged_abandon(keel_resp_client_t *c, staged_set_t *ss);

/* conn.c */
server_t *keel__srv_of(keel_resp_client_t *c);
client_state_t *keel__srv_state(keel_resp_client_t *c);
int keel__srv_arg_is(const keel_resp_arg_t *a, const char *s);
/* Replies, written through proto/resp: an error ("ERR ..." without the '-'), a simple
 * string, and the out-of-memory error every handler may need. */
int keel__srv_error(keel_resp_client_t *c, const char *err);
int keel__srv_simple(keel_resp_client_t *c, const char *text);
int keel__srv_oom(keel_resp_client_t *c);
int keel__srv_ensure_argv(server_t *s, size_t argc);
/* A submitted command's outcome: its reply written to the slot, the connection's next
   commands released (the node's done callback for every data command). */
void keel__srv_pending_answer(pending_reply_t *pr, int status, const uint8_t *resp, size_t len);
/* keel__srv_submit for a staged SET (staged.c): its pending reply points into ss. */
int keel__srv_submit_staged(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                            cmd_stats_t *st, staged_set_t *ss);
pending_reply_t *keel__srv_pending_new(server_t *s, size_t argc, int copy);
void keel__srv_pending_free(pending_reply_t *pr);
int keel__srv_submit(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc, int run,
                     cmd_stats_t *st);
int keel__srv_submit_exec(keel_resp_client_t *c, server_t *s, client_state_t *cs, size_t argc,
                          pending_reply_t *queued);
void keel__srv_client_closed(keel_resp_client_t *c);
int keel__srv_before_command(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv);
void keel__srv_command_refused(keel_resp_client_t *c, const keel_resp_command_t *cmd);
int keel__srv_cmd_data(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ping(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* txn.c */
void keel__srv_multi_reset(client_state_t *cs);
void keel__srv_queued_free(pending_reply_t *q);
int keel__srv_multi_queue(keel_resp_client_t *c, server_t *s, client_state_t *cs,
                          const keel_resp_command_t *row, size_t argc);
int keel__srv_exec_finish(pending_reply_t *pr, keel_buf_t *out, const uint8_t *resp, size_t len);
int keel__srv_watch_add(server_t *s, client_state_t *cs, const uint8_t *const *keys,
                        const size_t *lens, size_t n);
void keel__srv_watch_clear(client_state_t *cs);
int keel__srv_cmd_multi(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_exec(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_discard(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_unwatch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* ap.c, ap_cmds.c, ap_coord.c, ap_replica.c (ap_int.h): the AP keyspace (docs/ap.md) */
int keel__srv_ap_start(server_t *s, keel_errmsg_t *msg);
void keel__srv_ap_stop(server_t *s);
void keel__srv_on_peer_ap(void *data, uint64_t from, const uint8_t *p, size_t n);
/* The end of a loop turn (node.h on_pass): the AP replica writes of the turn share one
 * fdatasync, then their ACKs go out (ap_replica.c). */
void keel__srv_ap_on_pass(void *data);
int keel__srv_cmd_ap_put(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_get(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_smembers(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_policy(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_del(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_incr(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_sadd(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_srem(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_where(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_ap_status(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* subscribe.c */
void keel__srv_on_peer_publish(void *data, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                               size_t msg_len);
int keel__srv_cmd_publish(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_subscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_psubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_unsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_punsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* feed.c */
/*
 * A connection in push mode: KEEL.WATCH (a key prefix) or KEEL.REG FEED (reg: a service
 * name, or every service when name_len is 0). A cursor, not a copy: `after` is the
 * revision (KEEL.WATCH) or registry index (KEEL.REG FEED) pushed up to.
 */
struct watcher {
    keel_list_t link; /* server->watchers */
    keel_resp_client_t *client;
    uint64_t after;
    int reg;
    size_t prefix_len;
    uint8_t prefix[];
};
void keel__srv_feed_end(server_t *s, client_state_t *cs);
/* Ends cs's feed with "-LAGGED <text>" (counted in m), closing the connection after it. */
void keel__srv_feed_lagged(server_t *s, client_state_t *cs, keel_counter_t *m, const char *text);
void keel__srv_feed_on_applied(void *data);
void keel__srv_feed_drained(keel_resp_client_t *c);
int keel__srv_cmd_keel_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* waitq.c */
int keel__waitq_init(server_t *s, waitq_t *q, unsigned tick_ms, void (*tick)(server_t *s));
void keel__waitq_add(waitq_t *q, keel_list_t *link, int at_tail);
void keel__waitq_remove(waitq_t *q, keel_list_t *link);
void keel__waitq_close(waitq_t *q); /* the timer: after the owner ended its waiters */

/* conn.c: the error text for a request the node could not answer with the command's own
 * reply (a write's outcome unknown, refused, shutting down), or NULL for another status */
const char *keel__srv_outcome_error(int status, int log_read);

/* xblock.c */
int keel__srv_xblock_init(server_t *s);
void keel__srv_xblock_close(server_t *s);
void keel__srv_xblock_on_applied(server_t *s);
int keel__srv_cmd_xblock(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* lblock.c */
int keel__srv_lblock_init(server_t *s);
void keel__srv_lblock_close(server_t *s);
void keel__srv_lblock_on_applied(server_t *s);
int keel__srv_cmd_lblock(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
/* The state machine the node applies to: the KV's, watched for this node's own pops. */
keel_sm_t keel__srv_lblock_sm(server_t *s);

/* A data command's row: the state machine's (one handler, or xblock.c's for BLOCK, or
 * lblock.c's for the blocking pops). */
static inline int keel__srv_is_data_row(const keel_resp_command_t *row)
{
    return row->handler == keel__srv_cmd_data || row->handler == keel__srv_cmd_xblock ||
           row->handler == keel__srv_cmd_lblock;
}

/* commands.c */
int keel__srv_conf_parse(size_t argc, const uint8_t *const *argv, const size_t *lens,
                         keel_node_conf_change_t *c);
/* A membership change's result (keel_node_change's reply) as a RESP reply into out. */
int keel__srv_conf_reply(keel_buf_t *out, const uint8_t *p, size_t len);
int keel__srv_cmd_echo(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_quit(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_select(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
/* clientcmds.c */
int keel__srv_cmd_client(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_hello(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_reset(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_time(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_config(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_keel_reads(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_info(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
/* CONFIG RESETSTAT: INFO's command counts start again from 0 (info.c). */
void keel__srv_info_reset(server_t *s);
int keel__srv_cmd_command(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_cmd_cluster(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_commands_build(server_t *s, keel_resp_command_t **out, size_t *n_out);

/* resp3.c: replies rendered as RESP3 for a connection that said HELLO 3 */
#include "proto/resp3.h"
keel_resp3_shape_t keel__srv_resp3_shape(size_t argc, const uint8_t *const *argv,
                                         const size_t *lens);
/* Appends the reply resp[0..len) to out as it is (RESP2) or rendered as RESP3. */
int keel__srv_reply(int resp3, keel_resp3_shape_t shape, keel_buf_t *out, const uint8_t *resp,
                    size_t len);
/* The handler of the connection rows that answer at once (cmd_stats_t.inner does the work). */
int keel__srv_cmd_resp3(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
/* Runs a row's handler outside the dispatch (a command queued in MULTI, run by EXEC). */
int keel__srv_run_row(keel_resp_client_t *c, const keel_resp_command_t *row, size_t argc,
                      const keel_resp_arg_t *argv);
/* Whether a connection row's reply is rendered by keel__srv_cmd_resp3. */
int keel__srv_resp3_wraps(const char *name);
static inline int keel__srv_resp3(keel_resp_client_t *c)
{
    client_state_t *cs = keel_resp_client_data(c);
    return cs != NULL && cs->resp3;
}

/* tracking.c: CLIENT TRACKING (client-side caching) */
void keel__srv_tracking_on_applied(server_t *s);
void keel__srv_tracking_closed(server_t *s, client_state_t *cs);
void keel__srv_tracking_free(server_t *s);
void keel__srv_tracking_read(server_t *s, client_state_t *cs, const keel_resp_command_t *row,
                             size_t argc, const uint8_t *const *argv, const size_t *lens);
void keel__srv_tracking_before(client_state_t *cs, const keel_resp_command_t *cmd);
int keel__srv_client_tracking(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                              keel_buf_t *out);
int keel__srv_client_caching(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                             keel_buf_t *out);
int keel__srv_client_getredir(keel_resp_client_t *c, keel_buf_t *out);
int keel__srv_client_trackinginfo(keel_resp_client_t *c, keel_buf_t *out);
/* clientcmds.c: the connection with that CLIENT ID on this node, or NULL */
keel_resp_client_t *keel__srv_client_by_id(server_t *s, uint64_t id);

/* slowlog.c: SLOWLOG and the timing of every command */
void keel__srv_slowlog_init(server_t *s);
void keel__srv_slowlog_free(server_t *s);
/* The hooks around each command's handler (keel__srv_before_command runs inside the first) */
int keel__srv_slowlog_before(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv);
void keel__srv_slowlog_after(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv);
/* The arguments as a RESP array, cut as Redis cuts them (32 arguments, 128 bytes each). */
int keel__srv_slowlog_args(keel_buf_t *b, size_t argc, const keel_resp_arg_t *argv);
int keel__srv_slowlog_args_of(keel_buf_t *b, size_t argc, const uint8_t *const *argv,
                              const size_t *lens);
int keel__srv_slowlog_slow(const server_t *s, keel_us_t duration_us);
void keel__srv_slowlog_push(server_t *s, keel_resp_client_t *c, const uint8_t *args, size_t len,
                            keel_us_t duration_us);
int keel__srv_cmd_slowlog(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);

/* pause.c: CLIENT PAUSE / UNPAUSE */
int keel__srv_pause_init(server_t *s);
void keel__srv_pause_close(server_t *s);
/* Whether a pause holds this command now (it joins the held connections); ends a pause
 * whose deadline passed. */
int keel__srv_pause_holds(keel_resp_client_t *c, const keel_resp_command_t *cmd);
void keel__srv_pause_closed(client_state_t *cs);
int keel__srv_client_pause(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                           keel_buf_t *out);
int keel__srv_client_unpause(keel_resp_client_t *c, keel_buf_t *out);

/* wait.c: WAIT numreplicas timeout */
int keel__srv_cmd_wait(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
void keel__srv_wait_on_applied(server_t *s);
int keel__srv_wait_init(server_t *s);
void keel__srv_wait_close(server_t *s);

/* admin.c */
int keel__srv_admin_start(server_t *s, keel_errmsg_t *msg);

/* registry_cmd.c: KEEL.REG, sent on as KEEL.REG.WRITE or KEEL.REG.READ */
int keel__srv_cmd_reg(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
/* registry_http.c: the Consul-shaped routes (KEEL_SRV_REG_ROUTES of them, into out), their
 * state and wait lists (start before listening), the wake-up after each apply pass, free. */
#define KEEL_SRV_REG_ROUTES 5
/* Blocked registry queries on one node (watchers_max); the admin listener takes this many
 * connections more than its default. */
#define KEEL_SRV_REG_WATCHERS_MAX 16384u
size_t keel__srv_reg_routes(server_t *s, keel_http_route_t *out);
int keel__srv_reg_http_start(server_t *s);
void keel__srv_reg_on_applied(server_t *s);
void keel__srv_reg_http_free(server_t *s);
/* KEEL.REG WAIT service index timeout_ms [PASSING] [TAG tag] (registry_http.c's wait lists) */
int keel__srv_reg_wait(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int stale);
/* Queries blocked on this node's wait lists (with s->regfeeds_n: its registry watchers). */
size_t keel__srv_reg_blocked(const server_t *s);
/* registry_json.c: the Consul-shaped JSON answers */
struct json_t;
struct json_t *keel__srv_reg_jstr(const uint8_t *p, size_t n);
struct json_t *keel__srv_reg_health_entry(server_t *s, const keel_reg_instance_t *in);
char *keel__srv_reg_render_catalog(server_t *s, uint64_t now_ms);
/* regfeed.c: KEEL.REG FEED [service] [FROM index], a push feed on feed.c's watchers */
int keel__srv_regfeed_start(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv);
void keel__srv_regfeed_pump(server_t *s, client_state_t *cs);

#endif
