/* proxy_attempt.c - keel proxy's attempts: a breaker permit and a host for each, a pooled or new
 * upstream connection, hedges, timeouts and retries (the connections and both bodies:
 * proxy_upstream.c). */
#include "proxy/proxy_conn_int.h"

#include "runtime/clock.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The breaker's permit and the balancer's pick for the exchange's next attempt, away from the
 * hosts it already tried (x->tried_1) while another is available, in one section under the
 * cluster's mutex (the host is counted before it is unlocked, so a registry update cannot reuse
 * its slot). 0 with *idx; KEEL_EREJECTED: the breaker is open; KEEL_EEMPTY: a service cluster
 * the registry left empty; KEEL_ENOTFOUND: no available host. */
static int attempt_pick(keel__dconn_t *d, uint32_t *idx)
{
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    keel__cl_lock(cl);
    keel_ms_t now = keel__shared_now(&cl->now_max_ms, now_ms(d->p));
    int rc = 0;
    if (cl->cfg->breaker_enabled) {
        x->permit = keel_breaker_allow(&cl->breaker, now);
        if (x->permit < 0)
            rc = KEEL_EREJECTED;
    }
    /* a retry goes to a host not tried yet when there is one, else to another than the last (a
     * hash policy that maps the key to a host keeps it) */
    int picked = rc == 0 ? keel_balance_pick_avoiding(&cl->lb, x->key_hash, now, x->tried_1,
                                                      x->tried_n, KEEL_PROXY_REPICKS_MAX, idx)
                         : 0;
    if (rc == 0 && picked != 0) {
        if (x->permit >= 0)
            keel_breaker_record(&cl->breaker, now, x->permit, KEEL_BREAKER_IGNORED, 0);
        x->permit = -1;
        rc = cl->cfg->service != NULL && cl->live == 0 ? KEEL_EEMPTY : KEEL_ENOTFOUND;
    }
    if (rc == 0) {
        keel_balance_start(&cl->lb, *idx);
        cl->hosts[*idx].active++;
    }
    keel__cl_unlock(cl);
    return rc;
}

/* Notes host idx as the one the exchange tried last (each host once, in the order of their
 * latest tries: once all were tried, a retry avoids only the last; attempts_max, at most
 * KEEL_PROXY_ATTEMPTS_MAX, bounds their number). */
static void note_tried(keel__xch_t *x, uint32_t idx)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < x->tried_n; k++)
        if (x->tried_1[k] != idx + 1)
            x->tried_1[n++] = x->tried_1[k];
    x->tried_n = n;
    if (x->tried_n < KEEL_PROXY_ATTEMPTS_MAX)
        x->tried_1[x->tried_n++] = idx + 1;
}

/* Counts a request in its cluster unless max_requests (the bulkhead) is reached, over every
 * worker. */
bool keel__cl_admit(keel__pcluster_t *cl)
{
    keel__cl_lock(cl);
    bool ok = cl->cfg->max_requests == 0 || cl->active_requests < cl->cfg->max_requests;
    if (ok)
        cl->active_requests++;
    keel__cl_unlock(cl);
    return ok;
}

/* Whether an idle pooled connection still looks open: no FIN, reset or unasked byte waits on its
 * socket. A peek, not a read; on a TLS connection waiting bytes may be a session ticket, which
 * its read callback takes, so only a FIN or an error counts there. It catches an upstream's close
 * that arrived while the loop was busy (the read callback would see it only on the loop's next
 * turn); it cannot catch one still on its way, nor one the request itself meets: the stale
 * re-send below is what answers those. One recv per reuse. */
static bool idle_usable(keel__uconn_t *u)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&u->tcp, &fd) != 0)
        return false;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    return n > 0 && u->tls != NULL;
}

/* The attempt's connection to host: an idle pooled one of this worker that still looks open (1:
 * send the request now; those that do not are closed), or a new one (0: send it once connected).
 * -1 when no connection can be made. The idle list holds at most pool.idle_max. An upgrade
 * always takes a new one: its connection becomes a tunnel and never goes back to the pool, and
 * an idle one the upstream is closing just then would fail its handshake, which is retried only
 * after a connect failure. */
