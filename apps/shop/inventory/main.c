/* inventory - the shop's stock service: stock per product in keel server, reservations that
 * expire with their keys' TTL (the reservation's lease), no oversell under any interleaving.
 *
 *   keel-shop-inventory --keel host:port,... [--listen host:port] [--registry host:port,...]
 *                       [--reservation-ttl-ms 900000] [--id ID]  (also INVENTORY_* and a file)
 *
 *   POST   /products/:id/restock       {"qty": n}                 200 {"id", "stock"}
 *   GET    /products/:id                                           200 {"id", "stock",
 *                                                                      "reserved", "available"}
 *   PUT    /reservations/:order        {"items": [{"product", "qty"}, ...]}
 *            201 reserved; 200 the same order again (reserved or confirmed); 409 not enough
 *            stock (nothing reserved) or the order was released; 422 other items under the
 *            same order id
 *   POST   /reservations/:order/confirm  200 (again: 200); 410 the reservation expired or
 *                                        never was; 409 released
 *   DELETE /reservations/:order        204 released (again, or never reserved: 204, and a
 *                                        late reserve of it is refused); 409 confirmed
 *   GET    /reservations/:order        200 {"status": reserved|confirmed|released|none, ...}
 *
 * Data in keel server (docs/shop.md has the reasoning):
 *   inv:stock:P         units on hand (not yet sold); reservations are not subtracted
 *   inv:rlist:P         the orders that may hold a reservation of P, "O=qty@deadline_ms"
 *   inv:rdone:P         the orders of that list confirmed or released since P's last reserve
 *   inv:resv:P:O        O's reserved quantity of P, with PX = the reservation TTL
 *   inv:order:O         O's items (JSON), same PX: O is reserved while it lives
 *   inv:sold:O          O's items once confirmed (no TTL)
 *   inv:released:O      O was released (PX 24 h): a late reserve of O is refused
 * available(P) = stock(P) - the sum of P's live reservations. A reservation's expiry is its
 * keys' TTL, applied by keel's leader: nothing has to notice it, so nothing can miss it.
 * Every change is one KEEL.TXN whose watched versions are those of the keys it read
 * (stock, rlist and rdone of each product, the order's keys): any concurrent change to them
 * makes it fail as a whole and the operation starts again (at most ATTEMPTS_MAX times, with
 * backoff). So a reserve that saw enough stock commits only if nobody reserved, confirmed,
 * released or restocked those products in between, and a confirm only if its reservation
 * still lives. Each is one read round and the TXN (rlist.c says when a reserve reads a
 * second time).
 */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reserve -------------------------------------------------------------------------- */
/* slots: 0 order, 1 sold, 2 released, then per item: 3+3i stock, 4+3i rlist, 5+3i rdone; then
 * per item one MGET of the reservation keys its rlist entries need checked (slot 3+3n+i,
 * empty when none: usually all of them, so a reserve is one read round and a KEEL.TXN). */

static rentry_t ents[RLIST_READ_MAX]; /* one product's entries at a time */

static void order_queue(op_t *o);

static void reserve_queue_state_items(op_t *o)
{
    char k[KEY_BYTES];
    for (size_t i = 0; i < o->n_items; i++) {
        key(k, sizeof(k), "stock", o->items[i].product, NULL);
        getv(o, k);
        key(k, sizeof(k), "rlist", o->items[i].product, NULL);
        getv(o, k);
        key(k, sizeof(k), "rdone", o->items[i].product, NULL);
        getv(o, k);
    }
}

static void reserve_queue_state(op_t *o)
{
    order_queue(o);
    reserve_queue_state_items(o);
}

static int item_view(op_t *o, size_t i)
{
    return rlist_view(&o->slots[4 + 3 * i], &o->slots[5 + 3 * i], o->now_ms, o->app->ttl_ms, ents,
                      RLIST_READ_MAX);
}

static void reserve_queue_checks(op_t *o)
{
    for (size_t i = 0; i < o->n_items; i++) {
        int n = item_view(o, i);
        if (n < 0) /* reserve_decide answers it */
            o->n_slots++;
        else
            rlist_queue_checks(o, o->items[i].product, ents, n);
    }
}

