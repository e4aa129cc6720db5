/* test_proxy_auth.c - keel proxy's JWT edge: keys loaded with the config (errors on their
 * line), each refusal with a sanitized reason, Bearer extraction, several audiences, and the
 * token cache (hits, expiry, and its use by several workers at once). */
#include "ktest.h"
#include "test_b64url.h"
#include "proxy/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000
static const char SECRET[] = "proxy-auth-test-secret-0123456789abcdef";

/* "Bearer " + an HS256 token of header and payload signed with secret. */
static void bearer(char *out, size_t cap, const char *header, const char *payload,
                   const char *secret)
{
    char h[512], p[1024], input[1600], s64[64];
    b64url((const uint8_t *)header, strlen(header), h);
    b64url((const uint8_t *)payload, strlen(payload), p);
    snprintf(input, sizeof(input), "%s.%s", h, p);
    uint8_t sig[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)input, strlen(input), sig, &n);
    b64url(sig, n, s64);
    snprintf(out, cap, "Bearer %s.%s", input, s64);
}

static keel_proxy_config_t cfg;
static keel_proxy_errors_t errs;
static keel_proxy_keys_t keys;

static void load(const char *jwks_line)
{
    char k[128], text[1024];
    b64url((const uint8_t *)SECRET, strlen(SECRET), k);
    snprintf(text, sizeof(text),
             "listeners: [{address: 127.0.0.1:1}]\n"
             "jwt_providers:\n"
             "  - name: shop\n"
             "    issuer: https://auth.shop\n"
             "    audiences: [orders, users]\n"
             "    %s\n"
             "routes:\n"
             "  - {match: {prefix: /}, jwt: shop, direct_response: {status: 200}}\n",
             jwks_line[0] ? jwks_line : "jwks: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"%K\"}]}'");
    char *mark = strstr(text, "%K"); /* the secret goes into the inline JWKS */
    if (mark != NULL) {
        char rest[1024];
        snprintf(rest, sizeof(rest), "%s", mark + 2);
        snprintf(mark, sizeof(text) - (size_t)(mark - text), "%s%s", k, rest);
    }
    KT_EQ_INT(keel_proxy_config_parse(text, strlen(text), &cfg, &errs), 0);
}

static bool use_cache;
static int64_t now_s = NOW;

/* The verdict for one Authorization value (NULL: none), reason in why. */
static keel_proxy_auth_result_t verify(const char *authz, char *why)
{
    keel_proxy_auth_value_t v = {authz, authz ? strlen(authz) : 0};
    keel_jwt_t jwt;
    keel_proxy_auth_result_t r = keel_proxy_auth_verify(
        &cfg.jwt_providers[0], &keys.slots[0].cur->set,
        use_cache ? &keys.slots[0].cur->cache : NULL, &v, authz ? 1 : 0, now_s, &jwt, why);
    if (r == KEEL_PROXY_AUTH_OK)
        keel_jwt_free(&jwt);
    return r;
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define CLAIMS(extra)                                                                              \
    "{\"iss\":\"https://"                                                                          \
    "auth.shop\",\"aud\":[\"x\",\"users\"],\"sub\":\"c42\",\"exp\":1700000600" extra "}"

static void a_good_token_passes_and_each_refusal_says_why(void)
{
    load("");
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), 0);
    char t[2048], why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    bearer(t, sizeof(t), HS, CLAIMS(""), SECRET);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK); /* "users" is one of the audiences */
    t[0] = 'b';                                    /* the scheme is case-insensitive */
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_INT(verify(NULL, why), KEEL_PROXY_AUTH_MISSING);
    KT_EQ_INT(verify("Basic dXNlcjpwdw==", why), KEEL_PROXY_AUTH_MISSING);
    KT_EQ_INT(verify("Bearer ", why), KEEL_PROXY_AUTH_MISSING);

    static const struct {
        const char *header, *claims, *secret, *why;
    } cases[] = {
        {"{\"alg\":\"none\"}", CLAIMS(""), SECRET, "alg none is not accepted"},
        {HS, "{\"iss\":\"https://auth.shop\",\"aud\":\"users\",\"exp\":1699999000}", SECRET,
         "expired"},
        {HS, CLAIMS(",\"nbf\":1700009000"), SECRET, "not valid yet"},
        {HS, "{\"iss\":\"https://auth.shop\",\"aud\":\"billing\",\"exp\":1700000600}", SECRET,
         "wrong audience"},
        {HS, "{\"iss\":\"https://evil\",\"aud\":\"users\",\"exp\":1700000600}", SECRET,
         "wrong issuer"},
        {HS, CLAIMS(""), "another-secret", "bad signature"},
        {HS, "{\"iss\":\"https://auth.shop\",\"aud\":\"users\"}", SECRET, "no exp"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bearer(t, sizeof(t), cases[i].header, cases[i].claims, cases[i].secret);
        if (strcmp(cases[i].header, "{\"alg\":\"none\"}") == 0)
            *strrchr(t, '.') = 0, strcat(t, "."); /* alg none: an empty signature */
        KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID);
        if (strstr(why, cases[i].why) == NULL)
            KT_FAIL("case %zu: reason '%s' lacks '%s'", i, why, cases[i].why);
    }
    KT_EQ_INT(verify("Bearer not.a-token", why), KEEL_PROXY_AUTH_INVALID);
    KT_CHECK(strstr(why, "three parts") != NULL);
    /* two Authorization fields: the upstream might read the other one */
    keel_proxy_auth_value_t two[2] = {{"Bearer a.b.c", 12}, {"Bearer a.b.c", 12}};
    keel_jwt_t jwt;
    KT_EQ_INT(keel_proxy_auth_verify(&cfg.jwt_providers[0], &keys.slots[0].cur->set, NULL, two, 2,
                                     NOW, &jwt, why),
              KEEL_PROXY_AUTH_INVALID);
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
}

