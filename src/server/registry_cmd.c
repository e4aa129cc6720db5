/* registry_cmd.c - KEEL.REG: the registry's RESP command, sent on as a write or a read. */
#include "server/server_int.h"

#include "proto/resp.h"

#include <string.h>

/*
 * KEEL.REG <subcommand> ... (docs/registry.md; the subcommands are core/kv_registry.c's).
 * core/kv decides whether a command writes by its name, and KEEL.REG both writes
 * (REGISTER, DEREGISTER, PASS, WARN, FAIL, HEARTBEAT) and reads (SERVICES, INSTANCES, GET,
 * INDEX). So this handler looks at the subcommand and sends the command on as
 * KEEL.REG.WRITE (through the Raft log, like SET) or KEEL.REG.READ (ReadIndex from any
 * node, or this node's state under KEEL.READS stale, like GET), in the connection's order.
 * A read waits behind the connection's writes rather than going through the log: its reply
 * can be as large as a service's instances. KEEL.REG WAIT, the blocking query, is the front
 * end's own (registry_http.c's wait lists, shared with the HTTP API), and so is KEEL.REG
 * FEED, the push feed of changes (regfeed.c).
 */
int keel__srv_cmd_reg(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    const keel_resp_command_t *row = keel_resp_client_command(c);
    cmd_stats_t *st = row ? row->data : NULL;
    if (keel__srv_arg_is(&argv[1], "wait")) {
        client_state_t *cs = keel__srv_state(c);
        if (cs == NULL)
            return keel__srv_oom(c);
        if (cs->inflight > 0 || cs->held_head != NULL) /* it answers from the state now */
            return keel__srv_error(c, "ERR KEEL.REG WAIT must not follow commands still "
                                      "running on this connection: wait for their replies");
        return keel__srv_reg_wait(c, argc, argv, cs->stale_reads);
    }
    if (keel__srv_arg_is(&argv[1], "feed"))
        return keel__srv_regfeed_start(c, argc, argv); /* push mode (regfeed.c) */
    unsigned kind = keel_kv_registry_kind(argv[1].ptr, argv[1].len);
    if (kind == 0) {
        if (st)
            keel_counter_inc(st->errors);
        return keel__srv_error(c, "ERR unknown KEEL.REG subcommand: REGISTER, DEREGISTER, PASS, "
                                  "WARN, FAIL, HEARTBEAT, SERVICES, INSTANCES, GET, INDEX, LIMITS, "
                                  "WAIT, FEED");
    }
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
    static const char write_name[] = "KEEL.REG.WRITE", read_name[] = "KEEL.REG.READ";
    s->argv[0] = (const uint8_t *)(kind == KEEL_KV_WRITE ? write_name : read_name);
    s->lens[0] = kind == KEEL_KV_WRITE ? sizeof(write_name) - 1 : sizeof(read_name) - 1;
    for (size_t i = 1; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    /* as keel__srv_cmd_data: the check's error goes to scratch first */
    keel_buf_reset(&s->buf);
    if (keel_kv_check((int)argc, s->argv, s->lens, &s->buf) != 0) {
        if (st)
            keel_counter_inc(st->errors);
        keel_buf_t *out = keel_resp_client_out(c);
        return out ? keel_buf_append(out, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf))
                   : KEEL_ENOMEM;
    }
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    return keel__srv_submit(c, s, cs, argc, kind == KEEL_KV_WRITE ? RUN_WRITE : RUN_READ_HELD, st);
}
