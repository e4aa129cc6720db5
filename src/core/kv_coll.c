/* kv_coll.c - the hash-ordered table behind hashes and sets (kv_coll.h): its two layouts,
   the incremental resize, iteration in hash order, snapshot bodies and the type rows. What
   the commands share on top of it is in kv_coll_cmd.c. */
#include "core/kv_coll.h"

#include "base/bytes.h"
#include "base/hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define BITS_MIN 2u
#define BITS_MAX 40u

/* A chained item of a big table: the item (kv_coll.h) is its `tag` (KEEL__KC_ITEM_BIG), the
   field and value bytes follow the pad byte. */
typedef struct node {
    struct node *next;
    uint64_t hash;
    uint32_t flen, vlen;
    uint8_t tag, pad;
} node_t;
#define NODE_HEADER_BYTES (offsetof(node_t, pad) + 1)

static keel__kc_item_t *node_item(node_t *n)
{
    return (keel__kc_item_t *)(void *)&n->tag;
}

static node_t *item_node(const keel__kc_item_t *it)
{
    return (node_t *)(uintptr_t)((const uint8_t *)it - offsetof(node_t, tag));
}

static size_t node_bytes(const keel__kc_item_t *it)
{
    return NODE_HEADER_BYTES + keel__kc_fl(it) + keel__kc_vl(it);
}

/* An item's size in a packed table: two length bytes, then its bytes. */
static size_t psize(const keel__kc_item_t *it)
{
    return 2 + keel__kc_fl(it) + keel__kc_vl(it);
}

static int packed(const keel__kc_t *t)
{
    return !t->chained;
}

static keel__kc_big_t *big(const keel__kc_t *t)
{
    assert(t->chained);
    return keel__kc_big(t);
}

static size_t buckets(const keel__kc_t *t)
{
    return (size_t)1 << big(t)->bits;
}

static node_t **bucket_array(const keel__kc_t *t)
{
    return (node_t **)big(t)->b;
}

/* Whether hash h's chain is still in the old array of a table whose buckets are moving. */
static int in_old(const keel__kc_big_t *g, uint64_t h)
{
    return g->ob != NULL && (h >> (64 - g->obits)) >= g->moved;
}

/* The head of hash h's chain, in whichever array holds it. */
static node_t **slot(const keel__kc_t *t, uint64_t h)
{
    const keel__kc_big_t *g = big(t);
    if (in_old(g, h))
        return &((node_t **)g->ob)[h >> (64 - g->obits)];
    return &bucket_array(t)[h >> (64 - g->bits)];
}

/* The first hash of the chain after hash h's, in hash order (crossing from the new array to
   the old one where the moved range ends): 1 and *next, or 0 when h's chain is the last. */
static int next_chain(const keel__kc_t *t, uint64_t h, uint64_t *next)
{
    const keel__kc_big_t *g = big(t);
    if (in_old(g, h)) {
        uint64_t i = h >> (64 - g->obits);
        if (i + 1 == (uint64_t)1 << g->obits)
            return 0;
        *next = (i + 1) << (64 - g->obits);
        return 1;
    }
    uint64_t i = h >> (64 - g->bits);
    uint64_t end = g->ob != NULL ? g->moved << (64 - g->obits) : 0; /* the moved range's */
    if (i + 1 == (uint64_t)1 << g->bits) {
        if (g->ob == NULL)
            return 0;
        *next = end; /* a shrink's last new bucket holds part of its range */
        return 1;
    }
    *next = (i + 1) << (64 - g->bits);
    if (g->ob != NULL && *next > end)
        *next = end; /* the same: the rest of this bucket's range is in the old array */
    return 1;
}

/* Moves the next old bucket's chain into the new array, appending (each lands after every
   item already in its new chain: those came from the old buckets before it). */
