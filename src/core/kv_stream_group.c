/* kv_stream_group.c - consumer groups: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM,
   (dead letters and KEEL.XNACK: kv_stream_dlq.c; XINFO: kv_stream_info.c). */
#include "core/kv_stream_int.h"

#include "base/num.h"
#include "base/rand.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * Group state changes only through the log (XREADGROUP is a write), so every replica holds
 * the same pending lists; delivery and "seen" times are the entry's stamp (c->now), the
 * idle times a read reports are the reader's clock minus them.
 */

int keel__xs_nogroup(const call_t *c, size_t key, size_t group, const char *where)
{
    return keel__xs_errf(c, "NOGROUP No such key '%.*s' or consumer group '%.*s'%s",
                         (int)(c->lens[key] > 200 ? 200 : c->lens[key]), (const char *)c->argv[key],
                         (int)(c->lens[group] > 200 ? 200 : c->lens[group]),
                         (const char *)c->argv[group], where);
}

/*
 * An array whose length is known only once its items are written (Redis's
 * addReplyDeferredLen): the items go to a scratch buffer, then the header and the items to
 * the reply. A failure of either is the reply's failure, as for every reply.
 */
typedef struct deferred {
    keel_buf_t buf;
    reply_t r;
    size_t n;
} deferred_t;

static void defer_begin(const call_t *c, deferred_t *d)
{
    keel_buf_init(&d->buf, c->reply->b->bytes_max);
    d->r = (reply_t){&d->buf, 0, c->reply->failed};
    d->n = 0;
}

static void defer_end(const call_t *c, deferred_t *d)
{
    r_array(c->reply, d->n);
    track(c->reply, d->r.failed);
    if (!c->reply->failed)
        track(c->reply,
              keel_buf_append(c->reply->b, keel_buf_rptr(&d->buf), keel_buf_unread(&d->buf)));
    keel_buf_free(&d->buf);
}

/* The group argv[gi] of stream key argv[ki] for a write: 0 and *s, *g (NULL if absent), or
 * REPLIED (WRONGTYPE). */
int keel__xs_wgroup(const call_t *c, size_t ki, size_t gi, keel_stream_t **s,
                    keel_stream_group_t **g)
{
    keel__kv_entry_t **link;
    int rc = keel__xs_write_lookup(c, ki, &link, s);
    if (rc != 0)
        return rc;
    *g = *s ? keel_stream_group_find(*s, c->argv[gi], c->lens[gi]) : NULL;
    return 0;
}

/* ---- XGROUP ------------------------------------------------------------------------- */

static int sub_syntax_error(const call_t *c)
{
    return keel__xs_errf(c,
                         "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try "
                         "XGROUP HELP.",
                         (int)(c->lens[1] > 128 ? 128 : c->lens[1]), (const char *)c->argv[1]);
}

/* Redis 7's subcommand table: name and arity ("xgroup|create"). */
int keel__xs_sub_arity(const call_t *c, const char *const *names, const int *arity, size_t n,
                       const char *cmd, const char *help)
{
    for (size_t i = 0; i < n; i++) {
        if (!keel__kvc_arg_is(c, 1, names[i]))
            continue;
        int a = arity[i];
        if ((a > 0 && c->argc != (size_t)a) || (a < 0 && c->argc < (size_t)-a)) {
            char lower[32];
            size_t k = 0;
            for (; names[i][k] && k < sizeof(lower) - 1; k++)
                lower[k] = (char)(names[i][k] | 0x20);
            lower[k] = '\0';
            return keel__xs_errf(c, "ERR wrong number of arguments for '%s|%s' command", cmd,
                                 lower);
        }
        return 0;
    }
    return keel__xs_errf(c, "ERR unknown subcommand '%.*s'. Try %s HELP.",
                         (int)(c->lens[1] > 128 ? 128 : c->lens[1]), (const char *)c->argv[1],
                         help);
}

int keel__xs_xgroup_syntax(const call_t *c)
{
    static const char *const names[] = {"CREATE", "SETID", "DESTROY", "CREATECONSUMER",
                                        "DELCONSUMER"};
    static const int arity[] = {-5, -5, 4, 5, 5};
    return keel__xs_sub_arity(c, names, arity, 5, "xgroup", "XGROUP");
}

