/* lincheck.c - Wing-Gong-Lowe linearizability search with memoization, one register per key. */
#include "core/lincheck.h"

#include "base/err.h"
#include "base/rand.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How a check runs (docs/lincheck.md has the long form):
 *
 * 1. Validate, then group the operations by key (linearizability is
 *    compositional, so each key is checked alone).
 * 2. For one key, "prepare" a sub-history: drop FAIL ops and UNKNOWN reads,
 *    classify the rest (pkind below), and prune UNKNOWN writes whose value no
 *    operation could ever observe (sound: see prune_unobservable()).
 * 3. Sort invocation and completion events by time (invocation first on a
 *    tie: touching operations are concurrent) into a doubly linked list and
 *    run the WGL search: repeatedly take the first pending invocation that
 *    the register model accepts, "lift" it out of the list, and backtrack
 *    when a completion event is reached (that operation can no longer be
 *    placed). UNKNOWN operations have no completion event, so they can be
 *    placed at any point after their invocation or never; the search ends
 *    successfully once every definite operation is placed.
 * 4. Memoization: a configuration is (set of placed ops, register value).
 *    Every placed op was invoked before the first completion event T still
 *    in the list, so the set is exactly "all ops invoked before T minus the
 *    invocations still in the list before T". That gives an exact key of
 *    size O(concurrency) instead of an O(n) bitset (Porcupine stores the
 *    bitset): (value, position of T, ids of the pending invocations).
 * 5. If a key fails, shrink a failing time window (find_window()).
 */

/* A register value that stands for "any value" (the state at a window's left cut). */
#define WILD INT64_MIN
#define NO_TS_MAX INT64_MAX

enum pkind {
    P_READ,    /* a = value seen */
    P_WRITE,   /* a = value written */
    P_CAS,     /* a = expected, b = new: swapped */
    P_CAS_NEQ, /* a = expected: compare failed, so current != a */
    P_UWRITE,  /* UNKNOWN write of a */
    P_UCAS,    /* UNKNOWN cas a -> b: placed only where it would swap */
};

typedef struct pop {
    int64_t a, b;
    int64_t call, ret; /* ret == NO_TS_MAX: UNKNOWN, no completion event */
    uint32_t orig;     /* index into the caller's ops[] */
    uint8_t kind;
    uint8_t opt; /* straddles a window's left cut: took effect before it, or before ret */
} pop_t;

typedef struct ent {
    int64_t t;
    uint32_t op; /* index into pops */
    uint32_t is_ret;
} ent_t;

typedef struct memo_ent {
    uint64_t hash;
    int64_t state;
    uint32_t ret_pos, ncand;
    size_t off; /* into arena */
} memo_ent_t;

/* Buffers for one search, reused (and grown) across the searches of a check. */
typedef struct search {
    const keel_lc_limits_t *lim;
    pop_t *pops;
    uint32_t npops, ndef;
    ent_t *ent;
    uint32_t nent;
    int32_t *next, *prev;      /* nent + 1 slots; slot nent is the list head */
    int32_t *op_call, *op_ret; /* entry positions per pop; -1: none */
    uint32_t *stk_op;
    int64_t *stk_state;
    uint8_t *stk_var; /* 0 placed with its effect, 1 placed as a no-op (optional ops) */
    uint32_t *cand;   /* scratch: the memo key being built */
    size_t cap;       /* pops capacity of all arrays above */
    /* memo */
    uint32_t *slots; /* 0 empty, else 1 + index into ments */
    size_t nslots;
    memo_ent_t *ments;
    size_t nments, ments_cap;
    uint32_t *arena;
    size_t arena_len, arena_cap;
    /* outputs of the last run */
    uint64_t steps, states;
    uint32_t stuck_pop; /* UINT32_MAX: none */
    uint32_t stuck_depth;
    int wild_neq;
} search_t;

const char *keel_lc_fn_name(keel_lc_fn_t fn)
{
    switch (fn) {
    case KEEL_LC_READ:
        return "read";
    case KEEL_LC_WRITE:
        return "write";
    case KEEL_LC_CAS:
        return "cas";
    }
    return "?";
}

