/* config.c - YAML text to keel_proxy_config_t, through field tables, with every error's line. */
#include "proxy/config.h"

#include "base/err.h"
#include "core/balance.h"
#include "proxy/h1.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/*
 * The loader walks libyaml's document tree. Each mapping is described by a
 * table of fields (key, type, offset into the struct, bounds); a section with
 * structure of its own has a function. Unknown keys, duplicate keys, wrong
 * types and out-of-range values are errors that name the line; loading goes
 * on after an error so that one run reports them all (up to
 * KEEL_PROXY_ERRORS_MAX). Cross-references (a route's cluster) are resolved
 * after every cluster is known, wherever it appears in the file.
 */

typedef struct ctx {
    yaml_document_t *doc;
    keel_proxy_errors_t *errs;
    keel_proxy_config_t *cfg;
} ctx_t;

__attribute__((format(printf, 3, 4))) static void errl(ctx_t *c, int line, const char *fmt, ...)
{
    if (c->errs->count >= KEEL_PROXY_ERRORS_MAX) {
        c->errs->dropped++;
        return;
    }
    keel_proxy_error_t *e = &c->errs->e[c->errs->count++];
    e->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof(e->text), fmt, ap);
    va_end(ap);
}

static int line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

#define ERR(c, node, ...) errl((c), line_of(node), __VA_ARGS__)

static yaml_node_t *node_at(ctx_t *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* ---- scalar conversions ------------------------------------------------------------------ */

static bool want_scalar(ctx_t *c, yaml_node_t *n, const char *key, const char **out)
{
    *out = scalar(n);
    if (*out == NULL) {
        ERR(c, n, "%s: expected a single value", key);
        return false;
    }
    if (strlen(*out) > KEEL_PROXY_VALUE_BYTES_MAX) {
        ERR(c, n, "%s: value longer than %u bytes", key, KEEL_PROXY_VALUE_BYTES_MAX);
        return false;
    }
    return true;
}

static bool to_u64(ctx_t *c, yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi,
                   uint64_t *out)
{
    const char *s;
    if (!want_scalar(c, n, key, &s))
        return false;
    uint64_t v = 0;
    size_t len = strlen(s);
    if (len == 0 || len > 19) {
        ERR(c, n, "%s: '%s' is not a whole number", key, s);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            ERR(c, n, "%s: '%s' is not a whole number", key, s);
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v < lo || v > hi) {
        ERR(c, n, "%s: %llu is out of range %llu..%llu", key, (unsigned long long)v,
            (unsigned long long)lo, (unsigned long long)hi);
        return false;
    }
    *out = v;
    return true;
}

static bool to_bool(ctx_t *c, yaml_node_t *n, const char *key, bool *out)
{
    const char *s;
    if (!want_scalar(c, n, key, &s))
        return false;
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0)
        *out = false;
    else {
        ERR(c, n, "%s: '%s' is not true or false", key, s);
        return false;
    }
    return true;
}

static char *dup_lower(const char *s, bool low)
{
    char *d = strdup(s);
    if (d != NULL && low)
        for (char *p = d; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
    return d;
}

static bool to_str(ctx_t *c, yaml_node_t *n, const char *key, bool low, char **out)
{
    const char *s;
    if (!want_scalar(c, n, key, &s))
        return false;
    free(*out);
    *out = dup_lower(s, low);
    if (*out == NULL) {
        ERR(c, n, "%s: out of memory", key);
        return false;
    }
    return true;
}

/* A field name: a token (RFC 9110 §5.6.2), stored lower-case. */
static bool to_field_name(ctx_t *c, yaml_node_t *n, const char *key, char **out)
{
    if (!to_str(c, n, key, true, out))
        return false;
    size_t len = strlen(*out);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok =
            (*out)[i] > ' ' && (*out)[i] < 0x7f && strchr("()<>@,;:\\\"/[]?={}", (*out)[i]) == NULL;
    if (!ok)
        ERR(c, n, "%s: '%s' is not a header name", key, *out);
    return ok;
}

/* A value sent in a header: no CR, LF or NUL (they would split the message). */
static bool to_header_value(ctx_t *c, yaml_node_t *n, const char *key, char **out)
{
    if (!to_str(c, n, key, false, out))
        return false;
    for (const char *p = *out; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            ERR(c, n, "%s: control character in a header value", key);
            return false;
        }
    return true;
}

/* "host:port" with a port in 1..65535 (0 too where any_port: a listener the kernel places);
 * the runtime resolves nothing, so hosts are numeric. */
static bool to_address(ctx_t *c, yaml_node_t *n, const char *key, bool any_port, char **out)
{
    if (!to_str(c, n, key, false, out))
        return false;
    const char *colon = strrchr(*out, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    bool digits = colon && colon[1] != 0 && strspn(colon + 1, "0123456789") == strlen(colon + 1);
    if (colon == NULL || colon == *out || !digits || port < (any_port ? 0 : 1) || port > 65535) {
        ERR(c, n, "%s: '%s' is not host:port (port %d..65535)", key, *out, any_port ? 0 : 1);
        return false;
    }
    return true;
}

/* ---- field tables ------------------------------------------------------------------------ */

typedef enum ftype { F_U32, F_U64, F_MS, F_BOOL, F_STR, F_FN } ftype_t;

typedef struct field {
    const char *key;
    ftype_t type;
    size_t off;
    uint64_t lo, hi;
    void (*fn)(ctx_t *c, yaml_node_t *value, void *base);
} field_t;

#define FIELDS_MAX 32u

static void load_fields(ctx_t *c, yaml_node_t *map, const field_t *fields, size_t n, void *base,
                        const char *what)
{
    assert(n <= FIELDS_MAX);
    if (map->type != YAML_MAPPING_NODE) {
        ERR(c, map, "%s: expected a mapping (key: value lines)", what);
        return;
    }
    uint32_t seen = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        const char *key = scalar(k);
        size_t i = 0;
        while (key != NULL && i < n && strcmp(fields[i].key, key) != 0)
            i++;
        if (key == NULL || i == n) {
            ERR(c, k, "%s: unknown key '%s'", what, key ? key : "?");
            continue;
        }
        if (seen & (1u << i)) {
            ERR(c, k, "%s: '%s' given twice", what, key);
            continue;
        }
        seen |= 1u << i;
        const field_t *f = &fields[i];
        uint8_t *dst = (uint8_t *)base + f->off;
        uint64_t u;
        switch (f->type) {
        case F_U32:
            if (to_u64(c, v, key, f->lo, f->hi, &u))
                *(uint32_t *)dst = (uint32_t)u;
            break;
        case F_U64:
            if (to_u64(c, v, key, f->lo, f->hi, &u))
                *(uint64_t *)dst = u;
            break;
        case F_MS:
            if (to_u64(c, v, key, f->lo, f->hi, &u))
                *(keel_ms_t *)dst = (keel_ms_t)u;
            break;
        case F_BOOL:
            to_bool(c, v, key, (bool *)dst);
            break;
        case F_STR:
            to_str(c, v, key, false, (char **)dst);
            break;
        case F_FN:
            f->fn(c, v, base);
            break;
        }
    }
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define DAY_MS 86400000u

/* Iterates a sequence node, calling fn(c, item, i) for each; refuses more than max items. */
static void each_item(ctx_t *c, yaml_node_t *seq, const char *what, uint32_t max,
                      void (*fn)(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg), void *arg)
{
    if (seq->type != YAML_SEQUENCE_NODE) {
        ERR(c, seq, "%s: expected a list (lines starting with '-')", what);
        return;
    }
    uint32_t i = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = node_at(c, *it);
        if (i >= max) {
            ERR(c, item, "%s: more than %u entries", what, max);
            return;
        }
        fn(c, item, i, arg);
    }
}

/* ---- limits ------------------------------------------------------------------------------ */

static const field_t limit_fields[] = {
    {"uri_bytes_max", F_U32, offsetof(keel_proxy_limits_t, uri_bytes_max), 64, 65536, NULL},
    {"header_bytes_max", F_U32, offsetof(keel_proxy_limits_t, header_bytes_max), 256,
     KEEL_H1_HEAD_BYTES_CEILING, NULL},
    {"header_count_max", F_U32, offsetof(keel_proxy_limits_t, header_count_max), 1,
     KEEL_H1_HEADERS_CEILING, NULL},
    {"body_bytes_max", F_U64, offsetof(keel_proxy_limits_t, body_bytes_max), 0, UINT64_MAX >> 4,
     NULL},
    {"header_timeout_ms", F_MS, offsetof(keel_proxy_limits_t, header_timeout_ms), 10, DAY_MS, NULL},
    {"client_idle_timeout_ms", F_MS, offsetof(keel_proxy_limits_t, client_idle_timeout_ms), 10,
     DAY_MS, NULL},
    {"upstream_idle_timeout_ms", F_MS, offsetof(keel_proxy_limits_t, upstream_idle_timeout_ms), 10,
     DAY_MS, NULL},
    {"buffer_bytes_max", F_U32, offsetof(keel_proxy_limits_t, buffer_bytes_max), 1024, 1u << 26,
     NULL},
    {"connections_max", F_U32, offsetof(keel_proxy_limits_t, connections_max), 1, 1000000, NULL},
    {"retry_buffer_bytes", F_U32, offsetof(keel_proxy_limits_t, retry_buffer_bytes), 0,
     KEEL_PROXY_RETRY_BUFFER_BYTES_MAX, NULL},
};

static void limits_default(keel_proxy_limits_t *l)
{
    l->uri_bytes_max = 8192;
    l->header_bytes_max = 16384;
    l->header_count_max = 100;
    l->body_bytes_max = 64u << 20;
    l->header_timeout_ms = 10000;
    l->client_idle_timeout_ms = 60000;
    l->upstream_idle_timeout_ms = 60000;
    l->buffer_bytes_max = 65536;
    l->connections_max = 10000;
    l->retry_buffer_bytes = 65536;
}

/* ---- listeners and admin ----------------------------------------------------------------- */

static void listener_address(ctx_t *c, yaml_node_t *v, void *base)
{
    to_address(c, v, "address", true, &((keel_proxy_listener_t *)base)->address);
}

static const field_t listener_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_listener_t, name), 0, 0, NULL},
    {"address", F_FN, 0, 0, 0, listener_address},
};

