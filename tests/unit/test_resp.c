/* test_resp.c - RESP2 request parser, reply parser and writers. */
#include "base/buf.h"
#include "base/rand.h"
#include "proto/resp.h"
#include "ktest.h"

#include <stdlib.h>

/* keel_buf_rptr() of a never-allocated buffer is NULL + 0, which clang's UBSan flags. */
#define RPTR(b) ((b)->data ? keel_buf_rptr(b) : (const uint8_t *)"")

/*
 * A connection's view: bytes arrive in chunks into `in`; after each chunk
 * every complete command is parsed, rendered as text ("SET|k|v\n", with
 * bytes outside printable ASCII as \xHH) into `out`, and consumed.
 */
typedef struct conn {
    keel_resp_parser_t p;
    keel_buf_t in;
    keel_buf_t out;
    int err;
    keel_errmsg_t msg;
} conn_t;

static void conn_init(conn_t *c, const keel_resp_config_t *cfg)
{
    keel_resp_parser_init(&c->p, cfg);
    keel_buf_init(&c->in, 0);
    keel_buf_init(&c->out, 0);
    c->err = 0;
    c->msg.text[0] = '\0';
}

static void conn_free(conn_t *c)
{
    keel_resp_parser_free(&c->p);
    keel_buf_free(&c->in);
    keel_buf_free(&c->out);
}

static void render(keel_buf_t *out, const keel_resp_cmd_t *cmd)
{
    for (size_t i = 0; i < cmd->argc; i++) {
        if (i > 0)
            keel_buf_append_str(out, "|");
        for (size_t j = 0; j < cmd->argv[i].len; j++) {
            uint8_t ch = cmd->argv[i].ptr[j];
            if (ch >= 0x20 && ch < 0x7f && ch != '|' && ch != '\\')
                keel_buf_append(out, &ch, 1);
            else
                keel_buf_printf(out, "\\x%02x", ch);
        }
    }
    keel_buf_append_str(out, "\n");
}

/* Feeds one chunk; returns the number of commands completed by it. */
static int conn_feed(conn_t *c, const void *p, size_t n)
{
    int cmds = 0;
    if (c->err != 0)
        return 0;
    KT_EQ_INT(keel_buf_append(&c->in, p, n), 0);
    for (;;) {
        keel_resp_cmd_t cmd;
        size_t used;
        int rc = keel_resp_parse_request(&c->p, RPTR(&c->in), keel_buf_unread(&c->in), &cmd, &used,
                                         &c->msg);
        KT_CHECK(used <= keel_buf_unread(&c->in));
        if (rc == 0)
            render(&c->out, &cmd), cmds++;
        keel_buf_consume(&c->in, used);
        if (rc == KEEL_EAGAIN)
            return cmds;
        if (rc != 0) {
            c->err = rc;
            keel_buf_printf(&c->out, "ERROR %s\n", c->msg.text);
            return cmds;
        }
    }
}

static char *out_str(conn_t *c)
{
    keel_buf_append(&c->out, "", 1);
    return (char *)RPTR(&c->out);
}

/* Whole stream at once: the reference text. Caller frees. */
static char *parse_all(const char *data, size_t n, const keel_resp_config_t *cfg)
{
    conn_t c;
    conn_init(&c, cfg);
    conn_feed(&c, data, n);
    char *s = strdup(out_str(&c));
    conn_free(&c);
    return s;
}

static void expect_parse(const char *data, const char *want)
{
    char *got = parse_all(data, strlen(data), NULL);
    KT_EQ_STR(got, want);
    free(got);
}

static void parses_a_multibulk_command(void)
{
    expect_parse("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", "SET|key|value\n");
    expect_parse("*1\r\n$0\r\n\r\n", "\n");
    expect_parse("*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n", "ECHO|a\\x0d\\x0ab\n");
}

