/* test_peer.c - peer message codec: round trips, and every truncation or bad field rejected. */
#include "base/rand.h"
#include "ktest.h"
#include "proto/frame.h"
#include "proto/peer.h"

#include <stdlib.h>

static keel_peer_scratch_t scratch;

/* Decodes the single frame in b and returns its payload. */
static const uint8_t *one_frame(keel_buf_t *b, uint8_t *type, size_t *n)
{
    keel_frame_decoder_t d;
    keel_frame_t f;
    size_t used;
    KT_EQ_INT(keel_frame_decoder_init(&d, 0, NULL), 0);
    KT_EQ_INT(keel_frame_decode(&d, keel_buf_rptr(b), keel_buf_unread(b), &f, &used, NULL), 0);
    KT_EQ_INT(used, keel_buf_unread(b));
    *type = f.type;
    *n = f.payload_len;
    return f.payload;
}

static void raft_messages_round_trip_with_entries(void)
{
    uint8_t d1[] = "set-a", d2[] = "";
    keel_raft_entry_t ents[3] = {{5, 10, 0, 5, d1}, {5, 11, 1, 0, NULL}, {6, 12, 0, 1, d2}};
    keel_raft_msg_t m = {.type = KEEL_RAFT_MSG_APPEND,
                         .from = 1,
                         .to = 3,
                         .term = 6,
                         .index = 9,
                         .log_term = 5,
                         .commit = 8,
                         .ctx = 77,
                         .hint_index = 4,
                         .hint_term = 2,
                         .reject = 1,
                         .transfer = 0,
                         .entries = ents,
                         .entries_n = 3};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_peer_encode_raft(&b, &m), 0);
    uint8_t type;
    size_t n;
    const uint8_t *p = one_frame(&b, &type, &n);
    KT_EQ_INT(type, KEEL_PEER_RAFT);
    keel_raft_msg_t g;
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), 0);
    KT_EQ_INT(g.type, m.type);
    KT_EQ_U64(g.from, 1);
    KT_EQ_U64(g.to, 3);
    KT_EQ_U64(g.term, 6);
    KT_EQ_U64(g.index, 9);
    KT_EQ_U64(g.log_term, 5);
    KT_EQ_U64(g.commit, 8);
    KT_EQ_U64(g.ctx, 77);
    KT_EQ_U64(g.hint_index, 4);
    KT_EQ_U64(g.hint_term, 2);
    KT_EQ_INT(g.reject, 1);
    KT_EQ_INT(g.entries_n, 3);
    KT_EQ_U64(g.entries[0].index, 10);
    KT_EQ_INT(g.entries[0].len, 5);
    KT_EQ_MEM(g.entries[0].data, "set-a", 5);
    KT_EQ_INT(g.entries[1].type, 1);
    KT_CHECK(g.entries[1].data == NULL);
    KT_EQ_U64(g.entries[2].term, 6);
    /* every truncation is rejected */
    for (size_t cut = 0; cut < n; cut++)
        KT_EQ_INT(keel_peer_decode_raft(p, cut, &g, &scratch), KEEL_EPROTO);
    keel_buf_free(&b);
}

static void raft_decoder_rejects_bad_fields(void)
{
    keel_raft_entry_t ents[2] = {{1, 1, 0, 0, NULL}, {1, 2, 0, 0, NULL}};
    keel_raft_msg_t m = {.type = KEEL_RAFT_MSG_APPEND, .entries = ents, .entries_n = 2};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_peer_encode_raft(&b, &m), 0);
    uint8_t type;
    size_t n;
    const uint8_t *p0 = one_frame(&b, &type, &n);
    uint8_t p[256];
    memcpy(p, p0, n);
    keel_raft_msg_t g;
    p[0] = 0; /* unknown message type */
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), KEEL_EPROTO);
    p[0] = KEEL_RAFT_MSG_APPEND;
    p[73] = 2; /* reject must be 0 or 1 */
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), KEEL_EPROTO);
    p[73] = 0;
    p[75] = 2; /* last must be 0 or 1 */
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), KEEL_EPROTO);
    p[75] = 0;
    p[76] = 0xff; /* entry count far beyond the bytes present */
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), KEEL_EPROTO);
    p[76] = 2;
    p[80 + 24 + 8] = 7; /* second entry's index not contiguous */
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), KEEL_EPROTO);
    p[80 + 24 + 8] = 2;
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), 0);
    uint8_t longer[257];
    memcpy(longer, p, n);
    longer[n] = 0; /* trailing garbage */
    KT_EQ_INT(keel_peer_decode_raft(longer, n + 1, &g, &scratch), KEEL_EPROTO);
    keel_buf_free(&b);
}

