/* auth.c - JWKS keys loaded with keel proxy's config, and the Bearer token check per request. */
#include "proxy/auth.h"

#include "base/err.h"
#include "base/hash.h"

#include <openssl/crypto.h>

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole JWKS file, up to the JWKS ceiling (one byte more tells a larger one). */
static char *read_jwks(const char *path, size_t *len, keel_errmsg_t *msg)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        keel_errf(msg, KEEL_EIO, "cannot read %.120s", path);
        return NULL;
    }
    char *buf = malloc(KEEL_JWKS_BYTES_MAX + 2);
    if (buf == NULL) {
        fclose(f);
        keel_errf(msg, KEEL_ENOMEM, "out of memory");
        return NULL;
    }
    *len = fread(buf, 1, KEEL_JWKS_BYTES_MAX + 1, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static void cache_init(keel_proxy_token_cache_t *c, uint64_t seed)
{
    pthread_mutex_init(&c->mu, NULL);
    c->seed = seed;
}

static void entry_clear(keel_proxy_token_entry_t *e)
{
    free(e->token);
    json_decref(e->claims);
    memset(e, 0, sizeof(*e));
}

int keel_proxy_keyset_new(const char *json, size_t len, uint64_t seed, keel_proxy_keyset_t **out,
                          keel_errmsg_t *msg)
{
    *out = NULL;
    if (len > KEEL_JWKS_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "the JWKS is larger than %u bytes",
                         KEEL_JWKS_BYTES_MAX);
    keel_proxy_keyset_t *ks = calloc(1, sizeof(*ks));
    if (ks == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    int rc = keel_jwks_parse(&ks->set, json, len, msg);
    if (rc != 0) {
        free(ks);
        return rc;
    }
    cache_init(&ks->cache, seed);
    ks->refs = 1;
    *out = ks;
    return 0;
}

void keel_proxy_keyset_ref(keel_proxy_keyset_t *ks)
{
    __atomic_add_fetch(&ks->refs, 1, __ATOMIC_RELAXED);
}

void keel_proxy_keyset_unref(keel_proxy_keyset_t *ks)
{
    if (ks == NULL)
        return;
    uint64_t left = __atomic_sub_fetch(&ks->refs, 1, __ATOMIC_ACQ_REL);
    assert(left != UINT64_MAX);
    if (left > 0)
        return;
    keel_jwks_free(&ks->set);
    for (uint32_t j = 0; j < KEEL_PROXY_TOKEN_CACHE_ENTRIES; j++)
        entry_clear(&ks->cache.e[j]);
    pthread_mutex_destroy(&ks->cache.mu);
    free(ks);
}

keel_proxy_keyset_t *keel_proxy_keys_acquire(keel_proxy_keys_t *k, uint32_t i)
{
    assert(i < k->count);
    keel_proxy_keyslot_t *s = &k->slots[i];
    pthread_mutex_lock(&s->mu);
    keel_proxy_keyset_t *ks = s->cur;
    if (ks != NULL) /* under mu: the slot's reference cannot go meanwhile */
        keel_proxy_keyset_ref(ks);
    pthread_mutex_unlock(&s->mu);
    return ks;
}

void keel_proxy_keys_replace(keel_proxy_keys_t *k, uint32_t i, keel_proxy_keyset_t *ks)
{
    assert(i < k->count);
    keel_proxy_keyslot_t *s = &k->slots[i];
    pthread_mutex_lock(&s->mu);
    keel_proxy_keyset_t *old = s->cur;
    s->cur = ks;
    pthread_mutex_unlock(&s->mu);
    keel_proxy_keyset_unref(old); /* outside mu: freeing a set is not a short section */
}

int keel_proxy_auth_load(const keel_proxy_config_t *cfg, keel_proxy_keys_t *out,
                         keel_proxy_errors_t *errs, uint64_t seed)
{
    memset(out, 0, sizeof(*out));
    uint32_t errors = errs->count + errs->dropped;
    if (cfg->jwt_providers_count > 0 &&
        (out->slots = calloc(cfg->jwt_providers_count, sizeof(*out->slots))) == NULL) {
        keel_proxy_errors_add(errs, cfg->jwt_providers[0].line, "out of memory");
        return KEEL_EINVAL;
    }
    for (uint32_t i = 0; i < cfg->jwt_providers_count; i++) {
        const keel_proxy_jwt_provider_t *pv = &cfg->jwt_providers[i];
        keel_errmsg_t msg = {0};
        char line[KEEL_PROXY_ERROR_BYTES_MAX];
        int rc = 0;
        pthread_mutex_init(&out->slots[i].mu, NULL);
        out->count = i + 1;
        uint64_t cseed = seed ^ (0x9e3779b97f4a7c15ull * (i + 1));
        if (pv->jwks_file != NULL) {
            size_t len = 0;
            char *text = read_jwks(pv->jwks_file, &len, &msg);
            rc = text == NULL ? KEEL_EIO
                              : keel_proxy_keyset_new(text, len, cseed, &out->slots[i].cur, &msg);
            free(text);
        } else if (pv->jwks != NULL) {
            rc = keel_proxy_keyset_new(pv->jwks, strlen(pv->jwks), cseed, &out->slots[i].cur, &msg);
        } /* else remote_jwks: no keys until the running proxy fetched them */
        if (rc != 0) {
            snprintf(line, sizeof(line), "jwt provider '%.40s': %.140s", pv->name, msg.text);
            keel_proxy_errors_add(errs, pv->jwks_line, line);
        }
    }
    if (errs->count + errs->dropped != errors) {
        keel_proxy_auth_free(out);
        return KEEL_EINVAL;
    }
    return 0;
}

void keel_proxy_auth_free(keel_proxy_keys_t *k)
{
    for (uint32_t i = 0; i < k->count; i++) {
        keel_proxy_keyset_unref(k->slots[i].cur);
        k->slots[i].cur = NULL;
        pthread_mutex_destroy(&k->slots[i].mu);
    }
    free(k->slots);
    k->slots = NULL;
    k->count = 0;
}

keel_ms_t keel_proxy_jwks_next_ms(const keel_proxy_remote_jwks_t *rj, uint32_t failures,
                                  uint64_t rnd)
{
    if (failures == 0)
        return rj->cache_duration_ms;
    keel_ms_t d = rj->retry_backoff_base_ms;
    for (uint32_t n = 1; n < failures && d < rj->retry_backoff_cap_ms; n++)
        d *= 2; /* at most 16 doublings of >= 100 ms pass the cap (an hour at most) */
    d = keel_ms_min(d, keel_ms_min(rj->retry_backoff_cap_ms, rj->cache_duration_ms));
    keel_ms_t jitter = (keel_ms_t)(rnd % (uint64_t)(d / 2 + 1));
    assert(d > 0 && d - jitter >= d / 2);
    return d - jitter;
}

static int hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int keel_proxy_auth_pct_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (len - i < 3 || hex(in[i + 1]) < 0 || hex(in[i + 2]) < 0)
                return KEEL_EINVAL;
            ch = (char)(hex(in[i + 1]) << 4 | hex(in[i + 2]));
            i += 2;
        }
        if (o >= cap)
            return KEEL_ETOOBIG;
        out[o++] = ch;
    }
    assert(o <= len);
    *out_len = o;
    return 0;
}

