/* kv_zset_ops.c - the sorted-set commands that take from sets or combine them: ZPOPMIN,
   ZPOPMAX, ZMPOP, ZRANDMEMBER, ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD and
   ZSCAN. The rest: kv_zset.c, kv_zset_range.c. */
#include "core/kv_zset_int.h"

#include "core/kv_coll.h"

#include "base/glob.h"
#include "base/hash.h"
#include "base/num.h"
#include "base/rand.h"
#include "proto/resp.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ZPOPMIN, ZPOPMAX, ZMPOP -------------------------------------------------------------- */

int keel__zs_pop(const call_t *c, const keel__zs_pop_opts_t *o, uint64_t *popped)
{
    keel_zset_t *z = NULL;
    size_t key = 0;
    *popped = 0;
    for (size_t i = o->first; i < o->first + o->n; i++) {
        int rc = keel__zs_write_lookup(c, i, &z);
        if (rc != 0)
            return rc;
        if (z) {
            key = i;
            break;
        }
    }
    if (z == NULL) {
        if (o->silent_when_empty)
            return 0;
        if (o->nil_when_empty)
            r_nil_array(c->reply);
        else
            r_array(c->reply, 0);
        return 0;
    }
    if (o->count == 0) {
        r_array(c->reply, 0);
        return 0;
    }
    uint64_t n = o->count < keel_zset_len(z) ? o->count : keel_zset_len(z);
    size_t before = keel_zset_bytes(z);
    if (o->nested) {
        r_array(c->reply, 2);
        r_bulk(c->reply, c->argv[key], c->lens[key]);
        r_array(c->reply, n);
    } else {
        r_array(c->reply, 2 * n + (o->emit_key ? 1 : 0));
        if (o->emit_key)
            r_bulk(c->reply, c->argv[key], c->lens[key]);
    }
    for (uint64_t i = 0; i < n; i++) {
        keel_zset_node_t *x = o->max ? keel_zset_last(z) : keel_zset_first(z);
        if (o->nested)
            r_array(c->reply, 2);
        r_bulk(c->reply, keel_zset_member(x), x->len);
        keel__zs_r_score(c->reply, x->score);
        keel_zset_delete(z, x);
    }
    *popped = n;
    keel__zs_touch(c, c->argv[key], c->lens[key], before);
    c->w->revision++;
    return 0;
}

/* ZPOPMIN / ZPOPMAX key [count]: count as Redis's getPositiveLongFromObjectOrReply. */
static int pop_count(const call_t *c, uint64_t *count)
{
    int64_t v = 1;
    if (c->argc > 3)
        return r_err(c->reply, ERR_SYNTAX);
    if (c->argc == 3 && (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v < 0))
        return r_err(c->reply, ERR_ZS_POSITIVE);
    *count = (uint64_t)v;
    return 0;
}

int keel__zs_zpop_syntax(const call_t *c)
{
    uint64_t n;
    return pop_count(c, &n);
}

static int zpop(const call_t *c, int max)
{
    keel__zs_pop_opts_t o = {.first = 1, .n = 1, .max = max};
    int rc = pop_count(c, &o.count);
    assert(rc == 0);
    uint64_t popped;
    return keel__kvc_done(keel__zs_pop(c, &o, &popped));
}

int keel__zs_cmd_zpopmin(const call_t *c)
{
    return zpop(c, 0);
}

int keel__zs_cmd_zpopmax(const call_t *c)
{
    return zpop(c, 1);
}