static void reserved(op_t *o)
{
    answer(o, 201,
           json_pack("{s:s, s:s, s:I}", "order", o->order, "status", "reserved", "expires_in_ms",
                     (json_int_t)o->app->ttl_ms));
}

/* The checked entries a reserve prunes, whose keys its KEEL.TXN watches at version 0. */
typedef struct pruned {
    char keys[PRUNE_WATCH_MAX][KEY_BYTES];
    size_t n;
} pruned_t;

/*
 * What of P is held, and P's new rlist (the live entries, then this order's) into *out.
 * A checked entry whose key read nil is pruned only with its key noted in *pr: the reserve's
 * transaction watches it at version 0, so a key that still lives when the transaction is
 * applied (the read judged by a node whose clock was ahead) fails it; past PRUNE_WATCH_MAX
 * it stays, counted as held (its quantity; 0 for a bare id). pr NULL (a product's GET, which
 * decides nothing): pruned and not held. out NULL: only *held (no new list built).
 */
static int item_held(op_t *o, size_t i, int64_t *held, char **out, pruned_t *pr)
{
    const slot_t *checks = &o->slots[3 + 3 * o->n_items + i];
    int n = item_view(o, i);
    if (n < 0)
        return n;
    size_t cap = (o->slots[4 + 3 * i].present ? o->slots[4 + 3 * i].len : 0) + ID_BYTES_MAX + 64,
           len = 0, c = 0, kept = 0;
    char *rl = out ? malloc(cap) : NULL;
    if (out && rl == NULL)
        return KEEL_ENOMEM;
    *held = 0;
    for (int j = 0; j < n; j++) {
        const rentry_t *e = &ents[j];
        int64_t q = e->qty;
        if (e->cls == RENTRY_DONE)
            continue; /* confirmed or released: pruned */
        if (e->cls == RENTRY_CHECK) {
            if (c >= checks->n) {
                free(rl);
                return RLIST_CORRUPT;
            }
            q = checks->ints[c++];
            if (q < 0 && pr == NULL)
                continue; /* expired, as far as a product's GET can tell */
            if (q < 0 && pr->n < PRUNE_WATCH_MAX) { /* expired: pruned, watched */
                snprintf(pr->keys[pr->n++], KEY_BYTES, "inv:resv:%s:%.*s", o->items[i].product,
                         (int)e->id_len, e->id);
                continue;
            }
            if (q < 0)
                q = e->qty > 0 ? e->qty : 0;
        }
        *held += q;
        kept++;
        if (rl) {
            memcpy(rl + len, e->text, e->len);
            len += e->len;
            rl[len++] = ' ';
        }
    }
    if (kept + 1 > OPEN_RESERVATIONS_MAX) {
        free(rl);
        return RLIST_TOO_MANY;
    }
    if (out == NULL)
        return 0;
    snprintf(rl + len, cap - len, "%s=%lld@%lld", o->order, (long long)o->items[i].qty,
             (long long)(o->now_ms + o->app->ttl_ms));
    *out = rl;
    return 0;
}

