/* node_int.h - the inside of a keel server node, shared by the files that make it up. */
#ifndef KEEL_SERVER_NODE_INT_H
#define KEEL_SERVER_NODE_INT_H

/*
 * A node is split by job, one file each:
 *   node.c       config, the loop: the tick, the ready pass (persist, send, apply, reads),
 *                WAL group commit on the sync thread, start and stop, status
 *   requests.c   client requests: propose, forward, ReadIndex batches, park, answer (no
 *                libuv: the simulator drives the same code; server/requests.h)
 *   peers.c      the peer transport: outbound connections with held frames, inbound
 *                connections, frame dispatch, telling removed members
 *   members.c    membership administration: typed changes, the leader's configuration
 *                entries, learner promotion, client addresses, the directory in force
 *   snapshots.c  snapshot files: the format, a forked child writing one, loading it back,
 *                installing the leader's
 * Functions shared between them are keel__node_*, declared at the end of this file.
 */
#include "base/list.h"
#include "server/node.h"
#include "server/raftlog.h"
#include "server/requests.h"
#include "proto/frame.h"
#include "proto/peer.h"
#include "runtime/blockmem.h"
#include "runtime/snapfile.h"
#include "runtime/tcp.h"

#include <sys/types.h>
#include <uv.h>

/* Bytes of free room offered to each read of a peer connection. */
#define PEER_READ_BYTES (64u * 1024u)
/* A Raft frame from the leader at least this large restarts the election timer while it
   arrives (peers.c, on_inconn_read). */
#define PEER_ALIVE_FRAME_BYTES_MIN (1024u * 1024u)
/* The largest frame a peer writes back on our outbound connection (REMOVED: 18 bytes). */
#define PEER_BACK_FRAME_BYTES_MAX 64u

/* Freed Raft log blocks kept for reuse: the log regrows after every compaction to about
   the size that triggers the next snapshot (snapshot_log_bytes_min, 64 MiB by default). */
#define LOG_SPARE_BYTES_MAX (64u * 1024u * 1024u)
/* Handoff times kept for keel_wal_fsync_seconds: groups awaiting durability beyond this
 * many (never seen: one sync takes every group handed over) are not observed. */
#define SYNC_SUBMIT_TIMES_MAX 64u

/* ---- peers ----------------------------------------------------------------------- */

typedef struct held_mark {
    uint64_t gen;
    size_t end;
} held_mark_t;

typedef struct peer {
    keel_node_t *node; /* NULL: a free slot */
    keel_node_member_t member;
    int closing;               /* the slot is free once the connector has closed */
    keel_ms_t linger_until_ms; /* removed from the configuration: closes at this time */
    keel_connector_t conn;
    int connected;
    keel_buf_t out;  /* frames ready to send */
    keel_buf_t held; /* frames that wait for a WAL sync (msgs_after_persist) */
    held_mark_t *marks;
    size_t marks_n, marks_cap;
    keel_buf_t wbuf; /* being written */
    uv_write_t wreq;
    uv_write_t hello_req;
    uint8_t hello[64]; /* one HELLO frame: 34 bytes */
    int writing;
    keel_buf_t rbuf;               /* outbound: the only frame a peer sends back is REMOVED */
    keel_frame_decoder_t back_dec; /* ... decoded here, PEER_BACK_FRAME_BYTES_MAX at most */
    keel_counter_t *bytes_out, *dropped;
    keel_ms_t heard_ms; /* when a whole Raft message from this member last arrived */
} peer_t;

typedef struct inconn {
    uv_tcp_t tcp;
    keel_node_t *node;
    keel_buf_t in;
    keel_frame_decoder_t dec;
    uint64_t from;
    int closing;
    int told_removed; /* from was removed for good: told so, its frames (but AP ones) dropped */
    uint8_t removed_out[32]; /* that REMOVED frame (18 bytes), written once */
    uv_write_t removed_req;
    keel_list_t link; /* in keel_node.inconns */
} inconn_t;

/* ---- the node ---------------------------------------------------------------------- */

