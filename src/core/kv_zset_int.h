/* kv_zset_int.h - what the sorted-set command files (kv_zset.c, kv_zset_range.c,
   kv_zset_ops.c) share. */
#ifndef KEEL_CORE_KV_ZSET_INT_H
#define KEEL_CORE_KV_ZSET_INT_H

#include "core/kv_cmd_int.h"
#include "core/zset.h"

#define ERR_ZS_FLOAT "ERR value is not a valid float"
#define ERR_ZS_RANGE "ERR min or max is not a float"
#define ERR_ZS_LEX "ERR min or max not valid string range item"
#define ERR_ZS_NAN "ERR resulting score is not a number (NaN)"
#define ERR_ZS_POSITIVE "ERR value is out of range, must be positive"
/* Bytes of the longest score text: "%.17g" of a double (24) with room to spare. */
#define ZS_SCORE_TEXT_BYTES_MAX 40u

extern const keel__kv_type_t keel__kv_type_zset;

/* Redis getDoubleFromObject: a score argument. 0 and *out, or -1. */
int keel__zs_parse_score(const uint8_t *p, size_t n, double *out);
/* Range arguments argv[imin], argv[imax] as Redis zslParseRange and zslParseLexRange read
   them, and an integer argument: 0, or REPLIED after the error. */
int keel__zs_parse_range(const call_t *c, size_t imin, size_t imax, keel_zset_range_t *r);
int keel__zs_parse_lex(const call_t *c, size_t imin, size_t imax, keel_zset_lex_t *r);
int keel__zs_parse_long(const call_t *c, size_t i, int64_t *v);
/* Score texts: Redis addReplyDouble ("%.17g", inf, -inf); d2string (a listpack's stored
   form, what ZSCAN shows of a listpack: integers within +-2^62 as integers). */
size_t keel__zs_fmt_reply(char *out, double d);
size_t keel__zs_fmt_stored(char *out, double d);
void keel__zs_r_score(reply_t *o, double d);
/* A score as the set stores it: -0 becomes 0 while Redis would hold the set as listpack. */
double keel__zs_stored(const keel_zset_t *z, double d);

/* Key argv[i] as a sorted set, unpacked (zset.h) for the command: 0 and *z (NULL when
   absent), REPLIED after WRONGTYPE, or KEEL_ENOMEM (the unpack failed; nothing changed). */
int keel__zs_read_lookup(const call_t *c, size_t i, const keel_zset_t **z);
int keel__zs_write_lookup(const call_t *c, size_t i, keel_zset_t **z);
/*
 * The set at key argv[i] changed (bytes_before: its memory before): a new version at
 * revision + 1, memory accounted, the key deleted if the set is now empty. Does not step
 * the revision (several keys may change in one command): the caller does, once.
 */
void keel__zs_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before);
/*
 * Makes key (absent, expired or of any type) hold z, built whole (owned from here on), or
 * deletes the key when z is empty (z freed): the store commands' write. 0 or KEEL_ENOMEM
 * (nothing changed, z still the caller's). Steps no revision.
 */
int keel__zs_store(const call_t *c, const uint8_t *key, size_t len, keel_zset_t *z, int *changed);
/* The set of entry e (a sorted set's), in node form for the command: 0 and *z, or
   KEEL_ENOMEM (nothing changed). */
int keel__zs_unpacked(const call_t *c, const keel__kv_entry_t *e, keel_zset_t **z);
/* After a command that unpacked sorted sets (call_t's zs_unpacked): packs back every
   listpack-encoded set a key in argv names (keel__kvc_run calls it). */
void keel__zs_repack(const call_t *c);
/* Limits for creating key argv[i] when it is absent: 0 or REPLIED. */
int keel__zs_check_new(const call_t *c, const uint8_t *key, size_t len);

/*
 * The pop shared by ZPOPMIN, ZPOPMAX and ZMPOP, and meant for the blocking forms
 * (BZPOPMIN, BZPOPMAX, BZMPOP: a wrapper that waits until this finds a set): pops up to
 * count members from the first non-empty set among keys argv[first .. first + n - 1],
 * from the low end (max 0) or the high end. Replies as Redis's genericZpopCommand:
 * with `nested`, [key, [[member, score], ...]] (ZMPOP), else a flat [member, score, ...]
 * (emit_key puts the key first: BZPOPMIN's form); nothing found: a nil array when
 * nil_when_empty, else an empty one, or no reply at all when silent_when_empty (a blocking
 * wrapper then waits instead). Returns 0 (*popped: members removed, so the caller knows
 * whether a blocked client was served), KEEL_ENOMEM (a set could not be unpacked) or
 * REPLIED after WRONGTYPE (checked key by key up
 * to the first set, as Redis does before it would block).
 */