/* ZMPOP numkeys key... MIN|MAX [COUNT count] (Redis zmpopGenericCommand's parse). */
static int zmpop_parse(const call_t *c, size_t at, keel__zs_pop_opts_t *o)
{
    int64_t numkeys, count = -1;
    if (keel_parse_i64(c->argv[at], c->lens[at], &numkeys) != 0 || numkeys < 1)
        return r_err(c->reply, "ERR numkeys should be greater than 0");
    if ((uint64_t)numkeys >= c->argc - at - 1)
        return r_err(c->reply, ERR_SYNTAX);
    size_t where = at + 1 + (size_t)numkeys;
    *o = (keel__zs_pop_opts_t){
        .first = at + 1, .n = (size_t)numkeys, .nested = 1, .nil_when_empty = 1};
    if (keel__kvc_arg_is(c, where, "MAX"))
        o->max = 1;
    else if (!keel__kvc_arg_is(c, where, "MIN"))
        return r_err(c->reply, ERR_SYNTAX);
    for (size_t j = where + 1; j < c->argc; j++) {
        if (count == -1 && keel__kvc_arg_is(c, j, "COUNT") && j + 1 < c->argc) {
            j++;
            if (keel_parse_i64(c->argv[j], c->lens[j], &count) != 0 || count < 1)
                return r_err(c->reply, "ERR count should be greater than 0");
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    o->count = count == -1 ? 1 : (uint64_t)count;
    return 0;
}

int keel__zs_zmpop_syntax(const call_t *c)
{
    keel__zs_pop_opts_t o;
    return zmpop_parse(c, 1, &o);
}

int keel__zs_cmd_zmpop(const call_t *c)
{
    keel__zs_pop_opts_t o;
    int rc = zmpop_parse(c, 1, &o);
    assert(rc == 0);
    uint64_t popped;
    return keel__kvc_done(keel__zs_pop(c, &o, &popped));
}

/* ---- BZPOPMIN, BZPOPMAX, BZMPOP -------------------------------------------------------------- */

/*
 * What runs here is the form that does not wait (inside MULTI, or a served pop the server
 * proposes as KEEL.BPOP): it pops what is there or answers a nil array, as Redis 7.0 does
 * for a client that may not block. The waiting is the server's (lblock.c, via kv_bpop.c).
 */

/* BZPOPMIN / BZPOPMAX key [key ...] timeout: the timeout is judged first (Redis's
 * blockingGenericZpopCommand). */
int keel__zs_bzpop_syntax(const call_t *c)
{
    int64_t ms;
    return keel__kv_parse_timeout(c, c->argc - 1, &ms);
}

static int bzpop(const call_t *c, int max)
{
    if (keel__kv_timeout_in_range(c, c->argc - 1) != 0)
        return REPLIED;
    keel__zs_pop_opts_t o = {
        .first = 1, .n = c->argc - 2, .max = max, .count = 1, .emit_key = 1, .nil_when_empty = 1};
    uint64_t popped;
    return keel__kvc_done(keel__zs_pop(c, &o, &popped));
}

int keel__zs_cmd_bzpopmin(const call_t *c)
{
    return bzpop(c, 0);
}

int keel__zs_cmd_bzpopmax(const call_t *c)
{
    return bzpop(c, 1);
}

/* BZMPOP timeout numkeys key... MIN|MAX [COUNT count]: numkeys, MIN|MAX and COUNT are
 * judged before the timeout (Redis's zmpopGenericCommand, then the blocking pop). */
int keel__zs_bzmpop_syntax(const call_t *c)
{
    keel__zs_pop_opts_t o;
    int64_t ms;
    if (zmpop_parse(c, 2, &o) != 0)
        return REPLIED;
    return keel__kv_parse_timeout(c, 1, &ms);
}

int keel__zs_cmd_bzmpop(const call_t *c)
{
    keel__zs_pop_opts_t o;
    if (zmpop_parse(c, 2, &o) != 0 || keel__kv_timeout_in_range(c, 1) != 0)
        return REPLIED;
    uint64_t popped;
    return keel__kvc_done(keel__zs_pop(c, &o, &popped));
}

/* ---- what the server needs to block (kv_bpop.c) ------------------------------------------- */

static int is_name(const uint8_t *p, size_t n, const char *name)
{
    size_t k = 0;
    for (; k < n && name[k]; k++)
        if ((p[k] >= 'a' && p[k] <= 'z' ? p[k] - 32 : p[k]) != name[k])
            return 0;
    return k == n && name[k] == '\0';
}

int keel__zs_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                        keel_kv_bpop_t *out)
{
    const uint8_t *name = argv[0];
    size_t nl = lens[0];
    size_t timeout_i;
    int pop = is_name(name, nl, "BZPOPMIN") || is_name(name, nl, "BZPOPMAX");
    if (!pop && !is_name(name, nl, "BZMPOP"))
        return -1;
    memset(out, 0, sizeof(*out));
    out->type = KEEL__KV_TYPE_ZSET;
    out->count = 1;
    if (pop) {
        if (argc < 3)
            return 0;
        out->kind = KEEL_KV_BPOP_POP;
        out->first_key = 1;
        out->nkeys = (size_t)argc - 2;
        out->left = is_name(name, nl, "BZPOPMIN"); /* left: the lowest scores */
        timeout_i = (size_t)argc - 1;
    } else {
        if (argc < 5)
            return 0;
        /* the whole syntax as the command judges it */
        keel_buf_t scratch;
        keel_buf_init(&scratch, 0);
        reply_t r = {&scratch, 0, 0};
        call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &r, "bzmpop", NULL, NULL, NULL};
        keel__zs_pop_opts_t o;
        int rc = zmpop_parse(&c, 2, &o);
        keel_buf_free(&scratch);
        if (rc != 0)
            return 0;
        out->kind = KEEL_KV_BPOP_MPOP;
        out->first_key = o.first;
        out->nkeys = o.n;
        out->left = !o.max;
        out->count = o.count;
        timeout_i = 1;
    }
    int64_t ms;
    if (keel__kv_timeout_ms(argv[timeout_i], lens[timeout_i], &ms) != 0 || ms < 0)
        return 0;
    out->timeout_ms = ms;
    out->timeout_i = timeout_i;
    return 1;
}

