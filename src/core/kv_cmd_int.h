/* kv_cmd_int.h - what core/kv's command files share: the call, the table row, replies. */
#ifndef KEEL_CORE_KV_CMD_INT_H
#define KEEL_CORE_KV_CMD_INT_H

#include "core/kv_int.h"
#include "proto/resp.h"

/*
 * The commands are split by family, one file each: kv_strings.c, kv_expire.c,
 * kv_leases.c (leases, locks, KEEL.FENCED), kv_txn.c, kv_scan.c, kv_strings_ext.c, kv_keys.c,
 * kv_bits.c, kv_bitfield.c, kv_hash.c and kv_set.c (on kv_coll.c and kv_coll_cmd.c);
 * kv_cmd.c holds the table
 * and the one way every command runs. The glob matcher is base/glob.
 */
#define REPLIED 1        /* a syntax function wrote an error reply */
#define CMD_NO_NEST 4u   /* a command flag: may not run inside KEEL.FENCED or a transaction */
#define CMD_INTERNAL 8u  /* housekeeping the leader proposes with its own clock, never a client */
#define CMD_BLOCKING 16u /* takes BLOCK ms: the server may wait for entries (XREAD, XREADGROUP) */
#define CMD_HIDDEN 32u   /* not a client command: what a front-end command sends (KEEL.REG) */
#define CMD_BLOCKING_POP 64u /* a blocking pop (BLPOP, ...): the server blocks it (lblock.c) */

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
    /* Set to 1 by a lookup that unpacked a sorted set for this command (zset_pack.c):
       keel__kvc_run packs the sets named in argv back after the handler. NULL: nobody
       packs them back before the next change (still correct, only bigger). */
    int *zs_unpacked;
    /* What set lookups leave for keel__kvc_run to do after the handler (kv_set_inline.c).
       NULL: sets unpacked stay tables (correct, only bigger). */
    struct keel__ks_run *ks;
} call_t;

/* What a command's set lookups leave for keel__kvc_run (kv_set_inline.c). */
#define KEEL__KS_RUN_TMP_MAX 4
#define KEEL__KS_RUN_KEYS_MAX 4
typedef struct keel__ks_run {
    unsigned n; /* tables built beside inline entries that the command only reads, freed after */
    struct keel__kc *tmp[KEEL__KS_RUN_TMP_MAX];
    /* the keys (argv's bytes) of sets the command unpacked into their entries, made, stored,
       copied or changed: packed after it if small sets of integers; more than fit: `all`
       (every argv is tried) */
    unsigned nkeys;
    int all;
    const uint8_t *key[KEEL__KS_RUN_KEYS_MAX];
    size_t len[KEEL__KS_RUN_KEYS_MAX];
} keel__ks_run_t;

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

#define ERR_SYNTAX "ERR syntax error"
#define ERR_NOT_INT "ERR value is not an integer or out of range"
#define ERR_OVERFLOW "ERR increment or decrement would overflow"
#define ERR_VALUE_SIZE "ERR string exceeds maximum allowed size"
#define ERR_KEY_SIZE "ERR key exceeds maximum allowed size"
#define ERR_KEYS_MAX "OOM command not allowed when the number of keys would exceed 'keys_max'"

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

static inline void track(reply_t *o, int rc)
{
    if (rc != 0 && o->failed == 0)
        o->failed = rc;
}

static inline void r_int(reply_t *o, int64_t v)
{
    if (!o->failed)
        track(o, keel_resp_write_int(o->b, v));
}

static inline void r_array(reply_t *o, size_t n)
{
    if (!o->failed)
        track(o, keel_resp_write_array_header(o->b, n));
}

static inline void r_bulk(reply_t *o, const uint8_t *p, size_t n)
{
    if (!o->failed)
        track(o, keel_resp_write_bulk(o->b, p, n));
}

static inline void r_nil(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_nil(o->b));
}

static inline void r_nil_array(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_nil_array(o->b));
}

static inline void r_ok(reply_t *o)
{
    if (!o->failed)
        track(o, keel_resp_write_simple(o->b, "OK"));
}

/* An error reply from a fixed text; REPLIED, so callers stop the command. */
static inline int r_err(reply_t *o, const char *text)
{
    if (!o->failed)
        track(o, keel_resp_write_error(o->b, text));
    return REPLIED;
}

