/* json.c - bounded flat JSON object writer and string escaping. */
#include "base/json.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Room kept back for the closing "}" and the NUL. */
#define CLOSE_RESERVE 2
/* Room a cut string needs for its marker and closing quote: "..." + '"'. */
#define CUT_RESERVE 4

void keel_jw_init(keel_jw_t *w, char *out, size_t cap)
{
    assert(cap >= 16);
    w->out = out;
    w->cap = cap;
    w->len = 0;
    w->fields = 0;
    w->full = 0;
    out[0] = '\0';
}

static size_t room(const keel_jw_t *w)
{
    size_t used = w->len + CLOSE_RESERVE;
    return used >= w->cap ? 0 : w->cap - used;
}

static int put(keel_jw_t *w, const char *s, size_t n)
{
    if (w->full || n > room(w)) {
        w->full = 1;
        return -1;
    }
    memcpy(w->out + w->len, s, n);
    w->len += n;
    return 0;
}

void keel_jw_raw(keel_jw_t *w, const char *s)
{
    put(w, s, strlen(s));
}

size_t keel_json_escape(char *out, size_t cap, const char *s, size_t n, size_t *out_len)
{
    size_t o = 0, i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        size_t k;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            k = 2;
        } else if (c == '\n') {
            memcpy(tmp, "\\n", 2);
            k = 2;
        } else if (c == '\r') {
            memcpy(tmp, "\\r", 2);
            k = 2;
        } else if (c == '\t') {
            memcpy(tmp, "\\t", 2);
            k = 2;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            k = 6;
        } else {
            tmp[0] = (char)c;
            k = 1;
        }
        if (o + k + 1 > cap)
            break;
        memcpy(out + o, tmp, k);
        o += k;
    }
    if (cap > 0)
        out[o] = '\0';
    *out_len = o;
    return i;
}

void keel_jw_key(keel_jw_t *w, const char *key)
{
    if (w->full)
        return;
    size_t mark = w->len;
    if ((w->fields > 0 && put(w, ",", 1) != 0) || put(w, "\"", 1) != 0)
        goto undo;
    size_t k = strlen(key), esc_len;
    size_t avail = room(w);
    if (keel_json_escape(w->out + w->len, avail + 1, key, k, &esc_len) != k)
        goto undo;
    w->len += esc_len;
    /* A key must leave room for at least a short value. */
    if (put(w, "\":", 2) != 0 || room(w) < 24) /* fits any integer */
        goto undo;
    w->fields++;
    return;
undo:
    w->len = mark;
    w->full = 1;
}

void keel_jw_strn(keel_jw_t *w, const char *s, size_t n)
{
    if (w->full || put(w, "\"", 1) != 0)
        return;
    size_t avail = room(w);
    size_t esc_len;
    /* cap `avail` (NUL included) leaves one byte for the closing quote */
    size_t used = keel_json_escape(w->out + w->len, avail, s, n, &esc_len);
    if (used < n) {
        /* Cut: back off so the marker and closing quote fit. */
        size_t keep = avail >= CUT_RESERVE ? avail - CUT_RESERVE : 0;
        used = keel_json_escape(w->out + w->len, keep + 1, s, n, &esc_len);
        w->len += esc_len;
        memcpy(w->out + w->len, "...\"", 4);
        w->len += 4;
        w->full = 1;
        return;
    }
    w->len += esc_len;
    put(w, "\"", 1);
}

void keel_jw_str(keel_jw_t *w, const char *s)
{
    keel_jw_strn(w, s, strlen(s));
}

void keel_jw_int(keel_jw_t *w, int64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    put(w, tmp, (size_t)k);
}

size_t keel_jw_close_object(keel_jw_t *w)
{
    assert(w->len + CLOSE_RESERVE <= w->cap);
    w->out[w->len++] = '}';
    w->out[w->len] = '\0';
    return w->len;
}
