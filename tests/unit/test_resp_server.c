/* test_resp_server.c - the RESP server in-process: loop in a thread, blocking sockets as clients.
 */
#include "base/buf.h"
#include "proto/resp.h"
#include "runtime/loop.h"
#include "runtime/resp_server.h"
#include "ktest.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* keel_buf_rptr() of a never-allocated buffer is NULL + 0, which clang's UBSan flags. */
#define RPTR(b) ((b)->data ? keel_buf_rptr(b) : (const uint8_t *)"")

/* ---- test commands (run on the loop thread) ---------------------------------------- */

/* BIG n: a bulk of n bytes, to hit the output limit. */
static int cmd_big(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    size_t n = (size_t)strtoul((const char *)argv[1].ptr, NULL, 10);
    char *p = malloc(n + 1);
    memset(p, 'x', n);
    keel_buf_t *o = keel_resp_client_out(c);
    int rc = o ? keel_resp_write_bulk(o, p, n) : KEEL_ENOMEM;
    free(p);
    return rc;
}

typedef struct later {
    uv_timer_t timer;
    keel_resp_deferred_t *slot;
    char value[64];
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    int rc = keel_resp_write_bulk_str(keel_resp_deferred_out(l->slot), l->value);
    keel_resp_deferred_done(l->slot, rc);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

/* DEFER ms value: replies value after ms, as a Raft commit would. */
static int cmd_defer(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_resp_server_t *s = keel_resp_client_server(c);
    later_t *l = calloc(1, sizeof(*l));
    snprintf(l->value, sizeof(l->value), "%.*s", (int)argv[2].len, (const char *)argv[2].ptr);
    l->slot = keel_resp_client_defer(c);
    assert(l->slot != NULL); /* loop thread: no KT_ checks here */
    uv_timer_init(&s->loop->uv, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, later_fire, strtoul((const char *)argv[1].ptr, NULL, 10), 0);
    return 0;
}

/* DEFERNOW value: defers and completes before returning. */
static int cmd_defernow(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    int rc = keel_resp_write_bulk(keel_resp_deferred_out(d), argv[1].ptr, argv[1].len);
    keel_resp_deferred_done(d, rc);
    return 0;
}

/* REPLY ON|OFF|SKIP: the runtime's CLIENT REPLY. */
static int cmd_reply(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    char m = (char)argv[1].ptr[1];
    if (m == 'N') {
        keel_resp_client_reply(c, KEEL_RESP_REPLY_ON);
        return keel_resp_write_simple(keel_resp_client_out(c), "OK");
    }
    keel_resp_client_reply(c, m == 'F' ? KEEL_RESP_REPLY_OFF : KEEL_RESP_REPLY_SKIP);
    return 0;
}

/* While holding is on, before_command holds every ECHO (CLIENT PAUSE's mechanism); RELEASE
   turns it off and resumes the held clients. */
static int holding;

static int hold_echo(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                     const keel_resp_arg_t *argv)
{
    return holding && strcmp(cmd->name, "echo") == 0 ? KEEL_RESP_HOLD : 0;
}

static int cmd_release(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    holding = 0;
    keel_resp_server_t *s = keel_resp_client_server(c);
    for (keel_resp_client_t *x = keel_resp_server_next_client(s, NULL); x != NULL;
         x = keel_resp_server_next_client(s, x))
        keel_resp_client_resume(x);
    return keel_resp_write_simple(keel_resp_client_out(c), "OK");
}

/* TAKE value: takes the command's bytes (keel_resp_client_take_input) and answers value from
   them 20 ms later, as a large SET sent in pieces does; UNTAKE value gives them back at once. */
typedef struct taken {
    uv_timer_t timer;
    keel_resp_deferred_t *slot;
    keel_buf_t in;
    const uint8_t *value;
    size_t len;
} taken_t;

static void taken_closed(uv_handle_t *h)
{
    taken_t *t = h->data;
    keel_buf_free(&t->in);
    free(t);
}

static void taken_fire(uv_timer_t *timer)
{
    taken_t *t = timer->data;
    int rc = keel_resp_write_bulk(keel_resp_deferred_out(t->slot), t->value, t->len);
    keel_resp_deferred_done(t->slot, rc);
    uv_close((uv_handle_t *)&t->timer, taken_closed);
}

static int cmd_take(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_resp_server_t *s = keel_resp_client_server(c);
    taken_t *t = calloc(1, sizeof(*t));
    if (keel_resp_client_take_input(c, &t->in) != 0)
        abort();
    t->value = argv[1].ptr;
    t->len = argv[1].len;
    t->slot = keel_resp_client_defer(c);
    uv_timer_init(&s->loop->uv, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, taken_fire, 20, 0);
    return 0;
}

static int cmd_untake(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t in;
    if (keel_resp_client_take_input(c, &in) != 0)
        abort();
    keel_resp_client_untake_input(c, &in);
    return keel_resp_write_bulk(keel_resp_client_out(c), argv[1].ptr, argv[1].len);
}

static int closed_clients;

static void on_client_closed(keel_resp_client_t *c)
{
    closed_clients++;
}

static const keel_resp_command_t test_cmds[] = {
    {"BIG", 2, 0, cmd_big, .summary = NULL},           {"defer", 3, 0, cmd_defer, .summary = NULL},
    {"DeferNow", 2, 0, cmd_defernow, .summary = NULL}, {"REPLY", 2, 0, cmd_reply, .summary = NULL},
    {"RELEASE", 1, 0, cmd_release, .summary = NULL},   {"TAKE", 2, 0, cmd_take, .summary = NULL},
    {"UNTAKE", 2, 0, cmd_untake, .summary = NULL},
};

/* ---- fixture: a server and its loop on a thread ---------------------------------------- */

typedef struct fixture {
    keel_loop_t loop;
    keel_resp_server_t srv;
    uv_async_t stop;
    pthread_t thread;
    int port;
} fixture_t;

static void *loop_thread(void *arg)
{
    fixture_t *f = arg;
    uv_run(&f->loop.uv, UV_RUN_DEFAULT);
    return NULL;
}

static void on_stop(uv_async_t *a)
{
    fixture_t *f = a->data;
    keel_resp_server_close(&f->srv, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static keel_resp_server_config_t test_config(void)
{
    keel_resp_server_config_t cfg = keel_resp_server_config_default();
    cfg.listen = "127.0.0.1:0";
    return cfg;
}

static void start(fixture_t *f, const keel_resp_server_config_t *cfg)
{
    keel_errmsg_t msg;
    closed_clients = 0;
    KT_EQ_INT(keel_loop_init(&f->loop), 0);
    int rc = keel_resp_server_init(&f->srv, &f->loop, cfg, test_cmds,
                                   sizeof(test_cmds) / sizeof(test_cmds[0]), NULL, &msg);
    if (rc != 0)
        KT_FAIL("init: %s", msg.text);
    rc = keel_resp_server_listen(&f->srv, &msg);
    if (rc != 0)
        KT_FAIL("listen: %s", msg.text);
    f->port = keel_resp_server_port(&f->srv);
    KT_CHECK(f->port > 0);
    uv_async_init(&f->loop.uv, &f->stop, on_stop);
    f->stop.data = f;
    KT_EQ_INT(pthread_create(&f->thread, NULL, loop_thread, f), 0);
}

static void stop(fixture_t *f)
{
    uv_async_send(&f->stop);
    pthread_join(f->thread, NULL);
    KT_EQ_INT(f->srv.clients_len, 0);
    KT_EQ_INT(keel_loop_close(&f->loop), 0);
}

/* ---- blocking clients ---------------------------------------------------------------- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    KT_CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    KT_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        KT_CHECK(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Sends what the peer takes; a peer that closed part way (EPIPE, ECONNRESET) is no failure. */
static void send_until_closed(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads exactly strlen(want) bytes and compares. */
static void expect(int fd, const char *want)
{
    size_t n = strlen(want), got = 0;
    char *buf = malloc(n + 1);
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) {
            buf[got] = '\0';
            free(buf);
            KT_FAIL("connection ended (%zd, %s) after %zu of %zu bytes; want \"%.60s\"", r,
                    r < 0 ? strerror(errno) : "eof", got, n, want);
        }
        got += (size_t)r;
    }
    buf[n] = '\0';
    if (memcmp(buf, want, n) != 0) {
        char copy[200];
        snprintf(copy, sizeof(copy), "%s", buf);
        free(buf);
        KT_FAIL("got \"%.80s\", want \"%.80s\"", copy, want);
    }
    free(buf);
}

/* The server closed the connection (orderly or by reset) with nothing more to read. */
static void expect_closed(int fd)
{
    char b[64];
    ssize_t r = recv(fd, b, sizeof(b), 0);
    if (r > 0)
        KT_FAIL("%zd unexpected bytes: \"%.*s\"", r, (int)r, b);
    if (r < 0 && errno != ECONNRESET)
        KT_FAIL("recv: %s (want eof)", strerror(errno));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- tests ------------------------------------------------------------------------- */

static void answers_ping_echo_and_inline_commands(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "PING\r\n");
    expect(fd, "+PONG\r\n");
    send_str(fd, "*2\r\n$4\r\necho\r\n$5\r\nhello\r\n");
    expect(fd, "$5\r\nhello\r\n");
    send_str(fd, "ping \"a b\"\r\n");
    expect(fd, "$3\r\na b\r\n");
    send_str(fd, "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
    expect(fd, "$0\r\n\r\n");
    close(fd);
    stop(&f);
    KT_EQ_U64(f.srv.commands_total, 4);
}

static void unknown_commands_and_wrong_arity_get_redis_errors(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "FOO a b\r\n");
    expect(fd, "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
    send_str(fd, "nope\r\n");
    expect(fd, "-ERR unknown command 'nope', with args beginning with: \r\n");
    send_str(fd, "ECHO\r\n");
    expect(fd, "-ERR wrong number of arguments for 'echo' command\r\n");
    send_str(fd, "PING a b\r\n");
    expect(fd, "-ERR wrong number of arguments for 'ping' command\r\n");
    send_str(fd, "Defer 1\r\n");
    expect(fd, "-ERR wrong number of arguments for 'defer' command\r\n");
    send_str(fd, "PING\r\n"); /* still usable */
    expect(fd, "+PONG\r\n");
    close(fd);
    stop(&f);
}

static void pipelined_commands_are_answered_in_order(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    keel_buf_t req, want;
    keel_buf_init(&req, 0);
    keel_buf_init(&want, 0);
    for (int i = 0; i < 2000; i++) {
        if (i % 3 == 0) {
            keel_buf_append_str(&req, "PING\r\n");
            keel_buf_append_str(&want, "+PONG\r\n");
        } else {
            char v[16];
            int n = snprintf(v, sizeof(v), "v%d", i);
            keel_resp_arg_t argv[2] = {{(const uint8_t *)"ECHO", 4},
                                       {(const uint8_t *)v, (size_t)n}};
            keel_resp_write_command(&req, 2, argv);
            keel_resp_write_bulk(&want, v, (size_t)n);
        }
    }
    keel_buf_append(&want, "", 1);
    int fd = dial(f.port);
    send_all(fd, RPTR(&req), keel_buf_unread(&req));
    expect(fd, (const char *)RPTR(&want));
    close(fd);
    keel_buf_free(&req);
    keel_buf_free(&want);
    stop(&f);
    KT_EQ_U64(f.srv.commands_total, 2000);
}

static void a_request_sent_one_byte_at_a_time_is_answered_once(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    const char *s = "*2\r\n$4\r\nECHO\r\n$6\r\nsplit!\r\nPING\r\n";
    for (size_t i = 0; s[i] != '\0'; i++) {
        send_all(fd, s + i, 1);
        if (i % 5 == 0)
            sleep_ms(1);
    }
    expect(fd, "$6\r\nsplit!\r\n+PONG\r\n");
    close(fd);
    stop(&f);
}

static void a_large_value_crosses_many_reads_and_writes_intact(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    size_t n = 3u << 20; /* 3 MiB: ~200 reads of 16 KiB, several partial writes */
    char *v = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = (char)('a' + i % 26);
    v[n] = '\0';
    keel_buf_t req, want;
    keel_buf_init(&req, 0);
    keel_buf_init(&want, 0);
    keel_resp_arg_t argv[2] = {{(const uint8_t *)"ECHO", 4}, {(const uint8_t *)v, n}};
    keel_resp_write_command(&req, 2, argv);
    keel_resp_write_command(&req, 1, argv); /* then a PING-like: ECHO alone is an arity error */
    keel_resp_write_bulk(&want, v, n);
    keel_buf_append_str(&want, "-ERR wrong number of arguments for 'echo' command\r\n");
    keel_buf_append(&want, "", 1);
    int fd = dial(f.port);
    send_all(fd, RPTR(&req), keel_buf_unread(&req));
    expect(fd, (const char *)RPTR(&want));
    close(fd);
    free(v);
    keel_buf_free(&req);
    keel_buf_free(&want);
    stop(&f);
}

static void deferred_replies_keep_request_order(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    /* the first reply completes last; everything behind it waits, in order */
    send_str(fd, "DEFER 80 a\r\nPING\r\nDEFER 10 b\r\nECHO c\r\nDEFERNOW d\r\nDEFER 0 e\r\n");
    expect(fd, "$1\r\na\r\n+PONG\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n");
    /* with nothing outstanding, a synchronous completion goes straight out */
    send_str(fd, "DEFERNOW x\r\nPING\r\n");
    expect(fd, "$1\r\nx\r\n+PONG\r\n");
    close(fd);
    stop(&f);
}

static void a_handler_may_take_its_commands_bytes_and_the_rest_goes_on(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    /* the taken bytes stay valid after the handler; what followed is parsed from a new buffer */
    send_str(fd, "*2\r\n$4\r\nTAKE\r\n$5\r\nfirst\r\nPING\r\n*2\r\n$4\r\nTAKE\r\n$3\r\nsec\r\n"
                 "*2\r\n$6\r\nUNTAKE\r\n$4\r\nback\r\nECHO e\r\n");
    expect(fd, "$5\r\nfirst\r\n+PONG\r\n$3\r\nsec\r\n$4\r\nback\r\n$1\r\ne\r\n");
    /* a command split across reads, taken, then one given back, with more behind them */
    send_str(fd, "*2\r\n$4\r\nTAKE\r\n$6\r\nsp");
    usleep(20000);
    send_str(fd, "lit!\r\n*2\r\n$6\r\nUNTAKE\r\n$2\r\nok\r\nPING\r\n");
    expect(fd, "$6\r\nsplit!\r\n$2\r\nok\r\n+PONG\r\n");
    close(fd);
    stop(&f);
}

static void expect_nothing_for(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    KT_EQ_INT(poll(&p, 1, ms), 0);
}

static void reply_off_and_skip_drop_replies_decided_per_command(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    /* a deferred reply made while off is dropped when it completes, after ON's +OK */
    send_str(fd, "REPLY OFF\r\nPING\r\nDEFER 50 a\r\nNOSUCH\r\nREPLY ON\r\nECHO b\r\n");
    expect(fd, "+OK\r\n$1\r\nb\r\n");
    /* SKIP drops its own reply and the next command's, an unknown command's too */
    send_str(fd, "REPLY SKIP\r\nNOSUCH\r\nECHO c\r\nREPLY SKIP\r\nDEFER 10 d\r\nECHO e\r\n");
    expect(fd, "$1\r\nc\r\n$1\r\ne\r\n");
    send_str(fd, "REPLY SKIP\r\nREPLY ON\r\nPING\r\n");
    expect(fd, "+OK\r\n+PONG\r\n");
    close(fd);
    stop(&f);
}

static void a_held_command_waits_unconsumed_and_runs_when_resumed(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.before_command = hold_echo;
    holding = 1;
    start(&f, &cfg);
    int a = dial(f.port), b = dial(f.port), gone = dial(f.port);
    send_str(a, "PING\r\nECHO x\r\nPING\r\n"); /* the PING after the held ECHO waits too */
    expect(a, "+PONG\r\n");
    expect_nothing_for(a, 150);
    send_str(gone, "ECHO never\r\n");
    close(gone); /* a client that leaves while held is closed, its command dropped */
    send_str(b, "PING\r\n");
    expect(b, "+PONG\r\n");
    send_str(b, "RELEASE\r\n");
    expect(b, "+OK\r\n");
    expect(a, "$1\r\nx\r\n+PONG\r\n");
    close(a);
    close(b);
    stop(&f);
}

static void backpressure_pauses_a_client_with_too_many_deferred_replies(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.pending_replies_max = 2;
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "DEFER 30 a\r\nDEFER 20 b\r\nDEFER 10 c\r\nDEFER 5 d\r\nPING\r\nECHO e\r\n");
    expect(fd, "$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n+PONG\r\n$1\r\ne\r\n");
    close(fd);
    stop(&f);
}

static void a_deferred_reply_finishing_after_disconnect_is_dropped(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.client_closed = on_client_closed;
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "DEFER 100 late\r\nPING\r\n");
    sleep_ms(20);
    close(fd);
    sleep_ms(200); /* the timer fires on an orphaned slot */
    int fd2 = dial(f.port);
    send_str(fd2, "PING\r\n");
    expect(fd2, "+PONG\r\n");
    close(fd2);
    stop(&f);
    KT_EQ_INT(closed_clients, 2);
}

static void a_protocol_error_closes_only_that_connection(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int bad = dial(f.port), good = dial(f.port);
    send_str(bad, "PING\r\n*1\r\n$x\r\nPING\r\n");
    expect(bad, "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n");
    expect_closed(bad);
    send_str(good, "PING\r\n");
    expect(good, "+PONG\r\n");
    close(bad);
    close(good);
    stop(&f);
    KT_EQ_U64(f.srv.protocol_errors_total, 1);
}

static void oversized_requests_get_an_error_or_a_close(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.resp.bulk_bytes_max = 1024;
    cfg.resp.inline_bytes_max = 1024;
    cfg.querybuf_bytes_max = 2048;
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "*1\r\n$2000\r\n");
    expect(fd, "-ERR Protocol error: invalid bulk length\r\n");
    expect_closed(fd);
    close(fd);
    /* three bulks of 1000 bytes: each is legal, the command does not fit the query buffer */
    fd = dial(f.port);
    char chunk[1000];
    memset(chunk, 'q', sizeof(chunk));
    send_str(fd, "*3\r\n");
    /* the server may close while the last bytes are still being sent */
    for (int i = 0; i < 3; i++) {
        send_until_closed(fd, "$1000\r\n", 7);
        send_until_closed(fd, chunk, sizeof(chunk));
        send_until_closed(fd, "\r\n", 2);
    }
    expect_closed(fd);
    close(fd);
    stop(&f);
}

