/* consumer.c - the shop's stream consumers: one consumer of a keel consumer group (consumer.h). */
#include "consumer.h"

#include "base/log.h"
#include "shop.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define BATCH "100" /* SHOP_CONSUMER_BATCH_MAX as COUNT's argument */
#define READ_BLOCK_MS "1000"
#define READ_TIMEOUT_MS 5000 /* a read's deadline (past its BLOCK), a claim's, /lag's */

_Static_assert(SHOP_CONSUMER_BATCH_MAX == 100, "BATCH spells SHOP_CONSUMER_BATCH_MAX");

shop_consumer_config_t shop_consumer_config_default(const char *group, const char *consumer,
                                                    shop_consumer_batch_fn on_batch, void *data)
{
    shop_consumer_config_t c;
    memset(&c, 0, sizeof(c));
    c.stream = SHOP_ORDER_EVENTS;
    c.group = group;
    c.consumer = consumer;
    c.on_batch = on_batch;
    c.data = data;
    c.retry_ms = 500;
    c.claim_idle_ms = 10000;
    c.claim_every_ms = 1000;
    c.linger_ms = 20;
    return c;
}

const keel_resp_value_t *shop_field(const keel_resp_value_t *fields, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; fields && fields->type == KEEL_RESP_ARRAY && i + 1 < fields->elems_len;
         i += 2) {
        const keel_resp_value_t *k = &fields->elems[i];
        if (k->type == KEEL_RESP_BULK && k->str.len == n && memcmp(k->str.ptr, name, n) == 0)
            return &fields->elems[i + 1];
    }
    return NULL;
}

const keel_resp_value_t *shop_group_info(const keel_resp_value_t *groups, const char *group)
{
    for (size_t i = 0; groups->type == KEEL_RESP_ARRAY && i < groups->elems_len; i++)
        if (shop_bulk_is(shop_field(&groups->elems[i], "name"), group))
            return &groups->elems[i];
    return NULL;
}

bool shop_bulk_is(const keel_resp_value_t *v, const char *s)
{
    return v && v->type == KEEL_RESP_BULK && v->str.len == strlen(s) &&
           memcmp(v->str.ptr, s, v->str.len) == 0;
}

int shop_client_init(keel_client_t *cl, keel_loop_t *loop, const char *seeds, keel_errmsg_t *msg)
{
    char text[SHOP_CONSUMER_SEEDS_BYTES_MAX + 1]; /* cut in place; the client copies the seeds */
    if (strlen(seeds) > SHOP_CONSUMER_SEEDS_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "--keel: longer than %d bytes",
                         SHOP_CONSUMER_SEEDS_BYTES_MAX);
    snprintf(text, sizeof(text), "%s", seeds);
    keel_client_config_t cc = keel_client_config_default();
    cc.request_timeout_ms = 0; /* reads block; each request sets its own deadline */
    int rc = keel_client_config_seeds(&cc, text, "--keel", msg);
    return rc != 0 ? rc : keel_client_init(cl, loop, &cc, msg);
}

/* ---- reading ----------------------------------------------------------------------------- */

static void read_more(shop_consumer_t *c);

static void on_ignored(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    (void)ctx;
    (void)status;
    (void)r; /* XGROUP CREATE: BUSYGROUP when the group exists; any failure meets NOGROUP.
              * KEEL.XNACK lost with its connection: the entry stays pending, claimed later. */
}

/* The group, from the stream's start, and its dead-letter policy; both idempotent. */
static void setup(shop_consumer_t *c)
{
    const char *create[] = {"XGROUP", "CREATE", c->stream, c->group, "0", "MKSTREAM"};
    keel_client_command(&c->cl, 6, create, NULL, on_ignored, NULL);
    if (c->dead_letter[0] == '\0')
        return;
    const char *dead[] = {"KEEL.XDEADLETTER", c->stream, c->group,      "MAXDELIVERIES",
                          c->max_deliveries,  "STREAM",  c->dead_letter};
    keel_client_command(&c->cl, 7, dead, NULL, on_ignored, NULL);
}

