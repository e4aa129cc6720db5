/* log.c - the Raft core's in-memory log: a dense array of entries after a compaction offset. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft/raft_int.h"

/*
 * Entry data is copied into blocks of KEEL__RAFT_BLOCK_BYTES filled in log order, not one
 * malloc per entry. A compaction drops hundreds of thousands of entries at once; freed one
 * by one they left small holes all over the heap, which the state machine's next
 * allocations then filled one page apart, so while a snapshot child lived nearly every
 * write copied a page (copy-on-write) and malloc spent its time walking bins. Whole blocks
 * free into large holes that later allocations fill page by page (bench/RESULTS.md,
 * "Snapshot cost"). Entries larger than a quarter block get a block of their own.
 */
#define KEEL__RAFT_BLOCK_BYTES KEEL_RAFT_LOG_BLOCK_BYTES

struct keel__raft_block {
    size_t used, cap; /* bytes handed out, bytes of data[] */
    size_t live;      /* entries of the log pointing into this block */
    uint8_t data[];
};

/* data[] of a standard block: the whole block, header included, is KEEL__RAFT_BLOCK_BYTES. */
#define STD_CAP (KEEL__RAFT_BLOCK_BYTES - sizeof(keel__raft_block_t))

static keel__raft_block_t *block_new(const keel__raft_log_t *l, size_t cap)
{
    size_t bytes = sizeof(keel__raft_block_t) + cap;
    const keel_raft_mem_t *m = l->mem;
    return m != NULL && m->block_alloc != NULL ? m->block_alloc(m->ctx, bytes) : malloc(bytes);
}

static void block_free(const keel__raft_log_t *l, keel__raft_block_t *b)
{
    if (b == NULL)
        return;
    const keel_raft_mem_t *m = l->mem;
    if (m != NULL && m->block_free != NULL)
        m->block_free(m->ctx, b, sizeof(*b) + b->cap);
    else
        free(b);
}

static uint8_t *block_alloc(keel__raft_log_t *l, size_t len, keel__raft_block_t **out)
{
    keel__raft_block_t *b = l->fill;
    if (b == NULL || b->cap - b->used < len) {
        size_t cap = len > KEEL__RAFT_BLOCK_BYTES / 4 ? len : STD_CAP;
        b = block_new(l, cap);
        if (b == NULL)
            return NULL;
        b->used = b->live = 0;
        b->cap = cap;
        if (cap == STD_CAP) {
            if (l->fill != NULL && l->fill->live == 0)
                block_free(l, l->fill);
            l->fill = b;
        }
    }
    uint8_t *p = b->data + b->used;
    b->used += (len + 7) & ~(size_t)7; /* keeps every entry's data 8-byte aligned */
    if (b->used > b->cap)
        b->used = b->cap;
    b->live++;
    *out = b;
    return p;
}

/* Entry k no longer points into its block. */
static void block_release(keel__raft_log_t *l, size_t k)
{
    keel__raft_block_t *b = l->blocks[k];
    l->blocks[k] = NULL;
    if (b == NULL || --b->live > 0)
        return;
    if (b == l->fill)
        b->used = 0; /* nothing points into it: refill from the start */
    else
        block_free(l, b);
}

void keel__raft_log_free(keel__raft_log_t *l)
{
    keel__raft_log_truncate(l, l->offset + 1);
    block_free(l, l->fill);
    free(l->ents);
    free(l->blocks);
    free(l->confs);
    const keel_raft_mem_t *mem = l->mem;
    memset(l, 0, sizeof(*l));
    l->mem = mem;
}

uint64_t keel__raft_log_last(const keel__raft_log_t *l)
{
    return l->offset + l->n;
}

/* Term of the entry at index: the offset's term at the offset, 0 for index 0, for
   compacted indexes (unknown) and past the end. */
uint64_t keel__raft_log_term(const keel__raft_log_t *l, uint64_t index)
{
    if (index == l->offset)
        return l->offset_term;
    if (index < l->offset || index > l->offset + l->n)
        return 0;
    return l->ents[index - l->offset - 1].term;
}

keel_raft_entry_t *keel__raft_log_at(const keel__raft_log_t *l, uint64_t index)
{
    if (index <= l->offset || index > l->offset + l->n)
        return NULL;
    return &l->ents[index - l->offset - 1];
}

