/* kv_coll_cmd.c - what the hash and set commands share on top of their table (kv_coll.h):
   typed lookups, creating and deleting the key, randomness, HSCAN/SSCAN, random samples. */
#include "core/kv_coll.h"

#include "base/glob.h"
#include "base/hash.h"
#include "base/num.h"
#include "base/rand.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- the command side ---------------------------------------------------------------- */

int keel__kc_read(const call_t *c, size_t i, int type, const keel__kc_t **t)
{
    return keel__kc_of(c, keel__kvc_lookup(c, i), type, t);
}

int keel__kc_of(const call_t *c, const keel__kv_entry_t *e, int type, const keel__kc_t **t)
{
    *t = NULL;
    if (e && e->type != type)
        return r_err(c->reply, ERR_WRONGTYPE);
    if (e && type == KEEL__KV_TYPE_SET) {
        keel__kc_t *s;
        int rc = keel__ks_table(c, e, 0, &s);
        *t = rc == 0 ? s : NULL;
        return rc;
    }
    *t = e ? keel__kv_obj(e) : NULL;
    return 0;
}

int keel__kc_wlookup(const call_t *c, const uint8_t *key, size_t len, int type,
                     keel__kv_entry_t ***link, int *dead, keel__kc_t **t)
{
    uint64_t h = keel__kv_hash(c->w, key, len);
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, len, h, link, dead);
    *t = NULL;
    if (e && e->type != type)
        return r_err(c->reply, ERR_WRONGTYPE);
    if (e && type == KEEL__KV_TYPE_SET) {
        keel__ks_note(c, key, len);
        return keel__ks_table(c, e, 1, t); /* the entry does not move */
    }
    *t = e ? keel__kv_obj(e) : NULL;
    return 0;
}

uint64_t keel__kc_random(const call_t *c, uint64_t salt)
{
    uint64_t x = keel_mix64(c->now ^ keel_mix64(salt));
    if (c->w)
        x = keel_mix64(x ^ c->w->revision);
    return x;
}

int keel__kc_prepare(const call_t *c, const uint8_t *key, size_t len, int type,
                     keel__kv_entry_t **e)
{
    keel__kc_t *t = keel__kc_new(keel__kc_random(c, keel_hash64(key, len, 0x6b63)));
    if (t == NULL)
        return KEEL_ENOMEM;
    *e = keel__kv_entry_new_obj(key, len, keel__kv_hash(c->kv, key, len), type, t);
    if (*e == NULL) {
        free(t); /* new and packed: one allocation (keel__kc_free here trips -O3's bounds check) */
        return KEEL_ENOMEM;
    }
    if (type == KEEL__KV_TYPE_SET)
        keel__ks_note(c, key, len); /* a new small set of integers goes inline after it */
    return 0;
}

void keel__kc_link(const call_t *c, keel__kv_entry_t **link, int dead, keel__kv_entry_t *e)
{
    keel_kv_t *kv = c->w;
    e->create_revision = kv->revision + 1;
    if (dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    kv->bytes += keel__kc_bytes(keel__kv_obj(e));
}

void keel__kc_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *e = keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), &link);
    assert(e != NULL && (e->type == KEEL__KV_TYPE_HASH || e->type == KEEL__KV_TYPE_SET));
    keel__kc_t *t = keel__kv_obj(e);
    keel__kc_trim(&t);
    keel__kv_set_obj(e, t);
    kv->bytes = kv->bytes - bytes_before + keel__kc_bytes(t);
    if (e->type == KEEL__KV_TYPE_SET && keel__kc_count(t) <= KEEL__KS_INLINE_MAX && !t->hashtable)
        keel__ks_note(c, key, len); /* small enough to go inline after the command */
    if (keel__kc_count(t) == 0)
        keel__kv_unlink(kv, link); /* Redis deletes an emptied hash or set */
    else
        keel__kvc_set_version(kv, e, kv->revision + 1);
}

/* ---- HSCAN and SSCAN ------------------------------------------------------------------- */

int keel__kc_scan_syntax(const call_t *c)
{
    uint64_t cursor;
    if (keel__kvc_parse_cursor(c->argv[2], c->lens[2], &cursor) != 0)
        return r_err(c->reply, "ERR invalid cursor");
    return 0;
}

typedef struct scan_ctx {
    reply_t *reply;
    const uint8_t *pat;
    size_t pat_len;
    int values;
    size_t emitted;
} scan_ctx_t;

static void scan_one(void *data, const keel__kc_item_t *it)
{
    scan_ctx_t *s = data;
    if (s->pat && !keel_glob_match(s->pat, s->pat_len, keel__kc_f(it), keel__kc_fl(it)))
        return;
    r_bulk(s->reply, keel__kc_f(it), keel__kc_fl(it));
    if (s->values)
        r_bulk(s->reply, keel__kc_val(it), keel__kc_vl(it));
    s->emitted++;
}

static void count_one(void *data, const keel__kc_item_t *it)
{
    scan_ctx_t *s = data;
    if (s->pat == NULL || keel_glob_match(s->pat, s->pat_len, keel__kc_f(it), keel__kc_fl(it)))
        s->emitted++;
}

/*
 * Redis 7.0 hscanCommand/sscanCommand: the cursor is checked first, then the key (absent:
 * an empty scan; another type: WRONGTYPE), then the options (so a bad option on an absent
 * key is no error). A value in Redis's compact encoding (listpack, intset) is returned whole
 * with cursor 0, as Redis does; a bigger one COUNT items at a time in hash order.
 */
