/* requests.c - a node's client requests: propose, park, ReadIndex batches, answer (between nodes:
 * requests_fwd.c). */
#include "server/requests.h"
#include "server/requests_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_req_push(keel_req_queue_t *q, keel_req_t *r)
{
    r->qnext = NULL;
    if (q->tail)
        q->tail->qnext = r;
    else
        q->head = r;
    q->tail = r;
}

keel_req_t *keel_req_pop(keel_req_queue_t *q)
{
    keel_req_t *r = q->head;
    if (r) {
        q->head = r->qnext;
        if (q->head == NULL)
            q->tail = NULL;
        r->qnext = NULL;
    }
    return r;
}

/* A write or an ordered read of a client (not a membership change): what keeps its place
 * among its connection's others. */
static int write_kind(const keel_req_t *r)
{
    return (r->kind == KEEL_REQ_WRITE || r->kind == KEEL_REQ_REMOTE_WRITE) && !r->is_conf;
}

/* Waits for a known leader (keel_reqs_leader_known dispatches the queue again). */
void keel__rq_park(keel_reqs_t *q, keel_req_t *r)
{
    q->parked_writes += write_kind(r);
    keel_req_push(&q->parked, r);
}

/* ---- request bookkeeping ---------------------------------------------------------- */

keel_req_t *keel__rq_req_new(keel_reqs_t *q, keel_req_kind_t kind, keel_reqs_done_fn done,
                             void *ctx)
{
    keel_req_t *r = q->pool;
    if (r != NULL) {
        q->pool = r->qnext;
        q->pool_len--;
    } else if ((r = malloc((sizeof(keel_req_t) + KEEL_REQ_CMD_INLINE_BYTES))) == NULL) {
        return NULL;
    }
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->done = done;
    r->ctx = ctx;
    r->start_ms = q->env.now_ms(q->env.data);
    r->deadline_ms = r->start_ms + q->cfg.timeout_ms;
    q->pending++;
    keel_list_init(&r->all);
    if (kind == KEEL_REQ_WRITE || kind == KEEL_REQ_READ) /* remote ones: timed by their origin */
        keel_list_insert_tail(&q->all, &r->all);
    return r;
}

static void all_unlink(keel_reqs_t *q, keel_req_t *r)
{
    if (r->kind != KEEL_REQ_WRITE && r->kind != KEEL_REQ_READ)
        return;
    keel_list_remove(&r->all); /* a no-op once unlinked */
}

/* Answers a request once; the memory stays while a queue still holds it. */
void keel__rq_req_answer(keel_reqs_t *q, keel_req_t *r, int status, const uint8_t *reply,
                         size_t len)
{
    if (r->kind == KEEL_REQ_REMOTE_WRITE || r->kind == KEEL_REQ_REMOTE_READ)
        r->done = NULL; /* the follower that asked times its own request out */
    if (r->done == NULL)
        return;
    keel_reqs_done_fn done = r->done;
    r->done = NULL;
    all_unlink(q, r);
    if (status == 0 && r->kind == KEEL_REQ_WRITE && q->m_commit)
        keel_histogram_observe(q->m_commit,
                               (double)(q->env.now_ms(q->env.data) - r->start_ms) / 1000.0);
    done(r->ctx, status, reply, len);
}

void keel__rq_req_free(keel_reqs_t *q, keel_req_t *r)
{
    assert(r->done == NULL || r->kind == KEEL_REQ_REMOTE_WRITE || r->kind == KEEL_REQ_REMOTE_READ);
    all_unlink(q, r);
    if (r->cmd_cap > q->scratch.cap && keel_buf_unread(&q->scratch) == 0) {
        /* The encode buffer it took goes back to be scratch (the smaller one is freed): the
           next large command is encoded into memory already faulted in, not fresh pages. */
        free(q->scratch.data);
        q->scratch.data = r->cmd;
        q->scratch.cap = r->cmd_cap;
        keel_buf_reset(&q->scratch);
    } else if (r->cmd != r->cmd_inline) {
        free(r->cmd);
    }
    free(r->conf_reply);
    q->pending--;
    if (q->pool_len >= KEEL_REQ_POOL_MAX) {
        free(r);
        return;
    }
    r->qnext = q->pool;
    q->pool = r;
    q->pool_len++;
}

/* Room for the request's command of len bytes: inside the request when it fits. */
uint8_t *keel__rq_req_cmd_alloc(keel_req_t *r, size_t len)
{
    assert(r->cmd == NULL);
    r->cmd = len <= KEEL_REQ_CMD_INLINE_BYTES ? r->cmd_inline : malloc(len ? len : 1);
    r->cmd_len = r->cmd ? len : 0;
    return r->cmd;
}

