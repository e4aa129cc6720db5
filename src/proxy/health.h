/* health.h - active health checks: one probe (an HTTP GET or a TCP connect) and the
 * thresholds that turn probe results into healthy/unhealthy. Used by keel proxy's clusters and
 * by its sidecar for the app beside it. */
#ifndef KEEL_PROXY_HEALTH_H
#define KEEL_PROXY_HEALTH_H

#include "proxy/config.h"
#include "runtime/http_client.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * A probe's outcome: err 0 and the HTTP status (HTTP), or err 0 and status 0 (a TCP connect
 * that succeeded); else err is the KEEL_E* code (KEEL_ETIMEDOUT after timeout_ms,
 * KEEL_ECONNREFUSED, ...). A probe passes when err is 0 and, for HTTP, the status is 2xx.
 * Consul's HTTP check also says "warning" on a 429: keel_proxy_probe_warning() tells it.
 */
typedef void (*keel_proxy_probe_fn)(int err, int status, void *data);

/*
 * Starts one probe of address ("IP:port") as h says: GET h->path through cli (cli may be NULL
 * for a TCP check), or a TCP connect closed at once. 0: fn runs exactly once, later, from the
 * loop (for HTTP, KEEL_ECANCELED when cli closes first). Negative: fn will not run. A TCP
 * probe holds two handles on the loop for at most timeout_ms.
 */
int keel_proxy_probe(keel_loop_t *loop, keel_http_client_t *cli, const char *address,
                     const keel_proxy_health_t *h, keel_proxy_probe_fn fn, void *data);
bool keel_proxy_probe_passed(int err, int status);
bool keel_proxy_probe_warning(int err, int status);

/*
 * Damping (Envoy's healthy_threshold and unhealthy_threshold): a healthy host turns unhealthy
 * after unhealthy_threshold failed probes in a row, an unhealthy one healthy after
 * healthy_threshold passed probes in a row. Returns +1 when *healthy turned true, -1 when it
 * turned false, 0 otherwise. Pure.
 */
int keel_proxy_health_judge(const keel_proxy_health_t *h, bool passed, uint32_t *ok_run,
                            uint32_t *fail_run, bool *healthy);

#endif
