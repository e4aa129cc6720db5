/* client/args.h - one command's arguments built into one buffer: what a caller assembles
 * before keel_client_command, including the commands a KEEL.TXN or KEEL.FENCED carries. */
#ifndef KEEL_CLIENT_ARGS_H
#define KEEL_CLIENT_ARGS_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Arguments are appended as bytes plus (offset, length), so the buffer may move while it
 * grows; keel_args_resolve() fills ptrs once it stops, just before sending. The first
 * failure (KEEL_ENOMEM, or KEEL_ETOOBIG past args_max arguments or the buffer's byte
 * limit) is kept in err and makes later additions do nothing, so a builder checks once, at
 * the end.
 *
 *     keel_args_t a;
 *     keel_args_init(&a, 64, 0);
 *     keel_args_str(&a, "SET"); keel_args_str(&a, key); keel_args_u64(&a, 42);
 *     if (keel_args_resolve(&a) == 0)
 *         keel_client_command(cl, a.n, a.ptrs, a.lens, cb, ctx);   // copies the bytes
 *     keel_args_free(&a);
 */
typedef struct keel_args {
    keel_buf_t bytes;
    size_t n, cap, args_max;
    int err;
    size_t *offs, *lens;
    const char **ptrs;
} keel_args_t;

/* args_max: the most arguments (>= 1); bytes_max: keel_buf's limit (0: its default). */
void keel_args_init(keel_args_t *a, size_t args_max, size_t bytes_max);
void keel_args_free(keel_args_t *a);
/* Forgets the arguments, keeps the memory. */
void keel_args_reset(keel_args_t *a);
void keel_args_add(keel_args_t *a, const void *p, size_t len);
void keel_args_str(keel_args_t *a, const char *s);
void keel_args_u64(keel_args_t *a, uint64_t v);
/* Several NUL-terminated strings at once. */
void keel_args_strs(keel_args_t *a, size_t n, const char *const *strs);
/* Fills ptrs; 0, or the first failure. */
int keel_args_resolve(keel_args_t *a);

#endif
