/* raft.h - Raft consensus core: a pure (sans-I/O) state machine in the etcd-raft "Ready" style. */
#ifndef KEEL_CORE_RAFT_H
#define KEEL_CORE_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/ktime.h"

/*
 * keel's Raft (Ongaro, "Consensus: Bridging Theory and Practice", 2014; cited as
 * "thesis §x") is a pure state machine. It never reads a clock, never does I/O and
 * has no globals; its randomness is a keel_rand_t seeded from the config. The driver
 * (the server's event loop in production, tests/sim in tests) feeds it inputs:
 *
 *   keel_raft_tick(r, now_ms)        time passes (the core counts ticks of tick_ms)
 *   keel_raft_step(r, msg)           a message from a peer arrived
 *   keel_raft_propose(r, data, len)  append a command (leader only)
 *   keel_raft_read_index(r, ctx)     start a linearizable read (leader only, §6.4)
 *   keel_raft_transfer_leadership()  hand leadership to a caught-up voter (§3.10)
 *   keel_raft_persisted(r, i, t)     the log up to index i (term t) is now durable
 *   keel_raft_compact(r, i, snap)    the application took a snapshot at applied index i
 *   keel_raft_propose_conf(r, conf)  change membership, one voter at a time (§4.1)
 *   keel_raft_leader_alive(r)        part of a message from the leader arrived (liveness only)
 *
 * and collects the effects with keel_raft_ready() / keel_raft_advance().
 *
 * THE READY CONTRACT. `if (keel_raft_ready(r, &rd)) { ...; keel_raft_advance(r); }`.
 * No other keel_raft_* call may happen between ready and advance: every pointer in rd
 * points into core memory that stays valid and unchanged exactly until advance returns.
 * The driver copies what it needs to keep longer (message entries included). For each
 * ready, in this order:
 *
 *   0. If rd.snapshot.index != 0: a snapshot from the leader replaces the log. Persist
 *      it with rd.snapshot.conf, in order with the writes of step 1 and before them;
 *      discard the whole stored log (entries after it follow in this or later
 *      readies); restore the state machine from it before applying rd.committed (it
 *      is then at rd.snapshot.index). Once the snapshot is durable, call
 *      keel_raft_persisted(r, rd.snapshot.index, rd.snapshot.term); until then reports
 *      about other writes are ignored.
 *   1. Durability. Start writing rd.hard_state (if hard_state_changed) and rd.entries to
 *      stable storage. rd.entries[0].index may be <= the last stored index: the stored
 *      log is then truncated from that index first (a follower's conflict, thesis §3.5).
 *      Writes of successive readies must become durable in order (a WAL does this). The
 *      write may complete later (asynchronously); when the entries up to index i of term
 *      t are durable, call keel_raft_persisted(r, i, t) (outside a ready/advance pair).
 *   2. rd.msgs may be sent at once, before the write of step 1 is durable. They are the
 *      leader's AppendEntries, heartbeats, snapshot chunks and TimeoutNow: the leader
 *      writes its own log in parallel with replication and counts itself in the commit
 *      quorum only for entries reported through keel_raft_persisted (thesis §10.2.1);
 *      and heartbeat answers, which acknowledge no entry (docs/raft.md).
 *   3. rd.msgs_after_persist may be sent only once the writes of this ready and of every
 *      earlier ready are durable (votes, append acknowledgements, all other follower
 *      traffic).
 *   4. Apply rd.committed in order. They are committed and locally durable.
 *   5. Answer rd.reads: a read with ok=1 may be served once the state machine has applied
 *      index `index`; ok=0 means leadership was lost and the read must be retried.
 *   6. keel_raft_advance(r).
 *
 * Ownership: payload bytes passed to propose/step are copied; the core owns its log.
 * Snapshots (thesis §5.1): the application snapshots its state machine at an applied
 * index and hands the bytes to keel_raft_compact, which keeps a private copy (to send to
 * lagging followers, in chunks of snapshot_chunk_bytes_max) and drops log entries up to
 * index - log_trailing_entries. The in-memory log therefore holds the trailing window
 * plus everything after the last snapshot.
 *
 * Membership (thesis §4): CONF entries carry a whole configuration; the core applies
 * the latest one in its log (reverting if a conflict truncates it) and reports them
 * among committed entries, which the state machine skips.
 */

