/* test_crdt.c - G-counter, PN-counter, LWW-register and OR-set (src/core/crdt): behaviour and merge
 * laws. */
#include "base/buf.h"
#include "base/rand.h"
#include "core/crdt.h"
#include "ktest.h"

#include <stdlib.h>

#define R 3
#define SEEDS 1500

/* Every type through one small table, so the laws are checked the same way for all. */
typedef struct ops {
    const char *name;
    size_t size;
    void (*init)(void *);
    void (*free)(void *);
    void (*step)(void *, keel_rand_t *, uint64_t actor, int step);
    int (*merge)(void *, const void *);
    int (*encode)(const void *, keel_buf_t *);
    int (*decode)(const void *, size_t, void *, keel_errmsg_t *);
} ops_t;

static void g_init(void *p)
{
    keel_gcounter_init(p);
}
static void g_free(void *p)
{
    (void)p;
}
static void g_step(void *p, keel_rand_t *r, uint64_t actor, int s)
{
    (void)s;
    KT_EQ_INT(keel_gcounter_incr(p, actor, 1 + keel_rand_below(r, 5)), 0);
}
static int g_merge(void *a, const void *b)
{
    return keel_gcounter_merge(a, b);
}
static int g_enc(const void *a, keel_buf_t *o)
{
    return keel_gcounter_encode(a, o);
}
static int g_dec(const void *d, size_t n, void *a, keel_errmsg_t *m)
{
    return keel_gcounter_decode(d, n, a, m);
}

static void pn_init(void *p)
{
    keel_pncounter_init(p);
}
static void pn_step(void *p, keel_rand_t *r, uint64_t actor, int s)
{
    (void)s;
    int64_t d = keel_rand_range(r, -5, 5);
    if (d)
        KT_EQ_INT(keel_pncounter_add(p, actor, d), 0);
}
static int pn_merge(void *a, const void *b)
{
    return keel_pncounter_merge(a, b);
}
static int pn_enc(const void *a, keel_buf_t *o)
{
    return keel_pncounter_encode(a, o);
}
static int pn_dec(const void *d, size_t n, void *a, keel_errmsg_t *m)
{
    return keel_pncounter_decode(d, n, a, m);
}

static void lww_init(void *p)
{
    keel_lww_init(p);
}
static void lww_free(void *p)
{
    keel_lww_free(p);
}
static void lww_step(void *p, keel_rand_t *r, uint64_t actor, int s)
{
    char v[16];
    snprintf(v, sizeof(v), "v%d", s);
    /* timestamps from skewed clocks: equal ones happen, and are broken by actor */
    KT_CHECK(keel_lww_set(p, 1 + keel_rand_below(r, 20), actor, v, (uint32_t)strlen(v)) >= 0);
}
static int lww_merge(void *a, const void *b)
{
    return keel_lww_merge(a, b);
}
static int lww_enc(const void *a, keel_buf_t *o)
{
    return keel_lww_encode(a, o);
}
static int lww_dec(const void *d, size_t n, void *a, keel_errmsg_t *m)
{
    return keel_lww_decode(d, n, a, m);
}

static void or_init(void *p)
{
    keel_orset_init(p);
}
static void or_free(void *p)
{
    keel_orset_free(p);
}
static void or_step(void *p, keel_rand_t *r, uint64_t actor, int s)
{
    (void)s;
    char e[2] = {(char)('a' + keel_rand_below(r, 5)), 0};
    if (keel_rand_chance(r, 0.6))
        KT_EQ_INT(keel_orset_add(p, actor, e, 1), 0);
    else
        KT_CHECK(keel_orset_remove(p, e, 1) >= 0);
}
static int or_merge(void *a, const void *b)
{
    return keel_orset_merge(a, b);
}
static int or_enc(const void *a, keel_buf_t *o)
{
    return keel_orset_encode(a, o);
}
static int or_dec(const void *d, size_t n, void *a, keel_errmsg_t *m)
{
    return keel_orset_decode(d, n, a, m);
}

static const ops_t TYPES[] = {
    {"g-counter", sizeof(keel_gcounter_t), g_init, g_free, g_step, g_merge, g_enc, g_dec},
    {"pn-counter", sizeof(keel_pncounter_t), pn_init, g_free, pn_step, pn_merge, pn_enc, pn_dec},
    {"lww-register", sizeof(keel_lww_t), lww_init, lww_free, lww_step, lww_merge, lww_enc, lww_dec},
    {"or-set", sizeof(keel_orset_t), or_init, or_free, or_step, or_merge, or_enc, or_dec},
};

