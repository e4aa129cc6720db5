/* proxy_cluster.c - keel proxy's clusters: their objects (shared across reloads when unchanged,
 * refcounted), balancer, breaker, outlier detector and gauges, health checks, the hosts of
 * service clusters from the registry, and retiring them. */
#include "proxy/proxy_int.h"

#include "base/log.h"
#include "proxy/health.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double breaker_state_value(void *data)
{
    keel__pcluster_t *cl = data;
    if (!cl->cfg->breaker_enabled)
        return 0;
    keel__cl_lock(cl);
    double v = (double)keel_breaker_state(&cl->breaker); /* 0 closed, 1 open, 2 half-open */
    keel__cl_unlock(cl);
    return v;
}

static double hosts_available_value(void *data)
{
    keel__pcluster_t *cl = data;
    keel__cl_lock(cl);
    double v = (double)cl->lb.avail_n;
    keel__cl_unlock(cl);
    return v;
}

static double active_requests_value(void *data)
{
    keel__pcluster_t *cl = data;
    keel__cl_lock(cl);
    double v = (double)cl->active_requests;
    keel__cl_unlock(cl);
    return v;
}

const char *const keel__proxy_class_names[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

/* ---- host state: health checks and outlier ejection meet here ---------------------------- */

/* With cl->mu held (the outlier detector's callback runs inside a locked call). */
void keel__proxy_apply_state(keel__pcluster_t *cl, uint32_t idx)
{
    keel__phost_t *h = &cl->hosts[idx];
    bool ej = cl->cfg->outlier_enabled && keel_outlier_is_ejected(&cl->outlier, idx);
    if (ej && !cl->lb.ep[idx].ejected) {
        /* usable hosts of every priority level: another zone's count (balance.h) */
        uint32_t others = 0;
        for (uint32_t i = 0; i < cl->lb.n; i++)
            others += i != idx && keel_balance_usable(&cl->lb, i);
        if (others == 0) {
            /* never eject the last host that can take traffic: an outage of every host is
             * better served by trying than by answering 503 at once (Envoy's panic mode) */
            keel_log_warn("proxy: not ejecting the last available host",
                          KF_STR("cluster", cl->cfg->name), KF_STR("host", h->address));
            ej = false;
        }
    }
    keel_balance_set_state(&cl->lb, idx, h->healthy && !__atomic_load_n(&h->gone, __ATOMIC_RELAXED),
                           ej);
}

static void on_outlier_change(void *data, uint32_t idx, bool ejected, keel_ms_t now)
{
    keel__pcluster_t *cl = data;
    keel__phost_t *h = &cl->hosts[idx];
    if (ejected) {
        h->ejections++;
        keel_counter_inc(cl->m_ejections);
    }
    keel_log_info(ejected ? "proxy: host ejected" : "proxy: host returned",
                  KF_STR("cluster", cl->cfg->name), KF_STR("host", h->address));
    keel__proxy_apply_state(cl, idx);
}

static void on_breaker_transition(void *data, keel_breaker_state_t from, keel_breaker_state_t to,
                                  keel_ms_t now)
{
    keel__pcluster_t *cl = data;
    keel_log_info("proxy: circuit breaker", KF_STR("cluster", cl->cfg->name),
                  KF_STR("from", keel_breaker_state_name(from)),
                  KF_STR("to", keel_breaker_state_name(to)));
}

/* A health check's verdict (proxy/health.h: the probe and its thresholds) on host h: err 0 with the
 * status, or the error. Health checks run once, on worker 0; the verdict reaches every worker
 * through the shared balancer. */
static void hc_result_locked(keel__phost_t *h, int err, int status);

static void hc_result(keel__phost_t *h, int err, int status)
{
    keel__cl_lock(h->cl);
    hc_result_locked(h, err, status);
    keel__cl_unlock(h->cl);
}

static void hc_result_locked(keel__phost_t *h, int err, int status)
{
    keel__pcluster_t *cl = h->cl;
    int turned = keel_proxy_health_judge(&cl->cfg->health, keel_proxy_probe_passed(err, status),
                                         &h->hc_ok_run, &h->hc_fail_run, &h->healthy);
    if (turned > 0)
        keel_log_info("proxy: host healthy", KF_STR("cluster", cl->cfg->name),
                      KF_STR("host", h->address));
    else if (turned < 0)
        keel_log_warn("proxy: host unhealthy", KF_STR("cluster", cl->cfg->name),
                      KF_STR("host", h->address),
                      KF_STR("error", err ? keel_strerror(err) : "status"));
    if (turned != 0)
        keel__proxy_apply_state(cl, h->idx);
}

static void hc_done(int err, int status, void *data)
{
    keel__phost_t *h = data;
    keel__pcluster_t *cl = h->cl;
    keel_proxy_t *p = cl->p;
    bool tcp = cl->cfg->health.tcp;
    h->hc_inflight = false;
    if (!cl->retired && !p->stopping && err != KEEL_ECANCELED)
        hc_result(h, err, status);
    keel__cluster_unref(cl); /* taken when the check was sent */
    if (tcp)                 /* a TCP probe's handles are the proxy's to wait for */
        keel__proxy_handle_closed(p);
}

static void hc_tick(keel_timer_t *t, void *data)
{
    keel__pcluster_t *cl = data;
    if (cl->p->stopping || cl->retired)
        return;
    for (uint32_t i = 0; i < cl->hosts_n; i++) {
        keel__phost_t *h = &cl->hosts[i];
        if (h->hc_inflight || h->gone)
            continue;
        int rc = keel_proxy_probe(cl->p->loop, cl->p->hc_on ? &cl->p->hc : NULL, h->address,
                                  &cl->cfg->health, hc_done, h);
        if (rc == 0) {
            h->hc_inflight = true;
            keel__cluster_ref(cl); /* the host must outlive the check */
            if (cl->cfg->health.tcp)
                cl->p->handles_open++;
        } else {
            hc_result(h, rc, 0);
        }
    }
}

/* ---- setup ------------------------------------------------------------------------------- */

void keel__proxy_labels_for(char *out, size_t cap, const char *key, const char *value)
{
    char esc[KEEL_PROXY_NAME_BYTES_MAX * 2 + 8];
    if (keel_metrics_label_escape(esc, sizeof(esc), value) != 0)
        snprintf(esc, sizeof(esc), "?");
    snprintf(out, cap, "%s=\"%s\"", key, esc);
}

static bool str_eq(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* Whether two cluster configs are the same in everything but their line in the file. */
bool keel__cluster_same(const keel_proxy_cluster_t *a, const keel_proxy_cluster_t *b)
{
    if (!str_eq(a->name, b->name) || !str_eq(a->balance, b->balance) ||
        !str_eq(a->hash_header, b->hash_header) || !str_eq(a->health.path, b->health.path) ||
        !str_eq(a->service, b->service) || !str_eq(a->tag, b->tag) ||
        !str_eq(a->registry, b->registry) || !str_eq(a->zone, b->zone) ||
        !str_eq(a->tls.ca_file, b->tls.ca_file) ||
        !str_eq(a->tls.server_name, b->tls.server_name) || a->hosts_count != b->hosts_count)
        return false;
    for (uint32_t i = 0; i < a->hosts_count; i++)
        if (!str_eq(a->hosts[i].address, b->hosts[i].address) ||
            a->hosts[i].weight != b->hosts[i].weight)
            return false;
    /* the rest is numbers and flags; both structs come from zeroed memory (padding included) */
    keel_proxy_cluster_t x = *a, y = *b;
    x.name = y.name = x.balance = y.balance = x.hash_header = y.hash_header = NULL;
    x.health.path = y.health.path = NULL;
    x.service = y.service = x.tag = y.tag = x.registry = y.registry = NULL;
    x.line = y.line = 0;
    x.slow_start_line = y.slow_start_line = 0;
    x.tls.ca_file = y.tls.ca_file = x.tls.server_name = y.tls.server_name = NULL;
    x.tls.line = y.tls.line = x.tls.ca_line = y.tls.ca_line = 0;
    for (uint32_t i = 0; i < KEEL_PROXY_HOSTS_MAX; i++)
        x.hosts[i].address = y.hosts[i].address = NULL;
    return memcmp(&x, &y, sizeof(x)) == 0;
}

static void cluster_cfg_free(keel_proxy_cluster_t *c)
{
    free(c->name);
    free(c->balance);
    free(c->hash_header);
    free(c->health.path);
    free(c->service);
    free(c->tag);
    free(c->registry);
    free(c->zone);
    free(c->tls.ca_file);
    free(c->tls.server_name);
    for (uint32_t i = 0; i < c->hosts_count; i++)
        free(c->hosts[i].address);
}

static char *dup_opt(const char *s, bool *ok)
{
    char *d = s ? strdup(s) : NULL;
    *ok &= d != NULL || s == NULL;
    return d;
}

static int cluster_cfg_copy(keel_proxy_cluster_t *dst, const keel_proxy_cluster_t *src)
{
    *dst = *src;
    dst->name = strdup(src->name);
    dst->balance = strdup(src->balance);
    dst->hash_header = src->hash_header ? strdup(src->hash_header) : NULL;
    dst->health.path = src->health.path ? strdup(src->health.path) : NULL;
    bool ok = dst->name && dst->balance && (dst->hash_header || !src->hash_header) &&
              (dst->health.path || !src->health.path);
    dst->service = dup_opt(src->service, &ok);
    dst->tag = dup_opt(src->tag, &ok);
    dst->registry = dup_opt(src->registry, &ok);
    dst->zone = dup_opt(src->zone, &ok);
    dst->tls.ca_file = dup_opt(src->tls.ca_file, &ok);
    dst->tls.server_name = dup_opt(src->tls.server_name, &ok);
    for (uint32_t i = 0; i < src->hosts_count; i++)
        ok &= (dst->hosts[i].address = strdup(src->hosts[i].address)) != NULL;
    if (!ok) {
        cluster_cfg_free(dst);
        return KEEL_ENOMEM;
    }
    return 0;
}

void keel__host_forget_session(keel__phost_t *h)
{
    SSL_SESSION_free(h->tls_session);
    SSL_CTX_free(h->tls_session_ctx);
    h->tls_session = NULL;
    h->tls_session_ctx = NULL;
}

static void cluster_free(keel__pcluster_t *cl)
{
    assert(cl->refs == 0 && !cl->hc_timer_on && !cl->disc_on);
    pthread_mutex_destroy(&cl->mu);
    free(cl->pools);
    keel_balance_free(&cl->lb);
    if (cl->cfg->breaker_enabled)
        keel_breaker_free(&cl->breaker);
    if (cl->cfg->outlier_enabled)
        keel_outlier_free(&cl->outlier);
    for (uint32_t i = 0; cl->hosts != NULL && i < cl->hosts_n; i++)
        keel__host_forget_session(&cl->hosts[i]);
    free(cl->hosts);
    SSL_CTX_free(cl->tls_ctx);
    cluster_cfg_free(&cl->own);
    free(cl);
}

void keel__cluster_ref(keel__pcluster_t *cl)
{
    __atomic_add_fetch(&cl->refs, 1, __ATOMIC_RELAXED);
}

void keel__cluster_unref(keel__pcluster_t *cl)
{
    uint64_t left = __atomic_sub_fetch(&cl->refs, 1, __ATOMIC_ACQ_REL);
    assert(left != UINT64_MAX);
    if (left == 0)
        cluster_free(cl);
}

static int cluster_setup(keel_proxy_t *p, keel__pcluster_t *cl, keel_errmsg_t *msg);

/* A new cluster for config c, with one reference (the caller's generation's). */
int keel__cluster_new(keel_proxy_t *p, const keel_proxy_cluster_t *c, keel__pcluster_t **out,
                      keel_errmsg_t *msg)
{
    keel__pcluster_t *cl = calloc(1, sizeof(*cl));
    if (cl == NULL || cluster_cfg_copy(&cl->own, c) != 0) {
        free(cl);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    }
    cl->p = p;
    cl->cfg = &cl->own;
    cl->refs = 1;
    pthread_mutex_init(&cl->mu, NULL);
    int rc = cluster_setup(p, cl, msg);
    if (rc != 0) {
        cl->retired = true;
        keel__cluster_unref(cl);
        return rc;
    }
    *out = cl;
    return 0;
}

/* ---- service clusters: hosts from the registry -------------------------------------------- */

/* The slot for address: the one that has it (live or gone), else a gone slot nothing refers to
 * any more, else a fresh one; -1 when the cluster is full. */
static int slot_for(keel__pcluster_t *cl, const char *address, const bool *taken)
{
    for (uint32_t i = 0; i < cl->hosts_n; i++)
        if (strcmp(cl->hosts[i].address, address) == 0)
            return (int)i;
    for (uint32_t i = 0; i < cl->hosts_n; i++) {
        keel__phost_t *h = &cl->hosts[i];
        if (h->gone && !taken[i] && __atomic_load_n(&h->conns, __ATOMIC_ACQUIRE) == 0 &&
            h->active == 0 && !h->hc_inflight)
            return (int)i;
    }
    return cl->hosts_n < cl->hosts_cap ? (int)cl->hosts_n : -1;
}

/* Puts the registry's instance list in force: new instances get a slot (a new endpoint of the
 * balancer and the outlier detector), instances that stay keep theirs with its state (health,
 * ejection, in-flight counts, pooled connections), instances that left become gone (taken out
 * of the balancer; idle connections closed, busy ones finish). Indexes never move. */
static void service_update(keel__pcluster_t *cl, const keel_discovery_instance_t *list, size_t n)
{
    bool taken[KEEL_PROXY_SERVICE_HOSTS_MAX] = {false};
    uint32_t added = 0, removed = 0, left_out = 0;
    for (size_t k = 0; k < n; k++) {
        char addr[KEEL_PROXY_HOST_ADDR_BYTES_MAX];
        bool v6 = strchr(list[k].address, ':') != NULL;
        snprintf(addr, sizeof(addr), v6 ? "[%s]:%d" : "%s:%d", list[k].address, list[k].port);
        int s = slot_for(cl, addr, taken);
        if (s < 0 || taken[s]) {
            left_out++;
            continue;
        }
        keel__phost_t *h = &cl->hosts[s];
        if ((uint32_t)s == cl->hosts_n || strcmp(h->address, addr) != 0) { /* a new instance */
            struct sockaddr_storage sa;
            keel_errmsg_t msg;
            if (keel_tcp_parse_addr(addr, &sa, &msg) != 0) { /* the runtime resolves nothing */
                keel_log_warn("proxy: registry instance with an address that is not numeric",
                              KF_STR("cluster", cl->cfg->name), KF_STR("instance", list[k].id));
                left_out++;
                continue;
            }
            assert(h->conns == 0 && h->active == 0);
            keel__host_forget_session(h); /* another instance's */
            snprintf(h->address_buf, sizeof(h->address_buf), "%s", addr);
            h->address = h->address_buf;
            h->addr = sa;
            h->healthy = true;
            h->hc_ok_run = h->hc_fail_run = 0;
            h->ejections = 0;
            __atomic_store_n(&h->gone, false, __ATOMIC_RELEASE);
            if ((uint32_t)s == cl->hosts_n)
                __atomic_add_fetch(&cl->hosts_n, 1, __ATOMIC_RELEASE);
            added++;
        } else if (h->gone) {
            __atomic_store_n(&h->gone, false, __ATOMIC_RELEASE); /* back, with its state */
            added++;
        }
        uint32_t w = list[k].weight ? list[k].weight : 1;
        uint32_t wmax = cl->lb.cfg.ring_weight_max ? cl->lb.cfg.ring_weight_max : 1;
        h->weight = w > KEEL_BALANCE_WEIGHT_MAX ? KEEL_BALANCE_WEIGHT_MAX : w;
        if (strcmp(cl->cfg->balance, "ring") == 0 && h->weight > wmax)
            h->weight = wmax;
        h->priority = keel_discovery_priority(&list[k], cl->cfg->zone);
        taken[s] = true;
    }
    cl->live = 0;
    keel_balance_spec_t specs[KEEL_PROXY_SERVICE_HOSTS_MAX];
    uint64_t ids[KEEL_PROXY_SERVICE_HOSTS_MAX];
    for (uint32_t i = 0; i < cl->hosts_n; i++) {
        keel__phost_t *h = &cl->hosts[i];
        if (!taken[i] && !h->gone) {
            __atomic_store_n(&h->gone, true, __ATOMIC_RELEASE);
            removed++;
        }
        cl->live += !h->gone;
        ids[i] = keel_balance_hash(h->address, strlen(h->address));
        specs[i] = (keel_balance_spec_t){
            .id = ids[i], .weight = h->weight ? h->weight : 1, .priority = h->priority};
    }
    keel_errmsg_t msg;
    int rc = keel_balance_set_endpoints(&cl->lb, specs, cl->hosts_n, &msg);
    assert(rc == 0); /* unique ids (one slot per address), weights in range, n <= cap */
    if (cl->cfg->outlier_enabled)
        keel_outlier_set_endpoints(&cl->outlier, ids, cl->hosts_n);
    for (uint32_t i = 0; i < cl->hosts_n; i++)
        keel__proxy_apply_state(cl, i);
    keel_counter_inc(cl->m_registry_updates);
    keel_log_info("proxy: service cluster updated from the registry",
                  KF_STR("cluster", cl->cfg->name), KF_STR("service", cl->cfg->service),
                  KF_INT("instances", (int64_t)cl->live), KF_INT("added", added),
                  KF_INT("removed", removed));
    if (left_out > 0)
        keel_log_warn("proxy: registry instances left out (cluster full or bad address)",
                      KF_STR("cluster", cl->cfg->name), KF_INT("left_out", left_out),
                      KF_INT("hosts_max", KEEL_PROXY_SERVICE_HOSTS_MAX));
}

static void on_instances(keel_discovery_t *d, void *data)
{
    keel__pcluster_t *cl = data;
    if (cl->retired)
        return;
    size_t n;
    const keel_discovery_instance_t *list = keel_discovery_instances(d, &n);
    keel__cl_lock(cl); /* the workers pick hosts meanwhile */
    service_update(cl, list, n);
    keel__cl_unlock(cl);
    /* a gone host's connections are not pooled: worker 0's now, the others' at their sweep */
    keel__proxy_close_idle(cl->p, cl, true);
}

static void discovery_closed(keel_discovery_t *d)
{
    keel__pcluster_t *cl = d->data;
    keel_proxy_t *p = cl->p;
    free(d);
    cl->disc_on = false;
    keel__cluster_unref(cl); /* taken when discovery started */
    keel__proxy_handle_closed(p);
}

static int discovery_start(keel__pcluster_t *cl, keel_errmsg_t *msg)
{
    const keel_proxy_cluster_t *c = cl->cfg;
    keel_discovery_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    int rc = keel_discovery_start(d, cl->p->loop, c->registry, c->service, c->tag, on_instances, cl,
                                  cl->p->metrics, msg);
    if (rc != 0) {
        free(d);
        return keel_errf(msg, rc, "cluster %s: %s", c->name, msg->text);
    }
    cl->disc = d;
    cl->disc_on = true;
    cl->p->handles_open++;
    keel__cluster_ref(cl); /* until discovery_closed */
    return 0;
}

/* Builds a cluster's hosts, balancer, breaker, outlier detector, metrics and health checks. */
static int cluster_setup(keel_proxy_t *p, keel__pcluster_t *cl, keel_errmsg_t *msg)
{
    const keel_proxy_cluster_t *c = cl->cfg;
    bool service = c->service != NULL; /* hosts come from the registry, later */
    cl->hosts_cap = service ? KEEL_PROXY_SERVICE_HOSTS_MAX : c->hosts_count;
    cl->hosts_n = cl->live = service ? 0 : c->hosts_count;
    cl->hosts = calloc(cl->hosts_cap, sizeof(*cl->hosts));
    cl->pools = calloc((size_t)cl->hosts_cap * p->workers_n, sizeof(*cl->pools));
    if (cl->hosts == NULL || cl->pools == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < cl->hosts_cap; i++) {
        cl->hosts[i].pools = &cl->pools[(size_t)i * p->workers_n];
        for (uint32_t w = 0; w < p->workers_n; w++) /* before anything can fail: shutdown */
            keel_list_init(&cl->hosts[i].pools[w].idle);
        cl->hosts[i].cl = cl;
        cl->hosts[i].idx = i;
    }
    keel_balance_spec_t specs[KEEL_PROXY_HOSTS_MAX];
    uint64_t ids[KEEL_PROXY_HOSTS_MAX];
    uint32_t weight_max = service ? KEEL_PROXY_SERVICE_RING_WEIGHT_MAX : 1;
    for (uint32_t i = 0; i < c->hosts_count; i++) {
        keel__phost_t *h = &cl->hosts[i];
        h->address = c->hosts[i].address;
        h->weight = c->hosts[i].weight;
        h->healthy = true;
        if (keel_tcp_parse_addr(h->address, &h->addr, msg) != 0)
            return keel_errf(msg, KEEL_EINVAL, "cluster %s: host %s: %s", c->name, h->address,
                             msg->text);
        ids[i] = keel_balance_hash(h->address, strlen(h->address));
        specs[i] = (keel_balance_spec_t){.id = ids[i], .weight = c->hosts[i].weight};
        if (c->hosts[i].weight > weight_max)
            weight_max = c->hosts[i].weight;
    }
    keel_balance_config_t bc;
    keel_balance_config_default(&bc);
    if (keel_balance_policy_find(c->balance, NULL, 0, &bc.policy, msg) != 0)
        return KEEL_EINVAL;
    bc.endpoints_max = cl->hosts_cap;
    bc.ring_weight_max = weight_max;
    bc.seed = keel_rand_u64(&p->rand);
    if (c->slow_start_enabled) {
        bc.slow_start.window_ms = c->slow_start_window_ms;
        bc.slow_start.min_pct = c->slow_start_min_weight_pct;
        bc.slow_start.aggression = c->slow_start_aggression;
    }
    int rc = keel_balance_init(&cl->lb, &bc, msg);
    if (rc != 0)
        return rc;
    rc = keel_balance_set_endpoints(&cl->lb, specs, c->hosts_count, msg);
    if (rc != 0)
        return rc;
    if (c->breaker_enabled) {
        keel_breaker_config_t b;
        keel_breaker_config_default(&b);
        b.window_kind = KEEL_BREAKER_WINDOW_COUNT;
        b.window_calls = c->breaker_window_calls;
        b.calls_min = c->breaker_calls_min < c->breaker_window_calls ? c->breaker_calls_min
                                                                     : c->breaker_window_calls;
        b.failure_rate_pct = c->breaker_failure_rate_pct;
        b.consecutive_failures_max = c->breaker_consecutive_failures;
        b.open_ms = c->breaker_open_ms;
        b.probes_max = c->breaker_probes;
        b.slow_call_rate_pct = c->breaker_slow_call_rate_pct;
        b.slow_call_ms = c->breaker_slow_call_ms;
        b.on_transition = on_breaker_transition;
        b.on_transition_data = cl;
        if ((rc = keel_breaker_init(&cl->breaker, &b, msg)) != 0)
            return rc;
    }
    if (c->outlier_enabled) {
        keel_outlier_config_t o;
        keel_outlier_config_default(&o);
        o.consecutive_5xx = c->outlier_consecutive_5xx;
        o.consecutive_gateway = c->outlier_consecutive_gateway;
        o.consecutive_local_origin = c->outlier_consecutive_local;
        o.interval_ms = c->outlier_interval_ms;
        o.base_ejection_ms = c->outlier_base_ejection_ms;
        o.max_ejection_ms = c->outlier_max_ejection_ms < c->outlier_base_ejection_ms
                                ? c->outlier_base_ejection_ms
                                : c->outlier_max_ejection_ms;
        o.max_ejection_pct = c->outlier_max_ejection_pct;
        o.sr_stdev_factor = c->outlier_sr_stdev_factor;
        o.sr_minimum_hosts = c->outlier_sr_minimum_hosts;
        o.sr_request_volume = c->outlier_sr_request_volume;
        o.on_change = on_outlier_change;
        o.on_change_data = cl;
        rc = keel_outlier_init(&cl->outlier, &o, cl->hosts_cap, keel_loop_now_ms(p->loop), msg);
        if (rc == 0)
            rc = keel_outlier_set_endpoints(&cl->outlier, ids, c->hosts_count);
        if (rc != 0)
            return rc;
    }
    char lab[KEEL_METRICS_LABELS_BYTES_MAX - 32];
    keel__proxy_labels_for(lab, sizeof(lab), "cluster", c->name);
    keel_metrics_t *m = p->metrics;
    cl->m_attempts = keel_metrics_counter(m, "keel_proxy_upstream_requests_total",
                                          "Attempts sent to the cluster (retries included).", lab);
    cl->m_retries = keel_metrics_counter(m, "keel_proxy_upstream_retries_total", "Retries.", lab);
    cl->m_budget_exhausted =
        keel_metrics_counter(m, "keel_proxy_retry_budget_exhausted_total",
                             "Retries refused because the retry budget was spent.", lab);
    cl->m_hedges = keel_metrics_counter(
        m, "keel_proxy_hedges_total", "Hedged attempts sent beside an unanswered first try.", lab);
    cl->m_hedge_won =
        keel_metrics_counter(m, "keel_proxy_hedge_won_total",
                             "Responses that came from the hedge, not the first try.", lab);
    cl->m_hedge_cancelled = keel_metrics_counter(
        m, "keel_proxy_hedge_cancelled_total",
        "Attempts cancelled because the other attempt's head came first.", lab);
    cl->m_hedge_budget =
        keel_metrics_counter(m, "keel_proxy_hedge_budget_exhausted_total",
                             "Hedges not sent because the retry budget was spent.", lab);
    cl->m_breaker_rejected = keel_metrics_counter(m, "keel_proxy_breaker_rejected_total",
                                                  "Requests refused by an open breaker.", lab);
    cl->m_bulkhead_rejected = keel_metrics_counter(m, "keel_proxy_bulkhead_rejected_total",
                                                   "Requests refused at max_requests.", lab);
    cl->m_ejections =
        keel_metrics_counter(m, "keel_proxy_ejections_total", "Outlier ejections.", lab);
    cl->m_connect_errors = keel_metrics_counter(m, "keel_proxy_upstream_connect_errors_total",
                                                "Failed upstream connects.", lab);
    cl->m_resets =
        keel_metrics_counter(m, "keel_proxy_upstream_resets_total",
                             "Upstream connections lost before the response ended.", lab);
    cl->m_timeouts = keel_metrics_counter(m, "keel_proxy_upstream_timeouts_total",
                                          "Attempts that timed out.", lab);
    cl->m_bad_responses = keel_metrics_counter(m, "keel_proxy_upstream_bad_responses_total",
                                               "Malformed or oversized upstream responses.", lab);
    cl->m_stale_retries = keel_metrics_counter(
        m, "keel_proxy_upstream_stale_retries_total",
        "Requests sent again on a new connection after the upstream closed the idle pooled one "
        "they went on (not retries).",
        lab);
    if (cl->cfg->tls.enabled) /* a cluster that changes this is a new cluster */
        cl->m_tls_failures = keel_metrics_counter(
            m, "keel_proxy_upstream_tls_failures_total",
            "TLS handshakes with upstream hosts that failed (a tls cluster).", lab);
    if (cl->cfg->tls.enabled)
        cl->m_tls_resumed = keel_metrics_counter(
            m, "keel_proxy_upstream_tls_resumed_total",
            "TLS connections to upstream hosts that resumed a session (no full handshake).", lab);
    for (int k = 0; k < 6; k++) {
        char l2[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(l2, sizeof(l2), "%s,class=\"%s\"", lab, keel__proxy_class_names[k]);
        cl->m_class[k] = keel_metrics_counter(m, "keel_proxy_upstream_responses_total",
                                              "Upstream responses by status class.", l2);
    }
    cl->m_conns = keel_metrics_gauge(m, "keel_proxy_upstream_connections",
                                     "Open upstream connections (busy or idle).", lab);
    cl->m_registry_updates =
        keel_metrics_counter(m, "keel_proxy_registry_updates_total",
                             "Changes of a service cluster's instances from the registry.", lab);
    /* re-registering a series re-binds it: the newest generation's cluster is rendered */
    cl->g_breaker = keel_metrics_gauge_fn(m, "keel_proxy_breaker_state",
                                          "Circuit breaker: 0 closed, 1 open, 2 half-open.", lab,
                                          breaker_state_value, cl);
    cl->g_available =
        keel_metrics_gauge_fn(m, "keel_proxy_hosts_available", "Hosts healthy and not ejected.",
                              lab, hosts_available_value, cl);
    cl->g_active =
        keel_metrics_gauge_fn(m, "keel_proxy_upstream_active_requests",
                              "Requests in flight to the cluster.", lab, active_requests_value, cl);
    if (c->health.enabled) {
        keel_timer_init(p->loop, &cl->hc_timer);
        cl->hc_timer_on = true;
        p->handles_open++;
        keel__cluster_ref(cl); /* until the timer has closed */
        keel_timer_start(&cl->hc_timer, 1, c->health.interval_ms, hc_tick, cl);
    }
    if (service)
        return discovery_start(cl, msg);
    return 0;
}

static void cluster_timer_closed(keel_timer_t *t)
{
    keel__pcluster_t *cl = KEEL_LIST_ENTRY(t, keel__pcluster_t, hc_timer);
    keel_proxy_t *p = cl->p;
    keel__cluster_unref(cl);
    keel__proxy_handle_closed(p);
}

static double gauge_zero(void *data)
{
    return 0;
}

/* Takes a cluster out of service: health checks stop, idle connections close, gauges stop
 * reading it; it is freed with its last reference. */
void keel__cluster_retire(keel__pcluster_t *cl)
{
    __atomic_store_n(&cl->retired, true, __ATOMIC_RELEASE);
    if (cl->hc_timer_on) {
        cl->hc_timer_on = false;
        keel_timer_close(&cl->hc_timer, cluster_timer_closed);
    }
    if (cl->disc != NULL) {
        keel_discovery_t *d = cl->disc;
        cl->disc = NULL;
        keel_discovery_close(d, discovery_closed);
    }
    keel_gauge_t *gs[3] = {cl->g_breaker, cl->g_available, cl->g_active};
    for (int k = 0; k < 3; k++)
        if (gs[k] != NULL && gs[k]->fn_data == cl) { /* not re-bound by a newer cluster */
            gs[k]->fn = gauge_zero;
            gs[k]->fn_data = NULL;
        }
    keel__proxy_close_idle(cl->p, cl, false); /* the other workers' when they adopt the next */
}

/* Takes a generation out of service (worker 0): its clusters that the current generation does
 * not share are retired; it is freed once nothing references it (the caller drops its own). */
