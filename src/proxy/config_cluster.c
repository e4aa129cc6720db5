/* config_cluster.c - the config's clusters (hosts or a registry service, balancing, pool,
 * circuit breaker, outlier detection, health checks) and JWT providers. */
#include "proxy/config_int.h"

#include "base/err.h"
#include "core/balance.h"

#include <stdlib.h>
#include <string.h>

/* ---- clusters ---------------------------------------------------------------------------- */

static void host_address(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_address(c, v, "address", false, &((keel_proxy_host_t *)base)->address);
}

static const field_t host_fields[] = {
    {"address", F_FN, 0, 0, 0, host_address},
    {"weight", F_U32, offsetof(keel_proxy_host_t, weight), 1, KEEL_BALANCE_WEIGHT_MAX, NULL},
};

static void load_host(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cluster_t *cl = arg;
    keel_proxy_host_t *h = &cl->hosts[i];
    h->weight = 1;
    cl->hosts_count = i + 1;
    if (item->type == YAML_SCALAR_NODE) { /* "- 127.0.0.1:9001" shorthand */
        keel__cfg_to_address(c, item, "hosts", false, &h->address);
    } else {
        keel__cfg_load_fields(c, item, host_fields, N(host_fields), h, "host");
        if (h->address == NULL)
            ERR(c, item, "host: 'address' is required");
    }
    for (uint32_t k = 0; h->address && k < i; k++)
        if (cl->hosts[k].address && strcmp(cl->hosts[k].address, h->address) == 0)
            ERR(c, item, "host: %s is listed twice", h->address);
}

static void cluster_hosts(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "hosts", KEEL_PROXY_HOSTS_MAX, load_host, base);
}

static void cluster_balance(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_cluster_t *cl = base;
    if (!keel__cfg_to_str(c, v, "balance", false, &cl->balance))
        return;
    const keel_balance_policy_t *pol;
    keel_errmsg_t msg;
    if (keel_balance_policy_find(cl->balance, NULL, 0, &pol, &msg) != 0)
        ERR(c, v, "balance: %s", msg.text);
}

/* "source_address" or "header:NAME". */
static void cluster_hash_on(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_cluster_t *cl = base;
    const char *s;
    if (!keel__cfg_want_scalar(c, v, "hash_on", &s))
        return;
    if (strcmp(s, "source_address") == 0) {
        cl->hash_on = KEEL_PROXY_HASH_SOURCE;
    } else if (strncmp(s, "header:", 7) == 0 && s[7] != 0 &&
               strlen(s + 7) < KEEL_PROXY_NAME_BYTES_MAX) {
        cl->hash_on = KEEL_PROXY_HASH_HEADER;
        free(cl->hash_header);
        cl->hash_header = keel__cfg_dup_lower(s + 7, true);
    } else {
        ERR(c, v, "hash_on: '%s' is not source_address or header:NAME", s);
    }
}

static void cluster_pool(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"idle_max", F_U32, offsetof(keel_proxy_cluster_t, idle_max), 0, 100000, NULL},
        {"requests_per_connection_max", F_U32,
         offsetof(keel_proxy_cluster_t, requests_per_conn_max), 0, UINT32_MAX, NULL},
        {"idle_timeout_ms", F_MS, offsetof(keel_proxy_cluster_t, idle_timeout_ms), 10, DAY_MS,
         NULL},
    };
    keel__cfg_load_fields(c, v, f, N(f), base, "pool");
}

