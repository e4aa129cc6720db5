/* proxy_conn_int.h - keel proxy's data path, shared by its files: proxy_conn.c (client
 * connections, writing, local responses, completing an exchange), proxy_request.c (starting an
 * exchange: routing, auth, rate limit, the upstream head), proxy_agg.c (aggregate routes),
 * proxy_attempt.c (attempts, hedges, timeouts, retries) and proxy_upstream.c (upstream
 * connections, streaming both bodies). Not a public header; the design is described at the top
 * of proxy_conn.c. */
#ifndef KEEL_PROXY_PROXY_CONN_INT_H
#define KEEL_PROXY_PROXY_CONN_INT_H

#include "proxy/proxy_int.h"

static inline keel_ms_t now_ms(keel_proxy_t *p)
{
    return keel_loop_now_ms(p->loop);
}

/* ---- proxy_conn.c -------------------------------------------------------------------------- */

/* Sends out's unread bytes: uv_try_write, the rest copied into one uv_write. 0 or a libuv
 * error. */
int keel__conn_flush(uv_stream_t *s, keel_buf_t *out);
/* Writes buf's unread bytes as they are (no TLS): uv_try_write, the rest in one uv_write. */
int keel__conn_write(uv_stream_t *s, keel_buf_t *buf);
/* The read buffer of TLS connections: the loop's ciphertext scratch. */
void keel__conn_alloc_tls(uv_handle_t *h, size_t hint, uv_buf_t *buf);
/* The bytes not yet written to t: out's unread ones and libuv's write queue. */
size_t keel__conn_pending(uv_tcp_t *t, const keel_buf_t *out);
/* A read buffer of KEEL_PROXY_READ_BYTES at the end of in (an empty one when out of memory). */
void keel__conn_alloc_into(keel_buf_t *in, uv_buf_t *buf);
/* Appends "<hex>\r\n", a chunk-size line (no printf on the data path). */
void keel__append_chunk_size(keel_buf_t *o, size_t n);
/* Appends "Content-Length: n\r\n". */
int keel__append_length(keel_buf_t *o, uint64_t n);
/* A status's class, 1..5 (0 for none), the index into the m_class counters. */
int keel__status_class(int status);
/* Ends the current attempt: breaker, outlier detector, balancer and host counts. ok < 0: the
 * attempt was abandoned (no verdict). */
void keel__x_end_attempt(keel__dconn_t *d, int ok, int status, bool local_failure);
/* Gives the current attempt its verdict now (span, breaker, outlier detector, status class) but
 * keeps it in the balancer's and the host's in-flight counts until keel__x_end_attempt: a
 * tunnel, whose handshake succeeded and whose connection stays busy (least_conn and p2c then
 * see it, as Envoy counts upgraded streams). */
void keel__x_judge_attempt(keel__dconn_t *d, int ok, int status);
/* Swaps the exchange's attempt with the other one (a hedge's slot, proxy_int.h). */
void keel__x_swap_tries(keel__xch_t *x);
/* Ends the other attempt, if there is one: its connection is closed (no head came from it), its
 * host counts and breaker permit are settled as keel__x_end_attempt does. */
void keel__x_end_other(keel__dconn_t *d, int ok, int status, bool local_failure);
/* proxy_span.c (with tracing on and the trace sampled): the current attempt's CLIENT span
 * (ok < 0: abandoned), and the request's SERVER span, handed to the worker's exporter. */
void keel__x_record_client_span(keel__dconn_t *d, int ok, int status);
void keel__x_record_server_span(keel__dconn_t *d);
void keel__d_close(keel__dconn_t *d);
/* Sets the client connection's timer to its next deadline. */
void keel__d_arm(keel__dconn_t *d);
/* Starts or stops reading from the client (backpressure, state). */
void keel__d_update_reading(keel__dconn_t *d);
/* Answers the client from the proxy itself: an error (JSON body) or a configured response. */
void keel__x_local(keel__dconn_t *d, int status, const char *reason, const char *extra_headers,
                   const char *content_type, const char *body, size_t body_len);
/* The response has been queued for the client in full. */
void keel__x_complete(keel__dconn_t *d);

/* ---- proxy_request.c ----------------------------------------------------------------------- */

/* Whether the field name is in the edit list e[0..n). */
bool keel__edit_lists(const keel_proxy_header_edit_t *e, uint32_t n, const char *base,
                      keel_h1_span_t name);
/* A whole request head has arrived (h, its text at base): route it and answer it or start the
 * first attempt. */
void keel__x_begin(keel__dconn_t *d, const char *base, const keel_h1_head_t *h);

/* ---- proxy_agg.c --------------------------------------------------------------------------- */

/* From x_release: cancels the calls in flight (their callbacks run now and only count). */
void keel__agg_release(keel__dconn_t *d);
/* Builds the aggregate's state while the request head is at hand: each part's path from the
 * route's template parameters and the request's fields, and the fields sent to every part.
 * 0, or the status to answer (400 when a required part's path cannot be filled). */
