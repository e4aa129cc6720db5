/* node.c - drives the Raft core on libuv: WAL group commit, peers, apply, forwarding. */
#include "server/node.h"

#include "base/hash.h"
#include "base/log.h"
#include "base/map.h"
#include "proto/frame.h"
#include "proto/peer.h"
#include "base/bytes.h"
#include "base/vec.h"
#include "runtime/blockmem.h"
#include "runtime/clock.h"
#include "runtime/snapfile.h"
#include "runtime/tcp.h"
#include "server/raftlog.h"
#include "server/requests.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bytes of free room offered to each read of a peer connection. */
#define PEER_READ_BYTES (64u * 1024u)
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
} peer_t;

typedef struct inconn {
    uv_tcp_t tcp;
    keel_node_t *node;
    keel_buf_t in;
    keel_frame_decoder_t dec;
    uint64_t from;
    int closing;
    int told_removed;        /* from was removed for good: told so, its frames are dropped */
    uint8_t removed_out[32]; /* that REMOVED frame (18 bytes), written once */
    uv_write_t removed_req;
    struct inconn *prev, *next;
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
    uint64_t members_conf_index; /* last index seen when members was computed */
    int members_dirty;
    int evicted; /* a peer said a committed configuration removed us: for good */
    int promote_inflight;
    int client_addr_inflight;      /* KEEL.CLUSTER UPDATE of our client address */
    keel_ms_t client_addr_next_ms; /* not asked again before this */
    uv_tcp_t listener;
    inconn_t *inconns;
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
    uint8_t *snap_sm; /* the loaded state, handed to the core (owned until then) */
    size_t snap_sm_len;

    uint64_t installed_index, installed_term; /* to report durable after the ready */
    /* metrics */
    keel_counter_t *m_snapshots;
    keel_counter_t *m_applied, *m_leader_changes;
    keel_histogram_t *m_fsync, *m_fdatasync, *m_batch;
};

static void process(keel_node_t *n);
static void lease_clock(keel_node_t *n);
static void finish_stop(keel_node_t *n);

void keel_node_config_default(keel_node_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    keel_raft_config_default(&cfg->raft);
    /*
     * The core's defaults (100-200 ms elections) suit the simulator. A real node shares
     * its CPU and disk: an fsync stall or a snapshot on the loop must not look like a dead
     * leader. As etcd does: heartbeats every 100 ms, elections after 1-2 s (etcd's
     * default election timeout, randomized up to twice).
     */
    cfg->raft.tick_ms = 50;
    cfg->raft.heartbeat_ticks = 2;
    cfg->raft.election_ticks_min = 20;
    cfg->raft.election_ticks_max = 40;
    keel_wal_config_default(&cfg->wal);
    cfg->requests_pending_max = 100000;
    cfg->request_timeout_ms = 5000;
    cfg->peer_buffer_bytes_max = 64u * 1024 * 1024;
    cfg->peer_frame_bytes_max = 64u * 1024 * 1024;
    cfg->snapshot_entries = 100000; /* etcd's default snapshot-count */
    /* Redis's auto-aof-rewrite-min-size: a snapshot costs O(state) (a fork, copy-on-write
     * faults on every page the loop then writes, the file read back and handed to the core),
     * so a small log is not worth one. */
    cfg->snapshot_log_bytes_min = 64u * 1024 * 1024;
    cfg->snapshots_keep = 2;
    /* A learner this close to the leader's log catches up within a round trip or two,
       so promoting it does not stall commits behind a slow new voter (etcd promotes at
       90% of the leader's progress; a fixed distance is easier to reason about). */
    cfg->promote_lag_entries_max = 1000;
}

/*
 * One Raft entry must hold the largest command a client may send: a value at the
 * limit, its key, and the command encoding around them. Larger commands (a huge MSET)
 * are refused at proposal with a clear error.
 */
static uint64_t entry_bytes_needed(const keel_node_config_t *cfg)
{
    uint64_t need = cfg->command_bytes_max;
    return need > cfg->raft.entry_bytes_max ? need : cfg->raft.entry_bytes_max;
}

int keel_node_config_validate(const keel_node_config_t *cfg, keel_errmsg_t *msg)
{
    if (entry_bytes_needed(cfg) + 64 > cfg->wal.record_bytes_max ||
        entry_bytes_needed(cfg) + 4096 > cfg->peer_frame_bytes_max)
        return keel_errf(msg, KEEL_EINVAL,
                         "node: commands of %llu bytes do not fit the WAL record (%zu) or peer "
                         "frame (%zu) limits",
                         (unsigned long long)cfg->command_bytes_max, cfg->wal.record_bytes_max,
                         cfg->peer_frame_bytes_max);
    if (cfg->members_n == 0 || cfg->members_n > KEEL_RAFT_VOTERS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "node: %zu members (1..%d allowed)", cfg->members_n,
                         KEEL_RAFT_VOTERS_MAX);
    if (cfg->promote_lag_entries_max == 0)
        return keel_errf(msg, KEEL_EINVAL, "node: promote_lag_entries_max must be > 0");
    if (cfg->raft.lease_reads != 0 && cfg->raft.lease_reads != 1)
        return keel_errf(msg, KEEL_EINVAL, "node: lease_reads must be 0 or 1, not %d",
                         cfg->raft.lease_reads);
    int found = 0;
    for (size_t i = 0; i < cfg->members_n; i++)
        found |= cfg->members[i].id == cfg->id;
    if (!found)
        return keel_errf(msg, KEEL_EINVAL, "node: id %llu is not a member",
                         (unsigned long long)cfg->id);
    if (cfg->data_dir[0] == '\0')
        return keel_errf(msg, KEEL_EINVAL, "node: data_dir is empty");
    if (cfg->requests_pending_max == 0 || cfg->request_timeout_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "node: requests_pending_max and request_timeout_ms "
                         "must be > 0");
    if (cfg->snapshot_entries == 0 || cfg->snapshots_keep < 1)
        return keel_errf(msg, KEEL_EINVAL, "node: snapshot_entries and snapshots_keep must be > 0");
    if (cfg->peer_frame_bytes_max < cfg->raft.msg_bytes_max + 4096)
        return keel_errf(msg, KEEL_EINVAL, "node: peer_frame_bytes_max below raft msg_bytes_max");
    if (cfg->sm.ops == NULL)
        return keel_errf(msg, KEEL_EINVAL, "node: no state machine");
    return keel_wal_config_validate(&cfg->wal, msg);
}

/* ---- peers: sending --------------------------------------------------------------- */

#define PEER_SLOTS (2 * KEEL_RAFT_MEMBERS_MAX)

static int peer_live(const peer_t *p)
{
    return p->node != NULL && !p->closing;
}

static peer_t *peer_by_id(keel_node_t *n, uint64_t id)
{
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (peer_live(&n->peers[i]) && n->peers[i].member.id == id)
            return &n->peers[i];
    return NULL;
}

static int peer_room(const peer_t *p, size_t more)
{
    return keel_buf_unread(&p->out) + keel_buf_unread(&p->held) + more <=
           p->node->cfg.peer_buffer_bytes_max;
}

static void peer_flush(peer_t *p);
static void peer_lost(peer_t *p);

static void on_peer_write(uv_write_t *req, int status)
{
    peer_t *p = req->data;
    p->writing = 0;
    keel_buf_reset(&p->wbuf);
    if (status < 0) {
        peer_lost(p);
        return;
    }
    peer_flush(p);
}

static void peer_flush(peer_t *p)
{
    if (!p->connected || p->writing || keel_buf_unread(&p->out) == 0)
        return;
    /* One direct write(2) first (see resp_server.c flush): no write request, no epoll
       re-arm when the turn's frames fit the socket buffer. The rest goes by uv_write. */
    uv_buf_t d = uv_buf_init((char *)keel_buf_rptr(&p->out), (unsigned)keel_buf_unread(&p->out));
    int sent = uv_try_write(keel_connector_stream(&p->conn), &d, 1);
    if (sent > 0) { /* an error is left to uv_write below, which reports it as before */
        if (p->bytes_out)
            keel_counter_add(p->bytes_out, (uint64_t)sent);
        keel_buf_consume(&p->out, (size_t)sent);
        if (keel_buf_unread(&p->out) == 0)
            return;
    }
    keel_buf_t t = p->wbuf; /* swap: out becomes the write buffer */
    p->wbuf = p->out;
    p->out = t;
    uv_buf_t b = uv_buf_init((char *)keel_buf_rptr(&p->wbuf), (unsigned)keel_buf_unread(&p->wbuf));
    p->wreq.data = p;
    if (p->bytes_out)
        keel_counter_add(p->bytes_out, b.len);
    if (uv_write(&p->wreq, keel_connector_stream(&p->conn), &b, 1, on_peer_write) == 0)
        p->writing = 1;
    else
        keel_buf_reset(&p->wbuf);
}

/* Moves held frames whose sync group is now durable into the send buffer. */
static void peer_release_held(peer_t *p, uint64_t gen_durable)
{
    size_t upto = 0, k = 0;
    while (k < p->marks_n && p->marks[k].gen <= gen_durable)
        upto = p->marks[k++].end;
    if (k == 0)
        return;
    if (keel_buf_append(&p->out, keel_buf_rptr(&p->held), upto) != 0 && p->dropped)
        keel_counter_inc(p->dropped);
    keel_buf_consume(&p->held, upto);
    for (size_t i = k; i < p->marks_n; i++)
        p->marks[i - k] = (held_mark_t){p->marks[i].gen, p->marks[i].end - upto};
    p->marks_n -= k;
}

static void send_raft(keel_node_t *n, const keel_raft_msg_t *m, int after_persist)
{
    peer_t *p = peer_by_id(n, m->to);
    if (p == NULL)
        return;
    if (!peer_room(p, 64)) {
        if (p->dropped)
            keel_counter_inc(p->dropped); /* Raft retransmits; the bound protects memory */
        return;
    }
    uint64_t tag = n->last_write_gen;
    if (!after_persist || tag <= n->gen_durable) {
        keel_peer_encode_raft(&p->out, m);
        return;
    }
    if (keel_peer_encode_raft(&p->held, m) != 0)
        return;
    size_t end = keel_buf_unread(&p->held);
    if (p->marks_n > 0 && p->marks[p->marks_n - 1].gen == tag) {
        p->marks[p->marks_n - 1].end = end;
        return;
    }
    if (keel_vec_grow(&p->marks, &p->marks_cap, p->marks_n + 1, sizeof(*p->marks), 8) != 0)
        return;
    p->marks[p->marks_n++] = (held_mark_t){tag, end};
}

