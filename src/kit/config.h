/* config.h - a service's settings from defaults, a YAML file, the environment and flags,
 * with one precedence rule. */
#ifndef KEEL_KIT_CONFIG_H
#define KEEL_KIT_CONFIG_H

#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A service declares its settings as a table; each names one setting everywhere:
 *
 *     const char *listen = "127.0.0.1:8080";   int64_t ttl = 5000;   bool verbose = false;
 *     keel_opt_t opts[] = {
 *         {"listen", KEEL_OPT_STR, &listen, 0, 0, "host:port to serve on"},
 *         {"ttl-ms", KEEL_OPT_INT, &ttl, 100, 600000, "registration TTL"},
 *         {"verbose", KEEL_OPT_BOOL, &verbose, 0, 0, "log at debug level"},
 *     };
 *     keel_config_t cfg;
 *     int rc = keel_config_load(&cfg, "notes", "NOTES", opts, 3, argc, argv, NULL, &msg);
 *     // rc 1: --help or --print-config was answered (exit 0); rc < 0: msg says why (exit 2)
 *
 * Setting "ttl-ms" is, in increasing precedence (THE rule: a later source wins):
 *   1. the default (what *out holds before the call);
 *   2. `ttl-ms: 3000` in the YAML file named by --config FILE (or NOTES_CONFIG): a flat
 *      mapping of setting names to scalars; an unknown or repeated name is an error;
 *   3. the environment: NOTES_TTL_MS=3000 (prefix, '_', the name upper-cased, '-' -> '_');
 *   4. the flag: --ttl-ms 3000 or --ttl-ms=3000 (a boolean alone: --verbose means true).
 * Every value goes through the same parser, whatever its source, and an error names the
 * source: "flag --ttl-ms 'abc': expected an integer in 100..600000", "environment
 * NOTES_TTL_MS ...", "notes.yaml:3: ttl-ms ...". Nothing is half applied: on an error the
 * outputs keep their defaults.
 *
 * Built-in flags: --config FILE, --help (the table with defaults and environment names),
 * --print-config (every setting, its value and where it came from).
 * Strings handed out live in cfg until keel_config_free().
 */
#define KEEL_CONFIG_OPTS_MAX 128u
#define KEEL_CONFIG_NAME_BYTES_MAX 64u
#define KEEL_CONFIG_VALUE_BYTES_MAX 4096u
#define KEEL_CONFIG_FILE_BYTES_MAX (1u << 20)

typedef enum keel_opt_kind {
    KEEL_OPT_STR = 1, /* out: const char ** (NULL default allowed) */
    KEEL_OPT_INT,     /* out: int64_t *, within [min, max] */
    KEEL_OPT_BOOL,    /* out: bool *; true/false, yes/no, on/off, 1/0 */
} keel_opt_kind_t;

typedef struct keel_opt {
    const char *name; /* [a-z0-9-], 1..63 */
    keel_opt_kind_t kind;
    void *out;
    int64_t min, max;
    const char *help;
} keel_opt_t;

typedef enum keel_opt_source {
    KEEL_OPT_FROM_DEFAULT = 0,
    KEEL_OPT_FROM_FILE,
    KEEL_OPT_FROM_ENV,
    KEEL_OPT_FROM_FLAG,
} keel_opt_source_t;

typedef struct keel_config {
    char **strings; /* owned copies handed out to KEEL_OPT_STR outputs */
    size_t n, cap;
    keel_opt_source_t from[KEEL_CONFIG_OPTS_MAX];
    char file[256]; /* the YAML file read, "" if none */
} keel_config_t;

/*
 * Fills every opts[i].out. envp NULL: the process's environment. Returns 0, 1 when --help
 * or --print-config printed its answer on stdout, or KEEL_EINVAL (an unknown flag, a bad
 * value, a bad file; msg names it), KEEL_EIO (the file cannot be read), KEEL_ENOMEM.
 */
int keel_config_load(keel_config_t *cfg, const char *prog, const char *env_prefix,
                     const keel_opt_t *opts, size_t n, int argc, char **argv, char **envp,
                     keel_errmsg_t *msg);
void keel_config_free(keel_config_t *cfg);

#endif
