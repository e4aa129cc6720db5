/* sim.c - the simulated world: network, disks, forwarding links, faults, checks, the run. */
#include "sim_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *sim__xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "keel-sim: out of memory\n");
        abort();
    }
    return q;
}

__attribute__((format(printf, 2, 3))) void sim__event(world_t *w, const char *fmt, ...)
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

__attribute__((format(printf, 2, 3))) void sim__fail(world_t *w, const char *fmt, ...)
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
size_t sim__key_name(char *out, uint64_t key)
{
    return (size_t)snprintf(out, 8, "k%" PRIu64, key);
}

/* --streams: the replies of reads that show the whole stream state but its block layout
 * (which differs, rightly, between a node that applied entries and one that loaded a
 * snapshot): entries, groups, consumers, the PEL with owners, counts and times. */
static uint64_t stream_hash(const keel_kv_t *kv, uint64_t h)
{
    static const char *const reads[][8] = {
        {"XRANGE", "s", "-", "+", NULL},
        {"XRANGE", "dead", "-", "+", NULL},
        {"XINFO", "GROUPS", "s", NULL},
        {"XINFO", "CONSUMERS", "s", "g", NULL},
        {"XPENDING", "s", "g", "-", "+", "1000", NULL},
        /* the strings and keyspace commands' keys (sim_client.c) */
        {"MGET", "x0", "x1", "x2", "x3", NULL},
        {"PEXPIRETIME", "x0", NULL},
        {"PEXPIRETIME", "x1", NULL},
        {"TYPE", "s2", NULL},
        {"XLEN", "s3", NULL},
        {"XRANGE", "s3", "-", "+", "COUNT", "3", NULL},
        /* hashes and sets: their tables are ordered by their contents, so even the replies
           in table order (and a scan's cursor) agree between a node that applied the entries
           and one that loaded a snapshot */
        {"HGETALL", "h0", NULL},
        {"HGETALL", "h1", NULL},
        {"HGETALL", "h2", NULL},
        {"SMEMBERS", "t0", NULL},
        {"SMEMBERS", "t1", NULL},
        {"SMEMBERS", "h2", NULL},
        {"SMEMBERS", "t3", NULL},
        {"SSCAN", "t0", "0", "COUNT", "1", NULL},
        {"OBJECT", "ENCODING", "h1", NULL},
        {"PEXPIRETIME", "t0", NULL},
        /* the lists (sim_client.c) */
        {"LRANGE", "l0", "0", "-1", NULL},
        {"LRANGE", "l1", "0", "-1", NULL},
        /* the sorted sets' (sim_client.c): members, scores, encoding, scan order */
        {"ZRANGE", "z0", "0", "-1", "WITHSCORES", NULL},
        {"ZRANGE", "z1", "0", "-1", "WITHSCORES", NULL},
        {"ZRANGE", "z2", "0", "-1", "WITHSCORES", NULL},
        {"ZSCAN", "z1", "0", "COUNT", "1000", NULL},
        {"OBJECT", "ENCODING", "z1", NULL},
        {"PEXPIRETIME", "z2", NULL},
    };
    keel_buf_t b;
    keel_buf_init(&b, 0);
    for (size_t r = 0; r < sizeof(reads) / sizeof(reads[0]); r++) {
        const uint8_t *argv[8];
        size_t lens[8];
        int argc = 0;
        for (; reads[r][argc]; argc++) {
            argv[argc] = (const uint8_t *)reads[r][argc];
            lens[argc] = strlen(reads[r][argc]);
        }
        keel_buf_reset(&b);
        if (keel_kv_read(kv, argc, argv, lens, &b) != 0)
            abort(); /* the simulator's own bounded reads always fit */
        for (size_t i = 0; i < keel_buf_unread(&b); i++)
            h = (h ^ keel_buf_rptr(&b)[i]) * 1099511628211ULL;
        h = keel_mix64(h);
    }
    keel_buf_free(&b);
    return h;
}

/* The state machine's state as far as the checks care: its revision and every key. */
uint64_t sim__state_hash(const node_t *nd)
{
    const keel_kv_t *kv = &nd->kv.kv;
    uint64_t h = keel_mix64(keel_kv_revision(kv) ^ ((uint64_t)keel_kv_count(kv) << 48));
    for (uint64_t k = 1; k <= KEYS; k++) {
        char name[8];
        keel_kv_value_t v;
        h = keel_mix64(h ^ k);
        if (keel_kv_get(kv, name, sim__key_name(name, k), &v) != 0)
            continue;
        for (size_t i = 0; i < v.len; i++)
            h = (h ^ v.value[i]) * 1099511628211ULL;
        h = keel_mix64(h ^ v.version);
    }
    if (nd->w->o.streams) /* the stream, its group and PEL: every byte of their replies */
        h = stream_hash(kv, h);
    /* large values arriving in pieces (--streams sends KEEL.STAGE entries) */
    h = keel_mix64(h ^ keel_kv_staged_count(kv) ^ (keel_kv_staged_bytes(kv) << 8));
    return h;
}

