/* kv_keys.c - the keyspace commands of Redis 7.0: RENAME, RENAMENX, COPY, TOUCH, KEYS,
   RANDOMKEY, EXPIRETIME, PEXPIRETIME and OBJECT (UNLINK is DEL's handler). */
#include "base/glob.h"
#include "core/kv_cmd_int.h"
#include "core/kv_coll.h"
#include "core/kv_stream_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Replies and texts as redis-server 7.0.15 gives them (tests/system/test_redis_diff.py).
 * Every type moves and copies: a string's bytes, or a typed value's object (moved by its
 * pointer; copied through the type's own snapshot writer and loader, so a copy is exactly
 * what a replica restored from a snapshot would hold).
 */

/* ---- copying a value -------------------------------------------------------------------- */

typedef struct grow {
    uint8_t *p;
    size_t n, cap;
} grow_t;

static int grow_sink(void *data, const uint8_t *p, size_t n)
{
    grow_t *g = data;
    if (n > g->cap - g->n) {
        size_t cap = g->cap ? g->cap : 256;
        while (cap - g->n < n)
            cap *= 2;
        uint8_t *q = realloc(g->p, cap);
        if (q == NULL)
            return KEEL_ENOMEM;
        g->p = q;
        g->cap = cap;
    }
    memcpy(g->p + g->n, p, n);
    g->n += n;
    return 0;
}

/* A deep copy of a typed value's object: 0 and *out (owned), or KEEL_ENOMEM. */
static int obj_dup(int type, const void *obj, void **out)
{
    const keel__kv_type_t *t = keel__kv_type(type);
    grow_t g = {NULL, 0, 0};
    int rc = t->snap_write(obj, grow_sink, &g);
    if (rc == 0)
        rc = t->snap_load(g.p, g.n, out);
    free(g.p);
    assert(rc == 0 || rc == KEEL_ENOMEM); /* its own writer's bytes always load */
    return rc;
}

/*
 * Makes argv[2] hold src's value, deadline and lease at revision rev (the key at *dlink,
 * live or `ddead`, replaced; d: it, when live), moving the value when `move` (src is then
 * deleted) or copying it. Everything is allocated before anything is linked: 0, or
 * KEEL_ENOMEM with nothing changed. Records the put of argv[2] (and the deletion of
 * argv[1] when moving) in the change history, both at rev.
 */
static int put_from(const call_t *c, keel__kv_entry_t *src, keel__kv_entry_t **dlink,
                    const keel__kv_entry_t *d, int ddead, uint64_t hd, int move)
{
    keel_kv_t *kv = c->w;
    uint64_t rev = kv->revision + 1;
    const uint8_t *dkey = c->argv[2];
    size_t dlen = c->lens[2];
    if (keel__kv_expire(src) && keel__kv_heap_reserve(kv, 1) != 0)
        return KEEL_ENOMEM;
    uint64_t lease_id = keel__kv_lease_id(src);
    keel__kv_xrec_t *r = lease_id ? keel__kv_xrec_new() : NULL;
    if (lease_id && r == NULL)
        return KEEL_ENOMEM;
    keel__kv_entry_t *n = NULL;
    size_t obj_bytes = 0;
    if (src->type == KEEL__KV_TYPE_STRING || keel__kv_inline(src)) { /* the entry's own bytes */
        n = keel__kv_entry_new(dkey, dlen, hd, keel__kv_cval(src), src->val_len, src->val_len);
        if (n)
            n->type = src->type;
    } else if (move) {
        n = keel__kv_entry_new_obj(dkey, dlen, hd, src->type, keel__kv_obj(src));
    } else {
        void *obj = NULL;
        if (obj_dup(src->type, keel__kv_obj(src), &obj) != 0)
            return KEEL_ENOMEM;
        n = keel__kv_entry_new_obj(dkey, dlen, hd, src->type, obj);
        if (n == NULL)
            keel__kv_type(src->type)->free(obj);
        else
            obj_bytes = keel__kv_type(src->type)->bytes(obj);
    }
    if (n == NULL) {
        free(r);
        return KEEL_ENOMEM;
    }
    n->create_revision = d ? d->create_revision : rev;
    keel__kvc_set_version(kv, n, rev);
    if (d || ddead)
        keel__kv_replace(kv, dlink, n);
    else
        keel__kv_insert(kv, n);
    kv->bytes += obj_bytes;
    keel__kv_set_expire(kv, n, keel__kv_expire(src));
    if (lease_id)
        keel__kv_attach(n, keel__kv_lease_find(kv, lease_id, NULL), lease_id, r);
    if (move) {
        /* the object now belongs to n: src goes as a string, its object's bytes stay
           counted once (n's insert counted only its pointer) */
        keel__kv_entry_t **slink = NULL;
        keel__kv_entry_t *s = keel__kv_find(kv, c->argv[1], c->lens[1],
                                            keel__kv_hash(kv, c->argv[1], c->lens[1]), &slink);
        assert(s == src);
        s->type = KEEL__KV_TYPE_STRING;
        keel__kv_unlink(kv, slink);
    }
    kv->revision = rev;
    if (n->type == KEEL__KV_TYPE_SET)
        keel__ks_note(c, dkey, dlen); /* a copied table of a few integers goes inline */
    if (n->type == KEEL__KV_TYPE_STREAM)
        keel__xs_reindex(kv, dkey, dlen);
    return 0;
}

