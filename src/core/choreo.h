/* choreo.h - choreographed sagas, the pure part: events as bytes, a participant's rules as
 * data, and what a handler's outcome means (tx/choreo.h runs them on keel streams). */
#ifndef KEEL_CORE_CHOREO_H
#define KEEL_CORE_CHOREO_H

#include "base/err.h"
#include "base/ktime.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A choreographed saga has no orchestrator and no saga log: it is the chain of events that
 * its participants emit on one keel stream. Each participant declares, as data, the event
 * types it reacts to (docs/tx.md, "Sagas, choreographed"):
 *
 *     on "order.created"  action        reserve   emit "stock.reserved" | fail "stock.failed"
 *     on "payment.failed" compensation  release   emit "stock.released"
 *
 * An ACTION either applies (its event emit_ok goes out) or is refused, a business failure
 * (emit_fail goes out and nothing of the action is kept). A COMPENSATION must eventually
 * apply: it is retried until it does. A transient failure of an action is retried
 * attempts_max times, then taken as a refusal: the action is a local transaction, so a
 * failed one left nothing behind (unlike an orchestrator's remote call, whose timeout can
 * hide an applied effect).
 *
 * Retrying is bounded in time: an event still failing retry_for_ms after its first failed
 * attempt (a compensation that can never apply, or a refusal that cannot be committed) is
 * dead-lettered and its saga marked needs_attention (tx/choreo.h says where), so that it
 * stops blocking the participant's later events. A person then decides.
 *
 * The event, as the payload of an outbox row (the stream entry's `data` field):
 *
 *     <type> SP <saga id> LF <data bytes>
 *
 * type: 1..KEEL_CHOREO_TYPE_BYTES_MAX of [A-Za-z0-9_.-]; saga id: 1..KEEL_CHOREO_SAGA_BYTES_MAX
 * of [A-Za-z0-9_.:-]; data: opaque, up to KEEL_CHOREO_DATA_BYTES_MAX.
 */
#define KEEL_CHOREO_TYPE_BYTES_MAX 32u
#define KEEL_CHOREO_SAGA_BYTES_MAX 64u
#define KEEL_CHOREO_NAME_BYTES_MAX 32u
#define KEEL_CHOREO_DATA_BYTES_MAX (16u * 1024u)
#define KEEL_CHOREO_EVENT_BYTES_MAX                                                                \
    (KEEL_CHOREO_TYPE_BYTES_MAX + KEEL_CHOREO_SAGA_BYTES_MAX + 2u + KEEL_CHOREO_DATA_BYTES_MAX)
#define KEEL_CHOREO_RULES_MAX 16u
#define KEEL_CHOREO_ATTEMPTS_MAX 100u /* the largest attempts_max a definition may ask for */
/* the longest retry_for_ms a definition or rule may ask for: 7 days */
#define KEEL_CHOREO_RETRY_FOR_MS_MAX ((keel_ms_t)7 * 24 * 3600 * 1000)

typedef struct keel_choreo_event {
    char type[KEEL_CHOREO_TYPE_BYTES_MAX + 1];
    char saga[KEEL_CHOREO_SAGA_BYTES_MAX + 1];
    const uint8_t *data; /* borrowed from the decoded bytes */
    size_t data_len;
} keel_choreo_event_t;

/* Bytes of the encoding of an event with these lengths. */
size_t keel_choreo_event_size(size_t type_len, size_t saga_len, size_t data_len);
/* Encodes into out (cap bytes); the length, or 0 when a name is invalid, data is over the
 * limit, or cap is too small. */
size_t keel_choreo_event_encode(const char *type, const char *saga, const void *data,
                                size_t data_len, uint8_t *out, size_t cap);
/* Decodes; ev->data points into p. KEEL_EPROTO (worded in msg) for anything malformed. */
int keel_choreo_event_decode(const uint8_t *p, size_t n, keel_choreo_event_t *ev,
                             keel_errmsg_t *msg);

bool keel_choreo_type_valid(const char *s);
bool keel_choreo_saga_valid(const char *s);

typedef enum keel_choreo_kind {
    KEEL_CHOREO_ACTION = 1,
    KEEL_CHOREO_COMPENSATION,
} keel_choreo_kind_t;

typedef struct keel_choreo_rule {
    const char *on; /* the event type handled; at most one rule per type */
    keel_choreo_kind_t kind;
    const char *emit_ok;    /* emitted when the handler applied; NULL: the saga ends here */
    const char *emit_fail;  /* ACTION: emitted on refusal; required. COMPENSATION: NULL */
    keel_ms_t retry_for_ms; /* how long a failing event is retried; 0: the def's retry_for_ms */
} keel_choreo_rule_t;

/* The runtime pairs rules[i] with its handler i (tx/choreo.h). */
typedef struct keel_choreo_def {
    const char *name; /* the participant: its consumer group and inbox consumer */
    keel_choreo_rule_t rules[KEEL_CHOREO_RULES_MAX];
    size_t rules_n;
    uint32_t attempts_max; /* an action's transient failures before it counts as refused */
    keel_ms_t backoff_base_ms, backoff_cap_ms; /* between retries of one event */
    keel_ms_t retry_for_ms; /* rules' default: failing this long after the first failure, an
                               event is dead-lettered (1..KEEL_CHOREO_RETRY_FOR_MS_MAX) */
} keel_choreo_def_t;

/* Checks names, kinds, required events, duplicates and limits. 0 or KEEL_EINVAL (msg). */
int keel_choreo_def_validate(const keel_choreo_def_t *d, keel_errmsg_t *msg);
/* The rule for an event type, or NULL (the participant ignores the event). */
const keel_choreo_rule_t *keel_choreo_rule_for(const keel_choreo_def_t *d, const char *type);

/* What to do with an event whose handler returned rc (0 applied, KEEL_EREJECTED refused,
 * anything else transient) on its attempts-th attempt (1 for the first), failing_ms after
 * its first failed attempt (0 on the first attempt). */
typedef enum keel_choreo_verdict {
    KEEL_CHOREO_COMMIT_OK = 1, /* commit the effect with emit_ok (if any) */
    KEEL_CHOREO_COMMIT_FAIL,   /* roll the effect back; commit the claim with emit_fail */
    KEEL_CHOREO_RETRY,         /* roll back; leave the entry pending; retry after a backoff */
    KEEL_CHOREO_DEAD_LETTER,   /* roll back; mark the saga needs_attention; dead-letter it */
} keel_choreo_verdict_t;

/* A compensation is never refused: KEEL_EREJECTED from one is retried like a transient
 * failure, until retry_for_ms has passed since its first failure; then it is dead-lettered
 * (a compensation that cannot apply needs a person). An action reaches its refusal first
 * (attempts_max), unless committing the refusal itself keeps failing. */
keel_choreo_verdict_t keel_choreo_verdict(const keel_choreo_def_t *d, const keel_choreo_rule_t *r,
                                          int rc, uint32_t attempts, keel_ms_t failing_ms);
/* The rule's time limit on retries (its own, else the def's). */
keel_ms_t keel_choreo_retry_for_ms(const keel_choreo_def_t *d, const keel_choreo_rule_t *r);
/* Whether an event failing for failing_ms has used up its rule's retries. */
bool keel_choreo_retry_expired(const keel_choreo_def_t *d, const keel_choreo_rule_t *r,
                               keel_ms_t failing_ms);

/* The pause before the attempts+1-th attempt: base * 2^(attempts-1), capped; jitter_0_1 in
 * [0, 1) scales it into [half, full] (equal jitter). */
keel_ms_t keel_choreo_backoff_ms(const keel_choreo_def_t *d, uint32_t attempts, double jitter_0_1);

/* A saga's deadline under a watcher (tx/choreo_watch.h): the time in a stream entry id
 * "<ms>-<seq>" (n bytes) plus saga_deadline_ms, saturating. 0, or KEEL_EPROTO for a
 * malformed id. */
int keel_choreo_deadline_of(const uint8_t *id, size_t n, keel_ms_t saga_deadline_ms,
                            keel_ms_t *deadline_ms);

#endif
