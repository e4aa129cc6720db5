/* apmsg.c - AP keyspace replica messages (see apmsg.h). */
#include "proto/apmsg.h"

#include "base/bytes.h"

#include <string.h>

/* Types whose header has a key: WRITE, READ, HINTED_WRITE, HANDOFF, HANDOFF_ACK, FORWARD,
 * READ_STANDIN. */
static int has_key(uint8_t t)
{
    return t == KEEL_APMSG_WRITE || t == KEEL_APMSG_READ || t == KEEL_APMSG_HINTED_WRITE ||
           t == KEEL_APMSG_HANDOFF || t == KEEL_APMSG_HANDOFF_ACK || t == KEEL_APMSG_FORWARD ||
           t == KEEL_APMSG_READ_STANDIN;
}

/* Types whose header names a home after the req. */
static int has_home(uint8_t t)
{
    return t == KEEL_APMSG_HINTED_WRITE || t == KEEL_APMSG_READ_STANDIN;
}

/* Types whose value runs to the end after the key. */
static int keyed_value(uint8_t t)
{
    return t == KEEL_APMSG_WRITE || t == KEEL_APMSG_HINTED_WRITE || t == KEEL_APMSG_HANDOFF ||
           t == KEEL_APMSG_FORWARD;
}

/* A FORWARD_REPLY's value: one byte (the count) for status 0, else an error line. */
static int reply_value_ok(uint8_t status, const uint8_t *v, size_t n)
{
    if (status == 0)
        return n == 1;
    if (n == 0 || n > KEEL_APMSG_ERROR_BYTES_MAX)
        return 0;
    return memchr(v, '\r', n) == NULL && memchr(v, '\n', n) == NULL;
}

int keel_apmsg_encode(keel_buf_t *out, const keel_apmsg_t *m)
{
    uint8_t h[19];
    h[0] = m->type;
    keel_put_u64(h + 1, m->req);
    size_t hl = 9;
    int blob = m->type == KEEL_APMSG_TREE || m->type == KEEL_APMSG_PULL;
    if (blob) {
        hl = 9;
    } else if (has_key(m->type)) {
        if (m->key_len > KEEL_APMSG_KEY_BYTES_MAX)
            return KEEL_ETOOBIG;
        if (has_home(m->type)) {
            keel_put_u64(h + 9, m->home);
            hl = 17;
        }
        keel_put_u16(h + hl, (uint16_t)m->key_len);
        hl += 2;
    } else {
        h[9] = m->status;
        hl = 10;
    }
    if (m->type == KEEL_APMSG_FORWARD &&
        (m->ctx_len > KEEL_APMSG_CTX_BYTES_MAX || m->what < 1 || m->what > KEEL_APMSG_FWD_MAX ||
         m->level < 1 || m->level > KEEL_APMSG_LEVEL_MAX))
        return KEEL_EINVAL;
    if (m->type == KEEL_APMSG_FORWARD_REPLY && !reply_value_ok(m->status, m->value, m->value_len))
        return KEEL_EINVAL;
    int rc = keel_buf_append(out, h, hl);
    if (rc == 0 && m->key_len && has_key(m->type))
        rc = keel_buf_append(out, m->key, m->key_len);
    if (rc == 0 && m->type == KEEL_APMSG_FORWARD) {
        uint8_t f[4] = {m->what, m->level};
        keel_put_u16(f + 2, (uint16_t)m->ctx_len);
        rc = keel_buf_append(out, f, sizeof(f));
        if (rc == 0 && m->ctx_len)
            rc = keel_buf_append(out, m->ctx, m->ctx_len);
    }
    if (rc == 0 && m->value_len &&
        (keyed_value(m->type) || blob || (m->type == KEEL_APMSG_READ_REPLY && m->status == 1) ||
         m->type == KEEL_APMSG_FORWARD_REPLY))
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
    case KEEL_APMSG_HINTED_WRITE:
    case KEEL_APMSG_HANDOFF:
    case KEEL_APMSG_HANDOFF_ACK:
    case KEEL_APMSG_FORWARD:
    case KEEL_APMSG_READ_STANDIN:
        if (has_home(m->type)) {
            m->home = keel_rd_u64(&r);
            if (r.bad)
                return keel_errf(msg, KEEL_EPROTO, "ap message: truncated hint");
            if (m->home == 0)
                return keel_errf(msg, KEEL_EPROTO, "ap message: hint for member 0");
        }
        m->key_len = keel_rd_u16(&r);
        if (!r.bad && m->key_len > KEEL_APMSG_KEY_BYTES_MAX)
            return keel_errf(msg, KEEL_ETOOBIG, "ap message: key of %zu bytes (max %u)", m->key_len,
                             KEEL_APMSG_KEY_BYTES_MAX);
        m->key = keel_rd_bytes(&r, m->key_len);
        if (r.bad)
            return keel_errf(msg, KEEL_EPROTO, "ap message: truncated key");
        if (m->type == KEEL_APMSG_FORWARD) {
            m->what = keel_rd_u8(&r);
            m->level = keel_rd_u8(&r);
            m->ctx_len = keel_rd_u16(&r);
            if (!r.bad && m->ctx_len > KEEL_APMSG_CTX_BYTES_MAX)
                return keel_errf(msg, KEEL_ETOOBIG, "ap message: context of %zu bytes (max %u)",
                                 m->ctx_len, KEEL_APMSG_CTX_BYTES_MAX);
            m->ctx = keel_rd_bytes(&r, m->ctx_len);
            if (r.bad)
                return keel_errf(msg, KEEL_EPROTO, "ap message: truncated forward");
            if (m->what < 1 || m->what > KEEL_APMSG_FWD_MAX)
                return keel_errf(msg, KEEL_EPROTO, "ap message: unknown forwarded command %u",
                                 m->what);
            if (m->level < 1 || m->level > KEEL_APMSG_LEVEL_MAX)
                return keel_errf(msg, KEEL_EPROTO, "ap message: W of %u", m->level);
            if (m->ctx_len == 0)
                m->ctx = NULL;
            /* the argument runs to the end; DEL has none, the others one, which may be empty
               (a PUT of "", an SADD of "": the home answers as it would its own client) */
            if (m->what == KEEL_APMSG_FWD_DEL && r.left != 0)
                return keel_errf(msg, KEEL_EPROTO, "ap message: forwarded DEL with an argument");
            m->value = r.left ? r.p : NULL, m->value_len = r.left;
            return 0;
        }
        if (keyed_value(m->type)) {
            if (r.left == 0)
                return keel_errf(msg, KEEL_EPROTO, "ap message: write without a value");
            m->value = r.p, m->value_len = r.left;
            return 0;
        }
        break;
    case KEEL_APMSG_ACK:
    case KEEL_APMSG_READ_REPLY:
    case KEEL_APMSG_FORWARD_REPLY:
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
        if (m->type == KEEL_APMSG_FORWARD_REPLY) {
            if (!reply_value_ok(m->status, r.p, r.left))
                return keel_errf(msg, KEEL_EPROTO, "ap message: a forward's reply of %zu bytes",
                                 r.left);
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
