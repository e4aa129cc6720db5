/* reg_json.c - Consul's service registration JSON as a KEEL.REG REGISTER command (no I/O). */
#include "proto/reg_json.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A year: far above any TTL the registry accepts (it judges its own limit). */
#define DURATION_MS_MAX (365ull * 24 * 3600 * 1000)
/* Digits of one number in a duration: beyond this it is over DURATION_MS_MAX anyway. */
#define DURATION_DIGITS_MAX 18

int keel_reg_duration_ms(const char *s, size_t n, uint64_t *ms)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    if (n == 1 && s[0] == '0') {
        *ms = 0;
        return 0;
    }
    double total = 0;
    size_t i = 0;
    if (n == 0)
        return KEEL_EINVAL;
    while (i < n) {
        double v = 0, scale = 0;
        size_t digits = 0;
        for (; i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'); i++) {
            if (s[i] == '.') {
                if (scale != 0)
                    return KEEL_EINVAL;
                scale = 1;
                continue;
            }
            if (++digits > DURATION_DIGITS_MAX)
                return KEEL_EINVAL;
            if (scale != 0)
                v += (s[i] - '0') * (scale /= 10);
            else
                v = v * 10 + (s[i] - '0');
        }
        if (digits == 0)
            return KEEL_EINVAL;
        size_t best = 0, which = 0;
        for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
            size_t ul = strlen(units[u].unit);
            if (ul <= n - i && memcmp(s + i, units[u].unit, ul) == 0 && ul > best)
                best = ul, which = u;
        }
        if (best == 0)
            return KEEL_EINVAL;
        i += best;
        total += v * units[which].ms;
        if (total > (double)DURATION_MS_MAX)
            return KEEL_EINVAL;
    }
    uint64_t whole = (uint64_t)total;
    *ms = whole + ((double)whole < total);
    return 0;
}

/* The member named key, compared without case (Consul's decoder is lenient so). */
static json_t *member(json_t *obj, const char *key)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (strcasecmp(k, key) == 0)
            return v;
    }
    return NULL;
}

typedef struct builder {
    keel_reg_json_t *out;
    size_t nums;
    keel_errmsg_t *msg;
} builder_t;

static void arg(builder_t *b, const char *p, size_t n)
{
    keel_reg_json_t *o = b->out;
    assert(o->argc < KEEL_REG_JSON_ARGC_MAX); /* bounded by the counts checked before */
    o->argv[o->argc] = (const uint8_t *)p;
    o->lens[o->argc++] = n;
}

static void arg_str(builder_t *b, const char *s)
{
    arg(b, s, strlen(s));
}

static void arg_num(builder_t *b, unsigned long long v)
{
    assert(b->nums < KEEL_REG_JSON_NUMS);
    char *d = b->out->nums[b->nums++];
    int n = snprintf(d, KEEL_REG_JSON_NUM_BYTES, "%llu", v);
    arg(b, d, (size_t)n);
}

/* A string member (absent: def), or KEEL_EINVAL. */
static int str_member(builder_t *b, json_t *obj, const char *key, const char *def, const char **p,
                      size_t *n)
{
    json_t *v = member(obj, key);
    if (v == NULL || json_is_null(v)) {
        *p = def;
        *n = def ? strlen(def) : 0;
        return 0;
    }
    if (!json_is_string(v))
        return keel_errf(b->msg, KEEL_EINVAL, "%s must be a string", key);
    *p = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

/* An integer member in 0..max (absent: *out untouched, 0 returned with *given 0). */
static int int_member(builder_t *b, json_t *obj, const char *key, json_int_t max,
                      unsigned long long *out, int *given)
{
    json_t *v = member(obj, key);
    *given = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return keel_errf(b->msg, KEEL_EINVAL, "%s must be an integer in 0..%lld", key,
                         (long long)max);
    *out = (unsigned long long)json_integer_value(v);
    *given = 1;
    return 0;
}

static int duration_member(builder_t *b, json_t *obj, const char *key, uint64_t *ms, int *given)
{
    const char *p;
    size_t n;
    *given = 0;
    int rc = str_member(b, obj, key, NULL, &p, &n);
    if (rc != 0 || p == NULL)
        return rc;
    if (keel_reg_duration_ms(p, n, ms) != 0)
        return keel_errf(b->msg, KEEL_EINVAL, "%s is not a duration like \"10s\"", key);
    *given = 1;
    return 0;
}

static int parse_tags_meta(builder_t *b, json_t *root)
{
    json_t *tags = member(root, "Tags");
    if (tags && !json_is_null(tags)) {
        if (!json_is_array(tags) || json_array_size(tags) > KEEL_REG_JSON_TAGS_MAX)
            return keel_errf(b->msg, KEEL_EINVAL, "Tags must be an array of at most %u strings",
                             KEEL_REG_JSON_TAGS_MAX);
        for (size_t i = 0; i < json_array_size(tags); i++)
            if (!json_is_string(json_array_get(tags, i)))
                return keel_errf(b->msg, KEEL_EINVAL, "Tags must be strings");
        arg_str(b, "TAGS");
        arg_num(b, json_array_size(tags));
        for (size_t i = 0; i < json_array_size(tags); i++) {
            json_t *t = json_array_get(tags, i);
            arg(b, json_string_value(t), json_string_length(t));
        }
    }
    json_t *meta = member(root, "Meta");
    if (meta && !json_is_null(meta)) {
        if (!json_is_object(meta) || json_object_size(meta) > KEEL_REG_JSON_META_PAIRS_MAX)
            return keel_errf(b->msg, KEEL_EINVAL, "Meta must be an object of at most %u strings",
                             KEEL_REG_JSON_META_PAIRS_MAX);
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v)
        {
            if (!json_is_string(v))
                return keel_errf(b->msg, KEEL_EINVAL, "Meta values must be strings");
        }
        arg_str(b, "META");
        arg_num(b, json_object_size(meta));
        json_object_foreach(meta, k, v)
        {
            arg(b, k, strlen(k));
            arg(b, json_string_value(v), json_string_length(v));
        }
    }
    return 0;
}

