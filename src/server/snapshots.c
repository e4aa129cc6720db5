/* snapshots.c - snapshots: the file format, taking one in a child, loading, installing. */
#include "server/node_int.h"

#include "base/bytes.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/map.h"
#include "base/vec.h"
#include "proto/frame.h"
#include "proto/peer.h"
#include "runtime/blockmem.h"
#include "runtime/clock.h"
#include "runtime/snapfile.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The descriptors a snapshot child closes when close_range(2) is missing: at most this many. */
#define SNAP_CHILD_FDS_MAX 65536

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

void keel__node_snap_dir(const keel_node_t *n, char *out, size_t cap)
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
/* A snapshot is durable at index: the log it covers is released (the WAL's janitor unlinks
   its segments) and, with prune, older snapshot files beyond snapshots_keep are deleted here
   (a snapshot taken here has them deleted by the work that read it back, off the loop:
   dropping a 100 MB file's page cache takes tens of ms). */
static void snap_done(keel_node_t *n, uint64_t index, int prune)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel_errmsg_t m = {{0}};
    keel__node_snap_dir(n, dir, sizeof(dir));
    if (index > n->snap_index)
        n->snap_index = index;
    if (keel_raftlog_release(n->log, n->snap_index, &m) != 0 ||
        (prune && keel_snap_prune(dir, n->cfg.snapshots_keep, &m) != 0))
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
/*
 * The child's first act: let go of what it inherited and does not need. It keeps the
 * parent's memory, not its descriptors: the listening sockets above all. Held by a child that
 * outlives its parent (SIGKILL, a crash), a listener keeps taking connections nobody serves,
 * and a restarted node cannot bind its ports until the child is done: Redis closes its
 * listeners in its fork children for the same reason. The child also dies with its parent (a
 * snapshot nobody will load is wasted work and memory). Only async-signal-safe calls: the
 * parent has threads.
 */
static void snap_child_detach(pid_t parent)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* it died before the line above */
        _exit(1);
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > SNAP_CHILD_FDS_MAX)
        max = SNAP_CHILD_FDS_MAX;
    for (int fd = 3; fd < (int)max; fd++)
        (void)close(fd);
}

static int snap_child_main(keel_node_t *n, uint64_t index, uint64_t term)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel__node_snap_dir(n, dir, sizeof(dir));
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

void keel__node_maybe_snapshot(keel_node_t *n)
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
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        keel_log_warn("snapshot skipped: fork failed", KF_STR("error", strerror(errno)));
        n->snap_index = applied; /* do not retry at every turn */
        return;
    }
    if (pid == 0) {
        snap_child_detach(parent);
        _exit(snap_child_main(n, applied, e->term)); /* no atexit, no libuv in the child */
    }
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
    n->snap_prune_err.text[0] = '\0';
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel__node_snap_dir(n, dir, sizeof(dir));
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
    /* the new file is whole: older ones beyond the kept count can go (a newer snapshot of the
       leader's installed meanwhile only makes this one older: the newest are kept) */
    (void)keel_snap_prune(dir, n->cfg.snapshots_keep, &n->snap_prune_err);
}

static void snap_load_after_cb(uv_work_t *w, int status)
{
    keel_node_t *n = w->data;
    n->snap_loading = 0;
    uint8_t *kv = n->snap_sm;
    n->snap_sm = NULL;
    if (n->stopping) {
        free(kv);
        keel__node_finish_stop(n);
        return;
    }
    int rc = status < 0 ? keel_uv_err(status) : n->snap_load_rc;
    if (rc == 0) /* KEEL_EINVAL if the leader's newer snapshot was installed meanwhile */
        rc = keel_raft_compact_owned(n->raft, n->snap_job_index, kv, n->snap_sm_len);
    else
        free(kv);
    if (n->snap_prune_err.text[0] != '\0')
        keel_log_warn("cleanup after a snapshot failed", KF_STR("error", n->snap_prune_err.text));
    if (rc == 0) {
        snap_done(n, n->snap_job_index, 0);
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
void keel__node_poll_snapshot_child(keel_node_t *n)
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
        /* A child killed by a signal (the OOM killer during a large fork) leaves its .tmp;
           nothing else removes it until the next start, and each attempt has its own name. */
        char dir[KEEL_NODE_PATH_BYTES + 8];
        keel__node_snap_dir(n, dir, sizeof(dir));
        keel_snap_remove_tmp(dir, n->snap_job_index, n->snap_job_term);
        n->snap_index = n->snap_job_index;
        return;
    }
    snapshot_written(n);
}

/*
 * The leader sent a snapshot: it replaces the state machine and the whole log. The
 * file is made durable here, before this ready's acknowledgements can go out.
 */
void keel__node_install_snapshot(keel_node_t *n, const keel_raft_snapshot_t *sn)
{
    keel_errmsg_t m = {{0}};
    /* The state first: a snapshot that does not load is never written to disk. */
    int rc = n->sm.ops->snapshot_load(n->sm.data, sn->data, sn->data_len, &m);
    keel_buf_t b;
    keel_buf_init(&b, KEEL_SNAP_DATA_BYTES_MAX);
    if (rc == 0)
        rc = snap_encode(&b, keel_raftlog_next_lsn(n->log), &sn->conf, sn->data, sn->data_len);
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel__node_snap_dir(n, dir, sizeof(dir));
    if (rc == 0)
        rc = keel_snap_write(dir, sn->index, sn->term, keel_buf_rptr(&b), keel_buf_unread(&b), &m);
    keel_buf_free(&b);
    if (rc != 0) {
        keel_log_error("cannot install the leader's snapshot; stopping", KF_INT("index", sn->index),
                       KF_STR("error", m.text[0] ? m.text : keel_strerror(rc)));
        abort();
    }
    snap_done(n, sn->index, 1);
    keel__node_judge_inconns(n);
    n->installed_index = sn->index; /* durable now; reported once the ready is advanced */
    n->installed_term = sn->term;
    keel_log_info("installed the leader's snapshot", KF_INT("index", sn->index),
                  KF_INT("bytes", sn->data_len));
    /* Writes waiting at covered indexes cannot tell whether their entry is in it. */
    keel_reqs_snapshot_installed(&n->reqs, sn->index);
}

/* Can this ready have changed the configuration in force? (A CONF entry appended, one
   truncated away by a conflict, or a snapshot.) Then peers must follow before sending. */
int keel__node_load_snapshot(keel_node_t *n, keel_snap_t *snap, uint64_t *lsn_floor,
                             keel_raft_snapshot_t *out, keel_errmsg_t *msg)
{
    char dir[KEEL_NODE_PATH_BYTES + 8];
    keel__node_snap_dir(n, dir, sizeof(dir));
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
