/* sim.c - the simulated world: nodes running the real Raft core, request path and KV store,
   a faulty network and disk, clients, and the safety, liveness and linearizability checks. */
#include "sim.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/num.h"
#include "base/rand.h"
#include "core/lincheck.h"
#include "proto/resp.h"
#include "server/requests.h"
#include "sm/kv_sm.h"

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
#define REQUEST_TIMEOUT_MS 800 /* the node's own timeout: it answers before the client gives up */
#define REQUESTS_PENDING_MAX 64
#define LIVE_MS 10000
#define LOGCHECK_EVERY_MS 250
#define NODES_MAX 9

typedef struct nmsg {
    keel_raft_msg_t m; /* entries and data point at the copies below */
    keel_raft_entry_t *ents;
    uint8_t *data;
    keel_raft_conf_t *conf; /* heap: a configuration is large (ctx), and rare in messages */
    keel_ms_t at_ms;
} nmsg_t;

/*
 * A forwarding frame (server/requests.c's FWD_*) on the connection between two nodes. It
 * travels like a TCP stream's bytes: delayed (and, across frames, reordered) but never
 * duplicated; a frame lost to a cut link, a loss draw or a crash breaks the connection,
 * which both ends learn (keel_reqs_peer_lost), as the real transport reports a broken
 * connection. A frame never reaches a later incarnation of its receiver.
 */
typedef struct fmsg {
    uint64_t from, to;
    uint32_t to_inc; /* the receiver's incarnation when it was sent */
    keel_peer_type_t type;
    keel_peer_fwd_t f; /* f.bytes points at the copy below */
    uint8_t *bytes;
    keel_ms_t at_ms;
} fmsg_t;

typedef struct dwrite {
    keel_ms_t done_ms;
    uint64_t snap_index, snap_term; /* a snapshot from the leader, 0 = none */
    keel_raft_conf_t snap_conf;
    uint8_t *snap_data; /* the KV snapshot's bytes (keel_kv_snapshot_encode) */
    size_t snap_len;
    int has_hs;
    keel_raft_hard_state_t hs;
    keel_raft_entry_t *ents;
    size_t n;
    nmsg_t *msgs;
    size_t msgs_n;
} dwrite_t;

typedef struct world world_t;

typedef struct node {
    uint64_t id;
    world_t *w;
    keel_raft_t *r; /* NULL while crashed */
    uint32_t inc;   /* incarnation: +1 at every start */
    keel_ms_t restart_at_ms, paused_until_ms, disk_ms_max;
    /* durable storage: hard state, snapshot, log entries after the snapshot */
    keel_raft_hard_state_t hs;
    uint64_t snap_index, snap_term;
    keel_raft_conf_t snap_conf;
    uint8_t *snap_data;
    size_t snap_len;
    keel_raft_entry_t *log;
    size_t log_n, log_cap;
    dwrite_t *wq;
    size_t wq_n, wq_cap;
    /* volatile: the KV state machine and the request path, as in server/node.c */
    keel_kv_sm_t kv;
    keel_sm_t sm;
    keel_reqs_t reqs;
    keel_buf_t reply;
    uint64_t last_leader;
    keel_raft_role_t role_seen;
    uint64_t term_seen;
    int64_t clock_ppm; /* this node's clock runs at 1e6 + clock_ppm parts per million */
} node_t;

/* What a client op is on the wire (lincheck's model in brackets). */
typedef enum cmd_kind {
    CMD_GET,   /* GET k         [read] */
    CMD_SET,   /* SET k v       [write v] */
    CMD_SETNX, /* SET k v NX    [cas absent -> v] */
    CMD_DEL,   /* DEL k         [write absent] */
} cmd_kind_t;

typedef struct client {
    uint64_t process;
    int target, busy, delivered;
    size_t op;
    cmd_kind_t cmd;
    keel_ms_t deadline_ms, next_ms;
} client_t;

/* The ctx of one submitted request: freed by its done, which keel_reqs calls exactly once
   (an ASan leak here would show a request answered never). */