static int parse_weights(builder_t *b, json_t *root)
{
    json_t *w = member(root, "Weights");
    if (w == NULL || json_is_null(w))
        return 0;
    if (!json_is_object(w))
        return keel_errf(b->msg, KEEL_EINVAL, "Weights must be an object");
    unsigned long long pass = 1, warn = 1;
    int g1, g2;
    int rc = int_member(b, w, "Passing", 65535, &pass, &g1);
    if (rc == 0)
        rc = int_member(b, w, "Warning", 65535, &warn, &g2);
    if (rc != 0)
        return rc;
    arg_str(b, "WEIGHTS");
    arg_num(b, pass);
    arg_num(b, warn);
    return 0;
}

static int parse_check(builder_t *b, json_t *root)
{
    json_t *c = member(root, "Check");
    if (c == NULL || json_is_null(c))
        return 0;
    if (!json_is_object(c))
        return keel_errf(b->msg, KEEL_EINVAL, "Check must be an object");
    uint64_t ttl, dca;
    int given;
    int rc = duration_member(b, c, "TTL", &ttl, &given);
    if (rc != 0)
        return rc;
    if (given) {
        arg_str(b, "TTL");
        arg_num(b, ttl);
    }
    if ((rc = duration_member(b, c, "DeregisterCriticalServiceAfter", &dca, &given)) != 0)
        return rc;
    if (given) {
        arg_str(b, "DEREGISTER_CRITICAL_AFTER");
        arg_num(b, dca);
    }
    const char *st;
    size_t st_n;
    if ((rc = str_member(b, c, "Status", "critical", &st, &st_n)) != 0)
        return rc;
    arg_str(b, "STATUS");
    arg(b, st, st_n); /* the registry judges the word */
    unsigned long long v;
    if ((rc = int_member(b, c, "SuccessBeforePassing", 1000, &v, &given)) != 0)
        return rc;
    if (given) {
        arg_str(b, "SUCCESS_BEFORE_PASSING");
        arg_num(b, v);
    }
    if ((rc = int_member(b, c, "FailuresBeforeCritical", 1000, &v, &given)) != 0)
        return rc;
    if (given) {
        arg_str(b, "FAILURES_BEFORE_CRITICAL");
        arg_num(b, v);
    }
    return 0;
}

static int build(builder_t *b, json_t *root)
{
    const char *name, *id, *addr, *version;
    size_t name_n, id_n, addr_n, version_n;
    unsigned long long port = 0;
    int given;
    int rc = str_member(b, root, "Name", NULL, &name, &name_n);
    if (rc == 0 && (name == NULL || name_n == 0))
        rc = keel_errf(b->msg, KEEL_EINVAL, "Name is required");
    if (rc == 0)
        rc = str_member(b, root, "ID", name, &id, &id_n);
    if (rc == 0)
        rc = str_member(b, root, "Address", "", &addr, &addr_n);
    if (rc == 0)
        rc = str_member(b, root, "Version", NULL, &version, &version_n);
    if (rc == 0)
        rc = int_member(b, root, "Port", 65535, &port, &given);
    if (rc != 0)
        return rc;
    if (id_n == 0) /* "ID": "" is Consul's "use the name" too */
        id = name, id_n = name_n;
    arg_str(b, "KEEL.REG.WRITE");
    arg_str(b, "REGISTER");
    arg(b, name, name_n);
    arg(b, id, id_n);
    arg(b, addr, addr_n);
    arg_num(b, port);
    if (version != NULL) {
        arg_str(b, "VERSION");
        arg(b, version, version_n);
    }
    if ((rc = parse_tags_meta(b, root)) != 0 || (rc = parse_weights(b, root)) != 0)
        return rc;
    return parse_check(b, root);
}

int keel_reg_json_parse(const uint8_t *body, size_t len, keel_reg_json_t *out, keel_errmsg_t *msg)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    json_t *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return keel_errf(msg, KEEL_EINVAL, "body is not JSON: %s (line %d)", jerr.text, jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return keel_errf(msg, KEEL_EINVAL, "body must be a JSON object");
    }
    out->root = root;
    out->argv = malloc(KEEL_REG_JSON_ARGC_MAX * sizeof(*out->argv));
    out->lens = malloc(KEEL_REG_JSON_ARGC_MAX * sizeof(*out->lens));
    if (out->argv == NULL || out->lens == NULL) {
        keel_reg_json_free(out);
        return KEEL_ENOMEM;
    }
    builder_t b = {out, 0, msg};
    int rc = build(&b, root);
    if (rc != 0) {
        keel_reg_json_free(out);
        return rc;
    }
    return 0;
}

void keel_reg_json_free(keel_reg_json_t *out)
{
    json_decref(out->root);
    free(out->argv);
    free(out->lens);
    memset(out, 0, sizeof(*out));
}
