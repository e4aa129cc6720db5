/* sim.c - the simulated world: nodes running the real Raft core, a faulty network and disk,
   KV clients, and the safety, liveness and linearizability checks. */
#include "sim.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rand.h"
#include "core/lincheck.h"

/*
 * Fault model (docs/raft.md): everything below is drawn from the run's seed, one
 * millisecond at a time, in one thread. Messages are lost, duplicated and delayed
 * (which reorders them); links are cut symmetrically (a split of the nodes into two
 * sides) or in one direction only; nodes crash (losing every write not yet reported
 * durable, except that an unreported prefix may have reached the disk, with a torn
 * last batch) and restart with an empty state machine; a node's disk turns slow; a
 * node pauses (a GC or SIGSTOP) for up to 1.5 s; the leader is asked to transfer
 * leadership. After fault_end_ms every fault is healed and the cluster must make
 * progress within LIVE_MS.
 */
#define KEYS 3
#define CLIENTS 3
#define RING 48
#define CLIENT_TIMEOUT_MS 1000
#define LIVE_MS 10000
#define LOGCHECK_EVERY_MS 250
#define NODES_MAX 9

typedef struct payload {
    uint32_t fn; /* keel_lc_fn_t */
    uint32_t pad;
    uint64_t key;
    int64_t arg, expect;
    uint64_t op;
} payload_t;

typedef struct nmsg {
    keel_raft_msg_t m; /* entries and data point at the copies below */
    keel_raft_entry_t *ents;
    uint8_t *data;
    keel_raft_conf_t *conf; /* heap: a configuration is large (ctx), and rare in messages */
    keel_ms_t at_ms;
} nmsg_t;

typedef struct dwrite {
    keel_ms_t done_ms;
    uint64_t snap_index, snap_term; /* a snapshot from the leader, 0 = none */
    keel_raft_conf_t snap_conf;
    int64_t snap_kv[KEYS + 1];
    int has_hs;
    keel_raft_hard_state_t hs;
    keel_raft_entry_t *ents;
    size_t n;
    nmsg_t *msgs;
    size_t msgs_n;
} dwrite_t;

typedef struct pend {
    uint64_t index, term; /* writes: log position; reads: index once confirmed */
    uint64_t op;
    int client, is_read, confirmed;
} pend_t;

typedef struct node {
    uint64_t id;
    keel_raft_t *r; /* NULL while crashed */
    keel_ms_t restart_at_ms, paused_until_ms, disk_ms_max;
    /* durable storage: hard state, snapshot, log entries after the snapshot */
    keel_raft_hard_state_t hs;
    uint64_t snap_index, snap_term;
    keel_raft_conf_t snap_conf;
    int64_t snap_kv[KEYS + 1];
    keel_raft_entry_t *log;
    size_t log_n, log_cap;
    dwrite_t *wq;
    size_t wq_n, wq_cap;
    /* state machine, volatile */
    int64_t kv[KEYS + 1];
    uint64_t applied;
    pend_t *pend;
    size_t pend_n, pend_cap;
    keel_raft_role_t role_seen;
    uint64_t term_seen;
    int64_t clock_ppm; /* this node's clock runs at 1e6 + clock_ppm parts per million */
} node_t;

typedef struct client {
    uint64_t process;
    int target, busy, delivered;
    size_t op;
    keel_ms_t deadline_ms, next_ms;
    int64_t seen[KEYS + 1];
} client_t;

typedef struct committed {
    uint64_t term, hash;
    uint64_t state_hash; /* state machine after applying it */
} committed_t;

typedef struct world {
    uint64_t seed;
    sim_opts_t o;
    keel_rand_t rnd;
    int n, nv; /* nodes, of which the first nv are the bootstrap voters */
    node_t nodes[NODES_MAX];
    nmsg_t *net;
    size_t net_n, net_cap;
    int cut[NODES_MAX][NODES_MAX];
    double p_loss, p_dup, p_fault;
    keel_ms_t delay_ms_max, now_ms, fault_end_ms;
    client_t cl[CLIENTS];
    keel_lc_op_t *hist;
    size_t hist_n, hist_cap;
    int64_t ts, next_value;
    uint64_t next_process;
    uint64_t *lead_of_term;
    size_t lot_cap;
    committed_t *com;
    size_t com_n, com_cap;
    uint64_t live_index;      /* log index of a write acknowledged after the heal */
    uint64_t compact_every;   /* entries between snapshots, 0 = never */
    uint32_t trailing, chunk; /* log_trailing_entries, snapshot_chunk_bytes_max */
    int lease_reads;          /* half of the runs serve reads from leader leases */
    char ring[RING][160];
    int ring_pos, ring_n;
    sim_result_t *res;
} world_t;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "keel-sim: out of memory\n");
        abort();
    }
    return q;
}

#define GROW(ptr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? (cap)*2 : 16;                                                          \
            (ptr) = xrealloc((ptr), (cap) * sizeof(*(ptr)));                                       \
        }                                                                                          \
    } while (0)

__attribute__((format(printf, 2, 3))) static void event(world_t *w, const char *fmt, ...)
{
    char *slot = w->ring[w->ring_pos];
    int k = snprintf(slot, 160, "%6" PRId64 "ms ", w->now_ms);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(slot + k, (size_t)(160 - k), fmt, ap);
    va_end(ap);
    if (w->o.trace)
        printf("%s\n", slot);
    w->ring_pos = (w->ring_pos + 1) % RING;
    if (w->ring_n < RING)
        w->ring_n++;
}

__attribute__((format(printf, 2, 3))) static void fail(world_t *w, const char *fmt, ...)
{
    if (w->res->failed)
        return;
    w->res->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->res->why, sizeof(w->res->why), fmt, ap);
    va_end(ap);
}

