/* kv_strings.c - the string commands: SET, GETSET, MSET, DEL, INCR family, APPEND, reads,
   KEEL.GETV and KEEL.CAS. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SET and GETSET --------------------------------------------------------- */

enum {
    SET_NX = 1,
    SET_XX = 2,
    SET_GET = 4,
    SET_KEEPTTL = 8,
    SET_EX = 16,
    SET_PX = 32,
    SET_EXAT = 64,
    SET_PXAT = 128
};
#define SET_EXPIRE (SET_EX | SET_PX | SET_EXAT | SET_PXAT)

/*
 * SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL], parsed
 * as Redis's parseExtendedStringArgumentsOrReply does (a repeated option is
 * fine, conflicting ones are a syntax error, the last expire value counts).
 * *when gets the expire argument in ms (EX/EXAT times 1000), relative for
 * EX/PX, absolute for EXAT/PXAT.
 */
static int set_parse(const call_t *c, unsigned *flags, int64_t *when)
{
    static const struct {
        const char *word;
        unsigned flag;
    } expire[] = {{"EX", SET_EX}, {"PX", SET_PX}, {"EXAT", SET_EXAT}, {"PXAT", SET_PXAT}};
    unsigned f = 0;
    size_t expire_arg = 0;
    for (size_t i = 3; i < c->argc; i++) {
        int more = i + 1 < c->argc, ok = 0;
        if (keel__kvc_arg_is(c, i, "NX") && !(f & SET_XX)) {
            f |= SET_NX, ok = 1;
        } else if (keel__kvc_arg_is(c, i, "XX") && !(f & SET_NX)) {
            f |= SET_XX, ok = 1;
        } else if (keel__kvc_arg_is(c, i, "GET")) {
            f |= SET_GET, ok = 1;
        } else if (keel__kvc_arg_is(c, i, "KEEPTTL") && !(f & SET_EXPIRE)) {
            f |= SET_KEEPTTL, ok = 1;
        } else {
            for (size_t k = 0; k < 4 && !ok; k++) {
                unsigned other = SET_EXPIRE & ~expire[k].flag;
                if (keel__kvc_arg_is(c, i, expire[k].word) && !(f & (other | SET_KEEPTTL)) &&
                    more) {
                    f |= expire[k].flag, ok = 1;
                    expire_arg = ++i;
                }
            }
        }
        if (!ok)
            return r_err(c->reply, ERR_SYNTAX);
    }
    if (f & SET_EXPIRE) {
        int64_t t;
        if (keel_parse_i64(c->argv[expire_arg], c->lens[expire_arg], &t) != 0)
            return r_err(c->reply, ERR_NOT_INT);
        if (t <= 0 || ((f & (SET_EX | SET_EXAT)) && t > INT64_MAX / 1000))
            return r_err(c->reply, "ERR invalid expire time in 'set' command");
        *when = f & (SET_EX | SET_EXAT) ? t * 1000 : t;
    }
    *flags = f;
    return 0;
}

int keel__kvc_set_syntax(const call_t *c)
{
    unsigned f;
    int64_t when;
    return set_parse(c, &f, &when);
}

/*
 * Writes argv[1] -> argv[val_arg] as SET does (e, link, dead from keel__kvc_wfind): the
 * deadline becomes `expire_ms` (0: none), or stays with `keep_ttl`. The
 * caller has checked sizes and room and replied. 0 or KEEL_ENOMEM (nothing
 * changed).
 */
int keel__kvc_put_value(const call_t *c, size_t val_arg, keel__kv_entry_t **link,
                        keel__kv_entry_t *e, int dead, uint64_t h, uint64_t expire_ms, int keep_ttl)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1], *val = c->argv[val_arg];
    size_t key_len = c->lens[1], val_len = c->lens[val_arg];
    uint64_t rev = kv->revision + 1;
    keel__kv_entry_t *made = NULL;
    int rc = expire_ms ? keel__kv_heap_reserve(kv, 1) : 0;
    if (rc == 0 && e) {
        rc = keel__kvc_overwrite(kv, link, val, val_len, rev);
        made = *link;
    } else if (rc == 0) {
        rc = keel__kvc_create(kv, link, dead, key, key_len, h, val, val_len, rev, &made);
    }
    if (rc != 0)
        return rc;
    if (!keep_ttl) {
        keel__kv_set_expire(kv, made, expire_ms);
        keel__kv_detach(made); /* a write without the lease leaves it (as in etcd) */
    }
    kv->revision = rev;
    return 0;
}