static void send_fwd(keel_node_t *n, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    peer_t *p = peer_by_id(n, to);
    if (p != NULL && peer_room(p, f->bytes_len + 64))
        keel_peer_encode_fwd(&p->out, type, f);
}

/* ---- peers: connections --------------------------------------------------------- */

/* The connector owns the stream's data pointer; the peer hangs off the connector. */
static peer_t *stream_peer(const uv_handle_t *h)
{
    const keel_connector_t *c = h->data;
    return c->data;
}

static void evict(keel_node_t *n, uint64_t by);

/*
 * Decodes and handles, in order, every whole frame in `in` (a partial one stays for the
 * next read); both directions of a peer connection read this way. 0, or the first
 * decoding or handling error: the stream is then out of sync and the caller drops it.
 */
typedef int (*frame_fn)(void *ctx, const keel_frame_t *fr);

static int take_frames(keel_buf_t *in, keel_frame_decoder_t *dec, frame_fn fn, void *ctx)
{
    for (;;) {
        keel_frame_t fr;
        size_t used;
        keel_errmsg_t m;
        int rc = keel_frame_decode(dec, keel_buf_rptr(in), keel_buf_unread(in), &fr, &used, &m);
        if (rc == KEEL_EAGAIN)
            return 0;
        if (rc == 0)
            rc = fn(ctx, &fr);
        if (rc != 0)
            return rc;
        keel_buf_consume(in, used);
    }
}

/* A frame written back on our outbound connection: only REMOVED, naming us. */
static int handle_back_frame(void *ctx, const keel_frame_t *fr)
{
    peer_t *p = ctx;
    uint64_t id;
    if (fr->type != KEEL_PEER_REMOVED ||
        keel_peer_decode_removed(fr->payload, fr->payload_len, &id) != 0 || id != p->node->cfg.id)
        return KEEL_EPROTO;
    evict(p->node, p->member.id);
    return 0;
}

/*
 * The outbound connection carries our frames to the peer. The peer writes back at most
 * one kind of frame: REMOVED, when a committed configuration removed us (a node that was
 * down when it was removed learns it this way as soon as it reconnects). Anything else
 * is a protocol error and the connection is dropped (and made again).
 */
static void on_peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    peer_t *p = stream_peer((uv_handle_t *)s);
    if (nread < 0) {
        if (nread == UV_ENOBUFS) /* peer_alloc found no room: more than a frame pending */
            keel_log_warn("peer connection dropped: the peer sent back more than a frame",
                          KF_STR("peer", p->member.name));
        peer_lost(p);
        return;
    }
    keel_buf_commit(&p->rbuf, (size_t)nread);
    int rc = take_frames(&p->rbuf, &p->back_dec, handle_back_frame, p);
    if (rc != 0) {
        keel_log_warn("peer connection dropped: the peer sent back a bad frame",
                      KF_STR("peer", p->member.name), KF_STR("error", keel_strerror(rc)));
        peer_lost(p);
    }
}

static void peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    peer_t *p = stream_peer(h);
    if (keel_buf_reserve(&p->rbuf, PEER_BACK_FRAME_BYTES_MAX) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&p->rbuf), (unsigned)(p->rbuf.cap - p->rbuf.len));
}

static void on_hello_written(uv_write_t *req, int status) {}

static void on_peer_connected(keel_connector_t *c, void *data)
{
    peer_t *p = data;
    keel_node_t *n = p->node;
    uv_stream_t *s = keel_connector_stream(c);
    p->connected = 1;
    p->writing = 0;
    keel_buf_reset(&p->wbuf);
    keel_buf_t hb;
    keel_buf_init(&hb, 64);
    keel_peer_hello_t h = {n->cfg.cluster_id, n->cfg.id, p->member.id};
    keel_peer_encode_hello(&hb, &h);
    memcpy(p->hello, keel_buf_rptr(&hb), keel_buf_unread(&hb));
    uv_buf_t b = uv_buf_init((char *)p->hello, (unsigned)keel_buf_unread(&hb));
    keel_buf_free(&hb);
    uv_write(&p->hello_req, s, &b, 1, on_hello_written);
    keel_buf_reset(&p->rbuf); /* a new stream: nothing of the last one's is kept */
    keel_frame_decoder_init(&p->back_dec, PEER_BACK_FRAME_BYTES_MAX, NULL);
    uv_read_start(s, peer_alloc, on_peer_read);
    keel_log_info("peer connected", KF_STR("peer", p->member.name));
    peer_flush(p);
}

static void on_peer_failed(keel_connector_t *c, int err, keel_ms_t delay_ms, void *data)
{
    peer_t *p = data;
    p->connected = 0;
    keel_log_debug("peer connect failed", KF_STR("peer", p->member.name),
                   KF_STR("error", keel_strerror(err)), KF_INT("retry_ms", delay_ms));
}

/* ---- peers: receiving ------------------------------------------------------------- */

static void inconn_closed(uv_handle_t *h)
{
    inconn_t *c = h->data;
    keel_node_t *n = c->node;
    keel_buf_free(&c->in);
    free(c);
    n->handles_open--;
    if (n->stopping)
        process(n); /* may finish the stop */
}

static void inconn_close(inconn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    keel_node_t *n = c->node;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->inconns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, inconn_closed);
}

/* A peer said a committed configuration removed us: for good (the state is not persisted:
   a restart comes back with the old configuration and is told again, see tell_inconn_removed). */
static void evict(keel_node_t *n, uint64_t by)
{
    if (!n->evicted)
        keel_log_warn("removed from the cluster by a committed configuration change; this "
                      "node no longer campaigns or serves clients: stop it",
                      KF_INT("id", n->cfg.id), KF_INT("by", by));
    n->evicted = n->reqs.removed = 1;
}

/*
 * The directory of the applied (so committed) configuration, or NULL when this node cannot
 * judge who was removed: a node judges only while it is in its own applied configuration
 * (a joiner that has no configuration yet knows nobody, and would take every member for
 * a removed one).
 */
static keel_memberdir_t *applied_members(keel_node_t *n)
{
    keel_raft_conf_t *c = &n->applied_conf;
    keel_memberdir_t *d = &n->applied_dir;
    uint64_t at = n->sm.ops->applied_index(n->sm.data);
    if (at < keel_raft_snapshot_index(n->raft))
        at = keel_raft_snapshot_index(n->raft); /* a snapshot is committed state too */
    keel_raft_conf_at(n->raft, at, c);
    if (c->voters_n == 0)
        return NULL;
    keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, d);
    return keel_memberdir_find_id(d, n->cfg.id) != NULL ? d : NULL;
}

/*
 * True when a committed configuration removed member id: the applied directory d has
 * handed out ids past it and does not list it. Ids are never reused (memberdir.h), so
 * such a node can never be a member again. A node that joins later has an id at or past
 * our applied next_id until we apply its addition, so it is never taken for a removed one.
 */
static int removed_for_good(keel_memberdir_t *d, uint64_t id)
{
    return d != NULL && id < d->next_id && keel_memberdir_find_id(d, id) == NULL;
}

static void on_removed_written(uv_write_t *req, int status) {}

/*
 * A node removed while it was down (or restarted since) never got tell_removed's frame and
 * still thinks it is a member. It connects to us: we answer on its own connection, and
 * drop whatever else it sends. It stops campaigning and serving as soon as it reads it.
 */
static void tell_inconn_removed(inconn_t *c)
{
    keel_buf_t b;
    keel_buf_init(&b, 32);
    int rc = keel_peer_encode_removed(&b, c->from);
    if (rc == 0 && keel_buf_unread(&b) <= sizeof(c->removed_out)) {
        memcpy(c->removed_out, keel_buf_rptr(&b), keel_buf_unread(&b));
        uv_buf_t ub = uv_buf_init((char *)c->removed_out, (unsigned)keel_buf_unread(&b));
        if (uv_write(&c->removed_req, (uv_stream_t *)&c->tcp, &ub, 1, on_removed_written) == 0) {
            c->told_removed = 1;
            keel_log_info("a removed member connected; told it that it was removed",
                          KF_INT("id", c->from));
        }
    }
    keel_buf_free(&b);
}

/*
 * Judges every connected node again: after a configuration entry is applied or a snapshot
 * installed. A HELLO is judged against what was applied when it came, which after a
 * restart is the configuration of the flags or of the last snapshot.
 */
static void judge_inconns(keel_node_t *n)
{
    keel_memberdir_t *d = applied_members(n);
    for (inconn_t *c = n->inconns; c != NULL && d != NULL; c = c->next)
        if (c->from != 0 && !c->told_removed && !c->closing && removed_for_good(d, c->from))
            tell_inconn_removed(c);
}

static int handle_frame(void *ctx, const keel_frame_t *fr)
{
    inconn_t *c = ctx;
    keel_node_t *n = c->node;
    if (c->from == 0) {
        keel_peer_hello_t h;
        if (fr->type != KEEL_PEER_HELLO ||
            keel_peer_decode_hello(fr->payload, fr->payload_len, &h) != 0)
            return KEEL_EPROTO;
        /* Any id of this cluster: a member added a moment ago may reach us before its
           configuration entry does. Ids are never reused (server/memberdir.h). */
        if (h.cluster_id != n->cfg.cluster_id || h.to != n->cfg.id || h.from == 0 ||
            h.from == n->cfg.id) {
            keel_log_warn("peer refused: wrong cluster or member", KF_INT("from", h.from));
            return KEEL_EPROTO;
        }
        c->from = h.from;
        if (removed_for_good(applied_members(n), h.from))
            tell_inconn_removed(c);
        return 0;
    }
    if (c->told_removed)
        return 0; /* nothing a removed node says matters any more */
    if (fr->type == KEEL_PEER_RAFT) {
        keel_raft_msg_t m;
        int rc = keel_peer_decode_raft(fr->payload, fr->payload_len, &m, &n->dec_scratch);
        if (rc != 0 || m.from != c->from || m.to != n->cfg.id)
            return KEEL_EPROTO;
        lease_clock(n);
        keel_raft_step(n->raft, &m);
        return 0;
    }
    if (fr->type == KEEL_PEER_REMOVED) {
        uint64_t id;
        if (keel_peer_decode_removed(fr->payload, fr->payload_len, &id) != 0 || id != n->cfg.id)
            return KEEL_EPROTO;
        evict(n, c->from);
        return 0;
    }
    if (fr->type == KEEL_PEER_PUBLISH) {
        const uint8_t *ch, *msg;
        size_t chl, msgl;
        if (keel_peer_decode_publish(fr->payload, fr->payload_len, &ch, &chl, &msg, &msgl) != 0)
            return KEEL_EPROTO;
        if (n->cfg.on_publish)
            n->cfg.on_publish(n->cfg.on_publish_data, ch, chl, msg, msgl);
        return 0;
    }
    keel_peer_fwd_t f;
    if (keel_peer_decode_fwd((keel_peer_type_t)fr->type, fr->payload, fr->payload_len, &f) != 0)
        return KEEL_EPROTO;
    keel_reqs_on_fwd(&n->reqs, c->from, (keel_peer_type_t)fr->type, &f);
    return 0;
}

