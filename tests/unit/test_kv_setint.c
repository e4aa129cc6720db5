/* test_kv_setint.c - a small set of integers rests inside its key's entry (kv_set_inline.c):
   its memory, its widths, its way to a table and back, and that no answer shows the form. */
#include "test_kv_util.h"

#include "base/rand.h"
#include "core/kv_coll.h"

#include <stdio.h>

static kvt_t a, b;

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static const char *enc(kvt_t *t, const char *key)
{
    static char line[128];
    snprintf(line, sizeof(line), "OBJECT ENCODING %s", key);
    return kvt_read_at(t, 1000, line);
}

/* a's bytes: key + inline value (seed 8, width 1, members) and nothing behind a pointer */
static void small_sets_of_integers_take_their_members_width_in_the_entry(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt_at(&a, 1000, "SADD s 5 1 4 2 3"), ":5\r\n");
    KT_EQ_U64(a.kv.bytes, 1 + 9 + 5 * 2);
    KT_EQ_STR(enc(&a, "s"), "$6\r\nintset\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SADD w 1 -40000"), ":2\r\n");
    KT_EQ_U64(a.kv.bytes, 20 + 1 + 9 + 2 * 4);
    KT_EQ_STR(kvt_at(&a, 1000, "SADD w 5000000000 -9223372036854775808 9223372036854775807"),
              ":3\r\n");
    KT_EQ_U64(a.kv.bytes, 20 + 1 + 9 + 5 * 8);
    KT_EQ_STR(kvt_read_at(&a, 1000,
                          "SMISMEMBER w -9223372036854775808 9223372036854775807 1 "
                          "-40000 5000000000 2 01 +1 -0 x"),
              "*10\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SCARD w"), ":5\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SREM w 5000000000 -9223372036854775808 9223372036854775807"),
              ":3\r\n");
    KT_EQ_U64(a.kv.bytes, 20 + 1 + 9 + 2 * 4); /* the width shrinks with its members */
    KT_EQ_STR(kvt_at(&a, 1000, "SREM w -40000"), ":1\r\n");
    KT_EQ_U64(a.kv.bytes, 20 + 1 + 9 + 1 * 2);
    /* reads unpack (or not) and pack back: the count does not move */
    const char *reads[] = {"SMEMBERS s",    "SSCAN s 0",        "SRANDMEMBER s -3", "SINTER s w",
                           "SORT s",        "SINTERCARD 2 s w", "SUNION s w",       "SDIFF s w",
                           "SISMEMBER s 3", "ZUNION 2 s w",     "TYPE s",           "DUMP s"};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        kvt_read_at(&a, 1000, reads[i]);
        KT_EQ_U64(a.kv.bytes, 20 + 12);
        KT_EQ_STR(enc(&a, "s"), "$6\r\nintset\r\n");
    }
    /* a write that changes nothing, and one that fails */
    KT_EQ_STR(kvt_at(&a, 1000, "SADD s 1 2"), ":0\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SMOVE s w 9"), ":0\r\n");
    KT_EQ_U64(a.kv.bytes, 20 + 12);
    KT_EQ_STR(kvt_at(&a, 1000, "DEL s w"), ":2\r\n");
    KT_EQ_U64(a.kv.bytes, 0);
    kvt_free(&a);
}

/* The members of s between lo and hi in the order SMEMBERS gives, as one string. */
static const char *members(kvt_t *t, int lo, int hi)
{
    static char out[4096];
    const char *r = kvt_read_at(t, 1000, "SMEMBERS s");
    size_t n = 0;
    for (const char *p = strchr(r, '\n') + 1; *p; p = strchr(strchr(p, '\n') + 1, '\n') + 1) {
        int v = atoi(strchr(p, '\n') + 1);
        if (v >= lo && v <= hi)
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%d ", v);
    }
    return out;
}

/* One SSCAN page of s from cursor: marks the members (1..20) in seen, returns the next. */
static unsigned long long scan_page(kvt_t *t, unsigned long long cursor, int *seen)
{
    char line[64];
    snprintf(line, sizeof(line), "SSCAN s %llu COUNT 3", cursor);
    const char *r = kvt_read_at(t, 1000, line); /* *2 $n cursor *k ($len member)... */
    const char *p = strchr(strchr(r, '\n') + 1, '\n') + 1;
    unsigned long long next = strtoull(p, NULL, 10);
    p = strchr(strchr(p, '\n') + 1, '\n') + 1; /* past the cursor and *k */
    for (; *p; p = strchr(strchr(p, '\n') + 1, '\n') + 1) {
        int v = atoi(strchr(p, '\n') + 1);
        if (v >= 1 && v <= 20)
            seen[v] = 1;
    }
    return next;
}