static void reserve_decide(op_t *o)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    app_t *a = o->app;
    size_t n = o->n_items;
    char *rl[ITEMS_MAX] = {0};
    static pruned_t prune; /* one reserve at a time decides (the loop's thread) */
    pruned_t *pr = &prune;
    pr->n = 0;
    for (size_t i = 0; i < n; i++) {
        const slot_t *stock = &o->slots[3 + 3 * i];
        int64_t have = 0, held = 0;
        int rc = item_held(o, i, &held, &rl[i], pr);
        if (rc == 0 && stock->present &&
            keel_parse_i64((const uint8_t *)stock->val, stock->len, &have) != 0)
            rc = RLIST_CORRUPT;
        if (rc != 0) {
            for (size_t j = 0; j <= i; j++)
                free(rl[j]);
            answer_error(o, 503,
                         rc == RLIST_TOO_MANY ? "too many open reservations of a product"
                         : rc == KEEL_ENOMEM  ? "out of memory"
                                              : "corrupt inventory data");
            return;
        }
        if (have - held < o->items[i].qty) {
            for (size_t j = 0; j <= i; j++)
                free(rl[j]);
            if (a->m_oversell_refusals)
                keel_counter_inc(a->m_oversell_refusals);
            answer(o, 409,
                   json_pack("{s:s, s:s, s:s, s:I, s:I}", "error", "insufficient stock", "order",
                             o->order, "product", o->items[i].product, "available",
                             (json_int_t)(have - held), "requested", (json_int_t)o->items[i].qty));
            return;
        }
    }
    txn_t *t = malloc(sizeof(*t));
    char(*keys)[KEY_BYTES] = malloc(sizeof(*keys) * (3 + 4 * n));
    char qty[ITEMS_MAX][24], px[24];
    if (t == NULL || keys == NULL) {
        free(t);
        free(keys);
        for (size_t j = 0; j < n; j++)
            free(rl[j]);
        answer_error(o, 503, "out of memory");
        return;
    }
    snprintf(px, sizeof(px), "%lld", (long long)a->ttl_ms);
    /* Watched: the order's keys, and each product's stock, rlist and rdone as read (a reserve
     * or a confirm of the same product in between moves one of them, a confirm both the
     * stock and the rdone, a release the rdone), and the pruned reservations' keys absent. */
    txn_begin(t);
    key(keys[0], KEY_BYTES, "order", o->order, NULL);
    key(keys[1], KEY_BYTES, "sold", o->order, NULL);
    key(keys[2], KEY_BYTES, "released", o->order, NULL);
    for (size_t k = 0; k < 3; k++)
        txn_watch(t, keys[k], &o->slots[k]);
    for (size_t i = 0; i < n; i++) {
        key(keys[3 + 4 * i], KEY_BYTES, "stock", o->items[i].product, NULL);
        key(keys[4 + 4 * i], KEY_BYTES, "rlist", o->items[i].product, NULL);
        key(keys[5 + 4 * i], KEY_BYTES, "rdone", o->items[i].product, NULL);
        for (size_t k = 0; k < 3; k++)
            txn_watch(t, keys[3 + 4 * i + k], &o->slots[3 + 3 * i + k]);
    }
    static const slot_t absent; /* version 0: the pruned reservations must not live */
    for (size_t k = 0; k < pr->n; k++)
        txn_watch(t, pr->keys[k], &absent);
    txn_cmds(t);
    for (size_t i = 0; i < n; i++) {
        key(keys[6 + 4 * i], KEY_BYTES, "resv", o->items[i].product, o->order);
        snprintf(qty[i], sizeof(qty[i]), "%lld", (long long)o->items[i].qty);
        const char *set_list[] = {"SET", keys[4 + 4 * i], rl[i]};
        const char *set_resv[] = {"SET", keys[6 + 4 * i], qty[i], "PX", px};
        const char *del_done[] = {"DEL", keys[5 + 4 * i]};
        txn_cmd(t, 3, set_list);
        txn_cmd(t, 5, set_resv);
        if (o->slots[5 + 3 * i].present) /* its orders are pruned from the new list */
            txn_cmd(t, 2, del_done);
    }
    const char *set_order[] = {"SET", keys[0], o->items_json, "PX", px};
    txn_cmd(t, 5, set_order);
    txn_send(o, t, reserved);
    free(t);
    free(keys);
    for (size_t j = 0; j < n; j++)
        free(rl[j]);
}

static void reserve_have_state(op_t *o)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    const slot_t *order = &o->slots[0], *sold = &o->slots[1], *rel = &o->slots[2];
    const slot_t *mine = sold->present ? sold : order->present ? order : NULL;
    if (mine != NULL) { /* the same order again */
        bool same =
            mine->len == strlen(o->items_json) && memcmp(mine->val, o->items_json, mine->len) == 0;
        if (!same) {
            answer_error(o, 422, "this order id was reserved with other items");
            return;
        }
        answer(o, 200,
               json_pack("{s:s, s:s}", "order", o->order, "status",
                         sold->present ? "confirmed" : "reserved"));
        return;
    }
    if (rel->present) {
        answer_error(o, 409, "this order was released");
        return;
    }
    o->now_ms = keel_clock_unix_ms(); /* both stages judge the entries by this one clock */
    batch(o, reserve_queue_checks, reserve_decide);
}

