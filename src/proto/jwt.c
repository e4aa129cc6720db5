/* jwt.c - JSON Web Tokens (HS256, RS256, ES256) and JWKS key sets, on OpenSSL 3's EVP. */
#include "proto/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64url ---------------------------------------------------------------------- */

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long keel_b64url_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 4 == 1)
        return -1; /* no whole byte in the last group */
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1; /* non-canonical: leftover bits must be zero */
    return (long)o;
}

/* A base64url member of a JSON object, decoded into a fresh buffer of at most max bytes. */
static uint8_t *b64_member(const json_t *o, const char *name, size_t max, size_t *len)
{
    const char *s = json_string_value(json_object_get(o, name));
    if (s == NULL)
        return NULL;
    size_t n = strlen(s);
    if (n > (max / 3 + 1) * 4) /* longer than max bytes can encode to */
        return NULL;
    uint8_t *b = malloc(n / 4 * 3 + 3);
    long d = b ? keel_b64url_decode(s, n, b) : -1;
    if (d <= 0 || (size_t)d > max) {
        free(b);
        return NULL;
    }
    *len = (size_t)d;
    return b;
}

/* ---- JWKS --------------------------------------------------------------------------- */

#define RSA_MODULUS_BYTES_MAX 1024u /* 8192-bit keys */

static struct evp_pkey_st *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static struct evp_pkey_st *rsa_key(const json_t *k)
{
    size_t nl = 0, el = 0;
    uint8_t *n = b64_member(k, "n", RSA_MODULUS_BYTES_MAX, &nl);
    uint8_t *e = b64_member(k, "e", 16, &el);
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL,
           *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn && be && bld && nl >= 256 && /* 2048 bits at least */
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pkey = fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static struct evp_pkey_st *ec_key(const json_t *k)
{
    const char *crv = json_string_value(json_object_get(k, "crv"));
    if (crv == NULL || strcmp(crv, "P-256") != 0)
        return NULL;
    size_t xl = 0, yl = 0;
    uint8_t *x = b64_member(k, "x", 32, &xl), *y = b64_member(k, "y", 32, &yl);
    uint8_t pub[65];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (x && y && xl == 32 && yl == 32 && bld) {
        pub[0] = 0x04; /* uncompressed point */
        memcpy(pub + 1, x, 32);
        memcpy(pub + 33, y, 32);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ==
                1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)) == 1)
            pkey = fromdata("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pkey;
}

static const char *alg_name(keel_jwt_alg_t a)
{
    return a == KEEL_JWT_HS256 ? "HS256" : a == KEEL_JWT_RS256 ? "RS256" : "ES256";
}

/* SHA-256 with the HMAC pad of the key absorbed (RFC 2104: a key longer than the block is
 * hashed first, a shorter one padded with zeros; inner pad 0x36, outer 0x5c). */
static struct evp_md_ctx_st *hs_pad_ctx(const uint8_t *key, size_t key_len, uint8_t pad)
{
    uint8_t block[64] = {0};
    unsigned int n = 0;
    if (key_len > sizeof(block)) {
        if (EVP_Digest(key, key_len, block, &n, EVP_sha256(), NULL) != 1)
            return NULL;
    } else {
        memcpy(block, key, key_len);
    }
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] ^= pad;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, block, sizeof(block)) != 1) {
        EVP_MD_CTX_free(c);
        c = NULL;
    }
    OPENSSL_cleanse(block, sizeof(block));
    return c;
}

static int hs_prepare(keel_jwk_t *k)
{
    k->hs_inner = hs_pad_ctx(k->secret, k->secret_len, 0x36);
    k->hs_outer = hs_pad_ctx(k->secret, k->secret_len, 0x5c);
    return k->hs_inner != NULL && k->hs_outer != NULL ? 0 : -1;
}

