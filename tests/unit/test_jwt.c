/* test_jwt.c - JWT verification (HS256, RS256, ES256) and JWKS parsing, with keys and
 * tokens made here by OpenSSL: every refusal the proxy's edge relies on. */
#include "ktest.h"
#include "test_b64url.h"
#include "proto/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000

static EVP_PKEY *rsa, *rsa2, *ec;
static const char SECRET[] = "0123456789abcdef0123456789abcdef-hs256-secret";

/* ---- helpers: base64url, JWKS from keys, tokens ------------------------------------- */

static void bn_b64(EVP_PKEY *k, const char *param, char *out, int pad_to)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
        abort();
    uint8_t buf[1024];
    int n = pad_to ? BN_bn2binpad(bn, buf, pad_to) : BN_bn2bin(bn, buf);
    BN_free(bn);
    b64url(buf, (size_t)n, out);
}

static void jwk_rsa(EVP_PKEY *k, const char *kid, char *out, size_t cap)
{
    char n[1500], e[16];
    bn_b64(k, OSSL_PKEY_PARAM_RSA_N, n, 0);
    bn_b64(k, OSSL_PKEY_PARAM_RSA_E, e, 0);
    snprintf(out, cap, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
             kid, n, e);
}

static void jwk_ec(EVP_PKEY *k, const char *kid, char *out, size_t cap)
{
    char x[64], y[64];
    bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, x, 32);
    bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, y, 32);
    snprintf(out, cap,
             "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", kid, x,
             y);
}

static void jwk_oct(const char *kid, char *out, size_t cap)
{
    char k[128];
    b64url((const uint8_t *)SECRET, strlen(SECRET), k);
    snprintf(out, cap, "{\"kty\":\"oct\",\"kid\":\"%s\",\"k\":\"%s\"}", kid, k);
}

static keel_jwks_t keys; /* rsa "r1", ec "e1", oct "h1" */

/* header.payload signed by alg with the given key (NULL: the test's own for alg). */
static void token(char *out, size_t cap, const char *header, const char *payload, const char *alg,
                  EVP_PKEY *key)
{
    char h[1024], p[4096];
    b64url((const uint8_t *)header, strlen(header), h);
    b64url((const uint8_t *)payload, strlen(payload), p);
    char input[6000];
    snprintf(input, sizeof(input), "%s.%s", h, p);
    uint8_t sig[1024];
    size_t sig_len = sizeof(sig);
    if (strcmp(alg, "HS256") == 0) {
        unsigned int n = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const uint8_t *)input, strlen(input), sig,
             &n);
        sig_len = n;
    } else if (strcmp(alg, "none") == 0) {
        sig_len = 0;
    } else {
        EVP_PKEY *k = key ? key : strcmp(alg, "RS256") == 0 ? rsa : ec;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
            EVP_DigestSign(ctx, sig, &sig_len, (const uint8_t *)input, strlen(input)) != 1)
            abort();
        EVP_MD_CTX_free(ctx);
        if (strcmp(alg, "ES256") == 0) { /* DER to r || s */
            const uint8_t *q = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sig_len);
            const BIGNUM *r, *s;
            ECDSA_SIG_get0(es, &r, &s);
            BN_bn2binpad(r, sig, 32);
            BN_bn2binpad(s, sig + 32, 32);
            ECDSA_SIG_free(es);
            sig_len = 64;
        }
    }
    char s64[1500];
    b64url(sig, sig_len, s64);
    snprintf(out, cap, "%s.%s", input, s64);
}

static const keel_jwt_rules_t RULES = {
    .issuer = "https://auth.shop", .audience = "shop-api", .leeway_s = 30, .require_exp = 1};

/* Verifies; returns the status and leaves the reason in why. */
static int check(const char *tok, keel_errmsg_t *why)
{
    keel_jwt_t t;
    int rc = keel_jwt_verify(&keys, tok, strlen(tok), &RULES, NOW, &t, why);
    if (rc == 0)
        keel_jwt_free(&t);
    return rc;
}