static void load_listener(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_listener_t *l = &c->cfg->listeners[i];
    l->line = line_of(item);
    c->cfg->listeners_count = i + 1;
    load_fields(c, item, listener_fields, N(listener_fields), l, "listener");
    if (l->address == NULL)
        ERR(c, item, "listener: 'address' is required");
}

static void top_listeners(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "listeners", KEEL_PROXY_LISTENERS_MAX, load_listener, NULL);
}

static void admin_address(ctx_t *c, yaml_node_t *v, void *base)
{
    to_address(c, v, "address", true, &((keel_proxy_config_t *)base)->admin_address);
}

static void top_admin(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t admin_fields[] = {{"address", F_FN, 0, 0, 0, admin_address}};
    load_fields(c, v, admin_fields, N(admin_fields), base, "admin");
}

static void top_limits(ctx_t *c, yaml_node_t *v, void *base)
{
    load_fields(c, v, limit_fields, N(limit_fields), &((keel_proxy_config_t *)base)->limits,
                "limits");
}

/* ---- clusters ---------------------------------------------------------------------------- */

static void host_address(ctx_t *c, yaml_node_t *v, void *base)
{
    to_address(c, v, "address", false, &((keel_proxy_host_t *)base)->address);
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
        to_address(c, item, "hosts", false, &h->address);
    } else {
        load_fields(c, item, host_fields, N(host_fields), h, "host");
        if (h->address == NULL)
            ERR(c, item, "host: 'address' is required");
    }
    for (uint32_t k = 0; h->address && k < i; k++)
        if (cl->hosts[k].address && strcmp(cl->hosts[k].address, h->address) == 0)
            ERR(c, item, "host: %s is listed twice", h->address);
}

static void cluster_hosts(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "hosts", KEEL_PROXY_HOSTS_MAX, load_host, base);
}

static void cluster_balance(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_cluster_t *cl = base;
    if (!to_str(c, v, "balance", false, &cl->balance))
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
    if (!want_scalar(c, v, "hash_on", &s))
        return;
    if (strcmp(s, "source_address") == 0) {
        cl->hash_on = KEEL_PROXY_HASH_SOURCE;
    } else if (strncmp(s, "header:", 7) == 0 && s[7] != 0 &&
               strlen(s + 7) < KEEL_PROXY_NAME_BYTES_MAX) {
        cl->hash_on = KEEL_PROXY_HASH_HEADER;
        free(cl->hash_header);
        cl->hash_header = dup_lower(s + 7, true);
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
    load_fields(c, v, f, N(f), base, "pool");
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
    load_fields(c, v, f, N(f), base, "circuit_breaker");
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
    load_fields(c, v, f, N(f), base, "outlier_detection");
}

static void health_path(ctx_t *c, yaml_node_t *v, void *base)
{
    char **p = &((keel_proxy_health_t *)base)->path;
    if (to_str(c, v, "path", false, p) && (*p)[0] != '/')
        ERR(c, v, "path: '%s' must start with '/'", *p);
}

static void health_default(keel_proxy_health_t *h)
{
    h->interval_ms = 5000;
    h->timeout_ms = 1000;
    h->healthy_threshold = 2;
    h->unhealthy_threshold = 3;
}

/* A health_check section (a cluster's or the sidecar's app's): GET path, or a TCP connect. */
static void load_health(ctx_t *c, yaml_node_t *v, keel_proxy_health_t *h)
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
    load_fields(c, v, f, N(f), h, "health_check");
    if ((h->path == NULL) == !h->tcp)
        ERR(c, v, "health_check: give one of 'path' (an HTTP GET) or 'tcp: true' (a connect)");
    if (h->timeout_ms > h->interval_ms)
        ERR(c, v, "health_check: timeout_ms must not exceed interval_ms");
}

static void cluster_health(ctx_t *c, yaml_node_t *v, void *base)
{
    load_health(c, v, &((keel_proxy_cluster_t *)base)->health);
}

/* A registry service name or tag: what KEEL.REG accepts (no spaces or control characters). */
static void to_reg_name(ctx_t *c, yaml_node_t *v, const char *key, char **out)
{
    if (!to_str(c, v, key, false, out))
        return;
    size_t len = strlen(*out);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)(*out)[i] > ' ' && (*out)[i] != 0x7f;
    if (!ok)
        ERR(c, v, "%s: '%s' is not a registry name (1..%u bytes, no spaces)", key, *out,
            KEEL_PROXY_NAME_BYTES_MAX - 1);
}

static void cluster_service(ctx_t *c, yaml_node_t *v, void *base)
{
    to_reg_name(c, v, "service", &((keel_proxy_cluster_t *)base)->service);
}

static void cluster_tag(ctx_t *c, yaml_node_t *v, void *base)
{
    to_reg_name(c, v, "tag", &((keel_proxy_cluster_t *)base)->tag);
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
    health_default(&cl->health);
}

static void load_cluster(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_cluster_t *cl = &c->cfg->clusters[i];
    cluster_default(cl);
    cl->line = line_of(item);
    c->cfg->clusters_count = i + 1;
    load_fields(c, item, cluster_fields, N(cluster_fields), cl, "cluster");
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
}

static void top_clusters(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "clusters", KEEL_PROXY_CLUSTERS_MAX, load_cluster, NULL);
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
    if (to_str(c, v, "claim", false, claim) &&
        ((*claim)[0] == 0 || strlen(*claim) >= KEEL_PROXY_NAME_BYTES_MAX))
        ERR(c, v, "claim: 1..%u bytes", KEEL_PROXY_NAME_BYTES_MAX - 1);
}

static void cth_header(ctx_t *c, yaml_node_t *v, void *base)
{
    char **h = &((keel_proxy_claim_header_t *)base)->header;
    if (!to_field_name(c, v, "header", h))
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
    load_fields(c, item, f, N(f), ch, "claims_to_headers");
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
    each_item(c, v, "claims_to_headers", KEEL_PROXY_JWT_CLAIM_HEADERS_MAX, load_claim_header, base);
}

static void load_audience(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_jwt_provider_t *pv = arg;
    pv->audiences_count = i + 1;
    to_str(c, item, "audiences", false, &pv->audiences[i]);
}

