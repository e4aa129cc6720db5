/* ap_replica.c - the AP keyspace in keel server: the replica side, handoff, anti-entropy. */
#include "server/ap_int.h"

#include "base/bytes.h"
#include "base/log.h"
#include "core/applace.h"
#include "core/apval.h"
#include "proto/apmsg.h"
#include "runtime/apstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the per-peer trees ------------------------------------------------------------------ */

static int member_index(const ap_t *ap, uint64_t id)
{
    for (uint32_t i = 0; i < ap->ids_n; i++)
        if (ap->ids[i] == id)
            return (int)i;
    return -1;
}

/* A key's Merkle item changed here: update the tree of every other home of it, if this
 * node is one. */
static void trees_update(ap_t *ap, const uint8_t *key, size_t len, uint64_t old_item,
                         uint64_t new_item)
{
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = keel__ap_prefs_now(ap, key, len, homes, NULL, NULL);
    uint64_t me = keel__ap_self_id(ap);
    int mine = 0;
    for (int i = 0; i < nh; i++)
        mine |= homes[i] == me;
    if (!mine)
        return;
    uint64_t h = keel_applace_key_hash(key, len);
    for (int i = 0; i < nh; i++) {
        int x = homes[i] == me ? -1 : member_index(ap, homes[i]);
        if (x >= 0 && ap->tree[x].node)
            keel_merkle_update(&ap->tree[x], h, old_item, new_item);
    }
}

void keel__ap_observe(void *arg, const uint8_t *key, size_t len, uint64_t old_item,
                      uint64_t new_item)
{
    ap_t *ap = arg;
    if (ap->trees_ok)
        trees_update(ap, key, len, old_item, new_item);
}

static void tree_add_key(void *arg, const uint8_t *key, size_t len, const keel_apval_t *v)
{
    ap_t *ap = arg;
    trees_update(ap, key, len, 0, keel_apstore_item(key, len, v));
}

void keel__ap_trees_rebuild(ap_t *ap)
{
    ap->trees_ok = 1;
    for (uint32_t i = 0; i < KEEL_APPLACE_NODES_MAX; i++) {
        keel_merkle_free(&ap->tree[i]);
        if (i < ap->ids_n && keel_merkle_init(&ap->tree[i], KEEL_APSTORE_MERKLE_DEPTH) != 0)
            ap->trees_ok = 0;
    }
    if (!ap->trees_ok) {
        keel_log_warn("ap: no memory for the anti-entropy trees");
        return;
    }
    keel_apstore_each(ap->store, tree_add_key, ap);
}

/* ---- hinted handoff --------------------------------------------------------------------- */

/*
 * A hint whose home a committed configuration removed (ids are never reused: an id below the
 * directory's next_id that it does not list is gone for good) can never be delivered. Its
 * key goes instead to every home it has now (hints for them), and then the stale hint is
 * dropped: the copy may be the only one of a write that counted toward W for that home. The
 * hints map is not changed while it is walked, so such hints are gathered in the round
 * (at most AP_HANDOFF_BATCH, as many as the round visits) and retargeted after it.
 */
static int home_gone(const ap_t *ap, uint64_t home)
{
    const keel_memberdir_t *d = keel_node_members(ap->srv->node);
    if (d == NULL || home >= d->next_id)
        return 0; /* a member added later than this node's directory knows */
    for (size_t i = 0; i < d->n; i++)
        if (d->m[i].id == home)
            return 0;
    return 1;
}

typedef struct round {
    ap_t *ap;
    keel_buf_t gone; /* u64 home | u64 version | u32 len | key, per stale hint */
} round_t;

