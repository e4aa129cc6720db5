/* test_lat.c - the latency histogram against exact percentiles of random data. */
#include "base/lat.h"
#include "base/rand.h"
#include "ktest.h"

#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void percentiles_are_within_one_bucket_of_the_truth(void)
{
    static keel_lat_t h, half1, half2;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof(*v));
    keel_rand_t r;
    keel_rand_seed(&r, 42);
    keel_lat_reset(&h);
    keel_lat_reset(&half1);
    keel_lat_reset(&half2);
    for (size_t i = 0; i < N; i++) {
        /* a long tail: mostly 100..2000 us, some up to seconds */
        uint64_t x = keel_rand_below(&r, 100) < 98 ? 100 + keel_rand_below(&r, 1900)
                                                   : keel_rand_below(&r, 5000000);
        v[i] = x;
        keel_lat_record(&h, x);
        keel_lat_record(i % 2 ? &half1 : &half2, x);
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    const double ps[] = {0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0};
    keel_lat_merge(&half1, &half2);
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        size_t rank = ps[k] == 0 ? 0 : (size_t)(ps[k] * N + 0.999999999) - 1;
        uint64_t truth = v[rank], got = keel_lat_percentile(&h, ps[k]);
        /* never below the truth, and at most one bucket (1/64) above it */
        KT_CHECK(got >= truth);
        KT_CHECK((double)got <= (double)truth * (1.0 + 1.0 / 64) + 1);
        KT_EQ_U64(keel_lat_percentile(&half1, ps[k]), got); /* merge = recording all */
    }
    KT_EQ_U64(h.n, N);
    KT_EQ_U64(h.max, v[N - 1]);
    KT_EQ_U64(h.min, v[0]);
    free(v);
}

static void small_values_are_exact_and_huge_ones_are_capped(void)
{
    static keel_lat_t h;
    keel_lat_reset(&h);
    KT_EQ_U64(keel_lat_percentile(&h, 0.5), 0);
    for (uint64_t x = 0; x < 64; x++)
        keel_lat_record(&h, x);
    KT_EQ_U64(keel_lat_percentile(&h, 0.5), 31);
    KT_EQ_U64(keel_lat_percentile(&h, 1.0), 63);
    keel_lat_record(&h, UINT64_MAX);
    KT_EQ_U64(h.max, (UINT64_C(1) << 41) - 1);
    KT_EQ_U64(keel_lat_percentile(&h, 1.0), (UINT64_C(1) << 41) - 1);
}

int main(void)
{
    KT_RUN(percentiles_are_within_one_bucket_of_the_truth);
    KT_RUN(small_values_are_exact_and_huge_ones_are_capped);
    return kt_done();
}