static void on_acked(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    shop_consumer_t *c = ctx;
    (void)cl;
    /* an XACK lost with its connection: the entries stay pending with this consumer, read
     * again from its own list (reread_own), or claimed once idle */
    if (c->cfg.reread_own && (status != 0 || (r && r->type == KEEL_RESP_ERROR)))
        c->own = true;
}

/* A batch of entries ([id, fields] each, from a read or a claim): the callback, then one XACK
 * of what it left to acknowledge. 0, or the callback's failure (nothing acknowledged). */
static int run_batch(shop_consumer_t *c, const keel_resp_value_t *entries)
{
    shop_entry_t batch[SHOP_CONSUMER_BATCH_MAX];
    size_t n = 0;
    if (entries->type != KEEL_RESP_ARRAY)
        return 0;
    for (size_t e = 0; e < entries->elems_len && n < SHOP_CONSUMER_BATCH_MAX; e++) {
        const keel_resp_value_t *entry = &entries->elems[e];
        if (entry->type != KEEL_RESP_ARRAY || entry->elems_len != 2 ||
            entry->elems[0].type != KEEL_RESP_BULK ||
            entry->elems[0].str.len > SHOP_CONSUMER_ENTRY_ID_BYTES_MAX)
            continue;
        shop_entry_t *b = &batch[n++];
        snprintf(b->id, sizeof(b->id), "%.*s", (int)entry->elems[0].str.len,
                 (const char *)entry->elems[0].str.ptr);
        /* a deleted entry comes back as [id, nil]: nothing to apply, acknowledged */
        b->fields = entry->elems[1].type == KEEL_RESP_ARRAY ? &entry->elems[1] : NULL;
        b->ack = true;
    }
    if (n == 0)
        return 0;
    int rc = c->cfg.on_batch(c, batch, n, c->cfg.data);
    if (rc != 0)
        return rc;
    const char *argv[3 + SHOP_CONSUMER_BATCH_MAX] = {"XACK", c->stream, c->group};
    size_t acks = 0;
    for (size_t i = 0; i < n; i++)
        if (batch[i].ack)
            argv[3 + acks++] = batch[i].id;
    if (acks > 0)
        keel_client_command(&c->cl, 3 + acks, argv, NULL, on_acked, c);
    return 0;
}

static void again_fire(keel_timer_t *t, void *data)
{
    (void)t;
    read_more(data);
}

static void retry_later(shop_consumer_t *c)
{
    if (c->cfg.reread_own)
        c->own = true;
    keel_timer_start(&c->again, c->cfg.retry_ms, 0, again_fire, c);
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    shop_consumer_t *c = ctx;
    (void)cl;
    if (c->stopping)
        return;
    if (status != 0 || r->type == KEEL_RESP_ERROR) {
        /* no group (the stream is empty, or a fresh cluster lost it), or keel unreachable:
         * set up, read again */
        if (status == 0 && r->str.len >= 7 && memcmp(r->str.ptr, "NOGROUP", 7) == 0)
            setup(c);
        retry_later(c);
        return;
    }
    /* [[stream, [entries...]]], or a null array after BLOCK */
    size_t got = 0;
    for (size_t s = 0; r->type == KEEL_RESP_ARRAY && s < r->elems_len; s++) {
        const keel_resp_value_t *st = &r->elems[s];
        if (st->type != KEEL_RESP_ARRAY || st->elems_len != 2)
            continue;
        got += st->elems[1].type == KEEL_RESP_ARRAY ? st->elems[1].elems_len : 0;
        if (run_batch(c, &st->elems[1]) != 0) {
            retry_later(c);
            return;
        }
    }
    if (c->own && got == 0)
        c->own = false; /* its own list is empty: new entries from now on */
    if (got > 0 && got < SHOP_CONSUMER_BATCH_MAX && !c->own && c->cfg.linger_ms > 0) {
        /* a short batch: let the next one gather for linger_ms (each read and each XACK is
         * a keel write; read at once, a consumer took about one entry per read) */
        keel_timer_start(&c->again, c->cfg.linger_ms, 0, again_fire, c);
        return;
    }
    read_more(c);
}

