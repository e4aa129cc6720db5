/* ap.c - the AP keyspace in keel server: KEEL.AP.* commands, the coordinator and the replica side.
 */
#include "server/server_int.h"

#include "base/bytes.h"
#include "base/log.h"
#include "base/num.h"
#include "core/applace.h"
#include "core/apval.h"
#include "proto/apmsg.h"
#include "proto/resp.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * docs/ap.md has the design; this is the part of it that runs in keel server today:
 *
 * - Placement: the vnode ring (core/applace) of the members of the configuration in
 *   force; a key's homes are its first AP_REPLICAS_MAX (3) distinct members, or all of
 *   them in a smaller cluster.
 * - A write (PUT, DEL, INCR) on any node: the coordinator applies it to its own copy (it
 *   issues the dot, so its actor's history stays contiguous) and stores it durably
 *   (runtime/apstore: WAL + fdatasync), sends the new state to the other homes (WRITE),
 *   and answers once W homes stored it (itself included if it is one) with how many did,
 *   or after AP_TIMEOUT_MS with -NOQUORUM and the count it reached.
 * - A read (GET): READ to the homes, the merge of the first R replies is the answer (its
 *   siblings and one context); once every home answered (or at the timeout) each replier
 *   whose state differs gets the merge (read repair).
 * - The replica side: merge what arrives into the store, fdatasync, then ACK.
 *
 * - Sloppy quorum: a home that cannot be sent to (no live connection) at once, or that has
 *   not acknowledged within AP_FALLBACK_MS, gets a stand-in: the next node of the key's
 *   preference list after the homes (core/applace), sent HINTED_WRITE naming the home.
 *   The fallback stores the state and the hint durably (runtime/apstore, one fdatasync)
 *   before it ACKs, and its ACK counts toward W for that home. Each fallback stands in
 *   for one home, and W counts homes, not answers: a home whose ACK comes after its
 *   stand-in's counts once (both copies are that home's; the stand-in's is handed to it
 *   and then held by no home but it).
 * - Hinted handoff: every AP_HANDOFF_INTERVAL_MS a node sends up to AP_HANDOFF_BATCH of
 *   its hinted keys' current states to their homes (HANDOFF, carrying the hint's
 *   version); the home stores it durably and answers HANDOFF_ACK; only then is the hint
 *   dropped, and only if no newer hinted write renewed it meanwhile.
 * - Anti-entropy per shared range: for every peer p this node keeps a Merkle tree
 *   (core/merkle) of the keys both are homes of (the ring segments they share), updated
 *   on every change of the store. Every AP_AE_INTERVAL_MS it sends the next peer that
 *   tree (TREE); the peer diffs it with its tree for the sender, pushes its keys of the
 *   differing ranges that both are homes of and asks for the sender's (PULL). A replica
 *   that missed writes, or lost its data, catches up without being read.
 *
 * Not here yet (docs/ap.md): moving ranges on a membership change, the conflict policy
 * per key prefix. Messages travel once (node.h keel_node_send_ap): a lost one costs the
 * coordinator its answer (or the handoff a retry), never a wrong one.
 */
#define AP_REPLICAS_MAX 3
#define AP_ASKED_MAX (2 * AP_REPLICAS_MAX) /* the homes and one stand-in for each */
#define AP_FALLBACK_MS 300
#define AP_HANDOFF_INTERVAL_MS 500
#define AP_HANDOFF_BATCH 256
#define AP_OPS_MAX 4096u
#define AP_TIMEOUT_MS 1000
#define AP_TICK_MS 20
#define AP_CTX_HEX_BYTES_MAX (2u * KEEL_VV_ENCODED_BYTES_MAX)
#define AP_AE_INTERVAL_MS 500
#define AP_TREE_NODES (2u << KEEL_APSTORE_MERKLE_DEPTH)
#define AP_TREE_LEAVES (1u << KEEL_APSTORE_MERKLE_DEPTH)

typedef struct ap_op {
    struct ap_op *next;
    uint64_t req;
    int is_read;
    keel_resp_deferred_t *slot; /* NULL once answered */
    int need;
    uint64_t homes[AP_REPLICAS_MAX];
    int homes_n;
    uint64_t fallbacks[AP_REPLICAS_MAX]; /* writes: the preference list after the homes */
    int fallbacks_n, fallbacks_used;
    uint64_t asked[AP_ASKED_MAX]; /* writes: every node that holds (or was sent) it */
    int for_home[AP_ASKED_MAX];   /* writes: the home index asked[j] stores the copy of */
    int asked_n;
    uint32_t covered; /* writes: bit i: home i answered or has a stand-in */
    uint32_t stored;  /* writes: bit i: home i or its stand-in stored it (what W counts) */
    int sloppy_done;  /* writes: the silent homes got their stand-ins */
    keel_ms_t sloppy_ms;
    keel_buf_t val; /* writes: the state sent (core/apval encoding) */
    uint64_t answered[AP_ASKED_MAX];
    uint64_t digest[AP_ASKED_MAX]; /* reads: each replier's state (0: none) */
    int answered_n;
    keel_apval_t acc; /* reads: the merge so far (kind 0: nothing yet) */
    uint8_t *key;
    size_t key_len;
    keel_ms_t deadline_ms;
} ap_op_t;

