/* resp.c - RESP2 codec: incremental request parser, reply parser, writers (sans-I/O). */
#include "proto/resp.h"

#include "base/num.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

keel_resp_config_t keel_resp_config_default(void)
{
    keel_resp_config_t c = {
        .bulk_bytes_max = KEEL_RESP_BULK_BYTES_MAX,
        .array_len_max = KEEL_RESP_ARRAY_LEN_MAX,
        .nesting_max = KEEL_RESP_NESTING_MAX,
        .inline_bytes_max = KEEL_RESP_INLINE_BYTES_MAX,
    };
    return c;
}

int keel_resp_config_validate(const keel_resp_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->bulk_bytes_max > KEEL_RESP_BULK_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp: bulk_bytes_max %zu above cap %u",
                         cfg->bulk_bytes_max, KEEL_RESP_BULK_BYTES_MAX);
    if (cfg->array_len_max < 1 || cfg->array_len_max > KEEL_RESP_ARRAY_LEN_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp: array_len_max %zu not in 1..%u",
                         cfg->array_len_max, KEEL_RESP_ARRAY_LEN_MAX);
    if (cfg->nesting_max < 1 || cfg->nesting_max > KEEL_RESP_NESTING_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp: nesting_max %zu not in 1..%u", cfg->nesting_max,
                         KEEL_RESP_NESTING_MAX);
    if (cfg->inline_bytes_max < 16 || cfg->inline_bytes_max > KEEL_RESP_INLINE_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp: inline_bytes_max %zu not in 16..%u",
                         cfg->inline_bytes_max, KEEL_RESP_INLINE_BYTES_MAX);
    return 0;
}

/* ---- shared helpers ------------------------------------------------------ */

enum { HDR_OK = 0, HDR_MORE = 1, HDR_BAD = -1 };

/*
 * A header line at data[0..avail): one type byte, an integer, CRLF. The line
 * is at most KEEL_RESP_HEADER_BYTES_MAX bytes, so rescanning a partial one is
 * bounded. On HDR_OK sets *value and *line_len (CRLF included).
 */
static int parse_header(const uint8_t *data, size_t avail, int64_t *value, size_t *line_len)
{
    size_t lim = avail < KEEL_RESP_HEADER_BYTES_MAX ? avail : KEEL_RESP_HEADER_BYTES_MAX;
    const uint8_t *cr = lim > 1 ? memchr(data + 1, '\r', lim - 1) : NULL;
    if (cr == NULL)
        return avail >= KEEL_RESP_HEADER_BYTES_MAX ? HDR_BAD : HDR_MORE;
    size_t i = (size_t)(cr - data);
    if (i + 1 >= avail)
        return HDR_MORE;
    if (data[i + 1] != '\n' || keel_parse_i64(data + 1, i - 1, value) != 0)
        return HDR_BAD;
    *line_len = i + 2;
    return HDR_OK;
}

static void printable(char *out /* [8] */, uint8_t c)
{
    if (c >= 0x20 && c < 0x7f)
        snprintf(out, 8, "%c", c);
    else
        snprintf(out, 8, "\\x%02x", c);
}

/* ---- request parser ------------------------------------------------------ */

enum { ST_START = 0, ST_BULK_HDR, ST_BULK_DATA, ST_INLINE };

void keel_resp_parser_init(keel_resp_parser_t *p, const keel_resp_config_t *cfg)
{
    memset(p, 0, sizeof(*p));
    p->cfg = cfg ? *cfg : keel_resp_config_default();
    int rc = keel_resp_config_validate(&p->cfg, NULL);
    assert(rc == 0);
    (void)rc;
    keel_resp_parser_reset(p);
}

void keel_resp_parser_free(keel_resp_parser_t *p)
{
    free(p->arg_off);
    free(p->arg_len);
    free(p->argv);
    free(p->scratch);
    p->arg_off = p->arg_len = NULL;
    p->argv = NULL;
    p->scratch = NULL;
    p->args_cap = p->scratch_cap = 0;
}

void keel_resp_parser_reset(keel_resp_parser_t *p)
{
    p->state = ST_START;
    p->pos = 0;
    p->inline_scan = 0;
    p->args_want = 0;
    p->bulk_len = -1;
    p->argc = 0;
}