static void req_pool_free(keel_reqs_t *q)
{
    while (q->pool != NULL) {
        keel_req_t *r = q->pool;
        q->pool = r->qnext;
        free(r);
    }
    q->pool_len = 0;
}

/* Every write-kind request takes a number when it is keel__rq_accepted: a request refused or
 * overwritten is sent again only if it still has the newest (redo_write). */
void keel__rq_accepted(keel_reqs_t *q, keel_req_t *r)
{
    if (write_kind(r))
        r->seq = ++q->write_seq;
}

/* The done of a request a follower forwarded: never called (the follower times its own
   request out); its address marks the request as remote. */
void keel__rq_remote_done(void *ctx, int status, const uint8_t *reply, size_t len) {}

/* The entry is cmd (copied), or `owned` (malloc'd, owned_cap bytes holding len): the request
   takes it over and frees it, or returns it to scratch, with itself (keel__rq_req_free); it is
   freed here on every error. */
static int submit(keel_reqs_t *q, keel_req_kind_t kind, const uint8_t *cmd, uint8_t *owned,
                  size_t owned_cap, size_t len, int is_conf, keel_reqs_done_fn done, void *ctx)
{
    int rc = len > q->cfg.entry_bytes_max       ? KEEL_ETOOBIG
             : q->stopped                       ? KEEL_ECANCELED
             : q->pending >= q->cfg.pending_max ? KEEL_EFULL
                                                : 0;
    keel_req_t *r = rc == 0 ? keel__rq_req_new(q, kind, done, ctx) : NULL;
    if (r != NULL && owned != NULL) {
        assert(r->cmd == NULL);
        r->cmd = owned; /* the request's now: keel__rq_req_free frees it (it is not cmd_inline) */
        r->cmd_len = len;
        r->cmd_cap = owned_cap;
        owned = NULL;
    } else if (r != NULL && keel__rq_req_cmd_alloc(r, len) != NULL) {
        memcpy(r->cmd, cmd, len);
    } else if (r != NULL) {
        r->done = NULL;
        keel__rq_req_free(q, r);
        r = NULL;
    }
    free(owned);
    if (r == NULL)
        return rc != 0 ? rc : KEEL_ENOMEM;
    r->is_conf = is_conf;
    keel__rq_accepted(q, r);
    keel__rq_dispatch(q, r);
    return 0;
}

int keel_reqs_submit_entry(keel_reqs_t *q, keel_req_kind_t kind, const uint8_t *cmd, size_t len,
                           int is_conf, keel_reqs_done_fn done, void *ctx)
{
    return submit(q, kind, cmd, NULL, 0, len, is_conf, done, ctx);
}

/* A client's command: the state machine makes it an entry stamped with this node's clock
 * (the leader stamps it again with its own before proposing). An entry of at least
 * KEEL_REQ_ADOPT_BYTES_MIN is not copied: the request takes over the encode buffer itself
 * (for a 63 MiB value, one copy and one fresh 63 MiB allocation fewer on the loop), and
 * scratch starts empty again until the request ends and gives the buffer back (keel__rq_req_free);
 * smaller ones are copied and scratch's memory is reused. */
int keel_reqs_submit(keel_reqs_t *q, keel_req_kind_t kind, int argc, const uint8_t *const *argv,
                     const size_t *lens, keel_reqs_done_fn done, void *ctx)
{
    keel_buf_reset(&q->scratch);
    int rc =
        q->sm.ops->encode(q->sm.data, q->env.unix_ms(q->env.data), argc, argv, lens, &q->scratch);
    if (rc != 0)
        return rc;
    size_t len = keel_buf_unread(&q->scratch);
    if (len < KEEL_REQ_ADOPT_BYTES_MIN || q->scratch.rpos != 0)
        return submit(q, kind, keel_buf_rptr(&q->scratch), NULL, 0, len, 0, done, ctx);
    /* handed to submit, which owns it from here; it comes back at keel__rq_req_free */
    uint8_t *owned = q->scratch.data;
    size_t cap = q->scratch.cap;
    keel_buf_init(&q->scratch, 0);
    return submit(q, kind, NULL, owned, cap, len, 0, done, ctx);
}

/*
 * Expiry is judged against this node's clock, never earlier than the leader's time
 * stamped on the newest applied entry: a read never goes back in replicated time. A key
 * the leader has not swept yet is hidden as soon as this node's clock passes its
 * deadline; how early or late that is depends on the clock skew between nodes
 * (docs/kv.md).
 */
uint64_t keel_reqs_read_now_ms(const keel_reqs_t *q)
{
    uint64_t now = q->env.unix_ms(q->env.data), applied = q->sm.ops->time_ms(q->sm.data);
    return now > applied ? now : applied;
}

