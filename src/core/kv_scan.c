/* kv_scan.c - SCAN with MATCH and COUNT over the table's cursor. */
#include "base/glob.h"
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SCAN ---------------------------------------------------------------------- */

typedef struct scan_opts {
    uint64_t cursor;
    int64_t count;
    const uint8_t *pat; /* NULL: every key */
    size_t pat_len;
    int type; /* TYPE given: the KEEL__KV_TYPE_* to keep; -1: any; -2: no such type (none) */
} scan_opts_t;

/*
 * The cursor as Redis 7.0's parseScanCursorOrReply reads it with strtoul: an
 * optional sign, decimal digits up to 2^64-1 (a '-' negates modulo 2^64), no
 * leading space, nothing after; the empty string is cursor 0. 0 or -1.
 */
int keel__kvc_parse_cursor(const uint8_t *p, size_t n, uint64_t *out)
{
    size_t i = n > 0 && (p[0] == '+' || p[0] == '-');
    if (n == 0) {
        *out = 0;
        return 0;
    }
    if (i == n)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = p[0] == '-' ? (uint64_t)0 - v : v;
    return 0;
}

/* Redis scanGenericCommand's option loop. */
static int scan_parse(const call_t *c, scan_opts_t *o)
{
    *o = (scan_opts_t){.count = 10, .type = -1};
    if (keel__kvc_parse_cursor(c->argv[1], c->lens[1], &o->cursor) != 0)
        return r_err(c->reply, "ERR invalid cursor");
    for (size_t i = 2; i < c->argc; i += 2) {
        if (c->argc - i < 2)
            return r_err(c->reply, ERR_SYNTAX);
        if (keel__kvc_arg_is(c, i, "COUNT")) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &o->count) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            if (o->count < 1)
                return r_err(c->reply, ERR_SYNTAX);
        } else if (keel__kvc_arg_is(c, i, "MATCH")) {
            o->pat = c->argv[i + 1];
            o->pat_len = c->lens[i + 1];
            if (o->pat_len == 1 && o->pat[0] == '*')
                o->pat = NULL;
        } else if (keel__kvc_arg_is(c, i, "TYPE")) {
            o->type = keel__kvc_type_of_name(c, i + 1);
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__kvc_scan_syntax(const call_t *c)
{
    scan_opts_t o;
    return scan_parse(c, &o);
}

typedef struct scan_ctx {
    const scan_opts_t *o;
    reply_t *reply;
    const keel_kv_t *kv;
    uint64_t now;
    int64_t visited, emitted;
} scan_ctx_t;

static void scan_one(void *data, const keel__kv_entry_t *e)
{
    scan_ctx_t *s = data;
    s->visited++;
    if (s->reply->failed || (s->o->type != -1 && s->o->type != e->type) ||
        !keel__kv_alive(s->kv, e, s->now))
        return;
    if (s->o->pat && !keel_glob_match(s->o->pat, s->o->pat_len, keel__kv_key(e), e->key_len))
        return;
    r_bulk(s->reply, keel__kv_key(e), e->key_len);
    s->emitted++;
}

/*
 * Like Redis: visit buckets until COUNT keys were seen (before MATCH filters
 * them) or 10 x COUNT buckets were visited, so one call's work is bounded.
 * Also stops after a bucket that brings the reply past
 * KEEL_KV_SCAN_REPLY_BYTES_MAX: COUNT is a hint (Redis docs), so a huge COUNT
 * over a big keyspace returns a cursor instead of one enormous reply.
 * Keys are written first, then the header is slid in front of them: no
 * temporary list, and the state stays const.
 */
int keel__kvc_cmd_scan(const call_t *c)
{
    scan_opts_t o;
    int rc = scan_parse(c, &o);
    assert(rc == 0); /* keel__kvc_scan_syntax ran */
    keel_buf_t *b = c->reply->b;
    size_t mark = keel_buf_unread(b);
    scan_ctx_t s = {&o, c->reply, c->kv, c->now, 0, 0};
    int64_t iterations = o.count > INT64_MAX / 10 ? INT64_MAX : o.count * 10;
    uint64_t cursor = o.cursor;
    do {
        cursor = keel__kv_scan(c->kv, cursor, scan_one, &s);
    } while (cursor && iterations-- && s.visited < o.count && !c->reply->failed &&
             keel_buf_unread(b) - mark < KEEL_KV_SCAN_REPLY_BYTES_MAX);
    /* The header goes first but is known last: written after the keys, then rotated in
       front of them (it is a few dozen bytes). */
    size_t keys = keel_buf_unread(b) - mark;
    char digits[KEEL_DEC_BYTES_MAX];
    size_t dn = keel_fmt_u64(digits, cursor);
    r_array(c->reply, 2);
    r_bulk(c->reply, (const uint8_t *)digits, dn);
    r_array(c->reply, s.emitted);
    if (c->reply->failed)
        return 0;
    uint8_t hdr[4 * KEEL_RESP_HEADER_BYTES_MAX + KEEL_DEC_BYTES_MAX];
    size_t hn = keel_buf_unread(b) - mark - keys;
    assert(hn <= sizeof(hdr));
    uint8_t *start = b->data + b->rpos + mark;
    memcpy(hdr, start + keys, hn);
    memmove(start + hn, start, keys);
    memcpy(start, hdr, hn);
    return 0;
}
