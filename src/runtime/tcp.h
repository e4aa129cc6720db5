/* tcp.h - TCP listener helpers and a connector that reconnects with jittered exponential backoff.
 */
#ifndef KEEL_RUNTIME_TCP_H
#define KEEL_RUNTIME_TCP_H

#include "base/err.h"
#include "base/ktime.h"
#include "base/rand.h"
#include "runtime/loop.h"

#include <stdbool.h>
#include <uv.h>

/* "127.0.0.1:8080", "[::1]:8080", "localhost:8080" (-> 127.0.0.1), ":8080" (-> 0.0.0.0).
 * Numeric addresses only otherwise: no resolver on the hot path. */
int keel_tcp_parse_addr(const char *host_port, struct sockaddr_storage *out, keel_errmsg_t *msg);
/* Inits srv on the loop, binds, listens (port 0 picks one). On failure srv is closed. */
int keel_tcp_listen(keel_loop_t *l, uv_tcp_t *srv, const char *host_port, int backlog,
                    uv_connection_cb on_connection, keel_errmsg_t *msg);
/*
 * Like keel_tcp_listen, on the address sa (port 0 picks one), with SO_REUSEPORT set before
 * bind, so several loops (threads) may each listen on the same address and the kernel spreads
 * new connections over them (Linux >= 3.9; what nginx's `reuseport` does). libuv 1.44 has no
 * flag for it, so the socket is made here and handed to uv_tcp_open. On failure srv is closed.
 */
int keel_tcp_listen_reuseport(keel_loop_t *l, uv_tcp_t *srv, const struct sockaddr *sa, int backlog,
                              uv_connection_cb on_connection, keel_errmsg_t *msg);
/* Port a bound handle listens on, or a negative KEEL_E*. */
int keel_tcp_local_port(const uv_tcp_t *h);

/*
 * Reconnect delays: "equal jitter" (Brooker, AWS Architecture Blog, "Exponential
 * Backoff And Jitter", 2015): cap = min(max_ms, base_ms * 2^attempt) and the delay
 * is uniform in [cap/2, cap], so retries spread out yet never collapse to 0.
 */
typedef struct keel_backoff_config {
    keel_ms_t base_ms; /* first delay's cap */
    keel_ms_t max_ms;  /* ceiling for every delay */
} keel_backoff_config_t;

keel_ms_t keel_backoff_delay_ms(const keel_backoff_config_t *cfg, unsigned attempt,
                                keel_rand_t *rand);

typedef struct keel_connector_config {
    keel_backoff_config_t backoff; /* default 100 ms .. 10 s */
    keel_ms_t connect_timeout_ms;  /* per attempt, default 3000 */
    uint64_t seed;                 /* for the jitter */
} keel_connector_config_t;

keel_connector_config_t keel_connector_config_default(void);
int keel_connector_config_validate(const keel_connector_config_t *cfg, keel_errmsg_t *msg);

typedef struct keel_connector keel_connector_t;
typedef struct keel_connector_callbacks {
    /* Connected: keel_connector_stream(c) is usable until keel_connector_lost(). */
    void (*connected)(keel_connector_t *c, void *data);
    /* An attempt failed with err; the next one starts in delay_ms. May be NULL. */
    void (*failed)(keel_connector_t *c, int err, keel_ms_t delay_ms, void *data);
} keel_connector_callbacks_t;

enum keel_connector_state {
    KEEL_CONN_IDLE,
    KEEL_CONN_CONNECTING,
    KEEL_CONN_CONNECTED,
    KEEL_CONN_BACKOFF,
    KEEL_CONN_CLOSING,
    KEEL_CONN_CLOSED,
};

/*
 * Keeps one TCP connection to addr up: connects, and after a failure or a
 * reported loss waits a backoff delay and tries again, forever, until closed.
 * The attempt counter resets on every successful connect.
 */
struct keel_connector {
    keel_loop_t *loop;
    keel_connector_config_t cfg;
    keel_connector_callbacks_t cb;
    void *data;
    struct sockaddr_storage addr;
    keel_rand_t rand;
    uv_tcp_t tcp;
    uv_connect_t req;
    keel_timer_t timer;
    int state;
    bool tcp_open;     /* tcp handle initialised and not yet closed */
    bool timed_out;    /* current attempt hit connect_timeout_ms */
    unsigned attempt;  /* failures since the last success */
    unsigned connects; /* successful connects so far */
    int last_err;
    void (*closed)(keel_connector_t *c);
};

int keel_connector_init(keel_connector_t *c, keel_loop_t *l, const char *host_port,
                        const keel_connector_config_t *cfg, const keel_connector_callbacks_t *cb,
                        void *data, keel_errmsg_t *msg);
int keel_connector_start(keel_connector_t *c);
/* The connection broke (read error, EOF): drop it and reconnect after a backoff. */
void keel_connector_lost(keel_connector_t *c);
static inline uv_stream_t *keel_connector_stream(keel_connector_t *c)
{
    return (uv_stream_t *)&c->tcp;
}
/* Stops everything; closed (may be NULL) runs when the memory may be freed. */
void keel_connector_close(keel_connector_t *c, void (*closed)(keel_connector_t *c));

#endif
