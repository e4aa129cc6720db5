/* http.c - HTTP/1.1 message parser (on http-parser) and response/request writers. */
#include "proto/http.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

keel_http_limits_t keel_http_limits_default(void)
{
    keel_http_limits_t lim = {
        .url_bytes_max = 8192,
        .headers_bytes_max = 16384,
        .headers_count_max = 64,
        .body_bytes_max = 1024 * 1024,
    };
    return lim;
}

int keel_http_limits_validate(const keel_http_limits_t *lim, keel_errmsg_t *msg)
{
    if (lim->url_bytes_max < 16 || lim->url_bytes_max > lim->headers_bytes_max)
        return keel_errf(msg, KEEL_EINVAL, "url_bytes_max %zu not in [16, headers_bytes_max]",
                         lim->url_bytes_max);
    if (lim->headers_bytes_max > KEEL_HTTP_HEADERS_BYTES_CEILING)
        return keel_errf(msg, KEEL_EINVAL, "headers_bytes_max %zu over %u", lim->headers_bytes_max,
                         KEEL_HTTP_HEADERS_BYTES_CEILING);
    if (lim->headers_count_max < 1 || lim->headers_count_max > KEEL_HTTP_HEADERS_COUNT_CEILING)
        return keel_errf(msg, KEEL_EINVAL, "headers_count_max %zu not in [1, %d]",
                         lim->headers_count_max, KEEL_HTTP_HEADERS_COUNT_CEILING);
    if (lim->body_bytes_max > ((size_t)1 << 34))
        return keel_errf(msg, KEEL_EINVAL, "body_bytes_max %zu over 16 GiB", lim->body_bytes_max);
    return 0;
}

void keel_http_msg_init(keel_http_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    keel_buf_init(&m->head, 0);
    keel_buf_init(&m->body_buf, 0);
    m->content_length = UINT64_MAX;
    m->url = m->path = m->query = "";
    m->body = (const uint8_t *)"";
}

void keel_http_msg_free(keel_http_msg_t *m)
{
    keel_buf_free(&m->head);
    keel_buf_free(&m->body_buf);
    free(m->headers);
    memset(m, 0, sizeof(*m));
}