#define read_now_ms keel_reqs_read_now_ms

static void serve_read(keel_reqs_t *q, keel_req_t *r)
{
    keel_buf_reset(&q->reply);
    int rc = q->sm.ops->read(q->sm.data, read_now_ms(q), r->cmd, r->cmd_len, &q->reply);
    keel__rq_req_answer(q, r, rc, keel_buf_rptr(&q->reply), keel_buf_unread(&q->reply));
}

void keel_reqs_answer_write(keel_reqs_t *q, keel_req_t *r, const uint8_t *reply, size_t len)
{
    if (r->kind == KEEL_REQ_REMOTE_WRITE) {
        keel_peer_fwd_t f = {
            .req_id = r->req_id, .status = KEEL_PEER_OK, .bytes = reply, .bytes_len = len};
        q->env.send_fwd(q->env.data, r->origin, KEEL_PEER_FWD_REPLY, &f);
        r->done = NULL;
    } else {
        keel__rq_req_answer(q, r, 0, reply, len);
    }
    keel__rq_req_free(q, r);
}

/* ---- ordered reads ------------------------------------------------------------------ */

/*
 * A connection that pipelines SET k v / GET k pairs needs each GET to see its SET and
 * not the SET after it. The server sends such a read as a write whose entry only reads
 * (server/conn.c), so that it keeps its place among the connection's writes; sending it
 * through the log costs one entry per read, twice the entries of the writes alone.
 *
 * The leader appends no entry for it. The read R waits, in its origin's chain (this
 * node's clients, or the follower that forwarded it), for that origin's next write W2,
 * and is answered from the state just before W2's entry applies, if that entry is still
 * W2 (the same term). That state holds every write acknowledged before R arrived (they
 * are committed at indexes below W2's, which was appended after R arrived) and the
 * origin's writes sent before R, and none sent after it. W2's commit in the term it was
 * proposed in proves that no other leader could have acknowledged a write since before
 * R arrived: a majority keel__rq_accepted W2 from this leader after R arrived, and a newer
 * leader's voters would have refused it. If W2's place went to another leader's entry,
 * R is dispatched again, ahead of W2. A read that no write follows in the same pass (the
 * end of a pipeline) goes through the log as before, carrying the chain's other reads
 * with it; one entry per pass instead of one per read.
 */
static uint64_t chain_origin(const keel_req_t *r)
{
    return r->kind == KEEL_REQ_REMOTE_WRITE ? r->origin : 0;
}

static keel_req_queue_t *chain_tail(keel_reqs_t *q, uint64_t origin, int create)
{
    for (size_t i = 0; i < q->chains_n; i++)
        if (q->chains[i].origin == origin)
            return &q->chains[i].tail;
    if (!create)
        return NULL;
    if (q->chains_n == q->chains_cap) {
        size_t cap = q->chains_cap ? q->chains_cap * 2 : 4;
        keel_req_chain_t *c = realloc(q->chains, cap * sizeof(*c));
        if (c == NULL)
            return NULL;
        q->chains = c;
        q->chains_cap = cap;
    }
    q->chains[q->chains_n] = (keel_req_chain_t){.origin = origin};
    return &q->chains[q->chains_n++].tail;
}

/* The request's entry is a read sent to keep its place among writes. */
static int ordered_read(const keel_reqs_t *q, const keel_req_t *r)
{
    return (r->kind == KEEL_REQ_WRITE || r->kind == KEEL_REQ_REMOTE_WRITE) && !r->is_conf &&
           q->sm.ops->is_read != NULL && q->sm.ops->is_read(q->sm.data, r->cmd, r->cmd_len);
}

/* A remote write the core refused: the follower answers its client. */
static void refuse_write(keel_reqs_t *q, keel_req_t *r, int rc)
{
    if (r->kind == KEEL_REQ_REMOTE_WRITE) {
        keel_peer_fwd_t f = {.req_id = r->req_id, .status = KEEL_PEER_FAILED};
        q->env.send_fwd(q->env.data, r->origin, KEEL_PEER_FWD_REPLY, &f);
        r->done = NULL;
    } else {
        keel__rq_req_answer(q, r, rc, NULL, 0);
    }
    keel__rq_req_free(q, r);
}

/* Answers an ordered read from the state now (just before the write behind it applies). */
static void serve_ordered(keel_reqs_t *q, keel_req_t *r)
{
    if (r->done == NULL) { /* timed out meanwhile */
        keel__rq_req_free(q, r);
        return;
    }
    keel_buf_reset(&q->reply);
    int rc = q->sm.ops->read(q->sm.data, read_now_ms(q), r->cmd, r->cmd_len, &q->reply);
    if (rc != 0)
        refuse_write(q, r, rc);
    else
        keel_reqs_answer_write(q, r, keel_buf_rptr(&q->reply), keel_buf_unread(&q->reply));
}

