/* proxy_cmd.c - `keel proxy --config FILE` runs the proxy; `keel proxy --check FILE` validates. */
#include "base/crc32c.h"
#include "base/log.h"
#include "cli/cli.h"
#include "proxy/auth.h"
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "proxy/proxy_tls.h"
#include "proxy/sidecar.h"
#include "runtime/logsink.h"
#include "runtime/loop.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char usage[] =
    "usage: keel proxy --config FILE.yaml [--log-level LEVEL]\n"
    "       keel proxy --check FILE.yaml\n"
    "\n"
    "Runs keel proxy, the HTTP/1.1 gateway, with the listeners, routes, clusters and\n"
    "policies of FILE.yaml (docs/proxy.md). --check validates the file and exits: 0 when\n"
    "it is valid, 1 with one line per error (FILE:LINE: message) otherwise.\n"
    "Once listening it prints `listening I on port P` for the I-th listener (0 first) and\n"
    "`admin on port P`. SIGHUP or a change to FILE reloads it (a bad file is refused and\n"
    "logged; the old config keeps serving). SIGTERM or SIGINT closes it; with a `sidecar:`\n"
    "section it first deregisters the app from the registry and drains.\n";

/* Reads the whole file, up to the config ceiling (plus one byte to notice a larger one). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = KEEL_PROXY_CONFIG_BYTES_MAX + 1;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    *len = fread(buf, 1, cap, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

/* Parses FILE into a heap config; prints every error as FILE:LINE: text. */
static keel_proxy_config_t *load(const char *path, char **text, size_t *len)
{
    *text = read_file(path, len);
    if (*text == NULL) {
        fprintf(stderr, "keel proxy: cannot read %s\n", path);
        return NULL;
    }
    keel_proxy_config_t *cfg = malloc(sizeof(*cfg));
    keel_proxy_errors_t *errs = malloc(sizeof(*errs));
    if (cfg == NULL || errs == NULL) {
        fprintf(stderr, "keel proxy: out of memory\n");
        free(cfg);
        free(errs);
        return NULL;
    }
    int rc = keel_proxy_config_parse(*text, *len, cfg, errs);
    if (rc == 0) { /* the JWKS keys and TLS files load here too, so their errors come with lines */
        keel_proxy_keys_t keys;
        keel_proxy_tls_t tls;
        if ((rc = keel_proxy_auth_load(cfg, &keys, errs, 0)) == 0)
            keel_proxy_auth_free(&keys);                /* keel_proxy_start reads them again */
        int trc = keel_proxy_tls_load(cfg, &tls, errs); /* checks each key against its cert */
        if (trc == 0)
            keel_proxy_tls_free(&tls);
        if (rc == 0)
            rc = trc;
        if (rc != 0)
            keel_proxy_config_free(cfg);
    }
    if (rc != 0) {
        for (uint32_t i = 0; i < errs->count; i++)
            fprintf(stderr, "%s:%d: %s\n", path, errs->e[i].line, errs->e[i].text);
        if (errs->dropped > 0)
            fprintf(stderr, "%s: %u more errors\n", path, errs->dropped);
        free(cfg);
        cfg = NULL;
    }
    free(errs);
    return cfg;
}

/* How long a changed file must stay quiet before it is reloaded (editors write in steps). */
#define RELOAD_SETTLE_MS 100

/* SIGHUP, or a change to the file, reloads the file the proxy was started with (docs/proxy.md,
 * "Reload"). */
typedef struct reloader {
    uv_signal_t sig;
    uv_fs_event_t watch; /* the file's directory: editors replace files by renaming */
    uv_timer_t settle;
    bool watching;
    keel_proxy_t *p;
    keel_sidecar_t *sidecar; /* sidecar mode: deregisters and drains before the proxy stops */
    const char *path;
    char name[256];    /* the file's name in its directory */
    uint32_t last_crc; /* of the text last tried: a touch without a change reloads nothing */
} reloader_t;

