/* test_b64url.h - base64url without padding (RFC 4648 section 5), for the tests that mint
   JWTs and JWKS documents (test_jwt, test_proxy_auth, test_proxy_jwks). */
#ifndef KEEL_TESTS_TEST_B64URL_H
#define KEEL_TESTS_TEST_B64URL_H

#include <stddef.h>
#include <stdint.h>

/* n bytes of in into out (room for 4 * ceil(n / 3) + 1), NUL-terminated. */
static inline void b64url(const uint8_t *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = A[(v >> 18) & 63];
        out[o++] = A[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = A[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = A[v & 63];
    }
    out[o] = '\0';
}

#endif
