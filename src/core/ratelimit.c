/* ratelimit.c - token bucket, sliding-window counter, keyed limiter (exact integer arithmetic). */
#include "core/ratelimit.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Bounds that keep credit = burst * period_ms and elapsed * rate inside int64. */
#define BURST_MAX (1ull << 32)
#define RATE_MAX (1ull << 32)
#define PERIOD_MS_MAX (1ll << 27) /* about 37 hours */

void keel_tokenbucket_config_default(keel_tokenbucket_config_t *cfg)
{
    cfg->tokens_per_period = 100;
    cfg->period_ms = 1000;
    cfg->burst = 100;
}

int keel_tokenbucket_config_validate(const keel_tokenbucket_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->tokens_per_period == 0 || cfg->tokens_per_period > RATE_MAX)
        return keel_errf(msg, KEEL_EINVAL, "tokens_per_period must be in 1..2^32");
    if (cfg->period_ms <= 0 || cfg->period_ms > PERIOD_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "period_ms must be in 1..%lld", PERIOD_MS_MAX);
    if (cfg->burst == 0 || cfg->burst > BURST_MAX)
        return keel_errf(msg, KEEL_EINVAL, "burst must be in 1..2^32");
    return 0;
}

int keel_tokenbucket_init(keel_tokenbucket_t *tb, const keel_tokenbucket_config_t *cfg,
                          keel_ms_t now_ms, keel_errmsg_t *msg)
{
    int err = keel_tokenbucket_config_validate(cfg, msg);
    if (err)
        return err;
    tb->cfg = *cfg;
    tb->credit = (int64_t)cfg->burst * cfg->period_ms;
    tb->last_ms = now_ms;
    return 0;
}

static void refill(const keel_tokenbucket_config_t *c, int64_t *credit, keel_ms_t *last_ms,
                   keel_ms_t now_ms)
{
    int64_t cap = (int64_t)c->burst * c->period_ms;
    int64_t rate = (int64_t)c->tokens_per_period;
    keel_ms_t elapsed_ms = now_ms - *last_ms;
    if (elapsed_ms <= 0)
        return; /* same ms, or a clock that stepped back: add nothing */
    if (elapsed_ms > cap / rate + 1)
        *credit = cap;
    else
        *credit = *credit + elapsed_ms * rate > cap ? cap : *credit + elapsed_ms * rate;
    *last_ms = now_ms;
    assert(*credit >= 0 && *credit <= cap);
}

static int bucket_take(const keel_tokenbucket_config_t *c, int64_t *credit, keel_ms_t *last_ms,
                       keel_ms_t now_ms, uint64_t cost, keel_ms_t *retry_after_ms)
{
    if (cost > c->burst)
        return KEEL_ETOOBIG;
    refill(c, credit, last_ms, now_ms);
    int64_t need = (int64_t)cost * c->period_ms;
    if (*credit >= need) {
        *credit -= need;
        return 0;
    }
    int64_t rate = (int64_t)c->tokens_per_period;
    if (retry_after_ms)
        *retry_after_ms = (need - *credit + rate - 1) / rate;
    return KEEL_EREJECTED;
}

int keel_tokenbucket_take(keel_tokenbucket_t *tb, keel_ms_t now_ms, uint64_t cost,
                          keel_ms_t *retry_after_ms)
{
    return bucket_take(&tb->cfg, &tb->credit, &tb->last_ms, now_ms, cost, retry_after_ms);
}

uint64_t keel_tokenbucket_available(keel_tokenbucket_t *tb, keel_ms_t now_ms)
{
    refill(&tb->cfg, &tb->credit, &tb->last_ms, now_ms);
    return (uint64_t)(tb->credit / tb->cfg.period_ms);
}

/* ---- sliding-window counter ------------------------------------------------ */

void keel_slidingwindow_config_default(keel_slidingwindow_config_t *cfg)
{
    cfg->limit = 100;
    cfg->window_ms = 1000;
}

int keel_slidingwindow_config_validate(const keel_slidingwindow_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->limit == 0 || cfg->limit > BURST_MAX)
        return keel_errf(msg, KEEL_EINVAL, "limit must be in 1..2^32");
    if (cfg->window_ms <= 0 || cfg->window_ms > PERIOD_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "window_ms must be in 1..%lld", PERIOD_MS_MAX);
    return 0;
}