static int attempt_connect(keel__dconn_t *d, keel__phost_t *host, keel__uconn_t **out)
{
    keel_proxy_t *p = d->p;
    keel__uconn_t *u;
    keel__ppool_t *pool = keel__pool(p, host); /* this worker's */
    keel_list_t *it;
    while (d->x.upgrade == NULL && (it = keel_list_first(&pool->idle)) != NULL) {
        u = KEEL_LIST_ENTRY(it, keel__uconn_t, link);
        if (!idle_usable(u)) {
            keel__u_close(u); /* takes it off the idle list */
            continue;
        }
        keel_list_remove(&u->link);
        __atomic_sub_fetch(&pool->idle_count, 1, __ATOMIC_RELAXED);
        u->idle = false;
        u->d = d;
        *out = u;
        return 1;
    }
    u = keel__u_new(p, host);
    if (u == NULL)
        return -1;
    u->d = d;
    *out = u;
    return 0;
}

void keel__x_attempt(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    keel_ms_t now = now_ms(p);
    uint32_t idx;
    int picked = attempt_pick(d, &idx);
    if (picked == KEEL_EREJECTED) {
        keel_counter_inc(cl->m_breaker_rejected);
        keel__x_local(d, 503, "circuit-open", NULL, NULL, NULL, 0);
        return;
    }
    if (picked != 0) {
        /* a service cluster the registry left empty says so (no instance passes its checks) */
        keel__x_local(d, 503,
                      picked == KEEL_EEMPTY ? "no-registered-instance" : "no-healthy-upstream",
                      NULL, NULL, NULL, 0);
        return;
    }
    keel__phost_t *host = &cl->hosts[idx];
    note_tried(x, idx);
    x->balance_started = true;
    x->host = host;
    x->try_start_ms = now;
    x->attempts++;
    x->upstream = host->address;
    if (x->traced) { /* this attempt's client span: its id is the parent the upstream sees */
        keel_trace_child(&x->server, &p->rand, &x->trace);
        x->try_start_us = keel_clock_unix_us();
        x->try_error = NULL;
    }
    keel_counter_inc(cl->m_attempts);
    /* the first try of a hedged route: a hedge may follow if it goes unanswered (the rest of
     * keel_proxy_hedge_eligible is judged then; a request that can never be hedged sets no
     * timer) */
    const keel_proxy_hedge_t *hg = &x->route->cfg->hedge;
    x->hedge_at_ms = hg->enabled && x->attempts == 1 && x->upgrade == NULL &&
                             (x->method_kind != 0 || x->idem_key)
                         ? now + hg->delay_ms
                         : 0;
    keel__uconn_t *u = NULL;
    int c = attempt_connect(d, host, &u);
    if (c < 0) {
        keel__x_retry_or_fail(d, NULL, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-failed");
        return;
    }
    x->u = u;
    if (c > 0)
        keel__u_send(u);
    else
        x->connect_deadline_ms = now + cl->cfg->connect_timeout_ms;
    keel__d_arm(d);
}

void keel__x_hedge(keel__dconn_t *d)
{
    keel_proxy_t *p = d->p;
    keel__xch_t *x = &d->x;
    keel__pcluster_t *cl = x->cl;
    const keel_proxy_route_t *r = x->route->cfg;
    keel_ms_t now = now_ms(p);
    x->hedge_at_ms = 0; /* one hedge per request, beside its first try */
    if (x->host == NULL || x->h_host != NULL || p->stopping)
        return;
    keel_proxy_hedge_req_t rq = {
        x->method_kind != 0, x->idem_key,     x->req_done, keel_proxy_replay_ok(&x->replay),
        x->resp_head,        x->call.attempt, now,         x->call.deadline_ms};
    if (keel_proxy_hedge_eligible(&r->hedge, &r->retry, &rq) != KEEL_PROXY_HEDGE_OK)
        return;
    /* the other slot takes the hedge: pick a host other than the first try's */
    uint32_t first = x->host->idx, idx;
    keel__x_swap_tries(x);
    x->permit = -1;
    int picked = attempt_pick(d, &idx);
    if (picked != 0) { /* breaker open, or no host: the first try goes on alone */
        keel__x_swap_tries(x);
        return;
    }
    x->host = &cl->hosts[idx];
    x->balance_started = true;
    /* a hedge to the same host would only double its load: a keyed policy, or the only host */
    bool refused = idx == first;
    if (!refused) { /* the retry budget bounds hedges as it bounds retries */
        keel__cl_lock(cl);
        uint64_t others = cl->active_retries - (x->retrying ? 1 : 0);
        refused = !keel_proxy_retry_budget_allows(&r->retry, cl->active_requests, others);
        if (!refused && !x->retrying)
            cl->active_retries++;
        keel__cl_unlock(cl);
        if (refused)
            keel_counter_inc(cl->m_hedge_budget);
    }
    if (refused) {
        keel__x_end_attempt(d, -1, 0, false);
        keel__x_swap_tries(x);
        return;
    }
    note_tried(x, idx);
    x->retrying = true;
    x->call.attempt++; /* the hedge is an attempt: retries after it see attempts_max in full */
    x->attempts++;
    x->is_hedge = true;
    x->try_start_ms = now;
    if (x->traced) { /* the hedge's own client span, a sibling of the first try's */
        keel_trace_child(&x->server, &p->rand, &x->trace);
        x->try_start_us = keel_clock_unix_us();
    } else {
        x->trace = x->h_trace; /* the context the first try sent */
    }
    x->try_error = NULL;
    x->try_deadline_ms = r->per_try_timeout_ms > 0 ? now + r->per_try_timeout_ms : KEEL_MS_NEVER;
    keel_counter_inc(cl->m_attempts);
    keel_counter_inc(cl->m_hedges);
    keel__uconn_t *u = NULL;
    int c = attempt_connect(d, x->host, &u);
    if (c == 0)
        x->connect_deadline_ms = now + cl->cfg->connect_timeout_ms;
    x->u = u;
    keel__x_swap_tries(x); /* the first try back in place; the hedge is the other attempt */
    if (c < 0) {
        x->h_try_error = "connect-failed";
        keel__x_end_other(d, 0, 0, true);
    } else if (c > 0) {
        keel__u_send(u);
    }
    keel__d_arm(d);
}

void keel__x_timeout(keel__dconn_t *d, bool connect)
{
    keel__xch_t *x = &d->x;
    keel_counter_inc(x->cl->m_timeouts);
    if (now_ms(d->p) >= x->call.deadline_ms) { /* the route's deadline: no more tries */
        x->try_error = "upstream-timeout";
        keel__x_end_attempt(d, 0, 0, true);
        keel__x_local(d, 504, "upstream-timeout", NULL, NULL, NULL, 0);
        return;
    }
    if (connect)
        keel__x_retry_or_fail(d, NULL, KEEL_RETRY_FAIL_CONNECT, 0, 503, "connect-timeout");
    else
        keel__x_retry_or_fail(d, NULL, KEEL_RETRY_FAIL_TIMEOUT, 0, 504, "upstream-timeout");
}

/* Decides whether the failed attempt is tried again; true when a retry is scheduled. */
bool keel__x_try_again(keel__dconn_t *d, keel_retry_failure_t failure, int status)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_retry_t *rt = &x->route->cfg->retry;
    if (rt->attempts_max <= 1 || x->resp_head || d->p->stopping)
        return false;
    if (x->upgrade != NULL && failure != KEEL_RETRY_FAIL_CONNECT)
        return false; /* an upgrade is retried only when it never reached an upstream */
    keel_proxy_retry_req_t rq = {x->method_kind != 0, x->idem_key, x->replay.sent,
                                 keel_proxy_replay_ok(&x->replay)};
    if (keel_proxy_retry_eligible(rt, &rq, failure, status) != KEEL_PROXY_RETRY_OK)
        return false;
    /* core/retry judges attempts, the deadline and the backoff; class and idempotency were
     * decided above (its policy is configured to accept every class we pass it) */
    keel_retry_outcome_t o = {failure, failure == KEEL_RETRY_FAIL_NONE ? 503 : 0, true};
    keel_retry_decision_t dec;
    keel_ms_t now = now_ms(d->p);
    pthread_mutex_lock(&x->route->mu);
    keel_retry_next(&x->route->retry, &x->call, now, &o, &d->p->rand, &dec);
    pthread_mutex_unlock(&x->route->mu);
    if (dec.verdict != KEEL_RETRY_RETRY)
        return false;
    /* retries in flight other than this request's own, over every worker */
    keel__cl_lock(x->cl);
    uint64_t others = x->cl->active_retries - (x->retrying ? 1 : 0);
    bool allowed = keel_proxy_retry_budget_allows(rt, x->cl->active_requests, others);
    if (allowed && !x->retrying)
        x->cl->active_retries++;
    keel__cl_unlock(x->cl);
    if (!allowed) {
        keel_counter_inc(x->cl->m_budget_exhausted);
        return false;
    }
    x->retrying = true;
    keel_counter_inc(x->cl->m_retries);
    x->retry_at_ms = dec.start_ms > now ? dec.start_ms : now;
    x->try_deadline_ms =
        dec.try_timeout_ms < KEEL_MS_NEVER / 2 ? dec.start_ms + dec.try_timeout_ms : KEEL_MS_NEVER;
    keel__d_arm(d);
    return true;
}