static void clients_over_the_limit_are_told_and_closed(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.clients_max = 2;
    start(&f, &cfg);
    int a = dial(f.port), b = dial(f.port);
    send_str(a, "PING\r\n");
    expect(a, "+PONG\r\n");
    send_str(b, "PING\r\n");
    expect(b, "+PONG\r\n");
    int c = dial(f.port);
    expect(c, "-ERR max number of clients reached\r\n");
    expect_closed(c);
    close(c);
    close(a);
    /* once a's close is seen, there is room again */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        sleep_ms(10);
        int d = dial(f.port);
        send_str(d, "PING\r\n");
        char buf[8] = {0};
        ssize_t r = recv(d, buf, 7, MSG_WAITALL);
        ok = r == 7 && memcmp(buf, "+PONG\r\n", 7) == 0;
        close(d);
    }
    KT_CHECK(ok);
    close(b);
    stop(&f);
    KT_CHECK(f.srv.rejected_total >= 1);
}

static void a_reply_over_the_output_limit_disconnects_the_client(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.reply_bytes_max = 64 * 1024;
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "BIG 10\r\n");
    expect(fd, "$10\r\nxxxxxxxxxx\r\n");
    send_str(fd, "BIG 100000\r\n");
    expect_closed(fd);
    close(fd);
    /* replies that pile up past the limit before they can be written cut the client off */
    fd = dial(f.port);
    int rcv = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    for (int i = 0; i < 2000; i++)
        if (send(fd, "BIG 60000\r\n", 11, MSG_NOSIGNAL) != 11)
            break; /* the server hung up */
    sleep_ms(100);
    close(fd);
    stop(&f);
    KT_EQ_U64(f.srv.output_limit_closes_total, 2);
}

