/* config.c - YAML text to keel_proxy_config_t, through field tables, with every error's line:
 * the document, its top level, listeners, limits and the sidecar; keel_proxy_config_free. */
#include "proxy/config.h"

#include "base/err.h"
#include "kit/discovery.h"
#include "proxy/config_int.h"
#include "proxy/h1.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

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
    keel__cfg_to_address(c, v, "address", true, &((keel_proxy_listener_t *)base)->address);
}

/* A file name: a non-empty value without control characters. */
static void tls_file(ctx_t *c, yaml_node_t *v, const char *key, char **out)
{
    if (!keel__cfg_to_str(c, v, key, false, out))
        return;
    bool ok = (*out)[0] != 0 && strlen(*out) < KEEL_PROXY_VALUE_BYTES_MAX;
    for (const char *s = *out; ok && *s; s++)
        ok = (unsigned char)*s >= 0x20 && *s != 0x7f;
    if (!ok)
        ERR(c, v, "%s: a file name of 1..%u bytes without control characters", key,
            KEEL_PROXY_VALUE_BYTES_MAX - 1);
}

static void ltls_cert(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_tls_server_t *t = base;
    t->cert_line = line_of(v);
    tls_file(c, v, "cert_file", &t->cert_file);
}

static void ltls_key(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_tls_server_t *t = base;
    t->key_line = line_of(v);
    tls_file(c, v, "key_file", &t->key_file);
}

static void listener_tls(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"enabled", F_BOOL, offsetof(keel_proxy_tls_server_t, enabled), 0, 0, NULL},
        {"cert_file", F_FN, 0, 0, 0, ltls_cert},
        {"key_file", F_FN, 0, 0, 0, ltls_key},
    };
    keel_proxy_tls_server_t *t = &((keel_proxy_listener_t *)base)->tls;
    t->enabled = true;
    t->line = line_of(v);
    keel__cfg_load_fields(c, v, f, N(f), t, "tls");
    if (t->enabled && (t->cert_file == NULL || t->key_file == NULL))
        ERR(c, v, "tls: 'cert_file' and 'key_file' are required");
}

/* Used by config_cluster.c too. */
void keel__cfg_tls_file(ctx_t *c, yaml_node_t *v, const char *key, char **out)
{
    tls_file(c, v, key, out);
}

static const field_t listener_fields[] = {
    {"name", F_STR, offsetof(keel_proxy_listener_t, name), 0, 0, NULL},
    {"address", F_FN, 0, 0, 0, listener_address},
    {"tls", F_FN, 0, 0, 0, listener_tls},
};

static void load_listener(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_listener_t *l = &c->cfg->listeners[i];
    l->line = line_of(item);
    c->cfg->listeners_count = i + 1;
    keel__cfg_load_fields(c, item, listener_fields, N(listener_fields), l, "listener");
    if (l->address == NULL)
        ERR(c, item, "listener: 'address' is required");
}

static void top_listeners(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "listeners", KEEL_PROXY_LISTENERS_MAX, load_listener, NULL);
}

static void admin_address(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_address(c, v, "address", true, &((keel_proxy_config_t *)base)->admin_address);
}

static void top_admin(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t admin_fields[] = {{"address", F_FN, 0, 0, 0, admin_address}};
    keel__cfg_load_fields(c, v, admin_fields, N(admin_fields), base, "admin");
}

static void top_limits(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_load_fields(c, v, limit_fields, N(limit_fields),
                          &((keel_proxy_config_t *)base)->limits, "limits");
}

static void top_via(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_config_t *cfg = base;
    if (keel__cfg_to_str(c, v, "via", false, &cfg->via) &&
        (cfg->via[0] == 0 || strlen(cfg->via) >= KEEL_PROXY_NAME_BYTES_MAX ||
         strpbrk(cfg->via, " \t\r\n,") != NULL))
        ERR(c, v, "via: '%s' must be a token of 1..%u bytes", cfg->via,
            KEEL_PROXY_NAME_BYTES_MAX - 1);
}

static void top_zone(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_config_t *cfg = base;
    if (keel__cfg_to_str(c, v, "zone", false, &cfg->zone) &&
        strlen(cfg->zone) >= KEEL_DISCOVERY_ZONE_BYTES_MAX)
        ERR(c, v, "zone: at most %u bytes", KEEL_DISCOVERY_ZONE_BYTES_MAX - 1);
}

