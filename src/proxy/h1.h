/* h1.h - the proxy's strict HTTP/1.1 head parser and chunked-body decoder (RFC 9112); no I/O. */
#ifndef KEEL_PROXY_H1_H
#define KEEL_PROXY_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * Why not proto/http.h: that wrapper collects a whole message (body included)
 * into memory before handing it over, which is right for an API server and
 * wrong for a proxy, which must stream bodies of any size with backpressure.
 * A proxy also has to be stricter than a server about framing, because two
 * parsers that disagree about where a message ends is request smuggling
 * (RFC 9112 §11.2). So the proxy parses heads itself and decodes chunked
 * bodies incrementally, and it re-frames every body it forwards.
 *
 * Heads: the caller accumulates bytes and calls keel_h1_head_end() to learn
 * whether a whole head (up to and including the empty line) is there; it
 * resumes its scan where the last call stopped, so a head that arrives one
 * byte at a time costs O(n). Then keel_h1_parse_request/_response() parses the
 * complete head in one pass. Parsed fields are (offset, length) pairs into the
 * head's bytes, so the caller may copy or move them.
 *
 * Refused (with the status a proxy answers, then the connection is closed):
 *   400  malformed request line or header line, bare CR or LF, a control
 *        character in a value, whitespace between a field name and the colon,
 *        obs-fold (a line starting with SP or HTAB), both Content-Length and
 *        Transfer-Encoding, Content-Length that is not 1*DIGIT or differs from
 *        an earlier one, Transfer-Encoding whose last coding is not chunked or
 *        that is sent by an HTTP/1.0 client, several Host fields, no Host in
 *        HTTP/1.1, a version other than HTTP/1.0 or HTTP/1.1.
 *   414  request target longer than uri_bytes_max.
 *   431  head longer than head_bytes_max, or more than headers_count_max fields.
 *   501  a transfer coding other than chunked.
 * Responses get the same checks; the caller maps any failure to 502.
 */

#define KEEL_H1_HEADERS_CEILING 256u      /* headers_count_max may not exceed it */
#define KEEL_H1_HEAD_BYTES_CEILING 65536u /* head_bytes_max may not exceed it */
#define KEEL_H1_CONN_TOKENS_MAX 8u        /* Connection-listed field names remembered */
#define KEEL_H1_CHUNK_EXT_BYTES_MAX 256u  /* chunk extensions per chunk line */
#define KEEL_H1_TRAILER_BYTES_MAX 8192u   /* trailer section, dropped (not forwarded) */

typedef struct keel_h1_limits {
    uint32_t uri_bytes_max;     /* request target; over it: 414 */
    uint32_t head_bytes_max;    /* whole head, start line to empty line; over it: 431 */
    uint32_t headers_count_max; /* header fields; over it: 431 */
} keel_h1_limits_t;

typedef struct keel_h1_span {
    uint32_t off, len;
} keel_h1_span_t;

typedef struct keel_h1_field {
    keel_h1_span_t name, value; /* value without surrounding SP/HTAB */
} keel_h1_field_t;

typedef enum keel_h1_body {
    KEEL_H1_BODY_NONE,    /* no body */
    KEEL_H1_BODY_LENGTH,  /* content_length bytes */
    KEEL_H1_BODY_CHUNKED, /* chunked coding */
    KEEL_H1_BODY_CLOSE,   /* responses: until the connection closes */
} keel_h1_body_t;

/* Flags from the Connection field. */
#define KEEL_H1_CONN_CLOSE 1u
#define KEEL_H1_CONN_KEEPALIVE 2u

typedef struct keel_h1_head {
    uint32_t head_bytes; /* the head's length, empty line included */
    keel_h1_span_t method, target, reason;
    int status;        /* responses */
    int version_minor; /* 0 or 1 */
    keel_h1_field_t fields[KEEL_H1_HEADERS_CEILING];
    uint32_t fields_count;
    keel_h1_body_t body;
    uint64_t content_length; /* KEEL_H1_BODY_LENGTH */
    int host_field;          /* index of Host in fields, or -1 */
    unsigned conn_flags;     /* KEEL_H1_CONN_* */
    bool keep_alive;         /* the connection may carry another message afterwards */
    bool expect_continue;    /* Expect: 100-continue */
    keel_h1_span_t conn_tokens[KEEL_H1_CONN_TOKENS_MAX]; /* other Connection options */
    uint32_t conn_tokens_count;
} keel_h1_head_t;

/*
 * Looks for the end of a head in buf[0..n). *scan is the caller's cursor
 * (start at 0; pass it back unchanged with more bytes). Returns the head's
 * length when it is complete, 0 when more bytes are needed.
 */
