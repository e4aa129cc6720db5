/* store.c - the inventory's side of keel server: answering an operation, batches of reads
 * whose answers land in slots (one KEEL.MGETV for the versioned reads), KEEL.TXN built as words
 * and sent, keys and items. */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- answers -------------------------------------------------------------------------- */

void slots_clear(op_t *o)
{
    for (size_t i = 0; i < o->n_slots; i++) {
        free(o->slots[i].val);
        free(o->slots[i].ints);
    }
    memset(o->slots, 0, sizeof(o->slots[0]) * o->n_slots);
    o->n_slots = 0;
}

void op_free(op_t *o)
{
    slots_clear(o);
    free(o->items_json);
    keel_list_remove(&o->link);
    free(o);
}

void answer(op_t *o, int status, json_t *body)
{
    keel_service_req_enter(o->req);
    keel_service_respond_json(o->req, status, body);
    json_decref(body);
    op_free(o);
}

void answer_error(op_t *o, int status, const char *why)
{
    answer(o, status, json_pack("{s:s, s:s}", "error", why, "order", o->order));
}

/* ---- reads: a batch of commands whose answers land in slots ---------------------------- */

typedef struct slot_ref {
    op_t *o;
    size_t i;
} slot_ref_t;

static void batch_done(op_t *o)
{
    if (--o->pending == 0)
        o->next(o);
}

/* One key's [value, version] or nil, as KEEL.GETV and each element of KEEL.MGETV answer. */
static void take_getv(slot_t *s, int status, const keel_resp_value_t *r)
{
    if (status != 0) {
        s->status = status;
    } else if (r->type == KEEL_RESP_NIL || r->type == KEEL_RESP_NIL_ARRAY) {
        s->present = false;
    } else if (r->type == KEEL_RESP_ARRAY && r->elems_len == 2 &&
               r->elems[0].type == KEEL_RESP_BULK && r->elems[1].type == KEEL_RESP_INT) {
        s->present = true;
        s->version = r->elems[1].integer;
        s->len = r->elems[0].str.len;
        if ((s->val = malloc(s->len + 1)) == NULL) {
            s->status = KEEL_ENOMEM;
        } else {
            memcpy(s->val, r->elems[0].str.ptr, s->len);
            s->val[s->len] = '\0';
        }
    } else {
        s->status = KEEL_EPROTO;
    }
}

/* The batch's KEEL.MGETV: each element into the slot its key was queued for. */
typedef struct mgetv_ref {
    op_t *o;
    size_t n;
    size_t slot[];
} mgetv_ref_t;

static void on_mgetv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    mgetv_ref_t *ref = ctx;
    op_t *o = ref->o;
    (void)cl;
    bool shaped = status == 0 && r->type == KEEL_RESP_ARRAY && r->elems_len == ref->n;
    for (size_t i = 0; i < ref->n; i++) {
        slot_t *s = &o->slots[ref->slot[i]];
        if (shaped)
            take_getv(s, 0, &r->elems[i]);
        else
            s->status = status != 0 ? status : KEEL_EPROTO;
    }
    free(ref);
    batch_done(o);
}

static void on_mget(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    slot_ref_t *ref = ctx;
    op_t *o = ref->o;
    slot_t *s = &o->slots[ref->i];
    (void)cl;
    free(ref);
    if (status != 0 || r->type != KEEL_RESP_ARRAY) {
        s->status = status ? status : KEEL_EPROTO;
    } else if ((s->ints = calloc(r->elems_len ? r->elems_len : 1, sizeof(int64_t))) == NULL) {
        s->status = KEEL_ENOMEM;
    } else {
        s->n = r->elems_len;
        for (size_t i = 0; i < r->elems_len; i++) {
            const keel_resp_value_t *e = &r->elems[i];
            int64_t q = -1;
            if (e->type == KEEL_RESP_BULK &&
                (keel_parse_i64(e->str.ptr, e->str.len, &q) != 0 || q < 0 || q > QTY_MAX))
                s->status = KEEL_ECORRUPT;
            s->ints[i] = e->type == KEEL_RESP_BULK ? q : -1;
        }
    }
    batch_done(o);
}

