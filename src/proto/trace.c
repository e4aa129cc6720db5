/* trace.c - trace context (W3C traceparent, B3), id generation, spans as Zipkin v2 JSON. */
#include "proto/trace.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char hexdig[] = "0123456789abcdef";

/* Lower-case hex only: W3C §3.2.2 and B3 both say lower-hex. */
static int hex_lower(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 2*n hex characters into n bytes; -1 on a bad character. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_lower(s[2 * i]), lo = hex_lower(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

int keel_trace_parse_traceparent(const char *s, size_t n, keel_trace_ctx_t *out)
{
    keel_trace_ctx_t c;
    memset(&c, 0, sizeof(c));
    uint8_t version, flags;
    if (n < KEEL_TRACEPARENT_LEN || unhex(s, &version, 1) != 0 || version == 0xff)
        return KEEL_EPROTO;
    if (version == 0 && n != KEEL_TRACEPARENT_LEN)
        return KEEL_EPROTO;
    if (n > KEEL_TRACEPARENT_LEN && s[KEEL_TRACEPARENT_LEN] != '-')
        return KEEL_EPROTO; /* a future version's extra fields follow a '-' */
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return KEEL_EPROTO;
    if (unhex(s + 3, c.trace_id, KEEL_TRACE_ID_BYTES) != 0 ||
        unhex(s + 36, c.span_id, KEEL_SPAN_ID_BYTES) != 0 || unhex(s + 53, &flags, 1) != 0)
        return KEEL_EPROTO;
    if (all_zero(c.trace_id, KEEL_TRACE_ID_BYTES) || all_zero(c.span_id, KEEL_SPAN_ID_BYTES))
        return KEEL_EPROTO;
    c.flags = flags;
    *out = c;
    return 0;
}

void keel_trace_format_traceparent(const keel_trace_ctx_t *c, char *out)
{
    memcpy(out, "00-", 3);
    tohex(c->trace_id, KEEL_TRACE_ID_BYTES, out + 3);
    out[35] = '-';
    tohex(c->span_id, KEEL_SPAN_ID_BYTES, out + 36);
    out[52] = '-';
    tohex(&c->flags, 1, out + 53);
    assert(strlen(out) == KEEL_TRACEPARENT_LEN);
}

/* A B3 trace id: 32 hex, or 16 hex taken as the low 64 bits of a 128-bit id. */
static int b3_trace_id(const char *s, size_t n, uint8_t *id)
{
    memset(id, 0, KEEL_TRACE_ID_BYTES);
    if (n == 32)
        return unhex(s, id, 16);
    if (n == 16)
        return unhex(s, id + 8, 8);
    return -1;
}

static int b3_span_id(const char *s, size_t n, uint8_t *id)
{
    return n == 16 ? unhex(s, id, 8) : -1;
}

static int str_is(keel_trace_str_t v, const char *lit)
{
    return v.len == strlen(lit) && memcmp(v.ptr, lit, v.len) == 0;
}

int keel_trace_parse_b3_multi(const keel_trace_b3_t *h, keel_trace_ctx_t *out)
{
    keel_trace_ctx_t c;
    memset(&c, 0, sizeof(c));
    if (h->trace_id.ptr == NULL || h->span_id.ptr == NULL)
        return KEEL_EPROTO;
    if (b3_trace_id(h->trace_id.ptr, h->trace_id.len, c.trace_id) != 0 ||
        b3_span_id(h->span_id.ptr, h->span_id.len, c.span_id) != 0)
        return KEEL_EPROTO;
    if (all_zero(c.trace_id, KEEL_TRACE_ID_BYTES) || all_zero(c.span_id, KEEL_SPAN_ID_BYTES))
        return KEEL_EPROTO;
    if (h->parent_span_id.ptr != NULL &&
        b3_span_id(h->parent_span_id.ptr, h->parent_span_id.len, c.parent_id) != 0)
        return KEEL_EPROTO;
    if (h->flags.ptr != NULL && str_is(h->flags, "1")) {
        c.flags = KEEL_TRACE_FLAG_SAMPLED; /* debug implies sampled */
    } else if (h->sampled.ptr != NULL) {
        if (str_is(h->sampled, "1") || str_is(h->sampled, "true"))
            c.flags = KEEL_TRACE_FLAG_SAMPLED;
        else if (!str_is(h->sampled, "0") && !str_is(h->sampled, "false"))
            return KEEL_EPROTO;
    } else {
        c.deferred = 1;
    }
    *out = c;
    return 0;
}

/* "1", "0" or "d" (debug); -1 otherwise. */
static int b3_sampling(char ch, keel_trace_ctx_t *c)
{
    if (ch != '0' && ch != '1' && ch != 'd')
        return -1;
    c->flags = ch == '0' ? 0 : KEEL_TRACE_FLAG_SAMPLED;
    c->deferred = 0;
    return 0;
}

int keel_trace_parse_b3_single(const char *s, size_t n, keel_trace_ctx_t *out)
{
    keel_trace_ctx_t c;
    memset(&c, 0, sizeof(c));
    if (n == 1) {
        if (b3_sampling(s[0], &c) != 0)
            return KEEL_EPROTO;
        *out = c;
        return KEEL_ENOTFOUND;
    }
    const char *dash = memchr(s, '-', n);
    if (dash == NULL || b3_trace_id(s, (size_t)(dash - s), c.trace_id) != 0)
        return KEEL_EPROTO;
    size_t i = (size_t)(dash - s) + 1;
    if (n - i < 16 || b3_span_id(s + i, 16, c.span_id) != 0)
        return KEEL_EPROTO;
    i += 16;
    c.deferred = 1;
    if (i < n) { /* -{sampled}[-{parent}] */
        if (n - i < 2 || s[i] != '-' || b3_sampling(s[i + 1], &c) != 0)
            return KEEL_EPROTO;
        i += 2;
        if (i < n && (n - i != 17 || s[i] != '-' || b3_span_id(s + i + 1, 16, c.parent_id) != 0))
            return KEEL_EPROTO;
    }
    if (all_zero(c.trace_id, KEEL_TRACE_ID_BYTES) || all_zero(c.span_id, KEEL_SPAN_ID_BYTES))
        return KEEL_EPROTO;
    *out = c;
    return 0;
}

void keel_trace_format_b3_single(const keel_trace_ctx_t *c, char *out)
{
    tohex(c->trace_id, KEEL_TRACE_ID_BYTES, out);
    out[32] = '-';
    tohex(c->span_id, KEEL_SPAN_ID_BYTES, out + 33);
    out[49] = '-';
    out[50] = (c->flags & KEEL_TRACE_FLAG_SAMPLED) ? '1' : '0';
    out[51] = '\0';
    if (keel_trace_has_parent(c)) {
        out[51] = '-';
        tohex(c->parent_id, KEEL_SPAN_ID_BYTES, out + 52);
    }
    assert(strlen(out) < KEEL_TRACE_B3_BYTES_MAX);
}

static void random_id(keel_rand_t *r, uint8_t *id, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = keel_rand_u64(r);
            for (size_t j = 0; j < 8 && i + j < n; j++)
                id[i + j] = (uint8_t)(v >> (8 * j));
        }
    } while (all_zero(id, n));
}