struct ap {
    server_t *srv;
    keel_apstore_t *store;
    keel_applace_t place;
    uint64_t ids[KEEL_APPLACE_NODES_MAX];
    uint32_t ids_n;
    ap_op_t *ops;
    size_t ops_n;
    uint64_t next_req;
    keel_timer_t timer;
    int timer_inited;
    keel_buf_t msg;
    keel_ms_t ae_next_ms, handoff_next_ms;
    uint32_t ae_turn;
    size_t handoff_pos;
    /* tree[i]: the keys this node and member ids[i] are both homes of (none for itself) */
    keel_merkle_t tree[KEEL_APPLACE_NODES_MAX];
    int trees_ok;
    keel_counter_t *m_repaired, *m_ae_rounds, *m_ae_pushed, *m_noquorum, *m_ae_ranges;
    keel_counter_t *m_hints_stored, *m_hints_delivered, *m_handoffs_sent, *m_reads,
        *m_read_siblings;
    keel_gauge_t *m_hints_pending;
};

/* ---- placement ------------------------------------------------------------------------ */

static uint64_t self_id(const ap_t *ap);
static void trees_rebuild(ap_t *ap);

/* The ring of the members in force; rebuilt (with the per-peer trees) when they change. */
static int ring_refresh(ap_t *ap)
{
    const keel_memberdir_t *d = keel_node_members(ap->srv->node);
    uint64_t ids[KEEL_APPLACE_NODES_MAX];
    uint32_t n = 0;
    for (size_t i = 0; d && i < d->n && n < KEEL_APPLACE_NODES_MAX; i++)
        ids[n++] = d->m[i].id;
    if (n == 0)
        return 0;
    if (n != ap->ids_n || memcmp(ids, ap->ids, n * sizeof(ids[0])) != 0) {
        if (keel_applace_build(&ap->place, ids, n) != 0)
            return 0;
        memcpy(ap->ids, ids, n * sizeof(ids[0]));
        ap->ids_n = n;
        trees_rebuild(ap);
    }
    return (int)n;
}

/* The key's preference list on the current ring (no refresh): homes, then up to
 * AP_REPLICAS_MAX fallbacks. */
static int prefs_now(const ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes,
                     uint64_t *fallbacks, int *fallbacks_n)
{
    if (ap->ids_n == 0)
        return 0;
    uint32_t idx[2 * AP_REPLICAS_MAX];
    uint32_t k = keel_applace_prefs(&ap->place, keel_applace_key_hash(key, len), idx,
                                    fallbacks ? 2 * AP_REPLICAS_MAX : AP_REPLICAS_MAX);
    uint32_t nh = k < AP_REPLICAS_MAX ? k : AP_REPLICAS_MAX;
    for (uint32_t i = 0; i < nh; i++)
        homes[i] = ap->ids[idx[i]];
    if (fallbacks) {
        *fallbacks_n = (int)(k - nh);
        for (uint32_t i = nh; i < k; i++)
            fallbacks[i - nh] = ap->ids[idx[i]];
    }
    return (int)nh;
}

static int homes_of(ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes)
{
    if (ring_refresh(ap) == 0)
        return 0;
    return prefs_now(ap, key, len, homes, NULL, NULL);
}

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
    int nh = prefs_now(ap, key, len, homes, NULL, NULL);
    uint64_t me = self_id(ap);
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

static void observe(void *arg, const uint8_t *key, size_t len, uint64_t old_item, uint64_t new_item)
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

static void trees_rebuild(ap_t *ap)
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

static uint64_t self_id(const ap_t *ap)
{
    return keel_node_config(ap->srv->node)->id;
}

/*
 * The actor this node issues dots as: its member id and its store's incarnation (40 bits
 * of the clock in ms when the store was made), so a node back without its data directory
 * never reissues a dot of its earlier life.
 */
static uint64_t self_actor(const ap_t *ap)
{
    return self_id(ap) << 40 | (keel_apstore_incarnation(ap->store) & ((1ull << 40) - 1));
}

/* ---- messages ------------------------------------------------------------------------- */

/* 0, or KEEL_ENOTFOUND (no live connection to `to`: it is down), KEEL_EFULL. */
static int send_msg(ap_t *ap, uint64_t to, const keel_apmsg_t *m)
{
    keel_buf_reset(&ap->msg);
    int rc = keel_apmsg_encode(&ap->msg, m);
    return rc ? rc : keel_node_send_ap(ap->srv->node, to, ap->msg.data, ap->msg.len);
}

static int send_state(ap_t *ap, uint8_t type, uint64_t to, uint64_t req, const uint8_t *key,
                      size_t key_len, const keel_apval_t *v)
{
    keel_buf_t val;
    keel_buf_init(&val, 0);
    int rc = keel_apval_encode(v, &val);
    if (rc == 0) {
        keel_apmsg_t m = {.type = type,
                          .req = req,
                          .key = key,
                          .key_len = key_len,
                          .value = val.data,
                          .value_len = val.len};
        rc = send_msg(ap, to, &m);
    }
    keel_buf_free(&val);
    return rc;
}

static int send_write(ap_t *ap, uint64_t to, uint64_t req, const uint8_t *key, size_t key_len,
                      const keel_apval_t *v)
{
    return send_state(ap, KEEL_APMSG_WRITE, to, req, key, key_len, v);
}

/* ---- operations in flight ------------------------------------------------------------- */

static ap_op_t *op_new(ap_t *ap, keel_resp_client_t *c, int is_read, int need,
                       const uint64_t *homes, int homes_n, const uint8_t *key, size_t key_len)
{
    if (ap->ops_n >= AP_OPS_MAX)
        return NULL;
    ap_op_t *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->key = malloc(key_len ? key_len : 1);
    o->slot = o->key ? keel_resp_client_defer(c) : NULL; /* last: nothing fails after it */
    if (!o->slot) {
        free(o->key);
        free(o);
        return NULL;
    }
    memcpy(o->key, key, key_len);
    o->key_len = key_len;
    o->req = ++ap->next_req;
    o->is_read = is_read;
    o->need = need;
    memcpy(o->homes, homes, (size_t)homes_n * sizeof(homes[0]));
    o->homes_n = homes_n;
    keel_buf_init(&o->val, 0);
    o->sloppy_ms = keel_clock_now_ms() + AP_FALLBACK_MS;
    o->deadline_ms = keel_clock_now_ms() + AP_TIMEOUT_MS;
    o->next = ap->ops;
    ap->ops = o;
    ap->ops_n++;
    return o;
}

