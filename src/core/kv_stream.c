/* kv_stream.c - the stream commands on entries: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM,
   XREAD, and the stream type's row (free, bytes, snapshot). Groups: kv_stream_group.c. */
#include "core/kv_stream_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Every command follows Redis 7.0's t_stream.c: the same order of checks (so the same
 * error wins when several apply), the same texts, the same replies; checked against a
 * running redis-server 7.0.15 by tests/system/test_server_streams*.py. Times (the `*` id,
 * delivery times) are the applying entry's stamp (c->now), so every replica agrees.
 */

/* ---- the type's row ----------------------------------------------------------------- */

static void obj_free(void *o)
{
    keel_stream_free(o);
}

static size_t obj_bytes(const void *o)
{
    keel_stream_info_t in;
    keel_stream_get_info(o, &in);
    return in.bytes;
}

static int obj_write(const void *o, keel_kv_sink_fn sink, void *data)
{
    return keel_stream_encode(o, sink, data);
}

static int obj_load(const uint8_t *p, size_t len, void **obj)
{
    keel_stream_t *s = NULL;
    int rc = keel_stream_decode(p, len, &s);
    if (rc == 0)
        *obj = s;
    return rc;
}

const keel__kv_type_t keel__kv_type_stream = {
    .name = "stream",
    .free = obj_free,
    .bytes = obj_bytes,
    .snap_write = obj_write,
    .snap_load = obj_load,
};

/* ---- shared helpers -------------------------------------------------------------- */