void keel_trace_new_root(keel_rand_t *r, int sampled, keel_trace_ctx_t *out)
{
    memset(out, 0, sizeof(*out));
    random_id(r, out->trace_id, KEEL_TRACE_ID_BYTES);
    random_id(r, out->span_id, KEEL_SPAN_ID_BYTES);
    out->flags = sampled ? KEEL_TRACE_FLAG_SAMPLED : 0;
}

void keel_trace_child(const keel_trace_ctx_t *parent, keel_rand_t *r, keel_trace_ctx_t *out)
{
    keel_trace_ctx_t c = *parent;
    memcpy(c.parent_id, parent->span_id, KEEL_SPAN_ID_BYTES);
    do
        random_id(r, c.span_id, KEEL_SPAN_ID_BYTES);
    while (memcmp(c.span_id, parent->span_id, KEEL_SPAN_ID_BYTES) == 0);
    *out = c;
}

int keel_trace_has_parent(const keel_trace_ctx_t *c)
{
    return !all_zero(c->parent_id, KEEL_SPAN_ID_BYTES);
}

void keel_trace_id_hex(const keel_trace_ctx_t *c, char *out)
{
    tohex(c->trace_id, KEEL_TRACE_ID_BYTES, out);
}

void keel_trace_span_hex(const uint8_t *span_id, char *out)
{
    tohex(span_id, KEEL_SPAN_ID_BYTES, out);
}

