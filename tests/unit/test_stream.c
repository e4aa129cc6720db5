/* test_stream.c - core/stream: ids, blocks, ranges, deletes, trimming, snapshots of a stream. */
#include "core/stream.h"
#include "base/rand.h"
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static keel_stream_id_t id(uint64_t ms, uint64_t seq)
{
    return (keel_stream_id_t){ms, seq};
}

static int parse(const char *s, uint64_t missing, int strict, int *star, keel_stream_id_t *out)
{
    return keel_stream_id_parse((const uint8_t *)s, strlen(s), missing, strict, star, out);
}

static void ids_parse_and_format_as_redis_does(void)
{
    keel_stream_id_t x;
    int star;
    KT_EQ_INT(parse("5-3", 0, 1, NULL, &x), 0);
    KT_CHECK(x.ms == 5 && x.seq == 3);
    KT_EQ_INT(parse("5", 7, 1, NULL, &x), 0);
    KT_CHECK(x.ms == 5 && x.seq == 7);
    KT_EQ_INT(parse("-", 0, 1, NULL, &x), KEEL_EINVAL); /* strict: no - or + */
    KT_EQ_INT(parse("+", 0, 0, NULL, &x), 0);
    KT_CHECK(x.ms == UINT64_MAX && x.seq == UINT64_MAX);
    KT_EQ_INT(parse("9-*", 0, 1, &star, &x), 0);
    KT_CHECK(star == 1 && x.ms == 9);
    KT_EQ_INT(parse("9-*", 0, 1, NULL, &x), KEEL_EINVAL); /* '*' only where XADD allows it */
    KT_EQ_INT(parse("18446744073709551615-18446744073709551615", 0, 1, NULL, &x), 0);
    KT_EQ_INT(parse("18446744073709551616-0", 0, 1, NULL, &x), KEEL_EINVAL);
    KT_EQ_INT(parse("-1", 0, 1, NULL, &x), KEEL_EINVAL);
    KT_EQ_INT(parse("", 0, 1, NULL, &x), KEEL_EINVAL);
    KT_EQ_INT(parse("1-", 0, 1, NULL, &x), KEEL_EINVAL);
    KT_EQ_INT(parse("a-1", 0, 1, NULL, &x), KEEL_EINVAL);
    KT_EQ_INT(parse("1-2-3", 0, 1, NULL, &x), KEEL_EINVAL);
    char t[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    KT_EQ_INT(keel_stream_id_format(t, id(UINT64_MAX, UINT64_MAX)), KEEL_STREAM_ID_TEXT_BYTES_MAX);
    KT_EQ_STR(t, "18446744073709551615-18446744073709551615");
    keel_stream_id_t e = id(UINT64_MAX, UINT64_MAX);
    KT_EQ_INT(keel_stream_id_incr(&e), KEEL_ERANGE);
    e = id(3, UINT64_MAX);
    KT_EQ_INT(keel_stream_id_incr(&e), 0);
    KT_CHECK(e.ms == 4 && e.seq == 0);
    KT_EQ_INT(keel_stream_id_decr(&e), 0);
    KT_CHECK(e.ms == 3 && e.seq == UINT64_MAX);
    e = id(0, 0);
    KT_EQ_INT(keel_stream_id_decr(&e), KEEL_ERANGE);
}

static void append(keel_stream_t *s, keel_stream_id_t x, const char *f, const char *v)
{
    const uint8_t *fv[2] = {(const uint8_t *)f, (const uint8_t *)v};
    size_t lens[2] = {strlen(f), strlen(v)};
    KT_EQ_INT(keel_stream_append(s, x, 1, fv, lens), 0);
}

/* The ids of a range as "ms-seq ms-seq ...". */
static const char *ids_of(const keel_stream_t *s, keel_stream_id_t a, keel_stream_id_t b, int rev)
{
    static char out[1 << 16];
    size_t n = 0;
    keel_stream_iter_t it;
    keel_stream_entry_t e;
    keel_stream_iter_init(&it, s, a, b, rev);
    out[0] = '\0';
    while (keel_stream_iter_next(&it, &e) && n < sizeof(out) - 64)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%llu-%llu", n ? " " : "",
                              (unsigned long long)e.id.ms, (unsigned long long)e.id.seq);
    return out;
}

