/* kv_strings_ext.c - the rest of Redis 7.0's string commands: SETNX, SETEX, PSETEX, GETDEL,
   GETEX, GETRANGE, SETRANGE and INCRBYFLOAT (MSETNX shares MSET's body in kv_strings.c). */
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
    if ((f & GX_TIME) && when > c->now && !e->expire_ms && keel__kv_heap_reserve(kv, 1) != 0)
        return KEEL_ENOMEM;
    r_value(c->reply, e);
    if ((f & GX_TIME) && when <= c->now) { /* EXAT/PXAT in the past: the key goes now */
        keel__kv_unlink(kv, link);
        kv->revision++;
    } else if ((f & GX_TIME) || ((f & GX_PERSIST) && e->expire_ms)) {
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
