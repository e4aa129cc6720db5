/* tracking.c - CLIENT TRACKING: client-side caching with invalidations from any node. */
#include "server/server_int.h"

#include "base/log.h"
#include "base/map.h"
#include "base/num.h"
#include "proto/resp.h"

#include <stdlib.h>
#include <string.h>

/*
 * Redis's client-side caching (its answer to "a local cache plus an invalidation
 * broadcast"), on every node. A connection that turns tracking on is told when a key it
 * may hold in its cache changes:
 *
 * - default mode: the keys of every read command it sends (or, with OPTIN, of the command
 *   after CLIENT CACHING yes; with OPTOUT, all but the command after CLIENT CACHING no) are
 *   recorded in this node's table, key -> the ids of the connections that read it; the
 *   first change of such a key sends each of them one invalidation and forgets the key;
 * - BCAST: every change of a key under one of its prefixes (all keys without a prefix) is
 *   sent, and nothing is recorded.
 *
 * The changes come from this node's change history (core/kv), read by a cursor after each
 * apply pass, so a change made through any node reaches the trackers on every node as
 * that node applies it. A key is recorded before its read is sent: a change that lands
 * between the two costs one needless invalidation, never a stale cache. If the cursor
 * ever falls out of the history (it cannot while the history is bigger than one apply
 * pass, but a snapshot install replaces the state), every tracker is told to flush all
 * (a null invalidation, as Redis sends after FLUSHALL) and the table is emptied.
 *
 * Messages: a RESP3 connection gets the push `>2 invalidate [keys]` (`_` for all); with
 * REDIRECT id the message goes to that connection instead, as a push if it is RESP3, else
 * as a pub/sub message on `__redis__:invalidate` if it is subscribed (RESP2); a redirect
 * to a connection that has gone gets `tracking-redir-broken` once (RESP3). NOLOOP is
 * refused: keel cannot tell at apply time which connection a change came from.
 */
#define TRACKING_KEYS_MAX (1u << 20)   /* keys in the table; past it, older ones are evicted */
#define TRACKING_PREFIXES_MAX 64       /* per connection (BCAST) */
#define TRACKING_PREFIX_BYTES_MAX 1024 /* each */
#define TRACKING_IDS_MAX 4096          /* connections recorded per key */
#define INVALIDATE_CHANNEL "__redis__:invalidate"

enum { T_BCAST = 1, T_OPTIN = 2, T_OPTOUT = 4 };

typedef struct prefix {
    size_t len;
    uint8_t *p;
} prefix_t;

struct tracker {
    keel_list_t link; /* tracking_t.bcast, while in BCAST mode */
    keel_resp_client_t *client;
    uint64_t id;
    unsigned flags;
    uint64_t redirect; /* 0: none */
    int caching_next;  /* CLIENT CACHING yes (1) / no (-1) for the next command */
    int caching_now;   /* ... moved here as that command starts */
    int redir_broken_sent;
    prefix_t prefixes[TRACKING_PREFIXES_MAX];
    size_t prefixes_n;
};

typedef struct ids {
    size_t n, cap;
    uint64_t id[];
} ids_t;

struct tracking {
    keel_map_t keys;  /* key -> ids_t* */
    keel_map_t by_id; /* 8-byte connection id -> tracker_t* */
    keel_list_t bcast;
    uint64_t after; /* every change up to this revision has been looked at */
    int started;
    keel_counter_t *m_sent, *m_evicted;
};

/* ---- life ------------------------------------------------------------------------------ */

static tracking_t *tracking(server_t *s)
{
    if (s->tracking != NULL)
        return s->tracking;
    tracking_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (keel_map_init(&t->keys, 64, TRACKING_KEYS_MAX, 0x7472616b) != 0 ||
        keel_map_init(&t->by_id, 16, 0, 0x74726b69) != 0) {
        keel_map_free(&t->keys, NULL);
        free(t);
        return NULL;
    }
    keel_list_init(&t->bcast);
    t->after = keel_kv_revision(&s->kv.kv);
    t->started = 1;
    if (s->metrics) {
        t->m_sent = keel_metrics_counter(s->metrics, "keel_tracking_invalidations_total",
                                         "Invalidation messages sent to tracking clients.", NULL);
        t->m_evicted = keel_metrics_counter(
            s->metrics, "keel_tracking_evicted_total",
            "Tracked keys evicted (invalidated) because the table was full.", NULL);
    }
    s->tracking = t;
    return t;
}

