/* tx/log_view.h - what the views of logs in keel server share (`keel saga list|show`,
 * `keel 2pc list|show`): a blocking request whose error reply is a failure, the sorted keys of
 * every log matching a pattern, and record data printed for people. Internal to src/tx. */
#ifndef KEEL_TX_LOG_VIEW_H
#define KEEL_TX_LOG_VIEW_H

#include "base/err.h"
#include "client/blocking.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KEEL_LOG_VIEW_TIMEOUT_MS 10000 /* per keel request */

/* One request through client/blocking.h; an error reply is a failure too (KEEL_EPROTO,
 * worded in msg, and *r is freed). 0 with *r owned. */
int keel__view_call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                    keel_client_reply_t *r, keel_errmsg_t *msg);

typedef struct keel__view_keys {
    char **v;
    size_t n;
} keel__view_keys_t;

/* Every stream key matching pattern (SCAN MATCH pattern TYPE stream), at most max, sorted. */
int keel__view_scan(const char *const *seeds, size_t seeds_n, const char *pattern, size_t max,
                    keel__view_keys_t *ks, keel_errmsg_t *msg);
void keel__view_keys_free(keel__view_keys_t *ks);

/* Writes "<data>" quoted: bytes outside printable ASCII, '"' and '\' as \xNN; at most max
 * bytes (a longer record is cut there). */
void keel__view_print_data(FILE *out, const uint8_t *p, size_t n, size_t max);

#endif