static uint64_t kv_hash(const int64_t *kv)
{
    uint64_t h = 0;
    for (int k = 0; k <= KEYS; k++)
        h = keel_mix64(h ^ (uint64_t)kv[k]);
    return h;
}

static uint64_t entry_hash(const keel_raft_entry_t *e)
{
    uint64_t h = 1469598103934665603ULL ^ e->term ^ ((uint64_t)e->type << 60);
    for (uint32_t i = 0; i < e->len; i++)
        h = (h ^ e->data[i]) * 1099511628211ULL;
    return h;
}

static keel_raft_entry_t *copy_entries(const keel_raft_entry_t *src, size_t n)
{
    if (n == 0)
        return NULL;
    keel_raft_entry_t *v = xrealloc(NULL, n * sizeof(*v));
    for (size_t k = 0; k < n; k++) {
        v[k] = src[k];
        v[k].data = NULL;
        if (src[k].len) {
            v[k].data = xrealloc(NULL, src[k].len);
            memcpy(v[k].data, src[k].data, src[k].len);
        }
    }
    return v;
}

static void free_entries(keel_raft_entry_t *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        free(v[k].data);
    free(v);
}

/* ---- network ------------------------------------------------------------------ */

/* A message leaves its sender: deep copy (the ready's pointers die at advance). */
static void msg_copy(nmsg_t *q, const keel_raft_msg_t *m)
{
    q->m = *m;
    q->ents = copy_entries(m->entries, m->entries_n);
    q->m.entries = q->ents;
    q->data = NULL;
    if (m->data_len) {
        q->data = xrealloc(NULL, m->data_len);
        memcpy(q->data, m->data, m->data_len);
    }
    q->m.data = q->data;
    q->conf = NULL;
    if (m->conf) {
        q->conf = xrealloc(NULL, sizeof(*q->conf));
        *q->conf = *m->conf;
        q->m.conf = q->conf;
    }
}

static void msg_free(nmsg_t *q)
{
    free_entries(q->ents, q->m.entries_n);
    free(q->data);
    free(q->conf);
}

static void net_put(world_t *w, const keel_raft_msg_t *m)
{
    GROW(w->net, w->net_n, w->net_cap);
    nmsg_t *q = &w->net[w->net_n++];
    msg_copy(q, m);
    q->at_ms = w->now_ms + 1 + (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)w->delay_ms_max);
}

static void net_send(world_t *w, const keel_raft_msg_t *m)
{
    if (keel_rand_chance(&w->rnd, w->p_loss))
        return;
    net_put(w, m);
    if (keel_rand_chance(&w->rnd, w->p_dup))
        net_put(w, m);
}

static void trace_msg(world_t *w, const keel_raft_msg_t *m)
{
    if (!w->o.trace)
        return;
    printf("%6" PRId64 "ms   %" PRIu64 ">%" PRIu64 " %s t%" PRIu64 " i%" PRIu64 "/%" PRIu64
           " n%zu c%" PRIu64 "%s\n",
           w->now_ms, m->from, m->to, keel_raft_msg_type_name(m->type), m->term, m->index,
           m->log_term, m->entries_n, m->commit, m->reject ? " reject" : "");
}

static int node_live(const world_t *w, const node_t *nd)
{
    return nd->r != NULL && nd->paused_until_ms <= w->now_ms;
}

static void net_deliver(world_t *w)
{
    size_t keep = 0;
    for (size_t k = 0; k < w->net_n; k++) {
        nmsg_t *q = &w->net[k];
        node_t *to = &w->nodes[q->m.to - 1];
        int hold = q->at_ms > w->now_ms || (to->r != NULL && !node_live(w, to));
        if (hold) {
            w->net[keep++] = *q;
            continue;
        }
        if (to->r != NULL && !w->cut[q->m.from - 1][q->m.to - 1]) {
            trace_msg(w, &q->m);
            int rc = keel_raft_step(to->r, &q->m);
            if (rc != 0)
                fail(w, "step returned %s for %s", keel_err_name(rc),
                     keel_raft_msg_type_name(q->m.type));
        }
        msg_free(q);
    }
    w->net_n = keep;
}

/* ---- disk ------------------------------------------------------------------------ */

static void disk_apply(world_t *w, node_t *nd, dwrite_t *d, size_t entries_n)
{
    if (d->snap_index) { /* the snapshot replaces the whole stored log */
        nd->snap_index = d->snap_index;
        nd->snap_term = d->snap_term;
        nd->snap_conf = d->snap_conf;
        memcpy(nd->snap_kv, d->snap_kv, sizeof(nd->snap_kv));
        while (nd->log_n > 0)
            free(nd->log[--nd->log_n].data);
    }
    if (d->has_hs)
        nd->hs = d->hs;
    if (entries_n == 0)
        return;
    uint64_t first = d->ents[0].index;
    while (nd->log_n > 0 && nd->log[nd->log_n - 1].index >= first)
        free(nd->log[--nd->log_n].data); /* a follower's conflict truncates the stored log */
    uint64_t want = nd->log_n ? nd->log[nd->log_n - 1].index + 1 : nd->snap_index + 1;
    if (first != want)
        fail(w, "node %" PRIu64 " was asked to store index %" PRIu64 " after %" PRIu64, nd->id,
             first, want - 1);
    for (size_t k = 0; k < entries_n; k++) {
        GROW(nd->log, nd->log_n, nd->log_cap);
        nd->log[nd->log_n++] = d->ents[k];
        d->ents[k].data = NULL;
    }
}

static void dwrite_free(dwrite_t *d)
{
    free_entries(d->ents, d->n);
    for (size_t k = 0; k < d->msgs_n; k++)
        msg_free(&d->msgs[k]);
    free(d->msgs);
}