static void on_inconn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    inconn_t *c = s->data;
    if (nread < 0) {
        inconn_close(c);
        return;
    }
    keel_buf_commit(&c->in, (size_t)nread);
    int rc = take_frames(&c->in, &c->dec, handle_frame, c);
    if (rc != 0) {
        keel_log_warn("peer connection closed on a bad frame", KF_INT("from", c->from),
                      KF_STR("error", keel_strerror(rc)));
        inconn_close(c);
    }
}

static void inconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    inconn_t *c = h->data;
    /* Room for the rest of the current frame and at least PEER_READ_BYTES more: a read
       that just fills the rest of a frame would make libuv read again at once (it loops
       while reads fill the buffer), one syscall per small frame under load. */
    size_t want = PEER_READ_BYTES;
    if (c->dec.want_bytes > keel_buf_unread(&c->in) + want)
        want = c->dec.want_bytes - keel_buf_unread(&c->in);
    if (keel_buf_reserve(&c->in, want) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

static void on_peer_connection(uv_stream_t *srv, int status)
{
    keel_node_t *n = srv->data;
    if (status < 0 || n->stopping)
        return;
    inconn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->node = n;
    keel_buf_init(&c->in, n->cfg.peer_frame_bytes_max + 64 * 1024);
    keel_frame_decoder_init(&c->dec, n->cfg.peer_frame_bytes_max, NULL);
    uv_tcp_init(&n->loop->uv, &c->tcp);
    c->tcp.data = c;
    n->handles_open++;
    c->next = n->inconns;
    if (n->inconns)
        n->inconns->prev = c;
    n->inconns = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        inconn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, inconn_alloc, on_inconn_read);
}

/* ---- client requests (server/requests.c) -------------------------------------------- */

int keel_node_write(keel_node_t *n, int argc, const uint8_t *const *argv, const size_t *lens,
                    keel_node_done_fn done, void *ctx)
{
    return keel_reqs_submit(&n->reqs, KEEL_REQ_WRITE, argc, argv, lens, done, ctx);
}

int keel_node_change(keel_node_t *n, const keel_node_conf_change_t *c, keel_node_done_fn done,
                     void *ctx)
{
    uint8_t b[KEEL_NODE_CONF_BYTES_MAX];
    return keel_reqs_submit_entry(&n->reqs, KEEL_REQ_WRITE, b, keel_node_conf_encode(c, b), 1, done,
                                  ctx);
}

uint64_t keel_node_read_now_ms(const keel_node_t *n)
{
    return keel_reqs_read_now_ms(&n->reqs);
}

int keel_node_read(keel_node_t *n, int argc, const uint8_t *const *argv, const size_t *lens,
                   int stale, keel_node_done_fn done, void *ctx)
{
    if (!stale)
        return keel_reqs_submit(&n->reqs, KEEL_REQ_READ, argc, argv, lens, done, ctx);
    keel_buf_reset(&n->reply);
    int rc = keel_node_read_local(n, argc, argv, lens, &n->reply);
    done(ctx, rc, keel_buf_rptr(&n->reply), keel_buf_unread(&n->reply));
    return 0;
}

void keel_node_publish(keel_node_t *n, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                       size_t msg_len)
{
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!peer_live(p))
            continue;
        if (peer_room(p, ch_len + msg_len + 64))
            keel_peer_encode_publish(&p->out, ch, ch_len, msg, msg_len);
        else if (p->dropped)
            keel_counter_inc(p->dropped);
    }
}

int keel_node_transfer(keel_node_t *n, uint64_t to)
{
    if (keel_raft_leader(n->raft) != n->cfg.id)
        return KEEL_ENOTLEADER;
    if (to == n->cfg.id || peer_by_id(n, to) == NULL)
        return KEEL_EINVAL;
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0)
        keel_log_info("leadership transfer started", KF_STR("to", keel_node_member_name(n, to)));
    return rc;
}

int keel_node_read_local(keel_node_t *n, int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_buf_t *reply)
{
    uint64_t now = keel_node_read_now_ms(n);
    keel_buf_reset(&n->scratch);
    int rc = n->sm.ops->encode(n->sm.data, now, argc, argv, lens, &n->scratch);
    if (rc == 0)
        rc = n->sm.ops->read(n->sm.data, now, keel_buf_rptr(&n->scratch),
                             keel_buf_unread(&n->scratch), reply);
    return rc;
}

/* ---- membership changes (leader) --------------------------------------------------- */

static void sync_members(keel_node_t *n);
static void close_lingering(keel_node_t *n);

static void conf_answer(keel_node_t *n, keel_req_t *r, const char *text)
{
    keel_reqs_answer_write(&n->reqs, r, (const uint8_t *)text, strlen(text));
}

static size_t put_field(uint8_t *w, const char *s)
{
    size_t len = strlen(s);
    keel_put_u16(w, (uint16_t)len);
    memcpy(w + 2, s, len);
    return 2 + len;
}

size_t keel_node_conf_encode(const keel_node_conf_change_t *c, uint8_t *out)
{
    assert(strlen(c->name) < sizeof(c->name) && strlen(c->peer_addr) < sizeof(c->peer_addr) &&
           strlen(c->client_addr) < sizeof(c->client_addr));
    size_t n = 0;
    out[n++] = (uint8_t)c->op;
    n += put_field(out + n, c->name);
    n += put_field(out + n, c->peer_addr);
    n += put_field(out + n, c->client_addr);
    assert(n <= KEEL_NODE_CONF_BYTES_MAX);
    return n;
}

static int take_field(keel_rd_t *r, char *dst, size_t cap)
{
    size_t len = keel_rd_u16(r);
    const uint8_t *p = len ? keel_rd_bytes(r, len) : NULL;
    if (r->bad || len >= cap || (len && memchr(p, '\0', len)))
        return KEEL_EPROTO;
    if (len)
        memcpy(dst, p, len);
    dst[len] = '\0';
    return 0;
}

int keel_node_conf_decode(const uint8_t *p, size_t len, keel_node_conf_change_t *c)
{
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    memset(c, 0, sizeof(*c));
    uint8_t op = keel_rd_u8(&r);
    if (op < KEEL_NODE_CONF_ADD || op > KEEL_NODE_CONF_UPDATE ||
        take_field(&r, c->name, sizeof(c->name)) != 0 ||
        take_field(&r, c->peer_addr, sizeof(c->peer_addr)) != 0 ||
        take_field(&r, c->client_addr, sizeof(c->client_addr)) != 0 || r.left != 0)
        return KEEL_EPROTO;
    c->op = (keel_node_conf_op_t)op;
    return 0;
}

/* JOIN's answer: [id, cluster id, [[name, id, peer, client, role], ...]] of conf c. */
static char *join_reply(keel_node_t *n, uint64_t id, const keel_raft_conf_t *c)
{
    keel_memberdir_t d;
    keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, &d);
    keel_buf_t b;
    keel_buf_init(&b, 0);
    char cid[24];
    snprintf(cid, sizeof(cid), "%llu", (unsigned long long)n->cfg.cluster_id);
    keel_buf_printf(&b, "*3\r\n:%llu\r\n$%zu\r\n%s\r\n*%zu\r\n", (unsigned long long)id,
                    strlen(cid), cid, d.n);
    for (size_t i = 0; i < d.n; i++) {
        const keel_node_member_t *m = &d.m[i];
        keel_buf_printf(&b,
                        "*5\r\n$%zu\r\n%s\r\n:%llu\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%d\r\n%s\r\n",
                        strlen(m->name), m->name, (unsigned long long)m->id, strlen(m->peer_addr),
                        m->peer_addr, strlen(m->client_addr), m->client_addr, m->voter ? 5 : 7,
                        m->voter ? "voter" : "learner");
    }
    char *out = malloc(keel_buf_unread(&b) + 1);
    if (out) {
        memcpy(out, keel_buf_rptr(&b), keel_buf_unread(&b));
        out[keel_buf_unread(&b)] = '\0';
    }
    keel_buf_free(&b);
    return out;
}

/*
 * The leader removing itself hands leadership to another voter first, and the request
 * waits (parked); the new leader then removes this node like any other. This avoids
 * the thesis §4.2.2 window where a leader that removed itself steps down and the rest
 * wait a whole election timeout for a new one.
 */
static int remove_self_first(keel_node_t *n, keel_req_t *r)
{
    uint64_t to = 0;
    for (size_t i = 0; i < n->members.n && to == 0; i++)
        if (n->members.m[i].voter && n->members.m[i].id != n->cfg.id)
            to = n->members.m[i].id;
    if (to == 0)
        return 0; /* the last voter: memberdir refuses it */
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0)
        keel_log_info("removing the leader: leadership transfer first",
                      KF_STR("to", keel_node_member_name(n, to)));
    keel_reqs_park(&n->reqs, r);
    return 1;
}

