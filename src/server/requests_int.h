/* requests_int.h - what requests.c and requests_fwd.c share: the batch records and the
   request bookkeeping both use. Not for other files. */
#ifndef KEEL_SERVER_REQUESTS_INT_H
#define KEEL_SERVER_REQUESTS_INT_H

#include "server/requests.h"

/* A ReadIndex round: reads that arrived in one pass share one. */
struct read_batch {
    uint64_t ctx;
    keel_req_queue_t reqs;
    read_batch_t *next;
};

/*
 * Follower: the linearizable reads of one pass ask the leader for one read index
 * together (one FWD_READ frame, one FWD_READ_OK), not one frame each. Every read in
 * the batch arrived before the frame left, so the index the leader confirms after
 * receiving it covers every write acknowledged before any of them started.
 */
struct fwd_reads {
    uint64_t req_id, origin; /* our id for the batch; the leader it was sent to */
    keel_req_queue_t reqs;   /* requests answered meanwhile (timeouts) stay as tombstones */
    fwd_reads_t *next;
};

/* requests.c: bookkeeping */
keel_req_t *keel__rq_req_new(keel_reqs_t *q, keel_req_kind_t kind, keel_reqs_done_fn done,
                             void *ctx);
void keel__rq_req_answer(keel_reqs_t *q, keel_req_t *r, int status, const uint8_t *reply,
                         size_t len);
void keel__rq_req_free(keel_reqs_t *q, keel_req_t *r);
/* Room for the request's command of len bytes: inside the request when it fits. */
uint8_t *keel__rq_req_cmd_alloc(keel_req_t *r, size_t len);
/* Every write-kind request takes a number when it is accepted. */
void keel__rq_accepted(keel_reqs_t *q, keel_req_t *r);
/* The done of a request a follower forwarded: never called; its address marks it remote. */
void keel__rq_remote_done(void *ctx, int status, const uint8_t *reply, size_t len);
void keel__rq_park(keel_reqs_t *q, keel_req_t *r);
void keel__rq_dispatch(keel_reqs_t *q, keel_req_t *r);

/* requests_fwd.c: requests between nodes */
void keel__rq_handle_fwd_propose(keel_reqs_t *q, uint64_t from, const keel_peer_fwd_t *f,
                                 int is_conf);
void keel__rq_handle_fwd_read(keel_reqs_t *q, uint64_t from, const keel_peer_fwd_t *f);
void keel__rq_handle_fwd_reply(keel_reqs_t *q, const keel_peer_fwd_t *f);
void keel__rq_handle_fwd_read_ok(keel_reqs_t *q, const keel_peer_fwd_t *f);
keel_req_t *keel__rq_fwd_take(keel_reqs_t *q, uint64_t req_id);
void keel__rq_give_up_forwarded(keel_reqs_t *q, uint64_t keep, uint64_t only);
void keel__rq_forward_reads(keel_reqs_t *q);
void keel__rq_prune_fwd_reads(keel_reqs_t *q);

#endif