static void disk_complete(world_t *w, node_t *nd)
{
    size_t done = 0;
    while (done < nd->wq_n && nd->wq[done].done_ms <= w->now_ms) {
        dwrite_t *d = &nd->wq[done++];
        disk_apply(w, nd, d, d->n);
        for (size_t k = 0; k < d->msgs_n; k++) {
            net_send(w, &d->msgs[k].m);
        }
        if (d->snap_index)
            keel_raft_persisted(nd->r, d->snap_index, d->snap_term);
        if (d->n)
            keel_raft_persisted(nd->r, d->ents[d->n - 1].index, d->ents[d->n - 1].term);
        dwrite_free(d);
    }
    if (done == 0)
        return;
    memmove(nd->wq, nd->wq + done, (nd->wq_n - done) * sizeof(*nd->wq));
    nd->wq_n -= done;
}

/* ---- clients and the state machine ---------------------------------------------- */

static void complete(world_t *w, int ci, keel_lc_outcome_t outcome, int64_t result)
{
    client_t *c = &w->cl[ci];
    keel_lc_op_t *op = &w->hist[c->op];
    op->outcome = outcome;
    op->result = result;
    op->complete_ts = ++w->ts;
    c->busy = 0;
    c->next_ms = w->now_ms + (keel_ms_t)keel_rand_below(&w->rnd, 20);
    w->res->ops_ok += outcome == KEEL_LC_OK;
    if (op->fn == KEEL_LC_READ && outcome == KEEL_LC_OK)
        c->seen[op->key] = result;
}

static int waiting_for(const world_t *w, const pend_t *p)
{
    return w->cl[p->client].busy && w->cl[p->client].op == p->op;
}