static int same_key(const call_t *c)
{
    return c->lens[1] == c->lens[2] && memcmp(c->argv[1], c->argv[2], c->lens[1]) == 0;
}

/* ---- RENAME, RENAMENX ------------------------------------------------------------------ */

/* The value, deadline and lease move; a live destination is replaced (RENAME) or kept
   (RENAMENX: `:0`). A key renamed to itself: +OK, or `:0` for RENAMENX. */
static int rename_key(const call_t *c, int nx)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **slink = NULL, **dlink = NULL;
    int sdead, ddead, rc;
    uint64_t hs = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *s = keel__kvc_wfind(c, c->argv[1], c->lens[1], hs, &slink, &sdead);
    if (s == NULL)
        return keel__kvc_done(r_err(c->reply, "ERR no such key"));
    if (same_key(c)) {
        if (nx)
            r_int(c->reply, 0);
        else
            r_ok(c->reply);
        return 0;
    }
    if ((rc = keel__kvc_check_sizes(c, c->lens[2], 0)) != 0)
        return keel__kvc_done(rc);
    uint64_t hd = keel__kv_hash(kv, c->argv[2], c->lens[2]);
    keel__kv_entry_t *d = keel__kvc_wfind(c, c->argv[2], c->lens[2], hd, &dlink, &ddead);
    if (d && nx) {
        r_int(c->reply, 0);
        return 0;
    }
    if ((rc = put_from(c, s, dlink, d, ddead, hd, 1)) != 0)
        return rc;
    if (nx)
        r_int(c->reply, 1);
    else
        r_ok(c->reply);
    return 0;
}

int keel__kvc_cmd_rename(const call_t *c)
{
    return rename_key(c, 0);
}

int keel__kvc_cmd_renamenx(const call_t *c)
{
    return rename_key(c, 1);
}

/* ---- COPY ------------------------------------------------------------------------------ */

/*
 * COPY source destination [DB n] [REPLACE]: options as Redis parses them (any order,
 * repeats fine, DB needs an integer). keel has database 0 only: another DB is out of
 * range. All of it depends on argv alone, so it is refused before proposing.
 */
