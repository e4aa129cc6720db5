/* outlier.h - passive outlier detection and ejection of endpoints (Envoy outlier_detection). */
#ifndef KEEL_CORE_OUTLIER_H
#define KEEL_CORE_OUTLIER_H

#include "base/err.h"
#include "base/ktime.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Watches the results of real requests to each endpoint of one upstream and
 * ejects (takes out of load balancing for a while) the ones that misbehave,
 * following Envoy's outlier detection (envoyproxy.io, "Outlier detection"):
 *
 *   consecutive_5xx            this many 5xx responses in a row (default 5)
 *   consecutive_gateway        this many 502/503/504 in a row (default 0 = off)
 *   consecutive_local_origin   this many local failures in a row: connect
 *                              failure, reset, timeout (default 5)
 *   success rate               every interval_ms, over endpoints with at least
 *                              sr_request_volume requests in the interval
 *                              (default 100), if there are at least
 *                              sr_minimum_hosts of them (default 5): eject an
 *                              endpoint whose success rate is below
 *                              mean - (sr_stdev_factor / 1000) * stdev
 *                              (default 1900, i.e. 1.9; population stdev).
 *
 * An ejection lasts base_ejection_ms * k (default 30000 ms), where k counts the
 * endpoint's ejections, capped at max_ejection_ms (default 300000 ms). k drops
 * by one at each interval tick at which the endpoint is in service and has
 * been back for at least interval_ms, so a flapping endpoint stays out longer
 * and longer while a recovered one is forgiven.
 *
 * No ejection happens while ejected * 100 >= max_ejection_pct * n (default
 * 10%): a bad deploy or a client-side fault cannot empty the pool. Because the
 * check is on the count before the ejection, one endpoint can always be
 * ejected when max_ejection_pct > 0 (Envoy does the same).
 *
 *          failures reach a threshold,            now >= ejected_until
 *          or success rate below the bar,         (at the next tick)
 *          and under max_ejection_pct
 *   IN SERVICE ─────────────────────────> EJECTED ───────────────────> IN SERVICE
 *                                         (until = now + base * k, capped)
 *
 * Local-origin failures also count as failures in the success rate. Counters
 * reset on ejection. Driving: record results as they come, and call
 * keel_outlier_tick() at keel_outlier_next_deadline_ms() (interval ends and
 * ejection ends); on_change reports every ejection and return so the driver
 * can update the balancer (keel_balance_set_state). Memory: endpoints_max
 * records allocated at init.
 */

typedef void (*keel_outlier_change_cb)(void *data, uint32_t idx, bool ejected, keel_ms_t now_ms);

typedef struct keel_outlier_config {
    uint32_t consecutive_5xx;
    uint32_t consecutive_gateway;
    uint32_t consecutive_local_origin;
    keel_ms_t interval_ms;
    keel_ms_t base_ejection_ms;
    keel_ms_t max_ejection_ms;
    uint32_t max_ejection_pct;
    uint32_t sr_minimum_hosts;
    uint32_t sr_request_volume;
    uint32_t sr_stdev_factor; /* thousandths; 0 disables success-rate ejection */
    keel_outlier_change_cb on_change;
    void *on_change_data;
} keel_outlier_config_t;

typedef struct keel_outlier_endpoint {
    uint64_t id;
    bool ejected;
    keel_ms_t ejected_until_ms;
    keel_ms_t returned_ms;
    uint32_t ejections; /* the multiplier k */
    uint32_t run_5xx, run_gateway, run_local;
    uint32_t sr_requests, sr_successes; /* this interval */
    uint64_t ejections_total;
} keel_outlier_endpoint_t;

typedef struct keel_outlier {
    keel_outlier_config_t cfg;
    keel_outlier_endpoint_t *ep, *scratch;
    uint32_t n, endpoints_max, ejected_n;
    keel_ms_t next_interval_ms;
    uint64_t ejections_blocked; /* ejections refused by max_ejection_pct */
} keel_outlier_t;

#define KEEL_OUTLIER_ENDPOINTS_MAX 65536u

void keel_outlier_config_default(keel_outlier_config_t *cfg);
int keel_outlier_config_validate(const keel_outlier_config_t *cfg, keel_errmsg_t *msg);
/* The first interval ends at now_ms + interval_ms. */
int keel_outlier_init(keel_outlier_t *o, const keel_outlier_config_t *cfg, uint32_t endpoints_max,
                      keel_ms_t now_ms, keel_errmsg_t *msg);
void keel_outlier_free(keel_outlier_t *o);

/* Replaces the endpoint set; endpoints whose id survives keep their state. KEEL_ETOOBIG. */
int keel_outlier_set_endpoints(keel_outlier_t *o, const uint64_t *ids, uint32_t n);

/* A response with this HTTP status came back from endpoint idx. */
void keel_outlier_record_status(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms, int status);
/* A local-origin result: false for connect failure / reset / timeout, true for a connect success.
 */
void keel_outlier_record_local(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms, bool ok);

/* Returns endpoints whose time is up and runs interval analysis that is due. */
void keel_outlier_tick(keel_outlier_t *o, keel_ms_t now_ms);
keel_ms_t keel_outlier_next_deadline_ms(const keel_outlier_t *o);
bool keel_outlier_is_ejected(const keel_outlier_t *o, uint32_t idx);

#endif
