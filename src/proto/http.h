/* http.h - HTTP/1.1 message parser (on http-parser) and response/request writers; no I/O. */
#ifndef KEEL_PROTO_HTTP_H
#define KEEL_PROTO_HTTP_H

#include "base/buf.h"
#include "base/err.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Sans-I/O HTTP/1.1 codec (RFC 9112). The caller owns the bytes and the
 * socket; this module turns bytes into whole messages and messages into bytes.
 *
 * Parsing: keel_http_parser_feed() takes any split of the input (one byte at a
 * time is fine) and copies the request line, headers and body into a
 * keel_http_msg_t that owns reusable storage, so the input buffer can be
 * consumed at once and no per-request allocation happens once the storage has
 * grown to its working size. Feeding stops right after a complete message
 * (KEEL_HTTP_MESSAGE), leaving any pipelined bytes that follow unconsumed; the
 * caller handles the message and then feeds the rest.
 *
 * Limits are checked while bytes arrive, so a peer can make us hold at most
 * headers_bytes_max + body_bytes_max per message. A broken limit or malformed
 * input ends the message with KEEL_HTTP_ERROR and the status a server should
 * answer before closing: 400 malformed, 414 URL too long, 431 header section
 * too large or too many headers (RFC 6585 §5), 413 body too large (decided at
 * the headers when Content-Length says so, so no body byte is read), 501 for a
 * transfer coding other than chunked. After an error the parser is dead: the
 * connection must be closed.
 */

/* Compile-time ceilings for the configurable limits. */
#define KEEL_HTTP_HEADERS_COUNT_CEILING 256
#define KEEL_HTTP_HEADERS_BYTES_CEILING (80u * 1024u) /* http-parser's own HTTP_MAX_HEADER_SIZE */

typedef struct keel_http_limits {
    size_t url_bytes_max;     /* request target, bytes; over it: 414 */
    size_t headers_bytes_max; /* URL + header names + values (+1 byte each), bytes; over: 431 */
    size_t headers_count_max; /* header fields; over it: 431 */
    size_t body_bytes_max;    /* decoded body, bytes; over it: 413 */
} keel_http_limits_t;

/* 8 KiB URL, 16 KiB headers, 64 headers, 1 MiB body. */
keel_http_limits_t keel_http_limits_default(void);
int keel_http_limits_validate(const keel_http_limits_t *lim, keel_errmsg_t *msg);

typedef struct keel_http_header {
    const char *name; /* NUL-terminated, as received (compare case-insensitively) */
    size_t name_len;
    const char *value; /* NUL-terminated, surrounding whitespace trimmed by http-parser */
    size_t value_len;
    /* parse-time offsets into the message's head storage */
    uint32_t name_off, value_off;
} keel_http_header_t;

/*
 * One parsed message. Pointers stay valid until the next message is fed into
 * the same keel_http_msg_t or it is freed.
 */
typedef struct keel_http_msg {
    int method; /* enum http_method (requests) */
    int status; /* responses */
    int version_major, version_minor;
    bool keep_alive;      /* connection may carry another message after this one */
    bool expect_continue; /* request carried "Expect: 100-continue" */
    bool chunked;         /* body came with Transfer-Encoding: chunked */
    bool head_complete;   /* header section fully parsed */
    const char *url;      /* NUL-terminated request target (requests) */
    size_t url_len;
    const char *path; /* url up to '?' (not NUL-terminated) */
    size_t path_len;
    const char *query; /* after '?', or "" */
    size_t query_len;
    keel_http_header_t *headers;
    size_t headers_count;
    const uint8_t *body;
    size_t body_len;
    uint64_t content_length; /* UINT64_MAX when not given */
    /* storage, reused across messages */
    keel_buf_t head;
    keel_buf_t body_buf;
    size_t headers_cap;
    uint32_t url_off;
} keel_http_msg_t;

void keel_http_msg_init(keel_http_msg_t *m);
void keel_http_msg_free(keel_http_msg_t *m);
/* Value of the first header named `name` (case-insensitive) or NULL; *len set if non-NULL. */
const char *keel_http_msg_header(const keel_http_msg_t *m, const char *name, size_t *len);

