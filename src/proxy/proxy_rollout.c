/* proxy_rollout.c - keel proxy's progressive rollouts: each rollout route's core/rollout, its
 * state carried over an unchanged reload, the sweep that ticks it, its log lines and metrics. */
#include "proxy/proxy_int.h"

#include "base/log.h"

#include <stdio.h>
#include <string.h>

/* The canary's cluster name. */
static const char *canary_name(const keel_proxy_config_t *cfg, const keel_proxy_route_t *r)
{
    return cfg->clusters[r->clusters[r->rollout.canary].cluster].name;
}

static bool same_core(const keel_rollout_config_t *a, const keel_rollout_config_t *b)
{
    if (a->steps_count != b->steps_count || a->step_ms != b->step_ms ||
        a->window_ms != b->window_ms || a->min_requests != b->min_requests ||
        a->max_error_pct != b->max_error_pct || a->max_p99_ms != b->max_p99_ms)
        return false;
    for (uint32_t i = 0; i < a->steps_count; i++)
        if (a->steps_pct[i] != b->steps_pct[i])
            return false;
    return true;
}

/* Whether route a of config ca runs the same rollout as route b of cb: the same name, rollout
 * settings, and weighted clusters (by name and weight, in order). */
static bool same_rollout(const keel_proxy_config_t *ca, const keel_proxy_route_t *a,
                         const keel_proxy_config_t *cb, const keel_proxy_route_t *b)
{
    if (!a->rollout.enabled || !b->rollout.enabled || strcmp(a->name, b->name) != 0 ||
        a->rollout.canary != b->rollout.canary || a->clusters_count != b->clusters_count ||
        !same_core(&a->rollout.core, &b->rollout.core))
        return false;
    for (uint32_t k = 0; k < a->clusters_count; k++)
        if (a->clusters[k].weight != b->clusters[k].weight ||
            strcmp(ca->clusters[a->clusters[k].cluster].name,
                   cb->clusters[b->clusters[k].cluster].name) != 0)
            return false;
    return true;
}

static void publish(keel__proute_t *rt)
{
    __atomic_store_n(&rt->ro_weight_pct, keel_rollout_weight_pct(&rt->ro), __ATOMIC_RELAXED);
    keel_gauge_set(rt->g_ro_weight, keel_rollout_weight_pct(&rt->ro));
    keel_gauge_set(rt->g_ro_state, rt->ro.phase);
}