const char *keel_http_msg_header(const keel_http_msg_t *m, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->headers_count; i++) {
        const keel_http_header_t *h = &m->headers[i];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0) {
            if (len != NULL)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static keel_http_parser_t *P(http_parser *hp)
{
    return (keel_http_parser_t *)hp->data;
}

/* Records why the message failed; returning non-zero from a callback stops http-parser. */
static int fail(keel_http_parser_t *p, int status, int code, const char *text)
{
    if (p->error_status == 0) {
        p->error_status = status;
        p->error_code = code;
        p->error_text = text;
    }
    return -1;
}

static int head_append(keel_http_parser_t *p, const void *at, size_t n)
{
    int rc = keel_buf_append(&p->msg->head, at, n);
    if (rc == KEEL_ETOOBIG)
        return fail(p, 431, KEEL_ETOOBIG, "header section too large");
    if (rc != 0)
        return fail(p, 503, KEEL_ENOMEM, "out of memory");
    return 0;
}

static int on_message_begin(http_parser *hp)
{
    keel_http_parser_t *p = P(hp);
    keel_http_msg_t *m = p->msg;
    if (m->headers == NULL || m->headers_cap < p->lim.headers_count_max) {
        free(m->headers);
        m->headers = calloc(p->lim.headers_count_max, sizeof(*m->headers));
        m->headers_cap = m->headers ? p->lim.headers_count_max : 0;
        if (m->headers == NULL)
            return fail(p, 503, KEEL_ENOMEM, "out of memory");
    }
    keel_buf_reset(&m->head);
    keel_buf_reset(&m->body_buf);
    m->head.bytes_max = p->lim.headers_bytes_max;
    m->body_buf.bytes_max = p->lim.body_bytes_max ? p->lim.body_bytes_max : 1;
    m->headers_count = 0;
    m->url = m->path = m->query = "";
    m->url_len = m->path_len = m->query_len = 0;
    m->url_off = 0;
    m->body = (const uint8_t *)"";
    m->body_len = 0;
    m->content_length = UINT64_MAX;
    m->keep_alive = m->expect_continue = m->chunked = m->head_complete = false;
    m->status = 0;
    p->last_cb = 0;
    p->in_message = true;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t n)
{
    keel_http_parser_t *p = P(hp);
    if (p->msg->head.len + n > p->lim.url_bytes_max)
        return fail(p, 414, KEEL_ETOOBIG, "request target too long");
    return head_append(p, at, n);
}

/* Ends the URL (first call) or the previous header value with a NUL. */
static int end_field(keel_http_parser_t *p)
{
    if (p->last_cb == 0 || p->last_cb == 2)
        return head_append(p, "", 1);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t n)
{
    keel_http_parser_t *p = P(hp);
    keel_http_msg_t *m = p->msg;
    /* Trailer fields after a chunked body are dropped: appending them would move the head
     * storage under the pointers handed out at headers-complete. */
    if (p->last_cb == 3)
        return 0;
    if (p->last_cb != 1) {
        if (end_field(p) != 0)
            return -1;
        if (m->headers_count >= p->lim.headers_count_max)
            return fail(p, 431, KEEL_ETOOBIG, "too many header fields");
        keel_http_header_t *h = &m->headers[m->headers_count++];
        h->name_off = (uint32_t)m->head.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        p->last_cb = 1;
    }
    m->headers[m->headers_count - 1].name_len += n;
    return head_append(p, at, n);
}

static int on_header_value(http_parser *hp, const char *at, size_t n)
{
    keel_http_parser_t *p = P(hp);
    keel_http_msg_t *m = p->msg;
    if (p->last_cb == 3)
        return 0; /* trailer */
    assert(m->headers_count > 0);
    keel_http_header_t *h = &m->headers[m->headers_count - 1];
    if (p->last_cb == 1) {
        if (head_append(p, "", 1) != 0)
            return -1;
        h->value_off = (uint32_t)m->head.len;
        p->last_cb = 2;
    }
    h->value_len += n;
    return head_append(p, at, n);
}

/* Turns parse-time offsets into pointers once the head storage stops moving. */
static void fix_pointers(keel_http_msg_t *m)
{
    const char *base = (const char *)m->head.data;
    m->url = base + m->url_off;
    m->url_len = strlen(m->url);
    for (size_t i = 0; i < m->headers_count; i++) {
        keel_http_header_t *h = &m->headers[i];
        h->name = base + h->name_off;
        /* A header with an empty value gets no value callback: point it at its name's NUL. */
        if (h->value_off == 0) {
            h->value_off = h->name_off + (uint32_t)h->name_len;
            h->value_len = 0;
        }
        h->value = base + h->value_off;
        /* RFC 9110 §5.5: the field value excludes trailing whitespace. */
        char *v = (char *)m->head.data + h->value_off;
        while (h->value_len > 0 && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
            v[--h->value_len] = '\0';
    }
    const char *q = memchr(m->url, '?', m->url_len);
    m->path = m->url;
    m->path_len = q ? (size_t)(q - m->url) : m->url_len;
    m->query = q ? q + 1 : "";
    m->query_len = q ? m->url_len - m->path_len - 1 : 0;
}

static int on_headers_complete(http_parser *hp)
{
    keel_http_parser_t *p = P(hp);
    keel_http_msg_t *m = p->msg;
    if (p->last_cb == 1 && head_append(p, "", 1) != 0) /* field with no value callback */
        return -1;
    if (p->last_cb != 1 && end_field(p) != 0)
        return -1;
    p->last_cb = 3;
    fix_pointers(m);
    m->version_major = hp->http_major;
    m->version_minor = hp->http_minor;
    m->method = hp->method;
    m->status = hp->status_code;
    m->chunked = (hp->flags & F_CHUNKED) != 0;
    m->keep_alive = http_should_keep_alive(hp) != 0;
    m->head_complete = true;
    if (hp->flags & F_CONTENTLENGTH) {
        m->content_length = hp->content_length;
        if (hp->content_length > p->lim.body_bytes_max && !p->skip_body)
            return fail(p, 413, KEEL_ETOOBIG, "body too large");
    }
    size_t elen;
    const char *e = keel_http_msg_header(m, "expect", &elen);
    if (e != NULL && elen == 12 && strncasecmp(e, "100-continue", 12) == 0)
        m->expect_continue = true;
    if (p->kind == KEEL_HTTP_RESPONSE && p->skip_body)
        return 1;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t n)
{
    keel_http_parser_t *p = P(hp);
    int rc = keel_buf_append(&p->msg->body_buf, at, n);
    if (rc == KEEL_ETOOBIG)
        return fail(p, 413, KEEL_ETOOBIG, "body too large");
    if (rc != 0)
        return fail(p, 503, KEEL_ENOMEM, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    keel_http_parser_t *p = P(hp);
    keel_http_msg_t *m = p->msg;
    p->in_message = false;
    /* Interim 1xx responses (except 101) precede the real one (RFC 9110 §15.2). */
    if (p->kind == KEEL_HTTP_RESPONSE && m->status >= 100 && m->status < 200 && m->status != 101)
        return 0;
    m->body = m->body_buf.len ? m->body_buf.data : (const uint8_t *)"";
    m->body_len = m->body_buf.len;
    m->keep_alive = http_should_keep_alive(hp) != 0 && !hp->upgrade;
    p->event = KEEL_HTTP_MESSAGE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void keel_http_parser_init(keel_http_parser_t *p, keel_http_kind_t kind,
                           const keel_http_limits_t *lim)
{
    assert(keel_http_limits_validate(lim, NULL) == 0);
    memset(p, 0, sizeof(*p));
    http_parser_init(&p->hp, kind == KEEL_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    p->hp.data = p;
    p->lim = *lim;
    p->kind = kind;
}

static int map_error(keel_http_parser_t *p)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (p->error_status == 0) {
        switch (e) {
        case HPE_HEADER_OVERFLOW:
            fail(p, 431, KEEL_ETOOBIG, "header section too large");
            break;
        case HPE_INVALID_TRANSFER_ENCODING:
            fail(p, 501, KEEL_EPROTO, "unsupported transfer coding");
            break;
        default:
            fail(p, 400, KEEL_EPROTO, http_errno_description(e));
            break;
        }
    }
    p->in_message = false;
    return KEEL_HTTP_ERROR;
}

int keel_http_parser_feed(keel_http_parser_t *p, keel_http_msg_t *m, const uint8_t *data, size_t n,
                          size_t *consumed)
{
    *consumed = 0;
    if (p->error_status != 0)
        return KEEL_HTTP_ERROR;
    if (n == 0) /* http-parser reads a zero-length buffer as end of input */
        return KEEL_HTTP_NEED_MORE;
    if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
        http_parser_pause(&p->hp, 0);
    p->msg = m;
    p->event = KEEL_HTTP_NEED_MORE;
    size_t used = http_parser_execute(&p->hp, &settings, (const char *)data, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    assert(used <= n);
    *consumed = used;
    if (e == HPE_PAUSED) {
        assert(p->event == KEEL_HTTP_MESSAGE);
        return KEEL_HTTP_MESSAGE;
    }
    if (e != HPE_OK)
        return map_error(p);
    if (used != n) /* http-parser stops early only after an upgrade */
        return fail(p, 400, KEEL_EPROTO, "protocol upgrade not supported"), map_error(p);
    return KEEL_HTTP_NEED_MORE;
}

int keel_http_parser_finish(keel_http_parser_t *p, keel_http_msg_t *m)
{
    if (p->error_status != 0)
        return KEEL_HTTP_ERROR;
    if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
        http_parser_pause(&p->hp, 0);
    bool was_mid = p->in_message;
    p->msg = m;
    p->event = KEEL_HTTP_NEED_MORE;
    http_parser_execute(&p->hp, &settings, NULL, 0);
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (p->event == KEEL_HTTP_MESSAGE)
        return KEEL_HTTP_MESSAGE;
    if (e != HPE_OK && e != HPE_PAUSED)
        return map_error(p);
    if (was_mid) {
        fail(p, 400, KEEL_EPROTO, "connection closed mid-message");
        return map_error(p);
    }
    return KEEL_HTTP_NEED_MORE;
}

/* ---- writing -------------------------------------------------------------------------------- */

const char *keel_http_status_text(int status)
{
    if (status < 100 || status > 599)
        return "Unknown";
    const char *s = http_status_str((enum http_status)status);
    return s && s[0] != '<' ? s : "Unknown";
}

/* Appends without checks after a reserve() that covered it. */
static inline char *put(char *w, const void *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

static char *put_u64(char *w, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return put(w, tmp + i, sizeof(tmp) - i);
}

static size_t headers_bytes(const keel_http_header_t *headers, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += headers[i].name_len + headers[i].value_len + 4;
    return total;
}

static bool name_is(const keel_http_header_t *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

bool keel_http_header_is_managed(const keel_http_header_t *h)
{
    switch (h->name_len) {
    case 4:
        return name_is(h, "host", 4) || name_is(h, "date", 4);
    case 6:
        return name_is(h, "server", 6);
    case 10:
        return name_is(h, "connection", 10) || name_is(h, "keep-alive", 10);
    case 14:
        return name_is(h, "content-length", 14);
    case 17:
        return name_is(h, "transfer-encoding", 17);
    default:
        return false;
    }
}

/* Caller headers, minus the ones the writer owns (a second Content-Length would let two
 * parsers disagree on where the message ends: request smuggling, RFC 9112 §11.2). */
static char *put_headers(char *w, const keel_http_header_t *headers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (keel_http_header_is_managed(&headers[i]))
            continue;
        w = put(w, headers[i].name, headers[i].name_len);
        w = put(w, ": ", 2);
        w = put(w, headers[i].value, headers[i].value_len);
        w = put(w, "\r\n", 2);
    }
    return w;
}

#define LIT(w, s) put((w), (s), sizeof(s) - 1)

int keel_http_write_response(keel_buf_t *out, int status, const keel_http_header_t *headers,
                             size_t headers_count, const void *body, size_t body_len,
                             unsigned flags, const char *date_line)
{
    assert(status >= 100 && status <= 999);
    const char *text = keel_http_status_text(status);
    size_t text_len = strlen(text);
    size_t date_len = date_line ? strlen(date_line) : 0;
    bool send_body = (flags & KEEL_HTTP_W_HEAD) == 0;
    size_t need = 128 + text_len + date_len + headers_bytes(headers, headers_count) +
                  (send_body ? body_len : 0);
    int rc = keel_buf_reserve(out, need);
    if (rc != 0)
        return rc;
    char *start = (char *)keel_buf_wptr(out), *w = start;
    char code[3] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10)};
    w = LIT(w, "HTTP/1.1 ");
    w = put(w, code, 3);
    w = put(w, " ", 1);
    w = put(w, text, text_len);
    w = LIT(w, "\r\nServer: keel\r\n");
    if (date_line)
        w = put(w, date_line, date_len);
    if (flags & KEEL_HTTP_W_CLOSE)
        w = LIT(w, "Connection: close\r\n");
    else if (flags & KEEL_HTTP_W_KEEPALIVE)
        w = LIT(w, "Connection: keep-alive\r\n");
    w = put_headers(w, headers, headers_count);
    w = LIT(w, "Content-Length: ");
    w = put_u64(w, body_len);
    w = LIT(w, "\r\n\r\n");
    if (send_body && body_len > 0)
        w = put(w, body, body_len);
    assert((size_t)(w - start) <= need);
    keel_buf_commit(out, (size_t)(w - start));
    return 0;
}

int keel_http_write_continue(keel_buf_t *out)
{
    return keel_buf_append_str(out, "HTTP/1.1 100 Continue\r\n\r\n");
}

int keel_http_write_request(keel_buf_t *out, int method, const char *host, const char *target,
                            const keel_http_header_t *headers, size_t headers_count,
                            const void *body, size_t body_len, unsigned flags)
{
    const char *m = http_method_str((enum http_method)method);
    size_t m_len = strlen(m), host_len = strlen(host), target_len = strlen(target);
    size_t need =
        80 + m_len + host_len + target_len + headers_bytes(headers, headers_count) + body_len;
    int rc = keel_buf_reserve(out, need);
    if (rc != 0)
        return rc;
    char *start = (char *)keel_buf_wptr(out), *w = start;
    w = put(w, m, m_len);
    w = put(w, " ", 1);
    w = put(w, target, target_len);
    w = LIT(w, " HTTP/1.1\r\nHost: ");
    w = put(w, host, host_len);
    w = LIT(w, "\r\n");
    if (flags & KEEL_HTTP_W_CLOSE)
        w = LIT(w, "Connection: close\r\n");
    w = put_headers(w, headers, headers_count);
    if (body_len > 0 || method == HTTP_POST || method == HTTP_PUT || method == HTTP_PATCH) {
        w = LIT(w, "Content-Length: ");
        w = put_u64(w, body_len);
        w = LIT(w, "\r\n");
    }
    w = LIT(w, "\r\n");
    if (body_len > 0)
        w = put(w, body, body_len);
    assert((size_t)(w - start) <= need);
    keel_buf_commit(out, (size_t)(w - start));
    return 0;
}
