/* ap_int.h - the inside of the AP keyspace in keel server, shared by the files that make it up. */
#ifndef KEEL_SERVER_AP_INT_H
#define KEEL_SERVER_AP_INT_H

#include "server/server_int.h"

#include "base/map.h"
#include "core/applace.h"
#include "core/appolicy.h"
#include "core/apval.h"
#include "core/merkle.h"
#include "proto/apmsg.h"
#include "runtime/apstore.h"

#include <stddef.h>
#include <stdint.h>

/*
 * docs/ap.md has the design; this is the part of it that runs in keel server today:
 *
 * - Placement: the vnode ring (core/applace) of the members of the configuration in
 *   force; a key's homes are its first AP_REPLICAS_MAX (3) distinct members, or all of
 *   them in a smaller cluster.
 * - A write (PUT, DEL, INCR, SADD, SREM) on any node: a node that is not a home of the key
 *   forwards it (FORWARD) to the first home it has a live connection to, which coordinates
 *   it and answers in a FORWARD_REPLY (if no home can be sent to, the node coordinates it
 *   itself). The coordinator applies it to its own copy (it issues the dot, so its actor's
 *   history stays contiguous) and stores it durably (runtime/apstore: WAL + fdatasync),
 *   sends the new state to the other homes (WRITE), and answers once W homes stored it
 *   (itself included if it is one) with how many did, or after AP_TIMEOUT_MS with
 *   -NOQUORUM and the count it reached.
 * - A read (GET): READ to the homes, the merge of the first R replies is the answer (its
 *   siblings and one context); once every home answered (or at the timeout) each replier
 *   whose state differs gets the merge (read repair).
 * - The replica side: merge what arrives into the store; one fdatasync at the end of the loop
 *   turn for all the turn's writes (group commit), then their ACKs.
 *
 * - Sloppy quorum: a home that cannot be sent to (no live connection) at once, or that has
 *   not acknowledged within AP_FALLBACK_MS, gets a stand-in: the next node of the key's
 *   preference list after the homes (core/applace), sent HINTED_WRITE naming the home.
 *   The fallback stores the state and the hint durably (runtime/apstore, one fdatasync)
 *   before it ACKs, and its ACK counts toward W for that home. Each fallback stands in
 *   for one home, and W counts homes, not answers: a home whose ACK comes after its
 *   stand-in's counts once (both copies are that home's; the stand-in's is handed to it
 *   and then held by no home but it).
 * - Hinted handoff: every AP_HANDOFF_INTERVAL_MS a node sends up to AP_HANDOFF_BATCH of
 *   its hinted keys' current states to their homes (HANDOFF, carrying the hint's
 *   version); the home stores it durably (one fdatasync per tick for all it got, group
 *   commit) and answers HANDOFF_ACK; only then is the hint dropped, and only if no newer
 *   hinted write renewed it meanwhile.
 * - Anti-entropy per shared range: for every peer p this node keeps a Merkle tree
 *   (core/merkle) of the keys both are homes of (the ring segments they share), updated
 *   on every change of the store. Every --ap-antientropy-ms it sends the next peer that
 *   tree (TREE); the peer diffs it with its tree for the sender, pushes its keys of the
 *   differing ranges that both are homes of and asks for the sender's (PULL). A replica
 *   that missed writes, or lost its data, catches up without being read.
 *
 * - Conflict policy per key prefix (core/appolicy, --ap-policy, the same table on every
 *   node): it fixes the kind of value a key holds (siblings, lww, pn-counter, or-set).
 *   A command of another kind is refused before anything is written, and a replica
 *   refuses a state of another kind than its table gives the key (so nodes whose tables
 *   differ fail writes, visibly, rather than hold keys that can never merge). Every
 *   merge (replication, read repair, handoff, anti-entropy) is the kind's own.
 *
 * - Moving keys on a membership change (ap_move.c): each node walks its store in bounded
 *   batches and queues the keys whose preference list gained a member as hints for it
 *   ('move hints'), which hinted handoff delivers; the ring moved for is recorded in the
 *   store, so a restart resumes.
 * - Dropping copies (ap_clean.c): a copy of a key this node is not a home of, holding none
 *   of its own dots and no hint, is dropped once every home acknowledged (after its
 *   fdatasync) a HANDOFF of that very state and the state has not changed since. A copy
 *   that holds its own dots leaves its key's hash behind: a later write of that key here
 *   takes a new actor first (ap_cmds.c).
 *
 * Messages travel once (node.h keel_node_send_ap): a lost one costs the coordinator its answer
 * (or the handoff a retry), never a wrong one.
 *
 * The keyspace is split by job, one file each:
 *   ap.c          placement (the ring of the members in force), sending messages, the
 *                 tick (timeouts, stand-ins, anti-entropy and handoff rounds), start, stop
 *   ap_cmds.c     the KEEL.AP.* commands: options, the coordinator's first step of a write
 *                 or a read
 *   ap_coord.c    the coordinator's operations in flight: quorum answers, read repair,
 *                 sloppy quorum's stand-ins
 *   ap_replica.c  the replica side (messages from peers), the per-peer Merkle trees,
 *                 hinted handoff, anti-entropy
 *   ap_move.c     moving keys to the homes a ring change gave them
 *   ap_clean.c    dropping copies of keys this node is no longer a home of, once every
 *                 home acknowledged holding them
 * Functions shared between them are keel__ap_*, declared at the end of this file.
 */
