/* test_proxy_config.c - keel proxy's YAML loader: the schema, defaults, and errors with lines. */
#include "ktest.h"
#include "proxy_cfg_test.h"
#include "base/err.h"
#include "proxy/config.h"

#include <stdlib.h>
#include <string.h>

static const char full[] =
    "listeners:\n"
    "  - name: public\n"
    "    address: 127.0.0.1:8080\n"
    "admin:\n"
    "  address: 127.0.0.1:9901\n"
    "limits:\n"
    "  header_count_max: 50\n"
    "  body_bytes_max: 1048576\n"
    "routes:\n"
    "  - name: canary\n"
    "    match:\n"
    "      prefix: /api/\n"
    "      methods: [GET, POST]\n"
    "      headers:\n"
    "        - name: X-Canary\n"
    "          value: \"true\"\n"
    "      query:\n"
    "        - name: debug\n"
    "    rewrite_prefix: /\n"
    "    cluster: v2\n"
    "    timeout_ms: 2000\n"
    "    per_try_timeout_ms: 500\n"
    "    retry:\n"
    "      attempts_max: 4\n"
    "      retry_on: [5xx, reset]\n"
    "      statuses: [429]\n"
    "    rate_limit: {key: \"header:X-Api-Key\", requests_per_s: 10}\n"
    "  - name: split\n"
    "    match: {regex: \"^/items/[0-9]+$\"}\n"
    "    weighted_clusters:\n"
    "      - {cluster: v1, weight: 90}\n"
    "      - {cluster: v2, weight: 10}\n"
    "  - name: old\n"
    "    match: {exact: /old}\n"
    "    redirect: {status: 308, location: /new}\n"
    "clusters:\n"
    "  - name: v1\n"
    "    hosts:\n"
    "      - address: 127.0.0.1:9001\n"
    "        weight: 3\n"
    "      - 127.0.0.1:9002\n"
    "    balance: p2c\n"
    "    circuit_breaker: {failure_rate_pct: 40, calls_min: 10, slow_call_rate_pct: 80, "
    "slow_call_ms: 250}\n"
    "    outlier_detection: {consecutive_5xx: 3, success_rate_stdev_factor: 1900}\n"
    "    health_check: {path: /healthz, interval_ms: 1000, timeout_ms: 200}\n"
    "  - name: v2\n"
    "    hosts: [127.0.0.1:9003]\n"
    "    hash_on: source_address\n";

static void loads_every_section_of_a_full_config(void)
{
    if (parse(full) != 0) {
        dump_errors();
        KT_FAIL("the full config did not load");
    }
    KT_EQ_INT(cfg.listeners_count, 1);
    KT_EQ_STR(cfg.listeners[0].address, "127.0.0.1:8080");
    KT_EQ_STR(cfg.admin_address, "127.0.0.1:9901");
    KT_EQ_INT(cfg.limits.header_count_max, 50);
    KT_EQ_U64(cfg.limits.body_bytes_max, 1048576);
    KT_EQ_INT(cfg.limits.uri_bytes_max, 8192); /* a default */
    KT_EQ_INT(cfg.routes_count, 3);
    const keel_proxy_route_t *r = &cfg.routes[0];
    KT_EQ_STR(r->name, "canary");
    KT_EQ_INT(r->path_kind, KEEL_PROXY_PATH_PREFIX);
    KT_EQ_STR(r->path, "/api/");
    KT_EQ_INT(r->methods_count, 2);
    KT_EQ_STR(r->headers[0].name, "x-canary"); /* stored lower-case */
    KT_EQ_STR(r->headers[0].value, "true");
    KT_EQ_STR(r->query[0].name, "debug");
    KT_CHECK(r->query[0].value == NULL);
    KT_EQ_STR(r->rewrite_prefix, "/");
    KT_EQ_INT(r->clusters_count, 1);
    KT_EQ_INT(r->clusters[0].cluster, 1); /* v2, declared after the routes */
    KT_EQ_INT(r->timeout_ms, 2000);
    KT_EQ_INT(r->retry.attempts_max, 4);
    KT_EQ_INT(r->retry.retry_on, KEEL_PROXY_RETRY_ON_5XX | KEEL_PROXY_RETRY_ON_RESET);
    KT_EQ_INT(r->retry.statuses[0], 429);
    KT_EQ_INT(r->retry.budget_pct, 20); /* the budget is on by default */
    KT_EQ_INT(r->retry.budget_min, 3);
    KT_EQ_INT(r->ratelimits_count, 1);
    KT_CHECK(r->ratelimits[0].enabled);
    KT_EQ_INT(r->ratelimits[0].key, KEEL_PROXY_RL_HEADER);
    KT_EQ_STR(r->ratelimits[0].header, "x-api-key");
    KT_EQ_U64(r->ratelimits[0].burst, 10);
    KT_EQ_INT(r->ratelimits[0].keys_max, 4096); /* the default */
    r = &cfg.routes[1];
    KT_EQ_INT(r->path_kind, KEEL_PROXY_PATH_REGEX);
    KT_EQ_INT(r->clusters_count, 2);
    KT_EQ_INT(r->weight_total, 100);
    KT_EQ_INT(cfg.routes[2].action, KEEL_PROXY_ACTION_REDIRECT);
    KT_EQ_INT(cfg.routes[2].redirect_status, 308);
    const keel_proxy_cluster_t *c = &cfg.clusters[0];
    KT_EQ_INT(c->hosts_count, 2);
    KT_EQ_INT(c->hosts[0].weight, 3);
    KT_EQ_STR(c->hosts[1].address, "127.0.0.1:9002");
    KT_EQ_INT(c->hosts[1].weight, 1);
    KT_EQ_STR(c->balance, "p2c");
    KT_CHECK(c->breaker_enabled);
    KT_EQ_INT(c->breaker_failure_rate_pct, 40);
    KT_CHECK(c->outlier_enabled);
    KT_EQ_INT(c->outlier_consecutive_5xx, 3);
    KT_EQ_INT(c->outlier_sr_stdev_factor, 1900);
    KT_EQ_INT(c->outlier_sr_minimum_hosts, 5); /* a default */
    KT_EQ_INT(c->breaker_slow_call_rate_pct, 80);
    KT_EQ_INT(c->breaker_slow_call_ms, 250);
    KT_CHECK(c->health.enabled);
    KT_EQ_STR(c->health.path, "/healthz");
    KT_EQ_STR(cfg.clusters[1].balance, "ring"); /* hash_on picks a consistent-hash default */
    keel_proxy_config_free(&cfg);
}

