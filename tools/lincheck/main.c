/* main.c - keel-lincheck: checks a JSON-lines history for linearizability (exit 0, 1 or 2). */
#include "base/err.h"
#include "base/map.h"
#include "core/lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Input: one JSON object per line, Jepsen-style (docs/lincheck.md):
 *   {"process":3,"type":"invoke","f":"write","key":"k1","value":"v7","time":123456}
 *   {"process":3,"type":"ok","f":"write","key":"k1","value":"v7","time":123999}
 * Each process has at most one operation in flight; a completion (ok, fail,
 * info) closes the process's pending invocation. Keys, values and process ids
 * are interned to integers for the checker (core/lincheck.h); the original
 * JSON is kept to print the failing window.
 *
 * Exit status: 0 linearizable, 1 not linearizable, 2 bad input, bad usage or
 * the checker gave up (a limit was reached).
 */

#define LINE_BYTES_MAX (1u << 20)
#define NAMES_MAX (1u << 26)

enum { EXIT_LIN = 0, EXIT_NOT_LIN = 1, EXIT_BAD = 2 };

/* Interned JSON scalars: id -> the JSON value (ids start at 1; 0 is null / absent). */
typedef struct names {
    keel_map_t map;
    json_t **json;
    size_t n, cap;
} names_t;

typedef struct hist {
    keel_lc_op_t *ops;
    size_t *line;      /* line of each op's invocation */
    size_t *done_line; /* line of its completion; 0 if none */
    size_t n, cap;
    names_t keys, values, procs;
    size_t *pending; /* per process id: 1 + op index of its pending invocation, or 0 */
    size_t pending_cap;
    int timed; /* -1 undecided, 0 time is the line number, 1 "time" fields */
} hist_t;

typedef struct opts {
    const char *path;
    int json;
    keel_lc_limits_t lim;
} opts_t;

static int names_init(names_t *nm)
{
    memset(nm, 0, sizeof(*nm));
    return keel_map_init(&nm->map, 64, NAMES_MAX, 0x6c696e636865636bULL);
}

static void names_free(names_t *nm)
{
    keel_map_free(&nm->map, NULL);
    for (size_t i = 0; i < nm->n; i++)
        json_decref(nm->json[i]);
    free(nm->json);
}

/* Interns a string or integer JSON value (null -> 0 if allow_null). Returns 0 or KEEL_E*. */
static int names_intern(names_t *nm, json_t *v, int allow_null, int64_t *id)
{
    char buf[64];
    const char *text;
    size_t len;
    if (json_is_null(v) && allow_null) {
        *id = 0;
        return 0;
    }
    if (json_is_string(v)) {
        text = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        len =
            (size_t)snprintf(buf, sizeof(buf), "\x01%" JSON_INTEGER_FORMAT, json_integer_value(v));
        text = buf; /* the \x01 tag keeps 7 and "7" apart (\x01 never starts a real string) */
    } else {
        return KEEL_EINVAL;
    }
    void **slot = keel_map_get(&nm->map, text, len);
    if (slot != NULL) {
        *id = (int64_t)(uintptr_t)*slot;
        return 0;
    }
    if (nm->n == nm->cap) {
        size_t cap = nm->cap ? nm->cap * 2 : 64;
        json_t **j = realloc(nm->json, cap * sizeof(*j));
        if (j == NULL)
            return KEEL_ENOMEM;
        nm->json = j;
        nm->cap = cap;
    }
    int rc = keel_map_put(&nm->map, text, len, (void *)(uintptr_t)(nm->n + 1), NULL);
    if (rc < 0)
        return rc;
    nm->json[nm->n++] = json_incref(v);
    *id = (int64_t)nm->n;
    return 0;
}

/* The JSON of an interned id (null for 0), borrowed. */
static json_t *names_json(const names_t *nm, int64_t id)
{
    static json_t *null_value;
    if (id <= 0 || (size_t)id > nm->n) {
        if (null_value == NULL)
            null_value = json_null();
        return null_value;
    }
    return nm->json[id - 1];
}

static void hist_free(hist_t *h)
{
    free(h->ops);
    free(h->line);
    free(h->done_line);
    free(h->pending);
    names_free(&h->keys);
    names_free(&h->values);
    names_free(&h->procs);
}

