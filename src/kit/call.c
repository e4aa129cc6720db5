/* call.c - see call.h. */
#include "kit/call.h"

#include "base/log.h"
#include "base/num.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct keel__caller_ep {
    uint64_t id; /* keel_balance_hash of host_port */
    char host_port[KEEL_DISCOVERY_ADDR_BYTES_MAX + 8];
    uint32_t weight;
    keel_breaker_t breaker;
    bool open; /* taken out of the balancer because its breaker said no */
};

struct keel__call {
    keel_caller_t *c;
    keel_call_cb cb;
    void *data;
    int method;
    bool idempotent;
    uint64_t key_hash;
    char *target;
    uint8_t *body;
    size_t body_len;
    keel_http_header_t headers[KEEL_CALLER_HEADERS_MAX + 3];
    size_t headers_count; /* the caller's, then traceparent, the timeout and the request id */
    char request_id[KEEL_SERVICE_REQUEST_ID_BYTES_MAX + 1];
    char *header_store; /* the caller's names and values */
    char traceparent[KEEL_TRACEPARENT_LEN + 1];
    char timeout_text[24];
    size_t timeout_at; /* the timeout field's place in headers */
    keel_retry_call_t rc;
    keel_ms_t started_ms, attempt_ms, try_timeout_ms, start_at_ms;
    uint64_t ep_id; /* the attempt's instance */
    int permit;
    int last_err;
    keel__call_t *next; /* in c->waiting */
};

keel_caller_config_t keel_caller_config_default(const char *service)
{
    keel_caller_config_t cfg = {0};
    cfg.service = service;
    cfg.policy = "p2c";
    cfg.zone = getenv(KEEL_ZONE_ENV);
    keel_breaker_config_default(&cfg.breaker);
    cfg.breaker.window_calls = 20;
    cfg.breaker.calls_min = 20;
    cfg.breaker.consecutive_failures_max = 5;
    cfg.breaker.open_ms = 5000;
    cfg.breaker.probes_max = 3;
    keel_retry_config_default(&cfg.retry);
    cfg.retry.per_try_timeout_ms = 1000;
    cfg.timeout_ms = 5000;
    cfg.http = keel_http_client_config_default();
    cfg.seed = 1;
    return cfg;
}

static keel__caller_ep_t *ep_by_id(keel_caller_t *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->ep_n; i++)
        if (c->ep[i].id == id)
            return &c->ep[i];
    return NULL;
}

/* Replaces the instance set; instances kept keep their breakers. */
static int set_instances(keel_caller_t *c, const char (*hp)[KEEL_DISCOVERY_ADDR_BYTES_MAX + 8],
                         const uint32_t *weights, const uint32_t *priorities, uint32_t n)
{
    keel__caller_ep_t *next = calloc(n ? n : 1, sizeof(*next));
    keel_balance_spec_t *specs = calloc(n ? n : 1, sizeof(*specs));
    if (next == NULL || specs == NULL) {
        free(next);
        free(specs);
        return KEEL_ENOMEM;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = keel_balance_hash(hp[i], strlen(hp[i]));
        bool dup = false;
        for (uint32_t j = 0; j < m; j++)
            dup = dup || next[j].id == id;
        if (dup)
            continue;
        keel__caller_ep_t *e = &next[m];
        e->id = id;
        snprintf(e->host_port, sizeof(e->host_port), "%s", hp[i]);
        e->weight = weights[i] == 0                        ? 1
                    : weights[i] > KEEL_BALANCE_WEIGHT_MAX ? KEEL_BALANCE_WEIGHT_MAX
                                                           : weights[i];
        keel__caller_ep_t *old = ep_by_id(c, id);
        if (old != NULL) {
            e->breaker = old->breaker;
            old->breaker = (keel_breaker_t){0};
            e->open = old->open;
        } else if (keel_breaker_init(&e->breaker, &c->cfg.breaker, NULL) != 0) {
            for (uint32_t j = 0; j < m; j++)
                keel_breaker_free(&next[j].breaker);
            free(next);
            free(specs);
            return KEEL_ENOMEM;
        }
        specs[m] = (keel_balance_spec_t){
            .id = id, .weight = e->weight, .priority = priorities ? priorities[i] : 0};
        m++;
    }
    int rc = keel_balance_set_endpoints(&c->bal, specs, m, NULL);
    free(specs);
    if (rc != 0) {
        for (uint32_t j = 0; j < m; j++) {
            keel__caller_ep_t *old = ep_by_id(c, next[j].id);
            if (old != NULL && old->breaker.cfg.window_calls == 0)
                old->breaker = next[j].breaker; /* hand the moved breaker back */
            else
                keel_breaker_free(&next[j].breaker);
        }
        free(next);
        return rc;
    }
    for (uint32_t i = 0; i < c->ep_n; i++)
        keel_breaker_free(&c->ep[i].breaker); /* moved ones are zeroed: a no-op */
    free(c->ep);
    c->ep = next;
    c->ep_n = m;
    for (uint32_t i = 0; i < m; i++)
        if (next[i].open) {
            int idx = keel_balance_find(&c->bal, next[i].id);
            if (idx >= 0)
                keel_balance_set_state(&c->bal, (uint32_t)idx, true, true);
        }
    return 0;
}

