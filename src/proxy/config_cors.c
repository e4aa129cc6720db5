/* config_cors.c - a route's `cors:` section: origins, methods and headers a browser may use
 * across origins, checked with the line of every error. */
#include "proxy/config_int.h"

#include <stdlib.h>
#include <string.h>

static bool is_lower_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

/* A serialized origin (the Fetch standard's): scheme "://" host [":" port], nothing after.
 * Browsers send scheme and host lower-case, so the value is stored lower-cased. */
static const char *origin_problem(const char *o)
{
    const char *sep = strstr(o, "://");
    if (sep == NULL || sep == o)
        return "is not scheme://host[:port]";
    for (const char *q = o; q < sep; q++)
        if (!is_lower_alnum(*q) && *q != '+' && *q != '-' && *q != '.')
            return "has a bad scheme";
    const char *h = sep + 3, *end = h;
    if (*h == '[') { /* an IPv6 literal */
        end = strchr(h, ']');
        if (end == NULL)
            return "has an unclosed '['";
        end++;
    } else {
        while (is_lower_alnum(*end) || *end == '-' || *end == '.' || *end == '_')
            end++;
    }
    if (end == h)
        return "has no host";
    if (*end == ':') {
        const char *d = end + 1;
        size_t n = strspn(d, "0123456789");
        if (n == 0 || n > 5 || d[n] != 0 || atoi(d) < 1 || atoi(d) > 65535)
            return "has a bad port";
        return NULL;
    }
    if (*end == '/')
        return "has a path (an origin ends after the host or port: no '/')";
    return *end == 0 ? NULL : "has a character not allowed in a host";
}

static void load_origin(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cors_t *co = arg;
    char *o = NULL;
    if (!keel__cfg_to_str(c, item, "allow_origins", true, &o))
        return;
    (void)i;
    if (strcmp(o, "*") == 0) {
        co->any_origin = true;
        free(o);
        return;
    }
    const char *why = strlen(o) >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX ? "is too long"
                      : strcmp(o, "null") == 0
                          ? "is what sandboxed and file: documents send (any page can): list "
                            "real origins"
                          : origin_problem(o);
    if (why != NULL) {
        ERR(c, item, "allow_origins: '%s' %s", o, why);
        free(o);
        return;
    }
    co->origins[co->origins_count++] = o;
}

static void co_origins(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "allow_origins", KEEL_PROXY_CORS_ORIGINS_MAX, load_origin, base);
}

static void load_method(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cors_t *co = arg;
    char *m = NULL;
    (void)i;
    if (!keel__cfg_to_str(c, item, "allow_methods", false, &m))
        return;
    bool ok = m[0] != 0 && strlen(m) < KEEL_PROXY_NAME_BYTES_MAX;
    for (const char *p = m; ok && *p; p++)
        ok = (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_';
    if (!ok)
        ERR(c, item, "allow_methods: '%s' is not an upper-case method name", m);
    else if (strcmp(m, "CONNECT") == 0 || strcmp(m, "TRACE") == 0 || strcmp(m, "TRACK") == 0)
        ERR(c, item, "allow_methods: browsers never send %s (a forbidden method)", m);
    if (!ok || strcmp(m, "CONNECT") == 0 || strcmp(m, "TRACE") == 0 || strcmp(m, "TRACK") == 0) {
        free(m);
        return;
    }
    co->methods[co->methods_count++] = m;
}

static void co_methods(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "allow_methods", KEEL_PROXY_METHODS_MAX, load_method, base);
}

static void load_allow_header(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cors_t *co = arg;
    (void)i;
    const char *s = scalar(item);
    if (s != NULL && strcmp(s, "*") == 0) {
        co->any_header = true;
        return;
    }
    char *h = NULL;
    if (keel__cfg_to_field_name(c, item, "allow_headers", &h))
        co->allow_headers[co->allow_headers_count++] = h;
    else
        free(h);
}

static void co_allow_headers(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "allow_headers", KEEL_PROXY_CORS_HEADERS_MAX, load_allow_header,
                        base);
}

static void load_expose_header(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cors_t *co = arg;
    (void)i;
    const char *s = scalar(item);
    if (s != NULL && strcmp(s, "*") == 0) {
        ERR(c, item, "expose_headers: list the names ('*' is not taken)");
        return;
    }
    char *h = NULL;
    if (keel__cfg_to_field_name(c, item, "expose_headers", &h))
        co->expose_headers[co->expose_headers_count++] = h;
    else
        free(h);
}

static void co_expose_headers(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "expose_headers", KEEL_PROXY_CORS_HEADERS_MAX, load_expose_header,
                        base);
}

static void co_max_age(ctx_t *c, yaml_node_t *v, void *base)
{
    uint64_t s;
    if (keel__cfg_to_u64(c, v, "max_age_s", 0, KEEL_PROXY_CORS_MAX_AGE_S_MAX, &s))
        ((keel_proxy_cors_t *)base)->max_age_s = (int64_t)s;
}

void keel__cfg_route_cors(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"allow_origins", F_FN, 0, 0, 0, co_origins},
        {"allow_methods", F_FN, 0, 0, 0, co_methods},
        {"allow_headers", F_FN, 0, 0, 0, co_allow_headers},
        {"expose_headers", F_FN, 0, 0, 0, co_expose_headers},
        {"max_age_s", F_FN, 0, 0, 0, co_max_age},
        {"allow_credentials", F_BOOL, offsetof(keel_proxy_cors_t, allow_credentials), 0, 0, NULL},
    };
    keel_proxy_route_t *r = base;
    if (r->cors != NULL) /* a repeated key: keel__cfg_load_fields refuses it before this */
        return;
    r->cors = calloc(1, sizeof(*r->cors));
    if (r->cors == NULL) {
        ERR(c, v, "out of memory");
        return;
    }
    keel_proxy_cors_t *co = r->cors;
    co->line = line_of(v);
    co->max_age_s = -1;
    keel__cfg_load_fields(c, v, f, N(f), co, "cors");
    if (co->origins_count == 0 && !co->any_origin)
        ERR(c, v, "cors: 'allow_origins' needs at least one origin (or \"*\")");
    if (co->any_origin && co->allow_credentials)
        ERR(c, v,
            "cors: allow_origins \"*\" with allow_credentials: true is refused (the Fetch "
            "standard forbids a wildcard origin on credentialed requests): list the origins");
}

void keel__cfg_cors_free(keel_proxy_cors_t *co)
{
    if (co == NULL)
        return;
    for (uint32_t k = 0; k < co->origins_count; k++)
        free(co->origins[k]);
    for (uint32_t k = 0; k < co->methods_count; k++)
        free(co->methods[k]);
    for (uint32_t k = 0; k < co->allow_headers_count; k++)
        free(co->allow_headers[k]);
    for (uint32_t k = 0; k < co->expose_headers_count; k++)
        free(co->expose_headers[k]);
    free(co);
}
