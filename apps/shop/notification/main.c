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
 * 30 s idle (XAUTOCLAIM, every second) by whichever instance looks first. The reading,
 * acknowledging and claiming are apps/shop/consumer.h's; this file is what a batch does.
 */
#include "base/log.h"
#include "base/rand.h"
#include "client/client.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../consumer.h"
#include "../shop.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP "notifications"
#define DLQ "shop.notifications.dlq"
#define RETRY_MS 200 /* after a failed read */
#define CLAIM_IDLE_MS 30000
#define CLAIM_EVERY_MS 1000

typedef struct app {
    keel_loop_t *loop;
    shop_consumer_t consumer; /* group GROUP on the order events */
    int64_t fail_pct;
    keel_rand_t rand;
    uint64_t sent, retried, skipped;
    keel_counter_t *m_sent, *m_retried;
} app_t;

/* One delivered entry: send (maybe); a failed send goes back to the group with KEEL.XNACK,
 * anything else is acknowledged with the batch. */
static void handle(app_t *a, shop_consumer_t *c, shop_entry_t *entry)
{
    const keel_resp_value_t *type = shop_field(entry->fields, "type");
    const keel_resp_value_t *agg = shop_field(entry->fields, "agg");
    bool outcome = shop_bulk_is(type, "confirmed") || shop_bulk_is(type, "rejected");
    if (outcome && (int64_t)keel_rand_below(&a->rand, 100) < a->fail_pct) {
        /* the provider failed: back to the group, redelivered after the server's backoff */
        shop_consumer_nack(c, entry, "mail provider failed");
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
}

static int on_batch(shop_consumer_t *c, shop_entry_t *entries, size_t n, void *data)
{
    for (size_t e = 0; e < n; e++)
        handle(data, c, &entries[e]);
    return 0;
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
    shop_consumer_stop(&a->consumer); /* entries read and not acknowledged stay pending */
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
    shop_consumer_config_t cc =
        shop_consumer_config_default(GROUP, id ? id : listen, on_batch, &app);
    /* not reread_own: a NACKed entry waits out its backoff in this consumer's pending list */
    cc.dead_letter = DLQ;
    cc.max_deliveries = max_deliveries;
    cc.retry_ms = RETRY_MS;
    cc.claim_idle_ms = CLAIM_IDLE_MS;
    cc.claim_every_ms = CLAIM_EVERY_MS;
    if ((rc = shop_consumer_init(&app.consumer, &loop, keel, &cc, &msg)) != 0) {
        fprintf(stderr, "keel-shop-notification: %s\n", msg.text);
        return 2;
    }
    keel_service_t svc;
    rc = shop_service_init(&svc, &loop, "notification", listen, registry, id, on_stopped, &app,
                           &msg);
    if (rc == 0) {
        const char *help = "Notifications by what became of them.";
        app.m_sent =
            keel_metrics_counter(svc.metrics, "shop_notifications_total", help, "outcome=\"sent\"");
        app.m_retried = keel_metrics_counter(svc.metrics, "shop_notifications_total", help,
                                             "outcome=\"retried\"");
        rc = keel_service_route(&svc, "GET", "/stats", h_stats, &app, &msg);
    }
    if (rc == 0)
        rc = keel_service_start(&svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-notification: %s\n", msg.text);
        return 1;
    }
    /* the group (from the stream's start) and its dead-letter policy, then the reads */
    shop_consumer_start(&app.consumer);
    shop_service_run(&svc, &loop, "notification");
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