/* A kid of the attacker's choosing ends up in the reason ("no HS256 key with kid ..."): it must
 * not carry quotes, CR or LF into the WWW-Authenticate field. */
static void reasons_never_echo_attacker_bytes_raw(void)
{
    load("");
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), 0);
    char t[2048], why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    bearer(t, sizeof(t), "{\"alg\":\"HS256\",\"kid\":\"a\\\"b\\r\\nX-Evil: 1\"}", CLAIMS(""),
           SECRET);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID);
    for (const char *p = why; *p; p++)
        KT_CHECK(*p != '"' && *p != '\r' && *p != '\n' && *p != '\\');
    KT_CHECK(strstr(why, "no HS256 key") != NULL);
    char out[16];
    keel_proxy_auth_sanitize("a\"b\x01\xff;c", out, sizeof(out));
    KT_EQ_STR(out, "a?b???c");
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
}

/* The keys come from a file read at each load: a missing or bad file is a config error on the
 * jwks_file line, and a rewritten file is what the next load verifies with. */
static void a_jwks_file_is_read_at_each_load_and_errors_name_its_line(void)
{
    char dir[256], path[300], line[400];
    KT_TMPDIR(dir, "auth");
    snprintf(path, sizeof(path), "%s/jwks.json", dir);
    snprintf(line, sizeof(line), "jwks_file: %s", path);
    load(line);
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), KEEL_EINVAL);
    KT_EQ_INT(errs.count, 1);
    KT_EQ_INT(errs.e[0].line, 6);
    KT_CHECK(strstr(errs.e[0].text, "cannot read") != NULL);
    FILE *f = fopen(path, "w");
    fputs("{\"keys\": [{\"kty\": \"oct\"}]}", f);
    fclose(f);
    memset(&errs, 0, sizeof(errs));
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), KEEL_EINVAL);
    KT_EQ_INT(errs.e[0].line, 6);
    char k[128];
    b64url((const uint8_t *)SECRET, strlen(SECRET), k);
    f = fopen(path, "w");
    fprintf(f, "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"k1\", \"k\": \"%s\"}]}", k);
    fclose(f);
    memset(&errs, 0, sizeof(errs));
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), 0);
    char t[2048], why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    bearer(t, sizeof(t), HS, CLAIMS(""), SECRET);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
    KT_RMRF(dir);
}

/* A cached token skips the signature check but never the clock; only exact bytes hit. */
static void a_cached_token_still_expires_and_only_its_exact_bytes_hit(void)
{
    load("");
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 7), 0);
    use_cache = true;
    char t[2048], why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    bearer(t, sizeof(t), HS, CLAIMS(",\"nbf\":1699999990"), SECRET);
    keel_proxy_token_cache_t *c = &keys.slots[0].cur->cache;
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_U64(c->misses, 1);
    KT_EQ_U64(c->hits, 2);
    /* the last signature character changed: not the cached bytes, verified (and refused) */
    size_t n = strlen(t);
    t[n - 1] = t[n - 1] == 'A' ? 'B' : 'A';
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID);
    t[n - 1] = t[n - 1] == 'A' ? 'B' : 'A'; /* (back; either change breaks the signature) */
    bearer(t, sizeof(t), HS, CLAIMS(",\"nbf\":1699999990"), SECRET);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_U64(c->hits, 3);
    now_s = NOW - 60 - 20; /* before nbf - leeway: the hit is refused */
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID);
    KT_CHECK(strstr(why, "not valid yet") != NULL);
    now_s = 1700000600 + 60; /* exp + leeway: expired, cached or not */
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID);
    KT_CHECK(strstr(why, "expired") != NULL);
    KT_EQ_INT(verify(t, why), KEEL_PROXY_AUTH_INVALID); /* evicted: now the full check says so */
    KT_CHECK(strstr(why, "expired") != NULL);
    now_s = NOW;
    use_cache = false;
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
}