static int parse_key(keel_jwk_t *out, const json_t *k, size_t i, keel_errmsg_t *msg)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(k))
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu is not an object", i);
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const char *use = json_string_value(json_object_get(k, "use"));
    const char *alg = json_string_value(json_object_get(k, "alg"));
    const char *kid = json_string_value(json_object_get(k, "kid"));
    if (kty == NULL)
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu has no \"kty\"", i);
    if (use != NULL && strcmp(use, "sig") != 0)
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu: \"use\" is \"%.32s\", not \"sig\"", i,
                         use);
    if (kid != NULL && strlen(kid) >= sizeof(out->kid))
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu: \"kid\" longer than %u bytes", i,
                         KEEL_JWT_KID_BYTES_MAX - 1);
    if (kid != NULL)
        strcpy(out->kid, kid);
    if (strcmp(kty, "oct") == 0) {
        out->alg = KEEL_JWT_HS256;
        out->secret = b64_member(k, "k", KEEL_JWT_SECRET_BYTES_MAX, &out->secret_len);
        if (out->secret == NULL || out->secret_len < 32)
            return keel_errf(msg, KEEL_EINVAL,
                             "jwks: key %zu: \"k\" is not base64url of 32 to %u bytes", i,
                             KEEL_JWT_SECRET_BYTES_MAX);
        if (hs_prepare(out) != 0)
            return keel_errf(msg, KEEL_ENOMEM, "jwks: key %zu: SHA-256 unavailable", i);
    } else if (strcmp(kty, "RSA") == 0) {
        out->alg = KEEL_JWT_RS256;
        if ((out->pkey = rsa_key(k)) == NULL)
            return keel_errf(msg, KEEL_EINVAL,
                             "jwks: key %zu: \"n\"/\"e\" are not an RSA public key of 2048 to "
                             "8192 bits",
                             i);
    } else if (strcmp(kty, "EC") == 0) {
        out->alg = KEEL_JWT_ES256;
        if ((out->pkey = ec_key(k)) == NULL)
            return keel_errf(msg, KEEL_EINVAL,
                             "jwks: key %zu: not a P-256 public key (\"crv\", \"x\", \"y\")", i);
    } else {
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu: kty \"%.16s\" is not RSA, EC or oct", i,
                         kty);
    }
    if (alg != NULL && strcmp(alg, alg_name(out->alg)) != 0)
        return keel_errf(msg, KEEL_EINVAL, "jwks: key %zu: \"alg\" %.16s does not fit kty %s", i,
                         alg, kty);
    return 0;
}

static void key_free(keel_jwk_t *k)
{
    EVP_PKEY_free(k->pkey);
    EVP_MD_CTX_free(k->hs_inner);
    EVP_MD_CTX_free(k->hs_outer);
    free(k->secret);
    memset(k, 0, sizeof(*k));
}

void keel_jwks_free(keel_jwks_t *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        key_free(&ks->keys[i]);
    free(ks->keys);
    ks->keys = NULL;
    ks->n = 0;
}

int keel_jwks_parse(keel_jwks_t *out, const char *json, size_t len, keel_errmsg_t *msg)
{
    memset(out, 0, sizeof(*out));
    if (len > KEEL_JWKS_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "jwks: larger than %u bytes", KEEL_JWKS_BYTES_MAX);
    json_error_t je;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL)
        return keel_errf(msg, KEEL_EINVAL, "jwks: line %d: %.100s", je.line, je.text);
    const json_t *keys = json_object_get(doc, "keys");
    size_t n = keys ? json_array_size(keys) : 1;
    int rc = 0;
    if (keys != NULL && !json_is_array(keys))
        rc = keel_errf(msg, KEEL_EINVAL, "jwks: \"keys\" is not an array");
    else if (n == 0 || n > KEEL_JWKS_KEYS_MAX)
        rc = keel_errf(msg, KEEL_EINVAL, "jwks: %zu keys (1 to %u)", n, KEEL_JWKS_KEYS_MAX);
    else if ((out->keys = calloc(n, sizeof(*out->keys))) == NULL)
        rc = KEEL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = parse_key(&out->keys[i], keys ? json_array_get(keys, i) : doc, i, msg);
        if (rc != 0)
            key_free(&out->keys[i]);
        else
            out->n++;
    }
    json_decref(doc);
    if (rc != 0)
        keel_jwks_free(out);
    return rc;
}

/* ---- verification --------------------------------------------------------------------- */

/* ES256's signature is r || s (32 bytes each); OpenSSL verifies DER. */
static int es256_der(const uint8_t *raw, uint8_t *der, size_t *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1) {
        ECDSA_SIG_free(sig);
        BN_free(r);
        BN_free(s);
        return -1;
    }
    unsigned char *p = der;
    int n = i2d_ECDSA_SIG(sig, &p);
    ECDSA_SIG_free(sig);
    if (n <= 0)
        return -1;
    *der_len = (size_t)n;
    return 0;
}