uint8_t *sim__copy_bytes(const uint8_t *p, size_t n)
{
    uint8_t *q = sim__xrealloc(NULL, n);
    if (n)
        memcpy(q, p, n);
    return q;
}

uint64_t sim__entry_hash(const keel_raft_entry_t *e)
{
    uint64_t h = 1469598103934665603ULL ^ e->term ^ ((uint64_t)e->type << 60);
    for (uint32_t i = 0; i < e->len; i++)
        h = (h ^ e->data[i]) * 1099511628211ULL;
    return h;
}

keel_raft_entry_t *sim__copy_entries(const keel_raft_entry_t *src, size_t n)
{
    if (n == 0)
        return NULL;
    keel_raft_entry_t *v = sim__xrealloc(NULL, n * sizeof(*v));
    for (size_t k = 0; k < n; k++) {
        v[k] = src[k];
        v[k].data = NULL;
        if (src[k].len) {
            v[k].data = sim__xrealloc(NULL, src[k].len);
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
void sim__msg_copy(nmsg_t *q, const keel_raft_msg_t *m)
{
    q->m = *m;
    q->ents = sim__copy_entries(m->entries, m->entries_n);
    q->m.entries = q->ents;
    q->data = NULL;
    if (m->data_len) {
        q->data = sim__xrealloc(NULL, m->data_len);
        memcpy(q->data, m->data, m->data_len);
    }
    q->m.data = q->data;
    q->conf = NULL;
    if (m->conf) {
        q->conf = sim__xrealloc(NULL, sizeof(*q->conf));
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
    sim__msg_copy(q, m);
    q->at_ms = w->now_ms + 1 + (keel_ms_t)keel_rand_below(&w->rnd, (uint64_t)w->delay_ms_max);
}

void sim__net_send(world_t *w, const keel_raft_msg_t *m)
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

int sim__node_live(const world_t *w, const node_t *nd)
{
    return nd->r != NULL && nd->paused_until_ms <= w->now_ms;
}

/* A held AppendEntries with entries models a large message whose bytes are arriving: the
   server tells its core that the leader is alive (server/peers.c, on_inconn_read). */
static void arriving(world_t *w, const nmsg_t *q, node_t *to)
{
    if (!w->alive_hints || q->m.type != KEEL_RAFT_MSG_APPEND || q->m.entries_n == 0 ||
        !sim__node_live(w, to) || w->cut[q->m.from - 1][q->m.to - 1] ||
        keel_raft_leader(to->r) != q->m.from)
        return;
    keel_raft_leader_alive(to->r);
}

static void net_deliver(world_t *w)
{
    size_t keep = 0;
    for (size_t k = 0; k < w->net_n; k++) {
        nmsg_t *q = &w->net[k];
        node_t *to = &w->nodes[q->m.to - 1];
        int hold = q->at_ms > w->now_ms || (to->r != NULL && !sim__node_live(w, to));
        if (hold) {
            arriving(w, q, to);
            w->net[keep++] = *q;
            continue;
        }
        if (to->r != NULL && !w->cut[q->m.from - 1][q->m.to - 1]) {
            trace_msg(w, &q->m);
            int rc = keel_raft_step(to->r, &q->m);
            if (rc != 0)
                sim__fail(w, "step returned %s for %s", keel_err_name(rc),
                          keel_raft_msg_type_name(q->m.type));
        }
        msg_free(q);
    }
    w->net_n = keep;
}

/* ---- disk ------------------------------------------------------------------------ */

void sim__disk_apply(world_t *w, node_t *nd, dwrite_t *d, size_t entries_n)
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
        sim__fail(w, "node %" PRIu64 " was asked to store index %" PRIu64 " after %" PRIu64, nd->id,
                  first, want - 1);
    for (size_t k = 0; k < entries_n; k++) {
        GROW(nd->log, nd->log_n, nd->log_cap);
        nd->log[nd->log_n++] = d->ents[k];
        d->ents[k].data = NULL;
    }
}

void sim__dwrite_free(dwrite_t *d)
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
        sim__disk_apply(w, nd, d, d->n);
        for (size_t k = 0; k < d->msgs_n; k++) {
            sim__net_send(w, &d->msgs[k].m);
        }
        if (d->snap_index)
            keel_raft_persisted(nd->r, d->snap_index, d->snap_term);
        if (d->n)
            keel_raft_persisted(nd->r, d->ents[d->n - 1].index, d->ents[d->n - 1].term);
        sim__dwrite_free(d);
    }
    if (done == 0)
        return;
    memmove(nd->wq, nd->wq + done, (nd->wq_n - done) * sizeof(*nd->wq));
    nd->wq_n -= done;
}

/* ---- forwarding frames: the connections between nodes -------------------------------- */

/* Member b is reachable from a over an open connection (requests.h's peer_up). */
int sim__link_up(const world_t *w, uint64_t a, uint64_t b)
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
        if (m.at_ms > w->now_ms || (same && !sim__node_live(w, to))) {
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

/* ---- checks -------------------------------------------------------------------------- */

static void check_leader(world_t *w, node_t *nd)
{
    keel_raft_role_t role = keel_raft_role(nd->r);
    uint64_t term = keel_raft_term(nd->r);
    if (role == nd->role_seen && term == nd->term_seen)
        return;
    if (role != nd->role_seen)
        sim__event(w, "n%" PRIu64 " %s t%" PRIu64 " (last %" PRIu64 " commit %" PRIu64 ")", nd->id,
                   keel_raft_role_name(role), term, keel_raft_last_index(nd->r),
                   keel_raft_commit(nd->r));
    if (term < nd->term_seen)
        sim__fail(w, "node %" PRIu64 " term went back from %" PRIu64 " to %" PRIu64, nd->id,
                  nd->term_seen, term);
    nd->role_seen = role;
    nd->term_seen = term;
    if (role != KEEL_RAFT_LEADER)
        return;
    w->res->leaders++;
    while (term >= w->lot_cap) {
        size_t cap = w->lot_cap ? w->lot_cap * 2 : 64;
        w->lead_of_term = sim__xrealloc(w->lead_of_term, cap * sizeof(uint64_t));
        memset(w->lead_of_term + w->lot_cap, 0, (cap - w->lot_cap) * sizeof(uint64_t));
        w->lot_cap = cap;
    }
    if (w->lead_of_term[term] != 0 && w->lead_of_term[term] != nd->id)
        sim__fail(w, "election safety: nodes %" PRIu64 " and %" PRIu64 " both lead term %" PRIu64,
                  w->lead_of_term[term], nd->id, term);
    w->lead_of_term[term] = nd->id;
    /* Leader completeness: a new leader holds every entry applied anywhere. */
    for (uint64_t i = keel_raft_first_index(nd->r); i <= w->com_n; i++) {
        const keel_raft_entry_t *e = keel_raft_entry_at(nd->r, i);
        if (e == NULL || e->term != w->com[i - 1].term ||
            sim__entry_hash(e) != w->com[i - 1].hash) {
            sim__fail(w,
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
                if (x->term != y->term || sim__entry_hash(x) != sim__entry_hash(y)) {
                    sim__fail(w, "log matching: nodes %d and %d differ at index %" PRIu64, a + 1,
                              b + 1, i);
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
        if (nd->r == NULL || sim__node_applied(nd) < w->live_index)
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

int sim__conf_has(const uint64_t *v, uint32_t n, uint64_t id)
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
    int voter = sim__conf_has(c.voters, c.voters_n, id),
        learner = sim__conf_has(c.learners, c.learners_n, id);
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
    sim__event(w, "CONF n%" PRIu64 ": %s n%" PRIu64 " -> %u voters %u learners: %s", l->id, what,
               id, c.voters_n, c.learners_n, keel_err_name(rc));
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
        sim__event(w, "PARTITION sides mask %#" PRIx64, side & ((1u << w->n) - 1));
        break;
    }
    case 1: { /* one-way link cut */
        int j = (int)keel_rand_below(&w->rnd, (uint64_t)w->n);
        if (j != i) {
            w->cut[i][j] = 1;
            link_lost(w, (uint64_t)(i + 1), (uint64_t)(j + 1)); /* a connection needs both ways */
            sim__event(w, "CUT %d->%d only", i + 1, j + 1);
        }
        break;
    }
    case 2:
        memset(w->cut, 0, sizeof(w->cut));
        sim__event(w, "HEAL network");
        break;
    case 3:
        if (nd->r)
            sim__node_crash(w, nd, keel_rand_range(&w->rnd, 10, 800));
        break;
    case 4:
        if (nd->r && nd->paused_until_ms <= w->now_ms) {
            nd->paused_until_ms = w->now_ms + keel_rand_range(&w->rnd, 100, 1500);
            sim__event(w, "n%d PAUSE until %" PRId64 "ms", i + 1, nd->paused_until_ms);
        }
        break;
    case 5: {
        node_t *l = leader_node(w);
        if (l && l->paused_until_ms <= w->now_ms && l->id != nd->id) {
            int rc = keel_raft_transfer_leadership(l->r, nd->id);
            sim__event(w, "TRANSFER n%" PRIu64 " -> n%d: %s", l->id, i + 1, keel_err_name(rc));
        }
        break;
    }
    case 6:
        nd->disk_ms_max = keel_rand_chance(&w->rnd, 0.5) ? keel_rand_range(&w->rnd, 20, 150) : 3;
        sim__event(w, "n%d disk latency up to %" PRId64 "ms", i + 1, nd->disk_ms_max);
        break;
    default:
        w->p_loss = keel_rand_double(&w->rnd) * 0.2;
        w->p_dup = keel_rand_double(&w->rnd) * 0.1;
        w->delay_ms_max = keel_rand_range(&w->rnd, 2, 60);
        sim__event(w, "NET loss %.2f dup %.2f delay <= %" PRId64 "ms", w->p_loss, w->p_dup,
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
    sim__event(w, "FAULTS END: network healed, nodes up, disks fast");
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
    /* --streams: the streams make the snapshot some kilobytes; chunks sized as for the KV
       alone would take longer to send than the leader takes to compact again, so the
       transfer would restart forever (a livelock of this workload, not of keel's) */
    if (o->streams)
        w->chunk *= 16;
    w->lease_reads = keel_rand_chance(&w->rnd, 0.5);
    w->alive_hints = (int)((seed >> 1) & 1); /* not drawn: the seeds' other draws stay */
    for (int i = 0; i < w->n; i++) {
        w->nodes[i].id = (uint64_t)(i + 1);
        w->nodes[i].w = w;
        w->nodes[i].disk_ms_max = keel_rand_range(&w->rnd, 0, 10);
        w->nodes[i].clock_ppm = keel_rand_range(&w->rnd, -20000, 20000);
        sim__node_start(w, &w->nodes[i]);
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
            sim__node_stop(nd);
        for (size_t k = 0; k < nd->wq_n; k++)
            sim__dwrite_free(&nd->wq[k]);
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
            sim__node_start(w, nd);
            sim__event(w,
                       "n%d RESTART (snapshot %" PRIu64 ", log %zu entries, term %" PRIu64
                       ", commit %" PRIu64 ")",
                       i + 1, nd->snap_index, nd->log_n, nd->hs.term, nd->hs.commit);
        }
    }
    net_deliver(w);
    fwd_deliver(w);
    for (int i = 0; i < w->n; i++) {
        node_t *nd = &w->nodes[i];
        if (sim__node_live(w, nd)) {
            disk_complete(w, nd);
            keel_raft_tick(nd->r, sim__node_clock(w, nd));
            keel_reqs_tick(&nd->reqs);
        }
    }
    sim__clients_step(w);
    sim__streams_step(w);
    for (int i = 0; i < w->n && !w->res->failed; i++) {
        node_t *nd = &w->nodes[i];
        if (sim__node_live(w, nd)) {
            sim__node_process(w, nd);
            check_leader(w, nd);
        }
    }
    if (w->now_ms % LOGCHECK_EVERY_MS == 0)
        check_log_matching(w);
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
    printf("  reproduce: build/keel-sim --nodes %d --seed %" PRIu64 "%s%s%s%s --trace\n", w->nv,
           w->seed, (unsigned)w->o.brk < 4 ? brk[w->o.brk] : "",
           w->o.stale_reads ? " --stale-reads" : "",
           w->o.serve_reads_early    ? " --break serve-reads-early"
           : w->o.serve_ordered_late ? " --break serve-ordered-late"
                                     : "",
           w->o.streams ? " --streams" : "");
}

int sim_run(uint64_t seed, const sim_opts_t *o, sim_result_t *res)
{
    memset(res, 0, sizeof(*res));
    world_t *w = sim__xrealloc(NULL, sizeof(*w));
    world_init(w, seed, o, res);
    keel_ms_t end_ms = w->fault_end_ms + LIVE_MS;
    for (w->now_ms = 1; w->now_ms < end_ms && !res->failed; w->now_ms++) {
        world_step(w);
        if (w->now_ms > w->fault_end_ms && live_done(w))
            break;
    }
    if (!res->failed && w->now_ms >= end_ms)
        sim__fail(w,
                  "liveness: no write committed and applied everywhere within %d ms of the heal "
                  "(live index %" PRIu64 ")",
                  LIVE_MS, w->live_index);
    if (!res->failed)
        check_log_matching(w);
    if (!res->failed)
        sim__check_history(w);
    res->sim_ms = w->now_ms;
    if (o->history_path && sim__write_history(w, o->history_path) != 0)
        fprintf(stderr, "keel-sim: cannot write %s\n", o->history_path);
    if (res->failed)
        print_failure(w);
    world_free(w);
    free(w);
    return res->failed ? 1 : 0;
}
