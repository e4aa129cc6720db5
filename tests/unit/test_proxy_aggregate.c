/* test_proxy_aggregate.c - aggregate routes: their config, path templates, and the JSON merge. */
#include "ktest.h"
#include "base/err.h"
#include "proxy/aggregate.h"
#include "proxy/config.h"
#include "proxy/route.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static keel_proxy_config_t cfg;
static keel_proxy_errors_t errs;

static int parse(const char *text)
{
    return keel_proxy_config_parse(text, strlen(text), &cfg, &errs);
}

static int has_error(int line, const char *needle)
{
    for (uint32_t i = 0; i < errs.count; i++)
        if (errs.e[i].line == line && strstr(errs.e[i].text, needle) != NULL)
            return 1;
    for (uint32_t i = 0; i < errs.count; i++)
        fprintf(stderr, "  line %d: %s\n", errs.e[i].line, errs.e[i].text);
    return 0;
}

static const char good[] = "listeners: [{address: 127.0.0.1:1}]\n"
                           "clusters:\n"
                           "  - {name: order, hosts: [127.0.0.1:2]}\n"
                           "  - {name: payment, hosts: [127.0.0.1:3]}\n"
                           "routes:\n"
                           "  - name: full\n"
                           "    match: {template: \"/orders/{id}/full\", methods: [GET]}\n"
                           "    timeout_ms: 3000\n"
                           "    aggregate:\n"
                           "      forward_headers: [Authorization, x-request-id]\n"
                           "      part_bytes_max: 4096\n"
                           "      parts:\n"
                           "        - {name: order, cluster: order, path: \"/orders/{id}\", "
                           "required: true, timeout_ms: 2000}\n"
                           "        - name: payment\n"
                           "          cluster: payment\n"
                           "          path: \"/charges/{id}?by={header:x-customer-id}\"\n";

static void loads_an_aggregate_route(void)
{
    KT_EQ_INT(parse(good), 0);
    const keel_proxy_route_t *r = &cfg.routes[0];
    KT_EQ_INT(r->action, KEEL_PROXY_ACTION_AGGREGATE);
    KT_EQ_INT(r->path_kind, KEEL_PROXY_PATH_TEMPLATE);
    const keel_proxy_aggregate_t *a = r->aggregate;
    KT_CHECK(a != NULL);
    KT_EQ_INT(a->parts_count, 2);
    KT_EQ_INT(a->forward_count, 2);
    KT_EQ_STR(a->forward_headers[0], "authorization"); /* lower-case */
    KT_EQ_INT(a->part_bytes_max, 4096);
    KT_EQ_STR(a->parts[0].name, "order");
    KT_EQ_INT(a->parts[0].cluster, 0);
    KT_CHECK(a->parts[0].required);
    KT_EQ_INT(a->parts[0].timeout_ms, 2000);
    KT_EQ_INT(a->parts[1].cluster, 1);
    KT_CHECK(!a->parts[1].required);
    KT_EQ_INT(a->parts[1].timeout_ms, 1000); /* the default */
    keel_proxy_config_free(&cfg);
}

static void refuses_bad_aggregates_naming_their_lines(void)
{
    const char *y = "listeners: [{address: 127.0.0.1:1}]\n"                       /* 1 */
                    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"               /* 2 */
                    "routes:\n"                                                   /* 3 */
                    "  - match: {template: \"/o/{id}\"}\n"                        /* 4 */
                    "    aggregate:\n"                                            /* 5 */
                    "      parts:\n"                                              /* 6 */
                    "        - {name: x, cluster: nowhere, path: /x}\n"           /* 7 */
                    "        - {name: y, cluster: a, path: \"/y/{order}\"}\n"     /* 8 */
                    "        - {name: partial, cluster: a, path: /z}\n"           /* 9 */
                    "        - {name: x, cluster: a, path: /w}\n"                 /* 10 */
                    "        - {name: v, cluster: a}\n"                           /* 11 */
                    "        - {name: \"a b\", cluster: a, path: \"no-slash\"}\n" /* 12 */
                    "  - match: {template: \"/o/x{id}\"}\n"                       /* 13 */
                    "    aggregate: {parts: []}\n"                                /* 14 */
                    "  - match: {template: \"/o/{id}/{id}\"}\n"                   /* 15 */
                    "    cluster: a\n"                                            /* 16 */
                    "  - aggregate: {parts: [{name: q, cluster: a, path: /q}]}\n" /* 17 */
                    "    cluster: a\n"                                            /* 18 */
                    "  - aggregate: {part_bytes_max: 1, parts: [{name: q, cluster: a, path: "
                    "/q}]}\n"; /* 19 */
    KT_EQ_INT(parse(y), KEEL_EINVAL);
    KT_CHECK(has_error(7, "no cluster named 'nowhere'"));
    KT_CHECK(has_error(8, "{order} is neither"));
    KT_CHECK(has_error(9, "the aggregate's own field"));
    KT_CHECK(has_error(10, "named twice"));
    KT_CHECK(has_error(11, "'path' are required"));
    KT_CHECK(has_error(12, "letters, digits"));
    KT_CHECK(has_error(12, "must start with '/'"));
    KT_CHECK(has_error(13, "whole segment"));
    KT_CHECK(has_error(14, "at least one"));
    KT_CHECK(has_error(15, "given twice"));
    KT_CHECK(has_error(17, "exactly one of"));
    KT_CHECK(has_error(19, "out of range"));
}

