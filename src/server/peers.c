/* peers.c - a node's peer transport: outbound connections, inbound ones, frames. */
#include "server/node_int.h"

#include "base/bytes.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/map.h"
#include "base/vec.h"
#include "proto/frame.h"
#include "proto/peer.h"
#include "runtime/blockmem.h"
#include "runtime/clock.h"
#include "runtime/snapfile.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- peers: sending --------------------------------------------------------------- */

int keel__node_peer_live(const peer_t *p)
{
    return p->node != NULL && !p->closing;
}

peer_t *keel__node_peer_by_id(keel_node_t *n, uint64_t id)
{
    for (size_t i = 0; i < PEER_SLOTS; i++)
        if (keel__node_peer_live(&n->peers[i]) && n->peers[i].member.id == id)
            return &n->peers[i];
    return NULL;
}

int keel__node_peer_room(const peer_t *p, size_t more)
{
    return keel_buf_unread(&p->out) + keel_buf_unread(&p->held) + more <=
           p->node->cfg.peer_buffer_bytes_max;
}

static void on_peer_write(uv_write_t *req, int status)
{
    peer_t *p = req->data;
    p->writing = 0;
    keel_buf_reset(&p->wbuf);
    if (status < 0) {
        keel__node_peer_lost(p);
        return;
    }
    keel__node_peer_flush(p);
}

void keel__node_peer_flush(peer_t *p)
{
    if (!p->connected || p->writing || keel_buf_unread(&p->out) == 0)
        return;
    /* One direct write(2) first (see resp_server_out.c keel__resp_flush): no write request,
       no epoll re-arm when the turn's frames fit the socket buffer. The rest goes by uv_write. */
    uv_buf_t d = uv_buf_init((char *)keel_buf_rptr(&p->out), (unsigned)keel_buf_unread(&p->out));
    int sent = uv_try_write(keel_connector_stream(&p->conn), &d, 1);
    if (sent > 0) { /* an error is left to uv_write below, which reports it as before */
        if (p->bytes_out)
            keel_counter_add(p->bytes_out, (uint64_t)sent);
        keel_buf_consume(&p->out, (size_t)sent);
        if (keel_buf_unread(&p->out) == 0)
            return;
    }
    keel_buf_t t = p->wbuf; /* swap: out becomes the write buffer */
    p->wbuf = p->out;
    p->out = t;
    uv_buf_t b = uv_buf_init((char *)keel_buf_rptr(&p->wbuf), (unsigned)keel_buf_unread(&p->wbuf));
    p->wreq.data = p;
    if (p->bytes_out)
        keel_counter_add(p->bytes_out, b.len);
    if (uv_write(&p->wreq, keel_connector_stream(&p->conn), &b, 1, on_peer_write) == 0)
        p->writing = 1;
    else
        keel_buf_reset(&p->wbuf);
}

/* Moves held frames whose sync group is now durable into the send buffer. */
void keel__node_peer_release_held(peer_t *p, uint64_t gen_durable)
{
    size_t upto = 0, k = 0;
    while (k < p->marks_n && p->marks[k].gen <= gen_durable)
        upto = p->marks[k++].end;
    if (k == 0)
        return;
    if (keel_buf_append(&p->out, keel_buf_rptr(&p->held), upto) != 0 && p->dropped)
        keel_counter_inc(p->dropped);
    keel_buf_consume(&p->held, upto);
    for (size_t i = k; i < p->marks_n; i++)
        p->marks[i - k] = (held_mark_t){p->marks[i].gen, p->marks[i].end - upto};
    p->marks_n -= k;
}

void keel__node_send_raft(keel_node_t *n, const keel_raft_msg_t *m, int after_persist)
{
    peer_t *p = keel__node_peer_by_id(n, m->to);
    if (p == NULL)
        return;
    if (!keel__node_peer_room(p, 64)) {
        if (p->dropped)
            keel_counter_inc(p->dropped); /* Raft retransmits; the bound protects memory */
        return;
    }
    uint64_t tag = n->last_write_gen;
    if (!after_persist || tag <= n->gen_durable) {
        keel_peer_encode_raft(&p->out, m);
        return;
    }
    if (keel_peer_encode_raft(&p->held, m) != 0)
        return;
    size_t end = keel_buf_unread(&p->held);
    if (p->marks_n > 0 && p->marks[p->marks_n - 1].gen == tag) {
        p->marks[p->marks_n - 1].end = end;
        return;
    }
    if (keel_vec_grow(&p->marks, &p->marks_cap, p->marks_n + 1, sizeof(*p->marks), 8) != 0)
        return;
    p->marks[p->marks_n++] = (held_mark_t){tag, end};
}

