/* loop.c - the libuv event loop wrapper: run/stop, SIGTERM/SIGINT shutdown hooks, timers. */
#include "runtime/loop.h"

#include "base/err.h"

#include <assert.h>
#include <signal.h>
#include <string.h>

int keel_uv_err(int uv_err)
{
    switch (uv_err) {
    case 0:
        return 0;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return KEEL_ENOMEM;
    case UV_ECONNREFUSED:
        return KEEL_ECONNREFUSED;
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ECONNABORTED:
        return KEEL_ECONNRESET;
    case UV_ETIMEDOUT:
        return KEEL_ETIMEDOUT;
    case UV_EOF:
        return KEEL_ECLOSED;
    case UV_ECANCELED:
        return KEEL_ECANCELED;
    case UV_EINVAL:
    case UV_EAFNOSUPPORT:
        return KEEL_EINVAL;
    case UV_EADDRINUSE:
        return KEEL_EEXISTS;
    case UV_EAGAIN:
        return KEEL_EAGAIN;
    default:
        return KEEL_EIO;
    }
}

int keel_loop_init(keel_loop_t *l)
{
    memset(l, 0, sizeof(*l));
    /* A write to a socket the peer has reset raises SIGPIPE, whose default action kills the
     * process; libuv leaves it alone. Every keel process wants EPIPE returned instead. */
    signal(SIGPIPE, SIG_IGN);
    return keel_uv_err(uv_loop_init(&l->uv));
}

static void run_hooks(keel_loop_t *l)
{
    /* Hooks may register more hooks or close handles; walk by index. */
    for (int i = 0; i < l->hooks_count; i++)
        l->hooks[i].fn(l->hooks[i].data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    keel_loop_t *l = h->data;
    l->last_signal = signum;
    if (l->signals_seen++ == 0)
        run_hooks(l);
    else
        uv_stop(&l->uv); /* second signal: stop waiting for the drain */
}

int keel_loop_handle_signals(keel_loop_t *l)
{
    if (l->signals_on)
        return 0;
    uv_signal_init(&l->uv, &l->sigterm);
    uv_signal_init(&l->uv, &l->sigint);
    l->sigterm.data = l->sigint.data = l;
    int rc = uv_signal_start(&l->sigterm, on_signal, SIGTERM);
    if (rc == 0)
        rc = uv_signal_start(&l->sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&l->sigterm);
    uv_unref((uv_handle_t *)&l->sigint);
    l->signals_on = true;
    return keel_uv_err(rc);
}

int keel_loop_on_shutdown(keel_loop_t *l, keel_loop_hook_fn fn, void *data)
{
    if (l->hooks_count >= KEEL_LOOP_HOOKS_MAX)
        return KEEL_EFULL;
    l->hooks[l->hooks_count].fn = fn;
    l->hooks[l->hooks_count].data = data;
    l->hooks_count++;
    return 0;
}

void keel_loop_shutdown(keel_loop_t *l)
{
    if (l->signals_seen++ == 0)
        run_hooks(l);
}

int keel_loop_run(keel_loop_t *l)
{
    uv_run(&l->uv, UV_RUN_DEFAULT);
    return 0;
}

void keel_loop_stop(keel_loop_t *l)
{
    uv_stop(&l->uv);
}

static void count_open(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        ++*(int *)arg;
}

int keel_loop_close(keel_loop_t *l)
{
    if (l->signals_on) {
        uv_close((uv_handle_t *)&l->sigterm, NULL);
        uv_close((uv_handle_t *)&l->sigint, NULL);
        l->signals_on = false;
    }
    uv_run(&l->uv, UV_RUN_NOWAIT); /* let close callbacks run */
    int open = 0;
    uv_walk(&l->uv, count_open, &open);
    if (open > 0)
        return KEEL_EBUSY;
    while (uv_loop_close(&l->uv) == UV_EBUSY)
        uv_run(&l->uv, UV_RUN_NOWAIT);
    return 0;
}

static void on_timer(uv_timer_t *h)
{
    keel_timer_t *t = (keel_timer_t *)h;
    t->fn(t, t->data);
}

int keel_timer_init(keel_loop_t *l, keel_timer_t *t)
{
    memset(t, 0, sizeof(*t));
    return keel_uv_err(uv_timer_init(&l->uv, &t->uv));
}

int keel_timer_start(keel_timer_t *t, keel_ms_t timeout_ms, keel_ms_t repeat_ms, keel_timer_fn fn,
                     void *data)
{
    assert(timeout_ms >= 0 && repeat_ms >= 0 && fn != NULL);
    t->fn = fn;
    t->data = data;
    return keel_uv_err(uv_timer_start(&t->uv, on_timer, (uint64_t)timeout_ms, (uint64_t)repeat_ms));
}

void keel_timer_stop(keel_timer_t *t)
{
    uv_timer_stop(&t->uv);
}

static void on_timer_closed(uv_handle_t *h)
{
    keel_timer_t *t = (keel_timer_t *)h;
    if (t->closed)
        t->closed(t);
}

void keel_timer_close(keel_timer_t *t, void (*closed)(keel_timer_t *t))
{
    t->closed = closed;
    uv_close((uv_handle_t *)&t->uv, on_timer_closed);
}
