/* proxy_jwks.c - keel proxy's remote_jwks: each such JWT provider's keys fetched from a cluster
 * when a generation starts and every cache_duration_ms, put in force for every worker. */
#include "proxy/proxy_int.h"

#include "base/log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * One fetcher per remote_jwks provider of a generation, on worker 0's loop (as health checks
 * are): a timer, and at most one GET in flight through p->jwks_cli -- the proxy's HTTP client
 * (runtime/http_client.h), the one aggregate parts and health checks use, with its body limit
 * set to KEEL_PROXY_REMOTE_JWKS_BYTES_MAX -- to a host the cluster's balancer picks (healthy,
 * not ejected). A 200 whose body is a valid JWKS becomes a new key set (auth.h, keyset) that
 * replaces the provider's keys in force under the slot's mutex; every worker takes its next
 * request's keys from that slot, so they all see one set, and a request that took the old set
 * finishes with it. Anything else -- no host, a connection error, the timeout, another status,
 * a body over the limit, a document that is not a JWKS -- keeps the keys in force, is logged
 * and counted (keel_proxy_jwks_fetches_total{provider,result}) and is tried again after a
 * backoff (keel_proxy_jwks_next_ms). The fetcher holds a reference to its generation until its
 * timer has closed; retiring the generation cancels the fetch in flight.
 */
struct keel__pjwks {
    keel__pgen_t *gen; /* referenced */
    uint32_t provider;
    const keel_proxy_remote_jwks_t *rj;
    keel__pcluster_t *cl; /* the generation's (referenced by it) */
    keel__phost_t *host;  /* of the fetch in flight, counted in the balancer */
    keel_timer_t timer;
    uint64_t call_id;
    bool inflight, stopped;
    uint32_t failures; /* in a row */
    keel_counter_t *m_ok, *m_failed, *m_invalid;
    keel_gauge_t *g_keys;
};

static void fetch(keel_timer_t *t, void *data);

static void schedule(keel__pjwks_t *f)
{
    keel_proxy_t *p = f->gen->p;
    keel_ms_t wait = keel_proxy_jwks_next_ms(f->rj, f->failures, keel_rand_u64(&p->rand));
    keel_timer_start(&f->timer, wait, 0, fetch, f);
}

static void fetch_failed(keel__pjwks_t *f, keel_counter_t *m, const char *why, const char *detail)
{
    f->failures++;
    keel_counter_inc(m);
    keel_log_warn("proxy: remote_jwks fetch failed, the keys in force stay",
                  KF_STR("provider", f->gen->cfg->jwt_providers[f->provider].name),
                  KF_STR("cluster", f->cl->cfg->name), KF_STR("error", why),
                  KF_STR("detail", detail), KF_INT("failures", f->failures));
}

/* The host of the fetch that ended leaves the balancer's count. */
static void host_done(keel__pjwks_t *f)
{
    keel__pcluster_t *cl = f->cl;
    if (f->host == NULL)
        return;
    keel__cl_lock(cl);
    keel_balance_done(&cl->lb, f->host->idx);
    f->host->active--;
    keel__cl_unlock(cl);
    f->host = NULL;
}

static void fetch_done(int err, const keel_http_msg_t *resp, void *data)
{
    keel__pjwks_t *f = data;
    keel_proxy_t *p = f->gen->p;
    f->inflight = false;
    host_done(f);
    if (err == KEEL_ECANCELED || f->stopped || p->stopping)
        return; /* retired: no new keys, no next fetch */
    char detail[32];
    if (err != 0) {
        fetch_failed(f, f->m_failed, keel_strerror(err), "no response");
    } else if (resp->status != 200) {
        snprintf(detail, sizeof(detail), "status %d", resp->status);
        fetch_failed(f, f->m_failed, "the JWKS server did not answer 200", detail);
    } else {
        keel_proxy_keyset_t *ks = NULL;
        keel_errmsg_t msg = {0};
        if (keel_proxy_keyset_new((const char *)resp->body, resp->body_len, keel_rand_u64(&p->rand),
                                  &ks, &msg) != 0) {
            fetch_failed(f, f->m_invalid, "not a valid JWKS", msg.text);
        } else {
            size_t n = ks->set.n;
            keel_proxy_keys_replace(&f->gen->keys, f->provider, ks); /* every worker's next */
            if (f->failures > 0 ||
                __atomic_load_n(&f->g_keys->value, __ATOMIC_RELAXED) != (int64_t)n)
                keel_log_info("proxy: remote_jwks keys in force",
                              KF_STR("provider", f->gen->cfg->jwt_providers[f->provider].name),
                              KF_INT("keys", n));
            f->failures = 0;
            keel_counter_inc(f->m_ok);
            keel_gauge_set(f->g_keys, (int64_t)n);
        }
    }
    schedule(f);
}