typedef struct sreq {
    world_t *w;
    int client;
    size_t op;
} sreq_t;

typedef struct committed {
    uint64_t term, hash;
    uint64_t state_hash; /* state machine after applying it */
} committed_t;

struct world {
    uint64_t seed;
    sim_opts_t o;
    keel_rand_t rnd;
    int n, nv; /* nodes, of which the first nv are the bootstrap voters */
    node_t nodes[NODES_MAX];
    nmsg_t *net;
    size_t net_n, net_cap;
    fmsg_t *fwd;
    size_t fwd_n, fwd_cap;
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
    int ending;               /* world_free: answers only free their ctx */
    int issue_depth;          /* clients issuing from inside an answer (bounded) */
    char ring[RING][160];
    int ring_pos, ring_n;
    sim_result_t *res;
};

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

/* The client keys are "k1".."k3"; lincheck numbers them 1..3. */
static size_t key_name(char *out, uint64_t key)
{
    return (size_t)snprintf(out, 8, "k%" PRIu64, key);
}

/* The state machine's state as far as the checks care: its revision and every key. */
static uint64_t state_hash(const node_t *nd)
{
    const keel_kv_t *kv = &nd->kv.kv;
    uint64_t h = keel_mix64(keel_kv_revision(kv) ^ ((uint64_t)keel_kv_count(kv) << 48));
    for (uint64_t k = 1; k <= KEYS; k++) {
        char name[8];
        keel_kv_value_t v;
        h = keel_mix64(h ^ k);
        if (keel_kv_get(kv, name, key_name(name, k), &v) != 0)
            continue;
        for (size_t i = 0; i < v.len; i++)
            h = (h ^ v.value[i]) * 1099511628211ULL;
        h = keel_mix64(h ^ v.version);
    }
    return h;
}

static uint8_t *copy_bytes(const uint8_t *p, size_t n)
{
    uint8_t *q = xrealloc(NULL, n);
    if (n)
        memcpy(q, p, n);
    return q;
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
        free(nd->snap_data);
        nd->snap_data = d->snap_data; /* taken over */
        nd->snap_len = d->snap_len;
        d->snap_data = NULL;
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
    free(d->snap_data);
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

/* ---- forwarding frames: the connections between nodes -------------------------------- */

/* Member b is reachable from a over an open connection (requests.h's peer_up). */
static int link_up(const world_t *w, uint64_t a, uint64_t b)
{
    return w->nodes[b - 1].r != NULL && !w->cut[a - 1][b - 1] && !w->cut[b - 1][a - 1];
}

/* The connection between a and b broke: each end that runs learns it. Called only between
   the nodes' passes, never from inside one (a node's requests are never re-entered). */
static void link_lost(world_t *w, uint64_t a, uint64_t b)
{
    if (w->nodes[a - 1].r)
        keel_reqs_peer_lost(&w->nodes[a - 1].reqs, b);
    if (w->nodes[b - 1].r)
        keel_reqs_peer_lost(&w->nodes[b - 1].reqs, a);
}

static void fwd_deliver(world_t *w)
{
    size_t keep = 0;
    /* on_fwd may send frames (appended, so fwd_n grows) and move w->fwd: copy each out */
    for (size_t k = 0; k < w->fwd_n; k++) {
        fmsg_t m = w->fwd[k];
        node_t *to = &w->nodes[m.to - 1];
        int same = to->r != NULL && to->inc == m.to_inc;
        if (m.at_ms > w->now_ms || (same && !node_live(w, to))) {
            w->fwd[keep++] = m;
            continue;
        }
        if (!same) {
            /* the receiver crashed since: the frame died with its connection */
        } else if (w->cut[m.from - 1][m.to - 1] || w->cut[m.to - 1][m.from - 1] ||
                   keel_rand_chance(&w->rnd, w->p_loss / 4)) {
            if (w->o.trace)
                printf("%6" PRId64 "ms   %" PRIu64 ">%" PRIu64 " fwd %d lost: connection broken\n",
                       w->now_ms, m.from, m.to, (int)m.type);
            link_lost(w, m.from, m.to);
        } else {
            if (w->o.trace)
                printf("%6" PRId64 "ms   %" PRIu64 ">%" PRIu64 " fwd %d req %" PRIu64
                       " status %u index %" PRIu64 " %zu bytes\n",
                       w->now_ms, m.from, m.to, (int)m.type, m.f.req_id, m.f.status, m.f.index,
                       m.f.bytes_len);
            keel_reqs_on_fwd(&to->reqs, m.from, m.type, &m.f);
        }
        free(m.bytes);
    }
    w->fwd_n = keep;
}

/* ---- clients ------------------------------------------------------------------------ */

static uint64_t node_applied(const node_t *nd)
{
    return nd->sm.ops->applied_index(nd->sm.data);
}

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
    if (outcome != KEEL_LC_OK) /* an error or no answer: the client tries another node */
        c->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    if (outcome == KEEL_LC_UNKNOWN) {
        /* The op may or may not have happened (Jepsen's :info): the process is retired and a
           fresh one continues. */
        w->res->ops_unknown++;
        c->process = w->next_process++;
    }
    if (outcome == KEEL_LC_OK && op->fn != KEEL_LC_READ && w->now_ms > w->fault_end_ms &&
        w->live_index == 0) {
        /* acknowledged after the heal: its entry is at or below every applied index seen */
        for (int i = 0; i < w->n; i++)
            if (w->nodes[i].r && node_applied(&w->nodes[i]) > w->live_index)
                w->live_index = node_applied(&w->nodes[i]);
    }
}