static void on_discovery(keel_discovery_t *d, void *data)
{
    keel_caller_t *c = data;
    size_t n;
    const keel_discovery_instance_t *list = keel_discovery_instances(d, &n);
    char(*hp)[KEEL_DISCOVERY_ADDR_BYTES_MAX + 8] = calloc(n ? n : 1, sizeof(*hp));
    uint32_t *w = calloc(n ? n : 1, sizeof(*w)), *prio = calloc(n ? n : 1, sizeof(*prio));
    const char *zone = c->cfg.zone;
    if (hp != NULL && w != NULL && prio != NULL) {
        for (size_t i = 0; i < n; i++) {
            snprintf(hp[i], sizeof(hp[i]), "%s:%d", list[i].address, list[i].port);
            w[i] = list[i].weight;
            prio[i] = keel_discovery_priority(&list[i], zone);
        }
        if (set_instances(c, hp, w, prio, (uint32_t)n) != 0)
            keel_log_warn("caller: could not take the new instance list",
                          KF_STR("service", c->service));
    }
    free(hp);
    free(w);
    free(prio);
}

static int parse_static(keel_caller_t *c, const char *list, keel_errmsg_t *msg)
{
    char(*hp)[KEEL_DISCOVERY_ADDR_BYTES_MAX + 8] = calloc(KEEL_CALLER_ENDPOINTS_MAX, sizeof(*hp));
    uint32_t *w = calloc(KEEL_CALLER_ENDPOINTS_MAX, sizeof(*w));
    if (hp == NULL || w == NULL) {
        free(hp);
        free(w);
        return keel_errf(msg, KEEL_ENOMEM, "caller: out of memory");
    }
    uint32_t n = 0;
    int rc = 0;
    const char *p = list;
    while (*p != '\0' && rc == 0) {
        size_t len = strcspn(p, ", ");
        if (len > 0) {
            if (n == KEEL_CALLER_ENDPOINTS_MAX)
                rc = keel_errf(msg, KEEL_ETOOBIG, "caller %s: more than %u endpoints", c->service,
                               KEEL_CALLER_ENDPOINTS_MAX);
            else if (len >= sizeof(hp[0]) || memchr(p, ':', len) == NULL)
                rc = keel_errf(msg, KEEL_EINVAL, "caller %s: endpoint '%.*s' is not host:port",
                               c->service, (int)(len > 64 ? 64 : len), p);
            else {
                memcpy(hp[n], p, len);
                w[n++] = 1;
            }
        }
        p += len;
        p += strspn(p, ", ");
    }
    if (rc == 0)
        rc = set_instances(c, hp, w, NULL, n);
    free(hp);
    free(w);
    return rc == KEEL_ENOMEM ? keel_errf(msg, rc, "caller: out of memory") : rc;
}

