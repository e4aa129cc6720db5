/* apmsg.h - the AP keyspace's replica messages between keel server nodes (inside PEER_AP frames).
 */
#ifndef KEEL_PROTO_APMSG_H
#define KEEL_PROTO_APMSG_H

#include "base/buf.h"
#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Little-endian, one message per frame:
 *
 *   WRITE       u8 1 | u64 req | u16 key_len | key | value   store the merge of value
 *   ACK         u8 2 | u64 req | u8 status                   0: stored durably, 1: refused
 *   READ        u8 3 | u64 req | u16 key_len | key
 *   READ_REPLY  u8 4 | u64 req | u8 status | value           status 0: no such key (no
 *                                                             value), 1: value follows
 *   TREE        u8 5 | u64 req | nodes                       anti-entropy: the sender's
 *                                                             Merkle tree (core/merkle.h)
 *   PULL        u8 6 | u64 req | leaves                      the differing leaves (u32 each):
 *                                                             send me your keys in them
 *   HINTED_WRITE u8 7 | u64 req | u64 home | u16 key_len | key | value
 *                                                             sloppy quorum: store it, and
 *                                                             hold a hint to hand it to home
 *   HANDOFF     u8 8 | u64 req | u16 key_len | key | value   a fallback hands a hinted key
 *                                                             to its home (req: the hint's
 *                                                             version)
 *   HANDOFF_ACK u8 9 | u64 req | u16 key_len | key           the home stored it durably
 *
 * value is a core/apval.h encoding, decoded by the receiver; TREE and PULL carry their
 * bytes in value too (the receiver checks their sizes against its tree). req 0 on a WRITE asks for
 * no ACK (read repair, anti-entropy). decode() is strict: known type, key within
 * KEEL_APMSG_KEY_BYTES_MAX, known status, nothing missing, no trailing bytes (a WRITE's,
 * HINTED_WRITE's or HANDOFF's value runs to the end). Decoded key and value point into the input.
 */
#define KEEL_APMSG_KEY_BYTES_MAX 1024u

typedef enum keel_apmsg_type {
    KEEL_APMSG_WRITE = 1,
    KEEL_APMSG_ACK = 2,
    KEEL_APMSG_READ = 3,
    KEEL_APMSG_READ_REPLY = 4,
    KEEL_APMSG_TREE = 5,
    KEEL_APMSG_PULL = 6,
    KEEL_APMSG_HINTED_WRITE = 7,
    KEEL_APMSG_HANDOFF = 8,
    KEEL_APMSG_HANDOFF_ACK = 9,
} keel_apmsg_type_t;

typedef struct keel_apmsg {
    uint8_t type;
    uint64_t req;
    uint8_t status;
    uint64_t home; /* HINTED_WRITE: the member the write is meant for */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
} keel_apmsg_t;

int keel_apmsg_encode(keel_buf_t *out, const keel_apmsg_t *m);
int keel_apmsg_decode(const uint8_t *p, size_t n, keel_apmsg_t *m, keel_errmsg_t *msg);

#endif