/*
 * Growing past KEEL__KS_INLINE_MAX (or taking a member that is no integer) gives the set its
 * table, with the same seed: the members keep their order, and it
 * (being an intset still) still answers every member of one SSCAN at once. Shrinking back puts it
 * inline again, unless a non-integer ever joined (Redis's intset never comes back from a hashtable
 * either).
 */
static void a_set_goes_to_a_table_and_back_in_the_same_order(void)
{
    kvt_init(&a, NULL);
    static char before[4096], line[512];
    kvt_at(&a, 1000, "SADD s 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16");
    KT_EQ_STR(enc(&a, "s"), "$6\r\nintset\r\n");
    KT_EQ_U64(a.kv.bytes, 1 + 9 + 16 * 2);
    snprintf(before, sizeof(before), "%s", members(&a, 1, 16));
    /* an intset's SSCAN returns every member at once with cursor 0, as Redis does */
    int seen[21] = {0};
    KT_EQ_U64(scan_page(&a, 0, seen), 0);
    for (int v = 1; v <= 16; v++)
        KT_CHECK(seen[v]);
    kvt_at(&a, 1000, "SADD s 17 18 19 20");
    KT_EQ_STR(enc(&a, "s"), "$6\r\nintset\r\n"); /* Redis's name up to 512: a table here */
    KT_CHECK(a.kv.bytes > 1 + 9 + 20 * 8);
    KT_EQ_STR(members(&a, 1, 16), before);
    snprintf(line, sizeof(line), "SREM s 17 18 19 20");
    kvt_at(&a, 1000, line);
    KT_EQ_U64(a.kv.bytes, 1 + 9 + 16 * 2); /* inline again */
    KT_EQ_STR(members(&a, 1, 16), before);
    kvt_at(&a, 1000, "SADD s x");
    kvt_at(&a, 1000, "SREM s x");
    KT_EQ_STR(enc(&a, "s"), "$9\r\nhashtable\r\n");
    KT_CHECK(a.kv.bytes > 1 + 9 + 16 * 2);
    KT_EQ_STR(members(&a, 1, 16), before);
    kvt_free(&a);
}

/*
 * Two keys with the same seed (made at the same revision and time, as on two replicas), one
 * inline and one kept as a table (a non-integer came and went): every read answers alike but
 * SSCAN, which answers an intset whole and a hashtable a page at a time, as Redis does.
 */
static void an_inline_set_and_a_table_answer_alike(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char want[1 << 16];
    kvt_at(&a, 1000, "SADD s 10 -3 7 100000 42 8 9");
    kvt_at(&b, 1000, "SADD s 10 -3 7 100000 42 8 9 x");
    kvt_at(&b, 1000, "SREM s x");
    kvt_at(&a, 1000, "SADD t 7 8 x");
    kvt_at(&b, 1000, "SADD t 7 8 x");
    KT_EQ_STR(enc(&a, "s"), "$6\r\nintset\r\n");
    KT_EQ_STR(enc(&b, "s"), "$9\r\nhashtable\r\n");
    const char *cmds[] = {"SMEMBERS s",
                          "SRANDMEMBER s",
                          "SRANDMEMBER s 3",
                          "SRANDMEMBER s -9",
                          "SRANDMEMBER s 100",
                          "SISMEMBER s 42",
                          "SISMEMBER s 43",
                          "SMISMEMBER s 7 x 100000",
                          "SCARD s",
                          "SINTER s t",
                          "SUNION s t",
                          "SDIFF s t",
                          "SDIFF t s",
                          "SINTERCARD 2 s t",
                          "SORT s",
                          "SORT s ALPHA LIMIT 1 3",
                          "SORT_RO s DESC",
                          "ZUNION 2 s t WITHSCORES",
                          "ZINTER 2 s t"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        snprintf(want, sizeof(want), "%s", kvt_read_at(&b, 2000 + i, cmds[i]));
        KT_EQ_STR(kvt_read_at(&a, 2000 + i, cmds[i]), want);
    }
    kvt_free(&a);
    kvt_free(&b);
}

/*
 * Writes on inline sets, against the same writes on a replica restored from a snapshot taken
 * half-way: the same replies, the same snapshot bytes, the same memory count, every step.
 */