/* The next configuration for the change c, or an error (1: answered without a change). */
static int conf_next(keel_node_t *n, const keel_node_conf_change_t *c, keel_raft_conf_t *next,
                     char **reply, keel_errmsg_t *m)
{
    const keel_raft_conf_t *cur = keel_raft_conf(n->raft);
    keel_memberdir_t dir = n->members;
    keel_node_member_t *self = keel_memberdir_find_id(&dir, n->cfg.id);
    if (self && self->client_addr[0] == '\0')
        snprintf(self->client_addr, sizeof(self->client_addr), "%s", n->cfg.client_addr);
    int join = c->op == KEEL_NODE_CONF_JOIN;
    if (join || c->op == KEEL_NODE_CONF_ADD) {
        keel_node_member_t who = {0};
        memcpy(who.name, c->name, sizeof(who.name));
        memcpy(who.peer_addr, c->peer_addr, sizeof(who.peer_addr));
        memcpy(who.client_addr, c->client_addr, sizeof(who.client_addr));
        keel_node_member_t *was = keel_memberdir_find_name(&dir, who.name, strlen(who.name));
        if (join && was && strcmp(was->peer_addr, who.peer_addr) == 0) {
            *reply = join_reply(n, was->id, cur); /* asked again: it is in already */
            return 1;
        }
        uint64_t id;
        int rc = keel_memberdir_add(cur, &dir, &who, next, &id, m);
        if (rc == 0) {
            char t[32];
            snprintf(t, sizeof(t), ":%llu\r\n", (unsigned long long)id);
            *reply = join ? join_reply(n, id, next) : strdup(t);
        }
        return rc;
    }
    keel_node_member_t *who = keel_memberdir_find_name(&dir, c->name, strlen(c->name));
    if (who == NULL)
        return keel_errf(m, KEEL_ENOTFOUND, "no such member '%.64s'", c->name);
    int rc;
    if (c->op == KEEL_NODE_CONF_UPDATE) {
        /* Compared with the configuration in force, not dir: dir has the leader's own
           address filled in already, which an UPDATE for the leader must still write. */
        const keel_node_member_t *in_force = keel_memberdir_find_id(&n->members, who->id);
        if (in_force && strcmp(in_force->client_addr, c->client_addr) == 0) {
            *reply = strdup("+OK\r\n"); /* nothing to change */
            return 1;
        }
        rc = keel_memberdir_set_client(cur, &dir, who->id, c->client_addr, next, m);
    } else {
        rc = c->op == KEEL_NODE_CONF_REMOVE ? keel_memberdir_remove(cur, &dir, who->id, next, m)
                                            : keel_memberdir_promote(cur, &dir, who->id, next, m);
    }
    if (rc == 0)
        *reply = strdup("+OK\r\n");
    return rc;
}

/*
 * Leader: a membership change becomes a configuration entry (one change at a time; the
 * core refuses a second one while the first is uncommitted, and the request waits
 * parked). The client's answer comes when that entry is applied, i.e. committed.
 */
static void conf_change(keel_node_t *n, keel_req_t *r)
{
    keel_raft_conf_t *next = &n->conf_scratch;
    keel_node_conf_change_t c;
    char *reply = NULL;
    keel_errmsg_t m = {{0}};
    free(r->conf_reply);
    r->conf_reply = NULL;
    if (keel_node_conf_decode(r->cmd, r->cmd_len, &c) != 0) {
        conf_answer(n, r, "-ERR keel: bad membership change\r\n");
        return;
    }
    if (c.op == KEEL_NODE_CONF_REMOVE) {
        keel_node_member_t *who = keel_memberdir_find_name(&n->members, c.name, strlen(c.name));
        if (who && who->id == n->cfg.id && remove_self_first(n, r))
            return;
    }
    int rc = conf_next(n, &c, next, &reply, &m);
    if (rc == 1) { /* answered without a change */
        conf_answer(n, r, reply ? reply : "-ERR keel: out of memory\r\n");
        free(reply);
        return;
    }
    if (rc == 0)
        rc = keel_raft_propose_conf(n->raft, next);
    if (rc == KEEL_EBUSY || rc == KEEL_EAGAIN || rc == KEEL_ENOTLEADER) {
        free(reply);
        keel_reqs_park(&n->reqs, r); /* an earlier change or a transfer is under way: wait */
        return;
    }
    if (rc != 0 || reply == NULL) {
        char t[KEEL_ERRMSG_BYTES_MAX + 64];
        snprintf(t, sizeof(t), "-ERR keel: %s\r\n", m.text[0] ? m.text : keel_strerror(rc));
        free(reply);
        conf_answer(n, r, t);
        return;
    }
    r->conf_reply = reply;
    keel_log_info("membership change proposed", KF_STR("change", reply[0] == '*' ? "join" : "edit"),
                  KF_INT("voters", next->voters_n), KF_INT("learners", next->learners_n));
    keel_reqs_proposed(&n->reqs, r, keel_raft_last_index(n->raft));
    sync_members(n);
}

/* Our connection to a peer broke: what we forwarded to it may never be answered. */
static void peer_lost(peer_t *p)
{
    if (!p->connected || p->node->stopping || p->closing)
        return;
    p->connected = 0;
    keel_connector_lost(&p->conn);
    keel_reqs_peer_lost(&p->node->reqs, p->member.id);
}

/* ---- the ready pass ----------------------------------------------------------------- */

/* A configuration entry committed: peers it removed learn it (they get no more log). */
static void tell_removed(keel_node_t *n, const keel_raft_entry_t *e)
{
    keel_raft_conf_t *c = &n->conf_scratch;
    if (keel_raft_conf_decode(e->data, e->len, c) != 0)
        return;
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!peer_live(p) || p->linger_until_ms == 0)
            continue;
        int in = 0;
        for (uint32_t k = 0; k < c->voters_n; k++)
            in |= c->voters[k] == p->member.id;
        for (uint32_t k = 0; k < c->learners_n; k++)
            in |= c->learners[k] == p->member.id;
        if (!in)
            keel_peer_encode_removed(&p->out, p->member.id);
    }
}

/*
 * Applying a batch touches the state at random (the KV table: a bucket slot, then an
 * entry, each a cache miss once the table outgrows the cache). Hinting entries ahead of
 * the one being applied overlaps those misses (the state machine's prefetch): stage 0
 * this many entries ahead, stage 1 (its record, the slot already fetched) this many.
 */
#define APPLY_PREFETCH_SLOT_AHEAD 4u
#define APPLY_PREFETCH_ENTRY_AHEAD 2u

static void prefetch_entry(keel_node_t *n, const keel_raft_ready_t *rd, size_t i, int stage)
{
    if (i >= rd->committed_n)
        return;
    const keel_raft_entry_t *e = &rd->committed[i];
    if (e->type == KEEL_RAFT_ENTRY_NORMAL)
        n->sm.ops->prefetch(n->sm.data, e->data, e->len, stage);
}

static void apply_entry(keel_node_t *n, const keel_raft_entry_t *e)
{
    keel_buf_reset(&n->reply);
    if (e->type == KEEL_RAFT_ENTRY_NORMAL && e->len > 0) {
        int rc = n->sm.ops->apply(n->sm.data, e->index, e->data, e->len, &n->reply);
        if (rc != 0) {
            keel_log_error("cannot apply a committed entry; stopping", KF_INT("index", e->index),
                           KF_STR("error", keel_strerror(rc)));
            abort(); /* a replica that cannot apply must not serve: fail loudly */
        }
    } else {
        n->sm.ops->advance(n->sm.data, e->index);
        if (e->type == KEEL_RAFT_ENTRY_CONF) {
            tell_removed(n, e);
            judge_inconns(n);
        }
    }
    if (n->m_applied)
        keel_counter_inc(n->m_applied);
    n->log_bytes_since_snap += e->len;
    keel_reqs_applied(&n->reqs, e, &n->reply);
}

/*
 * Lease reads (--lease-reads, off by default) are correct only if the core sees the
 * real time when it judges a lease (docs/raft.md). The loop's cached time and the
 * one-tick-per-callback clock both lag after a stall or a SIGSTOP: a leader woken inside
 * epoll_wait would judge its lease by the time it went to sleep and could serve a read
 * after a newer leader was elected, and a follower would date a heartbeat early and end
 * its stickiness early. So with leases on, the core is ticked with the monotonic clock
 * read now before a read asks for its index and before peer messages are stepped. The
 * clock is read after the turn's requests were read, so the lease check happens after
 * every read in the batch started.
 */
static void lease_clock(keel_node_t *n)
{
    if (!n->cfg.raft.lease_reads || n->evicted)
        return;
    keel_ms_t now = keel_clock_now_ms();
    if (now > n->raft_ms)
        n->raft_ms = now;
    keel_raft_tick(n->raft, n->raft_ms);
}

/*
 * Durability (docs/wal.md). At the end of each turn the pending group, if it holds entries or
 * a new term or vote, is handed to the WAL's sync thread, which syncs back to back: it takes
 * everything handed over so far, writes and fdatasyncs it, publishes the durable gen, wakes
 * the loop (sync_async, coalesced) and starts on what was handed over meanwhile without
 * waiting for the loop. (Syncing on the loop at the end of the turn, as Redis's appendfsync
 * always does, saved CPU but lost throughput and p99: bench/RESULTS.md, the sync round.)
 */
static void sync_observe(keel_node_t *n, uint64_t from_gen, uint64_t to_gen)
{
    uint32_t us[KEEL_WAL_SYNC_TIMES_MAX];
    size_t k = keel_wal_take_sync_times(keel_raftlog_wal(n->log), us, KEEL_WAL_SYNC_TIMES_MAX);
    if (n->m_fdatasync)
        for (size_t i = 0; i < k; i++)
            keel_histogram_observe(n->m_fdatasync, (double)us[i] / 1e6);
    if (n->m_fsync == NULL)
        return;
    keel_us_t now = keel_clock_now_us();
    if (to_gen - from_gen > SYNC_SUBMIT_TIMES_MAX) /* older times were overwritten */
        from_gen = to_gen - SYNC_SUBMIT_TIMES_MAX;
    for (uint64_t g = from_gen + 1; g <= to_gen; g++)
        keel_histogram_observe(n->m_fsync,
                               (double)(now - n->sync_submit_us[g % SYNC_SUBMIT_TIMES_MAX]) / 1e6);
}

/* Groups became durable: tell the core, release held messages, run the turn's pass. */
static void sync_done(keel_node_t *n)
{
    uint64_t gen, index, term;
    keel_errmsg_t m = {{0}};
    int rc = keel_raftlog_durable(n->log, &gen, &index, &term, &m);
    if (rc != 0) {
        /* fsync errors cannot be retried safely (the kernel may have dropped the pages). */
        keel_log_error("WAL sync failed; stopping", KF_STR("error", m.text));
        abort();
    }
    if (gen == n->gen_durable)
        return;
    sync_observe(n, n->gen_durable, gen);
    n->gen_durable = gen;
    if (index != 0)
        keel_raft_persisted(n->raft, index, term);
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (peer_live(&n->peers[i]))
            peer_release_held(&n->peers[i], n->gen_durable);
    process(n);
}

static void on_sync_async(uv_async_t *h)
{
    keel_node_t *n = h->data;
    if (!n->stopping)
        sync_done(n);
}

/* Called from the WAL's sync thread: only wakes the loop. */
static void sync_notify(void *data)
{
    keel_node_t *n = data;
    uv_async_send(&n->sync_async);
}

/* Hands the pending group to the WAL's sync thread if it needs durability. */
static void maybe_start_sync(keel_node_t *n)
{
    if (n->stopping || !keel_raftlog_has_pending(n->log) ||
        n->last_write_gen <= n->gen_started) /* nothing pending needs durability yet */
        return;
    uint64_t gen;
    int rc = keel_raftlog_submit(n->log, &gen);
    if (rc != 0) {
        keel_log_error("WAL submit failed; stopping", KF_STR("error", keel_strerror(rc)));
        abort();
    }
    assert(gen == n->gen_started + 1 && gen == n->last_write_gen);
    n->gen_started = gen;
    n->sync_submit_us[gen % SYNC_SUBMIT_TIMES_MAX] = keel_clock_now_us();
}

