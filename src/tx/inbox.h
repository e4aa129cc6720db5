/* inbox.h - the consumer's inbox: message ids recorded in the same SQLite transaction as
 * the effect, so at-least-once delivery has an exactly-once effect. */
#ifndef KEEL_TX_INBOX_H
#define KEEL_TX_INBOX_H

#include "base/err.h"
#include "runtime/sqlite.h"

#include <stddef.h>
#include <stdint.h>

/*
 * A stream consumer (XREADGROUP ... XACK) sees a message again whenever it dies, or loses
 * the XACK's reply, after applying the message and before the acknowledgement is in:
 * at-least-once. The inbox makes the effect exactly-once: the message id goes into
 * keel_inbox in the transaction that applies the effect, so the two commit together or
 * not at all; a redelivered message finds its id and is acknowledged without a second
 * effect.
 *
 *     keel_db_begin(&db, &msg);
 *     rc = keel_inbox_claim(&db, "billing", id, id_len, &msg);
 *     if (rc == 0) { ... the effect's statements ... }       // new: apply
 *     if (rc == 0 || rc == KEEL_EEXISTS) keel_db_commit(&db, &msg), then XACK;
 *     else keel_db_rollback(&db);
 *
 * or keel_inbox_process(), which does exactly that around a callback.
 *
 * The id: for events from a keel outbox, the entry's `id` field ("<producer>/<row id>",
 * unique and the same on every delivery); for other streams, the entry id. `consumer`
 * names the effect (one inbox table can serve several consumers: each sees each message
 * once). Ids are kept until keel_inbox_prune() deletes them: the dedupe window is what is
 * kept, so prune only ids older than any redelivery can be (the group's claim timeout and
 * dead-letter limit bound that).
 */
#define KEEL_INBOX_CONSUMER_BYTES_MAX 128u
#define KEEL_INBOX_ID_BYTES_MAX 256u

int keel_inbox_init(keel_db_t *db, keel_errmsg_t *msg);

/* Inside the caller's open transaction (KEEL_EINVAL without one): 0 when the message is new
 * (it is now recorded: apply its effect in this same transaction), KEEL_EEXISTS when it was
 * processed before (skip the effect). */
int keel_inbox_claim(keel_db_t *db, const char *consumer, const void *id, size_t id_bytes,
                     keel_errmsg_t *msg);

/* The effect; 0 commits it with the claim, anything else rolls both back and is returned. */
typedef int (*keel_inbox_effect_fn)(keel_db_t *db, void *data, keel_errmsg_t *msg);

/* BEGIN, claim, effect (only when new), COMMIT. 0 when applied now, KEEL_EEXISTS when it had
 * been (nothing ran), or the failure (nothing is left of the attempt). */
int keel_inbox_process(keel_db_t *db, const char *consumer, const void *id, size_t id_bytes,
                       keel_inbox_effect_fn effect, void *data, keel_errmsg_t *msg);

/* Deletes ids recorded before before_unix_ms; deleted may be NULL. */
int keel_inbox_prune(keel_db_t *db, int64_t before_unix_ms, int64_t *deleted, keel_errmsg_t *msg);

#endif