static void read_more(shop_consumer_t *c)
{
    if (c->stopping)
        return;
    const char *argv[] = {"XREADGROUP", "GROUP",   c->group,          c->consumer,
                          "COUNT",      BATCH,     "BLOCK",           READ_BLOCK_MS,
                          "STREAMS",    c->stream, c->own ? "0" : ">"};
    if (keel_client_command_timeout(&c->cl, 11, argv, NULL, READ_TIMEOUT_MS, on_read, c) != 0)
        retry_later(c);
}

/* ---- claiming ---------------------------------------------------------------------------- */

/* XAUTOCLAIM's [next cursor, [entries...], [deleted ids...]]: entries idle for claim_idle_ms
 * with any consumer (one that died) are now this one's: a batch like a read's. */
static void on_claimed(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    shop_consumer_t *c = ctx;
    (void)cl;
    c->claiming = false;
    if (c->stopping || status != 0 || r->type != KEEL_RESP_ARRAY || r->elems_len < 2)
        return;
    const keel_resp_value_t *next = &r->elems[0];
    if (next->type == KEEL_RESP_BULK && next->str.len <= SHOP_CONSUMER_ENTRY_ID_BYTES_MAX)
        snprintf(c->claim_cursor, sizeof(c->claim_cursor), "%.*s", (int)next->str.len,
                 (const char *)next->str.ptr);
    if (run_batch(c, &r->elems[1]) != 0 && c->cfg.reread_own)
        c->own = true; /* they are this consumer's now: read from its own list */
}

static void claim_fire(keel_timer_t *t, void *data)
{
    shop_consumer_t *c = data;
    (void)t;
    if (c->stopping || c->claiming)
        return;
    const char *argv[] = {"XAUTOCLAIM",  c->stream,       c->group, c->consumer,
                          c->claim_idle, c->claim_cursor, "COUNT",  BATCH};
    c->claiming =
        keel_client_command_timeout(&c->cl, 8, argv, NULL, READ_TIMEOUT_MS, on_claimed, c) == 0;
}

/* ---- life -------------------------------------------------------------------------------- */

static int copy_name(char *out, size_t cap, const char *name, const char *what, keel_errmsg_t *msg)
{
    if (name == NULL || name[0] == '\0' || strlen(name) >= cap)
        return keel_errf(msg, KEEL_EINVAL, "consumer: %s must be 1 to %zu bytes", what, cap - 1);
    memcpy(out, name, strlen(name) + 1);
    return 0;
}

