/* pause.c - CLIENT PAUSE and UNPAUSE: this node's clients wait, all of them or their writes. */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"
#include "runtime/clock.h"

#include <stdint.h>

/*
 * Redis's client pause (src/networking.c pauseClients, processCommand's postpone), per
 * node: a paused node holds its own clients' commands (WRITE: the commands flagged write,
 * and EXEC of a transaction that queued one; ALL: every command, CLIENT UNPAUSE included,
 * as in Redis 7.0) until the pause ends, at its deadline or at CLIENT UNPAUSE. A held
 * command is not consumed (runtime/resp_server's KEEL_RESP_HOLD): the connection reads
 * nothing further and the command is dispatched again when the pause ends, in the order
 * the connections were held. A second PAUSE while one runs keeps the later deadline and
 * the stronger mode, as Redis does.
 *
 * What it does not stop, said in docs/server.md: writes sent to other nodes (each pauses
 * only its own clients; a follower forwards its clients' writes, so pausing a follower
 * holds them and pausing the leader does not hold a follower's), and the leader's expiry
 * and lease sweeps (Redis pauses expiry during a WRITE pause).
 */

enum { PAUSE_NONE = 0, PAUSE_WRITE = 1, PAUSE_ALL = 2 };

static void on_timer(keel_timer_t *t, void *data);

int keel__srv_pause_init(server_t *s)
{
    keel_list_init(&s->paused);
    int rc = keel_timer_init(&s->loop, &s->pause_timer);
    s->pause_timer_inited = rc == 0;
    return rc;
}

void keel__srv_pause_close(server_t *s)
{
    if (s->pause_timer_inited)
        keel_timer_close(&s->pause_timer, NULL);
    s->pause_timer_inited = 0;
}

/* The pause ends: every held connection runs its command again, first held first (the
 * runtime's pending list is last in, first out: resumed from the newest). */
static void unpause(server_t *s)
{
    s->pause_type = PAUSE_NONE;
    if (s->pause_timer_inited)
        keel_timer_stop(&s->pause_timer);
    keel_list_t *it;
    while ((it = keel_list_last(&s->paused)) != NULL) {
        client_state_t *cs = KEEL_LIST_ENTRY(it, client_state_t, pause_link);
        keel_list_remove(it);
        keel_resp_client_resume(cs->pause_client);
        cs->pause_client = NULL;
    }
}

static void arm(server_t *s, keel_ms_t now)
{
    if (s->pause_timer_inited)
        keel_timer_start(&s->pause_timer, s->pause_end_ms - now, 0, on_timer, s);
}

static void on_timer(keel_timer_t *t, void *data)
{
    server_t *s = data;
    keel_ms_t now = keel_clock_now_ms();
    if (s->pause_type == PAUSE_NONE)
        return;
    if (now >= s->pause_end_ms)
        unpause(s);
    else
        arm(s, now);
}

void keel__srv_pause_closed(client_state_t *cs)
{
    if (cs->pause_client != NULL)
        keel_list_remove(&cs->pause_link);
    cs->pause_client = NULL;
}

/* EXEC writes if a command it queued does (Redis's is_may_replicate_command). */
static int exec_writes(const client_state_t *cs)
{
    for (const pending_reply_t *q = cs->queued_head; q != NULL; q = q->next)
        if (q->row != NULL && (q->row->flags & KEEL_RESP_CMD_WRITE))
            return 1;
    return 0;
}

int keel__srv_pause_holds(keel_resp_client_t *c, const keel_resp_command_t *cmd)
{
    server_t *s = keel__srv_of(c);
    if (s->pause_type == PAUSE_NONE)
        return 0;
    if (keel_clock_now_ms() >= s->pause_end_ms) {
        unpause(s);
        return 0;
    }
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return 0; /* out of memory: run it rather than lose track of it */
    if (s->pause_type == PAUSE_WRITE) {
        int writes = cmd->handler == keel__srv_cmd_exec ? exec_writes(cs)
                                                        : (cmd->flags & KEEL_RESP_CMD_WRITE) != 0;
        if (!writes)
            return 0;
    }
    if (cs->pause_client == NULL) {
        cs->pause_client = c;
        keel_list_init(&cs->pause_link);
        keel_list_insert_tail(&s->paused, &cs->pause_link);
    }
    return 1;
}

/* CLIENT PAUSE timeout [WRITE|ALL]: Redis's checks in its order (the mode, then the time). */
int keel__srv_client_pause(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                           keel_buf_t *out)
{
    server_t *s = keel__srv_of(c);
    int type = PAUSE_ALL;
    if (argc == 4) {
        if (keel__srv_arg_is(&argv[3], "write"))
            type = PAUSE_WRITE;
        else if (!keel__srv_arg_is(&argv[3], "all"))
            return keel_resp_write_error(out, "ERR CLIENT PAUSE mode must be WRITE or ALL");
    }
    int64_t ms;
    if (keel_parse_i64(argv[2].ptr, argv[2].len, &ms) != 0)
        return keel_resp_write_error(out, "ERR timeout is not an integer or out of range");
    if (ms < 0)
        return keel_resp_write_error(out, "ERR timeout is negative");
    keel_ms_t now = keel_clock_now_ms();
    keel_ms_t end = ms > INT64_MAX - now ? INT64_MAX : now + ms; /* past it: until UNPAUSE */
    if (s->pause_type == PAUSE_NONE || end > s->pause_end_ms)
        s->pause_end_ms = end;
    if (type > s->pause_type)
        s->pause_type = type;
    arm(s, now);
    return keel_resp_write_simple(out, "OK");
}

int keel__srv_client_unpause(keel_resp_client_t *c, keel_buf_t *out)
{
    unpause(keel__srv_of(c));
    return keel_resp_write_simple(out, "OK");
}
