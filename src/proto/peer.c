/* peer.c - encoding and validation of peer message payloads. */
#include "proto/peer.h"

#include "base/bytes.h"
#include "proto/frame.h"

#include <stdlib.h>
#include <string.h>

#define RAFT_FIXED_BYTES (1 + 9 * 8 + 1 + 1 + 1 + 4)

void keel_peer_scratch_free(keel_peer_scratch_t *s)
{
    free(s->entries);
    s->entries = NULL;
    s->entries_cap = 0;
}

static size_t snapshot_tail_bytes(const keel_raft_msg_t *m)
{
    if (m->type != KEEL_RAFT_MSG_SNAPSHOT)
        return 0;
    size_t n = 1 + 4 + m->data_len;
    if (m->conf)
        n += 8 + 8u * (m->conf->voters_n + m->conf->learners_n) + 4 + m->conf->ctx_len;
    return n;
}
#define ENTRY_FIXED_BYTES (8 + 8 + 4 + 4)

int keel_peer_encode_hello(keel_buf_t *out, const keel_peer_hello_t *h)
{
    uint8_t p[24];
    keel_put_u64(p, h->cluster_id);
    keel_put_u64(p + 8, h->from);
    keel_put_u64(p + 16, h->to);
    return keel_frame_encode(out, KEEL_PEER_HELLO, p, sizeof(p));
}

int keel_peer_decode_hello(const uint8_t *p, size_t n, keel_peer_hello_t *h)
{
    if (n != 24)
        return KEEL_EPROTO;
    h->cluster_id = keel_get_u64(p);
    h->from = keel_get_u64(p + 8);
    h->to = keel_get_u64(p + 16);
    return 0;
}

int keel_peer_encode_raft(keel_buf_t *out, const keel_raft_msg_t *m)
{
    size_t bytes = RAFT_FIXED_BYTES + snapshot_tail_bytes(m);
    for (size_t i = 0; i < m->entries_n; i++)
        bytes += ENTRY_FIXED_BYTES + m->entries[i].len;
    size_t mark;
    int rc = keel_frame_begin(out, KEEL_PEER_RAFT, &mark);
    if (rc != 0)
        return rc;
    rc = keel_buf_reserve(out, bytes);
    if (rc != 0) {
        keel_frame_abort(out, mark);
        return rc;
    }
    uint8_t *p = keel_buf_wptr(out);
    *p++ = (uint8_t)m->type;
    const uint64_t fixed[9] = {m->from,   m->to,  m->term,       m->index,    m->log_term,
                               m->commit, m->ctx, m->hint_index, m->hint_term};
    for (int i = 0; i < 9; i++, p += 8)
        keel_put_u64(p, fixed[i]);
    *p++ = m->reject;
    *p++ = m->transfer;
    *p++ = m->last;
    keel_put_u32(p, (uint32_t)m->entries_n);
    p += 4;
    for (size_t i = 0; i < m->entries_n; i++) {
        const keel_raft_entry_t *e = &m->entries[i];
        keel_put_u64(p, e->term);
        keel_put_u64(p + 8, e->index);
        keel_put_u32(p + 16, e->type);
        keel_put_u32(p + 20, e->len);
        p += ENTRY_FIXED_BYTES;
        if (e->len)
            memcpy(p, e->data, e->len);
        p += e->len;
    }
    if (m->type == KEEL_RAFT_MSG_SNAPSHOT) {
        *p++ = m->conf != NULL;
        if (m->conf) {
            keel_put_u32(p, m->conf->voters_n);
            keel_put_u32(p + 4, m->conf->learners_n);
            p += 8;
            for (uint32_t i = 0; i < m->conf->voters_n; i++, p += 8)
                keel_put_u64(p, m->conf->voters[i]);
            for (uint32_t i = 0; i < m->conf->learners_n; i++, p += 8)
                keel_put_u64(p, m->conf->learners[i]);
            keel_put_u32(p, m->conf->ctx_len);
            p += 4;
            memcpy(p, m->conf->ctx, m->conf->ctx_len);
            p += m->conf->ctx_len;
        }
        keel_put_u32(p, (uint32_t)m->data_len);
        p += 4;
        if (m->data_len)
            memcpy(p, m->data, m->data_len);
    }
    keel_buf_commit(out, bytes);
    rc = keel_frame_end(out, mark);
    if (rc != 0)
        keel_frame_abort(out, mark);
    return rc;
}

