/* rconn.h - one RESP client connection of the CLI's load generators, moving between nodes. */
#ifndef KEEL_CLI_RCONN_H
#define KEEL_CLI_RCONN_H

#include "base/buf.h"
#include "proto/resp.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <stddef.h>
#include <stdint.h>

/*
 * What `keel bench kv` (both workloads) needs of a connection: requests are appended to
 * `out` and sent by keel_rconn_flush (one write in flight, the next batch gathering
 * behind it); replies are parsed and handed to ops->reply in order. On any failure (the
 * connect fails, the peer closes, a reply cannot be parsed or was not asked for) the
 * owner's ops->lost runs once (its requests in flight have unknown outcomes) and the
 * connection moves to the next address after RCONN_SWITCH_PAUSE_MS, as a client
 * library with a seed list does, so that a cluster with every node down is not hammered.
 */
#define KEEL_RCONN_ADDR_BYTES_MAX 64
#define KEEL_RCONN_SWITCH_PAUSE_MS 100

typedef struct keel_rconn keel_rconn_t;

typedef struct keel_rconn_ops {
    void (*up)(keel_rconn_t *rc); /* connected (again): send what is due */
    /* One reply, in order, or NULL for input that is not RESP; return nonzero if it was not
     * expected (the connection is then lost). */
    int (*reply)(keel_rconn_t *rc, const keel_resp_value_t *v);
    void (*drained)(keel_rconn_t *rc); /* after the replies of one read; may be NULL */
    void (*lost)(keel_rconn_t *rc);    /* broken: forget what is in flight */
} keel_rconn_ops_t;

struct keel_rconn {
    keel_loop_t *loop;
    const char (*addrs)[KEEL_RCONN_ADDR_BYTES_MAX];
    size_t n_addrs;
    int node; /* index of the address in use */
    uint64_t seed;
    size_t read_bytes; /* free room asked of `in` per read */
    const keel_rconn_ops_t *ops;
    void *data;
    keel_buf_t out; /* requests not yet handed to the socket */
    /* private */
    keel_connector_t cc;
    keel_timer_t pause;
    keel_buf_t in, wbuf;
    uv_write_t wreq;
    int connected, writing, switching, closed;
};

/* Starts connecting to addrs[node]. 0, or -1 with a message on stderr. */
int keel_rconn_open(keel_rconn_t *rc, keel_loop_t *loop,
                    const char (*addrs)[KEEL_RCONN_ADDR_BYTES_MAX], size_t n_addrs, int node,
                    uint64_t seed, size_t read_bytes, const keel_rconn_ops_t *ops, void *data);
int keel_rconn_connected(const keel_rconn_t *rc);
void keel_rconn_flush(keel_rconn_t *rc);
/* The owner gives up on the connection (e.g. a reply it cannot use): lost, then switch. */
void keel_rconn_fail(keel_rconn_t *rc);
/* Stops for good: no reconnect; handles close with the loop. Buffers freed by keel_rconn_free. */
void keel_rconn_close(keel_rconn_t *rc);
void keel_rconn_free(keel_rconn_t *rc);

#endif