void keel__node_send_fwd(keel_node_t *n, uint64_t to, keel_peer_type_t type,
                         const keel_peer_fwd_t *f)
{
    peer_t *p = keel__node_peer_by_id(n, to);
    if (p != NULL && keel__node_peer_room(p, f->bytes_len + 64))
        keel_peer_encode_fwd(&p->out, type, f);
}

/* ---- peers: connections --------------------------------------------------------- */

/* The connector owns the stream's data pointer; the peer hangs off the connector. */
static peer_t *stream_peer(const uv_handle_t *h)
{
    const keel_connector_t *c = h->data;
    return c->data;
}

/*
 * Decodes and handles, in order, every whole frame in `in` (a partial one stays for the
 * next read); both directions of a peer connection read this way. 0, or the first
 * decoding or handling error: the stream is then out of sync and the caller drops it.
 */
typedef int (*frame_fn)(void *ctx, const keel_frame_t *fr);

static int take_frames(keel_buf_t *in, keel_frame_decoder_t *dec, frame_fn fn, void *ctx)
{
    for (;;) {
        keel_frame_t fr;
        size_t used;
        keel_errmsg_t m;
        int rc = keel_frame_decode(dec, keel_buf_rptr(in), keel_buf_unread(in), &fr, &used, &m);
        if (rc == KEEL_EAGAIN)
            return 0;
        if (rc == 0)
            rc = fn(ctx, &fr);
        if (rc != 0)
            return rc;
        keel_buf_consume(in, used);
    }
}

/* A frame written back on our outbound connection: only REMOVED, naming us. */
static int handle_back_frame(void *ctx, const keel_frame_t *fr)
{
    peer_t *p = ctx;
    uint64_t id;
    if (fr->type != KEEL_PEER_REMOVED ||
        keel_peer_decode_removed(fr->payload, fr->payload_len, &id) != 0 || id != p->node->cfg.id)
        return KEEL_EPROTO;
    keel__node_evict(p->node, p->member.id);
    return 0;
}

/*
 * The outbound connection carries our frames to the peer. The peer writes back at most
 * one kind of frame: REMOVED, when a committed configuration removed us (a node that was
 * down when it was removed learns it this way as soon as it reconnects). Anything else
 * is a protocol error and the connection is dropped (and made again).
 */
static void on_peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    peer_t *p = stream_peer((uv_handle_t *)s);
    if (nread < 0) {
        if (nread == UV_ENOBUFS) /* peer_alloc found no room: more than a frame pending */
            keel_log_warn("peer connection dropped: the peer sent back more than a frame",
                          KF_STR("peer", p->member.name));
        keel__node_peer_lost(p);
        return;
    }
    keel_buf_commit(&p->rbuf, (size_t)nread);
    int rc = take_frames(&p->rbuf, &p->back_dec, handle_back_frame, p);
    if (rc != 0) {
        keel_log_warn("peer connection dropped: the peer sent back a bad frame",
                      KF_STR("peer", p->member.name), KF_STR("error", keel_strerror(rc)));
        keel__node_peer_lost(p);
    }
}

static void peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    peer_t *p = stream_peer(h);
    if (keel_buf_reserve(&p->rbuf, PEER_BACK_FRAME_BYTES_MAX) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&p->rbuf), (unsigned)(p->rbuf.cap - p->rbuf.len));
}

static void on_hello_written(uv_write_t *req, int status) {}

