/* test_oom.h - allocation failure on demand, for the tests that prove a failed allocation
 * changes nothing. Include it in one file of a test executable: it replaces malloc, calloc,
 * realloc and free (glibc allows an executable to do so; see "Replacing malloc" in the glibc
 * manual) with wrappers that fail exactly the Nth allocation from now. Under ASan the
 * sanitizer owns malloc: KVT_OOM is 0 there and the cases report themselves skipped; the
 * release build runs them. */
#ifndef KEEL_TEST_OOM_H
#define KEEL_TEST_OOM_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define KVT_OOM 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVT_OOM 0
#endif
#endif
#ifndef KVT_OOM
#define KVT_OOM 1
#endif

static long fail_in = -1; /* allocations left before the one that fails; -1: never */
static long failures;     /* allocations failed so far */

#if KVT_OOM
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static int fail_now(void)
{
    if (fail_in < 0)
        return 0;
    if (fail_in-- > 0)
        return 0;
    failures++;
    return 1;
}

void *malloc(size_t n)
{
    return fail_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}
#endif

#endif
