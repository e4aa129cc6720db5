/* raft_int.h - internal state of the Raft core, shared by its files; not a public API. */
#ifndef KEEL_CORE_RAFT_INT_H
#define KEEL_CORE_RAFT_INT_H

#include "base/rand.h"
#include "core/raft/raft.h"

/* The in-memory log: ents[k] holds index offset + 1 + k; offset/offset_term describe
   the last entry dropped by compaction or covered by an installed snapshot. */
/* Entry data lives in blocks filled in log order (log.c); a block goes when its last entry
   is compacted or truncated away. */
typedef struct keel__raft_block keel__raft_block_t;

typedef struct keel__raft_log {
    keel_raft_entry_t *ents;
    keel__raft_block_t **blocks; /* blocks[i] holds ents[i].data (NULL when len is 0) */
    keel__raft_block_t *fill;    /* the block new entries are copied into */
    const keel_raft_mem_t *mem;  /* block memory (the config's) */
    size_t n, cap;
    uint64_t offset, offset_term;
    /* The indexes of the log's CONF entries, ascending: finding the configuration at an
       index is a binary search, not a walk back over millions of entries (a compaction
       asks twice, on the loop). */
    uint64_t *confs;
    size_t confs_n, confs_cap;
} keel__raft_log_t;

/* A snapshot owned by the core: ours to send, or one being received in chunks. */
typedef struct keel__raft_snap {
    uint64_t index, term;
    uint8_t *data;
    size_t len, cap;
} keel__raft_snap_t;

/* Leader's view of one voter (etcd's Progress; thesis §3.5, §10.2.1). */
enum { KEEL__PR_PROBE, KEEL__PR_REPLICATE, KEEL__PR_SNAPSHOT };

typedef struct keel__raft_progress {
    uint64_t id;
    uint64_t match, next;
    uint64_t commit_sent;  /* highest commit this peer has been told */
    uint64_t match_at_hb;  /* match when the previous heartbeat answer came */
    uint32_t stall_rounds; /* heartbeat answers in a row with match stuck (replication.c) */
    uint64_t read_acked;   /* highest ReadIndex round acknowledged */
    int state;
    int probe_sent;    /* PROBE: one message outstanding, wait for an answer */
    int recent_active; /* heard from since the last check-quorum round */
    int vote;          /* election tally: 0 none, 1 granted, -1 rejected */
    int is_self;
    int is_voter;
    uint64_t snap_index, snap_acked; /* SNAPSHOT: which snapshot, bytes acknowledged */
    int snap_sent;                   /* SNAPSHOT: a chunk is outstanding */
    /* Ring of in-flight AppendEntries (last index, bytes), capacity inflight_msgs_max. */
    uint64_t *infl_last;
    uint64_t *infl_bytes;
    uint32_t infl_start, infl_count;
    uint64_t infl_bytes_total;
} keel__raft_progress_t;

typedef struct keel__raft_read {
    uint64_t ctx, index, seq;
} keel__raft_read_t;

typedef struct keel__raft_msgs {
    keel_raft_msg_t *v;
    size_t n, cap;
} keel__raft_msgs_t;

struct keel_raft {
    keel_raft_config_t cfg;
    keel_rand_t rand;
    keel_raft_role_t role;
    uint64_t term, vote, leader, commit;
    keel__raft_log_t log;
    uint64_t stable;       /* durable prefix of the log (keel_raft_persisted) */
    uint64_t persist_next; /* first index not yet handed out in a ready */
    uint64_t applied;      /* last index handed out for apply */
    keel_raft_hard_state_t hs_handed;
    int ready_out;

    keel__raft_progress_t prs[KEEL_RAFT_MEMBERS_MAX]; /* members; [prs_n..] spare slots */
    size_t prs_n;
    size_t quorum;              /* of voters */
    keel_raft_conf_t conf;      /* latest configuration in the log */
    uint64_t conf_index;        /* its entry, 0 = base_conf */
    keel_raft_conf_t base_conf; /* configuration at the log offset */
    keel_raft_conf_t snap_conf; /* configuration at snap.index */
    int self_voter;

    uint32_t election_elapsed, heartbeat_elapsed, election_timeout;
    keel_ms_t next_tick_ms;

