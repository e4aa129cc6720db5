/* apval.c - a value of the AP keyspace of any kind (see apval.h). */
#include "core/apval.h"

#include "base/hash.h"

#include <string.h>

int keel_apval_init(keel_apval_t *v, uint8_t kind)
{
    memset(v, 0, sizeof(*v));
    v->kind = kind;
    switch (kind) {
    case KEEL_APVAL_SIBLINGS:
        keel_apobj_init(&v->u.obj);
        return 0;
    case KEEL_APVAL_PNCOUNTER:
        keel_pncounter_init(&v->u.pn);
        return 0;
    case KEEL_APVAL_ORSET:
        keel_orset_init(&v->u.set);
        return 0;
    case KEEL_APVAL_LWW:
        keel_lww_init(&v->u.lww);
        return 0;
    }
    v->kind = 0;
    return KEEL_EINVAL;
}

void keel_apval_free(keel_apval_t *v)
{
    if (v->kind == KEEL_APVAL_SIBLINGS)
        keel_apobj_free(&v->u.obj);
    else if (v->kind == KEEL_APVAL_ORSET)
        keel_orset_free(&v->u.set);
    else if (v->kind == KEEL_APVAL_LWW)
        keel_lww_free(&v->u.lww);
    v->kind = 0;
}

int keel_apval_merge(keel_apval_t *v, const keel_apval_t *o)
{
    if (v->kind != o->kind)
        return KEEL_ECONFLICT;
    switch (v->kind) {
    case KEEL_APVAL_SIBLINGS:
        return keel_apobj_merge(&v->u.obj, &o->u.obj);
    case KEEL_APVAL_PNCOUNTER:
        return keel_pncounter_merge(&v->u.pn, &o->u.pn);
    case KEEL_APVAL_ORSET:
        return keel_orset_merge(&v->u.set, &o->u.set);
    case KEEL_APVAL_LWW:
        return keel_lww_merge(&v->u.lww, &o->u.lww);
    }
    return KEEL_EINVAL;
}

int keel_apval_copy(keel_apval_t *dst, const keel_apval_t *src)
{
    int rc = keel_apval_init(dst, src->kind);
    if (rc == 0)
        rc = keel_apval_merge(dst, src); /* merge into empty = copy */
    if (rc != 0)
        keel_apval_free(dst);
    return rc;
}

int keel_apval_encode(const keel_apval_t *v, keel_buf_t *out)
{
    int rc = keel_buf_append(out, &v->kind, 1);
    if (rc < 0)
        return rc;
    switch (v->kind) {
    case KEEL_APVAL_SIBLINGS:
        return keel_apobj_encode(&v->u.obj, out);
    case KEEL_APVAL_PNCOUNTER:
        return keel_pncounter_encode(&v->u.pn, out);
    case KEEL_APVAL_ORSET:
        return keel_orset_encode(&v->u.set, out);
    case KEEL_APVAL_LWW:
        return keel_lww_encode(&v->u.lww, out);
    }
    return KEEL_EINVAL;
}

int keel_apval_decode(const void *data, size_t len, keel_apval_t *v, keel_errmsg_t *msg)
{
    const uint8_t *p = data;
    memset(v, 0, sizeof(*v)); /* kind 0: safe to free whatever happens below */
    if (len == 0)
        return keel_errf(msg, KEEL_EPROTO, "value: empty");
    int rc = keel_apval_init(v, p[0]);
    if (rc < 0)
        return keel_errf(msg, KEEL_EPROTO, "value: unknown kind %u", p[0]);
    switch (p[0]) {
    case KEEL_APVAL_SIBLINGS:
        return keel_apobj_decode(p + 1, len - 1, &v->u.obj, msg);
    case KEEL_APVAL_PNCOUNTER:
        return keel_pncounter_decode(p + 1, len - 1, &v->u.pn, msg);
    case KEEL_APVAL_ORSET:
        return keel_orset_decode(p + 1, len - 1, &v->u.set, msg);
    default:
        return keel_lww_decode(p + 1, len - 1, &v->u.lww, msg);
    }
}

uint64_t keel_apval_digest(const keel_apval_t *v)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    uint64_t h = 0;
    if (keel_apval_encode(v, &b) == 0)
        h = keel_hash64(b.data, b.len, 0x617076616cull);
    keel_buf_free(&b);
    return h;
}

int keel_apval_has_actor(const keel_apval_t *v, uint64_t actor)
{
    switch (v->kind) {
    case KEEL_APVAL_SIBLINGS:
        return keel_vv_get(&v->u.obj.vv, actor) > 0; /* every sibling's dot is in vv */
    case KEEL_APVAL_PNCOUNTER:
        return keel_vv_get(&v->u.pn.p.c, actor) > 0 || keel_vv_get(&v->u.pn.n.c, actor) > 0;
    case KEEL_APVAL_ORSET:
        return keel_vv_get(&v->u.set.vv, actor) > 0;
    case KEEL_APVAL_LWW:
        return v->u.lww.ts > 0 && v->u.lww.actor == actor;
    default:
        return 1; /* unknown: keep it */
    }
}

const char *keel_apval_kind_name(uint8_t kind)
{
    static const char *const names[] = {"?", "siblings", "pn-counter", "or-set", "lww-register"};
    return kind <= KEEL_APVAL_LWW ? names[kind] : "?";
}
