/* proxy_request.c - keel proxy's data path, starting an exchange: method, trace context, JWT
 * authentication, rate limit, the request head as it goes upstream, and the route's answer. */
#include "proxy/proxy_conn_int.h"

#include "proxy/auth.h"
#include "proxy/route.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- starting an exchange ---------------------------------------------------------------- */

/* "X-Request-Id: " and 32 hex digits (no printf: once per request). */
static int append_request_id(keel_buf_t *o, uint64_t a, uint64_t b)
{
    char line[14 + 32 + 2] = "X-Request-Id: ";
    for (int i = 0; i < 16; i++) {
        line[14 + i] = "0123456789abcdef"[(a >> (60 - 4 * i)) & 15];
        line[30 + i] = "0123456789abcdef"[(b >> (60 - 4 * i)) & 15];
    }
    line[46] = '\r';
    line[47] = '\n';
    return keel_buf_append(o, line, sizeof(line));
}

static bool method_is(const char *base, keel_h1_span_t m, const char *name)
{
    return strlen(name) == m.len && memcmp(base + m.off, name, m.len) == 0;
}

static int method_kind(const char *base, keel_h1_span_t m)
{
    static const char *const idem[] = {"GET", "PUT", "DELETE", "OPTIONS", "TRACE"};
    if (method_is(base, m, "HEAD"))
        return 1;
    for (size_t i = 0; i < sizeof(idem) / sizeof(idem[0]); i++)
        if (method_is(base, m, idem[i]))
            return 2;
    return 0;
}

bool keel__edit_lists(const keel_proxy_header_edit_t *e, uint32_t n, const char *base,
                      keel_h1_span_t name)
{
    for (uint32_t i = 0; i < n; i++)
        if (keel_h1_span_is(base, name, e[i].name))
            return true;
    return false;
}

/* The trace context's fields (the proxy writes its own): traceparent, B3 single and multi. */
static bool is_trace_field(const char *base, keel_h1_span_t nm)
{
    return keel_h1_span_is(base, nm, "traceparent") || keel_h1_span_is(base, nm, "b3") ||
           keel_h1_span_is(base, nm, "x-b3-traceid") || keel_h1_span_is(base, nm, "x-b3-spanid") ||
           keel_h1_span_is(base, nm, "x-b3-sampled") ||
           keel_h1_span_is(base, nm, "x-b3-parentspanid") ||
           keel_h1_span_is(base, nm, "x-b3-flags");
}

static keel_trace_str_t field_str(const char *base, const keel_h1_head_t *h, const char *name)
{
    int i = keel_h1_find(base, h, name);
    if (i < 0)
        return (keel_trace_str_t){NULL, 0};
    return (keel_trace_str_t){base + h->fields[i].value.off, h->fields[i].value.len};
}

/* Whether a new trace (or a B3 one that left the decision to us) is sampled: sample_percent. */
static bool sample_new(keel_proxy_t *p, const keel_proxy_tracing_t *tc)
{
    return tc->sample_ppm >= KEEL_PROXY_TRACE_PPM ||
           keel_rand_u64(&p->rand) % KEEL_PROXY_TRACE_PPM < tc->sample_ppm;
}

/* The client's trace context (traceparent, else B3 single, else B3 multi) continued by a child
 * span; a new root trace when the client sent none or an invalid one. Without tracing that
 * child is the context sent upstream on every attempt, and a new trace is not sampled. With
 * tracing it is the server span: recorded when the client's trace is sampled (traceparent flag
 * 01, B3 sampled or debug), or, for a new trace or a B3 one without a decision, with
 * probability sample_percent; each attempt then sends a client span of its own (x_attempt). */
