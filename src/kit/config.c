/* config.c - settings from defaults, a YAML file, the environment and flags (config.h). */
#include "kit/config.h"

#include "base/num.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

extern char **environ;

/* A value found for one setting, not yet handed out. */
typedef struct staged {
    keel_opt_source_t from;
    const char *s; /* KEEL_OPT_STR: owned by cfg->strings */
    int64_t i;
    bool b;
} staged_t;

typedef struct loader {
    keel_config_t *cfg;
    const char *prog, *prefix;
    const keel_opt_t *opts;
    size_t n;
    staged_t st[KEEL_CONFIG_OPTS_MAX];
    keel_errmsg_t *msg;
} loader_t;

static char *keep(keel_config_t *cfg, const char *s, size_t len)
{
    if (cfg->n == cfg->cap) {
        size_t cap = cfg->cap ? cfg->cap * 2 : 8;
        char **m = realloc(cfg->strings, cap * sizeof(*m));
        if (m == NULL)
            return NULL;
        cfg->strings = m;
        cfg->cap = cap;
    }
    char *c = malloc(len + 1);
    if (c == NULL)
        return NULL;
    memcpy(c, s, len);
    c[len] = '\0';
    cfg->strings[cfg->n++] = c;
    return c;
}

static void env_name(const loader_t *l, const char *name, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "%s_", l->prefix);
    for (const char *p = name; *p && k + 1 < cap; p++)
        out[k++] = *p == '-' ? '_' : (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
    out[k] = '\0';
}

