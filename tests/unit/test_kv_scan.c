/* test_kv_scan.c - SCAN replies and its guarantee under concurrent change; Redis glob matching. */
#include "base/glob.h"
#include "base/rand.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <time.h>

static kvt_t t;

#define EXPECT(line, want) KT_EQ_STR(kvt(&t, line), want)

static void fresh(void)
{
    kvt_free(&t);
    kvt_init(&t, NULL);
}

static void scan_replies_and_errors_match_redis(void)
{
    fresh();
    EXPECT("SCAN 0", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SET k v", "+OK\r\n");
    EXPECT("SCAN 0", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("scan 0 count 1000 match k", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN 0 MATCH x*", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SCAN 0 TYPE string", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN 0 TYPE hash", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SCAN 0 COUNT 0", "-ERR syntax error\r\n");
    EXPECT("SCAN 0 COUNT x", "-ERR value is not an integer or out of range\r\n");
    EXPECT("SCAN x", "-ERR invalid cursor\r\n");
    EXPECT("SCAN 18446744073709551616", "-ERR invalid cursor\r\n");
    EXPECT("SCAN 18446744073709551615", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SCAN +0", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN -0", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN +", "-ERR invalid cursor\r\n");
    EXPECT("SCAN -", "-ERR invalid cursor\r\n");
    EXPECT("SCAN -18446744073709551616", "-ERR invalid cursor\r\n");
    const uint8_t *empty[] = {(const uint8_t *)"SCAN", (const uint8_t *)""};
    size_t empty_lens[] = {4, 0};
    KT_EQ_STR(kvt_argv(&t, 2, empty, empty_lens), "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN 0 MATCH", "-ERR syntax error\r\n");
    EXPECT("SCAN 0 COUNT -1", "-ERR syntax error\r\n");
    EXPECT("SCAN 0 COUNT 9223372036854775807", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n");
    EXPECT("SCAN 0 MATCH * MATCH b*", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SCAN 0 TYPE foo", "*2\r\n$1\r\n0\r\n*0\r\n");
    EXPECT("SCAN 0 foo bar", "-ERR syntax error\r\n");
    EXPECT("SCAN", "-ERR wrong number of arguments for 'scan' command\r\n");
}

/* Collects one SCAN reply's cursor and keys. */
static uint64_t scan_call(uint64_t cursor, int count, const char *match, char keys[][16],
                          int *nkeys)
{
    char line[128];
    if (match)
        snprintf(line, sizeof(line), "SCAN %llu COUNT %d MATCH %s", (unsigned long long)cursor,
                 count, match);
    else
        snprintf(line, sizeof(line), "SCAN %llu COUNT %d", (unsigned long long)cursor, count);
    const char *r = kvt(&t, line);
    unsigned long long next;
    int n, used;
    if (sscanf(r, "*2\r\n$%*d\r\n%llu\r\n*%d\r\n%n", &next, &n, &used) != 2)
        KT_FAIL("bad scan reply %s", r);
    r += used;
    for (int i = 0; i < n; i++) {
        int len;
        if (sscanf(r, "$%d\r\n%n", &len, &used) != 1 || len >= 16)
            KT_FAIL("bad key in %s", r);
        memcpy(keys[*nkeys + i], r + used, (size_t)len);
        keys[*nkeys + i][len] = '\0';
        r += used + len + 2;
    }
    *nkeys += n;
    KT_EQ_INT(*r, '\0');
    return next;
}

static void full_scan_of_a_still_table_returns_each_key_once(void)
{
    fresh();
    enum { N = 5000 };
    char line[64];
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof(line), "SET key:%d x", i);
        EXPECT(line, "+OK\r\n");
    }
    /* let any resize finish so the table holds still */
    while (t.kv.rehash_pos >= 0)
        EXPECT("DEL nothing", ":0\r\n");
    static char keys[2 * N][16];
    static int seen[N];
    memset(seen, 0, sizeof(seen));
    int nkeys = 0, calls = 0;
    uint64_t c = 0;
    do {
        c = scan_call(c, 7, NULL, keys, &nkeys);
        calls++;
    } while (c != 0);
    KT_EQ_INT(nkeys, N);
    for (int i = 0; i < nkeys; i++) {
        int k = atoi(keys[i] + 4);
        KT_CHECK(k >= 0 && k < N);
        seen[k]++;
    }
    for (int i = 0; i < N; i++)
        KT_EQ_INT(seen[i], 1);
    KT_CHECK(calls > N / 70); /* COUNT bounds each call's work */
    /* MATCH filters after the bucket walk */
    nkeys = 0;
    c = 0;
    do {
        c = scan_call(c, 100, "key:1?", keys, &nkeys);
    } while (c != 0);
    KT_EQ_INT(nkeys, 10);
}

/*
 * The SCAN guarantee (Redis dictScan): a key present for the whole iteration
 * is returned at least once, and the iteration terminates, while other keys
 * come and go between calls and the table grows and shrinks (rehashing
 * incrementally in between). The model knows every key's life.
 */
static void scan_returns_every_stable_key_while_the_table_grows_and_shrinks(void)
{
    enum { KEYS = 6000 };
    uint64_t seed = (uint64_t)time(NULL);
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    static int present[KEYS], stable[KEYS], returned[KEYS], ever[KEYS];
    static char keys[KEYS * 4][16];
    char line[64];
    int calls_while_rehashing = 0;
    for (int round = 0; round < 12; round++) {
        fresh();
        memset(present, 0, sizeof(present));
        memset(ever, 0, sizeof(ever));
        int start = (int)keel_rand_below(&r, KEYS);
        for (int i = 0; i < start; i++) {
            int k = (int)keel_rand_below(&r, KEYS);
            snprintf(line, sizeof(line), "SET %d x", k);
            kvt(&t, line);
            present[k] = ever[k] = 1;
        }
        memcpy(stable, present, sizeof(stable));
        memset(returned, 0, sizeof(returned));
        /* phases: grow hard, shrink hard, or churn */
        int mode = (int)keel_rand_below(&r, 3), calls = 0;
        uint64_t c = 0;
        do {
            int nkeys = 0;
            c = scan_call(c, 1 + (int)keel_rand_below(&r, 20), NULL, keys, &nkeys);
            calls++;
            calls_while_rehashing += t.kv.rehash_pos >= 0;
            for (int i = 0; i < nkeys; i++) {
                int k = atoi(keys[i]);
                KT_CHECK(k >= 0 && k < KEYS && ever[k]);
                returned[k]++;
            }
            int changes = (int)keel_rand_below(&r, 60);
            for (int i = 0; i < changes; i++) {
                int k = (int)keel_rand_below(&r, KEYS);
                int del = mode == 0   ? keel_rand_chance(&r, 0.1)
                          : mode == 1 ? keel_rand_chance(&r, 0.95)
                                      : keel_rand_chance(&r, 0.5);
                if (del && mode == 1) { /* delete an existing key to really shrink */
                    for (int j = 0; j < KEYS && !present[k]; j++)
                        k = (k + 1) % KEYS;
                }
                snprintf(line, sizeof(line), del ? "DEL %d" : "SET %d y", k);
                kvt(&t, line);
                if (del) {
                    present[k] = 0;
                    stable[k] = 0;
                } else {
                    present[k] = ever[k] = 1;
                }
            }
            KT_CHECK(calls < 100000);
        } while (c != 0);
        for (int k = 0; k < KEYS; k++)
            if (stable[k] && !returned[k])
                KT_FAIL("round %d mode %d: key %d present throughout but never returned", round,
                        mode, k);
    }
    KT_CHECK(calls_while_rehashing > 0); /* the test did cross resizes */
    fprintf(stderr, "     %d SCAN calls ran while the table was rehashing\n",
            calls_while_rehashing);
}

static void a_huge_count_is_cut_by_the_reply_size_limit(void)
{
    fresh();
    enum { N = 100, KEY = 60000 };
    static uint8_t key[KEY];
    memset(key, 'k', sizeof(key));
    for (int i = 0; i < N; i++) {
        snprintf((char *)key, 8, "%07d", i);
        key[7] = 'k';
        const uint8_t *argv[] = {(const uint8_t *)"SET", key, (const uint8_t *)"v"};
        size_t lens[] = {3, KEY, 1};
        KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "+OK\r\n");
    }
    while (t.kv.rehash_pos >= 0)
        EXPECT("DEL nothing", ":0\r\n");
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    uint64_t cursor = 0;
    int calls = 0, seen = 0;
    do {
        char cur[24];
        int n = snprintf(cur, sizeof(cur), "%llu", (unsigned long long)cursor);
        const uint8_t *argv[] = {(const uint8_t *)"SCAN", (const uint8_t *)cur,
                                 (const uint8_t *)"COUNT", (const uint8_t *)"100000"};
        size_t lens[] = {4, (size_t)n, 5, 6};
        keel_buf_reset(&reply);
        KT_EQ_INT(keel_kv_read(&t.kv, 4, argv, lens, &reply), 0);
        KT_CHECK(keel_buf_unread(&reply) < KEEL_KV_SCAN_REPLY_BYTES_MAX + 2 * (KEY + 32));
        char head[128];
        size_t hn =
            keel_buf_unread(&reply) < sizeof(head) - 1 ? keel_buf_unread(&reply) : sizeof(head) - 1;
        memcpy(head, keel_buf_rptr(&reply), hn);
        head[hn] = '\0';
        unsigned long long next;
        int keys;
        KT_EQ_INT(sscanf(head, "*2\r\n$%*d\r\n%llu\r\n*%d\r\n", &next, &keys), 2);
        cursor = next;
        seen += keys;
        calls++;
    } while (cursor != 0);
    KT_CHECK(calls >= 2); /* 6 MB of keys do not fit one reply */
    KT_EQ_INT(seen, N);   /* nothing lost across the cut (the table held still) */
    keel_buf_free(&reply);
}

/* Pattern, string, Redis's answer (each row checked against redis-server 7.0.15). */
static void glob_matches_like_redis_stringmatchlen(void)
{
    static const struct {
        const char *pat, *s;
        int want;
    } cases[] = {
        {"*", "abc", 1},
        {"*", "", 0}, /* Redis: empty string only matches "" */
        {"", "", 1},
        {"**", "a", 1},
        {"a*", "a", 1},
        {"a*c", "abbbc", 1},
        {"a*c", "abbb", 0},
        {"?", "a", 1},
        {"?", "ab", 0},
        {"a?c", "abc", 1},
        {"*a*b*", "xxaxxbxx", 1},
        {"*a*b*", "xxbxxaxx", 0},
        {"[abc]", "b", 1},
        {"[abc]", "d", 0},
        {"[^abc]", "d", 1},
        {"[^abc]", "a", 0},
        {"[a-c]x", "bx", 1},
        {"[c-a]x", "bx", 1},
        {"[a-c]", "d", 0},
        {"[a-]", "]", 1},
        {"[a-]", "-", 0},
        {"[]a]", "a", 0},
        {"[]a]", "]a]", 0},
        {"[", "a", 0},
        {"[a", "a", 1},
        {"[^]", "a", 1},
        {"\\", "\\", 1},
        {"a\\", "a\\", 1},
        {"\\*", "*", 1},
        {"\\*", "a", 0},
        {"[\\]]", "]", 1},
        {"[\\]]", "\\", 0},
        {"h?llo", "hello", 1},
        {"h*llo", "hllo", 1},
        {"h[ae]llo", "hillo", 0},
        {"*?", "a", 1},
        {"?*", "", 0},
        {"a**b", "ab", 1},
        {"user:*:name", "user:42:name", 1},
        {"user:*:name", "user:42:nam", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = keel_glob_match((const uint8_t *)cases[i].pat, strlen(cases[i].pat),
                                  (const uint8_t *)cases[i].s, strlen(cases[i].s));
        if (got != cases[i].want)
            KT_FAIL("'%s' vs '%s': %d, Redis says %d", cases[i].pat, cases[i].s, got,
                    cases[i].want);
    }
    /* no exponential blow-up on pathological patterns */
    char s[4001], p[200];
    memset(s, 'a', 4000);
    s[4000] = '\0';
    for (int i = 0; i < 99; i++)
        p[2 * i] = '*', p[2 * i + 1] = 'a';
    p[198] = 'b';
    p[199] = '\0';
    KT_EQ_INT(keel_glob_match((const uint8_t *)p, 199, (const uint8_t *)s, 4000), 0);
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(scan_replies_and_errors_match_redis);
    KT_RUN(full_scan_of_a_still_table_returns_each_key_once);
    KT_RUN(scan_returns_every_stable_key_while_the_table_grows_and_shrinks);
    KT_RUN(a_huge_count_is_cut_by_the_reply_size_limit);
    KT_RUN(glob_matches_like_redis_stringmatchlen);
    kvt_free(&t);
    return kt_done();
}
