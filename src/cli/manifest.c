/* manifest.c - `keel up --manifest FILE`: services started around a keel cluster (manifest.h). */
#include "cli/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

/* ---- loading ------------------------------------------------------------------------------ */

typedef struct ld {
    yaml_document_t doc;
    const char *path;
    char *err;
    size_t cap;
} ld_t;

static int failf(ld_t *l, const yaml_node_t *at, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(l->err, l->cap, "%s:%zu: %s", l->path, at ? (size_t)at->start_mark.line + 1 : 0, what);
    return -1;
}

static yaml_node_t *node(ld_t *l, int id)
{
    return yaml_document_get_node(&l->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int int_of(ld_t *l, const yaml_node_t *n, const char *key, long lo, long hi, int *out)
{
    const char *s = scalar(n);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return failf(l, n, "%s: expected an integer in %ld..%ld", key, lo, hi);
    *out = (int)v;
    return 0;
}

/* The {word}s a manifest's run, env and port values may hold (src/cli/manifest.h). */
static const char *const template_words[] = {
    "keel", "keel_http", "port", "i", "name", "dir", "bin", "here", "host",
};
#define TEMPLATE_WORDS_N (sizeof(template_words) / sizeof(template_words[0]))

/* The placeholder "{word}" that s starts with: its index in template_words, or -1. */
static int placeholder_at(const char *s)
{
    for (size_t k = 0; s[0] == '{' && k < TEMPLATE_WORDS_N; k++) {
        size_t n = strlen(template_words[k]);
        if (strncmp(s + 1, template_words[k], n) == 0 && s[n + 1] == '}')
            return (int)k;
    }
    return -1;
}

/* Every {word} in s must be a known placeholder. */
static int check_template(ld_t *l, const yaml_node_t *at, const char *s)
{
    for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
        if (placeholder_at(p) < 0)
            return failf(l, at,
                         "unknown placeholder in '%.60s' (known: {keel} {keel_http} {port} "
                         "{i} {name} {dir} {bin} {here})",
                         s);
    }
    return 0;
}

/* A sequence of scalars into out (strdup'd). */
static int strings(ld_t *l, const yaml_node_t *n, const char *key, char **out, int cap, int *count)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return failf(l, n, "%s: expected a list", key);
    *count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        const yaml_node_t *e = node(l, *it);
        const char *s = scalar(e);
        if (s == NULL)
            return failf(l, e, "%s: expected strings", key);
        if (*count == cap)
            return failf(l, e, "%s: at most %d items", key, cap);
        if (check_template(l, e, s) != 0)
            return -1;
        if ((out[(*count)++] = strdup(s)) == NULL)
            return failf(l, e, "out of memory");
    }
    return 0;
}

