/* kv_stream_info.c - XINFO STREAM [FULL], GROUPS and CONSUMERS (split from kv_stream_group.c). */
#include "core/kv_stream_int.h"

#include "base/num.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- XINFO --------------------------------------------------------------------------- */

static void r_str(reply_t *o, const char *s)
{
    r_bulk(o, (const uint8_t *)s, strlen(s));
}

static void r_lag(reply_t *o, const keel_stream_t *s, const keel_stream_group_t *g)
{
    int64_t lag;
    if (keel_stream_group_lag(s, g, &lag))
        r_int(o, lag);
    else
        r_nil(o);
}

static void r_entries_read(reply_t *o, const keel_stream_group_t *g)
{
    int64_t er = keel_stream_group_entries_read(g);
    if (er != KEEL_STREAM_ENTRIES_READ_UNKNOWN)
        r_int(o, er);
    else
        r_nil(o);
}

static void info_groups(const call_t *c, const keel_stream_t *s)
{
    size_t n = keel_stream_groups_count(s);
    r_array(c->reply, n);
    for (size_t i = 0; i < n; i++) {
        const keel_stream_group_t *g = keel_stream_group_at(s, i);
        size_t len;
        const uint8_t *name = keel_stream_group_name(g, &len);
        r_array(c->reply, 12);
        r_str(c->reply, "name");
        r_bulk(c->reply, name, len);
        r_str(c->reply, "consumers");
        r_int(c->reply, (int64_t)keel_stream_consumers_count(g));
        r_str(c->reply, "pending");
        r_int(c->reply, (int64_t)keel_stream_pel_count(g));
        r_str(c->reply, "last-delivered-id");
        keel__xs_id(c->reply, keel_stream_group_last_id(g));
        r_str(c->reply, "entries-read");
        r_entries_read(c->reply, g);
        r_str(c->reply, "lag");
        r_lag(c->reply, s, g);
    }
}

static void info_consumers(const call_t *c, const keel_stream_group_t *g)
{
    size_t n = keel_stream_consumers_count(g);
    r_array(c->reply, n);
    for (size_t i = 0; i < n; i++) {
        const keel_stream_consumer_t *cn = keel_stream_consumer_at(g, i);
        size_t len;
        const uint8_t *name = keel_stream_consumer_name(cn, &len);
        r_array(c->reply, 6);
        r_str(c->reply, "name");
        r_bulk(c->reply, name, len);
        r_str(c->reply, "pending");
        r_int(c->reply, (int64_t)keel_stream_consumer_pending(cn));
        r_str(c->reply, "idle");
        r_int(c->reply, keel__xs_idle_of(c->now, keel_stream_consumer_seen_ms(cn)));
    }
}

static void info_full_group(const call_t *c, const keel_stream_t *s, const keel_stream_group_t *g,
                            int64_t count)
{
    size_t len, total = keel_stream_pel_count(g);
    const uint8_t *name = keel_stream_group_name(g, &len);
    r_array(c->reply, 14);
    r_str(c->reply, "name");
    r_bulk(c->reply, name, len);
    r_str(c->reply, "last-delivered-id");
    keel__xs_id(c->reply, keel_stream_group_last_id(g));
    r_str(c->reply, "entries-read");
    r_entries_read(c->reply, g);
    r_str(c->reply, "lag");
    r_lag(c->reply, s, g);
    r_str(c->reply, "pel-count");
    r_int(c->reply, (int64_t)total);
    r_str(c->reply, "pending");
    size_t n = count ? ((size_t)count < total ? (size_t)count : total) : total;
    r_array(c->reply, n);
    for (size_t i = 0; i < n; i++) {
        const keel_stream_pending_t *p = keel_stream_pel_at(g, i);
        size_t cl;
        const uint8_t *cname = keel_stream_consumer_name(p->owner, &cl);
        r_array(c->reply, 4);
        keel__xs_id(c->reply, p->id);
        r_bulk(c->reply, cname, cl);
        r_int(c->reply, (int64_t)p->delivery_ms);
        r_int(c->reply, (int64_t)p->delivery_count);
    }
    size_t ncons = keel_stream_consumers_count(g);
    r_str(c->reply, "consumers");
    r_array(c->reply, ncons);
    for (size_t k = 0; k < ncons; k++) {
        const keel_stream_consumer_t *cn = keel_stream_consumer_at(g, k);
        size_t cl;
        const uint8_t *cname = keel_stream_consumer_name(cn, &cl);
        uint64_t mine = keel_stream_consumer_pending(cn);
        r_array(c->reply, 8);
        r_str(c->reply, "name");
        r_bulk(c->reply, cname, cl);
        r_str(c->reply, "seen-time");
        r_int(c->reply, (int64_t)keel_stream_consumer_seen_ms(cn));
        r_str(c->reply, "pel-count");
        r_int(c->reply, (int64_t)mine);
        r_str(c->reply, "pending");
        size_t m = count ? ((uint64_t)count < mine ? (size_t)count : (size_t)mine) : (size_t)mine;
        r_array(c->reply, m);
        for (size_t i = 0, done = 0; i < total && done < m; i++) {
            const keel_stream_pending_t *p = keel_stream_pel_at(g, i);
            if (p->owner != cn)
                continue;
            done++;
            r_array(c->reply, 3);
            keel__xs_id(c->reply, p->id);
            r_int(c->reply, (int64_t)p->delivery_ms);
            r_int(c->reply, (int64_t)p->delivery_count);
        }
    }
}

