/* route.h - route matching, weighted cluster choice and the retry budget: pure functions. */
#ifndef KEEL_PROXY_ROUTE_H
#define KEEL_PROXY_ROUTE_H

#include "base/buf.h"
#include "core/retry.h"
#include "proxy/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What the matcher sees of a request: views into the parsed head, nothing
 * owned. Routes are tried in file order and the first whose every condition
 * holds wins (Envoy's and nginx's `location =`/prefix order is the user's to
 * choose here). Conditions:
 *   host     equal, case-insensitively, to the Host field without its port
 *   exact    path == value;  prefix: path starts with value;  regex: regexec
 *            on the path (without the query) matches
 *   methods  the method is one of them
 *   headers  each: present / absent / value equal / regex matching (first field
 *            of that name)
 *   query    each: the first parameter of that name is present / absent / equal
 *            to value / matching (raw, not percent-decoded)
 */
typedef struct keel_proxy_header_view {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    const char *value;
    size_t value_len;
} keel_proxy_header_view_t;

typedef struct keel_proxy_req_view {
    const char *method;
    size_t method_len;
    const char *host; /* may include ":port"; NULL when absent */
    size_t host_len;
    const char *path;
    size_t path_len;
    const char *query; /* after '?', without it; may be empty */
    size_t query_len;
    const keel_proxy_header_view_t *headers;
    size_t headers_count;
    uint32_t listener_1; /* 1 + the index of the listener it came in on; 0: unknown */
} keel_proxy_req_view_t;

/* Longest path or value the regex conditions look at; longer ones do not match a regex. */
#define KEEL_PROXY_MATCH_BYTES_MAX 8192u

/* A {name} of a template and the segment it matched (views into template and path). */
typedef struct keel_proxy_param {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} keel_proxy_param_t;

/* Matches path[0..len) against a template ("/orders/{id}/full": each {name} one non-empty
 * segment, the rest literal); fills params (KEEL_PROXY_TEMPLATE_PARAMS_MAX) and returns their
 * count, or -1 when it does not match. */
int keel_proxy_template_match(const char *tmpl, const char *path, size_t len,
                              keel_proxy_param_t *params);

/*
 * Fills a part's path template: {name} takes the request's path parameter, {header:NAME} the
 * value of the request's first field NAME. A value goes in only if every byte is an RFC 3986
 * unreserved character, '%' (an escape passes as sent) or one of !$'()*,;:@ - no '/', '?',
 * '#', '&', '=', '+' or space - so a client cannot step into another path or add a query
 * parameter. 0, KEEL_ENOTFOUND (no such field or
 * an empty one), KEEL_EINVAL (a value with another byte), KEEL_ETOOBIG (over cap - 1).
 */
int keel_proxy_fill_path(const char *tmpl, const keel_proxy_param_t *params, uint32_t n,
                         const keel_proxy_req_view_t *req, char *out, size_t cap);

/* Index of the first matching route, or -1. */
int keel_proxy_route_match(const keel_proxy_config_t *cfg, const keel_proxy_req_view_t *req);
/* Whether route r matches (what keel_proxy_route_match tries in order). */
bool keel_proxy_route_matches(const keel_proxy_route_t *r, const keel_proxy_req_view_t *req);

/* Splits a request target into path and query (origin form; absolute form "http://h/p" gives
 * its path). Returns false for a target that is neither (asterisk form, garbage). */
bool keel_proxy_split_target(const char *target, size_t len, const char **path, size_t *path_len,
                             const char **query, size_t *query_len);

/*
 * Weighted choice among a route's clusters: rnd uniform in [0, 2^64) picks
 * cluster k with probability weight_k / weight_total exactly up to 2^-64
 * (multiply-shift, no modulo bias worth the name). Returns the index into
 * r->clusters.
 */
uint32_t keel_proxy_route_pick(const keel_proxy_route_t *r, uint64_t rnd);

/*
 * A route with a rollout: the canary (slot r->rollout.canary) with probability
 * canary_pct / 100, otherwise one of the other clusters with probability in proportion to its
 * configured weight (the canary's configured weight is not used). Exact up to 2^-64 as above:
 * x uniform in [0, 100 * others) picks the canary below canary_pct * others, and the rest of
 * the range maps (100 - canary_pct) values onto each unit of the others' weights.
 */
uint32_t keel_proxy_route_pick_rollout(const keel_proxy_route_t *r, uint32_t canary_pct,
                                       uint64_t rnd);

/*
 * Envoy's retry budget: a retry may start only while the retries in flight are
 * fewer than max(budget_min, budget_pct% of the active requests). With
 * budget_pct 0 there is no budget (only attempts_max).
 */
bool keel_proxy_retry_budget_allows(const keel_proxy_retry_t *rt, uint64_t active_requests,
                                    uint64_t active_retries);

/*
 * Whether a failed attempt may be tried again, before core/retry judges attempts, deadline and
 * backoff, and the budget above judges load. Envoy's rules:
 *   - the outcome must be in the route's retry_on (or statuses);
 *   - once request body bytes went upstream, only a request whose whole body so far is held in
 *     its replay buffer (below) can be sent again;
 *   - a connect failure is always safe: the upstream cannot have seen the request;
 *   - otherwise, with idempotent_only, the method must be idempotent (RFC 9110 §9.2.2: GET,
 *     HEAD, PUT, DELETE, OPTIONS, TRACE) or the request must carry the route's idempotency
 *     header (the upstream deduplicates it by that key).
 */
