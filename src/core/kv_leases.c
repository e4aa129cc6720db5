/* kv_leases.c - leases, KEEL.SET on a lease, locks with fencing tokens, KEEL.FENCED. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the records of what few entries have: a deadline, a lease (kv_int.h) --------- */

keel__kv_xrec_t *keel__kv_xrec_new(void)
{
    keel__kv_xrec_t *r = malloc(sizeof(*r));
    if (r == NULL)
        return NULL;
    keel_list_init(&r->link);
    r->e = NULL;
    r->lease_id = r->expire_ms = 0;
    r->heap_pos = 0;
    r->head = 0;
    return r;
}

void keel__kv_x_release(keel__kv_entry_t *e)
{
    keel__kv_xrec_t *r = e->x;
    if (r && !r->head && r->lease_id == 0 && r->expire_ms == 0) {
        free(r);
        e->x = NULL;
    }
}

int keel__kv_lease_head(keel__kv_entry_t *l)
{
    assert(l->x == NULL);
    if ((l->x = keel__kv_xrec_new()) == NULL)
        return KEEL_ENOMEM;
    l->x->e = l;
    l->x->head = 1;
    return 0;
}

void keel__kv_detach(keel__kv_entry_t *e)
{
    keel__kv_xrec_t *r = e->x;
    if (r == NULL)
        return;
    /* a key's record is linked in its lease's list; a lease's head only goes when empty */
    assert(r->e == e && (r->head ? keel_list_empty(&r->link)
                                 : keel_list_linked(&r->link) == (r->lease_id != 0)));
    if (r->lease_id != 0)
        keel_list_remove(&r->link);
    r->lease_id = 0;
    r->head = 0;
    keel__kv_x_release(e);
}

void keel__kv_attach(keel__kv_entry_t *e, keel__kv_entry_t *l, uint64_t lease_id,
                     keel__kv_xrec_t *r)
{
    assert(lease_id != 0 && l->x != NULL && l->x->head && r != NULL && r->e == NULL);
    keel__kv_detach(e);
    if (e->x != NULL) {
        free(r); /* e keeps the record of its deadline */
        r = e->x;
    } else {
        r->e = e;
        e->x = r;
    }
    r->lease_id = lease_id;
    keel_list_insert_head(&l->x->link, &r->link);
}

/* ---- leases ---------------------------------------------------------------------- */

/*
 * A lease (etcd's lease model, https://etcd.io/docs/v3.5/learning/api/#lease-api)
 * has an id from the state's counter, a ttl_ms and a deadline (entry time +
 * ttl_ms, renewed by KEEPALIVE). Keys attached with KEEL.SET ... LEASE id are
 * absent once the lease's deadline passes, and are deleted with it by
 * REVOKE or by the replicated KEEL.LEASE.SWEEP. Granting or renewing a lease
 * is not a key change (no revision); deleting keys is.
 */
static const char ERR_NO_LEASE[] = "ERR no such lease";

static uint64_t lease_ttl(const keel__kv_entry_t *l)
{
    return keel_get_u64(keel__kv_cval(l));
}

