/* sim_int.h - the simulated world's types, shared by sim.c, sim_node.c and sim_client.c. */
#ifndef KEEL_TESTS_SIM_INT_H
#define KEEL_TESTS_SIM_INT_H

#include "sim.h"

#include "base/num.h"
#include "base/rand.h"
#include "core/lincheck.h"
#include "proto/resp.h"
#include "server/requests.h"
#include "sm/kv_sm.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Fault model (docs/raft.md): everything below is drawn from the run's seed, one
 * millisecond at a time, in one thread. Messages are lost, duplicated and delayed
 * (which reorders them); links are cut symmetrically (a split of the nodes into two
 * sides) or in one direction only; nodes crash (losing every write not yet reported
 * durable, except that an unreported prefix may have reached the disk, with a torn
 * last batch) and restart with an empty state machine; a node's disk turns slow; a
 * node pauses (a GC or SIGSTOP) for up to 1.5 s; the leader is asked to transfer
 * leadership. After fault_end_ms every fault is healed and the cluster must make
 * progress within LIVE_MS.
 */
#define KEYS 3
#define CLIENTS 3
#define RING 48
#define CLIENT_TIMEOUT_MS 1000
#define REQUEST_TIMEOUT_MS 800 /* the node's own timeout: it answers before the client gives up */
#define REQUESTS_PENDING_MAX 64
#define LIVE_MS 10000
#define LOGCHECK_EVERY_MS 250
#define NODES_MAX 9

typedef struct nmsg {
    keel_raft_msg_t m; /* entries and data point at the copies below */
    keel_raft_entry_t *ents;
    uint8_t *data;
    keel_raft_conf_t *conf; /* heap: a configuration is large (ctx), and rare in messages */
    keel_ms_t at_ms;
} nmsg_t;

/*
 * A forwarding frame (server/requests.c's FWD_*) on the connection between two nodes. It
 * travels like a TCP stream's bytes: delayed (and, across frames, reordered) but never
 * duplicated; a frame lost to a cut link, a loss draw or a crash breaks the connection,
 * which both ends learn (keel_reqs_peer_lost), as the real transport reports a broken
 * connection. A frame never reaches a later incarnation of its receiver.
 */
typedef struct fmsg {
    uint64_t from, to;
    uint32_t to_inc; /* the receiver's incarnation when it was sent */
    keel_peer_type_t type;
    keel_peer_fwd_t f; /* f.bytes points at the copy below */
    uint8_t *bytes;
    keel_ms_t at_ms;
} fmsg_t;

typedef struct dwrite {
    keel_ms_t done_ms;
    uint64_t snap_index, snap_term; /* a snapshot from the leader, 0 = none */
    keel_raft_conf_t snap_conf;
    uint8_t *snap_data; /* the KV snapshot's bytes (keel_kv_snapshot_encode) */
    size_t snap_len;
    int has_hs;
    keel_raft_hard_state_t hs;
    keel_raft_entry_t *ents;
    size_t n;
    nmsg_t *msgs;
    size_t msgs_n;
} dwrite_t;

typedef struct world world_t;

typedef struct node {
    uint64_t id;
    world_t *w;
    keel_raft_t *r; /* NULL while crashed */
    uint32_t inc;   /* incarnation: +1 at every start */
    keel_ms_t restart_at_ms, paused_until_ms, disk_ms_max;
    /* durable storage: hard state, snapshot, log entries after the snapshot */
    keel_raft_hard_state_t hs;
    uint64_t snap_index, snap_term;
    keel_raft_conf_t snap_conf;
    uint8_t *snap_data;
    size_t snap_len;
    keel_raft_entry_t *log;
    size_t log_n, log_cap;
    dwrite_t *wq;
    size_t wq_n, wq_cap;
    /* volatile: the KV state machine and the request path, as in server/node.c */
    keel_kv_sm_t kv;
    keel_sm_t sm;
    keel_reqs_t reqs;
    keel_buf_t reply;
    uint64_t last_leader;
    keel_raft_role_t role_seen;
    uint64_t term_seen;
    int64_t clock_ppm; /* this node's clock runs at 1e6 + clock_ppm parts per million */
} node_t;

/* What a client op is on the wire (lincheck's model in brackets). */
typedef enum cmd_kind {
    CMD_GET,   /* GET k         [read] */
    CMD_SET,   /* SET k v       [write v] */
    CMD_SETNX, /* SET k v NX    [cas absent -> v] */
    CMD_DEL,   /* DEL k         [write absent] */
} cmd_kind_t;

typedef struct client {
    uint64_t process;
    int target, busy, delivered;
    size_t op;
    cmd_kind_t cmd;
    keel_ms_t deadline_ms, next_ms;
} client_t;

/*
 * A pipelining connection: SET p v1, GET p, SET p v2, GET p sent together to one node,
 * on a key of its own (a fresh one after a round whose outcome was unsure), the GETs as writes that
 * only read (as server/conn.c sends a read behind a write of the connection). Each GET must see
 * exactly the writes sent before it: the per-connection order that lincheck's sequential clients
 * cannot show.
 */