static void op_free(ap_t *ap, ap_op_t *o)
{
    for (ap_op_t **pp = &ap->ops; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    ap->ops_n--;
    if (o->slot) {
        keel_resp_write_error(keel_resp_deferred_out(o->slot), "ERR keel: shutting down");
        keel_resp_deferred_done(o->slot, 0);
    }
    if (o->acc.kind)
        keel_apval_free(&o->acc);
    keel_buf_free(&o->val);
    free(o->key);
    free(o);
}

static ap_op_t *op_find(ap_t *ap, uint64_t req)
{
    for (ap_op_t *o = ap->ops; o; o = o->next)
        if (o->req == req)
            return o;
    return NULL;
}

static int is_home(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->homes_n; i++)
        if (o->homes[i] == id)
            return 1;
    return 0;
}

static int was_asked(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->asked_n; i++)
        if (o->asked[i] == id)
            return 1;
    return 0;
}

static int answered(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->answered_n; i++)
        if (o->answered[i] == id)
            return 1;
    return 0;
}

static void hex_of(const keel_vv_t *vv, keel_buf_t *out)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    keel_buf_reset(out);
    if (keel_vv_encode(vv, &b) == 0)
        for (size_t i = 0; i < b.len; i++)
            keel_buf_printf(out, "%02x", b.data[i]);
    keel_buf_free(&b);
}

static void count_member(void *arg, const uint8_t *m, uint16_t len)
{
    (void)m, (void)len;
    (*(size_t *)arg)++;
}

typedef struct member_out {
    keel_buf_t *out;
    int rc;
} member_out_t;

static void write_member(void *arg, const uint8_t *m, uint16_t len)
{
    member_out_t *mo = arg;
    if (mo->rc == 0)
        mo->rc = keel_resp_write_bulk(mo->out, m ? (const char *)m : "", len);
}

/* The answer to a read: *N replies, context, then the values (siblings, or the count). */
static void answer_read(ap_t *ap, ap_op_t *o)
{
    keel_counter_inc(ap->m_reads);
    if (o->acc.kind == KEEL_APVAL_SIBLINGS)
        keel_counter_add(ap->m_read_siblings, keel_apobj_live(&o->acc.u.obj));
    keel_buf_t *out = keel_resp_deferred_out(o->slot);
    keel_buf_t ctx;
    keel_buf_init(&ctx, 0);
    int rc;
    if (o->acc.kind == KEEL_APVAL_PNCOUNTER) {
        int64_t v = 0;
        (void)keel_pncounter_value(&o->acc.u.pn, &v);
        rc = keel_resp_write_array_header(out, 3);
        rc = rc ?: keel_resp_write_int(out, o->answered_n);
        rc = rc ?: keel_resp_write_bulk(out, "", 0);
        rc = rc ?: keel_resp_write_int(out, v);
    } else if (o->acc.kind == KEEL_APVAL_ORSET) {
        size_t n = 0;
        keel_orset_members(&o->acc.u.set, count_member, &n);
        rc = keel_resp_write_array_header(out, 2 + n);
        rc = rc ?: keel_resp_write_int(out, o->answered_n);
        rc = rc ?: keel_resp_write_bulk(out, "", 0);
        member_out_t mo = {out, rc};
        keel_orset_members(&o->acc.u.set, write_member, &mo);
        rc = mo.rc;
    } else {
        const keel_apobj_t *obj = o->acc.kind == KEEL_APVAL_SIBLINGS ? &o->acc.u.obj : NULL;
        if (obj)
            hex_of(&obj->vv, &ctx);
        rc = keel_resp_write_array_header(out, 2 + (obj ? keel_apobj_live(obj) : 0));
        rc = rc ?: keel_resp_write_int(out, o->answered_n);
        rc = rc ?: keel_resp_write_bulk(out, ctx.data ? (const char *)ctx.data : "", ctx.len);
        for (uint32_t i = 0; obj && i < obj->n && rc == 0; i++)
            if (!obj->s[i].tomb)
                rc = keel_resp_write_bulk(out, obj->s[i].data ? (const char *)obj->s[i].data : "",
                                          obj->s[i].len);
    }
    keel_buf_free(&ctx);
    keel_resp_deferred_done(o->slot, rc);
    o->slot = NULL;
}

/* The homes whose copy is stored, each once: by the home itself or by its stand-in. */
static int homes_stored(const ap_op_t *o)
{
    return __builtin_popcount(o->stored);
}

static void answer_write(ap_op_t *o)
{
    int rc = keel_resp_write_int(keel_resp_deferred_out(o->slot), homes_stored(o));
    keel_resp_deferred_done(o->slot, rc);
    o->slot = NULL;
}

static void read_repair(ap_t *ap, ap_op_t *o)
{
    if (!o->acc.kind)
        return;
    uint64_t want = keel_apval_digest(&o->acc);
    for (int i = 0; i < o->answered_n; i++) {
        if (o->digest[i] == want)
            continue;
        if (o->answered[i] == self_id(ap))
            (void)keel_apstore_merge(ap->store, o->key, o->key_len, &o->acc, NULL, NULL);
        else
            send_write(ap, o->answered[i], 0, o->key, o->key_len, &o->acc);
    }
}

