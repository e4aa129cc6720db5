/* config_route.c - the config's routes: match, action (cluster, weighted clusters, direct
 * response, redirect, aggregate), header edits, retry, rate limit and JWT requirement. */
#include "proxy/config_int.h"

#include <assert.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (!keel__cfg_to_str(c, v, key, false, &r->path))
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
    keel__cfg_to_str(c, v, "host", true, &((keel_proxy_route_t *)base)->host);
}

static void load_method(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_route_t *r = arg;
    if (!keel__cfg_to_str(c, item, "methods", false, &r->methods[i]))
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
    keel__cfg_each_item(c, v, "methods", KEEL_PROXY_METHODS_MAX, load_method, base);
}

static void fm_name(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_field_name(c, v, "name", &((keel_proxy_field_match_t *)base)->name);
}
static void fm_value(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_str(c, v, "value", false, &((keel_proxy_field_match_t *)base)->value);
}
static void fm_regex(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_field_match_t *m = base;
    char *pat = NULL;
    if (keel__cfg_to_str(c, v, "regex", false, &pat) && compile(c, v, pat, &m->regex))
        m->has_regex = true;
    free(pat);
}
static void fm_present(ctx_t *c, yaml_node_t *v, void *base)
{
    bool present = true;
    if (keel__cfg_to_bool(c, v, "present", &present))
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
    keel__cfg_load_fields(c, item, field_match_fields, N(field_match_fields), m, "match");
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
    keel__cfg_each_item(c, v, "headers", KEEL_PROXY_MATCH_FIELDS_MAX, load_header_match, base);
}
static void m_query(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "query", KEEL_PROXY_MATCH_FIELDS_MAX, load_query_match, base);
}

static void m_listener(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_str(c, v, "listener", false, &((keel_proxy_route_t *)base)->listener);
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
    keel__cfg_load_fields(c, v, match_fields, N(match_fields), base, "match");
}

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

static void r_cluster(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    route_load_t *rl = current_rl(c);
    const char *s;
    rl->actions++;
    if (!keel__cfg_want_scalar(c, v, "cluster", &s))
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
    keel__cfg_load_fields(c, item, f, N(f), &w, "weighted_clusters");
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
    current_rl(c)->weighted = true;
    keel__cfg_each_item(c, v, "weighted_clusters", KEEL_PROXY_WEIGHTED_MAX, load_weighted, base);
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
    keel__cfg_load_fields(c, v, f, N(f), base, "direct_response");
}

static void redirect_location(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_header_value(c, v, "location", &((keel_proxy_route_t *)base)->redirect_location);
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
    keel__cfg_load_fields(c, v, f, N(f), base, "redirect");
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
    keel__cfg_to_field_name(c, v, "name", &((keel_proxy_header_edit_t *)base)->name);
}
static void ed_value(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_header_value(c, v, "value", &((keel_proxy_header_edit_t *)base)->value);
}

static void load_edit(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    static const field_t f[] = {{"name", F_FN, 0, 0, 0, ed_name},
                                {"value", F_FN, 0, 0, 0, ed_value}};
    edit_list_t *l = arg;
    keel_proxy_header_edit_t *e = &l->e[i];
    *l->count = i + 1;
    if (!l->with_value) { /* a remove list is a list of names */
        keel__cfg_to_field_name(c, item, "remove", &e->name);
        return;
    }
    keel__cfg_load_fields(c, item, f, N(f), e, "header");
    if (e->name == NULL || e->value == NULL)
        ERR(c, item, "header: 'name' and 'value' are required");
}