static void redirect(world_t *w, client_t *c, node_t *nd)
{
    uint64_t l = keel_raft_leader(nd->r);
    c->target = l ? (int)(l - 1) : (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
}

static void client_issue(world_t *w, int ci)
{
    client_t *c = &w->cl[ci];
    GROW(w->hist, w->hist_n, w->hist_cap);
    keel_lc_op_t *op = &w->hist[w->hist_n];
    memset(op, 0, sizeof(*op));
    uint64_t pick = keel_rand_below(&w->rnd, 10);
    op->fn = pick < 4 ? KEEL_LC_READ : pick < 8 ? KEEL_LC_WRITE : KEEL_LC_CAS;
    op->key = 1 + keel_rand_below(&w->rnd, KEYS);
    op->process = c->process;
    op->outcome = KEEL_LC_UNKNOWN;
    if (op->fn != KEEL_LC_READ)
        op->arg = ++w->next_value;
    if (op->fn == KEEL_LC_CAS)
        op->expect = keel_rand_chance(&w->rnd, 0.7)
                         ? c->seen[op->key]
                         : (int64_t)keel_rand_below(&w->rnd, (uint64_t)w->next_value);
    op->invoke_ts = ++w->ts;
    c->op = w->hist_n++;
    c->busy = 1;
    c->delivered = 0;
    c->deadline_ms = w->now_ms + CLIENT_TIMEOUT_MS;
    w->res->ops++;
    node_t *nd = &w->nodes[c->target];
    if (!node_live(w, nd))
        return; /* never arrives; the client will time out */
    c->delivered = 1;
    pend_t p = {.op = c->op, .client = ci, .is_read = op->fn == KEEL_LC_READ};
    int rc;
    if (p.is_read && w->o.stale_reads) { /* no ReadIndex: the lincheck must object */
        complete(w, ci, KEEL_LC_OK, nd->kv[op->key]);
        return;
    }
    if (p.is_read) {
        rc = keel_raft_read_index(nd->r, c->op);
    } else {
        payload_t pl = {
            .fn = op->fn, .key = op->key, .arg = op->arg, .expect = op->expect, .op = c->op};
        rc = keel_raft_propose(nd->r, &pl, sizeof(pl), &p.index);
        p.term = keel_raft_term(nd->r);
    }
    if (rc != 0) { /* refused: definitely not executed */
        complete(w, ci, KEEL_LC_FAIL, 0);
        redirect(w, c, nd);
        return;
    }
    GROW(nd->pend, nd->pend_n, nd->pend_cap);
    nd->pend[nd->pend_n++] = p;
}

static void clients_step(world_t *w)
{
    for (int ci = 0; ci < CLIENTS; ci++) {
        client_t *c = &w->cl[ci];
        if (c->busy && w->now_ms >= c->deadline_ms) {
            /* No answer: the op may or may not have happened (Jepsen's :info), unless it
               never reached a node. The process is retired; a fresh one continues. */
            complete(w, ci, c->delivered ? KEEL_LC_UNKNOWN : KEEL_LC_FAIL, 0);
            w->res->ops_unknown += c->delivered;
            if (c->delivered)
                c->process = w->next_process++;
            c->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
        }
        if (!c->busy && w->now_ms >= c->next_ms)
            client_issue(w, ci);
    }
}

static void pend_remove(node_t *nd, size_t k)
{
    nd->pend[k] = nd->pend[--nd->pend_n];
}

static void apply_entry(world_t *w, node_t *nd, const keel_raft_entry_t *e)
{
    if (e->index != nd->applied + 1)
        fail(w, "node %" PRIu64 " applied index %" PRIu64 " after %" PRIu64, nd->id, e->index,
             nd->applied);
    nd->applied = e->index;
    /* State machine safety: every node applies the same entry at an index. */
    uint64_t h = entry_hash(e);
    if (e->index <= w->com_n) {
        committed_t *c = &w->com[e->index - 1];
        if (c->term != e->term || c->hash != h)
            fail(w,
                 "state machine safety: node %" PRIu64 " applied term %" PRIu64 " at index %" PRIu64
                 ", another node applied term %" PRIu64,
                 nd->id, e->term, e->index, c->term);
    } else {
        GROW(w->com, w->com_n, w->com_cap);
        w->com[w->com_n++] = (committed_t){e->term, h, 0};
        w->res->entries_committed++;
    }
    int64_t result = 0;
    if (e->type == KEEL_RAFT_ENTRY_NORMAL && e->len == sizeof(payload_t)) {
        payload_t pl;
        memcpy(&pl, e->data, sizeof(pl));
        if (pl.fn == KEEL_LC_WRITE) {
            nd->kv[pl.key] = pl.arg;
        } else if (nd->kv[pl.key] == pl.expect) {
            nd->kv[pl.key] = pl.arg;
            result = 1;
        }
    }
    /* The state after an index is the same everywhere; snapshots are checked against it. */
    uint64_t sh = kv_hash(nd->kv);
    if (w->com[e->index - 1].state_hash == 0)
        w->com[e->index - 1].state_hash = sh;
    else if (w->com[e->index - 1].state_hash != sh)
        fail(w, "state machine diverged on node %" PRIu64 " after index %" PRIu64, nd->id,
             e->index);
    for (size_t k = 0; k < nd->pend_n; k++) {
        pend_t *p = &nd->pend[k];
        if (p->is_read || p->index != e->index)
            continue;
        if (waiting_for(w, p)) {
            /* Same index and term means same entry (Log Matching): ours committed.
               Another term at our index means ours was dropped and never will commit. */
            int ours = p->term == e->term;
            complete(w, p->client, ours ? KEEL_LC_OK : KEEL_LC_FAIL, ours ? result : 0);
            if (ours && w->now_ms > w->fault_end_ms && w->live_index == 0)
                w->live_index = e->index;
        }
        pend_remove(nd, k--);
    }
}

static void reads_answer(world_t *w, node_t *nd)
{
    for (size_t k = 0; k < nd->pend_n; k++) {
        pend_t *p = &nd->pend[k];
        if (!p->is_read || !p->confirmed || p->index > nd->applied)
            continue;
        if (waiting_for(w, p))
            complete(w, p->client, KEEL_LC_OK, nd->kv[w->hist[p->op].key]);
        pend_remove(nd, k--);
    }
}

static void read_state(world_t *w, node_t *nd, const keel_raft_read_state_t *rs)
{
    for (size_t k = 0; k < nd->pend_n; k++) {
        pend_t *p = &nd->pend[k];
        if (!p->is_read || p->op != rs->ctx)
            continue;
        if (rs->ok) {
            p->confirmed = 1;
            p->index = rs->index;
        } else {
            if (waiting_for(w, p))
                complete(w, p->client, KEEL_LC_FAIL, 0);
            pend_remove(nd, k--);
        }
    }
}

/* ---- nodes -------------------------------------------------------------------- */

/* Each node's own clock: rates differ by up to +-2%, well inside the lease reads'
   drift allowance (lease_drift_ticks 2 of election_ticks_min 10). */
static keel_ms_t node_clock(const world_t *w, const node_t *nd)
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

static void node_start(world_t *w, node_t *nd)
{
    keel_raft_config_t cfg;
    make_config(w, nd, &cfg);
    keel_raft_restore_t rs = {
        .hard_state = nd->hs,
        .snapshot = {.index = nd->snap_index,
                     .term = nd->snap_term,
                     .conf = nd->snap_conf,
                     .data = (const uint8_t *)nd->snap_kv,
                     .data_len = nd->snap_index ? sizeof(nd->snap_kv) : 0},
        .entries = nd->log,
        .entries_n = nd->log_n,
        .applied = nd->snap_index,
    };
    keel_errmsg_t em;
    int rc = keel_raft_new(&nd->r, &cfg, &rs, node_clock(w, nd), &em);
    if (rc != 0) {
        fail(w, "node %" PRIu64 " cannot restart: %s", nd->id, em.text);
        return;
    }
    memcpy(nd->kv, nd->snap_kv, sizeof(nd->kv));
    nd->applied = nd->snap_index;
    nd->role_seen = KEEL_RAFT_FOLLOWER;
    nd->term_seen = nd->hs.term;
}

/* Crash: volatile state is gone; of the writes not yet reported durable, a prefix may
   have reached the disk, the last of them torn (hard state and some of its entries). */
static void node_crash(world_t *w, node_t *nd, keel_ms_t down_ms)
{
    size_t reached = (size_t)keel_rand_below(&w->rnd, nd->wq_n + 1);
    for (size_t k = 0; k < nd->wq_n; k++) {
        dwrite_t *d = &nd->wq[k];
        if (k < reached)
            disk_apply(w, nd, d, d->n);
        else if (k == reached && d->n > 0)
            disk_apply(w, nd, d, (size_t)keel_rand_below(&w->rnd, d->n + 1));
        dwrite_free(d);
    }
    nd->wq_n = 0;
    keel_raft_free(nd->r);
    nd->r = NULL;
    nd->pend_n = 0;
    nd->restart_at_ms = w->now_ms + down_ms;
    w->res->crashes++;
    event(w, "n%" PRIu64 " CRASH (%zu of its unreported writes reached disk), down %" PRId64 "ms",
          nd->id, reached, down_ms);
}

/* A snapshot from the leader: check it is the state every node had at its index. */
static void install_snapshot(world_t *w, node_t *nd, const keel_raft_snapshot_t *sn)
{
    if (sn->data_len != sizeof(nd->kv) || sn->index > w->com_n) {
        fail(w, "node %" PRIu64 " got a snapshot at %" PRIu64 " (%zu bytes), %zu applied anywhere",
             nd->id, sn->index, sn->data_len, w->com_n);
        return;
    }
    memcpy(nd->kv, sn->data, sizeof(nd->kv));
    if (kv_hash(nd->kv) != w->com[sn->index - 1].state_hash)
        fail(w, "node %" PRIu64 " installed a snapshot at %" PRIu64 " unlike the applied state",
             nd->id, sn->index);
    nd->applied = sn->index;
    event(w, "n%" PRIu64 " INSTALL snapshot at %" PRIu64, nd->id, sn->index);
}

/* The application snapshots its state every compact_every entries; the snapshot is
   durable at once (written before this call returns, as a real server would fsync). */
static void maybe_compact(world_t *w, node_t *nd)
{
    if (w->compact_every == 0 || nd->applied < keel_raft_snapshot_index(nd->r) + w->compact_every)
        return;
    for (size_t k = 0; k < nd->wq_n; k++)
        if (nd->wq[k].snap_index)
            return; /* an installed snapshot is still being written: keep the order */
    const keel_raft_entry_t *e = keel_raft_entry_at(nd->r, nd->applied);
    if (e == NULL) {
        fail(w, "node %" PRIu64 " lost applied entry %" PRIu64, nd->id, nd->applied);
        return;
    }
    uint64_t term = e->term; /* read before compaction moves the log */
    int rc = keel_raft_compact(nd->r, nd->applied, nd->kv, sizeof(nd->kv));
    if (rc != 0) {
        fail(w, "compact at %" PRIu64 ": %s", nd->applied, keel_err_name(rc));
        return;
    }
    nd->snap_index = nd->applied;
    nd->snap_term = term;
    nd->snap_conf = *keel_raft_snapshot_conf(nd->r);
    memcpy(nd->snap_kv, nd->kv, sizeof(nd->kv));
    size_t drop = 0;
    while (drop < nd->log_n && nd->log[drop].index <= nd->snap_index)
        free(nd->log[drop++].data);
    if (drop == 0)
        return;
    memmove(nd->log, nd->log + drop, (nd->log_n - drop) * sizeof(*nd->log));
    nd->log_n -= drop;
}

static void node_ready(world_t *w, node_t *nd)
{
    keel_raft_ready_t rd;
    if (!keel_raft_ready(nd->r, &rd))
        return;
    uint64_t stored = nd->log_n ? nd->log[nd->log_n - 1].index : nd->snap_index;
    for (size_t k = 0; k < rd.msgs_n; k++) {
        const keel_raft_msg_t *m = &rd.msgs[k];
        /* Durability of acknowledgements, checked directly: the leader repairs a follower
           that lost acknowledged entries, so a lost one no longer shows as a stall. */
        if (m->type == KEEL_RAFT_MSG_APPEND_RESP && !m->reject && m->index > stored) {
            fail(w, "node %" PRIu64 " acknowledged index %" PRIu64 " with %" PRIu64 " stored",
                 nd->id, m->index, stored);
            return;
        }
        net_send(w, m);
    }
    if (rd.snapshot.index) {
        install_snapshot(w, nd, &rd.snapshot);
        if (w->res->failed)
            return; /* the ready stays open; the run is over */
    }
    if (rd.snapshot.index || rd.hard_state_changed || rd.entries_n || rd.msgs_after_persist_n) {
        GROW(nd->wq, nd->wq_n, nd->wq_cap);
        dwrite_t *d = &nd->wq[nd->wq_n];
        memset(d, 0, sizeof(*d));
        keel_ms_t prev = nd->wq_n ? nd->wq[nd->wq_n - 1].done_ms : w->now_ms;
        keel_ms_t lat = (rd.hard_state_changed || rd.entries_n)
                            ? (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)nd->disk_ms_max + 1)
                            : 0;
        d->done_ms = keel_ms_max(prev, w->now_ms + lat);
        d->has_hs = rd.hard_state_changed;
        if (rd.snapshot.index) {
            d->snap_index = rd.snapshot.index;
            d->snap_term = rd.snapshot.term;
            d->snap_conf = rd.snapshot.conf;
            memcpy(d->snap_kv, rd.snapshot.data, sizeof(d->snap_kv));
        }
        d->hs = rd.hard_state;
        d->ents = copy_entries(rd.entries, rd.entries_n);
        d->n = rd.entries_n;
        if (rd.msgs_after_persist_n) {
            d->msgs = xrealloc(NULL, rd.msgs_after_persist_n * sizeof(*d->msgs));
            for (size_t k = 0; k < rd.msgs_after_persist_n; k++)
                msg_copy(&d->msgs[k], &rd.msgs_after_persist[k]);
            d->msgs_n = rd.msgs_after_persist_n;
        }
        nd->wq_n++;
    }
    for (size_t k = 0; k < rd.committed_n; k++)
        apply_entry(w, nd, &rd.committed[k]);
    for (size_t k = 0; k < rd.reads_n; k++)
        read_state(w, nd, &rd.reads[k]);
    reads_answer(w, nd);
    keel_raft_advance(nd->r);
    maybe_compact(w, nd);
}