/* The request went on a pooled connection, reused, and the upstream closed it (EOF) or reset it
 * before a byte of an answer came back: most likely the race between the upstream's idle timeout
 * and our reuse, which no check before sending can close (Go's net/http: "server closed idle
 * connection"; nginx's and HAProxy's retries on a kept-alive connection). The same attempt goes
 * once more to the same host on a new connection, when the request may be sent again by the
 * rules of a retry after a reset (keel_proxy_resend_safe: its body sent so far is all held, and
 * its method is idempotent or it carries the idempotency key, unless the route's idempotent_only
 * is off). It is not a retry: retry_on, attempts_max, backoff and the retry budget do not apply,
 * and the attempt keeps its host, breaker permit, span and deadlines, so the breaker and the
 * outlier detector judge only how the new connection ends. A new connection is never reused,
 * so this happens at most once per attempt. Counted in keel_proxy_upstream_stale_retries_total.
 * true when it was sent again (u is closed); false: the caller's failure path applies. */
bool keel__x_resend_stale(keel__dconn_t *d, keel__uconn_t *u, int err)
{
    keel__xch_t *x = &d->x;
    assert(u->d == d && (u == x->u || u == x->h_u));
    if (u->requests < 2 || u->answering || x->resp_head || x->upgrade != NULL ||
        d->state != KEEL__D_BUSY || d->p->stopping)
        return false;
    if (err != UV_EOF && err != UV_ECONNRESET && err != UV_EPIPE)
        return false;
    keel_proxy_retry_req_t rq = {x->method_kind != 0, x->idem_key, x->replay.sent,
                                 keel_proxy_replay_ok(&x->replay)};
    if (keel_proxy_resend_safe(&x->route->cfg->retry, &rq, KEEL_RETRY_FAIL_RESET) !=
        KEEL_PROXY_RETRY_OK)
        return false;
    bool other = u == x->h_u; /* a hedge's: handled in the exchange's slot, then put back */
    if (other)
        keel__x_swap_tries(x);
    keel__uconn_t *fresh = keel__u_new(d->p, x->host);
    if (fresh != NULL) {
        fresh->d = d;
        x->u = fresh;
        x->connect_deadline_ms = now_ms(d->p) + x->cl->cfg->connect_timeout_ms;
        u->d = NULL;
        keel__u_close(u);
        keel_counter_inc(x->cl->m_stale_retries);
    }
    if (other)
        keel__x_swap_tries(x);
    if (fresh == NULL)
        return false;
    keel__d_arm(d);
    return true;
}

