/* zset.c - the sorted set: a skiplist with spans plus a member hash table (see zset.h). */
#include "core/zset_int.h"

#include "base/bytes.h"
#include "base/hash.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The most buckets (nbuckets is 32 bits; KEEL_ZSET_MEMBERS_MAX members need 2^26). */
#define BUCKETS_MAX ((uint64_t)1 << 31)

_Static_assert(KEEL_ZSET_LEVEL_MAX <= UINT8_MAX, "levels are counted in a byte");

static size_t node_size(uint32_t level, size_t len)
{
    return sizeof(keel_zset_node_t) + level * sizeof(((keel_zset_node_t *)0)->lv[0]) + len;
}

static uint32_t level_of(uint64_t h)
{
    /* P = 1/4 per level, as Redis's ZSKIPLIST_P; from a remix of the member's hash */
    uint64_t x = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 32;
    uint32_t lvl = 1;
    while ((x & 3) == 0 && lvl < KEEL_ZSET_LEVEL_MAX) {
        lvl++;
        x >>= 2;
    }
    return lvl;
}

keel_zset_t *keel_zset_new(void)
{
    keel_zset_t *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return NULL;
    z->header = calloc(1, node_size(1, 0));
    if (z->header == NULL) {
        free(z);
        return NULL;
    }
    z->header->level = z->header_levels = 1;
    z->level = 1;
    z->listpack = 1;
    return z;
}

void keel_zset_free(keel_zset_t *z)
{
    if (z == NULL)
        return;
    if (keel__zset_packed(z)) {
        free(z);
        return;
    }
    keel_zset_node_t *x = z->header->lv[0].forward;
    while (x) {
        keel_zset_node_t *next = x->lv[0].forward;
        free(x);
        x = next;
    }
    free(z->header);
    free(z->buckets);
    free(z);
}

uint64_t keel_zset_len(const keel_zset_t *z)
{
    if (keel__zset_packed(z))
        return ((const keel__zpk_t *)z)->length;
    return z->length;
}

size_t keel_zset_bytes(const keel_zset_t *z)
{
    if (keel__zset_packed(z) || z->listpack)
        return keel__zset_listpack_bytes(z);
    return sizeof(*z) + node_size(z->header_levels, 0) + z->node_bytes +
           z->nbuckets * sizeof(keel_zset_node_t *);
}

int keel_zset_is_listpack(const keel_zset_t *z)
{
    return keel__zset_packed(z) || z->listpack;
}

void keel_zset_set_skiplist(keel_zset_t *z)
{
    assert(!keel__zset_packed(z));
    z->listpack = 0;
}

void keel_zset_to_listpack(keel_zset_t *z)
{
    assert(!keel__zset_packed(z));
    z->listpack = 1;
    for (keel_zset_node_t *x = z->header->lv[0].forward; x; x = x->lv[0].forward)
        if (x->score == 0)
            x->score = 0.0; /* -0 == 0: the order does not change */
}

void keel_zset_note_add(keel_zset_t *z, size_t len)
{
    assert(!keel__zset_packed(z));
    if (z->listpack && (z->length + 1 > KEEL_ZSET_LISTPACK_ENTRIES_MAX ||
                        len > KEEL_ZSET_LISTPACK_VALUE_BYTES_MAX))
        z->listpack = 0;
}

int keel_zset_lex_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

int keel_zset_cmp(double sa, const uint8_t *a, size_t an, double sb, const uint8_t *b, size_t bn)
{
    if (sa < sb)
        return -1;
    if (sa > sb)
        return 1;
    return keel_zset_lex_cmp(a, an, b, bn);
}

static int node_cmp(const keel_zset_node_t *x, const keel_zset_node_t *y)
{
    return keel_zset_cmp(x->score, keel_zset_member(x), x->len, y->score, keel_zset_member(y),
                         y->len);
}

/* ---- the hash table ------------------------------------------------------------------ */