static void handoff_one(void *arg, uint64_t home, const uint8_t *key, size_t len, uint64_t version)
{
    round_t *rd = arg;
    ap_t *ap = rd->ap;
    const keel_apval_t *v = keel_apstore_get(ap->store, key, len);
    if (!v || home == keel__ap_self_id(ap))
        return; /* cannot happen: a hint comes with its state; a hint for itself is moot */
    if (home_gone(ap, home)) {
        uint8_t head[20];
        keel_put_u64(head, home), keel_put_u64(head + 8, version);
        keel_put_u32(head + 16, (uint32_t)len);
        size_t at = rd->gone.len;
        if (keel_buf_append(&rd->gone, head, sizeof(head)) != 0 ||
            keel_buf_append(&rd->gone, key, len) != 0)
            rd->gone.len = at; /* no room: the next round tries again */
        return;
    }
    if (keel__ap_send_state(ap, KEEL_APMSG_HANDOFF, home, version, key, len, v) == 0)
        keel_counter_inc(ap->m_handoffs_sent);
}

static void retarget(ap_t *ap, const keel_buf_t *gone)
{
    uint64_t me = keel__ap_self_id(ap);
    for (size_t at = 0; at + 20 <= gone->len;) {
        uint64_t home = keel_get_u64(gone->data + at), version = keel_get_u64(gone->data + at + 8);
        uint32_t len = keel_get_u32(gone->data + at + 16);
        const uint8_t *key = gone->data + at + 20;
        at += 20 + len;
        uint64_t now[AP_REPLICAS_MAX];
        int nn = keel__ap_prefs_now(ap, key, len, now, NULL, NULL), ok = 1;
        for (int i = 0; i < nn; i++)
            if (now[i] != me && keel_apstore_hint_add(ap->store, now[i], key, len) < 0)
                ok = 0; /* full: keep the stale hint, retried next round */
        if (ok && keel_apstore_hint_done(ap->store, home, key, len, version) == 1)
            keel_counter_inc(ap->m_hints_retargeted);
    }
}

void keel__ap_handoff_round(ap_t *ap)
{
    if (keel_apstore_hints(ap->store) == 0)
        return;
    round_t rd = {ap, {0}};
    keel_buf_init(&rd.gone, 0);
    keel_apstore_hints_each(ap->store, &ap->handoff_pos, AP_HANDOFF_BATCH, handoff_one, &rd);
    retarget(ap, &rd.gone);
    keel_buf_free(&rd.gone);
}

/* ---- anti-entropy per shared range ------------------------------------------------------ */

typedef struct push {
    ap_t *ap;
    uint64_t to;
    const uint8_t *bits; /* AP_TREE_LEAVES bits: the ranges to push */
} push_t;

static void push_key(void *arg, const uint8_t *key, size_t len, const keel_apval_t *v)
{
    push_t *p = arg;
    uint32_t leaf =
        keel_merkle_leaf_of(keel_apstore_tree(p->ap->store), keel_applace_key_hash(key, len));
    if (!(p->bits[leaf / 8] & (1u << (leaf % 8))))
        return;
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = keel__ap_prefs_now(p->ap, key, len, homes, NULL, NULL);
    int mine = 0, theirs = 0;
    for (int i = 0; i < nh; i++)
        mine |= homes[i] == keel__ap_self_id(p->ap), theirs |= homes[i] == p->to;
    if (mine && theirs) { /* only the keys both are homes of: the ranges they share */
        keel__ap_send_write(p->ap, p->to, 0, key, len, v);
        keel_counter_inc(p->ap->m_ae_pushed);
    }
}

static void push_leaves(ap_t *ap, uint64_t to, const uint32_t *leaves, uint32_t n)
{
    uint8_t bits[AP_TREE_LEAVES / 8] = {0};
    for (uint32_t i = 0; i < n; i++)
        if (leaves[i] < AP_TREE_LEAVES)
            bits[leaves[i] / 8] |= (uint8_t)(1u << (leaves[i] % 8));
    push_t p = {ap, to, bits};
    keel_apstore_each(ap->store, push_key, &p);
}

