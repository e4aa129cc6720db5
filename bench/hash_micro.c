/* hash_micro.c - nanoseconds per hash and set command applied to the keyspace itself (no
   network, no Raft), for A/B runs of two builds of libkeel.a (issue 19: the resting form of
   a small hash must not make its commands slower).

   Build against each library and alternate the runs (the machine may be shared):
     cc -O2 -Isrc bench/hash_micro.c BUILD/libkeel.a -lm -lpthread -o /tmp/hash_micro
     /tmp/hash_micro [KEYS] [OPS] [ROUNDS]
   KEYS (default 100,000) hashes h:<n> of 5 fields f1..f5 (8-byte values, as
   bench/memory.sh) and as many sets s:<n> of 5 integers; hashes of 15 and 16 fields (w15,
   w16: a packed table holds at most 16) and one of 500 (w500, chained). Each test runs OPS
   (default 1,000,000) commands on keys drawn from a seeded PRNG, ROUNDS times (default 5);
   printed: the best round's CPU ns per command (CLOCK_PROCESS_CPUTIME_ID: the time other
   processes run is left out, not the caches they share). Writes go through
   keel_kv_entry_encode + keel_kv_apply as a node applies them, reads through keel_kv_read.
   KEYS 1,000 keeps the tables in cache (the commands' own cost); 100,000 adds the misses. */
#include "base/buf.h"
#include "core/kv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARGS_MAX 1024

typedef struct bench {
    keel_kv_t kv;
    uint64_t index;
    keel_buf_t entry, reply;
} bench_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* not the time others ran */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Runs one command (argv of NUL-terminated strings); aborts on an error reply. */
static void run(bench_t *b, int argc, const char *const *args)
{
    const uint8_t *argv[ARGS_MAX];
    size_t lens[ARGS_MAX];
    for (int i = 0; i < argc; i++) {
        argv[i] = (const uint8_t *)args[i];
        lens[i] = strlen(args[i]);
    }
    keel_buf_reset(&b->reply);
    int rc;
    if (keel_kv_command_flags(argv[0], lens[0]) == KEEL_KV_READ) {
        rc = keel_kv_read(&b->kv, argc, argv, lens, &b->reply);
    } else {
        keel_buf_reset(&b->entry);
        rc = keel_kv_entry_encode(&b->entry, 1000 + b->index, argc, argv, lens);
        if (rc == 0)
            rc = keel_kv_apply(&b->kv, ++b->index, keel_buf_rptr(&b->entry),
                               keel_buf_unread(&b->entry), &b->reply);
    }
    if (rc != 0 || keel_buf_unread(&b->reply) == 0 || *keel_buf_rptr(&b->reply) == '-') {
        fprintf(stderr, "%s failed (rc %d)\n", args[0], rc);
        exit(1);
    }
}

typedef struct test {
    const char *name;
    const char *fmt[4]; /* the command; "%k" in an argument: the drawn key number */
    int argc;
    int fixed; /* the key is the fixed name in fmt[1] */
} test_t;