static void move_one(keel__kc_t *t)
{
    keel__kc_big_t *g = big(t);
    node_t **old = &((node_t **)g->ob)[g->moved];
    node_t **tail = NULL;
    size_t tail_b = 0;
    while (*old) {
        node_t *n = *old;
        *old = n->next;
        n->next = NULL;
        size_t b = (size_t)(n->hash >> (64 - g->bits));
        if (tail == NULL || tail_b != b) {
            tail = &bucket_array(t)[b];
            while (*tail)
                tail = &(*tail)->next;
            tail_b = b;
        }
        *tail = n;
        tail = &n->next;
    }
    if (++g->moved == (uint64_t)1 << g->obits) {
        g->bytes -= ((size_t)1 << g->obits) * sizeof(node_t *);
        free(g->ob);
        g->ob = NULL;
        g->moved = 0;
    }
}

/* Old buckets moved per put or delete: a doubling is done before the table is 1/16 fuller. */
#define MOVE_STEP 16u

static void move_some(keel__kc_t *t)
{
    for (unsigned k = 0; k < MOVE_STEP && big(t)->ob != NULL; k++)
        move_one(t);
}

/* The allocation of a packed table with room for cap item bytes (never under sizeof, so the
   padding of the header is always there). */
static size_t pk_alloc(size_t cap)
{
    assert(cap <= KEEL__KC_PACKED_BYTES_MAX);
    size_t n = KEEL__KC_HEADER_BYTES + cap;
    return n < sizeof(keel__kc_t) ? sizeof(keel__kc_t) : n;
}

keel__kc_t *keel__kc_new(uint64_t seed)
{
    keel__kc_t *t = malloc(pk_alloc(0));
    if (t == NULL)
        return NULL;
    memset(t, 0, pk_alloc(0)); /* packed, no items yet */
    t->seed = seed;
    return t;
}

/* Frees every node of an array of n chains, and the array. */
static void free_chains(void *array, size_t n)
{
    node_t **b = array;
    for (size_t i = 0; i < n; i++) {
        node_t *x = b[i];
        while (x) {
            node_t *next = x->next;
            free(x);
            x = next;
        }
    }
    free(b);
}

void keel__kc_free(keel__kc_t *t)
{
    if (t == NULL)
        return;
    if (!packed(t)) {
        keel__kc_big_t *g = big(t);
        free_chains(g->b, (size_t)1 << g->bits);
        if (g->ob != NULL)
            free_chains(g->ob, (size_t)1 << g->obits);
    }
    free(t);
}

uint64_t keel__kc_hash(const keel__kc_t *t, const uint8_t *f, size_t n)
{
    return keel_hash64(f, n, t->seed);
}

/* An item's hash: kept in a big table's node, computed again in a packed table. */
static uint64_t ihash(const keel__kc_t *t, const keel__kc_item_t *it)
{
    return packed(t) ? keel__kc_hash(t, keel__kc_f(it), keel__kc_fl(it)) : item_node(it)->hash;
}

keel__kc_item_t *keel__kc_item_new(const keel__kc_t *t, const uint8_t *f, size_t fl,
                                   const uint8_t *v, size_t vl)
{
    assert(fl <= UINT32_MAX && vl <= UINT32_MAX);
    node_t *n = malloc(NODE_HEADER_BYTES + fl + vl);
    if (n == NULL)
        return NULL;
    n->next = NULL;
    n->hash = keel__kc_hash(t, f, fl);
    n->flen = (uint32_t)fl;
    n->vlen = (uint32_t)vl;
    n->tag = KEEL__KC_ITEM_BIG;
    n->pad = 0;
    uint8_t *d = (uint8_t *)n + NODE_HEADER_BYTES;
    if (fl)
        memcpy(d, f, fl);
    if (vl)
        memcpy(d + fl, v, vl);
    return node_item(n);
}

void keel__kc_item_free(keel__kc_item_t *it)
{
    if (it != NULL)
        free(item_node(it));
}

/* The total order of items: hash, then length, then bytes. */
static int cmp(uint64_t h, const uint8_t *f, size_t n, uint64_t ih, const keel__kc_item_t *it)
{
    if (h != ih)
        return h < ih ? -1 : 1;
    size_t il = keel__kc_fl(it);
    if (n != il)
        return n < il ? -1 : 1;
    return n ? memcmp(f, keel__kc_f(it), n) : 0;
}

