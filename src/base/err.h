/* err.h - keel error codes: 0 is success, failures are negative KEEL_E* values. */
#ifndef KEEL_BASE_ERR_H
#define KEEL_BASE_ERR_H

/*
 * One X-macro table holds every error keel returns (libuv's uv-errno.h style).
 * Functions that can fail return 0 (or a non-negative count) on success and a
 * negative KEEL_E* code on failure. Operating errors (bad input, full disk, lost
 * peer) travel as these codes; broken invariants are assertions, not codes.
 */
#define KEEL_ERRNO_MAP(X)                                                                          \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(PROTO, "protocol error")                                                                     \
    X(TOOBIG, "size limit exceeded")                                                               \
    X(AGAIN, "more input needed")                                                                  \
    X(IO, "input/output error")                                                                    \
    X(CORRUPT, "data corrupt (checksum mismatch)")                                                 \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(FULL, "full")                                                                                \
    X(EMPTY, "no candidate available")                                                             \
    X(TIMEDOUT, "timed out")                                                                       \
    X(CLOSED, "closed")                                                                            \
    X(CONNREFUSED, "connection refused")                                                           \
    X(CONNRESET, "connection reset")                                                               \
    X(NOTLEADER, "not the leader")                                                                 \
    X(BUSY, "busy")                                                                                \
    X(CANCELED, "canceled")                                                                        \
    X(RANGE, "value out of range")                                                                 \
    X(UNSUPPORTED, "not supported")                                                                \
    X(REJECTED, "rejected by policy")                                                              \
    X(CONFLICT, "conflict")                                                                        \
    X(NOTMEMBER, "not a member of the cluster")

enum keel__err_index {
#define KEEL__ERR_IDX(name, msg) KEEL__EIDX_##name,
    KEEL_ERRNO_MAP(KEEL__ERR_IDX)
#undef KEEL__ERR_IDX
        KEEL__EIDX_COUNT
};

enum keel_errno {
    KEEL_OK = 0,
#define KEEL__ERR_DEF(name, msg) KEEL_E##name = -(KEEL__EIDX_##name + 1),
    KEEL_ERRNO_MAP(KEEL__ERR_DEF)
#undef KEEL__ERR_DEF
};

/* Human text for an error code ("out of memory"); never NULL. */
const char *keel_strerror(int err);
/* Symbolic name ("KEEL_ENOMEM"); never NULL. */
const char *keel_err_name(int err);

/*
 * An error-message buffer callers pass down so a failing function can say
 * what went wrong in words (file, offset, field) next to its code.
 */
#define KEEL_ERRMSG_BYTES_MAX 256
typedef struct keel_errmsg {
    char text[KEEL_ERRMSG_BYTES_MAX];
} keel_errmsg_t;

/* Formats into msg (if non-NULL) and returns err, so `return keel_errf(m, KEEL_EINVAL, ...)`. */
int keel_errf(keel_errmsg_t *msg, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
