/* kv_bits.c - a string as an array of bits: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Bit 0 is the most significant bit of byte 0, as in Redis. Replies, texts and the order
 * of checks follow redis-server 7.0.15 as observed (tests/system/test_redis_diff.py). An
 * offset is refused with Redis's text past Redis's own limit (2^32 bits: 512 MiB); below
 * it, a string that would outgrow value_bytes_max gets keel's size error.
 */
#define BIT_OFFSET_MAX ((int64_t)1 << 32) /* bits; Redis's proto-max-bulk-len * 8 */
#define ERR_BIT_OFFSET "ERR bit offset is not an integer or out of range"

static int parse_offset(const call_t *c, size_t i, int64_t *off)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], off) != 0 || *off < 0 || *off >= BIT_OFFSET_MAX)
        return r_err(c->reply, ERR_BIT_OFFSET);
    return 0;
}

/* A bit-command's view of a string key: 0 and *e (NULL absent), or REPLIED (WRONGTYPE). */
static int read_string(const call_t *c, size_t i, const keel__kv_entry_t **e)
{
    *e = keel__kvc_lookup(c, i);
    if (*e && (*e)->type != KEEL__KV_TYPE_STRING)
        return r_err(c->reply, ERR_WRONGTYPE);
    return 0;
}

static int get_bit(const uint8_t *p, size_t len, uint64_t bit)
{
    return bit / 8 < len && (p[bit / 8] >> (7 - bit % 8)) & 1;
}

/* ---- SETBIT, GETBIT ------------------------------------------------------------------- */

int keel__kvc_setbit_syntax(const call_t *c)
{
    int64_t off, v;
    if (parse_offset(c, 2, &off) != 0)
        return REPLIED;
    if (keel_parse_i64(c->argv[3], c->lens[3], &v) != 0 || (v != 0 && v != 1))
        return r_err(c->reply, "ERR bit is not an integer or out of range");
    return 0;
}

/*
 * SETBIT key offset 0|1: the old bit. The string grows (zero-filled) to hold the bit; an
 * absent key is created even to clear a bit, as in Redis. A change (revision + 1) when the
 * string grew or the bit flipped; the deadline stays.
 */
int keel__kvc_cmd_setbit(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t off = 0, v = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &off);
    keel_parse_i64(c->argv[3], c->lens[3], &v);
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t **link = NULL;
    int dead, rc;
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    size_t olen = e ? e->val_len : 0, need = (size_t)off / 8 + 1;
    size_t nlen = need > olen ? need : olen;
    int old = e ? get_bit(keel__kv_cval(e), olen, (uint64_t)off) : 0;
    if ((rc = keel__kvc_check_sizes(c, c->lens[1], nlen)) != 0 ||
        (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return keel__kvc_done(rc);
    if (e && nlen == olen && old == v) {
        r_int(c->reply, old);
        return 0;
    }
    uint64_t rev = kv->revision + 1;
    if (e) {
        if ((rc = keel__kv_reserve_value(kv, link, nlen, 1)) != 0)
            return rc;
        e = *link;
        memset(keel__kv_val(e) + olen, 0, nlen - olen);
        kv->bytes = kv->bytes - olen + nlen;
        e->val_len = (uint32_t)nlen;
    } else {
        e = keel__kv_entry_new(c->argv[1], c->lens[1], h, NULL, 0, nlen);
        if (e == NULL)
            return KEEL_ENOMEM;
        memset(keel__kv_val(e), 0, nlen);
        e->val_len = (uint32_t)nlen;
        e->create_revision = rev;
        if (dead)
            keel__kv_replace(kv, link, e);
        else
            keel__kv_insert(kv, e);
    }
    uint8_t *byte = keel__kv_val(e) + off / 8, mask = (uint8_t)(1u << (7 - off % 8));
    *byte = v ? (uint8_t)(*byte | mask) : (uint8_t)(*byte & ~mask);
    keel__kvc_set_version(kv, e, rev); /* records the value with the bit set */
    kv->revision = rev;
    r_int(c->reply, old);
    return 0;
}

int keel__kvc_getbit_syntax(const call_t *c)
{
    int64_t off;
    return parse_offset(c, 2, &off);
}

int keel__kvc_cmd_getbit(const call_t *c)
{
    int64_t off = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &off);
    const keel__kv_entry_t *e;
    if (read_string(c, 1, &e) == 0)
        r_int(c->reply, e ? get_bit(keel__kv_cval(e), e->val_len, (uint64_t)off) : 0);
    return 0;
}