static int load_cluster(ld_t *l, const yaml_node_t *n, keel_manifest_t *m)
{
    if (n->type != YAML_MAPPING_NODE)
        return failf(l, n, "cluster: expected a mapping");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = node(l, p->key), *v = node(l, p->value);
        const char *key = scalar(k) ? scalar(k) : "";
        int rc;
        if (strcmp(key, "nodes") == 0)
            rc = int_of(l, v, "nodes", 1, KEEL_CLUSTER_NODES_MAX, &m->nodes);
        else if (strcmp(key, "base_port") == 0)
            rc = int_of(l, v, "base_port", 1, 65535 - 200 - 9, &m->base_port);
        else if (strcmp(key, "server_args") == 0)
            rc = strings(l, v, "server_args", m->server_args, KEEL_MANIFEST_SERVER_ARGS_MAX,
                         &m->server_args_n);
        else
            rc = failf(l, k, "cluster: unknown key '%.40s' (nodes, base_port, server_args)", key);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int load_service(ld_t *l, const yaml_node_t *n, keel_manifest_service_t *s)
{
    if (n->type != YAML_MAPPING_NODE)
        return failf(l, n, "services: each one a mapping");
    s->instances = 1;
    s->ready_timeout_ms = 15000;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = node(l, p->key), *v = node(l, p->value);
        const char *key = scalar(k) ? scalar(k) : "", *val = scalar(v);
        int rc = 0;
        if (strcmp(key, "name") == 0) {
            if (val == NULL || *val == '\0' || strlen(val) >= sizeof(s->name) ||
                strspn(val, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(val))
                rc = failf(l, v, "name: 1 to 63 of [a-z0-9-_]");
            else
                strcpy(s->name, val);
        } else if (strcmp(key, "run") == 0) {
            rc = strings(l, v, "run", s->run, KEEL_MANIFEST_ARGS_MAX - 1, &s->run_n);
        } else if (strcmp(key, "instances") == 0) {
            rc = int_of(l, v, "instances", 1, KEEL_MANIFEST_INSTANCES_MAX, &s->instances);
        } else if (strcmp(key, "port") == 0) {
            rc = int_of(l, v, "port", 0, 65535 - KEEL_MANIFEST_INSTANCES_MAX, &s->port);
        } else if (strcmp(key, "ready_timeout_ms") == 0) {
            rc = int_of(l, v, "ready_timeout_ms", 100, 600000, &s->ready_timeout_ms);
        } else if (strcmp(key, "ready") == 0) {
            if (val == NULL || strlen(val) >= sizeof(s->ready) ||
                (val[0] != '/' && strcmp(val, "tcp") != 0 && strcmp(val, "none") != 0))
                rc = failf(l, v, "ready: an HTTP path (/...), tcp or none");
            else
                strcpy(s->ready, val);
        } else if (strcmp(key, "env") == 0) {
            if (v->type != YAML_MAPPING_NODE)
                return failf(l, v, "env: expected a mapping NAME: value");
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top;
                 q++) {
                const char *ek = scalar(node(l, q->key)), *ev = scalar(node(l, q->value));
                if (ek == NULL || ev == NULL || *ek == '\0' || strchr(ek, '='))
                    return failf(l, node(l, q->key), "env: NAME: value, both strings");
                if (s->env_n == KEEL_MANIFEST_ENV_MAX)
                    return failf(l, node(l, q->key), "env: at most %d", KEEL_MANIFEST_ENV_MAX);
                if (check_template(l, node(l, q->value), ev) != 0)
                    return -1;
                size_t len = strlen(ek) + strlen(ev) + 2;
                char *kv = malloc(len);
                if (kv == NULL)
                    return failf(l, v, "out of memory");
                snprintf(kv, len, "%s=%s", ek, ev);
                s->env[s->env_n++] = kv;
            }
        } else {
            rc = failf(l, k,
                       "unknown key '%.40s' (name, run, instances, port, ready, "
                       "ready_timeout_ms, env)",
                       key);
        }
        if (rc != 0)
            return rc;
    }
    if (s->name[0] == '\0' || s->run_n == 0)
        return failf(l, n, "a service needs a name and a run list");
    if (s->ready[0] == '\0')
        strcpy(s->ready, s->port > 0 ? "/health/ready" : "none");
    if (s->ready[0] != 'n' && s->port == 0)
        return failf(l, n, "service %s: ready %s needs a port", s->name, s->ready);
    return 0;
}

int keel_manifest_load(const char *path, keel_manifest_t *m, char *err, size_t err_cap)
{
    memset(m, 0, sizeof(*m));
    m->nodes = 3;
    m->base_port = 7001;
    char real[PATH_MAX];
    if (realpath(path, real) != NULL) { /* {here}: the manifest's own directory */
        char *slash = strrchr(real, '/');
        if (slash != NULL)
            *slash = '\0';
        snprintf(m->here, sizeof(m->here), "%s", real);
    }
    ld_t l = {.path = path, .err = err, .cap = err_cap};
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    int ok = yaml_parser_load(&p, &l.doc);
    if (!ok) {
        snprintf(err, err_cap, "%s:%zu: %s", path, (size_t)p.problem_mark.line + 1,
                 p.problem ? p.problem : "bad YAML");
        yaml_parser_delete(&p);
        fclose(f);
        return -1;
    }
    yaml_parser_delete(&p);
    fclose(f);
    int rc = 0;
    const yaml_node_t *root = yaml_document_get_root_node(&l.doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE)
        rc = failf(&l, root, "expected a mapping with cluster: and services:");
    for (yaml_node_pair_t *q = rc ? NULL : root->data.mapping.pairs.start;
         q && q < root->data.mapping.pairs.top && rc == 0; q++) {
        const yaml_node_t *k = node(&l, q->key), *v = node(&l, q->value);
        const char *key = scalar(k) ? scalar(k) : "";
        if (strcmp(key, "cluster") == 0) {
            rc = load_cluster(&l, v, m);
        } else if (strcmp(key, "services") == 0) {
            if (v->type != YAML_SEQUENCE_NODE) {
                rc = failf(&l, v, "services: expected a list");
                break;
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top && rc == 0; it++) {
                if (m->n == KEEL_MANIFEST_SERVICES_MAX) {
                    rc =
                        failf(&l, node(&l, *it), "at most %d services", KEEL_MANIFEST_SERVICES_MAX);
                    break;
                }
                keel_manifest_service_t *s = &m->svc[m->n++];
                rc = load_service(&l, node(&l, *it), s);
                for (int j = 0; rc == 0 && j < m->n - 1; j++)
                    if (strcmp(m->svc[j].name, s->name) == 0)
                        rc = failf(&l, node(&l, *it), "service %s: named twice", s->name);
            }
        } else {
            rc = failf(&l, k, "unknown key '%.40s' (cluster, services)", key);
        }
    }
    yaml_document_delete(&l.doc);
    if (rc != 0)
        keel_manifest_free(m);
    return rc;
}