/* ---- spans --------------------------------------------------------------- */

/* Copies at most max-1 bytes of s and a NUL into the span's text; returns the offset. */
static uint16_t put_text_n(keel_span_t *s, const char *str, size_t n, size_t max)
{
    if (n > max - 1)
        n = max - 1;
    assert(s->text_used + n + 1 <= KEEL_SPAN_TEXT_BYTES_MAX);
    uint16_t off = s->text_used;
    memcpy(s->text + off, str, n);
    s->text[off + n] = '\0';
    s->text_used = (uint16_t)(off + n + 1);
    return off;
}

static uint16_t put_text(keel_span_t *s, const char *str, size_t max)
{
    return put_text_n(s, str, strlen(str), max);
}

void keel_span_init(keel_span_t *s, const keel_trace_ctx_t *ctx, keel_span_kind_t kind,
                    const char *service, const char *name, keel_us_t start_us)
{
    memset(s, 0, offsetof(keel_span_t, text));
    s->ctx = *ctx;
    s->kind = kind;
    s->start_us = start_us;
    s->duration_us = -1;
    s->status = KEEL_SPAN_OK;
    s->name_off = put_text(s, name ? name : "", KEEL_SPAN_NAME_BYTES_MAX);
    s->service_off = put_text(s, service ? service : "", KEEL_SPAN_NAME_BYTES_MAX);
}

int keel_span_set_attr(keel_span_t *s, const char *key, const char *value)
{
    size_t nk = strlen(key), nv = strlen(value);
    if (s->attrs_len >= KEEL_SPAN_ATTRS_MAX ||
        nk + nv + 2 > (size_t)KEEL_SPAN_TEXT_BYTES_MAX - s->text_used)
        return KEEL_EFULL;
    uint16_t k = put_text_n(s, key, nk, KEEL_SPAN_TEXT_BYTES_MAX);
    uint16_t v = put_text_n(s, value, nv, KEEL_SPAN_TEXT_BYTES_MAX);
    s->attrs[s->attrs_len].key_off = k;
    s->attrs[s->attrs_len].value_off = v;
    s->attrs_len++;
    return 0;
}

int keel_span_set_remote(keel_span_t *s, const char *service, const char *ip, uint16_t port)
{
    service = service ? service : "";
    size_t ns = strlen(service), ni = strlen(ip);
    if (ns > KEEL_SPAN_NAME_BYTES_MAX - 1)
        ns = KEEL_SPAN_NAME_BYTES_MAX - 1;
    if (ns + ni + 2 > (size_t)KEEL_SPAN_TEXT_BYTES_MAX - s->text_used)
        return KEEL_EFULL;
    s->remote_service_off = put_text(s, service, KEEL_SPAN_NAME_BYTES_MAX);
    s->remote_ip_off = put_text(s, ip, KEEL_SPAN_TEXT_BYTES_MAX);
    s->remote_port = port;
    s->has_remote = 1;
    return 0;
}

void keel_span_end(keel_span_t *s, keel_us_t end_us, keel_span_status_t status)
{
    s->duration_us = end_us >= s->start_us ? end_us - s->start_us : 0;
    s->status = status;
}

