/* resp3.c - a RESP2 reply rendered as RESP3 (resp3.h says by what rules). */
#include "proto/resp3.h"

#include "base/err.h"

#include <stdbool.h>
#include <string.h>

/* One value's header: its type byte, its count or length (for $ and *), where its line ends
 * (after \r\n) and, for $, where its payload starts and ends. */
typedef struct head {
    uint8_t type;
    long long n;
    size_t line_end;
} head_t;

/* Parses the header at pos: 0 or KEEL_EPROTO. */
static int head_at(const uint8_t *in, size_t len, size_t pos, head_t *h)
{
    if (pos >= len)
        return KEEL_EPROTO;
    const uint8_t *cr = memchr(in + pos, '\r', len - pos);
    if (cr == NULL || (size_t)(cr - in) + 1 >= len || cr[1] != '\n')
        return KEEL_EPROTO;
    h->type = in[pos];
    h->line_end = (size_t)(cr - in) + 2;
    h->n = 0;
    if (h->type == '+' || h->type == '-' || h->type == ':')
        return 0;
    if (h->type != '$' && h->type != '*')
        return KEEL_EPROTO;
    const uint8_t *p = in + pos + 1;
    bool neg = p < cr && *p == '-';
    if (neg)
        p++;
    if (p == cr || cr - p > 18)
        return KEEL_EPROTO;
    for (; p < cr; p++) {
        if (*p < '0' || *p > '9')
            return KEEL_EPROTO;
        h->n = h->n * 10 + (*p - '0');
    }
    if (neg) {
        if (h->n != 1)
            return KEEL_EPROTO; /* only -1, the null */
        h->n = -1;
    }
    return 0;
}

/* Checks one whole value at *pos and moves past it: 0 or KEEL_EPROTO. */
static int skip(const uint8_t *in, size_t len, size_t *pos, int depth)
{
    head_t h;
    if (depth > KEEL_RESP3_DEPTH_MAX || head_at(in, len, *pos, &h) != 0)
        return KEEL_EPROTO;
    *pos = h.line_end;
    if (h.type == '$' && h.n >= 0) {
        if ((unsigned long long)h.n > len - *pos || len - *pos - (size_t)h.n < 2 ||
            in[*pos + (size_t)h.n] != '\r' || in[*pos + (size_t)h.n + 1] != '\n')
            return KEEL_EPROTO;
        *pos += (size_t)h.n + 2;
    } else if (h.type == '*') {
        for (long long i = 0; i < h.n; i++)
            if (skip(in, len, pos, depth + 1) != 0)
                return KEEL_EPROTO;
    }
    return 0;
}

/* ---- rendering (the input is known to be well formed) --------------------------------- */

typedef struct out {
    keel_buf_t *b;
    int rc;
} out_t;

static void put(out_t *o, const void *p, size_t n)
{
    if (o->rc == 0)
        o->rc = keel_buf_append(o->b, p, n);
}

static void put_head(out_t *o, char type, long long n)
{
    if (o->rc == 0)
        o->rc = keel_buf_printf(o->b, "%c%lld\r\n", type, n);
}

/* One value, with only its nulls changed. */
static void plain(const uint8_t *in, size_t len, size_t *pos, out_t *o)
{
    head_t h;
    (void)head_at(in, len, *pos, &h); /* checked by skip() */
    if ((h.type == '$' || h.type == '*') && h.n < 0) {
        put(o, "_\r\n", 3);
        *pos = h.line_end;
        return;
    }
    if (h.type == '*') {
        put(o, in + *pos, h.line_end - *pos);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++)
            plain(in, len, pos, o);
        return;
    }
    size_t end = h.line_end + (h.type == '$' ? (size_t)h.n + 2 : 0);
    put(o, in + *pos, end - *pos);
    *pos = end;
}

/* A bulk string holding a number as a double; anything else plainly. */
static void as_double(const uint8_t *in, size_t len, size_t *pos, out_t *o)
{
    head_t h;
    (void)head_at(in, len, *pos, &h);
    /* a double is one line: a payload with a line break in it (never a number) stays bulk */
    if (h.type != '$' || h.n <= 0 || memchr(in + h.line_end, '\r', (size_t)h.n) != NULL ||
        memchr(in + h.line_end, '\n', (size_t)h.n) != NULL) {
        plain(in, len, pos, o);
        return;
    }
    put(o, ",", 1);
    put(o, in + h.line_end, (size_t)h.n + 2);
    *pos = h.line_end + (size_t)h.n + 2;
}

static void render(const uint8_t *in, size_t len, size_t *pos, keel_resp3_shape_t shape, out_t *o);

/* True when every element of the array at pos is an array of exactly n elements. */
static bool all_arrays_of(const uint8_t *in, size_t len, size_t pos, long long count, long long n)
{
    head_t h;
    (void)head_at(in, len, pos, &h);
    pos = h.line_end;
    for (long long i = 0; i < count; i++) {
        head_t e;
        (void)head_at(in, len, pos, &e);
        if (e.type != '*' || e.n != n)
            return false;
        (void)skip(in, len, &pos, 0);
    }
    return true;
}

