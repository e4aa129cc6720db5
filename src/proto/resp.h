/* resp.h - RESP2 codec: incremental request parser, reply parser, writers (sans-I/O). */
#ifndef KEEL_PROTO_RESP_H
#define KEEL_PROTO_RESP_H

#include "base/buf.h"
#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * RESP2 as specified at https://redis.io/docs/reference/protocol-spec/ and as
 * redis-server actually parses it (src/networking.c, processMultibulkBuffer and
 * processInlineBuffer):
 *
 *   simple string  +OK\r\n            error    -ERR text\r\n
 *   integer        :42\r\n            bulk     $3\r\nfoo\r\n   null bulk  $-1\r\n
 *   array          *2\r\n<elem><elem> null array *-1\r\n
 *
 * A client sends a command as an array of bulk strings, or as an "inline
 * command": one line of space-separated words (`PING\r\n`, what telnet and
 * redis-cli's raw mode send), where words may be quoted "like \"this\"" or
 * 'like this' exactly as redis-cli's sdssplitargs() accepts them.
 *
 * Every size a peer can claim is bounded before anything is allocated for it:
 * a bulk's bytes are never reserved from its header (the caller's buffer
 * grows only by what has arrived), an array's slots grow as its elements
 * arrive, and replies are allocated only once the whole reply is present.
 */

/* Hard caps. The parser options below may only lower them. */
#define KEEL_RESP_BULK_BYTES_MAX (512u * 1024u * 1024u) /* Redis proto-max-bulk-len */
#define KEEL_RESP_ARRAY_LEN_MAX (1024u * 1024u)         /* elements in one array */
#define KEEL_RESP_NESTING_MAX 32u                       /* array depth in replies */
#define KEEL_RESP_INLINE_BYTES_MAX (64u * 1024u)        /* Redis PROTO_INLINE_MAX_SIZE */
/* Longest "*<count>\r\n" / "$<len>\r\n" header line: type byte, sign, 19 digits, CRLF. */
#define KEEL_RESP_HEADER_BYTES_MAX 23u

typedef struct keel_resp_config {
    size_t bulk_bytes_max;   /* <= KEEL_RESP_BULK_BYTES_MAX */
    size_t array_len_max;    /* <= KEEL_RESP_ARRAY_LEN_MAX */
    size_t nesting_max;      /* 1..KEEL_RESP_NESTING_MAX (replies only) */
    size_t inline_bytes_max; /* 16..KEEL_RESP_INLINE_BYTES_MAX */
} keel_resp_config_t;

/* Every limit at its hard cap. */
keel_resp_config_t keel_resp_config_default(void);
int keel_resp_config_validate(const keel_resp_config_t *cfg, keel_errmsg_t *msg);

/* A byte string borrowed from the input (or the parser's scratch); not NUL-terminated. */
typedef struct keel_resp_arg {
    const uint8_t *ptr;
    size_t len;
} keel_resp_arg_t;

/* ---- request parser (server side) ----------------------------------------- */

/*
 * One parser per connection. Feed it the connection's unconsumed input:
 *
 *     size_t used;
 *     rc = keel_resp_parse_request(&p, keel_buf_rptr(&in), keel_buf_unread(&in),
 *                                  &cmd, &used, &msg);
 *     keel_buf_consume(&in, used);   // always, whatever rc is
 *
 * Returns 0 with one complete command in `cmd` (argc >= 1), KEEL_EAGAIN when
 * the next command is not complete yet, or KEEL_EPROTO / KEEL_ETOOBIG with
 * the Redis reply text in msg ("Protocol error: invalid bulk length"); after
 * an error the parser must be reset or dropped (the server closes the link).
 *
 * `*consumed` is always set and the caller drops that many bytes from the
 * front before the next call: the command's bytes on success, and on
 * KEEL_EAGAIN the bytes of empty commands skipped on the way (blank inline
 * lines, `*0`, `*-1`). The next call must pass the same unconsumed bytes
 * again (they may move in memory) followed by whatever arrived since.
 *
 * Incremental: the parser remembers how far it got (offsets, not pointers),
 * so a 100 MB bulk arriving in 64 KiB reads costs one comparison per read,
 * not a rescan. Zero-copy: argv of a multibulk command points into `data`;
 * unquoted inline words do too; quoted inline words point into the parser's
 * scratch. argv stays valid until the next call or until `data` changes.
 */
typedef struct keel_resp_cmd {
    size_t argc;
    const keel_resp_arg_t *argv;
} keel_resp_cmd_t;