#define AP_REPLICAS_MAX 3
#define AP_ASKED_MAX (2 * AP_REPLICAS_MAX) /* the homes and one stand-in for each */
#define AP_FALLBACK_MS 300
#define AP_HANDOFF_INTERVAL_MS 500
#define AP_HANDOFF_BATCH 256
#define AP_HANDOFF_ACKS_MAX 256 /* handed-off keys merged before one fdatasync and their ACKs */
#define AP_WRITE_ACKS_MAX 1024  /* replica writes merged before one fdatasync and their ACKs */
#define AP_HELD_WRITES_MAX 1024 /* writes coordinated here held for one fdatasync (ap_coord) */
#define AP_OPS_MAX 4096u
#define AP_TIMEOUT_MS 1000
/* a forwarded write's answer: the home's own timeout, and room for the way there and back */
#define AP_FORWARD_TIMEOUT_MS (AP_TIMEOUT_MS + AP_FALLBACK_MS)
#define AP_TICK_MS 20
#define AP_CTX_HEX_BYTES_MAX (2u * KEEL_VV_ENCODED_BYTES_MAX)
#define AP_TREE_NODES (2u << KEEL_APSTORE_MERKLE_DEPTH)
#define AP_TREE_LEAVES (1u << KEEL_APSTORE_MERKLE_DEPTH)

typedef struct ap_op {
    struct ap_op *next;
    uint64_t req;
    int is_read;
    uint8_t want_kind;          /* reads: the kind the command reads (0: any, as GET) */
    keel_resp_deferred_t *slot; /* NULL once answered */
    int need;
    uint64_t homes[AP_REPLICAS_MAX];
    int homes_n;
    uint64_t fallbacks[AP_REPLICAS_MAX]; /* writes: the preference list after the homes */
    int fallbacks_n, fallbacks_used;
    uint64_t asked[AP_ASKED_MAX]; /* writes: every node that holds (or was sent) it */
    int for_home[AP_ASKED_MAX];   /* writes: the home index asked[j] stores the copy of */
    int asked_n;
    uint32_t covered; /* writes: bit i: home i answered or has a stand-in */
    uint32_t stored;  /* writes: bit i: home i or its stand-in stored it (what W counts) */
    int sloppy_done;  /* writes: the silent homes got their stand-ins */
    keel_ms_t sloppy_ms;
    keel_buf_t val; /* writes: the state sent (core/apval encoding) */
    uint64_t answered[AP_ASKED_MAX];
    uint64_t digest[AP_ASKED_MAX]; /* reads: each replier's state (0: none) */
    int answered_n;
    keel_apval_t acc; /* reads: the merge so far (kind 0: nothing yet) */
    uint8_t *key;
    size_t key_len;
    keel_ms_t deadline_ms;
    int held; /* writes: its copy here is logged, not synced: nothing sent yet (ap_coord.c) */
    uint64_t answered_standin[AP_REPLICAS_MAX]; /* reads: stand-ins that answered */
    int standins_answered;
    uint64_t fwd_to;              /* a write forwarded to this home, waiting for its answer */
    uint64_t reply_to, reply_req; /* a write coordinated for a node that forwarded it */
} ap_op_t;

/* Whether the op still owes an answer (to a client here, or to a forwarding node). */
static inline int keel__ap_op_open(const ap_op_t *o)
{
    return o->slot != NULL || o->reply_to != 0;
}

/* A client's write as parsed, wherever it came from (a client here, or a FORWARD). */
typedef struct ap_wreq {
    int what; /* KEEL_APMSG_FWD_* */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *arg; /* the value, delta or member (none for DEL) */
    size_t arg_len;
    int has_ctx;
    keel_vv_t ctx;
    int level; /* W */
} ap_wreq_t;

