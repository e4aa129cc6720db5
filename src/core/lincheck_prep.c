/* lincheck_prep.c - one key's (sub-)history in a time window prepared for the search: its ops
   classified, values nobody observes simplified, values turned into ids, interchangeable
   UNKNOWN ops found. */
#include "core/lincheck_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- preparing a (sub-)history of one key ------------------------------------------------- */

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : (a > b);
}

size_t keel__lc_uniq_i64(int64_t *v, size_t n)
{
    qsort(v, n, sizeof(int64_t), cmp_i64);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || v[w - 1] != v[i])
            v[w++] = v[i];
    return w;
}

/*
 * Values no operation observes (no read returns them, no cas expects them).
 * 1. UNKNOWN writes and cas of such a value are dropped when the key has no
 *    failed-compare cas. Sound: if a linearization places one, the register
 *    holds its value v until the next overwrite; nothing reads or expects v,
 *    so the op right after it (if any) is a write or UNKNOWN write, which
 *    overwrites v: deleting the op leaves a valid linearization.
 * 2. Every other write of such a value writes DEAD instead. Exact: every op
 *    behaves the same on DEAD as on v (no read returns either; every cas
 *    expectation differs from both), and it merges memo configurations that
 *    differ only in which unobserved value is current.
 * `vals` is scratch of npops entries.
 */
static void simplify_unobserved(search_t *s, int64_t *vals)
{
    size_t nv = 0;
    int has_neq = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        uint8_t k = s->pops[i].kind;
        has_neq |= k == P_CAS_NEQ;
        if (k == P_READ || k == P_CAS || k == P_UCAS || k == P_CAS_NEQ)
            vals[nv++] = s->pops[i].a;
    }
    qsort(vals, nv, sizeof(int64_t), cmp_i64);
    uint32_t w = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        pop_t p = s->pops[i];
        int64_t *v = p.kind == P_WRITE || p.kind == P_UWRITE ? &p.a : &p.b;
        if (p.kind != P_READ && p.kind != P_CAS_NEQ &&
            bsearch(v, vals, nv, sizeof(int64_t), cmp_i64) == NULL) {
            if (!has_neq && (p.kind == P_UWRITE || p.kind == P_UCAS))
                continue;
            *v = DEAD;
        }
        s->pops[w++] = p;
    }
    s->npops = w;
    s->has_neq = has_neq;
}

static uint32_t value_id(const search_t *s, int64_t v)
{
    const int64_t *f = bsearch(&v, s->vals, s->nvals, sizeof(int64_t), cmp_i64);
    assert(f != NULL);
    return (uint32_t)(f - s->vals);
}

/* Fills s->vals, turns each pop's values into ids, and sets obs_id / wr_id (value_lost()). */
static void index_values(search_t *s)
{
    uint32_t nv = 0;
    s->vals[nv++] = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        s->vals[nv++] = s->pops[i].a;
        if (s->pops[i].kind == P_CAS || s->pops[i].kind == P_UCAS)
            s->vals[nv++] = s->pops[i].b;
    }
    s->nvals = (uint32_t)keel__lc_uniq_i64(s->vals, nv);
    s->zero_id = value_id(s, 0);
    s->dead_id = s->vals[0] == DEAD ? 0 : NO_ID; /* DEAD is INT64_MIN: first if present */
    for (uint32_t i = 0; i < s->npops; i++) {
        pop_t *p = &s->pops[i];
        int swap = p->kind == P_CAS || p->kind == P_UCAS;
        p->a = value_id(s, p->a);
        p->b = swap ? value_id(s, p->b) : 0;
        int hard = !p->opt && (p->kind == P_READ || p->kind == P_CAS);
        p->obs_id = hard ? (uint32_t)p->a : NO_ID;
        int64_t w = p->kind == P_WRITE || p->kind == P_UWRITE ? p->a : swap ? p->b : -1;
        p->wr_id = w < 0 || w == s->dead_id ? NO_ID : (uint32_t)w;
    }
}

/*
 * Drops UNKNOWN cas ops to DEAD whose expected value e no op in the window
 * writes, no read returns and no definite cas expects (and that is not the
 * concrete initial value). The value can then only be e while still WILD (a
 * window's unknown initial value): such a cas only turns WILD into DEAD,
 * which is never useful, as WILD allows everything DEAD allows (no read or
 * swap succeeds on DEAD; failed compares and writes succeed on both), so not
 * firing it leaves a valid linearization. Uses wr_left as scratch
 * (search_reset() recounts it).
 */