int keel__kc_scan_cmd(const call_t *c, int type)
{
    uint64_t cursor = 0;
    keel__kvc_parse_cursor(c->argv[2], c->lens[2], &cursor);
    const keel__kc_t *t;
    int rc = keel__kc_read(c, 1, type, &t);
    if (rc != 0)
        return keel__kvc_done(rc);
    scan_ctx_t s = {c->reply, NULL, 0, type == KEEL__KV_TYPE_HASH, 0};
    int64_t count = 10;
    for (size_t i = 3; t && i < c->argc; i += 2) {
        if (c->argc - i < 2)
            return r_err(c->reply, ERR_SYNTAX), 0;
        if (keel__kvc_arg_is(c, i, "COUNT")) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &count) != 0)
                return r_err(c->reply, ERR_NOT_INT), 0;
            if (count < 1)
                return r_err(c->reply, ERR_SYNTAX), 0;
        } else if (keel__kvc_arg_is(c, i, "MATCH")) {
            s.pat = c->argv[i + 1];
            s.pat_len = c->lens[i + 1];
            if (s.pat_len == 1 && s.pat[0] == '*')
                s.pat = NULL;
        } else {
            return r_err(c->reply, ERR_SYNTAX), 0;
        }
    }
    if (t == NULL) {
        r_array(c->reply, 2);
        r_bulk(c->reply, (const uint8_t *)"0", 1);
        r_array(c->reply, 0);
        return 0;
    }
    /* the whole value in one reply when compact (Redis), else about COUNT items, bounded so
       one reply stays small */
    size_t n = (size_t)count;
    if (keel__kc_encoding(type, t)[0] != 'h')
        n = keel__kc_count(t), cursor = 0;
    else if (n > KEEL_KV_SCAN_REPLY_BYTES_MAX / 16)
        n = KEEL_KV_SCAN_REPLY_BYTES_MAX / 16;
    /* counted first, so the header goes before the items */
    uint64_t next = keel__kc_scan(t, cursor, n, count_one, &s);
    size_t emitted = s.emitted;
    s.emitted = 0;
    char digits[KEEL_DEC_BYTES_MAX];
    size_t dn = keel_fmt_u64(digits, next);
    r_array(c->reply, 2);
    r_bulk(c->reply, (const uint8_t *)digits, dn);
    r_array(c->reply, emitted * (s.values ? 2 : 1));
    keel__kc_scan(t, cursor, n, scan_one, &s);
    assert(s.emitted == emitted);
    return 0;
}

/* ---- random samples (HRANDFIELD, SRANDMEMBER, SPOP) ------------------------------------ */

/* Whether p is in the open-addressed pointer set s (2^bits slots); adds it if not. */
static int seen(const keel__kc_item_t **s, unsigned bits, const keel__kc_item_t *p)
{
    size_t mask = ((size_t)1 << bits) - 1;
    for (size_t i = (size_t)(keel_mix64((uint64_t)(uintptr_t)p) & mask);; i = (i + 1) & mask) {
        if (s[i] == p)
            return 1;
        if (s[i] == NULL) {
            s[i] = p;
            return 0;
        }
    }
}

/* Every item, in a random order's first `count` places (a partial Fisher-Yates). */
static int sample_all(const keel__kc_t *t, size_t count, keel_rand_t *r,
                      const keel__kc_item_t **out)
{
    size_t size = keel__kc_count(t);
    const keel__kc_item_t **all = malloc(size * sizeof(*all));
    if (all == NULL)
        return KEEL_ENOMEM;
    size_t n = 0;
    for (const keel__kc_item_t *it = keel__kc_first(t); it; it = keel__kc_next(t, it))
        all[n++] = it;
    assert(n == size);
    for (size_t i = 0; i < count; i++) {
        size_t j = i + (size_t)keel_rand_below(r, n - i);
        const keel__kc_item_t *x = all[i];
        all[i] = all[j];
        all[j] = x;
        out[i] = all[i];
    }
    free(all);
    return 0;
}

int keel__kc_sample(const keel__kc_t *t, size_t count, uint64_t seed, const keel__kc_item_t ***out)
{
    size_t size = keel__kc_count(t);
    if (count > size)
        count = size;
    const keel__kc_item_t **res = malloc((count ? count : 1) * sizeof(*res));
    if (res == NULL)
        return KEEL_ENOMEM;
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    int rc = 0;
    if (count == size) {
        size_t n = 0;
        for (const keel__kc_item_t *it = keel__kc_first(t); it; it = keel__kc_next(t, it))
            res[n++] = it;
    } else if (count > size / 3) {
        rc = sample_all(t, count, &r, res);
    } else {
        /* few of many: random picks, duplicates skipped; a bounded number of tries (picks
           favour items after wide hash gaps), then the full shuffle */
        unsigned bits = 2;
        while (((size_t)1 << bits) < 2 * count)
            bits++;
        const keel__kc_item_t **s = calloc((size_t)1 << bits, sizeof(*s));
        if (s == NULL) {
            free(res);
            return KEEL_ENOMEM;
        }
        size_t n = 0, tries = 0, tries_max = 10 * count + 100;
        while (n < count && tries++ < tries_max) {
            const keel__kc_item_t *it = keel__kc_pick(t, keel_rand_u64(&r));
            if (!seen(s, bits, it))
                res[n++] = it;
        }
        free(s);
        if (n < count)
            rc = sample_all(t, count, &r, res);
    }
    if (rc != 0) {
        free(res);
        return rc;
    }
    *out = res;
    return (int)0;
}