static void on_peer_connected(keel_connector_t *c, void *data)
{
    peer_t *p = data;
    keel_node_t *n = p->node;
    uv_stream_t *s = keel_connector_stream(c);
    p->connected = 1;
    p->writing = 0;
    keel_buf_reset(&p->wbuf);
    keel_buf_t hb;
    keel_buf_init(&hb, 64);
    keel_peer_hello_t h = {n->cfg.cluster_id, n->cfg.id, p->member.id};
    keel_peer_encode_hello(&hb, &h);
    memcpy(p->hello, keel_buf_rptr(&hb), keel_buf_unread(&hb));
    uv_buf_t b = uv_buf_init((char *)p->hello, (unsigned)keel_buf_unread(&hb));
    keel_buf_free(&hb);
    uv_write(&p->hello_req, s, &b, 1, on_hello_written);
    keel_buf_reset(&p->rbuf); /* a new stream: nothing of the last one's is kept */
    keel_frame_decoder_init(&p->back_dec, PEER_BACK_FRAME_BYTES_MAX, NULL);
    uv_read_start(s, peer_alloc, on_peer_read);
    keel_log_info("peer connected", KF_STR("peer", p->member.name));
    keel__node_peer_flush(p);
}

static void on_peer_failed(keel_connector_t *c, int err, keel_ms_t delay_ms, void *data)
{
    peer_t *p = data;
    p->connected = 0;
    keel_log_debug("peer connect failed", KF_STR("peer", p->member.name),
                   KF_STR("error", keel_strerror(err)), KF_INT("retry_ms", delay_ms));
}

/* ---- peers: receiving ------------------------------------------------------------- */

static void inconn_closed(uv_handle_t *h)
{
    inconn_t *c = h->data;
    keel_node_t *n = c->node;
    keel_buf_free(&c->in);
    free(c);
    n->handles_open--;
    if (n->stopping)
        keel__node_process(n); /* may finish the stop */
}

void keel__node_inconn_close(inconn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    keel_list_remove(&c->link);
    uv_close((uv_handle_t *)&c->tcp, inconn_closed);
}

/* A peer said a committed configuration removed us: for good (the state is not persisted:
   a restart comes back with the old configuration and is told again, see tell_inconn_removed). */
void keel__node_evict(keel_node_t *n, uint64_t by)
{
    if (!n->evicted)
        keel_log_warn("removed from the cluster by a committed configuration change; this "
                      "node no longer campaigns or serves clients: stop it once it handed "
                      "off its AP keys (KEEL.AP.STATUS drained 1)",
                      KF_INT("id", n->cfg.id), KF_INT("by", by));
    n->evicted = n->reqs.removed = 1;
}

/*
 * The directory of the applied (so committed) configuration, or NULL when this node cannot
 * judge who was removed: a node judges only while it is in its own applied configuration
 * (a joiner that has no configuration yet knows nobody, and would take every member for
 * a removed one).
 */
keel_memberdir_t *keel__node_applied_members(keel_node_t *n)
{
    keel_raft_conf_t *c = &n->applied_conf;
    keel_memberdir_t *d = &n->applied_dir;
    uint64_t at = n->sm.ops->applied_index(n->sm.data);
    if (at < keel_raft_snapshot_index(n->raft))
        at = keel_raft_snapshot_index(n->raft); /* a snapshot is committed state too */
    keel_raft_conf_at(n->raft, at, c);
    if (c->voters_n == 0)
        return NULL;
    keel_memberdir_of_conf(c, n->cfg.members, n->cfg.members_n, d);
    return keel_memberdir_find_id(d, n->cfg.id) != NULL ? d : NULL;
}

/*
 * True when a committed configuration removed member id: the applied directory d has
 * handed out ids past it and does not list it. Ids are never reused (memberdir.h), so
 * such a node can never be a member again. A node that joins later has an id at or past
 * our applied next_id until we apply its addition, so it is never taken for a removed one.
 */
int keel__node_removed_for_good(keel_memberdir_t *d, uint64_t id)
{
    return d != NULL && id < d->next_id && keel_memberdir_find_id(d, id) == NULL;
}

static void on_removed_written(uv_write_t *req, int status) {}

/*
 * A node removed while it was down (or restarted since) never got tell_removed's frame and
 * still thinks it is a member. It connects to us: we answer on its own connection, and
 * drop whatever else it sends. It stops campaigning and serving as soon as it reads it.
 */