static void names_the_line_of_every_error(void)
{
    static const char bad[] = "listeners:\n"                    /* 1 */
                              "  - address: 127.0.0.1:99999\n"  /* 2 bad port */
                              "routes:\n"                       /* 3 */
                              "  - match: {regex: \"([a-z\"}\n" /* 4 bad regex */
                              "    cluster: nowhere\n"          /* 5 no such cluster */
                              "    timeout_ms: soon\n"          /* 6 not a number */
                              "  - match: {prefix: /}\n"        /* 7 no action */
                              "    colour: blue\n"              /* 8 unknown key */
                              "clusters:\n"                     /* 9 */
                              "  - name: c\n"                   /* 10 */
                              "    hosts: []\n"                 /* 11 */
                              "    balance: fastest\n";         /* 12 unknown policy */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(2, "port"));
    KT_CHECK(has_error(4, "regex"));
    KT_CHECK(has_error(5, "no cluster named 'nowhere'"));
    KT_CHECK(has_error(6, "not a whole number"));
    KT_CHECK(has_error(7, "exactly one of"));
    KT_CHECK(has_error(8, "unknown key 'colour'"));
    KT_CHECK(has_error(10, "at least one host"));
    KT_CHECK(has_error(12, "fastest"));
    KT_EQ_INT(errs.count, 8);
}

static void reports_a_yaml_syntax_error_at_its_line(void)
{
    KT_EQ_INT(parse("listeners:\n  - address: 127.0.0.1:1\nroutes: [\n  {a: b\n"), KEEL_EINVAL);
    KT_EQ_INT(errs.count, 1);
    KT_CHECK(strstr(errs.e[0].text, "YAML") != NULL);
    KT_CHECK(errs.e[0].line >= 3);
}

static void refuses_duplicate_keys_and_duplicate_names(void)
{
    static const char dup[] = "listeners:\n"
                              "  - address: 127.0.0.1:1\n"
                              "    address: 127.0.0.1:2\n"
                              "clusters:\n"
                              "  - {name: a, hosts: [127.0.0.1:5]}\n"
                              "  - {name: a, hosts: [127.0.0.1:5, 127.0.0.1:5]}\n";
    KT_EQ_INT(parse(dup), KEEL_EINVAL);
    KT_CHECK(has_error(3, "given twice"));
    KT_CHECK(has_error(6, "defined twice"));
    KT_CHECK(has_error(6, "listed twice"));
}

/* Found by fuzz_proxy_config: a second `clusters:` list used to be loaded over the first. */
static void a_repeated_top_level_section_is_an_error_not_a_leak(void)
{
    static const char twice[] = "listeners: [{address: 127.0.0.1:1}]\n"
                                "clusters: [{name: a, hosts: [127.0.0.1:5]}, {name: b, hosts: "
                                "[127.0.0.1:6]}]\n"
                                "clusters: [{name: c, hosts: [127.0.0.1:7]}]\n";
    KT_EQ_INT(parse(twice), KEEL_EINVAL);
    KT_CHECK(has_error(3, "given twice"));
}

static void refuses_header_values_that_would_split_a_message(void)
{
    static const char crlf[] = "listeners: [{address: 127.0.0.1:1}]\n"
                               "routes:\n"
                               "  - match: {prefix: /}\n"
                               "    direct_response: {status: 200}\n"
                               "    request_headers_add:\n"
                               "      - {name: x-a, value: \"ok\\r\\nInjected: yes\"}\n"
                               "      - {name: \"bad name\", value: v}\n";
    KT_EQ_INT(parse(crlf), KEEL_EINVAL);
    KT_CHECK(has_error(6, "control character"));
    KT_CHECK(has_error(7, "not a header name"));
}

static void needs_a_listener_and_a_mapping_at_the_top(void)
{
    KT_EQ_INT(parse(""), KEEL_EINVAL);
    KT_CHECK(has_error(1, "empty"));
    KT_EQ_INT(parse("- a\n- b\n"), KEEL_EINVAL);
    KT_CHECK(has_error(1, "mapping"));
    KT_EQ_INT(parse("routes: []\n"), KEEL_EINVAL);
    KT_CHECK(has_error(1, "listener"));
}

static void keeps_at_most_the_error_ceiling_and_counts_the_rest(void)
{
    char text[8192];
    size_t n =
        (size_t)snprintf(text, sizeof(text), "listeners: [{address: 127.0.0.1:1}]\nlimits:\n");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "  nope%d: 1\n", i);
    KT_EQ_INT(parse(text), KEEL_EINVAL);
    KT_EQ_INT(errs.count, KEEL_PROXY_ERRORS_MAX);
    KT_EQ_INT(errs.dropped, 40 - KEEL_PROXY_ERRORS_MAX);
}

static void checks_ranges_of_limits(void)
{
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\nlimits: {header_count_max: 100000}\n"),
              KEEL_EINVAL);
    KT_CHECK(has_error(2, "out of range"));
}

static void loads_workers_and_refuses_a_count_out_of_range(void)
{
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"), 0);
    KT_EQ_INT(cfg.workers, 0); /* absent: one per online core, decided at start */
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("workers: 2\nlisteners: [{address: 127.0.0.1:1}]\n"), 0);
    KT_EQ_INT(cfg.workers, 2);
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\nworkers: 64\n"), 0);
    KT_EQ_INT(cfg.workers, KEEL_PROXY_WORKERS_MAX);
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\nworkers: 65\n"), KEEL_EINVAL);
    KT_CHECK(has_error(2, "workers: 65 is out of range 1..64"));
    KT_EQ_INT(parse("workers: 0\nlisteners: [{address: 127.0.0.1:1}]\n"), KEEL_EINVAL);
    KT_CHECK(has_error(1, "out of range 1..64"));
    KT_EQ_INT(parse("workers: two\nlisteners: [{address: 127.0.0.1:1}]\n"), KEEL_EINVAL);
    KT_CHECK(has_error(1, "workers"));
}