const char *keel_lc_outcome_name(keel_lc_outcome_t outcome)
{
    switch (outcome) {
    case KEEL_LC_OK:
        return "ok";
    case KEEL_LC_FAIL:
        return "fail";
    case KEEL_LC_UNKNOWN:
        return "unknown";
    }
    return "?";
}

void keel_lc_limits_default(keel_lc_limits_t *lim)
{
    lim->steps_max = 50 * 1000 * 1000;
    lim->states_max = 2 * 1000 * 1000;
    lim->ops_per_key_max = 10 * 1000 * 1000;
}

/* ---- the register model ---------------------------------------------------------------- */

/* Applies p to state st; returns 1 and the next state if the register allows it there. */
static int model_step(const pop_t *p, int64_t st, int64_t *out)
{
    switch ((enum pkind)p->kind) {
    case P_READ:
        if (st != p->a && st != WILD)
            return 0;
        *out = p->a;
        return 1;
    case P_WRITE:
    case P_UWRITE:
        *out = p->a;
        return 1;
    case P_CAS:
    case P_UCAS:
        if (st != p->a && st != WILD)
            return 0;
        *out = p->b;
        return 1;
    case P_CAS_NEQ:
        /* From WILD this over-approximates (WILD stays WILD, not "WILD but != a");
         * check_window() redoes such successes exactly. */
        if (st == p->a)
            return 0;
        *out = st;
        return 1;
    }
    assert(0 && "bad pkind");
    return 0;
}

/* ---- buffers ------------------------------------------------------------------------------ */

static void search_free(search_t *s)
{
    free(s->pops);
    free(s->ent);
    free(s->next);
    free(s->prev);
    free(s->op_call);
    free(s->op_ret);
    free(s->stk_op);
    free(s->stk_state);
    free(s->stk_var);
    free(s->cand);
    free(s->slots);
    free(s->ments);
    free(s->arena);
    memset(s, 0, sizeof(*s));
}

static int search_reserve(search_t *s, size_t nops)
{
    if (nops <= s->cap)
        return 0;
    size_t ne = 2 * nops + 1;
    void *p[10];
    p[0] = realloc(s->pops, nops * sizeof(pop_t));
    if (p[0])
        s->pops = p[0];
    p[1] = realloc(s->ent, ne * sizeof(ent_t));
    if (p[1])
        s->ent = p[1];
    p[2] = realloc(s->next, ne * sizeof(int32_t));
    if (p[2])
        s->next = p[2];
    p[3] = realloc(s->prev, ne * sizeof(int32_t));
    if (p[3])
        s->prev = p[3];
    p[4] = realloc(s->op_call, nops * sizeof(int32_t));
    if (p[4])
        s->op_call = p[4];
    p[5] = realloc(s->op_ret, nops * sizeof(int32_t));
    if (p[5])
        s->op_ret = p[5];
    p[6] = realloc(s->stk_op, nops * sizeof(uint32_t));
    if (p[6])
        s->stk_op = p[6];
    p[7] = realloc(s->stk_state, nops * sizeof(int64_t));
    if (p[7])
        s->stk_state = p[7];
    p[8] = realloc(s->cand, nops * sizeof(uint32_t));
    if (p[8])
        s->cand = p[8];
    p[9] = realloc(s->stk_var, nops);
    if (p[9])
        s->stk_var = p[9];
    for (int i = 0; i < 10; i++)
        if (p[i] == NULL)
            return KEEL_ENOMEM;
    s->cap = nops;
    return 0;
}

/* ---- memo: exact set of visited configurations ------------------------------------------- */

static uint64_t memo_hash(int64_t state, uint32_t ret_pos, const uint32_t *cand, uint32_t nc)
{
    uint64_t h = keel_mix64((uint64_t)state ^ 0x5bd1e995ULL);
    h = keel_mix64(h ^ ret_pos);
    for (uint32_t i = 0; i < nc; i++)
        h = keel_mix64(h + cand[i]);
    return h;
}