typedef struct keel__zs_pop_opts {
    size_t first, n;
    int max;
    uint64_t count;
    int nested, emit_key, nil_when_empty, silent_when_empty;
} keel__zs_pop_opts_t;
int keel__zs_pop(const call_t *c, const keel__zs_pop_opts_t *o, uint64_t *popped);

/* kv_zset.c */
int keel__zs_zadd_syntax(const call_t *c);
int keel__zs_cmd_zadd(const call_t *c);
int keel__zs_zincrby_syntax(const call_t *c);
int keel__zs_cmd_zincrby(const call_t *c);
int keel__zs_cmd_zrem(const call_t *c);
int keel__zs_cmd_zcard(const call_t *c);
int keel__zs_cmd_zscore(const call_t *c);
int keel__zs_cmd_zmscore(const call_t *c);
int keel__zs_zcount_syntax(const call_t *c);
int keel__zs_cmd_zcount(const call_t *c);
int keel__zs_zlexcount_syntax(const call_t *c);
int keel__zs_cmd_zlexcount(const call_t *c);
int keel__zs_cmd_zrank(const call_t *c);
int keel__zs_cmd_zrevrank(const call_t *c);
/* kv_zset_range.c */
int keel__zs_zrange_syntax(const call_t *c);
int keel__zs_cmd_zrange(const call_t *c);
int keel__zs_zrangestore_syntax(const call_t *c);
int keel__zs_cmd_zrangestore(const call_t *c);
int keel__zs_zrangebyscore_syntax(const call_t *c);
int keel__zs_cmd_zrangebyscore(const call_t *c);
int keel__zs_zrevrangebyscore_syntax(const call_t *c);
int keel__zs_cmd_zrevrangebyscore(const call_t *c);
int keel__zs_zrangebylex_syntax(const call_t *c);
int keel__zs_cmd_zrangebylex(const call_t *c);
int keel__zs_zrevrangebylex_syntax(const call_t *c);
int keel__zs_cmd_zrevrangebylex(const call_t *c);
int keel__zs_zrevrange_syntax(const call_t *c);
int keel__zs_cmd_zrevrange(const call_t *c);
int keel__zs_zremrangebyscore_syntax(const call_t *c);
int keel__zs_cmd_zremrangebyscore(const call_t *c);
int keel__zs_zremrangebyrank_syntax(const call_t *c);
int keel__zs_cmd_zremrangebyrank(const call_t *c);
int keel__zs_zremrangebylex_syntax(const call_t *c);
int keel__zs_cmd_zremrangebylex(const call_t *c);
/* kv_zset_ops.c */
int keel__zs_zpop_syntax(const call_t *c);
int keel__zs_cmd_zpopmin(const call_t *c);
int keel__zs_cmd_zpopmax(const call_t *c);
int keel__zs_zmpop_syntax(const call_t *c);
int keel__zs_cmd_zmpop(const call_t *c);
int keel__zs_bzpop_syntax(const call_t *c);
int keel__zs_cmd_bzpopmin(const call_t *c);
int keel__zs_cmd_bzpopmax(const call_t *c);
int keel__zs_bzmpop_syntax(const call_t *c);
int keel__zs_cmd_bzmpop(const call_t *c);
int keel__zs_zrandmember_syntax(const call_t *c);
int keel__zs_cmd_zrandmember(const call_t *c);
int keel__zs_setop_syntax(const call_t *c);
int keel__zs_setop_store_syntax(const call_t *c);
int keel__zs_cmd_zunion(const call_t *c);
int keel__zs_cmd_zinter(const call_t *c);
int keel__zs_cmd_zdiff(const call_t *c);
int keel__zs_cmd_zintercard(const call_t *c);
int keel__zs_cmd_zunionstore(const call_t *c);
int keel__zs_cmd_zinterstore(const call_t *c);
int keel__zs_cmd_zdiffstore(const call_t *c);
int keel__zs_zscan_syntax(const call_t *c);
int keel__zs_cmd_zscan(const call_t *c);

#endif
