/* twopc_view.h - two-phase commit decision logs in keel server, read for people: a list by
 * state and one transaction's records (`keel 2pc list|show`). */
#ifndef KEEL_TX_TWOPC_VIEW_H
#define KEEL_TX_TWOPC_VIEW_H

#include "base/err.h"
#include "core/twopc.h"

#include <stddef.h>
#include <stdio.h>

/*
 * Both read what src/tx/twopc.c writes (docs/tx.md, "The coordinator and its log"): every
 * stream `2pc:<id>:log`, entries 0-1 (BEGIN), 0-2 (COMMIT or ABORT), 0-3 (END), each record
 * in field `r`. The records are replayed into core/twopc's coordinator
 * (keel_twopc_coord_replay), so the state shown is the one any coordinator resuming the
 * transaction would start from. They use the blocking client (tx/log_view.h) and hold no
 * state between calls. The states:
 *   preparing    BEGIN only: collecting votes, or its coordinator died there (participants
 *                that prepared are in doubt until a coordinator or their inquiry aborts it)
 *   committing   COMMIT, no END: delivering the commit
 *   aborting     ABORT, no END: delivering the abort
 *   committed    COMMIT and END
 *   aborted      ABORT and END
 *
 * list: SCAN MATCH 2pc:*:log TYPE stream, then per log XRANGE (at most three records).
 * Output, sorted by id:
 *
 *     <id> <state> participants=<a>,<b>,...
 *     <id> damaged "entry <n>: <why>"          (a record that does not decode or replay)
 *     ...
 *     total <n>: <state> <count> ...           (counts of the transactions listed)
 *
 * With state >= 0 only the transactions in that state are listed (damaged ones are not).
 *
 * show: every record of one transaction, one a line, then its state:
 *
 *     1 <time_ms> begin participants=<a>,<b> input="<input>"
 *     2 <time_ms> commit
 *     2 <time_ms> abort "<why>"
 *     3 <time_ms> end
 *     state <state>
 *
 * Bytes outside printable ASCII, and '"' and '\', are written as \xNN; at most
 * KEEL_TWOPC_VIEW_DATA_BYTES_MAX bytes of an input are shown.
 */
#define KEEL_TWOPC_VIEW_LOGS_MAX 100000u    /* list: transactions listed at most */
#define KEEL_TWOPC_VIEW_DATA_BYTES_MAX 200u /* show: input bytes printed */

/* Parses a state name shown by the view (preparing, committing, aborting, committed,
 * aborted). 0, or KEEL_EINVAL. */
int keel_twopc_view_state_parse(const char *name, keel_twopc_state_t *out);

/* Writes the list to out. state: a keel_twopc_state_t, or -1 for every state. 0, or the
 * failure of a keel request (msg says which). */
int keel_twopc_view_list(const char *const *seeds, size_t seeds_n, int state, FILE *out,
                         keel_errmsg_t *msg);

/* Writes transaction id's records to out. 0; KEEL_EINVAL for a malformed id; KEEL_ENOTFOUND
 * when no log exists; KEEL_ECORRUPT when a record is damaged (the records before it are
 * written, then "entry N: damaged: ..."); or the failure of the keel request. */
int keel_twopc_view_show(const char *const *seeds, size_t seeds_n, const char *id, FILE *out,
                         keel_errmsg_t *msg);

#endif
