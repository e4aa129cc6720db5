/* logsink.h - install the process logger: JSON lines to stderr, level from flag or KEEL_LOG. */
#ifndef KEEL_RUNTIME_LOGSINK_H
#define KEEL_RUNTIME_LOGSINK_H

/*
 * Level precedence: the flag (if non-NULL), then the KEEL_LOG environment
 * variable, then "info". Returns 0, or KEEL_EINVAL for an unknown level name
 * (the logger is then set to "info" and the caller should say so).
 */
int keel_logsink_init_stderr(const char *level_flag);

#endif