static void tell_inconn_removed(inconn_t *c)
{
    keel_buf_t b;
    keel_buf_init(&b, 32);
    int rc = keel_peer_encode_removed(&b, c->from);
    if (rc == 0 && keel_buf_unread(&b) <= sizeof(c->removed_out)) {
        memcpy(c->removed_out, keel_buf_rptr(&b), keel_buf_unread(&b));
        uv_buf_t ub = uv_buf_init((char *)c->removed_out, (unsigned)keel_buf_unread(&b));
        if (uv_write(&c->removed_req, (uv_stream_t *)&c->tcp, &ub, 1, on_removed_written) == 0) {
            c->told_removed = 1;
            keel_log_info("a removed member connected; told it that it was removed",
                          KF_INT("id", c->from));
        }
    }
    keel_buf_free(&b);
}

/*
 * Judges every connected node again: after a configuration entry is applied or a snapshot
 * installed. A HELLO is judged against what was applied when it came, which after a
 * restart is the configuration of the flags or of the last snapshot.
 */
void keel__node_judge_inconns(keel_node_t *n)
{
    keel_memberdir_t *d = keel__node_applied_members(n);
    if (d == NULL)
        return;
    keel_list_t *it;
    KEEL_LIST_FOREACH(it, &n->inconns)
    {
        inconn_t *c = KEEL_LIST_ENTRY(it, inconn_t, link);
        if (c->from != 0 && !c->told_removed && !c->closing &&
            keel__node_removed_for_good(d, c->from))
            tell_inconn_removed(c);
    }
}

/*
 * An AP message from a peer this node no longer counts as a member: our connection to it,
 * lingering until it closes, stays open while the peer keeps sending, since the answers to
 * a leaving node's handoff (HANDOFF_ACK) go back that way. A leaver that is done sends
 * nothing more, and its connection closes PEER_LINGER_EXTRA_MS plus a request timeout
 * later, as after any removal.
 */
static void linger_more(keel_node_t *n, uint64_t from)
{
    peer_t *p = keel__node_peer_by_id(n, from);
    if (p == NULL || p->linger_until_ms == 0)
        return;
    keel_ms_t until = keel_loop_now_ms(n->loop) + n->cfg.request_timeout_ms + PEER_LINGER_EXTRA_MS;
    if (until > p->linger_until_ms)
        p->linger_until_ms = until;
}

static int handle_frame(void *ctx, const keel_frame_t *fr)
{
    inconn_t *c = ctx;
    keel_node_t *n = c->node;
    if (c->from == 0) {
        keel_peer_hello_t h;
        if (fr->type != KEEL_PEER_HELLO ||
            keel_peer_decode_hello(fr->payload, fr->payload_len, &h) != 0)
            return KEEL_EPROTO;
        /* Any id of this cluster: a member added a moment ago may reach us before its
           configuration entry does. Ids are never reused (server/memberdir.h). */
        if (h.cluster_id != n->cfg.cluster_id || h.to != n->cfg.id || h.from == 0 ||
            h.from == n->cfg.id) {
            keel_log_warn("peer refused: wrong cluster or member", KF_INT("from", h.from));
            return KEEL_EPROTO;
        }
        c->from = h.from;
        if (keel__node_removed_for_good(keel__node_applied_members(n), h.from))
            tell_inconn_removed(c);
        return 0;
    }
    /* Nothing a removed node says about the log matters any more. Its AP messages still do:
       a leaving node hands its AP keys to their new homes (server/ap_move.c). */
    if (c->told_removed && fr->type != KEEL_PEER_AP)
        return 0;
    if (fr->type == KEEL_PEER_RAFT) {
        keel_raft_msg_t m;
        int rc = keel_peer_decode_raft(fr->payload, fr->payload_len, &m, &n->dec_scratch);
        if (rc != 0 || m.from != c->from || m.to != n->cfg.id)
            return KEEL_EPROTO;
        keel__node_lease_clock(n);
        peer_t *from = keel__node_peer_by_id(n, c->from);
        if (from) /* a whole Raft message: the member is alive (prefer.c) */
            from->heard_ms = keel_loop_now_ms(n->loop);
        keel_raft_step(n->raft, &m);
        return 0;
    }
    if (fr->type == KEEL_PEER_REMOVED) {
        uint64_t id;
        if (keel_peer_decode_removed(fr->payload, fr->payload_len, &id) != 0 || id != n->cfg.id)
            return KEEL_EPROTO;
        keel__node_evict(n, c->from);
        return 0;
    }
    if (fr->type == KEEL_PEER_AP) {
        linger_more(n, c->from);
        if (n->cfg.on_ap)
            n->cfg.on_ap(n->cfg.on_ap_data, c->from, fr->payload, fr->payload_len);
        return 0;
    }
    if (fr->type == KEEL_PEER_PUBLISH) {
        const uint8_t *ch, *msg;
        size_t chl, msgl;
        if (keel_peer_decode_publish(fr->payload, fr->payload_len, &ch, &chl, &msg, &msgl) != 0)
            return KEEL_EPROTO;
        if (n->cfg.on_publish)
            n->cfg.on_publish(n->cfg.on_publish_data, ch, chl, msg, msgl);
        return 0;
    }
    keel_peer_fwd_t f;
    if (keel_peer_decode_fwd((keel_peer_type_t)fr->type, fr->payload, fr->payload_len, &f) != 0)
        return KEEL_EPROTO;
    keel_reqs_on_fwd(&n->reqs, c->from, (keel_peer_type_t)fr->type, &f);
    return 0;
}

