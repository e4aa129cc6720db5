/* saga_orch.c - the saga orchestrator: setup, types, metrics, adopting orphans (the scan),
   close. */
#include "tx/saga_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define SCAN_COUNT "200"         /* fields asked of each HSCAN of the open index */
#define SCAN_SEEN_MAX (1u << 20) /* open sagas remembered from one pass to the next */

/* ---- adopting orphans: the scan ----------------------------------------------------------- */

static void scan_step(keel_sagas_t *o);

static void on_scan(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    keel__saga_unref(o); /* the reply is in; the scan's work unit is released at the end */
    if (o->closing || status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
        v->elems[0].type != KEEL_RESP_BULK || v->elems[1].type != KEEL_RESP_ARRAY ||
        v->elems[0].str.len >= sizeof(o->scan_cursor)) {
        o->scanning = false; /* the next interval starts over */
        keel__saga_work_done(o);
        return;
    }
    memcpy(o->scan_cursor, v->elems[0].str.ptr, v->elems[0].str.len);
    o->scan_cursor[v->elems[0].str.len] = '\0';
    const keel_resp_value_t *kv = &v->elems[1]; /* field, value, field, value, ... */
    for (size_t i = 0; i + 1 < kv->elems_len; i += 2) {
        const keel_resp_value_t *k = &kv->elems[i];
        if (k->type != KEEL_RESP_BULK || k->str.len == 0 || k->str.len > KEEL_SAGA_ID_BYTES_MAX)
            continue;
        char id[KEEL_SAGA_ID_BYTES_MAX + 1];
        memcpy(id, k->str.ptr, k->str.len);
        id[k->str.len] = '\0';
        if (!keel__saga_id_ok(id) || keel__saga_run_find(o, id))
            continue;
        /* seen open by the pass before too (or the set is full: asked at once) */
        bool known = o->scan_prev.slots && keel_map_get(&o->scan_prev, id, k->str.len);
        if (o->scan_seen.slots == NULL || keel_map_put(&o->scan_seen, id, k->str.len, o, NULL) < 0)
            known = true;
        if (!known || o->runs_n >= o->cfg.runs_max)
            continue;
        keel__saga_run_t *r = keel__saga_run_new(o, id);
        if (r)
            keel__saga_relock(r); /* nil if its owner is alive: dropped quietly */
    }
    if (strcmp(o->scan_cursor, "0") == 0)
        o->scanning = false;
    else
        scan_step(o);
    keel__saga_work_done(o);
}

static void scan_step(keel_sagas_t *o)
{
    const char *argv[] = {"HSCAN", OPEN_KEY, o->scan_cursor, "COUNT", SCAN_COUNT};
    if (keel_client_command(&o->cl, 5, argv, NULL, on_scan, o) != 0)
        o->scanning = false;
    else {
        o->handles++;
        o->work++;
    }
}

static void scan_tick(keel_timer_t *t, void *data)
{
    keel_sagas_t *o = data;
    keel__saga_retain_tick(o);
    if (o->scanning || o->closing)
        return;
    o->scanning = true;
    snprintf(o->scan_cursor, sizeof(o->scan_cursor), "0");
    keel_map_t drop = o->scan_prev; /* this pass's set starts empty; the last one's is kept */
    o->scan_prev = o->scan_seen;
    keel_map_free(&drop, NULL);
    if (keel_map_init(&o->scan_seen, 0, SCAN_SEEN_MAX, keel_rand_u64(&o->rand)) != 0)
        memset(&o->scan_seen, 0, sizeof(o->scan_seen)); /* a put fails: asked at once */
    scan_step(o);
}

/* ---- the orchestrator ------------------------------------------------------------------ */

int keel_saga_type_step(keel_saga_type_t *t, const char *name, keel_saga_fn action,
                        keel_saga_fn compensation, void *data)
{
    int i = keel_saga_def_step(&t->def, name);
    if (i < 0)
        return i;
    t->fns[i].action = action;
    t->fns[i].compensation = compensation;
    t->fns[i].data = data;
    t->def.steps[i].no_compensation = compensation == NULL;
    return i;
}

keel_sagas_config_t keel_sagas_config_default(void)
{
    keel_sagas_config_t c;
    memset(&c, 0, sizeof(c));
    c.lock_ttl_ms = 10000;
    c.scan_interval_ms = 1000;
    c.request_timeout_ms = 5000;
    c.runs_max = 1024;
    c.lanes = 4;
    c.renew_lock = true;
    return c;
}