/* ---- checks -------------------------------------------------------------------------- */

static void check_leader(world_t *w, node_t *nd)
{
    keel_raft_role_t role = keel_raft_role(nd->r);
    uint64_t term = keel_raft_term(nd->r);
    if (role == nd->role_seen && term == nd->term_seen)
        return;
    if (role != nd->role_seen)
        event(w, "n%" PRIu64 " %s t%" PRIu64 " (last %" PRIu64 " commit %" PRIu64 ")", nd->id,
              keel_raft_role_name(role), term, keel_raft_last_index(nd->r),
              keel_raft_commit(nd->r));
    if (term < nd->term_seen)
        fail(w, "node %" PRIu64 " term went back from %" PRIu64 " to %" PRIu64, nd->id,
             nd->term_seen, term);
    nd->role_seen = role;
    nd->term_seen = term;
    if (role != KEEL_RAFT_LEADER)
        return;
    w->res->leaders++;
    while (term >= w->lot_cap) {
        size_t cap = w->lot_cap ? w->lot_cap * 2 : 64;
        w->lead_of_term = xrealloc(w->lead_of_term, cap * sizeof(uint64_t));
        memset(w->lead_of_term + w->lot_cap, 0, (cap - w->lot_cap) * sizeof(uint64_t));
        w->lot_cap = cap;
    }
    if (w->lead_of_term[term] != 0 && w->lead_of_term[term] != nd->id)
        fail(w, "election safety: nodes %" PRIu64 " and %" PRIu64 " both lead term %" PRIu64,
             w->lead_of_term[term], nd->id, term);
    w->lead_of_term[term] = nd->id;
    /* Leader completeness: a new leader holds every entry applied anywhere. */
    for (uint64_t i = keel_raft_first_index(nd->r); i <= w->com_n; i++) {
        const keel_raft_entry_t *e = keel_raft_entry_at(nd->r, i);
        if (e == NULL || e->term != w->com[i - 1].term || entry_hash(e) != w->com[i - 1].hash) {
            fail(w,
                 "leader completeness: leader %" PRIu64 " of term %" PRIu64
                 " lacks committed index %" PRIu64,
                 nd->id, term, i);
            return;
        }
    }
}