/* Room for n arguments. Grows by doubling, so slots track arrived elements, not claims. */
static int ensure_args(keel_resp_parser_t *p, size_t n)
{
    if (n <= p->args_cap)
        return 0;
    size_t cap = p->args_cap ? p->args_cap : 8;
    while (cap < n)
        cap *= 2;
    size_t *off = realloc(p->arg_off, cap * sizeof(*off));
    if (off == NULL)
        return KEEL_ENOMEM;
    p->arg_off = off;
    size_t *len = realloc(p->arg_len, cap * sizeof(*len));
    if (len == NULL)
        return KEEL_ENOMEM;
    p->arg_len = len;
    keel_resp_arg_t *argv = realloc(p->argv, cap * sizeof(*argv));
    if (argv == NULL)
        return KEEL_ENOMEM;
    p->argv = argv;
    p->args_cap = cap;
    return 0;
}

static int push_arg(keel_resp_parser_t *p, size_t off, size_t len)
{
    int rc = ensure_args(p, p->argc + 1);
    if (rc != 0)
        return rc;
    p->arg_off[p->argc] = off;
    p->arg_len[p->argc] = len;
    p->argc++;
    return 0;
}

enum { STEP_DONE = 1, STEP_EMPTY = 2 }; /* besides 0 (progress) and negative codes */

/* "*<n>\r\n" at the start of a command. */
static int step_multibulk(keel_resp_parser_t *p, const uint8_t *d, size_t len, keel_errmsg_t *msg)
{
    int64_t n;
    size_t hl;
    int h = parse_header(d, len, &n, &hl);
    if (h == HDR_MORE)
        return KEEL_EAGAIN;
    if (h == HDR_BAD)
        return keel_errf(msg, KEEL_EPROTO, "Protocol error: invalid multibulk length");
    if ((uint64_t)n > p->cfg.array_len_max && n > 0)
        return keel_errf(msg, KEEL_ETOOBIG, "Protocol error: invalid multibulk length");
    p->pos = hl;
    if (n <= 0)
        return STEP_EMPTY; /* "*0", "*-1", any count <= 0: nothing to run, as in Redis */
    p->args_want = n;
    p->state = ST_BULK_HDR;
    return 0;
}

/* "$<len>\r\n" of the next element. */
static int step_bulk_hdr(keel_resp_parser_t *p, const uint8_t *d, size_t len, keel_errmsg_t *msg)
{
    if (p->pos >= len)
        return KEEL_EAGAIN;
    if (d[p->pos] != '$') {
        char got[8];
        printable(got, d[p->pos]);
        return keel_errf(msg, KEEL_EPROTO, "Protocol error: expected '$', got '%s'", got);
    }
    int64_t n;
    size_t hl;
    int h = parse_header(d + p->pos, len - p->pos, &n, &hl);
    if (h == HDR_MORE)
        return KEEL_EAGAIN;
    if (h == HDR_BAD || n < 0)
        return keel_errf(msg, KEEL_EPROTO, "Protocol error: invalid bulk length");
    if ((uint64_t)n > p->cfg.bulk_bytes_max)
        return keel_errf(msg, KEEL_ETOOBIG, "Protocol error: invalid bulk length");
    p->pos += hl;
    p->bulk_len = n;
    p->state = ST_BULK_DATA;
    return 0;
}

/* The element's bytes and CRLF: one comparison until they have all arrived. */
static int step_bulk_data(keel_resp_parser_t *p, const uint8_t *d, size_t len, keel_errmsg_t *msg)
{
    size_t n = (size_t)p->bulk_len;
    if (len - p->pos < n + 2)
        return KEEL_EAGAIN;
    if (d[p->pos + n] != '\r' || d[p->pos + n + 1] != '\n')
        return keel_errf(msg, KEEL_EPROTO, "Protocol error: expected CRLF after bulk data");
    int rc = push_arg(p, p->pos, n);
    if (rc != 0)
        return rc;
    p->pos += n + 2;
    p->bulk_len = -1;
    if ((int64_t)p->argc == p->args_want)
        return STEP_DONE;
    p->state = ST_BULK_HDR;
    return 0;
}

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * One quoted word starting at line[*i] (a '"' or '\''), unescaped into
 * scratch at *so, with the escapes of redis-cli's sdssplitargs(): in double
 * quotes \xHH \n \r \t \b \a and \<any>; in single quotes only \'. A closing
 * quote must be followed by a space or the end of the line.
 */