static void on_inconn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    inconn_t *c = s->data;
    if (nread < 0) {
        keel__node_inconn_close(c);
        return;
    }
    keel_buf_commit(&c->in, (size_t)nread);
    int rc = take_frames(&c->in, &c->dec, handle_frame, c);
    if (rc != 0) {
        keel_log_warn("peer connection closed on a bad frame", KF_INT("from", c->from),
                      KF_STR("error", keel_strerror(rc)));
        keel__node_inconn_close(c);
        return;
    }
    /* Bytes of a large Raft frame still arriving from the leader are evidence that it is
       alive, though the frame may take many reads (a 63 MiB AppendEntries): the election
       timer restarts on each, as it would on a whole message (core/raft/raft.h,
       keel_raft_leader_alive; liveness only). Only such a frame counts: whole messages are
       stepped and judged by the core, and a node that lost its leadership but keeps sending
       small ones (pre-votes, answers) must not keep a follower from campaigning. */
    const uint8_t *h = keel_buf_rptr(&c->in);
    if (nread > 0 && c->from != 0 && c->from == keel_raft_leader(c->node->raft) &&
        c->dec.want_bytes >= PEER_ALIVE_FRAME_BYTES_MIN &&
        keel_buf_unread(&c->in) >= KEEL_FRAME_HEADER_BYTES &&
        h[KEEL_FRAME_HEADER_BYTES - 1] == KEEL_PEER_RAFT)
        keel_raft_leader_alive(c->node->raft);
}

static void inconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    inconn_t *c = h->data;
    /* Room for the rest of the current frame and at least PEER_READ_BYTES more: a read
       that just fills the rest of a frame would make libuv read again at once (it loops
       while reads fill the buffer), one syscall per small frame under load. */
    size_t want = PEER_READ_BYTES;
    if (c->dec.want_bytes > keel_buf_unread(&c->in) + want)
        want = c->dec.want_bytes - keel_buf_unread(&c->in);
    if (keel_buf_reserve(&c->in, want) != 0) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

void keel__node_on_peer_connection(uv_stream_t *srv, int status)
{
    keel_node_t *n = srv->data;
    if (status < 0 || n->stopping)
        return;
    inconn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->node = n;
    keel_buf_init(&c->in, n->cfg.peer_frame_bytes_max + 64 * 1024);
    keel_frame_decoder_init(&c->dec, n->cfg.peer_frame_bytes_max, NULL);
    uv_tcp_init(&n->loop->uv, &c->tcp);
    c->tcp.data = c;
    n->handles_open++;
    keel_list_init(&c->link);
    keel_list_insert_head(&n->inconns, &c->link);
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        keel__node_inconn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, inconn_alloc, on_inconn_read);
}

void keel_node_publish(keel_node_t *n, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                       size_t msg_len)
{
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (!keel__node_peer_live(p))
            continue;
        if (keel__node_peer_room(p, ch_len + msg_len + 64))
            keel_peer_encode_publish(&p->out, ch, ch_len, msg, msg_len);
        else if (p->dropped)
            keel_counter_inc(p->dropped);
    }
}

int keel_node_send_ap(keel_node_t *n, uint64_t to, const uint8_t *msg, size_t len)
{
    peer_t *p = keel__node_peer_by_id(n, to);
    if (p == NULL || !p->connected)
        return KEEL_ENOTFOUND;
    if (!keel__node_peer_room(p, len + 64)) {
        if (p->dropped)
            keel_counter_inc(p->dropped);
        return KEEL_EFULL;
    }
    return keel_peer_encode_ap(&p->out, msg, len);
}

