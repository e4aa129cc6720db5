/* h1.c - strict HTTP/1.1 head parsing and chunked decoding for the proxy (RFC 9110, RFC 9112). */
#include "proxy/h1.h"

#include <assert.h>
#include <string.h>

/* keel_h1_tchar (h1.h): a table, since every byte of every field name goes through it. */
#define T1(c) [c] = 1
const uint8_t keel_h1_tchar[256] = {
    T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
    T1('^'), T1('_'), T1('`'), T1('|'), T1('~'), T1('0'),  T1('1'), T1('2'), T1('3'), T1('4'),
    T1('5'), T1('6'), T1('7'), T1('8'), T1('9'), T1('A'),  T1('B'), T1('C'), T1('D'), T1('E'),
    T1('F'), T1('G'), T1('H'), T1('I'), T1('J'), T1('K'),  T1('L'), T1('M'), T1('N'), T1('O'),
    T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'), T1('U'),  T1('V'), T1('W'), T1('X'), T1('Y'),
    T1('Z'), T1('a'), T1('b'), T1('c'), T1('d'), T1('e'),  T1('f'), T1('g'), T1('h'), T1('i'),
    T1('j'), T1('k'), T1('l'), T1('m'), T1('n'), T1('o'),  T1('p'), T1('q'), T1('r'), T1('s'),
    T1('t'), T1('u'), T1('v'), T1('w'), T1('x'), T1('y'),  T1('z'),
};
#undef T1

static inline bool is_tchar(unsigned char c)
{
    return keel_h1_is_tchar(c);
}

/* field-vchar / SP / HTAB (obs-text allowed); every other control byte is refused. */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool span_eq_ci(const char *base, keel_h1_span_t a, keel_h1_span_t b)
{
    if (a.len != b.len)
        return false;
    for (uint32_t i = 0; i < a.len; i++)
        if (lower((unsigned char)base[a.off + i]) != lower((unsigned char)base[b.off + i]))
            return false;
    return true;
}

bool keel_h1_is_hop_by_hop(const char *base, const keel_h1_head_t *h, keel_h1_span_t name)
{
    /* by length first: every field of every request and response comes here */
    bool hop = false;
    switch (name.len) {
    case 2:
        hop = keel_h1_span_is(base, name, "te");
        break;
    case 7:
        hop = keel_h1_span_is(base, name, "trailer") || keel_h1_span_is(base, name, "upgrade");
        break;
    case 10:
        hop =
            keel_h1_span_is(base, name, "connection") || keel_h1_span_is(base, name, "keep-alive");
        break;
    case 14:
        hop = keel_h1_span_is(base, name, "content-length");
        break;
    case 16:
        hop = keel_h1_span_is(base, name, "proxy-connection");
        break;
    case 17:
        hop = keel_h1_span_is(base, name, "transfer-encoding");
        break;
    }
    if (hop)
        return true;
    for (uint32_t i = 0; i < h->conn_tokens_count; i++)
        if (span_eq_ci(base, name, h->conn_tokens[i]))
            return true;
    return false;
}

size_t keel_h1_head_end(const char *buf, size_t n, size_t *scan)
{
    /* Back up 3 bytes so a CRLFCRLF split across calls is still seen. */
    size_t i = *scan > 3 ? *scan - 3 : 0;
    for (; i + 1 < n; i++) {
        const char *p = memchr(buf + i, '\n', n - i);
        if (p == NULL)
            break;
        i = (size_t)(p - buf);
        /* "\n\r\n" ends the head; a lone "\n\n" too (refused later as a bare LF). */
        if (i + 2 < n && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            *scan = i + 3;
            return i + 3;
        }
        if (i + 1 < n && buf[i + 1] == '\n') {
            *scan = i + 2;
            return i + 2;
        }
    }
    *scan = n;
    return 0;
}

