/* proxy.h - keel proxy: an HTTP/1.1 reverse proxy on the event loop, configured by proxy/config.h.
 */
#ifndef KEEL_PROXY_PROXY_H
#define KEEL_PROXY_PROXY_H

#include "base/err.h"
#include "proxy/config.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Lifecycle (libuv's rule): keel_proxy_start() starts the config's workers (worker 0 on loop,
 * the others on threads of their own, docs/proxy.md "Workers"), binds every listener (and the
 * admin listener) or fails without leaving anything open; the proxy then runs
 * on the loop until keel_proxy_shutdown(), which stops accepting, closes every
 * connection and calls done once every handle is closed (the proxy is freed
 * then). docs/proxy.md describes the behaviour in full.
 */
typedef struct keel_proxy keel_proxy_t;

/* Takes cfg (heap-allocated, from keel_proxy_config_parse) and copies text (served by the
 * admin's /config). On failure cfg is freed too and msg says why. */
int keel_proxy_start(keel_loop_t *loop, keel_proxy_config_t *cfg, const char *text, size_t len,
                     keel_proxy_t **out, keel_errmsg_t *msg);
/*
 * Replaces the config with text[0..len) (copied) if it is valid: requests that start afterwards
 * use it, requests in flight finish on the one they started with (every worker swaps to it on
 * its own loop). `workers` cannot change either (absent: the count in force). Listener and admin
 * addresses cannot change (KEEL_EINVAL: restart for that). A config with errors is refused
 * (KEEL_EINVAL, errs filled) and the old one keeps serving. Breaker, outlier, pool and rate-limit
 * state start afresh in the new config.
 */
int keel_proxy_reload(keel_proxy_t *p, const char *text, size_t len, keel_proxy_errors_t *errs,
                      keel_errmsg_t *msg);
/* Whether the config in force names keys read or fetched at load (JWKS files, remote JWKS,
 * TLS certificates, keys and CA files): a reload reads or fetches them again. */
bool keel_proxy_reads_keys_at_load(const keel_proxy_t *p);
/* The port listener i listens on, or a negative KEEL_E*. */
int keel_proxy_listener_port(const keel_proxy_t *p, uint32_t i);
/* The admin listener's port, or KEEL_ENOTFOUND when there is none. */
int keel_proxy_admin_port(const keel_proxy_t *p);
void keel_proxy_shutdown(keel_proxy_t *p, void (*done)(keel_proxy_t *p, void *data), void *data);
/* keel_loop_hook_fn-shaped, for keel_loop_on_shutdown(). */
void keel_proxy_shutdown_hook(void *p);

#endif
