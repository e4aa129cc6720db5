/* router.c - an HTTP route table with path parameters. */
#include "proto/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_router_init(keel_router_t *r)
{
    memset(r, 0, sizeof(*r));
}

void keel_router_free(keel_router_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->routes[i].pattern);
    free(r->routes);
    memset(r, 0, sizeof(*r));
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* A literal segment takes what a path segment may hold, less the pattern's own markers. */
static int literal_char(char c)
{
    return c > ' ' && c < 127 && c != '/' && c != '?' && c != '#';
}

/* Splits rt->pattern into segments ("/" alone is zero segments). */
static int parse(keel_router_route_t *rt, keel_errmsg_t *msg)
{
    const char *p = rt->pattern;
    size_t len = strlen(p);
    if (len == 0 || p[0] != '/')
        return keel_errf(msg, KEEL_EINVAL, "route %s: a pattern starts with /", p);
    size_t i = 1;
    while (i < len) {
        size_t j = i;
        while (j < len && p[j] != '/')
            j++;
        if (j == i)
            return keel_errf(msg, KEEL_EINVAL, "route %s: an empty segment", p);
        if (rt->nsegs == KEEL_ROUTER_SEGMENTS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "route %s: more than %u segments", p,
                             KEEL_ROUTER_SEGMENTS_MAX);
        keel_router_seg_t *s = &rt->segs[rt->nsegs++];
        s->kind = p[i] == ':' ? 2 : p[i] == '*' ? 1 : 3;
        s->text = p + i + (s->kind != 3);
        s->len = j - i - (s->kind != 3);
        for (size_t k = 0; k < s->len; k++)
            if (s->kind == 3 ? !literal_char(s->text[k]) : !name_char(s->text[k]))
                return keel_errf(msg, KEEL_EINVAL, "route %s: bad character in segment %zu", p,
                                 rt->nsegs);
        if (s->kind != 3 && s->len == 0)
            return keel_errf(msg, KEEL_EINVAL, "route %s: a parameter needs a name", p);
        if (s->kind == 1 && j < len)
            return keel_errf(msg, KEEL_EINVAL, "route %s: *%.*s must be the last segment", p,
                             (int)s->len, s->text);
        i = j + 1;
        if (j + 1 == len)
            return keel_errf(msg, KEEL_EINVAL, "route %s: a pattern does not end with /", p);
    }
    size_t params = 0;
    for (size_t a = 0; a < rt->nsegs; a++) {
        if (rt->segs[a].kind == 3)
            continue;
        if (++params > KEEL_ROUTER_PARAMS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "route %s: more than %u parameters", p,
                             KEEL_ROUTER_PARAMS_MAX);
        for (size_t b = 0; b < a; b++)
            if (rt->segs[b].kind != 3 && rt->segs[b].len == rt->segs[a].len &&
                memcmp(rt->segs[b].text, rt->segs[a].text, rt->segs[a].len) == 0)
                return keel_errf(msg, KEEL_EINVAL, "route %s: parameter %.*s named twice", p,
                                 (int)rt->segs[a].len, rt->segs[a].text);
    }
    return 0;
}

/* Same method and the same shape (literals equal, parameters anywhere the other has one). */
static int same_shape(const keel_router_route_t *a, const keel_router_route_t *b)
{
    if (strcmp(a->method, b->method) != 0 || a->nsegs != b->nsegs)
        return 0;
    for (size_t i = 0; i < a->nsegs; i++) {
        const keel_router_seg_t *x = &a->segs[i], *y = &b->segs[i];
        if (x->kind != y->kind)
            return 0;
        if (x->kind == 3 && (x->len != y->len || memcmp(x->text, y->text, x->len) != 0))
            return 0;
    }
    return 1;
}

int keel_router_add(keel_router_t *r, const char *method, const char *pattern, void *data,
                    keel_errmsg_t *msg)
{
    size_t ml = strlen(method);
    if (ml == 0 || ml >= KEEL_ROUTER_METHOD_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "route %s: bad method", pattern);
    for (size_t i = 0; i < ml; i++)
        if (!(method[i] >= 'A' && method[i] <= 'Z') && !(ml == 1 && method[0] == '*'))
            return keel_errf(msg, KEEL_EINVAL, "route %s: method %s is not upper case", pattern,
                             method);
    if (strlen(pattern) > KEEL_ROUTER_PATTERN_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "route: a pattern longer than %u bytes",
                         KEEL_ROUTER_PATTERN_BYTES_MAX);
    if (r->n == KEEL_ROUTER_ROUTES_MAX)
        return keel_errf(msg, KEEL_EFULL, "route %s: more than %u routes", pattern,
                         KEEL_ROUTER_ROUTES_MAX);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        keel_router_route_t *t = realloc(r->routes, cap * sizeof(*t));
        if (t == NULL)
            return KEEL_ENOMEM;
        r->routes = t;
        r->cap = cap;
    }
    keel_router_route_t *rt = &r->routes[r->n];
    memset(rt, 0, sizeof(*rt));
    memcpy(rt->method, method, ml + 1);
    rt->data = data;
    if ((rt->pattern = strdup(pattern)) == NULL)
        return KEEL_ENOMEM;
    int rc = parse(rt, msg);
    for (size_t i = 0; rc == 0 && i < r->n; i++)
        if (same_shape(&r->routes[i], rt))
            rc = keel_errf(msg, KEEL_EINVAL, "route %s %s conflicts with %s %s (route %zu)", method,
                           pattern, r->routes[i].method, r->routes[i].pattern, i);
    if (rc != 0) {
        free(rt->pattern);
        return rc;
    }
    r->n++;
    return 0;
}