/* A write (or ordered read) that was not and will not be applied here: a follower's is
 * told NOT_LEADER (its node decides whether to send it again), a local one `status`. */
static void answer_not_applied(keel_reqs_t *q, keel_req_t *r, int status)
{
    if (r->kind == KEEL_REQ_REMOTE_WRITE && r->done != NULL) {
        keel_peer_fwd_t f = {.req_id = r->req_id, .status = KEEL_PEER_NOT_LEADER};
        q->env.send_fwd(q->env.data, r->origin, KEEL_PEER_FWD_REPLY, &f);
        r->done = NULL;
    }
    keel__rq_req_answer(q, r, status, NULL, 0);
    r->done = NULL;
    keel__rq_req_free(q, r);
}

/* The reads ordered before r will not be served at r's place: each is answered status,
 * or, with status 0, dispatched again (ahead of r, which the caller dispatches next). */
static void release_before(keel_reqs_t *q, keel_req_t *r, int status)
{
    keel_req_t *b;
    while ((b = keel_req_pop(&r->before)) != NULL) {
        if (status == 0)
            keel__rq_dispatch(q, b);
        else
            answer_not_applied(q, b, status);
    }
}

/*
 * A write proposed here whose place in the log another leader's entry took: it was not
 * applied. Proposed again only if no write-kind request was keel__rq_accepted by this node after
 * it (proposed, forwarded, parked or waiting in a chain): else it could land behind a
 * later command of its connection, out of order. Then it fails, definitely not applied
 * (KEEL_ECONFLICT), and so do the reads ordered before it. Found by the simulator's
 * pipelining client; the review found that counting only what was sent was not enough.
 */
static void redo_write(keel_reqs_t *q, keel_req_t *r)
{
    if (r->seq == q->write_seq) {
        release_before(q, r, 0);
        keel__rq_dispatch(q, r);
        return;
    }
    release_before(q, r, KEEL_ECONNRESET);
    answer_not_applied(q, r, KEEL_ECONFLICT);
}

/*
 * A new leader term proposed at `index` while older waiters sit at or past it: their
 * entries are gone from this log, but not necessarily from every log (another node that
 * holds them could still win an election and commit them), and a write went after them
 * (the one just proposed): their outcome is unknown. Keeps the queue index-ordered.
 */
static void requeue_from(keel_reqs_t *q, uint64_t index)
{
    keel_req_t **pp = &q->writes.head, *last = NULL;
    while (*pp && (*pp)->index < index) {
        last = *pp;
        pp = &(*pp)->qnext;
    }
    keel_req_t *stale = *pp;
    *pp = NULL;
    q->writes.tail = last;
    while (stale) {
        keel_req_t *next = stale->qnext;
        release_before(q, stale, KEEL_ECONNRESET);
        answer_not_applied(q, stale, KEEL_ECONNRESET);
        stale = next;
    }
}

/* A write waits for a leader: the reads its origin sent before it wait ahead of it. */
static void park_write(keel_reqs_t *q, keel_req_t *r)
{
    keel_req_queue_t *t = chain_tail(q, chain_origin(r), 0);
    keel_req_t *b;
    while (t != NULL && (b = keel_req_pop(t)) != NULL)
        keel__rq_park(q, b);
    while ((b = keel_req_pop(&r->before)) != NULL) /* flush_chains' reads ahead of r */
        keel__rq_park(q, b);
    keel__rq_park(q, r);
}

/* A write is in the log at index (this term): it waits there for its entry to apply,
 * with the reads its origin sent since its previous write. */
static void proposed(keel_reqs_t *q, keel_req_t *r, uint64_t index)
{
    assert(r->kind == KEEL_REQ_WRITE || r->kind == KEEL_REQ_REMOTE_WRITE);
    assert(keel_raft_leader(q->raft) == q->cfg.id && index > 0);
    r->index = index;
    r->term = keel_raft_term(q->raft);
    keel_req_queue_t *t = chain_tail(q, chain_origin(r), 0);
    if (t != NULL && t->head != NULL) {
        if (r->before.tail != NULL)
            r->before.tail->qnext = t->head;
        else
            r->before.head = t->head;
        r->before.tail = t->tail;
        *t = (keel_req_queue_t){0};
    }
    if (q->writes.tail == NULL || q->writes.tail->index < index) {
        keel_req_push(&q->writes, r); /* the common case: the queue stays index-ordered */
        return;
    }
    requeue_from(q, index);
    keel_req_push(&q->writes, r);
    assert(q->writes.head == r || q->writes.head->index < index); /* index-ordered */
}