static double gauge_state(void *data)
{
    const struct keel__sagas_gauge *g = data;
    return (double)g->o->by_state[g->state];
}

static void register_metrics(keel_sagas_t *o)
{
    keel_metrics_t *m = o->cfg.metrics;
    if (m == NULL)
        return;
    o->gauges[0] = (struct keel__sagas_gauge){o, KEEL_SAGA_RUNNING};
    o->gauges[1] = (struct keel__sagas_gauge){o, KEEL_SAGA_COMPENSATING};
    keel_metrics_gauge_fn(m, "keel_sagas", "Sagas this orchestrator is driving, by state.",
                          "state=\"running\"", gauge_state, &o->gauges[0]);
    keel_metrics_gauge_fn(m, "keel_sagas", "Sagas this orchestrator is driving, by state.",
                          "state=\"compensating\"", gauge_state, &o->gauges[1]);
    static const keel_saga_state_t finals[] = {KEEL_SAGA_DONE, KEEL_SAGA_COMPENSATED,
                                               KEEL_SAGA_NEEDS_ATTENTION};
    for (size_t i = 0; i < 3; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "state=\"%s\"", keel_saga_state_name(finals[i]));
        o->m_finished[finals[i]] = keel_metrics_counter(
            m, "keel_sagas_finished_total", "Sagas ended here, by final state.", labels);
    }
    o->m_adopted = keel_metrics_counter(m, "keel_saga_adopted_total",
                                        "Sagas resumed from the log after their owner died.", "");
    o->m_deleted = keel_metrics_counter(m, "keel_saga_logs_deleted_total",
                                        "Finished sagas' logs deleted past log_retention_ms.", "");
    o->m_fenced = keel_metrics_counter(m, "keel_saga_fenced_total",
                                       "Log writes refused because another owner took over.", "");
    o->m_log_write = keel_metrics_histogram(m, "keel_saga_log_write_seconds",
                                            "Fenced saga log writes to keel server.", "", NULL, 0);
}

int keel_sagas_init(keel_sagas_t *o, keel_loop_t *loop, const keel_sagas_config_t *cfg,
                    keel_errmsg_t *msg)
{
    memset(o, 0, sizeof(*o));
    if (cfg->seeds_n == 0 || cfg->lock_ttl_ms < 300 || cfg->runs_max == 0 || cfg->lanes == 0 ||
        cfg->lanes > KEEL_CLIENT_LANES_MAX || cfg->runs_max > KEEL_SAGAS_RUNS_LIMIT ||
        cfg->scan_interval_ms < 0 || cfg->log_retention_ms < 0 ||
        (cfg->log_retention_ms > 0 && cfg->scan_interval_ms == 0))
        return keel_errf(msg, KEEL_EINVAL,
                         "sagas need seeds, lock_ttl_ms >= 300, runs_max in 1..%u, lanes in "
                         "1..%u, log_retention_ms >= 0 (> 0 needs the scan: scan_interval_ms > 0)",
                         KEEL_SAGAS_RUNS_LIMIT, KEEL_CLIENT_LANES_MAX);
    o->loop = loop;
    o->cfg = *cfg;
    keel_rand_seed(&o->rand, cfg->seed);
    keel_list_init(&o->runs);
    keel_client_config_t cc = keel_client_config_default();
    for (size_t i = 0; i < cfg->seeds_n && i < KEEL_CLIENT_SEEDS_MAX; i++)
        cc.seeds[i] = cfg->seeds[i];
    cc.seeds_n = cfg->seeds_n;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.seed = keel_mix64(cfg->seed);
    int rc = keel_client_init(&o->cl, loop, &cc, msg);
    if (rc != 0)
        return rc;
    rc = keel_client_lanes_init(&o->lanes, loop, &cc, cfg->lanes, msg);
    if (rc != 0) {
        keel_client_close(&o->cl, NULL);
        return rc;
    }
    rc = keel_timer_init(loop, &o->scan_timer);
    if (rc != 0) {
        keel_client_close(&o->cl, NULL);
        keel_client_lanes_close(&o->lanes, NULL);
        return keel_errf(msg, rc, "scan timer");
    }
    if (cfg->scan_interval_ms > 0)
        keel_timer_start(&o->scan_timer, cfg->scan_interval_ms / 4 + 1, cfg->scan_interval_ms,
                         scan_tick, o);
    o->handles = 3; /* the client, the lanes and the scan timer */
    register_metrics(o);
    return 0;
}