/* The attempt on connection `from` (NULL: the exchange's attempt) failed before a response head
 * reached the client. The other attempt of a hedged request just ends; when the exchange's
 * attempt fails while the other is in flight, the other becomes the exchange's attempt (no
 * retry: one is already running). */
void keel__x_retry_or_fail(keel__dconn_t *d, keel__uconn_t *from, keel_retry_failure_t failure,
                           int status, int fail_status, const char *reason)
{
    keel__xch_t *x = &d->x;
    if (from != NULL && from == x->h_u) {
        x->h_try_error = reason;
        keel__x_end_other(d, 0, failure == KEEL_RETRY_FAIL_NONE ? status : 0,
                          failure != KEEL_RETRY_FAIL_NONE);
        keel__d_arm(d);
        return;
    }
    x->hedge_at_ms = 0; /* a hedge goes only beside a first try still running */
    if (x->u != NULL) {
        keel__uconn_t *u = x->u;
        x->u = NULL;
        u->d = NULL;
        keel__u_close(u);
    }
    x->try_error = reason;
    keel__x_end_attempt(d, 0, failure == KEEL_RETRY_FAIL_NONE ? status : 0,
                        failure != KEEL_RETRY_FAIL_NONE);
    if (x->resp_head) {
        keel__d_close(d);
        return;
    }
    if (x->h_host != NULL) {
        keel__x_swap_tries(x);
        keel__d_arm(d);
        return;
    }
    if (keel__x_try_again(d, failure, status))
        return;
    keel__x_local(d, fail_status, reason, NULL, NULL, NULL, 0);
}
