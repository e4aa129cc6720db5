/* stream.c - stream entries in compact blocks: ids, appends, deletes, trims, iteration (consumer
   groups and idempotent producers: stream_group.c; snapshots: stream_snap.c). */
#include "core/stream_int.h"

#include "base/num.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * A block: one allocation, header then `used` bytes of entries. Each entry is
 *   u8 flags | varint ms - first.ms | varint (ms == first.ms ? seq - first.seq : seq) |
 *   varint nfields | nfields x ([varint flen, field,] varint vlen, value)
 * The field names are left out (flag SAME) when they equal those of the block's first
 * entry, whose names are then read from it (the "master" of Redis's listpack nodes). The
 * first entry keeps its bytes when deleted, so the names stay readable. A 100-byte value
 * under a one-letter field costs 106 bytes with ids a millisecond apart.
 */
#define F_DELETED 1u
#define F_SAME 2u
#define VARINT_BYTES_MAX 10u

struct sblock {
    keel_stream_id_t first; /* the first entry's id (deleted or not) */
    keel_stream_id_t last;  /* the last entry's id (deleted or not) */
    uint32_t n;             /* entries, deleted included */
    uint32_t live;          /* entries not deleted */
    uint32_t used, cap;     /* bytes of data */
    uint8_t data[];
};

/* ---- ids ---------------------------------------------------------------------- */

int keel_stream_id_incr(keel_stream_id_t *id)
{
    if (id->seq != UINT64_MAX) {
        id->seq++;
        return 0;
    }
    if (id->ms == UINT64_MAX)
        return KEEL_ERANGE;
    id->ms++;
    id->seq = 0;
    return 0;
}

int keel_stream_id_decr(keel_stream_id_t *id)
{
    if (id->seq != 0) {
        id->seq--;
        return 0;
    }
    if (id->ms == 0)
        return KEEL_ERANGE;
    id->ms--;
    id->seq = UINT64_MAX;
    return 0;
}

/*
 * Redis's string2ull: a strict decimal (string2ll: no '+', no leading zeros, no spaces) that
 * is not negative, or else what strtoull takes whole (leading spaces, a sign, leading zeros;
 * a '-' negates modulo 2^64, as strtoull does), refusing overflow.
 */
static int parse_ull(const uint8_t *p, size_t n, uint64_t *out)
{
    int64_t v;
    if (keel_parse_i64(p, n, &v) == 0) {
        if (v < 0)
            return KEEL_EINVAL;
        *out = (uint64_t)v;
        return 0;
    }
    size_t i = 0;
    while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r')))
        i++;
    int neg = 0;
    if (i < n && (p[i] == '+' || p[i] == '-'))
        neg = p[i++] == '-';
    if (i == n)
        return KEEL_EINVAL;
    uint64_t r = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return KEEL_EINVAL;
        unsigned d = p[i] - '0';
        if (r > (UINT64_MAX - d) / 10)
            return KEEL_EINVAL;
        r = r * 10 + d;
    }
    *out = neg ? (uint64_t)0 - r : r;
    return 0;
}

int keel_stream_id_parse(const uint8_t *p, size_t n, uint64_t missing_seq, int strict,
                         int *seq_star, keel_stream_id_t *out)
{
    if (n > KEEL_STREAM_ID_ARG_BYTES_MAX)
        return KEEL_EINVAL;
    /* Redis copies the argument as a C string: it ends at the first NUL */
    const uint8_t *nul = memchr(p, '\0', n);
    if (nul)
        n = (size_t)(nul - p);
    if (seq_star)
        *seq_star = 0;
    if (n == 1 && (p[0] == '-' || p[0] == '+')) {
        if (strict)
            return KEEL_EINVAL;
        *out = p[0] == '-' ? (keel_stream_id_t){0, 0} : (keel_stream_id_t){UINT64_MAX, UINT64_MAX};
        return 0;
    }
    const uint8_t *dash = memchr(p, '-', n);
    size_t ms_n = dash ? (size_t)(dash - p) : n;
    keel_stream_id_t id;
    if (parse_ull(p, ms_n, &id.ms) != 0)
        return KEEL_EINVAL;
    if (dash == NULL) {
        id.seq = missing_seq;
    } else {
        const uint8_t *s = dash + 1;
        size_t sn = n - ms_n - 1;
        if (seq_star && sn == 1 && s[0] == '*') {
            id.seq = 0;
            *seq_star = 1;
        } else if (parse_ull(s, sn, &id.seq) != 0) {
            return KEEL_EINVAL;
        }
    }
    *out = id;
    return 0;
}