int keel__agg_prepare(keel__dconn_t *d, const char *base, const keel_h1_head_t *h,
                      const keel_proxy_req_view_t *view, const keel_proxy_jwt_provider_t *pv,
                      const keel_jwt_t *jwt);
/* Sends every part's call. */
void keel__agg_start(keel__dconn_t *d);

/* ---- proxy_attempt.c ----------------------------------------------------------------------- */

/* Counts a request in its cluster unless max_requests (the bulkhead) is reached, over every
 * worker. */
bool keel__cl_admit(keel__pcluster_t *cl);
/* Starts an attempt: a breaker permit, a host, a pooled or new upstream connection. */
void keel__x_attempt(keel__dconn_t *d);
/* The first try has gone unanswered for the route's hedge delay: sends the hedge to another
 * host when the request may be hedged (route.h) and the retry budget allows it; otherwise
 * nothing changes. */
void keel__x_hedge(keel__dconn_t *d);
/* The exchange's try (connect: its connect) passed its deadline. */
void keel__x_timeout(keel__dconn_t *d, bool connect);
/* Decides whether the failed attempt is tried again (failure, or a status with
 * KEEL_RETRY_FAIL_NONE): the route's policy, core/retry and the budget; true when a retry is
 * scheduled. */
bool keel__x_try_again(keel__dconn_t *d, keel_retry_failure_t failure, int status);
/* The attempt on connection `from` (NULL: the exchange's attempt) failed before a response head
 * reached the client (failure, or a status with KEEL_RETRY_FAIL_NONE): it is retried when the
 * route's policy and budget allow, else the client gets fail_status with reason. */
void keel__x_retry_or_fail(keel__dconn_t *d, keel__uconn_t *from, keel_retry_failure_t failure,
                           int status, int fail_status, const char *reason);

/* The request on u, a reused pooled connection, met its close (err: UV_EOF, UV_ECONNRESET or
 * UV_EPIPE) before any byte of an answer: sends it once more on a new connection to the same
 * host when it may be sent again, as the same attempt (no retry, no failure counted); true when
 * it did (u is closed), false when the caller's failure path applies (docs/proxy.md, "What
 * happens to a request", 5). */
bool keel__x_resend_stale(keel__dconn_t *d, keel__uconn_t *u, int err);

/* ---- proxy_upstream.c ---------------------------------------------------------------------- */

/* A new connection to host, connecting (NULL when none can be made); sends d's request once
 * connected, when its d is set by then. */
keel__uconn_t *keel__u_new(keel_proxy_t *p, keel__phost_t *host);
/* Sends the exchange's request head (and a retry's kept body) on u, connected, then the body. */
void keel__u_send(keel__uconn_t *u);
/* Moves request body bytes from the client's input toward the upstream. */
void keel__d_pump_req_body(keel__dconn_t *d);
void keel__u_close(keel__uconn_t *u);
/* Starts or stops reading from the upstream (backpressure, state). */
void keel__u_update_reading(keel__uconn_t *u);
/* The upstream connection's output was written in full. */
void keel__u_on_drained(keel__uconn_t *u);
/* Moves response body bytes from the upstream's input toward the client. */
void keel__u_pump_resp_body(keel__uconn_t *u);

/* ---- proxy_tunnel.c ------------------------------------------------------------------------ */

/* On a route with upgrades: the route's protocol a request asks to switch to (a GET with
 * `Connection: upgrade` and one listed protocol in `Upgrade`), else NULL. */
const char *keel__upgrade_requested(const keel_proxy_route_t *r, const char *base,
                                    const keel_h1_head_t *h);
/* Appends the upgrade fields of the upstream request head (the client's Upgrade value). */
int keel__upgrade_append_fields(keel_buf_t *o, const char *base, const keel_h1_head_t *h);
/* The upstream answered 101 (head h, end bytes of u->in): a tunnel opens when it switched to
 * the protocol asked for (true), else false (the caller answers 502). */
bool keel__tunnel_open(keel__uconn_t *u, const char *base, const keel_h1_head_t *h, size_t end);
/* Moves bytes both ways, passes FINs on, and starts or stops reading each side. */
void keel__tunnel_pump(keel__dconn_t *d);
/* Whether the tunnel reads from the client / the upstream now (backpressure, FIN). */
bool keel__tunnel_reads_client(keel__dconn_t *d);
bool keel__tunnel_reads_upstream(keel__uconn_t *u);
/* A read from the client / the upstream ended (UV_EOF: a FIN; else an error: the tunnel ends). */
void keel__tunnel_client_eof(keel__dconn_t *d, int err);
void keel__tunnel_upstream_eof(keel__uconn_t *u, int err);
/* From x_release: counts the upgrade request's outcome and a tunnel's end. */
void keel__tunnel_release(keel__dconn_t *d);

#endif