void keel__srv_tracking_free(server_t *s)
{
    tracking_t *t = s->tracking;
    if (t == NULL)
        return;
    keel_map_free(&t->keys, free);
    keel_map_free(&t->by_id, NULL); /* the trackers belong to their connections */
    free(t);
    s->tracking = NULL;
}

static void tracker_free(tracker_t *k)
{
    for (size_t i = 0; i < k->prefixes_n; i++)
        free(k->prefixes[i].p);
    free(k);
}

/* Tracking off (or the connection closed): out of the maps; its ids left in the key
 * table are skipped when met. */
static void tracker_drop(server_t *s, client_state_t *cs)
{
    tracker_t *k = cs->tracker;
    if (k == NULL)
        return;
    if (s->tracking != NULL)
        keel_map_del(&s->tracking->by_id, &k->id, sizeof(k->id), NULL);
    keel_list_remove(&k->link);
    tracker_free(k);
    cs->tracker = NULL;
}

void keel__srv_tracking_closed(server_t *s, client_state_t *cs)
{
    tracker_drop(s, cs);
}

/* ---- messages -------------------------------------------------------------------------- */

/* Writes to another connection (or this one) at once, as a push does. */
static void send_to(keel_resp_client_t *c, const keel_buf_t *msg)
{
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    if (d == NULL)
        return;
    int rc = keel_buf_append(keel_resp_deferred_out(d), keel_buf_rptr(msg), keel_buf_unread(msg));
    keel_resp_deferred_done(d, rc);
}

/* One invalidation of key (NULL: everything) for tracker k. */
static void invalidate(server_t *s, tracker_t *k, const uint8_t *key, size_t len)
{
    tracking_t *t = s->tracking;
    keel_resp_client_t *to = k->client;
    if (k->redirect != 0) {
        void **v = keel_map_get(&t->by_id, &k->redirect, sizeof(k->redirect));
        tracker_t *r = v ? *v : NULL;
        to = r ? r->client : keel__srv_client_by_id(s, k->redirect);
        if (to == NULL) {
            if (!k->redir_broken_sent && keel__srv_resp3(k->client)) {
                keel_buf_t b;
                keel_buf_init(&b, 0);
                keel_buf_printf(&b, ">2\r\n$21\r\ntracking-redir-broken\r\n:%llu\r\n",
                                (unsigned long long)k->redirect);
                send_to(k->client, &b);
                keel_buf_free(&b);
                k->redir_broken_sent = 1;
            }
            return;
        }
    }
    keel_buf_t b;
    keel_buf_init(&b, 0);
    int rc;
    if (keel__srv_resp3(to))
        rc = keel_buf_append_str(&b, ">2\r\n$10\r\ninvalidate\r\n");
    else if (k->redirect != 0 && keel_pubsub_count(s->pubsub, to) > 0)
        rc = keel_buf_append_str(&b, "*3\r\n$7\r\nmessage\r\n$20\r\n" INVALIDATE_CHANNEL "\r\n");
    else
        rc = 1; /* RESP2 without a subscribed redirect: nowhere to say it (as Redis) */
    if (rc == 0) {
        if (key == NULL)
            rc = keel_buf_append_str(&b, keel__srv_resp3(to) ? "_\r\n" : "*-1\r\n");
        else if ((rc = keel_resp_write_array_header(&b, 1)) == 0)
            rc = keel_resp_write_bulk(&b, key, len);
    }
    if (rc == 0) {
        send_to(to, &b);
        if (t->m_sent)
            keel_counter_inc(t->m_sent);
    }
    keel_buf_free(&b);
}

