/* kv_stream_int.h - what the stream command files (kv_stream.c, kv_stream_group.c) share. */
#ifndef KEEL_CORE_KV_STREAM_INT_H
#define KEEL_CORE_KV_STREAM_INT_H

#include "core/kv_cmd_int.h"
#include "core/stream.h"

#include <stdarg.h>

#define ERR_XID "ERR Invalid stream ID specified as stream command argument"

/* An error reply formatted like Redis's addReplyErrorFormat (at most 511 bytes); REPLIED. */
int keel__xs_errf(const call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* kv_stream_group.c, shared with kv_stream_info.c: Redis 7's subcommand table check (name
   and arity; 0 or the error written), and an idle time (now - then, never negative). */
int keel__xs_sub_arity(const call_t *c, const char *const *names, const int *arity, size_t n,
                       const char *cmd, const char *help);
int64_t keel__xs_idle_of(uint64_t now, uint64_t then);
/* NOGROUP for key argv[key] / group argv[group] (where: the error's tail). */
int keel__xs_nogroup(const call_t *c, size_t key, size_t group, const char *where);
/* The group argv[gi] of stream key argv[ki] for a write: 0 and *s, *g (NULL if absent), or
 * REPLIED (WRONGTYPE). */
int keel__xs_wgroup(const call_t *c, size_t ki, size_t gi, keel_stream_t **s,
                    keel_stream_group_t **g);
/* kv_stream_dlq.c: an entry at its group's limit (KEEL.XDEADLETTER) goes to the dead letters
   instead of being delivered or returned again: 1 moved, 0 not, or ENOMEM. */
int keel__xs_over_limit(const call_t *c, size_t key, keel_stream_t *s, keel_stream_group_t *g,
                        const keel_stream_pending_t *p, const uint8_t *err, size_t err_len);
/* Reply writers: an id as a bulk string; an entry as [id, [f, v, ...]]. */
void keel__xs_id(reply_t *o, keel_stream_id_t id);
void keel__xs_entry(reply_t *o, const keel_stream_entry_t *e);
/* The array of the live entries in [start, end] (count 0: all); returns how many. */
size_t keel__xs_range(reply_t *o, const keel_stream_t *s, keel_stream_id_t start,
                      keel_stream_id_t end, uint64_t count, int rev);
/* Argument i as an id (ERR_XID on failure: REPLIED), and as a range bound with '('. */
int keel__xs_parse_id(const call_t *c, size_t i, uint64_t missing_seq, int strict,
                      keel_stream_id_t *id);
int keel__xs_parse_bound(const call_t *c, size_t i, int is_end, keel_stream_id_t *id);
/* Key argv[i] as a stream: 0 and *s (NULL when absent), or REPLIED after WRONGTYPE. */
int keel__xs_read_lookup(const call_t *c, size_t i, const keel_stream_t **s);
int keel__xs_write_lookup(const call_t *c, size_t i, keel__kv_entry_t ***link, keel_stream_t **s);
/* Limits for creating key argv[i] (absent): 0 or REPLIED. */
int keel__xs_check_new(const call_t *c, size_t i);
/* Links the new stream s (built whole) as key argv[i]: 0 (s owned by the key) or ENOMEM. */
int keel__xs_link(const call_t *c, size_t i, keel_stream_t *s);
int keel__xs_link_key(const call_t *c, const uint8_t *key, size_t len, keel_stream_t *s);
/* The stream at argv[i] changed: memory accounting, a new version, the revision + 1. */
void keel__xs_changed(const call_t *c, size_t i, size_t bytes_before);
/* The same for a key without the revision step: a command that changes several keys makes
 * each a version of revision + 1 and then steps the revision once. */
void keel__xs_touch(const call_t *c, const uint8_t *key, size_t len, size_t bytes_before);
/* The id XADD * gives at the entry's time after last: 0, or KEEL_ERANGE (ids exhausted). */
int keel__xs_auto_id(const call_t *c, keel_stream_id_t last, keel_stream_id_t *out);
size_t keel__xs_bytes(const keel_stream_t *s);

typedef struct xread_args {
    int64_t block_ms; /* -1: no BLOCK */
    uint64_t count;   /* 0: all */
    size_t streams_pos, nstreams, group_pos;
    int noack;
    int priority;   /* KEEL.PRIORITY: COUNT shared by the streams in their order (keel) */
    int64_t starve; /* KEEL.STARVE n: every n-th such read serves them in reverse; 0: never */
} xread_args_t;
/* XREAD / XREADGROUP options (Redis xreadCommand's parse): 0 or REPLIED. */
int keel__xs_read_parse(const call_t *c, int group, xread_args_t *a);

int keel__xs_xadd_syntax(const call_t *c);
int keel__xs_cmd_xadd(const call_t *c);
int keel__xs_xtrim_syntax(const call_t *c);
int keel__xs_cmd_xtrim(const call_t *c);
int keel__xs_cmd_xdel(const call_t *c);
int keel__xs_cmd_xlen(const call_t *c);
int keel__xs_cmd_xrange(const call_t *c);
int keel__xs_cmd_xrevrange(const call_t *c);
int keel__xs_xread_syntax(const call_t *c);
int keel__xs_cmd_xread(const call_t *c);
int keel__xs_xreadgroup_syntax(const call_t *c);
int keel__xs_cmd_xreadgroup(const call_t *c);
int keel__xs_cmd_xgroup(const call_t *c);
int keel__xs_cmd_xack(const call_t *c);
int keel__xs_cmd_xpending(const call_t *c);
int keel__xs_cmd_xclaim(const call_t *c);
int keel__xs_cmd_xautoclaim(const call_t *c);
int keel__xs_cmd_xinfo(const call_t *c);
int keel__xs_xnack_syntax(const call_t *c);
int keel__xs_cmd_xnack(const call_t *c);
int keel__xs_xdeadletter_syntax(const call_t *c);
/* Refreshes the retention index row of the stream at key (after RENAME or COPY made it). */
void keel__xs_reindex(keel_kv_t *kv, const uint8_t *key, size_t len);
int keel__xs_xretain_syntax(const call_t *c);
int keel__xs_cmd_xretain(const call_t *c);
int keel__xs_xretain_sweep_syntax(const call_t *c);
int keel__xs_cmd_xretain_sweep(const call_t *c);
int keel__xs_cmd_xdeadletter(const call_t *c);

#endif
