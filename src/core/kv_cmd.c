/* kv_cmd.c - KV commands: one table (name, arity, flags, syntax, handler), RESP replies, glob. */
#include "core/kv_int.h"
#include "proto/resp.h"

#include "base/num.h"

#include <stdio.h>
#include <stdlib.h>

/*
 * Every command runs the same way (keel__kv_exec): look up, arity, argc
 * limit, syntax (argv only, shared with keel_kv_check so the server can
 * refuse before proposing), handler. A handler either writes a command error
 * and changes nothing, or succeeds whole, or fails with KEEL_ENOMEM having
 * changed nothing (it allocates everything before it links anything: see
 * cmd_mset). Reply writes cannot make a handler fail: they go through a
 * reply_t that records the buffer's failure for keel__kv_exec to judge.
 *
 * Texts follow redis-server 7.0 (src/t_string.c, src/db.c, src/server.c),
 * checked against a running redis-server 7.0.15.
 */

#define REPLIED 1       /* a syntax function wrote an error reply */
#define CMD_NO_NEST 4u  /* a command flag: may not run inside KEEL.FENCED or a transaction */
#define CMD_INTERNAL 8u /* housekeeping the leader proposes with its own clock, never a client */

typedef struct call {
    keel_kv_t *w;        /* NULL for reads */
    const keel_kv_t *kv; /* same object as w for writes */
    uint64_t now;        /* keys with a deadline <= now are absent */
    size_t argc;
    const uint8_t *const *argv;
    const size_t *lens;
    struct reply *reply;
    const char *cmd_lname;  /* the command's lower-case name, once looked up */
    const struct cmd *self; /* the command, once looked up */
} call_t;

typedef int (*cmd_fn)(const call_t *c);

typedef struct cmd {
    const char *name;  /* upper case, as matched */
    const char *lname; /* lower case, as Redis names it in errors */
    int arity;         /* Redis arity: argc == n, or argc >= -n when negative */
    unsigned flags;
    cmd_fn syntax; /* may be NULL; 0, REPLIED or a negative error */
    cmd_fn fn;
    signed char first_key, last_key, key_step; /* as COMMAND shows them; 0s: no key */
    const char *summary;
} cmd_t;

/* ---- RESP writers ---------------------------------------------------------- */

/*
 * Replies go through a reply_t that remembers the first failure of the
 * caller's buffer (its bytes_max, or memory) instead of returning it: a
 * committed write must change the state on every node whatever room the
 * proposer's reply buffer has, so no handler stops because of its reply.
 * keel__kv_exec decides what a failed reply becomes. After a failure nothing
 * more is written (the partial reply is dropped anyway). Every reply is written
 * by proto/resp's writers.
 */
typedef struct reply {
    keel_buf_t *b;
    size_t mark; /* unread bytes before this command's reply */
    int failed;  /* first KEEL_ETOOBIG / KEEL_ENOMEM from b, or 0 */
} reply_t;

static void track(reply_t *o, int rc)
{
    if (rc != 0 && o->failed == 0)
        o->failed = rc;
}

static void r_int(reply_t *o, int64_t v)
{
    if (!o->failed)
        track(o, keel_resp_write_int(o->b, v));
}

static void r_array(reply_t *o, size_t n)
{
    if (!o->failed)
        track(o, keel_resp_write_array_header(o->b, n));
}

static void r_bulk(reply_t *o, const uint8_t *p, size_t n)
{
    if (!o->failed)
        track(o, keel_resp_write_bulk(o->b, p, n));
}

static void r_nil(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_nil(o->b));
}

static void r_nil_array(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_nil_array(o->b));
}

static void r_ok(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_simple(o->b, "OK"));
}

/* An error reply from a fixed text; REPLIED, so callers stop the command. */
static int r_err(reply_t *o, const char *text)
{
    if (!o->failed)
        track(o, keel_resp_write_error(o->b, text));
    return REPLIED;
}

/* An error naming a client's argument (at most 128 bytes of it, as Redis shows them). */
static int r_err_arg(reply_t *o, const char *before, const uint8_t *p, size_t n, const char *after)
{
    if (!o->failed)
        track(o, keel_resp_write_errorf(o->b, "%s%.*s%s", before, (int)(n < 128 ? n : 128),
                                        (const char *)p, after));
    return REPLIED;
}

/* The bulk reply of an optional value: $-1 when e is NULL. */
static void r_value(reply_t *o, const keel__kv_entry_t *e)
{
    if (e)
        r_bulk(o, keel__kv_cval(e), e->val_len);
    else
        r_nil(o);
}

static const char ERR_SYNTAX[] = "ERR syntax error";
static const char ERR_NOT_INT[] = "ERR value is not an integer or out of range";
static const char ERR_OVERFLOW[] = "ERR increment or decrement would overflow";
static const char ERR_VALUE_SIZE[] = "ERR string exceeds maximum allowed size";
static const char ERR_KEY_SIZE[] = "ERR key exceeds maximum allowed size";
static const char ERR_KEYS_MAX[] =
    "OOM command not allowed when the number of keys would exceed 'keys_max'";

/* ---- argument helpers ------------------------------------------------------ */

static int upper(int c)
{
    return c >= 'a' && c <= 'z' ? c - 32 : c;
}

/* Case-insensitive equality of an argument with an upper-case word. */
static int arg_is(const call_t *c, size_t i, const char *word)
{
    size_t n = c->lens[i];
    const uint8_t *p = c->argv[i];
    for (size_t k = 0; k < n; k++)
        if (word[k] == '\0' || upper(p[k]) != word[k])
            return 0;
    return word[n] == '\0';
}