static void writes_on_inline_sets_agree_with_a_restored_replica(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char line[256], want[1 << 16];
    keel_rand_t r;
    keel_rand_seed(&r, 19);
    const char *ops[] = {"SADD %s %d %d",        "SREM %s %d %d",       "SPOP %s",
                         "SPOP %s %d",           "SMOVE %s s1 %d",      "SINTERSTORE %s s0 s1",
                         "SUNIONSTORE %s s0 s2", "SDIFFSTORE %s s1 s2", "COPY s0 %s REPLACE",
                         "RENAME s2 %s",         "SADD %s %d 70000",    "SADD %s %d 9000000000",
                         "SADD %s x%d",          "SREM %s x%d",         "PEXPIRE %s 500",
                         "SORT s0 STORE %s"};
    const size_t nops = sizeof(ops) / sizeof(ops[0]);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    for (int i = 0; i < 3000; i++) {
        char key[8];
        snprintf(key, sizeof(key), "s%d", (int)keel_rand_below(&r, 3));
        int x = (int)keel_rand_below(&r, 24) - 4, y = (int)keel_rand_below(&r, 24);
        const char *op = ops[keel_rand_below(&r, nops)];
        if (strstr(op, "%d %d"))
            snprintf(line, sizeof(line), op, key, x, y);
        else if (strstr(op, "%d"))
            snprintf(line, sizeof(line), op, key, x < 1 ? 1 : x);
        else
            snprintf(line, sizeof(line), op, key);
        uint64_t now = 1000 + (uint64_t)i * 7;
        if (i == 1500) { /* b restarts from a's snapshot */
            keel_buf_reset(&snap);
            KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
            kvt_free(&b);
            kvt_init(&b, NULL);
            KT_EQ_INT(
                keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL),
                0);
            b.index = a.index;
            KT_EQ_U64(b.kv.bytes, a.kv.bytes);
        }
        snprintf(want, sizeof(want), "%s", kvt_at(&a, now, line));
        KT_EQ_STR(kvt_at(&b, now, line), want);
        KT_EQ_U64(b.kv.bytes, a.kv.bytes);
        if (i % 100 == 99) {
            keel_buf_t sa, sb;
            keel_buf_init(&sa, 0);
            keel_buf_init(&sb, 0);
            KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &sa), 0);
            KT_EQ_INT(keel_kv_snapshot_write(&b.kv, sink, &sb), 0);
            KT_EQ_U64(keel_buf_unread(&sa), keel_buf_unread(&sb));
            KT_CHECK(memcmp(keel_buf_rptr(&sa), keel_buf_rptr(&sb), keel_buf_unread(&sa)) == 0);
            keel_buf_free(&sa);
            keel_buf_free(&sb);
        }
    }
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

/* keel__kc_packed_of builds, byte for byte, the table the same members' puts make. */
static void an_unpacked_set_is_the_table_its_puts_make(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 7);
    for (int trial = 0; trial < 2000; trial++) {
        uint64_t seed = keel_rand_u64(&r);
        size_t n = 1 + keel_rand_below(&r, KEEL__KC_PACKED_ITEMS_MAX);
        char text[KEEL__KC_PACKED_ITEMS_MAX][24];
        const uint8_t *m[KEEL__KC_PACKED_ITEMS_MAX];
        size_t l[KEEL__KC_PACKED_ITEMS_MAX];
        keel__kc_t *t = keel__kc_new(seed);
        KT_CHECK(t != NULL);
        for (size_t i = 0; i < n; i++) {
            /* distinct (the index leads, its width fixed), of varied lengths */
            l[i] = (size_t)snprintf(text[i], sizeof(text[i]), "%02zu%.*s", i,
                                    (int)keel_rand_below(&r, 20), "12345678901234567890");
            m[i] = (const uint8_t *)text[i];
            keel__kc_item_t *it = keel__kc_item_new(t, m[i], l[i], NULL, 0);
            KT_CHECK(it != NULL && keel__kc_reserve(&t, &it, 1) == 0);
            keel__kc_put(t, it);
        }
        keel__kc_t *p = keel__kc_packed_of(seed, m, l, n);
        KT_CHECK(p != NULL);
        KT_EQ_U64(keel__kc_count(p), keel__kc_count(t));
        KT_EQ_U64(p->used, t->used);
        KT_CHECK(memcmp(p->items, t->items, t->used) == 0);
        keel__kc_free(p);
        keel__kc_free(t);
    }
}

int main(void)
{
    KT_RUN(small_sets_of_integers_take_their_members_width_in_the_entry);
    KT_RUN(a_set_goes_to_a_table_and_back_in_the_same_order);
    KT_RUN(an_inline_set_and_a_table_answer_alike);
    KT_RUN(writes_on_inline_sets_agree_with_a_restored_replica);
    KT_RUN(an_unpacked_set_is_the_table_its_puts_make);
    return kt_done();
}
