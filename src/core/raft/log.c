/* log.c - the Raft core's in-memory log: a dense array of entries from index 1. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft/raft_int.h"

void keel__raft_log_free(keel__raft_log_t *l)
{
    keel__raft_log_truncate(l, 1);
    free(l->ents);
    memset(l, 0, sizeof(*l));
}

uint64_t keel__raft_log_last(const keel__raft_log_t *l)
{
    return l->n;
}

/* Term of the entry at index; 0 for index 0 (the empty prefix) and past the end. */
uint64_t keel__raft_log_term(const keel__raft_log_t *l, uint64_t index)
{
    if (index == 0 || index > l->n)
        return 0;
    return l->ents[index - 1].term;
}

keel_raft_entry_t *keel__raft_log_at(const keel__raft_log_t *l, uint64_t index)
{
    if (index == 0 || index > l->n)
        return NULL;
    return &l->ents[index - 1];
}

/* Appends one entry with a private copy of data. Terms never decrease along the log. */
int keel__raft_log_append(keel__raft_log_t *l, uint64_t term, uint32_t type, const void *data,
                          size_t len)
{
    assert(term >= keel__raft_log_term(l, l->n));
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
    e->index = l->n + 1;
    e->type = type;
    e->len = (uint32_t)len;
    e->data = copy;
    l->n++;
    return 0;
}

/* Drops entries from from_index on (from_index >= 1). */
void keel__raft_log_truncate(keel__raft_log_t *l, uint64_t from_index)
{
    assert(from_index >= 1);
    while (l->n >= from_index) {
        free(l->ents[l->n - 1].data);
        l->n--;
    }
}