static void parses_inline_commands_like_redis_cli(void)
{
    expect_parse("PING\r\n", "PING\n");
    expect_parse("PING\n", "PING\n");
    expect_parse("  set  k   v \r\n", "set|k|v\n");
    expect_parse("SET k \"hello world\"\r\n", "SET|k|hello world\n");
    expect_parse("SET k \"a\\x41\\n\\\"q\\\"\"\r\n", "SET|k|aA\\x0a\"q\"\n");
    expect_parse("SET k 'it\\'s'\r\n", "SET|k|it's\n");
    expect_parse("SET k \"\"\r\n", "SET|k|\n");
    expect_parse("SET k \"x\"y\r\n", "ERROR Protocol error: unbalanced quotes in request\n");
    expect_parse("SET k \"open\r\n", "ERROR Protocol error: unbalanced quotes in request\n");
}

static void skips_empty_commands_and_consumes_them(void)
{
    expect_parse("\r\n\n*0\r\n*-1\r\n   \r\nPING\r\n", "PING\n");
    /* Redis ignores any multibulk count <= 0, not only 0 and -1 */
    expect_parse("*-10\r\n*-9223372036854775807\r\nPING\r\n", "PING\n");
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, NULL);
    keel_resp_cmd_t cmd;
    size_t used;
    const char *s = "\r\n*0\r\n*1\r\n$4\r\nPI";
    KT_EQ_INT(keel_resp_parse_request(&p, (const uint8_t *)s, strlen(s), &cmd, &used, NULL),
              KEEL_EAGAIN);
    KT_EQ_INT(used, 6); /* the blank line and *0 are gone; *1... waits */
    keel_resp_parser_free(&p);
}

static void pipelined_commands_come_out_one_at_a_time(void)
{
    const char *s = "*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nQU";
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, NULL);
    keel_resp_cmd_t cmd;
    size_t used, off = 0, n = strlen(s);
    const uint8_t *d = (const uint8_t *)s;
    KT_EQ_INT(keel_resp_parse_request(&p, d, n, &cmd, &used, NULL), 0);
    KT_EQ_INT(used, 14);
    KT_EQ_INT(cmd.argc, 1);
    KT_EQ_MEM(cmd.argv[0].ptr, "PING", 4);
    off += used;
    KT_EQ_INT(keel_resp_parse_request(&p, d + off, n - off, &cmd, &used, NULL), 0);
    KT_EQ_INT(used, 9);
    KT_EQ_INT(cmd.argc, 2);
    KT_EQ_MEM(cmd.argv[1].ptr, "hi", 2);
    KT_CHECK(cmd.argv[1].ptr == d + off + 5); /* zero-copy: points into the input */
    off += used;
    KT_EQ_INT(keel_resp_parse_request(&p, d + off, n - off, &cmd, &used, NULL), 0);
    KT_EQ_INT(cmd.argc, 2);
    KT_EQ_MEM(cmd.argv[0].ptr, "GET", 3);
    KT_CHECK(cmd.argv[0].ptr == d + off + 8);
    off += used;
    KT_EQ_INT(keel_resp_parse_request(&p, d + off, n - off, &cmd, &used, NULL), KEEL_EAGAIN);
    KT_EQ_INT(used, 0);
    keel_resp_parser_free(&p);
}