keel_zset_node_t *keel_zset_find(const keel_zset_t *z, const uint8_t *m, size_t n)
{
    assert(!keel__zset_packed(z));
    if (z->nbuckets == 0)
        return NULL;
    uint64_t h = keel_hash64(m, n, HASH_SEED);
    for (keel_zset_node_t *x = z->buckets[h & (z->nbuckets - 1)]; x; x = x->hnext)
        if (x->hash == h && x->len == n && (n == 0 || memcmp(keel_zset_member(x), m, n) == 0))
            return x;
    return NULL;
}

/*
 * A chain is kept in (hash, member) order, not in order of arrival: with the bucket count
 * (in snapshots), it makes ZSCAN's order a function of the set, the same on a replica that
 * applied the log and on one restored from a snapshot. Chains are short (the table grows
 * to one bucket per member), so the ordered insert costs about what a push would.
 */
static void chain_insert(keel_zset_node_t **buckets, uint64_t nb, keel_zset_node_t *x)
{
    keel_zset_node_t **pp = &buckets[x->hash & (nb - 1)];
    while (*pp && ((*pp)->hash < x->hash ||
                   ((*pp)->hash == x->hash && keel_zset_lex_cmp(keel_zset_member(*pp), (*pp)->len,
                                                                keel_zset_member(x), x->len) < 0)))
        pp = &(*pp)->hnext;
    x->hnext = *pp;
    *pp = x;
}

/* A table of nb buckets holding every node (relinked: the old table is then stale), or
   NULL with nothing changed (the allocation comes first). */
static keel_zset_node_t **table_new(keel_zset_t *z, uint64_t nb)
{
    if (nb > BUCKETS_MAX)
        return NULL;
    keel_zset_node_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return NULL;
    for (uint64_t i = 0; i < z->nbuckets; i++) {
        keel_zset_node_t *x = z->buckets[i];
        while (x) {
            keel_zset_node_t *next = x->hnext;
            chain_insert(b, nb, x);
            x = next;
        }
    }
    free(z->buckets);
    z->buckets = b;
    z->nbuckets = (uint32_t)nb;
    return b;
}

/* Rehashes into nb buckets: 0 or KEEL_ENOMEM (nothing changed). */
static int resize(keel_zset_t *z, uint64_t nb)
{
    return table_new(z, nb) ? 0 : KEEL_ENOMEM;
}

int keel_zset_reserve(keel_zset_t *z, uint64_t n, uint32_t levels)
{
    assert(levels <= KEEL_ZSET_LEVEL_MAX && !keel__zset_packed(z));
    uint64_t need = z->length + n, nb = z->nbuckets;
    if (need > nb) {
        nb = nb ? nb : BUCKETS_MIN;
        while (nb < need)
            nb *= 2;
    }
    keel_zset_node_t *h = NULL;
    if (levels > z->header_levels) { /* the new header first: nothing changes unless both fit */
        if ((h = calloc(1, node_size(levels, 0))) == NULL)
            return KEEL_ENOMEM;
        memcpy(h, z->header, node_size(z->header_levels, 0));
        h->level = levels;
    }
    if (nb != z->nbuckets && table_new(z, nb) == NULL) {
        free(h);
        return KEEL_ENOMEM;
    }
    if (h) {
        free(z->header);
        z->header = h;
        z->header_levels = levels;
    }
    return 0;
}

keel_zset_node_t *keel_zset_node_new(const uint8_t *m, size_t n, double score)
{
    assert(!isnan(score) && n <= UINT32_MAX);
    uint64_t h = keel_hash64(m, n, HASH_SEED);
    uint32_t lvl = level_of(h);
    keel_zset_node_t *x = malloc(node_size(lvl, n));
    if (x == NULL)
        return NULL;
    x->score = score;
    x->backward = x->hnext = NULL;
    x->hash = h;
    x->len = (uint32_t)n;
    x->level = lvl;
    for (uint32_t i = 0; i < lvl; i++) {
        x->lv[i].forward = NULL;
        x->lv[i].span = 0;
    }
    if (n)
        memcpy((uint8_t *)&x->lv[lvl], m, n);
    return x;
}

