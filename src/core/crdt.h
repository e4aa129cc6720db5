/* crdt.h - state-based CRDTs of the AP keyspace: G-counter, PN-counter, LWW-register, OR-set. */
#ifndef KEEL_CORE_CRDT_H
#define KEEL_CORE_CRDT_H

#include "core/vclock.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Convergent replicated data types (Shapiro, Preguica, Baquero, Zawirski,
 * "A comprehensive study of CRDTs", INRIA RR-7506, 2011). Each has a merge
 * that is commutative, associative and idempotent, so replicas that have seen
 * the same updates hold the same state, whatever the order or repetition of
 * the messages that carried them. Each update is made by one actor on a
 * replica that durably keeps its state (the rule of vclock.h).
 *
 * - G-counter: one count per actor, merge takes the maximum of each, value is
 *   the sum. It is a version vector (vclock.h) read as counts.
 * - PN-counter: a G-counter of increments and one of decrements.
 * - LWW-register: the value with the highest (timestamp, actor, bytes) wins.
 *   LOSSY by design: of two concurrent sets, one is silently discarded, and a
 *   clock running behind makes a later write lose to an earlier one (Jepsen's
 *   finding against Riak's LWW). It is offered only when chosen explicitly;
 *   the default keeps siblings (apobj.h).
 * - OR-set (observed-remove, add-wins; the "optimized" OR-set of Bieniusa et
 *   al., 2012): entries (element, dot) under a version vector. add() makes a
 *   new dot; remove() drops the entries it observed, and the vector remembers
 *   their dots so a merge does not bring them back; an add concurrent with a
 *   remove survives. Same merge rule as the siblings of apobj.h.
 *
 * Encodings are canonical (equal states, equal bytes) and decoding is strict.
 */
#define KEEL_CRDT_GCOUNTER 1u
#define KEEL_CRDT_PNCOUNTER 2u
#define KEEL_CRDT_LWW 3u
#define KEEL_CRDT_ORSET 4u

#define KEEL_LWW_VALUE_BYTES_MAX (1u << 20)
#define KEEL_ORSET_ELEM_BYTES_MAX 1024u
#define KEEL_ORSET_ENTRIES_MAX 4096u

/* ---- G-counter and PN-counter ---------------------------------------------- */
typedef struct keel_gcounter {
    keel_vv_t c; /* actor -> count */
} keel_gcounter_t;

void keel_gcounter_init(keel_gcounter_t *g);
/* Adds by (> 0) to actor's count: KEEL_ERANGE on overflow, KEEL_EFULL past the actor limit. */
int keel_gcounter_incr(keel_gcounter_t *g, uint64_t actor, uint64_t by);
/* The sum; KEEL_ERANGE if it does not fit in 64 bits. */
int keel_gcounter_value(const keel_gcounter_t *g, uint64_t *value);
int keel_gcounter_merge(keel_gcounter_t *g, const keel_gcounter_t *o);

typedef struct keel_pncounter {
    keel_gcounter_t p, n;
} keel_pncounter_t;

void keel_pncounter_init(keel_pncounter_t *c);
/* Adds delta (may be negative, not 0). */
int keel_pncounter_add(keel_pncounter_t *c, uint64_t actor, int64_t delta);
/* p - n; KEEL_ERANGE if outside int64. */
int keel_pncounter_value(const keel_pncounter_t *c, int64_t *value);
int keel_pncounter_merge(keel_pncounter_t *c, const keel_pncounter_t *o);

/* ---- LWW-register ------------------------------------------------------------ */
typedef struct keel_lww {
    uint64_t ts; /* the writer's timestamp (0: never set) */
    uint64_t actor;
    uint32_t len;
    uint8_t *data; /* owned */
} keel_lww_t;

void keel_lww_init(keel_lww_t *r);
void keel_lww_free(keel_lww_t *r);
/* Takes the value if (ts, actor, bytes) is above the current one; 1 if taken, 0 if not. */
int keel_lww_set(keel_lww_t *r, uint64_t ts, uint64_t actor, const void *data, uint32_t len);
int keel_lww_merge(keel_lww_t *r, const keel_lww_t *o);

/* ---- OR-set -------------------------------------------------------------------- */
typedef struct keel_orset_entry {
    uint16_t len;
    uint8_t *elem; /* owned */
    keel_dot_t dot;
} keel_orset_entry_t;

typedef struct keel_orset {
    keel_vv_t vv;
    uint32_t n;
    keel_orset_entry_t *e; /* sorted by (elem bytes, dot) */
} keel_orset_t;

void keel_orset_init(keel_orset_t *s);
void keel_orset_free(keel_orset_t *s);
/* KEEL_ETOOBIG (element), KEEL_EFULL (entries or actors), KEEL_ENOMEM; s unchanged on error. */
int keel_orset_add(keel_orset_t *s, uint64_t actor, const void *elem, uint16_t len);
/* Removes the observed entries of elem; returns how many (0: it was not a member). */
int keel_orset_remove(keel_orset_t *s, const void *elem, uint16_t len);
int keel_orset_contains(const keel_orset_t *s, const void *elem, uint16_t len);
/* Distinct members in order; calls fn for each. */
void keel_orset_members(const keel_orset_t *s, void (*fn)(void *arg, const uint8_t *, uint16_t),
                        void *arg);
uint32_t keel_orset_size(const keel_orset_t *s);
int keel_orset_merge(keel_orset_t *s, const keel_orset_t *o);

/*
 * Encodings, each starting with its type byte (KEEL_CRDT_*):
 *   G-counter: type, vv.              PN: type, vv p, vv n.
 *   LWW:       type, u64 ts, u64 actor, u32 len, bytes (ts 0: len 0, actor 0).
 *   OR-set:    type, vv, u32 count, count x (u16 len, bytes, u64 actor, u64 counter),
 *              sorted by (element, dot), strictly, each dot covered by vv.
 */
int keel_gcounter_encode(const keel_gcounter_t *g, keel_buf_t *out);
int keel_gcounter_decode(const void *data, size_t len, keel_gcounter_t *g, keel_errmsg_t *msg);
int keel_pncounter_encode(const keel_pncounter_t *c, keel_buf_t *out);
int keel_pncounter_decode(const void *data, size_t len, keel_pncounter_t *c, keel_errmsg_t *msg);
int keel_lww_encode(const keel_lww_t *r, keel_buf_t *out);
int keel_lww_decode(const void *data, size_t len, keel_lww_t *r, keel_errmsg_t *msg);
int keel_orset_encode(const keel_orset_t *s, keel_buf_t *out);
int keel_orset_decode(const void *data, size_t len, keel_orset_t *s, keel_errmsg_t *msg);

#endif