static int hist_grow(hist_t *h, size_t procs)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        keel_lc_op_t *ops = realloc(h->ops, cap * sizeof(*ops));
        if (ops != NULL)
            h->ops = ops;
        size_t *line = realloc(h->line, cap * sizeof(*line));
        if (line != NULL)
            h->line = line;
        size_t *done = realloc(h->done_line, cap * sizeof(*done));
        if (done != NULL)
            h->done_line = done;
        if (ops == NULL || line == NULL || done == NULL)
            return KEEL_ENOMEM;
        h->cap = cap;
    }
    if (procs > h->pending_cap) {
        size_t cap = h->pending_cap ? h->pending_cap : 64;
        while (cap < procs)
            cap *= 2;
        size_t *p = realloc(h->pending, cap * sizeof(*p));
        if (p == NULL)
            return KEEL_ENOMEM;
        memset(p + h->pending_cap, 0, (cap - h->pending_cap) * sizeof(*p));
        h->pending = p;
        h->pending_cap = cap;
    }
    return 0;
}

/* ---- parsing one event ----------------------------------------------------------------------- */

static int parse_fn(const char *f, keel_lc_fn_t *fn)
{
    static const struct {
        const char *name;
        keel_lc_fn_t fn;
    } fns[] = {{"read", KEEL_LC_READ}, {"write", KEEL_LC_WRITE}, {"cas", KEEL_LC_CAS}};
    for (size_t i = 0; f != NULL && i < sizeof(fns) / sizeof(fns[0]); i++)
        if (strcmp(f, fns[i].name) == 0) {
            *fn = fns[i].fn;
            return 0;
        }
    return KEEL_EINVAL;
}

static int event_time(hist_t *h, json_t *ev, size_t line, int64_t *t, keel_errmsg_t *em)
{
    json_t *jt = json_object_get(ev, "time");
    int timed = jt != NULL;
    if (h->timed < 0)
        h->timed = timed;
    if (timed != h->timed)
        return keel_errf(em, KEEL_EINVAL, "\"time\" must be on every line or on none");
    if (!timed) {
        *t = (int64_t)line;
        return 0;
    }
    if (!json_is_integer(jt))
        return keel_errf(em, KEEL_EINVAL, "\"time\" must be an integer");
    *t = json_integer_value(jt);
    return 0;
}

static int parse_invoke(hist_t *h, json_t *ev, int64_t pid, keel_lc_fn_t fn, int64_t t, size_t line,
                        keel_errmsg_t *em)
{
    if (h->pending[pid] != 0)
        return keel_errf(em, KEEL_EINVAL,
                         "process invokes while its operation from line %zu is still pending",
                         h->line[h->pending[pid] - 1]);
    keel_lc_op_t o = {.process = (uint64_t)pid, .fn = fn, .outcome = KEEL_LC_UNKNOWN};
    o.invoke_ts = t;
    int64_t key;
    if (names_intern(&h->keys, json_object_get(ev, "key"), 0, &key) < 0)
        return keel_errf(em, KEEL_EINVAL, "\"key\" must be a string or an integer");
    o.key = (uint64_t)key;
    json_t *v = json_object_get(ev, "value");
    if (fn == KEEL_LC_WRITE && (v == NULL || names_intern(&h->values, v, 1, &o.arg) < 0))
        return keel_errf(em, KEEL_EINVAL, "a write needs a string, integer or null \"value\"");
    if (fn == KEEL_LC_CAS && (!json_is_array(v) || json_array_size(v) != 2 ||
                              names_intern(&h->values, json_array_get(v, 0), 1, &o.expect) < 0 ||
                              names_intern(&h->values, json_array_get(v, 1), 1, &o.arg) < 0))
        return keel_errf(em, KEEL_EINVAL, "a cas needs \"value\": [expected, new]");
    h->ops[h->n] = o;
    h->line[h->n] = line;
    h->done_line[h->n] = 0;
    h->pending[pid] = ++h->n;
    return 0;
}