/* Encodings are canonical, so byte equality is state equality. */
static void same_state(const ops_t *t, const void *a, const void *b)
{
    keel_buf_t x, y;
    keel_buf_init(&x, 0), keel_buf_init(&y, 0);
    KT_EQ_INT(t->encode(a, &x), 0);
    KT_EQ_INT(t->encode(b, &y), 0);
    if (x.len != y.len || memcmp(x.data, y.data, x.len))
        KT_FAIL("%s: states differ", t->name);
    keel_buf_free(&x), keel_buf_free(&y);
}

/* dst (uninitialized) = a merged with b, through an encode/decode round trip of a. */
static void merged(const ops_t *t, void *dst, const void *a, const void *b)
{
    keel_buf_t e;
    keel_buf_init(&e, 0);
    KT_EQ_INT(t->encode(a, &e), 0);
    keel_errmsg_t msg;
    if (t->decode(e.data, e.len, dst, &msg) != 0)
        KT_FAIL("%s: decode of an encoding failed: %s", t->name, msg.text);
    keel_buf_free(&e);
    if (b)
        KT_EQ_INT(t->merge(dst, b), 0);
}

static void every_crdt_merge_is_commutative_associative_and_idempotent(void)
{
    keel_rand_t r;
    for (size_t k = 0; k < sizeof(TYPES) / sizeof(TYPES[0]); k++) {
        const ops_t *t = &TYPES[k];
        for (uint64_t seed = 1; seed <= SEEDS; seed++) {
            KT_SEED(seed * 10 + k);
            keel_rand_seed(&r, seed * 10 + k);
            _Alignas(16) unsigned char rep[R][1200], m[6][1200];
            KT_CHECK(t->size <= 1200);
            for (int i = 0; i < R; i++)
                t->init(rep[i]);
            int steps = 1 + (int)keel_rand_below(&r, 50);
            for (int s = 0; s < steps; s++) {
                int i = (int)keel_rand_below(&r, R);
                if (keel_rand_chance(&r, 0.3))
                    KT_EQ_INT(t->merge(rep[i], rep[keel_rand_below(&r, R)]), 0);
                else
                    t->step(rep[i], &r, 100 + (uint64_t)i, s);
            }
            merged(t, m[0], rep[0], rep[1]); /* ab */
            merged(t, m[1], rep[1], rep[0]); /* ba */
            merged(t, m[2], rep[0], rep[0]); /* aa */
            merged(t, m[3], m[0], rep[2]);   /* (ab)c */
            merged(t, m[4], rep[1], rep[2]); /* bc */
            merged(t, m[5], rep[0], m[4]);   /* a(bc) */
            same_state(t, m[0], m[1]);
            same_state(t, m[2], rep[0]);
            same_state(t, m[3], m[5]);
            for (int i = 0; i < 6; i++)
                t->free(m[i]);
            for (int i = 0; i < R; i++)
                t->free(rep[i]);
        }
    }
}

static void counters_count_every_increment_across_replicas(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 42);
    keel_pncounter_t rep[R];
    for (int i = 0; i < R; i++)
        keel_pncounter_init(&rep[i]);
    int64_t want = 0;
    for (int s = 0; s < 2000; s++) {
        int i = (int)keel_rand_below(&r, R);
        int64_t d = keel_rand_range(&r, -3, 7);
        if (d) {
            KT_EQ_INT(keel_pncounter_add(&rep[i], 100 + (uint64_t)i, d), 0);
            want += d;
        }
        if (keel_rand_chance(&r, 0.1)) /* gossip, duplicates and all */
            KT_EQ_INT(keel_pncounter_merge(&rep[keel_rand_below(&r, R)], &rep[i]), 0);
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < R; j++)
            KT_EQ_INT(keel_pncounter_merge(&rep[i], &rep[j]), 0);
    for (int i = 0; i < R; i++) {
        int64_t v;
        KT_EQ_INT(keel_pncounter_value(&rep[i], &v), 0);
        KT_EQ_INT(v, want);
    }
    keel_gcounter_t g;
    keel_gcounter_init(&g);
    KT_EQ_INT(keel_gcounter_incr(&g, 1, UINT64_MAX), 0);
    KT_EQ_INT(keel_gcounter_incr(&g, 1, 1), KEEL_ERANGE);
    KT_EQ_INT(keel_gcounter_incr(&g, 2, 1), 0);
    uint64_t v;
    KT_EQ_INT(keel_gcounter_value(&g, &v), KEEL_ERANGE);
    KT_EQ_INT(keel_gcounter_incr(&g, 3, 0), KEEL_EINVAL);
}