/* An error naming a client's argument (at most 128 bytes of it, as Redis shows them). */
static inline int r_err_arg(reply_t *o, const char *before, const uint8_t *p, size_t n,
                            const char *after)
{
    if (!o->failed)
        track(o, keel_resp_write_errorf(o->b, "%s%.*s%s", before, (int)(n < 128 ? n : 128),
                                        (const char *)p, after));
    return REPLIED;
}

/* The bulk reply of an optional value: $-1 when e is NULL. */
static inline void r_value(reply_t *o, const keel__kv_entry_t *e)
{
    if (e)
        r_bulk(o, keel__kv_cval(e), e->val_len);
    else
        r_nil(o);
}

/* Shared between the command files (keel__kvc_*). */
int keel__kvc_arg_is(const call_t *c, size_t i, const char *word);
int keel__kvc_check_sizes(const call_t *c, size_t key_len, size_t val_len);
int keel__kvc_check_room(const call_t *c, size_t new_keys);
int keel__kvc_done(int rc);
keel__kv_entry_t *keel__kvc_wfind(const call_t *c, const uint8_t *key, size_t key_len, uint64_t h,
                                  keel__kv_entry_t ***link, int *dead);
void keel__kvc_set_version(keel_kv_t *kv, keel__kv_entry_t *e, uint64_t rev);
int keel__kvc_create(keel_kv_t *kv, keel__kv_entry_t **link, int dead, const uint8_t *key,
                     size_t key_len, uint64_t h, const uint8_t *val, size_t val_len, uint64_t rev,
                     keel__kv_entry_t **made);
int keel__kvc_overwrite(keel_kv_t *kv, keel__kv_entry_t **link, const uint8_t *val, size_t val_len,
                        uint64_t rev);
int keel__kvc_store_obj(const call_t *c, const uint8_t *key, size_t len, int type, void *obj,
                        size_t bytes, int *changed);
int keel__kvc_run(const cmd_t *cmd, const call_t *c);
call_t keel__kvc_inner_call(const call_t *c, size_t from);
const cmd_t *keel__kvc_find_cmd(const uint8_t *name, size_t len);
int keel__kvc_precheck(call_t *c, size_t argc_max, const cmd_t **out);
/* The same without the syntax check (what MULTI judges when it queues, as Redis 7.0). */
int keel__kvc_precheck_arity(call_t *c, size_t argc_max, const cmd_t **out);
int keel__kvc_set_syntax(const call_t *c);
int keel__kvc_put_value(const call_t *c, size_t val_arg, keel__kv_entry_t **link,
                        keel__kv_entry_t *e, int dead, uint64_t h, uint64_t expire_ms,
                        int keep_ttl);
