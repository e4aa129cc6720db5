/* kv_list_block.c - the list commands that move elements or block: LMOVE RPOPLPUSH LMPOP,
   the blocking pops' non-blocking forms (BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP as they run
   inside MULTI, or when the server proposes a served pop), KEEL.BPOP, and what the server
   needs to block (kv_bpop.c). */
#include "core/kv_list_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The seconds of a blocking pop's timeout: Redis's MAX_LONG_DOUBLE_CHARS. */
#define TIMEOUT_CHARS_MAX (5u * 1024u)

/* ---- blocking pops' timeouts ------------------------------------------------------------ */

/*
 * A blocking pop's timeout in seconds as Redis 7.0 reads it (getTimeoutFromObjectOrReply):
 * a long double (string2ld), times 1000 converted to milliseconds as x86-64 converts (a
 * value past int64 becomes INT64_MIN, so "timeout is negative"). 0 and *ms, or REPLIED.
 * The range check against the clock is the caller's (timeout_in_range).
 */
static int timeout_ms(const uint8_t *p, size_t n, int64_t *ms)
{
    char buf[TIMEOUT_CHARS_MAX];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long double v = strtold(buf, &end);
    if (buf[0] == ' ' || (buf[0] >= '\t' && buf[0] <= '\r') || (size_t)(end - buf) != n ||
        isnan(v) || (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || v == 0.0L)))
        return -1;
    long double x = v * 1000.0L;
    if (!(x < 9223372036854775808.0L && x > -9223372036854775809.0L))
        *ms = INT64_MIN;
    else
        *ms = (int64_t)x;
    return 0;
}

static int parse_timeout(const call_t *c, size_t i, int64_t *ms)
{
    if (timeout_ms(c->argv[i], c->lens[i], ms) != 0)
        return r_err(c->reply, "ERR timeout is not a float or out of range");
    if (*ms < 0)
        return r_err(c->reply, "ERR timeout is negative");
    return 0;
}

/* Redis adds the timeout to its clock: past INT64_MAX it is "out of range". */
static int timeout_in_range(const call_t *c, size_t i)
{
    int64_t ms;
    int rc = parse_timeout(c, i, &ms);
    if (rc == 0 && ms > 0 && ms > INT64_MAX - (int64_t)c->now)
        return r_err(c->reply, "ERR timeout is out of range");
    return rc;
}

/* The same for the other types' blocking pops (kv_zset_ops.c). */
int keel__kv_timeout_ms(const uint8_t *p, size_t n, int64_t *ms)
{
    return timeout_ms(p, n, ms);
}

int keel__kv_parse_timeout(const call_t *c, size_t i, int64_t *ms)
{
    return parse_timeout(c, i, ms);
}

int keel__kv_timeout_in_range(const call_t *c, size_t i)
{
    return timeout_in_range(c, i);
}

/* ---- LMOVE RPOPLPUSH and BLMOVE BRPOPLPUSH ---------------------------------------------- */

/* Moves the element at `from` of argv[1]'s list to `to` of argv[2]'s (src: looked up, a
 * non-empty list). Replies the element. 0, REPLIED (WRONGTYPE destination) or KEEL_ENOMEM. */