static void reserve_read(op_t *o)
{
    slots_clear(o);
    batch(o, reserve_queue_state, reserve_have_state);
}

/* ---- confirm and release ------------------------------------------------------------- */
/* slots: 0 order, 1 sold, 2 released: one read round, then the KEEL.TXN. */

static void order_queue(op_t *o)
{
    char k[KEY_BYTES];
    key(k, sizeof(k), "order", o->order, NULL);
    getv(o, k);
    key(k, sizeof(k), "sold", o->order, NULL);
    getv(o, k);
    key(k, sizeof(k), "released", o->order, NULL);
    getv(o, k);
}

static void confirmed(op_t *o)
{
    answer(o, 200, json_pack("{s:s, s:s}", "order", o->order, "status", "confirmed"));
}

static void released(op_t *o)
{
    keel_service_req_enter(o->req);
    keel_http_respond(o->req->http, 204, NULL, 0, NULL, 0);
    op_free(o);
}

/* Ends the order's reservation: a confirm (sell: the stock's DECRBY and inv:sold:O) or a
 * release (inv:released:O). Watched: inv:order:O and inv:sold:O only. The reservation keys
 * inv:resv:P:O were written in the same entry as inv:order:O with the same PX, so they
 * share its deadline to the millisecond (keel judges a key's expiry by the applying entry's
 * time, the same for every key of an entry), and only this transaction deletes them: while
 * inv:order:O is unchanged they all live, and a confirm cannot sell a reservation that
 * expired a moment before. The stock is not watched: DECRBY is blind, and while the
 * reservation lives its units are already counted out of what is available, so moving them
 * to the sale changes no other order's view (watching it made every confirm fail against any
 * reserve or confirm of the same product: in regions, a third of the inventory's conflicts).
 * Each product's inv:rdone:P gets the order's id, so the next reserve of P knows, without
 * reading inv:resv:P:O, that this entry of its rlist no longer holds stock. */
static void end_commit(op_t *o, bool sell)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    size_t n = o->n_items;
    txn_t *t = malloc(sizeof(*t));
    char(*keys)[KEY_BYTES] = malloc(sizeof(*keys) * (3 + 3 * n));
    if (t == NULL || keys == NULL) {
        free(t);
        free(keys);
        answer_error(o, 503, "out of memory");
        return;
    }
    char qty[ITEMS_MAX][24], px[24], id[ID_BYTES_MAX + 2];
    snprintf(px, sizeof(px), "%lld", (long long)RELEASED_TTL_MS);
    snprintf(id, sizeof(id), " %s", o->order);
    txn_begin(t);
    key(keys[0], KEY_BYTES, "order", o->order, NULL);
    key(keys[1], KEY_BYTES, "sold", o->order, NULL);
    key(keys[2], KEY_BYTES, "released", o->order, NULL);
    txn_watch(t, keys[0], &o->slots[0]);
    txn_watch(t, keys[1], &o->slots[1]);
    txn_cmds(t);
    for (size_t i = 0; i < n; i++) {
        key(keys[3 + 3 * i], KEY_BYTES, "stock", o->items[i].product, NULL);
        key(keys[4 + 3 * i], KEY_BYTES, "resv", o->items[i].product, o->order);
        key(keys[5 + 3 * i], KEY_BYTES, "rdone", o->items[i].product, NULL);
        snprintf(qty[i], sizeof(qty[i]), "%lld", (long long)o->items[i].qty);
        const char *dec[] = {"DECRBY", keys[3 + 3 * i], qty[i]};
        const char *del[] = {"DEL", keys[4 + 3 * i]};
        const char *done[] = {"APPEND", keys[5 + 3 * i], id};
        if (sell)
            txn_cmd(t, 3, dec);
        txn_cmd(t, 2, del);
        txn_cmd(t, 3, done);
    }
    const char *del_order[] = {"DEL", keys[0]};
    const char *set_sold[] = {"SET", keys[1], o->items_json};
    const char *set_rel[] = {"SET", keys[2], "1", "PX", px};
    txn_cmd(t, 2, del_order);
    if (sell)
        txn_cmd(t, 3, set_sold);
    else
        txn_cmd(t, 5, set_rel);
    txn_send(o, t, sell ? confirmed : released);
    free(t);
    free(keys);
}

