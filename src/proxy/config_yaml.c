/* config_yaml.c - the config loader's reading of YAML: scalar conversions with their checks,
 * field tables, lists, and errors with their lines. */
#include "proxy/config_int.h"
#include "proxy/h1.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_proxy_errors_add(keel_proxy_errors_t *errs, int line, const char *text)
{
    if (errs->count >= KEEL_PROXY_ERRORS_MAX) {
        errs->dropped++;
        return;
    }
    keel_proxy_error_t *e = &errs->e[errs->count++];
    e->line = line;
    snprintf(e->text, sizeof(e->text), "%s", text);
}

void keel__cfg_errl(ctx_t *c, int line, const char *fmt, ...)
{
    char text[KEEL_PROXY_ERROR_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    keel_proxy_errors_add(c->errs, line, text);
}

/* ---- environment references --------------------------------------------------------------- */

#define ENV_NAME_BYTES_MAX 128

/* s with its references replaced, malloc'd; NULL after reporting an error at n's line. */
static char *expand_env(ctx_t *c, yaml_node_t *n, const char *s)
{
    size_t cap = KEEL_PROXY_VALUE_BYTES_MAX + 1, len = 0;
    char *out = malloc(cap);
    if (out == NULL) {
        ERR(c, n, "out of memory");
        return NULL;
    }
    while (*s) {
        const char *piece = s;
        size_t piece_len = 1;
        char name[ENV_NAME_BYTES_MAX];
        if (strncmp(s, "$${", 3) == 0) {
            piece = "${";
            piece_len = 2;
            s += 3;
        } else if (strncmp(s, "${", 2) == 0) {
            const char *end = strchr(s, '}');
            size_t name_len = strcspn(s + 2, ":}");
            if (end == NULL || name_len == 0 || name_len >= sizeof(name) ||
                (s[2 + name_len] == ':' && s[3 + name_len] != '-')) {
                ERR(c, n, "'%.40s': expected ${NAME} or ${NAME:-default}", s);
                free(out);
                return NULL;
            }
            memcpy(name, s + 2, name_len);
            name[name_len] = '\0';
            const char *value = getenv(name);
            if (s[2 + name_len] == ':' && (value == NULL || value[0] == '\0')) {
                value = s + 4 + name_len; /* the default, up to the '}' */
                piece_len = (size_t)(end - value);
            } else if (value == NULL) {
                ERR(c, n, "${%s}: the environment variable is not set (and no :-default)", name);
                free(out);
                return NULL;
            } else {
                piece_len = strlen(value);
            }
            piece = value;
            s = end + 1;
        } else {
            s++;
        }
        if (len + piece_len >= cap) {
            ERR(c, n, "value longer than %u bytes once expanded", KEEL_PROXY_VALUE_BYTES_MAX);
            free(out);
            return NULL;
        }
        memcpy(out + len, piece, piece_len);
        len += piece_len;
    }
    out[len] = '\0';
    return out;
}

void keel__cfg_expand_env(ctx_t *c)
{
    for (yaml_node_t *n = c->doc->nodes.start; n < c->doc->nodes.top; n++) {
        if (n->type != YAML_SCALAR_NODE || strstr((char *)n->data.scalar.value, "${") == NULL)
            continue;
        char *v = expand_env(c, n, (const char *)n->data.scalar.value);
        if (v == NULL)
            continue;
        free(n->data.scalar.value); /* libyaml allocates with malloc and frees with free */
        n->data.scalar.value = (yaml_char_t *)v;
        n->data.scalar.length = strlen(v);
    }
}

/* ---- scalar conversions ------------------------------------------------------------------ */

bool keel__cfg_want_scalar(ctx_t *c, yaml_node_t *n, const char *key, const char **out)
{
    *out = scalar(n);
    if (*out == NULL) {
        ERR(c, n, "%s: expected a single value", key);
        return false;
    }
    if (strlen(*out) > KEEL_PROXY_VALUE_BYTES_MAX) {
        ERR(c, n, "%s: value longer than %u bytes", key, KEEL_PROXY_VALUE_BYTES_MAX);
        return false;
    }
    return true;
}

bool keel__cfg_to_u64(ctx_t *c, yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi,
                      uint64_t *out)
{
    const char *s;
    if (!keel__cfg_want_scalar(c, n, key, &s))
        return false;
    uint64_t v = 0;
    size_t len = strlen(s);
    if (len == 0 || len > 19) {
        ERR(c, n, "%s: '%s' is not a whole number", key, s);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            ERR(c, n, "%s: '%s' is not a whole number", key, s);
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v < lo || v > hi) {
        ERR(c, n, "%s: %llu is out of range %llu..%llu", key, (unsigned long long)v,
            (unsigned long long)lo, (unsigned long long)hi);
        return false;
    }
    *out = v;
    return true;
}

bool keel__cfg_to_bool(ctx_t *c, yaml_node_t *n, const char *key, bool *out)
{
    const char *s;
    if (!keel__cfg_want_scalar(c, n, key, &s))
        return false;
    if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 || strcmp(s, "off") == 0)
        *out = false;
    else {
        ERR(c, n, "%s: '%s' is not true or false", key, s);
        return false;
    }
    return true;
}

