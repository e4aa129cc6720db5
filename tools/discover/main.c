/* keel-discover - prints a service's passing instances each time they change, from keel
 * server's registry, through the kit's discovery client (src/kit/discovery.c).
 *
 *   keel-discover --registry host:port[,host:port...] service [--tag tag]
 *
 * One line per change: "index N: id@address:port id@address:port ..." ("index N: -" for
 * none). When the registry cannot be reached the last list stays (a warning goes to the
 * log, no line is printed). Runs until SIGTERM or SIGINT. */
#include "kit/discovery.h"

#include <stdio.h>
#include <string.h>

static void on_change(keel_discovery_t *d, void *data)
{
    size_t n;
    const keel_discovery_instance_t *xs = keel_discovery_instances(d, &n);
    printf("index %llu:", (unsigned long long)d->index);
    if (n == 0)
        printf(" -");
    for (size_t i = 0; i < n; i++)
        printf(" %s@%s:%d", xs[i].id, xs[i].address, xs[i].port);
    printf("\n");
    fflush(stdout);
}

static void stop(void *data)
{
    keel_discovery_close(data, NULL);
}

int main(int argc, char **argv)
{
    const char *registry = NULL, *service = NULL, *tag = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--registry") == 0 && i + 1 < argc)
            registry = argv[++i];
        else if (strcmp(argv[i], "--tag") == 0 && i + 1 < argc)
            tag = argv[++i];
        else if (service == NULL && argv[i][0] != '-')
            service = argv[i];
        else
            service = NULL, registry = NULL, i = argc;
    }
    if (registry == NULL || service == NULL) {
        fprintf(stderr, "usage: keel-discover --registry host:port[,...] service [--tag tag]\n");
        return 2;
    }
    keel_loop_t loop;
    if (keel_loop_init(&loop) != 0 || keel_loop_handle_signals(&loop) != 0)
        return 1;
    keel_discovery_t d;
    keel_errmsg_t msg = {{0}};
    if (keel_discovery_start(&d, &loop, registry, service, tag, on_change, NULL, NULL, &msg) != 0) {
        fprintf(stderr, "keel-discover: %s\n", msg.text);
        return 1;
    }
    keel_loop_on_shutdown(&loop, stop, &d);
    keel_loop_run(&loop);
    keel_loop_close(&loop);
    return 0;
}
