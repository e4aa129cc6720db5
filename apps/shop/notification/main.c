/* notification - the shop's notifications: a consumer group on the order events that "sends"
 * a message for every order that ended, with retries, backoff and a dead-letter stream.
 *
 *   keel-shop-notification --keel host:port,... [--listen host:port] [--registry ...]
 *                          [--id ID] [--fail-pct 5] [--max-deliveries 5]
 *                          (also NOTIFICATION_* and a YAML file: kit/config)
 *
 *   GET /stats   {"sent", "retried", "skipped"}: this instance's counts
 *
 * Every instance is a consumer of group "notifications" on the order category stream
 * (es:$ce-order), so the instances share the work and an instance that dies leaves its
 * pending entries to be claimed. An order's "confirmed" or "rejected" event is a message to
 * send; the fake mail provider fails --fail-pct percent of the sends, and a failed send is
 * KEEL.XNACKed (redelivered after the server's backoff: exponential with jitter on the
 * delivery count). After --max-deliveries the entry moves to the dead-letter stream
 * shop.notifications.dlq with its error (KEEL.XDEADLETTER). Other events are acknowledged
 * at once. A send happens at least once: the message carries the order id, which is what a
 * receiver deduplicates on. Entries pending with a consumer that died are claimed after
 * 30 s idle (XAUTOCLAIM) by whichever instance looks first.
 */
#include "base/log.h"
#include "base/rand.h"
#include "client/client.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM "es:$ce-order"
#define GROUP "notifications"
#define DLQ "shop.notifications.dlq"
#define BATCH "100"
#define CLAIM_IDLE_MS "30000"

typedef struct app {
    keel_loop_t *loop;
    keel_client_t cl;
    char consumer[96];
    int64_t fail_pct;
    keel_rand_t rand;
    keel_timer_t again;
    bool stopping, timer_on;
    uint64_t sent, retried, skipped, reads;
    keel_counter_t *m_sent, *m_retried;
} app_t;

static void read_more(app_t *a);

static void on_done(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    (void)ctx;
    (void)status;
    (void)r; /* an XACK or XNACK lost with its connection: the entry stays pending, claimed */
}

static void again_fire(keel_timer_t *t, void *data)
{
    (void)t;
    read_more(data);
}

static const keel_resp_value_t *field(const keel_resp_value_t *fields, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; fields->type == KEEL_RESP_ARRAY && i + 1 < fields->elems_len; i += 2) {
        const keel_resp_value_t *k = &fields->elems[i];
        if (k->type == KEEL_RESP_BULK && k->str.len == n && memcmp(k->str.ptr, name, n) == 0)
            return &fields->elems[i + 1];
    }
    return NULL;
}

/* One delivered entry: send (maybe), then XACK or KEEL.XNACK. */
static void handle(app_t *a, const keel_resp_value_t *entry)
{
    if (entry->type != KEEL_RESP_ARRAY || entry->elems_len != 2 ||
        entry->elems[0].type != KEEL_RESP_BULK)
        return;
    char id[64];
    snprintf(id, sizeof(id), "%.*s", (int)entry->elems[0].str.len,
             (const char *)entry->elems[0].str.ptr);
    const keel_resp_value_t *type = field(&entry->elems[1], "type");
    const keel_resp_value_t *agg = field(&entry->elems[1], "agg");
    bool outcome = type && type->type == KEEL_RESP_BULK &&
                   ((type->str.len == 9 && memcmp(type->str.ptr, "confirmed", 9) == 0) ||
                    (type->str.len == 8 && memcmp(type->str.ptr, "rejected", 8) == 0));
    if (outcome && (int64_t)keel_rand_below(&a->rand, 100) < a->fail_pct) {
        /* the provider failed: back to the group, redelivered after the server's backoff */
        const char *argv[] = {"KEEL.XNACK", STREAM, GROUP, id, "ERROR", "mail provider failed"};
        keel_client_command(&a->cl, 6, argv, NULL, on_done, a);
        a->retried++;
        keel_counter_inc(a->m_retried);
        return;
    }
    if (outcome) {
        a->sent++;
        keel_counter_inc(a->m_sent);
        char order[128] = "?";
        if (agg != NULL && agg->type == KEEL_RESP_BULK)
            snprintf(order, sizeof(order), "%.*s", (int)agg->str.len, (const char *)agg->str.ptr);
        keel_log_debug("notification sent", KF_STR("order", order));
    } else {
        a->skipped++;
    }
    const char *argv[] = {"XACK", STREAM, GROUP, id};
    keel_client_command(&a->cl, 4, argv, NULL, on_done, a);
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    app_t *a = ctx;
    (void)cl;
    if (a->stopping)
        return;
    if (status != 0 || r->type == KEEL_RESP_ERROR) {
        /* no group yet (the stream is empty), or keel unreachable: try again shortly */
        if (status == 0 && r->str.len >= 7 && memcmp(r->str.ptr, "NOGROUP", 7) == 0) {
            const char *argv[] = {"XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM"};
            keel_client_command(&a->cl, 6, argv, NULL, on_done, a);
        }
        keel_timer_start(&a->again, 200, 0, again_fire, a);
        return;
    }
    /* *1 [stream, [entries...]] or a null array after BLOCK */
    if (r->type == KEEL_RESP_ARRAY)
        for (size_t s = 0; s < r->elems_len; s++) {
            const keel_resp_value_t *st = &r->elems[s];
            if (st->type != KEEL_RESP_ARRAY || st->elems_len != 2)
                continue;
            for (size_t e = 0; e < st->elems[1].elems_len; e++)
                handle(a, &st->elems[1].elems[e]);
        }
    read_more(a);
}

