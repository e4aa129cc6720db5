/* lincheck_search.c - the WGL search over one key's prepared ops: the register model, the
   buffers, the memo of visited configurations, the event list and the search loop. */
#include "core/lincheck_int.h"

#include "base/err.h"
#include "base/rand.h"
#include "base/vec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* How an op on the search stack was placed. */
enum { VAR_EFFECT, VAR_NOOP /* optional op, without its effect */, VAR_FORCED /* find_forced() */ };

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

void keel__lc_search_free(search_t *s)
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

int keel__lc_search_reserve(search_t *s, size_t nops)
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
int keel__lc_search_run(search_t *s, int64_t init, int *lin)
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
