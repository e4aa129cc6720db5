/* resp_server.h - RESP server on libuv: clients, pipelining, command table, deferred replies. */
#ifndef KEEL_RUNTIME_RESP_SERVER_H
#define KEEL_RUNTIME_RESP_SERVER_H

#include "base/buf.h"
#include "base/err.h"
#include "base/ktime.h"
#include "base/list.h"
#include "proto/resp.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/*
 * The network half of keel server's client protocol, modelled on Redis's
 * src/networking.c: accept, read, parse pipelined commands, look each up in a
 * command table, run its handler, write the replies back.
 *
 * Ordering. RESP has no request ids: replies must leave in request order. A
 * handler either writes its reply at once (into keel_resp_client_out()) or
 * defers it (keel_resp_client_defer()), e.g. until Raft commits the entry.
 * While a deferred reply is outstanding, later replies are held in order
 * behind it and released when it completes, whatever order things finish in.
 *
 * Batching. Replies are appended to a per-client buffer; once per loop turn
 * (a uv_prepare handle, before the loop blocks) every client with output gets
 * one uv_write of everything pending, and never more than one write is in
 * flight per client: while it is, new replies accumulate for the next one.
 *
 * Limits (each a config field):
 *  - clients_max: one more connection is accepted only to be told
 *    "-ERR max number of clients reached" and closed (as Redis does);
 *  - querybuf_bytes_max: unparsed input per client; past it the client is
 *    closed (Redis client-query-buffer-limit);
 *  - reply_bytes_max: output held for a client (unsent plus queued behind a
 *    deferred reply); past it the client is closed (Redis
 *    client-output-buffer-limit), so a client that does not read cannot make
 *    the server buffer without bound;
 *  - pending_replies_max: deferred replies outstanding per client; at the
 *    limit the server stops reading and parsing that client's input until
 *    some complete (backpressure, not an error);
 *  - idle_timeout_ms: a client with no input for that long and nothing
 *    outstanding is closed (0 = never; Redis "timeout").
 * A protocol error closes only the offending connection, after its earlier
 * replies and the "-ERR Protocol error: ..." reply have been written.
 */

typedef struct keel_resp_server keel_resp_server_t;
typedef struct keel_resp_client keel_resp_client_t;
typedef struct keel_resp_deferred keel_resp_deferred_t;

/*
 * A command handler. argv[0] is the command name as sent; argv points into
 * the input buffer and is valid only during the call (a handler that defers
 * copies what it needs). It writes exactly one reply, into
 * keel_resp_client_out(c) or later through a deferred slot, and returns 0 or
 * the error of a failed write (KEEL_ETOOBIG: output limit, KEEL_ENOMEM);
 * on an error the client is closed, since its reply stream is now broken.
 */
typedef int (*keel_resp_handler_fn)(keel_resp_client_t *c, size_t argc,
                                    const keel_resp_arg_t *argv);

/* Command flags, as in the JSON command table of Redis (src/commands/). */
#define KEEL_RESP_CMD_WRITE 0x01u      /* changes data: goes through Raft */
#define KEEL_RESP_CMD_READONLY 0x02u   /* reads data */
#define KEEL_RESP_CMD_FAST 0x04u       /* O(1) or O(log n), never blocks */
#define KEEL_RESP_CMD_ADMIN 0x08u      /* server administration */
#define KEEL_RESP_CMD_SUBSCRIBED 0x10u /* allowed in RESP2 subscribed mode */
#define KEEL_RESP_CMD_NOQUEUE 0x20u    /* runs at once inside MULTI instead of being queued */
#define KEEL_RESP_CMD_NOMULTI 0x40u    /* refused inside MULTI (Redis: no-multi) */

/*
 * One row of the command table (Redis's src/commands/<name>.json as C data). The
 * server looks a command's name up once per request and hands its handler the row
 * (keel_resp_client_command); COMMAND answers from the same rows.
 */
