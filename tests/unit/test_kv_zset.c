/* test_kv_zset.c - sorted sets: the ordered index against a naive model, the commands on
   entries, snapshots. Redis's exact replies are checked by tests/system/test_redis_diff.py. */
#include "base/num.h"
#include "base/rand.h"
#include "core/kv_zset_int.h"
#include "core/zset.h"
#include "core/zset_int.h"
#include "test_kv_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- the index against a naive model ------------------------------------------------------ */

enum { MODEL_MEMBERS_MAX = 400 };

typedef struct mitem {
    char m[8];
    size_t n;
    double s;
} mitem_t;

typedef struct model {
    mitem_t it[MODEL_MEMBERS_MAX];
    size_t len; /* kept sorted by (score, member) */
} model_t;

static int mcmp(const void *a, const void *b)
{
    const mitem_t *x = a, *y = b;
    return keel_zset_cmp(x->s, (const uint8_t *)x->m, x->n, y->s, (const uint8_t *)y->m, y->n);
}

static int mfind(const model_t *md, const char *m, size_t n)
{
    for (size_t i = 0; i < md->len; i++)
        if (md->it[i].n == n && memcmp(md->it[i].m, m, n) == 0)
            return (int)i;
    return -1;
}

/* Every member in order, ranks both ways, lookups, score and lex ends. */
static void expect_like_model(const keel_zset_t *z, const model_t *md, keel_rand_t *r)
{
    KT_EQ_U64(keel_zset_len(z), md->len);
    const keel_zset_node_t *x = keel_zset_first(z), *prev = NULL;
    for (size_t i = 0; i < md->len; i++, prev = x, x = keel_zset_next(x)) {
        KT_CHECK(x != NULL);
        KT_EQ_U64(x->len, md->it[i].n);
        KT_EQ_MEM(keel_zset_member(x), md->it[i].m, x->len);
        KT_CHECK(x->score == md->it[i].s);
        KT_CHECK(keel_zset_prev(x) == prev);
        KT_EQ_U64(keel_zset_rank(z, x), i);
        KT_CHECK(keel_zset_at(z, i) == x);
        KT_CHECK(keel_zset_find(z, (const uint8_t *)md->it[i].m, md->it[i].n) == x);
    }
    KT_CHECK(x == NULL && keel_zset_last(z) == prev);
    for (int k = 0; k < 20; k++) {
        keel_zset_range_t rg = {(double)keel_rand_range(r, -5, 25),
                                (double)keel_rand_range(r, -5, 25), (int)keel_rand_below(r, 2),
                                (int)keel_rand_below(r, 2)};
        int first = -1, last = -1;
        for (size_t i = 0; i < md->len; i++)
            if (keel_zset_score_gte_min(md->it[i].s, &rg) &&
                keel_zset_score_lte_max(md->it[i].s, &rg)) {
                if (first < 0)
                    first = (int)i;
                last = (int)i;
            }
        const keel_zset_node_t *f = keel_zset_first_in_range(z, &rg),
                               *l = keel_zset_last_in_range(z, &rg);
        KT_CHECK(first < 0 ? f == NULL : f == keel_zset_at(z, (uint64_t)first));
        KT_CHECK(last < 0 ? l == NULL : l == keel_zset_at(z, (uint64_t)last));
    }
}

static void random_member(keel_rand_t *r, char *m, size_t *n)
{
    *n = 1 + keel_rand_below(r, 3);
    for (size_t i = 0; i < *n; i++)
        m[i] = (char)('a' + keel_rand_below(r, 8));
}

