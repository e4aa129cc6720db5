/* fuzz_resp.c - libFuzzer target: RESP request parser (whole vs chunked) and reply parser. */
#include "base/buf.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input layout: byte 0 picks limits (tight ones reach the ETOOBIG paths),
 * byte 1 picks the chunk size for the split run; the rest is the stream.
 *
 * Properties checked:
 *  1. The request parser never reads past what it was given, never claims to
 *     consume more, and gives the same commands and the same final error
 *     when the stream arrives in chunks as when it arrives at once.
 *  2. Every reply the reply parser accepts, written back by the writer,
 *     gives exactly the bytes it consumed (parse -> write is the identity).
 */

static void digest_cmd(keel_buf_t *out, const keel_resp_cmd_t *cmd)
{
    assert(cmd->argc >= 1);
    keel_buf_append_u64_dec(out, cmd->argc);
    for (size_t i = 0; i < cmd->argc; i++) {
        keel_buf_append_u64_dec(out, cmd->argv[i].len);
        keel_buf_append(out, ":", 1);
        keel_buf_append(out, cmd->argv[i].ptr, cmd->argv[i].len);
    }
    keel_buf_append(out, "\n", 1);
}

/* Runs the stream through a parser in chunks of `chunk` bytes; returns the final rc. */
static int run_requests(const keel_resp_config_t *cfg, const uint8_t *d, size_t n, size_t chunk,
                        keel_buf_t *out)
{
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, cfg);
    keel_buf_t in;
    keel_buf_init(&in, 0);
    int rc = KEEL_EAGAIN;
    for (size_t off = 0; off < n && rc == KEEL_EAGAIN;) {
        size_t k = n - off < chunk ? n - off : chunk;
        /* copy so that ASan sees any read past the bytes handed over */
        keel_buf_append(&in, d + off, k);
        off += k;
        for (;;) {
            size_t have = keel_buf_unread(&in), used = 0;
            uint8_t *copy = malloc(have ? have : 1);
            memcpy(copy, keel_buf_rptr(&in), have);
            keel_resp_cmd_t cmd;
            keel_errmsg_t msg;
            rc = keel_resp_parse_request(&p, copy, have, &cmd, &used, &msg);
            assert(used <= have);
            if (rc == 0)
                digest_cmd(out, &cmd);
            free(copy);
            keel_buf_consume(&in, used);
            if (rc != 0)
                break;
        }
    }
    keel_buf_append_i64_dec(out, rc);
    keel_buf_free(&in);
    keel_resp_parser_free(&p);
    return rc;
}

static void check_requests(const keel_resp_config_t *cfg, const uint8_t *d, size_t n, size_t chunk)
{
    keel_buf_t whole, split;
    keel_buf_init(&whole, 0);
    keel_buf_init(&split, 0);
    run_requests(cfg, d, n, n ? n : 1, &whole);
    run_requests(cfg, d, n, chunk, &split);
    if (keel_buf_unread(&whole) != keel_buf_unread(&split) ||
        memcmp(keel_buf_rptr(&whole), keel_buf_rptr(&split), keel_buf_unread(&whole)) != 0)
        abort(); /* chunking changed the result */
    keel_buf_free(&whole);
    keel_buf_free(&split);
}

static void check_replies(const keel_resp_config_t *cfg, const uint8_t *d, size_t n)
{
    size_t off = 0;
    while (off < n) {
        keel_resp_value_t *v;
        size_t used;
        int rc = keel_resp_parse_reply(cfg, d + off, n - off, &v, &used, NULL);
        if (rc != 0) {
            assert(v == NULL && used == 0);
            return;
        }
        assert(used >= 3 && used <= n - off);
        keel_buf_t b;
        keel_buf_init(&b, 0);
        if (keel_resp_write_value(&b, v) != 0 || keel_buf_unread(&b) != used ||
            memcmp(keel_buf_rptr(&b), d + off, used) != 0)
            abort(); /* parse -> write is not the identity */
        keel_buf_free(&b);
        keel_resp_value_free(v);
        off += used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    keel_resp_config_t cfg = keel_resp_config_default();
    if (data[0] & 1) {
        cfg.bulk_bytes_max = 16 + (data[0] >> 4);
        cfg.array_len_max = 1 + (data[0] >> 5);
        cfg.nesting_max = 1 + ((data[0] >> 1) & 3);
        cfg.inline_bytes_max = 16 + (data[0] >> 2);
    }
    size_t chunk = 1 + data[1] % 17;
    check_requests(&cfg, data + 2, size - 2, chunk);
    check_replies(&cfg, data + 2, size - 2);
    return 0;
}
