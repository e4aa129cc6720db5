/* kv_expire.c - expiry: TTL, PTTL, EXPIRE family, PERSIST and the leader's sweep. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- expiry ------------------------------------------------------------------ */

/*
 * Deadlines are absolute milliseconds on the leader's clock: relative times
 * are added to the applying entry's time (c->now), so every node stores the
 * same deadline. Texts and rules from Redis 7.0 expire.c.
 */

/* TTL / PTTL: -2 absent, -1 no deadline, else the time left (TTL rounds to seconds). */
static int ttl_reply(const call_t *c, int ms)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL) {
        r_int(c->reply, -2);
    } else if (keel__kv_expire(e) == 0) {
        r_int(c->reply, -1);
    } else {
        uint64_t left = keel__kv_expire(e) - c->now; /* > 0: e is live */
        if (left > INT64_MAX)
            left = INT64_MAX;
        r_int(c->reply, ms ? (int64_t)left : (int64_t)((left + 500) / 1000));
    }
    return 0;
}

int keel__kvc_cmd_ttl(const call_t *c)
{
    return ttl_reply(c, 0);
}

int keel__kvc_cmd_pttl(const call_t *c)
{
    return ttl_reply(c, 1);
}

enum { EXP_NX = 1, EXP_XX = 2, EXP_GT = 4, EXP_LT = 8 };

/* Redis parseExtendedExpireArgumentsOrReply, then the integer argument. */
static int expire_parse(const call_t *c, unsigned *flags, int64_t *when)
{
    unsigned f = 0;
    for (size_t i = 3; i < c->argc; i++) {
        if (keel__kvc_arg_is(c, i, "NX")) {
            f |= EXP_NX;
        } else if (keel__kvc_arg_is(c, i, "XX")) {
            f |= EXP_XX;
        } else if (keel__kvc_arg_is(c, i, "GT")) {
            f |= EXP_GT;
        } else if (keel__kvc_arg_is(c, i, "LT")) {
            f |= EXP_LT;
        } else {
            return r_err_arg(c->reply, "ERR Unsupported option ", c->argv[i], c->lens[i], "");
        }
    }
    if ((f & EXP_NX) && (f & (EXP_XX | EXP_GT | EXP_LT)))
        return r_err(c->reply,
                     "ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((f & EXP_GT) && (f & EXP_LT))
        return r_err(c->reply, "ERR GT and LT options at the same time are not compatible");
    if (keel_parse_i64(c->argv[2], c->lens[2], when) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    *flags = f;
    return 0;
}

int keel__kvc_expire_syntax(const call_t *c)
{
    unsigned f;
    int64_t when;
    return expire_parse(c, &f, &when);
}

/* The argument in ms as an absolute deadline (Redis expireGenericCommand's checks). */
static int expire_when(const call_t *c, int64_t when, int seconds, int relative, int64_t *out)
{
    char text[96];
    if (seconds) {
        if (when > INT64_MAX / 1000 || when < INT64_MIN / 1000)
            goto invalid;
        when *= 1000;
    }
    int64_t base = relative ? (int64_t)c->now : 0;
    if (when > INT64_MAX - base)
        goto invalid;
    *out = when + base;
    return 0;
invalid:
    snprintf(text, sizeof(text), "ERR invalid expire time in '%s' command", c->cmd_lname);
    return r_err(c->reply, text);
}

/* a <= b for a signed deadline and a stored (unsigned) one. */
static int le_u(int64_t a, uint64_t b)
{
    return a < 0 || (uint64_t)a <= b;
}

/* Removes the entry at *link as a change of its own (revision + 1). */
static void delete_now(keel_kv_t *kv, keel__kv_entry_t **link)
{
    keel__kv_unlink(kv, link);
    kv->revision++;
}

static int expire_generic(const call_t *c, int seconds, int relative)
{
    keel_kv_t *kv = c->w;
    unsigned f = 0;
    int64_t when = 0;
    int rc = expire_parse(c, &f, &when);
    assert(rc == 0); /* keel__kvc_expire_syntax ran */
    if ((rc = expire_when(c, when, seconds, relative, &when)) != 0)
        return keel__kvc_done(rc);
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    /* No deadline counts as an infinite one for GT and LT. */
    uint64_t cur = keel__kv_expire(e);
    if (((f & EXP_NX) && cur) || ((f & EXP_XX) && !cur) ||
        ((f & EXP_GT) && (!cur || le_u(when, cur))) ||
        ((f & EXP_LT) && cur && !le_u(when, cur - 1))) {
        r_int(c->reply, 0);
        return 0;
    }
    if (le_u(when, c->now)) { /* already expired: the key goes now */
        delete_now(kv, link);
        r_int(c->reply, 1);
        return 0;
    }
    if (!cur && (rc = keel__kv_heap_reserve(kv, 1)) != 0)
        return rc;
    r_int(c->reply, 1);
    keel__kvc_set_version(kv, e, kv->revision + 1);
    kv->revision++;
    keel__kv_set_expire(kv, e, (uint64_t)when);
    return 0;
}

int keel__kvc_cmd_expire(const call_t *c)
{
    return expire_generic(c, 1, 1);
}

int keel__kvc_cmd_pexpire(const call_t *c)
{
    return expire_generic(c, 0, 1);
}

int keel__kvc_cmd_expireat(const call_t *c)
{
    return expire_generic(c, 1, 0);
}

int keel__kvc_cmd_pexpireat(const call_t *c)
{
    return expire_generic(c, 0, 0);
}

int keel__kvc_cmd_persist(const call_t *c)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e == NULL || keel__kv_expire(e) == 0) {
        r_int(c->reply, 0);
        return 0;
    }
    r_int(c->reply, 1);
    keel__kvc_set_version(kv, e, kv->revision + 1);
    kv->revision++;
    keel__kv_set_expire(kv, e, 0);
    return 0;
}