void keel__ap_ae_round(ap_t *ap)
{
    if (keel__ap_ring_refresh(ap) < 2 || !ap->trees_ok || keel__ap_leaving(ap))
        return; /* a leaver is a home of nothing: its keys go by the move (ap_move.c) */
    uint32_t x = ap->ae_turn++ % ap->ids_n;
    if (ap->ids[x] == keel__ap_self_id(ap))
        x = ap->ae_turn++ % ap->ids_n;
    const keel_merkle_t *t = &ap->tree[x];
    keel_buf_t nodes;
    keel_buf_init(&nodes, 0);
    if (keel_buf_reserve(&nodes, AP_TREE_NODES * 8) == 0) {
        for (uint32_t i = 0; i < AP_TREE_NODES; i++)
            keel_put_u64(keel_buf_wptr(&nodes) + 8 * i, t->node[i]);
        keel_buf_commit(&nodes, AP_TREE_NODES * 8);
        keel_apmsg_t m = {.type = KEEL_APMSG_TREE, .value = nodes.data, .value_len = nodes.len};
        if (keel__ap_send_msg(ap, ap->ids[x], &m) == 0)
            keel_counter_inc(ap->m_ae_rounds);
    }
    keel_buf_free(&nodes);
}

static void on_tree(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    int x = member_index(ap, from);
    if (x < 0 || !ap->trees_ok || from == keel__ap_self_id(ap) || m->value_len != AP_TREE_NODES * 8)
        return;
    keel_merkle_t theirs;
    if (keel_merkle_init(&theirs, KEEL_APSTORE_MERKLE_DEPTH) != 0)
        return;
    for (uint32_t i = 0; i < AP_TREE_NODES; i++)
        theirs.node[i] = keel_get_u64(m->value + 8 * i);
    uint32_t *leaves = malloc(AP_TREE_LEAVES * sizeof(*leaves));
    uint32_t n = leaves ? keel_merkle_diff(&ap->tree[x], &theirs, leaves, AP_TREE_LEAVES, NULL) : 0;
    keel_merkle_free(&theirs);
    if (n > 0) {
        keel_counter_add(ap->m_ae_ranges, n);
        push_leaves(ap, from, leaves, n);
        keel_buf_t b;
        keel_buf_init(&b, 0);
        for (uint32_t i = 0; i < n; i++) {
            uint8_t le[4];
            keel_put_u32(le, leaves[i]);
            keel_buf_append(&b, le, 4);
        }
        keel_apmsg_t pull = {.type = KEEL_APMSG_PULL, .value = b.data, .value_len = b.len};
        keel__ap_send_msg(ap, from, &pull);
        keel_buf_free(&b);
    }
    free(leaves);
}

static void on_pull(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    if (member_index(ap, from) < 0 || m->value_len % 4 || m->value_len / 4 > AP_TREE_LEAVES)
        return;
    uint32_t leaves[AP_TREE_LEAVES];
    uint32_t n = (uint32_t)(m->value_len / 4);
    for (uint32_t i = 0; i < n; i++)
        leaves[i] = keel_get_u32(m->value + 4 * i);
    push_leaves(ap, from, leaves, n);
}

/* ---- the replica side ------------------------------------------------------------------ */

/*
 * Group commit of handed-off keys (hints and moves): a HANDOFF is merged without its own
 * fdatasync and its ACK waits here; keel__ap_handoff_acks_flush (every tick, or when
 * AP_HANDOFF_ACKS_MAX wait) syncs once and then sends them all. The sender keeps its hint,
 * hence its durable copy, until the ACK, so a crash before the sync loses nothing: the hint
 * is handed off again. One fdatasync per batch instead of one per key keeps a move from
 * holding the loop (and the writes behind it) for a sync per key.
 */
/* Queues a (to, message) pair in q: u64 to | u32 n | n bytes. 0, or an error (no room: the
 * message is not sent, as if lost). */