/* Dropping copies of keys this node is no longer a home of (ap_clean.c). */
#define AP_CLEAN_REQ_BIT (1ull << 63) /* in a HANDOFF's req: the drop walk's, not a hint's */
typedef struct ap_clean {
    keel_map_t cand; /* key -> its candidate (ap_clean.c) */
    int active;      /* a pass is under way */
    size_t pos, layout, sends;
    uint64_t seq;
    keel_ms_t step_ms, pass_ms;
} ap_clean_t;

/* The move of keys on a ring change (ap_move.c). */
typedef struct ap_move {
    keel_applace_t from;                   /* the ring of base[] */
    uint64_t base[KEEL_APPLACE_NODES_MAX]; /* the ring last moved for (sorted ids) */
    uint32_t base_n;                       /* 0: none recorded yet */
    int active;                            /* a walk from base to the ring in force is on */
    size_t pos, layout, scanned, queued;
    keel_ms_t next_ms;
} ap_move_t;

struct ap {
    server_t *srv;
    keel_apstore_t *store;
    keel_applace_t place;
    keel_appolicy_t policy; /* the conflict policy per key prefix (--ap-policy) */
    uint64_t ids[KEEL_APPLACE_NODES_MAX];
    uint32_t ids_n;
    ap_op_t *ops;
    size_t ops_n;
    uint64_t next_req;
    keel_timer_t timer;
    int timer_inited;
    keel_buf_t msg;
    keel_ms_t ae_next_ms, handoff_next_ms;
    uint32_t ae_turn;
    size_t handoff_pos;
    /* tree[i]: the keys this node and member ids[i] are both homes of (none for itself) */
    keel_merkle_t tree[KEEL_APPLACE_NODES_MAX];
    int trees_ok;
    keel_counter_t *m_repaired, *m_ae_rounds, *m_ae_pushed, *m_noquorum, *m_ae_ranges;
    keel_counter_t *m_hints_stored, *m_hints_delivered, *m_handoffs_sent, *m_reads,
        *m_read_siblings, *m_policy_refused;
    keel_gauge_t *m_hints_pending;
    keel_buf_t acks; /* HANDOFF_ACKs waiting for the sync: u64 to | u32 n | n bytes */
    size_t acks_n;
    keel_buf_t wacks; /* replica writes' ACKs waiting for the turn's sync, the same way */
    size_t wacks_n;
    int turn_dirty; /* a replica write was logged this turn, not synced yet */
    ap_move_t mv;
    int move_inited;
    keel_counter_t *m_move_keys, *m_move_batches, *m_move_passes, *m_hints_retargeted;
    keel_gauge_t *m_move_pending, *m_keys, *m_syncs, *m_leaving, *m_drained;
    int drained_said; /* the 'drained' line was logged (once per time it becomes true) */
    ap_clean_t cl;
    int clean_inited;
    keel_counter_t *m_dropped;
    keel_gauge_t *m_drop_pending;
    keel_counter_t *m_compactions;
    keel_gauge_t *m_log_bytes;
    keel_histogram_t *m_compact_seconds;
    keel_ms_t compact_next_ms; /* after a failed compaction: not before this */
    uint64_t compact_before;   /* the compaction under way: log bytes when it started, */
    keel_ms_t compact_started_ms, compact_loop_ms; /* when, and the loop's share */
    keel_counter_t *m_forwarded, *m_coord_off_home, *m_actor_renewals;
    keel_gauge_t *m_dropped_own;
    int held_n;     /* writes held for the sync of their copy here (ap_coord.c) */
    int own_failed; /* that sync failed: no state leaves, no read is answered */
};

/* ap_cmds.c */
/* The actor this node issues dots as (member id and store incarnation). */
uint64_t keel__ap_self_actor(const ap_t *ap);
/* Coordinates a write here; the answer goes to c, or to reply_to in a FORWARD_REPLY. 0: the op
 * will answer; -1: the error line is in err (nothing stored, nothing answered). */
int keel__ap_coord_write(ap_t *ap, const ap_wreq_t *w, keel_resp_client_t *c, uint64_t reply_to,
                         uint64_t reply_req, char *err, size_t errsz);
/* 0 if a state of this kind may be stored under key here, else KEEL_EREJECTED with why. */
int keel__ap_policy_allows(const ap_t *ap, const uint8_t *key, size_t len, uint8_t kind,
                           keel_errmsg_t *msg);

/* ap.c */
int keel__ap_ring_refresh(ap_t *ap);
int keel__ap_prefs_now(const ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes,
                       uint64_t *fallbacks, int *fallbacks_n);
uint64_t keel__ap_self_id(const ap_t *ap);
int keel__ap_send_msg(ap_t *ap, uint64_t to, const keel_apmsg_t *m);
int keel__ap_send_state(ap_t *ap, uint8_t type, uint64_t to, uint64_t req, const uint8_t *key,
                        size_t key_len, const keel_apval_t *v);