int keel_slidingwindow_init(keel_slidingwindow_t *sw, const keel_slidingwindow_config_t *cfg,
                            keel_errmsg_t *msg)
{
    int err = keel_slidingwindow_config_validate(cfg, msg);
    if (err)
        return err;
    memset(sw, 0, sizeof(*sw));
    sw->cfg = *cfg;
    sw->window_index = INT64_MIN;
    return 0;
}

/* Earliest elapsed-in-window e with prev * (W - e) <= room * W, room >= 0. */
static keel_ms_t first_elapsed_with_room(uint64_t prev, uint64_t room, keel_ms_t w_ms)
{
    if (prev == 0)
        return 0;
    uint64_t span = room * (uint64_t)w_ms / prev; /* floor((room * W) / prev) */
    return span >= (uint64_t)w_ms ? 0 : w_ms - (keel_ms_t)span;
}

int keel_slidingwindow_take(keel_slidingwindow_t *sw, keel_ms_t now_ms, uint64_t cost,
                            keel_ms_t *retry_after_ms)
{
    const keel_ms_t w_ms = sw->cfg.window_ms;
    const uint64_t limit = sw->cfg.limit;
    if (cost > limit)
        return KEEL_ETOOBIG;
    int64_t k = now_ms / w_ms;
    if (k > sw->window_index) {
        sw->prev = k == sw->window_index + 1 ? sw->curr : 0;
        sw->curr = 0;
        sw->window_index = k;
    }
    keel_ms_t e_ms = now_ms - k * w_ms;
    /* estimate * W = prev * (W - e) + curr * W; compare without division */
    if (sw->curr + cost <= limit &&
        sw->prev * (uint64_t)(w_ms - e_ms) <= (limit - sw->curr - cost) * (uint64_t)w_ms) {
        sw->curr += cost;
        return 0;
    }
    if (retry_after_ms) {
        if (sw->curr + cost <= limit) {
            *retry_after_ms =
                first_elapsed_with_room(sw->prev, limit - sw->curr - cost, w_ms) - e_ms;
        } else {
            /* next window: prev becomes curr, curr becomes 0 */
            *retry_after_ms = (w_ms - e_ms) + first_elapsed_with_room(sw->curr, limit - cost, w_ms);
        }
        assert(*retry_after_ms > 0);
    }
    return KEEL_EREJECTED;
}

/* ---- keyed limiter ---------------------------------------------------------- */

void keel_ratelimit_keyed_config_default(keel_ratelimit_keyed_config_t *cfg)
{
    keel_tokenbucket_config_default(&cfg->bucket);
    cfg->keys_max = 65536;
    cfg->idle_ms = 0;
}

int keel_ratelimit_keyed_config_validate(const keel_ratelimit_keyed_config_t *cfg,
                                         keel_errmsg_t *msg)
{
    int err = keel_tokenbucket_config_validate(&cfg->bucket, msg);
    if (err)
        return err;
    if (cfg->keys_max < KEEL_RATELIMIT_WAYS || cfg->keys_max % KEEL_RATELIMIT_WAYS != 0 ||
        cfg->keys_max > KEEL_RATELIMIT_KEYS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "keys_max must be a multiple of %u in %u..%u",
                         KEEL_RATELIMIT_WAYS, KEEL_RATELIMIT_WAYS, KEEL_RATELIMIT_KEYS_MAX);
    if (cfg->idle_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "idle_ms must be >= 0");
    return 0;
}

int keel_ratelimit_keyed_init(keel_ratelimit_keyed_t *kl, const keel_ratelimit_keyed_config_t *cfg,
                              keel_errmsg_t *msg)
{
    int err = keel_ratelimit_keyed_config_validate(cfg, msg);
    if (err)
        return err;
    memset(kl, 0, sizeof(*kl));
    kl->cfg = *cfg;
    if (kl->cfg.idle_ms == 0) {
        const keel_tokenbucket_config_t *b = &cfg->bucket;
        int64_t rate = (int64_t)b->tokens_per_period;
        kl->cfg.idle_ms = ((int64_t)b->burst * b->period_ms + rate - 1) / rate;
    }
    kl->sets = cfg->keys_max / KEEL_RATELIMIT_WAYS;
    kl->entries = calloc(cfg->keys_max, sizeof(*kl->entries));
    if (!kl->entries)
        return keel_errf(msg, KEEL_ENOMEM, "keyed limiter of %u keys", cfg->keys_max);
    return 0;
}