/* The common body of SET and GETSET; `when` as set_parse gives it. */
static int set_value(const call_t *c, unsigned f, int64_t when)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    int rc = keel__kvc_check_sizes(c, key_len, c->lens[2]);
    if (rc != 0)
        return keel__kvc_done(rc);
    uint64_t expire_ms = 0;
    if (f & (SET_EX | SET_PX)) {
        if ((uint64_t)when > (uint64_t)INT64_MAX - c->now)
            return keel__kvc_done(r_err(c->reply, "ERR invalid expire time in 'set' command"));
        expire_ms = c->now + (uint64_t)when;
    } else if (f & (SET_EXAT | SET_PXAT)) {
        expire_ms = (uint64_t)when;
    }
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    if ((f & SET_GET) && e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    int skip = (f & SET_NX && e) || (f & SET_XX && !e);
    if (!e && !dead && !skip && (rc = keel__kvc_check_room(c, 1)) != 0)
        return keel__kvc_done(rc);
    if (f & SET_GET)
        r_value(c->reply, e);
    else if (skip)
        r_nil(c->reply);
    else
        r_ok(c->reply);
    if (skip)
        return 0;
    return keel__kvc_put_value(c, 2, link, e, dead, h, expire_ms, (f & SET_KEEPTTL) != 0);
}

int keel__kvc_cmd_set(const call_t *c)
{
    unsigned f = 0;
    int64_t when = 0;
    int rc = set_parse(c, &f, &when);
    return rc != 0 ? keel__kvc_done(rc) : set_value(c, f, when);
}

int keel__kvc_cmd_getset(const call_t *c)
{
    return set_value(c, SET_GET, 0);
}

/* ---- MSET, DEL ---------------------------------------------------------------- */

int keel__kvc_mset_syntax(const call_t *c)
{
    if (c->argc % 2 == 0)
        return r_err_arg(c->reply, "ERR wrong number of arguments for '",
                         (const uint8_t *)c->cmd_lname, strlen(c->cmd_lname), "' command");
    return 0;
}

/*
 * All new entries are allocated before any is linked, so an MSET either
 * happens whole or (ENOMEM) not at all. A repeated key is written in argument
 * order, so the last value wins, as in Redis. keys_max counts every absent
 * key, a repeated absent key twice (conservative, and deterministic). MSETNX (nx) sets
 * nothing and replies `:0` when any of its keys is live, else `:1`.
 */