int main(int argc, char **argv)
{
    long keys = argc > 1 ? atol(argv[1]) : 100000;
    long ops = argc > 2 ? atol(argv[2]) : 1000000;
    int rounds = argc > 3 ? atoi(argv[3]) : 5;
    bench_t b = {.index = 0};
    keel_kv_config_t cfg = keel_kv_config_default();
    if (keel_kv_init(&b.kv, &cfg) != 0)
        return 1;
    keel_buf_init(&b.entry, 0);
    keel_buf_init(&b.reply, 0);
    char key[32], vals[5][16], ints[5][24];
    uint64_t t0 = now_ns();
    for (long i = 0; i < keys; i++) {
        snprintf(key, sizeof(key), "h:%ld", i);
        for (int k = 0; k < 5; k++)
            snprintf(vals[k], sizeof(vals[k]), "v%07ld", (i + k + 1) % 10000000);
        const char *h[] = {"HSET", key,     "f1", vals[0], "f2", vals[1],
                           "f3",   vals[2], "f4", vals[3], "f5", vals[4]};
        run(&b, 12, h);
        snprintf(key, sizeof(key), "s:%ld", i);
        for (int k = 0; k < 5; k++)
            snprintf(ints[k], sizeof(ints[k]), "%ld", i * 8 + k);
        const char *s[] = {"SADD", key, ints[0], ints[1], ints[2], ints[3], ints[4]};
        run(&b, 7, s);
    }
    printf("load: %.0f ns per key (HSET of 5 fields and SADD of 5 integers)\n",
           (double)(now_ns() - t0) / (double)keys);
    static char fields[500][8], wvals[500][12];
    const char *w[2 + 2 * 500];
    w[0] = "HSET";
    for (int k = 0; k < 500; k++) {
        snprintf(fields[k], sizeof(fields[k]), "f%d", k);
        snprintf(wvals[k], sizeof(wvals[k]), "v%07d", k);
        w[2 + 2 * k] = fields[k];
        w[3 + 2 * k] = wvals[k];
    }
    w[1] = "w15";
    run(&b, 2 + 2 * 15, w);
    w[1] = "w16";
    run(&b, 2 + 2 * 16, w);
    w[1] = "w500";
    run(&b, 2 + 2 * 500, w);

    /* reads first, on the tables as the load left them; then the writes */
    static const test_t tests[] = {
        {"HGET h f3 (5 fields)", {"HGET", "h:%k", "f3"}, 3, 0},
        {"HGETALL h", {"HGETALL", "h:%k"}, 2, 0},
        {"HLEN h", {"HLEN", "h:%k"}, 2, 0},
        {"SISMEMBER s 3 (5 ints)", {"SISMEMBER", "s:%k", "3"}, 3, 0},
        {"SMEMBERS s (5 ints)", {"SMEMBERS", "s:%k"}, 2, 0},
        {"SRANDMEMBER s", {"SRANDMEMBER", "s:%k"}, 2, 0},
        {"SCARD s", {"SCARD", "s:%k"}, 2, 0},
        {"HGET w16 f9", {"HGET", "w16", "f9"}, 3, 1},
        {"HGET w500 f250", {"HGET", "w500", "f250"}, 3, 1},
        {"HSET h f3 (same size)", {"HSET", "h:%k", "f3", "v7654321"}, 4, 0},
        {"HINCRBY h n 1", {"HINCRBY", "h:%k", "n", "1"}, 4, 0},
        {"HGET h f3 (after)", {"HGET", "h:%k", "f3"}, 3, 0},
        {"SADD s 1 (present)", {"SADD", "s:%k", "1"}, 3, 0},
        {"SREM s x (absent)", {"SREM", "s:%k", "x"}, 3, 0},
        {"HSET w15 f9", {"HSET", "w15", "f9", "v7654321"}, 4, 1},
        {"HSET w16 f9", {"HSET", "w16", "f9", "v7654321"}, 4, 1},
        {"HSET w500 f250", {"HSET", "w500", "f250", "v7654321"}, 4, 1},
    };
    for (size_t t = 0; t < sizeof(tests) / sizeof(tests[0]); t++) {
        double best = 0;
        uint64_t seed = 0x9e3779b97f4a7c15u + t;
        for (int r = 0; r < rounds; r++) {
            uint64_t start = now_ns();
            for (long i = 0; i < ops; i++) {
                const char *a[4];
                char k1[32];
                for (int j = 0; j < tests[t].argc; j++)
                    a[j] = tests[t].fmt[j];
                if (!tests[t].fixed) {
                    long n = (long)(rnd(&seed) % (uint64_t)keys);
                    snprintf(k1, sizeof(k1), "%c:%ld", tests[t].fmt[1][0], n);
                    a[1] = k1;
                }
                run(&b, tests[t].argc, a);
            }
            double ns = (double)(now_ns() - start) / (double)ops;
            if (r == 0 || ns < best)
                best = ns;
        }
        printf("%-24s %8.1f ns\n", tests[t].name, best);
    }
    keel_kv_free(&b.kv);
    keel_buf_free(&b.entry);
    keel_buf_free(&b.reply);
    return 0;
}