/* One more home answered a read with its state (NULL: it has none). */
static void read_got(ap_t *ap, ap_op_t *o, uint64_t from, const keel_apval_t *v)
{
    if (answered(o, from) || !is_home(o, from))
        return;
    if (v) {
        if (!o->acc.kind)
            (void)keel_apval_copy(&o->acc, v);
        else if (keel_apval_merge(&o->acc, v) != 0)
            keel_log_warn("ap: a replica's state does not merge", KF_INT("from", from));
    }
    o->digest[o->answered_n] = v ? keel_apval_digest(v) : 0;
    o->answered[o->answered_n++] = from;
    if (o->slot && o->answered_n >= o->need)
        answer_read(ap, o);
    if (o->answered_n == o->homes_n) {
        read_repair(ap, o);
        op_free(ap, o);
    }
}

/* ---- sloppy quorum: stand-ins for silent homes ----------------------------------------- */

/* Every node asked has answered, and every home answered or has its stand-in. */
static int write_settled(const ap_op_t *o)
{
    if (o->answered_n < o->asked_n)
        return 0;
    return o->sloppy_done || o->covered == (1u << o->homes_n) - 1;
}

static void write_acked(ap_t *ap, ap_op_t *o, uint64_t from)
{
    o->answered[o->answered_n++] = from;
    for (int i = 0; i < o->homes_n; i++)
        if (o->homes[i] == from)
            o->covered |= 1u << i;
    for (int j = 0; j < o->asked_n; j++)
        if (o->asked[j] == from)
            o->stored |= 1u << o->for_home[j];
    if (o->slot && homes_stored(o) >= o->need)
        answer_write(o);
    if (!o->slot && write_settled(o))
        op_free(ap, o);
}

/*
 * Home i of a write did not answer (or cannot be sent to): the next unused fallback stands
 * in for it with a hint. Returns 1 if the op was freed (settled).
 */
static int stand_in(ap_t *ap, ap_op_t *o, int i)
{
    if (o->covered & (1u << i))
        return 0;
    while (o->fallbacks_used < o->fallbacks_n) {
        uint64_t f = o->fallbacks[o->fallbacks_used++];
        if (was_asked(o, f))
            continue;
        o->covered |= 1u << i;
        o->for_home[o->asked_n] = i;
        o->asked[o->asked_n++] = f;
        if (f == self_id(ap)) { /* this node holds the state already: add the hint */
            keel_apval_t v;
            keel_errmsg_t msg;
            int rc = keel_apval_decode(o->val.data, o->val.len, &v, &msg);
            if (rc == 0)
                rc = keel_apstore_merge_hinted(ap->store, o->key, o->key_len, &v, o->homes[i], NULL,
                                               &msg);
            keel_apval_free(&v);
            if (rc != 0) {
                keel_log_warn("ap: hint not stored", KF_STR("why", msg.text));
                o->asked_n--; /* not counted: try the next */
                o->covered &= ~(1u << i);
                continue;
            }
            keel_counter_inc(ap->m_hints_stored);
            o->answered[o->answered_n++] = f;
            o->stored |= 1u << i;
            if (o->slot && homes_stored(o) >= o->need)
                answer_write(o);
            if (!o->slot && write_settled(o))
                return op_free(ap, o), 1;
            return 0;
        }
        keel_apmsg_t m = {.type = KEEL_APMSG_HINTED_WRITE,
                          .req = o->req,
                          .home = o->homes[i],
                          .key = o->key,
                          .key_len = o->key_len,
                          .value = o->val.data,
                          .value_len = o->val.len};
        if (send_msg(ap, f, &m) == 0)
            return 0;
        o->asked_n--; /* that one is down too: try the next */
        o->covered &= ~(1u << i);
    }
    return 0;
}

/*
 * The first timeout of a write: while it is not acknowledged yet, every home still silent
 * gets a stand-in. Not after the acknowledgement, as in the simulation (tests/unit/
 * test_apsim.c). A simulator variant that also sent stand-ins after the acknowledgement
 * lost an acknowledged write (seed 7683) through the simulator's ring change (a hint
 * handed to a node the join had made a non-home, which kept it); with that fixed and W
 * counting homes (above), the variant passed seeds 1..30000: this is a choice, not a
 * known hazard.
 */
static int go_sloppy(ap_t *ap, ap_op_t *o)
{
    o->sloppy_done = 1;
    for (int i = 0; i < o->homes_n && o->slot; i++)
        if (stand_in(ap, o, i))
            return 1;
    if (!o->slot && write_settled(o))
        return op_free(ap, o), 1;
    return 0;
}

/* ---- hinted handoff --------------------------------------------------------------------- */

static void handoff_one(void *arg, uint64_t home, const uint8_t *key, size_t len, uint64_t version)
{
    ap_t *ap = arg;
    const keel_apval_t *v = keel_apstore_get(ap->store, key, len);
    if (!v || home == self_id(ap))
        return; /* cannot happen: a hint comes with its state; a hint for itself is moot */
    if (send_state(ap, KEEL_APMSG_HANDOFF, home, version, key, len, v) == 0)
        keel_counter_inc(ap->m_handoffs_sent);
}

