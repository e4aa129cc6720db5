/* fuzz_peer.c - libFuzzer target: peer message payload decoders. */
#include "proto/peer.h"

#include <stdlib.h>

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
    switch (data[0] % 3) {
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
        (void)keel_peer_decode_fwd((keel_peer_type_t)(data[0] % 8), p, n, &f);
        break;
    default:
        (void)keel_peer_decode_hello(p, n, &h);
    }
    return 0;
}