static void drop_wild_only(search_t *s, int init_concrete)
{
    memset(s->wr_left, 0, s->nvals * sizeof(uint32_t));
    for (uint32_t i = 0; i < s->npops; i++) {
        const pop_t *p = &s->pops[i];
        if (p->wr_id != NO_ID)
            s->wr_left[p->wr_id]++;
        if (p->kind == P_READ || p->kind == P_CAS) /* may bind WILD to a */
            s->wr_left[p->a]++;
    }
    uint32_t w = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        const pop_t *p = &s->pops[i];
        if (p->kind == P_UCAS && s->dead_id != NO_ID && p->b == s->dead_id &&
            s->wr_left[p->a] == 0 && !(init_concrete && p->a == s->zero_id))
            continue;
        s->pops[w++] = *p;
    }
    s->npops = w;
}

static int twin_cmp(const void *pa, const void *pb)
{
    const struct twin_key *x = pa, *y = pb;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    if (x->b != y->b)
        return x->b < y->b ? -1 : 1;
    if (x->call != y->call)
        return x->call < y->call ? -1 : 1;
    return x->i < y->i ? -1 : (x->i > y->i);
}

/*
 * UNKNOWN ops with the same effect (kind and values) are interchangeable
 * except for their invocation times, and have no deadline: in any
 * linearization, the earliest-invoked unplaced one can stand in for the one
 * used (swap their roles; the later one is available whenever the earlier
 * was used). So the search only tries one whose earlier twin is placed.
 * Without this, many UNKNOWN writes (of DEAD, say) cost 2^n configurations.
 */
static void find_twins(search_t *s)
{
    uint32_t nt = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        const pop_t *p = &s->pops[i];
        s->twin[i] = NO_ID;
        if (p->kind == P_UWRITE || p->kind == P_UCAS)
            s->tkeys[nt++] = (struct twin_key){p->a, p->b, p->call, i, p->kind};
    }
    qsort(s->tkeys, nt, sizeof(*s->tkeys), twin_cmp);
    for (uint32_t j = 1; j < nt; j++) {
        const struct twin_key *x = &s->tkeys[j - 1], *y = &s->tkeys[j];
        if (x->kind == y->kind && x->a == y->a && x->b == y->b)
            s->twin[y->i] = x->i;
    }
}

/*
 * Fills s->pops with the ops of one key (idx[0..m) into ops) as seen in the
 * time window [lo, hi]: ops invoked after hi are dropped; ops that completed
 * before lo are absorbed into the (then unknown) initial value; ops still
 * running at hi may or may not have taken effect by hi, so they become
 * UNKNOWN; ops that straddle lo took effect before lo or inside the window
 * before they completed, so they are "optional": placed with their effect or
 * as a no-op, before their completion. lo = INT64_MIN, hi = INT64_MAX: the
 * whole key. Each rule is exact, which makes window failure monotone.
 */
void keel__lc_prepare(search_t *s, const keel_lc_op_t *ops, const uint32_t *idx, size_t m,
                      int64_t lo, int64_t hi, int64_t *scratch)
{
    uint32_t np = 0, ndef = 0;
    for (size_t j = 0; j < m; j++) {
        const keel_lc_op_t *o = &ops[idx[j]];
        if (o->outcome == KEEL_LC_FAIL || o->invoke_ts > hi)
            continue;
        int unknown = o->outcome == KEEL_LC_UNKNOWN;
        if (!unknown && o->complete_ts < lo)
            continue;
        if (!unknown && o->complete_ts > hi)
            unknown = 1;
        pop_t p = {.call = o->invoke_ts, .ret = unknown ? NO_TS_MAX : o->complete_ts};
        p.orig = idx[j];
        p.opt = !unknown && o->invoke_ts < lo;
        if (o->fn == KEEL_LC_READ) {
            if (unknown)
                continue;
            p.kind = P_READ;
            p.a = o->result;
        } else if (o->fn == KEEL_LC_WRITE) {
            p.kind = unknown ? P_UWRITE : P_WRITE;
            p.a = o->arg;
        } else if (o->outcome == KEEL_LC_OK && o->result == 0) {
            if (unknown)
                continue; /* a compare that failed changed nothing */
            p.kind = P_CAS_NEQ;
            p.a = o->expect;
        } else {
            p.kind = unknown ? P_UCAS : P_CAS;
            p.a = o->expect;
            p.b = o->arg;
        }
        s->pops[np++] = p;
    }
    s->npops = np;
    simplify_unobserved(s, scratch);
    for (uint32_t i = 0; i < s->npops; i++)
        ndef += s->pops[i].ret != NO_TS_MAX;
    s->ndef = ndef;
    index_values(s);
    drop_wild_only(s, lo == INT64_MIN);
    find_twins(s);
}
