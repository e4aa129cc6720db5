/* buf.c - growable byte buffer. */
#include "base/buf.h"

#include "base/num.h"

#include "base/err.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_buf_init(keel_buf_t *b, size_t bytes_max)
{
    memset(b, 0, sizeof(*b));
    b->bytes_max = bytes_max ? bytes_max : KEEL_BUF_BYTES_MAX_DEFAULT;
}

void keel_buf_free(keel_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->rpos = b->cap = 0;
}

static void compact(keel_buf_t *b)
{
    if (b->rpos == 0)
        return;
    size_t unread = b->len - b->rpos;
    memmove(b->data, b->data + b->rpos, unread);
    b->len = unread;
    b->rpos = 0;
}

int keel_buf_reserve(keel_buf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    if (b->rpos > 0 && b->rpos >= b->cap / 2) {
        compact(b);
        if (b->cap - b->len >= n)
            return 0;
    }
    size_t unread = b->len - b->rpos;
    if (n > b->bytes_max || unread > b->bytes_max - n)
        return KEEL_ETOOBIG;
    compact(b);
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->bytes_max)
        cap = b->bytes_max;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
        return KEEL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int keel__buf_append_slow(keel_buf_t *b, const void *p, size_t n)
{
    int rc = keel_buf_reserve(b, n);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int keel_buf_printf(keel_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KEEL_EINVAL;
    int rc = keel_buf_reserve(b, (size_t)n + 1);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int keel_buf_append_u64_dec(keel_buf_t *b, uint64_t v)
{
    char tmp[KEEL_DEC_BYTES_MAX];
    return keel_buf_append(b, tmp, keel_fmt_u64(tmp, v));
}

int keel_buf_append_i64_dec(keel_buf_t *b, int64_t v)
{
    char tmp[KEEL_DEC_BYTES_MAX];
    return keel_buf_append(b, tmp, keel_fmt_i64(tmp, v));
}

void keel_buf_consume(keel_buf_t *b, size_t n)
{
    assert(n <= b->len - b->rpos);
    b->rpos += n;
    if (b->rpos == b->len)
        b->rpos = b->len = 0;
}

void keel_buf_reset(keel_buf_t *b)
{
    b->rpos = b->len = 0;
}

void keel_buf_commit(keel_buf_t *b, size_t n)
{
    assert(n <= b->cap - b->len);
    b->len += n;
}
