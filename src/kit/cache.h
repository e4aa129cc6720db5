/* cache.h - the seeds' two-level cache: an in-process L1, a shared L2 in keel server,
 * invalidation broadcast over pub/sub, and one loader per key. */
#ifndef KEEL_KIT_CACHE_H
#define KEEL_KIT_CACHE_H

#include "base/err.h"
#include "base/list.h"
#include "base/map.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "client/client.h"
#include "core/lru.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT
 *
 *     keel_cache_config_t cfg = keel_cache_config_default("products", "127.0.0.1:7001,...");
 *     cfg.load = load_product;            // the source of truth (a database, a service)
 *     keel_cache_init(&cache, &loop, &cfg, &msg);
 *
 *     const uint8_t *v; size_t n;
 *     int rc = keel_cache_get(&cache, "sku-42", &v, &n, on_value, ctx);
 *     if (rc == 1)  ... an L1 hit: v/n hold the value (valid until the next cache call) ...
 *     if (rc == 0)  ... on_value(cache, ctx, status, v, n) runs later, never inside the get
 *     if (rc < 0)   ... KEEL_EINVAL (a key over KEEL_CACHE_KEY_BYTES_MAX), KEEL_EFULL ...
 *
 *     // after changing the source of truth:
 *     keel_cache_invalidate(&cache, "sku-42", on_done, ctx);
 *
 * The levels. L1 is this process's LRU (core/lru: byte and entry limits, a TTL). L2 is
 * keel server: key "cache:<name>:<key>", each value with a TTL (l2_ttl_ms), shared by every
 * instance of the service. A get tries L1, then L2, then calls the loader, and fills L2 and
 * L1 with what the loader returns. keel server unreachable is not an outage of the
 * service: the get goes to the loader (counted as an L2 error).
 *
 * One loader per key. Gets of a key while its L2 read or its load is under way wait for
 * that one (at most KEEL_CACHE_WAITERS_MAX each): a cold popular key costs the source one
 * load per instance, not one per request.
 *
 * Invalidation. keel_cache_invalidate() drops the key from this L1, writes a short-lived
 * tombstone over the L2 value (tombstone_ms), and then, once keel server has applied it,
 * PUBLISHes "<unix_ms> <instance> <key>" on channel "keel.cache.<name>". Every instance
 * subscribes to that channel on a connection of its own and drops the key from its L1.
 * The tombstone closes the classic race of cache-aside: a load that read the source
 * before the change cannot put the old value back, because fills use SET NX (they never
 * replace anything, a tombstone included). Gets during the tombstone's life go to the
 * loader and fill nothing.
 *
 * What bounds staleness. L1 is used only while the invalidation feed is subscribed: when
 * the feed's connection breaks, L1 is cleared and bypassed until it is subscribed again
 * (messages sent meanwhile are lost with the connection). A load that an invalidation
 * overtook answers its waiters but fills no L1. Pub/sub is not in the Raft log: a message
 * lost without the connection breaking (a node dying after the PUBLISH was answered) is
 * covered by l1_ttl_ms, the longest an L1 entry lives. docs/kit.md has the whole story.
 *
 * One loop, one thread; nothing here is thread-safe. Lifecycle: init -> get/invalidate
 * -> close(cb); free the struct in cb.
 */
#define KEEL_CACHE_NAME_BYTES_MAX 64u
#define KEEL_CACHE_KEY_BYTES_MAX 512u
#define KEEL_CACHE_VALUE_BYTES_MAX (4u << 20) /* one value, in L1 and L2 */
#define KEEL_CACHE_WAITERS_MAX 1024u          /* gets waiting on one key's load */
#define KEEL_CACHE_PENDING_MAX 65536u         /* keys being read or loaded at once */
#define KEEL_CACHE_INSTANCE_BYTES 17u         /* 16 hex digits and the NUL */

typedef struct keel_cache keel_cache_t;
typedef struct keel_cache_load keel_cache_load_t;

/* A get's answer: status 0 and the value (borrowed: copy what you keep), KEEL_ENOTFOUND
 * (the loader said so, or there is no loader), a loader's error, or KEEL_ECANCELED
 * (closed first). */
typedef void (*keel_cache_get_fn)(keel_cache_t *c, void *ctx, int status, const uint8_t *val,
                                  size_t len);
/* The loader: fetch key from the source of truth and call keel_cache_load_done(ld, ...)
 * exactly once, now or later. */