static void pv_audiences(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "audiences", KEEL_PROXY_JWT_AUDIENCES_MAX, load_audience, base);
}

static void pv_jwks_file(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_jwt_provider_t *pv = base;
    pv->jwks_line = line_of(v);
    to_str(c, v, "jwks_file", false, &pv->jwks_file);
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

static const field_t provider_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_jwt_provider_t, name), 0, 0, NULL},
    {"issuer", F_STR, offsetof(keel_proxy_jwt_provider_t, issuer), 0, 0, NULL},
    {"audiences", F_FN, 0, 0, 0, pv_audiences},
    {"jwks_file", F_FN, 0, 0, 0, pv_jwks_file},
    {"jwks", F_FN, 0, 0, 0, pv_jwks},
    {"clock_skew_s", F_U32, offsetof(keel_proxy_jwt_provider_t, clock_skew_s), 0,
     KEEL_PROXY_JWT_SKEW_S_MAX, NULL},
    {"require_exp", F_BOOL, offsetof(keel_proxy_jwt_provider_t, require_exp), 0, 0, NULL},
    {"forward", F_BOOL, offsetof(keel_proxy_jwt_provider_t, forward), 0, 0, NULL},
    {"claims_to_headers", F_FN, 0, 0, 0, pv_claims},
};

static void load_provider(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_jwt_provider_t *pv = &c->cfg->jwt_providers[i];
    pv->line = line_of(item);
    pv->clock_skew_s = 60;
    pv->require_exp = true;
    c->cfg->jwt_providers_count = i + 1;
    load_fields(c, item, provider_fields, N(provider_fields), pv, "jwt provider");
    if (pv->name == NULL || pv->name[0] == 0 || strlen(pv->name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, item, "jwt provider: 'name' is required (1..%u bytes)",
            KEEL_PROXY_NAME_BYTES_MAX - 1);
    if ((pv->jwks_file != NULL) == (pv->jwks != NULL))
        ERR(c, item, "jwt provider '%s': give one of jwks_file, jwks", pv->name ? pv->name : "?");
    for (uint32_t k = 0; pv->name && k < i; k++)
        if (c->cfg->jwt_providers[k].name && strcmp(c->cfg->jwt_providers[k].name, pv->name) == 0)
            ERR(c, item, "jwt provider '%s' is defined twice", pv->name);
}

static void top_jwt_providers(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "jwt_providers", KEEL_PROXY_JWT_PROVIDERS_MAX, load_provider, NULL);
}

/* ---- routes ------------------------------------------------------------------------------ */

static bool compile(ctx_t *c, yaml_node_t *v, const char *pattern, regex_t *re)
{
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char buf[128];
        regerror(rc, re, buf, sizeof(buf));
        ERR(c, v, "regex '%s': %s", pattern, buf);
        return false;
    }
    return true;
}

static void set_path(ctx_t *c, yaml_node_t *v, keel_proxy_route_t *r, keel_proxy_path_kind_t kind,
                     const char *key)
{
    if (r->path_kind != KEEL_PROXY_PATH_ANY) {
        ERR(c, v, "match: give one of exact, prefix, regex, template");
        return;
    }
    if (!to_str(c, v, key, false, &r->path))
        return;
    if (kind == KEEL_PROXY_PATH_REGEX) {
        if (compile(c, v, r->path, &r->path_regex))
            r->path_kind = kind;
        return;
    }
    if (r->path[0] != '/') {
        ERR(c, v, "%s: '%s' must start with '/'", key, r->path);
        return;
    }
    r->path_kind = kind;
}

static void m_exact(ctx_t *c, yaml_node_t *v, void *base)
{
    set_path(c, v, base, KEEL_PROXY_PATH_EXACT, "exact");
}
static void m_prefix(ctx_t *c, yaml_node_t *v, void *base)
{
    set_path(c, v, base, KEEL_PROXY_PATH_PREFIX, "prefix");
}
static void m_regex(ctx_t *c, yaml_node_t *v, void *base)
{
    set_path(c, v, base, KEEL_PROXY_PATH_REGEX, "regex");
}

/* A path template: '/'-separated segments, each literal or a whole "{name}" (letters, digits,
 * '_'), every name once, at most KEEL_PROXY_TEMPLATE_PARAMS_MAX of them. */
static void m_template(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    set_path(c, v, r, KEEL_PROXY_PATH_TEMPLATE, "template");
    if (r->path_kind != KEEL_PROXY_PATH_TEMPLATE)
        return;
    const char *names[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
    size_t lens[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
    uint32_t n = 0;
    for (const char *q = r->path; *q; q++) {
        if (*q == '}' || (*q == '{' && q[-1] != '/')) {
            ERR(c, v, "template: a {name} must be a whole segment ('%s')", r->path);
            return;
        }
        if (*q != '{')
            continue;
        const char *end = strchr(q, '}');
        size_t len = end ? (size_t)(end - q - 1) : 0;
        bool ok = end != NULL && len > 0 && (end[1] == 0 || end[1] == '/');
        for (size_t i = 0; ok && i < len; i++)
            ok = (q[1 + i] >= 'a' && q[1 + i] <= 'z') || (q[1 + i] >= 'A' && q[1 + i] <= 'Z') ||
                 (q[1 + i] >= '0' && q[1 + i] <= '9') || q[1 + i] == '_';
        if (!ok) {
            ERR(c, v, "template: a {name} must be a whole segment of letters, digits, '_' ('%s')",
                r->path);
            return;
        }
        for (uint32_t k = 0; k < n; k++)
            if (lens[k] == len && memcmp(names[k], q + 1, len) == 0) {
                ERR(c, v, "template: {%.*s} is given twice", (int)len, q + 1);
                return;
            }
        if (n == KEEL_PROXY_TEMPLATE_PARAMS_MAX) {
            ERR(c, v, "template: more than %u parameters", KEEL_PROXY_TEMPLATE_PARAMS_MAX);
            return;
        }
        names[n] = q + 1;
        lens[n++] = len;
        q = end;
    }
}

static void m_host(ctx_t *c, yaml_node_t *v, void *base)
{
    to_str(c, v, "host", true, &((keel_proxy_route_t *)base)->host);
}

static void load_method(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_route_t *r = arg;
    if (!to_str(c, item, "methods", false, &r->methods[i]))
        return;
    r->methods_count = i + 1;
    for (const char *p = r->methods[i]; *p; p++)
        if (*p < 'A' || *p > 'Z') {
            ERR(c, item, "methods: '%s' is not an upper-case method name", r->methods[i]);
            return;
        }
}

static void m_methods(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "methods", KEEL_PROXY_METHODS_MAX, load_method, base);
}

static void fm_name(ctx_t *c, yaml_node_t *v, void *base)
{
    to_field_name(c, v, "name", &((keel_proxy_field_match_t *)base)->name);
}
static void fm_value(ctx_t *c, yaml_node_t *v, void *base)
{
    to_str(c, v, "value", false, &((keel_proxy_field_match_t *)base)->value);
}
static void fm_regex(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_field_match_t *m = base;
    char *pat = NULL;
    if (to_str(c, v, "regex", false, &pat) && compile(c, v, pat, &m->regex))
        m->has_regex = true;
    free(pat);
}
static void fm_present(ctx_t *c, yaml_node_t *v, void *base)
{
    bool present = true;
    if (to_bool(c, v, "present", &present))
        ((keel_proxy_field_match_t *)base)->absent = !present;
}

static const field_t field_match_fields[] = {
    {"name", F_FN, 0, 0, 0, fm_name},
    {"value", F_FN, 0, 0, 0, fm_value},
    {"regex", F_FN, 0, 0, 0, fm_regex},
    {"present", F_FN, 0, 0, 0, fm_present},
};

static void load_field_match(ctx_t *c, yaml_node_t *item, keel_proxy_field_match_t *m)
{
    load_fields(c, item, field_match_fields, N(field_match_fields), m, "match");
    if (m->name == NULL)
        ERR(c, item, "match: 'name' is required");
    if ((m->value != NULL) + m->has_regex + m->absent > 1)
        ERR(c, item, "match: give at most one of value, regex, present: false");
}

static void load_header_match(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_route_t *r = arg;
    r->headers_count = i + 1;
    load_field_match(c, item, &r->headers[i]);
}

static void load_query_match(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_route_t *r = arg;
    r->query_count = i + 1;
    load_field_match(c, item, &r->query[i]);
}

static void m_headers(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "headers", KEEL_PROXY_MATCH_FIELDS_MAX, load_header_match, base);
}
static void m_query(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "query", KEEL_PROXY_MATCH_FIELDS_MAX, load_query_match, base);
}