static int memo_grow(search_t *s)
{
    size_t n = s->nslots ? s->nslots * 2 : 1024;
    uint32_t *slots = calloc(n, sizeof(uint32_t));
    if (slots == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < s->nments; i++) {
        size_t j = s->ments[i].hash & (n - 1);
        while (slots[j] != 0)
            j = (j + 1) & (n - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = n;
    return 0;
}

static int memo_append(search_t *s, uint64_t h, int64_t state, uint32_t ret_pos, uint32_t nc)
{
    if (s->nments == s->ments_cap) {
        size_t cap = s->ments_cap ? s->ments_cap * 2 : 1024;
        memo_ent_t *m = realloc(s->ments, cap * sizeof(*m));
        if (m == NULL)
            return KEEL_ENOMEM;
        s->ments = m;
        s->ments_cap = cap;
    }
    if (s->arena_len + nc > s->arena_cap) {
        size_t cap = s->arena_cap ? s->arena_cap * 2 : 4096;
        while (cap < s->arena_len + nc)
            cap *= 2;
        uint32_t *a = realloc(s->arena, cap * sizeof(*a));
        if (a == NULL)
            return KEEL_ENOMEM;
        s->arena = a;
        s->arena_cap = cap;
    }
    memcpy(s->arena + s->arena_len, s->cand, nc * sizeof(uint32_t));
    s->ments[s->nments] = (memo_ent_t){h, state, ret_pos, nc, s->arena_len};
    s->arena_len += nc;
    s->nments++;
    return 0;
}

/*
 * Builds the key of the current configuration (the list must hold at least one
 * completion event) and inserts it. Returns 1 if it was new, 0 if already
 * visited, or a negative KEEL_E* (KEEL_ETOOBIG past states_max).
 */
static int memo_visit(search_t *s, int64_t state)
{
    uint32_t nc = 0;
    int32_t e = s->next[s->nent];
    while (e >= 0 && !s->ent[e].is_ret) {
        s->cand[nc++] = s->ent[e].op;
        e = s->next[e];
    }
    assert(e >= 0 && "a definite op remains, so a completion event remains");
    uint32_t ret_pos = (uint32_t)e;
    uint64_t h = memo_hash(state, ret_pos, s->cand, nc);
    if (s->nments * 2 >= s->nslots) {
        int rc = memo_grow(s);
        if (rc < 0)
            return rc;
    }
    size_t j = h & (s->nslots - 1);
    for (; s->slots[j] != 0; j = (j + 1) & (s->nslots - 1)) {
        const memo_ent_t *m = &s->ments[s->slots[j] - 1];
        if (m->hash == h && m->state == state && m->ret_pos == ret_pos && m->ncand == nc &&
            memcmp(s->arena + m->off, s->cand, nc * sizeof(uint32_t)) == 0)
            return 0;
    }
    if (s->nments >= s->lim->states_max)
        return KEEL_ETOOBIG;
    int rc = memo_append(s, h, state, ret_pos, nc);
    if (rc < 0)
        return rc;
    s->slots[j] = (uint32_t)s->nments;
    return 1;
}

/* ---- the event list ------------------------------------------------------------------------- */

static int ent_cmp(const void *pa, const void *pb)
{
    const ent_t *a = pa, *b = pb;
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    if (a->is_ret != b->is_ret) /* invocation first: touching ops are concurrent */
        return a->is_ret ? 1 : -1;
    return a->op < b->op ? -1 : (a->op > b->op);
}

static void build_list(search_t *s)
{
    uint32_t ne = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        s->ent[ne++] = (ent_t){s->pops[i].call, i, 0};
        if (s->pops[i].ret != NO_TS_MAX)
            s->ent[ne++] = (ent_t){s->pops[i].ret, i, 1};
    }
    qsort(s->ent, ne, sizeof(ent_t), ent_cmp);
    s->nent = ne;
    for (uint32_t i = 0; i < s->npops; i++)
        s->op_ret[i] = -1;
    for (uint32_t e = 0; e < ne; e++) {
        if (s->ent[e].is_ret)
            s->op_ret[s->ent[e].op] = (int32_t)e;
        else
            s->op_call[s->ent[e].op] = (int32_t)e;
        s->next[e] = e + 1 < ne ? (int32_t)(e + 1) : -1;
        s->prev[e] = e == 0 ? (int32_t)ne : (int32_t)(e - 1);
    }
    s->next[ne] = ne > 0 ? 0 : -1; /* head */
    s->prev[ne] = -1;
}

static void unlink_ent(search_t *s, int32_t e)
{
    s->next[s->prev[e]] = s->next[e];
    if (s->next[e] >= 0)
        s->prev[s->next[e]] = s->prev[e];
}

static void relink_ent(search_t *s, int32_t e)
{
    s->next[s->prev[e]] = e;
    if (s->next[e] >= 0)
        s->prev[s->next[e]] = e;
}

/* Removes op i's events from the list; undone in reverse (LIFO) order by unlift(). */
static void lift(search_t *s, uint32_t i)
{
    unlink_ent(s, s->op_call[i]);
    if (s->op_ret[i] >= 0)
        unlink_ent(s, s->op_ret[i]);
}

static void unlift(search_t *s, uint32_t i)
{
    if (s->op_ret[i] >= 0)
        relink_ent(s, s->op_ret[i]);
    relink_ent(s, s->op_call[i]);
}

/* ---- the search ----------------------------------------------------------------------------- */

static void note_stuck(search_t *s, uint32_t depth, uint32_t op)
{
    if (s->stuck_pop == UINT32_MAX || depth > s->stuck_depth) {
        s->stuck_pop = op;
        s->stuck_depth = depth;
    }
}

/*
 * Places op i (variant 0: its effect; 1: as a no-op, only for optional ops)
 * if the model and the memo allow. Returns 1 placed, 0 not, or a KEEL_E*.
 */
static int try_place(search_t *s, uint32_t i, uint8_t variant, int64_t *state, uint32_t *remaining,
                     uint32_t *sp)
{
    int64_t ns = *state;
    if (variant == 0 && !model_step(&s->pops[i], *state, &ns))
        return 0;
    lift(s, i);
    uint32_t left = *remaining - (s->pops[i].ret != NO_TS_MAX);
    int fresh = left == 0 ? 1 : memo_visit(s, ns);
    if (fresh <= 0) {
        unlift(s, i);
        return fresh;
    }
    s->stk_op[*sp] = i;
    s->stk_var[*sp] = variant;
    s->stk_state[(*sp)++] = *state;
    *state = ns;
    *remaining = left;
    return 1;
}

/* Did the linearization on the stack use a failed-compare cas while the value was still WILD? */
static int used_neq_on_wild(const search_t *s, uint32_t sp)
{
    for (uint32_t j = 0; j < sp; j++)
        if (s->pops[s->stk_op[j]].kind == P_CAS_NEQ && s->stk_var[j] == 0 &&
            s->stk_state[j] == WILD)
            return 1;
    return 0;
}

/*
 * The WGL loop over the prepared pops (already in s). Sets *lin to 1 or 0, or
 * returns a negative KEEL_E* (KEEL_ETOOBIG when a limit stops it). On success
 * s->wild_neq tells whether the linearization found leaned on WILD being
 * "anything" for a failed-compare cas (then check_window() retries exactly).
 */
static int search_run(search_t *s, int64_t init, int *lin)
{
    s->steps = 0;
    s->nments = 0;
    s->arena_len = 0;
    s->stuck_pop = UINT32_MAX;
    s->stuck_depth = 0;
    if (s->nslots > 0)
        memset(s->slots, 0, s->nslots * sizeof(uint32_t));
    build_list(s);
    uint32_t remaining = s->ndef, sp = 0;
    int64_t state = init;
    int32_t e = s->next[s->nent];
    int rc = 0;
    *lin = 1;
    while (remaining > 0) {
        assert(e >= 0 && "a pending completion event stops every scan");
        if (++s->steps > s->lim->steps_max) {
            rc = KEEL_ETOOBIG;
            break;
        }
        uint32_t i = s->ent[e].op;
        int placed = 0;
        if (s->ent[e].is_ret) { /* op i can no longer be placed: undo the last choice */
            note_stuck(s, sp, i);
            if (sp == 0) {
                *lin = 0;
                break;
            }
            i = s->stk_op[--sp];
            state = s->stk_state[sp];
            unlift(s, i);
            remaining += s->pops[i].ret != NO_TS_MAX;
            if (s->stk_var[sp] == 0 && s->pops[i].opt)
                placed = try_place(s, i, 1, &state, &remaining, &sp);
            e = placed ? s->next[s->nent] : s->next[s->op_call[i]];
        } else {
            placed = try_place(s, i, 0, &state, &remaining, &sp);
            if (placed == 0 && s->pops[i].opt)
                placed = try_place(s, i, 1, &state, &remaining, &sp);
            e = placed ? s->next[s->nent] : s->next[e];
        }
        if (placed < 0) {
            rc = placed;
            break;
        }
    }
    s->wild_neq = rc == 0 && *lin && init == WILD && used_neq_on_wild(s, sp);
    s->states = s->nments;
    return rc;
}

/* ---- preparing a (sub-)history of one key ------------------------------------------------- */

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : (a > b);
}

