/* kv_zset.c - the sorted-set commands on entries: ZADD, ZINCRBY, ZREM, ZCARD, ZSCORE,
   ZMSCORE, ZCOUNT, ZLEXCOUNT, ZRANK, ZREVRANK, and the type's row (free, bytes,
   snapshot). The ZRANGE family and ZREMRANGEBY*: kv_zset_range.c. Pops, random members,
   set algebra, ZSCAN: kv_zset_ops.c. */
#include "core/kv_zset_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Every command follows Redis 7.0's t_zset.c: the same order of checks (an option error
 * before a WRONGTYPE where Redis parses first), the same texts, the same replies, checked
 * byte for byte against redis-server 7.0.15 by tests/system/test_redis_diff.py. Whatever
 * depends on argv alone is a syntax function, refused before proposing.
 */

/* ---- the type's row ----------------------------------------------------------------- */

static void obj_free(void *o)
{
    keel_zset_free(o);
}

static size_t obj_bytes(const void *o)
{
    return keel_zset_bytes(o);
}

static int obj_write(const void *o, keel_kv_sink_fn sink, void *data)
{
    return keel_zset_encode(o, sink, data);
}

static int obj_load(const uint8_t *p, size_t len, void **obj)
{
    keel_zset_t *z = NULL;
    int rc = keel_zset_decode(p, len, &z);
    if (rc == 0 && keel_zset_len(z) == 0) { /* an empty set is no key */
        keel_zset_free(z);
        return KEEL_EPROTO;
    }
    if (rc == 0)
        *obj = z;
    return rc;
}

static const char *obj_encoding(const void *o)
{
    return keel_zset_is_listpack(o) ? "listpack" : "skiplist";
}

const keel__kv_type_t keel__kv_type_zset = {
    .name = "zset",
    .free = obj_free,
    .bytes = obj_bytes,
    .snap_write = obj_write,
    .snap_load = obj_load,
    .encoding = obj_encoding,
};

/* ---- numbers ------------------------------------------------------------------------ */

/* Arguments are not NUL-terminated: strtod reads a copy (on the stack when short). */
#define NUM_COPY_BYTES 128u

typedef struct numcopy {
    char stack[NUM_COPY_BYTES];
    char *p;
} numcopy_t;

static int num_copy(numcopy_t *b, const uint8_t *p, size_t n)
{
    b->p = n < sizeof(b->stack) ? b->stack : malloc(n + 1);
    if (b->p == NULL)
        return -1;
    memcpy(b->p, p, n);
    b->p[n] = '\0';
    return 0;
}

static void num_done(numcopy_t *b)
{
    if (b->p != b->stack)
        free(b->p);
}

int keel__zs_parse_score(const uint8_t *p, size_t n, double *out)
{
    numcopy_t b;
    if (n == 0 || isspace(p[0]) || num_copy(&b, p, n) != 0)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(b.p, &end);
    int bad = (size_t)(end - b.p) != n ||
              (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL || fpclassify(v) == FP_ZERO)) ||
              isnan(v);
    num_done(&b);
    if (bad)
        return -1;
    *out = v;
    return 0;
}

/* Redis zslParseRange's item: '(' for exclusive, then strtod up to the first NUL. */
static int parse_bound(const uint8_t *p, size_t n, double *v, int *ex)
{
    numcopy_t b;
    *ex = n > 0 && p[0] == '(';
    if (num_copy(&b, p + *ex, n - (size_t)*ex) != 0)
        return -1;
    char *end;
    *v = strtod(b.p, &end);
    int bad = *end != '\0' || isnan(*v);
    num_done(&b);
    return bad ? -1 : 0;
}

int keel__zs_parse_range(const call_t *c, size_t imin, size_t imax, keel_zset_range_t *r)
{
    if (parse_bound(c->argv[imin], c->lens[imin], &r->min, &r->minex) != 0 ||
        parse_bound(c->argv[imax], c->lens[imax], &r->max, &r->maxex) != 0)
        return r_err(c->reply, ERR_ZS_RANGE);
    return 0;
}