/* ---- packed tables: the items back to back in hash order, after the header -------------- */

static keel__kc_item_t *pk_first(const keel__kc_t *t)
{
    return t->used ? (keel__kc_item_t *)(uintptr_t)t->items : NULL;
}

static keel__kc_item_t *pk_next(const keel__kc_t *t, const keel__kc_item_t *it)
{
    const uint8_t *p = (const uint8_t *)it + psize(it);
    return p < t->items + t->used ? (keel__kc_item_t *)(uintptr_t)p : NULL;
}

/* The first item at or after (h, f) in the order, or NULL; *found when it is f itself. */
static keel__kc_item_t *pk_locate(const keel__kc_t *t, uint64_t h, const uint8_t *f, size_t n,
                                  int *found)
{
    for (keel__kc_item_t *it = pk_first(t); it; it = pk_next(t, it)) {
        int r = cmp(h, f, n, ihash(t, it), it);
        if (r <= 0) {
            *found = r == 0;
            return it;
        }
    }
    *found = 0;
    return NULL;
}

static keel__kc_item_t *pk_find(const keel__kc_t *t, const uint8_t *f, size_t n)
{
    for (keel__kc_item_t *it = pk_first(t); it; it = pk_next(t, it))
        if (keel__kc_fl(it) == n && (n == 0 || memcmp(keel__kc_f(it), f, n) == 0))
            return it;
    return NULL;
}

/* Links node item it into a packed table with room reserved for it (keel__kc_reserve). */
static int pk_put(keel__kc_t *t, keel__kc_item_t *it)
{
    size_t fl = keel__kc_fl(it), vl = keel__kc_vl(it);
    /* a field already here keeps its place (its hash is the same): found by its bytes,
       without hashing every item as the walk in hash order does */
    keel__kc_item_t *at = pk_find(t, keel__kc_f(it), fl);
    int found = at != NULL;
    if (!found)
        at = pk_locate(t, item_node(it)->hash, keel__kc_f(it), fl, &found);
    uint8_t *end = t->items + t->used;
    uint8_t *p = at ? (uint8_t *)at : end;
    size_t old = found ? psize(at) : 0, add = psize(it);
    assert(t->used - old + add <= t->cap &&
           (size_t)t->pcount + !found <= KEEL__KC_PACKED_ITEMS_MAX);
    memmove(p + add, p + old, (size_t)(end - p) - old);
    p[0] = (uint8_t)fl;
    p[1] = (uint8_t)vl;
    memcpy(p + 2, keel__kc_f(it), fl + vl);
    t->used = (uint32_t)(t->used - old + add) & 0xFFFu;
    t->pcount = (uint32_t)(t->pcount + !found) & 0x1Fu;
    keel__kc_item_free(it);
    return !found;
}

/*
 * Moves a packed table's items into nodes and buckets, and grows its header to hold a
 * keel__kc_big_t (everything allocated first: on ENOMEM nothing changed). Walking in hash
 * order appends to each chain in order. *tp moves.
 */