/* A reply (RESP from the KV state machine, maybe relayed by the leader) as lincheck's
   outcome. An error reply means the command changed nothing (refused, or not a member). */
static keel_lc_outcome_t parse_reply(world_t *w, cmd_kind_t cmd, const uint8_t *p, size_t len,
                                     int64_t *result)
{
    keel_resp_config_t cfg = keel_resp_config_default();
    keel_resp_value_t *v;
    size_t used;
    keel_errmsg_t em = {{0}};
    *result = 0;
    if (keel_resp_parse_reply(&cfg, p, len, &v, &used, &em) != 0 || used != len) {
        fail(w, "a client cannot parse its reply (%zu bytes): %s", len, em.text);
        return KEEL_LC_UNKNOWN;
    }
    keel_lc_outcome_t out = KEEL_LC_OK;
    int ok;
    if (v->type == KEEL_RESP_ERROR) {
        out = KEEL_LC_FAIL;
        ok = 1;
    } else if (cmd == CMD_GET) {
        ok = v->type == KEEL_RESP_NIL ||
             (v->type == KEEL_RESP_BULK && keel_parse_i64(v->str.ptr, v->str.len, result) == 0);
    } else if (cmd == CMD_SETNX) {
        ok = v->type == KEEL_RESP_NIL || v->type == KEEL_RESP_SIMPLE;
        *result = v->type == KEEL_RESP_SIMPLE;
    } else {
        ok = v->type == (cmd == CMD_SET ? KEEL_RESP_SIMPLE : KEEL_RESP_INT);
    }
    if (!ok)
        fail(w, "a client got an unexpected reply of type %d to command %d", (int)v->type,
             (int)cmd);
    keel_resp_value_free(v);
    return out;
}

static void client_issue(world_t *w, int ci);

/* A request's answer from the node's request path (exactly once per accepted request). */
static void sreq_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    sreq_t *t = ctx;
    world_t *w = t->w;
    int ci = t->client;
    client_t *c = &w->cl[ci];
    size_t op = t->op;
    free(t);
    if (w->ending || !c->busy || c->op != op)
        return; /* the client gave up on it already */
    if (status == KEEL_ENOTMEMBER || status == KEEL_EREJECTED) {
        complete(w, ci, KEEL_LC_FAIL, 0); /* refused: nothing was proposed */
        return;
    }
    if (status != 0) {
        if (status != KEEL_ETIMEDOUT && status != KEEL_ECONNRESET && status != KEEL_ECANCELED)
            fail(w, "a request was answered %s", keel_err_name(status));
        complete(w, ci, KEEL_LC_UNKNOWN, 0);
        return;
    }
    int64_t result;
    keel_lc_outcome_t o = parse_reply(w, c->cmd, reply, len, &result);
    complete(w, ci, o, result);
    /* Sometimes the next command goes at once, from inside the answer, as a pipelining
       connection's would: the request path must take it mid-pass (in_ready). */
    if (w->issue_depth == 0 && keel_rand_chance(&w->rnd, 0.25)) {
        w->issue_depth++;
        client_issue(w, ci);
        w->issue_depth--;
    }
}