static int move(const call_t *c, wkey_t *src, int from, int to)
{
    keel_kv_t *kv = c->w;
    wkey_t dst;
    int same = c->lens[1] == c->lens[2] && memcmp(c->argv[1], c->argv[2], c->lens[1]) == 0;
    if (keel__kvl_write_list(c, c->argv[2], c->lens[2], &dst) != 0)
        return REPLIED;
    if (dst.e == NULL) {
        int rc = keel__kvc_check_sizes(c, dst.len, 0);
        if (rc == 0 && !dst.dead)
            rc = keel__kvc_check_room(c, 1);
        if (rc != 0)
            return rc;
    } else if (!same && dst.l->len + 1 > LIST_LEN_MAX) {
        return r_err(c->reply, ERR_LIST_FULL);
    }
    const uint8_t *v;
    size_t n;
    keel__kvl_list_peek(src->l, from, &v, &n);
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL)
        return KEEL_ENOMEM;
    memcpy(copy, v, n);
    if (dst.e == NULL) {
        const uint8_t *cv = copy;
        klist_t *l = keel__kvl_list_of(&cv, &n, 1, to);
        if (l == NULL || keel__kvl_link_new(c, &dst, l) != 0) {
            keel__kvl_list_free(l);
            free(copy);
            return KEEL_ENOMEM;
        }
    } else if (keel__kvl_list_push(same ? src->l : dst.l, to, copy, n) != 0) {
        kv->bytes = kv->bytes - src->bytes_before + src->l->bytes;
        src->bytes_before = src->l->bytes;
        if (!same) {
            kv->bytes = kv->bytes - dst.bytes_before + dst.l->bytes;
            dst.bytes_before = dst.l->bytes;
        }
        free(copy);
        return KEEL_ENOMEM;
    }
    /* the source's element: when both ends are one list's same end, the copy just pushed
       is dropped instead, which is the same list */
    keel__kvl_list_drop(src->l, from);
    r_bulk(c->reply, copy, n);
    free(copy);
    if (same) {
        keel__kvl_changed(c, src);
    } else {
        keel__kvl_changed(c, src);
        keel__kvl_changed(c, &dst);
    }
    kv->revision++;
    return 0;
}

int keel__kvl_lmove_syntax(const call_t *c)
{
    int a, b;
    if (keel__kvl_parse_where(c, 3, &a) != 0 || keel__kvl_parse_where(c, 4, &b) != 0)
        return REPLIED;
    return 0;
}

static int lmove_run(const call_t *c, int from, int to, int blocking)
{
    wkey_t src;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &src) != 0)
        return REPLIED;
    if (src.e == NULL) {
        /* BLMOVE in MULTI (or a served pop that lost its element): Redis's addReplyNull */
        (void)blocking;
        r_nil(c->reply);
        return 0;
    }
    return move(c, &src, from, to);
}

int keel__kvl_cmd_lmove(const call_t *c)
{
    int from, to;
    if (keel__kvl_parse_where(c, 3, &from) != 0 || keel__kvl_parse_where(c, 4, &to) != 0)
        return REPLIED;
    return lmove_run(c, from, to, 0);
}

int keel__kvl_cmd_rpoplpush(const call_t *c)
{
    return lmove_run(c, TAIL, HEAD, 0);
}

int keel__kvl_blmove_syntax(const call_t *c)
{
    int a, b;
    int64_t ms;
    if (keel__kvl_parse_where(c, 3, &a) != 0 || keel__kvl_parse_where(c, 4, &b) != 0 ||
        parse_timeout(c, 5, &ms) != 0)
        return REPLIED;
    return 0;
}

int keel__kvl_cmd_blmove(const call_t *c)
{
    int from, to;
    if (keel__kvl_parse_where(c, 3, &from) != 0 || keel__kvl_parse_where(c, 4, &to) != 0 ||
        timeout_in_range(c, 5) != 0)
        return REPLIED;
    /* Redis checks the source's type before it would block */
    return lmove_run(c, from, to, 1);
}

int keel__kvl_brpoplpush_syntax(const call_t *c)
{
    int64_t ms;
    return parse_timeout(c, 3, &ms);
}

int keel__kvl_cmd_brpoplpush(const call_t *c)
{
    if (timeout_in_range(c, 3) != 0)
        return REPLIED;
    return lmove_run(c, TAIL, HEAD, 1);
}

/* ---- LMPOP BLMPOP BLPOP BRPOP ------------------------------------------------------------ */

typedef struct mpop_args {
    size_t first_key, nkeys;
    int where;
    int64_t count; /* -1: one element, no nesting (BLPOP, BRPOP) */
} mpop_args_t;

