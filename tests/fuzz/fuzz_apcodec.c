/* fuzz_apcodec.c - libFuzzer target: AP contexts, sibling sets and CRDT states (strict decoding).
 */
#include "base/buf.h"
#include "core/apobj.h"
#include "core/apval.h"
#include "core/crdt.h"
#include "core/vclock.h"
#include "proto/apmsg.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Byte 0 picks the decoder (context, object, G-counter, PN-counter, LWW,
 * OR-set, a tagged value as the replica store logs it, a replica message
 * between nodes); the rest is its input, as a client or a
 * peer could send it. Properties: a decoder never reads past its input and never leaks; whatever it
 * accepts re-encodes to exactly the same bytes (the encodings are canonical); merging an accepted
 * state with itself changes nothing; a context accepted from a client can be used for a write.
 */
static void same_bytes(const keel_buf_t *e, const uint8_t *d, size_t n)
{
    assert(e->len == n);
    assert(n == 0 || memcmp(e->data, d, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    keel_errmsg_t msg;
    keel_buf_t e;
    keel_buf_init(&e, 0);
    switch (data[0] % 8) {
    case 0: {
        keel_vv_t v;
        if (keel_vv_decode_all(d, n, &v, &msg) == 0) {
            assert(keel_vv_encode(&v, &e) == 0);
            same_bytes(&e, d, n);
            keel_apobj_t o;
            keel_apobj_init(&o);
            int rc = keel_apobj_put(&o, &v, 1, 0, "x", 1, NULL);
            assert(rc == 0 || rc == KEEL_EFULL);
            keel_apobj_free(&o);
        }
        break;
    }
    case 1: {
        keel_apobj_t o, c;
        if (keel_apobj_decode(d, n, &o, &msg) == 0) {
            assert(keel_apobj_encode(&o, &e) == 0);
            same_bytes(&e, d, n);
            assert(keel_apobj_copy(&c, &o) == 0);
            assert(keel_apobj_merge(&c, &o) == 0);
            assert(keel_apobj_equal(&c, &o));
            keel_apobj_free(&c);
            keel_apobj_free(&o);
        }
        break;
    }
    case 2: {
        keel_gcounter_t g;
        if (keel_gcounter_decode(d, n, &g, &msg) == 0) {
            assert(keel_gcounter_encode(&g, &e) == 0);
            same_bytes(&e, d, n);
        }
        break;
    }
    case 3: {
        keel_pncounter_t c;
        if (keel_pncounter_decode(d, n, &c, &msg) == 0) {
            assert(keel_pncounter_encode(&c, &e) == 0);
            same_bytes(&e, d, n);
            int64_t v;
            (void)keel_pncounter_value(&c, &v);
        }
        break;
    }
    case 4: {
        keel_lww_t r;
        if (keel_lww_decode(d, n, &r, &msg) == 0) {
            assert(keel_lww_encode(&r, &e) == 0);
            same_bytes(&e, d, n);
            keel_lww_free(&r);
        }
        break;
    }
    case 6: {
        keel_apval_t v, c;
        if (keel_apval_decode(d, n, &v, &msg) == 0) {
            assert(keel_apval_encode(&v, &e) == 0);
            same_bytes(&e, d, n);
            assert(keel_apval_copy(&c, &v) == 0);
            assert(keel_apval_merge(&c, &v) == 0);
            assert(keel_apval_digest(&c) == keel_apval_digest(&v));
            keel_apval_free(&c);
        }
        keel_apval_free(&v);
        break;
    }
    case 7: {
        keel_apmsg_t m;
        if (keel_apmsg_decode(d, n, &m, &msg) == 0) {
            assert(m.key_len <= KEEL_APMSG_KEY_BYTES_MAX);
            assert(keel_apmsg_encode(&e, &m) == 0);
            same_bytes(&e, d, n);
        }
        break;
    }
    default: {
        keel_orset_t s, c;
        if (keel_orset_decode(d, n, &s, &msg) == 0) {
            assert(keel_orset_encode(&s, &e) == 0);
            same_bytes(&e, d, n);
            keel_orset_init(&c);
            assert(keel_orset_merge(&c, &s) == 0);
            assert(keel_orset_merge(&c, &s) == 0);
            keel_buf_t e2;
            keel_buf_init(&e2, 0);
            assert(keel_orset_encode(&c, &e2) == 0);
            same_bytes(&e2, d, n);
            keel_buf_free(&e2);
            keel_orset_free(&c);
            keel_orset_free(&s);
        }
        break;
    }
    }
    keel_buf_free(&e);
    return 0;
}
