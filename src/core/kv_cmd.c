/* kv_cmd.c - KV commands: the table (name, arity, flags, syntax, handler, key positions,
   summary), lookup, checks and the one way every command runs. */
#include "core/kv_cmd_int.h"
#include "core/kv_coll.h"
#include "core/kv_stream_int.h"
#include "core/kv_zset_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- argument helpers ------------------------------------------------------ */

static int upper(int c)
{
    return c >= 'a' && c <= 'z' ? c - 32 : c;
}

/* Case-insensitive equality of an argument with an upper-case word. */
int keel__kvc_arg_is(const call_t *c, size_t i, const char *word)
{
    size_t n = c->lens[i];
    const uint8_t *p = c->argv[i];
    for (size_t k = 0; k < n; k++)
        if (word[k] == '\0' || upper(p[k]) != word[k])
            return 0;
    return word[n] == '\0';
}

/* Limits for a command that may keel__kvc_create key i with a value of val_len bytes. */
int keel__kvc_check_sizes(const call_t *c, size_t key_len, size_t val_len)
{
    if (key_len > c->kv->cfg.key_bytes_max)
        return r_err(c->reply, ERR_KEY_SIZE);
    if (val_len > c->kv->cfg.value_bytes_max)
        return r_err(c->reply, ERR_VALUE_SIZE);
    return 0;
}

int keel__kvc_check_room(const call_t *c, size_t new_keys)
{
    if (new_keys > c->kv->cfg.keys_max - c->kv->count)
        return r_err(c->reply, ERR_KEYS_MAX);
    return 0;
}

/* Replied errors are a success of apply: map REPLIED to 0. */
int keel__kvc_done(int rc)
{
    return rc == REPLIED ? 0 : rc;
}

/*
 * A write's view of a key: the live entry, or NULL. An entry past its
 * deadline is absent to writes too; it stays linked (at *link, with *dead
 * set) until the command replaces it (keel__kvc_create) or a sweep removes it, so a
 * command that then fails with KEEL_ENOMEM has changed nothing.
 */