static void cluster_breaker(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_cluster_t, breaker_enabled), 0, 0, NULL},
        {"failure_rate_pct", F_U32, offsetof(keel_proxy_cluster_t, breaker_failure_rate_pct), 1,
         100, NULL},
        {"calls_min", F_U32, offsetof(keel_proxy_cluster_t, breaker_calls_min), 1, 100000, NULL},
        {"window_calls", F_U32, offsetof(keel_proxy_cluster_t, breaker_window_calls), 1, 100000,
         NULL},
        {"consecutive_failures", F_U32,
         offsetof(keel_proxy_cluster_t, breaker_consecutive_failures), 0, 100000, NULL},
        {"open_ms", F_MS, offsetof(keel_proxy_cluster_t, breaker_open_ms), 1, DAY_MS, NULL},
        {"probes", F_U32, offsetof(keel_proxy_cluster_t, breaker_probes), 1, 1000, NULL},
        {"slow_call_rate_pct", F_U32, offsetof(keel_proxy_cluster_t, breaker_slow_call_rate_pct), 0,
         100, NULL},
        {"slow_call_ms", F_MS, offsetof(keel_proxy_cluster_t, breaker_slow_call_ms), 1, DAY_MS,
         NULL},
    };
    ((keel_proxy_cluster_t *)base)->breaker_enabled = true;
    keel__cfg_load_fields(c, v, f, N(f), base, "circuit_breaker");
}

static void cluster_outlier(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_cluster_t, outlier_enabled), 0, 0, NULL},
        {"consecutive_5xx", F_U32, offsetof(keel_proxy_cluster_t, outlier_consecutive_5xx), 0,
         100000, NULL},
        {"consecutive_gateway", F_U32, offsetof(keel_proxy_cluster_t, outlier_consecutive_gateway),
         0, 100000, NULL},
        {"consecutive_local", F_U32, offsetof(keel_proxy_cluster_t, outlier_consecutive_local), 0,
         100000, NULL},
        {"interval_ms", F_MS, offsetof(keel_proxy_cluster_t, outlier_interval_ms), 10, DAY_MS,
         NULL},
        {"base_ejection_ms", F_MS, offsetof(keel_proxy_cluster_t, outlier_base_ejection_ms), 1,
         DAY_MS, NULL},
        {"max_ejection_ms", F_MS, offsetof(keel_proxy_cluster_t, outlier_max_ejection_ms), 1,
         DAY_MS, NULL},
        {"max_ejection_pct", F_U32, offsetof(keel_proxy_cluster_t, outlier_max_ejection_pct), 0,
         100, NULL},
        {"success_rate_stdev_factor", F_U32,
         offsetof(keel_proxy_cluster_t, outlier_sr_stdev_factor), 0, 100000, NULL},
        {"success_rate_minimum_hosts", F_U32,
         offsetof(keel_proxy_cluster_t, outlier_sr_minimum_hosts), 1, KEEL_PROXY_HOSTS_MAX, NULL},
        {"success_rate_request_volume", F_U32,
         offsetof(keel_proxy_cluster_t, outlier_sr_request_volume), 1, 1000000, NULL},
    };
    ((keel_proxy_cluster_t *)base)->outlier_enabled = true;
    keel__cfg_load_fields(c, v, f, N(f), base, "outlier_detection");
}

static void health_path(ctx_t *c, yaml_node_t *v, void *base)
{
    char **p = &((keel_proxy_health_t *)base)->path;
    if (keel__cfg_to_str(c, v, "path", false, p) && (*p)[0] != '/')
        ERR(c, v, "path: '%s' must start with '/'", *p);
}

void keel__cfg_health_default(keel_proxy_health_t *h)
{
    h->interval_ms = 5000;
    h->timeout_ms = 1000;
    h->healthy_threshold = 2;
    h->unhealthy_threshold = 3;
}

/* A health_check section (a cluster's or the sidecar's app's): GET path, or a TCP connect. */
void keel__cfg_load_health(ctx_t *c, yaml_node_t *v, keel_proxy_health_t *h)
{
    static const field_t f[] = {
        {"path", F_FN, 0, 0, 0, health_path},
        {"tcp", F_BOOL, offsetof(keel_proxy_health_t, tcp), 0, 0, NULL},
        {"interval_ms", F_MS, offsetof(keel_proxy_health_t, interval_ms), 10, DAY_MS, NULL},
        {"timeout_ms", F_MS, offsetof(keel_proxy_health_t, timeout_ms), 1, DAY_MS, NULL},
        {"healthy_threshold", F_U32, offsetof(keel_proxy_health_t, healthy_threshold), 1, 1000,
         NULL},
        {"unhealthy_threshold", F_U32, offsetof(keel_proxy_health_t, unhealthy_threshold), 1, 1000,
         NULL},
    };
    h->enabled = true;
    keel__cfg_load_fields(c, v, f, N(f), h, "health_check");
    if ((h->path == NULL) == !h->tcp)
        ERR(c, v, "health_check: give one of 'path' (an HTTP GET) or 'tcp: true' (a connect)");
    if (h->timeout_ms > h->interval_ms)
        ERR(c, v, "health_check: timeout_ms must not exceed interval_ms");
}