int keel__xs_cmd_xgroup(const call_t *c)
{
    int create = keel__kvc_arg_is(c, 1, "CREATE"), setid = keel__kvc_arg_is(c, 1, "SETID");
    int mkstream = 0;
    int64_t entries_read = KEEL_STREAM_ENTRIES_READ_UNKNOWN;
    if (create || setid) {
        for (size_t i = 5; i < c->argc;) {
            if (create && keel__kvc_arg_is(c, i, "MKSTREAM")) {
                mkstream = 1;
                i++;
            } else if (keel__kvc_arg_is(c, i, "ENTRIESREAD") && i + 1 < c->argc) {
                if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &entries_read) != 0)
                    return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
                if (entries_read < 0 && entries_read != KEEL_STREAM_ENTRIES_READ_UNKNOWN)
                    return keel__kvc_done(
                        r_err(c->reply, "ERR value for ENTRIESREAD must be positive or -1"));
                i += 2;
            } else {
                return keel__kvc_done(sub_syntax_error(c));
            }
        }
    }
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    int rc = keel__xs_wgroup(c, 2, 3, &s, &g);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (!mkstream && s == NULL)
        return keel__kvc_done(r_err(
            c->reply, "ERR The XGROUP subcommand requires the key to exist. Note that for "
                      "CREATE you may want to use the MKSTREAM option to create an empty stream "
                      "automatically."));
    if (s && g == NULL && !create && !keel__kvc_arg_is(c, 1, "DESTROY"))
        return keel__kvc_done(
            keel__xs_errf(c, "NOGROUP No such consumer group '%.*s' for key name '%.*s'",
                          (int)(c->lens[3] > 200 ? 200 : c->lens[3]), (const char *)c->argv[3],
                          (int)(c->lens[2] > 200 ? 200 : c->lens[2]), (const char *)c->argv[2]));
    size_t before = keel__xs_bytes(s);
    if (create || setid) {
        keel_stream_id_t id = {0, 0};
        if (c->lens[4] == 1 && c->argv[4][0] == '$') {
            if (s) {
                keel_stream_info_t in;
                keel_stream_get_info(s, &in);
                id = in.last_id;
            }
        } else if (keel__xs_parse_id(c, 4, 0, create, &id) != 0) {
            return 0;
        }
        if (setid) {
            keel_stream_group_set_last(g, id, entries_read);
            r_ok(c->reply);
            keel__xs_changed(c, 2, before);
            return 0;
        }
        if (g != NULL)
            return keel__kvc_done(r_err(c->reply, "BUSYGROUP Consumer Group name already exists"));
        keel_stream_t *fresh = NULL;
        if (s == NULL) {
            if ((rc = keel__xs_check_new(c, 2)) != 0)
                return keel__kvc_done(rc);
            if ((fresh = s = keel_stream_new()) == NULL)
                return KEEL_ENOMEM;
        }
        rc = keel_stream_group_create(s, c->argv[3], c->lens[3], id, entries_read, NULL);
        if (rc == 0 && fresh)
            rc = keel__xs_link(c, 2, fresh);
        if (rc != 0) {
            keel_stream_free(fresh);
            return rc;
        }
        r_ok(c->reply);
        keel__xs_changed(c, 2, before);
        return 0;
    }
    if (keel__kvc_arg_is(c, 1, "DESTROY")) {
        r_int(c->reply, g != NULL);
        if (g) {
            keel_stream_group_destroy(s, g);
            keel__xs_changed(c, 2, before);
        }
        return 0;
    }
    if (keel__kvc_arg_is(c, 1, "CREATECONSUMER")) {
        int created;
        if (keel_stream_consumer_get(s, g, c->argv[4], c->lens[4], c->now, &created) == NULL)
            return KEEL_ENOMEM;
        r_int(c->reply, created);
        if (created)
            keel__xs_changed(c, 2, before);
        return 0;
    }
    assert(keel__kvc_arg_is(c, 1, "DELCONSUMER"));
    keel_stream_consumer_t *cons = keel_stream_consumer_find(g, c->argv[4], c->lens[4]);
    uint64_t pending = cons ? keel_stream_consumer_delete(s, g, cons) : 0;
    r_int(c->reply, (int64_t)pending);
    if (cons)
        keel__xs_changed(c, 2, before);
    return 0;
}

/* ---- XREADGROUP --------------------------------------------------------------------- */

int keel__xs_xreadgroup_syntax(const call_t *c)
{
    xread_args_t a;
    return keel__xs_read_parse(c, 1, &a);
}

static int is_gt(const call_t *c, size_t i)
{
    return c->lens[i] == 1 && c->argv[i][0] == '>';
}

/* '>' would deliver something at now_ms: entries after the group's last id, or an entry
 * KEEL.XNACK returned whose delay has passed (a walk of the PEL). */