static int parse_completion(hist_t *h, json_t *ev, const char *type, int64_t pid, keel_lc_fn_t fn,
                            int64_t t, size_t line, keel_errmsg_t *em)
{
    if (h->pending[pid] == 0)
        return keel_errf(em, KEEL_EINVAL, "\"%s\" with no pending invocation for its process",
                         type);
    size_t i = h->pending[pid] - 1;
    keel_lc_op_t *o = &h->ops[i];
    if (o->fn != fn)
        return keel_errf(em, KEEL_EINVAL, "completion f \"%s\" does not match its invocation",
                         keel_lc_fn_name(fn));
    int64_t key;
    json_t *jk = json_object_get(ev, "key");
    if (jk != NULL && (names_intern(&h->keys, jk, 0, &key) < 0 || (uint64_t)key != o->key))
        return keel_errf(em, KEEL_EINVAL, "completion key does not match its invocation");
    if (t < o->invoke_ts)
        return keel_errf(em, KEEL_EINVAL, "completes at %" PRId64 ", before its invocation", t);
    h->pending[pid] = 0;
    h->done_line[i] = line;
    if (strcmp(type, "info") == 0)
        return 0; /* stays UNKNOWN */
    o->complete_ts = t;
    o->outcome = strcmp(type, "ok") == 0 ? KEEL_LC_OK : KEEL_LC_FAIL;
    if (o->outcome != KEEL_LC_OK)
        return 0;
    json_t *v = json_object_get(ev, "value");
    if (fn == KEEL_LC_READ && (v == NULL || names_intern(&h->values, v, 1, &o->result) < 0))
        return keel_errf(em, KEEL_EINVAL,
                         "a read's ok needs the string, integer or null "
                         "\"value\" it read");
    if (fn == KEEL_LC_CAS) {
        json_t *r = json_object_get(ev, "result");
        if (r != NULL && !json_is_boolean(r))
            return keel_errf(em, KEEL_EINVAL, "a cas \"result\" must be true or false");
        o->result = r == NULL || json_is_true(r);
    }
    return 0;
}

static int parse_event(hist_t *h, json_t *ev, size_t line, keel_errmsg_t *em)
{
    if (!json_is_object(ev))
        return keel_errf(em, KEEL_EINVAL, "not a JSON object");
    const char *type = json_string_value(json_object_get(ev, "type"));
    keel_lc_fn_t fn;
    if (parse_fn(json_string_value(json_object_get(ev, "f")), &fn) < 0)
        return keel_errf(em, KEEL_EINVAL, "\"f\" must be \"read\", \"write\" or \"cas\"");
    int64_t pid, t = 0;
    if (names_intern(&h->procs, json_object_get(ev, "process"), 0, &pid) < 0)
        return keel_errf(em, KEEL_EINVAL, "\"process\" must be an integer or a string");
    int rc = event_time(h, ev, line, &t, em);
    if (rc == 0)
        rc = hist_grow(h, (size_t)pid + 1);
    if (rc < 0)
        return rc == KEEL_ENOMEM ? keel_errf(em, rc, "out of memory") : rc;
    if (type != NULL && strcmp(type, "invoke") == 0)
        return parse_invoke(h, ev, pid, fn, t, line, em);
    if (type != NULL &&
        (strcmp(type, "ok") == 0 || strcmp(type, "fail") == 0 || strcmp(type, "info") == 0))
        return parse_completion(h, ev, type, pid, fn, t, line, em);
    return keel_errf(em, KEEL_EINVAL, "\"type\" must be \"invoke\", \"ok\", \"fail\" or \"info\"");
}

static int read_history(FILE *in, const char *path, hist_t *h)
{
    char *buf = NULL;
    size_t bufcap = 0, line = 0;
    ssize_t len;
    int rc = 0;
    keel_errmsg_t em = {{0}};
    while ((len = getline(&buf, &bufcap, in)) >= 0) {
        line++;
        if ((size_t)len > LINE_BYTES_MAX) {
            rc = keel_errf(&em, KEEL_ETOOBIG, "line longer than %u bytes", LINE_BYTES_MAX);
            break;
        }
        size_t skip = strspn(buf, " \t\r\n");
        if (buf[skip] == '\0')
            continue;
        json_error_t jerr;
        json_t *ev = json_loadb(buf, (size_t)len, 0, &jerr);
        if (ev == NULL) {
            rc = keel_errf(&em, KEEL_EINVAL, "bad JSON: %s", jerr.text);
            break;
        }
        rc = parse_event(h, ev, line, &em);
        json_decref(ev);
        if (rc < 0)
            break;
    }
    if (rc == 0 && ferror(in))
        rc = keel_errf(&em, KEEL_EIO, "read error: %s", strerror(errno));
    if (rc < 0)
        fprintf(stderr, "keel-lincheck: %s:%zu: %s\n", path, line, em.text);
    free(buf);
    return rc;
}

/* ---- output ---------------------------------------------------------------------------------- */