/* Queues one MGET into the next slot; the op's `next` runs once all of the batch are in. */
void read_mget(op_t *o, size_t argc, const char *const *argv)
{
    size_t i = o->n_slots++;
    slot_ref_t *ref = malloc(sizeof(*ref));
    o->pending++;
    if (ref == NULL) {
        o->slots[i].status = KEEL_ENOMEM;
        o->pending--;
        return;
    }
    *ref = (slot_ref_t){o, i};
    int rc = keel_client_command(o->cl, argc, argv, NULL, on_mget, ref);
    if (rc != 0) {
        free(ref);
        o->slots[i].status = rc;
        o->pending--;
    }
}

/* Queues a versioned read of key into the next slot; batch() sends the batch's reads as one
 * KEEL.MGETV (one request instead of one per key: 3 + 2 per product for a reserve). */
void getv(op_t *o, const char *key)
{
    size_t i = o->n_slots++;
    if ((o->gv_keys[o->gv_n] = strdup(key)) == NULL) {
        o->slots[i].status = KEEL_ENOMEM;
        return;
    }
    o->gv_slot[o->gv_n++] = i;
}

static void getv_flush(op_t *o)
{
    size_t n = o->gv_n;
    if (n == 0)
        return;
    o->gv_n = 0;
    const char *argv[SLOTS_MAX + 1];
    argv[0] = "KEEL.MGETV";
    for (size_t j = 0; j < n; j++)
        argv[j + 1] = o->gv_keys[j];
    mgetv_ref_t *ref = malloc(sizeof(*ref) + n * sizeof(size_t));
    int rc = ref == NULL ? KEEL_ENOMEM : 0;
    if (ref != NULL) {
        ref->o = o;
        ref->n = n;
        memcpy(ref->slot, o->gv_slot, n * sizeof(size_t));
        o->pending++;
        rc = keel_client_command(o->cl, n + 1, argv, NULL, on_mgetv, ref);
        if (rc != 0) {
            o->pending--;
            free(ref);
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (rc != 0)
            o->slots[o->gv_slot[j]].status = rc;
        free(o->gv_keys[j]);
    }
}

/* Starts a batch: `first` queues its reads, then `next` runs when they are in. */
void batch(op_t *o, void (*queue)(op_t *o), void (*next)(op_t *o))
{
    o->next = next;
    o->pending = 1; /* held until everything is queued */
    queue(o);
    getv_flush(o);
    batch_done(o);
}

int slots_status(const op_t *o)
{
    for (size_t i = 0; i < o->n_slots; i++)
        if (o->slots[i].status != 0)
            return o->slots[i].status;
    return 0;
}

/* ---- the transaction ------------------------------------------------------------------- */

static const char *txn_num(txn_t *t, int64_t v)
{
    char *s = t->nums[t->nn++];
    snprintf(s, 24, "%lld", (long long)v);
    return s;
}

void txn_begin(txn_t *t)
{
    t->n = t->nn = t->nwatch = t->ncmds = 0;
    t->w[t->n++] = "KEEL.TXN";
    t->nwatch_at = t->n++;
}

void txn_watch(txn_t *t, const char *key, const slot_t *s)
{
    t->w[t->n++] = key;
    t->w[t->n++] = txn_num(t, s->present ? s->version : 0);
    t->nwatch++;
}

void txn_cmds(txn_t *t)
{
    t->w[t->nwatch_at] = txn_num(t, (int64_t)t->nwatch);
    t->ncmds_at = t->n++;
}

void txn_cmd(txn_t *t, size_t argc, const char *const *argv)
{
    t->w[t->n++] = txn_num(t, (int64_t)argc);
    for (size_t i = 0; i < argc; i++)
        t->w[t->n++] = argv[i];
    t->ncmds++;
}

static void txn_end(txn_t *t)
{
    t->w[t->ncmds_at] = txn_num(t, (int64_t)t->ncmds);
}

static void on_txn(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    op_t *o = ctx;
    (void)cl;
    if (status != 0 || r->type == KEEL_RESP_ERROR) {
        /* unknown outcome: the caller retries with the same order id, which is idempotent */
        answer_error(o, 503, "keel server did not answer; retry with the same order id");
        return;
    }
    if (r->type == KEEL_RESP_NIL ||
        r->type == KEEL_RESP_NIL_ARRAY) { /* a watched key moved: read again */
        if (o->app->m_conflicts)
            keel_counter_inc(o->app->m_conflicts);
        restart(o);
        return;
    }
    /* Applied; a command inside that failed (keel's keys_max, say) did not stop the others:
     * no success is claimed for a change that is not whole (the caller retries) */
    for (size_t i = 0; r->type == KEEL_RESP_ARRAY && i < r->elems_len; i++)
        if (r->elems[i].type == KEEL_RESP_ERROR) {
            answer_error(o, 503, "keel server refused part of the transaction; retry");
            return;
        }
    o->next(o);
}

void txn_send(op_t *o, txn_t *t, void (*then)(op_t *o))
{
    txn_end(t);
    o->next = then;
    if (keel_client_command(o->cl, t->n, t->w, NULL, on_txn, o) != 0)
        answer_error(o, 503, "keel client queue full");
}

/* ---- keys and items ------------------------------------------------------------------ */

void key(char *out, size_t cap, const char *kind, const char *a, const char *b)
{
    if (b)
        snprintf(out, cap, "inv:%s:%s:%s", kind, a, b);
    else
        snprintf(out, cap, "inv:%s:%s", kind, a);
}

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const item_t *)a)->product, ((const item_t *)b)->product);
}

