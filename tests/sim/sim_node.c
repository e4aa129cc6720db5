/* sim_node.c - one simulated node: the Raft core, the request path and the KV store, driven
   as server/node.c drives them. */
#include "sim_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the state machine, applied as server/node.c applies it ------------------------- */

static void apply_entry(world_t *w, node_t *nd, const keel_raft_entry_t *e)
{
    uint64_t applied = sim__node_applied(nd);
    if (e->index != applied + 1)
        sim__fail(w, "node %" PRIu64 " applied index %" PRIu64 " after %" PRIu64, nd->id, e->index,
                  applied);
    /* State machine safety: every node applies the same entry at an index. */
    uint64_t h = sim__entry_hash(e);
    if (e->index <= w->com_n) {
        committed_t *c = &w->com[e->index - 1];
        if (c->term != e->term || c->hash != h)
            sim__fail(w,
                      "state machine safety: node %" PRIu64 " applied term %" PRIu64
                      " at index %" PRIu64 ", another node applied term %" PRIu64,
                      nd->id, e->term, e->index, c->term);
    } else {
        GROW(w->com, w->com_n, w->com_cap);
        w->com[w->com_n++] = (committed_t){e->term, h, 0};
        w->res->entries_committed++;
    }
    keel_reqs_before_apply(&nd->reqs, e);
    keel_buf_reset(&nd->reply);
    if (e->type == KEEL_RAFT_ENTRY_NORMAL && e->len > 0) {
        int rc = nd->sm.ops->apply(nd->sm.data, e->index, e->data, e->len, &nd->reply);
        if (rc != 0)
            sim__fail(w, "node %" PRIu64 " cannot apply index %" PRIu64 ": %s", nd->id, e->index,
                      keel_err_name(rc));
    } else {
        nd->sm.ops->advance(nd->sm.data, e->index);
    }
    /* The state after an index is the same everywhere; snapshots are checked against it. */
    uint64_t sh = sim__state_hash(nd);
    if (w->com[e->index - 1].state_hash == 0)
        w->com[e->index - 1].state_hash = sh;
    else if (w->com[e->index - 1].state_hash != sh)
        sim__fail(w, "state machine diverged on node %" PRIu64 " after index %" PRIu64, nd->id,
                  e->index);
    keel_reqs_applied(&nd->reqs, e, &nd->reply);
}

/* ---- nodes -------------------------------------------------------------------- */

/* Each node's own clock: rates differ by up to +-2%, well inside the lease reads'
   drift allowance (lease_drift_ticks 2 of election_ticks_min 10). */
keel_ms_t sim__node_clock(const world_t *w, const node_t *nd)
{
    return w->now_ms + w->now_ms * nd->clock_ppm / 1000000;
}

static void make_config(world_t *w, node_t *nd, keel_raft_config_t *cfg)
{
    keel_raft_config_default(cfg);
    cfg->id = nd->id;
    /* the first nv nodes bootstrap the cluster; spares join when added as learners */
    cfg->voters_n = nd->id <= (uint64_t)w->nv ? (size_t)w->nv : 0;
    for (size_t i = 0; i < cfg->voters_n; i++)
        cfg->voters[i] = (uint64_t)(i + 1);
    cfg->msg_entries_max = 64;
    cfg->inflight_msgs_max = 8;
    cfg->seed = keel_mix64(w->seed * 31 + nd->id + (uint64_t)w->now_ms);
    cfg->snapshot_chunk_bytes_max = w->chunk;
    cfg->log_trailing_entries = w->trailing;
    cfg->lease_reads = w->lease_reads;
    cfg->test_break = w->o.brk;
}

/* The requests' world (server/requests.h): the node's clock, its links, its frames. */
static keel_ms_t env_now_ms(void *data)
{
    node_t *nd = data;
    return sim__node_clock(nd->w, nd);
}

static uint64_t env_unix_ms(void *data)
{
    return (uint64_t)env_now_ms(data);
}

static int env_peer_up(void *data, uint64_t id)
{
    node_t *nd = data;
    return sim__link_up(nd->w, nd->id, id);
}