/* Leader: a write is stamped with the leader's clock and proposed. */
static void propose_write(keel_reqs_t *q, keel_req_t *r)
{
    /* The leader's clock stamps every entry (expiry deadlines derive from it),
     * whichever node the client talked to. */
    q->sm.ops->stamp(q->sm.data, r->cmd, r->cmd_len, q->env.unix_ms(q->env.data));
    uint64_t index;
    int rc = keel_raft_propose(q->raft, r->cmd, r->cmd_len, &index);
    if (rc == KEEL_ENOTLEADER || rc == KEEL_EBUSY) {
        park_write(q, r);
        return;
    }
    if (rc != 0) { /* the core refused it: nothing was proposed */
        for (keel_req_t *b; (b = keel_req_pop(&r->before)) != NULL;)
            refuse_write(q, b, rc); /* flush_chains' reads that rode on it */
        refuse_write(q, r, rc);
        return;
    }
    if (q->m_proposals)
        keel_counter_inc(q->m_proposals);
    proposed(q, r, index);
}

/* Leader: an ordered read waits for its origin's next write. */
static void chain_read(keel_reqs_t *q, keel_req_t *r)
{
    keel_req_queue_t *t = chain_tail(q, chain_origin(r), 1);
    if (t == NULL)
        propose_write(q, r); /* no memory for a chain: through the log */
    else
        keel_req_push(t, r);
}

/*
 * End of a pass: the last live read of each chain goes through the log, carrying the
 * others (answered just before it applies). Each chain leaves the table before anything
 * runs: answering a read can make its client submit another, which starts a new chain.
 */
static int flush_chains(keel_reqs_t *q)
{
    int moved = 0;
    while (q->chains_n > 0) {
        keel_req_queue_t tail = q->chains[--q->chains_n].tail, rest = {0};
        keel_req_t *last = NULL, *b;
        while ((b = keel_req_pop(&tail)) != NULL) {
            if (b->done == NULL) { /* timed out meanwhile: freed where it waits */
                keel_req_push(&rest, b);
                continue;
            }
            if (last != NULL)
                keel_req_push(&rest, last);
            last = b;
        }
        if (last == NULL) {
            while ((b = keel_req_pop(&rest)) != NULL)
                keel__rq_req_free(q, b);
            continue;
        }
        assert(last->before.head == NULL);
        last->before = rest;
        propose_write(q, last);
        moved = 1;
    }
    return moved;
}

/* Leader: a read joins the next ReadIndex round, a membership change becomes a
 * configuration entry, an ordered read waits for its origin's next write, a write is
 * proposed. */
static void on_leader(keel_reqs_t *q, keel_req_t *r)
{
    if (r->kind == KEEL_REQ_READ || r->kind == KEEL_REQ_REMOTE_READ) {
        keel_req_push(&q->reads_new, r);
        return;
    }
    if (r->is_conf) {
        q->env.conf_change(q->env.data, r);
        return;
    }
    if (ordered_read(q, r)) {
        chain_read(q, r);
        return;
    }
    propose_write(q, r);
}

/*
 * Sends a request where it can make progress: proposes or starts a read on
 * the leader, forwards from a follower, parks while no leader is known.
 */
void keel__rq_dispatch(keel_reqs_t *q, keel_req_t *r)
{
    assert(r->qnext == NULL); /* in no queue while being dispatched */
    if (r->done == NULL) {
        keel__rq_req_free(q, r);
        return;
    }
    if (q->handling_ready) {
        keel_req_push(&q->in_ready, r);
        return;
    }
    if (q->removed && (r->kind == KEEL_REQ_WRITE || r->kind == KEEL_REQ_READ)) {
        keel__rq_req_answer(q, r, KEEL_ENOTMEMBER, NULL, 0);
        r->done = NULL;
        keel__rq_req_free(q, r);
        return;
    }
    if (q->parked_writes > 0 && write_kind(r)) {
        keel__rq_park(q, r); /* behind what its connection sent before it */
        return;
    }
    uint64_t leader = keel_raft_leader(q->raft);
    if (leader == q->cfg.id) {
        on_leader(q, r);
        return;
    }
    if (r->kind == KEEL_REQ_REMOTE_WRITE || r->kind == KEEL_REQ_REMOTE_READ) {
        /* We were asked as leader but are not: the follower retries elsewhere. */
        keel_peer_fwd_t f = {.req_id = r->req_id, .status = KEEL_PEER_NOT_LEADER};
        q->env.send_fwd(
            q->env.data, r->origin,
            r->kind == KEEL_REQ_REMOTE_WRITE ? KEEL_PEER_FWD_REPLY : KEEL_PEER_FWD_READ_OK, &f);
        r->done = NULL;
        keel__rq_req_free(q, r);
        return;
    }
    if (leader == 0 || !q->env.peer_up(q->env.data, leader)) {
        keel__rq_park(q, r);
        return;
    }
    if (r->kind == KEEL_REQ_READ) {
        keel_req_push(&q->reads_fwd_new, r); /* asked of the leader at the end of the turn */
        return;
    }
    r->req_id = ++q->next_req_id;
    r->origin = leader;
    if (keel_map_put(&q->fwd, &r->req_id, sizeof(r->req_id), r, NULL) < 0) {
        keel__rq_park(q, r);
        return;
    }
    keel_peer_fwd_t f = {.req_id = r->req_id, .bytes = r->cmd, .bytes_len = r->cmd_len};
    q->env.send_fwd(q->env.data, leader, r->is_conf ? KEEL_PEER_FWD_CONF : KEEL_PEER_FWD_PROPOSE,
                    &f);
    if (q->m_forwarded)
        keel_counter_inc(q->m_forwarded);
}

