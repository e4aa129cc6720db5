/* apobj.c - sibling sets with dotted version vectors (see apobj.h). */
#include "core/apobj.h"

#include "base/hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void keel_apobj_init(keel_apobj_t *o)
{
    keel_vv_init(&o->vv);
    o->n = 0;
    o->s = NULL;
}

static void sibs_free(keel_apsib_t *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(s[i].data);
    free(s);
}

void keel_apobj_free(keel_apobj_t *o)
{
    sibs_free(o->s, o->n);
    keel_apobj_init(o);
}

static int sib_copy(keel_apsib_t *dst, const keel_apsib_t *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->len) {
        dst->data = malloc(src->len);
        if (!dst->data)
            return KEEL_ENOMEM;
        memcpy(dst->data, src->data, src->len);
    }
    return 0;
}

/* Builds a new sibling array from picks of a and b; all-or-nothing. */
typedef struct pick {
    const keel_apsib_t *from;
} pick_t;

static int build(keel_apsib_t **out, const pick_t *picks, uint32_t n)
{
    keel_apsib_t *s = NULL;
    if (n) {
        s = calloc(n, sizeof(*s));
        if (!s)
            return KEEL_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (sib_copy(&s[i], picks[i].from) < 0) {
            sibs_free(s, i);
            return KEEL_ENOMEM;
        }
    }
    *out = s;
    return 0;
}

int keel_apobj_copy(keel_apobj_t *dst, const keel_apobj_t *src)
{
    pick_t picks[KEEL_AP_SIBLINGS_MAX];
    assert(src->n <= KEEL_AP_SIBLINGS_MAX);
    for (uint32_t i = 0; i < src->n; i++)
        picks[i].from = &src->s[i];
    keel_apsib_t *s;
    int rc = build(&s, picks, src->n);
    if (rc < 0)
        return rc;
    dst->vv = src->vv;
    dst->n = src->n;
    dst->s = s;
    return 0;
}

int keel_apobj_put(keel_apobj_t *o, const keel_vv_t *ctx, uint64_t actor, int tomb,
                   const void *data, uint32_t len, keel_dot_t *dot)
{
    if (len > KEEL_AP_VALUE_BYTES_MAX)
        return KEEL_ETOOBIG;
    if (tomb)
        len = 0;
    keel_vv_t vv = o->vv;
    if (ctx && keel_vv_join(&vv, ctx) < 0)
        return KEEL_EFULL;
    keel_dot_t d = {actor, keel_vv_get(&vv, actor) + 1};
    if (keel_vv_raise(&vv, actor, d.counter) < 0)
        return KEEL_EFULL;
    pick_t picks[KEEL_AP_SIBLINGS_MAX + 1];
    uint32_t n = 0;
    for (uint32_t i = 0; i < o->n; i++)
        if (!ctx || !keel_vv_covers(ctx, o->s[i].dot))
            picks[n++].from = &o->s[i];
    if (n + 1 > KEEL_AP_SIBLINGS_WRITE_MAX)
        return KEEL_EFULL;
    keel_apsib_t nsib = {d, (uint8_t)(tomb ? 1 : 0), len, (uint8_t *)(uintptr_t)data};
    /* d is above every dot of this actor here, but other actors' dots sort around it */
    uint32_t at = n;
    while (at > 0 && keel_dot_cmp(picks[at - 1].from->dot, d) > 0)
        at--;
    memmove(&picks[at + 1], &picks[at], (n - at) * sizeof(picks[0]));
    picks[at].from = &nsib;
    n++;
    keel_apsib_t *s;
    int rc = build(&s, picks, n);
    if (rc < 0)
        return rc;
    sibs_free(o->s, o->n);
    o->s = s;
    o->n = n;
    o->vv = vv;
    if (dot)
        *dot = d;
    return 0;
}

int keel_apobj_merge(keel_apobj_t *o, const keel_apobj_t *other)
{
    keel_vv_t vv = o->vv;
    if (keel_vv_join(&vv, &other->vv) < 0)
        return KEEL_EFULL;
    pick_t picks[KEEL_AP_SIBLINGS_MAX];
    uint32_t n = 0, i = 0, j = 0;
    while (i < o->n || j < other->n) {
        const keel_apsib_t *keep = NULL;
        int c = i == o->n ? 1 : j == other->n ? -1 : keel_dot_cmp(o->s[i].dot, other->s[j].dot);
        if (c == 0) { /* on both sides: kept */
            keep = &o->s[i];
            i++, j++;
        } else if (c < 0) { /* only here: dropped if the other side saw it and let it go */
            if (!keel_vv_covers(&other->vv, o->s[i].dot))
                keep = &o->s[i];
            i++;
        } else {
            if (!keel_vv_covers(&o->vv, other->s[j].dot))
                keep = &other->s[j];
            j++;
        }
        if (keep) {
            if (n == KEEL_AP_SIBLINGS_MAX)
                return KEEL_EFULL;
            picks[n++].from = keep;
        }
    }
    keel_apsib_t *s;
    int rc = build(&s, picks, n);
    if (rc < 0)
        return rc;
    sibs_free(o->s, o->n);
    o->s = s;
    o->n = n;
    o->vv = vv;
    return 0;
}

uint32_t keel_apobj_live(const keel_apobj_t *o)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < o->n; i++)
        k += !o->s[i].tomb;
    return k;
}

