/* test_frame.c - peer frame encoder and incremental decoder. */
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/rand.h"
#include "proto/frame.h"
#include "ktest.h"

#include <stdlib.h>

/* keel_buf_rptr() of a never-allocated buffer is NULL + 0, which clang's UBSan flags. */
#define RPTR(b) ((b)->data ? keel_buf_rptr(b) : (const uint8_t *)"")

static void encodes_the_documented_layout(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_frame_encode(&b, 7, "abc", 3), 0);
    const uint8_t *p = RPTR(&b);
    KT_EQ_INT(keel_buf_unread(&b), 13);
    const uint8_t head[] = {9, 0, 0, 0, 1, 7, 'a', 'b', 'c'};
    KT_EQ_MEM(p, head, sizeof(head));
    uint32_t crc = keel_crc32c(0, p, 9);
    const uint8_t tail[] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16),
                            (uint8_t)(crc >> 24)};
    KT_EQ_MEM(p + 9, tail, 4);
    keel_buf_free(&b);
}

static void decodes_what_it_encodes_including_empty_payloads(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_frame_encode(&b, 1, "hello", 5), 0);
    KT_EQ_INT(keel_frame_encode(&b, 2, NULL, 0), 0);
    keel_frame_decoder_t d;
    KT_EQ_INT(keel_frame_decoder_init(&d, 0, NULL), 0);
    keel_frame_t f;
    size_t used;
    KT_EQ_INT(keel_frame_decode(&d, RPTR(&b), keel_buf_unread(&b), &f, &used, NULL), 0);
    KT_EQ_INT(used, 15);
    KT_EQ_INT(f.type, 1);
    KT_EQ_INT(f.version, KEEL_FRAME_VERSION);
    KT_EQ_INT(f.payload_len, 5);
    KT_EQ_MEM(f.payload, "hello", 5);
    keel_buf_consume(&b, used);
    KT_EQ_INT(keel_frame_decode(&d, RPTR(&b), keel_buf_unread(&b), &f, &used, NULL), 0);
    KT_EQ_INT(used, KEEL_FRAME_OVERHEAD_BYTES);
    KT_EQ_INT(f.type, 2);
    KT_EQ_INT(f.payload_len, 0);
    keel_buf_free(&b);
}

static void every_split_point_decodes_the_same_frames(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    for (int i = 0; i < 4; i++) {
        char payload[40];
        memset(payload, 'a' + i, sizeof(payload));
        KT_EQ_INT(keel_frame_encode(&b, (uint8_t)i, payload, (size_t)i * 13), 0);
    }
    const uint8_t *all = RPTR(&b);
    size_t n = keel_buf_unread(&b);
    for (size_t k = 0; k <= n; k++) {
        keel_frame_decoder_t d;
        keel_frame_decoder_init(&d, 0, NULL);
        keel_buf_t in;
        keel_buf_init(&in, 0);
        int got = 0;
        size_t cuts[2] = {k, n};
        size_t from = 0;
        for (int c = 0; c < 2; c++) {
            keel_buf_append(&in, all + from, cuts[c] - from);
            from = cuts[c];
            for (;;) {
                keel_frame_t f;
                size_t used;
                int rc = keel_frame_decode(&d, RPTR(&in), keel_buf_unread(&in), &f, &used, NULL);
                if (rc == KEEL_EAGAIN) {
                    KT_CHECK(d.want_bytes > keel_buf_unread(&in));
                    break;
                }
                KT_EQ_INT(rc, 0);
                KT_EQ_INT(f.type, got);
                KT_EQ_INT(f.payload_len, (size_t)got * 13);
                for (size_t j = 0; j < f.payload_len; j++)
                    KT_EQ_INT(f.payload[j], 'a' + got);
                got++;
                keel_buf_consume(&in, used);
            }
        }
        KT_EQ_INT(got, 4);
        KT_EQ_INT(keel_buf_unread(&in), 0);
        keel_buf_free(&in);
    }
    keel_buf_free(&b);
}