/* Redis zslParseLexRangeItem: "+", "-", "(bytes" or "[bytes". */
static int parse_lex_item(const uint8_t *p, size_t n, const uint8_t **s, size_t *len, int *kind,
                          int *ex)
{
    *s = NULL;
    *len = 0;
    *kind = *ex = 0;
    if (n == 1 && p[0] == '+') {
        *kind = 1;
    } else if (n == 1 && p[0] == '-') {
        *kind = -1;
    } else if (n >= 1 && (p[0] == '(' || p[0] == '[')) {
        *ex = p[0] == '(';
        *s = p + 1;
        *len = n - 1;
    } else {
        return -1;
    }
    return 0;
}

int keel__zs_parse_lex(const call_t *c, size_t imin, size_t imax, keel_zset_lex_t *r)
{
    if (parse_lex_item(c->argv[imin], c->lens[imin], &r->min, &r->minlen, &r->minkind, &r->minex) !=
            0 ||
        parse_lex_item(c->argv[imax], c->lens[imax], &r->max, &r->maxlen, &r->maxkind, &r->maxex) !=
            0)
        return r_err(c->reply, ERR_ZS_LEX);
    return 0;
}

int keel__zs_parse_long(const call_t *c, size_t i, int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

size_t keel__zs_fmt_reply(char *out, double d)
{
    if (isinf(d)) {
        memcpy(out, d > 0 ? "inf" : "-inf", d > 0 ? 3 : 4);
        return d > 0 ? 3 : 4;
    }
    return (size_t)snprintf(out, ZS_SCORE_TEXT_BYTES_MAX, "%.17g", d);
}

size_t keel__zs_fmt_stored(char *out, double d)
{
    /* Redis d2string: integers (within +-LLONG_MAX/2, so exact) print as integers */
    if (!isinf(d) && d >= (double)(-INT64_MAX / 2) && d <= (double)(INT64_MAX / 2) &&
        (double)(int64_t)d == d)
        return keel_fmt_i64(out, (int64_t)d);
    return keel__zs_fmt_reply(out, d);
}

void keel__zs_r_score(reply_t *o, double d)
{
    char t[ZS_SCORE_TEXT_BYTES_MAX];
    size_t n = keel__zs_fmt_reply(t, d);
    r_bulk(o, (const uint8_t *)t, n);
}

double keel__zs_stored(const keel_zset_t *z, double d)
{
    return keel_zset_is_listpack(z) && d == 0 ? 0.0 : d;
}

/* ---- keys ------------------------------------------------------------------------ */

/* The set of a found entry, unpacked for the command. A read unpacks too: the set's memory
   count, its order and every answer are the same in both forms (zset_pack.c), and
   keel__kvc_run packs it back before the next command. */
static void mark_repack(const call_t *c)
{
    if (c->zs_unpacked)
        *c->zs_unpacked = 1;
}

int keel__zs_unpacked(const call_t *c, const keel__kv_entry_t *e, keel_zset_t **z)
{
    keel_zset_t *s = keel__kv_obj(e);
    if (keel_zset_is_packed(s)) {
        if (keel_zset_unpack(&s) != 0)
            return KEEL_ENOMEM;
        /* the entry is the object's owner, a read's too: the set changed form, not value */
        keel__kv_set_obj((keel__kv_entry_t *)e, s);
        mark_repack(c);
    }
    *z = s;
    return 0;
}

int keel__zs_read_lookup(const call_t *c, size_t i, const keel_zset_t **z)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    *z = NULL;
    if (e && e->type != KEEL__KV_TYPE_ZSET)
        return r_err(c->reply, ERR_WRONGTYPE);
    keel_zset_t *s = NULL;
    int rc = e ? keel__zs_unpacked(c, e, &s) : 0;
    *z = s;
    return rc;
}

void keel__zs_repack(const call_t *c)
{
    const keel_kv_t *kv = c->kv;
    for (size_t i = 1; i < c->argc; i++) {
        keel__kv_entry_t *e = keel__kv_find(kv, c->argv[i], c->lens[i],
                                            keel__kv_hash(kv, c->argv[i], c->lens[i]), NULL);
        if (e && e->type == KEEL__KV_TYPE_ZSET) /* no change unless listpack and unpacked */
            keel__kv_set_obj(e, keel_zset_pack(keel__kv_obj(e)));
    }
}

int keel__zs_write_lookup(const call_t *c, size_t i, keel_zset_t **z)
{
    int dead;
    keel__kv_entry_t **link = NULL;
    uint64_t h = keel__kv_hash(c->w, c->argv[i], c->lens[i]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[i], c->lens[i], h, &link, &dead);
    *z = NULL;
    if (e && e->type != KEEL__KV_TYPE_ZSET)
        return r_err(c->reply, ERR_WRONGTYPE);
    keel_zset_t *s = NULL;
    int rc = e ? keel__zs_unpacked(c, e, &s) : 0;
    *z = s;
    return rc;
}

