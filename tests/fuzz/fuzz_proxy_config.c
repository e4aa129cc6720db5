/* fuzz_proxy_config.c - libFuzzer target: arbitrary bytes through keel proxy's YAML loader. */
#include "proxy/config.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The loader must either build a config or report at least one error, never both and never
 * crash or leak; a config it accepts must satisfy the invariants the runtime relies on
 * (routes that forward name existing clusters with a positive total weight; a rollout's canary
 * is one of them, the others have weight, and core/rollout takes its settings; a remote_jwks
 * names a plain-HTTP cluster, a path, and bounds its backoff).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static keel_proxy_config_t cfg;
    static keel_proxy_errors_t errs;
    int rc = keel_proxy_config_parse((const char *)data, size, &cfg, &errs);
    if (rc != 0) {
        assert(errs.count > 0);
        return 0;
    }
    assert(errs.count == 0 && cfg.listeners_count > 0);
    for (uint32_t i = 0; i < cfg.routes_count; i++) {
        const keel_proxy_route_t *r = &cfg.routes[i];
        if (r->action != KEEL_PROXY_ACTION_FORWARD)
            continue;
        assert(r->clusters_count > 0 && r->weight_total > 0);
        for (uint32_t k = 0; k < r->clusters_count; k++)
            assert(r->clusters[k].cluster < cfg.clusters_count);
        if (r->rollout.enabled) { /* what the runtime's pick and keel_rollout_init rely on */
            assert(r->rollout.canary < r->clusters_count && r->rollout.others_weight > 0);
            assert(keel_rollout_config_validate(&r->rollout.core, NULL) == 0);
        }
    }
    for (uint32_t i = 0; i < cfg.jwt_providers_count; i++) {
        const keel_proxy_jwt_provider_t *pv = &cfg.jwt_providers[i];
        const keel_proxy_remote_jwks_t *rj = &pv->remote_jwks;
        assert((pv->jwks_file != NULL) + (pv->jwks != NULL) + rj->enabled == 1);
        if (!rj->enabled)
            continue;
        assert(rj->cluster < cfg.clusters_count && !cfg.clusters[rj->cluster].tls.enabled);
        assert(rj->path != NULL && rj->path[0] == '/' && rj->timeout_ms > 0);
        assert(rj->retry_backoff_base_ms > 0 &&
               rj->retry_backoff_cap_ms >= rj->retry_backoff_base_ms);
        assert(rj->cache_duration_ms >= KEEL_PROXY_JWKS_CACHE_MS_MIN);
    }
    keel_proxy_config_free(&cfg);
    return 0;
}