typedef struct keel_resp_command {
    const char *name; /* matched without regard to case; at most KEEL_RESP_CMD_NAME_BYTES_MAX */
    int arity; /* Redis rule: N > 0 means exactly N arguments (name included), -N at least N */
    uint32_t flags;
    keel_resp_handler_fn handler;
    /* Key positions, as COMMAND reports them: first, last (-1: the last argument), step;
       0, 0, 0 for a command that takes no key. */
    int first_key, last_key, key_step;
    /* > 0: argv[numkeys_at] counts the keys that follow it, after the keys above (Redis's
       "movablekeys": ZUNION, ZMPOP, ZUNIONSTORE's sources); 0: none */
    int numkeys_at;
    const char *summary; /* one line, for COMMAND DOCS; may be NULL */
    void *data;          /* the owner's, per row (keel server: the row's statistics) */
} keel_resp_command_t;

#define KEEL_RESP_CMD_NAME_BYTES_MAX 64
/* before_command's answer for a command that must wait (see the config) */
#define KEEL_RESP_HOLD 2
/* Cap on querybuf_bytes_max and reply_bytes_max (a uv_buf_t length is 32-bit). */
#define KEEL_RESP_SERVER_BUF_BYTES_MAX (1024u * 1024u * 1024u)
#define KEEL_RESP_COMMANDS_MAX 1024

typedef struct keel_resp_server_config {
    const char *listen;         /* "127.0.0.1:6379"; port 0 picks a free one */
    int backlog;                /* listen(2) backlog */
    size_t clients_max;         /* connected clients, 1..1000000 */
    size_t querybuf_bytes_max;  /* resp.bulk_bytes_max + 1 KiB .. 1 GiB */
    size_t reply_bytes_max;     /* 1 KiB .. 1 GiB */
    size_t pending_replies_max; /* deferred replies outstanding per client, >= 1 */
    keel_ms_t idle_timeout_ms;  /* 0 = none */
    keel_resp_config_t resp;    /* parser limits */
    /* Called when a client goes away (its data can be freed); may be NULL. */
    void (*client_closed)(keel_resp_client_t *c);
    /*
     * Called before each command's handler, after lookup and arity (Redis's
     * processCommand checks, e.g. which commands a connection in a push mode may
     * send); may be NULL. 0 runs the command; 1 means the hook wrote the reply
     * instead; KEEL_RESP_HOLD keeps the command unrun and unconsumed, and stops this
     * client's input until keel_resp_client_resume (CLIENT PAUSE), when the command is
     * parsed and dispatched again, this hook included; a negative error closes the
     * client, as from a handler.
     */
    int (*before_command)(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                          const keel_resp_arg_t *argv);
    /*
     * Called when a write to a client has completed and its output can take more
     * (a producer that pushes at its own pace resumes here); may be NULL.
     */
    void (*client_drained)(keel_resp_client_t *c);
    /* Called when a command is refused before its handler: unknown (cmd NULL) or the
       wrong argument count (after the error reply is written), so the owner can count it
       and, inside MULTI, make EXEC fail as Redis does; may be NULL. */
    void (*command_refused)(keel_resp_client_t *c, const keel_resp_command_t *cmd);
    /* Called after a command's handler returned (not when before_command answered or held
       it), argv still valid: keel server's SLOWLOG times the command here; may be NULL. */
    void (*after_command)(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                          const keel_resp_arg_t *argv);
} keel_resp_server_config_t;

/*
 * clients_max 10000, querybuf 32 MiB + 1 KiB, reply 64 MiB, pending
 * replies 1024, no idle timeout, bulk_bytes_max 16 MiB (well below the RESP
 * cap of 512 MiB: keel values are small and Raft entries are bounded).
 */
keel_resp_server_config_t keel_resp_server_config_default(void);
int keel_resp_server_config_validate(const keel_resp_server_config_t *cfg, keel_errmsg_t *msg);

struct keel_resp_server {
    keel_loop_t *loop;
    keel_resp_server_config_t cfg;
    void *data;                /* the user's, see keel_resp_server_data() */
    keel_resp_command_t *cmds; /* owned, sorted by name */
    size_t cmds_len;
    uv_tcp_t listener;
    uv_prepare_t flusher;
    uv_timer_t idle_timer;
    bool listening, closing;
    int handles_open; /* listener, flusher, timer and clients not yet closed */
    void (*closed)(keel_resp_server_t *s);
    keel_list_t clients; /* all live clients (keel_resp_client_t.link), newest first */
    keel_list_t pending; /* clients with output to write or input to resume (.plink) */
    size_t clients_len;
    uint64_t next_client_id;
    keel_resp_deferred_t *slot_pool; /* finished deferred slots kept for reuse (owned) */
    size_t slot_pool_len;
    keel_buf_t sink; /* replies dropped by CLIENT REPLY OFF / SKIP, emptied after each */
    /* counters, for metrics */
    uint64_t connections_total, rejected_total, commands_total, protocol_errors_total;
    uint64_t output_limit_closes_total, idle_closes_total;
};