static void snapshot_chunks_round_trip_with_their_configuration(void)
{
    static keel_raft_conf_t conf = {
        .voters = {1, 2, 3}, .voters_n = 3, .learners = {4}, .learners_n = 1, .ctx_len = 3};
    memcpy(conf.ctx, "abc", 3);
    keel_raft_msg_t m = {.type = KEEL_RAFT_MSG_SNAPSHOT,
                         .from = 1,
                         .to = 4,
                         .term = 3,
                         .index = 500,
                         .log_term = 2,
                         .ctx = 1048576,
                         .last = 1,
                         .data = (const uint8_t *)"chunk",
                         .data_len = 5,
                         .conf = &conf};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_peer_encode_raft(&b, &m), 0);
    uint8_t type;
    size_t n;
    const uint8_t *p = one_frame(&b, &type, &n);
    keel_raft_msg_t g;
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), 0);
    KT_EQ_INT(g.type, KEEL_RAFT_MSG_SNAPSHOT);
    KT_EQ_U64(g.index, 500);
    KT_EQ_U64(g.ctx, 1048576);
    KT_EQ_INT(g.last, 1);
    KT_EQ_INT(g.data_len, 5);
    KT_EQ_MEM(g.data, "chunk", 5);
    KT_CHECK(g.conf != NULL);
    KT_EQ_INT(g.conf->voters_n, 3);
    KT_EQ_U64(g.conf->voters[2], 3);
    KT_EQ_INT(g.conf->learners_n, 1);
    KT_EQ_U64(g.conf->learners[0], 4);
    KT_EQ_INT(g.conf->ctx_len, 3);
    KT_EQ_MEM(g.conf->ctx, "abc", 3);
    for (size_t cut = 0; cut < n; cut++)
        KT_EQ_INT(keel_peer_decode_raft(p, cut, &g, &scratch), KEEL_EPROTO);
    m.conf = NULL; /* a chunk without a configuration */
    keel_buf_reset(&b);
    KT_EQ_INT(keel_peer_encode_raft(&b, &m), 0);
    p = one_frame(&b, &type, &n);
    KT_EQ_INT(keel_peer_decode_raft(p, n, &g, &scratch), 0);
    KT_CHECK(g.conf == NULL);
    keel_buf_free(&b);
}

static void removed_frame_round_trips_and_refuses_a_bad_length(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_peer_encode_removed(&b, 42), 0);
    uint8_t type;
    size_t n;
    const uint8_t *p = one_frame(&b, &type, &n);
    KT_EQ_INT(type, KEEL_PEER_REMOVED);
    uint64_t id = 0;
    KT_EQ_INT(keel_peer_decode_removed(p, n, &id), 0);
    KT_EQ_U64(id, 42);
    KT_EQ_INT(keel_peer_decode_removed(p, n - 1, &id), KEEL_EPROTO);
    keel_buf_free(&b);
}

