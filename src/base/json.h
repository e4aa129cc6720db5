/* json.h - a small JSON writer into a fixed buffer that always yields valid JSON. */
#ifndef KEEL_BASE_JSON_H
#define KEEL_BASE_JSON_H

#include <stddef.h>
#include <stdint.h>

/*
 * For hot, bounded outputs (log lines, short API replies) where building a
 * jansson tree would cost more than the work itself. It writes one flat
 * object. When the buffer runs short, the string being written is cut and
 * marked "...", later fields are dropped, and close_object() still closes the
 * object: the result is always valid JSON and never longer than `cap`.
 * For anything nested or parsed, use jansson.
 */
typedef struct keel_jw {
    char *out;
    size_t cap; /* bytes usable, including the closing '}' and NUL */
    size_t len;
    int fields;
    int full; /* set once something was cut; later writes are dropped */
} keel_jw_t;

void keel_jw_init(keel_jw_t *w, char *out, size_t cap);
/* Appends raw text if it fits whole (used for the opening '{'). */
void keel_jw_raw(keel_jw_t *w, const char *s);
void keel_jw_key(keel_jw_t *w, const char *key);
void keel_jw_str(keel_jw_t *w, const char *s);
void keel_jw_strn(keel_jw_t *w, const char *s, size_t n);
void keel_jw_int(keel_jw_t *w, int64_t v);
/* Writes the closing '}' and NUL; returns the length without the NUL. */
size_t keel_jw_close_object(keel_jw_t *w);

/*
 * Escapes s[0..n) as JSON string content (no quotes) into out (cap bytes, NUL
 * always written). Returns the bytes of s consumed; stops early rather than
 * split an escape. Control characters become \u00XX; bytes >= 0x80 pass through.
 */
size_t keel_json_escape(char *out, size_t cap, const char *s, size_t n, size_t *out_len);

#endif
