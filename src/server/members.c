/* members.c - membership administration: changes, promotion, the directory, who left. */
#include "server/node_int.h"

#include "base/num.h"

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

/* ---- membership changes (leader) --------------------------------------------------- */

static size_t put_field(uint8_t *w, const char *s)
{
    size_t len = strlen(s);
    keel_put_u16(w, (uint16_t)len);
    memcpy(w + 2, s, len);
    return 2 + len;
}

size_t keel_node_conf_encode(const keel_node_conf_change_t *c, uint8_t *out)
{
    assert(strlen(c->name) < sizeof(c->name) && strlen(c->peer_addr) < sizeof(c->peer_addr) &&
           strlen(c->client_addr) < sizeof(c->client_addr));
    size_t n = 0;
    out[n++] = (uint8_t)c->op;
    n += put_field(out + n, c->name);
    n += put_field(out + n, c->peer_addr);
    n += put_field(out + n, c->client_addr);
    assert(n <= KEEL_NODE_CONF_BYTES_MAX);
    return n;
}

static int take_field(keel_rd_t *r, char *dst, size_t cap)
{
    size_t len = keel_rd_u16(r);
    const uint8_t *p = len ? keel_rd_bytes(r, len) : NULL;
    if (r->bad || len >= cap || (len && memchr(p, '\0', len)))
        return KEEL_EPROTO;
    if (len)
        memcpy(dst, p, len);
    dst[len] = '\0';
    return 0;
}

int keel_node_conf_decode(const uint8_t *p, size_t len, keel_node_conf_change_t *c)
{
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    memset(c, 0, sizeof(*c));
    uint8_t op = keel_rd_u8(&r);
    if (op < KEEL_NODE_CONF_ADD || op > KEEL_NODE_CONF_UPDATE ||
        take_field(&r, c->name, sizeof(c->name)) != 0 ||
        take_field(&r, c->peer_addr, sizeof(c->peer_addr)) != 0 ||
        take_field(&r, c->client_addr, sizeof(c->client_addr)) != 0 || r.left != 0)
        return KEEL_EPROTO;
    c->op = (keel_node_conf_op_t)op;
    return 0;
}

/*
 * A change's result (keel_node_conf_result_t), encoded:
 *   u8 kind | ID: u64 id | JOINED: u64 id | u64 cluster id | u32 n |
 *   n x (u64 id | u8 voter | name | peer address | client address) | REFUSED: text
 * with every string as u16 length | bytes. One allocation, owned by the request.
 */
typedef struct conf_result {
    uint8_t *p;
    size_t len;
} conf_result_t;

/* An owned copy of an encoded result (p NULL: no memory). */
static conf_result_t result_copy(const uint8_t *w, size_t n)
{
    conf_result_t out = {malloc(n), n};
    if (out.p != NULL)
        memcpy(out.p, w, n);
    else
        out.len = 0;
    return out;
}

/* A result with no directory (done, an id, a refusal), into w; returns its length. */
#define SIMPLE_RESULT_BYTES_MAX (1 + 8 + 2 + KEEL_ERRMSG_BYTES_MAX)

static size_t encode_simple(uint8_t *w, keel_node_conf_kind_t kind, uint64_t id, const char *error)
{
    size_t n = 0;
    w[n++] = (uint8_t)kind;
    if (kind == KEEL_NODE_CONF_ID) {
        keel_put_u64(w + n, id);
        n += 8;
    }
    if (kind == KEEL_NODE_CONF_REFUSED) {
        size_t len = strnlen(error, KEEL_ERRMSG_BYTES_MAX - 1);
        keel_put_u16(w + n, (uint16_t)len);
        memcpy(w + n + 2, error, len);
        n += 2 + len;
    }
    assert(n <= SIMPLE_RESULT_BYTES_MAX);
    return n;
}

static conf_result_t result_simple(keel_node_conf_kind_t kind, uint64_t id, const char *error)
{
    uint8_t w[SIMPLE_RESULT_BYTES_MAX];
    return result_copy(w, encode_simple(w, kind, id, error));
}

/* JOIN's answer: the new member's id, the cluster id, and the directory of conf c. */
#define JOIN_RESULT_BYTES_MAX                                                                      \
    (1 + 8 + 8 + 4 +                                                                               \
     KEEL_RAFT_MEMBERS_MAX * (8 + 1 + 3 * 2 + KEEL_NODE_NAME_BYTES + 2 * KEEL_NODE_ADDR_BYTES))