/* The stream used by the split tests: every request shape, pipelined. */
static const char split_stream[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
                                   "PING\r\n"
                                   "\r\n"
                                   "*0\r\n"
                                   "SET k \"a b\\x00c\" 'd e'\n"
                                   "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
                                   "*2\r\n$3\r\nGET\r\n$12\r\nbin\r\n\x00\xff\r\nary\r\n"
                                   "*-1\r\n"
                                   "*1\r\n$4\r\nQUIT\r\n";

static void every_split_point_gives_identical_commands(void)
{
    size_t n = sizeof(split_stream) - 1;
    char *want = parse_all(split_stream, n, NULL);
    KT_CHECK(strstr(want, "ERROR") == NULL);
    KT_EQ_STR(want, "SET|key|value\nPING\nSET|k|a b\\x00c|d e\nECHO|\n"
                    "GET|bin\\x0d\\x0a\\x00\\xff\\x0d\\x0aary\nQUIT\n");
    for (size_t k = 0; k <= n; k++) {
        for (size_t k2 = k; k2 <= n; k2 += 7) { /* two cuts: [0,k) [k,k2) [k2,n) */
            conn_t c;
            conn_init(&c, NULL);
            conn_feed(&c, split_stream, k);
            conn_feed(&c, split_stream + k, k2 - k);
            conn_feed(&c, split_stream + k2, n - k2);
            KT_EQ_STR(out_str(&c), want);
            KT_EQ_INT(keel_buf_unread(&c.in), 0);
            conn_free(&c);
        }
    }
    free(want);
}

static void one_byte_at_a_time_gives_identical_commands(void)
{
    size_t n = sizeof(split_stream) - 1;
    char *want = parse_all(split_stream, n, NULL);
    conn_t c;
    conn_init(&c, NULL);
    int cmds = 0;
    for (size_t i = 0; i < n; i++)
        cmds += conn_feed(&c, split_stream + i, 1);
    KT_EQ_INT(cmds, 6);
    KT_EQ_STR(out_str(&c), want);
    conn_free(&c);
    free(want);
}

static void every_proper_prefix_of_a_command_needs_more_input(void)
{
    const char *cmds[] = {"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n", "ECHO 'x y'\r\n",
                          "*1\r\n$10\r\n0123456789\r\n"};
    for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
        size_t n = strlen(cmds[c]);
        for (size_t k = 0; k < n; k++) {
            keel_resp_parser_t p;
            keel_resp_parser_init(&p, NULL);
            keel_resp_cmd_t cmd;
            size_t used;
            int rc = keel_resp_parse_request(&p, (const uint8_t *)cmds[c], k, &cmd, &used, NULL);
            KT_EQ_INT(rc, KEEL_EAGAIN);
            KT_EQ_INT(used, 0);
            rc = keel_resp_parse_request(&p, (const uint8_t *)cmds[c], n, &cmd, &used, NULL);
            KT_EQ_INT(rc, 0);
            KT_EQ_INT(used, n);
            keel_resp_parser_free(&p);
        }
    }
}

static void a_big_bulk_is_not_rescanned_while_it_arrives(void)
{
    /* header read once; later feeds only compare the length that has arrived */
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, NULL);
    size_t bulk = 4u << 20, hdr = strlen("*1\r\n$4194304\r\n");
    uint8_t *d = malloc(hdr + bulk + 2);
    memcpy(d, "*1\r\n$4194304\r\n", hdr);
    memset(d + hdr, 'x', bulk);
    memcpy(d + hdr + bulk, "\r\n", 2);
    keel_resp_cmd_t cmd;
    size_t used;
    for (size_t have = hdr; have < hdr + bulk + 2; have += 65536) {
        KT_EQ_INT(keel_resp_parse_request(&p, d, have, &cmd, &used, NULL), KEEL_EAGAIN);
        KT_EQ_INT(p.pos, hdr);
        KT_EQ_INT(p.bulk_len, (int64_t)bulk);
    }
    KT_EQ_INT(keel_resp_parse_request(&p, d, hdr + bulk + 2, &cmd, &used, NULL), 0);
    KT_EQ_INT(cmd.argc, 1);
    KT_EQ_INT(cmd.argv[0].len, bulk);
    KT_CHECK(cmd.argv[0].ptr == d + hdr);
    free(d);
    keel_resp_parser_free(&p);
}

static void expect_error(const keel_resp_config_t *cfg, const char *data, size_t n, int err,
                         const char *text)
{
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, cfg);
    keel_resp_cmd_t cmd;
    size_t used;
    keel_errmsg_t msg = {{0}};
    int rc = keel_resp_parse_request(&p, (const uint8_t *)data, n, &cmd, &used, &msg);
    keel_resp_parser_free(&p);
    if (rc != err)
        KT_FAIL("input \"%.40s\": rc %s, want %s", data, keel_err_name(rc), keel_err_name(err));
    KT_EQ_STR(msg.text, text);
}

#define EXPECT_ERROR(data, err, text) expect_error(NULL, data, strlen(data), err, text)

