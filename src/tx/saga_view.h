/* saga_view.h - orchestrated sagas' logs in keel server, read for people: a list by state and
 * one saga's records (`keel saga list|show`, `keel-saga list|show`). */
#ifndef KEEL_TX_SAGA_VIEW_H
#define KEEL_TX_SAGA_VIEW_H

#include "base/err.h"
#include "core/saga.h"

#include <stddef.h>
#include <stdio.h>

/*
 * Both read what src/tx/saga_log.c writes (docs/tx.md, "Where the state lives"): every stream
 * `saga:<id>:log`, each entry one record in field `r`. They use the blocking client
 * (client/blocking.h; tx/log_view.h: KEEL_LOG_VIEW_TIMEOUT_MS per request) and hold no state
 * between calls.
 *
 * list: SCAN MATCH saga:*:log TYPE stream, then per log its last record (XREVRANGE COUNT 1)
 * and its length (XLEN). The state is keel_saga_state_after() of the last record, so a
 * saga's state is the same whichever orchestrator ran it, or none (an orphan waiting for
 * adoption shows as running). Output, sorted by id:
 *
 *     <id> <state> records=<n>[ (last record damaged)]
 *     ...
 *     total <n>: <state> <count> ...          (counts of the sagas listed)
 *
 * With state >= 0 only the sagas in that state are listed (and counted in the total line).
 *
 * show: every record of one saga, one a line, then its state:
 *
 *     <seq> <time_ms> <type> <step> "<data>"        (step_failed: "business|gave_up" first)
 *     state <state>
 *
 * Data bytes outside printable ASCII, and '"' and '\', are written as \xNN; at most
 * KEEL_SAGA_VIEW_DATA_BYTES_MAX bytes of each record's data are shown.
 */
#define KEEL_SAGA_VIEW_LOGS_MAX 100000u    /* list: sagas listed at most */
#define KEEL_SAGA_VIEW_DATA_BYTES_MAX 200u /* show: data bytes printed per record */

/* Parses a state name ("running", "needs_attention", ...). 0, or KEEL_EINVAL. */
int keel_saga_state_parse(const char *name, keel_saga_state_t *out);

/* Writes the list to out. state: a keel_saga_state_t, or -1 for every state. 0, or the
 * failure of a keel request (msg says which). A damaged last record is listed as such. */
int keel_saga_view_list(const char *const *seeds, size_t seeds_n, int state, FILE *out,
                        keel_errmsg_t *msg);

/* Writes saga id's records to out. 0; KEEL_EINVAL for a malformed id; KEEL_ENOTFOUND when no
 * log exists; KEEL_ECORRUPT when a record is damaged (the others are still written, the
 * damaged one as "entry N: damaged: ..."); or the failure of the keel request. */
int keel_saga_view_show(const char *const *seeds, size_t seeds_n, const char *id, FILE *out,
                        keel_errmsg_t *msg);

#endif