size_t keel_stream_id_format(char *out, keel_stream_id_t id)
{
    size_t n = keel_fmt_u64(out, id.ms);
    out[n++] = '-';
    n += keel_fmt_u64(out + n, id.seq);
    out[n] = '\0';
    assert(n <= KEEL_STREAM_ID_TEXT_BYTES_MAX);
    return n;
}

/* ---- varints ------------------------------------------------------------------- */

static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Entries are written by this file only, so decoding trusts them (snapshots are checked). */
static const uint8_t *varint_get(const uint8_t *p, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0;; shift += 7) {
        uint8_t b = *p++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    *v = r;
    return p;
}

/* ---- blocks -------------------------------------------------------------------- */

typedef struct dec {
    keel_stream_id_t id;
    unsigned flags;
    size_t nfields;
    const uint8_t *fields;
    size_t next; /* offset of the next entry */
} dec_t;

static const uint8_t *skip_fields(const uint8_t *p, size_t nfields, int same)
{
    for (size_t i = 0; i < nfields; i++) {
        uint64_t len;
        if (!same) {
            p = varint_get(p, &len);
            p += len;
        }
        p = varint_get(p, &len);
        p += len;
    }
    return p;
}

static void decode_at(const sblock_t *b, size_t off, dec_t *d)
{
    const uint8_t *p = b->data + off;
    uint64_t dms, dseq, nf;
    d->flags = *p++;
    p = varint_get(p, &dms);
    p = varint_get(p, &dseq);
    p = varint_get(p, &nf);
    d->id.ms = b->first.ms + dms;
    d->id.seq = dms == 0 ? b->first.seq + dseq : dseq;
    d->nfields = (size_t)nf;
    d->fields = p;
    p = skip_fields(p, d->nfields, (d->flags & F_SAME) != 0);
    d->next = (size_t)(p - b->data);
}

/* The first entry's fields (the block's shared names). */
static const uint8_t *master_of(const sblock_t *b, size_t *nfields)
{
    dec_t d;
    decode_at(b, 0, &d);
    *nfields = d.nfields;
    return d.fields;
}

static void to_entry(const sblock_t *b, const dec_t *d, keel_stream_entry_t *e)
{
    e->id = d->id;
    e->nfields = d->nfields;
    e->fields = d->fields;
    size_t n;
    e->master = (d->flags & F_SAME) ? master_of(b, &n) : NULL;
}

void keel_stream_fields_begin(const keel_stream_entry_t *e, keel_stream_field_cursor_t *c)
{
    c->p = e->fields;
    c->m = e->master;
}

void keel_stream_field_next(keel_stream_field_cursor_t *c, const uint8_t **f, size_t *flen,
                            const uint8_t **v, size_t *vlen)
{
    uint64_t n;
    if (c->m) { /* the name comes from the master's pair; skip its value */
        c->m = varint_get(c->m, &n);
        *f = c->m;
        *flen = (size_t)n;
        c->m = varint_get(c->m + n, &n);
        c->m += n;
    } else {
        c->p = varint_get(c->p, &n);
        *f = c->p;
        *flen = (size_t)n;
        c->p += n;
    }
    c->p = varint_get(c->p, &n);
    *v = c->p;
    *vlen = (size_t)n;
    c->p += n;
}

/* 1 if the new entry's names are the master's. */
static int same_names(const sblock_t *b, size_t nfields, const uint8_t *const *fv,
                      const size_t *lens)
{
    size_t mn;
    const uint8_t *m = master_of(b, &mn);
    if (mn != nfields)
        return 0;
    for (size_t i = 0; i < nfields; i++) {
        uint64_t n;
        m = varint_get(m, &n);
        if (n != lens[2 * i] || (n && memcmp(m, fv[2 * i], n) != 0))
            return 0;
        m = varint_get(m + n, &n);
        m += n;
    }
    return 1;
}

static size_t entry_bytes(const sblock_t *b, keel_stream_id_t id, size_t nfields,
                          const size_t *lens, int same)
{
    uint64_t dms = b ? id.ms - b->first.ms : 0;
    uint64_t dseq = b && dms == 0 ? id.seq - b->first.seq : (b ? id.seq : 0);
    size_t n = 1 + varint_len(dms) + varint_len(dseq) + varint_len(nfields);
    for (size_t i = 0; i < nfields; i++) {
        if (!same)
            n += varint_len(lens[2 * i]) + lens[2 * i];
        n += varint_len(lens[2 * i + 1]) + lens[2 * i + 1];
    }
    return n;
}