/* --stale-reads: a read served from the node's local state, asking nobody. */
static void read_stale(world_t *w, int ci, node_t *nd, int argc, const uint8_t *const *argv,
                       const size_t *lens)
{
    keel_buf_t enc;
    keel_buf_init(&enc, 0);
    uint64_t now = keel_reqs_read_now_ms(&nd->reqs);
    keel_buf_reset(&nd->reply);
    int rc = nd->sm.ops->encode(nd->sm.data, now, argc, argv, lens, &enc);
    if (rc == 0)
        rc = nd->sm.ops->read(nd->sm.data, now, keel_buf_rptr(&enc), keel_buf_unread(&enc),
                              &nd->reply);
    keel_buf_free(&enc);
    if (rc != 0) {
        fail(w, "a local read failed: %s", keel_err_name(rc));
        return;
    }
    int64_t result;
    keel_lc_outcome_t o =
        parse_reply(w, CMD_GET, keel_buf_rptr(&nd->reply), keel_buf_unread(&nd->reply), &result);
    complete(w, ci, o, result);
}

/*
 * A client sends GET / SET / SET NX / DEL on one of three keys to a node (any node:
 * followers forward writes and ask the leader for read indexes), through the node's
 * request path, as a client connection does (server/conn.c calls keel_node_write/read).
 */
static void client_issue(world_t *w, int ci)
{
    client_t *c = &w->cl[ci];
    GROW(w->hist, w->hist_n, w->hist_cap);
    keel_lc_op_t *op = &w->hist[w->hist_n];
    memset(op, 0, sizeof(*op));
    uint64_t pick = keel_rand_below(&w->rnd, 20);
    c->cmd = pick < 8 ? CMD_GET : pick < 15 ? CMD_SET : pick < 18 ? CMD_SETNX : CMD_DEL;
    static const keel_lc_fn_t fn[] = {KEEL_LC_READ, KEEL_LC_WRITE, KEEL_LC_CAS, KEEL_LC_WRITE};
    op->fn = fn[c->cmd];
    op->key = 1 + keel_rand_below(&w->rnd, KEYS);
    op->process = c->process;
    op->outcome = KEEL_LC_UNKNOWN;
    if (c->cmd == CMD_SET || c->cmd == CMD_SETNX)
        op->arg = ++w->next_value; /* DEL writes "absent" (0); SET NX expects it */
    op->invoke_ts = ++w->ts;
    c->op = w->hist_n++;
    c->busy = 1;
    c->delivered = 0;
    c->deadline_ms = w->now_ms + CLIENT_TIMEOUT_MS;
    w->res->ops++;
    if (keel_rand_chance(&w->rnd, 0.3))
        c->target = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
    node_t *nd = &w->nodes[c->target];
    if (!node_live(w, nd))
        return; /* never arrives; the client will time out */
    c->delivered = 1;
    static const char *name[] = {"GET", "SET", "SET", "DEL"};
    char key[8], val[24];
    const uint8_t *argv[4] = {(const uint8_t *)name[c->cmd], (const uint8_t *)key,
                              (const uint8_t *)val, (const uint8_t *)"NX"};
    size_t lens[4] = {3, key_name(key, op->key),
                      (size_t)snprintf(val, sizeof(val), "%" PRId64, op->arg), 2};
    int argc = c->cmd == CMD_SET ? 3 : c->cmd == CMD_SETNX ? 4 : 2;
    if (c->cmd == CMD_GET && w->o.stale_reads) {
        read_stale(w, ci, nd, argc, argv, lens);
        return;
    }
    /* A quarter of the reads go through the log, as the server sends a read that follows a
       write of the same connection (server/conn.c): answered when its entry applies. */
    int log_read = c->cmd == CMD_GET && keel_rand_chance(&w->rnd, 0.25);
    sreq_t *t = xrealloc(NULL, sizeof(*t));
    *t = (sreq_t){w, ci, c->op};
    int rc =
        keel_reqs_submit(&nd->reqs, c->cmd == CMD_GET && !log_read ? KEEL_REQ_READ : KEEL_REQ_WRITE,
                         argc, argv, lens, sreq_done, t);
    if (rc != 0) { /* refused at the door (full, stopping): definitely not executed */
        free(t);
        complete(w, ci, KEEL_LC_FAIL, 0);
    }
    /* op may be stale here: the answer can come (and the next op start) before this returns */
}