/* "host:port" or several, comma-separated (keel server nodes; any of them answers). */
static void to_registry(ctx_t *c, yaml_node_t *v, char **out)
{
    if (!keel__cfg_to_str(c, v, "registry", false, out))
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
    keel__cfg_to_reg_name(c, v, "service", &((keel_proxy_sidecar_t *)base)->service);
}

static void sc_id(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_reg_name(c, v, "id", &((keel_proxy_sidecar_t *)base)->id);
}

static void sc_app(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_address(c, v, "app", false, &((keel_proxy_sidecar_t *)base)->app);
}

static void sc_advertise(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_address(c, v, "advertise", false, &((keel_proxy_sidecar_t *)base)->advertise);
}

static void sc_version(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_to_reg_name(c, v, "version", &((keel_proxy_sidecar_t *)base)->version);
}

static void sc_registry(ctx_t *c, yaml_node_t *v, void *base);

static void load_sc_tag(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg)
{
    keel_proxy_sidecar_t *sc = arg;
    keel__cfg_to_reg_name(c, item, "tag", &sc->tags[i]);
    sc->tags_count = i + 1;
}

static void sc_tags(ctx_t *c, yaml_node_t *v, void *base)
{
    keel__cfg_each_item(c, v, "sidecar: tags", KEEL_PROXY_SIDECAR_TAGS_MAX, load_sc_tag, base);
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
        keel__cfg_to_reg_name(c, node_at(c, p->key), "meta key", &sc->meta[k]);
        keel__cfg_to_str(c, node_at(c, p->value), "meta value", false, &sc->meta[k + 1]);
    }
}

static void sc_health(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_sidecar_t *sc = base;
    sc->health.tcp = false;
    keel__cfg_load_health(c, v, &sc->health);
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
    keel__cfg_health_default(&sc->health);
    sc->health.enabled = true;
    sc->health.tcp = true; /* without a health_check: a connect to the app */
    keel__cfg_load_fields(c, v, f, N(f), sc, "sidecar");
    if (sc->service == NULL)
        ERR(c, v, "sidecar: 'service' is required");
    if (sc->app == NULL)
        ERR(c, v, "sidecar: 'app' (the local app's host:port) is required");
}

/* ---- tracing ----------------------------------------------------------------------------- */

/* http://host:port[/path]: a numeric host (or localhost), as the runtime resolves nothing. */
static void tr_zipkin(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_tracing_t *t = base;
    if (!keel__cfg_to_str(c, v, "zipkin", false, &t->zipkin))
        return;
    const char *u = t->zipkin;
    if (strncmp(u, "https://", 8) == 0) {
        ERR(c, v, "tracing: zipkin: https collectors are not supported (use http://)");
        return;
    }
    if (strncmp(u, "http://", 7) != 0) {
        ERR(c, v, "tracing: zipkin: '%s' is not an http://host:port/path URL", u);
        return;
    }
    const char *auth = u + 7, *slash = strchr(auth, '/');
    size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
    char hp[KEEL_PROXY_NAME_BYTES_MAX];
    const char *colon = NULL;
    for (size_t i = 0; alen < sizeof(hp) && i < alen; i++)
        colon = auth[i] == ':' ? auth + i : colon;
    bool ok = colon != NULL && colon > auth;
    if (ok) {
        memcpy(hp, auth, alen);
        hp[alen] = '\0';
        hp[colon - auth] = '\0';
        const char *port = hp + (colon - auth) + 1;
        long pn = strtol(port, NULL, 10);
        char host[KEEL_PROXY_NAME_BYTES_MAX];
        size_t hl = strlen(hp);
        bool bracket = hl >= 2 && hp[0] == '[' && hp[hl - 1] == ']';
        snprintf(host, sizeof(host), "%.*s", (int)(bracket ? hl - 2 : hl), bracket ? hp + 1 : hp);
        unsigned char sa[sizeof(struct in6_addr)];
        ok = port[0] != '\0' && strspn(port, "0123456789") == strlen(port) && pn >= 1 &&
             pn <= 65535 &&
             (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, sa) == 1 ||
              (bracket && inet_pton(AF_INET6, host, sa) == 1));
        hp[colon - auth] = ':';
    }
    if (!ok) {
        ERR(c, v, "tracing: zipkin: '%s' needs a numeric host and a port (http://IP:port/path)", u);
        return;
    }
    const char *path = slash ? slash : "/api/v2/spans";
    for (const char *q = path; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f) {
            ERR(c, v, "tracing: zipkin: the path has a space or control character");
            return;
        }
    free(t->zipkin_address);
    free(t->zipkin_path);
    t->zipkin_address = strdup(hp);
    t->zipkin_path = strdup(path);
}

