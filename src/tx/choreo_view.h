/* choreo_view.h - choreographed sagas in keel server, listed for people by state
 * (`keel saga list --choreo STREAM`). */
#ifndef KEEL_TX_CHOREO_VIEW_H
#define KEEL_TX_CHOREO_VIEW_H

#include "base/err.h"
#include "core/saga.h"

#include <stddef.h>
#include <stdio.h>

/*
 * A choreographed saga has no log; what keel server knows of its state is what the deadline
 * watcher and the participants keep beside the stream (tx/choreo.h, tx/choreo_watch.h):
 *
 *   running          in `<stream>:deadlines` (only with a watcher running)
 *   needs_attention  in `<stream>:attention`: a participant gave an event up, or the
 *                    watcher saw the deadline pass
 *
 * Sagas that ended are in neither (the stream itself has their events). Output, sorted by id,
 * one line per saga and state (a saga marked needs_attention whose later event started a new
 * deadline is listed in both states):
 *
 *     <id> running deadline_ms=<unix ms>
 *     <id> needs_attention "<why>"          (bytes outside printable ASCII as \xNN)
 *     total <n>: running <count> needs_attention <count>
 *
 * Read with ZRANGE ... WITHSCORES and HSCAN, at most KEEL_CHOREO_VIEW_SAGAS_MAX of each.
 */
#define KEEL_CHOREO_VIEW_SAGAS_MAX 100000u  /* per state */
#define KEEL_CHOREO_VIEW_WHY_BYTES_MAX 300u /* of a needs_attention record, printed */

/* Writes the list of stream's sagas to out. state: KEEL_SAGA_RUNNING, KEEL_SAGA_NEEDS_ATTENTION
 * or -1 for both (anything else: KEEL_EINVAL). 0, or the failure of a keel request (msg). */
int keel_choreo_view_list(const char *const *seeds, size_t seeds_n, const char *stream, int state,
                          FILE *out, keel_errmsg_t *msg);

#endif
