/* test_proxy_cors.c - a route's `cors:` section and the top level's default (loaded and refused,
 * with lines; inherited, opted out of, replaced), route matching
 * of preflights, and the fields of preflight and actual answers (proxy/cors.h). */
#include "ktest.h"
#include "proxy_cfg_test.h"
#include "base/err.h"
#include "proxy/config.h"
#include "proxy/cors.h"
#include "proxy/route.h"

#include <stdlib.h>
#include <string.h>

static const char good[] =
    "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
    "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
    "routes:\n"
    "  - name: api\n"
    "    match: {prefix: /api/, methods: [GET, PUT]}\n"
    "    cluster: a\n"
    "    cors:\n"
    "      allow_origins: [\"https://Shop.example\", \"http://127.0.0.1:8000\", \"*\"]\n"
    "      allow_methods: [GET, PUT, DELETE]\n"
    "      allow_headers: [Authorization, content-type, idempotency-key]\n"
    "      expose_headers: [x-request-id, etag]\n"
    "      max_age_s: 600\n"
    "  - name: creds\n"
    "    match: {prefix: /me}\n"
    "    cluster: a\n"
    "    cors: {allow_origins: [\"https://shop.example\"], allow_credentials: true}\n"
    "  - name: plain\n"
    "    match: {prefix: /}\n"
    "    cluster: a\n";

static void loads_a_cors_section_and_leaves_other_routes_without_one(void)
{
    int rc = parse(good);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    const keel_proxy_cors_t *co = cfg.routes[0].cors;
    KT_CHECK(co != NULL);
    KT_EQ_INT(co->line, 8);
    KT_EQ_INT(co->origins_count, 2);
    KT_EQ_STR(co->origins[0], "https://shop.example"); /* browsers send it lower-case */
    KT_EQ_STR(co->origins[1], "http://127.0.0.1:8000");
    KT_CHECK(co->any_origin);
    KT_EQ_INT(co->methods_count, 3);
    KT_EQ_STR(co->methods[2], "DELETE");
    KT_EQ_INT(co->allow_headers_count, 3);
    KT_EQ_STR(co->allow_headers[0], "authorization");
    KT_EQ_INT(co->expose_headers_count, 2);
    KT_EQ_INT(co->max_age_s, 600);
    KT_CHECK(!co->allow_credentials);
    co = cfg.routes[1].cors;
    KT_CHECK(co != NULL && co->allow_credentials && !co->any_origin);
    KT_EQ_INT(co->max_age_s, -1);
    KT_CHECK(cfg.routes[2].cors == NULL);
    keel_proxy_config_free(&cfg);
}