int keel__zs_check_new(const call_t *c, const uint8_t *key, size_t len)
{
    int dead;
    keel__kv_entry_t **l = NULL;
    uint64_t h = keel__kv_hash(c->w, key, len);
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, len, h, &l, &dead);
    int rc = keel__kvc_check_sizes(c, len, 0);
    if (rc == 0 && e == NULL && !dead)
        rc = keel__kvc_check_room(c, 1);
    return rc;
}

void keel__zs_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *e = keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), &link);
    assert(e != NULL && e->type == KEEL__KV_TYPE_ZSET);
    keel_zset_t *z = keel__kv_obj(e);
    kv->bytes = kv->bytes - bytes_before + keel_zset_bytes(z);
    if (keel_zset_len(z) == 0) {
        keel__kv_unlink(kv, link); /* Redis deletes a set's key when it empties */
    } else {
        mark_repack(c); /* packed after the command, which may still read it */
        keel__kvc_set_version(kv, e, kv->revision + 1);
    }
}

int keel__zs_store(const call_t *c, const uint8_t *key, size_t len, keel_zset_t *z, int *changed)
{
    if (keel_zset_len(z) == 0) {
        keel_zset_free(z);
        return keel__kvc_store_obj(c, key, len, KEEL__KV_TYPE_ZSET, NULL, 0, changed);
    }
    int rc = keel__kvc_store_obj(c, key, len, KEEL__KV_TYPE_ZSET, z, keel_zset_bytes(z), changed);
    if (rc == 0)
        mark_repack(c);
    return rc;
}

/* Links a new set z (built whole, non-empty) as key argv[i]: 0 or KEEL_ENOMEM. */
static int link_new(const call_t *c, size_t i, keel_zset_t *z)
{
    int changed;
    return keel__zs_store(c, c->argv[i], c->lens[i], z, &changed);
}

/* ---- ZADD, ZINCRBY ---------------------------------------------------------------- */

#define ZA_NX 1u
#define ZA_XX 2u
#define ZA_GT 4u
#define ZA_LT 8u
#define ZA_CH 16u
#define ZA_INCR 32u

typedef struct zadd_args {
    unsigned flags;
    size_t first, pairs; /* argv index of the first score; score-member pairs */
} zadd_args_t;

/* Redis zaddGenericCommand's parse, every score included: 0 or REPLIED. */
static int zadd_parse(const call_t *c, zadd_args_t *a)
{
    static const struct {
        const char *word;
        unsigned flag;
    } opts[] = {{"NX", ZA_NX}, {"XX", ZA_XX}, {"GT", ZA_GT},
                {"LT", ZA_LT}, {"CH", ZA_CH}, {"INCR", ZA_INCR}};
    a->flags = 0;
    size_t i = 2;
    for (; i < c->argc; i++) {
        size_t k = 0;
        while (k < sizeof(opts) / sizeof(opts[0]) && !keel__kvc_arg_is(c, i, opts[k].word))
            k++;
        if (k == sizeof(opts) / sizeof(opts[0]))
            break;
        a->flags |= opts[k].flag;
    }
    size_t left = c->argc - i;
    if (left == 0 || left % 2)
        return r_err(c->reply, ERR_SYNTAX);
    unsigned f = a->flags;
    if ((f & ZA_NX) && (f & ZA_XX))
        return r_err(c->reply, "ERR XX and NX options at the same time are not compatible");
    if (((f & ZA_GT) && (f & ZA_NX)) || ((f & ZA_LT) && (f & ZA_NX)) ||
        ((f & ZA_GT) && (f & ZA_LT)))
        return r_err(c->reply, "ERR GT, LT, and/or NX options at the same time are not compatible");
    if ((f & ZA_INCR) && left > 2)
        return r_err(c->reply, "ERR INCR option supports a single increment-element pair");
    double s;
    for (size_t j = i; j < c->argc; j += 2)
        if (keel__zs_parse_score(c->argv[j], c->lens[j], &s) != 0)
            return r_err(c->reply, ERR_ZS_FLOAT);
    a->first = i;
    a->pairs = left / 2;
    return 0;
}