typedef struct keel_resp_parser {
    keel_resp_config_t cfg;
    /* progress through the current command, offsets from its first byte */
    int state;
    size_t pos;            /* next byte to look at */
    size_t inline_scan;    /* inline: bytes already known to hold no '\n' */
    int64_t args_want;     /* multibulk: elements announced by '*' */
    int64_t bulk_len;      /* current bulk's length, once its header is read */
    size_t argc;           /* elements complete so far */
    size_t args_cap;       /* slots in arg_off/arg_len/argv */
    size_t *arg_off;       /* owned */
    size_t *arg_len;       /* owned */
    keel_resp_arg_t *argv; /* owned; filled when a command completes */
    uint8_t *scratch;      /* owned; unescaped inline words */
    size_t scratch_cap;
} keel_resp_parser_t;

/* cfg NULL means keel_resp_config_default(); cfg must be valid (asserted). */
void keel_resp_parser_init(keel_resp_parser_t *p, const keel_resp_config_t *cfg);
void keel_resp_parser_free(keel_resp_parser_t *p);
/* Forgets a half-parsed command (keeps memory). */
void keel_resp_parser_reset(keel_resp_parser_t *p);
int keel_resp_parse_request(keel_resp_parser_t *p, const uint8_t *data, size_t len,
                            keel_resp_cmd_t *cmd, size_t *consumed, keel_errmsg_t *msg);

/* ---- reply parser (client side) ------------------------------------------ */

typedef enum keel_resp_type {
    KEEL_RESP_SIMPLE = 1, /* +text */
    KEEL_RESP_ERROR,      /* -text */
    KEEL_RESP_INT,        /* :n */
    KEEL_RESP_BULK,       /* $n */
    KEEL_RESP_NIL,        /* $-1 */
    KEEL_RESP_ARRAY,      /* *n */
    KEEL_RESP_NIL_ARRAY,  /* *-1 */
} keel_resp_type_t;

/*
 * A parsed reply. Strings point into the input passed to the parser (borrowed:
 * keep the input alive and unchanged while using the value). An array's
 * elements are contiguous. A whole reply is one allocation: free it with
 * keel_resp_value_free(root) only.
 */
typedef struct keel_resp_value {
    keel_resp_type_t type;
    int64_t integer;     /* KEEL_RESP_INT */
    keel_resp_arg_t str; /* SIMPLE, ERROR, BULK */
    size_t elems_len;    /* ARRAY */
    struct keel_resp_value *elems;
} keel_resp_value_t;

/*
 * Parses one complete reply from the front of data. 0 with *out (owned by the
 * caller) and *consumed; KEEL_EAGAIN if the reply is not complete yet (nothing
 * allocated, *consumed = 0); KEEL_EPROTO / KEEL_ETOOBIG with text in msg;
 * KEEL_ENOMEM. Stateless: a partial reply is rescanned on the next call, which
 * is fine for replies (the server side is the one exposed to big inputs).
 */
int keel_resp_parse_reply(const keel_resp_config_t *cfg, const uint8_t *data, size_t len,
                          keel_resp_value_t **out, size_t *consumed, keel_errmsg_t *msg);
void keel_resp_value_free(keel_resp_value_t *root);
/* True when v is an error reply whose text contains text (e.g. "FENCED", "EXISTS"). */
bool keel_resp_error_contains(const keel_resp_value_t *v, const char *text);

/* ---- writers ------------------------------------------------------------- */

/*
 * Each writer appends one complete RESP value to b and returns 0, or returns
 * KEEL_ETOOBIG / KEEL_ENOMEM and leaves b exactly as it was. Simple strings
 * and errors cannot hold CR or LF: like Redis's addReplyError, those bytes are
 * written as spaces. `err` texts start with an error code word ("ERR ...",
 * "WRONGTYPE ...") by convention; the leading '-' is added here.
 */
int keel_resp_write_simple(keel_buf_t *b, const char *s);
int keel_resp_write_error(keel_buf_t *b, const char *err);
int keel_resp_write_errorf(keel_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int keel_resp_write_int(keel_buf_t *b, int64_t v);
int keel_resp_write_bulk(keel_buf_t *b, const void *p, size_t n);
int keel_resp_write_bulk_str(keel_buf_t *b, const char *s);
int keel_resp_write_nil(keel_buf_t *b);       /* $-1 */
int keel_resp_write_nil_array(keel_buf_t *b); /* *-1 */
/* Header only; the caller then writes n elements. */
int keel_resp_write_array_header(keel_buf_t *b, size_t n);
/* A client command: an array of argc bulk strings. */
int keel_resp_write_command(keel_buf_t *b, size_t argc, const keel_resp_arg_t *argv);
/*
 * Redis 7's error for a command it does not know: "ERR unknown command 'x', with args
 * beginning with: 'a' 'b' " (the name and the arguments cut at 128 bytes each, as
 * processCommand words it). The one place this text is written.
 */
int keel_resp_write_unknown_command(keel_buf_t *b, size_t argc, const uint8_t *const *argv,
                                    const size_t *lens);
/* Any parsed value, recursively (depth <= KEEL_RESP_NESTING_MAX, asserted). */
int keel_resp_write_value(keel_buf_t *b, const keel_resp_value_t *v);

#endif