int keel_caller_init(keel_caller_t *c, keel_loop_t *loop, const keel_caller_config_t *cfg,
                     keel_metrics_t *metrics, keel_errmsg_t *msg)
{
    *c = (keel_caller_t){0};
    c->cfg = *cfg;
    c->loop = loop;
    if (cfg->service == NULL || cfg->service[0] == '\0' ||
        strlen(cfg->service) >= KEEL_SERVICE_NAME_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "caller: a service name of 1..%u bytes is needed",
                         KEEL_SERVICE_NAME_BYTES_MAX - 1);
    snprintf(c->service, sizeof(c->service), "%s", cfg->service);
    if ((cfg->registry == NULL) == (cfg->endpoints == NULL))
        return keel_errf(msg, KEEL_EINVAL, "caller %s: give a registry or endpoints, one of them",
                         c->service);
    if (cfg->timeout_ms <= 0 || cfg->timeout_ms > KEEL_CALLER_TIMEOUT_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "caller %s: timeout_ms must be 1..%d", c->service,
                         KEEL_CALLER_TIMEOUT_MS_MAX);
    int rc = keel_breaker_config_validate(&cfg->breaker, msg);
    if (rc == 0)
        rc = keel_retry_init(&c->retry, &cfg->retry, msg);
    if (rc != 0)
        return rc;
    keel_balance_config_t bc;
    keel_balance_config_default(&bc);
    bc.endpoints_max = KEEL_CALLER_ENDPOINTS_MAX;
    bc.seed = cfg->seed;
    if ((rc = keel_balance_policy_find(cfg->policy ? cfg->policy : "p2c", NULL, 0, &bc.policy,
                                       msg)) != 0)
        return rc;
    if ((rc = keel_balance_init(&c->bal, &bc, msg)) != 0)
        return rc;
    keel_rand_seed(&c->rand, cfg->seed ^ 0x6b65656c63616c6cull);
    /* What can fail comes first; the handles (which close asynchronously) last. */
    if ((rc = keel_http_client_config_validate(&cfg->http, msg)) == 0) {
        if (cfg->endpoints != NULL)
            rc = parse_static(c, cfg->endpoints, msg);
        else if ((c->disc = calloc(1, sizeof(*c->disc))) == NULL)
            rc = keel_errf(msg, KEEL_ENOMEM, "caller: out of memory");
        else if ((rc = keel_discovery_start(c->disc, loop, cfg->registry, c->service, cfg->tag,
                                            on_discovery, c, metrics, msg)) != 0) {
            free(c->disc);
            c->disc = NULL;
        }
    }
    if (rc != 0) {
        for (uint32_t i = 0; i < c->ep_n; i++)
            keel_breaker_free(&c->ep[i].breaker);
        free(c->ep);
        keel_balance_free(&c->bal);
        return rc;
    }
    keel_http_client_init(&c->http, loop, &cfg->http, NULL); /* validated: cannot fail */
    keel_timer_init(loop, &c->timer);
    if (metrics != NULL) {
        char labels[KEEL_METRICS_LABELS_BYTES_MAX], esc[2 * KEEL_SERVICE_NAME_BYTES_MAX];
        if (keel_metrics_label_escape(esc, sizeof(esc), c->service) != 0)
            snprintf(esc, sizeof(esc), "?");
        const char *help = "Outbound calls ended, by callee and outcome.";
        snprintf(labels, sizeof(labels), "callee=\"%s\",outcome=\"ok\"", esc);
        c->m_calls_ok = keel_metrics_counter(metrics, "keel_calls_total", help, labels);
        snprintf(labels, sizeof(labels), "callee=\"%s\",outcome=\"failed\"", esc);
        c->m_calls_failed = keel_metrics_counter(metrics, "keel_calls_total", help, labels);
        snprintf(labels, sizeof(labels), "callee=\"%s\"", esc);
        c->m_retries = keel_metrics_counter(metrics, "keel_call_retries_total",
                                            "Attempts after the first, by callee.", labels);
        c->m_rejected = keel_metrics_counter(
            metrics, "keel_call_breaker_rejections_total",
            "Instances skipped because their breaker was open, by callee.", labels);
        c->m_latency = keel_metrics_histogram(
            metrics, "keel_call_seconds", "Outbound call time, retries included.", labels, NULL, 0);
    }
    return 0;
}

uint32_t keel_caller_instances(const keel_caller_t *c, uint32_t *open)
{
    uint32_t o = 0;
    for (uint32_t i = 0; i < c->ep_n; i++)
        o += c->ep[i].open;
    if (open != NULL)
        *open = o;
    return c->ep_n;
}

/* ---- one call ---------------------------------------------------------------------------- */