/*
 * Copies the config and the command table (PING, ECHO and QUIT are built in;
 * an entry of the same name replaces one). KEEL_EINVAL for a bad config or
 * table (bad arity, empty or duplicate name), KEEL_ENOMEM.
 */
int keel_resp_server_init(keel_resp_server_t *s, keel_loop_t *loop,
                          const keel_resp_server_config_t *cfg, const keel_resp_command_t *cmds,
                          size_t cmds_len, void *data, keel_errmsg_t *msg);
/* The row of a command name (any case), or NULL: the server's own copy of the table. */
const keel_resp_command_t *keel_resp_server_find(const keel_resp_server_t *s, const uint8_t *name,
                                                 size_t len);
/* Binds and listens on cfg.listen. */
int keel_resp_server_listen(keel_resp_server_t *s, keel_errmsg_t *msg);
/* The bound port (after listen), or a negative KEEL_E*. */
int keel_resp_server_port(const keel_resp_server_t *s);
/*
 * Stops listening, closes every client (outstanding deferred slots become
 * orphans, see below) and the server's handles; `closed` (may be NULL) runs
 * when libuv is done with all of them, after which s may be freed. If init
 * succeeded, close must be called, even if listen was not.
 */
void keel_resp_server_close(keel_resp_server_t *s, void (*closed)(keel_resp_server_t *s));
void *keel_resp_server_data(const keel_resp_server_t *s);

/* ---- inside a handler ----------------------------------------------------- */

/*
 * Where this command's reply goes: the client's output buffer, or, while an
 * earlier deferred reply is outstanding, a buffer queued behind it. Call it
 * for each write (it is cheap); NULL only on out-of-memory.
 */