static void render(const uint8_t *in, size_t len, size_t *pos, keel_resp3_shape_t shape, out_t *o)
{
    head_t h;
    (void)head_at(in, len, *pos, &h);
    bool array = h.type == '*' && h.n >= 0, bulk = h.type == '$' && h.n >= 0;
    switch (shape) {
    case KEEL_RESP3_MAP:
    case KEEL_RESP3_MAP_OF_MAPS:
    case KEEL_RESP3_MAP_FIRST_SET:
        if (!array || h.n % 2 != 0)
            break;
        put_head(o, '%', h.n / 2);
        *pos = h.line_end;
        for (long long i = 0; i < h.n / 2; i++) {
            plain(in, len, pos, o);
            if (shape == KEEL_RESP3_MAP_OF_MAPS)
                render(in, len, pos, KEEL_RESP3_MAP, o);
            else if (shape == KEEL_RESP3_MAP_FIRST_SET && i == 0)
                render(in, len, pos, KEEL_RESP3_SET, o);
            else
                plain(in, len, pos, o);
        }
        return;
    case KEEL_RESP3_SET:
    case KEEL_RESP3_PUSH:
        if (!array)
            break;
        put_head(o, shape == KEEL_RESP3_SET ? '~' : '>', h.n);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++)
            plain(in, len, pos, o);
        return;
    case KEEL_RESP3_DOUBLE:
        as_double(in, len, pos, o);
        return;
    case KEEL_RESP3_DOUBLES:
        if (!array)
            break;
        put(o, in + *pos, h.line_end - *pos);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++)
            as_double(in, len, pos, o);
        return;
    case KEEL_RESP3_PAIRS:
    case KEEL_RESP3_PAIRS_DOUBLE:
        if (!array || h.n % 2 != 0)
            break;
        put_head(o, '*', h.n / 2);
        *pos = h.line_end;
        for (long long i = 0; i < h.n / 2; i++) {
            put(o, "*2\r\n", 4);
            plain(in, len, pos, o);
            if (shape == KEEL_RESP3_PAIRS_DOUBLE)
                as_double(in, len, pos, o);
            else
                plain(in, len, pos, o);
        }
        return;
    case KEEL_RESP3_PAIR_DOUBLE:
        if (!array || h.n != 2)
            break;
        put(o, "*2\r\n", 4);
        *pos = h.line_end;
        plain(in, len, pos, o);
        as_double(in, len, pos, o);
        return;
    case KEEL_RESP3_LAST_DOUBLE:
        if (!array || h.n < 1)
            break;
        put(o, in + *pos, h.line_end - *pos);
        *pos = h.line_end;
        for (long long i = 0; i + 1 < h.n; i++)
            plain(in, len, pos, o);
        as_double(in, len, pos, o);
        return;
    case KEEL_RESP3_KEYED_PAIRS_DOUBLE:
        if (!array || h.n != 2)
            break;
        put(o, "*2\r\n", 4);
        *pos = h.line_end;
        plain(in, len, pos, o);
        render(in, len, pos, KEEL_RESP3_ARRAY_OF_PAIR_DOUBLE, o);
        return;
    case KEEL_RESP3_ARRAY_OF_PAIR_DOUBLE:
        if (!array)
            break;
        put(o, in + *pos, h.line_end - *pos);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++)
            render(in, len, pos, KEEL_RESP3_PAIR_DOUBLE, o);
        return;
    case KEEL_RESP3_ARRAY_OF_MAPS:
        if (!array)
            break;
        put(o, in + *pos, h.line_end - *pos);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++)
            render(in, len, pos, KEEL_RESP3_MAP, o);
        return;
    case KEEL_RESP3_KEYED:
        if (!array || !all_arrays_of(in, len, *pos, h.n, 2))
            break;
        put_head(o, '%', h.n);
        *pos = h.line_end;
        for (long long i = 0; i < h.n; i++) {
            head_t e;
            (void)head_at(in, len, *pos, &e);
            *pos = e.line_end; /* the pair's *2: its two values become a key and a value */
            plain(in, len, pos, o);
            plain(in, len, pos, o);
        }
        return;
    case KEEL_RESP3_VERBATIM:
        if (!bulk)
            break;
        put_head(o, '=', h.n + 4);
        put(o, "txt:", 4);
        put(o, in + h.line_end, (size_t)h.n + 2);
        *pos = h.line_end + (size_t)h.n + 2;
        return;
    case KEEL_RESP3_PLAIN:
    case KEEL_RESP3_SHAPES:
        break;
    }
    plain(in, len, pos, o);
}

int keel_resp3_convert(const uint8_t *in, size_t len, keel_resp3_shape_t shape, keel_buf_t *out)
{
    if ((unsigned)shape >= KEEL_RESP3_SHAPES)
        return KEEL_EINVAL;
    for (size_t pos = 0; pos < len;)
        if (skip(in, len, &pos, 0) != 0)
            return KEEL_EPROTO;
    out_t o = {out, 0};
    for (size_t pos = 0; pos < len && o.rc == 0;)
        render(in, len, &pos, shape, &o);
    return o.rc;
}