static void cluster_health(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_load_health(c, v, &((keel_proxy_cluster_t *)base)->health);
}

static void cluster_slow_start(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_cluster_t, slow_start_enabled), 0, 0, NULL},
        {"window_ms", F_MS, offsetof(keel_proxy_cluster_t, slow_start_window_ms), 0,
         KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS, NULL},
        {"min_weight_pct", F_U32, offsetof(keel_proxy_cluster_t, slow_start_min_weight_pct), 0, 100,
         NULL},
        {"aggression", F_U32, offsetof(keel_proxy_cluster_t, slow_start_aggression),
         KEEL_BALANCE_SLOW_START_AGGRESSION_MIN, KEEL_BALANCE_SLOW_START_AGGRESSION_MAX, NULL},
    };
    keel_proxy_cluster_t *cl = base;
    cl->slow_start_enabled = true;
    cl->slow_start_line = line_of(v);
    keel__cfg_load_fields(c, v, f, N(f), base, "slow_start");
}

static void cluster_service(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_reg_name(c, v, "service", &((keel_proxy_cluster_t *)base)->service);
}

static void cluster_tag(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_reg_name(c, v, "tag", &((keel_proxy_cluster_t *)base)->tag);
}

static void ctls_ca(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_tls_client_t *t = base;
    t->ca_line = line_of(v);
    keel__cfg_tls_file(c, v, "ca_file", &t->ca_file);
}

/* A DNS name: letters, digits, '-' and '.', 1..253 bytes. */
static void ctls_server_name(ctx_t *c, yaml_node_t *v, void *base)
{
    char **sn = &((keel_proxy_tls_client_t *)base)->server_name;
    if (!keel__cfg_to_str(c, v, "server_name", true, sn))
        return;
    size_t n = strlen(*sn);
    if (n == 0 || n >= KEEL_PROXY_SERVER_NAME_BYTES_MAX ||
        strspn(*sn, "abcdefghijklmnopqrstuvwxyz0123456789-.") != n)
        ERR(c, v, "server_name: '%s' is not a DNS name", *sn);
}

static void cluster_tls(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_tls_client_t, enabled), 0, 0, NULL},
        {"ca_file", F_FN, 0, 0, 0, ctls_ca},
        {"server_name", F_FN, 0, 0, 0, ctls_server_name},
        {"verify", F_BOOL, offsetof(keel_proxy_tls_client_t, verify), 0, 0, NULL},
    };
    keel_proxy_tls_client_t *t = &((keel_proxy_cluster_t *)base)->tls;
    t->enabled = true;
    t->verify = true;
    t->line = line_of(v);
    keel__cfg_load_fields(c, v, f, N(f), t, "tls");
}

static const field_t cluster_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_cluster_t, name), 0, 0, NULL},
    {"hosts", F_FN, 0, 0, 0, cluster_hosts},
    {"service", F_FN, 0, 0, 0, cluster_service},
    {"tag", F_FN, 0, 0, 0, cluster_tag},
    {"balance", F_FN, 0, 0, 0, cluster_balance},
    {"hash_on", F_FN, 0, 0, 0, cluster_hash_on},
    {"connect_timeout_ms", F_MS, offsetof(keel_proxy_cluster_t, connect_timeout_ms), 1, DAY_MS,
     NULL},
    {"pool", F_FN, 0, 0, 0, cluster_pool},
    {"max_requests", F_U32, offsetof(keel_proxy_cluster_t, max_requests), 0, 1000000, NULL},
    {"circuit_breaker", F_FN, 0, 0, 0, cluster_breaker},
    {"outlier_detection", F_FN, 0, 0, 0, cluster_outlier},
    {"health_check", F_FN, 0, 0, 0, cluster_health},
    {"slow_start", F_FN, 0, 0, 0, cluster_slow_start},
    {"tls", F_FN, 0, 0, 0, cluster_tls},
};

