/* cors.c - a route's CORS policy applied to preflights and to the answers of other requests. */
#include "proxy/cors.h"

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

uint32_t keel_proxy_cors_origin(const keel_proxy_cors_t *co, const keel_proxy_req_view_t *req)
{
    const keel_proxy_header_view_t *o = field(req, "origin");
    if (o == NULL)
        return KEEL_PROXY_CORS_NONE;
    for (uint32_t i = 0; i < co->origins_count; i++)
        if (eq(o->value, o->value_len, co->origins[i]))
            return i + 1;
    return co->any_origin ? KEEL_PROXY_CORS_ANY : KEEL_PROXY_CORS_NONE;
}

static int allow_origin(const keel_proxy_cors_t *co, uint32_t match, keel_buf_t *out)
{
    int rc = keel_buf_append_str(out, "Access-Control-Allow-Origin: ");
    rc |= keel_buf_append_str(out, match == KEEL_PROXY_CORS_ANY ? "*" : co->origins[match - 1]);
    rc |= keel_buf_append(out, "\r\n", 2);
    if (co->allow_credentials)
        rc |= keel_buf_append_str(out, "Access-Control-Allow-Credentials: true\r\n");
    return rc;
}

static bool method_allowed(const keel_proxy_cors_t *co, const char *m, size_t n)
{
    if (eq(m, n, "GET") || eq(m, n, "HEAD") || eq(m, n, "POST"))
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

static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
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
    uint32_t match = keel_proxy_cors_origin(co, req);
    if (match == KEEL_PROXY_CORS_NONE)
        return KEEL_PROXY_CORS_BAD_ORIGIN;
    const char *m = NULL;
    size_t ml = 0;
    if (!keel_proxy_cors_is_preflight(req, &m, &ml) || !method_allowed(co, m, ml))
        return KEEL_PROXY_CORS_BAD_METHOD;
    bool any = false;
    if (!requested_headers(co, req, NULL, rc, &any))
        return KEEL_PROXY_CORS_BAD_HEADERS;
    *rc |= allow_origin(co, match, out);
    *rc |= keel_buf_append_str(out, "Access-Control-Allow-Methods: ");
    if (co->methods_count == 0)
        *rc |= keel_buf_append(out, m, ml);
    for (uint32_t i = 0; i < co->methods_count; i++)
        *rc |= keel_buf_printf(out, "%s%s", i > 0 ? ", " : "", co->methods[i]);
    *rc |= keel_buf_append(out, "\r\n", 2);
    any = false;
    requested_headers(co, req, out, rc, &any);
    if (any)
        *rc |= keel_buf_append(out, "\r\n", 2);
    if (co->max_age_s >= 0)
        *rc |= keel_buf_printf(out, "Access-Control-Max-Age: %lld\r\n", (long long)co->max_age_s);
    return KEEL_PROXY_CORS_ALLOWED;
}

int keel_proxy_cors_actual(const keel_proxy_cors_t *co, uint32_t match, keel_buf_t *out)
{
    int rc = keel_buf_append_str(out, "Vary: Origin\r\n");
    if (match == KEEL_PROXY_CORS_NONE)
        return rc;
    rc |= allow_origin(co, match, out);
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
    }
    return "?";
}
