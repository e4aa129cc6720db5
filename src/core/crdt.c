/* crdt.c - G-counter, PN-counter, LWW-register and OR-set (see crdt.h). */
#include "core/crdt.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- counters ------------------------------------------------------------------- */
void keel_gcounter_init(keel_gcounter_t *g)
{
    keel_vv_init(&g->c);
}

int keel_gcounter_incr(keel_gcounter_t *g, uint64_t actor, uint64_t by)
{
    if (by == 0)
        return KEEL_EINVAL;
    uint64_t cur = keel_vv_get(&g->c, actor);
    if (cur + by < cur)
        return KEEL_ERANGE;
    return keel_vv_raise(&g->c, actor, cur + by);
}

int keel_gcounter_value(const keel_gcounter_t *g, uint64_t *value)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < g->c.n; i++) {
        if (sum + g->c.e[i].counter < sum)
            return KEEL_ERANGE;
        sum += g->c.e[i].counter;
    }
    *value = sum;
    return 0;
}

int keel_gcounter_merge(keel_gcounter_t *g, const keel_gcounter_t *o)
{
    return keel_vv_join(&g->c, &o->c);
}

void keel_pncounter_init(keel_pncounter_t *c)
{
    keel_gcounter_init(&c->p);
    keel_gcounter_init(&c->n);
}

int keel_pncounter_add(keel_pncounter_t *c, uint64_t actor, int64_t delta)
{
    if (delta == 0)
        return KEEL_EINVAL;
    if (delta > 0)
        return keel_gcounter_incr(&c->p, actor, (uint64_t)delta);
    return keel_gcounter_incr(&c->n, actor, (uint64_t)0 - (uint64_t)delta);
}

int keel_pncounter_value(const keel_pncounter_t *c, int64_t *value)
{
    uint64_t p, n;
    if (keel_gcounter_value(&c->p, &p) < 0 || keel_gcounter_value(&c->n, &n) < 0)
        return KEEL_ERANGE;
    if (p >= n) {
        if (p - n > (uint64_t)INT64_MAX)
            return KEEL_ERANGE;
        *value = (int64_t)(p - n);
    } else {
        if (n - p > (uint64_t)INT64_MAX + 1)
            return KEEL_ERANGE;
        *value = (int64_t)(0 - (n - p));
    }
    return 0;
}

int keel_pncounter_merge(keel_pncounter_t *c, const keel_pncounter_t *o)
{
    keel_pncounter_t t = *c;
    if (keel_gcounter_merge(&t.p, &o->p) < 0 || keel_gcounter_merge(&t.n, &o->n) < 0)
        return KEEL_EFULL;
    *c = t;
    return 0;
}

/* ---- LWW-register ---------------------------------------------------------------- */
void keel_lww_init(keel_lww_t *r)
{
    memset(r, 0, sizeof(*r));
}

void keel_lww_free(keel_lww_t *r)
{
    free(r->data);
    keel_lww_init(r);
}

static int lww_cmp(uint64_t ts, uint64_t actor, const void *d, uint32_t len, const keel_lww_t *r)
{
    if (ts != r->ts)
        return ts < r->ts ? -1 : 1;
    if (actor != r->actor)
        return actor < r->actor ? -1 : 1;
    uint32_t m = len < r->len ? len : r->len;
    int c = m ? memcmp(d, r->data, m) : 0;
    if (c)
        return c;
    return len < r->len ? -1 : len > r->len;
}

int keel_lww_set(keel_lww_t *r, uint64_t ts, uint64_t actor, const void *data, uint32_t len)
{
    if (len > KEEL_LWW_VALUE_BYTES_MAX || ts == 0)
        return ts == 0 ? KEEL_EINVAL : KEEL_ETOOBIG;
    if (lww_cmp(ts, actor, data, len, r) <= 0)
        return 0;
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return KEEL_ENOMEM;
        memcpy(copy, data, len);
    }
    free(r->data);
    r->ts = ts, r->actor = actor, r->len = len, r->data = copy;
    return 1;
}

int keel_lww_merge(keel_lww_t *r, const keel_lww_t *o)
{
    if (o->ts == 0)
        return 0;
    int rc = keel_lww_set(r, o->ts, o->actor, o->data, o->len);
    return rc < 0 ? rc : 0;
}

