/* requests.h - a node's client requests: propose, forward, ReadIndex batches, park, answer. */
#ifndef KEEL_SERVER_REQUESTS_H
#define KEEL_SERVER_REQUESTS_H

#include "base/buf.h"
#include "base/list.h"
#include "base/ktime.h"
#include "base/map.h"
#include "base/metrics.h"
#include "core/raft/raft.h"
#include "proto/peer.h"
#include "sm/sm.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Where every client request of a node goes, from submission to its answer, with no
 * event loop, socket or clock of its own: the node (server/node.c) drives it on libuv,
 * and the deterministic simulator (tests/sim) drives this same code with simulated time
 * and messages. What it needs of its world comes through keel_reqs_env_t.
 *
 *   leader:   a write is proposed to the Raft core and answered when its entry applies
 *             (keel_reqs_applied); reads that arrive together share one ReadIndex round
 *             (at most one in flight) and are served once the state has applied the
 *             round's index. A write whose entry only reads (a read a connection sent
 *             behind its write) is an ordered read: served just before the next write of
 *             its origin applies, with no entry of its own (see requests.c).
 *   follower: a write is forwarded to the leader (FWD_PROPOSE, FWD_CONF) and the leader's
 *             reply relayed; the reads of one pass ask the leader for one read index
 *             (FWD_READ) and are served from this node's state once it has applied it.
 *   no leader known: requests wait (parked) and are dispatched again once one is.
 *
 * Outcomes reported to `done` (exactly once per accepted request, also at stop):
 *   status 0            reply holds the state machine's reply (maybe an error of the command)
 *   KEEL_ETIMEDOUT      no answer within timeout_ms: outcome unknown
 *   KEEL_ECONNRESET     forwarded to a leader that lost its place: outcome unknown
 *   KEEL_ECANCELED      the node stopped
 *   KEEL_ENOTMEMBER     this node is not a member of the configuration in force
 *   KEEL_ENOTLEADER     a leader refused it (it no longer led), and a later write of
 *                       this node went ahead of it: not applied, not sent again (order)
 *   KEEL_ECONFLICT      its entry was overwritten by a new leader's, and a later write
 *                       went ahead of it: not applied, not proposed again (order)
 *   KEEL_EREJECTED, or another code the Raft core gave: refused, nothing was proposed
 */
typedef void (*keel_reqs_done_fn)(void *ctx, int status, const uint8_t *reply, size_t len);

typedef enum keel_req_kind {
    KEEL_REQ_WRITE,        /* a local client's write */
    KEEL_REQ_READ,         /* a local client's linearizable read */
    KEEL_REQ_REMOTE_WRITE, /* leader: a write forwarded by a follower */
    KEEL_REQ_REMOTE_READ,  /* leader: a read index asked for by a follower */
} keel_req_kind_t;

typedef struct keel_req keel_req_t;
typedef struct keel_req_queue {
    keel_req_t *head, *tail;
} keel_req_queue_t;

struct keel_req {
    keel_req_kind_t kind;
    keel_reqs_done_fn done; /* NULL once answered (a tombstone left in a queue) */
    void *ctx;
    keel_ms_t deadline_ms;
    uint8_t *cmd; /* the state machine's entry (writes: the proposal; reads: what to run),
                     or, for a membership change, keel_node_conf_encode's bytes */
    size_t cmd_len;
    size_t cmd_cap;       /* cmd is the encode buffer it took over (keel_reqs_submit): its size */
    uint64_t index, term; /* writes: where proposed; reads: the read index */
    uint64_t origin, req_id; /* remote: who asked, and their id; forwarded: our id */
    uint64_t seq;            /* write-kind: keel_reqs_t.write_seq when it was accepted */
    uint8_t *conf_reply;     /* membership change proposed here: its result once committed */
    size_t conf_reply_len;   /* (keel_node_conf_result_t's encoding, server/node.h) */
    int is_conf;             /* cmd is a membership change */
    keel_ms_t start_ms;
    keel_req_queue_t before; /* leader, a write: the reads ordered just before it, served
                                from the state its entry is applied to (see ordered reads) */
    keel_list_t all;         /* in keel_reqs_t.all, in deadline order (local ones only) */
    keel_req_t *qnext;       /* the queue the request waits in; the pool's list when free */
    uint8_t cmd_inline[];    /* KEEL_REQ_CMD_INLINE_BYTES: cmd points here when it fits */
};