/* Two non-negative integers at argv[1] and argv[2]. */
int keel__kvc_two_counts_syntax(const call_t *c)
{
    int64_t a, b;
    if (keel_parse_i64(c->argv[1], c->lens[1], &a) != 0 || a < 0 ||
        keel_parse_i64(c->argv[2], c->lens[2], &b) != 0 || b < 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/*
 * A sweep's arguments (checked by keel__kvc_two_counts_syntax): what is due is what the
 * leader's now_ms and this entry's time both have passed; *max bounds the work.
 */
uint64_t keel__kvc_sweep_args(const call_t *c, int64_t *max)
{
    int64_t now_arg = 0;
    int rc = keel_parse_i64(c->argv[1], c->lens[1], &now_arg);
    rc |= keel_parse_i64(c->argv[2], c->lens[2], max);
    assert(rc == 0);
    return (uint64_t)now_arg < c->now ? (uint64_t)now_arg : c->now;
}

/*
 * KEEL.EXPIRE.SWEEP now_ms max_keys: deletes up to max_keys keys whose
 * deadline is <= min(now_ms, the entry's time), earliest deadline first (ties
 * by key bytes: the heap's total order), then, within the same budget,
 * expired lock records (invisible: an expired lock is free anyway), and
 * replies with the number removed; also drops the large SET values left half sent and
 * idle (kv_staged.c), outside the count. One change (revision + 1) if a key went,
 * like a DEL of those keys. Bounded work per entry: O(max_keys log n).
 */
int keel__kvc_cmd_expire_sweep(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t max;
    uint64_t limit = keel__kvc_sweep_args(c, &max);
    int64_t n = 0, keys = 0;
    keel__kv_entry_t *e;
    /* keys first, then expired lock records with what is left of the budget */
    for (int i = 0; i < 2; i++) {
        keel_kv_t *t = i == 0 ? kv : kv->locks;
        while (t && n < max && (e = keel__kv_heap_top(t)) != NULL && keel__kv_expire(e) <= limit) {
            keel__kv_entry_t **link = NULL;
            keel__kv_entry_t *f =
                keel__kv_find(t, keel__kv_key(e), e->key_len,
                              keel__kv_hash(t, keel__kv_key(e), e->key_len), &link);
            assert(f == e);
            keel__kv_unlink(t, link);
            n++;
            keys += i == 0;
        }
    }
    if (keys > 0)
        kv->revision++;
    keel__kv_staged_sweep(kv, limit); /* large values left half sent (kv_staged.c) */
    r_int(c->reply, n);
    return 0;
}