static void m_listener(ctx_t *c, yaml_node_t *v, void *base)
{
    to_str(c, v, "listener", false, &((keel_proxy_route_t *)base)->listener);
}

static const field_t match_fields[] = {
    {"listener", F_FN, 0, 0, 0, m_listener}, {"host", F_FN, 0, 0, 0, m_host},
    {"exact", F_FN, 0, 0, 0, m_exact},       {"prefix", F_FN, 0, 0, 0, m_prefix},
    {"regex", F_FN, 0, 0, 0, m_regex},       {"methods", F_FN, 0, 0, 0, m_methods},
    {"headers", F_FN, 0, 0, 0, m_headers},   {"query", F_FN, 0, 0, 0, m_query},
    {"template", F_FN, 0, 0, 0, m_template},
};

static void r_match(ctx_t *c, yaml_node_t *v, void *base)
{
    load_fields(c, v, match_fields, N(match_fields), base, "match");
}

/* Cluster references are kept as names on the side until every cluster is loaded. */
typedef struct pending_ref {
    uint32_t route, slot;
    int line;
    char name[KEEL_PROXY_NAME_BYTES_MAX];
} pending_ref_t;

#define PENDING_REFS_MAX (KEEL_PROXY_ROUTES_MAX * KEEL_PROXY_WEIGHTED_MAX)

typedef struct route_load {
    pending_ref_t *refs;
    uint32_t refs_count;
    uint32_t route;
    int actions;
} route_load_t;

static void add_ref(ctx_t *c, yaml_node_t *v, route_load_t *rl, uint32_t slot, const char *name)
{
    if (strlen(name) >= KEEL_PROXY_NAME_BYTES_MAX) {
        ERR(c, v, "cluster name '%s' is too long", name);
        return;
    }
    assert(rl->refs_count < PENDING_REFS_MAX);
    pending_ref_t *p = &rl->refs[rl->refs_count++];
    p->route = rl->route;
    p->slot = slot;
    p->line = line_of(v);
    snprintf(p->name, sizeof(p->name), "%s", name);
}

static route_load_t *current_rl(ctx_t *c);

static void r_cluster(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    route_load_t *rl = current_rl(c);
    const char *s;
    rl->actions++;
    if (!want_scalar(c, v, "cluster", &s))
        return;
    r->clusters_count = 1;
    r->clusters[0].weight = 1;
    add_ref(c, v, rl, 0, s);
}

typedef struct weighted_tmp {
    char *cluster;
    uint32_t weight;
} weighted_tmp_t;

static void load_weighted(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {
        {"cluster", F_STR, offsetof(weighted_tmp_t, cluster), 0, 0, NULL},
        {"weight", F_U32, offsetof(weighted_tmp_t, weight), 0, KEEL_PROXY_WEIGHT_MAX, NULL},
    };
    keel_proxy_route_t *r = arg;
    weighted_tmp_t w = {NULL, 1};
    load_fields(c, item, f, N(f), &w, "weighted_clusters");
    r->clusters_count = i + 1;
    r->clusters[i].weight = w.weight;
    if (w.cluster == NULL)
        ERR(c, item, "weighted_clusters: 'cluster' is required");
    else
        add_ref(c, item, current_rl(c), i, w.cluster);
    free(w.cluster);
}

static void r_weighted(ctx_t *c, yaml_node_t *v, void *base)
{
    current_rl(c)->actions++;
    each_item(c, v, "weighted_clusters", KEEL_PROXY_WEIGHTED_MAX, load_weighted, base);
}

static void r_direct(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"status", F_U32, offsetof(keel_proxy_route_t, direct_status), 200, 599, NULL},
        {"body", F_STR, offsetof(keel_proxy_route_t, direct_body), 0, 0, NULL},
        {"content_type", F_STR, offsetof(keel_proxy_route_t, direct_content_type), 0, 0, NULL},
    };
    keel_proxy_route_t *r = base;
    current_rl(c)->actions++;
    r->action = KEEL_PROXY_ACTION_DIRECT;
    r->direct_status = 200;
    load_fields(c, v, f, N(f), base, "direct_response");
}

static void redirect_location(ctx_t *c, yaml_node_t *v, void *base)
{
    to_header_value(c, v, "location", &((keel_proxy_route_t *)base)->redirect_location);
}

static void r_redirect(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"status", F_U32, offsetof(keel_proxy_route_t, redirect_status), 301, 308, NULL},
        {"location", F_FN, 0, 0, 0, redirect_location},
    };
    keel_proxy_route_t *r = base;
    current_rl(c)->actions++;
    r->action = KEEL_PROXY_ACTION_REDIRECT;
    r->redirect_status = 301;
    load_fields(c, v, f, N(f), base, "redirect");
    if (r->redirect_location == NULL)
        ERR(c, v, "redirect: 'location' is required");
}

typedef struct edit_list {
    keel_proxy_header_edit_t *e;
    uint32_t *count;
    bool with_value;
} edit_list_t;

static void ed_name(ctx_t *c, yaml_node_t *v, void *base)
{
    to_field_name(c, v, "name", &((keel_proxy_header_edit_t *)base)->name);
}
static void ed_value(ctx_t *c, yaml_node_t *v, void *base)
{
    to_header_value(c, v, "value", &((keel_proxy_header_edit_t *)base)->value);
}

static void load_edit(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {{"name", F_FN, 0, 0, 0, ed_name},
                                {"value", F_FN, 0, 0, 0, ed_value}};
    edit_list_t *l = arg;
    keel_proxy_header_edit_t *e = &l->e[i];
    *l->count = i + 1;
    if (!l->with_value) { /* a remove list is a list of names */
        to_field_name(c, item, "remove", &e->name);
        return;
    }
    load_fields(c, item, f, N(f), e, "header");
    if (e->name == NULL || e->value == NULL)
        ERR(c, item, "header: 'name' and 'value' are required");
}

#define EDIT_FN(fname, arr, cnt, withv)                                                            \
    static void fname(ctx_t *c, yaml_node_t *v, void *base)                                        \
    {                                                                                              \
        keel_proxy_route_t *r = base;                                                              \
        edit_list_t l = {r->arr, &r->cnt, withv};                                                  \
        each_item(c, v, #arr, KEEL_PROXY_HEADER_EDITS_MAX, load_edit, &l);                         \
    }
EDIT_FN(r_req_add, req_add, req_add_count, true)
EDIT_FN(r_req_remove, req_remove, req_remove_count, false)
EDIT_FN(r_resp_add, resp_add, resp_add_count, true)
EDIT_FN(r_resp_remove, resp_remove, resp_remove_count, false)

static void r_rewrite(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    if (to_str(c, v, "rewrite_prefix", false, &r->rewrite_prefix) && r->rewrite_prefix[0] != '/')
        ERR(c, v, "rewrite_prefix: '%s' must start with '/'", r->rewrite_prefix);
}

typedef struct retry_on_name {
    const char *name;
    unsigned bit;
} retry_on_name_t;

static const retry_on_name_t retry_on_names[] = {
    {"connect-failure", KEEL_PROXY_RETRY_ON_CONNECT}, {"reset", KEEL_PROXY_RETRY_ON_RESET},
    {"timeout", KEEL_PROXY_RETRY_ON_TIMEOUT},         {"5xx", KEEL_PROXY_RETRY_ON_5XX},
    {"gateway-error", KEEL_PROXY_RETRY_ON_GATEWAY},
};

static void load_retry_on(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_retry_t *rt = arg;
    const char *s;
    if (!want_scalar(c, item, "retry_on", &s))
        return;
    for (size_t k = 0; k < N(retry_on_names); k++)
        if (strcmp(retry_on_names[k].name, s) == 0) {
            rt->retry_on |= retry_on_names[k].bit;
            return;
        }
    ERR(c, item,
        "retry_on: '%s' is not one of connect-failure, reset, timeout, 5xx, "
        "gateway-error",
        s);
}

static void rt_retry_on(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_retry_t *rt = base;
    rt->retry_on = 0;
    each_item(c, v, "retry_on", 8, load_retry_on, base);
}

static void load_status(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_retry_t *rt = arg;
    uint64_t v;
    if (to_u64(c, item, "statuses", 100, 599, &v)) {
        rt->statuses[i] = (int)v;
        rt->statuses_count = i + 1;
    }
}

static void rt_statuses(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "statuses", KEEL_PROXY_STATUSES_MAX, load_status, base);
}

