/* lru.h - a byte-limited LRU cache with per-entry TTLs: the service kit's L1 cache. */
#ifndef KEEL_CORE_LRU_H
#define KEEL_CORE_LRU_H

#include "base/list.h"
#include "base/map.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The in-process level of the seeds' two-level cache (docs/kit.md): keys and values are
 * bytes, copied in. The cache holds at most bytes_max bytes (keys, values and a fixed
 * overhead per entry, KEEL_LRU_ENTRY_OVERHEAD, so the limit is the memory it costs) and at
 * most entries_max entries; a put that would pass either evicts least recently used
 * entries first. An entry may carry a deadline (now_ms + ttl_ms): a get at or past it
 * misses and drops it. Invalidation (keel_lru_del) is how another instance's change,
 * broadcast over pub/sub, reaches this one. No clock is read here: now_ms comes in.
 */
#define KEEL_LRU_ENTRY_OVERHEAD 96u /* the entry header and the map's slot and key copy */
#define KEEL_LRU_KEY_BYTES_MAX 4096u

typedef struct keel_lru_config {
    size_t bytes_max;   /* > 0 */
    size_t entries_max; /* > 0 */
    uint64_t seed;      /* the map's hash seed */
} keel_lru_config_t;

typedef struct keel_lru_stats {
    uint64_t hits, misses, puts, evictions, expirations, invalidations;
} keel_lru_stats_t;

typedef struct keel_lru {
    keel_lru_config_t cfg;
    keel_map_t map;   /* key -> entry */
    keel_list_t list; /* most recently used first */
    size_t bytes, count;
    keel_lru_stats_t stats;
} keel_lru_t;

int keel_lru_init(keel_lru_t *c, const keel_lru_config_t *cfg);
void keel_lru_free(keel_lru_t *c);
/* 0 and the value (valid until the next call that changes the cache), or KEEL_ENOTFOUND
 * (absent, or expired at now_ms: then dropped). A hit makes the entry most recent. */
int keel_lru_get(keel_lru_t *c, const void *key, size_t key_len, uint64_t now_ms,
                 const uint8_t **val, size_t *val_len);
/* Stores a copy (replacing any), expiring at now_ms + ttl_ms (0: never). KEEL_ETOOBIG if
 * the entry alone is over bytes_max or the key over KEEL_LRU_KEY_BYTES_MAX; KEEL_ENOMEM. */
int keel_lru_put(keel_lru_t *c, const void *key, size_t key_len, const void *val, size_t val_len,
                 uint64_t now_ms, uint64_t ttl_ms);
/* Drops the entry: 0, or KEEL_ENOTFOUND. */
int keel_lru_del(keel_lru_t *c, const void *key, size_t key_len);
void keel_lru_clear(keel_lru_t *c);

#endif