int keel_sagas_register(keel_sagas_t *o, const keel_saga_type_t *t, keel_errmsg_t *msg)
{
    int rc = keel_saga_def_validate(&t->def, msg);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < t->def.steps_n; i++) {
        if (t->fns[i].action == NULL)
            return keel_errf(msg, KEEL_EINVAL, "step %s has no action", t->def.steps[i].name);
        if (t->fns[i].compensation == NULL && !t->def.steps[i].no_compensation)
            return keel_errf(msg, KEEL_EINVAL, "step %s has no compensation", t->def.steps[i].name);
    }
    uint32_t ti;
    if (keel__saga_type_named(o, (const uint8_t *)t->def.name, strlen(t->def.name), &ti))
        return keel_errf(msg, KEEL_EEXISTS, "saga type %s registered twice", t->def.name);
    if (o->types_n >= KEEL_SAGAS_TYPES_MAX)
        return keel_errf(msg, KEEL_EFULL, "more than %u saga types", KEEL_SAGAS_TYPES_MAX);
    ti = o->types_n++;
    o->types[ti] = t;
    if (o->cfg.metrics) {
        char labels[160];
        snprintf(labels, sizeof(labels), "saga=\"%s\"", t->def.name);
        o->m_saga[ti] =
            keel_metrics_histogram(o->cfg.metrics, "keel_saga_seconds",
                                   "Sagas from start (or adoption) to their end.", labels, NULL, 0);
        for (uint32_t i = 0; i < t->def.steps_n; i++) {
            snprintf(labels, sizeof(labels), "saga=\"%s\",step=\"%s\"", t->def.name,
                     t->def.steps[i].name);
            o->m_step[ti][i] = keel_metrics_histogram(
                o->cfg.metrics, "keel_saga_step_seconds",
                "Each attempt of a saga step's action, until its outcome.", labels, NULL, 0);
            o->m_retry[ti][i] = keel_metrics_counter(
                o->cfg.metrics, "keel_saga_step_retries_total",
                "Attempts of a saga step's action after its first (transient failures).", labels);
            static const char *const kinds[2] = {"refused", "gave_up"};
            for (int k = 0; k < 2; k++) {
                char fl[200];
                snprintf(fl, sizeof(fl), "%s,kind=\"%s\"", labels, kinds[k]);
                o->m_fail[ti][i][k] = keel_metrics_counter(
                    o->cfg.metrics, "keel_saga_step_failures_total",
                    "Saga steps that failed: refused by the service, or given up after "
                    "transient failures (attempts or time used up; maybe applied).",
                    fl);
            }
        }
    }
    return 0;
}

uint32_t keel_sagas_running(const keel_sagas_t *o)
{
    return o->runs_n;
}

void keel__saga_client_closed(keel_client_t *cl)
{
    keel__saga_unref(KEEL_LIST_ENTRY(cl, keel_sagas_t, cl));
}

void keel__saga_lanes_closed(keel_client_lanes_t *l)
{
    keel__saga_unref(KEEL_LIST_ENTRY(l, keel_sagas_t, lanes));
}

static void scan_timer_closed(keel_timer_t *t)
{
    keel__saga_unref(KEEL_LIST_ENTRY(t, keel_sagas_t, scan_timer));
}

void keel_sagas_close(keel_sagas_t *o, void (*closed)(keel_sagas_t *o))
{
    assert(!o->closing);
    o->closing = true;
    o->closed = closed;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &o->runs)
    {
        keel__saga_run_t *r = KEEL_LIST_ENTRY(it, keel__saga_run_t, link);
        keel_sagas_end_fn end = r->end;
        void *end_data = r->end_data;
        char id[sizeof(r->id)];
        memcpy(id, r->id, sizeof(id));
        bool starting = r->starting;
        keel__saga_run_drop(r);
        if (end && starting)
            end(o, id, KEEL_ECANCELED, KEEL_SAGA_NEW, end_data);
    }
    keel_timer_close(&o->scan_timer, scan_timer_closed);
    o->work++;
    keel__saga_work_done(o); /* closes the client now if nothing is in flight */
}