int keel__kvc_cmd_set(const call_t *c);
int keel__kvc_cmd_getset(const call_t *c);
/* kv_staged.c */
int keel__kvc_stage_syntax(const call_t *c);
int keel__kvc_cmd_stage(const call_t *c);
int keel__kvc_stage_set_syntax(const call_t *c);
int keel__kvc_cmd_stage_set(const call_t *c);
int keel__kvc_stage_drop_syntax(const call_t *c);
int keel__kvc_cmd_stage_drop(const call_t *c);
int keel__kvc_mset_syntax(const call_t *c);
int keel__kvc_cmd_mset(const call_t *c);
int keel__kvc_cmd_del(const call_t *c);
int keel__kvc_incrby_syntax(const call_t *c);
int keel__kvc_decrby_syntax(const call_t *c);
int keel__kvc_cmd_incr(const call_t *c);
int keel__kvc_cmd_decr(const call_t *c);
int keel__kvc_cmd_incrby(const call_t *c);
int keel__kvc_cmd_decrby(const call_t *c);
int keel__kvc_cmd_append(const call_t *c);
const keel__kv_entry_t *keel__kvc_lookup(const call_t *c, size_t i);
int keel__kvc_cmd_get(const call_t *c);
int keel__kvc_cmd_mget(const call_t *c);
int keel__kvc_cmd_exists(const call_t *c);
int keel__kvc_cmd_strlen(const call_t *c);
int keel__kvc_cmd_dbsize(const call_t *c);
int keel__kvc_flush_syntax(const call_t *c);
int keel__kvc_cmd_flushall(const call_t *c);
int keel__kvc_cmd_getv(const call_t *c);
int keel__kvc_cmd_mgetv(const call_t *c);
int keel__kvc_cas_syntax(const call_t *c);
int keel__kvc_cmd_cas(const call_t *c);
int keel__kvc_sort_syntax(const call_t *c);
int keel__kvc_sort_ro_syntax(const call_t *c);
int keel__kvc_cmd_sort(const call_t *c);
int keel__kvc_cmd_sort_ro(const call_t *c);
int keel__kvc_cmd_ttl(const call_t *c);
int keel__kvc_cmd_pttl(const call_t *c);
int keel__kvc_expire_syntax(const call_t *c);
int keel__kvc_cmd_expire(const call_t *c);
int keel__kvc_cmd_pexpire(const call_t *c);
int keel__kvc_cmd_expireat(const call_t *c);
int keel__kvc_cmd_pexpireat(const call_t *c);
int keel__kvc_cmd_persist(const call_t *c);
int keel__kvc_two_counts_syntax(const call_t *c);
uint64_t keel__kvc_sweep_args(const call_t *c, int64_t *max);
int keel__kvc_cmd_expire_sweep(const call_t *c);
int keel__kvc_lease_syntax(const call_t *c);
int keel__kvc_cmd_lease(const call_t *c);
int keel__kvc_cmd_lease_sweep(const call_t *c);
int keel__kvc_kset_syntax(const call_t *c);
int keel__kvc_cmd_kset(const call_t *c);
int keel__kvc_lock_syntax(const call_t *c);
int keel__kvc_cmd_lock(const call_t *c);
int keel__kvc_unlock_syntax(const call_t *c);
int keel__kvc_cmd_unlock(const call_t *c);
int keel__kvc_fenced_syntax(const call_t *c);
int keel__kvc_cmd_fenced(const call_t *c);
int keel__kvc_txn_syntax(const call_t *c);
int keel__kvc_cmd_txn(const call_t *c);
int keel__kvc_lockrun_syntax(const call_t *c);
int keel__kvc_cmd_lockrun(const call_t *c);
int keel__kvc_scan_syntax(const call_t *c);
/* TYPE key; and a TYPE name argument (SCAN TYPE) as KEEL__KV_TYPE_*, or -2 for none. */
int keel__kvc_cmd_type(const call_t *c);
int keel__kvc_type_of_name(const call_t *c, size_t i);
/* The stream commands' syntax functions with a table row (kv_stream*.c). */
int keel__xs_xgroup_syntax(const call_t *c);
int keel__xs_xinfo_syntax(const call_t *c);
int keel__kvc_cmd_scan(const call_t *c);
/* A SCAN cursor as Redis reads it (strtoul): 0 or -1. */
int keel__kvc_parse_cursor(const uint8_t *p, size_t n, uint64_t *out);
int keel__kvc_reg_write_syntax(const call_t *c);
int keel__kvc_cmd_reg_write(const call_t *c);
int keel__kvc_reg_read_syntax(const call_t *c);
int keel__kvc_cmd_reg_read(const call_t *c);
int keel__kvc_cmd_reg_sweep(const call_t *c);
int keel__kvc_reg_limits_syntax(const call_t *c);
int keel__kvc_cmd_reg_limits(const call_t *c);
/* kv_strings_ext.c */
int keel__kvc_cmd_msetnx(const call_t *c);
int keel__kvc_cmd_setnx(const call_t *c);
int keel__kvc_setex_syntax(const call_t *c);
int keel__kvc_cmd_setex(const call_t *c);
int keel__kvc_cmd_getdel(const call_t *c);
int keel__kvc_getex_syntax(const call_t *c);
int keel__kvc_cmd_getex(const call_t *c);
int keel__kvc_getrange_syntax(const call_t *c);
int keel__kvc_cmd_getrange(const call_t *c);
int keel__kvc_setrange_syntax(const call_t *c);
int keel__kvc_cmd_setrange(const call_t *c);
int keel__kvc_cmd_incrbyfloat(const call_t *c);
int keel__kvc_cmd_lcs(const call_t *c);
/* INCRBYFLOAT's number reading and writing (Redis's strtold and ld2string, LD_STR_HUMAN):
 * parse 0 or -1; fmt returns the length written to buf (room for KEEL__KVC_LD_CHARS_MAX). */