static void refuses_bad_cors_sections_naming_their_lines(void)
{
    static const char bad[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"         /* 1 */
                              "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"          /* 2 */
                              "routes:\n"                                                 /* 3 */
                              "  - cluster: a\n"                                          /* 4 */
                              "    cors:\n"                                               /* 5 */
                              "      allow_origins: [\"*\"]\n"                            /* 6 */
                              "      allow_credentials: true\n"                           /* 7 */
                              "  - cluster: a\n"                                          /* 8 */
                              "    cors:\n"                                               /* 9 */
                              "      allow_origins:\n"                                    /* 10 */
                              "        - https://shop.example/\n"                         /* 11 */
                              "        - shop.example\n"                                  /* 12 */
                              "        - \"null\"\n"                                      /* 13 */
                              "        - https://shop.example:99999\n"                    /* 14 */
                              "      allow_methods: [GET, get, TRACE, \"PO ST\"]\n"       /* 15 */
                              "      allow_headers: [content-type, \"x bad\", \"a:b\"]\n" /* 16 */
                              "      expose_headers: [\"*\", \"x(y)\"]\n"                 /* 17 */
                              "      max_age_s: 86401\n"                                  /* 18 */
                              "      colour: blue\n"                                      /* 19 */
                              "  - cluster: a\n"                                          /* 20 */
                              "    cors: {allow_methods: [GET]}\n";                       /* 21 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(6, "\"*\" with allow_credentials: true is refused"));
    KT_CHECK(has_error(11, "has a path"));
    KT_CHECK(has_error(12, "is not scheme://host[:port]"));
    KT_CHECK(has_error(13, "list real origins"));
    KT_CHECK(has_error(14, "bad port"));
    KT_CHECK(has_error(15, "'get' is not an upper-case method name"));
    KT_CHECK(has_error(15, "browsers never send TRACE"));
    KT_CHECK(has_error(15, "'PO ST' is not an upper-case method name"));
    KT_CHECK(has_error(16, "'x bad' is not a header name"));
    KT_CHECK(has_error(16, "'a:b' is not a header name"));
    KT_CHECK(has_error(17, "'*' is not taken"));
    KT_CHECK(has_error(17, "'x(y)' is not a header name"));
    KT_CHECK(has_error(18, "out of range"));
    KT_CHECK(has_error(19, "unknown key 'colour'"));
    KT_CHECK(has_error(21, "'allow_origins' needs at least one origin"));
    KT_CHECK(has_error(10, "'allow_origins' needs at least one origin")); /* all refused */
    if (errs.count != 16)
        dump_errors();
    KT_EQ_INT(errs.count, 16);
}

/* A request view over name/value pairs (NULL-terminated). */
static keel_proxy_header_view_t views[16];

static keel_proxy_req_view_t req(const char *method, const char *path, const char *const *fields)
{
    size_t n = 0;
    for (; fields != NULL && fields[2 * n] != NULL; n++)
        views[n] = (keel_proxy_header_view_t){fields[2 * n], strlen(fields[2 * n]),
                                              fields[2 * n + 1], strlen(fields[2 * n + 1])};
    return (keel_proxy_req_view_t){method, strlen(method), NULL, 0, path, strlen(path), "",
                                   0,      views,          n,    1};
}

static char out_text[2048];

/* Runs a preflight through route r's policy; the answer's fields land in out_text. */
static keel_proxy_cors_verdict_t preflight(uint32_t r, keel_proxy_req_view_t q)
{
    keel_buf_t b;
    keel_buf_init(&b, 4096);
    int rc = 0;
    keel_proxy_cors_verdict_t v = keel_proxy_cors_preflight(cfg.routes[r].cors, &q, &b, &rc);
    KT_EQ_INT(rc, 0);
    snprintf(out_text, sizeof(out_text), "%.*s", (int)keel_buf_unread(&b),
             (const char *)keel_buf_rptr(&b));
    keel_buf_free(&b);
    return v;
}

static void matches_a_preflight_by_the_method_it_asks_about(void)
{
    KT_EQ_INT(parse(good), 0);
    static const char *const put[] = {"Origin", "https://shop.example",
                                      "Access-Control-Request-Method", "PUT", NULL};
    static const char *const post[] = {"origin", "https://shop.example",
                                       "access-control-request-method", "POST", NULL};
    static const char *const bare[] = {"Origin", "https://shop.example", NULL};
    KT_CHECK(keel_proxy_cors_is_preflight(&(keel_proxy_req_view_t){0}, NULL, NULL) == false);
    keel_proxy_req_view_t q = req("OPTIONS", "/api/x", put);
    KT_CHECK(keel_proxy_cors_is_preflight(&q, NULL, NULL));
    KT_EQ_INT(keel_proxy_route_match(&cfg, &q), 0); /* PUT is in the route's methods */
    q = req("OPTIONS", "/api/x", post);
    KT_EQ_INT(keel_proxy_route_match(&cfg, &q), 2); /* POST is not: the catch-all route */
    q = req("OPTIONS", "/api/x", bare);             /* no request method: not a preflight */
    KT_CHECK(!keel_proxy_cors_is_preflight(&q, NULL, NULL));
    KT_EQ_INT(keel_proxy_route_match(&cfg, &q), 2);
    q = req("PUT", "/api/x", put); /* not OPTIONS: not a preflight */
    KT_CHECK(!keel_proxy_cors_is_preflight(&q, NULL, NULL));
    keel_proxy_config_free(&cfg);
}

static void answers_an_allowed_preflight_with_the_allow_fields(void)
{
    KT_EQ_INT(parse(good), 0);
    static const char *const f[] = {
        "Origin", "https://shop.example",           "Access-Control-Request-Method",
        "DELETE", "Access-Control-Request-Headers", "Content-Type, authorization ,,idempotency-key",
        NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/api/x", f)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: https://shop.example\r\n"
                        "Access-Control-Allow-Methods: GET, PUT, DELETE\r\n"
                        "Access-Control-Allow-Headers: content-type, authorization, "
                        "idempotency-key\r\n"
                        "Access-Control-Max-Age: 600\r\n");
    /* an unlisted origin passes through "*"; POST is safelisted; no headers asked */
    static const char *const g[] = {"Origin", "https://other.example",
                                    "Access-Control-Request-Method", "POST", NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/api/x", g)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: *\r\n"
                        "Access-Control-Allow-Methods: GET, PUT, DELETE\r\n"
                        "Access-Control-Max-Age: 600\r\n");
    /* credentials: the origin itself, and no methods listed: the one asked */
    static const char *const h[] = {"Origin", "https://shop.example",
                                    "Access-Control-Request-Method", "GET", NULL};
    KT_EQ_INT(preflight(1, req("OPTIONS", "/me", h)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: https://shop.example\r\n"
                        "Access-Control-Allow-Credentials: true\r\n"
                        "Access-Control-Allow-Methods: GET\r\n");
    keel_proxy_config_free(&cfg);
}

static void refuses_a_preflight_for_an_origin_method_or_header_not_allowed(void)
{
    KT_EQ_INT(parse(good), 0);
    static const char *const origin[] = {"Origin", "https://evil.example",
                                         "Access-Control-Request-Method", "GET", NULL};
    static const char *const upper[] = {"Origin", "HTTPS://SHOP.EXAMPLE",
                                        "Access-Control-Request-Method", "GET", NULL};
    static const char *const method[] = {"Origin", "https://shop.example",
                                         "Access-Control-Request-Method", "PATCH", NULL};
    static const char *const header[] = {
        "Origin", "https://shop.example",           "Access-Control-Request-Method",
        "PUT",    "Access-Control-Request-Headers", "content-type, x-secret",
        NULL};
    static const char *const junk[] = {
        "Origin", "https://shop.example",           "Access-Control-Request-Method",
        "PUT",    "Access-Control-Request-Headers", "content-type x",
        NULL};
    KT_EQ_INT(preflight(1, req("OPTIONS", "/me", origin)), KEEL_PROXY_CORS_BAD_ORIGIN);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"); /* no allow fields on a refusal */
    KT_EQ_INT(preflight(1, req("OPTIONS", "/me", upper)), KEEL_PROXY_CORS_BAD_ORIGIN);
    KT_EQ_INT(preflight(0, req("OPTIONS", "/api/x", method)), KEEL_PROXY_CORS_BAD_METHOD);
    KT_EQ_STR(out_text, "Vary: Origin\r\n");
    KT_EQ_INT(preflight(0, req("OPTIONS", "/api/x", header)), KEEL_PROXY_CORS_BAD_HEADERS);
    KT_EQ_STR(out_text, "Vary: Origin\r\n");
    KT_EQ_INT(preflight(0, req("OPTIONS", "/api/x", junk)), KEEL_PROXY_CORS_BAD_HEADERS);
    KT_EQ_STR(keel_proxy_cors_verdict_name(KEEL_PROXY_CORS_BAD_HEADERS), "refused-headers");
    keel_proxy_config_free(&cfg);
}

static const char *actual(uint32_t r, const char *origin)
{
    const char *const f[] = {"Origin", origin, NULL};
    keel_proxy_req_view_t q = req("GET", "/", origin ? f : NULL);
    keel_proxy_cors_match_t m;
    keel_proxy_cors_origin(cfg.routes[r].cors, &q, &m);
    keel_buf_t b;
    keel_buf_init(&b, 4096);
    KT_EQ_INT(keel_proxy_cors_actual(cfg.routes[r].cors, &m, &b), 0);
    snprintf(out_text, sizeof(out_text), "%.*s", (int)keel_buf_unread(&b),
             (const char *)keel_buf_rptr(&b));
    keel_buf_free(&b);
    return out_text;
}

static void adds_allow_origin_to_actual_answers_only_for_allowed_origins(void)
{
    KT_EQ_INT(parse(good), 0);
    KT_EQ_STR(actual(0, "http://127.0.0.1:8000"),
              "Vary: Origin\r\n"
              "Access-Control-Allow-Origin: http://127.0.0.1:8000\r\n"
              "Access-Control-Expose-Headers: x-request-id, etag\r\n");
    KT_EQ_STR(actual(0, "https://any.example"),
              "Vary: Origin\r\n"
              "Access-Control-Allow-Origin: *\r\n"
              "Access-Control-Expose-Headers: x-request-id, etag\r\n");
    KT_EQ_STR(actual(1, "https://shop.example"),
              "Vary: Origin\r\n"
              "Access-Control-Allow-Origin: https://shop.example\r\n"
              "Access-Control-Allow-Credentials: true\r\n");
    KT_EQ_STR(actual(1, "https://evil.example"), "Vary: Origin\r\n");
    KT_EQ_STR(actual(1, NULL), "Vary: Origin\r\n");
    keel_proxy_config_free(&cfg);
}

/* ---- origin patterns and "*" in allow_methods ------------------------------------------- */

static const char patterns[] =
    "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
    "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
    "routes:\n"
    "  - match: {prefix: /sub/}\n"
    "    cluster: a\n"
    "    cors: {allow_origins: [\"HTTPS://*.Example.com\"], allow_methods: [\"*\"]}\n"
    "  - match: {prefix: /port/}\n"
    "    cluster: a\n"
    "    cors: {allow_origins: [\"http://*.example.com:8443\"], allow_credentials: true,\n"
    "           allow_methods: [PUT, \"*\"]}\n"
    "  - match: {prefix: /}\n"
    "    cluster: a\n"
    "    cors:\n"
    "      allow_origins:\n"
    "        - {exact: \"https://Exact.test\"}\n"
    "        - {prefix: \"https://Shop-\"}\n"
    "        - {suffix: \".shop.test\"}\n"
    "        - {regex: \"https://(a|b)\\\\.regex\\\\.test\"}\n";

static void loads_origin_patterns_and_a_wildcard_method(void)
{
    int rc = parse(patterns);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    const keel_proxy_cors_t *co = cfg.routes[0].cors;
    KT_EQ_INT(co->origins_count, 0);
    KT_EQ_INT(co->patterns_count, 1);
    KT_EQ_INT(co->patterns[0].kind, KEEL_PROXY_CORS_SUBDOMAIN);
    KT_EQ_STR(co->patterns[0].text, "https://*.example.com");
    KT_CHECK(co->any_method && !co->any_origin);
    co = cfg.routes[2].cors;
    KT_EQ_INT(co->origins_count, 1);
    KT_EQ_STR(co->origins[0], "https://exact.test");
    KT_EQ_INT(co->patterns_count, 3);
    KT_EQ_INT(co->patterns[0].kind, KEEL_PROXY_CORS_PREFIX);
    KT_EQ_STR(co->patterns[0].text, "https://shop-");
    KT_EQ_INT(co->patterns[1].kind, KEEL_PROXY_CORS_SUFFIX);
    KT_EQ_INT(co->patterns[2].kind, KEEL_PROXY_CORS_REGEX);
    KT_CHECK(!co->any_method);
    keel_proxy_config_free(&cfg);
}

static void tells_a_serialized_origin_from_anything_else(void)
{
    static const char *const valid[] = {
        "https://a.example.com", "HTTP://A.Example.COM:8080", "http://127.0.0.1:1",
        "https://[::1]:8443",    "https://x_y-z.test",        "https://a:65535",
    };
    static const char *const invalid[] = {
        "",
        "https://",
        "ftp://a.example",
        "https:/a.example",
        "https://a.example/",
        "https://a.example/x",
        "https://a.example?x",
        "https://a.example ",
        " https://a.example",
        "https://a b.example",
        "https://a\tb.example",
        "https://a\x01.example",
        "https://a.example:",
        "https://a.example:0",
        "https://a.example:65536",
        "https://a.example:123456",
        "https://a.example:8x",
        "https://.a.example",
        "https://a..example",
        "https://a.example.",
        "https://user@a.example",
        "https://[::1",
        "https://[]",
        "https://a.*.example",
        "null",
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
        if (!keel_proxy_cors_origin_valid(valid[i], strlen(valid[i])))
            KT_FAIL("'%s' refused", valid[i]);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        if (keel_proxy_cors_origin_valid(invalid[i], strlen(invalid[i])))
            KT_FAIL("'%s' taken", invalid[i]);
    /* a label over 63 bytes, and an origin of KEEL_PROXY_CORS_ORIGIN_BYTES_MAX bytes */
    char o[KEEL_PROXY_CORS_ORIGIN_BYTES_MAX + 1];
    snprintf(o, sizeof(o), "https://%s.example",
             "a123456789b123456789c123456789d123456789"
             "e123456789f123456789g1234");
    KT_CHECK(!keel_proxy_cors_origin_valid(o, strlen(o)));
    size_t n = (size_t)snprintf(o, sizeof(o), "https://");
    while (n + 11 <= KEEL_PROXY_CORS_ORIGIN_BYTES_MAX) /* labels of 10 and a dot */
        n += (size_t)snprintf(o + n, sizeof(o) - n, "abcdefghij.");
    n += (size_t)snprintf(o + n, sizeof(o) - n, "%.*s", (int)(KEEL_PROXY_CORS_ORIGIN_BYTES_MAX - n),
                          "abcdefghij");
    KT_EQ_INT(n, KEEL_PROXY_CORS_ORIGIN_BYTES_MAX);
    KT_CHECK(!keel_proxy_cors_origin_valid(o, n));    /* at the bound: too long */
    KT_CHECK(keel_proxy_cors_origin_valid(o, n - 1)); /* one under: taken */
}

/* What route r answers an actual request from origin with: the echoed origin, or NULL. */
static const char *allowed_as(uint32_t r, const char *origin)
{
    static char got[KEEL_PROXY_CORS_ORIGIN_BYTES_MAX];
    const char *const f[] = {"Origin", origin, NULL};
    keel_proxy_req_view_t q = req("GET", "/", f);
    keel_proxy_cors_match_t m;
    uint32_t v = keel_proxy_cors_origin(cfg.routes[r].cors, &q, &m);
    KT_EQ_INT(v, m.match);
    if (v == KEEL_PROXY_CORS_NONE)
        return NULL;
    const char *a = strstr(actual(r, origin), "Access-Control-Allow-Origin: ");
    KT_CHECK(a != NULL);
    snprintf(got, sizeof(got), "%.*s", (int)strcspn(a + 29, "\r"), a + 29);
    return got;
}

static void matches_origin_patterns_and_echoes_the_request_origin(void)
{
    KT_EQ_INT(parse(patterns), 0);
    static const struct {
        uint32_t route;
        const char *origin;
        bool allowed; /* and echoed as sent */
    } cases[] = {
        {0, "https://a.example.com", true},
        {0, "https://a.b.example.com", true},
        {0, "https://A.EXAMPLE.com", true}, /* scheme and host in any case */
        {0, "HTTPS://a.Example.COM", true},
        {0, "https://example.com", false}, /* one more label at least */
        {0, "https://.example.com", false},
        {0, "http://a.example.com", false},       /* another scheme */
        {0, "https://a.example.com:8443", false}, /* another port */
        {0, "https://a.example.com:443", false},
        {0, "https://evilexample.com", false}, /* a suffix, not a subdomain */
        {0, "https://a.example.com.evil.net", false},
        {0, "https://a.example.com/", false},
        {0, "https://a.example.com/x", false},
        {0, "https://a .example.com", false},
        {0, "https://a.example.com\t", false},
        {0, "https://a\x7f.example.com", false},
        {0, "null", false},
        {1, "http://x.example.com:8443", true},
        {1, "http://x.example.com", false},
        {1, "https://x.example.com:8443", false},
        {1, "http://x.example.com:84430", false},
        {1, "http://x.example.com:8443.evil", false},
        {2, "https://shop-eu.example", true}, /* {prefix} */
        {2, "https://SHOP-eu.example", true},
        {2, "https://shop-eu.example/x", false}, /* still a serialized origin */
        {2, "http://shop-eu.example", false},
        {2, "https://a.shop.test", true}, /* {suffix} */
        {2, "http://b.SHOP.test", true},  /* any scheme: only the end is compared */
        {2, "https://a.shop.test:81", false},
        {2, "https://a.shop.test.evil", false},
        {2, "https://b.regex.test", true}, /* {regex}, the whole origin */
        {2, "https://B.Regex.Test", true},
        {2, "https://c.regex.test", false},
        {2, "https://a.regex.test.evil.net", false},
        {2, "https://x.https://a.regex.test", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = allowed_as(cases[i].route, cases[i].origin);
        if (cases[i].allowed && (got == NULL || strcmp(got, cases[i].origin) != 0))
            KT_FAIL("route %u, '%s': answered '%s'", cases[i].route, cases[i].origin,
                    got ? got : "(nothing)");
        if (!cases[i].allowed && got != NULL)
            KT_FAIL("route %u, '%s': allowed as '%s'", cases[i].route, cases[i].origin, got);
    }
    /* {exact}: the listed origin, byte for byte, as a plain entry */
    KT_EQ_STR(allowed_as(2, "https://exact.test"), "https://exact.test");
    KT_CHECK(allowed_as(2, "https://Exact.test") == NULL);
    /* the fields of an actual answer with credentials: the origin, never "*" */
    KT_EQ_STR(actual(1, "http://x.example.com:8443"),
              "Vary: Origin\r\n"
              "Access-Control-Allow-Origin: http://x.example.com:8443\r\n"
              "Access-Control-Allow-Credentials: true\r\n");
    KT_EQ_STR(actual(1, "http://example.com:8443"), "Vary: Origin\r\n");
    keel_proxy_config_free(&cfg);
}

static void answers_a_pattern_preflight_with_the_origin_and_the_method_asked(void)
{
    KT_EQ_INT(parse(patterns), 0);
    static const char *const patch[] = {"Origin", "https://Api.example.com",
                                        "Access-Control-Request-Method", "PATCH", NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/sub/x", patch)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: https://Api.example.com\r\n"
                        "Access-Control-Allow-Methods: PATCH\r\n");
    /* credentials and "*" among the methods: still the method asked, never "*" */
    static const char *const del[] = {"Origin", "http://a.b.example.com:8443",
                                      "Access-Control-Request-Method", "DELETE", NULL};
    KT_EQ_INT(preflight(1, req("OPTIONS", "/port/x", del)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: http://a.b.example.com:8443\r\n"
                        "Access-Control-Allow-Credentials: true\r\n"
                        "Access-Control-Allow-Methods: DELETE\r\n");
    static const char *const evil[] = {"Origin", "https://evilexample.com",
                                       "Access-Control-Request-Method", "GET", NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/sub/x", evil)), KEEL_PROXY_CORS_BAD_ORIGIN);
    KT_EQ_STR(out_text, "Vary: Origin\r\n");
    /* "*" takes any method, but only a token: the answer echoes it */
    static const char *const junk[] = {"Origin", "https://a.example.com",
                                       "Access-Control-Request-Method", "GE T", NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/sub/x", junk)), KEEL_PROXY_CORS_BAD_METHOD);
    /* without "*", a method not listed is still refused */
    static const char *const put[] = {"Origin", "https://exact.test",
                                      "Access-Control-Request-Method", "PUT", NULL};
    KT_EQ_INT(preflight(2, req("OPTIONS", "/x", put)), KEEL_PROXY_CORS_BAD_METHOD);
    keel_proxy_config_free(&cfg);
}

/* {regex} must match the whole origin however it is written: a stray ')' in it must not close
 * an anchoring group around it and leave the rest of the origin free. */
static void matches_a_regex_against_the_whole_origin_only(void)
{
    static const char text[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
                               "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
                               "routes:\n"
                               "  - match: {prefix: /}\n"
                               "    cluster: a\n"
                               "    cors:\n"
                               "      allow_origins:\n"
                               "        - {regex: 'https://a\\.regex\\.test)|y'}\n"
                               "        - {regex: 'https://b\\.test|https://b\\.test\\.example'}\n";
    int rc = parse(text);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    KT_CHECK(allowed_as(0, "https://a.regex.test.evil.net") == NULL);
    KT_CHECK(allowed_as(0, "https://a.regex.test:1") == NULL);
    KT_CHECK(allowed_as(0, "https://a.regex.test") == NULL); /* the ')' is a literal */
    /* the longest alternative that spans the origin counts, not the first that starts it */
    KT_EQ_STR(allowed_as(0, "https://b.test"), "https://b.test");
    KT_EQ_STR(allowed_as(0, "https://b.test.example"), "https://b.test.example");
    KT_CHECK(allowed_as(0, "https://b.test.example.evil") == NULL);
    keel_proxy_config_free(&cfg);
}

/* ---- Private Network Access ---------------------------------------------------------------- */

static const char pna[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
                          "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
                          "routes:\n"
                          "  - name: lan\n"
                          "    match: {prefix: /lan/}\n"
                          "    cluster: a\n"
                          "    cors:\n"
                          "      allow_origins: [\"https://shop.example\"]\n"
                          "      allow_methods: [PUT]\n"
                          "      allow_private_network: true\n"
                          "  - name: off\n"
                          "    match: {prefix: /off/}\n"
                          "    cluster: a\n"
                          "    cors: {allow_origins: [\"https://shop.example\"], "
                          "allow_methods: [PUT], allow_private_network: false}\n"
                          "  - name: unset\n"
                          "    match: {prefix: /}\n"
                          "    cluster: a\n"
                          "    cors: {allow_origins: [\"*\"]}\n";

static void loads_allow_private_network_off_by_default(void)
{
    int rc = parse(pna);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    KT_CHECK(cfg.routes[0].cors->allow_private_network);
    KT_CHECK(!cfg.routes[1].cors->allow_private_network);
    KT_CHECK(!cfg.routes[2].cors->allow_private_network);
    keel_proxy_config_free(&cfg);
    static const char bad[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n" /* 1 */
                              "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"  /* 2 */
                              "routes:\n"                                         /* 3 */
                              "  - cluster: a\n"                                  /* 4 */
                              "    cors:\n"                                       /* 5 */
                              "      allow_origins: [\"https://shop.example\"]\n" /* 6 */
                              "      allow_private_network: maybe\n"              /* 7 */
                              "  - cluster: a\n"                                  /* 8 */
                              "    cors:\n"                                       /* 9 */
                              "      allow_origins: [\"https://shop.example\"]\n" /* 10 */
                              "      allow_private_network: [true]\n";            /* 11 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(7, "allow_private_network: 'maybe' is not true or false"));
    KT_CHECK(has_error(11, "allow_private_network"));
    if (errs.count != 2)
        dump_errors();
    KT_EQ_INT(errs.count, 2);
}

static void grants_a_private_network_preflight_only_when_the_route_allows_it(void)
{
    KT_EQ_INT(parse(pna), 0);
    static const char *const ask[] = {"Origin",
                                      "https://shop.example",
                                      "Access-Control-Request-Method",
                                      "PUT",
                                      "Access-Control-Request-Private-Network",
                                      "true",
                                      NULL};
    static const char *const ask_upper[] = {"Origin",
                                            "https://shop.example",
                                            "Access-Control-Request-Method",
                                            "PUT",
                                            "access-control-request-private-network",
                                            "TRUE",
                                            NULL};
    static const char *const no_ask[] = {"Origin", "https://shop.example",
                                         "Access-Control-Request-Method", "PUT", NULL};
    static const char *const other[] = {"Origin",
                                        "https://shop.example",
                                        "Access-Control-Request-Method",
                                        "PUT",
                                        "Access-Control-Request-Private-Network",
                                        "false",
                                        NULL};
    static const char *const granted = "Vary: Origin\r\n"
                                       "Access-Control-Allow-Origin: https://shop.example\r\n"
                                       "Access-Control-Allow-Methods: PUT\r\n"
                                       "Access-Control-Allow-Private-Network: true\r\n";
    static const char *const plain = "Vary: Origin\r\n"
                                     "Access-Control-Allow-Origin: https://shop.example\r\n"
                                     "Access-Control-Allow-Methods: PUT\r\n";
    /* on: the grant, asked in any case; not asked (or asked with another value): none */
    KT_EQ_INT(preflight(0, req("OPTIONS", "/lan/x", ask)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, granted);
    KT_EQ_INT(preflight(0, req("OPTIONS", "/lan/x", ask_upper)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, granted);
    KT_EQ_INT(preflight(0, req("OPTIONS", "/lan/x", no_ask)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, plain);
    KT_EQ_INT(preflight(0, req("OPTIONS", "/lan/x", other)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, plain);
    /* off (said or by default): allowed otherwise, answered without the grant (as Envoy) */
    static const char *const plain_put = "Vary: Origin\r\n"
                                         "Access-Control-Allow-Origin: https://shop.example\r\n"
                                         "Access-Control-Allow-Methods: PUT\r\n";
    KT_EQ_INT(preflight(1, req("OPTIONS", "/off/x", ask)),
              KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED);
    KT_EQ_STR(out_text, plain_put);
    static const char *const get[] = {"Origin",
                                      "https://shop.example",
                                      "Access-Control-Request-Method",
                                      "GET",
                                      "Access-Control-Request-Private-Network",
                                      "True",
                                      NULL};
    KT_EQ_INT(preflight(2, req("OPTIONS", "/x", get)), KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED);
    KT_EQ_STR(out_text, "Vary: Origin\r\n"
                        "Access-Control-Allow-Origin: *\r\n"
                        "Access-Control-Allow-Methods: GET\r\n");
    KT_EQ_INT(preflight(1, req("OPTIONS", "/off/x", no_ask)), KEEL_PROXY_CORS_ALLOWED);
    KT_EQ_STR(out_text, plain_put);
    KT_EQ_INT(preflight(1, req("OPTIONS", "/off/x", other)), KEEL_PROXY_CORS_ALLOWED);
    KT_CHECK(keel_proxy_cors_verdict_answered(KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED));
    KT_CHECK(keel_proxy_cors_verdict_answered(KEEL_PROXY_CORS_ALLOWED));
    KT_CHECK(!keel_proxy_cors_verdict_answered(KEEL_PROXY_CORS_BAD_ORIGIN));
    KT_EQ_STR(keel_proxy_cors_verdict_name(KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED),
              "private-network-not-allowed");
    /* a refusal stays a refusal, asked or not, and grants nothing */
    static const char *const evil[] = {"Origin",
                                       "https://evil.example",
                                       "Access-Control-Request-Method",
                                       "PUT",
                                       "Access-Control-Request-Private-Network",
                                       "true",
                                       NULL};
    KT_EQ_INT(preflight(0, req("OPTIONS", "/lan/x", evil)), KEEL_PROXY_CORS_BAD_ORIGIN);
    KT_EQ_STR(out_text, "Vary: Origin\r\n");
    keel_proxy_config_free(&cfg);
}

/* A top-level `cors:` is the default of every route without its own (docs/proxy.md, "CORS"). */
static const char defaults[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
                               "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
                               "routes:\n"
                               "  - name: own\n"
                               "    match: {prefix: /own/}\n"
                               "    cluster: a\n"
                               "    cors: {allow_origins: [\"https://other.example\"]}\n"
                               "  - name: optout\n"
                               "    match: {prefix: /optout/}\n"
                               "    cluster: a\n"
                               "    cors: off\n"
                               "  - name: inherits\n"
                               "    match: {prefix: /}\n"
                               "    cluster: a\n"
                               "cors:\n" /* 15: after the routes, as anywhere */
                               "  allow_origins: [\"https://shop.example\"]\n"
                               "  allow_methods: [PUT]\n"
                               "  max_age_s: 60\n";

static void gives_the_top_level_cors_to_routes_without_their_own(void)
{
    int rc = parse(defaults);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    const keel_proxy_cors_t *def = cfg.cors;
    KT_CHECK(def != NULL);
    KT_EQ_INT(def->line, 16);
    KT_EQ_INT(def->max_age_s, 60);
    KT_CHECK(cfg.routes[2].cors == def && cfg.routes[2].cors_inherited);
    /* a route's own policy replaces the default whole: nothing of it is merged in */
    const keel_proxy_cors_t *own = cfg.routes[0].cors;
    KT_CHECK(own != NULL && own != def && !cfg.routes[0].cors_inherited);
    KT_EQ_INT(own->origins_count, 1);
    KT_EQ_STR(own->origins[0], "https://other.example");
    KT_EQ_INT(own->methods_count, 0);
    KT_EQ_INT(own->max_age_s, -1);
    KT_CHECK(cfg.routes[1].cors == NULL && cfg.routes[1].cors_off); /* opted out */
    /* the inherited policy answers a preflight on the inheriting route */
    static const char *const put[] = {"Origin", "https://shop.example",
                                      "Access-Control-Request-Method", "PUT", NULL};
    KT_EQ_INT(preflight(2, req("OPTIONS", "/x", put)), KEEL_PROXY_CORS_ALLOWED);
    keel_proxy_config_free(&cfg); /* the default freed once (ASan and valgrind would say) */
}

static void leaves_routes_without_cors_off_when_there_is_no_default(void)
{
    static const char text[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
                               "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
                               "cors: off\n"
                               "routes:\n"
                               "  - cluster: a\n"
                               "  - cluster: a\n"
                               "    cors: no\n";
    KT_EQ_INT(parse(text), 0);
    KT_CHECK(cfg.cors == NULL);
    KT_CHECK(cfg.routes[0].cors == NULL && !cfg.routes[0].cors_inherited);
    KT_CHECK(cfg.routes[1].cors == NULL && cfg.routes[1].cors_off);
    keel_proxy_config_free(&cfg);
}

static void refuses_a_bad_top_level_cors_naming_its_lines_as_a_routes(void)
{
    static const char bad[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n" /* 1 */
                              "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"  /* 2 */
                              "cors:\n"                                           /* 3 */
                              "  allow_origins: [https://shop.example/]\n"        /* 4 */
                              "  allow_methods: [TRACE]\n"                        /* 5 */
                              "  colour: blue\n"                                  /* 6 */
                              "routes:\n"                                         /* 7 */
                              "  - cluster: a\n"                                  /* 8 */
                              "    cors: on\n"                                    /* 9 */
                              "  - cluster: a\n"                                  /* 10 */
                              "    cors: maybe\n";                                /* 11 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(4, "has a path"));
    KT_CHECK(has_error(5, "browsers never send TRACE"));
    KT_CHECK(has_error(6, "unknown key 'colour'"));
    KT_CHECK(has_error(4, "'allow_origins' needs at least one origin")); /* all refused */
    KT_CHECK(has_error(9, "cors: give the policy (allow_origins, ...), or off"));
    KT_CHECK(has_error(11, "'maybe' is not true or false"));
    if (errs.count != 6)
        dump_errors();
    KT_EQ_INT(errs.count, 6);
}

int main(void)
{
    KT_RUN(loads_a_cors_section_and_leaves_other_routes_without_one);
    KT_RUN(refuses_bad_cors_sections_naming_their_lines);
    KT_RUN(matches_a_preflight_by_the_method_it_asks_about);
    KT_RUN(answers_an_allowed_preflight_with_the_allow_fields);
    KT_RUN(refuses_a_preflight_for_an_origin_method_or_header_not_allowed);
    KT_RUN(adds_allow_origin_to_actual_answers_only_for_allowed_origins);
    KT_RUN(loads_origin_patterns_and_a_wildcard_method);
    KT_RUN(tells_a_serialized_origin_from_anything_else);
    KT_RUN(matches_origin_patterns_and_echoes_the_request_origin);
    KT_RUN(answers_a_pattern_preflight_with_the_origin_and_the_method_asked);
    KT_RUN(matches_a_regex_against_the_whole_origin_only);
    KT_RUN(loads_allow_private_network_off_by_default);
    KT_RUN(grants_a_private_network_preflight_only_when_the_route_allows_it);
    KT_RUN(gives_the_top_level_cors_to_routes_without_their_own);
    KT_RUN(leaves_routes_without_cors_off_when_there_is_no_default);
    KT_RUN(refuses_a_bad_top_level_cors_naming_its_lines_as_a_routes);
    return kt_done();
}
