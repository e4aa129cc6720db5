/* kv_hash.c - the hash commands of Redis 7.0: HSET HSETNX HMSET HGET HMGET HDEL HEXISTS
   HGETALL HKEYS HVALS HLEN HSTRLEN HINCRBY HINCRBYFLOAT HRANDFIELD HSCAN. */
#include "core/kv_coll.h"

#include "base/num.h"
#include "base/rand.h"
#include "proto/resp.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Texts, replies and the order of checks follow Redis 7.0's t_hash.c (checked against
 * redis-server 7.0.15 by tests/system/test_redis_diff.py). A write allocates everything it
 * links before it changes anything, so it either succeeds whole, replies an error having
 * changed nothing, or fails with KEEL_ENOMEM having changed nothing.
 */

#define T KEEL__KV_TYPE_HASH

/* Redis's hashTypeTryConversion: a long field or value, or many fields, mean "hashtable". */
static void note(keel__kc_t *t, size_t fl, size_t vl)
{
    if (fl > KEEL__KC_HASH_LISTPACK_VALUE_BYTES || vl > KEEL__KC_HASH_LISTPACK_VALUE_BYTES ||
        keel__kc_count(t) > KEEL__KC_HASH_LISTPACK_ENTRIES)
        t->hashtable = 1;
}

/* Sizes of the fields and values argv[from..] in pairs, and of the key: 0 or REPLIED. */
static int check_pairs(const call_t *c, size_t from)
{
    int rc = keel__kvc_check_sizes(c, c->lens[1], 0);
    for (size_t i = from; rc == 0 && i < c->argc; i++)
        if (c->lens[i] > c->kv->cfg.value_bytes_max)
            rc = r_err(c->reply, ERR_VALUE_SIZE);
    return rc;
}

/*
 * Sets the (field, value) pairs of argv[from..] in key argv[1], creating it: 0 and *added
 * (fields that were new), REPLIED (WRONGTYPE, a limit), or KEEL_ENOMEM (nothing changed).
 * Steps the revision. nx: only if field argv[from] is absent (then *added 0 or 1).
 */
static int put_pairs(const call_t *c, size_t from, int nx, int64_t *added)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL, *fresh = NULL;
    keel__kc_t *t;
    int dead, rc = keel__kc_wlookup(c, c->argv[1], c->lens[1], T, &link, &dead, &t);
    if (rc == 0)
        rc = check_pairs(c, from);
    if (rc != 0)
        return rc;
    *added = 0;
    if (nx && t && keel__kc_find(t, c->argv[from], c->lens[from]))
        return 0;
    size_t pairs = (c->argc - from) / 2;
    if (t && pairs > KEEL__KC_ITEMS_MAX - keel__kc_count(t)) {
        size_t more = 0;
        for (size_t i = 0; i < pairs; i++)
            more += keel__kc_find(t, c->argv[from + 2 * i], c->lens[from + 2 * i]) == NULL;
        if (more > KEEL__KC_ITEMS_MAX - keel__kc_count(t))
            return r_err(c->reply, ERR_KC_FULL);
    }
    if (t == NULL) {
        if (!dead && (rc = keel__kvc_check_room(c, 1)) != 0)
            return rc;
        if ((rc = keel__kc_prepare(c, c->argv[1], c->lens[1], T, &fresh)) != 0)
            return rc;
    }
    keel__kc_t *dst = t ? t : keel__kv_obj(fresh);
    keel__kc_item_t **items = calloc(pairs, sizeof(*items));
    for (size_t i = 0; items && i < pairs; i++) {
        size_t f = from + 2 * i;
        items[i] = keel__kc_item_new(dst, c->argv[f], c->lens[f], c->argv[f + 1], c->lens[f + 1]);
        if (items[i] == NULL) {
            while (i > 0)
                keel__kc_item_free(items[--i]);
            free(items);
            items = NULL;
        }
    }
    size_t before = keel__kc_bytes(dst);
    if (items && keel__kc_reserve(&dst, items, pairs) != 0) {
        for (size_t i = 0; i < pairs; i++)
            keel__kc_item_free(items[i]);
        free(items);
        items = NULL;
    }
    if (items == NULL) {
        if (fresh)
            keel__kv_type_hash.free(keel__kv_obj(fresh)), free(fresh);
        return KEEL_ENOMEM;
    }
    keel__kv_set_obj(t ? *link : fresh, dst); /* the table may have moved */
    if (fresh) {
        keel__kc_link(c, link, dead, fresh);
        before = keel__kc_bytes(dst);
    }
    for (size_t i = 0; i < pairs; i++) {
        note(dst, keel__kc_fl(items[i]), keel__kc_vl(items[i]));
        *added += keel__kc_put(dst, items[i]);
    }
    note(dst, 0, 0);
    free(items);
    keel__kc_touch(c, c->argv[1], c->lens[1], before);
    kv->revision++;
    return 0;
}

