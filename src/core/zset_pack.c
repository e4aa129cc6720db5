/* zset_pack.c - the packed form of a small sorted set: its members in one block (see zset.h). */
#include "core/zset_int.h"

#include "base/bytes.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * A set Redis would hold as a listpack (at most zset-max-listpack-entries members of at most
 * zset-max-listpack-value bytes) rests in one block (keel__zpk_t, zset_int.h): an 8-byte
 * header, then its entries back to back in (score, member) order; no node, no hash table, no
 * skiplist header. An entry is, little-endian,
 *
 *   [1 byte: the score's kind (top 2 bits) and the member's length (low 6 bits; 63: a u32
 *    length follows, for a set loaded from a snapshot that breaks the bounds)]
 *   [the score: 1, 2 or 4 bytes of a signed integer, or 8 of a double's bits]
 *   [the member's bytes]
 *
 * Five ten-byte members with small integer scores take 8 + 5 x 12 = 68 bytes, one 80-byte
 * malloc chunk, where the node form took its struct, a node (64 to 96 bytes) per member, a
 * header node and a bucket array (about 600 bytes).
 *
 * The commands work on the node form: keel_zset_unpack rebuilds it (O(n), n <= 128)
 * before a command reads or changes the set, and keel_zset_pack folds it back after (as
 * Redis's listpack operations are O(n) too). The set's memory count (keel_zset_bytes) is the
 * packed figure in both forms, so unpacking for a command moves no account, and nothing a
 * command answers depends on the form: a node's level comes from its member's hash, a
 * listpack-encoded set's ZSCAN and lex ranges walk it in order (no table), and its snapshot
 * writes the same bucket count (keel__zset_canonical_buckets) packed or not.
 */

#define LEN_WIDE 63u
#define KIND_I8 0u
#define KIND_I16 1u
#define KIND_I32 2u
#define KIND_F64 3u

/* The kind a score is stored as: the smallest integer that holds it exactly (not -0, whose
   sign an integer would lose), else the double's bits. */
static unsigned score_kind(double d)
{
    if (d >= -2147483648.0 && d <= 2147483647.0 && (double)(int32_t)d == d &&
        !(d == 0 && signbit(d))) {
        int32_t v = (int32_t)d;
        return v >= INT8_MIN && v <= INT8_MAX     ? KIND_I8
               : v >= INT16_MIN && v <= INT16_MAX ? KIND_I16
                                                  : KIND_I32;
    }
    return KIND_F64;
}

static size_t kind_bytes(unsigned kind)
{
    static const uint8_t n[] = {1, 2, 4, 8};
    return n[kind];
}

static size_t entry_bytes(double score, size_t len)
{
    return 1 + (len < LEN_WIDE ? 0 : 4) + kind_bytes(score_kind(score)) + len;
}

/* Writes one entry at p: returns the bytes written (entry_bytes). */
static size_t entry_put(uint8_t *p, double score, const uint8_t *m, size_t len)
{
    unsigned kind = score_kind(score);
    size_t o = 1;
    if (len < LEN_WIDE) {
        p[0] = (uint8_t)(kind << 6 | len);
    } else {
        p[0] = (uint8_t)(kind << 6 | LEN_WIDE);
        keel_put_u32(p + 1, (uint32_t)len);
        o += 4;
    }
    if (kind == KIND_F64) {
        uint64_t bits;
        memcpy(&bits, &score, sizeof(bits));
        keel_put_u64(p + o, bits);
    } else {
        uint32_t v = (uint32_t)(int32_t)score; /* two's complement, low bytes first */
        for (size_t i = 0; i < kind_bytes(kind); i++)
            p[o + i] = (uint8_t)(v >> (8 * i));
    }
    o += kind_bytes(kind);
    if (len)
        memcpy(p + o, m, len);
    return o + len;
}

/* Reads the entry at p (written by entry_put): its member and score; returns its bytes. */
static size_t entry_get(const uint8_t *p, const uint8_t **m, size_t *len, double *score)
{
    unsigned kind = p[0] >> 6;
    size_t o = 1;
    *len = p[0] & LEN_WIDE;
    if (*len == LEN_WIDE) {
        *len = keel_get_u32(p + 1);
        o += 4;
    }
    if (kind == KIND_F64) {
        uint64_t bits = keel_get_u64(p + o);
        memcpy(score, &bits, sizeof(*score));
    } else {
        size_t n = kind_bytes(kind);
        uint32_t v = 0;
        for (size_t i = 0; i < n; i++)
            v |= (uint32_t)p[o + i] << (8 * i);
        if (n < 4 && (v >> (8 * n - 1)) & 1) /* sign-extend */
            v |= ~(uint32_t)0 << (8 * n);
        *score = (double)(int32_t)v;
    }
    o += kind_bytes(kind);
    *m = p + o;
    return o + *len;
}

uint64_t keel__zset_canonical_buckets(uint64_t length)
{
    uint64_t nb = BUCKETS_MIN;
    while (nb < length)
        nb *= 2;
    return nb;
}

int keel_zset_is_packed(const keel_zset_t *z)
{
    return keel__zset_packed(z);
}

size_t keel__zset_listpack_bytes(const keel_zset_t *z)
{
    if (keel__zset_packed(z))
        return sizeof(keel__zpk_t) + ((const keel__zpk_t *)z)->bytes;
    assert(z->listpack);
    size_t n = 0;
    for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x))
        n += entry_bytes(x->score, x->len);
    return sizeof(keel__zpk_t) + n;
}

keel_zset_t *keel_zset_pack(keel_zset_t *z)
{
    if (keel__zset_packed(z) || !z->listpack || z->length > KEEL__ZPK_MEMBERS_MAX)
        return z;
    size_t n = 0;
    for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x))
        n += entry_bytes(x->score, x->len);
    keel__zpk_t *pk = n <= UINT32_MAX ? malloc(sizeof(*pk) + n) : NULL;
    if (pk == NULL)
        return z; /* best effort: the set stays in node form, counted the same */
    pk->packed = 1;
    pk->pad = 0;
    pk->length = (uint16_t)z->length;
    pk->bytes = (uint32_t)n;
    size_t o = 0;
    for (const keel_zset_node_t *x = keel_zset_first(z); x; x = keel_zset_next(x))
        o += entry_put(pk->data + o, x->score, keel_zset_member(x), x->len);
    assert(o == n);
    keel_zset_free(z);
    return (keel_zset_t *)pk;
}

