/* test_loop.c - the loop wrapper: timers, shutdown hooks, SIGTERM handling, leak detection. */
#include "runtime/loop.h"
#include "base/err.h"
#include "ktest.h"

#include <signal.h>

static int fired, hook_calls;

static void on_timer(keel_timer_t *t, void *data)
{
    fired++;
    if (fired == 3)
        keel_timer_stop(t);
}

static void timer_repeats_until_stopped(void)
{
    keel_loop_t l;
    KT_EQ_INT(keel_loop_init(&l), 0);
    keel_timer_t t;
    fired = 0;
    KT_EQ_INT(keel_timer_init(&l, &t), 0);
    KT_EQ_INT(keel_timer_start(&t, 5, 5, on_timer, NULL), 0);
    uint64_t t0 = uv_now(&l.uv);
    keel_loop_run(&l); /* returns when the stopped timer no longer keeps the loop alive */
    KT_EQ_INT(fired, 3);
    KT_CHECK(uv_now(&l.uv) - t0 >= 15);
    /* an open handle is a leak: close refuses */
    KT_EQ_INT(keel_loop_close(&l), KEEL_EBUSY);
    keel_timer_close(&t, NULL);
    KT_EQ_INT(keel_loop_close(&l), 0);
}

typedef struct hookctx {
    keel_timer_t keepalive;
    int calls;
} hookctx_t;

static void on_hook(void *data)
{
    hookctx_t *h = data;
    h->calls++;
    hook_calls++;
    keel_timer_close(&h->keepalive, NULL); /* "drain": let the loop end */
}

static void on_tick(keel_timer_t *t, void *data) {}

static void raise_term(keel_timer_t *t, void *data)
{
    raise(SIGTERM);
}

static void sigterm_runs_shutdown_hooks_once_and_the_loop_ends(void)
{
    keel_loop_t l;
    KT_EQ_INT(keel_loop_init(&l), 0);
    KT_EQ_INT(keel_loop_handle_signals(&l), 0);
    hookctx_t a = {0}, b = {0};
    hook_calls = 0;
    keel_timer_init(&l, &a.keepalive);
    keel_timer_init(&l, &b.keepalive);
    keel_timer_start(&a.keepalive, 1000000, 1000000, on_tick, NULL);
    keel_timer_start(&b.keepalive, 1000000, 1000000, on_tick, NULL);
    KT_EQ_INT(keel_loop_on_shutdown(&l, on_hook, &a), 0);
    KT_EQ_INT(keel_loop_on_shutdown(&l, on_hook, &b), 0);
    keel_timer_t kick;
    keel_timer_init(&l, &kick);
    keel_timer_start(&kick, 10, 0, raise_term, NULL);
    keel_loop_run(&l);
    KT_EQ_INT(a.calls, 1);
    KT_EQ_INT(b.calls, 1);
    KT_EQ_INT(l.last_signal, SIGTERM);
    keel_loop_shutdown(&l); /* already shut down: hooks do not run again */
    KT_EQ_INT(hook_calls, 2);
    keel_timer_close(&kick, NULL);
    KT_EQ_INT(keel_loop_close(&l), 0);
}

static void hooks_are_bounded(void)
{
    keel_loop_t l;
    KT_EQ_INT(keel_loop_init(&l), 0);
    hookctx_t h = {0};
    for (int i = 0; i < KEEL_LOOP_HOOKS_MAX; i++)
        KT_EQ_INT(keel_loop_on_shutdown(&l, on_hook, &h), 0);
    KT_EQ_INT(keel_loop_on_shutdown(&l, on_hook, &h), KEEL_EFULL);
    KT_EQ_INT(keel_loop_close(&l), 0);
}

static void uv_errors_map_to_keel_codes(void)
{
    KT_EQ_INT(keel_uv_err(0), 0);
    KT_EQ_INT(keel_uv_err(UV_ECONNREFUSED), KEEL_ECONNREFUSED);
    KT_EQ_INT(keel_uv_err(UV_ECONNRESET), KEEL_ECONNRESET);
    KT_EQ_INT(keel_uv_err(UV_EPIPE), KEEL_ECONNRESET);
    KT_EQ_INT(keel_uv_err(UV_ETIMEDOUT), KEEL_ETIMEDOUT);
    KT_EQ_INT(keel_uv_err(UV_EOF), KEEL_ECLOSED);
    KT_EQ_INT(keel_uv_err(UV_EADDRINUSE), KEEL_EEXISTS);
    KT_EQ_INT(keel_uv_err(UV_EACCES), KEEL_EIO);
}

int main(void)
{
    KT_RUN(timer_repeats_until_stopped);
    KT_RUN(sigterm_runs_shutdown_hooks_once_and_the_loop_ends);
    KT_RUN(hooks_are_bounded);
    KT_RUN(uv_errors_map_to_keel_codes);
    return kt_done();
}
