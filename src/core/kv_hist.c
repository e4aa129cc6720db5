/* kv_hist.c - KV change history: a bounded ring of the newest key changes, for KEEL.WATCH. */
#include "core/kv_int.h"

#include <stddef.h>
#include <stdlib.h>

/*
 * Each change is header, key, then value (puts only), copied into a circular
 * byte arena in ring order: the newest goes after the previous one (or at the
 * arena's start when the end has no room), eviction just moves past the
 * oldest. No malloc or free per change (they were one each per write, and
 * freeing a change recorded 100,000 writes ago was a cache miss); the arena
 * only grows, by doubling, when the changes held do not fit, so it stays
 * within about twice history_bytes_max. The ring holds pointers into the
 * arena, so a reader finds "the first change after revision r" by binary
 * search over the ring's positions (revisions never decrease along the ring).
 */
struct keel__kv_change {
    uint64_t revision;
    uint32_t key_len;
    uint32_t value_len;
    uint8_t op;
    uint8_t data[]; /* key_len bytes, then value_len bytes */
};

/* The ring's first size; it doubles up to history_changes_max. */
#define RING_SLOTS_MIN 64u
/* The arena's first size; it doubles while the changes held do not fit. */
#define ARENA_BYTES_MIN (64u * 1024u)

void keel__kv_hist_init(keel_kv_t *kv, int on)
{
    kv->hist =
        (keel__kv_history_t){.first_rev = kv->revision + 1, .last_rev = kv->revision, .on = on};
}

static keel__kv_change_t *slot(const keel__kv_history_t *h, size_t pos)
{
    assert(pos < h->len);
    return h->ring[(h->head + pos) & (h->cap - 1)];
}

static size_t charge(const keel__kv_change_t *c)
{
    return sizeof(*c) + c->key_len + c->value_len;
}

/* Arena bytes a change takes: 8-byte aligned, so every header is. */
static size_t footprint(size_t key_len, size_t value_len)
{
    return (offsetof(keel__kv_change_t, data) + key_len + value_len + 7) & ~(size_t)7;
}

static void pop_oldest(keel__kv_history_t *h)
{
    keel__kv_change_t *c = slot(h, 0);
    h->bytes -= charge(c);
    h->head = (h->head + 1) & (h->cap - 1);
    h->len--;
}

/* Makes first_rev at least rev and drops what is older (whole revisions). */
static void drop_before(keel__kv_history_t *h, uint64_t rev)
{
    if (rev > h->first_rev)
        h->first_rev = rev;
    while (h->len > 0 && slot(h, 0)->revision < h->first_rev)
        pop_oldest(h);
}

void keel__kv_hist_free(keel_kv_t *kv)
{
    keel__kv_history_t *h = &kv->hist;
    while (h->len > 0)
        pop_oldest(h);
    free(h->ring);
    free(h->arena);
    h->ring = NULL;
    h->arena = NULL;
    h->cap = h->head = h->arena_cap = h->arena_tail = 0;
    assert(h->bytes == 0);
}

void keel__kv_hist_restart(keel_kv_t *kv)
{
    int on = kv->hist.on;
    keel__kv_hist_free(kv);
    keel__kv_hist_init(kv, on);
}

/* Doubles the ring (a power of two, at most history_changes_max rounded up). 0 or KEEL_ENOMEM. */
static int grow(keel__kv_history_t *h)
{
    size_t cap = h->cap ? h->cap * 2 : RING_SLOTS_MIN;
    keel__kv_change_t **r = malloc(cap * sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < h->len; i++)
        r[i] = slot(h, i);
    free(h->ring);
    h->ring = r;
    h->cap = cap;
    h->head = 0;
    return 0;
}

/*
 * A new arena of at least `need` more bytes than the changes held, which move to its
 * start in order (the ring's pointers follow). 0 or KEEL_ENOMEM (nothing changed).
 */
static int arena_grow(keel__kv_history_t *h, const keel_kv_config_t *cfg, size_t need)
{
    size_t used = 0;
    for (size_t i = 0; i < h->len; i++)
        used += footprint(slot(h, i)->key_len, slot(h, i)->value_len);
    /*
     * Straight to what history_changes_max changes of the average size so far take
     * (at most history_bytes_max: the footprints held never exceed their charge): each
     * step copies everything held into pages never touched before, which cost a fault
     * each, while pages of a big arena that are never written cost nothing.
     */
    size_t avg = (used + need) / (h->len + 1) + 1;
    size_t want = cfg->history_changes_max < cfg->history_bytes_max / avg
                      ? cfg->history_changes_max * avg
                      : cfg->history_bytes_max;
    size_t cap = h->arena_cap ? h->arena_cap * 2 : ARENA_BYTES_MIN;
    while (cap < used + need || cap < want)
        cap *= 2;
    uint8_t *a = malloc(cap);
    if (a == NULL)
        return KEEL_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < h->len; i++) {
        keel__kv_change_t *c = slot(h, i);
        size_t n = footprint(c->key_len, c->value_len);
        memcpy(a + at, c, n);
        h->ring[(h->head + i) & (h->cap - 1)] = (keel__kv_change_t *)(a + at);
        at += n;
    }
    free(h->arena);
    h->arena = a;
    h->arena_cap = cap;
    h->arena_tail = at;
    return 0;
}

