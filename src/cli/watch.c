/* watch.c - `keel watch`: print a KEEL.WATCH stream, resuming on another node with FROM. */
#include "cli/cli.h"
#include "cli/cluster.h"

#include "base/buf.h"
#include "proto/resp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/*
 * One line per change on stdout: "<revision> put <key> <value>" or "<revision> del <key>".
 * When a node goes away, or answers -LAGGED, the watch goes on at the next address with
 * FROM the last revision printed, so every revision is printed exactly once (a revision's
 * changes arrive in one push, never split). A node that answers -COMPACTED no longer holds
 * that position; after every address has said so in a row, the command gives up (exit 1).
 */
#define WATCH_ADDRS_MAX 16
/* How often a blocked read wakes up to check --duration. */
#define WATCH_READ_TICK_MS 200
/* Pause before trying the next address after a failure. */
#define WATCH_RETRY_PAUSE_MS 200
#define WATCH_BUFFER_BYTES_MAX (64u * 1024u * 1024u)

typedef struct watch_opts {
    const char *addrs[WATCH_ADDRS_MAX];
    size_t n;
    const char *prefix;
    int64_t from;        /* -1: start at the first node's current revision */
    uint64_t count;      /* stop after this many revisions (0: never) */
    uint64_t duration_s; /* stop after this long (0: never) */
    keel_cluster_t cl;   /* --cluster: its client addresses */
} watch_opts_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: keel watch [--addr host:port]... [--cluster DIR] [--from REVISION]\n"
            "                  [--count N] [--duration S] PREFIX\n"
            "Prints every change under PREFIX (\"\" for all keys), one per line:\n"
            "  <revision> put <key> <value> | <revision> del <key>\n"
            "and resumes on the next address with FROM the last revision printed when a node\n"
            "goes away (exactly once). --from R starts after revision R (default: now).\n");
    return 2;
}

