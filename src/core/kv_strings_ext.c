/* kv_strings_ext.c - the rest of Redis 7.0's string commands: SETNX, SETEX, PSETEX, GETDEL,
   GETEX, GETRANGE, SETRANGE, INCRBYFLOAT and LCS (MSETNX shares MSET's body in kv_strings.c;
   the bit commands are kv_bits.c and kv_bitfield.c). */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Replies, texts and the order of checks follow redis-server 7.0.15 as observed
 * (tests/system/test_redis_diff.py compares them byte for byte). Relative times are
 * added to the entry's time (c->now), so every replica stores the same deadline.
 */

static int invalid_expire(const call_t *c)
{
    char text[96];
    snprintf(text, sizeof(text), "ERR invalid expire time in '%s' command", c->cmd_lname);
    return r_err(c->reply, text);
}

/*
 * A time argument as Redis's getExpireMillisecondsOrReply checks it: an integer, > 0, in
 * ms without overflow; relative ones are added to c->now. 0 and *ms, or REPLIED.
 */
static int expire_arg(const call_t *c, size_t i, int seconds, int relative, uint64_t *ms)
{
    int64_t t;
    if (keel_parse_i64(c->argv[i], c->lens[i], &t) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    if (t <= 0 || (seconds && t > INT64_MAX / 1000))
        return invalid_expire(c);
    if (seconds)
        t *= 1000;
    if (relative && (uint64_t)t > (uint64_t)INT64_MAX - c->now)
        return invalid_expire(c);
    *ms = (uint64_t)t + (relative ? c->now : 0);
    return 0;
}

/* ---- SETNX, SETEX, PSETEX ------------------------------------------------------ */

/*
 * argv[1] = argv[val_arg] as SET does (any old type replaced, lease left), with deadline
 * expire_ms (0: none). With nx a live key is left alone (`:0`) and success is `:1`;
 * otherwise `+OK`.
 */
static int put_string(const call_t *c, size_t val_arg, int nx, uint64_t expire_ms)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    int rc = keel__kvc_check_sizes(c, key_len, c->lens[val_arg]);
    if (rc != 0)
        return keel__kvc_done(rc);
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    if (nx && e) {
        r_int(c->reply, 0);
        return 0;
    }
    if (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0)
        return keel__kvc_done(rc);
    if (nx)
        r_int(c->reply, 1);
    else
        r_ok(c->reply);
    return keel__kvc_put_value(c, val_arg, link, e, dead, h, expire_ms, 0);
}

int keel__kvc_cmd_setnx(const call_t *c)
{
    return put_string(c, 2, 1, 0);
}

/* SETEX key seconds value, PSETEX key ms value: the time is checked before anything. */
int keel__kvc_setex_syntax(const call_t *c)
{
    uint64_t ms;
    call_t at_zero = *c;
    at_zero.now = 0; /* the relative overflow depends on the entry's time: checked at apply */
    return expire_arg(&at_zero, 2, c->self->name[0] == 'S', 0, &ms);
}

int keel__kvc_cmd_setex(const call_t *c)
{
    uint64_t ms;
    int rc = expire_arg(c, 2, c->self->name[0] == 'S', 1, &ms);
    return rc != 0 ? keel__kvc_done(rc) : put_string(c, 3, 0, ms);
}

/* ---- GETDEL, GETEX ------------------------------------------------------------------ */

int keel__kvc_cmd_getdel(const call_t *c)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    r_value(c->reply, e);
    if (e) {
        keel__kv_unlink(kv, link);
        kv->revision++;
    }
    return 0;
}

enum { GX_EX = 1, GX_PX = 2, GX_EXAT = 4, GX_PXAT = 8, GX_PERSIST = 16 };
#define GX_TIME (GX_EX | GX_PX | GX_EXAT | GX_PXAT)

/*
 * GETEX key [EX s | PX ms | EXAT ts | PXAT ms-ts | PERSIST], parsed as Redis parses it: an
 * option may repeat (the last time counts), two different ones are a syntax error, and a
 * time option needs its argument. The time itself is judged only once the key is found
 * to be a string (a bad time on an absent key is a nil). *arg: the time's index.
 */
