/* test_tx_util.h - a real one-node keel server for tx/ tests (build/keel beside the test
 * binary, started in a scratch directory), and a loop that runs until a condition holds. */
#ifndef KEEL_TESTS_TX_UTIL_H
#define KEEL_TESTS_TX_UTIL_H

#include "client/blocking.h"
#include "client/client.h"
#include "ktest.h"
#include "runtime/loop.h"

#include <arpa/inet.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct tx_server {
    pid_t pid;
    char dir[256];
    char addr[64];
} tx_server_t;

static inline int tx_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts <dir of this binary>/../keel server; 0, or -1 when it is not built (skip). Waits
 * until a write succeeds (a leader is elected). */
static inline int tx_server_start(tx_server_t *s)
{
    char self[1024] = {0}, exe[1100];
    if (readlink("/proc/self/exe", self, sizeof(self) - 1) < 0)
        return -1;
    snprintf(exe, sizeof(exe), "%s/../keel", dirname(self));
    if (access(exe, X_OK) != 0)
        return -1;
    KT_TMPDIR(s->dir, "tx");
    int cport = tx_free_port(), hport = tx_free_port(), pport = tx_free_port();
    char data[300], lc[64], lh[64], ic[96];
    snprintf(data, sizeof(data), "%s/data", s->dir);
    snprintf(lc, sizeof(lc), "127.0.0.1:%d", cport);
    snprintf(lh, sizeof(lh), "127.0.0.1:%d", hport);
    snprintf(ic, sizeof(ic), "n1=127.0.0.1:%d", pport);
    snprintf(s->addr, sizeof(s->addr), "%s", lc);
    s->pid = fork();
    KT_CHECK(s->pid >= 0);
    if (s->pid == 0) {
        char logp[320];
        snprintf(logp, sizeof(logp), "%s/server.log", s->dir);
        if (freopen(logp, "w", stderr) == NULL || freopen(logp, "a", stdout) == NULL)
            _exit(126);
        execl(exe, exe, "server", "--name", "n1", "--data-dir", data, "--listen-client", lc,
              "--listen-http", lh, "--initial-cluster", ic, (char *)NULL);
        _exit(127);
    }
    const char *seeds[] = {s->addr};
    const char *argv[] = {"SET", "tx:ready", "1"};
    for (int i = 0; i < 200; i++) {
        keel_client_reply_t r;
        if (keel_client_call(seeds, 1, 3, argv, 2000, &r, NULL) == 0) {
            int ok = r.v->type == KEEL_RESP_SIMPLE;
            keel_client_reply_free(&r);
            if (ok)
                return 0;
        }
        usleep(50 * 1000);
    }
    KT_FAIL("keel server at %s did not take a write", s->addr);
    return -1;
}

static inline void tx_server_stop(tx_server_t *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int st;
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    KT_RMRF(s->dir);
}

/* One blocking command on the server; the reply is owned by the caller. */
static inline keel_client_reply_t tx_call(const tx_server_t *s, size_t argc, const char **argv)
{
    const char *seeds[] = {s->addr};
    keel_client_reply_t r;
    KT_EQ_INT(keel_client_call(seeds, 1, argc, argv, 5000, &r, NULL), 0);
    return r;
}

/* Runs the loop until *flag is non-zero or timeout_ms passes (a failure). */
static inline void tx_run_until(keel_loop_t *loop, const int *flag, keel_ms_t timeout_ms)
{
    uv_update_time(&loop->uv);
    keel_ms_t end = keel_loop_now_ms(loop) + timeout_ms;
    while (!*flag) {
        uv_run(&loop->uv, UV_RUN_ONCE);
        if (keel_loop_now_ms(loop) > end)
            KT_FAIL("timed out waiting on the loop");
    }
}

static inline void tx_client_init(keel_client_t *cl, keel_loop_t *loop, const tx_server_t *s)
{
    keel_client_config_t cfg = keel_client_config_default();
    cfg.seeds[0] = s->addr;
    cfg.seeds_n = 1;
    KT_EQ_INT(keel_client_init(cl, loop, &cfg, NULL), 0);
}

static inline void tx__closed(keel_client_t *cl)
{
    (void)cl;
}

static inline void tx_client_close(keel_client_t *cl, keel_loop_t *loop)
{
    keel_client_close(cl, tx__closed);
    for (int i = 0; i < 100; i++)
        uv_run(&loop->uv, UV_RUN_NOWAIT);
}

#endif