static void handoff_round(ap_t *ap)
{
    if (keel_apstore_hints(ap->store) == 0)
        return;
    keel_apstore_hints_each(ap->store, &ap->handoff_pos, AP_HANDOFF_BATCH, handoff_one, ap);
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
    int nh = prefs_now(p->ap, key, len, homes, NULL, NULL);
    int mine = 0, theirs = 0;
    for (int i = 0; i < nh; i++)
        mine |= homes[i] == self_id(p->ap), theirs |= homes[i] == p->to;
    if (mine && theirs) { /* only the keys both are homes of: the ranges they share */
        send_write(p->ap, p->to, 0, key, len, v);
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

static void ae_round(ap_t *ap)
{
    if (ring_refresh(ap) < 2 || !ap->trees_ok)
        return;
    uint32_t x = ap->ae_turn++ % ap->ids_n;
    if (ap->ids[x] == self_id(ap))
        x = ap->ae_turn++ % ap->ids_n;
    const keel_merkle_t *t = &ap->tree[x];
    keel_buf_t nodes;
    keel_buf_init(&nodes, 0);
    if (keel_buf_reserve(&nodes, AP_TREE_NODES * 8) == 0) {
        for (uint32_t i = 0; i < AP_TREE_NODES; i++)
            keel_put_u64(keel_buf_wptr(&nodes) + 8 * i, t->node[i]);
        keel_buf_commit(&nodes, AP_TREE_NODES * 8);
        keel_apmsg_t m = {.type = KEEL_APMSG_TREE, .value = nodes.data, .value_len = nodes.len};
        if (send_msg(ap, ap->ids[x], &m) == 0)
            keel_counter_inc(ap->m_ae_rounds);
    }
    keel_buf_free(&nodes);
}

static void on_tree(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    int x = member_index(ap, from);
    if (x < 0 || !ap->trees_ok || from == self_id(ap) || m->value_len != AP_TREE_NODES * 8)
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
        send_msg(ap, from, &pull);
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

static void on_tick(keel_timer_t *t, void *data)
{
    (void)t;
    ap_t *ap = data;
    keel_ms_t now = keel_clock_now_ms();
    if (now >= ap->ae_next_ms) {
        ap->ae_next_ms = now + AP_AE_INTERVAL_MS;
        ae_round(ap);
    }
    if (now >= ap->handoff_next_ms) {
        ap->handoff_next_ms = now + AP_HANDOFF_INTERVAL_MS;
        handoff_round(ap);
    }
    keel_gauge_set(ap->m_hints_pending, (int64_t)keel_apstore_hints(ap->store));
    for (ap_op_t *o = ap->ops, *next; o; o = next) {
        next = o->next;
        if (!o->is_read && !o->sloppy_done && now >= o->sloppy_ms && go_sloppy(ap, o))
            continue;
        if (now < o->deadline_ms)
            continue;
        if (o->slot) {
            keel_counter_inc(ap->m_noquorum);
            keel_resp_write_errorf(
                keel_resp_deferred_out(o->slot), "NOQUORUM %d of %d replicas answered in %d ms",
                o->is_read ? o->answered_n : homes_stored(o), o->need, AP_TIMEOUT_MS);
            keel_resp_deferred_done(o->slot, 0);
            o->slot = NULL;
        }
        if (o->is_read)
            read_repair(ap, o);
        op_free(ap, o);
    }
}

/* ---- the replica side ------------------------------------------------------------------ */

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
        (void)ring_refresh(ap);
        int rc = keel_apval_decode(m.value, m.value_len, &v, &msg);
        int changed = 0, hinted = m.type == KEEL_APMSG_HINTED_WRITE && m.home != self_id(ap);
        if (rc == 0)
            rc = hinted ? keel_apstore_merge_hinted(ap->store, m.key, m.key_len, &v, m.home,
                                                    &changed, &msg)
                        : keel_apstore_merge(ap->store, m.key, m.key_len, &v, &changed, &msg);
        keel_apval_free(&v);
        if (rc == 0 && hinted)
            keel_counter_inc(ap->m_hints_stored);
        if (rc == 0 && changed && m.type != KEEL_APMSG_HINTED_WRITE &&
            (m.req == 0 || m.type == KEEL_APMSG_HANDOFF)) /* repair, anti-entropy, handoff */
            keel_counter_inc(ap->m_repaired);
        if (rc != 0)
            keel_log_warn("ap: write refused", KF_INT("from", from), KF_STR("why", msg.text));
        if (m.type == KEEL_APMSG_HANDOFF) { /* the store fdatasync'd before this ACK */
            if (rc == 0) {
                keel_apmsg_t a = {.type = KEEL_APMSG_HANDOFF_ACK,
                                  .req = m.req,
                                  .key = m.key,
                                  .key_len = m.key_len};
                send_msg(ap, from, &a);
            }
        } else if (m.req) { /* the store fdatasync'd before this ACK */
            keel_apmsg_t a = {.type = KEEL_APMSG_ACK, .req = m.req, .status = rc == 0 ? 0 : 1};
            send_msg(ap, from, &a);
        }
        return;
    }
    case KEEL_APMSG_HANDOFF_ACK: {
        int rc = keel_apstore_hint_done(ap->store, from, m.key, m.key_len, m.req);
        if (rc == 1)
            keel_counter_inc(ap->m_hints_delivered);
        else if (rc < 0)
            keel_log_warn("ap: handed-off hint not logged", KF_STR("why", keel_strerror(rc)));
        return;
    }
    case KEEL_APMSG_READ: {
        const keel_apval_t *cur = keel_apstore_get(ap->store, m.key, m.key_len);
        keel_buf_t val;
        keel_buf_init(&val, 0);
        keel_apmsg_t r = {.type = KEEL_APMSG_READ_REPLY, .req = m.req, .status = 0};
        if (cur && keel_apval_encode(cur, &val) == 0)
            r.status = 1, r.value = val.data, r.value_len = val.len;
        send_msg(ap, from, &r);
        keel_buf_free(&val);
        return;
    }
    case KEEL_APMSG_TREE:
        (void)ring_refresh(ap);
        on_tree(ap, from, &m);
        return;
    case KEEL_APMSG_PULL:
        (void)ring_refresh(ap);
        on_pull(ap, from, &m);
        return;
    case KEEL_APMSG_ACK: {
        ap_op_t *o = op_find(ap, m.req);
        if (!o || o->is_read || m.status != 0 || answered(o, from) || !was_asked(o, from))
            return;
        write_acked(ap, o, from);
        return;
    }
    default: {
        ap_op_t *o = op_find(ap, m.req);
        if (!o || !o->is_read)
            return;
        if (m.status == 1) {
            if (keel_apval_decode(m.value, m.value_len, &v, &msg) != 0) {
                keel_apval_free(&v);
                return;
            }
            read_got(ap, o, from, &v);
            keel_apval_free(&v);
        } else {
            read_got(ap, o, from, NULL);
        }
    }
    }
}

