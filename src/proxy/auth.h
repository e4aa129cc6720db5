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

/*
 * One JWKS and the cache of the tokens its keys verified, refcounted: a provider's keys in
 * force (a keyslot) are replaced whole when a remote_jwks refresh brings new ones, while
 * requests on any worker that took the old set finish with it; the last reference frees it.
 * The cache goes with the set, so a rotation that drops a key also forgets the tokens it
 * verified.
 */
typedef struct keel_proxy_keyset {
    uint64_t refs; /* atomic */
    keel_jwks_t set;
    keel_proxy_token_cache_t cache;
} keel_proxy_keyset_t;

/*
 * A provider's keys in force, shared by every worker: `cur` is read (and a reference taken)
 * or replaced under `mu`, a section of a few instructions (no parse, no signature check, no
 * free under it). NULL until a remote_jwks provider's first fetch succeeds: a request with a
 * token is then refused (Envoy: the JWKS fetch failed, the token cannot be verified).
 */
typedef struct keel_proxy_keyslot {
    pthread_mutex_t mu;
    keel_proxy_keyset_t *cur; /* a reference, or NULL */
} keel_proxy_keyslot_t;

typedef struct keel_proxy_keys {
    keel_proxy_keyslot_t *slots; /* one per cfg->jwt_providers (allocated: the struct moves) */
    uint32_t count;
} keel_proxy_keys_t;

/* 0 and out filled (free with keel_proxy_auth_free), or KEEL_EINVAL with errs appended to (out
 * holds nothing then). seed seeds the token caches' hash. A remote_jwks provider's slot is left
 * empty: the running proxy fetches its keys (proxy_jwks.c). */
int keel_proxy_auth_load(const keel_proxy_config_t *cfg, keel_proxy_keys_t *out,
                         keel_proxy_errors_t *errs, uint64_t seed);
void keel_proxy_auth_free(keel_proxy_keys_t *k);

/* A key set parsed from a JWKS document of len bytes (at most KEEL_JWKS_BYTES_MAX), its token
 * cache seeded with seed, with one reference (the caller's). 0, or KEEL_EINVAL / KEEL_ETOOBIG /
 * KEEL_ENOMEM with msg. */
int keel_proxy_keyset_new(const char *json, size_t len, uint64_t seed, keel_proxy_keyset_t **out,
                          keel_errmsg_t *msg);
void keel_proxy_keyset_ref(keel_proxy_keyset_t *ks);
void keel_proxy_keyset_unref(keel_proxy_keyset_t *ks); /* NULL: nothing */
/* Provider i's keys in force, with a reference for the caller (release with
 * keel_proxy_keyset_unref), or NULL when it has none yet. */
keel_proxy_keyset_t *keel_proxy_keys_acquire(keel_proxy_keys_t *k, uint32_t i);
/* Puts ks (its reference taken over; NULL empties the slot) in force for provider i; the set
 * it replaces loses the slot's reference (freed once no request holds it). */
void keel_proxy_keys_replace(keel_proxy_keys_t *k, uint32_t i, keel_proxy_keyset_t *ks);

/*
 * When to fetch a remote_jwks again: cache_duration_ms after a success (failures 0); after the
 * n-th failure in a row, d = retry_backoff_base_ms * 2^(n-1), capped at retry_backoff_cap_ms
 * and at cache_duration_ms (a failure never waits longer than a success would), less up to half
 * of d from rnd (jitter: proxies restarted together do not fetch in step): within [d/2, d].
 * Pure.
 */
keel_ms_t keel_proxy_jwks_next_ms(const keel_proxy_remote_jwks_t *rj, uint32_t failures,
                                  uint64_t rnd);

/*
 * A token taken from a query parameter, percent-decoded (RFC 3986 §2.1: "%" and two hex digits,
 * either case, are one byte), as Envoy's from_params: '+' stays '+' (RFC 3986 gives it no
 * meaning in a query; the form encoding's '+' for space is not applied, as Envoy does not), and
 * a '%' not followed by two hex digits is malformed. out has room for cap bytes. 0 and *out_len;
 * KEEL_EINVAL malformed; KEEL_ETOOBIG when the decoded token would pass cap. Pure.
 */
int keel_proxy_auth_pct_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len);

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

/* ks NULL: the provider has no keys yet (a remote_jwks not fetched): a token is refused. cache
 * may be NULL (no caching). */
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