static void trace_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_tracing_t *tc = &x->gen->cfg->tracing;
    keel_trace_ctx_t in;
    keel_trace_str_t tp = field_str(base, h, "traceparent");
    keel_trace_str_t b3 = field_str(base, h, "b3");
    keel_trace_b3_t multi = {field_str(base, h, "x-b3-traceid"), field_str(base, h, "x-b3-spanid"),
                             field_str(base, h, "x-b3-parentspanid"),
                             field_str(base, h, "x-b3-sampled"), field_str(base, h, "x-b3-flags")};
    x->b3 = false;
    int rc = KEEL_EPROTO, decided = -1; /* decided: a B3 sampling state without ids (b3: 0|1|d) */
    if (tp.ptr != NULL)
        rc = keel_trace_parse_traceparent(tp.ptr, tp.len, &in);
    if (rc != 0 && b3.ptr != NULL) {
        rc = keel_trace_parse_b3_single(b3.ptr, b3.len, &in);
        if (rc == KEEL_ENOTFOUND)
            decided = in.flags & KEEL_TRACE_FLAG_SAMPLED;
        x->b3 = rc == 0;
    }
    if (rc != 0 && multi.trace_id.ptr != NULL && (rc = keel_trace_parse_b3_multi(&multi, &in)) == 0)
        x->b3 = true;
    if (!tc->enabled) {
        if (rc == 0)
            keel_trace_child(&in, &d->p->rand, &x->trace);
        else
            keel_trace_new_root(&d->p->rand, 0, &x->trace);
        return;
    }
    if (rc == 0) {
        if (in.deferred) { /* B3 without a sampling state: ours to decide, and to pass on */
            in.flags = sample_new(d->p, tc) ? KEEL_TRACE_FLAG_SAMPLED : 0;
            in.deferred = 0;
        }
        keel_trace_child(&in, &d->p->rand, &x->server);
    } else {
        keel_trace_new_root(&d->p->rand, decided >= 0 ? decided : sample_new(d->p, tc), &x->server);
    }
    x->trace = x->server; /* until an attempt makes its own (aggregate parts keep this) */
    x->traced = (x->server.flags & KEEL_TRACE_FLAG_SAMPLED) != 0;
    if (x->traced)
        x->start_us = keel_clock_unix_us();
}

/* Whether a client's field must not reach the upstream because of the route's JWT provider: a
 * name claims_to_headers writes (anti-spoofing: removed even when no token came, on a route
 * where the token is optional), and Authorization unless the provider forwards it. */
static bool jwt_drops(const keel_proxy_jwt_provider_t *pv, const char *base, keel_h1_span_t nm)
{
    if (pv == NULL)
        return false;
    if (!pv->forward && pv->from_headers_count == 0 && pv->from_params_count == 0 &&
        keel_h1_span_is(base, nm, "authorization"))
        return true;
    for (uint32_t i = 0; !pv->forward && i < pv->from_headers_count; i++)
        if (keel_h1_span_is(base, nm, pv->from_headers[i].name))
            return true;
    for (uint32_t i = 0; i < pv->claims_to_headers_count; i++)
        if (keel_h1_span_is(base, nm, pv->claims_to_headers[i].header))
            return true;
    return false;
}

/* The verified token's chosen claims as fields; a claim that is absent, not a string, integer
 * or boolean, too long, or holding a control character is not sent (it could split the head). */
static int append_claims(keel_buf_t *o, const keel_proxy_jwt_provider_t *pv, const keel_jwt_t *t)
{
    int rc = 0;
    for (uint32_t i = 0; t != NULL && t->claims != NULL && i < pv->claims_to_headers_count; i++) {
        char v[KEEL_PROXY_VALUE_BYTES_MAX];
        if (keel_jwt_claim_text(t, pv->claims_to_headers[i].claim, v, sizeof(v)) != 0)
            continue;
        bool clean = true;
        for (const char *q = v; *q && clean; q++)
            clean = (unsigned char)*q >= 0x20 && *q != 0x7f;
        if (clean)
            rc |= keel_buf_printf(o, "%s: %s\r\n", pv->claims_to_headers[i].header, v);
    }
    return rc;
}

/* The request head as it goes upstream: origin-form target (prefix rewritten), end-to-end
 * fields, X-Forwarded-For/-Proto, Via, the route's edits, the JWT's claims and our own framing.
 * pv is the route's JWT provider (NULL: none), jwt the verified token (NULL: none). */