int keel_zset_unpack(keel_zset_t **zp)
{
    if (!keel__zset_packed(*zp))
        return 0;
    const keel__zpk_t *pk = (const keel__zpk_t *)*zp;
    /* built aside, so that a failed allocation leaves the packed set as it was */
    keel_zset_t *t = keel_zset_new();
    if (t == NULL || keel_zset_reserve(t, pk->length, 1) != 0) {
        keel_zset_free(t);
        return KEEL_ENOMEM;
    }
    size_t o = 0;
    for (uint64_t i = 0; i < pk->length; i++) {
        const uint8_t *m;
        size_t len;
        double score;
        o += entry_get(pk->data + o, &m, &len, &score);
        keel_zset_node_t *x = keel_zset_node_new(m, len, score);
        if (x == NULL || keel_zset_reserve(t, 0, x->level) != 0) {
            keel_zset_node_free(x);
            keel_zset_free(t);
            return KEEL_ENOMEM;
        }
        keel_zset_insert(t, x);
    }
    assert(o == pk->bytes && keel_zset_len(t) == pk->length);
    free(*zp);
    *zp = t; /* listpack-encoded, as keel_zset_new makes it */
    return 0;
}

int keel__zset_pk_encode(const keel_zset_t *z, keel_zset_sink_fn sink, void *data)
{
    const keel__zpk_t *pk = (const keel__zpk_t *)z;
    assert(keel__zset_packed(z));
    size_t o = 0;
    int rc = 0;
    for (uint64_t i = 0; i < pk->length && rc == 0; i++) {
        const uint8_t *m;
        size_t len;
        double score;
        o += entry_get(pk->data + o, &m, &len, &score);
        uint8_t r[8];
        keel_put_u32(r, (uint32_t)len);
        rc = sink(data, r, 4);
        if (rc == 0)
            rc = sink(data, m, len);
        uint64_t bits;
        memcpy(&bits, &score, sizeof(bits));
        keel_put_u64(r, bits);
        if (rc == 0)
            rc = sink(data, r, 8);
    }
    return rc;
}
