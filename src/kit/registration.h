/* registration.h - one instance's registration in keel server's registry: register, keep
 * alive with a TTL heartbeat (or check results), deregister. Used by the service kit for its
 * own instance and by keel proxy's sidecar for the app beside it. */
#ifndef KEEL_KIT_REGISTRATION_H
#define KEEL_KIT_REGISTRATION_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "client/client.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>

/*
 *   keel_registration_t *r;
 *   keel_registration_config_t rc = keel_registration_config_default();
 *   rc.registry = "127.0.0.1:7001,127.0.0.1:7002"; rc.service = "notes"; ...
 *   keel_registration_start(&r, &loop, &rc, &msg);     // registers now, then every ttl_ms / 3
 *   keel_registration_report(r, KEEL_REGISTRATION_CRITICAL, "connect refused");  // optional
 *   keel_registration_deregister(r, 2000, done, data);  // on SIGTERM, before closing
 *   keel_registration_close(r);                         // frees itself once its handles close
 *
 * The instance is registered with KEEL.REG REGISTER ... TTL ttl_ms (docs/registry.md). Every
 * ttl_ms / 3 it is kept alive: with KEEL.REG HEARTBEAT while nobody reported a status (the
 * kit's case: an instance that runs is passing), else with the status last reported, as
 * KEEL.REG PASS|WARN|FAIL id output (Consul's TTL check, renewed by each result; the sidecar's
 * case). A report that changes the status is sent at once. When the registry answers that it
 * does not know the instance (its TTL lapsed during a partition, or the registration was lost
 * in a leader change), it is registered again, with the status last reported. Each
 * registration, heartbeat or report the registry did not acknowledge counts in
 * keel_service_registry_failures_total{labels}.
 */
#define KEEL_REGISTRATION_TAGS_MAX 16u
#define KEEL_REGISTRATION_META_MAX 16u /* key/value pairs */
#define KEEL_REGISTRATION_ID_BYTES_MAX 160u
#define KEEL_REGISTRATION_OUTPUT_BYTES_MAX 256u /* a report's output, cut */

typedef enum keel_registration_status {
    KEEL_REGISTRATION_UNREPORTED, /* heartbeats only */
    KEEL_REGISTRATION_PASSING,
    KEEL_REGISTRATION_WARNING,
    KEEL_REGISTRATION_CRITICAL,
} keel_registration_status_t;

typedef struct keel_registration_config {
    const char *registry; /* "host:port,host:port": keel server client addresses */
    const char *service;
    const char *instance_id;
    const char *address; /* what callers connect to */
    int port;
    keel_ms_t ttl_ms; /* > 0; heartbeats every ttl_ms / 3 */
    const char *const *tags;
    uint32_t tags_count;
    const char *const *meta; /* meta_count pairs: key, value, key, value ... */
    uint32_t meta_count;
    uint32_t weight;     /* 0: the registry's default (1) */
    const char *version; /* NULL: none */
    /* The status the first registration carries (UNREPORTED: the registry's default,
     * passing). */
    keel_registration_status_t status;
    keel_metrics_t *metrics; /* may be NULL */
    const char *labels;      /* for the failures counter, e.g. service="notes" */
} keel_registration_config_t;

typedef struct keel_registration keel_registration_t;
typedef void (*keel_registration_done_fn)(keel_registration_t *r, void *data);

keel_registration_config_t keel_registration_config_default(void);
/* Checks the config, copies what it needs and registers at once (asynchronously). */
int keel_registration_start(keel_registration_t **out, keel_loop_t *loop,
                            const keel_registration_config_t *cfg, keel_errmsg_t *msg);
/* The instance's status from now on (sent at once when it changed, and with every heartbeat
 * after). output (may be NULL) is the check's output, cut at KEEL_REGISTRATION_OUTPUT_BYTES_MAX. */
void keel_registration_report(keel_registration_t *r, keel_registration_status_t status,
                              const char *output);
/* Whether the registry has acknowledged the registration (and no deregistration since). */
bool keel_registration_registered(const keel_registration_t *r);
/* Stops the heartbeats and deregisters; done runs once the registry answered or timeout_ms
 * passed (then the TTL removes the instance), never from inside this call. Once. */
void keel_registration_deregister(keel_registration_t *r, keel_ms_t timeout_ms,
                                  keel_registration_done_fn done, void *data);
/* Stops everything (a deregistration in flight is abandoned, its done not called); r frees
 * itself once its handles have closed. */
void keel_registration_close(keel_registration_t *r);

#endif