keel__kv_entry_t *keel__kvc_wfind(const call_t *c, const uint8_t *key, size_t key_len, uint64_t h,
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
void keel__kvc_set_version(keel_kv_t *kv, keel__kv_entry_t *e, uint64_t rev)
{
    e->version = rev;
    keel__kv_hist_record(kv, rev, KEEL_KV_CHANGE_PUT, e);
}

/*
 * Creates key -> val at revision rev, in place of the expired entry at *link
 * if `dead`. 0 or KEEL_ENOMEM (nothing changed).
 */
int keel__kvc_create(keel_kv_t *kv, keel__kv_entry_t **link, int dead, const uint8_t *key,
                     size_t key_len, uint64_t h, const uint8_t *val, size_t val_len, uint64_t rev,
                     keel__kv_entry_t **made)
{
    keel__kv_entry_t *e = keel__kv_take_adopted(kv, val);
    if (e != NULL) /* a staged value: its block becomes the entry (kv_staged.c) */
        e->val_len = (uint32_t)val_len;
    else if ((e = keel__kv_entry_new(key, key_len, h, val, val_len, val_len)) == NULL)
        return KEEL_ENOMEM;
    e->create_revision = rev;
    keel__kvc_set_version(kv, e, rev);
    if (dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    if (made)
        *made = e;
    return 0;
}

/*
 * Makes key (absent, expired or of any type) hold obj, a new object of `type` built whole
 * (owned from here on; bytes: its memory), replacing whatever the key held and its deadline,
 * or deletes the key when obj is NULL: the store commands' write (ZRANGESTORE and the other
 * sorted-set stores, SORT ... STORE). 0 and *changed, or KEEL_ENOMEM (nothing changed, obj
 * still the caller's). Steps no revision (several keys may change in one command).
 */
int keel__kvc_store_obj(const call_t *c, const uint8_t *key, size_t len, int type, void *obj,
                        size_t bytes, int *changed)
{
    keel_kv_t *kv = c->w;
    uint64_t h = keel__kv_hash(kv, key, len);
    int dead;
    keel__kv_entry_t **link = NULL;
    keel__kv_entry_t *old = keel__kvc_wfind(c, key, len, h, &link, &dead);
    *changed = 0;
    if (obj == NULL) {
        if (old) {
            keel__kv_unlink(kv, link);
            *changed = 1;
        }
        return 0;
    }
    keel__kv_entry_t *e = keel__kv_entry_new_obj(key, len, h, type, obj);
    if (e == NULL)
        return KEEL_ENOMEM;
    uint64_t rev = kv->revision + 1;
    e->create_revision = old ? old->create_revision : rev;
    keel__kvc_set_version(kv, e, rev);
    if (old || dead)
        keel__kv_replace(kv, link, e);
    else
        keel__kv_insert(kv, e);
    kv->bytes += bytes;
    *changed = 1;
    return 0;
}

/* Overwrites the value of the entry at *link. 0 or KEEL_ENOMEM (nothing changed). */
int keel__kvc_overwrite(keel_kv_t *kv, keel__kv_entry_t **link, const uint8_t *val, size_t val_len,
                        uint64_t rev)
{
    keel__kv_entry_t *adopted = keel__kv_take_adopted(kv, val);
    if (adopted != NULL) /* a staged value: the entry moves into its block (kv_staged.c) */
        keel__kv_entry_move(kv, link, adopted);
    int rc = keel__kv_reserve_value(kv, link, val_len, 0);
    if (rc != 0)
        return rc;
    keel__kv_entry_t *e = *link;
    if (e->type != KEEL__KV_TYPE_STRING) { /* SET over another type replaces it, as in Redis */
        kv->bytes -= keel__kv_obj_free(e);
        e->type = KEEL__KV_TYPE_STRING;
    }
    if (val_len && keel__kv_val(e) != val)
        memcpy(keel__kv_val(e), val, val_len);
    kv->bytes = kv->bytes - e->val_len + val_len;
    e->val_len = (uint32_t)val_len;
    keel__kvc_set_version(kv, e, rev);
    return 0;
}

/*
 * Runs a handler (every call site: exec, KEEL.FENCED, KEEL.TXN). For a write
 * it checks the change history's bookkeeping: a command that moved the
 * revision recorded changes at exactly the new revision, and none beyond it,
 * so a handler that changed a key without keel__kvc_set_version or keel__kv_unlink
 * fails here instead of silently leaving a hole in every watcher's stream.
 */
int keel__kvc_run(const cmd_t *cmd, const call_t *c)
{
    uint64_t before = c->w ? c->w->revision : 0;
    int unpacked = 0;
    keel__ks_run_t ks;
    ks.n = ks.nkeys = 0;
    ks.all = 0;
    call_t in = *c;
    in.zs_unpacked = &unpacked;
    in.ks = &ks;
    int rc = cmd->fn(&in);
    if (c->w != NULL && c->w->hist.on) {
        assert(c->w->hist.last_rev <= c->w->revision);
        assert(c->w->revision == before || c->w->hist.last_rev == c->w->revision);
    }
    if (unpacked)
        keel__zs_repack(&in);
    keel__ks_after(&in);
    return rc;
}

/* The inner command of KEEL.FENCED (argv[3..]) as a call of its own. */
call_t keel__kvc_inner_call(const call_t *c, size_t from)
{
    call_t in = *c;
    in.argc = c->argc - from;
    in.argv = c->argv + from;
    in.lens = c->lens + from;
    return in;
}
/* ---- the table and dispatch --------------------------------------------------- */

/* The longest name in the table (KEEL.XRETAIN.SWEEP). */
#define CMD_NAME_BYTES_MAX 18u
#define W KEEL_KV_WRITE
#define R KEEL_KV_READ
#define NN CMD_NO_NEST
#define BL CMD_BLOCKING
#define BP CMD_BLOCKING_POP
/*
 * Every command, sorted by name (bytes, as memcmp orders them): keel__kvc_find_cmd is a binary
 * search (test_kv_cmds checks the order). Each row names its handler, whose prefix says the
 * family's files: keel__kvc_ the strings, keyspace, expiry, leases, transactions, the registry
 * and SORT (kv_strings*.c, kv_keys.c, kv_expire.c, kv_leases.c, kv_txn.c, kv_registry.c,
 * kv_sort.c, kv_staged.c), keel__kh_ hashes (kv_hash.c), keel__ks_ sets (kv_set.c),
 * keel__kvl_ lists (kv_list*.c), keel__zs_ sorted sets (kv_zset*.c), keel__xs_ streams
 * (kv_stream*.c).
 */
static const cmd_t COMMANDS[] = {
    {"APPEND", "append", 3, W, NULL, keel__kvc_cmd_append, 1, 1, 1, "Append to the value of a key"},
    {"BITCOUNT", "bitcount", -2, R, NULL, keel__kvc_cmd_bitcount, 1, 1, 1,
     "Count the set bits of a string, or of a byte or bit range"},
    {"BITFIELD", "bitfield", -2, W, keel__kvc_bitfield_syntax, keel__kvc_cmd_bitfield, 1, 1, 1,
     "Get, set and increment integers of 1 to 64 bits at bit offsets"},
    {"BITFIELD_RO", "bitfield_ro", -2, R, keel__kvc_bitfield_syntax, keel__kvc_cmd_bitfield, 1, 1,
     1, "BITFIELD with GET only: a read"},
    {"BITOP", "bitop", -4, W, keel__kvc_bitop_syntax, keel__kvc_cmd_bitop, 2, -1, 1,
     "AND, OR, XOR or NOT of strings into a key"},
    {"BITPOS", "bitpos", -3, R, keel__kvc_bitpos_syntax, keel__kvc_cmd_bitpos, 1, 1, 1,
     "The first set or clear bit of a string"},
    {"BLMOVE", "blmove", 6, W | BP, keel__kvl_blmove_syntax, keel__kvl_cmd_blmove, 1, 2, 1,
     "LMOVE, or wait for an element"},
    {"BLMPOP", "blmpop", -5, W | BP, keel__kvl_blmpop_syntax, keel__kvl_cmd_blmpop, 0, 0, 0,
     "LMPOP, or wait for an element"},
    {"BLPOP", "blpop", -3, W | BP, keel__kvl_bpop_syntax, keel__kvl_cmd_blpop, 1, -2, 1,
     "Pop the first element of the first non-empty list, or wait"},
    {"BRPOP", "brpop", -3, W | BP, keel__kvl_bpop_syntax, keel__kvl_cmd_brpop, 1, -2, 1,
     "Pop the last element of the first non-empty list, or wait"},
    {"BRPOPLPUSH", "brpoplpush", 4, W | BP, keel__kvl_brpoplpush_syntax, keel__kvl_cmd_brpoplpush,
     1, 2, 1, "RPOPLPUSH, or wait for an element"},
    {"BZMPOP", "bzmpop", -5, W | BP, keel__zs_bzmpop_syntax, keel__zs_cmd_bzmpop, 0, 0, 0,
     "ZMPOP, or wait for a member"},
    {"BZPOPMAX", "bzpopmax", -3, W | BP, keel__zs_bzpop_syntax, keel__zs_cmd_bzpopmax, 1, -2, 1,
     "Pop the highest-scored member of the first non-empty sorted set, or wait"},
    {"BZPOPMIN", "bzpopmin", -3, W | BP, keel__zs_bzpop_syntax, keel__zs_cmd_bzpopmin, 1, -2, 1,
     "Pop the lowest-scored member of the first non-empty sorted set, or wait"},
    {"COPY", "copy", -3, W, keel__kvc_copy_syntax, keel__kvc_cmd_copy, 1, 2, 1,
     "Copy a key's value, expiry included"},
    {"DBSIZE", "dbsize", 1, R, NULL, keel__kvc_cmd_dbsize, 0, 0, 0, "Number of keys"},
    {"DECR", "decr", 2, W, NULL, keel__kvc_cmd_decr, 1, 1, 1,
     "Decrement the integer value of a key by one"},
    {"DECRBY", "decrby", 3, W, keel__kvc_decrby_syntax, keel__kvc_cmd_decrby, 1, 1, 1,
     "Decrement the integer value of a key by a number"},
    {"DEL", "del", -2, W, NULL, keel__kvc_cmd_del, 1, -1, 1, "Delete keys"},
    {"EXISTS", "exists", -2, R, NULL, keel__kvc_cmd_exists, 1, -1, 1,
     "Count how many of the keys exist"},
    {"EXPIRE", "expire", -3, W, keel__kvc_expire_syntax, keel__kvc_cmd_expire, 1, 1, 1,
     "Set a key to expire in seconds"},
    {"EXPIREAT", "expireat", -3, W, keel__kvc_expire_syntax, keel__kvc_cmd_expireat, 1, 1, 1,
     "Set a key to expire at a Unix time in seconds"},
    {"EXPIRETIME", "expiretime", 2, R, NULL, keel__kvc_cmd_expiretime, 1, 1, 1,
     "The Unix time in seconds at which a key expires"},
    {"FLUSHALL", "flushall", -1, W, keel__kvc_flush_syntax, keel__kvc_cmd_flushall, 0, 0, 0,
     "Delete every key (ASYNC and SYNC both delete in the entry)"},
    {"FLUSHDB", "flushdb", -1, W, keel__kvc_flush_syntax, keel__kvc_cmd_flushall, 0, 0, 0,
     "Delete every key of database 0, the only one"},
    {"GET", "get", 2, R, NULL, keel__kvc_cmd_get, 1, 1, 1, "Get the value of a key"},
    {"GETBIT", "getbit", 3, R, keel__kvc_getbit_syntax, keel__kvc_cmd_getbit, 1, 1, 1,
     "One bit of a string"},
    {"GETDEL", "getdel", 2, W, NULL, keel__kvc_cmd_getdel, 1, 1, 1, "Get a key and delete it"},
    {"GETEX", "getex", -2, W, keel__kvc_getex_syntax, keel__kvc_cmd_getex, 1, 1, 1,
     "Get a key and set or remove its expiry"},
    {"GETRANGE", "getrange", 4, R, keel__kvc_getrange_syntax, keel__kvc_cmd_getrange, 1, 1, 1,
     "A substring of the value of a key"},
    {"GETSET", "getset", 3, W, NULL, keel__kvc_cmd_getset, 1, 1, 1,
     "Set a key and return its old value"},
    {"HDEL", "hdel", -3, W, NULL, keel__kh_cmd_hdel, 1, 1, 1, "Delete fields of a hash"},
    {"HEXISTS", "hexists", 3, R, NULL, keel__kh_cmd_hexists, 1, 1, 1,
     "Whether a field of a hash exists"},
    {"HGET", "hget", 3, R, NULL, keel__kh_cmd_hget, 1, 1, 1, "The value of a field of a hash"},
    {"HGETALL", "hgetall", 2, R, NULL, keel__kh_cmd_hgetall, 1, 1, 1,
     "Every field and value of a hash"},
    {"HINCRBY", "hincrby", 4, W, keel__kh_hincrby_syntax, keel__kh_cmd_hincrby, 1, 1, 1,
     "Increment the integer value of a field of a hash"},
    {"HINCRBYFLOAT", "hincrbyfloat", 4, W, keel__kh_hincrbyfloat_syntax, keel__kh_cmd_hincrbyfloat,
     1, 1, 1, "Increment the float value of a field of a hash"},
    {"HKEYS", "hkeys", 2, R, NULL, keel__kh_cmd_hkeys, 1, 1, 1, "Every field of a hash"},
    {"HLEN", "hlen", 2, R, NULL, keel__kh_cmd_hlen, 1, 1, 1, "Number of fields of a hash"},
    {"HMGET", "hmget", -3, R, NULL, keel__kh_cmd_hmget, 1, 1, 1,
     "The values of several fields of a hash"},
    {"HMSET", "hmset", -4, W, keel__kh_hset_syntax, keel__kh_cmd_hmset, 1, 1, 1,
     "Set fields of a hash (HSET's old form, replies OK)"},
    {"HRANDFIELD", "hrandfield", -2, R, keel__kh_hrandfield_syntax, keel__kh_cmd_hrandfield, 1, 1,
     1, "Random fields of a hash, optionally with their values"},
    {"HSCAN", "hscan", -3, R, keel__kc_scan_syntax, keel__kh_cmd_hscan, 1, 1, 1,
     "Iterate over the fields of a hash with a cursor"},
    {"HSET", "hset", -4, W, keel__kh_hset_syntax, keel__kh_cmd_hset, 1, 1, 1,
     "Set fields of a hash"},
    {"HSETNX", "hsetnx", 4, W, NULL, keel__kh_cmd_hsetnx, 1, 1, 1,
     "Set a field of a hash if it does not exist"},
    {"HSTRLEN", "hstrlen", 3, R, NULL, keel__kh_cmd_hstrlen, 1, 1, 1,
     "Length of the value of a field of a hash"},
    {"HVALS", "hvals", 2, R, NULL, keel__kh_cmd_hvals, 1, 1, 1, "Every value of a hash"},
    {"INCR", "incr", 2, W, NULL, keel__kvc_cmd_incr, 1, 1, 1,
     "Increment the integer value of a key by one"},
    {"INCRBY", "incrby", 3, W, keel__kvc_incrby_syntax, keel__kvc_cmd_incrby, 1, 1, 1,
     "Increment the integer value of a key by a number"},
    {"INCRBYFLOAT", "incrbyfloat", 3, W, NULL, keel__kvc_cmd_incrbyfloat, 1, 1, 1,
     "Increment the float value of a key"},
    {"KEEL.BPOP", "keel.bpop", -2, W | NN | CMD_HIDDEN, keel__kvl_kbpop_syntax, keel__kvl_cmd_kbpop,
     0, 0, 0, "Internal: a blocking pop a node serves, tagged with its token"},
    {"KEEL.CAS", "keel.cas", 4, W, keel__kvc_cas_syntax, keel__kvc_cmd_cas, 1, 1, 1,
     "Set a key if its version is the one given"},
    {"KEEL.EXPIRE.SWEEP", "keel.expire.sweep", 3, W | NN | CMD_INTERNAL,
     keel__kvc_two_counts_syntax, keel__kvc_cmd_expire_sweep, 0, 0, 0,
     "Internal: delete expired keys (proposed by the leader)"},
    {"KEEL.FENCED", "keel.fenced", -5, W | NN, keel__kvc_fenced_syntax, keel__kvc_cmd_fenced, 1, 1,
     1, "Run a write only if a lock is still held with the token"},
    {"KEEL.GETV", "keel.getv", 2, R, NULL, keel__kvc_cmd_getv, 1, 1, 1,
     "Get the value of a key with its version"},
    {"KEEL.LEASE", "keel.lease", 3, W, keel__kvc_lease_syntax, keel__kvc_cmd_lease, 0, 0, 0,
     "Grant, keep alive, revoke or inspect a lease"},
    {"KEEL.LEASE.SWEEP", "keel.lease.sweep", 3, W | NN | CMD_INTERNAL, keel__kvc_two_counts_syntax,
     keel__kvc_cmd_lease_sweep, 0, 0, 0,
     "Internal: revoke expired leases (proposed by the leader)"},
    {"KEEL.LOCK", "keel.lock", 3, W, keel__kvc_lock_syntax, keel__kvc_cmd_lock, 1, 1, 1,
     "Take a lock with a lease; returns a fencing token"},
    {"KEEL.LOCKRUN", "keel.lockrun", -5, W | NN, keel__kvc_lockrun_syntax, keel__kvc_cmd_lockrun, 1,
     1, 1, "Take a lock and run a write under it, in one entry"},
    {"KEEL.MGETV", "keel.mgetv", -2, R, NULL, keel__kvc_cmd_mgetv, 1, -1, 1,
     "Get the values of several keys with their versions"},
    {"KEEL.REG.LIMITS", "keel.reg.limits", -3, W | NN | CMD_INTERNAL, keel__kvc_reg_limits_syntax,
     keel__kvc_cmd_reg_limits, 0, 0, 0,
     "Internal: the registry's limits (proposed by a leader whose --reg-* flags differ)"},
    {"KEEL.REG.READ", "keel.reg.read", -2, R | NN | CMD_HIDDEN, keel__kvc_reg_read_syntax,
     keel__kvc_cmd_reg_read, 0, 0, 0, "Registry: a KEEL.REG read (SERVICES, INSTANCES, ...)"},
    {"KEEL.REG.SWEEP", "keel.reg.sweep", 3, W | NN | CMD_INTERNAL, keel__kvc_two_counts_syntax,
     keel__kvc_cmd_reg_sweep, 0, 0, 0,
     "Internal: remove lapsed registry instances (proposed by the leader)"},
    {"KEEL.REG.WRITE", "keel.reg.write", -3, W | NN | CMD_HIDDEN, keel__kvc_reg_write_syntax,
     keel__kvc_cmd_reg_write, 0, 0, 0, "Registry: a KEEL.REG write (REGISTER, PASS, ...)"},
    {"KEEL.SET", "keel.set", 5, W, keel__kvc_kset_syntax, keel__kvc_cmd_kset, 1, 1, 1,
     "Set a key attached to a lease"},
    {"KEEL.STAGE", "keel.stage", 6, W | NN | CMD_HIDDEN, keel__kvc_stage_syntax,
     keel__kvc_cmd_stage, 0, 0, 0, "Internal: one piece of a large SET value"},
    {"KEEL.STAGE.DROP", "keel.stage.drop", 2, W | NN | CMD_HIDDEN, keel__kvc_stage_drop_syntax,
     keel__kvc_cmd_stage_drop, 0, 0, 0, "Internal: forget a value sent in pieces"},
    {"KEEL.STAGE.SET", "keel.stage.set", -3, W | NN | CMD_HIDDEN, keel__kvc_stage_set_syntax,
     keel__kvc_cmd_stage_set, 1, 1, 1, "Internal: SET a key to a value sent in pieces"},
    {"KEEL.TXN", "keel.txn", -3, W | NN, keel__kvc_txn_syntax, keel__kvc_cmd_txn, 0, 0, 0,
     "A MULTI/EXEC transaction as one entry (what EXEC proposes)"},
    {"KEEL.UNLOCK", "keel.unlock", 3, W, keel__kvc_unlock_syntax, keel__kvc_cmd_unlock, 1, 1, 1,
     "Release a lock held with a fencing token"},
    {"KEEL.XDEADLETTER", "keel.xdeadletter", -4, W, keel__xs_xdeadletter_syntax,
     keel__xs_cmd_xdeadletter, 1, 1, 1, "A group's maximum deliveries and dead-letter stream"},
    {"KEEL.XNACK", "keel.xnack", -4, W, keel__xs_xnack_syntax, keel__xs_cmd_xnack, 1, 1, 1,
     "Return pending entries to their group, redelivered after a delay or a backoff"},
    {"KEEL.XRETAIN", "keel.xretain", -3, W, keel__xs_xretain_syntax, keel__xs_cmd_xretain, 1, 1, 1,
     "A stream's retention by age (the leader trims older entries)"},
    {"KEEL.XRETAIN.SWEEP", "keel.xretain.sweep", -3, W | NN | CMD_INTERNAL,
     keel__xs_xretain_sweep_syntax, keel__xs_cmd_xretain_sweep, 0, 0, 0,
     "Internal: trim streams past their retention (proposed by the leader)"},
    {"KEYS", "keys", 2, R, NULL, keel__kvc_cmd_keys, 0, 0, 0, "Every key matching a pattern"},
    {"LCS", "lcs", -3, R, NULL, keel__kvc_cmd_lcs, 1, 2, 1,
     "The longest common subsequence of two strings"},
    {"LINDEX", "lindex", 3, R, NULL, keel__kvl_cmd_lindex, 1, 1, 1,
     "A list's element by its index"},
    {"LINSERT", "linsert", 5, W, keel__kvl_linsert_syntax, keel__kvl_cmd_linsert, 1, 1, 1,
     "Insert an element before or after another"},
    {"LLEN", "llen", 2, R, NULL, keel__kvl_cmd_llen, 1, 1, 1, "The length of a list"},
    {"LMOVE", "lmove", 5, W, keel__kvl_lmove_syntax, keel__kvl_cmd_lmove, 1, 2, 1,
     "Pop an element from a list and push it to another"},
    {"LMPOP", "lmpop", -4, W, keel__kvl_lmpop_syntax, keel__kvl_cmd_lmpop, 0, 0, 0,
     "Pop elements from the first non-empty list of several"},
    {"LPOP", "lpop", -2, W, keel__kvl_pop_syntax, keel__kvl_cmd_lpop, 1, 1, 1,
     "Remove and return the first elements of a list"},
    {"LPOS", "lpos", -3, R, keel__kvl_lpos_syntax, keel__kvl_cmd_lpos, 1, 1, 1,
     "The positions of the elements equal to a value"},
    {"LPUSH", "lpush", -3, W, NULL, keel__kvl_cmd_lpush, 1, 1, 1, "Prepend elements to a list"},
    {"LPUSHX", "lpushx", -3, W, NULL, keel__kvl_cmd_lpushx, 1, 1, 1,
     "Prepend elements to a list that exists"},
    {"LRANGE", "lrange", 4, R, keel__kvl_range_syntax, keel__kvl_cmd_lrange, 1, 1, 1,
     "A range of a list's elements"},
    {"LREM", "lrem", 4, W, NULL, keel__kvl_cmd_lrem, 1, 1, 1, "Remove elements equal to a value"},
    {"LSET", "lset", 4, W, NULL, keel__kvl_cmd_lset, 1, 1, 1, "Set a list's element by its index"},
    {"LTRIM", "ltrim", 4, W, keel__kvl_range_syntax, keel__kvl_cmd_ltrim, 1, 1, 1,
     "Keep only a range of a list"},
    {"MGET", "mget", -2, R, NULL, keel__kvc_cmd_mget, 1, -1, 1, "Get the values of several keys"},
    {"MSET", "mset", -3, W, keel__kvc_mset_syntax, keel__kvc_cmd_mset, 1, -1, 2,
     "Set several keys in one entry"},
    {"MSETNX", "msetnx", -3, W, keel__kvc_mset_syntax, keel__kvc_cmd_msetnx, 1, -1, 2,
     "Set several keys only if none exists"},
    {"OBJECT", "object", -2, R, keel__kvc_object_syntax, keel__kvc_cmd_object, 2, 2, 1,
     "Encoding, idle time, frequency or reference count of a key's value"},
    {"PERSIST", "persist", 2, W, NULL, keel__kvc_cmd_persist, 1, 1, 1,
     "Remove the expiry of a key"},
    {"PEXPIRE", "pexpire", -3, W, keel__kvc_expire_syntax, keel__kvc_cmd_pexpire, 1, 1, 1,
     "Set a key to expire in milliseconds"},
    {"PEXPIREAT", "pexpireat", -3, W, keel__kvc_expire_syntax, keel__kvc_cmd_pexpireat, 1, 1, 1,
     "Set a key to expire at a Unix time in milliseconds"},
    {"PEXPIRETIME", "pexpiretime", 2, R, NULL, keel__kvc_cmd_pexpiretime, 1, 1, 1,
     "The Unix time in milliseconds at which a key expires"},
    {"PSETEX", "psetex", 4, W, keel__kvc_setex_syntax, keel__kvc_cmd_setex, 1, 1, 1,
     "Set a key with an expiry in milliseconds"},
    {"PTTL", "pttl", 2, R, NULL, keel__kvc_cmd_pttl, 1, 1, 1,
     "Milliseconds a key has left to live"},
    {"RANDOMKEY", "randomkey", 1, R, NULL, keel__kvc_cmd_randomkey, 0, 0, 0, "Any live key"},
    {"RENAME", "rename", 3, W, NULL, keel__kvc_cmd_rename, 1, 2, 1, "Rename a key"},
    {"RENAMENX", "renamenx", 3, W, NULL, keel__kvc_cmd_renamenx, 1, 2, 1,
     "Rename a key if the new name does not exist"},
    {"RPOP", "rpop", -2, W, keel__kvl_pop_syntax, keel__kvl_cmd_rpop, 1, 1, 1,
     "Remove and return the last elements of a list"},
    {"RPOPLPUSH", "rpoplpush", 3, W, NULL, keel__kvl_cmd_rpoplpush, 1, 2, 1,
     "Pop the last element of a list and prepend it to another"},
    {"RPUSH", "rpush", -3, W, NULL, keel__kvl_cmd_rpush, 1, 1, 1, "Append elements to a list"},
    {"RPUSHX", "rpushx", -3, W, NULL, keel__kvl_cmd_rpushx, 1, 1, 1,
     "Append elements to a list that exists"},
    {"SADD", "sadd", -3, W, NULL, keel__ks_cmd_sadd, 1, 1, 1, "Add members to a set"},
    {"SCAN", "scan", -2, R, keel__kvc_scan_syntax, keel__kvc_cmd_scan, 0, 0, 0,
     "Iterate over the keys with a cursor"},
    {"SCARD", "scard", 2, R, NULL, keel__ks_cmd_scard, 1, 1, 1, "Number of members of a set"},
    {"SDIFF", "sdiff", -2, R, NULL, keel__ks_cmd_sdiff, 1, -1, 1,
     "Members of the first set not in the others"},
    {"SDIFFSTORE", "sdiffstore", -3, W, NULL, keel__ks_cmd_sdiffstore, 1, -1, 1,
     "Store the difference of sets in a key"},
    {"SET", "set", -3, W, keel__kvc_set_syntax, keel__kvc_cmd_set, 1, 1, 1,
     "Set a key to a value, with expiry and conditions"},
    {"SETBIT", "setbit", 4, W, keel__kvc_setbit_syntax, keel__kvc_cmd_setbit, 1, 1, 1,
     "Set or clear one bit of a string"},
    {"SETEX", "setex", 4, W, keel__kvc_setex_syntax, keel__kvc_cmd_setex, 1, 1, 1,
     "Set a key with an expiry in seconds"},
    {"SETNX", "setnx", 3, W, NULL, keel__kvc_cmd_setnx, 1, 1, 1, "Set a key if it does not exist"},
    {"SETRANGE", "setrange", 4, W, keel__kvc_setrange_syntax, keel__kvc_cmd_setrange, 1, 1, 1,
     "Overwrite part of a string at an offset"},
    {"SINTER", "sinter", -2, R, NULL, keel__ks_cmd_sinter, 1, -1, 1, "Intersection of sets"},
    {"SINTERCARD", "sintercard", -3, R, keel__ks_sintercard_syntax, keel__ks_cmd_sintercard, 0, 0,
     0, "Size of the intersection of sets, up to a limit"},
    {"SINTERSTORE", "sinterstore", -3, W, NULL, keel__ks_cmd_sinterstore, 1, -1, 1,
     "Store the intersection of sets in a key"},
    {"SISMEMBER", "sismember", 3, R, NULL, keel__ks_cmd_sismember, 1, 1, 1,
     "Whether a member is in a set"},
    {"SMEMBERS", "smembers", 2, R, NULL, keel__ks_cmd_smembers, 1, 1, 1, "Every member of a set"},
    {"SMISMEMBER", "smismember", -3, R, NULL, keel__ks_cmd_smismember, 1, 1, 1,
     "Whether each of several members is in a set"},
    {"SMOVE", "smove", 4, W, NULL, keel__ks_cmd_smove, 1, 2, 1,
     "Move a member from one set to another"},
    {"SORT", "sort", -2, W, keel__kvc_sort_syntax, keel__kvc_cmd_sort, 1, 1, 1,
     "Sort a list's, set's or sorted set's elements, maybe through patterns, maybe STOREd"},
    {"SORT_RO", "sort_ro", -2, R, keel__kvc_sort_ro_syntax, keel__kvc_cmd_sort_ro, 1, 1, 1,
     "SORT without STORE, on any node"},
    {"SPOP", "spop", -2, W, keel__ks_spop_syntax, keel__ks_cmd_spop, 1, 1, 1,
     "Remove and return random members of a set (chosen from the entry)"},
    {"SRANDMEMBER", "srandmember", -2, R, keel__ks_srandmember_syntax, keel__ks_cmd_srandmember, 1,
     1, 1, "Random members of a set"},
    {"SREM", "srem", -3, W, NULL, keel__ks_cmd_srem, 1, 1, 1, "Remove members from a set"},
    {"SSCAN", "sscan", -3, R, keel__kc_scan_syntax, keel__ks_cmd_sscan, 1, 1, 1,
     "Iterate over the members of a set with a cursor"},
    {"STRLEN", "strlen", 2, R, NULL, keel__kvc_cmd_strlen, 1, 1, 1, "Length of the value of a key"},
    {"SUBSTR", "substr", 4, R, keel__kvc_getrange_syntax, keel__kvc_cmd_getrange, 1, 1, 1,
     "GETRANGE's old name"},
    {"SUNION", "sunion", -2, R, NULL, keel__ks_cmd_sunion, 1, -1, 1, "Union of sets"},
    {"SUNIONSTORE", "sunionstore", -3, W, NULL, keel__ks_cmd_sunionstore, 1, -1, 1,
     "Store the union of sets in a key"},
    {"TOUCH", "touch", -2, R, NULL, keel__kvc_cmd_exists, 1, -1, 1,
     "Count the keys that exist (keel keeps no access times)"},
    {"TTL", "ttl", 2, R, NULL, keel__kvc_cmd_ttl, 1, 1, 1, "Seconds a key has left to live"},
    {"TYPE", "type", 2, R, NULL, keel__kvc_cmd_type, 1, 1, 1, "The type of the value of a key"},
    {"UNLINK", "unlink", -2, W, NULL, keel__kvc_cmd_del, 1, -1, 1,
     "Delete keys (as DEL: the entry that applies it frees them)"},
    {"XACK", "xack", -4, W, NULL, keel__xs_cmd_xack, 1, 1, 1,
     "Acknowledge entries pending in a group"},
    {"XADD", "xadd", -5, W, keel__xs_xadd_syntax, keel__xs_cmd_xadd, 1, 1, 1,
     "Append an entry to a stream"},
    {"XAUTOCLAIM", "xautoclaim", -6, W, NULL, keel__xs_cmd_xautoclaim, 1, 1, 1,
     "Take over pending entries idle long enough, with a cursor"},
    {"XCLAIM", "xclaim", -6, W, NULL, keel__xs_cmd_xclaim, 1, 1, 1,
     "Take over pending entries of a group"},
    {"XDEL", "xdel", -3, W, NULL, keel__xs_cmd_xdel, 1, 1, 1, "Delete entries of a stream"},
    {"XGROUP", "xgroup", -2, W, keel__xs_xgroup_syntax, keel__xs_cmd_xgroup, 2, 2, 1,
     "Create, move, destroy consumer groups and their consumers"},
    {"XINFO", "xinfo", -2, R, keel__xs_xinfo_syntax, keel__xs_cmd_xinfo, 2, 2, 1,
     "Stream, group and consumer information"},
    {"XLEN", "xlen", 2, R, NULL, keel__xs_cmd_xlen, 1, 1, 1, "Number of entries in a stream"},
    {"XPENDING", "xpending", -3, R, NULL, keel__xs_cmd_xpending, 1, 1, 1,
     "Entries pending in a group"},
    {"XRANGE", "xrange", -4, R, NULL, keel__xs_cmd_xrange, 1, 1, 1,
     "Entries of a stream in an id range"},
    {"XREAD", "xread", -4, R | BL, keel__xs_xread_syntax, keel__xs_cmd_xread, 0, 0, 0,
     "Read entries after ids from streams, optionally waiting"},
    {"XREADGROUP", "xreadgroup", -7, W | BL, keel__xs_xreadgroup_syntax, keel__xs_cmd_xreadgroup, 0,
     0, 0, "Read entries as a consumer of a group (a write: the pending list changes)"},
    {"XREVRANGE", "xrevrange", -4, R, NULL, keel__xs_cmd_xrevrange, 1, 1, 1,
     "Entries of a stream in an id range, newest first"},
    {"XTRIM", "xtrim", -4, W, keel__xs_xtrim_syntax, keel__xs_cmd_xtrim, 1, 1, 1,
     "Trim a stream by length or minimum id"},
    {"ZADD", "zadd", -4, W, keel__zs_zadd_syntax, keel__zs_cmd_zadd, 1, 1, 1,
     "Add members with scores to a sorted set, or update their scores"},
    {"ZCARD", "zcard", 2, R, NULL, keel__zs_cmd_zcard, 1, 1, 1,
     "Number of members of a sorted set"},
    {"ZCOUNT", "zcount", 4, R, keel__zs_zcount_syntax, keel__zs_cmd_zcount, 1, 1, 1,
     "Count the members with scores in a range"},
    {"ZDIFF", "zdiff", -3, R, keel__zs_setop_syntax, keel__zs_cmd_zdiff, 0, 0, 0,
     "The members of a sorted set in none of the others"},
    {"ZDIFFSTORE", "zdiffstore", -4, W, keel__zs_setop_store_syntax, keel__zs_cmd_zdiffstore, 1, 1,
     1, "Store the difference of sorted sets"},
    {"ZINCRBY", "zincrby", 4, W, keel__zs_zincrby_syntax, keel__zs_cmd_zincrby, 1, 1, 1,
     "Increment the score of a member of a sorted set"},
    {"ZINTER", "zinter", -3, R, keel__zs_setop_syntax, keel__zs_cmd_zinter, 0, 0, 0,
     "The intersection of sorted sets, with weights and an aggregate"},
    {"ZINTERCARD", "zintercard", -3, R, keel__zs_setop_syntax, keel__zs_cmd_zintercard, 0, 0, 0,
     "The size of the intersection of sorted sets"},
    {"ZINTERSTORE", "zinterstore", -4, W, keel__zs_setop_store_syntax, keel__zs_cmd_zinterstore, 1,
     1, 1, "Store the intersection of sorted sets"},
    {"ZLEXCOUNT", "zlexcount", 4, R, keel__zs_zlexcount_syntax, keel__zs_cmd_zlexcount, 1, 1, 1,
     "Count the members in a lexicographical range"},
    {"ZMPOP", "zmpop", -4, W, keel__zs_zmpop_syntax, keel__zs_cmd_zmpop, 0, 0, 0,
     "Pop members from the first non-empty sorted set of several"},
    {"ZMSCORE", "zmscore", -3, R, NULL, keel__zs_cmd_zmscore, 1, 1, 1,
     "The scores of several members"},
    {"ZPOPMAX", "zpopmax", -2, W, keel__zs_zpop_syntax, keel__zs_cmd_zpopmax, 1, 1, 1,
     "Remove and return the members with the highest scores"},
    {"ZPOPMIN", "zpopmin", -2, W, keel__zs_zpop_syntax, keel__zs_cmd_zpopmin, 1, 1, 1,
     "Remove and return the members with the lowest scores"},
    {"ZRANDMEMBER", "zrandmember", -2, R, keel__zs_zrandmember_syntax, keel__zs_cmd_zrandmember, 1,
     1, 1, "Random members of a sorted set (drawn from the read's time and state)"},
    {"ZRANGE", "zrange", -4, R, keel__zs_zrange_syntax, keel__zs_cmd_zrange, 1, 1, 1,
     "Members in a range of ranks, scores (BYSCORE) or bytes (BYLEX)"},
    {"ZRANGEBYLEX", "zrangebylex", -4, R, keel__zs_zrangebylex_syntax, keel__zs_cmd_zrangebylex, 1,
     1, 1, "Members in a lexicographical range"},
    {"ZRANGEBYSCORE", "zrangebyscore", -4, R, keel__zs_zrangebyscore_syntax,
     keel__zs_cmd_zrangebyscore, 1, 1, 1, "Members with scores in a range"},
    {"ZRANGESTORE", "zrangestore", -5, W, keel__zs_zrangestore_syntax, keel__zs_cmd_zrangestore, 1,
     2, 1, "Store a ZRANGE of a sorted set as another key"},
    {"ZRANK", "zrank", 3, R, NULL, keel__zs_cmd_zrank, 1, 1, 1,
     "The rank of a member, lowest first"},
    {"ZREM", "zrem", -3, W, NULL, keel__zs_cmd_zrem, 1, 1, 1, "Remove members of a sorted set"},
    {"ZREMRANGEBYLEX", "zremrangebylex", 4, W, keel__zs_zremrangebylex_syntax,
     keel__zs_cmd_zremrangebylex, 1, 1, 1, "Remove the members in a lexicographical range"},
    {"ZREMRANGEBYRANK", "zremrangebyrank", 4, W, keel__zs_zremrangebyrank_syntax,
     keel__zs_cmd_zremrangebyrank, 1, 1, 1, "Remove the members in a range of ranks"},
    {"ZREMRANGEBYSCORE", "zremrangebyscore", 4, W, keel__zs_zremrangebyscore_syntax,
     keel__zs_cmd_zremrangebyscore, 1, 1, 1, "Remove the members with scores in a range"},
    {"ZREVRANGE", "zrevrange", -4, R, keel__zs_zrevrange_syntax, keel__zs_cmd_zrevrange, 1, 1, 1,
     "Members in a range of ranks, highest first"},
    {"ZREVRANGEBYLEX", "zrevrangebylex", -4, R, keel__zs_zrevrangebylex_syntax,
     keel__zs_cmd_zrevrangebylex, 1, 1, 1, "Members in a lexicographical range, highest first"},
    {"ZREVRANGEBYSCORE", "zrevrangebyscore", -4, R, keel__zs_zrevrangebyscore_syntax,
     keel__zs_cmd_zrevrangebyscore, 1, 1, 1, "Members with scores in a range, highest first"},
    {"ZREVRANK", "zrevrank", 3, R, NULL, keel__zs_cmd_zrevrank, 1, 1, 1,
     "The rank of a member, highest first"},
    {"ZSCAN", "zscan", -3, R, keel__zs_zscan_syntax, keel__zs_cmd_zscan, 1, 1, 1,
     "Iterate over the members and scores of a sorted set"},
    {"ZSCORE", "zscore", 3, R, NULL, keel__zs_cmd_zscore, 1, 1, 1, "The score of a member"},
    {"ZUNION", "zunion", -3, R, keel__zs_setop_syntax, keel__zs_cmd_zunion, 0, 0, 0,
     "The union of sorted sets, with weights and an aggregate"},
    {"ZUNIONSTORE", "zunionstore", -4, W, keel__zs_setop_store_syntax, keel__zs_cmd_zunionstore, 1,
     1, 1, "Store the union of sorted sets"},
};
#undef BP
#undef BL
#undef W
#undef R
#undef NN
#define COMMANDS_LEN (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

const cmd_t *keel__kvc_find_cmd(const uint8_t *name, size_t len)
{
    if (len == 0 || len > CMD_NAME_BYTES_MAX)
        return NULL;
    size_t lo = 0, hi = COMMANDS_LEN;
    while (lo < hi) { /* the table is sorted by name; the name sent is compared upper-cased */
        size_t mid = lo + (hi - lo) / 2;
        const char *n = COMMANDS[mid].name;
        size_t k = 0;
        int d = 0;
        while (k < len && n[k] != '\0' && (d = upper(name[k]) - (unsigned char)n[k]) == 0)
            k++;
        if (d == 0)
            d = k < len ? 1 : n[k] != '\0' ? -1 : 0;
        if (d == 0)
            return &COMMANDS[mid];
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

unsigned keel_kv_command_flags(const uint8_t *name, size_t len)
{
    const cmd_t *cmd = keel__kvc_find_cmd(name, len);
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

/* Lookup, arity and argc limit: 0 (go on) or REPLIED (an error reply). */
int keel__kvc_precheck_arity(call_t *c, size_t argc_max, const cmd_t **out)
{
    const cmd_t *cmd = keel__kvc_find_cmd(c->argv[0], c->lens[0]);
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
    return 0;
}

/* Lookup, arity, argc limit and syntax: 0 (go on) or REPLIED (an error reply). */
int keel__kvc_precheck(call_t *c, size_t argc_max, const cmd_t **out)
{
    int rc = keel__kvc_precheck_arity(c, argc_max, out);
    if (rc != 0)
        return rc;
    return (*out)->syntax ? (*out)->syntax(c) : 0;
}

/* Drops this command's partial reply. */
static void r_drop(reply_t *o)
{
    o->b->len = o->b->rpos + o->mark;
}

static int check(int argc, const uint8_t *const *argv, const size_t *lens, keel_buf_t *err_reply,
                 bool syntax)
{
    assert(argc >= 1);
    reply_t o = {err_reply, keel_buf_unread(err_reply), 0};
    call_t c = {NULL, NULL, 0, (size_t)argc, argv, lens, &o, NULL, NULL, NULL, NULL};
    const cmd_t *cmd = NULL;
    int rc = syntax ? keel__kvc_precheck(&c, KEEL_KV_ARGC_MAX, &cmd)
                    : keel__kvc_precheck_arity(&c, KEEL_KV_ARGC_MAX, &cmd);
    if (o.failed) {
        r_drop(&o);
        return o.failed;
    }
    return rc == REPLIED ? KEEL_EINVAL : 0;
}

int keel_kv_check(int argc, const uint8_t *const *argv, const size_t *lens, keel_buf_t *err_reply)
{
    return check(argc, argv, lens, err_reply, true);
}

int keel_kv_check_queued(int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_buf_t *err_reply)
{
    return check(argc, argv, lens, err_reply, false);
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
    call_t c = {writable, kv, now_ms, argc, argv, lens, &o, NULL, NULL, NULL, NULL};
    const cmd_t *cmd = NULL;
    int rc = keel__kvc_precheck(&c, kv->cfg.argc_max, &cmd);
    if (rc == 0) {
        if ((cmd->flags & KEEL_KV_WRITE) && writable == NULL)
            return KEEL_EINVAL;
        rc = keel__kvc_done(keel__kvc_run(cmd, &c));
        assert(rc == 0 || rc == KEEL_ENOMEM);
    }
    if (rc < 0 || !o.failed)
        return keel__kvc_done(rc);
    r_drop(&o);
    if (writable == NULL)
        return o.failed;
    static const char too_big[] = "-ERR reply does not fit the reply buffer\r\n";
    keel_buf_append(reply, too_big, sizeof(too_big) - 1); /* best effort */
    return 0;
}

/* ---- the keyspace's types ----------------------------------------------------------- */

int keel__kvc_cmd_type(const call_t *c)
{
    const keel__kv_entry_t *e = keel__kvc_lookup(c, 1);
    const char *name = e == NULL                         ? "none"
                       : e->type == KEEL__KV_TYPE_STRING ? "string"
                                                         : keel__kv_type(e->type)->name;
    if (!c->reply->failed)
        track(c->reply, keel_resp_write_simple(c->reply->b, name));
    return 0;
}

int keel__kvc_type_of_name(const call_t *c, size_t i)
{
    if (keel__kvc_arg_is(c, i, "STRING"))
        return KEEL__KV_TYPE_STRING;
    for (int t = 1; t < KEEL__KV_TYPES; t++) {
        if (keel__kv_type(t) == NULL)
            continue;
        const char *n = keel__kv_type(t)->name;
        size_t k = 0;
        while (n[k] && k < c->lens[i] && (c->argv[i][k] | 0x20) == n[k])
            k++;
        if (n[k] == '\0' && k == c->lens[i])
            return t;
    }
    return -2;
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
    out->internal = (COMMANDS[i].flags & (CMD_INTERNAL | CMD_HIDDEN)) != 0;
    out->blocking = (COMMANDS[i].flags & CMD_BLOCKING)       ? 1
                    : (COMMANDS[i].flags & CMD_BLOCKING_POP) ? 2
                                                             : 0;
    /* commands whose keys follow a count argument (Redis's movablekeys), by name: a table of
       their own, so that the rows above keep their shape */
    static const struct {
        const char *name;
        int at;
    } numkeys[] = {{"ZUNION", 1}, {"ZINTER", 1},      {"ZDIFF", 1},       {"ZINTERCARD", 1},
                   {"ZMPOP", 1},  {"ZUNIONSTORE", 2}, {"ZINTERSTORE", 2}, {"ZDIFFSTORE", 2},
                   {"LMPOP", 1},  {"BLMPOP", 2},      {"SINTERCARD", 1},  {"BZMPOP", 2}};
    out->numkeys_at = 0;
    for (size_t k = 0; k < sizeof(numkeys) / sizeof(numkeys[0]); k++)
        if (strcmp(numkeys[k].name, COMMANDS[i].name) == 0)
            out->numkeys_at = numkeys[k].at;
}
