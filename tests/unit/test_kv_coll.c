/* test_kv_coll.c - the table behind hashes and sets (kv_coll.h) on its own: a big table that
   resizes moves its chains a few buckets per put or delete, and every read in between (find,
   first and next, picks, scans) answers as a model in hash order does. */
#include "core/kv_coll.h"
#include "ktest.h"

#include "base/rand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FIELDS = 3000 };

typedef struct model {
    uint64_t hash[FIELDS];
    int present[FIELDS];
    size_t count;
} model_t;

static size_t field(int i, char *out)
{
    return (size_t)snprintf(out, 16, "f%d", i);
}

/* The model's order: hash, then length, then bytes (kv_coll.c's cmp). */
static int before(const model_t *m, int a, int b)
{
    if (m->hash[a] != m->hash[b])
        return m->hash[a] < m->hash[b];
    char fa[16], fb[16];
    size_t la = field(a, fa), lb = field(b, fb);
    if (la != lb)
        return la < lb;
    return memcmp(fa, fb, la) < 0;
}

/* The present fields in the model's order. */
static size_t ordered(const model_t *m, int *out)
{
    size_t n = 0;
    for (int i = 0; i < FIELDS; i++) {
        if (!m->present[i])
            continue;
        size_t k = n++;
        for (; k > 0 && before(m, i, out[k - 1]); k--)
            out[k] = out[k - 1];
        out[k] = i;
    }
    return n;
}

static int item_is(const keel__kc_item_t *it, int i)
{
    char f[16];
    size_t n = field(i, f);
    return it != NULL && keel__kc_fl(it) == n && memcmp(keel__kc_f(it), f, n) == 0;
}

static void count_one(void *data, const keel__kc_item_t *it)
{
    (void)it;
    (*(size_t *)data)++;
}

/* Everything a reader can ask, against the model. */
static void expect_like_model(const keel__kc_t *t, const model_t *m, keel_rand_t *r)
{
    static int order[FIELDS];
    size_t n = ordered(m, order);
    KT_EQ_U64(keel__kc_count(t), n);
    const keel__kc_item_t *it = keel__kc_first(t);
    for (size_t k = 0; k < n; k++, it = keel__kc_next(t, it))
        KT_CHECK(item_is(it, order[k]));
    KT_CHECK(it == NULL);
    for (int q = 0; q < 20; q++) {
        int i = (int)keel_rand_below(r, FIELDS);
        char f[16];
        size_t fl = field(i, f);
        KT_CHECK((keel__kc_find(t, (const uint8_t *)f, fl) != NULL) == m->present[i]);
        /* a pick is the first item at or after a hash, wrapping */
        uint64_t h = keel_rand_u64(r);
        size_t k = 0;
        while (k < n && m->hash[order[k]] < h)
            k++;
        const keel__kc_item_t *p = keel__kc_pick(t, h);
        KT_CHECK(n == 0 ? p == NULL : item_is(p, order[k < n ? k : 0]));
        /* a scan step from that cursor returns the items from there on, at least COUNT */
        size_t seen = 0;
        uint64_t next = keel__kc_scan(t, h, 5, count_one, &seen);
        size_t left = n - k;
        KT_CHECK(seen == (left < 5 ? left : seen) && (left <= 5 || seen >= 5));
        KT_CHECK(next == 0 ? k + seen == n : next == m->hash[order[k + seen]]);
    }
}

static void put(keel__kc_t **t, model_t *m, int i, uint64_t v)
{
    char f[16], val[24];
    size_t fl = field(i, f), vl = (size_t)snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
    keel__kc_item_t *it =
        keel__kc_item_new(*t, (const uint8_t *)f, fl, (const uint8_t *)val, vl % 2 ? vl : 0);
    KT_CHECK(it != NULL);
    KT_EQ_INT(keel__kc_reserve(t, &it, 1), 0);
    KT_EQ_INT(keel__kc_put(*t, it), !m->present[i]);
    m->count += !m->present[i];
    m->present[i] = 1;
}

static void del(keel__kc_t *t, model_t *m, int i)
{
    char f[16];
    size_t fl = field(i, f);
    KT_EQ_INT(keel__kc_del(t, (const uint8_t *)f, fl), m->present[i]);
    m->count -= m->present[i];
    m->present[i] = 0;
}

/*
 * Grows to 3,000 items, shrinks to a few dozen, grows again, with puts and deletes mixed at
 * every stage: the table passes through many moves in both directions, and is read in full
 * at points inside them.
 */
static void reads_answer_in_hash_order_while_a_resize_moves_the_chains(void)
{
    for (uint64_t seed = 1; seed <= 3; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel__kc_t *t = keel__kc_new(keel_rand_u64(&r));
        model_t *m = calloc(1, sizeof(*m));
        KT_CHECK(t && m);
        for (int i = 0; i < FIELDS; i++) {
            char f[16];
            size_t fl = field(i, f);
            m->hash[i] = keel__kc_hash(t, (const uint8_t *)f, fl);
        }
        int moving_seen = 0;
        static const size_t targets[] = {FIELDS, 40, FIELDS / 2, 5, FIELDS};
        for (size_t phase = 0; phase < sizeof(targets) / sizeof(targets[0]); phase++) {
            for (int op = 0; op < 12000; op++) {
                int i = (int)keel_rand_below(&r, FIELDS);
                int grow = m->count < targets[phase];
                if (keel_rand_below(&r, 4) != 0 ? grow : !grow)
                    put(&t, m, i, keel_rand_u64(&r));
                else
                    del(t, m, i);
                if (t->chained && keel__kc_big(t)->ob != NULL)
                    moving_seen++;
                if (op % 397 == 0)
                    expect_like_model(t, m, &r);
            }
            expect_like_model(t, m, &r);
        }
        KT_CHECK(moving_seen > 100); /* the reads above ran inside moves too */
        keel__kc_free(t);
        free(m);
    }
}

/* A resize of a large table is not done in the put that starts it. */
static void a_put_that_doubles_a_large_table_moves_only_a_few_buckets(void)
{
    keel__kc_t *t = keel__kc_new(7);
    model_t *m = calloc(1, sizeof(*m));
    KT_CHECK(t && m);
    for (int i = 0; i < 2048; i++)
        put(&t, m, i, (uint64_t)i);
    const keel__kc_big_t *g = keel__kc_big(t);
    KT_CHECK(t->chained && g->ob == NULL && g->bits == 11);
    put(&t, m, 2048, 1); /* the 2,049th item: 4,096 buckets */
    KT_CHECK(g->ob != NULL && g->bits == 12 && g->obits == 11 && g->moved < 64);
    for (int i = 2049; i < FIELDS && g->ob != NULL; i++)
        put(&t, m, i, (uint64_t)i);
    KT_CHECK(g->ob == NULL); /* done well before the table is full again */
    keel__kc_free(t);
    free(m);
}

int main(void)
{
    KT_RUN(reads_answer_in_hash_order_while_a_resize_moves_the_chains);
    KT_RUN(a_put_that_doubles_a_large_table_moves_only_a_few_buckets);
    return kt_done();
}