/*
 * Freed requests are kept for reuse (up to KEEL_REQ_POOL_MAX), each with room for a
 * command of KEEL_REQ_CMD_INLINE_BYTES (a SET of a 100-byte value encodes to ~150): a
 * write took a calloc and a malloc of sizes above glibc's fast bins, and their frees.
 */
#define KEEL_REQ_POOL_MAX 1024u
#define KEEL_REQ_CMD_INLINE_BYTES 256u
/* A client's entry at least this large is not copied into its request: the request takes
   the encode buffer over (requests.c, keel_reqs_submit). */
#define KEEL_REQ_ADOPT_BYTES_MIN (64u * 1024u)

void keel_req_push(keel_req_queue_t *q, keel_req_t *r);
keel_req_t *keel_req_pop(keel_req_queue_t *q);

/* What the requests need of the node around them. */
typedef struct keel_reqs_env {
    void *data;
    keel_ms_t (*now_ms)(void *data);         /* monotonic: deadlines */
    uint64_t (*unix_ms)(void *data);         /* wall clock: the leader's stamp on entries */
    int (*peer_up)(void *data, uint64_t id); /* a connection to member id is open */
    void (*send_fwd)(void *data, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f);
    /* Leader: a membership change request (r->is_conf); the callee answers, parks
     * (keel_reqs_park) or proposes it (keel_reqs_proposed). */
    void (*conf_change)(void *data, keel_req_t *r);
    /* Called before a read index is asked (lease reads need the core's clock now); may be
     * NULL. */
    void (*before_read_index)(void *data);
} keel_reqs_env_t;

typedef struct keel_reqs_config {
    uint64_t id;             /* this node's member id */
    size_t pending_max;      /* writes + reads waiting on this node */
    keel_ms_t timeout_ms;    /* outcome unknown after this */
    size_t entry_bytes_max;  /* the largest entry the Raft core takes: larger commands are
                                refused at submission with KEEL_ETOOBIG */
    keel_metrics_t *metrics; /* may be NULL */
    /* Tests only (the simulator's "checks bite" run, tests/sim): serve a read as soon as its
       read index is known, without waiting for this node to apply it. Never set in a server. */
    int test_serve_reads_early;
    /* Tests only: serve a read ordered before a write after that write applied. */
    int test_serve_ordered_late;
} keel_reqs_config_t;

/*
 * Leader: the reads of one origin (this node's clients: 0; or a follower's member id)
 * that are ordered behind that origin's writes and that no write of it has followed yet.
 * Kept for one pass at most (keel_reqs_step proposes what is left).
 */
typedef struct keel_req_chain {
    uint64_t origin;
    keel_req_queue_t tail;
} keel_req_chain_t;

typedef struct read_batch read_batch_t;
typedef struct fwd_reads fwd_reads_t;

typedef struct keel_reqs {
    keel_reqs_config_t cfg;
    keel_reqs_env_t env;
    keel_raft_t *raft;
    keel_sm_t sm;
    int removed;     /* the node is not a member: requests are refused */
    int stopped;     /* keel_reqs_cancel_all ran: nothing more is taken */
    keel_list_t all; /* local requests not yet answered, oldest (first deadline) first */
    size_t pending;
    keel_req_queue_t parked; /* waiting for a known leader */
    size_t parked_writes;    /* write-kind requests in parked: while there are any, new
                                write-kind requests wait behind them (a connection's order) */
    uint64_t write_seq;      /* write-kind requests accepted by this node so far */
    /* Requests submitted while a Ready is being handled (a request's answer can make its
       client submit the next one at once): the core takes no proposal until advance(). */
    keel_req_queue_t in_ready;
    int handling_ready;
    keel_req_queue_t writes; /* proposed, waiting for their index to apply; index-ordered */
    keel_req_queue_t reads_new;
    read_batch_t *batches_head, *batches_tail;
    keel_req_queue_t reads_ready; /* read index known; waiting for applied >= index */
    keel_req_chain_t *chains;     /* ordered reads waiting for their origin's next write */
    size_t chains_n, chains_cap;
    keel_map_t fwd;   /* req_id -> request forwarded to the leader */
    keel_req_t *pool; /* freed requests kept for reuse (qnext-linked) */
    size_t pool_len;
    uint64_t next_req_id, next_read_ctx;
    keel_req_queue_t reads_fwd_new; /* follower: reads of this pass, for the next FWD_READ */
    fwd_reads_t *fwd_reads;         /* follower: batches asked of the leader, unanswered */
    keel_buf_t scratch, reply;
    keel_counter_t *m_proposals, *m_forwarded, *m_timeouts;
    keel_histogram_t *m_commit;
} keel_reqs_t;

