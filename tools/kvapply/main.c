/* main.c - keel-kvapply: CPU per applied SET on a large KV table, with and without prefetch. */
#include "base/buf.h"
#include "core/kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/*
 * Applies SETs of random keys from a KEY_SPACE key space (16-byte keys, 100-byte
 * values, the shape of bench/kv.sh) in batches of BATCH entries, as keel server applies
 * a committed batch: once without hints, once with keel_kv_prefetch run SLOT_AHEAD and
 * ENTRY_AHEAD entries ahead (node.c's distances). Each mode gets its own table, filled
 * by a first pass of `ops` SETs; the second pass is timed (user and system CPU from
 * getrusage, encoding included). Results feed bench/RESULTS.md; run it on an idle core.
 */
#define KEY_SPACE 1000000u
#define BATCH 400u
#define SLOT_AHEAD 4u
#define ENTRY_AHEAD 2u
#define VALUE_BYTES 100u

static double cpu_s(int user)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    const struct timeval *t = user ? &r.ru_utime : &r.ru_stime;
    return (double)t->tv_sec + (double)t->tv_usec * 1e-6;
}

static void encode_batch(keel_buf_t *ents, uint64_t *seed)
{
    static const uint8_t val[VALUE_BYTES] = {0};
    for (size_t i = 0; i < BATCH; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        char key[32];
        int kl = snprintf(key, sizeof(key), "key:%012llu",
                          (unsigned long long)((*seed >> 33) % KEY_SPACE));
        const uint8_t *argv[3] = {(const uint8_t *)"SET", (const uint8_t *)key, val};
        size_t lens[3] = {3, (size_t)kl, VALUE_BYTES};
        keel_buf_reset(&ents[i]);
        if (keel_kv_entry_encode(&ents[i], 1, 3, argv, lens) != 0)
            abort();
    }
}

static void apply_batch(keel_kv_t *kv, keel_buf_t *ents, uint64_t *index, int hints,
                        keel_buf_t *reply)
{
    for (size_t i = 0; i < BATCH; i++) {
        if (hints && i + SLOT_AHEAD < BATCH)
            keel_kv_prefetch(kv, keel_buf_rptr(&ents[i + SLOT_AHEAD]),
                             keel_buf_unread(&ents[i + SLOT_AHEAD]), 0);
        if (hints && i + ENTRY_AHEAD < BATCH)
            keel_kv_prefetch(kv, keel_buf_rptr(&ents[i + ENTRY_AHEAD]),
                             keel_buf_unread(&ents[i + ENTRY_AHEAD]), 1);
        keel_buf_reset(reply);
        if (keel_kv_apply(kv, ++*index, keel_buf_rptr(&ents[i]), keel_buf_unread(&ents[i]),
                          reply) != 0)
            abort();
    }
}

static void run(int hints, size_t ops)
{
    keel_kv_t kv;
    keel_buf_t ents[BATCH], reply;
    if (keel_kv_init(&kv, NULL) != 0)
        abort();
    keel_buf_init(&reply, 0);
    for (size_t i = 0; i < BATCH; i++)
        keel_buf_init(&ents[i], 0);
    uint64_t seed = 42, index = 0;
    double u0 = 0, s0 = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            u0 = cpu_s(1);
            s0 = cpu_s(0);
        }
        for (size_t done = 0; done < ops; done += BATCH) {
            encode_batch(ents, &seed);
            apply_batch(&kv, ents, &index, hints, &reply);
        }
    }
    double u = cpu_s(1) - u0, s = cpu_s(0) - s0;
    printf("%-12s keys %7zu  user %6.1f ns/SET  system %6.1f ns/SET\n",
           hints ? "prefetch" : "no-prefetch", keel_kv_count(&kv), u * 1e9 / (double)ops,
           s * 1e9 / (double)ops);
    fflush(stdout);
    for (size_t i = 0; i < BATCH; i++)
        keel_buf_free(&ents[i]);
    keel_buf_free(&reply);
    keel_kv_free(&kv);
}

int main(int argc, char **argv)
{
    size_t ops = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    if (ops < BATCH) {
        fprintf(stderr, "usage: keel-kvapply [SETS_PER_PASS >= %u]\n", BATCH);
        return 2;
    }
    ops -= ops % BATCH;
    run(0, ops);
    run(1, ops);
    return 0;
}