static int inline_quoted(const uint8_t *line, size_t n, size_t *i, uint8_t *out, size_t *olen)
{
    uint8_t q = line[*i];
    size_t j = *i + 1, o = 0;
    for (;;) {
        if (j >= n)
            return -1;
        uint8_t c = line[j];
        if (c == q) {
            if (j + 1 < n && !is_space(line[j + 1]))
                return -1;
            *i = j + 1;
            *olen = o;
            return 0;
        }
        if (c == '\\' && q == '"' && j + 3 < n && line[j + 1] == 'x' && hex_val(line[j + 2]) >= 0 &&
            hex_val(line[j + 3]) >= 0) {
            out[o++] = (uint8_t)(hex_val(line[j + 2]) * 16 + hex_val(line[j + 3]));
            j += 4;
        } else if (c == '\\' && q == '"' && j + 1 < n) {
            uint8_t e = line[j + 1];
            out[o++] = e == 'n'   ? '\n'
                       : e == 'r' ? '\r'
                       : e == 't' ? '\t'
                       : e == 'b' ? '\b'
                       : e == 'a' ? '\a'
                                  : e;
            j += 2;
        } else if (c == '\\' && q == '\'' && j + 1 < n && line[j + 1] == '\'') {
            out[o++] = '\'';
            j += 2;
        } else {
            out[o++] = c;
            j++;
        }
    }
}

/* Splits line[0..n) into words: unquoted words stay in place, quoted ones go to scratch. */
static int inline_split(keel_resp_parser_t *p, const uint8_t *line, size_t n, keel_errmsg_t *msg)
{
    if (n > p->scratch_cap) {
        uint8_t *s = realloc(p->scratch, n);
        if (s == NULL)
            return KEEL_ENOMEM;
        p->scratch = s;
        p->scratch_cap = n;
    }
    size_t i = 0, so = 0;
    for (;;) {
        while (i < n && is_space(line[i]))
            i++;
        if (i >= n)
            return 0;
        int rc;
        if (line[i] == '"' || line[i] == '\'') {
            size_t olen;
            if (inline_quoted(line, n, &i, p->scratch + so, &olen) != 0)
                return keel_errf(msg, KEEL_EPROTO, "Protocol error: unbalanced quotes in request");
            /* scratch offsets are tagged with SIZE_MAX/2 so finish() can tell them apart */
            rc = push_arg(p, (SIZE_MAX / 2) + so, olen);
            so += olen;
        } else {
            size_t start = i;
            while (i < n && !is_space(line[i]))
                i++;
            rc = push_arg(p, start, i - start);
        }
        if (rc != 0)
            return rc;
    }
}

/* Looks for the end of an inline line, resuming where the last call stopped. */
static int step_inline(keel_resp_parser_t *p, const uint8_t *d, size_t len, keel_errmsg_t *msg)
{
    size_t lim = len < p->cfg.inline_bytes_max ? len : p->cfg.inline_bytes_max;
    const uint8_t *nl = NULL;
    if (p->inline_scan < lim)
        nl = memchr(d + p->inline_scan, '\n', lim - p->inline_scan);
    if (nl == NULL) {
        if (len >= p->cfg.inline_bytes_max)
            return keel_errf(msg, KEEL_ETOOBIG, "Protocol error: too big inline request");
        p->inline_scan = lim;
        return KEEL_EAGAIN;
    }
    size_t eol = (size_t)(nl - d);
    size_t n = eol > 0 && d[eol - 1] == '\r' ? eol - 1 : eol;
    int rc = inline_split(p, d, n, msg);
    if (rc != 0)
        return rc;
    p->pos = eol + 1;
    return p->argc == 0 ? STEP_EMPTY : STEP_DONE;
}

static void finish(keel_resp_parser_t *p, const uint8_t *d, keel_resp_cmd_t *cmd)
{
    for (size_t i = 0; i < p->argc; i++) {
        size_t off = p->arg_off[i];
        const uint8_t *base = d;
        if (p->state == ST_INLINE && off >= SIZE_MAX / 2) {
            base = p->scratch;
            off -= SIZE_MAX / 2;
        }
        p->argv[i].ptr = base + off;
        p->argv[i].len = p->arg_len[i];
    }
    cmd->argc = p->argc;
    cmd->argv = p->argv;
}