static void entry_write(sblock_t *b, keel_stream_id_t id, size_t nfields, const uint8_t *const *fv,
                        const size_t *lens, int same)
{
    uint8_t *p = b->data + b->used;
    uint64_t dms = id.ms - b->first.ms;
    *p++ = same ? F_SAME : 0;
    p += varint_put(p, dms);
    p += varint_put(p, dms == 0 ? id.seq - b->first.seq : id.seq);
    p += varint_put(p, nfields);
    for (size_t i = 0; i < nfields; i++) {
        if (!same) {
            p += varint_put(p, lens[2 * i]);
            if (lens[2 * i])
                memcpy(p, fv[2 * i], lens[2 * i]);
            p += lens[2 * i];
        }
        p += varint_put(p, lens[2 * i + 1]);
        if (lens[2 * i + 1])
            memcpy(p, fv[2 * i + 1], lens[2 * i + 1]);
        p += lens[2 * i + 1];
    }
    b->used = (uint32_t)(p - b->data);
    assert(b->used <= b->cap);
}

keel_stream_t *keel_stream_new(void)
{
    keel_stream_t *s = calloc(1, sizeof(*s));
    if (s)
        s->bytes = sizeof(*s);
    return s;
}

void keel_stream_free(keel_stream_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = s->head; i < s->len; i++)
        free(s->blocks[i]);
    free(s->blocks);
    for (size_t i = 0; i < s->ngroups; i++)
        keel__stream_group_free(s->groups[i]);
    free(s->groups);
    free(s->producers);
    free(s);
}

static sblock_t *last_block(const keel_stream_t *s)
{
    return s->len > s->head ? s->blocks[s->len - 1] : NULL;
}

/* Room for one more block pointer: 0 or KEEL_ENOMEM. */
static int blocks_reserve(keel_stream_t *s)
{
    if (s->len < s->cap)
        return 0;
    if (s->head > 0) { /* trimmed from the head: reuse the room */
        memmove(s->blocks, s->blocks + s->head, (s->len - s->head) * sizeof(*s->blocks));
        s->len -= s->head;
        s->head = 0;
        if (s->len < s->cap)
            return 0;
    }
    size_t cap = s->cap ? s->cap * 2 : 4;
    sblock_t **nb = realloc(s->blocks, cap * sizeof(*nb));
    if (nb == NULL)
        return KEEL_ENOMEM;
    s->bytes += (cap - s->cap) * sizeof(*nb);
    s->blocks = nb;
    s->cap = cap;
    return 0;
}

/* Gives back a sealed block's slack (best effort). */
static void block_seal(keel_stream_t *s, size_t i)
{
    sblock_t *b = s->blocks[i];
    if (b->cap == b->used)
        return;
    sblock_t *n = realloc(b, sizeof(*b) + b->used);
    if (n == NULL)
        return;
    s->bytes -= n->cap - n->used;
    n->cap = n->used;
    s->blocks[i] = n;
}

int keel_stream_append(keel_stream_t *s, keel_stream_id_t id, size_t nfields,
                       const uint8_t *const *fv, const size_t *lens)
{
    assert(keel_stream_id_cmp(id, s->last_id) > 0 || (s->entries_added == 0 && (id.ms | id.seq)));
    sblock_t *b = last_block(s);
    int same = b ? same_names(b, nfields, fv, lens) : 0;
    size_t need = b ? entry_bytes(b, id, nfields, lens, same) : 0;
    if (b && (b->n >= KEEL_STREAM_BLOCK_ENTRIES_MAX ||
              (size_t)b->used + need > KEEL_STREAM_BLOCK_BYTES_MAX)) {
        block_seal(s, s->len - 1);
        b = NULL;
    }
    if (b == NULL) {
        if (blocks_reserve(s) != 0)
            return KEEL_ENOMEM;
        /* the first entry of a block: relative to itself */
        sblock_t probe = {.first = id};
        need = entry_bytes(&probe, id, nfields, lens, 0);
        size_t cap = need < 256 ? 256 : need;
        sblock_t *nb = malloc(sizeof(*nb) + cap);
        if (nb == NULL)
            return KEEL_ENOMEM;
        *nb = (sblock_t){.first = id, .last = id, .cap = (uint32_t)cap};
        entry_write(nb, id, nfields, fv, lens, 0);
        nb->n = nb->live = 1;
        s->blocks[s->len++] = nb;
        s->bytes += sizeof(*nb) + cap;
    } else {
        if ((size_t)b->used + need > b->cap) {
            size_t cap = (size_t)b->cap * 2;
            if (cap < (size_t)b->used + need)
                cap = (size_t)b->used + need;
            if (cap > KEEL_STREAM_BLOCK_BYTES_MAX &&
                (size_t)b->used + need <= KEEL_STREAM_BLOCK_BYTES_MAX)
                cap = KEEL_STREAM_BLOCK_BYTES_MAX;
            sblock_t *nb = realloc(b, sizeof(*nb) + cap);
            if (nb == NULL)
                return KEEL_ENOMEM;
            s->bytes += cap - nb->cap;
            nb->cap = (uint32_t)cap;
            s->blocks[s->len - 1] = b = nb;
        }
        entry_write(b, id, nfields, fv, lens, same);
        b->n++;
        b->live++;
        b->last = id;
    }
    s->last_id = id;
    s->length++;
    s->entries_added++;
    return 0;
}