static void the_index_agrees_with_a_naive_model_on_random_operations(void)
{
    for (uint64_t seed = 1; seed <= 30; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel_zset_t *z = keel_zset_new();
        model_t *md = calloc(1, sizeof(*md));
        KT_CHECK(z && md);
        for (int op = 0; op < 3000; op++) {
            char m[8];
            size_t n;
            random_member(&r, m, &n);
            double s = (double)keel_rand_range(&r, 0, 20) / (keel_rand_below(&r, 4) ? 1 : 4);
            int i = mfind(md, m, n);
            keel_zset_node_t *x = keel_zset_find(z, (const uint8_t *)m, n);
            KT_CHECK((i < 0) == (x == NULL));
            int what = (int)keel_rand_below(&r, 10);
            if (what < 5 && i < 0) { /* add */
                x = keel_zset_node_new((const uint8_t *)m, n, s);
                KT_CHECK(x != NULL);
                KT_EQ_INT(keel_zset_reserve(z, 1, x->level), 0);
                keel_zset_insert(z, x);
                mitem_t *it = &md->it[md->len++];
                memcpy(it->m, m, n);
                it->n = n;
                it->s = s;
            } else if (what < 8 && i >= 0) { /* rescore */
                keel_zset_rescore(z, x, s);
                md->it[i].s = s;
            } else if (i >= 0) { /* delete */
                keel_zset_delete(z, x);
                md->it[i] = md->it[--md->len];
            }
            qsort(md->it, md->len, sizeof(md->it[0]), mcmp);
            if (op % 100 == 0)
                expect_like_model(z, md, &r);
        }
        expect_like_model(z, md, &r);
        keel_zset_free(z);
        free(md);
    }
}

/* Every level's links and spans against the order of level 0: a link's span is the count
   of nodes it moves over, each node is on every level below its own, and the set's level is
   its highest node's. */
static void expect_links_sound(const keel_zset_t *z)
{
    uint64_t n = keel_zset_len(z);
    const keel_zset_node_t **at = calloc(n + 1, sizeof(*at));
    KT_CHECK(at != NULL);
    uint32_t top = 1;
    uint64_t k = 0;
    for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x)) {
        at[++k] = x; /* by rank, the header 0 */
        top = x->level > top ? x->level : top;
    }
    KT_EQ_U64(k, n);
    KT_EQ_U64(z->level, top);
    for (uint32_t i = 0; i < z->level; i++) {
        uint64_t rank = 0, seen = 0, want = 0;
        for (uint64_t r = 1; r <= n; r++)
            want += at[r]->level > i;
        const keel_zset_node_t *p = z->header;
        while (p->lv[i].forward) {
            rank += p->lv[i].span;
            KT_CHECK(rank <= n && at[rank] == p->lv[i].forward);
            p = p->lv[i].forward;
            seen++;
        }
        KT_EQ_U64(seen, want);
        KT_EQ_U64(rank + p->lv[i].span, p == z->header ? p->lv[i].span : n);
    }
    free(at);
}

/* A large set moved about by new scores (most moves far, some near, many ties), with adds
   and deletes: the side-by-side descents of a move leave the same links as an unlink and a
   link would. */
static void moves_in_a_large_set_keep_every_level_sound(void)
{
    enum { MEMBERS = 3000 };
    for (uint64_t seed = 1; seed <= 4; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel_zset_t *z = keel_zset_new();
        double *score = calloc(MEMBERS, sizeof(*score));
        KT_CHECK(z && score);
        char m[16];
        for (int op = 0; op < 40000; op++) {
            int i = (int)keel_rand_below(&r, MEMBERS);
            int n = snprintf(m, sizeof(m), "m%04d", i);
            double s = (double)keel_rand_range(&r, 0, seed & 1 ? 50 : 100000);
            keel_zset_node_t *x = keel_zset_find(z, (const uint8_t *)m, (size_t)n);
            if (x == NULL) {
                x = keel_zset_node_new((const uint8_t *)m, (size_t)n, s);
                KT_CHECK(x != NULL);
                KT_EQ_INT(keel_zset_reserve(z, 1, x->level), 0);
                keel_zset_insert(z, x);
            } else if (keel_rand_below(&r, 10) == 0) {
                keel_zset_delete(z, x);
                continue;
            } else {
                keel_zset_rescore(z, x, s);
            }
            score[i] = s;
            if (op % 4000 == 0)
                expect_links_sound(z);
        }
        expect_links_sound(z);
        uint64_t rank = 0;
        for (const keel_zset_node_t *x = keel_zset_first(z), *prev = NULL; x;
             prev = x, x = keel_zset_next(x), rank++) {
            KT_CHECK(keel_zset_prev(x) == prev && keel_zset_rank(z, x) == rank);
            KT_CHECK(prev == NULL || keel_zset_cmp(prev->score, keel_zset_member(prev), prev->len,
                                                   x->score, keel_zset_member(x), x->len) < 0);
            const uint8_t *d = keel_zset_member(x) + 1; /* "mDDDD" */
            int i = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
            KT_CHECK(x->score == score[i]);
        }
        free(score);
        keel_zset_free(z);
    }
}