static void an_add_concurrent_with_a_remove_survives(void)
{
    keel_orset_t a, b;
    keel_orset_init(&a), keel_orset_init(&b);
    KT_EQ_INT(keel_orset_add(&a, 1, "x", 1), 0);
    KT_EQ_INT(keel_orset_merge(&b, &a), 0);
    KT_EQ_INT(keel_orset_remove(&a, "x", 1), 1); /* a removes the x it saw */
    KT_EQ_INT(keel_orset_add(&b, 2, "x", 1), 0); /* b adds x again, concurrently */
    KT_EQ_INT(keel_orset_add(&b, 2, "y", 1), 0);
    KT_EQ_INT(keel_orset_merge(&a, &b), 0);
    KT_EQ_INT(keel_orset_merge(&b, &a), 0);
    KT_CHECK(keel_orset_contains(&a, "x", 1) && keel_orset_contains(&b, "x", 1));
    KT_EQ_INT(keel_orset_size(&a), 2);
    /* a remove that saw everything wins over older adds on merge */
    KT_EQ_INT(keel_orset_remove(&a, "x", 1), 1);
    KT_EQ_INT(keel_orset_merge(&b, &a), 0);
    KT_CHECK(!keel_orset_contains(&b, "x", 1));
    KT_EQ_INT(keel_orset_remove(&b, "nope", 4), 0);
    char big[KEEL_ORSET_ELEM_BYTES_MAX + 1] = {0};
    KT_EQ_INT(keel_orset_add(&a, 1, big, sizeof(big)), KEEL_ETOOBIG);
    keel_orset_free(&a), keel_orset_free(&b);
}

static void lww_keeps_one_value_and_loses_the_other_concurrent_write(void)
{
    keel_lww_t a, b;
    keel_lww_init(&a), keel_lww_init(&b);
    KT_EQ_INT(keel_lww_set(&a, 10, 1, "first", 5), 1);
    KT_EQ_INT(keel_lww_set(&b, 9, 2, "second", 6), 1); /* a later write from a slow clock */
    KT_EQ_INT(keel_lww_merge(&b, &a), 0);
    KT_EQ_INT(b.len, 5); /* "second" is gone: the documented loss */
    KT_EQ_MEM(b.data, "first", 5);
    KT_EQ_INT(keel_lww_set(&a, 10, 0, "x", 1), 0); /* same ts, lower actor: not taken */
    keel_lww_free(&a), keel_lww_free(&b);
}

static void crdt_decoders_reject_malformed_input(void)
{
    keel_errmsg_t msg;
    keel_orset_t s, d;
    keel_orset_init(&s);
    KT_EQ_INT(keel_orset_add(&s, 1, "b", 1), 0);
    KT_EQ_INT(keel_orset_add(&s, 1, "a", 1), 0);
    keel_buf_t e;
    keel_buf_init(&e, 0);
    KT_EQ_INT(keel_orset_encode(&s, &e), 0);
    for (size_t k = 0; k < e.len; k++)
        KT_CHECK(keel_orset_decode(e.data, k, &d, &msg) < 0);
    uint8_t *p = malloc(e.len);
    memcpy(p, e.data, e.len);
    size_t first = 1 + 1 + 16 + 4; /* type, vv of one actor, count */
    p[first + 2] = 'c';            /* entries out of order: "c" before "b" */
    KT_EQ_INT(keel_orset_decode(p, e.len, &d, &msg), KEEL_EPROTO);
    memcpy(p, e.data, e.len);
    p[0] = KEEL_CRDT_GCOUNTER;
    KT_EQ_INT(keel_orset_decode(p, e.len, &d, &msg), KEEL_EPROTO);
    KT_CHECK(strstr(msg.text, "type") != NULL);
    uint8_t lie[] = {KEEL_CRDT_ORSET, 0, 0xa0, 0x0f, 0, 0}; /* 4000 entries in 0 bytes */
    KT_EQ_INT(keel_orset_decode(lie, sizeof(lie), &d, &msg), KEEL_EPROTO);
    uint8_t lww_unset_with_value[] = {
        KEEL_CRDT_LWW, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x'};
    keel_lww_t l;
    KT_EQ_INT(keel_lww_decode(lww_unset_with_value, sizeof(lww_unset_with_value), &l, &msg),
              KEEL_EPROTO);
    free(p);
    keel_buf_free(&e);
    keel_orset_free(&s);
}

int main(void)
{
    KT_RUN(every_crdt_merge_is_commutative_associative_and_idempotent);
    KT_RUN(counters_count_every_increment_across_replicas);
    KT_RUN(an_add_concurrent_with_a_remove_survives);
    KT_RUN(lww_keeps_one_value_and_loses_the_other_concurrent_write);
    KT_RUN(crdt_decoders_reject_malformed_input);
    return kt_done();
}