const char *keel_span_name(const keel_span_t *s)
{
    return s->text + s->name_off;
}

const char *keel_span_attr(const keel_span_t *s, const char *key)
{
    for (size_t i = 0; i < s->attrs_len; i++)
        if (strcmp(s->text + s->attrs[i].key_off, key) == 0)
            return s->text + s->attrs[i].value_off;
    return NULL;
}

/*
 * Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629 §4: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0 if it is not one.
 */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

int keel_trace_append_json_string(keel_buf_t *b, const char *str, size_t n)
{
    /* worst case every byte becomes \u00XX (6) or U+FFFD as \ufffd (6) */
    if (n > (SIZE_MAX - 2) / 6)
        return KEEL_ETOOBIG;
    int rc = keel_buf_reserve(b, 6 * n + 2);
    if (rc != 0)
        return rc;
    const uint8_t *s = (const uint8_t *)str;
    char *w = (char *)keel_buf_wptr(b);
    size_t o = 0;
    w[o++] = '"';
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (l == 0) {
                memcpy(w + o, "\\ufffd", 6), o += 6, i++;
            } else {
                memcpy(w + o, s + i, l), o += l, i += l;
            }
            continue;
        }
        i++;
        const char *esc = c == '"'    ? "\\\""
                          : c == '\\' ? "\\\\"
                          : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t"
                          : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f"
                                      : NULL;
        if (esc != NULL) {
            w[o++] = esc[0], w[o++] = esc[1];
        } else if (c < 0x20) {
            snprintf(w + o, 7, "\\u%04x", c);
            o += 6;
        } else {
            w[o++] = (char)c;
        }
    }
    w[o++] = '"';
    assert(o <= 6 * n + 2);
    keel_buf_commit(b, o);
    return 0;
}

static const char *kind_name(keel_span_kind_t k)
{
    switch (k) {
    case KEEL_SPAN_KIND_CLIENT:
        return "CLIENT";
    case KEEL_SPAN_KIND_SERVER:
        return "SERVER";
    case KEEL_SPAN_KIND_PRODUCER:
        return "PRODUCER";
    case KEEL_SPAN_KIND_CONSUMER:
        return "CONSUMER";
    case KEEL_SPAN_KIND_NONE:
        break;
    }
    return NULL;
}

/* ,"key":"value" with the value escaped (keys are ours: plain). No printf: this runs for every
 * span of a sampled request. */
static int json_key_str(keel_buf_t *b, const char *key, const char *val)
{
    int rc = keel_buf_append(b, ",\"", 2);
    rc |= keel_buf_append_str(b, key);
    rc |= keel_buf_append(b, "\":", 2);
    return rc ? rc : keel_trace_append_json_string(b, val, strlen(val));
}

/* lead (the text before the value, its opening quote included), the lower hex of n bytes, '"' */
static int json_hex(keel_buf_t *b, const char *lead, const uint8_t *p, size_t n)
{
    char hex[2 * KEEL_TRACE_ID_BYTES + 1];
    tohex(p, n, hex);
    hex[2 * n] = '"';
    int rc = keel_buf_append_str(b, lead);
    return rc | keel_buf_append(b, hex, 2 * n + 1);
}

static int zipkin_tags(const keel_span_t *s, keel_buf_t *b)
{
    int need_error = s->status != KEEL_SPAN_OK && keel_span_attr(s, "error") == NULL;
    if (s->attrs_len == 0 && !need_error)
        return 0;
    int rc = keel_buf_append_str(b, ",\"tags\":{");
    for (size_t i = 0; rc == 0 && i < s->attrs_len; i++) {
        const char *k = s->text + s->attrs[i].key_off, *v = s->text + s->attrs[i].value_off;
        if (i > 0)
            rc = keel_buf_append(b, ",", 1);
        rc = rc ? rc : keel_trace_append_json_string(b, k, strlen(k));
        rc = rc ? rc : keel_buf_append(b, ":", 1);
        rc = rc ? rc : keel_trace_append_json_string(b, v, strlen(v));
    }
    if (rc == 0 && need_error)
        rc =
            keel_buf_append_str(b, s->attrs_len > 0 ? ",\"error\":\"true\"" : "\"error\":\"true\"");
    return rc ? rc : keel_buf_append(b, "}", 1);
}