static int build_up_head(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                         const char *path, size_t path_len, const char *query, size_t query_len,
                         const keel_proxy_jwt_provider_t *pv, const keel_jwt_t *jwt)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_route_t *r = x->route->cfg;
    keel_buf_t *o = &x->up_head;
    keel_buf_reset(o);
    int rc = keel_buf_append(o, base + h->method.off, h->method.len);
    rc |= keel_buf_append(o, " ", 1);
    if (r->rewrite_prefix != NULL) {
        size_t cut = strlen(r->path);
        rc |= keel_buf_append_str(o, r->rewrite_prefix);
        const char *rest = path + cut;
        size_t rest_len = path_len - cut;
        /* "/api/" -> "/" with "/api/x": "/x", never "//x" */
        size_t rp = strlen(r->rewrite_prefix);
        if (rp > 0 && r->rewrite_prefix[rp - 1] == '/' && rest_len > 0 && rest[0] == '/')
            rest++, rest_len--;
        rc |= keel_buf_append(o, rest, rest_len);
    } else {
        rc |= keel_buf_append(o, path, path_len);
    }
    if (query_len > 0 || (query > path && query[-1] == '?')) {
        rc |= keel_buf_append(o, "?", 1);
        rc |= keel_buf_append(o, query, query_len);
    }
    rc |= keel_buf_append_str(o, " HTTP/1.1\r\n");
    const char *xff = NULL;
    uint32_t xff_len = 0;
    bool had_length = false, had_request_id = false;
    for (uint32_t i = 0; i < h->fields_count; i++) {
        keel_h1_span_t nm = h->fields[i].name, v = h->fields[i].value;
        if (keel_h1_span_is(base, nm, "content-length"))
            had_length = true;
        if (keel_h1_span_is(base, nm, "x-request-id"))
            had_request_id = true;
        if (keel_h1_is_hop_by_hop(base, h, nm) || keel_h1_span_is(base, nm, "expect") ||
            keel_h1_span_is(base, nm, "x-forwarded-proto") ||
            keel_h1_span_is(base, nm, "x-keel-timeout-ms") || is_trace_field(base, nm) ||
            keel__edit_lists(r->req_remove, r->req_remove_count, base, nm) ||
            jwt_drops(pv, base, nm))
            continue;
        if (keel_h1_span_is(base, nm, "x-forwarded-for")) {
            if (xff == NULL) { /* the first one; RFC 7239 clients send one */
                xff = base + v.off;
                xff_len = v.len;
            }
            continue;
        }
        rc |= keel_buf_append(o, base + nm.off, nm.len);
        rc |= keel_buf_append(o, ": ", 2);
        rc |= keel_buf_append(o, base + v.off, v.len);
        rc |= keel_buf_append(o, "\r\n", 2);
    }
    if (h->host_field < 0) /* an HTTP/1.0 client: the first host, or the service's name */
        rc |= keel_buf_printf(o, "Host: %s\r\n",
                              x->cl->cfg->service ? x->cl->cfg->service : x->cl->hosts[0].address);
    rc |= keel_buf_append(o, "X-Forwarded-For: ", 17);
    if (xff != NULL) {
        rc |= keel_buf_append(o, xff, xff_len);
        rc |= keel_buf_append(o, ", ", 2);
    }
    rc |= keel_buf_append_str(o, d->peer);
    rc |= keel_buf_append(o, "\r\n", 2);
    rc |= keel_buf_append_str(o, d->tls ? "X-Forwarded-Proto: https\r\n"
                                        : "X-Forwarded-Proto: http\r\n");
    if (!had_request_id) /* Envoy's rule: a request id passes through, or one is made up */
        rc |= append_request_id(o, keel_rand_u64(&d->p->rand), keel_rand_u64(&d->p->rand));
    /* traceparent (and b3) are added per attempt, each attempt's own span id (u_send) */
    rc |= keel_buf_append_str(o, d->p->via_line);
    for (uint32_t i = 0; i < r->req_add_count; i++)
        rc |= keel_buf_printf(o, "%s: %s\r\n", r->req_add[i].name, r->req_add[i].value);
    if (pv != NULL)
        rc |= append_claims(o, pv, jwt);
    if (x->upgrade != NULL) /* the one hop-by-hop pair that goes on, on a route that allows it */
        rc |= keel__upgrade_append_fields(o, base, h);
    if (h->body == KEEL_H1_BODY_LENGTH)
        rc |= keel__append_length(o, h->content_length);
    else if (h->body == KEEL_H1_BODY_CHUNKED)
        rc |= keel_buf_append_str(o, "Transfer-Encoding: chunked\r\n");
    else if (had_length)
        rc |= keel_buf_append_str(o, "Content-Length: 0\r\n");
    /* the empty line is added per attempt, after X-Keel-Timeout-Ms (u_send) */
    return rc;
}

/* The key of the request for limit c: the client address, a header's value or a claim. */
static void ratelimit_key(keel__dconn_t *d, const keel_proxy_ratelimit_t *c, const char *base,
                          const keel_h1_head_t *h, const keel_jwt_t *jwt,
                          char claim[KEEL_RATELIMIT_KEY_BYTES_MAX + 1], const char **key,
                          size_t *key_len)
{
    *key = d->peer;
    *key_len = strlen(d->peer);
    if (c->key == KEEL_PROXY_RL_CLAIM) {
        /* a verified token's claim (cut to the key ceiling); requests without a token (an
         * optional jwt) or without the claim share one bucket, as for a missing header */
        int crc = jwt && jwt->claims
                      ? keel_jwt_claim_text(jwt, c->header, claim, KEEL_RATELIMIT_KEY_BYTES_MAX + 1)
                      : KEEL_ENOTFOUND;
        *key = crc == 0 || crc == KEEL_ETOOBIG ? claim : "";
        *key_len = strlen(*key);
    } else if (c->key == KEEL_PROXY_RL_HEADER) {
        int i = keel_h1_find(base, h, c->header);
        if (i < 0) {
            *key = "";
            *key_len = 0; /* every request without the header shares one bucket */
        } else {
            *key = base + h->fields[i].value.off;
            *key_len = h->fields[i].value.len;
            if (*key_len > KEEL_RATELIMIT_KEY_BYTES_MAX)
                *key_len = KEEL_RATELIMIT_KEY_BYTES_MAX;
        }
    }
}