/* A field name, or "" for none. */
static void rt_idem_header(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_retry_t *rt = base;
    const char *s = scalar(v);
    if (s != NULL && s[0] == 0) {
        free(rt->idempotency_header);
        rt->idempotency_header = NULL;
        return;
    }
    to_field_name(c, v, "idempotency_header", &rt->idempotency_header);
}

static void r_retry(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"attempts_max", F_U32, offsetof(keel_proxy_retry_t, attempts_max), 1, 10, NULL},
        {"retry_on", F_FN, 0, 0, 0, rt_retry_on},
        {"statuses", F_FN, 0, 0, 0, rt_statuses},
        {"idempotent_only", F_BOOL, offsetof(keel_proxy_retry_t, idempotent_only), 0, 0, NULL},
        {"idempotency_header", F_FN, 0, 0, 0, rt_idem_header},
        {"backoff_base_ms", F_MS, offsetof(keel_proxy_retry_t, backoff_base_ms), 1, 60000, NULL},
        {"backoff_cap_ms", F_MS, offsetof(keel_proxy_retry_t, backoff_cap_ms), 1, 600000, NULL},
        {"budget_percent", F_U32, offsetof(keel_proxy_retry_t, budget_pct), 0, 100, NULL},
        {"budget_min", F_U32, offsetof(keel_proxy_retry_t, budget_min), 0, 100000, NULL},
    };
    keel_proxy_retry_t *rt = &((keel_proxy_route_t *)base)->retry;
    rt->attempts_max = 3;
    load_fields(c, v, f, N(f), rt, "retry");
    if (rt->backoff_cap_ms < rt->backoff_base_ms)
        ERR(c, v, "retry: backoff_cap_ms must be >= backoff_base_ms");
}

static void rl_key(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_ratelimit_t *rl = base;
    const char *s;
    if (!want_scalar(c, v, "key", &s))
        return;
    if (strcmp(s, "source_address") == 0) {
        rl->key = KEEL_PROXY_RL_SOURCE;
    } else if (strncmp(s, "header:", 7) == 0 && s[7] != 0 &&
               strlen(s + 7) < KEEL_PROXY_NAME_BYTES_MAX) {
        rl->key = KEEL_PROXY_RL_HEADER;
        free(rl->header);
        rl->header = dup_lower(s + 7, true);
    } else if (strncmp(s, "claim:", 6) == 0 && s[6] != 0 &&
               strlen(s + 6) < KEEL_PROXY_NAME_BYTES_MAX) {
        rl->key = KEEL_PROXY_RL_CLAIM; /* the route's jwt is checked in load_route */
        free(rl->header);
        rl->header = dup_lower(s + 6, false);
    } else {
        ERR(c, v, "key: '%s' is not source_address, header:NAME or claim:NAME", s);
    }
}

static void r_ratelimit(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"key", F_FN, 0, 0, 0, rl_key},
        {"requests_per_s", F_U64, offsetof(keel_proxy_ratelimit_t, requests_per_s), 1, 10000000,
         NULL},
        {"burst", F_U64, offsetof(keel_proxy_ratelimit_t, burst), 1, 10000000, NULL},
        {"keys_max", F_U32, offsetof(keel_proxy_ratelimit_t, keys_max), 8, 1u << 20, NULL},
    };
    keel_proxy_ratelimit_t *rl = &((keel_proxy_route_t *)base)->ratelimit;
    rl->enabled = true;
    load_fields(c, v, f, N(f), rl, "rate_limit");
    if (rl->requests_per_s == 0)
        ERR(c, v, "rate_limit: 'requests_per_s' is required");
    if (rl->burst == 0)
        rl->burst = rl->requests_per_s;
    rl->keys_max = (rl->keys_max + 7u) & ~7u;
}

/* `jwt: NAME` or `jwt: {provider: NAME, required: BOOL}`; providers are loaded before routes. */
typedef struct jwt_req_tmp {
    char *provider;
    bool required;
} jwt_req_tmp_t;

static void r_jwt(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"provider", F_STR, offsetof(jwt_req_tmp_t, provider), 0, 0, NULL},
        {"required", F_BOOL, offsetof(jwt_req_tmp_t, required), 0, 0, NULL},
    };
    keel_proxy_route_t *r = base;
    jwt_req_tmp_t t = {NULL, true};
    if (v->type == YAML_SCALAR_NODE)
        to_str(c, v, "jwt", false, &t.provider);
    else
        load_fields(c, v, f, N(f), &t, "jwt");
    if (t.provider == NULL) {
        ERR(c, v, "jwt: 'provider' is required");
        return;
    }
    int idx = -1;
    for (uint32_t i = 0; i < c->cfg->jwt_providers_count; i++)
        if (c->cfg->jwt_providers[i].name && strcmp(c->cfg->jwt_providers[i].name, t.provider) == 0)
            idx = (int)i;
    if (idx < 0)
        ERR(c, v, "jwt: no jwt_providers entry named '%s'", t.provider);
    else
        r->jwt = (keel_proxy_jwt_req_t){true, (uint32_t)idx, t.required};
    free(t.provider);
}

/* ---- aggregate routes -------------------------------------------------------------------- */

static void ap_cluster(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_agg_part_t *pt = base;
    if (to_str(c, v, "cluster", false, &pt->cluster_name) &&
        strlen(pt->cluster_name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, v, "cluster name '%s' is too long", pt->cluster_name);
}

static void ap_name(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_agg_part_t *pt = base;
    if (!to_str(c, v, "name", false, &pt->name))
        return;
    size_t len = strlen(pt->name);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (pt->name[i] >= 'a' && pt->name[i] <= 'z') ||
             (pt->name[i] >= 'A' && pt->name[i] <= 'Z') ||
             (pt->name[i] >= '0' && pt->name[i] <= '9') || pt->name[i] == '_' || pt->name[i] == '-';
    if (!ok)
        ERR(c, v, "name: '%s' must be 1..%u letters, digits, '_' or '-'", pt->name,
            KEEL_PROXY_NAME_BYTES_MAX - 1);
    else if (strcmp(pt->name, "partial") == 0 || strcmp(pt->name, "errors") == 0)
        ERR(c, v, "name: '%s' is the aggregate's own field", pt->name);
}

static void ap_path(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_agg_part_t *pt = base;
    if (!to_str(c, v, "path", false, &pt->path))
        return;
    bool ok = pt->path[0] == '/';
    for (const char *q = pt->path; ok && *q; q++)
        ok = (unsigned char)*q > ' ' && (unsigned char)*q < 0x7f && *q != '#';
    if (!ok)
        ERR(c, v, "path: '%s' must start with '/' and hold no space, control character or '#'",
            pt->path);
}

static void load_agg_part(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {
        {"name", F_FN, 0, 0, 0, ap_name},
        {"cluster", F_FN, 0, 0, 0, ap_cluster},
        {"path", F_FN, 0, 0, 0, ap_path},
        {"timeout_ms", F_MS, offsetof(keel_proxy_agg_part_t, timeout_ms), 1, DAY_MS, NULL},
        {"required", F_BOOL, offsetof(keel_proxy_agg_part_t, required), 0, 0, NULL},
    };
    keel_proxy_aggregate_t *a = arg;
    keel_proxy_agg_part_t *pt = &a->parts[i];
    a->parts_count = i + 1;
    pt->line = line_of(item);
    pt->timeout_ms = 1000;
    load_fields(c, item, f, N(f), pt, "part");
    if (pt->name == NULL || pt->cluster_name == NULL || pt->path == NULL)
        ERR(c, item, "part: 'name', 'cluster' and 'path' are required");
    for (uint32_t k = 0; pt->name && k < i; k++)
        if (a->parts[k].name && strcmp(a->parts[k].name, pt->name) == 0)
            ERR(c, item, "part: '%s' is named twice", pt->name);
}

static void ag_parts(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "parts", KEEL_PROXY_AGG_PARTS_MAX, load_agg_part, base);
}

