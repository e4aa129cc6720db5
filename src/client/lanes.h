/* lanes.h - several keel clients to one cluster, one connection each, so that the commands of
 * independent operations do not queue behind each other's commits. */
#ifndef KEEL_CLIENT_LANES_H
#define KEEL_CLIENT_LANES_H

#include "client/client.h"

/*
 * keel server answers a connection's commands in order, and a read behind a write waits
 * until that write commits (a client pipeline sees its own writes). On one connection shared
 * by concurrent operations that each read and then write (a watched read, then KEEL.TXN),
 * the reads and writes alternate and every alternation costs a commit: 50 pipelined
 * MGET + SET pairs on one connection took 20 ms on loopback and 1.1 s with 10 ms between
 * regions, against 1 ms and 22 ms for 50 pipelined SETs (docs/client.md). Lanes spread the
 * operations over n connections: an operation takes a lane (keel_client_lanes_next) and
 * sends all its commands there, so its own order holds; different operations make no
 * assumption about each other's order. The clients are ordinary keel_client_t (leader
 * following, reconnects, deadlines), each from the same config; on_event and on_push must
 * be NULL (a feed wants one connection).
 *
 *   keel_client_lanes_t lanes;
 *   keel_client_lanes_init(&lanes, &loop, &cfg, 8, &msg);
 *   keel_client_t *cl = keel_client_lanes_next(&lanes);   ... commands of one operation ...
 *   keel_client_lanes_close(&lanes, closed);
 */
#define KEEL_CLIENT_LANES_MAX 64u

typedef struct keel_client_lanes keel_client_lanes_t;

struct keel_client_lanes {
    keel_client_t *c; /* n clients */
    uint32_t n, next, open;
    void (*closed)(keel_client_lanes_t *l);
};

/* 0, or an error in msg; then the lanes already made are closing, and l must stay valid
 * until the loop has closed them (it frees what it allocated itself). */
int keel_client_lanes_init(keel_client_lanes_t *l, keel_loop_t *loop,
                           const keel_client_config_t *cfg, uint32_t n, keel_errmsg_t *msg);
/* The lane of a key (a saga id, an aggregate): always the same one for the same key. */
uint32_t keel_client_lanes_index(const keel_client_lanes_t *l, const void *key, size_t len);
/* The next lane, round robin. */
keel_client_t *keel_client_lanes_next(keel_client_lanes_t *l);
/* Closes every lane (their requests fail with KEEL_ECANCELED); closed (may be NULL) runs once
 * all are closed, when l may be freed. */
void keel_client_lanes_close(keel_client_lanes_t *l, void (*closed)(keel_client_lanes_t *l));

#endif