/*
 * Drops UNKNOWN writes and cas whose new value v nothing can observe. Sound:
 * if a linearization places such an op, then until the next overwrite the
 * register holds v; no read returns v and no cas (definite or UNKNOWN)
 * expects v, and no failed-compare cas exists on the key, so the op right
 * after it (if any) is a write or UNKNOWN write, which overwrites v: deleting
 * the op leaves a valid linearization. Histories with a failed-compare cas
 * keep all their UNKNOWN ops. `vals` is scratch of npops entries.
 */
static void prune_unobservable(search_t *s, int64_t *vals)
{
    size_t nv = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        uint8_t k = s->pops[i].kind;
        if (k == P_CAS_NEQ)
            return;
        if (k == P_READ || k == P_CAS || k == P_UCAS)
            vals[nv++] = s->pops[i].a;
    }
    qsort(vals, nv, sizeof(int64_t), cmp_i64);
    uint32_t w = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        const pop_t *p = &s->pops[i];
        int64_t v = p->kind == P_UWRITE ? p->a : p->b;
        if ((p->kind == P_UWRITE || p->kind == P_UCAS) &&
            bsearch(&v, vals, nv, sizeof(int64_t), cmp_i64) == NULL)
            continue;
        s->pops[w++] = *p;
    }
    s->npops = w;
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
static void prepare(search_t *s, const keel_lc_op_t *ops, const uint32_t *idx, size_t m, int64_t lo,
                    int64_t hi, int64_t *scratch)
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
    prune_unobservable(s, scratch);
    for (uint32_t i = 0; i < s->npops; i++)
        ndef += s->pops[i].ret != NO_TS_MAX;
    s->ndef = ndef;
}