/* Log matching: if two logs hold an entry with the same index and term, the logs are
   identical up to it. Checked from the highest such index down. */
static void check_log_matching(world_t *w)
{
    for (int a = 0; a < w->n; a++) {
        for (int b = a + 1; b < w->n; b++) {
            keel_raft_t *ra = w->nodes[a].r, *rb = w->nodes[b].r;
            if (ra == NULL || rb == NULL)
                continue;
            /* compare where both still hold entries (compaction drops prefixes) */
            uint64_t i = keel_raft_last_index(ra), lo = keel_raft_first_index(ra);
            if (keel_raft_last_index(rb) < i)
                i = keel_raft_last_index(rb);
            if (keel_raft_first_index(rb) > lo)
                lo = keel_raft_first_index(rb);
            while (i >= lo && keel_raft_entry_at(ra, i)->term != keel_raft_entry_at(rb, i)->term)
                i--;
            for (; i >= lo; i--) {
                const keel_raft_entry_t *x = keel_raft_entry_at(ra, i),
                                        *y = keel_raft_entry_at(rb, i);
                if (x->term != y->term || entry_hash(x) != entry_hash(y)) {
                    fail(w, "log matching: nodes %d and %d differ at index %" PRIu64, a + 1, b + 1,
                         i);
                    return;
                }
            }
        }
    }
}

static node_t *leader_node(world_t *w);

/* Live: a write acknowledged after the heal is applied on every member of the current
   leader's configuration (departed nodes legitimately stop at their removal). */
static int live_done(world_t *w)
{
    if (w->live_index == 0)
        return 0;
    node_t *l = leader_node(w);
    if (l == NULL)
        return 0;
    const keel_raft_conf_t *c = keel_raft_conf(l->r);
    for (uint32_t k = 0; k < c->voters_n + c->learners_n; k++) {
        uint64_t id = k < c->voters_n ? c->voters[k] : c->learners[k - c->voters_n];
        node_t *nd = &w->nodes[id - 1];
        if (nd->r == NULL || nd->applied < w->live_index)
            return 0;
    }
    return 1;
}

/* ---- faults ------------------------------------------------------------------------ */

static node_t *leader_node(world_t *w)
{
    for (int i = 0; i < w->n; i++)
        if (w->nodes[i].r && keel_raft_role(w->nodes[i].r) == KEEL_RAFT_LEADER)
            return &w->nodes[i];
    return NULL;
}

static int conf_has(const uint64_t *v, uint32_t n, uint64_t id)
{
    for (uint32_t k = 0; k < n; k++)
        if (v[k] == id)
            return 1;
    return 0;
}

static void conf_drop(uint64_t *v, uint32_t *n, uint64_t id)
{
    for (uint32_t k = 0; k < *n; k++)
        if (v[k] == id) {
            v[k] = v[--*n];
            return;
        }
}

/* One membership step on the leader: add a learner, promote, demote or remove. */
static void change_membership(world_t *w, uint64_t id)
{
    node_t *l = leader_node(w);
    if (l == NULL || l->paused_until_ms > w->now_ms)
        return;
    keel_raft_conf_t c = *keel_raft_conf(l->r);
    int voter = conf_has(c.voters, c.voters_n, id),
        learner = conf_has(c.learners, c.learners_n, id);
    const char *what;
    if (!voter && !learner) {
        c.learners[c.learners_n++] = id;
        what = "add learner";
    } else if (learner && keel_rand_chance(&w->rnd, 0.7)) {
        conf_drop(c.learners, &c.learners_n, id);
        c.voters[c.voters_n++] = id;
        what = "promote";
    } else if (learner) {
        conf_drop(c.learners, &c.learners_n, id);
        what = "remove learner";
    } else if (c.voters_n > 2 && keel_rand_chance(&w->rnd, 0.5)) {
        conf_drop(c.voters, &c.voters_n, id);
        c.learners[c.learners_n++] = id;
        what = "demote";
    } else if (c.voters_n > 2) {
        conf_drop(c.voters, &c.voters_n, id);
        what = "remove voter";
    } else {
        return;
    }
    int rc = keel_raft_propose_conf(l->r, &c);
    event(w, "CONF n%" PRIu64 ": %s n%" PRIu64 " -> %u voters %u learners: %s", l->id, what, id,
          c.voters_n, c.learners_n, keel_err_name(rc));
}

