/* config_cors.c - a route's `cors:` section and the top level's (the default of routes without
 * one): origins (and origin patterns), methods and headers a browser may use across origins,
 * checked with the line of every error. */
#include "proxy/config_int.h"
#include "proxy/cors.h"

#include <assert.h>
#include <regex.h>
#include <stdio.h>
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

/* Why o (lower-cased) cannot be an allowed origin, or NULL. */
static const char *origin_why(const char *o)
{
    if (strlen(o) >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX)
        return "is too long";
    if (strcmp(o, "null") == 0)
        return "is what sandboxed and file: documents send (any page can): list real origins";
    return origin_problem(o);
}

/* Adds origin o (malloc'd; taken) to co, or names what is wrong with it. */
static void add_origin(ctx_t *c, yaml_node_t *item, keel_proxy_cors_t *co, char *o)
{
    const char *why = origin_why(o);
    if (why != NULL) {
        ERR(c, item, "allow_origins: '%s' %s", o, why);
        free(o);
        return;
    }
    assert(co->origins_count + co->patterns_count < KEEL_PROXY_CORS_ORIGINS_MAX);
    co->origins[co->origins_count++] = o;
}

static void add_pattern(keel_proxy_cors_t *co, const keel_proxy_cors_pattern_t *pt)
{
    assert(co->origins_count + co->patterns_count < KEEL_PROXY_CORS_ORIGINS_MAX);
    co->patterns[co->patterns_count++] = *pt;
}

#define PATTERN_FORM "(a pattern is scheme://*.host[:port])"

/*
 * A subdomain pattern, scheme "://" "*.host" [":port"] (lower-cased): why t is not such a pattern,
 * or NULL with pt's parts set. The '*' stands for one label or more, so the pattern is checked as
 * the origin it would be with one label in its place; only http and https, the schemes a match may
 * echo.
 */
static const char *subdomain_problem(const char *t, keel_proxy_cors_pattern_t *pt)
{
    const char *sep = strstr(t, "://"), *star = strchr(t, '*');
    assert(star != NULL); /* what makes an entry a pattern */
    if (strlen(t) >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX)
        return "is too long";
    if (sep == NULL || sep == t || star < sep)
        return "has no scheme " PATTERN_FORM;
    if (star != sep + 3 || strchr(star + 1, '*') != NULL)
        return "has a '*' not at the start of the host " PATTERN_FORM;
    if (star[1] != '.')
        return "has a '*' that is not a whole label " PATTERN_FORM;
    if (star[2] == 0 || star[2] == ':' || star[2] == '/')
        return "has no host after '*.' " PATTERN_FORM;
    if (strncmp(t, "http://", 7) != 0 && strncmp(t, "https://", 8) != 0)
        return "has a scheme other than http or https (the only ones a pattern matches)";
    char one[KEEL_PROXY_CORS_ORIGIN_BYTES_MAX];
    size_t n = strlen(t);
    memcpy(one, t, n + 1);
    one[star - t] = 'x';
    if (!keel_proxy_cors_origin_valid(one, n))
        return strchr(star, '/') != NULL ? "has a path (a pattern ends after the host or port)"
                                         : "has a bad host or port " PATTERN_FORM;
    pt->kind = KEEL_PROXY_CORS_SUBDOMAIN;
    pt->scheme_len = (uint32_t)(sep - t);
    pt->suffix_off = (uint32_t)(star + 1 - t);
    pt->suffix_len = (uint32_t)strcspn(star + 1, ":");
    return NULL;
}

/* ---- explicit matchers: {exact|prefix|suffix|regex: ...} (Envoy's StringMatcher) ----------- */

typedef struct matcher_load {
    keel_proxy_cors_t *co;
    uint32_t given; /* keys seen: exactly one is right */
} matcher_load_t;

#define MATCHER_ONE "allow_origins: give one of exact, prefix, suffix, regex"

static bool first_key(ctx_t *c, yaml_node_t *v, matcher_load_t *ml)
{
    if (++ml->given == 1)
        return true;
    ERR(c, v, MATCHER_ONE);
    return false;
}

