/* ap_cmds.c - the AP keyspace in keel server: the KEEL.AP.* commands. */
#include "server/ap_int.h"

#include "base/log.h"
#include "base/num.h"
#include "core/apval.h"
#include "proto/apmsg.h"
#include "proto/resp.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- commands ------------------------------------------------------------------------- */

static int homes_of(ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes)
{
    if (keel__ap_ring_refresh(ap) == 0)
        return 0;
    return keel__ap_prefs_now(ap, key, len, homes, NULL, NULL);
}

/*
 * The actor this node issues dots as: its member id and its store's incarnation (40 bits
 * of the clock in ms when the store was made), so a node back without its data directory
 * never reissues a dot of its earlier life.
 */
uint64_t keel__ap_self_actor(const ap_t *ap)
{
    return keel__ap_self_id(ap) << 40 | (keel_apstore_incarnation(ap->store) & ((1ull << 40) - 1));
}

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

/* The key's homes (1..AP_REPLICAS_MAX), or 0 once c has its error: a key too long, or no
 * members known yet. */
static int key_homes(keel_resp_client_t *c, const keel_resp_arg_t *key, uint64_t *homes)
{
    if (key->len > KEEL_APSTORE_KEY_BYTES_MAX)
        return keel__srv_error(c, "ERR keel: key too long"), 0;
    int nh = homes_of(keel__srv_of(c)->ap, key->ptr, key->len, homes);
    if (nh == 0)
        keel__srv_error(c, "ERR keel: no members known yet");
    return nh;
}

/* ---- the conflict policy per key prefix (core/appolicy) -------------------------------- */

int keel__ap_policy_allows(const ap_t *ap, const uint8_t *key, size_t len, uint8_t kind,
                           keel_errmsg_t *msg)
{
    int rule;
    uint8_t want = keel_appolicy_kind(&ap->policy, key, len, &rule);
    if (rule < 0 || want == kind)
        return 0;
    const keel_appolicy_rule_t *r = &ap->policy.rule[rule];
    return keel_errf(msg, KEEL_EREJECTED,
                     "the state is a %s, but --ap-policy prefix '%.*s' gives the key the policy %s",
                     keel_apval_kind_name(kind), (int)r->len, (const char *)r->prefix,
                     keel_appolicy_name(want));
}

static const char *const commands_of[] = {
    [KEEL_APVAL_SIBLINGS] = "KEEL.AP.PUT, DEL, GET",
    [KEEL_APVAL_LWW] = "KEEL.AP.PUT, GET",
    [KEEL_APVAL_PNCOUNTER] = "KEEL.AP.INCR, GET",
    [KEEL_APVAL_ORSET] = "KEEL.AP.SADD, SREM, SMEMBERS, GET",
};

/*
 * The kind a command of this name makes or reads under key: the key's policy when a prefix
 * of the table matches it, else the command's own kind (siblings for PUT and DEL, as before
 * the table). 0 with the error line in err: the policy's kind does not take this command.
 */
static uint8_t kind_for(const ap_t *ap, const uint8_t *key, size_t len, const char *cmd,
                        uint8_t own, char *err, size_t errsz)
{
    int rule;
    uint8_t kind = keel_appolicy_kind(&ap->policy, key, len, &rule);
    if (rule < 0)
        return own;
    if (kind == own ||
        (own == KEEL_APVAL_SIBLINGS && kind == KEEL_APVAL_LWW && strcmp(cmd, "KEEL.AP.PUT") == 0))
        return kind;
    const keel_appolicy_rule_t *r = &ap->policy.rule[rule];
    snprintf(err, errsz,
             "WRONGTYPE --ap-policy prefix '%.*s' gives this key the policy %s: %s is refused "
             "(%s takes %s)",
             (int)r->len, (const char *)r->prefix, keel_appolicy_name(kind), cmd,
             keel_appolicy_name(kind), commands_of[kind]);
    return 0;
}

static const char *const write_names[] = {
    [KEEL_APMSG_FWD_PUT] = "KEEL.AP.PUT",   [KEEL_APMSG_FWD_DEL] = "KEEL.AP.DEL",
    [KEEL_APMSG_FWD_INCR] = "KEEL.AP.INCR", [KEEL_APMSG_FWD_SADD] = "KEEL.AP.SADD",
    [KEEL_APMSG_FWD_SREM] = "KEEL.AP.SREM",
};

