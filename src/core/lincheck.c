/* lincheck.c - Wing-Gong-Lowe linearizability search with memoization, one register per key. */
#include "core/lincheck.h"

#include "base/err.h"
#include "base/rand.h"
#include "base/vec.h"

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
 *    classify the rest (pkind below), simplify values nobody observes
 *    (simplify_unobserved(), drop_wild_only()) and turn values into ids.
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
 * 5. Exact reductions keep busy keys tractable: forced reads
 *    (find_forced()), lost values (value_lost()), interchangeable UNKNOWN
 *    ops (find_twins()). tests/unit/test_lincheck.c checks each against a
 *    brute-force oracle.
 * 6. If a key fails, shrink a failing time window (find_window()).
 */

/* The value of every write whose value no op observes (simplify_unobserved()). */
#define DEAD INT64_MIN
#define NO_TS_MAX INT64_MAX

enum pkind {
    P_READ,    /* a = value seen */
    P_WRITE,   /* a = value written */
    P_CAS,     /* a = expected, b = new: swapped */
    P_CAS_NEQ, /* a = expected: compare failed, so current != a */
    P_UWRITE,  /* UNKNOWN write of a */
    P_UCAS,    /* UNKNOWN cas a -> b: placed only where it would swap */
};

/*
 * After prepare(), a and b hold value ids (indexes into search_t.vals), and
 * the search state is an id too: below nvals a known value; nvals + x the
 * unknown value at a window's left cut ("WILD"), known only to differ from
 * the values in exclusion set x (failed compares seen so far; x = 0: none).
 */
typedef struct pop {
    int64_t a, b;
    int64_t call, ret; /* ret == NO_TS_MAX: UNKNOWN, no completion event */
    uint32_t orig;     /* index into the caller's ops[] */
    uint8_t kind;
    uint8_t opt;     /* straddles a window's left cut: took effect before it, or before ret */
    uint32_t obs_id; /* value it needs to see, as an index into search_t.vals; NO_ID: none */
    uint32_t wr_id;  /* value it may write; NO_ID: none, or DEAD */
} pop_t;

#define NO_ID UINT32_MAX
/* Hard bounds behind the configurable limits: list positions are int32 and
 * memo slots hold uint32 indexes. */
#define OPS_PER_KEY_HARD_MAX (1u << 30)
#define MEMO_STATES_HARD_MAX (UINT32_MAX - 1u)

struct twin_key {
    int64_t a, b, call;
    uint32_t i;
    uint8_t kind;
};

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

/* How an op on the search stack was placed. */
enum { VAR_EFFECT, VAR_NOOP /* optional op, without its effect */, VAR_FORCED /* find_forced() */ };

