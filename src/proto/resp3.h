/* resp3.h - a RESP2 reply rendered as RESP3 (HELLO 3), by the command's reply shape. */
#ifndef KEEL_PROTO_RESP3_H
#define KEEL_PROTO_RESP3_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Every reply in keel is written once, in RESP2, wherever the command runs: by the state
 * machine on the leader (a write's reply travels back to the node the client is on), from
 * a follower's state, or by a connection command. A connection that said HELLO 3 gets the
 * same reply rendered as RESP3 at its own node, as the last step, from the reply's bytes and
 * the command's shape: what RESP3 type each part of the reply is (Redis's addReplyMap,
 * addReplySet, addReplyDouble, addReplyVerbatim, push messages). The log, the state machine
 * and the forwarding between nodes never know about the protocol.
 *
 * In every shape: $-1 and *-1 become the RESP3 null (_), errors and simple strings pass as
 * they are, and a part that does not have the form the shape expects (an error, a null, an
 * odd count for a map) is rendered plainly. A reply may hold several top-level values (one
 * per channel of SUBSCRIBE); each is rendered with the shape.
 */
typedef enum keel_resp3_shape {
    KEEL_RESP3_PLAIN = 0,    /* only the nulls change */
    KEEL_RESP3_MAP,          /* [k1, v1, k2, v2 ...] -> {k1: v1, ...} (HGETALL, CONFIG GET) */
    KEEL_RESP3_SET,          /* [...] -> ~[...] (SMEMBERS, SINTER) */
    KEEL_RESP3_DOUBLE,       /* a number in a bulk string -> ,number (ZSCORE) */
    KEEL_RESP3_DOUBLES,      /* [n1, n2 ...] -> [,n1, ,n2 ...] (ZMSCORE) */
    KEEL_RESP3_PAIRS,        /* [a1, b1, a2, b2 ...] -> [[a1, b1], ...] (HRANDFIELD WITHVALUES) */
    KEEL_RESP3_PAIRS_DOUBLE, /* as PAIRS with each b a double (ZRANGE WITHSCORES) */
    KEEL_RESP3_PAIR_DOUBLE,  /* [m, s] -> [m, ,s] (ZPOPMIN without a count, BZPOPMIN) */
    KEEL_RESP3_KEYED_PAIRS_DOUBLE,   /* [key, [[m1, s1] ...]] -> [key, [[m1, ,s1] ...]] (ZMPOP) */
    KEEL_RESP3_ARRAY_OF_PAIR_DOUBLE, /* [[m1, s1] ...] -> [[m1, ,s1] ...] */
    KEEL_RESP3_ARRAY_OF_MAPS,        /* [[k, v ...], ...] -> [{k: v ...}, ...] (XINFO GROUPS) */
    KEEL_RESP3_MAP_OF_MAPS,   /* [name, [k, v ...], ...] -> {name: {k: v ...}} (COMMAND DOCS) */
    KEEL_RESP3_KEYED,         /* [[key, value], ...] -> {key: value, ...} (XREAD) */
    KEEL_RESP3_VERBATIM,      /* a bulk string -> =txt:... (INFO, CLIENT LIST) */
    KEEL_RESP3_PUSH,          /* each top-level array -> >push (pub/sub messages) */
    KEEL_RESP3_MAP_FIRST_SET, /* a map whose first value is a set (CLIENT TRACKINGINFO) */
    KEEL_RESP3_LAST_DOUBLE,   /* [a, b, n] -> [a, b, ,n] (BZPOPMIN: key, member, score) */
    KEEL_RESP3_SHAPES
} keel_resp3_shape_t;

/* Nesting followed in a reply; deeper replies are refused. */
#define KEEL_RESP3_DEPTH_MAX 32

/*
 * Appends the RESP3 form of the complete RESP2 reply(ies) in[0..len) to out. 0, KEEL_EPROTO
 * (in is not a sequence of complete RESP2 replies, or nests past KEEL_RESP3_DEPTH_MAX:
 * nothing is appended then) or out's error (KEEL_ENOMEM, KEEL_ETOOBIG).
 */
int keel_resp3_convert(const uint8_t *in, size_t len, keel_resp3_shape_t shape, keel_buf_t *out);

#endif
