/* trace.h - trace context (W3C traceparent, B3), id generation, spans as Zipkin v2 JSON. */
#ifndef KEEL_PROTO_TRACE_H
#define KEEL_PROTO_TRACE_H

#include "base/buf.h"
#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Propagation formats:
 *
 *  - W3C Trace Context (https://www.w3.org/TR/trace-context/ §3.2):
 *      traceparent: 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex trace-flags>
 *    lower-case hex only; all-zero trace-id or parent-id is invalid; version
 *    ff is invalid; version 00 is exactly 55 characters; a higher version may
 *    carry more fields after a '-', which we ignore (§3.2.4, future versions).
 *  - B3 (https://github.com/openzipkin/b3-propagation): multi-header
 *    x-b3-traceid (16 or 32 lower hex; 16 is left-padded with zeros),
 *    x-b3-spanid (16), x-b3-parentspanid (16, optional), x-b3-sampled
 *    ("1"/"0", legacy "true"/"false"), x-b3-flags ("1" = debug, implies
 *    sampled); and the single header b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]
 *    where sampled is 1, 0 or d (debug), or b3: {sampled} alone (a sampling
 *    decision without ids).
 *
 * A context parsed from a request describes the caller's span: its span_id
 * is the header's parent-id. The server then makes its own span with
 * keel_trace_child(), whose parent_id is that caller span.
 */
#define KEEL_TRACE_ID_BYTES 16
#define KEEL_SPAN_ID_BYTES 8
#define KEEL_TRACE_FLAG_SAMPLED 0x01u
#define KEEL_TRACEPARENT_LEN 55u    /* version 00 */
#define KEEL_TRACE_B3_BYTES_MAX 72u /* single b3 value with parent, plus NUL */

typedef struct keel_trace_ctx {
    uint8_t trace_id[KEEL_TRACE_ID_BYTES];
    uint8_t span_id[KEEL_SPAN_ID_BYTES];
    uint8_t parent_id[KEEL_SPAN_ID_BYTES]; /* all zero: no parent known */
    uint8_t flags;                         /* W3C trace-flags; bit 0 = sampled */
    uint8_t deferred; /* B3 without a sampling state: the decision is ours to make */
} keel_trace_ctx_t;

/* A header value: bytes and length, not NUL-terminated; ptr NULL means absent. */
typedef struct keel_trace_str {
    const char *ptr;
    size_t len;
} keel_trace_str_t;

typedef struct keel_trace_b3 {
    keel_trace_str_t trace_id, span_id, parent_span_id, sampled, flags;
} keel_trace_b3_t;

/* 0, or KEEL_EPROTO for anything the spec calls invalid (the caller starts a new trace). */
int keel_trace_parse_traceparent(const char *s, size_t n, keel_trace_ctx_t *out);
/* Writes the 55 characters and a NUL into out[56]. */
void keel_trace_format_traceparent(const keel_trace_ctx_t *c, char *out);

/* 0 or KEEL_EPROTO. trace_id and span_id are required. */
int keel_trace_parse_b3_multi(const keel_trace_b3_t *h, keel_trace_ctx_t *out);
/*
 * 0 with ids, KEEL_EPROTO if malformed, or KEEL_ENOTFOUND for the
 * sampling-only form ("0", "1", "d"): then only out->flags and
 * out->deferred are meaningful.
 */
int keel_trace_parse_b3_single(const char *s, size_t n, keel_trace_ctx_t *out);
/* {traceid32}-{spanid}-{1|0}[-{parentspanid}] and a NUL into out[KEEL_TRACE_B3_BYTES_MAX]. */
void keel_trace_format_b3_single(const keel_trace_ctx_t *c, char *out);

/* A new trace: random non-zero trace and span ids, no parent. */
void keel_trace_new_root(keel_rand_t *r, int sampled, keel_trace_ctx_t *out);
/* Same trace and flags, new random non-zero span id, parent_id = parent's span_id. */
void keel_trace_child(const keel_trace_ctx_t *parent, keel_rand_t *r, keel_trace_ctx_t *out);
int keel_trace_has_parent(const keel_trace_ctx_t *c);
/* Lower-case hex of the ids, NUL-terminated: out[33] and out[17]. */
void keel_trace_id_hex(const keel_trace_ctx_t *c, char *out);
void keel_trace_span_hex(const uint8_t *span_id, char *out);

/* ---- spans ----------------------------------------------------------------- */

#define KEEL_SPAN_ATTRS_MAX 16
#define KEEL_SPAN_NAME_BYTES_MAX 128 /* name and service name each; longer ones are cut */
#define KEEL_SPAN_TEXT_BYTES_MAX                                                                   \
    2048 /* name, service, attribute keys and values, NULs included                                \
          */

typedef enum keel_span_kind {
    KEEL_SPAN_KIND_NONE = 0,
    KEEL_SPAN_KIND_CLIENT,
    KEEL_SPAN_KIND_SERVER,
    KEEL_SPAN_KIND_PRODUCER,
    KEEL_SPAN_KIND_CONSUMER,
} keel_span_kind_t;

typedef enum keel_span_status {
    KEEL_SPAN_OK = 0,
    KEEL_SPAN_ERROR = 1,
} keel_span_status_t;

/*
 * One finished (or running) span. Self-contained (its strings are copied into
 * `text`), so it can be queued for export after the request is gone. Fixed
 * size: ~2.3 KB, no allocation.
 */
typedef struct keel_span {
    keel_trace_ctx_t ctx;
    keel_span_kind_t kind;
    keel_us_t start_us;    /* wall clock, microseconds since the Unix epoch (Zipkin timestamp) */
    keel_us_t duration_us; /* < 0: unknown (still running) */
    keel_span_status_t status;
    uint16_t name_off, service_off;
    /* remoteEndpoint (a client span's peer): service name and IP offsets into text, port;
     * has_remote 0 when none */
    uint16_t remote_service_off, remote_ip_off, remote_port;
    uint8_t has_remote;
    uint16_t attrs_len;
    struct {
        uint16_t key_off, value_off;
    } attrs[KEEL_SPAN_ATTRS_MAX];
    uint16_t text_used;
    char text[KEEL_SPAN_TEXT_BYTES_MAX];
} keel_span_t;

void keel_span_init(keel_span_t *s, const keel_trace_ctx_t *ctx, keel_span_kind_t kind,
                    const char *service, const char *name, keel_us_t start_us);
/* 0, or KEEL_EFULL when the attribute slots or text space are used up (span unchanged). */
int keel_span_set_attr(keel_span_t *s, const char *key, const char *value);
/* The peer of a client span: Zipkin's remoteEndpoint. service may be NULL or "" (left out);
 * ip is a numeric IPv4 or IPv6 address (without brackets); port 0 is left out. 0, or
 * KEEL_EFULL when the text space is used up (span unchanged). */
int keel_span_set_remote(keel_span_t *s, const char *service, const char *ip, uint16_t port);
void keel_span_end(keel_span_t *s, keel_us_t end_us, keel_span_status_t status);
const char *keel_span_name(const keel_span_t *s);
const char *keel_span_attr(const keel_span_t *s, const char *key); /* NULL if absent */

/*
 * Appends the span as one Zipkin v2 JSON object (https://zipkin.io/zipkin-api/,
 * the Span model): traceId, id, parentId, name, kind, timestamp, duration,
 * localEndpoint.serviceName, remoteEndpoint (serviceName, ipv4 or ipv6, port), tags (attributes;
 * status ERROR adds tag "error" unless an "error" attribute says more). Strings are escaped per RFC
 * 8259 §7; bytes that are not valid UTF-8 become U+FFFD. To export, wrap objects in [ , ]. 0, or
 * KEEL_ETOOBIG / KEEL_ENOMEM with b unchanged.
 */
int keel_span_to_zipkin_json(const keel_span_t *s, keel_buf_t *b);
/* JSON string literal (quotes included) of s[0..n), escaped as above. */
int keel_trace_append_json_string(keel_buf_t *b, const char *s, size_t n);

#endif