static void fetch(keel_timer_t *t, void *data)
{
    keel__pjwks_t *f = data;
    keel_proxy_t *p = f->gen->p;
    keel__pcluster_t *cl = f->cl;
    if (f->stopped || p->stopping || f->inflight)
        return;
    uint32_t idx;
    keel__cl_lock(cl);
    keel_ms_t snow = keel__shared_now(&cl->now_max_ms, keel_loop_now_ms(p->loop));
    int picked = keel_balance_pick_other(&cl->lb, 0, snow, 0, KEEL_PROXY_REPICKS_MAX, &idx);
    if (picked == 0) { /* counted before the call: the slot cannot be reused meanwhile */
        keel_balance_start(&cl->lb, idx);
        cl->hosts[idx].active++;
    }
    keel__cl_unlock(cl);
    if (picked != 0) {
        fetch_failed(f, f->m_failed, "no available host", cl->cfg->name);
        schedule(f);
        return;
    }
    f->host = &cl->hosts[idx];
    static const keel_http_header_t accept = {
        .name = "Accept", .name_len = 6, .value = "application/json", .value_len = 16};
    keel_http_client_request_t rq = {.method = HTTP_GET,
                                     .host_port = f->host->address,
                                     .target = f->rj->path,
                                     .headers = &accept,
                                     .headers_count = 1,
                                     .timeout_ms = f->rj->timeout_ms};
    f->inflight = true;
    int rc = keel_http_client_request(&p->jwks_cli, &rq, fetch_done, f, &f->call_id);
    if (rc != 0) { /* the callback will not run */
        f->inflight = false;
        host_done(f);
        fetch_failed(f, f->m_failed, keel_strerror(rc), "not sent");
        schedule(f);
    }
}

/* The keys the generation in force has for a provider of the same name whose remote_jwks is
 * the same: a reload keeps them until its own first fetch (no 401s meanwhile). */
static keel_proxy_keyset_t *keys_in_force(keel_proxy_t *p, const keel_proxy_jwt_provider_t *pv)
{
    keel__pgen_t *old = p->gen;
    for (uint32_t i = 0; old != NULL && i < old->cfg->jwt_providers_count; i++) {
        const keel_proxy_jwt_provider_t *o = &old->cfg->jwt_providers[i];
        const keel_proxy_remote_jwks_t *a = &o->remote_jwks, *b = &pv->remote_jwks;
        if (strcmp(o->name, pv->name) == 0 && a->enabled &&
            strcmp(a->cluster_name, b->cluster_name) == 0 && strcmp(a->path, b->path) == 0)
            return keel_proxy_keys_acquire(&old->keys, i);
    }
    return NULL;
}