#define PIPE_OPS 4
typedef struct pipe_client {
    int busy, issuing, left;
    int target;       /* the node, by position */
    int sent, spread; /* commands sent so far; each sent a while after the one before */
    keel_ms_t op_at_ms;
    uint64_t round;
    int64_t v[PIPE_OPS]; /* SETs: the value written */
    int ok[PIPE_OPS];    /* answered: a SET applied, a GET's value in got */
    int64_t got[PIPE_OPS];
    int unsure[PIPE_OPS]; /* outcome unknown: it may still be applied, later */
    uint64_t key;         /* the key's number: a fresh one after a round with an unsure op */
    keel_ms_t next_ms, deadline_ms;
} pipe_client_t;

typedef struct preq {
    world_t *w;
    uint64_t round;
    int slot;
} preq_t;

/* The ctx of one submitted request: freed by its done, which keel_reqs calls exactly once
   (an ASan leak here would show a request answered never). */
typedef struct sreq {
    world_t *w;
    int client;
    size_t op;
} sreq_t;

typedef struct committed {
    uint64_t term, hash;
    uint64_t state_hash; /* state machine after applying it */
} committed_t;

struct world {
    uint64_t seed;
    sim_opts_t o;
    keel_rand_t rnd;
    int n, nv; /* nodes, of which the first nv are the bootstrap voters */
    node_t nodes[NODES_MAX];
    nmsg_t *net;
    size_t net_n, net_cap;
    fmsg_t *fwd;
    size_t fwd_n, fwd_cap;
    keel_ms_t fwd_last_ms[NODES_MAX][NODES_MAX]; /* per link: frames stay in order */
    int cut[NODES_MAX][NODES_MAX];
    double p_loss, p_dup, p_fault;
    keel_ms_t delay_ms_max, now_ms, fault_end_ms;
    client_t cl[CLIENTS];
    pipe_client_t pipe;
    keel_lc_op_t *hist;
    size_t hist_n, hist_cap;
    int64_t ts, next_value;
    uint64_t next_process;
    uint64_t *lead_of_term;
    size_t lot_cap;
    committed_t *com;
    size_t com_n, com_cap;
    uint64_t live_index;      /* log index of a write acknowledged after the heal */
    uint64_t compact_every;   /* entries between snapshots, 0 = never */
    uint32_t trailing, chunk; /* log_trailing_entries, snapshot_chunk_bytes_max */
    int lease_reads;          /* half of the runs serve reads from leader leases */
    int alive_hints; /* half of the runs: an AppendEntries in flight tells its receiver that
                        its leader is alive while it arrives (keel_raft_leader_alive) */
    int ending;      /* world_free: answers only free their ctx */
    int issue_depth; /* clients issuing from inside an answer (bounded) */
    keel_ms_t stream_next_ms; /* --streams: when the next stream command goes */
    uint64_t stream_id;       /* --streams: the last explicit id XADD was sent with */
    int stream_inflight;      /* --streams: commands not answered yet (at most 2, as one
                                 connection pipelining a little) */
    char ring[RING][160];
    int ring_pos, ring_n;
    sim_result_t *res;
};

#define GROW(ptr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? (cap)*2 : 16;                                                          \
            (ptr) = sim__xrealloc((ptr), (cap) * sizeof(*(ptr)));                                  \
        }                                                                                          \
    } while (0)

void *sim__xrealloc(void *p, size_t n);
__attribute__((format(printf, 2, 3))) void sim__event(world_t *w, const char *fmt, ...);
__attribute__((format(printf, 2, 3))) void sim__fail(world_t *w, const char *fmt, ...);
size_t sim__key_name(char *out, uint64_t key);
uint64_t sim__state_hash(const node_t *nd);
uint8_t *sim__copy_bytes(const uint8_t *p, size_t n);
uint64_t sim__entry_hash(const keel_raft_entry_t *e);
keel_raft_entry_t *sim__copy_entries(const keel_raft_entry_t *src, size_t n);
void sim__msg_copy(nmsg_t *q, const keel_raft_msg_t *m);
void sim__net_send(world_t *w, const keel_raft_msg_t *m);
int sim__node_live(const world_t *w, const node_t *nd);
void sim__disk_apply(world_t *w, node_t *nd, dwrite_t *d, size_t entries_n);
void sim__dwrite_free(dwrite_t *d);
int sim__link_up(const world_t *w, uint64_t a, uint64_t b);
int sim__conf_has(const uint64_t *v, uint32_t n, uint64_t id);
keel_ms_t sim__node_clock(const world_t *w, const node_t *nd);
void sim__node_start(world_t *w, node_t *nd);
void sim__node_stop(node_t *nd);
void sim__node_crash(world_t *w, node_t *nd, keel_ms_t down_ms);
void sim__node_process(world_t *w, node_t *nd);
uint64_t sim__node_applied(const node_t *nd);
void sim__clients_step(world_t *w);
/* --streams: sends the next stream command when it is due (sim_client.c). */
void sim__streams_step(world_t *w);
int sim__write_history(world_t *w, const char *path);
void sim__check_history(world_t *w);

#endif
