/* worker.c - keel proxy's workers: event-loop threads sharing the listeners with SO_REUSEPORT. */
#include "proxy/proxy_int.h"

#include "base/log.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * `workers: N` runs N event loops, as nginx runs N worker processes (docs/proxy.md,
 * "Workers"). Worker 0 is the caller's loop; workers 1..N-1 each run a loop on a thread of
 * their own. Every worker listens on every listener address with its own socket, bound with
 * SO_REUSEPORT, so the kernel spreads new connections over them (a hash of the 4-tuple) and no
 * accept lock or connection hand-off is needed. A connection stays on the worker that accepted
 * it, with its upstream connections (each worker has its own pools).
 *
 * A worker talks to worker 0 through a mailbox (a mutex, the next generation, a stop flag) and
 * a uv_async_t that wakes its loop: a reload posts the new generation, shutdown posts stop and
 * joins the thread. Nothing else crosses threads except the shared clusters and routes, each
 * guarded by its mutex (proxy_int.h).
 */
struct keel__pworker {
    keel_loop_t loop;
    keel_proxy_t *w; /* freed by its own shutdown; NULL then */
    uv_thread_t thread;
    bool thread_on;
    uv_async_t wake;
    uv_mutex_t mu;          /* guards next_gen, stop and the sequence numbers */
    uv_cond_t adopted_cond; /* signalled when seq_adopted moves */
    keel__pgen_t *next_gen; /* referenced for this worker until it adopts it */
    uint64_t seq_posted, seq_adopted;
    bool stop;
};

/* How long a reload waits for a worker to take the new generation: a worker's loop turn is
 * short, so this only bounds a stuck worker (logged), it is not a pace. */
#define KEEL_PROXY_ADOPT_WAIT_MS 2000

/* Binds listener i of worker w on sa (its address, or the one worker 0 got for a port 0). */
static int listen_one(keel_proxy_t *w, uint32_t i, const struct sockaddr *sa, const char *addr,
                      keel_errmsg_t *msg)
{
    keel__plistener_t *l = &w->listeners[i];
    l->p = w;
    int rc =
        w->workers_n == 1 /* one worker: a plain socket, as before workers existed */
            ? keel_tcp_listen(w->loop, &l->tcp, addr, 511, keel__proxy_on_connection, msg)
            : keel_tcp_listen_reuseport(w->loop, &l->tcp, sa, 511, keel__proxy_on_connection, msg);
    if (rc != 0)
        return keel_errf(msg, rc, "listener %s: %s", addr, msg->text);
    l->tcp.data = l;
    l->open = true;
    w->handles_open++;
    w->listeners_count = i + 1;
    l->port = keel_tcp_local_port(&l->tcp);
    return 0;
}