static void loads_tracing_and_names_the_line_of_its_errors(void)
{
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"), 0);
    KT_CHECK(!cfg.tracing.enabled); /* absent: no spans */
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "tracing: {zipkin: \"http://127.0.0.1:9411/api/v2/spans\", service_name: gw,\n"
                    "  sample_percent: 1.5, batch_max: 50, flush_ms: 200, queue_max: 500,\n"
                    "  timeout_ms: 700}\n"),
              0);
    KT_CHECK(cfg.tracing.enabled);
    KT_EQ_STR(cfg.tracing.zipkin_address, "127.0.0.1:9411");
    KT_EQ_STR(cfg.tracing.zipkin_path, "/api/v2/spans");
    KT_EQ_STR(cfg.tracing.service_name, "gw");
    KT_EQ_INT(cfg.tracing.sample_ppm, 15000);
    KT_EQ_INT(cfg.tracing.batch_max, 50);
    KT_EQ_INT(cfg.tracing.flush_ms, 200);
    KT_EQ_INT(cfg.tracing.queue_max, 500);
    KT_EQ_INT(cfg.tracing.timeout_ms, 700);
    keel_proxy_config_free(&cfg);
    /* defaults: Zipkin's path, every trace, 100 per batch, 1 s, 10000 queued */
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "tracing: {zipkin: \"http://[::1]:9411\"}\n"),
              0);
    KT_EQ_STR(cfg.tracing.zipkin_address, "[::1]:9411");
    KT_EQ_STR(cfg.tracing.zipkin_path, "/api/v2/spans");
    KT_EQ_STR(cfg.tracing.service_name, "keel-proxy");
    KT_EQ_INT(cfg.tracing.sample_ppm, KEEL_PROXY_TRACE_PPM);
    KT_EQ_INT(cfg.tracing.batch_max, 100);
    KT_EQ_INT(cfg.tracing.flush_ms, 1000);
    KT_EQ_INT(cfg.tracing.queue_max, 10000);
    keel_proxy_config_free(&cfg);
    static const char *const percents[][2] = {{"0", "0"},
                                              {"100", "1000000"},
                                              {"0.0001", "1"},
                                              {"33.3333", "333333"},
                                              {"100.0", "1000000"}};
    for (size_t i = 0; i < sizeof(percents) / sizeof(percents[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "listeners: [{address: 127.0.0.1:1}]\n"
                 "tracing: {zipkin: \"http://127.0.0.1:1/\", sample_percent: %s}\n",
                 percents[i][0]);
        KT_EQ_INT(parse(text), 0);
        KT_EQ_U64(cfg.tracing.sample_ppm, strtoull(percents[i][1], NULL, 10));
        keel_proxy_config_free(&cfg);
    }
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "tracing:\n"
                    "  zipkin: https://127.0.0.1:9411/api/v2/spans\n"
                    "  sample_percent: 100.5\n"
                    "  batch_max: 2000\n"
                    "  flush_ms: 10\n"
                    "  queue_max: 1000001\n"
                    "  colour: blue\n"
                    "  service_name: \"\"\n"
                    "tracing2: 1\n"),
              KEEL_EINVAL);
    KT_CHECK(has_error(3, "https collectors are not supported"));
    KT_CHECK(has_error(4, "sample_percent: '100.5' is not a number 0..100"));
    KT_CHECK(has_error(5, "batch_max: 2000 is out of range 1..1000"));
    KT_CHECK(has_error(6, "flush_ms: 10 is out of range 100..60000"));
    KT_CHECK(has_error(7, "queue_max: 1000001 is out of range 1..100000"));
    KT_CHECK(has_error(8, "unknown key 'colour'"));
    KT_CHECK(has_error(9, "service_name"));
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "tracing:\n"
                    "  sample_percent: 1.\n"
                    "  batch_max: 200\n"
                    "  queue_max: 100\n"),
              KEEL_EINVAL);
    /* the section's own errors are on its first line */
    KT_CHECK(has_error(3, "'zipkin' (the collector's URL) is required"));
    KT_CHECK(has_error(3, "queue_max (100) is below batch_max (200)"));
    KT_CHECK(has_error(3, "sample_percent: '1.'"));
    static const char *const bad_urls[] = {
        "zipkin.local:9411",   "http://zipkin:9411/",       "http://127.0.0.1/api",
        "http://127.0.0.1:0/", "http://127.0.0.1:9411/a b", "http://::1:9411/",
        "http://:9411/"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "listeners: [{address: 127.0.0.1:1}]\n"
                 "tracing: {zipkin: \"%s\"}\n",
                 bad_urls[i]);
        KT_EQ_INT(parse(text), KEEL_EINVAL);
        KT_CHECK(has_error(2, "tracing: zipkin:"));
    }
}

static void loads_the_retry_buffer_and_idempotency_header(void)
{
    const char *y = "listeners: [{address: 127.0.0.1:1}]\n"
                    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
                    "routes:\n"
                    "  - {match: {prefix: /x}, cluster: a, retry: {idempotency_header: X-Op-Id}}\n"
                    "  - {match: {prefix: /y}, cluster: a, retry: {idempotency_header: \"\"}}\n"
                    "  - {cluster: a}\n";
    KT_EQ_INT(parse(y), 0);
    KT_EQ_INT(cfg.limits.retry_buffer_bytes, 65536); /* the default */
    KT_EQ_STR(cfg.routes[0].retry.idempotency_header, "x-op-id");
    KT_CHECK(cfg.routes[1].retry.idempotency_header == NULL); /* "": none */
    KT_EQ_STR(cfg.routes[2].retry.idempotency_header, "idempotency-key");
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\nlimits: {retry_buffer_bytes: 0}\n"), 0);
    KT_EQ_INT(cfg.limits.retry_buffer_bytes, 0);
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "limits: {retry_buffer_bytes: 99999999}\n"),
              KEEL_EINVAL);
    KT_CHECK(has_error(2, "out of range"));
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
                    "routes:\n"
                    "  - cluster: a\n"
                    "    retry: {idempotency_header: \"bad name\"}\n"),
              KEEL_EINVAL);
    KT_CHECK(has_error(5, "not a header name"));
}

static void loads_a_hedge_and_refuses_bad_ones_naming_their_lines(void)
{
    const char *y = "listeners: [{address: 127.0.0.1:1}]\n"
                    "clusters: [{name: a, hosts: [127.0.0.1:2, 127.0.0.1:3]}]\n"
                    "routes:\n"
                    "  - match: {prefix: /x}\n"
                    "    cluster: a\n"
                    "    retry: {attempts_max: 2}\n"
                    "    hedge: {delay_ms: 50}\n"
                    "  - {cluster: a}\n";
    KT_EQ_INT(parse(y), 0);
    KT_CHECK(cfg.routes[0].hedge.enabled);
    KT_EQ_INT(cfg.routes[0].hedge.delay_ms, 50);
    KT_EQ_INT(cfg.routes[0].hedge.line, 7);
    KT_CHECK(!cfg.routes[1].hedge.enabled);
    keel_proxy_config_free(&cfg);
    KT_EQ_INT(parse("listeners: [{address: 127.0.0.1:1}]\n"
                    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
                    "routes:\n"
                    "  - cluster: a\n"
                    "    hedge: {delay_ms: 50}\n" /* no retry: attempts_max 1 */
                    "  - cluster: a\n"
                    "    retry: {}\n"
                    "    hedge: {}\n" /* no delay */
                    "  - direct_response: {status: 200}\n"
                    "    retry: {}\n"
                    "    hedge: {delay_ms: 5}\n" /* nothing to hedge */
                    "  - cluster: a\n"
                    "    retry: {}\n"
                    "    hedge: {delay_ms: 70000, mode: x}\n" /* out of range, unknown */
                    "  - cluster: a\n"
                    "    retry: {}\n"
                    "    hedge: {delay_ms: 0}\n"), /* out of range, and only that */
              KEEL_EINVAL);
    KT_CHECK(has_error(5, "attempts_max >= 2"));
    KT_CHECK(has_error(8, "'delay_ms' is required"));
    KT_CHECK(has_error(11, "needs a cluster"));
    KT_CHECK(has_error(14, "out of range"));
    KT_CHECK(has_error(14, "mode"));
    KT_CHECK(has_error(17, "out of range") && !has_error(17, "required"));
}

