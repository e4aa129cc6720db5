/* stream.c - stream entries in compact blocks, and consumer groups with their pending lists. */
#include "core/stream.h"

#include "base/bytes.h"
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

typedef struct sblock {
    keel_stream_id_t first; /* the first entry's id (deleted or not) */
    keel_stream_id_t last;  /* the last entry's id (deleted or not) */
    uint32_t n;             /* entries, deleted included */
    uint32_t live;          /* entries not deleted */
    uint32_t used, cap;     /* bytes of data */
    uint8_t data[];
} sblock_t;

struct keel_stream_consumer {
    uint64_t seen_ms;
    uint64_t pending;
    uint64_t priority_reads;
    size_t name_len;
    uint8_t name[];
};

struct keel_stream_group {
    keel_stream_id_t last_id;
    int64_t entries_read;
    uint64_t max_deliveries; /* dead letters: 0 off */
    uint8_t *dlq;            /* the dead-letter stream's key (owned), dlq_len bytes */
    size_t dlq_len;
    keel_stream_pending_t *pel; /* pel[pel_head .. pel_head + pel_len), sorted by id */
    size_t pel_head, pel_len, pel_cap;
    keel_stream_consumer_t **cons; /* sorted by name */
    size_t ncons, ccap;
    size_t name_len;
    uint8_t name[];
};

typedef struct producer {
    uint64_t seq;
    keel_stream_id_t id;
    uint8_t len;
    uint8_t pid[KEEL_STREAM_PRODUCER_ID_BYTES_MAX];
} producer_t;