/* ---- snapshots ------------------------------------------------------------------- */

/*
 * A snapshot file's data (runtime/snapfile.h frames it with index, term and a CRC):
 *   u32 magic "KNS1" | u32 version | u64 lsn_floor | u32 voters_n | u32 learners_n |
 *   (voters_n + learners_n) x u64 member id | u32 ctx_len | ctx | the state machine's
 *   snapshot (sm/sm.h)
 * The membership is the Raft configuration at the snapshot's index, with its ctx (the
 * member directory, server/memberdir.h). Version 1 files (before membership changes)
 * have no ctx_len and ctx; they are still read.
 * lsn_floor is 0 for a node's own snapshot (its log before the snapshot is simply
 * covered) and the WAL position at install time for a snapshot from the leader, whose
 * log before it is discarded (server/raftlog.h).
 */
#define SNAP_MAGIC 0x314e534bu
#define SNAP_VERSION 2u
#define SNAP_HEADER_BYTES 24u /* before the member ids */

static void snap_dir(const keel_node_t *n, char *out, size_t cap)
{
    snprintf(out, cap, "%s/snap", n->cfg.data_dir);
}

static size_t snap_header_len(const keel_raft_conf_t *c)
{
    return SNAP_HEADER_BYTES + 8u * (c->voters_n + c->learners_n) + 4u + c->ctx_len;
}

/* Fills h (room for the largest header) with the server header; returns its length. */
static size_t snap_header_encode(uint8_t *h, uint64_t lsn_floor, const keel_raft_conf_t *conf)
{
    keel_put_u32(h, SNAP_MAGIC);
    keel_put_u32(h + 4, SNAP_VERSION);
    keel_put_u64(h + 8, lsn_floor);
    keel_put_u32(h + 16, conf->voters_n);
    keel_put_u32(h + 20, conf->learners_n);
    uint8_t *p = h + SNAP_HEADER_BYTES;
    for (uint32_t i = 0; i < conf->voters_n; i++, p += 8)
        keel_put_u64(p, conf->voters[i]);
    for (uint32_t i = 0; i < conf->learners_n; i++, p += 8)
        keel_put_u64(p, conf->learners[i]);
    keel_put_u32(p, conf->ctx_len);
    memcpy(p + 4, conf->ctx, conf->ctx_len);
    return snap_header_len(conf);
}

#define SNAP_HEADER_ROOM_BYTES                                                                     \
    (SNAP_HEADER_BYTES + 8 * 2 * KEEL_RAFT_MEMBERS_MAX + 4 + KEEL_RAFT_CONF_CTX_BYTES_MAX)

static int snap_encode(keel_buf_t *out, uint64_t lsn_floor, const keel_raft_conf_t *conf,
                       const void *sm_bytes, size_t sm_len)
{
    uint8_t h[SNAP_HEADER_ROOM_BYTES];
    keel_buf_reset(out);
    int rc = keel_buf_append(out, h, snap_header_encode(h, lsn_floor, conf));
    return rc == 0 ? keel_buf_append(out, sm_bytes, sm_len) : rc;
}

static int snap_parse(const uint8_t *p, size_t len, uint64_t *lsn_floor, keel_raft_conf_t *conf,
                      const uint8_t **kv, size_t *kv_len)
{
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    memset(conf, 0, sizeof(*conf));
    uint32_t magic = keel_rd_u32(&r), version = keel_rd_u32(&r);
    *lsn_floor = keel_rd_u64(&r);
    conf->voters_n = keel_rd_u32(&r);
    conf->learners_n = keel_rd_u32(&r);
    if (r.bad || magic != SNAP_MAGIC || version < 1 || version > SNAP_VERSION ||
        conf->voters_n > KEEL_RAFT_MEMBERS_MAX || conf->learners_n > KEEL_RAFT_MEMBERS_MAX)
        return KEEL_ECORRUPT;
    for (uint32_t i = 0; i < conf->voters_n; i++)
        conf->voters[i] = keel_rd_u64(&r);
    for (uint32_t i = 0; i < conf->learners_n; i++)
        conf->learners[i] = keel_rd_u64(&r);
    if (version >= 2) {
        conf->ctx_len = keel_rd_u32(&r);
        if (r.bad || conf->ctx_len > KEEL_RAFT_CONF_CTX_BYTES_MAX)
            return KEEL_ECORRUPT;
        const uint8_t *ctx = conf->ctx_len ? keel_rd_bytes(&r, conf->ctx_len) : NULL;
        if (ctx)
            memcpy(conf->ctx, ctx, conf->ctx_len);
    }
    if (r.bad)
        return KEEL_ECORRUPT;
    *kv = r.p;
    *kv_len = r.left;
    return 0;
}

/* The snapshot is durable: WAL segments it covers and older snapshot files can go. */
static void snap_done(keel_node_t *n, uint64_t index)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel_errmsg_t m = {{0}};
    snap_dir(n, dir, sizeof(dir));
    if (index > n->snap_index)
        n->snap_index = index;
    if (keel_raftlog_release(n->log, n->snap_index, &m) != 0 ||
        keel_snap_prune(dir, n->cfg.snapshots_keep, &m) != 0)
        keel_log_warn("cleanup after a snapshot failed", KF_STR("error", m.text));
    if (n->m_snapshots)
        keel_counter_inc(n->m_snapshots);
}

/*
 * Taking a snapshot must not stall the loop: encoding a large state takes long enough
 * (a second for tens of MB on a busy machine) for followers to start an election. So, as
 * Redis's BGSAVE does, a forked child encodes the state it inherited (copy-on-write) and
 * writes the file; the loop goes on. When the child has exited, the loop reads the file
 * back, hands its state to the core (keel_raft_compact, which keeps it for lagging
 * followers) and releases what it covers. Entries applied meanwhile stay in the log.
 *
 * The file records the configuration at the snapshot index (computed before the fork):
 * the one in force may be newer, and even be truncated away later.
 */
static int snap_child_sink(void *data, const uint8_t *p, size_t len)
{
    keel_errmsg_t m = {{0}};
    return keel_snapw_write(data, p, len, &m);
}

/* Streams the state into the file (no copy of it in memory: a buffer of the whole state
   cost the child tens of MB of page faults and a second pass, and every millisecond the
   child lives the parent pays copy-on-write faults on the pages it writes). */
static int snap_child_main(keel_node_t *n, uint64_t index, uint64_t term)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snap_dir(n, dir, sizeof(dir));
    keel_errmsg_t m = {{0}};
    keel_snapw_t *w = NULL;
    int rc = keel_snapw_open(&w, dir, index, term, &m);
    if (rc != 0)
        return 1;
    uint8_t h[SNAP_HEADER_ROOM_BYTES];
    rc = keel_snapw_write(w, h, snap_header_encode(h, 0, &n->snap_job_conf), &m);
    if (rc == 0)
        rc = n->sm.ops->snapshot_write(n->sm.data, snap_child_sink, w);
    if (rc != 0) {
        keel_snapw_abort(w);
        return 1;
    }
    return keel_snapw_commit(w, &m) == 0 ? 0 : 1;
}

/*
 * Every snapshot_entries applied entries, but not before the log written since the
 * last snapshot is as large as the state itself and at least snapshot_log_bytes_min: a
 * snapshot costs O(state), so this keeps its cost proportional to the writes (like
 * Redis's auto-aof-rewrite-percentage 100 and auto-aof-rewrite-min-size 64mb) when a
 * large state takes many small writes. The log kept in memory and in the WAL between
 * snapshots is bounded by the larger of the state and that minimum.
 */
static uint64_t snapshot_log_bytes_due(const keel_node_t *n)
{
    uint64_t state = n->sm.ops->state_bytes(n->sm.data);
    uint64_t need = state > n->cfg.snapshot_log_bytes_min ? state : n->cfg.snapshot_log_bytes_min;
    /* Staggered by member position (x1, x1.33, x1.67 for three): replicas that snapshot
       the same state at the same index would fork and encode at once, each child taking
       CPU from every loop on a small machine (elections followed). */
    size_t pos = 0;
    while (pos < n->cfg.members_n && n->cfg.members[pos].id != n->cfg.id)
        pos++;
    return need + need * pos / n->cfg.members_n;
}

static void maybe_snapshot(keel_node_t *n)
{
    uint64_t applied = n->sm.ops->applied_index(n->sm.data);
    if (n->snap_child > 0 || n->snap_loading || n->stopping ||
        applied < n->snap_index + n->cfg.snapshot_entries ||
        n->log_bytes_since_snap < snapshot_log_bytes_due(n))
        return;
    const keel_raft_entry_t *e = keel_raft_entry_at(n->raft, applied);
    if (e == NULL)
        return;
    keel_raft_conf_at(n->raft, applied, &n->snap_job_conf);
    pid_t pid = fork();
    if (pid < 0) {
        keel_log_warn("snapshot skipped: fork failed", KF_STR("error", strerror(errno)));
        n->snap_index = applied; /* do not retry at every turn */
        return;
    }
    if (pid == 0)
        _exit(snap_child_main(n, applied, e->term)); /* no atexit, no libuv in the child */
    n->snap_child = pid;
    n->log_bytes_since_snap = 0;
    n->snap_job_index = applied;
    n->snap_job_term = e->term;
    n->snap_started_us = keel_clock_now_us();
}

/*
 * The child is done. Its file is read back and verified on the thread pool (tens of MB:
 * on the loop that stalled it past the election timeout of every node, since all of them
 * snapshot at the same index), and only the state bytes come back here, handed to the
 * core without a copy.
 */
static void snap_load_work_cb(uv_work_t *w)
{
    keel_node_t *n = w->data; /* only the job fields and the config: the loop waits */
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snap_dir(n, dir, sizeof(dir));
    keel_snap_t snap;
    keel_errmsg_t m = {{0}};
    n->snap_sm = NULL;
    n->snap_load_rc = keel_snap_load(dir, n->snap_job_index, n->snap_job_term, &snap, &m);
    if (n->snap_load_rc != 0)
        return;
    uint64_t floor;
    keel_raft_conf_t conf;
    const uint8_t *kv;
    size_t kv_len;
    n->snap_load_rc = snap_parse(snap.data, snap.data_bytes, &floor, &conf, &kv, &kv_len);
    if (n->snap_load_rc != 0) {
        keel_snap_free(&snap);
        return;
    }
    memmove(snap.data, kv, kv_len); /* the buffer becomes the state bytes alone */
    n->snap_sm = snap.data;
    n->snap_sm_len = kv_len;
}

