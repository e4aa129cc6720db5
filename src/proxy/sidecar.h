/* sidecar.h - keel proxy's sidecar mode: registers the app beside it in keel server's
 * registry, checks it, reports its health through the registration's TTL check, and
 * deregisters it on SIGTERM before the proxy stops accepting (docs/proxy.md, "Sidecar"). */
#ifndef KEEL_PROXY_SIDECAR_H
#define KEEL_PROXY_SIDECAR_H

#include "base/err.h"
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "runtime/loop.h"

#include <stdbool.h>

/*
 * What it does, in order (a Consul agent's job for an app that never heard of keel):
 *   1. probes the app (cfg->sidecar.health: GET path, or a TCP connect) at once, then every
 *      interval_ms;
 *   2. after the first probe, registers the instance (kit/registration.h) with the status that
 *      probe gave: `service`, `id`, the inbound listener's address (or `advertise`), tags,
 *      meta, weight, version, TTL ttl_ms;
 *   3. keeps it alive every ttl_ms / 3 with the app's status, PASS, WARN or FAIL with the
 *      probe's output: passing while the app is healthy, critical once unhealthy_threshold
 *      probes failed in a row (and passing again after healthy_threshold passed), warning
 *      while a healthy app's HTTP check answers 429 (Consul's rule). A change is sent at once;
 *   4. on keel_sidecar_stop (SIGTERM): stops probing, deregisters (waiting at most
 *      deregister_wait_ms), keeps the proxy serving drain_ms more so callers that picked this
 *      instance just before finish, then calls done: the caller shuts the proxy down.
 * A SIGKILLed sidecar sends nothing: its instance lapses after its TTL.
 */
typedef struct keel_sidecar keel_sidecar_t;

/* Copies what it needs of cfg (cfg->sidecar.enabled); p is running (its inbound listener's
 * bound port is read here). */
int keel_sidecar_start(keel_sidecar_t **out, keel_loop_t *loop, keel_proxy_t *p,
                       const keel_proxy_config_t *cfg, keel_errmsg_t *msg);
/* Deregisters, drains, then done(data); sc frees itself once its handles have closed. */
void keel_sidecar_stop(keel_sidecar_t *sc, void (*done)(void *data), void *data);
/* Whether two configs' sidecar sections are the same (a reload may not change it). */
bool keel_sidecar_same(const keel_proxy_sidecar_t *a, const keel_proxy_sidecar_t *b);

#endif
