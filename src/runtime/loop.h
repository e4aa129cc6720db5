/* loop.h - the libuv event loop wrapper: run/stop, SIGTERM/SIGINT shutdown hooks, timers. */
#ifndef KEEL_RUNTIME_LOOP_H
#define KEEL_RUNTIME_LOOP_H

#include "base/ktime.h"

#include <stdbool.h>
#include <uv.h>

/*
 * One keel_loop per thread. It owns a uv_loop_t and two signal handles.
 * The first SIGTERM or SIGINT calls every registered shutdown hook once (each
 * server stops accepting and drains); when the last handle closes,
 * keel_loop_run() returns. A second signal stops the loop at once. Signal
 * handles are unreferenced, so they never keep the loop alive by themselves.
 *
 * Lifecycle (libuv's rule): init -> run -> close; handles created on the loop
 * must be closed before keel_loop_close().
 */
#define KEEL_LOOP_HOOKS_MAX 16

typedef void (*keel_loop_hook_fn)(void *data);

typedef struct keel_loop {
    uv_loop_t uv;
    uv_signal_t sigterm, sigint;
    bool signals_on;
    int signals_seen;
    int last_signal;
    struct {
        keel_loop_hook_fn fn;
        void *data;
    } hooks[KEEL_LOOP_HOOKS_MAX];
    int hooks_count;
} keel_loop_t;

/* Also sets SIGPIPE to SIG_IGN for the process (writes to reset sockets return EPIPE). */
int keel_loop_init(keel_loop_t *l);
/* Installs SIGTERM/SIGINT handling (idempotent). */
int keel_loop_handle_signals(keel_loop_t *l);
/* Registers a hook called once on the first SIGTERM/SIGINT or keel_loop_shutdown().
 * KEEL_EFULL past KEEL_LOOP_HOOKS_MAX. */
int keel_loop_on_shutdown(keel_loop_t *l, keel_loop_hook_fn fn, void *data);
/* Runs the hooks now, as a signal would (tests, admin endpoints). */
void keel_loop_shutdown(keel_loop_t *l);
/* Runs until no referenced handle is left or keel_loop_stop(). 0 or negative KEEL_E*. */
int keel_loop_run(keel_loop_t *l);
void keel_loop_stop(keel_loop_t *l);
/* Closes the signal handles, lets pending close callbacks run, closes the loop.
 * KEEL_EBUSY if some other handle is still open (a leak the caller must fix). */
int keel_loop_close(keel_loop_t *l);
/* The loop's cached monotonic time in ms (uv_now). */
static inline keel_ms_t keel_loop_now_ms(keel_loop_t *l)
{
    return (keel_ms_t)uv_now(&l->uv);
}

/* Maps a libuv error (negative errno) to a KEEL_E* code. */
int keel_uv_err(int uv_err);

/* A one-shot or repeating timer with a typed callback; close before freeing. */
typedef struct keel_timer keel_timer_t;
typedef void (*keel_timer_fn)(keel_timer_t *t, void *data);
struct keel_timer {
    uv_timer_t uv;
    keel_timer_fn fn;
    void *data;
    void (*closed)(keel_timer_t *t);
};
int keel_timer_init(keel_loop_t *l, keel_timer_t *t);
/* Fires after timeout_ms, then every repeat_ms if > 0. */
int keel_timer_start(keel_timer_t *t, keel_ms_t timeout_ms, keel_ms_t repeat_ms, keel_timer_fn fn,
                     void *data);
void keel_timer_stop(keel_timer_t *t);
/* closed (may be NULL) runs once libuv is done with the memory. */
void keel_timer_close(keel_timer_t *t, void (*closed)(keel_timer_t *t));

#endif