static void fault(world_t *w)
{
    int i = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    node_t *nd = &w->nodes[i];
    switch (keel_rand_below(&w->rnd, 10)) {
    case 8:
    case 9:
        change_membership(w, (uint64_t)(i + 1));
        break;
    case 0: { /* symmetric partition: a random split */
        uint64_t side = keel_rand_u64(&w->rnd);
        for (int a = 0; a < w->n; a++)
            for (int b = 0; b < w->n; b++)
                w->cut[a][b] = ((side >> a) & 1) != ((side >> b) & 1);
        event(w, "PARTITION sides mask %#" PRIx64, side & ((1u << w->n) - 1));
        break;
    }
    case 1: { /* one-way link cut */
        int j = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
        if (j != i) {
            w->cut[i][j] = 1;
            event(w, "CUT %d->%d only", i + 1, j + 1);
        }
        break;
    }
    case 2:
        memset(w->cut, 0, sizeof(w->cut));
        event(w, "HEAL network");
        break;
    case 3:
        if (nd->r)
            node_crash(w, nd, keel_rand_range(&w->rnd, 10, 800));
        break;
    case 4:
        if (nd->r && nd->paused_until_ms <= w->now_ms) {
            nd->paused_until_ms = w->now_ms + keel_rand_range(&w->rnd, 100, 1500);
            event(w, "n%d PAUSE until %" PRId64 "ms", i + 1, nd->paused_until_ms);
        }
        break;
    case 5: {
        node_t *l = leader_node(w);
        if (l && l->paused_until_ms <= w->now_ms && l->id != nd->id) {
            int rc = keel_raft_transfer_leadership(l->r, nd->id);
            event(w, "TRANSFER n%" PRIu64 " -> n%d: %s", l->id, i + 1, keel_err_name(rc));
        }
        break;
    }
    case 6:
        nd->disk_ms_max = keel_rand_chance(&w->rnd, 0.5) ? keel_rand_range(&w->rnd, 20, 150) : 3;
        event(w, "n%d disk latency up to %" PRId64 "ms", i + 1, nd->disk_ms_max);
        break;
    default:
        w->p_loss = keel_rand_double(&w->rnd) * 0.2;
        w->p_dup = keel_rand_double(&w->rnd) * 0.1;
        w->delay_ms_max = keel_rand_range(&w->rnd, 2, 60);
        event(w, "NET loss %.2f dup %.2f delay <= %" PRId64 "ms", w->p_loss, w->p_dup,
              w->delay_ms_max);
        break;
    }
}

static void heal_all(world_t *w)
{
    memset(w->cut, 0, sizeof(w->cut));
    w->p_loss = w->p_dup = 0;
    w->delay_ms_max = 5;
    for (int i = 0; i < w->n; i++) {
        w->nodes[i].paused_until_ms = 0;
        w->nodes[i].disk_ms_max = 3;
        if (w->nodes[i].r == NULL)
            w->nodes[i].restart_at_ms = w->now_ms;
    }
    event(w, "FAULTS END: network healed, nodes up, disks fast");
}

/* ---- the run ------------------------------------------------------------------------ */

static void world_init(world_t *w, uint64_t seed, const sim_opts_t *o, sim_result_t *res)
{
    memset(w, 0, sizeof(*w));
    w->seed = seed;
    w->o = *o;
    w->res = res;
    keel_rand_seed(&w->rnd, seed);
    w->nv = o->nodes;
    w->n = o->nodes + (int)keel_rand_below(&w->rnd, 3); /* 0..2 spares to add later */
    if (w->n > NODES_MAX)
        w->n = NODES_MAX;
    w->p_loss = keel_rand_double(&w->rnd) * 0.1;
    w->p_dup = keel_rand_double(&w->rnd) * 0.05;
    w->delay_ms_max = keel_rand_range(&w->rnd, 2, 30);
    w->p_fault = 1.0 / (double)keel_rand_range(&w->rnd, 80, 400);
    w->fault_end_ms = keel_rand_range(&w->rnd, 1500, 4000);
    w->next_process = CLIENTS + 1;
    w->compact_every =
        keel_rand_chance(&w->rnd, 0.25) ? 0 : (uint64_t)keel_rand_range(&w->rnd, 5, 80);
    w->trailing = (uint32_t)keel_rand_range(&w->rnd, 0, 20);
    w->chunk = (uint32_t)keel_rand_range(&w->rnd, 8, 40);
    w->lease_reads = keel_rand_chance(&w->rnd, 0.5);
    for (int i = 0; i < w->n; i++) {
        w->nodes[i].id = (uint64_t)(i + 1);
        w->nodes[i].disk_ms_max = keel_rand_range(&w->rnd, 0, 10);
        w->nodes[i].clock_ppm = keel_rand_range(&w->rnd, -20000, 20000);
        node_start(w, &w->nodes[i]);
    }
    for (int ci = 0; ci < CLIENTS; ci++) {
        w->cl[ci].process = (uint64_t)(ci + 1);
        w->cl[ci].target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
        w->cl[ci].next_ms = 300 + (keel_ms_t)keel_rand_below(&w->rnd, 100);
    }
}

static void world_free(world_t *w)
{
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        keel_raft_free(nd->r);
        for (size_t k = 0; k < nd->wq_n; k++)
            dwrite_free(&nd->wq[k]);
        free(nd->wq);
        free_entries(nd->log, nd->log_n);
        free(nd->pend);
    }
    for (size_t k = 0; k < w->net_n; k++)
        msg_free(&w->net[k]);
    free(w->net);
    free(w->hist);
    free(w->lead_of_term);
    free(w->com);
}

static void world_step(world_t *w)
{
    if (w->now_ms < w->fault_end_ms && keel_rand_chance(&w->rnd, w->p_fault))
        fault(w);
    if (w->now_ms == w->fault_end_ms)
        heal_all(w);
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (nd->r == NULL && nd->restart_at_ms <= w->now_ms) {
            node_start(w, nd);
            event(w,
                  "n%d RESTART (snapshot %" PRIu64 ", log %zu entries, term %" PRIu64
                  ", commit %" PRIu64 ")",
                  i + 1, nd->snap_index, nd->log_n, nd->hs.term, nd->hs.commit);
        }
    }
    net_deliver(w);
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (node_live(w, nd)) {
            disk_complete(w, nd);
            keel_raft_tick(nd->r, node_clock(w, nd));
        }
    }
    clients_step(w);
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (node_live(w, nd)) {
            node_ready(w, nd);
            check_leader(w, nd);
        }
    }
    if (w->now_ms % LOGCHECK_EVERY_MS == 0)
        check_log_matching(w);
}

