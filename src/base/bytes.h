/* bytes.h - little-endian integer encoding and a bounds-checked reader for binary formats. */
#ifndef KEEL_BASE_BYTES_H
#define KEEL_BASE_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * keel's on-disk and on-wire formats are little-endian (the only hosts we
 * target). The reader never reads past its end: a short read sets `bad` and
 * yields zeros, so a decoder checks `bad` once at the end instead of after
 * every field, and a truncated input can never become an out-of-bounds read.
 */
/* memcpy loads and stores compile to single moves; byte-swapped on a big-endian host. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define KEEL_LE32(v) __builtin_bswap32(v)
#define KEEL_LE64(v) __builtin_bswap64(v)
#else
#define KEEL_LE32(v) (v)
#define KEEL_LE64(v) (v)
#endif

static inline void keel_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t keel_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline void keel_put_u32(uint8_t *p, uint32_t v)
{
    v = KEEL_LE32(v);
    memcpy(p, &v, 4);
}

static inline void keel_put_u64(uint8_t *p, uint64_t v)
{
    v = KEEL_LE64(v);
    memcpy(p, &v, 8);
}

static inline uint32_t keel_get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return KEEL_LE32(v);
}

static inline uint64_t keel_get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    v = KEEL_LE64(v);
    return v;
}

typedef struct keel_rd {
    const uint8_t *p;
    size_t left;
    int bad; /* set by any read past the end */
} keel_rd_t;

static inline void keel_rd_init(keel_rd_t *r, const void *data, size_t len)
{
    r->p = data;
    r->left = len;
    r->bad = 0;
}

static inline const uint8_t *keel_rd_bytes(keel_rd_t *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline uint8_t keel_rd_u8(keel_rd_t *r)
{
    const uint8_t *p = keel_rd_bytes(r, 1);
    return p ? p[0] : 0;
}

static inline uint16_t keel_rd_u16(keel_rd_t *r)
{
    const uint8_t *p = keel_rd_bytes(r, 2);
    return p ? keel_get_u16(p) : 0;
}

static inline uint32_t keel_rd_u32(keel_rd_t *r)
{
    const uint8_t *p = keel_rd_bytes(r, 4);
    return p ? keel_get_u32(p) : 0;
}

static inline uint64_t keel_rd_u64(keel_rd_t *r)
{
    const uint8_t *p = keel_rd_bytes(r, 8);
    return p ? keel_get_u64(p) : 0;
}

#endif
