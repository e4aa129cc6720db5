/* buf.h - growable byte buffer with a hard size limit and a read cursor. */
#ifndef KEEL_BASE_BUF_H
#define KEEL_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A keel_buf owns `data[0..cap)`. Bytes `[rpos, len)` are unread; writers
 * append at `len`, readers consume from `rpos`. `bytes_max` bounds growth: an
 * append that would pass it fails with KEEL_ETOOBIG and changes nothing, so a
 * peer cannot make us allocate without bound. Compaction (moving unread bytes
 * to the front) happens on append when at least half the buffer is consumed,
 * keeping it amortized O(1) per byte.
 */
typedef struct keel_buf {
    uint8_t *data;
    size_t len;  /* bytes written */
    size_t rpos; /* bytes consumed, <= len */
    size_t cap;
    size_t bytes_max; /* 0 means KEEL_BUF_BYTES_MAX_DEFAULT */
} keel_buf_t;

#define KEEL_BUF_BYTES_MAX_DEFAULT (64u * 1024u * 1024u)

void keel_buf_init(keel_buf_t *b, size_t bytes_max);
void keel_buf_free(keel_buf_t *b);
/* Makes room for n more bytes after len. 0 or KEEL_ENOMEM / KEEL_ETOOBIG. */
int keel_buf_reserve(keel_buf_t *b, size_t n);
int keel__buf_append_slow(keel_buf_t *b, const void *p, size_t n);
/* Appends n bytes: 0, or KEEL_ETOOBIG / KEEL_ENOMEM with nothing appended. Inline: the room
   check is the common case of every reply and header written. */
static inline int keel_buf_append(keel_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->cap - b->len < n)
        return keel__buf_append_slow(b, p, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}
static inline int keel_buf_append_str(keel_buf_t *b, const char *s)
{
    return keel_buf_append(b, s, strlen(s));
}
int keel_buf_printf(keel_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int keel_buf_append_u64_dec(keel_buf_t *b, uint64_t v);
int keel_buf_append_i64_dec(keel_buf_t *b, int64_t v);
/* Unread bytes. */
static inline const uint8_t *keel_buf_rptr(const keel_buf_t *b)
{
    return b->data ? b->data + b->rpos : b->data; /* no NULL + 0: UBSan flags it */
}
static inline size_t keel_buf_unread(const keel_buf_t *b)
{
    return b->len - b->rpos;
}
/* Marks n unread bytes consumed; resets to empty when all are. */
void keel_buf_consume(keel_buf_t *b, size_t n);
/* Forgets all contents, keeps memory. */
void keel_buf_reset(keel_buf_t *b);
/* Writable tail after reserve(): data + len, and commit n written bytes. */
static inline uint8_t *keel_buf_wptr(keel_buf_t *b)
{
    return b->data ? b->data + b->len : b->data;
}
void keel_buf_commit(keel_buf_t *b, size_t n);

#endif