static void clients_step(world_t *w)
{
    for (int ci = 0; ci < CLIENTS; ci++) {
        client_t *c = &w->cl[ci];
        if (c->busy && w->now_ms >= c->deadline_ms) {
            /* No answer: unknown, unless it never reached a node. */
            complete(w, ci, c->delivered ? KEEL_LC_UNKNOWN : KEEL_LC_FAIL, 0);
        }
        if (!c->busy && w->now_ms >= c->next_ms)
            client_issue(w, ci);
    }
}

/* ---- the state machine, applied as server/node.c applies it ------------------------- */

static void apply_entry(world_t *w, node_t *nd, const keel_raft_entry_t *e)
{
    uint64_t applied = node_applied(nd);
    if (e->index != applied + 1)
        fail(w, "node %" PRIu64 " applied index %" PRIu64 " after %" PRIu64, nd->id, e->index,
             applied);
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
    keel_buf_reset(&nd->reply);
    if (e->type == KEEL_RAFT_ENTRY_NORMAL && e->len > 0) {
        int rc = nd->sm.ops->apply(nd->sm.data, e->index, e->data, e->len, &nd->reply);
        if (rc != 0)
            fail(w, "node %" PRIu64 " cannot apply index %" PRIu64 ": %s", nd->id, e->index,
                 keel_err_name(rc));
    } else {
        nd->sm.ops->advance(nd->sm.data, e->index);
    }
    /* The state after an index is the same everywhere; snapshots are checked against it. */
    uint64_t sh = state_hash(nd);
    if (w->com[e->index - 1].state_hash == 0)
        w->com[e->index - 1].state_hash = sh;
    else if (w->com[e->index - 1].state_hash != sh)
        fail(w, "state machine diverged on node %" PRIu64 " after index %" PRIu64, nd->id,
             e->index);
    keel_reqs_applied(&nd->reqs, e, &nd->reply);
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

/* The requests' world (server/requests.h): the node's clock, its links, its frames. */
static keel_ms_t env_now_ms(void *data)
{
    node_t *nd = data;
    return node_clock(nd->w, nd);
}

static uint64_t env_unix_ms(void *data)
{
    return (uint64_t)env_now_ms(data);
}

static int env_peer_up(void *data, uint64_t id)
{
    node_t *nd = data;
    return link_up(nd->w, nd->id, id);
}

static void env_send_fwd(void *data, uint64_t to, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    node_t *nd = data;
    world_t *w = nd->w;
    GROW(w->fwd, w->fwd_n, w->fwd_cap);
    fmsg_t *q = &w->fwd[w->fwd_n++];
    *q = (fmsg_t){.from = nd->id, .to = to, .to_inc = w->nodes[to - 1].inc, .type = type, .f = *f};
    q->bytes = f->bytes_len ? copy_bytes(f->bytes, f->bytes_len) : NULL;
    q->f.bytes = q->bytes;
    q->at_ms = w->now_ms + 1 + (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)w->delay_ms_max);
}

