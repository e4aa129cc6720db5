/* resp3.c - replies as RESP3 for a connection that said HELLO 3 (proto/resp3.h says how). */
#include "server/server_int.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/*
 * The reply shapes of the commands whose RESP3 reply is not their RESP2 reply with nulls
 * changed, as Redis 7.0 sends them. A data command's shape is decided on its arguments when
 * it is sent (the reply comes back from the node, maybe from the leader); a connection
 * command's reply is written into a scratch buffer and rendered (keel__srv_cmd_resp3).
 */
typedef struct shape_row {
    const char *name;
    keel_resp3_shape_t shape;
} shape_row_t;

static const shape_row_t SHAPES[] = {
    {"hgetall", KEEL_RESP3_MAP},
    {"config", KEEL_RESP3_MAP}, /* CONFIG GET; SET and RESETSTAT answer +OK */
    {"info", KEEL_RESP3_VERBATIM},
    {"smembers", KEEL_RESP3_SET},
    {"sinter", KEEL_RESP3_SET},
    {"sunion", KEEL_RESP3_SET},
    {"sdiff", KEEL_RESP3_SET},
    {"zscore", KEEL_RESP3_DOUBLE},
    {"zincrby", KEEL_RESP3_DOUBLE},
    {"zmscore", KEEL_RESP3_DOUBLES},
    {"zmpop", KEEL_RESP3_KEYED_PAIRS_DOUBLE},
    {"bzpopmin", KEEL_RESP3_LAST_DOUBLE},
    {"bzpopmax", KEEL_RESP3_LAST_DOUBLE},
    {"bzmpop", KEEL_RESP3_KEYED_PAIRS_DOUBLE},
    {"xread", KEEL_RESP3_KEYED},
    {"xreadgroup", KEEL_RESP3_KEYED},
    {"subscribe", KEEL_RESP3_PUSH},
    {"unsubscribe", KEEL_RESP3_PUSH},
    {"psubscribe", KEEL_RESP3_PUSH},
    {"punsubscribe", KEEL_RESP3_PUSH},
};

static int arg_is(const uint8_t *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp((const char *)p, word, n) == 0;
}

/* True when one of the arguments after the first `from` is the word. */
static int has_word(size_t argc, const uint8_t *const *argv, const size_t *lens, size_t from,
                    const char *word)
{
    for (size_t i = from; i < argc; i++)
        if (arg_is(argv[i], lens[i], word))
            return 1;
    return 0;
}

keel_resp3_shape_t keel__srv_resp3_shape(size_t argc, const uint8_t *const *argv,
                                         const size_t *lens)
{
    if (argc == 0)
        return KEEL_RESP3_PLAIN;
    const uint8_t *n = argv[0];
    size_t len = lens[0];
    if (arg_is(n, len, "client")) /* CLIENT INFO and LIST: text */
        return argc < 2 ? KEEL_RESP3_PLAIN
               : arg_is(argv[1], lens[1], "info") || arg_is(argv[1], lens[1], "list")
                   ? KEEL_RESP3_VERBATIM
               : arg_is(argv[1], lens[1], "trackinginfo") ? KEEL_RESP3_MAP_FIRST_SET
                                                          : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "command"))
        return argc >= 2 && arg_is(argv[1], lens[1], "docs") ? KEEL_RESP3_MAP_OF_MAPS
                                                             : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "xinfo") && argc >= 2)
        return arg_is(argv[1], lens[1], "stream") ? KEEL_RESP3_MAP
               : arg_is(argv[1], lens[1], "help") ? KEEL_RESP3_PLAIN
                                                  : KEEL_RESP3_ARRAY_OF_MAPS;
    if (arg_is(n, len, "lcs"))
        return has_word(argc, argv, lens, 3, "idx") ? KEEL_RESP3_MAP : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "hrandfield"))
        return has_word(argc, argv, lens, 3, "withvalues") ? KEEL_RESP3_PAIRS : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "spop")) /* with a count: a set (Redis 7.0) */
        return argc >= 3 ? KEEL_RESP3_SET : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "zadd"))
        return has_word(argc, argv, lens, 2, "incr") ? KEEL_RESP3_DOUBLE : KEEL_RESP3_PLAIN;
    if (arg_is(n, len, "zpopmin") || arg_is(n, len, "zpopmax"))
        return argc >= 3 ? KEEL_RESP3_PAIRS_DOUBLE : KEEL_RESP3_PAIR_DOUBLE;
    if (len >= 5 &&
        (strncasecmp((const char *)n, "zrang", 5) == 0 ||
         strncasecmp((const char *)n, "zrevr", 5) == 0 || arg_is(n, len, "zunion") ||
         arg_is(n, len, "zinter") || arg_is(n, len, "zdiff") || arg_is(n, len, "zrandmember")))
        return has_word(argc, argv, lens, 2, "withscores") ? KEEL_RESP3_PAIRS_DOUBLE
                                                           : KEEL_RESP3_PLAIN;
    for (size_t i = 0; i < sizeof(SHAPES) / sizeof(SHAPES[0]); i++)
        if (arg_is(n, len, SHAPES[i].name))
            return SHAPES[i].shape;
    return KEEL_RESP3_PLAIN;
}