/* Every connection recorded for key is told once; the key is forgotten. */
static void invalidate_recorded(server_t *s, const uint8_t *key, size_t len)
{
    tracking_t *t = s->tracking;
    ids_t *ids = NULL;
    if (keel_map_del(&t->keys, key, len, (void **)&ids) != 0)
        return;
    for (size_t i = 0; i < ids->n; i++) {
        void **v = keel_map_get(&t->by_id, &ids->id[i], sizeof(ids->id[i]));
        tracker_t *k = v ? *v : NULL;
        if (k != NULL && !(k->flags & T_BCAST))
            invalidate(s, k, key, len);
    }
    free(ids);
}

static int has_prefix(const tracker_t *k, const uint8_t *key, size_t len)
{
    for (size_t i = 0; i < k->prefixes_n; i++)
        if (k->prefixes[i].len <= len && memcmp(k->prefixes[i].p, key, k->prefixes[i].len) == 0)
            return 1;
    return 0;
}

static void flush_all(server_t *s)
{
    tracking_t *t = s->tracking;
    keel_map_free(&t->keys, free);
    keel_map_init(&t->keys, 64, TRACKING_KEYS_MAX, 0x7472616b);
    size_t pos = 0;
    const uint8_t *id;
    size_t idl;
    void *v;
    while (keel_map_next(&t->by_id, &pos, &id, &idl, &v))
        invalidate(s, v, NULL, 0);
}

void keel__srv_tracking_on_applied(server_t *s)
{
    tracking_t *t = s->tracking;
    if (t == NULL)
        return;
    const keel_kv_t *kv = &s->kv.kv;
    uint64_t rev = keel_kv_revision(kv);
    if (rev == t->after)
        return;
    size_t pos;
    if (rev < t->after || keel_kv_history_seek(kv, t->after, &pos) != 0) {
        flush_all(s); /* the history does not reach back to the cursor (a snapshot came) */
        t->after = rev;
        return;
    }
    for (size_t n = keel_kv_history_len(kv); pos < n; pos++) {
        keel_kv_change_t ch;
        keel_kv_history_at(kv, pos, &ch);
        if (t->keys.count > 0)
            invalidate_recorded(s, ch.key, ch.key_len);
        for (keel_list_t *it = t->bcast.next; it != &t->bcast; it = it->next) {
            tracker_t *k = KEEL_LIST_ENTRY(it, tracker_t, link);
            if (has_prefix(k, ch.key, ch.key_len))
                invalidate(s, k, ch.key, ch.key_len);
        }
    }
    t->after = rev;
}

/* ---- recording reads ------------------------------------------------------------------- */

static int record_key(server_t *s, uint64_t id, const uint8_t *key, size_t len)
{
    tracking_t *t = s->tracking;
    void **v = keel_map_get(&t->keys, key, len);
    ids_t *ids = v ? *v : NULL;
    if (ids == NULL) {
        while (t->keys.count >= TRACKING_KEYS_MAX) { /* full: one older key goes, told */
            size_t pos = 0;
            const uint8_t *k;
            size_t kl;
            void *old;
            if (!keel_map_next(&t->keys, &pos, &k, &kl, &old))
                break;
            uint8_t *copy = malloc(kl ? kl : 1); /* the map frees its own copy */
            if (copy == NULL)
                return KEEL_ENOMEM;
            memcpy(copy, k, kl);
            invalidate_recorded(s, copy, kl);
            free(copy);
            if (t->m_evicted)
                keel_counter_inc(t->m_evicted);
        }
        ids = malloc(sizeof(*ids) + 4 * sizeof(uint64_t));
        if (ids == NULL)
            return KEEL_ENOMEM;
        ids->n = 0;
        ids->cap = 4;
        if (keel_map_put(&t->keys, key, len, ids, NULL) < 0) {
            free(ids);
            return KEEL_ENOMEM;
        }
    }
    for (size_t i = 0; i < ids->n; i++)
        if (ids->id[i] == id)
            return 0;
    if (ids->n == TRACKING_IDS_MAX)
        return 0; /* bounded: a key read by more connections is told to the first ones */
    if (ids->n == ids->cap) {
        ids_t *m = realloc(ids, sizeof(*ids) + 2 * ids->cap * sizeof(uint64_t));
        if (m == NULL)
            return KEEL_ENOMEM;
        m->cap *= 2;
        ids = m;
        keel_map_put(&t->keys, key, len, ids, NULL);
    }
    ids->id[ids->n++] = id;
    return 0;
}