static void on_claimed(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    app_t *a = ctx;
    (void)cl;
    /* [next cursor, [entries...], [deleted ids...]]: claimed entries are handled like reads */
    if (a->stopping || status != 0 || r->type != KEEL_RESP_ARRAY || r->elems_len < 2)
        return;
    for (size_t e = 0; e < r->elems[1].elems_len; e++)
        handle(a, &r->elems[1].elems[e]);
}

static void read_more(app_t *a)
{
    if (a->stopping)
        return;
    if (++a->reads % 32 == 0) { /* now and then, take over what a dead consumer left */
        const char *argv[] = {"XAUTOCLAIM",  STREAM, GROUP,   a->consumer,
                              CLAIM_IDLE_MS, "0-0",  "COUNT", BATCH};
        keel_client_command(&a->cl, 8, argv, NULL, on_claimed, a);
    }
    const char *argv[] = {"XREADGROUP", "GROUP", GROUP,     a->consumer, "COUNT", BATCH,
                          "BLOCK",      "1000",  "STREAMS", STREAM,      ">"};
    if (keel_client_command_timeout(&a->cl, 11, argv, NULL, 5000, on_read, a) != 0)
        keel_timer_start(&a->again, 200, 0, again_fire, a);
}

/* ---- main ---------------------------------------------------------------------------------- */

static void h_stats(keel_service_req_t *r, void *data)
{
    app_t *a = data;
    json_t *o = json_pack("{s:I, s:I, s:I}", "sent", (json_int_t)a->sent, "retried",
                          (json_int_t)a->retried, "skipped", (json_int_t)a->skipped);
    keel_service_respond_json(r, 200, o);
    json_decref(o);
}

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    a->stopping = true;
    keel_timer_close(&a->again, NULL);
    keel_client_close(&a->cl, NULL); /* entries read and not acknowledged stay pending */
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8140", *keel = "127.0.0.1:7001", *registry = NULL, *id = NULL;
    int64_t fail_pct = 5, max_deliveries = 5;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0, "keel server host:port,... (the order events)"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service notification there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id and consumer name (default from the port)"},
        {"fail-pct", KEEL_OPT_INT, &fail_pct, 0, 100, "how often the fake mail provider fails"},
        {"max-deliveries", KEEL_OPT_INT, &max_deliveries, 1, 1000,
         "deliveries before an entry goes to the dead-letter stream"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-notification", "NOTIFICATION", opts,
                                sizeof(opts) / sizeof(opts[0]), argc, argv);
    if (exit_code >= 0)
        return exit_code;
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    static app_t app;
    app.loop = &loop;
    app.fail_pct = fail_pct;
    keel_rand_seed(&app.rand, (uint64_t)keel_clock_unix_ms());
    snprintf(app.consumer, sizeof(app.consumer), "%s", id ? id : listen);
    char seeds[1024];
    snprintf(seeds, sizeof(seeds), "%s", keel);
    keel_client_config_t cc = keel_client_config_default();
    cc.request_timeout_ms = 0; /* reads block; each sets its own deadline */
    if ((rc = keel_client_config_seeds(&cc, seeds, "--keel", &msg)) != 0 ||
        (rc = keel_client_init(&app.cl, &loop, &cc, &msg)) != 0) {
        fprintf(stderr, "keel-shop-notification: %s\n", msg.text);
        return 2;
    }
    keel_service_t svc;
    keel_service_config_t cfg = keel_service_config_default("notification");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = &app;
    rc = keel_service_init(&svc, &loop, &cfg, &msg);
    if (rc == 0) {
        const char *help = "Notifications by what became of them.";
        app.m_sent =
            keel_metrics_counter(svc.metrics, "shop_notifications_total", help, "outcome=\"sent\"");
        app.m_retried = keel_metrics_counter(svc.metrics, "shop_notifications_total", help,
                                             "outcome=\"retried\"");
        rc = keel_service_route(&svc, "GET", "/stats", h_stats, &app, &msg);
    }
    if (rc == 0)
        rc = keel_timer_init(&loop, &app.again);
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-notification: %s\n", msg.text);
        return 1;
    }
    /* the group (from the stream's start) and its dead-letter policy; both idempotent */
    char maxd[24];
    snprintf(maxd, sizeof(maxd), "%lld", (long long)max_deliveries);
    const char *create[] = {"XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM"};
    const char *dead[] = {"KEEL.XDEADLETTER", STREAM, GROUP, "MAXDELIVERIES", maxd, "STREAM", DLQ};
    keel_client_command(&app.cl, 6, create, NULL, on_done, &app);
    keel_client_command(&app.cl, 7, dead, NULL, on_done, &app);
    read_more(&app);
    printf("notification: listening on port %d\n", keel_service_port(&svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&svc);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