static void cluster_default(keel_proxy_cluster_t *cl)
{
    cl->connect_timeout_ms = 1000;
    cl->idle_max = 64;
    cl->requests_per_conn_max = 0;
    cl->idle_timeout_ms = 30000;
    cl->max_requests = 0;
    cl->breaker_failure_rate_pct = 50;
    cl->breaker_calls_min = 20;
    cl->breaker_window_calls = 100;
    cl->breaker_consecutive_failures = 0;
    cl->breaker_open_ms = 10000;
    cl->breaker_probes = 3;
    cl->outlier_consecutive_5xx = 5;
    cl->outlier_consecutive_gateway = 0;
    cl->outlier_consecutive_local = 5;
    cl->outlier_interval_ms = 1000;
    cl->outlier_base_ejection_ms = 30000;
    cl->outlier_max_ejection_ms = 300000;
    cl->outlier_max_ejection_pct = 50;
    cl->outlier_sr_stdev_factor = 0;
    cl->outlier_sr_minimum_hosts = 5;
    cl->outlier_sr_request_volume = 100;
    cl->breaker_slow_call_rate_pct = 0;
    cl->breaker_slow_call_ms = 60000;
    keel__cfg_health_default(&cl->health);
    cl->slow_start_window_ms = 30000;
    cl->slow_start_min_weight_pct = 10; /* Envoy's min_weight_percent */
    cl->slow_start_aggression = 1000;
}

static void load_cluster(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cluster_t *cl = &c->cfg->clusters[i];
    cluster_default(cl);
    cl->line = line_of(item);
    c->cfg->clusters_count = i + 1;
    keel__cfg_load_fields(c, item, cluster_fields, N(cluster_fields), cl, "cluster");
    if (cl->name == NULL || cl->name[0] == 0 || strlen(cl->name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, item, "cluster: 'name' is required (1..%u bytes)", KEEL_PROXY_NAME_BYTES_MAX - 1);
    if (cl->service != NULL && cl->hosts_count > 0)
        ERR(c, item, "cluster '%s': give one of hosts, service", cl->name ? cl->name : "?");
    else if (cl->service == NULL && cl->hosts_count == 0)
        ERR(c, item, "cluster '%s': 'hosts' needs at least one host (or give 'service')",
            cl->name ? cl->name : "?");
    if (cl->tag != NULL && cl->service == NULL)
        ERR(c, item, "cluster '%s': 'tag' needs 'service'", cl->name ? cl->name : "?");
    for (uint32_t k = 0; cl->name && k < i; k++)
        if (c->cfg->clusters[k].name && strcmp(c->cfg->clusters[k].name, cl->name) == 0)
            ERR(c, item, "cluster '%s' is defined twice", cl->name);
    if (cl->balance == NULL)
        cl->balance = strdup(cl->hash_on != KEEL_PROXY_HASH_NONE ? "ring" : "round_robin");
    const keel_balance_policy_t *pol;
    if (cl->slow_start_enabled && cl->slow_start_window_ms > 0 && cl->balance &&
        keel_balance_policy_find(cl->balance, NULL, 0, &pol, NULL) == 0 && pol->keyed)
        keel__cfg_errl(c, cl->slow_start_line,
                       "slow_start: balance %s picks hosts by key, and a ramp would move keys; "
                       "slow start needs round_robin, weighted_rr, least_conn, p2c or random",
                       cl->balance);
    if (cl->tls.enabled && cl->health.enabled && !cl->health.tcp)
        keel__cfg_errl(c, cl->tls.line,
                       "cluster '%s': tls: an HTTP health_check (path) is plain HTTP; use "
                       "'tcp: true' on a tls cluster",
                       cl->name ? cl->name : "?");
}

void keel__cfg_top_clusters(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "clusters", KEEL_PROXY_CLUSTERS_MAX, load_cluster, NULL);
}

