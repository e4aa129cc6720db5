/* evstore.h - an event store on keel server: appends with an expected version, aggregates
 * read back by replaying their events from the latest snapshot. */
#ifndef KEEL_TX_EVSTORE_H
#define KEEL_TX_EVSTORE_H

#include "base/buf.h"
#include "base/err.h"
#include "base/ktime.h"
#include "client/args.h"
#include "client/client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * THE MANUAL IN SHORT (docs/tx.md, "Event store", has the why)
 *
 * An aggregate is named "<category>-<id>" ("account-42"; the category is the part before
 * the first '-', EventStoreDB's convention). Its events live in keel server under
 *
 *     es:<agg>          a stream; event n (n = 1, 2, ...) has the id 0-n
 *     es:<agg>:ver      a string: the aggregate's version (its last event's n)
 *     es:<agg>:snap     a string: its latest snapshot, "<schema> <version>\n<state>"
 *     es:$ce-<category> a stream of every event of every aggregate of the category, in
 *                       commit order (what projections read, tx/projection.h)
 *
 * keel_es_append(es, agg, expected, events, n, cb): the n events become versions
 * expected+1 .. expected+n, all or none, or the callback gets KEEL_ECONFLICT and the
 * current version (EventStoreDB's WrongExpectedVersion). expected may be
 * KEEL_ES_NO_STREAM (0: the aggregate must not exist yet) or KEEL_ES_ANY (no check).
 * The check is made by the server: the append is one KEEL.TXN entry that watches
 * es:<agg>:ver at its revision, so of two racing appends at the same expected version
 * exactly one commits. The revision is read first (KEEL.GETV), unless the store holds a
 * hint for the aggregate at that version (its own last append or load of it): then the
 * append is one round trip, and a stale hint costs the read after all.
 *
 * keel_es_load(es, agg, fold, cb): reads the snapshot (if its schema is fold->schema),
 * then the events after it, calling fold->apply for each, and hands the state and
 * version to the callback. Every snapshot_every_events versions past the last snapshot,
 * it then writes a new one (only if it is newer than the one stored, by KEEL.CAS).
 *
 * Requests run on the client's loop; every callback runs exactly once (with
 * KEEL_ECANCELED if the client closes first). The store holds no state of its own per
 * request beyond what it allocates for it; a keel_es_t may be dropped once no request is
 * outstanding (keel_es_pending()).
 */
#define KEEL_ES_NO_STREAM 0ull
#define KEEL_ES_ANY UINT64_MAX
#define KEEL_ES_AGG_BYTES_MAX 200u             /* "<category>-<id>" */
#define KEEL_ES_TYPE_BYTES_MAX 128u            /* an event's type name */
#define KEEL_ES_EVENT_BYTES_MAX (256u * 1024u) /* data + metadata of one event */
#define KEEL_ES_APPEND_EVENTS_MAX 64u          /* events in one append */
/* data + metadata of one append's events: each is written twice (the aggregate's stream
 * and the category's) into one entry, which keel server bounds by its value_bytes_max
 * (default 1 MiB) plus 128 KiB. */
#define KEEL_ES_APPEND_BYTES_MAX (448u * 1024u)
#define KEEL_ES_STATE_BYTES_MAX (512u * 1024u) /* a snapshot's state */
#define KEEL_ES_READ_PAGE_EVENTS 256u          /* events per XRANGE while loading */
#define KEEL_ES_CONFLICT_RETRIES_MAX 8u        /* a watch that failed while the version stayed */

typedef struct keel_es_event {
    const char *type; /* [A-Za-z0-9_.:-]+, at most KEEL_ES_TYPE_BYTES_MAX */
    size_t type_len;
    const uint8_t *data; /* the payload (any bytes) */
    size_t data_len;
    const uint8_t *meta; /* metadata: correlation / causation ids, ... (any bytes) */
    size_t meta_len;
    uint64_t version; /* on load: its version in the aggregate; ignored on append */
} keel_es_event_t;

#define KEEL_ES_HINTS_LIMIT 65536u

typedef struct keel_es_config {
    uint32_t snapshot_every_events; /* 0: never snapshot */
    keel_ms_t request_timeout_ms;   /* per command sent; 0: the client's default */
    uint32_t hints_max; /* aggregates whose (version, revision) is remembered, direct-mapped;
                           0: none (every append reads first); at most KEEL_ES_HINTS_LIMIT */
} keel_es_config_t;