static const char jwt_cfg[] = "listeners: [{address: 127.0.0.1:1}]\n"
                              "jwt_providers:\n"
                              "  - name: shop\n"
                              "    issuer: https://auth.shop\n"
                              "    audiences: [orders, users]\n"
                              "    jwks_file: /etc/keel/jwks.json\n"
                              "    clock_skew_s: 30\n"
                              "    forward: true\n"
                              "    claims_to_headers:\n"
                              "      - {claim: sub, header: X-User-Id}\n"
                              "      - {claim: tenant, header: x-tenant}\n"
                              "routes:\n"
                              "  - name: orders\n"
                              "    match: {prefix: /}\n"
                              "    jwt: {provider: shop, required: false}\n"
                              "    rate_limit: {key: \"claim:sub\", requests_per_s: 5}\n"
                              "    direct_response: {status: 200}\n"
                              "  - name: short\n"
                              "    match: {prefix: /s}\n"
                              "    jwt: shop\n"
                              "    direct_response: {status: 200}\n";

static void loads_jwt_providers_and_route_requirements(void)
{
    if (parse(jwt_cfg) != 0) {
        dump_errors();
        KT_FAIL("jwt config refused");
    }
    KT_EQ_INT(cfg.jwt_providers_count, 1);
    const keel_proxy_jwt_provider_t *pv = &cfg.jwt_providers[0];
    KT_EQ_STR(pv->issuer, "https://auth.shop");
    KT_EQ_INT(pv->audiences_count, 2);
    KT_EQ_STR(pv->audiences[1], "users");
    KT_EQ_STR(pv->jwks_file, "/etc/keel/jwks.json");
    KT_EQ_INT(pv->jwks_line, 6);
    KT_EQ_INT(pv->clock_skew_s, 30);
    KT_CHECK(pv->forward && pv->require_exp);
    KT_EQ_INT(pv->claims_to_headers_count, 2);
    KT_EQ_STR(pv->claims_to_headers[0].header, "x-user-id"); /* stored lower-case */
    KT_CHECK(cfg.routes[0].jwt.enabled && !cfg.routes[0].jwt.required);
    KT_EQ_INT(cfg.routes[0].ratelimits[0].key, KEEL_PROXY_RL_CLAIM);
    KT_EQ_STR(cfg.routes[0].ratelimits[0].header, "sub");
    KT_CHECK(cfg.routes[1].jwt.enabled && cfg.routes[1].jwt.required); /* the short form */
    keel_proxy_config_free(&cfg);
}

