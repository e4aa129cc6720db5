/* kv_list_cmd.c - the list commands as Redis 7.0 has them: LPUSH RPUSH LPUSHX RPUSHX LPOP
   RPOP LLEN LRANGE LINDEX LSET LINSERT LREM LTRIM LPOS. The moves, the multi-pops and the
   blocking pops: kv_list_block.c. */
#include "core/kv_list_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lookups ----------------------------------------------------------------------------- */

/* A read's list at argv[i]: 0 and *l (NULL: absent), or REPLIED (WRONGTYPE). */
static int read_list(const call_t *c, size_t i, const klist_t **l)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, i);
    if (e && e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    *l = e ? keel__kv_obj(e) : NULL;
    return 0;
}

int keel__kvl_write_list(const call_t *c, const uint8_t *key, size_t len, wkey_t *k)
{
    memset(k, 0, sizeof(*k));
    k->key = key;
    k->len = len;
    k->h = keel__kv_hash(c->w, key, len);
    k->e = keel__kvc_wfind(c, key, len, k->h, &k->link, &k->dead);
    if (k->e && k->e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    k->l = k->e ? keel__kv_obj(k->e) : NULL;
    k->bytes_before = k->l ? k->l->bytes : 0;
    return 0;
}

/* Links l (filled, owned from here on unless this fails) as the absent key k's entry:
 * 0 or KEEL_ENOMEM (l untouched, still the caller's). */
int keel__kvl_link_new(const call_t *c, wkey_t *k, klist_t *l)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t *e = keel__kv_entry_new_obj(k->key, k->len, k->h, KEEL__KV_TYPE_LIST, l);
    if (e == NULL)
        return KEEL_ENOMEM;
    e->create_revision = kv->revision + 1;
    if (k->dead)
        keel__kv_replace(kv, k->link, e);
    else
        keel__kv_insert(kv, e);
    kv->bytes += l->bytes;
    k->e = e;
    k->l = l;
    k->bytes_before = l->bytes;
    k->dead = 0;
    return 0;
}

/* A new list holding n elements from argv[first..] pushed at `where`: NULL on ENOMEM. */
klist_t *keel__kvl_list_of(const uint8_t *const *argv, const size_t *lens, size_t n, int where)
{
    klist_t *l = keel__kvl_list_new();
    for (size_t i = 0; l && i < n; i++)
        if (keel__kvl_list_push(l, where, argv[i], lens[i]) != 0) {
            keel__kvl_list_free(l);
            l = NULL;
        }
    return l;
}

/* The list at k changed (this command's revision): deletes the key if it is empty, else
 * gives it the new version; accounts its bytes. */
void keel__kvl_changed(const call_t *c, wkey_t *k)
{
    keel_kv_t *kv = c->w;
    if (k->l->len == 0) {
        keel__kv_entry_t **link = NULL;
        keel__kv_entry_t *e = keel__kv_find(kv, k->key, k->len, k->h, &link);
        assert(e == k->e);
        kv->bytes = kv->bytes - k->bytes_before + k->l->bytes;
        keel__kv_unlink(kv, link);
        k->e = NULL;
        k->l = NULL;
        return;
    }
    kv->bytes = kv->bytes - k->bytes_before + k->l->bytes;
    k->bytes_before = k->l->bytes;
    keel__kvc_set_version(kv, k->e, kv->revision + 1);
}

/* ---- argument parsing as Redis's ------------------------------------------------------- */