static uint8_t write_kind(const ap_t *ap, const ap_wreq_t *w, char *err, size_t errsz)
{
    return kind_for(ap, w->key, w->key_len, write_names[w->what],
                    w->what == KEEL_APMSG_FWD_INCR   ? KEEL_APVAL_PNCOUNTER
                    : w->what == KEEL_APMSG_FWD_SADD ? KEEL_APVAL_ORSET
                    : w->what == KEEL_APMSG_FWD_SREM ? KEEL_APVAL_ORSET
                                                     : KEEL_APVAL_SIBLINGS,
                    err, errsz);
}

/*
 * This node dropped its copy of the key while the copy held its own dots (ap_clean.c, rule 2):
 * with the state gone, its next dot for the key would be one the homes have seen. So before it
 * issues one it takes a new actor (a new store incarnation, logged and synced, which retires the
 * old actor's dots for every key and empties the set of dropped keys): the held writes of the
 * old actor are synced first. Rare: a node writes a key it dropped only once a membership change
 * made it a home again, or when no home can be reached.
 */
static int renew_actor(ap_t *ap, char *err, size_t errsz)
{
    uint64_t old = keel_apstore_incarnation(ap->store);
    size_t dropped = keel_apstore_dropped_count(ap->store);
    keel_errmsg_t msg;
    int rc = keel__ap_own_flush(ap);
    if (rc == 0)
        rc = keel_apstore_renew_incarnation(ap->store, &msg);
    else
        keel_errf(&msg, rc, "this node's writes not synced");
    if (rc != 0) {
        keel_log_warn("ap: no new actor; the write of a dropped key is refused",
                      KF_STR("why", msg.text));
        snprintf(err, errsz, "ERR keel: not stored: %s", msg.text);
        return rc;
    }
    keel_counter_inc(ap->m_actor_renewals);
    keel_log_info("ap: a new actor for this node's writes: it writes a key it dropped holding its "
                  "old one's dots",
                  KF_INT("old_incarnation", (int64_t)old),
                  KF_INT("incarnation", (int64_t)keel_apstore_incarnation(ap->store)),
                  KF_INT("dropped_keys", (int64_t)dropped));
    return 0;
}

/*
 * Coordinates a write on this node: its copy here takes the new dot (issued against what
 * this node has seen, so its actor's history stays contiguous), then the op sends it to the
 * homes once the copy is durable (ap_coord.c). The answer goes to c's deferred reply, or in a
 * FORWARD_REPLY to reply_to (a node that forwarded the write here). 0: the op will answer;
 * else the error line is in err and nothing was answered or stored.
 */