/* ---- OR-set ---------------------------------------------------------------------- */
void keel_orset_init(keel_orset_t *s)
{
    keel_vv_init(&s->vv);
    s->n = 0;
    s->e = NULL;
}

static void entries_free(keel_orset_entry_t *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(e[i].elem);
    free(e);
}

void keel_orset_free(keel_orset_t *s)
{
    entries_free(s->e, s->n);
    keel_orset_init(s);
}

static int elem_cmp(const uint8_t *a, uint16_t al, const uint8_t *b, uint16_t bl)
{
    uint16_t m = al < bl ? al : bl;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

static int entry_cmp(const keel_orset_entry_t *x, const keel_orset_entry_t *y)
{
    int c = elem_cmp(x->elem, x->len, y->elem, y->len);
    return c ? c : keel_dot_cmp(x->dot, y->dot);
}

/* Replaces s's entries with copies of picks (pointers into s, another set or a stack entry). */
static int rebuild(keel_orset_t *s, const keel_orset_entry_t *const *picks, uint32_t n,
                   const keel_vv_t *vv)
{
    keel_orset_entry_t *e = n ? calloc(n, sizeof(*e)) : NULL;
    if (n && !e)
        return KEEL_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        e[i] = *picks[i];
        e[i].elem = NULL;
        if (picks[i]->len) {
            e[i].elem = malloc(picks[i]->len);
            if (!e[i].elem) {
                entries_free(e, i);
                return KEEL_ENOMEM;
            }
            memcpy(e[i].elem, picks[i]->elem, picks[i]->len);
        }
    }
    entries_free(s->e, s->n);
    s->e = e;
    s->n = n;
    s->vv = *vv;
    return 0;
}

int keel_orset_add(keel_orset_t *s, uint64_t actor, const void *elem, uint16_t len)
{
    if (len > KEEL_ORSET_ELEM_BYTES_MAX)
        return KEEL_ETOOBIG;
    keel_vv_t vv = s->vv;
    keel_orset_entry_t ne = {len, (uint8_t *)(uintptr_t)elem, {actor, keel_vv_get(&vv, actor) + 1}};
    if (keel_vv_raise(&vv, actor, ne.dot.counter) < 0)
        return KEEL_EFULL;
    const keel_orset_entry_t **picks = malloc(((size_t)s->n + 1) * sizeof(*picks));
    if (!picks)
        return KEEL_ENOMEM;
    uint32_t n = 0;
    int placed = 0;
    for (uint32_t i = 0; i <= s->n; i++) {
        if (!placed && (i == s->n || entry_cmp(&ne, &s->e[i]) < 0)) {
            picks[n++] = &ne;
            placed = 1;
        }
        /* the add observed the element's earlier entries: they are replaced by the new one */
        if (i < s->n && elem_cmp(s->e[i].elem, s->e[i].len, ne.elem, len) != 0)
            picks[n++] = &s->e[i];
    }
    int rc = n > KEEL_ORSET_ENTRIES_MAX ? KEEL_EFULL : rebuild(s, picks, n, &vv);
    free(picks);
    return rc;
}

int keel_orset_remove(keel_orset_t *s, const void *elem, uint16_t len)
{
    uint32_t w = 0;
    int removed = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (elem_cmp(s->e[i].elem, s->e[i].len, elem, len) == 0) {
            free(s->e[i].elem);
            removed++;
        } else {
            s->e[w++] = s->e[i];
        }
    }
    s->n = w; /* the vv keeps the removed dots: a merge will not bring them back */
    return removed;
}

int keel_orset_contains(const keel_orset_t *s, const void *elem, uint16_t len)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (elem_cmp(s->e[i].elem, s->e[i].len, elem, len) == 0)
            return 1;
    return 0;
}

void keel_orset_members(const keel_orset_t *s, void (*fn)(void *arg, const uint8_t *, uint16_t),
                        void *arg)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (i == 0 || elem_cmp(s->e[i - 1].elem, s->e[i - 1].len, s->e[i].elem, s->e[i].len))
            fn(arg, s->e[i].elem, s->e[i].len);
}

uint32_t keel_orset_size(const keel_orset_t *s)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n; i++)
        k += i == 0 || elem_cmp(s->e[i - 1].elem, s->e[i - 1].len, s->e[i].elem, s->e[i].len);
    return k;
}

