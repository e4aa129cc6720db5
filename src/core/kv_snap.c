/* kv_snap.c - KV snapshots: streaming CRC32C-sealed writer and a validating loader. */
#include "core/kv_int.h"
#include "core/kv_coll.h"

#include "base/crc32c.h"
#include "core/registry.h"

#include <stdlib.h>

/*
 * The snapshot is what a follower that fell behind the leader's log
 * compaction receives instead of the entries (Raft thesis §5.1, §5.3): the
 * whole state and the index it reflects. The loader trusts nothing: it checks
 * the CRC over all bytes first, then every field, because a snapshot comes
 * from disk or from a peer. Layout in kv.h.
 */

static const uint8_t MAGIC[7] = {'K', 'E', 'E', 'L', 'K', 'V', 'S'};
#define HEADER_BYTES 40u             /* magic, version, 4 x u64 */
#define RECORD_HEADER_BYTES_V1 24u   /* key_len, value_len, version, create_revision */
#define RECORD_HEADER_BYTES_V2 32u   /* + expire_ms */
#define RECORD_HEADER_BYTES 40u      /* version 3: + lease_id */
#define LEASE_RECORD_BYTES 24u       /* id, ttl_ms, expire_ms */
#define LOCK_RECORD_HEADER_BYTES 20u /* name_len, token, expire_ms */
/* version 4: key_len, type, version, create_revision, expire_ms, lease_id, body_len */
#define TYPED_RECORD_HEADER_BYTES 45u
#define TRAILER_BYTES 4u
#define SECTION_HEADER_BYTES 12u   /* version 4: u32 tag | u64 len */
#define SECTION_REGISTRY 1u        /* core/registry's section, without limits (older writers) */
#define SECTION_REGISTRY_LIMITS 2u /* the same with its limits first (written now) */
#define SECTION_STAGED 3u          /* large values arriving in pieces (kv_staged.c) */
#define STAGE_BYTES 16384u

typedef struct writer {
    keel_kv_sink_fn sink;
    void *data;
    uint32_t crc;
    size_t n;
    uint8_t stage[STAGE_BYTES];
} writer_t;

static int flush(writer_t *w)
{
    if (w->n == 0)
        return 0;
    w->crc = keel_crc32c(w->crc, w->stage, w->n);
    int rc = w->sink(w->data, w->stage, w->n);
    w->n = 0;
    return rc;
}

static int put(writer_t *w, const uint8_t *p, size_t n)
{
    if (n > STAGE_BYTES - w->n) {
        int rc = flush(w);
        if (rc != 0)
            return rc;
    }
    if (n >= STAGE_BYTES) { /* big values go straight through */
        w->crc = keel_crc32c(w->crc, p, n);
        return w->sink(w->data, p, n);
    }
    if (n)
        memcpy(w->stage + w->n, p, n);
    w->n += n;
    return 0;
}

static int put_record(void *data, const keel__kv_entry_t *e)
{
    writer_t *w = data;
    if (e->type != KEEL__KV_TYPE_STRING)
        return 0; /* in the typed section */
    uint8_t h[RECORD_HEADER_BYTES];
    keel_put_u32(h, e->key_len);
    keel_put_u32(h + 4, e->val_len);
    keel_put_u64(h + 8, e->version);
    keel_put_u64(h + 16, e->create_revision);
    keel_put_u64(h + 24, keel__kv_expire(e));
    keel_put_u64(h + 32, keel__kv_lease_id(e));
    int rc = put(w, h, sizeof(h));
    if (rc == 0)
        rc = put(w, keel__kv_key(e), e->key_len);
    if (rc == 0)
        rc = put(w, keel__kv_cval(e), e->val_len);
    return rc;
}

static int put_lease(void *data, const keel__kv_entry_t *l)
{
    uint8_t r[LEASE_RECORD_BYTES];
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | keel__kv_key(l)[i];
    keel_put_u64(r, id);
    memcpy(r + 8, keel__kv_cval(l), 8);
    keel_put_u64(r + 16, keel__kv_expire(l));
    return put(data, r, sizeof(r));
}

