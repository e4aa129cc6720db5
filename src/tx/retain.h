/* tx/retain.h - the retention sweeps' shared page: the saga's and the 2PC coordinator's logs
 * are indexed by end time in a sorted set (member = id) while a retention is set, and a sweep
 * deletes what is due a page at a time. */
#ifndef KEEL_TX_RETAIN_H
#define KEEL_TX_RETAIN_H

#include "client/args.h"
#include "proto/resp.h"

#include <stddef.h>
#include <stdint.h>

/* Ids read from an index per sweep step (ZRANGEBYSCORE ... LIMIT 0 this). */
#define KEEL_RETAIN_PAGE 200u

/* The query of one page of due ids: ZRANGEBYSCORE index -inf <due_ms> LIMIT 0 PAGE, in a
 * (initialised) a. */
void keel_retain_due_args(keel_args_t *a, const char *index, int64_t due_ms);

/*
 * The deletion of one page, in a (initialised): KEEL.TXN 0 2 | UNLINK <prefix><id>:log ... |
 * ZREM index <id> ..., one entry for the page's logs and their members. ids is the page
 * query's reply (an array of bulk ids); an element that is not an id, or one whose log key
 * would pass key_bytes_max, is not unlinked but still removed from the index.
 */
void keel_retain_page_args(keel_args_t *a, const char *index, const char *prefix,
                           const keel_resp_value_t *ids, size_t key_bytes_max);

#endif
