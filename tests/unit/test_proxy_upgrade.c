/* test_proxy_upgrade.c - a route's `upgrades:` and `upgrade_idle_timeout_ms` (loaded and
 * refused, with lines), and which requests ask a route for an upgrade (proxy_tunnel.c). */
#include "ktest.h"
#include "proxy_cfg_test.h"
#include "base/err.h"
#include "proxy/config.h"
#include "proxy/h1.h"
#include "proxy/proxy_conn_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char good[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"
                           "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"
                           "routes:\n"
                           "  - name: ws\n"
                           "    match: {prefix: /ws/}\n"
                           "    cluster: a\n"
                           "    upgrades: [WebSocket, h2c]\n"
                           "  - name: slow\n"
                           "    match: {prefix: /slow/}\n"
                           "    cluster: a\n"
                           "    upgrades: [websocket]\n"
                           "    upgrade_idle_timeout_ms: 250\n"
                           "  - name: plain\n"
                           "    cluster: a\n";

static void loads_upgrades_lower_cased_with_an_hour_of_idle_timeout_by_default(void)
{
    int rc = parse(good);
    if (rc != 0)
        dump_errors();
    KT_EQ_INT(rc, 0);
    KT_EQ_INT(cfg.routes[0].upgrades_count, 2);
    KT_EQ_STR(cfg.routes[0].upgrades[0], "websocket");
    KT_EQ_STR(cfg.routes[0].upgrades[1], "h2c");
    KT_EQ_INT(cfg.routes[0].upgrade_idle_timeout_ms, 3600000);
    KT_EQ_INT(cfg.routes[1].upgrades_count, 1);
    KT_EQ_INT(cfg.routes[1].upgrade_idle_timeout_ms, 250);
    KT_EQ_INT(cfg.routes[2].upgrades_count, 0); /* off unless asked for */
    keel_proxy_config_free(&cfg);
}

static void refuses_bad_upgrades_naming_their_lines(void)
{
    static const char bad[] = "listeners: [{name: l, address: 127.0.0.1:8080}]\n"   /* 1 */
                              "clusters: [{name: a, hosts: [127.0.0.1:9001]}]\n"    /* 2 */
                              "routes:\n"                                           /* 3 */
                              "  - direct_response: {status: 200}\n"                /* 4 */
                              "    upgrades: [websocket]\n"                         /* 5 */
                              "  - cluster: a\n"                                    /* 6 */
                              "    upgrades: [websocket, WEBSOCKET]\n"              /* 7 */
                              "  - cluster: a\n"                                    /* 8 */
                              "    upgrades: [\"web socket\"]\n"                    /* 9 */
                              "  - cluster: a\n"                                    /* 10 */
                              "    upgrades: [a, b, c, d, e]\n"                     /* 11 */
                              "  - cluster: a\n"                                    /* 12 */
                              "    upgrades: [abcdefghijklmnopqrstuvwxyz0123456]\n" /* 13 */
                              "  - cluster: a\n"                                    /* 14 */
                              "    upgrade_idle_timeout_ms: 0\n";                   /* 15 */
    KT_EQ_INT(parse(bad), KEEL_EINVAL);
    KT_CHECK(has_error(5, "upgrades: needs a cluster or weighted_clusters route"));
    KT_CHECK(has_error(7, "'websocket' is listed twice"));
    KT_CHECK(has_error(9, "upgrades"));
    KT_CHECK(has_error(11, "upgrades"));
    KT_CHECK(has_error(13, "a protocol name is 1..31 bytes"));
    KT_CHECK(has_error(15, "upgrade_idle_timeout_ms"));
    if (errs.count != 6)
        dump_errors();
    KT_EQ_INT(errs.count, 6);
    keel_proxy_config_free(&cfg);
}

/* The route's protocol a request asks for, or NULL. */
static const char *asked(const keel_proxy_route_t *r, const char *head)
{
    static keel_h1_head_t h;
    keel_h1_limits_t lim = {8192, 16384, 100};
    size_t n = strlen(head);
    KT_EQ_INT(keel_h1_parse_request(head, n, &lim, &h), 0);
    return keel__upgrade_requested(r, head, &h);
}

static void asks_for_an_upgrade_only_with_get_connection_upgrade_and_one_listed_protocol(void)
{
    KT_EQ_INT(parse(good), 0);
    const keel_proxy_route_t *ws = &cfg.routes[0], *plain = &cfg.routes[2];
    const char *p = asked(ws, "GET /ws/ HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\n"
                              "Upgrade: WEBSOCKET\r\n\r\n");
    KT_CHECK(p != NULL && strcmp(p, "websocket") == 0);
    p = asked(ws, "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: h2c/1\r\n\r\n");
    KT_CHECK(p != NULL && strcmp(p, "h2c") == 0);
    /* no Connection: upgrade, another method, HTTP/1.0, a list, an unlisted protocol */
    KT_CHECK(asked(ws, "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\r\n") == NULL);
    KT_CHECK(asked(ws, "POST / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                       "Upgrade: websocket\r\n\r\n") == NULL);
    KT_CHECK(asked(ws, "GET / HTTP/1.0\r\nHost: t\r\nConnection: upgrade\r\n"
                       "Upgrade: websocket\r\n\r\n") == NULL);
    KT_CHECK(asked(ws, "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                       "Upgrade: websocket, h2c\r\n\r\n") == NULL);
    KT_CHECK(asked(ws, "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                       "Upgrade: tls/1.2\r\n\r\n") == NULL);
    /* a route without upgrades never switches */
    KT_CHECK(asked(plain, "GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\n"
                          "Upgrade: websocket\r\n\r\n") == NULL);
    keel_proxy_config_free(&cfg);
}

int main(void)
{
    KT_RUN(loads_upgrades_lower_cased_with_an_hour_of_idle_timeout_by_default);
    KT_RUN(refuses_bad_upgrades_naming_their_lines);
    KT_RUN(asks_for_an_upgrade_only_with_get_connection_upgrade_and_one_listed_protocol);
    return kt_done();
}
