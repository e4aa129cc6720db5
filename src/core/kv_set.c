/* kv_set.c - the set commands of Redis 7.0: SADD SREM SISMEMBER SMISMEMBER SMEMBERS SCARD
   SPOP SRANDMEMBER SMOVE SINTER SINTERCARD SINTERSTORE SUNION SUNIONSTORE SDIFF SDIFFSTORE
   SSCAN. */
#include "core/kv_coll.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Texts, replies and the order of checks follow Redis 7.0's t_set.c (checked against
 * redis-server 7.0.15 by tests/system/test_redis_diff.py). Members are items without a
 * value. SPOP's choice comes from the entry (keel__kc_random), so every replica removes the
 * same members; SRANDMEMBER's from the read.
 */

#define T KEEL__KV_TYPE_SET

/* Redis 7.0 keeps a set of integers as an intset up to 512 members, else a hashtable. */
static void note(keel__kc_t *t, const uint8_t *m, size_t n)
{
    int64_t v;
    if (keel__kc_count(t) > KEEL__KC_SET_INTSET_ENTRIES || keel_parse_i64(m, n, &v) != 0)
        t->hashtable = 1;
}

/* ---- SADD, SREM -------------------------------------------------------------------------- */

/*
 * Whether every member argv[2..] is in (want 1) or none is in (want 0) key argv[1], an inline
 * set: SADD and SREM that would change nothing answer 0 without unpacking it.
 */
static int inline_all(const call_t *c, int want)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL || !keel__kv_inline(e) || c->lens[1] > c->kv->cfg.key_bytes_max)
        return 0;
    for (size_t i = 2; i < c->argc; i++)
        if (c->lens[i] > c->kv->cfg.value_bytes_max ||
            keel__ks_inline_has(e, c->argv[i], c->lens[i]) != want)
            return 0;
    return 1;
}

int keel__ks_cmd_sadd(const call_t *c)
{
    if (inline_all(c, 1)) {
        r_int(c->reply, 0);
        return 0;
    }
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL, *fresh = NULL;
    keel__kc_t *t;
    int dead, rc = keel__kc_wlookup(c, c->argv[1], c->lens[1], T, &link, &dead, &t);
    if (rc == 0)
        rc = keel__kvc_check_sizes(c, c->lens[1], 0);
    for (size_t i = 2; rc == 0 && i < c->argc; i++)
        if (c->lens[i] > c->kv->cfg.value_bytes_max)
            rc = r_err(c->reply, ERR_VALUE_SIZE);
    if (rc != 0)
        return keel__kvc_done(rc);
    size_t n = c->argc - 2, more = 0;
    for (size_t i = 2; t && i < c->argc; i++)
        more += keel__kc_find(t, c->argv[i], c->lens[i]) == NULL;
    if (t && more > KEEL__KC_ITEMS_MAX - keel__kc_count(t))
        return keel__kvc_done(r_err(c->reply, ERR_KC_FULL));
    if (t && more == 0) {
        r_int(c->reply, 0);
        return 0;
    }
    if (t == NULL) {
        if (!dead && (rc = keel__kvc_check_room(c, 1)) != 0)
            return keel__kvc_done(rc);
        if ((rc = keel__kc_prepare(c, c->argv[1], c->lens[1], T, &fresh)) != 0)
            return rc;
    }
    keel__kc_t *dst = t ? t : keel__kv_obj(fresh);
    keel__kc_item_t **items = calloc(n, sizeof(*items));
    for (size_t i = 0; items && i < n; i++) {
        if (t && keel__kc_find(t, c->argv[2 + i], c->lens[2 + i]))
            continue;
        items[i] = keel__kc_item_new(dst, c->argv[2 + i], c->lens[2 + i], NULL, 0);
        if (items[i] == NULL) {
            for (size_t k = 0; k < i; k++)
                keel__kc_item_free(items[k]);
            free(items);
            items = NULL;
        }
    }
    size_t before = keel__kc_bytes(dst);
    if (items && keel__kc_reserve(&dst, items, n) != 0) {
        for (size_t k = 0; k < n; k++)
            keel__kc_item_free(items[k]);
        free(items);
        items = NULL;
    }
    if (items == NULL) {
        if (fresh)
            keel__kv_type_set.free(keel__kv_obj(fresh)), free(fresh);
        return KEEL_ENOMEM;
    }
    keel__kv_set_obj(t ? *link : fresh, dst); /* the table may have moved */
    if (fresh) {
        keel__kc_link(c, link, dead, fresh);
        before = keel__kc_bytes(dst);
    }
    int64_t added = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i] == NULL)
            continue;
        if (keel__kc_find(dst, keel__kc_f(items[i]), keel__kc_fl(items[i]))) {
            keel__kc_item_free(items[i]); /* a member named twice */
            continue;
        }
        note(dst, keel__kc_f(items[i]), keel__kc_fl(items[i]));
        added += keel__kc_put(dst, items[i]);
    }
    note(dst, (const uint8_t *)"0", 1);
    free(items);
    keel__kc_touch(c, c->argv[1], c->lens[1], before);
    kv->revision++;
    r_int(c->reply, added);
    return 0;
}