    uint64_t transfer_to; /* leader: transfer target, 0 = none */
    uint32_t transfer_elapsed;
    uint64_t read_seq;      /* heartbeat rounds (ctx): ReadIndex and leases */
    uint64_t ticks;         /* ticks since start, including skipped ones */
    uint32_t heard_elapsed; /* ticks since a leader's message (lease reads) */
#define KEEL__LEASE_ROUNDS 64
    uint64_t round_tick[KEEL__LEASE_ROUNDS]; /* tick each recent round was sent */
    int lease_off;                           /* leader sent TimeoutNow this term: no lease reads */
    int hb_pending;                          /* leader: send heartbeats at the next flush */
    keel__raft_read_t *reads_pending;
    uint32_t reads_start, reads_count;
    keel_raft_read_state_t *reads_out;
    size_t reads_out_n;

    keel__raft_msgs_t out_now, out_after;

    keel__raft_snap_t snap;    /* latest snapshot (compaction or installed) */
    keel__raft_snap_t snap_in; /* follower: chunks received so far */
    int snap_out;              /* snap must be handed out in the next ready */
    int snap_unpersisted;      /* installed snapshot not yet reported durable */
};

/* log.c */
void keel__raft_log_free(keel__raft_log_t *l);
uint64_t keel__raft_log_last(const keel__raft_log_t *l);
uint64_t keel__raft_log_term(const keel__raft_log_t *l, uint64_t index);
keel_raft_entry_t *keel__raft_log_at(const keel__raft_log_t *l, uint64_t index);
/* The newest CONF entry at or before index still in the log (NULL: none), then each older
   one: k is the cursor between the calls. */
keel_raft_entry_t *keel__raft_log_conf_at(const keel__raft_log_t *l, uint64_t index, size_t *k);
keel_raft_entry_t *keel__raft_log_conf_before(const keel__raft_log_t *l, size_t *k);
int keel__raft_log_append(keel__raft_log_t *l, uint64_t term, uint32_t type, const void *data,
                          size_t len);
void keel__raft_log_truncate(keel__raft_log_t *l, uint64_t from_index);
void keel__raft_log_compact(keel__raft_log_t *l, uint64_t to_index);
void keel__raft_log_reset(keel__raft_log_t *l, uint64_t index, uint64_t term);
int keel__raft_snap_set(keel__raft_snap_t *s, uint64_t index, uint64_t term, const void *data,
                        size_t len);

/* raft.c */
keel__raft_progress_t *keel__raft_progress(keel_raft_t *r, uint64_t id);
int keel__raft_send(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_become_follower(keel_raft_t *r, uint64_t term, uint64_t leader);
void keel__raft_become_leader(keel_raft_t *r);
void keel__raft_truncate(keel_raft_t *r, uint64_t from_index);

/* election.c */
void keel__raft_campaign(keel_raft_t *r, int pre_vote, int transfer);
void keel__raft_recv_vote(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_recv_vote_resp(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_reset_election_timer(keel_raft_t *r);

/* replication.c */
void keel__raft_progress_reset(keel_raft_t *r);
void keel__raft_become_probe(keel__raft_progress_t *p, uint64_t next);
void keel__raft_flush(keel_raft_t *r);
void keel__raft_bcast_heartbeat(keel_raft_t *r);
void keel__raft_maybe_commit(keel_raft_t *r);
int keel__raft_recv_append(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_recv_append_resp(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_recv_heartbeat(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_recv_heartbeat_resp(keel_raft_t *r, const keel_raft_msg_t *m);

/* membership.c */
int keel__raft_conf_check(const keel_raft_conf_t *c);
int keel__raft_conf_is_voter(const keel_raft_conf_t *c, uint64_t id);
int keel__raft_conf_decode(const uint8_t *buf, size_t len, keel_raft_conf_t *c);
void keel__raft_conf_set(keel_raft_t *r, const keel_raft_conf_t *c, uint64_t index);
void keel__raft_conf_recompute(keel_raft_t *r);
void keel__raft_conf_at(const keel_raft_t *r, uint64_t index, keel_raft_conf_t *out);

/* snapshot.c */
int keel__raft_send_snapshot(keel_raft_t *r, keel__raft_progress_t *p);
int keel__raft_recv_snapshot(keel_raft_t *r, const keel_raft_msg_t *m);
void keel__raft_recv_snapshot_resp(keel_raft_t *r, const keel_raft_msg_t *m);

/* readindex.c */
void keel__raft_reads_release(keel_raft_t *r);
void keel__raft_reads_fail_all(keel_raft_t *r);
uint64_t keel__raft_new_round(keel_raft_t *r);

#endif