static void snap_load_after_cb(uv_work_t *w, int status)
{
    keel_node_t *n = w->data;
    n->snap_loading = 0;
    uint8_t *kv = n->snap_sm;
    n->snap_sm = NULL;
    if (n->stopping) {
        free(kv);
        finish_stop(n);
        return;
    }
    int rc = status < 0 ? keel_uv_err(status) : n->snap_load_rc;
    if (rc == 0) /* KEEL_EINVAL if the leader's newer snapshot was installed meanwhile */
        rc = keel_raft_compact_owned(n->raft, n->snap_job_index, kv, n->snap_sm_len);
    else
        free(kv);
    if (rc == 0) {
        snap_done(n, n->snap_job_index);
        keel_log_info("snapshot taken", KF_INT("index", n->snap_job_index),
                      KF_INT("bytes", n->snap_sm_len),
                      KF_INT("ms", (int64_t)((keel_clock_now_us() - n->snap_started_us) / 1000)));
    } else if (n->snap_job_index > n->snap_index) {
        keel_log_warn("snapshot not used", KF_STR("error", keel_strerror(rc)));
    }
}

static void snapshot_written(keel_node_t *n)
{
    n->snap_loading = 1;
    n->snap_load_work.data = n;
    int rc = uv_queue_work(&n->loop->uv, &n->snap_load_work, snap_load_work_cb, snap_load_after_cb);
    if (rc != 0) {
        n->snap_loading = 0;
        keel_log_warn("snapshot not used", KF_STR("error", uv_strerror(rc)));
    }
}

/* Called every tick: has the snapshot child finished? */
static void poll_snapshot_child(keel_node_t *n)
{
    if (n->snap_child <= 0)
        return;
    int status;
    pid_t r = waitpid(n->snap_child, &status, WNOHANG);
    if (r == 0)
        return;
    n->snap_child = 0;
    if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* Not fatal: the log is complete; the next attempt comes after more entries. */
        keel_log_error("snapshot child failed", KF_INT("index", n->snap_job_index));
        n->snap_index = n->snap_job_index;
        return;
    }
    snapshot_written(n);
}

/*
 * The leader sent a snapshot: it replaces the state machine and the whole log. The
 * file is made durable here, before this ready's acknowledgements can go out.
 */
static void install_snapshot(keel_node_t *n, const keel_raft_snapshot_t *sn)
{
    keel_errmsg_t m = {{0}};
    /* The state first: a snapshot that does not load is never written to disk. */
    int rc = n->sm.ops->snapshot_load(n->sm.data, sn->data, sn->data_len, &m);
    keel_buf_t b;
    keel_buf_init(&b, KEEL_SNAP_DATA_BYTES_MAX);
    if (rc == 0)
        rc = snap_encode(&b, keel_raftlog_next_lsn(n->log), &sn->conf, sn->data, sn->data_len);
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snap_dir(n, dir, sizeof(dir));
    if (rc == 0)
        rc = keel_snap_write(dir, sn->index, sn->term, keel_buf_rptr(&b), keel_buf_unread(&b), &m);
    keel_buf_free(&b);
    if (rc != 0) {
        keel_log_error("cannot install the leader's snapshot; stopping", KF_INT("index", sn->index),
                       KF_STR("error", m.text[0] ? m.text : keel_strerror(rc)));
        abort();
    }
    snap_done(n, sn->index);
    judge_inconns(n);
    n->installed_index = sn->index; /* durable now; reported once the ready is advanced */
    n->installed_term = sn->term;
    keel_log_info("installed the leader's snapshot", KF_INT("index", sn->index),
                  KF_INT("bytes", sn->data_len));
    /* Writes waiting at covered indexes cannot tell whether their entry is in it. */
    keel_reqs_snapshot_installed(&n->reqs, sn->index);
}

/* Can this ready have changed the configuration in force? (A CONF entry appended, one
   truncated away by a conflict, or a snapshot.) Then peers must follow before sending. */
static int ready_changes_conf(keel_node_t *n, const keel_raft_ready_t *rd)
{
    int changed = rd->snapshot.index != 0;
    for (size_t i = 0; i < rd->entries_n && !changed; i++)
        changed = rd->entries[i].type == KEEL_RAFT_ENTRY_CONF ||
                  rd->entries[i].index <= n->members_conf_index;
    if (rd->entries_n > 0)
        n->members_conf_index = rd->entries[rd->entries_n - 1].index;
    return changed;
}

static void handle_ready(keel_node_t *n, const keel_raft_ready_t *rd)
{
    if (rd->snapshot.index != 0)
        install_snapshot(n, &rd->snapshot);
    if (ready_changes_conf(n, rd))
        sync_members(n);
    if (rd->hard_state_changed || rd->entries_n > 0) {
        int rc = keel_raftlog_append(n->log, rd->hard_state_changed ? &rd->hard_state : NULL,
                                     rd->entries, rd->entries_n);
        if (rc != 0) {
            keel_log_error("WAL append failed; stopping", KF_STR("error", keel_strerror(rc)));
            abort();
        }
        /* Only entries, term and vote need a sync. The commit index is volatile in Raft
         * (a restarted node learns it again from the leader), so a record that only moves
         * it waits for the next group, as etcd's MustSync does: a follower otherwise paid
         * one extra fdatasync per commit update, ahead of the next entries' sync. */
        if (rd->entries_n > 0 || (rd->hard_state_changed && (rd->hard_state.term != n->hs_term ||
                                                             rd->hard_state.vote != n->hs_vote)))
            n->last_write_gen = n->gen_started + 1; /* the group that the next sync takes */
        if (rd->hard_state_changed) {
            n->hs_term = rd->hard_state.term;
            n->hs_vote = rd->hard_state.vote;
        }
        if (n->m_batch && rd->entries_n > 0)
            keel_histogram_observe(n->m_batch, (double)rd->entries_n);
    }
    for (size_t i = 0; i < rd->msgs_n; i++)
        send_raft(n, &rd->msgs[i], 0);
    for (size_t i = 0; i < rd->msgs_after_persist_n; i++)
        send_raft(n, &rd->msgs_after_persist[i], 1);
    for (size_t i = 0; i < rd->committed_n; i++) {
        prefetch_entry(n, rd, i + APPLY_PREFETCH_SLOT_AHEAD, 0);
        prefetch_entry(n, rd, i + APPLY_PREFETCH_ENTRY_AHEAD, 1);
        apply_entry(n, &rd->committed[i]);
    }
    for (size_t i = 0; i < rd->reads_n; i++)
        keel_reqs_read_state(&n->reqs, &rd->reads[i]);
}

static void note_leader(keel_node_t *n)
{
    uint64_t leader = keel_raft_leader(n->raft);
    int changed = leader != n->last_leader;
    n->last_leader = leader;
    if (changed && leader != 0) {
        n->leader_changes++;
        if (n->m_leader_changes)
            keel_counter_inc(n->m_leader_changes);
        keel_log_info("leader known", KF_STR("leader", keel_node_member_name(n, leader)),
                      KF_INT("term", keel_raft_term(n->raft)));
    }
    keel_reqs_leader_known(&n->reqs, leader, changed);
}

static void process(keel_node_t *n)
{
    if (n->stopping) {
        finish_stop(n);
        return;
    }
    note_leader(n);
    uint64_t applied_before = n->sm.ops->applied_index(n->sm.data);
    keel_raft_ready_t rd;
    /*
     * Until nothing moves: an answer given in this pass can make its client submit the
     * next request at once (a connection's read held behind its write, then its next
     * write behind that read), and that request must start now, not at the next tick:
     * a read's ReadIndex round (on one node it is confirmed at once), a proposal made
     * while serving reads (it reaches the WAL through the next ready).
     */
    for (;;) {
        while (keel_raft_ready(n->raft, &rd)) {
            keel_reqs_ready_begin(&n->reqs);
            handle_ready(n, &rd);
            keel_reqs_ready_end(&n->reqs);
            keel_raft_advance(n->raft);
            if (n->installed_index != 0) {
                keel_raft_persisted(n->raft, n->installed_index, n->installed_term);
                n->installed_index = n->installed_term = 0;
            }
        }
        if (!keel_reqs_step(&n->reqs))
            break;
    }
    if (n->cfg.on_applied && n->sm.ops->applied_index(n->sm.data) != applied_before)
        n->cfg.on_applied(n->cfg.on_applied_data);
    maybe_snapshot(n);
    maybe_start_sync(n);
    keel_reqs_end_pass(&n->reqs);
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (peer_live(&n->peers[i]))
            peer_flush(&n->peers[i]);
}

static void on_check(uv_check_t *h)
{
    process(h->data);
}

static void sweep_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    keel_node_t *n = ctx;
    n->sweep_inflight = 0;
}

/*
 * Leader: the housekeeping the state machine asks for (expiry sweeps) is proposed with
 * this node's clock once it passes the state's next deadline, one entry in flight at a
 * time, like any write.
 */
static void maybe_sweep(keel_node_t *n)
{
    if (n->sweep_inflight || keel_raft_leader(n->raft) != n->cfg.id)
        return;
    uint64_t now = (uint64_t)keel_clock_unix_ms();
    if (n->sm.ops->next_deadline_ms(n->sm.data) > now)
        return;
    keel_buf_reset(&n->scratch);
    if (n->sm.ops->housekeeping(n->sm.data, now, &n->scratch) != 0 ||
        keel_buf_unread(&n->scratch) == 0)
        return;
    if (keel_reqs_submit_entry(&n->reqs, KEEL_REQ_WRITE, keel_buf_rptr(&n->scratch),
                               keel_buf_unread(&n->scratch), 0, sweep_done, n) == 0)
        n->sweep_inflight = 1;
}

/* The answer to a change the node asked for itself: logged when it failed (it is retried). */
static void warn_if_refused(const char *what, int status, const uint8_t *reply, size_t len)
{
    if (status != 0 || (len > 0 && reply[0] == '-'))
        keel_log_warn(what, KF_STR("error", status ? keel_strerror(status) : "refused"));
}

static void promote_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    keel_node_t *n = ctx;
    n->promote_inflight = 0;
    warn_if_refused("learner promotion failed; retried at the next tick", status, reply, len);
}

/*
 * Leader, every tick: a learner whose log is within promote_lag_entries_max of ours
 * becomes a voter (one at a time, through the same path as a client's change). A
 * learner that has acknowledged nothing yet (match 0) is never promoted.
 */