#define KEEL_RAFT_VOTERS_MAX 9
#define KEEL_RAFT_MEMBERS_MAX 9           /* voters + learners */
#define KEEL_RAFT_CONF_CTX_BYTES_MAX 4096 /* opaque driver data carried by a configuration */
#define KEEL_RAFT_TICKS_PER_CALL_MAX 64   /* tick() catches up at most this many ticks */
/* Entry data is copied into blocks of this size (header included), filled in log order; an
   entry over a quarter of it gets a block of its own size (core/raft/log.c). */
#define KEEL_RAFT_LOG_BLOCK_BYTES (256u * 1024u)
/* A pipeline whose match index is stuck falls back to probing (resending from match + 1) after
   one heartbeat round, plus one per this many bytes in flight: a follower is given time to
   receive, write and sync a large entry before the leader decides it was lost and sends it
   again (core/raft/replication.c, keel__raft_recv_heartbeat_resp). */
#define KEEL_RAFT_STALL_ROUND_BYTES (1024u * 1024u)

typedef enum {
    KEEL_RAFT_FOLLOWER,
    KEEL_RAFT_PRECANDIDATE,
    KEEL_RAFT_CANDIDATE,
    KEEL_RAFT_LEADER,
} keel_raft_role_t;

typedef enum {
    KEEL_RAFT_ENTRY_NORMAL = 0,
    KEEL_RAFT_ENTRY_NOOP = 1, /* appended by each new leader (thesis §3.6.2, §6.4) */
    KEEL_RAFT_ENTRY_CONF = 2, /* a membership configuration, the core's own encoding */
} keel_raft_entry_type_t;

typedef struct keel_raft_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type; /* keel_raft_entry_type_t */
    uint32_t len;
    uint8_t *data; /* len bytes, NULL when len == 0; owned by the array's owner */
} keel_raft_entry_t;

/*
 * A membership configuration: voters decide; learners only receive the log. ctx is the
 * driver's opaque data about the members (keel server: names and addresses), like the
 * context of an etcd ConfChange: the core never reads it, but stores it in the CONF
 * entry and hands it on with snapshots, so every node that learns a configuration (from
 * the log, a snapshot or its own storage) learns the ctx that came with it.
 */
typedef struct keel_raft_conf {
    uint64_t voters[KEEL_RAFT_MEMBERS_MAX];
    uint32_t voters_n;
    uint64_t learners[KEEL_RAFT_MEMBERS_MAX];
    uint32_t learners_n;
    uint32_t ctx_len; /* <= KEEL_RAFT_CONF_CTX_BYTES_MAX */
    uint8_t ctx[KEEL_RAFT_CONF_CTX_BYTES_MAX];
} keel_raft_conf_t;

typedef struct keel_raft_hard_state {
    uint64_t term;
    uint64_t vote; /* node id voted for in term, 0 = none */
    uint64_t commit;
} keel_raft_hard_state_t;

typedef enum {
    KEEL_RAFT_MSG_APPEND = 1,
    KEEL_RAFT_MSG_APPEND_RESP,
    KEEL_RAFT_MSG_HEARTBEAT,
    KEEL_RAFT_MSG_HEARTBEAT_RESP,
    KEEL_RAFT_MSG_PREVOTE,
    KEEL_RAFT_MSG_PREVOTE_RESP,
    KEEL_RAFT_MSG_VOTE,
    KEEL_RAFT_MSG_VOTE_RESP,
    KEEL_RAFT_MSG_TIMEOUT_NOW,
    KEEL_RAFT_MSG_SNAPSHOT,
    KEEL_RAFT_MSG_SNAPSHOT_RESP,
} keel_raft_msg_type_t;

