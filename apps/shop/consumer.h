/* consumer.h - the shop's stream consumers (notification, shipment): one consumer of a group on
 * a keel stream, read with XREADGROUP, acknowledged after the application's batch callback,
 * with a dead consumer's entries taken over by XAUTOCLAIM.
 *
 *     shop_consumer_config_t cc = shop_consumer_config_default("shipments", id, apply, &app);
 *     shop_consumer_init(&app.consumer, &loop, keel, &cc, &msg);   // clients and timers
 *     shop_consumer_start(&app.consumer);                          // after the service started
 *     ... shop_consumer_stop(&app.consumer) in the service's on_stopped
 *
 * What it does, in order:
 *   - start: XGROUP CREATE stream group 0 MKSTREAM (BUSYGROUP when it exists), and, with a
 *     dead_letter stream, KEEL.XDEADLETTER stream group MAXDELIVERIES n STREAM dead_letter;
 *     both on the reading connection before the first read, so that read finds the group.
 *     A read answered NOGROUP sends both again.
 *   - reads: XREADGROUP GROUP group consumer COUNT 100 BLOCK 1000 STREAMS stream >, each with
 *     a 5 s deadline, one after another; after a batch shorter than COUNT the next read
 *     waits linger_ms (default 20), so that a read and its XACK (two keel writes) carry the
 *     entries of linger_ms rather than one (at 300 orders/s, 3.4 reads and 3.4 XACKs per
 *     order across the shop's four consumers, before). With reread_own the consumer starts with "0"
 * instead of ">" (its own pending entries: what a previous life under the same name left
 *     unacknowledged) until such a read comes back empty, and goes back to "0" after a failed
 *     read, batch or XACK.
 *   - each batch (the entries of one read or one claim): on_batch(c, entries, n, data). It
 *     returns 0 when it is done with them: every entry whose `ack` it left true is then
 *     acknowledged, in one XACK; the callback must have made the entries' effects durable
 *     before it returns (ack only after the effect). It clears `ack` of an entry it returned
 *     with shop_consumer_nack(). Non-zero: nothing is acknowledged, and the consumer reads
 *     again after retry_ms (from its own pending entries with reread_own).
 *   - every claim_every_ms: XAUTOCLAIM stream group consumer claim_idle_ms <cursor> COUNT 100
 *     (the cursor walks the group's pending list and wraps at its end); the claimed entries
 *     are a batch like a read's. One claim at a time.
 *   - a failed read (keel unreachable, an error reply) is tried again after retry_ms.
 *
 * reread_own suits a consumer that acknowledges or fails whole batches (shipment); one that
 * returns single entries with KEEL.XNACK (notification) leaves them in its pending list until
 * their backoff is over, and must not read them again from there.
 *
 * With lag_client, a second connection answers shop_consumer_lag (GET /lag): never behind a
 * blocked read.
 */
#ifndef KEEL_APPS_SHOP_CONSUMER_H
#define KEEL_APPS_SHOP_CONSUMER_H

#include "base/err.h"
#include "base/ktime.h"
#include "client/client.h"
#include "kit/service.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHOP_CONSUMER_BATCH_MAX 100         /* entries a read or a claim asks for */
#define SHOP_CONSUMER_ENTRY_ID_BYTES_MAX 47 /* "<ms>-<seq>": two 20-digit numbers and a dash */
#define SHOP_CONSUMER_NAME_BYTES_MAX 95     /* the consumer's name (--id, or the listen address) */
#define SHOP_CONSUMER_KEY_BYTES_MAX 128     /* a stream's or a group's name */
#define SHOP_CONSUMER_SEEDS_BYTES_MAX 1023  /* the --keel list */

/* One delivered entry. fields is NULL for an entry deleted since it was delivered ([id, nil]). */
typedef struct shop_entry {
    char id[SHOP_CONSUMER_ENTRY_ID_BYTES_MAX + 1];
    const keel_resp_value_t *fields; /* [name, value, ...] */
    bool ack;                        /* true: acknowledged when the batch callback returns 0 */
} shop_entry_t;

