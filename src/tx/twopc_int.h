/* tx/twopc_int.h - what tx/twopc's files share: the clock, and driving a participant. */
#ifndef KEEL_TX_TWOPC_INT_H
#define KEEL_TX_TWOPC_INT_H

/*
 * tx/twopc is split by job, one file each:
 *   twopc.c         the blocking coordinator over keel server (lock, log, drive, adopt,
 *                   recover, inquire) and calls to a participant through its machine
 *   twopc_sqlite.c  the SQLite participant: its table, prepare, commit, abort, recovery
 *   twopc_http.c    participants over HTTP: serving a local one, calling a remote one
 *   twopc_view.c    the logs read for people (`keel 2pc list|show`, twopc_view.h)
 * Functions shared between them are keel__twopc_*, declared at the end of this file.
 */
#include "tx/twopc.h"

#include "runtime/clock.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline void sleep_ms(keel_ms_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline keel_ms_t now_ms(void)
{
    return keel_clock_unix_ms();
}

/* twopc.c */
/* The record (field r) of an XRANGE entry ([id, [field, value, ...]]) whose id is 0-<seq>,
 * with *seq; NULL when the entry has another shape. */
const keel_resp_value_t *keel__twopc_entry_record(const keel_resp_value_t *e, uint32_t *seq);
/* Carries out the machine's local actions until it replies or has nothing more to do. The
 * reply (0 when the call failed: the coordinator counts a failed send). */
keel_twopc_reply_t keel__twopc_part_drive(keel_twopc_participant_t *p, keel_twopc_part_t *m,
                                          keel_twopc_part_update_t *u, const char *id,
                                          const uint8_t *input, size_t len, keel_errmsg_t *msg);
/* One message to a local participant p about transaction id, through its machine. */
keel_twopc_reply_t keel__twopc_part_message(const keel_twopc_config_t *cfg, uint64_t seed,
                                            keel_twopc_participant_t *p, const char *id,
                                            keel_twopc_msg_t msgk, const uint8_t *input, size_t len,
                                            int *err);

#endif