void keel_manifest_free(keel_manifest_t *m)
{
    for (int i = 0; i < m->server_args_n; i++)
        free(m->server_args[i]);
    for (int s = 0; s < m->n; s++) {
        for (int i = 0; i < m->svc[s].run_n; i++)
            free(m->svc[s].run[i]);
        for (int i = 0; i < m->svc[s].env_n; i++)
            free(m->svc[s].env[i]);
    }
    memset(m, 0, sizeof(*m));
}

/* ---- the record: DIR/services.json --------------------------------------------------------- */

typedef struct proc {
    char service[64], comm[16], host[64];
    int instance, port;
    pid_t pid;
} proc_t;

static int record_load(const char *dir, proc_t *out, int cap)
{
    char path[KEEL_CLUSTER_PATH_BYTES + 16];
    snprintf(path, sizeof(path), "%s/services.json", dir);
    json_t *j = json_load_file(path, 0, NULL);
    if (!json_is_array(j)) {
        json_decref(j);
        return 0;
    }
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e)
    {
        if (n == cap)
            break;
        proc_t *p = &out[n++];
        snprintf(p->service, sizeof(p->service), "%s",
                 json_string_value(json_object_get(e, "service")) ?: "?");
        snprintf(p->comm, sizeof(p->comm), "%s",
                 json_string_value(json_object_get(e, "comm")) ?: "");
        p->instance = (int)json_integer_value(json_object_get(e, "instance"));
        p->port = (int)json_integer_value(json_object_get(e, "port"));
        p->pid = (pid_t)json_integer_value(json_object_get(e, "pid"));
        snprintf(p->host, sizeof(p->host), "%s",
                 json_string_value(json_object_get(e, "host")) ?: "127.0.0.1");
    }
    json_decref(j);
    return n;
}

static void record_save(const char *dir, const proc_t *ps, int n)
{
    char path[KEEL_CLUSTER_PATH_BYTES + 16], tmp[KEEL_CLUSTER_PATH_BYTES + 24];
    snprintf(path, sizeof(path), "%s/services.json", dir);
    snprintf(tmp, sizeof(tmp), "%s/services.json.tmp", dir);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr,
                              json_pack("{s:s, s:i, s:i, s:i, s:s, s:s}", "service", ps[i].service,
                                        "instance", ps[i].instance, "port", ps[i].port, "pid",
                                        (int)ps[i].pid, "comm", ps[i].comm, "host", ps[i].host));
    if (json_dump_file(arr, tmp, JSON_INDENT(2)) == 0)
        rename(tmp, path);
    json_decref(arr);
}

/* The process still runs and is the program recorded (not a recycled pid, not a zombie: a
 * killed instance whose parent, `keel up`, is gone may wait unreaped). */
