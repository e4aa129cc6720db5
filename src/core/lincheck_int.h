/* lincheck_int.h - what lincheck.c (the whole history, one key, the failing window),
   lincheck_prep.c (a key's sub-history prepared for the search) and lincheck_search.c (the
   WGL search) share: the prepared ops, the search's buffers and the keel__lc_* functions.
   Not for other files. */
#ifndef KEEL_CORE_LINCHECK_INT_H
#define KEEL_CORE_LINCHECK_INT_H

#include "core/lincheck.h"

#include <stddef.h>
#include <stdint.h>

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
 * After keel__lc_prepare(), a and b hold value ids (indexes into search_t.vals), and
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

/* lincheck_search.c: the buffers (freed; grown for nops ops: 0 or KEEL_ENOMEM) and the WGL
   loop over the prepared ops in s from state init (*lin = 1 or 0, or a negative KEEL_E*:
   KEEL_ETOOBIG when a limit stops it). */
void keel__lc_search_free(search_t *s);
int keel__lc_search_reserve(search_t *s, size_t nops);
int keel__lc_search_run(search_t *s, int64_t init, int *lin);
/* lincheck_prep.c: fills s->pops with one key's ops (idx[0..m) into ops) as seen in the time
   window [lo, hi] (`scratch`: room for m values); sorts v[0..n) and drops repeats, returning how
   many are left. */
void keel__lc_prepare(search_t *s, const keel_lc_op_t *ops, const uint32_t *idx, size_t m,
                      int64_t lo, int64_t hi, int64_t *scratch);
size_t keel__lc_uniq_i64(int64_t *v, size_t n);

#endif