/*
 * Room for n bytes after the newest change: at the tail, else (when the arena's end
 * is short) at its start if the oldest change begins at least n bytes in, else in a
 * bigger arena. NULL on ENOMEM.
 */
static keel__kv_change_t *arena_take(keel__kv_history_t *h, const keel_kv_config_t *cfg, size_t n)
{
    if (h->len == 0)
        h->arena_tail = 0;
    size_t tail = h->arena_tail;
    size_t head = h->len ? (size_t)((uint8_t *)slot(h, 0) - h->arena) : 0;
    int wrapped = h->len > 0 && tail <= head; /* held: [head, end) then [0, tail) */
    if (h->arena == NULL) {
        if (arena_grow(h, cfg, n) != 0)
            return NULL;
    } else if (wrapped ? head - tail >= n : h->arena_cap - tail >= n) {
        /* fits at the tail */
    } else if (!wrapped && head >= n) {
        h->arena_tail = 0;
    } else if (arena_grow(h, cfg, n) != 0) {
        return NULL;
    }
    keel__kv_change_t *c = (keel__kv_change_t *)(h->arena + h->arena_tail);
    h->arena_tail += n;
    assert(h->arena_tail <= h->arena_cap);
    return c;
}

void keel__kv_hist_record(keel_kv_t *kv, uint64_t rev, int op, const keel__kv_entry_t *e)
{
    keel__kv_history_t *h = &kv->hist;
    if (!h->on)
        return;
    /* a change belongs to the revision its command is making */
    assert(rev == kv->revision + 1 && rev >= h->last_rev);
    assert(op == KEEL_KV_CHANGE_PUT || op == KEEL_KV_CHANGE_DEL);
    h->last_rev = rev;
    if (rev < h->first_rev)
        return; /* part of this revision was dropped already: the rest goes too */
    /* a typed key's change carries no value: the feed says the key changed */
    size_t value_len = op == KEEL_KV_CHANGE_PUT && e->type == KEEL__KV_TYPE_STRING ? e->val_len : 0;
    size_t need = sizeof(keel__kv_change_t) + e->key_len + value_len;
    const keel_kv_config_t *cfg = &kv->cfg;
    while (h->len > 0 &&
           (h->len >= cfg->history_changes_max || h->bytes + need > cfg->history_bytes_max))
        drop_before(h, slot(h, 0)->revision + 1);
    if (rev < h->first_rev)
        return; /* making room took this revision's own first changes: it is incomplete */
    keel__kv_change_t *c = NULL;
    if (need <= cfg->history_bytes_max && (h->len < h->cap || grow(h) == 0))
        c = arena_take(h, cfg, footprint(e->key_len, value_len));
    if (c == NULL) {
        /* Too big to hold, or no memory: the command has taken effect and must
         * not fail, so the history gives up this revision instead. */
        drop_before(h, rev + 1);
        return;
    }
    c->revision = rev;
    c->op = (uint8_t)op;
    c->key_len = e->key_len;
    c->value_len = (uint32_t)value_len;
    memcpy(c->data, keel__kv_key(e), e->key_len);
    if (value_len)
        memcpy(c->data + e->key_len, keel__kv_cval(e), value_len);
    h->ring[(h->head + h->len) & (h->cap - 1)] = c;
    h->len++;
    h->bytes += need;
}

uint64_t keel_kv_history_oldest(const keel_kv_t *kv)
{
    return kv->hist.first_rev;
}

size_t keel_kv_history_len(const keel_kv_t *kv)
{
    return kv->hist.len;
}

size_t keel_kv_history_bytes(const keel_kv_t *kv)
{
    return kv->hist.bytes;
}

int keel_kv_history_seek(const keel_kv_t *kv, uint64_t after, size_t *pos)
{
    const keel__kv_history_t *h = &kv->hist;
    if (after < h->first_rev - 1)
        return KEEL_ERANGE;
    size_t lo = 0, hi = h->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (slot(h, mid)->revision <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

void keel_kv_history_at(const keel_kv_t *kv, size_t pos, keel_kv_change_t *out)
{
    const keel__kv_change_t *c = slot(&kv->hist, pos);
    *out = (keel_kv_change_t){
        .revision = c->revision,
        .op = c->op,
        .key = c->data,
        .key_len = c->key_len,
        .value = c->op == KEEL_KV_CHANGE_PUT ? c->data + c->key_len : NULL,
        .value_len = c->value_len,
    };
}
