/* cors.c - a route's CORS policy applied to preflights and to the answers of other requests. */
#include "proxy/cors.h"
#include "proxy/h1.h"

#include <assert.h>
#include <regex.h>
#include <string.h>
#include <strings.h>

/* The first field called name (lower-case), or NULL. */
static const keel_proxy_header_view_t *field(const keel_proxy_req_view_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->headers_count; i++)
        if (req->headers[i].name_len == n && strncasecmp(req->headers[i].name, name, n) == 0)
            return &req->headers[i];
    return NULL;
}

static bool eq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(p, s, n) == 0;
}

bool keel_proxy_cors_is_preflight(const keel_proxy_req_view_t *req, const char **method,
                                  size_t *method_len)
{
    if (!eq(req->method, req->method_len, "OPTIONS") || field(req, "origin") == NULL)
        return false;
    const keel_proxy_header_view_t *m = field(req, "access-control-request-method");
    if (m == NULL || m->value_len == 0)
        return false;
    if (method != NULL) {
        *method = m->value;
        *method_len = m->value_len;
    }
    return true;
}

/* ---- origin patterns ----------------------------------------------------------------------- */

/*
 * A pattern (Envoy's allow_origin_string_match) allows many origins, so its answer cannot name
 * one from the config: Access-Control-Allow-Origin echoes the request's Origin, which a browser
 * compares byte for byte with its own. What is echoed comes from the client, so it is judged
 * first as a serialized origin (the Fetch standard's, RFC 6454 §6.1): http or https, a host of
 * DNS labels or an IPv6 literal, an optional port, nothing else (no path, space, control
 * character or CR/LF that could bend the answer's head), under
 * KEEL_PROXY_CORS_ORIGIN_BYTES_MAX bytes, which bounds the copy the caller keeps. Patterns
 * compare scheme and host in any case (RFC 3986 §3.1, §3.2.2); the echo keeps the bytes sent.
 */

#define DNS_LABEL_BYTES_MAX 63u /* RFC 1035 §2.3.4 */

/* A serialized origin cut into its parts (spans into the Origin field's value). */
typedef struct origin_parts {
    const char *scheme, *host, *port; /* port: "" or ":digits" */
    size_t scheme_len, host_len, port_len;
} origin_parts_t;

static bool is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static bool is_hex_or(char ch, char other1, char other2)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
           ch == other1 || ch == other2;
}

/* Bytes of s[0..n) that make a host: an IPv6 literal in brackets, or DNS labels; 0: none. */
static size_t host_span(const char *s, size_t n)
{
    size_t i = 0;
    if (n > 0 && s[0] == '[') {
        for (i = 1; i < n && is_hex_or(s[i], ':', '.'); i++)
            ;
        return i >= 3 && i < n && s[i] == ']' ? i + 1 : 0;
    }
    for (;;) {
        size_t label = 0;
        while (i < n && (is_alnum(s[i]) || s[i] == '-' || s[i] == '_'))
            i++, label++;
        if (label == 0 || label > DNS_LABEL_BYTES_MAX)
            return 0; /* an empty label: a leading, doubled or trailing dot */
        if (i == n || s[i] != '.')
            return i;
        i++;
    }
}