static int mset(const call_t *c, int nx)
{
    keel_kv_t *kv = c->w;
    size_t pairs = (c->argc - 1) / 2, absent = 0;
    int rc = 0;
    for (size_t i = 0; i < pairs; i++) {
        const uint8_t *key = c->argv[1 + 2 * i];
        size_t key_len = c->lens[1 + 2 * i];
        if ((rc = keel__kvc_check_sizes(c, key_len, c->lens[2 + 2 * i])) != 0)
            return keel__kvc_done(rc);
        absent += keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL) == NULL;
    }
    if (nx) {
        for (size_t i = 0; i < pairs; i++) {
            if (keel__kvc_lookup(c, 1 + 2 * i) != NULL) {
                r_int(c->reply, 0);
                return 0;
            }
        }
    }
    if ((rc = keel__kvc_check_room(c, absent)) != 0)
        return keel__kvc_done(rc);
    keel__kv_entry_t **fresh = calloc(pairs, sizeof(*fresh));
    if (fresh == NULL)
        return KEEL_ENOMEM;
    uint64_t rev = kv->revision + 1;
    for (size_t i = 0; i < pairs && rc == 0; i++) {
        const uint8_t *key = c->argv[1 + 2 * i], *val = c->argv[2 + 2 * i];
        size_t key_len = c->lens[1 + 2 * i], val_len = c->lens[2 + 2 * i];
        uint64_t h = keel__kv_hash(kv, key, key_len);
        fresh[i] = keel__kv_entry_new(key, key_len, h, val, val_len, val_len);
        rc = fresh[i] ? 0 : KEEL_ENOMEM;
    }
    if (rc != 0)
        goto err_after_fresh;
    if (nx)
        r_int(c->reply, 1);
    else
        r_ok(c->reply);
    for (size_t i = 0; i < pairs; i++) {
        keel__kv_entry_t *e = fresh[i], **link = NULL;
        keel__kv_entry_t *old = keel__kv_find(
            kv, keel__kv_key(e), e->key_len, keel__kv_hash(kv, keel__kv_key(e), e->key_len), &link);
        e->create_revision = old && keel__kv_alive(kv, old, c->now) ? old->create_revision : rev;
        keel__kvc_set_version(kv, e, rev);
        if (old)
            keel__kv_replace(kv, link, e);
        else
            keel__kv_insert(kv, e);
    }
    kv->revision = rev;
    free(fresh);
    return 0;
err_after_fresh:
    for (size_t i = 0; i < pairs; i++)
        free(fresh[i]);
    free(fresh);
    return rc;
}

int keel__kvc_cmd_mset(const call_t *c)
{
    return mset(c, 0);
}

int keel__kvc_cmd_msetnx(const call_t *c)
{
    return mset(c, 1);
}

