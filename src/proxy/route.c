/* route.c - first-match routing over host, path, method, headers and query; weighted picks. */
#include "proxy/route.h"

#include "proxy/cors.h"

#include "base/err.h"

#include <assert.h>
#include <string.h>

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* a[0..n) equals the NUL-terminated lower-case s, ignoring the case of a. */
static bool eq_ci(const char *a, size_t n, const char *s)
{
    size_t m = strlen(s);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)s[i])
            return false;
    return true;
}

static bool eq(const char *a, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(a, s, n) == 0;
}

/* regexec wants a C string: copy into a bounded buffer; too long never matches. */
static bool regex_ok(const regex_t *re, const char *s, size_t n)
{
    char buf[KEEL_PROXY_MATCH_BYTES_MAX + 1];
    if (n > KEEL_PROXY_MATCH_BYTES_MAX || memchr(s, 0, n) != NULL)
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    return regexec(re, buf, 0, NULL, 0) == 0;
}

/* Whether a value that is there (or not: v == NULL) satisfies m. */
static bool value_ok(const keel_proxy_field_match_t *m, const char *v, size_t n)
{
    if (m->absent)
        return v == NULL;
    if (v == NULL)
        return false;
    if (m->value != NULL)
        return eq(v, n, m->value);
    if (m->has_regex)
        return regex_ok(&m->regex, v, n);
    return true;
}

static bool header_ok(const keel_proxy_field_match_t *m, const keel_proxy_req_view_t *req)
{
    for (size_t i = 0; i < req->headers_count; i++) {
        const keel_proxy_header_view_t *h = &req->headers[i];
        if (eq_ci(h->name, h->name_len, m->name))
            return value_ok(m, h->value, h->value_len);
    }
    return value_ok(m, NULL, 0);
}

static bool query_ok(const keel_proxy_field_match_t *m, const keel_proxy_req_view_t *req)
{
    const char *q = req->query, *end = req->query + req->query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eqs = memchr(q, '=', (size_t)(pe - q));
        const char *ne = eqs ? eqs : pe;
        if (eq(q, (size_t)(ne - q), m->name)) {
            const char *v = eqs ? eqs + 1 : pe;
            return value_ok(m, v, (size_t)(pe - v));
        }
        q = pe + 1;
    }
    return value_ok(m, NULL, 0);
}

static bool host_ok(const char *want, const keel_proxy_req_view_t *req)
{
    if (req->host == NULL)
        return false;
    size_t n = req->host_len;
    /* strip ":port" (not inside an IPv6 literal's brackets) */
    for (size_t i = n; i > 0; i--) {
        if (req->host[i - 1] == ']')
            break;
        if (req->host[i - 1] == ':') {
            n = i - 1;
            break;
        }
    }
    return eq_ci(req->host, n, want);
}

static bool path_ok(const keel_proxy_route_t *r, const keel_proxy_req_view_t *req)
{
    switch (r->path_kind) {
    case KEEL_PROXY_PATH_ANY:
        return true;
    case KEEL_PROXY_PATH_EXACT:
        return eq(req->path, req->path_len, r->path);
    case KEEL_PROXY_PATH_PREFIX: {
        size_t n = strlen(r->path);
        return req->path_len >= n && memcmp(req->path, r->path, n) == 0;
    }
    case KEEL_PROXY_PATH_REGEX:
        return regex_ok(&r->path_regex, req->path, req->path_len);
    case KEEL_PROXY_PATH_TEMPLATE: {
        keel_proxy_param_t params[KEEL_PROXY_TEMPLATE_PARAMS_MAX];
        return keel_proxy_template_match(r->path, req->path, req->path_len, params) >= 0;
    }
    }
    return false;
}

bool keel_proxy_route_matches(const keel_proxy_route_t *r, const keel_proxy_req_view_t *req)
{
    if (r->listener_1 != 0 && r->listener_1 != req->listener_1)
        return false;
    if (r->host != NULL && !host_ok(r->host, req))
        return false;
    if (!path_ok(r, req))
        return false;
    if (r->methods_count > 0) {
        /* a preflight stands for the request it asks about: on a CORS route it matches when
         * that request's method (Access-Control-Request-Method) would */
        const char *m = req->method;
        size_t m_len = req->method_len;
        if (r->cors != NULL)
            (void)keel_proxy_cors_is_preflight(req, &m, &m_len);
        bool any = false;
        for (uint32_t i = 0; i < r->methods_count && !any; i++)
            any = eq(m, m_len, r->methods[i]);
        if (!any)
            return false;
    }
    for (uint32_t i = 0; i < r->headers_count; i++)
        if (!header_ok(&r->headers[i], req))
            return false;
    for (uint32_t i = 0; i < r->query_count; i++)
        if (!query_ok(&r->query[i], req))
            return false;
    return true;
}

int keel_proxy_route_match(const keel_proxy_config_t *cfg, const keel_proxy_req_view_t *req)
{
    for (uint32_t i = 0; i < cfg->routes_count; i++)
        if (keel_proxy_route_matches(&cfg->routes[i], req))
            return (int)i;
    return -1;
}