int keel__xs_errf(const call_t *c, const char *fmt, ...)
{
    reply_t *o = c->reply;
    if (!o->failed) {
        char text[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        track(o, keel_resp_write_error(o->b, text));
    }
    return REPLIED;
}

void keel__xs_id(reply_t *o, keel_stream_id_t id)
{
    char t[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
    size_t n = keel_stream_id_format(t, id);
    r_bulk(o, (const uint8_t *)t, n);
}

void keel__xs_entry(reply_t *o, const keel_stream_entry_t *e)
{
    r_array(o, 2);
    keel__xs_id(o, e->id);
    r_array(o, 2 * e->nfields);
    keel_stream_field_cursor_t cur;
    keel_stream_fields_begin(e, &cur);
    for (size_t i = 0; i < e->nfields && !o->failed; i++) {
        const uint8_t *f, *v;
        size_t fl, vl;
        keel_stream_field_next(&cur, &f, &fl, &v, &vl);
        r_bulk(o, f, fl);
        r_bulk(o, v, vl);
    }
}

size_t keel__xs_range(reply_t *o, const keel_stream_t *s, keel_stream_id_t start,
                      keel_stream_id_t end, uint64_t count, int rev)
{
    /* the header counts the entries first: walk once to count, once to write */
    keel_stream_iter_t it;
    keel_stream_entry_t e;
    size_t n = 0;
    keel_stream_iter_init(&it, s, start, end, rev);
    while ((count == 0 || n < count) && keel_stream_iter_next(&it, &e))
        n++;
    r_array(o, n);
    keel_stream_iter_init(&it, s, start, end, rev);
    for (size_t i = 0; i < n && keel_stream_iter_next(&it, &e); i++)
        keel__xs_entry(o, &e);
    return n;
}

int keel__xs_parse_id(const call_t *c, size_t i, uint64_t missing_seq, int strict,
                      keel_stream_id_t *id)
{
    if (keel_stream_id_parse(c->argv[i], c->lens[i], missing_seq, strict, NULL, id) != 0)
        return r_err(c->reply, ERR_XID);
    return 0;
}

/* Redis streamParseIntervalIDOrReply plus the increment/decrement of an exclusive bound. */
int keel__xs_parse_bound(const call_t *c, size_t i, int is_end, keel_stream_id_t *id)
{
    const uint8_t *p = c->argv[i];
    size_t n = c->lens[i];
    int ex = n > 1 && p[0] == '(';
    uint64_t missing = is_end ? UINT64_MAX : 0;
    if (keel_stream_id_parse(p + ex, n - ex, missing, ex, NULL, id) != 0)
        return r_err(c->reply, ERR_XID);
    if (ex && (is_end ? keel_stream_id_decr(id) : keel_stream_id_incr(id)) != 0)
        return r_err(c->reply, is_end ? "ERR invalid end ID for the interval"
                                      : "ERR invalid start ID for the interval");
    return 0;
}

int keel__xs_read_lookup(const call_t *c, size_t i, const keel_stream_t **s)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    if (e && e->type != KEEL__KV_TYPE_STREAM)
        return r_err(c->reply, ERR_WRONGTYPE);
    *s = e ? keel__kv_obj(e) : NULL;
    return 0;
}

int keel__xs_write_lookup(const call_t *c, size_t i, keel__kv_entry_t ***link, keel_stream_t **s)
{
    int dead;
    uint64_t h = keel__kv_hash(c->w, c->argv[i], c->lens[i]);
    keel__kv_entry_t *e = keel__kvc_wfind(c, c->argv[i], c->lens[i], h, link, &dead);
    if (e && e->type != KEEL__KV_TYPE_STREAM)
        return r_err(c->reply, ERR_WRONGTYPE);
    *s = e ? keel__kv_obj(e) : NULL;
    return 0;
}

int keel__xs_link(const call_t *c, size_t i, keel_stream_t *s)
{
    return keel__xs_link_key(c, c->argv[i], c->lens[i], s);
}

int keel__xs_link_key(const call_t *c, const uint8_t *key, size_t key_len, keel_stream_t *s)
{
    keel_kv_t *kv = c->w;
    uint64_t h = keel__kv_hash(kv, key, key_len);
    int dead;
    keel__kv_entry_t **l = NULL;
    keel__kv_entry_t *old = keel__kvc_wfind(c, key, key_len, h, &l, &dead);
    assert(old == NULL);
    (void)old;
    keel__kv_entry_t *e = keel__kv_entry_new_obj(key, key_len, h, KEEL__KV_TYPE_STREAM, s);
    if (e == NULL)
        return KEEL_ENOMEM;
    e->create_revision = kv->revision + 1;
    if (dead)
        keel__kv_replace(kv, l, e);
    else
        keel__kv_insert(kv, e);
    return 0;
}

int keel__xs_check_new(const call_t *c, size_t i)
{
    int dead;
    keel__kv_entry_t **l = NULL;
    uint64_t h = keel__kv_hash(c->w, c->argv[i], c->lens[i]);
    keel__kvc_wfind(c, c->argv[i], c->lens[i], h, &l, &dead);
    int rc = keel__kvc_check_sizes(c, c->lens[i], 0);
    if (rc == 0 && !dead)
        rc = keel__kvc_check_room(c, 1);
    return rc;
}

/* ---- retention by age: the leader's index ------------------------------------------- */

/*
 * kv->retained maps a stream key to its retention deadline (the entry's expire_ms, in the
 * sub-table's deadline heap), so the leader finds the streams due in O(1). It is derived
 * state: every stream change refreshes its row, a snapshot load rebuilds it, and no apply
 * decides anything from it (the sweep names its keys and each is judged from its stream),
 * so a row it could not allocate, or a stale row of a deleted key, changes no replica's
 * state: at worst a stream is swept at its next change instead of on time.
 */
static void index_update(keel_kv_t *kv, const uint8_t *key, size_t len, const keel_stream_t *s)
{
    uint64_t when = s ? keel_stream_retention_deadline(s) : 0;
    if (kv->retained == NULL && (when == 0 || keel__kv_sub(kv, &kv->retained) != 0))
        return;
    keel_kv_t *r = kv->retained;
    uint64_t h = keel__kv_hash(r, key, len);
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *e = keel__kv_find(r, key, len, h, &link);
    if (when == 0) {
        if (e)
            keel__kv_unlink(r, link);
        return;
    }
    if (e == NULL) {
        static const uint8_t none[8];
        if (keel__kv_heap_reserve(r, 1) != 0 ||
            (e = keel__kv_entry_new(key, len, h, none, sizeof(none), sizeof(none))) == NULL)
            return;
        keel__kv_insert(r, e);
    }
    keel__kv_set_expire(r, e, when);
}

static int index_one(void *data, const keel__kv_entry_t *e)
{
    if (e->type == KEEL__KV_TYPE_STREAM)
        index_update(data, keel__kv_key(e), e->key_len, keel__kv_obj(e));
    return 0;
}

void keel__xs_reindex(keel_kv_t *kv, const uint8_t *key, size_t len)
{
    const keel__kv_entry_t *e = keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), NULL);
    assert(e != NULL && e->type == KEEL__KV_TYPE_STREAM);
    index_update(kv, key, len, keel__kv_obj(e));
}

void keel__xs_index_all(keel_kv_t *kv)
{
    keel__kv_each(kv, index_one, kv);
}

uint64_t keel_kv_next_retention_ms(const keel_kv_t *kv)
{
    const keel__kv_entry_t *top = kv->retained ? keel__kv_heap_top(kv->retained) : NULL;
    return top ? keel__kv_expire(top) : KEEL_KV_NO_DEADLINE;
}