/* The SNAPSHOT tail: configuration and chunk bytes. */
static int decode_snapshot_tail(keel_rd_t *r, keel_raft_msg_t *m, keel_peer_scratch_t *s)
{
    uint8_t has_conf = keel_rd_u8(r);
    if (has_conf > 1)
        return KEEL_EPROTO;
    if (has_conf) {
        keel_raft_conf_t *c = &s->conf;
        memset(c, 0, sizeof(*c));
        c->voters_n = keel_rd_u32(r);
        c->learners_n = keel_rd_u32(r);
        if (r->bad || c->voters_n > KEEL_RAFT_MEMBERS_MAX || c->learners_n > KEEL_RAFT_MEMBERS_MAX)
            return KEEL_EPROTO;
        for (uint32_t i = 0; i < c->voters_n; i++)
            c->voters[i] = keel_rd_u64(r);
        for (uint32_t i = 0; i < c->learners_n; i++)
            c->learners[i] = keel_rd_u64(r);
        c->ctx_len = keel_rd_u32(r);
        if (r->bad || c->ctx_len > KEEL_RAFT_CONF_CTX_BYTES_MAX)
            return KEEL_EPROTO;
        const uint8_t *ctx = c->ctx_len ? keel_rd_bytes(r, c->ctx_len) : NULL;
        if (r->bad)
            return KEEL_EPROTO;
        if (ctx)
            memcpy(c->ctx, ctx, c->ctx_len);
        m->conf = c;
    }
    uint32_t len = keel_rd_u32(r);
    m->data = len ? keel_rd_bytes(r, len) : NULL;
    m->data_len = len;
    return r->bad ? KEEL_EPROTO : 0;
}

int keel_peer_decode_raft(const uint8_t *p, size_t n, keel_raft_msg_t *m,
                          keel_peer_scratch_t *scratch)
{
    keel_rd_t r;
    keel_rd_init(&r, p, n);
    memset(m, 0, sizeof(*m));
    uint8_t type = keel_rd_u8(&r);
    if (type < KEEL_RAFT_MSG_APPEND || type > KEEL_RAFT_MSG_SNAPSHOT_RESP)
        return KEEL_EPROTO;
    m->type = (keel_raft_msg_type_t)type;
    m->from = keel_rd_u64(&r);
    m->to = keel_rd_u64(&r);
    m->term = keel_rd_u64(&r);
    m->index = keel_rd_u64(&r);
    m->log_term = keel_rd_u64(&r);
    m->commit = keel_rd_u64(&r);
    m->ctx = keel_rd_u64(&r);
    m->hint_index = keel_rd_u64(&r);
    m->hint_term = keel_rd_u64(&r);
    m->reject = keel_rd_u8(&r);
    m->transfer = keel_rd_u8(&r);
    m->last = keel_rd_u8(&r);
    uint32_t count = keel_rd_u32(&r);
    if (r.bad || m->reject > 1 || m->transfer > 1 || m->last > 1 || count > KEEL_PEER_ENTRIES_MAX ||
        (size_t)count * ENTRY_FIXED_BYTES > r.left)
        return KEEL_EPROTO;
    if (count > scratch->entries_cap) {
        keel_raft_entry_t *ns = realloc(scratch->entries, count * sizeof(*ns));
        if (ns == NULL)
            return KEEL_ENOMEM;
        scratch->entries = ns;
        scratch->entries_cap = count;
    }
    for (uint32_t i = 0; i < count; i++) {
        keel_raft_entry_t *e = &scratch->entries[i];
        e->term = keel_rd_u64(&r);
        e->index = keel_rd_u64(&r);
        e->type = keel_rd_u32(&r);
        e->len = keel_rd_u32(&r);
        e->data = e->len ? (uint8_t *)keel_rd_bytes(&r, e->len) : NULL;
        if (r.bad || e->type > KEEL_RAFT_ENTRY_CONF)
            return KEEL_EPROTO;
        if (i > 0 && e->index != scratch->entries[i - 1].index + 1)
            return KEEL_EPROTO;
    }
    if (m->type == KEEL_RAFT_MSG_SNAPSHOT && decode_snapshot_tail(&r, m, scratch) != 0)
        return KEEL_EPROTO;
    if (r.left != 0)
        return KEEL_EPROTO;
    m->entries = count ? scratch->entries : NULL;
    m->entries_n = count;
    return 0;
}

