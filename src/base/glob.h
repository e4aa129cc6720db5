/* glob.h - Redis-style glob patterns, as stringmatchlen matches them (KEYS, SCAN, PSUBSCRIBE). */
#ifndef KEEL_BASE_GLOB_H
#define KEEL_BASE_GLOB_H

#include <stddef.h>
#include <stdint.h>

/*
 * 1 if s matches pat: `*` any run, `?` any byte, `[...]` a class (`^` negates, `a-z`
 * ranges either way round, `\]` escapes, an unclosed class runs to the end), `\x` a
 * literal x. Iterative with one backtrack point, so O(pattern x string) time.
 */
int keel_glob_match(const uint8_t *pat, size_t pat_len, const uint8_t *s, size_t s_len);

#endif