#define EDIT_FN(fname, arr, cnt, withv)                                                            \
    static void fname(ctx_t *c, yaml_node_t *v, void *base)                                        \
    {                                                                                              \
        keel_proxy_route_t *r = base;                                                              \
        edit_list_t l = {r->arr, &r->cnt, withv};                                                  \
        keel__cfg_each_item(c, v, #arr, KEEL_PROXY_HEADER_EDITS_MAX, load_edit, &l);               \
    }
EDIT_FN(r_req_add, req_add, req_add_count, true)
EDIT_FN(r_req_remove, req_remove, req_remove_count, false)
EDIT_FN(r_resp_add, resp_add, resp_add_count, true)
EDIT_FN(r_resp_remove, resp_remove, resp_remove_count, false)

static void r_rewrite(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    if (keel__cfg_to_str(c, v, "rewrite_prefix", false, &r->rewrite_prefix) &&
        r->rewrite_prefix[0] != '/')
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
    if (!keel__cfg_want_scalar(c, item, "retry_on", &s))
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
    keel__cfg_each_item(c, v, "retry_on", 8, load_retry_on, base);
}

static void load_status(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_retry_t *rt = arg;
    uint64_t v;
    if (keel__cfg_to_u64(c, item, "statuses", 100, 599, &v)) {
        rt->statuses[i] = (int)v;
        rt->statuses_count = i + 1;
    }
}

static void rt_statuses(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "statuses", KEEL_PROXY_STATUSES_MAX, load_status, base);
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
    keel__cfg_to_field_name(c, v, "idempotency_header", &rt->idempotency_header);
}

static void r_retry(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"attempts_max", F_U32, offsetof(keel_proxy_retry_t, attempts_max), 1,
         KEEL_PROXY_ATTEMPTS_MAX, NULL},
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
    keel__cfg_load_fields(c, v, f, N(f), rt, "retry");
    if (rt->backoff_cap_ms < rt->backoff_base_ms)
        ERR(c, v, "retry: backoff_cap_ms must be >= backoff_base_ms");
}

static void rl_key(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_ratelimit_t *rl = base;
    const char *s;
    if (!keel__cfg_want_scalar(c, v, "key", &s))
        return;
    if (strcmp(s, "source_address") == 0) {
        rl->key = KEEL_PROXY_RL_SOURCE;
    } else if (strncmp(s, "header:", 7) == 0 && s[7] != 0 &&
               strlen(s + 7) < KEEL_PROXY_NAME_BYTES_MAX) {
        rl->key = KEEL_PROXY_RL_HEADER;
        free(rl->header);
        rl->header = keel__cfg_dup_lower(s + 7, true);
    } else if (strncmp(s, "claim:", 6) == 0 && s[6] != 0 &&
               strlen(s + 6) < KEEL_PROXY_NAME_BYTES_MAX) {
        rl->key = KEEL_PROXY_RL_CLAIM; /* the route's jwt is checked in load_route */
        free(rl->header);
        rl->header = keel__cfg_dup_lower(s + 6, false);
    } else {
        ERR(c, v, "key: '%s' is not source_address, header:NAME or claim:NAME", s);
    }
}

static void load_ratelimit(ctx_t *c, yaml_node_t *v, uint32_t i, void *base)
{
    static const field_t f[] = {
        {"key", F_FN, 0, 0, 0, rl_key},
        {"requests_per_s", F_U64, offsetof(keel_proxy_ratelimit_t, requests_per_s), 1, 10000000,
         NULL},
        {"burst", F_U64, offsetof(keel_proxy_ratelimit_t, burst), 1, 10000000, NULL},
        {"keys_max", F_U32, offsetof(keel_proxy_ratelimit_t, keys_max), 8, 1u << 20, NULL},
    };
    keel_proxy_route_t *r = base;
    keel_proxy_ratelimit_t *rl = &r->ratelimits[i];
    rl->enabled = true;
    rl->keys_max = 4096;
    r->ratelimits_count = i + 1;
    keel__cfg_load_fields(c, v, f, N(f), rl, "rate_limit");
    if (rl->requests_per_s == 0)
        ERR(c, v, "rate_limit: 'requests_per_s' is required");
    if (rl->burst == 0)
        rl->burst = rl->requests_per_s;
    rl->keys_max = (rl->keys_max + 7u) & ~7u;
}