static conf_result_t result_join(keel_node_t *n, uint64_t id, const keel_raft_conf_t *c)
{
    keel_memberdir_t d;
    keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, &d);
    uint8_t w[JOIN_RESULT_BYTES_MAX];
    w[0] = KEEL_NODE_CONF_JOINED;
    keel_put_u64(w + 1, id);
    keel_put_u64(w + 9, n->cfg.cluster_id);
    keel_put_u32(w + 17, (uint32_t)d.n);
    size_t k = 21;
    for (size_t i = 0; i < d.n; i++) {
        const keel_node_member_t *m = &d.m[i];
        keel_put_u64(w + k, m->id);
        w[k + 8] = (uint8_t)(m->voter != 0);
        k += 9;
        k += put_field(w + k, m->name);
        k += put_field(w + k, m->peer_addr);
        k += put_field(w + k, m->client_addr);
    }
    assert(k <= sizeof(w));
    return result_copy(w, k);
}

int keel_node_conf_result_decode(const uint8_t *p, size_t len, keel_node_conf_result_t *out)
{
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    memset(out, 0, sizeof(*out));
    uint8_t kind = keel_rd_u8(&r);
    if (kind > KEEL_NODE_CONF_REFUSED)
        return KEEL_EPROTO;
    out->kind = (keel_node_conf_kind_t)kind;
    if (kind == KEEL_NODE_CONF_ID || kind == KEEL_NODE_CONF_JOINED)
        out->id = keel_rd_u64(&r);
    if (kind == KEEL_NODE_CONF_REFUSED && take_field(&r, out->error, sizeof(out->error)) != 0)
        return KEEL_EPROTO;
    if (kind == KEEL_NODE_CONF_JOINED) {
        out->cluster_id = keel_rd_u64(&r);
        uint32_t n = keel_rd_u32(&r);
        if (n > KEEL_RAFT_MEMBERS_MAX)
            return KEEL_EPROTO;
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            keel_node_member_t *m = &out->dir.m[i];
            m->id = keel_rd_u64(&r);
            m->voter = keel_rd_u8(&r) != 0;
            if (take_field(&r, m->name, sizeof(m->name)) != 0 ||
                take_field(&r, m->peer_addr, sizeof(m->peer_addr)) != 0 ||
                take_field(&r, m->client_addr, sizeof(m->client_addr)) != 0)
                return KEEL_EPROTO;
        }
        out->dir.n = n;
    }
    return r.bad || r.left != 0 ? KEEL_EPROTO : 0;
}

/* Answers a change now (refused, or nothing to change) with its result; frees it. */
static void conf_answer(keel_node_t *n, keel_req_t *r, conf_result_t res)
{
    uint8_t oom[SIMPLE_RESULT_BYTES_MAX];
    if (res.p == NULL) /* no memory for the result: say so without any */
        keel_reqs_answer_write(&n->reqs, r, oom,
                               encode_simple(oom, KEEL_NODE_CONF_REFUSED, 0, "out of memory"));
    else
        keel_reqs_answer_write(&n->reqs, r, res.p, res.len);
    free(res.p);
}

/*
 * The leader removing itself hands leadership to another voter first, and the request
 * waits (parked); the new leader then removes this node like any other. This avoids
 * the thesis §4.2.2 window where a leader that removed itself steps down and the rest
 * wait a whole election timeout for a new one.
 */
static int remove_self_first(keel_node_t *n, keel_req_t *r)
{
    uint64_t to = 0;
    for (size_t i = 0; i < n->members.n && to == 0; i++)
        if (n->members.m[i].voter && n->members.m[i].id != n->cfg.id)
            to = n->members.m[i].id;
    if (to == 0)
        return 0; /* the last voter: memberdir refuses it */
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0)
        keel_log_info("removing the leader: leadership transfer first",
                      KF_STR("to", keel_node_member_name(n, to)));
    keel_reqs_park(&n->reqs, r);
    return 1;
}