int keel_node_transfer(keel_node_t *n, uint64_t to)
{
    if (keel_raft_leader(n->raft) != n->cfg.id)
        return KEEL_ENOTLEADER;
    if (to == n->cfg.id || keel__node_peer_by_id(n, to) == NULL)
        return KEEL_EINVAL;
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0)
        keel_log_info("leadership transfer started", KF_STR("to", keel_node_member_name(n, to)));
    return rc;
}

void keel__node_peer_lost(peer_t *p)
{
    if (!p->connected || p->node->stopping || p->closing)
        return;
    p->connected = 0;
    keel_connector_lost(&p->conn);
    keel_reqs_peer_lost(&p->node->reqs, p->member.id);
}

int keel__node_peer_open(keel_node_t *n, const keel_node_member_t *mb, keel_errmsg_t *msg)
{
    peer_t *p = NULL;
    for (size_t i = 0; i < PEER_SLOTS && p == NULL; i++)
        if (n->peers[i].node == NULL)
            p = &n->peers[i];
    assert(p != NULL); /* at most MEMBERS_MAX live and MEMBERS_MAX closing */
    memset(p, 0, sizeof(*p));
    keel_connector_config_t ccfg = keel_connector_config_default();
    ccfg.backoff.base_ms = 50;
    ccfg.backoff.max_ms = 1000;
    ccfg.connect_timeout_ms = 1000;
    ccfg.seed = n->cfg.raft.seed ^ mb->id;
    p->member = *mb;
    keel_connector_callbacks_t cb = {on_peer_connected, on_peer_failed};
    int rc = keel_connector_init(&p->conn, n->loop, mb->peer_addr, &ccfg, &cb, p, msg);
    if (rc != 0)
        return rc;
    p->node = n;
    keel_buf_init(&p->out, 0);
    keel_buf_init(&p->held, 0);
    keel_buf_init(&p->wbuf, 0);
    keel_buf_init(&p->rbuf, 2 * PEER_BACK_FRAME_BYTES_MAX); /* a partial frame + a read */
    if (n->cfg.metrics) {
        char labels[128];
        snprintf(labels, sizeof(labels), "peer=\"%s\"", mb->name);
        p->bytes_out = keel_metrics_counter(n->cfg.metrics, "keel_peer_sent_bytes_total",
                                            "Bytes sent to each peer.", labels);
        p->dropped = keel_metrics_counter(n->cfg.metrics, "keel_peer_dropped_msgs_total",
                                          "Peer messages dropped at the buffer limit.", labels);
    }
    n->handles_open++;
    keel_connector_start(&p->conn);
    return 0;
}

void keel__node_peer_close(peer_t *p)
{
    keel_node_t *n = p->node;
    p->closing = 1;
    keel_reqs_peer_lost(&n->reqs, p->member.id);
    keel_connector_close(&p->conn, keel__node_connector_closed);
}

void keel__node_close_lingering(keel_node_t *n)
{
    keel_ms_t now = keel_loop_now_ms(n->loop);
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        peer_t *p = &n->peers[i];
        if (keel__node_peer_live(p) && p->linger_until_ms != 0 && p->linger_until_ms <= now) {
            keel_log_info("peer dropped", KF_STR("peer", p->member.name));
            keel__node_peer_close(p);
        }
    }
}

/*
 * The configuration in the core changed (a CONF entry appended or truncated away, a
 * snapshot installed, a restart): recompute the member list and make the peers match
 * it. Until a joining node has any configuration, the directory it got when it joined
 * stands in, so that it can answer the leader.
 */
void keel__node_connector_closed(keel_connector_t *c)
{
    peer_t *p = c->data;
    keel_node_t *n = p->node;
    n->handles_open--;
    keel_buf_free(&p->out);
    keel_buf_free(&p->held);
    keel_buf_free(&p->wbuf);
    keel_buf_free(&p->rbuf);
    free(p->marks);
    memset(p, 0, sizeof(*p));
    keel__node_finish_stop(n);
}

int keel_node_peer_port(const keel_node_t *n)
{
    return keel_tcp_local_port(&n->listener);
}
