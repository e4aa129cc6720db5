/* fuzz_proxy_cors.c - libFuzzer target: arbitrary requests through keel proxy's CORS policy
 * (cors.c): the Origin judged against exact origins, subdomain patterns (scheme, a wildcard label,
 * host) and prefix / suffix / regex matchers, preflights with any requested method, headers and
 * private network flag. What must hold for any input: an echoed origin is a valid serialized
 * origin, NUL-terminated, and the answer's fields are whole "Name: value\r\n" lines (no CR or LF a
 * client could use to add a field of its own). */
#include "base/buf.h"
#include "proxy/config.h"
#include "proxy/cors.h"
#include "proxy/route.h"
#include "fuzz_req.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char policy[] =
    "listeners: [{address: 127.0.0.1:1}]\n"
    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
    "routes:\n"
    "  - match: {prefix: /c}\n"
    "    cluster: a\n"
    "    cors:\n"
    "      allow_origins: [\"https://shop.example\", \"https://*.shop.example\",\n"
    "        \"http://*.lan.test:8080\", {prefix: \"https://shop-\"}, {suffix: "
    "\".partner.test\"},\n"
    "        {regex: 'https://(a|b)\\.example(:[0-9]+)?'}]\n"
    "      allow_methods: [\"*\"]\n"
    "      allow_headers: [content-type, x-token]\n"
    "      expose_headers: [x-request-id]\n"
    "      allow_credentials: true\n"
    "      allow_private_network: true\n"
    "      max_age_s: 600\n"
    "  - match: {prefix: /s}\n"
    "    cluster: a\n"
    "    cors: {allow_origins: [\"*\", \"https://*.x.test\"], allow_methods: [PUT]}\n";

static keel_proxy_config_t cfg;
static int loaded;

/* Every line of out is "Name: value\r\n": a token, ": ", then no CR, LF or NUL. */
static void check_fields(const keel_buf_t *out)
{
    const char *p = (const char *)keel_buf_rptr(out), *end = p + keel_buf_unread(out);
    while (p < end) {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        assert(colon != NULL && colon > p);
        for (const char *q = p; q < colon; q++)
            assert(*q > ' ' && *q < 127);
        const char *crlf = colon;
        while (crlf + 1 < end && !(crlf[0] == '\r' && crlf[1] == '\n')) {
            assert(*crlf != '\r' && *crlf != '\n' && *crlf != '\0');
            crlf++;
        }
        assert(crlf + 1 < end);
        p = crlf + 2;
    }
}

/* Input: METHOD\nTARGET\nname:value\n... (fields split on the first ':'). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loaded) {
        static keel_proxy_errors_t errs;
        int rc = keel_proxy_config_parse(policy, strlen(policy), &cfg, &errs);
        assert(rc == 0);
        loaded = 1;
    }
    (void)keel_proxy_cors_origin_valid((const char *)data, size);
    const char *part[2];
    size_t len[2];
    keel_proxy_header_view_t hv[FUZZ_REQ_HEADERS_MAX];
    size_t nh;
    fuzz_req_read(data, size, 2, part, len, hv, &nh);
    keel_proxy_req_view_t v;
    memset(&v, 0, sizeof(v));
    v.method = part[0];
    v.method_len = len[0];
    v.headers = hv;
    v.headers_count = nh;
    if (!keel_proxy_split_target(part[1], len[1], &v.path, &v.path_len, &v.query, &v.query_len))
        return 0;
    for (uint32_t r = 0; r < cfg.routes_count; r++) {
        const keel_proxy_cors_t *co = cfg.routes[r].cors;
        assert(co != NULL);
        keel_proxy_cors_match_t m;
        uint32_t got = keel_proxy_cors_origin(co, &v, &m);
        assert(got == m.match);
        if (got == KEEL_PROXY_CORS_ECHO) {
            size_t n = strnlen(m.echo, sizeof(m.echo));
            assert(n < sizeof(m.echo) && keel_proxy_cors_origin_valid(m.echo, n));
        }
        keel_buf_t out;
        keel_buf_init(&out, 0);
        int rc = keel_proxy_cors_actual(co, &m, &out);
        if (rc == 0)
            check_fields(&out);
        keel_buf_reset(&out);
        if (keel_proxy_cors_is_preflight(&v, NULL, NULL)) {
            rc = 0;
            keel_proxy_cors_verdict_t verdict = keel_proxy_cors_preflight(co, &v, &out, &rc);
            (void)keel_proxy_cors_verdict_name(verdict);
            if (rc == 0)
                check_fields(&out);
        }
        keel_buf_free(&out);
    }
    return 0;
}