void keel__srv_tracking_read(server_t *s, client_state_t *cs, const keel_resp_command_t *row,
                             size_t argc, const uint8_t *const *argv, const size_t *lens)
{
    tracker_t *k = cs->tracker;
    if (k == NULL || (k->flags & T_BCAST) || row->first_key <= 0 || s->tracking == NULL)
        return;
    if ((k->flags & T_OPTIN) && k->caching_now != 1)
        return;
    if ((k->flags & T_OPTOUT) && k->caching_now == -1)
        return;
    long last = row->last_key < 0 ? (long)argc + row->last_key : row->last_key;
    long step = row->key_step > 0 ? row->key_step : 1;
    for (long i = row->first_key; i <= last && i < (long)argc; i += step)
        if (record_key(s, k->id, argv[i], lens[i]) != 0)
            break; /* out of memory: what is recorded stays correct */
}

void keel__srv_tracking_before(client_state_t *cs, const keel_resp_command_t *cmd)
{
    tracker_t *k = cs->tracker;
    if (k == NULL || strcmp(cmd->name, "client") == 0)
        return;
    k->caching_now = k->caching_next; /* CLIENT CACHING applies to the next command only */
    k->caching_next = 0;
}

/* ---- CLIENT TRACKING, CACHING, GETREDIR, TRACKINGINFO ------------------------------------- */

