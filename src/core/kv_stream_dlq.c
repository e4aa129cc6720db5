/* kv_stream_dlq.c - dead letters and KEEL.XNACK, keel beyond Redis (split from kv_stream_group.c).
 */
#include "core/kv_stream_int.h"

#include "base/num.h"
#include "base/rand.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- dead letters and KEEL.XNACK (keel, beyond Redis) -------------------------------- */

/* Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
 * Jitter"): a delay in [0, min(cap, base x 2^(deliveries - 1))], its randomness a hash of
 * the entry and its delivery count, so that every replica computes the same delay. */
#define NACK_BACKOFF_BASE_MS 1000u
#define NACK_BACKOFF_MAX_MS (3600u * 1000u)
static uint64_t nack_backoff_ms(keel_stream_id_t id, uint64_t deliveries)
{
    uint64_t shift = deliveries > 1 ? deliveries - 1 : 0;
    uint64_t cap = shift >= 12 ? NACK_BACKOFF_MAX_MS : (uint64_t)NACK_BACKOFF_BASE_MS << shift;
    if (cap > NACK_BACKOFF_MAX_MS)
        cap = NACK_BACKOFF_MAX_MS;
    return keel_mix64(id.ms ^ keel_mix64(id.seq ^ (deliveries << 32))) % (cap + 1);
}

/*
 * Moves the pending entry id of group g (stream s at key argv[key]) to the group's
 * dead-letter stream, as a new entry (id from the entry's time, as XADD *) with the
 * original fields followed by keel-stream, keel-group, keel-id, keel-deliveries and
 * keel-error, and removes it from the PEL: acknowledged in the source group, all in this
 * one command. 1 moved; 0 not (no dead-letter stream, its key holds another type, no room
 * for a new key, or its ids are exhausted: the entry stays pending); or KEEL_ENOMEM. The
 * caller gives the source key its new version and steps the revision.
 */
static int dead_letter(const call_t *c, size_t key, keel_stream_t *s, keel_stream_group_t *g,
                       keel_stream_id_t id, const uint8_t *err, size_t err_len)
{
    size_t dlen;
    const uint8_t *dkey = keel_stream_group_deadletter(g, &dlen);
    keel_stream_pending_t *p = keel_stream_pel_find(g, id);
    if (dkey == NULL || p == NULL)
        return 0;
    keel_kv_t *kv = c->w;
    keel__kv_entry_t *e = keel__kv_find(kv, dkey, dlen, keel__kv_hash(kv, dkey, dlen), NULL);
    if (e && (e->type != KEEL__KV_TYPE_STREAM || !keel__kv_alive(kv, e, c->now)))
        return 0;
    if (e == NULL && kv->count >= kv->cfg.keys_max)
        return 0;
    keel_stream_t *d = e ? keel__kv_obj(e) : NULL;
    assert(d != s); /* KEEL.XDEADLETTER refuses the stream itself */
    keel_stream_info_t in = {0};
    if (d)
        keel_stream_get_info(d, &in);
    keel_stream_id_t nid;
    if (keel__xs_auto_id(c, in.last_id, &nid) != 0)
        return 0;
    keel_stream_entry_t ent;
    size_t orig = keel_stream_get(s, id, &ent) ? ent.nfields : 0, nf = orig + 5;
    const uint8_t **fv = malloc(2 * nf * sizeof(*fv));
    size_t *lens = malloc(2 * nf * sizeof(*lens));
    int rc = fv && lens ? 0 : KEEL_ENOMEM;
    char idt[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1], cnt[KEEL_DEC_BYTES_MAX];
    if (rc == 0) {
        keel_stream_field_cursor_t cur;
        if (orig)
            keel_stream_fields_begin(&ent, &cur);
        for (size_t i = 0; i < orig; i++)
            keel_stream_field_next(&cur, &fv[2 * i], &lens[2 * i], &fv[2 * i + 1],
                                   &lens[2 * i + 1]);
        size_t gl;
        const uint8_t *gname = keel_stream_group_name(g, &gl);
        size_t idn = keel_stream_id_format(idt, id), cn = keel_fmt_u64(cnt, p->delivery_count);
        const struct {
            const char *f;
            const uint8_t *v;
            size_t n;
        } meta[5] = {{"keel-stream", c->argv[key], c->lens[key]},
                     {"keel-group", gname, gl},
                     {"keel-id", (const uint8_t *)idt, idn},
                     {"keel-deliveries", (const uint8_t *)cnt, cn},
                     {"keel-error", err ? err : (const uint8_t *)"", err ? err_len : 0}};
        for (size_t i = 0; i < 5; i++) {
            fv[2 * (orig + i)] = (const uint8_t *)meta[i].f;
            lens[2 * (orig + i)] = strlen(meta[i].f);
            fv[2 * (orig + i) + 1] = meta[i].v;
            lens[2 * (orig + i) + 1] = meta[i].n;
        }
        keel_stream_t *fresh = d ? NULL : keel_stream_new();
        size_t before = keel__xs_bytes(d);
        if (d == NULL && fresh == NULL)
            rc = KEEL_ENOMEM;
        if (rc == 0)
            rc = keel_stream_append(d ? d : fresh, nid, nf, fv, lens);
        if (rc == 0 && fresh)
            rc = keel__xs_link_key(c, dkey, dlen, fresh);
        if (rc != 0)
            keel_stream_free(fresh);
        else
            keel__xs_touch(c, dkey, dlen, before);
    }
    free(fv);
    free(lens);
    if (rc != 0)
        return rc;
    keel_stream_pel_remove(s, g, id);
    c->w->stream_dead_letters++;
    return 1;
}