int keel_peer_encode_fwd(keel_buf_t *out, keel_peer_type_t type, const keel_peer_fwd_t *f)
{
    uint8_t head[17];
    size_t head_n = 8;
    keel_put_u64(head, f->req_id);
    if (type == KEEL_PEER_FWD_REPLY || type == KEEL_PEER_FWD_READ_OK)
        head[head_n++] = f->status;
    if (type == KEEL_PEER_FWD_READ_OK) {
        keel_put_u64(head + head_n, f->index);
        head_n += 8;
    }
    int with_bytes =
        type == KEEL_PEER_FWD_PROPOSE || type == KEEL_PEER_FWD_CONF || type == KEEL_PEER_FWD_REPLY;
    size_t mark;
    int rc = keel_frame_begin(out, (uint8_t)type, &mark);
    if (rc != 0)
        return rc;
    rc = keel_buf_append(out, head, head_n);
    if (rc == 0 && with_bytes)
        rc = keel_buf_append(out, f->bytes, f->bytes_len);
    if (rc == 0)
        rc = keel_frame_end(out, mark);
    if (rc != 0)
        keel_frame_abort(out, mark);
    return rc;
}

int keel_peer_decode_fwd(keel_peer_type_t type, const uint8_t *p, size_t n, keel_peer_fwd_t *f)
{
    keel_rd_t r;
    keel_rd_init(&r, p, n);
    memset(f, 0, sizeof(*f));
    f->req_id = keel_rd_u64(&r);
    switch (type) {
    case KEEL_PEER_FWD_PROPOSE:
    case KEEL_PEER_FWD_CONF:
        break;
    case KEEL_PEER_FWD_REPLY:
        f->status = keel_rd_u8(&r);
        break;
    case KEEL_PEER_FWD_READ:
        if (r.left != 0)
            return KEEL_EPROTO;
        break;
    case KEEL_PEER_FWD_READ_OK:
        f->status = keel_rd_u8(&r);
        f->index = keel_rd_u64(&r);
        if (r.left != 0)
            return KEEL_EPROTO;
        break;
    default:
        return KEEL_EPROTO;
    }
    if (r.bad || f->status > KEEL_PEER_FAILED)
        return KEEL_EPROTO;
    if (type == KEEL_PEER_FWD_PROPOSE || type == KEEL_PEER_FWD_CONF ||
        type == KEEL_PEER_FWD_REPLY) {
        f->bytes = r.p;
        f->bytes_len = r.left;
    }
    return 0;
}

int keel_peer_encode_publish(keel_buf_t *out, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                             size_t msg_len)
{
    if (ch_len > UINT32_MAX)
        return KEEL_ETOOBIG;
    uint8_t head[4];
    keel_put_u32(head, (uint32_t)ch_len);
    size_t mark;
    int rc = keel_frame_begin(out, KEEL_PEER_PUBLISH, &mark);
    if (rc != 0)
        return rc;
    rc = keel_buf_append(out, head, sizeof(head));
    if (rc == 0)
        rc = keel_buf_append(out, ch, ch_len);
    if (rc == 0)
        rc = keel_buf_append(out, msg, msg_len);
    if (rc == 0)
        rc = keel_frame_end(out, mark);
    if (rc != 0)
        keel_frame_abort(out, mark);
    return rc;
}

int keel_peer_decode_publish(const uint8_t *p, size_t n, const uint8_t **ch, size_t *ch_len,
                             const uint8_t **msg, size_t *msg_len)
{
    keel_rd_t r;
    keel_rd_init(&r, p, n);
    uint32_t cl = keel_rd_u32(&r);
    const uint8_t *c = keel_rd_bytes(&r, cl);
    if (r.bad)
        return KEEL_EPROTO;
    *ch = c;
    *ch_len = cl;
    *msg = r.p;
    *msg_len = r.left;
    return 0;
}

int keel_peer_encode_removed(keel_buf_t *out, uint64_t id)
{
    uint8_t p[8];
    keel_put_u64(p, id);
    return keel_frame_encode(out, KEEL_PEER_REMOVED, p, sizeof(p));
}

int keel_peer_decode_removed(const uint8_t *p, size_t n, uint64_t *id)
{
    if (n != 8)
        return KEEL_EPROTO;
    *id = keel_get_u64(p);
    return 0;
}

int keel_peer_encode_ap(keel_buf_t *out, const uint8_t *msg, size_t len)
{
    size_t mark;
    int rc = keel_frame_begin(out, KEEL_PEER_AP, &mark);
    if (rc != 0)
        return rc;
    rc = keel_buf_append(out, msg, len);
    if (rc == 0)
        rc = keel_frame_end(out, mark);
    if (rc != 0)
        keel_frame_abort(out, mark);
    return rc;
}