static int parse_i64(const call_t *c, size_t i, int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* getRangeLongFromObjectOrReply: msg for both a non-integer and a value out of range
 * (NULL: Redis's own texts). */
int keel__kvl_parse_range(const call_t *c, size_t i, int64_t min, int64_t max, const char *msg,
                          int64_t *v)
{
    if (keel_parse_i64(c->argv[i], c->lens[i], v) != 0)
        return r_err(c->reply, msg ? msg : ERR_NOT_INT);
    if (*v < min || *v > max) {
        if (msg)
            return r_err(c->reply, msg);
        char t[128];
        snprintf(t, sizeof(t), "ERR value is out of range, value must between %lld and %lld",
                 (long long)min, (long long)max);
        return r_err(c->reply, t);
    }
    return 0;
}

/* getPositiveLongFromObjectOrReply. */
static int parse_positive(const call_t *c, size_t i, const char *msg, int64_t *v)
{
    return keel__kvl_parse_range(c, i, 0, INT64_MAX,
                                 msg ? msg : "ERR value is out of range, must be positive", v);
}

int keel__kvl_parse_where(const call_t *c, size_t i, int *where)
{
    if (keel__kvc_arg_is(c, i, "LEFT"))
        *where = HEAD;
    else if (keel__kvc_arg_is(c, i, "RIGHT"))
        *where = TAIL;
    else
        return r_err(c->reply, ERR_SYNTAX);
    return 0;
}
/* ---- replies --------------------------------------------------------------------------- */

/* Pops up to n elements from `where` of k's list, replying each as a bulk. */
void keel__kvl_pop_n(wkey_t *k, int where, uint64_t n, reply_t *o)
{
    for (uint64_t i = 0; i < n && k->l->len; i++) {
        const uint8_t *v;
        size_t len;
        keel__kvl_list_peek(k->l, where, &v, &len);
        r_bulk(o, v, len);
        keel__kvl_list_drop(k->l, where);
    }
}

/* ---- LPUSH RPUSH LPUSHX RPUSHX -------------------------------------------------------- */

static int push(const call_t *c, int where, int xx)
{
    keel_kv_t *kv = c->w;
    for (size_t i = 2; i < c->argc; i++)
        if (c->lens[i] > kv->cfg.value_bytes_max)
            return r_err(c->reply, ERR_VALUE_SIZE);
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL && xx) {
        r_int(c->reply, 0);
        return 0;
    }
    size_t n = c->argc - 2;
    if ((k.l ? k.l->len : 0) + n > LIST_LEN_MAX)
        return r_err(c->reply, ERR_LIST_FULL);
    if (k.e == NULL) {
        int rc = keel__kvc_check_sizes(c, k.len, 0);
        if (rc == 0 && !k.dead)
            rc = keel__kvc_check_room(c, 1);
        if (rc != 0)
            return rc;
        klist_t *l = keel__kvl_list_of(c->argv + 2, c->lens + 2, n, where);
        if (l == NULL)
            return KEEL_ENOMEM;
        if (keel__kvl_link_new(c, &k, l) != 0) {
            keel__kvl_list_free(l);
            return KEEL_ENOMEM;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (keel__kvl_list_push(k.l, where, c->argv[2 + i], c->lens[2 + i]) != 0) {
                for (size_t j = 0; j < i; j++) /* undo: the same end, as many */
                    keel__kvl_list_drop(k.l, where);
                kv->bytes = kv->bytes - k.bytes_before + k.l->bytes;
                return KEEL_ENOMEM;
            }
        }
    }
    keel__kvl_changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)k.l->len);
    return 0;
}

int keel__kvl_cmd_lpush(const call_t *c)
{
    return push(c, HEAD, 0);
}
int keel__kvl_cmd_rpush(const call_t *c)
{
    return push(c, TAIL, 0);
}
int keel__kvl_cmd_lpushx(const call_t *c)
{
    return push(c, HEAD, 1);
}
int keel__kvl_cmd_rpushx(const call_t *c)
{
    return push(c, TAIL, 1);
}

/* ---- LPOP RPOP --------------------------------------------------------------------------- */

int keel__kvl_pop_syntax(const call_t *c)
{
    if (c->argc > 3) {
        char t[96];
        snprintf(t, sizeof(t), "ERR wrong number of arguments for '%s' command", c->cmd_lname);
        return r_err(c->reply, t);
    }
    int64_t count;
    if (c->argc == 3)
        return parse_positive(c, 2, NULL, &count);
    return 0;
}

static int pop(const call_t *c, int where)
{
    int rc = keel__kvl_pop_syntax(c);
    if (rc != 0)
        return rc;
    int has_count = c->argc == 3;
    int64_t count = 1;
    if (has_count)
        parse_positive(c, 2, NULL, &count);
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        if (has_count)
            r_nil_array(c->reply);
        else
            r_nil(c->reply);
        return 0;
    }
    if (has_count && count == 0) {
        r_array(c->reply, 0);
        return 0;
    }
    if (has_count)
        r_array(c->reply, (uint64_t)count < k.l->len ? (size_t)count : (size_t)k.l->len);
    keel__kvl_pop_n(&k, where, (uint64_t)count, c->reply);
    keel__kvl_changed(c, &k);
    c->w->revision++;
    return 0;
}

int keel__kvl_cmd_lpop(const call_t *c)
{
    return pop(c, HEAD);
}
int keel__kvl_cmd_rpop(const call_t *c)
{
    return pop(c, TAIL);
}

/* ---- LLEN LINDEX LRANGE ---------------------------------------------------------------- */

