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
 *   FORWARD     u8 10 | u64 req | u16 key_len | key | u8 what | u8 level | u16 ctx_len | ctx |
 *               arg                                           a client's write that a node
 *                                                             not a home of key hands to a
 *                                                             home to coordinate (what: the
 *                                                             command, KEEL_APMSG_FWD_*; level:
 *                                                             W, 1..9; ctx: a version vector's
 *                                                             encoding, 0 bytes for none; arg:
 *                                                             the value, delta or member, to
 *                                                             the end, maybe empty; none for
 *                                                             DEL)
 *   READ_STANDIN u8 12 | u64 req | u64 home | u16 key_len | key
 *                                                             sloppy read: your copy of key,
 *                                                             if you hold a hint for home
 *                                                             (answered by READ_REPLY; no
 *                                                             answer without such a hint)
 *   FORWARD_REPLY u8 11 | u64 req | u8 status | value         the answer: status 0: value is
 *                                                             one byte, the homes that stored
 *                                                             it; 1: value is the error line
 *                                                             (1..KEEL_APMSG_ERROR_BYTES_MAX
 *                                                             bytes, no CR or LF)
 *
 * value is a core/apval.h encoding, decoded by the receiver (a FORWARD's is the command's
 * argument, a FORWARD_REPLY's its answer); TREE and PULL carry their
 * bytes in value too (the receiver checks their sizes against its tree). req 0 on a WRITE asks for
 * no ACK (read repair, anti-entropy). decode() is strict: known type, key within
 * KEEL_APMSG_KEY_BYTES_MAX, known status, nothing missing, no trailing bytes (a WRITE's,
 * HINTED_WRITE's or HANDOFF's value runs to the end). Decoded key and value point into the input.
 */
#define KEEL_APMSG_KEY_BYTES_MAX 1024u
#define KEEL_APMSG_CTX_BYTES_MAX 1024u  /* a FORWARD's context (vclock.h's encoding is smaller) */
#define KEEL_APMSG_ERROR_BYTES_MAX 512u /* a FORWARD_REPLY's error line */
#define KEEL_APMSG_LEVEL_MAX 9u         /* a FORWARD's W */

/* A FORWARD's command. */
enum {
    KEEL_APMSG_FWD_PUT = 1,
    KEEL_APMSG_FWD_DEL,
    KEEL_APMSG_FWD_INCR,
    KEEL_APMSG_FWD_SADD,
    KEEL_APMSG_FWD_SREM,
    KEEL_APMSG_FWD_MAX = KEEL_APMSG_FWD_SREM
};

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
    KEEL_APMSG_FORWARD = 10,
    KEEL_APMSG_FORWARD_REPLY = 11,
    KEEL_APMSG_READ_STANDIN = 12,
} keel_apmsg_type_t;

typedef struct keel_apmsg {
    uint8_t type;
    uint64_t req;
    uint8_t status;
    uint64_t home; /* HINTED_WRITE: the member the write is meant for; READ_STANDIN: read for */
    uint8_t what;  /* FORWARD: KEEL_APMSG_FWD_* */
    uint8_t level; /* FORWARD: W */
    const uint8_t *ctx;
    size_t ctx_len; /* FORWARD: the context (0: none) */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
} keel_apmsg_t;

int keel_apmsg_encode(keel_buf_t *out, const keel_apmsg_t *m);
int keel_apmsg_decode(const uint8_t *p, size_t n, keel_apmsg_t *m, keel_errmsg_t *msg);

#endif