typedef void (*keel_cache_load_fn)(keel_cache_t *c, keel_cache_load_t *ld, const char *key,
                                   void *data);
/* invalidate done: 0 once L2 holds the change and the broadcast was sent, else the
 * error (L1 of this instance is correct either way; others' L1 may keep the old value up
 * to l1_ttl_ms). */
typedef void (*keel_cache_done_fn)(keel_cache_t *c, void *ctx, int status);

typedef struct keel_cache_config {
    const char *name;        /* names the L2 keys and the channel; [A-Za-z0-9_.-], 1..63 */
    const char *seeds;       /* keel server, "host:port,host:port" */
    size_t l1_bytes_max;     /* default 64 MiB */
    size_t l1_entries_max;   /* default 1,000,000 */
    keel_ms_t l1_ttl_ms;     /* default 10000; 0: entries only leave by LRU or invalidation */
    keel_ms_t l2_ttl_ms;     /* default 300000 (> 0) */
    keel_ms_t tombstone_ms;  /* default 2000 (> 0): longer than a load takes */
    keel_ms_t timeout_ms;    /* an L2 request's deadline; default 1000 */
    keel_cache_load_fn load; /* NULL: a miss in both levels answers KEEL_ENOTFOUND */
    void *data;              /* for load */
    keel_metrics_t *metrics; /* may be NULL */
    uint64_t seed;           /* the instance id and hash seeds; 0: from the clock and pid */
} keel_cache_config_t;

typedef struct keel_cache_stats {
    uint64_t l1_hits, l2_hits, misses;  /* misses: answered by the loader (or not found) */
    uint64_t loads, load_errors, waits; /* waits: gets that joined a read or load under way */
    uint64_t l2_errors, fills, fills_refused;
    uint64_t invalidations_sent, invalidations_received, feed_resets;
} keel_cache_stats_t;

struct keel_cache {
    keel_loop_t *loop;
    keel_cache_config_t cfg;
    char name[KEEL_CACHE_NAME_BYTES_MAX];
    char channel[KEEL_CACHE_NAME_BYTES_MAX + 16];
    char instance[KEEL_CACHE_INSTANCE_BYTES];
    keel_lru_t l1;
    keel_map_t pending; /* key -> the keel_cache_load_t a new get of it joins */
    keel_list_t loads;  /* every keel_cache_load_t not yet answered */
    keel_client_t *cmd, *feed;
    bool live; /* the feed is subscribed: L1 may be used */
    bool closing;
    int closes_left;
    void (*closed)(keel_cache_t *c);
    keel_cache_stats_t stats;
    keel_counter_t *m_l1_hits, *m_l2_hits, *m_misses, *m_loads, *m_load_errors, *m_l2_errors;
    keel_counter_t *m_inv_sent, *m_inv_recv, *m_resets;
    keel_histogram_t *m_lag;
};

keel_cache_config_t keel_cache_config_default(const char *name, const char *seeds);
int keel_cache_init(keel_cache_t *c, keel_loop_t *loop, const keel_cache_config_t *cfg,
                    keel_errmsg_t *msg);

/* 1: an L1 hit (*val, *len: valid until the next call into the cache); 0: fn runs later;
 * < 0: refused, fn never runs. */
int keel_cache_get(keel_cache_t *c, const char *key, const uint8_t **val, size_t *len,
                   keel_cache_get_fn fn, void *ctx);
/* The loader's answer: status 0 with the value, KEEL_ENOTFOUND, or another error
 * (answered to the waiters, nothing cached). */
void keel_cache_load_done(keel_cache_load_t *ld, int status, const void *val, size_t len);

/* Drop: this L1 now, a tombstone in L2, then the broadcast. fn may be NULL. */
int keel_cache_invalidate(keel_cache_t *c, const char *key, keel_cache_done_fn fn, void *ctx);

/* True while the invalidation feed is subscribed (L1 in use). */
bool keel_cache_live(const keel_cache_t *c);
const keel_cache_stats_t *keel_cache_stats(const keel_cache_t *c);

/* Waiting gets get KEEL_ECANCELED now; closed (may be NULL) runs when the struct may be
 * freed. Loads under way may still call keel_cache_load_done(): it is then a no-op. */
void keel_cache_close(keel_cache_t *c, void (*closed)(keel_cache_t *c));

#endif
