/* test_merkle.c - Merkle anti-entropy trees (src/core/merkle) and AP placement (src/core/applace).
 */
#include "base/rand.h"
#include "core/applace.h"
#include "core/merkle.h"
#include "ktest.h"

#include <stdlib.h>

#define KEYS 3000

typedef struct kd {
    char key[16];
    uint64_t digest; /* 0: absent */
} kd_t;

static uint64_t key_hash(const kd_t *k)
{
    return keel_applace_key_hash(k->key, strlen(k->key));
}

static uint64_t item(const kd_t *k)
{
    return k->digest ? keel_merkle_item(k->key, strlen(k->key), k->digest) : 0;
}

static void merkle_diff_finds_exactly_the_differing_keys(void)
{
    keel_rand_t r;
    static kd_t a[KEYS], b[KEYS];
    for (uint64_t seed = 1; seed <= 40; seed++) {
        KT_SEED(seed);
        keel_rand_seed(&r, seed);
        keel_merkle_t ta, tb;
        uint32_t depth = 4 + (uint32_t)keel_rand_below(&r, 8);
        KT_EQ_INT(keel_merkle_init(&ta, depth), 0);
        KT_EQ_INT(keel_merkle_init(&tb, depth), 0);
        KT_EQ_U64(keel_merkle_root(&ta), keel_merkle_root(&tb));
        for (int i = 0; i < KEYS; i++) {
            snprintf(a[i].key, sizeof(a[i].key), "k%d", i);
            a[i].digest = keel_rand_chance(&r, 0.9) ? keel_rand_u64(&r) | 1 : 0;
            b[i] = a[i];
        }
        /* b diverges on a few keys: changed, lost, or only on b */
        int changes = (int)keel_rand_below(&r, 30);
        static uint8_t changed[KEYS];
        memset(changed, 0, sizeof(changed));
        for (int c = 0; c < changes; c++) {
            int i = (int)keel_rand_below(&r, KEYS);
            uint64_t d = keel_rand_chance(&r, 0.3) ? 0 : keel_rand_u64(&r) | 1;
            if (d != a[i].digest) {
                b[i].digest = d;
                changed[i] = 1;
            }
        }
        /* insert in different orders: the trees must not care */
        for (int i = 0; i < KEYS; i++)
            keel_merkle_update(&ta, key_hash(&a[i]), 0, item(&a[i]));
        for (int i = KEYS - 1; i >= 0; i--) {
            keel_merkle_update(&tb, key_hash(&b[i]), 0, item(&a[i]));
            keel_merkle_update(&tb, key_hash(&b[i]), item(&a[i]), item(&b[i]));
        }
        uint32_t leaves[1u << 12], compared;
        uint32_t n = keel_merkle_diff(&ta, &tb, leaves, 1u << 12, &compared);
        KT_CHECK(n <= (1u << depth));
        int found = 0, want = 0;
        for (int i = 0; i < KEYS; i++) {
            want += changed[i];
            uint32_t leaf = keel_merkle_leaf_of(&ta, key_hash(&a[i]));
            int in_diff = 0;
            for (uint32_t j = 0; j < n; j++)
                in_diff |= leaves[j] == leaf;
            if (changed[i] && !in_diff)
                KT_FAIL("key %s changed but its leaf %u is not in the diff", a[i].key, leaf);
            if (in_diff && a[i].digest != b[i].digest)
                found++;
        }
        KT_EQ_INT(found, want);
        /* every differing leaf holds a changed key: the diff is exact at leaf level */
        for (uint32_t j = 0; j < n; j++) {
            int any = 0;
            for (int i = 0; i < KEYS && !any; i++)
                any = changed[i] && keel_merkle_leaf_of(&ta, key_hash(&a[i])) == leaves[j];
            KT_CHECK(any);
            uint64_t lo, hi;
            keel_merkle_leaf_range(&ta, leaves[j], &lo, &hi);
            KT_CHECK(keel_merkle_leaf_of(&ta, lo) == leaves[j] &&
                     keel_merkle_leaf_of(&ta, hi) == leaves[j]);
        }
        if (want == 0)
            KT_EQ_U64(keel_merkle_root(&ta), keel_merkle_root(&tb));
        if (want == 1)
            KT_EQ_INT(compared, 2 * depth + 1); /* one path down, its siblings beside it */
        /* repair: copy b's state into a for the differing keys, then the roots agree */
        for (int i = 0; i < KEYS; i++)
            if (changed[i]) {
                keel_merkle_update(&ta, key_hash(&a[i]), item(&a[i]), item(&b[i]));
                a[i] = b[i];
            }
        KT_EQ_U64(keel_merkle_root(&ta), keel_merkle_root(&tb));
        KT_EQ_INT(keel_merkle_diff(&ta, &tb, leaves, 1u << 12, NULL), 0);
        keel_merkle_free(&ta), keel_merkle_free(&tb);
    }
    keel_merkle_t t;
    KT_EQ_INT(keel_merkle_init(&t, KEEL_MERKLE_DEPTH_MAX + 1), KEEL_EINVAL);
}

#define PKEYS 20000
#define NREP 3

static void build(keel_applace_t *p, uint32_t n, const uint64_t *ids)
{
    KT_EQ_INT(keel_applace_build(p, ids, n), 0);
}