/* Loads the file unless its text is the one last tried (loaded or refused) and this is the
 * watcher's call (a save may fire several events). A SIGHUP reloads an unchanged text too when
 * the config names JWKS or TLS files or a remote JWKS: they are read (fetched) again only by a
 * reload (or, remote, when their cache_duration_ms ends), so rotating keys is a SIGHUP. */
static void reload(reloader_t *r, bool forced)
{
    size_t len = 0;
    char *text = read_file(r->path, &len);
    keel_proxy_errors_t *errs = malloc(sizeof(*errs));
    if (text == NULL || errs == NULL) {
        keel_log_error("proxy: reload refused, the old config keeps serving",
                       KF_STR("file", r->path), KF_STR("reason", "cannot read the file"));
        free(text);
        free(errs);
        return;
    }
    uint32_t crc = keel_crc32c(0, text, len);
    if (crc == r->last_crc && !(forced && keel_proxy_reads_keys_at_load(r->p))) {
        free(text);
        free(errs);
        return;
    }
    r->last_crc = crc;
    keel_errmsg_t msg;
    int rc = keel_proxy_reload(r->p, text, len, errs, &msg);
    if (rc == 0) {
        keel_log_info("proxy: config reloaded", KF_STR("file", r->path));
    } else {
        keel_log_error("proxy: reload refused, the old config keeps serving",
                       KF_STR("file", r->path), KF_STR("reason", msg.text));
        for (uint32_t i = 0; i < errs->count; i++)
            keel_log_error("proxy: config error", KF_STR("file", r->path),
                           KF_INT("line", errs->e[i].line), KF_STR("error", errs->e[i].text));
    }
    free(text);
    free(errs);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    reload(h->data, true);
}

static void on_settled(uv_timer_t *t)
{
    reload(t->data, false);
}

static void on_file_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    reloader_t *r = h->data;
    if (status == 0 && filename != NULL && strcmp(filename, r->name) == 0)
        uv_timer_start(&r->settle, on_settled, RELOAD_SETTLE_MS, 0); /* restarts while busy */
}

/* Watches the config file's directory for changes to the file. Failing to watch is logged and
 * leaves SIGHUP. */
static void watch_file(keel_loop_t *loop, reloader_t *r)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", r->path);
    char *slash = strrchr(dir, '/');
    snprintf(r->name, sizeof(r->name), "%s", slash ? slash + 1 : r->path);
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    uv_timer_init(&loop->uv, &r->settle);
    r->settle.data = r;
    uv_fs_event_init(&loop->uv, &r->watch);
    r->watch.data = r;
    int rc = uv_fs_event_start(&r->watch, on_file_event, dir, 0);
    if (rc != 0)
        keel_log_warn("proxy: cannot watch the config file; reload with SIGHUP", KF_STR("dir", dir),
                      KF_STR("error", uv_strerror(rc)));
    r->watching = true;
}

static void stop_proxy(void *data)
{
    reloader_t *r = data;
    keel_proxy_shutdown(r->p, NULL, NULL);
}

/* SIGTERM/SIGINT: reloads stop; a sidecar deregisters its app and drains while the listeners
 * still accept, then the proxy closes. */
static void on_stop(void *data)
{
    reloader_t *r = data;
    uv_close((uv_handle_t *)&r->sig, NULL);
    if (r->watching) {
        uv_close((uv_handle_t *)&r->watch, NULL);
        uv_close((uv_handle_t *)&r->settle, NULL);
    }
    if (r->sidecar != NULL) {
        keel_sidecar_stop(r->sidecar, stop_proxy, r);
        r->sidecar = NULL;
        return;
    }
    stop_proxy(r);
}