#define GOOD                                                                                       \
    "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"sub\":\"c42\",\"exp\":1700000600}"

/* ---- tests ------------------------------------------------------------------------- */

static void nested_claims_are_found_by_a_dotted_path(void)
{
    const char *claims = "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"sub\":\"c42\","
                         "\"exp\":1700000600,\"realm\":{\"tier\":\"gold\",\"n\":3,"
                         "\"deep\":{\"ok\":true,\"list\":[1]}},\"a.b\":\"dotted\","
                         "\"a\":{\"b\":\"nested\"},\"https://x.test/role\":\"admin\"}";
    char tok[8192];
    token(tok, sizeof(tok), "{\"alg\":\"HS256\",\"kid\":\"h1\"}", claims, "HS256", NULL);
    keel_jwt_t t;
    keel_errmsg_t why = {{0}};
    KT_EQ_INT(keel_jwt_verify(&keys, tok, strlen(tok), &RULES, NOW, &t, &why), 0);
    char v[32];
    KT_EQ_INT(keel_jwt_claim_text(&t, "realm.tier", v, sizeof(v)), 0);
    KT_EQ_STR(v, "gold");
    KT_EQ_INT(keel_jwt_claim_text(&t, "realm.n", v, sizeof(v)), 0);
    KT_EQ_STR(v, "3");
    KT_EQ_INT(keel_jwt_claim_text(&t, "realm.deep.ok", v, sizeof(v)), 0);
    KT_EQ_STR(v, "true");
    /* a top-level name with dots first, then the path */
    KT_EQ_INT(keel_jwt_claim_text(&t, "a.b", v, sizeof(v)), 0);
    KT_EQ_STR(v, "dotted");
    KT_EQ_INT(keel_jwt_claim_text(&t, "https://x.test/role", v, sizeof(v)), 0);
    KT_EQ_STR(v, "admin");
    /* objects, arrays, missing parts, empty parts and paths through non-objects: none */
    const char *none[] = {"realm",        "realm.deep",  "realm.deep.list",  "realm.nope",
                          "realm..tier",  ".realm.tier", "realm.tier.",      "sub.x",
                          "realm.tier.x", "nope.realm",  "realm.deep.list.0"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        KT_EQ_INT(keel_jwt_claim_text(&t, none[i], v, sizeof(v)), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_jwt_claim_text(&t, "realm.tier", v, 4), KEEL_ETOOBIG);
    keel_jwt_free(&t);
    /* KEEL_JWT_CLAIM_DEPTH_MAX parts reach a leaf; one more part is too deep, though the path
       is there */
    for (unsigned levels = KEEL_JWT_CLAIM_DEPTH_MAX - 1; levels <= KEEL_JWT_CLAIM_DEPTH_MAX;
         levels++) {
        char deep[256] = "", body[512], path[64] = "d";
        for (unsigned i = 0; i < levels; i++) {
            strcat(deep, "{\"k\":");
            strcat(path, ".k");
        }
        strcat(deep, "\"leaf\"");
        for (unsigned i = 0; i < levels; i++)
            strcat(deep, "}");
        snprintf(body, sizeof(body),
                 "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"exp\":1700000600,"
                 "\"d\":%s}",
                 deep);
        token(tok, sizeof(tok), "{\"alg\":\"HS256\",\"kid\":\"h1\"}", body, "HS256", NULL);
        KT_EQ_INT(keel_jwt_verify(&keys, tok, strlen(tok), &RULES, NOW, &t, &why), 0);
        int rc = keel_jwt_claim_text(&t, path, v, sizeof(v));
        if (levels + 1 <= KEEL_JWT_CLAIM_DEPTH_MAX) {
            KT_EQ_INT(rc, 0);
            KT_EQ_STR(v, "leaf");
        } else {
            KT_EQ_INT(rc, KEEL_ENOTFOUND);
        }
        keel_jwt_free(&t);
    }
}

static void each_algorithm_verifies_and_gives_the_claims(void)
{
    const char *algs[] = {"HS256", "RS256", "ES256"};
    const char *kids[] = {"h1", "r1", "e1"};
    for (int i = 0; i < 3; i++) {
        char hdr[128], tok[8192];
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", algs[i],
                 kids[i]);
        token(tok, sizeof(tok), hdr, GOOD, algs[i], NULL);
        keel_jwt_t t;
        keel_errmsg_t why = {{0}};
        KT_EQ_INT(keel_jwt_verify(&keys, tok, strlen(tok), &RULES, NOW, &t, &why), 0);
        char sub[16];
        KT_EQ_INT(keel_jwt_claim_text(&t, "sub", sub, sizeof(sub)), 0);
        KT_EQ_STR(sub, "c42");
        KT_EQ_INT(keel_jwt_claim_text(&t, "exp", sub, sizeof(sub)), 0);
        KT_EQ_STR(sub, "1700000600");
        KT_EQ_INT(keel_jwt_claim_text(&t, "nope", sub, sizeof(sub)), KEEL_ENOTFOUND);
        KT_EQ_INT(keel_jwt_claim_text(&t, "iss", sub, 4), KEEL_ETOOBIG);
        keel_jwt_free(&t);
        /* without a kid, every key of the algorithm's type is tried */
        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", algs[i]);
        token(tok, sizeof(tok), hdr, GOOD, algs[i], NULL);
        KT_EQ_INT(check(tok, &why), 0);
    }
}