static int to_big(keel__kc_t **tp, unsigned bits)
{
    keel__kc_t *t = *tp;
    node_t **nb = calloc((size_t)1 << bits, sizeof(*nb));
    node_t *head = NULL, **tail = &head;
    size_t bytes = sizeof(*t) + sizeof(keel__kc_big_t) + ((size_t)1 << bits) * sizeof(*nb);
    uint32_t count = t->pcount;
    for (keel__kc_item_t *it = nb ? pk_first(t) : NULL; it; it = pk_next(t, it)) {
        keel__kc_item_t *x = keel__kc_item_new(t, keel__kc_f(it), keel__kc_fl(it), keel__kc_val(it),
                                               keel__kc_vl(it));
        if (x == NULL) {
            free(nb);
            nb = NULL;
            break;
        }
        *tail = item_node(x);
        tail = &(*tail)->next;
        bytes += node_bytes(x);
    }
    keel__kc_t *nt = nb ? realloc(t, sizeof(*t) + sizeof(keel__kc_big_t)) : NULL;
    if (nt == NULL) {
        free(nb);
        while (head) {
            node_t *next = head->next;
            free(head);
            head = next;
        }
        return KEEL_ENOMEM;
    }
    node_t *last = NULL;
    size_t last_b = 0;
    while (head) {
        node_t *next = head->next;
        size_t b = (size_t)(head->hash >> (64 - bits));
        head->next = NULL;
        if (last && last_b == b)
            last->next = head;
        else
            nb[b] = head;
        last = head;
        last_b = b;
        head = next;
    }
    nt->used = nt->cap = nt->pcount = 0;
    nt->chained = 1;
    *keel__kc_big(nt) =
        (keel__kc_big_t){.b = nb, .bytes = bytes, .count = count, .bits = (uint8_t)bits};
    *tp = nt;
    return 0;
}

int keel__kc_reserve(keel__kc_t **tp, keel__kc_item_t *const *items, size_t n)
{
    keel__kc_t *t = *tp;
    if (!packed(t))
        return 0;
    /*
     * A field already here grows the block by the difference (if any), a new one by its size
     * and one item. A field named twice counts twice: more than the puts need, never less,
     * at every step between them. So a value rewritten at its size (HSET of a field to a
     * same-length value, HINCRBY) needs no realloc, and a full table stays packed.
     */
    size_t more = 0, add = 0, over = 0;
    for (size_t i = 0; i < n && !over; i++) {
        if (items[i] == NULL)
            continue;
        size_t fl = keel__kc_fl(items[i]), sz = psize(items[i]);
        over = fl + keel__kc_vl(items[i]) > KEEL__KC_PACKED_ITEM_BYTES_MAX;
        const keel__kc_item_t *old = over ? NULL : pk_find(t, keel__kc_f(items[i]), fl);
        if (old == NULL)
            more++, add += sz;
        else if (sz > psize(old))
            add += sz - psize(old);
    }
    if (over || t->pcount + more > KEEL__KC_PACKED_ITEMS_MAX ||
        t->used + add > KEEL__KC_PACKED_BYTES_MAX) {
        unsigned bits = BITS_MIN;
        while (((size_t)1 << bits) < t->pcount + more && bits < BITS_MAX)
            bits++;
        return to_big(tp, bits);
    }
    if (t->used + add <= t->cap)
        return 0;
    /* used + add <= KEEL__KC_PACKED_BYTES_MAX: the 12-bit cap holds it */
    keel__kc_t *nt = realloc(t, pk_alloc(t->used + add));
    if (nt == NULL)
        return KEEL_ENOMEM;
    nt->cap = (uint32_t)(nt->used + add) & 0xFFFu;
    *tp = nt;
    return 0;
}

void keel__kc_trim(keel__kc_t **tp)
{
    keel__kc_t *t = *tp;
    if (!packed(t) || t->cap == t->used)
        return;
    keel__kc_t *nt = realloc(t, pk_alloc(t->used));
    if (nt == NULL)
        return; /* the bigger block still holds the items */
    nt->cap = nt->used;
    *tp = nt;
}