/* lmpopGenericCommand's parse, numkeys at argv[i]. */
static int mpop_parse(const call_t *c, size_t i, mpop_args_t *a)
{
    int64_t numkeys;
    if (keel__kvl_parse_range(c, i, 1, INT64_MAX, "ERR numkeys should be greater than 0",
                              &numkeys) != 0)
        return REPLIED;
    if ((uint64_t)numkeys >= c->argc - i - 1)
        return r_err(c->reply, ERR_SYNTAX);
    size_t where_i = i + (size_t)numkeys + 1;
    if (keel__kvl_parse_where(c, where_i, &a->where) != 0)
        return REPLIED;
    a->first_key = i + 1;
    a->nkeys = (size_t)numkeys;
    a->count = -1;
    for (size_t j = where_i + 1; j < c->argc; j++) {
        size_t more = c->argc - 1 - j;
        if (a->count == -1 && keel__kvc_arg_is(c, j, "COUNT") && more) {
            j++;
            if (keel__kvl_parse_range(c, j, 1, INT64_MAX, "ERR count should be greater than 0",
                                      &a->count) != 0)
                return REPLIED;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (a->count == -1)
        a->count = 1;
    return 0;
}

/* Pops from the first non-empty list of the keys: [key, element] (count -1) or [key,
 * [elements]]; *-1 when every list is empty; WRONGTYPE at the first key of another type
 * met before a non-empty list. */
static int mpop_run(const call_t *c, const mpop_args_t *a)
{
    for (size_t i = 0; i < a->nkeys; i++) {
        size_t ki = a->first_key + i;
        wkey_t k;
        if (keel__kvl_write_list(c, c->argv[ki], c->lens[ki], &k) != 0)
            return REPLIED;
        if (k.e == NULL)
            continue;
        r_array(c->reply, 2);
        r_bulk(c->reply, k.key, k.len);
        if (a->count == -1) {
            keel__kvl_pop_n(&k, a->where, 1, c->reply);
        } else {
            uint64_t n = (uint64_t)a->count < k.l->len ? (uint64_t)a->count : k.l->len;
            r_array(c->reply, (size_t)n);
            keel__kvl_pop_n(&k, a->where, n, c->reply);
        }
        keel__kvl_changed(c, &k);
        c->w->revision++;
        return 0;
    }
    r_nil_array(c->reply);
    return 0;
}

int keel__kvl_lmpop_syntax(const call_t *c)
{
    mpop_args_t a;
    return mpop_parse(c, 1, &a);
}

int keel__kvl_cmd_lmpop(const call_t *c)
{
    mpop_args_t a;
    if (mpop_parse(c, 1, &a) != 0)
        return REPLIED;
    return mpop_run(c, &a);
}

int keel__kvl_blmpop_syntax(const call_t *c)
{
    int64_t ms;
    mpop_args_t a;
    if (parse_timeout(c, 1, &ms) != 0)
        return REPLIED;
    return mpop_parse(c, 2, &a);
}

int keel__kvl_cmd_blmpop(const call_t *c)
{
    mpop_args_t a;
    if (timeout_in_range(c, 1) != 0 || mpop_parse(c, 2, &a) != 0)
        return REPLIED;
    return mpop_run(c, &a);
}

int keel__kvl_bpop_syntax(const call_t *c)
{
    int64_t ms;
    return parse_timeout(c, c->argc - 1, &ms);
}

static int bpop(const call_t *c, int where)
{
    if (timeout_in_range(c, c->argc - 1) != 0)
        return REPLIED;
    mpop_args_t a = {1, c->argc - 2, where, -1};
    return mpop_run(c, &a);
}

int keel__kvl_cmd_blpop(const call_t *c)
{
    return bpop(c, HEAD);
}
int keel__kvl_cmd_brpop(const call_t *c)
{
    return bpop(c, TAIL);
}

/* ---- KEEL.BPOP: a served blocking pop, tagged by its node ------------------------------ */

/*
 * KEEL.BPOP token cmd... runs a blocking pop (cmd) as it runs in MULTI: it pops what is
 * there or answers nil. KEEL.BPOP token alone is a fence and does nothing. The token is the
 * proposing node's: it finds its own pops among the entries it applies, whatever became of
 * the reply (docs/kv.md, "Blocking pops").
 */
int keel__kvl_kbpop_syntax(const call_t *c)
{
    if (c->argc == 2)
        return 0;
    call_t in = keel__kvc_inner_call(c, 2);
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&in, c->argc, &cmd);
    if (rc != 0)
        return rc;
    if (!(cmd->flags & CMD_BLOCKING_POP))
        return r_err(c->reply, "ERR KEEL.BPOP runs a blocking pop only");
    return 0;
}

int keel__kvl_cmd_kbpop(const call_t *c)
{
    if (c->argc == 2) {
        r_ok(c->reply);
        return 0;
    }
    call_t in = keel__kvc_inner_call(c, 2);
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&in, c->argc, &cmd);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (!(cmd->flags & CMD_BLOCKING_POP))
        return r_err(c->reply, "ERR KEEL.BPOP runs a blocking pop only");
    return keel__kvc_run(cmd, &in);
}