static void malformed_requests_are_protocol_errors_with_redis_text(void)
{
    EXPECT_ERROR("*abc\r\n", KEEL_EPROTO, "Protocol error: invalid multibulk length");
    EXPECT_ERROR("*01\r\n", KEEL_EPROTO, "Protocol error: invalid multibulk length");
    EXPECT_ERROR("*1\n$4\r\n", KEEL_EPROTO, "Protocol error: invalid multibulk length");
    EXPECT_ERROR("*1\r\n$4\rxPING\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    EXPECT_ERROR("*1\r\nPING\r\n", KEEL_EPROTO, "Protocol error: expected '$', got 'P'");
    EXPECT_ERROR("*1\r\n\x01", KEEL_EPROTO, "Protocol error: expected '$', got '\\x01'");
    EXPECT_ERROR("*1\r\n$x\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    EXPECT_ERROR("*1\r\n$-1\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    EXPECT_ERROR("*1\r\n$-5\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    EXPECT_ERROR("*1\r\n$+4\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    EXPECT_ERROR("*1\r\n$4\r\nPINGxx", KEEL_EPROTO,
                 "Protocol error: expected CRLF after bulk data");
    EXPECT_ERROR("*1\r\n$99999999999999999999\r\n", KEEL_EPROTO,
                 "Protocol error: invalid bulk length");
    /* a length line that never ends is rejected after a few bytes, not 64 KiB */
    EXPECT_ERROR("*1\r\n$0000000000000000000000000000", KEEL_EPROTO,
                 "Protocol error: invalid bulk length");
}

static void oversized_requests_are_rejected_before_allocation(void)
{
    keel_resp_config_t cfg = keel_resp_config_default();
    cfg.bulk_bytes_max = 1000;
    cfg.array_len_max = 4;
    cfg.inline_bytes_max = 64;
    expect_error(&cfg, "*1\r\n$1001\r\n", 11, KEEL_ETOOBIG, "Protocol error: invalid bulk length");
    expect_error(&cfg, "*1\r\n$1000\r\n", 11, KEEL_EAGAIN, "");
    expect_error(&cfg, "*5\r\n", 4, KEEL_ETOOBIG, "Protocol error: invalid multibulk length");
    expect_error(NULL, "*1\r\n$536870913\r\n", 16, KEEL_ETOOBIG,
                 "Protocol error: invalid bulk length");
    expect_error(NULL, "*1048577\r\n", 10, KEEL_ETOOBIG,
                 "Protocol error: invalid multibulk length");
    char line[65];
    memset(line, 'a', sizeof(line));
    expect_error(&cfg, line, 63, KEEL_EAGAIN, "");
    expect_error(&cfg, line, 64, KEEL_ETOOBIG, "Protocol error: too big inline request");
    /* a claimed 1M-element array reserves slots only for elements that arrived */
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, NULL);
    keel_resp_cmd_t cmd;
    size_t used;
    const char *s = "*1048576\r\n$1\r\na\r\n$1\r\nb\r\n";
    KT_EQ_INT(keel_resp_parse_request(&p, (const uint8_t *)s, strlen(s), &cmd, &used, NULL),
              KEEL_EAGAIN);
    KT_EQ_INT(p.argc, 2);
    KT_CHECK(p.args_cap <= 8);
    keel_resp_parser_free(&p);
}

static void memory_for_a_huge_command_is_released_before_the_next(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    keel_resp_arg_t argv[3000];
    for (size_t i = 0; i < 3000; i++)
        argv[i] = (keel_resp_arg_t){(const uint8_t *)"x", 1};
    keel_resp_write_command(&b, 3000, argv);
    keel_buf_append_str(&b, "PING\r\n");
    keel_resp_parser_t p;
    keel_resp_parser_init(&p, NULL);
    keel_resp_cmd_t cmd;
    size_t used;
    KT_EQ_INT(keel_resp_parse_request(&p, RPTR(&b), keel_buf_unread(&b), &cmd, &used, NULL), 0);
    KT_EQ_INT(cmd.argc, 3000);
    KT_CHECK(p.args_cap >= 3000);
    keel_buf_consume(&b, used);
    KT_EQ_INT(keel_resp_parse_request(&p, RPTR(&b), keel_buf_unread(&b), &cmd, &used, NULL), 0);
    KT_EQ_INT(cmd.argc, 1);
    KT_CHECK(p.args_cap <= 1024);
    keel_resp_parser_free(&p);
    keel_buf_free(&b);
}

static void config_validation_rejects_limits_above_the_caps(void)
{
    keel_resp_config_t cfg = keel_resp_config_default();
    KT_EQ_INT(keel_resp_config_validate(&cfg, NULL), 0);
    keel_errmsg_t msg;
    cfg.bulk_bytes_max = KEEL_RESP_BULK_BYTES_MAX + 1;
    KT_EQ_INT(keel_resp_config_validate(&cfg, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "bulk_bytes_max") != NULL);
    cfg = keel_resp_config_default();
    cfg.inline_bytes_max = KEEL_RESP_INLINE_BYTES_MAX + 1;
    KT_EQ_INT(keel_resp_config_validate(&cfg, &msg), KEEL_EINVAL);
    cfg = keel_resp_config_default();
    cfg.nesting_max = 0;
    KT_EQ_INT(keel_resp_config_validate(&cfg, &msg), KEEL_EINVAL);
}

/* Random commands (binary args) written by the writer, parsed in random chunks. */
static void random_commands_round_trip_through_random_chunks(void)
{
    uint64_t seed = 20261122;
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    for (int round = 0; round < 50; round++) {
        keel_buf_t wire, want;
        keel_buf_init(&wire, 0);
        keel_buf_init(&want, 0);
        uint8_t bytes[300];
        int ncmd = (int)keel_rand_range(&r, 1, 20);
        for (int c = 0; c < ncmd; c++) {
            keel_resp_arg_t argv[8];
            size_t argc = (size_t)keel_rand_range(&r, 1, 8), used = 0;
            for (size_t i = 0; i < argc; i++) {
                size_t len = (size_t)keel_rand_below(&r, 40);
                for (size_t j = 0; j < len; j++)
                    bytes[used + j] = (uint8_t)keel_rand_u64(&r);
                argv[i].ptr = bytes + used;
                argv[i].len = len;
                used += len;
            }
            KT_EQ_INT(keel_resp_write_command(&wire, argc, argv), 0);
            keel_resp_cmd_t cmd = {argc, argv};
            render(&want, &cmd);
        }
        keel_buf_append(&want, "", 1);
        conn_t cn;
        conn_init(&cn, NULL);
        size_t n = keel_buf_unread(&wire), off = 0;
        while (off < n) {
            size_t k = (size_t)keel_rand_range(&r, 1, 64);
            k = k > n - off ? n - off : k;
            conn_feed(&cn, RPTR(&wire) + off, k);
            off += k;
        }
        KT_EQ_STR(out_str(&cn), (const char *)RPTR(&want));
        conn_free(&cn);
        keel_buf_free(&wire);
        keel_buf_free(&want);
    }
}

/* ---- replies ---------------------------------------------------------------- */

static void parses_every_reply_type(void)
{
    static const char s[] = "*7\r\n+OK\r\n-ERR bad thing\r\n:-42\r\n$5\r\nhe\0lo\r\n$-1\r\n"
                            "*-1\r\n*2\r\n*0\r\n*1\r\n:9223372036854775807\r\n";
    size_t n = sizeof(s) - 1;
    keel_resp_value_t *v;
    size_t used;
    KT_EQ_INT(keel_resp_parse_reply(NULL, (const uint8_t *)s, n, &v, &used, NULL), 0);
    KT_EQ_INT(used, n);
    KT_EQ_INT(v->type, KEEL_RESP_ARRAY);
    KT_EQ_INT(v->elems_len, 7);
    keel_resp_value_t *e = v->elems;
    KT_EQ_INT(e[0].type, KEEL_RESP_SIMPLE);
    KT_EQ_INT(e[0].str.len, 2);
    KT_EQ_MEM(e[0].str.ptr, "OK", 2);
    KT_EQ_INT(e[1].type, KEEL_RESP_ERROR);
    KT_EQ_MEM(e[1].str.ptr, "ERR bad thing", 13);
    KT_EQ_INT(e[2].type, KEEL_RESP_INT);
    KT_EQ_INT(e[2].integer, -42);
    KT_EQ_INT(e[3].type, KEEL_RESP_BULK);
    KT_EQ_INT(e[3].str.len, 5);
    KT_EQ_MEM(e[3].str.ptr, "he\0lo", 5);
    KT_EQ_INT(e[4].type, KEEL_RESP_NIL);
    KT_EQ_INT(e[5].type, KEEL_RESP_NIL_ARRAY);
    KT_EQ_INT(e[6].type, KEEL_RESP_ARRAY);
    KT_EQ_INT(e[6].elems_len, 2);
    KT_EQ_INT(e[6].elems[0].type, KEEL_RESP_ARRAY);
    KT_EQ_INT(e[6].elems[0].elems_len, 0);
    KT_EQ_INT(e[6].elems[1].elems[0].integer, INT64_MAX);
    /* round trip: writing the parsed value gives back the same bytes */
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_resp_write_value(&b, v), 0);
    KT_EQ_INT(keel_buf_unread(&b), n);
    KT_EQ_MEM(RPTR(&b), s, n);
    keel_buf_free(&b);
    keel_resp_value_free(v);
}

static void every_proper_prefix_of_a_reply_needs_more_input(void)
{
    const char *s = "*3\r\n$3\r\nfoo\r\n*1\r\n+OK\r\n:1\r\n";
    size_t n = strlen(s);
    for (size_t k = 0; k < n; k++) {
        keel_resp_value_t *v = (keel_resp_value_t *)1;
        size_t used = 99;
        KT_EQ_INT(keel_resp_parse_reply(NULL, (const uint8_t *)s, k, &v, &used, NULL), KEEL_EAGAIN);
        KT_CHECK(v == NULL && used == 0);
    }
}

static void pipelined_replies_parse_one_at_a_time(void)
{
    const char *s = "+PONG\r\n$2\r\nhi\r\n:3\r\n";
    size_t off = 0, n = strlen(s), used;
    keel_resp_value_t *v;
    keel_resp_type_t want[] = {KEEL_RESP_SIMPLE, KEEL_RESP_BULK, KEEL_RESP_INT};
    for (int i = 0; i < 3; i++) {
        KT_EQ_INT(keel_resp_parse_reply(NULL, (const uint8_t *)s + off, n - off, &v, &used, NULL),
                  0);
        KT_EQ_INT(v->type, want[i]);
        keel_resp_value_free(v);
        off += used;
    }
    KT_EQ_INT(off, n);
}

static void expect_reply_error(const keel_resp_config_t *cfg, const char *s, int err,
                               const char *text)
{
    keel_resp_value_t *v;
    size_t used;
    keel_errmsg_t msg = {{0}};
    int rc = keel_resp_parse_reply(cfg, (const uint8_t *)s, strlen(s), &v, &used, &msg);
    if (rc != err)
        KT_FAIL("reply \"%.40s\": rc %s, want %s", s, keel_err_name(rc), keel_err_name(err));
    if (rc == 0) {
        keel_resp_value_free(v);
        return;
    }
    KT_CHECK(v == NULL);
    KT_EQ_STR(msg.text, text);
}

static void malformed_and_oversized_replies_are_rejected(void)
{
    expect_reply_error(NULL, "?x\r\n", KEEL_EPROTO, "Protocol error: unknown reply type '?'");
    expect_reply_error(NULL, ":12a\r\n", KEEL_EPROTO, "Protocol error: invalid integer");
    expect_reply_error(NULL, ":99999999999999999999\r\n", KEEL_EPROTO,
                       "Protocol error: invalid integer");
    expect_reply_error(NULL, "$-2\r\n", KEEL_EPROTO, "Protocol error: invalid bulk length");
    expect_reply_error(NULL, "*-2\r\n", KEEL_EPROTO, "Protocol error: invalid multibulk length");
    expect_reply_error(NULL, "$2\r\nabc\r\n", KEEL_EPROTO,
                       "Protocol error: expected CRLF after bulk data");
    expect_reply_error(NULL, "+OK\rx\n", KEEL_EPROTO, "Protocol error: bad line ending");
    expect_reply_error(NULL, "+O\nK\r\n", KEEL_EPROTO, "Protocol error: bad line ending");
    keel_resp_config_t cfg = keel_resp_config_default();
    cfg.nesting_max = 3;
    cfg.array_len_max = 10;
    cfg.bulk_bytes_max = 4;
    expect_reply_error(&cfg, "*1\r\n*1\r\n*0\r\n", 0, "");
    expect_reply_error(&cfg, "*1\r\n*1\r\n*1\r\n", KEEL_ETOOBIG,
                       "Protocol error: arrays nested too deep");
    expect_reply_error(&cfg, "*11\r\n", KEEL_ETOOBIG, "Protocol error: invalid multibulk length");
    expect_reply_error(&cfg, "$5\r\n", KEEL_ETOOBIG, "Protocol error: invalid bulk length");
    expect_reply_error(&cfg, "+hello", KEEL_ETOOBIG, "Protocol error: status line too long");
    /* claimed million elements with two present: nothing allocated, just wait */
    expect_reply_error(NULL, "*1000000\r\n:1\r\n:2\r\n", KEEL_EAGAIN, "");
}

static void writers_produce_exact_resp(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_resp_write_simple(&b, "OK"), 0);
    KT_EQ_INT(keel_resp_write_error(&b, "ERR line1\r\nline2"), 0);
    KT_EQ_INT(keel_resp_write_errorf(&b, "ERR unknown command '%s'", "FOO\n"), 0);
    KT_EQ_INT(keel_resp_write_int(&b, INT64_MIN), 0);
    KT_EQ_INT(keel_resp_write_bulk(&b, "a\0b", 3), 0);
    KT_EQ_INT(keel_resp_write_bulk_str(&b, ""), 0);
    KT_EQ_INT(keel_resp_write_nil(&b), 0);
    KT_EQ_INT(keel_resp_write_nil_array(&b), 0);
    KT_EQ_INT(keel_resp_write_array_header(&b, 2), 0);
    const char want[] = "+OK\r\n-ERR line1  line2\r\n-ERR unknown command 'FOO '\r\n"
                        ":-9223372036854775808\r\n$3\r\na\0b\r\n$0\r\n\r\n$-1\r\n*-1\r\n*2\r\n";
    KT_EQ_INT(keel_buf_unread(&b), sizeof(want) - 1);
    KT_EQ_MEM(RPTR(&b), want, sizeof(want) - 1);
    keel_buf_free(&b);
}

