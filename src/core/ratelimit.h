/* ratelimit.h - token bucket, sliding-window counter, and a keyed limiter with bounded memory. */
#ifndef KEEL_CORE_RATELIMIT_H
#define KEEL_CORE_RATELIMIT_H

#include "base/err.h"
#include "base/ktime.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Three limiters, all answering "allowed" (0) or "rejected, retry after N ms"
 * (KEEL_EREJECTED with *retry_after_ms set to the exact earliest time the same
 * request would pass if nothing else arrives).
 *
 * Token bucket (the classic shaper; nginx limit_req and Envoy's local rate
 * limit use it): tokens_per_period tokens drip in every period_ms, up to burst;
 * a request of cost c takes c tokens. Starts full. Arithmetic is exact in
 * integers: credit is kept in units of 1/period_ms token, so the admitted
 * count over any interval T is at most burst + T * tokens_per_period / period_ms.
 *   defaults: tokens_per_period 100, period_ms 1000, burst 100.
 *
 * Sliding-window counter (Cloudflare, "How we built rate limiting capable of
 * scaling to millions of domains", 2017): counts of the current and previous
 * fixed windows; the estimate is prev * (window_ms - elapsed) / window_ms + curr
 * and a request passes if estimate + cost <= limit. Two counters per limiter
 * instead of a log of timestamps.  defaults: limit 100, window_ms 1000.
 *
 *   token bucket state:   credit --(elapsed * rate, capped at burst)--> credit
 *                         credit >= cost ? credit -= cost, ALLOW : REJECT(retry after)
 *
 * Keyed limiter: one token bucket per client key (an IP, an API key) in a
 * fixed table of keys_max entries allocated at init, 8-way set associative.
 * A new key takes a free way of its set, else the least recently used way if
 * that key has been idle for idle_ms or more. The default idle_ms is the time a
 * bucket takes to refill from empty to burst: a key idle that long has a full
 * bucket, exactly like a new key, so evicting it loses nothing. If every way is
 * busy the request gets KEEL_EFULL: the caller decides (reject, or fall back to
 * a shared limiter). Keys longer than KEEL_RATELIMIT_KEY_BYTES_MAX are
 * KEEL_ETOOBIG.
 */

#define KEEL_RATELIMIT_KEY_BYTES_MAX 64u
#define KEEL_RATELIMIT_WAYS 8u
#define KEEL_RATELIMIT_KEYS_MAX (1u << 24)

typedef struct keel_tokenbucket_config {
    uint64_t tokens_per_period;
    keel_ms_t period_ms;
    uint64_t burst;
} keel_tokenbucket_config_t;

typedef struct keel_tokenbucket {
    keel_tokenbucket_config_t cfg;
    int64_t credit; /* tokens * period_ms */
    keel_ms_t last_ms;
} keel_tokenbucket_t;

void keel_tokenbucket_config_default(keel_tokenbucket_config_t *cfg);
int keel_tokenbucket_config_validate(const keel_tokenbucket_config_t *cfg, keel_errmsg_t *msg);
/* Starts full at now_ms. */
int keel_tokenbucket_init(keel_tokenbucket_t *tb, const keel_tokenbucket_config_t *cfg,
                          keel_ms_t now_ms, keel_errmsg_t *msg);
/* 0, KEEL_EREJECTED (retry_after_ms set), or KEEL_ETOOBIG if cost > burst. */
int keel_tokenbucket_take(keel_tokenbucket_t *tb, keel_ms_t now_ms, uint64_t cost,
                          keel_ms_t *retry_after_ms);
/* Whole tokens available at now_ms (refills, takes nothing). */
uint64_t keel_tokenbucket_available(keel_tokenbucket_t *tb, keel_ms_t now_ms);

typedef struct keel_slidingwindow_config {
    uint64_t limit;
    keel_ms_t window_ms;
} keel_slidingwindow_config_t;

typedef struct keel_slidingwindow {
    keel_slidingwindow_config_t cfg;
    int64_t window_index; /* now_ms / window_ms of curr */
    uint64_t prev, curr;
} keel_slidingwindow_t;

void keel_slidingwindow_config_default(keel_slidingwindow_config_t *cfg);
int keel_slidingwindow_config_validate(const keel_slidingwindow_config_t *cfg, keel_errmsg_t *msg);
int keel_slidingwindow_init(keel_slidingwindow_t *sw, const keel_slidingwindow_config_t *cfg,
                            keel_errmsg_t *msg);
/* 0, KEEL_EREJECTED (retry_after_ms set), or KEEL_ETOOBIG if cost > limit. */
int keel_slidingwindow_take(keel_slidingwindow_t *sw, keel_ms_t now_ms, uint64_t cost,
                            keel_ms_t *retry_after_ms);

typedef struct keel_ratelimit_keyed_config {
    keel_tokenbucket_config_t bucket;
    uint32_t keys_max; /* a multiple of KEEL_RATELIMIT_WAYS */
    keel_ms_t idle_ms; /* 0: the time to refill an empty bucket */
} keel_ratelimit_keyed_config_t;

typedef struct keel__ratelimit_entry {
    uint64_t hash;
    int64_t credit;
    keel_ms_t last_ms; /* last refill, also the LRU clock */
    uint8_t used;
    uint8_t key_bytes;
    char key[KEEL_RATELIMIT_KEY_BYTES_MAX];
} keel__ratelimit_entry_t;

typedef struct keel_ratelimit_keyed {
    keel_ratelimit_keyed_config_t cfg;
    keel__ratelimit_entry_t *entries;
    uint32_t sets;
    uint32_t keys;
    uint64_t evictions, full_rejections;
} keel_ratelimit_keyed_t;

void keel_ratelimit_keyed_config_default(keel_ratelimit_keyed_config_t *cfg);
int keel_ratelimit_keyed_config_validate(const keel_ratelimit_keyed_config_t *cfg,
                                         keel_errmsg_t *msg);
/* Allocates keys_max entries (about 100 bytes each); KEEL_EINVAL or KEEL_ENOMEM. */
int keel_ratelimit_keyed_init(keel_ratelimit_keyed_t *kl, const keel_ratelimit_keyed_config_t *cfg,
                              keel_errmsg_t *msg);
void keel_ratelimit_keyed_free(keel_ratelimit_keyed_t *kl);
/* 0, KEEL_EREJECTED (retry_after_ms set), KEEL_EFULL (no room for a new key), KEEL_ETOOBIG. */
int keel_ratelimit_keyed_take(keel_ratelimit_keyed_t *kl, keel_ms_t now_ms, const void *key,
                              size_t key_bytes, uint64_t cost, keel_ms_t *retry_after_ms);
/* Gives back cost tokens a take of the key got (a request that another limit then refused),
 * up to the burst; nothing if the key was evicted since. */
void keel_ratelimit_keyed_refund(keel_ratelimit_keyed_t *kl, const void *key, size_t key_bytes,
                                 uint64_t cost);

#endif