static keel__pjwks_t *fetcher_new(keel__pgen_t *g, uint32_t i)
{
    keel_proxy_t *p = g->p;
    const keel_proxy_jwt_provider_t *pv = &g->cfg->jwt_providers[i];
    keel__pjwks_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->gen = g;
    keel__gen_ref(g);
    f->provider = i;
    f->rj = &pv->remote_jwks;
    f->cl = g->clusters[pv->remote_jwks.cluster];
    char lab[KEEL_METRICS_LABELS_BYTES_MAX - 32], l2[KEEL_METRICS_LABELS_BYTES_MAX];
    keel__proxy_labels_for(lab, sizeof(lab), "provider", pv->name);
    static const char name[] = "keel_proxy_jwks_fetches_total";
    static const char help[] = "remote_jwks fetches: ok (keys replaced), failed (no host, an "
                               "error, a timeout, a status other than 200), invalid (not a JWKS "
                               "or over the size limit).";
    keel_counter_t **ms[3] = {&f->m_ok, &f->m_failed, &f->m_invalid};
    static const char *const results[3] = {"ok", "failed", "invalid"};
    for (int k = 0; k < 3; k++) {
        snprintf(l2, sizeof(l2), "%s,result=\"%s\"", lab, results[k]);
        *ms[k] = keel_metrics_counter(p->metrics, name, help, l2);
    }
    f->g_keys =
        keel_metrics_gauge(p->metrics, "keel_proxy_jwks_keys",
                           "Keys in force of a remote_jwks provider (0: none fetched).", lab);
    return f;
}

int keel__jwks_start(keel__pgen_t *g, keel_errmsg_t *msg)
{
    keel_proxy_t *p = g->p;
    assert(p->wid == 0);
    for (uint32_t i = 0; i < g->cfg->jwt_providers_count; i++) {
        const keel_proxy_jwt_provider_t *pv = &g->cfg->jwt_providers[i];
        if (!pv->remote_jwks.enabled)
            continue;
        assert(p->jwks_on && pv->remote_jwks.cluster < g->cfg->clusters_count);
        keel__pjwks_t *f = fetcher_new(g, i);
        if (f == NULL || f->m_ok == NULL || f->m_failed == NULL || f->m_invalid == NULL ||
            f->g_keys == NULL) {
            if (f != NULL)
                keel__gen_unref(g);
            free(f);
            return keel_errf(msg, KEEL_ENOMEM, "jwt provider %s: out of memory", pv->name);
        }
        keel_proxy_keyset_t *kept = keys_in_force(p, pv);
        if (kept != NULL)
            keel_proxy_keys_replace(&g->keys, i, kept);
        keel_gauge_set(f->g_keys, kept != NULL ? (int64_t)kept->set.n : 0);
        keel_timer_init(p->loop, &f->timer);
        p->handles_open++;
        g->jwks[i] = f;
        keel_timer_start(&f->timer, 0, 0, fetch, f); /* at once: on the loop's next turn */
    }
    return 0;
}

static void timer_closed(keel_timer_t *t)
{
    keel__pjwks_t *f = t->data;
    keel_proxy_t *p = f->gen->p;
    keel__gen_unref(f->gen);
    free(f);
    keel__proxy_handle_closed(p);
}

void keel__jwks_stop(keel__pgen_t *g)
{
    for (uint32_t i = 0; i < KEEL_PROXY_JWT_PROVIDERS_MAX; i++) {
        keel__pjwks_t *f = g->jwks[i];
        if (f == NULL)
            continue;
        g->jwks[i] = NULL;
        f->stopped = true;
        if (f->inflight) /* its callback runs now, with KEEL_ECANCELED */
            keel_http_client_cancel(&g->p->jwks_cli, f->call_id);
        assert(!f->inflight && f->host == NULL);
        f->timer.data = f;
        keel_timer_close(&f->timer, timer_closed);
    }
}

int keel__jwks_ensure_client(keel_proxy_t *p, const keel_proxy_config_t *cfg, keel_errmsg_t *msg)
{
    for (uint32_t i = 0; i < cfg->jwt_providers_count && !p->jwks_on; i++)
        if (cfg->jwt_providers[i].remote_jwks.enabled) {
            keel_http_client_config_t hc = keel_http_client_config_default();
            hc.limits.body_bytes_max = KEEL_PROXY_REMOTE_JWKS_BYTES_MAX;
            hc.idle_per_host_max = 1; /* one fetch at a time per provider */
            int rc = keel_http_client_init(&p->jwks_cli, p->loop, &hc, msg);
            if (rc != 0)
                return rc;
            p->jwks_on = true;
            p->handles_open++;
        }
    return 0;
}