typedef struct seen {
    int count[MODEL_MEMBERS_MAX];
    const keel_zset_t *z;
} seen_t;

static void see(void *data, const keel_zset_node_t *x)
{
    seen_t *s = data;
    s->count[keel_zset_rank(s->z, x)]++;
}

static void a_scan_returns_every_member_present_throughout_at_least_once(void)
{
    keel_zset_t *z = keel_zset_new();
    char m[16];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(m, sizeof(m), "m%d", i);
        keel_zset_node_t *x = keel_zset_node_new((const uint8_t *)m, (size_t)n, i);
        KT_EQ_INT(keel_zset_reserve(z, 1, x->level), 0);
        keel_zset_insert(z, x);
    }
    /* scan while the table shrinks (deletions of members above 200) and grows back */
    seen_t *s = calloc(1, sizeof(*s));
    s->z = z;
    uint64_t cursor = 0;
    int step = 0;
    do {
        cursor = keel_zset_scan(z, cursor, see, s);
        if (step == 3)
            for (int i = 299; i >= 200; i--) {
                int n = snprintf(m, sizeof(m), "m%d", i);
                keel_zset_delete(z, keel_zset_find(z, (const uint8_t *)m, (size_t)n));
            }
        step++;
    } while (cursor != 0);
    for (int i = 0; i < 200; i++)
        KT_CHECK(s->count[i] >= 1);
    free(s);
    keel_zset_free(z);
}

static int grow_sink(void *data, const uint8_t *p, size_t n)
{
    keel_buf_t *b = data;
    return keel_buf_append(b, p, n);
}

static void a_set_encodes_and_decodes_exactly_and_bad_bodies_are_refused(void)
{
    keel_zset_t *z = keel_zset_new(), *back = NULL;
    const char *ms[] = {"b", "a", "", "zz", "inf"};
    double ss[] = {1.5, 1.5, -INFINITY, 1e300, INFINITY};
    for (int i = 0; i < 5; i++) {
        keel_zset_node_t *x = keel_zset_node_new((const uint8_t *)ms[i], strlen(ms[i]), ss[i]);
        KT_EQ_INT(keel_zset_reserve(z, 1, x->level), 0);
        keel_zset_insert(z, x);
    }
    keel_zset_set_skiplist(z);
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_zset_encode(z, grow_sink, &b), 0);
    const uint8_t *p = keel_buf_rptr(&b);
    size_t n = keel_buf_unread(&b);
    KT_EQ_INT(keel_zset_decode(p, n, &back), 0);
    KT_EQ_U64(keel_zset_len(back), 5);
    KT_EQ_INT(keel_zset_is_listpack(back), 0);
    for (const keel_zset_node_t *x = keel_zset_first(z), *y = keel_zset_first(back); x;
         x = keel_zset_next(x), y = keel_zset_next(y)) {
        KT_CHECK(y && x->len == y->len && x->score == y->score);
        KT_EQ_MEM(keel_zset_member(x), keel_zset_member(y), x->len);
    }
    keel_zset_free(back);
    for (size_t cut = 0; cut < n; cut++) /* every truncation */
        KT_EQ_INT(keel_zset_decode(p, cut, &back), KEEL_EPROTO);
    uint8_t *q = malloc(n);
    memcpy(q, p, n);
    /* members out of order: swap the first two records' scores (-inf, then 1.5) */
    uint64_t nan_bits = 0x7ff8000000000001ull;
    memcpy(q + 17 + 4 + 0, &nan_bits, 8); /* the first member is "" : its score follows */
    KT_EQ_INT(keel_zset_decode(q, n, &back), KEEL_EPROTO);
    memcpy(q, p, n);
    q[17 + 4 + 0 + 7] = 0x7f; /* -inf becomes a large positive: out of order */
    KT_EQ_INT(keel_zset_decode(q, n, &back), KEEL_EPROTO);
    memcpy(q, p, n);
    q[0] = 2; /* no such encoding */
    KT_EQ_INT(keel_zset_decode(q, n, &back), KEEL_EPROTO);
    free(q);
    keel_buf_free(&b);
    keel_zset_free(z);
}