/* Takes a token from each of the route's limits, in order; at the first that refuses, gives
 * back what the ones before it gave (a refused request counts against no limit) and names it
 * in *which, for the 429's headers. */
static bool ratelimit_denied(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                             const keel_jwt_t *jwt, keel_ms_t *retry_after_ms, uint32_t *which)
{
    keel__proute_t *rt = d->x.route;
    const keel_proxy_route_t *r = rt->cfg;
    char claims[KEEL_PROXY_ROUTE_RATE_LIMITS_MAX][KEEL_RATELIMIT_KEY_BYTES_MAX + 1];
    const char *keys[KEEL_PROXY_ROUTE_RATE_LIMITS_MAX];
    size_t lens[KEEL_PROXY_ROUTE_RATE_LIMITS_MAX];
    for (uint32_t k = 0; k < r->ratelimits_count; k++) {
        ratelimit_key(d, &r->ratelimits[k], base, h, jwt, claims[k], &keys[k], &lens[k]);
        keel__prl_t *rl = rt->rl[k];
        pthread_mutex_lock(&rl->mu); /* one bucket per key over every worker */
        int rc = keel_ratelimit_keyed_take(&rl->rl, keel__shared_now(&rl->now_max_ms, now_ms(d->p)),
                                           keys[k], lens[k], 1, retry_after_ms);
        pthread_mutex_unlock(&rl->mu);
        if (rc == KEEL_EFULL)
            *retry_after_ms = 1000; /* the key table is full of busy clients: shed */
        if (rc == KEEL_EFULL || rc == KEEL_EREJECTED) {
            for (uint32_t b = 0; b < k; b++) {
                pthread_mutex_lock(&rt->rl[b]->mu);
                keel_ratelimit_keyed_refund(&rt->rl[b]->rl, keys[b], lens[b], 1);
                pthread_mutex_unlock(&rt->rl[b]->mu);
            }
            *which = k;
            return true;
        }
    }
    return false;
}

static void x_local_429(keel__dconn_t *d, keel_ms_t retry_after_ms, uint32_t which)
{
    const keel_proxy_ratelimit_t *c = &d->x.route->cfg->ratelimits[which];
    long long secs = (retry_after_ms + 999) / 1000;
    if (secs < KEEL_PROXY_RETRY_AFTER_S_MIN)
        secs = KEEL_PROXY_RETRY_AFTER_S_MIN;
    char hdrs[256];
    /* RateLimit-* after draft-ietf-httpapi-ratelimit-headers (limit, remaining, reset): the
     * limit that refused */
    snprintf(hdrs, sizeof(hdrs),
             "Retry-After: %lld\r\nRateLimit-Limit: %llu\r\nRateLimit-Remaining: 0\r\n"
             "RateLimit-Reset: %lld\r\n",
             secs, (unsigned long long)c->burst, secs);
    keel_counter_inc(d->x.route->m_rate_limited);
    keel__x_local(d, 429, "rate-limited", hdrs, NULL, NULL, 0);
}

/* The tokens found in a request's places: how many, and the first (whether it is a query
 * parameter's value, still percent-encoded). */
typedef struct tokens {
    const char *first;
    size_t len;
    uint32_t n;
    bool query;
} tokens_t;

static void token_add(tokens_t *t, const char *p, size_t len, bool query)
{
    while (len > 0 && (*p == ' ' || *p == '\t'))
        p++, len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len == 0)
        return;
    if (t->n++ == 0) {
        t->first = p;
        t->len = len;
        t->query = query;
    }
}

/* Every `name=value` of the request target's query (values as they are; the one checked is
   percent-decoded by token_verify). */
static void tokens_in_query(tokens_t *t, const char *base, const keel_h1_head_t *h,
                            const char *name)
{
    const char *target = base + h->target.off, *end = target + h->target.len;
    const char *p = memchr(target, '?', h->target.len);
    size_t nl = strlen(name);
    while (p != NULL && ++p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=')
            token_add(t, p + nl + 1, (size_t)(e - p) - nl - 1, true);
        p = amp;
    }
}