static int ack_queue(keel_buf_t *q, uint64_t to, const keel_apmsg_t *a)
{
    size_t at = q->len;
    uint8_t head[12];
    keel_put_u64(head, to);
    int rc = keel_buf_append(q, head, sizeof(head));
    if (rc == 0)
        rc = keel_apmsg_encode(q, a);
    if (rc != 0) {
        q->len = at;
        return rc;
    }
    keel_put_u32(q->data + at + 8, (uint32_t)(q->len - at - sizeof(head)));
    return 0;
}

/* One fdatasync for everything logged, then the queued messages, which waited for it (none if
 * the sync failed: their senders time out or hand off again). */
static void sync_then_send(ap_t *ap, keel_buf_t *q, const char *what)
{
    keel_errmsg_t msg;
    int rc = keel_apstore_sync(ap->store, &msg);
    if (rc != 0)
        keel_log_warn(what, KF_STR("why", msg.text));
    for (size_t at = 0; rc == 0 && at + 12 <= q->len;) {
        uint64_t to = keel_get_u64(q->data + at);
        uint32_t n = keel_get_u32(q->data + at + 8);
        (void)keel_node_send_ap(ap->srv->node, to, q->data + at + 12, n);
        at += 12 + n;
    }
    keel_buf_reset(q);
}

static void handoff_ack_queue(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    keel_apmsg_t a = {
        .type = KEEL_APMSG_HANDOFF_ACK, .req = m->req, .key = m->key, .key_len = m->key_len};
    if (ack_queue(&ap->acks, from, &a) != 0)
        return; /* no room: no ACK, the sender hands it off again */
    if (++ap->acks_n >= AP_HANDOFF_ACKS_MAX)
        keel__ap_handoff_acks_flush(ap);
}

void keel__ap_handoff_acks_flush(ap_t *ap)
{
    if (ap->acks_n == 0)
        return;
    sync_then_send(ap, &ap->acks, "ap: handed-off keys not synced, not acknowledged");
    ap->acks_n = 0;
}

/*
 * Group commit of the replica's own writes (WRITE, HINTED_WRITE, and the pushes of read repair
 * and anti-entropy, which ask for no ACK): each is merged and logged without an fdatasync, and
 * its ACK waits in ap->wacks. At the end of the loop turn (node.h on_pass, before the peers'
 * buffers are flushed) one fdatasync makes every write of the turn durable, and only then are
 * their ACKs queued for sending: an ACK counts toward the coordinator's W, so it never goes
 * before the sync. AP_WRITE_ACKS_MAX waiting ACKs sync at once, mid-turn. The state is in
 * memory at once, so a READ in the same turn may see a write not yet durable here; that write is
 * not acknowledged by this replica until it is, and its coordinator synced its own copy before
 * sending it (ap_coord.c, "group commit of the coordinator's copy").
 */
static void write_ack_queue(ap_t *ap, uint64_t from, uint64_t req)
{
    keel_apmsg_t a = {.type = KEEL_APMSG_ACK, .req = req, .status = 0};
    if (ack_queue(&ap->wacks, from, &a) != 0)
        return; /* no room: no ACK (a lost message: the coordinator stands in or times out) */
    if (++ap->wacks_n >= AP_WRITE_ACKS_MAX)
        keel__ap_write_acks_flush(ap);
}

void keel__ap_write_acks_flush(ap_t *ap)
{
    if (ap->wacks_n == 0 && !ap->turn_dirty)
        return;
    sync_then_send(ap, &ap->wacks, "ap: replica writes not synced, not acknowledged");
    ap->wacks_n = 0;
    ap->turn_dirty = 0;
}

void keel__srv_ap_on_pass(void *data)
{
    server_t *s = data;
    if (s->ap) {
        (void)keel__ap_own_flush(s->ap); /* its sync covers the replica writes' too */
        keel__ap_write_acks_flush(s->ap);
    }
}

/*
 * A client's write that a node not a home of the key handed to this one (ap_cmds.c forward):
 * coordinated here as if a client of this node had sent it, and answered to the sender. Never
 * forwarded again, whatever this node's ring says (rings differ for a moment while the
 * membership changes): at worst this node coordinates a key it is not a home of, as when no
 * home can be reached. A leaver refuses it (what it holds must stop changing, ap_move.c).
 */