/* A body marked listpack-encoded that no listpack could be (129 members, or a member of 65
   bytes) is refused: ZSCAN walks such a set into a 128-slot array. */
static void a_listpack_mark_on_a_large_set_is_refused(void)
{
    for (int round = 0; round < 2; round++) {
        keel_zset_t *z = keel_zset_new(), *back = NULL;
        int members = round == 0 ? (int)KEEL_ZSET_LISTPACK_ENTRIES_MAX + 1 : 2;
        for (int i = 0; i < members; i++) {
            char m[80];
            int ml = round == 0 ? snprintf(m, sizeof(m), "m%03d", i)
                                : snprintf(m, sizeof(m), "%0*d", i ? 65 : 1, i);
            keel_zset_node_t *x = keel_zset_node_new((const uint8_t *)m, (size_t)ml, i);
            KT_EQ_INT(keel_zset_reserve(z, 1, x->level), 0);
            keel_zset_insert(z, x);
        }
        keel_zset_set_skiplist(z);
        keel_buf_t b;
        keel_buf_init(&b, 0);
        KT_EQ_INT(keel_zset_encode(z, grow_sink, &b), 0);
        uint8_t *q = malloc(keel_buf_unread(&b));
        memcpy(q, keel_buf_rptr(&b), keel_buf_unread(&b));
        KT_EQ_INT(keel_zset_decode(q, keel_buf_unread(&b), &back), 0);
        keel_zset_free(back);
        q[0] = 1; /* listpack */
        KT_EQ_INT(keel_zset_decode(q, keel_buf_unread(&b), &back), KEEL_EPROTO);
        free(q);
        keel_buf_free(&b);
        keel_zset_free(z);
    }
}

/* ---- the commands on entries ------------------------------------------------------------ */

static void zadd_builds_a_set_that_empties_into_no_key(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    KT_EQ_STR(kvt(t, "ZADD z 1 a 2 b 3 c"), ":3\r\n");
    KT_EQ_STR(kvt(t, "TYPE z"), "+zset\r\n");
    KT_EQ_STR(kvt(t, "ZRANGE z 0 -1 WITHSCORES"),
              "*6\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\nc\r\n$1\r\n3\r\n");
    KT_EQ_STR(kvt(t, "ZINCRBY z 0.1 a"), "$18\r\n1.1000000000000001\r\n");
    KT_EQ_STR(kvt(t, "ZREM z a b c"), ":3\r\n");
    KT_EQ_STR(kvt(t, "EXISTS z"), ":0\r\n");
    KT_EQ_U64(t->kv.count, 0);
    KT_EQ_U64(t->kv.bytes, 0); /* every byte the set held is given back */
    KT_EQ_STR(kvt(t, "SET s x"), "+OK\r\n");
    KT_EQ_STR(kvt(t, "ZADD s 1 a"),
              "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    KT_EQ_STR(kvt(t, "ZADD z NX XX 1 a"),
              "-ERR XX and NX options at the same time are not compatible\r\n");
    kvt_free(t);
    free(t);
}