/* The places the provider names (from_headers, from_params). */
static void tokens_in_places(tokens_t *t, const keel_proxy_jwt_provider_t *pv, const char *base,
                             const keel_h1_head_t *h)
{
    for (uint32_t k = 0; k < pv->from_headers_count; k++) {
        const keel_proxy_jwt_from_header_t *fh = &pv->from_headers[k];
        size_t pl = fh->value_prefix ? strlen(fh->value_prefix) : 0;
        for (uint32_t i = 0; i < h->fields_count; i++) {
            keel_h1_span_t v = h->fields[i].value;
            if (keel_h1_span_is(base, h->fields[i].name, fh->name) && v.len >= pl &&
                memcmp(base + v.off, fh->value_prefix ? fh->value_prefix : "", pl) == 0)
                token_add(t, base + v.off + pl, v.len - pl, false);
        }
    }
    for (uint32_t k = 0; k < pv->from_params_count; k++)
        tokens_in_query(t, base, h, pv->from_params[k]);
}

/* Checks the one token found; a query parameter's is percent-decoded first (RFC 3986 §2.1, as
 * Envoy's from_params: '+' stays '+'), into a buffer of the longest token keel_jwt_verify
 * takes: a malformed escape or a longer token is invalid. */
static keel_proxy_auth_result_t token_verify(const keel_proxy_jwt_provider_t *pv,
                                             keel_proxy_keyset_t *ks, const tokens_t *t,
                                             int64_t now_s, keel_jwt_t *jwt, char *why)
{
    const keel_jwks_t *set = ks != NULL ? &ks->set : NULL;
    keel_proxy_token_cache_t *cache = ks != NULL ? &ks->cache : NULL;
    if (!t->query || memchr(t->first, '%', t->len) == NULL)
        return keel_proxy_auth_verify_token(pv, set, cache, t->first, t->len, now_s, jwt, why);
    char tok[KEEL_JWT_TOKEN_BYTES_MAX];
    size_t len = 0;
    int rc = keel_proxy_auth_pct_decode(t->first, t->len, tok, sizeof(tok), &len);
    if (rc == KEEL_ETOOBIG)
        return keel_proxy_auth_refuse(why, "the token is too long");
    if (rc != 0)
        return keel_proxy_auth_refuse(why, "a malformed percent-encoding in the token");
    return keel_proxy_auth_verify_token(pv, set, cache, tok, len, now_s, jwt, why);
}

/* The route's JWT requirement: KEEL_PROXY_AUTH_OK also when none is set or a missing token is
 * allowed (then jwt->claims stays NULL). The token is where the provider says (from_headers,
 * from_params), else in Envoy's default places: `Authorization: Bearer`, then the query
 * parameter access_token. A token in more than one place is refused: an upstream could read
 * another one than the proxy checked. */
static keel_proxy_auth_result_t x_authenticate(keel__dconn_t *d, const char *base,
                                               const keel_h1_head_t *h, keel_jwt_t *jwt, char *why)
{
    const keel_proxy_route_t *r = d->x.route->cfg;
    memset(jwt, 0, sizeof(*jwt));
    if (!r->jwt.enabled)
        return KEEL_PROXY_AUTH_OK;
    keel__pgen_t *gen = d->x.gen;
    const keel_proxy_jwt_provider_t *pv = &gen->cfg->jwt_providers[r->jwt.provider];
    /* the keys in force (a remote_jwks refresh may replace them meanwhile: this request keeps
     * the set it took), or NULL before a remote_jwks is first fetched */
    keel_proxy_keyset_t *ks = keel_proxy_keys_acquire(&gen->keys, r->jwt.provider);
    int64_t now_s = keel_clock_unix_ms() / 1000;
    keel_proxy_auth_result_t res;
    tokens_t t = {0};
    if (pv->from_headers_count > 0 || pv->from_params_count > 0) {
        tokens_in_places(&t, pv, base, h);
        res = t.n > 1 ? keel_proxy_auth_refuse(why, "a token in more than one place")
                      : token_verify(pv, ks, &t, now_s, jwt, why);
    } else {
        keel_proxy_auth_value_t authz[2];
        size_t n = 0;
        for (uint32_t i = 0; i < h->fields_count && n < 2; i++)
            if (keel_h1_span_is(base, h->fields[i].name, "authorization"))
                authz[n++] = (keel_proxy_auth_value_t){base + h->fields[i].value.off,
                                                       h->fields[i].value.len};
        tokens_in_query(&t, base, h, "access_token");
        if (t.n > 0 && n > 0)
            res = keel_proxy_auth_refuse(why, "a token in more than one place");
        else if (t.n > 1)
            res = keel_proxy_auth_refuse(why, "several access_token parameters");
        else if (t.n == 1)
            res = token_verify(pv, ks, &t, now_s, jwt, why);
        else
            res = keel_proxy_auth_verify(pv, ks != NULL ? &ks->set : NULL,
                                         ks != NULL ? &ks->cache : NULL, authz, n, now_s, jwt, why);
    }
    keel_proxy_keyset_unref(ks); /* the claims are jwt's own (a reference of their own) */
    if (res == KEEL_PROXY_AUTH_MISSING && !r->jwt.required)
        return KEEL_PROXY_AUTH_OK;
    return res;
}