void keel_zset_node_free(keel_zset_node_t *x)
{
    free(x);
}

/* ---- the skiplist (Redis t_zset.c's zslInsert / zslDeleteNode, with spans) ------------ */

/* Links x after update[i] on each of its levels; rank[i] is update[i]'s rank (the header's
   is 0). Levels above the set's are taken from the header. */
static void sl_link_at(keel_zset_t *z, keel_zset_node_t *x, keel_zset_node_t **update,
                       uint64_t *rank)
{
    if (x->level > z->level) {
        for (uint32_t i = z->level; i < x->level; i++) {
            rank[i] = 0;
            update[i] = z->header;
            update[i]->lv[i].span = z->length;
        }
        z->level = x->level;
    }
    for (uint32_t i = 0; i < x->level; i++) {
        x->lv[i].forward = update[i]->lv[i].forward;
        update[i]->lv[i].forward = x;
        x->lv[i].span = update[i]->lv[i].span - (rank[0] - rank[i]);
        update[i]->lv[i].span = (rank[0] - rank[i]) + 1;
    }
    for (uint32_t i = x->level; i < z->level; i++)
        update[i]->lv[i].span++;
    x->backward = update[0] == z->header ? NULL : update[0];
    if (x->lv[0].forward)
        x->lv[0].forward->backward = x;
    else
        z->tail = x;
    z->length++;
}

static void sl_link(keel_zset_t *z, keel_zset_node_t *x)
{
    keel_zset_node_t *update[KEEL_ZSET_LEVEL_MAX] = {0};
    uint64_t rank[KEEL_ZSET_LEVEL_MAX] = {0};
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--) {
        rank[i] = i == (int)z->level - 1 ? 0 : rank[i + 1];
        while (p->lv[i].forward && node_cmp(p->lv[i].forward, x) < 0) {
            rank[i] += p->lv[i].span;
            p = p->lv[i].forward;
        }
        update[i] = p;
    }
    sl_link_at(z, x, update, rank);
}

/* Unlinks x, whose predecessor on each level i of the set is update[i]. */
static void sl_unlink_at(keel_zset_t *z, keel_zset_node_t *x, keel_zset_node_t **update)
{
    assert(update[0]->lv[0].forward == x);
    for (uint32_t i = 0; i < z->level; i++) {
        if (update[i]->lv[i].forward == x) {
            update[i]->lv[i].span += x->lv[i].span - 1;
            update[i]->lv[i].forward = x->lv[i].forward;
        } else {
            update[i]->lv[i].span -= 1;
        }
    }
    if (x->lv[0].forward)
        x->lv[0].forward->backward = x->backward;
    else
        z->tail = x->backward;
    while (z->level > 1 && z->header->lv[z->level - 1].forward == NULL) {
        z->header->lv[z->level - 1].span = 0;
        z->level--;
    }
    z->length--;
}

static void sl_unlink(keel_zset_t *z, keel_zset_node_t *x)
{
    keel_zset_node_t *update[KEEL_ZSET_LEVEL_MAX] = {0};
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--) {
        while (p->lv[i].forward && p->lv[i].forward != x && node_cmp(p->lv[i].forward, x) < 0)
            p = p->lv[i].forward;
        update[i] = p;
    }
    sl_unlink_at(z, x, update);
}

/*
 * Moves x to a new place for score. Redis's zslUpdateScore descends from the header to x,
 * unlinks it, and descends again to link it: two chains of dependent loads, each step
 * usually a cache miss. Here the two descents run side by side in the set as it is (x still
 * in its old place), a step of each in turn, so that the processor waits on the two chains'
 * misses together; a 100,000-member set spends most of a ZADD in them. The second descent's
 * predecessors are then translated to the set without x: x itself becomes its own
 * predecessor on that level, and a node after x has one rank less.
 */