keel_buf_t *keel_resp_client_out(keel_resp_client_t *c);
/* Writes "-ERR Protocol error: ..."-style errors and the like; same rules as out(). */
int keel_resp_client_errorf(keel_resp_client_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Reserves this command's place in the reply order and returns the slot to
 * complete later (NULL on out-of-memory: reply with an error instead).
 * The handler returns 0 without writing a reply.
 */
keel_resp_deferred_t *keel_resp_client_defer(keel_resp_client_t *c);
/*
 * Like defer, but the client's later commands are not parsed until this slot is
 * done: for a command whose effect on the connection's state (not only its reply)
 * arrives later, e.g. WATCH waiting for a linearizable version. At most one at a time.
 */
keel_resp_deferred_t *keel_resp_client_defer_barrier(keel_resp_client_t *c);
/*
 * Inside a handler: hands the command's own bytes (the input buffer its arguments point
 * into) to the caller, who frees *out (keel_buf_free) once done with the arguments; they
 * stay where they are, so the handler's argv stays valid. The client goes on with a new
 * buffer holding what followed the command. For a command whose arguments must outlive its
 * handler without a copy (a large SET sent in pieces). 0 or KEEL_ENOMEM (nothing taken).
 */
int keel_resp_client_take_input(keel_resp_client_t *c, keel_buf_t *out);
/* Undoes keel_resp_client_take_input in the same handler (the command could not go on): the
   client's input is as it was, the command's bytes consumed after the handler as usual. */
void keel_resp_client_untake_input(keel_resp_client_t *c, keel_buf_t *taken);
/* The row of the command being run (inside a handler or before_command), or NULL. */
const keel_resp_command_t *keel_resp_client_command(const keel_resp_client_t *c);
/*
 * Makes keel_resp_client_out() return `out` until called again with NULL: for running a
 * handler whose reply belongs inside another reply (EXEC running queued commands). Such
 * a handler must write its reply, not defer it (a push deferred meanwhile, e.g. a message
 * to a channel the client subscribed to, still queues behind the open reply, in order).
 */
void keel_resp_client_set_out(keel_resp_client_t *c, keel_buf_t *out);
/* The buffer set by keel_resp_client_set_out, or NULL. */
keel_buf_t *keel_resp_client_out_set(const keel_resp_client_t *c);
/* Closes the connection once every reply so far is written (QUIT). */
void keel_resp_client_close_after_reply(keel_resp_client_t *c);
uint64_t keel_resp_client_id(const keel_resp_client_t *c);
/* Output held for the client: unsent, being written, and queued behind deferred replies. */
size_t keel_resp_client_output_bytes(const keel_resp_client_t *c);
keel_resp_server_t *keel_resp_client_server(const keel_resp_client_t *c);

/* What CLIENT LIST shows of a connection. */
#define KEEL_RESP_ADDR_BYTES_MAX 80u
typedef struct keel_resp_client_info {
    char addr[KEEL_RESP_ADDR_BYTES_MAX];  /* the peer, "ip:port" */
    char laddr[KEEL_RESP_ADDR_BYTES_MAX]; /* this end */
    int fd;
    keel_ms_t age_ms, idle_ms; /* since it connected; since its last input */
    size_t qbuf;               /* input not parsed yet */
    size_t out_bytes;          /* output held (keel_resp_client_output_bytes) */
    size_t pending;            /* deferred replies not done */
    const char *last_cmd;      /* the last command's name, or NULL */
} keel_resp_client_info_t;
void keel_resp_client_info(const keel_resp_client_t *c, keel_resp_client_info_t *out);
/* The client's address as info's addr has it, found once and kept: SLOWLOG takes it for
   every slow command, and under overload that is every command ("" if out of memory). */
const char *keel_resp_client_addr(keel_resp_client_t *c);
/* The live clients, newest first: NULL starts, NULL ends. Rejected ones are skipped. */
keel_resp_client_t *keel_resp_server_next_client(const keel_resp_server_t *s,
                                                 const keel_resp_client_t *after);
/* A client whose command before_command held (KEEL_RESP_HOLD): its input is parsed again
 * on the next loop turn, starting with that command. A no-op for a client not held. */
void keel_resp_client_resume(keel_resp_client_t *c);
bool keel_resp_client_held(const keel_resp_client_t *c);
/*
 * CLIENT REPLY (Redis's): ON sends replies again, this command's included; OFF drops the
 * replies of this command and the next ones until ON; SKIP drops this command's reply and
 * the next command's (no effect while OFF). Decided per command when it is dispatched: a
 * deferred reply made while dropped is dropped when done.
 */
typedef enum keel_resp_reply_mode {
    KEEL_RESP_REPLY_ON,
    KEEL_RESP_REPLY_OFF,
    KEEL_RESP_REPLY_SKIP,
    /* this command's reply is sent whatever the mode, which it leaves as it is: pub/sub's
       confirmations (Redis's CLIENT_PUSHING) */
    KEEL_RESP_REPLY_PUSHING,
} keel_resp_reply_mode_t;
void keel_resp_client_reply(keel_resp_client_t *c, keel_resp_reply_mode_t mode);
/* Closes the connection after the replies it has so far (CLIENT KILL). */
void keel_resp_client_kill(keel_resp_client_t *c);
/* CONFIG SET timeout: idle_timeout_ms from now on (0: never). */
void keel_resp_server_set_idle_timeout(keel_resp_server_t *s, keel_ms_t ms);
/* CONFIG RESETSTAT: the counters INFO shows start again from zero. */
void keel_resp_server_reset_stats(keel_resp_server_t *s);
void *keel_resp_client_data(const keel_resp_client_t *c);
void keel_resp_client_set_data(keel_resp_client_t *c, void *data);

/* ---- deferred replies --------------------------------------------------------- */

/*
 * A deferred slot belongs to whoever completes it, who must call
 * keel_resp_deferred_done() exactly once, on the loop thread; done frees it.
 * If the client disconnected meanwhile the slot is an orphan: writes into it
 * still work and are dropped. rc is 0, or the error of a failed write into
 * the slot (then the client is closed: its reply stream is broken).
 */
keel_buf_t *keel_resp_deferred_out(keel_resp_deferred_t *d);
bool keel_resp_deferred_orphaned(const keel_resp_deferred_t *d);
void keel_resp_deferred_done(keel_resp_deferred_t *d, int rc);

#endif
