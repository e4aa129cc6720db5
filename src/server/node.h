/* node.h - one keel server node: Raft core + WAL + KV state machine + peer transport on libuv. */
#ifndef KEEL_SERVER_NODE_H
#define KEEL_SERVER_NODE_H

#include "base/metrics.h"
#include "core/raft/raft.h"
#include "runtime/loop.h"
#include "runtime/wal.h"
#include "server/memberdir.h"
#include "sm/sm.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The node is the replication engine behind every client protocol. It drives
 * the pure Raft core (core/raft) on the event loop:
 *
 *   - every loop turn ends in one pass (a uv_check handle) that drains
 *     keel_raft_ready(): the turn's proposals become one batch of WAL records
 *     and one AppendEntries per peer;
 *   - WAL writes are group-committed on libuv's thread pool (write +
 *     fdatasync) while the loop keeps serving; the messages that must wait for
 *     durability (votes, append acknowledgements) are held per peer, tagged with
 *     the sync group they depend on, and released when that group is durable;
 *   - committed entries are applied to the state machine (sm/sm.h: the engine knows
 *     nothing of keys, values or RESP) and the waiting client gets the exact reply the
 *     state machine produced.
 *
 * Any node accepts any command. A follower forwards writes to the leader
 * (FWD_PROPOSE) and relays the reply; for a linearizable read it gets a read
 * index from the leader (FWD_READ), waits until it has applied that index and
 * answers from its own state (thesis §6.4 with the follower extension).
 *
 * Outcomes reported to `done`:
 *   status 0            reply holds the RESP reply (which may be a -ERR of the command)
 *   KEEL_ENOTLEADER     refused by a node that no longer led, with a later write of this
 *                       node already on its way: nothing was applied (server/requests.h)
 *   KEEL_ECONFLICT      the entry was overwritten by a new leader's, with a later write
 *                       already proposed: not applied
 *   KEEL_ETIMEDOUT      no answer within request_timeout_ms: outcome unknown
 *   KEEL_ECONNRESET     forwarded to a leader that lost its place: outcome unknown
 *   KEEL_EFULL/ETOOBIG  refused before proposing
 * `done` is always called exactly once per accepted request (also at stop).
 */
#define KEEL_NODE_PATH_BYTES 1024

/*
 * Membership (docs/membership.md). `members` is where a node starts: the voters of
 * --initial-cluster, or, for a node that joined (join = 1), the directory the leader
 * sent back when it was added; such a node starts with no voters and learns its
 * configuration from the leader's log or snapshot. From then on the configuration in
 * the log (with its member directory, server/memberdir.h) decides: peers are connected
 * and dropped as it changes. Changes are typed (keel_node_conf_change_t) and go through
 * keel_node_change, from any node (a follower forwards them in FWD_CONF); the leader turns
 * them into configuration entries, one at a time, and promotes a learner to voter on its
 * own once the learner's log is within promote_lag_entries_max entries of its own.
 */

/* A membership change (KEEL.CLUSTER's ADD, JOIN, REMOVE, UPDATE; PROMOTE is the leader's). */
typedef enum keel_node_conf_op {
    KEEL_NODE_CONF_ADD = 1,
    KEEL_NODE_CONF_JOIN,    /* ADD for `keel server --join`: asking twice is fine */
    KEEL_NODE_CONF_REMOVE,  /* name only */
    KEEL_NODE_CONF_PROMOTE, /* name only: learner to voter */
    KEEL_NODE_CONF_UPDATE,  /* name and client_addr */
} keel_node_conf_op_t;

typedef struct keel_node_conf_change {
    keel_node_conf_op_t op;
    char name[KEEL_NODE_NAME_BYTES];
    char peer_addr[KEEL_NODE_ADDR_BYTES];
    char client_addr[KEEL_NODE_ADDR_BYTES];
} keel_node_conf_change_t;

/* Bytes of an encoded change, at most (FWD_CONF's payload). */
#define KEEL_NODE_CONF_BYTES_MAX (1 + 3 * 2 + KEEL_NODE_NAME_BYTES + 2 * KEEL_NODE_ADDR_BYTES)
/* u8 op | 3 x (u16 len | bytes): name, peer address, client address. Returns its length. */
size_t keel_node_conf_encode(const keel_node_conf_change_t *c, uint8_t *out);
/* 0, or KEEL_EPROTO for bytes that are not a change (a field too long included). */
int keel_node_conf_decode(const uint8_t *p, size_t len, keel_node_conf_change_t *c);

