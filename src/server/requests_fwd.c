/* requests_fwd.c - requests between nodes: proposals and reads a follower forwards, their
   answers, the read batches a follower asks of its leader (split from requests.c). */
#include "server/requests.h"
#include "server/requests_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- forwarding handlers ------------------------------------------------------------ */

void keel__rq_handle_fwd_propose(keel_reqs_t *q, uint64_t from, const keel_peer_fwd_t *f,
                                 int is_conf)
{
    keel_req_t *r = keel__rq_req_new(q, KEEL_REQ_REMOTE_WRITE, keel__rq_remote_done, NULL);
    if (r == NULL || keel__rq_req_cmd_alloc(r, f->bytes_len) == NULL) {
        if (r)
            keel__rq_req_free(q, r);
        return;
    }
    memcpy(r->cmd, f->bytes, f->bytes_len);
    r->is_conf = is_conf;
    r->origin = from;
    r->req_id = f->req_id;
    keel__rq_accepted(q, r);
    keel__rq_dispatch(q, r);
}

void keel__rq_handle_fwd_read(keel_reqs_t *q, uint64_t from, const keel_peer_fwd_t *f)
{
    keel_req_t *r = keel__rq_req_new(q, KEEL_REQ_REMOTE_READ, keel__rq_remote_done, NULL);
    if (r == NULL)
        return;
    r->origin = from;
    r->req_id = f->req_id;
    keel__rq_dispatch(q, r);
}

keel_req_t *keel__rq_fwd_take(keel_reqs_t *q, uint64_t req_id)
{
    void *v = NULL;
    if (keel_map_del(&q->fwd, &req_id, sizeof(req_id), &v) != 0)
        return NULL;
    return v;
}

/*
 * Forwarded requests whose leader will not answer them: those sent to another node
 * than `keep` (a different leader is now known), or, with `only` set, those sent to
 * `only` (the connection to it broke). Reads change nothing: they are asked again. A
 * write may already be in the log that the new leader inherited, so proposing it again
 * could apply it twice: its outcome is unknown, and the client is told so now rather
 * than after the request timeout.
 */
void keel__rq_give_up_forwarded(keel_reqs_t *q, uint64_t keep, uint64_t only)
{
    keel_req_queue_t moved = {0};
    size_t pos = 0, kl;
    const uint8_t *k;
    void *v;
    while (keel_map_next(&q->fwd, &pos, &k, &kl, &v)) {
        uint64_t origin = ((keel_req_t *)v)->origin;
        if (only ? origin == only : origin != keep)
            keel_req_push(&moved, v);
    }
    fwd_reads_t **pp = &q->fwd_reads, *b;
    while ((b = *pp) != NULL) {
        if (only ? b->origin != only : b->origin == keep) {
            pp = &b->next;
            continue;
        }
        *pp = b->next;
        keel_req_t *r;
        while ((r = keel_req_pop(&b->reqs)) != NULL)
            keel__rq_park(q, r); /* reads change nothing: asked again */
        free(b);
    }
    keel_req_t *r;
    while ((r = keel_req_pop(&moved)) != NULL) { /* only writes: reads travel in batches */
        keel__rq_fwd_take(q, r->req_id);
        keel__rq_req_answer(q, r, KEEL_ECONNRESET, NULL, 0);
        keel__rq_req_free(q, r);
    }
}

void keel__rq_handle_fwd_reply(keel_reqs_t *q, const keel_peer_fwd_t *f)
{
    keel_req_t *r = keel__rq_fwd_take(q, f->req_id);
    if (r == NULL)
        return; /* answered already (timeout) */
    if (f->status == KEEL_PEER_NOT_LEADER) {
        /*
         * Definitely not applied. Sent again once a leader is known, unless a write went
         * after it (forwarded, or proposed here): that one may be in the log already, and
         * this one, proposed now, would come after it, out of its connection's order
         * (found by the simulator's pipelining client). Then it fails, not applied.
         */
        if (r->seq == q->write_seq) {
            keel__rq_park(q, r);
        } else {
            keel__rq_req_answer(q, r, KEEL_ENOTLEADER, NULL, 0);
            keel__rq_req_free(q, r);
        }
        return;
    }
    if (f->status == KEEL_PEER_FAILED) { /* the leader's core refused it */
        keel__rq_req_answer(q, r, KEEL_EREJECTED, NULL, 0);
        keel__rq_req_free(q, r);
        return;
    }
    keel__rq_req_answer(q, r, 0, f->bytes, f->bytes_len);
    keel__rq_req_free(q, r);
}

/* Follower: the leader answered a batch of reads with its read index (or refused). */
void keel__rq_handle_fwd_read_ok(keel_reqs_t *q, const keel_peer_fwd_t *f)
{
    fwd_reads_t **pp = &q->fwd_reads, *b;
    while ((b = *pp) != NULL && b->req_id != f->req_id)
        pp = &b->next;
    if (b == NULL)
        return; /* every read in it timed out, or it was asked again elsewhere */
    *pp = b->next;
    keel_req_t *r;
    while ((r = keel_req_pop(&b->reqs)) != NULL) {
        if (f->status != KEEL_PEER_OK) {
            keel__rq_park(q, r); /* not a leader: ask again once one is known */
        } else {
            r->index = f->index;
            keel_req_push(&q->reads_ready, r); /* tombstones are freed there */
        }
    }
    free(b);
}

/* Follower: this turn's linearizable reads ask the leader for one read index. */
void keel__rq_forward_reads(keel_reqs_t *q)
{
    if (q->reads_fwd_new.head == NULL)
        return;
    uint64_t leader = keel_raft_leader(q->raft);
    fwd_reads_t *b = NULL;
    if (leader != 0 && leader != q->cfg.id && q->env.peer_up(q->env.data, leader))
        b = calloc(1, sizeof(*b));
    keel_req_t *r;
    if (b ==
        NULL) { /* the leader changed during the turn (or no memory): keel__rq_dispatch again */
        while ((r = keel_req_pop(&q->reads_fwd_new)) != NULL)
            keel__rq_park(q, r);
        return;
    }
    b->req_id = ++q->next_req_id;
    b->origin = leader;
    b->reqs = q->reads_fwd_new;
    q->reads_fwd_new = (keel_req_queue_t){0};
    b->next = q->fwd_reads;
    q->fwd_reads = b;
    keel_peer_fwd_t f = {.req_id = b->req_id};
    q->env.send_fwd(q->env.data, leader, KEEL_PEER_FWD_READ, &f);
    if (q->m_forwarded)
        for (r = b->reqs.head; r; r = r->qnext)
            keel_counter_inc(q->m_forwarded);
}

/*
 * Batches whose reads were all answered meanwhile (timeouts) are dropped, so a leader
 * that keeps its connection but never answers costs no memory beyond the request
 * timeout. A late answer to a dropped batch is ignored.
 */
void keel__rq_prune_fwd_reads(keel_reqs_t *q)
{
    fwd_reads_t **pp = &q->fwd_reads, *b;
    while ((b = *pp) != NULL) {
        keel_req_t *r = b->reqs.head;
        while (r && r->done == NULL)
            r = r->qnext;
        if (r != NULL) {
            pp = &b->next;
            continue;
        }
        *pp = b->next;
        while ((r = keel_req_pop(&b->reqs)) != NULL)
            keel__rq_req_free(q, r);
        free(b);
    }
}
