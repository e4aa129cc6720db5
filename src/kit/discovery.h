/* discovery.h - client-side discovery: a service's healthy instances, kept current from
 * keel server's registry, served from the last answer when the registry cannot be reached. */
#ifndef KEEL_KIT_DISCOVERY_H
#define KEEL_KIT_DISCOVERY_H

#include "base/err.h"
#include "base/metrics.h"
#include "client/client.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/*
 *   keel_discovery_t d;
 *   keel_discovery_start(&d, &loop, "127.0.0.1:7001,127.0.0.1:7002", "orders", NULL,
 *                        on_change, app, &msg);
 *   ... keel_discovery_instances(&d, &n) -> the passing instances, newest answer ...
 *   keel_discovery_close(&d, NULL);
 *
 * It asks `KEEL.REG WAIT service index ms PASSING [TAG t]` in a loop (a blocking query:
 * the registry answers when the service changes, or after the wait with the same index),
 * on a connection of its own, and calls on_change when the list changes. When the registry
 * cannot be reached (no node answers, a timeout, an error), the last list stays: a
 * registry blip never empties it. It logs once per outage and counts the failures
 * (keel_discovery_registry_failures_total); it asks again after a backoff. An empty
 * answer from a reachable registry is believed: then there are no passing instances.
 */
#define KEEL_DISCOVERY_INSTANCES_MAX 4096u
#define KEEL_DISCOVERY_ID_BYTES_MAX 128u
#define KEEL_DISCOVERY_ADDR_BYTES_MAX 256u
#define KEEL_DISCOVERY_WAIT_MS 30000
#define KEEL_DISCOVERY_ZONE_BYTES_MAX 64u
/* An instance's zone is its registry meta `zone` (kit/service.h registers KEEL_ZONE there). */
#define KEEL_DISCOVERY_ZONE_META "zone"
/* The environment variable that names the zone (region, rack) a process runs in: services
 * register it, callers prefer instances of the same zone (`keel up --regions` sets it). */
#define KEEL_ZONE_ENV "KEEL_ZONE"

typedef struct keel_discovery_instance {
    char id[KEEL_DISCOVERY_ID_BYTES_MAX];
    char address[KEEL_DISCOVERY_ADDR_BYTES_MAX];
    int port;
    uint32_t weight;                          /* weight_passing */
    char zone[KEEL_DISCOVERY_ZONE_BYTES_MAX]; /* meta zone; "" none (or too long) */
} keel_discovery_instance_t;

typedef struct keel_discovery keel_discovery_t;
typedef void (*keel_discovery_fn)(keel_discovery_t *d, void *data);

struct keel_discovery {
    keel_loop_t *loop;
    keel_client_t *cl;
    keel_timer_t retry;
    char service[KEEL_DISCOVERY_ID_BYTES_MAX], tag[KEEL_DISCOVERY_ID_BYTES_MAX];
    char seeds_text[512];
    keel_discovery_instance_t *list; /* the last answer */
    size_t n;
    uint64_t index; /* the registry's index for the service in that answer */
    bool answered;  /* an answer came at least once */
    bool failing;   /* the last ask failed (an outage is logged once) */
    bool closing;
    uint32_t failures; /* in a row: the backoff grows with it */
    uint64_t failures_total, changes;
    keel_discovery_fn on_change;
    void *data;
    keel_counter_t *m_failures; /* may be NULL */
    void (*closed)(keel_discovery_t *d);
};

/* The balancer priority (core/balance.h) of an instance for a caller in `zone`: 1 when it is
 * known to be in another zone, else 0 (no zone on either side demotes nothing). */
static inline uint32_t keel_discovery_priority(const keel_discovery_instance_t *inst,
                                               const char *zone)
{
    return zone && zone[0] && inst->zone[0] && strcmp(inst->zone, zone) != 0;
}

/* metrics may be NULL. */
int keel_discovery_start(keel_discovery_t *d, keel_loop_t *loop, const char *registry,
                         const char *service, const char *tag, keel_discovery_fn on_change,
                         void *data, keel_metrics_t *metrics, keel_errmsg_t *msg);
const keel_discovery_instance_t *keel_discovery_instances(const keel_discovery_t *d, size_t *n);
/* Stops asking; closed (may be NULL) runs once d's own handle (its retry timer) has closed, so
 * d may be freed there (the connection closes and frees itself). */
void keel_discovery_close(keel_discovery_t *d, void (*closed)(keel_discovery_t *d));

#endif