bool keel_proxy_split_target(const char *target, size_t len, const char **path, size_t *path_len,
                             const char **query, size_t *query_len)
{
    const char *p = target, *end = target + len;
    if (len >= 7 && (memcmp(p, "http://", 7) == 0 || memcmp(p, "HTTP://", 7) == 0)) {
        p = memchr(p + 7, '/', (size_t)(end - p - 7));
        if (p == NULL)
            return false;
    }
    if (p == end || *p != '/')
        return false;
    const char *q = memchr(p, '?', (size_t)(end - p));
    *path = p;
    *path_len = (size_t)((q ? q : end) - p);
    *query = q ? q + 1 : end;
    *query_len = q ? (size_t)(end - q - 1) : 0;
    return true;
}

uint32_t keel_proxy_route_pick(const keel_proxy_route_t *r, uint64_t rnd)
{
    assert(r->clusters_count > 0 && r->weight_total > 0);
    /* x uniform in [0, weight_total): the high 64 bits of rnd * total (Lemire's reduction) */
    uint64_t x = (uint64_t)(((unsigned __int128)rnd * r->weight_total) >> 64);
    for (uint32_t i = 0; i < r->clusters_count; i++) {
        if (x < r->clusters[i].weight)
            return i;
        x -= r->clusters[i].weight;
    }
    assert(0 && "weights add up to weight_total");
    return 0;
}

uint32_t keel_proxy_route_pick_rollout(const keel_proxy_route_t *r, uint32_t canary_pct,
                                       uint64_t rnd)
{
    const keel_proxy_rollout_t *ro = &r->rollout;
    assert(ro->canary < r->clusters_count && ro->others_weight > 0 && canary_pct <= 100);
    uint64_t others = ro->others_weight; /* <= KEEL_PROXY_WEIGHTED_MAX * KEEL_PROXY_WEIGHT_MAX */
    uint64_t x = (uint64_t)(((unsigned __int128)rnd * (100 * others)) >> 64);
    if (x < canary_pct * others)
        return ro->canary;
    x = (x - canary_pct * others) / (100 - canary_pct); /* uniform in [0, others) */
    for (uint32_t i = 0; i < r->clusters_count; i++) {
        if (i == ro->canary)
            continue;
        if (x < r->clusters[i].weight)
            return i;
        x -= r->clusters[i].weight;
    }
    assert(0 && "the others' weights add up to others_weight");
    return 0;
}

bool keel_proxy_retry_budget_allows(const keel_proxy_retry_t *rt, uint64_t active_requests,
                                    uint64_t active_retries)
{
    if (rt->budget_pct == 0)
        return true;
    uint64_t cap = active_requests * rt->budget_pct / 100;
    if (cap < rt->budget_min)
        cap = rt->budget_min;
    return active_retries < cap;
}

bool keel_proxy_retry_on(const keel_proxy_retry_t *rt, keel_retry_failure_t failure, int status)
{
    switch (failure) {
    case KEEL_RETRY_FAIL_CONNECT:
        return rt->retry_on & KEEL_PROXY_RETRY_ON_CONNECT;
    case KEEL_RETRY_FAIL_RESET:
        return rt->retry_on & KEEL_PROXY_RETRY_ON_RESET;
    case KEEL_RETRY_FAIL_TIMEOUT:
        return rt->retry_on & KEEL_PROXY_RETRY_ON_TIMEOUT;
    case KEEL_RETRY_FAIL_NONE:
        break;
    }
    if ((rt->retry_on & KEEL_PROXY_RETRY_ON_5XX) && status >= 500 && status <= 599)
        return true;
    if ((rt->retry_on & KEEL_PROXY_RETRY_ON_GATEWAY) &&
        (status == 502 || status == 503 || status == 504))
        return true;
    for (uint32_t i = 0; i < rt->statuses_count; i++)
        if (rt->statuses[i] == status)
            return true;
    return false;
}

keel_proxy_retry_why_t keel_proxy_retry_eligible(const keel_proxy_retry_t *rt,
                                                 const keel_proxy_retry_req_t *rq,
                                                 keel_retry_failure_t failure, int status)
{
    if (!keel_proxy_retry_on(rt, failure, status))
        return KEEL_PROXY_RETRY_NOT_ON;
    return keel_proxy_resend_safe(rt, rq, failure);
}

keel_proxy_retry_why_t keel_proxy_resend_safe(const keel_proxy_retry_t *rt,
                                              const keel_proxy_retry_req_t *rq,
                                              keel_retry_failure_t failure)
{
    if (rq->body_sent && !rq->body_replayable)
        return KEEL_PROXY_RETRY_UNBUFFERED;
    if (failure == KEEL_RETRY_FAIL_CONNECT)
        return KEEL_PROXY_RETRY_OK;
    if (rt->idempotent_only && !rq->idempotent && !rq->idempotency_key)
        return KEEL_PROXY_RETRY_NOT_IDEMPOTENT;
    return KEEL_PROXY_RETRY_OK;
}