static void sl_move(keel_zset_t *z, keel_zset_node_t *x, double score)
{
    keel_zset_node_t *uo[KEEL_ZSET_LEVEL_MAX], *un[KEEL_ZSET_LEVEL_MAX];
    uint64_t ro[KEEL_ZSET_LEVEL_MAX], rn[KEEL_ZSET_LEVEL_MAX];
    const uint8_t *m = keel_zset_member(x);
    keel_zset_node_t *a = z->header, *b = z->header;
    uint64_t ra = 0, rb = 0;
    uint32_t levels = z->level;
    for (int i = (int)levels - 1; i >= 0; i--) {
        int da = 0, db = 0; /* each descent done on this level */
        while (!da || !db) {
            if (!da) {
                keel_zset_node_t *f = a->lv[i].forward;
                if (f && f != x && node_cmp(f, x) < 0) {
                    ra += a->lv[i].span;
                    a = f;
                } else {
                    da = 1;
                }
            }
            if (!db) {
                keel_zset_node_t *f = b->lv[i].forward;
                if (f &&
                    keel_zset_cmp(f->score, keel_zset_member(f), f->len, score, m, x->len) < 0) {
                    rb += b->lv[i].span;
                    b = f;
                } else {
                    db = 1;
                }
            }
        }
        uo[i] = a;
        ro[i] = ra;
        un[i] = b;
        rn[i] = rb;
    }
    uint64_t rx = ro[0] + 1; /* x's own rank */
    sl_unlink_at(z, x, uo);
    for (uint32_t i = 0; i < levels; i++) {
        if (un[i] == x) {
            un[i] = uo[i];
            rn[i] = ro[i];
        } else if (rn[i] > rx) {
            rn[i]--;
        }
    }
    x->score = score;
    sl_link_at(z, x, un, rn);
}

void keel_zset_insert(keel_zset_t *z, keel_zset_node_t *x)
{
    assert(z->length + 1 <= z->nbuckets && x->level <= z->header_levels);
    assert(keel_zset_find(z, keel_zset_member(x), x->len) == NULL);
    chain_insert(z->buckets, z->nbuckets, x);
    sl_link(z, x);
    z->node_bytes += node_size(x->level, x->len);
}

void keel_zset_rescore(keel_zset_t *z, keel_zset_node_t *x, double score)
{
    assert(!isnan(score));
    /* in place when the order does not change (Redis zslUpdateScore's fast path) */
    keel_zset_node_t *prev = x->backward, *next = x->lv[0].forward;
    if ((prev == NULL || keel_zset_cmp(prev->score, keel_zset_member(prev), prev->len, score,
                                       keel_zset_member(x), x->len) < 0) &&
        (next == NULL || keel_zset_cmp(next->score, keel_zset_member(next), next->len, score,
                                       keel_zset_member(x), x->len) > 0)) {
        x->score = score;
        return;
    }
    sl_move(z, x, score);
}

void keel_zset_trim(keel_zset_t *z)
{
    if (z->header_levels <= z->level)
        return;
    /* best effort: a failed shrink keeps the bigger block, still counted as it is */
    keel_zset_node_t *h = realloc(z->header, node_size(z->level, 0));
    if (h == NULL)
        return;
    h->level = z->header_levels = z->level;
    z->header = h;
}

void keel_zset_delete(keel_zset_t *z, keel_zset_node_t *x)
{
    keel_zset_node_t **pp = &z->buckets[x->hash & (z->nbuckets - 1)];
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    sl_unlink(z, x);
    z->node_bytes -= node_size(x->level, x->len);
    free(x);
    keel_zset_trim(z);
    /* shrink when an eighth full (best effort: a failed allocation keeps the big table) */
    if (z->nbuckets > BUCKETS_MIN && z->length < z->nbuckets / 8) {
        uint64_t nb = z->nbuckets;
        while (nb > BUCKETS_MIN && z->length < nb / 4)
            nb /= 2;
        resize(z, nb);
    }
}

keel_zset_node_t *keel_zset_first(const keel_zset_t *z)
{
    assert(!keel__zset_packed(z));
    return z->header->lv[0].forward;
}

keel_zset_node_t *keel_zset_last(const keel_zset_t *z)
{
    assert(!keel__zset_packed(z));
    return z->tail;
}