/* Appends one entry with a private copy of data. Terms never decrease along the log. */
int keel__raft_log_append(keel__raft_log_t *l, uint64_t term, uint32_t type, const void *data,
                          size_t len)
{
    assert(term >= keel__raft_log_term(l, keel__raft_log_last(l)));
    assert(len <= UINT32_MAX);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        keel_raft_entry_t *v = realloc(l->ents, cap * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        l->ents = v;
        keel__raft_block_t **bv = realloc(l->blocks, cap * sizeof(*bv));
        if (bv == NULL)
            return KEEL_ENOMEM;
        l->blocks = bv;
        l->cap = cap;
    }
    if (type == KEEL_RAFT_ENTRY_CONF && l->confs_n == l->confs_cap) {
        size_t cap = l->confs_cap ? l->confs_cap * 2 : 8;
        uint64_t *v = realloc(l->confs, cap * sizeof(*v));
        if (v == NULL)
            return KEEL_ENOMEM;
        l->confs = v;
        l->confs_cap = cap;
    }
    uint8_t *copy = NULL;
    l->blocks[l->n] = NULL;
    if (len > 0) {
        copy = block_alloc(l, len, &l->blocks[l->n]);
        if (copy == NULL)
            return KEEL_ENOMEM;
        memcpy(copy, data, len);
    }
    keel_raft_entry_t *e = &l->ents[l->n];
    e->term = term;
    e->index = keel__raft_log_last(l) + 1;
    e->type = type;
    e->len = (uint32_t)len;
    e->data = copy;
    l->n++;
    if (type == KEEL_RAFT_ENTRY_CONF)
        l->confs[l->confs_n++] = e->index;
    return 0;
}

/* The newest CONF entry at or before index still in the log, or NULL; *k is its place in
   confs (for going further back). */
keel_raft_entry_t *keel__raft_log_conf_at(const keel__raft_log_t *l, uint64_t index, size_t *k)
{
    size_t lo = 0, hi = l->confs_n; /* confs[lo..hi) are candidates: the first > index */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->confs[mid] <= index)
            lo = mid + 1;
        else
            hi = mid;
    }
    *k = lo;
    return lo > 0 ? keel__raft_log_at(l, l->confs[lo - 1]) : NULL;
}

keel_raft_entry_t *keel__raft_log_conf_before(const keel__raft_log_t *l, size_t *k)
{
    assert(*k > 0);
    (*k)--;
    return *k > 0 ? keel__raft_log_at(l, l->confs[*k - 1]) : NULL;
}

/* Drops entries from from_index on (from_index > offset). */
void keel__raft_log_truncate(keel__raft_log_t *l, uint64_t from_index)
{
    assert(from_index > l->offset);
    while (keel__raft_log_last(l) >= from_index) {
        block_release(l, l->n - 1);
        l->n--;
    }
    while (l->confs_n > 0 && l->confs[l->confs_n - 1] >= from_index)
        l->confs_n--;
}

/*
 * After a compaction: the entry arrays halved while they hold four times as many slots as
 * entries left (a slot is an entry struct and a block pointer; without this, the slots of
 * every write since the last snapshot stayed allocated after it: bench/memory.sh's
 * after-snapshot figure). Best effort: a shrink that fails keeps the bigger array.
 */
static void shrink(keel__raft_log_t *l)
{
    size_t cap = l->cap;
    while (cap > 64 && l->n < cap / 4)
        cap /= 2;
    if (cap == l->cap)
        return;
    keel_raft_entry_t *v = realloc(l->ents, cap * sizeof(*v));
    if (v == NULL)
        return;
    l->ents = v;
    keel__raft_block_t **bv = realloc(l->blocks, cap * sizeof(*bv));
    if (bv != NULL) /* else blocks keeps more slots than cap: harmless */
        l->blocks = bv;
    l->cap = cap;
}

/* Drops entries up to and including to_index (offset < to_index <= last). */
void keel__raft_log_compact(keel__raft_log_t *l, uint64_t to_index)
{
    assert(to_index > l->offset && to_index <= keel__raft_log_last(l));
    size_t drop = (size_t)(to_index - l->offset);
    for (size_t k = 0; k < drop; k++)
        block_release(l, k);
    l->offset_term = l->ents[drop - 1].term;
    l->offset = to_index;
    memmove(l->ents, l->ents + drop, (l->n - drop) * sizeof(*l->ents));
    memmove(l->blocks, l->blocks + drop, (l->n - drop) * sizeof(*l->blocks));
    l->n -= drop;
    size_t gone = 0;
    while (gone < l->confs_n && l->confs[gone] <= to_index)
        gone++;
    if (gone > 0) { /* confs is NULL in a log that never held a CONF entry */
        memmove(l->confs, l->confs + gone, (l->confs_n - gone) * sizeof(*l->confs));
        l->confs_n -= gone;
    }
    shrink(l);
}

/* Empties the log; the next entry will be index + 1 (an installed snapshot). */
void keel__raft_log_reset(keel__raft_log_t *l, uint64_t index, uint64_t term)
{
    keel__raft_log_truncate(l, l->offset + 1);
    l->offset = index;
    l->offset_term = term;
}

int keel__raft_snap_set(keel__raft_snap_t *s, uint64_t index, uint64_t term, const void *data,
                        size_t len)
{
    if (len > s->cap) {
        uint8_t *v = realloc(s->data, len);
        if (v == NULL)
            return KEEL_ENOMEM;
        s->data = v;
        s->cap = len;
    }
    if (len)
        memcpy(s->data, data, len);
    s->len = len;
    s->index = index;
    s->term = term;
    return 0;
}