static void mt_exact(ctx_t *c, yaml_node_t *v, void *base)
{
    matcher_load_t *ml = base;
    char *o = NULL;
    if (first_key(c, v, ml) && keel__cfg_to_str(c, v, "exact", true, &o))
        add_origin(c, v, ml->co, o);
}

/* A prefix or suffix: text made of what an origin is made of. */
static void text_matcher(ctx_t *c, yaml_node_t *v, void *base, keel_proxy_cors_pattern_kind_t kind,
                         const char *key)
{
    matcher_load_t *ml = base;
    char *t = NULL;
    if (!first_key(c, v, ml) || !keel__cfg_to_str(c, v, key, true, &t))
        return;
    size_t n = strlen(t), ok = strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789-._:/[]");
    const char *why = n == 0                                  ? "is empty"
                      : n >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX ? "is too long"
                      : ok < n ? "has a character an origin never has"
                               : NULL;
    if (why != NULL) {
        ERR(c, v, "allow_origins: %s '%s' %s", key, t, why);
        free(t);
        return;
    }
    add_pattern(ml->co, &(keel_proxy_cors_pattern_t){.kind = kind, .text = t});
}

static void mt_prefix(ctx_t *c, yaml_node_t *v, void *base)
{
    text_matcher(c, v, base, KEEL_PROXY_CORS_PREFIX, "prefix");
}

static void mt_suffix(ctx_t *c, yaml_node_t *v, void *base)
{
    text_matcher(c, v, base, KEEL_PROXY_CORS_SUFFIX, "suffix");
}

/* POSIX extended, as route matching's regex, matched against the whole origin (Envoy's safe_regex
 * does: an unanchored one would let https://evil.example/?good.example in through a suffix nobody
 * meant) and in any case, as origins compare. It is compiled as written and a match must span
 * the origin (keel_proxy_cors_origin): wrapped in "^(...)$" instead, a stray ')' in it would
 * close the group and leave the rest unanchored. */
static void mt_regex(ctx_t *c, yaml_node_t *v, void *base)
{
    matcher_load_t *ml = base;
    char *t = NULL;
    if (!first_key(c, v, ml) || !keel__cfg_to_str(c, v, "regex", false, &t))
        return;
    keel_proxy_cors_pattern_t pt = {.kind = KEEL_PROXY_CORS_REGEX, .text = t};
    if (t[0] == 0 || strlen(t) >= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX) {
        ERR(c, v, "allow_origins: regex '%s' is %s", t, t[0] == 0 ? "empty" : "too long");
        free(t);
        return;
    }
    int rc = regcomp(&pt.regex, t, REG_EXTENDED | REG_ICASE);
    if (rc != 0) {
        char why[128];
        regerror(rc, &pt.regex, why, sizeof(why));
        ERR(c, v, "allow_origins: regex '%s': %s", t, why);
        free(t);
        return;
    }
    add_pattern(ml->co, &pt);
}

static void load_matcher(ctx_t *c, yaml_node_t *item, keel_proxy_cors_t *co)
{
    static const field_t f[] = {
        {"exact", F_FN, 0, 0, 0, mt_exact},
        {"prefix", F_FN, 0, 0, 0, mt_prefix},
        {"suffix", F_FN, 0, 0, 0, mt_suffix},
        {"regex", F_FN, 0, 0, 0, mt_regex},
    };
    matcher_load_t ml = {co, 0};
    keel__cfg_load_fields(c, item, f, N(f), &ml, "allow_origins");
    if (ml.given == 0)
        ERR(c, item, MATCHER_ONE);
}

/* An allow_origins entry: an origin, "*", a subdomain pattern ("*.host" after the scheme), or a
 * matcher. */