/* ---- JWT providers ----------------------------------------------------------------------- */

/* Fields the proxy writes or that frame the message: a claim must not be forwarded as one. */
static const char *const reserved_headers[] = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "via",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-keel-timeout-ms",
    "traceparent",
    "tracestate",
    "b3",
};

static void cth_claim(ctx_t *c, yaml_node_t *v, void *base)
{
    char **claim = &((keel_proxy_claim_header_t *)base)->claim;
    if (keel__cfg_to_str(c, v, "claim", false, claim) &&
        ((*claim)[0] == 0 || strlen(*claim) >= KEEL_PROXY_NAME_BYTES_MAX))
        ERR(c, v, "claim: 1..%u bytes", KEEL_PROXY_NAME_BYTES_MAX - 1);
}

static void cth_header(ctx_t *c, yaml_node_t *v, void *base)
{
    char **h = &((keel_proxy_claim_header_t *)base)->header;
    if (!keel__cfg_to_field_name(c, v, "header", h))
        return;
    for (size_t i = 0; i < N(reserved_headers); i++)
        if (strcmp(*h, reserved_headers[i]) == 0)
            ERR(c, v, "header: '%s' is written by the proxy or frames the request", *h);
}

static void load_claim_header(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {
        {"claim", F_FN, 0, 0, 0, cth_claim},
        {"header", F_FN, 0, 0, 0, cth_header},
    };
    keel_proxy_jwt_provider_t *pv = arg;
    keel_proxy_claim_header_t *ch = &pv->claims_to_headers[i];
    pv->claims_to_headers_count = i + 1;
    keel__cfg_load_fields(c, item, f, N(f), ch, "claims_to_headers");
    if (ch->claim == NULL || ch->header == NULL) {
        ERR(c, item, "claims_to_headers: 'claim' and 'header' are required");
        return;
    }
    for (uint32_t k = 0; k < i; k++)
        if (pv->claims_to_headers[k].header &&
            strcmp(pv->claims_to_headers[k].header, ch->header) == 0)
            ERR(c, item, "claims_to_headers: header '%s' is written twice", ch->header);
}

static void pv_claims(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "claims_to_headers", KEEL_PROXY_JWT_CLAIM_HEADERS_MAX,
                        load_claim_header, base);
}

static void fh_name(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_field_name(c, v, "name", &((keel_proxy_jwt_from_header_t *)base)->name);
}

static void fh_prefix(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_header_value(c, v, "value_prefix",
                              &((keel_proxy_jwt_from_header_t *)base)->value_prefix);
}

static void load_from_header(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {
        {"name", F_FN, 0, 0, 0, fh_name},
        {"value_prefix", F_FN, 0, 0, 0, fh_prefix},
    };
    keel_proxy_jwt_provider_t *pv = arg;
    keel_proxy_jwt_from_header_t *fh = &pv->from_headers[i];
    pv->from_headers_count = i + 1;
    keel__cfg_load_fields(c, item, f, N(f), fh, "from_headers");
    if (fh->name == NULL) {
        ERR(c, item, "from_headers: 'name' is required");
        return;
    }
    for (uint32_t k = 0; k < i; k++)
        if (pv->from_headers[k].name && strcmp(pv->from_headers[k].name, fh->name) == 0)
            ERR(c, item, "from_headers: '%s' is named twice", fh->name);
}

static void pv_from_headers(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "from_headers", KEEL_PROXY_JWT_FROM_MAX, load_from_header, base);
}