uint64_t keel_zset_rank(const keel_zset_t *z, const keel_zset_node_t *x)
{
    uint64_t rank = 0;
    const keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--) {
        while (p->lv[i].forward && node_cmp(p->lv[i].forward, x) <= 0) {
            rank += p->lv[i].span;
            p = p->lv[i].forward;
        }
        if (p == x)
            return rank - 1;
    }
    assert(0 && "node not in its set");
    return 0;
}

keel_zset_node_t *keel_zset_at(const keel_zset_t *z, uint64_t r)
{
    assert(!keel__zset_packed(z) && r < z->length);
    uint64_t traversed = 0;
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--) {
        while (p->lv[i].forward && traversed + p->lv[i].span <= r + 1) {
            traversed += p->lv[i].span;
            p = p->lv[i].forward;
        }
        if (traversed == r + 1)
            return p;
    }
    assert(0 && "rank past the end");
    return NULL;
}

/* ---- score ranges ---------------------------------------------------------------------- */

int keel_zset_score_gte_min(double v, const keel_zset_range_t *r)
{
    return r->minex ? v > r->min : v >= r->min;
}

int keel_zset_score_lte_max(double v, const keel_zset_range_t *r)
{
    return r->maxex ? v < r->max : v <= r->max;
}

static int in_range(const keel_zset_t *z, const keel_zset_range_t *r)
{
    assert(!keel__zset_packed(z));
    if (r->min > r->max || (r->min == r->max && (r->minex || r->maxex)))
        return 0;
    if (z->tail == NULL || !keel_zset_score_gte_min(z->tail->score, r))
        return 0;
    return keel_zset_score_lte_max(z->header->lv[0].forward->score, r);
}

keel_zset_node_t *keel_zset_first_in_range(const keel_zset_t *z, const keel_zset_range_t *r)
{
    if (!in_range(z, r))
        return NULL;
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--)
        while (p->lv[i].forward && !keel_zset_score_gte_min(p->lv[i].forward->score, r))
            p = p->lv[i].forward;
    p = p->lv[0].forward;
    return p && keel_zset_score_lte_max(p->score, r) ? p : NULL;
}

keel_zset_node_t *keel_zset_last_in_range(const keel_zset_t *z, const keel_zset_range_t *r)
{
    if (!in_range(z, r))
        return NULL;
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--)
        while (p->lv[i].forward && keel_zset_score_lte_max(p->lv[i].forward->score, r))
            p = p->lv[i].forward;
    return p != z->header && keel_zset_score_gte_min(p->score, r) ? p : NULL;
}

/* ---- lex ranges ---------------------------------------------------------------------- */

int keel_zset_lex_gte_min(const uint8_t *m, size_t n, const keel_zset_lex_t *r)
{
    if (r->minkind != 0)
        return r->minkind < 0;
    int c = keel_zset_lex_cmp(m, n, r->min, r->minlen);
    return r->minex ? c > 0 : c >= 0;
}

int keel_zset_lex_lte_max(const uint8_t *m, size_t n, const keel_zset_lex_t *r)
{
    if (r->maxkind != 0)
        return r->maxkind > 0;
    int c = keel_zset_lex_cmp(m, n, r->max, r->maxlen);
    return r->maxex ? c < 0 : c <= 0;
}

/* Redis sdscmplex of the two ends ("-" below all, "+" above all). */
static int lex_ends_cmp(const keel_zset_lex_t *r)
{
    if (r->minkind == r->maxkind && r->minkind != 0)
        return 0;
    if (r->minkind < 0 || r->maxkind > 0)
        return -1;
    if (r->minkind > 0 || r->maxkind < 0)
        return 1;
    return keel_zset_lex_cmp(r->min, r->minlen, r->max, r->maxlen);
}