size_t keel_h1_head_end(const char *buf, size_t n, size_t *scan);

/* Parses a complete request head buf[0..n) (n from keel_h1_head_end). 0, or the status to
 * answer (400, 414, 431, 501). */
int keel_h1_parse_request(const char *buf, size_t n, const keel_h1_limits_t *lim,
                          keel_h1_head_t *h);
/* Parses a complete response head. head_request: it answers HEAD (no body). 0 or 502. 1xx
 * responses other than 101 parse with body NONE (the caller skips them). */
int keel_h1_parse_response(const char *buf, size_t n, const keel_h1_limits_t *lim,
                           bool head_request, keel_h1_head_t *h);

/* While a head is incomplete: the status to refuse it with now (414 or 431 for a request whose
 * start line or head is already too long), or 0 to keep reading. */
int keel_h1_request_overflow(const char *buf, size_t n, const keel_h1_limits_t *lim);

/* Case-insensitive comparison of a span of base with a NUL-terminated lower-case name. Inline:
 * called a dozen times per forwarded field with a literal, whose strlen then folds away. */
static inline bool keel_h1_span_is(const char *base, keel_h1_span_t s, const char *lower)
{
    size_t n = strlen(lower);
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)base[s.off + i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lower[i])
            return false;
    }
    return true;
}
/* Index of the first field called lower (lower-case), or -1. Inline, as keel_h1_span_is. */
static inline int keel_h1_find(const char *base, const keel_h1_head_t *h, const char *lower)
{
    for (uint32_t i = 0; i < h->fields_count; i++)
        if (keel_h1_span_is(base, h->fields[i].name, lower))
            return (int)i;
    return -1;
}
/* True for the hop-by-hop fields of RFC 9110 §7.6.1 plus the framing fields the proxy rewrites
 * (Content-Length, Transfer-Encoding) and the fields named in Connection. */
bool keel_h1_is_hop_by_hop(const char *base, const keel_h1_head_t *h, keel_h1_span_t name);

/* tchar (RFC 9110 §5.6.2): the characters of a token (methods, field names, codings, protocol
   names): ALPHA, DIGIT and !#$%&'*+-.^_`|~. One table for the parser and everything that
   judges or echoes a token. */
extern const uint8_t keel_h1_tchar[256];
static inline bool keel_h1_is_tchar(unsigned char c)
{
    return keel_h1_tchar[c] != 0;
}

/*
 * Chunked decoder (RFC 9112 §7.1). Feed any split of the body; each call
 * consumes some input and may return one span of decoded data inside it.
 * Chunk sizes over 2^60, a missing CRLF after data, a bad hex digit, a chunk
 * extension over KEEL_H1_CHUNK_EXT_BYTES_MAX or a trailer section over
 * KEEL_H1_TRAILER_BYTES_MAX are errors. Trailers are read and dropped.
 */
typedef enum keel_h1_chunk_state {
    KEEL_H1_CK_SIZE,
    KEEL_H1_CK_EXT,
    KEEL_H1_CK_SIZE_LF,
    KEEL_H1_CK_DATA,
    KEEL_H1_CK_DATA_CR,
    KEEL_H1_CK_DATA_LF,
    KEEL_H1_CK_TRAILER,    /* at the start of a trailer line */
    KEEL_H1_CK_TRAILER_IN, /* inside a trailer line */
    KEEL_H1_CK_TRAILER_LF,
    KEEL_H1_CK_END_LF,
    KEEL_H1_CK_DONE,
    KEEL_H1_CK_ERROR,
} keel_h1_chunk_state_t;

typedef struct keel_h1_chunked {
    keel_h1_chunk_state_t state;
    uint64_t remaining; /* data bytes left in the current chunk */
    uint32_t digits, ext_bytes, trailer_bytes;
    bool line_empty; /* the trailer line being read has no bytes yet */
} keel_h1_chunked_t;

enum keel_h1_chunk_result {
    KEEL_H1_CK_MORE = 0, /* input consumed; more is needed */
    KEEL_H1_CK_BODY = 1, /* *data_off and *data_len name decoded bytes in the input */
    KEEL_H1_CK_END = 2,  /* the body is complete; *consumed stops right after it */
    KEEL_H1_CK_BAD = 3,  /* malformed: the connection must be closed */
};

void keel_h1_chunked_init(keel_h1_chunked_t *c);
/* Consumes up to n bytes of in (at least one byte unless n == 0 or the state is final). */
int keel_h1_chunked_feed(keel_h1_chunked_t *c, const uint8_t *in, size_t n, size_t *consumed,
                         size_t *data_off, size_t *data_len);

#endif
