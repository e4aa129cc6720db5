/* pubsub.h - who is subscribed to which channel or pattern (Redis pub/sub bookkeeping). */
#ifndef KEEL_SERVER_PUBSUB_H
#define KEEL_SERVER_PUBSUB_H

#include <stddef.h>
#include <stdint.h>

/*
 * Subscribers are opaque pointers (the server's clients). Channels are exact byte
 * strings; patterns are Redis globs (base/glob.h). Each subscriber may
 * hold at most KEEL_PUBSUB_SUBS_MAX subscriptions; over it subscribe returns KEEL_EFULL.
 * Publishing visits the channel's subscribers, then every pattern (O(patterns)), as Redis
 * does.
 */
#define KEEL_PUBSUB_SUBS_MAX 10000

typedef struct keel_pubsub keel_pubsub_t;

/* Receives one delivery; pattern is NULL for a channel subscription. */
typedef void (*keel_pubsub_deliver_fn)(void *data, void *sub, const uint8_t *pattern,
                                       size_t pattern_len, const uint8_t *ch, size_t ch_len,
                                       const uint8_t *msg, size_t msg_len);

keel_pubsub_t *keel_pubsub_new(void);
void keel_pubsub_free(keel_pubsub_t *ps);
/* 1 added, 0 already there, KEEL_EFULL / KEEL_ENOMEM. */
int keel_pubsub_subscribe(keel_pubsub_t *ps, void *sub, const uint8_t *name, size_t len,
                          int pattern);
/* 1 removed, 0 was not subscribed. */
int keel_pubsub_unsubscribe(keel_pubsub_t *ps, void *sub, const uint8_t *name, size_t len,
                            int pattern);
/* Subscriptions (channels + patterns) the subscriber holds. */
size_t keel_pubsub_count(const keel_pubsub_t *ps, void *sub);
/* The subscriber's i-th channel (pattern = 0) or pattern (1), for UNSUBSCRIBE without
 * arguments; 0 and the name, or KEEL_ENOTFOUND past the end. */
int keel_pubsub_nth(const keel_pubsub_t *ps, void *sub, int pattern, size_t i, const uint8_t **name,
                    size_t *len);
/* Removes every subscription of a subscriber that went away. */
void keel_pubsub_drop(keel_pubsub_t *ps, void *sub);
/* Calls deliver for every matching subscription; returns how many. */
size_t keel_pubsub_publish(keel_pubsub_t *ps, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                           size_t msg_len, keel_pubsub_deliver_fn deliver, void *data);

#endif
