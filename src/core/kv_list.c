/* kv_list.c - the list type (a deque of packed chunks) and its commands as Redis 7.0 has
   them: LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LLEN LRANGE LINDEX LSET LINSERT LREM LTRIM LPOS
   LMOVE RPOPLPUSH LMPOP, and the blocking pops' non-blocking forms (BLPOP BRPOP BLMOVE
   BRPOPLPUSH BLMPOP as they run inside MULTI, or when the server proposes a served pop). */
#include "core/kv_cmd_int.h"

#include "base/bytes.h"
#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The list is a doubly linked chain of nodes, each a buffer of packed elements (Redis's
 * quicklist of listpacks, in spirit). An element is
 *
 *     varint(len) | len bytes | reversed varint(len)
 *
 * (LEB128; the trailing copy is written back to front), so a node is walked from either
 * end and an element costs its bytes plus 2 bytes up to 127 bytes long. A node's elements
 * sit in data[head, tail) of its cap bytes, with free room on both sides: a push at
 * either end writes into that room, or grows the node (doubling, up to LIST_NODE_BYTES),
 * or starts a new node; a pop moves head or tail and frees a node once it is empty. Both
 * are O(1) amortized. Index walks (LINDEX, LSET, LRANGE's start, LINSERT) skip whole nodes
 * by their counts. Edits inside the list (LSET, LINSERT, LREM) rebuild the nodes they touch
 * into fresh ones, all allocated before anything is unlinked, so a command that cannot get
 * memory changes nothing (KEEL_ENOMEM). The object's bytes are its struct and every
 * node's header and cap: what it holds, not what its elements add up to.
 */
#define LIST_NODE_BYTES 8192u     /* a node's element bytes before a new node starts */
#define LIST_NODE_CAP_MIN 32u     /* a new node's first buffer */
#define VARINT_BYTES_MAX 5u       /* a u32 length */
#define LIST_LEN_MAX (UINT32_MAX) /* elements in one list: LPUSH past it is refused */
/* The seconds of a blocking pop's timeout: Redis's MAX_LONG_DOUBLE_CHARS. */
#define TIMEOUT_CHARS_MAX (5u * 1024u)
#define ERR_LIST_FULL "ERR list exceeds the maximum number of elements"

typedef struct lnode {
    struct lnode *prev, *next;
    uint32_t count, cap, head, tail;
    uint8_t data[];
} lnode_t;

typedef struct klist {
    lnode_t *first, *last;
    uint64_t len;
    size_t bytes;
} klist_t;

#define HEAD 0
#define TAIL 1

static size_t varint_len(size_t n)
{
    size_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

static size_t enc_len(size_t n)
{
    return n + 2 * varint_len(n);
}

static size_t node_bytes(uint32_t cap)
{
    return sizeof(lnode_t) + cap;
}

/* Writes one element at p (enc_len(n) bytes). */
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
static uint32_t get_fwd(const lnode_t *nd, uint32_t off, const uint8_t **v, size_t *n)
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

static klist_t *list_new(void)
{
    klist_t *l = calloc(1, sizeof(*l));
    if (l)
        l->bytes = sizeof(*l);
    return l;
}

static void list_free(klist_t *l)
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
static int list_push(klist_t *l, int where, const uint8_t *v, size_t n)
{
    size_t enc = enc_len(n);
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
static void list_peek(const klist_t *l, int where, const uint8_t **v, size_t *n)
{
    if (where == HEAD)
        get_fwd(l->first, l->first->head, v, n);
    else
        get_bwd(l->last, l->last->tail, v, n);
}

static void drop_node(klist_t *l, lnode_t *nd)
{
    l->len -= nd->count;
    unlink_node(l, nd);
    free(nd);
}

/* Removes the element at an end (the list is not empty). Never allocates. */
static void list_drop(klist_t *l, int where)
{
    lnode_t *nd = where == HEAD ? l->first : l->last;
    const uint8_t *v;
    size_t n;
    if (where == HEAD)
        nd->head = get_fwd(nd, nd->head, &v, &n);
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

typedef struct pos {
    lnode_t *nd;
    uint32_t off; /* forward: the element's start; backward: its end */
} pos_t;

/* The element at index i (0 <= i < len), as a forward position. */
static pos_t list_at(const klist_t *l, uint64_t i)
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
            off = get_fwd(nd, off, &v, &n);
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
        off = get_fwd(nd, off, &v, &n);
    p.nd = nd;
    p.off = off;
    return p;
}

/* Reads the element at p and moves p forward; 0 at the end. */
static int next_fwd(pos_t *p, const uint8_t **v, size_t *n)
{
    while (p->nd && p->off >= p->nd->tail) {
        p->nd = p->nd->next;
        if (p->nd)
            p->off = p->nd->head;
    }
    if (p->nd == NULL)
        return 0;
    p->off = get_fwd(p->nd, p->off, v, n);
    return 1;
}

/* Reads the element ending at p and moves p backward; 0 at the front. */
static int next_bwd(pos_t *p, const uint8_t **v, size_t *n)
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

static pos_t front(const klist_t *l)
{
    pos_t p = {l->first, l->first ? l->first->head : 0};
    return p;
}

static pos_t back(const klist_t *l)
{
    pos_t p = {l->last, l->last ? l->last->tail : 0};
    return p;
}

/* ---- rebuilding nodes ---------------------------------------------------------------- */

/* A chain of fresh nodes filled in order, each up to LIST_NODE_BYTES of elements. */
typedef struct builder {
    lnode_t *first, *last;
    size_t bytes; /* node bytes */
    size_t left;  /* element bytes still to come (sizes the last node exactly) */
    uint64_t count;
    int oom;
} builder_t;

static void build_add(builder_t *b, const uint8_t *v, size_t n)
{
    if (b->oom)
        return;
    size_t enc = enc_len(n);
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

static void build_abort(builder_t *b)
{
    for (lnode_t *nd = b->first, *next; nd; nd = next) {
        next = nd->next;
        free(nd);
    }
    b->first = b->last = NULL;
}

/* Replaces the nodes from a to z (a chain of l, inclusive) with b's chain. */
static void splice(klist_t *l, lnode_t *a, lnode_t *z, builder_t *b)
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
    list_free(o);
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
    pos_t p = front(l);
    const uint8_t *v;
    size_t n;
    while (rc == 0 && next_fwd(&p, &v, &n)) {
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
    klist_t *l = list_new();
    if (l == NULL)
        return KEEL_ENOMEM;
    size_t off = 8;
    for (uint64_t i = 0; i < count; i++) {
        if (len - off < 4) {
            list_free(l);
            return KEEL_EPROTO;
        }
        size_t n = keel_get_u32(p + off);
        off += 4;
        if (n > len - off) {
            list_free(l);
            return KEEL_EPROTO;
        }
        if (list_push(l, TAIL, p + off, n) != 0) {
            list_free(l);
            return KEEL_ENOMEM;
        }
        off += n;
    }
    if (off != len) {
        list_free(l);
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

/* ---- lookups ----------------------------------------------------------------------------- */

/* A read's list at argv[i]: 0 and *l (NULL: absent), or REPLIED (WRONGTYPE). */
static int read_list(const call_t *c, size_t i, const klist_t **l)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    if (e && e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    *l = e ? keel__kv_obj(e) : NULL;
    return 0;
}

/* A write's view of a key. */
typedef struct wkey {
    const uint8_t *key;
    size_t len;
    uint64_t h;
    keel__kv_entry_t **link;
    keel__kv_entry_t *e; /* live entry or NULL */
    int dead;
    klist_t *l;          /* e's list, or NULL */
    size_t bytes_before; /* l's bytes when looked up */
} wkey_t;

static int write_list(const call_t *c, const uint8_t *key, size_t len, wkey_t *k)
{
    memset(k, 0, sizeof(*k));
    k->key = key;
    k->len = len;
    k->h = keel__kv_hash(c->w, key, len);
    k->e = keel__kvc_wfind(c, key, len, k->h, &k->link, &k->dead);
    if (k->e && k->e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    k->l = k->e ? keel__kv_obj(k->e) : NULL;
    k->bytes_before = k->l ? k->l->bytes : 0;
    return 0;
}

/* Links l (filled, owned from here on unless this fails) as the absent key k's entry:
 * 0 or KEEL_ENOMEM (l untouched, still the caller's). */
static int link_new(const call_t *c, wkey_t *k, klist_t *l)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t *e = keel__kv_entry_new_obj(k->key, k->len, k->h, KEEL__KV_TYPE_LIST, l);
    if (e == NULL)
        return KEEL_ENOMEM;
    e->create_revision = kv->revision + 1;
    if (k->dead)
        keel__kv_replace(kv, k->link, e);
    else
        keel__kv_insert(kv, e);
    kv->bytes += l->bytes;
    k->e = e;
    k->l = l;
    k->bytes_before = l->bytes;
    k->dead = 0;
    return 0;
}

/* A new list holding n elements from argv[first..] pushed at `where`: NULL on ENOMEM. */
static klist_t *list_of(const uint8_t *const *argv, const size_t *lens, size_t n, int where)
{
    klist_t *l = list_new();
    for (size_t i = 0; l && i < n; i++)
        if (list_push(l, where, argv[i], lens[i]) != 0) {
            list_free(l);
            l = NULL;
        }
    return l;
}

/* The list at k changed (this command's revision): deletes the key if it is empty, else
 * gives it the new version; accounts its bytes. */
static void changed(const call_t *c, wkey_t *k)
{
    keel_kv_t *kv = c->w;
    if (k->l->len == 0) {
        keel__kv_entry_t **link = NULL;
        keel__kv_entry_t *e = keel__kv_find(kv, k->key, k->len, k->h, &link);
        assert(e == k->e);
        kv->bytes = kv->bytes - k->bytes_before + k->l->bytes;
        keel__kv_unlink(kv, link);
        k->e = NULL;
        k->l = NULL;
        return;
    }
    kv->bytes = kv->bytes - k->bytes_before + k->l->bytes;
    k->bytes_before = k->l->bytes;
    keel__kvc_set_version(kv, k->e, kv->revision + 1);
}

/* ---- argument parsing as Redis's ------------------------------------------------------- */

static int parse_i64(const call_t *c, size_t i, int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* getRangeLongFromObjectOrReply: msg for both a non-integer and a value out of range
 * (NULL: Redis's own texts). */
static int parse_range(const call_t *c, size_t i, int64_t min, int64_t max, const char *msg,
                       int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return r_err(c->reply, msg ? msg : ERR_NOT_INT);
    if (*v < min || *v > max) {
        if (msg)
            return r_err(c->reply, msg);
        char t[128];
        snprintf(t, sizeof(t), "ERR value is out of range, value must between %lld and %lld",
                 (long long)min, (long long)max);
        return r_err(c->reply, t);
    }
    return 0;
}

/* getPositiveLongFromObjectOrReply. */
static int parse_positive(const call_t *c, size_t i, const char *msg, int64_t *v)
{
    return parse_range(c, i, 0, INT64_MAX,
                       msg ? msg : "ERR value is out of range, must be positive", v);
}

static int parse_where(const call_t *c, size_t i, int *where)
{
    if (keel__kvc_arg_is(c, i, "LEFT"))
        *where = HEAD;
    else if (keel__kvc_arg_is(c, i, "RIGHT"))
        *where = TAIL;
    else
        return r_err(c->reply, ERR_SYNTAX);
    return 0;
}

/*
 * A blocking pop's timeout in seconds as Redis 7.0 reads it (getTimeoutFromObjectOrReply):
 * a long double (string2ld), times 1000 converted to milliseconds as x86-64 converts (a
 * value past int64 becomes INT64_MIN, so "timeout is negative"). 0 and *ms, or REPLIED.
 * The range check against the clock is the caller's (timeout_in_range).
 */
static int timeout_ms(const uint8_t *p, size_t n, int64_t *ms)
{
    char buf[TIMEOUT_CHARS_MAX];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long double v = strtold(buf, &end);
    if (buf[0] == ' ' || (buf[0] >= '\t' && buf[0] <= '\r') || (size_t)(end - buf) != n ||
        isnan(v) || (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || v == 0.0L)))
        return -1;
    long double x = v * 1000.0L;
    if (!(x < 9223372036854775808.0L && x > -9223372036854775809.0L))
        *ms = INT64_MIN;
    else
        *ms = (int64_t)x;
    return 0;
}

static int parse_timeout(const call_t *c, size_t i, int64_t *ms)
{
    if (timeout_ms(c->argv[i], c->lens[i], ms) != 0)
        return r_err(c->reply, "ERR timeout is not a float or out of range");
    if (*ms < 0)
        return r_err(c->reply, "ERR timeout is negative");
    return 0;
}

/* Redis adds the timeout to its clock: past INT64_MAX it is "out of range". */
static int timeout_in_range(const call_t *c, size_t i)
{
    int64_t ms;
    int rc = parse_timeout(c, i, &ms);
    if (rc == 0 && ms > 0 && ms > INT64_MAX - (int64_t)c->now)
        return r_err(c->reply, "ERR timeout is out of range");
    return rc;
}

/* The same for the other types' blocking pops (kv_zset_ops.c). */
int keel__kv_timeout_ms(const uint8_t *p, size_t n, int64_t *ms)
{
    return timeout_ms(p, n, ms);
}

int keel__kv_parse_timeout(const call_t *c, size_t i, int64_t *ms)
{
    return parse_timeout(c, i, ms);
}

int keel__kv_timeout_in_range(const call_t *c, size_t i)
{
    return timeout_in_range(c, i);
}

/* ---- replies --------------------------------------------------------------------------- */

/* Pops up to n elements from `where` of k's list, replying each as a bulk. */
static void pop_n(wkey_t *k, int where, uint64_t n, reply_t *o)
{
    for (uint64_t i = 0; i < n && k->l->len; i++) {
        const uint8_t *v;
        size_t len;
        list_peek(k->l, where, &v, &len);
        r_bulk(o, v, len);
        list_drop(k->l, where);
    }
}

/* ---- LPUSH RPUSH LPUSHX RPUSHX -------------------------------------------------------- */

static int push(const call_t *c, int where, int xx)
{
    keel_kv_t *kv = c->w;
    for (size_t i = 2; i < c->argc; i++)
        if (c->lens[i] > kv->cfg.value_bytes_max)
            return r_err(c->reply, ERR_VALUE_SIZE);
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL && xx) {
        r_int(c->reply, 0);
        return 0;
    }
    size_t n = c->argc - 2;
    if ((k.l ? k.l->len : 0) + n > LIST_LEN_MAX)
        return r_err(c->reply, ERR_LIST_FULL);
    if (k.e == NULL) {
        int rc = keel__kvc_check_sizes(c, k.len, 0);
        if (rc == 0 && !k.dead)
            rc = keel__kvc_check_room(c, 1);
        if (rc != 0)
            return rc;
        klist_t *l = list_of(c->argv + 2, c->lens + 2, n, where);
        if (l == NULL)
            return KEEL_ENOMEM;
        if (link_new(c, &k, l) != 0) {
            list_free(l);
            return KEEL_ENOMEM;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (list_push(k.l, where, c->argv[2 + i], c->lens[2 + i]) != 0) {
                for (size_t j = 0; j < i; j++) /* undo: the same end, as many */
                    list_drop(k.l, where);
                kv->bytes = kv->bytes - k.bytes_before + k.l->bytes;
                return KEEL_ENOMEM;
            }
        }
    }
    changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)k.l->len);
    return 0;
}

int keel__kvl_cmd_lpush(const call_t *c)
{
    return push(c, HEAD, 0);
}
int keel__kvl_cmd_rpush(const call_t *c)
{
    return push(c, TAIL, 0);
}
int keel__kvl_cmd_lpushx(const call_t *c)
{
    return push(c, HEAD, 1);
}
int keel__kvl_cmd_rpushx(const call_t *c)
{
    return push(c, TAIL, 1);
}

/* ---- LPOP RPOP --------------------------------------------------------------------------- */

int keel__kvl_pop_syntax(const call_t *c)
{
    if (c->argc > 3) {
        char t[96];
        snprintf(t, sizeof(t), "ERR wrong number of arguments for '%s' command", c->cmd_lname);
        return r_err(c->reply, t);
    }
    int64_t count;
    if (c->argc == 3)
        return parse_positive(c, 2, NULL, &count);
    return 0;
}

static int pop(const call_t *c, int where)
{
    int rc = keel__kvl_pop_syntax(c);
    if (rc != 0)
        return rc;
    int has_count = c->argc == 3;
    int64_t count = 1;
    if (has_count)
        parse_positive(c, 2, NULL, &count);
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        if (has_count)
            r_nil_array(c->reply);
        else
            r_nil(c->reply);
        return 0;
    }
    if (has_count && count == 0) {
        r_array(c->reply, 0);
        return 0;
    }
    if (has_count)
        r_array(c->reply, (uint64_t)count < k.l->len ? (size_t)count : (size_t)k.l->len);
    pop_n(&k, where, (uint64_t)count, c->reply);
    changed(c, &k);
    c->w->revision++;
    return 0;
}

int keel__kvl_cmd_lpop(const call_t *c)
{
    return pop(c, HEAD);
}
int keel__kvl_cmd_rpop(const call_t *c)
{
    return pop(c, TAIL);
}

/* ---- LLEN LINDEX LRANGE ---------------------------------------------------------------- */

int keel__kvl_cmd_llen(const call_t *c)
{
    const klist_t *l;
    if (read_list(c, 1, &l) != 0)
        return REPLIED;
    r_int(c->reply, l ? (int64_t)l->len : 0);
    return 0;
}

int keel__kvl_cmd_lindex(const call_t *c)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL) {
        r_nil(c->reply);
        return 0;
    }
    if (e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    const klist_t *l = keel__kv_obj(e);
    int64_t i;
    if (parse_i64(c, 2, &i) != 0)
        return REPLIED;
    if (i < 0)
        i += (int64_t)l->len;
    if (i < 0 || (uint64_t)i >= l->len) {
        r_nil(c->reply);
        return 0;
    }
    pos_t p = list_at(l, (uint64_t)i);
    const uint8_t *v;
    size_t n;
    get_fwd(p.nd, p.off, &v, &n);
    r_bulk(c->reply, v, n);
    return 0;
}

/* Redis's range clamp: [*start, *end] of len, or 0 for an empty range. */
static int clamp(int64_t start, int64_t end, uint64_t len, uint64_t *s, uint64_t *e)
{
    int64_t n = (int64_t)len;
    if (start < 0)
        start += n;
    if (end < 0)
        end += n;
    if (start < 0)
        start = 0;
    if (start > end || start >= n)
        return 0;
    if (end >= n)
        end = n - 1;
    *s = (uint64_t)start;
    *e = (uint64_t)end;
    return 1;
}

int keel__kvl_range_syntax(const call_t *c)
{
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    return 0;
}

int keel__kvl_cmd_lrange(const call_t *c)
{
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    const klist_t *l;
    if (read_list(c, 1, &l) != 0)
        return REPLIED;
    uint64_t s, e;
    if (l == NULL || !clamp(a, b, l->len, &s, &e)) {
        r_array(c->reply, 0);
        return 0;
    }
    r_array(c->reply, (size_t)(e - s + 1));
    pos_t p = list_at(l, s);
    const uint8_t *v;
    size_t n;
    for (uint64_t i = s; i <= e && !c->reply->failed && next_fwd(&p, &v, &n); i++)
        r_bulk(c->reply, v, n);
    return 0;
}

/* ---- LSET LINSERT LREM LTRIM ---------------------------------------------------------- */

/*
 * Rebuilds node nd with the element at `at` (a start offset in nd) replaced (mode 0),
 * or with v inserted before (mode 1) or after (mode 2) it. 0 or KEEL_ENOMEM (unchanged).
 */
static int rebuild_one(klist_t *l, lnode_t *nd, uint32_t at, int mode, const uint8_t *v, size_t n)
{
    builder_t b = {0};
    b.left = nd->tail - nd->head + enc_len(n);
    uint32_t off = nd->head;
    while (off < nd->tail) {
        const uint8_t *x;
        size_t xn;
        uint32_t next = get_fwd(nd, off, &x, &xn);
        if (off == at && mode == 1)
            build_add(&b, v, n);
        if (off == at && mode == 0)
            build_add(&b, v, n);
        else
            build_add(&b, x, xn);
        if (off == at && mode == 2)
            build_add(&b, v, n);
        off = next;
    }
    if (b.oom) {
        build_abort(&b);
        return KEEL_ENOMEM;
    }
    splice(l, nd, nd, &b);
    return 0;
}

int keel__kvl_cmd_lset(const call_t *c)
{
    keel_kv_t *kv = c->w;
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL)
        return r_err(c->reply, "ERR no such key");
    int64_t i;
    if (parse_i64(c, 2, &i) != 0)
        return REPLIED;
    if (c->lens[3] > kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    if (i < 0)
        i += (int64_t)k.l->len;
    if (i < 0 || (uint64_t)i >= k.l->len)
        return r_err(c->reply, "ERR index out of range");
    pos_t p = list_at(k.l, (uint64_t)i);
    if (rebuild_one(k.l, p.nd, p.off, 0, c->argv[3], c->lens[3]) != 0)
        return KEEL_ENOMEM;
    changed(c, &k);
    kv->revision++;
    r_ok(c->reply);
    return 0;
}

int keel__kvl_linsert_syntax(const call_t *c)
{
    if (!keel__kvc_arg_is(c, 2, "BEFORE") && !keel__kvc_arg_is(c, 2, "AFTER"))
        return r_err(c->reply, ERR_SYNTAX);
    return 0;
}

int keel__kvl_cmd_linsert(const call_t *c)
{
    keel_kv_t *kv = c->w;
    if (keel__kvl_linsert_syntax(c) != 0)
        return REPLIED;
    int after = keel__kvc_arg_is(c, 2, "AFTER");
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    if (c->lens[4] > kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    lnode_t *at = NULL;
    uint32_t at_off = 0;
    for (lnode_t *nd = k.l->first; nd && at == NULL; nd = nd->next) {
        for (uint32_t off = nd->head; off < nd->tail;) {
            const uint8_t *v;
            size_t n;
            uint32_t next = get_fwd(nd, off, &v, &n);
            if (n == c->lens[3] && memcmp(v, c->argv[3], n) == 0) {
                at = nd;
                at_off = off;
                break;
            }
            off = next;
        }
    }
    if (at == NULL) {
        r_int(c->reply, -1);
        return 0;
    }
    if (k.l->len + 1 > LIST_LEN_MAX)
        return r_err(c->reply, ERR_LIST_FULL);
    if (rebuild_one(k.l, at, at_off, after ? 2 : 1, c->argv[4], c->lens[4]) != 0)
        return KEEL_ENOMEM;
    changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)k.l->len);
    return 0;
}

/* LREM: removes up to `limit` (0: all) elements equal to v, from the head (or the tail when
 * `rev`), rebuilding the nodes between the first and the last removal. */
int keel__kvl_cmd_lrem(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t count;
    if (parse_i64(c, 2, &count) != 0)
        return REPLIED;
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    int rev = count < 0;
    uint64_t limit = count == 0 ? UINT64_MAX
                     : rev      ? (uint64_t)0 - (uint64_t)count
                                : (uint64_t)count;
    const uint8_t *want = c->argv[3];
    size_t want_n = c->lens[3];
    /* pass 1: the nodes holding the matches that go, and how many */
    lnode_t *a = NULL, *z = NULL;
    uint64_t found = 0;
    pos_t p = rev ? back(k.l) : front(k.l);
    const uint8_t *v;
    size_t n;
    while (found < limit && (rev ? next_bwd(&p, &v, &n) : next_fwd(&p, &v, &n))) {
        if (n == want_n && memcmp(v, want, n) == 0) {
            found++;
            if (a == NULL)
                a = p.nd;
            z = p.nd;
        }
    }
    if (found == 0) {
        r_int(c->reply, 0);
        return 0;
    }
    if (rev) { /* a..z were met back to front */
        lnode_t *t = a;
        a = z;
        z = t;
    }
    /* pass 2: rebuild a..z without the matches that go: no node before a (after z) holds
       one, so they are the first `found` matches of a..z in order, or the last when rev */
    size_t bytes = 0;
    uint64_t matches = 0;
    for (lnode_t *nd = a;; nd = nd->next) {
        bytes += nd->tail - nd->head;
        for (uint32_t off = nd->head; off < nd->tail;) {
            off = get_fwd(nd, off, &v, &n);
            matches += n == want_n && memcmp(v, want, n) == 0;
        }
        if (nd == z)
            break;
    }
    uint64_t from = rev ? matches - found + 1 : 1, to = rev ? matches : found, m = 0;
    builder_t b = {0};
    b.left = bytes;
    for (lnode_t *nd = a;; nd = nd->next) {
        for (uint32_t off = nd->head; off < nd->tail;) {
            off = get_fwd(nd, off, &v, &n);
            if (n == want_n && memcmp(v, want, n) == 0) {
                m++;
                if (m >= from && m <= to)
                    continue;
            }
            build_add(&b, v, n);
        }
        if (nd == z)
            break;
    }
    if (b.oom) {
        build_abort(&b);
        return KEEL_ENOMEM;
    }
    splice(k.l, a, z, &b);
    changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)found);
    return 0;
}