int keel_apobj_find(const keel_apobj_t *o, keel_dot_t dot)
{
    for (uint32_t i = 0; i < o->n; i++)
        if (keel_dot_cmp(o->s[i].dot, dot) == 0)
            return (int)i;
    return -1;
}

int keel_apobj_encode(const keel_apobj_t *o, keel_buf_t *out)
{
    uint8_t hdr[21];
    hdr[0] = KEEL_APOBJ_FORMAT;
    int rc = keel_buf_append(out, hdr, 1);
    if (rc == 0)
        rc = keel_vv_encode(&o->vv, out);
    keel_put_u16(hdr, (uint16_t)o->n);
    if (rc == 0)
        rc = keel_buf_append(out, hdr, 2);
    for (uint32_t i = 0; i < o->n && rc == 0; i++) {
        const keel_apsib_t *s = &o->s[i];
        keel_put_u64(hdr, s->dot.actor);
        keel_put_u64(hdr + 8, s->dot.counter);
        hdr[16] = s->tomb ? 1 : 0;
        keel_put_u32(hdr + 17, s->len);
        rc = keel_buf_append(out, hdr, 21);
        if (rc == 0 && s->len)
            rc = keel_buf_append(out, s->data, s->len);
    }
    return rc;
}

int keel_apobj_decode(const void *data, size_t len, keel_apobj_t *o, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, data, len);
    keel_apobj_init(o);
    uint8_t fmt = keel_rd_u8(&r);
    if (r.bad)
        return keel_errf(msg, KEEL_EPROTO, "object: empty");
    if (fmt != KEEL_APOBJ_FORMAT)
        return keel_errf(msg, KEEL_EPROTO, "object: unknown format %u", fmt);
    int rc = keel_vv_decode(&r, &o->vv, msg);
    if (rc < 0)
        return rc;
    uint16_t n = keel_rd_u16(&r);
    if (r.bad)
        return keel_errf(msg, KEEL_EPROTO, "object: truncated sibling count");
    if (n > KEEL_AP_SIBLINGS_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "object: %u siblings (max %u)", n,
                         KEEL_AP_SIBLINGS_MAX);
    o->s = n ? calloc(n, sizeof(*o->s)) : NULL;
    if (n && !o->s)
        return KEEL_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        keel_apsib_t *s = &o->s[i];
        s->dot.actor = keel_rd_u64(&r);
        s->dot.counter = keel_rd_u64(&r);
        uint8_t flags = keel_rd_u8(&r);
        s->len = keel_rd_u32(&r);
        if (r.bad) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: truncated sibling %u", i);
            goto err;
        }
        if (flags > 1) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: sibling %u has unknown flags %u", i, flags);
            goto err;
        }
        s->tomb = flags;
        if (s->dot.counter == 0 || !keel_vv_covers(&o->vv, s->dot)) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: sibling %u's dot not covered by its vv", i);
            goto err;
        }
        if (i > 0 && keel_dot_cmp(o->s[i - 1].dot, s->dot) >= 0) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: sibling dots not increasing at %u", i);
            goto err;
        }
        if (s->tomb && s->len) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: tombstone %u carries %u bytes", i, s->len);
            goto err;
        }
        if (s->len > KEEL_AP_VALUE_BYTES_MAX) {
            rc = keel_errf(msg, KEEL_ETOOBIG, "object: sibling %u has %u bytes (max %u)", i, s->len,
                           KEEL_AP_VALUE_BYTES_MAX);
            goto err;
        }
        const uint8_t *p = keel_rd_bytes(&r, s->len);
        if (!p) {
            rc = keel_errf(msg, KEEL_EPROTO, "object: truncated value of sibling %u", i);
            goto err;
        }
        if (s->len) {
            s->data = malloc(s->len);
            if (!s->data) {
                rc = KEEL_ENOMEM;
                goto err;
            }
            memcpy(s->data, p, s->len);
        }
        o->n = i + 1;
    }
    o->n = n;
    if (r.left != 0) {
        rc = keel_errf(msg, KEEL_EPROTO, "object: %zu trailing bytes", r.left);
        goto err;
    }
    return 0;
err:
    o->n = n; /* calloc'd: unset data pointers are NULL */
    keel_apobj_free(o);
    return rc;
}

uint64_t keel_apobj_digest(const keel_apobj_t *o)
{
    /* FNV-style fold of per-field hashes: no allocation, same bytes as the encoding covers */
    uint64_t h = keel_hash64(&o->vv.n, sizeof(o->vv.n), 0x61706f626aull);
    h = keel_hash64(o->vv.e, (size_t)o->vv.n * sizeof(o->vv.e[0]), h);
    for (uint32_t i = 0; i < o->n; i++) {
        const keel_apsib_t *s = &o->s[i];
        uint64_t f[4] = {s->dot.actor, s->dot.counter, s->tomb, s->len};
        h = keel_hash64(f, sizeof(f), h);
        if (s->len)
            h = keel_hash64(s->data, s->len, h);
    }
    return h;
}

int keel_apobj_equal(const keel_apobj_t *a, const keel_apobj_t *b)
{
    if (keel_vv_compare(&a->vv, &b->vv) != KEEL_VV_EQUAL || a->n != b->n)
        return 0;
    for (uint32_t i = 0; i < a->n; i++) {
        const keel_apsib_t *x = &a->s[i], *y = &b->s[i];
        if (keel_dot_cmp(x->dot, y->dot) || x->tomb != y->tomb || x->len != y->len ||
            (x->len && memcmp(x->data, y->data, x->len)))
            return 0;
    }
    return 1;
}
