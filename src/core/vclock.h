/* vclock.h - version vectors and dots: the causal context of the AP keyspace (docs/ap.md). */
#ifndef KEEL_CORE_VCLOCK_H
#define KEEL_CORE_VCLOCK_H

#include "base/buf.h"
#include "base/bytes.h"
#include "base/err.h"

#include <stdint.h>

/*
 * A version vector maps actors (a replica's id and incarnation, 64 bits) to
 * counters. Every write is named by a dot (actor, counter): the actor that
 * issued it and its next counter for that key. A vector v covers a dot d when
 * v[d.actor] >= d.counter; it summarizes a contiguous history per actor, which
 * holds because an actor only issues a dot on a replica that durably keeps all
 * the dots it issued before (an actor that loses its data takes a new id).
 *
 * compare() gives the four outcomes of Lamport/Fidge/Mattern ordering:
 * EQUAL, BEFORE (a < b: every entry <=, one <), AFTER, CONCURRENT.
 *
 * Entries are kept sorted by actor with counters > 0 (a missing actor is 0),
 * so equal vectors have equal bytes. At most KEEL_VV_ACTORS_MAX actors: a key
 * written by more distinct actors is refused (KEEL_EFULL), never truncated,
 * because dropping an entry would make a context forget what it covers.
 */
#define KEEL_VV_ACTORS_MAX 32u
#define KEEL_VV_ENCODED_BYTES_MAX (1u + KEEL_VV_ACTORS_MAX * 16u)

typedef struct keel_dot {
    uint64_t actor;
    uint64_t counter; /* >= 1 */
} keel_dot_t;

typedef struct keel_vv {
    uint32_t n;
    keel_dot_t e[KEEL_VV_ACTORS_MAX]; /* sorted by actor, counters >= 1 */
} keel_vv_t;

typedef enum keel_vv_order {
    KEEL_VV_EQUAL = 0,
    KEEL_VV_BEFORE = 1,
    KEEL_VV_AFTER = 2,
    KEEL_VV_CONCURRENT = 3,
} keel_vv_order_t;

void keel_vv_init(keel_vv_t *v);
uint64_t keel_vv_get(const keel_vv_t *v, uint64_t actor);
/* Raises v[actor] to at least counter; KEEL_EFULL if a new actor does not fit. */
int keel_vv_raise(keel_vv_t *v, uint64_t actor, uint64_t counter);
/* v = max(v, w) entry by entry; KEEL_EFULL (v unchanged) if the union has too many actors. */
int keel_vv_join(keel_vv_t *v, const keel_vv_t *w);
keel_vv_order_t keel_vv_compare(const keel_vv_t *a, const keel_vv_t *b);
const char *keel_vv_order_name(keel_vv_order_t o);
static inline int keel_vv_covers(const keel_vv_t *v, keel_dot_t d)
{
    return keel_vv_get(v, d.actor) >= d.counter;
}
static inline int keel_dot_cmp(keel_dot_t a, keel_dot_t b)
{
    if (a.actor != b.actor)
        return a.actor < b.actor ? -1 : 1;
    return a.counter < b.counter ? -1 : a.counter > b.counter;
}

/*
 * Encoding (little-endian): u8 count, then count x (u64 actor, u64 counter),
 * actors strictly increasing, counters >= 1. decode() accepts exactly that
 * (KEEL_EPROTO with a reason otherwise, KEEL_ETOOBIG past the limit) and
 * reads from r, leaving the rest.
 */
int keel_vv_encode(const keel_vv_t *v, keel_buf_t *out);
int keel_vv_decode(keel_rd_t *r, keel_vv_t *v, keel_errmsg_t *msg);
/* A whole context blob (a client's): decode() plus no trailing bytes. */
int keel_vv_decode_all(const void *data, size_t len, keel_vv_t *v, keel_errmsg_t *msg);

#endif