static int verify_with(const keel_jwk_t *k, const uint8_t *data, size_t len, const uint8_t *sig,
                       size_t sig_len)
{
    if (k->alg == KEEL_JWT_HS256) { /* SHA-256(outer pad | SHA-256(inner pad | data)) */
        unsigned char inner[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
        unsigned int inner_len = 0, mac_len = 0;
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        int ok =
            c != NULL && EVP_MD_CTX_copy_ex(c, k->hs_inner) == 1 &&
            EVP_DigestUpdate(c, data, len) == 1 && EVP_DigestFinal_ex(c, inner, &inner_len) == 1 &&
            EVP_MD_CTX_copy_ex(c, k->hs_outer) == 1 && EVP_DigestUpdate(c, inner, inner_len) == 1 &&
            EVP_DigestFinal_ex(c, mac, &mac_len) == 1;
        EVP_MD_CTX_free(c);
        return ok && sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
    }
    uint8_t der[80];
    if (k->alg == KEEL_JWT_ES256) {
        size_t der_len = 0;
        if (sig_len != 64 || es256_der(sig, der, &der_len) != 0)
            return 0;
        sig = der;
        sig_len = der_len;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_len, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Decodes one base64url JSON object (the header or the payload). */
static json_t *b64_json(const char *p, size_t n, uint8_t *scratch)
{
    long d = keel_b64url_decode(p, n, scratch);
    if (d <= 0)
        return NULL;
    json_t *o = json_loadb((const char *)scratch, (size_t)d, JSON_REJECT_DUPLICATES, NULL);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int aud_has(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), want) == 0) return 1;
    return 0;
}

/* A NumericDate claim: absent (1), a number (0, *v), or malformed (-1). */
static int numeric_date(const json_t *claims, const char *name, int64_t *v)
{
    const json_t *x = json_object_get(claims, name);
    if (x == NULL)
        return 1;
    if (json_is_integer(x)) {
        *v = (int64_t)json_integer_value(x);
        return 0;
    }
    if (json_is_real(x)) {
        double d = json_real_value(x);
        if (d < -9e18 || d > 9e18)
            return -1;
        *v = (int64_t)d;
        return 0;
    }
    return -1;
}

static int check_claims(const json_t *c, const keel_jwt_rules_t *rules, int64_t now_s,
                        keel_errmsg_t *why)
{
    int64_t exp = 0, nbf = 0, leeway = rules->leeway_s;
    int has = numeric_date(c, "exp", &exp);
    if (has < 0)
        return keel_errf(why, KEEL_EPROTO, "the exp claim is not a number");
    if (has == 1 && rules->require_exp)
        return keel_errf(why, KEEL_EREJECTED, "the token has no exp claim");
    if (has == 0 && now_s >= exp + leeway)
        return keel_errf(why, KEEL_EREJECTED, "the token expired");
    has = numeric_date(c, "nbf", &nbf);
    if (has < 0)
        return keel_errf(why, KEEL_EPROTO, "the nbf claim is not a number");
    if (has == 0 && now_s + leeway < nbf)
        return keel_errf(why, KEEL_EREJECTED, "the token is not valid yet");
    if (rules->issuer != NULL) {
        const char *iss = json_string_value(json_object_get(c, "iss"));
        if (iss == NULL || strcmp(iss, rules->issuer) != 0)
            return keel_errf(why, KEEL_EREJECTED, "wrong issuer");
    }
    if (rules->audience != NULL && !aud_has(json_object_get(c, "aud"), rules->audience))
        return keel_errf(why, KEEL_EREJECTED, "wrong audience");
    return 0;
}

int keel_jwt_verify(const keel_jwks_t *ks, const char *token, size_t len,
                    const keel_jwt_rules_t *rules, int64_t now_s, keel_jwt_t *out,
                    keel_errmsg_t *why)
{
    memset(out, 0, sizeof(*out));
    if (len > KEEL_JWT_TOKEN_BYTES_MAX)
        return keel_errf(why, KEEL_ETOOBIG, "the token is longer than %u bytes",
                         KEEL_JWT_TOKEN_BYTES_MAX);
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
        return keel_errf(why, KEEL_EPROTO, "not a compact JWS (three parts)");
    uint8_t scratch[KEEL_JWT_TOKEN_BYTES_MAX];
    json_t *hdr = b64_json(token, (size_t)(d1 - token), scratch);
    if (hdr == NULL)
        return keel_errf(why, KEEL_EPROTO, "the header is not base64url JSON");
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    keel_jwt_alg_t a = 0;
    if (alg != NULL && strcmp(alg, "HS256") == 0)
        a = KEEL_JWT_HS256;
    else if (alg != NULL && strcmp(alg, "RS256") == 0)
        a = KEEL_JWT_RS256;
    else if (alg != NULL && strcmp(alg, "ES256") == 0)
        a = KEEL_JWT_ES256;
    int crit = json_object_get(hdr, "crit") != NULL; /* no extension is understood */
    char alg_copy[16] = "?";                         /* for the reason: the header is freed below */
    if (alg != NULL && strlen(alg) < sizeof(alg_copy))
        strcpy(alg_copy, alg);
    char kid_copy[KEEL_JWT_KID_BYTES_MAX] = "";
    if (kid != NULL && strlen(kid) < sizeof(kid_copy))
        strcpy(kid_copy, kid);
    int kid_bad = kid != NULL && strlen(kid) >= sizeof(kid_copy);
    json_decref(hdr);
    if (a == 0)
        return keel_errf(why, KEEL_EREJECTED, "alg %s is not accepted (HS256, RS256, ES256)",
                         alg_copy);
    if (crit || kid_bad)
        return keel_errf(why, KEEL_EREJECTED, crit ? "unknown critical header" : "kid too long");
    size_t sig_b64 = len - (size_t)(d2 + 1 - token);
    uint8_t sig[KEEL_JWT_TOKEN_BYTES_MAX];
    long sig_len = keel_b64url_decode(d2 + 1, sig_b64, sig);
    if (sig_len <= 0)
        return keel_errf(why, KEEL_EPROTO, "the signature is not base64url");
    /* the key: by kid if the token names one, else every key of the algorithm's type */
    int tried = 0, ok = 0;
    for (size_t i = 0; i < ks->n && !ok; i++) {
        const keel_jwk_t *k = &ks->keys[i];
        if (k->alg != a || (kid_copy[0] && strcmp(k->kid, kid_copy) != 0))
            continue;
        tried = 1;
        ok = verify_with(k, (const uint8_t *)token, (size_t)(d2 - token), sig, (size_t)sig_len);
    }
    if (!tried) /* (alg is freed: its name comes from a) */
        return keel_errf(why, KEEL_EREJECTED, "no %s key%s%s", alg_name(a),
                         kid_copy[0] ? " with kid " : "", kid_copy[0] ? kid_copy : "");
    if (!ok)
        return keel_errf(why, KEEL_EREJECTED, "bad signature");
    json_t *claims = b64_json(d1 + 1, (size_t)(d2 - d1 - 1), scratch);
    if (claims == NULL)
        return keel_errf(why, KEEL_EPROTO, "the payload is not base64url JSON");
    int rc = check_claims(claims, rules, now_s, why);
    if (rc != 0) {
        json_decref(claims);
        return rc;
    }
    out->alg = a;
    out->claims = claims;
    return 0;
}

void keel_jwt_free(keel_jwt_t *t)
{
    json_decref(t->claims);
    t->claims = NULL;
}

/* The claim at a dotted path ("realm.tier": claims.realm.tier), each part a key of an object;
 * NULL when a part is empty or missing, the path is too deep or too long. */
static const json_t *claim_at_path(const json_t *claims, const char *path)
{
    const json_t *v = claims;
    const char *p = path;
    for (unsigned depth = 0; v != NULL; depth++) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char key[KEEL_JWT_CLAIM_NAME_BYTES_MAX];
        if (n == 0 || n >= sizeof(key) || depth >= KEEL_JWT_CLAIM_DEPTH_MAX || !json_is_object(v))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        v = json_object_get(v, key);
        if (dot == NULL)
            return v;
        p = dot + 1;
    }
    return NULL;
}

int keel_jwt_claim_text(const keel_jwt_t *t, const char *name, char *buf, size_t cap)
{
    const json_t *v = t->claims ? json_object_get(t->claims, name) : NULL;
    if (v == NULL && t->claims != NULL && strchr(name, '.') != NULL)
        v = claim_at_path(t->claims, name); /* a top-level name with dots is taken first */
    int n;
    if (json_is_string(v))
        n = snprintf(buf, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        n = snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        n = snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    else
        return KEEL_ENOTFOUND;
    return n < 0 || (size_t)n >= cap ? KEEL_ETOOBIG : 0;
}
