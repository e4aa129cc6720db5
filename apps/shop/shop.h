/* shop.h - what the shop's services share: their ids, how a main loads its settings and sets
 * up and runs its service.
 * Header only; the stream consumers' code is apps/shop/consumer.{h,c}. */
#ifndef KEEL_APPS_SHOP_H
#define KEEL_APPS_SHOP_H

#include "kit/config.h"
#include "kit/service.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The order events: the event store's category stream of every order (tx/evstore.h), which
 * query projects and notification and shipment consume. */
#define SHOP_ORDER_EVENTS "es:$ce-order"

/* Order, customer and product ids: 1 to SHOP_ID_BYTES_MAX bytes of [A-Za-z0-9._-]. */
#define SHOP_ID_BYTES_MAX 64
#define SHOP_ID_RULE "order ids are 1 to 64 of [A-Za-z0-9._-]"

static inline bool shop_id_ok(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > SHOP_ID_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* The order id in route parameter p, copied into out (SHOP_ID_BYTES_MAX + 1 bytes); a bad
 * one is answered 400 and false returned. */
static inline bool shop_order_param(keel_service_req_t *r, const keel_route_param_t *p, char *out)
{
    if (p == NULL || !shop_id_ok(p->value, p->value_len)) {
        keel_http_respond_error(r->http, 400, SHOP_ID_RULE);
        return false;
    }
    memcpy(out, p->value, p->value_len);
    out[p->value_len] = '\0';
    return true;
}

/* keel_config_load for a service's main (flags, then PREFIX_* environment, no file): -1 to
 * go on, else the code to exit with (2: bad settings, said on stderr; 0: --help shown). */
static inline int shop_config(keel_config_t *conf, const char *prog, const char *env_prefix,
                              const keel_opt_t *opts, size_t n, int argc, char **argv)
{
    keel_errmsg_t msg = {{0}};
    int rc = keel_config_load(conf, prog, env_prefix, opts, n, argc, argv, NULL, &msg);
    if (rc == 0)
        return -1;
    if (rc < 0)
        fprintf(stderr, "%s: %s\n", prog, msg.text);
    return rc < 0 ? 2 : 0;
}

/* keel_service_init for a shop service: its name, where it listens, the registry (NULL: none),
 * its instance id (NULL: the kit's default), and on_stopped(svc, data) once it has drained
 * (close what the handlers use there). */
static inline int shop_service_init(keel_service_t *svc, keel_loop_t *loop, const char *name,
                                    const char *listen, const char *registry, const char *id,
                                    void (*on_stopped)(keel_service_t *svc, void *data), void *data,
                                    keel_errmsg_t *msg)
{
    keel_service_config_t cfg = keel_service_config_default(name);
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = data;
    return keel_service_init(svc, loop, &cfg, msg);
}

/* Says the port on stdout ("<name>: listening on port N"), runs the loop until the service has
 * stopped, and frees the service. */
static inline void shop_service_run(keel_service_t *svc, keel_loop_t *loop, const char *name)
{
    printf("%s: listening on port %d\n", name, keel_service_port(svc));
    fflush(stdout);
    keel_loop_run(loop);
    keel_service_free(svc);
}

#endif
