/* resp_server_int.h - the inside of the RESP server, shared by the files that make it up. */
#ifndef KEEL_RUNTIME_RESP_SERVER_INT_H
#define KEEL_RUNTIME_RESP_SERVER_INT_H

/*
 * The server is split by job, one file each:
 *   resp_server.c       config, clients' lifecycle (accept, close, the slot pool), input
 *                       (reads, parsing, backpressure), the loop turn, the idle timer,
 *                       CLIENT LIST's view, start and stop
 *   resp_server_cmds.c  the built-in commands, the command table and its lookup, dispatch
 *                       of one parsed command (arity, before/after hooks, CLIENT REPLY SKIP)
 *   resp_server_out.c   replies: the output buffer, deferred reply slots in command order,
 *                       the output limit, writes, CLIENT REPLY modes
 * Functions shared between them are keel__resp_*, declared at the end of this file.
 */
#include "runtime/resp_server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The size above which idle buffers (input, output, the write in flight) are freed. */
#define IDLE_BUF_KEEP_BYTES (256u * 1024u)

struct keel_resp_deferred {
    keel_resp_deferred_t *next;
    keel_resp_client_t *client; /* NULL once the client is gone: an orphan */
    bool done;
    bool barrier; /* no later command of the client runs before this one is done */
    bool muted;   /* made while the client's replies were off (CLIENT REPLY): dropped */
    keel_buf_t out;
    size_t counted; /* of out's bytes, those in the client's qbytes */
};

struct keel_resp_client {
    uv_tcp_t tcp; /* first: the handle's data points back here too */
    keel_resp_server_t *server;
    keel_list_t link;  /* server->clients */
    keel_list_t plink; /* server->pending, while in it */
    bool closing, writing, rejected;
    bool close_after_reply; /* QUIT, EOF, protocol error, rejection */
    bool stop_input;        /* no more commands will be parsed */
    bool input_blocked;     /* paused: too many deferred replies outstanding */
    bool read_stopped;      /* input_blocked with the socket not read either */
    bool resume_input;      /* parse buffered input on the next loop turn */
    bool barrier_open;      /* a barrier slot is not done: input waits for it */
    bool held;              /* before_command held a command: input waits for resume */
    bool input_taken;       /* the handler took the command's bytes (take_input) */
    /* CLIENT REPLY: replies off; skip the next command's; skip this one's; the command
       being run has its reply dropped (decided when it is dispatched) */
    bool reply_off, reply_skip_next, reply_skip, muting;
    uint64_t id;
    void *data;
    keel_ms_t last_input_ms, created_ms;
    const char *last_cmd; /* the last command's name (CLIENT LIST's cmd=), a table row's */
    char *peer;           /* keel_resp_client_addr's text, made at its first call (owned) */
    keel_resp_parser_t parser;
    keel_buf_t in;   /* unparsed input */
    size_t cmd_used; /* while a handler runs: its command's bytes at the start of `in` */
    keel_buf_t out;  /* replies ready to send */
    keel_buf_t wbuf; /* bytes of the write in flight */
    uv_write_t wreq;
    keel_resp_deferred_t *qhead, *qtail; /* replies queued behind a deferred one */
    size_t deferred_open;                /* slots in the queue not done yet */
    size_t qbytes; /* bytes of the done slots in the queue (their `counted`): the output
                      limit is checked after every reply, and walking a long pipeline's
                      queue each time made a pipeline's cost grow with its square */
    const keel_resp_command_t *cmd; /* the row being run */
    keel_buf_t *out_override;       /* keel_resp_client_set_out */
};

/* keel_buf_rptr() of a buffer that never allocated is NULL + 0, which clang's UBSan flags. */
static inline const uint8_t *keel__resp_unread_ptr(const keel_buf_t *b)
{
    return b->data ? keel_buf_rptr(b) : (const uint8_t *)"";
}

/* resp_server.c */
void keel__resp_mark_pending(keel_resp_client_t *c);
void keel__resp_free_slot(keel_resp_server_t *s, keel_resp_deferred_t *d);
void keel__resp_close_client(keel_resp_client_t *c);
void keel__resp_start_reading(keel_resp_client_t *c);

/* resp_server_cmds.c */
int keel__resp_build_table(keel_resp_server_t *s, const keel_resp_command_t *cmds, size_t n,
                           keel_errmsg_t *msg);
int keel__resp_dispatch(keel_resp_client_t *c, const keel_resp_cmd_t *cmd);

/* resp_server_out.c */
size_t keel__resp_output_bytes(const keel_resp_client_t *c);
bool keel__resp_enforce_output_limit(keel_resp_client_t *c);
void keel__resp_flush(keel_resp_client_t *c);

#endif