/* ---- one key -------------------------------------------------------------------------------- */

typedef struct keyctx {
    const keel_lc_op_t *ops;
    const uint32_t *idx; /* this key's ops, in input order */
    size_t m;
    search_t *s;
    int64_t *scratch;
    keel_lc_result_t *out;
} keyctx_t;

static int run_counted(keyctx_t *k, int64_t init, int *lin)
{
    int rc = search_run(k->s, init, lin);
    k->out->steps += k->s->steps;
    k->out->states += k->s->states;
    return rc;
}

static size_t uniq_i64(int64_t *v, size_t n);

/*
 * "Some initial value", exactly: tries each value the window mentions and
 * one value it does not (all unmentioned values behave alike).
 */
static int check_each_initial(keyctx_t *k, int *lin)
{
    const search_t *s = k->s;
    int64_t *v = malloc((2 * (size_t)s->npops + 1) * sizeof(int64_t));
    if (v == NULL)
        return KEEL_ENOMEM;
    size_t nv = 0;
    for (uint32_t i = 0; i < s->npops; i++) {
        v[nv++] = s->pops[i].a;
        if (s->pops[i].kind == P_CAS || s->pops[i].kind == P_UCAS)
            v[nv++] = s->pops[i].b;
    }
    nv = uniq_i64(v, nv);
    int64_t fresh = 1;
    for (size_t j = 0; j < nv; j++)
        fresh += v[j] == fresh;
    v[nv++] = fresh;
    int rc = 0;
    *lin = 0;
    for (size_t j = 0; j < nv && rc == 0 && !*lin; j++)
        rc = run_counted(k, v[j], lin);
    free(v);
    return rc;
}