int keel__ks_cmd_srem(const call_t *c)
{
    if (inline_all(c, 0)) {
        r_int(c->reply, 0);
        return 0;
    }
    keel__kv_entry_t **link = NULL;
    keel__kc_t *t;
    int dead;
    int rc = keel__kc_wlookup(c, c->argv[1], c->lens[1], T, &link, &dead, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    int64_t n = 0;
    size_t before = t ? keel__kc_bytes(t) : 0;
    for (size_t i = 2; t && i < c->argc && keel__kc_count(t) > 0; i++)
        n += keel__kc_del(t, c->argv[i], c->lens[i]);
    if (n > 0) {
        keel__kc_touch(c, c->argv[1], c->lens[1], before);
        c->w->revision++;
    }
    r_int(c->reply, n);
    return 0;
}

/* ---- reads -------------------------------------------------------------------------------- */

static int member(const keel__kc_t *t, const call_t *c, size_t i)
{
    return t && keel__kc_find(t, c->argv[i], c->lens[i]) != NULL;
}

/*
 * SISMEMBER, SMISMEMBER and SCARD answer an inline set (kv_set_inline.c) from its entry, a
 * binary search, without unpacking it: key argv[1]'s entry, and 1 if they did.
 */
enum { IN_SISMEMBER, IN_SMISMEMBER, IN_SCARD };

static int in_place(const call_t *c, const keel__kv_entry_t **e, int cmd)
{
    *e = keel__kvc_lookup(c, 1);
    if (*e == NULL || !keel__kv_inline(*e))
        return 0;
    if (cmd == IN_SCARD)
        r_int(c->reply, (int64_t)keel__ks_inline_count(*e));
    else if (cmd == IN_SISMEMBER)
        r_int(c->reply, keel__ks_inline_has(*e, c->argv[2], c->lens[2]));
    else {
        r_array(c->reply, c->argc - 2);
        for (size_t i = 2; i < c->argc; i++)
            r_int(c->reply, keel__ks_inline_has(*e, c->argv[i], c->lens[i]));
    }
    return 1;
}

int keel__ks_cmd_sismember(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (in_place(c, &e, IN_SISMEMBER))
        return 0;
    const keel__kc_t *t;
    int rc = keel__kc_of(c, e, T, &t);
    if (rc == 0)
        r_int(c->reply, member(t, c, 2));
    return keel__kvc_done(rc);
}

int keel__ks_cmd_smismember(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (in_place(c, &e, IN_SMISMEMBER))
        return 0;
    const keel__kc_t *t;
    int rc = keel__kc_of(c, e, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    r_array(c->reply, c->argc - 2);
    for (size_t i = 2; i < c->argc; i++)
        r_int(c->reply, member(t, c, i));
    return 0;
}

int keel__ks_cmd_scard(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (in_place(c, &e, IN_SCARD))
        return 0;
    const keel__kc_t *t;
    int rc = keel__kc_of(c, e, T, &t);
    if (rc == 0)
        r_int(c->reply, t ? (int64_t)keel__kc_count(t) : 0);
    return keel__kvc_done(rc);
}

static void r_members(reply_t *o, const keel__kc_t *t)
{
    r_array(o, t ? keel__kc_count(t) : 0);
    for (const keel__kc_item_t *it = t ? keel__kc_first(t) : NULL; it && !o->failed;
         it = keel__kc_next(t, it))
        r_bulk(o, keel__kc_f(it), keel__kc_fl(it));
}

int keel__ks_cmd_smembers(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc == 0)
        r_members(c->reply, t);
    return keel__kvc_done(rc);
}

int keel__ks_srandmember_syntax(const call_t *c)
{
    int64_t l;
    if (c->argc > 3)
        return r_err(c->reply, ERR_SYNTAX);
    return c->argc == 3 ? keel__kc_parse_count(c, 2, &l) : 0;
}

int keel__ks_cmd_srandmember(const call_t *c)
{
    return keel__kc_rand_reply(c, T, 0);
}

int keel__ks_cmd_sscan(const call_t *c)
{
    return keel__kc_scan_cmd(c, T);
}

/* ---- SPOP ------------------------------------------------------------------------------------ */

int keel__ks_spop_syntax(const call_t *c)
{
    int64_t l;
    if (c->argc > 3)
        return r_err(c->reply, ERR_SYNTAX);
    if (c->argc == 3 && (keel_parse_i64(c->argv[2], c->lens[2], &l) != 0 || l < 0))
        return r_err(c->reply, "ERR value is out of range, must be positive");
    return 0;
}

/* qsort order of item pointers, highest address first */
static int by_address_desc(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const keel__kc_item_t *const *)a;
    uintptr_t y = (uintptr_t) * (const keel__kc_item_t *const *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int keel__ks_cmd_spop(const call_t *c)
{
    keel__kv_entry_t **link = NULL;
    keel__kc_t *t;
    int dead;
    int rc = keel__kc_wlookup(c, c->argv[1], c->lens[1], T, &link, &dead, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    int64_t l = 1;
    if (c->argc == 3)
        keel_parse_i64(c->argv[2], c->lens[2], &l);
    if (t == NULL || l == 0) {
        if (c->argc == 3)
            r_array(c->reply, 0);
        else
            r_nil(c->reply);
        return 0;
    }
    const keel__kc_item_t **picked = NULL;
    uint64_t seed = keel__kc_random(c, 0x73706f70);
    if (keel__kc_sample(t, (size_t)l, seed, &picked) != 0)
        return KEEL_ENOMEM;
    size_t n = (uint64_t)l < keel__kc_count(t) ? (size_t)l : keel__kc_count(t);
    if (c->argc == 3)
        r_array(c->reply, n);
    for (size_t i = 0; i < n; i++)
        r_bulk(c->reply, keel__kc_f(picked[i]), keel__kc_fl(picked[i]));
    size_t before = keel__kc_bytes(t);
    /* removing one leaves valid the pointers to items before it (packed) or all (big):
       remove the last first */
    qsort(picked, n, sizeof(*picked), by_address_desc);
    for (size_t i = 0; i < n; i++)
        keel__kc_del(t, keel__kc_f(picked[i]), keel__kc_fl(picked[i]));
    free(picked);
    keel__kc_touch(c, c->argv[1], c->lens[1], before);
    c->w->revision++;
    return 0;
}

/* ---- SMOVE ------------------------------------------------------------------------------------
 */

int keel__ks_cmd_smove(const call_t *c)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **slink = NULL, **dlink = NULL, *fresh = NULL;
    keel__kc_t *s, *d;
    int sdead, ddead;
    int rc = keel__kc_wlookup(c, c->argv[1], c->lens[1], T, &slink, &sdead, &s);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (s == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    rc = keel__kc_wlookup(c, c->argv[2], c->lens[2], T, &dlink, &ddead, &d);
    if (rc != 0)
        return keel__kvc_done(rc);
    const uint8_t *m = c->argv[3];
    size_t ml = c->lens[3];
    if (s == d) {
        r_int(c->reply, keel__kc_find(s, m, ml) != NULL);
        return 0;
    }
    if (keel__kc_find(s, m, ml) == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    rc = 0;
    if (d && keel__kc_find(d, m, ml) == NULL && keel__kc_count(d) >= KEEL__KC_ITEMS_MAX)
        return keel__kvc_done(r_err(c->reply, ERR_KC_FULL));
    if (d == NULL && (rc = keel__kvc_check_sizes(c, c->lens[2], 0)) == 0 && !ddead)
        rc = keel__kvc_check_room(c, 1);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (d == NULL && (rc = keel__kc_prepare(c, c->argv[2], c->lens[2], T, &fresh)) != 0)
        return rc;
    keel__kc_t *dst = d ? d : keel__kv_obj(fresh);
    keel__kv_entry_t *de = d ? *dlink : fresh; /* entries stay put when others go */
    size_t dbefore = keel__kc_bytes(dst);
    keel__kc_item_t *it = keel__kc_item_new(dst, m, ml, NULL, 0);
    if (it == NULL || keel__kc_reserve(&dst, &it, 1) != 0) {
        keel__kc_item_free(it);
        if (fresh)
            keel__kv_type_set.free(keel__kv_obj(fresh)), free(fresh);
        return KEEL_ENOMEM;
    }
    keel__kv_set_obj(de, dst); /* the table may have moved */
    /* the member leaves src first (its key may go), then joins dst */
    size_t sbefore = keel__kc_bytes(s);
    keel__kc_del(s, m, ml);
    keel__kc_touch(c, c->argv[1], c->lens[1], sbefore);
    if (fresh) {
        /* the source's deletion may have moved links: find dst's place again */
        uint64_t h = keel__kv_hash(kv, c->argv[2], c->lens[2]);
        keel__kv_find(kv, c->argv[2], c->lens[2], h, &dlink);
        keel__kc_link(c, dlink, ddead, fresh);
        dbefore = keel__kc_bytes(dst);
    }
    if (keel__kc_find(dst, m, ml)) {
        keel__kc_item_free(it);
    } else {
        note(dst, m, ml);
        keel__kc_put(dst, it);
        note(dst, (const uint8_t *)"0", 1);
    }
    keel__kc_touch(c, c->argv[2], c->lens[2], dbefore);
    kv->revision++;
    r_int(c->reply, 1);
    return 0;
}

/* ---- SINTER, SUNION, SDIFF and their STORE and CARD forms ----------------------------------- */

enum { OP_INTER, OP_UNION, OP_DIFF };

/*
 * The sets named by argv[from .. from + n): 0 and sets[] (NULL for an absent key), REPLIED on
 * the first key of another type (Redis checks them all, in order), or KEEL_ENOMEM.
 */
static int gather(const call_t *c, size_t from, size_t n, const keel__kc_t **sets)
{
    for (size_t i = 0; i < n; i++) {
        int rc = keel__kc_read(c, from + i, T, &sets[i]);
        if (rc != 0)
            return rc; /* REPLIED, or KEEL_ENOMEM (an inline set not unpacked) */
    }
    return 0;
}

/* Whether item it of sets[skip] belongs to the result of op over sets. */
static int keep(int op, const keel__kc_t **sets, size_t n, size_t skip, const keel__kc_item_t *it)
{
    for (size_t k = 0; k < n; k++) {
        if (k == skip)
            continue;
        int in = sets[k] && keel__kc_find(sets[k], keel__kc_f(it), keel__kc_fl(it)) != NULL;
        if (op == OP_INTER && !in)
            return 0;
        if (op == OP_DIFF && in)
            return 0;
    }
    return 1;
}

/*
 * Builds op over sets into a new table: 0 and *out (owned; NULL for an empty result), or
 * KEEL_ENOMEM. limit (> 0): stop at that many members (SINTERCARD).
 */
static int compute(const call_t *c, int op, const keel__kc_t **sets, size_t n, size_t limit,
                   keel__kc_t **out)
{
    *out = NULL;
    keel__kc_t *r = keel__kc_new(keel__kc_random(c, 0x73746f72));
    if (r == NULL)
        return KEEL_ENOMEM;
    size_t base = 0; /* INTER: walk the smallest set; DIFF: the first */
    for (size_t i = 0; op == OP_INTER && i < n; i++) {
        if (sets[i] == NULL) {
            keel__kc_free(r);
            return 0;
        }
        if (keel__kc_count(sets[i]) < keel__kc_count(sets[base]))
            base = i;
    }
    for (size_t i = 0; i < n; i++) {
        if (sets[i] == NULL || (op != OP_UNION && i != base))
            continue;
        for (const keel__kc_item_t *it = keel__kc_first(sets[i]); it;
             it = keel__kc_next(sets[i], it)) {
            if (limit && keel__kc_count(r) >= limit)
                break;
            if (op != OP_UNION && !keep(op, sets, n, i, it))
                continue;
            if (op == OP_UNION && keel__kc_find(r, keel__kc_f(it), keel__kc_fl(it)))
                continue;
            keel__kc_item_t *x = keel__kc_item_new(r, keel__kc_f(it), keel__kc_fl(it), NULL, 0);
            if (x == NULL || keel__kc_reserve(&r, &x, 1) != 0) {
                keel__kc_item_free(x);
                keel__kc_free(r);
                return KEEL_ENOMEM;
            }
            note(r, keel__kc_f(x), keel__kc_fl(x));
            keel__kc_put(r, x);
        }
        if (op != OP_UNION)
            break;
    }
    note(r, (const uint8_t *)"0", 1);
    if (keel__kc_count(r) == 0) {
        keel__kc_free(r);
        return 0;
    }
    *out = r;
    return 0;
}

/* SINTER / SUNION / SDIFF key...: the members (hash order of the result). */
static int op_read(const call_t *c, int op)
{
    size_t n = c->argc - 1;
    const keel__kc_t **sets = calloc(n, sizeof(*sets));
    if (sets == NULL)
        return c->w ? KEEL_ENOMEM : (r_err(c->reply, "OOM keel: no memory for the sets"), 0);
    keel__kc_t *r = NULL;
    int rc = gather(c, 1, n, sets);
    if (rc == 0 && op == OP_DIFF && sets[0] == NULL) {
        r_array(c->reply, 0);
    } else if (rc == 0) {
        rc = compute(c, op, sets, n, 0, &r);
        if (rc == 0)
            r_members(c->reply, r);
        else if (c->w == NULL)
            rc = r_err(c->reply, "OOM keel: no memory for the result");
    }
    keel__kc_free(r);
    free(sets);
    return keel__kvc_done(rc);
}

int keel__ks_cmd_sinter(const call_t *c)
{
    return op_read(c, OP_INTER);
}

int keel__ks_cmd_sunion(const call_t *c)
{
    return op_read(c, OP_UNION);
}

int keel__ks_cmd_sdiff(const call_t *c)
{
    return op_read(c, OP_DIFF);
}

/*
 * STORE: argv[1] gets the result (any old value, deadline and lease replaced, as Redis's
 * setKey), or is deleted when the result is empty. :cardinality.
 */
static int op_store(const call_t *c, int op)
{
    keel_kv_t *kv = c->w;
    size_t n = c->argc - 2;
    const keel__kc_t **sets = calloc(n, sizeof(*sets));
    if (sets == NULL)
        return KEEL_ENOMEM;
    keel__kc_t *r = NULL;
    int rc = gather(c, 2, n, sets);
    if (rc == 0 && !(op == OP_DIFF && sets[0] == NULL))
        rc = compute(c, op, sets, n, 0, &r);
    free(sets);
    if (rc != 0)
        return keel__kvc_done(rc);
    const uint8_t *key = c->argv[1];
    size_t len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *old = keel__kvc_wfind(c, key, len, h, &link, &dead);
    if (r == NULL) {
        if (old) {
            keel__kv_unlink(kv, link);
            kv->revision++;
        }
        r_int(c->reply, 0);
        return 0;
    }
    if ((rc = keel__kvc_check_sizes(c, len, 0)) != 0 ||
        (!old && !dead && (rc = keel__kvc_check_room(c, 1)) != 0)) {
        keel__kc_free(r);
        return keel__kvc_done(rc);
    }
    keel__kv_entry_t *e = keel__kv_entry_new_obj(key, len, h, T, r);
    if (e == NULL) {
        keel__kc_free(r);
        return KEEL_ENOMEM;
    }
    uint64_t rev = kv->revision + 1;
    e->create_revision = old ? old->create_revision : rev;
    size_t count = keel__kc_count(r);
    if (old || dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    kv->bytes += keel__kc_bytes(r);
    keel__kvc_set_version(kv, e, rev);
    kv->revision = rev;
    keel__ks_note(c, key, len); /* a small result of integers goes inline after it */
    r_int(c->reply, (int64_t)count);
    return 0;
}

int keel__ks_cmd_sinterstore(const call_t *c)
{
    return op_store(c, OP_INTER);
}

int keel__ks_cmd_sunionstore(const call_t *c)
{
    return op_store(c, OP_UNION);
}

int keel__ks_cmd_sdiffstore(const call_t *c)
{
    return op_store(c, OP_DIFF);
}

/* SINTERCARD numkeys key [key ...] [LIMIT limit] */
int keel__ks_sintercard_syntax(const call_t *c)
{
    int64_t n, limit;
    if (keel_parse_i64(c->argv[1], c->lens[1], &n) != 0 || n < 1)
        return r_err(c->reply, "ERR numkeys should be greater than 0");
    if ((uint64_t)n > c->argc - 2)
        return r_err(c->reply, "ERR Number of keys can't be greater than number of args");
    for (size_t i = 2 + (size_t)n; i < c->argc; i++) {
        if (keel__kvc_arg_is(c, i, "LIMIT") && i + 1 < c->argc) {
            i++;
            if (keel_parse_i64(c->argv[i], c->lens[i], &limit) != 0 || limit < 0)
                return r_err(c->reply, "ERR LIMIT can't be negative");
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__ks_cmd_sintercard(const call_t *c)
{
    int64_t n = 0, limit = 0;
    keel_parse_i64(c->argv[1], c->lens[1], &n);
    for (size_t i = 2 + (size_t)n; i + 1 < c->argc; i += 2)
        keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &limit);
    const keel__kc_t **sets = calloc((size_t)n, sizeof(*sets));
    if (sets == NULL)
        return c->w ? KEEL_ENOMEM : (r_err(c->reply, "OOM keel: no memory for the sets"), 0);
    int rc = gather(c, 2, (size_t)n, sets);
    if (rc == 0) {
        /* count without building: walk the smallest set, stop at the limit */
        size_t base = 0, card = 0;
        int empty = 0;
        for (size_t i = 0; i < (size_t)n; i++) {
            if (sets[i] == NULL)
                empty = 1;
            else if (sets[base] == NULL || keel__kc_count(sets[i]) < keel__kc_count(sets[base]))
                base = i;
        }
        for (const keel__kc_item_t *it = empty ? NULL : keel__kc_first(sets[base]); it;
             it = keel__kc_next(sets[base], it)) {
            if (limit && card >= (uint64_t)limit)
                break;
            card += keep(OP_INTER, sets, (size_t)n, base, it);
        }
        r_int(c->reply, (int64_t)card);
    }
    free(sets);
    return keel__kvc_done(rc);
}
