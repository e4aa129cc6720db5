/* apmsg.c - AP keyspace replica messages (see apmsg.h). */
#include "proto/apmsg.h"

#include "base/bytes.h"

#include <string.h>

int keel_apmsg_encode(keel_buf_t *out, const keel_apmsg_t *m)
{
    uint8_t h[11];
    h[0] = m->type;
    keel_put_u64(h + 1, m->req);
    size_t hl = 9;
    int blob = m->type == KEEL_APMSG_TREE || m->type == KEEL_APMSG_PULL;
    if (blob) {
        hl = 9;
    } else if (m->type == KEEL_APMSG_WRITE || m->type == KEEL_APMSG_READ) {
        if (m->key_len > KEEL_APMSG_KEY_BYTES_MAX)
            return KEEL_ETOOBIG;
        keel_put_u16(h + 9, (uint16_t)m->key_len);
        hl = 11;
    } else {
        h[9] = m->status;
        hl = 10;
    }
    int rc = keel_buf_append(out, h, hl);
    if (rc == 0 && m->key_len && (m->type == KEEL_APMSG_WRITE || m->type == KEEL_APMSG_READ))
        rc = keel_buf_append(out, m->key, m->key_len);
    if (rc == 0 && m->value_len &&
        (m->type == KEEL_APMSG_WRITE || blob ||
         (m->type == KEEL_APMSG_READ_REPLY && m->status == 1)))
        rc = keel_buf_append(out, m->value, m->value_len);
    return rc;
}

int keel_apmsg_decode(const uint8_t *p, size_t n, keel_apmsg_t *m, keel_errmsg_t *msg)
{
    keel_rd_t r;
    keel_rd_init(&r, p, n);
    memset(m, 0, sizeof(*m));
    m->type = keel_rd_u8(&r);
    m->req = keel_rd_u64(&r);
    if (r.bad)
        return keel_errf(msg, KEEL_EPROTO, "ap message: truncated header");
    switch (m->type) {
    case KEEL_APMSG_WRITE:
    case KEEL_APMSG_READ:
        m->key_len = keel_rd_u16(&r);
        if (!r.bad && m->key_len > KEEL_APMSG_KEY_BYTES_MAX)
            return keel_errf(msg, KEEL_ETOOBIG, "ap message: key of %zu bytes (max %u)", m->key_len,
                             KEEL_APMSG_KEY_BYTES_MAX);
        m->key = keel_rd_bytes(&r, m->key_len);
        if (r.bad)
            return keel_errf(msg, KEEL_EPROTO, "ap message: truncated key");
        if (m->type == KEEL_APMSG_WRITE) {
            if (r.left == 0)
                return keel_errf(msg, KEEL_EPROTO, "ap message: write without a value");
            m->value = r.p, m->value_len = r.left;
            return 0;
        }
        break;
    case KEEL_APMSG_ACK:
    case KEEL_APMSG_READ_REPLY:
        m->status = keel_rd_u8(&r);
        if (r.bad)
            return keel_errf(msg, KEEL_EPROTO, "ap message: truncated status");
        if (m->status > 1)
            return keel_errf(msg, KEEL_EPROTO, "ap message: unknown status %u", m->status);
        if (m->type == KEEL_APMSG_READ_REPLY && m->status == 1) {
            if (r.left == 0)
                return keel_errf(msg, KEEL_EPROTO, "ap message: reply without its value");
            m->value = r.p, m->value_len = r.left;
            return 0;
        }
        break;
    case KEEL_APMSG_TREE:
    case KEEL_APMSG_PULL:
        if (r.left == 0)
            return keel_errf(msg, KEEL_EPROTO, "ap message: empty %s",
                             m->type == KEEL_APMSG_TREE ? "tree" : "pull");
        m->value = r.p, m->value_len = r.left;
        return 0;
    default:
        return keel_errf(msg, KEEL_EPROTO, "ap message: unknown type %u", m->type);
    }
    if (r.left)
        return keel_errf(msg, KEEL_EPROTO, "ap message: %zu trailing bytes", r.left);
    return 0;
}
