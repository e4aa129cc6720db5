/* kv_list.c - the list type: a deque of packed chunks (nodes, positions, rebuilding) and
   its row in the type table (free, bytes, snapshot write and load). Its commands:
   kv_list_cmd.c, kv_list_block.c. */
#include "core/kv_list_int.h"

#include "base/bytes.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static size_t varint_len(size_t n)
{
    size_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

size_t keel__kvl_enc_len(size_t n)
{
    return n + 2 * varint_len(n);
}

static size_t node_bytes(uint32_t cap)
{
    return sizeof(lnode_t) + cap;
}

/* Writes one element at p (keel__kvl_enc_len(n) bytes). */
static void put_elem(uint8_t *p, const uint8_t *v, size_t n)
{
    uint8_t t[VARINT_BYTES_MAX];
    size_t k = 0;
    size_t x = n;
    do {
        t[k] = (uint8_t)(x & 0x7f);
        x >>= 7;
        if (x)
            t[k] |= 0x80;
        k++;
    } while (x);
    memcpy(p, t, k);
    if (n)
        memcpy(p + k, v, n);
    for (size_t i = 0; i < k; i++)
        p[k + n + k - 1 - i] = t[i];
}

/* The element starting at off: its bytes and length; returns the next element's offset. */
uint32_t keel__kvl_get_fwd(const lnode_t *nd, uint32_t off, const uint8_t **v, size_t *n)
{
    size_t x = 0, shift = 0, k = 0;
    uint8_t b;
    do {
        b = nd->data[off + k++];
        x |= (size_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    *v = nd->data + off + k;
    *n = x;
    return (uint32_t)(off + 2 * k + x);
}

/* The element ending at end: its bytes and length; returns its start offset. */
static uint32_t get_bwd(const lnode_t *nd, uint32_t end, const uint8_t **v, size_t *n)
{
    size_t x = 0, shift = 0, k = 0;
    uint8_t b;
    do {
        b = nd->data[end - 1 - k++];
        x |= (size_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    uint32_t start = (uint32_t)(end - 2 * k - x);
    *v = nd->data + start + k;
    *n = x;
    return start;
}

klist_t *keel__kvl_list_new(void)
{
    klist_t *l = calloc(1, sizeof(*l));
    if (l)
        l->bytes = sizeof(*l);
    return l;
}

void keel__kvl_list_free(klist_t *l)
{
    if (l == NULL)
        return;
    for (lnode_t *nd = l->first, *next; nd; nd = next) {
        next = nd->next;
        free(nd);
    }
    free(l);
}

static lnode_t *node_new(uint32_t cap, int where)
{
    lnode_t *nd = malloc(node_bytes(cap));
    if (nd == NULL)
        return NULL;
    nd->prev = nd->next = NULL;
    nd->count = 0;
    nd->cap = cap;
    nd->head = nd->tail = where == HEAD ? cap : 0;
    return nd;
}

/* Links nd (not in l) after `after` (NULL: at the front). */
static void link_after(klist_t *l, lnode_t *after, lnode_t *nd)
{
    nd->prev = after;
    nd->next = after ? after->next : l->first;
    if (nd->next)
        nd->next->prev = nd;
    else
        l->last = nd;
    if (after)
        after->next = nd;
    else
        l->first = nd;
    l->bytes += node_bytes(nd->cap);
}

static void unlink_node(klist_t *l, lnode_t *nd)
{
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        l->first = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    else
        l->last = nd->prev;
    l->bytes -= node_bytes(nd->cap);
}

/* After realloc moved a linked node: its neighbours and l point at the new address. */
static void relink(klist_t *l, lnode_t *nd)
{
    if (nd->prev)
        nd->prev->next = nd;
    else
        l->first = nd;
    if (nd->next)
        nd->next->prev = nd;
    else
        l->last = nd;
}

/*
 * Room for enc bytes at `where` of the end node nd: in place, by recentring, or by growing
 * (up to LIST_NODE_BYTES of elements). Returns the node (maybe moved), or NULL when nd
 * cannot take it (a new node is due) or memory ran out (*oom set).
 */
static lnode_t *node_room(klist_t *l, lnode_t *nd, int where, size_t enc, int *oom)
{
    size_t used = nd->tail - nd->head;
    if (where == HEAD ? nd->head >= enc : nd->cap - nd->tail >= enc)
        return nd;
    if (used + enc > LIST_NODE_BYTES)
        return NULL;
    uint32_t cap = nd->cap;
    while (cap < used + enc && cap < LIST_NODE_BYTES)
        cap = cap * 2 > LIST_NODE_BYTES ? LIST_NODE_BYTES : cap * 2;
    if (cap < used + enc)
        cap = (uint32_t)(used + enc);
    if (cap != nd->cap) {
        lnode_t *g = realloc(nd, node_bytes(cap));
        if (g == NULL) {
            *oom = 1;
            return NULL;
        }
        l->bytes += cap - g->cap;
        g->cap = cap;
        nd = g;
        relink(l, nd);
    }
    /* the free room split evenly, the side that grows getting the element too */
    size_t spare = nd->cap - used - enc;
    uint32_t head = (uint32_t)(spare / 2 + (where == HEAD ? enc : 0));
    memmove(nd->data + head, nd->data + nd->head, used);
    nd->head = head;
    nd->tail = (uint32_t)(head + used);
    return nd;
}

/* Makes sure a push of n bytes at `where` will not fail: 0 or KEEL_ENOMEM (l unchanged but
 * for a grown node, which holds the same elements). */
int keel__kvl_list_push(klist_t *l, int where, const uint8_t *v, size_t n)
{
    size_t enc = keel__kvl_enc_len(n);
    lnode_t *nd = where == HEAD ? l->first : l->last;
    int oom = 0;
    if (nd)
        nd = node_room(l, nd, where, enc, &oom);
    if (oom)
        return KEEL_ENOMEM;
    if (nd == NULL) {
        size_t cap = enc > LIST_NODE_CAP_MIN ? enc : LIST_NODE_CAP_MIN;
        nd = node_new((uint32_t)cap, where);
        if (nd == NULL)
            return KEEL_ENOMEM;
        link_after(l, where == HEAD ? NULL : l->last, nd);
    }
    if (where == HEAD) {
        nd->head -= (uint32_t)enc;
        put_elem(nd->data + nd->head, v, n);
    } else {
        put_elem(nd->data + nd->tail, v, n);
        nd->tail += (uint32_t)enc;
    }
    nd->count++;
    l->len++;
    return 0;
}

/* The element at an end (the list is not empty). */
void keel__kvl_list_peek(const klist_t *l, int where, const uint8_t **v, size_t *n)
{
    if (where == HEAD)
        keel__kvl_get_fwd(l->first, l->first->head, v, n);
    else
        get_bwd(l->last, l->last->tail, v, n);
}

void keel__kvl_drop_node(klist_t *l, lnode_t *nd)
{
    l->len -= nd->count;
    unlink_node(l, nd);
    free(nd);
}

/* Removes the element at an end (the list is not empty). Never allocates. */
void keel__kvl_list_drop(klist_t *l, int where)
{
    lnode_t *nd = where == HEAD ? l->first : l->last;
    const uint8_t *v;
    size_t n;
    if (where == HEAD)
        nd->head = keel__kvl_get_fwd(nd, nd->head, &v, &n);
    else
        nd->tail = get_bwd(nd, nd->tail, &v, &n);
    nd->count--;
    l->len--;
    if (nd->count == 0) {
        unlink_node(l, nd);
        free(nd);
    }
}

/* ---- positions and iteration ------------------------------------------------------------ */

/* The element at index i (0 <= i < len), as a forward position. */
pos_t keel__kvl_list_at(const klist_t *l, uint64_t i)
{
    pos_t p = {NULL, 0};
    if (i < l->len / 2) {
        lnode_t *nd = l->first;
        while (i >= nd->count) {
            i -= nd->count;
            nd = nd->next;
        }
        uint32_t off = nd->head;
        const uint8_t *v;
        size_t n;
        while (i--)
            off = keel__kvl_get_fwd(nd, off, &v, &n);
        p.nd = nd;
        p.off = off;
        return p;
    }
    uint64_t back = l->len - 1 - i; /* elements after it */
    lnode_t *nd = l->last;
    while (back >= nd->count) {
        back -= nd->count;
        nd = nd->prev;
    }
    /* index from the node's front: count - 1 - back */
    uint32_t off = nd->head;
    const uint8_t *v;
    size_t n;
    for (uint64_t k = nd->count - 1 - back; k > 0; k--)
        off = keel__kvl_get_fwd(nd, off, &v, &n);
    p.nd = nd;
    p.off = off;
    return p;
}

/* Reads the element at p and moves p forward; 0 at the end. */
int keel__kvl_next_fwd(pos_t *p, const uint8_t **v, size_t *n)
{
    while (p->nd && p->off >= p->nd->tail) {
        p->nd = p->nd->next;
        if (p->nd)
            p->off = p->nd->head;
    }
    if (p->nd == NULL)
        return 0;
    p->off = keel__kvl_get_fwd(p->nd, p->off, v, n);
    return 1;
}

/* Reads the element ending at p and moves p backward; 0 at the front. */
int keel__kvl_next_bwd(pos_t *p, const uint8_t **v, size_t *n)
{
    while (p->nd && p->off <= p->nd->head) {
        p->nd = p->nd->prev;
        if (p->nd)
            p->off = p->nd->tail;
    }
    if (p->nd == NULL)
        return 0;
    p->off = get_bwd(p->nd, p->off, v, n);
    return 1;
}

pos_t keel__kvl_front(const klist_t *l)
{
    pos_t p = {l->first, l->first ? l->first->head : 0};
    return p;
}

pos_t keel__kvl_back(const klist_t *l)
{
    pos_t p = {l->last, l->last ? l->last->tail : 0};
    return p;
}

/* ---- rebuilding nodes ---------------------------------------------------------------- */

void keel__kvl_build_add(builder_t *b, const uint8_t *v, size_t n)
{
    if (b->oom)
        return;
    size_t enc = keel__kvl_enc_len(n);
    lnode_t *nd = b->last;
    if (nd == NULL || nd->cap - nd->tail < enc) {
        size_t cap = b->left < LIST_NODE_BYTES ? b->left : LIST_NODE_BYTES;
        if (cap < enc)
            cap = enc;
        if ((nd = node_new((uint32_t)cap, TAIL)) == NULL) {
            b->oom = 1;
            return;
        }
        nd->prev = b->last;
        if (b->last)
            b->last->next = nd;
        else
            b->first = nd;
        b->last = nd;
        b->bytes += node_bytes(nd->cap);
    }
    put_elem(nd->data + nd->tail, v, n);
    nd->tail += (uint32_t)enc;
    nd->count++;
    b->count++;
    b->left = b->left > enc ? b->left - enc : 0;
}

void keel__kvl_build_abort(builder_t *b)
{
    for (lnode_t *nd = b->first, *next; nd; nd = next) {
        next = nd->next;
        free(nd);
    }
    b->first = b->last = NULL;
}

/* Replaces the nodes from a to z (a chain of l, inclusive) with b's chain. */
void keel__kvl_splice(klist_t *l, lnode_t *a, lnode_t *z, builder_t *b)
{
    lnode_t *before = a->prev, *after = z->next;
    for (lnode_t *nd = a, *next;; nd = next) {
        next = nd->next;
        l->len -= nd->count;
        l->bytes -= node_bytes(nd->cap);
        int last = nd == z;
        free(nd);
        if (last)
            break;
    }
    if (b->first) {
        b->first->prev = before;
        b->last->next = after;
        if (before)
            before->next = b->first;
        else
            l->first = b->first;
        if (after)
            after->prev = b->last;
        else
            l->last = b->last;
    } else {
        if (before)
            before->next = after;
        else
            l->first = after;
        if (after)
            after->prev = before;
        else
            l->last = before;
    }
    l->len += b->count;
    l->bytes += b->bytes;
}

/* ---- the type's row ----------------------------------------------------------------------- */

static void obj_free(void *o)
{
    keel__kvl_list_free(o);
}

static size_t obj_bytes(const void *o)
{
    return ((const klist_t *)o)->bytes;
}

/* Body: u64 count, then count x (u32 len | bytes). */
static int obj_write(const void *o, keel_kv_sink_fn sink, void *data)
{
    const klist_t *l = o;
    uint8_t h[8];
    keel_put_u64(h, l->len);
    int rc = sink(data, h, 8);
    pos_t p = keel__kvl_front(l);
    const uint8_t *v;
    size_t n;
    while (rc == 0 && keel__kvl_next_fwd(&p, &v, &n)) {
        keel_put_u32(h, (uint32_t)n);
        rc = sink(data, h, 4);
        if (rc == 0 && n)
            rc = sink(data, v, n);
    }
    return rc;
}

static int obj_load(const uint8_t *p, size_t len, void **obj)
{
    if (len < 8)
        return KEEL_EPROTO;
    uint64_t count = keel_get_u64(p);
    if (count == 0 || count > LIST_LEN_MAX || count > (len - 8) / 4)
        return KEEL_EPROTO;
    klist_t *l = keel__kvl_list_new();
    if (l == NULL)
        return KEEL_ENOMEM;
    size_t off = 8;
    for (uint64_t i = 0; i < count; i++) {
        if (len - off < 4) {
            keel__kvl_list_free(l);
            return KEEL_EPROTO;
        }
        size_t n = keel_get_u32(p + off);
        off += 4;
        if (n > len - off) {
            keel__kvl_list_free(l);
            return KEEL_EPROTO;
        }
        if (keel__kvl_list_push(l, TAIL, p + off, n) != 0) {
            keel__kvl_list_free(l);
            return KEEL_ENOMEM;
        }
        off += n;
    }
    if (off != len) {
        keel__kvl_list_free(l);
        return KEEL_EPROTO;
    }
    *obj = l;
    return 0;
}

const keel__kv_type_t keel__kv_type_list = {
    .name = "list",
    .free = obj_free,
    .bytes = obj_bytes,
    .snap_write = obj_write,
    .snap_load = obj_load,
};