static int proc_alive(const proc_t *p)
{
    if (p->pid <= 0 || kill(p->pid, 0) != 0)
        return 0;
    char path[64], stat[512] = {0}, comm[32] = {0};
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)p->pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t got = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[got] = '\0';
    /* "pid (comm) S ...": comm may hold spaces and parentheses, so take the last ')' */
    char *open = strchr(stat, '('), *close = strrchr(stat, ')');
    if (open == NULL || close == NULL || close < open || close[1] != ' ' || close[2] == 'Z' ||
        close[2] == 'X')
        return 0;
    snprintf(comm, sizeof(comm), "%.*s", (int)(close - open - 1), open + 1);
    return strcmp(comm, p->comm) == 0;
}

/* ---- starting ------------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct vars {
    char keel[KEEL_CLUSTER_NODES_MAX * 64], keel_http[64], port[16], i[16], name[64];
    char dir[KEEL_CLUSTER_PATH_BYTES], bin[PATH_MAX], here[PATH_MAX], host[64];
} vars_t;

/* s with its placeholders replaced (malloc'd). */
static char *expand(const char *s, const vars_t *v)
{
    const char *vals[] = {v->keel, v->keel_http, v->port, v->i,   v->name,
                          v->dir,  v->bin,       v->here, v->host};
    size_t cap = strlen(s) + 1;
    for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{'))
        cap += sizeof(v->keel) + sizeof(v->bin) + sizeof(v->here);
    char *out = malloc(cap), *o = out;
    if (out == NULL)
        return NULL;
    while (*s) {
        int k = placeholder_at(s);
        if (k < 0) {
            *o++ = *s++;
            continue;
        }
        o += sprintf(o, "%s", vals[k]);
        s += strlen(template_words[k]) + 2;
    }
    *o = '\0';
    return out;
}

/* A program named without '/': beside the keel binary if it is there. */
static void resolve(const char *prog, const char *bin, char *out, size_t cap)
{
    if (strchr(prog, '/') == NULL) {
        int n = snprintf(out, cap, "%s/%s", bin, prog);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0)
            return;
    }
    snprintf(out, cap, "%s", prog);
}

static pid_t spawn(const keel_manifest_service_t *s, const vars_t *v, const char *netns,
                   const char *log_path, char *comm, size_t comm_cap)
{
    char *argv[KEEL_MANIFEST_ARGS_MAX + 1];
    for (int k = 0; k < s->run_n; k++)
        argv[k] = expand(s->run[k], v);
    argv[s->run_n] = NULL;
    char exe[PATH_MAX];
    resolve(argv[0] ? argv[0] : "", v->bin, exe, sizeof(exe));
    const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
    snprintf(comm, comm_cap, "%.15s", base); /* what /proc/PID/comm will say */
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (keel_cluster_enter_netns(netns) != 0) {
            fprintf(stderr, "keel up: cannot enter network namespace %s: %s\n", netns,
                    strerror(errno));
            _exit(127);
        }
        if (netns && netns[0]) /* the region is the zone (kit/discovery.h) */
            setenv("KEEL_ZONE", netns, 1);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        for (int k = 0; k < s->env_n; k++) {
            char *kv = expand(s->env[k], v);
            if (kv)
                putenv(kv);
        }
        if (strchr(exe, '/'))
            execv(exe, argv);
        else
            execvp(exe, argv);
        fprintf(stderr, "keel up: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    for (int k = 0; k < s->run_n; k++)
        free(argv[k]);
    return pid;
}

static int tcp_accepts(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void last_line(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[1024];
    while (fgets(line, sizeof(line), f))
        if (line[0] != '\n')
            snprintf(out, cap, "%.*s", (int)strcspn(line, "\n"), line);
    fclose(f);
}

#define NONE_ALIVE_MS 300 /* ready: none - how long an instance must stay up to count */

/* Waits until the instance is ready; 0, or -1 after saying why. */
static int wait_ready(const keel_manifest_service_t *s, int inst, const char *host, int port,
                      pid_t pid, const char *log_path)
{
    int64_t start = mono_ms(), deadline = start + s->ready_timeout_ms;
    char addr[96], body[4096];
    snprintf(addr, sizeof(addr), "%s:%d", host, port);
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            char line[512];
            last_line(log_path, line, sizeof(line));
            fprintf(stderr, "keel up: %s-%d (pid %d) exited (%s %d); last line of %s:\n  %s\n",
                    s->name, inst, (int)pid, WIFSIGNALED(st) ? "signal" : "status",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), log_path, line);
            return -1;
        }
        if (strcmp(s->ready, "none") == 0) { /* nothing to ask: it must at least stay up */
            if (mono_ms() >= start + NONE_ALIVE_MS)
                return 0;
            usleep(20 * 1000);
            continue;
        }
        if (strcmp(s->ready, "tcp") == 0
                ? tcp_accepts(host, port)
                : keel_cluster_http_get(addr, s->ready, body, sizeof(body)) == 200)
            return 0;
        if (mono_ms() >= deadline) {
            fprintf(stderr, "keel up: %s-%d (pid %d) not ready on %s%s after %d ms; log: %s\n",
                    s->name, inst, (int)pid, addr, s->ready[0] == '/' ? s->ready : "",
                    s->ready_timeout_ms, log_path);
            return -1;
        }
        usleep(50 * 1000);
    }
}

