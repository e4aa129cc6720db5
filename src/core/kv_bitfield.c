/* kv_bitfield.c - BITFIELD and BITFIELD_RO: integers of 1 to 64 bits at any bit offset. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * BITFIELD key [GET type offset | SET type offset value | INCRBY type offset incr |
 * OVERFLOW WRAP|SAT|FAIL]...: types i1..i64 and u1..u63, offsets in bits or "#n" (n times
 * the type's width), fields big-endian from bit 0 (the top bit of byte 0), as in Redis.
 * The whole argument list is parsed before anything is looked up (argv only, so refused
 * before proposing), then every op runs in order against the string grown (zero-filled)
 * to the farthest bit a SET or INCRBY reaches. OVERFLOW changes the policy of the ops
 * after it: WRAP (modulo 2^bits, the default), SAT (clamp) or FAIL (nil, no change).
 * Replies, texts and the order of checks follow redis-server 7.0.15 as observed
 * (tests/system/test_redis_diff.py).
 */
#define BF_OFFSET_BYTES_MAX ((int64_t)512 << 20) /* Redis's proto-max-bulk-len */
#define ERR_BF_TYPE                                                                                \
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but "    \
    "i64 is."

enum { BF_GET, BF_SET, BF_INCRBY, BF_OVERFLOW };
enum { OW_WRAP, OW_SAT, OW_FAIL };

typedef struct bf_op {
    int code, sign;
    unsigned bits;
    uint64_t offset;
    int64_t value; /* SET's value or INCRBY's increment */
} bf_op_t;

/* iN or uN: 0, or REPLIED. */
static int bf_type(const call_t *c, size_t i, int *sign, unsigned *bits)
{
    const uint8_t *p = c->argv[i];
    size_t n = c->lens[i];
    int64_t b;
    int t = n >= 2 ? p[0] : 0; /* lower case only, as in Redis */
    if ((t != 'i' && t != 'u') || keel_parse_i64(p + 1, n - 1, &b) != 0)
        return r_err(c->reply, ERR_BF_TYPE);
    *sign = t == 'i';
    if (b < 1 || b > (*sign ? 64 : 63))
        return r_err(c->reply, ERR_BF_TYPE);
    *bits = (unsigned)b;
    return 0;
}

/* A bit offset, or "#n" for n fields of `bits`: 0, or REPLIED. */
static int bf_offset(const call_t *c, size_t i, unsigned bits, uint64_t *off)
{
    const uint8_t *p = c->argv[i];
    size_t n = c->lens[i];
    int hash = n > 0 && p[0] == '#';
    int64_t v;
    if (keel_parse_i64(p + hash, n - (size_t)hash, &v) != 0 || v < 0 ||
        (hash && v > INT64_MAX / (int64_t)bits))
        return r_err(c->reply, "ERR bit offset is not an integer or out of range");
    if (hash)
        v *= (int64_t)bits;
    if ((v >> 3) >= BF_OFFSET_BYTES_MAX)
        return r_err(c->reply, "ERR bit offset is not an integer or out of range");
    *off = (uint64_t)v;
    return 0;
}