static int getex_parse(const call_t *c, unsigned *flags, size_t *arg)
{
    static const struct {
        const char *word;
        unsigned flag;
    } times[] = {{"EX", GX_EX}, {"PX", GX_PX}, {"EXAT", GX_EXAT}, {"PXAT", GX_PXAT}};
    unsigned f = 0;
    for (size_t i = 2; i < c->argc; i++) {
        int ok = 0;
        if (keel__kvc_arg_is(c, i, "PERSIST") && !(f & GX_TIME)) {
            f |= GX_PERSIST, ok = 1;
        }
        for (size_t k = 0; k < 4 && !ok; k++) {
            unsigned others = (GX_TIME & ~times[k].flag) | GX_PERSIST;
            if (keel__kvc_arg_is(c, i, times[k].word) && !(f & others) && i + 1 < c->argc) {
                f |= times[k].flag, ok = 1;
                *arg = ++i;
            }
        }
        if (!ok)
            return r_err(c->reply, ERR_SYNTAX);
    }
    *flags = f;
    return 0;
}

int keel__kvc_getex_syntax(const call_t *c)
{
    unsigned f;
    size_t arg;
    return getex_parse(c, &f, &arg);
}

int keel__kvc_cmd_getex(const call_t *c)
{
    keel_kv_t *kv = c->w;
    unsigned f = 0;
    size_t arg = 0;
    int rc = getex_parse(c, &f, &arg);
    assert(rc == 0); /* keel__kvc_getex_syntax ran */
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e == NULL) {
        r_nil(c->reply);
        return 0;
    }
    if (e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    uint64_t when = 0;
    if ((f & GX_TIME) && (rc = expire_arg(c, arg, (f & (GX_EX | GX_EXAT)) != 0,
                                          (f & (GX_EX | GX_PX)) != 0, &when)) != 0)
        return keel__kvc_done(rc);
    if ((f & GX_TIME) && when > c->now && !keel__kv_expire(e) && keel__kv_heap_reserve(kv, 1) != 0)
        return KEEL_ENOMEM;
    r_value(c->reply, e);
    if ((f & GX_TIME) && when <= c->now) { /* EXAT/PXAT in the past: the key goes now */
        keel__kv_unlink(kv, link);
        kv->revision++;
    } else if ((f & GX_TIME) || ((f & GX_PERSIST) && keel__kv_expire(e))) {
        keel__kvc_set_version(kv, e, kv->revision + 1);
        kv->revision++;
        keel__kv_set_expire(kv, e, when);
    }
    return 0;
}

/* ---- GETRANGE, SETRANGE ---------------------------------------------------------------- */