static int has_work(const keel_stream_t *s, const keel_stream_group_t *g, uint64_t now_ms)
{
    keel_stream_info_t in;
    keel_stream_get_info(s, &in);
    if (in.length > 0 &&
        keel_stream_id_cmp(keel_stream_last_live_id(s), keel_stream_group_last_id(g)) > 0)
        return 1;
    for (size_t i = 0, n = keel_stream_pel_count(g); i < n; i++) {
        const keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        if (p->due_ms != 0 && p->due_ms <= now_ms)
            return 1;
    }
    return 0;
}

/* A consumer's history from `from`: its pending entries, each counted as delivered again. */
static void history(const call_t *c, keel_stream_t *s, keel_stream_group_t *g,
                    keel_stream_consumer_t *cons, keel_stream_id_t from, uint64_t count)
{
    size_t n = 0, total = keel_stream_pel_count(g);
    for (size_t i = keel_stream_pel_seek(g, from); i < total && (!count || n < count); i++)
        n += keel_stream_pel_at(g, i)->owner == cons;
    r_array(c->reply, n);
    size_t done = 0;
    for (size_t i = keel_stream_pel_seek(g, from); i < total && done < n; i++) {
        keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        if (p->owner != cons)
            continue;
        done++;
        keel_stream_entry_t e;
        if (keel_stream_get(s, p->id, &e)) {
            keel__xs_entry(c->reply, &e);
            p->delivery_ms = c->now;
            p->delivery_count++;
        } else { /* deleted since: the id with a nil entry, as Redis */
            r_array(c->reply, 2);
            keel__xs_id(c->reply, p->id);
            r_nil_array(c->reply);
        }
    }
}

/*
 * What '>' delivers to cons: first the entries KEEL.XNACK returned to the group whose delay
 * has passed (keel; in id order, each counted as one more delivery), then the entries after
 * the group's last id (added to the PEL unless NOACK; NOACK also acknowledges a returned
 * one). 0 or ENOMEM.
 */