keel__kc_t *keel__kc_packed_of(uint64_t seed, const uint8_t *const *m, const size_t *l, size_t n)
{
    assert(n <= KEEL__KC_PACKED_ITEMS_MAX);
    uint64_t h[KEEL__KC_PACKED_ITEMS_MAX];
    uint8_t at[KEEL__KC_PACKED_ITEMS_MAX]; /* m's indexes in the table's order */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        assert(l[i] <= KEEL__KC_PACKED_ITEM_BYTES_MAX);
        h[i] = keel_hash64(m[i], l[i], seed);
        bytes += 2 + l[i];
        size_t k = i; /* insertion by (hash, length, bytes): n <= 16 */
        for (; k > 0; k--) {
            size_t j = at[k - 1];
            int later = h[j] != h[i]   ? h[j] > h[i]
                        : l[j] != l[i] ? l[j] > l[i]
                                       : memcmp(m[j], m[i], l[i]) > 0;
            if (!later)
                break;
            at[k] = at[k - 1];
        }
        at[k] = (uint8_t)i;
    }
    keel__kc_t *t = malloc(pk_alloc(bytes));
    if (t == NULL)
        return NULL;
    memset(t, 0, KEEL__KC_HEADER_BYTES);
    t->seed = seed;
    uint8_t *p = t->items;
    for (size_t k = 0; k < n; k++) {
        size_t i = at[k];
        p[0] = (uint8_t)l[i];
        p[1] = 0;
        memcpy(p + 2, m[i], l[i]);
        p += 2 + l[i];
    }
    t->used = t->cap = (uint32_t)bytes & 0xFFFu;
    t->pcount = (uint32_t)n & 0x1Fu;
    return t;
}

/* ---- big tables: chained buckets, each chain in order ------------------------------------ */

/* The link where field f is or would go. */
static node_t **locate(const keel__kc_t *t, uint64_t h, const uint8_t *f, size_t n, int *found)
{
    node_t **l = slot(t, h);
    int r = 1;
    while (*l && (r = cmp(h, f, n, (*l)->hash, node_item(*l))) > 0)
        l = &(*l)->next;
    *found = *l != NULL && r == 0;
    return l;
}

keel__kc_item_t *keel__kc_find(const keel__kc_t *t, const uint8_t *f, size_t n)
{
    if (packed(t))
        return pk_find(t, f, n);
    int found;
    node_t **l = locate(t, keel__kc_hash(t, f, n), f, n, &found);
    return found ? node_item(*l) : NULL;
}

/* Starts moving the chains to 2^bits buckets (move_some does it); on ENOMEM, or while a
   move is under way, nothing changes but chain lengths (the order is the same). */
static void resize(keel__kc_t *t, unsigned bits)
{
    keel__kc_big_t *g = big(t);
    if (g->ob != NULL)
        return;
    node_t **nb = calloc((size_t)1 << bits, sizeof(*nb));
    if (nb == NULL)
        return;
    g->bytes += ((size_t)1 << bits) * sizeof(*nb);
    g->ob = g->b;
    g->obits = g->bits;
    g->moved = 0;
    g->b = nb;
    g->bits = (uint8_t)bits;
}

int keel__kc_put(keel__kc_t *t, keel__kc_item_t *it)
{
    if (packed(t))
        return pk_put(t, it);
    keel__kc_big_t *g = big(t);
    move_some(t);
    if (g->count + 1 > buckets(t) && g->bits < BITS_MAX)
        resize(t, g->bits + 1u);
    node_t *x = item_node(it);
    int found;
    node_t **l = locate(t, x->hash, keel__kc_f(it), keel__kc_fl(it), &found);
    if (found) {
        node_t *old = *l;
        x->next = old->next;
        *l = x;
        g->bytes = g->bytes - node_bytes(node_item(old)) + node_bytes(it);
        free(old);
        return 0;
    }
    x->next = *l;
    *l = x;
    g->count++;
    g->bytes += node_bytes(it);
    return 1;
}

int keel__kc_del(keel__kc_t *t, const uint8_t *f, size_t n)
{
    if (packed(t)) {
        keel__kc_item_t *it = pk_find(t, f, n);
        if (it == NULL)
            return 0;
        uint8_t *p = (uint8_t *)it, *end = t->items + t->used;
        size_t sz = psize(it);
        memmove(p, p + sz, (size_t)(end - p) - sz); /* items before it stay where they are */
        t->used = (uint32_t)(t->used - sz) & 0xFFFu;
        t->pcount = (uint32_t)(t->pcount - 1u) & 0x1Fu;
        return 1;
    }
    int found;
    node_t **l = locate(t, keel__kc_hash(t, f, n), f, n, &found);
    if (!found)
        return 0; /* nothing changes, not even a move: callers count no change in memory */
    node_t *x = *l;
    *l = x->next;
    keel__kc_big_t *g = big(t);
    g->count--;
    g->bytes -= node_bytes(node_item(x));
    free(x);
    move_some(t);
    if (g->bits > BITS_MIN && g->count < buckets(t) / 8)
        resize(t, g->bits - 1u);
    return 1;
}