/* The next configuration for the change c, or an error (1: answered without a change). */
static int conf_next(keel_node_t *n, const keel_node_conf_change_t *c, keel_raft_conf_t *next,
                     conf_result_t *reply, keel_errmsg_t *m)
{
    const keel_raft_conf_t *cur = keel_raft_conf(n->raft);
    keel_memberdir_t dir = n->members;
    keel_node_member_t *self = keel_memberdir_find_id(&dir, n->cfg.id);
    if (self && self->client_addr[0] == '\0')
        snprintf(self->client_addr, sizeof(self->client_addr), "%s", n->cfg.client_addr);
    int join = c->op == KEEL_NODE_CONF_JOIN;
    if (join || c->op == KEEL_NODE_CONF_ADD) {
        keel_node_member_t who = {0};
        memcpy(who.name, c->name, sizeof(who.name));
        memcpy(who.peer_addr, c->peer_addr, sizeof(who.peer_addr));
        memcpy(who.client_addr, c->client_addr, sizeof(who.client_addr));
        keel_node_member_t *was = keel_memberdir_find_name(&dir, who.name, strlen(who.name));
        if (join && was && strcmp(was->peer_addr, who.peer_addr) == 0) {
            *reply = result_join(n, was->id, cur); /* asked again: it is in already */
            return 1;
        }
        uint64_t id;
        int rc = keel_memberdir_add(cur, &dir, &who, next, &id, m);
        if (rc == 0)
            *reply = join ? result_join(n, id, next) : result_simple(KEEL_NODE_CONF_ID, id, NULL);
        return rc;
    }
    keel_node_member_t *who = keel_memberdir_find_name(&dir, c->name, strlen(c->name));
    if (who == NULL)
        return keel_errf(m, KEEL_ENOTFOUND, "no such member '%.64s'", c->name);
    int rc;
    if (c->op == KEEL_NODE_CONF_UPDATE) {
        /* Compared with the configuration in force, not dir: dir has the leader's own
           address filled in already, which an UPDATE for the leader must still write. */
        const keel_node_member_t *in_force = keel_memberdir_find_id(&n->members, who->id);
        if (in_force && strcmp(in_force->client_addr, c->client_addr) == 0) {
            *reply = result_simple(KEEL_NODE_CONF_DONE, 0, NULL); /* nothing to change */
            return 1;
        }
        rc = keel_memberdir_set_client(cur, &dir, who->id, c->client_addr, next, m);
    } else {
        rc = c->op == KEEL_NODE_CONF_REMOVE ? keel_memberdir_remove(cur, &dir, who->id, next, m)
                                            : keel_memberdir_promote(cur, &dir, who->id, next, m);
    }
    if (rc == 0)
        *reply = result_simple(KEEL_NODE_CONF_DONE, 0, NULL);
    return rc;
}

/*
 * Leader: a membership change becomes a configuration entry (one change at a time; the
 * core refuses a second one while the first is uncommitted, and the request waits
 * parked). The client's answer comes when that entry is applied, i.e. committed.
 */
void keel__node_conf_change(keel_node_t *n, keel_req_t *r)
{
    keel_raft_conf_t *next = &n->conf_scratch;
    keel_node_conf_change_t c;
    conf_result_t reply = {NULL, 0};
    keel_errmsg_t m = {{0}};
    free(r->conf_reply);
    r->conf_reply = NULL;
    if (keel_node_conf_decode(r->cmd, r->cmd_len, &c) != 0) {
        conf_answer(n, r, result_simple(KEEL_NODE_CONF_REFUSED, 0, "bad membership change"));
        return;
    }
    if (c.op == KEEL_NODE_CONF_REMOVE) {
        keel_node_member_t *who = keel_memberdir_find_name(&n->members, c.name, strlen(c.name));
        if (who && who->id == n->cfg.id && remove_self_first(n, r))
            return;
    }
    int rc = conf_next(n, &c, next, &reply, &m);
    if (rc == 1) { /* answered without a change */
        conf_answer(n, r, reply);
        return;
    }
    if (rc == 0)
        rc = keel_raft_propose_conf(n->raft, next);
    if (rc == KEEL_EBUSY || rc == KEEL_EAGAIN || rc == KEEL_ENOTLEADER) {
        free(reply.p);
        keel_reqs_park(&n->reqs, r); /* an earlier change or a transfer is under way: wait */
        return;
    }
    if (rc != 0 || reply.p == NULL) {
        free(reply.p);
        conf_answer(n, r,
                    result_simple(KEEL_NODE_CONF_REFUSED, 0,
                                  m.text[0] ? m.text : keel_strerror(rc ? rc : KEEL_ENOMEM)));
        return;
    }
    r->conf_reply = reply.p;
    r->conf_reply_len = reply.len;
    keel_log_info("membership change proposed",
                  KF_STR("change", c.op == KEEL_NODE_CONF_JOIN ? "join" : "edit"),
                  KF_INT("voters", next->voters_n), KF_INT("learners", next->learners_n));
    keel_reqs_proposed(&n->reqs, r, keel_raft_last_index(n->raft));
    keel__node_sync_members(n);
}