keel_proxy_hedge_why_t keel_proxy_hedge_eligible(const keel_proxy_hedge_t *hg,
                                                 const keel_proxy_retry_t *rt,
                                                 const keel_proxy_hedge_req_t *rq)
{
    if (!hg->enabled || rq->answered)
        return KEEL_PROXY_HEDGE_OFF;
    if (!rq->idempotent && !rq->idempotency_key)
        return KEEL_PROXY_HEDGE_NOT_IDEMPOTENT;
    if (!rq->body_read || !rq->body_replayable)
        return KEEL_PROXY_HEDGE_BODY;
    if (rq->attempts >= rt->attempts_max)
        return KEEL_PROXY_HEDGE_ATTEMPTS;
    if (rq->now_ms >= rq->deadline_ms)
        return KEEL_PROXY_HEDGE_DEADLINE;
    return KEEL_PROXY_HEDGE_OK;
}

void keel_proxy_replay_begin(keel_proxy_replay_t *r, uint64_t limit, uint64_t expect)
{
    keel_buf_free(&r->buf); /* a zeroed struct holds nothing to free */
    keel_buf_init(&r->buf, KEEL_PROXY_RETRY_BUFFER_BYTES_MAX);
    r->limit =
        limit < KEEL_PROXY_RETRY_BUFFER_BYTES_MAX ? limit : KEEL_PROXY_RETRY_BUFFER_BYTES_MAX;
    r->sent = false;
    r->whole = r->limit > 0 && (expect == UINT64_MAX || expect <= r->limit);
}

void keel_proxy_replay_add(keel_proxy_replay_t *r, const void *p, size_t n)
{
    if (n == 0)
        return;
    r->sent = true;
    if (!r->whole)
        return;
    if (keel_buf_unread(&r->buf) + n > r->limit || keel_buf_append(&r->buf, p, n) != 0) {
        r->whole = false; /* past the limit (or out of memory): this body cannot be replayed */
        keel_buf_free(&r->buf);
    }
}

bool keel_proxy_replay_ok(const keel_proxy_replay_t *r)
{
    return !r->sent || r->whole;
}

void keel_proxy_replay_release(keel_proxy_replay_t *r)
{
    keel_buf_free(&r->buf);
    r->sent = false;
    r->whole = false;
}

int keel_proxy_template_match(const char *tmpl, const char *path, size_t len,
                              keel_proxy_param_t *params)
{
    const char *t = tmpl;
    size_t i = 0;
    int n = 0;
    while (*t) {
        if (*t == '{') {
            const char *end = strchr(t, '}');
            if (end == NULL || n == (int)KEEL_PROXY_TEMPLATE_PARAMS_MAX)
                return -1; /* the loader refuses such templates */
            size_t start = i;
            while (i < len && path[i] != '/')
                i++;
            if (i == start)
                return -1; /* a parameter is never empty */
            params[n++] =
                (keel_proxy_param_t){t + 1, (size_t)(end - t - 1), path + start, i - start};
            t = end + 1;
            continue;
        }
        if (i >= len || path[i] != *t)
            return -1;
        i++;
        t++;
    }
    return i == len ? n : -1;
}

static bool pchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~%!$'()*,;:@", c) != NULL;
}

int keel_proxy_fill_path(const char *tmpl, const keel_proxy_param_t *params, uint32_t n,
                         const keel_proxy_req_view_t *req, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *t = tmpl; *t;) {
        const char *v = t;
        size_t vlen = 1;
        bool literal = true;
        if (*t == '{' && strchr(t, '}') != NULL) {
            const char *end = strchr(t, '}');
            const char *name = t + 1;
            size_t nlen = (size_t)(end - name);
            literal = false;
            v = NULL;
            if (nlen > 7 && strncmp(name, "header:", 7) == 0) {
                for (size_t k = 0; k < req->headers_count && v == NULL; k++)
                    if (req->headers[k].name_len == nlen - 7) {
                        size_t m = 0;
                        while (m < nlen - 7 && lower((unsigned char)req->headers[k].name[m]) ==
                                                   lower((unsigned char)name[7 + m]))
                            m++;
                        if (m == nlen - 7) {
                            v = req->headers[k].value;
                            vlen = req->headers[k].value_len;
                        }
                    }
            } else {
                for (uint32_t k = 0; k < n && v == NULL; k++)
                    if (params[k].name_len == nlen && memcmp(params[k].name, name, nlen) == 0) {
                        v = params[k].value;
                        vlen = params[k].value_len;
                    }
            }
            if (v == NULL || vlen == 0)
                return KEEL_ENOTFOUND;
            t = end + 1;
        } else {
            t++;
        }
        if (!literal)
            for (size_t k = 0; k < vlen; k++)
                if (!pchar((unsigned char)v[k]))
                    return KEEL_EINVAL;
        if (o + vlen >= cap)
            return KEEL_ETOOBIG;
        memcpy(out + o, v, vlen);
        o += vlen;
    }
    if (cap == 0)
        return KEEL_ETOOBIG;
    out[o] = 0;
    return 0;
}
