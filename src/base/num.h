/* num.h - strict decimal integer parsing shared by the RESP codec and the KV commands. */
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

#endif