/*
 * Checks the key's ops inside [lo, hi]; *lin = 1/0, or a negative KEEL_E*.
 * From a cut (lo > INT64_MIN) the register starts as WILD, which binds to
 * the first value an op needs. That is exact except for a failed-compare cas
 * met while still WILD (WILD cannot remember "!= expect"), so a success that
 * used one is re-checked value by value.
 */
static int check_window(keyctx_t *k, int64_t lo, int64_t hi, int *lin)
{
    prepare(k->s, k->ops, k->idx, k->m, lo, hi, k->scratch);
    int rc = run_counted(k, lo == INT64_MIN ? 0 : WILD, lin);
    if (rc < 0 || !*lin || !k->s->wild_neq)
        return rc;
    return check_each_initial(k, lin);
}

static size_t uniq_i64(int64_t *v, size_t n)
{
    qsort(v, n, sizeof(int64_t), cmp_i64);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || v[w - 1] != v[i])
            v[w++] = v[i];
    return w;
}

/*
 * Shrinks the failing window of a key known to fail. Both ends are found by
 * binary search, which is valid because failure is monotone: if the window
 * [lo, hi] has a linearization, so does every window inside it (cut the
 * linearization at the two times). First hi: the earliest completion time at
 * which the history seen so far (from the start, initial value 0) already
 * fails. Then lo: the latest cut whose window [lo, hi], from ANY initial
 * value, still fails. Result: no time window strictly inside [lo, hi] fails.
 * Returns 0 and sets *minimal to 0 if a limit cut the shrinking short.
 */
static int find_window(keyctx_t *k, int64_t *lo_out, int64_t *hi_out, int *minimal)
{
    int64_t *t = k->scratch + k->m; /* scratch holds 3 * m values */
    size_t nt = 0;
    for (size_t j = 0; j < k->m; j++)
        if (k->ops[k->idx[j]].outcome == KEEL_LC_OK)
            t[nt++] = k->ops[k->idx[j]].complete_ts;
    nt = uniq_i64(t, nt);
    *minimal = 1;
    size_t a = 0, b = nt; /* the answer is in t[a..b); b == nt stands for "whole key" */
    while (a < b && *minimal) {
        size_t mid = a + (b - a) / 2;
        int lin, rc = check_window(k, INT64_MIN, t[mid], &lin);
        if (rc == KEEL_ETOOBIG)
            *minimal = 0;
        else if (rc < 0)
            return rc;
        else if (lin)
            a = mid + 1;
        else
            b = mid;
    }
    int64_t hi = b < nt ? t[b] : INT64_MAX;
    *hi_out = hi;
    nt = 0;
    for (size_t j = 0; j < k->m; j++) {
        const keel_lc_op_t *o = &k->ops[k->idx[j]];
        if (o->outcome != KEEL_LC_FAIL && o->invoke_ts <= hi)
            t[nt++] = o->invoke_ts;
        if (o->outcome == KEEL_LC_OK && o->complete_ts <= hi)
            t[nt++] = o->complete_ts;
    }
    nt = uniq_i64(t, nt);
    /* known: lo = INT64_MIN fails. Find the last failing index in t (or none). */
    size_t fa = 0, fb = nt; /* candidates t[fa..fb) not yet known; all before fa fail */
    while (fa < fb && *minimal) {
        size_t mid = fa + (fb - fa) / 2;
        int lin, rc = check_window(k, t[mid], hi, &lin);
        if (rc == KEEL_ETOOBIG)
            *minimal = 0;
        else if (rc < 0)
            return rc;
        else if (lin)
            fb = mid;
        else
            fa = mid + 1;
    }
    *lo_out = fa == 0 ? INT64_MIN : t[fa - 1];
    return 0;
}