static void quit_and_eof_answer_then_close(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    start(&f, &cfg);
    int fd = dial(f.port);
    send_str(fd, "PING\r\nQUIT\r\nPING\r\n");
    expect(fd, "+PONG\r\n+OK\r\n");
    expect_closed(fd);
    close(fd);
    fd = dial(f.port);
    send_str(fd, "PING\r\nDEFER 30 z\r\n");
    shutdown(fd, SHUT_WR);
    expect(fd, "+PONG\r\n$1\r\nz\r\n");
    expect_closed(fd);
    close(fd);
    stop(&f);
}

static void idle_clients_are_closed_after_the_timeout(void)
{
    fixture_t f;
    keel_resp_server_config_t cfg = test_config();
    cfg.idle_timeout_ms = 100;
    start(&f, &cfg);
    int idle = dial(f.port), busy = dial(f.port);
    for (int i = 0; i < 8; i++) {
        sleep_ms(30);
        send_str(busy, "PING\r\n");
        expect(busy, "+PONG\r\n");
    }
    expect_closed(idle); /* 240 ms without input */
    send_str(busy, "PING\r\n");
    expect(busy, "+PONG\r\n");
    close(idle);
    close(busy);
    stop(&f);
    KT_EQ_U64(f.srv.idle_closes_total, 1);
}