int keel__workers_listen(keel_proxy_t *p, keel_errmsg_t *msg)
{
    assert(p->wid == 0);
    for (uint32_t i = 0; i < p->gen->cfg->listeners_count; i++) {
        const char *addr = p->gen->cfg->listeners[i].address;
        struct sockaddr_storage sa;
        int rc = keel_tcp_parse_addr(addr, &sa, msg);
        if (rc == 0)
            rc = listen_one(p, i, (const struct sockaddr *)&sa, addr, msg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The worker's own shutdown has freed it. */
static void worker_freed(keel_proxy_t *gone, void *data)
{
    keel__pworker_t *pw = data;
    (void)gone;
    pw->w = NULL;
}

void keel__worker_adopt(keel_proxy_t *w, keel__pgen_t *g)
{
    keel__pgen_t *old = w->gen;
    w->gen = g;
    /* this worker's idle connections to clusters the new generation dropped (worker 0 closed
     * its own when it retired them) */
    for (uint32_t c = 0; c < old->cfg->clusters_count; c++) {
        keel__pcluster_t *cl = old->clusters[c];
        bool kept = false;
        for (uint32_t k = 0; k < g->cfg->clusters_count && !kept; k++)
            kept = g->clusters[k] == cl;
        if (!kept)
            keel__proxy_close_idle(w, cl, false);
    }
    keel_errmsg_t msg;
    if (keel__proxy_ensure_agg_client(w, g->cfg, &msg) != 0)
        keel_log_error("proxy: worker cannot start its aggregate client", KF_INT("worker", w->wid),
                       KF_STR("error", msg.text));
    keel__gen_unref(old); /* exchanges that started on it hold their own references */
}

static void on_wake(uv_async_t *a)
{
    keel__pworker_t *pw = a->data;
    uv_mutex_lock(&pw->mu);
    keel__pgen_t *g = pw->next_gen;
    pw->next_gen = NULL;
    uint64_t seq = pw->seq_posted;
    bool stop = pw->stop;
    uv_mutex_unlock(&pw->mu);
    if (g != NULL && pw->w != NULL)
        keel__worker_adopt(pw->w, g);
    else if (g != NULL)
        keel__gen_unref(g);
    uv_mutex_lock(&pw->mu);
    pw->seq_adopted = seq;
    uv_cond_signal(&pw->adopted_cond);
    uv_mutex_unlock(&pw->mu);
    if (stop && !uv_is_closing((uv_handle_t *)&pw->wake)) {
        if (pw->w != NULL)
            keel_proxy_shutdown(pw->w, worker_freed, pw);
        uv_close((uv_handle_t *)&pw->wake, NULL);
    }
}

static void worker_main(void *data)
{
    keel__pworker_t *pw = data;
    keel_loop_run(&pw->loop); /* until the wake handle and every connection have closed */
}

/* Closes what a worker that never ran has open (its loop, on this thread). */
static void worker_discard(keel__pworker_t *pw)
{
    if (pw->w != NULL)
        keel_proxy_shutdown(pw->w, worker_freed, pw);
    keel_loop_run(&pw->loop);
    if (keel_loop_close(&pw->loop) != 0)
        keel_log_error("proxy: a worker's loop closed with handles open");
    uv_mutex_destroy(&pw->mu);
    uv_cond_destroy(&pw->adopted_cond);
    free(pw);
}

static int worker_start(keel_proxy_t *p, uint32_t wid, keel_errmsg_t *msg)
{
    keel__pworker_t *pw = calloc(1, sizeof(*pw));
    if (pw == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    uv_mutex_init(&pw->mu);
    uv_cond_init(&pw->adopted_cond);
    int rc = keel_loop_init(&pw->loop);
    if (rc != 0) {
        uv_mutex_destroy(&pw->mu);
        uv_cond_destroy(&pw->adopted_cond);
        free(pw);
        return keel_errf(msg, rc, "worker %u: cannot start an event loop", wid);
    }
    uv_async_init(&pw->loop.uv, &pw->wake, on_wake);
    pw->wake.data = pw;
    pw->w = calloc(1, sizeof(*pw->w));
    if (pw->w == NULL) {
        uv_close((uv_handle_t *)&pw->wake, NULL);
        worker_discard(pw);
        return keel_errf(msg, KEEL_ENOMEM, "out of memory");
    }
    keel_proxy_t *w = pw->w;
    rc = keel__proxy_worker_init(w, p, &pw->loop, wid, msg);
    for (uint32_t i = 0; rc == 0 && i < p->listeners_count; i++) {
        struct sockaddr_storage sa; /* worker 0's bound address: a port 0 was chosen there */
        int len = sizeof(sa);
        rc = uv_tcp_getsockname(&p->listeners[i].tcp, (struct sockaddr *)&sa, &len);
        if (rc != 0)
            rc = keel_errf(msg, keel_uv_err(rc), "getsockname: %s", uv_strerror(rc));
        else
            rc = listen_one(w, i, (const struct sockaddr *)&sa, p->gen->cfg->listeners[i].address,
                            msg);
    }
    if (rc == 0 && (rc = uv_thread_create(&pw->thread, worker_main, pw)) != 0)
        rc = keel_errf(msg, keel_uv_err(rc), "worker %u: cannot start a thread", wid);
    if (rc != 0) {
        uv_close((uv_handle_t *)&pw->wake, NULL);
        worker_discard(pw);
        return rc;
    }
    pw->thread_on = true;
    p->workers[wid] = pw;
    return 0;
}

int keel__workers_start(keel_proxy_t *p, keel_errmsg_t *msg)
{
    assert(p->wid == 0 && p->workers_n <= KEEL_PROXY_WORKERS_MAX);
    for (uint32_t k = 1; k < p->workers_n; k++) {
        int rc = worker_start(p, k, msg);
        if (rc != 0)
            return rc; /* the caller's shutdown stops the ones started */
    }
    if (p->workers_n > 1)
        keel_log_info("proxy: workers started", KF_INT("workers", p->workers_n));
    return 0;
}

void keel__workers_publish(keel_proxy_t *p)
{
    for (uint32_t k = 1; k < p->workers_n; k++) {
        keel__pworker_t *pw = p->workers[k];
        if (pw == NULL)
            continue;
        keel__gen_ref(p->gen); /* the worker's, from the moment it adopts it */
        uv_mutex_lock(&pw->mu);
        keel__pgen_t *skipped = pw->next_gen; /* two reloads before it woke: the newer wins */
        pw->next_gen = p->gen;
        pw->seq_posted++;
        uv_mutex_unlock(&pw->mu);
        if (skipped != NULL)
            keel__gen_unref(skipped);
        uv_async_send(&pw->wake);
    }
    /* A reload is done when every worker serves the new config to new requests: wait for each
     * to take it (a worker never waits on worker 0, so this cannot deadlock). */
    for (uint32_t k = 1; k < p->workers_n; k++) {
        keel__pworker_t *pw = p->workers[k];
        if (pw == NULL)
            continue;
        uv_mutex_lock(&pw->mu);
        int rc = 0;
        while (pw->seq_adopted != pw->seq_posted && rc == 0)
            rc = uv_cond_timedwait(&pw->adopted_cond, &pw->mu,
                                   (uint64_t)KEEL_PROXY_ADOPT_WAIT_MS * 1000000u);
        uv_mutex_unlock(&pw->mu);
        if (rc != 0)
            keel_log_warn("proxy: a worker has not taken the new config yet", KF_INT("worker", k));
    }
}

void keel__workers_stop(keel_proxy_t *p)
{
    for (uint32_t k = 1; k < p->workers_n; k++) {
        keel__pworker_t *pw = p->workers[k];
        if (pw == NULL)
            continue;
        uv_mutex_lock(&pw->mu);
        pw->stop = true;
        uv_mutex_unlock(&pw->mu);
        uv_async_send(&pw->wake);
    }
    /* joined on worker 0's thread: a worker's shutdown only closes its own handles, which
     * needs nothing from worker 0's loop */
    for (uint32_t k = 1; k < p->workers_n; k++) {
        keel__pworker_t *pw = p->workers[k];
        if (pw == NULL)
            continue;
        p->workers[k] = NULL;
        uv_thread_join(&pw->thread);
        assert(pw->w == NULL);
        if (pw->next_gen != NULL)
            keel__gen_unref(pw->next_gen);
        if (keel_loop_close(&pw->loop) != 0)
            keel_log_error("proxy: a worker's loop closed with handles open");
        uv_mutex_destroy(&pw->mu);
        uv_cond_destroy(&pw->adopted_cond);
        free(pw);
    }
}