static void load_origin(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cors_t *co = arg;
    char *o = NULL;
    (void)i;
    if (item->type == YAML_MAPPING_NODE) {
        load_matcher(c, item, co);
        return;
    }
    if (!keel__cfg_to_str(c, item, "allow_origins", true, &o))
        return;
    if (strcmp(o, "*") == 0) {
        co->any_origin = true;
        free(o);
        return;
    }
    if (strchr(o, '*') == NULL) {
        add_origin(c, item, co, o);
        return;
    }
    keel_proxy_cors_pattern_t pt = {.text = o};
    const char *why = subdomain_problem(o, &pt);
    if (why != NULL) {
        ERR(c, item, "allow_origins: '%s' %s", o, why);
        free(o);
        return;
    }
    add_pattern(co, &pt);
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
    if (strcmp(m, "*") == 0) { /* Envoy's and the Fetch standard's wildcard */
        co->any_method = true;
        free(m);
        return;
    }
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

/*
 * A `cors:` section into *out (NULL before), or `cors: off` (a boolean false, as keel__cfg_to_bool
 * spells it: off, false, no), which sets *off. A route's and the top level's go through here, so
 * both are checked alike and their errors name the same lines.
 */
static void load_cors(ctx_t *c, yaml_node_t *v, keel_proxy_cors_t **out, bool *off)
{
    static const field_t f[] = {
        {"allow_origins", F_FN, 0, 0, 0, co_origins},
        {"allow_methods", F_FN, 0, 0, 0, co_methods},
        {"allow_headers", F_FN, 0, 0, 0, co_allow_headers},
        {"expose_headers", F_FN, 0, 0, 0, co_expose_headers},
        {"max_age_s", F_FN, 0, 0, 0, co_max_age},
        {"allow_credentials", F_BOOL, offsetof(keel_proxy_cors_t, allow_credentials), 0, 0, NULL},
        {"allow_private_network", F_BOOL, offsetof(keel_proxy_cors_t, allow_private_network), 0, 0,
         NULL},
    };
    if (*out != NULL || *off) /* a repeated key: keel__cfg_load_fields refuses it before this */
        return;
    if (v->type == YAML_SCALAR_NODE) {
        bool on = true;
        if (keel__cfg_to_bool(c, v, "cors", &on) && on)
            ERR(c, v, "cors: give the policy (allow_origins, ...), or off");
        *off = !on;
        return;
    }
    keel_proxy_cors_t *co = *out = calloc(1, sizeof(*co));
    if (co == NULL) {
        ERR(c, v, "out of memory");
        return;
    }
    co->line = line_of(v);
    co->max_age_s = -1;
    keel__cfg_load_fields(c, v, f, N(f), co, "cors");
    if (co->origins_count == 0 && co->patterns_count == 0 && !co->any_origin)
        ERR(c, v, "cors: 'allow_origins' needs at least one origin (or \"*\")");
    if (co->any_origin && co->allow_credentials)
        ERR(c, v,
            "cors: allow_origins \"*\" with allow_credentials: true is refused (the Fetch "
            "standard forbids a wildcard origin on credentialed requests): list the origins");
}

void keel__cfg_route_cors(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    load_cors(c, v, &r->cors, &r->cors_off);
}

void keel__cfg_top_cors(ctx_t *c, yaml_node_t *v, void *base)
{
    bool off = false; /* `cors: off` at the top level: no default, as without the section */
    load_cors(c, v, &((keel_proxy_config_t *)base)->cors, &off);
}

/* A route's own section replaces the default whole, as Envoy's route-level policy replaces its
 * virtual host's: no field-by-field merge. */
void keel__cfg_cors_inherit(keel_proxy_config_t *cfg)
{
    for (uint32_t i = 0; cfg->cors != NULL && i < cfg->routes_count; i++) {
        keel_proxy_route_t *r = &cfg->routes[i];
        assert(!r->cors_inherited);
        if (r->cors == NULL && !r->cors_off) {
            r->cors = cfg->cors;
            r->cors_inherited = true;
        }
    }
}

void keel__cfg_cors_free(keel_proxy_cors_t *co)
{
    if (co == NULL)
        return;
    for (uint32_t k = 0; k < co->origins_count; k++)
        free(co->origins[k]);
    for (uint32_t k = 0; k < co->patterns_count; k++) {
        if (co->patterns[k].kind == KEEL_PROXY_CORS_REGEX)
            regfree(&co->patterns[k].regex);
        free(co->patterns[k].text);
    }
    for (uint32_t k = 0; k < co->methods_count; k++)
        free(co->methods[k]);
    for (uint32_t k = 0; k < co->allow_headers_count; k++)
        free(co->allow_headers[k]);
    for (uint32_t k = 0; k < co->expose_headers_count; k++)
        free(co->expose_headers[k]);
    free(co);
}