int shop_consumer_init(shop_consumer_t *c, keel_loop_t *loop, const char *seeds,
                       const shop_consumer_config_t *cfg, keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    c->cfg = *cfg;
    int rc;
    if ((rc = copy_name(c->stream, sizeof(c->stream), cfg->stream, "the stream", msg)) != 0 ||
        (rc = copy_name(c->group, sizeof(c->group), cfg->group, "the group", msg)) != 0 ||
        (rc = copy_name(c->consumer, sizeof(c->consumer), cfg->consumer, "the name", msg)) != 0 ||
        (cfg->dead_letter != NULL &&
         (rc = copy_name(c->dead_letter, sizeof(c->dead_letter), cfg->dead_letter,
                         "the dead-letter stream", msg)) != 0))
        return rc;
    if (cfg->on_batch == NULL || cfg->retry_ms <= 0 || cfg->claim_idle_ms <= 0 ||
        cfg->claim_every_ms <= 0 || (cfg->dead_letter != NULL && cfg->max_deliveries < 1))
        return keel_errf(msg, KEEL_EINVAL,
                         "consumer: a batch callback, positive times and max_deliveries needed");
    c->cfg.stream = c->stream;
    c->cfg.group = c->group;
    c->cfg.consumer = c->consumer;
    c->cfg.dead_letter = cfg->dead_letter ? c->dead_letter : NULL;
    snprintf(c->max_deliveries, sizeof(c->max_deliveries), "%lld", (long long)cfg->max_deliveries);
    snprintf(c->claim_idle, sizeof(c->claim_idle), "%lld", (long long)cfg->claim_idle_ms);
    snprintf(c->claim_cursor, sizeof(c->claim_cursor), "0-0");
    c->own = cfg->reread_own; /* first what a previous life under this name left pending */
    if ((rc = shop_client_init(&c->cl, loop, seeds, msg)) != 0)
        return rc;
    if (cfg->lag_client && (rc = shop_client_init(&c->ctl, loop, seeds, msg)) != 0)
        goto err_after_cl;
    if ((rc = keel_timer_init(loop, &c->again)) != 0) {
        keel_errf(msg, rc, "consumer: a timer");
        goto err_after_ctl;
    }
    if ((rc = keel_timer_init(loop, &c->claim)) != 0) {
        keel_errf(msg, rc, "consumer: a timer");
        goto err_after_again;
    }
    return 0;
err_after_again:
    keel_timer_close(&c->again, NULL);
err_after_ctl:
    if (cfg->lag_client)
        keel_client_close(&c->ctl, NULL);
err_after_cl:
    keel_client_close(&c->cl, NULL);
    return rc;
}

void shop_consumer_start(shop_consumer_t *c)
{
    setup(c);
    keel_timer_start(&c->claim, c->cfg.claim_every_ms, c->cfg.claim_every_ms, claim_fire, c);
    read_more(c);
}

void shop_consumer_stop(shop_consumer_t *c)
{
    c->stopping = true;
    keel_timer_close(&c->again, NULL);
    keel_timer_close(&c->claim, NULL);
    keel_client_close(&c->cl, NULL); /* entries read and not acknowledged stay pending */
    if (c->cfg.lag_client)
        keel_client_close(&c->ctl, NULL);
}

void shop_consumer_nack(shop_consumer_t *c, shop_entry_t *e, const char *error)
{
    const char *argv[] = {"KEEL.XNACK", c->stream, c->group, e->id, "ERROR", error};
    keel_client_command(&c->cl, 6, argv, NULL, on_ignored, NULL);
    e->ack = false;
}

/* ---- GET /lag ---------------------------------------------------------------------------- */

/* XINFO GROUPS: this group's lag (entries not yet delivered) and pending count. */
static void on_info(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_service_req_t *req = ctx;
    /* the reply comes on the consumer's own ctl: the consumer is around it */
    const shop_consumer_t *c =
        (const shop_consumer_t *)(const void *)((const char *)cl - offsetof(shop_consumer_t, ctl));
    keel_service_req_enter(req);
    const keel_resp_value_t *g = status == 0 ? shop_group_info(r, c->group) : NULL;
    if (g != NULL) {
        const keel_resp_value_t *lag = shop_field(g, "lag"), *pending = shop_field(g, "pending");
        json_t *o = json_pack(
            "{s:o, s:o}", "lag_events",
            lag && lag->type == KEEL_RESP_INT ? json_integer(lag->integer) : json_null(), "pending",
            pending && pending->type == KEEL_RESP_INT ? json_integer(pending->integer)
                                                      : json_null());
        keel_service_respond_json(req, 200, o);
        json_decref(o);
        return;
    }
    keel_http_respond_error(req->http, 503, "the group's state could not be read");
}

void shop_consumer_lag(keel_service_req_t *r, void *data)
{
    shop_consumer_t *c = data;
    assert(c->cfg.lag_client);
    const char *argv[] = {"XINFO", "GROUPS", c->stream};
    if (keel_client_command_timeout(&c->ctl, 3, argv, NULL, READ_TIMEOUT_MS, on_info, r) != 0)
        keel_http_respond_error(r->http, 503, "the group's state could not be read");
}