#define KEEL__KVC_LD_CHARS_MAX (5u * 1024u)
int keel__kvc_parse_ld(const uint8_t *p, size_t n, long double *out);
size_t keel__kvc_fmt_ld(char *buf, size_t cap, long double v);
/* kv_bits.c */
int keel__kvc_setbit_syntax(const call_t *c);
int keel__kvc_cmd_setbit(const call_t *c);
int keel__kvc_getbit_syntax(const call_t *c);
int keel__kvc_cmd_getbit(const call_t *c);
int keel__kvc_cmd_bitcount(const call_t *c);
int keel__kvc_bitpos_syntax(const call_t *c);
int keel__kvc_cmd_bitpos(const call_t *c);
int keel__kvc_bitop_syntax(const call_t *c);
int keel__kvc_cmd_bitop(const call_t *c);
/* kv_bitfield.c */
int keel__kvc_bitfield_syntax(const call_t *c);
int keel__kvc_cmd_bitfield(const call_t *c);
/* kv_keys.c */
int keel__kvc_cmd_rename(const call_t *c);
int keel__kvc_cmd_renamenx(const call_t *c);
int keel__kvc_copy_syntax(const call_t *c);
int keel__kvc_cmd_copy(const call_t *c);
int keel__kvc_cmd_keys(const call_t *c);
int keel__kvc_cmd_randomkey(const call_t *c);
int keel__kvc_cmd_expiretime(const call_t *c);
int keel__kvc_cmd_pexpiretime(const call_t *c);
int keel__kvc_object_syntax(const call_t *c);
int keel__kvc_cmd_object(const call_t *c);
/* kv_list_block.c, kv_list_cmd.c (kv_list_int.h: the list type) */
int keel__kvl_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_kv_bpop_t *out);
uint64_t keel__kvl_len(const void *obj);
/* A blocking pop's timeout as Redis 7.0 reads it (seconds, a long double) into
 * milliseconds: 0 or -1 (not a number). parse_timeout replies its errors ("not a float or
 * out of range", "negative"); timeout_in_range adds the clock's "out of range". */
int keel__kv_timeout_ms(const uint8_t *p, size_t n, int64_t *ms);
int keel__kv_parse_timeout(const call_t *c, size_t i, int64_t *ms);
int keel__kv_timeout_in_range(const call_t *c, size_t i);
/* kv_zset_ops.c: the sorted sets' blocking pops for kv_bpop.c: -1 when argv is not one of
 * them, else keel_kv_bpop_parse's answer. */
int keel__zs_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                        keel_kv_bpop_t *out);
uint64_t keel__zs_len(const void *obj);
int keel__kvl_cmd_lpush(const call_t *c);
int keel__kvl_cmd_rpush(const call_t *c);
int keel__kvl_cmd_lpushx(const call_t *c);
int keel__kvl_cmd_rpushx(const call_t *c);
int keel__kvl_cmd_lpop(const call_t *c);
int keel__kvl_cmd_rpop(const call_t *c);
int keel__kvl_cmd_llen(const call_t *c);
int keel__kvl_cmd_lindex(const call_t *c);
int keel__kvl_cmd_lrange(const call_t *c);
int keel__kvl_cmd_lset(const call_t *c);
int keel__kvl_cmd_linsert(const call_t *c);
int keel__kvl_cmd_lrem(const call_t *c);
int keel__kvl_cmd_ltrim(const call_t *c);
int keel__kvl_cmd_lpos(const call_t *c);
int keel__kvl_cmd_lmove(const call_t *c);
int keel__kvl_cmd_rpoplpush(const call_t *c);
int keel__kvl_cmd_lmpop(const call_t *c);
int keel__kvl_cmd_blpop(const call_t *c);
int keel__kvl_cmd_brpop(const call_t *c);
int keel__kvl_cmd_blmove(const call_t *c);
int keel__kvl_cmd_brpoplpush(const call_t *c);
int keel__kvl_cmd_blmpop(const call_t *c);
int keel__kvl_cmd_kbpop(const call_t *c);
int keel__kvl_pop_syntax(const call_t *c);
int keel__kvl_range_syntax(const call_t *c);
int keel__kvl_linsert_syntax(const call_t *c);
int keel__kvl_lpos_syntax(const call_t *c);
int keel__kvl_lmove_syntax(const call_t *c);
int keel__kvl_blmove_syntax(const call_t *c);
int keel__kvl_brpoplpush_syntax(const call_t *c);
int keel__kvl_lmpop_syntax(const call_t *c);
int keel__kvl_blmpop_syntax(const call_t *c);
int keel__kvl_bpop_syntax(const call_t *c);
int keel__kvl_kbpop_syntax(const call_t *c);

#endif