int keel__ap_coord_write(ap_t *ap, const ap_wreq_t *w, keel_resp_client_t *c, uint64_t reply_to,
                         uint64_t reply_req, char *err, size_t errsz)
{
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = homes_of(ap, w->key, w->key_len, homes);
    if (nh <= 0)
        return snprintf(err, errsz, "ERR keel: no members known yet"), -1;
    uint8_t kind = write_kind(ap, w, err, errsz);
    if (kind == 0)
        return -1;
    const keel_apval_t *cur = keel_apstore_get(ap->store, w->key, w->key_len);
    if (cur && cur->kind != kind)
        return snprintf(err, errsz,
                        "WRONGTYPE Operation against a key holding the wrong kind of value"),
               -1;
    if (ap->ops_n >= AP_OPS_MAX)
        return snprintf(err, errsz, "ERR keel: too many AP requests in flight"), -1;
    if (keel_apstore_dropped_own(ap->store, w->key, w->key_len) && renew_actor(ap, err, errsz) != 0)
        return -1;
    keel_apval_t next;
    int rc = cur ? keel_apval_copy(&next, cur) : keel_apval_init(&next, kind);
    if (rc != 0)
        return snprintf(err, errsz, "%s", KEEL_SRV_ERR_OOM), -1;
    uint64_t actor = keel__ap_self_actor(ap);
    if (w->what == KEEL_APMSG_FWD_SADD || w->what == KEEL_APMSG_FWD_SREM) {
        /* SREM removes the entries this node has observed: an add it has not seen is
           concurrent with the remove, and wins (the OR-set's rule, core/crdt.h) */
        if (w->arg_len > KEEL_ORSET_ELEM_BYTES_MAX)
            rc = KEEL_ETOOBIG;
        else if (w->what == KEEL_APMSG_FWD_SADD)
            rc = keel_orset_add(&next.u.set, actor, w->arg, (uint16_t)w->arg_len);
        else
            (void)keel_orset_remove(&next.u.set, w->arg, (uint16_t)w->arg_len);
    } else if (w->what == KEEL_APMSG_FWD_INCR) {
        int64_t d;
        if (keel_parse_i64(w->arg, w->arg_len, &d) != 0 || d == 0)
            rc = KEEL_EINVAL;
        else
            rc = keel_pncounter_add(&next.u.pn, actor, d);
    } else if (kind == KEEL_APVAL_LWW) {
        /* Last writer wins (chosen by --ap-policy, lossy: docs/ap.md). The timestamp is this
           node's wall clock in ms, and above the one it holds, so a write always replaces
           what its coordinator has seen; between concurrent writes the later clock wins,
           ties broken by actor, then bytes, the same on every replica. A context is not
           needed, and one given is not used. */
        uint64_t ts = (uint64_t)keel_clock_unix_ms();
        if (ts <= next.u.lww.ts)
            ts = next.u.lww.ts + 1;
        rc = keel_lww_set(&next.u.lww, ts, actor, w->arg, (uint32_t)w->arg_len);
        rc = rc == 1 ? 0 : rc < 0 ? rc : KEEL_ECONFLICT;
    } else {
        int put = w->what == KEEL_APMSG_FWD_PUT;
        rc = keel_apobj_put(&next.u.obj, w->has_ctx ? &w->ctx : NULL, actor, !put,
                            put ? w->arg : NULL, put ? (uint32_t)w->arg_len : 0, NULL);
    }
    keel_errmsg_t msg;
    if (rc == 0) /* synced with the turn's other writes before anything is sent (ap_coord.c) */
        rc = keel_apstore_merge_lazy(ap->store, w->key, w->key_len, &next, NULL, &msg);
    else
        keel_errf(&msg, rc, "%s",
                  rc == KEEL_EFULL    ? "too many siblings or writers: read, then "
                                        "write with the context"
                  : rc == KEEL_EINVAL ? "increment is not a non-zero integer"
                  : rc == KEEL_ETOOBIG && kind == KEEL_APVAL_LWW ? "value too long"
                  : rc == KEEL_ETOOBIG                           ? "member too long"
                                                                 : keel_strerror(rc));
    if (rc != 0) {
        keel_apval_free(&next);
        return snprintf(err, errsz, "ERR keel: %s", msg.text), -1;
    }
    keel_buf_t val; /* the state every replica is sent */
    keel_buf_init(&val, 0);
    rc = keel_apval_encode(&next, &val);
    keel_apval_free(&next);
    ap_op_t *op =
        rc == 0 ? keel__ap_op_new(ap, c, 0, w->level, homes, nh, w->key, w->key_len) : NULL;
    if (!op) { /* the copy holds a dot issued here: durable before anything sends it */
        keel_buf_free(&val);
        if (keel_apstore_sync(ap->store, NULL) != 0)
            ap->own_failed = 1; /* as a failed flush (ap_coord.c) */
        return snprintf(err, errsz, "%s", KEEL_SRV_ERR_OOM), -1;
    }
    op->reply_to = reply_to;
    op->reply_req = reply_req;
    op->fallbacks_n = 0;
    (void)keel__ap_prefs_now(ap, w->key, w->key_len, homes, op->fallbacks, &op->fallbacks_n);
    keel_buf_free(&op->val);
    op->val = val;
    keel__ap_write_hold(ap, op); /* sent once its copy here is durable (ap_coord.c) */
    return 0;
}

/*
 * A write whose key this node is not a home of goes to the first home it has a live
 * connection to, which coordinates it (Dynamo, section 4.5: the coordinator is one of the
 * key's top N): only homes issue dots, so a node keeps no copy of a key it is not a home of
 * for having taken a client's write, and its drop walk can let go of what it holds for
 * others (ap_clean.c). The answer comes back in a FORWARD_REPLY. 1: sent, the op waits;
 * 0: no home could be sent to (this node coordinates the write itself); -1: c has its error.
 */
