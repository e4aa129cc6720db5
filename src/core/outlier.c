/* outlier.c - consecutive-failure and success-rate ejection with growing, capped ejection times. */
#include "core/outlier.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void keel_outlier_config_default(keel_outlier_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->consecutive_5xx = 5;
    cfg->consecutive_gateway = 0;
    cfg->consecutive_local_origin = 5;
    cfg->interval_ms = 10000;
    cfg->base_ejection_ms = 30000;
    cfg->max_ejection_ms = 300000;
    cfg->max_ejection_pct = 10;
    cfg->sr_minimum_hosts = 5;
    cfg->sr_request_volume = 100;
    cfg->sr_stdev_factor = 1900;
}

int keel_outlier_config_validate(const keel_outlier_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->interval_ms <= 0 || cfg->base_ejection_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "interval_ms and base_ejection_ms must be positive");
    if (cfg->max_ejection_ms < cfg->base_ejection_ms)
        return keel_errf(msg, KEEL_EINVAL, "max_ejection_ms must be >= base_ejection_ms");
    if (cfg->max_ejection_pct > 100)
        return keel_errf(msg, KEEL_EINVAL, "max_ejection_pct must be in 0..100");
    if (cfg->sr_minimum_hosts == 0)
        return keel_errf(msg, KEEL_EINVAL, "sr_minimum_hosts must be >= 1");
    return 0;
}

int keel_outlier_init(keel_outlier_t *o, const keel_outlier_config_t *cfg, uint32_t endpoints_max,
                      keel_ms_t now_ms, keel_errmsg_t *msg)
{
    int err = keel_outlier_config_validate(cfg, msg);
    if (err)
        return err;
    if (endpoints_max == 0 || endpoints_max > KEEL_OUTLIER_ENDPOINTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "endpoints_max must be in 1..%u",
                         KEEL_OUTLIER_ENDPOINTS_MAX);
    memset(o, 0, sizeof(*o));
    o->cfg = *cfg;
    o->endpoints_max = endpoints_max;
    o->next_interval_ms = now_ms + cfg->interval_ms;
    o->ep = calloc(endpoints_max, sizeof(*o->ep));
    o->scratch = calloc(endpoints_max, sizeof(*o->scratch));
    if (!o->ep || !o->scratch) {
        keel_outlier_free(o);
        return keel_errf(msg, KEEL_ENOMEM, "outlier detector for %u endpoints", endpoints_max);
    }
    return 0;
}

void keel_outlier_free(keel_outlier_t *o)
{
    free(o->ep);
    free(o->scratch);
    o->ep = o->scratch = NULL;
}

int keel_outlier_set_endpoints(keel_outlier_t *o, const uint64_t *ids, uint32_t n)
{
    if (n > o->endpoints_max)
        return KEEL_ETOOBIG;
    uint32_t ejected = 0;
    for (uint32_t i = 0; i < n; i++) {
        keel_outlier_endpoint_t *e = &o->scratch[i];
        memset(e, 0, sizeof(*e));
        for (uint32_t j = 0; j < o->n; j++) {
            if (o->ep[j].id == ids[i]) {
                *e = o->ep[j];
                break;
            }
        }
        e->id = ids[i];
        ejected += e->ejected;
    }
    keel_outlier_endpoint_t *t = o->ep;
    o->ep = o->scratch;
    o->scratch = t;
    o->n = n;
    o->ejected_n = ejected;
    return 0;
}

static void eject(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms)
{
    keel_outlier_endpoint_t *e = &o->ep[idx];
    if (e->ejected)
        return;
    if ((uint64_t)o->ejected_n * 100 >= (uint64_t)o->cfg.max_ejection_pct * o->n) {
        o->ejections_blocked++;
        return;
    }
    e->ejections++;
    e->ejections_total++;
    keel_ms_t span_ms = o->cfg.max_ejection_ms;
    if (e->ejections <= (uint64_t)(o->cfg.max_ejection_ms / o->cfg.base_ejection_ms))
        span_ms = o->cfg.base_ejection_ms * e->ejections;
    e->ejected = true;
    e->ejected_until_ms = now_ms + span_ms;
    e->run_5xx = e->run_gateway = e->run_local = 0;
    o->ejected_n++;
    if (o->cfg.on_change)
        o->cfg.on_change(o->cfg.on_change_data, idx, true, now_ms);
}

