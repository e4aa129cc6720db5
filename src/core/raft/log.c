/* log.c - the Raft core's in-memory log: a dense array of entries after a compaction offset. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft/raft_int.h"

void keel__raft_log_free(keel__raft_log_t *l)
{
    keel__raft_log_truncate(l, l->offset + 1);
    free(l->ents);
    memset(l, 0, sizeof(*l));
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
        l->cap = cap;
    }
    uint8_t *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
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
    return 0;
}

/* Drops entries from from_index on (from_index > offset). */
void keel__raft_log_truncate(keel__raft_log_t *l, uint64_t from_index)
{
    assert(from_index > l->offset);
    while (keel__raft_log_last(l) >= from_index) {
        free(l->ents[l->n - 1].data);
        l->n--;
    }
}

/* Drops entries up to and including to_index (offset < to_index <= last). */
void keel__raft_log_compact(keel__raft_log_t *l, uint64_t to_index)
{
    assert(to_index > l->offset && to_index <= keel__raft_log_last(l));
    size_t drop = (size_t)(to_index - l->offset);
    for (size_t k = 0; k < drop; k++)
        free(l->ents[k].data);
    l->offset_term = l->ents[drop - 1].term;
    l->offset = to_index;
    memmove(l->ents, l->ents + drop, (l->n - drop) * sizeof(*l->ents));
    l->n -= drop;
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