int keel__kh_hset_syntax(const call_t *c)
{
    if (c->argc % 2 == 1) {
        char text[96];
        snprintf(text, sizeof(text), "ERR wrong number of arguments for '%s' command",
                 c->cmd_lname);
        return r_err(c->reply, text);
    }
    return 0;
}

int keel__kh_cmd_hset(const call_t *c)
{
    int64_t added = 0;
    int rc = put_pairs(c, 2, 0, &added);
    if (rc == 0)
        r_int(c->reply, added);
    return keel__kvc_done(rc);
}

int keel__kh_cmd_hmset(const call_t *c)
{
    int64_t added = 0;
    int rc = put_pairs(c, 2, 0, &added);
    if (rc == 0)
        r_ok(c->reply);
    return keel__kvc_done(rc);
}

int keel__kh_cmd_hsetnx(const call_t *c)
{
    int64_t added = 0;
    int rc = put_pairs(c, 2, 1, &added);
    if (rc == 0)
        r_int(c->reply, added);
    return keel__kvc_done(rc);
}

/* ---- reads ------------------------------------------------------------------------------ */

static const keel__kc_item_t *field(const keel__kc_t *t, const call_t *c, size_t i)
{
    return t ? keel__kc_find(t, c->argv[i], c->lens[i]) : NULL;
}

int keel__kh_cmd_hget(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    const keel__kc_item_t *it = field(t, c, 2);
    if (it)
        r_bulk(c->reply, keel__kc_val(it), keel__kc_vl(it));
    else
        r_nil(c->reply);
    return 0;
}

int keel__kh_cmd_hmget(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    r_array(c->reply, c->argc - 2);
    for (size_t i = 2; i < c->argc; i++) {
        const keel__kc_item_t *it = field(t, c, i);
        if (it)
            r_bulk(c->reply, keel__kc_val(it), keel__kc_vl(it));
        else
            r_nil(c->reply);
    }
    return 0;
}

int keel__kh_cmd_hexists(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc == 0)
        r_int(c->reply, field(t, c, 2) != NULL);
    return keel__kvc_done(rc);
}

int keel__kh_cmd_hstrlen(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    const keel__kc_item_t *it = field(t, c, 2);
    r_int(c->reply, it ? (int64_t)keel__kc_vl(it) : 0);
    return 0;
}

int keel__kh_cmd_hlen(const call_t *c)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc == 0)
        r_int(c->reply, t ? (int64_t)keel__kc_count(t) : 0);
    return keel__kvc_done(rc);
}

/* HGETALL (fields and values), HKEYS (fields), HVALS (values), in hash order. */
static int walk(const call_t *c, int fields, int values)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    r_array(c->reply, t ? keel__kc_count(t) * (size_t)(fields + values) : 0);
    for (const keel__kc_item_t *it = t ? keel__kc_first(t) : NULL; it && !c->reply->failed;
         it = keel__kc_next(t, it)) {
        if (fields)
            r_bulk(c->reply, keel__kc_f(it), keel__kc_fl(it));
        if (values)
            r_bulk(c->reply, keel__kc_val(it), keel__kc_vl(it));
    }
    return 0;
}

int keel__kh_cmd_hgetall(const call_t *c)
{
    return walk(c, 1, 1);
}

int keel__kh_cmd_hkeys(const call_t *c)
{
    return walk(c, 1, 0);
}

int keel__kh_cmd_hvals(const call_t *c)
{
    return walk(c, 0, 1);
}

/* ---- HDEL ----------------------------------------------------------------------------------- */

