/* proxy_span.c - the spans of a request (docs/proxy.md, "Tracing"): its SERVER span and one
 * CLIENT span per upstream attempt, handed to the worker's exporter (tracer.c). */
#include "proxy/proxy_conn_int.h"

#include "base/num.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- spans (docs/proxy.md, "Tracing") ---------------------------------------------------- */

/* "IP:port" or "[IPv6]:port" into ip (brackets dropped) and port (0 when unreadable). */
static void split_address(const char *addr, char *ip, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']')
        addr++, n -= 2;
    snprintf(ip, cap, "%.*s", (int)n, addr);
    long pn = colon ? strtol(colon + 1, NULL, 10) : 0;
    *port = pn > 0 && pn <= 65535 ? (uint16_t)pn : 0;
}

/* "a b" (b may be NULL: "a"), cut to cap - 1 bytes: a span's name, without printf. */
static void span_name(char *out, size_t cap, const char *a, const char *b)
{
    size_t na = strlen(a), nb = b ? strlen(b) : 0, o = 0;
    na = na < cap - 1 ? na : cap - 1;
    memcpy(out, a, na);
    o = na;
    if (b != NULL && o + 1 < cap) {
        out[o++] = ' ';
        nb = nb < cap - 1 - o ? nb : cap - 1 - o;
        memcpy(out + o, b, nb);
        o += nb;
    }
    out[o] = '\0';
}

/* v in decimal, NUL-terminated, in out (KEEL_DEC_BYTES_MAX + 1 bytes). */
static const char *dec(char *out, uint64_t v)
{
    out[keel_fmt_u64(out, v)] = '\0';
    return out;
}

/* The attempt's CLIENT span, a child of the server span: its id went upstream in traceparent. */
void keel__x_record_client_span(keel__dconn_t *d, int ok, int status)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_tracing_t *tc = &x->gen->cfg->tracing;
    char name[KEEL_SPAN_NAME_BYTES_MAX], nbuf[KEEL_DEC_BYTES_MAX + 1], sbuf[KEEL_DEC_BYTES_MAX + 1],
        ip[64];
    span_name(name, sizeof(name), x->method, x->cl->cfg->name);
    keel_span_t s;
    keel_span_init(&s, &x->trace, KEEL_SPAN_KIND_CLIENT, tc->service_name, name, x->try_start_us);
    uint16_t port;
    split_address(x->host->address, ip, sizeof(ip), &port);
    keel_span_set_remote(&s, x->cl->cfg->name, ip, port);
    keel_span_set_attr(&s, "http.method", x->method);
    keel_span_set_attr(&s, "upstream_cluster", x->cl->cfg->name);
    keel_span_set_attr(&s, "upstream_address", x->host->address);
    keel_span_set_attr(&s, "attempt", dec(nbuf, x->attempts));
    const char *st = status > 0 ? dec(sbuf, (uint64_t)status) : NULL;
    if (st != NULL)
        keel_span_set_attr(&s, "http.status_code", st);
    const char *err = x->try_error != NULL ? x->try_error
                      : ok < 0             ? "canceled"
                      : status >= 500      ? st
                      : ok == 0            ? "upstream-failure"
                                           : NULL;
    if (err != NULL)
        keel_span_set_attr(&s, "error", err);
    keel_span_end(&s, keel_clock_unix_us(), err != NULL ? KEEL_SPAN_ERROR : KEEL_SPAN_OK);
    keel__tracer_record(d->p, &s);
}

/* The request's SERVER span: a child of the client's span, or the root of a new trace. */
void keel__x_record_server_span(keel__dconn_t *d)
{
    keel__xch_t *x = &d->x;
    const keel_proxy_tracing_t *tc = &x->gen->cfg->tracing;
    char name[KEEL_SPAN_NAME_BYTES_MAX], sbuf[KEEL_DEC_BYTES_MAX + 1];
    const char *route = x->route != NULL ? x->route->cfg->name : NULL;
    span_name(name, sizeof(name), x->method, route);
    keel_span_t s;
    keel_span_init(&s, &x->server, KEEL_SPAN_KIND_SERVER, tc->service_name, name, x->start_us);
    keel_span_set_remote(&s, NULL, d->peer, 0);
    keel_span_set_attr(&s, "http.method", x->method);
    char path[KEEL_PROXY_TRACE_PATH_BYTES];
    size_t n = strcspn(x->target, "?"); /* target is NUL-terminated and shorter than path */
    memcpy(path, x->target, n);
    path[n] = '\0';
    keel_span_set_attr(&s, "http.path", path);
    if (route != NULL)
        keel_span_set_attr(&s, "route", route);
    const char *st = x->status > 0 ? dec(sbuf, (uint64_t)x->status) : NULL;
    if (st != NULL)
        keel_span_set_attr(&s, "http.status_code", st);
    if (x->reason != NULL) /* the proxy answered itself */
        keel_span_set_attr(&s, "keel.reason", x->reason);
    const char *err = x->status == 0    ? "no-response"
                      : x->status < 500 ? NULL
                      : x->reason       ? x->reason
                                        : st;
    if (err != NULL)
        keel_span_set_attr(&s, "error", err);
    keel_span_end(&s, keel_clock_unix_us(), err != NULL ? KEEL_SPAN_ERROR : KEEL_SPAN_OK);
    keel__tracer_record(d->p, &s);
}