uint64_t keel__zs_len(const void *obj)
{
    return keel_zset_len((const keel_zset_t *)obj);
}

/* ---- ZRANDMEMBER -------------------------------------------------------------------------- */

static int rand_parse(const call_t *c, int64_t *count, int *withscores)
{
    *count = 0;
    *withscores = 0;
    if (c->argc < 3)
        return 0;
    if (keel_parse_i64(c->argv[2], c->lens[2], count) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    if (*count == INT64_MIN)
        return r_err(c->reply, "ERR value is out of range, value must between "
                               "-9223372036854775807 and 9223372036854775807");
    if (c->argc > 4 || (c->argc == 4 && !keel__kvc_arg_is(c, 3, "WITHSCORES")))
        return r_err(c->reply, ERR_SYNTAX);
    if (c->argc == 4) {
        *withscores = 1;
        if (*count < -INT64_MAX / 2 || *count > INT64_MAX / 2)
            return r_err(c->reply, "ERR value is out of range");
    }
    return 0;
}

int keel__zs_zrandmember_syntax(const call_t *c)
{
    int64_t n;
    int w;
    return rand_parse(c, &n, &w);
}

static void emit_member(reply_t *o, const keel_zset_node_t *x, int withscores)
{
    r_bulk(o, keel_zset_member(x), x->len);
    if (withscores)
        keel__zs_r_score(o, x->score);
}

/* Distinct picks of count < len members, in random order: a partial Fisher-Yates over the
   nodes when count is a good part of the set, else draws with a set of those taken. */
static int rand_distinct(const call_t *c, const keel_zset_t *z, uint64_t count, int withscores,
                         keel_rand_t *rng)
{
    uint64_t len = keel_zset_len(z);
    if (count * 3 > len) {
        const keel_zset_node_t **all = malloc(len * sizeof(*all));
        if (all == NULL)
            return KEEL_ENOMEM;
        uint64_t i = 0;
        for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x))
            all[i++] = x;
        r_array(c->reply, count * (withscores ? 2 : 1));
        for (i = 0; i < count && !c->reply->failed; i++) {
            uint64_t j = i + keel_rand_below(rng, len - i);
            const keel_zset_node_t *t = all[i];
            all[i] = all[j];
            all[j] = t;
            emit_member(c->reply, all[i], withscores);
        }
        free(all);
        return 0;
    }
    uint64_t cap = 16;
    while (cap < 2 * count)
        cap *= 2;
    const keel_zset_node_t **taken = calloc(cap, sizeof(*taken));
    if (taken == NULL)
        return KEEL_ENOMEM;
    r_array(c->reply, count * (withscores ? 2 : 1));
    for (uint64_t i = 0; i < count && !c->reply->failed;) {
        const keel_zset_node_t *x = keel_zset_at(z, keel_rand_below(rng, len));
        uint64_t h = keel_hash64(&x, sizeof(x), 0) & (cap - 1);
        while (taken[h] && taken[h] != x)
            h = (h + 1) & (cap - 1);
        if (taken[h])
            continue;
        taken[h] = x;
        emit_member(c->reply, x, withscores);
        i++;
    }
    free(taken);
    return 0;
}