int keel__zs_zadd_syntax(const call_t *c)
{
    zadd_args_t a;
    return zadd_parse(c, &a);
}

int keel__zs_zincrby_syntax(const call_t *c)
{
    double s;
    if (keel__zs_parse_score(c->argv[2], c->lens[2], &s) != 0)
        return r_err(c->reply, ERR_ZS_FLOAT);
    return 0;
}

/*
 * Redis zsetAdd for each pair, over a set whose room and new nodes were made first
 * (fresh[j]: pair j's node if its member was absent then), so nothing can fail midway.
 * The one refusal (INCR to NaN) can only come with a single pair, before any change.
 */
static int zadd_apply(const call_t *c, keel_zset_t *z, unsigned f, size_t first, size_t pairs,
                      keel_zset_node_t **fresh, uint64_t *added, uint64_t *updated, int *processed,
                      double *last)
{
    for (size_t j = 0; j < pairs; j++) {
        const uint8_t *m = c->argv[first + 2 * j + 1];
        size_t n = c->lens[first + 2 * j + 1];
        double score;
        keel__zs_parse_score(c->argv[first + 2 * j], c->lens[first + 2 * j], &score);
        keel_zset_node_t *x = keel_zset_find(z, m, n);
        if (x) {
            if (f & ZA_NX)
                continue;
            double cur = x->score;
            if (f & ZA_INCR) {
                score += cur;
                if (isnan(score))
                    return r_err(c->reply, ERR_ZS_NAN);
            }
            if (((f & ZA_LT) && score >= cur) || ((f & ZA_GT) && score <= cur))
                continue;
            *processed = 1;
            *last = score;
            if (score != cur) {
                keel_zset_rescore(z, x, keel__zs_stored(z, score));
                ++*updated;
            }
        } else if (!(f & ZA_XX)) {
            keel_zset_note_add(z, n);
            x = fresh[j];
            fresh[j] = NULL;
            assert(x != NULL);
            x->score = keel__zs_stored(z, score);
            keel_zset_insert(z, x);
            ++*added;
            *processed = 1;
            *last = score;
        }
    }
    return 0;
}

/* Allocates what zadd_apply may need: the room and a node per pair whose member is
   absent now (none with XX, which adds nothing). 0, REPLIED (a limit) or KEEL_ENOMEM
   (nothing changed). */
static int zadd_prepare(const call_t *c, keel_zset_t *z, unsigned f, size_t first, size_t pairs,
                        keel_zset_node_t ***out)
{
    int add = !(f & ZA_XX);
    size_t absent = 0;
    for (size_t j = 0; j < pairs; j++) {
        size_t n = c->lens[first + 2 * j + 1];
        if (n > c->kv->cfg.value_bytes_max || n > KEEL_ZSET_MEMBER_BYTES_MAX)
            return r_err(c->reply, ERR_VALUE_SIZE);
        absent += add && keel_zset_find(z, c->argv[first + 2 * j + 1], n) == NULL;
    }
    if (absent > KEEL_ZSET_MEMBERS_MAX - keel_zset_len(z))
        return r_err(c->reply, "ERR keel: a sorted set holds at most 67108864 members "
                               "(KEEL_ZSET_MEMBERS_MAX)");
    /* the nodes first, the room last: a failure of either leaves the set as it was */
    keel_zset_node_t **fresh = calloc(pairs ? pairs : 1, sizeof(*fresh));
    if (fresh == NULL)
        return KEEL_ENOMEM;
    int rc = 0;
    for (size_t j = 0; j < pairs && rc == 0; j++) {
        const uint8_t *m = c->argv[first + 2 * j + 1];
        size_t n = c->lens[first + 2 * j + 1];
        if (add && keel_zset_find(z, m, n) == NULL &&
            (fresh[j] = keel_zset_node_new(m, n, 0)) == NULL)
            rc = KEEL_ENOMEM;
    }
    uint32_t levels = 0;
    for (size_t j = 0; j < pairs; j++)
        if (fresh[j] && fresh[j]->level > levels)
            levels = fresh[j]->level;
    if (rc == 0)
        rc = keel_zset_reserve(z, absent, levels);
    if (rc != 0) {
        for (size_t j = 0; j < pairs; j++)
            keel_zset_node_free(fresh[j]);
        free(fresh);
        return rc;
    }
    *out = fresh;
    return 0;
}