static int forward(ap_t *ap, keel_resp_client_t *c, const ap_wreq_t *w, const uint64_t *homes,
                   int nh)
{
    if (ap->ops_n >= AP_OPS_MAX)
        return keel__srv_error(c, "ERR keel: too many AP requests in flight"), -1;
    keel_buf_t ctx;
    keel_buf_init(&ctx, 0);
    if (w->has_ctx && keel_vv_encode(&w->ctx, &ctx) != 0) {
        keel_buf_free(&ctx);
        return keel__srv_oom(c), -1;
    }
    /* The op's req, taken now: if the op cannot be made after the send, the home's answer
       must not match the next op (keel__ap_op_new takes one of its own, replaced below). */
    uint64_t req = ++ap->next_req;
    keel_apmsg_t m = {.type = KEEL_APMSG_FORWARD,
                      .req = req,
                      .key = w->key,
                      .key_len = w->key_len,
                      .what = (uint8_t)w->what,
                      .level = (uint8_t)w->level,
                      .ctx = ctx.data,
                      .ctx_len = ctx.len,
                      .value = w->arg,
                      .value_len = w->arg_len};
    int sent = -1;
    for (int i = 0; i < nh && sent < 0; i++)
        if (keel__ap_send_msg(ap, homes[i], &m) == 0)
            sent = i;
    keel_buf_free(&ctx);
    if (sent < 0)
        return 0;
    ap_op_t *op = keel__ap_op_new(ap, c, 0, w->level, homes, nh, w->key, w->key_len);
    if (!op) /* the home coordinates it all the same; its answer will find no op */
        return keel__srv_error(c, "ERR out of memory; the write was forwarded to a home and "
                                  "may be stored"),
               -1;
    op->req = req;
    op->fwd_to = homes[sent];
    op->sloppy_done = 1; /* the home stands in for silent homes, not this node */
    op->deadline_ms = keel_clock_now_ms() + AP_FORWARD_TIMEOUT_MS;
    keel_counter_inc(ap->m_forwarded);
    return 1;
}

static int do_write(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int what)
{
    ap_t *ap = keel__srv_of(c)->ap;
    const keel_resp_arg_t *key = &argv[1];
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = key_homes(c, key, homes);
    if (nh <= 0)
        return 0; /* answered */
    ap_wreq_t w = {.what = what,
                   .key = key->ptr,
                   .key_len = key->len,
                   .arg = what == KEEL_APMSG_FWD_DEL ? NULL : argv[2].ptr,
                   .arg_len = what == KEEL_APMSG_FWD_DEL ? 0 : argv[2].len};
    char err[KEEL_APMSG_ERROR_BYTES_MAX];
    if (write_kind(ap, &w, err, sizeof(err)) == 0)
        return keel__srv_error(c, err);
    opts_t o;
    if (parse_opts(c, argc, argv, what == KEEL_APMSG_FWD_DEL ? 2 : 3, nh, "w", &o) != 0)
        return 0;
    if (what == KEEL_APMSG_FWD_DEL && !o.has_ctx) /* a delete removes what it saw */
        return keel__srv_error(c, "ERR keel: KEEL.AP.DEL needs the context of a read (CTX)");
    w.has_ctx = o.has_ctx;
    w.ctx = o.ctx;
    w.level = o.level;
    uint64_t me = keel__ap_self_id(ap);
    int home = 0;
    for (int i = 0; i < nh; i++)
        home |= homes[i] == me;
    if (!home) {
        int rc = forward(ap, c, &w, homes, nh);
        if (rc != 0)
            return 0; /* forwarded, or answered */
        /* No home can be sent to: coordinate here, with stand-ins (the minority side of a
           partition stays writable). The copy here then holds this node's dots: dropped once
           every home holds it, its key's hash kept (ap_clean.c, rule 2). */
        keel_counter_inc(ap->m_coord_off_home);
    }
    if (keel__ap_coord_write(ap, &w, c, 0, 0, err, sizeof(err)) != 0)
        return keel__srv_error(c, err);
    return 0;
}

int keel__srv_cmd_ap_put(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, KEEL_APMSG_FWD_PUT);
}

int keel__srv_cmd_ap_del(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, KEEL_APMSG_FWD_DEL);
}