struct keel_stream {
    sblock_t **blocks; /* blocks[head .. len), sorted by id */
    size_t head, len, cap;
    uint64_t length, entries_added;
    keel_stream_id_t last_id, max_deleted;
    keel_stream_group_t **groups; /* sorted by name */
    size_t ngroups, gcap;
    producer_t *producers; /* sorted by pid */
    size_t nproducers, pcap;
    uint64_t max_age_ms; /* retention by age: 0 off */
    size_t bytes;
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

static void group_free(keel_stream_group_t *g)
{
    for (size_t i = 0; i < g->ncons; i++)
        free(g->cons[i]);
    free(g->cons);
    free(g->pel);
    free(g->dlq);
    free(g);
}

void keel_stream_free(keel_stream_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = s->head; i < s->len; i++)
        free(s->blocks[i]);
    free(s->blocks);
    for (size_t i = 0; i < s->ngroups; i++)
        group_free(s->groups[i]);
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

static keel_stream_id_t edge_id(const keel_stream_t *s, int last)
{
    keel_stream_iter_t it;
    keel_stream_entry_t e;
    keel_stream_iter_init(&it, s, (keel_stream_id_t){0, 0},
                          (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, last);
    return keel_stream_iter_next(&it, &e) ? e.id : (keel_stream_id_t){0, 0};
}

keel_stream_id_t keel_stream_last_live_id(const keel_stream_t *s)
{
    return edge_id(s, 1);
}

void keel_stream_get_info(const keel_stream_t *s, keel_stream_info_t *out)
{
    *out = (keel_stream_info_t){
        .length = s->length,
        .entries_added = s->entries_added,
        .last_id = s->last_id,
        .max_deleted_id = s->max_deleted,
        .first_id = edge_id(s, 0),
        .blocks = s->len - s->head,
        .groups = s->ngroups,
        .bytes = s->bytes,
    };
}

/* ---- groups --------------------------------------------------------------------- */

static int name_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

/* The index where name is, or goes (*found says which). */
static size_t group_index(const keel_stream_t *s, const uint8_t *name, size_t len, int *found)
{
    size_t lo = 0, hi = s->ngroups;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(s->groups[mid]->name, s->groups[mid]->name_len, name, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

size_t keel_stream_groups_count(const keel_stream_t *s)
{
    return s->ngroups;
}

keel_stream_group_t *keel_stream_group_at(const keel_stream_t *s, size_t i)
{
    assert(i < s->ngroups);
    return s->groups[i];
}

keel_stream_group_t *keel_stream_group_find(const keel_stream_t *s, const uint8_t *name, size_t len)
{
    int found;
    size_t i = group_index(s, name, len, &found);
    return found ? s->groups[i] : NULL;
}

int keel_stream_group_create(keel_stream_t *s, const uint8_t *name, size_t len,
                             keel_stream_id_t last_id, int64_t entries_read,
                             keel_stream_group_t **out)
{
    int found;
    size_t i = group_index(s, name, len, &found);
    if (found)
        return KEEL_EEXISTS;
    if (s->ngroups == s->gcap) {
        size_t cap = s->gcap ? s->gcap * 2 : 2;
        keel_stream_group_t **ng = realloc(s->groups, cap * sizeof(*ng));
        if (ng == NULL)
            return KEEL_ENOMEM;
        s->bytes += (cap - s->gcap) * sizeof(*ng);
        s->groups = ng;
        s->gcap = cap;
    }
    keel_stream_group_t *g = calloc(1, sizeof(*g) + len);
    if (g == NULL)
        return KEEL_ENOMEM;
    g->last_id = last_id;
    g->entries_read = entries_read;
    g->name_len = len;
    if (len)
        memcpy(g->name, name, len);
    memmove(s->groups + i + 1, s->groups + i, (s->ngroups - i) * sizeof(*s->groups));
    s->groups[i] = g;
    s->ngroups++;
    s->bytes += sizeof(*g) + len;
    if (out)
        *out = g;
    return 0;
}

void keel_stream_group_destroy(keel_stream_t *s, keel_stream_group_t *g)
{
    int found;
    size_t i = group_index(s, g->name, g->name_len, &found);
    assert(found && s->groups[i] == g);
    size_t bytes =
        sizeof(*g) + g->name_len + g->pel_cap * sizeof(*g->pel) + g->ccap * sizeof(*g->cons);
    for (size_t k = 0; k < g->ncons; k++)
        bytes += sizeof(*g->cons[k]) + g->cons[k]->name_len;
    s->bytes -= bytes;
    memmove(s->groups + i, s->groups + i + 1, (s->ngroups - i - 1) * sizeof(*s->groups));
    s->ngroups--;
    group_free(g);
}

const uint8_t *keel_stream_group_name(const keel_stream_group_t *g, size_t *len)
{
    *len = g->name_len;
    return g->name;
}

keel_stream_id_t keel_stream_group_last_id(const keel_stream_group_t *g)
{
    return g->last_id;
}

int64_t keel_stream_group_entries_read(const keel_stream_group_t *g)
{
    return g->entries_read;
}

void keel_stream_group_set_last(keel_stream_group_t *g, keel_stream_id_t id, int64_t entries_read)
{
    g->last_id = id;
    g->entries_read = entries_read;
}

int keel_stream_group_set_deadletter(keel_stream_t *s, keel_stream_group_t *g,
                                     uint64_t max_deliveries, const uint8_t *dlq, size_t len)
{
    uint8_t *copy = NULL;
    if (len > 0 && (copy = malloc(len)) == NULL)
        return KEEL_ENOMEM;
    if (len > 0)
        memcpy(copy, dlq, len);
    s->bytes = s->bytes - g->dlq_len + len;
    free(g->dlq);
    g->dlq = copy;
    g->dlq_len = len;
    g->max_deliveries = max_deliveries;
    return 0;
}

uint64_t keel_stream_group_max_deliveries(const keel_stream_group_t *g)
{
    return g->max_deliveries;
}

const uint8_t *keel_stream_group_deadletter(const keel_stream_group_t *g, size_t *len)
{
    *len = g->dlq_len;
    return g->dlq;
}

/* Redis streamRangeHasTombstones(s, start, NULL). */
static int has_tombstones_from(const keel_stream_t *s, keel_stream_id_t start)
{
    if (s->length == 0 || (s->max_deleted.ms == 0 && s->max_deleted.seq == 0))
        return 0;
    return keel_stream_id_cmp(start, s->max_deleted) <= 0;
}

int64_t keel_stream_estimate_read(const keel_stream_t *s, keel_stream_id_t id)
{
    if (s->entries_added == 0)
        return 0;
    if (s->length == 0 && keel_stream_id_cmp(id, s->last_id) < 1)
        return (int64_t)s->entries_added;
    int cmp_last = keel_stream_id_cmp(id, s->last_id);
    if (cmp_last == 0)
        return (int64_t)s->entries_added;
    if (cmp_last > 0)
        return KEEL_STREAM_ENTRIES_READ_UNKNOWN;
    keel_stream_id_t first = edge_id(s, 0);
    int cmp_id_first = keel_stream_id_cmp(id, first);
    int cmp_xdel_first = keel_stream_id_cmp(s->max_deleted, first);
    if ((s->max_deleted.ms == 0 && s->max_deleted.seq == 0) || cmp_xdel_first < 0) {
        if (cmp_id_first < 0)
            return (int64_t)(s->entries_added - s->length);
        if (cmp_id_first == 0)
            return (int64_t)(s->entries_added - s->length + 1);
    }
    return KEEL_STREAM_ENTRIES_READ_UNKNOWN;
}

int keel_stream_group_lag(const keel_stream_t *s, const keel_stream_group_t *g, int64_t *lag)
{
    if (s->entries_added == 0) {
        *lag = 0;
        return 1;
    }
    if (g->entries_read != KEEL_STREAM_ENTRIES_READ_UNKNOWN &&
        !has_tombstones_from(s, g->last_id)) {
        *lag = (int64_t)s->entries_added - g->entries_read;
        return 1;
    }
    int64_t read = keel_stream_estimate_read(s, g->last_id);
    if (read == KEEL_STREAM_ENTRIES_READ_UNKNOWN)
        return 0;
    *lag = (int64_t)s->entries_added - read;
    return 1;
}

void keel_stream_group_delivered(const keel_stream_t *s, keel_stream_group_t *g,
                                 keel_stream_id_t id)
{
    if (keel_stream_id_cmp(id, g->last_id) <= 0)
        return;
    if (g->entries_read != KEEL_STREAM_ENTRIES_READ_UNKNOWN && !has_tombstones_from(s, id))
        g->entries_read++;
    else if (s->entries_added)
        g->entries_read = keel_stream_estimate_read(s, id);
    g->last_id = id;
}

/* ---- consumers ------------------------------------------------------------------ */

static size_t cons_index(const keel_stream_group_t *g, const uint8_t *name, size_t len, int *found)
{
    size_t lo = 0, hi = g->ncons;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(g->cons[mid]->name, g->cons[mid]->name_len, name, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

size_t keel_stream_consumers_count(const keel_stream_group_t *g)
{
    return g->ncons;
}

keel_stream_consumer_t *keel_stream_consumer_at(const keel_stream_group_t *g, size_t i)
{
    assert(i < g->ncons);
    return g->cons[i];
}

keel_stream_consumer_t *keel_stream_consumer_find(const keel_stream_group_t *g, const uint8_t *name,
                                                  size_t len)
{
    int found;
    size_t i = cons_index(g, name, len, &found);
    return found ? g->cons[i] : NULL;
}

keel_stream_consumer_t *keel_stream_consumer_get(keel_stream_t *s, keel_stream_group_t *g,
                                                 const uint8_t *name, size_t len, uint64_t now_ms,
                                                 int *created)
{
    int found;
    size_t i = cons_index(g, name, len, &found);
    if (created)
        *created = !found;
    if (found)
        return g->cons[i];
    if (g->ncons == g->ccap) {
        size_t cap = g->ccap ? g->ccap * 2 : 4;
        keel_stream_consumer_t **nc = realloc(g->cons, cap * sizeof(*nc));
        if (nc == NULL)
            return NULL;
        s->bytes += (cap - g->ccap) * sizeof(*nc);
        g->cons = nc;
        g->ccap = cap;
    }
    keel_stream_consumer_t *c = calloc(1, sizeof(*c) + len);
    if (c == NULL)
        return NULL;
    c->seen_ms = now_ms;
    c->name_len = len;
    if (len)
        memcpy(c->name, name, len);
    memmove(g->cons + i + 1, g->cons + i, (g->ncons - i) * sizeof(*g->cons));
    g->cons[i] = c;
    g->ncons++;
    s->bytes += sizeof(*c) + len;
    return c;
}

uint64_t keel_stream_consumer_delete(keel_stream_t *s, keel_stream_group_t *g,
                                     keel_stream_consumer_t *c)
{
    uint64_t pending = c->pending;
    /* its pending entries go: one compacting pass over the PEL */
    size_t w = g->pel_head;
    for (size_t r = g->pel_head; r < g->pel_head + g->pel_len; r++)
        if (g->pel[r].owner != c)
            g->pel[w++] = g->pel[r];
    g->pel_len = w - g->pel_head;
    int found;
    size_t i = cons_index(g, c->name, c->name_len, &found);
    assert(found && g->cons[i] == c);
    memmove(g->cons + i, g->cons + i + 1, (g->ncons - i - 1) * sizeof(*g->cons));
    g->ncons--;
    s->bytes -= sizeof(*c) + c->name_len;
    free(c);
    return pending;
}

const uint8_t *keel_stream_consumer_name(const keel_stream_consumer_t *c, size_t *len)
{
    *len = c->name_len;
    return c->name;
}

uint64_t keel_stream_consumer_pending(const keel_stream_consumer_t *c)
{
    return c->pending;
}

uint64_t keel_stream_consumer_seen_ms(const keel_stream_consumer_t *c)
{
    return c->seen_ms;
}

void keel_stream_consumer_seen(keel_stream_consumer_t *c, uint64_t now_ms)
{
    c->seen_ms = now_ms;
}

uint64_t keel_stream_consumer_priority_reads(const keel_stream_consumer_t *c)
{
    return c->priority_reads;
}

void keel_stream_consumer_priority_read(keel_stream_consumer_t *c)
{
    c->priority_reads++;
}

/* ---- the PEL ---------------------------------------------------------------------- */

size_t keel_stream_pel_count(const keel_stream_group_t *g)
{
    return g->pel_len;
}

keel_stream_pending_t *keel_stream_pel_at(const keel_stream_group_t *g, size_t i)
{
    assert(i < g->pel_len);
    return &g->pel[g->pel_head + i];
}

size_t keel_stream_pel_seek(const keel_stream_group_t *g, keel_stream_id_t from)
{
    size_t lo = 0, hi = g->pel_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keel_stream_id_cmp(g->pel[g->pel_head + mid].id, from) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

keel_stream_pending_t *keel_stream_pel_find(const keel_stream_group_t *g, keel_stream_id_t id)
{
    size_t i = keel_stream_pel_seek(g, id);
    if (i < g->pel_len && keel_stream_id_cmp(g->pel[g->pel_head + i].id, id) == 0)
        return &g->pel[g->pel_head + i];
    return NULL;
}

/* Inserts id at its place (absent, asserted by the callers' find); 0 or KEEL_ENOMEM. */
static int pel_insert(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id,
                      keel_stream_pending_t **out)
{
    if (g->pel_head + g->pel_len == g->pel_cap) {
        if (g->pel_head > 0 && g->pel_head >= g->pel_len / 2) {
            memmove(g->pel, g->pel + g->pel_head, g->pel_len * sizeof(*g->pel));
            g->pel_head = 0;
        } else {
            size_t cap = g->pel_cap ? g->pel_cap * 2 : 8;
            keel_stream_pending_t *np = realloc(g->pel, cap * sizeof(*np));
            if (np == NULL)
                return KEEL_ENOMEM;
            s->bytes += (cap - g->pel_cap) * sizeof(*np);
            g->pel = np;
            g->pel_cap = cap;
        }
    }
    size_t i = keel_stream_pel_seek(g, id);
    keel_stream_pending_t *base = g->pel + g->pel_head;
    memmove(base + i + 1, base + i, (g->pel_len - i) * sizeof(*base));
    base[i] = (keel_stream_pending_t){.id = id};
    g->pel_len++;
    *out = &base[i];
    return 0;
}

void keel_stream_pel_assign(keel_stream_pending_t *p, keel_stream_consumer_t *c)
{
    if (p->owner == c)
        return;
    if (p->owner)
        p->owner->pending--;
    p->owner = c;
    if (c)
        c->pending++;
}

int keel_stream_pel_deliver(keel_stream_t *s, keel_stream_group_t *g, keel_stream_consumer_t *c,
                            keel_stream_id_t id, uint64_t now_ms)
{
    keel_stream_pending_t *p = keel_stream_pel_find(g, id);
    if (p == NULL && pel_insert(s, g, id, &p) != 0)
        return KEEL_ENOMEM;
    keel_stream_pel_assign(p, c);
    p->delivery_ms = now_ms;
    p->delivery_count = 1;
    p->due_ms = 0;
    return 0;
}

int keel_stream_pel_add(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id,
                        keel_stream_pending_t **out)
{
    assert(keel_stream_pel_find(g, id) == NULL);
    int rc = pel_insert(s, g, id, out);
    if (rc == 0) {
        (*out)->delivery_ms = 0;
        (*out)->delivery_count = 0;
        (*out)->due_ms = 0;
    }
    return rc;
}

int keel_stream_pel_remove(keel_stream_t *s, keel_stream_group_t *g, keel_stream_id_t id)
{
    (void)s;
    size_t i = keel_stream_pel_seek(g, id);
    if (i == g->pel_len || keel_stream_id_cmp(g->pel[g->pel_head + i].id, id) != 0)
        return 0;
    keel_stream_pel_assign(&g->pel[g->pel_head + i], NULL);
    if (i == 0) {
        g->pel_head++;
    } else {
        keel_stream_pending_t *base = g->pel + g->pel_head;
        memmove(base + i, base + i + 1, (g->pel_len - i - 1) * sizeof(*base));
    }
    g->pel_len--;
    if (g->pel_len == 0)
        g->pel_head = 0;
    return 1;
}

/* ---- idempotent producers ------------------------------------------------------------ */

static size_t producer_index(const keel_stream_t *s, const uint8_t *pid, size_t n, int *found)
{
    size_t lo = 0, hi = s->nproducers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(s->producers[mid].pid, s->producers[mid].len, pid, n);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

int keel_stream_producer_get(const keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t *seq,
                             keel_stream_id_t *id)
{
    int found;
    size_t i = producer_index(s, pid, n, &found);
    if (!found)
        return 0;
    *seq = s->producers[i].seq;
    *id = s->producers[i].id;
    return 1;
}

int keel_stream_producer_set(keel_stream_t *s, const uint8_t *pid, size_t n, uint64_t seq,
                             keel_stream_id_t id)
{
    assert(n <= KEEL_STREAM_PRODUCER_ID_BYTES_MAX);
    int found;
    size_t i = producer_index(s, pid, n, &found);
    if (!found && s->nproducers == KEEL_STREAM_PRODUCERS_MAX) {
        /* evict the producer whose last append is the oldest (ids are unique: one) */
        size_t old = 0;
        for (size_t k = 1; k < s->nproducers; k++)
            if (keel_stream_id_cmp(s->producers[k].id, s->producers[old].id) < 0)
                old = k;
        memmove(s->producers + old, s->producers + old + 1,
                (s->nproducers - old - 1) * sizeof(*s->producers));
        s->nproducers--;
        i = producer_index(s, pid, n, &found);
    }
    if (!found) {
        if (s->nproducers == s->pcap) {
            size_t cap = s->pcap ? s->pcap * 2 : 4;
            producer_t *np = realloc(s->producers, cap * sizeof(*np));
            if (np == NULL)
                return KEEL_ENOMEM;
            s->bytes += (cap - s->pcap) * sizeof(*np);
            s->producers = np;
            s->pcap = cap;
        }
        memmove(s->producers + i + 1, s->producers + i,
                (s->nproducers - i) * sizeof(*s->producers));
        s->nproducers++;
        s->producers[i].len = (uint8_t)n;
        if (n)
            memcpy(s->producers[i].pid, pid, n);
    }
    s->producers[i].seq = seq;
    s->producers[i].id = id;
    return 0;
}

size_t keel_stream_producers_count(const keel_stream_t *s)
{
    return s->nproducers;
}

uint64_t keel_stream_max_age(const keel_stream_t *s)
{
    return s->max_age_ms;
}

void keel_stream_set_max_age(keel_stream_t *s, uint64_t max_age_ms)
{
    s->max_age_ms = max_age_ms;
}

uint64_t keel_stream_retention_deadline(const keel_stream_t *s)
{
    if (s->max_age_ms == 0 || s->length == 0)
        return 0;
    uint64_t first = edge_id(s, 0).ms;
    return first > UINT64_MAX - s->max_age_ms ? UINT64_MAX : first + s->max_age_ms;
}

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
        uint32_t owner = (uint32_t)cons_index(g, p->owner->name, p->owner->name_len, &found);
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
            producer_index(s, pid, n, &found) != i || found)
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