static void entries_fill_blocks_of_a_hundred_and_read_both_ways(void)
{
    keel_stream_t *s = keel_stream_new();
    for (uint64_t i = 1; i <= 250; i++)
        append(s, id(i, 0), "f", "v");
    keel_stream_info_t in;
    keel_stream_get_info(s, &in);
    KT_EQ_U64(in.length, 250);
    KT_EQ_U64(in.blocks, 3);
    KT_EQ_STR(ids_of(s, id(99, 0), id(102, 0), 0), "99-0 100-0 101-0 102-0");
    KT_EQ_STR(ids_of(s, id(99, 0), id(102, 0), 1), "102-0 101-0 100-0 99-0");
    KT_EQ_STR(ids_of(s, id(249, 5), id(UINT64_MAX, UINT64_MAX), 0), "250-0");
    KT_EQ_STR(ids_of(s, id(0, 0), id(1, 0), 1), "1-0");
    KT_EQ_STR(ids_of(s, id(300, 0), id(400, 0), 1), "");
    KT_EQ_STR(ids_of(s, id(5, 0), id(4, 0), 0), "");
    keel_stream_free(s);
}

static void entries_with_the_same_field_names_share_them(void)
{
    keel_stream_t *s = keel_stream_new();
    char v[101];
    memset(v, 'x', 100);
    v[100] = '\0';
    for (uint64_t i = 1; i <= 10000; i++)
        append(s, id(1700000000000ull + i, 0), "f", v);
    keel_stream_info_t in;
    keel_stream_get_info(s, &in);
    /* 100 value bytes + about 6 of framing; the block headers and array are the rest */
    KT_CHECK(in.bytes / 10000 < 112);
    keel_stream_entry_t e;
    KT_EQ_INT(keel_stream_get(s, id(1700000000000ull + 5000, 0), &e), 1);
    keel_stream_field_cursor_t c;
    keel_stream_fields_begin(&e, &c);
    const uint8_t *f, *val;
    size_t fl, vl;
    keel_stream_field_next(&c, &f, &fl, &val, &vl);
    KT_EQ_INT(fl, 1);
    KT_EQ_INT(vl, 100);
    KT_CHECK(f[0] == 'f' && val[99] == 'x');
    /* different names in the same block are stored with the entry */
    const uint8_t *fv[4] = {(const uint8_t *)"a", (const uint8_t *)"1", (const uint8_t *)"b",
                            (const uint8_t *)"22"};
    size_t lens[4] = {1, 1, 1, 2};
    KT_EQ_INT(keel_stream_append(s, id(1800000000000ull, 0), 2, fv, lens), 0);
    KT_EQ_INT(keel_stream_get(s, id(1800000000000ull, 0), &e), 1);
    KT_EQ_INT(e.nfields, 2);
    keel_stream_fields_begin(&e, &c);
    keel_stream_field_next(&c, &f, &fl, &val, &vl);
    keel_stream_field_next(&c, &f, &fl, &val, &vl);
    KT_CHECK(fl == 1 && f[0] == 'b' && vl == 2 && memcmp(val, "22", 2) == 0);
    keel_stream_free(s);
}

static void trimming_follows_redis_whole_blocks_for_approx(void)
{
    keel_stream_t *s = keel_stream_new();
    for (uint64_t i = 1; i <= 250; i++)
        append(s, id(i, 0), "f", "v");
    keel_stream_trim_t t = {.strategy = KEEL_STREAM_TRIM_MAXLEN, .approx = 1, .maxlen = 120};
    KT_EQ_U64(keel_stream_trim(s, &t), 100); /* one whole block; the next would go under */
    t = (keel_stream_trim_t){
        .strategy = KEEL_STREAM_TRIM_MAXLEN, .approx = 1, .maxlen = 0, .limit = 50};
    KT_EQ_U64(keel_stream_trim(s, &t), 0); /* a block of 100 is over the limit */
    t = (keel_stream_trim_t){.strategy = KEEL_STREAM_TRIM_MAXLEN, .maxlen = 45};
    KT_EQ_U64(keel_stream_trim(s, &t), 105); /* exact: into the last block */
    KT_EQ_STR(ids_of(s, id(0, 0), id(207, 0), 0), "206-0 207-0");
    t = (keel_stream_trim_t){.strategy = KEEL_STREAM_TRIM_MINID, .minid = id(240, 0)};
    KT_EQ_U64(keel_stream_trim(s, &t), 34);
    keel_stream_info_t in;
    keel_stream_get_info(s, &in);
    KT_EQ_U64(in.length, 11);
    KT_CHECK(in.first_id.ms == 240);
    KT_CHECK(in.last_id.ms == 250 && in.entries_added == 250);
    keel_stream_free(s);
}