static void tr_service(ctx_t *c, yaml_node_t *v, void *base)
{
    keel_proxy_tracing_t *t = base;
    if (keel__cfg_to_str(c, v, "service_name", false, &t->service_name) &&
        (t->service_name[0] == '\0' || strlen(t->service_name) >= KEEL_PROXY_NAME_BYTES_MAX))
        ERR(c, v, "tracing: service_name: 1..%u bytes", KEEL_PROXY_NAME_BYTES_MAX - 1);
}

/* A percentage 0..100 with up to 4 decimals ("1", "0.5", "100.0"), kept in parts per million. */
static void tr_sample(ctx_t *c, yaml_node_t *v, void *base)
{
    const char *s = scalar(v);
    uint64_t whole = 0, frac = 0;
    int fdigits = 0;
    bool ok = s != NULL && s[0] != '\0' && s[0] != '.';
    const char *q = s;
    for (; ok && *q >= '0' && *q <= '9' && whole <= 100; q++)
        whole = whole * 10 + (uint64_t)(*q - '0');
    if (ok && *q == '.')
        for (q++; *q >= '0' && *q <= '9' && fdigits < 4; q++, fdigits++)
            frac = frac * 10 + (uint64_t)(*q - '0');
    ok = ok && *q == '\0' && (q[-1] != '.');
    for (int i = fdigits; i < 4; i++)
        frac *= 10;
    uint64_t ppm = whole * 10000 + frac;
    if (!ok || ppm > KEEL_PROXY_TRACE_PPM) {
        ERR(c, v, "tracing: sample_percent: '%s' is not a number 0..100 (up to 4 decimals)",
            s ? s : "?");
        return;
    }
    ((keel_proxy_tracing_t *)base)->sample_ppm = (uint32_t)ppm;
}

static void top_tracing(ctx_t *c, yaml_node_t *v, void *base)
{
    static const field_t f[] = {
        {"zipkin", F_FN, 0, 0, 0, tr_zipkin},
        {"service_name", F_FN, 0, 0, 0, tr_service},
        {"sample_percent", F_FN, 0, 0, 0, tr_sample},
        {"batch_max", F_U32, offsetof(keel_proxy_tracing_t, batch_max), 1,
         KEEL_PROXY_TRACE_BATCH_MAX, NULL},
        {"flush_ms", F_MS, offsetof(keel_proxy_tracing_t, flush_ms), KEEL_PROXY_TRACE_FLUSH_MS_MIN,
         KEEL_PROXY_TRACE_FLUSH_MS_MAX, NULL},
        {"queue_max", F_U32, offsetof(keel_proxy_tracing_t, queue_max), 1,
         KEEL_PROXY_TRACE_QUEUE_MAX, NULL},
        {"timeout_ms", F_MS, offsetof(keel_proxy_tracing_t, timeout_ms), 100, 60000, NULL},
    };
    keel_proxy_tracing_t *t = &((keel_proxy_config_t *)base)->tracing;
    t->enabled = true;
    t->line = line_of(v);
    t->sample_ppm = KEEL_PROXY_TRACE_PPM;
    t->batch_max = 100;
    t->flush_ms = 1000;
    t->queue_max = 10000;
    t->timeout_ms = 5000;
    keel__cfg_load_fields(c, v, f, N(f), t, "tracing");
    if (v->type == YAML_MAPPING_NODE && t->zipkin == NULL)
        ERR(c, v, "tracing: 'zipkin' (the collector's URL) is required");
    if (t->queue_max < t->batch_max)
        ERR(c, v, "tracing: queue_max (%u) is below batch_max (%u)", t->queue_max, t->batch_max);
    if (t->service_name == NULL)
        t->service_name = strdup("keel-proxy");
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
    {"routes", F_FN, 0, 0, 0, keel__cfg_top_routes},
    {"via", F_FN, 0, 0, 0, top_via},
    {"zone", F_FN, 0, 0, 0, top_zone},
    {"registry", F_FN, 0, 0, 0, top_registry},
    {"access_log", F_BOOL, offsetof(keel_proxy_config_t, access_log), 0, 0, NULL},
    {"workers", F_U32, offsetof(keel_proxy_config_t, workers), 1, KEEL_PROXY_WORKERS_MAX, NULL},
    {"sidecar", F_FN, 0, 0, 0, top_sidecar},
    {"tracing", F_FN, 0, 0, 0, top_tracing},
    {"cors", F_FN, 0, 0, 0, keel__cfg_top_cors},
};