/* ---- the whole history ---------------------------------------------------------------------- */

static int validate(const keel_lc_op_t *ops, size_t n, keel_lc_result_t *out)
{
    for (size_t i = 0; i < n; i++) {
        const keel_lc_op_t *o = &ops[i];
        const char *why = NULL;
        if ((unsigned)o->fn > KEEL_LC_CAS || (unsigned)o->outcome > KEEL_LC_UNKNOWN)
            why = "fn or outcome out of range";
        else if (o->outcome != KEEL_LC_UNKNOWN && o->complete_ts < o->invoke_ts)
            why = "completes before it is invoked";
        else if ((o->fn != KEEL_LC_READ && o->arg == WILD) ||
                 (o->fn == KEEL_LC_CAS && o->expect == WILD) ||
                 (o->fn == KEEL_LC_READ && o->result == WILD))
            why = "uses the reserved value INT64_MIN";
        else if (o->fn == KEEL_LC_CAS && o->outcome == KEEL_LC_OK && o->result != 0 &&
                 o->result != 1)
            why = "is a cas whose result is neither 0 nor 1";
        if (why != NULL) {
            snprintf(out->explain, sizeof(out->explain), "bad input: op %zu %s", i, why);
            return KEEL_EINVAL;
        }
    }
    return 0;
}

typedef struct keyidx {
    uint64_t key;
    uint32_t idx;
} keyidx_t;