/* Matches path against rt: 1 and the per-segment kinds into score, or 0. */
static int try_route(const keel_router_route_t *rt, const char *path, size_t len,
                     uint8_t score[KEEL_ROUTER_SEGMENTS_MAX + 1], keel_route_match_t *m)
{
    size_t pos = 1, n = 0; /* path[0] is '/' */
    int slash_end = 0;     /* the last segment taken was followed by a final '/' */
    for (size_t i = 0; i < rt->nsegs; i++) {
        const keel_router_seg_t *s = &rt->segs[i];
        score[i] = s->kind;
        if (s->kind == 1) { /* the rest, maybe empty */
            if (m) {
                m->params[n] = (keel_route_param_t){s->text, path + pos, s->len, len - pos};
                n++;
            }
            pos = len;
            slash_end = 0;
            break;
        }
        if (pos >= len)
            return 0;
        size_t end = pos;
        while (end < len && path[end] != '/')
            end++;
        size_t sl = end - pos;
        if (sl == 0)
            return 0;
        if (s->kind == 3 && (sl != s->len || memcmp(path + pos, s->text, sl) != 0))
            return 0;
        if (s->kind == 2 && m) {
            m->params[n] = (keel_route_param_t){s->text, path + pos, s->len, sl};
            n++;
        }
        pos = end < len ? end + 1 : end;
        slash_end = end < len && pos == len;
    }
    if (pos < len || slash_end || (rt->nsegs == 0 && len > 1))
        return 0; /* more path, or a trailing slash the pattern does not have */
    score[rt->nsegs] = 0;
    if (m)
        m->n = n;
    return 1;
}

/* 1 if a is more specific than b: the first differing segment decides; then the longer. */
static int more_specific(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    for (size_t i = 0; i < an && i < bn; i++)
        if (a[i] != b[i])
            return a[i] > b[i];
    return an > bn;
}

int keel_router_match(const keel_router_t *r, const char *method, size_t method_len,
                      const char *path, size_t path_len, keel_route_match_t *m)
{
    memset(m, 0, sizeof(*m));
    if (path_len == 0 || path[0] != '/')
        return KEEL_ENOTFOUND;
    uint8_t best[KEEL_ROUTER_SEGMENTS_MAX + 1], cur[KEEL_ROUTER_SEGMENTS_MAX + 1];
    size_t best_i = SIZE_MAX, best_n = 0, allow_len = 0;
    int other_method = 0;
    for (size_t i = 0; i < r->n; i++) {
        const keel_router_route_t *rt = &r->routes[i];
        if (!try_route(rt, path, path_len, cur, NULL))
            continue;
        int method_ok =
            strcmp(rt->method, "*") == 0 ||
            (strlen(rt->method) == method_len && memcmp(rt->method, method, method_len) == 0);
        if (!method_ok) {
            other_method = 1;
            size_t ml = strlen(rt->method);
            if (allow_len + ml + 3 < sizeof(m->allow) && strstr(m->allow, rt->method) == NULL) {
                allow_len += (size_t)snprintf(m->allow + allow_len, sizeof(m->allow) - allow_len,
                                              "%s%s", allow_len ? ", " : "", rt->method);
            }
            continue;
        }
        size_t n = rt->nsegs;
        if (best_i == SIZE_MAX || more_specific(cur, n, best, best_n)) {
            memcpy(best, cur, n);
            best_n = n;
            best_i = i;
        }
    }
    if (best_i == SIZE_MAX)
        return other_method ? KEEL_EREJECTED : KEEL_ENOTFOUND;
    char allow[sizeof(m->allow)];
    memcpy(allow, m->allow, sizeof(allow));
    try_route(&r->routes[best_i], path, path_len, cur, m);
    memcpy(m->allow, allow, sizeof(allow));
    m->data = r->routes[best_i].data;
    m->route = best_i;
    return 0;
}