static void hello_and_forward_messages_round_trip(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    keel_peer_hello_t h = {0xabcdef, 2, 3}, hg;
    KT_EQ_INT(keel_peer_encode_hello(&b, &h), 0);
    uint8_t type;
    size_t n;
    const uint8_t *p = one_frame(&b, &type, &n);
    KT_EQ_INT(type, KEEL_PEER_HELLO);
    KT_EQ_INT(keel_peer_decode_hello(p, n, &hg), 0);
    KT_EQ_U64(hg.cluster_id, 0xabcdef);
    KT_EQ_INT(keel_peer_decode_hello(p, n - 1, &hg), KEEL_EPROTO);

    const keel_peer_type_t types[] = {KEEL_PEER_FWD_PROPOSE, KEEL_PEER_FWD_REPLY,
                                      KEEL_PEER_FWD_READ, KEEL_PEER_FWD_READ_OK,
                                      KEEL_PEER_FWD_CONF};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        keel_buf_reset(&b);
        keel_peer_fwd_t f = {.req_id = 99 + i,
                             .status = KEEL_PEER_NOT_LEADER,
                             .index = 1234,
                             .bytes = (const uint8_t *)"+OK\r\n",
                             .bytes_len = 5};
        KT_EQ_INT(keel_peer_encode_fwd(&b, types[i], &f), 0);
        p = one_frame(&b, &type, &n);
        KT_EQ_INT(type, types[i]);
        keel_peer_fwd_t g;
        KT_EQ_INT(keel_peer_decode_fwd(types[i], p, n, &g), 0);
        KT_EQ_U64(g.req_id, 99 + i);
        if (types[i] == KEEL_PEER_FWD_REPLY || types[i] == KEEL_PEER_FWD_READ_OK)
            KT_EQ_INT(g.status, KEEL_PEER_NOT_LEADER);
        if (types[i] == KEEL_PEER_FWD_READ_OK)
            KT_EQ_U64(g.index, 1234);
        if (types[i] == KEEL_PEER_FWD_PROPOSE || types[i] == KEEL_PEER_FWD_REPLY ||
            types[i] == KEEL_PEER_FWD_CONF) {
            KT_EQ_INT(g.bytes_len, 5);
            KT_EQ_MEM(g.bytes, "+OK\r\n", 5);
        }
        KT_EQ_INT(keel_peer_decode_fwd(types[i], p, 7, &g), KEEL_EPROTO);
    }
    keel_buf_free(&b);
}

static void publish_frames_round_trip_and_refuse_truncation(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_peer_encode_publish(&b, (const uint8_t *)"news", 4, (const uint8_t *)"hi!", 3),
              0);
    uint8_t type;
    size_t n;
    const uint8_t *p = one_frame(&b, &type, &n);
    KT_EQ_INT(type, KEEL_PEER_PUBLISH);
    const uint8_t *ch, *msg;
    size_t chl, msgl;
    KT_EQ_INT(keel_peer_decode_publish(p, n, &ch, &chl, &msg, &msgl), 0);
    KT_EQ_INT(chl, 4);
    KT_EQ_MEM(ch, "news", 4);
    KT_EQ_INT(msgl, 3);
    KT_EQ_MEM(msg, "hi!", 3);
    for (size_t cut = 0; cut < 8; cut++)
        KT_EQ_INT(keel_peer_decode_publish(p, cut, &ch, &chl, &msg, &msgl), KEEL_EPROTO);
    keel_buf_free(&b);
}

static void random_bytes_never_crash_the_decoders(void)
{
    keel_rand_t r;
    keel_rand_seed(&r, 3);
    KT_SEED(3);
    uint8_t buf[512];
    for (int i = 0; i < 200000; i++) {
        size_t n = keel_rand_below(&r, sizeof(buf));
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)keel_rand_u64(&r);
        if (n > 0)
            buf[0] = (uint8_t)(1 + keel_rand_below(&r, 11));
        keel_raft_msg_t g;
        keel_peer_fwd_t f;
        (void)keel_peer_decode_raft(buf, n, &g, &scratch);
        (void)keel_peer_decode_fwd((keel_peer_type_t)(1 + i % 6), buf, n, &f);
    }
}

int main(void)
{
    KT_RUN(raft_messages_round_trip_with_entries);
    KT_RUN(raft_decoder_rejects_bad_fields);
    KT_RUN(snapshot_chunks_round_trip_with_their_configuration);
    KT_RUN(hello_and_forward_messages_round_trip);
    KT_RUN(publish_frames_round_trip_and_refuse_truncation);
    KT_RUN(random_bytes_never_crash_the_decoders);
    KT_RUN(removed_frame_round_trips_and_refuses_a_bad_length);
    keel_peer_scratch_free(&scratch);
    return kt_done();
}