/*
 * The proxy's workers share one generation's keys, so one token cache per provider serves several
 * threads at once. Threads that each verify more distinct tokens than the cache has slots make it
 * replace entries all the time while the others look entries up. Every verdict must be OK with
 * the token's own claims, and every call counted once (hits + misses). The cache once had no
 * mutex: the gateway of `make demo` (2 workers) died of a double free in entry_clear, called by
 * cache_put on two workers for the same slot (glibc: "free(): unaligned chunk detected in
 * tcache 2"; ASan: attempting double-free).
 */
#define SHARED_TOKENS 600u /* more than KEEL_PROXY_TOKEN_CACHE_ENTRIES: slots are replaced */
#define SHARED_THREADS 4u
#define SHARED_CALLS_PER_THREAD 20000u

static char shared_tokens[SHARED_TOKENS][512];

typedef struct shared_worker {
    pthread_t thread;
    uint32_t stride;
    uint64_t calls, refused, wrong_claims;
} shared_worker_t;

static void *shared_worker_main(void *data)
{
    shared_worker_t *w = data;
    for (uint32_t i = 0; i < SHARED_CALLS_PER_THREAD; i++) {
        uint32_t k = (i * w->stride) % SHARED_TOKENS;
        keel_proxy_auth_value_t v = {shared_tokens[k], strlen(shared_tokens[k])};
        keel_jwt_t jwt;
        char why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
        keel_proxy_auth_result_t r =
            keel_proxy_auth_verify(&cfg.jwt_providers[0], &keys.slots[0].cur->set,
                                   &keys.slots[0].cur->cache, &v, 1, NOW, &jwt, why);
        w->calls++;
        if (r != KEEL_PROXY_AUTH_OK) {
            w->refused++;
            continue;
        }
        char sub[32], want[32];
        snprintf(want, sizeof(want), "c%u", k);
        if (keel_jwt_claim_text(&jwt, "sub", sub, sizeof(sub)) != 0 || strcmp(sub, want) != 0)
            w->wrong_claims++;
        keel_jwt_free(&jwt);
    }
    return NULL;
}

static void the_cache_holds_under_several_workers_at_once(void)
{
    load("");
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 11), 0);
    for (uint32_t k = 0; k < SHARED_TOKENS; k++) {
        char claims[256];
        snprintf(claims, sizeof(claims),
                 "{\"iss\":\"https://auth.shop\",\"aud\":\"users\",\"sub\":\"c%u\","
                 "\"exp\":1700000600}",
                 k);
        bearer(shared_tokens[k], sizeof(shared_tokens[k]), HS, claims, SECRET);
    }
    /* strides prime to SHARED_TOKENS: each thread walks every token, in its own order */
    static const uint32_t strides[SHARED_THREADS] = {1, 7, 13, 599};
    shared_worker_t ws[SHARED_THREADS] = {0};
    for (uint32_t t = 0; t < SHARED_THREADS; t++) {
        ws[t].stride = strides[t];
        KT_EQ_INT(pthread_create(&ws[t].thread, NULL, shared_worker_main, &ws[t]), 0);
    }
    uint64_t calls = 0;
    for (uint32_t t = 0; t < SHARED_THREADS; t++) {
        KT_EQ_INT(pthread_join(ws[t].thread, NULL), 0);
        KT_EQ_U64(ws[t].refused, 0);
        KT_EQ_U64(ws[t].wrong_claims, 0);
        calls += ws[t].calls;
    }
    keel_proxy_token_cache_t *c = &keys.slots[0].cur->cache;
    KT_EQ_U64(calls, (uint64_t)SHARED_THREADS * SHARED_CALLS_PER_THREAD);
    KT_EQ_U64(c->hits + c->misses, calls); /* each call counted once: none lost to a race */
    KT_CHECK(c->hits > 0 && c->misses > SHARED_TOKENS); /* both paths ran, slots were replaced */
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
}

int main(void)
{
    KT_RUN(a_good_token_passes_and_each_refusal_says_why);
    KT_RUN(reasons_never_echo_attacker_bytes_raw);
    KT_RUN(a_jwks_file_is_read_at_each_load_and_errors_name_its_line);
    KT_RUN(a_cached_token_still_expires_and_only_its_exact_bytes_hit);
    KT_RUN(the_cache_holds_under_several_workers_at_once);
    return kt_done();
}