/* Items from JSON [{"product","qty"}...]: sorted, merged. NULL, or the reason. */
const char *items_parse(op_t *o, const json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > ITEMS_MAX)
        return "items: an array of 1 to 32 {\"product\", \"qty\"}";
    o->n_items = 0;
    size_t i;
    const json_t *it;
    json_array_foreach(arr, i, it)
    {
        const json_t *p = json_object_get(it, "product"), *q = json_object_get(it, "qty");
        if (!json_is_string(p) || !shop_id_ok(json_string_value(p), json_string_length(p)))
            return "items: product ids of 1 to 64 of [A-Za-z0-9._-]";
        if (!json_is_integer(q) || json_integer_value(q) < 1 || json_integer_value(q) > QTY_MAX)
            return "items: qty an integer from 1 to 1000000000";
        item_t *x = &o->items[o->n_items++];
        snprintf(x->product, sizeof(x->product), "%s", json_string_value(p));
        x->qty = json_integer_value(q);
    }
    qsort(o->items, o->n_items, sizeof(item_t), item_cmp);
    size_t k = 0;
    for (i = 0; i < o->n_items; i++) {
        if (k > 0 && strcmp(o->items[k - 1].product, o->items[i].product) == 0) {
            o->items[k - 1].qty += o->items[i].qty;
            if (o->items[k - 1].qty > QTY_MAX)
                return "items: qty an integer from 1 to 1000000000";
        } else {
            o->items[k++] = o->items[i];
        }
    }
    o->n_items = k;
    json_t *canon = json_array();
    for (i = 0; i < o->n_items; i++)
        json_array_append_new(canon, json_pack("{s:s, s:I}", "product", o->items[i].product, "qty",
                                               (json_int_t)o->items[i].qty));
    o->items_json = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(canon);
    return o->items_json ? NULL : "out of memory";
}

/* Items stored by us: parse them back (a corrupt value is an error, never guessed at). */
int items_load(op_t *o, const slot_t *s)
{
    json_t *arr = json_loadb(s->val, s->len, 0, NULL);
    free(o->items_json);
    o->items_json = NULL;
    const char *why = arr ? items_parse(o, arr) : "bad JSON";
    json_decref(arr);
    return why ? KEEL_ECORRUPT : 0;
}