/* ---- BITCOUNT, BITPOS ------------------------------------------------------------------ */

/* BYTE or BIT at argv[i]: 0 (bytes) / 1 (bits), or REPLIED. */
static int parse_unit(const call_t *c, size_t i, int *bits)
{
    if (keel__kvc_arg_is(c, i, "BIT"))
        *bits = 1;
    else if (keel__kvc_arg_is(c, i, "BYTE"))
        *bits = 0;
    else
        return r_err(c->reply, ERR_SYNTAX);
    return 0;
}

/* [start, end] in units of total, negative from the end, clamped (end may fall below 0). */
static void clamp_range(int64_t total, int64_t *start, int64_t *end)
{
    if (*start < 0)
        *start += total;
    if (*end < 0)
        *end += total;
    *start = *start < 0 ? 0 : *start;
    *end = *end < 0 ? 0 : *end;
    if (*end >= total)
        *end = total - 1;
}

static uint64_t count_bits(const uint8_t *p, uint64_t from, uint64_t to)
{
    uint64_t n = 0, b = from;
    for (; b <= to && b % 8; b++)
        n += (p[b / 8] >> (7 - b % 8)) & 1;
    for (; b + 7 <= to; b += 8)
        n += (uint64_t)__builtin_popcount(p[b / 8]);
    for (; b <= to; b++)
        n += (p[b / 8] >> (7 - b % 8)) & 1;
    return n;
}

/*
 * BITCOUNT key [start end [BYTE|BIT]]: Redis 7.0 looks the key up first (an absent key is
 * `:0` whatever the arguments), then parses them.
 */