int keel__kvl_cmd_llen(const call_t *c)
{
    const klist_t *l;
    if (read_list(c, 1, &l) != 0)
        return REPLIED;
    r_int(c->reply, l ? (int64_t)l->len : 0);
    return 0;
}

int keel__kvl_cmd_lindex(const call_t *c)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL) {
        r_nil(c->reply);
        return 0;
    }
    if (e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    const klist_t *l = keel__kv_obj(e);
    int64_t i;
    if (parse_i64(c, 2, &i) != 0)
        return REPLIED;
    if (i < 0)
        i += (int64_t)l->len;
    if (i < 0 || (uint64_t)i >= l->len) {
        r_nil(c->reply);
        return 0;
    }
    pos_t p = keel__kvl_list_at(l, (uint64_t)i);
    const uint8_t *v;
    size_t n;
    keel__kvl_get_fwd(p.nd, p.off, &v, &n);
    r_bulk(c->reply, v, n);
    return 0;
}

/* Redis's range clamp: [*start, *end] of len, or 0 for an empty range. */
static int clamp(int64_t start, int64_t end, uint64_t len, uint64_t *s, uint64_t *e)
{
    int64_t n = (int64_t)len;
    if (start < 0)
        start += n;
    if (end < 0)
        end += n;
    if (start < 0)
        start = 0;
    if (start > end || start >= n)
        return 0;
    if (end >= n)
        end = n - 1;
    *s = (uint64_t)start;
    *e = (uint64_t)end;
    return 1;
}

int keel__kvl_range_syntax(const call_t *c)
{
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    return 0;
}

int keel__kvl_cmd_lrange(const call_t *c)
{
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    const klist_t *l;
    if (read_list(c, 1, &l) != 0)
        return REPLIED;
    uint64_t s, e;
    if (l == NULL || !clamp(a, b, l->len, &s, &e)) {
        r_array(c->reply, 0);
        return 0;
    }
    r_array(c->reply, (size_t)(e - s + 1));
    pos_t p = keel__kvl_list_at(l, s);
    const uint8_t *v;
    size_t n;
    for (uint64_t i = s; i <= e && !c->reply->failed && keel__kvl_next_fwd(&p, &v, &n); i++)
        r_bulk(c->reply, v, n);
    return 0;
}

/* ---- LSET LINSERT LREM LTRIM ---------------------------------------------------------- */

/*
 * Rebuilds node nd with the element at `at` (a start offset in nd) replaced (mode 0),
 * or with v inserted before (mode 1) or after (mode 2) it. 0 or KEEL_ENOMEM (unchanged).
 */
static int rebuild_one(klist_t *l, lnode_t *nd, uint32_t at, int mode, const uint8_t *v, size_t n)
{
    builder_t b = {0};
    b.left = nd->tail - nd->head + keel__kvl_enc_len(n);
    uint32_t off = nd->head;
    while (off < nd->tail) {
        const uint8_t *x;
        size_t xn;
        uint32_t next = keel__kvl_get_fwd(nd, off, &x, &xn);
        if (off == at && mode == 1)
            keel__kvl_build_add(&b, v, n);
        if (off == at && mode == 0)
            keel__kvl_build_add(&b, v, n);
        else
            keel__kvl_build_add(&b, x, xn);
        if (off == at && mode == 2)
            keel__kvl_build_add(&b, v, n);
        off = next;
    }
    if (b.oom) {
        keel__kvl_build_abort(&b);
        return KEEL_ENOMEM;
    }
    keel__kvl_splice(l, nd, nd, &b);
    return 0;
}

int keel__kvl_cmd_lset(const call_t *c)
{
    keel_kv_t *kv = c->w;
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL)
        return r_err(c->reply, "ERR no such key");
    int64_t i;
    if (parse_i64(c, 2, &i) != 0)
        return REPLIED;
    if (c->lens[3] > kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    if (i < 0)
        i += (int64_t)k.l->len;
    if (i < 0 || (uint64_t)i >= k.l->len)
        return r_err(c->reply, "ERR index out of range");
    pos_t p = keel__kvl_list_at(k.l, (uint64_t)i);
    if (rebuild_one(k.l, p.nd, p.off, 0, c->argv[3], c->lens[3]) != 0)
        return KEEL_ENOMEM;
    keel__kvl_changed(c, &k);
    kv->revision++;
    r_ok(c->reply);
    return 0;
}

int keel__kvl_linsert_syntax(const call_t *c)
{
    if (!keel__kvc_arg_is(c, 2, "BEFORE") && !keel__kvc_arg_is(c, 2, "AFTER"))
        return r_err(c->reply, ERR_SYNTAX);
    return 0;
}

