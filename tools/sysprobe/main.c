/*
 * keel-sysprobe - what this machine charges for the kernel work every server pays per request:
 * a null system call, a small write and read over a local socket (Unix and TCP loopback), a
 * thread wake-up, and a small fdatasync in a directory. Printed by `make bench` before the
 * server benchmarks, because they differ a lot between machines (a virtual machine's guest
 * pays for every kernel entry and cross-core wake-up) and they bound every unpipelined
 * figure below them (bench/RESULTS.md).
 *
 *   keel-sysprobe [--dir DIR] [--rounds N]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS_DEFAULT 100000
#define ROUNDS_MAX 100000000
#define SYNC_ROUNDS 200
#define MSG_BYTES 100

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "keel-sysprobe: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void xwrite(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        die("write");
}

static void xread(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)p + got, n - got);
        if (k <= 0)
            die("read");
        got += (size_t)k;
    }
}

/* One write and the matching read on a connected pair, same thread: no wake-up involved. */
static double pair_ns(int a, int b, long rounds)
{
    char buf[MSG_BYTES] = {0};
    double t0 = now_ns();
    for (long i = 0; i < rounds; i++) {
        xwrite(a, buf, sizeof(buf));
        xread(b, buf, sizeof(buf));
    }
    return (now_ns() - t0) / (double)rounds;
}

static void tcp_pair(int sv[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0)
        die("listen on 127.0.0.1");
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("connect");
    sv[1] = accept(l, NULL, NULL);
    if (sv[1] < 0)
        die("accept");
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    close(l);
}

/* Ping-pong with a second thread: each round trip is two wake-ups of a blocked reader. */
static void *echo_main(void *arg)
{
    int fd = *(int *)arg;
    char buf[MSG_BYTES];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof(buf));
        if (k <= 0)
            return NULL;
        xwrite(fd, buf, (size_t)k);
    }
}

static double cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Wall time per round trip; *cpu gets the CPU both threads spent per round trip. */
static double pingpong_ns(long rounds, double *cpu)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair");
    pthread_t th;
    if (pthread_create(&th, NULL, echo_main, &sv[1]) != 0)
        die("pthread_create");
    char buf[MSG_BYTES] = {0};
    double t0 = now_ns(), c0 = cpu_ns();
    for (long i = 0; i < rounds; i++) {
        xwrite(sv[0], buf, sizeof(buf));
        xread(sv[0], buf, sizeof(buf));
    }
    double per = (now_ns() - t0) / (double)rounds;
    *cpu = (cpu_ns() - c0) / (double)rounds;
    close(sv[0]);
    pthread_join(th, NULL);
    close(sv[1]);
    return per;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 200 B appended and fdatasync'd, SYNC_ROUNDS times: p50 and p99 in microseconds. */
static void fdatasync_us(const char *dir, double *p50, double *p99)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/keel-sysprobe.%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path);
    static double t[SYNC_ROUNDS];
    char buf[200];
    memset(buf, 'x', sizeof(buf));
    for (int i = 0; i < SYNC_ROUNDS; i++) {
        xwrite(fd, buf, sizeof(buf));
        double t0 = now_ns();
        if (fdatasync(fd) != 0)
            die("fdatasync");
        t[i] = (now_ns() - t0) / 1e3;
    }
    close(fd);
    unlink(path);
    qsort(t, SYNC_ROUNDS, sizeof(t[0]), cmp_double);
    *p50 = t[SYNC_ROUNDS / 2];
    *p99 = t[SYNC_ROUNDS * 99 / 100];
}

int main(int argc, char **argv)
{
    const char *dir = ".";
    long rounds = ROUNDS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            char *end;
            rounds = strtol(argv[++i], &end, 10);
            if (*end != '\0' || rounds < 1 || rounds > ROUNDS_MAX) {
                fprintf(stderr, "keel-sysprobe: --rounds wants 1..%d\n", ROUNDS_MAX);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: keel-sysprobe [--dir DIR] [--rounds N]\n");
            return 2;
        }
    }

    double t0 = now_ns();
    for (long i = 0; i < rounds; i++)
        syscall(SYS_getppid);
    double null_ns = (now_ns() - t0) / (double)rounds;

    int un[2], tcp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, un) != 0)
        die("socketpair");
    tcp_pair(tcp);
    double un_ns = pair_ns(un[0], un[1], rounds);
    double tcp_ns = pair_ns(tcp[0], tcp[1], rounds);
    double pp_cpu, pp_ns = pingpong_ns(rounds / 4 > 0 ? rounds / 4 : 1, &pp_cpu);
    double s50, s99;
    fdatasync_us(dir, &s50, &s99);

    printf("null system call (getppid):                   %8.0f ns\n", null_ns);
    printf("%d B write + read, Unix socket, one thread:  %8.0f ns\n", MSG_BYTES, un_ns);
    printf("%d B write + read, TCP 127.0.0.1, one thread: %7.0f ns\n", MSG_BYTES, tcp_ns);
    printf("%d B round trip to a blocked thread (Unix):  %8.0f ns (CPU of both threads: %.0f ns)\n",
           MSG_BYTES, pp_ns, pp_cpu);
    printf("200 B append + fdatasync in %s: p50 %.0f us, p99 %.0f us\n", dir, s50, s99);
    return 0;
}