/*
 * Leader: the reads that arrived since the last round share one ReadIndex round. One
 * round is in flight at a time (reads arriving meanwhile wait for the next, which starts
 * as soon as this one is confirmed). 1 if a round started.
 */
static int start_read_batch(keel_reqs_t *q)
{
    if (q->reads_new.head == NULL || keel_raft_leader(q->raft) != q->cfg.id)
        return 0;
    if (q->batches_head != NULL)
        return 0;
    read_batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return 0;
    b->ctx = ++q->next_read_ctx;
    if (q->env.before_read_index)
        q->env.before_read_index(q->env.data);
    if (keel_raft_read_index(q->raft, b->ctx) != 0) {
        free(b); /* e.g. no entry of this term committed yet: retry next pass */
        return 0;
    }
    b->reqs = q->reads_new;
    q->reads_new = (keel_req_queue_t){0};
    if (q->batches_tail)
        q->batches_tail->next = b;
    else
        q->batches_head = b;
    q->batches_tail = b;
    return 1;
}

static void finish_read_batch(keel_reqs_t *q, const keel_raft_read_state_t *rs)
{
    read_batch_t **pp = &q->batches_head, *b;
    while ((b = *pp) != NULL && b->ctx != rs->ctx)
        pp = &b->next;
    if (b == NULL)
        return;
    *pp = b->next;
    if (q->batches_tail == b) {
        q->batches_tail = NULL;
        for (read_batch_t *x = q->batches_head; x; x = x->next)
            q->batches_tail = x;
    }
    keel_req_t *r;
    while ((r = keel_req_pop(&b->reqs)) != NULL) {
        if (!rs->ok) {
            keel__rq_dispatch(q, r); /* leadership lost: ask again wherever the leader is now */
        } else if (r->kind == KEEL_REQ_REMOTE_READ) {
            keel_peer_fwd_t f = {.req_id = r->req_id, .status = KEEL_PEER_OK, .index = rs->index};
            q->env.send_fwd(q->env.data, r->origin, KEEL_PEER_FWD_READ_OK, &f);
            r->done = NULL;
            keel__rq_req_free(q, r);
        } else {
            r->index = rs->index;
            keel_req_push(&q->reads_ready, r);
        }
    }
    free(b);
}

/* Serves the reads whose index is applied; returns how many were answered. */
static size_t serve_ready_reads(keel_reqs_t *q)
{
    size_t served = 0;
    uint64_t applied = q->sm.ops->applied_index(q->sm.data);
    /* Read indexes are not strictly ordered across followers' batches: scan all. */
    keel_req_queue_t keep = {0};
    keel_req_t *r;
    while ((r = keel_req_pop(&q->reads_ready)) != NULL) {
        if (r->done == NULL) {
            keel__rq_req_free(q, r);
        } else if (r->index <= applied || q->cfg.test_serve_reads_early) {
            assert(r->kind == KEEL_REQ_READ &&
                   (r->index <= applied || q->cfg.test_serve_reads_early));
            serve_read(q, r);
            keel__rq_req_free(q, r);
            served++;
        } else {
            keel_req_push(&keep, r);
        }
    }
    q->reads_ready = keep;
    return served;
}

static void expire_requests(keel_reqs_t *q)
{
    keel_ms_t now = q->env.now_ms(q->env.data);
    keel_list_t *l;
    while ((l = keel_list_first(&q->all)) != NULL &&
           KEEL_LIST_ENTRY(l, keel_req_t, all)->deadline_ms <= now) {
        keel_req_t *r = KEEL_LIST_ENTRY(l, keel_req_t, all);
        if (q->m_timeouts)
            keel_counter_inc(q->m_timeouts);
        if (r->req_id != 0 && keel__rq_fwd_take(q, r->req_id) == r) {
            keel__rq_req_answer(q, r, KEEL_ETIMEDOUT, NULL, 0);
            keel__rq_req_free(q, r);
            continue;
        }
        keel__rq_req_answer(q, r, KEEL_ETIMEDOUT, NULL, 0); /* its queue frees the tombstone */
    }
}

