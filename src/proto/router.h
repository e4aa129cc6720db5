/* router.h - an HTTP route table with path parameters: the service kit's router. */
#ifndef KEEL_PROTO_ROUTER_H
#define KEEL_PROTO_ROUTER_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Patterns are paths whose segments are literals, `:name` (one non-empty segment) or, last
 * only, `*name` (the rest of the path, possibly empty): "/orders/:id/items" takes id, and
 * "/static/" followed by "*path" takes path. A
 * request matches the most specific route: segment by segment, a literal beats a
 * parameter, which beats the wildcard, so "/orders/new" wins over "/orders/:id" whatever
 * the order they were added in. Two routes of one method with the same shape conflict and
 * the second is refused. A path that matches only routes of other methods gets
 * KEEL_EREJECTED and the methods it takes (for 405 and Allow). Values are the path's raw
 * bytes (not percent-decoded), pointing into it.
 */
#define KEEL_ROUTER_ROUTES_MAX 1024u
#define KEEL_ROUTER_SEGMENTS_MAX 32u
#define KEEL_ROUTER_PARAMS_MAX 16u
#define KEEL_ROUTER_PATTERN_BYTES_MAX 1024u
#define KEEL_ROUTER_METHOD_BYTES_MAX 16u

typedef struct keel_route_param {
    const char *name, *value; /* name: the pattern's; value: into the matched path */
    size_t name_len, value_len;
} keel_route_param_t;

typedef struct keel_route_match {
    void *data;   /* what the route was added with */
    size_t route; /* its position in the table */
    size_t n;     /* params */
    keel_route_param_t params[KEEL_ROUTER_PARAMS_MAX];
    char allow[128]; /* KEEL_EREJECTED: the methods the path takes, "GET, PUT" */
} keel_route_match_t;

typedef struct keel_router_seg {
    uint8_t kind;     /* 3 literal, 2 param, 1 wildcard: the order of specificity */
    const char *text; /* literal bytes or the name, into the route's pattern copy */
    size_t len;
} keel_router_seg_t;

typedef struct keel_router_route {
    char method[KEEL_ROUTER_METHOD_BYTES_MAX]; /* "*" matches any */
    char *pattern;                             /* owned copy */
    keel_router_seg_t segs[KEEL_ROUTER_SEGMENTS_MAX];
    size_t nsegs;
    void *data;
} keel_router_route_t;

typedef struct keel_router {
    keel_router_route_t *routes;
    size_t n, cap;
} keel_router_t;

void keel_router_init(keel_router_t *r);
void keel_router_free(keel_router_t *r);
/* 0, or KEEL_EINVAL (a malformed pattern or method, a conflict: msg says which),
 * KEEL_EFULL, KEEL_ENOMEM. */
int keel_router_add(keel_router_t *r, const char *method, const char *pattern, void *data,
                    keel_errmsg_t *msg);
/* 0 and m, KEEL_ENOTFOUND (404), or KEEL_EREJECTED (405; m->allow). */
int keel_router_match(const keel_router_t *r, const char *method, size_t method_len,
                      const char *path, size_t path_len, keel_route_match_t *m);

#endif