static int keyidx_cmp(const void *pa, const void *pb)
{
    const keyidx_t *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int pop_call_cmp(const void *pa, const void *pb)
{
    const pop_t *a = pa, *b = pb;
    if (a->call != b->call)
        return a->call < b->call ? -1 : 1;
    return a->orig < b->orig ? -1 : (a->orig > b->orig);
}

static void describe_failure(keyctx_t *k, uint64_t key, int64_t lo, int64_t hi)
{
    keel_lc_result_t *out = k->out;
    char from[48];
    if (lo == INT64_MIN)
        snprintf(from, sizeof(from), "the start (initial value 0)");
    else
        snprintf(from, sizeof(from), "%" PRId64 " (any initial value)", lo);
    int len = snprintf(out->explain, sizeof(out->explain),
                       "key %" PRIu64 ": not linearizable: the %zu operations in the time window "
                       "from %s to %" PRId64 " have no order a single register allows%s",
                       key, out->window_len, from, hi,
                       out->window_minimal ? "" : " (window not fully shrunk: a limit was hit)");
    if (out->stuck_op != SIZE_MAX && len > 0 && (size_t)len < sizeof(out->explain)) {
        const keel_lc_op_t *o = &k->ops[out->stuck_op];
        snprintf(out->explain + len, sizeof(out->explain) - (size_t)len,
                 "; op %zu (process %" PRIu64
                 ", %s) cannot be placed before it completes at %" PRId64,
                 out->stuck_op, o->process, keel_lc_fn_name(o->fn), o->complete_ts);
    }
}

/* The key fails: shrink the window, list its ops, say which op got stuck. */
static int report_failure(keyctx_t *k, uint64_t key)
{
    keel_lc_result_t *out = k->out;
    search_t *s = k->s;
    out->verdict = 0;
    out->key = key;
    out->stuck_op = s->stuck_pop == UINT32_MAX ? SIZE_MAX : s->pops[s->stuck_pop].orig;
    int64_t lo, hi;
    int minimal, lin;
    int rc = find_window(k, &lo, &hi, &minimal);
    if (rc < 0)
        return rc;
    rc = check_window(k, lo, hi, &lin);
    if (rc < 0 && rc != KEEL_ETOOBIG)
        return rc;
    if (rc == 0 && !lin && s->stuck_pop != UINT32_MAX)
        out->stuck_op = s->pops[s->stuck_pop].orig;
    qsort(s->pops, s->npops, sizeof(pop_t), pop_call_cmp);
    out->window_len = s->npops;
    for (uint32_t i = 0; i < s->npops && i < KEEL_LC_WINDOW_OPS_MAX; i++)
        out->window_ops[i] = s->pops[i].orig;
    out->window_start_ts = lo;
    out->window_end_ts = hi;
    out->window_minimal = minimal;
    describe_failure(k, key, lo, hi);
    return 0;
}

/* Checks every key until one fails; remembers the first key that hit a limit. */
static int check_keys(const keel_lc_op_t *ops, const keyidx_t *kv, uint32_t *idx, size_t n,
                      search_t *s, keel_lc_result_t *out)
{
    int64_t *scratch = NULL;
    int rc = 0, gave_up = 0;
    for (size_t a = 0, b; a < n; a = b) {
        for (b = a; b < n && kv[b].key == kv[a].key; b++)
            idx[b - a] = kv[b].idx;
        size_t m = b - a;
        out->keys++;
        if (m > s->lim->ops_per_key_max) {
            if (!gave_up++)
                out->key = kv[a].key;
            continue;
        }
        free(scratch);
        scratch = malloc(3 * m * sizeof(int64_t));
        if (scratch == NULL || search_reserve(s, m) < 0) {
            rc = KEEL_ENOMEM;
            break;
        }
        keyctx_t k = {ops, idx, m, s, scratch, out};
        int lin;
        rc = check_window(&k, INT64_MIN, INT64_MAX, &lin);
        out->ops_checked += s->npops;
        if (rc == KEEL_ETOOBIG) {
            if (!gave_up++)
                out->key = kv[a].key;
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        if (!lin) {
            rc = report_failure(&k, kv[a].key);
            break;
        }
    }
    free(scratch);
    if (rc == 0 && out->verdict != 0 && gave_up) {
        out->verdict = KEEL_ETOOBIG;
        snprintf(out->explain, sizeof(out->explain),
                 "gave up: %d key(s) hit a limit (first: key %" PRIu64 "; steps_max %" PRIu64
                 ", states_max %" PRIu64 ", ops_per_key_max %zu); no key was found "
                 "non-linearizable",
                 gave_up, out->key, s->lim->steps_max, s->lim->states_max, s->lim->ops_per_key_max);
    }
    return rc;
}

int keel_lincheck(const keel_lc_op_t *ops, size_t n, const keel_lc_limits_t *lim,
                  keel_lc_result_t *out)
{
    keel_lc_limits_t dflt;
    if (lim == NULL) {
        keel_lc_limits_default(&dflt);
        lim = &dflt;
    }
    memset(out, 0, sizeof(*out));
    out->stuck_op = SIZE_MAX;
    out->verdict = 1;
    int rc = validate(ops, n, out);
    if (rc == 0 && n >= UINT32_MAX)
        rc = KEEL_ETOOBIG;
    if (rc < 0)
        goto done;
    keyidx_t *kv = malloc((n ? n : 1) * sizeof(*kv));
    uint32_t *idx = malloc((n ? n : 1) * sizeof(*idx));
    if (kv == NULL || idx == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_alloc;
    }
    for (size_t i = 0; i < n; i++)
        kv[i] = (keyidx_t){ops[i].key, (uint32_t)i};
    qsort(kv, n, sizeof(*kv), keyidx_cmp);
    search_t s = {.lim = lim};
    rc = check_keys(ops, kv, idx, n, &s, out);
    search_free(&s);
    if (rc == 0 && out->verdict == 1)
        snprintf(out->explain, sizeof(out->explain),
                 "linearizable: %" PRIu64 " operations on %" PRIu64 " keys", out->ops_checked,
                 out->keys);
err_after_alloc:
    free(kv);
    free(idx);
done:
    if (rc < 0) {
        out->verdict = rc;
        if (out->explain[0] == '\0')
            snprintf(out->explain, sizeof(out->explain), "error: %s", keel_strerror(rc));
    }
    return rc;
}