/* ---- the node's interface --------------------------------------------------------- */

int keel_reqs_init(keel_reqs_t *q, const keel_reqs_config_t *cfg, const keel_reqs_env_t *env,
                   keel_raft_t *raft, keel_sm_t sm)
{
    memset(q, 0, sizeof(*q));
    q->cfg = *cfg;
    q->env = *env;
    q->raft = raft;
    q->sm = sm;
    keel_list_init(&q->all);
    /*
     * Forwarded request ids must not repeat across restarts of this node: the leader
     * answers a request by (member id, req_id), over whatever connection is open to us
     * then, so a reply to a request of our previous life would otherwise answer the new
     * request that reused its id (a SET told +OK that was never proposed, a read given
     * an old read index). Starting from the wall clock in ms shifted by 20 bits keeps the
     * ranges apart unless a life forwards over 2^20 requests per ms it ran (or the clock
     * steps back by more than the downtime). Found by the simulator (tests/sim).
     */
    q->next_req_id = env->unix_ms(env->data) << 20;
    keel_buf_init(&q->scratch, 0);
    keel_buf_init(&q->reply, 0);
    keel_metrics_t *m = cfg->metrics;
    if (m != NULL) {
        q->m_proposals = keel_metrics_counter(m, "keel_raft_proposals_total",
                                              "Entries proposed by this node as leader.", NULL);
        q->m_forwarded = keel_metrics_counter(m, "keel_forwarded_requests_total",
                                              "Requests forwarded to the leader.", NULL);
        q->m_timeouts = keel_metrics_counter(m, "keel_request_timeouts_total",
                                             "Requests answered with a timeout.", NULL);
        q->m_commit =
            keel_metrics_histogram(m, "keel_write_commit_seconds",
                                   "Client write latency, submit to apply.", NULL, NULL, 0);
    }
    return keel_map_init(&q->fwd, 1024, cfg->pending_max, cfg->id);
}

static void fail_queue(keel_reqs_t *q, keel_req_queue_t *w)
{
    keel_req_t *r;
    while ((r = keel_req_pop(w)) != NULL) {
        release_before(q, r, KEEL_ECANCELED);
        keel__rq_req_answer(q, r, KEEL_ECANCELED, NULL, 0);
        r->done = NULL;
        keel__rq_req_free(q, r);
    }
}

void keel_reqs_cancel_all(keel_reqs_t *q)
{
    q->stopped = 1;
    fail_queue(q, &q->parked);
    q->parked_writes = 0;
    fail_queue(q, &q->in_ready);
    fail_queue(q, &q->writes);
    fail_queue(q, &q->reads_new);
    fail_queue(q, &q->reads_ready);
    fail_queue(q, &q->reads_fwd_new);
    for (size_t i = 0; i < q->chains_n; i++)
        fail_queue(q, &q->chains[i].tail);
    q->chains_n = 0;
    while (q->fwd_reads) {
        fwd_reads_t *b = q->fwd_reads;
        q->fwd_reads = b->next;
        fail_queue(q, &b->reqs);
        free(b);
    }
    while (q->batches_head) {
        read_batch_t *b = q->batches_head;
        q->batches_head = b->next;
        fail_queue(q, &b->reqs);
        free(b);
    }
    q->batches_tail = NULL;
    size_t pos = 0, kl;
    const uint8_t *k;
    void *v;
    while (keel_map_next(&q->fwd, &pos, &k, &kl, &v)) {
        keel_req_t *r = v;
        keel__rq_req_answer(q, r, KEEL_ECANCELED, NULL, 0);
        keel__rq_req_free(q, r);
    }
    keel_map_free(&q->fwd, NULL);
    q->fwd.slots = NULL;
}

void keel_reqs_free(keel_reqs_t *q)
{
    assert(q->pending == 0 || !q->stopped);
    if (q->fwd.slots)
        keel_map_free(&q->fwd, NULL);
    req_pool_free(q);
    free(q->chains);
    keel_buf_free(&q->scratch);
    keel_buf_free(&q->reply);
}

void keel_reqs_on_fwd(keel_reqs_t *q, uint64_t from, keel_peer_type_t type,
                      const keel_peer_fwd_t *f)
{
    switch (type) {
    case KEEL_PEER_FWD_PROPOSE:
    case KEEL_PEER_FWD_CONF:
        keel__rq_handle_fwd_propose(q, from, f, type == KEEL_PEER_FWD_CONF);
        break;
    case KEEL_PEER_FWD_REPLY:
        keel__rq_handle_fwd_reply(q, f);
        break;
    case KEEL_PEER_FWD_READ:
        keel__rq_handle_fwd_read(q, from, f);
        break;
    default:
        assert(type == KEEL_PEER_FWD_READ_OK);
        keel__rq_handle_fwd_read_ok(q, f);
    }
}