/* The first node with hash >= h, in hash order; NULL when there is none. */
static node_t *node_at_or_after(const keel__kc_t *t, uint64_t h)
{
    for (;;) {
        for (node_t *n = *slot(t, h); n; n = n->next)
            if (n->hash >= h)
                return n;
        if (!next_chain(t, h, &h))
            return NULL;
    }
}

/* The first item with hash >= h, in hash order; NULL when there is none. */
static const keel__kc_item_t *at_or_after(const keel__kc_t *t, uint64_t h)
{
    if (packed(t)) {
        for (const keel__kc_item_t *it = pk_first(t); it; it = pk_next(t, it))
            if (ihash(t, it) >= h)
                return it;
        return NULL;
    }
    node_t *n = node_at_or_after(t, h);
    return n ? node_item(n) : NULL;
}

const keel__kc_item_t *keel__kc_pick(const keel__kc_t *t, uint64_t r)
{
    const keel__kc_item_t *it = at_or_after(t, r);
    return it ? it : keel__kc_first(t);
}

const keel__kc_item_t *keel__kc_first(const keel__kc_t *t)
{
    return packed(t) ? pk_first(t) : at_or_after(t, 0);
}

const keel__kc_item_t *keel__kc_next(const keel__kc_t *t, const keel__kc_item_t *it)
{
    if (packed(t))
        return pk_next(t, it);
    const node_t *n = item_node(it);
    if (n->next)
        return node_item(n->next);
    uint64_t h;
    if (!next_chain(t, n->hash, &h))
        return NULL;
    node_t *x = node_at_or_after(t, h);
    return x ? node_item(x) : NULL;
}

uint64_t keel__kc_scan(const keel__kc_t *t, uint64_t cursor, size_t count,
                       void (*fn)(void *data, const keel__kc_item_t *it), void *data)
{
    const keel__kc_item_t *it = at_or_after(t, cursor);
    size_t n = 0;
    uint64_t h = it ? ihash(t, it) : 0;
    while (it && (n < count || (n > 0 && h == cursor))) {
        fn(data, it);
        n++;
        cursor = h;
        it = keel__kc_next(t, it);
        h = it ? ihash(t, it) : 0;
    }
    /* the next item's hash is > every hash returned, so never 0 unless the walk ended */
    return it ? h : 0;
}

/* ---- snapshot body ----------------------------------------------------------------- */

#define BODY_HEADER_BYTES 17u /* seed u64, flags u8, count u64 */

int keel__kc_write(const keel__kc_t *t, int with_values, keel_kv_sink_fn sink, void *data)
{
    uint8_t h[BODY_HEADER_BYTES];
    keel_put_u64(h, t->seed);
    h[8] = t->hashtable;
    keel_put_u64(h + 9, keel__kc_count(t));
    int rc = sink(data, h, sizeof(h));
    for (const keel__kc_item_t *it = keel__kc_first(t); it && rc == 0; it = keel__kc_next(t, it)) {
        uint8_t n[4];
        keel_put_u32(n, keel__kc_fl(it));
        rc = sink(data, n, 4);
        if (rc == 0 && keel__kc_fl(it))
            rc = sink(data, keel__kc_f(it), keel__kc_fl(it));
        if (rc == 0 && with_values) {
            keel_put_u32(n, keel__kc_vl(it));
            rc = sink(data, n, 4);
            if (rc == 0 && keel__kc_vl(it))
                rc = sink(data, keel__kc_val(it), keel__kc_vl(it));
        }
    }
    return rc;
}