/* ---- commands ------------------------------------------------------------------------- */

/* W or R: a number 1..n, ONE, QUORUM or ALL. */
static int parse_level(const keel_resp_arg_t *a, int n, int *out)
{
    if (keel__srv_arg_is(a, "one"))
        return *out = 1, 0;
    if (keel__srv_arg_is(a, "quorum"))
        return *out = n / 2 + 1, 0;
    if (keel__srv_arg_is(a, "all"))
        return *out = n, 0;
    if (a->len == 1 && a->ptr[0] >= '1' && a->ptr[0] <= '9' && a->ptr[0] - '0' <= n)
        return *out = a->ptr[0] - '0', 0;
    return KEEL_EINVAL;
}

static int parse_ctx(const keel_resp_arg_t *a, keel_vv_t *vv, keel_errmsg_t *msg)
{
    if (a->len > AP_CTX_HEX_BYTES_MAX || a->len % 2)
        return keel_errf(msg, KEEL_EINVAL, "context of %zu hex digits", a->len);
    uint8_t b[KEEL_VV_ENCODED_BYTES_MAX];
    for (size_t i = 0; i < a->len / 2; i++) {
        unsigned v;
        char two[3] = {(char)a->ptr[2 * i], (char)a->ptr[2 * i + 1], 0};
        if (sscanf(two, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", two[0]) ||
            !strchr("0123456789abcdefABCDEF", two[1]))
            return keel_errf(msg, KEEL_EINVAL, "context is not hex");
        b[i] = (uint8_t)v;
    }
    return keel_vv_decode_all(b, a->len / 2, vv, msg);
}

/* Options after the fixed arguments: [CTX hex] [W level | R level]. */
typedef struct opts {
    int has_ctx;
    keel_vv_t ctx;
    int level;
} opts_t;

static int parse_opts(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, size_t from,
                      int n, const char *level_name, opts_t *o)
{
    keel_errmsg_t msg;
    o->has_ctx = 0;
    o->level = n / 2 + 1; /* QUORUM unless told */
    for (size_t i = from; i < argc; i += 2) {
        if (i + 1 == argc)
            return keel__srv_error(c, "ERR syntax error"), -1;
        if (keel__srv_arg_is(&argv[i], "ctx") && level_name[0] == 'w') {
            if (parse_ctx(&argv[i + 1], &o->ctx, &msg) != 0) {
                keel_resp_client_errorf(c, "ERR keel: bad context: %s", msg.text);
                return -1;
            }
            o->has_ctx = 1;
        } else if (keel__srv_arg_is(&argv[i], level_name)) {
            if (parse_level(&argv[i + 1], n, &o->level) != 0) {
                keel_resp_client_errorf(c, "ERR keel: %s must be 1..%d, ONE, QUORUM or ALL",
                                        level_name[0] == 'w' ? "W" : "R", n);
                return -1;
            }
        } else {
            return keel__srv_error(c, "ERR syntax error"), -1;
        }
    }
    return 0;
}

enum { W_PUT, W_DEL, W_INCR, W_SADD, W_SREM };

static int do_write(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int what)
{
    server_t *s = keel__srv_of(c);
    ap_t *ap = s->ap;
    const keel_resp_arg_t *key = &argv[1];
    if (key->len > KEEL_APSTORE_KEY_BYTES_MAX)
        return keel__srv_error(c, "ERR keel: key too long");
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = homes_of(ap, key->ptr, key->len, homes);
    if (nh == 0)
        return keel__srv_error(c, "ERR keel: no members known yet");
    opts_t o;
    if (parse_opts(c, argc, argv, what == W_DEL ? 2 : 3, nh, "w", &o) != 0)
        return 0;
    if (what == W_DEL && !o.has_ctx) /* a delete removes what it saw: without CTX, nothing */
        return keel__srv_error(c, "ERR keel: KEEL.AP.DEL needs the context of a read (CTX)");
    /* This node's copy: the dot is issued here, against what this node has seen. */
    const keel_apval_t *cur = keel_apstore_get(ap->store, key->ptr, key->len);
    uint8_t kind = what == W_INCR                     ? KEEL_APVAL_PNCOUNTER
                   : what == W_SADD || what == W_SREM ? KEEL_APVAL_ORSET
                                                      : KEEL_APVAL_SIBLINGS;
    if (cur && cur->kind != kind)
        return keel__srv_error(c,
                               "WRONGTYPE Operation against a key holding the wrong kind of value");
    keel_apval_t next;
    int rc = cur ? keel_apval_copy(&next, cur) : keel_apval_init(&next, kind);
    if (rc != 0)
        return keel__srv_oom(c);
    uint64_t actor = self_actor(ap), me = self_id(ap);
    if (what == W_SADD || what == W_SREM) {
        /* SREM removes the entries this node has observed: an add it has not seen is
           concurrent with the remove, and wins (the OR-set's rule, core/crdt.h) */
        if (argv[2].len > KEEL_ORSET_ELEM_BYTES_MAX)
            rc = KEEL_ETOOBIG;
        else if (what == W_SADD)
            rc = keel_orset_add(&next.u.set, actor, argv[2].ptr, (uint16_t)argv[2].len);
        else
            (void)keel_orset_remove(&next.u.set, argv[2].ptr, (uint16_t)argv[2].len);
    } else if (what == W_INCR) {
        int64_t d;
        if (keel_parse_i64(argv[2].ptr, argv[2].len, &d) != 0 || d == 0)
            rc = KEEL_EINVAL;
        else
            rc = keel_pncounter_add(&next.u.pn, actor, d);
    } else {
        rc = keel_apobj_put(&next.u.obj, o.has_ctx ? &o.ctx : NULL, actor, what == W_DEL,
                            what == W_PUT ? argv[2].ptr : NULL,
                            what == W_PUT ? (uint32_t)argv[2].len : 0, NULL);
    }
    keel_errmsg_t msg;
    if (rc == 0)
        rc = keel_apstore_merge(ap->store, key->ptr, key->len, &next, NULL, &msg);
    else
        keel_errf(&msg, rc, "%s",
                  rc == KEEL_EFULL     ? "too many siblings or writers: read, then "
                                         "write with the context"
                  : rc == KEEL_EINVAL  ? "increment is not a non-zero integer"
                  : rc == KEEL_ETOOBIG ? "member too long"
                                       : keel_strerror(rc));
    if (rc != 0) {
        keel_apval_free(&next);
        return keel_resp_client_errorf(c, "ERR keel: %s", msg.text);
    }
    keel_buf_t val; /* the state every replica is sent */
    keel_buf_init(&val, 0);
    rc = keel_apval_encode(&next, &val);
    keel_apval_free(&next);
    ap_op_t *op = rc == 0 ? op_new(ap, c, 0, o.level, homes, nh, key->ptr, key->len) : NULL;
    if (!op) {
        keel_buf_free(&val);
        return ap->ops_n >= AP_OPS_MAX
                   ? keel__srv_error(c, "ERR keel: too many AP requests in flight")
                   : keel__srv_oom(c);
    }
    op->fallbacks_n = 0;
    (void)prefs_now(ap, key->ptr, key->len, homes, op->fallbacks, &op->fallbacks_n);
    keel_buf_free(&op->val);
    op->val = val;
    uint32_t down = 0;
    for (int i = 0; i < nh; i++) {
        op->for_home[op->asked_n] = i;
        op->asked[op->asked_n++] = homes[i];
        if (homes[i] == me) {
            op->answered[op->answered_n++] = me; /* stored durably above */
            op->covered |= 1u << i;
            op->stored |= 1u << i;
        } else {
            keel_apmsg_t m = {.type = KEEL_APMSG_WRITE,
                              .req = op->req,
                              .key = key->ptr,
                              .key_len = key->len,
                              .value = op->val.data,
                              .value_len = op->val.len};
            if (send_msg(ap, homes[i], &m) == KEEL_ENOTFOUND)
                down |= 1u << i; /* no live connection: known down, a stand-in now */
        }
    }
    for (int i = 0; i < nh; i++) /* before any acknowledgement, as go_sloppy */
        if ((down & (1u << i)) && stand_in(ap, op, i))
            return 0;
    if (op->slot && homes_stored(op) >= op->need)
        answer_write(op);
    if (!op->slot && write_settled(op))
        op_free(ap, op);
    return 0;
}

int keel__srv_cmd_ap_put(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, W_PUT);
}

