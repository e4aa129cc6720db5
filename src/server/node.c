/* node.c - one keel server node: config, the loop and its ready pass, WAL sync, start, stop. */
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
#include <sys/wait.h>
#include <unistd.h>

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
                   keel_node_done_fn done, void *ctx)
{
    return keel_reqs_submit(&n->reqs, KEEL_REQ_READ, argc, argv, lens, done, ctx);
}

/* ---- the ready pass ----------------------------------------------------------------- */

/* A configuration entry committed: peers it removed learn it (they get no more log). */
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
    keel_reqs_before_apply(&n->reqs, e);
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
            keel__node_tell_removed(n, e);
            keel__node_judge_inconns(n);
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
void keel__node_lease_clock(keel_node_t *n)
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
        if (keel__node_peer_live(&n->peers[i]))
            keel__node_peer_release_held(&n->peers[i], n->gen_durable);
    keel__node_process(n);
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

/* A message with at least this many entry bytes leaves at once (send_msgs). */
#define NODE_SEND_NOW_BYTES_MIN (1u << 20)

/*
 * Step 2 of the contract, done before step 1 (the contract lets rd.msgs go before the write
 * is durable; they go before it starts): the leader's AppendEntries are written to their
 * sockets before the entries are copied into the WAL, and one carrying a large entry is
 * flushed as soon as it is encoded, before the next follower's is. With a 63 MiB entry each
 * copy is a few hundred ms of this loop (bench/RESULTS.md, "Large values"); the followers
 * hear the first bytes (keel_raft_leader_alive) a WAL copy and a frame sooner.
 */
static void send_msgs(keel_node_t *n, const keel_raft_ready_t *rd)
{
    for (size_t i = 0; i < rd->msgs_n; i++) {
        const keel_raft_msg_t *m = &rd->msgs[i];
        keel__node_send_raft(n, m, 0);
        size_t bytes = 0;
        for (size_t k = 0; k < m->entries_n; k++)
            bytes += m->entries[k].len;
        peer_t *p = bytes >= NODE_SEND_NOW_BYTES_MIN ? keel__node_peer_by_id(n, m->to) : NULL;
        if (p != NULL && keel__node_peer_live(p))
            keel__node_peer_flush(p);
    }
}

/*
 * Applying a large entry (copying a 63 MiB value, and into the KEEL.WATCH history) holds the
 * loop for a while; what this ready sends leaves first rather than at the end of the turn: the
 * leader's heartbeats carrying the new commit (the followers apply meanwhile, and their
 * election timers restart), a follower's heartbeat answers (the leader's check-quorum hears it).
 */
static void flush_before_large_apply(keel_node_t *n, const keel_raft_ready_t *rd)
{
    size_t bytes = 0;
    for (size_t i = 0; i < rd->committed_n; i++)
        bytes += rd->committed[i].len;
    if (bytes < NODE_SEND_NOW_BYTES_MIN)
        return;
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (keel__node_peer_live(&n->peers[i]))
            keel__node_peer_flush(&n->peers[i]);
}

static void handle_ready(keel_node_t *n, const keel_raft_ready_t *rd)
{
    if (rd->snapshot.index != 0)
        keel__node_install_snapshot(n, &rd->snapshot);
    if (ready_changes_conf(n, rd))
        keel__node_sync_members(n);
    send_msgs(n, rd);
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
    for (size_t i = 0; i < rd->msgs_after_persist_n; i++)
        keel__node_send_raft(n, &rd->msgs_after_persist[i], 1);
    flush_before_large_apply(n, rd);
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

void keel__node_process(keel_node_t *n)
{
    if (n->stopping) {
        keel__node_finish_stop(n);
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
    keel__node_maybe_snapshot(n);
    maybe_start_sync(n);
    keel_reqs_end_pass(&n->reqs);
    if (n->cfg.on_pass)
        n->cfg.on_pass(n->cfg.on_pass_data);
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (keel__node_peer_live(&n->peers[i]))
            keel__node_peer_flush(&n->peers[i]);
}

static void on_check(uv_check_t *h)
{
    keel__node_process(h->data);
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
    keel__node_maybe_promote(n);
    keel__node_maybe_update_client_addr(n, now);
    keel__node_maybe_prefer(n, now);
    keel__node_close_lingering(n);
    keel_reqs_tick(&n->reqs);
    keel__node_poll_snapshot_child(n);
    keel__node_process(n);
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
    n->m_prefer_transfers = keel_metrics_counter(
        m, "keel_raft_preferred_leader_transfers_total",
        "Leadership transfers this node started toward --preferred-leader.", NULL);
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

static int open_storage(keel_node_t *n, keel_errmsg_t *msg)
{
    char waldir[KEEL_NODE_PATH_BYTES + 8];
    snprintf(waldir, sizeof(waldir), "%s/wal", n->cfg.data_dir);
    keel_snap_t snap;
    keel_raft_snapshot_t rsnap;
    uint64_t lsn_floor;
    int rc = keel__node_load_snapshot(n, &snap, &lsn_floor, &rsnap, msg);
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
    return keel__node_peer_by_id(data, id) != NULL;
}

static void env_send_fwd(void *data, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    keel__node_send_fwd(data, to, type, f);
}

static void env_conf_change(void *data, keel_req_t *r)
{
    keel__node_conf_change(data, r);
}

static void env_before_read_index(void *data)
{
    keel__node_lease_clock(data);
}

static int reqs_start(keel_node_t *n)
{
    keel_reqs_config_t rc = {.id = n->cfg.id,
                             .pending_max = n->cfg.requests_pending_max,
                             .timeout_ms = n->cfg.request_timeout_ms,
                             .entry_bytes_max = (size_t)entry_bytes_needed(&n->cfg),
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
    keel_list_init(&n->inconns);
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
    rc = keel_tcp_listen(loop, &n->listener, cfg->listen_peer, 128, keel__node_on_peer_connection,
                         msg);
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
    keel__node_sync_members(n);
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
    keel__node_finish_stop(n);
}

static void timer_closed(keel_timer_t *t)
{
    keel_node_t *n = t->data;
    n->handles_open--;
    keel__node_finish_stop(n);
}

/* A peer's connector is closed: its slot is free again. */
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
    keel_list_t *l;
    while ((l = keel_list_first(&n->inconns)) != NULL)
        keel__node_inconn_close(KEEL_LIST_ENTRY(l, inconn_t, link));
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (keel__node_peer_live(&n->peers[i])) {
            n->peers[i].closing = 1;
            keel_connector_close(&n->peers[i].conn, keel__node_connector_closed);
        }
}

void keel__node_finish_stop(keel_node_t *n)
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
    keel__node_snap_dir(n, dir, sizeof(dir));
    st->snapshot_index = n->snap_index;
    st->snapshot_disk_bytes = keel_snap_disk_bytes(dir);
    st->requests_pending = n->reqs.pending;
}

uint64_t keel_node_applied(const keel_node_t *n)
{
    return n->sm.ops->applied_index(n->sm.data);
}

int keel_node_is_leader(const keel_node_t *n)
{
    return keel_raft_role(n->raft) == KEEL_RAFT_LEADER;
}

int keel_node_removed(const keel_node_t *n)
{
    return n->evicted || n->reqs.removed;
}

uint64_t keel_node_match(const keel_node_t *n, uint64_t id)
{
    return keel_raft_match_index(n->raft, id);
}

const keel_node_config_t *keel_node_config(const keel_node_t *n)
{
    return &n->cfg;
}
