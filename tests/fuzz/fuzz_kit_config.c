/* fuzz_kit_config.c - libFuzzer target: a service's settings file through kit/config. */
#include "kit/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: the YAML file. Whatever it holds, the load either fails with a message and leaves
 * every output at its default (nothing half applied), or succeeds with values inside their
 * declared ranges.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/keel-fuzz-config-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    const char *listen = "default", *name = NULL;
    int64_t ttl = 5000;
    bool on = false;
    const keel_opt_t opts[] = {
        {"listen", KEEL_OPT_STR, &listen, 0, 0, "x"},
        {"name", KEEL_OPT_STR, &name, 0, 0, "x"},
        {"ttl", KEEL_OPT_INT, &ttl, -5, 600000, "x"},
        {"on", KEEL_OPT_BOOL, &on, 0, 0, "x"},
    };
    char flag[96];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    char *argv[] = {"fuzz", flag, NULL};
    char *envp[] = {NULL};
    keel_config_t cfg;
    keel_errmsg_t msg = {{0}};
    int rc = keel_config_load(&cfg, "fuzz", "FUZZ", opts, 4, 2, argv, envp, &msg);
    if (rc < 0) {
        if (msg.text[0] == '\0' || strcmp(listen, "default") != 0 || name != NULL || ttl != 5000 ||
            on)
            abort();
    } else {
        if (rc != 0 || ttl < -5 || ttl > 600000 || listen == NULL || strlen(listen) > 4096)
            abort();
        keel_config_free(&cfg);
    }
    unlink(path);
    return 0;
}