int keel__kvc_lease_syntax(const call_t *c)
{
    int64_t v;
    if (!keel__kvc_arg_is(c, 1, "GRANT") && !keel__kvc_arg_is(c, 1, "KEEPALIVE") &&
        !keel__kvc_arg_is(c, 1, "REVOKE") && !keel__kvc_arg_is(c, 1, "TTL")) {
        return r_err_arg(c->reply, "ERR unknown subcommand '", c->argv[1], c->lens[1],
                         "' for 'keel.lease'");
    }
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* now + ms, or 0 (and an error reply) when it would pass INT64_MAX. */
static uint64_t deadline_after(const call_t *c, int64_t ms)
{
    if ((uint64_t)ms > (uint64_t)INT64_MAX - c->now) {
        r_err(c->reply, "ERR invalid expire time");
        return 0;
    }
    return c->now + (uint64_t)ms;
}

/* Deletes every key attached to lease entry l, then l itself; the number of keys. */
static int64_t lease_drop(keel_kv_t *kv, keel__kv_entry_t **lease_link)
{
    keel__kv_entry_t *l = *lease_link;
    int64_t n = 0;
    keel_list_t *it;
    while ((it = keel_list_first(&l->x->link)) != NULL) {
        keel__kv_entry_t *e = KEEL_LIST_ENTRY(it, keel__kv_xrec_t, link)->e, **link = NULL;
        keel__kv_entry_t *f = keel__kv_find(kv, keel__kv_key(e), e->key_len,
                                            keel__kv_hash(kv, keel__kv_key(e), e->key_len), &link);
        assert(f == e);
        keel__kv_unlink(kv, link); /* detaches it */
        n++;
    }
    keel__kv_unlink(kv->leases, lease_link);
    return n;
}

static int lease_grant(const call_t *c, int64_t ttl)
{
    keel_kv_t *kv = c->w;
    uint64_t when = deadline_after(c, ttl);
    if (when == 0)
        return 0;
    if (kv->leases && kv->leases->count >= kv->cfg.keys_max)
        return keel__kvc_done(r_err(c->reply,
                                    "OOM command not allowed when the number of leases would "
                                    "exceed 'keys_max'"));
    int rc = keel__kv_sub(kv, &kv->leases);
    if (rc == 0)
        rc = keel__kv_heap_reserve(kv->leases, 1);
    if (rc != 0)
        return rc;
    uint64_t id = kv->lease_id_last + 1;
    uint8_t k[KEEL__KV_LEASE_KEY_BYTES], v[KEEL__KV_LEASE_VALUE_BYTES];
    keel__kv_put_u64be(k, id);
    keel_put_u64(v, (uint64_t)ttl);
    keel__kv_entry_t *l =
        keel__kv_entry_new(k, sizeof(k), keel__kv_hash(kv->leases, k, sizeof(k)), v, 8, 8);
    if (l == NULL)
        return KEEL_ENOMEM;
    if (keel__kv_lease_head(l) != 0) { /* the empty list of its keys */
        free(l);
        return KEEL_ENOMEM;
    }
    keel__kv_insert(kv->leases, l);
    keel__kv_set_expire(kv->leases, l, when);
    kv->lease_id_last = id;
    r_int(c->reply, (int64_t)id);
    return 0;
}

/* KEEL.LEASE GRANT ttl_ms | KEEPALIVE id | REVOKE id | TTL id */
int keel__kvc_cmd_lease(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t arg = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &arg);
    assert(rc == 0 && arg > 0);
    if (keel__kvc_arg_is(c, 1, "GRANT"))
        return lease_grant(c, arg);
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *l = keel__kv_lease_find(kv, (uint64_t)arg, &link);
    int live = l && keel__kv_live(l, c->now);
    if (keel__kvc_arg_is(c, 1, "TTL")) {
        r_int(c->reply, live ? (int64_t)(keel__kv_expire(l) - c->now) : -2);
        return 0;
    }
    if (!live)
        return keel__kvc_done(r_err(c->reply, ERR_NO_LEASE));
    if (keel__kvc_arg_is(c, 1, "KEEPALIVE")) {
        uint64_t when = deadline_after(c, (int64_t)lease_ttl(l));
        if (when == 0)
            return 0;
        keel__kv_set_expire(kv->leases, l, when);
        r_int(c->reply, (int64_t)lease_ttl(l));
        return 0;
    }
    assert(keel__kvc_arg_is(c, 1, "REVOKE"));
    int64_t n = lease_drop(kv, link);
    if (n > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

/*
 * KEEL.LEASE.SWEEP now_ms max_leases: ends up to max_leases leases whose
 * deadline is <= min(now_ms, entry time), earliest first (ties by id),
 * deleting their keys; replies with the number of leases ended. One change
 * if any key went. Work: the leases ended plus their keys.
 */
int keel__kvc_cmd_lease_sweep(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t max;
    uint64_t limit = keel__kvc_sweep_args(c, &max);
    int64_t n = 0, keys = 0;
    keel__kv_entry_t *l;
    while (kv->leases && n < max && (l = keel__kv_heap_top(kv->leases)) != NULL &&
           keel__kv_expire(l) <= limit) {
        keel__kv_entry_t **link = NULL;
        keel__kv_entry_t *f =
            keel__kv_find(kv->leases, keel__kv_key(l), l->key_len,
                          keel__kv_hash(kv->leases, keel__kv_key(l), l->key_len), &link);
        assert(f == l);
        keys += lease_drop(kv, link);
        n++;
    }
    if (keys > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

int keel__kvc_kset_syntax(const call_t *c)
{
    int64_t id;
    if (c->argc != 5 || !keel__kvc_arg_is(c, 3, "LEASE"))
        return r_err(c->reply, ERR_SYNTAX);
    if (keel_parse_i64(c->argv[4], c->lens[4], &id) != 0 || id <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* KEEL.SET key value LEASE id: SET (no deadline of its own) attached to a live lease. */
int keel__kvc_cmd_kset(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t id = 0;
    int rc = keel_parse_i64(c->argv[4], c->lens[4], &id);
    assert(rc == 0 && id > 0);
    keel__kv_entry_t *l = keel__kv_lease_find(kv, (uint64_t)id, NULL);
    if (l == NULL || !keel__kv_live(l, c->now))
        return keel__kvc_done(r_err(c->reply, ERR_NO_LEASE));
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    if ((rc = keel__kvc_check_sizes(c, key_len, c->lens[2])) != 0)
        return keel__kvc_done(rc);
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    if (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0)
        return keel__kvc_done(rc);
    keel__kv_xrec_t *r = keel__kv_xrec_new(); /* before any change: attaching cannot fail */
    if (r == NULL)
        return KEEL_ENOMEM;
    rc = keel__kvc_put_value(c, 2, link, e, dead, h, 0, 0);
    if (rc != 0) {
        free(r);
        return rc;
    }
    e = keel__kv_find(kv, key, key_len, h, NULL);
    keel__kv_attach(e, l, (uint64_t)id, r);
    r_ok(c->reply);
    return 0;
}

/* ---- locks with fencing tokens ------------------------------------------------------ */

/*
 * KEEL.LOCK name ttl_ms hands out a fencing token (Kleppmann, "How to do
 * distributed locking", 2016): a number from one counter in the state that
 * grows with every acquisition of any lock, so the tokens of successive
 * holders of a lock strictly increase, across expiries, releases, leader
 * changes and snapshots. KEEL.FENCED name token <write> runs the write only
 * while token is the current, unexpired holder's: the check and the write are
 * one entry, so a holder that paused past its TTL cannot write after the next
 * holder got the lock. docs/kv.md ("Locks") has the reasoning.
 */
static uint64_t lock_token(const keel__kv_entry_t *l)
{
    return keel_get_u64(keel__kv_cval(l));
}

/* The lock entry of argv[1] if it is held (unexpired) at now, else NULL; *link, *any as found. */
static keel__kv_entry_t *lock_held(const call_t *c, keel__kv_entry_t ***link,
                                   keel__kv_entry_t **any)
{
    const keel_kv_t *locks = c->kv->locks;
    *any = NULL;
    if (locks == NULL)
        return NULL;
    *any = keel__kv_find(locks, c->argv[1], c->lens[1],
                         keel__kv_hash(locks, c->argv[1], c->lens[1]), link);
    return *any && keel__kv_live(*any, c->now) ? *any : NULL;
}

int keel__kvc_lock_syntax(const call_t *c)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

#define LOCK_HELD 2 /* lock_take: another holder has it (REPLIED is 1) */

/* Takes argv[1]'s lock for argv[2] ms: 0 with *token, LOCK_HELD (nothing written), else what
 * keel__kvc_done takes (REPLIED with an error reply, or a failed allocation). */
static int lock_take(const call_t *c, uint64_t *token)
{
    keel_kv_t *kv = c->w;
    int64_t ttl = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &ttl);
    assert(rc == 0);
    uint64_t when = deadline_after(c, ttl);
    if (when == 0)
        return REPLIED;
    if (c->lens[1] > kv->cfg.key_bytes_max)
        return r_err(c->reply, ERR_KEY_SIZE);
    keel__kv_entry_t **link = NULL, *any = NULL;
    if (lock_held(c, &link, &any) != NULL)
        return LOCK_HELD;
    if (!any && kv->locks && kv->locks->count >= kv->cfg.keys_max)
        return r_err(c->reply, "OOM command not allowed when the number of locks would "
                               "exceed 'keys_max'");
    if ((rc = keel__kv_sub(kv, &kv->locks)) != 0 || (rc = keel__kv_heap_reserve(kv->locks, 1)) != 0)
        return rc;
    *token = kv->fence_last + 1;
    uint8_t v[KEEL__KV_LOCK_VALUE_BYTES];
    keel_put_u64(v, *token);
    if (any) { /* expired, not swept: reuse the entry (fixed-size value, no allocation) */
        memcpy(keel__kv_val(any), v, sizeof(v));
    } else {
        uint64_t h = keel__kv_hash(kv->locks, c->argv[1], c->lens[1]);
        any = keel__kv_entry_new(c->argv[1], c->lens[1], h, v, sizeof(v), sizeof(v));
        if (any == NULL)
            return KEEL_ENOMEM;
        keel__kv_insert(kv->locks, any);
    }
    keel__kv_set_expire(kv->locks, any, when);
    kv->fence_last = *token;
    return 0;
}

int keel__kvc_cmd_lock(const call_t *c)
{
    uint64_t token = 0;
    int rc = lock_take(c, &token);
    if (rc == LOCK_HELD)
        r_nil(c->reply);
    else if (rc == 0)
        r_int(c->reply, (int64_t)token);
    return rc == LOCK_HELD ? 0 : keel__kvc_done(rc);
}

static int token_arg(const call_t *c, uint64_t *token)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return -1;
    *token = (uint64_t)v;
    return 0;
}

int keel__kvc_unlock_syntax(const call_t *c)
{
    uint64_t t;
    return token_arg(c, &t) != 0 ? r_err(c->reply, ERR_NOT_INT) : 0;
}

/* KEEL.UNLOCK name token: :1 if token held the lock (now released), else :0. */
int keel__kvc_cmd_unlock(const call_t *c)
{
    keel__kv_entry_t **link = NULL, *any = NULL;
    uint64_t token = 0;
    int rc = token_arg(c, &token);
    assert(rc == 0);
    keel__kv_entry_t *l = lock_held(c, &link, &any);
    int mine = l && lock_token(l) == token;
    if (mine)
        keel__kv_unlink(c->w->locks, link);
    r_int(c->reply, mine);
    return 0;
}

/* The write that KEEL.FENCED or KEEL.LOCKRUN (named) runs, at argv[3..]: checked like any
 * command. KEEL.TXN is the one unqueueable command it may be (several writes under one lock
 * check, one entry); KEEL.TXN queues none of KEEL.FENCED, KEEL.LOCKRUN and KEEL.TXN, so the
 * nesting stops at two. */
static int wrapped_syntax(const call_t *c, const char *name)
{
    const cmd_t *cmd = keel__kvc_find_cmd(c->argv[3], c->lens[3]);
    char text[64];
    if (cmd && !(cmd->flags & KEEL_KV_WRITE)) {
        snprintf(text, sizeof(text), "ERR %s runs write commands only", name);
        return r_err(c->reply, text);
    }
    if (cmd && (cmd->flags & CMD_NO_NEST) && cmd->fn != keel__kvc_cmd_txn) {
        snprintf(text, sizeof(text), "ERR %s cannot wrap this command", name);
        return r_err(c->reply, text);
    }
    call_t in = keel__kvc_inner_call(c, 3);
    return keel__kvc_precheck(&in, KEEL_KV_ARGC_MAX, &cmd);
}

int keel__kvc_fenced_syntax(const call_t *c)
{
    uint64_t t;
    if (token_arg(c, &t) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return wrapped_syntax(c, "KEEL.FENCED");
}

int keel__kvc_lockrun_syntax(const call_t *c)
{
    int rc = keel__kvc_lock_syntax(c);
    return rc != 0 ? rc : wrapped_syntax(c, "KEEL.LOCKRUN");
}

/*
 * KEEL.LOCKRUN name ttl_ms <write command ...>: KEEL.LOCK and, when it took the lock, the
 * write under it, in one entry: *2 [token, the write's reply]; nil, and nothing runs, while
 * another holder has the lock. What a new lock holder's first fenced write would do, without
 * the round trip and the entry between them (the saga orchestrator starts a saga with it).
 */
int keel__kvc_cmd_lockrun(const call_t *c)
{
    call_t in = keel__kvc_inner_call(c, 3);
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&in, c->kv->cfg.argc_max, &cmd);
    if (rc != 0) /* before the lock: a write that cannot run takes nothing */
        return keel__kvc_done(rc);
    uint64_t token = 0;
    rc = lock_take(c, &token);
    if (rc == LOCK_HELD) {
        r_nil(c->reply);
        return 0;
    }
    if (rc != 0)
        return keel__kvc_done(rc);
    r_array(c->reply, 2);
    r_int(c->reply, (int64_t)token);
    return keel__kvc_done(keel__kvc_run(cmd, &in));
}

/*
 * KEEL.FENCED name token <write command ...>: the inner command's reply if
 * token is the lock's current, unexpired holder, else
 * -FENCED token T is not the holder of the lock (nothing runs).
 */
int keel__kvc_cmd_fenced(const call_t *c)
{
    keel__kv_entry_t **link = NULL, *any = NULL;
    uint64_t token = 0;
    int rc = token_arg(c, &token);
    assert(rc == 0);
    keel__kv_entry_t *l = lock_held(c, &link, &any);
    if (l == NULL || lock_token(l) != token) {
        char text[96];
        snprintf(text, sizeof(text), "FENCED token %llu is not the holder of the lock",
                 (unsigned long long)token);
        return keel__kvc_done(r_err(c->reply, text));
    }
    call_t in = keel__kvc_inner_call(c, 3);
    const cmd_t *cmd = NULL;
    rc = keel__kvc_precheck(&in, c->kv->cfg.argc_max, &cmd);
    if (rc != 0)
        return keel__kvc_done(rc);
    return keel__kvc_run(cmd, &in);
}
