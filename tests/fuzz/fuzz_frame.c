/* fuzz_frame.c - libFuzzer target: peer frame decoder (whole vs chunked, decode -> encode). */
#include "base/buf.h"
#include "proto/frame.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: byte 0 picks the chunk size and byte 1 the frame_bytes_max; the rest
 * is the stream. Properties: the decoder never reads beyond its input; every
 * frame it accepts re-encodes to exactly the bytes it consumed; chunked and
 * whole feeding give the same frames and the same final code; after an error
 * the decoder keeps failing.
 */
static int run(const uint8_t *d, size_t n, size_t chunk, size_t max, keel_buf_t *out)
{
    keel_frame_decoder_t dec;
    int rc = keel_frame_decoder_init(&dec, max, NULL);
    assert(rc == 0);
    keel_buf_t in;
    keel_buf_init(&in, 0);
    rc = KEEL_EAGAIN;
    for (size_t off = 0; off < n && rc == KEEL_EAGAIN;) {
        size_t k = n - off < chunk ? n - off : chunk;
        keel_buf_append(&in, d + off, k);
        off += k;
        for (;;) {
            size_t have = keel_buf_unread(&in), used;
            uint8_t *copy = malloc(have ? have : 1);
            memcpy(copy, keel_buf_rptr(&in), have);
            keel_frame_t f;
            rc = keel_frame_decode(&dec, copy, have, &f, &used, NULL);
            if (rc == 0) {
                assert(used == f.payload_len + KEEL_FRAME_OVERHEAD_BYTES && used <= have);
                assert(used <= max);
                keel_buf_t re;
                keel_buf_init(&re, 0);
                if (keel_frame_encode(&re, f.type, f.payload, f.payload_len) != 0 ||
                    keel_buf_unread(&re) != used || memcmp(keel_buf_rptr(&re), copy, used) != 0)
                    abort(); /* decode -> encode is not the identity */
                keel_buf_free(&re);
                keel_buf_append_u64_dec(out, f.type);
                keel_buf_append(out, ":", 1);
                keel_buf_append(out, f.payload, f.payload_len);
            } else if (rc == KEEL_EAGAIN) {
                assert(used == 0 && dec.want_bytes > have && dec.want_bytes <= max);
            } else {
                size_t again;
                if (keel_frame_decode(&dec, copy, have, &f, &again, NULL) != rc)
                    abort(); /* errors must be sticky */
            }
            free(copy);
            if (rc != 0)
                break;
            keel_buf_consume(&in, used);
        }
    }
    keel_buf_append_i64_dec(out, rc);
    keel_buf_free(&in);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t chunk = 1 + data[0] % 23;
    size_t max = data[1] < 128 ? KEEL_FRAME_OVERHEAD_BYTES + data[1] : 0;
    keel_buf_t whole, split;
    keel_buf_init(&whole, 0);
    keel_buf_init(&split, 0);
    run(data + 2, size - 2, size, max ? max : KEEL_FRAME_BYTES_MAX_DEFAULT, &whole);
    run(data + 2, size - 2, chunk, max ? max : KEEL_FRAME_BYTES_MAX_DEFAULT, &split);
    if (keel_buf_unread(&whole) != keel_buf_unread(&split) ||
        memcmp(keel_buf_rptr(&whole), keel_buf_rptr(&split), keel_buf_unread(&whole)) != 0)
        abort(); /* chunking changed the result */
    keel_buf_free(&whole);
    keel_buf_free(&split);
    return 0;
}