/*
 * A membership change's answer: keel_node_change's done gets it encoded (status 0), and
 * keel_node_conf_result_decode reads it back; the front end words it for its clients.
 */
typedef enum keel_node_conf_kind {
    KEEL_NODE_CONF_DONE = 0,    /* committed (or nothing to change) */
    KEEL_NODE_CONF_ID = 1,      /* ADD committed: the new member's id */
    KEEL_NODE_CONF_JOINED = 2,  /* JOIN: id, cluster id and the directory with the member */
    KEEL_NODE_CONF_REFUSED = 3, /* refused: error says why */
} keel_node_conf_kind_t;

typedef struct keel_node_conf_result {
    keel_node_conf_kind_t kind;
    uint64_t id, cluster_id;
    keel_memberdir_t dir; /* JOINED */
    char error[KEEL_ERRMSG_BYTES_MAX];
} keel_node_conf_result_t;

/* 0, or KEEL_EPROTO for bytes that are not a result. */
int keel_node_conf_result_decode(const uint8_t *p, size_t len, keel_node_conf_result_t *out);
/* --preferred-leader: how long the member must have been fit to lead before the leader
 * hands over (a node just restarted, or one whose link flaps, is not given the lead at once),
 * and the least time between two transfers toward it (a preferred member that cannot keep
 * the lead costs at most one election in this time). */
#define KEEL_NODE_PREFER_STABLE_MS 3000
#define KEEL_NODE_PREFER_RETRY_MS 10000
/* ... doubled after each transfer that left this node the leader, up to this */
#define KEEL_NODE_PREFER_RETRY_MS_MAX 300000
/* Fit also means heard from (a whole Raft message) this recently: a stopped or hung process
   keeps its TCP connection and its match index, not its answers. */
#define KEEL_NODE_PREFER_HEARD_MS 1000

typedef struct keel_node_config {
    uint64_t id;
    keel_node_member_t members[KEEL_RAFT_MEMBERS_MAX];
    size_t members_n;
    int join;                               /* members is a directory, not the voters */
    char client_addr[KEEL_NODE_ADDR_BYTES]; /* this node's, written into the directory */
    uint64_t promote_lag_entries_max;       /* learner -> voter once this close */
    /* A member that should lead whenever it can (--preferred-leader; "" none): the leader
       hands leadership to it once it has been a connected voter within
       promote_lag_entries_max of the log for KEEL_NODE_PREFER_STABLE_MS (prefer.c) */
    char preferred_leader[KEEL_NODE_NAME_BYTES];
    uint64_t cluster_id; /* peers with another cluster id are refused */
    char data_dir[KEEL_NODE_PATH_BYTES];
    char listen_peer[KEEL_NODE_ADDR_BYTES];
    keel_raft_config_t raft; /* id, voters and seed are filled from the above */
    keel_wal_config_t wal;
    keel_sm_t sm;                  /* the data: the owner's, outlives the node */
    uint64_t command_bytes_max;    /* the largest entry sm's encode makes of a client command */
    size_t requests_pending_max;   /* writes + reads waiting on this node */
    keel_ms_t request_timeout_ms;  /* outcome unknown after this */
    size_t peer_buffer_bytes_max;  /* queued bytes per peer before messages are dropped */
    size_t peer_frame_bytes_max;   /* largest peer frame accepted */
    uint64_t snapshot_entries;     /* snapshot the state machine every this many entries */
    size_t snapshot_log_bytes_min; /* ... once the log since the last one is this large */
    int snapshots_keep;            /* snapshot files kept on disk */
    keel_metrics_t *metrics;       /* may be NULL */
    /* A PUBLISH broadcast by a peer arrived (pub/sub); may be NULL. */
    void (*on_publish)(void *data, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                       size_t msg_len);
    void *on_publish_data;
    /* Entries were applied (or a snapshot installed) in this pass; may be NULL. KEEL.WATCH
     * pushes from here: the state machine shows the new state and its change history. */
    void (*on_applied)(void *data);
    void *on_applied_data;
    /* An AP keyspace message from member `from` arrived (proto/apmsg.h); may be NULL. */
    void (*on_ap)(void *data, uint64_t from, const uint8_t *msg, size_t len);
    void *on_ap_data;
    /* Every pass (each loop turn), last before the peers' buffers are flushed; may be NULL. The
     * AP keyspace's group commit syncs the turn's replica writes here and queues their ACKs. */
    void (*on_pass)(void *data);
    void *on_pass_data;
} keel_node_config_t;