static int dial(const char *addr)
{
    char host[64];
    int port;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (keel_cluster_split_addr(addr, host, sizeof(host), &port) != 0 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    sa.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {0, WATCH_READ_TICK_MS * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_watch(int fd, const watch_opts_t *o, int64_t after)
{
    char from[24];
    keel_buf_t b;
    keel_buf_init(&b, 0);
    int argc = after >= 0 ? 4 : 2;
    int rc = keel_buf_printf(&b, "*%d\r\n$10\r\nKEEL.WATCH\r\n$%zu\r\n%s\r\n", argc,
                             strlen(o->prefix), o->prefix);
    if (rc == 0 && after >= 0) {
        snprintf(from, sizeof(from), "%" PRId64, after);
        rc = keel_buf_printf(&b, "$4\r\nFROM\r\n$%zu\r\n%s\r\n", strlen(from), from);
    }
    if (rc == 0 &&
        write(fd, keel_buf_rptr(&b), keel_buf_unread(&b)) != (ssize_t)keel_buf_unread(&b))
        rc = -1;
    keel_buf_free(&b);
    return rc;
}

static void print_push(const keel_resp_value_t *v, uint64_t rev)
{
    const keel_resp_value_t *ch = &v->elems[2];
    for (size_t i = 0; i < ch->elems_len; i++) {
        const keel_resp_value_t *c = &ch->elems[i];
        if (c->type != KEEL_RESP_ARRAY || c->elems_len != 3)
            continue;
        printf("%" PRIu64 " %.*s %.*s", rev, (int)c->elems[0].str.len,
               (const char *)c->elems[0].str.ptr, (int)c->elems[1].str.len,
               (const char *)c->elems[1].str.ptr);
        if (c->elems[2].type == KEEL_RESP_BULK)
            printf(" %.*s", (int)c->elems[2].str.len, (const char *)c->elems[2].str.ptr);
        putchar('\n');
    }
    fflush(stdout);
}

/* Outcomes of one connection. */
enum { SESSION_DONE, SESSION_LOST, SESSION_COMPACTED };

/* Handles one reply; updates *after; SESSION_* to stop, or -1 to go on. */
static int handle(const watch_opts_t *o, const keel_resp_value_t *v, int64_t *after,
                  uint64_t *revisions, const char *addr)
{
    if (v->type == KEEL_RESP_ERROR) {
        fprintf(stderr, "keel watch: %s: %.*s\n", addr, (int)v->str.len, (const char *)v->str.ptr);
        return v->str.len >= 9 && memcmp(v->str.ptr, "COMPACTED", 9) == 0 ? SESSION_COMPACTED
                                                                          : SESSION_LOST;
    }
    if (v->type != KEEL_RESP_ARRAY || v->elems_len != 3 || v->elems[0].type != KEEL_RESP_BULK)
        return SESSION_LOST;
    const keel_resp_arg_t *kind = &v->elems[0].str;
    if (kind->len == 8 && memcmp(kind->ptr, "watching", 8) == 0) {
        if (*after < 0)
            *after = v->elems[2].integer;
        return -1;
    }
    if (v->elems[1].type != KEEL_RESP_INT || v->elems[2].type != KEEL_RESP_ARRAY)
        return SESSION_LOST;
    uint64_t rev = (uint64_t)v->elems[1].integer;
    print_push(v, rev);
    *after = (int64_t)rev;
    if (o->count && ++*revisions >= o->count)
        return SESSION_DONE;
    return -1;
}

static int session(const watch_opts_t *o, const char *addr, int64_t *after, uint64_t *revisions,
                   uint64_t deadline_ms)
{
    int fd = dial(addr);
    if (fd < 0 || send_watch(fd, o, *after) != 0) {
        if (fd >= 0)
            close(fd);
        return SESSION_LOST;
    }
    keel_buf_t in;
    keel_buf_init(&in, WATCH_BUFFER_BYTES_MAX);
    int out = SESSION_LOST;
    for (;;) {
        keel_resp_value_t *v = NULL;
        size_t used = 0;
        keel_errmsg_t msg;
        int rc =
            keel_resp_parse_reply(NULL, keel_buf_rptr(&in), keel_buf_unread(&in), &v, &used, &msg);
        if (rc == 0) {
            int r = handle(o, v, after, revisions, addr);
            keel_resp_value_free(v);
            keel_buf_consume(&in, used);
            if (r >= 0) {
                out = r;
                break;
            }
            continue;
        }
        if (rc != KEEL_EAGAIN)
            break;
        if (deadline_ms && now_ms() >= deadline_ms) {
            out = SESSION_DONE;
            break;
        }
        char chunk[16384];
        ssize_t k = read(fd, chunk, sizeof(chunk));
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (k <= 0 || keel_buf_append(&in, chunk, (size_t)k) != 0)
            break;
    }
    keel_buf_free(&in);
    close(fd);
    return out;
}

static int parse_opts(int argc, char **argv, watch_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->from = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return -1;
        if (strncmp(a, "--", 2) != 0) {
            if (o->prefix != NULL)
                return -1;
            o->prefix = a;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        char *end = NULL;
        if (strcmp(a, "--addr") == 0 && o->n < WATCH_ADDRS_MAX) {
            o->addrs[o->n++] = v;
        } else if (strcmp(a, "--cluster") == 0) {
            char err[256];
            if (keel_cluster_load(v, &o->cl, err, sizeof(err)) != 0) {
                fprintf(stderr, "keel watch: %s\n", err);
                return -1;
            }
            for (size_t k = 0; k < o->cl.n && o->n < WATCH_ADDRS_MAX; k++)
                o->addrs[o->n++] = o->cl.nodes[k].client;
        } else if (strcmp(a, "--from") == 0) {
            o->from = strtoll(v, &end, 10);
            if (o->from < 0)
                return -1;
        } else if (strcmp(a, "--count") == 0) {
            o->count = strtoull(v, &end, 10);
        } else if (strcmp(a, "--duration") == 0) {
            o->duration_s = strtoull(v, &end, 10);
        } else {
            return -1;
        }
        if (end != NULL && (*end != '\0' || end == v))
            return -1;
    }
    if (o->n == 0)
        o->addrs[o->n++] = "127.0.0.1:7001";
    return o->prefix != NULL ? 0 : -1;
}

int keel_cli_watch(int argc, char **argv)
{
    watch_opts_t *o = malloc(sizeof(*o)); /* keel_cluster_t is large */
    if (o == NULL)
        return 1;
    if (parse_opts(argc, argv, o) != 0) {
        free(o);
        return usage();
    }
    int64_t after = o->from;
    uint64_t revisions = 0;
    uint64_t deadline = o->duration_s ? now_ms() + o->duration_s * 1000u : 0;
    size_t compacted = 0;
    int rc = 0;
    for (size_t i = 0;; i = (i + 1) % o->n) {
        int r = session(o, o->addrs[i], &after, &revisions, deadline);
        if (r == SESSION_DONE)
            break;
        compacted = r == SESSION_COMPACTED ? compacted + 1 : 0;
        if (compacted >= o->n) {
            fprintf(stderr, "keel watch: no node holds the changes after revision %" PRId64 "\n",
                    after);
            rc = 1;
            break;
        }
        if (deadline && now_ms() >= deadline)
            break;
        usleep(WATCH_RETRY_PAUSE_MS * 1000);
    }
    free(o);
    return rc;
}