static int lex_in_range(const keel_zset_t *z, const keel_zset_lex_t *r)
{
    assert(!keel__zset_packed(z));
    int c = lex_ends_cmp(r);
    if (c > 0 || (c == 0 && (r->minex || r->maxex)))
        return 0;
    const keel_zset_node_t *t = z->tail, *h = z->header->lv[0].forward;
    if (t == NULL || !keel_zset_lex_gte_min(keel_zset_member(t), t->len, r))
        return 0;
    return keel_zset_lex_lte_max(keel_zset_member(h), h->len, r);
}

keel_zset_node_t *keel_zset_first_in_lex(const keel_zset_t *z, const keel_zset_lex_t *r)
{
    if (!lex_in_range(z, r))
        return NULL;
    keel_zset_node_t *p;
    if (z->listpack) {
        for (p = z->header->lv[0].forward; p; p = p->lv[0].forward)
            if (keel_zset_lex_gte_min(keel_zset_member(p), p->len, r))
                break;
    } else {
        p = z->header;
        for (int i = (int)z->level - 1; i >= 0; i--)
            while (p->lv[i].forward && !keel_zset_lex_gte_min(keel_zset_member(p->lv[i].forward),
                                                              p->lv[i].forward->len, r))
                p = p->lv[i].forward;
        p = p->lv[0].forward;
    }
    return p && keel_zset_lex_lte_max(keel_zset_member(p), p->len, r) ? p : NULL;
}

keel_zset_node_t *keel_zset_last_in_lex(const keel_zset_t *z, const keel_zset_lex_t *r)
{
    if (!lex_in_range(z, r))
        return NULL;
    keel_zset_node_t *p;
    if (z->listpack) {
        for (p = z->tail; p; p = p->backward)
            if (keel_zset_lex_lte_max(keel_zset_member(p), p->len, r))
                break;
    } else {
        p = z->header;
        for (int i = (int)z->level - 1; i >= 0; i--)
            while (p->lv[i].forward && keel_zset_lex_lte_max(keel_zset_member(p->lv[i].forward),
                                                             p->lv[i].forward->len, r))
                p = p->lv[i].forward;
        if (p == z->header)
            p = NULL;
    }
    return p && keel_zset_lex_gte_min(keel_zset_member(p), p->len, r) ? p : NULL;
}

keel_zset_node_t *keel_zset_lex_seek(const keel_zset_t *z, const keel_zset_lex_t *r)
{
    keel_zset_node_t *p = z->header;
    for (int i = (int)z->level - 1; i >= 0; i--)
        while (p->lv[i].forward &&
               !keel_zset_lex_gte_min(keel_zset_member(p->lv[i].forward), p->lv[i].forward->len, r))
            p = p->lv[i].forward;
    return p->lv[0].forward;
}

/* ---- scan ------------------------------------------------------------------------------- */

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    v = ((v >> 8) & 0x00ff00ff00ff00ffull) | ((v & 0x00ff00ff00ff00ffull) << 8);
    v = ((v >> 16) & 0x0000ffff0000ffffull) | ((v & 0x0000ffff0000ffffull) << 16);
    return (v >> 32) | (v << 32);
}

uint64_t keel_zset_scan(const keel_zset_t *z, uint64_t v,
                        void (*fn)(void *data, const keel_zset_node_t *x), void *data)
{
    assert(!keel__zset_packed(z));
    if (z->nbuckets == 0)
        return 0;
    uint64_t mask = z->nbuckets - 1;
    for (const keel_zset_node_t *x = z->buckets[v & mask]; x; x = x->hnext)
        fn(data, x);
    v |= ~mask;
    return rev64(rev64(v) + 1);
}

/* ---- snapshot body ------------------------------------------------------------------- */