static int step(keel_resp_parser_t *p, const uint8_t *d, size_t len, keel_errmsg_t *msg)
{
    switch (p->state) {
    case ST_START:
        if (len == 0)
            return KEEL_EAGAIN;
        if (d[0] == '*')
            return step_multibulk(p, d, len, msg);
        p->state = ST_INLINE;
        return 0;
    case ST_BULK_HDR:
        return step_bulk_hdr(p, d, len, msg);
    case ST_BULK_DATA:
        return step_bulk_data(p, d, len, msg);
    case ST_INLINE:
        return step_inline(p, d, len, msg);
    }
    assert(!"bad resp parser state");
    return KEEL_EPROTO;
}

/*
 * Between commands, memory grown for an unusually large one is given back, so
 * one 1M-argument command does not pin 32 MB to a connection for its life.
 * (Not at completion: the returned argv lives in these arrays until the next call.)
 */
#define ARGS_KEEP 1024u
#define SCRATCH_KEEP_BYTES 4096u

static void shrink_idle(keel_resp_parser_t *p)
{
    if (p->args_cap > ARGS_KEEP) {
        free(p->arg_off);
        free(p->arg_len);
        free(p->argv);
        p->arg_off = p->arg_len = NULL;
        p->argv = NULL;
        p->args_cap = 0;
    }
    if (p->scratch_cap > SCRATCH_KEEP_BYTES) {
        free(p->scratch);
        p->scratch = NULL;
        p->scratch_cap = 0;
    }
}

int keel_resp_parse_request(keel_resp_parser_t *p, const uint8_t *data, size_t len,
                            keel_resp_cmd_t *cmd, size_t *consumed, keel_errmsg_t *msg)
{
    assert(p->pos <= len); /* the caller passed fewer bytes than last time */
    if (p->state == ST_START)
        shrink_idle(p);
    size_t skipped = 0;
    *consumed = 0;
    cmd->argc = 0;
    cmd->argv = NULL;
    if (len == 0)
        return KEEL_EAGAIN; /* data may be NULL: no arithmetic on it */
    for (;;) {
        int rc = step(p, data + skipped, len - skipped, msg);
        if (rc == 0)
            continue;
        if (rc == STEP_EMPTY) {
            skipped += p->pos;
            keel_resp_parser_reset(p);
            continue;
        }
        if (rc == STEP_DONE) {
            finish(p, data + skipped, cmd);
            *consumed = skipped + p->pos;
            assert(cmd->argc >= 1 && *consumed <= len);
            keel_resp_parser_reset(p);
            return 0;
        }
        if (rc == KEEL_EAGAIN)
            *consumed = skipped;
        return rc;
    }
}

/* ---- reply parser -------------------------------------------------------- */

struct rctx {
    const keel_resp_config_t *cfg;
    const uint8_t *d;
    size_t len;
    keel_errmsg_t *msg;
    keel_resp_value_t *pool; /* NULL while scanning */
    size_t used;             /* values counted (scan) or placed (build) */
};

/* A +simple / -error line: any bytes but CR and LF, up to bulk_bytes_max. */
static int reply_line(struct rctx *c, size_t *pos, keel_resp_arg_t *s)
{
    size_t start = *pos + 1, avail = c->len - start;
    size_t lim = avail < c->cfg->bulk_bytes_max + 1 ? avail : c->cfg->bulk_bytes_max + 1;
    const uint8_t *cr = memchr(c->d + start, '\r', lim);
    if (cr == NULL) {
        if (avail > c->cfg->bulk_bytes_max)
            return keel_errf(c->msg, KEEL_ETOOBIG, "Protocol error: status line too long");
        return KEEL_EAGAIN;
    }
    size_t i = (size_t)(cr - c->d);
    if (i + 1 >= c->len)
        return KEEL_EAGAIN;
    if (c->d[i + 1] != '\n' || memchr(c->d + start, '\n', i - start) != NULL)
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: bad line ending");
    s->ptr = c->d + start;
    s->len = i - start;
    *pos = i + 2;
    return 0;
}

static int reply_value(struct rctx *c, size_t *pos, size_t depth, keel_resp_value_t *v);