/* The heap's entries due at now_ms (a walk that skips subtrees not due), at most max. */
static size_t due(const keel_kv_t *r, size_t i, uint64_t now_ms, const uint8_t **keys, size_t *lens,
                  size_t n, size_t max)
{
    if (i >= r->heap_len || n >= max || keel__kv_expire(r->heap[i]) > now_ms)
        return n;
    keys[n] = keel__kv_key(r->heap[i]);
    lens[n++] = r->heap[i]->key_len;
    n = due(r, 2 * i + 1, now_ms, keys, lens, n, max);
    return due(r, 2 * i + 2, now_ms, keys, lens, n, max);
}

int keel_kv_retention_sweep_encode(const keel_kv_t *kv, uint64_t now_ms, keel_buf_t *out)
{
    const uint8_t *argv[2 + KEEL_KV_RETENTION_SWEEP_KEYS_MAX];
    size_t lens[2 + KEEL_KV_RETENTION_SWEEP_KEYS_MAX];
    char now_s[KEEL_DEC_BYTES_MAX];
    if (kv->retained == NULL)
        return 0;
    size_t n =
        due(kv->retained, 0, now_ms, argv + 2, lens + 2, 0, KEEL_KV_RETENTION_SWEEP_KEYS_MAX);
    if (n == 0)
        return 0;
    argv[0] = (const uint8_t *)"KEEL.XRETAIN.SWEEP";
    lens[0] = strlen("KEEL.XRETAIN.SWEEP");
    lens[1] = keel_fmt_u64(now_s, now_ms);
    argv[1] = (const uint8_t *)now_s;
    return keel_kv_entry_encode(out, now_ms, (int)(n + 2), argv, lens);
}

/* KEEL.XRETAIN key MAXAGE ms | OFF: the stream's retention by age. */
int keel__xs_xretain_syntax(const call_t *c)
{
    int64_t ms;
    if (c->argc == 3 && keel__kvc_arg_is(c, 2, "OFF"))
        return 0;
    if (c->argc != 4 || !keel__kvc_arg_is(c, 2, "MAXAGE"))
        return r_err(c->reply, "ERR syntax error: KEEL.XRETAIN key MAXAGE ms | OFF");
    if (keel_parse_i64(c->argv[3], c->lens[3], &ms) != 0 || ms < 1)
        return r_err(c->reply, "ERR keel: MAXAGE must be an integer >= 1 (ms)");
    return 0;
}

int keel__xs_cmd_xretain(const call_t *c)
{
    keel__kv_entry_t **link;
    keel_stream_t *s;
    int rc = keel__xs_write_lookup(c, 1, &link, &s);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (s == NULL)
        return keel__kvc_done(r_err(c->reply, "ERR no such key"));
    int64_t ms = 0;
    if (c->argc == 4)
        keel_parse_i64(c->argv[3], c->lens[3], &ms);
    size_t before = keel__xs_bytes(s);
    keel_stream_set_max_age(s, (uint64_t)ms);
    r_ok(c->reply);
    keel__xs_changed(c, 1, before);
    return 0;
}

int keel__xs_xretain_sweep_syntax(const call_t *c)
{
    int64_t now;
    if (keel_parse_i64(c->argv[1], c->lens[1], &now) != 0 || now < 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/*
 * KEEL.XRETAIN.SWEEP now key... (the leader's, with its clock): each key that is a stream
 * with a retention loses its entries whose age has reached it as of min(now, the entry's
 * time) (a new leader whose clock is behind trims later, never earlier). :n entries removed.
 */
int keel__xs_cmd_xretain_sweep(const call_t *c)
{
    int64_t arg = 0;
    keel_parse_i64(c->argv[1], c->lens[1], &arg);
    uint64_t now = (uint64_t)arg < c->now ? (uint64_t)arg : c->now;
    uint64_t removed = 0;
    int changed = 0;
    for (size_t i = 2; i < c->argc; i++) {
        const keel__kv_entry_t *e = keel__kv_find(
            c->w, c->argv[i], c->lens[i], keel__kv_hash(c->w, c->argv[i], c->lens[i]), NULL);
        keel_stream_t *s = e && e->type == KEEL__KV_TYPE_STREAM && keel__kv_alive(c->w, e, c->now)
                               ? keel__kv_obj(e)
                               : NULL;
        uint64_t age = s ? keel_stream_max_age(s) : 0;
        if (s == NULL || age == 0 || now < age) {
            index_update(c->w, c->argv[i], c->lens[i], s);
            continue;
        }
        keel_stream_trim_t t = {.strategy = KEEL_STREAM_TRIM_MINID, .minid = {now - age + 1, 0}};
        size_t before = keel__xs_bytes(s);
        uint64_t n = keel_stream_trim(s, &t);
        removed += n;
        if (n > 0) {
            keel__xs_touch(c, c->argv[i], c->lens[i], before);
            changed = 1;
        } else {
            index_update(c->w, c->argv[i], c->lens[i], s);
        }
    }
    if (changed)
        c->w->revision++;
    r_int(c->reply, (int64_t)removed);
    return 0;
}

void keel__xs_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t *e = keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), NULL);
    assert(e != NULL && e->type == KEEL__KV_TYPE_STREAM);
    kv->bytes = kv->bytes - bytes_before + obj_bytes(keel__kv_obj(e));
    keel__kvc_set_version(kv, e, kv->revision + 1);
    index_update(kv, key, len, keel__kv_obj(e));
}