void keel_node_config_default(keel_node_config_t *cfg);
int keel_node_config_validate(const keel_node_config_t *cfg, keel_errmsg_t *msg);

typedef struct keel_node keel_node_t;

/* status 0: reply/len is the RESP reply; otherwise a KEEL_E* outcome (see above). */
typedef void (*keel_node_done_fn)(void *ctx, int status, const uint8_t *reply, size_t len);

int keel_node_start(keel_node_t **out, keel_loop_t *loop, const keel_node_config_t *cfg,
                    keel_errmsg_t *msg);
/* Fails pending requests (KEEL_ECANCELED), closes handles; closed runs when memory is freed. */
void keel_node_stop(keel_node_t *n, void (*closed)(void *data), void *data);

/*
 * Submit a client command (argv borrowed for the call only). Returns 0 if
 * accepted (done will be called, possibly before this returns) or a negative
 * code with done not called: KEEL_EFULL (too many pending), KEEL_EINVAL.
 */
int keel_node_write(keel_node_t *n, int argc, const uint8_t *const *argv, const size_t *lens,
                    keel_node_done_fn done, void *ctx);
/*
 * Pub/sub across the cluster: sends the message to every peer (at most once, like the
 * Redis Cluster bus; a peer that is down misses it). Local subscribers are the caller's.
 */
void keel_node_publish(keel_node_t *n, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                       size_t msg_len);
/*
 * Sends one AP keyspace message to member `to` on this node's connection to it, in the
 * next flush (at most once: a peer that is down or whose buffer is full misses it, and
 * the AP coordinator's timeout deals with that). KEEL_ENOTFOUND: no live connection to
 * `to`; KEEL_EFULL: its buffer is full.
 */
int keel_node_send_ap(keel_node_t *n, uint64_t to, const uint8_t *msg, size_t len);
/* Leadership transfer to member id (thesis §3.10). KEEL_ENOTLEADER unless this node leads;
 * KEEL_EINVAL for an unknown member or this node; KEEL_EBUSY while one is under way. */
int keel_node_transfer(keel_node_t *n, uint64_t to);
/* A membership change through the log (any node: a follower forwards it). done gets the
 * reply once the configuration entry commits, or the change's error. */
int keel_node_change(keel_node_t *n, const keel_node_conf_change_t *c, keel_node_done_fn done,
                     void *ctx);
/* The wall-clock time reads judge expiry by: this node's clock, never earlier than the
 * newest applied entry's stamp (a read never goes back in replicated time). */
uint64_t keel_node_read_now_ms(const keel_node_t *n);
/* A linearizable read (ReadIndex, also on a follower). A stale read is the state machine's
 * own business: its owner reads it at keel_node_read_now_ms. */
int keel_node_read(keel_node_t *n, int argc, const uint8_t *const *argv, const size_t *lens,
                   keel_node_done_fn done, void *ctx);

typedef struct keel_node_status {
    keel_raft_role_t role;
    uint64_t id, term, leader, commit, applied, last_index;
    uint64_t leader_changes;
    uint64_t wal_disk_bytes;
    uint64_t snapshot_index, snapshot_disk_bytes;
    size_t requests_pending;
    int has_leader;
} keel_node_status_t;

void keel_node_get_status(keel_node_t *n, keel_node_status_t *st);
/* Cheap: the index this node has applied; whether it leads; as leader, how much of its log
 * member id holds (0 otherwise, and for itself). */
uint64_t keel_node_applied(const keel_node_t *n);
int keel_node_is_leader(const keel_node_t *n);
/* 1 when this node is out of the configuration in force: not a member of it, or told by a
 * peer that a committed configuration removed it (it may not have that entry itself). */
int keel_node_removed(const keel_node_t *n);
uint64_t keel_node_match(const keel_node_t *n, uint64_t id);
const keel_node_config_t *keel_node_config(const keel_node_t *n);
/* Name of member id, or "?". */
const char *keel_node_member_name(const keel_node_t *n, uint64_t id);
/* The members of the configuration in force on this node (voters, then learners). */
const keel_memberdir_t *keel_node_members(const keel_node_t *n);
/* Port the peer listener bound (tests with port 0). */
int keel_node_peer_port(const keel_node_t *n);

#endif