/* ---- what the server needs to block (kv_bpop.c) ------------------------------------------- */

static int is_cmd(const uint8_t *p, size_t n, const char *name)
{
    size_t k = 0;
    for (; k < n && name[k]; k++)
        if ((p[k] >= 'a' && p[k] <= 'z' ? p[k] - 32 : p[k]) != name[k])
            return 0;
    return k == n && name[k] == '\0';
}

int keel__kvl_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_kv_bpop_t *out)
{
    const uint8_t *name = argv[0];
    size_t nl = lens[0];
    size_t timeout_i;
    memset(out, 0, sizeof(*out));
    out->type = KEEL__KV_TYPE_LIST;
    out->count = 1;
    if (is_cmd(name, nl, "BLPOP") || is_cmd(name, nl, "BRPOP")) {
        if (argc < 3)
            return 0;
        out->kind = KEEL_KV_BPOP_POP;
        out->first_key = 1;
        out->nkeys = (size_t)argc - 2;
        out->left = is_cmd(name, nl, "BLPOP");
        timeout_i = (size_t)argc - 1;
    } else if (is_cmd(name, nl, "BLMOVE") || is_cmd(name, nl, "BRPOPLPUSH")) {
        int bl = is_cmd(name, nl, "BLMOVE");
        if (argc != (bl ? 6 : 4))
            return 0;
        out->kind = KEEL_KV_BPOP_MOVE;
        out->first_key = 1;
        out->nkeys = 1;
        timeout_i = bl ? 5 : 3;
        if (bl && ((!is_cmd(argv[3], lens[3], "LEFT") && !is_cmd(argv[3], lens[3], "RIGHT")) ||
                   (!is_cmd(argv[4], lens[4], "LEFT") && !is_cmd(argv[4], lens[4], "RIGHT"))))
            return 0;
        out->left = bl && is_cmd(argv[3], lens[3], "LEFT");
    } else if (is_cmd(name, nl, "BLMPOP")) {
        if (argc < 5)
            return 0;
        /* the whole syntax as the command judges it */
        keel_buf_t scratch;
        keel_buf_init(&scratch, 0);
        reply_t o = {&scratch, 0, 0};
        call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &o, "blmpop", NULL, NULL, NULL};
        mpop_args_t a;
        int rc = mpop_parse(&c, 2, &a);
        keel_buf_free(&scratch);
        if (rc != 0)
            return 0;
        out->kind = KEEL_KV_BPOP_MPOP;
        out->first_key = a.first_key;
        out->nkeys = a.nkeys;
        out->left = a.where == HEAD;
        out->count = (uint64_t)a.count;
        timeout_i = 1;
    } else {
        return 0;
    }
    int64_t ms;
    if (timeout_ms(argv[timeout_i], lens[timeout_i], &ms) != 0 || ms < 0)
        return 0;
    out->timeout_ms = ms;
    out->timeout_i = timeout_i;
    return 1;
}

uint64_t keel__kvl_len(const void *obj)
{
    return ((const klist_t *)obj)->len;
}