static int zadd_generic(const call_t *c, unsigned f, size_t first, size_t pairs)
{
    keel_zset_t *z;
    int rc = keel__zs_write_lookup(c, 1, &z);
    if (rc != 0)
        return keel__kvc_done(rc);
    keel_zset_t *made = NULL;
    if (z == NULL) {
        if (f & ZA_XX) { /* no key and XX: nothing to do */
            if (f & ZA_INCR)
                r_nil(c->reply);
            else
                r_int(c->reply, 0);
            return 0;
        }
        if ((rc = keel__zs_check_new(c, c->argv[1], c->lens[1])) != 0)
            return keel__kvc_done(rc);
        if ((made = z = keel_zset_new()) == NULL)
            return KEEL_ENOMEM;
    }
    /* the set's memory before: its hash table may grow (zadd_prepare) even when the
       command then changes nothing, and kv->bytes must follow it either way */
    size_t before = made ? 0 : keel_zset_bytes(z);
    keel_zset_node_t **fresh = NULL;
    if ((rc = zadd_prepare(c, z, f, first, pairs, &fresh)) != 0) {
        if (made == NULL)
            c->w->bytes = c->w->bytes - before + keel_zset_bytes(z);
        keel_zset_free(made);
        return keel__kvc_done(rc);
    }
    uint64_t added = 0, updated = 0;
    int processed = 0;
    double last = 0;
    rc = zadd_apply(c, z, f, first, pairs, fresh, &added, &updated, &processed, &last);
    for (size_t j = 0; j < pairs; j++)
        keel_zset_node_free(fresh[j]);
    free(fresh);
    keel_zset_trim(z); /* nodes reserved for and not linked (XX, an error) */
    if (made && (rc != 0 || keel_zset_len(made) == 0)) {
        if (rc == 0) /* nothing added to a new key: no key made */
            r_nil(c->reply);
        keel_zset_free(made);
        return keel__kvc_done(rc);
    }
    if (made) {
        if ((rc = link_new(c, 1, made)) != 0) {
            keel_zset_free(made);
            return rc;
        }
        before = keel_zset_bytes(made); /* accounted by the link */
    } else if (rc != 0) {
        c->w->bytes = c->w->bytes - before + keel_zset_bytes(z);
        return keel__kvc_done(rc);
    }
    if (f & ZA_INCR) {
        if (processed)
            keel__zs_r_score(c->reply, last);
        else
            r_nil(c->reply);
    } else {
        r_int(c->reply, (int64_t)((f & ZA_CH) ? added + updated : added));
    }
    if (added || updated || made) {
        keel__zs_touch(c, c->argv[1], c->lens[1], before);
        c->w->revision++;
    } else { /* no change, but the room made for it stays: its memory is counted */
        c->w->bytes = c->w->bytes - before + keel_zset_bytes(z);
    }
    return 0;
}

int keel__zs_cmd_zadd(const call_t *c)
{
    zadd_args_t a;
    int rc = zadd_parse(c, &a);
    assert(rc == 0); /* the syntax ran */
    (void)rc;
    return zadd_generic(c, a.flags, a.first, a.pairs);
}

int keel__zs_cmd_zincrby(const call_t *c)
{
    return zadd_generic(c, ZA_INCR, 2, 1);
}

/* ---- ZREM, ZCARD, ZSCORE, ZMSCORE ---------------------------------------------------- */

int keel__zs_cmd_zrem(const call_t *c)
{
    keel_zset_t *z;
    int rc = keel__zs_write_lookup(c, 1, &z);
    if (rc != 0)
        return keel__kvc_done(rc);
    int64_t n = 0;
    size_t before = z ? keel_zset_bytes(z) : 0;
    for (size_t i = 2; z && i < c->argc && keel_zset_len(z) > 0; i++) {
        keel_zset_node_t *x = keel_zset_find(z, c->argv[i], c->lens[i]);
        if (x) {
            keel_zset_delete(z, x);
            n++;
        }
    }
    r_int(c->reply, n);
    if (n > 0) {
        keel__zs_touch(c, c->argv[1], c->lens[1], before);
        c->w->revision++;
    }
    return 0;
}

int keel__zs_cmd_zcard(const call_t *c)
{
    const keel_zset_t *z;
    int lrc = keel__zs_read_lookup(c, 1, &z);
    if (lrc == 0)
        r_int(c->reply, z ? (int64_t)keel_zset_len(z) : 0);
    return keel__kvc_done(lrc);
}