/* Lease reads judge the lease by the core's clock: tick it now (server/node.c does too). */
static void env_before_read_index(void *data)
{
    node_t *nd = data;
    keel_raft_tick(nd->r, node_clock(nd->w, nd));
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
    if (rc != 0 || node_applied(nd) != nd->snap_index) {
        fail(w, "node %" PRIu64 " cannot load its snapshot at %" PRIu64 ": %s %s", nd->id,
             nd->snap_index, keel_err_name(rc), em.text);
        keel_kv_sm_free(&nd->kv);
        return -1;
    }
    return 0;
}

static void node_start(world_t *w, node_t *nd)
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
    int rc = keel_raft_new(&nd->r, &cfg, &rs, node_clock(w, nd), &em);
    if (rc != 0) {
        fail(w, "node %" PRIu64 " cannot restart: %s", nd->id, em.text);
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
                             .test_serve_reads_early = w->o.serve_reads_early};
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
static void node_stop(node_t *nd)
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
    node_stop(nd);
    for (int i = 0; i < w->n; i++) /* its connections break */
        if (w->nodes[i].r)
            keel_reqs_peer_lost(&w->nodes[i].reqs, nd->id);
    nd->restart_at_ms = w->now_ms + down_ms;
    w->res->crashes++;
    event(w, "n%" PRIu64 " CRASH (%zu of its unreported writes reached disk), down %" PRId64 "ms",
          nd->id, reached, down_ms);
}

/* A snapshot from the leader replaces the state machine (as server/snapshots.c does); it
   must be the state every node had at its index. */
static void install_snapshot(world_t *w, node_t *nd, const keel_raft_snapshot_t *sn)
{
    if (sn->index > w->com_n) {
        fail(w, "node %" PRIu64 " got a snapshot at %" PRIu64 " (%zu bytes), %zu applied anywhere",
             nd->id, sn->index, sn->data_len, w->com_n);
        return;
    }
    keel_errmsg_t em = {{0}};
    int rc = nd->sm.ops->snapshot_load(nd->sm.data, sn->data, sn->data_len, &em);
    if (rc != 0 || node_applied(nd) != sn->index) {
        fail(w, "node %" PRIu64 " cannot load the snapshot at %" PRIu64 ": %s %s", nd->id,
             sn->index, keel_err_name(rc), em.text);
        return;
    }
    if (state_hash(nd) != w->com[sn->index - 1].state_hash)
        fail(w, "node %" PRIu64 " installed a snapshot at %" PRIu64 " unlike the applied state",
             nd->id, sn->index);
    event(w, "n%" PRIu64 " INSTALL snapshot at %" PRIu64 " (%zu bytes)", nd->id, sn->index,
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
    uint64_t applied = node_applied(nd);
    if (w->compact_every == 0 || applied < keel_raft_snapshot_index(nd->r) + w->compact_every)
        return;
    for (size_t k = 0; k < nd->wq_n; k++)
        if (nd->wq[k].snap_index)
            return; /* an installed snapshot is still being written: keep the order */
    const keel_raft_entry_t *e = keel_raft_entry_at(nd->r, applied);
    if (e == NULL) {
        fail(w, "node %" PRIu64 " lost applied entry %" PRIu64, nd->id, applied);
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
        fail(w, "compact at %" PRIu64 ": %s", applied, keel_err_name(rc));
        return;
    }
    nd->snap_index = applied;
    nd->snap_term = term;
    nd->snap_conf = *keel_raft_snapshot_conf(nd->r);
    free(nd->snap_data);
    nd->snap_len = keel_buf_unread(&b);
    nd->snap_data = copy_bytes(keel_buf_rptr(&b), nd->snap_len);
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
            fail(w, "node %" PRIu64 " acknowledged index %" PRIu64 " with %" PRIu64 " stored",
                 nd->id, m->index, stored);
            return;
        }
        net_send(w, m);
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
            d->snap_data = copy_bytes(rd->snapshot.data, rd->snapshot.data_len);
            d->snap_len = rd->snapshot.data_len;
        }
        d->hs = rd->hard_state;
        d->ents = copy_entries(rd->entries, rd->entries_n);
        d->n = rd->entries_n;
        if (rd->msgs_after_persist_n) {
            d->msgs = xrealloc(NULL, rd->msgs_after_persist_n * sizeof(*d->msgs));
            for (size_t k = 0; k < rd->msgs_after_persist_n; k++)
                msg_copy(&d->msgs[k], &rd->msgs_after_persist[k]);
            d->msgs_n = rd->msgs_after_persist_n;
        }
        nd->wq_n++;
    }
    for (size_t k = 0; k < rd->committed_n && !w->res->failed; k++)
        apply_entry(w, nd, &rd->committed[k]);
    for (size_t k = 0; k < rd->reads_n; k++)
        keel_reqs_read_state(&nd->reqs, &rd->reads[k]);
}