/* `rate_limit:` one limit (a mapping), or a list of up to KEEL_PROXY_ROUTE_RATE_LIMITS_MAX. */
static void r_ratelimit(ctx_t *c, yaml_node_t *v, void *base)
{
    if (v->type == YAML_SEQUENCE_NODE)
        keel__cfg_each_item(c, v, "rate_limit", KEEL_PROXY_ROUTE_RATE_LIMITS_MAX, load_ratelimit,
                            base);
    else
        load_ratelimit(c, v, 0, base);
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
        keel__cfg_to_str(c, v, "jwt", false, &t.provider);
    else
        keel__cfg_load_fields(c, v, f, N(f), &t, "jwt");
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
    if (keel__cfg_to_str(c, v, "cluster", false, &pt->cluster_name) &&
        strlen(pt->cluster_name) >= KEEL_PROXY_NAME_BYTES_MAX)
        ERR(c, v, "cluster name '%s' is too long", pt->cluster_name);
}

static void ap_name(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_agg_part_t *pt = base;
    if (!keel__cfg_to_str(c, v, "name", false, &pt->name))
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
    if (!keel__cfg_to_str(c, v, "path", false, &pt->path))
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
    keel__cfg_load_fields(c, item, f, N(f), pt, "part");
    if (pt->name == NULL || pt->cluster_name == NULL || pt->path == NULL)
        ERR(c, item, "part: 'name', 'cluster' and 'path' are required");
    for (uint32_t k = 0; pt->name && k < i; k++)
        if (a->parts[k].name && strcmp(a->parts[k].name, pt->name) == 0)
            ERR(c, item, "part: '%s' is named twice", pt->name);
}

static void ag_parts(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "parts", KEEL_PROXY_AGG_PARTS_MAX, load_agg_part, base);
}

static void load_agg_forward(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_aggregate_t *a = arg;
    a->forward_count = i + 1;
    keel__cfg_to_field_name(c, item, "forward_headers", &a->forward_headers[i]);
}

static void ag_forward(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "forward_headers", KEEL_PROXY_AGG_FORWARD_MAX, load_agg_forward,
                        base);
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
    if (r->aggregate != NULL) /* a repeated key: keel__cfg_load_fields refuses it before this */
        return;
    r->aggregate = calloc(1, sizeof(*r->aggregate));
    if (r->aggregate == NULL) {
        ERR(c, v, "out of memory");
        return;
    }
    r->aggregate->part_bytes_max = 65536;
    keel__cfg_load_fields(c, v, f, N(f), r->aggregate, "aggregate");
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
                keel__cfg_errl(c, a->parts[i].line, "part %s: path '%s' has an unclosed '{'",
                               a->parts[i].name ? a->parts[i].name : "?", path);
                break;
            }
            size_t n = (size_t)(end - q - 1);
            bool header = n > 7 && strncmp(q + 1, "header:", 7) == 0;
            if (!header && !template_has(r, q + 1, n))
                keel__cfg_errl(
                    c, a->parts[i].line,
                    "part %s: {%.*s} is neither a {parameter} of the route's match template nor "
                    "{header:NAME}",
                    a->parts[i].name ? a->parts[i].name : "?", (int)n, q + 1);
            q = end;
        }
    }
}

/* ---- progressive rollout ----------------------------------------------------------------- */

static void ro_canary(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_rollout_t *ro = base;
    ro->canary_line = line_of(v);
    keel__cfg_to_str(c, v, "canary", false, &ro->canary_name);
}

static void load_step(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_rollout_config_t *rc = arg;
    uint64_t pct;
    if (!keel__cfg_to_u64(c, item, "steps", 1, 100, &pct))
        return;
    if (rc->steps_count > 0 && pct <= rc->steps_pct[rc->steps_count - 1]) {
        ERR(c, item, "steps: must increase (%llu after %u)", (unsigned long long)pct,
            rc->steps_pct[rc->steps_count - 1]);
        return;
    }
    rc->steps_pct[rc->steps_count++] = (uint32_t)pct;
}

static void ro_steps(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_rollout_t *ro = base;
    ro->steps_line = line_of(v);
    keel__cfg_each_item(c, v, "steps", KEEL_ROLLOUT_STEPS_MAX, load_step, &ro->core);
    if (v->type == YAML_SEQUENCE_NODE && v->data.sequence.items.start == v->data.sequence.items.top)
        ERR(c, v, "steps: at least one step is required");
}

#define RO_CORE(field)                                                                             \
    (offsetof(keel_proxy_rollout_t, core) + offsetof(keel_rollout_config_t, field))

