/* ap_coord.c - the AP keyspace in keel server: the coordinator's operations in flight. */
#include "server/ap_int.h"

#include "base/log.h"
#include "core/apval.h"
#include "proto/apmsg.h"
#include "proto/resp.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- operations in flight ------------------------------------------------------------- */

ap_op_t *keel__ap_op_new(ap_t *ap, keel_resp_client_t *c, int is_read, int need,
                         const uint64_t *homes, int homes_n, const uint8_t *key, size_t key_len)
{
    if (ap->ops_n >= AP_OPS_MAX)
        return NULL;
    ap_op_t *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->key = malloc(key_len ? key_len : 1);
    /* last: nothing fails after it (no client: coordinated for a node that forwarded it) */
    o->slot = o->key && c ? keel_resp_client_defer(c) : NULL;
    if (!o->key || (c && !o->slot)) {
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

void keel__ap_op_free(ap_t *ap, ap_op_t *o)
{
    for (ap_op_t **pp = &ap->ops; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    ap->ops_n--;
    if (o->held)
        ap->held_n--;
    if (keel__ap_op_open(o))
        keel__ap_op_error(ap, o, "ERR keel: shutting down");
    if (o->acc.kind)
        keel_apval_free(&o->acc);
    keel_buf_free(&o->val);
    free(o->key);
    free(o);
}

ap_op_t *keel__ap_op_find(ap_t *ap, uint64_t req)
{
    for (ap_op_t *o = ap->ops; o; o = o->next)
        if (o->req == req)
            return o;
    return NULL;
}

int keel__ap_is_home(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->homes_n; i++)
        if (o->homes[i] == id)
            return 1;
    return 0;
}

int keel__ap_was_asked(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->asked_n; i++)
        if (o->asked[i] == id)
            return 1;
    return 0;
}

int keel__ap_answered(const ap_op_t *o, uint64_t id)
{
    for (int i = 0; i < o->answered_n; i++)
        if (o->answered[i] == id)
            return 1;
    for (int i = 0; i < o->standins_answered; i++) /* reads' stand-ins (none for writes) */
        if (o->answered_standin[i] == id)
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
    if (o->want_kind && o->acc.kind && o->acc.kind != o->want_kind) {
        rc = keel_resp_write_errorf(out, "WRONGTYPE the key holds %s, not %s",
                                    keel_apval_kind_name(o->acc.kind),
                                    keel_apval_kind_name(o->want_kind));
    } else if (o->acc.kind == KEEL_APVAL_LWW) {
        /* one value, whatever was written concurrently (the policy's documented loss) */
        const keel_lww_t *l = &o->acc.u.lww;
        rc = keel_resp_write_array_header(out, l->ts ? 3 : 2);
        rc = rc ?: keel_resp_write_int(out, keel__ap_read_replies(o));
        rc = rc ?: keel_resp_write_bulk(out, "", 0);
        if (l->ts)
            rc = rc ?: keel_resp_write_bulk(out, l->data ? (const char *)l->data : "", l->len);
    } else if (o->acc.kind == KEEL_APVAL_PNCOUNTER) {
        int64_t v = 0;
        (void)keel_pncounter_value(&o->acc.u.pn, &v);
        rc = keel_resp_write_array_header(out, 3);
        rc = rc ?: keel_resp_write_int(out, keel__ap_read_replies(o));
        rc = rc ?: keel_resp_write_bulk(out, "", 0);
        rc = rc ?: keel_resp_write_int(out, v);
    } else if (o->acc.kind == KEEL_APVAL_ORSET) {
        size_t n = 0;
        keel_orset_members(&o->acc.u.set, count_member, &n);
        rc = keel_resp_write_array_header(out, 2 + n);
        rc = rc ?: keel_resp_write_int(out, keel__ap_read_replies(o));
        rc = rc ?: keel_resp_write_bulk(out, "", 0);
        member_out_t mo = {out, rc};
        keel_orset_members(&o->acc.u.set, write_member, &mo);
        rc = mo.rc;
    } else {
        const keel_apobj_t *obj = o->acc.kind == KEEL_APVAL_SIBLINGS ? &o->acc.u.obj : NULL;
        if (obj)
            hex_of(&obj->vv, &ctx);
        rc = keel_resp_write_array_header(out, 2 + (obj ? keel_apobj_live(obj) : 0));
        rc = rc ?: keel_resp_write_int(out, keel__ap_read_replies(o));
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

/* A FORWARD_REPLY to the node that forwarded o: status 0 with the count, or 1 with an error. */
static void reply_forwarder(ap_t *ap, ap_op_t *o, uint8_t status, const char *text, size_t len)
{
    uint8_t count = (uint8_t)keel__ap_homes_stored(o);
    keel_apmsg_t m = {.type = KEEL_APMSG_FORWARD_REPLY,
                      .req = o->reply_req,
                      .status = status,
                      .value = status ? (const uint8_t *)text : &count,
                      .value_len = status ? len : 1};
    (void)keel__ap_send_msg(ap, o->reply_to, &m); /* lost: the forwarder times out */
    o->reply_to = 0;
}

void keel__ap_answer_write(ap_t *ap, ap_op_t *o)
{
    if (o->reply_to) {
        reply_forwarder(ap, o, 0, NULL, 0);
        return;
    }
    int rc = keel_resp_write_int(keel_resp_deferred_out(o->slot), keel__ap_homes_stored(o));
    keel_resp_deferred_done(o->slot, rc);
    o->slot = NULL;
}

void keel__ap_op_error(ap_t *ap, ap_op_t *o, const char *fmt, ...)
{
    char text[KEEL_APMSG_ERROR_BYTES_MAX];
    va_list va;
    va_start(va, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, va);
    va_end(va);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
    for (size_t i = 0; i < len; i++) /* one line, whatever a message quoted */
        if (text[i] == '\r' || text[i] == '\n')
            text[i] = ' ';
    if (len == 0)
        len = (size_t)snprintf(text, sizeof(text), "ERR keel: error");
    if (o->reply_to) {
        reply_forwarder(ap, o, 1, text, len);
        return;
    }
    if (!o->slot)
        return;
    keel_resp_write_error(keel_resp_deferred_out(o->slot), text);
    keel_resp_deferred_done(o->slot, 0);
    o->slot = NULL;
}

/* The answer to a write this node forwarded, from the home it forwarded it to. */
void keel__ap_forward_replied(ap_t *ap, uint64_t from, const keel_apmsg_t *m)
{
    ap_op_t *o = keel__ap_op_find(ap, m->req);
    if (!o || o->fwd_to != from || !o->slot)
        return;
    keel_buf_t *out = keel_resp_deferred_out(o->slot);
    int rc;
    if (m->status == 0) {
        rc = keel_resp_write_int(out, m->value[0]);
    } else {
        char text[KEEL_APMSG_ERROR_BYTES_MAX + 1];
        memcpy(text, m->value, m->value_len); /* decode: 1..KEEL_APMSG_ERROR_BYTES_MAX bytes */
        text[m->value_len] = 0;
        rc = keel_resp_write_error(out, text);
    }
    keel_resp_deferred_done(o->slot, rc);
    o->slot = NULL;
    keel__ap_op_free(ap, o);
}

void keel__ap_read_repair(ap_t *ap, ap_op_t *o)
{
    if (!o->acc.kind || keel__ap_policy_allows(ap, o->key, o->key_len, o->acc.kind, NULL) != 0)
        return; /* nothing, or a kind this node's policy refuses for the key */
    uint64_t want = keel_apval_digest(&o->acc);
    for (int i = 0; i < o->answered_n; i++) {
        if (o->digest[i] == want)
            continue;
        if (o->answered[i] == keel__ap_self_id(ap))
            (void)keel_apstore_merge(ap->store, o->key, o->key_len, &o->acc, NULL, NULL);
        else
            keel__ap_send_write(ap, o->answered[i], 0, o->key, o->key_len, &o->acc);
    }
}

/* Home i of a read, or -1: from is neither a home nor a stand-in this read asked. */
static int read_home_index(const ap_op_t *o, uint64_t from, int *standin)
{
    for (int i = 0; i < o->homes_n; i++)
        if (o->homes[i] == from)
            return *standin = 0, i;
    for (int j = 0; j < o->asked_n; j++)
        if (o->asked[j] == from)
            return *standin = 1, o->for_home[j];
    return -1;
}

/*
 * One more answer to a read: a home's state (NULL: it has none), or a stand-in's copy of a key
 * it holds a hint for home i of (sloppy read). Each home counts once toward R, by itself or by
 * its stand-in; every state that comes is merged into the answer (a stand-in's may hold a write
 * its home has not got yet). Only homes are read-repaired.
 */
void keel__ap_read_got(ap_t *ap, ap_op_t *o, uint64_t from, const keel_apval_t *v)
{
    int standin = 0, i = read_home_index(o, from, &standin);
    if (i < 0 || keel__ap_answered(o, from))
        return;
    if (v && keel__ap_policy_allows(ap, o->key, o->key_len, v->kind, NULL) != 0) {
        /* a state of a kind this node's table refuses for the key (the tables differ): not
         * merged into the answer, as a replica refuses to store it; the home counts as
         * holding nothing */
        keel_counter_inc(ap->m_policy_refused);
        v = NULL;
    }
    if (v) {
        if (!o->acc.kind)
            (void)keel_apval_copy(&o->acc, v);
        else if (keel_apval_merge(&o->acc, v) != 0)
            keel_log_warn("ap: a replica's state does not merge", KF_INT("from", from));
    }
    o->covered |= 1u << i;
    if (standin) { /* counted, merged; not repaired (not a home) */
        o->answered_standin[o->standins_answered++] = from;
    } else {
        o->digest[o->answered_n] = v ? keel_apval_digest(v) : 0;
        o->answered[o->answered_n++] = from;
    }
    if (o->slot && keel__ap_read_replies(o) >= o->need)
        answer_read(ap, o);
    if (o->answered_n == o->homes_n) {
        keel__ap_read_repair(ap, o);
        keel__ap_op_free(ap, o);
    }
}

/*
 * Sloppy read: home i of a read has not answered (or cannot be sent to): ask the next unused
 * fallback for its copy, which it answers only if it holds a hint for home i on the key (a
 * write meant for home i it stood in for and has not handed on yet). Returns 1 if the op was
 * answered or freed by an answer from this node itself.
 */
int keel__ap_read_stand_in(ap_t *ap, ap_op_t *o, int i)
{
    if (o->covered & (1u << i))
        return 0;
    while (o->fallbacks_used < o->fallbacks_n) {
        uint64_t f = o->fallbacks[o->fallbacks_used++];
        if (keel__ap_was_asked(o, f) || o->asked_n >= AP_ASKED_MAX)
            continue;
        o->for_home[o->asked_n] = i;
        o->asked[o->asked_n++] = f;
        if (f == keel__ap_self_id(ap)) {
            if (keel_apstore_hint(ap->store, o->homes[i], o->key, o->key_len) == 0)
                continue; /* no hint for that home here: try the next */
            keel__ap_read_got(ap, o, f, keel_apstore_get(ap->store, o->key, o->key_len));
            return !keel__ap_op_open(o);
        }
        keel_apmsg_t m = {.type = KEEL_APMSG_READ_STANDIN,
                          .req = o->req,
                          .home = o->homes[i],
                          .key = o->key,
                          .key_len = o->key_len};
        if (keel__ap_send_msg(ap, f, &m) == 0)
            return 0;
        o->asked_n--; /* down too: the next one */
    }
    return 0;
}

/* The first timeout of a read that has not reached R: every silent home gets a stand-in. */
void keel__ap_read_go_sloppy(ap_t *ap, ap_op_t *o)
{
    o->sloppy_done = 1;
    for (int i = 0; i < o->homes_n && o->slot; i++)
        if (!keel__ap_answered(o, o->homes[i]) && keel__ap_read_stand_in(ap, o, i))
            return;
}

/* ---- group commit of the coordinator's copy ------------------------------------------- */

/*
 * A write coordinated here is merged into this node's copy at once (what this node reads or
 * writes next sees it) but logged without an fdatasync, and held: nothing is sent, and this
 * node does not count as a home that stored it, until one fdatasync covers the copies of every
 * write of the loop turn (at its end, node.h on_pass; that sync covers the replica writes of the
 * turn too, ap_replica.c). AP_HELD_WRITES_MAX held writes flush at once.
 *
 * Held, not only unanswered: the state holds a dot this node issued. Had it left before the
 * copy was durable, a crash would let this node, with the same incarnation, issue that dot
 * again for another value, and a replica holding both would keep one (docs/ap.md, "Why dots
 * are safe"). So every state that leaves this node (keel__ap_send_msg with a value) and every
 * read this node coordinates flush the held writes first, and once a flush failed neither goes
 * on (the store's failure is sticky: the node must be restarted).
 */
void keel__ap_write_hold(ap_t *ap, ap_op_t *o)
{
    o->held = 1;
    if (++ap->held_n >= AP_HELD_WRITES_MAX)
        (void)keel__ap_own_flush(ap);
}

/* Sends a write, whose copy here is durable, to its homes (stand-ins for those known down). */
static void write_start(ap_t *ap, ap_op_t *op)
{
    uint64_t me = keel__ap_self_id(ap);
    uint32_t down = 0;
    for (int i = 0; i < op->homes_n; i++) {
        op->for_home[op->asked_n] = i;
        op->asked[op->asked_n++] = op->homes[i];
        if (op->homes[i] == me) {
            op->answered[op->answered_n++] = me; /* stored durably: synced */
            op->covered |= 1u << i;
            op->stored |= 1u << i;
        } else {
            keel_apmsg_t m = {.type = KEEL_APMSG_WRITE,
                              .req = op->req,
                              .key = op->key,
                              .key_len = op->key_len,
                              .value = op->val.data,
                              .value_len = op->val.len};
            if (keel__ap_send_msg(ap, op->homes[i], &m) == KEEL_ENOTFOUND)
                down |= 1u << i; /* no live connection: known down, a stand-in now */
        }
    }
    for (int i = 0; i < op->homes_n; i++) /* before any acknowledgement, as go_sloppy */
        if ((down & (1u << i)) && keel__ap_stand_in(ap, op, i))
            return;
    if (keel__ap_op_open(op) && keel__ap_homes_stored(op) >= op->need)
        keel__ap_answer_write(ap, op);
    if (!keel__ap_op_open(op) && keel__ap_write_settled(op))
        keel__ap_op_free(ap, op);
}

int keel__ap_own_flush(ap_t *ap)
{
    if (ap->own_failed)
        return KEEL_EIO;
    if (ap->held_n == 0)
        return 0;
    keel_errmsg_t msg;
    int rc = keel_apstore_sync(ap->store, &msg);
    ap->held_n = 0; /* before the sends: keel__ap_send_msg flushes while any write is held */
    if (rc != 0) {
        ap->own_failed = 1;
        keel_log_error("ap: this node's copies of its writes not synced: no AP state leaves "
                       "it and it answers no AP read until it is restarted",
                       KF_STR("why", msg.text));
    }
    /* write_start frees at most the op it starts (settled at once): the next one stays */
    for (ap_op_t *o = ap->ops, *next; o; o = next) {
        next = o->next;
        if (!o->held)
            continue;
        o->held = 0;
        if (rc == 0) {
            write_start(ap, o);
            continue;
        }
        keel__ap_op_error(ap, o, "ERR keel: not stored: %s", msg.text);
        keel__ap_op_free(ap, o);
    }
    return rc;
}

/* ---- sloppy quorum: stand-ins for silent homes ----------------------------------------- */

/* Every node asked has answered, and every home answered or has its stand-in. */
int keel__ap_write_settled(const ap_op_t *o)
{
    if (o->answered_n < o->asked_n)
        return 0;
    return o->sloppy_done || o->covered == (1u << o->homes_n) - 1;
}

void keel__ap_write_acked(ap_t *ap, ap_op_t *o, uint64_t from)
{
    o->answered[o->answered_n++] = from;
    for (int i = 0; i < o->homes_n; i++)
        if (o->homes[i] == from)
            o->covered |= 1u << i;
    for (int j = 0; j < o->asked_n; j++)
        if (o->asked[j] == from)
            o->stored |= 1u << o->for_home[j];
    if (keel__ap_op_open(o) && keel__ap_homes_stored(o) >= o->need)
        keel__ap_answer_write(ap, o);
    if (!keel__ap_op_open(o) && keel__ap_write_settled(o))
        keel__ap_op_free(ap, o);
}

/*
 * Home i of a write did not answer (or cannot be sent to): the next unused fallback stands
 * in for it with a hint. Returns 1 if the op was freed (settled).
 */
int keel__ap_stand_in(ap_t *ap, ap_op_t *o, int i)
{
    if (o->covered & (1u << i))
        return 0;
    while (o->fallbacks_used < o->fallbacks_n) {
        uint64_t f = o->fallbacks[o->fallbacks_used++];
        if (keel__ap_was_asked(o, f))
            continue;
        o->covered |= 1u << i;
        o->for_home[o->asked_n] = i;
        o->asked[o->asked_n++] = f;
        if (f == keel__ap_self_id(ap)) { /* this node holds the state already: add the hint */
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
            if (keel__ap_op_open(o) && keel__ap_homes_stored(o) >= o->need)
                keel__ap_answer_write(ap, o);
            if (!keel__ap_op_open(o) && keel__ap_write_settled(o))
                return keel__ap_op_free(ap, o), 1;
            return 0;
        }
        keel_apmsg_t m = {.type = KEEL_APMSG_HINTED_WRITE,
                          .req = o->req,
                          .home = o->homes[i],
                          .key = o->key,
                          .key_len = o->key_len,
                          .value = o->val.data,
                          .value_len = o->val.len};
        if (keel__ap_send_msg(ap, f, &m) == 0)
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
int keel__ap_go_sloppy(ap_t *ap, ap_op_t *o)
{
    o->sloppy_done = 1;
    for (int i = 0; i < o->homes_n && keel__ap_op_open(o); i++)
        if (keel__ap_stand_in(ap, o, i))
            return 1;
    if (!keel__ap_op_open(o) && keel__ap_write_settled(o))
        return keel__ap_op_free(ap, o), 1;
    return 0;
}