static void call_free(keel__call_t *k)
{
    free(k->target);
    free(k->body);
    free(k->header_store);
    free(k);
}

static void finish(keel__call_t *k, int err, const keel_http_msg_t *resp)
{
    keel_caller_t *c = k->c;
    bool ok = err == 0 && resp != NULL && resp->status < 500;
    c->stats.ok += ok;
    c->stats.failed += !ok;
    if (ok && c->m_calls_ok != NULL)
        keel_counter_inc(c->m_calls_ok);
    if (!ok && c->m_calls_failed != NULL)
        keel_counter_inc(c->m_calls_failed);
    if (c->m_latency != NULL)
        keel_histogram_observe(c->m_latency,
                               (double)(keel_loop_now_ms(c->loop) - k->started_ms) / 1000.0);
    c->inflight--;
    k->cb(err, resp, k->data);
    call_free(k);
}

/* Instances whose breaker's open time is over go back to the balancer (to be probed). */
static void reopen_due(keel_caller_t *c, keel_ms_t now)
{
    for (uint32_t i = 0; i < c->ep_n; i++) {
        keel__caller_ep_t *e = &c->ep[i];
        if (!e->open || keel_breaker_state(&e->breaker) == KEEL_BREAKER_FORCED_OPEN)
            continue;
        if (keel_breaker_state(&e->breaker) == KEEL_BREAKER_OPEN && now < e->breaker.open_until_ms)
            continue;
        e->open = false;
        int idx = keel_balance_find(&c->bal, e->id);
        if (idx >= 0)
            keel_balance_set_state(&c->bal, (uint32_t)idx, true, false);
    }
}

/* Picks an instance whose breaker admits the call: 0, KEEL_EEMPTY or KEEL_EREJECTED. */
static int pick(keel_caller_t *c, keel__call_t *k, keel_ms_t now, keel__caller_ep_t **out)
{
    reopen_due(c, now);
    bool rejected = false;
    uint32_t avoided = 0;
    /* a retry: the balancer offers another instance than the one that just failed, of another
     * zone too when it was the only one of its own (core/balance.h, pick_other) */
    int failed = k->ep_id != 0 ? keel_balance_find(&c->bal, k->ep_id) : -1;
    for (uint32_t tries = 0; tries <= c->ep_n + 3; tries++) {
        uint32_t idx;
        int rc = failed >= 0 ? keel_balance_pick_other(&c->bal, k->key_hash, now,
                                                       (uint32_t)failed + 1, 3, &idx)
                             : keel_balance_pick(&c->bal, k->key_hash, now, &idx);
        if (rc != 0)
            break;
        keel__caller_ep_t *e = ep_by_id(c, c->bal.ep[idx].id);
        if (e == NULL)
            break;
        /* a retry goes to another instance than the one that just failed, when the balancer
           offers one within three picks (a hash policy keeps its instance) */
        if (k->ep_id != 0 && e->id == k->ep_id && c->ep_n > 1 && avoided < 3) {
            avoided++;
            continue;
        }
        int permit = keel_breaker_allow(&e->breaker, now);
        if (permit >= 0) {
            k->permit = permit;
            *out = e;
            return 0;
        }
        rejected = true;
        c->stats.breaker_rejections++;
        if (c->m_rejected != NULL)
            keel_counter_inc(c->m_rejected);
        e->open = true;
        keel_balance_set_state(&c->bal, idx, true, true);
    }
    return rejected ? KEEL_EREJECTED : KEEL_EEMPTY;
}

static void attempt(keel__call_t *k);
static void on_response(int err, const keel_http_msg_t *resp, void *data);

static void schedule(keel_caller_t *c);

static void wait_for(keel__call_t *k, keel_ms_t start_at)
{
    keel_caller_t *c = k->c;
    k->start_at_ms = start_at;
    keel__call_t **pp = &c->waiting;
    while (*pp != NULL && (*pp)->start_at_ms <= start_at)
        pp = &(*pp)->next;
    k->next = *pp;
    *pp = k;
    schedule(c);
}

static void on_timer(keel_timer_t *t, void *data)
{
    (void)t;
    keel_caller_t *c = data;
    keel_ms_t now = keel_loop_now_ms(c->loop);
    while (c->waiting != NULL && c->waiting->start_at_ms <= now) {
        keel__call_t *k = c->waiting;
        c->waiting = k->next;
        k->next = NULL;
        attempt(k);
    }
    schedule(c);
}