/* An entry at its group's limit (KEEL.XDEADLETTER) goes to the dead-letter stream instead
 * of being delivered or returned again: 1 moved, 0 not, or ENOMEM. */
int keel__xs_over_limit(const call_t *c, size_t key, keel_stream_t *s, keel_stream_group_t *g,
                        const keel_stream_pending_t *p, const uint8_t *err, size_t err_len)
{
    uint64_t max = keel_stream_group_max_deliveries(g);
    if (max == 0 || p->delivery_count < max)
        return 0;
    return dead_letter(c, key, s, g, p->id, err, err_len);
}

/* KEEL.XNACK key group id [id ...] [DELAY ms] [ERROR text]: the ids' arguments end at the
 * first option; 0 or REPLIED. */
static int xnack_parse(const call_t *c, size_t *ids_end, int64_t *delay, size_t *err_arg)
{
    size_t i = 3;
    keel_stream_id_t id;
    while (i < c->argc && !keel__kvc_arg_is(c, i, "DELAY") && !keel__kvc_arg_is(c, i, "ERROR")) {
        if (keel__xs_parse_id(c, i, 0, 1, &id) != 0)
            return REPLIED;
        i++;
    }
    *ids_end = i;
    *delay = -1;
    *err_arg = 0;
    if (i == 3)
        return r_err(c->reply, ERR_SYNTAX);
    for (; i < c->argc; i += 2) {
        if (i + 1 >= c->argc)
            return r_err(c->reply, ERR_SYNTAX);
        if (keel__kvc_arg_is(c, i, "DELAY")) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], delay) != 0 || *delay < 0)
                return r_err(c->reply, "ERR keel: DELAY must be an integer >= 0 (ms)");
        } else if (keel__kvc_arg_is(c, i, "ERROR")) {
            *err_arg = i + 1;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__xs_xnack_syntax(const call_t *c)
{
    size_t end, err;
    int64_t delay;
    return xnack_parse(c, &end, &delay, &err);
}

/*
 * KEEL.XNACK: each pending id goes back to the group, to be delivered by '>' to the next
 * reader once DELAY ms (or, without DELAY, an exponential backoff with full jitter on its
 * delivery count) have passed, not before; one that has reached the group's maximum
 * delivery count goes to its dead-letter stream instead, with ERROR's text. Replies with
 * how many pending entries it returned or dead-lettered (ids not pending are ignored).
 */
int keel__xs_cmd_xnack(const call_t *c)
{
    size_t end, err_arg;
    int64_t delay;
    int rc = xnack_parse(c, &end, &delay, &err_arg);
    assert(rc == 0);
    keel_stream_t *s;
    keel_stream_group_t *g;
    if ((rc = keel__xs_wgroup(c, 1, 2, &s, &g)) != 0)
        return keel__kvc_done(rc);
    if (g == NULL)
        return keel__kvc_done(keel__xs_nogroup(c, 1, 2, ""));
    size_t before = keel__xs_bytes(s);
    int64_t n = 0;
    for (size_t i = 3; i < end && rc >= 0; i++) {
        keel_stream_id_t id;
        keel_stream_id_parse(c->argv[i], c->lens[i], 0, 1, NULL, &id);
        keel_stream_pending_t *p = keel_stream_pel_find(g, id);
        if (p == NULL)
            continue;
        n++;
        rc = keel__xs_over_limit(c, 1, s, g, p, err_arg ? c->argv[err_arg] : NULL,
                                 err_arg ? c->lens[err_arg] : 0);
        if (rc != 0)
            continue;
        uint64_t wait = delay >= 0 ? (uint64_t)delay : nack_backoff_ms(id, p->delivery_count);
        p->due_ms = wait <= UINT64_MAX - c->now ? c->now + wait : UINT64_MAX;
        if (p->due_ms == 0)
            p->due_ms = 1;
    }
    r_int(c->reply, n);
    if (n > 0)
        keel__xs_changed(c, 1, before);
    return rc < 0 ? rc : 0;
}

int keel__xs_xdeadletter_syntax(const call_t *c)
{
    if (c->argc == 4 && keel__kvc_arg_is(c, 3, "OFF"))
        return 0;
    int64_t n;
    if (c->argc != 7 || !keel__kvc_arg_is(c, 3, "MAXDELIVERIES") ||
        !keel__kvc_arg_is(c, 5, "STREAM"))
        return r_err(c->reply, "ERR syntax error: KEEL.XDEADLETTER key group MAXDELIVERIES n "
                               "STREAM key | OFF");
    if (keel_parse_i64(c->argv[4], c->lens[4], &n) != 0 || n < 1)
        return r_err(c->reply, "ERR keel: MAXDELIVERIES must be an integer >= 1");
    if (c->lens[6] == c->lens[1] && memcmp(c->argv[6], c->argv[1], c->lens[1]) == 0)
        return r_err(c->reply, "ERR keel: a stream cannot be its own dead-letter stream");
    return 0;
}

/* KEEL.XDEADLETTER key group MAXDELIVERIES n STREAM dlq | OFF: the group's dead letters. */
int keel__xs_cmd_xdeadletter(const call_t *c)
{
    keel_stream_t *s;
    keel_stream_group_t *g;
    int rc = keel__xs_wgroup(c, 1, 2, &s, &g);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (g == NULL)
        return keel__kvc_done(keel__xs_nogroup(c, 1, 2, ""));
    if (c->argc == 7 && c->lens[6] > c->kv->cfg.key_bytes_max)
        return keel__kvc_done(r_err(c->reply, ERR_KEY_SIZE));
    size_t before = keel__xs_bytes(s);
    int64_t n = 0;
    if (c->argc == 7)
        keel_parse_i64(c->argv[4], c->lens[4], &n);
    if (c->argc == 7)
        rc = keel_stream_group_set_deadletter(s, g, (uint64_t)n, c->argv[6], c->lens[6]);
    else
        rc = keel_stream_group_set_deadletter(s, g, 0, NULL, 0);
    if (rc != 0)
        return rc;
    r_ok(c->reply);
    keel__xs_changed(c, 1, before);
    return 0;
}
