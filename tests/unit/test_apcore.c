/* test_apcore.c - version vectors, sibling sets and their encodings (src/core/vclock, apobj). */
#include "base/buf.h"
#include "base/rand.h"
#include "core/apobj.h"
#include "core/vclock.h"
#include "ktest.h"

#include <stdlib.h>

static keel_vv_t vv_of(const uint64_t *pairs, int n)
{
    keel_vv_t v;
    keel_vv_init(&v);
    for (int i = 0; i < n; i++)
        keel_vv_raise(&v, pairs[2 * i], pairs[2 * i + 1]);
    return v;
}

static void compare_gives_the_four_outcomes(void)
{
    keel_vv_t a = vv_of((uint64_t[]){1, 2, 2, 1}, 2);
    keel_vv_t same = vv_of((uint64_t[]){2, 1, 1, 2}, 2);
    keel_vv_t later = vv_of((uint64_t[]){1, 2, 2, 2}, 2);
    keel_vv_t more_actors = vv_of((uint64_t[]){1, 2, 2, 1, 3, 1}, 3);
    keel_vv_t other = vv_of((uint64_t[]){1, 3, 2, 0}, 2);
    keel_vv_t empty = vv_of(NULL, 0);
    KT_EQ_INT(keel_vv_compare(&a, &same), KEEL_VV_EQUAL);
    KT_EQ_INT(keel_vv_compare(&a, &later), KEEL_VV_BEFORE);
    KT_EQ_INT(keel_vv_compare(&later, &a), KEEL_VV_AFTER);
    KT_EQ_INT(keel_vv_compare(&a, &more_actors), KEEL_VV_BEFORE);
    KT_EQ_INT(keel_vv_compare(&a, &other), KEEL_VV_CONCURRENT);
    KT_EQ_INT(keel_vv_compare(&later, &more_actors), KEEL_VV_CONCURRENT);
    KT_EQ_INT(keel_vv_compare(&empty, &empty), KEEL_VV_EQUAL);
    KT_EQ_INT(keel_vv_compare(&empty, &a), KEEL_VV_BEFORE);
    KT_EQ_STR(keel_vv_order_name(KEEL_VV_CONCURRENT), "CONCURRENT");
}

static void compare_agrees_with_entrywise_order_on_random_vectors(void)
{
    keel_rand_t r;
    for (uint64_t seed = 1; seed <= 2000; seed++) {
        KT_SEED(seed);
        keel_rand_seed(&r, seed);
        uint64_t x[5] = {0}, y[5] = {0};
        keel_vv_t a, b;
        keel_vv_init(&a), keel_vv_init(&b);
        for (int i = 0; i < 5; i++) {
            x[i] = keel_rand_below(&r, 3), y[i] = keel_rand_below(&r, 3);
            keel_vv_raise(&a, 100 + i, x[i]);
            keel_vv_raise(&b, 100 + i, y[i]);
        }
        int le = 1, ge = 1;
        for (int i = 0; i < 5; i++)
            le &= x[i] <= y[i], ge &= x[i] >= y[i];
        keel_vv_order_t want = le && ge ? KEEL_VV_EQUAL
                               : le     ? KEEL_VV_BEFORE
                               : ge     ? KEEL_VV_AFTER
                                        : KEEL_VV_CONCURRENT;
        KT_EQ_INT(keel_vv_compare(&a, &b), want);
        keel_vv_t j = a;
        KT_EQ_INT(keel_vv_join(&j, &b), 0);
        KT_CHECK(keel_vv_compare(&a, &j) != KEEL_VV_AFTER && keel_vv_compare(&a, &j) != 3);
        KT_CHECK(keel_vv_compare(&b, &j) == KEEL_VV_BEFORE || keel_vv_compare(&b, &j) == 0);
    }
}

static void a_vector_refuses_an_actor_past_its_limit(void)
{
    keel_vv_t v;
    keel_vv_init(&v);
    for (uint64_t i = 0; i < KEEL_VV_ACTORS_MAX; i++)
        KT_EQ_INT(keel_vv_raise(&v, i + 1, 1), 0);
    KT_EQ_INT(keel_vv_raise(&v, 1000, 1), KEEL_EFULL);
    KT_EQ_INT(keel_vv_raise(&v, 3, 7), 0); /* an existing actor still moves */
    keel_vv_t w = vv_of((uint64_t[]){2000, 1}, 1);
    keel_vv_t before = v;
    KT_EQ_INT(keel_vv_join(&v, &w), KEEL_EFULL);
    KT_EQ_INT(keel_vv_compare(&v, &before), KEEL_VV_EQUAL);
}