/* Limits for a command that may create key i with a value of val_len bytes. */
static int check_sizes(const call_t *c, size_t key_len, size_t val_len)
{
    if (key_len > c->kv->cfg.key_bytes_max)
        return r_err(c->reply, ERR_KEY_SIZE);
    if (val_len > c->kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    return 0;
}

static int check_room(const call_t *c, size_t new_keys)
{
    if (new_keys > c->kv->cfg.keys_max - c->kv->count)
        return r_err(c->reply, ERR_KEYS_MAX);
    return 0;
}

/* Replied errors are a success of apply: map REPLIED to 0. */
static int done(int rc)
{
    return rc == REPLIED ? 0 : rc;
}

/*
 * A write's view of a key: the live entry, or NULL. An entry past its
 * deadline is absent to writes too; it stays linked (at *link, with *dead
 * set) until the command replaces it (create) or a sweep removes it, so a
 * command that then fails with KEEL_ENOMEM has changed nothing.
 */
static keel__kv_entry_t *wfind(const call_t *c, const uint8_t *key, size_t key_len, uint64_t h,
                               keel__kv_entry_t ***link, int *dead)
{
    keel__kv_entry_t *e = keel__kv_find(c->w, key, key_len, h, link);
    *dead = e != NULL && !keel__kv_alive(c->w, e, c->now);
    return *dead ? NULL : e;
}

/*
 * Gives e its new version rev (the revision this command is making) and
 * records the put in the change history: every change of a live key's value
 * or deadline goes through here, as every deletion goes through
 * keel__kv_unlink, so the history sees each change exactly once.
 */
static void set_version(keel_kv_t *kv, keel__kv_entry_t *e, uint64_t rev)
{
    e->version = rev;
    keel__kv_hist_record(kv, rev, KEEL_KV_CHANGE_PUT, e);
}

/*
 * Creates key -> val at revision rev, in place of the expired entry at *link
 * if `dead`. 0 or KEEL_ENOMEM (nothing changed).
 */
static int create(keel_kv_t *kv, keel__kv_entry_t **link, int dead, const uint8_t *key,
                  size_t key_len, uint64_t h, const uint8_t *val, size_t val_len, uint64_t rev,
                  keel__kv_entry_t **made)
{
    keel__kv_entry_t *e = keel__kv_entry_new(key, key_len, h, val, val_len, val_len);
    if (e == NULL)
        return KEEL_ENOMEM;
    e->create_revision = rev;
    set_version(kv, e, rev);
    if (dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    if (made)
        *made = e;
    return 0;
}

/* Overwrites the value of the entry at *link. 0 or KEEL_ENOMEM (nothing changed). */
static int overwrite(keel_kv_t *kv, keel__kv_entry_t **link, const uint8_t *val, size_t val_len,
                     uint64_t rev)
{
    int rc = keel__kv_reserve_value(kv, link, val_len, 0);
    if (rc != 0)
        return rc;
    keel__kv_entry_t *e = *link;
    if (val_len)
        memcpy(keel__kv_val(e), val, val_len);
    kv->bytes = kv->bytes - e->val_len + val_len;
    e->val_len = (uint32_t)val_len;
    set_version(kv, e, rev);
    return 0;
}

/* ---- SET and GETSET --------------------------------------------------------- */

enum {
    SET_NX = 1,
    SET_XX = 2,
    SET_GET = 4,
    SET_KEEPTTL = 8,
    SET_EX = 16,
    SET_PX = 32,
    SET_EXAT = 64,
    SET_PXAT = 128
};
#define SET_EXPIRE (SET_EX | SET_PX | SET_EXAT | SET_PXAT)

/*
 * SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL], parsed
 * as Redis's parseExtendedStringArgumentsOrReply does (a repeated option is
 * fine, conflicting ones are a syntax error, the last expire value counts).
 * *when gets the expire argument in ms (EX/EXAT times 1000), relative for
 * EX/PX, absolute for EXAT/PXAT.
 */
static int set_parse(const call_t *c, unsigned *flags, int64_t *when)
{
    static const struct {
        const char *word;
        unsigned flag;
    } expire[] = {{"EX", SET_EX}, {"PX", SET_PX}, {"EXAT", SET_EXAT}, {"PXAT", SET_PXAT}};
    unsigned f = 0;
    size_t expire_arg = 0;
    for (size_t i = 3; i < c->argc; i++) {
        int more = i + 1 < c->argc, ok = 0;
        if (arg_is(c, i, "NX") && !(f & SET_XX)) {
            f |= SET_NX, ok = 1;
        } else if (arg_is(c, i, "XX") && !(f & SET_NX)) {
            f |= SET_XX, ok = 1;
        } else if (arg_is(c, i, "GET")) {
            f |= SET_GET, ok = 1;
        } else if (arg_is(c, i, "KEEPTTL") && !(f & SET_EXPIRE)) {
            f |= SET_KEEPTTL, ok = 1;
        } else {
            for (size_t k = 0; k < 4 && !ok; k++) {
                unsigned other = SET_EXPIRE & ~expire[k].flag;
                if (arg_is(c, i, expire[k].word) && !(f & (other | SET_KEEPTTL)) && more) {
                    f |= expire[k].flag, ok = 1;
                    expire_arg = ++i;
                }
            }
        }
        if (!ok)
            return r_err(c->reply, ERR_SYNTAX);
    }
    if (f & SET_EXPIRE) {
        int64_t t;
        if (keel_parse_i64(c->argv[expire_arg], c->lens[expire_arg], &t) != 0)
            return r_err(c->reply, ERR_NOT_INT);
        if (t <= 0 || ((f & (SET_EX | SET_EXAT)) && t > INT64_MAX / 1000))
            return r_err(c->reply, "ERR invalid expire time in 'set' command");
        *when = f & (SET_EX | SET_EXAT) ? t * 1000 : t;
    }
    *flags = f;
    return 0;
}

static int set_syntax(const call_t *c)
{
    unsigned f;
    int64_t when;
    return set_parse(c, &f, &when);
}

/*
 * Writes argv[1] -> argv[val_arg] as SET does (e, link, dead from wfind): the
 * deadline becomes `expire_ms` (0: none), or stays with `keep_ttl`. The
 * caller has checked sizes and room and replied. 0 or KEEL_ENOMEM (nothing
 * changed).
 */
static int put_value(const call_t *c, size_t val_arg, keel__kv_entry_t **link, keel__kv_entry_t *e,
                     int dead, uint64_t h, uint64_t expire_ms, int keep_ttl)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1], *val = c->argv[val_arg];
    size_t key_len = c->lens[1], val_len = c->lens[val_arg];
    uint64_t rev = kv->revision + 1;
    keel__kv_entry_t *made = NULL;
    int rc = expire_ms ? keel__kv_heap_reserve(kv, 1) : 0;
    if (rc == 0 && e) {
        rc = overwrite(kv, link, val, val_len, rev);
        made = *link;
    } else if (rc == 0) {
        rc = create(kv, link, dead, key, key_len, h, val, val_len, rev, &made);
    }
    if (rc != 0)
        return rc;
    if (!keep_ttl) {
        keel__kv_set_expire(kv, made, expire_ms);
        keel__kv_detach(made); /* a write without the lease leaves it (as in etcd) */
    }
    kv->revision = rev;
    return 0;
}

/* The common body of SET and GETSET; `when` as set_parse gives it. */
static int set_value(const call_t *c, unsigned f, int64_t when)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    int rc = check_sizes(c, key_len, c->lens[2]);
    if (rc != 0)
        return done(rc);
    uint64_t expire_ms = 0;
    if (f & (SET_EX | SET_PX)) {
        if ((uint64_t)when > (uint64_t)INT64_MAX - c->now)
            return done(r_err(c->reply, "ERR invalid expire time in 'set' command"));
        expire_ms = c->now + (uint64_t)when;
    } else if (f & (SET_EXAT | SET_PXAT)) {
        expire_ms = (uint64_t)when;
    }
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = wfind(c, key, key_len, h, &link, &dead);
    int skip = (f & SET_NX && e) || (f & SET_XX && !e);
    if (!e && !dead && !skip && (rc = check_room(c, 1)) != 0)
        return done(rc);
    if (f & SET_GET)
        r_value(c->reply, e);
    else if (skip)
        r_nil(c->reply);
    else
        r_ok(c->reply);
    if (skip)
        return 0;
    return put_value(c, 2, link, e, dead, h, expire_ms, (f & SET_KEEPTTL) != 0);
}

static int cmd_set(const call_t *c)
{
    unsigned f = 0;
    int64_t when = 0;
    int rc = set_parse(c, &f, &when);
    return rc != 0 ? done(rc) : set_value(c, f, when);
}

static int cmd_getset(const call_t *c)
{
    return set_value(c, SET_GET, 0);
}

/* ---- MSET, DEL ---------------------------------------------------------------- */

static int mset_syntax(const call_t *c)
{
    if (c->argc % 2 == 0)
        return r_err(c->reply, "ERR wrong number of arguments for 'mset' command");
    return 0;
}

/*
 * All new entries are allocated before any is linked, so an MSET either
 * happens whole or (ENOMEM) not at all. A repeated key is written in argument
 * order, so the last value wins, as in Redis. keys_max counts every absent
 * key, a repeated absent key twice (conservative, and deterministic).
 */
static int cmd_mset(const call_t *c)
{
    keel_kv_t *kv = c->w;
    size_t pairs = (c->argc - 1) / 2, absent = 0;
    int rc = 0;
    for (size_t i = 0; i < pairs; i++) {
        const uint8_t *key = c->argv[1 + 2 * i];
        size_t key_len = c->lens[1 + 2 * i];
        if ((rc = check_sizes(c, key_len, c->lens[2 + 2 * i])) != 0)
            return done(rc);
        absent += keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL) == NULL;
    }
    if ((rc = check_room(c, absent)) != 0)
        return done(rc);
    keel__kv_entry_t **fresh = calloc(pairs, sizeof(*fresh));
    if (fresh == NULL)
        return KEEL_ENOMEM;
    uint64_t rev = kv->revision + 1;
    for (size_t i = 0; i < pairs && rc == 0; i++) {
        const uint8_t *key = c->argv[1 + 2 * i], *val = c->argv[2 + 2 * i];
        size_t key_len = c->lens[1 + 2 * i], val_len = c->lens[2 + 2 * i];
        uint64_t h = keel__kv_hash(kv, key, key_len);
        fresh[i] = keel__kv_entry_new(key, key_len, h, val, val_len, val_len);
        rc = fresh[i] ? 0 : KEEL_ENOMEM;
    }
    if (rc != 0)
        goto err_after_fresh;
    r_ok(c->reply);
    for (size_t i = 0; i < pairs; i++) {
        keel__kv_entry_t *e = fresh[i], **link = NULL;
        keel__kv_entry_t *old = keel__kv_find(kv, keel__kv_key(e), e->key_len, e->hash, &link);
        e->create_revision = old && keel__kv_alive(kv, old, c->now) ? old->create_revision : rev;
        set_version(kv, e, rev);
        if (old)
            keel__kv_replace(kv, link, e);
        else
            keel__kv_insert(kv, e);
    }
    kv->revision = rev;
    free(fresh);
    return 0;
err_after_fresh:
    for (size_t i = 0; i < pairs; i++)
        free(fresh[i]);
    free(fresh);
    return rc;
}