int keel__srv_reply(int resp3, keel_resp3_shape_t shape, keel_buf_t *out, const uint8_t *resp,
                    size_t len)
{
    if (!resp3)
        return keel_buf_append(out, resp, len);
    int rc = keel_resp3_convert(resp, len, shape, out);
    if (rc == KEEL_EPROTO) /* never from keel's own replies: say so rather than send garbage */
        return keel_resp_write_error(out, "ERR keel: reply could not be rendered as RESP3");
    return rc;
}

/* The connection rows keel__srv_cmd_resp3 renders: those that answer at once (not MULTI's
 * own, WATCH, QUIT or the streaming and forwarded ones) and write a null, a map, text or a
 * push. HELLO renders its own reply (it changes the protocol). */
static const char *const WRAPPED[] = {"client",    "config",      "info",       "command",
                                      "subscribe", "unsubscribe", "psubscribe", "punsubscribe"};

int keel__srv_resp3_wraps(const char *name)
{
    for (size_t i = 0; i < sizeof(WRAPPED) / sizeof(WRAPPED[0]); i++)
        if (strcmp(name, WRAPPED[i]) == 0)
            return 1;
    return 0;
}

int keel__srv_cmd_resp3(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return keel__srv_run_row(c, keel_resp_client_command(c), argc, argv);
}

int keel__srv_run_row(keel_resp_client_t *c, const keel_resp_command_t *row, size_t argc,
                      const keel_resp_arg_t *argv)
{
    if (row->handler != keel__srv_cmd_resp3)
        return row->handler(c, argc, argv);
    cmd_stats_t *st = row->data;
    if (!keel__srv_resp3(c))
        return st->inner(c, argc, argv);
    server_t *s = keel__srv_of(c);
    keel_buf_t *before = keel_resp_client_out_set(c);
    if (keel__srv_ensure_argv(s, argc) != 0)
        return KEEL_ENOMEM;
    keel_buf_t scratch;
    keel_buf_init(&scratch, 0);
    keel_resp_client_set_out(c, &scratch);
    int rc = st->inner(c, argc, argv);
    keel_resp_client_set_out(c, before);
    /* asked for after the handler: CLIENT REPLY may have changed where it goes */
    keel_buf_t *out = rc == 0 ? keel_resp_client_out(c) : NULL;
    if (rc == 0 && out == NULL)
        rc = KEEL_ENOMEM;
    if (rc == 0) {
        for (size_t i = 0; i < argc; i++) {
            s->argv[i] = argv[i].ptr;
            s->lens[i] = argv[i].len;
        }
        rc = keel__srv_reply(1, keel__srv_resp3_shape(argc, s->argv, s->lens), out,
                             keel_buf_rptr(&scratch), keel_buf_unread(&scratch));
    }
    keel_buf_free(&scratch);
    return rc;
}
