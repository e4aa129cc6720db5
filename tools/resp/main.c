/* main.c - keel-resp: pipelined commands or a SUBSCRIBE feed through src/client, for tests. */
#include "client/client.h"
#include "runtime/loop.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * keel-resp [--addr host:port]... [--timeout-ms N] WORD... [, WORD...]...
 *   sends every command (words up to a lone ",") at once on one client, pipelined, and
 *   prints one line per reply, in order; exit 0 if every command was answered, else 1
 *   with the failure (timed out, connection lost) on its line.
 * keel-resp [--addr host:port]... --subscribe CHANNEL... --count N
 *   prints N pushes of a SUBSCRIBE feed (the confirmations included), then exits 0.
 * The system test tests/system/test_client.py drives it against real servers.
 */
#define RESP_TOOL_CMDS_MAX 256
#define RESP_TOOL_WORDS_MAX 64

typedef struct tool {
    keel_loop_t loop;
    keel_client_t cl;
    const char *addrs[KEEL_CLIENT_SEEDS_MAX];
    size_t addrs_n, cmds_n, done, failed;
    keel_ms_t timeout_ms;
    const char *words[RESP_TOOL_CMDS_MAX][RESP_TOOL_WORDS_MAX];
    size_t words_n[RESP_TOOL_CMDS_MAX];
    char *lines[RESP_TOOL_CMDS_MAX];
    uint64_t count, pushes;
    bool subscribe;
} tool_t;

/* One value as a line: OK, (error) ..., (integer) n, "bulk", (nil), [a, b]. */
static void put_value(FILE *f, const keel_resp_value_t *v)
{
    switch (v->type) {
    case KEEL_RESP_SIMPLE:
        fprintf(f, "%.*s", (int)v->str.len, (const char *)v->str.ptr);
        break;
    case KEEL_RESP_ERROR:
        fprintf(f, "(error) %.*s", (int)v->str.len, (const char *)v->str.ptr);
        break;
    case KEEL_RESP_INT:
        fprintf(f, "(integer) %" PRId64, v->integer);
        break;
    case KEEL_RESP_BULK:
        fprintf(f, "\"%.*s\"", (int)v->str.len, (const char *)v->str.ptr);
        break;
    case KEEL_RESP_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < v->elems_len; i++) {
            fputs(i ? ", " : "", f);
            put_value(f, &v->elems[i]);
        }
        fputc(']', f);
        break;
    default:
        fputs("(nil)", f);
    }
}

static char *value_line(const keel_resp_value_t *v)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    put_value(f, v);
    fclose(f);
    return text;
}

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    tool_t *t = cl->cfg.data;
    size_t i = (size_t)(uintptr_t)ctx;
    if (status == 0) {
        t->lines[i] = value_line(v);
    } else {
        t->failed++;
        size_t n = strlen(keel_err_name(status)) + 16;
        t->lines[i] = malloc(n);
        if (t->lines[i])
            snprintf(t->lines[i], n, "(failed) %s", keel_err_name(status));
    }
    if (++t->done == t->cmds_n)
        keel_client_close(cl, NULL);
}

static void on_push(keel_client_t *cl, const keel_resp_value_t *v, void *data)
{
    tool_t *t = data;
    put_value(stdout, v);
    putchar('\n');
    fflush(stdout);
    if (++t->pushes >= t->count)
        keel_client_close(cl, NULL);
}

static int usage(void)
{
    fprintf(stderr, "usage: keel-resp [--addr host:port]... [--timeout-ms N] WORD... [, WORD...]\n"
                    "       keel-resp [--addr host:port]... --subscribe CHANNEL... --count N\n");
    return 2;
}

static int parse(tool_t *t, int argc, char **argv)
{
    t->timeout_ms = 10000;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--subscribe") == 0) {
            t->subscribe = true;
            i++;
            break;
        }
        if (i + 1 >= argc)
            return -1;
        if (strcmp(argv[i], "--addr") == 0 && t->addrs_n < KEEL_CLIENT_SEEDS_MAX)
            t->addrs[t->addrs_n++] = argv[i + 1];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            t->timeout_ms = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--count") == 0)
            t->count = strtoull(argv[i + 1], NULL, 10);
        else
            return -1;
    }
    for (; i < argc; i++) {
        if (t->subscribe && strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            t->count = strtoull(argv[++i], NULL, 10);
            continue;
        }
        if (t->cmds_n == 0 || strcmp(argv[i], ",") == 0) {
            if (t->cmds_n == RESP_TOOL_CMDS_MAX)
                return -1;
            t->cmds_n++;
            if (strcmp(argv[i], ",") == 0)
                continue;
        }
        size_t *n = &t->words_n[t->cmds_n - 1];
        if (*n == RESP_TOOL_WORDS_MAX)
            return -1;
        t->words[t->cmds_n - 1][(*n)++] = argv[i];
    }
    for (size_t k = 0; k < t->cmds_n; k++)
        if (t->words_n[k] == 0)
            return -1;
    if (t->addrs_n == 0)
        t->addrs[t->addrs_n++] = "127.0.0.1:7001";
    return t->cmds_n > 0 && (!t->subscribe || t->count > 0) ? 0 : -1;
}

static int start(tool_t *t)
{
    keel_client_config_t cfg = keel_client_config_default();
    for (size_t i = 0; i < t->addrs_n; i++)
        cfg.seeds[i] = t->addrs[i];
    cfg.seeds_n = t->addrs_n;
    cfg.request_timeout_ms = t->timeout_ms;
    cfg.on_push = t->subscribe ? on_push : NULL;
    cfg.data = t;
    keel_errmsg_t m;
    int rc = keel_client_init(&t->cl, &t->loop, &cfg, &m);
    if (rc != 0) {
        fprintf(stderr, "keel-resp: %s\n", m.text);
        return rc;
    }
    if (t->subscribe)
        return keel_client_subscribe(&t->cl, t->words_n[0], t->words[0]);
    for (size_t i = 0; i < t->cmds_n && rc == 0; i++)
        rc = keel_client_command(&t->cl, t->words_n[i], t->words[i], NULL, on_reply,
                                 (void *)(uintptr_t)i);
    return rc;
}

int main(int argc, char **argv)
{
    tool_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return 1;
    if (parse(t, argc, argv) != 0) {
        free(t);
        return usage();
    }
    keel_loop_init(&t->loop);
    int rc = start(t);
    if (rc != 0) {
        fprintf(stderr, "keel-resp: %s\n", keel_strerror(rc));
        free(t);
        return 1; /* the client may be open: exiting is the cleanup */
    }
    keel_loop_run(&t->loop);
    for (size_t i = 0; i < t->cmds_n && !t->subscribe; i++) {
        printf("%s\n", t->lines[i] ? t->lines[i] : "(no memory)");
        free(t->lines[i]);
    }
    fprintf(stderr, "keel-resp: %s, %llu failed connection attempts\n", keel_client_addr(&t->cl),
            (unsigned long long)keel_client_stats(&t->cl)->connect_failures);
    keel_loop_close(&t->loop);
    rc = t->failed ? 1 : 0;
    free(t);
    return rc;
}