/* Records ps[0..n) and every entry of old[] still running that ps does not name (an
 * instance not reached yet by this start): the record never forgets a live process. */
static void save_progress(const char *dir, const proc_t *ps, int n, const proc_t *old, int old_n)
{
    enum { CAP = KEEL_MANIFEST_SERVICES_MAX * KEEL_MANIFEST_INSTANCES_MAX };
    static proc_t all[CAP];
    int k = 0;
    for (int i = 0; i < n && k < CAP; i++)
        all[k++] = ps[i];
    for (int j = 0; j < old_n && k < CAP; j++) {
        bool named = false;
        for (int i = 0; i < n && !named; i++)
            named = strcmp(ps[i].service, old[j].service) == 0 && ps[i].instance == old[j].instance;
        if (!named && proc_alive(&old[j]))
            all[k++] = old[j];
    }
    record_save(dir, all, k);
}

/* A start that failed: stops the processes of ps[] that this run started (not the kept
 * ones), last first, and records what was running before and still is. */
static void stop_started(const char *dir, proc_t *ps, int n, const bool *started, proc_t *old,
                         int old_n)
{
    for (int i = n - 1; i >= 0; i--)
        if (started[i] && proc_alive(&ps[i]))
            kill(ps[i].pid, SIGKILL);
    for (int i = n - 1; i >= 0; i--)
        if (started[i])
            waitpid(ps[i].pid, NULL, 0);
    int k = 0;
    for (int i = 0; i < old_n; i++)
        if (proc_alive(&old[i]))
            old[k++] = old[i];
    record_save(dir, old, k);
}