int keel_cli_proxy(int argc, char **argv)
{
    const char *config = NULL, *check = NULL, *level = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        const char **slot = strcmp(argv[i], "--config") == 0      ? &config
                            : strcmp(argv[i], "--check") == 0     ? &check
                            : strcmp(argv[i], "--log-level") == 0 ? &level
                                                                  : NULL;
        if (slot == NULL || i + 1 >= argc) {
            fprintf(stderr, "keel proxy: %s '%s'\n%s",
                    slot ? "missing value after" : "unknown option", argv[i], usage);
            return 2;
        }
        *slot = argv[++i];
    }
    if ((config == NULL) == (check == NULL)) {
        fprintf(stderr, "keel proxy: give --config FILE or --check FILE\n%s", usage);
        return 2;
    }
    char *text = NULL;
    size_t len = 0;
    keel_proxy_config_t *cfg = load(check ? check : config, &text, &len);
    if (check != NULL) {
        if (cfg != NULL) {
            printf("%s: ok (%u listeners, %u routes, %u clusters)\n", check, cfg->listeners_count,
                   cfg->routes_count, cfg->clusters_count);
            keel_proxy_config_free(cfg);
            free(cfg);
        }
        free(text);
        return cfg != NULL ? 0 : 1;
    }
    if (cfg == NULL) {
        free(text);
        return 1;
    }
    if (keel_logsink_init_stderr(level) != 0) {
        fprintf(stderr, "keel proxy: bad --log-level '%s'\n", level);
        keel_proxy_config_free(cfg);
        free(cfg);
        free(text);
        return 2;
    }
    /* glibc gives the top of its heap back once 128 KiB of it is free, and takes it again a
       few requests later: a brk and a page fault for every page, zeroed, each time (about 4%
       of the proxy's CPU under load). It keeps up to 64 MiB instead. */
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TOP_PAD, 1024 * 1024);
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0) {
        fprintf(stderr, "keel proxy: cannot start the event loop\n");
        return 1;
    }
    keel_proxy_t *p = NULL;
    keel_errmsg_t msg;
    uint32_t crc = keel_crc32c(0, text, len);
    int rc = keel_proxy_start(&loop, cfg, text, len, &p, &msg);
    free(text);
    if (rc != 0) {
        fprintf(stderr, "keel proxy: %s (%s)\n", msg.text, keel_strerror(rc));
        keel_loop_run(&loop); /* lets the partial start close its handles */
        keel_loop_close(&loop);
        return 1;
    }
    keel_loop_handle_signals(&loop);
    reloader_t reloader = {.p = p, .path = config, .last_crc = crc};
    if (cfg->sidecar.enabled && /* cfg is the proxy's now, unchanged until a reload */
        (rc = keel_sidecar_start(&reloader.sidecar, &loop, p, cfg, &msg)) != 0) {
        fprintf(stderr, "keel proxy: %s (%s)\n", msg.text, keel_strerror(rc));
        keel_proxy_shutdown(p, NULL, NULL);
        keel_loop_run(&loop);
        keel_loop_close(&loop);
        return 1;
    }
    uv_signal_init(&loop.uv, &reloader.sig);
    reloader.sig.data = &reloader;
    uv_signal_start(&reloader.sig, on_sighup, SIGHUP);
    watch_file(&loop, &reloader);
    keel_loop_on_shutdown(&loop, on_stop, &reloader);
    /* the ports in use (a listener on port 0 gets one from the kernel) */
    for (uint32_t i = 0;; i++) {
        int port = keel_proxy_listener_port(p, i);
        if (port < 0)
            break;
        printf("listening %u on port %d\n", i, port);
        keel_log_info("proxy listening", KF_INT("listener", i), KF_INT("port", port));
    }
    if (keel_proxy_admin_port(p) > 0)
        printf("admin on port %d\n", keel_proxy_admin_port(p));
    fflush(stdout);
    keel_loop_run(&loop);
    rc = keel_loop_close(&loop);
    if (rc != 0)
        keel_log_error("proxy: loop closed with handles open");
    return rc == 0 ? 0 : 1;
}