static void schedule(keel_caller_t *c)
{
    if (c->waiting == NULL || c->closing) {
        keel_timer_stop(&c->timer);
        return;
    }
    keel_ms_t now = keel_loop_now_ms(c->loop);
    keel_ms_t at = c->waiting->start_at_ms;
    keel_timer_start(&c->timer, at > now ? at - now : 0, 0, on_timer, c);
}

/* The attempt could not be sent or failed: retry or give up. */
static void judge(keel__call_t *k, const keel_retry_outcome_t *o, int err,
                  const keel_http_msg_t *resp)
{
    keel_caller_t *c = k->c;
    keel_ms_t now = keel_loop_now_ms(c->loop);
    keel_retry_decision_t d;
    keel_retry_next(&c->retry, &k->rc, now, o, &c->rand, &d);
    if (d.verdict == KEEL_RETRY_RETRY && !c->closing) {
        c->stats.retries++;
        if (c->m_retries != NULL)
            keel_counter_inc(c->m_retries);
        k->try_timeout_ms = d.try_timeout_ms;
        wait_for(k, d.start_ms);
        return;
    }
    if (d.verdict == KEEL_RETRY_GIVE_UP && d.reason == KEEL_RETRY_REASON_DEADLINE && resp == NULL)
        err = KEEL_ETIMEDOUT;
    finish(k, err, resp);
}

static void attempt(keel__call_t *k)
{
    keel_caller_t *c = k->c;
    keel_ms_t now = keel_loop_now_ms(c->loop);
    if (c->closing) {
        finish(k, KEEL_ECANCELED, NULL);
        return;
    }
    if (now >= k->rc.deadline_ms) {
        finish(k, KEEL_ETIMEDOUT, NULL);
        return;
    }
    keel__caller_ep_t *e = NULL;
    int rc = pick(c, k, now, &e);
    if (rc != 0) {
        if (rc == KEEL_EEMPTY)
            c->stats.no_instance++;
        /* Nothing was sent: a connect-class failure, retried within the deadline (an
         * instance may come back or a breaker may half-open). */
        k->last_err = rc;
        keel_retry_outcome_t o = {.failure = KEEL_RETRY_FAIL_CONNECT, .idempotent = true};
        judge(k, &o, rc, NULL);
        return;
    }
    k->ep_id = e->id;
    k->attempt_ms = now;
    c->stats.attempts++;
    int idx = keel_balance_find(&c->bal, e->id);
    if (idx >= 0)
        keel_balance_start(&c->bal, (uint32_t)idx);
    keel_ms_t left = k->rc.deadline_ms - now;
    keel_ms_t timeout =
        k->try_timeout_ms > 0 && k->try_timeout_ms < left ? k->try_timeout_ms : left;
    snprintf(k->timeout_text, sizeof(k->timeout_text), "%lld", (long long)left);
    k->headers[k->timeout_at].value = k->timeout_text;
    k->headers[k->timeout_at].value_len = strlen(k->timeout_text);
    keel_http_client_request_t req = {
        .method = k->method,
        .host_port = e->host_port,
        .target = k->target,
        .headers = k->headers,
        .headers_count = k->headers_count,
        .body = k->body,
        .body_len = k->body_len,
        .timeout_ms = timeout,
    };
    rc = keel_http_client_request(&c->http, &req, on_response, k, NULL);
    if (rc != 0)
        on_response(rc, NULL, k); /* queue full, bad address: a failed attempt */
}

static bool method_idempotent(int m)
{
    switch (m) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
        return true;
    default:
        return false;
    }
}