static int cmd_del(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t n = 0, removed = 0;
    for (size_t i = 1; i < c->argc; i++) {
        keel__kv_entry_t **link = NULL;
        uint64_t h = keel__kv_hash(kv, c->argv[i], c->lens[i]);
        keel__kv_entry_t *e = keel__kv_find(kv, c->argv[i], c->lens[i], h, &link);
        if (e != NULL) {
            /* an expired key is not counted, but goes (a change, like a sweep) */
            n += keel__kv_alive(kv, e, c->now);
            keel__kv_unlink(kv, link);
            removed++;
        }
    }
    if (removed > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

/* ---- INCR family, APPEND ------------------------------------------------------ */

static int incrby_syntax(const call_t *c)
{
    int64_t d;
    return keel_parse_i64(c->argv[2], c->lens[2], &d) != 0 ? r_err(c->reply, ERR_NOT_INT) : 0;
}

static int decrby_syntax(const call_t *c)
{
    int64_t d;
    if (keel_parse_i64(c->argv[2], c->lens[2], &d) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    return d == INT64_MIN ? r_err(c->reply, "ERR decrement would overflow") : 0;
}

/* Redis incrDecrCommand: the stored value must parse as an int64. */
static int incr_by(const call_t *c, int64_t delta)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = wfind(c, key, key_len, h, &link, &dead);
    int64_t v = 0;
    int rc;
    if (e && keel_parse_i64(keel__kv_cval(e), e->val_len, &v) != 0)
        return done(r_err(c->reply, ERR_NOT_INT));
    if ((delta < 0 && v < 0 && delta < INT64_MIN - v) ||
        (delta > 0 && v > 0 && delta > INT64_MAX - v))
        return done(r_err(c->reply, ERR_OVERFLOW));
    if (!e && ((rc = check_sizes(c, key_len, 20)) != 0 || (!dead && (rc = check_room(c, 1)) != 0)))
        return done(rc);
    v += delta;
    char text[20];
    size_t n = keel_fmt_i64(text, v);
    r_int(c->reply, v);
    uint64_t rev = kv->revision + 1;
    rc = e ? overwrite(kv, link, (const uint8_t *)text, n, rev)
           : create(kv, link, dead, key, key_len, h, (const uint8_t *)text, n, rev, NULL);
    if (rc == 0)
        kv->revision = rev;
    return rc;
}

static int cmd_incr(const call_t *c)
{
    return incr_by(c, 1);
}

static int cmd_decr(const call_t *c)
{
    return incr_by(c, -1);
}

static int cmd_incrby(const call_t *c)
{
    int64_t d = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &d);
    assert(rc == 0); /* incrby_syntax ran */
    return incr_by(c, d);
}

static int cmd_decrby(const call_t *c)
{
    int64_t d = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &d);
    assert(rc == 0 && d != INT64_MIN); /* decrby_syntax ran */
    return incr_by(c, -d);
}

static int cmd_append(const call_t *c)
{
    keel_kv_t *kv = c->w;
    const uint8_t *key = c->argv[1], *val = c->argv[2];
    size_t key_len = c->lens[1], val_len = c->lens[2];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = wfind(c, key, key_len, h, &link, &dead);
    size_t total = (e ? e->val_len : 0) + val_len;
    int rc = check_sizes(c, key_len, total);
    if (rc == 0 && !e && !dead)
        rc = check_room(c, 1);
    if (rc != 0)
        return done(rc);
    r_int(c->reply, (int64_t)total);
    uint64_t rev = kv->revision + 1;
    if (!e) {
        rc = create(kv, link, dead, key, key_len, h, val, val_len, rev, NULL);
    } else if ((rc = keel__kv_reserve_value(kv, link, total, 1)) == 0) {
        e = *link;
        if (val_len)
            memcpy(keel__kv_val(e) + e->val_len, val, val_len);
        e->val_len = (uint32_t)total;
        set_version(kv, e, rev);
        kv->bytes += val_len;
    }
    if (rc == 0)
        kv->revision = rev;
    return rc;
}

/* ---- reads ------------------------------------------------------------------- */

/* The live entry of key argv[i], or NULL (absent or past its deadline). */
static const keel__kv_entry_t *lookup(const call_t *c, size_t i)
{
    const keel_kv_t *kv = c->kv;
    const keel__kv_entry_t *e =
        keel__kv_find(kv, c->argv[i], c->lens[i], keel__kv_hash(kv, c->argv[i], c->lens[i]), NULL);
    return e && keel__kv_alive(kv, e, c->now) ? e : NULL;
}

static int cmd_get(const call_t *c)
{
    r_value(c->reply, lookup(c, 1));
    return 0;
}

static int cmd_mget(const call_t *c)
{
    r_array(c->reply, c->argc - 1);
    for (size_t i = 1; i < c->argc && !c->reply->failed; i++)
        r_value(c->reply, lookup(c, i));
    return 0;
}

static int cmd_exists(const call_t *c)
{
    int64_t n = 0;
    for (size_t i = 1; i < c->argc; i++)
        n += lookup(c, i) != NULL;
    r_int(c->reply, n);
    return 0;
}

static int cmd_strlen(const call_t *c)
{
    const keel__kv_entry_t *e = lookup(c, 1);
    r_int(c->reply, e ? e->val_len : 0);
    return 0;
}

static int cmd_dbsize(const call_t *c)
{
    r_int(c->reply, (int64_t)c->kv->count);
    return 0;
}

/* KEEL.GETV key -> [value, version], or a null array when absent. */
static int cmd_getv(const call_t *c)
{
    const keel__kv_entry_t *e = lookup(c, 1);
    if (e == NULL) {
        r_nil_array(c->reply);
        return 0;
    }
    r_array(c->reply, 2);
    r_value(c->reply, e);
    r_int(c->reply, (int64_t)e->version);
    return 0;
}

/* ---- expiry ------------------------------------------------------------------ */

/*
 * Deadlines are absolute milliseconds on the leader's clock: relative times
 * are added to the applying entry's time (c->now), so every node stores the
 * same deadline. Texts and rules from Redis 7.0 expire.c.
 */

/* TTL / PTTL: -2 absent, -1 no deadline, else the time left (TTL rounds to seconds). */
static int ttl_reply(const call_t *c, int ms)
{
    const keel__kv_entry_t *e = lookup(c, 1);
    if (e == NULL) {
        r_int(c->reply, -2);
    } else if (e->expire_ms == 0) {
        r_int(c->reply, -1);
    } else {
        uint64_t left = e->expire_ms - c->now; /* > 0: e is live */
        if (left > INT64_MAX)
            left = INT64_MAX;
        r_int(c->reply, ms ? (int64_t)left : (int64_t)((left + 500) / 1000));
    }
    return 0;
}

static int cmd_ttl(const call_t *c)
{
    return ttl_reply(c, 0);
}

static int cmd_pttl(const call_t *c)
{
    return ttl_reply(c, 1);
}

enum { EXP_NX = 1, EXP_XX = 2, EXP_GT = 4, EXP_LT = 8 };