enum keel_http_event {
    KEEL_HTTP_NEED_MORE = 0, /* all input consumed, message not complete */
    KEEL_HTTP_MESSAGE = 1,   /* one complete message; *consumed stops right after it */
    KEEL_HTTP_ERROR = 2,     /* see parser.error_status / error_text; parser is dead */
};

typedef enum keel_http_kind { KEEL_HTTP_REQUEST = 0, KEEL_HTTP_RESPONSE = 1 } keel_http_kind_t;

typedef struct keel_http_parser {
    http_parser hp;
    keel_http_limits_t lim;
    keel_http_kind_t kind;
    keel_http_msg_t *msg; /* target of the current feed */
    int last_cb;          /* 0 none, 1 header field, 2 header value */
    int event;
    bool in_message;
    bool skip_body;   /* response to HEAD: no body follows the headers */
    int error_status; /* 400, 413, 414, 431, 501 on KEEL_HTTP_ERROR */
    int error_code;   /* KEEL_EPROTO or KEEL_ETOOBIG */
    const char *error_text;
} keel_http_parser_t;

/* Limits must be valid (asserted). The parser holds no heap memory. */
void keel_http_parser_init(keel_http_parser_t *p, keel_http_kind_t kind,
                           const keel_http_limits_t *lim);
/* Feeds n bytes into m; *consumed gets how many were used. Returns a keel_http_event. */
int keel_http_parser_feed(keel_http_parser_t *p, keel_http_msg_t *m, const uint8_t *data, size_t n,
                          size_t *consumed);
/* The peer closed its side: completes a read-until-close response body, else KEEL_HTTP_ERROR
 * when a message was in progress, else KEEL_HTTP_NEED_MORE. */
int keel_http_parser_finish(keel_http_parser_t *p, keel_http_msg_t *m);
/* True when bytes of a message have been fed but it is not complete yet. */
static inline bool keel_http_parser_mid_message(const keel_http_parser_t *p)
{
    return p->in_message;
}
/* For a response parser: the next response answers a HEAD request (has no body). */
static inline void keel_http_parser_expect_no_body(keel_http_parser_t *p, bool yes)
{
    p->skip_body = yes;
}

/* "Not Found" for 404, "Unknown" when http-parser has no name. */
const char *keel_http_status_text(int status);

/* True for the fields the writers set themselves and drop when a caller passes them:
 * Content-Length, Transfer-Encoding, Connection, Keep-Alive, Host, Date, Server. A proxy can
 * pass a received header list through unchanged. */
bool keel_http_header_is_managed(const keel_http_header_t *h);

/* Flags for the writers. */
#define KEEL_HTTP_W_CLOSE 1u          /* add "Connection: close" */
#define KEEL_HTTP_W_KEEPALIVE 1u << 1 /* add "Connection: keep-alive" (HTTP/1.0 peers) */
#define KEEL_HTTP_W_HEAD 1u << 2 /* answer to HEAD: Content-Length of the body, no body bytes */

/*
 * Appends a complete response with Content-Length to out. `date_line` is a
 * whole "Date: ...\r\n" line the caller keeps (the clock lives in the runtime)
 * or NULL. headers[i].name/value are written as given (lengths used).
 * Returns 0 or KEEL_ETOOBIG / KEEL_ENOMEM from the buffer.
 */
int keel_http_write_response(keel_buf_t *out, int status, const keel_http_header_t *headers,
                             size_t headers_count, const void *body, size_t body_len,
                             unsigned flags, const char *date_line);
/* "HTTP/1.1 100 Continue\r\n\r\n". */
int keel_http_write_continue(keel_buf_t *out);
/* A request with Host and, when a body is given or the method is POST/PUT/PATCH,
 * Content-Length. */
int keel_http_write_request(keel_buf_t *out, int method, const char *host, const char *target,
                            const keel_http_header_t *headers, size_t headers_count,
                            const void *body, size_t body_len, unsigned flags);

#endif