static void info_stream(const call_t *c, const keel_stream_t *s, int full, int64_t count)
{
    keel_stream_info_t in;
    keel_stream_get_info(s, &in);
    r_array(c->reply, full ? 18 : 20);
    r_str(c->reply, "length");
    r_int(c->reply, (int64_t)in.length);
    /* Redis's rax: keys are its listpacks (our blocks); its node count has no equivalent */
    r_str(c->reply, "radix-tree-keys");
    r_int(c->reply, (int64_t)in.blocks);
    r_str(c->reply, "radix-tree-nodes");
    r_int(c->reply, (int64_t)(in.blocks + 1));
    r_str(c->reply, "last-generated-id");
    keel__xs_id(c->reply, in.last_id);
    r_str(c->reply, "max-deleted-entry-id");
    keel__xs_id(c->reply, in.max_deleted_id);
    r_str(c->reply, "entries-added");
    r_int(c->reply, (int64_t)in.entries_added);
    r_str(c->reply, "recorded-first-entry-id");
    keel__xs_id(c->reply, in.first_id);
    keel_stream_id_t lo = {0, 0}, hi = {UINT64_MAX, UINT64_MAX};
    if (!full) {
        r_str(c->reply, "groups");
        r_int(c->reply, (int64_t)in.groups);
        for (int rev = 0; rev < 2; rev++) {
            r_str(c->reply, rev ? "last-entry" : "first-entry");
            keel_stream_iter_t it;
            keel_stream_entry_t e;
            keel_stream_iter_init(&it, s, lo, hi, rev);
            if (keel_stream_iter_next(&it, &e))
                keel__xs_entry(c->reply, &e);
            else
                r_nil(c->reply);
        }
        return;
    }
    r_str(c->reply, "entries");
    keel__xs_range(c->reply, s, lo, hi, (uint64_t)count, 0);
    r_str(c->reply, "groups");
    r_array(c->reply, in.groups);
    for (size_t i = 0; i < in.groups; i++)
        info_full_group(c, s, keel_stream_group_at(s, i), count);
}

int keel__xs_xinfo_syntax(const call_t *c)
{
    static const char *const names[] = {"STREAM", "GROUPS", "CONSUMERS"};
    static const int arity[] = {-3, 3, 4};
    return keel__xs_sub_arity(c, names, arity, 3, "xinfo", "XINFO");
}

int keel__xs_cmd_xinfo(const call_t *c)
{
    const keel_stream_t *s;
    if (keel__xs_read_lookup(c, 2, &s) != 0)
        return 0;
    if (s == NULL)
        return keel__kvc_done(r_err(c->reply, "ERR no such key"));
    if (keel__kvc_arg_is(c, 1, "CONSUMERS")) {
        const keel_stream_group_t *g = keel_stream_group_find(s, c->argv[3], c->lens[3]);
        if (g == NULL)
            return keel__kvc_done(keel__xs_errf(
                c, "NOGROUP No such consumer group '%.*s' for key name '%.*s'",
                (int)(c->lens[3] > 200 ? 200 : c->lens[3]), (const char *)c->argv[3],
                (int)(c->lens[2] > 200 ? 200 : c->lens[2]), (const char *)c->argv[2]));
        info_consumers(c, g);
        return 0;
    }
    if (keel__kvc_arg_is(c, 1, "GROUPS")) {
        info_groups(c, s);
        return 0;
    }
    /* STREAM key [FULL [COUNT n]] */
    size_t extra = c->argc - 3;
    int64_t count = 10;
    if (extra == 0) {
        info_stream(c, s, 0, 0);
        return 0;
    }
    if ((extra != 1 && extra != 3) || !keel__kvc_arg_is(c, 3, "FULL") ||
        (extra == 3 && !keel__kvc_arg_is(c, 4, "COUNT")))
        return keel__kvc_done(keel__xs_errf(c,
                                            "ERR unknown subcommand or wrong number of arguments "
                                            "for '%.*s'. Try XINFO HELP.",
                                            (int)(c->lens[1] > 128 ? 128 : c->lens[1]),
                                            (const char *)c->argv[1]));
    if (extra == 3) {
        if (keel_parse_i64(c->argv[5], c->lens[5], &count) != 0)
            return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
        if (count < 0)
            count = 10;
    }
    info_stream(c, s, 1, count);
    return 0;
}