static void rejects_bad_configs_and_command_tables(void)
{
    keel_loop_t loop;
    KT_EQ_INT(keel_loop_init(&loop), 0);
    keel_resp_server_t s;
    keel_errmsg_t msg;
    keel_resp_server_config_t cfg = test_config();
    cfg.querybuf_bytes_max = cfg.resp.bulk_bytes_max;
    KT_EQ_INT(keel_resp_server_init(&s, &loop, &cfg, NULL, 0, NULL, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "querybuf_bytes_max") != NULL);
    cfg = test_config();
    cfg.reply_bytes_max = (size_t)KEEL_RESP_SERVER_BUF_BYTES_MAX + 1;
    KT_EQ_INT(keel_resp_server_init(&s, &loop, &cfg, NULL, 0, NULL, &msg), KEEL_EINVAL);
    cfg = test_config();
    keel_resp_command_t dup[] = {{"GET", 2, 0, cmd_big, .summary = NULL},
                                 {"get", 2, 0, cmd_big, .summary = NULL}};
    KT_EQ_INT(keel_resp_server_init(&s, &loop, &cfg, dup, 2, NULL, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "twice") != NULL);
    keel_resp_command_t zero[] = {{"GET", 0, 0, cmd_big, .summary = NULL}};
    KT_EQ_INT(keel_resp_server_init(&s, &loop, &cfg, zero, 1, NULL, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_loop_close(&loop), 0);
}

int main(void)
{
    KT_RUN(answers_ping_echo_and_inline_commands);
    KT_RUN(unknown_commands_and_wrong_arity_get_redis_errors);
    KT_RUN(pipelined_commands_are_answered_in_order);
    KT_RUN(a_request_sent_one_byte_at_a_time_is_answered_once);
    KT_RUN(a_large_value_crosses_many_reads_and_writes_intact);
    KT_RUN(deferred_replies_keep_request_order);
    KT_RUN(a_handler_may_take_its_commands_bytes_and_the_rest_goes_on);
    KT_RUN(reply_off_and_skip_drop_replies_decided_per_command);
    KT_RUN(a_held_command_waits_unconsumed_and_runs_when_resumed);
    KT_RUN(backpressure_pauses_a_client_with_too_many_deferred_replies);
    KT_RUN(a_deferred_reply_finishing_after_disconnect_is_dropped);
    KT_RUN(a_protocol_error_closes_only_that_connection);
    KT_RUN(oversized_requests_get_an_error_or_a_close);
    KT_RUN(clients_over_the_limit_are_told_and_closed);
    KT_RUN(a_reply_over_the_output_limit_disconnects_the_client);
    KT_RUN(quit_and_eof_answer_then_close);
    KT_RUN(idle_clients_are_closed_after_the_timeout);
    KT_RUN(rejects_bad_configs_and_command_tables);
    return kt_done();
}