static void load_agg_forward(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_aggregate_t *a = arg;
    a->forward_count = i + 1;
    to_field_name(c, item, "forward_headers", &a->forward_headers[i]);
}

static void ag_forward(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "forward_headers", KEEL_PROXY_AGG_FORWARD_MAX, load_agg_forward, base);
}

static void r_aggregate(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"parts", F_FN, 0, 0, 0, ag_parts},
        {"forward_headers", F_FN, 0, 0, 0, ag_forward},
        {"part_bytes_max", F_U32, offsetof(keel_proxy_aggregate_t, part_bytes_max), 2,
         KEEL_PROXY_AGG_PART_BYTES_CEILING, NULL},
    };
    keel_proxy_route_t *r = base;
    current_rl(c)->actions++;
    r->action = KEEL_PROXY_ACTION_AGGREGATE;
    if (r->aggregate != NULL) /* a repeated key: load_fields refuses it before this */
        return;
    r->aggregate = calloc(1, sizeof(*r->aggregate));
    if (r->aggregate == NULL) {
        ERR(c, v, "out of memory");
        return;
    }
    r->aggregate->part_bytes_max = 65536;
    load_fields(c, v, f, N(f), r->aggregate, "aggregate");
    if (r->aggregate->parts_count == 0)
        ERR(c, v, "aggregate: 'parts' needs at least one entry");
}

/* Whether the route's template has the parameter p[0..n). */
static bool template_has(const keel_proxy_route_t *r, const char *p, size_t n)
{
    if (r->path_kind != KEEL_PROXY_PATH_TEMPLATE)
        return false;
    for (const char *q = strchr(r->path, '{'); q != NULL; q = strchr(q + 1, '{'))
        if (strncmp(q + 1, p, n) == 0 && q[1 + n] == '}')
            return true;
    return false;
}

/* Each {x} of a part's path names a parameter of the route's template or header:NAME. */
static void check_agg_paths(ctx_t *c, const keel_proxy_route_t *r)
{
    const keel_proxy_aggregate_t *a = r->aggregate;
    for (uint32_t i = 0; a != NULL && i < a->parts_count; i++) {
        const char *path = a->parts[i].path;
        for (const char *q = path ? strchr(path, '{') : NULL; q != NULL; q = strchr(q, '{')) {
            const char *end = strchr(q, '}');
            if (end == NULL) {
                errl(c, a->parts[i].line, "part %s: path '%s' has an unclosed '{'",
                     a->parts[i].name ? a->parts[i].name : "?", path);
                break;
            }
            size_t n = (size_t)(end - q - 1);
            bool header = n > 7 && strncmp(q + 1, "header:", 7) == 0;
            if (!header && !template_has(r, q + 1, n))
                errl(c, a->parts[i].line,
                     "part %s: {%.*s} is neither a {parameter} of the route's match template nor "
                     "{header:NAME}",
                     a->parts[i].name ? a->parts[i].name : "?", (int)n, q + 1);
            q = end;
        }
    }
}

static const field_t route_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_route_t, name), 0, 0, NULL},
    {"match", F_FN, 0, 0, 0, r_match},
    {"cluster", F_FN, 0, 0, 0, r_cluster},
    {"weighted_clusters", F_FN, 0, 0, 0, r_weighted},
    {"direct_response", F_FN, 0, 0, 0, r_direct},
    {"redirect", F_FN, 0, 0, 0, r_redirect},
    {"rewrite_prefix", F_FN, 0, 0, 0, r_rewrite},
    {"request_headers_add", F_FN, 0, 0, 0, r_req_add},
    {"request_headers_remove", F_FN, 0, 0, 0, r_req_remove},
    {"response_headers_add", F_FN, 0, 0, 0, r_resp_add},
    {"response_headers_remove", F_FN, 0, 0, 0, r_resp_remove},
    {"timeout_ms", F_MS, offsetof(keel_proxy_route_t, timeout_ms), 0, DAY_MS, NULL},
    {"per_try_timeout_ms", F_MS, offsetof(keel_proxy_route_t, per_try_timeout_ms), 0, DAY_MS, NULL},
    {"retry", F_FN, 0, 0, 0, r_retry},
    {"rate_limit", F_FN, 0, 0, 0, r_ratelimit},
    {"jwt", F_FN, 0, 0, 0, r_jwt},
    {"aggregate", F_FN, 0, 0, 0, r_aggregate},
};

static void route_default(keel_proxy_route_t *r)
{
    r->timeout_ms = 15000;
    r->retry.attempts_max = 1;
    r->retry.retry_on =
        KEEL_PROXY_RETRY_ON_CONNECT | KEEL_PROXY_RETRY_ON_RESET | KEEL_PROXY_RETRY_ON_GATEWAY;
    r->retry.idempotent_only = true;
    r->retry.idempotency_header = strdup("idempotency-key");
    r->retry.backoff_base_ms = 25;
    r->retry.backoff_cap_ms = 250;
    r->retry.budget_pct = 20;
    r->retry.budget_min = 3;
    r->ratelimit.keys_max = 4096;
}

/* The loader passes its route_load_t through the ctx; one route loads at a time. */
typedef struct ctx_ext {
    ctx_t c;
    route_load_t *rl;
} ctx_ext_t;

static route_load_t *current_rl(ctx_t *c)
{
    return ((ctx_ext_t *)c)->rl;
}

static void load_route(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    route_load_t *rl = current_rl(c);
    keel_proxy_route_t *r = &c->cfg->routes[i];
    route_default(r);
    r->line = line_of(item);
    c->cfg->routes_count = i + 1;
    rl->route = i;
    rl->actions = 0;
    load_fields(c, item, route_fields, N(route_fields), r, "route");
    if (rl->actions != 1)
        ERR(c, item,
            "route%s%s: give exactly one of cluster, weighted_clusters, "
            "direct_response, redirect, aggregate",
            r->name ? " " : "", r->name ? r->name : "");
    if (r->rewrite_prefix && r->path_kind != KEEL_PROXY_PATH_PREFIX)
        ERR(c, item, "route: rewrite_prefix needs a 'prefix' match");
    if (r->aggregate != NULL && r->rewrite_prefix)
        ERR(c, item, "route: an aggregate builds its parts' paths itself (no rewrite_prefix)");
    check_agg_paths(c, r);
    if (r->ratelimit.enabled && r->ratelimit.key == KEEL_PROXY_RL_CLAIM && !r->jwt.enabled)
        ERR(c, item, "route: rate_limit key claim:%s needs a 'jwt' requirement on the route",
            r->ratelimit.header);
    if (r->name == NULL) {
        char buf[32];
        snprintf(buf, sizeof(buf), "route%u", i);
        r->name = strdup(buf);
    }
}

static void top_routes(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "routes", KEEL_PROXY_ROUTES_MAX, load_route, NULL);
}

static void top_via(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_config_t *cfg = base;
    if (to_str(c, v, "via", false, &cfg->via) &&
        (cfg->via[0] == 0 || strlen(cfg->via) >= KEEL_PROXY_NAME_BYTES_MAX ||
         strpbrk(cfg->via, " \t\r\n,") != NULL))
        ERR(c, v, "via: '%s' must be a token of 1..%u bytes", cfg->via,
            KEEL_PROXY_NAME_BYTES_MAX - 1);
}

/* "host:port" or several, comma-separated (keel server nodes; any of them answers). */
static void to_registry(ctx_t *c, yaml_node_t *v, char **out)
{
    if (!to_str(c, v, "registry", false, out))
        return;
    char *copy = strdup(*out);
    uint32_t n = 0;
    for (char *save = NULL, *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok != NULL;
         tok = strtok_r(NULL, ",", &save), n++) {
        while (*tok == ' ')
            tok++;
        const char *colon = strrchr(tok, ':');
        long port = colon ? strtol(colon + 1, NULL, 10) : 0;
        if (colon == NULL || colon == tok || port < 1 || port > 65535 ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
            ERR(c, v, "registry: '%s' is not host:port", tok);
            break;
        }
    }
    if (copy != NULL && n == 0)
        ERR(c, v, "registry: give host:port[,host:port...]");
    free(copy);
}