static void put_str(keel_apobj_t *o, const keel_vv_t *ctx, uint64_t actor, const char *s)
{
    KT_EQ_INT(keel_apobj_put(o, ctx, actor, 0, s, (uint32_t)strlen(s), NULL), 0);
}

static int has_value(const keel_apobj_t *o, const char *s)
{
    for (uint32_t i = 0; i < o->n; i++)
        if (!o->s[i].tomb && o->s[i].len == strlen(s) && !memcmp(o->s[i].data, s, o->s[i].len))
            return 1;
    return 0;
}

static void a_write_without_context_adds_a_sibling(void)
{
    keel_apobj_t o;
    keel_apobj_init(&o);
    put_str(&o, NULL, 1, "a");
    put_str(&o, NULL, 1, "b");
    KT_EQ_INT(o.n, 2);
    KT_CHECK(has_value(&o, "a") && has_value(&o, "b"));
    KT_EQ_U64(keel_vv_get(&o.vv, 1), 2);
    keel_apobj_free(&o);
}

static void a_write_with_a_context_supersedes_exactly_what_it_covers(void)
{
    keel_apobj_t o;
    keel_apobj_init(&o);
    put_str(&o, NULL, 1, "a");
    keel_vv_t seen = o.vv;     /* a client read "a" */
    put_str(&o, NULL, 2, "b"); /* a concurrent writer the client did not see */
    put_str(&o, &seen, 1, "c");
    KT_EQ_INT(o.n, 2);
    KT_CHECK(!has_value(&o, "a") && has_value(&o, "b") && has_value(&o, "c"));
    keel_vv_t all = o.vv;
    put_str(&o, &all, 3, "d");
    KT_EQ_INT(o.n, 1);
    KT_CHECK(has_value(&o, "d"));
    keel_apobj_free(&o);
}

static void a_delete_is_a_tombstone_that_loses_no_concurrent_write(void)
{
    keel_apobj_t x, y;
    keel_apobj_init(&x);
    put_str(&x, NULL, 1, "a");
    KT_EQ_INT(keel_apobj_copy(&y, &x), 0);
    keel_vv_t seen = x.vv;
    KT_EQ_INT(keel_apobj_put(&x, &seen, 1, 1, NULL, 0, NULL), 0); /* delete on one replica */
    KT_EQ_INT(keel_apobj_live(&x), 0);
    KT_EQ_INT(x.n, 1);
    put_str(&y, &seen, 2, "b"); /* concurrent update on the other */
    KT_EQ_INT(keel_apobj_merge(&x, &y), 0);
    KT_EQ_INT(keel_apobj_live(&x), 1);
    KT_CHECK(has_value(&x, "b") && !has_value(&x, "a"));
    KT_EQ_INT(x.n, 2); /* the tombstone and "b" */
    keel_apobj_free(&x), keel_apobj_free(&y);
}

static void merge_drops_what_the_other_side_superseded_and_keeps_the_concurrent(void)
{
    keel_apobj_t a, b;
    keel_apobj_init(&a);
    put_str(&a, NULL, 1, "v1");
    KT_EQ_INT(keel_apobj_copy(&b, &a), 0);
    keel_vv_t seen = a.vv;
    put_str(&a, &seen, 1, "v2"); /* supersedes v1 on a */
    put_str(&b, NULL, 2, "w");   /* concurrent sibling on b */
    keel_apobj_t m1, m2;
    KT_EQ_INT(keel_apobj_copy(&m1, &a), 0);
    KT_EQ_INT(keel_apobj_merge(&m1, &b), 0);
    KT_EQ_INT(keel_apobj_copy(&m2, &b), 0);
    KT_EQ_INT(keel_apobj_merge(&m2, &a), 0);
    KT_CHECK(keel_apobj_equal(&m1, &m2));
    KT_CHECK(!has_value(&m1, "v1") && has_value(&m1, "v2") && has_value(&m1, "w"));
    KT_EQ_U64(keel_apobj_digest(&m1), keel_apobj_digest(&m2));
    keel_apobj_free(&a), keel_apobj_free(&b), keel_apobj_free(&m1), keel_apobj_free(&m2);
}