static bool parse_origin(const char *s, size_t n, origin_parts_t *o)
{
    if (n == 0 || n >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX)
        return false;
    const char *sep = memchr(s, ':', n);
    if (sep == NULL || (size_t)(s + n - sep) < 3 || memcmp(sep, "://", 3) != 0)
        return false;
    o->scheme = s;
    o->scheme_len = (size_t)(sep - s);
    if (!(o->scheme_len == 4 && strncasecmp(s, "http", 4) == 0) &&
        !(o->scheme_len == 5 && strncasecmp(s, "https", 5) == 0))
        return false;
    o->host = sep + 3;
    size_t rest = n - o->scheme_len - 3;
    o->host_len = host_span(o->host, rest);
    if (o->host_len == 0)
        return false;
    o->port = o->host + o->host_len;
    o->port_len = rest - o->host_len;
    if (o->port_len == 0)
        return true;
    if (o->port[0] != ':' || o->port_len < 2 || o->port_len > 6)
        return false; /* a path, a query, spaces, anything else after the host */
    uint32_t port = 0;
    for (size_t i = 1; i < o->port_len; i++) {
        if (o->port[i] < '0' || o->port[i] > '9')
            return false;
        port = port * 10 + (uint32_t)(o->port[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

bool keel_proxy_cors_origin_valid(const char *s, size_t n)
{
    origin_parts_t o;
    return parse_origin(s, n, &o);
}

static bool ends_with_nocase(const char *s, size_t n, const char *suffix, size_t sn)
{
    return n >= sn && strncasecmp(s + n - sn, suffix, sn) == 0;
}

static bool pattern_ok(const keel_proxy_cors_pattern_t *pt, const char *s, size_t n,
                       const origin_parts_t *o)
{
    size_t tn = strlen(pt->text);
    switch (pt->kind) {
    case KEEL_PROXY_CORS_SUBDOMAIN: {
        const char *port = pt->text + pt->suffix_off + pt->suffix_len;
        /* host ends with ".host" and the valid host has a non-empty label before it */
        return o->scheme_len == pt->scheme_len &&
               strncasecmp(o->scheme, pt->text, o->scheme_len) == 0 &&
               o->host_len > pt->suffix_len &&
               ends_with_nocase(o->host, o->host_len, pt->text + pt->suffix_off, pt->suffix_len) &&
               o->port_len == strlen(port) && memcmp(o->port, port, o->port_len) == 0;
    }
    case KEEL_PROXY_CORS_PREFIX:
        return n >= tn && strncasecmp(s, pt->text, tn) == 0;
    case KEEL_PROXY_CORS_SUFFIX:
        return ends_with_nocase(s, n, pt->text, tn);
    case KEEL_PROXY_CORS_REGEX: {
        char z[KEEL_PROXY_CORS_ORIGIN_BYTES_MAX]; /* regexec wants a C string */
        memcpy(z, s, n);                          /* n < the bound: parse_origin checked */
        z[n] = 0;
        /* the whole origin: POSIX gives the longest match at the leftmost start */
        regmatch_t whole;
        return regexec(&pt->regex, z, 1, &whole, 0) == 0 && whole.rm_so == 0 &&
               (size_t)whole.rm_eo == n;
    }
    }
    return false;
}

uint32_t keel_proxy_cors_origin(const keel_proxy_cors_t *co, const keel_proxy_req_view_t *req,
                                keel_proxy_cors_match_t *m)
{
    m->match = KEEL_PROXY_CORS_NONE;
    m->echo[0] = 0;
    const keel_proxy_header_view_t *o = field(req, "origin");
    if (o == NULL)
        return m->match;
    for (uint32_t i = 0; i < co->origins_count; i++)
        if (eq(o->value, o->value_len, co->origins[i]))
            return m->match = i + 1;
    origin_parts_t parts;
    if (co->patterns_count > 0 && parse_origin(o->value, o->value_len, &parts)) {
        for (uint32_t i = 0; i < co->patterns_count; i++) {
            if (!pattern_ok(&co->patterns[i], o->value, o->value_len, &parts))
                continue;
            assert(o->value_len < sizeof(m->echo)); /* parse_origin bounds it */
            memcpy(m->echo, o->value, o->value_len);
            m->echo[o->value_len] = 0;
            return m->match = KEEL_PROXY_CORS_ECHO;
        }
    }
    if (co->any_origin)
        m->match = KEEL_PROXY_CORS_ANY;
    return m->match;
}

/* ---- answers ------------------------------------------------------------------------------- */

static int allow_origin(const keel_proxy_cors_t *co, const keel_proxy_cors_match_t *m,
                        keel_buf_t *out)
{
    assert(m->match != KEEL_PROXY_CORS_NONE);
    const char *v = m->match == KEEL_PROXY_CORS_ANY    ? "*"
                    : m->match == KEEL_PROXY_CORS_ECHO ? m->echo
                                                       : co->origins[m->match - 1];
    int rc = keel_buf_append_str(out, "Access-Control-Allow-Origin: ");
    rc |= keel_buf_append_str(out, v);
    rc |= keel_buf_append(out, "\r\n", 2);
    if (co->allow_credentials)
        rc |= keel_buf_append_str(out, "Access-Control-Allow-Credentials: true\r\n");
    return rc;
}

static bool is_tchar(char ch)
{
    return keel_h1_is_tchar((unsigned char)ch);
}

static bool method_allowed(const keel_proxy_cors_t *co, const char *m, size_t n)
{
    for (size_t i = 0; i < n; i++) /* echoed in the answer: a token, nothing else */
        if (!is_tchar(m[i]))
            return false;
    if (co->any_method || eq(m, n, "GET") || eq(m, n, "HEAD") || eq(m, n, "POST"))
        return true;
    for (uint32_t i = 0; i < co->methods_count; i++)
        if (eq(m, n, co->methods[i]))
            return true;
    return false;
}

static bool header_allowed(const keel_proxy_cors_t *co, const char *h, size_t n)
{
    if (co->any_header)
        return true;
    for (uint32_t i = 0; i < co->allow_headers_count; i++)
        if (strlen(co->allow_headers[i]) == n && strncasecmp(h, co->allow_headers[i], n) == 0)
            return true;
    return false;
}

/* Walks every Access-Control-Request-Headers field's comma-separated names: false when one is
 * not a token or not allowed; with out, appends each (lower-cased) after ", ". */
static bool requested_headers(const keel_proxy_cors_t *co, const keel_proxy_req_view_t *req,
                              keel_buf_t *out, int *rc, bool *any)
{
    static const char name[] = "access-control-request-headers";
    for (size_t i = 0; i < req->headers_count; i++) {
        const keel_proxy_header_view_t *f = &req->headers[i];
        if (f->name_len != sizeof(name) - 1 || strncasecmp(f->name, name, f->name_len) != 0)
            continue;
        const char *p = f->value, *end = f->value + f->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e == s)
                continue;
            for (const char *q = s; q < e; q++)
                if (!is_tchar(*q))
                    return false;
            if (!header_allowed(co, s, (size_t)(e - s)))
                return false;
            if (out != NULL) {
                *rc |= keel_buf_append_str(out, *any ? ", " : "Access-Control-Allow-Headers: ");
                for (const char *q = s; q < e; q++) {
                    char lc = (*q >= 'A' && *q <= 'Z') ? (char)(*q + 32) : *q;
                    *rc |= keel_buf_append(out, &lc, 1);
                }
            }
            *any = true;
        }
    }
    return true;
}

keel_proxy_cors_verdict_t keel_proxy_cors_preflight(const keel_proxy_cors_t *co,
                                                    const keel_proxy_req_view_t *req,
                                                    keel_buf_t *out, int *rc)
{
    *rc = keel_buf_append_str(out, "Vary: Origin\r\n");
    keel_proxy_cors_match_t match;
    if (keel_proxy_cors_origin(co, req, &match) == KEEL_PROXY_CORS_NONE)
        return KEEL_PROXY_CORS_BAD_ORIGIN;
    const char *m = NULL;
    size_t ml = 0;
    if (!keel_proxy_cors_is_preflight(req, &m, &ml) || !method_allowed(co, m, ml))
        return KEEL_PROXY_CORS_BAD_METHOD;
    bool any = false;
    if (!requested_headers(co, req, NULL, rc, &any))
        return KEEL_PROXY_CORS_BAD_HEADERS;
    *rc |= allow_origin(co, &match, out);
    *rc |= keel_buf_append_str(out, "Access-Control-Allow-Methods: ");
    /* "*" listed: the method asked, not "*" (a credentialed request takes "*" as a name) */
    if (co->methods_count == 0 || co->any_method)
        *rc |= keel_buf_append(out, m, ml);
    for (uint32_t i = 0; !co->any_method && i < co->methods_count; i++)
        *rc |= keel_buf_printf(out, "%s%s", i > 0 ? ", " : "", co->methods[i]);
    *rc |= keel_buf_append(out, "\r\n", 2);
    any = false;
    requested_headers(co, req, out, rc, &any);
    if (any)
        *rc |= keel_buf_append(out, "\r\n", 2);
    if (co->max_age_s >= 0)
        *rc |= keel_buf_printf(out, "Access-Control-Max-Age: %lld\r\n", (long long)co->max_age_s);
    /* Private Network Access: the page's browser asks leave to reach a more private address
     * space than its own; only "true" asks (the draft sends nothing else) */
    const keel_proxy_header_view_t *pn = field(req, "access-control-request-private-network");
    if (pn == NULL || pn->value_len != 4 || strncasecmp(pn->value, "true", 4) != 0)
        return KEEL_PROXY_CORS_ALLOWED;
    if (!co->allow_private_network)
        return KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED;
    *rc |= keel_buf_append_str(out, "Access-Control-Allow-Private-Network: true\r\n");
    return KEEL_PROXY_CORS_ALLOWED;
}

bool keel_proxy_cors_verdict_answered(keel_proxy_cors_verdict_t v)
{
    return v == KEEL_PROXY_CORS_ALLOWED || v == KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED;
}

int keel_proxy_cors_actual(const keel_proxy_cors_t *co, const keel_proxy_cors_match_t *m,
                           keel_buf_t *out)
{
    int rc = keel_buf_append_str(out, "Vary: Origin\r\n");
    if (m->match == KEEL_PROXY_CORS_NONE)
        return rc;
    rc |= allow_origin(co, m, out);
    for (uint32_t i = 0; i < co->expose_headers_count; i++)
        rc |= keel_buf_printf(
            out, "%s%s", i > 0 ? ", " : "Access-Control-Expose-Headers: ", co->expose_headers[i]);
    if (co->expose_headers_count > 0)
        rc |= keel_buf_append(out, "\r\n", 2);
    return rc;
}

const char *keel_proxy_cors_verdict_name(keel_proxy_cors_verdict_t v)
{
    switch (v) {
    case KEEL_PROXY_CORS_ALLOWED:
        return "preflight";
    case KEEL_PROXY_CORS_BAD_ORIGIN:
        return "refused-origin";
    case KEEL_PROXY_CORS_BAD_METHOD:
        return "refused-method";
    case KEEL_PROXY_CORS_BAD_HEADERS:
        return "refused-headers";
    case KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED:
        return "private-network-not-allowed";
    }
    return "?";
}