int keel_orset_merge(keel_orset_t *s, const keel_orset_t *o)
{
    keel_vv_t vv = s->vv;
    if (keel_vv_join(&vv, &o->vv) < 0)
        return KEEL_EFULL;
    const keel_orset_entry_t **picks = malloc(((size_t)s->n + o->n + 1) * sizeof(*picks));
    if (!picks)
        return KEEL_ENOMEM;
    uint32_t n = 0, i = 0, j = 0;
    while (i < s->n || j < o->n) {
        int c = i == s->n ? 1 : j == o->n ? -1 : entry_cmp(&s->e[i], &o->e[j]);
        if (c == 0) {
            picks[n++] = &s->e[i];
            i++, j++;
        } else if (c < 0) {
            if (!keel_vv_covers(&o->vv, s->e[i].dot))
                picks[n++] = &s->e[i];
            i++;
        } else {
            if (!keel_vv_covers(&s->vv, o->e[j].dot))
                picks[n++] = &o->e[j];
            j++;
        }
    }
    int rc = n > KEEL_ORSET_ENTRIES_MAX ? KEEL_EFULL : rebuild(s, picks, n, &vv);
    free(picks);
    return rc;
}

/* ---- encodings ------------------------------------------------------------------- */
static int put_type(keel_buf_t *out, uint8_t t)
{
    return keel_buf_append(out, &t, 1);
}

static int get_type(keel_rd_t *r, uint8_t want, const char *what, keel_errmsg_t *msg)
{
    uint8_t t = keel_rd_u8(r);
    if (r->bad)
        return keel_errf(msg, KEEL_EPROTO, "%s: empty", what);
    if (t != want)
        return keel_errf(msg, KEEL_EPROTO, "%s: type byte %u, expected %u", what, t, want);
    return 0;
}

static int no_trailing(const keel_rd_t *r, const char *what, keel_errmsg_t *msg)
{
    return r->left ? keel_errf(msg, KEEL_EPROTO, "%s: %zu trailing bytes", what, r->left) : 0;
}

int keel_gcounter_encode(const keel_gcounter_t *g, keel_buf_t *out)
{
    int rc = put_type(out, KEEL_CRDT_GCOUNTER);
    return rc < 0 ? rc : keel_vv_encode(&g->c, out);
}

int keel_gcounter_decode(const void *data, size_t len, keel_gcounter_t *g, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, data, len);
    int rc = get_type(&r, KEEL_CRDT_GCOUNTER, "g-counter", msg);
    if (rc == 0)
        rc = keel_vv_decode(&r, &g->c, msg);
    return rc < 0 ? rc : no_trailing(&r, "g-counter", msg);
}

int keel_pncounter_encode(const keel_pncounter_t *c, keel_buf_t *out)
{
    int rc = put_type(out, KEEL_CRDT_PNCOUNTER);
    if (rc == 0)
        rc = keel_vv_encode(&c->p.c, out);
    return rc < 0 ? rc : keel_vv_encode(&c->n.c, out);
}

int keel_pncounter_decode(const void *data, size_t len, keel_pncounter_t *c, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, data, len);
    int rc = get_type(&r, KEEL_CRDT_PNCOUNTER, "pn-counter", msg);
    if (rc == 0)
        rc = keel_vv_decode(&r, &c->p.c, msg);
    if (rc == 0)
        rc = keel_vv_decode(&r, &c->n.c, msg);
    return rc < 0 ? rc : no_trailing(&r, "pn-counter", msg);
}

int keel_lww_encode(const keel_lww_t *r, keel_buf_t *out)
{
    uint8_t h[21];
    h[0] = KEEL_CRDT_LWW;
    keel_put_u64(h + 1, r->ts);
    keel_put_u64(h + 9, r->actor);
    keel_put_u32(h + 17, r->len);
    int rc = keel_buf_append(out, h, sizeof(h));
    return rc < 0 || !r->len ? rc : keel_buf_append(out, r->data, r->len);
}

