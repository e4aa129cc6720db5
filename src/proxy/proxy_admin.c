/* proxy_admin.c - keel proxy's admin listener: /metrics, /clusters, /config and /rollouts. */
#include "proxy/proxy_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- admin ------------------------------------------------------------------------------- */

static void admin_metrics(keel_http_req_t *req, void *data)
{
    keel_proxy_t *p = data;
    keel_buf_t out;
    keel_buf_init(&out, 0);
    if (keel_metrics_render(p->metrics, &out) != 0)
        keel_http_respond_error(req, 500, "metrics too large");
    else
        keel_http_respond_body(req, 200, "text/plain; version=0.0.4", keel_buf_rptr(&out),
                               keel_buf_unread(&out));
    keel_buf_free(&out);
}

static void admin_clusters(keel_http_req_t *req, void *data)
{
    keel_proxy_t *p = data;
    json_t *arr = json_array();
    keel__pgen_t *gen = p->gen;
    for (uint32_t c = 0; c < gen->cfg->clusters_count; c++) {
        keel__pcluster_t *cl = gen->clusters[c];
        json_t *hosts = json_array();
        keel__cl_lock(cl);
        keel_ms_t now = keel__shared_now(&cl->now_max_ms, keel_loop_now_ms(p->loop));
        for (uint32_t i = 0; i < cl->hosts_n; i++) {
            keel__phost_t *h = &cl->hosts[i];
            if (h->gone)
                continue;
            uint64_t idle = 0; /* over every worker's pool */
            for (uint32_t w = 0; w < p->workers_n; w++)
                idle += __atomic_load_n(&h->pools[w].idle_count, __ATOMIC_RELAXED);
            json_t *ho = json_pack(
                "{s:s, s:i, s:b, s:b, s:b, s:I, s:I, s:I, s:I}", "address", h->address, "weight",
                (int)h->weight, "healthy", h->healthy, "ejected", cl->lb.ep[i].ejected, "available",
                keel_balance_available(&cl->lb, i), "active_requests", (json_int_t)h->active,
                "connections", (json_int_t)__atomic_load_n(&h->conns, __ATOMIC_RELAXED),
                "idle_connections", (json_int_t)idle, "ejections", (json_int_t)h->ejections);
            if (ho != NULL && cl->cfg->slow_start_enabled) /* its ramp's f(t); 100 when over */
                json_object_set_new(ho, "slow_start_pct",
                                    json_integer(keel_balance_ramp_permille(&cl->lb, i, now) /
                                                 (KEEL_BALANCE_PERMILLE / 100)));
            json_array_append_new(hosts, ho);
        }
        char bs[24] = "disabled"; /* the state's name in lower case, as JSON values go */
        if (cl->cfg->breaker_enabled) {
            snprintf(bs, sizeof(bs), "%s",
                     keel_breaker_state_name(keel_breaker_state(&cl->breaker)));
            for (char *q = bs; *q; q++)
                *q = (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q);
        }
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "name", cl->cfg->name, "balance",
                              cl->cfg->balance, "breaker", bs, "active_requests",
                              (json_int_t)cl->active_requests, "active_retries",
                              (json_int_t)cl->active_retries, "hosts", hosts);
        keel__cl_unlock(cl);
        if (o != NULL && cl->cfg->service != NULL) /* hosts from the registry */
            json_object_set_new(o, "service", json_string(cl->cfg->service));
        json_array_append_new(arr, o);
    }
    json_t *root = json_pack("{s:o}", "clusters", arr);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL) {
        keel_http_respond_error(req, 500, "out of memory");
        return;
    }
    keel_http_respond_body(req, 200, "application/json", text, strlen(text));
    free(text);
}

/* GET /rollouts: each rollout route's state, step, weight and the window being judged. */
static void admin_rollouts(keel_http_req_t *req, void *data)
{
    keel_proxy_t *p = data;
    json_t *arr = json_array();
    keel__pgen_t *gen = p->gen;
    for (uint32_t i = 0; i < gen->cfg->routes_count; i++) {
        keel__proute_t *rt = &gen->routes[i];
        if (!rt->ro_on)
            continue;
        const keel_proxy_route_t *r = rt->cfg;
        pthread_mutex_lock(&rt->mu);
        keel_ms_t now = keel__shared_now(&rt->now_max_ms, keel_loop_now_ms(p->loop));
        keel_rollout_t ro = rt->ro;
        pthread_mutex_unlock(&rt->mu);
        keel_rollout_window_t w = keel_rollout_window(&ro, now);
        json_t *steps = json_array();
        for (uint32_t k = 0; k < ro.cfg.steps_count; k++)
            json_array_append_new(steps, json_integer(ro.cfg.steps_pct[k]));
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:i, s:i, s:o, s:I, s:I, s:{s:I, s:I, s:I, s:I}}", "route", r->name,
            "canary", gen->cfg->clusters[r->clusters[r->rollout.canary].cluster].name, "state",
            keel_rollout_phase_name(ro.phase), "weight_pct", (int)keel_rollout_weight_pct(&ro),
            "step", (int)ro.step + 1, "steps", steps, "steps_taken", (json_int_t)ro.steps_total,
            "step_age_ms", (json_int_t)(now - ro.step_started_ms), "window", "window_ms",
            (json_int_t)ro.cfg.window_ms, "requests", (json_int_t)w.requests, "errors",
            (json_int_t)w.errors, "slow", (json_int_t)w.slow);
        if (o != NULL && ro.phase == KEEL_ROLLOUT_ROLLED_BACK)
            json_object_set_new(o, "reason", json_string(keel_rollout_why_name(ro.why)));
        json_array_append_new(arr, o);
    }
    json_t *root = json_pack("{s:o}", "rollouts", arr);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL) {
        keel_http_respond_error(req, 500, "out of memory");
        return;
    }
    keel_http_respond_body(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void admin_config(keel_http_req_t *req, void *data)
{
    keel_proxy_t *p = data;
    char version[32];
    snprintf(version, sizeof(version), "%08llx", (unsigned long long)p->gen->version);
    keel_http_header_t hdrs[2] = {
        {"Content-Type", 12, "application/yaml", 16, 0, 0},
        {"X-Keel-Config-Version", 21, version, strlen(version), 0, 0},
    };
    keel_http_respond(req, 200, hdrs, 2, p->gen->text, strlen(p->gen->text));
}

int keel__proxy_admin_start(keel_proxy_t *p, keel_errmsg_t *msg)
{
    keel_http_route_t routes[] = {
        {HTTP_GET, "/metrics", admin_metrics, p},
        {HTTP_GET, "/clusters", admin_clusters, p},
        {HTTP_GET, "/config", admin_config, p},
        {HTTP_GET, "/rollouts", admin_rollouts, p},
    };
    keel_http_server_config_t sc = keel_http_server_config_default();
    sc.connections_max = 64;
    int rc = keel_http_server_init(&p->admin, p->loop, &sc, routes,
                                   sizeof(routes) / sizeof(routes[0]), msg);
    if (rc != 0)
        return rc;
    p->admin_on = true;
    p->handles_open++;
    rc = keel_http_server_listen(&p->admin, p->gen->cfg->admin_address, msg);
    if (rc != 0)
        return rc;
    p->admin_port = keel_http_server_port(&p->admin);
    return 0;
}