static void on_response(int err, const keel_http_msg_t *resp, void *data)
{
    keel__call_t *k = data;
    keel_caller_t *c = k->c;
    keel_ms_t now = keel_loop_now_ms(c->loop);
    keel__caller_ep_t *e = ep_by_id(c, k->ep_id);
    int idx = keel_balance_find(&c->bal, k->ep_id);
    bool failed = err != 0 || resp->status >= 500;
    if (err == KEEL_ECANCELED) {
        if (e != NULL)
            keel_breaker_record(&e->breaker, now, k->permit, KEEL_BREAKER_IGNORED, 0);
        if (idx >= 0)
            keel_balance_done(&c->bal, (uint32_t)idx);
        finish(k, KEEL_ECANCELED, NULL);
        return;
    }
    if (e != NULL)
        keel_breaker_record(&e->breaker, now, k->permit,
                            failed ? KEEL_BREAKER_FAILURE : KEEL_BREAKER_SUCCESS,
                            now - k->attempt_ms);
    if (idx >= 0) {
        keel_balance_done(&c->bal, (uint32_t)idx);
        keel_balance_result_t r = {
            .ok = !failed, .latency_ms = (uint32_t)(now - k->attempt_ms), .now_ms = now};
        keel_balance_report(&c->bal, (uint32_t)idx, &r);
    }
    if (!failed) {
        finish(k, 0, resp);
        return;
    }
    k->last_err = err;
    keel_retry_outcome_t o = {.idempotent = k->idempotent || method_idempotent(k->method)};
    switch (err) {
    case 0:
        o.failure = KEEL_RETRY_FAIL_NONE;
        o.http_status = resp->status;
        break;
    case KEEL_ECONNREFUSED:
    case KEEL_EBUSY: /* the pool's queue was full: nothing was sent */
    case KEEL_EINVAL:
        o.failure = KEEL_RETRY_FAIL_CONNECT;
        break;
    case KEEL_ETIMEDOUT:
        o.failure = KEEL_RETRY_FAIL_TIMEOUT;
        break;
    default:
        o.failure = KEEL_RETRY_FAIL_RESET;
        break;
    }
    judge(k, &o, err, resp);
}

static size_t header_bytes(const keel_call_t *call)
{
    size_t n = 0;
    for (size_t i = 0; i < call->headers_count; i++)
        n += call->headers[i].name_len + call->headers[i].value_len + 2;
    return n;
}

int keel_caller_call(keel_caller_t *c, const keel_call_t *call, keel_call_cb cb, void *data)
{
    if (c->closing)
        return KEEL_ECLOSED;
    if (call->target == NULL || call->target[0] != '/' || cb == NULL)
        return KEEL_EINVAL;
    if (call->headers_count > KEEL_CALLER_HEADERS_MAX)
        return KEEL_ETOOBIG;
    if (c->inflight >= KEEL_CALLER_CALLS_MAX)
        return KEEL_EBUSY;
    keel__call_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return KEEL_ENOMEM;
    k->c = c;
    k->cb = cb;
    k->data = data;
    k->method = call->method;
    k->idempotent = call->idempotent;
    k->key_hash = call->key_hash;
    k->target = strdup(call->target);
    k->body_len = call->body_len;
    if (call->body_len > 0)
        k->body = malloc(call->body_len);
    k->header_store = malloc(header_bytes(call) + 1);
    if (k->target == NULL || (call->body_len > 0 && k->body == NULL) || k->header_store == NULL) {
        call_free(k);
        return KEEL_ENOMEM;
    }
    if (call->body_len > 0)
        memcpy(k->body, call->body, call->body_len);
    char *p = k->header_store;
    for (size_t i = 0; i < call->headers_count; i++) {
        const keel_http_header_t *h = &call->headers[i];
        size_t nl = h->name_len ? h->name_len : strlen(h->name);
        size_t vl = h->value_len ? h->value_len : strlen(h->value);
        if ((size_t)(p - k->header_store) + nl + vl + 2 > header_bytes(call) + 1 &&
            (h->name_len == 0 || h->value_len == 0)) {
            call_free(k); /* lengths given as 0 and strings longer than counted */
            return KEEL_EINVAL;
        }
        keel_http_header_t *o = &k->headers[k->headers_count++];
        memcpy(p, h->name, nl);
        p[nl] = '\0';
        o->name = p;
        o->name_len = nl;
        p += nl + 1;
        memcpy(p, h->value, vl);
        p[vl] = '\0';
        o->value = p;
        o->value_len = vl;
        p += vl + 1;
    }
    /* a child span of the caller's, or a new trace */
    keel_trace_ctx_t span;
    if (call->has_trace)
        keel_trace_child(&call->trace, &c->rand, &span);
    else
        keel_trace_new_root(&c->rand, 1, &span);
    keel_trace_format_traceparent(&span, k->traceparent);
    k->headers[k->headers_count++] = (keel_http_header_t){.name = "traceparent",
                                                          .name_len = 11,
                                                          .value = k->traceparent,
                                                          .value_len = KEEL_TRACEPARENT_LEN};
    k->timeout_at = k->headers_count;
    k->headers[k->headers_count++] = (keel_http_header_t){
        .name = KEEL_CALL_TIMEOUT_HEADER, .name_len = strlen(KEEL_CALL_TIMEOUT_HEADER)};
    if (call->request_id != NULL &&
        keel_service_request_id_ok(call->request_id, strlen(call->request_id))) {
        snprintf(k->request_id, sizeof(k->request_id), "%s", call->request_id);
        k->headers[k->headers_count++] =
            (keel_http_header_t){.name = KEEL_SERVICE_REQUEST_ID_HEADER,
                                 .name_len = strlen(KEEL_SERVICE_REQUEST_ID_HEADER),
                                 .value = k->request_id,
                                 .value_len = strlen(k->request_id)};
    }
    keel_ms_t now = keel_loop_now_ms(c->loop);
    keel_ms_t deadline = call->deadline_ms > 0 ? call->deadline_ms : now + c->cfg.timeout_ms;
    k->started_ms = now;
    k->try_timeout_ms = keel_retry_begin(&c->retry, &k->rc, now, deadline);
    c->stats.calls++;
    c->inflight++;
    if (k->try_timeout_ms < 0) /* the deadline has passed already */
        k->try_timeout_ms = 0;
    wait_for(k, now); /* never calls back from here: the first attempt starts from the loop */
    return 0;
}

