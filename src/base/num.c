/* num.c - strict decimal integer parsing. */
#include "base/num.h"

int keel_parse_i64(const uint8_t *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return -1;
    int neg = s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n || s[i] < '0' || s[i] > '9')
        return -1;
    if (s[i] == '0')
        return (n == i + 1 && !neg) ? (*out = 0, 0) : -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
    }
    return 0;
}

size_t keel_fmt_u64(char *out, uint64_t v)
{
    char rev[KEEL_DEC_BYTES_MAX];
    size_t n = 0;
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = rev[n - 1 - i];
    return n;
}

size_t keel_fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return keel_fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + keel_fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}