struct keel_node {
    keel_loop_t *loop;
    keel_node_config_t cfg;
    keel_raft_t *raft;
    keel_blockmem_t *log_mem; /* the core's log blocks (runtime/blockmem.h); outlives raft */
    keel_raftlog_t *log;
    keel_sm_t sm; /* the data (sm/sm.h), the owner's */
    /* One slot per member but this node; twice as many as members, so that peers of
       removed members can finish closing while new members' peers open. */
    peer_t peers[2 * KEEL_RAFT_MEMBERS_MAX];
    keel_memberdir_t members; /* the configuration in force, with names and addresses */
    /* Scratch for one configuration at a time (4 KiB each: not on the stack, and not in
       function statics, so that two nodes can live in one process). */
    keel_raft_conf_t conf_scratch, applied_conf;
    keel_memberdir_t applied_dir;
    keel_memberdir_t tell_dir;   /* keel__node_tell_removed's scratch */
    uint64_t members_conf_index; /* last index seen when members was computed */
    int members_dirty;
    int evicted; /* a peer said a committed configuration removed us: for good */
    int promote_inflight;
    int client_addr_inflight; /* KEEL.CLUSTER UPDATE of our client address */
    /* --preferred-leader (prefer.c): since when the preferred member has been a connected,
       caught-up voter while we lead (0: it is not), and the next transfer not before */
    keel_ms_t prefer_since_ms, prefer_next_ms, prefer_retry_ms;
    int prefer_warned;             /* the preferred name is no member: said once */
    keel_ms_t client_addr_next_ms; /* not asked again before this */
    uv_tcp_t listener;
    keel_list_t inconns; /* inbound peer connections (inconn_t.link) */
    uv_check_t check;
    keel_timer_t tick;
    keel_ms_t raft_ms;     /* the core's clock: one tick per timer callback (on_tick) */
    uv_async_t sync_async; /* the WAL's sync thread made groups durable (wal.h) */
    /* sync groups are numbered 1, 2, ... in the order they are handed to the WAL; they
       become durable in order. gen_started: handed over; gen_durable: seen durable. */
    uint64_t gen_started, gen_durable, last_write_gen;
    keel_us_t sync_submit_us[SYNC_SUBMIT_TIMES_MAX]; /* by gen % max, for m_fsync */
    uint64_t hs_term, hs_vote; /* the last hard state appended to the WAL, minus commit */
    keel_reqs_t reqs;          /* client requests (server/requests.h), no libuv inside */
    int reqs_inited;
    uint64_t last_leader;
    uint64_t leader_changes;
    keel_buf_t scratch, reply;
    keel_peer_scratch_t dec_scratch;
    int stopping, handles_open;
    void (*closed)(void *data);
    void *closed_data;
    /* snapshots */
    uint64_t snap_index;           /* newest durable (or being written) snapshot */
    int sweep_inflight;            /* an expiry or lease sweep is proposed */
    pid_t snap_child;              /* the process writing a snapshot, or 0 */
    uint64_t log_bytes_since_snap; /* entry bytes applied since the last snapshot started */
    keel_us_t snap_started_us;
    uint64_t snap_job_index, snap_job_term;
    keel_raft_conf_t snap_job_conf; /* the configuration at snap_job_index */
    uv_work_t snap_load_work;       /* reads the child's file back off the loop */
    int snap_loading;
    int snap_load_rc;
    keel_errmsg_t snap_prune_err; /* the work's prune of older files, when it failed */
    uint8_t *snap_sm;             /* the loaded state, handed to the core (owned until then) */
    size_t snap_sm_len;

    uint64_t installed_index, installed_term; /* to report durable after the ready */
    /* metrics */
    keel_counter_t *m_snapshots;
    keel_counter_t *m_applied, *m_leader_changes, *m_prefer_transfers;
    keel_histogram_t *m_fsync, *m_fdatasync, *m_batch;
};

#define PEER_SLOTS (2 * KEEL_RAFT_MEMBERS_MAX)

/*
 * A removed member's connection stays open a while: a reply to a request it forwarded
 * (its own removal, when it led) must still reach it, and it is told REMOVED once the
 * change commits (keel__node_tell_removed). Then the connection closes
 * (keel__node_close_lingering).
 */
#define PEER_LINGER_EXTRA_MS 1000

void keel__node_lease_clock(keel_node_t *n);
void keel__node_process(keel_node_t *n);
void keel__node_finish_stop(keel_node_t *n);
int keel__node_peer_live(const peer_t *p);
peer_t *keel__node_peer_by_id(keel_node_t *n, uint64_t id);
int keel__node_peer_room(const peer_t *p, size_t more);
void keel__node_peer_flush(peer_t *p);
void keel__node_peer_release_held(peer_t *p, uint64_t gen_durable);
void keel__node_send_raft(keel_node_t *n, const keel_raft_msg_t *m, int after_persist);
void keel__node_send_fwd(keel_node_t *n, uint64_t to, keel_peer_type_t type,
                         const keel_peer_fwd_t *f);
void keel__node_inconn_close(inconn_t *c);
void keel__node_evict(keel_node_t *n, uint64_t by);
keel_memberdir_t *keel__node_applied_members(keel_node_t *n);
int keel__node_removed_for_good(keel_memberdir_t *d, uint64_t id);
void keel__node_judge_inconns(keel_node_t *n);
void keel__node_on_peer_connection(uv_stream_t *srv, int status);
void keel__node_peer_lost(peer_t *p);
int keel__node_peer_open(keel_node_t *n, const keel_node_member_t *mb, keel_errmsg_t *msg);
void keel__node_peer_close(peer_t *p);
void keel__node_close_lingering(keel_node_t *n);
void keel__node_connector_closed(keel_connector_t *c);
void keel__node_conf_change(keel_node_t *n, keel_req_t *r);
void keel__node_tell_removed(keel_node_t *n, const keel_raft_entry_t *e);
void keel__node_maybe_promote(keel_node_t *n);
void keel__node_maybe_update_client_addr(keel_node_t *n, keel_ms_t now);
/* prefer.c: every tick, hands leadership to --preferred-leader once it is fit to lead. */
void keel__node_maybe_prefer(keel_node_t *n, keel_ms_t now);
void keel__node_sync_members(keel_node_t *n);
void keel__node_snap_dir(const keel_node_t *n, char *out, size_t cap);
void keel__node_maybe_snapshot(keel_node_t *n);
void keel__node_poll_snapshot_child(keel_node_t *n);
void keel__node_install_snapshot(keel_node_t *n, const keel_raft_snapshot_t *sn);
int keel__node_load_snapshot(keel_node_t *n, keel_snap_t *snap, uint64_t *lsn_floor,
                             keel_raft_snapshot_t *out, keel_errmsg_t *msg);

#endif