int keel__kvl_cmd_linsert(const call_t *c)
{
    keel_kv_t *kv = c->w;
    if (keel__kvl_linsert_syntax(c) != 0)
        return REPLIED;
    int after = keel__kvc_arg_is(c, 2, "AFTER");
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    if (c->lens[4] > kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    lnode_t *at = NULL;
    uint32_t at_off = 0;
    for (lnode_t *nd = k.l->first; nd && at == NULL; nd = nd->next) {
        for (uint32_t off = nd->head; off < nd->tail;) {
            const uint8_t *v;
            size_t n;
            uint32_t next = keel__kvl_get_fwd(nd, off, &v, &n);
            if (n == c->lens[3] && memcmp(v, c->argv[3], n) == 0) {
                at = nd;
                at_off = off;
                break;
            }
            off = next;
        }
    }
    if (at == NULL) {
        r_int(c->reply, -1);
        return 0;
    }
    if (k.l->len + 1 > LIST_LEN_MAX)
        return r_err(c->reply, ERR_LIST_FULL);
    if (rebuild_one(k.l, at, at_off, after ? 2 : 1, c->argv[4], c->lens[4]) != 0)
        return KEEL_ENOMEM;
    keel__kvl_changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)k.l->len);
    return 0;
}

/* LREM: removes up to `limit` (0: all) elements equal to v, from the head (or the tail when
 * `rev`), rebuilding the nodes between the first and the last removal. */
int keel__kvl_cmd_lrem(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t count;
    if (parse_i64(c, 2, &count) != 0)
        return REPLIED;
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    int rev = count < 0;
    uint64_t limit = count == 0 ? UINT64_MAX
                     : rev      ? (uint64_t)0 - (uint64_t)count
                                : (uint64_t)count;
    const uint8_t *want = c->argv[3];
    size_t want_n = c->lens[3];
    /* pass 1: the nodes holding the matches that go, and how many */
    lnode_t *a = NULL, *z = NULL;
    uint64_t found = 0;
    pos_t p = rev ? keel__kvl_back(k.l) : keel__kvl_front(k.l);
    const uint8_t *v;
    size_t n;
    while (found < limit &&
           (rev ? keel__kvl_next_bwd(&p, &v, &n) : keel__kvl_next_fwd(&p, &v, &n))) {
        if (n == want_n && memcmp(v, want, n) == 0) {
            found++;
            if (a == NULL)
                a = p.nd;
            z = p.nd;
        }
    }
    if (found == 0) {
        r_int(c->reply, 0);
        return 0;
    }
    if (rev) { /* a..z were met back to front */
        lnode_t *t = a;
        a = z;
        z = t;
    }
    /* pass 2: rebuild a..z without the matches that go: no node before a (after z) holds
       one, so they are the first `found` matches of a..z in order, or the last when rev */
    size_t bytes = 0;
    uint64_t matches = 0;
    for (lnode_t *nd = a;; nd = nd->next) {
        bytes += nd->tail - nd->head;
        for (uint32_t off = nd->head; off < nd->tail;) {
            off = keel__kvl_get_fwd(nd, off, &v, &n);
            matches += n == want_n && memcmp(v, want, n) == 0;
        }
        if (nd == z)
            break;
    }
    uint64_t from = rev ? matches - found + 1 : 1, to = rev ? matches : found, m = 0;
    builder_t b = {0};
    b.left = bytes;
    for (lnode_t *nd = a;; nd = nd->next) {
        for (uint32_t off = nd->head; off < nd->tail;) {
            off = keel__kvl_get_fwd(nd, off, &v, &n);
            if (n == want_n && memcmp(v, want, n) == 0) {
                m++;
                if (m >= from && m <= to)
                    continue;
            }
            keel__kvl_build_add(&b, v, n);
        }
        if (nd == z)
            break;
    }
    if (b.oom) {
        keel__kvl_build_abort(&b);
        return KEEL_ENOMEM;
    }
    keel__kvl_splice(k.l, a, z, &b);
    keel__kvl_changed(c, &k);
    kv->revision++;
    r_int(c->reply, (int64_t)found);
    return 0;
}