char *keel__cfg_dup_lower(const char *s, bool low)
{
    char *d = strdup(s);
    if (d != NULL && low)
        for (char *p = d; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
    return d;
}

bool keel__cfg_to_str(ctx_t *c, yaml_node_t *n, const char *key, bool low, char **out)
{
    const char *s;
    if (!keel__cfg_want_scalar(c, n, key, &s))
        return false;
    free(*out);
    *out = keel__cfg_dup_lower(s, low);
    if (*out == NULL) {
        ERR(c, n, "%s: out of memory", key);
        return false;
    }
    return true;
}

/* A field name: a token (RFC 9110 §5.6.2), stored lower-case. */
bool keel__cfg_to_field_name(ctx_t *c, yaml_node_t *n, const char *key, char **out)
{
    if (!keel__cfg_to_str(c, n, key, true, out))
        return false;
    size_t len = strlen(*out);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = keel_h1_is_tchar((unsigned char)(*out)[i]);
    if (!ok)
        ERR(c, n, "%s: '%s' is not a header name", key, *out);
    return ok;
}

/* A value sent in a header: no CR, LF or NUL (they would split the message). */
bool keel__cfg_to_header_value(ctx_t *c, yaml_node_t *n, const char *key, char **out)
{
    if (!keel__cfg_to_str(c, n, key, false, out))
        return false;
    for (const char *p = *out; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            ERR(c, n, "%s: control character in a header value", key);
            return false;
        }
    return true;
}

/* "host:port" with a port in 1..65535 (0 too where any_port: a listener the kernel places);
 * the runtime resolves nothing, so hosts are numeric. */
bool keel__cfg_to_address(ctx_t *c, yaml_node_t *n, const char *key, bool any_port, char **out)
{
    if (!keel__cfg_to_str(c, n, key, false, out))
        return false;
    const char *colon = strrchr(*out, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    bool digits = colon && colon[1] != 0 && strspn(colon + 1, "0123456789") == strlen(colon + 1);
    if (colon == NULL || colon == *out || !digits || port < (any_port ? 0 : 1) || port > 65535) {
        ERR(c, n, "%s: '%s' is not host:port (port %d..65535)", key, *out, any_port ? 0 : 1);
        return false;
    }
    return true;
}

/* ---- field tables ------------------------------------------------------------------------ */

void keel__cfg_load_fields(ctx_t *c, yaml_node_t *map, const field_t *fields, size_t n, void *base,
                           const char *what)
{
    assert(n <= FIELDS_MAX);
    if (map->type != YAML_MAPPING_NODE) {
        ERR(c, map, "%s: expected a mapping (key: value lines)", what);
        return;
    }
    uint32_t seen = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        const char *key = scalar(k);
        size_t i = 0;
        while (key != NULL && i < n && strcmp(fields[i].key, key) != 0)
            i++;
        if (key == NULL || i == n) {
            ERR(c, k, "%s: unknown key '%s'", what, key ? key : "?");
            continue;
        }
        if (seen & (1u << i)) {
            ERR(c, k, "%s: '%s' given twice", what, key);
            continue;
        }
        seen |= 1u << i;
        const field_t *f = &fields[i];
        uint8_t *dst = (uint8_t *)base + f->off;
        uint64_t u;
        switch (f->type) {
        case F_U32:
            if (keel__cfg_to_u64(c, v, key, f->lo, f->hi, &u))
                *(uint32_t *)dst = (uint32_t)u;
            break;
        case F_U64:
            if (keel__cfg_to_u64(c, v, key, f->lo, f->hi, &u))
                *(uint64_t *)dst = u;
            break;
        case F_MS:
            if (keel__cfg_to_u64(c, v, key, f->lo, f->hi, &u))
                *(keel_ms_t *)dst = (keel_ms_t)u;
            break;
        case F_BOOL:
            keel__cfg_to_bool(c, v, key, (bool *)dst);
            break;
        case F_STR:
            keel__cfg_to_str(c, v, key, false, (char **)dst);
            break;
        case F_FN:
            f->fn(c, v, base);
            break;
        }
    }
}

/* Iterates a sequence node, calling fn(c, item, i) for each; refuses more than max items. */
void keel__cfg_each_item(ctx_t *c, yaml_node_t *seq, const char *what, uint32_t max,
                         void (*fn)(ctx_t *c, yaml_node_t *item, uint32_t i, void *arg), void *arg)
{
    if (seq->type != YAML_SEQUENCE_NODE) {
        ERR(c, seq, "%s: expected a list (lines starting with '-')", what);
        return;
    }
    uint32_t i = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = node_at(c, *it);
        if (i >= max) {
            ERR(c, item, "%s: more than %u entries", what, max);
            return;
        }
        fn(c, item, i, arg);
    }
}

/* A registry service name or tag: what KEEL.REG accepts (no spaces or control characters). */
void keel__cfg_to_reg_name(ctx_t *c, yaml_node_t *v, const char *key, char **out)
{
    if (!keel__cfg_to_str(c, v, key, false, out))
        return;
    size_t len = strlen(*out);
    bool ok = len > 0 && len < KEEL_PROXY_NAME_BYTES_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)(*out)[i] > ' ' && (*out)[i] != 0x7f;
    if (!ok)
        ERR(c, v, "%s: '%s' is not a registry name (1..%u bytes, no spaces)", key, *out,
            KEEL_PROXY_NAME_BYTES_MAX - 1);
}