static int deliver_new(const call_t *c, keel_stream_t *s, keel_stream_group_t *g,
                       keel_stream_consumer_t *cons, uint64_t count, int noack)
{
    deferred_t d;
    defer_begin(c, &d);
    for (size_t i = 0; i < keel_stream_pel_count(g) && (!count || d.n < count);) {
        keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        keel_stream_entry_t e;
        if (p->due_ms == 0 || p->due_ms > c->now) {
            i++;
        } else if (!keel_stream_get(s, p->id, &e)) {
            keel_stream_pel_remove(s, g, p->id); /* deleted meanwhile: nothing to deliver */
        } else {
            keel__xs_entry(&d.r, &e);
            d.n++;
            if (noack) {
                keel_stream_pel_remove(s, g, p->id);
                continue;
            }
            keel_stream_pel_assign(p, cons);
            p->due_ms = 0;
            p->delivery_ms = c->now;
            p->delivery_count++;
            c->w->stream_redeliveries++;
            i++;
        }
    }
    keel_stream_id_t start = keel_stream_group_last_id(g);
    int rc = 0;
    if (keel_stream_id_incr(&start) == 0) {
        keel_stream_iter_t it;
        keel_stream_entry_t e;
        keel_stream_iter_init(&it, s, start, (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, 0);
        while ((!count || d.n < count) && keel_stream_iter_next(&it, &e)) {
            if (!noack && (rc = keel_stream_pel_deliver(s, g, cons, e.id, c->now)) != 0)
                break;
            keel__xs_entry(&d.r, &e);
            d.n++;
            keel_stream_group_delivered(s, g, e.id);
        }
    }
    defer_end(c, &d);
    return rc;
}

/* How many entries '>' would deliver now, at most cap: due returned ones, then new ones. */
static uint64_t work_count(const keel_stream_t *s, const keel_stream_group_t *g, uint64_t now_ms,
                           uint64_t cap)
{
    uint64_t n = 0;
    for (size_t i = 0, pel = keel_stream_pel_count(g); i < pel && n < cap; i++) {
        const keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        n += p->due_ms != 0 && p->due_ms <= now_ms && keel_stream_exists(s, p->id);
    }
    keel_stream_id_t start = keel_stream_group_last_id(g);
    if (n < cap && keel_stream_id_incr(&start) == 0) {
        keel_stream_iter_t it;
        keel_stream_entry_t e;
        keel_stream_iter_init(&it, s, start, (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, 0);
        while (n < cap && keel_stream_iter_next(&it, &e))
            n++;
    }
    return n;
}

/* The consumer of the first stream's group: its KEEL.PRIORITY reads count the starvation
 * guard's turns (NULL before its first read). */
static keel_stream_consumer_t *priority_consumer(const call_t *c, const xread_args_t *a)
{
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    keel__xs_wgroup(c, a->streams_pos, a->group_pos, &s, &g);
    return keel_stream_consumer_find(g, c->argv[a->group_pos + 1], c->lens[a->group_pos + 1]);
}

/* This read is the starvation guard's turn: every KEEL.STARVE-th priority read. */
static int starving(const call_t *c, const xread_args_t *a)
{
    if (a->starve == 0)
        return 0;
    const keel_stream_consumer_t *cons = priority_consumer(c, a);
    uint64_t done = cons ? keel_stream_consumer_priority_reads(cons) : 0;
    return (done + 1) % (uint64_t)a->starve == 0;
}

/* Counts a served priority read on its consumer (created if new): 0 or ENOMEM. */
static int priority_turn(const call_t *c, const xread_args_t *a)
{
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    keel__xs_wgroup(c, a->streams_pos, a->group_pos, &s, &g);
    keel_stream_consumer_t *cons = keel_stream_consumer_get(
        s, g, c->argv[a->group_pos + 1], c->lens[a->group_pos + 1], c->now, NULL);
    if (cons == NULL)
        return KEEL_ENOMEM;
    keel_stream_consumer_priority_read(cons);
    return 0;
}

/*
 * Which streams are served and how many entries each may take (limit[k]: 0 not served,
 * UINT64_MAX no limit); returns how many are served. Redis: a history read always, '>'
 * when the group has work, each up to COUNT. KEEL.PRIORITY (keel): the streams in the
 * order named (reversed on the starvation guard's turn) share COUNT, the first ones first;
 * without COUNT only the first stream with work is served.
 */
static size_t plan(const call_t *c, const xread_args_t *a, uint64_t *limit)
{
    size_t ids = a->streams_pos + a->nstreams, served = 0;
    uint64_t left = a->count ? a->count : UINT64_MAX;
    int reverse = a->priority && starving(c, a);
    for (size_t j = 0; j < a->nstreams; j++) {
        size_t k = reverse ? a->nstreams - 1 - j : j;
        keel_stream_t *s;
        keel_stream_group_t *g = NULL;
        keel__xs_wgroup(c, a->streams_pos + k, a->group_pos, &s, &g);
        limit[k] = 0;
        if (!a->priority) {
            if (!is_gt(c, ids + k) || has_work(s, g, c->now))
                limit[k] = a->count ? a->count : UINT64_MAX;
        } else if (left > 0 && (limit[k] = work_count(s, g, c->now, left)) > 0) {
            left = a->count ? left - limit[k] : 0;
            if (!a->count)
                limit[k] = UINT64_MAX;
        }
        served += limit[k] > 0;
    }
    return served;
}

int keel__xs_cmd_xreadgroup(const call_t *c)
{
    xread_args_t a;
    int rc = keel__xs_read_parse(c, 1, &a);
    assert(rc == 0);
    size_t ids = a.streams_pos + a.nstreams, gi = a.group_pos, ci = a.group_pos + 1;
    for (size_t k = 0; k < a.nstreams; k++) {
        keel_stream_t *s;
        keel_stream_group_t *g = NULL;
        size_t i = ids + k;
        if ((rc = keel__xs_wgroup(c, a.streams_pos + k, gi, &s, &g)) != 0)
            return keel__kvc_done(rc);
        if (g == NULL)
            return keel__kvc_done(
                keel__xs_nogroup(c, a.streams_pos + k, gi, " in XREADGROUP with GROUP option"));
        if (c->lens[i] == 1 && c->argv[i][0] == '$')
            return keel__kvc_done(r_err(
                c->reply, "ERR The $ ID is meaningless in the context of XREADGROUP: you want to "
                          "read the history of this consumer by specifying a proper ID, or use "
                          "the > ID to get new messages. The $ ID would just return an empty "
                          "result set."));
        keel_stream_id_t id;
        if (!is_gt(c, i) && keel__xs_parse_id(c, i, 0, 1, &id) != 0)
            return 0;
    }
    if (a.priority)
        for (size_t k = 0; k < a.nstreams; k++)
            if (!is_gt(c, ids + k))
                return keel__kvc_done(r_err(c->reply, "ERR keel: KEEL.PRIORITY reads new "
                                                      "entries only: use '>' for every stream"));
    uint64_t *limit = malloc(a.nstreams * sizeof(*limit));
    if (limit == NULL)
        return KEEL_ENOMEM;
    size_t served = plan(c, &a, limit);
    if (served == 0) {
        free(limit);
        r_nil_array(c->reply);
        return 0;
    }
    if (a.priority && (rc = priority_turn(c, &a)) != 0) {
        free(limit);
        return rc;
    }
    r_array(c->reply, served);
    for (size_t k = 0; k < a.nstreams; k++) {
        keel_stream_t *s;
        keel_stream_group_t *g = NULL;
        keel__xs_wgroup(c, a.streams_pos + k, gi, &s, &g);
        if (limit[k] == 0)
            continue;
        uint64_t count = limit[k] == UINT64_MAX ? 0 : limit[k];
        size_t before = keel__xs_bytes(s);
        keel_stream_consumer_t *cons =
            keel_stream_consumer_get(s, g, c->argv[ci], c->lens[ci], c->now, NULL);
        if (cons == NULL)
            return KEEL_ENOMEM;
        keel_stream_consumer_seen(cons, c->now);
        r_array(c->reply, 2);
        r_bulk(c->reply, c->argv[a.streams_pos + k], c->lens[a.streams_pos + k]);
        if (is_gt(c, ids + k)) {
            if ((rc = deliver_new(c, s, g, cons, count, a.noack)) != 0) {
                free(limit);
                c->w->revision++; /* the streams before this one did change */
                return rc;
            }
        } else {
            keel_stream_id_t from; /* entries after the id, as XREAD's */
            keel_stream_id_parse(c->argv[ids + k], c->lens[ids + k], 0, 1, NULL, &from);
            if (keel_stream_id_incr(&from) != 0)
                r_array(c->reply, 0);
            else
                history(c, s, g, cons, from, count);
        }
        keel__xs_touch(c, c->argv[a.streams_pos + k], c->lens[a.streams_pos + k], before);
    }
    free(limit);
    c->w->revision++;
    return 0;
}

/* ---- XACK ---------------------------------------------------------------------------- */

int keel__xs_cmd_xack(const call_t *c)
{
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    int rc = keel__xs_wgroup(c, 1, 2, &s, &g);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (g == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    keel_stream_id_t id;
    for (size_t i = 3; i < c->argc; i++)
        if (keel__xs_parse_id(c, i, 0, 1, &id) != 0)
            return 0;
    size_t before = keel__xs_bytes(s);
    int64_t n = 0;
    for (size_t i = 3; i < c->argc; i++) {
        keel_stream_id_parse(c->argv[i], c->lens[i], 0, 1, NULL, &id);
        n += keel_stream_pel_remove(s, g, id);
    }
    r_int(c->reply, n);
    if (n > 0)
        keel__xs_changed(c, 1, before);
    return 0;
}

/* ---- XPENDING -------------------------------------------------------------------------- */

int64_t keel__xs_idle_of(uint64_t now, uint64_t then)
{
    return now > then ? (int64_t)(now - then) : 0;
}

int keel__xs_cmd_xpending(const call_t *c)
{
    int justinfo = c->argc == 3;
    int64_t count = 0, minidle = 0;
    keel_stream_id_t start = {0, 0}, end = {0, 0};
    size_t consumer_arg = 0;
    if (c->argc != 3 && (c->argc < 6 || c->argc > 9))
        return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
    if (c->argc >= 6) {
        size_t si = 3;
        if (keel__kvc_arg_is(c, 3, "IDLE")) {
            if (keel_parse_i64(c->argv[4], c->lens[4], &minidle) != 0)
                return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
            if (c->argc < 8)
                return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
            si += 2;
        }
        if (keel_parse_i64(c->argv[si + 2], c->lens[si + 2], &count) != 0)
            return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
        if (count < 0)
            count = 0;
        if (keel__xs_parse_bound(c, si, 0, &start) != 0 ||
            keel__xs_parse_bound(c, si + 1, 1, &end) != 0)
            return 0;
        if (si + 3 < c->argc)
            consumer_arg = si + 3;
    }
    const keel_stream_t *s;
    if (keel__xs_read_lookup(c, 1, &s) != 0)
        return 0;
    const keel_stream_group_t *g = s ? keel_stream_group_find(s, c->argv[2], c->lens[2]) : NULL;
    if (g == NULL)
        return keel__kvc_done(keel__xs_nogroup(c, 1, 2, ""));
    size_t total = keel_stream_pel_count(g);
    if (justinfo) {
        r_array(c->reply, 4);
        r_int(c->reply, (int64_t)total);
        if (total == 0) {
            r_nil(c->reply);
            r_nil(c->reply);
            r_nil_array(c->reply);
            return 0;
        }
        keel__xs_id(c->reply, keel_stream_pel_at(g, 0)->id);
        keel__xs_id(c->reply, keel_stream_pel_at(g, total - 1)->id);
        size_t nc = 0, ncons = keel_stream_consumers_count(g);
        for (size_t i = 0; i < ncons; i++)
            nc += keel_stream_consumer_pending(keel_stream_consumer_at(g, i)) > 0;
        r_array(c->reply, nc);
        for (size_t i = 0; i < ncons; i++) {
            const keel_stream_consumer_t *cn = keel_stream_consumer_at(g, i);
            uint64_t p = keel_stream_consumer_pending(cn);
            if (p == 0)
                continue;
            size_t len;
            const uint8_t *name = keel_stream_consumer_name(cn, &len);
            char num[KEEL_DEC_BYTES_MAX];
            size_t nn = keel_fmt_u64(num, p);
            r_array(c->reply, 2);
            r_bulk(c->reply, name, len);
            r_bulk(c->reply, (const uint8_t *)num, nn);
        }
        return 0;
    }
    const keel_stream_consumer_t *only = NULL;
    if (consumer_arg) {
        only = keel_stream_consumer_find(g, c->argv[consumer_arg], c->lens[consumer_arg]);
        if (only == NULL) {
            r_array(c->reply, 0);
            return 0;
        }
    }
    for (int pass = 0; pass < 2; pass++) { /* count, then write */
        int64_t left = count;
        size_t n = 0;
        for (size_t i = keel_stream_pel_seek(g, start); left > 0 && i < total; i++) {
            const keel_stream_pending_t *p = keel_stream_pel_at(g, i);
            if (keel_stream_id_cmp(p->id, end) > 0)
                break;
            if (only && p->owner != only)
                continue;
            if (minidle && keel__xs_idle_of(c->now, p->delivery_ms) < minidle)
                continue;
            left--;
            n++;
            if (pass == 0)
                continue;
            size_t len;
            const uint8_t *name = keel_stream_consumer_name(p->owner, &len);
            r_array(c->reply, 4);
            keel__xs_id(c->reply, p->id);
            r_bulk(c->reply, name, len);
            r_int(c->reply, keel__xs_idle_of(c->now, p->delivery_ms));
            r_int(c->reply, (int64_t)p->delivery_count);
        }
        if (pass == 0)
            r_array(c->reply, n);
    }
    return 0;
}

/* ---- XCLAIM, XAUTOCLAIM -------------------------------------------------------------- */

/* Moves pending p to cons as a claim does, and replies with the entry (or its id). A claim
 * takes an entry that KEEL.XNACK returned to the group out of the group's hands: its due
 * time goes, or '>' would hand it to a second consumer while the claimer holds it (the
 * streams nemesis's checker found that: a NACK, a claim, then '>' delivered it again). */
static void claim_one(reply_t *o, const keel_stream_t *s, keel_stream_pending_t *p,
                      keel_stream_consumer_t *cons, uint64_t delivery_ms, int64_t retrycount,
                      int justid)
{
    keel_stream_pel_assign(p, cons);
    p->due_ms = 0;
    p->delivery_ms = delivery_ms;
    if (retrycount >= 0)
        p->delivery_count = (uint64_t)retrycount;
    else if (!justid)
        p->delivery_count++;
    keel_stream_entry_t e;
    if (justid)
        keel__xs_id(o, p->id);
    else if (keel_stream_get(s, p->id, &e))
        keel__xs_entry(o, &e);
    else
        r_nil(o);
}

static int claim_opt_int(const call_t *c, size_t i, const char *what, int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return keel__xs_errf(c, "ERR Invalid %s argument for XCLAIM", what);
    return 0;
}

/*
 * XCLAIM key group consumer min-idle-time id... [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE]
 * [JUSTID] [LASTID id], in Redis's order: ids until the first argument that is not one (not
 * strict: '-' and '+' are ids here), then the options; each id in turn.
 */
int keel__xs_cmd_xclaim(const call_t *c)
{
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    int rc = keel__xs_wgroup(c, 1, 2, &s, &g);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (g == NULL)
        return keel__kvc_done(keel__xs_nogroup(c, 1, 2, ""));
    int64_t minidle, retrycount = -1, deliverytime = -1, v;
    if (keel_parse_i64(c->argv[4], c->lens[4], &minidle) != 0)
        return keel__kvc_done(r_err(c->reply, "ERR Invalid min-idle-time argument for XCLAIM"));
    if (minidle < 0)
        minidle = 0;
    size_t j = 5;
    keel_stream_id_t id;
    for (; j < c->argc; j++)
        if (keel_stream_id_parse(c->argv[j], c->lens[j], 0, 0, NULL, &id) != 0)
            break;
    size_t last_id_arg = j; /* ids are argv[5 .. last_id_arg) */
    int force = 0, justid = 0;
    uint64_t now = c->now;
    keel_stream_id_t lastid = {0, 0};
    for (; j < c->argc; j++) {
        size_t more = c->argc - 1 - j;
        if (keel__kvc_arg_is(c, j, "FORCE")) {
            force = 1;
        } else if (keel__kvc_arg_is(c, j, "JUSTID")) {
            justid = 1;
        } else if (keel__kvc_arg_is(c, j, "IDLE") && more) {
            if (claim_opt_int(c, ++j, "IDLE option", &v) != 0)
                return 0;
            deliverytime = (int64_t)now - v;
        } else if (keel__kvc_arg_is(c, j, "TIME") && more) {
            if (claim_opt_int(c, ++j, "TIME option", &deliverytime) != 0)
                return 0;
        } else if (keel__kvc_arg_is(c, j, "RETRYCOUNT") && more) {
            if (claim_opt_int(c, ++j, "RETRYCOUNT option", &retrycount) != 0)
                return 0;
        } else if (keel__kvc_arg_is(c, j, "LASTID") && more) {
            if (keel__xs_parse_id(c, ++j, 0, 1, &lastid) != 0)
                return 0;
        } else {
            return keel__kvc_done(keel__xs_errf(c, "ERR Unrecognized XCLAIM option '%.*s'",
                                                (int)(c->lens[j] > 128 ? 128 : c->lens[j]),
                                                (const char *)c->argv[j]));
        }
    }
    size_t before = keel__xs_bytes(s);
    int changed = 0; /* only a change makes a new version (a WATCH of the key sees it) */
    if (keel_stream_id_cmp(lastid, keel_stream_group_last_id(g)) > 0) {
        keel_stream_group_set_last(g, lastid, keel_stream_group_entries_read(g));
        changed = 1;
    }
    if (deliverytime < 0 || deliverytime > (int64_t)now)
        deliverytime = (int64_t)now;
    keel_stream_consumer_t *cons = NULL;
    deferred_t d;
    defer_begin(c, &d);
    for (size_t k = 5; k < last_id_arg && rc == 0; k++) {
        keel_stream_id_parse(c->argv[k], c->lens[k], 0, 0, NULL, &id);
        keel_stream_pending_t *p = keel_stream_pel_find(g, id);
        if (!keel_stream_exists(s, id)) { /* gone from the stream: gone from the PEL */
            if (p)
                changed = keel_stream_pel_remove(s, g, id);
            continue;
        }
        if (force && p == NULL && (rc = keel_stream_pel_add(s, g, id, &p)) != 0)
            break;
        changed |= force;
        if (p == NULL || (p->owner && minidle && keel__xs_idle_of(now, p->delivery_ms) < minidle))
            continue;
        int moved =
            keel__xs_over_limit(c, 1, s, g, p, NULL, 0); /* keel: its last chance was used */
        if (moved != 0) {
            rc = moved < 0 ? moved : 0;
            changed = 1;
            continue;
        }
        if (cons == NULL) {
            cons = keel_stream_consumer_get(s, g, c->argv[3], c->lens[3], now, NULL);
            if (cons == NULL) {
                rc = KEEL_ENOMEM;
                break;
            }
            p = keel_stream_pel_find(g, id);
        }
        keel_stream_consumer_seen(cons, now);
        claim_one(&d.r, s, p, cons, (uint64_t)deliverytime, retrycount, justid);
        d.n++;
    }
    defer_end(c, &d);
    if (changed || d.n > 0)
        keel__xs_changed(c, 1, before);
    return rc;
}

/*
 * XAUTOCLAIM key group consumer min-idle-time start [COUNT n] [JUSTID] (Redis
 * xautoclaimCommand): at most 10 x COUNT pending entries examined from start; one whose
 * entry was deleted leaves the PEL and counts against COUNT; the reply is [the next pending
 * id after the last examined (0-0 at the end), [claimed...], [deleted ids...]].
 */
int keel__xs_cmd_xautoclaim(const call_t *c)
{
    int64_t minidle, count = 100;
    if (keel_parse_i64(c->argv[4], c->lens[4], &minidle) != 0)
        return keel__kvc_done(r_err(c->reply, "ERR Invalid min-idle-time argument for XAUTOCLAIM"));
    if (minidle < 0)
        minidle = 0;
    keel_stream_id_t start;
    if (keel__xs_parse_bound(c, 5, 0, &start) != 0)
        return 0;
    int justid = 0;
    for (size_t j = 6; j < c->argc;) {
        size_t more = c->argc - 1 - j;
        if (keel__kvc_arg_is(c, j, "COUNT") && more) {
            const int64_t max_count = INT64_MAX / 16; /* Redis: LONG_MAX / max(16, 10) */
            if (keel_parse_i64(c->argv[j + 1], c->lens[j + 1], &count) != 0 || count < 1 ||
                count > max_count)
                return keel__kvc_done(r_err(c->reply, "ERR COUNT must be > 0"));
            j += 2;
        } else if (keel__kvc_arg_is(c, j, "JUSTID")) {
            justid = 1;
            j++;
        } else {
            return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
        }
    }
    keel_stream_t *s;
    keel_stream_group_t *g = NULL;
    int rc = keel__xs_wgroup(c, 1, 2, &s, &g);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (g == NULL)
        return keel__kvc_done(keel__xs_nogroup(c, 1, 2, ""));
    size_t before = keel__xs_bytes(s);
    uint64_t now = c->now;
    int64_t attempts = count * 10, left = count;
    keel_stream_consumer_t *cons = NULL;
    deferred_t claimed, deleted;
    defer_begin(c, &claimed);
    defer_begin(c, &deleted);
    size_t i = keel_stream_pel_seek(g, start);
    while (attempts-- > 0 && left > 0 && i < keel_stream_pel_count(g)) {
        keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        keel_stream_id_t id = p->id;
        if (!keel_stream_exists(s, id)) {
            keel_stream_pel_remove(s, g, id); /* the next one slides to i */
            keel__xs_id(&deleted.r, id);
            deleted.n++;
            left--;
            continue;
        }
        if (minidle && keel__xs_idle_of(now, p->delivery_ms) < minidle) {
            i++;
            continue;
        }
        int moved =
            keel__xs_over_limit(c, 1, s, g, p, NULL, 0); /* keel: gone to the dead letters */
        if (moved < 0) {
            rc = moved;
            break;
        }
        if (moved) {
            keel__xs_id(&deleted.r, id);
            deleted.n++;
            left--;
            continue;
        }
        i++;
        if (cons == NULL) {
            cons = keel_stream_consumer_get(s, g, c->argv[3], c->lens[3], now, NULL);
            if (cons == NULL) {
                rc = KEEL_ENOMEM;
                break;
            }
            p = keel_stream_pel_find(g, id);
        }
        keel_stream_consumer_seen(cons, now);
        claim_one(&claimed.r, s, p, cons, now, -1, justid);
        claimed.n++;
        left--;
    }
    keel_stream_id_t next = {0, 0};
    if (i < keel_stream_pel_count(g))
        next = keel_stream_pel_at(g, i)->id;
    r_array(c->reply, 3);
    keel__xs_id(c->reply, next);
    int changed = claimed.n > 0 || deleted.n > 0;
    defer_end(c, &claimed);
    defer_end(c, &deleted);
    if (changed)
        keel__xs_changed(c, 1, before);
    return rc;
}

/* ---- for the server: a blocked consumer's wake-up test -------------------------------- */

int keel_kv_xreadgroup_ready(const keel_kv_t *kv, uint64_t now_ms, int argc,
                             const uint8_t *const *argv, const size_t *lens)
{
    keel_buf_t scratch;
    keel_buf_init(&scratch, 4096);
    reply_t o = {&scratch, 0, 0};
    call_t c = {NULL, kv, kv->time_ms, (size_t)argc, argv, lens, &o, NULL, NULL, NULL, NULL};
    xread_args_t a;
    int ready = keel__xs_read_parse(&c, 1, &a) != 0;
    for (size_t k = 0; !ready && k < a.nstreams; k++) {
        const keel_stream_t *s;
        size_t i = a.streams_pos + a.nstreams + k;
        if (keel__xs_read_lookup(&c, a.streams_pos + k, &s) != 0 || s == NULL || !is_gt(&c, i)) {
            ready = 1;
            break;
        }
        const keel_stream_group_t *g =
            keel_stream_group_find(s, argv[a.group_pos], lens[a.group_pos]);
        keel_stream_info_t in;
        keel_stream_get_info(s, &in);
        ready = g == NULL || has_work(s, g, now_ms);
    }
    keel_buf_free(&scratch);
    return ready;
}
