/* fuzz_twopc.c - libFuzzer target: 2PC log records (core/twopc) - decode, re-encode, replay a
 * log into a recovering coordinator and resume it. */
#include "core/twopc.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: a log as records, each prefixed by a u16 little-endian length. Properties: the
 * decoder never reads beyond a record; a record it accepts re-encodes to exactly its bytes;
 * replay never changes the instance when it refuses a record; a replayed log resumes to a
 * legal action (no assertion in the core fires) and a final state only after END.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_twopc_coord_t c;
    keel_twopc_config_t cfg = keel_twopc_config_default();
    int rc = keel_twopc_coord_init_recover(&c, &cfg, "fz", 1, NULL);
    assert(rc == 0);
    size_t off = 0;
    for (int k = 0; k < 8 && off + 2 <= size; k++) {
        size_t n = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        if (n > size - off)
            n = size - off;
        const uint8_t *rec = data + off;
        off += n;
        keel_twopc_rec_t r;
        if (keel_twopc_rec_decode(rec, n, &r, NULL) == 0) {
            static uint8_t again[KEEL_TWOPC_RECORD_BYTES_MAX];
            int m = keel_twopc_rec_encode(&r, again, sizeof(again));
            assert(m == (int)n && memcmp(again, rec, n) == 0);
        }
        keel_twopc_state_t before = c.state;
        uint32_t seq = c.seq;
        if (keel_twopc_coord_replay(&c, rec, n, NULL) != 0)
            assert(c.state == before && c.seq == seq);
    }
    keel_twopc_coord_update_t u;
    rc = keel_twopc_coord_resume(&c, 1000, &u);
    if (rc == 0 && keel_twopc_state_final(c.state))
        assert(u.action == KEEL_TWOPC_ACT_FINISH);
    else if (rc == 0)
        assert(u.action == KEEL_TWOPC_ACT_LOG || u.action == KEEL_TWOPC_ACT_SEND);
    return 0;
}