int keel__rollout_init(keel__pgen_t *gen, keel__proute_t *rt, keel_errmsg_t *msg)
{
    keel_proxy_t *p = gen->p;
    const keel_proxy_route_t *r = rt->cfg;
    if (!r->rollout.enabled)
        return 0;
    char lab[KEEL_METRICS_LABELS_BYTES_MAX - 32];
    keel__proxy_labels_for(lab, sizeof(lab), "route", r->name);
    keel_metrics_t *m = p->metrics;
    rt->g_ro_weight = keel_metrics_gauge(m, "keel_proxy_rollout_weight_percent",
                                         "A rollout's canary weight in percent.", lab);
    rt->g_ro_state = keel_metrics_gauge(
        m, "keel_proxy_rollout_state", "A rollout's state: 0 running, 1 done, 2 rolled back.", lab);
    rt->m_ro_steps = keel_metrics_counter(m, "keel_proxy_rollout_steps_total",
                                          "Rollout steps up to the next canary weight.", lab);
    for (int why = KEEL_ROLLOUT_WHY_ERRORS; why <= KEEL_ROLLOUT_WHY_LATENCY; why++) {
        char l2[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(l2, sizeof(l2), "%s,reason=\"%s\"", lab, keel_rollout_why_name(why));
        rt->m_ro_rollbacks[why] =
            keel_metrics_counter(m, "keel_proxy_rollout_rollbacks_total",
                                 "Rollouts rolled back, by the threshold passed.", l2);
    }
    keel_ms_t now = keel_loop_now_ms(p->loop);
    /* a reload that leaves the rollout as it was keeps its state (p->gen is still the
     * generation in force while the new one is built) */
    keel__proute_t *old = NULL;
    for (uint32_t i = 0; p->gen != NULL && i < p->gen->cfg->routes_count && old == NULL; i++)
        if (p->gen->routes[i].ro_on &&
            same_rollout(p->gen->cfg, p->gen->routes[i].cfg, gen->cfg, r))
            old = &p->gen->routes[i];
    if (old != NULL) {
        pthread_mutex_lock(&old->mu);
        rt->ro = old->ro;
        rt->now_max_ms = old->now_max_ms;
        pthread_mutex_unlock(&old->mu);
    } else {
        int rc = keel_rollout_init(&rt->ro, &r->rollout.core, now, msg);
        if (rc != 0) /* the loader checks what the core checks */
            return keel_errf(msg, rc, "route %s: rollout: %s", r->name, msg->text);
        rt->now_max_ms = now;
        keel_log_info("rollout", KF_STR("route", r->name),
                      KF_STR("canary", canary_name(gen->cfg, r)), KF_STR("event", "start"),
                      KF_INT("weight_pct", keel_rollout_weight_pct(&rt->ro)),
                      KF_INT("steps", r->rollout.core.steps_count));
    }
    rt->ro_on = true;
    publish(rt);
    return 0;
}

/* One tick of one rollout: what changed goes to the picks, the metrics and the log. */
static void tick(keel__pgen_t *gen, keel__proute_t *rt, keel_ms_t now_ms)
{
    keel_rollout_update_t u;
    pthread_mutex_lock(&rt->mu);
    keel_rollout_tick(&rt->ro, keel__shared_now(&rt->now_max_ms, now_ms), &u);
    pthread_mutex_unlock(&rt->mu);
    if (u.action == KEEL_ROLLOUT_HOLD)
        return;
    publish(rt);
    const keel_proxy_route_t *r = rt->cfg;
    if (u.action == KEEL_ROLLOUT_STEP_UP)
        keel_counter_inc(rt->m_ro_steps);
    if (u.action == KEEL_ROLLOUT_ROLL_BACK) {
        keel_counter_inc(rt->m_ro_rollbacks[u.why]);
        keel_log_warn("rollout", KF_STR("route", r->name),
                      KF_STR("canary", canary_name(gen->cfg, r)), KF_STR("event", "rollback"),
                      KF_STR("reason", keel_rollout_why_name(u.why)),
                      KF_INT("from_pct", u.from_pct), KF_INT("weight_pct", u.weight_pct),
                      KF_INT("requests", u.window.requests), KF_INT("errors", u.window.errors),
                      KF_INT("slow", u.window.slow));
        return;
    }
    keel_log_info("rollout", KF_STR("route", r->name), KF_STR("canary", canary_name(gen->cfg, r)),
                  KF_STR("event", keel_rollout_action_name(u.action)),
                  KF_INT("from_pct", u.from_pct), KF_INT("weight_pct", u.weight_pct),
                  KF_INT("requests", u.window.requests), KF_INT("errors", u.window.errors),
                  KF_INT("slow", u.window.slow));
}

void keel__rollout_sweep(keel_proxy_t *p, keel_ms_t now_ms)
{
    keel__pgen_t *gen = p->gen;
    for (uint32_t i = 0; i < gen->cfg->routes_count; i++)
        if (gen->routes[i].ro_on)
            tick(gen, &gen->routes[i], now_ms);
}

void keel__rollout_observe(keel__proute_t *rt, keel_ms_t now_ms, keel_ms_t latency_ms, int status)
{
    pthread_mutex_lock(&rt->mu);
    keel_rollout_observe(&rt->ro, keel__shared_now(&rt->now_max_ms, now_ms), latency_ms,
                         status >= 500);
    pthread_mutex_unlock(&rt->mu);
}
