/* fuzz_reg_json.c - libFuzzer target: registration JSON through the parser into the registry. */
#include "base/buf.h"
#include "core/kv.h"
#include "proto/reg_json.h"

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Any bytes as the body of PUT /v1/agent/service/register (server/registry_http.c): the
 * parser either refuses them with a message or yields a KEEL.REG.WRITE REGISTER argv,
 * which then goes the way the server sends it: keel_kv_check, an entry, applied to a
 * store (the registry judges every field and limit). The store must then snapshot and load
 * back to the same bytes. The same bytes are also read as a Go duration.
 */
static void apply_and_round_trip(const keel_reg_json_t *j)
{
    keel_buf_t err, entry, reply, snap, again;
    keel_buf_init(&err, 0);
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    keel_buf_init(&snap, 0);
    keel_buf_init(&again, 0);
    keel_kv_t kv, back;
    int rc = keel_kv_init(&kv, NULL);
    assert(rc == 0);
    if (keel_kv_check((int)j->argc, j->argv, j->lens, &err) == 0) {
        rc = keel_kv_entry_encode(&entry, 1000, (int)j->argc, j->argv, j->lens);
        assert(rc == 0);
        rc = keel_kv_apply(&kv, 1, keel_buf_rptr(&entry), keel_buf_unread(&entry), &reply);
        assert(rc == 0 && keel_buf_unread(&reply) > 0);
        const uint8_t *r = keel_buf_rptr(&reply);
        assert(r[0] == ':' || r[0] == '-');
    }
    rc = keel_kv_snapshot_encode(&kv, &snap);
    assert(rc == 0);
    rc = keel_kv_init(&back, NULL);
    assert(rc == 0);
    keel_errmsg_t msg;
    rc = keel_kv_snapshot_decode(&back, keel_buf_rptr(&snap), keel_buf_unread(&snap), &msg);
    assert(rc == 0);
    rc = keel_kv_snapshot_encode(&back, &again);
    assert(rc == 0 && keel_buf_unread(&again) == keel_buf_unread(&snap));
    assert(memcmp(keel_buf_rptr(&again), keel_buf_rptr(&snap), keel_buf_unread(&snap)) == 0);
    keel_kv_free(&back);
    keel_kv_free(&kv);
    keel_buf_free(&err);
    keel_buf_free(&entry);
    keel_buf_free(&reply);
    keel_buf_free(&snap);
    keel_buf_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t ms;
    if (keel_reg_duration_ms((const char *)data, size, &ms) == 0)
        assert(ms <= 365ull * 24 * 3600 * 1000 + 1);
    keel_reg_json_t j;
    keel_errmsg_t msg;
    msg.text[0] = '\0';
    int rc = keel_reg_json_parse(data, size, &j, &msg);
    if (rc != 0) {
        assert(rc == KEEL_EINVAL || rc == KEEL_ENOMEM);
        assert(rc != KEEL_EINVAL || msg.text[0] != '\0');
        return 0;
    }
    assert(j.argc >= 6 && j.argc <= KEEL_REG_JSON_ARGC_MAX);
    apply_and_round_trip(&j);
    keel_reg_json_free(&j);
    return 0;
}