void keel_ratelimit_keyed_free(keel_ratelimit_keyed_t *kl)
{
    free(kl->entries);
    kl->entries = NULL;
}

/* FNV-1a 64 (Fowler, Noll, Vo), finished with a xor-shift so the low bits pick sets well. */
static uint64_t key_hash(const void *key, size_t n)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

/* The entry for key in its set: found, a free way, an idle victim, or NULL if all are busy. */
static keel__ratelimit_entry_t *find_or_claim(keel_ratelimit_keyed_t *kl, keel_ms_t now_ms,
                                              uint64_t h, const void *key, size_t n)
{
    keel__ratelimit_entry_t *set = &kl->entries[(h % kl->sets) * KEEL_RATELIMIT_WAYS];
    keel__ratelimit_entry_t *free_way = NULL, *lru = NULL;
    for (uint32_t i = 0; i < KEEL_RATELIMIT_WAYS; i++) {
        keel__ratelimit_entry_t *e = &set[i];
        if (!e->used) {
            free_way = free_way ? free_way : e;
            continue;
        }
        if (e->hash == h && e->key_bytes == n && memcmp(e->key, key, n) == 0)
            return e;
        if (!lru || e->last_ms < lru->last_ms)
            lru = e;
    }
    keel__ratelimit_entry_t *e = free_way;
    if (!e) {
        if (now_ms - lru->last_ms < kl->cfg.idle_ms)
            return NULL;
        e = lru;
        kl->evictions++;
        kl->keys--;
    }
    e->used = 1;
    e->hash = h;
    e->key_bytes = (uint8_t)n;
    memcpy(e->key, key, n);
    e->credit = (int64_t)kl->cfg.bucket.burst * kl->cfg.bucket.period_ms;
    e->last_ms = now_ms;
    kl->keys++;
    return e;
}

int keel_ratelimit_keyed_take(keel_ratelimit_keyed_t *kl, keel_ms_t now_ms, const void *key,
                              size_t key_bytes, uint64_t cost, keel_ms_t *retry_after_ms)
{
    if (key_bytes > KEEL_RATELIMIT_KEY_BYTES_MAX || cost > kl->cfg.bucket.burst)
        return KEEL_ETOOBIG;
    keel__ratelimit_entry_t *e =
        find_or_claim(kl, now_ms, key_hash(key, key_bytes), key, key_bytes);
    if (!e) {
        kl->full_rejections++;
        return KEEL_EFULL;
    }
    /*
     * The bucket's last refill time doubles as the LRU clock. A rejected request
     * refills too (bucket_take always refills), so a client hammering a drained
     * bucket stays recent and is not evicted into a fresh, full one.
     */
    return bucket_take(&kl->cfg.bucket, &e->credit, &e->last_ms, now_ms, cost, retry_after_ms);
}

void keel_ratelimit_keyed_refund(keel_ratelimit_keyed_t *kl, const void *key, size_t key_bytes,
                                 uint64_t cost)
{
    if (key_bytes > KEEL_RATELIMIT_KEY_BYTES_MAX || cost > kl->cfg.bucket.burst)
        return;
    uint64_t h = key_hash(key, key_bytes);
    keel__ratelimit_entry_t *set = &kl->entries[(h % kl->sets) * KEEL_RATELIMIT_WAYS];
    int64_t cap = (int64_t)kl->cfg.bucket.burst * kl->cfg.bucket.period_ms;
    int64_t back = (int64_t)cost * kl->cfg.bucket.period_ms;
    for (uint32_t i = 0; i < KEEL_RATELIMIT_WAYS; i++) {
        keel__ratelimit_entry_t *e = &set[i];
        if (e->used && e->hash == h && e->key_bytes == key_bytes &&
            memcmp(e->key, key, key_bytes) == 0) {
            e->credit = e->credit + back > cap ? cap : e->credit + back;
            return;
        }
    }
}
