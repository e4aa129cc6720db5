/* log.h - structured logging: one JSON object per line (ts, level, msg, fields, trace_id). */
#ifndef KEEL_BASE_LOG_H
#define KEEL_BASE_LOG_H

#include <stddef.h>
#include <stdint.h>

/*
 * A log line is one JSON object:
 *   {"ts":"2026-11-22T11:48:45.123Z","level":"info","msg":"listening","addr":"127.0.0.1:7000"}
 * with "trace_id" added when the calling thread has one set.
 *
 * This layer does no I/O and reads no clock: the process installs a sink (where
 * lines go) and a clock (for "ts") once, at start (runtime/logsink.h does it
 * for real processes; the simulator installs its own). Until then lines go
 * nowhere. Pure cores (src/core) do not log: they report events in their
 * outputs, and the driver logs them.
 *
 * Fields are typed (string or integer) so integers are not quoted:
 *   keel_log_info("peer connected", KF_STR("peer", name), KF_INT("term", term));
 * A line is formatted into a bounded buffer (KEEL_LOG_LINE_BYTES_MAX); longer
 * values are cut and marked with "...".
 */
typedef enum keel_log_level {
    KEEL_LOG_DEBUG = 0,
    KEEL_LOG_INFO,
    KEEL_LOG_WARN,
    KEEL_LOG_ERROR,
    KEEL_LOG_OFF,
} keel_log_level_t;

#define KEEL_LOG_LINE_BYTES_MAX 4096
#define KEEL_LOG_TRACE_ID_BYTES 32 /* hex characters of a W3C trace id */

typedef enum keel_log_field_type {
    KEEL_LOG_F_NONE = 0,
    KEEL_LOG_F_STR,
    KEEL_LOG_F_INT,
} keel_log_field_type_t;

typedef struct keel_log_field {
    const char *key;
    keel_log_field_type_t type;
    const char *s;
    int64_t i;
} keel_log_field_t;

#define KF_STR(k, v) ((keel_log_field_t){(k), KEEL_LOG_F_STR, (v), 0})
#define KF_INT(k, v) ((keel_log_field_t){(k), KEEL_LOG_F_INT, NULL, (int64_t)(v)})
#define KF__NONE ((keel_log_field_t){NULL, KEEL_LOG_F_NONE, NULL, 0})

/* Receives one complete line, '\n' included. Must not call back into the logger. */
typedef void (*keel_log_sink_fn)(void *data, const char *line, size_t len);
/* Wall-clock time in milliseconds since the Unix epoch, for "ts". */
typedef int64_t (*keel_log_clock_fn)(void *data);

void keel_log_configure(keel_log_level_t level, keel_log_sink_fn sink, keel_log_clock_fn clock,
                        void *data);
void keel_log_set_level(keel_log_level_t level);
keel_log_level_t keel_log_get_level(void);
/* "debug" | "info" | "warn" | "error" | "off" -> level. 0 or KEEL_EINVAL. */
int keel_log_level_parse(const char *s, keel_log_level_t *out);
const char *keel_log_level_name(keel_log_level_t level);
/* Sets (or, with NULL, clears) the calling thread's trace id, added to its lines. */
void keel_log_set_trace_id(const char *trace_id_hex);
/* The same for a request id ("request_id" on the lines; cut at KEEL_LOG_REQUEST_ID_BYTES). */
#define KEEL_LOG_REQUEST_ID_BYTES 128u
void keel_log_set_request_id(const char *request_id);

/* Formats a line into out (size >= 64); returns its length (no sink involved). */
size_t keel_log_format(char *out, size_t size, int64_t unix_ms, keel_log_level_t level,
                       const char *msg, const keel_log_field_t *fields, size_t n_fields,
                       const char *trace_id);

void keel__log(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
               size_t n_fields);

#define KEEL__LOG(level, msg, ...)                                                                 \
    do {                                                                                           \
        if ((level) >= keel_log_get_level()) {                                                     \
            const keel_log_field_t keel__f_[] = {KF__NONE, ##__VA_ARGS__};                         \
            keel__log((level), (msg), keel__f_ + 1, sizeof(keel__f_) / sizeof(keel__f_[0]) - 1);   \
        }                                                                                          \
    } while (0)

#define keel_log_debug(msg, ...) KEEL__LOG(KEEL_LOG_DEBUG, msg, ##__VA_ARGS__)
#define keel_log_info(msg, ...) KEEL__LOG(KEEL_LOG_INFO, msg, ##__VA_ARGS__)
#define keel_log_warn(msg, ...) KEEL__LOG(KEEL_LOG_WARN, msg, ##__VA_ARGS__)
#define keel_log_error(msg, ...) KEEL__LOG(KEEL_LOG_ERROR, msg, ##__VA_ARGS__)

#endif