static int decode_once(const uint8_t *p, size_t n, size_t max, keel_errmsg_t *msg)
{
    keel_frame_decoder_t d;
    keel_frame_decoder_init(&d, max, NULL);
    keel_frame_t f;
    size_t used;
    int rc = keel_frame_decode(&d, p, n, &f, &used, msg);
    if (rc < 0 && rc != KEEL_EAGAIN) {
        /* sticky: the stream stays failed */
        KT_EQ_INT(keel_frame_decode(&d, p, n, &f, &used, NULL), rc);
        KT_EQ_INT(used, 0);
    }
    return rc;
}

static void rejects_a_bad_crc_wherever_the_bit_flips(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_frame_encode(&b, 3, "payload", 7), 0);
    size_t n = keel_buf_unread(&b);
    uint8_t *p = b.data + b.rpos;
    /* every bit of type, payload and CRC; version and length have their own checks */
    for (size_t i = 5; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1u << bit);
            keel_errmsg_t msg;
            KT_EQ_INT(decode_once(p, n, 0, &msg), KEEL_ECORRUPT);
            KT_CHECK(strstr(msg.text, "crc32c mismatch") != NULL);
            p[i] ^= (uint8_t)(1u << bit);
        }
    }
    KT_EQ_INT(decode_once(p, n, 0, NULL), 0);
    keel_buf_free(&b);
}

static void rejects_unknown_versions_before_the_payload_arrives(void)
{
    const uint8_t f[] = {100, 0, 0, 0, 2};
    keel_errmsg_t msg;
    KT_EQ_INT(decode_once(f, sizeof(f), 0, &msg), KEEL_EPROTO);
    KT_EQ_STR(msg.text, "frame: unknown version (2, limit 1)");
}

static void rejects_impossible_lengths_from_the_first_four_bytes(void)
{
    keel_errmsg_t msg;
    const uint8_t short_len[] = {5, 0, 0, 0};
    KT_EQ_INT(decode_once(short_len, 4, 0, &msg), KEEL_EPROTO);
    KT_EQ_STR(msg.text, "frame: length below minimum (5, limit 6)");
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    KT_EQ_INT(decode_once(huge, 4, 0, &msg), KEEL_ETOOBIG);
    KT_CHECK(strstr(msg.text, "frame_bytes_max") != NULL);
    /* a frame of exactly frame_bytes_max is fine, one byte more is not */
    const uint8_t at_max[] = {96, 0, 0, 0, 1};
    KT_EQ_INT(decode_once(at_max, sizeof(at_max), 100, NULL), KEEL_EAGAIN);
    const uint8_t over[] = {97, 0, 0, 0, 1};
    KT_EQ_INT(decode_once(over, sizeof(over), 100, NULL), KEEL_ETOOBIG);
    KT_EQ_INT(decode_once(short_len, 3, 0, NULL), KEEL_EAGAIN);
}

static void truncated_frames_wait_and_report_the_bytes_they_need(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_frame_encode(&b, 9, "0123456789", 10), 0);
    size_t n = keel_buf_unread(&b);
    for (size_t k = 0; k < n; k++) {
        keel_frame_decoder_t d;
        keel_frame_decoder_init(&d, 0, NULL);
        keel_frame_t f;
        size_t used = 1;
        KT_EQ_INT(keel_frame_decode(&d, RPTR(&b), k, &f, &used, NULL), KEEL_EAGAIN);
        KT_EQ_INT(used, 0);
        KT_EQ_INT(d.want_bytes, k < 4 ? KEEL_FRAME_OVERHEAD_BYTES : n);
    }
    keel_buf_free(&b);
}