int keel__kvl_cmd_ltrim(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    wkey_t k;
    if (write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_ok(c->reply);
        return 0;
    }
    uint64_t s, e, ldrop, rdrop;
    if (!clamp(a, b, k.l->len, &s, &e)) {
        ldrop = k.l->len;
        rdrop = 0;
    } else {
        ldrop = s;
        rdrop = k.l->len - 1 - e;
    }
    /* nothing to drop is still a change, as Redis signals the key modified (WATCH) */
    while (ldrop && k.l->first->count <= ldrop) {
        ldrop -= k.l->first->count;
        drop_node(k.l, k.l->first);
    }
    while (ldrop--)
        list_drop(k.l, HEAD);
    while (rdrop && k.l->last->count <= rdrop) {
        rdrop -= k.l->last->count;
        drop_node(k.l, k.l->last);
    }
    while (rdrop--)
        list_drop(k.l, TAIL);
    changed(c, &k);
    kv->revision++;
    r_ok(c->reply);
    return 0;
}

/* ---- LPOS -------------------------------------------------------------------------------- */

typedef struct lpos_args {
    int64_t rank, count, maxlen;
} lpos_args_t;

static int lpos_parse(const call_t *c, lpos_args_t *a)
{
    a->rank = 1;
    a->count = -1;
    a->maxlen = 0;
    for (size_t j = 3; j < c->argc; j++) {
        size_t more = c->argc - 1 - j;
        if (keel__kvc_arg_is(c, j, "RANK") && more) {
            j++;
            if (parse_i64(c, j, &a->rank) != 0)
                return REPLIED;
            if (a->rank == 0)
                return r_err(c->reply,
                             "ERR RANK can't be zero: use 1 to start from the first match, 2 from "
                             "the second ... or use negative to start from the end of the list");
        } else if (keel__kvc_arg_is(c, j, "COUNT") && more) {
            j++;
            if (parse_positive(c, j, "ERR COUNT can't be negative", &a->count) != 0)
                return REPLIED;
        } else if (keel__kvc_arg_is(c, j, "MAXLEN") && more) {
            j++;
            if (parse_positive(c, j, "ERR MAXLEN can't be negative", &a->maxlen) != 0)
                return REPLIED;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__kvl_lpos_syntax(const call_t *c)
{
    lpos_args_t a;
    return lpos_parse(c, &a);
}

int keel__kvl_cmd_lpos(const call_t *c)
{
    lpos_args_t a;
    if (lpos_parse(c, &a) != 0)
        return REPLIED;
    int rev = a.rank < 0;
    /* Redis 7.0 negates LONG_MIN into itself, which every match count passes: rank 1 */
    uint64_t rank = a.rank == INT64_MIN ? 1 : rev ? (uint64_t)(-a.rank) : (uint64_t)a.rank;
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL) {
        if (a.count != -1)
            r_array(c->reply, 0);
        else
            r_nil(c->reply);
        return 0;
    }
    if (e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    const klist_t *l = keel__kv_obj(e);
    const uint8_t *want = c->argv[2];
    size_t want_n = c->lens[2];
    /* walk twice when COUNT is given: the array's length first */
    for (int pass = a.count == -1 ? 1 : 0; pass < 2; pass++) {
        pos_t p = rev ? back(l) : front(l);
        const uint8_t *v;
        size_t n;
        uint64_t idx = 0, matched = 0, emitted = 0;
        uint64_t want_count = a.count <= 0 ? UINT64_MAX : (uint64_t)a.count;
        while ((a.maxlen == 0 || idx < (uint64_t)a.maxlen) &&
               (rev ? next_bwd(&p, &v, &n) : next_fwd(&p, &v, &n))) {
            if (n == want_n && memcmp(v, want, n) == 0) {
                matched++;
                if (matched >= rank) {
                    uint64_t at = rev ? l->len - 1 - idx : idx;
                    if (a.count == -1) {
                        r_int(c->reply, (int64_t)at);
                        return 0;
                    }
                    if (pass == 1)
                        r_int(c->reply, (int64_t)at);
                    if (++emitted == want_count)
                        break;
                }
            }
            idx++;
        }
        if (a.count == -1) {
            r_nil(c->reply);
            return 0;
        }
        if (pass == 0)
            r_array(c->reply, (size_t)emitted);
    }
    return 0;
}

/* ---- LMOVE RPOPLPUSH and BLMOVE BRPOPLPUSH ---------------------------------------------- */

/* Moves the element at `from` of argv[1]'s list to `to` of argv[2]'s (src: looked up, a
 * non-empty list). Replies the element. 0, REPLIED (WRONGTYPE destination) or KEEL_ENOMEM. */
static int move(const call_t *c, wkey_t *src, int from, int to)
{
    keel_kv_t *kv = c->w;
    wkey_t dst;
    int same = c->lens[1] == c->lens[2] && memcmp(c->argv[1], c->argv[2], c->lens[1]) == 0;
    if (write_list(c, c->argv[2], c->lens[2], &dst) != 0)
        return REPLIED;
    if (dst.e == NULL) {
        int rc = keel__kvc_check_sizes(c, dst.len, 0);
        if (rc == 0 && !dst.dead)
            rc = keel__kvc_check_room(c, 1);
        if (rc != 0)
            return rc;
    } else if (!same && dst.l->len + 1 > LIST_LEN_MAX) {
        return r_err(c->reply, ERR_LIST_FULL);
    }
    const uint8_t *v;
    size_t n;
    list_peek(src->l, from, &v, &n);
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL)
        return KEEL_ENOMEM;
    memcpy(copy, v, n);
    if (dst.e == NULL) {
        const uint8_t *cv = copy;
        klist_t *l = list_of(&cv, &n, 1, to);
        if (l == NULL || link_new(c, &dst, l) != 0) {
            list_free(l);
            free(copy);
            return KEEL_ENOMEM;
        }
    } else if (list_push(same ? src->l : dst.l, to, copy, n) != 0) {
        kv->bytes = kv->bytes - src->bytes_before + src->l->bytes;
        src->bytes_before = src->l->bytes;
        if (!same) {
            kv->bytes = kv->bytes - dst.bytes_before + dst.l->bytes;
            dst.bytes_before = dst.l->bytes;
        }
        free(copy);
        return KEEL_ENOMEM;
    }
    /* the source's element: when both ends are one list's same end, the copy just pushed
       is dropped instead, which is the same list */
    list_drop(src->l, from);
    r_bulk(c->reply, copy, n);
    free(copy);
    if (same) {
        changed(c, src);
    } else {
        changed(c, src);
        changed(c, &dst);
    }
    kv->revision++;
    return 0;
}

int keel__kvl_lmove_syntax(const call_t *c)
{
    int a, b;
    if (parse_where(c, 3, &a) != 0 || parse_where(c, 4, &b) != 0)
        return REPLIED;
    return 0;
}

static int lmove_run(const call_t *c, int from, int to, int blocking)
{
    wkey_t src;
    if (write_list(c, c->argv[1], c->lens[1], &src) != 0)
        return REPLIED;
    if (src.e == NULL) {
        /* BLMOVE in MULTI (or a served pop that lost its element): Redis's addReplyNull */
        (void)blocking;
        r_nil(c->reply);
        return 0;
    }
    return move(c, &src, from, to);
}

int keel__kvl_cmd_lmove(const call_t *c)
{
    int from, to;
    if (parse_where(c, 3, &from) != 0 || parse_where(c, 4, &to) != 0)
        return REPLIED;
    return lmove_run(c, from, to, 0);
}

int keel__kvl_cmd_rpoplpush(const call_t *c)
{
    return lmove_run(c, TAIL, HEAD, 0);
}

int keel__kvl_blmove_syntax(const call_t *c)
{
    int a, b;
    int64_t ms;
    if (parse_where(c, 3, &a) != 0 || parse_where(c, 4, &b) != 0 || parse_timeout(c, 5, &ms) != 0)
        return REPLIED;
    return 0;
}

int keel__kvl_cmd_blmove(const call_t *c)
{
    int from, to;
    if (parse_where(c, 3, &from) != 0 || parse_where(c, 4, &to) != 0 || timeout_in_range(c, 5) != 0)
        return REPLIED;
    /* Redis checks the source's type before it would block */
    return lmove_run(c, from, to, 1);
}

int keel__kvl_brpoplpush_syntax(const call_t *c)
{
    int64_t ms;
    return parse_timeout(c, 3, &ms);
}

int keel__kvl_cmd_brpoplpush(const call_t *c)
{
    if (timeout_in_range(c, 3) != 0)
        return REPLIED;
    return lmove_run(c, TAIL, HEAD, 1);
}

/* ---- LMPOP BLMPOP BLPOP BRPOP ------------------------------------------------------------ */

typedef struct mpop_args {
    size_t first_key, nkeys;
    int where;
    int64_t count; /* -1: one element, no nesting (BLPOP, BRPOP) */
} mpop_args_t;

/* lmpopGenericCommand's parse, numkeys at argv[i]. */
static int mpop_parse(const call_t *c, size_t i, mpop_args_t *a)
{
    int64_t numkeys;
    if (parse_range(c, i, 1, INT64_MAX, "ERR numkeys should be greater than 0", &numkeys) != 0)
        return REPLIED;
    if ((uint64_t)numkeys >= c->argc - i - 1)
        return r_err(c->reply, ERR_SYNTAX);
    size_t where_i = i + (size_t)numkeys + 1;
    if (parse_where(c, where_i, &a->where) != 0)
        return REPLIED;
    a->first_key = i + 1;
    a->nkeys = (size_t)numkeys;
    a->count = -1;
    for (size_t j = where_i + 1; j < c->argc; j++) {
        size_t more = c->argc - 1 - j;
        if (a->count == -1 && keel__kvc_arg_is(c, j, "COUNT") && more) {
            j++;
            if (parse_range(c, j, 1, INT64_MAX, "ERR count should be greater than 0", &a->count) !=
                0)
                return REPLIED;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (a->count == -1)
        a->count = 1;
    return 0;
}

/* Pops from the first non-empty list of the keys: [key, element] (count -1) or [key,
 * [elements]]; *-1 when every list is empty; WRONGTYPE at the first key of another type
 * met before a non-empty list. */
static int mpop_run(const call_t *c, const mpop_args_t *a)
{
    for (size_t i = 0; i < a->nkeys; i++) {
        size_t ki = a->first_key + i;
        wkey_t k;
        if (write_list(c, c->argv[ki], c->lens[ki], &k) != 0)
            return REPLIED;
        if (k.e == NULL)
            continue;
        r_array(c->reply, 2);
        r_bulk(c->reply, k.key, k.len);
        if (a->count == -1) {
            pop_n(&k, a->where, 1, c->reply);
        } else {
            uint64_t n = (uint64_t)a->count < k.l->len ? (uint64_t)a->count : k.l->len;
            r_array(c->reply, (size_t)n);
            pop_n(&k, a->where, n, c->reply);
        }
        changed(c, &k);
        c->w->revision++;
        return 0;
    }
    r_nil_array(c->reply);
    return 0;
}

int keel__kvl_lmpop_syntax(const call_t *c)
{
    mpop_args_t a;
    return mpop_parse(c, 1, &a);
}

int keel__kvl_cmd_lmpop(const call_t *c)
{
    mpop_args_t a;
    if (mpop_parse(c, 1, &a) != 0)
        return REPLIED;
    return mpop_run(c, &a);
}

int keel__kvl_blmpop_syntax(const call_t *c)
{
    int64_t ms;
    mpop_args_t a;
    if (parse_timeout(c, 1, &ms) != 0)
        return REPLIED;
    return mpop_parse(c, 2, &a);
}

int keel__kvl_cmd_blmpop(const call_t *c)
{
    mpop_args_t a;
    if (timeout_in_range(c, 1) != 0 || mpop_parse(c, 2, &a) != 0)
        return REPLIED;
    return mpop_run(c, &a);
}

int keel__kvl_bpop_syntax(const call_t *c)
{
    int64_t ms;
    return parse_timeout(c, c->argc - 1, &ms);
}

static int bpop(const call_t *c, int where)
{
    if (timeout_in_range(c, c->argc - 1) != 0)
        return REPLIED;
    mpop_args_t a = {1, c->argc - 2, where, -1};
    return mpop_run(c, &a);
}

int keel__kvl_cmd_blpop(const call_t *c)
{
    return bpop(c, HEAD);
}
int keel__kvl_cmd_brpop(const call_t *c)
{
    return bpop(c, TAIL);
}

/* ---- KEEL.BPOP: a served blocking pop, tagged by its node ------------------------------ */

/*
 * KEEL.BPOP token cmd... runs a blocking pop (cmd) as it runs in MULTI: it pops what is
 * there or answers nil. KEEL.BPOP token alone is a fence and does nothing. The token is the
 * proposing node's: it finds its own pops among the entries it applies, whatever became of
 * the reply (docs/kv.md, "Blocking pops").
 */
int keel__kvl_kbpop_syntax(const call_t *c)
{
    if (c->argc == 2)
        return 0;
    call_t in = keel__kvc_inner_call(c, 2);
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&in, c->argc, &cmd);
    if (rc != 0)
        return rc;
    if (!(cmd->flags & CMD_BLOCKING_POP))
        return r_err(c->reply, "ERR KEEL.BPOP runs a blocking pop only");
    return 0;
}

int keel__kvl_cmd_kbpop(const call_t *c)
{
    if (c->argc == 2) {
        r_ok(c->reply);
        return 0;
    }
    call_t in = keel__kvc_inner_call(c, 2);
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&in, c->argc, &cmd);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (!(cmd->flags & CMD_BLOCKING_POP))
        return r_err(c->reply, "ERR KEEL.BPOP runs a blocking pop only");
    return keel__kvc_run(cmd, &in);
}

/* ---- what the server needs to block (kv_bpop.c) ------------------------------------------- */

static int is_cmd(const uint8_t *p, size_t n, const char *name)
{
    size_t k = 0;
    for (; k < n && name[k]; k++)
        if ((p[k] >= 'a' && p[k] <= 'z' ? p[k] - 32 : p[k]) != name[k])
            return 0;
    return k == n && name[k] == '\0';
}

int keel__kvl_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_kv_bpop_t *out)
{
    const uint8_t *name = argv[0];
    size_t nl = lens[0];
    size_t timeout_i;
    memset(out, 0, sizeof(*out));
    out->type = KEEL__KV_TYPE_LIST;
    out->count = 1;
    if (is_cmd(name, nl, "BLPOP") || is_cmd(name, nl, "BRPOP")) {
        if (argc < 3)
            return 0;
        out->kind = KEEL_KV_BPOP_POP;
        out->first_key = 1;
        out->nkeys = (size_t)argc - 2;
        out->left = is_cmd(name, nl, "BLPOP");
        timeout_i = (size_t)argc - 1;
    } else if (is_cmd(name, nl, "BLMOVE") || is_cmd(name, nl, "BRPOPLPUSH")) {
        int bl = is_cmd(name, nl, "BLMOVE");
        if (argc != (bl ? 6 : 4))
            return 0;
        out->kind = KEEL_KV_BPOP_MOVE;
        out->first_key = 1;
        out->nkeys = 1;
        timeout_i = bl ? 5 : 3;
        if (bl && ((!is_cmd(argv[3], lens[3], "LEFT") && !is_cmd(argv[3], lens[3], "RIGHT")) ||
                   (!is_cmd(argv[4], lens[4], "LEFT") && !is_cmd(argv[4], lens[4], "RIGHT"))))
            return 0;
        out->left = bl && is_cmd(argv[3], lens[3], "LEFT");
    } else if (is_cmd(name, nl, "BLMPOP")) {
        if (argc < 5)
            return 0;
        /* the whole syntax as the command judges it */
        keel_buf_t scratch;
        keel_buf_init(&scratch, 0);
        reply_t o = {&scratch, 0, 0};
        call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &o, "blmpop", NULL};
        mpop_args_t a;
        int rc = mpop_parse(&c, 2, &a);
        keel_buf_free(&scratch);
        if (rc != 0)
            return 0;
        out->kind = KEEL_KV_BPOP_MPOP;
        out->first_key = a.first_key;
        out->nkeys = a.nkeys;
        out->left = a.where == HEAD;
        out->count = (uint64_t)a.count;
        timeout_i = 1;
    } else {
        return 0;
    }
    int64_t ms;
    if (timeout_ms(argv[timeout_i], lens[timeout_i], &ms) != 0 || ms < 0)
        return 0;
    out->timeout_ms = ms;
    out->timeout_i = timeout_i;
    return 1;
}

uint64_t keel__kvl_len(const void *obj)
{
    return ((const klist_t *)obj)->len;
}