static int put_lock(void *data, const keel__kv_entry_t *l)
{
    uint8_t r[LOCK_RECORD_HEADER_BYTES];
    keel_put_u32(r, l->key_len);
    memcpy(r + 4, keel__kv_cval(l), 8);
    keel_put_u64(r + 12, keel__kv_expire(l));
    int rc = put(data, r, sizeof(r));
    return rc == 0 ? put(data, keel__kv_key(l), l->key_len) : rc;
}

static int count_sink(void *data, const uint8_t *p, size_t n)
{
    (void)p;
    *(uint64_t *)data += n;
    return 0;
}

static int put_sink(void *data, const uint8_t *p, size_t n)
{
    return put(data, p, n);
}

/* Version 4: a typed key's record, its object's body written by its type's row. */
static int put_typed(void *data, const keel__kv_entry_t *e)
{
    if (e->type == KEEL__KV_TYPE_STRING)
        return 0;
    const keel__kv_type_t *t = keel__kv_type(e->type);
    /* an inline set is written as its table (kv_set_inline.c): one body format */
    keel__kc_t *tmp = keel__kv_inline(e) ? keel__ks_inline_table(e) : NULL;
    if (keel__kv_inline(e) && tmp == NULL)
        return KEEL_ENOMEM;
    const void *obj = tmp ? tmp : keel__kv_obj(e);
    uint64_t body = 0;
    t->snap_write(obj, count_sink, &body);
    uint8_t h[TYPED_RECORD_HEADER_BYTES];
    keel_put_u32(h, e->key_len);
    h[4] = e->type;
    keel_put_u64(h + 5, e->version);
    keel_put_u64(h + 13, e->create_revision);
    keel_put_u64(h + 21, keel__kv_expire(e));
    keel_put_u64(h + 29, keel__kv_lease_id(e));
    keel_put_u64(h + 37, body);
    int rc = put(data, h, sizeof(h));
    if (rc == 0)
        rc = put(data, keel__kv_key(e), e->key_len);
    if (rc == 0)
        rc = t->snap_write(obj, put_sink, data);
    keel__kc_free(tmp);
    return rc;
}

static int count_typed(void *data, const keel__kv_entry_t *e)
{
    *(uint64_t *)data += e->type != KEEL__KV_TYPE_STRING;
    return 0;
}

/* Version 3: the lease and lock sections between the header and the key records. */
static int put_sections(writer_t *w, const keel_kv_t *kv)
{
    uint8_t h[24];
    keel_put_u64(h, kv->lease_id_last);
    keel_put_u64(h + 8, kv->fence_last);
    keel_put_u64(h + 16, kv->leases ? kv->leases->count : 0);
    int rc = put(w, h, sizeof(h));
    if (rc == 0 && kv->leases)
        rc = keel__kv_each(kv->leases, put_lease, w);
    keel_put_u64(h, kv->locks ? kv->locks->count : 0);
    if (rc == 0)
        rc = put(w, h, 8);
    if (rc == 0 && kv->locks)
        rc = keel__kv_each(kv->locks, put_lock, w);
    return rc;
}

static int reg_sink(void *data, const uint8_t *p, size_t n)
{
    return put(data, p, n);
}

/*
 * Version 5: tagged sections after the key records, for state beside the keyspace (the
 * service registry; large values arriving in pieces): u32 count (0..2) | count x (u32 tag |
 * u64 len | len bytes). A section with nothing in it is not written, so a snapshot with no
 * staged value reads as it did before they existed.
 */
static int put_tagged(writer_t *w, const keel_kv_t *kv)
{
    uint8_t h[SECTION_HEADER_BYTES];
    keel_put_u32(h, (kv->reg != NULL) + (kv->staged_n > 0));
    int rc = put(w, h, 4);
    if (rc == 0 && kv->reg != NULL) {
        keel_put_u32(h, SECTION_REGISTRY_LIMITS);
        keel_put_u64(h + 4, keel_reg_snapshot_bytes(kv->reg));
        if ((rc = put(w, h, sizeof(h))) == 0)
            rc = keel_reg_snapshot_write(kv->reg, reg_sink, w);
    }
    if (rc == 0 && kv->staged_n > 0) {
        keel_put_u32(h, SECTION_STAGED);
        keel_put_u64(h + 4, keel__kv_staged_snap_bytes(kv));
        if ((rc = put(w, h, sizeof(h))) == 0)
            rc = keel__kv_staged_snap_write(kv, reg_sink, w);
    }
    return rc;
}

