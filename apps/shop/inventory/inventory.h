/* inventory.h - the inventory service's parts: its limits, the app, an operation and the
 * read slots it fills (main.c: the operations and handlers; store.c: reads, transactions,
 * keys and items against keel server). */
#ifndef KEEL_SHOP_INVENTORY_H
#define KEEL_SHOP_INVENTORY_H

#include "base/list.h"
#include "base/log.h"
#include "base/num.h"
#include "base/rand.h"
#include "client/client.h"
#include "client/lanes.h"
#include "kit/config.h"
#include "kit/service.h"
#include "../shop.h"
#include "runtime/clock.h"

#define ITEMS_MAX 32
#define ID_BYTES_MAX SHOP_ID_BYTES_MAX
#define QTY_MAX 1000000000LL
#define OPEN_RESERVATIONS_MAX 10000 /* per product: ids in inv:rlist:P */
/* Entries read from one rlist: one past the bound, so that a list an earlier version let
   grow to it plus one is still read (and pruned) rather than refused for ever */
#define RLIST_READ_MAX (OPEN_RESERVATIONS_MAX + 1)
/* A reserve prunes at most this many checked entries whose key read nil, each watched at
   version 0 in its KEEL.TXN (main.c); the others stay in the list, counted as held */
#define PRUNE_WATCH_MAX 256
#define ATTEMPTS_MAX 12
/* keel connections (client/lanes.h): every reserve and confirm reads, then commits a
 * KEEL.TXN, and on one shared connection each read waits for the commit before it */
#define KEEL_LANES 8
#define RELEASED_TTL_MS 86400000LL
#define BODY_BYTES_MAX 65536
/* inv:rdone:P: orders confirmed or released since P's last reserve (each was in its rlist) */
#define RDONE_MAX (2 * OPEN_RESERVATIONS_MAX)
/* An rlist entry's deadline is believed (the entry counted as held without reading its
 * reservation key) only while it is this far ahead of the reader's clock, and not further
 * ahead than a reservation's whole life plus this: clock skew between instances */
#define RLIST_TRUST_SKEW_MS 1000
/* a reserve: order, sold, released; per item stock, rlist, rdone; per item its checks */
#define SLOTS_MAX (3 + 4 * ITEMS_MAX)

typedef struct app {
    keel_loop_t *loop;
    keel_client_lanes_t keel; /* an operation keeps one lane for all its commands */
    keel_service_t svc;
    int64_t ttl_ms;
    keel_rand_t rand;
    keel_list_t waiting; /* ops waiting out a backoff */
    keel_timer_t tick;
    keel_counter_t *m_conflicts, *m_oversell_refusals, *m_expired_confirms;
} app_t;

typedef struct item {
    char product[ID_BYTES_MAX + 1];
    int64_t qty;
} item_t;

/* One read's answer: GETV (value and version) or MGET (integers, -1 for nil). */
typedef struct slot {
    int status; /* 0, or an error (transport, error reply, bad shape) */
    bool present;
    int64_t version;
    char *val;
    size_t len;
    int64_t *ints; /* MGET */
    size_t n;
} slot_t;

enum op_kind { RESERVE, CONFIRM, RELEASE, PRODUCT, SHOW };

typedef struct op op_t;
struct op {
    app_t *app;
    keel_client_t *cl; /* its lane */
    keel_service_req_t *req;
    enum op_kind kind;
    char order[ID_BYTES_MAX + 1];
    item_t items[ITEMS_MAX];
    size_t n_items;
    char *items_json; /* canonical: sorted, merged */
    int attempt, pending;
    slot_t slots[SLOTS_MAX];
    size_t n_slots;
    /* the batch's KEEL.GETV reads, sent as one KEEL.MGETV when the batch is queued */
    char *gv_keys[SLOTS_MAX];
    size_t gv_slot[SLOTS_MAX], gv_n;
    void (*next)(op_t *o);
    int64_t now_ms; /* the Unix clock an attempt judged its rlist entries by (rlist.c) */
    keel_list_t link;
    keel_ms_t due_ms;
};

/* KEEL.TXN nwatch (key ver)* ncmds (argc arg*)* - built as words. */
typedef struct txn {
    const char *w[2048];
    size_t n;
    char nums[512][24];
    size_t nn;
    size_t nwatch_at, ncmds_at, nwatch, ncmds;
} txn_t;

#define KEY_BYTES (16 + 2 * ID_BYTES_MAX)

/* store.c */
void slots_clear(op_t *o);
void op_free(op_t *o);
void answer(op_t *o, int status, json_t *body);
void answer_error(op_t *o, int status, const char *why);
void read_mget(op_t *o, size_t argc, const char *const *argv);
void getv(op_t *o, const char *key);
void batch(op_t *o, void (*queue)(op_t *o), void (*next)(op_t *o));
int slots_status(const op_t *o);
void txn_begin(txn_t *t);
void txn_watch(txn_t *t, const char *key, const slot_t *s);
void txn_cmds(txn_t *t);
void txn_cmd(txn_t *t, size_t argc, const char *const *argv);
void txn_send(op_t *o, txn_t *t, void (*then)(op_t *o));
void key(char *out, size_t cap, const char *kind, const char *a, const char *b);
const char *items_parse(op_t *o, const json_t *arr);
int items_load(op_t *o, const slot_t *s);

/* rlist.c: a product's open reservations, in one read (docs/shop.md) */
enum rentry_cls { RENTRY_DONE, RENTRY_LIVE, RENTRY_CHECK };
#define RLIST_TOO_MANY (-1)
#define RLIST_CORRUPT (-2)
typedef struct rentry {
    const char *text, *id; /* into the rlist slot's value */
    size_t len, id_len;
    int64_t qty, deadline_ms; /* -1 in an entry written before 7 Dec (a bare id) */
    enum rentry_cls cls;
} rentry_t;
/* The entries of list (at most cap), classified against done and now_ms: their count, or
 * RLIST_TOO_MANY, RLIST_CORRUPT. */
int rlist_view(const slot_t *list, const slot_t *done, int64_t now_ms, int64_t ttl_ms,
               rentry_t *out, size_t cap);
void rlist_queue_checks(op_t *o, const char *product, const rentry_t *e, int n);

/* main.c: an operation's (re)start after a conflict, and the backoff timer */
void restart(op_t *o);
void tick(keel_timer_t *t, void *data);

#endif
