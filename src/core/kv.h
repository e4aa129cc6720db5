/* kv.h - keel server's replicated KV state machine: Redis strings, versions, snapshots. */
#ifndef KEEL_CORE_KV_H
#define KEEL_CORE_KV_H

#include "base/buf.h"
#include "base/err.h"
#include "core/registry.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The deterministic state machine that keel server applies committed Raft
 * entries to (Raft thesis §3.1, "replicated state machines"): the same entries
 * in the same order give the same state, byte for byte, on every node. It is
 * a pure core (ARCHITECTURE.md): no clock, no I/O, no global state; the time a
 * command was proposed travels inside the entry.
 *
 * Data model: binary-safe keys -> binary-safe values, each with two revisions
 * in the style of etcd's mvccpb.KeyValue:
 *   - revision          a global counter, +1 for every command that changes
 *                       something (MSET of 10 keys is one change, like an
 *                       etcd txn); commands that change nothing leave it;
 *   - version           (per key) the revision of the key's last change
 *                       (etcd's mod_revision);
 *   - create_revision   (per key) the revision that created the key.
 *
 * Flow inside keel server:
 *   client argv -> keel_kv_command_flags() -> keel_kv_check() (arity, syntax)
 *     write: keel_kv_entry_encode() -> Raft propose -> commit ->
 *            keel_kv_apply() on every node; the proposer sends `reply`.
 *     read:  ReadIndex / lease -> keel_kv_read() on the leader.
 *
 * Replies are exact RESP2 bytes (https://redis.io/docs/reference/protocol-spec/)
 * with the texts redis-server 7.0 uses. A command error (syntax, not an
 * integer, limit exceeded) is a normal `-ERR` reply and changes nothing.
 *
 * Storage is a chained hash table with power-of-two bucket arrays and
 * incremental rehashing (Redis dict.c's scheme), so that SCAN can use Redis's
 * reverse-binary cursor, whose guarantee survives table growth and shrinking:
 * a key present for the whole iteration is returned at least once.
 */

/* Hard caps; the config may only lower them. */
#define KEEL_KV_KEY_BYTES_MAX (512u * 1024u * 1024u)   /* Redis proto-max-bulk-len */
#define KEEL_KV_VALUE_BYTES_MAX (512u * 1024u * 1024u) /* Redis proto-max-bulk-len */
#define KEEL_KV_KEYS_MAX ((size_t)1 << 32)
#define KEEL_KV_ARGC_MAX (1024u * 1024u) /* as KEEL_RESP_ARRAY_LEN_MAX */
/* A SCAN call stops walking buckets once its reply holds this much. */
#define KEEL_KV_SCAN_REPLY_BYTES_MAX (4u * 1024u * 1024u)

/* Command entry format version (first byte of every entry). */
#define KEEL_KV_ENTRY_VERSION 1
/* u8 version | u64 time_ms | u32 argc */
#define KEEL_KV_ENTRY_HEADER_BYTES 13u
/* Snapshot format version: 4 added the keys of other types (streams), 5 the tagged
 * sections after them (the registry). Older versions are still read. */
#define KEEL_KV_SNAPSHOT_VERSION 5
#define KEEL_KV_SNAPSHOT_VERSION_TYPED 4
#define KEEL_KV_SNAPSHOT_VERSION_SECTIONS 5
/* Caps on the change history's config (the defaults are far below). */
#define KEEL_KV_HISTORY_CHANGES_MAX ((size_t)1 << 30)
#define KEEL_KV_HISTORY_BYTES_MAX ((size_t)1 << 40)
/* Large SET values replicated in pieces (kv_staged.c): a piece's bytes, the staged values
   that may exist at once, and how long one is kept without a piece (entry time). */
#define KEEL_KV_STAGE_PIECE_BYTES (1024u * 1024u)
#define KEEL_KV_STAGES_MAX 16u
#define KEEL_KV_STAGE_IDLE_MS 60000u
/* keel_kv_next_deadline_ms() when no key has a deadline. */
#define KEEL_KV_NO_DEADLINE UINT64_MAX

typedef struct keel_kv_config {
    size_t key_bytes_max;   /* default 64 KiB */
    size_t value_bytes_max; /* default 1 MiB */
    size_t keys_max;        /* default 10 million */
    size_t argc_max;        /* default KEEL_KV_ARGC_MAX */
    uint64_t hash_seed;     /* hash-flooding defence; any value is deterministic */
    /* The change history KEEL.WATCH streams from (see "change history" below). */
    size_t history_changes_max; /* default 100000; 1..KEEL_KV_HISTORY_CHANGES_MAX */
    size_t history_bytes_max;   /* key + value + a 24-byte header a change; default 64 MiB */
} keel_kv_config_t;

keel_kv_config_t keel_kv_config_default(void);
int keel_kv_config_validate(const keel_kv_config_t *cfg, keel_errmsg_t *msg);

/* One stored key (internal layout; read it through keel_kv_get). */
typedef struct keel__kv_entry keel__kv_entry_t;

typedef struct keel__kv_table {
    keel__kv_entry_t **buckets; /* owned; NULL when size is 0 */
    size_t mask;                /* size - 1 */
    size_t used;                /* entries in this table */
} keel__kv_table_t;

/* One recorded change (internal layout; read it through keel_kv_history_at). */
typedef struct keel__kv_change keel__kv_change_t;

/*
 * The change history: a ring of the newest changes, oldest at `head`. Every
 * change of every revision >= first_rev is in it, and nothing older (a
 * revision is kept whole or not at all). Internal: use keel_kv_history_*.
 */
typedef struct keel__kv_history {
    keel__kv_change_t **ring; /* owned; cap slots, pointing into arena */
    size_t cap, head, len;
    uint8_t *arena;               /* owned: the changes' bytes, a circular buffer in ring order */
    size_t arena_cap, arena_tail; /* bytes; where the next change goes */
    size_t bytes;                 /* charged bytes of the changes held */
    uint64_t first_rev;           /* the oldest revision whose changes are all held */
    uint64_t last_rev;            /* the newest revision recorded (held or dropped) */
    int on;                       /* 0 in the lease and lock sub-tables: they record nothing */
} keel__kv_history_t;

/*
 * Caller-owned. Two tables while rehashing (t[0] old, t[1] new); buckets of
 * t[0] below `rehash_pos` are already moved. Write commands move a few
 * buckets each, so no single command pays for a whole resize.
 */
typedef struct keel_kv {
    keel_kv_config_t cfg;
    keel__kv_table_t t[2];
    int64_t rehash_pos; /* -1: not rehashing */
    size_t count;
    uint64_t revision;
    uint64_t applied_index;
    uint64_t time_ms;     /* largest time_ms of the applied entries: the state's clock */
    size_t bytes;         /* key + value bytes stored */
    const uint8_t **argv; /* owned scratch for decoded entries */
    size_t *lens;         /* owned */
    size_t argv_cap;
    keel__kv_entry_t **heap; /* owned: the deadline index (kv_int.h) */
    size_t heap_len;
    size_t heap_cap;
    struct keel__kv_xrec *x_spare; /* owned: records reserved with heap slots (kv_int.h) */
    size_t x_spare_n;
    struct keel_kv *leases; /* owned, NULL until the first lease: id -> ttl_ms, deadline */
    struct keel_kv *locks;  /* owned, NULL until the first lock: name -> token, deadline */
    /* owned, NULL until the first KEEL.XRETAIN: stream key -> its retention deadline (an
     * index for the leader's sweeps, derived from the streams: not in snapshots, rebuilt on
     * load; no apply reads it) */
    struct keel_kv *retained;
    uint64_t lease_id_last; /* the last lease id granted (ids are 1, 2, ...) */
    uint64_t fence_last;    /* the last fencing token handed out (all locks share it) */
    keel__kv_history_t hist;
    /* Streams' events as this node applied them (metrics; not in snapshots, so they restart
     * from 0 on a node that loads one): entries KEEL.XNACK returned that were delivered
     * again, and entries moved to a dead-letter stream. */
    uint64_t stream_redeliveries, stream_dead_letters;
    struct keel_reg *reg; /* owned, NULL until the first registration (core/registry) */
    /* large SET values arriving in pieces (kv_staged.c): KEEL_KV_STAGES_MAX slots, owned,
       NULL until the first */
    struct keel__kv_staged *staged;
    size_t staged_n;
    keel__kv_entry_t *adopt; /* while KEEL.STAGE.SET runs: its value's block, for SET */
} keel_kv_t;

/* cfg NULL means the defaults; an invalid cfg is KEEL_EINVAL. 0 or KEEL_ENOMEM. */
int keel_kv_init(keel_kv_t *kv, const keel_kv_config_t *cfg);
void keel_kv_free(keel_kv_t *kv);
/* Large values being written in pieces (kv_staged.c): how many, and their bytes. */
size_t keel_kv_staged_count(const keel_kv_t *kv);
uint64_t keel_kv_staged_bytes(const keel_kv_t *kv);

uint64_t keel_kv_revision(const keel_kv_t *kv);
size_t keel_kv_count(const keel_kv_t *kv);
uint64_t keel_kv_applied_index(const keel_kv_t *kv);

/* A key's value, borrowed: valid until the next apply / decode / free. */
typedef struct keel_kv_value {
    const uint8_t *value;
    size_t len;
    uint64_t version;
    uint64_t create_revision;
    uint64_t expire_ms; /* absolute deadline, 0: none */
} keel_kv_value_t;

/*
 * 0 and *out, or KEEL_ENOTFOUND. Raw: a key past its deadline but not yet
 * swept is still returned (with its expire_ms); commands treat it as absent. A key
 * of another type than string (a stream) is returned with an empty value.
 */
int keel_kv_get(const keel_kv_t *kv, const void *key, size_t key_len, keel_kv_value_t *out);

/* ---- command entries ------------------------------------------------------ */

/*
 * A Raft entry payload for a write, little-endian:
 *   u8 version (=1) | u64 time_ms | u32 argc | argc x (u32 len | len bytes)
 * time_ms is the leader's clock when it proposed (for expiry, issue 6).
 * encode: 0, KEEL_EINVAL (argc < 1 or > KEEL_KV_ARGC_MAX, an arg over
 * KEEL_KV_VALUE_BYTES_MAX), KEEL_ETOOBIG / KEEL_ENOMEM from the buffer (left
 * as it was).
 */
int keel_kv_entry_encode(keel_buf_t *out, uint64_t time_ms, int argc, const uint8_t *const *argv,
                         const size_t *lens);

/*
 * Validates a whole entry (version, argc in 1..KEEL_KV_ARGC_MAX, every length
 * inside the payload, no trailing bytes) before filling anything: 0, or
 * KEEL_EPROTO for any malformation. *argc is set whenever the header is valid;
 * if it exceeds argv_cap the result is KEEL_ETOOBIG and nothing is filled
 * (grow and call again). argv points into `entry` (borrowed).
 */
int keel_kv_entry_decode(const uint8_t *entry, size_t len, uint64_t *time_ms, size_t argv_cap,
                         const uint8_t **argv, size_t *lens, size_t *argc);

/* 1 if the entry's command only reads (a read sent through the log behind a write, see
 * server/requests.c), 0 if it writes or is malformed. Looks at the command's name only. */
int keel_kv_entry_is_read(const uint8_t *entry, size_t len);

/*
 * A KEEL.TXN entry for WATCH/MULTI/EXEC (docs/kv.md, "Transactions"):
 *   KEEL.TXN nwatch key1 ver1 ... ncmds argc1 arg... argc2 arg...
 * wversions are the versions keel_kv_version_at gave at WATCH time (0:
 * absent). 0, KEEL_EINVAL (an argc < 1, too many arguments in all, a
 * version over INT64_MAX, an argument over KEEL_KV_VALUE_BYTES_MAX), or
 * KEEL_ETOOBIG / KEEL_ENOMEM from the buffer (left as it was).
 */
typedef struct keel_kv_txn_cmd {
    int argc;
    const uint8_t *const *argv;
    const size_t *lens;
} keel_kv_txn_cmd_t;
int keel_kv_txn_encode(keel_buf_t *out, uint64_t time_ms, size_t nwatch,
                       const uint8_t *const *wkeys, const size_t *wlens, const uint64_t *wversions,
                       size_t ncmds, const keel_kv_txn_cmd_t *cmds);

/* ---- commands ------------------------------------------------------------- */

#define KEEL_KV_WRITE 1u /* propose through Raft, then keel_kv_apply */
#define KEEL_KV_READ 2u  /* linearizable read with keel_kv_read */

/* The command table, for a server that registers each name (COMMAND, its dispatcher). */
typedef struct keel_kv_command_info {
    const char *name;                  /* lower case */
    int arity;                         /* Redis arity: N exactly, -N at least N (name included) */
    unsigned flags;                    /* KEEL_KV_WRITE or KEEL_KV_READ */
    int first_key, last_key, key_step; /* key positions as COMMAND shows them; 0s: none */
    const char *summary;               /* one line */
    int internal; /* proposed by the leader itself with its clock (sweeps), or sent by another
                     front-end command (KEEL.REG's), never by clients under this name */
    int blocking; /* takes BLOCK ms (XREAD, XREADGROUP): see keel_kv_block_ms */
    /* > 0: argv[numkeys_at] counts the keys that follow it, after first_key..last_key
       (Redis's movable keys: ZUNION numkeys key..., ZUNIONSTORE dst numkeys key...) */
    int numkeys_at;
} keel_kv_command_info_t;
size_t keel_kv_commands_count(void);
void keel_kv_command_info(size_t i, keel_kv_command_info_t *out);

/* KEEL_KV_WRITE, KEEL_KV_READ, or 0 for a command this module does not know. */
unsigned keel_kv_command_flags(const uint8_t *name, size_t len);

/*
 * Everything that can be judged from argv alone, so the server can refuse a
 * command before proposing it: unknown command, Redis arity, and each
 * command's syntax (SET options, integer arguments, MSET pairs, SCAN
 * options). 0 if fine; else KEEL_EINVAL with the RESP error appended to
 * err_reply (KEEL_ENOMEM / KEEL_ETOOBIG if even that fails). Limits that
 * depend on the config (key and value sizes) are judged by apply.
 */
int keel_kv_check(int argc, const uint8_t *const *argv, const size_t *lens, keel_buf_t *err_reply);
/*
 * The check of a command queued inside MULTI, as Redis 7.0 makes it: only an unknown
 * command and a wrong number of arguments are refused (and abort the transaction); a
 * syntax error is the command's own reply inside EXEC, the others still run.
 */
int keel_kv_check_queued(int argc, const uint8_t *const *argv, const size_t *lens,
                         keel_buf_t *err_reply);

/*
 * A hint, no effect on the state: starts loading the memory keel_kv_apply of
 * `entry` (a command entry) will read for its first key. `stage` 0 fetches the
 * key's bucket slots; stage 1 reads the slot (fetched by an earlier stage 0)
 * and fetches the entry it points to. A caller applying a batch in order runs
 * stage 0 a few entries ahead and stage 1 one or two ahead, so that the cache
 * misses of a hash table larger than the cache overlap instead of adding up.
 * Malformed or key-less entries are ignored.
 */
void keel_kv_prefetch(const keel_kv_t *kv, const uint8_t *entry, size_t len, int stage);

/*
 * Applies one committed command entry at Raft index `index` (> the previous
 * one, asserted) and appends its exact RESP reply to `reply`. Read commands in
 * an entry are executed too (log reads). Returns 0, also for command errors
 * (`-ERR ...` reply, nothing changed). The reply buffer never decides the
 * outcome: if the reply does not fit `reply` (its bytes_max, or memory), the
 * command still takes effect as on every other node, and the reply becomes
 * `-ERR reply does not fit the reply buffer` (or nothing, if even that does
 * not fit). Returns KEEL_EPROTO for a malformed entry (the server's fatal
 * corruption) or KEEL_ENOMEM when the state could not get memory; then the
 * state, applied_index included, is unchanged and `reply` is as it was.
 */
int keel_kv_apply(keel_kv_t *kv, uint64_t index, const uint8_t *entry, size_t len,
                  keel_buf_t *reply);

/* Records a Raft entry that is not a KV command (no-op, configuration). */
void keel_kv_advance(keel_kv_t *kv, uint64_t index);

/*
 * Runs a read command on local state and appends its reply. 0 (command errors
 * are replies), KEEL_EINVAL for a write command (nothing appended), or
 * KEEL_ENOMEM / KEEL_ETOOBIG from `reply` (left as it was).
 */
int keel_kv_read(const keel_kv_t *kv, int argc, const uint8_t *const *argv, const size_t *lens,
                 keel_buf_t *reply);

/*
 * keel_kv_read as of max(now_ms, kv->time_ms): every key whose deadline is
 * <= that is absent (GET, EXISTS, MGET, SCAN, TTL, ...); the state's clock is
 * a floor so that a key an applied entry saw as expired never reappears. keel_kv_read is
 * keel_kv_read_at with the state's own clock (kv->time_ms, the newest applied entry's time), which
 * lags the real clock; a server passes its own clock (docs/kv.md, "Expiry").
 */
int keel_kv_read_at(const keel_kv_t *kv, uint64_t now_ms, int argc, const uint8_t *const *argv,
                    const size_t *lens, keel_buf_t *reply);
/* The same for a read command encoded as an entry (keel_kv_entry_encode), decoded into kv's
 * own scratch (hence not const); the entry's time is not used, now_ms is. */
int keel_kv_read_entry(keel_kv_t *kv, uint64_t now_ms, const uint8_t *entry, size_t len,
                       keel_buf_t *reply);

/*
 * The earliest deadline of any stored key or lock record (swept or not), or of a
 * large SET value left half sent (kv_staged.c: when it falls idle), or
 * KEEL_KV_NO_DEADLINE. O(1) (plus the at most 16 staged values). A leader proposes
 * KEEL.EXPIRE.SWEEP once its clock passes it.
 */
uint64_t keel_kv_next_deadline_ms(const keel_kv_t *kv);
/* The earliest lease deadline, or KEEL_KV_NO_DEADLINE; O(1). For KEEL.LEASE.SWEEP. */
uint64_t keel_kv_next_lease_deadline_ms(const keel_kv_t *kv);
/* The earliest lapse of a registry instance, or KEEL_KV_NO_DEADLINE; O(1). For
 * KEEL.REG.SWEEP (core/kv_registry.c). */
uint64_t keel_kv_next_registry_deadline_ms(const keel_kv_t *kv);
/* KEEL.REG's subcommand (REGISTER, SERVICES, ...): KEEL_KV_WRITE (send it as
 * KEEL.REG.WRITE), KEEL_KV_READ (as KEEL.REG.READ), or 0 if unknown. */
unsigned keel_kv_registry_kind(const uint8_t *sub, size_t len);
/* The registry's limits in force (replicated by KEEL.REG.LIMITS; the defaults until one). */
keel_reg_config_t keel_kv_reg_limits(const keel_kv_t *kv);
/*
 * KEEL.REG FEED's pushes (server/regfeed.c), appended to out; 0 or the writer's error.
 * The state: *3 "regstate" :index *n instance (the live instances of one service, or of
 * every service when service is NULL; index: the registry's, the feed's position). A change:
 * *4 "regchange" :index op instance, op one of keel_reg_event_op_name's words and the
 * instance as KEEL.REG GET shows it, as the change left it.
 */
int keel_kv_reg_feed_state(const keel_kv_t *kv, uint64_t now_ms, const uint8_t *service,
                           size_t service_len, keel_buf_t *out);
int keel_kv_reg_feed_event(const keel_reg_event_t *ev, keel_buf_t *out);

/*
 * The version a WATCH records: the key's version if it is live as of
 * max(now_ms, kv->time_ms), else 0 (absent, expired, or its lease expired).
 */
uint64_t keel_kv_version_at(const keel_kv_t *kv, uint64_t now_ms, const void *key, size_t key_len);

/* ---- blocking pops: what a server needs to block one (docs/kv.md, "Blocking pops") ---- */

/*
 * A blocking pop (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP; the sorted sets' BZPOPMIN,
 * BZPOPMAX, BZMPOP) waits on the node that took it for one of its source
 * keys to hold elements, then proposes the served form: the same pop of that one key,
 * without waiting (it answers nil if another client took the elements first). Its kind,
 * sources and timeout come from keel_kv_bpop_parse; keel_kv_bpop_avail says how many
 * elements a key has for it; keel_kv_bpop_served writes the served command.
 */
#define KEEL_KV_BPOP_POP 1  /* BLPOP, BRPOP, BZPOPMIN, BZPOPMAX: keys..., one element */
#define KEEL_KV_BPOP_MOVE 2 /* BLMOVE, BRPOPLPUSH: one source, served as it is */
#define KEEL_KV_BPOP_MPOP 3 /* BLMPOP, BZMPOP: keys..., up to count elements */
/* Words of a served command at most (KEEL.BPOP's own two aside). */
#define KEEL_KV_BPOP_SERVED_ARGC_MAX 8u
typedef struct keel_kv_bpop {
    int kind;                /* KEEL_KV_BPOP_* */
    int type;                /* the type the sources must hold (internal type number) */
    size_t first_key, nkeys; /* the sources: argv[first_key .. first_key + nkeys) */
    size_t timeout_i;        /* argv index of the timeout */
    int left;                /* pops from the left / the head / the lowest scores */
    uint64_t count;          /* elements one pop takes at most (BLMPOP's COUNT; else 1) */
    int64_t timeout_ms;      /* the timeout in milliseconds as Redis reads it; 0: forever */
} keel_kv_bpop_t;
/* 1 and *out for a blocking pop whose arguments are valid (the command would answer no
 * error of its syntax or timeout, the clock aside), else 0. */
int keel_kv_bpop_parse(int argc, const uint8_t *const *argv, const size_t *lens,
                       keel_kv_bpop_t *out);
/* The elements the live key holds for b as of max(now_ms, the state's clock): 0 when
 * absent, -1 when it holds another type. */
int64_t keel_kv_bpop_avail(const keel_kv_t *kv, uint64_t now_ms, const keel_kv_bpop_t *b,
                           const uint8_t *key, size_t len);
/* The served form of the pop of argv for its source argv[key_i], into out_argv/out_lens
 * (room for KEEL_KV_BPOP_SERVED_ARGC_MAX; words borrowed from argv or from num, which needs
 * KEEL_DEC_BYTES_MAX bytes): returns its argc. */
size_t keel_kv_bpop_served(const keel_kv_bpop_t *b, int argc, const uint8_t *const *argv,
                           const size_t *lens, size_t key_i, const uint8_t **out_argv,
                           size_t *out_lens, char *num);
/* 1 when b pops a sorted set (its reply holds member, score pairs), else 0. */
int keel_kv_bpop_is_zset(const keel_kv_bpop_t *b);

/* ---- streams: what a server needs to block (docs/streams.md) ------------------------- */

/*
 * For XREAD and XREADGROUP with a valid BLOCK ms: 1 (XREAD) or 2 (XREADGROUP) and *ms;
 * 0 for anything else (no BLOCK, another command, a syntax error the command answers).
 */
int keel_kv_block_ms(int argc, const uint8_t *const *argv, const size_t *lens, int64_t *ms);
/*
 * XREAD as an entry (keel_kv_entry_encode) with every '$' id replaced by its stream's last
 * id now, so that asking again later reads what arrived after the call: 0, KEEL_EINVAL
 * (not a valid XREAD), KEEL_ENOMEM / KEEL_ETOOBIG from out.
 */
int keel_kv_xread_resolve(const keel_kv_t *kv, int argc, const uint8_t *const *argv,
                          const size_t *lens, keel_buf_t *out);
/*
 * XREADGROUP: 1 if applying it at now_ms would answer something (entries after a group's
 * last delivered id or returned by KEEL.XNACK and due, a history read, or an error), 0 if
 * it would answer nil (a blocked consumer waits). Reads only.
 */
int keel_kv_xreadgroup_ready(const keel_kv_t *kv, uint64_t now_ms, int argc,
                             const uint8_t *const *argv, const size_t *lens);

/*
 * Retention by age (KEEL.XRETAIN): the earliest time a stream's oldest entry reaches its
 * age, or KEEL_KV_NO_DEADLINE; O(1). Once the leader's clock passes it, it proposes the
 * entry keel_kv_retention_sweep_encode makes (KEEL.XRETAIN.SWEEP now key...: the streams
 * due at now, at most KEEL_KV_RETENTION_SWEEP_KEYS_MAX), or nothing (out left empty).
 */
#define KEEL_KV_RETENTION_SWEEP_KEYS_MAX 64u
uint64_t keel_kv_next_retention_ms(const keel_kv_t *kv);
int keel_kv_retention_sweep_encode(const keel_kv_t *kv, uint64_t now_ms, keel_buf_t *out);

/* ---- the stream keys, for per-stream metrics ---------------------------------- */

typedef struct keel_kv_stream_ref {
    const uint8_t *key; /* borrowed from the key table: valid until its next change */
    size_t key_len;
    const struct keel_stream *stream; /* core/stream.h */
} keel_kv_stream_ref_t;

/*
 * The stream keys alive at now_ms whose names are at most key_bytes_max long: the first
 * `cap` by name (bytewise, a prefix first) into out, sorted; returns how many, and sets
 * *total to the number of stream keys of any name length. One walk of the whole key table
 * (O(keys + streams x log cap)), for a scrape, never for an apply.
 */
size_t keel_kv_streams_first(const keel_kv_t *kv, uint64_t now_ms, size_t key_bytes_max,
                             keel_kv_stream_ref_t *out, size_t cap, size_t *total);

/* ---- change history (KEEL.WATCH) -------------------------------------------- */

/*
 * Every change to a key is recorded as it is applied: a put (the key's value
 * after the change; also a change of its deadline, which gives it a new
 * version) or a delete (DEL, a sweep of expired keys or leases, a revoke).
 * A change's revision is the state's revision after the command that made
 * it, so one command's changes share a revision (MSET of 3 keys: 3 puts of
 * revision r; a sweep that removes 10 keys: 10 deletes of one revision) and
 * the history is in revision order, each revision's changes in the order
 * they were made. Lease grants, keepalives and locks are not key changes and
 * are not recorded (they do not move the revision either).
 *
 * Retention. The newest changes are kept, up to history_changes_max changes
 * and history_bytes_max bytes; older ones are dropped a whole revision at a
 * time, so "changes after revision r" is either complete or refused. A
 * revision too big to hold (or one that met an allocation failure, which
 * never fails the command) is dropped whole and moves the oldest revision
 * past it. A loaded snapshot starts an empty history: oldest is then the
 * snapshot's revision + 1 (the history is not part of snapshots; docs/kv.md
 * says why).
 */
#define KEEL_KV_CHANGE_PUT 1
#define KEEL_KV_CHANGE_DEL 2

typedef struct keel_kv_change {
    uint64_t revision;
    int op; /* KEEL_KV_CHANGE_PUT or KEEL_KV_CHANGE_DEL */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* the value after a put; NULL for a delete */
    size_t value_len;
} keel_kv_change_t;

/*
 * The oldest revision whose changes are all retained: a reader may resume
 * after any revision r >= oldest - 1. 1 while nothing was ever dropped.
 */
uint64_t keel_kv_history_oldest(const keel_kv_t *kv);
/* Changes retained, and the bytes charged for them. */
size_t keel_kv_history_len(const keel_kv_t *kv);
size_t keel_kv_history_bytes(const keel_kv_t *kv);
/*
 * The position (0 = oldest retained) of the first change with a revision
 * greater than `after`, or keel_kv_history_len() if there is none yet: 0.
 * KEEL_ERANGE when some change after `after` is no longer retained (after + 1
 * < oldest). O(log len). Positions are valid until the next apply.
 */
int keel_kv_history_seek(const keel_kv_t *kv, uint64_t after, size_t *pos);
/* The change at pos (< len), borrowed: valid until the next apply / decode / free. */
void keel_kv_history_at(const keel_kv_t *kv, size_t pos, keel_kv_change_t *out);

/* ---- snapshots ------------------------------------------------------------ */

/*
 * Format, little-endian, version 5:
 *   "KEELKVS" u8 version | u64 applied_index | u64 revision | u64 time_ms |
 *   u64 count | u64 lease_id_last | u64 fence_last |
 *   u64 lease_count | lease_count x (u64 id | u64 ttl_ms | u64 expire_ms) |
 *   u64 lock_count | lock_count x (u32 name_len | u64 token | u64 expire_ms | name) |
 *   count x (u32 key_len | u32 value_len | u64 version | u64 create_revision |
 *            u64 expire_ms | u64 lease_id | key | value) |          (the strings)
 *   u64 typed | typed x (u32 key_len | u8 type | u64 version | u64 create_revision |
 *            u64 expire_ms | u64 lease_id | u64 body_len | key | body) (version 4: the
 *            keys of other types, each body written by its type's module, e.g. a stream's
 *            as core/stream.h says) |
 *   u32 sections (0 or 1) | sections x (u32 tag | u64 len | len bytes) (version 5: state
 *            beside the keyspace; tag 1 is the service registry, core/registry.h's layout) |
 *   u32 crc32c(all bytes before it)
 * A torn or corrupt section fails the snapshot's CRC like any other byte. Version 4 has no
 * sections, version 3 no typed keys; version 2 no counters nor sections and no lease_id;
 * version 1 also no expire_ms. The loader reads them all. Entries appear in table order (not
 * sorted); the content, not the byte order, is what must agree between nodes.
 *
 * The sink receives the snapshot in pieces; a non-zero return from it stops
 * the walk and is returned. The state must not change during the walk.
 */
typedef int (*keel_kv_sink_fn)(void *data, const uint8_t *p, size_t n);
int keel_kv_snapshot_write(const keel_kv_t *kv, keel_kv_sink_fn sink, void *data);
/* Appends the whole snapshot to out (0, KEEL_ETOOBIG, KEEL_ENOMEM; out unchanged on error). */
int keel_kv_snapshot_encode(const keel_kv_t *kv, keel_buf_t *out);
/*
 * Loads a snapshot into kv_new, which must be freshly initialized (empty,
 * applied_index 0). Checks the CRC first, then every field: lengths inside
 * the data and within kv_new's limits, revisions consistent (1 <=
 * create_revision <= version <= revision), no duplicate keys, count exact, no
 * trailing bytes. 0, or KEEL_ECORRUPT / KEEL_EPROTO / KEEL_ETOOBIG /
 * KEEL_ENOMEM with text in msg, and kv_new empty again.
 */
int keel_kv_snapshot_decode(keel_kv_t *kv_new, const uint8_t *data, size_t len, keel_errmsg_t *msg);

#endif