/* A model: the live ids in an array; random appends, deletes and trims against it. */
static void random_operations_match_a_simple_model(void)
{
    for (uint64_t seed = 1; seed <= 30; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        keel_stream_t *s = keel_stream_new();
        static uint64_t model[20000];
        size_t n = 0;
        uint64_t next = 1;
        for (int op = 0; op < 3000; op++) {
            uint64_t what = keel_rand_below(&r, 10);
            if (what < 6) {
                next += 1 + keel_rand_below(&r, 3);
                append(s, id(next, 0), keel_rand_chance(&r, 0.5) ? "f" : "g", "v");
                model[n++] = next;
            } else if (what < 9 && n > 0) {
                uint64_t victim = model[keel_rand_below(&r, n)] + keel_rand_below(&r, 2);
                size_t k = 0, found = 0;
                for (size_t i = 0; i < n; i++)
                    if (model[i] == victim)
                        found = 1;
                    else
                        model[k++] = model[i];
                KT_EQ_INT(keel_stream_delete(s, id(victim, 0)), (int)found);
                n = k;
            } else {
                uint64_t maxlen = keel_rand_below(&r, n + 1);
                keel_stream_trim_t t = {.strategy = KEEL_STREAM_TRIM_MAXLEN, .maxlen = maxlen};
                KT_EQ_U64(keel_stream_trim(s, &t), n > maxlen ? n - maxlen : 0);
                if (n > maxlen) {
                    memmove(model, model + (n - maxlen), maxlen * sizeof(*model));
                    n = maxlen;
                }
            }
            keel_stream_info_t in;
            keel_stream_get_info(s, &in);
            KT_EQ_U64(in.length, n);
        }
        /* forward, backward and a middle range agree with the model */
        keel_stream_iter_t it;
        keel_stream_entry_t e;
        size_t i = 0;
        keel_stream_iter_init(&it, s, id(0, 0), id(UINT64_MAX, UINT64_MAX), 0);
        while (keel_stream_iter_next(&it, &e))
            KT_EQ_U64(e.id.ms, model[i++]);
        KT_EQ_U64(i, n);
        keel_stream_iter_init(&it, s, id(0, 0), id(UINT64_MAX, UINT64_MAX), 1);
        while (keel_stream_iter_next(&it, &e))
            KT_EQ_U64(e.id.ms, model[--i]);
        KT_EQ_U64(i, 0);
        if (n > 10) {
            uint64_t lo = model[n / 3], hi = model[2 * n / 3];
            keel_stream_iter_init(&it, s, id(lo, 0), id(hi, 0), 1);
            size_t j = 2 * n / 3 + 1;
            while (keel_stream_iter_next(&it, &e))
                KT_EQ_U64(e.id.ms, model[--j]);
            KT_EQ_U64(j, n / 3);
        }
        keel_stream_free(s);
    }
}