static int find(const loader_t *l, const char *name, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->opts[i].name) == len && memcmp(l->opts[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

/* One value for setting i from a source described by `where` (for the error). */
static int take(loader_t *l, size_t i, const char *v, size_t vlen, keel_opt_source_t from,
                const char *where)
{
    const keel_opt_t *o = &l->opts[i];
    staged_t *st = &l->st[i];
    if (vlen > KEEL_CONFIG_VALUE_BYTES_MAX)
        return keel_errf(l->msg, KEEL_EINVAL, "%s: longer than %u bytes", where,
                         KEEL_CONFIG_VALUE_BYTES_MAX);
    switch (o->kind) {
    case KEEL_OPT_STR: {
        if (memchr(v, '\0', vlen) != NULL)
            return keel_errf(l->msg, KEEL_EINVAL, "%s: a NUL byte in the value", where);
        const char *s = keep(l->cfg, v, vlen);
        if (s == NULL)
            return KEEL_ENOMEM;
        st->s = s;
        break;
    }
    case KEEL_OPT_INT: {
        int64_t x;
        if (keel_parse_i64((const uint8_t *)v, vlen, &x) != 0 || x < o->min || x > o->max)
            return keel_errf(l->msg, KEEL_EINVAL, "%s '%.*s': expected an integer in %lld..%lld",
                             where, (int)(vlen < 64 ? vlen : 64), v, (long long)o->min,
                             (long long)o->max);
        st->i = x;
        break;
    }
    case KEEL_OPT_BOOL: {
        static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
        int b = -1;
        for (size_t k = 0; k < 4; k++) {
            if (strlen(yes[k]) == vlen && strncasecmp(v, yes[k], vlen) == 0)
                b = 1;
            if (strlen(no[k]) == vlen && strncasecmp(v, no[k], vlen) == 0)
                b = 0;
        }
        if (b < 0)
            return keel_errf(l->msg, KEEL_EINVAL, "%s '%.*s': expected true or false", where,
                             (int)(vlen < 64 ? vlen : 64), v);
        st->b = b == 1;
        break;
    }
    }
    st->from = from;
    return 0;
}

/* ---- the file ------------------------------------------------------------------------------ */

static int file_error(loader_t *l, const yaml_event_t *ev, const char *what)
{
    return keel_errf(l->msg, KEEL_EINVAL, "%s:%zu: %s", l->cfg->file,
                     (size_t)ev->start_mark.line + 1, what);
}

static int parse_file(loader_t *l, const char *text, size_t len)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return KEEL_ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    bool seen[KEEL_CONFIG_OPTS_MAX] = {false};
    int rc = 0, depth = 0, key = -1;
    char where[KEEL_CONFIG_NAME_BYTES_MAX + 300];
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = keel_errf(l->msg, KEEL_EINVAL, "%s:%zu: %s", l->cfg->file,
                           (size_t)p.problem_mark.line + 1, p.problem ? p.problem : "bad YAML");
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_MAPPING_START_EVENT:
            if (depth++ != 0)
                rc = file_error(l, &ev, "settings are flat: name: value (no nested mapping)");
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_SCALAR_EVENT: {
            const char *v = (const char *)ev.data.scalar.value;
            size_t vl = ev.data.scalar.length;
            if (depth != 1) {
                rc = file_error(l, &ev, "expected a mapping of setting names to values");
            } else if (key < 0) {
                int i = find(l, v, vl);
                if (i < 0) {
                    snprintf(where, sizeof(where), "no setting named '%.*s'",
                             (int)(vl < 64 ? vl : 64), v);
                    rc = file_error(l, &ev, where);
                } else if (seen[i]) {
                    snprintf(where, sizeof(where), "%s given twice", l->opts[i].name);
                    rc = file_error(l, &ev, where);
                } else {
                    seen[i] = true;
                    key = i;
                }
            } else {
                snprintf(where, sizeof(where), "%s:%zu: %s", l->cfg->file,
                         (size_t)ev.start_mark.line + 1, l->opts[key].name);
                rc = take(l, (size_t)key, v, vl, KEEL_OPT_FROM_FILE, where);
                key = -1;
            }
            break;
        }
        default: /* sequences, aliases */
            rc = file_error(l, &ev, "values are scalars (no lists, no aliases)");
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

static int read_file(loader_t *l, const char *path)
{
    if (strlen(path) >= sizeof(l->cfg->file))
        return keel_errf(l->msg, KEEL_EINVAL, "config file name over %zu bytes",
                         sizeof(l->cfg->file) - 1);
    strcpy(l->cfg->file, path);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return keel_errf(l->msg, KEEL_EIO, "%s: cannot open it", path);
    char *buf = malloc(KEEL_CONFIG_FILE_BYTES_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return KEEL_ENOMEM;
    }
    size_t len = fread(buf, 1, KEEL_CONFIG_FILE_BYTES_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad)
        rc = keel_errf(l->msg, KEEL_EIO, "%s: read error", path);
    else if (len > KEEL_CONFIG_FILE_BYTES_MAX)
        rc = keel_errf(l->msg, KEEL_EINVAL, "%s: larger than %u bytes", path,
                       KEEL_CONFIG_FILE_BYTES_MAX);
    else
        rc = parse_file(l, buf, len);
    free(buf);
    return rc;
}

/* ---- the environment and the flags ------------------------------------------------------- */

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static int from_env(loader_t *l, char **envp)
{
    for (size_t i = 0; i < l->n; i++) {
        char name[KEEL_CONFIG_NAME_BYTES_MAX + 64], where[sizeof(name) + 16];
        env_name(l, l->opts[i].name, name, sizeof(name));
        const char *v = env_get(envp, name);
        if (v == NULL)
            continue;
        snprintf(where, sizeof(where), "environment %s", name);
        int rc = take(l, i, v, strlen(v), KEEL_OPT_FROM_ENV, where);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The built-in flags' state from a first pass over argv. */
typedef struct builtins {
    const char *config;
    bool help, print;
} builtins_t;

/* Flags: both passes walk argv the same way; `apply` says whether settings are taken. */
static int walk_flags(loader_t *l, int argc, char **argv, builtins_t *b, bool apply)
{
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return keel_errf(l->msg, KEEL_EINVAL, "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const char *v = eq ? eq + 1 : NULL;
        if (nl == 4 && memcmp(name, "help", 4) == 0) {
            b->help = true;
            continue;
        }
        if (nl == 12 && memcmp(name, "print-config", 12) == 0) {
            b->print = true;
            continue;
        }
        int i = nl == 6 && memcmp(name, "config", 6) == 0 ? -2 : find(l, name, nl);
        if (i == -1)
            return keel_errf(l->msg, KEEL_EINVAL, "unknown flag '--%.*s' (see --help)",
                             (int)(nl < 64 ? nl : 64), name);
        if (v == NULL && !(i >= 0 && l->opts[i].kind == KEEL_OPT_BOOL)) {
            if (a + 1 >= argc)
                return keel_errf(l->msg, KEEL_EINVAL, "flag --%.*s needs a value", (int)nl, name);
            v = argv[++a];
        }
        if (i == -2) {
            b->config = v;
            continue;
        }
        if (!apply)
            continue;
        char where[KEEL_CONFIG_NAME_BYTES_MAX + 16];
        snprintf(where, sizeof(where), "flag --%s", l->opts[i].name);
        int rc = take(l, (size_t)i, v ? v : "true", v ? strlen(v) : 4, KEEL_OPT_FROM_FLAG, where);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static void print_value(const keel_opt_t *o)
{
    switch (o->kind) {
    case KEEL_OPT_STR: {
        const char *s = *(const char **)o->out;
        printf("%s", s ? s : "(none)");
        break;
    }
    case KEEL_OPT_INT:
        printf("%lld", (long long)*(int64_t *)o->out);
        break;
    case KEEL_OPT_BOOL:
        printf("%s", *(bool *)o->out ? "true" : "false");
        break;
    }
}

static void print_help(const loader_t *l)
{
    printf("usage: %s [--setting value]...\n\n", l->prog);
    for (size_t i = 0; i < l->n; i++) {
        const keel_opt_t *o = &l->opts[i];
        char env[KEEL_CONFIG_NAME_BYTES_MAX + 64];
        env_name(l, o->name, env, sizeof(env));
        printf("  --%s %s\n      %s (default ", o->name,
               o->kind == KEEL_OPT_INT    ? "N"
               : o->kind == KEEL_OPT_BOOL ? "[=true|false]"
                                          : "VALUE",
               o->help ? o->help : "");
        print_value(o);
        if (o->kind == KEEL_OPT_INT)
            printf("; %lld..%lld", (long long)o->min, (long long)o->max);
        printf("; environment %s)\n", env);
    }
    printf("  --config FILE\n      a YAML file of these settings, `name: value` (environment "
           "%s_CONFIG)\n",
           l->prefix);
    printf("  --print-config\n      print every setting, its value and where it came from\n");
    printf("\nA later source wins: default, then the file, then the environment, then a "
           "flag.\n");
}

static void print_config(const loader_t *l)
{
    static const char *src[] = {"default", "file", "environment", "flag"};
    for (size_t i = 0; i < l->n; i++) {
        printf("%s = ", l->opts[i].name);
        print_value(&l->opts[i]);
        printf("  (%s%s%s)\n", src[l->cfg->from[i]],
               l->cfg->from[i] == KEEL_OPT_FROM_FILE ? " " : "",
               l->cfg->from[i] == KEEL_OPT_FROM_FILE ? l->cfg->file : "");
    }
}

/* ---- the one entry ----------------------------------------------------------------------- */

static int check_table(loader_t *l)
{
    if (l->n > KEEL_CONFIG_OPTS_MAX)
        return keel_errf(l->msg, KEEL_EINVAL, "more than %u settings", KEEL_CONFIG_OPTS_MAX);
    if (l->prefix == NULL || l->prefix[0] == '\0' || strlen(l->prefix) > 32)
        return keel_errf(l->msg, KEEL_EINVAL, "an environment prefix of 1..32 bytes");
    for (size_t i = 0; i < l->n; i++) {
        const keel_opt_t *o = &l->opts[i];
        size_t nl = o->name ? strlen(o->name) : 0;
        if (nl == 0 || nl >= KEEL_CONFIG_NAME_BYTES_MAX ||
            strspn(o->name, "abcdefghijklmnopqrstuvwxyz"
                            "0123456789-") != nl)
            return keel_errf(l->msg, KEEL_EINVAL, "setting %zu: a name of [a-z0-9-]", i);
        if (o->out == NULL || o->kind < KEEL_OPT_STR || o->kind > KEEL_OPT_BOOL ||
            (o->kind == KEEL_OPT_INT && o->min > o->max))
            return keel_errf(l->msg, KEEL_EINVAL, "setting %s: kind, output or range", o->name);
        if (find(l, o->name, nl) != (int)i || strcmp(o->name, "config") == 0 ||
            strcmp(o->name, "help") == 0 || strcmp(o->name, "print-config") == 0)
            return keel_errf(l->msg, KEEL_EINVAL, "setting %s: named twice or reserved", o->name);
    }
    return 0;
}

int keel_config_load(keel_config_t *cfg, const char *prog, const char *env_prefix,
                     const keel_opt_t *opts, size_t n, int argc, char **argv, char **envp,
                     keel_errmsg_t *msg)
{
    memset(cfg, 0, sizeof(*cfg));
    loader_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return KEEL_ENOMEM;
    *l = (loader_t){
        .cfg = cfg, .prog = prog, .prefix = env_prefix, .opts = opts, .n = n, .msg = msg};
    if (envp == NULL)
        envp = environ;
    builtins_t b = {0};
    int rc = check_table(l);
    if (rc == 0)
        rc = walk_flags(l, argc, argv, &b, false);
    if (rc == 0 && b.help) {
        print_help(l);
        free(l);
        return 1;
    }
    if (rc == 0 && b.config == NULL) {
        char name[64];
        snprintf(name, sizeof(name), "%s_CONFIG", env_prefix);
        b.config = env_get(envp, name);
    }
    if (rc == 0 && b.config != NULL)
        rc = read_file(l, b.config);
    if (rc == 0)
        rc = from_env(l, envp);
    if (rc == 0)
        rc = walk_flags(l, argc, argv, &b, true);
    if (rc != 0) { /* nothing was handed out */
        free(l);
        keel_config_free(cfg);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const staged_t *st = &l->st[i];
        cfg->from[i] = st->from;
        if (st->from == KEEL_OPT_FROM_DEFAULT)
            continue;
        switch (opts[i].kind) {
        case KEEL_OPT_STR:
            *(const char **)opts[i].out = st->s;
            break;
        case KEEL_OPT_INT:
            *(int64_t *)opts[i].out = st->i;
            break;
        case KEEL_OPT_BOOL:
            *(bool *)opts[i].out = st->b;
            break;
        }
    }
    if (b.print) {
        print_config(l);
        free(l);
        return 1;
    }
    free(l);
    return 0;
}

void keel_config_free(keel_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n; i++)
        free(cfg->strings[i]);
    free(cfg->strings);
    cfg->strings = NULL;
    cfg->n = cfg->cap = 0;
}