int keel__srv_cmd_ap_del(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, W_DEL);
}

int keel__srv_cmd_ap_incr(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, W_INCR);
}

int keel__srv_cmd_ap_sadd(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, W_SADD);
}

int keel__srv_cmd_ap_srem(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, W_SREM);
}

int keel__srv_cmd_ap_get(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    ap_t *ap = s->ap;
    const keel_resp_arg_t *key = &argv[1];
    if (key->len > KEEL_APSTORE_KEY_BYTES_MAX)
        return keel__srv_error(c, "ERR keel: key too long");
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = homes_of(ap, key->ptr, key->len, homes);
    if (nh == 0)
        return keel__srv_error(c, "ERR keel: no members known yet");
    opts_t o;
    if (parse_opts(c, argc, argv, 2, nh, "r", &o) != 0)
        return 0;
    ap_op_t *op = op_new(ap, c, 1, o.level, homes, nh, key->ptr, key->len);
    if (!op)
        return ap->ops_n >= AP_OPS_MAX
                   ? keel__srv_error(c, "ERR keel: too many AP requests in flight")
                   : keel__srv_oom(c);
    uint64_t me = self_id(ap);
    keel_apmsg_t m = {
        .type = KEEL_APMSG_READ, .req = op->req, .key = key->ptr, .key_len = key->len};
    for (int i = 0; i < nh; i++)
        if (homes[i] != me)
            send_msg(ap, homes[i], &m);
    if (is_home(op, me)) /* last: it may answer and free the op */
        read_got(ap, op, me, keel_apstore_get(ap->store, key->ptr, key->len));
    return 0;
}

/* The key's preference list on this node's ring: an array of the homes' names and one of the
 * fallbacks'. */