int keel__ap_send_write(ap_t *ap, uint64_t to, uint64_t req, const uint8_t *key, size_t key_len,
                        const keel_apval_t *v);

/* ap_coord.c */
ap_op_t *keel__ap_op_new(ap_t *ap, keel_resp_client_t *c, int is_read, int need,
                         const uint64_t *homes, int homes_n, const uint8_t *key, size_t key_len);
void keel__ap_op_free(ap_t *ap, ap_op_t *o);
ap_op_t *keel__ap_op_find(ap_t *ap, uint64_t req);
int keel__ap_is_home(const ap_op_t *o, uint64_t id);
int keel__ap_was_asked(const ap_op_t *o, uint64_t id);
int keel__ap_answered(const ap_op_t *o, uint64_t id);
void keel__ap_answer_write(ap_t *ap, ap_op_t *o);
/* Answers the op with an error line (to its client, or to the node that forwarded it). */
void keel__ap_op_error(ap_t *ap, ap_op_t *o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A FORWARD_REPLY for one of this node's forwarded writes. */
void keel__ap_forward_replied(ap_t *ap, uint64_t from, const keel_apmsg_t *m);
/* The homes whose copy of a write is stored, each once: by the home itself or its stand-in. */
static inline int keel__ap_homes_stored(const ap_op_t *o)
{
    return __builtin_popcount(o->stored);
}
void keel__ap_read_repair(ap_t *ap, ap_op_t *o);
/* The homes a read has heard from, each once: by itself or by a stand-in (what R counts). */
static inline int keel__ap_read_replies(const ap_op_t *o)
{
    return __builtin_popcount(o->covered);
}
int keel__ap_read_stand_in(ap_t *ap, ap_op_t *o, int i);
void keel__ap_read_go_sloppy(ap_t *ap, ap_op_t *o);
void keel__ap_read_got(ap_t *ap, ap_op_t *o, uint64_t from, const keel_apval_t *v);
int keel__ap_write_settled(const ap_op_t *o);
void keel__ap_write_acked(ap_t *ap, ap_op_t *o, uint64_t from);
int keel__ap_stand_in(ap_t *ap, ap_op_t *o, int i);
/* A write whose copy here is logged (not synced): held until keel__ap_own_flush. */
void keel__ap_write_hold(ap_t *ap, ap_op_t *o);
/* One fdatasync for the copies of every held write, then their sends (0, or the sync's error:
 * the held writes are answered with it). */
int keel__ap_own_flush(ap_t *ap);
int keel__ap_go_sloppy(ap_t *ap, ap_op_t *o);

/* ap_replica.c */
void keel__ap_trees_rebuild(ap_t *ap);
void keel__ap_observe(void *arg, const uint8_t *key, size_t len, uint64_t old_item,
                      uint64_t new_item);
void keel__ap_handoff_round(ap_t *ap);
void keel__ap_ae_round(ap_t *ap);
void keel__ap_handoff_acks_flush(ap_t *ap);
void keel__ap_write_acks_flush(ap_t *ap);

/* ap_move.c (and below) */
int keel__ap_move_init(ap_t *ap);
void keel__ap_move_free(ap_t *ap);
void keel__ap_move_ring_changed(ap_t *ap);
void keel__ap_move_step(ap_t *ap);
size_t keel__ap_move_pending(const ap_t *ap);
/* ap_clean.c */
int keel__ap_clean_init(ap_t *ap);
void keel__ap_clean_free(ap_t *ap);
void keel__ap_clean_step(ap_t *ap);
/* Start a pass at the next step (a move walk ended). */
void keel__ap_clean_soon(ap_t *ap);
/* A hint was delivered: its key may be droppable; a pass within AP_CLEAN_RETRY_MS. */
void keel__ap_clean_hint_delivered(ap_t *ap);
void keel__ap_clean_acked(ap_t *ap, uint64_t from, const uint8_t *key, size_t len, uint64_t req);
/* Whether this node may acknowledge a drop walk's HANDOFF of key: only as a home of it on its
   own ring in force. Two nodes whose rings differ would otherwise each drop on the other's
   acknowledgement, each thinking the other a home (ap_clean.c). */
int keel__ap_clean_may_ack(ap_t *ap, const uint8_t *key, size_t len);
/* Keys waiting for their homes' acknowledgements before they may be dropped. */
size_t keel__ap_clean_pending(const ap_t *ap);

/* ap_move.c */
/* 1 while this node is out of the ring in force (removed from the configuration). */
int keel__ap_leaving(const ap_t *ap);
/* 1 when it is leaving and done: its walk finished and every hint it held was delivered. */
int keel__ap_drained(const ap_t *ap);

#endif