int keel_zset_encode(const keel_zset_t *z, keel_zset_sink_fn sink, void *data)
{
    uint8_t h[ENCODE_HEADER_BYTES];
    uint64_t length = keel_zset_len(z);
    h[0] = (uint8_t)keel_zset_is_listpack(z);
    keel_put_u64(h + 1, length);
    /* a table whose shrink failed (no memory) is written as the loader accepts it; a
       listpack-encoded set has no table while packed, and writes the same count packed or
       not (a pack that failed for want of memory changes no snapshot) */
    if (keel__zset_packed(z)) {
        keel_put_u64(h + 9, keel__zset_canonical_buckets(length));
        int rc = sink(data, h, sizeof(h));
        return rc == 0 ? keel__zset_pk_encode(z, sink, data) : rc;
    }
    uint64_t nb = z->nbuckets;
    if (z->listpack || nb > 16 * (length > BUCKETS_MIN ? length : BUCKETS_MIN))
        nb = keel__zset_canonical_buckets(length);
    keel_put_u64(h + 9, nb);
    int rc = sink(data, h, sizeof(h));
    for (const keel_zset_node_t *x = keel_zset_first(z); x && rc == 0; x = x->lv[0].forward) {
        uint8_t r[8];
        keel_put_u32(r, x->len);
        rc = sink(data, r, 4);
        if (rc == 0)
            rc = sink(data, keel_zset_member(x), x->len);
        uint64_t bits;
        memcpy(&bits, &x->score, sizeof(bits));
        keel_put_u64(r, bits);
        if (rc == 0)
            rc = sink(data, r, 8);
    }
    return rc;
}

int keel_zset_decode(const uint8_t *p, size_t len, keel_zset_t **out)
{
    if (len < ENCODE_HEADER_BYTES || p[0] > 1)
        return KEEL_EPROTO;
    uint64_t n = keel_get_u64(p + 1), nb = keel_get_u64(p + 9);
    /* every member takes at least 12 bytes: a count past that is a lie; the bucket count
       is one the growth and shrink rules can reach: a power of two, 0 only when empty */
    if (n > KEEL_ZSET_MEMBERS_MAX || n > (len - ENCODE_HEADER_BYTES) / 12 || nb < n ||
        (nb & (nb - 1)) != 0 || (nb != 0 && nb < BUCKETS_MIN) ||
        nb > 16 * (n > BUCKETS_MIN ? n : BUCKETS_MIN) ||
        (p[0] == 1 && n > KEEL_ZSET_LISTPACK_ENTRIES_MAX)) /* never written: ZSCAN's bound */
        return KEEL_EPROTO;
    keel_zset_t *z = keel_zset_new();
    if (z == NULL)
        return KEEL_ENOMEM;
    z->listpack = p[0];
    int rc = nb ? resize(z, nb) : 0;
    size_t pos = ENCODE_HEADER_BYTES;
    const keel_zset_node_t *prev = NULL;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        if (len - pos < 12) {
            rc = KEEL_EPROTO;
            break;
        }
        size_t ml = keel_get_u32(p + pos);
        if (ml > KEEL_ZSET_MEMBER_BYTES_MAX || ml > len - pos - 12 ||
            (p[0] == 1 && ml > KEEL_ZSET_LISTPACK_VALUE_BYTES_MAX)) {
            rc = KEEL_EPROTO;
            break;
        }
        const uint8_t *m = p + pos + 4;
        uint64_t bits = keel_get_u64(p + pos + 4 + ml);
        double score;
        memcpy(&score, &bits, sizeof(score));
        if (isnan(score) || (prev && keel_zset_cmp(prev->score, keel_zset_member(prev), prev->len,
                                                   score, m, ml) >= 0)) {
            rc = KEEL_EPROTO; /* out of order */
            break;
        }
        if (keel_zset_find(z, m, ml) != NULL) {
            rc = KEEL_EPROTO; /* a member twice, with two scores */
            break;
        }
        keel_zset_node_t *x = keel_zset_node_new(m, ml, score);
        if (x == NULL || keel_zset_reserve(z, 1, x->level) != 0) {
            keel_zset_node_free(x);
            rc = KEEL_ENOMEM;
            break;
        }
        keel_zset_insert(z, x);
        prev = x;
        pos += 12 + ml;
    }
    if (rc == 0 && pos != len)
        rc = KEEL_EPROTO;
    if (rc != 0) {
        keel_zset_free(z);
        return rc;
    }
    *out = keel_zset_pack(z); /* a listpack-encoded set rests packed (best effort) */
    return 0;
}