/* The op at argv[*i], *i moved past it; OVERFLOW sets *ow. 0, or REPLIED. */
static int bf_next(const call_t *c, size_t *i, bf_op_t *op, int *ow)
{
    size_t j = *i, rem = c->argc - j - 1;
    if (keel__kvc_arg_is(c, j, "GET") && rem >= 2) {
        op->code = BF_GET;
    } else if (keel__kvc_arg_is(c, j, "SET") && rem >= 3) {
        op->code = BF_SET;
    } else if (keel__kvc_arg_is(c, j, "INCRBY") && rem >= 3) {
        op->code = BF_INCRBY;
    } else if (keel__kvc_arg_is(c, j, "OVERFLOW") && rem >= 1) {
        static const char *const names[] = {"WRAP", "SAT", "FAIL"};
        op->code = BF_OVERFLOW;
        *i = j + 2;
        for (int k = 0; k < 3; k++)
            if (keel__kvc_arg_is(c, j + 1, names[k])) {
                *ow = k;
                return 0;
            }
        return r_err(c->reply, "ERR Invalid OVERFLOW type specified");
    } else {
        return r_err(c->reply, ERR_SYNTAX);
    }
    if (bf_type(c, j + 1, &op->sign, &op->bits) != 0 ||
        bf_offset(c, j + 2, op->bits, &op->offset) != 0)
        return REPLIED;
    op->value = 0;
    if (op->code != BF_GET && keel_parse_i64(c->argv[j + 3], c->lens[j + 3], &op->value) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    *i = j + (op->code == BF_GET ? 3 : 4);
    return 0;
}

/*
 * Checks every op; *writes: whether any is a SET or INCRBY, *end_bit: the bit just past the
 * farthest one they reach. BITFIELD_RO refuses writes. 0, or REPLIED.
 */
static int bf_scan(const call_t *c, int *writes, uint64_t *end_bit)
{
    *writes = 0;
    *end_bit = 0;
    int ow = OW_WRAP;
    for (size_t i = 2; i < c->argc;) {
        bf_op_t op;
        if (bf_next(c, &i, &op, &ow) != 0)
            return REPLIED;
        if (op.code == BF_SET || op.code == BF_INCRBY) {
            *writes = 1;
            if (op.offset + op.bits > *end_bit)
                *end_bit = op.offset + op.bits;
        }
    }
    if (*writes && c->self->name[8] == '_') /* BITFIELD_RO */
        return r_err(c->reply, "ERR BITFIELD_RO only supports the GET subcommand");
    return 0;
}

int keel__kvc_bitfield_syntax(const call_t *c)
{
    int writes;
    uint64_t end;
    return bf_scan(c, &writes, &end);
}

static uint64_t bf_get(const uint8_t *p, size_t len, uint64_t off, unsigned bits)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < bits; k++, off++) {
        int bit = off / 8 < len && (p[off / 8] >> (7 - off % 8)) & 1;
        v = v << 1 | (uint64_t)bit;
    }
    return v;
}

static void bf_set(uint8_t *p, uint64_t off, unsigned bits, uint64_t v)
{
    for (unsigned k = 0; k < bits; k++, off++) {
        uint8_t mask = (uint8_t)(1u << (7 - off % 8));
        if ((v >> (bits - 1 - k)) & 1)
            p[off / 8] |= mask;
        else
            p[off / 8] &= (uint8_t)~mask;
    }
}

/* The field's raw bits as a signed value (sign-extended). */
static int64_t bf_signed(uint64_t raw, unsigned bits)
{
    if (bits < 64 && (raw >> (bits - 1)) & 1)
        raw |= ~(uint64_t)0 << bits;
    return (int64_t)raw;
}

/*
 * The value a SET or INCRBY stores, by the exact result (a SET of an unsigned field takes
 * its value as Redis does: the integer's 64 bits unsigned): in range, as is; out of it,
 * wrapped to the field's width, clamped, or refused (0) under FAIL. 1 and *raw otherwise.
 */
static int bf_store(const bf_op_t *op, int ow, uint64_t old_raw, uint64_t *raw)
{
    __int128 x;
    if (op->code == BF_SET)
        x = op->sign ? (__int128)op->value : (__int128)(uint64_t)op->value;
    else
        x = (op->sign ? (__int128)bf_signed(old_raw, op->bits) : (__int128)old_raw) +
            (__int128)op->value;
    __int128 lo = op->sign ? -((__int128)1 << (op->bits - 1)) : 0;
    __int128 hi = op->sign ? ((__int128)1 << (op->bits - 1)) - 1 : ((__int128)1 << op->bits) - 1;
    uint64_t mask = op->bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << op->bits) - 1;
    if (x >= lo && x <= hi) {
        *raw = (uint64_t)x & mask;
        return 1;
    }
    if (ow == OW_FAIL)
        return 0;
    /* Redis 7.0 saturates a signed SET whose value lies so far below the field that
       max - value overflows int64 at the top, not the bottom (observed: SET i2 0
       -9223372036854775808 with SAT stores 1); replicas and clients see what Redis shows. */
    int redis_top = op->code == BF_SET && op->sign && op->bits < 64 && hi - x > INT64_MAX;
    if (ow == OW_SAT)
        x = x < lo && !redis_top ? lo : hi;
    *raw = (uint64_t)x & mask; /* WRAP: the low bits, two's complement */
    return 1;
}

