/* idem.h - idempotency keys (Stripe's, the IETF httpapi draft's): a request repeated with
 * the same Idempotency-Key gets the first answer, stored in keel server, and runs once. */
#ifndef KEEL_TX_IDEM_H
#define KEEL_TX_IDEM_H

#include "base/buf.h"
#include "base/err.h"
#include "base/list.h"
#include "base/ktime.h"
#include "base/metrics.h"
#include "client/client.h"
#include "proto/http.h"
#include "runtime/http_server.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Semantics (draft-ietf-httpapi-idempotency-key-header; Stripe's API):
 *   - A request's fingerprint is SHA-256 over its method, its target (path and query) and
 *     its body.
 *   - The first request with a key claims it and runs the handler; its answer (status,
 *     the headers that matter, body) is stored under the key before it is sent.
 *   - The same key and the same fingerprint again: the stored answer, with
 *     "Idempotent-Replayed: true"; the handler does not run.
 *   - The same key with another fingerprint: 422, the handler does not run.
 *   - The same key while the first request is still running: 409, with Retry-After.
 *   - A key is forgotten ttl_ms after its answer was stored (then it may be used afresh).
 *
 * Storage, in keel server (one key per idempotency key, "<prefix><key>"):
 *   claim     SET k "P <fingerprint> <nonce>" NX GET PX lock_ms
 *             nil: claimed, run. A value: the record of an earlier request, decided as above.
 *             One command: claiming and reading the rival are one atomic step (Raft entry).
 *             The nonce (16 hex digits, new per claim) tells this claim from a retry's.
 *   answer    SET k "D <fingerprint> <status> <body bytes>\n<Name: value\n>...\n<body>"
 *                   XX PX ttl_ms
 *             then the answer is sent, from the stored record, so the first answer and every
 *             replay are the same bytes.
 *   release   DEL k, for an answer that is not stored: a 5xx (the server failed; the client
 *             is expected to retry, and the retry runs the handler again) or one larger
 *             than response_bytes_max.
 * The claim expires after lock_ms, so a service that dies mid-request does not hold the key
 * for ever: a retry after lock_ms runs the handler again (Stripe's behaviour too). So
 * lock_ms must exceed the slowest handler; a handler slower than that may run twice.
 * keel server unreachable at claim time: 503, the handler does not run (there is no
 * guarantee to offer).
 * A claim with no answer within request_timeout_ms (keel server stalled, a leader being
 * elected): the request gets 503 at once, but the claim stays in flight (up to lock_ms), since
 * it may still land. If it does, nobody will run the handler for it, and every retry would
 * meet 409 until lock_ms passed (found in the shop: a 3 s stall of keel made 3% of orders
 * miss their 5 s deadline). So a claim that lands after its request was answered is
 * withdrawn: KEEL.GETV, and if the value is still this claim (its nonce), KEEL.TXN deleting it
 * at that version; a retry then claims afresh. A claim whose answer never comes (the
 * connection broke) may still stand until lock_ms, as before. Unreachable when the answer is
 * stored: the answer is sent anyway, counted in keel_idem_store_failures_total, and the key stays
 * claimed until lock_ms.
 *
 * Stored headers: Content-Type, Location, ETag, Last-Modified, Link, Retry-After,
 * Cache-Control (others are not part of the answer's meaning, and are not sent at all).
 *
 * The kit honours the header on routes added with keel_service_route_idem() (kit/service.h);
 * GET and HEAD are safe methods and are never claimed.
 */

#define KEEL_IDEM_KEY_BYTES_MAX 255u /* Stripe's limit; visible ASCII only */
#define KEEL_IDEM_PREFIX_BYTES_MAX 128u
#define KEEL_IDEM_FINGERPRINT_HEX 64u
#define KEEL_IDEM_HEADERS_MAX 8u
#define KEEL_IDEM_NONCE_HEX 16u

typedef struct keel_idem_config {
    const char *servers;          /* keel server client addresses "host:port,..."; NULL: off */
    const char *prefix;           /* key prefix; the kit's default "idem:<service>:" */
    keel_ms_t ttl_ms;             /* a stored answer's life; default 24 h */
    keel_ms_t lock_ms;            /* a claim's life; default 60 s */
    size_t response_bytes_max;    /* body stored at most; default 256 KiB */
    keel_ms_t request_timeout_ms; /* one keel command; default 2000 */
} keel_idem_config_t;

keel_idem_config_t keel_idem_config_default(void);

/* ---- the pure part ------------------------------------------------------------------- */

/* 1..255 bytes of visible ASCII (0x21..0x7e). */
bool keel_idem_key_valid(const char *key, size_t len);

/* Lower-case hex SHA-256 of method "\n" target "\n" body into out (65 bytes with the NUL). */
void keel_idem_fingerprint(const char *method, const char *target, size_t target_len,
                           const void *body, size_t body_len,
                           char out[KEEL_IDEM_FINGERPRINT_HEX + 1]);

/* A record as stored. Decoded in place: pointers into the decoded buffer. */
typedef struct keel_idem_record {
    bool done; /* false: claimed, running */
    char fingerprint[KEEL_IDEM_FINGERPRINT_HEX + 1];
    char nonce[KEEL_IDEM_NONCE_HEX + 1]; /* a claim's ("" in a claim written without one) */
    int status;
    keel_http_header_t headers[KEEL_IDEM_HEADERS_MAX];
    size_t headers_n;
    const uint8_t *body;
    size_t body_len;
} keel_idem_record_t;

/* "P <fingerprint> <nonce>"; nonce: KEEL_IDEM_NONCE_HEX lower-case hex digits. */
int keel_idem_encode_claim(keel_buf_t *out, const char *fingerprint, const char *nonce);
/* Only the stored headers are kept (see above); the body must fit response_bytes_max. */
int keel_idem_encode_answer(keel_buf_t *out, const char *fingerprint, int status,
                            const keel_http_header_t *headers, size_t headers_n, const void *body,
                            size_t body_len);
/* Decodes buf[0..len) in place (NULs are written into it). 0 or KEEL_ECORRUPT. */
int keel_idem_decode(uint8_t *buf, size_t len, keel_idem_record_t *out);

typedef enum keel_idem_decision {
    KEEL_IDEM_RUN = 0,     /* nothing stored: claimed, run the handler */
    KEEL_IDEM_REPLAY,      /* the same request answered before: send the stored answer */
    KEEL_IDEM_MISMATCH,    /* the key was used for another request: 422 */
    KEEL_IDEM_IN_PROGRESS, /* the same key is being served now: 409 */
} keel_idem_decision_t;

/* What to do with a request of this fingerprint, given the key's record (NULL: none). */
keel_idem_decision_t keel_idem_decide(const keel_idem_record_t *rec, const char *fingerprint);

/* ---- on the loop: the store in keel server ------------------------------------------- */

typedef struct keel_idem_stats {
    uint64_t runs, replays, mismatches, in_progress, unavailable, bad_keys, store_failures;
    uint64_t claims_late;      /* claims unanswered past request_timeout_ms (the request: 503) */
    uint64_t claims_withdrawn; /* of those, claims that landed later and were deleted */
} keel_idem_stats_t;

typedef struct keel_idem {
    keel_loop_t *loop;
    keel_idem_config_t cfg;
    char prefix[KEEL_IDEM_PREFIX_BYTES_MAX];
    char seeds_text[512];
    keel_client_t client;
    keel_idem_stats_t stats;
    uint32_t ops;         /* requests between claim and answer, and late claims */
    keel_list_t claiming; /* ops whose claim is in flight, oldest first */
    keel_timer_t timer;   /* answers 503 to a request whose claim is late */
    bool timer_on, timer_open;
    int closing_parts; /* the client and the timer, while closing */
    uint64_t nonce_base, nonce_seq;
    bool closing;
    void (*closed)(struct keel_idem *idem);
    keel_counter_t *m_outcome[6]; /* run, replay, mismatch, in_progress, unavailable, bad_key */
    keel_counter_t *m_store_failures, *m_late, *m_withdrawn;
} keel_idem_t;

int keel_idem_init(keel_idem_t *idem, keel_loop_t *loop, const keel_idem_config_t *cfg,
                   keel_metrics_t *metrics, const char *metrics_labels, keel_errmsg_t *msg);

/*
 * Takes over req, which carries Idempotency-Key `key`: answers it at once (400 for a bad
 * key, 409, 422, 503, or the stored answer), or claims the key, calls run(data) (the
 * handler, which answers req as usual) and stores that answer before it is sent.
 */
void keel_idem_handle(keel_idem_t *idem, keel_http_req_t *req, const char *key, size_t key_len,
                      void (*run)(void *data), void *data);

const keel_idem_stats_t *keel_idem_stats(const keel_idem_t *idem);
/* Closes the connection to keel server; closed (may be NULL) runs when idem may be freed.
 * Requests still between claim and answer lose their store (their claim lapses). */
void keel_idem_close(keel_idem_t *idem, void (*closed)(keel_idem_t *idem));

#endif