static void r_rollout(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_rollout_t, enabled), 0, 0, NULL},
        {"canary", F_FN, 0, 0, 0, ro_canary},
        {"steps", F_FN, 0, 0, 0, ro_steps},
        {"step_ms", F_MS, RO_CORE(step_ms), KEEL_ROLLOUT_STEP_MS_MIN, KEEL_ROLLOUT_MS_MAX, NULL},
        {"window_ms", F_MS, RO_CORE(window_ms), KEEL_ROLLOUT_WINDOW_MS_MIN, KEEL_ROLLOUT_MS_MAX,
         NULL},
        {"min_requests", F_U32, RO_CORE(min_requests), 1, KEEL_ROLLOUT_MIN_REQUESTS_MAX, NULL},
        {"max_error_percent", F_U32, RO_CORE(max_error_pct), 0, 100, NULL},
        {"max_p99_ms", F_MS, RO_CORE(max_p99_ms), 1, KEEL_ROLLOUT_MS_MAX, NULL},
    };
    keel_proxy_rollout_t *ro = &((keel_proxy_route_t *)base)->rollout;
    ro->enabled = true;
    ro->line = line_of(v);
    keel_rollout_config_default(&ro->core);
    ro->core.steps_count = 0; /* the schedule is the file's to state: 'steps' is required */
    keel__cfg_load_fields(c, v, f, N(f), ro, "rollout");
    if (v->type != YAML_MAPPING_NODE)
        return;
    if (ro->canary_name == NULL)
        ERR(c, v, "rollout: 'canary' is required (one of the route's weighted_clusters)");
    if (ro->steps_line == 0)
        ERR(c, v, "rollout: 'steps' is required (the canary's weights in percent, increasing)");
}

/* With the route loaded: the canary is one of its weighted clusters, and the others have weight
 * to give. */
static void check_rollout(ctx_t *c, keel_proxy_route_t *r, const route_load_t *rl)
{
    keel_proxy_rollout_t *ro = &r->rollout;
    if (ro->line == 0 || ro->canary_name == NULL)
        return;
    if (!rl->weighted) {
        keel__cfg_errl(c, ro->line,
                       "rollout: needs weighted_clusters (the canary and the clusters it "
                       "replaces)");
        return;
    }
    int slot = -1;
    for (uint32_t k = rl->refs_count; k > 0 && rl->refs[k - 1].route == rl->route; k--) {
        const pending_ref_t *p = &rl->refs[k - 1];
        if (strcmp(p->name, ro->canary_name) != 0)
            continue;
        if (slot >= 0) {
            keel__cfg_errl(c, ro->canary_line,
                           "rollout: canary '%s' is listed twice in weighted_clusters",
                           ro->canary_name);
            return;
        }
        slot = (int)p->slot;
    }
    if (slot < 0) {
        keel__cfg_errl(c, ro->canary_line,
                       "rollout: canary '%s' is not one of the route's weighted_clusters",
                       ro->canary_name);
        return;
    }
    ro->canary = (uint32_t)slot;
    ro->others_weight = 0;
    for (uint32_t k = 0; k < r->clusters_count; k++)
        ro->others_weight += k == ro->canary ? 0 : r->clusters[k].weight;
    if (ro->others_weight == 0)
        keel__cfg_errl(c, ro->line,
                       "rollout: the clusters other than the canary have no weight to give "
                       "(add one with a weight above 0)");
}

/* ---- hedged requests ---------------------------------------------------------------------- */

static void r_hedge(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_hedge_t, enabled), 0, 0, NULL},
        {"delay_ms", F_MS, offsetof(keel_proxy_hedge_t, delay_ms), 1, KEEL_PROXY_HEDGE_DELAY_MS_MAX,
         NULL},
    };
    keel_proxy_hedge_t *hg = &((keel_proxy_route_t *)base)->hedge;
    hg->enabled = v->type == YAML_MAPPING_NODE; /* else one error, from the loader below */
    hg->line = line_of(v);
    keel__cfg_load_fields(c, v, f, N(f), hg, "hedge");
    if (v->type != YAML_MAPPING_NODE)
        return;
    bool has_delay = false;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const char *key = scalar(node_at(c, p->key));
        has_delay |= key != NULL && strcmp(key, "delay_ms") == 0;
    }
    if (!has_delay)
        ERR(c, v, "hedge: 'delay_ms' is required (how long the first try may go unanswered)");
}

