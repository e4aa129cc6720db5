/* lru.c - a byte-limited LRU cache with per-entry TTLs. */
#include "core/lru.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

typedef struct lru_entry {
    keel_list_t link;
    uint64_t expire_ms; /* 0: never */
    size_t key_len, val_len;
    uint8_t data[]; /* key, then value */
} lru_entry_t;

static size_t cost(size_t key_len, size_t val_len)
{
    return KEEL_LRU_ENTRY_OVERHEAD + 2 * key_len + val_len; /* the map keeps its own key copy */
}

int keel_lru_init(keel_lru_t *c, const keel_lru_config_t *cfg)
{
    memset(c, 0, sizeof(*c));
    if (cfg->bytes_max == 0 || cfg->entries_max == 0)
        return KEEL_EINVAL;
    c->cfg = *cfg;
    keel_list_init(&c->list);
    return keel_map_init(&c->map, 64, cfg->entries_max, cfg->seed);
}

static void drop(keel_lru_t *c, lru_entry_t *e)
{
    void *old = NULL;
    keel_map_del(&c->map, e->data, e->key_len, &old);
    keel_list_remove(&e->link);
    c->bytes -= cost(e->key_len, e->val_len);
    c->count--;
    free(e);
}

void keel_lru_clear(keel_lru_t *c)
{
    keel_list_t *l;
    while ((l = keel_list_first(&c->list)) != NULL)
        drop(c, KEEL_LIST_ENTRY(l, lru_entry_t, link));
}

void keel_lru_free(keel_lru_t *c)
{
    keel_lru_clear(c);
    keel_map_free(&c->map, NULL);
}

static lru_entry_t *find(const keel_lru_t *c, const void *key, size_t key_len)
{
    void **v = keel_map_get(&c->map, key, key_len);
    return v ? *v : NULL;
}

int keel_lru_get(keel_lru_t *c, const void *key, size_t key_len, uint64_t now_ms,
                 const uint8_t **val, size_t *val_len)
{
    lru_entry_t *e = find(c, key, key_len);
    if (e != NULL && e->expire_ms != 0 && now_ms >= e->expire_ms) {
        drop(c, e);
        c->stats.expirations++;
        e = NULL;
    }
    if (e == NULL) {
        c->stats.misses++;
        return KEEL_ENOTFOUND;
    }
    keel_list_remove(&e->link);
    keel_list_insert_head(&c->list, &e->link);
    c->stats.hits++;
    *val = e->data + e->key_len;
    *val_len = e->val_len;
    return 0;
}

int keel_lru_put(keel_lru_t *c, const void *key, size_t key_len, const void *val, size_t val_len,
                 uint64_t now_ms, uint64_t ttl_ms)
{
    if (key_len > KEEL_LRU_KEY_BYTES_MAX || cost(key_len, val_len) > c->cfg.bytes_max)
        return KEEL_ETOOBIG;
    lru_entry_t *old = find(c, key, key_len);
    if (old != NULL)
        drop(c, old);
    /* room first: the least recently used go */
    keel_list_t *l;
    while ((c->bytes + cost(key_len, val_len) > c->cfg.bytes_max ||
            c->count + 1 > c->cfg.entries_max) &&
           (l = keel_list_last(&c->list)) != NULL) {
        drop(c, KEEL_LIST_ENTRY(l, lru_entry_t, link));
        c->stats.evictions++;
    }
    lru_entry_t *e = malloc(sizeof(*e) + key_len + val_len);
    if (e == NULL)
        return KEEL_ENOMEM;
    keel_list_init(&e->link);
    e->expire_ms = ttl_ms ? now_ms + ttl_ms : 0;
    e->key_len = key_len;
    e->val_len = val_len;
    if (key_len)
        memcpy(e->data, key, key_len);
    if (val_len)
        memcpy(e->data + key_len, val, val_len);
    int rc = keel_map_put(&c->map, e->data, key_len, e, NULL);
    if (rc < 0) {
        free(e);
        return rc;
    }
    keel_list_insert_head(&c->list, &e->link);
    c->bytes += cost(key_len, val_len);
    c->count++;
    c->stats.puts++;
    return 0;
}

int keel_lru_del(keel_lru_t *c, const void *key, size_t key_len)
{
    lru_entry_t *e = find(c, key, key_len);
    if (e == NULL)
        return KEEL_ENOTFOUND;
    drop(c, e);
    c->stats.invalidations++;
    return 0;
}