static int reply_array(struct rctx *c, size_t *pos, size_t depth, int64_t n, keel_resp_value_t *v)
{
    if (n == -1) {
        if (v)
            v->type = KEEL_RESP_NIL_ARRAY;
        return 0;
    }
    if (n < 0)
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: invalid multibulk length");
    if ((uint64_t)n > c->cfg->array_len_max)
        return keel_errf(c->msg, KEEL_ETOOBIG, "Protocol error: invalid multibulk length");
    if (n > 0 && depth + 1 > c->cfg->nesting_max)
        return keel_errf(c->msg, KEEL_ETOOBIG, "Protocol error: arrays nested too deep");
    keel_resp_value_t *elems = NULL;
    if (v) {
        elems = c->pool + c->used;
        c->used += (size_t)n;
        v->type = KEEL_RESP_ARRAY;
        v->elems_len = (size_t)n;
        v->elems = n > 0 ? elems : NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        int rc = reply_value(c, pos, depth + 1, elems ? &elems[i] : NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int reply_value(struct rctx *c, size_t *pos, size_t depth, keel_resp_value_t *v)
{
    if (*pos >= c->len)
        return KEEL_EAGAIN;
    if (v == NULL)
        c->used++;
    uint8_t t = c->d[*pos];
    if (t == '+' || t == '-') {
        keel_resp_arg_t s;
        int rc = reply_line(c, pos, &s);
        if (rc == 0 && v) {
            v->type = t == '+' ? KEEL_RESP_SIMPLE : KEEL_RESP_ERROR;
            v->str = s;
        }
        return rc;
    }
    if (t != ':' && t != '$' && t != '*') {
        char got[8];
        printable(got, t);
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: unknown reply type '%s'", got);
    }
    int64_t n;
    size_t hl;
    int h = parse_header(c->d + *pos, c->len - *pos, &n, &hl);
    if (h == HDR_MORE)
        return KEEL_EAGAIN;
    if (h == HDR_BAD)
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: invalid %s",
                         t == ':'   ? "integer"
                         : t == '$' ? "bulk length"
                                    : "multibulk length");
    *pos += hl;
    if (t == ':') {
        if (v) {
            v->type = KEEL_RESP_INT;
            v->integer = n;
        }
        return 0;
    }
    if (t == '*')
        return reply_array(c, pos, depth, n, v);
    if (n == -1) {
        if (v)
            v->type = KEEL_RESP_NIL;
        return 0;
    }
    if (n < 0)
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: invalid bulk length");
    if ((uint64_t)n > c->cfg->bulk_bytes_max)
        return keel_errf(c->msg, KEEL_ETOOBIG, "Protocol error: invalid bulk length");
    if (c->len - *pos < (size_t)n + 2)
        return KEEL_EAGAIN;
    if (c->d[*pos + (size_t)n] != '\r' || c->d[*pos + (size_t)n + 1] != '\n')
        return keel_errf(c->msg, KEEL_EPROTO, "Protocol error: expected CRLF after bulk data");
    if (v) {
        v->type = KEEL_RESP_BULK;
        v->str.ptr = c->d + *pos;
        v->str.len = (size_t)n;
    }
    *pos += (size_t)n + 2;
    return 0;
}

/*
 * Two passes: the first checks that the whole reply is present and valid and
 * counts its values without allocating; the second fills one array of exactly
 * that many values. So a claimed "*1000000" costs nothing until a million
 * elements have really arrived.
 */
int keel_resp_parse_reply(const keel_resp_config_t *cfg, const uint8_t *data, size_t len,
                          keel_resp_value_t **out, size_t *consumed, keel_errmsg_t *msg)
{
    keel_resp_config_t def = keel_resp_config_default();
    struct rctx c = {.cfg = cfg ? cfg : &def, .d = data, .len = len, .msg = msg};
    size_t pos = 0;
    *out = NULL;
    *consumed = 0;
    int rc = reply_value(&c, &pos, 1, NULL);
    if (rc != 0)
        return rc;
    size_t count = c.used;
    assert(count >= 1 && pos <= len);
    c.pool = calloc(count, sizeof(*c.pool));
    if (c.pool == NULL)
        return KEEL_ENOMEM;
    c.used = 1;
    size_t pos2 = 0;
    rc = reply_value(&c, &pos2, 1, &c.pool[0]);
    assert(rc == 0 && pos2 == pos && c.used == count);
    *out = c.pool;
    *consumed = pos;
    return 0;
}

bool keel_resp_error_contains(const keel_resp_value_t *v, const char *text)
{
    if (v->type != KEEL_RESP_ERROR)
        return false;
    size_t n = strlen(text);
    for (size_t i = 0; i + n <= v->str.len; i++)
        if (memcmp(v->str.ptr + i, text, n) == 0)
            return true;
    return false;
}

void keel_resp_value_free(keel_resp_value_t *root)
{
    free(root);
}

/* ---- writers ------------------------------------------------------------- */

/* type byte, bytes with CR/LF blanked, CRLF: reserved at once so failure changes nothing. */
static int write_line(keel_buf_t *b, char type, const char *s, size_t n)
{
    int rc = keel_buf_reserve(b, n + 3);
    if (rc != 0)
        return rc;
    uint8_t *w = keel_buf_wptr(b);
    w[0] = (uint8_t)type;
    for (size_t i = 0; i < n; i++)
        w[1 + i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : (uint8_t)s[i];
    w[n + 1] = '\r';
    w[n + 2] = '\n';
    keel_buf_commit(b, n + 3);
    return 0;
}

int keel_resp_write_simple(keel_buf_t *b, const char *s)
{
    return write_line(b, '+', s, strlen(s));
}

int keel_resp_write_error(keel_buf_t *b, const char *err)
{
    return write_line(b, '-', err, strlen(err));
}

int keel_resp_write_errorf(keel_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KEEL_EINVAL;
    int rc = keel_buf_reserve(b, (size_t)n + 4);
    if (rc != 0)
        return rc;
    char *w = (char *)keel_buf_wptr(b);
    w[0] = '-';
    va_start(ap, fmt);
    vsnprintf(w + 1, (size_t)n + 1, fmt, ap);
    va_end(ap);
    for (int i = 1; i <= n; i++)
        if (w[i] == '\r' || w[i] == '\n')
            w[i] = ' ';
    w[n + 1] = '\r';
    w[n + 2] = '\n';
    keel_buf_commit(b, (size_t)n + 3);
    return 0;
}

/* "<type><v>\r\n" into w; returns its length (<= KEEL_RESP_HEADER_BYTES_MAX). */
static size_t fmt_header(uint8_t *w, char type, int64_t v)
{
    char num[24];
    size_t n = keel_fmt_i64(num, v);
    w[0] = (uint8_t)type;
    memcpy(w + 1, num, n);
    w[n + 1] = '\r';
    w[n + 2] = '\n';
    return n + 3;
}

static int write_header(keel_buf_t *b, char type, int64_t v)
{
    int rc = keel_buf_reserve(b, KEEL_RESP_HEADER_BYTES_MAX + 1);
    if (rc != 0)
        return rc;
    keel_buf_commit(b, fmt_header(keel_buf_wptr(b), type, v));
    return 0;
}

int keel_resp_write_int(keel_buf_t *b, int64_t v)
{
    return write_header(b, ':', v);
}

int keel_resp_write_nil(keel_buf_t *b)
{
    return write_header(b, '$', -1);
}

int keel_resp_write_nil_array(keel_buf_t *b)
{
    return write_header(b, '*', -1);
}

int keel_resp_write_array_header(keel_buf_t *b, size_t n)
{
    assert(n <= INT64_MAX);
    return write_header(b, '*', (int64_t)n);
}

static size_t put_bulk(uint8_t *w, const void *p, size_t n)
{
    size_t h = fmt_header(w, '$', (int64_t)n);
    if (n > 0)
        memcpy(w + h, p, n);
    w[h + n] = '\r';
    w[h + n + 1] = '\n';
    return h + n + 2;
}

int keel_resp_write_bulk(keel_buf_t *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - 2 * KEEL_RESP_HEADER_BYTES_MAX)
        return KEEL_ETOOBIG;
    int rc = keel_buf_reserve(b, KEEL_RESP_HEADER_BYTES_MAX + n + 2);
    if (rc != 0)
        return rc;
    keel_buf_commit(b, put_bulk(keel_buf_wptr(b), p, n));
    return 0;
}

int keel_resp_write_bulk_str(keel_buf_t *b, const char *s)
{
    return keel_resp_write_bulk(b, s, strlen(s));
}

int keel_resp_write_command(keel_buf_t *b, size_t argc, const keel_resp_arg_t *argv)
{
    size_t total = KEEL_RESP_HEADER_BYTES_MAX;
    for (size_t i = 0; i < argc; i++) {
        size_t one = KEEL_RESP_HEADER_BYTES_MAX + argv[i].len + 2;
        if (argv[i].len > SIZE_MAX / 4 || total > SIZE_MAX / 2 - one)
            return KEEL_ETOOBIG;
        total += one;
    }
    int rc = keel_buf_reserve(b, total);
    if (rc != 0)
        return rc;
    uint8_t *w = keel_buf_wptr(b);
    size_t n = fmt_header(w, '*', (int64_t)argc);
    for (size_t i = 0; i < argc; i++)
        n += put_bulk(w + n, argv[i].ptr, argv[i].len);
    assert(n <= total);
    keel_buf_commit(b, n);
    return 0;
}

/* Upper bound of a value's encoded size (headers counted at their maximum). */
static size_t value_size(const keel_resp_value_t *v, size_t depth)
{
    assert(depth <= KEEL_RESP_NESTING_MAX);
    switch (v->type) {
    case KEEL_RESP_SIMPLE:
    case KEEL_RESP_ERROR:
        return v->str.len + 3;
    case KEEL_RESP_BULK:
        return KEEL_RESP_HEADER_BYTES_MAX + v->str.len + 2;
    case KEEL_RESP_INT:
    case KEEL_RESP_NIL:
    case KEEL_RESP_NIL_ARRAY:
        return KEEL_RESP_HEADER_BYTES_MAX;
    case KEEL_RESP_ARRAY: {
        size_t n = KEEL_RESP_HEADER_BYTES_MAX;
        for (size_t i = 0; i < v->elems_len; i++)
            n += value_size(&v->elems[i], depth + 1);
        return n;
    }
    }
    assert(!"bad resp value type");
    return 0;
}

static size_t put_value(uint8_t *w, const keel_resp_value_t *v)
{
    switch (v->type) {
    case KEEL_RESP_SIMPLE:
    case KEEL_RESP_ERROR:
        w[0] = v->type == KEEL_RESP_SIMPLE ? '+' : '-';
        for (size_t i = 0; i < v->str.len; i++) {
            uint8_t c = v->str.ptr[i];
            w[1 + i] = (c == '\r' || c == '\n') ? ' ' : c;
        }
        w[v->str.len + 1] = '\r';
        w[v->str.len + 2] = '\n';
        return v->str.len + 3;
    case KEEL_RESP_BULK:
        return put_bulk(w, v->str.ptr, v->str.len);
    case KEEL_RESP_INT:
        return fmt_header(w, ':', v->integer);
    case KEEL_RESP_NIL:
        return fmt_header(w, '$', -1);
    case KEEL_RESP_NIL_ARRAY:
        return fmt_header(w, '*', -1);
    case KEEL_RESP_ARRAY: {
        size_t n = fmt_header(w, '*', (int64_t)v->elems_len);
        for (size_t i = 0; i < v->elems_len; i++)
            n += put_value(w + n, &v->elems[i]);
        return n;
    }
    }
    assert(!"bad resp value type");
    return 0;
}

int keel_resp_write_value(keel_buf_t *b, const keel_resp_value_t *v)
{
    size_t total = value_size(v, 1);
    int rc = keel_buf_reserve(b, total);
    if (rc != 0)
        return rc;
    size_t n = put_value(keel_buf_wptr(b), v);
    assert(n <= total);
    keel_buf_commit(b, n);
    return 0;
}

int keel_resp_write_unknown_command(keel_buf_t *b, size_t argc, const uint8_t *const *argv,
                                    const size_t *lens)
{
    char args[160];
    size_t n = 0;
    args[0] = '\0';
    for (size_t i = 1; i < argc && n < 128; i++) {
        int w = snprintf(args + n, sizeof(args) - n, "'%.*s' ",
                         (int)(lens[i] < 128 - n ? lens[i] : 128 - n), (const char *)argv[i]);
        if (w < 0)
            break;
        n += (size_t)w < sizeof(args) - n ? (size_t)w : sizeof(args) - n - 1;
    }
    return keel_resp_write_errorf(b, "ERR unknown command '%.*s', with args beginning with: %s",
                                  (int)(lens[0] < 128 ? lens[0] : 128), (const char *)argv[0],
                                  args);
}