int keel__kh_cmd_hdel(const call_t *c)
{
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

/* ---- HINCRBY, HINCRBYFLOAT ------------------------------------------------------------- */

int keel__kh_hincrby_syntax(const call_t *c)
{
    int64_t v;
    if (keel_parse_i64(c->argv[3], c->lens[3], &v) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

int keel__kh_hincrbyfloat_syntax(const call_t *c)
{
    long double v;
    if (keel__kvc_parse_ld(c->argv[3], c->lens[3], &v) != 0)
        return r_err(c->reply, "ERR value is not a valid float");
    if (isnan(v) || isinf(v))
        return r_err(c->reply, "ERR value is NaN or Infinity");
    return 0;
}

/* Sets field argv[2] of key argv[1] to text (the new value of an increment). */
static int put_one(const call_t *c, const char *text, size_t n)
{
    const uint8_t *argv[4] = {c->argv[0], c->argv[1], c->argv[2], (const uint8_t *)text};
    size_t lens[4] = {c->lens[0], c->lens[1], c->lens[2], n};
    call_t in = *c;
    in.argc = 4;
    in.argv = argv;
    in.lens = lens;
    int64_t added;
    return put_pairs(&in, 2, 0, &added);
}

int keel__kh_cmd_hincrby(const call_t *c)
{
    int64_t by = 0, v = 0;
    keel_parse_i64(c->argv[3], c->lens[3], &by);
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    const keel__kc_item_t *it = field(t, c, 2);
    if (it && keel_parse_i64(keel__kc_val(it), keel__kc_vl(it), &v) != 0)
        return keel__kvc_done(r_err(c->reply, "ERR hash value is not an integer"));
    if ((by < 0 && v < INT64_MIN - by) || (by > 0 && v > INT64_MAX - by))
        return keel__kvc_done(r_err(c->reply, ERR_OVERFLOW));
    v += by;
    char text[KEEL_DEC_BYTES_MAX];
    size_t n = keel_fmt_i64(text, v);
    rc = put_one(c, text, n);
    if (rc == 0)
        r_int(c->reply, v);
    return keel__kvc_done(rc);
}

int keel__kh_cmd_hincrbyfloat(const call_t *c)
{
    long double by = 0, v = 0;
    keel__kvc_parse_ld(c->argv[3], c->lens[3], &by);
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, T, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    const keel__kc_item_t *it = field(t, c, 2);
    if (it && keel__kvc_parse_ld(keel__kc_val(it), keel__kc_vl(it), &v) != 0)
        return keel__kvc_done(r_err(c->reply, "ERR hash value is not a float"));
    v += by;
    if (isnan(v) || isinf(v))
        return keel__kvc_done(r_err(c->reply, "ERR increment would produce NaN or Infinity"));
    char text[KEEL__KVC_LD_CHARS_MAX];
    size_t n = keel__kvc_fmt_ld(text, sizeof(text), v);
    rc = put_one(c, text, n);
    if (rc == 0)
        r_bulk(c->reply, (const uint8_t *)text, n);
    return keel__kvc_done(rc);
}

/* ---- HRANDFIELD ----------------------------------------------------------------------- */

/* Redis getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX): 0 or REPLIED. */
int keel__kc_parse_count(const call_t *c, size_t i, int64_t *out)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], out) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    if (*out == INT64_MIN)
        return r_err(c->reply,
                     "ERR value is out of range, value must between -9223372036854775807 and "
                     "9223372036854775807");
    return 0;
}

int keel__kh_hrandfield_syntax(const call_t *c)
{
    int64_t l;
    if (c->argc < 3)
        return 0;
    int rc = keel__kc_parse_count(c, 2, &l);
    if (rc != 0)
        return rc;
    if (c->argc > 4 || (c->argc == 4 && !keel__kvc_arg_is(c, 3, "WITHVALUES")))
        return r_err(c->reply, ERR_SYNTAX);
    if (c->argc == 4 && (l < -INT64_MAX / 2 || l > INT64_MAX / 2))
        return r_err(c->reply, "ERR value is out of range");
    return 0;
}

static void r_item(reply_t *o, const keel__kc_item_t *it, int values)
{
    r_bulk(o, keel__kc_f(it), keel__kc_fl(it));
    if (values)
        r_bulk(o, keel__kc_val(it), keel__kc_vl(it));
}

/*
 * Redis hrandfieldWithCountCommand / srandmemberWithCountCommand: a negative count picks
 * that many with repeats; a positive one that many distinct (all when count >= the size).
 * The randomness is the read's (keel__kc_random), so any replica answers a valid sample.
 */
int keel__kc_rand_reply(const call_t *c, int type, int values)
{
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, type, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    uint64_t seed = keel__kc_random(c, 0x72616e64);
    if (c->argc == 2) {
        const keel__kc_item_t *it = t ? keel__kc_pick(t, seed) : NULL;
        if (it)
            r_bulk(c->reply, keel__kc_f(it), keel__kc_fl(it));
        else
            r_nil(c->reply);
        return 0;
    }
    int64_t l = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &l);
    if (t == NULL || l == 0) {
        r_array(c->reply, 0);
        return 0;
    }
    size_t per = values ? 2 : 1;
    if (l < 0 || l == 1) {
        uint64_t n = l < 0 ? (uint64_t)-l : 1;
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        /* picks with repeats are bounded: Redis would build any size */
        if (n > KEEL__KC_RAND_COUNT_MAX)
            return r_err(c->reply, ERR_KC_RAND_COUNT), 0;
        r_array(c->reply, n * per);
        for (uint64_t i = 0; i < n && !c->reply->failed; i++)
            r_item(c->reply, keel__kc_pick(t, keel_rand_u64(&r)), values);
        return 0;
    }
    const keel__kc_item_t **picked = NULL;
    if (keel__kc_sample(t, (size_t)l, seed, &picked) != 0)
        return c->w ? KEEL_ENOMEM : (r_err(c->reply, "OOM keel: no memory for the sample"), 0);
    size_t n = (uint64_t)l < keel__kc_count(t) ? (size_t)l : keel__kc_count(t);
    r_array(c->reply, n * per);
    for (size_t i = 0; i < n; i++)
        r_item(c->reply, picked[i], values);
    free(picked);
    return 0;
}

int keel__kh_cmd_hrandfield(const call_t *c)
{
    return keel__kc_rand_reply(c, T, c->argc == 4);
}

int keel__kh_cmd_hscan(const call_t *c)
{
    return keel__kc_scan_cmd(c, T);
}