typedef struct keel_proxy_retry_req {
    bool idempotent;      /* the method is idempotent */
    bool idempotency_key; /* the request carries the route's idempotency header, non-empty */
    bool body_sent;       /* some body byte went upstream */
    bool body_replayable; /* every body byte sent so far is held for a replay */
} keel_proxy_retry_req_t;

typedef enum keel_proxy_retry_why {
    KEEL_PROXY_RETRY_OK,
    KEEL_PROXY_RETRY_NOT_ON,         /* the outcome is not in retry_on or statuses */
    KEEL_PROXY_RETRY_UNBUFFERED,     /* body bytes went upstream and no copy of them is held */
    KEEL_PROXY_RETRY_NOT_IDEMPOTENT, /* may have been seen, and cannot be deduplicated */
} keel_proxy_retry_why_t;

/* Whether retry_on (and statuses) covers the outcome (failure, or status with FAIL_NONE). */
bool keel_proxy_retry_on(const keel_proxy_retry_t *rt, keel_retry_failure_t failure, int status);
/* The rules above but the first: whether the request may be sent again after the failure, by
 * its body and its idempotency alone (never NOT_ON). keel_proxy_retry_eligible is retry_on and
 * then this; a request re-sent after a stale pooled connection (docs/proxy.md, "What happens to
 * a request", 5) is judged by this alone, as after a reset. */
keel_proxy_retry_why_t keel_proxy_resend_safe(const keel_proxy_retry_t *rt,
                                              const keel_proxy_retry_req_t *rq,
                                              keel_retry_failure_t failure);
keel_proxy_retry_why_t keel_proxy_retry_eligible(const keel_proxy_retry_t *rt,
                                                 const keel_proxy_retry_req_t *rq,
                                                 keel_retry_failure_t failure, int status);

/*
 * Whether a request may be hedged now (docs/proxy.md, "Hedged requests"): a second attempt sent
 * to another host while the first is still unanswered. Stricter than a retry, because the two
 * attempts run at once and both may act:
 *   - the route has a hedge, and no response head went to the client;
 *   - the method is idempotent, or the request carries the route's idempotency header (whatever
 *     idempotent_only says: a hedge is never a guess that the first try was not seen);
 *   - the whole body was read from the client and every byte of it is held in the replay
 *     buffer (a body larger than limits.retry_buffer_bytes, or still arriving, is not hedged);
 *   - an attempt is left under retry.attempts_max (the first try, hedges and retries share it);
 *   - the route's deadline has not passed.
 * The retry budget is judged after this, with keel_proxy_retry_budget_allows (a hedge counts as
 * a retry in flight).
 */
typedef struct keel_proxy_hedge_req {
    bool idempotent;      /* the method is idempotent */
    bool idempotency_key; /* the request carries the route's idempotency header, non-empty */
    bool body_read;       /* the whole body came from the client (true without a body) */
    bool body_replayable; /* every body byte sent upstream is held (keel_proxy_replay_ok) */
    bool answered;        /* a response head went to the client */
    uint32_t attempts;    /* attempts started so far, the first try included */
    keel_ms_t now_ms, deadline_ms;
} keel_proxy_hedge_req_t;

typedef enum keel_proxy_hedge_why {
    KEEL_PROXY_HEDGE_OK,
    KEEL_PROXY_HEDGE_OFF,            /* the route has no hedge, or the request was answered */
    KEEL_PROXY_HEDGE_NOT_IDEMPOTENT, /* sending it twice could act twice */
    KEEL_PROXY_HEDGE_BODY,           /* the body is not all read, or not all held */
    KEEL_PROXY_HEDGE_ATTEMPTS,       /* attempts_max reached */
    KEEL_PROXY_HEDGE_DEADLINE,       /* the route's deadline has passed */
} keel_proxy_hedge_why_t;

keel_proxy_hedge_why_t keel_proxy_hedge_eligible(const keel_proxy_hedge_t *hg,
                                                 const keel_proxy_retry_t *rt,
                                                 const keel_proxy_hedge_req_t *rq);

/*
 * The replay buffer of one request: a copy of the body bytes as they go upstream (framing
 * included), kept while they fit in limit, so a retry on another host can send them again.
 * A body known (Content-Length) to be larger than limit is not copied at all; a chunked one is
 * copied until it passes limit, then the copy is dropped. Memory: at most limit bytes per
 * request in flight, freed with the request.
 */
typedef struct keel_proxy_replay {
    keel_buf_t buf;
    uint64_t limit; /* bytes; 0: nothing is kept */
    bool sent;      /* some body byte went upstream */
    bool whole;     /* buf holds every body byte sent so far */
} keel_proxy_replay_t;

/* expect: the body's length when known (Content-Length), UINT64_MAX when not (chunked). */
void keel_proxy_replay_begin(keel_proxy_replay_t *r, uint64_t limit, uint64_t expect);
/* Records n bytes on their way upstream. */
void keel_proxy_replay_add(keel_proxy_replay_t *r, const void *p, size_t n);
/* Nothing was sent, or everything sent is held. */
bool keel_proxy_replay_ok(const keel_proxy_replay_t *r);
/* Frees the copy; the struct may be begun again. */
void keel_proxy_replay_release(keel_proxy_replay_t *r);

#endif