/*
 * One peer message. Plain data: the wire encoding is the driver's. Field use by type:
 *   APPEND       index/log_term = previous entry; commit; entries[entries_n]
 *   APPEND_RESP  reject=0: index = follower's match index.
 *                reject=1: index = the rejected previous index; hint_index/hint_term =
 *                first index of the conflicting term and that term (thesis §5.3 end),
 *                or hint_term = 0 and hint_index = follower's last index + 1.
 *   HEARTBEAT    commit (already min(match, commit)), ctx = ReadIndex round
 *   HEARTBEAT_RESP ctx echoed
 *   (PRE)VOTE    index/log_term = candidate's last entry; transfer = 1 if the campaign
 *                comes from a leadership transfer (ignores leader leases)
 *   (PRE)VOTE_RESP reject
 *   TIMEOUT_NOW  (leader -> transfer target: campaign now)
 *   SNAPSHOT     index/log_term = the snapshot's last entry; ctx = byte offset of this
 *                chunk; data[data_len]; last = 1 on the final chunk
 *   SNAPSHOT_RESP index = snapshot index; ctx = bytes the follower holds (next offset).
 *                Once installed the follower answers APPEND_RESP index = snapshot index.
 */
typedef struct keel_raft_msg {
    keel_raft_msg_type_t type;
    uint64_t from, to, term;
    uint64_t index, log_term;
    uint64_t commit;
    uint64_t ctx;
    uint64_t hint_index, hint_term;
    uint8_t reject;
    uint8_t transfer;
    uint8_t last;
    const keel_raft_entry_t *entries;
    size_t entries_n;
    const uint8_t *data; /* SNAPSHOT chunk bytes */
    size_t data_len;
    const keel_raft_conf_t *conf; /* SNAPSHOT: configuration at the snapshot index */
} keel_raft_msg_t;

typedef struct keel_raft_read_state {
    uint64_t ctx;   /* the caller's context from keel_raft_read_index */
    uint64_t index; /* serve the read once applied >= index */
    int ok;         /* 0: leadership lost before confirmation; retry */
} keel_raft_read_state_t;

typedef struct keel_raft_snapshot {
    uint64_t index, term;  /* last entry the snapshot covers; 0 = none */
    keel_raft_conf_t conf; /* membership at index: persist it with the snapshot */
    const uint8_t *data;
    size_t data_len;
} keel_raft_snapshot_t;

typedef struct keel_raft_ready {
    keel_raft_snapshot_t snapshot; /* index 0: nothing to install */
    int hard_state_changed;
    keel_raft_hard_state_t hard_state;
    const keel_raft_entry_t *entries;
    size_t entries_n;
    const keel_raft_msg_t *msgs;
    size_t msgs_n;
    const keel_raft_msg_t *msgs_after_persist;
    size_t msgs_after_persist_n;
    const keel_raft_entry_t *committed;
    size_t committed_n;
    const keel_raft_read_state_t *reads;
    size_t reads_n;
} keel_raft_ready_t;

/*
 * Deliberately broken rules for the simulator's "the checks bite" test. Never set
 * outside tests: each one violates a Raft safety argument.
 */
typedef enum {
    KEEL_RAFT_BREAK_NONE = 0,
    KEEL_RAFT_BREAK_COMMIT_OLD_TERM, /* commit a previous term's entry by counting (§3.6.2) */
    KEEL_RAFT_BREAK_VOTE_ANY_LOG,
    /* grant votes without the up-to-date check (§3.6.1) */
    KEEL_RAFT_BREAK_ACK_UNDURABLE,
    /* acknowledge appends before they are durable */
} keel_raft_break_t;

/*
 * Where the log's entry data blocks come from. All NULL (the default): malloc and free.
 * A driver may keep them apart from its heap (the server maps them itself, outside what
 * its snapshot child inherits: runtime/blockmem.h). alloc returns at least `bytes`
 * writable bytes or NULL; free gets back the pointer and the same `bytes`.
 */
typedef struct keel_raft_mem {
    void *(*block_alloc)(void *ctx, size_t bytes);
    void (*block_free)(void *ctx, void *block, size_t bytes);
    void *ctx;
} keel_raft_mem_t;