static void env_send_fwd(void *data, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    node_t *nd = data;
    world_t *w = nd->w;
    GROW(w->fwd, w->fwd_n, w->fwd_cap);
    fmsg_t *q = &w->fwd[w->fwd_n++];
    *q = (fmsg_t){.from = nd->id, .to = to, .to_inc = w->nodes[to - 1].inc, .type = type, .f = *f};
    q->bytes = f->bytes_len ? sim__copy_bytes(f->bytes, f->bytes_len) : NULL;
    q->f.bytes = q->bytes;
    q->at_ms = w->now_ms + 1 + (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)w->delay_ms_max);
    /* One connection per pair of nodes (TCP): frames arrive in the order they were sent. */
    keel_ms_t *last = &w->fwd_last_ms[nd->id - 1][to - 1];
    if (q->at_ms < *last)
        q->at_ms = *last;
    *last = q->at_ms;
}

/* Lease reads judge the lease by the core's clock: tick it now (server/node.c does too). */
static void env_before_read_index(void *data)
{
    node_t *nd = data;
    keel_raft_tick(nd->r, sim__node_clock(nd->w, nd));
}

static int start_sm(world_t *w, node_t *nd)
{
    keel_kv_config_t kc = keel_kv_config_default();
    kc.history_changes_max = 16; /* KEEL.WATCH is not simulated */
    kc.history_bytes_max = 4096;
    int rc = keel_kv_sm_init(&nd->kv, &kc);
    nd->sm = keel_kv_sm(&nd->kv);
    keel_errmsg_t em = {{0}};
    if (rc == 0 && nd->snap_index)
        rc = nd->sm.ops->snapshot_load(nd->sm.data, nd->snap_data, nd->snap_len, &em);
    if (rc != 0 || sim__node_applied(nd) != nd->snap_index) {
        sim__fail(w, "node %" PRIu64 " cannot load its snapshot at %" PRIu64 ": %s %s", nd->id,
                  nd->snap_index, keel_err_name(rc), em.text);
        keel_kv_sm_free(&nd->kv);
        return -1;
    }
    return 0;
}

void sim__node_start(world_t *w, node_t *nd)
{
    keel_raft_config_t cfg;
    make_config(w, nd, &cfg);
    if (start_sm(w, nd) != 0)
        return;
    keel_raft_restore_t rs = {
        .hard_state = nd->hs,
        .snapshot = {.index = nd->snap_index,
                     .term = nd->snap_term,
                     .conf = nd->snap_conf,
                     .data = nd->snap_data,
                     .data_len = nd->snap_index ? nd->snap_len : 0},
        .entries = nd->log,
        .entries_n = nd->log_n,
        .applied = nd->snap_index,
    };
    keel_errmsg_t em;
    int rc = keel_raft_new(&nd->r, &cfg, &rs, sim__node_clock(w, nd), &em);
    if (rc != 0) {
        sim__fail(w, "node %" PRIu64 " cannot restart: %s", nd->id, em.text);
        keel_kv_sm_free(&nd->kv);
        nd->r = NULL;
        return;
    }
    nd->inc++;
    keel_raft_config_t rdef; /* make_config keeps the core's entry limit */
    keel_raft_config_default(&rdef);
    keel_reqs_config_t qc = {.id = nd->id,
                             .pending_max = REQUESTS_PENDING_MAX,
                             .timeout_ms = REQUEST_TIMEOUT_MS,
                             .entry_bytes_max = rdef.entry_bytes_max,
                             .test_serve_reads_early = w->o.serve_reads_early,
                             .test_serve_ordered_late = w->o.serve_ordered_late};
    keel_reqs_env_t env = {.data = nd,
                           .now_ms = env_now_ms,
                           .unix_ms = env_unix_ms,
                           .peer_up = env_peer_up,
                           .send_fwd = env_send_fwd,
                           .conf_change = NULL, /* no membership change goes through requests */
                           .before_read_index = env_before_read_index};
    rc = keel_reqs_init(&nd->reqs, &qc, &env, nd->r, nd->sm);
    if (rc != 0) {
        fprintf(stderr, "keel-sim: keel_reqs_init: %s\n", keel_err_name(rc));
        abort();
    }
    keel_buf_init(&nd->reply, 0);
    nd->last_leader = 0;
    nd->role_seen = KEEL_RAFT_FOLLOWER;
    nd->term_seen = nd->hs.term;
}

/* The process ends: its clients' requests are answered (KEEL_ECANCELED, unknown). */
void sim__node_stop(node_t *nd)
{
    keel_reqs_cancel_all(&nd->reqs);
    keel_reqs_free(&nd->reqs);
    keel_raft_free(nd->r);
    nd->r = NULL;
    keel_kv_sm_free(&nd->kv);
    keel_buf_free(&nd->reply);
}

/* Crash: volatile state is gone; of the writes not yet reported durable, a prefix may
   have reached the disk, the last of them torn (hard state and some of its entries). */
