/* logsink.c - stderr sink and real clock for the structured logger. */
#include "runtime/logsink.h"

#include "base/err.h"
#include "base/log.h"
#include "runtime/clock.h"

#include <stdlib.h>
#include <unistd.h>

static void stderr_sink(void *data, const char *line, size_t len)
{
    /* One write per line: lines from several threads do not interleave. */
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, line, len);
        if (n <= 0)
            return;
        line += n;
        len -= (size_t)n;
    }
}

static int64_t real_clock(void *data)
{
    return keel_clock_unix_ms();
}

int keel_logsink_init_stderr(const char *level_flag)
{
    const char *name = level_flag ? level_flag : getenv("KEEL_LOG");
    keel_log_level_t level = KEEL_LOG_INFO;
    int rc = 0;
    if (name != NULL && name[0] != '\0' && keel_log_level_parse(name, &level) != 0)
        rc = KEEL_EINVAL;
    keel_log_configure(level, stderr_sink, real_clock, NULL);
    return rc;
}