typedef struct shop_consumer shop_consumer_t;
typedef int (*shop_consumer_batch_fn)(shop_consumer_t *c, shop_entry_t *entries, size_t n,
                                      void *data);

typedef struct shop_consumer_config {
    const char *stream, *group, *consumer; /* consumer: this instance's name in the group */
    const char *dead_letter;               /* NULL: no dead-letter policy is set */
    int64_t max_deliveries;                /* with dead_letter */
    bool reread_own;                       /* read own pending entries first and after failures */
    bool lag_client;                       /* a second connection, for shop_consumer_lag */
    keel_ms_t retry_ms;                    /* after a failed read or batch */
    keel_ms_t claim_idle_ms;               /* XAUTOCLAIM's min-idle-time */
    keel_ms_t claim_every_ms;              /* how often to claim */
    keel_ms_t linger_ms;                   /* after a short batch, the next read waits this */
    shop_consumer_batch_fn on_batch;
    void *data;
} shop_consumer_config_t;

struct shop_consumer {
    shop_consumer_config_t cfg;
    char stream[SHOP_CONSUMER_KEY_BYTES_MAX + 1], group[SHOP_CONSUMER_KEY_BYTES_MAX + 1];
    char consumer[SHOP_CONSUMER_NAME_BYTES_MAX + 1], dead_letter[SHOP_CONSUMER_KEY_BYTES_MAX + 1];
    char max_deliveries[24], claim_idle[24];
    char claim_cursor[SHOP_CONSUMER_ENTRY_ID_BYTES_MAX + 1];
    keel_client_t cl;  /* reads, acknowledgements, claims, the group's setup */
    keel_client_t ctl; /* GET /lag, with lag_client */
    keel_timer_t again, claim;
    bool stopping, own, claiming;
};

/* Group group on the order events (SHOP_ORDER_EVENTS) as consumer, on_batch(.., data) for each
 * batch; retry_ms 500, claim_idle_ms 10000, claim_every_ms 1000, linger_ms 20; the rest zero. The
 * strings are copied by shop_consumer_init. */
shop_consumer_config_t shop_consumer_config_default(const char *group, const char *consumer,
                                                    shop_consumer_batch_fn on_batch, void *data);

/* Copies cfg's names, opens the connection(s) to keel (seeds: "host:port,...") and the timers.
 * 0, or KEEL_EINVAL (a name too long, no callback) or the client's failure, with msg. */
int shop_consumer_init(shop_consumer_t *c, keel_loop_t *loop, const char *seeds,
                       const shop_consumer_config_t *cfg, keel_errmsg_t *msg);
/* Sets up the group and starts reading and claiming. */
void shop_consumer_start(shop_consumer_t *c);
/* Stops; entries read and not acknowledged stay pending. */
void shop_consumer_stop(shop_consumer_t *c);

/* KEEL.XNACK of e (delivered again after the server's backoff; after max_deliveries, to the
 * dead-letter stream with error) and e->ack = false. From the batch callback. */
void shop_consumer_nack(shop_consumer_t *c, shop_entry_t *e, const char *error);

/* A route handler (data: the consumer, made with lag_client): 200 {"lag_events", "pending"}
 * from XINFO GROUPS, the group's entries not yet delivered and delivered but not yet
 * acknowledged; 503 when they cannot be read. */
void shop_consumer_lag(keel_service_req_t *r, void *data);

/* The value of field name in an entry's [name, value, ...], or NULL. */
const keel_resp_value_t *shop_field(const keel_resp_value_t *fields, const char *name);
/* The entry of group in an XINFO GROUPS reply ([name, ..., lag, ..., pending, ...] each), or
 * NULL. */
const keel_resp_value_t *shop_group_info(const keel_resp_value_t *groups, const char *group);
/* Whether v is the bulk string s. */
bool shop_bulk_is(const keel_resp_value_t *v, const char *s);

/* A client for seeds ("host:port,...", worded as --keel), with no default deadline: reads
 * block and every request sets its own. */
int shop_client_init(keel_client_t *cl, keel_loop_t *loop, const char *seeds, keel_errmsg_t *msg);

#endif