static int copy_parse(const call_t *c, int *replace)
{
    *replace = 0;
    int64_t db = 0;
    for (size_t i = 3; i < c->argc; i++) {
        if (keel__kvc_arg_is(c, i, "REPLACE")) {
            *replace = 1;
        } else if (keel__kvc_arg_is(c, i, "DB") && i + 1 < c->argc) {
            i++;
            if (keel_parse_i64(c->argv[i], c->lens[i], &db) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            if (db < INT32_MIN || db > INT32_MAX)
                return r_err(c->reply, "ERR value is out of range, value must between "
                                       "-2147483648 and 2147483647");
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    if (db != 0)
        return r_err(c->reply, "ERR DB index is out of range");
    if (same_key(c))
        return r_err(c->reply, "ERR source and destination objects are the same");
    return 0;
}

int keel__kvc_copy_syntax(const call_t *c)
{
    int replace;
    return copy_parse(c, &replace);
}

int keel__kvc_cmd_copy(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int replace = 0;
    int rc = copy_parse(c, &replace);
    assert(rc == 0); /* keel__kvc_copy_syntax ran */
    keel__kv_entry_t **slink = NULL, **dlink = NULL;
    int sdead, ddead;
    uint64_t hs = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *s = keel__kvc_wfind(c, c->argv[1], c->lens[1], hs, &slink, &sdead);
    if (s == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    uint64_t hd = keel__kv_hash(kv, c->argv[2], c->lens[2]);
    keel__kv_entry_t *d = keel__kvc_wfind(c, c->argv[2], c->lens[2], hd, &dlink, &ddead);
    if (d && !replace) {
        r_int(c->reply, 0);
        return 0;
    }
    if ((rc = keel__kvc_check_sizes(c, c->lens[2], 0)) != 0 ||
        (!d && !ddead && (rc = keel__kvc_check_room(c, 1)) != 0))
        return keel__kvc_done(rc);
    if ((rc = put_from(c, s, dlink, d, ddead, hd, 0)) != 0)
        return rc;
    r_int(c->reply, 1);
    return 0;
}

/* ---- KEYS, RANDOMKEY ------------------------------------------------------------------- */

typedef struct keys_ctx {
    const call_t *c;
    const uint8_t *pat; /* NULL: every key */
    size_t pat_len;
    size_t n;
} keys_ctx_t;

static int keys_one(void *data, const keel__kv_entry_t *e)
{
    keys_ctx_t *k = data;
    if (!keel__kv_alive(k->c->kv, e, k->c->now) ||
        (k->pat && !keel_glob_match(k->pat, k->pat_len, keel__kv_key(e), e->key_len)))
        return 0;
    r_bulk(k->c->reply, keel__kv_key(e), e->key_len);
    k->n++;
    return k->c->reply->failed; /* stop once the reply buffer refused */
}

/*
 * KEYS pattern: every live key matching the glob, in table order (Redis's order is its own
 * table's: unspecified). The whole keyspace in one reply, as in Redis: a reply over the
 * buffer's limit is the usual "does not fit" failure; SCAN is the bounded way. Keys are
 * written first and the array header is rotated in front of them, as SCAN does.
 */
int keel__kvc_cmd_keys(const call_t *c)
{
    keys_ctx_t k = {c, c->argv[1], c->lens[1], 0};
    if (k.pat_len == 1 && k.pat[0] == '*')
        k.pat = NULL;
    keel_buf_t *b = c->reply->b;
    size_t mark = keel_buf_unread(b);
    keel__kv_each(c->kv, keys_one, &k);
    size_t keys = keel_buf_unread(b) - mark;
    r_array(c->reply, k.n);
    if (c->reply->failed)
        return 0;
    uint8_t hdr[KEEL_RESP_HEADER_BYTES_MAX];
    size_t hn = keel_buf_unread(b) - mark - keys;
    assert(hn <= sizeof(hdr));
    uint8_t *start = b->data + b->rpos + mark;
    memcpy(hdr, start + keys, hn);
    memmove(start + hn, start, keys);
    memcpy(start, hdr, hn);
    return 0;
}

typedef struct pick {
    const keel_kv_t *kv;
    uint64_t now, r;
    const keel__kv_entry_t *e;
    size_t seen;
} pick_t;

/* Reservoir sampling over one bucket's live keys: each is kept with probability 1/seen. */
static void pick_one(void *data, const keel__kv_entry_t *e)
{
    pick_t *p = data;
    if (!keel__kv_alive(p->kv, e, p->now))
        return;
    p->seen++;
    p->r = p->r * 6364136223846793005ull + 1442695040888963407ull;
    if ((p->r >> 33) % p->seen == 0)
        p->e = e;
}

/*
 * RANDOMKEY: a live key, or nil. A read changes nothing and the core has no random source,
 * so the choice is a function of the state and the reader's clock: the bucket under a
 * cursor drawn from now (a mixed hash), then the following buckets until one holds a live
 * key, wrapping once. Not uniform (keys sharing a bucket share its chance), as Redis's is
 * not either.
 */
int keel__kvc_cmd_randomkey(const call_t *c)
{
    uint64_t x = c->now + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    pick_t p = {c->kv, c->now, x, NULL, 0};
    uint64_t cursor = x;
    int wrapped = 0;
    while (c->kv->count > 0) {
        cursor = keel__kv_scan(c->kv, cursor, pick_one, &p);
        if (p.e != NULL)
            break;
        if (cursor == 0 && wrapped++)
            break;
    }
    if (p.e)
        r_bulk(c->reply, keel__kv_key(p.e), p.e->key_len);
    else
        r_nil(c->reply);
    return 0;
}

/* ---- TOUCH, EXPIRETIME, PEXPIRETIME ---------------------------------------------------- */

/* EXPIRETIME / PEXPIRETIME: -2 absent, -1 no deadline, else the deadline (s rounded). */
static int expiretime(const call_t *c, int ms)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    if (e == NULL)
        r_int(c->reply, -2);
    else if (keel__kv_expire(e) == 0)
        r_int(c->reply, -1);
    else
        r_int(c->reply,
              ms ? (int64_t)keel__kv_expire(e) : (int64_t)((keel__kv_expire(e) + 500) / 1000));
    return 0;
}

int keel__kvc_cmd_expiretime(const call_t *c)
{
    return expiretime(c, 0);
}

int keel__kvc_cmd_pexpiretime(const call_t *c)
{
    return expiretime(c, 1);
}

/* ---- OBJECT ------------------------------------------------------------------------------ */

/*
 * OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT key, HELP. keel keeps no access times or
 * counts and shares no values: IDLETIME is 0, REFCOUNT 1 (INT_MAX for the integers
 * 0..9999, which Redis shares), FREQ says (as Redis does without an LFU policy) that it
 * is not tracked. ENCODING names what Redis would pick for
 * the value as it is now: "int" for a strict integer, "embstr" up to 44 bytes, else "raw"
 * (Redis also keeps "raw" after APPEND or SETRANGE); a stream is "stream".
 */
static const char *const OBJECT_SUBS[] = {"ENCODING", "FREQ", "IDLETIME", "REFCOUNT"};

int keel__kvc_object_syntax(const call_t *c)
{
    if (keel__kvc_arg_is(c, 1, "HELP"))
        return c->argc == 2
                   ? 0
                   : r_err(c->reply, "ERR wrong number of arguments for 'object|help' command");
    for (size_t i = 0; i < sizeof(OBJECT_SUBS) / sizeof(OBJECT_SUBS[0]); i++) {
        if (keel__kvc_arg_is(c, 1, OBJECT_SUBS[i])) {
            if (c->argc == 3)
                return 0;
            char text[96], lower[16];
            size_t k = 0;
            for (; OBJECT_SUBS[i][k]; k++)
                lower[k] = (char)(OBJECT_SUBS[i][k] | 0x20);
            lower[k] = '\0';
            snprintf(text, sizeof(text), "ERR wrong number of arguments for 'object|%s' command",
                     lower);
            return r_err(c->reply, text);
        }
    }
    return r_err_arg(c->reply, "ERR unknown subcommand '", c->argv[1], c->lens[1],
                     "'. Try OBJECT HELP.");
}

static const char *encoding(const keel__kv_entry_t *e)
{
    int64_t v;
    if (keel__kv_inline(e))
        return "intset"; /* at most KEEL__KS_INLINE_MAX integers */
    if (e->type == KEEL__KV_TYPE_HASH || e->type == KEEL__KV_TYPE_SET)
        return keel__kc_encoding(e->type, keel__kv_obj(e));
    if (e->type == KEEL__KV_TYPE_LIST)
        return "quicklist"; /* Redis 7.0's only list encoding */
    if (e->type != KEEL__KV_TYPE_STRING) {
        const keel__kv_type_t *t = keel__kv_type(e->type);
        return t->encoding ? t->encoding(keel__kv_obj(e)) : t->name;
    }
    if (keel_parse_i64(keel__kv_cval(e), e->val_len, &v) == 0)
        return "int";
    return e->val_len <= 44 ? "embstr" : "raw";
}

/* Redis shares the objects of the integers 0..9999 (REFCOUNT shows INT_MAX for them). */
static int shared_int(const keel__kv_entry_t *e)
{
    int64_t v;
    return e->type == KEEL__KV_TYPE_STRING &&
           keel_parse_i64(keel__kv_cval(e), e->val_len, &v) == 0 && v >= 0 && v < 10000;
}

int keel__kvc_cmd_object(const call_t *c)
{
    static const char *const help[] = {
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    The internal representation Redis would use for the value of <key>.",
        "FREQ <key>",
        "    Access frequency: not tracked by keel (an error, as Redis without LFU).",
        "IDLETIME <key>",
        "    Seconds since the last access: keel does not track it and answers 0.",
        "REFCOUNT <key>",
        "    References to the value of <key>: 1 in keel (Redis's shared integers: INT_MAX).",
        "HELP",
        "    Prints this help.",
    };
    if (keel__kvc_arg_is(c, 1, "HELP")) {
        r_array(c->reply, sizeof(help) / sizeof(help[0]));
        for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
            if (!c->reply->failed)
                track(c->reply, keel_resp_write_simple(c->reply->b, help[i]));
        return 0;
    }
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 2);
    if (e == NULL) {
        r_nil(c->reply);
    } else if (keel__kvc_arg_is(c, 1, "ENCODING")) {
        const char *name = encoding(e);
        r_bulk(c->reply, (const uint8_t *)name, strlen(name));
    } else if (keel__kvc_arg_is(c, 1, "FREQ")) {
        r_err(c->reply, "ERR An LFU maxmemory policy is not selected, access frequency not "
                        "tracked. Please note that when switching between policies at runtime "
                        "LRU and LFU data will take some time to adjust.");
    } else if (keel__kvc_arg_is(c, 1, "IDLETIME")) {
        r_int(c->reply, 0);
    } else {
        r_int(c->reply, shared_int(e) ? 2147483647 : 1);
    }
    return 0;
}