int keel_lww_decode(const void *data, size_t len, keel_lww_t *r, keel_errmsg_t *msg)
{
    keel_rd_t rd;
    keel_rd_init(&rd, data, len);
    keel_lww_init(r);
    int rc = get_type(&rd, KEEL_CRDT_LWW, "lww-register", msg);
    if (rc < 0)
        return rc;
    uint64_t ts = keel_rd_u64(&rd), actor = keel_rd_u64(&rd);
    uint32_t n = keel_rd_u32(&rd);
    if (rd.bad)
        return keel_errf(msg, KEEL_EPROTO, "lww-register: truncated header");
    if (n > KEEL_LWW_VALUE_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "lww-register: %u bytes (max %u)", n,
                         KEEL_LWW_VALUE_BYTES_MAX);
    if (ts == 0 && (actor || n))
        return keel_errf(msg, KEEL_EPROTO, "lww-register: unset but carries a value");
    const uint8_t *p = keel_rd_bytes(&rd, n);
    if (!p)
        return keel_errf(msg, KEEL_EPROTO, "lww-register: truncated value");
    rc = no_trailing(&rd, "lww-register", msg);
    if (rc == 0 && ts)
        rc = keel_lww_set(r, ts, actor, p, n) < 0 ? KEEL_ENOMEM : 0;
    return rc;
}

int keel_orset_encode(const keel_orset_t *s, keel_buf_t *out)
{
    uint8_t h[16];
    int rc = put_type(out, KEEL_CRDT_ORSET);
    if (rc == 0)
        rc = keel_vv_encode(&s->vv, out);
    keel_put_u32(h, s->n);
    if (rc == 0)
        rc = keel_buf_append(out, h, 4);
    for (uint32_t i = 0; i < s->n && rc == 0; i++) {
        keel_put_u16(h, s->e[i].len);
        rc = keel_buf_append(out, h, 2);
        if (rc == 0 && s->e[i].len)
            rc = keel_buf_append(out, s->e[i].elem, s->e[i].len);
        keel_put_u64(h, s->e[i].dot.actor);
        keel_put_u64(h + 8, s->e[i].dot.counter);
        if (rc == 0)
            rc = keel_buf_append(out, h, 16);
    }
    return rc;
}

int keel_orset_decode(const void *data, size_t len, keel_orset_t *s, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, data, len);
    keel_orset_init(s);
    int rc = get_type(&r, KEEL_CRDT_ORSET, "or-set", msg);
    if (rc == 0)
        rc = keel_vv_decode(&r, &s->vv, msg);
    if (rc < 0)
        return rc;
    uint32_t n = keel_rd_u32(&r);
    if (r.bad)
        return keel_errf(msg, KEEL_EPROTO, "or-set: truncated count");
    if (n > KEEL_ORSET_ENTRIES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "or-set: %u entries (max %u)", n,
                         KEEL_ORSET_ENTRIES_MAX);
    if (n > r.left / 18) /* each entry takes at least 18 bytes: no allocation for a lie */
        return keel_errf(msg, KEEL_EPROTO, "or-set: %u entries in %zu bytes", n, r.left);
    s->e = n ? calloc(n, sizeof(*s->e)) : NULL;
    if (n && !s->e)
        return KEEL_ENOMEM;
    s->n = n;
    for (uint32_t i = 0; i < n; i++) {
        keel_orset_entry_t *e = &s->e[i];
        e->len = keel_rd_u16(&r);
        if (!r.bad && e->len > KEEL_ORSET_ELEM_BYTES_MAX) {
            rc = keel_errf(msg, KEEL_ETOOBIG, "or-set: element %u has %u bytes (max %u)", i, e->len,
                           KEEL_ORSET_ELEM_BYTES_MAX);
            goto err;
        }
        const uint8_t *p = keel_rd_bytes(&r, e->len);
        e->dot.actor = keel_rd_u64(&r);
        e->dot.counter = keel_rd_u64(&r);
        if (r.bad) {
            rc = keel_errf(msg, KEEL_EPROTO, "or-set: truncated entry %u", i);
            goto err;
        }
        if (e->len) {
            e->elem = malloc(e->len);
            if (!e->elem) {
                rc = KEEL_ENOMEM;
                goto err;
            }
            memcpy(e->elem, p, e->len);
        }
        if (e->dot.counter == 0 || !keel_vv_covers(&s->vv, e->dot)) {
            rc = keel_errf(msg, KEEL_EPROTO, "or-set: entry %u's dot not covered by its vv", i);
            goto err;
        }
        if (i > 0 && entry_cmp(&s->e[i - 1], e) >= 0) {
            rc = keel_errf(msg, KEEL_EPROTO, "or-set: entries not increasing at %u", i);
            goto err;
        }
    }
    rc = no_trailing(&r, "or-set", msg);
    if (rc == 0)
        return 0;
err:
    keel_orset_free(s);
    return rc;
}