static void refuses_bad_jwt_blocks_naming_their_lines(void)
{
    static const char bad[] = "listeners: [{address: 127.0.0.1:1}]\n"                     /* 1 */
                              "jwt_providers:\n"                                          /* 2 */
                              "  - name: a\n"                                             /* 3 */
                              "    jwks: '{\"keys\": []}'\n"                              /* 4 */
                              "    jwks_file: /x\n"                                       /* 5 */
                              "    clock_skew_s: 99999\n"                                 /* 6 */
                              "    claims_to_headers:\n"                                  /* 7 */
                              "      - {claim: sub, header: host}\n"                      /* 8 */
                              "      - {claim: sub}\n"                                    /* 9 */
                              "    audience: x\n"                                         /* 10 */
                              "  - name: a\n"                                             /* 11 */
                              "routes:\n"                                                 /* 12 */
                              "  - match: {prefix: /}\n"                                  /* 13 */
                              "    jwt: {provider: nobody}\n"                             /* 14 */
                              "    direct_response: {status: 200}\n"                      /* 15 */
                              "  - match: {prefix: /}\n"                                  /* 16 */
                              "    rate_limit: {key: \"claim:sub\", requests_per_s: 1}\n" /* 17 */
                              "    direct_response: {status: 200}\n";                     /* 18 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(3, "give one of jwks_file, jwks"));
    KT_CHECK(has_error(6, "out of range"));
    KT_CHECK(has_error(8, "written by the proxy"));
    KT_CHECK(has_error(9, "'claim' and 'header' are required"));
    KT_CHECK(has_error(10, "unknown key 'audience'"));
    KT_CHECK(has_error(11, "defined twice"));
    KT_CHECK(has_error(11, "give one of jwks_file, jwks"));
    KT_CHECK(has_error(14, "no jwt_providers entry named 'nobody'"));
    KT_CHECK(has_error(16, "claim:sub needs a 'jwt' requirement"));
}

static void loads_service_clusters_fed_by_the_registry(void)
{
    static const char ok[] = "listeners: [{address: 127.0.0.1:1}]\n"
                             "registry: 127.0.0.1:7001,127.0.0.1:7002\n"
                             "clusters:\n"
                             "  - {name: notes, service: notes, tag: v2, balance: p2c}\n"
                             "routes:\n"
                             "  - {match: {prefix: /}, cluster: notes}\n";
    if (parse(ok) != 0) {
        dump_errors();
        KT_FAIL("service cluster refused");
    }
    KT_EQ_STR(cfg.clusters[0].service, "notes");
    KT_EQ_STR(cfg.clusters[0].tag, "v2");
    KT_EQ_STR(cfg.clusters[0].registry, "127.0.0.1:7001,127.0.0.1:7002");
    KT_EQ_INT(cfg.clusters[0].hosts_count, 0);
    keel_proxy_config_free(&cfg);
    static const char bad[] = "listeners: [{address: 127.0.0.1:1}]\n"           /* 1 */
                              "clusters:\n"                                     /* 2 */
                              "  - {name: a, service: notes}\n"                 /* 3 */
                              "  - {name: b, service: x, hosts: [1.2.3.4:5]}\n" /* 4 */
                              "  - {name: c, hosts: [1.2.3.4:5], tag: v1}\n"    /* 5 */
                              "  - {name: d, service: \"has space\"}\n"         /* 6 */
                              "routes:\n"                                       /* 7 */
                              "  - {match: {prefix: /}, cluster: a}\n"          /* 8 */
                              "registry: \"127.0.0.1\"\n";                      /* 9 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(4, "give one of hosts, service"));
    KT_CHECK(has_error(5, "'tag' needs 'service'"));
    KT_CHECK(has_error(6, "not a registry name"));
    KT_CHECK(has_error(9, "is not host:port"));
    static const char no_registry[] = "listeners: [{address: 127.0.0.1:1}]\n"
                                      "clusters:\n"
                                      "  - {name: a, service: notes}\n";
    KT_EQ_INT(parse(no_registry), KEEL_EINVAL);
    KT_CHECK(has_error(3, "'service' needs a top-level 'registry'"));
}

static void loads_slow_start_and_refuses_it_where_it_cannot_work(void)
{
    static const char ok[] =
        "listeners: [{address: 127.0.0.1:1}]\n"
        "clusters:\n"
        "  - {name: a, hosts: [127.0.0.1:2], slow_start: {window_ms: 5000, min_weight_pct: 20}}\n"
        "  - {name: b, hosts: [127.0.0.1:3], balance: p2c, slow_start: {aggression: 2000}}\n"
        "  - {name: c, hosts: [127.0.0.1:4]}\n"
        "  - {name: d, hosts: [127.0.0.1:5], balance: ring, slow_start: {enabled: false}}\n"
        "routes:\n"
        "  - {match: {prefix: /}, cluster: a}\n";
    if (parse(ok) != 0) {
        dump_errors();
        KT_FAIL("slow_start refused");
    }
    const keel_proxy_cluster_t *a = &cfg.clusters[0], *b = &cfg.clusters[1], *c = &cfg.clusters[2];
    KT_CHECK(a->slow_start_enabled);
    KT_EQ_INT(a->slow_start_window_ms, 5000);
    KT_EQ_INT(a->slow_start_min_weight_pct, 20);
    KT_EQ_INT(a->slow_start_aggression, 1000);
    KT_CHECK(b->slow_start_enabled);
    KT_EQ_INT(b->slow_start_window_ms, 30000); /* defaults */
    KT_EQ_INT(b->slow_start_min_weight_pct, 10);
    KT_EQ_INT(b->slow_start_aggression, 2000);
    KT_CHECK(!c->slow_start_enabled);
    KT_CHECK(!cfg.clusters[3].slow_start_enabled);
    keel_proxy_config_free(&cfg);
    static const char bad[] = "listeners: [{address: 127.0.0.1:1}]\n"                  /* 1 */
                              "clusters:\n"                                            /* 2 */
                              "  - name: a\n"                                          /* 3 */
                              "    hosts: [127.0.0.1:2]\n"                             /* 4 */
                              "    slow_start:\n"                                      /* 5 */
                              "      window_ms: 3600001\n"                             /* 6 */
                              "      min_weight_pct: 101\n"                            /* 7 */
                              "      aggression: 0\n"                                  /* 8 */
                              "      ramp: fast\n"                                     /* 9 */
                              "  - name: b\n"                                          /* 10 */
                              "    hosts: [127.0.0.1:3]\n"                             /* 11 */
                              "    slow_start: {window_ms: 1000}\n"                    /* 12 */
                              "    hash_on: source_address\n"                          /* 13 */
                              "  - {name: c, hosts: [127.0.0.1:4], slow_start: 5}\n"   /* 14 */
                              "  - {name: d, hosts: [127.0.0.1:5], balance: maglev,\n" /* 15 */
                              "     slow_start: {window_ms: 0}}\n";                    /* 16 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(6, "window_ms"));
    KT_CHECK(has_error(7, "min_weight_pct"));
    KT_CHECK(has_error(8, "aggression"));
    KT_CHECK(has_error(9, "unknown key 'ramp'"));
    KT_CHECK(has_error(12, "balance ring picks hosts by key"));
    KT_CHECK(has_error(14, "slow_start"));
    if (errs.count != 6) { /* window_ms 0 is off: fine with maglev */
        dump_errors();
        KT_FAIL("%u errors", errs.count);
    }
}