/* exp or nbf as whole seconds; def when absent or not a number (a verified token's claims). */
static int64_t claim_time(const json_t *claims, const char *name, int64_t def)
{
    const json_t *v = json_object_get(claims, name);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    return def;
}

static keel_proxy_token_entry_t *cache_slot(keel_proxy_token_cache_t *c, const char *token,
                                            size_t len)
{
    return &c->e[keel_hash64(token, len, c->seed) % KEEL_PROXY_TOKEN_CACHE_ENTRIES];
}

/* A cached verdict for token: the entry, or NULL (not cached). With c->mu held. */
static keel_proxy_token_entry_t *cache_find(keel_proxy_token_cache_t *c, const char *token,
                                            size_t len)
{
    keel_proxy_token_entry_t *e = cache_slot(c, token, len);
    if (e->token == NULL || e->len != len || CRYPTO_memcmp(e->token, token, len) != 0)
        return NULL;
    return e;
}

/* With c->mu held. */
static void cache_put(keel_proxy_token_cache_t *c, const char *token, size_t len,
                      const keel_jwt_t *jwt)
{
    keel_proxy_token_entry_t *e = cache_slot(c, token, len);
    char *copy = malloc(len);
    if (copy == NULL)
        return; /* not cached: the next request verifies again */
    memcpy(copy, token, len);
    entry_clear(e);
    e->token = copy;
    e->len = len;
    e->claims = json_incref(jwt->claims);
    e->alg = jwt->alg;
    e->exp = claim_time(jwt->claims, "exp", INT64_MAX);
    e->nbf = claim_time(jwt->claims, "nbf", INT64_MIN);
}

void keel_proxy_auth_sanitize(const char *text, char *out, size_t cap)
{
    assert(cap > 0);
    size_t o = 0;
    for (const char *p = text; *p && o + 1 < cap; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || (ch != 0 && strchr(" .,:()_-", ch) != NULL);
        out[o++] = ok ? ch : '?';
    }
    out[o] = 0;
}