static void load_from_param(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_jwt_provider_t *pv = arg;
    pv->from_params_count = i + 1;
    char **name = &pv->from_params[i];
    if (!keel__cfg_to_str(c, item, "from_params", false, name))
        return;
    size_t len = strlen(*name);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t k = 0; ok && k < len; k++) /* sent as they are in a query: no '&', '=' or '#' */
        ok = (*name)[k] > ' ' && (*name)[k] < 0x7f && strchr("&=#", (*name)[k]) == NULL;
    if (!ok)
        ERR(c, item, "from_params: '%s' is not a query parameter name", *name);
}

static void pv_from_params(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "from_params", KEEL_PROXY_JWT_FROM_MAX, load_from_param, base);
}

static void load_audience(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_jwt_provider_t *pv = arg;
    pv->audiences_count = i + 1;
    keel__cfg_to_str(c, item, "audiences", false, &pv->audiences[i]);
}

static void pv_audiences(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "audiences", KEEL_PROXY_JWT_AUDIENCES_MAX, load_audience, base);
}

static void pv_jwks_file(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_jwt_provider_t *pv = base;
    pv->jwks_line = line_of(v);
    keel__cfg_to_str(c, v, "jwks_file", false, &pv->jwks_file);
}

static void pv_jwks(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_jwt_provider_t *pv = base;
    const char *s = scalar(v);
    pv->jwks_line = line_of(v);
    if (s == NULL) {
        ERR(c, v, "jwks: expected the JWKS document as one string");
        return;
    }
    free(pv->jwks); /* up to the JWKS ceiling, beyond KEEL_PROXY_VALUE_BYTES_MAX */
    pv->jwks = strdup(s);
}

static void rj_cluster(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_remote_jwks_t *rj = base;
    rj->line = line_of(v); /* where an unknown cluster is named */
    if (keel__cfg_to_str(c, v, "cluster", false, &rj->cluster_name) &&
        strlen(rj->cluster_name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, v, "cluster name '%s' is too long", rj->cluster_name);
}

static void rj_path(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_remote_jwks_t *rj = base;
    if (!keel__cfg_to_str(c, v, "path", false, &rj->path))
        return;
    bool ok = rj->path[0] == '/' && strlen(rj->path) < KEEL_PROXY_JWKS_PATH_BYTES_MAX;
    for (const char *q = rj->path; ok && *q; q++)
        ok = (unsigned char)*q > ' ' && (unsigned char)*q < 0x7f && *q != '#';
    if (!ok)
        ERR(c, v,
            "path: '%.80s' must start with '/', hold no space, control character or '#', and be "
            "shorter than %u bytes",
            rj->path, KEEL_PROXY_JWKS_PATH_BYTES_MAX);
}

/* remote_jwks: {cluster, path, timeout_ms, cache_duration_ms, retry_backoff_base_ms,
 * retry_backoff_cap_ms}; the cluster is resolved with the routes' (config.c). */
static void pv_remote_jwks(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"cluster", F_FN, 0, 0, 0, rj_cluster},
        {"path", F_FN, 0, 0, 0, rj_path},
        {"timeout_ms", F_MS, offsetof(keel_proxy_remote_jwks_t, timeout_ms), 1,
         KEEL_PROXY_JWKS_TIMEOUT_MS_MAX, NULL},
        {"cache_duration_ms", F_MS, offsetof(keel_proxy_remote_jwks_t, cache_duration_ms),
         KEEL_PROXY_JWKS_CACHE_MS_MIN, DAY_MS, NULL},
        {"retry_backoff_base_ms", F_MS, offsetof(keel_proxy_remote_jwks_t, retry_backoff_base_ms),
         KEEL_PROXY_JWKS_BACKOFF_MS_MIN, KEEL_PROXY_JWKS_BACKOFF_MS_MAX, NULL},
        {"retry_backoff_cap_ms", F_MS, offsetof(keel_proxy_remote_jwks_t, retry_backoff_cap_ms),
         KEEL_PROXY_JWKS_BACKOFF_MS_MIN, KEEL_PROXY_JWKS_BACKOFF_MS_MAX, NULL},
    };
    keel_proxy_jwt_provider_t *pv = base;
    keel_proxy_remote_jwks_t *rj = &pv->remote_jwks;
    pv->jwks_line = line_of(v);
    rj->enabled = true;
    rj->line = line_of(v);
    rj->timeout_ms = KEEL_PROXY_JWKS_TIMEOUT_MS_DEFAULT;
    rj->cache_duration_ms = KEEL_PROXY_JWKS_CACHE_MS_DEFAULT;
    rj->retry_backoff_base_ms = KEEL_PROXY_JWKS_BACKOFF_BASE_MS_DEFAULT;
    rj->retry_backoff_cap_ms = KEEL_PROXY_JWKS_BACKOFF_CAP_MS_DEFAULT;
    if (v->type != YAML_MAPPING_NODE) {
        ERR(c, v, "remote_jwks: expected a mapping {cluster, path, ...}");
        return;
    }
    keel__cfg_load_fields(c, v, f, N(f), rj, "remote_jwks");
    if (rj->cluster_name == NULL || rj->path == NULL)
        ERR(c, v, "remote_jwks: 'cluster' and 'path' are required");
    if (rj->retry_backoff_cap_ms < rj->retry_backoff_base_ms)
        ERR(c, v, "remote_jwks: retry_backoff_cap_ms (%llu) is below retry_backoff_base_ms (%llu)",
            (unsigned long long)rj->retry_backoff_cap_ms,
            (unsigned long long)rj->retry_backoff_base_ms);
}

