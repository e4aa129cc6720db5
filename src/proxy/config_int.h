/* config_int.h - the proxy config loader's shared parts: the load context, field tables and the
 * YAML conversions (config_yaml.c) that each section's loader uses (config.c: the document, the
 * top level, listeners, limits and the sidecar; config_cluster.c: clusters and JWT providers;
 * config_route.c: routes). Not a public header. */
#ifndef KEEL_PROXY_CONFIG_INT_H
#define KEEL_PROXY_CONFIG_INT_H

#include "proxy/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
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
    bool weighted; /* the route's action is weighted_clusters */
} route_load_t;

/* The loader passes its route_load_t through the ctx; one route loads at a time. */
typedef struct ctx_ext {
    ctx_t c;
    route_load_t *rl;
} ctx_ext_t;

static inline route_load_t *current_rl(ctx_t *c)
{
    return ((ctx_ext_t *)c)->rl;
}

/* Records an error at a line (1-based; 0: the file as a whole); past KEEL_PROXY_ERRORS_MAX it
 * only counts it. */
__attribute__((format(printf, 3, 4))) void keel__cfg_errl(ctx_t *c, int line, const char *fmt, ...);

static inline int line_of(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

#define ERR(c, node, ...) keel__cfg_errl((c), line_of(node), __VA_ARGS__)

static inline yaml_node_t *node_at(ctx_t *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

static inline const char *scalar(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/*
 * Replaces "${NAME}" and "${NAME:-default}" in every scalar of the document with the
 * environment's value ("$${" stands for a literal "${"): one file serves every place a
 * program runs (`keel up --regions` gives each instance its host this way). A NAME that is
 * unset, with no default, is an error at its line.
 */
void keel__cfg_expand_env(ctx_t *c);

/* ---- scalar conversions (config_yaml.c): each reports its error and returns false ---------- */

bool keel__cfg_want_scalar(ctx_t *c, yaml_node_t *n, const char *key, const char **out);
bool keel__cfg_to_u64(ctx_t *c, yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi,
                      uint64_t *out);
bool keel__cfg_to_bool(ctx_t *c, yaml_node_t *n, const char *key, bool *out);
/* A copy of s (malloc'd; NULL when out of memory), lower-cased where low. */
char *keel__cfg_dup_lower(const char *s, bool low);
/* Replaces *out (malloc'd) with a copy of the value. */
bool keel__cfg_to_str(ctx_t *c, yaml_node_t *n, const char *key, bool low, char **out);
/* A field name: a token (RFC 9110 §5.6.2), stored lower-case. */
bool keel__cfg_to_field_name(ctx_t *c, yaml_node_t *n, const char *key, char **out);
/* A value sent in a header: no CR, LF or NUL (they would split the message). */
bool keel__cfg_to_header_value(ctx_t *c, yaml_node_t *n, const char *key, char **out);
/* "host:port" with a port in 1..65535 (0 too where any_port: a listener the kernel places);
 * the runtime resolves nothing, so hosts are numeric. */
bool keel__cfg_to_address(ctx_t *c, yaml_node_t *n, const char *key, bool any_port, char **out);
/* A registry service name or tag: what KEEL.REG accepts (no spaces or control characters). */
void keel__cfg_to_reg_name(ctx_t *c, yaml_node_t *v, const char *key, char **out);

/* ---- field tables (config_yaml.c) ---------------------------------------------------------- */

typedef enum ftype { F_U32, F_U64, F_MS, F_BOOL, F_STR, F_FN } ftype_t;

typedef struct field {
    const char *key;
    ftype_t type;
    size_t off;
    uint64_t lo, hi;
    void (*fn)(ctx_t *c, yaml_node_t *value, void *base);
} field_t;

#define FIELDS_MAX 32u

/* Loads a mapping into base through a table of n (<= FIELDS_MAX) fields; what names the
 * section in errors. */
void keel__cfg_load_fields(ctx_t *c, yaml_node_t *map, const field_t *fields, size_t n, void *base,
                           const char *what);

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define DAY_MS 86400000u

/* Iterates a sequence node, calling fn(c, item, i) for each; refuses more than max items. */
void keel__cfg_each_item(ctx_t *c, yaml_node_t *seq, const char *what, uint32_t max,
                         void (*fn)(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg), void *arg);

/* ---- sections ------------------------------------------------------------------------------ */

/* config.c: a TLS file name (cert_file, key_file, ca_file) */
void keel__cfg_tls_file(ctx_t *c, yaml_node_t *v, const char *key, char **out);
/* config_cluster.c */
void keel__cfg_health_default(keel_proxy_health_t *h);
/* A health_check section (a cluster's or the sidecar's app's): GET path, or a TCP connect. */
void keel__cfg_load_health(ctx_t *c, yaml_node_t *v, keel_proxy_health_t *h);
void keel__cfg_top_clusters(ctx_t *c, yaml_node_t *v, void *base);
void keel__cfg_top_jwt_providers(ctx_t *c, yaml_node_t *v, void *base);
/* config_route.c: the routes, their cluster names kept in current_rl(c) for config.c to
 * resolve */
void keel__cfg_top_routes(ctx_t *c, yaml_node_t *v, void *base);
/* config_cors.c: a route's `cors:` section (the route is base), and the top level's (the
 * config is base: the default of routes without one), loaded by the same code */
void keel__cfg_route_cors(ctx_t *c, yaml_node_t *v, void *base);
void keel__cfg_top_cors(ctx_t *c, yaml_node_t *v, void *base);
/* Gives the top-level policy to every route with no `cors:` of its own (after all are loaded). */
void keel__cfg_cors_inherit(keel_proxy_config_t *cfg);
void keel__cfg_cors_free(keel_proxy_cors_t *cors);

#endif
