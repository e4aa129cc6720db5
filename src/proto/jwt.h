/* jwt.h - JSON Web Tokens (RFC 7519) signed with HS256, RS256 or ES256, and JWKS key sets. */
#ifndef KEEL_PROTO_JWT_H
#define KEEL_PROTO_JWT_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What keel proxy's edge authentication checks (docs/proxy.md): a compact JWS
 * (header.payload.signature, base64url without padding) whose signature verifies with a
 * key of a JWKS set, whose algorithm is one of HS256, RS256 and ES256 and matches that
 * key's type, and whose claims pass the rules (exp, nbf, iss, aud, with a leeway).
 *
 * Refused, each with a reason fit for a WWW-Authenticate header: "alg": "none" and any
 * other algorithm; an algorithm that does not match the key (an RS256 public key used as
 * an HS256 secret is the classic confusion); a bad signature; a malformed token; an
 * expired or not-yet-valid token; a wrong issuer or audience. No clock is read here: the
 * caller passes the time (src/proto is sans-I/O).
 *
 * Crypto is OpenSSL 3's (EVP); nothing else is taken from outside.
 */

#define KEEL_JWT_TOKEN_BYTES_MAX 8192u     /* a longer Authorization value is refused */
#define KEEL_JWKS_BYTES_MAX (256u * 1024u) /* a JWKS file */
#define KEEL_JWKS_KEYS_MAX 64u
#define KEEL_JWT_KID_BYTES_MAX 128u
#define KEEL_JWT_SECRET_BYTES_MAX 512u /* an "oct" key's bytes */

typedef enum keel_jwt_alg {
    KEEL_JWT_HS256 = 1,
    KEEL_JWT_RS256 = 2,
    KEEL_JWT_ES256 = 3,
} keel_jwt_alg_t;

typedef struct keel_jwk {
    keel_jwt_alg_t alg; /* the only algorithm this key verifies (from its kty) */
    char kid[KEEL_JWT_KID_BYTES_MAX];
    struct evp_pkey_st *pkey; /* RS256, ES256 */
    uint8_t *secret;          /* HS256 */
    size_t secret_len;
    /* HS256: SHA-256 with the key's inner and outer pads already absorbed (RFC 2104), copied
     * per verification instead of setting up an HMAC from the key each time */
    struct evp_md_ctx_st *hs_inner, *hs_outer;
} keel_jwk_t;

typedef struct keel_jwks {
    keel_jwk_t *keys;
    size_t n;
} keel_jwks_t;

/*
 * Parses a JWKS document ({"keys": [...]}) or a single JWK: kty "RSA" (n, e), "EC" (crv
 * "P-256", x, y) and "oct" (k). A key marked "use" other than "sig", or with an "alg"
 * that contradicts its kty, is refused. 0, or KEEL_EINVAL naming the key and the field.
 */
int keel_jwks_parse(keel_jwks_t *out, const char *json, size_t len, keel_errmsg_t *msg);
void keel_jwks_free(keel_jwks_t *ks);

typedef struct keel_jwt_rules {
    const char *issuer;   /* NULL: any; else "iss" must equal it */
    const char *audience; /* NULL: any; else "aud" (a string or an array) must hold it */
    int64_t leeway_s;     /* clock skew allowed on exp and nbf */
    int require_exp;      /* a token without "exp" is refused */
} keel_jwt_rules_t;

typedef struct keel_jwt {
    keel_jwt_alg_t alg;
    json_t *claims; /* the payload object (owned) */
} keel_jwt_t;

/*
 * Verifies token (len bytes) at now_s (Unix seconds): 0 and out->claims, or KEEL_EPROTO
 * (malformed), KEEL_EREJECTED (a signature or claim refused), KEEL_ETOOBIG; why->text says
 * what, in words fit for `WWW-Authenticate: Bearer error="invalid_token",
 * error_description="..."`.
 */
int keel_jwt_verify(const keel_jwks_t *ks, const char *token, size_t len,
                    const keel_jwt_rules_t *rules, int64_t now_s, keel_jwt_t *out,
                    keel_errmsg_t *why);
void keel_jwt_free(keel_jwt_t *t);

/* A claim name's parts ("a.b.c") at most, and the bytes of one part. */
#define KEEL_JWT_CLAIM_DEPTH_MAX 8u
#define KEEL_JWT_CLAIM_NAME_BYTES_MAX 256u

/* A claim as text (a string, an integer or a boolean) into buf: 0, KEEL_ENOTFOUND, or
 * KEEL_ETOOBIG when it does not fit cap (with its NUL). `name` is a top-level claim; when there
 * is none of that name and it has dots, a path into nested objects ("realm.tier": the claim
 * realm's member tier, as Envoy's claim_to_headers), at most KEEL_JWT_CLAIM_DEPTH_MAX parts. A
 * top-level claim whose name has dots (`https://example.com/roles`) is found as it is. */
int keel_jwt_claim_text(const keel_jwt_t *t, const char *name, char *buf, size_t cap);

/* base64url without padding (RFC 4648 section 5): decoded bytes into out (room for
 * len * 3 / 4 bytes), or -1 for a character outside the alphabet or a bad length. */
long keel_b64url_decode(const char *in, size_t len, uint8_t *out);

#endif