static void builds_a_frame_in_place_across_a_compaction(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    /* leave consumed bytes at the front so that a reserve compacts */
    char junk[200];
    memset(junk, 'j', sizeof(junk));
    keel_buf_append(&b, junk, sizeof(junk));
    keel_buf_consume(&b, 190);
    size_t mark;
    KT_EQ_INT(keel_frame_begin(&b, 4, &mark), 0);
    KT_EQ_INT(mark, 10);
    char big[1000];
    memset(big, 'p', sizeof(big));
    KT_EQ_INT(keel_buf_append(&b, big, sizeof(big)), 0);
    KT_EQ_INT(keel_frame_end(&b, mark), 0);
    keel_buf_consume(&b, 10);
    keel_buf_t ref;
    keel_buf_init(&ref, 0);
    keel_frame_encode(&ref, 4, big, sizeof(big));
    KT_EQ_INT(keel_buf_unread(&b), keel_buf_unread(&ref));
    KT_EQ_MEM(RPTR(&b), RPTR(&ref), keel_buf_unread(&ref));
    /* abort drops a half-built frame */
    size_t before = keel_buf_unread(&b);
    KT_EQ_INT(keel_frame_begin(&b, 5, &mark), 0);
    keel_buf_append(&b, "xyz", 3);
    keel_frame_abort(&b, mark);
    KT_EQ_INT(keel_buf_unread(&b), before);
    keel_buf_free(&b);
    keel_buf_free(&ref);
}

static void rejects_out_of_range_limits_and_oversized_payloads(void)
{
    keel_frame_decoder_t d;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_frame_decoder_init(&d, 5, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_frame_decoder_init(&d, (size_t)KEEL_FRAME_BYTES_MAX + 1, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_frame_decoder_init(&d, KEEL_FRAME_OVERHEAD_BYTES, &msg), 0);
    keel_buf_t b;
    keel_buf_init(&b, 64);
    char p[100] = {0};
    KT_EQ_INT(keel_frame_encode(&b, 1, p, 60), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&b), 0);
    KT_EQ_INT(keel_frame_encode(&b, 1, p, (size_t)KEEL_FRAME_BYTES_MAX), KEEL_ETOOBIG);
    keel_buf_free(&b);
}

static void random_frames_round_trip_in_random_chunks(void)
{
    uint64_t seed = 1122;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    keel_buf_t wire;
    keel_buf_init(&wire, 0);
    uint8_t payloads[64][300];
    size_t lens[64];
    for (int i = 0; i < 64; i++) {
        lens[i] = (size_t)keel_rand_below(&r, 300);
        for (size_t j = 0; j < lens[i]; j++)
            payloads[i][j] = (uint8_t)keel_rand_u64(&r);
        KT_EQ_INT(keel_frame_encode(&wire, (uint8_t)i, payloads[i], lens[i]), 0);
    }
    keel_frame_decoder_t d;
    keel_frame_decoder_init(&d, 0, NULL);
    keel_buf_t in;
    keel_buf_init(&in, 0);
    size_t off = 0, n = keel_buf_unread(&wire);
    int got = 0;
    while (off < n) {
        size_t k = (size_t)keel_rand_range(&r, 1, 97);
        k = k > n - off ? n - off : k;
        keel_buf_append(&in, RPTR(&wire) + off, k);
        off += k;
        keel_frame_t f;
        size_t used;
        while (keel_frame_decode(&d, RPTR(&in), keel_buf_unread(&in), &f, &used, NULL) == 0) {
            KT_EQ_INT(f.type, got);
            KT_EQ_INT(f.payload_len, lens[got]);
            KT_EQ_MEM(f.payload, payloads[got], lens[got]);
            keel_buf_consume(&in, used);
            got++;
        }
    }
    KT_EQ_INT(got, 64);
    keel_buf_free(&in);
    keel_buf_free(&wire);
}

int main(void)
{
    KT_RUN(encodes_the_documented_layout);
    KT_RUN(decodes_what_it_encodes_including_empty_payloads);
    KT_RUN(every_split_point_decodes_the_same_frames);
    KT_RUN(rejects_a_bad_crc_wherever_the_bit_flips);
    KT_RUN(rejects_unknown_versions_before_the_payload_arrives);
    KT_RUN(rejects_impossible_lengths_from_the_first_four_bytes);
    KT_RUN(truncated_frames_wait_and_report_the_bytes_they_need);
    KT_RUN(builds_a_frame_in_place_across_a_compaction);
    KT_RUN(rejects_out_of_range_limits_and_oversized_payloads);
    KT_RUN(random_frames_round_trip_in_random_chunks);
    return kt_done();
}