/*
 * ZRANDMEMBER key [count [WITHSCORES]]: as Redis's cases (one member; with repetition for
 * a negative count; the whole set, highest first, when count >= its size; else distinct
 * members in random order). A read changes nothing and the core has no random source: the
 * draws come from a generator seeded with the reader's time, the revision and the key, so
 * the same read at the same state and time answers the same on every node.
 */
int keel__zs_cmd_zrandmember(const call_t *c)
{
    int64_t count;
    int withscores;
    const keel_zset_t *z;
    int lrc;
    if ((lrc = rand_parse(c, &count, &withscores)) != 0 ||
        (lrc = keel__zs_read_lookup(c, 1, &z)) != 0)
        return keel__kvc_done(lrc);
    if (z == NULL) {
        if (c->argc == 2)
            r_nil(c->reply);
        else
            r_array(c->reply, 0);
        return 0;
    }
    keel_rand_t rng;
    keel_rand_seed(&rng, c->now ^ (c->kv->revision * 0x9e3779b97f4a7c15ull) ^
                             keel_hash64(c->argv[1], c->lens[1], 0x7a72616e64ull));
    uint64_t len = keel_zset_len(z);
    if (c->argc == 2) {
        const keel_zset_node_t *x = keel_zset_at(z, keel_rand_below(&rng, len));
        r_bulk(c->reply, keel_zset_member(x), x->len);
        return 0;
    }
    uint64_t n = count < 0 ? (uint64_t)-count : (uint64_t)count;
    if (n == 0) {
        r_array(c->reply, 0);
        return 0;
    }
    if (count < 0 || n == 1) {
        r_array(c->reply, n * (withscores ? 2 : 1));
        for (uint64_t i = 0; i < n && !c->reply->failed; i++)
            emit_member(c->reply, keel_zset_at(z, keel_rand_below(&rng, len)), withscores);
        return 0;
    }
    if (n >= len) {
        r_array(c->reply, len * (withscores ? 2 : 1));
        for (const keel_zset_node_t *x = keel_zset_last(z); x && !c->reply->failed;
             x = keel_zset_prev(x))
            emit_member(c->reply, x, withscores);
        return 0;
    }
    return rand_distinct(c, z, n, withscores, &rng);
}

/* ---- ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD ------------------------------ */

enum { OP_UNION, OP_INTER, OP_DIFF };
enum { AGG_SUM, AGG_MIN, AGG_MAX };

typedef struct setop {
    int op, agg, withscores, card, store;
    size_t at;      /* argv index of numkeys */
    size_t setnum;  /* sources, argv[at + 1 ..] */
    double *weight; /* setnum, owned */
    int64_t limit;  /* ZINTERCARD LIMIT; 0: none */
    const keel_zset_t **src;
} setop_t;

