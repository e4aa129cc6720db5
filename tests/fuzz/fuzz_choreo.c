/* fuzz_choreo.c - libFuzzer target: a choreographed saga's event as it arrives from a stream
 * entry's data field (core/choreo.c). Properties: the decoder never reads past its input;
 * whatever it accepts has valid names and re-encodes to exactly the same bytes. */
#include "core/choreo.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[KEEL_CHOREO_EVENT_BYTES_MAX];
    keel_choreo_event_t ev;
    keel_errmsg_t msg;
    if (keel_choreo_event_decode(data, size, &ev, &msg) != 0)
        return 0;
    assert(keel_choreo_type_valid(ev.type) && keel_choreo_saga_valid(ev.saga));
    assert(ev.data >= data && ev.data + ev.data_len == data + size);
    size_t n = keel_choreo_event_encode(ev.type, ev.saga, ev.data, ev.data_len, out, sizeof(out));
    assert(n == size && memcmp(out, data, size) == 0);
    return 0;
}