static void every_change_makes_a_new_version_and_no_change_makes_none(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    keel_kv_value_t v;
    kvt(t, "ZADD z 1 a");
    KT_EQ_INT(keel_kv_get(&t->kv, "z", 1, &v), 0);
    uint64_t v1 = v.version, rev = t->kv.revision;
    kvt(t, "ZADD z 1 a"); /* same score: nothing changes */
    KT_EQ_INT(keel_kv_get(&t->kv, "z", 1, &v), 0);
    KT_EQ_U64(v.version, v1);
    KT_EQ_U64(t->kv.revision, rev);
    kvt(t, "ZADD z 2 a");
    KT_EQ_INT(keel_kv_get(&t->kv, "z", 1, &v), 0);
    KT_CHECK(v.version > v1);
    KT_EQ_U64(t->kv.revision, rev + 1);
    kvt(t, "ZPOPMIN z");
    KT_EQ_INT(keel_kv_get(&t->kv, "z", 1, &v), KEEL_ENOTFOUND);
    KT_EQ_U64(t->kv.revision, rev + 2);
    kvt_free(t);
    free(t);
}

static void the_memory_of_a_key_follows_its_set(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    char line[64];
    for (int i = 0; i < 500; i++) {
        snprintf(line, sizeof(line), "ZADD z %d member%d", i, i);
        kvt(t, line);
    }
    size_t full = t->kv.bytes;
    KT_CHECK(full > 500 * (sizeof(keel_zset_node_t) + 8));
    KT_EQ_STR(kvt(t, "ZREMRANGEBYRANK z 0 399"), ":400\r\n");
    KT_CHECK(t->kv.bytes < full);
    KT_EQ_STR(kvt(t, "ZUNIONSTORE d 1 z"), ":100\r\n");
    KT_EQ_STR(kvt(t, "DEL z d"), ":2\r\n");
    KT_EQ_U64(t->kv.bytes, 0);
    kvt_free(t);
    free(t);
}

static void zrandmember_is_a_function_of_the_state_and_the_time(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    kvt(t, "ZADD z 1 a 2 b 3 c 4 d 5 e 6 f 7 g 8 h 9 i 10 j");
    char first[512];
    snprintf(first, sizeof(first), "%s", kvt_read_at(t, 5000, "ZRANDMEMBER z -20 WITHSCORES"));
    KT_EQ_STR(kvt_read_at(t, 5000, "ZRANDMEMBER z -20 WITHSCORES"), first);
    int differs = 0;
    for (uint64_t now = 5001; now < 5010; now++)
        differs |= strcmp(kvt_read_at(t, now, "ZRANDMEMBER z -20 WITHSCORES"), first) != 0;
    KT_CHECK(differs);
    /* distinct picks are distinct, in every size regime */
    for (int count = 2; count < 10; count++) {
        snprintf(first, sizeof(first), "ZRANDMEMBER z %d", count);
        const char *r = kvt_read_at(t, 7000 + (uint64_t)count, first);
        int seen[26] = {0};
        for (const char *p = strstr(r, "$1\r\n"); p; p = strstr(p + 4, "$1\r\n"))
            KT_EQ_INT(seen[p[4] - 'a']++, 0);
    }
    kvt_free(t);
    free(t);
}

static void a_snapshot_round_trips_sets_with_their_encoding(void)
{
    kvt_t *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    kvt_init(a, NULL);
    kvt_init(b, NULL);
    char line[64];
    kvt(a, "ZADD small -0 z 1.5 a inf b -inf c");
    for (int i = 0; i < 200; i++) {
        snprintf(line, sizeof(line), "ZADD big %d.25 m%03d", i % 17, i);
        kvt(a, line);
    }
    kvt(a, "ZADD big -0 negz");
    kvt(a, "PEXPIRE small 100000");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&a->kv, &snap), 0);
    KT_EQ_INT(keel_kv_snapshot_decode(&b->kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL),
              0);
    KT_EQ_U64(b->kv.bytes, a->kv.bytes);
    const char *reads[] = {"ZRANGE small 0 -1 WITHSCORES", "ZRANGE big 0 -1 WITHSCORES",
                           "OBJECT ENCODING small",        "OBJECT ENCODING big",
                           "ZSCAN big 0 COUNT 1000",       "ZSCORE big negz",
                           "ZRANGEBYLEX big [m1 (m2",      "PTTL small",
                           "ZRANDMEMBER big -5 WITHSCORES"};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        static char want[sizeof(a->text)];
        const char *got = kvt_read_at(a, 2000, reads[i]);
        memcpy(want, got, strlen(got) + 1);
        KT_EQ_STR(kvt_read_at(b, 2000, reads[i]), want);
    }
    KT_EQ_STR(kvt_read_at(b, 2000, "OBJECT ENCODING big"), "$8\r\nskiplist\r\n");
    KT_EQ_STR(kvt_read_at(b, 2000, "ZSCORE big negz"), "$2\r\n-0\r\n");
    KT_EQ_STR(kvt_read_at(b, 2000, "ZSCORE small z"), "$1\r\n0\r\n");
    keel_buf_free(&snap);
    kvt_free(a);
    kvt_free(b);
    free(a);
    free(b);
}