static void groups_consumers_and_pending_lists_keep_their_counts(void)
{
    keel_stream_t *s = keel_stream_new();
    for (uint64_t i = 1; i <= 10; i++)
        append(s, id(i, 0), "f", "v");
    keel_stream_group_t *g, *h;
    KT_EQ_INT(keel_stream_group_create(s, (const uint8_t *)"zeta", 4, id(0, 0), 0, &g), 0);
    KT_EQ_INT(keel_stream_group_create(s, (const uint8_t *)"alpha", 5, id(0, 0), -1, &h), 0);
    KT_EQ_INT(keel_stream_group_create(s, (const uint8_t *)"zeta", 4, id(0, 0), 0, NULL),
              KEEL_EEXISTS);
    KT_CHECK(keel_stream_group_at(s, 0) == h && keel_stream_group_at(s, 1) == g);
    keel_stream_consumer_t *a = keel_stream_consumer_get(s, g, (const uint8_t *)"b", 1, 100, NULL);
    keel_stream_consumer_t *b = keel_stream_consumer_get(s, g, (const uint8_t *)"a", 1, 100, NULL);
    KT_CHECK(keel_stream_consumer_at(g, 0) == b);
    for (uint64_t i = 1; i <= 6; i++) {
        KT_EQ_INT(keel_stream_pel_deliver(s, g, i % 2 ? a : b, id(i, 0), 1000 + i), 0);
        keel_stream_group_delivered(s, g, id(i, 0));
    }
    KT_EQ_U64(keel_stream_pel_count(g), 6);
    KT_EQ_U64(keel_stream_consumer_pending(a), 3);
    KT_EQ_U64(keel_stream_group_entries_read(g), 6);
    int64_t lag;
    KT_EQ_INT(keel_stream_group_lag(s, g, &lag), 1);
    KT_EQ_INT(lag, 4);
    /* a redelivery reassigns and restarts the count */
    KT_EQ_INT(keel_stream_pel_deliver(s, g, b, id(1, 0), 2000), 0);
    KT_EQ_U64(keel_stream_consumer_pending(a), 2);
    KT_CHECK(keel_stream_pel_find(g, id(1, 0))->owner == b);
    KT_EQ_INT(keel_stream_pel_remove(s, g, id(1, 0)), 1); /* the head */
    KT_EQ_INT(keel_stream_pel_remove(s, g, id(4, 0)), 1); /* the middle */
    KT_EQ_INT(keel_stream_pel_remove(s, g, id(4, 0)), 0);
    KT_EQ_U64(keel_stream_pel_count(g), 4);
    KT_EQ_U64(keel_stream_pel_at(g, 0)->id.ms, 2);
    KT_EQ_U64(keel_stream_consumer_delete(s, g, a), 2); /* 3 and 5 go with it */
    KT_EQ_U64(keel_stream_pel_count(g), 2);
    KT_EQ_U64(keel_stream_pel_at(g, 1)->id.ms, 6);
    /* a deletion ahead of the group makes its counter unknowable: lag is nil */
    KT_EQ_INT(keel_stream_delete(s, id(8, 0)), 1);
    KT_EQ_INT(keel_stream_group_lag(s, g, &lag), 0);
    keel_stream_group_destroy(s, h);
    KT_EQ_U64(keel_stream_groups_count(s), 1);
    keel_stream_free(s);
}

static int buf_sink(void *data, const uint8_t *p, size_t n)
{
    uint8_t **w = data;
    memcpy(*w, p, n);
    *w += n;
    return 0;
}

static void a_stream_with_groups_round_trips_and_bad_bodies_are_refused(void)
{
    keel_stream_t *s = keel_stream_new();
    for (uint64_t i = 1; i <= 150; i++)
        append(s, id(i, i), i % 3 ? "f" : "other", "value");
    keel_stream_delete(s, id(7, 7));
    keel_stream_group_t *g;
    keel_stream_group_create(s, (const uint8_t *)"g", 1, id(0, 0), 0, &g);
    keel_stream_consumer_t *c = keel_stream_consumer_get(s, g, (const uint8_t *)"c", 1, 5, NULL);
    keel_stream_pel_deliver(s, g, c, id(3, 3), 77);
    keel_stream_pending_t *p;
    keel_stream_pel_add(s, g, id(9, 9), &p); /* as XCLAIM FORCE, then nacked */
    keel_stream_pel_assign(p, c);
    p->due_ms = 12345;
    KT_EQ_INT(keel_stream_group_set_deadletter(s, g, 3, (const uint8_t *)"dlq", 3), 0);
    static uint8_t body[1 << 20];
    uint8_t *w = body;
    KT_EQ_INT(keel_stream_encode(s, buf_sink, &w), 0);
    size_t n = (size_t)(w - body);
    keel_stream_t *t = NULL;
    KT_EQ_INT(keel_stream_decode(body, n, &t), 0);
    KT_EQ_STR(ids_of(t, id(0, 0), id(UINT64_MAX, UINT64_MAX), 0),
              ids_of(s, id(0, 0), id(UINT64_MAX, UINT64_MAX), 0));
    keel_stream_info_t a, b;
    keel_stream_get_info(s, &a);
    keel_stream_get_info(t, &b);
    KT_CHECK(a.length == b.length && a.entries_added == b.entries_added &&
             keel_stream_id_cmp(a.max_deleted_id, b.max_deleted_id) == 0);
    keel_stream_group_t *tg = keel_stream_group_find(t, (const uint8_t *)"g", 1);
    KT_CHECK(tg != NULL && keel_stream_pel_count(tg) == 2);
    KT_CHECK(keel_stream_pel_at(tg, 0)->delivery_ms == 77 &&
             keel_stream_pel_at(tg, 1)->due_ms == 12345);
    size_t dl;
    const uint8_t *dq = keel_stream_group_deadletter(tg, &dl);
    KT_CHECK(keel_stream_group_max_deliveries(tg) == 3 && dl == 3 && memcmp(dq, "dlq", 3) == 0);
    /* the same body again is the same bytes */
    static uint8_t again[1 << 20];
    w = again;
    keel_stream_encode(t, buf_sink, &w);
    KT_EQ_INT((size_t)(w - again), n);
    KT_CHECK(memcmp(body, again, n) == 0);
    keel_stream_free(t);
    /* every truncation is refused, and so is trailing garbage */
    for (size_t cut = 0; cut < n; cut += 1 + cut / 7) {
        t = NULL;
        KT_EQ_INT(keel_stream_decode(body, cut, &t), KEEL_EPROTO);
    }
    body[n] = 0;
    KT_EQ_INT(keel_stream_decode(body, n + 1, &t), KEEL_EPROTO);
    /* ids out of order are refused: swap the first two entries' ms */
    uint8_t save = body[48];
    body[48] = 200;
    KT_EQ_INT(keel_stream_decode(body, n, &t), KEEL_EPROTO);
    body[48] = save;
    keel_stream_free(s);
}