int keel__kvl_cmd_ltrim(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t a, b;
    if (parse_i64(c, 2, &a) != 0 || parse_i64(c, 3, &b) != 0)
        return REPLIED;
    wkey_t k;
    if (keel__kvl_write_list(c, c->argv[1], c->lens[1], &k) != 0)
        return REPLIED;
    if (k.e == NULL) {
        r_ok(c->reply);
        return 0;
    }
    uint64_t s, e, ldrop, rdrop;
    if (!clamp(a, b, k.l->len, &s, &e)) {
        ldrop = k.l->len;
        rdrop = 0;
    } else {
        ldrop = s;
        rdrop = k.l->len - 1 - e;
    }
    /* nothing to drop is still a change, as Redis signals the key modified (WATCH) */
    while (ldrop && k.l->first->count <= ldrop) {
        ldrop -= k.l->first->count;
        keel__kvl_drop_node(k.l, k.l->first);
    }
    while (ldrop--)
        keel__kvl_list_drop(k.l, HEAD);
    while (rdrop && k.l->last->count <= rdrop) {
        rdrop -= k.l->last->count;
        keel__kvl_drop_node(k.l, k.l->last);
    }
    while (rdrop--)
        keel__kvl_list_drop(k.l, TAIL);
    keel__kvl_changed(c, &k);
    kv->revision++;
    r_ok(c->reply);
    return 0;
}

/* ---- LPOS -------------------------------------------------------------------------------- */

typedef struct lpos_args {
    int64_t rank, count, maxlen;
} lpos_args_t;

static int lpos_parse(const call_t *c, lpos_args_t *a)
{
    a->rank = 1;
    a->count = -1;
    a->maxlen = 0;
    for (size_t j = 3; j < c->argc; j++) {
        size_t more = c->argc - 1 - j;
        if (keel__kvc_arg_is(c, j, "RANK") && more) {
            j++;
            if (parse_i64(c, j, &a->rank) != 0)
                return REPLIED;
            if (a->rank == 0)
                return r_err(c->reply,
                             "ERR RANK can't be zero: use 1 to start from the first match, 2 from "
                             "the second ... or use negative to start from the end of the list");
        } else if (keel__kvc_arg_is(c, j, "COUNT") && more) {
            j++;
            if (parse_positive(c, j, "ERR COUNT can't be negative", &a->count) != 0)
                return REPLIED;
        } else if (keel__kvc_arg_is(c, j, "MAXLEN") && more) {
            j++;
            if (parse_positive(c, j, "ERR MAXLEN can't be negative", &a->maxlen) != 0)
                return REPLIED;
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

int keel__kvl_lpos_syntax(const call_t *c)
{
    lpos_args_t a;
    return lpos_parse(c, &a);
}

int keel__kvl_cmd_lpos(const call_t *c)
{
    lpos_args_t a;
    if (lpos_parse(c, &a) != 0)
        return REPLIED;
    int rev = a.rank < 0;
    /* Redis 7.0 negates LONG_MIN into itself, which every match count passes: rank 1 */
    uint64_t rank = a.rank == INT64_MIN ? 1 : rev ? (uint64_t)(-a.rank) : (uint64_t)a.rank;
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL) {
        if (a.count != -1)
            r_array(c->reply, 0);
        else
            r_nil(c->reply);
        return 0;
    }
    if (e->type != KEEL__KV_TYPE_LIST)
        return r_err(c->reply, ERR_WRONGTYPE);
    const klist_t *l = keel__kv_obj(e);
    const uint8_t *want = c->argv[2];
    size_t want_n = c->lens[2];
    /* walk twice when COUNT is given: the array's length first */
    for (int pass = a.count == -1 ? 1 : 0; pass < 2; pass++) {
        pos_t p = rev ? keel__kvl_back(l) : keel__kvl_front(l);
        const uint8_t *v;
        size_t n;
        uint64_t idx = 0, matched = 0, emitted = 0;
        uint64_t want_count = a.count <= 0 ? UINT64_MAX : (uint64_t)a.count;
        while ((a.maxlen == 0 || idx < (uint64_t)a.maxlen) &&
               (rev ? keel__kvl_next_bwd(&p, &v, &n) : keel__kvl_next_fwd(&p, &v, &n))) {
            if (n == want_n && memcmp(v, want, n) == 0) {
                matched++;
                if (matched >= rank) {
                    uint64_t at = rev ? l->len - 1 - idx : idx;
                    if (a.count == -1) {
                        r_int(c->reply, (int64_t)at);
                        return 0;
                    }
                    if (pass == 1)
                        r_int(c->reply, (int64_t)at);
                    if (++emitted == want_count)
                        break;
                }
            }
            idx++;
        }
        if (a.count == -1) {
            r_nil(c->reply);
            return 0;
        }
        if (pass == 0)
            r_array(c->reply, (size_t)emitted);
    }
    return 0;
}