typedef struct keel_raft_config {
    uint64_t id; /* this node, nonzero */
    /* Bootstrap voters (the configuration before any CONF entry), including id; or
       voters_n = 0 for a node that joins an existing cluster and learns its
       configuration from the leader's log or snapshot. */
    uint64_t voters[KEEL_RAFT_VOTERS_MAX];
    size_t voters_n;
    keel_ms_t tick_ms;           /* one logical tick */
    uint32_t election_ticks_min; /* randomized election timeout in [min, max] ticks */
    uint32_t election_ticks_max;
    uint32_t heartbeat_ticks;          /* leader heartbeat interval */
    uint32_t msg_entries_max;          /* entries per AppendEntries */
    uint64_t msg_bytes_max;            /* payload bytes per AppendEntries (one entry may exceed) */
    uint32_t inflight_msgs_max;        /* pipelined AppendEntries per follower */
    uint64_t inflight_bytes_max;       /* pipelined payload bytes per follower */
    uint32_t entry_bytes_max;          /* one proposal */
    uint32_t reads_pending_max;        /* ReadIndex requests awaiting confirmation */
    uint32_t snapshot_chunk_bytes_max; /* InstallSnapshot chunk */
    uint64_t snapshot_bytes_max;       /* largest snapshot accepted from a leader */
    uint32_t log_trailing_entries;     /* kept behind a snapshot for slow followers */
    int pre_vote;                      /* thesis §9.6 */
    int check_quorum;                  /* leader steps down without a live majority; leases */
    /* Lease reads (thesis §6.4.1): serve a read at once while a majority acknowledged a
       heartbeat sent less than election_ticks_min - lease_drift_ticks ago. CLOCK
       DEPENDENT: correct only if tick rates differ by less than lease_drift_ticks per
       election_ticks_min. Needs check_quorum. While on, a starting node ignores votes
       for its first election_ticks_min ticks (it may have acknowledged a lease before
       a crash). */
    int lease_reads;
    uint32_t lease_drift_ticks;
    uint64_t seed;                /* election timeout randomness */
    keel_raft_mem_t mem;          /* log block memory; zeroed = malloc/free */
    keel_raft_break_t test_break; /* tests only */
} keel_raft_config_t;

/* What the driver found on stable storage at restart. */
typedef struct keel_raft_restore {
    keel_raft_hard_state_t hard_state;
    keel_raft_snapshot_t snapshot;    /* index 0: none; data is copied */
    const keel_raft_entry_t *entries; /* indexes snapshot.index + 1 ..., copied */
    size_t entries_n;
    uint64_t applied; /* state machine already reflects entries up to here (>= snapshot) */
} keel_raft_restore_t;

typedef struct keel_raft keel_raft_t;

void keel_raft_config_default(keel_raft_config_t *cfg);
int keel_raft_config_validate(const keel_raft_config_t *cfg, keel_errmsg_t *msg);

/* restore may be NULL (empty storage). Returns 0, KEEL_EINVAL (msg says why) or KEEL_ENOMEM. */
int keel_raft_new(keel_raft_t **out, const keel_raft_config_t *cfg,
                  const keel_raft_restore_t *restore, keel_ms_t now_ms, keel_errmsg_t *msg);
void keel_raft_free(keel_raft_t *r);

void keel_raft_tick(keel_raft_t *r, keel_ms_t now_ms);
keel_ms_t keel_raft_next_deadline_ms(const keel_raft_t *r);
/* 0 (also for stale messages, which are ignored), KEEL_EPROTO, KEEL_EINVAL or KEEL_ENOMEM. */
int keel_raft_step(keel_raft_t *r, const keel_raft_msg_t *m);
/* Appends one entry. KEEL_ENOTLEADER, KEEL_EBUSY (transfer), KEEL_ETOOBIG, KEEL_ENOMEM. */
int keel_raft_propose(keel_raft_t *r, const void *data, size_t len, uint64_t *index_out);
/* KEEL_ENOTLEADER, KEEL_EAGAIN (no entry of this term committed yet), KEEL_EFULL. */
int keel_raft_read_index(keel_raft_t *r, uint64_t ctx);
/* KEEL_ENOTLEADER, KEEL_EINVAL (not a peer voter), KEEL_EBUSY (already transferring). */
int keel_raft_transfer_leadership(keel_raft_t *r, uint64_t to);
/*
 * Membership change, one voter at a time (thesis §4.1): `next` may add or remove at
 * most one voter relative to the current configuration and change learners freely
 * (a learner catches up before it is promoted). A configuration takes effect on each
 * node when its entry is appended, not when committed. KEEL_ENOTLEADER; KEEL_EBUSY
 * while an earlier change is uncommitted or a transfer runs; KEEL_EAGAIN until the
 * leader has committed an entry of its term (the single-server-change fix, raft-dev
 * 2015); KEEL_EINVAL for a bad configuration or a change of more than one voter.
 */
