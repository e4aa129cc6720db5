/* peer.h - keel server peer messages: Raft traffic and follower-to-leader forwarding. */
#ifndef KEEL_PROTO_PEER_H
#define KEEL_PROTO_PEER_H

#include "base/buf.h"
#include "base/err.h"
#include "core/raft/raft.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Each peer message is one frame (proto/frame.h) whose type byte is a
 * keel_peer_type_t. Payloads are little-endian:
 *
 *   HELLO        u64 cluster_id | u64 from | u64 to      first frame on every connection
 *   RAFT         u8 msg type | u64 from,to,term,index,log_term,commit,ctx,hint_index,
 *                hint_term | u8 reject | u8 transfer | u8 last | u32 entries_n |
 *                entries_n x (u64 term | u64 index | u32 type | u32 len | len bytes) |
 *                SNAPSHOT only: u8 has_conf | [u32 voters_n | u32 learners_n |
 *                (voters_n + learners_n) x u64 id | u32 ctx_len | ctx] | u32 data_len |
 *                data
 *   FWD_PROPOSE  u64 req_id | the command entry bytes (the state machine's format)
 *   FWD_REPLY    u64 req_id | u8 status | reply bytes (RESP, for status OK)
 *   FWD_READ     u64 req_id
 *   FWD_READ_OK  u64 req_id | u8 status | u64 read index
 *   PUBLISH      u32 channel_len | channel | message
 *   REMOVED      u64 member id    the receiver was removed by a committed configuration
 *   FWD_CONF     u64 req_id | a membership change (server/node.h's encoding); answered
 *                with FWD_REPLY like FWD_PROPOSE
 *   AP           one AP keyspace message (proto/apmsg.h), carried as it is
 *
 * Every frame goes from the connecting node to the accepting one, except REMOVED, which
 * a member may also write back on a connection that a removed node opened to it.
 * A follower forwards a client's write to the leader with FWD_PROPOSE and
 * relays the FWD_REPLY; for a linearizable read it asks the leader for a
 * ReadIndex with FWD_READ, waits until it has applied that index, and serves
 * the read from its own state (the etcd follower-read scheme).
 */
typedef enum keel_peer_type {
    KEEL_PEER_HELLO = 1,
    KEEL_PEER_RAFT = 2,
    KEEL_PEER_FWD_PROPOSE = 3,
    KEEL_PEER_FWD_REPLY = 4,
    KEEL_PEER_FWD_READ = 5,
    KEEL_PEER_FWD_READ_OK = 6,
    KEEL_PEER_PUBLISH = 7,
    KEEL_PEER_REMOVED = 8,
    KEEL_PEER_FWD_CONF = 9,
    KEEL_PEER_AP = 10,
} keel_peer_type_t;

typedef enum keel_peer_status {
    KEEL_PEER_OK = 0,
    KEEL_PEER_NOT_LEADER = 1, /* the receiver is not (or no longer) the leader: retry */
    KEEL_PEER_FAILED = 2,     /* the leader could not take it (full, too big): reply error */
} keel_peer_status_t;

/* Entries per RAFT message a decoder accepts (the sender's msg_entries_max is lower). */
#define KEEL_PEER_ENTRIES_MAX 65536u

/* What a decoded RAFT message points into besides its payload; reused across calls. */
typedef struct keel_peer_scratch {
    keel_raft_entry_t *entries; /* grown with realloc; free with keel_peer_scratch_free */
    size_t entries_cap;
    keel_raft_conf_t conf;
} keel_peer_scratch_t;

void keel_peer_scratch_free(keel_peer_scratch_t *s);

typedef struct keel_peer_hello {
    uint64_t cluster_id, from, to;
} keel_peer_hello_t;

typedef struct keel_peer_fwd {
    uint64_t req_id;
    uint8_t status;
    uint64_t index;       /* FWD_READ_OK */
    const uint8_t *bytes; /* FWD_PROPOSE entry / FWD_REPLY reply, borrowed from the payload */
    size_t bytes_len;
} keel_peer_fwd_t;

int keel_peer_encode_hello(keel_buf_t *out, const keel_peer_hello_t *h);
int keel_peer_decode_hello(const uint8_t *p, size_t n, keel_peer_hello_t *h);

/* Appends one whole RAFT frame for m. */
int keel_peer_encode_raft(keel_buf_t *out, const keel_raft_msg_t *m);
/*
 * Decodes a RAFT payload into m. Entries and a snapshot's configuration go into
 * the scratch; entry and chunk data point into p. So m is valid while p and the
 * scratch are. KEEL_EPROTO on any malformed field.
 */
int keel_peer_decode_raft(const uint8_t *p, size_t n, keel_raft_msg_t *m,
                          keel_peer_scratch_t *scratch);

/* FWD_* frames: type says which fields are written/read. */
int keel_peer_encode_fwd(keel_buf_t *out, keel_peer_type_t type, const keel_peer_fwd_t *f);
int keel_peer_decode_fwd(keel_peer_type_t type, const uint8_t *p, size_t n, keel_peer_fwd_t *f);

/*
 * PUBLISH  u32 channel_len | channel | message    (pub/sub, broadcast to every peer as the
 * Redis Cluster bus does: at most once, not through the log). Decoded fields borrow p.
 */
int keel_peer_encode_publish(keel_buf_t *out, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                             size_t msg_len);
int keel_peer_decode_publish(const uint8_t *p, size_t n, const uint8_t **ch, size_t *ch_len,
                             const uint8_t **msg, size_t *msg_len);

/* AP: one whole frame around an AP keyspace message (proto/apmsg.h). */
int keel_peer_encode_ap(keel_buf_t *out, const uint8_t *msg, size_t len);

/* REMOVED: tells member id it is no longer in the (committed) configuration. */
int keel_peer_encode_removed(keel_buf_t *out, uint64_t id);
int keel_peer_decode_removed(const uint8_t *p, size_t n, uint64_t *id);

#endif