typedef struct hev {
    int64_t ts;
    size_t op;
    int done;
} hev_t;

/*
 * Time order, and at equal times: an operation's invocation before its own completion,
 * other completions before invocations (a process's next invocation may share the time
 * of its previous completion), then operation order, so the sort is total and stable.
 */
static int hev_cmp(const void *a, const void *b)
{
    const hev_t *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    if (x->op == y->op)
        return (int)x->done - (int)y->done;
    if (x->done != y->done)
        return x->done ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

/* A value as the history format spells it: 0 is "absent", written null. */
static void put_value(FILE *f, int64_t v)
{
    if (v == 0)
        fprintf(f, "null");
    else
        fprintf(f, "%" PRId64, v);
}

/* Jepsen-style JSON lines, one event per line in time order (docs/lincheck.md). */
static int write_history(world_t *w, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    hev_t *ev = xrealloc(NULL, 2 * w->hist_n * sizeof(*ev));
    for (size_t k = 0; k < w->hist_n; k++) {
        ev[2 * k] = (hev_t){w->hist[k].invoke_ts, k, 0};
        ev[2 * k + 1] = (hev_t){w->hist[k].complete_ts, k, 1};
    }
    qsort(ev, 2 * w->hist_n, sizeof(*ev), hev_cmp);
    static const char *type[] = {"ok", "fail", "info"};
    for (size_t k = 0; k < 2 * w->hist_n; k++) {
        const keel_lc_op_t *op = &w->hist[ev[k].op];
        fprintf(f, "{\"process\":%" PRIu64 ",\"type\":\"%s\",\"f\":\"%s\",\"key\":%" PRIu64,
                op->process, ev[k].done ? type[op->outcome] : "invoke", keel_lc_fn_name(op->fn),
                op->key);
        if (op->fn == KEEL_LC_WRITE) {
            fprintf(f, ",\"value\":");
            put_value(f, op->arg);
        } else if (op->fn == KEEL_LC_CAS) {
            fprintf(f, ",\"value\":[");
            put_value(f, op->expect);
            fprintf(f, ",");
            put_value(f, op->arg);
            fprintf(f, "]");
            if (ev[k].done && op->outcome == KEEL_LC_OK)
                fprintf(f, ",\"result\":%s", op->result ? "true" : "false");
        } else if (ev[k].done && op->outcome == KEEL_LC_OK) {
            fprintf(f, ",\"value\":");
            put_value(f, op->result);
        }
        fprintf(f, ",\"time\":%" PRId64 "}\n", ev[k].ts);
    }
    free(ev);
    return fclose(f);
}

static void check_history(world_t *w)
{
    /* ops still in flight at the end are unknown */
    for (int ci = 0; ci < CLIENTS; ci++)
        if (w->cl[ci].busy) {
            w->hist[w->cl[ci].op].outcome = KEEL_LC_UNKNOWN;
            w->hist[w->cl[ci].op].complete_ts = ++w->ts;
        }
    keel_lc_result_t lr;
    int rc = keel_lincheck(w->hist, w->hist_n, NULL, &lr);
    if (rc != 0 || lr.verdict < 0)
        fail(w, "lincheck could not decide: %s (%s)", keel_err_name(rc ? rc : lr.verdict),
             lr.explain);
    else if (lr.verdict == 0)
        fail(w, "linearizability: key %" PRIu64 ": %s", lr.key, lr.explain);
}

static void print_failure(world_t *w)
{
    printf("FAIL seed=%" PRIu64 " nodes=%d (+%d spare): %s\n", w->seed, w->nv, w->n - w->nv,
           w->res->why);
    printf("  last events:\n");
    for (int k = 0; k < w->ring_n; k++)
        printf("    %s\n", w->ring[(w->ring_pos - w->ring_n + k + RING) % RING]);
    static const char *brk[] = {"", " --break commit-old-term", " --break vote-any-log",
                                " --break ack-undurable"};
    printf("  reproduce: build/keel-sim --nodes %d --seed %" PRIu64 "%s%s --trace\n", w->nv,
           w->seed, (unsigned)w->o.brk < 4 ? brk[w->o.brk] : "",
           w->o.stale_reads ? " --stale-reads" : "");
}

int sim_run(uint64_t seed, const sim_opts_t *o, sim_result_t *res)
{
    memset(res, 0, sizeof(*res));
    world_t *w = xrealloc(NULL, sizeof(*w));
    world_init(w, seed, o, res);
    keel_ms_t end_ms = w->fault_end_ms + LIVE_MS;
    for (w->now_ms = 1; w->now_ms < end_ms && !res->failed; w->now_ms++) {
        world_step(w);
        if (w->now_ms > w->fault_end_ms && live_done(w))
            break;
    }
    if (!res->failed && w->now_ms >= end_ms)
        fail(w, "liveness: no write committed and applied everywhere within %d ms of the heal",
             LIVE_MS);
    if (!res->failed)
        check_log_matching(w);
    if (!res->failed)
        check_history(w);
    res->sim_ms = w->now_ms;
    if (o->history_path && write_history(w, o->history_path) != 0)
        fprintf(stderr, "keel-sim: cannot write %s\n", o->history_path);
    if (res->failed)
        print_failure(w);
    world_free(w);
    free(w);
    return res->failed ? 1 : 0;
}