/* Byte order, as Redis's radix tree lists prefixes. */
static int prefix_cmp(const void *a, const void *b)
{
    const prefix_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Whether a is a prefix of b or b of a. */
static int overlap(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    return memcmp(a, b, al < bl ? al : bl) == 0;
}

/* Redis's rules for prefixes: none overlapping another, given now or before. */
static int prefixes_collide(const tracker_t *k, const keel_resp_arg_t *const *pfx, size_t npfx,
                            keel_buf_t *out)
{
    for (size_t i = 0; i < npfx; i++) {
        for (size_t e = 0; k != NULL && e < k->prefixes_n; e++)
            if (overlap(pfx[i]->ptr, pfx[i]->len, k->prefixes[e].p, k->prefixes[e].len)) {
                keel_resp_write_errorf(out,
                                       "ERR Prefix '%.*s' overlaps with an existing prefix '%.*s'. "
                                       "Prefixes for a single client must not overlap.",
                                       (int)pfx[i]->len, (const char *)pfx[i]->ptr,
                                       (int)k->prefixes[e].len, (const char *)k->prefixes[e].p);
                return 1;
            }
        for (size_t j = i + 1; j < npfx; j++)
            if (overlap(pfx[i]->ptr, pfx[i]->len, pfx[j]->ptr, pfx[j]->len)) {
                keel_resp_write_errorf(
                    out,
                    "ERR Prefix '%.*s' overlaps with another provided prefix '%.*s'. Prefixes "
                    "for a single client must not overlap.",
                    (int)pfx[i]->len, (const char *)pfx[i]->ptr, (int)pfx[j]->len,
                    (const char *)pfx[j]->ptr);
                return 1;
            }
    }
    return 0;
}

static int add_prefix(tracker_t *k, const uint8_t *p, size_t len)
{
    if (k->prefixes_n == TRACKING_PREFIXES_MAX)
        return KEEL_EFULL;
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return KEEL_ENOMEM;
    memcpy(copy, p, len);
    k->prefixes[k->prefixes_n++] = (prefix_t){len, copy};
    qsort(k->prefixes, k->prefixes_n, sizeof(k->prefixes[0]), prefix_cmp); /* TRACKINGINFO */
    return 0;
}

/*
 * CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT]: Redis's
 * checks in Redis's order. ON again keeps the mode (switching BCAST or OPTIN/OPTOUT needs
 * OFF first), replaces the redirect and adds prefixes ("" when BCAST names none).
 */
int keel__srv_client_tracking(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                              keel_buf_t *out)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return KEEL_ENOMEM;
    int on;
    if (keel__srv_arg_is(&argv[2], "on"))
        on = 1;
    else if (keel__srv_arg_is(&argv[2], "off"))
        on = 0;
    else
        return keel_resp_write_error(out, "ERR syntax error");
    unsigned flags = 0;
    int64_t redirect = 0;
    const keel_resp_arg_t *pfx[TRACKING_PREFIXES_MAX];
    size_t npfx = 0;
    for (size_t i = 3; i < argc; i++) {
        const keel_resp_arg_t *a = &argv[i];
        if (keel__srv_arg_is(a, "redirect") && i + 1 < argc) {
            if (keel_parse_i64(argv[i + 1].ptr, argv[i + 1].len, &redirect) != 0)
                return keel_resp_write_error(out, "ERR value is not an integer or out of range");
            if (redirect <= 0 || keel__srv_client_by_id(s, (uint64_t)redirect) == NULL)
                return keel_resp_write_error(
                    out, "ERR The client ID you want redirect to does not exist");
            i++;
        } else if (keel__srv_arg_is(a, "bcast")) {
            flags |= T_BCAST;
        } else if (keel__srv_arg_is(a, "optin")) {
            flags |= T_OPTIN;
        } else if (keel__srv_arg_is(a, "optout")) {
            flags |= T_OPTOUT;
        } else if (keel__srv_arg_is(a, "noloop")) {
            return keel_resp_write_error(out, "ERR keel: NOLOOP is not supported (a change is "
                                              "applied from the log, not from a connection)");
        } else if (keel__srv_arg_is(a, "prefix") && i + 1 < argc) {
            if (npfx == TRACKING_PREFIXES_MAX)
                return keel_resp_write_error(out, "ERR keel: too many prefixes");
            if (argv[i + 1].len > TRACKING_PREFIX_BYTES_MAX)
                return keel_resp_write_error(out, "ERR keel: prefix too long");
            pfx[npfx++] = &argv[++i];
        } else {
            return keel_resp_write_error(out, "ERR syntax error");
        }
    }
    if (!on) {
        tracker_drop(s, cs);
        return keel_resp_write_simple(out, "OK");
    }
    tracker_t *k = cs->tracker;
    if (npfx > 0 && !(flags & T_BCAST))
        return keel_resp_write_error(out, "ERR PREFIX option requires BCAST mode to be enabled");
    if (k != NULL && !!(k->flags & T_BCAST) != !!(flags & T_BCAST))
        return keel_resp_write_error(
            out, "ERR You can't switch BCAST mode on/off before disabling tracking for this "
                 "client, and then re-enabling it with a different mode.");
    if ((flags & T_BCAST) && (flags & (T_OPTIN | T_OPTOUT)))
        return keel_resp_write_error(out, "ERR OPTIN and OPTOUT are not compatible with BCAST");
    if ((flags & T_OPTIN) && (flags & T_OPTOUT))
        return keel_resp_write_error(out, "ERR You can't specify both OPTIN mode and OPTOUT mode");
    if (k != NULL && (((flags & T_OPTIN) && (k->flags & T_OPTOUT)) ||
                      ((flags & T_OPTOUT) && (k->flags & T_OPTIN))))
        return keel_resp_write_error(
            out, "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this "
                 "client, and then re-enabling it with a different mode.");
    if ((flags & T_BCAST) && prefixes_collide(k, pfx, npfx, out))
        return 0;
    if (k != NULL && k->prefixes_n + (npfx ? npfx : 1) > TRACKING_PREFIXES_MAX)
        return keel_resp_write_error(out, "ERR keel: too many prefixes");
    tracking_t *t = tracking(s);
    if (t == NULL)
        return keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL)
            return keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
        k->client = c;
        k->id = keel_resp_client_id(c);
        keel_list_init(&k->link);
        if (keel_map_put(&t->by_id, &k->id, sizeof(k->id), k, NULL) < 0) {
            free(k);
            return keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
        }
        cs->tracker = k;
    }
    k->flags = flags;
    k->redirect = (uint64_t)redirect;
    k->redir_broken_sent = 0;
    if (flags & T_BCAST) {
        int rc = npfx == 0 ? add_prefix(k, (const uint8_t *)"", 0) : 0;
        for (size_t i = 0; rc == 0 && i < npfx; i++)
            rc = add_prefix(k, pfx[i]->ptr, pfx[i]->len);
        if (rc != 0)
            return keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
        if (keel_list_empty(&k->link))
            keel_list_insert_head(&t->bcast, &k->link);
    }
    return keel_resp_write_simple(out, "OK");
}

