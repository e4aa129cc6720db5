/* stream_snap.c - a stream's snapshot form: encode to a sink, decode (checked) from bytes. */
#include "core/stream_int.h"

#include "base/bytes.h"

#include <assert.h>
#include <stdlib.h>

/* ---- snapshots ------------------------------------------------------------------- */

static int put_u64(keel_stream_sink_fn sink, void *data, uint64_t v)
{
    uint8_t b[8];
    keel_put_u64(b, v);
    return sink(data, b, 8);
}

static int put_u32(keel_stream_sink_fn sink, void *data, uint32_t v)
{
    uint8_t b[4];
    keel_put_u32(b, v);
    return sink(data, b, 4);
}

static int put_bytes(keel_stream_sink_fn sink, void *data, const uint8_t *p, size_t n)
{
    int rc = put_u32(sink, data, (uint32_t)n);
    return rc == 0 && n ? sink(data, p, n) : rc;
}

static int encode_entries(const keel_stream_t *s, keel_stream_sink_fn sink, void *data)
{
    keel_stream_iter_t it;
    keel_stream_entry_t e;
    int rc = 0;
    keel_stream_iter_init(&it, s, (keel_stream_id_t){0, 0},
                          (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, 0);
    while (rc == 0 && keel_stream_iter_next(&it, &e)) {
        rc = put_u64(sink, data, e.id.ms);
        if (rc == 0)
            rc = put_u64(sink, data, e.id.seq);
        if (rc == 0)
            rc = put_u32(sink, data, (uint32_t)e.nfields);
        keel_stream_field_cursor_t cur;
        keel_stream_fields_begin(&e, &cur);
        for (size_t i = 0; rc == 0 && i < e.nfields; i++) {
            const uint8_t *f, *v;
            size_t fl, vl;
            keel_stream_field_next(&cur, &f, &fl, &v, &vl);
            rc = put_bytes(sink, data, f, fl);
            if (rc == 0)
                rc = put_bytes(sink, data, v, vl);
        }
    }
    return rc;
}

static int encode_group(const keel_stream_group_t *g, keel_stream_sink_fn sink, void *data)
{
    int rc = put_bytes(sink, data, g->name, g->name_len);
    if (rc == 0)
        rc = put_u64(sink, data, g->last_id.ms);
    if (rc == 0)
        rc = put_u64(sink, data, g->last_id.seq);
    if (rc == 0)
        rc = put_u64(sink, data, (uint64_t)g->entries_read);
    if (rc == 0)
        rc = put_u64(sink, data, g->max_deliveries);
    if (rc == 0)
        rc = put_bytes(sink, data, g->dlq, g->dlq_len);
    if (rc == 0)
        rc = put_u32(sink, data, (uint32_t)g->ncons);
    for (size_t i = 0; rc == 0 && i < g->ncons; i++) {
        rc = put_bytes(sink, data, g->cons[i]->name, g->cons[i]->name_len);
        if (rc == 0)
            rc = put_u64(sink, data, g->cons[i]->seen_ms);
        if (rc == 0)
            rc = put_u64(sink, data, g->cons[i]->priority_reads);
    }
    if (rc == 0)
        rc = put_u64(sink, data, g->pel_len);
    for (size_t i = 0; rc == 0 && i < g->pel_len; i++) {
        const keel_stream_pending_t *p = &g->pel[g->pel_head + i];
        int found = 0;
        assert(p->owner != NULL); /* a pending entry always has an owner between commands */
        uint32_t owner =
            (uint32_t)keel__stream_cons_index(g, p->owner->name, p->owner->name_len, &found);
        rc = put_u64(sink, data, p->id.ms);
        if (rc == 0)
            rc = put_u64(sink, data, p->id.seq);
        if (rc == 0)
            rc = put_u32(sink, data, owner);
        if (rc == 0)
            rc = put_u64(sink, data, p->delivery_ms);
        if (rc == 0)
            rc = put_u64(sink, data, p->delivery_count);
        if (rc == 0)
            rc = put_u64(sink, data, p->due_ms);
    }
    return rc;
}

int keel_stream_encode(const keel_stream_t *s, keel_stream_sink_fn sink, void *data)
{
    uint64_t head[6] = {s->last_id.ms,      s->last_id.seq,   s->max_deleted.ms,
                        s->max_deleted.seq, s->entries_added, s->length};
    int rc = 0;
    for (int i = 0; rc == 0 && i < 6; i++)
        rc = put_u64(sink, data, head[i]);
    if (rc == 0)
        rc = encode_entries(s, sink, data);
    if (rc == 0)
        rc = put_u32(sink, data, (uint32_t)s->ngroups);
    for (size_t i = 0; rc == 0 && i < s->ngroups; i++)
        rc = encode_group(s->groups[i], sink, data);
    if (rc == 0)
        rc = put_u32(sink, data, (uint32_t)s->nproducers);
    for (size_t i = 0; rc == 0 && i < s->nproducers; i++) {
        const producer_t *p = &s->producers[i];
        rc = put_bytes(sink, data, p->pid, p->len);
        if (rc == 0)
            rc = put_u64(sink, data, p->seq);
        if (rc == 0)
            rc = put_u64(sink, data, p->id.ms);
        if (rc == 0)
            rc = put_u64(sink, data, p->id.seq);
    }
    if (rc == 0)
        rc = put_u64(sink, data, s->max_age_ms);
    return rc;
}

typedef struct rd {
    const uint8_t *p;
    size_t left;
    int bad;
} rd_t;

static uint64_t rd_u64(rd_t *r)
{
    if (r->left < 8) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = keel_get_u64(r->p);
    r->p += 8;
    r->left -= 8;
    return v;
}

static uint32_t rd_u32(rd_t *r)
{
    if (r->left < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = keel_get_u32(r->p);
    r->p += 4;
    r->left -= 4;
    return v;
}

static const uint8_t *rd_bytes(rd_t *r, size_t *n)
{
    *n = rd_u32(r);
    if (r->bad || *n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += *n;
    r->left -= *n;
    return p;
}

static int decode_entries(rd_t *r, keel_stream_t *s, uint64_t length, keel_stream_id_t last)
{
    const uint8_t **fv = NULL;
    size_t *lens = NULL, cap = 0;
    int rc = 0;
    keel_stream_id_t prev = {0, 0};
    for (uint64_t k = 0; k < length && rc == 0; k++) {
        keel_stream_id_t id = {rd_u64(r), rd_u64(r)};
        uint32_t nf = rd_u32(r);
        if (r->bad || nf == 0 || nf > KEEL_STREAM_FIELDS_MAX || (size_t)nf * 8 > r->left ||
            keel_stream_id_cmp(id, prev) <= 0 || keel_stream_id_cmp(id, last) > 0) {
            rc = KEEL_EPROTO;
            break;
        }
        if (2 * (size_t)nf > cap) {
            size_t ncap = 2 * (size_t)nf;
            const uint8_t **nfv = realloc(fv, ncap * sizeof(*nfv));
            size_t *nl = nfv ? realloc(lens, ncap * sizeof(*nl)) : NULL;
            if (nfv)
                fv = nfv;
            if (nl == NULL) {
                rc = KEEL_ENOMEM;
                break;
            }
            lens = nl;
            cap = ncap;
        }
        for (size_t i = 0; i < 2 * (size_t)nf; i++)
            fv[i] = rd_bytes(r, &lens[i]);
        if (r->bad) {
            rc = KEEL_EPROTO;
            break;
        }
        rc = keel_stream_append(s, id, nf, fv, lens);
        prev = id;
    }
    free(fv);
    free(lens);
    return rc;
}

static int decode_group(rd_t *r, keel_stream_t *s)
{
    size_t n;
    const uint8_t *name = rd_bytes(r, &n);
    keel_stream_id_t last = {rd_u64(r), rd_u64(r)};
    int64_t er = (int64_t)rd_u64(r);
    uint64_t maxdel = rd_u64(r);
    size_t dlq_len;
    const uint8_t *dlq = rd_bytes(r, &dlq_len);
    uint32_t ncons = rd_u32(r);
    if (r->bad || (er < 0 && er != KEEL_STREAM_ENTRIES_READ_UNKNOWN) || ncons > r->left / 20)
        return KEEL_EPROTO;
    keel_stream_group_t *g;
    int rc = keel_stream_group_create(s, name, n, last, er, &g);
    if (rc != 0)
        return rc == KEEL_EEXISTS ? KEEL_EPROTO : rc;
    if ((rc = keel_stream_group_set_deadletter(s, g, maxdel, dlq, dlq_len)) != 0)
        return rc;
    for (uint32_t i = 0; i < ncons; i++) {
        const uint8_t *cn = rd_bytes(r, &n);
        uint64_t seen = rd_u64(r), preads = rd_u64(r);
        if (r->bad)
            return KEEL_EPROTO;
        int created;
        keel_stream_consumer_t *c = keel_stream_consumer_get(s, g, cn, n, seen, &created);
        if (c == NULL)
            return KEEL_ENOMEM;
        if (!created)
            return KEEL_EPROTO;
        c->priority_reads = preads;
    }
    uint64_t npel = rd_u64(r);
    if (r->bad || npel > r->left / 44)
        return KEEL_EPROTO;
    keel_stream_id_t prev = {0, 0};
    for (uint64_t i = 0; i < npel; i++) {
        keel_stream_id_t id = {rd_u64(r), rd_u64(r)};
        uint32_t owner = rd_u32(r);
        uint64_t when = rd_u64(r), count = rd_u64(r), due = rd_u64(r);
        if (r->bad || (i > 0 && keel_stream_id_cmp(id, prev) <= 0) || owner >= g->ncons)
            return KEEL_EPROTO;
        keel_stream_pending_t *p;
        if ((rc = keel_stream_pel_add(s, g, id, &p)) != 0)
            return rc;
        keel_stream_pel_assign(p, g->cons[owner]);
        p->delivery_ms = when;
        p->delivery_count = count;
        p->due_ms = due;
        prev = id;
    }
    return 0;
}

int keel_stream_decode(const uint8_t *p, size_t len, keel_stream_t **out)
{
    rd_t r = {p, len, 0};
    keel_stream_id_t last = {rd_u64(&r), rd_u64(&r)};
    keel_stream_id_t maxdel = {rd_u64(&r), rd_u64(&r)};
    uint64_t added = rd_u64(&r), length = rd_u64(&r);
    if (r.bad || length > added || length > r.left / 20)
        return KEEL_EPROTO;
    keel_stream_t *s = keel_stream_new();
    if (s == NULL)
        return KEEL_ENOMEM;
    int rc = decode_entries(&r, s, length, last);
    uint32_t ngroups = rc == 0 ? rd_u32(&r) : 0;
    if (rc == 0 && r.bad)
        rc = KEEL_EPROTO;
    for (uint32_t i = 0; rc == 0 && i < ngroups; i++)
        rc = decode_group(&r, s);
    uint32_t np = rc == 0 ? rd_u32(&r) : 0;
    if (rc == 0 && (r.bad || np > KEEL_STREAM_PRODUCERS_MAX))
        rc = KEEL_EPROTO;
    for (uint32_t i = 0; rc == 0 && i < np; i++) {
        size_t n;
        const uint8_t *pid = rd_bytes(&r, &n);
        uint64_t seq = rd_u64(&r);
        keel_stream_id_t pidid = {rd_u64(&r), rd_u64(&r)};
        int found = 0;
        if (r.bad || n > KEEL_STREAM_PRODUCER_ID_BYTES_MAX || seq == 0 ||
            keel__stream_producer_index(s, pid, n, &found) != i || found)
            rc = KEEL_EPROTO; /* sorted, unique */
        else
            rc = keel_stream_producer_set(s, pid, n, seq, pidid);
    }
    uint64_t max_age = rc == 0 ? rd_u64(&r) : 0;
    if (rc == 0 && (r.bad || r.left != 0))
        rc = KEEL_EPROTO;
    if (rc != 0) {
        keel_stream_free(s);
        return rc;
    }
    keel_stream_set_meta(s, last, maxdel, added);
    s->max_age_ms = max_age;
    *out = s;
    return 0;
}