static void a_write_past_the_sibling_limit_is_refused_and_changes_nothing(void)
{
    keel_apobj_t o;
    keel_apobj_init(&o);
    for (uint32_t i = 0; i < KEEL_AP_SIBLINGS_WRITE_MAX; i++)
        put_str(&o, NULL, 1, "x");
    keel_vv_t before = o.vv;
    KT_EQ_INT(keel_apobj_put(&o, NULL, 1, 0, "y", 1, NULL), KEEL_EFULL);
    KT_EQ_INT(o.n, KEEL_AP_SIBLINGS_WRITE_MAX);
    KT_EQ_INT(keel_vv_compare(&o.vv, &before), KEEL_VV_EQUAL);
    keel_vv_t all = o.vv; /* resolving with the context works */
    put_str(&o, &all, 1, "y");
    KT_EQ_INT(o.n, 1);
    KT_EQ_INT(keel_apobj_put(&o, NULL, 1, 0, "y", KEEL_AP_VALUE_BYTES_MAX + 1, NULL), KEEL_ETOOBIG);
    keel_apobj_free(&o);
}

/* Three replicas doing random puts (with and without contexts), deletes and merges. */
#define R 3
typedef struct world {
    keel_apobj_t rep[R];
    keel_vv_t snaps[32];
    int snaps_n;
} world_t;

static void world_run(world_t *w, keel_rand_t *r, int steps)
{
    for (int i = 0; i < R; i++)
        keel_apobj_init(&w->rep[i]);
    w->snaps_n = 0;
    for (int s = 0; s < steps; s++) {
        int i = (int)keel_rand_below(r, R);
        keel_apobj_t *o = &w->rep[i];
        uint64_t actor = 10 + (uint64_t)i;
        char val[16];
        snprintf(val, sizeof(val), "v%d", s);
        switch (keel_rand_below(r, 6)) {
        case 0: /* blind write */
            (void)keel_apobj_put(o, NULL, actor, 0, val, (uint32_t)strlen(val), NULL);
            break;
        case 1: /* read-modify-write with this replica's context */
        {
            keel_vv_t ctx = o->vv;
            KT_EQ_INT(keel_apobj_put(o, &ctx, actor, 0, val, (uint32_t)strlen(val), NULL), 0);
            break;
        }
        case 2: /* write with an older context some client kept */
            if (w->snaps_n) {
                keel_vv_t ctx = w->snaps[keel_rand_below(r, (uint64_t)w->snaps_n)];
                (void)keel_apobj_put(o, &ctx, actor, 0, val, (uint32_t)strlen(val), NULL);
            }
            break;
        case 3: /* delete with context */
        {
            keel_vv_t ctx = o->vv;
            KT_EQ_INT(keel_apobj_put(o, &ctx, actor, 1, NULL, 0, NULL), 0);
            break;
        }
        case 4: /* a client reads: keeps the context */
            if (w->snaps_n < 32)
                w->snaps[w->snaps_n++] = o->vv;
            break;
        default: /* replication from another replica */
            KT_EQ_INT(keel_apobj_merge(o, &w->rep[keel_rand_below(r, R)]), 0);
        }
    }
}

static void world_free(world_t *w)
{
    for (int i = 0; i < R; i++)
        keel_apobj_free(&w->rep[i]);
}

static keel_apobj_t merged(const keel_apobj_t *a, const keel_apobj_t *b)
{
    keel_apobj_t m;
    KT_EQ_INT(keel_apobj_copy(&m, a), 0);
    KT_EQ_INT(keel_apobj_merge(&m, b), 0);
    return m;
}

static void sibling_merge_is_commutative_associative_and_idempotent(void)
{
    keel_rand_t r;
    for (uint64_t seed = 1; seed <= 1500; seed++) {
        KT_SEED(seed);
        keel_rand_seed(&r, seed);
        world_t w;
        world_run(&w, &r, 5 + (int)keel_rand_below(&r, 60));
        keel_apobj_t *a = &w.rep[0], *b = &w.rep[1], *c = &w.rep[2];
        keel_apobj_t ab = merged(a, b), ba = merged(b, a), aa = merged(a, a);
        keel_apobj_t ab_c = merged(&ab, c), bc = merged(b, c), a_bc = merged(a, &bc);
        KT_CHECK(keel_apobj_equal(&ab, &ba));
        KT_CHECK(keel_apobj_equal(&aa, a));
        KT_CHECK(keel_apobj_equal(&ab_c, &a_bc));
        /* and the encoding is canonical: equal states, equal bytes, round trip */
        keel_buf_t e1, e2;
        keel_buf_init(&e1, 0), keel_buf_init(&e2, 0);
        KT_EQ_INT(keel_apobj_encode(&ab, &e1), 0);
        KT_EQ_INT(keel_apobj_encode(&ba, &e2), 0);
        KT_EQ_INT(e1.len, e2.len);
        KT_EQ_MEM(e1.data, e2.data, e1.len);
        keel_apobj_t d;
        keel_errmsg_t msg;
        KT_EQ_INT(keel_apobj_decode(e1.data, e1.len, &d, &msg), 0);
        KT_CHECK(keel_apobj_equal(&d, &ab));
        keel_buf_free(&e1), keel_buf_free(&e2);
        keel_apobj_free(&d);
        keel_apobj_free(&ab), keel_apobj_free(&ba), keel_apobj_free(&aa);
        keel_apobj_free(&ab_c), keel_apobj_free(&bc), keel_apobj_free(&a_bc);
        world_free(&w);
    }
}

