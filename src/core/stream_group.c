/* stream_group.c - a stream's consumer groups, their consumers and pending entries lists (PEL),
   idempotent producers and retention by age (see stream.h). */
#include "core/stream_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- groups --------------------------------------------------------------------- */

static int name_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

/* The index where name is, or goes (*found says which). */
static size_t group_index(const keel_stream_t *s, const uint8_t *name, size_t len, int *found)
{
    size_t lo = 0, hi = s->ngroups;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(s->groups[mid]->name, s->groups[mid]->name_len, name, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

size_t keel_stream_groups_count(const keel_stream_t *s)
{
    return s->ngroups;
}

keel_stream_group_t *keel_stream_group_at(const keel_stream_t *s, size_t i)
{
    assert(i < s->ngroups);
    return s->groups[i];
}

keel_stream_group_t *keel_stream_group_find(const keel_stream_t *s, const uint8_t *name, size_t len)
{
    int found;
    size_t i = group_index(s, name, len, &found);
    return found ? s->groups[i] : NULL;
}

int keel_stream_group_create(keel_stream_t *s, const uint8_t *name, size_t len,
                             keel_stream_id_t last_id, int64_t entries_read,
                             keel_stream_group_t **out)
{
    int found;
    size_t i = group_index(s, name, len, &found);
    if (found)
        return KEEL_EEXISTS;
    if (s->ngroups == s->gcap) {
        size_t cap = s->gcap ? s->gcap * 2 : 2;
        keel_stream_group_t **ng = realloc(s->groups, cap * sizeof(*ng));
        if (ng == NULL)
            return KEEL_ENOMEM;
        s->bytes += (cap - s->gcap) * sizeof(*ng);
        s->groups = ng;
        s->gcap = cap;
    }
    keel_stream_group_t *g = calloc(1, sizeof(*g) + len);
    if (g == NULL)
        return KEEL_ENOMEM;
    g->last_id = last_id;
    g->entries_read = entries_read;
    g->name_len = len;
    if (len)
        memcpy(g->name, name, len);
    memmove(s->groups + i + 1, s->groups + i, (s->ngroups - i) * sizeof(*s->groups));
    s->groups[i] = g;
    s->ngroups++;
    s->bytes += sizeof(*g) + len;
    if (out)
        *out = g;
    return 0;
}

void keel__stream_group_free(keel_stream_group_t *g)
{
    for (size_t i = 0; i < g->ncons; i++)
        free(g->cons[i]);
    free(g->cons);
    free(g->pel);
    free(g->dlq);
    free(g);
}

void keel_stream_group_destroy(keel_stream_t *s, keel_stream_group_t *g)
{
    int found;
    size_t i = group_index(s, g->name, g->name_len, &found);
    assert(found && s->groups[i] == g);
    size_t bytes =
        sizeof(*g) + g->name_len + g->pel_cap * sizeof(*g->pel) + g->ccap * sizeof(*g->cons);
    for (size_t k = 0; k < g->ncons; k++)
        bytes += sizeof(*g->cons[k]) + g->cons[k]->name_len;
    s->bytes -= bytes;
    memmove(s->groups + i, s->groups + i + 1, (s->ngroups - i - 1) * sizeof(*s->groups));
    s->ngroups--;
    keel__stream_group_free(g);
}

const uint8_t *keel_stream_group_name(const keel_stream_group_t *g, size_t *len)
{
    *len = g->name_len;
    return g->name;
}

keel_stream_id_t keel_stream_group_last_id(const keel_stream_group_t *g)
{
    return g->last_id;
}

int64_t keel_stream_group_entries_read(const keel_stream_group_t *g)
{
    return g->entries_read;
}

void keel_stream_group_set_last(keel_stream_group_t *g, keel_stream_id_t id, int64_t entries_read)
{
    g->last_id = id;
    g->entries_read = entries_read;
}

int keel_stream_group_set_deadletter(keel_stream_t *s, keel_stream_group_t *g,
                                     uint64_t max_deliveries, const uint8_t *dlq, size_t len)
{
    uint8_t *copy = NULL;
    if (len > 0 && (copy = malloc(len)) == NULL)
        return KEEL_ENOMEM;
    if (len > 0)
        memcpy(copy, dlq, len);
    s->bytes = s->bytes - g->dlq_len + len;
    free(g->dlq);
    g->dlq = copy;
    g->dlq_len = len;
    g->max_deliveries = max_deliveries;
    return 0;
}

uint64_t keel_stream_group_max_deliveries(const keel_stream_group_t *g)
{
    return g->max_deliveries;
}

const uint8_t *keel_stream_group_deadletter(const keel_stream_group_t *g, size_t *len)
{
    *len = g->dlq_len;
    return g->dlq;
}

/* Redis streamRangeHasTombstones(s, start, NULL). */
static int has_tombstones_from(const keel_stream_t *s, keel_stream_id_t start)
{
    if (s->length == 0 || (s->max_deleted.ms == 0 && s->max_deleted.seq == 0))
        return 0;
    return keel_stream_id_cmp(start, s->max_deleted) <= 0;
}

int64_t keel_stream_estimate_read(const keel_stream_t *s, keel_stream_id_t id)
{
    if (s->entries_added == 0)
        return 0;
    if (s->length == 0 && keel_stream_id_cmp(id, s->last_id) < 1)
        return (int64_t)s->entries_added;
    int cmp_last = keel_stream_id_cmp(id, s->last_id);
    if (cmp_last == 0)
        return (int64_t)s->entries_added;
    if (cmp_last > 0)
        return KEEL_STREAM_ENTRIES_READ_UNKNOWN;
    keel_stream_id_t first = keel__stream_edge_id(s, 0);
    int cmp_id_first = keel_stream_id_cmp(id, first);
    int cmp_xdel_first = keel_stream_id_cmp(s->max_deleted, first);
    if ((s->max_deleted.ms == 0 && s->max_deleted.seq == 0) || cmp_xdel_first < 0) {
        if (cmp_id_first < 0)
            return (int64_t)(s->entries_added - s->length);
        if (cmp_id_first == 0)
            return (int64_t)(s->entries_added - s->length + 1);
    }
    return KEEL_STREAM_ENTRIES_READ_UNKNOWN;
}

int keel_stream_group_lag(const keel_stream_t *s, const keel_stream_group_t *g, int64_t *lag)
{
    if (s->entries_added == 0) {
        *lag = 0;
        return 1;
    }
    if (g->entries_read != KEEL_STREAM_ENTRIES_READ_UNKNOWN &&
        !has_tombstones_from(s, g->last_id)) {
        *lag = (int64_t)s->entries_added - g->entries_read;
        return 1;
    }
    int64_t read = keel_stream_estimate_read(s, g->last_id);
    if (read == KEEL_STREAM_ENTRIES_READ_UNKNOWN)
        return 0;
    *lag = (int64_t)s->entries_added - read;
    return 1;
}

void keel_stream_group_delivered(const keel_stream_t *s, keel_stream_group_t *g,
                                 keel_stream_id_t id)
{
    if (keel_stream_id_cmp(id, g->last_id) <= 0)
        return;
    if (g->entries_read != KEEL_STREAM_ENTRIES_READ_UNKNOWN && !has_tombstones_from(s, id))
        g->entries_read++;
    else if (s->entries_added)
        g->entries_read = keel_stream_estimate_read(s, id);
    g->last_id = id;
}

/* ---- consumers ------------------------------------------------------------------ */

size_t keel__stream_cons_index(const keel_stream_group_t *g, const uint8_t *name, size_t len,
                               int *found)
{
    size_t lo = 0, hi = g->ncons;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(g->cons[mid]->name, g->cons[mid]->name_len, name, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

size_t keel_stream_consumers_count(const keel_stream_group_t *g)
{
    return g->ncons;
}

keel_stream_consumer_t *keel_stream_consumer_at(const keel_stream_group_t *g, size_t i)
{
    assert(i < g->ncons);
    return g->cons[i];
}

keel_stream_consumer_t *keel_stream_consumer_find(const keel_stream_group_t *g, const uint8_t *name,
                                                  size_t len)
{
    int found;
    size_t i = keel__stream_cons_index(g, name, len, &found);
    return found ? g->cons[i] : NULL;
}

keel_stream_consumer_t *keel_stream_consumer_get(keel_stream_t *s, keel_stream_group_t *g,
                                                 const uint8_t *name, size_t len, uint64_t now_ms,
                                                 int *created)
{
    int found;
    size_t i = keel__stream_cons_index(g, name, len, &found);
    if (created)
        *created = !found;
    if (found)
        return g->cons[i];
    if (g->ncons == g->ccap) {
        size_t cap = g->ccap ? g->ccap * 2 : 4;
        keel_stream_consumer_t **nc = realloc(g->cons, cap * sizeof(*nc));
        if (nc == NULL)
            return NULL;
        s->bytes += (cap - g->ccap) * sizeof(*nc);
        g->cons = nc;
        g->ccap = cap;
    }
    keel_stream_consumer_t *c = calloc(1, sizeof(*c) + len);
    if (c == NULL)
        return NULL;
    c->seen_ms = now_ms;
    c->name_len = len;
    if (len)
        memcpy(c->name, name, len);
    memmove(g->cons + i + 1, g->cons + i, (g->ncons - i) * sizeof(*g->cons));
    g->cons[i] = c;
    g->ncons++;
    s->bytes += sizeof(*c) + len;
    return c;
}

uint64_t keel_stream_consumer_delete(keel_stream_t *s, keel_stream_group_t *g,
                                     keel_stream_consumer_t *c)
{
    uint64_t pending = c->pending;
    /* its pending entries go: one compacting pass over the PEL */
    size_t w = g->pel_head;
    for (size_t r = g->pel_head; r < g->pel_head + g->pel_len; r++)
        if (g->pel[r].owner != c)
            g->pel[w++] = g->pel[r];
    g->pel_len = w - g->pel_head;
    int found;
    size_t i = keel__stream_cons_index(g, c->name, c->name_len, &found);
    assert(found && g->cons[i] == c);
    memmove(g->cons + i, g->cons + i + 1, (g->ncons - i - 1) * sizeof(*g->cons));
    g->ncons--;
    s->bytes -= sizeof(*c) + c->name_len;
    free(c);
    return pending;
}

const uint8_t *keel_stream_consumer_name(const keel_stream_consumer_t *c, size_t *len)
{
    *len = c->name_len;
    return c->name;
}

uint64_t keel_stream_consumer_pending(const keel_stream_consumer_t *c)
{
    return c->pending;
}

uint64_t keel_stream_consumer_seen_ms(const keel_stream_consumer_t *c)
{
    return c->seen_ms;
}

void keel_stream_consumer_seen(keel_stream_consumer_t *c, uint64_t now_ms)
{
    c->seen_ms = now_ms;
}

uint64_t keel_stream_consumer_priority_reads(const keel_stream_consumer_t *c)
{
    return c->priority_reads;
}

void keel_stream_consumer_priority_read(keel_stream_consumer_t *c)
{
    c->priority_reads++;
}

/* ---- the PEL ---------------------------------------------------------------------- */

size_t keel_stream_pel_count(const keel_stream_group_t *g)
{
    return g->pel_len;
}

keel_stream_pending_t *keel_stream_pel_at(const keel_stream_group_t *g, size_t i)
{
    assert(i < g->pel_len);
    return &g->pel[g->pel_head + i];
}

size_t keel_stream_pel_seek(const keel_stream_group_t *g, keel_stream_id_t from)
{
    size_t lo = 0, hi = g->pel_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keel_stream_id_cmp(g->pel[g->pel_head + mid].id, from) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

keel_stream_pending_t *keel_stream_pel_find(const keel_stream_group_t *g, keel_stream_id_t id)
{
    size_t i = keel_stream_pel_seek(g, id);
    if (i < g->pel_len && keel_stream_id_cmp(g->pel[g->pel_head + i].id, id) == 0)
        return &g->pel[g->pel_head + i];
    return NULL;
}

/* Inserts id at its place (absent, asserted by the callers' find); 0 or KEEL_ENOMEM. */
static int pel_insert(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id,
                      keel_stream_pending_t **out)
{
    if (g->pel_head + g->pel_len == g->pel_cap) {
        if (g->pel_head > 0 && g->pel_head >= g->pel_len / 2) {
            memmove(g->pel, g->pel + g->pel_head, g->pel_len * sizeof(*g->pel));
            g->pel_head = 0;
        } else {
            size_t cap = g->pel_cap ? g->pel_cap * 2 : 8;
            keel_stream_pending_t *np = realloc(g->pel, cap * sizeof(*np));
            if (np == NULL)
                return KEEL_ENOMEM;
            s->bytes += (cap - g->pel_cap) * sizeof(*np);
            g->pel = np;
            g->pel_cap = cap;
        }
    }
    size_t i = keel_stream_pel_seek(g, id);
    keel_stream_pending_t *base = g->pel + g->pel_head;
    memmove(base + i + 1, base + i, (g->pel_len - i) * sizeof(*base));
    base[i] = (keel_stream_pending_t){.id = id};
    g->pel_len++;
    *out = &base[i];
    return 0;
}

void keel_stream_pel_assign(keel_stream_pending_t *p, keel_stream_consumer_t *c)
{
    if (p->owner == c)
        return;
    if (p->owner)
        p->owner->pending--;
    p->owner = c;
    if (c)
        c->pending++;
}

int keel_stream_pel_deliver(keel_stream_t *s, keel_stream_group_t *g, keel_stream_consumer_t *c,
                            keel_stream_id_t id, uint64_t now_ms)
{
    keel_stream_pending_t *p = keel_stream_pel_find(g, id);
    if (p == NULL && pel_insert(s, g, id, &p) != 0)
        return KEEL_ENOMEM;
    keel_stream_pel_assign(p, c);
    p->delivery_ms = now_ms;
    p->delivery_count = 1;
    p->due_ms = 0;
    return 0;
}

int keel_stream_pel_add(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id,
                        keel_stream_pending_t **out)
{
    assert(keel_stream_pel_find(g, id) == NULL);
    int rc = pel_insert(s, g, id, out);
    if (rc == 0) {
        (*out)->delivery_ms = 0;
        (*out)->delivery_count = 0;
        (*out)->due_ms = 0;
    }
    return rc;
}

int keel_stream_pel_remove(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id)
{
    (void)s;
    size_t i = keel_stream_pel_seek(g, id);
    if (i == g->pel_len || keel_stream_id_cmp(g->pel[g->pel_head + i].id, id) != 0)
        return 0;
    keel_stream_pel_assign(&g->pel[g->pel_head + i], NULL);
    if (i == 0) {
        g->pel_head++;
    } else {
        keel_stream_pending_t *base = g->pel + g->pel_head;
        memmove(base + i, base + i + 1, (g->pel_len - i - 1) * sizeof(*base));
    }
    g->pel_len--;
    if (g->pel_len == 0)
        g->pel_head = 0;
    return 1;
}

/* ---- idempotent producers ------------------------------------------------------------ */

size_t keel__stream_producer_index(const keel_stream_t *s, const uint8_t *pid, size_t n, int *found)
{
    size_t lo = 0, hi = s->nproducers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(s->producers[mid].pid, s->producers[mid].len, pid, n);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

int keel_stream_producer_get(const keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t *seq,
                             keel_stream_id_t *id)
{
    int found;
    size_t i = keel__stream_producer_index(s, pid, n, &found);
    if (!found)
        return 0;
    *seq = s->producers[i].seq;
    *id = s->producers[i].id;
    return 1;
}

int keel_stream_producer_set(keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t seq,
                             keel_stream_id_t id)
{
    assert(n <= KEEL_STREAM_PRODUCER_ID_BYTES_MAX);
    int found;
    size_t i = keel__stream_producer_index(s, pid, n, &found);
    if (!found && s->nproducers == KEEL_STREAM_PRODUCERS_MAX) {
        /* evict the producer whose last append is the oldest (ids are unique: one) */
        size_t old = 0;
        for (size_t k = 1; k < s->nproducers; k++)
            if (keel_stream_id_cmp(s->producers[k].id, s->producers[old].id) < 0)
                old = k;
        memmove(s->producers + old, s->producers + old + 1,
                (s->nproducers - old - 1) * sizeof(*s->producers));
        s->nproducers--;
        i = keel__stream_producer_index(s, pid, n, &found);
    }
    if (!found) {
        if (s->nproducers == s->pcap) {
            size_t cap = s->pcap ? s->pcap * 2 : 4;
            producer_t *np = realloc(s->producers, cap * sizeof(*np));
            if (np == NULL)
                return KEEL_ENOMEM;
            s->bytes += (cap - s->pcap) * sizeof(*np);
            s->producers = np;
            s->pcap = cap;
        }
        memmove(s->producers + i + 1, s->producers + i,
                (s->nproducers - i) * sizeof(*s->producers));
        s->nproducers++;
        s->producers[i].len = (uint8_t)n;
        if (n)
            memcpy(s->producers[i].pid, pid, n);
    }
    s->producers[i].seq = seq;
    s->producers[i].id = id;
    return 0;
}

size_t keel_stream_producers_count(const keel_stream_t *s)
{
    return s->nproducers;
}

uint64_t keel_stream_max_age(const keel_stream_t *s)
{
    return s->max_age_ms;
}

void keel_stream_set_max_age(keel_stream_t *s, uint64_t max_age_ms)
{
    s->max_age_ms = max_age_ms;
}

uint64_t keel_stream_retention_deadline(const keel_stream_t *s)
{
    if (s->max_age_ms == 0 || s->length == 0)
        return 0;
    uint64_t first = keel__stream_edge_id(s, 0).ms;
    return first > UINT64_MAX - s->max_age_ms ? UINT64_MAX : first + s->max_age_ms;
}