int keel__kvc_cmd_bitcount(const call_t *c)
{
    const keel__kv_entry_t *e;
    if (read_string(c, 1, &e) != 0)
        return 0;
    if (e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    int64_t len = e->val_len, start = 0, end = len - 1;
    int bits = 0;
    if (c->argc == 4 || c->argc == 5) {
        if (keel_parse_i64(c->argv[2], c->lens[2], &start) != 0 ||
            keel_parse_i64(c->argv[3], c->lens[3], &end) != 0)
            return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
        if (c->argc == 5 && parse_unit(c, 4, &bits) != 0)
            return 0;
        int64_t total = bits ? len * 8 : len;
        if (start < 0 && end < 0 && start > end) {
            r_int(c->reply, 0);
            return 0;
        }
        clamp_range(total, &start, &end);
    } else if (c->argc != 2) {
        return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
    }
    if (start > end) {
        r_int(c->reply, 0);
        return 0;
    }
    uint64_t from = bits ? (uint64_t)start : (uint64_t)start * 8;
    uint64_t to = bits ? (uint64_t)end : (uint64_t)end * 8 + 7;
    r_int(c->reply, (int64_t)count_bits(keel__kv_cval(e), from, to));
    return 0;
}

/*
 * BITPOS key 0|1 [start [end [BYTE|BIT]]]: the first bit of that value in the range, or -1.
 * An absent key is all zeros: 0 for a clear bit, -1 for a set one. Looking for a clear bit
 * without an end given, the string counts as followed by zeros: the answer is then its
 * length in bits. An empty range is -1.
 */
int keel__kvc_bitpos_syntax(const call_t *c)
{
    int64_t bit;
    if (keel_parse_i64(c->argv[2], c->lens[2], &bit) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return bit != 0 && bit != 1 ? r_err(c->reply, "ERR The bit argument must be 1 or 0.") : 0;
}

int keel__kvc_cmd_bitpos(const call_t *c)
{
    int64_t bit = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &bit);
    const keel__kv_entry_t *e;
    if (read_string(c, 1, &e) != 0)
        return 0;
    if (e == NULL) {
        r_int(c->reply, bit ? -1 : 0);
        return 0;
    }
    int64_t len = e->val_len, start = 0, end = len - 1;
    int bits = 0, end_given = c->argc >= 5;
    if (c->argc >= 4 && c->argc <= 6) {
        if (keel_parse_i64(c->argv[3], c->lens[3], &start) != 0)
            return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
        if (c->argc == 6 && parse_unit(c, 5, &bits) != 0)
            return 0;
        if (end_given && keel_parse_i64(c->argv[4], c->lens[4], &end) != 0)
            return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
        clamp_range(bits ? len * 8 : len, &start, &end);
    } else if (c->argc != 3) {
        return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
    }
    if (start > end) {
        r_int(c->reply, -1);
        return 0;
    }
    uint64_t from = bits ? (uint64_t)start : (uint64_t)start * 8;
    uint64_t to = bits ? (uint64_t)end : (uint64_t)end * 8 + 7;
    const uint8_t *p = keel__kv_cval(e);
    uint8_t skip = bit ? 0x00 : 0xff; /* a whole byte without the bit sought */
    for (uint64_t b = from; b <= to;) {
        if (b % 8 == 0 && b + 7 <= to && p[b / 8] == skip) {
            b += 8;
            continue;
        }
        if (get_bit(p, (size_t)len, b) == bit) {
            r_int(c->reply, (int64_t)b);
            return 0;
        }
        b++;
    }
    r_int(c->reply, bit == 0 && !end_given ? (int64_t)to + 1 : -1);
    return 0;
}

/* ---- BITOP ----------------------------------------------------------------------------- */

enum { OP_AND, OP_OR, OP_XOR, OP_NOT };

static int bitop_parse(const call_t *c, int *op)
{
    static const char *const names[] = {"AND", "OR", "XOR", "NOT"};
    *op = -1;
    for (int i = 0; i < 4; i++)
        if (keel__kvc_arg_is(c, 1, names[i]))
            *op = i;
    if (*op < 0)
        return r_err(c->reply, ERR_SYNTAX);
    if (*op == OP_NOT && c->argc != 4)
        return r_err(c->reply, "ERR BITOP NOT must be called with a single source key.");
    return 0;
}

int keel__kvc_bitop_syntax(const call_t *c)
{
    int op;
    return bitop_parse(c, &op);
}

/* dest (argv[2]) := p[0..n) as SET would write it: any type replaced, deadline and lease
   dropped. 0, REPLIED (room), or KEEL_ENOMEM with nothing changed. */
static int put_result(const call_t *c, const uint8_t *p, size_t n)
{
    keel_kv_t *kv = c->w;
    uint64_t h = keel__kv_hash(kv, c->argv[2], c->lens[2]);
    keel__kv_entry_t **link = NULL;
    int dead, rc;
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[2], c->lens[2], h, &link, &dead);
    if ((rc = keel__kvc_check_sizes(c, c->lens[2], n)) != 0 ||
        (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return rc;
    uint64_t rev = kv->revision + 1;
    keel__kv_entry_t *made = NULL;
    if (e) {
        if ((rc = keel__kvc_overwrite(kv, link, p, n, rev)) != 0)
            return rc;
        made = *link;
    } else if ((rc = keel__kvc_create(kv, link, dead, c->argv[2], c->lens[2], h, p, n, rev,
                                      &made)) != 0) {
        return rc;
    }
    keel__kv_set_expire(kv, made, 0);
    keel__kv_detach(made);
    kv->revision = rev;
    return 0;
}

/*
 * BITOP AND|OR|XOR|NOT dest src...: the result is as long as the longest source (shorter
 * and absent ones count as zeros) and replaces dest; an empty result deletes dest.
 * Replies with the result's length.
 */
int keel__kvc_cmd_bitop(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int op = 0;
    int rc = bitop_parse(c, &op);
    assert(rc == 0); /* keel__kvc_bitop_syntax ran */
    size_t n = 0;
    for (size_t i = 3; i < c->argc; i++) {
        const keel__kv_entry_t *e;
        if (read_string(c, i, &e) != 0)
            return 0;
        if (e && e->val_len > n)
            n = e->val_len;
    }
    if (n == 0) {
        keel__kv_entry_t **link = NULL;
        int dead;
        uint64_t h = keel__kv_hash(kv, c->argv[2], c->lens[2]);
        if (keel__kvc_wfind(c, c->argv[2], c->lens[2], h, &link, &dead) != NULL) {
            keel__kv_unlink(kv, link);
            kv->revision++;
        }
        r_int(c->reply, 0);
        return 0;
    }
    uint8_t *out = calloc(n, 1);
    if (out == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 3; i < c->argc; i++) {
        const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
        const uint8_t *p = e ? keel__kv_cval(e) : NULL;
        size_t len = e ? e->val_len : 0;
        for (size_t k = 0; k < n; k++) {
            uint8_t b = k < len ? p[k] : 0;
            if (op == OP_NOT)
                out[k] = (uint8_t)~b;
            else if (i == 3)
                out[k] = b;
            else if (op == OP_AND)
                out[k] &= b;
            else if (op == OP_OR)
                out[k] |= b;
            else
                out[k] ^= b;
        }
    }
    rc = put_result(c, out, n);
    free(out);
    if (rc == REPLIED)
        return 0;
    if (rc == 0)
        r_int(c->reply, (int64_t)n);
    return rc;
}