void keel__xs_changed(const call_t *c, size_t i, size_t bytes_before)
{
    keel__xs_touch(c, c->argv[i], c->lens[i], bytes_before);
    c->w->revision++;
}

size_t keel__xs_bytes(const keel_stream_t *s)
{
    return s ? obj_bytes(s) : 0;
}

/* ---- XADD and XTRIM options ------------------------------------------------------- */

typedef struct add_args {
    keel_stream_trim_t trim; /* strategy 0: none */
    int nomkstream, id_given, seq_star;
    keel_stream_id_t id;
    size_t field_pos;
    size_t producer_pos; /* KEEL.PRODUCER pid seq: the pid's index, 0: none */
    uint64_t producer_seq;
} add_args_t;

/* The default LIMIT of '~' trimming: Redis's 100 x stream-node-max-entries. */
#define TRIM_APPROX_LIMIT_DEFAULT (100u * KEEL_STREAM_BLOCK_ENTRIES_MAX)

/* Redis streamParseAddOrTrimArgsOrReply: 0 (a->field_pos set for XADD) or REPLIED. */
static int add_parse(const call_t *c, int xadd, add_args_t *a)
{
    memset(a, 0, sizeof(*a));
    int limit_given = 0;
    int64_t limit = 0;
    size_t i = 2;
    for (; i < c->argc; i++) {
        size_t more = c->argc - 1 - i;
        const uint8_t *p = c->argv[i];
        size_t n = c->lens[i];
        int maxlen = keel__kvc_arg_is(c, i, "MAXLEN"), minid = keel__kvc_arg_is(c, i, "MINID");
        if (xadd && n == 1 && p[0] == '*') {
            break;
        } else if ((maxlen || minid) && more) {
            if (a->trim.strategy != 0)
                return r_err(c->reply, "ERR syntax error, MAXLEN and MINID options at the same "
                                       "time are not compatible");
            a->trim.approx = 0;
            const uint8_t *next = c->argv[i + 1];
            if (more >= 2 && c->lens[i + 1] == 1 && next[0] == '~') {
                a->trim.approx = 1;
                i++;
            } else if (more >= 2 && c->lens[i + 1] == 1 && next[0] == '=') {
                i++;
            }
            if (maxlen) {
                int64_t v;
                if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &v) != 0)
                    return r_err(c->reply, ERR_NOT_INT);
                if (v < 0)
                    return r_err(c->reply, "ERR The MAXLEN argument must be >= 0.");
                a->trim.maxlen = (uint64_t)v;
                a->trim.strategy = KEEL_STREAM_TRIM_MAXLEN;
            } else {
                if (keel__xs_parse_id(c, i + 1, 0, 1, &a->trim.minid) != 0)
                    return REPLIED;
                a->trim.strategy = KEEL_STREAM_TRIM_MINID;
            }
            i++;
        } else if (keel__kvc_arg_is(c, i, "LIMIT") && more) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &limit) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            if (limit < 0)
                return r_err(c->reply, "ERR The LIMIT argument must be >= 0.");
            limit_given = 1;
            i++;
        } else if (xadd && keel__kvc_arg_is(c, i, "NOMKSTREAM")) {
            a->nomkstream = 1;
        } else if (xadd && keel__kvc_arg_is(c, i, "KEEL.PRODUCER") && more >= 2) {
            int64_t seq;
            if (c->lens[i + 1] > KEEL_STREAM_PRODUCER_ID_BYTES_MAX)
                return r_err(c->reply, "ERR keel: producer id longer than 64 bytes");
            if (keel_parse_i64(c->argv[i + 2], c->lens[i + 2], &seq) != 0 || seq < 1)
                return r_err(c->reply, "ERR keel: producer sequence must be an integer >= 1");
            a->producer_pos = i + 1;
            a->producer_seq = (uint64_t)seq;
            i += 2;
        } else if (xadd) {
            if (keel_stream_id_parse(p, n, 0, 1, &a->seq_star, &a->id) != 0)
                return r_err(c->reply, ERR_XID);
            a->id_given = 1;
            break;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (limit && a->trim.strategy == 0)
        return r_err(
            c->reply,
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy");
    if (!xadd && a->trim.strategy == 0)
        return r_err(c->reply, "ERR syntax error, XTRIM must be called with a trimming strategy");
    if (limit_given) {
        if (!a->trim.approx)
            return r_err(c->reply,
                         "ERR syntax error, LIMIT cannot be used without the special ~ option");
        a->trim.limit = (uint64_t)limit;
    } else {
        a->trim.limit = a->trim.approx ? TRIM_APPROX_LIMIT_DEFAULT : 0;
    }
    a->field_pos = i + 1;
    return 0;
}

int keel__xs_xadd_syntax(const call_t *c)
{
    add_args_t a;
    int rc = add_parse(c, 1, &a);
    if (rc != 0)
        return rc;
    size_t nf = a.field_pos <= c->argc ? c->argc - a.field_pos : 0;
    if (nf < 2 || nf % 2 == 1)
        return r_err(c->reply, "ERR wrong number of arguments for 'xadd' command");
    return 0;
}

int keel__xs_auto_id(const call_t *c, keel_stream_id_t last, keel_stream_id_t *out)
{
    if (c->now > last.ms) {
        *out = (keel_stream_id_t){c->now, 0};
        return 0;
    }
    *out = last;
    return keel_stream_id_incr(out);
}

/* The id XADD appends with, or REPLIED (Redis streamAppendItem's refusals). */
static int next_id(const call_t *c, const add_args_t *a, keel_stream_id_t last,
                   keel_stream_id_t *out)
{
    static const char smaller[] =
        "ERR The ID specified in XADD is equal or smaller than the target stream top item";
    keel_stream_id_t id = a->id;
    if (!a->id_given) {
        if (keel__xs_auto_id(c, last, &id) != 0)
            return r_err(c->reply, "ERR The stream has exhausted the last possible ID, "
                                   "unable to add more items");
    } else if (a->seq_star) {
        if (id.ms == last.ms) {
            if (last.seq == UINT64_MAX)
                return r_err(c->reply, smaller);
            id.seq = last.seq + 1;
        } else {
            id.seq = 0;
        }
    }
    if (keel_stream_id_cmp(id, last) <= 0)
        return r_err(c->reply, smaller);
    *out = id;
    return 0;
}

int keel__xs_cmd_xadd(const call_t *c)
{
    add_args_t a;
    int rc = add_parse(c, 1, &a);
    assert(rc == 0); /* the syntax ran */
    if (a.id_given && !a.seq_star && a.id.ms == 0 && a.id.seq == 0)
        return keel__kvc_done(
            r_err(c->reply, "ERR The ID specified in XADD must be greater than 0-0"));
    for (size_t i = a.field_pos; i < c->argc; i++)
        if (c->lens[i] > c->kv->cfg.value_bytes_max)
            return keel__kvc_done(r_err(c->reply, ERR_VALUE_SIZE));
    keel__kv_entry_t **link = NULL;
    keel_stream_t *s;
    if ((rc = keel__xs_write_lookup(c, 1, &link, &s)) != 0)
        return keel__kvc_done(rc);
    if (s == NULL && a.nomkstream) {
        r_nil(c->reply);
        return 0;
    }
    uint64_t last_seq;
    keel_stream_id_t last_added;
    if (s && a.producer_pos &&
        keel_stream_producer_get(s, c->argv[a.producer_pos], c->lens[a.producer_pos], &last_seq,
                                 &last_added) &&
        a.producer_seq <= last_seq) {
        if (a.producer_seq < last_seq) /* an older retry: its answer is gone */
            return keel__kvc_done(
                keel__xs_errf(c, "ERR keel: producer sequence %llu is behind the last one, %llu",
                              (unsigned long long)a.producer_seq, (unsigned long long)last_seq));
        keel__xs_id(c->reply, last_added); /* the same append again: its first answer */
        return 0;
    }
    keel_stream_info_t in = {0};
    if (s)
        keel_stream_get_info(s, &in);
    if (in.last_id.ms == UINT64_MAX && in.last_id.seq == UINT64_MAX)
        return keel__kvc_done(r_err(c->reply, "ERR The stream has exhausted the last possible "
                                              "ID, unable to add more items"));
    keel_stream_id_t id;
    if ((rc = next_id(c, &a, in.last_id, &id)) != 0)
        return keel__kvc_done(rc);
    /* a new key's stream is built whole before it is linked: ENOMEM changes nothing */
    keel_stream_t *fresh = NULL;
    if (s == NULL) {
        if ((rc = keel__xs_check_new(c, 1)) != 0)
            return keel__kvc_done(rc);
        if ((fresh = s = keel_stream_new()) == NULL)
            return KEEL_ENOMEM;
    }
    size_t before = fresh ? 0 : keel__xs_bytes(s);
    rc = keel_stream_append(s, id, (c->argc - a.field_pos) / 2, c->argv + a.field_pos,
                            c->lens + a.field_pos);
    if (rc == 0 && a.producer_pos) /* before linking: a failure must change nothing */
        rc = keel_stream_producer_set(s, c->argv[a.producer_pos], c->lens[a.producer_pos],
                                      a.producer_seq, id);
    if (rc == 0 && fresh)
        rc = keel__xs_link(c, 1, fresh);
    if (rc != 0) {
        keel_stream_free(fresh);
        return rc;
    }
    keel__xs_id(c->reply, id);
    if (a.trim.strategy)
        keel_stream_trim(s, &a.trim);
    keel__xs_changed(c, 1, before);
    return 0;
}

int keel__xs_xtrim_syntax(const call_t *c)
{
    add_args_t a;
    return add_parse(c, 0, &a);
}

int keel__xs_cmd_xtrim(const call_t *c)
{
    add_args_t a;
    int rc = add_parse(c, 0, &a);
    assert(rc == 0);
    keel__kv_entry_t **link = NULL;
    keel_stream_t *s;
    if ((rc = keel__xs_write_lookup(c, 1, &link, &s)) != 0)
        return keel__kvc_done(rc);
    if (s == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    size_t before = keel__xs_bytes(s);
    uint64_t n = keel_stream_trim(s, &a.trim);
    r_int(c->reply, (int64_t)n);
    if (n > 0)
        keel__xs_changed(c, 1, before);
    return 0;
}

/* ---- XDEL, XLEN ----------------------------------------------------------------------- */

int keel__xs_cmd_xdel(const call_t *c)
{
    keel__kv_entry_t **link = NULL;
    keel_stream_t *s;
    int rc = keel__xs_write_lookup(c, 1, &link, &s);
    if (rc != 0)
        return keel__kvc_done(rc);
    if (s == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    keel_stream_id_t id;
    for (size_t i = 2; i < c->argc; i++) /* all or nothing: every id first */
        if (keel__xs_parse_id(c, i, 0, 1, &id) != 0)
            return 0;
    size_t before = keel__xs_bytes(s);
    int64_t n = 0;
    for (size_t i = 2; i < c->argc; i++) {
        keel_stream_id_parse(c->argv[i], c->lens[i], 0, 1, NULL, &id);
        n += keel_stream_delete(s, id);
    }
    r_int(c->reply, n);
    if (n > 0)
        keel__xs_changed(c, 1, before);
    return 0;
}

int keel__xs_cmd_xlen(const call_t *c)
{
    const keel_stream_t *s;
    if (keel__xs_read_lookup(c, 1, &s) != 0)
        return 0;
    keel_stream_info_t in = {0};
    if (s)
        keel_stream_get_info(s, &in);
    r_int(c->reply, (int64_t)in.length);
    return 0;
}

/* ---- XRANGE, XREVRANGE -------------------------------------------------------------- */

static int range(const call_t *c, int rev)
{
    keel_stream_id_t start, end;
    if (keel__xs_parse_bound(c, rev ? 3 : 2, 0, &start) != 0 ||
        keel__xs_parse_bound(c, rev ? 2 : 3, 1, &end) != 0)
        return 0;
    int64_t count = -1;
    for (size_t j = 4; j < c->argc; j++) {
        if (keel__kvc_arg_is(c, j, "COUNT") && j + 1 < c->argc) {
            if (keel_parse_i64(c->argv[j + 1], c->lens[j + 1], &count) != 0)
                return keel__kvc_done(r_err(c->reply, ERR_NOT_INT));
            if (count < 0)
                count = 0;
            j++;
        } else {
            return keel__kvc_done(r_err(c->reply, ERR_SYNTAX));
        }
    }
    const keel_stream_t *s;
    if (keel__xs_read_lookup(c, 1, &s) != 0)
        return 0;
    if (s == NULL) {
        r_array(c->reply, 0);
        return 0;
    }
    if (count == 0) {
        r_nil_array(c->reply);
        return 0;
    }
    keel__xs_range(c->reply, s, start, end, count < 0 ? 0 : (uint64_t)count, rev);
    return 0;
}

int keel__xs_cmd_xrange(const call_t *c)
{
    return range(c, 0);
}

int keel__xs_cmd_xrevrange(const call_t *c)
{
    return range(c, 1);
}

/* ---- XREAD and XREADGROUP's arguments ---------------------------------------------- */

int keel__xs_read_parse(const call_t *c, int group, xread_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->block_ms = -1;
    for (size_t i = 1; i < c->argc; i++) {
        size_t more = c->argc - i - 1;
        if (keel__kvc_arg_is(c, i, "BLOCK") && more) {
            i++;
            int64_t t;
            if (keel_parse_i64(c->argv[i], c->lens[i], &t) != 0)
                return r_err(c->reply, "ERR timeout is not an integer or out of range");
            if (t < 0)
                return r_err(c->reply, "ERR timeout is negative");
            a->block_ms = t;
        } else if (keel__kvc_arg_is(c, i, "COUNT") && more) {
            i++;
            int64_t n;
            if (keel_parse_i64(c->argv[i], c->lens[i], &n) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            a->count = n < 0 ? 0 : (uint64_t)n;
        } else if (keel__kvc_arg_is(c, i, "STREAMS") && more) {
            a->streams_pos = i + 1;
            size_t n = c->argc - a->streams_pos;
            if (n % 2 != 0)
                /* Redis 7.0 says XREAD and '$' for XREADGROUP too */
                return r_err(c->reply, "ERR Unbalanced XREAD list of streams: for each stream "
                                       "key an ID or '$' must be specified.");
            a->nstreams = n / 2;
            break;
        } else if (keel__kvc_arg_is(c, i, "GROUP") && more >= 2) {
            if (!group)
                return r_err(c->reply, "ERR The GROUP option is only supported by XREADGROUP. "
                                       "You called XREAD instead.");
            a->group_pos = i + 1;
            i += 2;
        } else if (keel__kvc_arg_is(c, i, "NOACK")) {
            if (!group)
                return r_err(c->reply, "ERR The NOACK option is only supported by XREADGROUP. "
                                       "You called XREAD instead.");
            a->noack = 1;
        } else if (group && keel__kvc_arg_is(c, i, "KEEL.PRIORITY")) {
            a->priority = 1;
        } else if (group && keel__kvc_arg_is(c, i, "KEEL.STARVE") && more) {
            i++;
            if (keel_parse_i64(c->argv[i], c->lens[i], &a->starve) != 0 || a->starve < 1)
                return r_err(c->reply, "ERR keel: KEEL.STARVE must be an integer >= 1");
            a->priority = 1;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (a->streams_pos == 0)
        return r_err(c->reply, ERR_SYNTAX);
    if (group && a->group_pos == 0)
        return r_err(c->reply, "ERR Missing GROUP option for XREADGROUP");
    return 0;
}

int keel__xs_xread_syntax(const call_t *c)
{
    xread_args_t a;
    return keel__xs_read_parse(c, 0, &a);
}

/* XREAD [COUNT n] [BLOCK ms] STREAMS key... id...: BLOCK is the server's (the state answers
 * what is there now; a server that blocks asks again as entries apply). */
int keel__xs_cmd_xread(const call_t *c)
{
    xread_args_t a;
    int rc = keel__xs_read_parse(c, 0, &a);
    assert(rc == 0);
    size_t ids = a.streams_pos + a.nstreams;
    /* ids first, in Redis's order: a bad id or type anywhere refuses the whole read */
    for (size_t k = 0; k < a.nstreams; k++) {
        const keel_stream_t *s;
        size_t i = ids + k;
        if (keel__xs_read_lookup(c, a.streams_pos + k, &s) != 0)
            return 0;
        if (c->lens[i] == 1 && c->argv[i][0] == '$')
            continue;
        if (c->lens[i] == 1 && c->argv[i][0] == '>')
            return keel__kvc_done(r_err(c->reply,
                                        "ERR The > ID can be specified only when calling "
                                        "XREADGROUP using the GROUP <group> <consumer> option."));
        keel_stream_id_t id;
        if (keel__xs_parse_id(c, i, 0, 1, &id) != 0)
            return 0;
    }
    size_t served = 0;
    for (int pass = 0; pass < 2; pass++) { /* count the streams served, then write them */
        if (pass == 1) {
            if (served == 0)
                break;
            r_array(c->reply, served);
        }
        for (size_t k = 0; k < a.nstreams; k++) {
            const keel_stream_t *s = NULL;
            keel__xs_read_lookup(c, a.streams_pos + k, &s);
            if (s == NULL)
                continue;
            size_t i = ids + k;
            keel_stream_id_t gt;
            if (c->lens[i] == 1 && c->argv[i][0] == '$') {
                keel_stream_info_t in;
                keel_stream_get_info(s, &in);
                gt = in.last_id;
            } else {
                keel_stream_id_parse(c->argv[i], c->lens[i], 0, 1, NULL, &gt);
            }
            keel_stream_id_t max = keel_stream_last_live_id(s);
            keel_stream_info_t in;
            keel_stream_get_info(s, &in);
            if (in.length == 0 || keel_stream_id_cmp(max, gt) <= 0)
                continue;
            if (pass == 0) {
                served++;
                continue;
            }
            keel_stream_id_t start = gt;
            keel_stream_id_incr(&start);
            r_array(c->reply, 2);
            r_bulk(c->reply, c->argv[a.streams_pos + k], c->lens[a.streams_pos + k]);
            keel__xs_range(c->reply, s, start, (keel_stream_id_t){UINT64_MAX, UINT64_MAX}, a.count,
                           0);
        }
    }
    if (served == 0)
        r_nil_array(c->reply);
    return 0;
}

/* ---- for the server: BLOCK ------------------------------------------------------------ */

int keel_kv_block_ms(int argc, const uint8_t *const *argv, const size_t *lens, int64_t *ms)
{
    const cmd_t *cmd = keel__kvc_find_cmd(argv[0], lens[0]);
    if (cmd == NULL || !(cmd->flags & CMD_BLOCKING))
        return 0;
    keel_buf_t scratch;
    keel_buf_init(&scratch, 4096);
    reply_t o = {&scratch, 0, 0};
    call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &o, NULL, NULL, NULL, NULL};
    xread_args_t a;
    int group = cmd->fn == keel__xs_cmd_xreadgroup;
    int rc = keel__xs_read_parse(&c, group, &a);
    keel_buf_free(&scratch);
    if (rc != 0 || a.block_ms < 0)
        return 0;
    *ms = a.block_ms;
    return group ? 2 : 1;
}

int keel_kv_xread_resolve(const keel_kv_t *kv, int argc, const uint8_t *const *argv,
                          const size_t *lens, keel_buf_t *out)
{
    keel_buf_t scratch;
    keel_buf_init(&scratch, 4096);
    reply_t o = {&scratch, 0, 0};
    call_t c = {NULL, kv, kv->time_ms, (size_t)argc, argv, lens, &o, NULL, NULL, NULL, NULL};
    xread_args_t a;
    int rc = keel__xs_read_parse(&c, 0, &a);
    keel_buf_free(&scratch);
    if (rc != 0)
        return KEEL_EINVAL;
    const uint8_t **av = malloc((size_t)argc * sizeof(*av));
    size_t *ln = malloc((size_t)argc * sizeof(*ln));
    char(*ids)[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1] =
        malloc(a.nstreams ? a.nstreams * sizeof(*ids) : 1);
    if (av == NULL || ln == NULL || ids == NULL) {
        rc = KEEL_ENOMEM;
        goto done;
    }
    for (int i = 0; i < argc; i++) {
        av[i] = argv[i];
        ln[i] = lens[i];
    }
    for (size_t k = 0; k < a.nstreams; k++) {
        size_t i = a.streams_pos + a.nstreams + k;
        if (!(lens[i] == 1 && argv[i][0] == '$'))
            continue;
        const keel__kv_entry_t *e = keel__kv_find(
            kv, argv[a.streams_pos + k], lens[a.streams_pos + k],
            keel__kv_hash(kv, argv[a.streams_pos + k], lens[a.streams_pos + k]), NULL);
        keel_stream_id_t last = {0, 0};
        if (e && e->type == KEEL__KV_TYPE_STREAM) {
            keel_stream_info_t in;
            keel_stream_get_info(keel__kv_obj(e), &in);
            last = in.last_id;
        }
        ln[i] = keel_stream_id_format(ids[k], last);
        av[i] = (const uint8_t *)ids[k];
    }
    rc = keel_kv_entry_encode(out, kv->time_ms, argc, av, ln);
done:
    free(av);
    free(ln);
    free(ids);
    return rc;
}
