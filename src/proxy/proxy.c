/* proxy.c - keel proxy's setup and teardown: generations (routes' policies, the clusters they
 * use), start, reload and stop, listeners; clusters in proxy_cluster.c, admin in
 * proxy_admin.c. */
#include "proxy/proxy_int.h"

#include "proxy/sidecar.h"

#include "base/crc32c.h"
#include "runtime/clock.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void rl_unref(keel__prl_t *rl)
{
    if (__atomic_sub_fetch(&rl->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    keel_ratelimit_keyed_free(&rl->rl);
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_ratelimit(const keel_proxy_ratelimit_t *a, const keel_proxy_ratelimit_t *b)
{
    return a->enabled && b->enabled && a->key == b->key && same_str(a->header, b->header) &&
           a->requests_per_s == b->requests_per_s && a->burst == b->burst &&
           a->keys_max == b->keys_max;
}

/* The one route named `name` in cfg, or NULL (none, or several). */
static const keel_proxy_route_t *only_route(const keel_proxy_config_t *cfg, const char *name)
{
    const keel_proxy_route_t *found = NULL;
    for (uint32_t i = 0; i < cfg->routes_count; i++)
        if (strcmp(cfg->routes[i].name, name) == 0) {
            if (found != NULL)
                return NULL;
            found = &cfg->routes[i];
        }
    return found;
}

/* The route's k-th rate limiter: the one of the generation in force when a route of that name
 * has a limit with the same settings at the same place there (p->gen is still that generation
 * while the new one is built; a name given to several routes in either file is not matched),
 * so a reload does not refill the buckets; else a new one, its buckets full. */
static int rl_init(keel__pgen_t *gen, keel__proute_t *rt, uint32_t k, keel_errmsg_t *msg)
{
    keel_proxy_t *p = gen->p;
    const keel_proxy_route_t *r = rt->cfg;
    const keel_proxy_ratelimit_t *lim = &r->ratelimits[k];
    const keel__pgen_t *old = p->gen;
    const keel_proxy_route_t *o = old != NULL ? only_route(old->cfg, r->name) : NULL;
    if (o != NULL && only_route(gen->cfg, r->name) == r && k < o->ratelimits_count &&
        same_ratelimit(&o->ratelimits[k], lim)) {
        keel__prl_t *rl = old->routes[o - old->cfg->routes].rl[k];
        __atomic_add_fetch(&rl->refs, 1, __ATOMIC_RELAXED);
        rt->rl[k] = rl;
        return 0;
    }
    keel__prl_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "route %s: rate_limit", r->name);
    keel_ratelimit_keyed_config_t kc;
    keel_ratelimit_keyed_config_default(&kc);
    kc.bucket.tokens_per_period = lim->requests_per_s;
    kc.bucket.period_ms = 1000;
    kc.bucket.burst = lim->burst;
    kc.keys_max = lim->keys_max;
    kc.idle_ms = 0;
    int err = keel_ratelimit_keyed_init(&rl->rl, &kc, msg);
    if (err != 0) {
        free(rl);
        return keel_errf(msg, err, "route %s: rate_limit: %s", r->name, msg->text);
    }
    pthread_mutex_init(&rl->mu, NULL);
    rl->refs = 1;
    rl->now_max_ms = keel_loop_now_ms(p->loop);
    rt->rl[k] = rl;
    return 0;
}

static int route_init(keel__pgen_t *gen, keel__proute_t *rt, uint32_t idx, keel_errmsg_t *msg)
{
    keel_proxy_t *p = gen->p;
    const keel_proxy_route_t *r = &gen->cfg->routes[idx];
    rt->cfg = r;
    pthread_mutex_init(&rt->mu, NULL);
    rt->mu_on = true;
    keel_retry_config_t rc;
    keel_retry_config_default(&rc);
    rc.attempts_max = r->retry.attempts_max;
    rc.backoff_base_ms = r->retry.backoff_base_ms;
    rc.backoff_cap_ms = r->retry.backoff_cap_ms;
    rc.jitter = KEEL_RETRY_JITTER_FULL;
    rc.per_try_timeout_ms = r->per_try_timeout_ms;
    /* the proxy decides which outcomes are retryable (route.retry_on and statuses) and hands
     * core/retry only those, so it accepts every class */
    rc.retry_on = KEEL_RETRY_ON_CONNECT_FAILURE | KEEL_RETRY_ON_RESET | KEEL_RETRY_ON_TIMEOUT |
                  KEEL_RETRY_ON_5XX | KEEL_RETRY_ON_GATEWAY_ERROR | KEEL_RETRY_ON_503;
    rc.idempotent_only = r->retry.idempotent_only;
    rc.budget_pct = 0; /* the budget is Envoy's concurrency budget, in route.c */
    int err = keel_retry_init(&rt->retry, &rc, msg);
    if (err != 0)
        return keel_errf(msg, err, "route %s: %s", r->name, msg->text);
    for (uint32_t k = 0; k < r->ratelimits_count; k++)
        if ((err = rl_init(gen, rt, k, msg)) != 0)
            return err;
    char lab[KEEL_METRICS_LABELS_BYTES_MAX - 32];
    keel__proxy_labels_for(lab, sizeof(lab), "route", r->name);
    keel_metrics_t *m = p->metrics;
    rt->m_requests =
        keel_metrics_counter(m, "keel_proxy_requests_total", "Requests matched to the route.", lab);
    rt->m_rate_limited = keel_metrics_counter(m, "keel_proxy_rate_limited_total",
                                              "Requests answered 429 by the rate limit.", lab);
    rt->m_auth_refused =
        keel_metrics_counter(m, "keel_proxy_jwt_refused_total",
                             "Requests answered 401: a missing, malformed or refused JWT.", lab);
    static const char *const upgrade_outcomes[3] = {"switched", "refused", "failed"};
    for (int k = 0; r->upgrades_count > 0 && k < 3; k++) {
        char l2[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(l2, sizeof(l2), "%s,outcome=\"%s\"", lab, upgrade_outcomes[k]);
        rt->m_upgrades[k] = keel_metrics_counter(
            m, "keel_proxy_upgrades_total",
            "Upgrade requests: switched (a tunnel opened), refused by the upstream (another "
            "status), failed (no upstream answer).",
            l2);
    }
    _Static_assert(KEEL__CORS_ORIGIN_ALLOWED == KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED + 1,
                   "m_cors: the preflight verdicts, then the other requests' outcomes");
    static const char *const cors_outcomes[KEEL__CORS_OUTCOMES] = {"preflight",
                                                                   "refused-origin",
                                                                   "refused-method",
                                                                   "refused-headers",
                                                                   "private-network-not-allowed",
                                                                   "allowed-origin",
                                                                   "other-origin"};
    for (int k = 0; r->cors != NULL && k < KEEL__CORS_OUTCOMES; k++) {
        char l2[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(l2, sizeof(l2), "%s,outcome=\"%s\"", lab, cors_outcomes[k]);
        rt->m_cors[k] = keel_metrics_counter(
            m, "keel_proxy_cors_total",
            "CORS: preflights answered (with or without a private network grant asked for) and "
            "refused, other requests by whether their Origin is allowed.",
            l2);
    }
    for (int k = 0; k < 6; k++) {
        char l2[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(l2, sizeof(l2), "%s,class=\"%s\"", lab, keel__proxy_class_names[k]);
        rt->m_class[k] = keel_metrics_counter(m, "keel_proxy_responses_total",
                                              "Responses to clients by status class.", l2);
    }
    rt->m_duration = keel_metrics_histogram(m, "keel_proxy_request_duration_seconds",
                                            "From the request head to the response queued in full.",
                                            lab, NULL, 0);
    return keel__rollout_init(gen, rt, msg);
}

static void on_sweep(keel_timer_t *t, void *data)
{
    keel_proxy_t *p = data;
    keel_ms_t now = keel_loop_now_ms(p->loop);
    keel__proxy_sweep_pool(p, now);
    keel__tracer_tick(p, now);
    keel__pgen_t *gen = p->gen;
    if (p->wid == 0) /* once, on worker 0: the rollouts' schedules and verdicts */
        keel__rollout_sweep(p, now);
    for (uint32_t c = 0; p->wid == 0 && c < gen->cfg->clusters_count; c++)
        if (gen->cfg->clusters[c].outlier_enabled) { /* once, on worker 0 */
            keel__pcluster_t *cl = gen->clusters[c];
            keel__cl_lock(cl);
            keel_outlier_tick(&cl->outlier, keel__shared_now(&cl->now_max_ms, now));
            keel__cl_unlock(cl);
        }
}

/* ---- generations ------------------------------------------------------------------------- */

static void gen_free(keel__pgen_t *g)
{
    assert(g->refs == 0);
    for (uint32_t c = 0; g->clusters != NULL && c < g->cfg->clusters_count; c++)
        if (g->clusters[c] != NULL)
            keel__cluster_unref(g->clusters[c]);
    for (uint32_t r = 0; g->routes != NULL && r < g->cfg->routes_count; r++) {
        for (uint32_t k = 0; k < KEEL_PROXY_ROUTE_RATE_LIMITS_MAX; k++)
            if (g->routes[r].rl[k] != NULL)
                rl_unref(g->routes[r].rl[k]);
        if (g->routes[r].mu_on)
            pthread_mutex_destroy(&g->routes[r].mu);
    }
    free(g->clusters);
    free(g->routes);
    keel_proxy_auth_free(&g->keys);
    keel_proxy_tls_free(&g->tls);
    keel_proxy_config_free(g->cfg);
    free(g->cfg);
    free(g->text);
    free(g);
}

void keel__gen_ref(keel__pgen_t *g)
{
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

/* The last reference frees the generation, on whichever worker drops it: by then it is retired
 * (each worker's current generation holds a reference) and its clusters' timers and registry
 * queries -- worker 0's handles -- hold references to the clusters, not to it. */
void keel__gen_unref(keel__pgen_t *g)
{
    uint64_t left = __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
    assert(left != UINT64_MAX);
    if (left == 0)
        gen_free(g);
}

/* Whether cl serves the current generation (other than g itself). */
static bool in_current(keel_proxy_t *p, keel__pgen_t *g, keel__pcluster_t *cl)
{
    if (p->gen == NULL || p->gen == g || p->stopping)
        return false;
    for (uint32_t c = 0; c < p->gen->cfg->clusters_count; c++)
        if (p->gen->clusters[c] == cl)
            return true;
    return false;
}

static void gen_retire(keel__pgen_t *g)
{
    keel_proxy_t *p = g->p;
    assert(!g->retired && p->wid == 0);
    g->retired = true;
    keel__jwks_stop(g);
    for (uint32_t c = 0; g->clusters != NULL && c < g->cfg->clusters_count; c++) {
        keel__pcluster_t *cl = g->clusters[c];
        if (cl == NULL || cl->retired || in_current(p, g, cl))
            continue; /* carried over to the current generation: it keeps its state */
        keel__cluster_retire(cl);
    }
}

/* The TLS contexts a new generation loaded go in force: the listeners' stay in the generation
 * (new connections take theirs from it), each TLS cluster gets its own, replacing the one it had
 * when the cluster is carried over (so a reload reads a changed ca_file again). */
static void gen_tls_commit(keel__pgen_t *g)
{
    keel_proxy_t *p = g->p;
    for (uint32_t i = 0; i < g->cfg->listeners_count; i++) {
        const keel_proxy_listener_t *l = &g->cfg->listeners[i];
        if (!l->tls.enabled)
            continue;
        char lab[KEEL_METRICS_LABELS_BYTES_MAX - 32];
        keel__proxy_labels_for(lab, sizeof(lab), "listener", l->name ? l->name : l->address);
        g->m_tls_failed[i] = keel_metrics_counter(
            p->metrics, "keel_proxy_tls_handshake_failures_total",
            "TLS handshakes with clients that failed or timed out, per listener.", lab);
    }
    for (uint32_t c = 0; c < g->cfg->clusters_count; c++) {
        SSL_CTX *ctx = g->tls.clusters[c];
        if (ctx == NULL)
            continue;
        keel__pcluster_t *cl = g->clusters[c];
        g->tls.clusters[c] = NULL;
        keel__cl_lock(cl);
        SSL_CTX *old = cl->tls_ctx;
        cl->tls_ctx = ctx;
        keel__cl_unlock(cl);
        SSL_CTX_free(old); /* connections made from it hold their own references */
    }
}

/* Builds a generation from a parsed config, its keys and TLS contexts (all taken; keys NULL:
 * both loaded here) and its text (copied). */
static int gen_build(keel_proxy_t *p, keel_proxy_config_t *cfg, keel_proxy_keys_t *keys,
                     keel_proxy_tls_t *tls, const char *text, size_t len, keel__pgen_t **out,
                     keel_errmsg_t *msg)
{
    keel__pgen_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        if (tls != NULL)
            keel_proxy_tls_free(tls);
        if (keys != NULL)
            keel_proxy_auth_free(keys);
        keel_proxy_config_free(cfg);
        free(cfg);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    }
    g->p = p;
    g->cfg = cfg;
    g->refs = 1; /* the caller's */
    if (keys != NULL) {
        g->keys = *keys;
        g->tls = *tls;
    } else {
        keel_proxy_errors_t *errs = calloc(1, sizeof(*errs));
        bool keys_ok =
            errs != NULL && keel_proxy_auth_load(cfg, &g->keys, errs, keel_rand_u64(&p->rand)) == 0;
        if (keys_ok && keel_proxy_tls_load(cfg, &g->tls, errs) != 0) {
            keel_proxy_auth_free(&g->keys);
            keys_ok = false;
        }
        if (!keys_ok) {
            int rc = errs == NULL ? keel_errf(msg, KEEL_ENOMEM, "out of memory")
                                  : keel_errf(msg, KEEL_EINVAL, "line %d: %s", errs->e[0].line,
                                              errs->e[0].text);
            free(errs);
            keel_proxy_config_free(cfg);
            free(cfg);
            free(g);
            return rc;
        }
        free(errs);
    }
    g->text = malloc(len + 1);
    g->clusters = calloc(cfg->clusters_count ? cfg->clusters_count : 1, sizeof(*g->clusters));
    g->routes = calloc(cfg->routes_count ? cfg->routes_count : 1, sizeof(*g->routes));
    int rc = 0;
    if (g->text == NULL || g->clusters == NULL || g->routes == NULL) {
        rc = keel_errf(msg, KEEL_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(g->text, text, len);
    g->text[len] = 0;
    g->version = keel_crc32c(0, text, len);
    g->req_lim = (keel_h1_limits_t){cfg->limits.uri_bytes_max, cfg->limits.header_bytes_max,
                                    cfg->limits.header_count_max};
    g->resp_lim = (keel_h1_limits_t){cfg->limits.uri_bytes_max, cfg->limits.header_bytes_max,
                                     KEEL_H1_HEADERS_CEILING};
    for (uint32_t c = 0; c < cfg->clusters_count; c++) {
        /* an unchanged cluster is shared with the current generation, state and all */
        keel__pcluster_t *same = NULL;
        for (uint32_t k = 0; p->gen != NULL && k < p->gen->cfg->clusters_count && !same; k++)
            if (keel__cluster_same(p->gen->clusters[k]->cfg, &cfg->clusters[c]))
                same = p->gen->clusters[k];
        if (same != NULL)
            keel__cluster_ref(same);
        else if ((rc = keel__cluster_new(p, &cfg->clusters[c], &same, msg)) != 0)
            goto fail;
        g->clusters[c] = same;
    }
    for (uint32_t r = 0; r < cfg->routes_count; r++)
        if ((rc = route_init(g, &g->routes[r], r, msg)) != 0)
            goto fail;
    if ((rc = keel__jwks_start(g, msg)) != 0)
        goto fail;
    gen_tls_commit(g);
    *out = g;
    return 0;
fail:
    gen_retire(g); /* closes the health-check timers it started */
    keel__gen_unref(g);
    return rc;
}

/* ---- start, reload and stop -------------------------------------------------------------- */

static void proxy_free(keel_proxy_t *p)
{
    keel__pgen_t *g = p->gen;
    p->gen = NULL;
    if (g != NULL) /* the exchanges' references went with the closed handles */
        keel__gen_unref(g);
    if (p->wid == 0)
        keel_metrics_free(p->metrics);
    free(p->tls_rbuf);
    void (*done)(keel_proxy_t *, void *) = p->done;
    void *done_data = p->done_data;
    free(p);
    if (done != NULL)
        done(NULL, done_data);
}

void keel__proxy_handle_closed(keel_proxy_t *p)
{
    assert(p->handles_open > 0);
    p->handles_open--;
    if (p->stopping && p->handles_open == 0)
        proxy_free(p);
}

static void listener_closed(uv_handle_t *h)
{
    keel__plistener_t *l = h->data;
    keel__proxy_handle_closed(l->p);
}

static void timer_closed(keel_timer_t *t)
{
    keel_proxy_t *p = t->data;
    keel__proxy_handle_closed(p);
}

static void admin_closed(keel_http_server_t *srv, void *data)
{
    keel__proxy_handle_closed(data);
}

static void hc_closed(keel_http_client_t *cli, void *data)
{
    keel__proxy_handle_closed(data);
}

void keel_proxy_shutdown(keel_proxy_t *p, void (*done)(keel_proxy_t *p, void *data), void *data)
{
    if (p->stopping)
        return;
    if (p->wid == 0)
        keel__workers_stop(p); /* first: their exchanges hold shared clusters */
    p->stopping = true;
    p->done = done;
    p->done_data = data;
    p->handles_open++; /* held until every close below has been started */
    for (uint32_t i = 0; i < KEEL_PROXY_LISTENERS_MAX; i++)
        if (p->listeners[i].open) {
            p->listeners[i].open = false;
            uv_close((uv_handle_t *)&p->listeners[i].tcp, listener_closed);
        }
    keel__proxy_close_all(p);
    p->sweep.data = p;
    keel_timer_close(&p->sweep, timer_closed);
    if (p->wid != 0 && p->gen != NULL) /* worker 0 retires the generation for all */
        for (uint32_t c = 0; c < p->gen->cfg->clusters_count; c++)
            keel__proxy_close_idle(p, p->gen->clusters[c], false);
    if (p->wid == 0 && p->gen != NULL && !p->gen->retired)
        gen_retire(p->gen); /* stays p->gen (freed last) so late callbacks can read it */
    if (p->admin_on) {
        p->admin_on = false;
        keel_http_server_shutdown(&p->admin, admin_closed, p);
    }
    if (p->hc_on) {
        p->hc_on = false;
        keel_http_client_close(&p->hc, hc_closed, p);
    }
    if (p->agg_on) { /* after close_all: the exchanges have cancelled their calls */
        p->agg_on = false;
        keel_http_client_close(&p->agg_client, hc_closed, p);
    }
    if (p->jwks_on) { /* after gen_retire: the fetchers have cancelled their calls */
        p->jwks_on = false;
        keel_http_client_close(&p->jwks_cli, hc_closed, p);
    }
    keel__tracer_close(p); /* after close_all: the last exchanges' spans are queued (dropped) */
    keel__proxy_handle_closed(p);
}

void keel_proxy_shutdown_hook(void *p)
{
    keel_proxy_shutdown(p, NULL, NULL);
}

static bool same_addresses(const keel_proxy_config_t *a, const keel_proxy_config_t *b)
{
    if (a->listeners_count != b->listeners_count ||
        (a->admin_address == NULL) != (b->admin_address == NULL) ||
        (a->admin_address && strcmp(a->admin_address, b->admin_address) != 0))
        return false;
    for (uint32_t i = 0; i < a->listeners_count; i++)
        if (strcmp(a->listeners[i].address, b->listeners[i].address) != 0)
            return false;
    return true;
}

uint32_t keel__proxy_workers_wanted(const keel_proxy_config_t *cfg)
{
    if (cfg->workers > 0)
        return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN); /* nginx's worker_processes auto */
    return n < 1 ? 1u : n > (long)KEEL_PROXY_WORKERS_MAX ? KEEL_PROXY_WORKERS_MAX : (uint32_t)n;
}

static int ensure_health_client(keel_proxy_t *p, const keel_proxy_config_t *cfg, keel_errmsg_t *msg)
{
    for (uint32_t c = 0; c < cfg->clusters_count && !p->hc_on; c++)
        if (cfg->clusters[c].health.enabled && !cfg->clusters[c].health.tcp) {
            keel_http_client_config_t hc = keel_http_client_config_default();
            int rc = keel_http_client_init(&p->hc, p->loop, &hc, msg);
            if (rc != 0)
                return rc;
            p->hc_on = true;
            p->handles_open++;
        }
    int rc = keel__jwks_ensure_client(p, cfg, msg);
    return rc != 0 ? rc : keel__proxy_ensure_agg_client(p, cfg, msg);
}

/* The client of aggregate routes' parts, once a config has one (each worker its own), and the
 * tracer's export client once it has tracing. */
int keel__proxy_ensure_agg_client(keel_proxy_t *p, const keel_proxy_config_t *cfg,
                                  keel_errmsg_t *msg)
{
    int trc = keel__tracer_ensure(p, cfg, msg);
    if (trc != 0)
        return trc;
    for (uint32_t r = 0; r < cfg->routes_count && !p->agg_on; r++)
        if (cfg->routes[r].aggregate != NULL) {
            keel_http_client_config_t ac = keel_http_client_config_default();
            ac.limits.body_bytes_max = KEEL_PROXY_AGG_PART_BYTES_CEILING;
            int rc = keel_http_client_init(&p->agg_client, p->loop, &ac, msg);
            if (rc != 0)
                return rc;
            p->agg_on = true;
            p->handles_open++;
        }
    return 0;
}

int keel_proxy_reload(keel_proxy_t *p, const char *text, size_t len, keel_proxy_errors_t *errs,
                      keel_errmsg_t *msg)
{
    memset(errs, 0, sizeof(*errs));
    msg->text[0] = 0;
    if (p->stopping)
        return keel_errf(msg, KEEL_ECLOSED, "the proxy is stopping");
    keel_proxy_config_t *cfg = malloc(sizeof(*cfg));
    if (cfg == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    int rc = keel_proxy_config_parse(text, len, cfg, errs);
    if (rc != 0) {
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, rc, "the new config has %u errors", errs->count + errs->dropped);
    }
    if (!same_addresses(cfg, p->gen->cfg)) {
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, KEEL_EINVAL,
                         "listener or admin addresses changed: a restart is needed for that");
    }
    if (cfg->workers != 0 && cfg->workers != p->workers_n) { /* absent: the count in force */
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, KEEL_EINVAL, "workers changed: a restart is needed for that");
    }
    if (!keel_sidecar_same(&cfg->sidecar, &p->gen->cfg->sidecar)) {
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, KEEL_EINVAL, "the sidecar section changed: a restart is needed");
    }
    keel__pgen_t *g;
    if ((rc = ensure_health_client(p, cfg, msg)) != 0) {
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return rc;
    }
    keel_proxy_keys_t keys; /* the JWKS files are read again: a reload rotates keys */
    keel_proxy_tls_t tls;   /* and the certificates, keys and CA files */
    if (keel_proxy_auth_load(cfg, &keys, errs, keel_rand_u64(&p->rand)) != 0) {
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, KEEL_EINVAL, "the new config has %u errors",
                         errs->count + errs->dropped);
    }
    if (keel_proxy_tls_load(cfg, &tls, errs) != 0) {
        keel_proxy_auth_free(&keys);
        keel_proxy_config_free(cfg);
        free(cfg);
        keel_counter_inc(p->m_reloads_failed);
        return keel_errf(msg, KEEL_EINVAL, "the new config has %u errors",
                         errs->count + errs->dropped);
    }
    if ((rc = gen_build(p, cfg, &keys, &tls, text, len, &g, msg)) != 0) {
        keel_counter_inc(p->m_reloads_failed);
        return rc;
    }
    keel__pgen_t *old = p->gen;
    p->gen = g;
    gen_retire(old);
    keel__workers_publish(p); /* each worker swaps on its loop; in-flight requests keep old */
    keel__gen_unref(old);
    keel_counter_inc(p->m_reloads_ok);
    return 0;
}

int keel_proxy_start(keel_loop_t *loop, keel_proxy_config_t *cfg, const char *text, size_t len,
                     keel_proxy_t **out, keel_errmsg_t *msg)
{
    keel_proxy_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        keel_proxy_config_free(cfg);
        free(cfg);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    }
    p->loop = loop;
    p->main = p;
    p->workers_n = keel__proxy_workers_wanted(cfg);
    keel_list_init(&p->dconns);
    p->metrics = keel_metrics_new();
    keel_timer_init(loop, &p->sweep);
    p->handles_open++;
    keel_rand_seed(&p->rand, (uint64_t)keel_clock_now_ns() ^ ((uint64_t)getpid() << 32));
    snprintf(p->via_line, sizeof(p->via_line), "Via: 1.1 %s\r\n", cfg->via);
    int rc = 0;
    if (p->metrics == NULL) {
        keel_proxy_config_free(cfg);
        free(cfg);
        rc = keel_errf(msg, KEEL_ENOMEM, "out of memory");
        goto fail;
    }
    p->m_conns_total = keel_metrics_counter(p->metrics, "keel_proxy_connections_total",
                                            "Client connections accepted.", NULL);
    p->m_conns_open = keel_metrics_gauge(p->metrics, "keel_proxy_connections_active",
                                         "Client connections open.", NULL);
    p->m_tunnels_open = keel_metrics_gauge(p->metrics, "keel_proxy_upgrade_tunnels_active",
                                           "Upgraded connections (tunnels) open.", NULL);
    p->m_no_route = keel_metrics_counter(p->metrics, "keel_proxy_no_route_total",
                                         "Requests no route matched (404).", NULL);
    p->m_bad_requests =
        keel_metrics_counter(p->metrics, "keel_proxy_bad_requests_total",
                             "Requests refused as malformed or over a limit.", NULL);
    p->m_reloads_ok = keel_metrics_counter(p->metrics, "keel_proxy_reloads_total",
                                           "Config reloads.", "result=\"ok\"");
    p->m_reloads_failed = keel_metrics_counter(p->metrics, "keel_proxy_reloads_total",
                                               "Config reloads.", "result=\"refused\"");
    p->m_tr_recorded =
        keel_metrics_counter(p->metrics, "keel_proxy_tracing_spans_recorded_total",
                             "Spans of sampled requests and their upstream tries.", NULL);
    p->m_tr_exported = keel_metrics_counter(p->metrics, "keel_proxy_tracing_spans_exported_total",
                                            "Spans the collector accepted (2xx).", NULL);
    static const char tr_dropped[] = "keel_proxy_tracing_spans_dropped_total";
    static const char tr_dropped_help[] = "Spans not exported, by reason.";
    p->m_tr_dropped_full =
        keel_metrics_counter(p->metrics, tr_dropped, tr_dropped_help, "reason=\"queue_full\"");
    p->m_tr_dropped_failed =
        keel_metrics_counter(p->metrics, tr_dropped, tr_dropped_help, "reason=\"export_failed\"");
    p->m_tr_dropped_off =
        keel_metrics_counter(p->metrics, tr_dropped, tr_dropped_help, "reason=\"tracing_off\"");
    p->m_tr_failures =
        keel_metrics_counter(p->metrics, "keel_proxy_tracing_export_failures_total",
                             "Batches the collector did not accept (error or non-2xx).", NULL);
    if ((rc = ensure_health_client(p, cfg, msg)) != 0) {
        keel_proxy_config_free(cfg);
        free(cfg);
        goto fail;
    }
    if ((rc = gen_build(p, cfg, NULL, NULL, text, len, &p->gen, msg)) != 0)
        goto fail;
    char wl[32];
    snprintf(wl, sizeof(wl), "worker=\"0\"");
    p->m_worker_conns = keel_metrics_counter(p->metrics, "keel_proxy_worker_connections_total",
                                             "Client connections accepted, per worker.", wl);
    if ((rc = keel__workers_listen(p, msg)) != 0)
        goto fail;
    if (p->gen->cfg->admin_address != NULL && (rc = keel__proxy_admin_start(p, msg)) != 0) {
        rc = keel_errf(msg, rc, "admin %s: %s", p->gen->cfg->admin_address, msg->text);
        goto fail;
    }
    keel_timer_start(&p->sweep, KEEL_PROXY_SWEEP_MS, KEEL_PROXY_SWEEP_MS, on_sweep, p);
    if ((rc = keel__workers_start(p, msg)) != 0)
        goto fail;
    *out = p;
    return 0;
fail:
    keel_proxy_shutdown(p, NULL, NULL); /* frees p once the handles have closed */
    return rc;
}

int keel__proxy_worker_init(keel_proxy_t *w, keel_proxy_t *main, keel_loop_t *loop, uint32_t wid,
                            keel_errmsg_t *msg)
{
    w->loop = loop;
    w->main = main;
    w->wid = wid;
    w->workers_n = main->workers_n;
    keel_list_init(&w->dconns);
    w->metrics = main->metrics; /* one registry: /metrics sums over workers by construction */
    w->m_conns_total = main->m_conns_total;
    w->m_conns_open = main->m_conns_open;
    w->m_tunnels_open = main->m_tunnels_open;
    w->m_no_route = main->m_no_route;
    w->m_bad_requests = main->m_bad_requests;
    w->m_reloads_ok = main->m_reloads_ok;
    w->m_reloads_failed = main->m_reloads_failed;
    w->m_tr_recorded = main->m_tr_recorded;
    w->m_tr_exported = main->m_tr_exported;
    w->m_tr_dropped_full = main->m_tr_dropped_full;
    w->m_tr_dropped_failed = main->m_tr_dropped_failed;
    w->m_tr_dropped_off = main->m_tr_dropped_off;
    w->m_tr_failures = main->m_tr_failures;
    char wl[32];
    snprintf(wl, sizeof(wl), "worker=\"%u\"", wid);
    w->m_worker_conns = keel_metrics_counter(w->metrics, "keel_proxy_worker_connections_total",
                                             "Client connections accepted, per worker.", wl);
    keel_rand_seed(&w->rand, keel_rand_u64(&main->rand) ^ wid);
    memcpy(w->via_line, main->via_line, sizeof(w->via_line));
    w->gen = main->gen;
    keel__gen_ref(w->gen);
    keel_timer_init(loop, &w->sweep);
    w->handles_open++;
    keel_timer_start(&w->sweep, KEEL_PROXY_SWEEP_MS, KEEL_PROXY_SWEEP_MS, on_sweep, w);
    return keel__proxy_ensure_agg_client(w, w->gen->cfg, msg);
}

int keel_proxy_listener_port(const keel_proxy_t *p, uint32_t i)
{
    if (i >= p->listeners_count || !p->listeners[i].open)
        return KEEL_ENOTFOUND;
    return p->listeners[i].port;
}

int keel_proxy_admin_port(const keel_proxy_t *p)
{
    return p->admin_on ? p->admin_port : KEEL_ENOTFOUND;
}

bool keel_proxy_reads_keys_at_load(const keel_proxy_t *p)
{
    if (p->gen != NULL && keel_proxy_tls_reads_files(p->gen->cfg))
        return true;
    for (uint32_t i = 0; p->gen != NULL && i < p->gen->cfg->jwt_providers_count; i++) {
        const keel_proxy_jwt_provider_t *pv = &p->gen->cfg->jwt_providers[i];
        if (pv->jwks_file != NULL || pv->remote_jwks.enabled)
            return true;
    }
    return false;
}