static bool reached(uint32_t run, uint32_t threshold)
{
    return threshold > 0 && run >= threshold;
}

void keel_outlier_record_status(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms, int status)
{
    assert(idx < o->n);
    keel_outlier_endpoint_t *e = &o->ep[idx];
    bool is_5xx = status >= 500 && status <= 599;
    bool gateway = status == 502 || status == 503 || status == 504;
    e->sr_requests++;
    e->sr_successes += !is_5xx;
    e->run_5xx = is_5xx ? e->run_5xx + 1 : 0;
    e->run_gateway = gateway ? e->run_gateway + 1 : 0;
    if (reached(e->run_5xx, o->cfg.consecutive_5xx) ||
        reached(e->run_gateway, o->cfg.consecutive_gateway))
        eject(o, idx, now_ms);
}

void keel_outlier_record_local(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms, bool ok)
{
    assert(idx < o->n);
    keel_outlier_endpoint_t *e = &o->ep[idx];
    if (ok) {
        e->run_local = 0;
        return;
    }
    e->sr_requests++;
    e->run_local++;
    if (reached(e->run_local, o->cfg.consecutive_local_origin))
        eject(o, idx, now_ms);
}

/* Success-rate analysis over the interval that just ended (Envoy's success_rate_* fields). */
static void success_rate_pass(keel_outlier_t *o, keel_ms_t now_ms)
{
    if (o->cfg.sr_stdev_factor == 0)
        return;
    double sum = 0, sumsq = 0;
    uint32_t hosts = 0;
    for (uint32_t i = 0; i < o->n; i++) {
        const keel_outlier_endpoint_t *e = &o->ep[i];
        if (e->ejected || e->sr_requests < o->cfg.sr_request_volume || e->sr_requests == 0)
            continue;
        double rate = (double)e->sr_successes / e->sr_requests;
        sum += rate;
        sumsq += rate * rate;
        hosts++;
    }
    if (hosts < o->cfg.sr_minimum_hosts)
        return;
    double mean = sum / hosts;
    double var = sumsq / hosts - mean * mean;
    double bar = mean - (o->cfg.sr_stdev_factor / 1000.0) * sqrt(var > 0 ? var : 0);
    for (uint32_t i = 0; i < o->n; i++) {
        const keel_outlier_endpoint_t *e = &o->ep[i];
        if (e->ejected || e->sr_requests < o->cfg.sr_request_volume || e->sr_requests == 0)
            continue;
        if ((double)e->sr_successes / e->sr_requests < bar)
            eject(o, i, now_ms);
    }
}

static void interval_pass(keel_outlier_t *o, keel_ms_t now_ms)
{
    success_rate_pass(o, now_ms);
    for (uint32_t i = 0; i < o->n; i++) {
        keel_outlier_endpoint_t *e = &o->ep[i];
        if (!e->ejected && e->ejections > 0 && now_ms - e->returned_ms >= o->cfg.interval_ms)
            e->ejections--;
        e->sr_requests = e->sr_successes = 0;
    }
}

void keel_outlier_tick(keel_outlier_t *o, keel_ms_t now_ms)
{
    for (uint32_t i = 0; i < o->n; i++) {
        keel_outlier_endpoint_t *e = &o->ep[i];
        if (e->ejected && now_ms >= e->ejected_until_ms) {
            e->ejected = false;
            e->returned_ms = now_ms;
            o->ejected_n--;
            if (o->cfg.on_change)
                o->cfg.on_change(o->cfg.on_change_data, i, false, now_ms);
        }
    }
    if (now_ms < o->next_interval_ms)
        return;
    interval_pass(o, now_ms);
    /* a late driver runs one pass for the missed intervals, not one per interval */
    keel_ms_t missed = (now_ms - o->next_interval_ms) / o->cfg.interval_ms;
    o->next_interval_ms += (missed + 1) * o->cfg.interval_ms;
}

keel_ms_t keel_outlier_next_deadline_ms(const keel_outlier_t *o)
{
    keel_ms_t next = o->next_interval_ms;
    for (uint32_t i = 0; i < o->n; i++)
        if (o->ep[i].ejected && o->ep[i].ejected_until_ms < next)
            next = o->ep[i].ejected_until_ms;
    return next;
}

bool keel_outlier_is_ejected(const keel_outlier_t *o, uint32_t idx)
{
    assert(idx < o->n);
    return o->ep[idx].ejected;
}