static void a_writer_that_does_not_fit_leaves_the_buffer_unchanged(void)
{
    keel_buf_t b;
    keel_buf_init(&b, 32);
    KT_EQ_INT(keel_resp_write_simple(&b, "0123456789"), 0);
    size_t n = keel_buf_unread(&b);
    KT_EQ_INT(keel_resp_write_bulk_str(&b, "this will not fit in 32 bytes"), KEEL_ETOOBIG);
    KT_EQ_INT(keel_resp_write_errorf(&b, "ERR %s", "this will not fit in 32 bytes"), KEEL_ETOOBIG);
    keel_resp_arg_t argv[2] = {{(const uint8_t *)"SET", 3}, {(const uint8_t *)"k", 1}};
    KT_EQ_INT(keel_resp_write_command(&b, 2, argv), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&b), n);
    KT_EQ_MEM(RPTR(&b), "+0123456789\r\n", n);
    keel_buf_free(&b);
}

int main(void)
{
    KT_RUN(parses_a_multibulk_command);
    KT_RUN(parses_inline_commands_like_redis_cli);
    KT_RUN(skips_empty_commands_and_consumes_them);
    KT_RUN(pipelined_commands_come_out_one_at_a_time);
    KT_RUN(every_split_point_gives_identical_commands);
    KT_RUN(one_byte_at_a_time_gives_identical_commands);
    KT_RUN(every_proper_prefix_of_a_command_needs_more_input);
    KT_RUN(a_big_bulk_is_not_rescanned_while_it_arrives);
    KT_RUN(malformed_requests_are_protocol_errors_with_redis_text);
    KT_RUN(oversized_requests_are_rejected_before_allocation);
    KT_RUN(memory_for_a_huge_command_is_released_before_the_next);
    KT_RUN(config_validation_rejects_limits_above_the_caps);
    KT_RUN(random_commands_round_trip_through_random_chunks);
    KT_RUN(parses_every_reply_type);
    KT_RUN(every_proper_prefix_of_a_reply_needs_more_input);
    KT_RUN(pipelined_replies_parse_one_at_a_time);
    KT_RUN(malformed_and_oversized_replies_are_rejected);
    KT_RUN(writers_produce_exact_resp);
    KT_RUN(a_writer_that_does_not_fit_leaves_the_buffer_unchanged);
    return kt_done();
}