static void maybe_promote(keel_node_t *n)
{
    if (n->promote_inflight || keel_raft_leader(n->raft) != n->cfg.id)
        return;
    const keel_raft_conf_t *c = keel_raft_conf(n->raft);
    if (c->learners_n == 0 || c->voters_n >= KEEL_RAFT_VOTERS_MAX)
        return;
    uint64_t last = keel_raft_last_index(n->raft);
    for (uint32_t i = 0; i < c->learners_n; i++) {
        uint64_t match = keel_raft_match_index(n->raft, c->learners[i]);
        if (match == 0 || match + n->cfg.promote_lag_entries_max < last)
            continue;
        const char *name = keel_node_member_name(n, c->learners[i]);
        keel_node_conf_change_t chg = {.op = KEEL_NODE_CONF_PROMOTE};
        snprintf(chg.name, sizeof(chg.name), "%s", name);
        if (keel_node_change(n, &chg, promote_done, n) == 0) {
            n->promote_inflight = 1;
            keel_log_info("promoting a caught-up learner", KF_STR("member", name),
                          KF_INT("match", match), KF_INT("last", last));
        }
        return;
    }
}

static void client_addr_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    keel_node_t *n = ctx;
    n->client_addr_inflight = 0;
    warn_if_refused("publishing this node's client address failed; retried later", status, reply,
                    len);
}

/*
 * Every tick: the configuration's directory should hold this node's client address, for
 * KEEL.CLUSTER MEMBERS, `keel member list` and `keel status`. The bootstrap directory
 * (--initial-cluster) has none, and --listen-client may differ after a restart. A member
 * whose entry shows another address asks for KEEL.CLUSTER UPDATE, through the log like
 * any change, one request at a time and at most every CLIENT_ADDR_RETRY_MS.
 */
#define CLIENT_ADDR_RETRY_MS 1000

static void maybe_update_client_addr(keel_node_t *n, keel_ms_t now)
{
    if (n->client_addr_inflight || n->reqs.removed || n->cfg.client_addr[0] == '\0' ||
        now < n->client_addr_next_ms || keel_raft_leader(n->raft) == 0)
        return;
    const keel_node_member_t *self = keel_memberdir_find_id(&n->members, n->cfg.id);
    if (self == NULL || strcmp(self->client_addr, n->cfg.client_addr) == 0)
        return;
    keel_node_conf_change_t chg = {.op = KEEL_NODE_CONF_UPDATE};
    snprintf(chg.name, sizeof(chg.name), "%s", self->name);
    snprintf(chg.client_addr, sizeof(chg.client_addr), "%s", n->cfg.client_addr);
    n->client_addr_next_ms = now + CLIENT_ADDR_RETRY_MS;
    if (keel_node_change(n, &chg, client_addr_done, n) == 0)
        n->client_addr_inflight = 1;
}

/*
 * The core counts one tick per timer callback, as etcd's driver does, not the wall time
 * since the last one. After the loop stalled (a starved CPU, a long fork), libuv runs
 * timers before it polls the sockets: catching up a second of ticks at once would make a
 * follower campaign, or a check-quorum leader step down, before reading the heartbeats
 * and answers waiting in its sockets. Dropping the missed ticks only delays this node's
 * own timeouts, which is safe for everything but lease reads (a leader whose clock runs
 * slow would trust its lease too long), so with lease reads on the core gets wall time.
 */
static void on_tick(keel_timer_t *t, void *data)
{
    keel_node_t *n = data;
    keel_ms_t now = keel_loop_now_ms(n->loop);
    n->raft_ms += n->cfg.raft.tick_ms;
    if (n->cfg.raft.lease_reads || n->raft_ms > now)
        n->raft_ms = now;
    if (!n->evicted) /* a removed node never campaigns */
        keel_raft_tick(n->raft, n->raft_ms);
    maybe_sweep(n);
    maybe_promote(n);
    maybe_update_client_addr(n, now);
    close_lingering(n);
    keel_reqs_tick(&n->reqs);
    poll_snapshot_child(n);
    process(n);
}

/* ---- start and stop --------------------------------------------------------------- */

static void register_metrics(keel_node_t *n)
{
    keel_metrics_t *m = n->cfg.metrics;
    if (m == NULL)
        return;
    n->m_applied = keel_metrics_counter(m, "keel_raft_applied_total",
                                        "Committed entries applied to the state machine.", NULL);
    n->m_leader_changes = keel_metrics_counter(m, "keel_raft_leader_changes_total",
                                               "Times a new leader became known.", NULL);
    n->m_snapshots = keel_metrics_counter(m, "keel_snapshots_total",
                                          "Snapshots made durable (taken or installed).", NULL);
    n->m_fsync = keel_metrics_histogram(
        m, "keel_wal_fsync_seconds",
        "WAL group durability latency: from the end of the turn that appended it to the loop "
        "seeing it durable.",
        NULL, NULL, 0);
    n->m_fdatasync = keel_metrics_histogram(
        m, "keel_wal_fdatasync_seconds",
        "WAL sync time on the syncing thread: pwrite of the groups taken plus fdatasync.", NULL,
        NULL, 0);
    static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
    n->m_batch = keel_metrics_histogram(m, "keel_raft_batch_entries",
                                        "Entries written per ready (proposal batch size).", NULL,
                                        batch_bounds, sizeof(batch_bounds) / sizeof(double));
}

static void connector_closed(keel_connector_t *c);

static int peer_open(keel_node_t *n, const keel_node_member_t *mb, keel_errmsg_t *msg)
{
    peer_t *p = NULL;
    for (size_t i = 0; i < PEER_SLOTS && p == NULL; i++)
        if (n->peers[i].node == NULL)
            p = &n->peers[i];
    assert(p != NULL); /* at most MEMBERS_MAX live and MEMBERS_MAX closing */
    memset(p, 0, sizeof(*p));
    keel_connector_config_t ccfg = keel_connector_config_default();
    ccfg.backoff.base_ms = 50;
    ccfg.backoff.max_ms = 1000;
    ccfg.connect_timeout_ms = 1000;
    ccfg.seed = n->cfg.raft.seed ^ mb->id;
    p->member = *mb;
    keel_connector_callbacks_t cb = {on_peer_connected, on_peer_failed};
    int rc = keel_connector_init(&p->conn, n->loop, mb->peer_addr, &ccfg, &cb, p, msg);
    if (rc != 0)
        return rc;
    p->node = n;
    keel_buf_init(&p->out, 0);
    keel_buf_init(&p->held, 0);
    keel_buf_init(&p->wbuf, 0);
    keel_buf_init(&p->rbuf, 2 * PEER_BACK_FRAME_BYTES_MAX); /* a partial frame + a read */
    if (n->cfg.metrics) {
        char labels[128];
        snprintf(labels, sizeof(labels), "peer=\"%s\"", mb->name);
        p->bytes_out = keel_metrics_counter(n->cfg.metrics, "keel_peer_sent_bytes_total",
                                            "Bytes sent to each peer.", labels);
        p->dropped = keel_metrics_counter(n->cfg.metrics, "keel_peer_dropped_msgs_total",
                                          "Peer messages dropped at the buffer limit.", labels);
    }
    n->handles_open++;
    keel_connector_start(&p->conn);
    return 0;
}

static void peer_close(peer_t *p)
{
    keel_node_t *n = p->node;
    p->closing = 1;
    keel_reqs_peer_lost(&n->reqs, p->member.id);
    keel_connector_close(&p->conn, connector_closed);
}

/*
 * A removed member's connection stays open a while: a reply to a request it forwarded
 * (its own removal, when it led) must still reach it, and it is told REMOVED once the
 * change commits (tell_removed). Then the connection closes (close_lingering).
 */
#define PEER_LINGER_EXTRA_MS 1000

static void close_lingering(keel_node_t *n)
{
    keel_ms_t now = keel_loop_now_ms(n->loop);
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (peer_live(p) && p->linger_until_ms != 0 && p->linger_until_ms <= now) {
            keel_log_info("peer dropped", KF_STR("peer", p->member.name));
            peer_close(p);
        }
    }
}

/*
 * The configuration in the core changed (a CONF entry appended or truncated away, a
 * snapshot installed, a restart): recompute the member list and make the peers match
 * it. Until a joining node has any configuration, the directory it got when it joined
 * stands in, so that it can answer the leader.
 */
static void sync_members(keel_node_t *n)
{
    const keel_raft_conf_t *c = keel_raft_conf(n->raft);
    n->members_dirty = 0;
    if (c->voters_n + c->learners_n == 0) {
        memset(&n->members, 0, sizeof(n->members));
        for (size_t i = 0; i < n->cfg.members_n; i++)
            n->members.m[n->members.n++] = n->cfg.members[i];
    } else {
        keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, &n->members);
    }
    int removed = n->evicted || keel_memberdir_find_id(&n->members, n->cfg.id) == NULL;
    if (removed != n->reqs.removed)
        keel_log_warn(removed ? "this node is not a member of the configuration in force; it "
                                "will not campaign and refuses client requests"
                              : "this node is a member of the configuration in force",
                      KF_INT("id", n->cfg.id));
    n->reqs.removed = removed;
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!peer_live(p))
            continue;
        int member = keel_memberdir_find_id(&n->members, p->member.id) != NULL;
        if (!member && p->linger_until_ms == 0) {
            keel_log_info("peer leaving: no longer a member", KF_STR("peer", p->member.name));
            p->linger_until_ms =
                keel_loop_now_ms(n->loop) + n->cfg.request_timeout_ms + PEER_LINGER_EXTRA_MS;
        } else if (member) {
            p->linger_until_ms = 0; /* the change was truncated away */
        }
    }
    for (size_t i = 0; i < n->members.n; i++) {
        const keel_node_member_t *mb = &n->members.m[i];
        if (mb->id == n->cfg.id || mb->peer_addr[0] == '\0' || peer_by_id(n, mb->id))
            continue;
        keel_errmsg_t m = {{0}};
        if (peer_open(n, mb, &m) != 0)
            keel_log_error("cannot open a peer", KF_STR("peer", mb->name), KF_STR("error", m.text));
    }
}