/* 401 with the RFC 6750 §3 challenge; why is already sanitized (auth.h). */
static void x_local_401(keel__dconn_t *d, keel_proxy_auth_result_t res, const char *why)
{
    char hdrs[128 + KEEL_PROXY_AUTH_WHY_BYTES_MAX]; /* the longest reason fits whole */
    if (res == KEEL_PROXY_AUTH_MISSING) /* no credentials: no error code (RFC 6750 §3.1) */
        snprintf(hdrs, sizeof(hdrs), "WWW-Authenticate: Bearer realm=\"keel\"\r\n");
    else
        snprintf(hdrs, sizeof(hdrs),
                 "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"%s\"\r\n",
                 why);
    keel_counter_inc(d->x.route->m_auth_refused);
    keel__x_local(d, 401, res == KEEL_PROXY_AUTH_MISSING ? "jwt-missing" : "jwt-invalid", hdrs,
                  NULL, NULL, 0);
}

/* Judges a preflight on a CORS route and builds its answer's fields, NUL-terminated, in
 * x->up_head (unused: a preflight goes nowhere); returns the verdict, counted. */
static int x_cors_preflight(keel__dconn_t *d, const keel_proxy_req_view_t *view)
{
    keel__xch_t *x = &d->x;
    keel_buf_t *o = &x->up_head;
    keel_buf_reset(o);
    int rc = 0;
    keel_proxy_cors_verdict_t v = keel_proxy_cors_preflight(x->route->cfg->cors, view, o, &rc);
    if (rc != 0 || keel_buf_append(o, "", 1) != 0) { /* over the head ceiling: answer bare */
        keel_buf_reset(o);
        keel_buf_append(o, "Vary: Origin\r\n", 15);
        keel_buf_append(o, "", 1);
        v = KEEL_PROXY_CORS_BAD_HEADERS;
    }
    keel_counter_inc(x->route->m_cors[v]);
    return (int)v;
}