/* ---- the request being served ------------------------------------------------------------ */

keel_call_t keel_call_from(const keel_service_req_t *in, int method, const char *target)
{
    keel_call_t call = {.method = method, .target = target};
    if (in == NULL || in->http == NULL)
        return call;
    const keel_http_msg_t *m = in->http->msg;
    size_t n;
    const char *v = keel_http_msg_header(m, KEEL_CALL_TIMEOUT_HEADER, &n);
    int64_t left;
    if (v != NULL && keel_parse_i64((const uint8_t *)v, n, &left) == 0 && left > 0 &&
        left <= KEEL_CALLER_TIMEOUT_MS_MAX)
        call.deadline_ms = keel_loop_now_ms(in->svc->loop) + (keel_ms_t)left;
    call.trace = in->trace; /* the served request's span: outbound calls are its children */
    call.has_trace = true;
    call.request_id = in->request_id;
    return call;
}

/* ---- closing ----------------------------------------------------------------------------- */

static void close_step(keel_caller_t *c)
{
    if (--c->closing > 0)
        return;
    for (uint32_t i = 0; i < c->ep_n; i++)
        keel_breaker_free(&c->ep[i].breaker);
    free(c->ep);
    c->ep = NULL;
    c->ep_n = 0;
    keel_balance_free(&c->bal);
    if (c->closed != NULL)
        c->closed(c, c->closed_data);
}

static void on_http_closed(keel_http_client_t *h, void *data)
{
    (void)h;
    close_step(data);
}

static void on_timer_closed(keel_timer_t *t)
{
    close_step((keel_caller_t *)((char *)t - offsetof(keel_caller_t, timer)));
}

static void on_disc_closed(keel_discovery_t *d)
{
    keel_caller_t *c = d->data;
    free(d);
    close_step(c);
}

void keel_caller_close(keel_caller_t *c, void (*closed)(keel_caller_t *c, void *data), void *data)
{
    if (c->closing)
        return;
    c->closed = closed;
    c->closed_data = data;
    c->closing = 2 + (c->disc != NULL);
    while (c->waiting != NULL) {
        keel__call_t *k = c->waiting;
        c->waiting = k->next;
        finish(k, KEEL_ECANCELED, NULL);
    }
    keel_timer_close(&c->timer, on_timer_closed);
    if (c->disc != NULL) {
        keel_discovery_t *d = c->disc;
        c->disc = NULL;
        keel_discovery_close(d, on_disc_closed);
    }
    keel_http_client_close(&c->http, on_http_closed, c);
}