static void order_have(op_t *o)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    const slot_t *order = &o->slots[0], *sold = &o->slots[1], *rel = &o->slots[2];
    if (o->kind == SHOW) {
        const slot_t *s = sold->present ? sold : order->present ? order : NULL;
        json_t *items = s ? json_loadb(s->val, s->len, 0, NULL) : json_array();
        answer(o, 200,
               json_pack("{s:s, s:s, s:o}", "order", o->order, "status",
                         sold->present    ? "confirmed"
                         : order->present ? "reserved"
                         : rel->present   ? "released"
                                          : "none",
                         "items", items ? items : json_array()));
        return;
    }
    if (sold->present) {
        if (o->kind == CONFIRM)
            confirmed(o);
        else
            answer_error(o, 409, "this order was confirmed: its stock is sold");
        return;
    }
    if (!order->present) {
        if (o->kind == CONFIRM) {
            if (o->app->m_expired_confirms)
                keel_counter_inc(o->app->m_expired_confirms);
            answer_error(o, rel->present ? 409 : 410,
                         rel->present ? "this order was released" : "no live reservation");
            return;
        }
        /* release of nothing: still mark it released (a late reserve is then refused) */
        o->n_items = 0;
        end_commit(o, false);
        return;
    }
    if (items_load(o, order) != 0) {
        answer_error(o, 503, "corrupt reservation data");
        return;
    }
    end_commit(o, o->kind == CONFIRM);
}

/* ---- products -------------------------------------------------------------------------- */

/* The reserve's slots and stages with one item and no order: 3 stock, 4 rlist, 5 rdone,
 * 6 the entries to check (slots 0-2 stay empty). */
static void product_queue(op_t *o)
{
    o->n_items = 1;
    o->n_slots = 3;
    reserve_queue_state_items(o);
}

static void product_answer(op_t *o)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    const slot_t *stock = &o->slots[3];
    int64_t have = 0, held = 0;
    int rc = item_held(o, 0, &held, NULL, NULL);
    if (rc != 0 ||
        (stock->present && keel_parse_i64((const uint8_t *)stock->val, stock->len, &have) != 0)) {
        answer_error(o, 503,
                     rc == RLIST_TOO_MANY ? "too many open reservations of a product"
                                          : "corrupt inventory data");
        return;
    }
    answer(o, 200,
           json_pack("{s:s, s:I, s:I, s:I}", "id", o->items[0].product, "stock", (json_int_t)have,
                     "reserved", (json_int_t)held, "available", (json_int_t)(have - held)));
}

static void product_have(op_t *o)
{
    if (slots_status(o) != 0) {
        answer_error(o, 503, "keel server read failed");
        return;
    }
    o->now_ms = keel_clock_unix_ms();
    batch(o, reserve_queue_checks, product_answer);
}

static void on_restock(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    op_t *o = ctx;
    (void)cl;
    if (status != 0 || r->type != KEEL_RESP_INT) {
        answer_error(o, 503, "keel server did not answer; the restock may or may not be applied");
        return;
    }
    answer(o, 200,
           json_pack("{s:s, s:I}", "id", o->items[0].product, "stock", (json_int_t)r->integer));
}

/* ---- retries ------------------------------------------------------------------------- */

static void run(op_t *o)
{
    switch (o->kind) {
    case RESERVE:
        reserve_read(o);
        break;
    case CONFIRM:
    case RELEASE:
    case SHOW:
        slots_clear(o);
        batch(o, order_queue, order_have);
        break;
    case PRODUCT:
        slots_clear(o);
        batch(o, product_queue, product_have);
        break;
    }
}

/* A watched key moved: read again after a short random wait (less herding). */
void restart(op_t *o)
{
    if (++o->attempt >= ATTEMPTS_MAX) {
        answer_error(o, 503, "too much contention on these products; retry");
        return;
    }
    uint64_t cap = 1u << (o->attempt < 6 ? o->attempt : 6);
    o->due_ms = keel_loop_now_ms(o->app->loop) + keel_rand_below(&o->app->rand, cap) + 1;
    if (keel_list_empty(&o->app->waiting))
        keel_timer_start(&o->app->tick, 1, 1, tick, o->app);
    keel_list_insert_tail(&o->app->waiting, &o->link);
}

