/* fuzz_peer.c - libFuzzer target: peer message payload decoders, and the membership change a
   FWD_CONF frame carries (server/node.h). */
#include "proto/peer.h"
#include "server/node.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static keel_peer_scratch_t scratch;
    if (size < 1)
        return 0;
    keel_raft_msg_t m;
    keel_peer_fwd_t f;
    keel_peer_hello_t h;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0:
        if (keel_peer_decode_raft(p, n, &m, &scratch) == 0) {
            /* re-encoding a decoded message must work */
            keel_buf_t b;
            keel_buf_init(&b, 0);
            if (keel_peer_encode_raft(&b, &m) != 0)
                abort();
            keel_buf_free(&b);
        }
        break;
    case 1:
        (void)keel_peer_decode_fwd((keel_peer_type_t)(data[0] % 10), p, n, &f);
        break;
    case 2: {
        /* a decoded change encodes back to the same bytes */
        keel_node_conf_change_t c;
        uint8_t back[KEEL_NODE_CONF_BYTES_MAX];
        if (keel_node_conf_decode(p, n, &c) == 0 &&
            (keel_node_conf_encode(&c, back) != n || memcmp(back, p, n) != 0))
            abort();
        break;
    }
    case 3: {
        /* the result a FWD_REPLY carries back for a membership change */
        static keel_node_conf_result_t res;
        (void)keel_node_conf_result_decode(p, n, &res);
        break;
    }
    default:
        (void)keel_peer_decode_hello(p, n, &h);
    }
    return 0;
}