void sim__node_crash(world_t *w, node_t *nd, keel_ms_t down_ms)
{
    size_t reached = (size_t)keel_rand_below(&w->rnd, nd->wq_n + 1);
    for (size_t k = 0; k < nd->wq_n; k++) {
        dwrite_t *d = &nd->wq[k];
        if (k < reached)
            sim__disk_apply(w, nd, d, d->n);
        else if (k == reached && d->n > 0)
            sim__disk_apply(w, nd, d, (size_t)keel_rand_below(&w->rnd, d->n + 1));
        sim__dwrite_free(d);
    }
    nd->wq_n = 0;
    sim__node_stop(nd);
    for (int i = 0; i < w->n; i++) /* its connections break */
        if (w->nodes[i].r)
            keel_reqs_peer_lost(&w->nodes[i].reqs, nd->id);
    nd->restart_at_ms = w->now_ms + down_ms;
    w->res->crashes++;
    sim__event(w,
               "n%" PRIu64 " CRASH (%zu of its unreported writes reached disk), down %" PRId64 "ms",
               nd->id, reached, down_ms);
}

/* A snapshot from the leader replaces the state machine (as server/snapshots.c does); it
   must be the state every node had at its index. */
static void install_snapshot(world_t *w, node_t *nd, const keel_raft_snapshot_t *sn)
{
    if (sn->index > w->com_n) {
        sim__fail(
            w, "node %" PRIu64 " got a snapshot at %" PRIu64 " (%zu bytes), %zu applied anywhere",
            nd->id, sn->index, sn->data_len, w->com_n);
        return;
    }
    keel_errmsg_t em = {{0}};
    int rc = nd->sm.ops->snapshot_load(nd->sm.data, sn->data, sn->data_len, &em);
    if (rc != 0 || sim__node_applied(nd) != sn->index) {
        sim__fail(w, "node %" PRIu64 " cannot load the snapshot at %" PRIu64 ": %s %s", nd->id,
                  sn->index, keel_err_name(rc), em.text);
        return;
    }
    if (sim__state_hash(nd) != w->com[sn->index - 1].state_hash)
        sim__fail(w,
                  "node %" PRIu64 " installed a snapshot at %" PRIu64 " unlike the applied state",
                  nd->id, sn->index);
    sim__event(w, "n%" PRIu64 " INSTALL snapshot at %" PRIu64 " (%zu bytes)", nd->id, sn->index,
               sn->data_len);
    keel_reqs_snapshot_installed(&nd->reqs, sn->index);
}

static int snap_sink(void *data, const uint8_t *p, size_t len)
{
    return keel_buf_append(data, p, len);
}

/* The application snapshots its state every compact_every entries; the snapshot is
   durable at once (written before this call returns, as a real server would fsync). */
static void maybe_compact(world_t *w, node_t *nd)
{
    uint64_t applied = sim__node_applied(nd);
    if (w->compact_every == 0 || applied < keel_raft_snapshot_index(nd->r) + w->compact_every)
        return;
    for (size_t k = 0; k < nd->wq_n; k++)
        if (nd->wq[k].snap_index)
            return; /* an installed snapshot is still being written: keep the order */
    const keel_raft_entry_t *e = keel_raft_entry_at(nd->r, applied);
    if (e == NULL) {
        sim__fail(w, "node %" PRIu64 " lost applied entry %" PRIu64, nd->id, applied);
        return;
    }
    uint64_t term = e->term; /* read before compaction moves the log */
    keel_buf_t b;
    keel_buf_init(&b, 0);
    int rc = nd->sm.ops->snapshot_write(nd->sm.data, snap_sink, &b);
    if (rc == 0)
        rc = keel_raft_compact(nd->r, applied, keel_buf_rptr(&b), keel_buf_unread(&b));
    if (rc != 0) {
        keel_buf_free(&b);
        sim__fail(w, "compact at %" PRIu64 ": %s", applied, keel_err_name(rc));
        return;
    }
    nd->snap_index = applied;
    nd->snap_term = term;
    nd->snap_conf = *keel_raft_snapshot_conf(nd->r);
    free(nd->snap_data);
    nd->snap_len = keel_buf_unread(&b);
    nd->snap_data = sim__copy_bytes(keel_buf_rptr(&b), nd->snap_len);
    keel_buf_free(&b);
    size_t drop = 0;
    while (drop < nd->log_n && nd->log[drop].index <= nd->snap_index)
        free(nd->log[drop++].data);
    if (drop == 0)
        return;
    memmove(nd->log, nd->log + drop, (nd->log_n - drop) * sizeof(*nd->log));
    nd->log_n -= drop;
}