typedef struct keel_es_stats {
    uint64_t appends, conflicts, loads, events_replayed, snapshots_written, snapshots_used;
    uint64_t appends_hinted; /* appends sent without reading the version first */
} keel_es_stats_t;

typedef struct keel_es_hint {
    char agg[KEEL_ES_AGG_BYTES_MAX + 1]; /* "" when free */
    uint64_t version, rev;
} keel_es_hint_t;

typedef struct keel_es {
    keel_client_t *cl; /* borrowed: outlives the store */
    keel_es_config_t cfg;
    keel_es_stats_t stats;
    uint32_t pending;
    keel_es_hint_t *hints; /* cfg.hints_max slots */
} keel_es_t;

/*
 * How an aggregate's state is built: apply folds one event into state (a byte string the
 * caller encodes as it likes, at most KEEL_ES_STATE_BYTES_MAX); a non-zero return stops
 * the load with that error. schema names the state's encoding: a snapshot written under
 * another schema is ignored (the load replays from the first event).
 */
typedef struct keel_es_fold {
    int (*apply)(void *data, keel_buf_t *state, const keel_es_event_t *ev);
    uint32_t schema;
    void *data;
} keel_es_fold_t;

/* version: the new version (the last appended event's), or the current one on a conflict.
 * msg: words on a failure (borrowed for the call). */
typedef void (*keel_es_append_fn)(keel_es_t *es, void *ctx, int err, uint64_t version,
                                  const char *msg);
/* state: the aggregate's state (borrowed for the call), version: its last event's (0: no
 * such aggregate). */
typedef void (*keel_es_load_fn)(keel_es_t *es, void *ctx, int err, uint64_t version,
                                const keel_buf_t *state, const char *msg);

keel_es_config_t keel_es_config_default(void);

/*
 * The commands of an append of n events after version base, for a caller that puts them in
 * a transaction of its own (a saga's end entry, say) and knows base is the aggregate's
 * version by construction: they are added to a, each after its argument count (KEEL.TXN's
 * layout), and *cmds says how many (SET es:<agg>:ver base+n, then two XADDs per event).
 * Nothing is checked against the stored version: the event ids 0-(base+1).. make a repeat
 * fail on the aggregate's stream, but the category's stream takes it again, so the caller
 * must write them once. 0, KEEL_EINVAL (events, names) or a's error.
 */
int keel_es_append_cmds(keel_args_t *a, const char *agg, uint64_t base,
                        const keel_es_event_t *events, size_t n, size_t *cmds);
/* 0, or KEEL_EINVAL (hints_max) / KEEL_ENOMEM. */
int keel_es_init(keel_es_t *es, keel_client_t *cl, const keel_es_config_t *cfg);
/* Frees the hints; no request may be outstanding. */
void keel_es_free(keel_es_t *es);
static inline uint32_t keel_es_pending(const keel_es_t *es)
{
    return es->pending;
}

/* Checks a name: "<category>-<id>" or "<category>", [A-Za-z0-9_.@-], at most
 * KEEL_ES_AGG_BYTES_MAX bytes. 0 or KEEL_EINVAL. */
int keel_es_name_valid(const char *agg, size_t len);

/*
 * Appends events[0..n) (copied: the caller's buffers may go at once). 0, or KEEL_EINVAL
 * (a bad name, type, n or size) / KEEL_ENOMEM / the client's refusal, and then cb is not
 * called. cb's err: 0, KEEL_ECONFLICT (version = the current one), or a client or server
 * failure (KEEL_ETIMEDOUT, KEEL_ECONNRESET: the append may have been applied, as with any
 * write whose answer was lost; load the aggregate to know).
 */
int keel_es_append(keel_es_t *es, const char *agg, uint64_t expected, const keel_es_event_t *events,
                   size_t n, keel_es_append_fn cb, void *ctx);

/* Loads agg through fold (borrowed until cb). 0 or KEEL_EINVAL / KEEL_ENOMEM (cb not
 * called). */
int keel_es_load(keel_es_t *es, const char *agg, const keel_es_fold_t *fold, keel_es_load_fn cb,
                 void *ctx);

/* The keys of an aggregate and of a category's stream ("es:$ce-<category>"), into out.
 * Returns the length, or KEEL_ETOOBIG / KEEL_EINVAL. */
int keel_es_stream_key(char *out, size_t cap, const char *agg);
int keel_es_category_key(char *out, size_t cap, const char *agg_or_category);

#endif