/* Loads the newest valid snapshot (if any) into the fresh state machine. */
static int load_snapshot(keel_node_t *n, keel_snap_t *snap, uint64_t *lsn_floor,
                         keel_raft_snapshot_t *out, keel_errmsg_t *msg)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snap_dir(n, dir, sizeof(dir));
    memset(out, 0, sizeof(*out));
    *lsn_floor = 0;
    int rc = keel_snap_load_latest(dir, snap, msg);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    const uint8_t *kv;
    size_t kv_len;
    keel_raft_conf_t conf;
    rc = snap_parse(snap->data, snap->data_bytes, lsn_floor, &conf, &kv, &kv_len);
    if (rc == 0)
        rc = n->sm.ops->snapshot_load(n->sm.data, kv, kv_len, msg);
    if (rc != 0)
        return keel_errf(msg, rc, "snapshot %llu in %s does not decode: %s",
                         (unsigned long long)snap->index, dir, msg->text);
    *out = (keel_raft_snapshot_t){
        .index = snap->index, .term = snap->term, .conf = conf, .data = kv, .data_len = kv_len};
    n->snap_index = snap->index;
    return 0;
}

static int open_storage(keel_node_t *n, keel_errmsg_t *msg)
{
    char waldir[KEEL_NODE_PATH_BYTES + 8];
    snprintf(waldir, sizeof(waldir), "%s/wal", n->cfg.data_dir);
    keel_snap_t snap;
    keel_raft_snapshot_t rsnap;
    uint64_t lsn_floor;
    int rc = load_snapshot(n, &snap, &lsn_floor, &rsnap, msg);
    keel_raft_restore_t rs;
    if (rc == 0)
        rc = keel_raftlog_open(&n->log, waldir, &n->cfg.wal, rsnap.index, lsn_floor, &rs, msg);
    if (rc != 0) {
        keel_snap_free(&snap);
        return rc;
    }
    rs.snapshot = rsnap;
    rs.applied = rsnap.index;
    keel_raft_config_t rc_cfg = n->cfg.raft;
    rc_cfg.id = n->cfg.id;
    rc_cfg.entry_bytes_max = (uint32_t)entry_bytes_needed(&n->cfg);
    rc_cfg.voters_n = n->cfg.join ? 0 : n->cfg.members_n;
    for (size_t i = 0; i < rc_cfg.voters_n; i++)
        rc_cfg.voters[i] = n->cfg.members[i].id;
    rc_cfg.mem = (keel_raft_mem_t){keel_blockmem_alloc, keel_blockmem_release, n->log_mem};
    n->raft_ms = keel_loop_now_ms(n->loop);
    rc = keel_raft_new(&n->raft, &rc_cfg, &rs, n->raft_ms, msg);
    keel_raftlog_drop_restore(n->log);
    keel_snap_free(&snap);
    if (rc == 0)
        keel_log_info("storage recovered", KF_INT("snapshot", rsnap.index),
                      KF_INT("entries", rs.entries_n), KF_INT("term", rs.hard_state.term),
                      KF_INT("commit", rs.hard_state.commit));
    return rc;
}

/* ---- the requests' world (server/requests.h) ---------------------------------------- */

static keel_ms_t env_now_ms(void *data)
{
    return keel_loop_now_ms(((keel_node_t *)data)->loop);
}

static uint64_t env_unix_ms(void *data)
{
    return (uint64_t)keel_clock_unix_ms();
}

static int env_peer_up(void *data, uint64_t id)
{
    return peer_by_id(data, id) != NULL;
}

static void env_send_fwd(void *data, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    send_fwd(data, to, type, f);
}

static void env_conf_change(void *data, keel_req_t *r)
{
    conf_change(data, r);
}

static void env_before_read_index(void *data)
{
    lease_clock(data);
}

static int reqs_start(keel_node_t *n)
{
    keel_reqs_config_t rc = {.id = n->cfg.id,
                             .pending_max = n->cfg.requests_pending_max,
                             .timeout_ms = n->cfg.request_timeout_ms,
                             .metrics = n->cfg.metrics};
    keel_reqs_env_t env = {.data = n,
                           .now_ms = env_now_ms,
                           .unix_ms = env_unix_ms,
                           .peer_up = env_peer_up,
                           .send_fwd = env_send_fwd,
                           .conf_change = env_conf_change,
                           .before_read_index = env_before_read_index};
    int err = keel_reqs_init(&n->reqs, &rc, &env, n->raft, n->sm);
    n->reqs_inited = err == 0;
    return err;
}

int keel_node_start(keel_node_t **out, keel_loop_t *loop, const keel_node_config_t *cfg_in,
                    keel_errmsg_t *msg)
{
    /* A WAL record holds one entry (or a hard state): size it from the entry limit, so a
     * smaller segment size works without tuning a second knob. */
    keel_node_config_t c = *cfg_in;
    c.wal.record_bytes_max = (size_t)entry_bytes_needed(&c) + 64;
    const keel_node_config_t *cfg = &c;
    int rc = keel_node_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    keel_node_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return KEEL_ENOMEM;
    n->loop = loop;
    n->cfg = *cfg;
    keel_buf_init(&n->scratch, 0);
    keel_buf_init(&n->reply, 0);

    n->sm = cfg->sm;
    rc = keel_blockmem_new(&n->log_mem, KEEL_RAFT_LOG_BLOCK_BYTES, LOG_SPARE_BYTES_MAX);
    if (rc == 0)
        rc = open_storage(n, msg);
    if (rc == 0)
        rc = reqs_start(n);
    if (rc != 0)
        goto fail;
    register_metrics(n);
    rc = keel_wal_syncer_start(keel_raftlog_wal(n->log), sync_notify, n, msg);
    if (rc != 0)
        goto fail;
    n->listener.data = n;
    rc = keel_tcp_listen(loop, &n->listener, cfg->listen_peer, 128, on_peer_connection, msg);
    if (rc != 0)
        goto fail;
    n->listener.data = n;
    n->handles_open++;
    uv_check_init(&loop->uv, &n->check);
    n->check.data = n;
    uv_check_start(&n->check, on_check);
    n->handles_open++;
    uv_async_init(&loop->uv, &n->sync_async, on_sync_async); /* sent only after a submit */
    n->sync_async.data = n;
    n->handles_open++;
    keel_timer_init(loop, &n->tick);
    keel_timer_start(&n->tick, cfg->raft.tick_ms, cfg->raft.tick_ms, on_tick, n);
    n->handles_open++;
    n->members_conf_index = keel_raft_last_index(n->raft);
    sync_members(n);
    *out = n;
    return 0;
fail:
    if (n->raft)
        keel_raft_free(n->raft);
    keel_blockmem_free(n->log_mem);
    keel_raftlog_close(n->log);
    if (n->reqs_inited)
        keel_reqs_free(&n->reqs);
    keel_buf_free(&n->scratch);
    keel_buf_free(&n->reply);
    free(n);
    return rc;
}

static void handle_closed(uv_handle_t *h)
{
    keel_node_t *n = h->data;
    n->handles_open--;
    finish_stop(n);
}

static void timer_closed(keel_timer_t *t)
{
    keel_node_t *n = t->data;
    n->handles_open--;
    finish_stop(n);
}

/* A peer's connector is closed: its slot is free again. */
static void connector_closed(keel_connector_t *c)
{
    peer_t *p = c->data;
    keel_node_t *n = p->node;
    n->handles_open--;
    keel_buf_free(&p->out);
    keel_buf_free(&p->held);
    keel_buf_free(&p->wbuf);
    keel_buf_free(&p->rbuf);
    free(p->marks);
    memset(p, 0, sizeof(*p));
    finish_stop(n);
}

void keel_node_stop(keel_node_t *n, void (*closed)(void *data), void *data)
{
    n->stopping = 1;
    n->closed = closed;
    n->closed_data = data;
    keel_reqs_cancel_all(&n->reqs);
    uv_check_stop(&n->check);
    uv_close((uv_handle_t *)&n->check, handle_closed);
    /* The sync thread ends (after a sync in flight) before the handle it wakes is closed. */
    keel_wal_syncer_stop(keel_raftlog_wal(n->log));
    uv_close((uv_handle_t *)&n->sync_async, handle_closed);
    keel_timer_close(&n->tick, timer_closed);
    uv_close((uv_handle_t *)&n->listener, handle_closed);
    while (n->inconns)
        inconn_close(n->inconns);
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (peer_live(&n->peers[i])) {
            n->peers[i].closing = 1;
            keel_connector_close(&n->peers[i].conn, connector_closed);
        }
}

static void finish_stop(keel_node_t *n)
{
    if (!n->stopping || n->handles_open > 0 || n->snap_loading)
        return;
    if (n->snap_child > 0) { /* its .tmp file is removed at the next start */
        kill(n->snap_child, SIGKILL);
        waitpid(n->snap_child, NULL, 0);
        n->snap_child = 0;
    }
    keel_raft_free(n->raft);
    keel_blockmem_free(n->log_mem);
    keel_raftlog_close(n->log);
    keel_reqs_free(&n->reqs);
    keel_buf_free(&n->scratch);
    keel_buf_free(&n->reply);
    keel_peer_scratch_free(&n->dec_scratch);
    void (*closed)(void *) = n->closed;
    void *data = n->closed_data;
    free(n);
    if (closed)
        closed(data);
}

/* ---- inspection ------------------------------------------------------------------- */

void keel_node_get_status(keel_node_t *n, keel_node_status_t *st)
{
    memset(st, 0, sizeof(*st));
    st->role = keel_raft_role(n->raft);
    st->id = n->cfg.id;
    st->term = keel_raft_term(n->raft);
    st->leader = keel_raft_leader(n->raft);
    st->has_leader = st->leader != 0;
    st->commit = keel_raft_commit(n->raft);
    st->applied = n->sm.ops->applied_index(n->sm.data);
    st->last_index = keel_raft_last_index(n->raft);
    st->leader_changes = n->leader_changes;
    st->wal_disk_bytes = keel_wal_disk_bytes(keel_raftlog_wal(n->log));
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snap_dir(n, dir, sizeof(dir));
    st->snapshot_index = n->snap_index;
    st->snapshot_disk_bytes = keel_snap_disk_bytes(dir);
    st->requests_pending = n->reqs.pending;
}

const keel_node_config_t *keel_node_config(const keel_node_t *n)
{
    return &n->cfg;
}

const char *keel_node_member_name(const keel_node_t *n, uint64_t id)
{
    for (size_t i = 0; i < n->members.n; i++)
        if (n->members.m[i].id == id)
            return n->members.m[i].name;
    for (size_t i = 0; i < PEER_SLOTS; i++) /* a member removed a moment ago */
        if (n->peers[i].node && n->peers[i].member.id == id)
            return n->peers[i].member.name;
    for (size_t i = 0; i < n->cfg.members_n; i++)
        if (n->cfg.members[i].id == id)
            return n->cfg.members[i].name;
    return "?";
}

const keel_memberdir_t *keel_node_members(const keel_node_t *n)
{
    return &n->members;
}

int keel_node_peer_port(const keel_node_t *n)
{
    return keel_tcp_local_port(&n->listener);
}
