/* ktest.h - keel's small unit-test harness: one executable per test file, run by CTest. */
#ifndef KEEL_TESTS_KTEST_H
#define KEEL_TESTS_KTEST_H

/*
 * Usage:
 *
 *     static void parses_a_split_request(void) { KT_EQ_INT(f(), 0); }
 *     int main(void) { KT_RUN(parses_a_split_request); return kt_done(); }
 *
 * A failed check prints file:line and the values, aborts the current case
 * (longjmp) and marks it failed; the other cases still run. kt_done() prints
 * "N passed, M failed" and returns the exit status. Randomized cases print the
 * seed that reproduces them through KT_SEED(seed).
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int kt__passed, kt__failed;
static jmp_buf kt__jmp;
static const char *kt__case;
static uint64_t kt__seed;
static int kt__seed_set;

#define KT_SEED(s) (kt__seed = (uint64_t)(s), kt__seed_set = 1)

static inline void kt__fail_at(const char *file, int line)
{
    fprintf(stderr, "FAIL %s (%s:%d)", kt__case, file, line);
    if (kt__seed_set)
        fprintf(stderr, " [seed %" PRIu64 "]", kt__seed);
    fprintf(stderr, ": ");
}

#define KT_FAIL(...)                                                                               \
    do {                                                                                           \
        kt__fail_at(__FILE__, __LINE__);                                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        longjmp(kt__jmp, 1);                                                                       \
    } while (0)

#define KT_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            KT_FAIL("check failed: %s", #cond);                                                    \
    } while (0)

#define KT_EQ_INT(a, b)                                                                            \
    do {                                                                                           \
        long long kt_a_ = (long long)(a), kt_b_ = (long long)(b);                                  \
        if (kt_a_ != kt_b_)                                                                        \
            KT_FAIL("%s == %s: %lld != %lld", #a, #b, kt_a_, kt_b_);                               \
    } while (0)

#define KT_EQ_U64(a, b)                                                                            \
    do {                                                                                           \
        uint64_t kt_a_ = (uint64_t)(a), kt_b_ = (uint64_t)(b);                                     \
        if (kt_a_ != kt_b_)                                                                        \
            KT_FAIL("%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, kt_a_, kt_b_);                    \
    } while (0)

#define KT_EQ_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *kt_a_ = (a), *kt_b_ = (b);                                                     \
        if (kt_a_ == NULL || kt_b_ == NULL || strcmp(kt_a_, kt_b_) != 0)                           \
            KT_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, kt_a_ ? kt_a_ : "(null)",                \
                    kt_b_ ? kt_b_ : "(null)");                                                     \
    } while (0)

#define KT_EQ_MEM(a, b, n)                                                                         \
    do {                                                                                           \
        if (memcmp((a), (b), (n)) != 0)                                                            \
            KT_FAIL("%s == %s: %zu bytes differ", #a, #b, (size_t)(n));                            \
    } while (0)

#define KT_NEAR(a, b, eps)                                                                         \
    do {                                                                                           \
        double kt_a_ = (double)(a), kt_b_ = (double)(b), kt_e_ = (double)(eps);                    \
        if (kt_a_ - kt_b_ > kt_e_ || kt_b_ - kt_a_ > kt_e_)                                        \
            KT_FAIL("%s ~= %s: %g vs %g (eps %g)", #a, #b, kt_a_, kt_b_, kt_e_);                   \
    } while (0)

#define KT_RUN(fn)                                                                                 \
    do {                                                                                           \
        kt__case = #fn;                                                                            \
        kt__seed_set = 0;                                                                          \
        if (setjmp(kt__jmp) == 0) {                                                                \
            fn();                                                                                  \
            kt__passed++;                                                                          \
            fprintf(stderr, "ok   %s\n", #fn);                                                     \
        } else {                                                                                   \
            kt__failed++;                                                                          \
        }                                                                                          \
    } while (0)

/*
 * A fresh scratch directory $TMPDIR/keel-test-<tag>-<6 random characters> (mkdtemp fills
 * in the X's; /tmp without TMPDIR), and its removal. A path that does not fit in out fails.
 */
#include <stdlib.h>
static inline void kt__tmpdir(char *out, size_t cap, const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(out, cap, "%s/keel-test-%s-XXXXXX", base, tag);
    if (n < 0 || (size_t)n >= cap) {
        KT_FAIL("scratch path under %s does not fit in %zu bytes", base, cap);
        out[0] = '\0';
        return;
    }
    if (mkdtemp(out) == NULL)
        KT_FAIL("mkdtemp %s failed", out);
}
#define KT_TMPDIR(out, tag) kt__tmpdir((out), sizeof(out), (tag))
#define KT_RMRF(dir)                                                                               \
    do {                                                                                           \
        char kt_cmd_[600];                                                                         \
        snprintf(kt_cmd_, sizeof(kt_cmd_), "rm -rf '%s'", (dir));                                  \
        KT_EQ_INT(system(kt_cmd_), 0);                                                             \
    } while (0)

static inline int kt_done(void)
{
    printf("%d passed, %d failed\n", kt__passed, kt__failed);
    return kt__failed == 0 ? 0 : 1;
}

#endif
