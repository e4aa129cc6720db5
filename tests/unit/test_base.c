/* test_base.c - errors, PRNG, byte buffers, CRC32C. */
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/rand.h"
#include "base/vec.h"
#include "ktest.h"

#include <stdlib.h>

static void error_codes_are_negative_and_named(void)
{
    KT_CHECK(KEEL_ENOMEM < 0);
    KT_CHECK(KEEL_ECONFLICT < 0);
    KT_CHECK(KEEL_ENOMEM != KEEL_EINVAL);
    KT_EQ_STR(keel_strerror(KEEL_ENOMEM), "out of memory");
    KT_EQ_STR(keel_err_name(KEEL_ECORRUPT), "KEEL_ECORRUPT");
    KT_EQ_STR(keel_strerror(0), "success");
    KT_EQ_STR(keel_strerror(-99999), "unknown error");
    KT_EQ_STR(keel_strerror(12345), "unknown error");
    keel_errmsg_t m;
    KT_EQ_INT(keel_errf(&m, KEEL_EIO, "file %s offset %d", "wal-1", 42), KEEL_EIO);
    KT_EQ_STR(m.text, "file wal-1 offset 42");
}

static void rand_is_reproducible_from_its_seed(void)
{
    keel_rand_t a, b;
    keel_rand_seed(&a, 42);
    keel_rand_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        KT_EQ_U64(keel_rand_u64(&a), keel_rand_u64(&b));
    keel_rand_seed(&b, 43);
    int same = 0;
    for (int i = 0; i < 100; i++)
        same += keel_rand_u64(&a) == keel_rand_u64(&b);
    KT_CHECK(same < 2);
}

static void rand_below_is_uniform_and_in_range(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 7);
    int counts[10] = {0};
    const int n = 1000000;
    for (int i = 0; i < n; i++) {
        uint64_t v = keel_rand_below(&r, 10);
        KT_CHECK(v < 10);
        counts[v]++;
    }
    for (int i = 0; i < 10; i++)
        KT_NEAR(counts[i], n / 10, n / 10 * 0.02);
    for (int i = 0; i < 10000; i++) {
        int64_t v = keel_rand_range(&r, -5, 5);
        KT_CHECK(v >= -5 && v <= 5);
        double d = keel_rand_double(&r);
        KT_CHECK(d >= 0.0 && d < 1.0);
    }
    KT_CHECK(!keel_rand_chance(&r, 0.0));
    KT_CHECK(keel_rand_chance(&r, 1.0));
}

static void buf_grows_consumes_and_honours_its_limit(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 1024);
    KT_EQ_INT(keel_buf_append_str(&b, "hello "), 0);
    KT_EQ_INT(keel_buf_printf(&b, "%s %d", "world", 7), 0);
    KT_EQ_INT(keel_buf_unread(&b), 13);
    KT_EQ_MEM(keel_buf_rptr(&b), "hello world 7", 13);
    keel_buf_consume(&b, 6);
    KT_EQ_MEM(keel_buf_rptr(&b), "world 7", 7);
    keel_buf_consume(&b, 7);
    KT_EQ_INT(keel_buf_unread(&b), 0);
    KT_EQ_INT(b.len, 0);

    char big[1025];
    memset(big, 'x', sizeof(big));
    KT_EQ_INT(keel_buf_append(&b, big, 1025), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&b), 0);
    KT_EQ_INT(keel_buf_append(&b, big, 1024), 0);
    KT_EQ_INT(keel_buf_append(&b, "y", 1), KEEL_ETOOBIG);
    keel_buf_consume(&b, 1000);
    KT_EQ_INT(keel_buf_append(&b, big, 1000), 0); /* compaction makes room */
    KT_EQ_INT(keel_buf_unread(&b), 1024);
    keel_buf_reset(&b);
    KT_EQ_INT(keel_buf_append_i64_dec(&b, -1234567890123LL), 0);
    KT_EQ_INT(keel_buf_append_u64_dec(&b, 0), 0);
    KT_EQ_INT(keel_buf_append_u64_dec(&b, UINT64_MAX), 0);
    KT_EQ_MEM(keel_buf_rptr(&b), "-1234567890123018446744073709551615", 35);
    keel_buf_free(&b);
}

static void crc32c_matches_the_standard_check_value(void)
{
    const char *check = "123456789";
    KT_EQ_U64(keel_crc32c_sw(0, check, 9), 0xE3069283u);
    KT_EQ_U64(keel_crc32c(0, check, 9), 0xE3069283u);
    if (keel_crc32c_hw_available())
        KT_EQ_U64(keel_crc32c_hw(0, check, 9), 0xE3069283u);
    else
        fprintf(stderr, "     (no SSE4.2 on this CPU: hardware path not tested)\n");
    KT_EQ_U64(keel_crc32c(0, "", 0), 0);
    /* 32 bytes of zeros: RFC 3720 B.4 test vector. */
    uint8_t zeros[32] = {0};
    KT_EQ_U64(keel_crc32c_sw(0, zeros, 32), 0x8A9136AAu);
}

static void crc32c_paths_agree_and_compose_over_splits(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 1);
    uint8_t data[4099];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)keel_rand_u64(&r);
    for (size_t len = 0; len < 200; len++) {
        uint32_t sw = keel_crc32c_sw(0, data + 3, len);
        KT_EQ_U64(keel_crc32c_hw(0, data + 3, len), sw);
    }
    uint32_t whole = keel_crc32c(0, data, sizeof(data));
    for (size_t cut = 0; cut <= sizeof(data); cut += 97) {
        uint32_t c = keel_crc32c(0, data, cut);
        c = keel_crc32c(c, data + cut, sizeof(data) - cut);
        KT_EQ_U64(c, whole);
    }
    data[100] ^= 1;
    KT_CHECK(keel_crc32c(0, data, sizeof(data)) != whole);
}

static void vec_grows_by_doubling_and_fails_without_touching_the_array(void)
{
    int *v = NULL;
    size_t cap = 0;
    KT_EQ_INT(keel_vec_grow(&v, &cap, 1, sizeof(*v), 4), 0);
    KT_EQ_INT((int)cap, 4);
    for (int i = 0; i < 4; i++)
        v[i] = i;
    KT_EQ_INT(keel_vec_grow(&v, &cap, 4, sizeof(*v), 4), 0); /* fits: nothing to do */
    KT_EQ_INT((int)cap, 4);
    KT_EQ_INT(keel_vec_grow(&v, &cap, 5, sizeof(*v), 4), 0);
    KT_EQ_INT((int)cap, 8);
    KT_EQ_INT(keel_vec_grow(&v, &cap, 33, sizeof(*v), 4), 0); /* doubles until it fits */
    KT_EQ_INT((int)cap, 64);
    for (int i = 0; i < 4; i++)
        KT_EQ_INT(v[i], i); /* kept across the reallocs */
    int *before = v;
    KT_EQ_INT(keel_vec_grow(&v, &cap, SIZE_MAX / 2, sizeof(*v), 4), KEEL_ENOMEM);
    KT_CHECK(v == before);
    KT_EQ_INT((int)cap, 64);
    free(v);
}

int main(void)
{
    KT_RUN(error_codes_are_negative_and_named);
    KT_RUN(rand_is_reproducible_from_its_seed);
    KT_RUN(rand_below_is_uniform_and_in_range);
    KT_RUN(buf_grows_consumes_and_honours_its_limit);
    KT_RUN(crc32c_matches_the_standard_check_value);
    KT_RUN(crc32c_paths_agree_and_compose_over_splits);
    KT_RUN(vec_grows_by_doubling_and_fails_without_touching_the_array);
    return kt_done();
}
