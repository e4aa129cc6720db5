/* fuzz_jwt.c - libFuzzer target: JWKS documents and JWT tokens through proto/jwt. */
#include "proto/jwt.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An HS256 key ("k" is 32 bytes), used when the input's own JWKS part does not parse, so
 * that every input also reaches the token parser with a key to try. */
static const char FALLBACK[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":"
                               "\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\"}]}";

/*
 * Input: a JWKS document and a token, split at the first NUL byte (no NUL: all token).
 * Every claim rule is on (issuer, audience, exp required) so the claim checks run too.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t jwks_len = nul ? (size_t)(nul - data) : 0;
    const char *tok = (const char *)data + (nul ? jwks_len + 1 : 0);
    size_t tok_len = size - (nul ? jwks_len + 1 : 0);
    keel_jwks_t ks;
    keel_errmsg_t m;
    if (keel_jwks_parse(&ks, (const char *)data, jwks_len, &m) != 0 &&
        keel_jwks_parse(&ks, FALLBACK, sizeof(FALLBACK) - 1, &m) != 0)
        __builtin_trap(); /* the fallback is valid */
    keel_jwt_rules_t rules = {.issuer = "iss", .audience = "aud", .leeway_s = 5, .require_exp = 1};
    keel_jwt_t t;
    if (keel_jwt_verify(&ks, tok, tok_len, &rules, 1700000000, &t, &m) == 0) {
        char buf[64];
        (void)keel_jwt_claim_text(&t, "sub", buf, sizeof(buf));
        keel_jwt_free(&t);
    }
    keel_jwks_free(&ks);
    return 0;
}
