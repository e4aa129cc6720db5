/* fuzz_stream.c - libFuzzer target: stream ids, and stream commands' argument parsing and apply. */
#include "base/buf.h"
#include "core/kv.h"
#include "core/stream.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Byte 0 picks the mode.
 *   even: the rest is an id argument. Properties: the parser never reads past it; an id it
 *         takes, formatted and parsed again (strict), is the same id; a strict parse that
 *         succeeds also succeeds loose; "ms-*" is taken only where allowed.
 *   odd:  byte 1 picks a stream command, the rest is its arguments split on '\n' (at most
 *         ARGS_MAX). The command is checked (keel_kv_check) and then applied, several
 *         times at increasing stamps, to a state holding a stream "s" with a group "g"
 *         and a string "k". Properties: apply returns 0 and appends a complete reply
 *         (starts with a RESP type byte, ends in CRLF); a check that refuses means apply
 *         answers an error too; read commands answer the same through keel_kv_read; the
 *         state survives a snapshot round trip with the same count and revision.
 */
#define ARGS_MAX 24

static const char *const CMDS[] = {"XADD",
                                   "XLEN",
                                   "XRANGE",
                                   "XREVRANGE",
                                   "XDEL",
                                   "XTRIM",
                                   "XREAD",
                                   "XGROUP",
                                   "XREADGROUP",
                                   "XACK",
                                   "XPENDING",
                                   "XCLAIM",
                                   "XAUTOCLAIM",
                                   "XINFO",
                                   "TYPE",
                                   "KEEL.XNACK",
                                   "KEEL.XDEADLETTER",
                                   "KEEL.XRETAIN"};
#define NCMDS (sizeof(CMDS) / sizeof(CMDS[0]))

static void ids(const uint8_t *d, size_t n)
{
    keel_stream_id_t a, b;
    int star;
    int strict = keel_stream_id_parse(d, n, 0, 1, NULL, &a);
    int loose = keel_stream_id_parse(d, n, 0, 0, NULL, &b);
    assert(strict != 0 || loose == 0);
    if (strict == 0) {
        char t[KEEL_STREAM_ID_TEXT_BYTES_MAX + 1];
        size_t len = keel_stream_id_format(t, a);
        keel_stream_id_t c;
        assert(keel_stream_id_parse((const uint8_t *)t, len, 0, 1, NULL, &c) == 0);
        assert(keel_stream_id_cmp(a, c) == 0);
    }
    if (keel_stream_id_parse(d, n, 0, 1, &star, &a) == 0 && star)
        assert(a.seq == 0 && strict != 0);
}

static void apply_one(keel_kv_t *kv, uint64_t *index, uint64_t time_ms, int argc,
                      const uint8_t *const *argv, const size_t *lens)
{
    keel_buf_t entry, reply;
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    int rc = keel_kv_entry_encode(&entry, time_ms, argc, argv, lens);
    assert(rc == 0);
    rc = keel_kv_apply(kv, ++*index, keel_buf_rptr(&entry), keel_buf_unread(&entry), &reply);
    assert(rc == 0);
    size_t n = keel_buf_unread(&reply);
    const uint8_t *p = keel_buf_rptr(&reply);
    assert(n >= 3 && strchr("+-:$*", p[0]) && p[n - 2] == '\r' && p[n - 1] == '\n');
    keel_buf_free(&entry);
    keel_buf_free(&reply);
}

static void setup(keel_kv_t *kv, uint64_t *index)
{
    static const char *const lines[][8] = {
        {"XADD", "s", "1-1", "f", "v", NULL},
        {"XADD", "s", "2-0", "f", "w", "g", "x", NULL},
        {"XADD", "s", "3-5", "a", "b", NULL},
        {"XGROUP", "CREATE", "s", "g", "0", NULL},
        {"XREADGROUP", "GROUP", "g", "c", "COUNT", "2", "STREAMS", NULL},
        {"SET", "k", "v", NULL},
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        const uint8_t *argv[10];
        size_t lens[10];
        int argc = 0;
        for (; lines[i][argc]; argc++) {
            argv[argc] = (const uint8_t *)lines[i][argc];
            lens[argc] = strlen(lines[i][argc]);
        }
        if (strcmp(lines[i][0], "XREADGROUP") == 0) {
            argv[argc] = (const uint8_t *)"s", lens[argc++] = 1;
            argv[argc] = (const uint8_t *)">", lens[argc++] = 1;
        }
        apply_one(kv, index, 1000, argc, argv, lens);
    }
}

static void commands(const uint8_t *d, size_t n)
{
    if (n < 1)
        return;
    const uint8_t *argv[ARGS_MAX + 1];
    size_t lens[ARGS_MAX + 1];
    int argc = 1;
    argv[0] = (const uint8_t *)CMDS[d[0] % NCMDS];
    lens[0] = strlen(CMDS[d[0] % NCMDS]);
    const uint8_t *p = d + 1, *end = d + n;
    while (p < end && argc <= ARGS_MAX) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl ? nl : end;
        argv[argc] = p;
        lens[argc++] = (size_t)(stop - p);
        p = nl ? nl + 1 : end;
    }
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.keys_max = 64;
    cfg.value_bytes_max = 256;
    cfg.argc_max = 32;
    keel_kv_t kv;
    int rc = keel_kv_init(&kv, &cfg);
    assert(rc == 0);
    uint64_t index = 0;
    setup(&kv, &index);
    keel_buf_t err;
    keel_buf_init(&err, 0);
    rc = keel_kv_check(argc, argv, lens, &err);
    assert(rc == 0 || (rc == KEEL_EINVAL && keel_buf_rptr(&err)[0] == '-'));
    unsigned flags = keel_kv_command_flags(argv[0], lens[0]);
    if (flags == KEEL_KV_READ) {
        keel_buf_t r;
        keel_buf_init(&r, 0);
        rc = keel_kv_read_at(&kv, 5000, argc, argv, lens, &r);
        assert(rc == 0 && keel_buf_unread(&r) >= 3);
        if (keel_buf_unread(&err) > 0)
            assert(keel_buf_rptr(&r)[0] == '-');
        keel_buf_free(&r);
    }
    for (int i = 0; i < 3; i++) /* again and again: a second XADD *, XCLAIM of a claimed id */
        apply_one(&kv, &index, 2000 + (uint64_t)i * 1000, argc, argv, lens);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    rc = keel_kv_snapshot_encode(&kv, &snap);
    assert(rc == 0);
    keel_kv_t copy;
    rc = keel_kv_init(&copy, &cfg);
    assert(rc == 0);
    rc = keel_kv_snapshot_decode(&copy, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL);
    assert(rc == 0 && keel_kv_count(&copy) == keel_kv_count(&kv) &&
           keel_kv_revision(&copy) == keel_kv_revision(&kv));
    keel_kv_free(&copy);
    keel_buf_free(&snap);
    keel_buf_free(&err);
    keel_kv_free(&kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        ids(data + 1, size - 1);
    else
        commands(data + 1, size - 1);
    return 0;
}