static int refuse(char *why, const char *text)
{
    keel_proxy_auth_sanitize(text, why, KEEL_PROXY_AUTH_WHY_BYTES_MAX);
    return KEEL_PROXY_AUTH_INVALID;
}

keel_proxy_auth_result_t keel_proxy_auth_refuse(char *why, const char *text)
{
    return (keel_proxy_auth_result_t)refuse(why, text);
}

/* "Bearer" (any case) then one or more spaces then the token (RFC 6750 §2.1); NULL otherwise. */
static const char *bearer(const keel_proxy_auth_value_t *v, size_t *len)
{
    static const char scheme[] = "bearer";
    size_t n = sizeof(scheme) - 1;
    if (v->len <= n || v->ptr[n] != ' ')
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = v->ptr[i];
        if ((ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch) != scheme[i])
            return NULL;
    }
    const char *t = v->ptr + n, *end = v->ptr + v->len;
    while (t < end && *t == ' ')
        t++;
    while (end > t && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *len = (size_t)(end - t);
    return *len > 0 ? t : NULL;
}

static bool aud_has(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

keel_proxy_auth_result_t keel_proxy_auth_verify(const keel_proxy_jwt_provider_t *pv,
                                                const keel_jwks_t *ks,
                                                keel_proxy_token_cache_t *cache,
                                                const keel_proxy_auth_value_t *authz, size_t n,
                                                int64_t now_s, keel_jwt_t *jwt, char *why)
{
    memset(jwt, 0, sizeof(*jwt));
    why[0] = 0;
    if (n == 0)
        return KEEL_PROXY_AUTH_MISSING;
    if (n > 1)
        return refuse(why, "several Authorization fields");
    size_t len = 0;
    const char *token = bearer(&authz[0], &len);
    if (token == NULL)
        return KEEL_PROXY_AUTH_MISSING;
    return keel_proxy_auth_verify_token(pv, ks, cache, token, len, now_s, jwt, why);
}

keel_proxy_auth_result_t keel_proxy_auth_verify_token(const keel_proxy_jwt_provider_t *pv,
                                                      const keel_jwks_t *ks,
                                                      keel_proxy_token_cache_t *cache,
                                                      const char *token, size_t len, int64_t now_s,
                                                      keel_jwt_t *jwt, char *why)
{
    memset(jwt, 0, sizeof(*jwt));
    why[0] = 0;
    if (len == 0)
        return KEEL_PROXY_AUTH_MISSING;
    if (ks == NULL) /* Envoy answers 401 too while its remote JWKS is not fetched */
        return refuse(why, "no keys: the JWKS is not fetched yet");
    if (cache != NULL) {
        /* the entry is read under the cache's mutex: another worker may replace it */
        pthread_mutex_lock(&cache->mu);
        keel_proxy_token_entry_t *hit = cache_find(cache, token, len);
        bool found = hit != NULL;
        const char *refusal = NULL;
        if (found) { /* the bytes were verified; the clock moved on (same rule as jwt.c) */
            int64_t leeway = (int64_t)pv->clock_skew_s;
            if (hit->exp != INT64_MAX && now_s >= hit->exp + leeway) {
                entry_clear(hit);
                refusal = "the token expired";
            } else if (hit->nbf != INT64_MIN && now_s + leeway < hit->nbf) {
                refusal = "the token is not valid yet";
            } else {
                cache->hits++;
                jwt->alg = hit->alg;
                jwt->claims = json_incref(hit->claims); /* ours, whatever becomes of the entry */
            }
        }
        pthread_mutex_unlock(&cache->mu);
        if (refusal != NULL)
            return refuse(why, refusal);
        if (found)
            return KEEL_PROXY_AUTH_OK;
    }
    keel_jwt_rules_t rules = {pv->issuer, NULL, (int64_t)pv->clock_skew_s, pv->require_exp};
    keel_errmsg_t msg = {0};
    if (keel_jwt_verify(ks, token, len, &rules, now_s, jwt, &msg) != 0)
        return refuse(why, msg.text);
    if (pv->audiences_count > 0) { /* one of the audiences (Envoy's rule); jwt.h checks one */
        const json_t *aud = json_object_get(jwt->claims, "aud");
        bool ok = false;
        for (uint32_t i = 0; i < pv->audiences_count && !ok; i++)
            ok = aud_has(aud, pv->audiences[i]);
        if (!ok) {
            keel_jwt_free(jwt);
            return refuse(why, "wrong audience");
        }
    }
    if (cache != NULL) {
        pthread_mutex_lock(&cache->mu);
        cache->misses++;
        cache_put(cache, token, len, jwt);
        pthread_mutex_unlock(&cache->mu);
    }
    return KEEL_PROXY_AUTH_OK;
}
