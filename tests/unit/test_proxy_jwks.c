/* test_proxy_jwks.c - keel proxy's remote_jwks and query tokens: the config's remote_jwks
 * (defaults, bounds, errors on their line), a provider's keys replaced whole while requests
 * hold the old set (and by several workers at once), the refetch backoff, and the
 * percent-decoding of a token taken from a query parameter. */
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

/* An HS256 token (kid k1) of the claims, signed with secret. */
static void token(char *out, size_t cap, const char *secret)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
    static const char claims[] = "{\"sub\":\"c42\",\"exp\":1700000600}";
    char h[256], p[256], input[600], s64[64];
    b64url((const uint8_t *)header, strlen(header), h);
    b64url((const uint8_t *)claims, strlen(claims), p);
    snprintf(input, sizeof(input), "%s.%s", h, p);
    uint8_t sig[32];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)input, strlen(input), sig, &n);
    b64url(sig, n, s64);
    snprintf(out, cap, "%s.%s", input, s64);
}

static void jwks(char *out, size_t cap, const char *secret)
{
    char k[128];
    b64url((const uint8_t *)secret, strlen(secret), k);
    snprintf(out, cap, "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k1\",\"k\":\"%s\"}]}", k);
}

static const char OLD[] = "remote-jwks-old-secret-0123456789abcdef";
static const char NEW[] = "remote-jwks-new-secret-0123456789abcdef";

static keel_proxy_config_t cfg;
static keel_proxy_errors_t errs;

static int parse(const char *remote)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "listeners: [{address: 127.0.0.1:1}]\n"
             "jwt_providers:\n"
             "  - name: shop\n"
             "    %s\n"
             "clusters:\n"
             "  - {name: auth, hosts: [127.0.0.1:2]}\n"
             "  - {name: secure, hosts: [127.0.0.1:3], tls: {server_name: a.example}}\n"
             "routes:\n"
             "  - {match: {prefix: /}, jwt: shop, direct_response: {status: 200}}\n",
             remote);
    return keel_proxy_config_parse(text, strlen(text), &cfg, &errs);
}

static void a_remote_jwks_takes_envoys_defaults_and_names_the_line_of_each_error(void)
{
    KT_EQ_INT(parse("remote_jwks: {cluster: auth, path: /jwks.json}"), 0);
    const keel_proxy_remote_jwks_t *rj = &cfg.jwt_providers[0].remote_jwks;
    KT_CHECK(rj->enabled);
    KT_EQ_INT(rj->cluster, 0);
    KT_EQ_STR(rj->path, "/jwks.json");
    KT_EQ_U64(rj->timeout_ms, 1000);
    KT_EQ_U64(rj->cache_duration_ms, 300000); /* Envoy's cache_duration: 5 minutes */
    KT_EQ_U64(rj->retry_backoff_base_ms, 1000);
    KT_EQ_U64(rj->retry_backoff_cap_ms, 30000);
    keel_proxy_keys_t keys;
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 1), 0); /* nothing fetched by a load */
    KT_CHECK(keys.slots[0].cur == NULL);
    keel_proxy_auth_free(&keys);
    keel_proxy_config_free(&cfg);
    static const struct {
        const char *remote, *says;
    } bad[] = {
        {"remote_jwks: {cluster: nope, path: /j}", "no cluster named 'nope'"},
        {"remote_jwks: {cluster: secure, path: /j}", "has tls"},
        {"remote_jwks: {cluster: auth}", "'cluster' and 'path' are required"},
        {"remote_jwks: {cluster: auth, path: j}", "must start with '/'"},
        {"remote_jwks: {cluster: auth, path: /j, cache_duration_ms: 999}", "cache_duration_ms"},
        {"remote_jwks: {cluster: auth, path: /j, timeout_ms: 60001}", "timeout_ms"},
        {"remote_jwks: {cluster: auth, path: /j, retry_backoff_base_ms: 5000, "
         "retry_backoff_cap_ms: 4000}",
         "below retry_backoff_base_ms"},
        {"remote_jwks: {cluster: auth, path: /j}\n    jwks: '{}'", "give one of"},
        {"remote_jwks: /j", "expected a mapping"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        KT_EQ_INT(parse(bad[i].remote), KEEL_EINVAL);
        KT_CHECK(errs.count >= 1);
        bool found = false;
        for (uint32_t k = 0; k < errs.count; k++)
            if (strstr(errs.e[k].text, bad[i].says) != NULL) {
                found = true;
                KT_CHECK(errs.e[k].line == 3 || errs.e[k].line == 4);
            }
        if (!found)
            KT_FAIL("%s: no error says '%s' (first: %s)", bad[i].remote, bad[i].says,
                    errs.e[0].text);
    }
}

