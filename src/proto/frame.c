/* frame.c - peer frame codec: length-prefixed, versioned, CRC32C-checked binary frames. */
#include "proto/frame.h"

#include "base/bytes.h"

#include "base/crc32c.h"

#include <assert.h>
#include <string.h>

int keel_frame_encode(keel_buf_t *b, uint8_t type, const void *payload, size_t payload_len)
{
    if (payload_len > KEEL_FRAME_BYTES_MAX - KEEL_FRAME_OVERHEAD_BYTES)
        return KEEL_ETOOBIG;
    size_t total = payload_len + KEEL_FRAME_OVERHEAD_BYTES;
    int rc = keel_buf_reserve(b, total);
    if (rc != 0)
        return rc;
    uint8_t *w = keel_buf_wptr(b);
    keel_put_u32(w, (uint32_t)(total - 4));
    w[4] = KEEL_FRAME_VERSION;
    w[5] = type;
    if (payload_len > 0)
        memcpy(w + KEEL_FRAME_HEADER_BYTES, payload, payload_len);
    size_t body = KEEL_FRAME_HEADER_BYTES + payload_len;
    keel_put_u32(w + body, keel_crc32c(0, w, body));
    keel_buf_commit(b, total);
    return 0;
}

/* The mark is an offset from the buffer's read cursor, so it survives compaction. */
int keel_frame_begin(keel_buf_t *b, uint8_t type, size_t *mark)
{
    int rc = keel_buf_reserve(b, KEEL_FRAME_HEADER_BYTES);
    if (rc != 0)
        return rc;
    *mark = keel_buf_unread(b);
    uint8_t *w = keel_buf_wptr(b);
    keel_put_u32(w, 0);
    w[4] = KEEL_FRAME_VERSION;
    w[5] = type;
    keel_buf_commit(b, KEEL_FRAME_HEADER_BYTES);
    return 0;
}

int keel_frame_end(keel_buf_t *b, size_t mark)
{
    assert(mark + KEEL_FRAME_HEADER_BYTES <= keel_buf_unread(b));
    size_t body = keel_buf_unread(b) - mark;
    if (body + KEEL_FRAME_TRAILER_BYTES > KEEL_FRAME_BYTES_MAX)
        return KEEL_ETOOBIG;
    int rc = keel_buf_reserve(b, KEEL_FRAME_TRAILER_BYTES);
    if (rc != 0)
        return rc;
    uint8_t *f = b->data + b->rpos + mark; /* after reserve: it may have moved */
    assert(f[4] == KEEL_FRAME_VERSION);
    keel_put_u32(f, (uint32_t)(body + KEEL_FRAME_TRAILER_BYTES - 4));
    keel_put_u32(f + body, keel_crc32c(0, f, body));
    keel_buf_commit(b, KEEL_FRAME_TRAILER_BYTES);
    return 0;
}

void keel_frame_abort(keel_buf_t *b, size_t mark)
{
    assert(mark <= keel_buf_unread(b));
    b->len = b->rpos + mark;
}

int keel_frame_decoder_init(keel_frame_decoder_t *d, size_t frame_bytes_max, keel_errmsg_t *msg)
{
    memset(d, 0, sizeof(*d));
    if (frame_bytes_max == 0)
        frame_bytes_max = KEEL_FRAME_BYTES_MAX_DEFAULT;
    if (frame_bytes_max < KEEL_FRAME_OVERHEAD_BYTES || frame_bytes_max > KEEL_FRAME_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "frame: frame_bytes_max %zu not in %u..%u",
                         frame_bytes_max, KEEL_FRAME_OVERHEAD_BYTES, KEEL_FRAME_BYTES_MAX);
    d->frame_bytes_max = frame_bytes_max;
    d->want_bytes = KEEL_FRAME_OVERHEAD_BYTES;
    return 0;
}

static int fail(keel_frame_decoder_t *d, keel_errmsg_t *msg, int err, const char *what,
                uint32_t got, uint32_t lim)
{
    d->error = err;
    return keel_errf(msg, err, "frame: %s (%u, limit %u)", what, got, lim);
}

int keel_frame_decode(keel_frame_decoder_t *d, const uint8_t *data, size_t len, keel_frame_t *f,
                      size_t *consumed, keel_errmsg_t *msg)
{
    assert(d->frame_bytes_max >= KEEL_FRAME_OVERHEAD_BYTES);
    *consumed = 0;
    if (d->error != 0)
        return keel_errf(msg, d->error, "frame: stream already failed: %s",
                         keel_strerror(d->error));
    if (len < 4) {
        d->want_bytes = KEEL_FRAME_OVERHEAD_BYTES;
        return KEEL_EAGAIN;
    }
    uint32_t length = keel_get_u32(data);
    if (length < KEEL_FRAME_LENGTH_MIN)
        return fail(d, msg, KEEL_EPROTO, "length below minimum", length, KEEL_FRAME_LENGTH_MIN);
    if ((uint64_t)length + 4 > d->frame_bytes_max)
        return fail(d, msg, KEEL_ETOOBIG, "length above frame_bytes_max - 4", length,
                    (uint32_t)(d->frame_bytes_max - 4));
    if (len >= 5 && data[4] != KEEL_FRAME_VERSION)
        return fail(d, msg, KEEL_EPROTO, "unknown version", data[4], KEEL_FRAME_VERSION);
    size_t total = (size_t)length + 4;
    d->want_bytes = total;
    if (len < total)
        return KEEL_EAGAIN;
    size_t body = total - KEEL_FRAME_TRAILER_BYTES;
    uint32_t want = keel_get_u32(data + body), got = keel_crc32c(0, data, body);
    if (want != got) {
        d->error = KEEL_ECORRUPT;
        return keel_errf(msg, KEEL_ECORRUPT,
                         "frame: crc32c mismatch (frame says %08x, bytes give %08x)", want, got);
    }
    f->version = data[4];
    f->type = data[5];
    f->payload = data + KEEL_FRAME_HEADER_BYTES;
    f->payload_len = body - KEEL_FRAME_HEADER_BYTES;
    *consumed = total;
    d->want_bytes = KEEL_FRAME_OVERHEAD_BYTES;
    return 0;
}