static void templates_match_whole_segments(void)
{
    keel_proxy_param_t p[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
    const char *t = "/orders/{id}/full";
    KT_EQ_INT(keel_proxy_template_match(t, "/orders/42/full", 15, p), 1);
    KT_EQ_INT((int)p[0].name_len, 2);
    KT_EQ_MEM(p[0].value, "42", 2);
    KT_EQ_INT((int)p[0].value_len, 2);
    KT_EQ_INT(keel_proxy_template_match(t, "/orders//full", 13, p), -1);    /* never empty */
    KT_EQ_INT(keel_proxy_template_match(t, "/orders/4/2/full", 16, p), -1); /* one segment */
    KT_EQ_INT(keel_proxy_template_match(t, "/orders/42/full/", 16, p), -1);
    KT_EQ_INT(keel_proxy_template_match(t, "/orders/42", 10, p), -1);
    KT_EQ_INT(keel_proxy_template_match("/a/{x}/{y}", "/a/1/two", 8, p), 2);
    KT_EQ_MEM(p[1].value, "two", 3);
    KT_EQ_INT(keel_proxy_template_match("/a/{x}", "/a/1", 4, p), 1);
    KT_EQ_INT(keel_proxy_template_match("/a/{x}", "/b/1", 4, p), -1);
}

static void fills_part_paths_and_refuses_values_that_escape(void)
{
    keel_proxy_param_t p[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
    int n = keel_proxy_template_match("/o/{id}/full", "/o/a%2Fb_7/full", 15, p);
    KT_EQ_INT(n, 1);
    keel_proxy_header_view_t hv[] = {{"X-Customer-Id", 13, "c-9", 3},
                                     {"X-Evil", 6, "../x", 4},
                                     {"X-Q", 3, "a?b=1", 5},
                                     {"X-Empty", 7, "", 0},
                                     {"X-Inj", 5, "1&role=admin", 12}};
    keel_proxy_req_view_t req = {0};
    req.headers = hv;
    req.headers_count = 5;
    char out[64];
    KT_EQ_INT(keel_proxy_fill_path("/charges/{id}?c={header:x-customer-id}", p, 1, &req, out,
                                   sizeof(out)),
              0);
    KT_EQ_STR(out, "/charges/a%2Fb_7?c=c-9"); /* percent-encoding passes as sent */
    KT_EQ_INT(keel_proxy_fill_path("/x/{header:x-evil}", p, 1, &req, out, sizeof(out)),
              KEEL_EINVAL); /* '/' would step into another path */
    KT_EQ_INT(keel_proxy_fill_path("/x/{header:x-q}", p, 1, &req, out, sizeof(out)),
              KEEL_EINVAL); /* '?' would add a query */
    KT_EQ_INT(keel_proxy_fill_path("/x?a={header:x-inj}", p, 1, &req, out, sizeof(out)),
              KEEL_EINVAL); /* '&' and '=' would add a query parameter */
    KT_EQ_INT(keel_proxy_fill_path("/x/{header:x-empty}", p, 1, &req, out, sizeof(out)),
              KEEL_ENOTFOUND);
    KT_EQ_INT(keel_proxy_fill_path("/x/{header:x-none}", p, 1, &req, out, sizeof(out)),
              KEEL_ENOTFOUND);
    KT_EQ_INT(keel_proxy_fill_path("/x/{other}", p, 1, &req, out, sizeof(out)), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_proxy_fill_path("/0123456789/{id}", p, 1, &req, out, 16), KEEL_ETOOBIG);
    KT_EQ_INT(keel_proxy_fill_path("/plain", p, 0, &req, out, sizeof(out)), 0);
    KT_EQ_STR(out, "/plain");
}

static keel_proxy_aggregate_t three(void)
{
    keel_proxy_aggregate_t a;
    memset(&a, 0, sizeof(a));
    a.parts_count = 3;
    a.part_bytes_max = 64;
    a.parts[0] = (keel_proxy_agg_part_t){.name = "order", .required = true};
    a.parts[1] = (keel_proxy_agg_part_t){.name = "payment"};
    a.parts[2] = (keel_proxy_agg_part_t){.name = "reservation"};
    return a;
}

static keel_proxy_part_result_t ok(const char *body)
{
    return (keel_proxy_part_result_t){KEEL_PROXY_PART_OK, 200, body, strlen(body)};
}

static int merge(const keel_proxy_aggregate_t *a, const keel_proxy_part_result_t *res, char *text,
                 size_t cap)
{
    char *out = NULL;
    size_t len = 0;
    int st = keel_proxy_agg_merge(a, res, &out, &len);
    KT_CHECK(st != 0 && out != NULL && strlen(out) == len && len < cap);
    snprintf(text, cap, "%s", out);
    free(out);
    return st;
}

static void merges_parts_under_their_names(void)
{
    keel_proxy_aggregate_t a = three();
    keel_proxy_part_result_t r[3] = {ok("{\"id\":\"7\",\"items\":[1,2]}"),
                                     ok(" {\"status\":\"charged\"} "), ok("\"reserved\"")};
    char text[1024];
    KT_EQ_INT(merge(&a, r, text, sizeof(text)), 200);
    KT_EQ_STR(text,
              "{\"order\":{\"id\":\"7\",\"items\":[1,2]},\"payment\":{\"status\":\"charged\"},"
              "\"reservation\":\"reserved\",\"partial\":false,\"errors\":[]}");
}

static void a_failed_part_is_null_with_an_error_and_the_answer_is_partial(void)
{
    keel_proxy_aggregate_t a = three();
    keel_proxy_part_result_t r[3] = {ok("{\"id\":\"7\"}"),
                                     {KEEL_PROXY_PART_TIMEOUT, 0, NULL, 0},
                                     {KEEL_PROXY_PART_OK, 404, "{\"error\":1}", 11}};
    char text[1024];
    KT_EQ_INT(merge(&a, r, text, sizeof(text)), 200); /* the required part answered */
    json_t *j = json_loads(text, 0, NULL);
    KT_CHECK(j != NULL);
    KT_CHECK(json_is_null(json_object_get(j, "payment")));
    KT_CHECK(json_is_null(json_object_get(j, "reservation")));
    KT_CHECK(json_is_true(json_object_get(j, "partial")));
    json_t *e = json_object_get(j, "errors");
    KT_EQ_INT((int)json_array_size(e), 2);
    KT_EQ_STR(json_string_value(json_object_get(json_array_get(e, 0), "part")), "payment");
    KT_EQ_STR(json_string_value(json_object_get(json_array_get(e, 0), "error")), "timeout");
    KT_EQ_STR(json_string_value(json_object_get(json_array_get(e, 1), "error")), "status");
    KT_EQ_INT((int)json_integer_value(json_object_get(json_array_get(e, 1), "status")), 404);
    json_decref(j);
    /* bodies that are not one JSON value, or too large, fail their part too */
    keel_proxy_part_result_t bad[3] = {ok("{\"id\":\"7\"}"), ok("{\"a\":1} trailing"),
                                       ok("[\"0123456789012345678901234567890123456789\","
                                          "\"0123456789012345678901234567890123456789\"]")};
    KT_EQ_INT(merge(&a, bad, text, sizeof(text)), 200);
    KT_CHECK(strstr(text, "\"payment\":null") != NULL);
    KT_CHECK(strstr(text, "\"error\":\"bad-json\"") != NULL);
    KT_CHECK(strstr(text, "\"error\":\"too-large\"") != NULL);
    keel_proxy_part_result_t dup[3] = {ok("{\"a\":1,\"a\":2}"), ok("1"), ok("2")};
    KT_EQ_INT(merge(&a, dup, text, sizeof(text)), 502); /* duplicate keys are refused */
}

static void a_failed_required_part_fails_the_request(void)
{
    keel_proxy_aggregate_t a = three();
    char text[1024];
    keel_proxy_part_result_t t[3] = {{KEEL_PROXY_PART_TIMEOUT, 0, NULL, 0}, ok("1"), ok("2")};
    KT_EQ_INT(merge(&a, t, text, sizeof(text)), 504);
    KT_CHECK(strstr(text, "\"order\":null") != NULL && strstr(text, "\"payment\":1") != NULL);
    keel_proxy_part_result_t c[3] = {{KEEL_PROXY_PART_CONNECT, 0, NULL, 0}, ok("1"), ok("2")};
    KT_EQ_INT(merge(&a, c, text, sizeof(text)), 502);
    keel_proxy_part_result_t s5[3] = {{KEEL_PROXY_PART_OK, 503, "x", 1}, ok("1"), ok("2")};
    KT_EQ_INT(merge(&a, s5, text, sizeof(text)), 502);
    /* the order does not exist: its own 404, not a gateway error */
    keel_proxy_part_result_t nf[3] = {{KEEL_PROXY_PART_OK, 404, "{}", 2}, ok("1"), ok("2")};
    KT_EQ_INT(merge(&a, nf, text, sizeof(text)), 404);
}

int main(void)
{
    KT_RUN(loads_an_aggregate_route);
    KT_RUN(refuses_bad_aggregates_naming_their_lines);
    KT_RUN(templates_match_whole_segments);
    KT_RUN(fills_part_paths_and_refuses_values_that_escape);
    KT_RUN(merges_parts_under_their_names);
    KT_RUN(a_failed_part_is_null_with_an_error_and_the_answer_is_partial);
    KT_RUN(a_failed_required_part_fails_the_request);
    return kt_done();
}