static keel_proxy_auth_result_t check(keel_proxy_keyset_t *ks, const char *t, char *why)
{
    keel_proxy_jwt_provider_t pv = {.name = "shop", .clock_skew_s = 60, .require_exp = true};
    keel_jwt_t jwt;
    keel_proxy_auth_result_t r = keel_proxy_auth_verify_token(
        &pv, ks ? &ks->set : NULL, ks ? &ks->cache : NULL, t, strlen(t), NOW, &jwt, why);
    if (r == KEEL_PROXY_AUTH_OK)
        keel_jwt_free(&jwt);
    return r;
}

/* A slot's keys are replaced whole: a request that took the old set keeps verifying with it
 * (and the old set goes with its last holder); new requests get the new set, whose cache has
 * forgotten the tokens the old keys verified. An empty slot refuses every token. */
static void a_replaced_key_set_serves_its_holders_and_the_next_requests_get_the_new_one(void)
{
    KT_EQ_INT(parse("remote_jwks: {cluster: auth, path: /jwks.json}"), 0);
    keel_proxy_keys_t keys;
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &keys, &errs, 1), 0);
    char why[KEEL_PROXY_AUTH_WHY_BYTES_MAX], doc[256], t_old[600], t_new[600];
    token(t_old, sizeof(t_old), OLD);
    token(t_new, sizeof(t_new), NEW);
    KT_CHECK(keel_proxy_keys_acquire(&keys, 0) == NULL); /* before the first fetch */
    KT_EQ_INT(check(NULL, t_old, why), KEEL_PROXY_AUTH_INVALID);
    KT_CHECK(strstr(why, "not fetched") != NULL);

    keel_proxy_keyset_t *a, *b;
    keel_errmsg_t msg;
    jwks(doc, sizeof(doc), OLD);
    KT_EQ_INT(keel_proxy_keyset_new(doc, strlen(doc), 5, &a, &msg), 0);
    keel_proxy_keys_replace(&keys, 0, a);
    keel_proxy_keyset_t *held = keel_proxy_keys_acquire(&keys, 0); /* a request in flight */
    KT_CHECK(held == a && a->refs == 2);
    KT_EQ_INT(check(held, t_old, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_INT(check(held, t_old, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_U64(held->cache.hits, 1);

    jwks(doc, sizeof(doc), NEW); /* the JWKS server rotated its key */
    KT_EQ_INT(keel_proxy_keyset_new(doc, strlen(doc), 6, &b, &msg), 0);
    keel_proxy_keys_replace(&keys, 0, b);
    KT_EQ_U64(a->refs, 1); /* only the request holds it now */
    KT_EQ_INT(check(held, t_old, why), KEEL_PROXY_AUTH_OK);
    keel_proxy_keyset_unref(held); /* freed here (ASan would see a leak or a double free) */

    keel_proxy_keyset_t *next = keel_proxy_keys_acquire(&keys, 0);
    KT_CHECK(next == b);
    KT_EQ_INT(check(next, t_new, why), KEEL_PROXY_AUTH_OK);
    KT_EQ_INT(check(next, t_old, why), KEEL_PROXY_AUTH_INVALID); /* not from a's cache */
    KT_CHECK(strstr(why, "bad signature") != NULL);
    keel_proxy_keyset_unref(next);

    /* a set is only made from a valid document of bounded size */
    KT_EQ_INT(keel_proxy_keyset_new("{\"keys\":[{\"kty\":\"oct\"}]}", 25, 1, &a, &msg),
              KEEL_EINVAL);
    KT_CHECK(a == NULL);
    char *big = malloc(KEEL_JWKS_BYTES_MAX + 2);
    memset(big, ' ', KEEL_JWKS_BYTES_MAX + 1);
    KT_EQ_INT(keel_proxy_keyset_new(big, KEEL_JWKS_BYTES_MAX + 1, 1, &a, &msg), KEEL_ETOOBIG);
    free(big);
    keel_proxy_auth_free(&keys); /* drops b */
    keel_proxy_config_free(&cfg);
}

/* Workers verify while worker 0 replaces the set over and over: every request verifies with a
 * whole set (both hold the key), none is lost or freed under it. */
#define SWAP_THREADS 3u
#define SWAP_CALLS 20000u
#define SWAPS 2000u

static keel_proxy_keys_t swap_keys;
static char swap_token[600];

static void *swap_reader(void *arg)
{
    uint64_t *refused = arg;
    char why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    for (uint32_t i = 0; i < SWAP_CALLS; i++) {
        keel_proxy_keyset_t *ks = keel_proxy_keys_acquire(&swap_keys, 0);
        if (ks == NULL || check(ks, swap_token, why) != KEEL_PROXY_AUTH_OK)
            (*refused)++;
        keel_proxy_keyset_unref(ks);
    }
    return NULL;
}

static void key_sets_replaced_under_several_workers_serve_every_request(void)
{
    KT_EQ_INT(parse("remote_jwks: {cluster: auth, path: /jwks.json}"), 0);
    KT_EQ_INT(keel_proxy_auth_load(&cfg, &swap_keys, &errs, 1), 0);
    char doc[256];
    jwks(doc, sizeof(doc), OLD);
    token(swap_token, sizeof(swap_token), OLD);
    keel_errmsg_t msg;
    keel_proxy_keyset_t *ks;
    KT_EQ_INT(keel_proxy_keyset_new(doc, strlen(doc), 1, &ks, &msg), 0);
    keel_proxy_keys_replace(&swap_keys, 0, ks);
    pthread_t th[SWAP_THREADS];
    uint64_t refused[SWAP_THREADS] = {0};
    for (uint32_t t = 0; t < SWAP_THREADS; t++)
        KT_EQ_INT(pthread_create(&th[t], NULL, swap_reader, &refused[t]), 0);
    for (uint32_t i = 0; i < SWAPS; i++) {
        KT_EQ_INT(keel_proxy_keyset_new(doc, strlen(doc), i, &ks, &msg), 0);
        keel_proxy_keys_replace(&swap_keys, 0, ks);
    }
    for (uint32_t t = 0; t < SWAP_THREADS; t++) {
        KT_EQ_INT(pthread_join(th[t], NULL), 0);
        KT_EQ_U64(refused[t], 0);
    }
    KT_EQ_U64(swap_keys.slots[0].cur->refs, 1); /* every request gave its reference back */
    keel_proxy_auth_free(&swap_keys);
    keel_proxy_config_free(&cfg);
}

static void a_failed_fetch_is_retried_with_a_doubling_bounded_jittered_backoff(void)
{
    keel_proxy_remote_jwks_t rj = {
        .cache_duration_ms = 300000, .retry_backoff_base_ms = 1000, .retry_backoff_cap_ms = 30000};
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 0, 12345), 300000); /* a success: cache_duration */
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 1, 0), 1000);
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 2, 0), 2000);
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 5, 0), 16000);
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 6, 0), 30000); /* 32 s, capped */
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, UINT32_MAX, 0), 30000);
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 1, 500), 500); /* jitter: at most half */
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 1, 501), 1000);
    for (uint64_t r = 0; r < 5000; r += 7) {
        keel_ms_t d = keel_proxy_jwks_next_ms(&rj, 3, r * 2654435761u);
        KT_CHECK(d >= 2000 && d <= 4000);
    }
    rj.cache_duration_ms = 1000; /* a failure never waits longer than a success */
    KT_EQ_U64(keel_proxy_jwks_next_ms(&rj, 4, 0), 1000);
}