static void top_registry(ctx_t *c, yaml_node_t *v, void *base)
{
    to_registry(c, v, &((keel_proxy_config_t *)base)->registry);
}

static void sc_registry(ctx_t *c, yaml_node_t *v, void *base)
{
    to_registry(c, v, &((keel_proxy_sidecar_t *)base)->registry);
}

/* ---- sidecar ----------------------------------------------------------------------------- */

static void sc_service(ctx_t *c, yaml_node_t *v, void *base)
{
    to_reg_name(c, v, "service", &((keel_proxy_sidecar_t *)base)->service);
}

static void sc_id(ctx_t *c, yaml_node_t *v, void *base)
{
    to_reg_name(c, v, "id", &((keel_proxy_sidecar_t *)base)->id);
}

static void sc_app(ctx_t *c, yaml_node_t *v, void *base)
{
    to_address(c, v, "app", false, &((keel_proxy_sidecar_t *)base)->app);
}

static void sc_advertise(ctx_t *c, yaml_node_t *v, void *base)
{
    to_address(c, v, "advertise", false, &((keel_proxy_sidecar_t *)base)->advertise);
}

static void sc_version(ctx_t *c, yaml_node_t *v, void *base)
{
    to_reg_name(c, v, "version", &((keel_proxy_sidecar_t *)base)->version);
}

static void sc_registry(ctx_t *c, yaml_node_t *v, void *base);

static void load_sc_tag(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_sidecar_t *sc = arg;
    to_reg_name(c, item, "tag", &sc->tags[i]);
    sc->tags_count = i + 1;
}

static void sc_tags(ctx_t *c, yaml_node_t *v, void *base)
{
    each_item(c, v, "sidecar: tags", KEEL_PROXY_SIDECAR_TAGS_MAX, load_sc_tag, base);
}

/* meta: {key: value, ...}: what KEEL.REG META takes (no spaces in keys). */
static void sc_meta(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_sidecar_t *sc = base;
    if (v->type != YAML_MAPPING_NODE) {
        ERR(c, v, "sidecar: meta: expected a mapping (key: value lines)");
        return;
    }
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        if (sc->meta_count >= KEEL_PROXY_SIDECAR_META_MAX) {
            ERR(c, v, "sidecar: meta: more than %u entries", KEEL_PROXY_SIDECAR_META_MAX);
            return;
        }
        uint32_t k = 2 * sc->meta_count++;
        to_reg_name(c, node_at(c, p->key), "meta key", &sc->meta[k]);
        to_str(c, node_at(c, p->value), "meta value", false, &sc->meta[k + 1]);
    }
}

static void sc_health(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_sidecar_t *sc = base;
    sc->health.tcp = false;
    load_health(c, v, &sc->health);
}

static void top_sidecar(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"service", F_FN, 0, 0, 0, sc_service},
        {"id", F_FN, 0, 0, 0, sc_id},
        {"app", F_FN, 0, 0, 0, sc_app},
        {"inbound", F_STR, offsetof(keel_proxy_sidecar_t, inbound), 0, 0, NULL},
        {"advertise", F_FN, 0, 0, 0, sc_advertise},
        {"tags", F_FN, 0, 0, 0, sc_tags},
        {"meta", F_FN, 0, 0, 0, sc_meta},
        {"weight", F_U32, offsetof(keel_proxy_sidecar_t, weight), 1, 65535, NULL},
        {"version", F_FN, 0, 0, 0, sc_version},
        {"registry", F_FN, 0, 0, 0, sc_registry},
        {"ttl_ms", F_MS, offsetof(keel_proxy_sidecar_t, ttl_ms), 100, DAY_MS, NULL},
        {"deregister_wait_ms", F_MS, offsetof(keel_proxy_sidecar_t, deregister_wait_ms), 0, 60000,
         NULL},
        {"drain_ms", F_MS, offsetof(keel_proxy_sidecar_t, drain_ms), 0, 600000, NULL},
        {"health_check", F_FN, 0, 0, 0, sc_health},
    };
    keel_proxy_sidecar_t *sc = &((keel_proxy_config_t *)base)->sidecar;
    sc->enabled = true;
    sc->line = line_of(v);
    sc->ttl_ms = 5000;
    sc->deregister_wait_ms = 2000;
    sc->drain_ms = 1000;
    health_default(&sc->health);
    sc->health.enabled = true;
    sc->health.tcp = true; /* without a health_check: a connect to the app */
    load_fields(c, v, f, N(f), sc, "sidecar");
    if (sc->service == NULL)
        ERR(c, v, "sidecar: 'service' is required");
    if (sc->app == NULL)
        ERR(c, v, "sidecar: 'app' (the local app's host:port) is required");
}

static void top_skip(ctx_t *c, yaml_node_t *v, void *base)
{
    (void)c, (void)v, (void)base; /* clusters, jwt_providers: loaded first (load_document) */
}

static const field_t top_fields[] = {
    {"listeners", F_FN, 0, 0, 0, top_listeners},
    {"admin", F_FN, 0, 0, 0, top_admin},
    {"limits", F_FN, 0, 0, 0, top_limits},
    {"clusters", F_FN, 0, 0, 0, top_skip},
    {"jwt_providers", F_FN, 0, 0, 0, top_skip},
    {"routes", F_FN, 0, 0, 0, top_routes},
    {"via", F_FN, 0, 0, 0, top_via},
    {"registry", F_FN, 0, 0, 0, top_registry},
    {"access_log", F_BOOL, offsetof(keel_proxy_config_t, access_log), 0, 0, NULL},
    {"workers", F_U32, offsetof(keel_proxy_config_t, workers), 1, KEEL_PROXY_WORKERS_MAX, NULL},
    {"sidecar", F_FN, 0, 0, 0, top_sidecar},
};

/* ---- the whole document ------------------------------------------------------------------ */

static void resolve_refs(ctx_t *c, route_load_t *rl)
{
    for (uint32_t i = 0; i < rl->refs_count; i++) {
        pending_ref_t *p = &rl->refs[i];
        int idx = keel_proxy_config_cluster(c->cfg, p->name);
        if (idx < 0)
            errl(c, p->line, "route '%s': no cluster named '%s'", c->cfg->routes[p->route].name,
                 p->name);
        else
            c->cfg->routes[p->route].clusters[p->slot].cluster = (uint32_t)idx;
    }
    for (uint32_t i = 0; i < c->cfg->routes_count; i++) {
        keel_proxy_aggregate_t *a = c->cfg->routes[i].aggregate;
        for (uint32_t k = 0; a != NULL && k < a->parts_count; k++) {
            if (a->parts[k].cluster_name == NULL)
                continue;
            int idx = keel_proxy_config_cluster(c->cfg, a->parts[k].cluster_name);
            if (idx < 0)
                errl(c, a->parts[k].line, "route '%s': part %s: no cluster named '%s'",
                     c->cfg->routes[i].name, a->parts[k].name ? a->parts[k].name : "?",
                     a->parts[k].cluster_name);
            else
                a->parts[k].cluster = (uint32_t)idx;
        }
    }
    for (uint32_t i = 0; i < c->cfg->routes_count; i++) {
        keel_proxy_route_t *r = &c->cfg->routes[i];
        if (r->clusters_count == 0)
            continue;
        r->weight_total = 0;
        for (uint32_t k = 0; k < r->clusters_count; k++)
            r->weight_total += r->clusters[k].weight;
        if (r->weight_total == 0)
            errl(c, r->line, "route '%s': weighted_clusters weights add up to 0", r->name);
    }
}

/* 1 + the index of the listener called name, or 0. */
static uint32_t listener_1(const keel_proxy_config_t *cfg, const char *name)
{
    for (uint32_t i = 0; i < cfg->listeners_count; i++)
        if (cfg->listeners[i].name && strcmp(cfg->listeners[i].name, name) == 0)
            return i + 1;
    return 0;
}