/* One window op as JSON: where it is in the file and what it did. */
static json_t *op_json(const hist_t *h, size_t i, int stuck)
{
    const keel_lc_op_t *o = &h->ops[i];
    json_t *j = json_object();
    json_object_set_new(j, "line", json_integer((json_int_t)h->line[i]));
    if (h->done_line[i] != 0)
        json_object_set_new(j, "completion_line", json_integer((json_int_t)h->done_line[i]));
    json_object_set(j, "process", names_json(&h->procs, (int64_t)o->process));
    json_object_set_new(j, "f", json_string(keel_lc_fn_name(o->fn)));
    json_object_set_new(j, "type",
                        json_string(o->outcome == KEEL_LC_OK     ? "ok"
                                    : o->outcome == KEEL_LC_FAIL ? "fail"
                                                                 : "info"));
    if (o->fn == KEEL_LC_WRITE)
        json_object_set(j, "value", names_json(&h->values, o->arg));
    if (o->fn == KEEL_LC_READ && o->outcome == KEEL_LC_OK)
        json_object_set(j, "value", names_json(&h->values, o->result));
    if (o->fn == KEEL_LC_CAS) {
        json_object_set_new(
            j, "value",
            json_pack("[OO]", names_json(&h->values, o->expect), names_json(&h->values, o->arg)));
        if (o->outcome == KEEL_LC_OK)
            json_object_set_new(j, "result", json_boolean(o->result == 1));
    }
    json_object_set_new(j, "invoke_time", json_integer(o->invoke_ts));
    if (o->outcome != KEEL_LC_UNKNOWN)
        json_object_set_new(j, "complete_time", json_integer(o->complete_ts));
    if (stuck)
        json_object_set_new(j, "stuck", json_true());
    return j;
}

static const char *verdict_name(int verdict)
{
    return verdict == 1 ? "linearizable" : verdict == 0 ? "not_linearizable" : "gave_up";
}

static json_t *result_json(const hist_t *h, const keel_lc_result_t *r)
{
    json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I}", "verdict", verdict_name(r->verdict), "ops",
                          (json_int_t)h->n, "keys", (json_int_t)r->keys, "ops_checked",
                          (json_int_t)r->ops_checked, "steps", (json_int_t)r->steps, "states",
                          (json_int_t)r->states);
    if (r->verdict != 1)
        json_object_set(j, "key", names_json(&h->keys, (int64_t)r->key));
    if (r->verdict == 0) {
        json_t *w = json_object(), *ops = json_array();
        json_object_set_new(w, "start_time",
                            r->window_start_ts == INT64_MIN ? json_null()
                                                            : json_integer(r->window_start_ts));
        json_object_set_new(w, "end_time", json_integer(r->window_end_ts));
        json_object_set_new(w, "minimal", json_boolean(r->window_minimal));
        json_object_set_new(w, "op_count", json_integer((json_int_t)r->window_len));
        for (size_t i = 0; i < r->window_len && i < KEEL_LC_WINDOW_OPS_MAX; i++)
            json_array_append_new(ops,
                                  op_json(h, r->window_ops[i], r->window_ops[i] == r->stuck_op));
        json_object_set_new(w, "ops", ops);
        json_object_set_new(j, "window", w);
    }
    return j;
}

static void print_json_value(FILE *f, json_t *v)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    fputs(s != NULL ? s : "?", f);
    free(s);
}

static void print_op(FILE *f, const hist_t *h, size_t i, int stuck)
{
    const keel_lc_op_t *o = &h->ops[i];
    char lines[48];
    if (h->done_line[i] != 0)
        snprintf(lines, sizeof(lines), "lines %zu-%zu", h->line[i], h->done_line[i]);
    else
        snprintf(lines, sizeof(lines), "line %zu", h->line[i]);
    fprintf(f, "  %-18s process ", lines);
    print_json_value(f, names_json(&h->procs, (int64_t)o->process));
    fprintf(f, "  %s ", keel_lc_fn_name(o->fn));
    if (o->fn == KEEL_LC_READ) {
        fputs("-> ", f);
        print_json_value(f, names_json(&h->values, o->result));
    } else if (o->fn == KEEL_LC_WRITE) {
        print_json_value(f, names_json(&h->values, o->arg));
    } else {
        print_json_value(f, names_json(&h->values, o->expect));
        fputs(" -> ", f);
        print_json_value(f, names_json(&h->values, o->arg));
        if (o->outcome == KEEL_LC_OK)
            fputs(o->result ? " (swapped)" : " (compare failed)", f);
    }
    if (o->outcome == KEEL_LC_UNKNOWN)
        fprintf(f, "  [%" PRId64 ", ?) info", o->invoke_ts);
    else
        fprintf(f, "  [%" PRId64 ", %" PRId64 "] %s", o->invoke_ts, o->complete_ts,
                o->outcome == KEEL_LC_OK ? "ok" : "fail");
    fputs(stuck ? "   <- cannot be placed before it completes\n" : "\n", f);
}