/* s[0..n) cut to cap - 1 bytes and a NUL into out (no printf: per traced or logged request). */
static void copy_cut(char *out, size_t cap, const char *s, size_t n)
{
    n = n < cap - 1 ? n : cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

void keel__x_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h)
{
    keel_proxy_t *p = d->p;
    keel__xch_t *x = &d->x;
    keel__pgen_t *gen = p->gen;
    x->gen = gen;
    keel__gen_ref(gen); /* the exchange finishes on the config it started with */
    x->start_ms = now_ms(p);
    x->permit = x->h_permit = -1;
    x->method_kind = method_kind(base, h->method);
    bool tracing = gen->cfg->tracing.enabled;
    if (tracing)
        trace_begin(d, base, h); /* every request may get a server span */
    if (gen->cfg->access_log || x->traced) {
        copy_cut(x->method, sizeof(x->method), base + h->method.off, h->method.len);
        copy_cut(x->target, sizeof(x->target), base + h->target.off, h->target.len);
    }
    x->client_keepalive = h->keep_alive && h->version_minor == 1 && !p->stopping;
    x->req_body = h->body;
    x->req_remaining = h->content_length;
    x->req_done = h->body == KEEL_H1_BODY_NONE;
    x->expect_continue = h->expect_continue && !x->req_done;
    keel_h1_chunked_init(&x->req_ck);
    const char *path, *query;
    size_t path_len, query_len;
    bool target_ok = keel_proxy_split_target(base + h->target.off, h->target.len, &path, &path_len,
                                             &query, &query_len);
    keel_proxy_header_view_t views[KEEL_H1_HEADERS_CEILING];
    for (uint32_t i = 0; i < h->fields_count; i++)
        views[i] =
            (keel_proxy_header_view_t){base + h->fields[i].name.off, h->fields[i].name.len,
                                       base + h->fields[i].value.off, h->fields[i].value.len};
    keel_proxy_req_view_t view = {
        base + h->method.off, h->method.len, NULL, 0, path, path_len, query, query_len, views,
        h->fields_count,      d->listener_1};
    if (h->host_field >= 0) {
        view.host = base + h->fields[h->host_field].value.off;
        view.host_len = h->fields[h->host_field].value.len;
    }
    uint64_t body_max = gen->cfg->limits.body_bytes_max;
    int route = target_ok ? keel_proxy_route_match(gen->cfg, &view) : -1;
    if (route >= 0) {
        x->route = &gen->routes[route];
        keel_counter_inc(x->route->m_requests);
    }
    int build = 0;
    bool canary = false; /* the pick went to a rollout's canary */
    keel_ms_t retry_after_ms = 0;
    const keel_proxy_route_t *r = x->route ? x->route->cfg : NULL;
    /* a preflight is answered before authentication and the rate limit: a browser sends no
     * credentials with it (Envoy's CORS filter sits before jwt_authn too) */
    int pre =
        r != NULL && r->cors != NULL && target_ok && keel_proxy_cors_is_preflight(&view, NULL, NULL)
            ? x_cors_preflight(d, &view)
            : -1;
    if (r != NULL && r->cors != NULL && pre < 0) {
        x->cors = true;
        uint32_t match = keel_proxy_cors_origin(r->cors, &view, &x->cors_match);
        if (keel_h1_find(base, h, "origin") >= 0)
            keel_counter_inc(
                x->route->m_cors[match != KEEL_PROXY_CORS_NONE ? KEEL__CORS_ORIGIN_ALLOWED
                                                               : KEEL__CORS_ORIGIN_OTHER]);
    }
    if (pre >= 0)
        r = NULL; /* nothing else is done for it: no token, no limit, no upstream */
    keel_jwt_t jwt = {0};
    char why[KEEL_PROXY_AUTH_WHY_BYTES_MAX];
    keel_proxy_auth_result_t auth =
        r != NULL && target_ok ? x_authenticate(d, base, h, &jwt, why) : KEEL_PROXY_AUTH_OK;
    const keel_proxy_jwt_provider_t *pv =
        r != NULL && r->jwt.enabled ? &gen->cfg->jwt_providers[r->jwt.provider] : NULL;
    if (r != NULL && auth == KEEL_PROXY_AUTH_OK && r->action == KEEL_PROXY_ACTION_AGGREGATE) {
        if (!tracing)
            trace_begin(d, base, h);
        x->agg_refused = keel__agg_prepare(d, base, h, &view, pv, &jwt);
    }
    if (r != NULL && auth == KEEL_PROXY_AUTH_OK && r->action == KEEL_PROXY_ACTION_FORWARD) {
        uint64_t rnd = keel_rand_u64(&p->rand);
        uint32_t slot =
            x->route->ro_on
                ? keel_proxy_route_pick_rollout(
                      r, __atomic_load_n(&x->route->ro_weight_pct, __ATOMIC_RELAXED), rnd)
                : keel_proxy_route_pick(r, rnd);
        x->cl = gen->clusters[r->clusters[slot].cluster];
        canary = x->route->ro_on && slot == r->rollout.canary;
        if (!tracing)
            trace_begin(d, base, h);
        x->upgrade = keel__upgrade_requested(r, base, h);
        build = build_up_head(d, base, h, path, path_len, query, query_len, pv, &jwt);
    }
    /* key for hash balancing, computed while the head is at hand */
    uint64_t key_hash = 0;
    if (x->cl != NULL && x->cl->cfg->hash_on == KEEL_PROXY_HASH_SOURCE)
        key_hash = keel_balance_hash(d->peer, strlen(d->peer));
    else if (x->cl != NULL && x->cl->cfg->hash_on == KEEL_PROXY_HASH_HEADER) {
        int i = keel_h1_find(base, h, x->cl->cfg->hash_header);
        if (i >= 0)
            key_hash = keel_balance_hash(base + h->fields[i].value.off, h->fields[i].value.len);
    }
    if (r != NULL && r->retry.idempotency_header != NULL) {
        int i = keel_h1_find(base, h, r->retry.idempotency_header);
        x->idem_key = i >= 0 && h->fields[i].value.len > 0;
    }
    uint32_t limit_hit = 0;
    bool limited = r != NULL && auth == KEEL_PROXY_AUTH_OK && r->ratelimits_count > 0 &&
                   ratelimit_denied(d, base, h, &jwt, &retry_after_ms, &limit_hit);
    keel_jwt_free(&jwt); /* its claims are in the upstream head and the rate-limit key by now */
    keel_buf_consume(&d->in, h->head_bytes); /* the head's bytes are no longer needed */

    if (!target_ok) {
        keel_counter_inc(p->m_bad_requests);
        keel__x_local(d, 400, "bad-target", NULL, NULL, NULL, 0);
    } else if (h->body == KEEL_H1_BODY_LENGTH && body_max > 0 && h->content_length > body_max) {
        keel__x_local(d, 413, NULL, NULL, NULL, NULL, 0);
    } else if (pre >= 0) {
        keel_buf_t *o = &x->up_head; /* the answer's fields, built while the head was at hand */
        /* a private network grant withheld is still a 204 (docs/proxy.md), its reason said */
        keel__x_local(d, keel_proxy_cors_verdict_answered(pre) ? 204 : 403,
                      pre == KEEL_PROXY_CORS_ALLOWED ? NULL : keel_proxy_cors_verdict_name(pre),
                      (const char *)keel_buf_rptr(o), NULL, "", 0);
    } else if (r == NULL) {
        keel_counter_inc(p->m_no_route);
        keel__x_local(d, 404, "no-route", NULL, NULL, NULL, 0);
    } else if (auth != KEEL_PROXY_AUTH_OK) {
        x_local_401(d, auth, why);
    } else if (limited) {
        x_local_429(d, retry_after_ms, limit_hit);
    } else if (r->action == KEEL_PROXY_ACTION_DIRECT) {
        keel__x_local(d, r->direct_status, NULL, NULL,
                      r->direct_content_type ? r->direct_content_type : "text/plain",
                      r->direct_body ? r->direct_body : "",
                      r->direct_body ? strlen(r->direct_body) : 0);
    } else if (r->action == KEEL_PROXY_ACTION_REDIRECT) {
        char loc[KEEL_PROXY_VALUE_BYTES_MAX + 16];
        snprintf(loc, sizeof(loc), "Location: %s\r\n", r->redirect_location);
        keel__x_local(d, r->redirect_status, NULL, loc, "text/plain", "", 0);
    } else if (r->action == KEEL_PROXY_ACTION_AGGREGATE) {
        if (h->body != KEEL_H1_BODY_NONE)
            keel__x_local(d, 400, "aggregate-takes-no-body", NULL, NULL, NULL, 0);
        else if (x->agg_refused != 0)
            keel__x_local(d, x->agg_refused,
                          x->agg_refused == 400 ? "bad-parameter" : "out-of-memory", NULL, NULL,
                          NULL, 0);
        else
            keel__agg_start(d);
    } else if (x->upgrade != NULL && h->body != KEEL_H1_BODY_NONE) {
        keel_counter_inc(p->m_bad_requests); /* the body's end would be the tunnel's start */
        keel__x_local(d, 400, "upgrade-with-body", NULL, NULL, NULL, 0);
    } else if (build != 0) {
        keel__x_local(d, 431, NULL, NULL, NULL, NULL, 0);
    } else if (!keel__cl_admit(x->cl)) {
        x->canary = canary; /* the canary's own bulkhead refused it: a failure of the canary */
        keel_counter_inc(x->cl->m_bulkhead_rejected);
        keel__x_local(d, 503, "bulkhead-full", NULL, NULL, NULL, 0);
    } else {
        /* a body that may be retried is kept as it goes upstream, up to the limit */
        uint64_t keep = r->retry.attempts_max > 1 && x->upgrade == NULL
                            ? gen->cfg->limits.retry_buffer_bytes
                            : 0;
        keel_proxy_replay_begin(&x->replay, keep,
                                h->body == KEEL_H1_BODY_LENGTH    ? h->content_length
                                : h->body == KEEL_H1_BODY_CHUNKED ? UINT64_MAX
                                                                  : 0);
        x->counted = true; /* by keel__cl_admit */
        x->canary = canary;
        x->up_keepalive = true;
        keel_ms_t deadline = r->timeout_ms > 0 ? x->start_ms + r->timeout_ms : KEEL_MS_NEVER;
        pthread_mutex_lock(&x->route->mu); /* the policy keeps counters */
        keel_ms_t first = keel_retry_begin(&x->route->retry, &x->call, x->start_ms, deadline);
        pthread_mutex_unlock(&x->route->mu);
        x->try_deadline_ms =
            first > 0 && first < KEEL_MS_NEVER / 2 ? x->start_ms + first : KEEL_MS_NEVER;
        x->retry_at_ms = 0;
        x->key_hash = key_hash;
        keel__x_attempt(d);
    }
}