int keel__kvc_getrange_syntax(const call_t *c)
{
    int64_t a, b;
    if (keel_parse_i64(c->argv[2], c->lens[2], &a) != 0 ||
        keel_parse_i64(c->argv[3], c->lens[3], &b) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* GETRANGE key start end: inclusive, negative from the end, clamped; "" when empty. */
int keel__kvc_cmd_getrange(const call_t *c)
{
    int64_t start = 0, end = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &start);
    keel_parse_i64(c->argv[3], c->lens[3], &end);
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    int64_t len = e ? (int64_t)e->val_len : 0;
    if (start < 0 && end < 0 && start > end) {
        r_bulk(c->reply, (const uint8_t *)"", 0);
        return 0;
    }
    if (start < 0)
        start += len;
    if (end < 0)
        end += len;
    start = start < 0 ? 0 : start;
    end = end < 0 ? 0 : end;
    if (end >= len)
        end = len - 1;
    if (len == 0 || start > end)
        r_bulk(c->reply, (const uint8_t *)"", 0);
    else
        r_bulk(c->reply, keel__kv_cval(e) + start, (size_t)(end - start + 1));
    return 0;
}

int keel__kvc_setrange_syntax(const call_t *c)
{
    int64_t off;
    if (keel_parse_i64(c->argv[2], c->lens[2], &off) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return off < 0 ? r_err(c->reply, "ERR offset is out of range") : 0;
}

/* The value of the absent key argv[1] as `len` zero bytes (the caller fills them). */
static int create_zeroed(const call_t *c, keel__kv_entry_t **link, int dead, uint64_t h, size_t len,
                         keel__kv_entry_t **made)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t *e = keel__kv_entry_new(c->argv[1], c->lens[1], h, NULL, 0, len);
    if (e == NULL)
        return KEEL_ENOMEM;
    memset(keel__kv_val(e), 0, len);
    e->val_len = (uint32_t)len;
    e->create_revision = kv->revision + 1;
    if (dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    *made = e;
    return 0;
}

/*
 * SETRANGE key offset value: writes value at offset, zero-padding a shorter string (an
 * absent key is the empty string); replies with the new length. An empty value changes
 * nothing (and creates no key). The size check is the value limit's.
 */
int keel__kvc_cmd_setrange(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t off = 0;
    keel_parse_i64(c->argv[2], c->lens[2], &off);
    size_t vlen = c->lens[3];
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t **link = NULL;
    int dead, rc;
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    size_t olen = e ? e->val_len : 0;
    if (vlen == 0) {
        r_int(c->reply, (int64_t)olen);
        return 0;
    }
    if ((uint64_t)off > kv->cfg.value_bytes_max || vlen > kv->cfg.value_bytes_max - (size_t)off)
        return keel__kvc_done(r_err(c->reply, ERR_VALUE_SIZE));
    size_t end = (size_t)off + vlen, nlen = end > olen ? end : olen;
    if (!e && ((rc = keel__kvc_check_sizes(c, c->lens[1], nlen)) != 0 ||
               (!dead && (rc = keel__kvc_check_room(c, 1)) != 0)))
        return keel__kvc_done(rc);
    if (e) {
        if ((rc = keel__kv_reserve_value(kv, link, nlen, nlen > olen)) != 0)
            return rc;
        e = *link;
        if ((size_t)off > olen)
            memset(keel__kv_val(e) + olen, 0, (size_t)off - olen);
        kv->bytes = kv->bytes - olen + nlen;
        e->val_len = (uint32_t)nlen;
    } else if ((rc = create_zeroed(c, link, dead, h, nlen, &e)) != 0) {
        return rc;
    }
    memcpy(keel__kv_val(e) + off, c->argv[3], vlen);
    keel__kvc_set_version(kv, e, kv->revision + 1);
    kv->revision++;
    r_int(c->reply, (int64_t)nlen);
    return 0;
}

/* ---- INCRBYFLOAT ------------------------------------------------------------------------ */

/* Room for the longest number INCRBYFLOAT reads or writes (Redis's MAX_LONG_DOUBLE_CHARS). */
#define LD_CHARS_MAX (5u * 1024u)

/*
 * A float as Redis 7.0 reads one (string2ld): strtold over the whole argument, so hex
 * floats and "inf" parse, but not a leading space, a NaN, trailing bytes, or a value that
 * overflows (or underflows to zero). 0 and *out, or -1. In the C locale: keel never
 * calls setlocale.
 */
static int parse_ld(const uint8_t *p, size_t n, long double *out)
{
    char buf[LD_CHARS_MAX];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long double v = strtold(buf, &end);
    if (isspace((unsigned char)buf[0]) || (size_t)(end - buf) != n || isnan(v) ||
        (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || v == 0.0L)))
        return -1;
    *out = v;
    return 0;
}

/*
 * The result as Redis writes it: %.17Lf, trailing zeros (and a trailing point) dropped,
 * "-0" as "0". long double is the x87 80-bit type on x86-64: replicas must share the
 * architecture for byte-identical results (docs/kv.md, "Differences from Redis").
 */
static size_t fmt_ld(char *buf, size_t cap, long double v)
{
    int n = snprintf(buf, cap, "%.17Lf", v);
    if (n < 0 || (size_t)n + 1 > cap)
        return 0;
    size_t l = (size_t)n;
    if (memchr(buf, '.', l) != NULL) {
        while (buf[l - 1] == '0')
            l--;
        if (buf[l - 1] == '.')
            l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    return l;
}

int keel__kvc_cmd_incrbyfloat(const call_t *c)
{
    static const char not_float[] = "ERR value is not a valid float";
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead, rc;
    keel__kv_entry_t *e = keel__kvc_wfind(c, key, key_len, h, &link, &dead);
    long double v = 0, by = 0;
    if (e && e->type != KEEL__KV_TYPE_STRING)
        return keel__kvc_done(r_err(c->reply, ERR_WRONGTYPE));
    if ((e && parse_ld(keel__kv_cval(e), e->val_len, &v) != 0) ||
        parse_ld(c->argv[2], c->lens[2], &by) != 0)
        return keel__kvc_done(r_err(c->reply, not_float));
    v += by;
    if (isnan(v) || isinf(v))
        return keel__kvc_done(r_err(c->reply, "ERR increment would produce NaN or Infinity"));
    char text[LD_CHARS_MAX];
    size_t n = fmt_ld(text, sizeof(text), v);
    if ((rc = keel__kvc_check_sizes(c, key_len, n)) != 0 ||
        (!e && !dead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return keel__kvc_done(rc);
    uint64_t rev = kv->revision + 1;
    rc = e ? keel__kvc_overwrite(kv, link, (const uint8_t *)text, n, rev)
           : keel__kvc_create(kv, link, dead, key, key_len, h, (const uint8_t *)text, n, rev, NULL);
    if (rc != 0)
        return rc;
    kv->revision = rev;
    r_bulk(c->reply, (const uint8_t *)text, n);
    return 0;
}

/* ---- LCS ------------------------------------------------------------------------------- */

/*
 * The dynamic-programming table of LCS holds (len(a) + 1) x (len(b) + 1) u32 cells for the
 * length of the request; beyond this many bytes the request is refused with Redis's text
 * for its own bound (proto-max-bulk-len, 512 MiB) rather than stall the server.
 */
#define LCS_TABLE_BYTES_MAX ((size_t)64 << 20)

typedef struct lcs_opts {
    int idx, len, withlen;
    int64_t minlen;
} lcs_opts_t;

static int lcs_parse(const call_t *c, lcs_opts_t *o)
{
    *o = (lcs_opts_t){0, 0, 0, 0};
    for (size_t i = 3; i < c->argc; i++) {
        if (keel__kvc_arg_is(c, i, "IDX")) {
            o->idx = 1;
        } else if (keel__kvc_arg_is(c, i, "LEN")) {
            o->len = 1;
        } else if (keel__kvc_arg_is(c, i, "WITHMATCHLEN")) {
            o->withlen = 1;
        } else if (keel__kvc_arg_is(c, i, "MINMATCHLEN") && i + 1 < c->argc) {
            i++;
            if (keel_parse_i64(c->argv[i], c->lens[i], &o->minlen) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            o->minlen = o->minlen < 0 ? 0 : o->minlen;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (o->idx && o->len)
        return r_err(c->reply, "ERR If you want both the length and indexes, please just use IDX.");
    return 0;
}

/* One matching range: [a0, a1] in the first string, [b0, b1] in the second. */
typedef struct lcs_range {
    uint32_t a0, a1, b0, b1;
} lcs_range_t;

/*
 * Walks the table back from its corner, as Redis does: a match is taken (and extends the
 * current range backwards), otherwise the walk moves up in the first string when that
 * keeps a strictly longer LCS, else left in the second. A range ends at a mismatch or at
 * either string's start; it is kept when at least minlen long. Fills out (the LCS, n
 * bytes) and ranges (end first); returns the number of ranges.
 */
static size_t lcs_walk(const uint32_t *tab, const uint8_t *a, size_t alen, const uint8_t *b,
                       size_t blen, int64_t minlen, uint8_t *out, lcs_range_t *ranges)
{
#define T(i, j) tab[(j) + (i) * (blen + 1)]
    size_t i = alen, j = blen, k = T(alen, blen), nr = 0;
    int open = 0;
    lcs_range_t r = {0, 0, 0, 0};
    while (i > 0 && j > 0) {
        int close = 0;
        if (a[i - 1] == b[j - 1]) {
            out[--k] = a[i - 1];
            if (!open)
                r = (lcs_range_t){(uint32_t)(i - 1), (uint32_t)(i - 1), (uint32_t)(j - 1),
                                  (uint32_t)(j - 1)};
            r.a0 = (uint32_t)(i - 1);
            r.b0 = (uint32_t)(j - 1);
            open = 1;
            i--, j--;
            close = i == 0 || j == 0;
        } else {
            if (T(i - 1, j) > T(i, j - 1))
                i--;
            else
                j--;
            close = open;
        }
        if (close) {
            if (minlen == 0 || (int64_t)(r.a1 - r.a0 + 1) >= minlen)
                ranges[nr++] = r;
            open = 0;
        }
    }
    return nr;
#undef T
}

static void lcs_reply_idx(reply_t *o, const lcs_range_t *ranges, size_t nr, int withlen,
                          uint32_t len)
{
    r_array(o, 4);
    r_bulk(o, (const uint8_t *)"matches", 7);
    r_array(o, nr);
    for (size_t i = 0; i < nr; i++) {
        r_array(o, 2 + (size_t)withlen);
        r_array(o, 2);
        r_int(o, ranges[i].a0);
        r_int(o, ranges[i].a1);
        r_array(o, 2);
        r_int(o, ranges[i].b0);
        r_int(o, ranges[i].b1);
        if (withlen)
            r_int(o, (int64_t)(ranges[i].a1 - ranges[i].a0 + 1));
    }
    r_bulk(o, (const uint8_t *)"len", 3);
    r_int(o, len);
}

/*
 * LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest common subsequence
 * of two strings (absent keys are ""), its length, or its matching ranges. O(len1 x len2)
 * time and table memory, freed before returning.
 */
int keel__kvc_cmd_lcs(const call_t *c)
{
    const keel__kv_entry_t *ea = keel__kvc_lookup(c, 1), *eb = keel__kvc_lookup(c, 2);
    if ((ea && ea->type != KEEL__KV_TYPE_STRING) || (eb && eb->type != KEEL__KV_TYPE_STRING))
        return keel__kvc_done(r_err(c->reply, "ERR The specified keys must contain string values"));
    lcs_opts_t o;
    if (lcs_parse(c, &o) != 0)
        return 0;
    const uint8_t *a = ea ? keel__kv_cval(ea) : (const uint8_t *)"";
    const uint8_t *b = eb ? keel__kv_cval(eb) : (const uint8_t *)"";
    size_t alen = ea ? ea->val_len : 0, blen = eb ? eb->val_len : 0;
    uint64_t cells = (uint64_t)(alen + 1) * (blen + 1);
    if (cells > LCS_TABLE_BYTES_MAX / sizeof(uint32_t))
        return keel__kvc_done(
            r_err(c->reply,
                  "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"));
    uint32_t *tab = malloc((size_t)cells * sizeof(uint32_t));
    if (tab == NULL)
        return keel__kvc_done(
            r_err(c->reply, "ERR Insufficient memory, failed allocating transient memory for LCS"));
    for (size_t i = 0; i <= alen; i++) {
        for (size_t j = 0; j <= blen; j++) {
            uint32_t *cell = &tab[j + i * (blen + 1)];
            if (i == 0 || j == 0)
                *cell = 0;
            else if (a[i - 1] == b[j - 1])
                *cell = tab[(j - 1) + (i - 1) * (blen + 1)] + 1;
            else {
                uint32_t up = tab[j + (i - 1) * (blen + 1)], left = cell[-1];
                *cell = up > left ? up : left;
            }
        }
    }
    uint32_t n = tab[cells - 1];
    if (o.len) {
        free(tab);
        r_int(c->reply, n);
        return 0;
    }
    uint8_t *out = malloc(n ? n : 1);
    lcs_range_t *ranges = malloc((n ? n : 1) * sizeof(*ranges));
    if (out == NULL || ranges == NULL) {
        free(out), free(ranges), free(tab);
        return keel__kvc_done(
            r_err(c->reply, "ERR Insufficient memory, failed allocating transient memory for LCS"));
    }
    size_t nr = lcs_walk(tab, a, alen, b, blen, o.minlen, out, ranges);
    if (o.idx)
        lcs_reply_idx(c->reply, ranges, nr, o.withlen, n);
    else
        r_bulk(c->reply, out, n);
    free(out), free(ranges), free(tab);
    return 0;
}

int keel__kvc_parse_ld(const uint8_t *p, size_t n, long double *out)
{
    return parse_ld(p, n, out);
}

size_t keel__kvc_fmt_ld(char *buf, size_t cap, long double v)
{
    return fmt_ld(buf, cap, v);
}