static void print_text(FILE *f, const hist_t *h, const keel_lc_result_t *r, double secs)
{
    if (r->verdict == 1) {
        fprintf(f, "linearizable: %zu operations on %" PRIu64 " keys (%.3f s)\n", h->n, r->keys,
                secs);
        return;
    }
    if (r->verdict < 0) {
        fprintf(f, "gave up on key ");
        print_json_value(f, names_json(&h->keys, (int64_t)r->key));
        fprintf(f, ": %s\n", r->explain);
        return;
    }
    fprintf(f, "NOT linearizable: key ");
    print_json_value(f, names_json(&h->keys, (int64_t)r->key));
    fprintf(f, "\nno order of these %zu operations is allowed by a register", r->window_len);
    if (r->window_start_ts == INT64_MIN)
        fprintf(f, " starting empty (window: start of history");
    else
        fprintf(f, " with any initial value (window: time %" PRId64, r->window_start_ts);
    fprintf(f, " to %" PRId64 "%s):\n", r->window_end_ts,
            r->window_minimal ? "" : "; not fully shrunk, a limit was hit");
    for (size_t i = 0; i < r->window_len && i < KEEL_LC_WINDOW_OPS_MAX; i++)
        print_op(f, h, r->window_ops[i], r->window_ops[i] == r->stuck_op);
    if (r->window_len > KEEL_LC_WINDOW_OPS_MAX)
        fprintf(f, "  ... and %zu more\n", r->window_len - KEEL_LC_WINDOW_OPS_MAX);
}

/* ---- main -------------------------------------------------------------------------------------
 */

static void usage(FILE *f)
{
    fputs("usage: keel-lincheck [--json] [--steps-max N] [--states-max N] HISTORY.jsonl|-\n"
          "Checks a JSON-lines history of read/write/cas operations on keyed registers for\n"
          "linearizability (format: docs/lincheck.md).\n"
          "exit status: 0 linearizable, 1 not linearizable, 2 bad input or gave up\n",
          f);
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s != NULL ? s : "", &end, 10);
    if (s == NULL || *s == '\0' || *s == '-' || *end != '\0' || errno != 0 || x == 0)
        return KEEL_EINVAL;
    *v = x;
    return 0;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    keel_lc_limits_default(&o->lim);
    o->path = NULL;
    o->json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0)
            o->json = 1;
        else if (strcmp(a, "--steps-max") == 0 && parse_u64(argv[i + 1], &o->lim.steps_max) == 0)
            i++;
        else if (strcmp(a, "--states-max") == 0 && parse_u64(argv[i + 1], &o->lim.states_max) == 0)
            i++;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 1;
        else if ((a[0] != '-' || strcmp(a, "-") == 0) && o->path == NULL)
            o->path = a;
        else
            return KEEL_EINVAL;
    }
    return o->path == NULL ? KEEL_EINVAL : 0;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    opts_t o;
    int prc = parse_args(argc, argv, &o);
    if (prc != 0) {
        usage(prc > 0 ? stdout : stderr);
        return prc > 0 ? EXIT_LIN : EXIT_BAD;
    }
    int status = EXIT_BAD;
    hist_t h = {.timed = -1};
    if (names_init(&h.keys) < 0 || names_init(&h.values) < 0 || names_init(&h.procs) < 0)
        goto out;
    FILE *in = strcmp(o.path, "-") == 0 ? stdin : fopen(o.path, "r");
    if (in == NULL) {
        fprintf(stderr, "keel-lincheck: %s: %s\n", o.path, strerror(errno));
        goto out;
    }
    int rc = read_history(in, o.path, &h);
    if (in != stdin)
        fclose(in);
    if (rc < 0)
        goto out;
    keel_lc_result_t *r = malloc(sizeof(*r));
    if (r == NULL)
        goto out;
    double t0 = mono_s();
    rc = keel_lincheck(h.ops, h.n, &o.lim, r);
    double secs = mono_s() - t0;
    if (rc < 0) {
        fprintf(stderr, "keel-lincheck: %s: %s\n", o.path, r->explain);
    } else if (o.json) {
        json_t *j = result_json(&h, r);
        json_object_set_new(j, "seconds", json_real(secs));
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    } else {
        print_text(stdout, &h, r, secs);
    }
    status = rc < 0 || r->verdict < 0 ? EXIT_BAD : r->verdict == 1 ? EXIT_LIN : EXIT_NOT_LIN;
    free(r);
out:
    hist_free(&h);
    return status;
}