int keel__kvc_cmd_del(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t n = 0, removed = 0;
    for (size_t i = 1; i < c->argc; i++) {
        keel__kv_entry_t **link = NULL;
        uint64_t h = keel__kv_hash(kv, c->argv[i], c->lens[i]);
        keel__kv_entry_t *e = keel__kv_find(kv, c->argv[i], c->lens[i], h, &link);
        if (e != NULL) {
            /* an expired key is not counted, but goes (a change, like a sweep) */
            n += keel__kv_alive(kv, e, c->now);
            keel__kv_unlink(kv, link);
            removed++;
        }
    }
    if (removed > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

/* ---- FLUSHALL, FLUSHDB ---------------------------------------------------------- */

/* [ASYNC | SYNC]: both mean "now", in the entry that applies it. */
int keel__kvc_flush_syntax(const call_t *c)
{
    if (c->argc == 1 ||
        (c->argc == 2 && (keel__kvc_arg_is(c, 1, "ASYNC") || keel__kvc_arg_is(c, 1, "SYNC"))))
        return 0;
    return r_err(c->reply, "ERR syntax error");
}

typedef struct flush_list {
    const keel__kv_entry_t **e;
    size_t n;
} flush_list_t;

static int flush_collect(void *data, const keel__kv_entry_t *e)
{
    flush_list_t *l = data;
    l->e[l->n++] = e;
    return 0;
}

/*
 * Every key goes, one deletion each in the change history (a watcher sees them all), at
 * one revision. The keys are listed first and deleted by lookup: deleting shrinks the
 * table, which a walk of its buckets would not survive. Leases and locks are not keys and
 * stay (their keys go).
 */
int keel__kvc_cmd_flushall(const call_t *c)
{
    keel_kv_t *kv = c->w;
    flush_list_t l = {NULL, 0};
    if (kv->count > 0) {
        l.e = malloc(kv->count * sizeof(*l.e));
        if (l.e == NULL)
            return KEEL_ENOMEM;
        keel__kv_each(kv, flush_collect, &l);
    }
    for (size_t i = 0; i < l.n; i++) {
        keel__kv_entry_t **link = NULL;
        keel__kv_entry_t *e =
            keel__kv_find(kv, keel__kv_key(l.e[i]), l.e[i]->key_len,
                          keel__kv_hash(kv, keel__kv_key(l.e[i]), l.e[i]->key_len), &link);
        assert(e == l.e[i]);
        keel__kv_unlink(kv, link);
    }
    free(l.e);
    if (l.n > 0)
        kv->revision++;
    r_ok(c->reply);
    return 0;
}

/* ---- INCR family, APPEND ------------------------------------------------------ */

int keel__kvc_incrby_syntax(const call_t *c)
{
    int64_t d;
    return keel_parse_i64(c->argv[2], c->lens[2], &d) != 0 ? r_err(c->reply, ERR_NOT_INT) : 0;
}

int keel__kvc_decrby_syntax(const call_t *c)
{
    int64_t d;
    if (keel_parse_i64(c->argv[2], c->lens[2], &d) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return d == INT64_MIN ? r_err(c->reply, "ERR decrement would overflow") : 0;
}

/* Redis incrDecrCommand: the stored value must parse as an int64. */
static int incr_by(const call_t *c, int64_t delta)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    int64_t v = 0;
    int rc;
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    if (e && keel_parse_i64(keel__kv_cval(e), e->val_len, &v) != 0)
        return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
    if ((delta < 0 && v < 0 && delta < INT64_MIN - v) ||
        (delta > 0 && v > 0 && delta > INT64_MAX - v))
        return keel__kvc_done(r_err(c->reply, ERR_OVERFLOW));
    if (!e && ((rc = keel__kvc_check_sizes(c, key_len, 20)) != 0 ||
               (!dead && (rc = keel__kvc_check_room(c, 1)) != 0)))
        return keel__kvc_done(rc);
    v += delta;
    char text[20];
    size_t n = keel_fmt_i64(text, v);
    r_int(c->reply, v);
    uint64_t rev = kv->revision + 1;
    rc = e ? keel__kvc_overwrite(kv, link, (const uint8_t *)text, n, rev)
           : keel__kvc_create(kv, link, dead, key, key_len, h, (const uint8_t *)text, n, rev, NULL);
    if (rc == 0)
        kv->revision = rev;
    return rc;
}

int keel__kvc_cmd_incr(const call_t *c)
{
    return incr_by(c, 1);
}

int keel__kvc_cmd_decr(const call_t *c)
{
    return incr_by(c, -1);
}

int keel__kvc_cmd_incrby(const call_t *c)
{
    int64_t d = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &d);
    assert(rc == 0); /* keel__kvc_incrby_syntax ran */
    return incr_by(c, d);
}

int keel__kvc_cmd_decrby(const call_t *c)
{
    int64_t d = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &d);
    assert(rc == 0 && d != INT64_MIN); /* keel__kvc_decrby_syntax ran */
    return incr_by(c, -d);
}

int keel__kvc_cmd_append(const call_t *c)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1], *val = c->argv[2];
    size_t key_len = c->lens[1], val_len = c->lens[2];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    size_t total = (e ? e->val_len : 0) + val_len;
    int rc = keel__kvc_check_sizes(c, key_len, total);
    if (rc == 0 && !e && !dead)
        rc = keel__kvc_check_room(c, 1);
    if (rc != 0)
        return keel__kvc_done(rc);
    r_int(c->reply, (int64_t)total);
    uint64_t rev = kv->revision + 1;
    if (!e) {
        rc = keel__kvc_create(kv, link, dead, key, key_len, h, val, val_len, rev, NULL);
    } else if ((rc = keel__kv_reserve_value(kv, link, total, 1)) == 0) {
        e = *link;
        if (val_len)
            memcpy(keel__kv_val(e) + e->val_len, val, val_len);
        e->val_len = (uint32_t)total;
        keel__kvc_set_version(kv, e, rev);
        kv->bytes += val_len;
    }
    if (rc == 0)
        kv->revision = rev;
    return rc;
}

/* ---- reads ------------------------------------------------------------------- */

/* The live entry of key argv[i], or NULL (absent or past its deadline). */
const keel__kv_entry_t *keel__kvc_lookup(const call_t *c, size_t i)
{
    const keel_kv_t *kv = c->kv;
    const keel__kv_entry_t *e =
        keel__kv_find(kv, c->argv[i], c->lens[i], keel__kv_hash(kv, c->argv[i], c->lens[i]), NULL);
    return e && keel__kv_alive(kv, e, c->now) ? e : NULL;
}