static int decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    int rc = keel_proxy_auth_pct_decode(in, strlen(in), out, cap, &n);
    if (rc == 0)
        out[n] = 0;
    return rc;
}

static void a_query_token_is_percent_decoded_plus_kept_and_a_malformed_escape_refused(void)
{
    char out[64];
    KT_EQ_INT(decode("eyJh.eyJz.c2ln", out, sizeof(out)), 0);
    KT_EQ_STR(out, "eyJh.eyJz.c2ln");
    KT_EQ_INT(decode("eyJh%2EeyJz%2ec2ln", out, sizeof(out)), 0); /* either case */
    KT_EQ_STR(out, "eyJh.eyJz.c2ln");
    KT_EQ_INT(decode("a+b%2Bc%25", out, sizeof(out)), 0); /* '+' is not a space (RFC 3986) */
    KT_EQ_STR(out, "a+b+c%");
    KT_EQ_INT(decode("", out, sizeof(out)), 0);
    static const char *const malformed[] = {"abc%", "abc%4", "%zz", "%%41", "a%4g", "%G0"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
        KT_EQ_INT(decode(malformed[i], out, sizeof(out)), KEEL_EINVAL);
    KT_EQ_INT(decode("abcd", out, 4), 0);
    KT_EQ_INT(decode("abcde", out, 4), KEEL_ETOOBIG);
    KT_EQ_INT(decode("abc%2E%2E", out, 4), KEEL_ETOOBIG); /* bounded after decoding */
}

int main(void)
{
    KT_RUN(a_remote_jwks_takes_envoys_defaults_and_names_the_line_of_each_error);
    KT_RUN(a_replaced_key_set_serves_its_holders_and_the_next_requests_get_the_new_one);
    KT_RUN(key_sets_replaced_under_several_workers_serve_every_request);
    KT_RUN(a_failed_fetch_is_retried_with_a_doubling_bounded_jittered_backoff);
    KT_RUN(a_query_token_is_percent_decoded_plus_kept_and_a_malformed_escape_refused);
    return kt_done();
}