/* numkeys, as Redis checks it before it looks any key up: 0 or REPLIED. */
static int setop_numkeys(const call_t *c, size_t at, size_t *setnum)
{
    int64_t n;
    if (keel_parse_i64(c->argv[at], c->lens[at], &n) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    if (n < 1) {
        if (!c->reply->failed)
            track(c->reply, keel_resp_write_errorf(
                                c->reply->b, "ERR at least 1 input key is needed for '%s' command",
                                c->cmd_lname ? c->cmd_lname : "zunion"));
        return REPLIED;
    }
    if ((uint64_t)n > c->argc - at - 1)
        return r_err(c->reply, ERR_SYNTAX);
    *setnum = (size_t)n;
    return 0;
}

int keel__zs_setop_syntax(const call_t *c)
{
    size_t n;
    return setop_numkeys(c, 1, &n);
}

int keel__zs_setop_store_syntax(const call_t *c)
{
    size_t n;
    return setop_numkeys(c, 2, &n);
}

/* The options after the keys (Redis zunionInterDiffGenericCommand): 0 or REPLIED. */
static int setop_options(const call_t *c, setop_t *s)
{
    size_t j = s->at + 1 + s->setnum;
    while (j < c->argc) {
        size_t left = c->argc - j;
        if (s->op != OP_DIFF && !s->card && left >= s->setnum + 1 &&
            keel__kvc_arg_is(c, j, "WEIGHTS")) {
            j++;
            for (size_t i = 0; i < s->setnum; i++, j++)
                if (keel__zs_parse_score(c->argv[j], c->lens[j], &s->weight[i]) != 0)
                    return r_err(c->reply, "ERR weight value is not a float");
        } else if (s->op != OP_DIFF && !s->card && left >= 2 &&
                   keel__kvc_arg_is(c, j, "AGGREGATE")) {
            j++;
            if (keel__kvc_arg_is(c, j, "SUM"))
                s->agg = AGG_SUM;
            else if (keel__kvc_arg_is(c, j, "MIN"))
                s->agg = AGG_MIN;
            else if (keel__kvc_arg_is(c, j, "MAX"))
                s->agg = AGG_MAX;
            else
                return r_err(c->reply, ERR_SYNTAX);
            j++;
        } else if (!s->store && !s->card && keel__kvc_arg_is(c, j, "WITHSCORES")) {
            j++;
            s->withscores = 1;
        } else if (s->card && left >= 2 && keel__kvc_arg_is(c, j, "LIMIT")) {
            j++;
            if (keel_parse_i64(c->argv[j], c->lens[j], &s->limit) != 0 || s->limit < 0)
                return r_err(c->reply, "ERR LIMIT can't be negative");
            j++;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

static void aggregate(double *target, double v, int agg)
{
    if (agg == AGG_SUM) {
        *target += v;
        if (isnan(*target)) /* inf + -inf: Redis's convention is 0 */
            *target = 0.0;
    } else if (agg == AGG_MIN) {
        *target = v < *target ? v : *target;
    } else {
        *target = v > *target ? v : *target;
    }
}

static double weighted(double w, double s)
{
    double v = w * s;
    return isnan(v) ? 0.0 : v; /* 0 x inf */
}

typedef struct by_card {
    const keel_zset_t *z;
    double w;
    size_t i;
} by_card_t;

static uint64_t card(const keel_zset_t *z)
{
    return z ? keel_zset_len(z) : 0;
}

/* Smallest first; equal sizes in argument order (Redis's qsort there is glibc's merge sort,
   which keeps it). */
static int card_cmp(const void *a, const void *b)
{
    const by_card_t *x = a, *y = b;
    if (card(x->z) != card(y->z))
        return card(x->z) < card(y->z) ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Adds member with score to acc (aggregating when present): 0 or KEEL_ENOMEM. */
static int acc_add(keel_zset_t *acc, const keel_zset_node_t *x, double v, int agg, size_t *maxlen)
{
    keel_zset_node_t *y = keel_zset_find(acc, keel_zset_member(x), x->len);
    if (y) {
        double t = y->score;
        aggregate(&t, v, agg);
        keel_zset_rescore(acc, y, t);
        return 0;
    }
    if ((y = keel_zset_node_new(keel_zset_member(x), x->len, v)) == NULL ||
        keel_zset_reserve(acc, 1, y->level) != 0) {
        keel_zset_node_free(y);
        return KEEL_ENOMEM;
    }
    keel_zset_insert(acc, y);
    if (x->len > *maxlen)
        *maxlen = x->len;
    return 0;
}

/* The result of the operation into acc (or its size into *n for ZINTERCARD). */
static int setop_compute(const setop_t *s, by_card_t *v, keel_zset_t *acc, uint64_t *n,
                         size_t *maxlen)
{
    *n = 0;
    if (s->op == OP_UNION) {
        for (size_t i = 0; i < s->setnum; i++)
            for (const keel_zset_node_t *x = v[i].z ? keel_zset_first(v[i].z) : NULL; x;
                 x = keel_zset_next(x))
                if (acc_add(acc, x, weighted(v[i].w, x->score), s->agg, maxlen) != 0)
                    return KEEL_ENOMEM;
        return 0;
    }
    if (s->op == OP_DIFF) {
        for (const keel_zset_node_t *x = v[0].z ? keel_zset_first(v[0].z) : NULL; x;
             x = keel_zset_next(x)) {
            size_t j = 1;
            while (j < s->setnum &&
                   !(v[j].z && keel_zset_find(v[j].z, keel_zset_member(x), x->len)))
                j++;
            if (j == s->setnum && acc_add(acc, x, x->score, AGG_SUM, maxlen) != 0)
                return KEEL_ENOMEM;
        }
        return 0;
    }
    for (const keel_zset_node_t *x = v[0].z ? keel_zset_first(v[0].z) : NULL; x;
         x = keel_zset_next(x)) {
        double score = weighted(v[0].w, x->score);
        size_t j = 1;
        for (; j < s->setnum; j++) {
            const keel_zset_node_t *y =
                v[j].z ? keel_zset_find(v[j].z, keel_zset_member(x), x->len) : NULL;
            if (y == NULL)
                break;
            aggregate(&score, weighted(v[j].w, y->score), s->agg);
        }
        if (j < s->setnum)
            continue;
        if (s->card) {
            if (++*n == (uint64_t)s->limit)
                break;
        } else if (acc_add(acc, x, score, s->agg, maxlen) != 0) {
            return KEEL_ENOMEM;
        }
    }
    return 0;
}

/*
 * One source of ZUNION and the others: a sorted set, or a plain set read as one whose every
 * score is 1 (Redis's zuiInitIterator walks a set that way). The set's sorted copy is made
 * here and owned by *tmp (the caller frees it): O(members), as Redis's walk is. 0, REPLIED
 * (WRONGTYPE) or KEEL_ENOMEM.
 */
static int setop_source(const call_t *c, size_t i, const keel_zset_t **z, keel_zset_t **tmp)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    *z = NULL;
    *tmp = NULL;
    if (e == NULL)
        return 0;
    if (e->type == KEEL__KV_TYPE_ZSET) {
        keel_zset_t *s = NULL;
        int rc = keel__zs_unpacked(c, e, &s);
        *z = s;
        return rc;
    }
    if (e->type != KEEL__KV_TYPE_SET)
        return r_err(c->reply, ERR_WRONGTYPE);
    keel__kc_t *t;
    int rc = keel__ks_table(c, e, 0, &t);
    if (rc != 0)
        return rc;
    keel_zset_t *copy = keel_zset_new();
    if (copy == NULL)
        return KEEL_ENOMEM;
    keel_zset_set_skiplist(copy);
    for (const keel__kc_item_t *it = keel__kc_first(t); it != NULL; it = keel__kc_next(t, it)) {
        keel_zset_node_t *x = keel_zset_node_new(keel__kc_f(it), keel__kc_fl(it), 1.0);
        if (x == NULL || keel_zset_reserve(copy, 1, x->level) != 0) {
            keel_zset_node_free(x);
            keel_zset_free(copy);
            return KEEL_ENOMEM;
        }
        keel_zset_insert(copy, x); /* a set's members are distinct */
    }
    assert(keel_zset_len(copy) == keel__kc_count(t));
    *z = *tmp = copy;
    return 0;
}

static int setop(const call_t *c, int op, int store, int card_only)
{
    setop_t s = {.op = op, .store = store, .card = card_only, .at = store ? 2 : 1};
    int rc = setop_numkeys(c, s.at, &s.setnum);
    if (rc != 0)
        return keel__kvc_done(rc);
    by_card_t *v = calloc(s.setnum, sizeof(*v));
    keel_zset_t **tmp = calloc(s.setnum, sizeof(*tmp)); /* plain sets' sorted copies */
    s.weight = malloc(s.setnum * sizeof(*s.weight));
    keel_zset_t *acc = card_only ? NULL : keel_zset_new();
    if (v == NULL || tmp == NULL || s.weight == NULL || (!card_only && acc == NULL)) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    if (acc) /* built as Redis builds it: a hash-table set, -0 kept */
        keel_zset_set_skiplist(acc);
    for (size_t i = 0; i < s.setnum; i++) {
        s.weight[i] = 1.0;
        if ((rc = setop_source(c, s.at + 1 + i, &v[i].z, &tmp[i])) != 0)
            goto out;
    }
    if ((rc = setop_options(c, &s)) != 0)
        goto out;
    for (size_t i = 0; i < s.setnum; i++) {
        v[i].w = s.weight[i];
        v[i].i = i;
    }
    if (op != OP_DIFF)
        qsort(v, s.setnum, sizeof(*v), card_cmp);
    uint64_t n;
    size_t maxlen = 0;
    if ((rc = setop_compute(&s, v, acc, &n, &maxlen)) != 0)
        goto out;
    if (card_only) {
        r_int(c->reply, (int64_t)n);
    } else if (!store) {
        r_array(c->reply, keel_zset_len(acc) * (s.withscores ? 2 : 1));
        for (const keel_zset_node_t *x = keel_zset_first(acc); x && !c->reply->failed;
             x = keel_zset_next(x))
            emit_member(c->reply, x, s.withscores);
    } else {
        if (keel_zset_len(acc) > 0 && (rc = keel__zs_check_new(c, c->argv[1], c->lens[1])) != 0)
            goto out;
        if (keel_zset_len(acc) <= KEEL_ZSET_LISTPACK_ENTRIES_MAX &&
            maxlen <= KEEL_ZSET_LISTPACK_VALUE_BYTES_MAX)
            keel_zset_to_listpack(acc);
        uint64_t len = keel_zset_len(acc);
        int changed;
        if ((rc = keel__zs_store(c, c->argv[1], c->lens[1], acc, &changed)) != 0)
            goto out;
        acc = NULL; /* the key's, or freed */
        r_int(c->reply, (int64_t)len);
        if (changed)
            c->w->revision++;
    }
out:
    keel_zset_free(acc);
    for (size_t i = 0; tmp != NULL && i < s.setnum; i++)
        keel_zset_free(tmp[i]);
    free(tmp);
    free(v);
    free(s.weight);
    return keel__kvc_done(rc);
}

int keel__zs_cmd_zunion(const call_t *c)
{
    return setop(c, OP_UNION, 0, 0);
}

int keel__zs_cmd_zinter(const call_t *c)
{
    return setop(c, OP_INTER, 0, 0);
}

int keel__zs_cmd_zdiff(const call_t *c)
{
    return setop(c, OP_DIFF, 0, 0);
}

int keel__zs_cmd_zintercard(const call_t *c)
{
    return setop(c, OP_INTER, 0, 1);
}

int keel__zs_cmd_zunionstore(const call_t *c)
{
    return setop(c, OP_UNION, 1, 0);
}

int keel__zs_cmd_zinterstore(const call_t *c)
{
    return setop(c, OP_INTER, 1, 0);
}

int keel__zs_cmd_zdiffstore(const call_t *c)
{
    return setop(c, OP_DIFF, 1, 0);
}

/* ---- ZSCAN ---------------------------------------------------------------------------------- */

/* The cursor as Redis's parseScanCursorOrReply (strtoul): see kv_scan.c. 0 or -1. */
static int parse_cursor(const uint8_t *p, size_t n, uint64_t *out)
{
    size_t i = n > 0 && (p[0] == '+' || p[0] == '-');
    *out = 0;
    if (n == 0)
        return 0;
    if (i == n)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = p[0] == '-' ? (uint64_t)0 - v : v;
    return 0;
}

int keel__zs_zscan_syntax(const call_t *c)
{
    uint64_t cur;
    if (parse_cursor(c->argv[2], c->lens[2], &cur) != 0)
        return r_err(c->reply, "ERR invalid cursor");
    return 0;
}

/* Buckets one ZSCAN call may visit per COUNT (Redis: 10). */
#define ZSCAN_BUCKETS_PER_COUNT 10u

typedef struct zscan_ctx {
    const keel_zset_node_t **got;
    size_t n, cap;
    int failed;
} zscan_ctx_t;

static void zscan_one(void *data, const keel_zset_node_t *x)
{
    zscan_ctx_t *s = data;
    if (s->n == s->cap && !s->failed) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        const keel_zset_node_t **g = realloc(s->got, cap * sizeof(*g));
        if (g == NULL) {
            s->failed = 1;
            return;
        }
        s->got = g;
        s->cap = cap;
    }
    if (!s->failed)
        s->got[s->n++] = x;
}

static int zscan_emit(const call_t *c, uint64_t cursor, const keel_zset_node_t *const *got,
                      size_t n, const uint8_t *pat, size_t pat_len, int listpack)
{
    size_t keep = 0;
    for (size_t i = 0; i < n; i++)
        keep += pat == NULL || keel_glob_match(pat, pat_len, keel_zset_member(got[i]), got[i]->len);
    char cur[KEEL_DEC_BYTES_MAX];
    size_t cn = keel_fmt_u64(cur, cursor);
    r_array(c->reply, 2);
    r_bulk(c->reply, (const uint8_t *)cur, cn);
    r_array(c->reply, 2 * keep);
    for (size_t i = 0; i < n && !c->reply->failed; i++) {
        const keel_zset_node_t *x = got[i];
        if (pat && !keel_glob_match(pat, pat_len, keel_zset_member(x), x->len))
            continue;
        char t[ZS_SCORE_TEXT_BYTES_MAX];
        size_t tn = listpack ? keel__zs_fmt_stored(t, x->score) : keel__zs_fmt_reply(t, x->score);
        r_bulk(c->reply, keel_zset_member(x), x->len);
        r_bulk(c->reply, (const uint8_t *)t, tn);
    }
    return 0;
}

/*
 * ZSCAN key cursor [MATCH pattern] [COUNT n]: a set Redis would hold as a listpack comes
 * whole in one reply with cursor 0, in order, scores in their stored form; a bigger one is
 * scanned over its hash table with Redis's reverse-binary cursor (a member present for the
 * whole scan is returned at least once), scores as "%.17g" (-0 kept, 1e17 as 1e+17).
 */
int keel__zs_cmd_zscan(const call_t *c)
{
    uint64_t cursor;
    parse_cursor(c->argv[2], c->lens[2], &cursor);
    const keel_zset_t *z;
    int lrc = keel__zs_read_lookup(c, 1, &z);
    if (lrc != 0)
        return keel__kvc_done(lrc);
    if (z == NULL) {
        r_array(c->reply, 2);
        r_bulk(c->reply, (const uint8_t *)"0", 1);
        r_array(c->reply, 0);
        return 0;
    }
    int64_t count = 10;
    const uint8_t *pat = NULL;
    size_t pat_len = 0;
    for (size_t i = 3; i < c->argc; i += 2) {
        if (c->argc - i < 2)
            return r_err(c->reply, ERR_SYNTAX);
        if (keel__kvc_arg_is(c, i, "COUNT")) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &count) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            if (count < 1)
                return r_err(c->reply, ERR_SYNTAX);
        } else if (keel__kvc_arg_is(c, i, "MATCH")) {
            pat = c->argv[i + 1];
            pat_len = c->lens[i + 1];
            if (pat_len == 1 && pat[0] == '*')
                pat = NULL;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (keel_zset_is_listpack(z)) {
        const keel_zset_node_t *got[KEEL_ZSET_LISTPACK_ENTRIES_MAX];
        size_t n = 0;
        for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x)) {
            assert(n < KEEL_ZSET_LISTPACK_ENTRIES_MAX);
            got[n++] = x;
        }
        return zscan_emit(c, 0, got, n, pat, pat_len, 1);
    }
    zscan_ctx_t s = {NULL, 0, 0, 0};
    uint64_t buckets = (uint64_t)count > UINT64_MAX / ZSCAN_BUCKETS_PER_COUNT
                           ? UINT64_MAX
                           : (uint64_t)count * ZSCAN_BUCKETS_PER_COUNT;
    do
        cursor = keel_zset_scan(z, cursor, zscan_one, &s);
    while (cursor != 0 && --buckets > 0 && s.n < (uint64_t)count && !s.failed);
    if (s.failed) {
        free(s.got);
        return KEEL_ENOMEM;
    }
    int rc = zscan_emit(c, cursor, s.got, s.n, pat, pat_len, 0);
    free(s.got);
    return rc;
}
