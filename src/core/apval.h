/* apval.h - one value of the AP keyspace, whatever its kind: siblings or a CRDT. */
#ifndef KEEL_CORE_APVAL_H
#define KEEL_CORE_APVAL_H

#include "core/apobj.h"
#include "core/crdt.h"

/*
 * A key's kind is fixed by its first write (the server's conflict policy per
 * key prefix picks it): a sibling set (the default, nothing lost), a
 * PN-counter, an OR-set, or a last-writer-wins register (lossy, only when
 * chosen). merge() of two different kinds is refused with KEEL_ECONFLICT
 * (nothing changes): a replica never guesses how to combine them.
 *
 * Encoding: u8 kind, then the kind's own encoding (apobj.h, crdt.h).
 */
typedef enum keel_apval_kind {
    KEEL_APVAL_SIBLINGS = 1,
    KEEL_APVAL_PNCOUNTER = 2,
    KEEL_APVAL_ORSET = 3,
    KEEL_APVAL_LWW = 4,
} keel_apval_kind_t;

typedef struct keel_apval {
    uint8_t kind;
    union {
        keel_apobj_t obj;
        keel_pncounter_t pn;
        keel_orset_t set;
        keel_lww_t lww;
    } u;
} keel_apval_t;

/* An empty value of this kind (KEEL_EINVAL for an unknown kind). */
int keel_apval_init(keel_apval_t *v, uint8_t kind);
void keel_apval_free(keel_apval_t *v);
int keel_apval_copy(keel_apval_t *dst, const keel_apval_t *src);
/* v = merge(v, o); KEEL_ECONFLICT (kinds differ), KEEL_EFULL, KEEL_ENOMEM leave v unchanged. */
int keel_apval_merge(keel_apval_t *v, const keel_apval_t *o);
int keel_apval_encode(const keel_apval_t *v, keel_buf_t *out);
/* On failure v holds nothing to free beyond what keel_apval_free releases (safe to call). */
int keel_apval_decode(const void *data, size_t len, keel_apval_t *v, keel_errmsg_t *msg);
/* Equal states, equal digests (the encodings are canonical). */
uint64_t keel_apval_digest(const keel_apval_t *v);
const char *keel_apval_kind_name(uint8_t kind);
/*
 * 1 if the state holds anything actor issued: a dot in the vector (siblings, OR-set), a count
 * (PN-counter), or the register's value (LWW). An actor issues its next dot or count from the
 * state it holds, so a replica that issued any for a key must keep that key's state (docs/ap.md,
 * "Why dots are safe", and "Dropping the copies of keys a node is no longer a home of").
 */
int keel_apval_has_actor(const keel_apval_t *v, uint64_t actor);

#endif