/* A string command's view of key argv[i]: 0 and *out (NULL when absent), or REPLIED after
 * WRONGTYPE (the key holds another type). */
static int lookup_string(const call_t *c, size_t i, const keel__kv_entry_t **out)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return r_err(c->reply, ERR_WRONGTYPE);
    *out = e;
    return 0;
}

int keel__kvc_cmd_get(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (lookup_string(c, 1, &e) == 0)
        r_value(c->reply, e);
    return 0;
}

int keel__kvc_cmd_mget(const call_t *c)
{
    r_array(c->reply, c->argc - 1);
    for (size_t i = 1; i < c->argc && !c->reply->failed; i++) {
        const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
        r_value(c->reply, e && e->type == KEEL__KV_TYPE_STRING ? e : NULL); /* Redis: nil */
    }
    return 0;
}

int keel__kvc_cmd_exists(const call_t *c)
{
    int64_t n = 0;
    for (size_t i = 1; i < c->argc; i++)
        n += keel__kvc_lookup(c, i) != NULL;
    r_int(c->reply, n);
    return 0;
}

int keel__kvc_cmd_strlen(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (lookup_string(c, 1, &e) == 0)
        r_int(c->reply, e ? e->val_len : 0);
    return 0;
}

int keel__kvc_cmd_dbsize(const call_t *c)
{
    r_int(c->reply, (int64_t)c->kv->count);
    return 0;
}

/* KEEL.GETV key -> [value, version], or a null array when absent. */
int keel__kvc_cmd_getv(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (lookup_string(c, 1, &e) != 0)
        return 0;
    if (e == NULL) {
        r_nil_array(c->reply);
        return 0;
    }
    r_array(c->reply, 2);
    r_value(c->reply, e);
    r_int(c->reply, (int64_t)e->version);
    return 0;
}

/* KEEL.MGETV key [key ...] -> for each key [value, version], or a null array when absent:
 * GETV of several keys in one read (one request, one consistent view). A key holding
 * another type fails the whole command with WRONGTYPE, as GETV does for one. */
int keel__kvc_cmd_mgetv(const call_t *c)
{
    for (size_t i = 1; i < c->argc; i++) {
        const keel__kv_entry_t *e;
        if (lookup_string(c, i, &e) != 0)
            return 0;
    }
    r_array(c->reply, c->argc - 1);
    for (size_t i = 1; i < c->argc && !c->reply->failed; i++) {
        const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
        if (e == NULL) {
            r_nil_array(c->reply);
            continue;
        }
        r_array(c->reply, 2);
        r_value(c->reply, e);
        r_int(c->reply, (int64_t)e->version);
    }
    return 0;
}

/* ---- KEEL.CAS ------------------------------------------------------------------ */

int keel__kvc_cas_syntax(const call_t *c)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v < 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/*
 * KEEL.CAS key expected_version value: sets the value (dropping any deadline,
 * as SET does) only if the key's version is expected_version (0: the key
 * must not exist) and replies with the new version; else
 * -CONFLICT expected version N, current M (M 0 when absent).
 */
int keel__kvc_cmd_cas(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t want = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &want);
    assert(rc == 0 && want >= 0);
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    uint64_t cur = e ? e->version : 0;
    if (cur != (uint64_t)want) {
        char text[96];
        snprintf(text, sizeof(text), "CONFLICT expected version %lld, current %llu",
                 (long long)want, (unsigned long long)cur);
        return keel__kvc_done(r_err(c->reply, text));
    }
    if ((rc = keel__kvc_check_sizes(c, key_len, c->lens[3])) != 0 ||
        (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return keel__kvc_done(rc);
    r_int(c->reply, (int64_t)(kv->revision + 1));
    return keel__kvc_put_value(c, 3, link, e, dead, h, 0, 0);
}