int keel_manifest_start(const keel_manifest_t *m, const keel_cluster_t *cl)
{
    enum { CAP = KEEL_MANIFEST_SERVICES_MAX * KEEL_MANIFEST_INSTANCES_MAX };
    static proc_t ps[CAP], old[CAP];
    static bool started[CAP];
    int n = 0, old_n = record_load(cl->dir, old, CAP);
    vars_t v;
    memset(&v, 0, sizeof(v));
    for (size_t i = 0; i < cl->n; i++) {
        size_t len = strlen(v.keel);
        snprintf(v.keel + len, sizeof(v.keel) - len, "%s%s", i ? "," : "", cl->nodes[i].client);
    }
    snprintf(v.keel_http, sizeof(v.keel_http), "%s", cl->nodes[0].http);
    snprintf(v.dir, sizeof(v.dir), "%s", cl->dir);
    snprintf(v.here, sizeof(v.here), "%s", m->here);
    ssize_t bl = readlink("/proc/self/exe", v.bin, sizeof(v.bin) - 1);
    if (bl > 0) {
        v.bin[bl] = '\0';
        char *slash = strrchr(v.bin, '/');
        if (slash)
            *slash = '\0';
    }
    for (int si = 0; si < m->n; si++) {
        const keel_manifest_service_t *s = &m->svc[si];
        snprintf(v.name, sizeof(v.name), "%s", s->name);
        for (int inst = 0; inst < s->instances; inst++) {
            int port = s->port > 0 ? s->port + inst : 0;
            snprintf(v.port, sizeof(v.port), "%d", port);
            snprintf(v.i, sizeof(v.i), "%d", inst);
            const keel_cluster_region_t *region = keel_cluster_place(cl, inst);
            const char *netns = region ? region->netns : "";
            snprintf(v.host, sizeof(v.host), "%s", region ? region->host : "127.0.0.1");
            char where[96] = "-";
            if (port > 0)
                snprintf(where, sizeof(where), "%s:%d", v.host, port);
            int kept = -1; /* still running from before: kept, as `keel up` keeps nodes */
            for (int k = 0; k < old_n && kept < 0; k++)
                if (strcmp(old[k].service, s->name) == 0 && old[k].instance == inst &&
                    proc_alive(&old[k]))
                    kept = k;
            if (kept >= 0) {
                ps[n] = old[kept];
                started[n++] = false;
                printf("%-16s %-8d %-22s pid %d running\n", s->name, inst, where,
                       (int)old[kept].pid);
                continue;
            }
            if (port > 0) {
                if (keel_cluster_port_free_in(netns, where) == 0) {
                    fprintf(stderr, "keel up: %s (%s-%d's port) is already in use\n", where,
                            s->name, inst);
                    stop_started(cl->dir, ps, n, started, old, old_n);
                    return -1;
                }
            }
            char log_path[KEEL_CLUSTER_PATH_BYTES + 96];
            snprintf(log_path, sizeof(log_path), "%s/%s-%d.log", cl->dir, s->name, inst);
            proc_t *p = &ps[n];
            memset(p, 0, sizeof(*p));
            snprintf(p->service, sizeof(p->service), "%s", s->name);
            p->instance = inst;
            p->port = port;
            snprintf(p->host, sizeof(p->host), "%s", v.host);
            p->pid = spawn(s, &v, netns, log_path, p->comm, sizeof(p->comm));
            if (p->pid < 0) {
                fprintf(stderr, "keel up: fork: %s\n", strerror(errno));
                stop_started(cl->dir, ps, n, started, old, old_n);
                return -1;
            }
            started[n++] = true;
            save_progress(cl->dir, ps, n, old, old_n);
            if (wait_ready(s, inst, v.host, port, p->pid, log_path) != 0) {
                stop_started(cl->dir, ps, n, started, old, old_n);
                return -1;
            }
            printf("%-16s %-8d %-22s pid %d ready\n", s->name, inst, where, (int)p->pid);
            fflush(stdout);
        }
    }
    save_progress(cl->dir, ps, n, old, old_n);
    return 0;
}

int keel_manifest_stop(const char *dir, int wait_ms)
{
    static proc_t ps[KEEL_MANIFEST_SERVICES_MAX * KEEL_MANIFEST_INSTANCES_MAX];
    int n = record_load(dir, ps, (int)(sizeof(ps) / sizeof(ps[0]))), running = 0;
    for (int i = n - 1; i >= 0; i--)
        if (proc_alive(&ps[i])) {
            kill(ps[i].pid, SIGTERM);
            running++;
        }
    int64_t deadline = mono_ms() + wait_ms;
    for (int i = n - 1; i >= 0; i--) {
        while (proc_alive(&ps[i]) && mono_ms() < deadline) {
            waitpid(ps[i].pid, NULL, WNOHANG); /* our own children are reaped here */
            usleep(20 * 1000);
        }
        if (proc_alive(&ps[i]))
            kill(ps[i].pid, SIGKILL);
        waitpid(ps[i].pid, NULL, WNOHANG);
    }
    if (n > 0)
        record_save(dir, ps, 0);
    return running;
}

void keel_manifest_print(const char *dir)
{
    static proc_t ps[KEEL_MANIFEST_SERVICES_MAX * KEEL_MANIFEST_INSTANCES_MAX];
    int n = record_load(dir, ps, (int)(sizeof(ps) / sizeof(ps[0])));
    if (n == 0)
        return;
    printf("\n%-16s %-8s %-22s %-8s %s\n", "SERVICE", "INSTANCE", "ADDRESS", "PID", "STATE");
    for (int i = 0; i < n; i++) {
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%d", ps[i].host, ps[i].port);
        printf("%-16s %-8d %-22s %-8d %s\n", ps[i].service, ps[i].instance,
               ps[i].port > 0 ? addr : "-", (int)ps[i].pid,
               proc_alive(&ps[i]) ? "running" : "not running");
    }
}