void tick(keel_timer_t *t, void *data)
{
    app_t *a = data;
    (void)t;
    keel_ms_t now = keel_loop_now_ms(a->loop);
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &a->waiting)
    {
        op_t *o = KEEL_LIST_ENTRY(it, op_t, link);
        if (o->due_ms <= now) {
            keel_list_remove(&o->link);
            run(o);
        }
    }
    if (keel_list_empty(&a->waiting))
        keel_timer_stop(&a->tick);
}

/* ---- handlers -------------------------------------------------------------------------- */

static const keel_route_param_t *param(const keel_service_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->route.n; i++)
        if (r->route.params[i].name_len == strlen(name) &&
            memcmp(r->route.params[i].name, name, r->route.params[i].name_len) == 0)
            return &r->route.params[i];
    return NULL;
}

static op_t *op_new(keel_service_req_t *req, app_t *a, enum op_kind kind, const char *pname)
{
    const keel_route_param_t *p = param(req, pname);
    if (p == NULL || !shop_id_ok(p->value, p->value_len)) {
        keel_http_respond_error(req->http, 400, "ids are 1 to 64 of [A-Za-z0-9._-]");
        return NULL;
    }
    op_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        keel_http_respond_error(req->http, 503, "out of memory");
        return NULL;
    }
    o->app = a;
    o->cl = keel_client_lanes_next(&a->keel);
    o->req = req;
    o->kind = kind;
    keel_list_init(&o->link);
    char *dst = kind == PRODUCT ? o->items[0].product : o->order;
    memcpy(dst, p->value, p->value_len);
    dst[p->value_len] = '\0';
    return o;
}