static void producers_are_remembered_up_to_the_limit_and_the_oldest_goes_first(void)
{
    keel_stream_t *s = keel_stream_new();
    char pid[16];
    for (unsigned i = 0; i < KEEL_STREAM_PRODUCERS_MAX + 10; i++) {
        int n = snprintf(pid, sizeof(pid), "p%u", i);
        KT_EQ_INT(keel_stream_producer_set(s, (const uint8_t *)pid, (size_t)n, 7, id(i + 1, 0)), 0);
    }
    KT_EQ_U64(keel_stream_producers_count(s), KEEL_STREAM_PRODUCERS_MAX);
    uint64_t seq;
    keel_stream_id_t last;
    KT_EQ_INT(keel_stream_producer_get(s, (const uint8_t *)"p3", 2, &seq, &last), 0); /* evicted */
    KT_EQ_INT(keel_stream_producer_get(s, (const uint8_t *)"p10", 3, &seq, &last), 1);
    KT_CHECK(seq == 7 && last.ms == 11);
    /* renewing one keeps it: the next eviction takes another */
    KT_EQ_INT(keel_stream_producer_set(s, (const uint8_t *)"p10", 3, 8, id(5000, 0)), 0);
    KT_EQ_INT(keel_stream_producer_set(s, (const uint8_t *)"new", 3, 1, id(5001, 0)), 0);
    KT_EQ_INT(keel_stream_producer_get(s, (const uint8_t *)"p10", 3, &seq, &last), 1);
    KT_EQ_INT(keel_stream_producer_get(s, (const uint8_t *)"p11", 3, &seq, &last), 0);
    static uint8_t body[1 << 20];
    uint8_t *w = body;
    KT_EQ_INT(keel_stream_encode(s, buf_sink, &w), 0);
    keel_stream_t *t = NULL;
    KT_EQ_INT(keel_stream_decode(body, (size_t)(w - body), &t), 0);
    KT_EQ_U64(keel_stream_producers_count(t), KEEL_STREAM_PRODUCERS_MAX);
    KT_EQ_INT(keel_stream_producer_get(t, (const uint8_t *)"p10", 3, &seq, &last), 1);
    KT_CHECK(seq == 8 && last.ms == 5000);
    keel_stream_free(t);
    keel_stream_free(s);
}

int main(void)
{
    KT_RUN(ids_parse_and_format_as_redis_does);
    KT_RUN(entries_fill_blocks_of_a_hundred_and_read_both_ways);
    KT_RUN(entries_with_the_same_field_names_share_them);
    KT_RUN(trimming_follows_redis_whole_blocks_for_approx);
    KT_RUN(random_operations_match_a_simple_model);
    KT_RUN(groups_consumers_and_pending_lists_keep_their_counts);
    KT_RUN(a_stream_with_groups_round_trips_and_bad_bodies_are_refused);
    KT_RUN(producers_are_remembered_up_to_the_limit_and_the_oldest_goes_first);
    return kt_done();
}