/* Buffers for one search, reused (and grown) across the searches of a check. */
typedef struct search {
    const keel_lc_limits_t *lim;
    pop_t *pops;
    uint32_t npops, ndef;
    ent_t *ent;
    uint32_t nent;
    int32_t *next, *prev;      /* nent + 1 slots; slot nent is the list head */
    int32_t *op_call, *op_ret; /* entry positions per pop; -1: none */
    uint32_t *twin;            /* per pop: the previous interchangeable UNKNOWN op; NO_ID */
    uint8_t *placed;           /* per pop: lifted out of the list */
    struct twin_key *tkeys;    /* scratch for find_twins() */
    uint32_t *stk_op;
    int64_t *stk_state;
    uint8_t *stk_var; /* VAR_* */
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
    int has_neq; /* the prepared ops include a failed-compare cas */
    /* The values of the prepared ops (sorted, distinct) and, per value, how
     * many unplaced ops must still see it and how many may still write it. */
    int64_t *vals;
    uint32_t nvals;
    uint32_t zero_id, dead_id; /* ids of 0 and DEAD (NO_ID if no op writes DEAD) */
    uint32_t *obs_left, *wr_left;
    /* WILD exclusion sets: set x is {xs_elem[x]} + set xs_parent[x]; set 0 is empty */
    uint32_t *xs_parent, *xs_elem;
    uint32_t xs_n, xs_cap;
    uint32_t *xs_slots; /* hash of (parent, elem) -> 1 + set; 0 empty */
    uint32_t xs_nslots;
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

static int cmp_i64(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : (a > b);
}

static size_t uniq_i64(int64_t *v, size_t n);

/* ---- the register model ---------------------------------------------------------------- */

/* Is value id v in WILD exclusion set x? */
static int excluded(const search_t *s, uint32_t x, int64_t v)
{
    for (; x != 0; x = s->xs_parent[x])
        if (s->xs_elem[x] == v)
            return 1;
    return 0;
}

static int xs_grow(search_t *s)
{
    uint32_t cap = s->xs_cap ? 2 * s->xs_cap : 64;
    uint32_t *par = realloc(s->xs_parent, cap * sizeof(uint32_t));
    if (par != NULL)
        s->xs_parent = par;
    uint32_t *el = realloc(s->xs_elem, cap * sizeof(uint32_t));
    if (el != NULL)
        s->xs_elem = el;
    uint32_t *slots = calloc(2 * (size_t)cap, sizeof(uint32_t));
    if (par == NULL || el == NULL || slots == NULL) {
        free(slots);
        return KEEL_ENOMEM;
    }
    free(s->xs_slots);
    s->xs_slots = slots;
    s->xs_nslots = 2 * cap;
    s->xs_cap = cap;
    for (uint32_t x = 1; x < s->xs_n; x++) {
        uint32_t j = (uint32_t)keel_mix64((uint64_t)s->xs_parent[x] << 32 | s->xs_elem[x]);
        for (j &= s->xs_nslots - 1; s->xs_slots[j] != 0; j = (j + 1) & (s->xs_nslots - 1))
            ;
        s->xs_slots[j] = x + 1;
    }
    return 0;
}

/* The exclusion set x + {v}, interned, so equal histories of failed compares meet in the memo. */
static int xs_extend(search_t *s, uint32_t x, int64_t v, uint32_t *out)
{
    if (excluded(s, x, v)) {
        *out = x;
        return 0;
    }
    if (s->xs_n >= s->xs_cap && xs_grow(s) < 0)
        return KEEL_ENOMEM;
    uint32_t j = (uint32_t)keel_mix64((uint64_t)x << 32 | (uint32_t)v);
    for (j &= s->xs_nslots - 1; s->xs_slots[j] != 0; j = (j + 1) & (s->xs_nslots - 1)) {
        uint32_t y = s->xs_slots[j] - 1;
        if (s->xs_parent[y] == x && s->xs_elem[y] == v) {
            *out = y;
            return 0;
        }
    }
    uint32_t y = s->xs_n++;
    s->xs_parent[y] = x;
    s->xs_elem[y] = (uint32_t)v;
    s->xs_slots[j] = y + 1;
    *out = y;
    return 0;
}

/*
 * Applies p to state st. Returns 1 and the next state if the register allows
 * it there, 0 if not, KEEL_ENOMEM. From WILD a read or swap binds the value
 * (unless an earlier failed compare excluded it), and a failed compare adds
 * its expected value to the exclusions: exact "some initial value".
 */
static int model_step(search_t *s, const pop_t *p, int64_t st, int64_t *out)
{
    int wild = st >= s->nvals;
    uint32_t x = wild ? (uint32_t)(st - s->nvals) : 0;
    switch ((enum pkind)p->kind) {
    case P_READ:
        if (wild ? excluded(s, x, p->a) : st != p->a)
            return 0;
        *out = p->a;
        return 1;
    case P_WRITE:
    case P_UWRITE:
        *out = p->a;
        return 1;
    case P_CAS:
    case P_UCAS:
        if (wild ? excluded(s, x, p->a) : st != p->a)
            return 0;
        *out = p->b;
        return 1;
    case P_CAS_NEQ:
        if (!wild) {
            *out = st;
            return st != p->a;
        }
        if (xs_extend(s, x, p->a, &x) < 0)
            return KEEL_ENOMEM;
        *out = s->nvals + x;
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
    free(s->vals);
    free(s->twin);
    free(s->placed);
    free(s->tkeys);
    free(s->xs_parent);
    free(s->xs_elem);
    free(s->xs_slots);
    free(s->obs_left);
    free(s->wr_left);
    free(s->cand);
    free(s->slots);
    free(s->ments);
    free(s->arena);
    memset(s, 0, sizeof(*s));
}

/* Grows one per-op array of s to n elements (the old contents are kept). */
#define GROW(field, n)                                                                             \
    do {                                                                                           \
        void *grown_ = realloc(s->field, (n) * sizeof(*s->field));                                 \
        if (grown_ == NULL)                                                                        \
            return KEEL_ENOMEM;                                                                    \
        s->field = grown_;                                                                         \
    } while (0)

static int search_reserve(search_t *s, size_t nops)
{
    if (nops <= s->cap)
        return 0;
    size_t ne = 2 * nops + 1; /* events (and values) per op: two, plus the list head */
    GROW(pops, nops);
    GROW(ent, ne);
    GROW(next, ne);
    GROW(prev, ne);
    GROW(op_call, nops);
    GROW(op_ret, nops);
    GROW(twin, nops);
    GROW(placed, nops);
    GROW(tkeys, nops);
    GROW(stk_op, nops);
    GROW(stk_state, nops);
    GROW(stk_var, nops);
    GROW(cand, nops);
    GROW(vals, ne);
    GROW(obs_left, ne);
    GROW(wr_left, ne);
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
    if (keel_vec_grow(&s->ments, &s->ments_cap, s->nments + 1, sizeof(*s->ments), 1024) != 0 ||
        keel_vec_grow(&s->arena, &s->arena_cap, s->arena_len + nc, sizeof(*s->arena), 4096) != 0)
        return KEEL_ENOMEM;
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
    if (s->nments >= s->lim->states_max || s->nments >= MEMO_STATES_HARD_MAX)
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
    const pop_t *p = &s->pops[i];
    s->placed[i] = 1;
    unlink_ent(s, s->op_call[i]);
    if (s->op_ret[i] >= 0)
        unlink_ent(s, s->op_ret[i]);
    if (p->obs_id != NO_ID)
        s->obs_left[p->obs_id]--;
    if (p->wr_id != NO_ID)
        s->wr_left[p->wr_id]--;
}

static void unlift(search_t *s, uint32_t i)
{
    const pop_t *p = &s->pops[i];
    s->placed[i] = 0;
    if (s->op_ret[i] >= 0)
        relink_ent(s, s->op_ret[i]);
    relink_ent(s, s->op_call[i]);
    if (p->obs_id != NO_ID)
        s->obs_left[p->obs_id]++;
    if (p->wr_id != NO_ID)
        s->wr_left[p->wr_id]++;
}

/*
 * True if value id v (not the current value) can never be current again while
 * some unplaced op must still see it: no unplaced op may write it. Then the
 * configuration is dead, found long before the search would reach that op's
 * completion (this is what keeps high-concurrency keys tractable).
 */
static int value_lost(const search_t *s, int64_t v)
{
    return v < s->nvals && s->obs_left[v] > 0 && s->wr_left[v] == 0;
}

/* ---- the search ----------------------------------------------------------------------------- */

static void note_stuck(search_t *s, uint32_t depth, uint32_t op)
{
    if (s->stuck_pop == UINT32_MAX || depth > s->stuck_depth) {
        s->stuck_pop = op;
        s->stuck_depth = depth;
    }
}

static void search_reset(search_t *s)
{
    s->steps = 0;
    s->nments = 0;
    s->arena_len = 0;
    s->stuck_pop = UINT32_MAX;
    s->stuck_depth = 0;
    if (s->nslots > 0)
        memset(s->slots, 0, s->nslots * sizeof(uint32_t));
    build_list(s);
    memset(s->placed, 0, s->npops);
    s->xs_n = 1; /* the empty exclusion set */
    if (s->xs_nslots > 0)
        memset(s->xs_slots, 0, s->xs_nslots * sizeof(uint32_t));
    memset(s->obs_left, 0, s->nvals * sizeof(uint32_t));
    memset(s->wr_left, 0, s->nvals * sizeof(uint32_t));
    for (uint32_t i = 0; i < s->npops; i++) {
        if (s->pops[i].obs_id != NO_ID)
            s->obs_left[s->pops[i].obs_id]++;
        if (s->pops[i].wr_id != NO_ID)
            s->wr_left[s->pops[i].wr_id]++;
    }
}

/*
 * Places op i (VAR_EFFECT or VAR_FORCED: with its effect; VAR_NOOP: without)
 * if the model and the memo allow. Returns 1 placed, 0 not, or a KEEL_E*.
 */
static int try_place(search_t *s, uint32_t i, uint8_t variant, int64_t *state, uint32_t *remaining,
                     uint32_t *sp)
{
    int64_t ns = *state;
    if (variant != VAR_NOOP) {
        int ok = model_step(s, &s->pops[i], *state, &ns);
        if (ok <= 0)
            return ok;
        /* An UNKNOWN op that changes nothing here is better kept for later. */
        if (ns == *state && s->pops[i].ret == NO_TS_MAX)
            return 0;
    }
    lift(s, i);
    const pop_t *p = &s->pops[i];
    if ((ns != *state && value_lost(s, *state)) ||
        (p->wr_id != NO_ID && p->wr_id != ns && value_lost(s, p->wr_id))) {
        unlift(s, i);
        return 0;
    }
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

/*
 * A read (or failed compare) enabled in the current state changes nothing,
 * so placing it now is never worse than later: every op that must precede it
 * is placed (it is a candidate), and none must follow it that is not already
 * after its completion. So a configuration with one is linearizable iff the
 * configuration with it placed is, and the search places it without
 * branching ("forced"). Not at WILD, where a read binds the value.
 * Likewise a write of DEAD while the value is DEAD, on a key without failed
 * compares: moving it earlier, to where it changes nothing, only keeps some
 * later value alive longer, between ops that all ran at DEAD before: writes
 * and failed compares, and there are no failed compares.
 */
static int32_t find_forced(const search_t *s, int64_t state)
{
    if (state >= s->nvals) /* WILD */
        return -1;
    int dead_writes = state == s->dead_id && !s->has_neq;
    for (int32_t e = s->next[s->nent]; e >= 0 && !s->ent[e].is_ret; e = s->next[e]) {
        const pop_t *p = &s->pops[s->ent[e].op];
        if (p->opt)
            continue;
        if ((p->kind == P_READ && p->a == state) || (p->kind == P_CAS_NEQ && p->a != state))
            return (int32_t)s->ent[e].op;
        if (dead_writes && p->kind == P_WRITE && p->a == state)
            return (int32_t)s->ent[e].op;
    }
    return -1;
}

/*
 * Pops the stack after a dead end: forced placements go too (their
 * configuration is dead as well). Returns the op to continue after, or -1 if
 * the stack ran out (not linearizable).
 */
static int64_t backtrack(search_t *s, int64_t *state, uint32_t *remaining, uint32_t *sp)
{
    uint32_t i;
    do {
        if (*sp == 0)
            return -1;
        i = s->stk_op[--*sp];
        *state = s->stk_state[*sp];
        unlift(s, i);
        *remaining += s->pops[i].ret != NO_TS_MAX;
    } while (s->stk_var[*sp] == VAR_FORCED);
    return i;
}

/*
 * The WGL loop over the prepared pops (already in s), from state init. Sets
 * *lin to 1 or 0, or returns a negative KEEL_E* (KEEL_ETOOBIG when a limit
 * stops it).
 */
static int search_run(search_t *s, int64_t init, int *lin)
{
    search_reset(s);
    uint32_t remaining = s->ndef, sp = 0;
    int64_t state = init;
    int32_t e = s->next[s->nent];
    int rc = 0, fresh_conf = 1;
    *lin = 1;
    while (remaining > 0) {
        assert(e >= 0 && "a pending completion event stops every scan");
        if (++s->steps > s->lim->steps_max) {
            rc = KEEL_ETOOBIG;
            break;
        }
        int placed = 0, dead = 0;
        int32_t x = fresh_conf ? find_forced(s, state) : -1;
        fresh_conf = 0;
        if (x >= 0) {
            placed = try_place(s, (uint32_t)x, VAR_FORCED, &state, &remaining, &sp);
            dead = placed == 0; /* seen before, so it failed */
        } else if (!s->ent[e].is_ret) {
            uint32_t i = s->ent[e].op;
            if (s->twin[i] == NO_ID || s->placed[s->twin[i]])
                placed = try_place(s, i, VAR_EFFECT, &state, &remaining, &sp);
            if (placed == 0 && s->pops[i].opt)
                placed = try_place(s, i, VAR_NOOP, &state, &remaining, &sp);
            e = s->next[e];
        } else {
            note_stuck(s, sp, s->ent[e].op); /* that op can no longer be placed */
            dead = 1;
        }
        if (dead) {
            int64_t i = backtrack(s, &state, &remaining, &sp);
            if (i < 0) {
                *lin = 0;
                break;
            }
            if (s->stk_var[sp] == VAR_EFFECT && s->pops[i].opt)
                placed = try_place(s, (uint32_t)i, VAR_NOOP, &state, &remaining, &sp);
            e = s->next[s->op_call[i]];
        }
        if (placed < 0) {
            rc = placed;
            break;
        }
        if (placed) {
            fresh_conf = 1;
            e = s->next[s->nent];
        }
    }
    s->states = s->nments;
    return rc;
}

/* ---- preparing a (sub-)history of one key ------------------------------------------------- */

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
    s->nvals = (uint32_t)uniq_i64(s->vals, nv);
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
    simplify_unobserved(s, scratch);
    for (uint32_t i = 0; i < s->npops; i++)
        ndef += s->pops[i].ret != NO_TS_MAX;
    s->ndef = ndef;
    index_values(s);
    drop_wild_only(s, lo == INT64_MIN);
    find_twins(s);
}

/* ---- one key -------------------------------------------------------------------------------- */

typedef struct keyctx {
    const keel_lc_op_t *ops;
    const uint32_t *idx; /* this key's ops, in input order */
    size_t m;
    search_t *s;
    int64_t *scratch;
    keel_lc_result_t *out;
    uint64_t budget; /* search steps left for shrinking the failing window */
    int cut_short;   /* a window check hit a limit or the budget */
} keyctx_t;

static int run_counted(keyctx_t *k, int64_t init, int *lin)
{
    int rc = search_run(k->s, init, lin);
    k->out->steps += k->s->steps;
    k->out->states += k->s->states;
    return rc;
}

/*
 * Checks the key's ops inside [lo, hi]; *lin = 1/0, or a negative KEEL_E*.
 * From a cut (lo > INT64_MIN) the register starts as WILD, "some value".
 */
static int check_window(keyctx_t *k, int64_t lo, int64_t hi, int *lin)
{
    prepare(k->s, k->ops, k->idx, k->m, lo, hi, k->scratch);
    return run_counted(k, lo == INT64_MIN ? k->s->zero_id : k->s->nvals, lin);
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
 * Window [lo, hi] fails: 1, passes: 0, unknown: 2 (a limit or the shrinking
 * budget stopped the search; sets cut_short), or a negative KEEL_E*.
 */
static int window_fails(keyctx_t *k, int64_t lo, int64_t hi)
{
    if (k->budget == 0) {
        k->cut_short = 1;
        return 2;
    }
    const keel_lc_limits_t *lim = k->s->lim;
    keel_lc_limits_t probe = *lim;
    probe.steps_max = k->budget < lim->steps_max ? k->budget : lim->steps_max;
    k->s->lim = &probe;
    int lin, rc = check_window(k, lo, hi, &lin);
    k->s->lim = lim;
    k->budget -= k->s->steps < k->budget ? k->s->steps : k->budget;
    if (rc == KEEL_ETOOBIG) {
        k->cut_short = 1;
        return 2;
    }
    return rc < 0 ? rc : !lin;
}

/* Distinct sorted event times in [from, hi] (completions only, or invocations too). */
static size_t event_times(const keyctx_t *k, int64_t from, int64_t hi, int completions_only,
                          int64_t *t)
{
    size_t nt = 0;
    for (size_t j = 0; j < k->m; j++) {
        const keel_lc_op_t *o = &k->ops[k->idx[j]];
        if (o->outcome == KEEL_LC_FAIL)
            continue;
        if (!completions_only && o->invoke_ts >= from && o->invoke_ts <= hi)
            t[nt++] = o->invoke_ts;
        if (o->outcome == KEEL_LC_OK && o->complete_ts >= from && o->complete_ts <= hi)
            t[nt++] = o->complete_ts;
    }
    return uniq_i64(t, nt);
}

/*
 * The latest cut lo in (floor, hi] such that [lo, hi] fails, or floor itself
 * (*found = 1 either way), or *found = 0 if not even [floor, hi] fails.
 * floor_fails: [floor, hi] is already known to fail. Small windows are the
 * cheap ones, so it gallops back from hi (1, 2, 4, ... events) and then
 * bisects between the last passing and the first failing cut. A check that
 * ends unknown stops it at the latest cut known to fail.
 */
static int latest_failing_lo(keyctx_t *k, int64_t floor, int floor_fails, int64_t hi, int64_t *lo,
                             int *found)
{
    int64_t *t = k->scratch + k->m; /* scratch holds 3 * m values */
    size_t nt = event_times(k, floor == INT64_MIN ? INT64_MIN : floor + 1, hi, 0, t);
    size_t pass = nt, step = 1; /* cuts at index >= pass are known to pass */
    long fail = -1;             /* largest index known to fail; -1: floor */
    int f = 0;
    while (fail < 0 && pass > 0 && f != 2) {
        size_t j = pass > step ? pass - step : 0;
        if ((f = window_fails(k, t[j], hi)) < 0)
            return f;
        if (f == 1)
            fail = (long)j;
        else if (f == 0)
            pass = j;
        step *= 2;
    }
    if (fail < 0 && !floor_fails && (f = window_fails(k, floor, hi)) != 1) {
        *found = 0;
        return f < 0 ? f : 0;
    }
    while ((size_t)(fail + 1) < pass && f != 2) {
        size_t mid = (size_t)(fail + 1) + (pass - (size_t)(fail + 1)) / 2;
        if ((f = window_fails(k, t[mid], hi)) < 0)
            return f;
        if (f == 1)
            fail = (long)mid;
        else if (f == 0)
            pass = mid;
    }
    *found = 1;
    *lo = fail < 0 ? floor : t[fail];
    return 0;
}

/* The earliest completion time c in [lo, hi] such that [lo, c] fails ([lo, hi] does). */
static int earliest_failing_hi(keyctx_t *k, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t *t = k->scratch + k->m;
    size_t nt = event_times(k, lo, hi, 1, t);
    size_t a = 0, b = nt; /* answer in t[a..b); b == nt: hi itself */
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        int f = window_fails(k, lo, t[mid]);
        if (f < 0)
            return f;
        if (f == 2)
            break;
        if (f)
            b = mid;
        else
            a = mid + 1;
    }
    *out = b < nt ? t[b] : hi;
    return 0;
}

/*
 * The earliest completion time t such that the history up to t (from the
 * start) fails, by bisection, as far as the budget allows (these searches
 * must exhaust every configuration up to t, which is costly on keys with many
 * concurrent ops). Returns in *hi the earliest t known to fail (INT64_MAX:
 * the whole key).
 */
static int earliest_failing_prefix(keyctx_t *k, int64_t *hi)
{
    int64_t *t = k->scratch + k->m;
    size_t nt = event_times(k, INT64_MIN, INT64_MAX, 1, t);
    size_t a = 0, b = nt;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        int f = window_fails(k, INT64_MIN, t[mid]);
        if (f < 0)
            return f;
        if (f == 2)
            break;
        if (f)
            b = mid;
        else
            a = mid + 1;
    }
    *hi = b < nt ? t[b] : INT64_MAX;
    return 0;
}

/*
 * Shrinks the failing window of a key known to fail, to one that fails while
 * no time window strictly inside it does. Failure is monotone (if [lo, hi]
 * has a linearization, so does every window inside it: cut the linearization
 * at the two times; prepare() is exact), so each end is found by bisection:
 *   1. hi = the earliest end of a failing prefix of the history, as far as
 *      half the budget allows (else a later end known to fail);
 *   2. lo = the latest cut with [lo, hi] failing (small windows first);
 *   3. hi = the earliest completion with [lo, hi] failing (when step 1 ran
 *      to the end, hi stays);
 *   4. lo = the latest cut with [lo, hi] failing, again.
 * Then [lo, hi] fails, [next cut after lo, hi] passes (step 4) and [lo,
 * previous completion before hi] passes (it lies inside a window that passed
 * in step 3). The budget is max(SHRINK_STEPS_MIN, 4 x the full search) steps
 * in all; *minimal = 0 if it or a limit cut steps 2-4 short; the window
 * reported then is still one that was seen to fail.
 */
#define SHRINK_STEPS_MIN (20 * 1000 * 1000)

static int find_window(keyctx_t *k, uint64_t full_steps, int64_t *lo_out, int64_t *hi_out,
                       int *minimal)
{
    int64_t lo = INT64_MIN, hi;
    int found, rc;
    uint64_t budget = 4 * full_steps > SHRINK_STEPS_MIN ? 4 * full_steps : SHRINK_STEPS_MIN;
    k->budget = budget / 2;
    if ((rc = earliest_failing_prefix(k, &hi)) < 0)
        return rc;
    k->budget += budget - budget / 2;
    k->cut_short = 0;
    if ((rc = latest_failing_lo(k, INT64_MIN, 1, hi, &lo, &found)) < 0)
        return rc;
    if ((rc = earliest_failing_hi(k, lo, hi, &hi)) < 0)
        return rc;
    if ((rc = latest_failing_lo(k, lo, 1, hi, &lo, &found)) < 0)
        return rc;
    *lo_out = lo;
    *hi_out = hi;
    *minimal = !k->cut_short;
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
        else if ((o->fn != KEEL_LC_READ && o->arg == DEAD) ||
                 (o->fn == KEEL_LC_CAS && o->expect == DEAD) ||
                 (o->fn == KEEL_LC_READ && o->result == DEAD))
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
    int rc = find_window(k, s->steps, &lo, &hi, &minimal);
    if (rc < 0)
        return rc;
    if (minimal) { /* small: search it again for the op it gets stuck on */
        rc = check_window(k, lo, hi, &lin);
        if (rc < 0 && rc != KEEL_ETOOBIG)
            return rc;
        if (rc == 0 && !lin && s->stuck_pop != UINT32_MAX)
            out->stuck_op = s->pops[s->stuck_pop].orig;
    } else {
        prepare(s, k->ops, k->idx, k->m, lo, hi, k->scratch);
        int inside = 0; /* name the full search's stuck op only if it is in the window */
        for (uint32_t i = 0; i < s->npops; i++)
            inside |= s->pops[i].orig == out->stuck_op;
        if (!inside)
            out->stuck_op = SIZE_MAX;
    }
    /* When the window is minimal, [lo, just before hi] had a linearization:
     * an op completing at hi is the one that broke it. */
    int stuck_ends_at_hi = out->stuck_op != SIZE_MAX && k->ops[out->stuck_op].complete_ts == hi &&
                           k->ops[out->stuck_op].outcome == KEEL_LC_OK;
    for (uint32_t i = 0; i < s->npops && minimal && !stuck_ends_at_hi; i++)
        if (s->pops[i].ret == hi) {
            out->stuck_op = s->pops[i].orig;
            stuck_ends_at_hi = 1;
        }
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
        if (m > s->lim->ops_per_key_max || m > OPS_PER_KEY_HARD_MAX) {
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
        keyctx_t k = {ops, idx, m, s, scratch, out, 0, 0};
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