void keel_stream_set_meta(keel_stream_t *s, keel_stream_id_t last_id,
                          keel_stream_id_t max_deleted_id, uint64_t entries_added)
{
    s->last_id = last_id;
    s->max_deleted = max_deleted_id;
    s->entries_added = entries_added;
}

/* The first block (index >= head) whose last id is >= id; s->len if none. */
static size_t block_seek(const keel_stream_t *s, keel_stream_id_t id)
{
    size_t lo = s->head, hi = s->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keel_stream_id_cmp(s->blocks[mid]->last, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void block_remove(keel_stream_t *s, size_t i)
{
    sblock_t *b = s->blocks[i];
    s->bytes -= sizeof(*b) + b->cap;
    free(b);
    if (i == s->head) {
        s->head++;
    } else {
        memmove(s->blocks + i, s->blocks + i + 1, (s->len - i - 1) * sizeof(*s->blocks));
        s->len--;
    }
    if (s->head == s->len)
        s->head = s->len = 0;
}

/* Finds the live entry id: its block index and offset; 0 if absent. */
static int locate(const keel_stream_t *s, keel_stream_id_t id, size_t *bi, size_t *off, dec_t *d)
{
    size_t i = block_seek(s, id);
    if (i == s->len)
        return 0;
    const sblock_t *b = s->blocks[i];
    if (keel_stream_id_cmp(id, b->first) < 0)
        return 0;
    for (size_t o = 0; o < b->used; o = d->next) {
        decode_at(b, o, d);
        int c = keel_stream_id_cmp(d->id, id);
        if (c > 0)
            return 0;
        if (c == 0 && !(d->flags & F_DELETED)) {
            *bi = i;
            *off = o;
            return 1;
        }
    }
    return 0;
}

int keel_stream_exists(const keel_stream_t *s, keel_stream_id_t id)
{
    size_t bi, off;
    dec_t d;
    return locate(s, id, &bi, &off, &d);
}

int keel_stream_get(const keel_stream_t *s, keel_stream_id_t id, keel_stream_entry_t *e)
{
    size_t bi, off;
    dec_t d;
    if (!locate(s, id, &bi, &off, &d))
        return 0;
    to_entry(s->blocks[bi], &d, e);
    return 1;
}

/* Marks the entry at (bi, off) deleted; frees its block if it was the last live one. */
static void delete_at(keel_stream_t *s, size_t bi, size_t off)
{
    sblock_t *b = s->blocks[bi];
    b->data[off] |= F_DELETED;
    b->live--;
    s->length--;
    if (b->live == 0)
        block_remove(s, bi);
}

int keel_stream_delete(keel_stream_t *s, keel_stream_id_t id)
{
    size_t bi, off;
    dec_t d;
    if (!locate(s, id, &bi, &off, &d))
        return 0;
    delete_at(s, bi, off);
    if (keel_stream_id_cmp(id, s->max_deleted) > 0)
        s->max_deleted = id;
    return 1;
}

uint64_t keel_stream_trim(keel_stream_t *s, const keel_stream_trim_t *t)
{
    uint64_t deleted = 0;
    while (s->head < s->len) {
        if (t->strategy == KEEL_STREAM_TRIM_MAXLEN && s->length <= t->maxlen)
            break;
        sblock_t *b = s->blocks[s->head];
        if (t->limit && deleted + b->live > t->limit)
            break;
        int whole = t->strategy == KEEL_STREAM_TRIM_MAXLEN
                        ? s->length - b->live >= t->maxlen
                        : keel_stream_id_cmp(b->last, t->minid) < 0;
        if (whole) {
            uint32_t live = b->live;
            s->length -= live;
            deleted += live;
            block_remove(s, s->head);
            continue;
        }
        if (t->approx)
            break;
        /* within this block: mark entries deleted from its start (it keeps some) */
        for (size_t o = 0; o < b->used;) {
            if (t->strategy == KEEL_STREAM_TRIM_MAXLEN && s->length <= t->maxlen)
                break;
            dec_t d;
            decode_at(b, o, &d);
            if (t->strategy == KEEL_STREAM_TRIM_MINID && keel_stream_id_cmp(d.id, t->minid) >= 0)
                break;
            if (!(d.flags & F_DELETED)) {
                b->data[o] |= F_DELETED;
                b->live--;
                s->length--;
                deleted++;
            }
            o = d.next;
        }
        assert(b->live > 0);
        break;
    }
    return deleted;
}

/* ---- iteration ------------------------------------------------------------------ */

static void rev_load(keel_stream_iter_t *it)
{
    const sblock_t *b = it->s->blocks[it->blk];
    size_t k = 0;
    for (size_t o = 0; o < b->used; k++) {
        dec_t d;
        assert(k < KEEL_STREAM_BLOCK_ENTRIES_MAX);
        it->offs[k] = (uint32_t)o;
        decode_at(b, o, &d);
        o = d.next;
    }
    it->k = k;
}

void keel_stream_iter_init(keel_stream_iter_t *it, const keel_stream_t *s, keel_stream_id_t start,
                           keel_stream_id_t end, int rev)
{
    it->s = s;
    it->start = start;
    it->end = end;
    it->rev = rev;
    it->done = keel_stream_id_cmp(start, end) > 0 || s->head == s->len;
    it->off = 0;
    it->k = 0;
    if (it->done)
        return;
    if (!rev) {
        it->blk = block_seek(s, start);
        it->done = it->blk == s->len;
        return;
    }
    size_t i = block_seek(s, end); /* the block holding end, or the one after it */
    if (i == s->len || keel_stream_id_cmp(s->blocks[i]->first, end) > 0) {
        if (i == s->head) {
            it->done = 1;
            return;
        }
        i--;
    }
    it->blk = i;
    rev_load(it);
}

int keel_stream_iter_next(keel_stream_iter_t *it, keel_stream_entry_t *e)
{
    const keel_stream_t *s = it->s;
    while (!it->done) {
        const sblock_t *b = s->blocks[it->blk];
        dec_t d;
        if (!it->rev) {
            if (it->off >= b->used) {
                it->blk++;
                it->off = 0;
                it->done = it->blk == s->len;
                continue;
            }
            decode_at(b, it->off, &d);
            it->off = d.next;
            if (keel_stream_id_cmp(d.id, it->end) > 0) {
                it->done = 1;
                break;
            }
            if ((d.flags & F_DELETED) || keel_stream_id_cmp(d.id, it->start) < 0)
                continue;
        } else {
            if (it->k == 0) {
                if (it->blk == s->head) {
                    it->done = 1;
                    break;
                }
                it->blk--;
                rev_load(it);
                continue;
            }
            decode_at(b, it->offs[--it->k], &d);
            if (keel_stream_id_cmp(d.id, it->start) < 0) {
                it->done = 1;
                break;
            }
            if ((d.flags & F_DELETED) || keel_stream_id_cmp(d.id, it->end) > 0)
                continue;
        }
        to_entry(b, &d, e);
        return 1;
    }
    return 0;
}

/* ---- info ---------------------------------------------------------------------- */

keel_stream_id_t keel__stream_edge_id(const keel_stream_t *s, int last)
{
    keel_stream_iter_t it;
    keel_stream_entry_t e;
    keel_stream_iter_init(&it, s, (keel_stream_id_t){0, 0},
                          (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, last);
    return keel_stream_iter_next(&it, &e) ? e.id : (keel_stream_id_t){0, 0};
}

keel_stream_id_t keel_stream_last_live_id(const keel_stream_t *s)
{
    return keel__stream_edge_id(s, 1);
}

void keel_stream_get_info(const keel_stream_t *s, keel_stream_info_t *out)
{
    *out = (keel_stream_info_t){
        .length = s->length,
        .entries_added = s->entries_added,
        .last_id = s->last_id,
        .max_deleted_id = s->max_deleted,
        .first_id = keel__stream_edge_id(s, 0),
        .blocks = s->len - s->head,
        .groups = s->ngroups,
        .bytes = s->bytes,
    };
}