/* With the route loaded: a hedge is an attempt sent upstream, counted against the retry's
 * attempts_max, and its body comes from the retry buffer. */
static void check_hedge(ctx_t *c, const keel_proxy_route_t *r)
{
    const keel_proxy_hedge_t *hg = &r->hedge;
    if (!hg->enabled)
        return;
    if (r->action != KEEL_PROXY_ACTION_FORWARD)
        keel__cfg_errl(c, hg->line, "hedge: needs a cluster or weighted_clusters route");
    else if (r->retry.attempts_max < 2)
        keel__cfg_errl(c, hg->line,
                       "hedge: needs retry.attempts_max >= 2 (a hedge is an attempt: the first "
                       "try, the hedge and any retries share attempts_max)");
}

/* ---- upgrades ---------------------------------------------------------------------------- */

static void load_upgrade(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_route_t *r = arg;
    bool ok = keel__cfg_to_field_name(c, item, "upgrades", &r->upgrades[i]);
    r->upgrades_count = i + 1; /* freed with the config even when refused (a copy may be left) */
    if (!ok)
        return;
    if (strlen(r->upgrades[i]) >= KEEL_PROXY_UPGRADE_NAME_BYTES_MAX)
        ERR(c, item, "upgrades: a protocol name is 1..%u bytes",
            KEEL_PROXY_UPGRADE_NAME_BYTES_MAX - 1);
    for (uint32_t k = 0; k < i; k++)
        if (r->upgrades[k] != NULL && strcmp(r->upgrades[k], r->upgrades[i]) == 0)
            ERR(c, item, "upgrades: '%s' is listed twice", r->upgrades[i]);
}

static void r_upgrades(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_route_t *r = base;
    r->upgrades_line = line_of(v);
    keel__cfg_each_item(c, v, "upgrades", KEEL_PROXY_ROUTE_UPGRADES_MAX, load_upgrade, base);
}

/* With the route loaded: a tunnel goes to one upstream connection, so only forwarding routes
 * may upgrade. */
static void check_upgrades(ctx_t *c, const keel_proxy_route_t *r)
{
    if (r->upgrades_count > 0 && r->action != KEEL_PROXY_ACTION_FORWARD)
        keel__cfg_errl(c, r->upgrades_line, "upgrades: needs a cluster or weighted_clusters route");
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
    {"cors", F_FN, 0, 0, 0, keel__cfg_route_cors},
    {"rollout", F_FN, 0, 0, 0, r_rollout},
    {"hedge", F_FN, 0, 0, 0, r_hedge},
    {"upgrades", F_FN, 0, 0, 0, r_upgrades},
    {"upgrade_idle_timeout_ms", F_MS, offsetof(keel_proxy_route_t, upgrade_idle_timeout_ms), 1,
     DAY_MS, NULL},
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
    r->upgrade_idle_timeout_ms = KEEL_PROXY_UPGRADE_IDLE_TIMEOUT_MS_DEFAULT;
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
    rl->weighted = false;
    keel__cfg_load_fields(c, item, route_fields, N(route_fields), r, "route");
    check_rollout(c, r, rl);
    check_hedge(c, r);
    check_upgrades(c, r);
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
    for (uint32_t k = 0; k < r->ratelimits_count; k++)
        if (r->ratelimits[k].key == KEEL_PROXY_RL_CLAIM && !r->jwt.enabled)
            ERR(c, item, "route: rate_limit key claim:%s needs a 'jwt' requirement on the route",
                r->ratelimits[k].header);
    if (r->name == NULL) {
        char buf[32];
        snprintf(buf, sizeof(buf), "route%u", i);
        r->name = strdup(buf);
    }
}

void keel__cfg_top_routes(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "routes", KEEL_PROXY_ROUTES_MAX, load_route, NULL);
}