int keel_kv_snapshot_write(const keel_kv_t *kv, keel_kv_sink_fn sink, void *data)
{
    writer_t *w = malloc(sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    w->sink = sink;
    w->data = data;
    w->crc = 0;
    w->n = 0;
    uint8_t h[HEADER_BYTES];
    memcpy(h, MAGIC, sizeof(MAGIC));
    h[7] = KEEL_KV_SNAPSHOT_VERSION;
    keel_put_u64(h + 8, kv->applied_index);
    keel_put_u64(h + 16, kv->revision);
    keel_put_u64(h + 24, kv->time_ms);
    uint64_t typed = 0;
    keel__kv_each(kv, count_typed, &typed);
    keel_put_u64(h + 32, kv->count - typed); /* the string records */
    int rc = put(w, h, sizeof(h));
    if (rc == 0)
        rc = put_sections(w, kv);
    if (rc == 0)
        rc = keel__kv_each(kv, put_record, w);
    uint8_t n[8];
    keel_put_u64(n, typed);
    if (rc == 0)
        rc = put(w, n, sizeof(n));
    if (rc == 0)
        rc = keel__kv_each(kv, put_typed, w);
    if (rc == 0)
        rc = put_tagged(w, kv);
    if (rc == 0)
        rc = flush(w);
    if (rc == 0) {
        uint8_t t[TRAILER_BYTES];
        keel_put_u32(t, w->crc);
        rc = sink(data, t, sizeof(t));
    }
    free(w);
    return rc;
}

static int buf_sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

int keel_kv_snapshot_encode(const keel_kv_t *kv, keel_buf_t *out)
{
    size_t mark = keel_buf_unread(out);
    int rc = keel_kv_snapshot_write(kv, buf_sink, out);
    if (rc != 0)
        out->len = out->rpos + mark;
    return rc;
}

/* Reads and links one record (rh bytes of header: version 1 or 2) at *pos. */
static int load_record(keel_kv_t *kv, const uint8_t *data, size_t end, size_t rh, size_t *pos,
                       keel_errmsg_t *msg)
{
    size_t p = *pos;
    if (end - p < rh)
        return keel_errf(msg, KEEL_EPROTO, "record at %zu truncated", p);
    size_t key_len = keel_get_u32(data + p), val_len = keel_get_u32(data + p + 4);
    uint64_t version = keel_get_u64(data + p + 8);
    uint64_t create_revision = keel_get_u64(data + p + 16);
    uint64_t expire_ms = rh > RECORD_HEADER_BYTES_V1 ? keel_get_u64(data + p + 24) : 0;
    uint64_t lease_id = rh > RECORD_HEADER_BYTES_V2 ? keel_get_u64(data + p + 32) : 0;
    p += rh;
    if (key_len > kv->cfg.key_bytes_max || val_len > kv->cfg.value_bytes_max)
        return keel_errf(msg, KEEL_ETOOBIG, "record at %zu: key %zu / value %zu bytes over limits",
                         *pos, key_len, val_len);
    if (key_len > end - p || val_len > end - p - key_len)
        return keel_errf(msg, KEEL_EPROTO, "record at %zu runs past the end", *pos);
    if (create_revision < 1 || create_revision > version || version > kv->revision)
        return keel_errf(msg, KEEL_EPROTO, "record at %zu: revisions %llu..%llu not in 1..%llu",
                         *pos, (unsigned long long)create_revision, (unsigned long long)version,
                         (unsigned long long)kv->revision);
    keel__kv_entry_t *lease = keel__kv_lease_find(kv, lease_id, NULL);
    if (lease_id != 0 && lease == NULL)
        return keel_errf(msg, KEEL_EPROTO, "record at %zu: lease %llu does not exist", *pos,
                         (unsigned long long)lease_id);
    const uint8_t *key = data + p, *val = data + p + key_len;
    uint64_t h = keel__kv_hash(kv, key, key_len);
    if (keel__kv_find(kv, key, key_len, h, NULL) != NULL)
        return keel_errf(msg, KEEL_EPROTO, "record at %zu: duplicate key", *pos);
    if (expire_ms && keel__kv_heap_reserve(kv, 1) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at record %zu", *pos);
    keel__kv_xrec_t *r = lease ? keel__kv_xrec_new() : NULL;
    keel__kv_entry_t *e = keel__kv_entry_new(key, key_len, h, val, val_len, val_len);
    if (e == NULL || (lease && r == NULL)) {
        free(e);
        free(r);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at record %zu", *pos);
    }
    e->version = version;
    e->create_revision = create_revision;
    keel__kv_insert(kv, e);
    keel__kv_set_expire(kv, e, expire_ms);
    if (lease)
        keel__kv_attach(e, lease, lease_id, r);
    *pos = p + key_len + val_len;
    return 0;
}

/* Version 4: one typed key's record at *pos. */
static int load_typed(keel_kv_t *kv, const uint8_t *data, size_t end, size_t *pos,
                      keel_errmsg_t *msg)
{
    size_t p = *pos;
    if (end - p < TYPED_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu truncated", p);
    size_t key_len = keel_get_u32(data + p);
    int type = data[p + 4];
    uint64_t version = keel_get_u64(data + p + 5), create_revision = keel_get_u64(data + p + 13);
    uint64_t expire_ms = keel_get_u64(data + p + 21), lease_id = keel_get_u64(data + p + 29);
    uint64_t body = keel_get_u64(data + p + 37);
    p += TYPED_RECORD_HEADER_BYTES;
    if (type == KEEL__KV_TYPE_STRING || type >= KEEL__KV_TYPES || keel__kv_type(type) == NULL)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu: type %d", *pos, type);
    if (key_len > kv->cfg.key_bytes_max || key_len > end - p || body > end - p - key_len)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu runs past the end or limits", *pos);
    if (create_revision < 1 || create_revision > version || version > kv->revision)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu: bad revisions", *pos);
    keel__kv_entry_t *lease = keel__kv_lease_find(kv, lease_id, NULL);
    if (lease_id != 0 && lease == NULL)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu: no lease %llu", *pos,
                         (unsigned long long)lease_id);
    const uint8_t *key = data + p;
    uint64_t h = keel__kv_hash(kv, key, key_len);
    if (keel__kv_find(kv, key, key_len, h, NULL) != NULL)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu: duplicate key", *pos);
    if (expire_ms && keel__kv_heap_reserve(kv, 1) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at record %zu", *pos);
    const keel__kv_type_t *t = keel__kv_type(type);
    if (t == NULL)
        return keel_errf(msg, KEEL_EPROTO, "typed record at %zu: type %d", *pos, type);
    void *obj = NULL;
    int rc = t->snap_load(data + p + key_len, (size_t)body, &obj);
    if (rc != 0)
        return keel_errf(msg, rc, "typed record at %zu: bad %s body", *pos, t->name);
    keel__kv_xrec_t *r = lease ? keel__kv_xrec_new() : NULL;
    uint8_t inl[KEEL__KS_INLINE_BYTES_MAX]; /* a small set of integers rests in its entry */
    size_t inl_len = type == KEEL__KV_TYPE_SET ? keel__ks_inline_of(obj, inl) : 0;
    keel__kv_entry_t *e = inl_len ? keel__kv_entry_new(key, key_len, h, inl, inl_len, inl_len)
                                  : keel__kv_entry_new_obj(key, key_len, h, type, obj);
    if (e == NULL || (lease && r == NULL)) {
        t->free(obj);
        free(e);
        free(r);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at record %zu", *pos);
    }
    e->version = version;
    e->create_revision = create_revision;
    if (inl_len) {
        e->type = (uint8_t)type;
        t->free(obj);
    }
    keel__kv_insert(kv, e);
    kv->bytes += inl_len ? 0 : t->bytes(obj);
    keel__kv_set_expire(kv, e, expire_ms);
    if (lease)
        keel__kv_attach(e, lease, lease_id, r);
    *pos = p + key_len + (size_t)body;
    return 0;
}

/* One lease record at *pos into kv->leases (created by the caller). */
static int load_lease(keel_kv_t *kv, const uint8_t *data, size_t end, size_t *pos,
                      keel_errmsg_t *msg)
{
    if (end - *pos < LEASE_RECORD_BYTES)
        return keel_errf(msg, KEEL_EPROTO, "lease at %zu truncated", *pos);
    uint64_t id = keel_get_u64(data + *pos), ttl = keel_get_u64(data + *pos + 8);
    uint64_t when = keel_get_u64(data + *pos + 16);
    if (id == 0 || id > kv->lease_id_last || ttl == 0 || ttl > INT64_MAX || when == 0)
        return keel_errf(msg, KEEL_EPROTO, "lease at %zu: bad id, ttl or deadline", *pos);
    if (keel__kv_lease_find(kv, id, NULL) != NULL)
        return keel_errf(msg, KEEL_EPROTO, "lease at %zu: duplicate id", *pos);
    uint8_t k[KEEL__KV_LEASE_KEY_BYTES];
    keel__kv_put_u64be(k, id);
    if (keel__kv_heap_reserve(kv->leases, 1) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at lease %zu", *pos);
    keel__kv_entry_t *l =
        keel__kv_entry_new(k, sizeof(k), keel__kv_hash(kv->leases, k, 8), data + *pos + 8, 8, 8);
    if (l == NULL || keel__kv_lease_head(l) != 0) { /* the empty list of its keys */
        free(l);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at lease %zu", *pos);
    }
    keel__kv_insert(kv->leases, l);
    keel__kv_set_expire(kv->leases, l, when);
    *pos += LEASE_RECORD_BYTES;
    return 0;
}

static int load_lock(keel_kv_t *kv, const uint8_t *data, size_t end, size_t *pos,
                     keel_errmsg_t *msg)
{
    if (end - *pos < LOCK_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_EPROTO, "lock at %zu truncated", *pos);
    size_t n = keel_get_u32(data + *pos);
    uint64_t token = keel_get_u64(data + *pos + 4), when = keel_get_u64(data + *pos + 12);
    const uint8_t *name = data + *pos + LOCK_RECORD_HEADER_BYTES;
    if (n > end - *pos - LOCK_RECORD_HEADER_BYTES || n > kv->cfg.key_bytes_max)
        return keel_errf(msg, KEEL_EPROTO, "lock at %zu: name runs past the end or the limit",
                         *pos);
    if (token == 0 || token > kv->fence_last || when == 0)
        return keel_errf(msg, KEEL_EPROTO, "lock at %zu: bad token or deadline", *pos);
    uint64_t h = keel__kv_hash(kv->locks, name, n);
    if (keel__kv_find(kv->locks, name, n, h, NULL) != NULL)
        return keel_errf(msg, KEEL_EPROTO, "lock at %zu: duplicate name", *pos);
    if (keel__kv_heap_reserve(kv->locks, 1) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at lock %zu", *pos);
    keel__kv_entry_t *l = keel__kv_entry_new(name, n, h, data + *pos + 4, 8, 8);
    if (l == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory at lock %zu", *pos);
    keel__kv_insert(kv->locks, l);
    keel__kv_set_expire(kv->locks, l, when);
    *pos += LOCK_RECORD_HEADER_BYTES + n;
    return 0;
}

/* Version 3's counters and its lease and lock sections, at *pos. */
static int load_sections(keel_kv_t *kv, const uint8_t *data, size_t end, size_t *pos,
                         keel_errmsg_t *msg)
{
    if (end - *pos < 24)
        return keel_errf(msg, KEEL_EPROTO, "lease section truncated");
    kv->lease_id_last = keel_get_u64(data + *pos);
    kv->fence_last = keel_get_u64(data + *pos + 8);
    uint64_t leases = keel_get_u64(data + *pos + 16);
    *pos += 24;
    if (leases > kv->cfg.keys_max || leases > (end - *pos) / LEASE_RECORD_BYTES)
        return keel_errf(msg, KEEL_EPROTO, "%llu leases do not fit", (unsigned long long)leases);
    if (leases && keel__kv_sub(kv, &kv->leases) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory for leases");
    for (uint64_t i = 0; i < leases; i++) {
        int rc = load_lease(kv, data, end, pos, msg);
        if (rc != 0)
            return rc;
    }
    if (end - *pos < 8)
        return keel_errf(msg, KEEL_EPROTO, "lock section truncated");
    uint64_t locks = keel_get_u64(data + *pos);
    *pos += 8;
    if (locks > kv->cfg.keys_max || locks > (end - *pos) / LOCK_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_EPROTO, "%llu locks do not fit", (unsigned long long)locks);
    if (locks && keel__kv_sub(kv, &kv->locks) != 0)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory for locks");
    for (uint64_t i = 0; i < locks; i++) {
        int rc = load_lock(kv, data, end, pos, msg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The registry's section. */
static int load_registry(keel_kv_t *kv, const uint8_t *p, size_t len, int limits,
                         keel_errmsg_t *msg)
{
    keel_reg_t *reg = malloc(sizeof(*reg));
    if (reg == NULL || keel_reg_init(reg, NULL) != 0) {
        free(reg);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory for the registry");
    }
    int rc = keel_reg_snapshot_load(reg, p, len, limits, msg);
    if (rc != 0) {
        keel_reg_free(reg);
        free(reg);
        return rc;
    }
    kv->reg = reg;
    return 0;
}

/* Version 5's tagged sections at *pos, up to end: each tag at most once, none unknown. */
static int load_tagged(keel_kv_t *kv, const uint8_t *data, size_t end, size_t *pos,
                       keel_errmsg_t *msg)
{
    if (end - *pos < 4)
        return keel_errf(msg, KEEL_EPROTO, "section count truncated");
    uint32_t n = keel_get_u32(data + *pos);
    *pos += 4;
    if (n > 2)
        return keel_errf(msg, KEEL_EPROTO, "%u sections (this version knows 2)", n);
    for (uint32_t i = 0; i < n; i++) {
        if (end - *pos < SECTION_HEADER_BYTES)
            return keel_errf(msg, KEEL_EPROTO, "section header truncated");
        uint32_t tag = keel_get_u32(data + *pos);
        uint64_t len = keel_get_u64(data + *pos + 4);
        *pos += SECTION_HEADER_BYTES;
        if (tag != SECTION_REGISTRY && tag != SECTION_REGISTRY_LIMITS && tag != SECTION_STAGED)
            return keel_errf(msg, KEEL_EPROTO, "unknown section %u", tag);
        if (len > end - *pos)
            return keel_errf(msg, KEEL_EPROTO, "section %u runs past the end", tag);
        int rc;
        if (tag == SECTION_STAGED) {
            if (kv->staged != NULL)
                return keel_errf(msg, KEEL_EPROTO, "section %u twice", tag);
            rc = keel__kv_staged_snap_load(kv, data + *pos, (size_t)len, msg);
        } else {
            if (kv->reg != NULL)
                return keel_errf(msg, KEEL_EPROTO, "section %u twice", tag);
            rc = load_registry(kv, data + *pos, (size_t)len, tag == SECTION_REGISTRY_LIMITS, msg);
        }
        if (rc != 0)
            return rc;
        *pos += (size_t)len;
    }
    return 0;
}

static int load(keel_kv_t *kv, const uint8_t *data, size_t len, keel_errmsg_t *msg)
{
    if (len < HEADER_BYTES + TRAILER_BYTES)
        return keel_errf(msg, KEEL_ECORRUPT, "snapshot of %zu bytes is truncated", len);
    size_t end = len - TRAILER_BYTES;
    uint32_t crc = keel_get_u32(data + end), want = keel_crc32c(0, data, end);
    if (crc != want)
        return keel_errf(msg, KEEL_ECORRUPT, "snapshot crc32c %08x, computed %08x", crc, want);
    /* Version 1 (no deadlines) is still read: its records are 8 bytes shorter. */
    if (memcmp(data, MAGIC, sizeof(MAGIC)) != 0 || data[7] < 1 ||
        data[7] > KEEL_KV_SNAPSHOT_VERSION)
        return keel_errf(msg, KEEL_EPROTO, "not a version 1..%d kv snapshot",
                         KEEL_KV_SNAPSHOT_VERSION);
    size_t rh = data[7] == 1   ? RECORD_HEADER_BYTES_V1
                : data[7] == 2 ? RECORD_HEADER_BYTES_V2
                               : RECORD_HEADER_BYTES;
    uint64_t count = keel_get_u64(data + 32);
    kv->revision = keel_get_u64(data + 16);
    if (count > kv->cfg.keys_max)
        return keel_errf(msg, KEEL_ETOOBIG, "%llu keys over keys_max %zu",
                         (unsigned long long)count, kv->cfg.keys_max);
    size_t pos = HEADER_BYTES;
    if (data[7] >= 3) {
        int rc = load_sections(kv, data, end, &pos, msg);
        if (rc != 0)
            return rc;
    }
    /* Size the table once, but only for a count the data can actually hold. */
    if (count <= (end - pos) / rh)
        keel__kv_presize(kv, (size_t)count);
    for (uint64_t i = 0; i < count; i++) {
        int rc = load_record(kv, data, end, rh, &pos, msg);
        if (rc != 0)
            return rc;
    }
    if (data[7] >= KEEL_KV_SNAPSHOT_VERSION_TYPED) {
        if (end - pos < 8)
            return keel_errf(msg, KEEL_EPROTO, "typed section truncated");
        uint64_t typed = keel_get_u64(data + pos);
        pos += 8;
        if (typed > kv->cfg.keys_max - count || typed > (end - pos) / TYPED_RECORD_HEADER_BYTES)
            return keel_errf(msg, KEEL_EPROTO, "%llu typed keys do not fit",
                             (unsigned long long)typed);
        for (uint64_t i = 0; i < typed; i++) {
            int rc = load_typed(kv, data, end, &pos, msg);
            if (rc != 0)
                return rc;
        }
        count += typed;
    }
    if (data[7] >= KEEL_KV_SNAPSHOT_VERSION_SECTIONS) {
        int rc = load_tagged(kv, data, end, &pos, msg);
        if (rc != 0)
            return rc;
    }
    if (pos != end)
        return keel_errf(msg, KEEL_EPROTO, "%zu bytes after the last record", end - pos);
    if (count > 0 && kv->revision == 0)
        return keel_errf(msg, KEEL_EPROTO, "keys but revision 0");
    kv->applied_index = keel_get_u64(data + 8);
    kv->time_ms = keel_get_u64(data + 24);
    return 0;
}

int keel_kv_snapshot_decode(keel_kv_t *kv_new, const uint8_t *data, size_t len, keel_errmsg_t *msg)
{
    if (kv_new->count != 0 || kv_new->revision != 0 || kv_new->applied_index != 0)
        return keel_errf(msg, KEEL_EINVAL, "snapshot target is not a fresh kv");
    int rc = load(kv_new, data, len, msg);
    if (rc != 0) {
        keel__kv_clear_all(kv_new);
        keel__kv_reg_free(kv_new);
        keel__kv_staged_free(kv_new);
        kv_new->revision = kv_new->applied_index = kv_new->time_ms = 0;
        kv_new->lease_id_last = kv_new->fence_last = 0;
        return rc;
    }
    keel__kv_hist_restart(kv_new); /* the history starts after the snapshot's revision */
    keel__xs_index_all(kv_new);
    return 0;
}
