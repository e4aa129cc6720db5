/* test_node_conf.c - membership changes and their results as the node carries them. */
#include "server/node.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

static void a_change_encodes_and_decodes_back_and_every_cut_is_refused(void)
{
    keel_node_conf_change_t c = {.op = KEEL_NODE_CONF_JOIN};
    snprintf(c.name, sizeof(c.name), "n4");
    snprintf(c.peer_addr, sizeof(c.peer_addr), "127.0.0.1:7104");
    snprintf(c.client_addr, sizeof(c.client_addr), "127.0.0.1:7004");
    uint8_t b[KEEL_NODE_CONF_BYTES_MAX];
    size_t n = keel_node_conf_encode(&c, b);
    keel_node_conf_change_t d;
    KT_EQ_INT(keel_node_conf_decode(b, n, &d), 0);
    KT_EQ_INT(d.op, KEEL_NODE_CONF_JOIN);
    KT_EQ_STR(d.name, "n4");
    KT_EQ_STR(d.peer_addr, "127.0.0.1:7104");
    KT_EQ_STR(d.client_addr, "127.0.0.1:7004");
    for (size_t cut = 0; cut < n; cut++)
        KT_EQ_INT(keel_node_conf_decode(b, cut, &d), KEEL_EPROTO);
    b[0] = 99; /* no such operation */
    KT_EQ_INT(keel_node_conf_decode(b, n, &d), KEEL_EPROTO);
}

static void results_decode_and_malformed_ones_are_refused(void)
{
    keel_node_conf_result_t r;
    const uint8_t done[] = {KEEL_NODE_CONF_DONE};
    KT_EQ_INT(keel_node_conf_result_decode(done, sizeof(done), &r), 0);
    KT_EQ_INT(r.kind, KEEL_NODE_CONF_DONE);
    const uint8_t id[] = {KEEL_NODE_CONF_ID, 7, 0, 0, 0, 0, 0, 0, 0};
    KT_EQ_INT(keel_node_conf_result_decode(id, sizeof(id), &r), 0);
    KT_EQ_U64(r.id, 7);
    KT_EQ_INT(keel_node_conf_result_decode(id, sizeof(id) - 1, &r), KEEL_EPROTO);
    const uint8_t refused[] = {KEEL_NODE_CONF_REFUSED, 3, 0, 'n', 'o', '!'};
    KT_EQ_INT(keel_node_conf_result_decode(refused, sizeof(refused), &r), 0);
    KT_EQ_STR(r.error, "no!");
    KT_EQ_INT(keel_node_conf_result_decode(refused, sizeof(refused) - 1, &r), KEEL_EPROTO);
    const uint8_t joined_too_many[] = {
        KEEL_NODE_CONF_JOINED, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0};
    KT_EQ_INT(keel_node_conf_result_decode(joined_too_many, sizeof(joined_too_many), &r),
              KEEL_EPROTO);
    const uint8_t trailing[] = {KEEL_NODE_CONF_DONE, 0};
    KT_EQ_INT(keel_node_conf_result_decode(trailing, sizeof(trailing), &r), KEEL_EPROTO);
    const uint8_t bad_kind[] = {9};
    KT_EQ_INT(keel_node_conf_result_decode(bad_kind, sizeof(bad_kind), &r), KEEL_EPROTO);
}

int main(void)
{
    KT_RUN(a_change_encodes_and_decodes_back_and_every_cut_is_refused);
    KT_RUN(results_decode_and_malformed_ones_are_refused);
    return kt_done();
}