static void decode_rejects_malformed_objects_with_a_reason(void)
{
    keel_apobj_t o, d;
    keel_apobj_init(&o);
    put_str(&o, NULL, 7, "a");
    put_str(&o, NULL, 9, "bb");
    keel_buf_t e;
    keel_buf_init(&e, 0);
    KT_EQ_INT(keel_apobj_encode(&o, &e), 0);
    keel_errmsg_t msg;
    /* every strict prefix is truncated */
    for (size_t k = 0; k < e.len; k++)
        KT_EQ_INT(keel_apobj_decode(e.data, k, &d, &msg), KEEL_EPROTO);
    /* a trailing byte */
    uint8_t *big = malloc(e.len + 1);
    memcpy(big, e.data, e.len);
    big[e.len] = 0;
    KT_EQ_INT(keel_apobj_decode(big, e.len + 1, &d, &msg), KEEL_EPROTO);
    KT_CHECK(strstr(msg.text, "trailing") != NULL);
    /* a sibling whose dot the vv does not cover: vv entry of actor 9 lowered to... 0 is
     * refused by the vv itself; raise the sibling's counter instead */
    memcpy(big, e.data, e.len);
    size_t sib0 = 1 + 1 + 2 * 16 + 2; /* format, vv (2 actors), count */
    big[sib0 + 8] = 5;                /* sibling 0's counter: 1 -> 5 */
    KT_EQ_INT(keel_apobj_decode(big, e.len, &d, &msg), KEEL_EPROTO);
    KT_CHECK(strstr(msg.text, "covered") != NULL);
    memcpy(big, e.data, e.len);
    big[sib0 + 16] = 4; /* unknown flag */
    KT_EQ_INT(keel_apobj_decode(big, e.len, &d, &msg), KEEL_EPROTO);
    memcpy(big, e.data, e.len);
    big[0] = 2; /* unknown format */
    KT_EQ_INT(keel_apobj_decode(big, e.len, &d, &msg), KEEL_EPROTO);
    KT_CHECK(strstr(msg.text, "format") != NULL);
    KT_EQ_INT(keel_apobj_decode(e.data, e.len, &d, &msg), 0);
    KT_CHECK(keel_apobj_equal(&d, &o));
    /* a context blob */
    keel_vv_t v;
    keel_buf_reset(&e);
    KT_EQ_INT(keel_vv_encode(&o.vv, &e), 0);
    KT_EQ_INT(keel_vv_decode_all(e.data, e.len, &v, &msg), 0);
    KT_EQ_INT(keel_vv_compare(&v, &o.vv), KEEL_VV_EQUAL);
    uint8_t too_many[1] = {KEEL_VV_ACTORS_MAX + 1};
    KT_EQ_INT(keel_vv_decode_all(too_many, 1, &v, &msg), KEEL_ETOOBIG);
    uint8_t unsorted[33] = {2, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                            4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    KT_EQ_INT(keel_vv_decode_all(unsorted, sizeof(unsorted), &v, &msg), KEEL_EPROTO);
    free(big);
    keel_buf_free(&e);
    keel_apobj_free(&o), keel_apobj_free(&d);
}

int main(void)
{
    KT_RUN(compare_gives_the_four_outcomes);
    KT_RUN(compare_agrees_with_entrywise_order_on_random_vectors);
    KT_RUN(a_vector_refuses_an_actor_past_its_limit);
    KT_RUN(a_write_without_context_adds_a_sibling);
    KT_RUN(a_write_with_a_context_supersedes_exactly_what_it_covers);
    KT_RUN(a_delete_is_a_tombstone_that_loses_no_concurrent_write);
    KT_RUN(merge_drops_what_the_other_side_superseded_and_keeps_the_concurrent);
    KT_RUN(a_write_past_the_sibling_limit_is_refused_and_changes_nothing);
    KT_RUN(sibling_merge_is_commutative_associative_and_idempotent);
    KT_RUN(decode_rejects_malformed_objects_with_a_reason);
    return kt_done();
}
