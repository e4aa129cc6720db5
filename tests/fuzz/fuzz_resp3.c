/* fuzz_resp3.c - libFuzzer target: RESP2 replies rendered as RESP3 (proto/resp3). */
#include "base/buf.h"
#include "base/err.h"
#include "proto/resp3.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Skips one RESP3 value at *pos: 1, or 0 when out is not well formed RESP3. */
static int skip3(const uint8_t *p, size_t n, size_t *pos, int depth)
{
    if (depth > KEEL_RESP3_DEPTH_MAX + 2 || *pos >= n)
        return 0;
    const uint8_t *cr = memchr(p + *pos, '\r', n - *pos);
    if (cr == NULL || (size_t)(cr - p) + 1 >= n || cr[1] != '\n')
        return 0;
    uint8_t t = p[*pos];
    char num[24] = "";
    size_t nl = (size_t)(cr - p) - *pos - 1;
    if (nl < sizeof(num))
        memcpy(num, p + *pos + 1, nl);
    long long v = strtoll(num, NULL, 10);
    *pos = (size_t)(cr - p) + 2;
    switch (t) {
    case '+':
    case '-':
    case ':':
    case '_':
    case ',':
        return 1;
    case '$':
    case '=':
        if (v < 0)
            return t == '$';
        if ((unsigned long long)v + 2 > n - *pos)
            return 0;
        *pos += (size_t)v + 2;
        return p[*pos - 2] == '\r' && p[*pos - 1] == '\n';
    case '*':
    case '~':
    case '>':
    case '%':
        if (v < 0)
            return t == '*';
        for (long long i = 0; i < v * (t == '%' ? 2 : 1); i++)
            if (!skip3(p, n, pos, depth + 1))
                return 0;
        return 1;
    default:
        return 0;
    }
}

/* Input: a shape byte, then bytes given as a RESP2 reply. A reply the renderer accepts must
 * come out as well formed RESP3; one it refuses must leave the output untouched. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    keel_resp3_shape_t shape = (keel_resp3_shape_t)(data[0] % KEEL_RESP3_SHAPES);
    keel_buf_t out;
    keel_buf_init(&out, 0);
    int rc = keel_resp3_convert(data + 1, size - 1, shape, &out);
    size_t n = keel_buf_unread(&out);
    if (rc == KEEL_EPROTO && n != 0)
        abort();
    if (rc == 0) {
        const uint8_t *p = n ? keel_buf_rptr(&out) : (const uint8_t *)"";
        for (size_t pos = 0; pos < n;)
            if (!skip3(p, n, &pos, 0))
                abort();
        if (size - 1 > 0 && n == 0)
            abort(); /* something in, nothing out */
    } else if (rc != KEEL_EPROTO && rc != KEEL_ENOMEM) {
        abort();
    }
    keel_buf_free(&out);
    return 0;
}