static int conf_has(const uint64_t *v, uint32_t n, uint64_t id);

/* The leader as this node sees it, and whether it is a member (server/members.c). */
static void note_leader(node_t *nd)
{
    const keel_raft_conf_t *c = keel_raft_conf(nd->r);
    nd->reqs.removed =
        !conf_has(c->voters, c->voters_n, nd->id) && !conf_has(c->learners, c->learners_n, nd->id);
    uint64_t leader = keel_raft_leader(nd->r);
    int changed = leader != nd->last_leader;
    nd->last_leader = leader;
    keel_reqs_leader_known(&nd->reqs, leader, changed);
}

/* One pass of the node (server/node.c's keel__node_process): readies until nothing moves. */
static void node_process(world_t *w, node_t *nd)
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
        if (nd->r == NULL || node_applied(nd) < w->live_index)
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
        for (int a = 0; a < w->n; a++)
            for (int b = a + 1; b < w->n; b++)
                if (w->cut[a][b])
                    link_lost(w, (uint64_t)(a + 1), (uint64_t)(b + 1));
        event(w, "PARTITION sides mask %#" PRIx64, side & ((1u << w->n) - 1));
        break;
    }
    case 1: { /* one-way link cut */
        int j = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
        if (j != i) {
            w->cut[i][j] = 1;
            link_lost(w, (uint64_t)(i + 1), (uint64_t)(j + 1)); /* a connection needs both ways */
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
    /* the KV snapshot of three keys is about 120..210 bytes: 1..5 chunks */
    w->chunk = (uint32_t)keel_rand_range(&w->rnd, 40, 200);
    w->lease_reads = keel_rand_chance(&w->rnd, 0.5);
    for (int i = 0; i < w->n; i++) {
        w->nodes[i].id = (uint64_t)(i + 1);
        w->nodes[i].w = w;
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
    w->ending = 1;
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (nd->r)
            node_stop(nd);
        for (size_t k = 0; k < nd->wq_n; k++)
            dwrite_free(&nd->wq[k]);
        free(nd->wq);
        free_entries(nd->log, nd->log_n);
        free(nd->snap_data);
    }
    for (size_t k = 0; k < w->net_n; k++)
        msg_free(&w->net[k]);
    free(w->net);
    for (size_t k = 0; k < w->fwd_n; k++)
        free(w->fwd[k].bytes);
    free(w->fwd);
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
    fwd_deliver(w);
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (node_live(w, nd)) {
            disk_complete(w, nd);
            keel_raft_tick(nd->r, node_clock(w, nd));
            keel_reqs_tick(&nd->reqs);
        }
    }
    clients_step(w);
    for (int i = 0; i < w->n && !w->res->failed; i++) {
        node_t *nd = &w->nodes[i];
        if (node_live(w, nd)) {
            node_process(w, nd);
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
    printf("  reproduce: build/keel-sim --nodes %d --seed %" PRIu64 "%s%s%s --trace\n", w->nv,
           w->seed, (unsigned)w->o.brk < 4 ? brk[w->o.brk] : "",
           w->o.stale_reads ? " --stale-reads" : "",
           w->o.serve_reads_early ? " --break serve-reads-early" : "");
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