int keel__srv_cmd_ap_where(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    (void)argc;
    ap_t *ap = keel__srv_of(c)->ap;
    const keel_resp_arg_t *key = &argv[1];
    if (key->len > KEEL_APSTORE_KEY_BYTES_MAX)
        return keel__srv_error(c, "ERR keel: key too long");
    uint64_t homes[AP_REPLICAS_MAX], fb[AP_REPLICAS_MAX];
    int nf = 0;
    if (ring_refresh(ap) == 0)
        return keel__srv_error(c, "ERR keel: no members known yet");
    int nh = prefs_now(ap, key->ptr, key->len, homes, fb, &nf);
    keel_buf_t *out = keel_resp_client_out(c);
    int rc = keel_resp_write_array_header(out, 2);
    rc = rc ?: keel_resp_write_array_header(out, (size_t)nh);
    for (int i = 0; i < nh && rc == 0; i++) {
        const char *name = keel_node_member_name(ap->srv->node, homes[i]);
        rc = keel_resp_write_bulk(out, name, strlen(name));
    }
    rc = rc ?: keel_resp_write_array_header(out, (size_t)nf);
    for (int i = 0; i < nf && rc == 0; i++) {
        const char *name = keel_node_member_name(ap->srv->node, fb[i]);
        rc = keel_resp_write_bulk(out, name, strlen(name));
    }
    return rc;
}

/* ---- start and stop ------------------------------------------------------------------ */

int keel__srv_ap_start(server_t *s, keel_errmsg_t *msg)
{
    ap_t *ap = calloc(1, sizeof(*ap));
    if (!ap)
        return KEEL_ENOMEM;
    ap->srv = s;
    keel_buf_init(&ap->msg, 0);
    ap->m_repaired =
        keel_metrics_counter(s->metrics, "keel_ap_keys_repaired_total",
                             "AP keys a read repair or anti-entropy push changed here.", NULL);
    ap->m_ae_rounds = keel_metrics_counter(s->metrics, "keel_ap_antientropy_rounds_total",
                                           "AP anti-entropy trees sent to a peer.", NULL);
    ap->m_ae_pushed = keel_metrics_counter(s->metrics, "keel_ap_antientropy_keys_pushed_total",
                                           "AP keys sent to a peer whose tree differed.", NULL);
    ap->m_noquorum = keel_metrics_counter(s->metrics, "keel_ap_noquorum_total",
                                          "AP requests answered NOQUORUM.", NULL);
    ap->m_ae_ranges = keel_metrics_counter(
        s->metrics, "keel_ap_antientropy_ranges_differing_total",
        "AP key ranges a peer's tree showed differing from this node's.", NULL);
    ap->m_hints_stored =
        keel_metrics_counter(s->metrics, "keel_ap_hints_stored_total",
                             "AP writes this node stored as a fallback, with a hint.", NULL);
    ap->m_hints_delivered =
        keel_metrics_counter(s->metrics, "keel_ap_hints_delivered_total",
                             "AP hints whose home acknowledged the handed-off state.", NULL);
    ap->m_handoffs_sent = keel_metrics_counter(s->metrics, "keel_ap_handoffs_sent_total",
                                               "AP hinted keys sent to their home.", NULL);
    ap->m_hints_pending = keel_metrics_gauge(s->metrics, "keel_ap_hints_pending",
                                             "AP hints this node holds for another.", NULL);
    ap->m_reads = keel_metrics_counter(s->metrics, "keel_ap_reads_total",
                                       "AP reads answered (R reached).", NULL);
    ap->m_read_siblings =
        keel_metrics_counter(s->metrics, "keel_ap_read_siblings_total",
                             "Live siblings in the answers of AP reads (divide by "
                             "keel_ap_reads_total: siblings per read).",
                             NULL);
    if (!ap->m_repaired || !ap->m_ae_rounds || !ap->m_ae_pushed || !ap->m_noquorum ||
        !ap->m_ae_ranges || !ap->m_hints_stored || !ap->m_hints_delivered || !ap->m_handoffs_sent ||
        !ap->m_hints_pending || !ap->m_reads || !ap->m_read_siblings) {
        free(ap);
        return KEEL_ENOMEM;
    }
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snprintf(dir, sizeof(dir), "%s/ap", s->cfg.node.data_dir);
    int rc = keel_applace_init(&ap->place, KEEL_APPLACE_NODES_MAX, KEEL_APPLACE_VNODES_DEFAULT);
    if (rc == 0)
        rc = keel_apstore_open(&ap->store, dir, msg);
    if (rc == 0)
        keel_apstore_observe(ap->store, observe, ap);
    if (rc == 0 && (rc = keel_timer_init(&s->loop, &ap->timer)) == 0) {
        ap->timer_inited = 1;
        rc = keel_timer_start(&ap->timer, AP_TICK_MS, AP_TICK_MS, on_tick, ap);
    }
    s->ap = ap;
    if (rc == 0)
        keel_log_info("ap keyspace ready", KF_INT("keys", (int64_t)keel_apstore_count(ap->store)),
                      KF_INT("replayed", (int64_t)keel_apstore_replayed(ap->store)));
    return rc;
}

static void timer_closed(keel_timer_t *t)
{
    ap_t *ap = (ap_t *)((char *)t - offsetof(ap_t, timer));
    free(ap);
}

void keel__srv_ap_stop(server_t *s)
{
    ap_t *ap = s->ap;
    if (!ap)
        return;
    s->ap = NULL;
    while (ap->ops)
        op_free(ap, ap->ops);
    keel_apstore_close(ap->store);
    for (uint32_t i = 0; i < KEEL_APPLACE_NODES_MAX; i++)
        keel_merkle_free(&ap->tree[i]);
    keel_applace_free(&ap->place);
    keel_buf_free(&ap->msg);
    if (ap->timer_inited)
        keel_timer_close(&ap->timer, timer_closed);
    else
        free(ap);
}