static void loads_a_sidecar_section_and_listener_matches(void)
{
    static const char ok[] = "listeners:\n"
                             "  - {name: inbound, address: 127.0.0.1:0}\n"
                             "  - {name: outbound, address: 127.0.0.1:0}\n"
                             "registry: 127.0.0.1:7001\n"
                             "sidecar:\n"
                             "  service: notes\n"
                             "  id: notes-1\n"
                             "  app: 127.0.0.1:8081\n"
                             "  inbound: inbound\n"
                             "  tags: [v1, blue]\n"
                             "  meta: {zone: a, rack: r7}\n"
                             "  weight: 3\n"
                             "  version: \"1.2\"\n"
                             "  ttl_ms: 2000\n"
                             "  health_check: {path: /health, interval_ms: 500, timeout_ms: 100}\n"
                             "clusters:\n"
                             "  - {name: app, hosts: [127.0.0.1:8081],\n"
                             "     health_check: {tcp: true, interval_ms: 100, timeout_ms: 50}}\n"
                             "routes:\n"
                             "  - {match: {listener: outbound}, cluster: app}\n"
                             "  - {match: {listener: inbound, prefix: /}, cluster: app}\n";
    if (parse(ok) != 0) {
        dump_errors();
        KT_FAIL("sidecar refused");
    }
    const keel_proxy_sidecar_t *sc = &cfg.sidecar;
    KT_CHECK(sc->enabled);
    KT_EQ_STR(sc->service, "notes");
    KT_EQ_STR(sc->id, "notes-1");
    KT_EQ_STR(sc->app, "127.0.0.1:8081");
    KT_EQ_INT(sc->inbound_listener, 0);
    KT_EQ_INT(sc->tags_count, 2);
    KT_EQ_STR(sc->tags[1], "blue");
    KT_EQ_INT(sc->meta_count, 2);
    KT_EQ_STR(sc->meta[2], "rack");
    KT_EQ_STR(sc->meta[3], "r7");
    KT_EQ_INT(sc->weight, 3);
    KT_EQ_STR(sc->version, "1.2");
    KT_EQ_STR(sc->registry, "127.0.0.1:7001"); /* the top-level one */
    KT_EQ_INT(sc->ttl_ms, 2000);
    KT_CHECK(!sc->health.tcp);
    KT_EQ_STR(sc->health.path, "/health");
    KT_EQ_INT(sc->health.interval_ms, 500);
    KT_CHECK(cfg.clusters[0].health.tcp && cfg.clusters[0].health.path == NULL);
    KT_EQ_INT(cfg.routes[0].listener_1, 2);
    KT_EQ_INT(cfg.routes[1].listener_1, 1);
    keel_proxy_config_free(&cfg);
    /* without a health_check the app gets a TCP connect */
    static const char tcp[] = "listeners: [{address: 127.0.0.1:0}]\n"
                              "sidecar: {service: s, app: 127.0.0.1:1, registry: 127.0.0.1:2}\n";
    if (parse(tcp) != 0) {
        dump_errors();
        KT_FAIL("minimal sidecar refused");
    }
    KT_CHECK(cfg.sidecar.health.tcp && cfg.sidecar.health.enabled);
    keel_proxy_config_free(&cfg);
    static const char bad[] = "listeners: [{name: in, address: 127.0.0.1:0}]\n" /* 1 */
                              "sidecar:\n"                                      /* 2 */
                              "  app: nothost\n"                                /* 3 */
                              "  inbound: nope\n"                               /* 4 */
                              "  health_check: {path: /h, tcp: true}\n"         /* 5 */
                              "clusters: [{name: a, hosts: [127.0.0.1:1]}]\n"   /* 6 */
                              "routes:\n"                                       /* 7 */
                              "  - {match: {listener: other}, cluster: a}\n";   /* 8 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(3, "'service' is required"));
    KT_CHECK(has_error(3, "is not host:port"));
    KT_CHECK(has_error(5, "give one of 'path'"));
    KT_CHECK(has_error(3, "no listener named 'nope'"));
    KT_CHECK(has_error(3, "'registry' is required"));
    KT_CHECK(has_error(8, "no listener named 'other'"));
}

/* The example in docs/proxy.md is the documentation's promise: it must load. */
static void loads_the_example_in_the_docs(void)
{
    FILE *f = fopen("docs/proxy.md", "rb");
    KT_CHECK(f != NULL);
    static char doc[65536];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = 0;
    const char *start = strstr(doc, "```yaml\n# keel-proxy-example\n");
    KT_CHECK(start != NULL);
    start += strlen("```yaml\n");
    const char *end = strstr(start, "```");
    KT_CHECK(end != NULL);
    if (keel_proxy_config_parse(start, (size_t)(end - start), &cfg, &errs) != 0) {
        dump_errors();
        KT_FAIL("the example in docs/proxy.md does not load");
    }
    KT_CHECK(cfg.routes_count >= 5);
    KT_CHECK(cfg.clusters_count >= 2);
    keel_proxy_config_free(&cfg);
}

/* ${NAME} and ${NAME:-default} take their values from the environment; an unset NAME with no
 * default is an error naming its line; $${ stays a literal ${. */
static void expands_environment_references(void)
{
    setenv("KT_PROXY_HOST", "10.77.0.2", 1);
    unsetenv("KT_PROXY_UNSET");
    const char *text = "listeners:\n"
                       "  - name: public\n"
                       "    address: ${KT_PROXY_HOST}:${KT_PROXY_UNSET:-8000}\n"
                       "routes:\n"
                       "  - name: r\n"
                       "    match: {prefix: /}\n"
                       "    direct_response: {status: 200, body: \"$${HOME}\"}\n";
    if (parse(text) != 0) {
        dump_errors();
        KT_FAIL("a config with environment references does not load");
    }
    KT_EQ_STR(cfg.listeners[0].address, "10.77.0.2:8000");
    KT_EQ_STR(cfg.routes[0].direct_body, "${HOME}");
    keel_proxy_config_free(&cfg);
    const char *unset = "listeners:\n"
                        "  - name: public\n"
                        "    address: 127.0.0.1:8000\n"
                        "admin:\n"
                        "  address: ${KT_PROXY_UNSET}\n";
    KT_CHECK(parse(unset) != 0);
    KT_CHECK(has_error(5, "KT_PROXY_UNSET"));
    const char *bad = "listeners:\n"
                      "  - name: public\n"
                      "    address: ${KT_PROXY_HOST:8000}\n";
    KT_CHECK(parse(bad) != 0);
    KT_CHECK(has_error(3, "expected ${NAME}"));
}

static void loads_tls_sections_and_refuses_bad_ones(void)
{
    static const char ok[] =
        "listeners:\n"
        "  - {name: web, address: 127.0.0.1:1, tls: {cert_file: /c.pem, key_file: /k.pem}}\n"
        "  - {address: 127.0.0.1:2}\n"
        "clusters:\n"
        "  - {name: a, hosts: [127.0.0.1:3], tls: {ca_file: /ca.pem, server_name: "
        "API.example}}\n"
        "  - {name: b, hosts: [127.0.0.1:4], tls: {verify: false}, health_check: {tcp: true}}\n"
        "  - {name: c, hosts: [127.0.0.1:5]}\n"
        "routes:\n"
        "  - {match: {prefix: /}, cluster: a}\n";
    if (parse(ok) != 0) {
        dump_errors();
        KT_FAIL("tls refused");
    }
    const keel_proxy_tls_server_t *l = &cfg.listeners[0].tls;
    KT_CHECK(l->enabled);
    KT_EQ_STR(l->cert_file, "/c.pem");
    KT_EQ_STR(l->key_file, "/k.pem");
    KT_EQ_INT(l->line, 2);
    KT_CHECK(!cfg.listeners[1].tls.enabled);
    const keel_proxy_tls_client_t *a = &cfg.clusters[0].tls, *b = &cfg.clusters[1].tls;
    KT_CHECK(a->enabled && a->verify); /* verify is on by default */
    KT_EQ_STR(a->ca_file, "/ca.pem");
    KT_EQ_STR(a->server_name, "api.example"); /* DNS names compare in lower case */
    KT_CHECK(b->enabled && !b->verify);
    KT_CHECK(b->ca_file == NULL && b->server_name == NULL);
    KT_CHECK(!cfg.clusters[2].tls.enabled);
    keel_proxy_config_free(&cfg);
    static const char bad[] =
        "listeners:\n"                                                             /* 1 */
        "  - {address: 127.0.0.1:1, tls: {cert_file: /c.pem}}\n"                   /* 2 */
        "  - {address: 127.0.0.1:2, tls: {cert_file: \"\", key_file: /k}}\n"       /* 3 */
        "clusters:\n"                                                              /* 4 */
        "  - {name: a, hosts: [127.0.0.1:3], tls: {server_name: \"a b\"}}\n"       /* 5 */
        "  - {name: b, hosts: [127.0.0.1:4], tls: {verify: maybe}}\n"              /* 6 */
        "  - {name: c, hosts: [127.0.0.1:5], health_check: {path: /h}, tls: {}}\n" /* 7 */
        "  - {name: d, hosts: [127.0.0.1:6], tls: {sni: x}}\n"                     /* 8 */
        "routes:\n"                                                                /* 9 */
        "  - name: agg\n"                                                          /* 10 */
        "    match: {prefix: /agg}\n"                                              /* 11 */
        "    aggregate:\n"                                                         /* 12 */
        "      parts:\n"                                                           /* 13 */
        "        - {name: p, cluster: a, path: /x}\n"                              /* 14 */
        "  - {match: {prefix: /}, cluster: a}\n";                                  /* 15 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(2, "'cert_file' and 'key_file' are required"));
    KT_CHECK(has_error(3, "cert_file: a file name"));
    KT_CHECK(has_error(5, "not a DNS name"));
    KT_CHECK(has_error(6, "verify"));
    KT_CHECK(has_error(7, "use 'tcp: true' on a tls cluster"));
    KT_CHECK(has_error(8, "sni"));
    KT_CHECK(has_error(14, "aggregate parts do not speak yet"));
}

static void loads_a_rollout_and_refuses_bad_ones_naming_their_lines(void)
{
    static const char ok[] =
        "listeners: [{address: 127.0.0.1:1}]\n"
        "clusters: [{name: v1, hosts: [127.0.0.1:2]}, {name: v2, hosts: [127.0.0.1:3]},\n"
        "           {name: v0, hosts: [127.0.0.1:4]}]\n"
        "routes:\n"
        "  - match: {prefix: /a}\n"
        "    rollout: {canary: v2, steps: [1, 5, 25, 50, 100], step_ms: 30000,\n"
        "              window_ms: 10000, min_requests: 50, max_error_percent: 2,\n"
        "              max_p99_ms: 500}\n"
        "    weighted_clusters: [{cluster: v1, weight: 3}, {cluster: v2, weight: 50},\n"
        "                        {cluster: v0, weight: 1}]\n"
        "  - match: {prefix: /b}\n"
        "    weighted_clusters: [{cluster: v2}, {cluster: v1}]\n"
        "    rollout: {canary: v2, steps: [10], enabled: false}\n"
        "  - {match: {prefix: /c}, cluster: v1}\n";
    if (parse(ok) != 0) {
        dump_errors();
        KT_FAIL("rollout refused");
    }
    const keel_proxy_rollout_t *a = &cfg.routes[0].rollout, *b = &cfg.routes[1].rollout;
    KT_CHECK(a->enabled);
    KT_EQ_INT(a->canary, 1); /* its slot, whichever key came first */
    KT_EQ_INT(a->others_weight, 4);
    KT_EQ_INT(a->core.steps_count, 5);
    KT_EQ_INT(a->core.steps_pct[4], 100);
    KT_EQ_INT(a->core.step_ms, 30000);
    KT_EQ_INT(a->core.window_ms, 10000);
    KT_EQ_INT(a->core.min_requests, 50);
    KT_EQ_INT(a->core.max_error_pct, 2);
    KT_EQ_INT(a->core.max_p99_ms, 500);
    KT_CHECK(!b->enabled);
    KT_EQ_INT(b->canary, 0);
    KT_EQ_INT(b->core.step_ms, 60000); /* defaults */
    KT_EQ_INT(b->core.window_ms, 30000);
    KT_EQ_INT(b->core.min_requests, 20);
    KT_EQ_INT(b->core.max_error_pct, 5);
    KT_EQ_INT(b->core.max_p99_ms, 0);
    KT_CHECK(!cfg.routes[2].rollout.enabled);
    keel_errmsg_t m;
    KT_EQ_INT(keel_rollout_config_validate(&a->core, &m), 0); /* what loads, the core takes */
    keel_proxy_config_free(&cfg);
    static const char bad[] =
        "listeners: [{address: 127.0.0.1:1}]\n"                                            /* 1 */
        "clusters: [{name: v1, hosts: [127.0.0.1:2]}, {name: v2, hosts: [127.0.0.1:3]}]\n" /* 2 */
        "routes:\n"                                                                        /* 3 */
        "  - match: {prefix: /a}\n"                                                        /* 4 */
        "    weighted_clusters: [{cluster: v1}, {cluster: v2}]\n"                          /* 5 */
        "    rollout:\n"                                                                   /* 6 */
        "      canary: v3\n"                                                               /* 7 */
        "      steps: [5, 5, 120]\n"                                                       /* 8 */
        "      step_ms: 10\n"                                                              /* 9 */
        "      window_ms: 50\n"                                                            /* 10 */
        "      min_requests: 0\n"                                                          /* 11 */
        "      max_error_percent: 101\n"                                                   /* 12 */
        "      max_p99_ms: 0\n"                                                            /* 13 */
        "      pace: fast\n"                                                               /* 14 */
        "  - {match: {prefix: /b}, cluster: v1, rollout: {canary: v1, steps: [1]}}\n"      /* 15 */
        "  - match: {prefix: /c}\n"                                                        /* 16 */
        "    weighted_clusters: [{cluster: v1, weight: 0}, {cluster: v2}]\n"               /* 17 */
        "    rollout: {canary: v2}\n"                                                      /* 18 */
        "  - match: {prefix: /d}\n"                                                        /* 19 */
        "    weighted_clusters: [{cluster: v2}, {cluster: v2}, {cluster: v1}]\n"           /* 20 */
        "    rollout: {canary: v2, steps: []}\n"                                           /* 21 */
        "  - match: {prefix: /e}\n"                                                        /* 22 */
        "    weighted_clusters: [{cluster: v2}, {cluster: v1}]\n"                          /* 23 */
        "    rollout: {canary: v2, steps: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}\n"; /* 24 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(7, "canary 'v3' is not one of the route's weighted_clusters"));
    KT_CHECK(has_error(8, "steps: must increase (5 after 5)"));
    KT_CHECK(has_error(8, "steps: 120 is out of range 1..100"));
    KT_CHECK(has_error(9, "step_ms"));
    KT_CHECK(has_error(10, "window_ms"));
    KT_CHECK(has_error(11, "min_requests"));
    KT_CHECK(has_error(12, "max_error_percent"));
    KT_CHECK(has_error(13, "max_p99_ms"));
    KT_CHECK(has_error(14, "unknown key 'pace'"));
    KT_CHECK(has_error(15, "rollout: needs weighted_clusters"));
    KT_CHECK(has_error(18, "'steps' is required"));
    KT_CHECK(has_error(18, "the clusters other than the canary have no weight"));
    KT_CHECK(has_error(21, "steps: at least one step is required"));
    KT_CHECK(has_error(21, "canary 'v2' is listed twice"));
    KT_CHECK(has_error(24, "steps: more than 16 entries"));
    if (errs.count != 15) {
        dump_errors();
        KT_FAIL("%u errors", errs.count);
    }
}

static void loads_a_list_of_rate_limits_and_refuses_more_than_four(void)
{
    const char *y = "listeners: [{address: 127.0.0.1:1}]\n"
                    "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
                    "routes:\n"
                    "  - cluster: a\n"
                    "    rate_limit:\n"
                    "      - {key: source_address, requests_per_s: 1000}\n"
                    "      - {key: \"header:X-User\", requests_per_s: 2, burst: 3, keys_max: 20}\n";
    if (parse(y) != 0) {
        dump_errors();
        KT_FAIL("a list of rate limits refused");
    }
    const keel_proxy_route_t *r = &cfg.routes[0];
    KT_EQ_INT(r->ratelimits_count, 2);
    KT_EQ_INT(r->ratelimits[0].key, KEEL_PROXY_RL_SOURCE);
    KT_EQ_U64(r->ratelimits[0].requests_per_s, 1000);
    KT_EQ_INT(r->ratelimits[1].key, KEEL_PROXY_RL_HEADER);
    KT_EQ_STR(r->ratelimits[1].header, "x-user");
    KT_EQ_U64(r->ratelimits[1].burst, 3);
    KT_EQ_INT(r->ratelimits[1].keys_max, 24); /* rounded up to a multiple of 8 */
    keel_proxy_config_free(&cfg);
    const char *five = "listeners: [{address: 127.0.0.1:1}]\n"
                       "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"
                       "routes:\n"
                       "  - cluster: a\n"
                       "    rate_limit:\n"
                       "      - {requests_per_s: 1}\n"
                       "      - {requests_per_s: 2}\n"
                       "      - {requests_per_s: 3}\n"
                       "      - {requests_per_s: 4}\n"
                       "      - {requests_per_s: 5}\n"
                       "  - cluster: a\n"
                       "    rate_limit: [{burst: 3}]\n";
    KT_EQ_INT(parse(five), KEEL_EINVAL);
    KT_CHECK(has_error(10, "rate_limit: more than 4 entries"));
    KT_CHECK(has_error(12, "'requests_per_s' is required"));
}

/* Origin patterns (docs/proxy.md, "CORS"): what --check says of a bad one, on its line. */
static void refuses_bad_cors_origin_patterns_naming_their_lines(void)
{
    static const char bad[] = "listeners: [{address: 127.0.0.1:1}]\n"                  /* 1 */
                              "clusters: [{name: a, hosts: [127.0.0.1:2]}]\n"          /* 2 */
                              "routes:\n"                                              /* 3 */
                              "  - cluster: a\n"                                       /* 4 */
                              "    cors:\n"                                            /* 5 */
                              "      allow_origins:\n"                                 /* 6 */
                              "        - \"https://*.\"\n"                             /* 7 */
                              "        - \"*.example.com\"\n"                          /* 8 */
                              "        - \"https://a.*.example.com\"\n"                /* 9 */
                              "        - \"https://*example.com\"\n"                   /* 10 */
                              "        - \"ftp://*.example.com\"\n"                    /* 11 */
                              "        - \"https://*.example.com/app\"\n"              /* 12 */
                              "        - \"https://*.example.com:0\"\n"                /* 13 */
                              "        - {prefix: \"https://a b\"}\n"                  /* 14 */
                              "        - {regex: \"https://(a\"}\n"                    /* 15 */
                              "        - {suffix: .a.example, exact: \"https://a\"}\n" /* 16 */
                              "        - {glob: x}\n"                                  /* 17 */
                              "      allow_methods: [\"*\", get]\n";                   /* 18 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(7, "'https://*.' has no host after '*.'"));
    KT_CHECK(has_error(8, "'*.example.com' has no scheme"));
    KT_CHECK(has_error(9, "has a '*' not at the start of the host"));
    KT_CHECK(has_error(10, "has a '*' that is not a whole label"));
    KT_CHECK(has_error(11, "has a scheme other than http or https"));
    KT_CHECK(has_error(12, "has a path"));
    KT_CHECK(has_error(13, "has a bad host or port"));
    KT_CHECK(has_error(14, "prefix 'https://a b' has a character an origin never has"));
    KT_CHECK(has_error(15, "regex 'https://(a'"));
    KT_CHECK(has_error(16, "give one of exact, prefix, suffix, regex"));
    KT_CHECK(has_error(17, "unknown key 'glob'"));
    KT_CHECK(has_error(17, "give one of exact, prefix, suffix, regex"));
    KT_CHECK(has_error(18, "'get' is not an upper-case method name")); /* "*" itself is taken */
    if (errs.count != 13) {
        dump_errors();
        KT_FAIL("%u errors", errs.count);
    }
}

int main(void)
{
    KT_RUN(loads_every_section_of_a_full_config);
    KT_RUN(names_the_line_of_every_error);
    KT_RUN(reports_a_yaml_syntax_error_at_its_line);
    KT_RUN(refuses_duplicate_keys_and_duplicate_names);
    KT_RUN(a_repeated_top_level_section_is_an_error_not_a_leak);
    KT_RUN(refuses_header_values_that_would_split_a_message);
    KT_RUN(needs_a_listener_and_a_mapping_at_the_top);
    KT_RUN(keeps_at_most_the_error_ceiling_and_counts_the_rest);
    KT_RUN(checks_ranges_of_limits);
    KT_RUN(loads_the_example_in_the_docs);
    KT_RUN(loads_jwt_providers_and_route_requirements);
    KT_RUN(refuses_bad_jwt_blocks_naming_their_lines);
    KT_RUN(loads_service_clusters_fed_by_the_registry);
    KT_RUN(loads_the_retry_buffer_and_idempotency_header);
    KT_RUN(loads_a_hedge_and_refuses_bad_ones_naming_their_lines);
    KT_RUN(loads_workers_and_refuses_a_count_out_of_range);
    KT_RUN(loads_a_sidecar_section_and_listener_matches);
    KT_RUN(loads_slow_start_and_refuses_it_where_it_cannot_work);
    KT_RUN(expands_environment_references);
    KT_RUN(loads_tls_sections_and_refuses_bad_ones);
    KT_RUN(loads_a_rollout_and_refuses_bad_ones_naming_their_lines);
    KT_RUN(loads_tracing_and_names_the_line_of_its_errors);
    KT_RUN(loads_a_list_of_rate_limits_and_refuses_more_than_four);
    KT_RUN(refuses_bad_cors_origin_patterns_naming_their_lines);
    return kt_done();
}