/* A length-prefixed string at *p: 0 and its bytes, or KEEL_EPROTO. */
static int take(const uint8_t *p, size_t len, size_t *pos, const uint8_t **s, size_t *n)
{
    if (len - *pos < 4)
        return KEEL_EPROTO;
    *n = keel_get_u32(p + *pos);
    *pos += 4;
    if (*n > len - *pos)
        return KEEL_EPROTO;
    *s = p + *pos;
    *pos += *n;
    return 0;
}

int keel__kc_load(const uint8_t *p, size_t len, int with_values, keel__kc_t **out)
{
    if (len < BODY_HEADER_BYTES || p[8] > 1)
        return KEEL_EPROTO;
    uint64_t count = keel_get_u64(p + 9);
    /* every item takes at least 4 (or 8) bytes: a count beyond that is corrupt */
    if (count > KEEL__KC_ITEMS_MAX || count > (len - BODY_HEADER_BYTES) / (with_values ? 8 : 4))
        return KEEL_EPROTO;
    keel__kc_t *t = keel__kc_new(keel_get_u64(p));
    if (t == NULL)
        return KEEL_ENOMEM;
    t->hashtable = p[8];
    unsigned bits = BITS_MIN;
    while (((size_t)1 << bits) < count && bits < BITS_MAX)
        bits++;
    /* a table restored packed or big as its size says: which one is invisible (the order,
       cursors and picks are the hash order's either way) */
    int rc = count > KEEL__KC_PACKED_ITEMS_MAX ? to_big(&t, bits) : 0;
    size_t pos = BODY_HEADER_BYTES;
    for (uint64_t i = 0; i < count && rc == 0; i++) {
        const uint8_t *f, *v = NULL;
        size_t fl, vl = 0;
        rc = take(p, len, &pos, &f, &fl);
        if (rc == 0 && with_values)
            rc = take(p, len, &pos, &v, &vl);
        if (rc != 0)
            break;
        if (keel__kc_find(t, f, fl) != NULL) {
            rc = KEEL_EPROTO; /* a duplicate field */
            break;
        }
        keel__kc_item_t *it = keel__kc_item_new(t, f, fl, v, vl);
        if (it == NULL || keel__kc_reserve(&t, &it, 1) != 0) {
            keel__kc_item_free(it);
            rc = KEEL_ENOMEM;
        } else {
            keel__kc_put(t, it);
        }
    }
    if (rc == 0 && (pos != len || (count == 0)))
        rc = KEEL_EPROTO; /* trailing bytes, or an empty value (a key is never empty) */
    if (rc != 0) {
        keel__kc_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- the type rows --------------------------------------------------------------------- */

static void obj_free(void *o)
{
    keel__kc_free(o);
}

static size_t obj_bytes(const void *o)
{
    return keel__kc_bytes(o);
}

static int hash_write(const void *o, keel_kv_sink_fn sink, void *data)
{
    return keel__kc_write(o, 1, sink, data);
}

static int hash_load(const uint8_t *p, size_t len, void **obj)
{
    return keel__kc_load(p, len, 1, (keel__kc_t **)obj);
}

static int set_write(const void *o, keel_kv_sink_fn sink, void *data)
{
    return keel__kc_write(o, 0, sink, data);
}

static int set_load(const uint8_t *p, size_t len, void **obj)
{
    return keel__kc_load(p, len, 0, (keel__kc_t **)obj);
}

const keel__kv_type_t keel__kv_type_hash = {
    .name = "hash",
    .free = obj_free,
    .bytes = obj_bytes,
    .snap_write = hash_write,
    .snap_load = hash_load,
};

const keel__kv_type_t keel__kv_type_set = {
    .name = "set",
    .free = obj_free,
    .bytes = obj_bytes,
    .snap_write = set_write,
    .snap_load = set_load,
};

const char *keel__kc_encoding(int type, const keel__kc_t *t)
{
    if (type == KEEL__KV_TYPE_HASH)
        return t->hashtable || keel__kc_count(t) > KEEL__KC_HASH_LISTPACK_ENTRIES ? "hashtable"
                                                                                  : "listpack";
    return t->hashtable || keel__kc_count(t) > KEEL__KC_SET_INTSET_ENTRIES ? "hashtable" : "intset";
}