/* remoteEndpoint: {"serviceName", "ipv4" or "ipv6", "port"}, each only when known. */
static int zipkin_remote(const keel_span_t *s, keel_buf_t *b)
{
    if (!s->has_remote)
        return 0;
    const char *svc = s->text + s->remote_service_off, *ip = s->text + s->remote_ip_off;
    int rc = keel_buf_append_str(b, ",\"remoteEndpoint\":{");
    bool first = true;
    if (rc == 0 && svc[0] != '\0') {
        rc = keel_buf_append_str(b, "\"serviceName\":");
        rc = rc ? rc : keel_trace_append_json_string(b, svc, strlen(svc));
        first = false;
    }
    if (rc == 0 && ip[0] != '\0') {
        rc = keel_buf_append_str(b, first ? "" : ",");
        rc |= keel_buf_append_str(b, strchr(ip, ':') ? "\"ipv6\":" : "\"ipv4\":");
        rc = rc ? rc : keel_trace_append_json_string(b, ip, strlen(ip));
        first = false;
    }
    if (rc == 0 && s->remote_port > 0) {
        rc = keel_buf_append_str(b, first ? "\"port\":" : ",\"port\":");
        rc |= keel_buf_append_u64_dec(b, s->remote_port);
    }
    return rc ? rc : keel_buf_append(b, "}", 1);
}

static int zipkin_body(const keel_span_t *s, keel_buf_t *b)
{
    int rc = json_hex(b, "{\"traceId\":\"", s->ctx.trace_id, KEEL_TRACE_ID_BYTES);
    rc |= json_hex(b, ",\"id\":\"", s->ctx.span_id, KEEL_SPAN_ID_BYTES);
    if (rc == 0 && keel_trace_has_parent(&s->ctx))
        rc = json_hex(b, ",\"parentId\":\"", s->ctx.parent_id, KEEL_SPAN_ID_BYTES);
    if (rc == 0 && kind_name(s->kind) != NULL)
        rc = json_key_str(b, "kind", kind_name(s->kind));
    rc = rc ? rc : json_key_str(b, "name", keel_span_name(s));
    if (rc == 0) {
        rc = keel_buf_append_str(b, ",\"timestamp\":");
        rc |= keel_buf_append_i64_dec(b, s->start_us);
    }
    /* Zipkin: "durations of less than one are rounded up"; unknown ones are left out. */
    if (rc == 0 && s->duration_us >= 0) {
        rc = keel_buf_append_str(b, ",\"duration\":");
        rc |= keel_buf_append_i64_dec(b, s->duration_us > 0 ? s->duration_us : 1);
    }
    const char *svc = s->text + s->service_off;
    if (rc == 0 && svc[0] != '\0') {
        rc = keel_buf_append_str(b, ",\"localEndpoint\":{\"serviceName\":");
        rc = rc ? rc : keel_trace_append_json_string(b, svc, strlen(svc));
        rc = rc ? rc : keel_buf_append(b, "}", 1);
    }
    rc = rc ? rc : zipkin_remote(s, b);
    rc = rc ? rc : zipkin_tags(s, b);
    return rc ? rc : keel_buf_append(b, "}", 1);
}

int keel_span_to_zipkin_json(const keel_span_t *s, keel_buf_t *b)
{
    /* an offset from the read cursor survives the compaction a reserve may do */
    size_t mark = keel_buf_unread(b);
    int rc = zipkin_body(s, b);
    if (rc != 0)
        b->len = b->rpos + mark;
    return rc;
}