static void on_forward(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    char err[KEEL_APMSG_ERROR_BYTES_MAX];
    keel_errmsg_t msg;
    ap_wreq_t w = {.what = m->what,
                   .key = m->key,
                   .key_len = m->key_len,
                   /* an empty argument as a client's: "" (DEL has none) */
                   .arg =
                       m->value || m->what == KEEL_APMSG_FWD_DEL ? m->value : (const uint8_t *)"",
                   .arg_len = m->value_len,
                   .has_ctx = m->ctx_len > 0,
                   .level = m->level};
    int rc = -1;
    (void)keel__ap_ring_refresh(ap);
    if (keel__ap_leaving(ap))
        snprintf(err, sizeof(err),
                 "ERR keel: the node this write was forwarded to is leaving the cluster; retry");
    else if (w.has_ctx && keel_vv_decode_all(m->ctx, m->ctx_len, &w.ctx, &msg) != 0)
        snprintf(err, sizeof(err), "ERR keel: bad context: %s", msg.text);
    else if (m->what == KEEL_APMSG_FWD_DEL && !w.has_ctx)
        snprintf(err, sizeof(err), "ERR keel: KEEL.AP.DEL needs the context of a read (CTX)");
    else
        rc = keel__ap_coord_write(ap, &w, NULL, from, m->req, err, sizeof(err));
    if (rc == 0)
        return;
    keel_apmsg_t r = {.type = KEEL_APMSG_FORWARD_REPLY,
                      .req = m->req,
                      .status = 1,
                      .value = (const uint8_t *)err,
                      .value_len = strlen(err)};
    (void)keel__ap_send_msg(ap, from, &r);
}

