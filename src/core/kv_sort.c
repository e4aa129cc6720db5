/* kv_sort.c - SORT and SORT_RO: a list's, set's or sorted set's elements sorted as numbers or
 * bytes, or by values found through a pattern (BY), with LIMIT, GET patterns and STORE
 * (Redis 7.0's sort.c, its replies checked against redis-server by
 * tests/system/test_redis_diff_sort.py). Where Redis leaves the result to chance, keel
 * decides (docs/kv.md, "Differences from Redis"): bytes compare as bytes (Redis uses
 * strcoll, which is the same in the C locale), elements whose sort values tie come in
 * element order (Redis's qsort leaves ties of ALPHA BY values in any order), and a set
 * sorted BY a pattern without '*' comes ALPHA sorted (Redis does so with STORE; without it
 * Redis returns its table order). */
#include "core/kv_coll.h"
#include "core/kv_list_int.h"
#include "core/kv_zset_int.h"

#include "base/num.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ERR_SORT_SCORES "ERR One or more scores can't be converted into double"
/* Elements one SORT handles (Redis has no bound: it allocates a vector of all of them). */
#define SORT_ELEMENTS_MAX ((uint64_t)1 << 24)
#define ERR_SORT_TOO_MANY "ERR keel: SORT sorts at most 16777216 elements (SORT_ELEMENTS_MAX)"

typedef struct sort_opts {
    int desc, alpha, dontsort;
    int64_t limit_start, limit_count;
    size_t by, store; /* argv index of BY's pattern, of STORE's key; 0: none */
    size_t ngets;
} sort_opts_t;

/* One element to sort: its bytes, and what it sorts by. */
typedef struct sobj {
    const uint8_t *p;
    size_t n;
    double score;
    const uint8_t *cmp; /* ALPHA BY: the value found (NULL: none) */
    size_t cmp_n;
} sobj_t;

typedef struct sorter {
    const call_t *c;
    const sort_opts_t *o;
    uint8_t *key; /* a pattern's key, built here */
    size_t key_cap;
} sorter_t;

/* ---- options -------------------------------------------------------------------------- */

