/* auth.h - keel proxy's JWT authentication: keys loaded with the config, tokens checked per
 * request against a provider's rules (docs/proxy.md, "JWT authentication"). */
#ifndef KEEL_PROXY_AUTH_H
#define KEEL_PROXY_AUTH_H

#include "proto/jwt.h"
#include "proxy/config.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Keys are loaded each time a config is (keel proxy --check, start, every reload): a JWKS
 * file that changed is read again by a reload, and one that cannot be read or parsed refuses
 * the config, its error on the line of the provider's jwks_file (or jwks), as parse errors
 * are. The per-request check (keel_proxy_auth_verify) reads no file and no clock.
 */
#define KEEL_PROXY_AUTH_WHY_BYTES_MAX 96u /* error_description, sanitized */

/*
 * Verified tokens are cached per provider (Envoy's jwt_cache_config does the same): clients
 * send one token many times, and a signature check costs more than the rest of a request
 * (bench/proxy_jwt.sh). A direct-mapped table of KEEL_PROXY_TOKEN_CACHE_ENTRIES slots, indexed
 * by a hash of the whole token seeded per config load (a client cannot aim at a slot); an entry
 * is the token's bytes (compared whole, in constant time) and its verified claims. A hit skips
 * the signature, issuer and audience checks (they depend on the bytes only) but not the clock:
 * exp and nbf are checked again at each hit. Only verified tokens enter. Bounded: at most
 * ENTRIES tokens of at most KEEL_JWT_TOKEN_BYTES_MAX each per provider; the cache goes with the
 * keys, so a reload (new keys) starts it empty. The keys, and so the caches, are shared by every
 * worker of keel proxy (one per thread): each cache is guarded by its mutex, held only to look
 * up, copy out or replace an entry (never across a signature check). Under it a hit takes its
 * own reference to the claims (jansson's reference counts are atomic), so an entry replaced by
 * another worker meanwhile cannot free what a request still reads.
 */
#define KEEL_PROXY_TOKEN_CACHE_ENTRIES 256u

typedef struct keel_proxy_token_entry {
    char *token; /* NULL: empty slot */
    size_t len;
    json_t *claims; /* a reference */
    keel_jwt_alg_t alg;
    int64_t exp, nbf; /* INT64_MAX / INT64_MIN when absent */
} keel_proxy_token_entry_t;

typedef struct keel_proxy_token_cache {
    pthread_mutex_t mu; /* guards e, hits and misses */
    keel_proxy_token_entry_t e[KEEL_PROXY_TOKEN_CACHE_ENTRIES];
    uint64_t seed;
    uint64_t hits, misses;
} keel_proxy_token_cache_t;

typedef struct keel_proxy_keys {
    keel_jwks_t sets[KEEL_PROXY_JWT_PROVIDERS_MAX]; /* one per cfg->jwt_providers */
    keel_proxy_token_cache_t *caches[KEEL_PROXY_JWT_PROVIDERS_MAX];
    uint32_t count;
} keel_proxy_keys_t;

/* 0 and out filled (free with keel_proxy_auth_free), or KEEL_EINVAL with errs appended to (out
 * holds nothing then). seed seeds the token caches' hash. */
int keel_proxy_auth_load(const keel_proxy_config_t *cfg, keel_proxy_keys_t *out,
                         keel_proxy_errors_t *errs, uint64_t seed);
void keel_proxy_auth_free(keel_proxy_keys_t *k);

typedef enum keel_proxy_auth_result {
    KEEL_PROXY_AUTH_OK,      /* *jwt holds the verified claims (free with keel_jwt_free) */
    KEEL_PROXY_AUTH_MISSING, /* no Bearer token */
    KEEL_PROXY_AUTH_INVALID, /* refused; why says why */
} keel_proxy_auth_result_t;

/*
 * Checks the Authorization field values of a request (authz[0..n), NULL/0 when it has none)
 * against provider pv with keys ks at now_s (Unix seconds). A field whose scheme is not
 * Bearer (RFC 6750 §2.1, case-insensitive) carries no token. Several Authorization fields are
 * refused: an upstream could read another one than the proxy checked. why (at least
 * KEEL_PROXY_AUTH_WHY_BYTES_MAX) gets a reason fit for error_description: only letters,
 * digits, space and ".,:()_-" survive, anything else (bytes a client chose, such as a kid or
 * an alg name) becomes '?', so no attacker byte is echoed raw and the quoted string stays one.
 */
typedef struct keel_proxy_auth_value {
    const char *ptr;
    size_t len;
} keel_proxy_auth_value_t;

/* cache may be NULL (no caching). */
keel_proxy_auth_result_t keel_proxy_auth_verify(const keel_proxy_jwt_provider_t *pv,
                                                const keel_jwks_t *ks,
                                                keel_proxy_token_cache_t *cache,
                                                const keel_proxy_auth_value_t *authz, size_t n,
                                                int64_t now_s, keel_jwt_t *jwt, char *why);

/* The same for one token taken from wherever the provider looks (from_headers, from_params,
   the access_token parameter): len 0 is KEEL_PROXY_AUTH_MISSING. */
keel_proxy_auth_result_t keel_proxy_auth_verify_token(const keel_proxy_jwt_provider_t *pv,
                                                      const keel_jwks_t *ks,
                                                      keel_proxy_token_cache_t *cache,
                                                      const char *token, size_t len, int64_t now_s,
                                                      keel_jwt_t *jwt, char *why);
/* A reason for refusing a request with a token in more than one place. */
keel_proxy_auth_result_t keel_proxy_auth_refuse(char *why, const char *text);

/* Copies text into out (cap bytes with the NUL) keeping only [A-Za-z0-9 .,:()_-]. */
void keel_proxy_auth_sanitize(const char *text, char *out, size_t cap);

#endif