static json_t *body_json(keel_service_req_t *req)
{
    const keel_http_msg_t *m = req->http->msg;
    if (m->body_len > BODY_BYTES_MAX) {
        keel_http_respond_error(req->http, 413, "a body is at most 64 KiB");
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loadb((const char *)m->body, m->body_len, 0, &err);
    if (!json_is_object(j)) {
        json_decref(j);
        keel_http_respond_error(req->http, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

static void h_reserve(keel_service_req_t *req, void *data)
{
    json_t *body = body_json(req);
    if (body == NULL)
        return;
    op_t *o = op_new(req, data, RESERVE, "order");
    if (o == NULL) {
        json_decref(body);
        return;
    }
    const char *why = items_parse(o, json_object_get(body, "items"));
    json_decref(body);
    if (why != NULL) {
        keel_http_respond_error(req->http, 400, why);
        op_free(o);
        return;
    }
    run(o);
}

static void h_confirm(keel_service_req_t *req, void *data)
{
    op_t *o = op_new(req, data, CONFIRM, "order");
    if (o)
        run(o);
}

static void h_release(keel_service_req_t *req, void *data)
{
    op_t *o = op_new(req, data, RELEASE, "order");
    if (o)
        run(o);
}

static void h_show(keel_service_req_t *req, void *data)
{
    op_t *o = op_new(req, data, SHOW, "order");
    if (o)
        run(o);
}

static void h_product(keel_service_req_t *req, void *data)
{
    op_t *o = op_new(req, data, PRODUCT, "id");
    if (o)
        run(o);
}

static void h_restock(keel_service_req_t *req, void *data)
{
    json_t *body = body_json(req);
    if (body == NULL)
        return;
    const json_t *q = json_object_get(body, "qty");
    int64_t qty = json_is_integer(q) ? json_integer_value(q) : 0;
    json_decref(body);
    if (qty < 1 || qty > QTY_MAX) {
        keel_http_respond_error(req->http, 400, "qty: an integer from 1 to 1000000000");
        return;
    }
    op_t *o = op_new(req, data, PRODUCT, "id");
    if (o == NULL)
        return;
    char k[KEY_BYTES], n[24];
    key(k, sizeof(k), "stock", o->items[0].product, NULL);
    snprintf(n, sizeof(n), "%lld", (long long)qty);
    const char *argv[] = {"INCRBY", k, n};
    if (keel_client_command(o->cl, 3, argv, NULL, on_restock, o) != 0)
        answer_error(o, 503, "keel client queue full");
}

/* ---- main ---------------------------------------------------------------------------------- */

static void on_stopped(keel_service_t *svc, void *data)
{
    app_t *a = data;
    (void)svc;
    /* ops still waiting out a backoff are answered by nobody now: their connections are gone */
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &a->waiting)
    op_free(KEEL_LIST_ENTRY(it, op_t, link));
    keel_timer_close(&a->tick, NULL);
    keel_client_lanes_close(&a->keel, NULL);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8090", *registry = NULL, *keel = "127.0.0.1:7001", *id = NULL;
    int64_t ttl = 900000;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on (port 0: any)"},
        {"keel", KEEL_OPT_STR, &keel, 0, 0, "keel server host:port,... holding the stock"},
        {"registry", KEEL_OPT_STR, &registry, 0, 0, "register as service inventory there"},
        {"id", KEEL_OPT_STR, &id, 0, 0, "instance id (default inventory-<host>-<port>)"},
        {"reservation-ttl-ms", KEEL_OPT_INT, &ttl, 100, 86400000,
         "how long a reservation holds stock unless confirmed"},
    };
    keel_config_t conf;
    int exit_code = shop_config(&conf, "keel-shop-inventory", "INVENTORY", opts,
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
    app.ttl_ms = ttl;
    keel_list_init(&app.waiting);
    keel_rand_seed(&app.rand, (uint64_t)keel_clock_unix_ms());
    char seeds[1024];
    snprintf(seeds, sizeof(seeds), "%s", keel);
    keel_client_config_t cc = keel_client_config_default();
    cc.requests_max = KEEL_CLIENT_REQUESTS_LIMIT;
    cc.inflight_max = KEEL_CLIENT_REQUESTS_LIMIT;
    if ((rc = keel_client_config_seeds(&cc, seeds, "--keel", &msg)) != 0 ||
        (rc = keel_client_lanes_init(&app.keel, &loop, &cc, KEEL_LANES, &msg)) != 0) {
        fprintf(stderr, "keel-shop-inventory: %s\n", msg.text);
        return 2;
    }
    keel_service_config_t cfg = keel_service_config_default("inventory");
    cfg.listen = listen;
    cfg.registry = registry;
    cfg.instance_id = id;
    cfg.on_stopped = on_stopped;
    cfg.on_drain_data = &app;
    rc = keel_service_init(&app.svc, &loop, &cfg, &msg);
    if (rc == 0) {
        keel_metrics_t *m = app.svc.metrics;
        app.m_conflicts = keel_metrics_counter(
            m, "shop_inventory_conflicts_total",
            "Transactions that found a watched key moved and started again.", NULL);
        app.m_oversell_refusals =
            keel_metrics_counter(m, "shop_inventory_insufficient_total",
                                 "Reservations refused for lack of stock.", NULL);
        app.m_expired_confirms =
            keel_metrics_counter(m, "shop_inventory_expired_confirms_total",
                                 "Confirms that found no live reservation.", NULL);
    }
    const struct {
        const char *method, *pattern;
        keel_service_handler_fn fn;
    } routes[] = {
        {"POST", "/products/:id/restock", h_restock},
        {"GET", "/products/:id", h_product},
        {"PUT", "/reservations/:order", h_reserve},
        {"POST", "/reservations/:order/confirm", h_confirm},
        {"DELETE", "/reservations/:order", h_release},
        {"GET", "/reservations/:order", h_show},
    };
    for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
        rc = keel_service_route(&app.svc, routes[i].method, routes[i].pattern, routes[i].fn, &app,
                                &msg);
    if (rc == 0)
        rc = keel_timer_init(&loop, &app.tick);
    if (rc == 0)
        rc = keel_service_start(&app.svc, &msg);
    if (rc != 0) {
        fprintf(stderr, "keel-shop-inventory: %s\n", msg.text);
        return 1;
    }
    printf("inventory: listening on port %d\n", keel_service_port(&app.svc));
    fflush(stdout);
    keel_loop_run(&loop);
    keel_service_free(&app.svc);
    keel_loop_close(&loop);
    keel_config_free(&conf);
    return 0;
}