/* ---- the whole document ------------------------------------------------------------------ */

static void resolve_refs(ctx_t *c, route_load_t *rl)
{
    for (uint32_t i = 0; i < rl->refs_count; i++) {
        pending_ref_t *p = &rl->refs[i];
        int idx = keel_proxy_config_cluster(c->cfg, p->name);
        if (idx < 0)
            keel__cfg_errl(c, p->line, "route '%s': no cluster named '%s'",
                           c->cfg->routes[p->route].name, p->name);
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
                keel__cfg_errl(c, a->parts[k].line, "route '%s': part %s: no cluster named '%s'",
                               c->cfg->routes[i].name, a->parts[k].name ? a->parts[k].name : "?",
                               a->parts[k].cluster_name);
            else if (c->cfg->clusters[idx].tls.enabled) /* parts use the plain HTTP client */
                keel__cfg_errl(c, a->parts[k].line,
                               "route '%s': part %s: cluster '%s' has tls, which aggregate parts "
                               "do not speak yet",
                               c->cfg->routes[i].name, a->parts[k].name ? a->parts[k].name : "?",
                               a->parts[k].cluster_name);
            else
                a->parts[k].cluster = (uint32_t)idx;
        }
    }
    for (uint32_t i = 0; i < c->cfg->jwt_providers_count; i++) {
        keel_proxy_remote_jwks_t *rj = &c->cfg->jwt_providers[i].remote_jwks;
        if (!rj->enabled || rj->cluster_name == NULL)
            continue;
        int idx = keel_proxy_config_cluster(c->cfg, rj->cluster_name);
        const char *pn = c->cfg->jwt_providers[i].name ? c->cfg->jwt_providers[i].name : "?";
        if (idx < 0)
            keel__cfg_errl(c, rj->line, "jwt provider '%s': remote_jwks: no cluster named '%s'", pn,
                           rj->cluster_name);
        else if (c->cfg->clusters[idx].tls.enabled) /* fetched with the plain HTTP client */
            keel__cfg_errl(c, rj->line,
                           "jwt provider '%s': remote_jwks: cluster '%s' has tls, which "
                           "remote_jwks does not speak yet (https is not fetched)",
                           pn, rj->cluster_name);
        else
            rj->cluster = (uint32_t)idx;
    }
    for (uint32_t i = 0; i < c->cfg->routes_count; i++) {
        keel_proxy_route_t *r = &c->cfg->routes[i];
        if (r->clusters_count == 0)
            continue;
        r->weight_total = 0;
        for (uint32_t k = 0; k < r->clusters_count; k++)
            r->weight_total += r->clusters[k].weight;
        if (r->weight_total == 0)
            keel__cfg_errl(c, r->line, "route '%s': weighted_clusters weights add up to 0",
                           r->name);
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
            keel__cfg_errl(c, r->line, "route '%s': no listener named '%s'",
                           r->name ? r->name : "?", r->listener);
    }
    keel_proxy_sidecar_t *sc = &cfg->sidecar;
    if (!sc->enabled)
        return;
    if (sc->inbound != NULL) {
        uint32_t k = listener_1(cfg, sc->inbound);
        if (k == 0)
            keel__cfg_errl(c, sc->line, "sidecar: no listener named '%s' (inbound)", sc->inbound);
        sc->inbound_listener = k > 0 ? k - 1 : 0;
    }
    if (sc->registry == NULL && cfg->registry != NULL &&
        (sc->registry = strdup(cfg->registry)) == NULL)
        keel__cfg_errl(c, sc->line, "out of memory");
    if (sc->registry == NULL)
        keel__cfg_errl(c, sc->line, "sidecar: 'registry' is required (here or at the top level)");
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
        keel__cfg_errl(c, 1, "the file is empty");
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        ERR(c, root, "the top level must be a mapping (listeners:, clusters:, routes:, ...)");
        return;
    }
    /* sections that routes refer to load first; the first of each only: a repeated key is an
     * error keel__cfg_load_fields reports below */
    bool clusters = false, providers = false;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *key = scalar(node_at(c, p->key));
        if (key && strcmp(key, "clusters") == 0 && !clusters) {
            clusters = true;
            keel__cfg_top_clusters(c, node_at(c, p->value), c->cfg);
        } else if (key && strcmp(key, "jwt_providers") == 0 && !providers) {
            providers = true;
            keel__cfg_top_jwt_providers(c, node_at(c, p->value), c->cfg);
        }
    }
    x->rl = rl;
    keel__cfg_load_fields(c, root, top_fields, N(top_fields), c->cfg, "top level");
    resolve_refs(c, rl);
    keel__cfg_cors_inherit(c->cfg);
    for (uint32_t i = 0; i < c->cfg->clusters_count; i++) {
        keel_proxy_cluster_t *cl = &c->cfg->clusters[i];
        if (cl->service == NULL)
            continue;
        if (c->cfg->registry == NULL)
            keel__cfg_errl(c, cl->line, "cluster '%s': 'service' needs a top-level 'registry'",
                           cl->name ? cl->name : "?");
        else if ((cl->registry = strdup(c->cfg->registry)) == NULL)
            keel__cfg_errl(c, cl->line, "out of memory");
        if (c->cfg->zone && c->cfg->zone[0] && (cl->zone = strdup(c->cfg->zone)) == NULL)
            keel__cfg_errl(c, cl->line, "out of memory");
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
                keel__cfg_errl(c, a->line, "listener address %s is used twice", a->address);
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
        keel__cfg_errl(&x.c, 0, "the file is larger than %u bytes", KEEL_PROXY_CONFIG_BYTES_MAX);
        return KEEL_EINVAL;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        keel__cfg_errl(&x.c, 0, "out of memory");
        return KEEL_EINVAL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        keel__cfg_errl(&x.c, (int)parser.problem_mark.line + 1, "YAML: %s",
                       parser.problem ? parser.problem : "syntax error");
        yaml_parser_delete(&parser);
        return KEEL_EINVAL;
    }
    route_load_t rl = {calloc(PENDING_REFS_MAX, sizeof(pending_ref_t)), 0, 0, 0, false};
    if (rl.refs == NULL) {
        keel__cfg_errl(&x.c, 0, "out of memory");
    } else {
        x.c.doc = &doc;
        keel__cfg_expand_env(&x.c);
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
        free(cfg->listeners[i].tls.cert_file);
        free(cfg->listeners[i].tls.key_file);
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
        free(cl->zone);
        free(cl->tls.ca_file);
        free(cl->tls.server_name);
    }
    for (uint32_t i = 0; i < cfg->routes_count; i++) {
        keel_proxy_route_t *r = &cfg->routes[i];
        free(r->name);
        free(r->rollout.canary_name);
        free(r->listener);
        free(r->host);
        free(r->path);
        if (r->path_kind == KEEL_PROXY_PATH_REGEX)
            regfree(&r->path_regex);
        for (uint32_t k = 0; k < r->methods_count; k++)
            free(r->methods[k]);
        for (uint32_t k = 0; k < r->upgrades_count; k++)
            free(r->upgrades[k]);
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
        for (uint32_t k = 0; k < r->ratelimits_count; k++)
            free(r->ratelimits[k].header);
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
        if (!r->cors_inherited)
            keel__cfg_cors_free(r->cors);
    }
    keel__cfg_cors_free(cfg->cors);
    for (uint32_t i = 0; i < cfg->jwt_providers_count; i++) {
        keel_proxy_jwt_provider_t *pv = &cfg->jwt_providers[i];
        free(pv->name);
        free(pv->issuer);
        for (uint32_t k = 0; k < pv->audiences_count; k++)
            free(pv->audiences[k]);
        free(pv->jwks_file);
        free(pv->jwks);
        free(pv->remote_jwks.cluster_name);
        free(pv->remote_jwks.path);
        for (uint32_t k = 0; k < pv->claims_to_headers_count; k++) {
            free(pv->claims_to_headers[k].claim);
            free(pv->claims_to_headers[k].header);
        }
        for (uint32_t k = 0; k < pv->from_headers_count; k++) {
            free(pv->from_headers[k].name);
            free(pv->from_headers[k].value_prefix);
        }
        for (uint32_t k = 0; k < pv->from_params_count; k++)
            free(pv->from_params[k]);
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
    free(cfg->zone);
    free(cfg->tracing.zipkin);
    free(cfg->tracing.zipkin_address);
    free(cfg->tracing.zipkin_path);
    free(cfg->tracing.service_name);
    memset(cfg, 0, sizeof(*cfg));
}