int keel__zs_cmd_zscore(const call_t *c)
{
    const keel_zset_t *z;
    int lrc = keel__zs_read_lookup(c, 1, &z);
    if (lrc != 0)
        return keel__kvc_done(lrc);
    const keel_zset_node_t *x = z ? keel_zset_find(z, c->argv[2], c->lens[2]) : NULL;
    if (x)
        keel__zs_r_score(c->reply, x->score);
    else
        r_nil(c->reply);
    return 0;
}

int keel__zs_cmd_zmscore(const call_t *c)
{
    const keel_zset_t *z;
    int lrc = keel__zs_read_lookup(c, 1, &z);
    if (lrc != 0)
        return keel__kvc_done(lrc);
    r_array(c->reply, c->argc - 2);
    for (size_t i = 2; i < c->argc && !c->reply->failed; i++) {
        const keel_zset_node_t *x = z ? keel_zset_find(z, c->argv[i], c->lens[i]) : NULL;
        if (x)
            keel__zs_r_score(c->reply, x->score);
        else
            r_nil(c->reply);
    }
    return 0;
}

/* ---- ZCOUNT, ZLEXCOUNT, ZRANK, ZREVRANK ---------------------------------------------- */

int keel__zs_zcount_syntax(const call_t *c)
{
    keel_zset_range_t r;
    return keel__zs_parse_range(c, 2, 3, &r);
}

int keel__zs_cmd_zcount(const call_t *c)
{
    keel_zset_range_t r;
    const keel_zset_t *z;
    int lrc;
    if ((lrc = keel__zs_parse_range(c, 2, 3, &r)) != 0 ||
        (lrc = keel__zs_read_lookup(c, 1, &z)) != 0)
        return keel__kvc_done(lrc);
    uint64_t n = 0;
    const keel_zset_node_t *first = z ? keel_zset_first_in_range(z, &r) : NULL;
    if (first) {
        uint64_t len = keel_zset_len(z);
        n = len - keel_zset_rank(z, first);
        const keel_zset_node_t *last = keel_zset_last_in_range(z, &r);
        if (last)
            n -= len - 1 - keel_zset_rank(z, last);
    }
    r_int(c->reply, (int64_t)n);
    return 0;
}

int keel__zs_zlexcount_syntax(const call_t *c)
{
    keel_zset_lex_t r;
    return keel__zs_parse_lex(c, 2, 3, &r);
}

int keel__zs_cmd_zlexcount(const call_t *c)
{
    keel_zset_lex_t r;
    const keel_zset_t *z;
    int lrc;
    if ((lrc = keel__zs_parse_lex(c, 2, 3, &r)) != 0 || (lrc = keel__zs_read_lookup(c, 1, &z)) != 0)
        return keel__kvc_done(lrc);
    uint64_t n = 0;
    const keel_zset_node_t *first = z ? keel_zset_first_in_lex(z, &r) : NULL;
    if (first && keel_zset_is_listpack(z)) {
        /* Redis counts a listpack forward from the first while <= max */
        for (; first && keel_zset_lex_lte_max(keel_zset_member(first), first->len, &r);
             first = keel_zset_next(first))
            n++;
    } else if (first) {
        uint64_t len = keel_zset_len(z);
        n = len - keel_zset_rank(z, first);
        const keel_zset_node_t *last = keel_zset_last_in_lex(z, &r);
        if (last)
            n -= len - 1 - keel_zset_rank(z, last);
    }
    r_int(c->reply, (int64_t)n);
    return 0;
}

static int rank(const call_t *c, int rev)
{
    const keel_zset_t *z;
    int lrc = keel__zs_read_lookup(c, 1, &z);
    if (lrc != 0)
        return keel__kvc_done(lrc);
    const keel_zset_node_t *x = z ? keel_zset_find(z, c->argv[2], c->lens[2]) : NULL;
    if (x == NULL) {
        r_nil(c->reply);
        return 0;
    }
    uint64_t r = keel_zset_rank(z, x);
    r_int(c->reply, (int64_t)(rev ? keel_zset_len(z) - 1 - r : r));
    return 0;
}

int keel__zs_cmd_zrank(const call_t *c)
{
    return rank(c, 0);
}

int keel__zs_cmd_zrevrank(const call_t *c)
{
    return rank(c, 1);
}