/* Routes' `listener` and the sidecar's `inbound`, by name; the sidecar's registry. */
static void resolve_listeners(ctx_t *c)
{
    keel_proxy_config_t *cfg = c->cfg;
    for (uint32_t i = 0; i < cfg->routes_count; i++) {
        keel_proxy_route_t *r = &cfg->routes[i];
        if (r->listener != NULL && (r->listener_1 = listener_1(cfg, r->listener)) == 0)
            errl(c, r->line, "route '%s': no listener named '%s'", r->name ? r->name : "?",
                 r->listener);
    }
    keel_proxy_sidecar_t *sc = &cfg->sidecar;
    if (!sc->enabled)
        return;
    if (sc->inbound != NULL) {
        uint32_t k = listener_1(cfg, sc->inbound);
        if (k == 0)
            errl(c, sc->line, "sidecar: no listener named '%s' (inbound)", sc->inbound);
        sc->inbound_listener = k > 0 ? k - 1 : 0;
    }
    if (sc->registry == NULL && cfg->registry != NULL &&
        (sc->registry = strdup(cfg->registry)) == NULL)
        errl(c, sc->line, "out of memory");
    if (sc->registry == NULL)
        errl(c, sc->line, "sidecar: 'registry' is required (here or at the top level)");
}

int keel_proxy_config_cluster(const keel_proxy_config_t *cfg, const char *name)
{
    for (uint32_t i = 0; i < cfg->clusters_count; i++)
        if (cfg->clusters[i].name && strcmp(cfg->clusters[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void load_document(ctx_ext_t *x, route_load_t *rl)
{
    ctx_t *c = &x->c;
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    if (root == NULL) {
        errl(c, 1, "the file is empty");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        ERR(c, root, "the top level must be a mapping (listeners:, clusters:, routes:, ...)");
        return;
    }
    /* sections that routes refer to load first; the first of each only: a repeated key is an
     * error load_fields reports below */
    bool clusters = false, providers = false;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *key = scalar(node_at(c, p->key));
        if (key && strcmp(key, "clusters") == 0 && !clusters) {
            clusters = true;
            top_clusters(c, node_at(c, p->value), c->cfg);
        } else if (key && strcmp(key, "jwt_providers") == 0 && !providers) {
            providers = true;
            top_jwt_providers(c, node_at(c, p->value), c->cfg);
        }
    }
    x->rl = rl;
    load_fields(c, root, top_fields, N(top_fields), c->cfg, "top level");
    resolve_refs(c, rl);
    for (uint32_t i = 0; i < c->cfg->clusters_count; i++) {
        keel_proxy_cluster_t *cl = &c->cfg->clusters[i];
        if (cl->service == NULL)
            continue;
        if (c->cfg->registry == NULL)
            errl(c, cl->line, "cluster '%s': 'service' needs a top-level 'registry'",
                 cl->name ? cl->name : "?");
        else if ((cl->registry = strdup(c->cfg->registry)) == NULL)
            errl(c, cl->line, "out of memory");
    }
    if (c->cfg->listeners_count == 0)
        ERR(c, root, "at least one listener is required");
    resolve_listeners(c);
    for (uint32_t i = 0; i < c->cfg->listeners_count; i++)
        for (uint32_t k = 0; k < i; k++) {
            keel_proxy_listener_t *a = &c->cfg->listeners[i], *b = &c->cfg->listeners[k];
            const char *port = a->address ? strrchr(a->address, ':') : NULL;
            if (port && b->address && strcmp(a->address, b->address) == 0 &&
                strcmp(port, ":0") != 0)
                errl(c, a->line, "listener address %s is used twice", a->address);
        }
}

int keel_proxy_config_parse(const char *text, size_t len, keel_proxy_config_t *cfg,
                            keel_proxy_errors_t *errs)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(errs, 0, sizeof(*errs));
    limits_default(&cfg->limits);
    ctx_ext_t x = {{NULL, errs, cfg}, NULL};
    if (len > KEEL_PROXY_CONFIG_BYTES_MAX) {
        errl(&x.c, 0, "the file is larger than %u bytes", KEEL_PROXY_CONFIG_BYTES_MAX);
        return KEEL_EINVAL;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        errl(&x.c, 0, "out of memory");
        return KEEL_EINVAL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        errl(&x.c, (int)parser.problem_mark.line + 1, "YAML: %s",
             parser.problem ? parser.problem : "syntax error");
        yaml_parser_delete(&parser);
        return KEEL_EINVAL;
    }
    route_load_t rl = {calloc(PENDING_REFS_MAX, sizeof(pending_ref_t)), 0, 0, 0};
    if (rl.refs == NULL) {
        errl(&x.c, 0, "out of memory");
    } else {
        x.c.doc = &doc;
        load_document(&x, &rl);
    }
    free(rl.refs);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (cfg->via == NULL)
        cfg->via = strdup("keel");
    if (errs->count > 0) {
        keel_proxy_config_free(cfg);
        return KEEL_EINVAL;
    }
    return 0;
}

static void free_field_match(keel_proxy_field_match_t *m)
{
    free(m->name);
    free(m->value);
    if (m->has_regex)
        regfree(&m->regex);
}

static void free_edits(keel_proxy_header_edit_t *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].value);
    }
}

void keel_proxy_config_free(keel_proxy_config_t *cfg)
{
    for (uint32_t i = 0; i < cfg->listeners_count; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].address);
    }
    for (uint32_t i = 0; i < cfg->clusters_count; i++) {
        keel_proxy_cluster_t *cl = &cfg->clusters[i];
        free(cl->name);
        for (uint32_t k = 0; k < cl->hosts_count; k++)
            free(cl->hosts[k].address);
        free(cl->balance);
        free(cl->hash_header);
        free(cl->health.path);
        free(cl->service);
        free(cl->tag);
        free(cl->registry);
    }
    for (uint32_t i = 0; i < cfg->routes_count; i++) {
        keel_proxy_route_t *r = &cfg->routes[i];
        free(r->name);
        free(r->listener);
        free(r->host);
        free(r->path);
        if (r->path_kind == KEEL_PROXY_PATH_REGEX)
            regfree(&r->path_regex);
        for (uint32_t k = 0; k < r->methods_count; k++)
            free(r->methods[k]);
        for (uint32_t k = 0; k < r->headers_count; k++)
            free_field_match(&r->headers[k]);
        for (uint32_t k = 0; k < r->query_count; k++)
            free_field_match(&r->query[k]);
        free(r->rewrite_prefix);
        free(r->direct_body);
        free(r->direct_content_type);
        free(r->redirect_location);
        free_edits(r->req_add, r->req_add_count);
        free_edits(r->req_remove, r->req_remove_count);
        free_edits(r->resp_add, r->resp_add_count);
        free_edits(r->resp_remove, r->resp_remove_count);
        free(r->ratelimit.header);
        free(r->retry.idempotency_header);
        if (r->aggregate != NULL) {
            for (uint32_t k = 0; k < r->aggregate->parts_count; k++) {
                free(r->aggregate->parts[k].name);
                free(r->aggregate->parts[k].cluster_name);
                free(r->aggregate->parts[k].path);
            }
            for (uint32_t k = 0; k < r->aggregate->forward_count; k++)
                free(r->aggregate->forward_headers[k]);
            free(r->aggregate);
        }
    }
    for (uint32_t i = 0; i < cfg->jwt_providers_count; i++) {
        keel_proxy_jwt_provider_t *pv = &cfg->jwt_providers[i];
        free(pv->name);
        free(pv->issuer);
        for (uint32_t k = 0; k < pv->audiences_count; k++)
            free(pv->audiences[k]);
        free(pv->jwks_file);
        free(pv->jwks);
        for (uint32_t k = 0; k < pv->claims_to_headers_count; k++) {
            free(pv->claims_to_headers[k].claim);
            free(pv->claims_to_headers[k].header);
        }
    }
    keel_proxy_sidecar_t *sc = &cfg->sidecar;
    free(sc->service);
    free(sc->id);
    free(sc->app);
    free(sc->inbound);
    free(sc->advertise);
    for (uint32_t k = 0; k < sc->tags_count; k++)
        free(sc->tags[k]);
    for (uint32_t k = 0; k < 2 * sc->meta_count; k++)
        free(sc->meta[k]);
    free(sc->version);
    free(sc->registry);
    free(sc->health.path);
    free(cfg->admin_address);
    free(cfg->registry);
    free(cfg->via);
    memset(cfg, 0, sizeof(*cfg));
}
