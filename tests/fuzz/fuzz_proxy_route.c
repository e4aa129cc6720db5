/* fuzz_proxy_route.c - libFuzzer target: arbitrary requests through keel proxy's route matcher. */
#include "proxy/config.h"
#include "proxy/route.h"
#include "fuzz_req.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Routes with every kind of condition; loaded once. */
static const char routes[] =
    "listeners: [{address: 127.0.0.1:1}]\n"
    "clusters: [{name: a, hosts: [127.0.0.1:2]}, {name: b, hosts: [127.0.0.1:3]}]\n"
    "routes:\n"
    "  - {match: {host: example.com, exact: /x}, cluster: a}\n"
    "  - {match: {regex: \"^/r/([a-z]+)/[0-9]{1,3}$\", methods: [GET]}, cluster: b}\n"
    "  - match: {prefix: /h, headers: [{name: x-a, value: v}, {name: x-b, regex: \"^a.*z$\"},"
    " {name: x-c, present: false}]}\n"
    "    cluster: a\n"
    "  - match: {prefix: /q, query: [{name: k, value: v}, {name: p}, {name: z, regex: "
    "\"[0-9]\"}]}\n"
    "    weighted_clusters: [{cluster: a, weight: 3}, {cluster: b, weight: 7}]\n"
    "  - match: {template: \"/t/{id}/x/{sub}\"}\n"
    "    aggregate: {parts: [{name: p, cluster: a, path: \"/o/{id}?s={sub}&h={header:x-a}\"}]}\n";

static keel_proxy_config_t cfg;
static int loaded;

/* Input: METHOD\nTARGET\nHOST\nname:value\n... (fields split on the first ':'). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loaded) {
        static keel_proxy_errors_t errs;
        int rc = keel_proxy_config_parse(routes, strlen(routes), &cfg, &errs);
        assert(rc == 0);
        loaded = 1;
    }
    const char *part[3];
    size_t len[3];
    keel_proxy_header_view_t hv[FUZZ_REQ_HEADERS_MAX];
    size_t nh;
    fuzz_req_read(data, size, 3, part, len, hv, &nh);
    keel_proxy_req_view_t v;
    memset(&v, 0, sizeof(v));
    v.method = part[0];
    v.method_len = len[0];
    v.host = len[2] ? part[2] : NULL;
    v.host_len = len[2];
    v.headers = hv;
    v.headers_count = nh;
    if (!keel_proxy_split_target(part[1], len[1], &v.path, &v.path_len, &v.query, &v.query_len))
        return 0;
    assert(v.path_len >= 1 && v.path[0] == '/');
    int r = keel_proxy_route_match(&cfg, &v);
    assert(r >= -1 && r < (int)cfg.routes_count);
    if (r >= 0 && cfg.routes[r].aggregate != NULL) { /* the template's parameters, filled in */
        keel_proxy_param_t params[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
        int n = keel_proxy_template_match(cfg.routes[r].path, v.path, v.path_len, params);
        assert(n == 2);
        char out[KEEL_PROXY_AGG_PATH_BYTES_MAX];
        if (keel_proxy_fill_path(cfg.routes[r].aggregate->parts[0].path, params, (uint32_t)n, &v,
                                 out, sizeof(out)) == 0) {
            /* a filled value never adds a segment, a query or a fragment */
            assert(strncmp(out, "/o/", 3) == 0 && strchr(out + 3, '/') == NULL);
            assert(strchr(out, '#') == NULL && strchr(out, '?') == strrchr(out, '?'));
            assert(strchr(out, '&') == strrchr(out, '&') && strchr(out, '+') == NULL);
            assert(strlen(out) < sizeof(out));
        }
    }
    if (r >= 0 && cfg.routes[r].clusters_count > 0) {
        uint64_t rnd = 0;
        memcpy(&rnd, data, size < 8 ? size : 8);
        assert(keel_proxy_route_pick(&cfg.routes[r], rnd) < cfg.routes[r].clusters_count);
    }
    return 0;
}