static const field_t provider_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_jwt_provider_t, name), 0, 0, NULL},
    {"issuer", F_STR, offsetof(keel_proxy_jwt_provider_t, issuer), 0, 0, NULL},
    {"audiences", F_FN, 0, 0, 0, pv_audiences},
    {"jwks_file", F_FN, 0, 0, 0, pv_jwks_file},
    {"jwks", F_FN, 0, 0, 0, pv_jwks},
    {"remote_jwks", F_FN, 0, 0, 0, pv_remote_jwks},
    {"clock_skew_s", F_U32, offsetof(keel_proxy_jwt_provider_t, clock_skew_s), 0,
     KEEL_PROXY_JWT_SKEW_S_MAX, NULL},
    {"require_exp", F_BOOL, offsetof(keel_proxy_jwt_provider_t, require_exp), 0, 0, NULL},
    {"forward", F_BOOL, offsetof(keel_proxy_jwt_provider_t, forward), 0, 0, NULL},
    {"claims_to_headers", F_FN, 0, 0, 0, pv_claims},
    {"from_headers", F_FN, 0, 0, 0, pv_from_headers},
    {"from_params", F_FN, 0, 0, 0, pv_from_params},
};

static void load_provider(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_jwt_provider_t *pv = &c->cfg->jwt_providers[i];
    pv->line = line_of(item);
    pv->clock_skew_s = 60;
    pv->require_exp = true;
    c->cfg->jwt_providers_count = i + 1;
    keel__cfg_load_fields(c, item, provider_fields, N(provider_fields), pv, "jwt provider");
    if (pv->name == NULL || pv->name[0] == 0 || strlen(pv->name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, item, "jwt provider: 'name' is required (1..%u bytes)",
            KEEL_PROXY_NAME_BYTES_MAX - 1);
    if ((pv->jwks_file != NULL) + (pv->jwks != NULL) + pv->remote_jwks.enabled != 1)
        ERR(c, item, "jwt provider '%s': give one of jwks_file, jwks, remote_jwks",
            pv->name ? pv->name : "?");
    for (uint32_t k = 0; pv->name && k < i; k++)
        if (c->cfg->jwt_providers[k].name && strcmp(c->cfg->jwt_providers[k].name, pv->name) == 0)
            ERR(c, item, "jwt provider '%s' is defined twice", pv->name);
}

void keel__cfg_top_jwt_providers(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "jwt_providers", KEEL_PROXY_JWT_PROVIDERS_MAX, load_provider, NULL);
}