/* Our connection to a peer broke: what we forwarded to it may never be answered. */
/*
 * A configuration entry was applied: the lingering peers it removed are told so. Only a
 * member that existed when the entry was made can have been removed by it: a node catching
 * up applies old configuration entries too, and a member added after one of them (an id at
 * or past that entry's next_id) is absent from it without having been removed - telling it
 * "removed" would evict a current member for good (found by the streams nemesis: a node
 * that had just joined evicted a voter added before it). keel__node_removed_for_good is the
 * one rule, the same the HELLO check uses.
 */
void keel__node_tell_removed(keel_node_t *n, const keel_raft_entry_t *e)
{
    keel_raft_conf_t *c = &n->conf_scratch;
    if (keel_raft_conf_decode(e->data, e->len, c) != 0)
        return;
    keel_memberdir_t *d = &n->tell_dir;
    keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, d);
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!keel__node_peer_live(p) || p->linger_until_ms == 0)
            continue;
        if (keel__node_removed_for_good(d, p->member.id))
            keel_peer_encode_removed(&p->out, p->member.id);
    }
}

static void warn_if_refused(const char *what, int status, const uint8_t *reply, size_t len)
{
    if (status != 0) {
        keel_log_warn(what, KF_STR("error", keel_strerror(status)));
        return;
    }
    keel_node_conf_result_t *res = malloc(sizeof(*res));
    if (res != NULL && keel_node_conf_result_decode(reply, len, res) == 0 &&
        res->kind == KEEL_NODE_CONF_REFUSED)
        keel_log_warn(what, KF_STR("error", res->error));
    free(res);
}

static void promote_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    keel_node_t *n = ctx;
    n->promote_inflight = 0;
    warn_if_refused("learner promotion failed; retried at the next tick", status, reply, len);
}

/*
 * Leader, every tick: a learner whose log is within promote_lag_entries_max of ours
 * becomes a voter (one at a time, through the same path as a client's change). A
 * learner that has acknowledged nothing yet (match 0) is never promoted.
 */
void keel__node_maybe_promote(keel_node_t *n)
{
    if (n->promote_inflight || keel_raft_leader(n->raft) != n->cfg.id)
        return;
    const keel_raft_conf_t *c = keel_raft_conf(n->raft);
    if (c->learners_n == 0 || c->voters_n >= KEEL_RAFT_VOTERS_MAX)
        return;
    uint64_t last = keel_raft_last_index(n->raft);
    for (uint32_t i = 0; i < c->learners_n; i++) {
        uint64_t match = keel_raft_match_index(n->raft, c->learners[i]);
        if (match == 0 || match + n->cfg.promote_lag_entries_max < last)
            continue;
        const char *name = keel_node_member_name(n, c->learners[i]);
        keel_node_conf_change_t chg = {.op = KEEL_NODE_CONF_PROMOTE};
        snprintf(chg.name, sizeof(chg.name), "%s", name);
        if (keel_node_change(n, &chg, promote_done, n) == 0) {
            n->promote_inflight = 1;
            keel_log_info("promoting a caught-up learner", KF_STR("member", name),
                          KF_INT("match", match), KF_INT("last", last));
        }
        return;
    }
}

static void client_addr_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    keel_node_t *n = ctx;
    n->client_addr_inflight = 0;
    warn_if_refused("publishing this node's client address failed; retried later", status, reply,
                    len);
}

/*
 * Every tick: the configuration's directory should hold this node's client address, for
 * KEEL.CLUSTER MEMBERS, `keel member list` and `keel status`. The bootstrap directory
 * (--initial-cluster) has none, and --listen-client may differ after a restart. A member
 * whose entry shows another address asks for KEEL.CLUSTER UPDATE, through the log like
 * any change, one request at a time and at most every CLIENT_ADDR_RETRY_MS.
 */