static void refusals_say_why(void)
{
    char tok[8192];
    keel_errmsg_t why = {{0}};
    /* alg none, with or without a signature */
    token(tok, sizeof(tok), "{\"alg\":\"none\"}", GOOD, "none", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    if (strstr(why.text, "alg none is not accepted") == NULL)
        KT_FAIL("why: %s", why.text);
    token(tok, sizeof(tok), "{\"alg\":\"HS512\"}", GOOD, "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    /* expired (past the leeway), not yet valid, in the leeway */
    token(tok, sizeof(tok), "{\"alg\":\"HS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"exp\":1699999970}", "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "the token expired");
    token(tok, sizeof(tok), "{\"alg\":\"HS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"exp\":1699999971}", "HS256", NULL);
    KT_EQ_INT(check(tok, &why), 0);
    token(tok, sizeof(tok), "{\"alg\":\"HS256\"}",
          "{\"iss\":\"https://"
          "auth.shop\",\"aud\":\"shop-api\",\"exp\":1700000600,\"nbf\":1700000031}",
          "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "the token is not valid yet");
    token(tok, sizeof(tok), "{\"alg\":\"HS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\"}", "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "the token has no exp claim");
    token(tok, sizeof(tok), "{\"alg\":\"HS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":\"shop-api\",\"exp\":\"soon\"}", "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EPROTO);
    /* issuer and audience (a string or an array) */
    token(tok, sizeof(tok), "{\"alg\":\"RS256\"}",
          "{\"iss\":\"https://evil\",\"aud\":\"shop-api\",\"exp\":1700000600}", "RS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "wrong issuer");
    token(tok, sizeof(tok), "{\"alg\":\"RS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":[\"other\"],\"exp\":1700000600}", "RS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "wrong audience");
    token(tok, sizeof(tok), "{\"alg\":\"RS256\"}",
          "{\"iss\":\"https://auth.shop\",\"aud\":[\"other\",\"shop-api\"],\"exp\":1700000600}",
          "RS256", NULL);
    KT_EQ_INT(check(tok, &why), 0);
    /* a signature by another key, a tampered payload, a kid that names no key */
    token(tok, sizeof(tok), "{\"alg\":\"RS256\",\"kid\":\"r1\"}", GOOD, "RS256", rsa2);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "bad signature");
    token(tok, sizeof(tok), "{\"alg\":\"ES256\"}", GOOD, "ES256", NULL);
    char *dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    KT_CHECK(check(tok, &why) != 0);
    token(tok, sizeof(tok), "{\"alg\":\"HS256\",\"kid\":\"nope\"}", GOOD, "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "no HS256 key with kid nope");
    /* critical extensions are not understood */
    token(tok, sizeof(tok), "{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", GOOD, "HS256", NULL);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
}

/*
 * The classic confusion: a token signed with HMAC, using the RSA public key's bytes as the
 * secret, and "alg": "HS256" with the RSA key's kid. The algorithm must fit the key's type.
 */
static void an_rsa_key_never_verifies_hmac(void)
{
    keel_errmsg_t why = {{0}};
    char tok[8192], h[128], p[512], input[1024];
    b64url((const uint8_t *)"{\"alg\":\"HS256\",\"kid\":\"r1\"}", 26, h);
    b64url((const uint8_t *)GOOD, strlen(GOOD), p);
    snprintf(input, sizeof(input), "%s.%s", h, p);
    char n[1500];
    bn_b64(rsa, OSSL_PKEY_PARAM_RSA_N, n, 0);
    uint8_t mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), n, (int)strlen(n), (const uint8_t *)input, strlen(input), mac, &ml);
    char s[64];
    b64url(mac, ml, s);
    snprintf(tok, sizeof(tok), "%s.%s", input, s);
    KT_EQ_INT(check(tok, &why), KEEL_EREJECTED);
    KT_EQ_STR(why.text, "no HS256 key with kid r1");
}

static void malformed_tokens_are_refused_not_crashed_on(void)
{
    keel_errmsg_t why = {{0}};
    const char *bad[] = {"",
                         "a",
                         "a.b",
                         "a.b.c.d",
                         "...",
                         "e30.e30.",
                         "e30.e30.!!!!",
                         "eyJhbGciOiJIUzI1NiJ9.e30.A",
                         "eyJhbGciOiJIUzI1NiJ9..AAAA",
                         "W10.e30.AAAA", /* header [] */
                         "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        KT_CHECK(check(bad[i], &why) != 0);
    char big[KEEL_JWT_TOKEN_BYTES_MAX + 2];
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    KT_EQ_INT(check(big, &why), KEEL_ETOOBIG);
    uint8_t out[8];
    KT_EQ_INT((int)keel_b64url_decode("QQ", 2, out), 1);
    KT_EQ_INT((int)keel_b64url_decode("QR", 2, out), -1); /* non-canonical trailing bits */
    KT_EQ_INT((int)keel_b64url_decode("Q", 1, out), -1);
    KT_EQ_INT((int)keel_b64url_decode("QQ==", 4, out), -1); /* no padding in JWS */
}

static void jwks_errors_name_the_key_and_field(void)
{
    keel_jwks_t ks;
    keel_errmsg_t m = {{0}};
    const char *bad[][2] = {
        {"not json", "jwks: line 1"},
        {"{\"keys\":{}}", "\"keys\" is not an array"},
        {"{\"keys\":[]}", "0 keys"},
        {"{\"keys\":[{\"kid\":\"a\"}]}", "key 0 has no \"kty\""},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", "key 0: \"k\" is not base64url"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
         "key 0: not a P-256 public key"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "key 0: \"n\"/\"e\""},
        {"{\"keys\":[{\"kty\":\"OKP\"}]}", "kty \"OKP\" is not RSA, EC or oct"},
        {"{\"kty\":\"oct\",\"use\":\"enc\",\"k\":\"AA\"}", "\"use\" is \"enc\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        KT_CHECK(keel_jwks_parse(&ks, bad[i][0], strlen(bad[i][0]), &m) != 0);
        if (strstr(m.text, bad[i][1]) == NULL)
            KT_FAIL("case %zu: %s lacks %s", i, m.text, bad[i][1]);
    }
    char j[512];
    jwk_oct("h1", j, sizeof(j));
    char withalg[600];
    snprintf(withalg, sizeof(withalg), "{\"keys\":[%.*s,\"alg\":\"RS256\"}]}", (int)strlen(j) - 1,
             j);
    KT_CHECK(keel_jwks_parse(&ks, withalg, strlen(withalg), &m) != 0);
    KT_CHECK(strstr(m.text, "does not fit kty oct") != NULL);
}

/* HS256 against OpenSSL's own HMAC() for keys shorter than, as long as and longer than
 * SHA-256's 64-byte block (hashed first): the pads are absorbed once per key at load. */
static void hmac_keys_of_every_length_match_openssls_hmac(void)
{
    static const size_t lens[] = {32, 63, 64, 65, 131, 512};
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        uint8_t key[512];
        for (size_t i = 0; i < lens[li]; i++)
            key[i] = (uint8_t)(0xa5 ^ (i * 7));
        char k64[700], doc[800];
        b64url(key, lens[li], k64);
        snprintf(doc, sizeof(doc), "{\"kty\":\"oct\",\"k\":\"%s\"}", k64);
        keel_jwks_t ks;
        keel_errmsg_t m = {{0}};
        KT_EQ_INT(keel_jwks_parse(&ks, doc, strlen(doc), &m), 0);
        char h[64], p[256], input[400], sig64[64], tok[512];
        b64url((const uint8_t *)"{\"alg\":\"HS256\"}", 15, h);
        b64url((const uint8_t *)GOOD, strlen(GOOD), p);
        snprintf(input, sizeof(input), "%s.%s", h, p);
        uint8_t sig[32];
        unsigned int n = 0;
        HMAC(EVP_sha256(), key, (int)lens[li], (const uint8_t *)input, strlen(input), sig, &n);
        b64url(sig, n, sig64);
        snprintf(tok, sizeof(tok), "%s.%s", input, sig64);
        keel_jwt_t t;
        KT_EQ_INT(keel_jwt_verify(&ks, tok, strlen(tok), &RULES, NOW, &t, &m), 0);
        keel_jwt_free(&t);
        keel_jwks_free(&ks);
        key[lens[li] - 1] ^= 1; /* another key: the same token is refused */
        b64url(key, lens[li], k64);
        snprintf(doc, sizeof(doc), "{\"kty\":\"oct\",\"k\":\"%s\"}", k64);
        KT_EQ_INT(keel_jwks_parse(&ks, doc, strlen(doc), &m), 0);
        KT_CHECK(keel_jwt_verify(&ks, tok, strlen(tok), &RULES, NOW, &t, &m) != 0);
        keel_jwks_free(&ks);
    }
}

int main(void)
{
    rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!rsa || !rsa2 || !ec)
        abort();
    char r[2048], e[512], h[512], doc[4096];
    jwk_rsa(rsa, "r1", r, sizeof(r));
    jwk_ec(ec, "e1", e, sizeof(e));
    jwk_oct("h1", h, sizeof(h));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s,%s]}", r, e, h);
    keel_errmsg_t m = {{0}};
    if (keel_jwks_parse(&keys, doc, strlen(doc), &m) != 0) {
        fprintf(stderr, "jwks: %s\n", m.text);
        abort();
    }
    KT_RUN(each_algorithm_verifies_and_gives_the_claims);
    KT_RUN(nested_claims_are_found_by_a_dotted_path);
    KT_RUN(refusals_say_why);
    KT_RUN(an_rsa_key_never_verifies_hmac);
    KT_RUN(malformed_tokens_are_refused_not_crashed_on);
    KT_RUN(jwks_errors_name_the_key_and_field);
    KT_RUN(hmac_keys_of_every_length_match_openssls_hmac);
    keel_jwks_free(&keys);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
    return kt_done();
}
