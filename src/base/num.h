/* num.h - decimal integers: strict parsing and formatting, one of each for all of keel. */
#ifndef KEEL_BASE_NUM_H
#define KEEL_BASE_NUM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Strict decimal int64 as Redis's string2ll(): optional '-', digits, no leading
 * zeros ("0" alone is fine, "-0" and "007" are not), no '+', no spaces, no
 * overflow, at most 20 bytes. 0 and *out, or -1.
 */
int keel_parse_i64(const uint8_t *s, size_t n, int64_t *out);

/* Bytes of the longest decimal int64 or uint64: a sign and 20 digits. */
#define KEEL_DEC_BYTES_MAX 21u

/* Writes v in decimal (no NUL) to out (room for KEEL_DEC_BYTES_MAX); returns its length. */
size_t keel_fmt_u64(char *out, uint64_t v);
size_t keel_fmt_i64(char *out, int64_t v);

#endif
