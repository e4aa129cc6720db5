/* watch.c - `keel watch`: print a KEEL.WATCH feed, resuming on another node with FROM. */
#include "cli/cli.h"
#include "cli/cluster.h"

#include "client/client.h"
#include "proto/resp.h"
#include "runtime/loop.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * One line per change on stdout: "<revision> put <key> <value>" or "<revision> del <key>".
 * The stream is a client/client.h feed: when a node goes away, or answers -LAGGED, it goes
 * on at the next address with FROM the last revision printed, so every revision is printed
 * exactly once (a revision's changes arrive in one push, never split). A node that answers
 * -COMPACTED no longer holds that position; after every address has said so in a row, the
 * command gives up (exit 1).
 */
#define WATCH_ADDRS_MAX KEEL_CLIENT_SEEDS_MAX
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

static int usage(FILE *to, int rc)
{
    fprintf(to, "usage: keel watch [--addr host:port]... [--cluster DIR] [--from REVISION]\n"
                "                  [--count N] [--duration S] PREFIX\n"
                "Prints every change under PREFIX (\"\" for all keys), one per line:\n"
                "  <revision> put <key> <value> | <revision> del <key>\n"
                "and resumes on the next address with FROM the last revision printed when a node\n"
                "goes away (exactly once). --from R starts after revision R (default: now).\n");
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

static int parse_opts(int argc, char **argv, watch_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->from = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
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

typedef struct watch_run {
    const watch_opts_t *o;
    keel_loop_t loop;
    keel_client_t cl;
    keel_timer_t duration;
    uint64_t revisions;
    size_t compacted; /* -COMPACTED answers in a row */
    int rc;
    bool stopped;
} watch_run_t;

static void stop(watch_run_t *w, int rc)
{
    if (w->stopped)
        return;
    w->stopped = true;
    w->rc = rc;
    keel_client_close(&w->cl, NULL);
    keel_timer_close(&w->duration, NULL);
}

static void on_error_push(watch_run_t *w, const keel_resp_value_t *v)
{
    fprintf(stderr, "keel watch: %s: %.*s\n", keel_client_addr(&w->cl), (int)v->str.len,
            (const char *)v->str.ptr);
    bool compacted = v->str.len >= 9 && memcmp(v->str.ptr, "COMPACTED", 9) == 0;
    w->compacted = compacted ? w->compacted + 1 : 0;
    if (w->compacted >= w->o->n) {
        fprintf(stderr, "keel watch: no node holds the changes after revision %" PRId64 "\n",
                keel_client_watch_revision(&w->cl));
        stop(w, 1);
    } /* else the feed moves to the next address by itself */
}

/* One push: "watching" (the start), "watch" (one revision), or an error reply. */
static void on_push(keel_client_t *cl, const keel_resp_value_t *v, void *data)
{
    watch_run_t *w = data;
    if (v->type == KEEL_RESP_ERROR) {
        on_error_push(w, v);
        return;
    }
    if (v->type != KEEL_RESP_ARRAY || v->elems_len != 3 || v->elems[0].type != KEEL_RESP_BULK) {
        keel_client_move(cl);
        return;
    }
    const keel_resp_arg_t *kind = &v->elems[0].str;
    if (kind->len == 8 && memcmp(kind->ptr, "watching", 8) == 0)
        return;
    if (v->elems[1].type != KEEL_RESP_INT || v->elems[2].type != KEEL_RESP_ARRAY) {
        keel_client_move(cl);
        return;
    }
    w->compacted = 0;
    print_push(v, (uint64_t)v->elems[1].integer);
    if (w->o->count && ++w->revisions >= w->o->count)
        stop(w, 0);
}

static void on_event(keel_client_t *cl, int event, int err, void *data)
{
    watch_run_t *w = data;
    if (event != KEEL_CLIENT_UP)
        w->compacted = 0; /* as before: only -COMPACTED answers in a row count */
}

static void on_duration(keel_timer_t *t, void *data)
{
    stop(data, 0);
}

static int watch_run(watch_run_t *w)
{
    const watch_opts_t *o = w->o;
    keel_client_config_t cfg = keel_client_config_default();
    for (size_t i = 0; i < o->n; i++)
        cfg.seeds[i] = o->addrs[i];
    cfg.seeds_n = o->n;
    cfg.reply_bytes_max = WATCH_BUFFER_BYTES_MAX;
    cfg.on_push = on_push;
    cfg.on_event = on_event;
    cfg.data = w;
    keel_errmsg_t m;
    keel_loop_init(&w->loop);
    keel_timer_init(&w->loop, &w->duration);
    int rc = keel_client_init(&w->cl, &w->loop, &cfg, &m);
    if (rc == 0)
        rc = keel_client_watch(&w->cl, o->prefix, o->from);
    if (rc != 0) {
        fprintf(stderr, "keel watch: %s\n", rc == KEEL_EINVAL ? m.text : keel_strerror(rc));
        keel_timer_close(&w->duration, NULL);
        keel_loop_run(&w->loop);
        keel_loop_close(&w->loop);
        return 1;
    }
    if (o->duration_s)
        keel_timer_start(&w->duration, (keel_ms_t)o->duration_s * KEEL_MS_PER_S, 0, on_duration, w);
    keel_loop_run(&w->loop);
    keel_loop_close(&w->loop);
    return w->rc;
}

int keel_cli_watch(int argc, char **argv)
{
    watch_opts_t *o = malloc(sizeof(*o)); /* keel_cluster_t is large */
    watch_run_t *w = calloc(1, sizeof(*w));
    if (o == NULL || w == NULL) {
        free(o);
        free(w);
        return 1;
    }
    int parsed = parse_opts(argc, argv, o);
    if (parsed != 0) {
        free(o);
        free(w);
        return parsed > 0 ? usage(stdout, 0) : usage(stderr, 2);
    }
    w->o = o;
    int rc = watch_run(w);
    free(w);
    free(o);
    return rc;
}