int keel__srv_cmd_ap_incr(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, KEEL_APMSG_FWD_INCR);
}

int keel__srv_cmd_ap_sadd(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, KEEL_APMSG_FWD_SADD);
}

int keel__srv_cmd_ap_srem(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_write(c, argc, argv, KEEL_APMSG_FWD_SREM);
}

/* A read at R; want_kind: the kind the command reads (0: any, as GET). */
static int do_read(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                   uint8_t want_kind)
{
    ap_t *ap = keel__srv_of(c)->ap;
    const keel_resp_arg_t *key = &argv[1];
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = key_homes(c, key, homes);
    if (nh <= 0)
        return 0; /* answered */
    char err[KEEL_APMSG_ERROR_BYTES_MAX];
    if (want_kind &&
        kind_for(ap, key->ptr, key->len, "KEEL.AP.SMEMBERS", want_kind, err, sizeof(err)) == 0)
        return keel__srv_error(c, err);
    opts_t o;
    if (parse_opts(c, argc, argv, 2, nh, "r", &o) != 0)
        return 0;
    if (keel__ap_own_flush(ap) != 0) /* what this node answers from its copy is durable */
        return keel__srv_error(c, "ERR keel: this node's AP store failed; restart it");
    ap_op_t *op = keel__ap_op_new(ap, c, 1, o.level, homes, nh, key->ptr, key->len);
    if (!op)
        return ap->ops_n >= AP_OPS_MAX
                   ? keel__srv_error(c, "ERR keel: too many AP requests in flight")
                   : keel__srv_oom(c);
    op->want_kind = want_kind;
    uint64_t me = keel__ap_self_id(ap);
    (void)keel__ap_prefs_now(ap, key->ptr, key->len, homes, op->fallbacks, &op->fallbacks_n);
    keel_apmsg_t m = {
        .type = KEEL_APMSG_READ, .req = op->req, .key = key->ptr, .key_len = key->len};
    uint32_t down = 0;
    for (int i = 0; i < nh; i++)
        if (homes[i] != me && keel__ap_send_msg(ap, homes[i], &m) == KEEL_ENOTFOUND)
            down |= 1u << i;     /* known down: a stand-in at once (sloppy read) */
    for (int i = 0; i < nh; i++) /* a stand-in's answer never frees the op: homes' do */
        if (down & (1u << i))
            (void)keel__ap_read_stand_in(ap, op, i);
    if (keel__ap_is_home(op, me)) /* last: it may answer and free the op */
        keel__ap_read_got(ap, op, me, keel_apstore_get(ap->store, key->ptr, key->len));
    return 0;
}

int keel__srv_cmd_ap_get(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_read(c, argc, argv, 0);
}

int keel__srv_cmd_ap_smembers(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return do_read(c, argc, argv, KEEL_APVAL_ORSET);
}

/* The key's conflict policy on this node: its name, the prefix that chose it (nil: none,
 * the default) and the digest of this node's whole table (16 hex digits), which is the
 * same on every node configured alike. */
int keel__srv_cmd_ap_policy(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    (void)argc;
    ap_t *ap = keel__srv_of(c)->ap;
    int rule;
    uint8_t kind = keel_appolicy_kind(&ap->policy, argv[1].ptr, argv[1].len, &rule);
    char digest[17];
    snprintf(digest, sizeof(digest), "%016llx",
             (unsigned long long)keel_appolicy_digest(&ap->policy));
    keel_buf_t *out = keel_resp_client_out(c);
    const char *name = keel_appolicy_name(kind);
    int rc = keel_resp_write_array_header(out, 3);
    rc = rc ?: keel_resp_write_bulk(out, name, strlen(name));
    if (rule < 0)
        rc = rc ?: keel_resp_write_nil(out);
    else
        rc = rc
                 ?: keel_resp_write_bulk(out, (const char *)ap->policy.rule[rule].prefix,
                                         ap->policy.rule[rule].len);
    rc = rc ?: keel_resp_write_bulk(out, digest, 16);
    return rc;
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
    if (keel__ap_ring_refresh(ap) == 0)
        return keel__srv_error(c, "ERR keel: no members known yet");
    int nh = keel__ap_prefs_now(ap, key->ptr, key->len, homes, fb, &nf);
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