int keel_reqs_init(keel_reqs_t *q, const keel_reqs_config_t *cfg, const keel_reqs_env_t *env,
                   keel_raft_t *raft, keel_sm_t sm);
/* Answers every request KEEL_ECANCELED (the node stops); then free. */
void keel_reqs_cancel_all(keel_reqs_t *q);
void keel_reqs_free(keel_reqs_t *q);

/* A client's command (argv borrowed): 0 (done will be called, maybe before this returns),
 * or KEEL_EFULL / KEEL_ECANCELED / KEEL_ENOMEM / KEEL_ETOOBIG (the entry would be larger
 * than entry_bytes_max) / the encoding's error, done not called. */
int keel_reqs_submit(keel_reqs_t *q, keel_req_kind_t kind, int argc, const uint8_t *const *argv,
                     const size_t *lens, keel_reqs_done_fn done, void *ctx);
/* The same for an entry already encoded (housekeeping) or a membership change. */
int keel_reqs_submit_entry(keel_reqs_t *q, keel_req_kind_t kind, const uint8_t *cmd, size_t len,
                           int is_conf, keel_reqs_done_fn done, void *ctx);

/* A forwarding frame from member `from`. */
void keel_reqs_on_fwd(keel_reqs_t *q, uint64_t from, keel_peer_type_t type,
                      const keel_peer_fwd_t *f);
/* The connection to member id broke: what was forwarded to it may never be answered. */
void keel_reqs_peer_lost(keel_reqs_t *q, uint64_t id);
/* A leader is known (again, or another one): re-dispatch parked requests and give up on
 * writes forwarded to another node. */
void keel_reqs_leader_known(keel_reqs_t *q, uint64_t leader, int changed);

/* In the node's ready pass: */
void keel_reqs_ready_begin(keel_reqs_t *q);
void keel_reqs_ready_end(keel_reqs_t *q);
/* The committed entry e is about to be applied: serve the reads ordered just before it. */
void keel_reqs_before_apply(keel_reqs_t *q, const keel_raft_entry_t *e);
/* The committed entry e was applied (its reply in `reply`): answer the writes waiting at
 * or before its index. */
void keel_reqs_applied(keel_reqs_t *q, const keel_raft_entry_t *e, const keel_buf_t *reply);
/* A ReadIndex round the core confirmed (or failed). */
void keel_reqs_read_state(keel_reqs_t *q, const keel_raft_read_state_t *rs);
/* The leader's snapshot replaced the state up to index: writes waiting at covered indexes
 * cannot tell whether their entry is in it. */
void keel_reqs_snapshot_installed(keel_reqs_t *q, uint64_t index);
/*
 * One step of the pass that runs until nothing moves: start a ReadIndex round for the
 * reads that arrived, dispatch what was submitted during the ready, serve the reads whose
 * index is applied. 1 if something moved (the caller drains the core's ready again).
 */
int keel_reqs_step(keel_reqs_t *q);
/* End of the pass: a follower asks the leader for this pass's read index. */
void keel_reqs_end_pass(keel_reqs_t *q);
/* Every tick: answer requests past their deadline, drop forwarded batches left empty. */
void keel_reqs_tick(keel_reqs_t *q);

/* The wall-clock time reads judge expiry by: this node's clock, never earlier than the
 * newest applied entry's stamp (a read never goes back in replicated time). */
uint64_t keel_reqs_read_now_ms(const keel_reqs_t *q);

/* For the membership code (the leader's conf_change): */
void keel_reqs_park(keel_reqs_t *q, keel_req_t *r);
void keel_reqs_proposed(keel_reqs_t *q, keel_req_t *r, uint64_t index);
/* Answers a write with reply (to its client, or back to the follower) and frees it. */
void keel_reqs_answer_write(keel_reqs_t *q, keel_req_t *r, const uint8_t *reply, size_t len);

#endif