/* The options; gets (if not NULL, argc entries) gets GET's pattern indexes in order. */
static int parse(const call_t *c, int readonly, sort_opts_t *o, size_t *gets)
{
    memset(o, 0, sizeof(*o));
    o->limit_count = -1;
    for (size_t j = 2; j < c->argc; j++) {
        size_t left = c->argc - j - 1;
        if (keel__kvc_arg_is(c, j, "ASC")) {
            o->desc = 0;
        } else if (keel__kvc_arg_is(c, j, "DESC")) {
            o->desc = 1;
        } else if (keel__kvc_arg_is(c, j, "ALPHA")) {
            o->alpha = 1;
        } else if (keel__kvc_arg_is(c, j, "LIMIT") && left >= 2) {
            if (keel_parse_i64(c->argv[j + 1], c->lens[j + 1], &o->limit_start) != 0 ||
                keel_parse_i64(c->argv[j + 2], c->lens[j + 2], &o->limit_count) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            j += 2;
        } else if (!readonly && keel__kvc_arg_is(c, j, "STORE") && left >= 1) {
            o->store = ++j;
        } else if (keel__kvc_arg_is(c, j, "BY") && left >= 1) {
            o->by = ++j;
            o->dontsort = memchr(c->argv[j], '*', c->lens[j]) == NULL;
        } else if (keel__kvc_arg_is(c, j, "GET") && left >= 1) {
            if (gets)
                gets[o->ngets] = j + 1;
            o->ngets++;
            j++;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__kvc_sort_syntax(const call_t *c)
{
    sort_opts_t o;
    return parse(c, 0, &o, NULL);
}

int keel__kvc_sort_ro_syntax(const call_t *c)
{
    sort_opts_t o;
    return parse(c, 1, &o, NULL);
}

/* ---- patterns ------------------------------------------------------------------------- */

/*
 * Redis lookupKeyByPattern: "#" is the element itself; otherwise the key made of the pattern
 * with its first '*' replaced by the element (no '*': nothing), and, when "->field" follows
 * the '*', that field of the hash there. 1 and the bytes, 0 when there is nothing (no key,
 * another type, no field), or KEEL_ENOMEM.
 */
static int by_pattern(sorter_t *s, const uint8_t *pat, size_t pn, const uint8_t *el, size_t en,
                      const uint8_t **out, size_t *on)
{
    const call_t *c = s->c;
    if (pn == 1 && pat[0] == '#') {
        *out = el;
        *on = en;
        return 1;
    }
    const uint8_t *star = memchr(pat, '*', pn);
    if (star == NULL)
        return 0;
    const uint8_t *field = NULL, *end = pat + pn;
    for (const uint8_t *f = star + 1; f + 2 < end; f++)
        if (f[0] == '-' && f[1] == '>') {
            field = f + 2;
            break;
        }
    size_t pre = (size_t)(star - pat), post = (size_t)((field ? field - 2 : end) - (star + 1));
    size_t kn = pre + en + post;
    if (kn > s->key_cap) {
        uint8_t *k = realloc(s->key, kn);
        if (k == NULL)
            return KEEL_ENOMEM;
        s->key = k;
        s->key_cap = kn;
    }
    memcpy(s->key, pat, pre);
    memcpy(s->key + pre, el, en);
    memcpy(s->key + pre + en, star + 1, post);
    const keel__kv_entry_t *e =
        keel__kv_find(c->kv, s->key, kn, keel__kv_hash(c->kv, s->key, kn), NULL);
    if (e == NULL || !keel__kv_alive(c->kv, e, c->now))
        return 0;
    if (field == NULL) {
        if (e->type != KEEL__KV_TYPE_STRING)
            return 0;
        *out = keel__kv_cval(e);
        *on = e->val_len;
        return 1;
    }
    if (e->type != KEEL__KV_TYPE_HASH)
        return 0;
    const keel__kc_item_t *it = keel__kc_find(keel__kv_obj(e), field, (size_t)(end - field));
    if (it == NULL)
        return 0;
    *out = keel__kc_val(it);
    *on = keel__kc_vl(it);
    return 1;
}

/* ---- sorting -------------------------------------------------------------------------- */

static int bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    return r != 0 ? r : (an > bn) - (an < bn);
}

/* Redis sortCompare, with ties of ALPHA BY values broken by the elements' bytes. */
static int so_cmp(const sort_opts_t *o, const sobj_t *a, const sobj_t *b)
{
    int r;
    if (!o->alpha) {
        r = a->score > b->score ? 1 : a->score < b->score ? -1 : bytes_cmp(a->p, a->n, b->p, b->n);
    } else if (o->by) {
        if (a->cmp == NULL || b->cmp == NULL)
            r = (a->cmp != NULL) - (b->cmp != NULL);
        else
            r = bytes_cmp(a->cmp, a->cmp_n, b->cmp, b->cmp_n);
        if (r == 0)
            r = bytes_cmp(a->p, a->n, b->p, b->n);
    } else {
        r = bytes_cmp(a->p, a->n, b->p, b->n);
    }
    return o->desc ? -r : r;
}

/* A merge sort (the comparison needs the options; no global for qsort). */
static void merge_sort(const sort_opts_t *o, sobj_t *v, sobj_t *tmp, size_t n)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(o, v, tmp, h);
    merge_sort(o, v + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = so_cmp(o, &v[j], &v[i]) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    memcpy(v, tmp, k * sizeof(*v));
}

/* Redis's numeric sort value: strtod of the whole text (leading spaces allowed, "" is 0).
 * 0, 1 when it is no number, or KEEL_ENOMEM. */
static int score_of(const uint8_t *p, size_t n, double *out)
{
    char stack[64], *b = n < sizeof(stack) ? stack : malloc(n + 1);
    if (b == NULL)
        return KEEL_ENOMEM;
    memcpy(b, p, n);
    b[n] = '\0';
    char *end;
    errno = 0;
    *out = strtod(b, &end);
    int bad = *end != '\0' || errno == ERANGE || isnan(*out);
    if (b != stack)
        free(b);
    return bad ? 1 : 0;
}

/* ---- loading the elements ------------------------------------------------------------- */

/* The elements of e (a list, set or sorted set) into v, as Redis loads them: for a list or
 * sorted set not sorted, only [start, end] in their own order (reversed for DESC). */
static uint64_t load(const call_t *c, const keel__kv_entry_t *e, const keel_zset_t *z,
                     const keel__kc_t *set, const sort_opts_t *o, int64_t start, int64_t end,
                     sobj_t *v)
{
    uint64_t j = 0;
    int direct = o->dontsort && e->type != KEEL__KV_TYPE_SET;
    (void)c;
    if (e->type == KEEL__KV_TYPE_LIST) {
        const klist_t *l = keel__kv_obj(e);
        pos_t p = o->desc && direct ? keel__kvl_back(l) : keel__kvl_front(l);
        const uint8_t *el;
        size_t n;
        int64_t i = 0;
        while ((o->desc && direct ? keel__kvl_next_bwd(&p, &el, &n)
                                  : keel__kvl_next_fwd(&p, &el, &n)) != 0) {
            if (!direct || (i >= start && i <= end))
                v[j++] = (sobj_t){.p = el, .n = n};
            if (direct && ++i > end)
                break;
        }
    } else if (e->type == KEEL__KV_TYPE_SET) {
        const keel__kc_t *t = set;
        for (const keel__kc_item_t *it = keel__kc_first(t); it; it = keel__kc_next(t, it))
            v[j++] = (sobj_t){.p = keel__kc_f(it), .n = keel__kc_fl(it)};
    } else if (!direct) {
        for (keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x))
            v[j++] = (sobj_t){.p = keel_zset_member(x), .n = x->len};
    } else if (end >= start) {
        uint64_t len = keel_zset_len(z);
        keel_zset_node_t *x =
            keel_zset_at(z, o->desc ? len - 1 - (uint64_t)start : (uint64_t)start);
        for (int64_t i = start; i <= end && x; i++) {
            v[j++] = (sobj_t){.p = keel_zset_member(x), .n = x->len};
            x = o->desc ? keel_zset_prev(x) : keel_zset_next(x);
        }
    }
    return j;
}

/* ---- the command ---------------------------------------------------------------------- */

/* The result's elements (or what GET found for them; "" for nothing) as one list: 0, or
 * KEEL_ENOMEM. *l is NULL for an empty result. */
static int build_store(sorter_t *s, const size_t *gets, const sobj_t *v, int64_t start, int64_t end,
                       uint64_t total, klist_t **l)
{
    *l = NULL;
    if (total == 0)
        return 0;
    const uint8_t **ps = malloc(total * sizeof(*ps));
    size_t *ns = malloc(total * sizeof(*ns));
    int rc = ps && ns ? 0 : KEEL_ENOMEM;
    uint64_t k = 0;
    for (int64_t i = start; rc == 0 && i <= end; i++) {
        if (s->o->ngets == 0) {
            ps[k] = v[i].p;
            ns[k++] = v[i].n;
        }
        for (size_t g = 0; rc == 0 && g < s->o->ngets; g++) {
            const call_t *c = s->c;
            int got =
                by_pattern(s, c->argv[gets[g]], c->lens[gets[g]], v[i].p, v[i].n, &ps[k], &ns[k]);
            if (got < 0)
                rc = got;
            else if (got == 0)
                ps[k] = (const uint8_t *)"", ns[k] = 0;
            k++;
        }
    }
    if (rc == 0 && (*l = keel__kvl_list_of(ps, ns, total, TAIL)) == NULL)
        rc = KEEL_ENOMEM;
    free(ps);
    free(ns);
    return rc;
}

static void reply_result(sorter_t *s, const size_t *gets, const sobj_t *v, int64_t start,
                         int64_t end, uint64_t total)
{
    const call_t *c = s->c;
    r_array(c->reply, total);
    for (int64_t i = start; i <= end && !c->reply->failed; i++) {
        if (s->o->ngets == 0)
            r_bulk(c->reply, v[i].p, v[i].n);
        for (size_t g = 0; g < s->o->ngets; g++) {
            const uint8_t *p;
            size_t n;
            int got = by_pattern(s, c->argv[gets[g]], c->lens[gets[g]], v[i].p, v[i].n, &p, &n);
            if (got > 0)
                r_bulk(c->reply, p, n);
            else if (got == 0)
                r_nil(c->reply);
            else /* the key's buffer: a reply that cannot be written fails as one */
                c->reply->failed = KEEL_ENOMEM;
        }
    }
}

/* Each element's sort value (numbers unless ALPHA; through BY's pattern if given): 0, 1 when
 * one is no number, or KEEL_ENOMEM. */
static int weigh(sorter_t *s, sobj_t *v, uint64_t n)
{
    const call_t *c = s->c;
    const sort_opts_t *o = s->o;
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *p = v[i].p;
        size_t len = v[i].n;
        if (o->by) {
            int got = by_pattern(s, c->argv[o->by], c->lens[o->by], v[i].p, v[i].n, &p, &len);
            if (got < 0)
                return got;
            if (got == 0)
                continue; /* sorts as 0, or first for ALPHA */
        }
        if (o->alpha) {
            if (o->by) {
                v[i].cmp = p;
                v[i].cmp_n = len;
            }
            continue;
        }
        int rc = score_of(p, len, &v[i].score);
        if (rc == KEEL_ENOMEM)
            return rc;
        bad |= rc != 0;
    }
    return bad;
}

static uint64_t length_of(const keel__kv_entry_t *e, const keel_zset_t *z, const keel__kc_t *set)
{
    if (e == NULL)
        return 0;
    if (e->type == KEEL__KV_TYPE_LIST)
        return ((const klist_t *)keel__kv_obj(e))->len;
    if (e->type == KEEL__KV_TYPE_SET)
        return keel__kc_count(set);
    return keel_zset_len(z);
}

static int sort_cmd(const call_t *c, int readonly)
{
    sort_opts_t o;
    size_t *gets = malloc(c->argc * sizeof(*gets));
    if (gets == NULL)
        return KEEL_ENOMEM;
    int rc = parse(c, readonly, &o, gets);
    const keel__kv_entry_t *e = rc ? NULL : keel__kvc_lookup(c, 1);
    keel_zset_t *z = NULL;
    if (rc == 0 && e && e->type != KEEL__KV_TYPE_LIST && e->type != KEEL__KV_TYPE_SET &&
        e->type != KEEL__KV_TYPE_ZSET)
        rc = r_err(c->reply, ERR_WRONGTYPE);
    if (rc == 0 && e && e->type == KEEL__KV_TYPE_ZSET)
        rc = keel__zs_unpacked(c, e, &z);
    keel__kc_t *set = NULL; /* a set's table (an inline set's built for the command) */
    if (rc == 0 && e && e->type == KEEL__KV_TYPE_SET)
        rc = keel__ks_table(c, e, 0, &set);
    if (rc == 0 && o.dontsort && e && e->type == KEEL__KV_TYPE_SET) {
        o.dontsort = 0; /* a set's own order is its table's: sort it as Redis's STORE does */
        o.alpha = 1;
        o.by = 0;
    }
    uint64_t len = rc == 0 ? length_of(e, z, set) : 0;
    if (rc == 0 && len > SORT_ELEMENTS_MAX)
        rc = r_err(c->reply, ERR_SORT_TOO_MANY);
    if (rc != 0) {
        free(gets);
        return keel__kvc_done(rc);
    }
    /* Redis's LIMIT arithmetic, saturating where Redis's would overflow */
    int64_t vlen = (int64_t)len;
    int64_t start = o.limit_start < 0 ? 0 : o.limit_start;
    int64_t end = o.limit_count < 0                   ? vlen - 1
                  : o.limit_count > INT64_MAX - start ? INT64_MAX
                                                      : start + o.limit_count - 1;
    if (start >= vlen) {
        start = vlen - 1;
        end = vlen - 2;
    }
    if (end >= vlen)
        end = vlen - 1;
    sorter_t s = {.c = c, .o = &o};
    sobj_t *v = calloc(len ? len : 1, sizeof(*v));
    sobj_t *tmp = o.dontsort ? NULL : calloc(len ? len : 1, sizeof(*tmp));
    if (v == NULL || (!o.dontsort && tmp == NULL))
        rc = KEEL_ENOMEM;
    uint64_t n = rc == 0 && e ? load(c, e, z, set, &o, start, end, v) : 0;
    if (o.dontsort && e && e->type != KEEL__KV_TYPE_SET) { /* loaded [start, end] alone */
        end -= start;
        start = 0;
    }
    int bad = 0;
    if (rc == 0 && !o.dontsort) {
        if ((bad = weigh(&s, v, n)) < 0)
            rc = bad;
        else
            merge_sort(&o, v, tmp, n);
    }
    uint64_t total = (end >= start ? (uint64_t)(end - start + 1) : 0) * (o.ngets ? o.ngets : 1);
    if (rc == 0 && bad) {
        r_err(c->reply, ERR_SORT_SCORES);
    } else if (rc == 0 && !o.store) {
        reply_result(&s, gets, v, start, end, total);
    } else if (rc == 0) {
        klist_t *l;
        int changed = 0;
        size_t dn = c->lens[o.store];
        rc = keel__zs_check_new(c, c->argv[o.store], dn); /* sizes, keys_max: any type's */
        if (rc == 0 && (rc = build_store(&s, gets, v, start, end, total, &l)) == 0 &&
            (rc = keel__kvc_store_obj(c, c->argv[o.store], dn, KEEL__KV_TYPE_LIST, l,
                                      l ? l->bytes : 0, &changed)) != 0)
            keel__kvl_list_free(l);
        if (rc == 0) {
            r_int(c->reply, (int64_t)total);
            if (changed)
                c->w->revision++;
        }
    }
    free(gets);
    free(v);
    free(tmp);
    free(s.key);
    return keel__kvc_done(rc);
}

int keel__kvc_cmd_sort(const call_t *c)
{
    return sort_cmd(c, 0);
}

int keel__kvc_cmd_sort_ro(const call_t *c)
{
    return sort_cmd(c, 1);
}