/* Redis parseExtendedExpireArgumentsOrReply, then the integer argument. */
static int expire_parse(const call_t *c, unsigned *flags, int64_t *when)
{
    unsigned f = 0;
    for (size_t i = 3; i < c->argc; i++) {
        if (arg_is(c, i, "NX")) {
            f |= EXP_NX;
        } else if (arg_is(c, i, "XX")) {
            f |= EXP_XX;
        } else if (arg_is(c, i, "GT")) {
            f |= EXP_GT;
        } else if (arg_is(c, i, "LT")) {
            f |= EXP_LT;
        } else {
            return r_err_arg(c->reply, "ERR Unsupported option ", c->argv[i], c->lens[i], "");
        }
    }
    if ((f & EXP_NX) && (f & (EXP_XX | EXP_GT | EXP_LT)))
        return r_err(c->reply,
                     "ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((f & EXP_GT) && (f & EXP_LT))
        return r_err(c->reply, "ERR GT and LT options at the same time are not compatible");
    if (keel_parse_i64(c->argv[2], c->lens[2], when) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    *flags = f;
    return 0;
}

static int expire_syntax(const call_t *c)
{
    unsigned f;
    int64_t when;
    return expire_parse(c, &f, &when);
}

/* The argument in ms as an absolute deadline (Redis expireGenericCommand's checks). */
static int expire_when(const call_t *c, int64_t when, int seconds, int relative, int64_t *out)
{
    char text[96];
    if (seconds) {
        if (when > INT64_MAX / 1000 || when < INT64_MIN / 1000)
            goto invalid;
        when *= 1000;
    }
    int64_t base = relative ? (int64_t)c->now : 0;
    if (when > INT64_MAX - base)
        goto invalid;
    *out = when + base;
    return 0;
invalid:
    snprintf(text, sizeof(text), "ERR invalid expire time in '%s' command", c->cmd_lname);
    return r_err(c->reply, text);
}

/* a <= b for a signed deadline and a stored (unsigned) one. */
static int le_u(int64_t a, uint64_t b)
{
    return a < 0 || (uint64_t)a <= b;
}

/* Removes the entry at *link as a change of its own (revision + 1). */
static void delete_now(keel_kv_t *kv, keel__kv_entry_t **link)
{
    keel__kv_unlink(kv, link);
    kv->revision++;
}

static int expire_generic(const call_t *c, int seconds, int relative)
{
    keel_kv_t *kv = c->w;
    unsigned f = 0;
    int64_t when = 0;
    int rc = expire_parse(c, &f, &when);
    assert(rc == 0); /* expire_syntax ran */
    if ((rc = expire_when(c, when, seconds, relative, &when)) != 0)
        return done(rc);
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e == NULL) {
        r_int(c->reply, 0);
        return 0;
    }
    /* No deadline counts as an infinite one for GT and LT. */
    uint64_t cur = e->expire_ms;
    if (((f & EXP_NX) && cur) || ((f & EXP_XX) && !cur) ||
        ((f & EXP_GT) && (!cur || le_u(when, cur))) ||
        ((f & EXP_LT) && cur && !le_u(when, cur - 1))) {
        r_int(c->reply, 0);
        return 0;
    }
    if (le_u(when, c->now)) { /* already expired: the key goes now */
        delete_now(kv, link);
        r_int(c->reply, 1);
        return 0;
    }
    if (!cur && (rc = keel__kv_heap_reserve(kv, 1)) != 0)
        return rc;
    r_int(c->reply, 1);
    set_version(kv, e, kv->revision + 1);
    kv->revision++;
    keel__kv_set_expire(kv, e, (uint64_t)when);
    return 0;
}

static int cmd_expire(const call_t *c)
{
    return expire_generic(c, 1, 1);
}

static int cmd_pexpire(const call_t *c)
{
    return expire_generic(c, 0, 1);
}

static int cmd_expireat(const call_t *c)
{
    return expire_generic(c, 1, 0);
}

static int cmd_pexpireat(const call_t *c)
{
    return expire_generic(c, 0, 0);
}

static int cmd_persist(const call_t *c)
{
    keel_kv_t *kv = c->w;
    keel__kv_entry_t **link = NULL;
    int dead;
    uint64_t h = keel__kv_hash(kv, c->argv[1], c->lens[1]);
    keel__kv_entry_t *e = wfind(c, c->argv[1], c->lens[1], h, &link, &dead);
    if (e == NULL || e->expire_ms == 0) {
        r_int(c->reply, 0);
        return 0;
    }
    r_int(c->reply, 1);
    set_version(kv, e, kv->revision + 1);
    kv->revision++;
    keel__kv_set_expire(kv, e, 0);
    return 0;
}

/* Two non-negative integers at argv[1] and argv[2]. */
static int two_counts_syntax(const call_t *c)
{
    int64_t a, b;
    if (keel_parse_i64(c->argv[1], c->lens[1], &a) != 0 || a < 0 ||
        keel_parse_i64(c->argv[2], c->lens[2], &b) != 0 || b < 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/*
 * A sweep's arguments (checked by two_counts_syntax): what is due is what the
 * leader's now_ms and this entry's time both have passed; *max bounds the work.
 */
static uint64_t sweep_args(const call_t *c, int64_t *max)
{
    int64_t now_arg = 0;
    int rc = keel_parse_i64(c->argv[1], c->lens[1], &now_arg);
    rc |= keel_parse_i64(c->argv[2], c->lens[2], max);
    assert(rc == 0);
    return (uint64_t)now_arg < c->now ? (uint64_t)now_arg : c->now;
}

/*
 * KEEL.EXPIRE.SWEEP now_ms max_keys: deletes up to max_keys keys whose
 * deadline is <= min(now_ms, the entry's time), earliest deadline first (ties
 * by key bytes: the heap's total order), then, within the same budget,
 * expired lock records (invisible: an expired lock is free anyway), and
 * replies with the number removed. One change (revision + 1) if a key went,
 * like a DEL of those keys. Bounded work per entry: O(max_keys log n).
 */
static int cmd_expire_sweep(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t max;
    uint64_t limit = sweep_args(c, &max);
    int64_t n = 0, keys = 0;
    keel__kv_entry_t *e;
    /* keys first, then expired lock records with what is left of the budget */
    for (int i = 0; i < 2; i++) {
        keel_kv_t *t = i == 0 ? kv : kv->locks;
        while (t && n < max && (e = keel__kv_heap_top(t)) != NULL && e->expire_ms <= limit) {
            keel__kv_entry_t **link = NULL;
            keel__kv_entry_t *f = keel__kv_find(t, keel__kv_key(e), e->key_len, e->hash, &link);
            assert(f == e);
            keel__kv_unlink(t, link);
            n++;
            keys += i == 0;
        }
    }
    if (keys > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

/* ---- KEEL.CAS ------------------------------------------------------------------ */

static int cas_syntax(const call_t *c)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v < 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/*
 * KEEL.CAS key expected_version value: sets the value (dropping any deadline,
 * as SET does) only if the key's version is expected_version (0: the key
 * must not exist) and replies with the new version; else
 * -CONFLICT expected version N, current M (M 0 when absent).
 */
static int cmd_cas(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t want = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &want);
    assert(rc == 0 && want >= 0);
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = wfind(c, key, key_len, h, &link, &dead);
    uint64_t cur = e ? e->version : 0;
    if (cur != (uint64_t)want) {
        char text[96];
        snprintf(text, sizeof(text), "CONFLICT expected version %lld, current %llu",
                 (long long)want, (unsigned long long)cur);
        return done(r_err(c->reply, text));
    }
    if ((rc = check_sizes(c, key_len, c->lens[3])) != 0 ||
        (!e && !dead && (rc = check_room(c, 1)) != 0))
        return done(rc);
    r_int(c->reply, (int64_t)(kv->revision + 1));
    return put_value(c, 3, link, e, dead, h, 0, 0);
}

/* ---- leases ---------------------------------------------------------------------- */

/*
 * A lease (etcd's lease model, https://etcd.io/docs/v3.5/learning/api/#lease-api)
 * has an id from the state's counter, a ttl_ms and a deadline (entry time +
 * ttl_ms, renewed by KEEPALIVE). Keys attached with KEEL.SET ... LEASE id are
 * absent once the lease's deadline passes, and are deleted with it by
 * REVOKE or by the replicated KEEL.LEASE.SWEEP. Granting or renewing a lease
 * is not a key change (no revision); deleting keys is.
 */
static const char ERR_NO_LEASE[] = "ERR no such lease";

static uint64_t lease_ttl(const keel__kv_entry_t *l)
{
    return keel_get_u64(keel__kv_cval(l));
}

static int lease_syntax(const call_t *c)
{
    int64_t v;
    if (!arg_is(c, 1, "GRANT") && !arg_is(c, 1, "KEEPALIVE") && !arg_is(c, 1, "REVOKE") &&
        !arg_is(c, 1, "TTL")) {
        return r_err_arg(c->reply, "ERR unknown subcommand '", c->argv[1], c->lens[1],
                         "' for 'keel.lease'");
    }
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* now + ms, or 0 (and an error reply) when it would pass INT64_MAX. */
static uint64_t deadline_after(const call_t *c, int64_t ms)
{
    if ((uint64_t)ms > (uint64_t)INT64_MAX - c->now) {
        r_err(c->reply, "ERR invalid expire time");
        return 0;
    }
    return c->now + (uint64_t)ms;
}

/* Deletes every key attached to lease entry l, then l itself; the number of keys. */
static int64_t lease_drop(keel_kv_t *kv, keel__kv_entry_t **lease_link)
{
    keel__kv_entry_t *l = *lease_link;
    int64_t n = 0;
    keel_list_t *it;
    while ((it = keel_list_first(&l->lease_link)) != NULL) {
        keel__kv_entry_t *e = KEEL_LIST_ENTRY(it, keel__kv_entry_t, lease_link), **link = NULL;
        keel__kv_entry_t *f = keel__kv_find(kv, keel__kv_key(e), e->key_len, e->hash, &link);
        assert(f == e);
        keel__kv_unlink(kv, link); /* detaches it */
        n++;
    }
    keel__kv_unlink(kv->leases, lease_link);
    return n;
}

static int lease_grant(const call_t *c, int64_t ttl)
{
    keel_kv_t *kv = c->w;
    uint64_t when = deadline_after(c, ttl);
    if (when == 0)
        return 0;
    if (kv->leases && kv->leases->count >= kv->cfg.keys_max)
        return done(r_err(c->reply, "OOM command not allowed when the number of leases would "
                                    "exceed 'keys_max'"));
    int rc = keel__kv_sub(kv, &kv->leases);
    if (rc == 0)
        rc = keel__kv_heap_reserve(kv->leases, 1);
    if (rc != 0)
        return rc;
    uint64_t id = kv->lease_id_last + 1;
    uint8_t k[KEEL__KV_LEASE_KEY_BYTES], v[KEEL__KV_LEASE_VALUE_BYTES];
    keel__kv_put_u64be(k, id);
    keel_put_u64(v, (uint64_t)ttl);
    keel__kv_entry_t *l =
        keel__kv_entry_new(k, sizeof(k), keel__kv_hash(kv->leases, k, sizeof(k)), v, 8, 8);
    if (l == NULL)
        return KEEL_ENOMEM;
    assert(keel_list_empty(&l->lease_link)); /* the empty list of its keys */
    keel__kv_insert(kv->leases, l);
    keel__kv_set_expire(kv->leases, l, when);
    kv->lease_id_last = id;
    r_int(c->reply, (int64_t)id);
    return 0;
}

/* KEEL.LEASE GRANT ttl_ms | KEEPALIVE id | REVOKE id | TTL id */
static int cmd_lease(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t arg = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &arg);
    assert(rc == 0 && arg > 0);
    if (arg_is(c, 1, "GRANT"))
        return lease_grant(c, arg);
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *l = keel__kv_lease_find(kv, (uint64_t)arg, &link);
    int live = l && keel__kv_live(l, c->now);
    if (arg_is(c, 1, "TTL")) {
        r_int(c->reply, live ? (int64_t)(l->expire_ms - c->now) : -2);
        return 0;
    }
    if (!live)
        return done(r_err(c->reply, ERR_NO_LEASE));
    if (arg_is(c, 1, "KEEPALIVE")) {
        uint64_t when = deadline_after(c, (int64_t)lease_ttl(l));
        if (when == 0)
            return 0;
        keel__kv_set_expire(kv->leases, l, when);
        r_int(c->reply, (int64_t)lease_ttl(l));
        return 0;
    }
    assert(arg_is(c, 1, "REVOKE"));
    int64_t n = lease_drop(kv, link);
    if (n > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

/*
 * KEEL.LEASE.SWEEP now_ms max_leases: ends up to max_leases leases whose
 * deadline is <= min(now_ms, entry time), earliest first (ties by id),
 * deleting their keys; replies with the number of leases ended. One change
 * if any key went. Work: the leases ended plus their keys.
 */
static int cmd_lease_sweep(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t max;
    uint64_t limit = sweep_args(c, &max);
    int64_t n = 0, keys = 0;
    keel__kv_entry_t *l;
    while (kv->leases && n < max && (l = keel__kv_heap_top(kv->leases)) != NULL &&
           l->expire_ms <= limit) {
        keel__kv_entry_t **link = NULL;
        keel__kv_entry_t *f =
            keel__kv_find(kv->leases, keel__kv_key(l), l->key_len, l->hash, &link);
        assert(f == l);
        keys += lease_drop(kv, link);
        n++;
    }
    if (keys > 0)
        kv->revision++;
    r_int(c->reply, n);
    return 0;
}

static int kset_syntax(const call_t *c)
{
    int64_t id;
    if (c->argc != 5 || !arg_is(c, 3, "LEASE"))
        return r_err(c->reply, ERR_SYNTAX);
    if (keel_parse_i64(c->argv[4], c->lens[4], &id) != 0 || id <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

/* KEEL.SET key value LEASE id: SET (no deadline of its own) attached to a live lease. */
static int cmd_kset(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t id = 0;
    int rc = keel_parse_i64(c->argv[4], c->lens[4], &id);
    assert(rc == 0 && id > 0);
    keel__kv_entry_t *l = keel__kv_lease_find(kv, (uint64_t)id, NULL);
    if (l == NULL || !keel__kv_live(l, c->now))
        return done(r_err(c->reply, ERR_NO_LEASE));
    const uint8_t *key = c->argv[1];
    size_t key_len = c->lens[1];
    if ((rc = check_sizes(c, key_len, c->lens[2])) != 0)
        return done(rc);
    uint64_t h = keel__kv_hash(kv, key, key_len);
    keel__kv_entry_t **link = NULL;
    int dead;
    keel__kv_entry_t *e = wfind(c, key, key_len, h, &link, &dead);
    if (!e && !dead && (rc = check_room(c, 1)) != 0)
        return done(rc);
    rc = put_value(c, 2, link, e, dead, h, 0, 0);
    if (rc != 0)
        return rc;
    e = keel__kv_find(kv, key, key_len, h, NULL);
    keel__kv_attach(e, l, (uint64_t)id);
    r_ok(c->reply);
    return 0;
}

/* ---- locks with fencing tokens ------------------------------------------------------ */

/*
 * KEEL.LOCK name ttl_ms hands out a fencing token (Kleppmann, "How to do
 * distributed locking", 2016): a number from one counter in the state that
 * grows with every acquisition of any lock, so the tokens of successive
 * holders of a lock strictly increase, across expiries, releases, leader
 * changes and snapshots. KEEL.FENCED name token <write> runs the write only
 * while token is the current, unexpired holder's: the check and the write are
 * one entry, so a holder that paused past its TTL cannot write after the next
 * holder got the lock. docs/kv.md ("Locks") has the reasoning.
 */
static uint64_t lock_token(const keel__kv_entry_t *l)
{
    return keel_get_u64(keel__kv_cval(l));
}

/* The lock entry of argv[1] if it is held (unexpired) at now, else NULL; *link, *any as found. */
static keel__kv_entry_t *lock_held(const call_t *c, keel__kv_entry_t ***link,
                                   keel__kv_entry_t **any)
{
    const keel_kv_t *locks = c->kv->locks;
    *any = NULL;
    if (locks == NULL)
        return NULL;
    *any = keel__kv_find(locks, c->argv[1], c->lens[1],
                         keel__kv_hash(locks, c->argv[1], c->lens[1]), link);
    return *any && keel__kv_live(*any, c->now) ? *any : NULL;
}

static int lock_syntax(const call_t *c)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return r_err(c->reply, ERR_NOT_INT);
    return 0;
}

static int cmd_lock(const call_t *c)
{
    keel_kv_t *kv = c->w;
    int64_t ttl = 0;
    int rc = keel_parse_i64(c->argv[2], c->lens[2], &ttl);
    assert(rc == 0);
    uint64_t when = deadline_after(c, ttl);
    if (when == 0)
        return 0;
    if (c->lens[1] > kv->cfg.key_bytes_max)
        return done(r_err(c->reply, ERR_KEY_SIZE));
    keel__kv_entry_t **link = NULL, *any = NULL;
    if (lock_held(c, &link, &any) != NULL) {
        r_nil(c->reply);
        return 0;
    }
    if (!any && kv->locks && kv->locks->count >= kv->cfg.keys_max)
        return done(r_err(c->reply, "OOM command not allowed when the number of locks would "
                                    "exceed 'keys_max'"));
    if ((rc = keel__kv_sub(kv, &kv->locks)) != 0 || (rc = keel__kv_heap_reserve(kv->locks, 1)) != 0)
        return rc;
    uint64_t token = kv->fence_last + 1;
    uint8_t v[KEEL__KV_LOCK_VALUE_BYTES];
    keel_put_u64(v, token);
    if (any) { /* expired, not swept: reuse the entry (fixed-size value, no allocation) */
        memcpy(keel__kv_val(any), v, sizeof(v));
    } else {
        uint64_t h = keel__kv_hash(kv->locks, c->argv[1], c->lens[1]);
        any = keel__kv_entry_new(c->argv[1], c->lens[1], h, v, sizeof(v), sizeof(v));
        if (any == NULL)
            return KEEL_ENOMEM;
        keel__kv_insert(kv->locks, any);
    }
    keel__kv_set_expire(kv->locks, any, when);
    kv->fence_last = token;
    r_int(c->reply, (int64_t)token);
    return 0;
}

static int token_arg(const call_t *c, uint64_t *token)
{
    int64_t v;
    if (keel_parse_i64(c->argv[2], c->lens[2], &v) != 0 || v <= 0)
        return -1;
    *token = (uint64_t)v;
    return 0;
}

static int unlock_syntax(const call_t *c)
{
    uint64_t t;
    return token_arg(c, &t) != 0 ? r_err(c->reply, ERR_NOT_INT) : 0;
}

/* KEEL.UNLOCK name token: :1 if token held the lock (now released), else :0. */
static int cmd_unlock(const call_t *c)
{
    keel__kv_entry_t **link = NULL, *any = NULL;
    uint64_t token = 0;
    int rc = token_arg(c, &token);
    assert(rc == 0);
    keel__kv_entry_t *l = lock_held(c, &link, &any);
    int mine = l && lock_token(l) == token;
    if (mine)
        keel__kv_unlink(c->w->locks, link);
    r_int(c->reply, mine);
    return 0;
}

static const cmd_t *find_cmd(const uint8_t *name, size_t len);
static int precheck(call_t *c, size_t argc_max, const cmd_t **out);

/*
 * Runs a handler (every call site: exec, KEEL.FENCED, KEEL.TXN). For a write
 * it checks the change history's bookkeeping: a command that moved the
 * revision recorded changes at exactly the new revision, and none beyond it,
 * so a handler that changed a key without set_version or keel__kv_unlink
 * fails here instead of silently leaving a hole in every watcher's stream.
 */
static int run(const cmd_t *cmd, const call_t *c)
{
    uint64_t before = c->w ? c->w->revision : 0;
    int rc = cmd->fn(c);
    if (c->w != NULL && c->w->hist.on) {
        assert(c->w->hist.last_rev <= c->w->revision);
        assert(c->w->revision == before || c->w->hist.last_rev == c->w->revision);
    }
    return rc;
}

/* The inner command of KEEL.FENCED (argv[3..]) as a call of its own. */
static call_t inner_call(const call_t *c, size_t from)
{
    call_t in = *c;
    in.argc = c->argc - from;
    in.argv = c->argv + from;
    in.lens = c->lens + from;
    return in;
}

static int fenced_syntax(const call_t *c)
{
    uint64_t t;
    if (token_arg(c, &t) != 0)
        return r_err(c->reply, ERR_NOT_INT);
    const cmd_t *cmd = find_cmd(c->argv[3], c->lens[3]);
    if (cmd && !(cmd->flags & KEEL_KV_WRITE))
        return r_err(c->reply, "ERR KEEL.FENCED runs write commands only");
    if (cmd && (cmd->flags & CMD_NO_NEST))
        return r_err(c->reply, "ERR KEEL.FENCED cannot wrap this command");
    call_t in = inner_call(c, 3);
    return precheck(&in, KEEL_KV_ARGC_MAX, &cmd);
}

/*
 * KEEL.FENCED name token <write command ...>: the inner command's reply if
 * token is the lock's current, unexpired holder, else
 * -FENCED token T is not the holder of the lock (nothing runs).
 */
static int cmd_fenced(const call_t *c)
{
    keel__kv_entry_t **link = NULL, *any = NULL;
    uint64_t token = 0;
    int rc = token_arg(c, &token);
    assert(rc == 0);
    keel__kv_entry_t *l = lock_held(c, &link, &any);
    if (l == NULL || lock_token(l) != token) {
        char text[96];
        snprintf(text, sizeof(text), "FENCED token %llu is not the holder of the lock",
                 (unsigned long long)token);
        return done(r_err(c->reply, text));
    }
    call_t in = inner_call(c, 3);
    const cmd_t *cmd = NULL;
    rc = precheck(&in, c->kv->cfg.argc_max, &cmd);
    if (rc != 0)
        return done(rc);
    return run(cmd, &in);
}

/* ---- transactions -------------------------------------------------------------------- */

/*
 * KEEL.TXN nwatch key1 ver1 ... ncmds argc1 arg... argc2 arg...: one entry
 * for Redis's WATCH/MULTI/EXEC. Each watched key's version (0: absent or
 * expired) must still be the one the client saw at WATCH, else the reply is
 * a null array (*-1) and nothing runs; then every queued command runs in
 * order and the reply is the array of their replies (a command that fails at
 * run time puts its error in the array, as in Redis). Counts are decimal,
 * versions >= 0, argc >= 1; the argv must be consumed exactly.
 */
typedef struct txn {
    size_t nwatch, watch_at; /* watched pairs start at argv[watch_at] */
    size_t ncmds, cmds_at;   /* the first argc_i is argv[cmds_at] */
} txn_t;

static int count_arg(const call_t *c, size_t i, int64_t min, int64_t *out)
{
    return i < c->argc && keel_parse_i64(c->argv[i], c->lens[i], out) == 0 && *out >= min ? 0 : -1;
}

/* Parses the layout; with `check`, also each queued command's syntax. */
static int txn_parse(const call_t *c, txn_t *t, int check)
{
    int64_t v;
    if (count_arg(c, 1, 0, &v) != 0 || (uint64_t)v > (c->argc - 2) / 2)
        return r_err(c->reply, "ERR KEEL.TXN: bad watch count");
    t->nwatch = (size_t)v;
    t->watch_at = 2;
    for (size_t i = 0; i < t->nwatch; i++)
        if (count_arg(c, 3 + 2 * i, 0, &v) != 0)
            return r_err(c->reply, "ERR KEEL.TXN: bad watched version");
    size_t at = 2 + 2 * t->nwatch;
    if (count_arg(c, at, 0, &v) != 0 || (uint64_t)v > c->argc)
        return r_err(c->reply, "ERR KEEL.TXN: bad command count");
    t->ncmds = (size_t)v;
    t->cmds_at = ++at;
    for (size_t k = 0; k < t->ncmds; k++) {
        if (count_arg(c, at, 1, &v) != 0 || (uint64_t)v > c->argc - at - 1)
            return r_err(c->reply, "ERR KEEL.TXN: bad command length");
        if (check) {
            call_t in = inner_call(c, at + 1);
            in.argc = (size_t)v;
            const cmd_t *cmd = find_cmd(in.argv[0], in.lens[0]);
            if (cmd && (cmd->flags & CMD_NO_NEST))
                return r_err(c->reply, "ERR KEEL.TXN cannot queue this command");
            int rc = precheck(&in, KEEL_KV_ARGC_MAX, &cmd);
            if (rc != 0)
                return rc;
        }
        at += 1 + (size_t)v;
    }
    if (at != c->argc)
        return r_err(c->reply, "ERR KEEL.TXN: arguments after the last command");
    return 0;
}

static int txn_syntax(const call_t *c)
{
    txn_t t;
    return txn_parse(c, &t, 1);
}

static int cmd_txn(const call_t *c)
{
    keel_kv_t *kv = c->w;
    txn_t t;
    int rc = txn_parse(c, &t, 0);
    assert(rc == 0);
    for (size_t i = 0; i < t.nwatch; i++) {
        const uint8_t *key = c->argv[t.watch_at + 2 * i];
        size_t key_len = c->lens[t.watch_at + 2 * i];
        int64_t want = 0;
        keel_parse_i64(c->argv[t.watch_at + 2 * i + 1], c->lens[t.watch_at + 2 * i + 1], &want);
        const keel__kv_entry_t *e =
            keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL);
        uint64_t cur = e && keel__kv_alive(kv, e, c->now) ? e->version : 0;
        if (cur != (uint64_t)want) {
            r_nil_array(c->reply);
            return 0;
        }
    }
    r_array(c->reply, t.ncmds);
    size_t at = t.cmds_at;
    for (size_t k = 0; k < t.ncmds; k++) {
        int64_t n = 0;
        keel_parse_i64(c->argv[at], c->lens[at], &n);
        call_t in = inner_call(c, at + 1);
        in.argc = (size_t)n;
        const cmd_t *cmd = NULL;
        rc = precheck(&in, kv->cfg.argc_max, &cmd);
        if (rc == 0)
            rc = done(run(cmd, &in));
        /* Out of memory part way: the commands before stay applied (the server
         * stops on any apply error; see docs/kv.md, "Transactions"). */
        if (rc < 0)
            return rc;
        at += 1 + (size_t)n;
    }
    return 0;
}

/* ---- SCAN ---------------------------------------------------------------------- */

typedef struct scan_opts {
    uint64_t cursor;
    int64_t count;
    const uint8_t *pat; /* NULL: every key */
    size_t pat_len;
    int type_ok; /* TYPE given and not "string": nothing matches */
} scan_opts_t;

/*
 * The cursor as Redis 7.0's parseScanCursorOrReply reads it with strtoul: an
 * optional sign, decimal digits up to 2^64-1 (a '-' negates modulo 2^64), no
 * leading space, nothing after; the empty string is cursor 0. 0 or -1.
 */
static int parse_cursor(const uint8_t *p, size_t n, uint64_t *out)
{
    size_t i = n > 0 && (p[0] == '+' || p[0] == '-');
    if (n == 0) {
        *out = 0;
        return 0;
    }
    if (i == n)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = p[0] == '-' ? (uint64_t)0 - v : v;
    return 0;
}

/* Redis scanGenericCommand's option loop. */
static int scan_parse(const call_t *c, scan_opts_t *o)
{
    *o = (scan_opts_t){.count = 10, .type_ok = 1};
    if (parse_cursor(c->argv[1], c->lens[1], &o->cursor) != 0)
        return r_err(c->reply, "ERR invalid cursor");
    for (size_t i = 2; i < c->argc; i += 2) {
        if (c->argc - i < 2)
            return r_err(c->reply, ERR_SYNTAX);
        if (arg_is(c, i, "COUNT")) {
            if (keel_parse_i64(c->argv[i + 1], c->lens[i + 1], &o->count) != 0)
                return r_err(c->reply, ERR_NOT_INT);
            if (o->count < 1)
                return r_err(c->reply, ERR_SYNTAX);
        } else if (arg_is(c, i, "MATCH")) {
            o->pat = c->argv[i + 1];
            o->pat_len = c->lens[i + 1];
            if (o->pat_len == 1 && o->pat[0] == '*')
                o->pat = NULL;
        } else if (arg_is(c, i, "TYPE")) {
            o->type_ok = arg_is(c, i + 1, "STRING");
        } else {
            return r_err(c->reply, ERR_SYNTAX);
        }
    }
    return 0;
}

static int scan_syntax(const call_t *c)
{
    scan_opts_t o;
    return scan_parse(c, &o);
}

typedef struct scan_ctx {
    const scan_opts_t *o;
    reply_t *reply;
    const keel_kv_t *kv;
    uint64_t now;
    int64_t visited, emitted;
} scan_ctx_t;

static void scan_one(void *data, const keel__kv_entry_t *e)
{
    scan_ctx_t *s = data;
    s->visited++;
    if (s->reply->failed || !s->o->type_ok || !keel__kv_alive(s->kv, e, s->now))
        return;
    if (s->o->pat && !keel_kv_glob_match(s->o->pat, s->o->pat_len, keel__kv_key(e), e->key_len))
        return;
    r_bulk(s->reply, keel__kv_key(e), e->key_len);
    s->emitted++;
}

/*
 * Like Redis: visit buckets until COUNT keys were seen (before MATCH filters
 * them) or 10 x COUNT buckets were visited, so one call's work is bounded.
 * Also stops after a bucket that brings the reply past
 * KEEL_KV_SCAN_REPLY_BYTES_MAX: COUNT is a hint (Redis docs), so a huge COUNT
 * over a big keyspace returns a cursor instead of one enormous reply.
 * Keys are written first, then the header is slid in front of them: no
 * temporary list, and the state stays const.
 */
static int cmd_scan(const call_t *c)
{
    scan_opts_t o;
    int rc = scan_parse(c, &o);
    assert(rc == 0); /* scan_syntax ran */
    keel_buf_t *b = c->reply->b;
    size_t mark = keel_buf_unread(b);
    scan_ctx_t s = {&o, c->reply, c->kv, c->now, 0, 0};
    int64_t iterations = o.count > INT64_MAX / 10 ? INT64_MAX : o.count * 10;
    uint64_t cursor = o.cursor;
    do {
        cursor = keel__kv_scan(c->kv, cursor, scan_one, &s);
    } while (cursor && iterations-- && s.visited < o.count && !c->reply->failed &&
             keel_buf_unread(b) - mark < KEEL_KV_SCAN_REPLY_BYTES_MAX);
    /* The header goes first but is known last: written after the keys, then rotated in
       front of them (it is a few dozen bytes). */
    size_t keys = keel_buf_unread(b) - mark;
    char digits[KEEL_DEC_BYTES_MAX];
    size_t dn = keel_fmt_u64(digits, cursor);
    r_array(c->reply, 2);
    r_bulk(c->reply, (const uint8_t *)digits, dn);
    r_array(c->reply, s.emitted);
    if (c->reply->failed)
        return 0;
    uint8_t hdr[4 * KEEL_RESP_HEADER_BYTES_MAX + KEEL_DEC_BYTES_MAX];
    size_t hn = keel_buf_unread(b) - mark - keys;
    assert(hn <= sizeof(hdr));
    uint8_t *start = b->data + b->rpos + mark;
    memcpy(hdr, start + keys, hn);
    memmove(start + hn, start, keys);
    memcpy(start, hdr, hn);
    return 0;
}

/* ---- glob ---------------------------------------------------------------------- */

/*
 * One non-star token of a pattern against one byte, as Redis stringmatchlen
 * reads it: `?`, `\x`, a class `[...]` (`^` negates, `a-z` ranges, either way
 * round, `\]` escapes, an unclosed class runs to the end), or a literal.
 * *adv gets the token's length.
 */
static int token_matches(const uint8_t *pat, size_t plen, size_t p, uint8_t ch, size_t *adv)
{
    if (pat[p] == '?') {
        *adv = 1;
        return 1;
    }
    if (pat[p] == '\\') {
        *adv = plen - p >= 2 ? 2 : 1;
        return pat[p + *adv - 1] == ch;
    }
    if (pat[p] != '[') {
        *adv = 1;
        return pat[p] == ch;
    }
    size_t q = p + 1;
    int neg = q < plen && pat[q] == '^', match = 0;
    q += neg;
    while (q < plen) {
        if (pat[q] == '\\' && plen - q >= 2) {
            match |= pat[q + 1] == ch;
            q += 2;
        } else if (pat[q] == ']') {
            q++;
            break;
        } else if (plen - q >= 3 && pat[q + 1] == '-') {
            uint8_t lo = pat[q], hi = pat[q + 2];
            if (lo > hi) {
                uint8_t t = lo;
                lo = hi;
                hi = t;
            }
            match |= ch >= lo && ch <= hi;
            q += 3;
        } else {
            match |= pat[q] == ch;
            q++;
        }
    }
    *adv = q - p;
    return neg ? !match : match;
}

int keel_kv_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen)
{
    /* Redis quirk kept for compatibility: an empty string matches only an empty pattern. */
    if (slen == 0)
        return plen == 0;
    /* Greedy with one backtrack point: every non-star token eats exactly one
     * byte, so retrying from the last star is enough (no exponential blow-up). */
    size_t p = 0, i = 0, star_p = SIZE_MAX, star_i = 0, adv;
    while (i < slen) {
        if (p < plen && pat[p] == '*') {
            while (p < plen && pat[p] == '*')
                p++;
            if (p == plen)
                return 1;
            star_p = p;
            star_i = i;
            continue;
        }
        if (p < plen && token_matches(pat, plen, p, s[i], &adv)) {
            p += adv;
            i++;
            continue;
        }
        if (star_p == SIZE_MAX)
            return 0;
        p = star_p;
        i = ++star_i;
    }
    while (p < plen && pat[p] == '*')
        p++;
    return p == plen;
}

/* ---- the table and dispatch --------------------------------------------------- */

/* The longest name in the table (KEEL.EXPIRE.SWEEP). */
#define CMD_NAME_BYTES_MAX 17u
#define W KEEL_KV_WRITE
#define R KEEL_KV_READ
#define NN CMD_NO_NEST
static const cmd_t COMMANDS[] = {
    {"SET", "set", -3, W, set_syntax, cmd_set, 1, 1, 1,
     "Set a key to a value, with expiry and conditions"},
    {"GET", "get", 2, R, NULL, cmd_get, 1, 1, 1, "Get the value of a key"},
    {"GETSET", "getset", 3, W, NULL, cmd_getset, 1, 1, 1, "Set a key and return its old value"},
    {"DEL", "del", -2, W, NULL, cmd_del, 1, -1, 1, "Delete keys"},
    {"INCR", "incr", 2, W, NULL, cmd_incr, 1, 1, 1, "Increment the integer value of a key by one"},
    {"DECR", "decr", 2, W, NULL, cmd_decr, 1, 1, 1, "Decrement the integer value of a key by one"},
    {"INCRBY", "incrby", 3, W, incrby_syntax, cmd_incrby, 1, 1, 1,
     "Increment the integer value of a key by a number"},
    {"DECRBY", "decrby", 3, W, decrby_syntax, cmd_decrby, 1, 1, 1,
     "Decrement the integer value of a key by a number"},
    {"APPEND", "append", 3, W, NULL, cmd_append, 1, 1, 1, "Append to the value of a key"},
    {"MSET", "mset", -3, W, mset_syntax, cmd_mset, 1, -1, 2, "Set several keys in one entry"},
    {"MGET", "mget", -2, R, NULL, cmd_mget, 1, -1, 1, "Get the values of several keys"},
    {"EXISTS", "exists", -2, R, NULL, cmd_exists, 1, -1, 1, "Count how many of the keys exist"},
    {"STRLEN", "strlen", 2, R, NULL, cmd_strlen, 1, 1, 1, "Length of the value of a key"},
    {"DBSIZE", "dbsize", 1, R, NULL, cmd_dbsize, 0, 0, 0, "Number of keys"},
    {"SCAN", "scan", -2, R, scan_syntax, cmd_scan, 0, 0, 0, "Iterate over the keys with a cursor"},
    {"KEEL.GETV", "keel.getv", 2, R, NULL, cmd_getv, 1, 1, 1,
     "Get the value of a key with its version"},
    {"TTL", "ttl", 2, R, NULL, cmd_ttl, 1, 1, 1, "Seconds a key has left to live"},
    {"PTTL", "pttl", 2, R, NULL, cmd_pttl, 1, 1, 1, "Milliseconds a key has left to live"},
    {"EXPIRE", "expire", -3, W, expire_syntax, cmd_expire, 1, 1, 1,
     "Set a key to expire in seconds"},
    {"PEXPIRE", "pexpire", -3, W, expire_syntax, cmd_pexpire, 1, 1, 1,
     "Set a key to expire in milliseconds"},
    {"EXPIREAT", "expireat", -3, W, expire_syntax, cmd_expireat, 1, 1, 1,
     "Set a key to expire at a Unix time in seconds"},
    {"PEXPIREAT", "pexpireat", -3, W, expire_syntax, cmd_pexpireat, 1, 1, 1,
     "Set a key to expire at a Unix time in milliseconds"},
    {"PERSIST", "persist", 2, W, NULL, cmd_persist, 1, 1, 1, "Remove the expiry of a key"},
    {"KEEL.EXPIRE.SWEEP", "keel.expire.sweep", 3, W | NN | CMD_INTERNAL, two_counts_syntax,
     cmd_expire_sweep, 0, 0, 0, "Internal: delete expired keys (proposed by the leader)"},
    {"KEEL.CAS", "keel.cas", 4, W, cas_syntax, cmd_cas, 1, 1, 1,
     "Set a key if its version is the one given"},
    {"KEEL.LEASE", "keel.lease", 3, W, lease_syntax, cmd_lease, 0, 0, 0,
     "Grant, keep alive, revoke or inspect a lease"},
    {"KEEL.LEASE.SWEEP", "keel.lease.sweep", 3, W | NN | CMD_INTERNAL, two_counts_syntax,
     cmd_lease_sweep, 0, 0, 0, "Internal: revoke expired leases (proposed by the leader)"},
    {"KEEL.SET", "keel.set", 5, W, kset_syntax, cmd_kset, 1, 1, 1, "Set a key attached to a lease"},
    {"KEEL.LOCK", "keel.lock", 3, W, lock_syntax, cmd_lock, 1, 1, 1,
     "Take a lock with a lease; returns a fencing token"},
    {"KEEL.UNLOCK", "keel.unlock", 3, W, unlock_syntax, cmd_unlock, 1, 1, 1,
     "Release a lock held with a fencing token"},
    {"KEEL.FENCED", "keel.fenced", -5, W | NN, fenced_syntax, cmd_fenced, 1, 1, 1,
     "Run a write only if a lock is still held with the token"},
    {"KEEL.TXN", "keel.txn", -3, W | NN, txn_syntax, cmd_txn, 0, 0, 0,
     "A MULTI/EXEC transaction as one entry (what EXEC proposes)"},
};
#undef W
#undef R
#undef NN
#define COMMANDS_LEN (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static const cmd_t *find_cmd(const uint8_t *name, size_t len)
{
    if (len == 0 || len > CMD_NAME_BYTES_MAX)
        return NULL;
    int first = upper(name[0]);
    for (size_t i = 0; i < COMMANDS_LEN; i++) {
        const char *n = COMMANDS[i].name;
        if (n[0] != first)
            continue;
        size_t k = 1;
        while (k < len && n[k] != '\0' && upper(name[k]) == n[k])
            k++;
        if (k == len && n[k] == '\0')
            return &COMMANDS[i];
    }
    return NULL;
}

unsigned keel_kv_command_flags(const uint8_t *name, size_t len)
{
    const cmd_t *cmd = find_cmd(name, len);
    return cmd ? cmd->flags & (KEEL_KV_WRITE | KEEL_KV_READ) : 0;
}

/* Redis processCommand: "-ERR unknown command 'x', with args beginning with: 'a' 'b' ". */
static int r_unknown(reply_t *o, size_t argc, const uint8_t *const *argv, const size_t *lens)
{
    if (!o->failed)
        track(o, keel_resp_write_unknown_command(o->b, argc, argv, lens));
    return REPLIED;
}

static int r_arity(reply_t *o, const cmd_t *cmd)
{
    char text[96];
    snprintf(text, sizeof(text), "ERR wrong number of arguments for '%s' command", cmd->lname);
    return r_err(o, text);
}

/* Lookup, arity, argc limit and syntax: 0 (go on) or REPLIED (an error reply). */
static int precheck(call_t *c, size_t argc_max, const cmd_t **out)
{
    const cmd_t *cmd = find_cmd(c->argv[0], c->lens[0]);
    if (cmd == NULL)
        return r_unknown(c->reply, c->argc, c->argv, c->lens);
    if ((cmd->arity > 0 && c->argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && c->argc < (size_t)-cmd->arity))
        return r_arity(c->reply, cmd);
    if (c->argc > argc_max)
        return r_err(c->reply, "ERR too many arguments (argc_max)");
    *out = cmd;
    c->cmd_lname = cmd->lname;
    c->self = cmd;
    return cmd->syntax ? cmd->syntax(c) : 0;
}

/* Drops this command's partial reply. */
static void r_drop(reply_t *o)
{
    o->b->len = o->b->rpos + o->mark;
}

int keel_kv_check(int argc, const uint8_t *const *argv, const size_t *lens, keel_buf_t *err_reply)
{
    assert(argc >= 1);
    reply_t o = {err_reply, keel_buf_unread(err_reply), 0};
    call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &o, NULL, NULL};
    const cmd_t *cmd = NULL;
    int rc = precheck(&c, KEEL_KV_ARGC_MAX, &cmd);
    if (o.failed) {
        r_drop(&o);
        return o.failed;
    }
    return rc == REPLIED ? KEEL_EINVAL : 0;
}

/*
 * A failed reply means different things on the two paths. Reading
 * (writable NULL): nothing changed, so the failure is returned and the
 * partial reply dropped. Applying: the command has taken effect, or not, the
 * same way on every node, so it is not an apply failure; the reply becomes a
 * short error if that fits, else nothing. A handler's own negative result is
 * a failed state allocation (KEEL_ENOMEM) with nothing changed.
 */
int keel__kv_exec(keel_kv_t *writable, const keel_kv_t *kv, uint64_t now_ms, size_t argc,
                  const uint8_t *const *argv, const size_t *lens, keel_buf_t *reply)
{
    assert(argc >= 1 && (writable == NULL || writable == kv));
    reply_t o = {reply, keel_buf_unread(reply), 0};
    /* Entry times are any u64; past INT64_MAX they are clamped so that the
     * Redis-style int64 deadline arithmetic below cannot overflow. */
    if (now_ms > INT64_MAX)
        now_ms = INT64_MAX;
    call_t c = {writable, kv, now_ms, argc, argv, lens, &o, NULL, NULL};
    const cmd_t *cmd = NULL;
    int rc = precheck(&c, kv->cfg.argc_max, &cmd);
    if (rc == 0) {
        if ((cmd->flags & KEEL_KV_WRITE) && writable == NULL)
            return KEEL_EINVAL;
        rc = done(run(cmd, &c));
        assert(rc == 0 || rc == KEEL_ENOMEM);
    }
    if (rc < 0 || !o.failed)
        return done(rc);
    r_drop(&o);
    if (writable == NULL)
        return o.failed;
    static const char too_big[] = "-ERR reply does not fit the reply buffer\r\n";
    keel_buf_append(reply, too_big, sizeof(too_big) - 1); /* best effort */
    return 0;
}

/* ---- the table, for the server's command registry (added by the server lead) ---- */

size_t keel_kv_commands_count(void)
{
    return COMMANDS_LEN;
}

void keel_kv_command_info(size_t i, keel_kv_command_info_t *out)
{
    assert(i < COMMANDS_LEN);
    out->name = COMMANDS[i].lname;
    out->arity = COMMANDS[i].arity;
    out->flags = COMMANDS[i].flags & (KEEL_KV_WRITE | KEEL_KV_READ);
    out->first_key = COMMANDS[i].first_key;
    out->last_key = COMMANDS[i].last_key;
    out->key_step = COMMANDS[i].key_step;
    out->summary = COMMANDS[i].summary;
    out->internal = (COMMANDS[i].flags & CMD_INTERNAL) != 0;
}