#define CLIENT_ADDR_RETRY_MS 1000

void keel__node_maybe_update_client_addr(keel_node_t *n, keel_ms_t now)
{
    if (n->client_addr_inflight || n->reqs.removed || n->cfg.client_addr[0] == '\0' ||
        now < n->client_addr_next_ms || keel_raft_leader(n->raft) == 0)
        return;
    const keel_node_member_t *self = keel_memberdir_find_id(&n->members, n->cfg.id);
    if (self == NULL || strcmp(self->client_addr, n->cfg.client_addr) == 0)
        return;
    keel_node_conf_change_t chg = {.op = KEEL_NODE_CONF_UPDATE};
    snprintf(chg.name, sizeof(chg.name), "%s", self->name);
    snprintf(chg.client_addr, sizeof(chg.client_addr), "%s", n->cfg.client_addr);
    n->client_addr_next_ms = now + CLIENT_ADDR_RETRY_MS;
    if (keel_node_change(n, &chg, client_addr_done, n) == 0)
        n->client_addr_inflight = 1;
}

/*
 * The core counts one tick per timer callback, as etcd's driver does, not the wall time
 * since the last one. After the loop stalled (a starved CPU, a long fork), libuv runs
 * timers before it polls the sockets: catching up a second of ticks at once would make a
 * follower campaign, or a check-quorum leader step down, before reading the heartbeats
 * and answers waiting in its sockets. Dropping the missed ticks only delays this node's
 * own timeouts, which is safe for everything but lease reads (a leader whose clock runs
 * slow would trust its lease too long), so with lease reads on the core gets wall time.
 */
void keel__node_sync_members(keel_node_t *n)
{
    const keel_raft_conf_t *c = keel_raft_conf(n->raft);
    n->members_dirty = 0;
    if (c->voters_n + c->learners_n == 0) {
        memset(&n->members, 0, sizeof(n->members));
        for (size_t i = 0; i < n->cfg.members_n; i++)
            n->members.m[n->members.n++] = n->cfg.members[i];
    } else {
        keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, &n->members);
    }
    int removed = n->evicted || keel_memberdir_find_id(&n->members, n->cfg.id) == NULL;
    if (removed != n->reqs.removed)
        keel_log_warn(removed ? "this node is not a member of the configuration in force; it "
                                "will not campaign and refuses client requests"
                              : "this node is a member of the configuration in force",
                      KF_INT("id", n->cfg.id));
    n->reqs.removed = removed;
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!keel__node_peer_live(p))
            continue;
        int member = keel_memberdir_find_id(&n->members, p->member.id) != NULL;
        if (!member && p->linger_until_ms == 0) {
            keel_log_info("peer leaving: no longer a member", KF_STR("peer", p->member.name));
            p->linger_until_ms =
                keel_loop_now_ms(n->loop) + n->cfg.request_timeout_ms + PEER_LINGER_EXTRA_MS;
        } else if (member) {
            p->linger_until_ms = 0; /* the change was truncated away */
        }
    }
    for (size_t i = 0; i < n->members.n; i++) {
        const keel_node_member_t *mb = &n->members.m[i];
        if (mb->id == n->cfg.id || mb->peer_addr[0] == '\0' || keel__node_peer_by_id(n, mb->id))
            continue;
        keel_errmsg_t m = {{0}};
        if (keel__node_peer_open(n, mb, &m) != 0)
            keel_log_error("cannot open a peer", KF_STR("peer", mb->name), KF_STR("error", m.text));
    }
}

/* Loads the newest valid snapshot (if any) into the fresh state machine. */
const char *keel_node_member_name(const keel_node_t *n, uint64_t id)
{
    for (size_t i = 0; i < n->members.n; i++)
        if (n->members.m[i].id == id)
            return n->members.m[i].name;
    for (size_t i = 0; i < PEER_SLOTS; i++) /* a member removed a moment ago */
        if (n->peers[i].node && n->peers[i].member.id == id)
            return n->peers[i].member.name;
    for (size_t i = 0; i < n->cfg.members_n; i++)
        if (n->cfg.members[i].id == id)
            return n->cfg.members[i].name;
    return "?";
}

const keel_memberdir_t *keel_node_members(const keel_node_t *n)
{
    return &n->members;
}