void keel__srv_on_peer_ap(void *data, uint64_t from, const uint8_t *p, size_t n)
{
    server_t *s = data;
    ap_t *ap = s->ap;
    keel_apmsg_t m;
    keel_errmsg_t msg;
    if (!ap || keel_apmsg_decode(p, n, &m, &msg) != 0) {
        keel_log_warn("ap: bad message from a peer", KF_INT("from", from));
        return;
    }
    keel_apval_t v;
    switch (m.type) {
    case KEEL_APMSG_WRITE:
    case KEEL_APMSG_HINTED_WRITE:
    case KEEL_APMSG_HANDOFF: {
        (void)keel__ap_ring_refresh(ap);
        if (keel__ap_leaving(ap)) { /* what a leaver holds must stop changing (ap_move.c) */
            keel_apmsg_t a = {.type = KEEL_APMSG_ACK, .req = m.req, .status = 1};
            if (m.req && m.type != KEEL_APMSG_HANDOFF) /* refused: the coordinator stands in */
                keel__ap_send_msg(ap, from, &a);
            return;
        }
        int rc = keel_apval_decode(m.value, m.value_len, &v, &msg);
        if (rc == 0 && (rc = keel__ap_policy_allows(ap, m.key, m.key_len, v.kind, &msg)) != 0)
            keel_counter_inc(ap->m_policy_refused);
        int changed = 0,
            hinted = m.type == KEEL_APMSG_HINTED_WRITE && m.home != keel__ap_self_id(ap);
        /* All lazy: a HANDOFF is synced with its tick's batch, a write with its turn's. */
        if (rc == 0)
            rc = hinted ? keel_apstore_merge_hinted_lazy(ap->store, m.key, m.key_len, &v, m.home,
                                                         &changed, &msg)
                        : keel_apstore_merge_lazy(ap->store, m.key, m.key_len, &v, &changed, &msg);
        if (rc == 0 && m.type != KEEL_APMSG_HANDOFF)
            ap->turn_dirty = 1;
        keel_apval_free(&v);
        if (rc == 0 && hinted)
            keel_counter_inc(ap->m_hints_stored);
        if (rc == 0 && changed && m.type != KEEL_APMSG_HINTED_WRITE &&
            (m.req == 0 || m.type == KEEL_APMSG_HANDOFF)) /* repair, anti-entropy, handoff */
            keel_counter_inc(ap->m_repaired);
        if (rc != 0)
            keel_log_warn("ap: write refused", KF_INT("from", from), KF_STR("why", msg.text));
        if (m.type == KEEL_APMSG_HANDOFF) {
            /* A drop walk's HANDOFF is acknowledged only by a home on this node's own ring:
               the sender drops its copy on it (ap_clean.c, rule 4). Kept either way. */
            if (rc == 0 &&
                (!(m.req & AP_CLEAN_REQ_BIT) || keel__ap_clean_may_ack(ap, m.key, m.key_len)))
                handoff_ack_queue(ap, from, &m);
        } else if (m.req && rc == 0) { /* ACKed after the turn's fdatasync */
            write_ack_queue(ap, from, m.req);
        } else if (m.req) {
            keel_apmsg_t a = {.type = KEEL_APMSG_ACK, .req = m.req, .status = 1};
            keel__ap_send_msg(ap, from, &a);
        }
        return;
    }
    case KEEL_APMSG_HANDOFF_ACK: {
        if (m.req & AP_CLEAN_REQ_BIT) { /* the drop walk's (ap_clean.c), not a hint's */
            keel__ap_clean_acked(ap, from, m.key, m.key_len, m.req);
            return;
        }
        int rc = keel_apstore_hint_done(ap->store, from, m.key, m.key_len, m.req);
        if (rc == 1) {
            keel_counter_inc(ap->m_hints_delivered);
            keel__ap_clean_hint_delivered(ap);
        } else if (rc < 0)
            keel_log_warn("ap: handed-off hint not logged", KF_STR("why", keel_strerror(rc)));
        return;
    }
    case KEEL_APMSG_READ_STANDIN: /* only with a hint for that home: else no answer */
        if (keel_apstore_hint(ap->store, m.home, m.key, m.key_len) == 0)
            return;
        /* fall through */
    case KEEL_APMSG_READ: {
        const keel_apval_t *cur = keel_apstore_get(ap->store, m.key, m.key_len);
        keel_buf_t val;
        keel_buf_init(&val, 0);
        keel_apmsg_t r = {.type = KEEL_APMSG_READ_REPLY, .req = m.req, .status = 0};
        if (cur && keel_apval_encode(cur, &val) == 0)
            r.status = 1, r.value = val.data, r.value_len = val.len;
        keel__ap_send_msg(ap, from, &r);
        keel_buf_free(&val);
        return;
    }
    case KEEL_APMSG_FORWARD:
        on_forward(ap, from, &m);
        return;
    case KEEL_APMSG_FORWARD_REPLY:
        keel__ap_forward_replied(ap, from, &m);
        return;
    case KEEL_APMSG_TREE:
        (void)keel__ap_ring_refresh(ap);
        on_tree(ap, from, &m);
        return;
    case KEEL_APMSG_PULL:
        (void)keel__ap_ring_refresh(ap);
        on_pull(ap, from, &m);
        return;
    case KEEL_APMSG_ACK: {
        ap_op_t *o = keel__ap_op_find(ap, m.req);
        if (!o || o->is_read || m.status != 0 || keel__ap_answered(o, from) ||
            !keel__ap_was_asked(o, from))
            return;
        keel__ap_write_acked(ap, o, from);
        return;
    }
    default: {
        ap_op_t *o = keel__ap_op_find(ap, m.req);
        if (!o || !o->is_read)
            return;
        if (m.status == 1) {
            if (keel_apval_decode(m.value, m.value_len, &v, &msg) != 0) {
                keel_apval_free(&v);
                return;
            }
            keel__ap_read_got(ap, o, from, &v);
            keel_apval_free(&v);
        } else {
            keel__ap_read_got(ap, o, from, NULL);
        }
    }
    }
}
