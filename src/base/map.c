/* map.c - linear-probing hash map with backward-shift deletion. */
#include "base/map.h"

#include "base/err.h"
#include "base/hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define CAP_MIN 8

static size_t cap_for(size_t count)
{
    size_t cap = CAP_MIN;
    while (cap / 4 * 3 < count)
        cap *= 2;
    return cap;
}

int keel_map_init(keel_map_t *m, size_t count_hint, size_t count_max, uint64_t seed)
{
    memset(m, 0, sizeof(*m));
    m->count_max = count_max ? count_max : KEEL_MAP_COUNT_MAX_DEFAULT;
    m->seed = seed;
    m->cap = cap_for(count_hint);
    m->slots = calloc(m->cap, sizeof(*m->slots));
    return m->slots ? 0 : KEEL_ENOMEM;
}

void keel_map_free(keel_map_t *m, void (*free_value)(void *))
{
    if (m->slots == NULL)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == NULL)
            continue;
        free(m->slots[i].key);
        if (free_value)
            free_value(m->slots[i].value);
    }
    free(m->slots);
    m->slots = NULL;
    m->count = m->cap = 0;
}

static size_t find(const keel_map_t *m, uint64_t h, const void *key, size_t key_len, int *found)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const keel_map_slot_t *s = &m->slots[i];
        if (s->key == NULL) {
            *found = 0;
            return i;
        }
        if (s->hash == h && s->key_len == key_len && memcmp(s->key, key, key_len) == 0) {
            *found = 1;
            return i;
        }
    }
}

void **keel_map_get(const keel_map_t *m, const void *key, size_t key_len)
{
    int found;
    uint64_t h = keel_hash64(key, key_len, m->seed);
    size_t i = find(m, h, key, key_len, &found);
    return found ? &m->slots[i].value : NULL;
}

static int grow(keel_map_t *m)
{
    size_t ncap = m->cap * 2;
    keel_map_slot_t *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        keel_map_slot_t *s = &m->slots[i];
        if (s->key == NULL)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key != NULL)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int keel_map_put(keel_map_t *m, const void *key, size_t key_len, void *value, void **old)
{
    int found;
    uint64_t h = keel_hash64(key, key_len, m->seed);
    size_t i = find(m, h, key, key_len, &found);
    if (found) {
        if (old)
            *old = m->slots[i].value;
        m->slots[i].value = value;
        return 1;
    }
    if (m->count >= m->count_max)
        return KEEL_EFULL;
    if (m->count + 1 > m->cap / 4 * 3) {
        int rc = grow(m);
        if (rc != 0)
            return rc;
        i = find(m, h, key, key_len, &found);
    }
    uint8_t *k = malloc(key_len ? key_len : 1);
    if (k == NULL)
        return KEEL_ENOMEM;
    memcpy(k, key, key_len);
    m->slots[i] = (keel_map_slot_t){h, k, key_len, value};
    m->count++;
    return 0;
}

int keel_map_del(keel_map_t *m, const void *key, size_t key_len, void **old)
{
    int found;
    uint64_t h = keel_hash64(key, key_len, m->seed);
    size_t i = find(m, h, key, key_len, &found);
    if (!found)
        return KEEL_ENOTFOUND;
    if (old)
        *old = m->slots[i].value;
    free(m->slots[i].key);
    m->count--;
    /* Backward shift: pull later members of the probe run into the hole while
     * that does not move them before their home slot. */
    size_t mask = m->cap - 1, hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        /* j may move to hole iff home is not in the cyclic interval (hole, j]. */
        int in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = (keel_map_slot_t){0};
    return 0;
}

int keel_map_next(const keel_map_t *m, size_t *pos, const uint8_t **key, size_t *key_len,
                  void **value)
{
    for (size_t i = *pos; i < m->cap; i++) {
        if (m->slots[i].key != NULL) {
            *key = m->slots[i].key;
            *key_len = m->slots[i].key_len;
            *value = m->slots[i].value;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = m->cap;
    return 0;
}
