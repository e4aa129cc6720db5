/* blocking.h - one RESP command and its reply, blocking: the async client on a private loop. */
#ifndef KEEL_CLIENT_BLOCKING_H
#define KEEL_CLIENT_BLOCKING_H

#include "base/buf.h"
#include "base/err.h"
#include "base/ktime.h"
#include "proto/resp.h"

#include <stddef.h>

/*
 * For the CLI and tests: keel_client_call() runs a keel_client_t (client/client.h) on a
 * loop of its own until the reply comes, the timeout passes, or every seed has refused a
 * connection once. The reply is copied out and owned by the caller.
 *
 *     keel_client_reply_t r;
 *     const char *argv[] = {"KEEL.CLUSTER", "MEMBERS"};
 *     if (keel_client_call(seeds, 1, 2, argv, 10000, &r, &msg) == 0) {
 *         ... r.v ...
 *         keel_client_reply_free(&r);
 *     }
 *
 * Returns 0 with the reply (which may be an error reply), or KEEL_ECONNREFUSED (no seed
 * accepted a connection; msg names the last failure), KEEL_ETIMEDOUT, KEEL_ECONNRESET
 * (the connection broke after the command was written: its outcome is unknown),
 * KEEL_EINVAL (bad seed), KEEL_ENOMEM.
 */
typedef struct keel_client_reply {
    keel_resp_value_t *v; /* points into raw */
    keel_buf_t raw;
} keel_client_reply_t;

int keel_client_call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                     keel_ms_t timeout_ms, keel_client_reply_t *out, keel_errmsg_t *msg);
void keel_client_reply_free(keel_client_reply_t *r);

/* Copies a borrowed reply into out (owned), as keel_client_call hands it back. */
int keel_client_reply_copy(const keel_resp_value_t *v, keel_client_reply_t *out);

#endif