int keel_raft_propose_conf(keel_raft_t *r, const keel_raft_conf_t *next);
const keel_raft_conf_t *keel_raft_conf(const keel_raft_t *r);
/* Decodes a CONF entry's data (ctx included); KEEL_EPROTO if it is not a valid one. A CONF
   entry written before ctx existed decodes with ctx_len = 0. */
int keel_raft_conf_decode(const uint8_t *data, size_t len, keel_raft_conf_t *out);
/*
 * Evidence short of a whole message that this node's leader is alive: the driver saw bytes of
 * a message from it arrive (a part of a large AppendEntries; a 63 MiB entry can take longer
 * than an election timeout to arrive and be stepped). A follower that knows a leader restarts
 * its election timer, as a message from that leader would; nothing else changes: no term, no
 * progress, no lease (heard_elapsed, what lease reads rely on, moves only on whole messages).
 * Safety is unaffected: the election timer only decides when to campaign (liveness). A
 * leader that is really gone stops sending bytes, and the timer runs out as before. No
 * effect on a leader, a candidate, or a follower that knows no leader.
 */
void keel_raft_leader_alive(keel_raft_t *r);
/* Start an election now (tests, operators). KEEL_EINVAL if already leader. */
int keel_raft_campaign(keel_raft_t *r);
void keel_raft_persisted(keel_raft_t *r, uint64_t index, uint64_t term);
/* The state machine's snapshot at applied index `index` (data copied). KEEL_EINVAL if
   index is beyond what was handed out for apply or not after the current snapshot;
   KEEL_ETOOBIG beyond snapshot_bytes_max; KEEL_ENOMEM. */
int keel_raft_compact(keel_raft_t *r, uint64_t index, const void *data, size_t len);
/* The same, taking ownership of data (malloc'd, len bytes) instead of copying it: a large
   snapshot is not copied on the caller's thread. data is freed on every return. */
int keel_raft_compact_owned(keel_raft_t *r, uint64_t index, uint8_t *data, size_t len);

int keel_raft_ready(keel_raft_t *r, keel_raft_ready_t *rd);
void keel_raft_advance(keel_raft_t *r);

/* Inspection (tests, metrics, the simulator's checks). */
keel_raft_role_t keel_raft_role(const keel_raft_t *r);
uint64_t keel_raft_id(const keel_raft_t *r);
uint64_t keel_raft_term(const keel_raft_t *r);
uint64_t keel_raft_leader(const keel_raft_t *r);
uint64_t keel_raft_commit(const keel_raft_t *r);
uint64_t keel_raft_last_index(const keel_raft_t *r);
uint64_t keel_raft_stable_index(const keel_raft_t *r);
uint64_t keel_raft_first_index(const keel_raft_t *r); /* first entry held in memory */
uint64_t keel_raft_snapshot_index(const keel_raft_t *r);
/* Membership at the latest snapshot: persist it with the snapshot bytes after compact. */
const keel_raft_conf_t *keel_raft_snapshot_conf(const keel_raft_t *r);
/* The configuration in force at index (its latest CONF entry at or before it); index must
   be at least the snapshot index (a snapshot's configuration, before taking one). */
void keel_raft_conf_at(const keel_raft_t *r, uint64_t index, keel_raft_conf_t *out);
/* Leader: member id's match index (how much of our log it holds); 0 otherwise. */
uint64_t keel_raft_match_index(const keel_raft_t *r, uint64_t id);
/* NULL if index is outside the log. Valid until the next mutating call. */
const keel_raft_entry_t *keel_raft_entry_at(const keel_raft_t *r, uint64_t index);
const char *keel_raft_role_name(keel_raft_role_t role);
const char *keel_raft_msg_type_name(keel_raft_msg_type_t t);

#endif