static void placement_lists_distinct_nodes_homes_first(void)
{
    keel_applace_t p;
    KT_EQ_INT(keel_applace_init(&p, 16, KEEL_APPLACE_VNODES_DEFAULT), 0);
    uint64_t ids[8];
    for (int i = 0; i < 8; i++)
        ids[i] = 1000 + (uint64_t)i * 7;
    build(&p, 8, ids);
    uint32_t share[8] = {0};
    for (int k = 0; k < PKEYS; k++) {
        char key[16];
        snprintf(key, sizeof(key), "key%d", k);
        uint32_t out[KEEL_APPLACE_NODES_MAX];
        uint64_t h = keel_applace_key_hash(key, strlen(key));
        uint32_t n = keel_applace_prefs(&p, h, out, 8);
        KT_EQ_INT(n, 8); /* every node appears, once */
        uint32_t seen = 0;
        for (uint32_t i = 0; i < n; i++) {
            KT_CHECK(out[i] < 8 && !(seen & (1u << out[i])));
            seen |= 1u << out[i];
        }
        uint32_t again[3];
        KT_EQ_INT(keel_applace_prefs(&p, h, again, 3), 3);
        KT_EQ_MEM(again, out, sizeof(again)); /* a shorter list is a prefix */
        share[out[0]]++;
    }
    for (int i = 0; i < 8; i++) /* 128 vnodes: each share within 30% of 1/8 */
        KT_CHECK(share[i] > PKEYS / 8 * 7 / 10 && share[i] < PKEYS / 8 * 13 / 10);
    keel_applace_free(&p);
}

/* Fraction of keys whose first home / home set changes when nodes go from `from` to `to`. */
static void remap(const uint64_t *from_ids, uint32_t from_n, const uint64_t *to_ids, uint32_t to_n,
                  double *first, double *homes, int *only_that_node)
{
    keel_applace_t a, b;
    KT_EQ_INT(keel_applace_init(&a, 16, KEEL_APPLACE_VNODES_DEFAULT), 0);
    KT_EQ_INT(keel_applace_init(&b, 16, KEEL_APPLACE_VNODES_DEFAULT), 0);
    build(&a, from_n, from_ids);
    build(&b, to_n, to_ids);
    int moved_first = 0, moved_homes = 0;
    *only_that_node = 1;
    for (int k = 0; k < PKEYS; k++) {
        char key[16];
        snprintf(key, sizeof(key), "key%d", k);
        uint64_t h = keel_applace_key_hash(key, strlen(key));
        uint32_t x[NREP], y[NREP];
        keel_applace_prefs(&a, h, x, NREP);
        keel_applace_prefs(&b, h, y, NREP);
        moved_first += from_ids[x[0]] != to_ids[y[0]];
        /* compare as id sets; a change may only add or drop the node that joined or left */
        int diff = 0;
        for (int i = 0; i < NREP; i++) {
            int in = 0;
            for (int j = 0; j < NREP; j++)
                in |= from_ids[x[i]] == to_ids[y[j]];
            if (!in) {
                diff = 1;
                int gone = 1; /* x[i]'s node must have left, or be pushed out by the joiner */
                for (uint32_t j = 0; j < to_n; j++)
                    gone &= to_ids[j] != from_ids[x[i]];
                int joiner_in = 0;
                for (int j = 0; j < NREP; j++) {
                    int old = 0;
                    for (uint32_t q = 0; q < from_n; q++)
                        old |= from_ids[q] == to_ids[y[j]];
                    joiner_in |= !old;
                }
                *only_that_node &= gone || joiner_in;
            }
        }
        moved_homes += diff;
    }
    *first = (double)moved_first / PKEYS;
    *homes = (double)moved_homes / PKEYS;
    keel_applace_free(&a), keel_applace_free(&b);
}

static void a_join_or_leave_moves_about_one_nth_of_the_keys(void)
{
    uint64_t ids[11];
    for (int i = 0; i < 11; i++)
        ids[i] = 0xabc000 + (uint64_t)i * 13;
    double first, homes;
    int only;
    remap(ids, 10, ids, 11, &first, &homes, &only); /* node 11 joins 10 */
    printf("join 10->11 nodes: first home moved for %.4f of keys (1/11 = %.4f), home set of 3 "
           "changed for %.4f (3/11 = %.4f)\n",
           first, 1.0 / 11, homes, 3.0 / 11);
    KT_CHECK(only);
    KT_CHECK(first > 0.5 / 11 && first < 1.5 / 11);
    KT_CHECK(homes > 0.5 * 3 / 11 && homes < 1.5 * 3 / 11);
    uint64_t left[9];
    for (int i = 0, j = 0; i < 10; i++)
        if (i != 4)
            left[j++] = ids[i];
    remap(ids, 10, left, 9, &first, &homes, &only); /* node 4 of 10 leaves */
    printf("leave 10->9 nodes: first home moved for %.4f of keys (1/10 = %.4f), home set of 3 "
           "changed for %.4f (3/10 = %.4f)\n",
           first, 1.0 / 10, homes, 3.0 / 10);
    KT_CHECK(only);
    KT_CHECK(first > 0.5 / 10 && first < 1.5 / 10);
    KT_CHECK(homes > 0.5 * 3 / 10 && homes < 1.5 * 3 / 10);
}

int main(void)
{
    KT_RUN(merkle_diff_finds_exactly_the_differing_keys);
    KT_RUN(placement_lists_distinct_nodes_homes_first);
    KT_RUN(a_join_or_leave_moves_about_one_nth_of_the_keys);
    return kt_done();
}