/* The Ready contract (core/raft/raft.h), carried out as server/node.c's handle_ready does. */
static void handle_ready(world_t *w, node_t *nd, const keel_raft_ready_t *rd)
{
    uint64_t stored = nd->log_n ? nd->log[nd->log_n - 1].index : nd->snap_index;
    for (size_t k = 0; k < rd->msgs_n; k++) {
        const keel_raft_msg_t *m = &rd->msgs[k];
        /* Durability of acknowledgements, checked directly: the leader repairs a follower
           that lost acknowledged entries, so a lost one no longer shows as a stall. */
        if (m->type == KEEL_RAFT_MSG_APPEND_RESP && !m->reject && m->index > stored) {
            sim__fail(w, "node %" PRIu64 " acknowledged index %" PRIu64 " with %" PRIu64 " stored",
                      nd->id, m->index, stored);
            return;
        }
        sim__net_send(w, m);
    }
    if (rd->snapshot.index) {
        install_snapshot(w, nd, &rd->snapshot);
        if (w->res->failed)
            return; /* the ready stays open; the run is over */
    }
    if (rd->snapshot.index || rd->hard_state_changed || rd->entries_n || rd->msgs_after_persist_n) {
        GROW(nd->wq, nd->wq_n, nd->wq_cap);
        dwrite_t *d = &nd->wq[nd->wq_n];
        memset(d, 0, sizeof(*d));
        keel_ms_t prev = nd->wq_n ? nd->wq[nd->wq_n - 1].done_ms : w->now_ms;
        keel_ms_t lat = (rd->hard_state_changed || rd->entries_n)
                            ? (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)nd->disk_ms_max + 1)
                            : 0;
        d->done_ms = keel_ms_max(prev, w->now_ms + lat);
        d->has_hs = rd->hard_state_changed;
        if (rd->snapshot.index) {
            d->snap_index = rd->snapshot.index;
            d->snap_term = rd->snapshot.term;
            d->snap_conf = rd->snapshot.conf;
            d->snap_data = sim__copy_bytes(rd->snapshot.data, rd->snapshot.data_len);
            d->snap_len = rd->snapshot.data_len;
        }
        d->hs = rd->hard_state;
        d->ents = sim__copy_entries(rd->entries, rd->entries_n);
        d->n = rd->entries_n;
        if (rd->msgs_after_persist_n) {
            d->msgs = sim__xrealloc(NULL, rd->msgs_after_persist_n * sizeof(*d->msgs));
            for (size_t k = 0; k < rd->msgs_after_persist_n; k++)
                sim__msg_copy(&d->msgs[k], &rd->msgs_after_persist[k]);
            d->msgs_n = rd->msgs_after_persist_n;
        }
        nd->wq_n++;
    }
    for (size_t k = 0; k < rd->committed_n && !w->res->failed; k++)
        apply_entry(w, nd, &rd->committed[k]);
    for (size_t k = 0; k < rd->reads_n; k++)
        keel_reqs_read_state(&nd->reqs, &rd->reads[k]);
}

/* The leader as this node sees it, and whether it is a member (server/members.c). */
static void note_leader(node_t *nd)
{
    const keel_raft_conf_t *c = keel_raft_conf(nd->r);
    nd->reqs.removed = !sim__conf_has(c->voters, c->voters_n, nd->id) &&
                       !sim__conf_has(c->learners, c->learners_n, nd->id);
    uint64_t leader = keel_raft_leader(nd->r);
    int changed = leader != nd->last_leader;
    nd->last_leader = leader;
    keel_reqs_leader_known(&nd->reqs, leader, changed);
}

/* One pass of the node (server/node.c's keel__node_process): readies until nothing moves. */
void sim__node_process(world_t *w, node_t *nd)
{
    note_leader(nd);
    keel_raft_ready_t rd;
    for (;;) {
        while (keel_raft_ready(nd->r, &rd)) {
            keel_reqs_ready_begin(&nd->reqs);
            handle_ready(w, nd, &rd);
            keel_reqs_ready_end(&nd->reqs);
            if (w->res->failed)
                return; /* the ready stays open; the run is over */
            keel_raft_advance(nd->r);
        }
        if (!keel_reqs_step(&nd->reqs))
            break;
    }
    maybe_compact(w, nd);
    keel_reqs_end_pass(&nd->reqs);
}
