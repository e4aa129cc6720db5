/* test_lru.c - the L1 cache: LRU order, the byte and count limits, TTLs, invalidation, and a
 * random run against a model that never sees a wrong or stale value. */
#include "base/err.h"
#include "base/rand.h"
#include "core/lru.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *get(keel_lru_t *c, const char *k, uint64_t now, char *buf)
{
    const uint8_t *v;
    size_t n;
    if (keel_lru_get(c, k, strlen(k), now, &v, &n) != 0)
        return "(miss)";
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
}

static void put(keel_lru_t *c, const char *k, const char *v, uint64_t now, uint64_t ttl)
{
    KT_EQ_INT(keel_lru_put(c, k, strlen(k), v, strlen(v), now, ttl), 0);
}

static void least_recently_used_go_first_and_ttls_expire(void)
{
    keel_lru_t c;
    /* room for three one-byte entries of one-byte keys */
    keel_lru_config_t cfg = {.bytes_max = 3 * (KEEL_LRU_ENTRY_OVERHEAD + 3), .entries_max = 100};
    KT_EQ_INT(keel_lru_init(&c, &cfg), 0);
    char b[64];
    put(&c, "a", "1", 0, 0);
    put(&c, "b", "2", 0, 0);
    put(&c, "c", "3", 0, 0);
    KT_EQ_STR(get(&c, "a", 0, b), "1"); /* a is now the most recent */
    put(&c, "d", "4", 0, 0);            /* b, the least recent, goes */
    KT_EQ_STR(get(&c, "b", 0, b), "(miss)");
    KT_EQ_STR(get(&c, "a", 0, b), "1");
    KT_EQ_U64(c.stats.evictions, 1);
    KT_EQ_U64(c.count, 3);
    KT_CHECK(c.bytes <= cfg.bytes_max);
    /* TTL: live until the deadline, gone at it */
    put(&c, "t", "x", 1000, 500);
    KT_EQ_STR(get(&c, "t", 1499, b), "x");
    KT_EQ_STR(get(&c, "t", 1500, b), "(miss)");
    KT_EQ_U64(c.stats.expirations, 1);
    /* replacing keeps one entry; invalidation drops it */
    put(&c, "a", "new", 0, 0);
    KT_EQ_STR(get(&c, "a", 0, b), "new");
    KT_EQ_INT(keel_lru_del(&c, "a", 1), 0);
    KT_EQ_INT(keel_lru_del(&c, "a", 1), KEEL_ENOTFOUND);
    KT_EQ_STR(get(&c, "a", 0, b), "(miss)");
    /* one entry larger than the whole cache is refused, and changes nothing */
    char big[4096];
    memset(big, 'x', sizeof(big));
    size_t before = c.count;
    KT_EQ_INT(keel_lru_put(&c, "big", 3, big, sizeof(big), 0, 0), KEEL_ETOOBIG);
    KT_EQ_U64(c.count, before);
    keel_lru_free(&c);
    /* the count limit */
    keel_lru_config_t two = {.bytes_max = 1 << 20, .entries_max = 2};
    KT_EQ_INT(keel_lru_init(&c, &two), 0);
    put(&c, "a", "1", 0, 0);
    put(&c, "b", "2", 0, 0);
    put(&c, "c", "3", 0, 0);
    KT_EQ_U64(c.count, 2);
    KT_EQ_STR(get(&c, "a", 0, b), "(miss)");
    keel_lru_free(&c);
}

/* Random puts, gets, deletes and time: a hit always returns the last value put for the
 * key, never one it replaced or one past its deadline; the limits always hold. */
static void random_ops_never_return_a_stale_value(void)
{
    keel_rand_t rnd;
    keel_rand_seed(&rnd, 42);
    keel_lru_t c;
    keel_lru_config_t cfg = {.bytes_max = 40 * (KEEL_LRU_ENTRY_OVERHEAD + 24), .entries_max = 30};
    KT_EQ_INT(keel_lru_init(&c, &cfg), 0);
    enum { KEYS = 64 };
    int64_t last[KEYS];  /* the last value put per key, -1 none or deleted */
    uint64_t dead[KEYS]; /* its deadline, 0 never */
    for (int i = 0; i < KEYS; i++)
        last[i] = -1, dead[i] = 0;
    uint64_t now = 1;
    for (int op = 0; op < 200000; op++) {
        int k = (int)keel_rand_below(&rnd, KEYS);
        char key[8], val[32];
        size_t kl = (size_t)snprintf(key, sizeof(key), "k%d", k);
        uint64_t pick = keel_rand_below(&rnd, 10);
        if (pick < 4) {
            size_t vl = (size_t)snprintf(val, sizeof(val), "%d", op);
            uint64_t ttl = keel_rand_chance(&rnd, 0.3) ? 1 + keel_rand_below(&rnd, 50) : 0;
            KT_EQ_INT(keel_lru_put(&c, key, kl, val, vl, now, ttl), 0);
            last[k] = op;
            dead[k] = ttl ? now + ttl : 0;
        } else if (pick < 5) {
            keel_lru_del(&c, key, kl);
            last[k] = -1;
        } else if (pick < 6) {
            now += keel_rand_below(&rnd, 20);
        } else {
            const uint8_t *v;
            size_t vl;
            if (keel_lru_get(&c, key, kl, now, &v, &vl) == 0) {
                memcpy(val, v, vl);
                val[vl] = '\0';
                if (last[k] < 0 || atoll(val) != last[k] || (dead[k] && now >= dead[k]))
                    KT_FAIL("op %d: key %d gave %s, last put %lld", op, k, val, (long long)last[k]);
            }
        }
        if (c.bytes > cfg.bytes_max || c.count > cfg.entries_max)
            KT_FAIL("limits broken at op %d", op);
    }
    KT_CHECK(c.stats.hits > 1000 && c.stats.evictions > 1000 && c.stats.expirations > 100);
    keel_lru_free(&c);
}

int main(void)
{
    KT_RUN(least_recently_used_go_first_and_ttls_expire);
    KT_RUN(random_ops_never_return_a_stale_value);
    return kt_done();
}