int keel__srv_client_caching(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                             keel_buf_t *out)
{
    client_state_t *cs = keel__srv_state(c);
    tracker_t *k = cs ? cs->tracker : NULL;
    if (k == NULL || !(k->flags & (T_OPTIN | T_OPTOUT)))
        return keel_resp_write_error(out, "ERR CLIENT CACHING can be called only when the client "
                                          "is in tracking mode with OPTIN or OPTOUT mode enabled");
    if (keel__srv_arg_is(&argv[2], "yes") && (k->flags & T_OPTIN))
        k->caching_next = 1;
    else if (keel__srv_arg_is(&argv[2], "no") && (k->flags & T_OPTOUT))
        k->caching_next = -1;
    else if (keel__srv_arg_is(&argv[2], "yes") || keel__srv_arg_is(&argv[2], "no"))
        return keel_resp_write_error(
            out,
            keel__srv_arg_is(&argv[2], "yes")
                ? "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
                : "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT "
                  "mode.");
    else
        return keel_resp_write_error(out, "ERR syntax error");
    (void)argc;
    return keel_resp_write_simple(out, "OK");
}

int keel__srv_client_getredir(keel_resp_client_t *c, keel_buf_t *out)
{
    client_state_t *cs = keel_resp_client_data(c);
    tracker_t *k = cs ? cs->tracker : NULL;
    return keel_resp_write_int(out, k == NULL ? -1 : (int64_t)k->redirect);
}

int keel__srv_client_trackinginfo(keel_resp_client_t *c, keel_buf_t *out)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel_resp_client_data(c);
    tracker_t *k = cs ? cs->tracker : NULL;
    const char *flags[8];
    size_t n = 0;
    if (k == NULL) {
        flags[n++] = "off";
    } else {
        flags[n++] = "on";
        if (k->flags & T_BCAST)
            flags[n++] = "bcast";
        if (k->flags & T_OPTIN)
            flags[n++] = "optin";
        if (k->flags & T_OPTOUT)
            flags[n++] = "optout";
        if (k->caching_next == 1)
            flags[n++] = "caching-yes";
        if (k->caching_next == -1)
            flags[n++] = "caching-no";
        if (k->redirect != 0 && keel__srv_client_by_id(s, k->redirect) == NULL)
            flags[n++] = "broken_redirect";
    }
    int rc = keel_resp_write_array_header(out, 6);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, "flags");
    if (rc == 0)
        rc = keel_resp_write_array_header(out, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = keel_resp_write_bulk_str(out, flags[i]);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, "redirect");
    if (rc == 0)
        rc = keel_resp_write_int(out, k == NULL ? -1 : (int64_t)k->redirect);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, "prefixes");
    if (rc == 0)
        rc = keel_resp_write_array_header(out, k ? k->prefixes_n : 0);
    for (size_t i = 0; rc == 0 && k && i < k->prefixes_n; i++)
        rc = keel_resp_write_bulk(out, k->prefixes[i].p, k->prefixes[i].len);
    return rc;
}
