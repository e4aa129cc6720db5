/* map.h - open-addressing hash map from byte-string keys to pointers. */
#ifndef KEEL_BASE_MAP_H
#define KEEL_BASE_MAP_H

#include <stddef.h>
#include <stdint.h>

/*
 * Linear probing over a power-of-two table, load factor at most 3/4, with
 * backward-shift deletion (no tombstones, so probe lengths do not decay under
 * churn). The map copies keys and owns the copies; values are the caller's
 * pointers. `count_max` bounds the number of entries: a put beyond it fails
 * with KEEL_EFULL, so no input can grow the table without limit.
 *
 * Iteration order is the table order; a put or delete during iteration may
 * reorder entries (restart the iteration after changing the map).
 */
typedef struct keel_map_slot {
    uint64_t hash;
    uint8_t *key; /* NULL: empty slot */
    size_t key_len;
    void *value;
} keel_map_slot_t;

typedef struct keel_map {
    keel_map_slot_t *slots;
    size_t cap; /* power of two */
    size_t count;
    size_t count_max;
    uint64_t seed;
} keel_map_t;

/* count_max 0 means KEEL_MAP_COUNT_MAX_DEFAULT. */
#define KEEL_MAP_COUNT_MAX_DEFAULT (1u << 30)

int keel_map_init(keel_map_t *m, size_t count_hint, size_t count_max, uint64_t seed);
/* Frees keys and the table; calls free_value on each value if non-NULL. */
void keel_map_free(keel_map_t *m, void (*free_value)(void *));
/* The value slot for key, or NULL if absent. */
void **keel_map_get(const keel_map_t *m, const void *key, size_t key_len);
/*
 * Inserts or replaces. On replace, *old (if non-NULL) gets the previous value
 * and 1 is returned; on insert 0; on failure KEEL_ENOMEM or KEEL_EFULL.
 */
int keel_map_put(keel_map_t *m, const void *key, size_t key_len, void *value, void **old);
/* Removes key; *old gets its value. 0 or KEEL_ENOTFOUND. */
int keel_map_del(keel_map_t *m, const void *key, size_t key_len, void **old);
/* Iterates: start with *pos = 0; returns 1 and the entry, or 0 at the end. */
int keel_map_next(const keel_map_t *m, size_t *pos, const uint8_t **key, size_t *key_len,
                  void **value);

#endif
