/* vclock.c - version vectors and dots (see vclock.h). */
#include "core/vclock.h"

#include <assert.h>
#include <string.h>

void keel_vv_init(keel_vv_t *v)
{
    v->n = 0;
}

static uint32_t find(const keel_vv_t *v, uint64_t actor)
{
    uint32_t lo = 0, hi = v->n; /* first entry with e.actor >= actor */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->e[mid].actor < actor)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t keel_vv_get(const keel_vv_t *v, uint64_t actor)
{
    uint32_t i = find(v, actor);
    return i < v->n && v->e[i].actor == actor ? v->e[i].counter : 0;
}

int keel_vv_raise(keel_vv_t *v, uint64_t actor, uint64_t counter)
{
    if (counter == 0)
        return 0;
    uint32_t i = find(v, actor);
    if (i < v->n && v->e[i].actor == actor) {
        if (v->e[i].counter < counter)
            v->e[i].counter = counter;
        return 0;
    }
    if (v->n == KEEL_VV_ACTORS_MAX)
        return KEEL_EFULL;
    memmove(&v->e[i + 1], &v->e[i], (v->n - i) * sizeof(v->e[0]));
    v->e[i] = (keel_dot_t){actor, counter};
    v->n++;
    return 0;
}

int keel_vv_join(keel_vv_t *v, const keel_vv_t *w)
{
    keel_vv_t out;
    uint32_t i = 0, j = 0;
    out.n = 0;
    while (i < v->n || j < w->n) {
        keel_dot_t d;
        if (j == w->n || (i < v->n && v->e[i].actor < w->e[j].actor)) {
            d = v->e[i++];
        } else if (i == v->n || w->e[j].actor < v->e[i].actor) {
            d = w->e[j++];
        } else {
            d = v->e[i];
            if (w->e[j].counter > d.counter)
                d.counter = w->e[j].counter;
            i++, j++;
        }
        if (out.n == KEEL_VV_ACTORS_MAX)
            return KEEL_EFULL;
        out.e[out.n++] = d;
    }
    *v = out;
    return 0;
}

keel_vv_order_t keel_vv_compare(const keel_vv_t *a, const keel_vv_t *b)
{
    int a_more = 0, b_more = 0; /* some entry of a above b's, and the reverse */
    uint32_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->e[i].actor < b->e[j].actor)) {
            a_more = 1, i++;
        } else if (i == a->n || b->e[j].actor < a->e[i].actor) {
            b_more = 1, j++;
        } else {
            a_more |= a->e[i].counter > b->e[j].counter;
            b_more |= b->e[j].counter > a->e[i].counter;
            i++, j++;
        }
    }
    if (a_more && b_more)
        return KEEL_VV_CONCURRENT;
    return a_more ? KEEL_VV_AFTER : b_more ? KEEL_VV_BEFORE : KEEL_VV_EQUAL;
}

const char *keel_vv_order_name(keel_vv_order_t o)
{
    static const char *const names[] = {"EQUAL", "BEFORE", "AFTER", "CONCURRENT"};
    return (unsigned)o < 4 ? names[o] : "?";
}

int keel_vv_encode(const keel_vv_t *v, keel_buf_t *out)
{
    assert(v->n <= KEEL_VV_ACTORS_MAX);
    int rc = keel_buf_reserve(out, 1 + (size_t)v->n * 16);
    if (rc < 0)
        return rc;
    uint8_t *p = keel_buf_wptr(out);
    p[0] = (uint8_t)v->n;
    for (uint32_t i = 0; i < v->n; i++) {
        keel_put_u64(p + 1 + i * 16, v->e[i].actor);
        keel_put_u64(p + 9 + i * 16, v->e[i].counter);
    }
    keel_buf_commit(out, 1 + (size_t)v->n * 16);
    return 0;
}

int keel_vv_decode(keel_rd_t *r, keel_vv_t *v, keel_errmsg_t *msg)
{
    uint8_t n = keel_rd_u8(r);
    if (r->bad)
        return keel_errf(msg, KEEL_EPROTO, "version vector: truncated count");
    if (n > KEEL_VV_ACTORS_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "version vector: %u actors (max %u)", n,
                         KEEL_VV_ACTORS_MAX);
    v->n = 0;
    for (uint32_t i = 0; i < n; i++) {
        keel_dot_t d;
        d.actor = keel_rd_u64(r);
        d.counter = keel_rd_u64(r);
        if (r->bad)
            return keel_errf(msg, KEEL_EPROTO, "version vector: truncated entry %u", i);
        if (d.counter == 0)
            return keel_errf(msg, KEEL_EPROTO, "version vector: entry %u has counter 0", i);
        if (i > 0 && d.actor <= v->e[i - 1].actor)
            return keel_errf(msg, KEEL_EPROTO, "version vector: actors not increasing at %u", i);
        v->e[v->n++] = d;
    }
    return 0;
}

int keel_vv_decode_all(const void *data, size_t len, keel_vv_t *v, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, data, len);
    int rc = keel_vv_decode(&r, v, msg);
    if (rc == 0 && r.left != 0)
        rc = keel_errf(msg, KEEL_EPROTO, "context: %zu trailing bytes", r.left);
    return rc;
}