int keel_h1_request_overflow(const char *buf, size_t n, const keel_h1_limits_t *lim)
{
    const char *eol = memchr(buf, '\n', n);
    /* method SP target SP HTTP/1.1: allow 32 bytes of method and version around the target */
    if (eol == NULL && n > (size_t)lim->uri_bytes_max + 32)
        return 414;
    if (n > lim->head_bytes_max)
        return 431;
    return 0;
}

/* Parses "HTTP/1.x" at p (8 bytes). -1 if it is not HTTP/1.0 or HTTP/1.1. */
static int parse_version(const char *p)
{
    if (memcmp(p, "HTTP/1.", 7) != 0)
        return -1;
    if (p[7] == '0')
        return 0;
    if (p[7] == '1')
        return 1;
    return -1;
}

/* 1*DIGIT without overflow past 2^60; false otherwise. */
static bool parse_length(const char *p, uint32_t n, uint64_t *out)
{
    if (n == 0 || n > 18)
        return false;
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

/* Walks a comma-separated list in a field value, calling fn for each trimmed element. */
typedef bool (*list_fn)(const char *base, keel_h1_span_t el, keel_h1_head_t *h, void *arg);

static bool each_element(const char *base, keel_h1_span_t v, keel_h1_head_t *h, list_fn fn,
                         void *arg)
{
    uint32_t i = v.off, end = v.off + v.len;
    while (i <= end) {
        uint32_t s = i;
        while (i < end && base[i] != ',')
            i++;
        uint32_t e = i;
        while (s < e && (base[s] == ' ' || base[s] == '\t'))
            s++;
        while (e > s && (base[e - 1] == ' ' || base[e - 1] == '\t'))
            e--;
        if (e > s && !fn(base, (keel_h1_span_t){s, e - s}, h, arg))
            return false;
        i++; /* past the comma (or past end) */
    }
    return true;
}

static bool connection_option(const char *base, keel_h1_span_t el, keel_h1_head_t *h, void *arg)
{
    (void)arg;
    if (keel_h1_span_is(base, el, "close"))
        h->conn_flags |= KEEL_H1_CONN_CLOSE;
    else if (keel_h1_span_is(base, el, "keep-alive"))
        h->conn_flags |= KEEL_H1_CONN_KEEPALIVE;
    else if (h->conn_tokens_count < KEEL_H1_CONN_TOKENS_MAX)
        h->conn_tokens[h->conn_tokens_count++] = el;
    else
        return false; /* more options than we can strip: refuse rather than leak one */
    return true;
}

typedef struct te_state {
    uint32_t codings;
    bool last_chunked;
    bool other; /* a coding other than chunked */
} te_state_t;

static bool transfer_coding(const char *base, keel_h1_span_t el, keel_h1_head_t *h, void *arg)
{
    (void)h;
    te_state_t *te = arg;
    if (te->last_chunked)
        return false; /* chunked must be the last coding and appear once (RFC 9112 §6.1) */
    te->codings++;
    if (keel_h1_span_is(base, el, "chunked"))
        te->last_chunked = true;
    else
        te->other = true;
    return true;
}

/* Splits the header lines of buf[start..n) into h->fields and reads the framing fields.
 * Returns 0 or a status (400, 431, 501). */
static int parse_fields(const char *buf, size_t start, size_t n, const keel_h1_limits_t *lim,
                        keel_h1_head_t *h, te_state_t *te, bool *has_length)
{
    size_t i = start;
    for (;;) {
        const char *eol = memchr(buf + i, '\n', n - i);
        assert(eol != NULL); /* keel_h1_head_end found the empty line */
        size_t e = (size_t)(eol - buf);
        if (e == i || buf[e - 1] != '\r')
            return 400; /* bare LF */
        size_t line_end = e - 1;
        if (line_end == i)
            return 0; /* the empty line */
        if (buf[i] == ' ' || buf[i] == '\t')
            return 400; /* obs-fold (RFC 9112 §5.2) */
        if (h->fields_count >= lim->headers_count_max)
            return 431;
        size_t c = i;
        while (c < line_end && is_tchar((unsigned char)buf[c]))
            c++;
        if (c == i || c == line_end || buf[c] != ':')
            return 400; /* empty name, no colon, or whitespace before the colon */
        size_t vs = c + 1, ve = line_end;
        while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t'))
            vs++;
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
            ve--;
        for (size_t k = vs; k < ve; k++)
            if (!is_value_char((unsigned char)buf[k]))
                return 400; /* CR, NUL and other controls */
        keel_h1_field_t *f = &h->fields[h->fields_count];
        f->name = (keel_h1_span_t){(uint32_t)i, (uint32_t)(c - i)};
        f->value = (keel_h1_span_t){(uint32_t)vs, (uint32_t)(ve - vs)};
        if (keel_h1_span_is(buf, f->name, "content-length")) {
            uint64_t v;
            if (!parse_length(buf + vs, (uint32_t)(ve - vs), &v))
                return 400;
            if (*has_length && v != h->content_length)
                return 400; /* differing duplicates (RFC 9112 §6.3 item 5) */
            *has_length = true;
            h->content_length = v;
        } else if (keel_h1_span_is(buf, f->name, "transfer-encoding")) {
            if (!each_element(buf, f->value, h, transfer_coding, te))
                return 400;
        } else if (keel_h1_span_is(buf, f->name, "connection")) {
            if (!each_element(buf, f->value, h, connection_option, NULL))
                return 400;
        } else if (keel_h1_span_is(buf, f->name, "host")) {
            if (h->host_field >= 0)
                return 400;
            h->host_field = (int)h->fields_count;
        } else if (keel_h1_span_is(buf, f->name, "expect")) {
            if (keel_h1_span_is(buf, f->value, "100-continue"))
                h->expect_continue = true;
        }
        h->fields_count++;
        i = e + 1;
    }
}

static void head_reset(keel_h1_head_t *h, size_t n)
{
    h->head_bytes = (uint32_t)n;
    h->method = h->target = h->reason = (keel_h1_span_t){0, 0};
    h->status = 0;
    h->version_minor = 1;
    h->fields_count = 0;
    h->body = KEEL_H1_BODY_NONE;
    h->content_length = 0;
    h->host_field = -1;
    h->conn_flags = 0;
    h->keep_alive = false;
    h->expect_continue = false;
    h->conn_tokens_count = 0;
}

static bool keep_alive_for(const keel_h1_head_t *h)
{
    if (h->conn_flags & KEEL_H1_CONN_CLOSE)
        return false;
    return h->version_minor == 1 || (h->conn_flags & KEEL_H1_CONN_KEEPALIVE);
}

int keel_h1_parse_request(const char *buf, size_t n, const keel_h1_limits_t *lim, keel_h1_head_t *h)
{
    assert(lim->headers_count_max <= KEEL_H1_HEADERS_CEILING);
    head_reset(h, n);
    if (n > lim->head_bytes_max)
        return 431;
    const char *eol = memchr(buf, '\n', n);
    assert(eol != NULL);
    size_t e = (size_t)(eol - buf);
    if (e == 0 || buf[e - 1] != '\r')
        return 400;
    size_t line_end = e - 1, i = 0;
    while (i < line_end && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == 0 || i >= line_end || buf[i] != ' ')
        return 400;
    h->method = (keel_h1_span_t){0, (uint32_t)i};
    size_t ts = i + 1, te_ = ts;
    while (te_ < line_end && buf[te_] > ' ' && buf[te_] != 0x7f)
        te_++;
    if (te_ == ts || te_ >= line_end || buf[te_] != ' ')
        return te_ - ts > lim->uri_bytes_max ? 414 : 400;
    if (te_ - ts > lim->uri_bytes_max)
        return 414;
    h->target = (keel_h1_span_t){(uint32_t)ts, (uint32_t)(te_ - ts)};
    if (line_end - (te_ + 1) != 8)
        return 400;
    h->version_minor = parse_version(buf + te_ + 1);
    if (h->version_minor < 0)
        return 400;
    te_state_t te = {0};
    bool has_length = false;
    int st = parse_fields(buf, e + 1, n, lim, h, &te, &has_length);
    if (st != 0)
        return st;
    if (te.codings > 0) {
        if (has_length || h->version_minor == 0)
            return 400; /* CL with TE (RFC 9112 §6.1), TE from an HTTP/1.0 client */
        if (te.other)
            return te.last_chunked ? 501 : 400; /* a request must end in chunked */
        h->body = KEEL_H1_BODY_CHUNKED;
    } else if (has_length && h->content_length > 0) {
        h->body = KEEL_H1_BODY_LENGTH;
    }
    if (h->version_minor == 1 && h->host_field < 0)
        return 400; /* RFC 9112 §3.2 */
    h->keep_alive = keep_alive_for(h);
    return 0;
}

int keel_h1_parse_response(const char *buf, size_t n, const keel_h1_limits_t *lim,
                           bool head_request, keel_h1_head_t *h)
{
    head_reset(h, n);
    if (n > lim->head_bytes_max)
        return 502;
    const char *eol = memchr(buf, '\n', n);
    assert(eol != NULL);
    size_t e = (size_t)(eol - buf);
    if (e < 13 || buf[e - 1] != '\r') /* "HTTP/1.1 200" + CR */
        return 502;
    size_t line_end = e - 1;
    h->version_minor = parse_version(buf);
    if (h->version_minor < 0 || buf[8] != ' ')
        return 502;
    int status = 0;
    for (int k = 9; k < 12; k++) {
        if (buf[k] < '0' || buf[k] > '9')
            return 502;
        status = status * 10 + (buf[k] - '0');
    }
    if (status < 100 || (line_end > 12 && buf[12] != ' '))
        return 502;
    h->status = status;
    if (line_end > 13)
        h->reason = (keel_h1_span_t){13, (uint32_t)(line_end - 13)};
    for (size_t k = 13; k < line_end; k++)
        if (!is_value_char((unsigned char)buf[k]))
            return 502;
    te_state_t te = {0};
    bool has_length = false;
    if (parse_fields(buf, e + 1, n, lim, h, &te, &has_length) != 0)
        return 502;
    if (te.codings > 0 && has_length)
        return 502; /* a proxy must not guess (RFC 9112 §6.3 item 3) */
    h->keep_alive = keep_alive_for(h);
    if (head_request || status < 200 || status == 204 || status == 304)
        h->body = KEEL_H1_BODY_NONE;
    else if (te.codings > 0) {
        if (te.last_chunked && !te.other)
            h->body = KEEL_H1_BODY_CHUNKED;
        else
            return 502; /* gzip and friends: we would have to read until close; refuse */
    } else if (has_length)
        h->body = h->content_length > 0 ? KEEL_H1_BODY_LENGTH : KEEL_H1_BODY_NONE;
    else {
        h->body = KEEL_H1_BODY_CLOSE;
        h->keep_alive = false;
    }
    return 0;
}

void keel_h1_chunked_init(keel_h1_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
    c->state = KEEL_H1_CK_SIZE;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = lower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static int ck_bad(keel_h1_chunked_t *c, size_t i, size_t *consumed)
{
    c->state = KEEL_H1_CK_ERROR;
    *consumed = i;
    return KEEL_H1_CK_BAD;
}

int keel_h1_chunked_feed(keel_h1_chunked_t *c, const uint8_t *in, size_t n, size_t *consumed,
                         size_t *data_off, size_t *data_len)
{
    size_t i = 0;
    *data_off = *data_len = 0;
    while (i < n) {
        unsigned char ch = in[i];
        switch (c->state) {
        case KEEL_H1_CK_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (c->digits >= 15)
                    return ck_bad(c, i, consumed); /* > 2^60 */
                c->remaining = c->remaining * 16 + (uint64_t)v;
                c->digits++;
                i++;
            } else if (c->digits == 0) {
                return ck_bad(c, i, consumed);
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = KEEL_H1_CK_EXT;
                c->ext_bytes = 0;
                i++;
            } else if (ch == '\r') {
                c->state = KEEL_H1_CK_SIZE_LF;
                i++;
            } else {
                return ck_bad(c, i, consumed);
            }
            break;
        }
        case KEEL_H1_CK_EXT:
            if (ch == '\r') {
                c->state = KEEL_H1_CK_SIZE_LF;
            } else if (ch == '\n' || !is_value_char(ch) ||
                       ++c->ext_bytes > KEEL_H1_CHUNK_EXT_BYTES_MAX) {
                return ck_bad(c, i, consumed);
            }
            i++;
            break;
        case KEEL_H1_CK_SIZE_LF:
            if (ch != '\n')
                return ck_bad(c, i, consumed);
            i++;
            c->digits = 0;
            if (c->remaining == 0) {
                c->state = KEEL_H1_CK_TRAILER;
                c->trailer_bytes = 0;
            } else {
                c->state = KEEL_H1_CK_DATA;
            }
            break;
        case KEEL_H1_CK_DATA: {
            size_t take = n - i;
            if (take > c->remaining)
                take = (size_t)c->remaining;
            *data_off = i;
            *data_len = take;
            c->remaining -= take;
            i += take;
            if (c->remaining == 0)
                c->state = KEEL_H1_CK_DATA_CR;
            *consumed = i;
            return KEEL_H1_CK_BODY;
        }
        case KEEL_H1_CK_DATA_CR:
            if (ch != '\r')
                return ck_bad(c, i, consumed);
            c->state = KEEL_H1_CK_DATA_LF;
            i++;
            break;
        case KEEL_H1_CK_DATA_LF:
            if (ch != '\n')
                return ck_bad(c, i, consumed);
            c->state = KEEL_H1_CK_SIZE;
            c->remaining = 0;
            i++;
            break;
        case KEEL_H1_CK_TRAILER:
            if (ch == '\r') {
                c->state = KEEL_H1_CK_END_LF;
            } else if (ch == '\n' || ch == ' ' || ch == '\t') {
                return ck_bad(c, i, consumed); /* bare LF, obs-fold */
            } else {
                c->state = KEEL_H1_CK_TRAILER_IN;
                c->trailer_bytes++;
            }
            i++;
            break;
        case KEEL_H1_CK_TRAILER_IN:
            if (++c->trailer_bytes > KEEL_H1_TRAILER_BYTES_MAX)
                return ck_bad(c, i, consumed);
            if (ch == '\r')
                c->state = KEEL_H1_CK_TRAILER_LF;
            else if (!is_value_char(ch))
                return ck_bad(c, i, consumed);
            i++;
            break;
        case KEEL_H1_CK_TRAILER_LF:
            if (ch != '\n')
                return ck_bad(c, i, consumed);
            c->state = KEEL_H1_CK_TRAILER;
            i++;
            break;
        case KEEL_H1_CK_END_LF:
            if (ch != '\n')
                return ck_bad(c, i, consumed);
            c->state = KEEL_H1_CK_DONE;
            *consumed = i + 1;
            return KEEL_H1_CK_END;
        case KEEL_H1_CK_DONE:
            *consumed = i;
            return KEEL_H1_CK_END;
        case KEEL_H1_CK_ERROR:
            *consumed = i;
            return KEEL_H1_CK_BAD;
        }
    }
    *consumed = i;
    if (c->state == KEEL_H1_CK_DONE)
        return KEEL_H1_CK_END;
    return c->state == KEEL_H1_CK_ERROR ? KEEL_H1_CK_BAD : KEEL_H1_CK_MORE;
}
