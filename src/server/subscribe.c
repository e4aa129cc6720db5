/* subscribe.c - SUBSCRIBE, PSUBSCRIBE, their UNSUBSCRIBEs and PUBLISH across the cluster. */
#include "server/server_int.h"

#include "proto/resp.h"

#include <string.h>

/*
 * Redis pub/sub: a client that subscribes enters subscribed mode (only the rows flagged
 * SUBSCRIBED: the subscribe commands, PING, QUIT, until it unsubscribes from
 * everything; conn.c's rules). PUBLISH delivers to this node's subscribers and
 * broadcasts the message to every peer, which deliver to theirs, as the Redis Cluster bus
 * does: at most once, in no order across publishers, not through the log.
 *
 * PUBLISH's reply counts the receivers on this node only, as Redis Cluster's does: the
 * count over the whole cluster would make every PUBLISH wait for an answer from every
 * peer (and a peer that is down would make it wait for a timeout), which is the cost
 * pub/sub's fire-and-forget delivery exists to avoid. docs/server.md says so.
 */
static void push_message(void *data, void *sub, const uint8_t *pat, size_t pat_len,
                         const uint8_t *ch, size_t ch_len, const uint8_t *msg, size_t msg_len)
{
    keel_resp_client_t *c = sub;
    keel_resp_deferred_t *d = keel_resp_client_defer(c); /* a push: a slot done at once */
    if (d == NULL)
        return;
    keel_buf_t *b = keel_resp_deferred_out(d);
    int rc = keel__srv_resp3(c) ? keel_buf_append_str(b, pat ? ">4\r\n" : ">3\r\n")
                                : keel_resp_write_array_header(b, pat ? 4 : 3);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(b, pat ? "pmessage" : "message");
    if (rc == 0 && pat)
        rc = keel_resp_write_bulk(b, pat, pat_len);
    if (rc == 0)
        rc = keel_resp_write_bulk(b, ch, ch_len);
    if (rc == 0)
        rc = keel_resp_write_bulk(b, msg, msg_len);
    keel_resp_deferred_done(d, rc);
}

void keel__srv_on_peer_publish(void *data, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                               size_t msg_len)
{
    server_t *s = data;
    keel_pubsub_publish(s->pubsub, ch, ch_len, msg, msg_len, push_message, s);
}

int keel__srv_cmd_publish(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    size_t n = keel_pubsub_publish(s->pubsub, argv[1].ptr, argv[1].len, argv[2].ptr, argv[2].len,
                                   push_message, s);
    if (s->node)
        keel_node_publish(s->node, argv[1].ptr, argv[1].len, argv[2].ptr, argv[2].len);
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_resp_write_int(out, (int64_t)n) : KEEL_ENOMEM;
}

static int sub_reply(keel_resp_client_t *c, const char *kind, const uint8_t *name, size_t len,
                     size_t count)
{
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    int rc = keel_resp_write_array_header(out, 3);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, kind);
    if (rc == 0)
        rc = name ? keel_resp_write_bulk(out, name, len) : keel_resp_write_nil(out);
    return rc == 0 ? keel_resp_write_int(out, (int64_t)count) : rc;
}

static int subscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int pat)
{
    keel_resp_client_reply(c, KEEL_RESP_REPLY_PUSHING); /* sent even with CLIENT REPLY OFF */
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    if (cs->closed) /* gone meanwhile (run inside EXEC): never back in the registry */
        return 0;
    for (size_t i = 1; i < argc; i++) {
        int rc = keel_pubsub_subscribe(s->pubsub, c, argv[i].ptr, argv[i].len, pat);
        if (rc < 0)
            return rc == KEEL_EFULL ? keel__srv_error(c, "ERR keel: too many subscriptions")
                                    : keel__srv_oom(c);
        rc = sub_reply(c, pat ? "psubscribe" : "subscribe", argv[i].ptr, argv[i].len,
                       keel_pubsub_count(s->pubsub, c));
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int unsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int pat)
{
    keel_resp_client_reply(c, KEEL_RESP_REPLY_PUSHING);
    server_t *s = keel__srv_of(c);
    const char *kind = pat ? "punsubscribe" : "unsubscribe";
    int rc = 0;
    if (argc == 1) { /* from everything of this kind */
        const uint8_t *name;
        size_t len, any = 0;
        while (rc == 0 && keel_pubsub_nth(s->pubsub, c, pat, 0, &name, &len) == 0) {
            /* reply first: name is freed by the unsubscribe */
            rc = sub_reply(c, kind, name, len, keel_pubsub_count(s->pubsub, c) - 1);
            keel_pubsub_unsubscribe(s->pubsub, c, name, len, pat);
            any++;
        }
        return any || rc ? rc : sub_reply(c, kind, NULL, 0, keel_pubsub_count(s->pubsub, c));
    }
    for (size_t i = 1; rc == 0 && i < argc; i++) {
        keel_pubsub_unsubscribe(s->pubsub, c, argv[i].ptr, argv[i].len, pat);
        rc = sub_reply(c, kind, argv[i].ptr, argv[i].len, keel_pubsub_count(s->pubsub, c));
    }
    return rc;
}

int keel__srv_cmd_subscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return subscribe(c, argc, argv, 0);
}

int keel__srv_cmd_psubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return subscribe(c, argc, argv, 1);
}

int keel__srv_cmd_unsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return unsubscribe(c, argc, argv, 0);
}

int keel__srv_cmd_punsubscribe(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    return unsubscribe(c, argc, argv, 1);
}