void keel_reqs_peer_lost(keel_reqs_t *q, uint64_t id)
{
    keel__rq_give_up_forwarded(q, 0, id);
}

void keel_reqs_leader_known(keel_reqs_t *q, uint64_t leader, int changed)
{
    /* "No leader" for a moment (a pre-vote after a pause) changes nothing: the old
     * leader may still answer. A different leader means it will not, in time. */
    if (changed && leader != 0)
        keel__rq_give_up_forwarded(q, leader, 0);
    if (leader == 0 || q->parked.head == NULL)
        return;
    keel_req_queue_t parked = q->parked;
    q->parked = (keel_req_queue_t){0};
    q->parked_writes = 0;
    keel_req_t *r;
    while ((r = keel_req_pop(&parked)) != NULL)
        keel__rq_dispatch(q, r); /* parked again (in order) if it cannot go yet */
}

void keel_reqs_ready_begin(keel_reqs_t *q)
{
    assert(!q->handling_ready);
    q->handling_ready = 1;
}

void keel_reqs_ready_end(keel_reqs_t *q)
{
    assert(q->handling_ready);
    q->handling_ready = 0;
}

void keel_reqs_before_apply(keel_reqs_t *q, const keel_raft_entry_t *e)
{
    if (q->cfg.test_serve_ordered_late)
        return; /* keel_reqs_applied serves them, one entry too late */
    for (keel_req_t *r = q->writes.head; r != NULL && r->index <= e->index; r = r->qnext) {
        if (r->index != e->index || r->term != e->term)
            continue; /* not ours: keel_reqs_applied dispatches it and its reads again */
        keel_req_t *b;
        while ((b = keel_req_pop(&r->before)) != NULL)
            serve_ordered(q, b);
    }
}

void keel_reqs_applied(keel_reqs_t *q, const keel_raft_entry_t *e, const keel_buf_t *reply)
{
    while (q->writes.head && q->writes.head->index <= e->index) {
        keel_req_t *r = keel_req_pop(&q->writes);
        if (r->index != e->index || r->term != e->term) {
            redo_write(q, r); /* overwritten by another leader's entry: not applied */
            continue;
        }
        for (keel_req_t *b; (b = keel_req_pop(&r->before)) != NULL;) {
            assert(q->cfg.test_serve_ordered_late); /* else keel_reqs_before_apply served it */
            serve_ordered(q, b);
        }
        if (r->conf_reply) /* a membership change: committed */
            keel_reqs_answer_write(q, r, r->conf_reply, r->conf_reply_len);
        else
            keel_reqs_answer_write(q, r, keel_buf_rptr(reply), keel_buf_unread(reply));
    }
}

void keel_reqs_read_state(keel_reqs_t *q, const keel_raft_read_state_t *rs)
{
    finish_read_batch(q, rs);
}

void keel_reqs_snapshot_installed(keel_reqs_t *q, uint64_t index)
{
    while (q->writes.head && q->writes.head->index <= index) {
        keel_req_t *r = keel_req_pop(&q->writes);
        release_before(q, r, KEEL_ECONNRESET); /* reads: TRYAGAIN */
        keel__rq_req_answer(q, r, KEEL_ECONNRESET, NULL, 0);
        r->done = NULL;
        keel__rq_req_free(q, r);
    }
}

int keel_reqs_step(keel_reqs_t *q)
{
    assert(!q->handling_ready);
    int moved = start_read_batch(q);
    if (q->in_ready.head != NULL) {
        keel_req_queue_t later = q->in_ready; /* submitted by answers inside the ready */
        q->in_ready = (keel_req_queue_t){0};
        keel_req_t *r;
        while ((r = keel_req_pop(&later)) != NULL)
            keel__rq_dispatch(q, r);
        moved = 1;
    }
    moved |= flush_chains(q);
    return serve_ready_reads(q) > 0 || moved;
}

void keel_reqs_end_pass(keel_reqs_t *q)
{
    keel__rq_forward_reads(q);
}

void keel_reqs_tick(keel_reqs_t *q)
{
    expire_requests(q);
    keel__rq_prune_fwd_reads(q);
}

void keel_reqs_park(keel_reqs_t *q, keel_req_t *r)
{
    keel__rq_park(q, r);
}

void keel_reqs_proposed(keel_reqs_t *q, keel_req_t *r, uint64_t index)
{
    proposed(q, r, index);
}
