/* test_saga_util.h - the three-step saga definition the saga core's tests share
 * (test_saga.c, test_saga_explore.c). */
#ifndef KEEL_TEST_SAGA_UTIL_H
#define KEEL_TEST_SAGA_UTIL_H

#include "core/saga.h"
#include "ktest.h"

/* order: reserve, charge, ship; short timeouts and backoffs; compensation limit limit_ms */
static keel_saga_def_t DEF;

static inline void def3(keel_ms_t limit_ms)
{
    keel_saga_def_default(&DEF, "order");
    keel_saga_def_step(&DEF, "reserve");
    keel_saga_def_step(&DEF, "charge");
    keel_saga_def_step(&DEF, "ship");
    for (int i = 0; i < 3; i++) {
        DEF.steps[i].timeout_ms = 100;
        DEF.steps[i].backoff_base_ms = 10;
        DEF.steps[i].backoff_cap_ms = 40;
    }
    DEF.compensate_limit_ms = limit_ms;
    DEF.undo_backoff_base_ms = 10;
    DEF.undo_backoff_cap_ms = 100;
    keel_errmsg_t m;
    if (keel_saga_def_validate(&DEF, &m) != 0)
        KT_FAIL("definition: %s", m.text);
}

static inline void init(keel_saga_t *s, const char *id, uint64_t seed)
{
    keel_errmsg_t m;
    if (keel_saga_init(s, &DEF, id, seed, &m) != 0)
        KT_FAIL("init: %s", m.text);
}

/* Appends a short form of u to the trace: "log:begun/1", "do:charge#2", "wait", "finish". */
/* One encoded log record, as a test keeps it. */
typedef struct logrec {
    uint8_t b[2048];
    size_t n;
} logrec_t;

#endif