/* Runs every op on p (len bytes, long enough for every write), writing each reply. */
static void bf_run(const call_t *c, uint8_t *p, size_t len)
{
    size_t nops = 0;
    int ow = OW_WRAP;
    for (size_t i = 2; i < c->argc;) {
        bf_op_t op;
        int rc = bf_next(c, &i, &op, &ow);
        assert(rc == 0); /* bf_scan ran */
        nops += op.code != BF_OVERFLOW;
    }
    r_array(c->reply, nops);
    ow = OW_WRAP;
    for (size_t i = 2; i < c->argc;) {
        bf_op_t op;
        bf_next(c, &i, &op, &ow);
        if (op.code == BF_OVERFLOW)
            continue;
        uint64_t old = bf_get(p, len, op.offset, op.bits), raw = old;
        if (op.code != BF_GET && !bf_store(&op, ow, old, &raw)) {
            r_nil(c->reply);
            continue;
        }
        if (op.code != BF_GET)
            bf_set(p, op.offset, op.bits, raw);
        uint64_t shown = op.code == BF_SET ? old : raw;
        r_int(c->reply, op.sign ? bf_signed(shown, op.bits) : (int64_t)shown);
    }
}

/*
 * Only GETs: a read of the live string (absent: zeros), changing nothing. With a write the
 * ops run on a copy grown to the farthest bit written, and the copy replaces the value when
 * it differs, grew, or the key is new (made even when every op failed, as in Redis): one
 * change at one revision; the deadline stays. ENOMEM leaves the state as it was.
 */
int keel__kvc_cmd_bitfield(const call_t *c)
{
    int writes = 0;
    uint64_t end_bit = 0;
    int rc = bf_scan(c, &writes, &end_bit);
    assert(rc == 0); /* keel__kvc_bitfield_syntax ran */
    if (!writes) {
        const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
        if (e && e->type != KEEL__KV_TYPE_STRING)
            return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
        bf_run(c, (uint8_t *)(uintptr_t)(e ? keel__kv_cval(e) : NULL), e ? e->val_len : 0);
        return 0;
    }
    keel_kv_t *kv = c->w;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    size_t olen = e ? e->val_len : 0;
    uint64_t need = (end_bit + 7) / 8;
    size_t nlen = need > olen ? (size_t)need : olen;
    if (need > kv->cfg.value_bytes_max)
        return keel__kvc_done(r_err(c->reply, ERR_VALUE_SIZE));
    if ((rc = keel__kvc_check_sizes(c, c->lens[1], nlen)) != 0 ||
        (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return keel__kvc_done(rc);
    uint8_t *p = calloc(nlen ? nlen : 1, 1);
    if (p == NULL)
        return KEEL_ENOMEM;
    if (olen)
        memcpy(p, keel__kv_cval(e), olen);
    bf_run(c, p, nlen); /* replies now: a failure below truncates them (keel_kv_apply) */
    uint64_t rev = kv->revision + 1;
    if (e && nlen == olen && memcmp(p, keel__kv_cval(e), nlen) == 0) {
        free(p); /* nothing changed: no revision */
        return 0;
    }
    if (!e) {
        rc = keel__kvc_create(kv, link, dead, c->argv[1], c->lens[1], h, p, nlen, rev, NULL);
    } else if ((rc = keel__kv_reserve_value(kv, link, nlen, nlen > olen)) == 0) {
        e = *link;
        memcpy(keel__kv_val(e), p, nlen);
        kv->bytes = kv->bytes - olen + nlen;
        e->val_len = (uint32_t)nlen;
        keel__kvc_set_version(kv, e, rev);
    }
    free(p);
    if (rc == 0)
        kv->revision = rev;
    return rc;
}