static void copy_and_rename_carry_the_set(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    kvt(t, "ZADD z 1 a 2 b");
    KT_EQ_STR(kvt(t, "COPY z y"), ":1\r\n");
    KT_EQ_STR(kvt(t, "ZADD y 3 c"), ":1\r\n");
    KT_EQ_STR(kvt(t, "ZCARD z"), ":2\r\n");
    KT_EQ_STR(kvt(t, "RENAME y x"), "+OK\r\n");
    KT_EQ_STR(kvt(t, "ZRANGE x 0 -1"), "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
    KT_EQ_STR(kvt(t, "DEL x z"), ":2\r\n");
    KT_EQ_U64(t->kv.bytes, 0);
    kvt_free(t);
    free(t);
}

/* The pop a blocking wrapper (BZPOPMIN, BZMPOP) is to call: silent when nothing is there
   (the wrapper waits), BZPOPMIN's [key, member, score] when it finds a set. */
static void the_pop_serves_a_blocking_wrapper(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    const uint8_t *argv[] = {(const uint8_t *)"BZPOPMIN", (const uint8_t *)"nope",
                             (const uint8_t *)"z", (const uint8_t *)"0"};
    size_t lens[] = {8, 4, 1, 1};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    reply_t o = {&b, 0, 0};
    call_t c = {&t->kv, &t->kv, 5000, 4, argv, lens, &o, "bzpopmin", NULL, NULL, NULL};
    keel__zs_pop_opts_t opts = {
        .first = 1, .n = 2, .count = 1, .emit_key = 1, .silent_when_empty = 1};
    uint64_t popped = 9, rev = t->kv.revision;
    KT_EQ_INT(keel__zs_pop(&c, &opts, &popped), 0);
    KT_EQ_U64(popped, 0);
    KT_EQ_U64(keel_buf_unread(&b), 0);
    KT_EQ_U64(t->kv.revision, rev);
    kvt(t, "ZADD z 1 a 2 b");
    rev = t->kv.revision;
    KT_EQ_INT(keel__zs_pop(&c, &opts, &popped), 0);
    KT_EQ_U64(popped, 1);
    KT_EQ_U64(t->kv.revision, rev + 1);
    const char want[] = "*3\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\n1\r\n";
    KT_EQ_U64(keel_buf_unread(&b), strlen(want));
    KT_EQ_MEM(keel_buf_rptr(&b), want, strlen(want));
    kvt(t, "SET nope x"); /* a key of another type before the set: WRONGTYPE, no pop */
    keel_buf_reset(&b);
    KT_EQ_INT(keel__zs_pop(&c, &opts, &popped), REPLIED);
    KT_EQ_U64(popped, 0);
    KT_EQ_STR(kvt(t, "ZCARD z"), ":1\r\n");
    keel_buf_free(&b);
    kvt_free(t);
    free(t);
}

/* BZPOPMIN, BZPOPMAX, BZMPOP as they run in the state machine (inside MULTI, or served as
   KEEL.BPOP): pop or answer nil, never wait; and what the server asks of the core. */
static void blocking_pops_serve_without_waiting_and_plug_into_kv_bpop(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    KT_EQ_STR(kvt(t, "BZPOPMIN z 0"), "*-1\r\n");
    KT_EQ_STR(kvt(t, "BZMPOP 0 1 z MIN"), "*-1\r\n");
    KT_EQ_STR(kvt(t, "ZADD z 1 a 2 b 3 c 4 d"), ":4\r\n");
    KT_EQ_STR(kvt(t, "BZPOPMIN none z 0"), "*3\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\n1\r\n");
    KT_EQ_STR(kvt(t, "BZPOPMAX z 1.5"), "*3\r\n$1\r\nz\r\n$1\r\nd\r\n$1\r\n4\r\n");
    KT_EQ_STR(kvt(t, "KEEL.BPOP tok BZMPOP 0 1 z MAX COUNT 5"),
              "*2\r\n$1\r\nz\r\n*2\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n*2\r\n$1\r\nb\r\n$1\r\n2\r\n");
    KT_EQ_STR(kvt(t, "EXISTS z"), ":0\r\n"); /* the emptied set is no key */
    KT_EQ_STR(kvt(t, "KEEL.BPOP tok BZPOPMIN z 0"), "*-1\r\n");
    KT_EQ_STR(kvt(t, "KEEL.BPOP tok ZPOPMIN z"), "-ERR KEEL.BPOP runs a blocking pop only\r\n");
    KT_EQ_STR(kvt(t, "BZPOPMIN z -1"), "-ERR timeout is negative\r\n");
    KT_EQ_STR(kvt(t, "BZPOPMIN z x"), "-ERR timeout is not a float or out of range\r\n");
    KT_EQ_STR(kvt(t, "BZMPOP 0 0 z MIN"), "-ERR numkeys should be greater than 0\r\n");
    KT_EQ_STR(kvt(t, "BZMPOP x 1 z MIN COUNT 0"), "-ERR count should be greater than 0\r\n");
    KT_EQ_STR(kvt(t, "BZMPOP x 1 z MIN"), "-ERR timeout is not a float or out of range\r\n");
    KT_EQ_STR(kvt(t, "SET s v"), "+OK\r\n");
    KT_EQ_STR(kvt(t, "BZPOPMIN z s 0"),
              "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    /* the parse, the cardinality and the one-key forms */
    const uint8_t *argv[10];
    size_t lens[10];
    keel_kv_bpop_t bp;
    int argc = kvt_split("BZMPOP 2.5 2 x y MAX COUNT 3", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(bp.kind, KEEL_KV_BPOP_MPOP);
    KT_EQ_U64(bp.first_key, 3);
    KT_EQ_U64(bp.nkeys, 2);
    KT_EQ_U64(bp.count, 3);
    KT_EQ_INT(bp.timeout_ms, 2500);
    KT_EQ_INT(bp.left, 0);
    KT_EQ_INT(keel_kv_bpop_is_zset(&bp), 1);
    const uint8_t *out[KEEL_KV_BPOP_SERVED_ARGC_MAX];
    size_t olens[KEEL_KV_BPOP_SERVED_ARGC_MAX];
    char num[KEEL_DEC_BYTES_MAX];
    char joined[128] = "";
    size_t n = keel_kv_bpop_served(&bp, argc, argv, lens, 4, out, olens, num);
    for (size_t i = 0; i < n; i++) {
        strncat(joined, (const char *)out[i], olens[i]);
        strcat(joined, " ");
    }
    KT_EQ_STR(joined, "BZMPOP 0 1 y MAX COUNT 3 ");
    argc = kvt_split("bzpopmin x y 0.1", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(bp.kind, KEEL_KV_BPOP_POP);
    KT_EQ_U64(bp.first_key, 1);
    KT_EQ_U64(bp.nkeys, 2);
    KT_EQ_INT(bp.left, 1);
    KT_EQ_INT(bp.timeout_ms, 100);
    joined[0] = '\0';
    n = keel_kv_bpop_served(&bp, argc, argv, lens, 2, out, olens, num);
    for (size_t i = 0; i < n; i++) {
        strncat(joined, (const char *)out[i], olens[i]);
        strcat(joined, " ");
    }
    KT_EQ_STR(joined, "bzpopmin y 0 ");
    argc = kvt_split("BZPOPMAX x 0", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(bp.left, 0);
    argc = kvt_split("BZPOPMIN x -1", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("BZPOPMIN 0", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("BZMPOP 0 1 x UP", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("BZMPOP 0 1 x MIN COUNT 0", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("BZMPOP 0 3 x MIN", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    KT_EQ_STR(kvt(t, "ZADD q 1 a 2 b"), ":2\r\n");
    argc = kvt_split("BZPOPMIN q 0", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(keel_kv_bpop_avail(&t->kv, 0, &bp, (const uint8_t *)"q", 1), 2);
    KT_EQ_INT(keel_kv_bpop_avail(&t->kv, 0, &bp, (const uint8_t *)"z", 1), 0);
    KT_EQ_INT(keel_kv_bpop_avail(&t->kv, 0, &bp, (const uint8_t *)"s", 1), -1);
    KT_EQ_STR(kvt(t, "RPUSH l x"), ":1\r\n");
    KT_EQ_INT(keel_kv_bpop_avail(&t->kv, 0, &bp, (const uint8_t *)"l", 1), -1);
    argc = kvt_split("BLPOP l 0", argv, lens); /* and the list's still reads its list */
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(keel_kv_bpop_is_zset(&bp), 0);
    KT_EQ_INT(keel_kv_bpop_avail(&t->kv, 0, &bp, (const uint8_t *)"q", 1), -1);
    kvt_free(t);
    free(t);
}

static void plain_sets_are_inputs_with_score_one_and_leave_no_memory_behind(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    KT_EQ_STR(kvt(t, "ZADD z 1 a 5 b"), ":2\r\n");
    KT_EQ_STR(kvt(t, "SADD s b c"), ":2\r\n");
    uint64_t bytes = t->kv.bytes;
    KT_EQ_STR(kvt(t, "ZUNION 2 z s WITHSCORES"),
              "*6\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nc\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n6\r\n");
    KT_EQ_STR(kvt(t, "ZINTER 2 s z WEIGHTS 10 1 WITHSCORES"), "*2\r\n$1\r\nb\r\n$2\r\n15\r\n");
    KT_EQ_STR(kvt(t, "ZDIFF 2 s z"), "*1\r\n$1\r\nc\r\n");
    KT_EQ_STR(kvt(t, "ZINTERCARD 2 s s"), ":2\r\n");
    KT_EQ_U64(t->kv.bytes, bytes); /* the sets' sorted copies were freed */
    KT_EQ_STR(kvt(t, "ZUNIONSTORE s 1 s"), ":2\r\n");
    KT_EQ_STR(kvt(t, "TYPE s"), "+zset\r\n");
    KT_EQ_STR(kvt(t, "RPUSH l x"), ":1\r\n");
    KT_EQ_STR(kvt(t, "ZUNION 2 z l"),
              "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    kvt_free(t);
    free(t);
}

int main(void)
{
    KT_RUN(the_index_agrees_with_a_naive_model_on_random_operations);
    KT_RUN(moves_in_a_large_set_keep_every_level_sound);
    KT_RUN(a_scan_returns_every_member_present_throughout_at_least_once);
    KT_RUN(a_set_encodes_and_decodes_exactly_and_bad_bodies_are_refused);
    KT_RUN(a_listpack_mark_on_a_large_set_is_refused);
    KT_RUN(zadd_builds_a_set_that_empties_into_no_key);
    KT_RUN(every_change_makes_a_new_version_and_no_change_makes_none);
    KT_RUN(the_memory_of_a_key_follows_its_set);
    KT_RUN(zrandmember_is_a_function_of_the_state_and_the_time);
    KT_RUN(a_snapshot_round_trips_sets_with_their_encoding);
    KT_RUN(copy_and_rename_carry_the_set);
    KT_RUN(the_pop_serves_a_blocking_wrapper);
    KT_RUN(blocking_pops_serve_without_waiting_and_plug_into_kv_bpop);
    KT_RUN(plain_sets_are_inputs_with_score_one_and_leave_no_memory_behind);
    return kt_done();
}
