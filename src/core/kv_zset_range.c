/* kv_zset_range.c - the sorted-set commands over a range of ranks, scores or members: the
   ZRANGE family (ZRANGE, ZRANGESTORE, ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZRANGEBYLEX,
   ZREVRANGEBYLEX, ZREVRANGE) and ZREMRANGEBYSCORE, ZREMRANGEBYRANK, ZREMRANGEBYLEX.
   The rest: kv_zset.c, kv_zset_ops.c. */
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

/* ---- the ZRANGE family (Redis zrangeGenericCommand) ------------------------------------ */

enum { BY_AUTO, BY_RANK, BY_SCORE, BY_LEX };

typedef struct zrange_args {
    int by, rev, withscores;
    int64_t offset, limit; /* LIMIT; limit -1: none */
    int64_t start, end;    /* BY_RANK */
    keel_zset_range_t score;
    keel_zset_lex_t lex;
} zrange_args_t;

/*
 * The options and the range of a ZRANGE-family command whose key is argv[key] (the source
 * for ZRANGESTORE), as Redis parses them before it looks the key up: 0 or REPLIED. `by`
 * and `rev` come preset (-1: from the options) for the older commands.
 */
static int zrange_parse(const call_t *c, size_t key, int store, int by, int rev, zrange_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->limit = -1;
    a->by = by;
    a->rev = rev;
    for (size_t j = key + 3; j < c->argc; j++) {
        size_t left = c->argc - j - 1;
        if (!store && keel__kvc_arg_is(c, j, "WITHSCORES")) {
            a->withscores = 1;
        } else if (keel__kvc_arg_is(c, j, "LIMIT") && left >= 2) {
            if (keel__zs_parse_long(c, j + 1, &a->offset) != 0 ||
                keel__zs_parse_long(c, j + 2, &a->limit) != 0)
                return REPLIED;
            j += 2;
        } else if (a->rev < 0 && keel__kvc_arg_is(c, j, "REV")) {
            a->rev = 1;
        } else if (a->by == BY_AUTO && keel__kvc_arg_is(c, j, "BYLEX")) {
            a->by = BY_LEX;
        } else if (a->by == BY_AUTO && keel__kvc_arg_is(c, j, "BYSCORE")) {
            a->by = BY_SCORE;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (a->rev < 0)
        a->rev = 0;
    if (a->by == BY_AUTO)
        a->by = BY_RANK;
    if (a->limit != -1 && a->by == BY_RANK)
        return r_err(c->reply, "ERR syntax error, LIMIT is only supported in combination with "
                               "either BYSCORE or BYLEX");
    if (a->withscores && a->by == BY_LEX)
        return r_err(c->reply,
                     "ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    size_t lo = key + 1, hi = key + 2;
    if (a->rev && a->by != BY_RANK) { /* given as max, min */
        lo = key + 2;
        hi = key + 1;
    }
    if (a->by == BY_RANK)
        return keel__zs_parse_long(c, lo, &a->start) != 0 ||
                       keel__zs_parse_long(c, hi, &a->end) != 0
                   ? REPLIED
                   : 0;
    if (a->by == BY_SCORE)
        return keel__zs_parse_range(c, lo, hi, &a->score);
    return keel__zs_parse_lex(c, lo, hi, &a->lex);
}

/* The nodes of the range in reply order: calls fn on each; returns how many. */
typedef void (*visit_fn)(void *data, const keel_zset_node_t *x);

static uint64_t zrange_walk(const keel_zset_t *z, const zrange_args_t *a, visit_fn fn, void *data)
{
    uint64_t n = 0, len = keel_zset_len(z);
    const keel_zset_node_t *x;
    if (a->by == BY_RANK) {
        int64_t s = a->start, e = a->end, l = (int64_t)len;
        if (s < 0)
            s = l + s;
        if (e < 0)
            e = l + e;
        if (s < 0)
            s = 0;
        if (s > e || s >= l)
            return 0;
        if (e >= l)
            e = l - 1;
        x = keel_zset_at(z, a->rev ? len - 1 - (uint64_t)s : (uint64_t)s);
        for (int64_t i = s; i <= e; i++, n++) {
            fn(data, x);
            x = a->rev ? keel_zset_prev(x) : keel_zset_next(x);
        }
        return n;
    }
    if (a->offset < 0)
        return 0;
    if (a->by == BY_SCORE)
        x = a->rev ? keel_zset_last_in_range(z, &a->score) : keel_zset_first_in_range(z, &a->score);
    else
        x = a->rev ? keel_zset_last_in_lex(z, &a->lex) : keel_zset_first_in_lex(z, &a->lex);
    for (int64_t skip = a->offset; x && skip > 0; skip--)
        x = a->rev ? keel_zset_prev(x) : keel_zset_next(x);
    for (int64_t left = a->limit; x && left != 0; left--) {
        int in;
        if (a->by == BY_SCORE)
            in = a->rev ? keel_zset_score_gte_min(x->score, &a->score)
                        : keel_zset_score_lte_max(x->score, &a->score);
        else
            in = a->rev ? keel_zset_lex_gte_min(keel_zset_member(x), x->len, &a->lex)
                        : keel_zset_lex_lte_max(keel_zset_member(x), x->len, &a->lex);
        if (!in)
            break;
        fn(data, x);
        n++;
        x = a->rev ? keel_zset_prev(x) : keel_zset_next(x);
    }
    return n;
}

static void count_one(void *data, const keel_zset_node_t *x)
{
    (void)data;
    (void)x;
}

typedef struct emit {
    reply_t *o;
    int withscores;
} emit_t;

static void emit_one(void *data, const keel_zset_node_t *x)
{
    emit_t *e = data;
    if (e->o->failed)
        return;
    r_bulk(e->o, keel_zset_member(x), x->len);
    if (e->withscores)
        keel__zs_r_score(e->o, x->score);
}

static int zrange_generic(const call_t *c, int by, int rev)
{
    zrange_args_t a;
    const keel_zset_t *z;
    int lrc;
    if ((lrc = zrange_parse(c, 1, 0, by, rev, &a)) != 0 ||
        (lrc = keel__zs_read_lookup(c, 1, &z)) != 0)
        return keel__kvc_done(lrc);
    if (z == NULL) {
        r_array(c->reply, 0);
        return 0;
    }
    /* the header counts the nodes first: one walk to count, one to write */
    uint64_t n = zrange_walk(z, &a, count_one, NULL);
    r_array(c->reply, n * (a.withscores ? 2 : 1));
    emit_t e = {c->reply, a.withscores};
    if (n > 0)
        zrange_walk(z, &a, emit_one, &e);
    return 0;
}

#define SYNTAX_RANGE(fn, by, rev)                                                                  \
    int keel__zs_##fn##_syntax(const call_t *c)                                                    \
    {                                                                                              \
        zrange_args_t a;                                                                           \
        return zrange_parse(c, 1, 0, by, rev, &a);                                                 \
    }                                                                                              \
    int keel__zs_cmd_##fn(const call_t *c)                                                         \
    {                                                                                              \
        return zrange_generic(c, by, rev);                                                         \
    }

SYNTAX_RANGE(zrange, BY_AUTO, -1)
SYNTAX_RANGE(zrangebyscore, BY_SCORE, 0)
SYNTAX_RANGE(zrevrangebyscore, BY_SCORE, 1)
SYNTAX_RANGE(zrangebylex, BY_LEX, 0)
SYNTAX_RANGE(zrevrangebylex, BY_LEX, 1)
SYNTAX_RANGE(zrevrange, BY_RANK, 1)
#undef SYNTAX_RANGE

int keel__zs_zrangestore_syntax(const call_t *c)
{
    zrange_args_t a;
    return zrange_parse(c, 2, 1, BY_AUTO, -1, &a);
}

typedef struct collect {
    keel_zset_t *z;
    int failed;
    size_t maxlen;
} collect_t;

static void collect_one(void *data, const keel_zset_node_t *x)
{
    collect_t *k = data;
    keel_zset_node_t *n =
        k->failed ? NULL : keel_zset_node_new(keel_zset_member(x), x->len, x->score);
    if (n == NULL || keel_zset_reserve(k->z, 1, n->level) != 0) {
        keel_zset_node_free(n);
        k->failed = 1;
        return;
    }
    keel_zset_insert(k->z, n);
    if (x->len > k->maxlen)
        k->maxlen = x->len;
}

/* What Redis's store commands leave: listpack when the result is small enough. */
static void store_encoding(keel_zset_t *z, size_t maxlen)
{
    if (keel_zset_len(z) <= KEEL_ZSET_LISTPACK_ENTRIES_MAX &&
        maxlen <= KEEL_ZSET_LISTPACK_VALUE_BYTES_MAX)
        keel_zset_to_listpack(z);
    else
        keel_zset_set_skiplist(z);
}

int keel__zs_cmd_zrangestore(const call_t *c)
{
    zrange_args_t a;
    const keel_zset_t *src;
    int rc = zrange_parse(c, 2, 1, BY_AUTO, -1, &a);
    assert(rc == 0);
    if ((rc = keel__zs_read_lookup(c, 2, &src)) != 0)
        return keel__kvc_done(rc);
    uint64_t n = src ? zrange_walk(src, &a, count_one, NULL) : 0;
    if (n > 0 && (rc = keel__zs_check_new(c, c->argv[1], c->lens[1])) != 0)
        return keel__kvc_done(rc);
    keel_zset_t *dst = keel_zset_new();
    if (dst == NULL || keel_zset_reserve(dst, n, 0) != 0) {
        keel_zset_free(dst);
        return KEEL_ENOMEM;
    }
    keel_zset_set_skiplist(dst);
    collect_t k = {dst, 0, 0};
    if (n > 0)
        zrange_walk(src, &a, collect_one, &k);
    if (k.failed) {
        keel_zset_free(dst);
        return KEEL_ENOMEM;
    }
    store_encoding(dst, k.maxlen);
    int changed;
    if ((rc = keel__zs_store(c, c->argv[1], c->lens[1], dst, &changed)) != 0) {
        keel_zset_free(dst);
        return rc;
    }
    r_int(c->reply, (int64_t)n);
    if (changed)
        c->w->revision++;
    return 0;
}

/* ---- ZREMRANGEBYSCORE, ZREMRANGEBYRANK, ZREMRANGEBYLEX --------------------------------- */

int keel__zs_zremrangebyscore_syntax(const call_t *c)
{
    keel_zset_range_t r;
    return keel__zs_parse_range(c, 2, 3, &r);
}

int keel__zs_zremrangebyrank_syntax(const call_t *c)
{
    int64_t v;
    return keel__zs_parse_long(c, 2, &v) != 0 || keel__zs_parse_long(c, 3, &v) != 0 ? REPLIED : 0;
}

int keel__zs_zremrangebylex_syntax(const call_t *c)
{
    keel_zset_lex_t r;
    return keel__zs_parse_lex(c, 2, 3, &r);
}

/*
 * The first node a lex removal starts from: a listpack's first in range (zzlDeleteRange
 * ByLex), a skiplist's descent to the first >= min without the range checks
 * (zslDeleteRangeByLex): the two differ only for a set with unequal scores.
 */
static keel_zset_node_t *lex_delete_start(const keel_zset_t *z, const keel_zset_lex_t *r)
{
    return keel_zset_is_listpack(z) ? keel_zset_first_in_lex(z, r) : keel_zset_lex_seek(z, r);
}

static int zremrange(const call_t *c, int by)
{
    keel_zset_range_t sr;
    keel_zset_lex_t lr;
    int64_t s = 0, e = 0;
    int rc =
        by == BY_SCORE ? keel__zs_parse_range(c, 2, 3, &sr)
        : by == BY_LEX
            ? keel__zs_parse_lex(c, 2, 3, &lr)
            : (keel__zs_parse_long(c, 2, &s) != 0 || keel__zs_parse_long(c, 3, &e) != 0 ? REPLIED
                                                                                        : 0);
    keel_zset_t *z;
    if (rc != 0 || (rc = keel__zs_write_lookup(c, 1, &z)) != 0)
        return keel__kvc_done(rc);
    if (z == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    size_t before = keel_zset_bytes(z);
    int64_t n = 0;
    keel_zset_node_t *x = NULL, *next;
    if (by == BY_RANK) {
        int64_t l = (int64_t)keel_zset_len(z);
        if (s < 0)
            s = l + s;
        if (e < 0)
            e = l + e;
        if (s < 0)
            s = 0;
        if (s <= e && s < l) {
            if (e >= l)
                e = l - 1;
            x = keel_zset_at(z, (uint64_t)s);
            for (int64_t i = s; i <= e; i++, n++) {
                next = keel_zset_next(x);
                keel_zset_delete(z, x);
                x = next;
            }
        }
    } else if (by == BY_SCORE) {
        for (x = keel_zset_first_in_range(z, &sr); x && keel_zset_score_lte_max(x->score, &sr);
             x = next, n++) {
            next = keel_zset_next(x);
            keel_zset_delete(z, x);
        }
    } else {
        for (x = lex_delete_start(z, &lr);
             x && keel_zset_lex_lte_max(keel_zset_member(x), x->len, &lr); x = next, n++) {
            next = keel_zset_next(x);
            keel_zset_delete(z, x);
        }
    }
    r_int(c->reply, n);
    if (n > 0) {
        keel__zs_touch(c, c->argv[1], c->lens[1], before);
        c->w->revision++;
    }
    return 0;
}

int keel__zs_cmd_zremrangebyscore(const call_t *c)
{
    return zremrange(c, BY_SCORE);
}

int keel__zs_cmd_zremrangebyrank(const call_t *c)
{
    return zremrange(c, BY_RANK);
}

int keel__zs_cmd_zremrangebylex(const call_t *c)
{
    return zremrange(c, BY_LEX);
}
